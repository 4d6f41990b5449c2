import Testing
@testable import PosternCore

/// A scripted conversation with the receiver machine: `send("MAIL FROM:<a@b>")`
/// feeds one command line, `expect(250, "2.1.0")` checks the reply it produced.
///
/// Every reply except the greeting, the replies to EHLO/HELO and 354 must carry an
/// enhanced status code whose class matches the reply code (RFC 2034 §3, RFC 3463
/// §2); `check` asserts that for every reply of every conversation.
struct ReceiverSession {
    var machine: SMTPReceiver
    /// Actions of the last event.
    var actions: [SMTPReceiver.Action] = []
    /// Every reply of the session, in order.
    var transcript: [Reply] = []

    static let hostname = "mx.test"

    static func settings(maxSize: Int = 1000, maxRecipients: Int = 3,
                         recipients: RecipientPolicy = .anyone, maxErrors: Int = 20) -> ReceiverSettings {
        var s = ReceiverSettings(hostname: hostname, maxMessageSize: maxSize, maxRecipients: maxRecipients,
                                 recipients: recipients)
        s.maxErrors = maxErrors
        return s
    }

    init(_ settings: ReceiverSettings = ReceiverSession.settings(), clientAllowed: Bool = true,
         clientText: String = "[127.0.0.1]", sourceLocation: SourceLocation = #_sourceLocation) {
        machine = SMTPReceiver(settings: settings)
        actions = machine.start(clientAllowed: clientAllowed, clientText: clientText)
        transcript += replies
    }

    /// Replies among the last actions.
    var replies: [Reply] {
        actions.compactMap { if case .reply(let r) = $0 { return r } else { return nil } }
    }

    var reply: Reply? { replies.last }

    var state: SMTPReceiver.Phase { machine.phase }

    mutating func send(_ line: String, sourceLocation: SourceLocation = #_sourceLocation) {
        actions = machine.receive(line: Array(line.utf8)[...])
        let verb = line.split(separator: " ").first.map { String($0).uppercased() } ?? ""
        let isHello = verb == "EHLO" || verb == "HELO"
        for r in replies where !(isHello && r.code == 250) { check(r, sourceLocation: sourceLocation) }
        transcript += replies
    }

    /// Applies an event other than a command line.
    mutating func event(_ actions: [SMTPReceiver.Action], sourceLocation: SourceLocation = #_sourceLocation) {
        self.actions = actions
        for r in replies { check(r, sourceLocation: sourceLocation) }
        transcript += replies
    }

    /// RFC 2034 §3: an enhanced code on every reply but greeting, EHLO/HELO and 354,
    /// and its class is the reply code's first digit (RFC 3463 §2).
    func check(_ r: Reply, sourceLocation: SourceLocation) {
        if r.code == 354 || r.code == 334 {
            // RFC 3463 has no class 3; RFC 4954 §4's continue-req is "334" SP base64.
            #expect(r.enhanced == nil, "\(r.code) carries no enhanced code", sourceLocation: sourceLocation)
            return
        }
        guard let e = r.enhanced else {
            Issue.record("reply \(r) has no enhanced status code (RFC 2034 §3)", sourceLocation: sourceLocation)
            return
        }
        #expect(ReplyParser.enhancedCode(in: e) == e, "\(e) is not class.subject.detail", sourceLocation: sourceLocation)
        #expect(e.first == "\(r.code / 100)".first, "class of \(e) does not match \(r.code)", sourceLocation: sourceLocation)
    }

    /// The last event produced exactly one reply with this code (and enhanced code).
    func expect(_ code: Int, _ enhanced: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(replies.count == 1, "expected one reply, got \(actions)", sourceLocation: sourceLocation)
        #expect(reply?.code == code, "got \(actions)", sourceLocation: sourceLocation)
        if let e = enhanced {
            #expect(reply?.enhanced == e, "got \(String(describing: reply))", sourceLocation: sourceLocation)
        }
    }

