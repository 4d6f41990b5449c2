/// A configuration error, always naming the file and, when it has one, the line.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)"
    }
}

/// Reads `postern.conf`: `[section]` headers, `key = value` lines and `#`
/// comments (whole-line, or after whitespace at the end of a value). Durations take
/// `s m h d`, sizes `K M G` (powers of 1024); a bare number is seconds or bytes.
/// Relative paths are resolved against the configuration file's directory.
///
/// Unknown sections and keys, bad values and missing required keys are errors
/// with the line number; nothing is silently ignored.
public struct ConfigParser {
    public let file: String
    public let baseDirectory: String
    /// `Int.max` of the board the daemon runs on. Tests set `Int32.max` to check a
    /// 32-bit board's limits on a 64-bit host.
    var platformIntMax = Int64(Int.max)
    /// The board's host name (gethostname): one of the local domains of
    /// `[aliases]`, with `localhost` and `[receiver] hostname`.
    public var systemHostname: String? = nil

    public init(file: String, baseDirectory: String, systemHostname: String? = nil) {
        self.file = file
        self.baseDirectory = baseDirectory
        self.systemHostname = systemHostname
    }

    /// Sizes held in an `Int` (a message, a segment) above this are refused as
    /// too large for the platform: half its `Int.max` (1G on a 32-bit board), so
    /// such a size plus the bytes in flight — a message's count plus a chunk, a
    /// segment's offset plus a record — can never overflow (issue 7 item 7).
    /// `max_size` is not one of them: the spool's total is an `Int64` on every
    /// board, limited by `SpoolConfig.maxSizeCeiling` alone (issue 10 item 2).
    var sizeCeiling: Int64 { platformIntMax / 2 + 1 }

    public func parse(_ text: [UInt8]) -> Result<Config, ConfigError> {
        do throws(ConfigError) {
            return .success(try parseThrowing(text))
        } catch {
            return .failure(error)
        }
    }

    func error(_ line: Int, _ message: String) -> ConfigError {
        ConfigError(file: file, line: line, message: message)
    }

