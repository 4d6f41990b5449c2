import CLibc
import PosternCore
import PosternRuntime

// The command line (DESIGN.md "Command line"). Exit codes follow sysexits.h.
let exUsage: Int32 = 64
let exConfig: Int32 = 78
let exSoftware: Int32 = 70
let exOSErr: Int32 = 71

let version = "0.1.0"
let defaultConfig = "/etc/postern/postern.conf"

let usage = """
    usage: postern <command> [options]

    commands:
      run [--config FILE] [--log stderr] [--debug]   run in the foreground
      check-config [--config FILE]                   validate; print the effective settings and memory budget
      version                                        print the version

    """

struct Options {
    var configPath = defaultConfig
    var debug = false
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
            guard i + 1 < args.count else { return .failure(UsageError(message: "--log needs a value")) }
            // journald comes in a later release; stderr is the only sink for now.
            guard args[i + 1] == "stderr" else {
                return .failure(UsageError(message: "--log: '\(args[i + 1])' is not supported (only 'stderr')"))
            }
            i += 2
        case "--debug":
            o.debug = true
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

func loadConfig(_ path: String) -> Result<Config, ConfigError> {
    let bytes: [UInt8]
    switch Sys.readFile(path) {
    case .success(let b): bytes = b
    case .failure(let e):
        return .failure(ConfigError(file: path, line: 0, message: "cannot read: \(e.text)"))
    }
    var base = "."
    if let slash = path.utf8.lastIndex(of: 47) {
        base = String(decoding: path.utf8[..<slash], as: UTF8.self)
        if base.isEmpty { base = "/" }
    }
    return ConfigParser(file: path, baseDirectory: base).parse(bytes)
}

func runCommand(_ args: [String]) -> Int32 {
    let options: Options
    switch parseOptions(args, allowed: ["--config", "--log", "--debug"]) {
    case .success(let o): options = o
    case .failure(let e):
        Sys.writeStderr("postern run: \(e.message)\n\(usage)")
        return exUsage
    }
    let config: Config
    switch loadConfig(options.configPath) {
    case .success(let c): config = c
    case .failure(let e):
        Sys.writeStderr("postern: \(e)\n")
        return exConfig
    }
    let log = Log(showDebug: options.debug)
    let daemon = Daemon(config: config, log: log)
    if let problem = daemon.start() {
        log.error(problem)
        return exOSErr
    }
    return daemon.run()
}

func checkConfigCommand(_ args: [String]) -> Int32 {
    let options: Options
    switch parseOptions(args, allowed: ["--config"]) {
    case .success(let o): options = o
    case .failure(let e):
        Sys.writeStderr("postern check-config: \(e.message)\n")
        return exUsage
    }
    switch loadConfig(options.configPath) {
    case .failure(let e):
        Sys.writeStderr("postern: \(e)\n")
        return exConfig
    case .success(let c):
        var out = "# \(options.configPath): OK\n"
        for line in effectiveSettings(c) { out += line + "\n" }
        out += "\n"
        for line in MemoryBudget(c).lines(c) { out += "# " + line + "\n" }
        Sys.writeStdout(out)
        return 0
    }
}

/// The configuration with every default filled in, in the file's own format.
func effectiveSettings(_ c: Config) -> [String] {
    func size(_ v: Int) -> String {
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
    let r = c.receiver
    var lines = [
        "[receiver]",
        "listen = " + r.listen.map { $0.description }.joined(separator: ", "),
        "hostname = " + (r.hostname ?? Sys.hostname()) + (r.hostname == nil ? "   # from gethostname" : ""),
        "allow_clients = " + r.allowClients.map { $0.description }.joined(separator: ", "),
        "allow_recipients = " + r.allowRecipients.patterns.map(pattern).joined(separator: ", "),
        "max_message_size = " + size(r.maxMessageSize),
        "max_recipients = \(r.maxRecipients)",
        "max_connections = \(r.maxConnections)",
        "timeout = " + duration(r.timeout),
        "",
        "[spool]",
        "dir = " + c.spool.dir,
        "max_size = " + size(c.spool.maxSize),
        "segment_size = " + size(c.spool.segmentSize),
    ]
    for u in c.upstreams {
        lines += ["", "[upstream]", "host = " + u.host, "port = \(u.port)", "tls = none"]
        if let f = u.envelopeFrom { lines.append("envelope_from = " + f.text) }
    }
    lines += ["", "[retry]", "initial = " + duration(c.retry.initial), "max = " + duration(c.retry.max),
              "", "[control]", "socket = " + c.control.socket]
    return lines
}

/// The whole command line; `main.swift` calls this with the process arguments.
func posternMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var args: [String] = []
    for i in 1..<Int(max(argc, 1)) {
        if let p = argv[i] { args.append(String(cString: p)) }
    }
    guard let command = args.first else {
        Sys.writeStderr(usage)
        return exUsage
    }
    let rest = Array(args.dropFirst())
    switch command {
    case "run": return runCommand(rest)
    case "check-config": return checkConfigCommand(rest)
    case "version", "--version":
        Sys.writeStdout("postern \(version)\n")
        return 0
    case "help", "--help", "-h":
        Sys.writeStdout(usage)
        return 0
    default:
        Sys.writeStderr("postern: unknown command '\(command)'\n\(usage)")
        return exUsage
    }
}
