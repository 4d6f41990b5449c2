/// The failure notice Postern sends when it gives a message up: a delivery
/// status notification (RFC 3464) in a `multipart/report;
/// report-type=delivery-status` (RFC 6522), composed as the bytes of a whole
/// message, ready to be queued with the null reverse-path (RFC 5321 §6.1).
///
/// Pure: the caller supplies the clock readings, the boundary and the
/// Message-ID (they need randomness), and the original header section
/// (`headerSectionLength` finds where to cut it). `NoticePolicy` says where
/// the notice goes.
///
/// The message (CRLF line ends, no line over 998 octets, RFC 5322 §2.1.1;
/// 7-bit except the returned header section when it is 8-bit, which is then
/// declared `8bit`, RFC 2045 §6.2, §6.4):
///
///     From: "Mail Delivery System" <MAILER-DAEMON@host>
///     To: <notice recipient>
///     Subject: Undelivered Mail Returned to Sender
///     Date, Message-ID, Auto-Submitted: auto-replied (RFC 3834 §5),
///     MIME-Version: 1.0, Content-Type: multipart/report; ...
///
///     1. text/plain: what happened to which recipients and why, in words;
///     2. message/delivery-status: the per-message fields (RFC 3464 §2.2)
///        and one group of per-recipient fields per recipient (§2.3);
///     3. text/rfc822-headers (RFC 6522 §4): the original header section.
///
/// Every part's content ends with a CRLF before the next delimiter (whose
/// own CRLF belongs to the delimiter, RFC 2046 §5.1.1).
public struct DeliveryReport: Sendable {
    /// One recipient the message failed for.
    public struct Recipient: Equatable, Sendable {
        public var address: Mailbox
        /// Enhanced status code (RFC 3463), e.g. "5.1.1", or "4.4.7" for a
        /// message that expired. Written as the Status field (RFC 3464
        /// §2.3.4) when it has that syntax and class 4 or 5 (a failure);
        /// otherwise "5.0.0" (refused) or "4.4.7" (expired) is written.
        public var status: String
        /// The upstream's last reply, on one line ("550 5.1.1 No such user");
        /// nil when none was received (connection failures).
        public var reply: String?
        /// The upstream's host name (`[upstream] host`, without the port);
        /// nil when no upstream was reached.
        public var upstream: String?
        /// Wall-clock seconds of the last delivery attempt for this recipient;
        /// nil when unknown, and then the Last-Attempt-Date field is left out
        /// (RFC 3464 §2.3.7: it "MUST NOT be included if the actual date and
        /// time of the last delivery attempt are not available").
        public var lastAttempt: Int64?
        /// The Original-Recipient field's value (RFC 3464 §2.3.1), from the
        /// recipient's ORCPT (`DSNParameters.originalRecipientField`); RFC 3461
        /// §6.3 (d): present exactly when ORCPT was given.
        public var originalRecipient: String? = nil

        public init(address: Mailbox, status: String, reply: String?, upstream: String?, lastAttempt: Int64?) {
            self.address = address
            self.status = status
            self.reply = reply
            self.upstream = upstream
            self.lastAttempt = lastAttempt
        }
    }

    public enum Reason: Equatable, Sendable {
        /// The upstream refused the recipients with a permanent (5xx) reply.
        case refused
        /// The message was past `[spool] max_age`; it had been queued this
        /// many seconds (counted on the monotonic clock, `ExpiryPolicy`).
        case expired(queuedSeconds: Int64)
    }

