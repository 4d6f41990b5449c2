import Testing
@testable import PosternCore

let configFile = "/etc/postern/postern.conf"

func parseConfig(_ text: String, base: String = "/etc/postern") -> Result<Config, ConfigError> {
    ConfigParser(file: configFile, baseDirectory: base).parse(Array(text.utf8))
}

/// The error of a config that must not parse.
func configError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> ConfigError? {
    switch parseConfig(text) {
    case .success:
        Issue.record("the configuration was accepted", sourceLocation: sourceLocation)
        return nil
    case .failure(let e):
        #expect(e.file == configFile, sourceLocation: sourceLocation)
        return e
    }
}

/// A minimal valid `[upstream]` section, appended to configs that test other sections.
let upstream = "\n[upstream]\nhost = smtp.example.com\n"

@Suite("Configuration file: a full valid file")
struct ConfigParserValidTests {
    static let full = """
    # Postern configuration
    [receiver]
    listen = 127.0.0.1:2525, [::1]:2525   # loopback only
    hostname = gateway.local
    allow_clients = 127.0.0.0/8, ::1/128, 192.168.1.0/24
    allow_recipients = *@example.com, ops@example.net, *@*.example.org
    max_message_size = 20M
    max_recipients = 50
    max_connections = 8
    timeout = 2m

    [spool]
    dir = spool
    max_size = 128M
    segment_size = 1M
    max_age = 3d

    [upstream]
    host = smtp.example.com
    port = 587
    tls = none
    envelope_from = alerts@example.com

    [retry]
    initial = 30s
    max = 2h

    [control]
    socket = /run/postern/ctl
    """

