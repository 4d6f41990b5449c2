import Testing
@testable import PosternCore

/// base64 of the bytes, as a String.
private func b64(_ raw: [UInt8]) -> String { String(decoding: Base64.encode(raw), as: UTF8.self) }
private func b64(_ s: String) -> String { b64(Array(s.utf8)) }

/// RFC 4616 §2 message: authzid NUL authcid NUL passwd.
private func plain(_ authzid: String, _ authcid: String, _ passwd: String) -> [UInt8] {
    Array(authzid.utf8) + [0] + Array(authcid.utf8) + [0] + Array(passwd.utf8)
}

private func start(_ args: String) -> (SASLServer, SASLServer.Step) {
    SASLServer.start(arguments: Array(args.utf8)[...])
}

private func creds(_ user: String, _ password: String) -> SASLServer.Step {
    .credentials(user: Array(user.utf8), password: Array(password.utf8))
}

@Suite("AUTH PLAIN and LOGIN, receiver side (RFC 4954, RFC 4616)")
struct SASLServerTests {
    // MARK: PLAIN

    @Test("PLAIN with an initial response gives the credentials at once (RFC 4954 §4, RFC 4616 §2)")
    func plainInitialResponse() {
        let (m, step) = start("PLAIN " + b64(plain("", "bob", "s3cret")))
        #expect(step == creds("bob", "s3cret"))
        #expect(m.isFinished)
        #expect(m.mechanism == .plain)
    }

    @Test("The mechanism name is case-insensitive (RFC 4954 §3, RFC 4422 §3.1)", arguments: ["plain", "Plain", "pLaIn"])
    func mechanismCase(name: String) {
        #expect(start(name + " " + b64(plain("", "bob", "pw"))).1 == creds("bob", "pw"))
    }

    @Test("PLAIN without an initial response: 334 with an empty challenge, then the response line (RFC 4954 §4)")
    func plainContinuation() {
        var (m, step) = start("PLAIN")
        #expect(step == .reply(Reply(334, nil, "")))
        #expect(Reply(334, nil, "").encoded() == Array("334 \r\n".utf8))
        #expect(!m.isFinished)
        #expect(m.receive(line: Array(b64(plain("", "bob", "pw")).utf8)[...]) == creds("bob", "pw"))
        #expect(m.isFinished)
    }

    @Test("PLAIN with an authzid equal to the authcid is accepted (RFC 4616 §2)")
    func plainSameAuthzid() {
        #expect(start("PLAIN " + b64(plain("bob", "bob", "pw"))).1 == creds("bob", "pw"))
    }

    @Test("PLAIN with another authzid is refused 535 5.7.8: no acting as another user (RFC 4616 §2, RFC 4954 §6)")
    func plainOtherAuthzid() {
        let (m, step) = start("PLAIN " + b64(plain("alice", "bob", "pw")))
        #expect(step == .failed(SASLServer.authzidRefused))
        #expect(SASLServer.authzidRefused.code == 535 && SASLServer.authzidRefused.enhanced == "5.7.8")
        #expect(m.isFinished)
        // Case matters: "Bob" is not "bob".
        #expect(start("PLAIN " + b64(plain("Bob", "bob", "pw"))).1 == .failed(SASLServer.authzidRefused))
    }

    @Test("PLAIN initial response '=' is an empty response (RFC 4954 §4), which is malformed PLAIN (RFC 4616 §2)")
    func plainEquals() {
        #expect(start("PLAIN =").1 == .failed(SASLServer.malformed))
    }

    /// Decoded PLAIN messages that RFC 4616 §2 does not allow.
    static let malformedPlain: [[UInt8]] = {
        let bob: [UInt8] = Array("bob".utf8), pw: [UInt8] = Array("pw".utf8)
        var m: [[UInt8]] = []
        m.append([])                                       // empty
        m.append(bob)                                      // no NUL
        m.append(bob + [0] + pw)                           // one NUL
        m.append([0, 0])                                   // empty authcid and passwd
        m.append([0] + bob + [0])                          // empty passwd
        m.append([0, 0] + pw)                              // empty authcid
        m.append([0] + bob + [0, 112, 0, 119])             // NUL in passwd
        m.append([0] + bob + [0] + pw + [0])               // trailing NUL
        m.append([0, 0xFF, 0xFE, 0] + pw)                  // authcid not UTF-8
        m.append([0, 0xC0, 0xAF, 0] + pw)                  // overlong UTF-8
        m.append([0, 0xED, 0xA0, 0x80, 0] + pw)            // a surrogate
        m.append([0xFF, 0] + bob + [0] + pw)               // authzid not UTF-8
        let long = [UInt8](repeating: 98, count: 256)
        m.append([0] + long + [0] + pw)                    // authcid of 256
        m.append([0] + bob + [0] + long)                   // passwd of 256
        m.append(long + [0] + bob + [0] + pw)              // authzid of 256
        return m
    }()