    /// This board's host name: Reporting-MTA and MAILER-DAEMON's domain.
    public var reportingHost: String
    /// Where the notice goes (`NoticePolicy.destination`).
    public var noticeRecipient: Mailbox
    /// The failed message's envelope sender.
    public var originalSender: Mailbox
    public var queueID: String
    /// Wall-clock seconds when the message arrived; nil when the clock was not
    /// synchronised then (the Arrival-Date field is left out, RFC 3464 §2.2.5).
    public var arrival: Int64?
    /// Wall-clock seconds now: the Date field.
    public var reportTime: Int64
    /// Seconds east of UTC, for the dates (RFC 5322 §3.3 zone).
    public var utcOffset: Int
    /// One or more recipients (RFC 3464 §2.1: a DSN has at least one group of
    /// per-recipient fields).
    public var recipients: [Recipient]
    public var reason: Reason
    /// The MIME boundary, from randomness (RFC 2046 §5.1.1: 1–70 of its
    /// bchars, not ending in a space); an invalid one is replaced by a fixed
    /// one. Either way, no line of the returned header section may begin with
    /// it: such a line gets a leading space.
    public var boundary: String
    /// "<unique@host>" (RFC 5322 §3.6.4), with or without the brackets.
    public var messageID: String
    /// The original header section. Anything after its first empty line, and
    /// anything past `maxHeaderSection`, is left out (cut at a field boundary
    /// by `headerSectionLength`); bare CR and LF become CRLF, NUL becomes "?"
    /// (RFC 2045 §2.7–2.8), lines over 998 octets are broken.
    public var originalHeader: [UInt8]
    /// The Original-Envelope-Id field's value (RFC 3464 §2.2.1): the message's
    /// ENVID, decoded (RFC 3461 §6.3 (a): present exactly when ENVID was given).
    public var originalEnvelopeID: String? = nil

    /// At most this much of the original header section is returned: a 32 KiB
    /// read covers the header of every alert; a bigger header is cut.
    public static let maxHeaderSection = 32 * 1024

    public init(reportingHost: String, noticeRecipient: Mailbox, originalSender: Mailbox, queueID: String,
                arrival: Int64?, reportTime: Int64, utcOffset: Int, recipients: [Recipient], reason: Reason,
                boundary: String, messageID: String, originalHeader: [UInt8]) {
        self.reportingHost = reportingHost
        self.noticeRecipient = noticeRecipient
        self.originalSender = originalSender
        self.queueID = queueID
        self.arrival = arrival
        self.reportTime = reportTime
        self.utcOffset = utcOffset
        self.recipients = recipients
        self.reason = reason
        self.boundary = boundary
        self.messageID = messageID
        self.originalHeader = originalHeader
    }

    // MARK: the header section to return

    /// How many octets at the front of `prefix` to return as the original
    /// header section: up to (not including) the empty line that ends it
    /// (RFC 5322 §2.1), or, when that line is not within the first
    /// `maxHeaderSection` octets, up to the last field boundary before that
    /// bound (a CRLF followed by an octet that is not SP or HT, so no field
    /// is cut between its continuation lines, §2.2.3); 0 when the first field
    /// alone is longer.
    ///
    /// `prefix` is the start of the spooled message text: read
    /// `maxHeaderSection + 2` octets (the two beyond let the bound itself be
    /// a boundary or the empty line), or all of a shorter message, and say
    /// so with `isWholeMessage` (a message with no empty line is all header).
    public static func headerSectionLength(_ prefix: UnsafeRawBufferPointer, isWholeMessage: Bool) -> Int {
        let count = prefix.count
        let window = min(count, maxHeaderSection)
        var start = 0
        var lastBoundary = 0
        while start <= window {
            if start + 1 < count && prefix[start] == ASCII.cr && prefix[start + 1] == ASCII.lf { return start }
            if start > 0 {
                // Whether a field ends here depends on the next octet.
                guard start < count else { break }
                if !ASCII.isSpace(prefix[start]) { lastBoundary = start }
            }
            var j = start
            var end = -1
            while j + 1 < window {
                if prefix[j] == ASCII.cr && prefix[j + 1] == ASCII.lf {
                    end = j
                    break
                }
                j += 1
            }
            guard end >= 0 else { break }
            start = end + 2
        }
        if isWholeMessage && count <= maxHeaderSection { return count }
        return lastBoundary
    }

