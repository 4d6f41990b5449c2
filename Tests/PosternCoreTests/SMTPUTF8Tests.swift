import Testing
@testable import PosternCore

/// UTF-8 mailboxes as `Mailbox.parse(…, utf8: true)` takes them.
func utf8Mailbox(_ s: String) -> Mailbox? { Mailbox.parse(Array(s.utf8)[...], allowNull: false, utf8: true) }

@Suite("SMTPUTF8 mailbox syntax (RFC 6531 §3.3)")
struct SMTPUTF8MailboxTests {
    @Test("UTF8-non-ascii is taken in the local part, a quoted string and a domain label", arguments: [
        "pelé@example.com", "用户@例子.广告", "\"jürgen q\"@example.com", "δοκιμή@παράδειγμα.δοκιμή",
        "😀@example.org", "user@bücher.example", "ascii@example.com",
    ])
    func accepted(address: String) {
        let m = utf8Mailbox(address)
        #expect(m?.text == address)
        #expect(m?.isASCII == address.utf8.allSatisfy { $0 < 0x80 })
    }

    @Test("Without the flag, the same addresses are refused: the default stays ASCII (RFC 5321 §4.1.2)", arguments: [
        "pelé@example.com", "user@bücher.example", "\"jürgen\"@example.com",
    ])
    func refusedWithoutFlag(address: String) {
        #expect(Mailbox.parse(Array(address.utf8)[...], allowNull: false) == nil)
    }

    @Test("Ill-formed UTF-8 and C1 controls are refused (RFC 3629 §4: overlong, surrogate, beyond U+10FFFF, cut, stray continuation; RFC 5198 §2)",
          arguments: [
              [0xC0, 0xAF], [0xC1, 0x81], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
              [0xF5, 0x80, 0x80, 0x80], [0xC3], [0xE2, 0x82], [0x80], [0xBF], [0xFF], [0xFE],
              [0xC2, 0x80], [0xC2, 0x9D], // C1 controls

          ] as [[UInt8]])
    func illFormed(bytes: [UInt8]) {
        #expect(Mailbox.parse((Array("a".utf8) + bytes + Array("@example.com".utf8))[...], allowNull: false, utf8: true) == nil)
        #expect(Mailbox.parse((Array("a@ex".utf8) + bytes + Array(".com".utf8))[...], allowNull: false, utf8: true) == nil)
        #expect(Mailbox.parse((Array("\"a".utf8) + bytes + Array("\"@example.com".utf8))[...], allowNull: false, utf8: true) == nil)
    }

    @Test("The octet limits stay (RFC 6531 §3.3 keeps RFC 5321 §4.5.3.1's sizes in octets)")
    func octetLimits() {
        // 32 two-octet characters are 64 octets: the longest local part.
        let local64 = String(repeating: "é", count: 32)
        #expect(utf8Mailbox(local64 + "@example.com") != nil)
        #expect(utf8Mailbox(local64 + "e@example.com") == nil)
        // A label of 21 three-octet characters is 63 octets; one more is too long.
        let label63 = String(repeating: "例", count: 21)
        #expect(utf8Mailbox("a@" + label63 + ".example") != nil)
        #expect(utf8Mailbox("a@" + label63 + "x.example") == nil)
    }

    @Test("Dots, hyphens and control characters keep their ASCII rules in UTF-8 addresses")
    func asciiRulesStay() {
        #expect(utf8Mailbox("é..é@example.com") == nil)
        #expect(utf8Mailbox(".é@example.com") == nil)
        #expect(utf8Mailbox("é@-例.example") == nil)
        #expect(utf8Mailbox("é@例-.example") == nil)
        #expect(utf8Mailbox("é@例..example") == nil)
        #expect(utf8Mailbox("é\u{7F}@example.com") == nil)
        #expect(utf8Mailbox("é @example.com") == nil)
    }

    @Test("A path argument with UTF-8 in the mailbox and a parameter value parses only with utf8")
    func pathArgument() {
        let arg = Array("TO:<用户@例子.广告> ORCPT=utf-8;用户@例子.广告".utf8)[...]
        guard case .success(let p) = PathArgument.parse(arg, prefix: "TO:", allowNull: false, utf8: true) else {
            Issue.record("not parsed")
            return
        }
        #expect(p.mailbox.text == "用户@例子.广告")
        #expect(p.parameters.first?.value == "utf-8;用户@例子.广告")
        #expect(PathArgument.parse(arg, prefix: "TO:", allowNull: false) == .failure(.badPath))
        // A well-formed address with an ill-formed value.
        let bad = Array("TO:<a@b.example> ORCPT=utf-8;a".utf8) + [0xC3] + Array("@b".utf8)
        #expect(PathArgument.parse(bad[...], prefix: "TO:", allowNull: false, utf8: true) == .failure(.badParameter))
    }
}

@Suite("SMTPUTF8 in the receiver (RFC 6531 §3.1, §3.4, §3.5)")
struct SMTPUTF8ReceiverTests {
    @Test("MAIL with SMTPUTF8 takes UTF-8 sender and recipients, and the envelope says it needs SMTPUTF8 (§3.4)")
    func accepted() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.expect(250)
        #expect(s.reply?.lines.contains("SMTPUTF8") == true)
        s.send("MAIL FROM:<pelé@example.com> SMTPUTF8 BODY=8BITMIME")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<用户@例子.广告>")
        s.expect(250, "2.1.5")
        s.send("RCPT TO:<ascii@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        s.expect(354)
        guard case .startData(let e) = s.actions.first else {
            Issue.record("no startData: \(s.actions)")
            return
        }
        #expect(e.smtputf8)
        #expect(e.eightBit)
        #expect(e.from.text == "pelé@example.com")
        #expect(e.recipients.map(\.text) == ["用户@例子.广告", "ascii@example.com"])
    }