    func parseThrowing(_ text: [UInt8]) throws(ConfigError) -> Config {
        var config = Config()
        var section = ""
        var sectionLine = 0
        var seenSections: [String] = []
        var seenKeys: [String] = []
        var upstreamHostSeen = false
        var lineNumber = 0
        /// "section.key" -> (line, value) of every key written, for defaults that
        /// depend on other keys and for errors that name two lines.
        var written: [String: (line: Int, value: String)] = [:]
        var aliasLines: [AliasMap.Line] = []

        func finishSection() throws(ConfigError) {
            guard section == "upstream" else { return }
            if !upstreamHostSeen { throw error(sectionLine, "[upstream] needs 'host'") }
            var derived: [String] = []
            try finishUpstream(&config.upstreams[config.upstreams.count - 1], written: seenKeys,
                               lines: written, &derived)
            config.derived += derived
        }

        for rawLine in text.split(separator: ASCII.lf, omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = rawLine
            if line.last == ASCII.cr { line = line.dropLast() }
            line = stripComment(line)
            line = ASCII.trimmed(line)
            if line.isEmpty { continue }
            if line.first == 91 /* [ */ {
                guard line.last == 93 /* ] */ else { throw error(lineNumber, "malformed section header") }
                try finishSection()
                let name = ASCII.string(ASCII.trimmed(line.dropFirst().dropLast()))
                switch name {
                case "receiver", "spool", "retry", "control", "notify", "local":
                    if seenSections.contains(name) { throw error(lineNumber, "section [\(name)] appears twice") }
                case "upstream":
                    config.upstreams.append(UpstreamConfig())
                    config.upstreams[config.upstreams.count - 1].line = lineNumber
                    upstreamHostSeen = false
                case "aliases":
                    if seenSections.contains(name) { throw error(lineNumber, "section [\(name)] appears twice") }
                default:
                    throw error(lineNumber, "unknown section [\(name)]")
                }
                seenSections.append(name)
                seenKeys = []
                section = name
                sectionLine = lineNumber
                continue
            }
            guard let eq = line.firstIndex(of: ASCII.equals) else {
                throw error(lineNumber, "expected 'key = value' or '[section]'")
            }
            let key = ASCII.string(ASCII.trimmed(line[..<eq]))
            let value = ASCII.string(ASCII.trimmed(line[(eq + 1)...]))
            guard !section.isEmpty else { throw error(lineNumber, "'\(key)' comes before any [section]") }
            if seenKeys.contains(key) { throw error(lineNumber, "'\(key)' is set twice in [\(section)]") }
            seenKeys.append(key)
            written[section + "." + key] = (lineNumber, value)
            // Lists that may be empty on purpose: no client exempt (issue 12 item 5).
            let mayBeEmpty = section == "receiver" && (key == "connection_limit_exempt" || key == "greet_pause_exempt")
            if value.isEmpty && !mayBeEmpty { throw error(lineNumber, "'\(key)' has no value") }
            switch section {
            case "receiver": try receiverKey(key, value, lineNumber, &config.receiver)
            case "spool": try spoolKey(key, value, lineNumber, &config.spool)
            case "upstream":
                if key == "host" { upstreamHostSeen = true }
                try upstreamKey(key, value, lineNumber, &config.upstreams[config.upstreams.count - 1])
            case "retry": try retryKey(key, value, lineNumber, &config.retry)
            case "control": try controlKey(key, value, lineNumber, &config.control)
            case "notify": try notifyKey(key, value, lineNumber, &config.notify)
            case "local": try localKey(key, value, lineNumber, &config.local)
            case "aliases": aliasLines.append(AliasMap.Line(name: key, value: value, line: lineNumber))
            default: break
            }
        }
        try finishSection()
        if config.upstreams.isEmpty { throw error(0, "no [upstream] section: Postern needs a smarthost to forward to") }
        try checkReceiverTLS(config.receiver, written)
        try fillDependentDefaults(&config, written)
        switch AliasMap.build(aliasLines, localDomains: localDomains(config)) {
        case .success(let map): config.aliases = map
        case .failure(let e): throw error(e.line, e.message)
        }
        return config
    }

    /// Defaults that depend on another key are taken from that key's value when
    /// only one of the two is written (the rules are in Config.swift); two written
    /// values that conflict are an error that names both keys and both lines. A
    /// default never causes an error about a key the user did not write (issue 7
    /// item 5: `max_size = 2M` alone was refused over the default segment_size).
    func fillDependentDefaults(_ config: inout Config,
                               _ written: [String: (line: Int, value: String)]) throws(ConfigError) {
        let maxSize = written["spool.max_size"], segment = written["spool.segment_size"]
        switch (maxSize, segment) {
        case (let m?, let s?):
            if Int64(config.spool.segmentSize) > config.spool.maxBytes {
                throw error(s.line, "[spool] segment_size = \(s.value) (line \(s.line)) is larger than max_size = \(m.value) (line \(m.line))")
            }
        case (nil, _?):
            let size = SpoolConfig.maxSize(forSegmentSize: config.spool.segmentSize)
            derive(&config.spool.maxBytes, size, "spool.max_size", &config.derived)
        case (_?, nil):
            let size = SpoolConfig.segmentSize(forMaxSize: config.spool.maxBytes)
            derive(&config.spool.segmentSize, size, "spool.segment_size", &config.derived)
        case (nil, nil): break
        }
        if written["receiver.max_message_size"] == nil {
            let size = ReceiverConfig.maxMessageSize(forSpoolSize: config.spool.maxBytes)
            derive(&config.receiver.maxMessageSize, size, "receiver.max_message_size", &config.derived)
        }
        let perClient = written["receiver.max_connections_per_client"]
        if let p = perClient {
            if config.receiver.maxConnectionsPerClient > config.receiver.maxConnections {
                let total = written["receiver.max_connections"].map { "= \($0.value) (line \($0.line))" }
                    ?? "(the default, \(config.receiver.maxConnections))"
                throw error(p.line, "[receiver] max_connections_per_client = \(p.value) (line \(p.line)) is larger than max_connections \(total)")
            }
        } else {
            let cap = ReceiverConfig.maxConnectionsPerClient(forMaxConnections: config.receiver.maxConnections)
            derive(&config.receiver.maxConnectionsPerClient, cap, "receiver.max_connections_per_client", &config.derived)
        }
        let initial = written["retry.initial"], maximum = written["retry.max"]
        switch (initial, maximum) {
        case (let i?, let m?):
            if config.retry.initial > config.retry.max {
                throw error(i.line, "[retry] initial = \(i.value) (line \(i.line)) is longer than max = \(m.value) (line \(m.line))")
            }
        case (nil, _?):
            let seconds = RetryConfig.initial(forMax: config.retry.max)
            derive(&config.retry.initial, seconds, "retry.initial", &config.derived)
        case (_?, nil):
            let seconds = RetryConfig.max(forInitial: config.retry.initial)
            derive(&config.retry.max, seconds, "retry.max", &config.derived)
        case (nil, nil): break
        }
    }