    /// Drives EHLO, MAIL, RCPT for each recipient and DATA, all accepted.
    mutating func openData(from: String = "<sender@example.org>", to: [String] = ["<rcpt@example.com>"],
                           sourceLocation: SourceLocation = #_sourceLocation) {
        send("EHLO client.test", sourceLocation: sourceLocation)
        expect(250, sourceLocation: sourceLocation)
        send("MAIL FROM:\(from)", sourceLocation: sourceLocation)
        expect(250, "2.1.0", sourceLocation: sourceLocation)
        for r in to {
            send("RCPT TO:\(r)", sourceLocation: sourceLocation)
            expect(250, "2.1.5", sourceLocation: sourceLocation)
        }
        send("DATA", sourceLocation: sourceLocation)
        expect(354, sourceLocation: sourceLocation)
        #expect(state == .receivingData, sourceLocation: sourceLocation)
    }
}

/// A mailbox the test knows to be valid.
func mb(_ s: String, sourceLocation: SourceLocation = #_sourceLocation) -> Mailbox {
    guard let m = Mailbox.parse(Array(s.utf8)[...], allowNull: true) else {
        Issue.record("test mailbox \(s) does not parse", sourceLocation: sourceLocation)
        return .null
    }
    return m
}

@Suite("Receiver greeting and EHLO/HELO (RFC 5321 §4.1.1.1, §4.2)")
struct ReceiverGreetingTests {
    @Test("The greeting is 220 with our host name and no enhanced code")
    func greeting() {
        let s = ReceiverSession()
        #expect(s.actions == [.reply(Reply(220, nil, "mx.test ESMTP Postern"))])
        #expect(s.state == .connected)
    }

    @Test("EHLO announces PIPELINING, SIZE n, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING, SMTPUTF8, DSN (RFC 2920, 1870, 6152, 2034, 3030, 6531, 3461)")
    func ehlo() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 12345))
        s.send("EHLO client.test")
        s.expect(250)
        #expect(s.reply == Reply(250, nil, ["mx.test", "PIPELINING", "SIZE 12345", "8BITMIME", "ENHANCEDSTATUSCODES",
                                            "CHUNKING", "SMTPUTF8", "DSN"]))
        #expect(String(decoding: s.reply!.encoded(), as: UTF8.self)
            == "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 12345\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250 DSN\r\n")
        #expect(s.state == .greeted)
    }

    @Test("HELO gets a single 250 line and no extensions")
    func helo() {
        var s = ReceiverSession()
        s.send("HELO client.test")
        #expect(s.actions == [.reply(Reply(250, nil, "mx.test"))])
        #expect(s.state == .greeted)
    }

    @Test("Verbs are case-insensitive (RFC 5321 §2.4)", arguments: ["ehlo client", "Ehlo client", "EHLO client"])
    func verbCase(line: String) {
        var s = ReceiverSession()
        s.send(line)
        s.expect(250)
        #expect(s.state == .greeted)
    }

    @Test("EHLO or HELO without a domain is a syntax error", arguments: ["EHLO", "EHLO ", "HELO", "HELO   "])
    func helloWithoutName(line: String) {
        var s = ReceiverSession()
        s.send(line)
        s.expect(501, "5.5.4")
        #expect(s.state == .connected)
    }

    @Test("An EHLO name with 8-bit or control bytes is refused: it would go into the Received: header (RFC 5321 §4.1.2)",
          arguments: [[0x45, 0x48, 0x4c, 0x4f, 0x20, 0xff, 0xfe], Array("HELO café.example".utf8), [0x45, 0x48, 0x4c, 0x4f, 0x20, 0x61, 0x7f]])
    func helloWithBadBytes(line: [UInt8]) {
        var s = ReceiverSession()
        s.actions = s.machine.receive(line: line[...])
        s.expect(501, "5.5.4")
        #expect(s.state == .connected)
        s.send("EHLO ESP32_cam-01")
        s.expect(250)
    }

    @Test("A second EHLO resets the transaction (RFC 5321 §4.1.4)")
    func ehloResets() {
        var s = ReceiverSession()
        s.send("EHLO a")
        s.send("MAIL FROM:<a@example.org>")
        s.expect(250, "2.1.0")
        s.send("EHLO b")
        s.expect(250)
        #expect(s.state == .greeted)
        s.send("RCPT TO:<b@example.com>")
        s.expect(503, "5.5.1")
    }
}