    @Test("Malformed PLAIN messages get 501 5.5.2 (RFC 4616 §2)", arguments: malformedPlain)
    func plainMalformed(message: [UInt8]) {
        // RFC 4954 §4: an empty initial response is sent as "=".
        let response = message.isEmpty ? "=" : b64(message)
        let (m, step) = SASLServer.start(arguments: Array(("PLAIN " + response).utf8)[...])
        #expect(step == .failed(SASLServer.malformed))
        #expect(m.isFinished)
        // The same through the continuation line.
        var (m2, first) = start("PLAIN")
        #expect(first == .reply(Reply(334, nil, "")))
        #expect(m2.receive(line: Array(b64(message).utf8)[...]) == .failed(SASLServer.malformed))
        #expect(m2.isFinished)
    }

    @Test("PLAIN fields of exactly 255 octets are accepted (RFC 4616 §2: MUST accept up to 255)")
    func plainLimits() {
        let u = String(repeating: "u", count: 255), p = String(repeating: "p", count: 255)
        #expect(start("PLAIN " + b64(plain(u, u, p))).1 == creds(u, p))
    }

    @Test("A UTF-8 authcid and a non-UTF-8 password reach the caller as bytes (RFC 4616 §2)")
    func plainBytes() {
        let message = [0] + Array("jörg".utf8) + [0] + [0xE9, 0x74, 0xE9]
        #expect(start("PLAIN " + b64(message)).1 == .credentials(user: Array("jörg".utf8), password: [0xE9, 0x74, 0xE9]))
    }

    // MARK: LOGIN

    @Test("LOGIN: 334 Username:, 334 Password:, then the credentials (draft-murchison-sasl-login)")
    func login() {
        var (m, step) = start("LOGIN")
        #expect(step == .reply(Reply(334, nil, "VXNlcm5hbWU6")))
        #expect(Base64.decode(Array("VXNlcm5hbWU6".utf8)) == Array("Username:".utf8))
        #expect(m.mechanism == .login)
        #expect(m.receive(line: Array(b64("bob").utf8)[...]) == .reply(Reply(334, nil, "UGFzc3dvcmQ6")))
        #expect(Base64.decode(Array("UGFzc3dvcmQ6".utf8)) == Array("Password:".utf8))
        #expect(!m.isFinished)
        #expect(m.receive(line: Array(b64("s3cret").utf8)[...]) == creds("bob", "s3cret"))
        #expect(m.isFinished)
        #expect(m.receive(line: Array(b64("again").utf8)[...]) == .failed(SASLServer.notInProgress))
    }

    @Test("LOGIN with the user name as initial response goes straight to Password: (RFC 4954 §4)")
    func loginInitialResponse() {
        var (m, step) = start("login " + b64("bob"))
        #expect(step == .reply(Reply(334, nil, "UGFzc3dvcmQ6")))
        #expect(m.receive(line: Array(b64("pw").utf8)[...]) == creds("bob", "pw"))
    }