    /// The receiver's TLS keys that need one another: certificate and key go
    /// together, and TLS-only listeners or `require_tls` need them.
    func checkReceiverTLS(_ r: ReceiverConfig, _ written: [String: (line: Int, value: String)]) throws(ConfigError) {
        let cert = written["receiver.tls_cert"], key = written["receiver.tls_key"]
        if let c = cert, key == nil { throw error(c.line, "tls_cert needs tls_key (the certificate's private key) in [receiver]") }
        if let k = key, cert == nil { throw error(k.line, "tls_key needs tls_cert in [receiver]") }
        if r.tlsEnabled { return }
        for name in ["listen_tls", "require_tls", "tls_min_version"] {
            if let w = written["receiver." + name], !(name == "require_tls" && !r.requireTLS) {
                throw error(w.line, "\(name) needs tls_cert and tls_key in [receiver]")
            }
        }
    }

    /// Sets a default that follows another setting, and notes it when it differs
    /// from the plain default.
    func derive<T: BinaryInteger>(_ field: inout T, _ value: T, _ name: String, _ derived: inout [String]) {
        if field != value {
            field = value
            derived.append(name)
        }
    }

    /// Drops a comment: a '#' at the start of the line or after whitespace.
    func stripComment(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var i = line.startIndex
        while i < line.endIndex {
            if line[i] == ASCII.hash && (i == line.startIndex || ASCII.isSpace(line[i - 1])) {
                return line[..<i]
            }
            i += 1
        }
        return line
    }

    // MARK: sections