@Suite("Receiver mail transaction (RFC 5321 §3.3, §4.1.1.2–4)")
struct ReceiverTransactionTests {
    @Test("MAIL, RCPT, DATA: .startData(envelope) then 354; end of data commits; 250 only after commit (RFC 5321 §6.1)")
    func happyPath() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<sender@example.org>")
        s.expect(250, "2.1.0")
        #expect(s.state == .gotMail)
        s.send("RCPT TO:<one@example.com>")
        s.expect(250, "2.1.5")
        #expect(s.state == .gotRecipients)
        s.send("RCPT TO:<two@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        let envelope = Envelope(heloName: "client.test", esmtp: true, from: mb("sender@example.org"),
                                recipients: [mb("one@example.com"), mb("two@example.com")], eightBit: false)
        #expect(s.actions == [.startData(envelope), .reply(Reply(354, nil, "End data with <CR><LF>.<CR><LF>"))])
        #expect(s.state == .receivingData)

        s.event(s.machine.receiveText(count: 400))
        #expect(s.actions.isEmpty)
        s.event(s.machine.receiveEndOfData())
        #expect(s.actions == [.commitMessage], "no reply before the message is durable")
        #expect(s.state == .awaitingCommit)

        s.event(s.machine.committed(queueID: "00000000000000a1"))
        s.expect(250, "2.0.0")
        #expect(s.reply?.lines.first?.contains("00000000000000a1") == true)
        #expect(s.state == .greeted)
    }

    @Test("After a message the session takes another one")
    func secondMessage() {
        var s = ReceiverSession()
        s.openData()
        s.event(s.machine.receiveEndOfData())
        s.event(s.machine.committed(queueID: "1"))
        s.send("MAIL FROM:<>")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<x@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        #expect(e.from == .null)
        #expect(e.recipients == [mb("x@example.com")], "recipients of the first message are gone")
    }

    @Test("The envelope records HELO versus EHLO, BODY=8BITMIME and the null sender")
    func envelopeDetails() {
        var s = ReceiverSession()
        s.send("HELO old.client")
        s.send("MAIL FROM:<> BODY=8BITMIME")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<a@example.com>")
        s.send("DATA")
        #expect(s.actions.first == .startData(Envelope(heloName: "old.client", esmtp: false, from: .null,
                                                       recipients: [mb("a@example.com")], eightBit: true)))
    }

    @Test("BODY=7BIT is accepted and is not 8-bit; the value is case-insensitive", arguments: [
        ("BODY=7BIT", false), ("BODY=7bit", false), ("BODY=8bitmime", true),
    ])
    func bodyParameter(param: String, eightBit: Bool) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org> \(param)")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:<b@example.com>")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        #expect(e.eightBit == eightBit)
    }

    @Test("A recipient given twice is kept once; domains compare case-insensitively")
    func duplicateRecipients() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send("RCPT TO:<b@EXAMPLE.com>")
        s.expect(250, "2.1.5")
        s.send("RCPT TO:<B@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        // Local parts are case-sensitive (RFC 5321 §2.4): B@ is another mailbox.
        #expect(e.recipients == [mb("b@example.com"), mb("B@example.com")])
    }

    @Test("Pipelined commands are answered one by one, in order (RFC 2920 §3.1)")
    func pipelined() {
        var s = ReceiverSession(ReceiverSession.settings(recipients: RecipientPolicy(patterns: [.domain(Array("example.com".utf8))])))
        s.send("EHLO c")
        var codes: [Int] = []
        for line in ["MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>", "RCPT TO:<c@elsewhere.net>", "DATA"] {
            s.send(line)
            codes += s.replies.map { $0.code }
        }
        #expect(codes == [250, 250, 550, 354])
    }

    @Test("Tolerated argument forms: a space after the colon, no brackets")
    func tolerantPaths() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM: <a@example.org>")
        s.expect(250, "2.1.0")
        s.send("RCPT TO:b@example.com")
        s.expect(250, "2.1.5")
    }

    @Test("RSET clears the transaction and keeps the greeting (RFC 5321 §4.1.1.5)")
    func rset() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send("RSET")
        s.expect(250, "2.0.0")
        #expect(s.state == .greeted)
        s.send("RCPT TO:<b@example.com>")
        s.expect(503, "5.5.1")
        s.send("DATA")
        s.expect(503, "5.5.1")
        s.send("MAIL FROM:<a@example.org>")
        s.expect(250, "2.1.0")
    }

    @Test("RSET before EHLO is accepted but does not greet")
    func rsetBeforeEhlo() {
        var s = ReceiverSession()
        s.send("RSET")
        s.expect(250, "2.0.0")
        #expect(s.state == .connected)
        s.send("MAIL FROM:<a@example.org>")
        s.expect(503, "5.5.1")
    }

    @Test("NOOP is 250 in every state (RFC 5321 §4.1.1.9)")
    func noop() {
        var s = ReceiverSession()
        s.send("NOOP")
        s.expect(250, "2.0.0")
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("NOOP some argument")
        s.expect(250, "2.0.0")
        #expect(s.state == .gotMail)
    }

    @Test("VRFY is 252: not verified, but mail will be accepted (RFC 5321 §3.5.3)")
    func vrfy() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("VRFY root")
        s.expect(252)
        #expect(s.reply?.enhanced?.hasPrefix("2.") == true)
    }

    @Test("HELP is 214 (RFC 5321 §4.1.1.8)")
    func help() {
        var s = ReceiverSession()
        s.send("HELP")
        s.expect(214)
        #expect(s.reply?.enhanced?.hasPrefix("2.") == true)
    }

    @Test("QUIT is 221 and closes (RFC 5321 §4.1.1.10)")
    func quit() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("QUIT")
        #expect(s.actions == [.reply(Reply(221, "2.0.0", "Bye")), .close])
        #expect(s.state == .closed)
        s.send("NOOP")
        #expect(s.actions.isEmpty, "a closed session ignores lines")
    }

    @Test("QUIT in the middle of a transaction also closes")
    func quitInTransaction() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send("QUIT")
        #expect(s.actions.last == .close)
        s.expect(221, "2.0.0")
    }

    @Test("Lines that arrive while text is being received or committed are ignored")
    func linesDuringData() {
        var s = ReceiverSession()
        s.openData()
        s.send("QUIT")
        #expect(s.actions.isEmpty)
        #expect(s.state == .receivingData)
        s.event(s.machine.receiveEndOfData())
        s.send("QUIT")
        #expect(s.actions.isEmpty)
        #expect(s.state == .awaitingCommit)
    }

    @Test("The spool failing to store the message is 452 4.3.1, never a 5xx: the client keeps it")
    func commitFailed() {
        var s = ReceiverSession()
        s.openData()
        s.event(s.machine.receiveEndOfData())
        s.event(s.machine.commitFailed())
        s.expect(452, "4.3.1")
        #expect(s.state == .greeted)
        #expect(s.actions.contains { if case .rejected(command: "DATA", _) = $0 { return true } else { return false } })
    }

    @Test("committed() outside awaitingCommit does nothing")
    func committedOutOfPlace() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.event(s.machine.committed(queueID: "x"))
        #expect(s.actions.isEmpty)
        #expect(s.state == .greeted)
    }
}

