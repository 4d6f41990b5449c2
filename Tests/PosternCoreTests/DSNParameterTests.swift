import Testing
@testable import PosternCore

private func dsnBytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("DSN parameter values (RFC 3461 §4, RFC 6533 §3)")
struct DSNParameterValueTests {
    @Test("xtext decodes xchars and +XX, and refuses what is not xtext (RFC 3461 §4)", arguments: [
        ("abc", "abc"), ("a+2Bb", "a+b"), ("+3D", "="), ("user+40example.com", "user@example.com"), ("", ""),
    ])
    func xtext(raw: String, decoded: String) {
        #expect(DSNParameters.decodeXtext(dsnBytes(raw)) == dsnBytes(decoded))
        #expect(DSNParameters.decodeXtext(DSNParameters.encodeXtext(dsnBytes(decoded))) == dsnBytes(decoded))
    }

    @Test("Malformed xtext: a bare '+', lower-case or short hex, '=', space, control, 8-bit", arguments: [
        "a+", "a+2", "a+2b", "a+G0", "a=b", "a b", "a\u{1}b", "é",
    ])
    func badXtext(raw: String) {
        #expect(DSNParameters.decodeXtext(dsnBytes(raw)) == nil)
    }

    @Test("NOTIFY is NEVER alone or a list of SUCCESS, FAILURE, DELAY in any case (RFC 3461 §4.1)", arguments: [
        ("NEVER", "NEVER"), ("never", "NEVER"), ("SUCCESS", "SUCCESS"), ("FAILURE,DELAY", "FAILURE,DELAY"),
        ("delay,Success,FAILURE", "SUCCESS,FAILURE,DELAY"), ("FAILURE,FAILURE", "FAILURE"),
    ])
    func notify(raw: String, text: String) {
        #expect(DSNParameters.notify(dsnBytes(raw))?.text == text)
    }

    @Test("Malformed NOTIFY: NEVER with another, empty elements, unknown words", arguments: [
        "NEVER,SUCCESS", "FAILURE,NEVER", "", ",", "SUCCESS,", ",DELAY", "ALWAYS", "SUCCESS FAILURE", "SUCCES",
    ])
    func badNotify(raw: String) {
        #expect(DSNParameters.notify(dsnBytes(raw)) == nil)
    }

    @Test("RET is FULL or HDRS in any case (RFC 3461 §4.3)")
    func ret() {
        #expect(DSNParameters.ret(dsnBytes("FULL")) == .full)
        #expect(DSNParameters.ret(dsnBytes("hdrs")) == .headers)
        #expect(DSNParameters.ret(dsnBytes("HEADERS")) == nil)
        #expect(DSNParameters.ret(dsnBytes("")) == nil)
    }

    @Test("ENVID is xtext of 1–100 printable characters, counted decoded (RFC 3461 §4.4)")
    func envelopeID() {
        #expect(DSNParameters.envelopeID(dsnBytes("QQ314159")) == dsnBytes("QQ314159"))
        #expect(DSNParameters.envelopeID(dsnBytes("a+20b")) == dsnBytes("a+20b"))
        #expect(DSNParameters.envelopeID(dsnBytes(String(repeating: "x", count: 100))) != nil)
        #expect(DSNParameters.envelopeID(dsnBytes(String(repeating: "x", count: 101))) == nil)
        // 100 characters decoded from 300 octets of xtext.
        #expect(DSNParameters.envelopeID(dsnBytes(String(repeating: "+2B", count: 100))) != nil)
        #expect(DSNParameters.envelopeID(dsnBytes(String(repeating: "+2B", count: 101))) == nil)
        // Decoded control characters are not printable.
        #expect(DSNParameters.envelopeID(dsnBytes("a+0Db")) == nil)
        #expect(DSNParameters.envelopeID(dsnBytes("")) == nil)
        #expect(DSNParameters.envelopeIDField(dsnBytes("QQ+2B314159")) == "QQ+314159")
    }

    @Test("ORCPT is addr-type;xtext up to 500 characters; the address is not held to its type's syntax (RFC 3461 §4.2)",
          arguments: ["rfc822;user@example.com", "RFC822;user+2Bx@example.com", "rfc822;not+20an+20address+20but+20xtext",
                      "x400;/C+3DUS/O+3Dx/", "rfc822;a"])
    func orcpt(raw: String) {
        #expect(DSNParameters.originalRecipient(dsnBytes(raw), utf8: false) == dsnBytes(raw))
    }

