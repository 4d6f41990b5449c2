/// The `Received:` trace header a relay must prepend (RFC 5321 §4.4), and the
/// RFC 5322 §3.3 date it ends with. Pure: the loop supplies the clock readings.
public enum TraceHeader {
    public struct Info: Sendable {
        public var heloName: String
        public var clientAddress: IPAddress
        public var hostname: String
        /// "ESMTP" after EHLO, "SMTP" after HELO (RFC 3848 §1 / RFC 5321 §4.4).
        public var protocolName: String
        public var queueID: String
        /// Named in the header only when the message has exactly one recipient, so a
        /// header never discloses the other recipients of a message.
        public var recipient: Mailbox?
        public var date: String
        /// Set for a submission from the board itself (`postern sendmail`): the
        /// header then names the local user instead of a client host.
        public var local: LocalSender? = nil
        /// The user the client authenticated as (RFC 4954): named in a comment,
        /// as Postfix writes "(Authenticated sender: user)".
        public var authUser: String? = nil

        public init(heloName: String, clientAddress: IPAddress, hostname: String, protocolName: String,
                    queueID: String, recipient: Mailbox?, date: String, local: LocalSender? = nil,
                    authUser: String? = nil) {
            self.heloName = heloName
            self.authUser = authUser
            self.local = local
            self.clientAddress = clientAddress
            self.hostname = hostname
            self.protocolName = protocolName
            self.queueID = queueID
            self.recipient = recipient
            self.date = date
        }
    }

    /// The header, folded onto continuation lines (RFC 5322 §2.2.3), ending in CRLF.
    public static func received(_ i: Info) -> [UInt8] {
        // Appended as bytes: one header per message, and String interpolation
        // made it the receiver's costliest step after the log lines.
        var out: [UInt8] = []
        out.reserveCapacity(256)
        func add(_ s: String) { out.appendUTF8(s) }
        if let l = i.local {
            // A local submission has no client host: as Postfix writes
            // "Received: by host (Postfix, from userid 1000)" for its sendmail,
            // the From clause is left out and the user goes in the comment.
            add("Received: by "); add(i.hostname); add(" (Postern, from "); add(l.description); add(")\r\n")
            add("\twith "); add(i.protocolName); add(" id "); add(i.queueID)
        } else {
            add("Received: from "); add(i.heloName); add(" ("); add(i.clientAddress.literal); add(")\r\n")
            if let u = i.authUser { add("\t(Authenticated sender: "); add(commentText(u)); add(")\r\n") }
            add("\tby "); add(i.hostname); add(" (Postern) with "); add(i.protocolName); add(" id "); add(i.queueID)
        }
        if let r = i.recipient {
            add("\r\n\tfor <")
            out.append(contentsOf: r.bytes)
            out.append(62)  // ">"
        }
        add("; "); add(i.date); add("\r\n")
        return out
    }

    /// Text for inside a comment (RFC 5322 §3.2.2): '(', ')' and '\\' as
    /// quoted pairs, so a user name cannot end the comment early; control
    /// characters (which `auth_users` never holds) as '?'.
    static func commentText(_ text: String) -> String {
        var out: [UInt8] = []
        for b in text.utf8 {
            if b == 40 || b == 41 || b == 92 { out.append(92) }
            out.append(b < 32 || b == 127 ? 63 : b)
        }
        return String(decoding: out, as: UTF8.self)
    }

    static let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// "Mon, 30 Nov 2026 05:30:29 +0000" for `seconds` since the epoch in a zone
    /// `utcOffset` seconds east of UTC.
    public static func date(seconds: Int64, utcOffset: Int) -> String {
        let local = seconds + Int64(utcOffset)
        var dayCount = local / 86400
        var rem = local % 86400
        if rem < 0 { rem += 86400; dayCount -= 1 }
        let weekday = Int(((dayCount % 7) + 7) % 7)
        let (y, m, d) = civil(fromDays: dayCount)
        let hh = Int(rem / 3600), mm = Int(rem % 3600 / 60), ss = Int(rem % 60)
        let sign = utcOffset < 0 ? "-" : "+"
        let off = abs(utcOffset) / 60
        return "\(weekdays[weekday]), \(d) \(months[m - 1]) \(y) \(two(hh)):\(two(mm)):\(two(ss)) \(sign)\(two(off / 60))\(two(off % 60))"
    }


    /// "05:30:29": the time of day, for status lines.
    public static func timeOfDay(seconds: Int64, utcOffset: Int) -> String {
        var rem = (seconds + Int64(utcOffset)) % 86400
        if rem < 0 { rem += 86400 }
        return "\(two(Int(rem / 3600))):\(two(Int(rem % 3600 / 60))):\(two(Int(rem % 60)))"
    }

    static func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
    /// days-to-civil algorithm).
    static func civil(fromDays z0: Int64) -> (Int64, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = Int(doy - (153 * mp + 2) / 5 + 1)
        let m = Int(mp < 10 ? mp + 3 : mp - 9)
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