@Suite("Receiver refusals (RFC 5321 §4.2.4, §4.3.2)")
struct ReceiverRefusalTests {
    @Test("Out-of-sequence commands get 503 5.5.1 and change nothing", arguments: [
        ([], "MAIL FROM:<a@example.org>", .connected),
        ([], "RCPT TO:<b@example.com>", .connected),
        ([], "DATA", .connected),
        (["EHLO c"], "RCPT TO:<b@example.com>", .greeted),
        (["EHLO c"], "DATA", .greeted),
        (["EHLO c", "MAIL FROM:<a@example.org>"], "MAIL FROM:<a@example.org>", .gotMail),
        (["EHLO c", "MAIL FROM:<a@example.org>"], "DATA", .gotMail),
        (["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>"], "MAIL FROM:<x@example.org>", .gotRecipients),
    ] as [([String], String, SMTPReceiver.Phase)])
    func outOfSequence(before: [String], line: String, state: SMTPReceiver.Phase) {
        var s = ReceiverSession()
        for l in before { s.send(l) }
        #expect(s.state == state)
        s.send(line)
        s.expect(503, "5.5.1")
        #expect(s.state == state, "a bad command never changes state")
        #expect(s.actions.first == .rejected(command: String(line.prefix(4)), reply: s.reply!))
    }