    @Test("Malformed ORCPT: no type, no address, no ';', bad xtext, decoded controls, over 500", arguments: [
        ";a@b", "rfc822;", "rfc822", "rfc822;a+0Ab", "rfc822;a+2", "rf c822;a", "rfc822;a=b",
        "rfc822;" + String(repeating: "a", count: 494),
    ])
    func badOrcpt(raw: String) {
        #expect(DSNParameters.originalRecipient(dsnBytes(raw), utf8: false) == nil)
        #expect(DSNParameters.originalRecipient(dsnBytes(raw), utf8: true) == nil)
    }

    @Test("ORCPT of 500 characters is the longest taken")
    func orcptLimit() {
        let v = "rfc822;" + String(repeating: "a", count: 493)
        #expect(v.utf8.count == 500)
        #expect(DSNParameters.originalRecipient(dsnBytes(v), utf8: false) != nil)
    }

    @Test("utf-8 ORCPT: utf-8-addr-xtext always, utf-8-addr-unitext only with SMTPUTF8 (RFC 6533 §3)")
    func utf8Orcpt() {
        #expect(DSNParameters.originalRecipient(dsnBytes("utf-8;pel\\x{E9}@example.com"), utf8: false) != nil)
        #expect(DSNParameters.originalRecipient(dsnBytes("UTF-8;\\x{7528}\\x{6237}@example.com"), utf8: false) != nil)
        #expect(DSNParameters.originalRecipient(dsnBytes("utf-8;pelé@example.com"), utf8: false) == nil)
        #expect(DSNParameters.originalRecipient(dsnBytes("utf-8;pelé@example.com"), utf8: true) != nil)
        #expect(DSNParameters.originalRecipient(dsnBytes("utf-8;\\x{1F600}@example.com"), utf8: false) != nil)
    }

    @Test("Malformed utf-8 ORCPT: bad \\x{…}, controls, surrogates, '+' and '=' (RFC 6533 §3 QCHAR)", arguments: [
        "utf-8;a\\x{E}b", "utf-8;a\\x{0E9}b", "utf-8;a\\x{e9}b", "utf-8;a\\x{110000}b", "utf-8;a\\x{D800}b",
        "utf-8;a\\x{0A}b", "utf-8;a\\x{85}b", "utf-8;a\\xE9b", "utf-8;a\\x{E9", "utf-8;a\\b", "utf-8;a+2Bb",
        "utf-8;a=b", "utf-8;a\\x{1234567}b",
    ])
    func badUTF8Orcpt(raw: String) {
        #expect(DSNParameters.originalRecipient(dsnBytes(raw), utf8: true) == nil)
    }

    @Test("The Original-Recipient field decodes xtext, and writes UTF-8 as \\x{…} (RFC 3464 §2.3.1, RFC 6533 §3)")
    func originalRecipientField() {
        #expect(DSNParameters.originalRecipientField(dsnBytes("rfc822;user+2Bx@example.com")) == "rfc822; user+x@example.com")
        #expect(DSNParameters.originalRecipientField(dsnBytes("utf-8;pelé@例.com")) == "utf-8; pel\\x{E9}@\\x{4F8B}.com")
        #expect(DSNParameters.originalRecipientField(dsnBytes("utf-8;😀@x")) == "utf-8; \\x{1F600}@x")
        #expect(DSNParameters.originalRecipientField(dsnBytes("rfc822;")) == nil)
    }
}

@Suite("DSN parameters in the receiver (RFC 3461 §4.1–4.4)")
struct DSNReceiverTests {
    /// EHLO, the MAIL line, the RCPT lines (all expected 250), DATA; the envelope.
    static func envelope(mail: String, rcpts: [String], sourceLocation: SourceLocation = #_sourceLocation) -> Envelope? {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send(mail, sourceLocation: sourceLocation)
        s.expect(250, "2.1.0", sourceLocation: sourceLocation)
        for r in rcpts {
            s.send(r, sourceLocation: sourceLocation)
            s.expect(250, "2.1.5", sourceLocation: sourceLocation)
        }
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else { return nil }
        return e
    }

