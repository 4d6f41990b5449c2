/// What `postern queue` shows of one queued message.
public struct QueueEntryInfo: Sendable {
    public enum RecipientState: Sendable { case pending, delivered, failed }

    public var id: String
    /// Wall-clock arrival, seconds since the epoch.
    public var arrival: Int64
    public var size: Int
    public var from: String
    public var recipients: [(address: String, state: RecipientState)]
    public var attempts: Int
    /// Seconds until the next try; nil when it is being sent now.
    public var nextTry: Int?
    public var lastReply: String?

    public init(id: String, arrival: Int64, size: Int, from: String, recipients: [(address: String, state: RecipientState)],
                attempts: Int, nextTry: Int?, lastReply: String?) {
        self.id = id
        self.arrival = arrival
        self.size = size
        self.from = from
        self.recipients = recipients
        self.attempts = attempts
        self.nextTry = nextTry
        self.lastReply = lastReply
    }
}

/// Renders the queue listing, as text for people (in the manner of Postfix's
/// mailq) or as JSON for programs. Pure and streamable: a header, one entry at
/// a time, a footer, so a long queue is listed in fixed memory.
public enum QueueReport {
    public static func textHeader() -> String {
        "QUEUE ID          AGE      SIZE  TRIES  NEXT TRY  SENDER / RECIPIENTS\n"
    }

    public static func text(_ e: QueueEntryInfo, now: Int64) -> String {
        var s = pad(e.id, 18) + pad(age(now - e.arrival), 9) + padLeft("\(e.size)", 5) + "  "
            + pad("\(e.attempts)", 7) + pad(e.nextTry.map { $0 <= 0 ? "now" : "in " + age(Int64($0)) } ?? "sending", 10)
            + "<" + e.from + ">\n"
        let indent = String(repeating: " ", count: 51)
        for r in e.recipients {
            s += indent + "<" + r.address + "> " + name(r.state) + "\n"
        }
        if let reply = e.lastReply { s += indent + "last reply: " + reply + "\n" }
        return s
    }

    public static func textFooter(count: Int, bytes: Int64) -> String {
        count == 0 ? "Mail queue is empty\n"
                   : "-- \(count) message\(count == 1 ? "" : "s"), \(bytes) bytes of text\n"
    }

    public static func jsonHeader() -> String { "{\"messages\":[" }

    public static func json(_ e: QueueEntryInfo, now: Int64, first: Bool) -> String {
        var s = first ? "\n" : ",\n"
        s += "{\"id\":" + quote(e.id) + ",\"arrival\":\(e.arrival),\"age_seconds\":\(max(0, now - e.arrival))"
        s += ",\"size\":\(e.size),\"from\":" + quote(e.from) + ",\"recipients\":["
        for (i, r) in e.recipients.enumerated() {
            s += (i == 0 ? "" : ",") + "{\"address\":" + quote(r.address) + ",\"state\":" + quote(name(r.state)) + "}"
        }
        s += "],\"attempts\":\(e.attempts),\"next_try_seconds\":" + (e.nextTry.map { "\(max(0, $0))" } ?? "null")
        s += ",\"sending\":" + (e.nextTry == nil ? "true" : "false")
        s += ",\"last_reply\":" + (e.lastReply.map(quote) ?? "null") + "}"
        return s
    }

    public static func jsonFooter(count: Int, bytes: Int64) -> String {
        "\n],\"count\":\(count),\"text_bytes\":\(bytes)}\n"
    }

    static func name(_ s: QueueEntryInfo.RecipientState) -> String {
        switch s {
        case .pending: return "pending"
        case .delivered: return "delivered"
        case .failed: return "failed"
        }
    }

    /// "45s", "12m", "3h05m", "4d02h".
    public static func age(_ seconds: Int64) -> String {
        let s = max(0, seconds)
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m" }
        if s < 86400 { return "\(s / 3600)h" + two(s % 3600 / 60) + "m" }
        return "\(s / 86400)d" + two(s % 86400 / 3600) + "h"
    }

    static func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }

    static func pad(_ s: String, _ width: Int) -> String {
        let n = s.utf8.count
        return n >= width ? s + " " : s + String(repeating: " ", count: width - n)
    }

    static func padLeft(_ s: String, _ width: Int) -> String {
        let n = s.utf8.count
        return n >= width ? s : String(repeating: " ", count: width - n) + s
    }

    /// A JSON string (RFC 8259 §7): quotes, backslashes and control characters
    /// escaped; bytes that are not valid UTF-8 were already replaced when the
    /// String was made.
    public static func quote(_ s: String) -> String {
        var out: [UInt8] = [ASCII.quote]
        for b in s.utf8 {
            switch b {
            case ASCII.quote: out += [ASCII.backslash, ASCII.quote]
            case ASCII.backslash: out += [ASCII.backslash, ASCII.backslash]
            case ASCII.lf: out += [ASCII.backslash, 110]
            case ASCII.cr: out += [ASCII.backslash, 114]
            case ASCII.tab: out += [ASCII.backslash, 116]
            case 0..<32, 127:
                out += Array("\\u00".utf8) + Array(ASCII.hex(UInt64(b), width: 2).utf8)
            default: out.append(b)
            }
        }
        out.append(ASCII.quote)
        return String(decoding: out, as: UTF8.self)
    }
}
