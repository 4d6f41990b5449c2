import Testing
@testable import PosternCore

@Suite("Receiver STARTTLS and require_tls (RFC 3207)")
struct ReceiverStartTLSTests {
    static func tlsSettings(require: Bool = false) -> ReceiverSettings {
        var s = ReceiverSession.settings()
        s.tlsAvailable = true
        s.requireTLS = require
        return s
    }

    static func keywords(_ r: Reply?) -> [String] {
        (r?.lines ?? []).dropFirst().map { String($0.split(separator: " ").first ?? "") }
    }

    @Test("RFC 3207 §4: STARTTLS is offered with a certificate, and only then")
    func offered() {
        var with = ReceiverSession(Self.tlsSettings())
        with.send("EHLO client.test")
        #expect(Self.keywords(with.reply).contains("STARTTLS"))
        var without = ReceiverSession()
        without.send("EHLO client.test")
        #expect(!Self.keywords(without.reply).contains("STARTTLS"))
        without.send("STARTTLS")
        without.expect(502, "5.5.1")
    }

    @Test("RFC 3207 §4 and §4.2: 220, then the session starts over: no EHLO name, no STARTTLS offered again")
    func accepted() {
        var s = ReceiverSession(Self.tlsSettings())
        s.send("EHLO before.tls")
        s.send("STARTTLS")
        #expect(s.actions == [.reply(Reply(220, "2.0.0", "Ready to start TLS")), .startTLS])
        #expect(s.state == .connected)
        #expect(s.machine.tlsActive)
        // §4.2: the EHLO before TLS is forgotten; MAIL needs a new one.
        s.send("MAIL FROM:<a@b.example>")
        s.expect(503, "5.5.1")
        s.send("EHLO after.tls")
        #expect(!Self.keywords(s.reply).contains("STARTTLS"))
        s.openData()
        #expect(s.machine.envelope?.tls == true)
        #expect(s.machine.envelope?.heloName == "client.test")
    }

    @Test("RFC 3207 §4: STARTTLS is allowed before EHLO too")
    func beforeEhlo() {
        var s = ReceiverSession(Self.tlsSettings())
        s.send("STARTTLS")
        #expect(s.actions.last == .startTLS)
    }

    @Test("RFC 3207 §4: a parameter is 501, a second STARTTLS 554, one inside a transaction 503")
    func refusals() {
        var s = ReceiverSession(Self.tlsSettings())
        s.send("EHLO client.test")
        s.send("STARTTLS now")
        s.expect(501, "5.5.4")
        s.send("MAIL FROM:<a@b.example>")
        s.send("STARTTLS")
        s.expect(503, "5.5.1")
        #expect(s.state == .gotMail)
        s.send("RSET")
        s.send("STARTTLS")
        #expect(s.actions.last == .startTLS)
        s.send("EHLO client.test")
        s.send("STARTTLS")
        s.expect(554, "5.5.1")
        #expect(!s.actions.contains(.startTLS))
    }

    @Test("An implicit-TLS session (listen_tls) has TLS from the start and is never offered STARTTLS")
    func implicitTLS() {
        var m = SMTPReceiver(settings: Self.tlsSettings(require: true))
        _ = m.start(clientAllowed: true, clientText: "[192.0.2.7]", tls: true)
        _ = m.receive(line: Array("EHLO cam".utf8)[...])
        let replies = m.receive(line: Array("MAIL FROM:<cam@lan.example>".utf8)[...])
        #expect(replies == [.reply(Reply(250, "2.1.0", "Ok"))])
        #expect(m.tlsActive)
    }

    @Test("RFC 3207 §4: require_tls refuses MAIL before TLS with 530 5.7.0, except for exempt (loopback) clients")
    func requireTLS() {
        var lan = SMTPReceiver(settings: Self.tlsSettings(require: true))
        _ = lan.start(clientAllowed: true, clientText: "[192.0.2.7]")
        _ = lan.receive(line: Array("EHLO cam".utf8)[...])
        let refused = lan.receive(line: Array("MAIL FROM:<cam@lan.example>".utf8)[...])
        #expect(refused.contains(.reply(Reply(530, "5.7.0", "Must issue a STARTTLS command first"))))
        _ = lan.receive(line: Array("STARTTLS".utf8)[...])
        _ = lan.receive(line: Array("EHLO cam".utf8)[...])
        #expect(lan.receive(line: Array("MAIL FROM:<cam@lan.example>".utf8)[...]) == [.reply(Reply(250, "2.1.0", "Ok"))])

        var local = SMTPReceiver(settings: Self.tlsSettings(require: true))
        _ = local.start(clientAllowed: true, clientText: "[127.0.0.1]", tlsExempt: true)
        _ = local.receive(line: Array("EHLO board".utf8)[...])
        #expect(local.receive(line: Array("MAIL FROM:<alarm@board>".utf8)[...]) == [.reply(Reply(250, "2.1.0", "Ok"))])
    }
}