    @Test("EHLO offers DSN (RFC 3461 §4)")
    func offered() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        #expect(s.reply?.lines.contains("DSN") == true)
    }

    @Test("RET, ENVID, NOTIFY and ORCPT are kept as received, per message and per recipient")
    func kept() {
        let e = Self.envelope(mail: "MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ+2B314159",
                              rcpts: ["RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com",
                                      "RCPT TO:<c@example.com>",
                                      "RCPT TO:<d@example.com> NOTIFY=NEVER"])
        #expect(e?.ret == .headers)
        #expect(e?.envelopeID == dsnBytes("QQ+2B314159"))
        #expect(e?.smtputf8 == false)
        #expect(e?.recipientParameters == [
            RecipientParameters(notify: DSNNotify(rawValue: 6), orcpt: dsnBytes("rfc822;b+40example.com")),
            .none,
            RecipientParameters(notify: .never),
        ])
    }

    @Test("A transaction without DSN parameters keeps none")
    func none() {
        let e = Self.envelope(mail: "MAIL FROM:<a@example.com>", rcpts: ["RCPT TO:<b@example.com>"])
        #expect(e?.ret == nil && e?.envelopeID == nil && e?.recipientParameters == [])
    }

    @Test("Malformed or repeated MAIL parameters get 501 5.5.4 and open no transaction", arguments: [
        "MAIL FROM:<a@example.com> RET=ALL", "MAIL FROM:<a@example.com> RET", "MAIL FROM:<a@example.com> RET=FULL RET=HDRS",
        "MAIL FROM:<a@example.com> ENVID=a+2", "MAIL FROM:<a@example.com> ENVID", "MAIL FROM:<a@example.com> ENVID=a ENVID=b",
        "MAIL FROM:<a@example.com> ENVID=" + String(repeating: "x", count: 101),
    ])
    func badMail(line: String) {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send(line)
        s.expect(501, "5.5.4")
        #expect(s.state == .greeted)
    }

    @Test("Malformed or repeated RCPT parameters get 501 5.5.4 and add no recipient", arguments: [
        "RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS", "RCPT TO:<b@example.com> NOTIFY=", "RCPT TO:<b@example.com> NOTIFY",
        "RCPT TO:<b@example.com> NOTIFY=FAILURE NOTIFY=DELAY", "RCPT TO:<b@example.com> ORCPT=b@example.com",
        "RCPT TO:<b@example.com> ORCPT=rfc822;a ORCPT=rfc822;b", "RCPT TO:<b@example.com> ORCPT=utf-8;a+2Bb",
    ])
    func badRcpt(line: String) {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com>")
        s.send(line)
        s.expect(501, "5.5.4")
        #expect(s.state == .gotMail)
    }

    @Test("Unknown parameters keep 555 5.5.4 (RFC 5321 §4.1.1.11)", arguments: [
        "MAIL FROM:<a@example.com> XVERP", "MAIL FROM:<a@example.com> NOTIFY=NEVER",
    ])
    func unknownMail(line: String) {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send(line)
        s.expect(555, "5.5.4")
    }

    @Test("RET on RCPT is unknown there: 555 5.5.4")
    func unknownRcpt() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com>")
        s.send("RCPT TO:<b@example.com> RET=FULL")
        s.expect(555, "5.5.4")
    }

    @Test("A utf-8 ORCPT in unitext needs SMTPUTF8 on MAIL (RFC 6533 §3, RFC 6531 §3.3)")
    func unitextOrcpt() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com>")
        s.send("RCPT TO:<b@example.com> ORCPT=utf-8;bé@example.com")
        s.expect(501, "5.5.4")
        let e = Self.envelope(mail: "MAIL FROM:<a@example.com> SMTPUTF8",
                              rcpts: ["RCPT TO:<bé@example.com> ORCPT=utf-8;bé@example.com"])
        #expect(e?.recipientParameters.first?.orcpt == dsnBytes("utf-8;bé@example.com"))
    }

    @Test("A repeated recipient keeps the parameters it came with first")
    func repeatedRecipient() {
        let e = Self.envelope(mail: "MAIL FROM:<a@example.com>",
                              rcpts: ["RCPT TO:<b@example.com> NOTIFY=NEVER", "RCPT TO:<b@EXAMPLE.com> NOTIFY=SUCCESS"])
        #expect(e?.recipients.count == 1)
        #expect(e?.recipientParameters == [RecipientParameters(notify: .never)])
    }
}

@Suite("DSN parameters at the upstream (RFC 3461 §5)")
struct DSNSenderTests {
    static func dsnMessage() -> OutboundMessage {
        var m = message(to: ["b@example.com", "c@example.com"])
        m.ret = .full
        m.envelopeID = dsnBytes("QQ+2B314159")
        m.recipientParameters = [RecipientParameters(notify: DSNNotify(rawValue: 6), orcpt: dsnBytes("rfc822;b+40example.com")),
                                 .none]
        return m
    }

