import CLibc
import PosternCore
import PosternRuntime

// The command line (DESIGN.md "Command line"). Exit codes follow sysexits.h.
let exUsage: Int32 = 64
let exConfig: Int32 = 78
let exSoftware: Int32 = 70
let exOSErr: Int32 = 71
let exUnavailable: Int32 = 69
let exTempFail: Int32 = 75
let defaultConfig = "/etc/postern/postern.conf"

let usage = """
    usage: postern <command> [options]

    commands:
      run [--config FILE] [--log stderr|journal] [--debug]
                                                     run in the foreground (logs go to the journal
                                                     when started by systemd, else to stderr)
      check-config [--config FILE]                   validate; print the effective settings and memory budget
      queue [--json] [--config FILE]                 list queued messages (read from the spool when no daemon runs)
      flush [--config FILE]                          retry every deferred message now
      status [--config FILE]                         uptime, queue, last delivery, upstream state
      sendmail [-t] [-i] [-f FROM] [-F NAME] [RCPT...]
                                                     submit a message from standard input, as
                                                     sendmail(1) does (also when called as sendmail;
                                                     mailq and newaliases work too)
      probe [--config FILE] [--send-to ADDRESS]      connect to each upstream as the daemon would and say
                                                     what happened at each step; send a test message
                                                     through each only with --send-to
      passwd USER [--file PATH] [--config FILE]      add USER to the auth_users file, or set a new password
                                                     (read twice without echo, or one line from standard input)
      version                                        print the version

    """

struct Options {
    var configPath = configPathFromEnvironment()
    var debug = false
    var json = false
    /// `probe --send-to`: where the test message goes.
    var sendTo: String? = nil
    /// nil: the journal when stderr is connected to it (JOURNAL_STREAM), else stderr.
    var log: Log.Sink? = nil
}

/// Parses the options after the command; returns an error message for bad ones.
func parseOptions(_ args: [String], allowed: [String]) -> Result<Options, UsageError> {
    var o = Options()
    var i = 0
    while i < args.count {
        let a = args[i]
        guard allowed.contains(a) else { return .failure(UsageError(message: "unknown option '\(a)'")) }
        switch a {
        case "--config":
            guard i + 1 < args.count else { return .failure(UsageError(message: "--config needs a file")) }
            o.configPath = args[i + 1]
            i += 2
        case "--log":
            guard i + 1 < args.count else { return .failure(UsageError(message: "--log needs a value (stderr or journal)")) }
            switch args[i + 1] {
            case "stderr": o.log = .stderr
            case "journal": o.log = .journal
            default: return .failure(UsageError(message: "--log: '\(args[i + 1])' is not one of stderr, journal"))
            }
            i += 2
        case "--debug":
            o.debug = true
            i += 1
        case "--send-to":
            guard i + 1 < args.count else { return .failure(UsageError(message: "--send-to needs an address")) }
            o.sendTo = args[i + 1]
            i += 2
        case "--json":
            o.json = true
            i += 1
        default:
            i += 1
        }
    }
    return .success(o)
}

struct UsageError: Error {
    var message: String
}


/// A command's exit status when it stops early (the message was printed).
struct Exit: Error {
    var code: Int32
}

/// The options and the configuration every command starts from; bad options and
/// configuration errors are printed here, naming the option or the file and line.
func optionsAndConfig(_ command: String, _ args: [String], allowed: [String]) throws(Exit) -> (Options, Config) {
    let options: Options
    switch parseOptions(args, allowed: allowed) {
    case .success(let o): options = o
    case .failure(let e):
        Sys.writeStderr("postern \(command): \(e.message)\n\(usage)")
        throw Exit(code: exUsage)
    }
    switch ConfigFile.load(options.configPath) {
    case .success(let c): return (options, c)
    case .failure(let e):
        Sys.writeStderr("postern: \(e)\n")
        throw Exit(code: exConfig)
    }
}

