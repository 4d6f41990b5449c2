/// syslog priorities (RFC 5424 §6.2.1), as journald's PRIORITY field uses them.
public enum Priority: Int, Sendable {
    case error = 3
    case warning = 4
    case notice = 5
    case info = 6
    case debug = 7

    public var name: String {
        switch self {
        case .error: return "error"
        case .warning: return "warning"
        case .notice: return "notice"
        case .info: return "info"
        case .debug: return "debug"
        }
    }
}

/// The mail events of DESIGN.md's Observability section; each becomes
/// `POSTERN_EVENT=<name>` in the journal and `event=<name>` on stderr.
public enum EventKind: Sendable {
    case received, delivered, deferred, failed, expired, rejected

    public var name: String {
        switch self {
        case .received: return "received"
        case .delivered: return "delivered"
        case .deferred: return "deferred"
        case .failed: return "failed"
        case .expired: return "expired"
        case .rejected: return "rejected"
        }
    }
}

/// One log entry: a priority, an optional mail event, a human message and
/// structured fields. Field names are the lower-case suffixes of the journal's
/// `POSTERN_*` fields (`queue_id` → `POSTERN_QUEUE_ID`).
public struct LogRecord: Sendable {
    public var priority: Priority
    public var event: EventKind?
    public var message: String
    public var fields: [(String, String)]

    public init(_ priority: Priority, _ message: String, event: EventKind? = nil, _ fields: [(String, String)] = []) {
        self.priority = priority
        self.event = event
        self.message = message
        self.fields = fields
    }

    /// `event=received queue_id=… from=<…> msg="…"`: one line, key=value, values
    /// quoted when they hold spaces, quotes or '='. Control characters are
    /// replaced so a peer's text cannot forge a log line.
    public func keyValueLine() -> String {
        var s = "level=" + priority.name
        if let e = event { s += " event=" + e.name }
        for (k, v) in fields { s += " " + k + "=" + Self.quoted(v) }
        s += " msg=" + Self.quoted(message)
        return s
    }

    static func quoted(_ v: String) -> String {
        var needs = v.isEmpty
        var out: [UInt8] = []
        for b in v.utf8 {
            switch b {
            case ASCII.space, ASCII.quote, ASCII.equals, ASCII.backslash: needs = true
            default: break
            }
            if b == ASCII.quote || b == ASCII.backslash { out.append(ASCII.backslash) }
            out.append(b < 32 || b == 127 ? 63 : b)
        }
        let text = String(decoding: out, as: UTF8.self)
        return needs ? "\"" + text + "\"" : text
    }
}