    @Test("Unknown commands get 500 5.5.2", arguments: ["FOO", "MAILFROM:<a@b>", "", " EHLO c", "XYZZY plugh"])
    func unknown(line: String) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send(line)
        s.expect(500, "5.5.2")
        #expect(s.state == .greeted)
    }

    @Test("Known but unimplemented commands get 502 (RFC 5321 §4.2.4)", arguments: ["EXPN staff", "STARTTLS", "AUTH PLAIN", "ETRN x", "TURN"])
    func notImplemented(line: String) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send(line)
        s.expect(502, "5.5.1")
    }

    @Test("A NUL byte in a command is refused")
    func nul() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("NOOP\u{0}x")
        s.expect(500, "5.5.2")
    }

    @Test("Framing errors: a line too long (RFC 5321 §4.5.3.1.4) and a bare CR/LF (§2.3.8)")
    func framingErrors() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.event(s.machine.receiveLineTooLong())
        s.expect(500, "5.5.2")
        s.event(s.machine.receiveBareLineEnding())
        s.expect(500, "5.5.2")
        #expect(s.state == .greeted)
    }

    @Test("MAIL and RCPT syntax errors", arguments: [
        ("MAIL TO:<a@example.org>", 501, "5.5.4"),
        ("MAIL <a@example.org>", 501, "5.5.4"),
        ("MAIL FROM:<a@@example.org>", 501, "5.1.7"),
        ("MAIL FROM:<a@example.org", 501, "5.1.7"),
        ("MAIL FROM:<a@example.org>SIZE=1", 501, "5.5.4"),
        ("MAIL FROM:<a@example.org> SIZE=abc", 501, "5.5.4"),
        ("MAIL FROM:<a@example.org> SIZE", 501, "5.5.4"),
        ("MAIL FROM:<a@example.org> BODY=BINARYMIME", 501, "5.5.4"),
        ("MAIL FROM:<a@example.org> AUTH=<>", 555, "5.5.4"),
        ("MAIL FROM:<a@example.org> FOO=bar", 555, "5.5.4"),
    ])
    func mailSyntax(line: String, code: Int, enhanced: String) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send(line)
        s.expect(code, enhanced)
        #expect(s.state == .greeted)
    }

    @Test("RCPT syntax errors", arguments: [
        ("RCPT FROM:<b@example.com>", 501, "5.5.4"),
        ("RCPT TO:<>", 501, "5.1.3"),
        ("RCPT TO:<b@@example.com>", 501, "5.1.3"),
        ("RCPT TO:<b@example.com> XFORWARD=1", 555, "5.5.4"),
    ])
    func rcptSyntax(line: String, code: Int, enhanced: String) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send(line)
        s.expect(code, enhanced)
        #expect(s.state == .gotMail)
    }

    @Test("DATA, RSET and QUIT take no argument", arguments: ["DATA now", "RSET all", "QUIT please"])
    func noArguments(line: String) {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send(line)
        s.expect(501, "5.5.4")
        #expect(s.state == .gotRecipients)
    }
}

