import Testing
@testable import PosternCore

/// The machine's side of AUTH (RFC 4954; issue 12 item 2): when it is
/// offered, what each refusal is, and how the verdict of the connection's
/// password check becomes the reply. The exchange itself is `SASLServer`'s
/// (SASLServerTests).
@Suite("Receiver AUTH (RFC 4954)")
struct ReceiverAuthTests {
    /// base64 of "\0alice\0secret" (RFC 4616 §2).
    static let plainAlice = "AGFsaWNlAHNlY3JldA=="

    static func authSettings(tls: Bool = false) -> ReceiverSettings {
        var s = ReceiverSession.settings()
        s.authAvailable = true
        s.tlsAvailable = tls
        return s
    }

    /// A session from a LAN client (`tlsExempt` false) or from loopback.
    static func session(loopback: Bool = true, allowed: Bool = true, tls: Bool = false) -> ReceiverSession {
        var s = ReceiverSession(authSettings(tls: tls), clientAllowed: allowed,
                                clientText: loopback ? "[127.0.0.1]" : "[192.0.2.7]")
        s.machine = SMTPReceiver(settings: authSettings(tls: tls))
        s.actions = s.machine.start(clientAllowed: allowed, clientText: loopback ? "[127.0.0.1]" : "[192.0.2.7]",
                                    tlsExempt: loopback)
        return s
    }

    static func keywords(_ r: Reply?) -> [String] { (r?.lines ?? []).dropFirst().map { String($0) } }

    @Test("RFC 4954 §3: AUTH PLAIN LOGIN is offered on loopback, after STARTTLS, and not to a LAN client in the clear")
    func offered() {
        var local = Self.session()
        local.send("EHLO board")
        #expect(Self.keywords(local.reply).contains("AUTH PLAIN LOGIN"))
        var lan = Self.session(loopback: false, tls: true)
        lan.send("EHLO cam")
        #expect(!Self.keywords(lan.reply).contains("AUTH PLAIN LOGIN"))
        // RFC 4954 §6: 538 5.7.11, encryption required.
        lan.send("AUTH PLAIN \(Self.plainAlice)")
        lan.expect(538, "5.7.11")
        lan.send("STARTTLS")
        lan.send("EHLO cam")
        #expect(Self.keywords(lan.reply).contains("AUTH PLAIN LOGIN"))
        var none = ReceiverSession()
        none.send("EHLO board")
        #expect(!Self.keywords(none.reply).contains("AUTH PLAIN LOGIN"))
        none.send("AUTH PLAIN \(Self.plainAlice)")
        none.expect(502, "5.5.1")
    }

    @Test("RFC 4954 §4: credentials are checked by the connection; no line is taken meanwhile; a match is 235")
    func success() {
        var s = Self.session()
        s.send("EHLO board")
        s.send("AUTH PLAIN \(Self.plainAlice)")
        #expect(s.actions == [.checkCredentials])
        #expect(s.machine.isAwaitingAuth)
        #expect(s.machine.receive(line: Array("NOOP".utf8)[...]).isEmpty)
        let taken = s.machine.takeCredentials()
        #expect(taken?.user == Array("alice".utf8) && taken?.password == Array("secret".utf8))
        #expect(s.machine.takeCredentials() == nil, "handed out once")
        s.event(s.machine.authChecked(.match))
        #expect(s.actions.first == .authSucceeded(user: "alice", mechanism: "PLAIN"))
        s.expect(235, "2.7.0")
        #expect(!s.machine.isAwaitingAuth && s.machine.authenticatedUser == "alice")
        // RFC 4954 §4: no second AUTH.
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.expect(503, "5.5.1")
    }

    @Test("RFC 4954 §6: a mismatch is 535 5.7.8, logged and delayed through .authFailed; a check that cannot run is 454")
    func failures() {
        var s = Self.session()
        s.send("EHLO board")
        s.send("AUTH LOGIN YWxpY2U=")
        s.expect(334, nil)
        s.send("d3Jvbmc=")
        #expect(s.actions == [.checkCredentials])
        s.event(s.machine.authChecked(.mismatch))
        #expect(s.actions.first == .authFailed(user: "alice", reply: SASLServer.credentialsInvalid))
        s.expect(535, "5.7.8")
        #expect(s.machine.authenticatedUser == nil)
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.event(s.machine.authChecked(.unavailable))
        s.expect(454, "4.7.0")
        #expect(!s.actions.contains { if case .authFailed = $0 { return true } else { return false } })
        // RFC 4616 §2: an authzid other than the authcid, counted like a wrong password.
        s.send("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==")
        #expect(s.actions.first == .authFailed(user: nil, reply: SASLServer.authzidRefused))
    }