    @Test("LOGIN: an empty, over-long or NUL-holding user name or password is 501 5.5.2")
    func loginMalformed() {
        #expect(start("LOGIN =").1 == .failed(SASLServer.malformed))
        var (m, _) = start("LOGIN")
        #expect(m.receive(line: [][...]) == .failed(SASLServer.malformed), "an empty line is an empty response")
        #expect(m.isFinished)
        (m, _) = start("LOGIN")
        #expect(m.receive(line: Array(b64([98, 0, 98]).utf8)[...]) == .failed(SASLServer.malformed))
        (m, _) = start("LOGIN " + b64(String(repeating: "u", count: 256)))
        #expect(m.isFinished)
        (m, _) = start("LOGIN " + b64("bob"))
        #expect(m.receive(line: [][...]) == .failed(SASLServer.malformed))
        (m, _) = start("LOGIN " + b64("bob"))
        #expect(m.receive(line: Array(b64([112, 0]).utf8)[...]) == .failed(SASLServer.malformed))
        (m, _) = start("LOGIN " + b64("bob"))
        #expect(m.receive(line: Array(b64(String(repeating: "p", count: 256)).utf8)[...]) == .failed(SASLServer.malformed))
        (m, _) = start("LOGIN " + b64("bob"))
        #expect(m.receive(line: Array(b64(String(repeating: "p", count: 255)).utf8)[...])
                == creds("bob", String(repeating: "p", count: 255)))
    }

    // MARK: the AUTH command

    @Test("An unknown mechanism gets 504 5.5.4 (RFC 4954 §4)", arguments: ["CRAM-MD5", "XOAUTH2", "GSSAPI x", "PLAINX", "PLAI", "LOGIN-", "\u{0}"])
    func unknownMechanism(args: String) {
        let (m, step) = start(args)
        #expect(step == .failed(Reply(504, "5.5.4", "Unrecognized authentication type; use PLAIN or LOGIN")))
        #expect(m.isFinished)
        #expect(m.mechanism == nil)
    }

    @Test("AUTH with no mechanism or more than one initial response is 501 5.5.4 (RFC 4954 §4 syntax)",
          arguments: ["", " ", "\t", "PLAIN a b", "LOGIN Ym9i Ym9i", "FOO a b"])
    func syntax(args: String) {
        #expect(start(args).1 == .failed(SASLServer.syntax))
    }

    @Test("Blanks around and between the words are tolerated (as Postfix does)")
    func blanks() {
        #expect(start("  PLAIN \t " + b64(plain("", "bob", "pw")) + " ").1 == creds("bob", "pw"))
        #expect(start(" LOGIN ").1 == .reply(SASLServer.usernamePrompt))
    }

    @Test("An initial response that is not base64 gets 501 5.5.2 (RFC 4954 §4)")
    func badInitialResponse() {
        #expect(start("PLAIN Ym9i!").1 == .failed(SASLServer.invalidBase64))
        #expect(start("LOGIN Ym9").1 == .failed(SASLServer.invalidBase64))
        #expect(start("PLAIN ==").1 == .failed(SASLServer.invalidBase64))
        #expect(start("PLAIN *").1 == .failed(SASLServer.invalidBase64), "'*' cancels only as a response line")
    }

    @Test("An AUTH line of more than 12,288 octets with its CRLF is 500 5.5.6 (RFC 4954 §4, §6)")
    func longCommand() {
        // "AUTH " + args + CRLF = 12,288 exactly: accepted as far as length goes.
        let fits = "PLAIN " + String(repeating: "A", count: 12_288 - 7 - 6)
        #expect(start(fits).1 == .failed(SASLServer.malformed) || start(fits).1 == .failed(SASLServer.invalidBase64))
        #expect(start(fits).1 != .failed(SASLServer.lineTooLong))
        #expect(start(fits + "A").1 == .failed(SASLServer.lineTooLong))
        #expect(SASLServer.lineTooLong.code == 500 && SASLServer.lineTooLong.enhanced == "5.5.6")
    }

    // MARK: response lines

    @Test("'*' alone cancels: 501 5.7.0 and the exchange ends (RFC 4954 §4)")
    func cancel() {
        var (m, _) = start("PLAIN")
        #expect(m.receive(line: Array("*".utf8)[...]) == .failed(Reply(501, "5.7.0", "Authentication aborted")))
        #expect(m.isFinished)
        (m, _) = start("LOGIN")
        #expect(m.receive(line: Array(b64("bob").utf8)[...]) == .reply(SASLServer.passwordPrompt))
        #expect(m.receive(line: Array("*".utf8)[...]) == .failed(SASLServer.cancelled))
        #expect(m.isFinished)
        // "**" or "* " is not a cancel, and not base64 either.
        (m, _) = start("LOGIN")
        #expect(m.receive(line: Array("* ".utf8)[...]) == .failed(SASLServer.invalidBase64))
    }

    @Test("A response that is not strict base64 is 501 5.5.2 and ends the exchange (RFC 4954 §4, RFC 4648 §3)",
          arguments: [
            "Ym9i ",          // trailing blank
            " Ym9i",          // leading blank
            "Ym 9i",          // blank inside
            "Ym9i\r",         // a CR
            "Ym9i\r\nYm9i",   // CRLF inside the line
            "Ym9\n",          // an LF
            "Ym9",            // no padding (RFC 4648 §3.2)
            "Yg",             // no padding
            "Yg=",            // short padding
            "Yg===",          // too much padding
            "=Ym9",           // padding first
            "Ym=i",           // padding inside
            "Yh==",           // non-zero pad bits (RFC 4648 §3.5)
            "Ym9=",           // non-zero pad bits
            "Ym9i=",          // length not a multiple of 4
            "=",              // "=" is empty only as an initial response
            "Ym9i\u{0}",      // NUL
            "Ym9-",           // base64url
            "Ym9_",
            "Ym9ißß",         // non-ASCII
          ])
    func badBase64(line: String) {
        var (m, _) = start("LOGIN")
        #expect(m.receive(line: Array(line.utf8)[...]) == .failed(SASLServer.invalidBase64))
        #expect(m.isFinished)
        (m, _) = start("PLAIN")
        #expect(m.receive(line: Array(line.utf8)[...]) == .failed(SASLServer.invalidBase64))
    }

    @Test("A response line of more than 12,288 octets with its CRLF is 500 5.5.6 and ends the exchange (RFC 4954 §4)")
    func longLine() {
        var (m, _) = start("PLAIN")
        let fits = [UInt8](repeating: 65, count: 12_286)   // + CRLF = 12,288
        #expect(m.receive(line: fits[...]) != .failed(SASLServer.lineTooLong))
        (m, _) = start("PLAIN")
        #expect(m.receive(line: (fits + [65])[...]) == .failed(SASLServer.lineTooLong))
        #expect(m.isFinished)
        (m, _) = start("LOGIN")
        #expect(m.receiveTooLongLine() == .failed(SASLServer.lineTooLong), "the framer's .tooLong")
        #expect(m.isFinished)
        #expect(m.receiveTooLongLine() == .failed(SASLServer.notInProgress))
        (m, _) = start("PLAIN")
        #expect(m.receive(line: [UInt8](repeating: 0, count: 100_000)[...]) == .failed(SASLServer.lineTooLong))
    }

    @Test("A line after a failure or the credentials is 503 5.5.1, never a trap")
    func afterTheEnd() {
        var (m, step) = start("CRAM-MD5")
        #expect(step.isFailed)
        #expect(m.receive(line: Array(b64(plain("", "bob", "pw")).utf8)[...]) == .failed(SASLServer.notInProgress))
    }

    // MARK: secrets and replies

    @Test("No description shows the password (issue 12: credentials never reach a log)")
    func descriptions() {
        let step = creds("bob", "hunter2")
        #expect(step.description == "credentials user=bob password=********")
        #expect(!"\(step)".contains("hunter2"))
        var (m, _) = start("LOGIN " + b64("bob"))
        _ = m.receive(line: Array(b64("hunter2").utf8)[...])
        #expect(m.state == .finished, "the machine keeps nothing after handing out the password")
        #expect(m.description == "AUTH LOGIN finished")
        (m, _) = start("LOGIN " + b64("bob"))
        #expect(m.description == "AUTH LOGIN sentPasswordPrompt", "no user name either")
        #expect(start("PLAIN").0.description == "AUTH PLAIN sentPlainChallenge")
        #expect(start("XOAUTH2").0.description == "AUTH none finished")
    }

    @Test("The caller's replies: 235 2.7.0, 535 5.7.8, 454 4.7.0 (RFC 4954 §6)")
    func callerReplies() {
        #expect(SASLServer.succeeded.encoded() == Array("235 2.7.0 Authentication successful\r\n".utf8))
        #expect(SASLServer.credentialsInvalid.encoded() == Array("535 5.7.8 Error: authentication failed\r\n".utf8))
        #expect(SASLServer.temporaryFailure.encoded() == Array("454 4.7.0 Temporary authentication failure\r\n".utf8))
    }

    // MARK: the strict decoder

    @Test("The strict base64 decoder accepts exactly the canonical padded encodings (RFC 4648 §4, §3.5)")
    func strictDecoder() {
        for n in 0..<40 {
            let raw = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decodeStrict(Base64.encode(raw)) == raw)
        }
        #expect(Base64.decodeStrict([UInt8]()) == [])
        #expect(Base64.decodeStrict(Array("AA==".utf8)) == [0])
        #expect(Base64.decodeStrict(Array("AB==".utf8)) == nil)
        #expect(Base64.decodeStrict(Array("AAA=".utf8)) == [0, 0])
        #expect(Base64.decodeStrict(Array("AAB=".utf8)) == nil)
        #expect(Base64.decodeStrict(Array("////".utf8)) == [255, 255, 255])
        #expect(Base64.decodeStrict(Array("====".utf8)) == nil)
        #expect(Base64.decodeStrict(Array("A===".utf8)) == nil)
    }

    @Test("UTF-8 validation follows RFC 3629 §4")
    func utf8() {
        #expect(SASLServer.isValidUTF8(Array("jörg €𝄞".utf8)))
        #expect(SASLServer.isValidUTF8([UInt8]()))
        #expect(!SASLServer.isValidUTF8([0xC3]))                   // truncated
        #expect(!SASLServer.isValidUTF8([0xE0, 0x80, 0x80]))       // overlong
        #expect(!SASLServer.isValidUTF8([0xED, 0xBF, 0xBF]))       // surrogate
        #expect(!SASLServer.isValidUTF8([0xF4, 0x90, 0x80, 0x80])) // above U+10FFFF
        #expect(!SASLServer.isValidUTF8([0x80]))                   // lone continuation
        #expect(!SASLServer.isValidUTF8([0xF8, 0x88, 0x80, 0x80, 0x80]))
        #expect(SASLServer.isValidUTF8([0xF4, 0x8F, 0xBF, 0xBF]))  // U+10FFFF
    }
}

extension SASLServer.Step {
    var isFailed: Bool { if case .failed = self { true } else { false } }
}
