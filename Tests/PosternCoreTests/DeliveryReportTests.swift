import Testing
@testable import PosternCore

private func mailbox(_ s: String) -> Mailbox {
    Mailbox.parse(Array(s.utf8)[...], allowNull: true)!
}

/// 2026-11-30 05:30:29 UTC and five days earlier.
private let now: Int64 = 1_796_016_629
private let fiveDaysAgo: Int64 = now - 5 * 86400

private func report(reason: DeliveryReport.Reason = .refused,
                    recipients: [DeliveryReport.Recipient]? = nil,
                    header: String = "From: Cron Daemon <root>\r\nTo: ops@example.org\r\nSubject: disk full\r\n",
                    boundary: String = "7mBq2xZ.postern", arrival: Int64? = fiveDaysAgo,
                    messageID: String = "<20261130053029.7mBq2xZ@raspberrypi>") -> DeliveryReport {
    DeliveryReport(
        reportingHost: "raspberrypi", noticeRecipient: mailbox("admin@example.com"),
        originalSender: mailbox("root@raspberrypi"), queueID: "0001a2b3c4d5e6f7", arrival: arrival,
        reportTime: now, utcOffset: 3600,
        recipients: recipients ?? [DeliveryReport.Recipient(
            address: mailbox("ops@example.org"), status: "5.1.1",
            reply: "550 5.1.1 <ops@example.org>: Recipient address rejected: User unknown",
            upstream: "smtp.example.com", lastAttempt: now - 2)],
        reason: reason, boundary: boundary, messageID: messageID, originalHeader: Array(header.utf8))
}

/// The message as CRLF lines; records a bare CR or LF or an over-long line.
private func lines(_ message: [UInt8]) -> [String] {
    var out: [String] = []
    var current: [UInt8] = []
    var i = 0
    while i < message.count {
        if message[i] == 13 && i + 1 < message.count && message[i + 1] == 10 {
            #expect(current.count <= 998, "a line of \(current.count) octets")
            out.append(String(decoding: current, as: UTF8.self))
            current = []
            i += 2
            continue
        }
        #expect(message[i] != 13 && message[i] != 10, "a bare CR or LF at \(i)")
        current.append(message[i])
        i += 1
    }
    #expect(current.isEmpty, "the message does not end with CRLF")
    return out
}

/// Header fields of a block of lines, unfolded, up to its empty line.
private func fields(_ ls: ArraySlice<String>) -> [(name: String, value: String)] {
    var out: [(name: String, value: String)] = []
    for l in ls {
        if l.isEmpty { break }
        if l.first == " " || l.first == "\t" {
            out[out.count - 1].value += l
            continue
        }
        let colon = l.firstIndex(of: ":")!
        out.append((String(l[..<colon]), String(l[l.index(after: colon)...].drop { $0 == " " })))
    }
    return out
}

/// The parts between `--boundary` lines: each part's lines.
private func parts(_ ls: [String], boundary: String) -> [ArraySlice<String>] {
    var result: [ArraySlice<String>] = []
    var start: Int? = nil
    for (i, l) in ls.enumerated() {
        if l == "--" + boundary || l == "--" + boundary + "--" {
            if let s = start { result.append(ls[s..<i]) }
            start = i + 1
            if l.hasSuffix("--") && l != "--" + boundary { break }
        }
    }
    return result
}