    @Test("Every setting is read")
    func full() throws {
        let c = try parseConfig(Self.full).get()
        #expect(c.receiver.listen == [Endpoint("127.0.0.1:2525")!, Endpoint("[::1]:2525")!])
        #expect(c.receiver.hostname == "gateway.local")
        #expect(c.receiver.allowClients == [CIDR("127.0.0.0/8")!, CIDR("::1/128")!, CIDR("192.168.1.0/24")!])
        #expect(c.receiver.allowRecipients == RecipientPolicy(patterns: [
            .domain(Array("example.com".utf8)), .mailbox(Array("ops@example.net".utf8)),
            .subdomainsOf(Array("example.org".utf8)),
        ]))
        #expect(c.receiver.maxMessageSize == 20 * 1024 * 1024)
        #expect(c.receiver.maxRecipients == 50)
        #expect(c.receiver.maxConnections == 8)
        #expect(c.receiver.timeout == 120)
        #expect(c.spool.dir == "/etc/postern/spool")
        #expect(c.spool.maxBytes == 128 * 1024 * 1024)
        #expect(c.spool.segmentSize == 1024 * 1024)
        #expect(c.spool.maxAge == 3 * 86400)
        #expect(c.upstreams.count == 1)
        #expect(c.upstreams.first?.host == "smtp.example.com")
        #expect(c.upstreams.first?.port == 587)
        #expect(c.upstreams.first?.tls == TLSMode.none)
        #expect(c.upstreams.first?.envelopeFrom == mailbox("alerts@example.com"))
        #expect(c.upstreams.first?.line == 18)
        #expect(c.upstreams.first?.name == "smtp.example.com:587")
        #expect(c.retry.initial == 30)
        #expect(c.retry.max == 7200)
        #expect(c.control.socket == "/run/postern/ctl")
    }

    @Test("CRLF line endings are accepted")
    func crlf() throws {
        let c = try parseConfig(Self.full.replacingLF(with: "\r\n")).get()
        #expect(c.receiver.timeout == 120)
        #expect(c.control.socket == "/run/postern/ctl")
    }

    @Test("Defaults when only [upstream] host is given")
    func defaults() throws {
        let c = try parseConfig("[upstream]\nhost = smtp.example.com\n").get()
        #expect(c.receiver.listen == [Endpoint("127.0.0.1:25")!, Endpoint("[::1]:25")!])
        #expect(c.receiver.hostname == nil)
        #expect(c.receiver.allowClients == [CIDR("127.0.0.0/8")!, CIDR("::1/128")!])
        #expect(c.receiver.allowRecipients == .anyone)
        #expect(c.receiver.maxMessageSize == 10 * 1024 * 1024)
        #expect(c.receiver.maxRecipients == 100)
        #expect(c.receiver.maxConnections == 16)
        #expect(c.receiver.timeout == 300)
        #expect(c.spool.dir == "/var/spool/postern")
        #expect(c.spool.maxBytes == 64 * 1024 * 1024)
        #expect(c.spool.segmentSize == 4 * 1024 * 1024)
        #expect(c.upstreams.first?.port == 25)
        // Issue 8: STARTTLS unless written otherwise (implicit TLS on port 465).
        #expect(c.upstreams.first?.tls == .starttls)
        #expect(c.upstreams.first?.verify == true)
        #expect(c.upstreams.first?.auth == AuthChoice.none)
        #expect(c.upstreams.first?.envelopeFrom == nil)
        #expect(c.retry.initial == 60)
        #expect(c.retry.max == 3600)
        #expect(c.control.socket == "/run/postern/control")
    }

    @Test("An upstream given as an IP address is named address:port")
    func upstreamIP() throws {
        let c = try parseConfig("[upstream]\nhost = 2001:db8::1\nport = 2526\n").get()
        #expect(c.upstreams.first?.name == "[2001:db8::1]:2526")
        let d = try parseConfig("[upstream]\nhost = 127.0.0.1\n").get()
        #expect(d.upstreams.first?.name == "127.0.0.1:25")
    }

    @Test("Comments: whole lines, indented, and after whitespace at the end of a value")
    func comments() throws {
        let c = try parseConfig("""
        # top
           # indented
        [upstream]   # the smarthost
        host = smtp.example.com\t# tab before the hash
        port = 587 # submission
        envelope_from = a#b@example.com
        """).get()
        #expect(c.upstreams.first?.host == "smtp.example.com")
        #expect(c.upstreams.first?.port == 587)
        // A '#' inside a value (not after whitespace) is part of it: '#' is atext.
        #expect(c.upstreams.first?.envelopeFrom?.text == "a#b@example.com")
    }

    @Test("Section names and keys may be surrounded by spaces")
    func spacing() throws {
        let c = try parseConfig("[ upstream ]\n  host=smtp.example.com  \n\tport   =   26\n").get()
        #expect(c.upstreams.first?.port == 26)
    }

    @Test("The shipped development configuration parses")
    func devConfig() throws {
        let c = try parseConfig("""
        [receiver]
        listen = 127.0.0.1:2525
        hostname = postern.dev.local
        allow_clients = 127.0.0.0/8, ::1/128
        allow_recipients = *
        max_message_size = 25M
        timeout = 5m

        [spool]
        dir = ../build/dev-spool
        max_size = 64M

        [upstream]
        host = 127.0.0.1
        port = 2526
        tls = none

        [retry]
        initial = 5s
        max = 1m

        [control]
        socket = ../build/postern.control
        """, base: "/work/main/Deploy").get()
        #expect(c.spool.dir == "/work/main/Deploy/../build/dev-spool")
        #expect(c.control.socket == "/work/main/Deploy/../build/postern.control")
        #expect(c.retry.initial == 5)
        #expect(c.retry.max == 60)
    }
}

@Suite("Configuration values: sizes, durations, paths")
struct ConfigParserValueTests {
    @Test("Sizes take K, M, G (powers of 1024) or bytes", arguments: [
        ("1024", 1024), ("512K", 512 * 1024), ("512k", 512 * 1024), ("10M", 10 << 20), ("10m", 10 << 20),
        ("1G", 1 << 30), ("2G", 2 << 30), ("1K", 1024),
    ])
    func sizes(text: String, bytes: Int) throws {
        let c = try parseConfig("[receiver]\nmax_message_size = \(text)\n" + upstream).get()
        #expect(c.receiver.maxMessageSize == bytes)
    }