func runCommand(_ args: [String]) -> Int32 {
    let options: Options, config: Config
    do throws(Exit) {
        (options, config) = try optionsAndConfig("run", args, allowed: ["--config", "--log", "--debug"])
    } catch {
        return error.code
    }
    let sink = options.log ?? (Systemd.stderrIsJournal() ? .journal : .stderr)
    let log = Log(showDebug: options.debug, sink: sink)
    let daemon = Daemon(config: config, configPath: options.configPath, log: log)
    if let problem = daemon.start() {
        log.error(problem)
        return exOSErr
    }
    return daemon.run()
}

func checkConfigCommand(_ args: [String]) -> Int32 {
    let options: Options, c: Config
    do throws(Exit) {
        (options, c) = try optionsAndConfig("check-config", args, allowed: ["--config"])
    } catch {
        return error.code
    }
    var problems = UpstreamChecks.problems(c)
    // The daemon would run without TLS for clients: say it here, where it can be fixed.
    if let cert = c.receiver.tlsCert, let key = c.receiver.tlsKey,
       case .failure(let p) = TLSServerContext.make(certFile: cert, keyFile: key, minVersion: c.receiver.tlsMinVersion) {
        problems.append("[receiver] TLS: \(p.text)")
    }
    // Likewise AUTH: the daemon would run without it.
    if let path = c.receiver.authUsers, case .failure(let p) = AuthUsersFile.load(path) {
        problems.append("[receiver] \(p.text)")
    }
    if !problems.isEmpty {
        for p in problems { Sys.writeStderr("postern check-config: \(options.configPath): \(p)\n") }
        return 1
    }
    var out = "# \(options.configPath): OK\n"
    for w in UpstreamChecks.warnings(c) { out += "# warning: " + w + "\n" }
    if c.receiver.authUsers != nil && !c.receiver.tlsEnabled {
        out += "# warning: auth_users without tls_cert: AUTH is offered on loopback only\n"
    }
    for line in effectiveSettings(c) { out += line + "\n" }
    out += "\n"
    for line in MemoryBudget(c).lines(c) { out += "# " + line + "\n" }
    Sys.writeStdout(out)
    return 0
}

/// `probe`: each upstream, step by step (`Probe`). Exit status 0 only when
/// every upstream would take mail.
func probeCommand(_ args: [String]) -> Int32 {
    let options: Options, config: Config
    do throws(Exit) {
        (options, config) = try optionsAndConfig("probe", args, allowed: ["--config", "--send-to"])
    } catch {
        return error.code
    }
    var sendTo: Mailbox? = nil
    if let text = options.sendTo {
        guard let m = Mailbox.parse(Array(text.utf8)[...], allowNull: false), m.atIndex != nil else {
            Sys.writeStderr("postern probe: --send-to: '\(text)' is not an address like admin@example.com\n")
            return exUsage
        }
        sendTo = m
    }
    _ = cl_ignore_sigpipe()
    for p in UpstreamChecks.problems(config) { Sys.writeStdout("problem: \(p)\n") }
    let probe = Probe(config: config, heloName: config.receiver.hostname ?? Sys.hostname(), sendTo: sendTo,
                      print: { Sys.writeStdout($0 + "\n") })
    return probe.run() ? 0 : 1
}