@Suite("Delivery status notification (RFC 3464, RFC 6522)")
struct DeliveryReportTests {
    @Test("The message header: From, To, Subject, Date, Message-ID, Auto-Submitted, MIME (RFC 3464 §2, RFC 3834 §5, RFC 6522 §3)")
    func messageHeader() {
        let ls = lines(report().compose())
        let f = fields(ls[...])
        #expect(f.map(\.name) == ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
                                  "Content-Type"])
        #expect(f[0].value == "\"Mail Delivery System\" <MAILER-DAEMON@raspberrypi>")
        #expect(f[1].value == "<admin@example.com>")
        #expect(f[2].value == "Undelivered Mail Returned to Sender")
        #expect(f[3].value == "Mon, 30 Nov 2026 06:30:29 +0100")
        #expect(f[4].value == "<20261130053029.7mBq2xZ@raspberrypi>")
        #expect(f[5].value == "auto-replied")
        #expect(f[6].value == "1.0")
        #expect(f[7].value == "multipart/report; report-type=delivery-status;\tboundary=\"7mBq2xZ.postern\"")
    }

    @Test("Three parts: text/plain, message/delivery-status, text/rfc822-headers (RFC 6522 §3)")
    func threeParts() {
        let ls = lines(report().compose())
        #expect(ls.filter { $0 == "--7mBq2xZ.postern" }.count == 3)
        #expect(ls.last == "--7mBq2xZ.postern--")
        let p = parts(ls, boundary: "7mBq2xZ.postern")
        #expect(p.count == 3)
        #expect(fields(p[0]).map(\.value) == ["Notification", "text/plain; charset=us-ascii"])
        #expect(fields(p[1]).map(\.value) == ["Delivery report", "message/delivery-status"])
        #expect(fields(p[2]).map(\.value) == ["Undelivered Message Headers", "text/rfc822-headers"])
        // Every content ends with its CRLF: an empty line comes before each delimiter.
        for part in p { #expect(part.last == "") }
    }

    @Test("Per-message and per-recipient fields in the order of RFC 3464 §2.2 and §2.3")
    func statusFields() {
        let p = parts(lines(report().compose()), boundary: "7mBq2xZ.postern")
        let body = p[1].drop { !$0.isEmpty }.dropFirst()
        let perMessage = fields(body)
        #expect(perMessage.map(\.name) == ["Reporting-MTA", "X-Postern-Queue-ID", "X-Postern-Sender", "Arrival-Date"])
        #expect(perMessage.map(\.value) == ["dns; raspberrypi", "0001a2b3c4d5e6f7", "rfc822; root@raspberrypi",
                                            "Wed, 25 Nov 2026 06:30:29 +0100"])
        let perRecipient = fields(body.drop { !$0.isEmpty }.dropFirst())
        #expect(perRecipient.map(\.name) == ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
                                             "Last-Attempt-Date"])
        #expect(perRecipient.map(\.value) == [
            "rfc822; ops@example.org", "failed", "5.1.1", "dns; smtp.example.com",
            "smtp; 550 5.1.1 <ops@example.org>: Recipient address rejected: User unknown",
            "Mon, 30 Nov 2026 06:30:27 +0100",
        ])
    }

    @Test("Optional fields are left out when unknown (RFC 3464 §2.2.5, §2.3.5–§2.3.7)")
    func optionalFields() {
        let r = report(recipients: [DeliveryReport.Recipient(address: mailbox("a@example.org"), status: "4.4.7",
                                                             reply: nil, upstream: nil, lastAttempt: nil)],
                       arrival: nil)
        let text = String(decoding: r.compose(), as: UTF8.self)
        for absent in ["Arrival-Date:", "Remote-MTA:", "Diagnostic-Code:", "Last-Attempt-Date:"] {
            #expect(!text.contains(absent))
        }
        #expect(text.contains("\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 4.4.7\r\n\r\n--"))
    }

    @Test("One group of per-recipient fields per recipient, each after an empty line (RFC 3464 §2.1)")
    func severalRecipients() {
        let rs = (1...3).map {
            DeliveryReport.Recipient(address: mailbox("r\($0)@example.org"), status: "5.2.\($0)", reply: "552 full",
                                     upstream: "smtp.example.com", lastAttempt: now)
        }
        let p = parts(lines(report(recipients: rs).compose()), boundary: "7mBq2xZ.postern")
        let groups = p[1].split(separator: "", omittingEmptySubsequences: false)
        // The part's own header, per-message fields, three groups, and the final empty line.
        #expect(groups.count == 6)
        #expect(groups[2].first == "Final-Recipient: rfc822; r1@example.org")
        #expect(groups[4].first == "Final-Recipient: rfc822; r3@example.org")
        #expect(groups[4].contains("Status: 5.2.3"))
    }

    @Test("A Status that is not a failure's status-code is replaced (RFC 3464 §2.3.4)", arguments: [
        ("5.1.1", DeliveryReport.Reason.refused, "5.1.1"),
        ("4.4.7", .expired(queuedSeconds: 1), "4.4.7"),
        ("5.123.999", .refused, "5.123.999"),
        ("550", .refused, "5.0.0"),
        ("2.0.0", .refused, "5.0.0"),
        ("5.01.1", .refused, "5.0.0"),
        ("5.1.1000", .refused, "5.0.0"),
        ("5.1.1 ", .refused, "5.0.0"),
        ("", .expired(queuedSeconds: 1), "4.4.7"),
        ("4.4.7\r\nBcc: x", .expired(queuedSeconds: 1), "4.4.7"),
    ])
    func statusSyntax(given: String, reason: DeliveryReport.Reason, written: String) {
        let r = report(reason: reason, recipients: [DeliveryReport.Recipient(
            address: mailbox("a@example.org"), status: given, reply: nil, upstream: nil, lastAttempt: nil)])
        #expect(String(decoding: r.compose(), as: UTF8.self).contains("\r\nStatus: " + written + "\r\n"))
    }

    @Test("A long Diagnostic-Code is folded, and unfolds to the reply (RFC 3464 §2.3.6, RFC 5322 §2.2.3)")
    func longDiagnostic() {
        let reply = "550-5.7.1 " + (1...60).map { "word\($0)" }.joined(separator: " ")
            + " " + String(repeating: "y", count: 1500)
        let r = report(recipients: [DeliveryReport.Recipient(address: mailbox("a@example.org"), status: "5.7.1",
                                                             reply: reply, upstream: "mx.example.com", lastAttempt: now)])
        let ls = lines(r.compose())
        let start = ls.firstIndex { $0.hasPrefix("Diagnostic-Code: ") }!
        var unfolded = ls[start]
        var k = start + 1
        while ls[k].first == " " {
            unfolded += ls[k].dropFirst().isEmpty ? "" : String(ls[k])
            k += 1
        }
        #expect(k - start > 5)
        #expect(ls[start..<k].allSatisfy { $0.utf8.count <= 998 })
        #expect(unfolded.replacing("y y", with: "yy") == "Diagnostic-Code: smtp; " + reply)
    }

    @Test("Replies and names are made 7-bit and single-line (RFC 3464 §2.1.2, §2.3.6)")
    func sanitised() {
        let r = report(recipients: [DeliveryReport.Recipient(
            address: mailbox("a@example.org"), status: "5.0.0", reply: "550 caf\u{e9}\r\nBcc: victim@example.net\0",
            upstream: "mx.example.com\r\nX: y", lastAttempt: now)])
        let bytes = r.compose()
        #expect(bytes.allSatisfy { $0 < 128 })
        let ls = lines(bytes)
        #expect(ls.contains("Diagnostic-Code: smtp; 550 caf??  Bcc: victim@example.net"))
        #expect(ls.contains("Remote-MTA: dns; mx.example.comX:y"))
        #expect(!ls.contains { $0.hasPrefix("Bcc:") })
    }

    /// The text part's content as one string: lines joined by spaces, folds undone.
    func explanation(_ r: DeliveryReport) -> String {
        let p = parts(lines(r.compose()), boundary: "7mBq2xZ.postern")
        var text = ""
        for l in p[0].drop(while: { !$0.isEmpty }).dropFirst() {
            #expect(l.utf8.count <= 78 || !l.contains(" "))
            text += l.first == " " ? l : (text.isEmpty ? "" : " ") + l
        }
        return text
    }

    @Test("The text part says in words what happened, to whom, and why (RFC 6522 §3: the human-readable part)")
    func explanation() {
        let refused = explanation(report())
        #expect(refused.hasPrefix("This is the mail delivery system at raspberrypi.  Your message could not be"
                                  + " delivered to one or more of its recipients. The mail server it was passed to"
                                  + " refused it permanently, so it will not be tried again."))
        #expect(refused.contains(" <ops@example.org>: refused by smtp.example.com, which said: 550 5.1.1"
                                 + " <ops@example.org>: Recipient address rejected: User unknown "))
        #expect(refused.hasSuffix(" The technical report and the header of your message follow. The message was"
                                  + " queued as 0001a2b3c4d5e6f7, from <root@raspberrypi>. "))
        let expired = explanation(report(reason: .expired(queuedSeconds: 5 * 86400 + 7200), recipients: [
            DeliveryReport.Recipient(address: mailbox("ops@example.org"), status: "4.4.7",
                                     reply: "451 4.3.0 Try again later", upstream: "smtp.example.com", lastAttempt: now),
            DeliveryReport.Recipient(address: mailbox("b@example.org"), status: "4.4.7",
                                     reply: nil, upstream: nil, lastAttempt: nil),
        ]))
        #expect(expired.contains(" It waited in the queue at raspberrypi for 5 days and 2 hours without being"
                                 + " delivered, which is as long as messages are kept, and it has been given up. "))
        #expect(expired.contains(" <ops@example.org>: last attempt at smtp.example.com, which said: 451 4.3.0 Try"
                                 + " again later <b@example.org>: not delivered (status 4.4.7) "))
    }

    static let durations: [(Int64, String)] = [
        (432_000, "5 days"), (108_000, "1 day and 6 hours"), (86_459, "1 day"),
        (12_005, "3 hours and 20 minutes"), (3600, "1 hour"), (61, "1 minute and 1 second"),
        (45, "45 seconds"), (1, "1 second"), (0, "0 seconds"), (-5, "0 seconds"),
        (Int64.max, "106751991167300 days and 15 hours"),
    ]

    @Test("How long a message was queued, in words", arguments: durations)
    func duration(seconds: Int64, words: String) {
        #expect(DeliveryReport.duration(seconds) == words)
    }

    @Test("The original header section is returned as text/rfc822-headers (RFC 6522 §4)")
    func returnedHeader() {
        let p = parts(lines(report().compose()), boundary: "7mBq2xZ.postern")
        #expect(Array(p[2]) == ["Content-Description: Undelivered Message Headers", "Content-Type: text/rfc822-headers", "",
                                "From: Cron Daemon <root>", "To: ops@example.org", "Subject: disk full", ""])
    }

    @Test("An 8-bit header is returned as it is and declared 8bit (RFC 2045 §6.2, §6.4)")
    func eightBitHeader() {
        let bytes = report(header: "Subject: Gr\u{fc}\u{df}e\r\n").compose()
        let ls = lines(bytes)
        #expect(ls.filter { $0 == "Content-Transfer-Encoding: 8bit" }.count == 2)
        #expect(ls.contains("Subject: Gr\u{fc}\u{df}e"))
        let seven = lines(report().compose())
        #expect(!seven.contains { $0.hasPrefix("Content-Transfer-Encoding") })
    }

    @Test("Bare CR, bare LF, NUL and long lines in the returned header are made safe (RFC 2045 §2.7, RFC 5322 §2.1.1)")
    func unsafeHeader() {
        let long = String(repeating: "z", count: 2500)
        let header: [UInt8] = Array("A: 1\rB: 2\nC: \0\r\nD: ".utf8) + Array(long.utf8) + Array("\r\n".utf8)
        var r = report()
        r.originalHeader = header
        let p = parts(lines(r.compose()), boundary: "7mBq2xZ.postern")
        let content = Array(p[2].dropFirst(3))
        #expect(content[0..<3] == ["A: 1", "B: 2", "C: ?"])
        #expect(content[3].utf8.count == 998 && content[4].utf8.count == 998 && content[5].hasPrefix(" z"))
        #expect(content.last == "")
    }

    @Test("Only the header section is returned: it ends at the first empty line (RFC 5322 §2.1)")
    func headerOnly() {
        var r = report()
        r.originalHeader = Array("Subject: s\r\nX: y\r\n\r\nbody line\r\n".utf8)
        let text = String(decoding: r.compose(), as: UTF8.self)
        #expect(text.contains("text/rfc822-headers\r\n\r\nSubject: s\r\nX: y\r\n\r\n--7mBq2xZ.postern--\r\n"))
        #expect(!text.contains("body line"))
        r.originalHeader = Array("Subject: s\n\nbody line\n".utf8)
        #expect(!String(decoding: r.compose(), as: UTF8.self).contains("body line"))
    }

    @Test("A header line that begins with the delimiter gets a leading space (RFC 2046 §5.1.1)")
    func boundaryInHeader() {
        let r = report(header: "X: 1\r\n--7mBq2xZ.postern--\r\n--7mBq2xZ.postern\r\n")
        let ls = lines(r.compose())
        #expect(ls.filter { $0.hasPrefix("--7mBq2xZ.postern") }.count == 4)
        #expect(ls.contains(" --7mBq2xZ.postern--") && ls.contains(" --7mBq2xZ.postern"))
    }

    @Test("An invalid boundary is replaced (RFC 2046 §5.1.1: 1–70 bchars, not ending in a space)",
          arguments: ["", "has\"quote", "ends in space ", String(repeating: "b", count: 71), "new\r\nline"])
    func invalidBoundary(boundary: String) {
        let ls = lines(report(boundary: boundary).compose())
        #expect(ls.contains("\tboundary=\"=_postern_delivery_report\""))
        #expect(ls.last == "--=_postern_delivery_report--")
    }

    @Test("Valid boundaries are used as given (RFC 2046 §5.1.1)", arguments: ["a", "'()+_,-./:=? x", String(repeating: "b", count: 70)])
    func validBoundary(boundary: String) {
        #expect(lines(report(boundary: boundary).compose()).last == "--" + boundary + "--")
    }

    @Test("The Message-ID is the caller's, bracketed once; a bad one is replaced (RFC 5322 §3.6.4)", arguments: [
        ("<a.b@host>", "<a.b@host>"), ("a.b@host", "<a.b@host>"), ("<a b\r\n@host>", "<ab@host>"),
        ("", "<report.0001a2b3c4d5e6f7@raspberrypi>"), ("no-at-sign", "<report.0001a2b3c4d5e6f7@raspberrypi>"),
    ])
    func messageID(given: String, written: String) {
        #expect(lines(report(messageID: given).compose()).contains("Message-ID: " + written))
    }

    @Test("Impossible clock readings and offsets give dates, not traps (RFC 5322 §3.3)")
    func clampedDates() {
        for t in [Int64.min, -1, Int64.max] {
            for offset in [Int.min, -90_000, 0, 90_000, Int.max] {
                var r = report(arrival: t)
                r.reportTime = t
                r.utcOffset = offset
                r.reason = .expired(queuedSeconds: t)
                let ls = lines(r.compose())
                let date = fields(ls[...]).first { $0.name == "Date" }!.value
                #expect(date.utf8.count <= 31)
            }
        }
        var r = report()
        r.reportTime = Int64.max
        r.utcOffset = 0
        #expect(lines(r.compose()).contains("Date: Fri, 31 Dec 9999 23:59:59 +0000"))
    }

    @Test("A reporting host that is no domain is not used (RFC 5321 §4.1.2)")
    func badHost() {
        var r = report()
        r.reportingHost = "bad host\r\nBcc: x"
        let ls = lines(r.compose())
        #expect(ls.contains("From: \"Mail Delivery System\" <MAILER-DAEMON@localhost>"))
        #expect(ls.contains("Reporting-MTA: dns; localhost"))
    }
}