    @Test("Bad sizes name the line", arguments: ["10MB", "M", "ten", "1.5M", "-1M", "1000", "3G", "10 M",
                                                 "99999999999999999G", "9999999999999999999"])
    func badSizes(text: String) {
        let e = configError("[receiver]\nmax_message_size = \(text)\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message.contains("max_message_size") == true)
    }

    @Test("Durations take s, m, h, d or seconds", arguments: [
        ("45", 45), ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172_800), ("1H", 3600),
    ])
    func durations(text: String, seconds: Int) throws {
        let c = try parseConfig("[receiver]\ntimeout = \(text)\n" + upstream).get()
        #expect(c.receiver.timeout == seconds)
    }

    @Test("Bad durations name the line", arguments: ["5x", "m", "0s", "0", "five", "1.5h", "-5m", "5 m"])
    func badDurations(text: String) {
        let e = configError("[receiver]\ntimeout = \(text)\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message.contains("timeout") == true)
    }

    @Test("Relative paths are resolved against the configuration's directory", arguments: [
        ("/etc/postern", "spool", "/etc/postern/spool"),
        ("/etc/postern/", "spool", "/etc/postern/spool"),
        ("/etc/postern", "../var/spool", "/etc/postern/../var/spool"),
        ("/etc/postern", "/var/spool/postern", "/var/spool/postern"),
        ("/", "spool", "/spool"),
    ])
    func paths(base: String, value: String, expected: String) throws {
        let c = try parseConfig("[spool]\ndir = \(value)\n[control]\nsocket = \(value)/ctl\n" + upstream, base: base).get()
        #expect(c.spool.dir == expected)
        #expect(c.control.socket == expected + "/ctl")
    }
}

@Suite("Defaults that follow another setting (issue 7 item 5)")
struct ConfigParserDependentDefaultTests {
    @Test("max_size alone: segment_size is a quarter of it, between 64K and 4M", arguments: [
        ("64K", 65_536), ("256K", 65_536), ("1M", 262_144), ("2M", 524_288), ("16M", 4_194_304),
        ("64M", 4_194_304), ("1G", 4_194_304), ("1024G", 4_194_304),
    ] as [(String, Int)])
    func segmentFromMaxSize(maxSize: String, segment: Int) throws {
        let c = try parseConfig("[spool]\nmax_size = \(maxSize)\n" + upstream).get()
        #expect(c.spool.segmentSize == segment)
        #expect(Int64(c.spool.segmentSize) <= c.spool.maxBytes)
        #expect(c.spool.segmentSize >= SpoolConfig.minSegmentSize)
        #expect(c.derived.contains("spool.segment_size") == (segment != SpoolConfig().segmentSize))
    }

    @Test("max_size = 2M alone is valid: no error about the unwritten segment_size")
    func smallSpoolAlone() throws {
        let c = try parseConfig("[spool]\nmax_size = 2M\n" + upstream).get()
        #expect(c.spool.maxBytes == 2 << 20)
        #expect(c.spool.segmentSize == 512 << 10)
        // A message larger than the whole spool could never be queued.
        #expect(c.receiver.maxMessageSize == 2 << 20)
        #expect(c.derived == ["spool.segment_size", "receiver.max_message_size"])
    }

    @Test("segment_size alone, larger than the default max_size: max_size follows it")
    func maxSizeFromSegment() throws {
        let c = try parseConfig("[spool]\nsegment_size = 128M\n" + upstream).get()
        #expect(c.spool.maxBytes == 128 << 20)
        #expect(c.spool.segmentSize == 128 << 20)
        #expect(c.derived == ["spool.max_size"])
        let d = try parseConfig("[spool]\nsegment_size = 1M\n" + upstream).get()
        #expect(d.spool.maxBytes == SpoolConfig().maxBytes)
        #expect(d.derived.isEmpty)
    }

    @Test("A written max_message_size is kept even when max_size is smaller")
    func writtenMessageSizeKept() throws {
        let c = try parseConfig("[receiver]\nmax_message_size = 20M\n[spool]\nmax_size = 2M\n" + upstream).get()
        #expect(c.receiver.maxMessageSize == 20 << 20)
    }

    @Test("[retry] max alone, shorter than the default initial: initial follows it")
    func initialFromMax() throws {
        let c = try parseConfig("[retry]\nmax = 30s\n" + upstream).get()
        #expect(c.retry.initial == 30)
        #expect(c.retry.max == 30)
        #expect(c.derived == ["retry.initial"])
    }