    @Test("Passed on as received where the upstream offers DSN")
    func passed() {
        var s = SenderSession()
        s.connect(["PIPELINING", "DSN"])
        s.start(Self.dsnMessage())
        #expect(s.sent == "MAIL FROM:<sender@example.org> RET=FULL ENVID=QQ+2B314159\r\n"
            + "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.com\r\n"
            + "RCPT TO:<c@example.com>\r\nDATA\r\n")
    }

    @Test("Dropped where the upstream does not offer DSN (RFC 3461 §5: no DSN parameters to a non-DSN receiver)")
    func dropped() {
        var s = SenderSession()
        s.connect(["PIPELINING"])
        s.start(Self.dsnMessage())
        #expect(s.sent == "MAIL FROM:<sender@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    }
}

@Suite("Spool envelope records with ESMTP parameters (SpoolCodec version 2, flags bit 4)")
struct SpoolParameterTests {
    static func record() -> SpoolCodec.EnvelopeRecord {
        var e = SpoolCodec.EnvelopeRecord(arrival: 1_796_016_629, eightBit: true, from: dsnBytes("pelé@example.com"),
                                          recipients: [dsnBytes("用户@例子.广告"), dsnBytes("c@example.com"), dsnBytes("d@example.com")])
        e.smtputf8 = true
        e.ret = .headers
        e.envelopeID = dsnBytes("QQ+2B314159")
        e.recipientParameters = [RecipientParameters(notify: DSNNotify(rawValue: 14), orcpt: dsnBytes("utf-8;用户@例子.广告")),
                                 .none, RecipientParameters(notify: .never, orcpt: dsnBytes("rfc822;d+40example.com"))]
        return e
    }

    static func parse(_ p: [UInt8]) -> SpoolCodec.EnvelopeRecord? { p.withUnsafeBytes { SpoolCodec.parseEnvelope($0) } }

    @Test("Round trip with every parameter")
    func roundTrip() {
        let e = Self.record()
        #expect(SpoolCodec.canEncode(e))
        let p = SpoolCodec.envelopePayload(e)
        #expect(p[8] & 16 != 0)
        #expect(Self.parse(p) == e)
    }

    @Test("Round trip with each parameter alone", arguments: [0, 1, 2, 3, 4])
    func eachAlone(which: Int) {
        var e = SpoolCodec.EnvelopeRecord(arrival: 5, eightBit: false, from: dsnBytes("a@b.example"),
                                          recipients: [dsnBytes("c@d.example"), dsnBytes("e@f.example")])
        switch which {
        case 0: e.smtputf8 = true
        case 1: e.ret = .full
        case 2: e.envelopeID = dsnBytes("x")
        case 3: e.recipientParameters = [.none, RecipientParameters(notify: .delay)]
        default: e.recipientParameters = [RecipientParameters(orcpt: dsnBytes("rfc822;c@d.example")), .none]
        }
        #expect(Self.parse(SpoolCodec.envelopePayload(e)) == e)
    }

