import Testing
@testable import PosternCore

/// Issue 9: local recipients and `[aliases]` at RCPT, the drop file's envelope,
/// and the trace header of a local submission.
@Suite("RCPT of local recipients through [aliases] (issue 9 item 4)")
struct AliasRcptTests {
    static func session(_ lines: String) throws -> ReceiverSession {
        let allowed = RecipientPolicy(patterns: [try #require(RecipientPolicy.pattern("*@example.com"))])
        var settings = ReceiverSession.settings(maxRecipients: 5, recipients: allowed)
        settings.aliases = try AliasMap.build(
            lines.split(separator: "\n").enumerated().map { i, l in
                let kv = l.split(separator: "=", maxSplits: 1)
                return AliasMap.Line(name: String(kv[0]).trimmingSpaces, value: String(kv[1]).trimmingSpaces, line: i + 1)
            },
            localDomains: [Array("localhost".utf8), Array("mx.test".utf8)]).get()
        var s = ReceiverSession(settings)
        s.send("EHLO client.test")
        s.send("MAIL FROM:<app@client.test>")
        return s
    }

    @Test("A domain-less, @localhost or @hostname recipient becomes its alias's addresses")
    func mapped() throws {
        var s = try Self.session("root = admin@example.com\nops = a@example.com, b@example.com")
        for rcpt in ["<root>", "<ROOT@localhost>", "<root@MX.test>", "<ops@localhost>"] {
            s.send("RCPT TO:\(rcpt)")
            #expect(s.reply?.code == 250, "\(rcpt)")
        }
        s.send("DATA")
        guard case .startData(let env)? = s.actions.first(where: { if case .startData = $0 { true } else { false } }) else {
            Issue.record("no DATA")
            return
        }
        #expect(env.recipients.map { $0.text } == ["admin@example.com", "a@example.com", "b@example.com"])
    }

    @Test("An unmapped local recipient gets 550 5.1.1 at once (RFC 3463 §3.2)")
    func unmapped() throws {
        var s = try Self.session("root = admin@example.com")
        s.send("RCPT TO:<nobody@localhost>")
        #expect(s.reply?.code == 550 && s.reply?.enhanced == "5.1.1")
        s.send("RCPT TO:<nobody>")
        #expect(s.reply?.code == 550 && s.reply?.enhanced == "5.1.1")
    }

    @Test("The domain-less <postmaster> is accepted even unmapped (RFC 5321 §4.5.1)")
    func postmaster() throws {
        var s = try Self.session("root = admin@example.com")
        s.send("RCPT TO:<Postmaster>")
        #expect(s.reply?.code == 250)
    }

    @Test("* takes every other local name; alias targets pass allow_recipients")
    func wildcard() throws {
        var s = try Self.session("* = catchall@example.net")
        s.send("RCPT TO:<backup@localhost>")
        #expect(s.reply?.code == 250)
        s.send("RCPT TO:<someone@example.net>")   // not allowed by *@example.com
        #expect(s.reply?.code == 550 && s.reply?.enhanced == "5.7.1")
    }

    @Test("An expansion beyond max_recipients is 452 4.5.3 (RFC 5321 §4.5.3.1.10)")
    func expansionLimit() throws {
        var s = try Self.session("many = a@example.com, b@example.com, c@example.com, d@example.com")
        s.send("RCPT TO:<x@example.com>")
        s.send("RCPT TO:<y@example.com>")
        s.send("RCPT TO:<many>")
        #expect(s.reply?.code == 452)
    }
}

@Suite("The drop file's envelope (issue 9 item 2)")
struct DropEnvelopeTests {
    @Test("encode then parse gives the envelope back and where the text starts")
    func roundTrip() throws {
        let from = try #require(Mailbox.parse(Array("cron@board.example".utf8)[...], allowNull: true))
        let rcpts = ["a@example.com", "b@example.org"].compactMap { Mailbox.parse(Array($0.utf8)[...], allowNull: false) }
        let bytes = DropEnvelope.encode(sender: from, recipients: rcpts) + Array("Subject: x\r\n\r\nbody\r\n".utf8)
        guard case .envelope(let p) = DropEnvelope.parse(bytes[...]) else { Issue.record("not parsed"); return }
        #expect(p.sender == from && p.recipients == rcpts)
        #expect(Array(bytes[p.length...]) == Array("Subject: x\r\n\r\nbody\r\n".utf8))
    }

    @Test("The null sender is an empty F line")
    func nullSender() {
        let bytes = DropEnvelope.encode(sender: .null, recipients: [Mailbox.parse(Array("a@b.example".utf8)[...], allowNull: false)!])
        guard case .envelope(let p) = DropEnvelope.parse(bytes[...]) else { Issue.record("not parsed"); return }
        #expect(p.sender.isNull)
    }

    @Test("Incomplete input asks for more; anything else wrong is refused naming the line", arguments: [
        ("POSTERN-DROP 1\nF a@b.example\n", nil as Int?),
        ("POSTERN-DROP 2\nF a@b.example\nR c@d.example\n\n", 1),
        ("POSTERN-DROP 1\nR c@d.example\n\n", 2),
        ("POSTERN-DROP 1\nF a@b.example\n\n", 3),
        ("POSTERN-DROP 1\nF a@b.example\nR not an address\n\n", 3),
        ("POSTERN-DROP 1\nF a@b.example\nX c@d.example\n\n", 3),
        ("POSTERN-DROP 1\nF a@b.example\nR c@d.example\nF e@f.example\n\n", 4),
    ])
    func refusals(text: String, line: Int?) {
        switch DropEnvelope.parse(Array(text.utf8)[...]) {
        case .needMore: #expect(line == nil)
        case .invalid(let p):
            if let l = line { #expect(p.text.contains("line \(l)"), "\(p)") } else { Issue.record("\(p)") }
        case .envelope: Issue.record("accepted: \(text)")
        }
    }
}

@Suite("Received: of a local submission (issue 9 item 2)")
struct LocalReceivedTests {
    @Test("by host (Postern, from userid N name, pid P) — no From clause, as Postfix's sendmail")
    func socket() {
        var info = ReceivedHeaderTests.info(recipient: nil)
        info.local = LocalSender(uid: 1000, user: "alice", pid: 4242)
        let h = String(decoding: TraceHeader.received(info), as: UTF8.self)
        #expect(h == "Received: by mx.test (Postern, from userid 1000 alice, pid 4242)\r\n\twith ESMTP id 00000000000000a1; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test("A drop file's owner: via maildrop; a hostile user name cannot break the comment")
    func maildrop() {
        var info = ReceivedHeaderTests.info(recipient: nil)
        info.local = LocalSender(uid: 7, user: "a)b\r\nX: y", pid: nil)
        let h = String(decoding: TraceHeader.received(info), as: UTF8.self)
        #expect(h.hasPrefix("Received: by mx.test (Postern, from userid 7 a?b??X??y, via maildrop)\r\n"))
    }
}

extension String {
    var trimmingSpaces: String {
        var b = Array(utf8)[...]
        while b.first == 32 { b = b.dropFirst() }
        while b.last == 32 { b = b.dropLast() }
        return String(decoding: b, as: UTF8.self)
    }
}