    func receiverKey(_ key: String, _ value: String, _ n: Int, _ r: inout ReceiverConfig) throws(ConfigError) {
        switch key {
        case "listen":
            var endpoints: [Endpoint] = []
            for item in list(value) {
                guard let e = Endpoint(item) else {
                    throw error(n, "listen: '\(item)' is not an address:port (write IPv6 as [::1]:25)")
                }
                endpoints.append(e)
            }
            if endpoints.isEmpty { throw error(n, "listen: no address given") }
            r.listen = endpoints
        case "hostname":
            guard Mailbox.isDomain(Array(value.utf8)[...]) else { throw error(n, "hostname: '\(value)' is not a domain name") }
            r.hostname = value
        case "allow_clients":
            var blocks: [CIDR] = []
            for item in list(value) {
                guard let c = CIDR(item) else { throw error(n, "allow_clients: '\(item)' is not an address or network (e.g. 192.168.1.0/24)") }
                blocks.append(c)
            }
            if blocks.isEmpty { throw error(n, "allow_clients: no network given") }
            r.allowClients = blocks
        case "allow_recipients":
            var patterns: [RecipientPolicy.Pattern] = []
            for item in list(value) {
                guard let p = RecipientPolicy.pattern(item) else {
                    throw error(n, "allow_recipients: '\(item)' is not *, *@domain, *@*.domain or a mailbox")
                }
                patterns.append(p)
            }
            if patterns.isEmpty { throw error(n, "allow_recipients: no pattern given") }
            r.allowRecipients = RecipientPolicy(patterns: patterns)
        case "max_message_size": r.maxMessageSize = try size(value, n, key, min: 1024, max: 1 << 31)
        case "max_recipients": r.maxRecipients = try number(value, n, key, min: 1, max: 10_000)
        case "max_connections": r.maxConnections = try number(value, n, key, min: 1, max: 1024)
        case "timeout": r.timeout = try duration(value, n, key, min: 1)
        case "tls_cert": r.tlsCert = path(value)
        case "tls_key": r.tlsKey = path(value)
        case "tls_min_version":
            guard let v = TLSVersion(text: value) else { throw error(n, "tls_min_version: '\(value)' is not 1.0, 1.1, 1.2 or 1.3") }
            r.tlsMinVersion = v
        case "require_tls": r.requireTLS = try yesNo(value, n, key)
        case "auth_users": r.authUsers = path(value)
        case "listen_tls":
            var endpoints: [Endpoint] = []
            for item in list(value) {
                guard let e = Endpoint(item) else {
                    throw error(n, "listen_tls: '\(item)' is not an address:port (write IPv6 as [::1]:465)")
                }
                endpoints.append(e)
            }
            if endpoints.isEmpty { throw error(n, "listen_tls: no address given") }
            r.listenTLS = endpoints
        // Issue 12 item 5: connections per client address, early talkers.
        case "max_connections_per_client": r.maxConnectionsPerClient = try number(value, n, key, min: 1, max: 1024)
        case "connection_limit_exempt": r.connectionLimitExempt = try networks(value, n, key)
        case "greet_pause":
            r.greetPause = try duration(value, n, key, min: 0)
            if r.greetPause > GreetPolicy.maxPauseSeconds {
                throw error(n, "greet_pause: \(value) is too long (at most \(GreetPolicy.maxPauseSeconds)s)")
            }
        case "greet_pause_exempt": r.greetPauseExempt = try networks(value, n, key)
        default: throw unknown(key, "receiver", n)
        }
    }

    /// Addresses and networks separated by commas or spaces, as Postfix writes
    /// `$mynetworks`; empty is an empty list.
    func networks(_ value: String, _ n: Int, _ key: String) throws(ConfigError) -> [CIDR] {
        var blocks: [CIDR] = []
        for word in value.utf8.split(whereSeparator: { $0 == ASCII.comma || ASCII.isSpace($0) }) {
            let item = ASCII.string(Array(word)[...])
            guard let c = CIDR(item) else { throw error(n, "\(key): '\(item)' is not an address or network (e.g. 127.0.0.0/8)") }
            blocks.append(c)
        }
        return blocks
    }

    func spoolKey(_ key: String, _ value: String, _ n: Int, _ s: inout SpoolConfig) throws(ConfigError) {
        switch key {
        case "dir": s.dir = path(value)
        case "max_size": s.maxBytes = try spoolSize(value, n, key, min: 64 * 1024, max: SpoolConfig.maxSizeCeiling)
        case "segment_size": s.segmentSize = try size(value, n, key, min: 64 * 1024, max: 1 << 30)
        case "max_age": s.maxAge = try duration(value, n, key, min: 60)
        case "sync":
            guard let m = SyncMethod.all.first(where: { $0.name == value }) else {
                throw error(n, "sync: '\(value)' is not one of auto, io_uring, helper, loop")
            }
            s.sync = m
        // The spelling of 0.1 (before io_uring): yes is auto, no is loop.
        case "sync_helper": s.sync = try yesNo(value, n, key) ? .auto : .loop
        default: throw unknown(key, "spool", n)
        }
    }