    @Test("[retry] initial alone, longer than the default max: max follows it")
    func maxFromInitial() throws {
        let c = try parseConfig("[retry]\ninitial = 2h\n" + upstream).get()
        #expect(c.retry.initial == 7200)
        #expect(c.retry.max == 7200)
        #expect(c.derived == ["retry.max"])
    }

    @Test("No key written: the plain defaults, nothing derived")
    func plainDefaults() throws {
        let c = try parseConfig(upstream).get()
        #expect(c.derived.isEmpty)
        #expect(c.spool.segmentSize == SpoolConfig.segmentSize(forMaxSize: c.spool.maxBytes))
    }
}

@Suite("Configuration sizes on a 32-bit board (issue 7 item 7)")
struct ConfigParser32BitTests {
    /// The parser as it runs on armv7, where `Int` is `Int32`.
    func parse32(_ text: String) -> Result<Config, ConfigError> {
        var p = ConfigParser(file: configFile, baseDirectory: "/etc/postern")
        p.platformIntMax = Int64(Int32.max)
        return p.parse(Array(text.utf8))
    }

    @Test("A message size beyond 1G is a configuration error naming file, line and key", arguments: [
        ("receiver", "max_message_size", "2G"), ("receiver", "max_message_size", "1048577K"),
        ("receiver", "max_message_size", "2147483648"),
    ])
    func tooLarge(section: String, key: String, value: String) {
        guard case .failure(let e) = parse32("# board\n[\(section)]\n\(key) = \(value)\n" + upstream) else {
            Issue.record("\(key) = \(value) was accepted on a 32-bit board")
            return
        }
        #expect(e.file == configFile)
        #expect(e.line == 3)
        #expect(e.message == "\(key): \(value) is too large for this 32-bit system (at most 1G)")
    }

    @Test("Up to 1G is accepted", arguments: ["1G", "1024M", "1073741824", "64M"])
    func fits(value: String) throws {
        let c = try parse32("[spool]\nmax_size = \(value)\n[receiver]\nmax_message_size = \(value)\n" + upstream).get()
        #expect(c.spool.maxBytes <= Int64(Int32.max))
        #expect(Int64(c.receiver.maxMessageSize) <= Int64(Int32.max))
    }

    /// Issue 10 item 2: a Raspberry Pi OS 32-bit user with a 32 GB card may give
    /// the spool more than 2 GiB. The spool's total is an `Int64` on every board.
    @Test("max_size past 2 GiB is accepted on a 32-bit board, up to 1024G as on 64 bits", arguments: [
        ("4G", Int64(4) << 30), ("3G", Int64(3) << 30), ("2048M", Int64(2) << 30), ("1025M", Int64(1025) << 20),
        ("2147483648", Int64(1) << 31), ("4294967296", Int64(1) << 32), ("1024G", Int64(1) << 40),
    ])
    func spoolPast2GiB(value: String, bytes: Int64) throws {
        let parsers: [(String) -> Result<Config, ConfigError>] = [parse32, { parseConfig($0) }]
        for parse in parsers {
            let c = try parse("[spool]\nmax_size = \(value)\n" + upstream).get()
            #expect(c.spool.maxBytes == bytes)
            // Its derivations stay within a 32-bit `Int`.
            #expect(c.spool.segmentSize == SpoolConfig().segmentSize)
            #expect(c.receiver.maxMessageSize == ReceiverConfig().maxMessageSize)
            #expect(c.derived.isEmpty)
            #expect(MemoryBudget(c).lines(c).count == 7)
        }
    }

    @Test("max_size = 4G with segment_size = 1G and max_message_size = 1G: the largest a 32-bit board takes")
    func largestOn32Bit() throws {
        let c = try parse32("[receiver]\nmax_message_size = 1G\n[spool]\nmax_size = 4G\nsegment_size = 1G\n" + upstream).get()
        #expect(c.spool.maxBytes == 4 << 30)
        #expect(c.spool.segmentSize == 1 << 30)
        #expect(c.receiver.maxMessageSize == 1 << 30)
    }