    /// `headerSectionLength` for an array.
    public static func headerSectionLength(_ prefix: [UInt8], isWholeMessage: Bool) -> Int {
        prefix.withUnsafeBytes { headerSectionLength($0, isWholeMessage: isWholeMessage) }
    }

    // MARK: composing

    /// The notice, as the bytes of a whole message.
    public func compose() -> [UInt8] {
        let host = Self.hostName(reportingHost)
        let boundary = Self.validBoundary(boundary) ? Array(self.boundary.utf8) : Self.fallbackBoundary
        let returned = Self.returnedHeader(originalHeader, boundary: boundary)
        let eightBit = returned.contains { $0 >= 128 }

        var out: [UInt8] = []
        out.reserveCapacity(returned.count + 2048 + 512 * recipients.count)
        line(&out, "From: \"Mail Delivery System\" <MAILER-DAEMON@" + host + ">")
        line(&out, "To: <" + noticeRecipient.text + ">")
        line(&out, "Subject: Undelivered Mail Returned to Sender")
        line(&out, "Date: " + date(reportTime))
        line(&out, "Message-ID: <" + Self.messageIDText(messageID, queueID: queueID, host: host) + ">")
        // RFC 3834 §5: an automatic response; no vacation reply to it.
        line(&out, "Auto-Submitted: auto-replied")
        line(&out, "MIME-Version: 1.0")
        line(&out, "Content-Type: multipart/report; report-type=delivery-status;")
        line(&out, "\tboundary=\"" + ASCII.string(boundary) + "\"")
        if eightBit { line(&out, "Content-Transfer-Encoding: 8bit") }
        line(&out, "")
        // A preamble for readers that do not know MIME (RFC 2046 §5.1.1).
        line(&out, "This is a MIME-encapsulated message.")

        delimiter(&out, boundary)
        line(&out, "Content-Description: Notification")
        line(&out, "Content-Type: text/plain; charset=us-ascii")
        line(&out, "")
        var text: [UInt8] = []
        explanation(&text, host: host)
        out += Self.guarded(text, boundary: boundary)

        delimiter(&out, boundary)
        line(&out, "Content-Description: Delivery report")
        line(&out, "Content-Type: message/delivery-status")
        line(&out, "")
        statusFields(&out, host: host)

        delimiter(&out, boundary)
        line(&out, "Content-Description: Undelivered Message Headers")
        line(&out, "Content-Type: text/rfc822-headers")
        if eightBit { line(&out, "Content-Transfer-Encoding: 8bit") }
        line(&out, "")
        out += returned

        // The close-delimiter (RFC 2046 §5.1.1); the empty line before it
        // keeps the last CRLF of the content inside the content.
        line(&out, "")
        line(&out, "--" + ASCII.string(boundary) + "--")
        return out
    }

    /// Part 1: the same facts as part 2, in plain words.
    private func explanation(_ out: inout [UInt8], host: String) {
        line(&out, "This is the mail delivery system at " + host + ".")
        line(&out, "")
        switch reason {
        case .refused:
            words(&out, "Your message could not be delivered to one or more of its recipients."
                  + " The mail server it was passed to refused it permanently, so it will not be"
                  + " tried again.")
        case .expired(let seconds):
            words(&out, "Your message could not be delivered to one or more of its recipients."
                  + " It waited in the queue at " + host + " for " + Self.duration(seconds)
                  + " without being delivered, which is as long as messages are kept, and it has"
                  + " been given up.")
        }
        line(&out, "")
        for r in recipients {
            var text = ""
            if let up = r.upstream.map(Self.token), !up.isEmpty {
                if case .refused = reason { text = "refused by " + up } else { text = "last attempt at " + up }
            } else {
                text = "not delivered"
            }
            if let reply = r.reply.map(Self.replyText), !reply.isEmpty {
                text += ", which said: " + reply
            } else {
                text += " (status " + status(r) + ")"
            }
            HeaderFolding.append(Array(("<" + r.address.text + ">: ").utf8), Array(text.utf8), to: &out)
        }
        line(&out, "")
        words(&out, "The technical report and the header of your message follow. The message was"
              + " queued as " + Self.token(queueID) + ", from <" + originalSender.text + ">.")
    }