    func upstreamKey(_ key: String, _ value: String, _ n: Int, _ u: inout UpstreamConfig) throws(ConfigError) {
        switch key {
        case "host":
            let v = Array(value.utf8)
            guard IPAddress(text: v) != nil || Mailbox.isDomain(v[...]) else {
                throw error(n, "host: '\(value)' is not a host name or IP address")
            }
            u.host = value
        case "port": u.port = try number(value, n, key, min: 1, max: 65535)
        case "tls":
            switch value {
            case "none": u.tls = .none
            case "starttls": u.tls = .starttls
            case "implicit": u.tls = .implicit
            default: throw error(n, "tls: '\(value)' is not one of starttls, implicit, none")
            }
        case "verify": u.verify = try yesNo(value, n, key)
        case "ca_file": u.caFile = path(value)
        case "client_cert": u.clientCert = path(value)
        case "client_key": u.clientKey = path(value)
        case "fingerprint":
            guard let digest = Self.fingerprint(value) else {
                throw error(n, "fingerprint: '\(value)' is not sha256: and 64 hex digits (postern probe prints it)")
            }
            u.fingerprint = digest
        case "auth":
            switch value {
            case "none": u.auth = .none
            case "auto": u.auth = .auto
            case "plain": u.auth = .plain
            case "login": u.auth = .login
            case "xoauth2": u.auth = .xoauth2
            default: throw error(n, "auth: '\(value)' is not one of auto, plain, login, xoauth2, none")
            }
        case "username":
            guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f }) else {
                throw error(n, "username: control characters are not allowed")
            }
            u.username = value
        case "password_file": u.secret = .file(path(value))
        case "password_command":
            switch CommandLineWords.split(value) {
            case .success(let words) where !words.isEmpty:
                var argv = words
                if argv[0].utf8.first != 47 /* / */ && argv[0].utf8.contains(47) { argv[0] = path(argv[0]) }
                u.secret = .command(argv)
            case .success:
                throw error(n, "password_command: no program given")
            case .failure(let e):
                throw error(n, "password_command: \(e)")
            }
        case "rewrite_from": u.rewriteFrom = try yesNo(value, n, key)
        case "rewrite_to": u.rewriteTo = try yesNo(value, n, key)
        case "envelope_from":
            guard let m = Mailbox.parse(Array(value.utf8)[...], allowNull: false), m.atIndex != nil else {
                throw error(n, "envelope_from: '\(value)' is not a mailbox like alerts@example.com")
            }
            u.envelopeFrom = m
        default: throw unknown(key, "upstream", n)
        }
    }

    /// Checks one [upstream] section as a whole once it has ended: the TLS
    /// default follows the port, and AUTH needs a name, one secret, and TLS
    /// unless `tls = none` was written (RFC 4954 §4: a password must not cross
    /// the network in clear by accident).
    func finishUpstream(_ u: inout UpstreamConfig, written keys: [String],
                        lines: [String: (line: Int, value: String)], _ derived: inout [String]) throws(ConfigError) {
        func line(_ key: String) -> Int { lines["upstream." + key]?.line ?? u.line }
        if !keys.contains("tls") {
            u.tls = TLSMode.defaultMode(forPort: u.port)
            if u.tls == .implicit { derived.append("upstream.tls") }
        }
        let secretKeys = keys.filter { $0 == "password_file" || $0 == "password_command" }
        if secretKeys.count > 1 {
            throw error(line("password_command"), "password_file (line \(line("password_file"))) and password_command (line \(line("password_command"))) are both set; keep one")
        }
        if u.username != nil && !keys.contains("auth") { u.auth = .auto }
        if u.auth != .none {
            if u.username == nil { throw error(line("auth"), "auth = \(u.auth.name) needs 'username'") }
            if u.secret == nil {
                throw error(line("username"), "username is set but neither password_file nor password_command is")
            }
        } else if keys.contains("auth") && (u.secret != nil || u.username != nil) {
            throw error(line("auth"), "auth = none, but username or a password is set; remove them or choose a mechanism")
        } else if u.secret != nil {
            throw error(line(secretKeys.first ?? "password_file"), "\(secretKeys.first ?? "password_file") is set without 'username'")
        }
        if (u.clientCert == nil) != (u.clientKey == nil) {
            throw error(line(u.clientCert == nil ? "client_key" : "client_cert"), "client_cert and client_key go together; set both or neither")
        }
        if u.tls == .none {
            for key in ["verify", "ca_file", "fingerprint", "client_cert", "client_key"] where keys.contains(key) {
                throw error(line(key), "\(key) has no effect with tls = none (line \(line("tls")))")
            }
        }
        if u.rewriteFrom && u.envelopeFrom == nil {
            throw error(line("rewrite_from"), "rewrite_from = yes needs envelope_from: the address to write into From:")
        }
        if u.fingerprint != nil && !u.verify {
            throw error(line("fingerprint"), "fingerprint (line \(line("fingerprint"))) and verify = no (line \(line("verify"))) contradict each other")
        }
    }

    func yesNo(_ value: String, _ n: Int, _ key: String) throws(ConfigError) -> Bool {
        switch value {
        case "yes": return true
        case "no": return false
        default: throw error(n, "\(key): '\(value)' is not yes or no")
        }
    }

    /// "sha256:" and 64 hex digits, colons between byte pairs allowed (as
    /// `openssl x509 -fingerprint` and msmtp print them): the SHA-256 of the
    /// upstream's SubjectPublicKeyInfo.
    public static func fingerprint(_ value: String) -> [UInt8]? {
        var text = Array(value.utf8)[...]
        let prefix = Array("sha256:".utf8)
        guard text.count > prefix.count, text.prefix(prefix.count).map(ASCII.lower) == prefix else { return nil }
        text = text.dropFirst(prefix.count)
        var digits: [UInt8] = []
        for c in text where c != 58 /* : */ {
            guard let v = ASCII.hexValue(c) else { return nil }
            digits.append(v)
        }
        guard digits.count == 64 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i + 1 < digits.count {
            out.append(digits[i] << 4 | digits[i + 1])
            i += 2
        }
        return out
    }

    func retryKey(_ key: String, _ value: String, _ n: Int, _ r: inout RetryConfig) throws(ConfigError) {
        switch key {
        case "initial": r.initial = try duration(value, n, key, min: 1)
        case "max": r.max = try duration(value, n, key, min: 1)
        default: throw unknown(key, "retry", n)
        }
    }

    func controlKey(_ key: String, _ value: String, _ n: Int, _ c: inout ControlConfig) throws(ConfigError) {
        switch key {
        case "socket": c.socket = path(value)
        default: throw unknown(key, "control", n)
        }
    }

    /// What `[aliases]` calls local besides an address without a domain.
    func localDomains(_ config: Config) -> [[UInt8]] {
        var names = ["localhost", "localhost.localdomain"]
        if let h = config.receiver.hostname { names.append(h) }
        if let h = systemHostname, !h.isEmpty { names.append(h) }
        return names.map { Array($0.utf8) }
    }

    func localKey(_ key: String, _ value: String, _ n: Int, _ l: inout LocalConfig) throws(ConfigError) {
        switch key {
        case "socket": l.socket = path(value)
        case "drop_dir": l.dropDir = path(value)
        default: throw unknown(key, "local", n)
        }
    }

    func notifyKey(_ key: String, _ value: String, _ n: Int, _ c: inout NotifyConfig) throws(ConfigError) {
        switch key {
        case "postmaster":
            guard let m = Mailbox.parse(Array(value.utf8)[...], allowNull: false), m.atIndex != nil else {
                throw error(n, "postmaster: '\(value)' is not a mailbox like admin@example.com")
            }
            c.postmaster = m
        default: throw unknown(key, "notify", n)
        }
    }

    func unknown(_ key: String, _ section: String, _ n: Int) -> ConfigError {
        error(n, "unknown key '\(key)' in [\(section)]")
    }

    // MARK: values

    func list(_ value: String) -> [String] {
        value.utf8.split(separator: ASCII.comma).map { ASCII.string(ASCII.trimmed(Array($0)[...])) }
            .filter { !$0.isEmpty }
    }

    func path(_ value: String) -> String {
        if value.utf8.first == 47 /* / */ { return value }
        return baseDirectory.utf8.last == 47 ? baseDirectory + value : baseDirectory + "/" + value
    }

    func number(_ value: String, _ n: Int, _ key: String, min: Int, max: Int) throws(ConfigError) -> Int {
        guard let v = ASCII.parseDecimal(value.utf8) else { throw error(n, "\(key): '\(value)' is not a number") }
        guard v >= min && v <= max else { throw error(n, "\(key): \(value) is out of range (\(min)–\(max))") }
        return v
    }

    /// "10M", "512K", "1G" or a bare number of bytes, within `min`...`max` and small
    /// enough for the platform. The range is in Int64 so that the limits and the
    /// comparison are the same on a 32-bit board, where `Int(1) << 40` would trap;
    /// the value is narrowed to `Int` only once it is known to fit.
    func size(_ value: String, _ n: Int, _ key: String, min: Int64, max: Int64) throws(ConfigError) -> Int {
        let v = try sizeInRange(value, n, key, min: min, max: max)
        let ceiling = Swift.min(sizeCeiling, platformIntMax)
        guard v <= UInt64(ceiling), let bytes = Int(exactly: v) else {
            throw error(n, "\(key): \(value) is too large for this \(platformIntMax == Int64(Int32.max) ? "32" : "64")-bit system (at most \(Self.sizeText(ceiling)))")
        }
        return bytes
    }

    /// A size the spool sums up to (`max_size`): within `min`...`max` and the
    /// same on every board, since it is held in an `Int64` everywhere.
    func spoolSize(_ value: String, _ n: Int, _ key: String, min: Int64, max: Int64) throws(ConfigError) -> Int64 {
        let v = try sizeInRange(value, n, key, min: min, max: max)
        // In range, so at most `max`: it fits.
        return Int64(clamping: v)
    }

    /// "10M", "512K", "1G" or a bare number of bytes, within `min`...`max`.
    func sizeInRange(_ value: String, _ n: Int, _ key: String, min: Int64, max: Int64) throws(ConfigError) -> UInt64 {
        guard let v = scaled(value, [(107, 1 << 10), (109, 1 << 20), (103, 1 << 30)]) else {
            throw error(n, "\(key): '\(value)' is not a size (a number with K, M or G)")
        }
        guard v >= UInt64(min), v <= UInt64(max) else {
            throw error(n, "\(key): \(value) is out of range (\(Self.sizeText(min)) to \(Self.sizeText(max)))")
        }
        return v
    }

    /// "30s", "5m", "1h", "2d" or a bare number of seconds, at least `min`, at
    /// most a year (which fits a 32-bit `Int`).
    func duration(_ value: String, _ n: Int, _ key: String, min: Int) throws(ConfigError) -> Int {
        guard let v = scaled(value, [(115, 1), (109, 60), (104, 3600), (100, 86400)]) else {
            throw error(n, "\(key): '\(value)' is not a duration (a number with s, m, h or d)")
        }
        let year: UInt64 = 365 * 86400
        guard v <= year, let seconds = Int(exactly: v) else {
            throw error(n, "\(key): \(value) is too long (at most 365d)")
        }
        guard seconds >= min else { throw error(n, "\(key): \(value) is too short (at least \(min)s)") }
        return seconds
    }

    /// A decimal number with an optional one-letter unit suffix (case-insensitive),
    /// multiplied out in UInt64, saturating: a number too large for any limit stays
    /// too large instead of wrapping. Nil when malformed.
    func scaled(_ value: String, _ units: [(UInt8, UInt64)]) -> UInt64? {
        var digits = Array(value.utf8)[...]
        var unit: UInt64 = 1
        if let last = digits.last, !ASCII.isDigit(last) {
            guard let u = units.first(where: { $0.0 == ASCII.lower(last) }) else { return nil }
            unit = u.1
            digits = digits.dropLast()
        }
        guard let v = ASCII.parseDecimal(digits, as: UInt64.self) else { return nil }
        let total = v.multipliedReportingOverflow(by: unit)
        return total.overflow ? UInt64.max : total.partialValue
    }

    /// 1073741824 -> "1G", 65536 -> "64K", in the units the file takes.
    static func sizeText(_ v: Int64) -> String {
        if v > 0 && v % (1 << 30) == 0 { return "\(v >> 30)G" }
        if v > 0 && v % (1 << 20) == 0 { return "\(v >> 20)M" }
        if v > 0 && v % (1 << 10) == 0 { return "\(v >> 10)K" }
        return "\(v) bytes"
    }
}
