import Testing
@testable import PosternCore

/// STARTTLS and AUTH in the sender machine (issue 8 items 1–3).
@Suite("Sender: STARTTLS and AUTH")
struct SenderSecurityTests {
    func session(_ security: SenderSecurity) -> SenderSession {
        var s = SenderSession()
        s.machine = SMTPSender(heloName: "postern.test", security: security)
        return s
    }

    /// The text of `.send` and `.sendSecret` actions together.
    func wire(_ actions: [SMTPSender.Action]) -> String {
        var out: [UInt8] = []
        for a in actions {
            switch a {
            case .send(let b), .sendSecret(let b): out += b
            default: break
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("RFC 3207 §4: STARTTLS after EHLO, then EHLO again over TLS with the capabilities learnt afresh")
    func startTLS() {
        var s = session(SenderSecurity(startTLS: true))
        s.upstream("220 mx.example ESMTP")
        s.upstream("250-mx.example", "250-PIPELINING", "250 STARTTLS")
        #expect(s.sent == "STARTTLS\r\n")
        #expect(!s.ready)
        s.upstream("220 2.0.0 Ready to start TLS")
        #expect(s.actions == [.startTLS])
        s.actions = s.machine.tlsEstablished()
        #expect(s.sent == "EHLO postern.test\r\n")
        #expect(s.machine.capabilities == Capabilities())
        s.upstream("250-mx.example", "250 8BITMIME")
        #expect(s.ready)
        #expect(s.machine.tlsActive)
        #expect(s.machine.capabilities.eightBitMIME && !s.machine.capabilities.pipelining)
    }

    @Test("RFC 3207 §4: an upstream that does not offer STARTTLS gets QUIT and nothing else")
    func noStartTLS() {
        var s = session(SenderSecurity(startTLS: true))
        s.upstream("220 mx.example ESMTP")
        s.upstream("250-mx.example", "250 PIPELINING")
        #expect(s.sent == "QUIT\r\n")
        #expect(s.failure == .tls("the upstream does not offer STARTTLS"))
        #expect(s.machine.isClosed)
    }

    @Test("STARTTLS refused (454) or EHLO refused: no fallback to plain text", arguments: [
        [["250-mx.example", "250 STARTTLS"], ["454 4.7.0 TLS not available"]],
        [["500 5.5.1 EHLO not understood"]],
    ])
    func startTLSRefused(replies: [[String]]) {
        var s = session(SenderSecurity(startTLS: true))
        s.upstream("220 mx.example ESMTP")
        for r in replies { s.upstream(lines: r) }
        if case .tls = s.failure {} else { Issue.record("expected a TLS failure, got \(String(describing: s.failure))") }
        #expect(!s.sent.contains("HELO"))
        #expect(s.machine.isClosed)
    }

    @Test("RFC 4954 §4 / RFC 4616: AUTH PLAIN with the initial response, then ready")
    func authPlain() {
        var s = session(SenderSecurity(implicitTLS: true, auth: .auto, username: "alerts@example.com"))
        s.upstream("220 smtp.example ESMTP")
        s.upstream("250-smtp.example", "250 AUTH LOGIN PLAIN XOAUTH2")
        #expect(s.actions == [.needSecret])
        let actions = s.machine.provideSecret(Array("app pass".utf8))
        #expect(wire(actions) == "AUTH PLAIN AGFsZXJ0c0BleGFtcGxlLmNvbQBhcHAgcGFzcw==\r\n")
        #expect(actions.allSatisfy { if case .send = $0 { return false } else { return true } }, "the secret goes as .sendSecret")
        s.upstream("235 2.7.0 Authentication successful")
        #expect(s.ready)
        #expect(s.machine.authenticatedWith == .plain)
    }

    @Test("AUTH LOGIN: user name and password each answer a 334 prompt")
    func authLogin() {
        var s = session(SenderSecurity(implicitTLS: true, auth: .login, username: "user"))
        s.upstream("220 smtp.example ESMTP")
        s.upstream("250-smtp.example", "250 AUTH=LOGIN")
        #expect(s.actions == [.needSecret])
        s.actions = s.machine.provideSecret(Array("secret".utf8))
        #expect(s.sent == "AUTH LOGIN\r\n")
        s.upstream("334 VXNlcm5hbWU6")
        #expect(s.sent == "dXNlcg==\r\n")
        s.upstream("334 UGFzc3dvcmQ6")
        #expect(wire(s.actions) == "c2VjcmV0\r\n")
        s.upstream("235 2.7.0 Authentication successful")
        #expect(s.ready)
    }

    @Test("XOAUTH2: the bearer token in Google's form; an error challenge gets an empty line, then the 535 ends it")
    func xoauth2() {
        var s = session(SenderSecurity(implicitTLS: true, auth: .xoauth2, username: "me@gmail.com"))
        s.upstream("220 smtp.gmail.com ESMTP")
        s.upstream("250-smtp.gmail.com", "250 AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN")
        let actions = s.machine.provideSecret(Array("ya29.tok".utf8))
        let expected = Base64.encode(Array("user=me@gmail.com\u{1}auth=Bearer ya29.tok\u{1}\u{1}".utf8))
        #expect(wire(actions) == "AUTH XOAUTH2 " + String(decoding: expected, as: UTF8.self) + "\r\n")
        let json = #"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#
        s.upstream("334 " + String(decoding: Base64.encode(Array(json.utf8)), as: UTF8.self))
        #expect(s.sent == "\r\n")
        s.upstream("535-5.7.8 Username and Password not accepted.", "535 5.7.8 https://support.google.com/mail/?p=BadCredentials")
        guard case .auth(let text) = s.failure else { Issue.record("no AUTH failure"); return }
        #expect(text.contains("refused the credentials"))
        #expect(text.contains(#""status":"400""#))
        #expect(s.sent == "QUIT\r\n")
    }

    @Test("RFC 4954 §6: 535 is an AUTH failure that closes the connection before any MAIL")
    func authRefused() {
        var s = session(SenderSecurity(startTLS: false, implicitTLS: true, auth: .plain, username: "u"))
        s.upstream("220 smtp.example ESMTP")
        s.upstream("250-smtp.example", "250 AUTH PLAIN")
        _ = s.machine.provideSecret([1, 2, 3])
        s.upstream("535 5.7.8 Authentication credentials invalid")
        #expect(s.failure == .auth("the upstream refused the credentials (535 5.7.8 Authentication credentials invalid)"))
        #expect(!s.sent.contains("MAIL"))
    }

    @Test("The mechanism comes from what the upstream offers; none usable is an AUTH failure naming what it offers")
    func mechanismChoice() {
        #expect(SASL.choose(.auto, offered: ["LOGIN", "PLAIN"]) == .success(.plain))
        #expect(SASL.choose(.auto, offered: ["LOGIN"]) == .success(.login))
        #expect(SASL.choose(.auto, offered: ["XOAUTH2"]) == .failure(.auth("the upstream offers neither AUTH PLAIN nor LOGIN (it offers AUTH XOAUTH2)")))
        #expect(SASL.choose(.xoauth2, offered: []) == .failure(.auth("the upstream does not offer AUTH XOAUTH2 (it offers no AUTH at all)")))
        var s = session(SenderSecurity(implicitTLS: true, auth: .auto, username: "u"))
        s.upstream("220 smtp.example ESMTP")
        s.upstream("250-smtp.example", "250 SIZE 100")
        #expect(s.sent == "QUIT\r\n")
        if case .auth = s.failure {} else { Issue.record("expected an AUTH failure") }
    }

    @Test("The secret could not be read: QUIT, and an AUTH failure with the reason")
    func secretUnavailable() {
        var s = session(SenderSecurity(implicitTLS: true, auth: .plain, username: "u"))
        s.upstream("220 smtp.example ESMTP")
        s.upstream("250-smtp.example", "250 AUTH PLAIN")
        s.actions = s.machine.secretUnavailable("password_file /x is readable by group or others")
        #expect(s.failure == .auth("password_file /x is readable by group or others"))
    }

    @Test("A reply while the TLS handshake or the secret is awaited is out of step")
    func unexpectedReplies() {
        var s = session(SenderSecurity(startTLS: true))
        s.upstream("220 mx.example ESMTP")
        s.upstream("250-mx.example", "250 STARTTLS")
        s.upstream("220 go ahead")
        s.upstream("250 injected")
        if case .protocolError = s.failure {} else { Issue.record("expected a protocol error") }
    }
}

@Suite("Base64 and SASL encodings")
struct Base64Tests {
    @Test("RFC 4648 §10 test vectors, both ways")
    func vectors() {
        let pairs = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                     ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, coded) in pairs {
            #expect(String(decoding: Base64.encode(Array(plain.utf8)), as: UTF8.self) == coded)
            #expect(Base64.decode(Array(coded.utf8)) == Array(plain.utf8))
        }
    }

    @Test("Malformed base64 is nil, never a trap", arguments: ["Z", "Zm9=v", "Zm9v===", "Zm$v", "====", "Zg="])
    func malformed(text: String) {
        #expect(Base64.decode(Array(text.utf8)) == nil)
    }

    @Test("The first line of a secret file: no line ending, no trailing blanks")
    func firstLine() {
        #expect(SASL.firstLine(Array("pass word \n2nd\n".utf8)[...]) == Array("pass word".utf8))
        #expect(SASL.firstLine(Array("tok\r\n".utf8)[...]) == Array("tok".utf8))
        #expect(SASL.firstLine([][...]) == [])
    }
}