    /// Part 2: RFC 3464 §2.2 then §2.3, one group per recipient, each group
    /// preceded by an empty line (§2.1: delivery-status-content =
    /// per-message-fields 1*( CRLF per-recipient-fields )).
    private func statusFields(_ out: inout [UInt8], host: String) {
        // §2.2.2: Reporting-MTA: mta-name-type ";" mta-name.
        // §2.2.1: first of the per-message fields when the client gave ENVID.
        if let envid = originalEnvelopeID, !envid.isEmpty { field(&out, "Original-Envelope-Id: ", envid) }
        line(&out, "Reporting-MTA: dns; " + host)
        // §2.4: "X-" extension fields, named after the MTA (like Postfix's
        // X-Postfix-Queue-ID), so a notice leads to the journal entries.
        line(&out, "X-Postern-Queue-ID: " + Self.token(queueID))
        field(&out, "X-Postern-Sender: ", "rfc822; " + originalSender.text)
        // §2.2.5: Arrival-Date: date-time.
        if let a = arrival { line(&out, "Arrival-Date: " + date(a)) }
        for r in recipients {
            line(&out, "")
            // §2.3.1: the ORCPT the client gave for this recipient.
            if let o = r.originalRecipient, !o.isEmpty { field(&out, "Original-Recipient: ", o) }
            // §2.3.2: the address exactly as in the envelope, address-type rfc822;
            // a UTF-8 address as RFC 6533 §3's utf-8-addr-xtext, so this part
            // stays ASCII (a message/delivery-status, not message/global-…).
            field(&out, "Final-Recipient: ", r.address.isASCII ? "rfc822; " + r.address.text
                  : "utf-8; " + ASCII.string(DSNParameters.utf8AddressXtext(r.address.bytes, escapeASCII: true)))
            // §2.3.3: Postern has abandoned this recipient.
            line(&out, "Action: failed")
            line(&out, "Status: " + status(r))
            // §2.3.5: only when a remote MTA was involved.
            if let up = r.upstream.map(Self.token), !up.isEmpty { line(&out, "Remote-MTA: dns; " + up) }
            // §2.3.6: diagnostic-type ";" *text, the reply as the upstream gave it.
            if let reply = r.reply.map(Self.replyText), !reply.isEmpty {
                field(&out, "Diagnostic-Code: ", "smtp; " + reply)
            }
            // §2.3.7: only when the time of the last attempt is known.
            if let t = r.lastAttempt { line(&out, "Last-Attempt-Date: " + date(t)) }
        }
    }

    // MARK: field values

    /// The Status field's value (RFC 3464 §2.3.4): status-code = DIGIT "."
    /// 1*3DIGIT "." 1*3DIGIT, no leading zeros; a failure's class is 4 or 5.
    func status(_ r: Recipient) -> String {
        if Self.isFailureStatus(r.status) { return r.status }
        if case .expired = reason { return "4.4.7" }
        return "5.0.0"
    }