/// `queue`, `flush` and `status`: one request over the control socket. `queue`
/// reads the spool directory itself when no daemon answers.
func controlCommand(_ command: String, _ args: [String], allowed: [String]) -> Int32 {
    let options: Options, config: Config
    do throws(Exit) {
        (options, config) = try optionsAndConfig(command, args, allowed: allowed)
    } catch {
        return error.code
    }
    let path = config.control.socket
    let fd = cl_connect_unix(path)
    if fd < 0 {
        let why = Errno.current("connect").text
        if command == "queue" { return offlineQueue(config, json: options.json, why: why) }
        Sys.writeStderr("postern \(command): postern is not running (control socket \(path): \(why))\n")
        return exUnavailable
    }
    defer { Sys.close(fd) }
    let request = Array((command == "queue" ? ControlRequest.queue(json: options.json)
                         : command == "flush" ? ControlRequest.flush : ControlRequest.status).line.utf8)
    guard case .success = request.withUnsafeBytes({ Sys.send(fd, $0) }) else {
        Sys.writeStderr("postern \(command): cannot talk to the daemon on \(path)\n")
        return exUnavailable
    }
    // The first line is OK or ERROR; the rest is passed through as it arrives.
    var firstLine: [UInt8] = []
    var gotStatus = false
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let r = buffer.withUnsafeMutableBytes { Sys.read(fd, $0) }
        guard case .success(.done(let n)) = r else { break }
        var chunk = buffer[0..<n]
        if !gotStatus {
            if let nl = chunk.firstIndex(of: 10) {
                firstLine += chunk[..<nl]
                chunk = chunk[(nl + 1)...]
                gotStatus = true
                if !firstLine.starts(with: Array("OK".utf8)) {
                    let message = ASCII.string(firstLine.dropFirst(min(6, firstLine.count)))
                    Sys.writeStderr("postern \(command): \(message)\n")
                    return message.hasPrefix("busy") ? exTempFail : exSoftware
                }
            } else {
                firstLine += chunk
                continue
            }
        }
        if !chunk.isEmpty { Sys.writeStdout(ASCII.string(chunk)) }
    }
    if !gotStatus {
        Sys.writeStderr("postern \(command): the daemon closed the control connection without answering\n")
        return exSoftware
    }
    return 0
}

/// `postern queue` with no daemon: scan the spool read-only and list it.
func offlineQueue(_ config: Config, json: Bool, why: String) -> Int32 {
    let spool = Spool(dir: config.spool.dir, segmentSize: config.spool.segmentSize, maxSize: config.spool.maxBytes,
                      log: Log(quiet: true))
    switch spool.openReadOnly(clock: Clock.reading()) {
    case .failure(let e):
        Sys.writeStderr("postern queue: no daemon answers on \(config.control.socket) (\(why)), and the spool cannot be read: \(e)\n")
        return exUnavailable
    case .success:
        break
    }
    Sys.writeStderr("postern queue: no daemon is running (\(why)); read from \(config.spool.dir)\n")
    let reader = MessageReader(capacity: 4096)
    let wall = Clock.wall()
    var out = json ? QueueReport.jsonHeader() : QueueReport.textHeader()
    var count = 0
    for m in spool.queue.messages {
        guard case .success(let env) = reader.open(m, spool: spool) else { continue }
        let info = ControlServer.info(m, env, nextTry: 0, lastReply: nil)
        out += json ? QueueReport.json(info, now: wall, first: count == 0) : QueueReport.text(info, now: wall)
        count += 1
        if out.utf8.count > 64 * 1024 {
            Sys.writeStdout(out)
            out = ""
        }
    }
    out += json ? QueueReport.jsonFooter(count: count, bytes: spool.queue.textBytes)
                : QueueReport.textFooter(count: count, bytes: spool.queue.textBytes)
    Sys.writeStdout(out)
    return 0
}