@Suite("Receiver limits (RFC 5321 §4.5.3.1, RFC 1870)")
struct ReceiverLimitTests {
    @Test("SIZE above the limit is refused at MAIL with 552 5.3.4 (RFC 1870 §6.1)")
    func sizeAtMail() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org> SIZE=1001")
        s.expect(552, "5.3.4")
        #expect(s.state == .greeted)
        s.send("MAIL FROM:<a@example.org> SIZE=1000")
        s.expect(250, "2.1.0")
    }

    @Test("A SIZE too large for any integer is refused as too large, 552 5.3.4, not a trap (RFC 1870 §3, §6.1)",
          arguments: ["2147483648", "99999999999", "9223372036854775808", "99999999999999999999"])
    func hugeSizeAtMail(size: String) {
        // RFC 1870 §3 allows 20 digits; on a 32-bit board even 11 overflow Int.
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org> SIZE=\(size)")
        s.expect(552, "5.3.4")
        #expect(s.state == .greeted)
    }

    @Test("Text beyond the limit aborts the spool transaction once, and end of data gets 552 5.3.4")
    func sizeAtEndOfData() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.openData()
        s.event(s.machine.receiveText(count: 600))
        #expect(s.actions.isEmpty)
        s.event(s.machine.receiveText(count: 400))
        #expect(s.actions.isEmpty, "exactly the limit is still fine")
        s.event(s.machine.receiveText(count: 1))
        #expect(s.actions == [.abortMessage])
        s.event(s.machine.receiveText(count: 5000))
        #expect(s.actions.isEmpty, "the abort is asked for once")
        s.event(s.machine.receiveEndOfData())
        s.expect(552, "5.3.4")
        #expect(!s.actions.contains(.commitMessage))
        #expect(s.state == .greeted)
        // A disconnect now has nothing left to abort.
        #expect(s.machine.disconnected() == [])
    }

    @Test("The size count starts again for each message")
    func sizeResets() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.openData()
        s.event(s.machine.receiveText(count: 900))
        s.event(s.machine.receiveEndOfData())
        s.event(s.machine.committed(queueID: "1"))
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send("DATA")
        s.event(s.machine.receiveText(count: 900))
        #expect(s.actions.isEmpty)
        s.event(s.machine.receiveEndOfData())
        #expect(s.actions == [.commitMessage])
    }

    @Test("Too many recipients: 452 4.5.3, and the accepted ones still go (RFC 5321 §4.5.3.1.10)")
    func tooManyRecipients() {
        var s = ReceiverSession(ReceiverSession.settings(maxRecipients: 3))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        for i in 1...3 {
            s.send("RCPT TO:<r\(i)@example.com>")
            s.expect(250, "2.1.5")
        }
        s.send("RCPT TO:<r4@example.com>")
        s.expect(452, "4.5.3")
        s.send("RCPT TO:<r2@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        #expect(e.recipients.count == 3)
    }

    @Test("Excess recipients keep the transaction: 452 4.5.3 each, not errors, until the overshoot limit (RFC 5321 §4.5.3.1.8, §4.5.3.1.10)")
    func excessRecipientsAreNotErrors() {
        // Issue 7: RCPT 121 used to get 421 and lose the 100 accepted recipients.
        var s = ReceiverSession(ReceiverSession.settings(maxRecipients: 100))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        for i in 1...100 { s.send("RCPT TO:<r\(i)@example.com>") }
        for i in 101...150 {
            s.send("RCPT TO:<r\(i)@example.com>")
            s.expect(452, "4.5.3")
        }
        #expect(s.state == .gotRecipients)
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        #expect(e.recipients.count == 100)
        #expect(e.recipients.first == mb("r1@example.com") && e.recipients.last == mb("r100@example.com"))
    }

    @Test("Beyond the overshoot limit each excess RCPT counts as an error, so a flood of RCPTs ends with 421")
    func recipientFloodEnds() {
        var settings = ReceiverSession.settings(maxRecipients: 2, maxErrors: 5)
        settings.recipientOvershootLimit = 10
        var s = ReceiverSession(settings)
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        var codes: [Int] = []
        for i in 1...40 where s.state != .closed {
            s.send("RCPT TO:<r\(i)@example.com>")
            codes += s.replies.map { $0.code }
        }
        // 2 accepted, 10 excess free of charge, then 5 errors: the fifth closes.
        #expect(codes == [250, 250] + Array(repeating: 452, count: 15) + [421])
        #expect(s.state == .closed)
    }

    @Test("A SIZE too large for any integer is 552 5.3.4, never a trap (RFC 1870 §6.1)", arguments: [
        "99999999999", "2147483648", "18446744073709551616", String(repeating: "9", count: 200),
    ])
    func hugeSize(size: String) {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org> SIZE=\(size)")
        s.expect(552, "5.3.4")
        #expect(s.state == .greeted)
        s.send("MAIL FROM:<a@example.org> SIZE=1000")
        s.expect(250, "2.1.0")
    }

    @Test("A message of exactly the limit is taken; one byte more is 552 5.3.4 (RFC 1870 §6.3)")
    func sizeBoundary() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        s.openData()
        s.event(s.machine.receiveText(count: 600))
        s.event(s.machine.receiveText(count: 400))
        #expect(s.actions.isEmpty)
        s.event(s.machine.receiveEndOfData())
        #expect(s.actions == [.commitMessage])
        var t = ReceiverSession(ReceiverSession.settings(maxSize: 1000))
        t.openData()
        t.event(t.machine.receiveText(count: 1000))
        t.event(t.machine.receiveText(count: 1))
        #expect(t.actions == [.abortMessage])
        t.event(t.machine.receiveText(count: Int.max))
        #expect(t.actions.isEmpty)
        t.event(t.machine.receiveEndOfData())
        #expect(t.replies.map { $0.code } == [552])
    }

    @Test("RFC 5321 §4.5.3.1.8: 100 recipients are accepted with the default limit")
    func hundredRecipients() {
        var s = ReceiverSession(ReceiverSession.settings(maxRecipients: Config().receiver.maxRecipients))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        for i in 1...100 {
            s.send("RCPT TO:<r\(i)@example.com>")
            s.expect(250, "2.1.5")
        }
    }

    @Test("A denied recipient gets 550 5.7.1; an allowed one is still accepted")
    func deniedRecipient() {
        let policy = RecipientPolicy(patterns: [.domain(Array("example.com".utf8))])
        var s = ReceiverSession(ReceiverSession.settings(recipients: policy))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<victim@elsewhere.net>")
        s.expect(550, "5.7.1")
        #expect(s.actions.first == .rejected(command: "RCPT", reply: s.reply!))
        #expect(s.state == .gotMail)
        s.send("RCPT TO:<ok@example.com>")
        s.expect(250, "2.1.5")
        s.send("DATA")
        guard case .startData(let e) = s.actions.first else {
            Issue.record("expected startData, got \(s.actions)")
            return
        }
        #expect(e.recipients == [mb("ok@example.com")])
    }

    @Test("DATA after every recipient was refused gets 554 5.5.1 (RFC 5321 §3.3)")
    func noValidRecipients() {
        let policy = RecipientPolicy(patterns: [.domain(Array("example.com".utf8))])
        var s = ReceiverSession(ReceiverSession.settings(recipients: policy))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<x@elsewhere.net>")
        s.send("RCPT TO:<y@elsewhere.net>")
        s.send("DATA")
        s.expect(554, "5.5.1")
        #expect(!s.actions.contains { if case .startData = $0 { return true } else { return false } })
        #expect(s.state == .gotMail)
    }

    @Test("RCPT TO:<Postmaster> is accepted whatever allow_recipients says (RFC 5321 §4.5.1 MUST)")
    func postmasterAlwaysAccepted() {
        let policy = RecipientPolicy(patterns: [.domain(Array("example.com".utf8))])
        var s = ReceiverSession(ReceiverSession.settings(recipients: policy))
        s.send("EHLO c")
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<Postmaster>")
        s.expect(250, "2.1.5")
    }

    @Test("A client outside allow_clients is greeted, then refused at MAIL with 550 5.7.1")
    func deniedClient() {
        var s = ReceiverSession(clientAllowed: false, clientText: "[192.0.2.9]")
        s.expect(220)
        s.send("EHLO c")
        s.expect(250)
        s.send("MAIL FROM:<a@example.org>")
        s.expect(550, "5.7.1")
        #expect(s.reply?.lines.first?.contains("[192.0.2.9]") == true)
        #expect(s.state == .greeted)
        s.send("RCPT TO:<b@example.com>")
        s.expect(503, "5.5.1")
    }

    @Test("A full spool answers MAIL with 452 4.3.1; mail is taken again once there is room")
    func spoolFull() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.machine.spoolAcceptsMail = false
        s.send("MAIL FROM:<a@example.org>")
        s.expect(452, "4.3.1")
        #expect(s.state == .greeted)
        s.machine.spoolAcceptsMail = true
        s.send("MAIL FROM:<a@example.org>")
        s.expect(250, "2.1.0")
    }

    @Test("Too many errors close the session with 421 (like Postfix's hard error limit)")
    func errorLimit() {
        var s = ReceiverSession(ReceiverSession.settings(maxErrors: 3))
        s.send("EHLO c")
        s.send("FOO")
        s.expect(500, "5.5.2")
        s.send("BAR")
        s.expect(500, "5.5.2")
        #expect(s.state == .greeted)
        s.send("BAZ")
        #expect(s.replies.map { $0.code } == [500, 421])
        #expect(s.replies.last?.enhanced == "4.7.0")
        #expect(s.actions.last == .close)
        #expect(s.state == .closed)
        s.send("NOOP")
        #expect(s.actions.isEmpty)
    }

    @Test("Refusals of every kind count toward the error limit")
    func errorLimitMixed() {
        var s = ReceiverSession(ReceiverSession.settings(maxErrors: 4))
        s.send("EHLO c")
        s.send("RCPT TO:<b@example.com>")       // 503
        s.send("MAIL FROM:<a@@b>")               // 501
        s.event(s.machine.receiveLineTooLong())  // 500
        #expect(s.state == .greeted)
        s.event(s.machine.receiveBareLineEnding())
        #expect(s.state == .closed)
        #expect(s.actions.last == .close)
    }

    @Test("Successful commands do not count toward the error limit")
    func errorLimitOnlyErrors() {
        var s = ReceiverSession(ReceiverSession.settings(maxErrors: 2))
        s.send("EHLO c")
        for _ in 0..<50 { s.send("NOOP") }
        s.send("FOO")
        #expect(s.state == .greeted)
    }
}

