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
    /// The journal's MESSAGE_ID (`MessageIDs`); an event's own by default.
    public var messageID: String?

    public init(_ priority: Priority, _ message: String, event: EventKind? = nil, _ fields: [(String, String)] = [],
                messageID: String? = nil) {
        self.priority = priority
        self.event = event
        self.message = message
        self.fields = fields
        self.messageID = messageID ?? event?.messageID
    }

    /// The entry as journal fields for sd_journal_sendv(3): MESSAGE (the text and
    /// the fields, for plain `journalctl`), PRIORITY, SYSLOG_IDENTIFIER,
    /// MESSAGE_ID, POSTERN_EVENT and one POSTERN_<NAME> per field, so that
    /// `journalctl POSTERN_EVENT=deferred POSTERN_QUEUE_ID=…` answers questions.
    public func journalFields(identifier: String) -> [String] {
        var text = message
        if !fields.isEmpty {
            text += " (" + fields.map { $0.0 + "=" + Self.quoted($0.1) }.joined(separator: " ") + ")"
        }
        var out = ["MESSAGE=" + text, "PRIORITY=\(priority.rawValue)", "SYSLOG_IDENTIFIER=" + identifier]
        if let id = messageID { out.append("MESSAGE_ID=" + id) }
        if let e = event { out.append("POSTERN_EVENT=" + e.name) }
        for (k, v) in fields { out.append("POSTERN_" + Self.fieldName(k) + "=" + v) }
        return out
    }

    /// A journal field name: upper-case letters, digits and underscores
    /// (systemd.journal-fields(7)).
    static func fieldName(_ key: String) -> String {
        String(decoding: key.utf8.map { b -> UInt8 in
            if b >= 97 && b <= 122 { return b - 32 }
            if (b >= 65 && b <= 90) || (b >= 48 && b <= 57) { return b }
            return 95
        }, as: UTF8.self)
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