/// The configuration with every default filled in, in the file's own format.
func effectiveSettings(_ c: Config) -> [String] {
    func size(_ v: Int64) -> String {
        if v % (1024 * 1024 * 1024) == 0 { return "\(v / (1024 * 1024 * 1024))G" }
        if v % (1024 * 1024) == 0 { return "\(v / (1024 * 1024))M" }
        if v % 1024 == 0 { return "\(v / 1024)K" }
        return "\(v)"
    }
    func duration(_ v: Int) -> String {
        if v % 86400 == 0 { return "\(v / 86400)d" }
        if v % 3600 == 0 { return "\(v / 3600)h" }
        if v % 60 == 0 { return "\(v / 60)m" }
        return "\(v)s"
    }
    func pattern(_ p: RecipientPolicy.Pattern) -> String {
        switch p {
        case .any: return "*"
        case .domain(let d): return "*@" + ASCII.string(d)
        case .subdomainsOf(let d): return "*@*." + ASCII.string(d)
        case .mailbox(let m): return ASCII.string(m)
        }
    }
    /// A note after a default that follows another setting (Config.swift).
    func note(_ key: String) -> String {
        guard c.derived.contains(key) else { return "" }
        switch key {
        case "spool.segment_size": return "   # from max_size"
        case "spool.max_size": return "   # from segment_size"
        case "receiver.max_message_size": return "   # at most max_size"
        case "retry.initial": return "   # at most max"
        case "retry.max": return "   # at least initial"
        case "receiver.max_connections_per_client": return "   # half of max_connections"
        default: return ""
        }
    }
    let r = c.receiver
    var lines = [
        "[receiver]",
        "listen = " + r.listen.map { $0.description }.joined(separator: ", "),
        "hostname = " + (r.hostname ?? Sys.hostname()) + (r.hostname == nil ? "   # from gethostname" : ""),
        "allow_clients = " + r.allowClients.map { $0.description }.joined(separator: ", "),
        "allow_recipients = " + r.allowRecipients.patterns.map(pattern).joined(separator: ", "),
        "max_message_size = " + size(Int64(r.maxMessageSize)) + note("receiver.max_message_size"),
        "max_recipients = \(r.maxRecipients)",
        "max_connections = \(r.maxConnections)"
            + "   # \(ConnectionSlots(total: r.maxConnections).reservedForLoopback) kept for loopback clients",
        "max_connections_per_client = \(r.maxConnectionsPerClient)" + note("receiver.max_connections_per_client"),
        "connection_limit_exempt = " + r.connectionLimitExempt.map { $0.description }.joined(separator: ", "),
        "greet_pause = " + duration(r.greetPause),
        "greet_pause_exempt = " + r.greetPauseExempt.map { $0.description }.joined(separator: ", "),
        "timeout = " + duration(r.timeout),
    ]
    if let cert = r.tlsCert, let key = r.tlsKey {
        lines += ["tls_cert = " + cert, "tls_key = " + key, "tls_min_version = " + r.tlsMinVersion.text,
                  "require_tls = " + (r.requireTLS ? "yes" : "no")]
        lines.append(r.listenTLS.isEmpty ? "#listen_tls =   (not set: STARTTLS only)"
                                         : "listen_tls = " + r.listenTLS.map { $0.description }.joined(separator: ", "))
    } else {
        lines.append("#tls_cert =   (not set: no STARTTLS for clients)")
    }
    lines.append(r.authUsers.map { "auth_users = " + $0 } ?? "#auth_users =   (not set: no AUTH for clients)")
    lines += [
        "",
        "[spool]",
        "dir = " + c.spool.dir,
        "max_size = " + size(c.spool.maxBytes) + note("spool.max_size"),
        "segment_size = " + size(Int64(c.spool.segmentSize)) + note("spool.segment_size"),
        "max_age = " + duration(c.spool.maxAge),
        "sync = " + c.spool.sync.name,
    ]
    for u in c.upstreams {
        lines += ["", "[upstream]", "host = " + u.host, "port = \(u.port)",
                  "tls = " + u.tls.name + (c.derived.contains("upstream.tls") && u.tls == .implicit ? "   # port 465" : "")]
        if u.tls != .none {
            lines.append("verify = " + (u.verify ? "yes" : "no"))
            lines.append(u.caFile.map { "ca_file = " + $0 } ?? "#ca_file =   (not set: the system's CAs in \(TLSDefaults.systemCertificateDirectory))")
            if let f = u.fingerprint { lines.append("fingerprint = " + CertificateProblem.fingerprintText(f)) }
            if let cert = u.clientCert, let key = u.clientKey {
                lines += ["client_cert = " + cert, "client_key = " + key]
            }
        }
        lines.append("auth = " + u.auth.name)
        if let name = u.username { lines.append("username = " + name) }
        switch u.secret {
        case .file(let path)?: lines.append("password_file = " + path)
        // The arguments may hold a client secret: only the program is shown.
        case .command(let argv)?: lines.append("password_command = " + (argv.first ?? "") + (argv.count > 1 ? " …" : ""))
        case nil: break
        }
        if let f = u.envelopeFrom { lines.append("envelope_from = " + f.text) }
        lines.append("rewrite_from = " + (u.rewriteFrom ? "yes" : "no"))
        lines.append("rewrite_to = " + (u.rewriteTo ? "yes" : "no"))
    }
    lines += ["", "[retry]", "initial = " + duration(c.retry.initial) + note("retry.initial"),
              "max = " + duration(c.retry.max) + note("retry.max"),
              "", "[control]", "socket = " + c.control.socket,
              "", "[notify]",
              c.notify.postmaster.map { "postmaster = " + $0.text }
                ?? "#postmaster =   (not set: failures of local or empty senders are only logged)",
              "", "[local]", "socket = " + c.local.socket,
              "drop_dir = " + c.local.dropDirectory(spoolDir: c.spool.dir) + (c.local.dropDir == nil ? "   # in the spool" : ""),
              "", "[aliases]"]
    let aliases = c.aliases.resolved
    if aliases.isEmpty { lines.append("#   (none: mail to a local name such as root gets 550 5.1.1)") }
    // Resolved: each name with the addresses it finally reaches.
    for (name, addresses) in aliases { lines.append(name + " = " + addresses.map { $0.text }.joined(separator: ", ")) }
    return lines
}