    static func isFailureStatus(_ s: String) -> Bool {
        let parts = Array(s.utf8).split(separator: ASCII.dot, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 1, parts[0].first == 52 || parts[0].first == 53 else { return false }
        for p in parts.dropFirst() {
            guard (1...3).contains(p.count), p.allSatisfy(ASCII.isDigit) else { return false }
            if p.count > 1 && p.first == 48 { return false }
        }
        return true
    }

    /// RFC 5322 §3.3 date-time; numeric zone, as RFC 3464 §2.2.5 and §2.3.7
    /// require. The offset is clamped to ±23:59 and the reading to local
    /// times from 1969 to the end of 9999, so that a damaged spool record
    /// cannot trap the formatter or make a 5-digit year.
    func date(_ seconds: Int64) -> String {
        let offset = min(max(utcOffset, -86_340), 86_340)
        let t = min(max(seconds, 0), 253_402_300_799 - Int64(max(offset, 0)))
        return TraceHeader.date(seconds: t, utcOffset: offset)
    }

    /// "5 days", "1 day and 6 hours", "3 hours and 20 minutes", "45 seconds".
    static func duration(_ seconds: Int64) -> String {
        let s = max(0, seconds)
        let units: [(Int64, String)] = [(86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")]
        var k = 0
        while k < units.count - 1 && s < units[k].0 { k += 1 }
        let first = s / units[k].0
        var text = count(first, units[k].1)
        if k + 1 < units.count {
            let second = s % units[k].0 / units[k + 1].0
            if second > 0 { text += " and " + count(second, units[k + 1].1) }
        }
        return text
    }

    private static func count(_ n: Int64, _ unit: String) -> String {
        "\(n) " + unit + (n == 1 ? "" : "s")
    }

    /// An upstream reply as 7-bit text on one line: controls become spaces,
    /// other octets outside printable ASCII become "?", blank runs are
    /// shortened; at most 4,000 octets (the longest sensible multi-line reply).
    static func replyText(_ s: String) -> String {
        var bytes: [UInt8] = []
        for b in s.utf8.prefix(4000) {
            bytes.append(b < 32 || b == 127 ? ASCII.space : (b > 127 ? 63 : b))
        }
        return ASCII.string(HeaderFolding.sanitized(bytes))
    }

    /// A name that goes into a field as one token (host, queue ID): printable
    /// ASCII without blanks, semicolons or brackets, at most 255 octets.
    static func token(_ s: String) -> String {
        var bytes: [UInt8] = []
        for b in s.utf8.prefix(255) where b > 32 && b < 127 && b != 59 && b != 40 && b != 41
            && b != ASCII.lessThan && b != ASCII.greaterThan && b != ASCII.quote {
            bytes.append(b)
        }
        return ASCII.string(bytes)
    }

    /// The reporting host when it is a domain (RFC 5321 §4.1.2), else "localhost".
    static func hostName(_ s: String) -> String {
        Mailbox.isDomain(Array(s.utf8)[...]) ? s : "localhost"
    }

    /// The inside of the Message-ID's brackets: the caller's, without
    /// brackets, blanks or controls; or one made of the queue ID and host if
    /// nothing is left, or no "@" (RFC 5322 §3.6.4: id-left "@" id-right).
    static func messageIDText(_ s: String, queueID: String, host: String) -> String {
        var bytes: [UInt8] = []
        for b in s.utf8.prefix(250) where b > 32 && b < 127 && b != ASCII.lessThan && b != ASCII.greaterThan {
            bytes.append(b)
        }
        guard bytes.contains(ASCII.at), bytes.first != ASCII.at, bytes.last != ASCII.at else {
            return "report." + token(queueID) + "@" + host
        }
        return ASCII.string(bytes)
    }

    /// RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace.
    static func validBoundary(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...70).contains(b.count), b.last != ASCII.space else { return false }
        return b.allSatisfy { ASCII.isAlpha($0) || ASCII.isDigit($0) || boundaryPunctuation.contains($0) }
    }

    /// ' ( ) + _ , - . / : = ? and space.
    private static let boundaryPunctuation: [UInt8] = Array("'()+_,-./:=? ".utf8)
    static let fallbackBoundary: [UInt8] = Array("=_postern_delivery_report".utf8)

    /// The header section as part 3 carries it (see `originalHeader`).
    static func returnedHeader(_ header: [UInt8], boundary: [UInt8]) -> [UInt8] {
        let cut = headerSectionLength(header, isWholeMessage: header.count <= maxHeaderSection)
        let dashes: [UInt8] = [45, 45] + boundary
        var out: [UInt8] = []
        out.reserveCapacity(cut + cut / 64 + 2)
        var i = 0
        while i < cut {
            // One line: up to CRLF, a bare LF or a bare CR.
            var end = i
            while end < cut && header[end] != ASCII.cr && header[end] != ASCII.lf { end += 1 }
            // An empty line ends a header section (RFC 5322 §2.1).
            if end == i { break }
            var length = 0
            if header[i...].starts(with: dashes) {
                // RFC 2046 §5.1.1: no line of a part may begin with its delimiter.
                out.append(ASCII.space)
                length = 1
            }
            for k in i..<end {
                if length >= HeaderFolding.maxLine {
                    out += [ASCII.cr, ASCII.lf, ASCII.space]
                    length = 1
                }
                out.append(header[k] == 0 ? 63 : header[k])
                length += 1
            }
            out += [ASCII.cr, ASCII.lf]
            i = end
            if i < cut && header[i] == ASCII.cr { i += 1 }
            if i < cut && header[i] == ASCII.lf { i += 1 }
            if i == end { break }
        }
        return out
    }

    /// `content` with a space before every line that begins with the
    /// delimiter (RFC 2046 §5.1.1: it "MUST NOT appear inside any of the
    /// encapsulated parts, on a line by itself or as the prefix of any
    /// line"). The text part holds the queue ID, which could wrap to a line
    /// start.
    static func guarded(_ content: [UInt8], boundary: [UInt8]) -> [UInt8] {
        let dashes: [UInt8] = [45, 45] + boundary
        var out: [UInt8] = []
        out.reserveCapacity(content.count)
        var lineStart = true
        var i = 0
        while i < content.count {
            if lineStart && content[i...].starts(with: dashes) { out.append(ASCII.space) }
            out.append(content[i])
            lineStart = content[i] == ASCII.lf
            i += 1
        }
        return out
    }

    // MARK: writing

    private func line(_ out: inout [UInt8], _ s: String) {
        out += s.utf8
        out += [ASCII.cr, ASCII.lf]
    }

    private func field(_ out: inout [UInt8], _ name: String, _ value: String) {
        HeaderFolding.append(Array(name.utf8), HeaderFolding.sanitized(value.utf8), to: &out)
    }

    /// A paragraph of the text part, wrapped at 78 octets.
    private func words(_ out: inout [UInt8], _ text: String) {
        var rest = HeaderFolding.sanitized(text.utf8)[...]
        // HeaderFolding starts each continuation with the blank it folded
        // at; a paragraph reads better with that blank dropped, so fold it
        // here the same way without it.
        while !rest.isEmpty {
            var cut = rest.endIndex
            if rest.count > HeaderFolding.preferredLine {
                let limit = rest.startIndex + HeaderFolding.preferredLine
                cut = rest[rest.startIndex...limit].lastIndex(of: ASCII.space)
                    ?? rest[limit...].firstIndex(of: ASCII.space) ?? rest.endIndex
                if cut == rest.startIndex { cut = rest.endIndex }
            }
            var piece = rest[..<cut]
            while piece.count > HeaderFolding.maxLine {
                out += piece.prefix(HeaderFolding.maxLine)
                out += [ASCII.cr, ASCII.lf]
                piece = piece.dropFirst(HeaderFolding.maxLine)
            }
            out += piece
            out += [ASCII.cr, ASCII.lf]
            rest = rest[cut...]
            while let f = rest.first, ASCII.isSpace(f) { rest = rest.dropFirst() }
        }
    }

    private func delimiter(_ out: inout [UInt8], _ boundary: [UInt8]) {
        // The empty line ends the previous content with its CRLF; the
        // delimiter line's own CRLF is part of the delimiter (RFC 2046 §5.1.1).
        line(&out, "")
        out += [45, 45]
        out += boundary
        out += [ASCII.cr, ASCII.lf]
    }
}