    @Test("Beyond 1024G max_size is out of range on every board", arguments: ["1025G", "1048577M", "1099511627777"])
    func spoolBeyondCeiling(value: String) {
        for r in [parse32("[spool]\nmax_size = \(value)\n" + upstream), parseConfig("[spool]\nmax_size = \(value)\n" + upstream)] {
            guard case .failure(let e) = r else { Issue.record("max_size = \(value) was accepted"); continue }
            #expect(e.message == "max_size: \(value) is out of range (64K to 1024G)")
        }
    }

    @Test("segment_size = 2G is still refused on a 32-bit board (one file stays within Int)", arguments: ["2G", "2048M", "1025M"])
    func segmentStillLimited(value: String) {
        guard case .failure(let e) = parse32("[spool]\nmax_size = 4G\nsegment_size = \(value)\n" + upstream) else {
            Issue.record("segment_size = \(value) was accepted on a 32-bit board")
            return
        }
        #expect(e.line == 3)
        #expect(e.message == "segment_size: \(value) is out of range (64K to 1G)")
    }

    @Test("The same values on a 64-bit board", arguments: [("3G", true), ("1024G", true), ("1025G", false)])
    func on64Bit(value: String, ok: Bool) {
        let r = parseConfig("[spool]\nmax_size = \(value)\n" + upstream)
        if case .success = r { #expect(ok) } else { #expect(!ok) }
    }

    @Test("Numbers beyond every integer width are out of range, not a trap", arguments: [
        "max_size = 99999999999999999999999G", "max_size = 18446744073709551616", "max_size = 18446744073709551615K",
        "segment_size = 9223372036854775808", "max_age = 99999999999999999999d", "max_age = 9223372036854775807",
    ])
    func huge(line: String) {
        for result in [parse32("[spool]\n\(line)\n" + upstream), parseConfig("[spool]\n\(line)\n" + upstream)] {
            guard case .failure(let e) = result else {
                Issue.record("\(line) was accepted")
                continue
            }
            #expect(e.line == 2)
            #expect(e.message.hasPrefix(String(line.split(separator: " ")[0]) + ":"))
        }
    }

    @Test("Counts and ports with many digits are out of range", arguments: [
        "[receiver]\nmax_recipients = 99999999999", "[receiver]\nmax_connections = 4294967297",
        "[upstream]\nhost = a.example\nport = 99999999999999999999",
    ])
    func hugeNumbers(text: String) {
        let r = parse32(text + (text.hasPrefix("[upstream]") ? "" : upstream))
        guard case .failure(let e) = r else { Issue.record("accepted"); return }
        #expect(e.message.contains("out of range"))
    }
}

@Suite("Configuration errors name the file and line")
struct ConfigParserErrorTests {
    @Test("An unknown key in each section", arguments: ["receiver", "spool", "upstream", "retry", "control"])
    func unknownKey(section: String) {
        let text = section == "upstream" ? "[upstream]\nhost = h.example\nbogus = 1\n"
                                         : "[\(section)]\nbogus = 1\n" + upstream
        let e = configError(text)
        #expect(e?.line == (section == "upstream" ? 3 : 2))
        #expect(e?.message.contains("unknown key 'bogus'") == true)
        #expect(e?.message.contains("[\(section)]") == true)
    }

