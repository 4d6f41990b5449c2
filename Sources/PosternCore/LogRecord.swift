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
        var bytes: [UInt8] = []
        var spans: [(start: Int, count: Int)] = []
        appendJournalFields(identifier: identifier, to: &bytes, spans: &spans)
        return spans.map { String(decoding: bytes[$0.start ..< $0.start + $0.count], as: UTF8.self) }
    }

    /// `journalFields`, appended to one buffer: each field is `spans`' slice of
    /// `bytes`, ready to become an iovec. Log lines are written twice per
    /// message, and building them as Strings cost a sixth of the daemon's
    /// instructions relaying 2 KB messages (callgrind, issue 11); bytes appended
    /// to a buffer the `Log` keeps cost no allocation at all.
    public func appendJournalFields(identifier: String, to bytes: inout [UInt8],
                                    spans: inout [(start: Int, count: Int)]) {
        var start = bytes.count
        func close() {
            spans.append((start, bytes.count - start))
            start = bytes.count
        }
        bytes.appendUTF8("MESSAGE=")
        bytes.appendUTF8(message)
        if !fields.isEmpty {
            bytes.appendUTF8(" (")
            for (i, (k, v)) in fields.enumerated() {
                if i > 0 { bytes.append(ASCII.space) }
                bytes.appendUTF8(k)
                bytes.append(ASCII.equals)
                Self.appendQuoted(v, to: &bytes)
            }
            bytes.append(41)  // ")"
        }
        close()
        bytes.appendUTF8("PRIORITY=")
        bytes.append(48 + UInt8(truncatingIfNeeded: priority.rawValue))
        close()
        bytes.appendUTF8("SYSLOG_IDENTIFIER=")
        bytes.appendUTF8(identifier)
        close()
        if let id = messageID {
            bytes.appendUTF8("MESSAGE_ID=")
            bytes.appendUTF8(id)
            close()
        }
        if let e = event {
            bytes.appendUTF8("POSTERN_EVENT=")
            bytes.appendUTF8(e.name)
            close()
        }
        for (k, v) in fields {
            bytes.appendUTF8("POSTERN_")
            Self.appendFieldName(k, to: &bytes)
            bytes.append(ASCII.equals)
            bytes.appendUTF8(v)
            close()
        }
    }

    /// A journal field name: upper-case letters, digits and underscores
    /// (systemd.journal-fields(7)).
    static func fieldName(_ key: String) -> String {
        var out: [UInt8] = []
        appendFieldName(key, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    static func appendFieldName(_ key: String, to out: inout [UInt8]) {
        for b in key.utf8 {
            if b >= 97 && b <= 122 { out.append(b - 32) }
            else if (b >= 65 && b <= 90) || (b >= 48 && b <= 57) { out.append(b) }
            else { out.append(95) }
        }
    }

    /// `event=received queue_id=… from=<…> msg="…"`: one line, key=value, values
    /// quoted when they hold spaces, quotes or '='. Control characters are
    /// replaced so a peer's text cannot forge a log line.
    public func keyValueLine() -> String {
        var out: [UInt8] = []
        appendKeyValueLine(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `keyValueLine`, appended to `out` (without a line end).
    public func appendKeyValueLine(to out: inout [UInt8]) {
        out.appendUTF8("level=")
        out.appendUTF8(priority.name)
        if let e = event {
            out.appendUTF8(" event=")
            out.appendUTF8(e.name)
        }
        for (k, v) in fields {
            out.append(ASCII.space)
            out.appendUTF8(k)
            out.append(ASCII.equals)
            Self.appendQuoted(v, to: &out)
        }
        out.appendUTF8(" msg=")
        Self.appendQuoted(message, to: &out)
    }

    static func quoted(_ v: String) -> String {
        var out: [UInt8] = []
        appendQuoted(v, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `v`, quoted when it is empty or holds a space, a quote, '=' or a
    /// backslash (the last two escaped by a backslash); control characters
    /// become '?'.
    static func appendQuoted(_ v: String, to out: inout [UInt8]) {
        var v = v
        v.withUTF8 { text in
            var needs = text.isEmpty
            var plain = true
            for b in text {
                switch b {
                case ASCII.space, ASCII.equals: needs = true
                case ASCII.quote, ASCII.backslash: needs = true; plain = false
                default: if b < 32 || b == 127 { plain = false }
                }
            }
            if needs { out.append(ASCII.quote) }
            if plain {
                out.append(contentsOf: text)  // the usual case, in one append
            } else {
                for b in text {
                    if b == ASCII.quote || b == ASCII.backslash { out.append(ASCII.backslash) }
                    out.append(b < 32 || b == 127 ? 63 : b)
                }
            }
            if needs { out.append(ASCII.quote) }
        }
    }
}