    @Test("RFC 4954 §4: AUTH before EHLO and inside a transaction is 503; a locked-out client gets 454 at once")
    func sequence() {
        var s = Self.session()
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.expect(503, "5.5.1")
        s.send("EHLO board")
        s.send("MAIL FROM:<a@b.example>")
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.expect(503, "5.5.1")
        s.send("RSET")
        s.machine.authLockedOut = true
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.expect(454, "4.7.0")
        #expect(!s.actions.contains(.checkCredentials))
    }

    @Test("With auth_users, a client outside allow_clients needs AUTH before MAIL (530 5.7.0), and relays after it")
    func relayNeedsAuth() {
        var s = Self.session(allowed: false)
        s.send("EHLO cam")
        s.send("MAIL FROM:<cam@lan.example>")
        s.expect(530, "5.7.0")
        s.send("AUTH PLAIN \(Self.plainAlice)")
        _ = s.machine.takeCredentials()
        s.event(s.machine.authChecked(.match))
        s.openData()
        #expect(s.machine.envelope?.authUser == "alice")
        // Without auth_users the refusal stays 550 5.7.1.
        var plain = ReceiverSession(clientAllowed: false)
        plain.send("EHLO cam")
        plain.send("MAIL FROM:<cam@lan.example>")
        plain.expect(550, "5.7.1")
    }

    @Test("RFC 4954 §4: '*' cancels with 501 5.7.0; a line over the framer's limit ends the exchange with 500 5.5.6; STARTTLS forgets AUTH")
    func cancelAndLimits() {
        var s = Self.session(tls: true)
        s.send("EHLO board")
        s.send("AUTH PLAIN")
        s.expect(334, nil)
        s.send("*")
        s.expect(501, "5.7.0")
        s.send("AUTH LOGIN")
        s.event(s.machine.receiveLineTooLong())
        s.expect(500, "5.5.6")
        s.send("NOOP")
        s.expect(250, "2.0.0")
        // An AUTH line may be longer than 512 octets (RFC 4954 §4).
        s.send("AUTH PLAIN " + String(repeating: "A", count: 600))
        #expect(s.reply?.code == 501)
        s.send("AUTH PLAIN \(Self.plainAlice)")
        _ = s.machine.takeCredentials()
        s.event(s.machine.authChecked(.match))
        s.send("STARTTLS")
        #expect(s.machine.authenticatedUser == nil, "RFC 3207 §4.2")
    }

    @Test("A session that ends mid-check drops the verdict; credentials not taken are forgotten")
    func endsMidCheck() {
        var s = Self.session()
        s.send("EHLO board")
        s.send("AUTH PLAIN \(Self.plainAlice)")
        s.event(s.machine.timedOut())
        #expect(s.machine.isClosed && !s.machine.isAwaitingAuth)
        #expect(s.machine.takeCredentials() == nil)
        #expect(s.machine.authChecked(.match).isEmpty)
        #expect(s.machine.authenticatedUser == nil)
    }

    @Test("RFC 4954 §5: MAIL's AUTH= parameter is taken (<> or xtext) where AUTH is offered, and refused when malformed")
    func mailAuthParameter() {
        var s = Self.session()
        s.send("EHLO board")
        s.send("MAIL FROM:<a@b.example> AUTH=<>")
        s.expect(250, "2.1.0")
        s.send("RSET")
        s.send("MAIL FROM:<a@b.example> AUTH=alice+40b.example")
        s.expect(250, "2.1.0")
        s.send("RSET")
        s.send("MAIL FROM:<a@b.example> AUTH=bad+zz")
        s.expect(501, "5.5.4")
        s.send("MAIL FROM:<a@b.example> AUTH=<> AUTH=<>")
        s.expect(555, "5.5.4")
    }
}