@Suite("Receiver timeouts, shutdown and disconnects (RFC 5321 §4.5.3.2, §3.8)")
struct ReceiverEndingTests {
    @Test("A silent client gets 421 4.4.2 and the connection closes")
    func timeout() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.event(s.machine.timedOut())
        #expect(s.replies.count == 1)
        #expect(s.reply?.code == 421)
        #expect(s.reply?.enhanced == "4.4.2")
        #expect(s.actions.last == .close)
        #expect(s.state == .closed)
    }

    @Test("A timeout during DATA aborts the open spool transaction first")
    func timeoutDuringData() {
        var s = ReceiverSession()
        s.openData()
        s.event(s.machine.timedOut())
        #expect(s.actions.count == 3)
        #expect(s.actions.first == .abortMessage)
        #expect(s.reply?.code == 421)
        #expect(s.actions.last == .close)
    }

    @Test("Shutdown says 421 and closes (RFC 5321 §3.8)")
    func shutdown() {
        var s = ReceiverSession()
        s.send("EHLO c")
        s.event(s.machine.shutdown())
        s.expect(421, "4.3.2")
        #expect(s.actions.last == .close)
        #expect(s.state == .closed)
    }

    @Test("A disconnect during DATA aborts the spool transaction; otherwise nothing to do")
    func disconnect() {
        var s = ReceiverSession()
        s.openData()
        #expect(s.machine.disconnected() == [.abortMessage])
        #expect(s.state == .closed)

        var t = ReceiverSession()
        t.send("EHLO c")
        t.send("MAIL FROM:<a@example.org>")
        #expect(t.machine.disconnected() == [])
        #expect(t.state == .closed)
    }

    @Test("State names for logs")
    func stateNames() {
        let states: [SMTPReceiver.Phase] = [.connected, .greeted, .gotMail, .gotRecipients, .receivingData, .awaitingCommit, .closed]
        #expect(states.map { $0.description } == ["connected", "greeted", "gotMail", "gotRecipients", "receivingData", "awaitingCommit", "closed"])
    }
}