@Suite("Where to cut the returned header section (RFC 5322 §2.1, §2.2.3)")
struct HeaderSectionCutTests {
    func cut(_ s: String, whole: Bool) -> Int {
        DeliveryReport.headerSectionLength(Array(s.utf8), isWholeMessage: whole)
    }

    @Test("Up to the empty line, which is left out")
    func emptyLine() {
        #expect(cut("A: 1\r\nB: 2\r\n\r\nbody", whole: true) == 12)
        #expect(cut("A: 1\r\nB: 2\r\n\r\nbody", whole: false) == 12)
        #expect(cut("\r\nbody", whole: true) == 0)
    }

    @Test("A whole message without an empty line is all header")
    func noEmptyLine() {
        #expect(cut("A: 1\r\nB: 2\r\n", whole: true) == 12)
        #expect(cut("A: 1\r\nB: 2", whole: true) == 10)
        #expect(cut("", whole: true) == 0)
        // Not the whole message: the last field may go on; cut before it.
        #expect(cut("A: 1\r\nB: 2\r\n", whole: false) == 6)
        #expect(cut("A: 1\r\nB: 2\r\nC", whole: false) == 12)
        #expect(cut("A: 1\r\nB: 2\r\n c", whole: false) == 6)
    }

    @Test("Past the bound: at the last field boundary before it, never between continuation lines")
    func bound() {
        let max = DeliveryReport.maxHeaderSection
        let field = "X: " + String(repeating: "a", count: 95) + "\r\n"   // 100 octets
        var text = String(repeating: field, count: max / 100)                  // 32,700 octets
        text += "Y: " + String(repeating: "b", count: 200) + "\r\n"            // crosses the bound
        text += "\r\nbody"
        #expect(cut(text, whole: false) == 32_700)
        var folded = String(repeating: field, count: max / 100 - 1)            // 32,600
        folded += "Z: z\r\n" + String(repeating: " continued\r\n", count: 20)  // 6 + 240 octets
        folded += "\r\n"
        #expect(cut(folded, whole: false) == 32_600)
        // The bound exactly at the empty line, and exactly at a field boundary.
        let exact = String(repeating: field, count: max / 100) + "W: " + String(repeating: "c", count: 63) + "\r\n"
        #expect(exact.utf8.count == max)
        #expect(cut(exact + "\r\nbody", whole: false) == max)
        #expect(cut(exact + "V: 1\r\n\r\n", whole: false) == max)
        #expect(cut(exact + " v\r\n\r\n", whole: false) == 32_700)
    }

    @Test("A first field longer than the bound gives nothing")
    func hugeFirstField() {
        #expect(cut("X: " + String(repeating: "a", count: 40_000) + "\r\n\r\n", whole: false) == 0)
        #expect(cut("X: " + String(repeating: "a", count: 40_000), whole: true) == 0)
    }
}