/// The whole command line; `main.swift` calls this with the process arguments.
func posternMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var args: [String] = []
    for i in 1..<Int(max(argc, 1)) {
        if let p = argv[i] { args.append(String(cString: p)) }
    }
    // Called as sendmail, mailq or newaliases (the Debian package's links).
    let program = argc > 0 ? argv[0].map { programName(String(cString: $0)) } ?? "postern" : "postern"
    switch program {
    case "sendmail": return sendmailCommand(args, program: program)
    case "mailq": return sendmailCommand(["-bp"] + args, program: program)
    case "newaliases": return 0
    default: break
    }
    guard let command = args.first else {
        Sys.writeStderr(usage)
        return exUsage
    }
    let rest = Array(args.dropFirst())
    switch command {
    case "sendmail": return sendmailCommand(rest, program: "sendmail")
    case "mailq": return sendmailCommand(["-bp"] + rest, program: "mailq")
    case "newaliases": return 0
    case "pickup": return pickupCommand(rest)
    case "run": return runCommand(rest)
    case "check-config": return checkConfigCommand(rest)
    case "queue": return controlCommand("queue", rest, allowed: ["--config", "--json"])
    case "flush": return controlCommand("flush", rest, allowed: ["--config"])
    case "status": return controlCommand("status", rest, allowed: ["--config"])
    case "probe": return probeCommand(rest)
    case "passwd": return passwdCommand(rest)
    // Diagnostics, not in the usage: the C layouts and constants as this binary
    // was compiled with them (ABIReport.swift; Tests/blackbox/test_abi.py).
    case "abi":
        guard rest.isEmpty else {
            Sys.writeStderr("postern abi: takes no options\n")
            return exUsage
        }
        Sys.writeStdout(ABIReport.text())
        return 0
    case "version", "--version":
        Sys.writeStdout("postern \(posternVersion)\n")
        return 0
    case "help", "--help", "-h":
        Sys.writeStdout(usage)
        return 0
    default:
        Sys.writeStderr("postern: unknown command '\(command)'\n\(usage)")
        return exUsage
    }
}