@Suite("Receiver enhanced status codes on every reply (RFC 2034 §3)")
struct ReceiverEnhancedCodeTests {
    @Test("A long conversation: every reply but greeting, EHLO/HELO and 354 carries a matching enhanced code")
    func everyReply() {
        var s = ReceiverSession(ReceiverSession.settings(maxSize: 100, maxRecipients: 1,
                                                         recipients: RecipientPolicy(patterns: [.domain(Array("example.com".utf8))])))
        // `send` and `event` check every reply as they go; this drives as many kinds as possible.
        let script = [
            "NOOP", "MAIL FROM:<a@example.org>", "HELP", "VRFY x", "RSET", "EHLO", "FOO", "EXPN x",
            "EHLO c", "MAIL FROM:<a@example.org> SIZE=101", "MAIL FROM:<a@example.org> X=1", "MAIL FROM:<@>",
            "MAIL FROM:<a@example.org>", "MAIL FROM:<a@example.org>", "RCPT TO:<x@elsewhere.net>", "DATA",
            "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>", "RCPT TO:<>", "DATA x", "DATA",
        ]
        for line in script { s.send(line) }
        s.event(s.machine.receiveText(count: 101))
        s.event(s.machine.receiveEndOfData())
        s.send("MAIL FROM:<a@example.org>")
        s.send("RCPT TO:<b@example.com>")
        s.send("DATA")
        s.event(s.machine.receiveEndOfData())
        s.event(s.machine.committed(queueID: "q"))
        s.send("HELO c")
        s.send("QUIT")
        #expect(s.transcript.count >= 28)
        let codes = Set(s.transcript.map { $0.code })
        #expect(codes.isSuperset(of: [214, 220, 221, 250, 252, 354, 500, 501, 502, 503, 550, 552, 554, 555]))
    }
}