    @Test("An envelope without parameters is written exactly as in version 1 (flags bit 4 clear)")
    func oldLayout() {
        let e = SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: false, from: dsnBytes("a@b.example"), recipients: [dsnBytes("c@d.example")])
        var v1: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0] + dsnBytes("a@b.example") + [1, 0, 11, 0] + dsnBytes("c@d.example")
        #expect(SpoolCodec.envelopePayload(e) == v1)
        #expect(Self.parse(v1) == e)
        v1[8] = 32 // an unassigned flag bit
        #expect(Self.parse(v1) == nil)
    }

    @Test("Every cut of a payload with parameters, and a byte too many, fails to parse")
    func truncated() {
        let p = SpoolCodec.envelopePayload(Self.record())
        for n in 0..<p.count { #expect(Self.parse(Array(p.prefix(n))) == nil, "cut to \(n)") }
        #expect(Self.parse(p + [0]) == nil)
    }

    @Test("Damaged parameters are refused: bad RET, NOTIFY, ENVID, ORCPT, spare bits, an empty section")
    func damaged() {
        let p = SpoolCodec.envelopePayload(Self.record())
        // The parameters section starts after the recipients.
        let e = Self.record()
        var at = 8 + 1 + 2 + e.from.count + 2
        for r in e.recipients { at += 2 + r.count }
        var badRet = p; badRet[at] = 1 | 3 << 1
        var spare = p; spare[at] |= 8
        var envidCR = p; envidCR[at + 3] = 13
        let firstNotify = at + 3 + e.envelopeID!.count
        var neverAndSuccess = p; neverAndSuccess[firstNotify] = 3
        var orcptSpace = p; orcptSpace[firstNotify + 3] = 32
        for bad in [badRet, spare, envidCR, neverAndSuccess, orcptSpace] { #expect(Self.parse(bad) == nil) }
        // Bit 4 set but nothing in the section.
        var empty = SpoolCodec.envelopePayload(SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: false, from: [], recipients: [dsnBytes("a@b")]))
        empty[8] |= 16
        empty += [0, 0, 0, 0, 0, 0]
        #expect(Self.parse(empty) == nil)
        // A unitext ORCPT without SMTPUTF8 is not what the receiver takes.
        var noUTF8 = Self.record()
        noUTF8.smtputf8 = false
        #expect(Self.parse(SpoolCodec.envelopePayload(noUTF8)) == nil)
    }

    @Test("canEncode refuses parameters that do not fit the format")
    func canEncode() {
        var e = Self.record()
        e.recipientParameters.removeLast()
        #expect(!SpoolCodec.canEncode(e))
        e = Self.record()
        e.envelopeID = [UInt8](repeating: 0x61, count: 301)
        #expect(!SpoolCodec.canEncode(e))
        e = Self.record()
        e.recipientParameters[1].notify = DSNNotify(rawValue: 3)
        #expect(!SpoolCodec.canEncode(e))
    }
}

@Suite("Failure notices carry ENVID and ORCPT (RFC 3461 §6.3, RFC 3464 §2.2.1, §2.3.1)")
struct DSNReportFieldTests {
    @Test("Original-Envelope-Id leads the per-message fields; Original-Recipient precedes Final-Recipient")
    func fields() {
        var r = DeliveryReport.Recipient(address: mb("b@example.com"), status: "5.1.1", reply: "550 5.1.1 no", upstream: "up.test",
                                         lastAttempt: nil)
        r.originalRecipient = "rfc822; b@example.com"
        var report = DeliveryReport(reportingHost: "pi.test", noticeRecipient: mb("a@example.org"),
                                    originalSender: mb("a@example.org"), queueID: "0001", arrival: nil, reportTime: 0,
                                    utcOffset: 0, recipients: [r], reason: .refused, boundary: "b0und", messageID: "<m@pi.test>",
                                    originalHeader: dsnBytes("Subject: x\r\n"))
        report.originalEnvelopeID = "QQ+314159"
        let text = String(decoding: report.compose(), as: UTF8.self)
        #expect(text.contains("\r\nOriginal-Envelope-Id: QQ+314159\r\nReporting-MTA: dns; pi.test\r\n"))
        #expect(text.contains("\r\nOriginal-Recipient: rfc822; b@example.com\r\nFinal-Recipient: rfc822; b@example.com\r\n"))
        report.originalEnvelopeID = nil
        report.recipients[0].originalRecipient = nil
        let plain = String(decoding: report.compose(), as: UTF8.self)
        #expect(!plain.contains("Original-"))
    }

    @Test("A UTF-8 recipient's Final-Recipient is utf-8-addr-xtext, so the status part stays ASCII (RFC 6533 §3)")
    func utf8FinalRecipient() {
        let address = Mailbox.parse(Array("\"jü rg+en\"@例.com".utf8)[...], allowNull: false, utf8: true)!
        let r = DeliveryReport.Recipient(address: address, status: "5.6.7", reply: nil, upstream: nil, lastAttempt: nil)
        let report = DeliveryReport(reportingHost: "pi.test", noticeRecipient: mb("a@example.org"),
                                    originalSender: mb("a@example.org"), queueID: "0001", arrival: nil, reportTime: 0,
                                    utcOffset: 0, recipients: [r], reason: .refused, boundary: "b0und", messageID: "<m@pi.test>",
                                    originalHeader: dsnBytes("Subject: x\r\n"))
        let text = String(decoding: report.compose(), as: UTF8.self)
        #expect(text.contains("\r\nFinal-Recipient: utf-8; \"j\\x{FC}\\x{20}rg\\x{2B}en\"@\\x{4F8B}.com\r\n"), "\(text)")
        #expect(DSNParameters.isUTF8AddressText(DSNParameters.utf8AddressXtext(address.bytes, escapeASCII: true)[...], unitext: false))
    }
}