    @Test("SMTPUTF8 with ASCII addresses only still marks the message (its header may be UTF-8, §3.4)")
    func asciiAddressesKeepFlag() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com> smtputf8")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<b@example.com>")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else { Issue.record("no startData"); return }
        #expect(e.smtputf8)
    }

    @Test("Without SMTPUTF8 a UTF-8 sender gets 553 5.6.7 (§3.5), and nothing changes")
    func senderWithoutFlag() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<pelé@example.com>")
        s.expect(553, "5.6.7")
        #expect(s.state == .greeted)
    }

    @Test("Without SMTPUTF8 a UTF-8 recipient gets 553 5.6.7 (§3.5); an ASCII one is still taken")
    func recipientWithoutFlag() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com>")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<用户@例子.广告>")
        s.expect(553, "5.6.7")
        #expect(s.state == .gotMail)
        s.send("RCPT TO:<b@example.com>")
        s.expect(250, "2.1.5")
    }

    @Test("Ill-formed UTF-8 in an address is a syntax error even with SMTPUTF8 (501 5.1.7 / 5.1.3)")
    func illFormed() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.actions = s.machine.receive(line: (Array("MAIL FROM:<a".utf8) + [0xC0, 0xAF] + Array("@example.com> SMTPUTF8".utf8))[...])
        s.expect(501, "5.1.7")
        s.send("MAIL FROM:<a@example.com> SMTPUTF8")
        s.expect(250)
        s.actions = s.machine.receive(line: (Array("RCPT TO:<b".utf8) + [0xED, 0xA0, 0x80] + Array("@example.com>".utf8))[...])
        s.expect(501, "5.1.3")
    }

    @Test("SMTPUTF8 takes no value and comes once (501 5.5.4)", arguments: [
        "MAIL FROM:<a@example.com> SMTPUTF8=yes", "MAIL FROM:<a@example.com> SMTPUTF8 SMTPUTF8",
    ])
    func malformedKeyword(line: String) {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send(line)
        s.expect(501, "5.5.4")
        #expect(s.state == .greeted)
    }

    @Test("UTF-8 in a parameter value without SMTPUTF8 is a syntax error (RFC 6531 §3.3 extends esmtp-value only with it)")
    func utf8ValueWithoutFlag() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@example.com> ENVID=é")
        s.expect(501, "5.5.4")
    }
}

@Suite("SMTPUTF8 at the upstream (RFC 6531 §3.2, §3.4)")
struct SMTPUTF8SenderTests {
    static func utf8Message() -> OutboundMessage {
        var m = OutboundMessage(from: utf8Mailbox("pelé@example.com")!, recipients: [utf8Mailbox("用户@例子.广告")!],
                                size: 100, eightBit: true)
        m.smtputf8 = true
        return m
    }

    @Test("EHLO's SMTPUTF8 and DSN keywords set the capabilities")
    func capabilities() {
        let c = Capabilities(ehloLines: ["upstream.test", "SMTPUTF8", "dsn"])
        #expect(c.smtpUTF8)
        #expect(c.dsn)
        #expect(!Capabilities(ehloLines: ["upstream.test", "8BITMIME"]).smtpUTF8)
    }

    @Test("MAIL carries SMTPUTF8 when the message needs it and the upstream offers it; the addresses go as they came")
    func passed() {
        var s = SenderSession()
        s.connect(["PIPELINING", "8BITMIME", "SMTPUTF8"])
        s.start(Self.utf8Message())
        #expect(s.sent == "MAIL FROM:<pelé@example.com> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\nDATA\r\n")
    }

    @Test("An ASCII message gets no SMTPUTF8 even where it is offered")
    func notNeeded() {
        var s = SenderSession()
        s.connect(["PIPELINING", "SMTPUTF8"])
        s.start(message(to: ["b@example.com"]))
        #expect(s.sent == "MAIL FROM:<sender@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    }

    @Test("Without SMTPUTF8 at the upstream nothing is sent and every recipient fails with 5.6.7 (§3.2: never downgraded)")
    func refusedWithoutExtension() {
        var s = SenderSession()
        s.connect(["PIPELINING", "8BITMIME"])
        var m = Self.utf8Message()
        m.recipients.append(mb("b@example.com"))
        s.start(m)
        #expect(s.sent == "")
        #expect(s.outcomeList == ["0:failed:553", "1:failed:553"])
        let replies = s.actions.compactMap { if case .recipient(_, _, let r) = $0 { return r } else { return nil } }
        #expect(replies.allSatisfy { $0.enhanced == "5.6.7" && $0.description.contains("SMTPUTF8") })
        #expect(s.done && s.ready)
        #expect(s.machine.isReady)
    }

    @Test("A message needing SMTPUTF8 is not started behind a dot where it is not offered; it fails at start")
    func notBehindDot() {
        var s = SenderSession()
        s.connect(["PIPELINING"])
        s.start(message(to: ["b@example.com"]))
        s.upstream("250 2.1.0 Ok")
        s.upstream("250 2.1.5 Ok")
        s.upstream("354 go")
        #expect(s.actions.contains(.sendText))
        _ = s.machine.textSent()
        #expect(s.machine.startBehindDot(message: Self.utf8Message()).isEmpty)
    }
}