    @Test("An unknown section")
    func unknownSection() {
        let e = configError("# comment\n[mailer]\nx = 1\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message.contains("unknown section [mailer]") == true)
    }

    @Test("[notify] postmaster (issue 8 item 6)")
    func notifySection() throws {
        let c = try parseConfig(upstream + "[notify]\npostmaster = admin@example.com\n").get()
        #expect(c.notify.postmaster == mailbox("admin@example.com"))
        #expect(try parseConfig(upstream).get().notify.postmaster == nil)
        let e = configError(upstream + "[notify]\npostmaster = root\n")
        #expect(e?.line == 5)
        #expect(e?.message.contains("not a mailbox") == true)
    }

    @Test("[upstream] rewrite_from needs envelope_from")
    func rewriteFromNeedsEnvelopeFrom() throws {
        let e = configError("[upstream]\nhost = h.example\nrewrite_from = yes\n")
        #expect(e?.line == 3)
        #expect(e?.message.contains("needs envelope_from") == true)
        let c = try parseConfig("[upstream]\nhost = h.example\nenvelope_from = a@example.com\nrewrite_from = yes\n").get()
        #expect(c.upstreams[0].rewriteFrom)
    }

    @Test("[aliases] is read and resolved; the receiver's hostname and localhost are local (issue 9 item 4)")
    func aliasesSection() throws {
        let c = try parseConfig(upstream + "[receiver]\nhostname = board.example\n[aliases]\nroot = admin@example.com\n"
                                + "cron-job = ops@example.com, root\n").get()
        #expect(c.aliases.expand(localPart: Array("cron-job".utf8)[...])?.map { $0.text } == ["ops@example.com", "admin@example.com"])
        #expect(c.aliases.isLocal(Mailbox.parse(Array("x@Board.Example".utf8)[...], allowNull: false)!))
        #expect(c.aliases.isLocal(Mailbox.parse(Array("x@localhost".utf8)[...], allowNull: false)!))
        #expect(!c.aliases.isLocal(Mailbox.parse(Array("x@example.com".utf8)[...], allowNull: false)!))
    }

    @Test("An alias loop is an error naming its line")
    func aliasLoop() {
        let e = configError(upstream + "[aliases]\na = b\nb = a\n")
        #expect(e?.line == 5 || e?.line == 6)
        #expect(e?.message.contains("loop") == true)
    }

    @Test("[aliases] twice is an error")
    func aliasesTwice() {
        #expect(configError(upstream + "[aliases]\na = x@example.com\n[aliases]\nb = y@example.com\n")?.line == 6)
    }

    @Test("[local] socket and drop_dir; the drop directory defaults to maildrop in the spool")
    func localSection() throws {
        let c = try parseConfig(upstream + "[spool]\ndir = /var/spool/p\n").get()
        #expect(c.local.socket == "/run/postern/submit")
        #expect(c.local.dropDirectory(spoolDir: c.spool.dir) == "/var/spool/p/maildrop")
        let d = try parseConfig(upstream + "[local]\nsocket = /tmp/s\ndrop_dir = /tmp/d\n").get()
        #expect(d.local.socket == "/tmp/s" && d.local.dropDirectory(spoolDir: d.spool.dir) == "/tmp/d")
        #expect(configError(upstream + "[local]\nsockets = /tmp/s\n")?.line == 5)
    }

    @Test("[upstream] rewrite_to")
    func rewriteTo() throws {
        #expect(try parseConfig("[upstream]\nhost = h.example\nrewrite_to = yes\n").get().upstreams[0].rewriteTo)
        #expect(configError("[upstream]\nhost = h.example\nrewrite_to = maybe\n")?.line == 3)
    }

    @Test("[receiver] TLS keys: certificate and key together; listen_tls, require_tls and tls_min_version need them")
    func receiverTLS() throws {
        let both = "[receiver]\ntls_cert = /etc/ssl/c.pem\ntls_key = /etc/ssl/k.pem\n"
        let c = try parseConfig(both + "tls_min_version = 1.0\nrequire_tls = yes\nlisten_tls = 0.0.0.0:465, [::]:465\n" + upstream).get()
        #expect(c.receiver.tlsEnabled && c.receiver.requireTLS && c.receiver.tlsMinVersion == .v1_0)
        #expect(c.receiver.listenTLS.map { $0.description } == ["0.0.0.0:465", "[::]:465"])
        let d = try parseConfig(both + upstream).get()
        #expect(d.receiver.tlsMinVersion == .v1_2 && !d.receiver.requireTLS && d.receiver.listenTLS.isEmpty)
        #expect(configError("[receiver]\ntls_cert = /c.pem\n" + upstream)?.message.contains("needs tls_key") == true)
        #expect(configError("[receiver]\ntls_key = /k.pem\n" + upstream)?.line == 2)
        #expect(configError("[receiver]\nlisten_tls = 127.0.0.1:465\n" + upstream)?.message.contains("needs tls_cert") == true)
        #expect(configError("[receiver]\nrequire_tls = yes\n" + upstream)?.line == 2)
        #expect(try parseConfig("[receiver]\nrequire_tls = no\n" + upstream).get().receiver.requireTLS == false)
        let bad = configError(both + "tls_min_version = 1.4\n" + upstream)
        #expect(bad?.line == 4 && bad?.message.contains("1.4") == true)
        #expect(configError(both + "listen_tls = 465\n" + upstream)?.line == 4)
    }

    @Test("auth_users is a path, resolved against the configuration's directory")
    func authUsers() throws {
        let c = try parseConfig("[receiver]\nauth_users = /etc/postern/users\n" + upstream).get()
        #expect(c.receiver.authUsers == "/etc/postern/users")
        #expect(try parseConfig(upstream).get().receiver.authUsers == nil)
        #expect(try parseConfig("[receiver]\nauth_users = users\n" + upstream).get().receiver.authUsers == "/etc/postern/users")
        #expect(configError("[receiver]\nauth_users =\n" + upstream)?.line == 2)
    }

    @Test("An unknown tls mode")
    func tlsUnknown() {
        let e = configError("[upstream]\nhost = smtp.example.com\ntls = maybe\n")
        #expect(e?.line == 3)
        #expect(e?.message.contains("maybe") == true)
    }

    @Test("Bad values name the line", arguments: [
        ("[receiver]\nlisten = localhost:25", 2),
        ("[receiver]\nlisten = 127.0.0.1:25, ::1:25", 2),
        ("[receiver]\nhostname = bad_host!", 2),
        ("[receiver]\nallow_clients = 300.0.0.0/8", 2),
        ("[receiver]\nallow_clients = 10.0.0.0/8, 10.0.0.0/40", 2),
        ("[receiver]\nallow_recipients = ops", 2),
        ("[receiver]\n\nmax_recipients = lots", 3),
        ("[receiver]\nmax_recipients = 0", 2),
        ("[receiver]\nmax_recipients = 10001", 2),
        ("[receiver]\nmax_connections = 0", 2),
        ("[receiver]\nmax_connections = 1025", 2),
        ("[spool]\nmax_size = 1K", 2),
        ("[spool]\nsegment_size = 2G", 2),
        ("[retry]\ninitial = soon", 2),
        ("[control]\nsocket =", 2),
    ])
    func badValue(text: String, line: Int) {
        let e = configError(text + "\n" + upstream)
        #expect(e?.line == line, "\(text.debugDescription): \(e.map { $0.description } ?? "")")
    }

    @Test("Bad upstream values name the line", arguments: [
        "port = 0", "port = 65536", "port = smtp", "host = bad host", "host = -bad.example",
        "envelope_from = not-a-mailbox", "envelope_from = <>", "envelope_from = postmaster", "tls =",
    ])
    func badUpstreamValue(line: String) {
        // The bad line comes first, so a bad host is not reported as a duplicate.
        let text = "[upstream]\n\(line)\n" + (line.hasPrefix("host") ? "" : "host = smtp.example.com\n")
        let e = configError(text)
        #expect(e?.line == 2, "\(line): \(e.map { $0.description } ?? "")")
    }

    @Test("A key set twice in one section")
    func duplicateKey() {
        let e = configError("[receiver]\ntimeout = 5m\nmax_recipients = 5\ntimeout = 6m\n" + upstream)
        #expect(e?.line == 4)
        #expect(e?.message.contains("set twice") == true)
    }

    @Test("The same key in different sections is not a duplicate")
    func sameKeyDifferentSections() throws {
        let c = try parseConfig("[receiver]\ntimeout = 5m\n[upstream]\nhost = a.example\nport = 26\n").get()
        #expect(c.upstreams.first?.port == 26)
    }

    @Test("A section given twice", arguments: ["receiver", "spool", "retry", "control"])
    func duplicateSection(name: String) {
        let e = configError("[\(name)]\n[\(name)]\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message.contains("twice") == true)
    }

    @Test("No [upstream] section: an error about the file")
    func missingUpstream() {
        let e = configError("[receiver]\ntimeout = 5m\n")
        #expect(e?.line == 0)
        #expect(e?.message.contains("[upstream]") == true)
        #expect(e?.description.hasPrefix(configFile + ": ") == true)
    }

    @Test("An [upstream] without host names the section's line", arguments: [
        ("[upstream]\nport = 25\n", 1),
        ("[receiver]\ntimeout = 5m\n\n[upstream]\nport = 25\n[retry]\ninitial = 1m\n", 4),
    ])
    func missingHost(text: String, line: Int) {
        let e = configError(text)
        #expect(e?.line == line)
        #expect(e?.message.contains("host") == true)
    }

    @Test("[upstream] may repeat: primary first, then the fallbacks, each checked on its own (issue 8 item 4)")
    func severalUpstreams() throws {
        let c = try parseConfig("[upstream]\nhost = a.example\n\n[upstream]\nhost = b.example\nport = 465\ntls = none\n").get()
        #expect(c.upstreams.map { $0.host } == ["a.example", "b.example"])
        #expect(c.upstreams.map { $0.tls } == [.starttls, TLSMode.none])
        #expect(c.upstreams.map { $0.line } == [1, 4])
        let e = configError("[upstream]\nhost = a.example\n\n[upstream]\nhost = b.example\nusername = u\n")
        #expect(e?.line == 6)
        #expect(e?.message.contains("password_file") == true)
    }

    @Test("A key before any section")
    func keyBeforeSection() {
        let e = configError("timeout = 5m\n" + upstream)
        #expect(e?.line == 1)
    }

    @Test("A line that is neither key = value nor [section]")
    func garbageLine() {
        let e = configError("[receiver]\njust some words\n" + upstream)
        #expect(e?.line == 2)
    }

    @Test("A malformed section header")
    func malformedHeader() {
        let e = configError("[receiver\n" + upstream)
        #expect(e?.line == 1)
    }

    @Test("An empty value")
    func emptyValue() {
        let e = configError("[receiver]\nhostname =   # nothing\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message.contains("no value") == true)
    }

    @Test("[retry] initial longer than max, both written: both keys and lines are named")
    func retryOrder() {
        let e = configError("[retry]\ninitial = 2h\nmax = 1h\n" + upstream)
        #expect(e?.line == 2)
        #expect(e?.message == "[retry] initial = 2h (line 2) is longer than max = 1h (line 3)")
    }

    @Test("[spool] segment_size larger than max_size, both written: both keys and lines are named")
    func segmentLargerThanSpool() {
        let e = configError("[spool]\nmax_size = 1M\n\nsegment_size = 2M\n" + upstream)
        #expect(e?.line == 4)
        #expect(e?.message == "[spool] segment_size = 2M (line 4) is larger than max_size = 1M (line 2)")
    }

    @Test("An empty list is a bad value, not an empty setting", arguments: [
        "listen = ,", "allow_clients = ,", "allow_recipients = , ,",
    ])
    func emptyList(line: String) {
        let e = configError("[receiver]\n\(line)\n" + upstream)
        #expect(e?.line == 2)
    }

    @Test("ConfigError.description names file and line")
    func description() {
        #expect(ConfigError(file: "/a.conf", line: 7, message: "bad").description == "/a.conf:7: bad")
        #expect(ConfigError(file: "/a.conf", line: 0, message: "bad").description == "/a.conf: bad")
    }
}

extension String {
    func replacingLF(with s: String) -> String {
        var out = ""
        for c in self { if c == "\n" { out += s } else { out.append(c) } }
        return out
    }

}

@Suite("[spool] sync: what runs the group commit's syncs (issue 11 item 3)")
struct ConfigParserSyncTests {
    @Test("auto by default; each method by name; sync_helper (0.1's spelling) yes is auto, no is loop", arguments: [
        ("", SyncMethod.auto), ("sync = auto\n", .auto), ("sync = io_uring\n", .ioUring), ("sync = helper\n", .helper),
        ("sync = loop\n", .loop), ("sync_helper = yes\n", .auto), ("sync_helper = no\n", .loop),
    ] as [(String, SyncMethod)])
    func methods(line: String, method: SyncMethod) throws {
        let c = try parseConfig("[spool]\n" + line + upstream).get()
        #expect(c.spool.sync == method)
    }

    @Test("An unknown method is refused, naming the line and the choices")
    func unknownMethod() {
        guard case .failure(let e) = parseConfig("[spool]\nsync = aio\n" + upstream) else {
            Issue.record("sync = aio accepted")
            return
        }
        #expect(e.line == 2)
        #expect(e.message.contains("'aio' is not one of auto, io_uring, helper, loop"))
    }
}
