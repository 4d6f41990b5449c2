import Testing
@testable import PosternCore

/// A scripted conversation with the sender machine: `upstream("250 2.1.0 Ok")`
/// feeds one reply (parsed from its wire lines, as the connection does) and the
/// actions it produced are checked with `sent`, `outcomes` and friends.
struct SenderSession {
    var machine = SMTPSender(heloName: "postern.test")
    var actions: [SMTPSender.Action] = []

    /// Feeds a reply given as its wire lines (without CRLF).
    mutating func upstream(_ lines: String..., sourceLocation: SourceLocation = #_sourceLocation) {
        upstream(lines: lines, sourceLocation: sourceLocation)
    }

    mutating func upstream(lines: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        var parser = ReplyParser()
        for (i, line) in lines.enumerated() {
            switch parser.feed(Array(line.utf8)[...]) {
            case .success(let r?):
                #expect(i == lines.count - 1, sourceLocation: sourceLocation)
                actions = machine.receive(r)
            case .success(nil):
                continue
            case .failure(let f):
                Issue.record("bad test reply \(line): \(f)", sourceLocation: sourceLocation)
            }
        }
    }

    /// Text of the `.send` actions of the last event, concatenated.
    var sent: String {
        var out: [UInt8] = []
        for a in actions { if case .send(let b) = a { out += b } }
        return String(decoding: out, as: UTF8.self)
    }

    /// Number of `.send` actions (one write each).
    var writes: Int { actions.filter { if case .send = $0 { return true } else { return false } }.count }

    var outcomes: [(index: Int, outcome: RecipientOutcome, code: Int)] {
        actions.compactMap {
            if case .recipient(let i, let o, let r) = $0 { return (i, o, r.code) } else { return nil }
        }
    }

    /// Outcomes as comparable text, e.g. "0:delivered:250".
    var outcomeList: [String] { outcomes.map { "\($0.index):\($0.outcome):\($0.code)" } }

    var done: Bool { actions.contains(.messageDone) }
    var ready: Bool { actions.contains(.ready) }
    /// The last event asked for the connection to close.
    var closed: Bool { actions.contains { if case .close = $0 { return true } else { return false } } }
    /// The failure given with that close (nil after a normal QUIT).
    var failure: SenderFailure? {
        for a in actions { if case .close(let f) = a { return f } }
        return nil
    }

    /// Greeting and EHLO with these keyword lines, ending `.ready`.
    mutating func connect(_ keywords: [String] = ["PIPELINING", "SIZE 10000", "8BITMIME"],
                          sourceLocation: SourceLocation = #_sourceLocation) {
        upstream("220 upstream.test ESMTP", sourceLocation: sourceLocation)
        #expect(sent == "EHLO postern.test\r\n", sourceLocation: sourceLocation)
        var lines = ["250" + (keywords.isEmpty ? " " : "-") + "upstream.test Hello"]
        for (i, k) in keywords.enumerated() { lines.append("250" + (i == keywords.count - 1 ? " " : "-") + k) }
        upstream(lines: lines, sourceLocation: sourceLocation)
        #expect(actions == [.ready], sourceLocation: sourceLocation)
        #expect(machine.isReady, sourceLocation: sourceLocation)
    }

    mutating func start(_ m: OutboundMessage) { actions = machine.start(message: m) }
}

func message(to recipients: [String] = ["b@example.com", "c@example.com"], from: String = "sender@example.org",
             size: Int = 500, eightBit: Bool = false) -> OutboundMessage {
    OutboundMessage(from: mb(from), recipients: recipients.map { mb($0) }, size: size, eightBit: eightBit)
}

@Suite("Sender greeting and EHLO (RFC 5321 §3.1, §4.1.1.1)")
struct SenderGreetingTests {
    @Test("The 220 greeting is answered with EHLO")
    func greeting() {
        var s = SenderSession()
        #expect(s.machine.stateName == "awaitingGreeting")
        s.upstream("220 upstream.test ESMTP")
        #expect(s.actions == [.send(Array("EHLO postern.test\r\n".utf8))])
        #expect(s.machine.stateName == "sentEHLO")
    }

    @Test("A multi-line greeting is one reply")
    func multiLineGreeting() {
        var s = SenderSession()
        s.upstream("220-upstream.test ESMTP", "220 welcome")
        #expect(s.sent == "EHLO postern.test\r\n")
    }

    @Test("A greeting other than 220 is answered with QUIT and the connection is closed (RFC 5321 §3.1)")
    func refusedGreeting() {
        var s = SenderSession()
        s.upstream("554 5.7.1 go away")
        #expect(s.sent == "QUIT\r\n")
        #expect(s.closed)
        #expect(s.failure == .rejected(Reply(554, "5.7.1", "go away")))
    }

    @Test("EHLO's keywords set the capabilities")
    func capabilities() {
        var s = SenderSession()
        s.connect(["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"])
        #expect(s.machine.capabilities.pipelining)
        #expect(s.machine.capabilities.eightBitMIME)
        #expect(s.machine.capabilities.maxSize == 10_240_000)
    }

    @Test("Capability keywords from EHLO lines (RFC 1870 §4: SIZE without a number means no limit)", arguments: [
        (["SIZE"], false, false, 0),
        (["size 500"], false, false, 500),
        (["pipelining", "8bitmime"], true, true, nil),
        (["SIZE x"], false, false, 0),
        (["PIPELINING-NOT", "XPIPELINING"], false, false, nil),
        ([], false, false, nil),
    ] as [([String], Bool, Bool, Int?)])
    func keywords(lines: [String], pipelining: Bool, eightBit: Bool, maxSize: Int?) {
        let c = Capabilities(ehloLines: ["upstream.test Hello"] + lines)
        #expect(c.pipelining == pipelining)
        #expect(c.eightBitMIME == eightBit)
        #expect(c.maxSize == maxSize)
    }

    @Test("An upstream SIZE too large for Int is no practical limit, not a trap (RFC 1870 §3 size-param)",
          arguments: ["SIZE 99999999999999999999", "SIZE 9223372036854775808"])
    func hugeSize(line: String) {
        let c = Capabilities(ehloLines: ["upstream.test Hello", line])
        #expect(c.maxSize == Int.max)
    }

    @Test("The first EHLO line is the host name, not a keyword")
    func firstLineIgnored() {
        let c = Capabilities(ehloLines: ["PIPELINING"])
        #expect(!c.pipelining)
    }

    @Test("EHLO refused: fall back to HELO, with no extensions (RFC 5321 §3.2)", arguments: [500, 502, 550])
    func heloFallback(code: Int) {
        var s = SenderSession()
        s.upstream("220 old.test SMTP")
        s.upstream("\(code) unrecognized command")
        #expect(s.sent == "HELO postern.test\r\n")
        s.upstream("250 old.test")
        #expect(s.actions == [.ready])
        #expect(s.machine.capabilities == Capabilities())
        // Without PIPELINING one command goes at a time; without SIZE no SIZE parameter.
        s.start(message())
        #expect(s.sent == "MAIL FROM:<sender@example.org>\r\n")
    }

    @Test("HELO refused too: the connection is given up")
    func heloRefused() {
        var s = SenderSession()
        s.upstream("220 x")
        s.upstream("502 no")
        s.upstream("550 5.7.1 not you")
        #expect(s.closed)
        #expect(s.failure == .rejected(Reply(550, "5.7.1", "not you")))
        #expect(s.machine.isClosed)
    }

    @Test("421 to EHLO closes (RFC 5321 §3.8)")
    func ehlo421() {
        var s = SenderSession()
        s.upstream("220 x")
        s.upstream("421 4.3.2 shutting down")
        #expect(s.closed)
        #expect(s.failure == .rejected(Reply(421, "4.3.2", "shutting down")))
        #expect(s.sent.isEmpty)
    }
}

@Suite("Sender transaction with PIPELINING (RFC 2920 §3.1)")
struct SenderPipeliningTests {
    @Test("MAIL, every RCPT and DATA leave in one write; outcomes come after the final reply")
    func happyPath() {
        var s = SenderSession()
        s.connect()
        s.start(message(to: ["b@example.com", "c@example.com", "d@example.com"]))
        #expect(s.writes == 1)
        #expect(s.sent == "MAIL FROM:<sender@example.org> SIZE=500\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n")
        #expect(s.machine.inTransaction)
        for r in ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"] {
            s.upstream(r)
            #expect(s.actions.isEmpty, "nothing to do until DATA's reply")
        }
        s.upstream("354 go ahead")
        #expect(s.actions == [.sendText])
        #expect(s.machine.stateName == "sendingText")
        #expect(s.machine.textSent() == [])
        #expect(s.machine.awaitingFinalReply)
        s.upstream("250 2.0.0 Ok: queued as ABC")
        #expect(s.outcomeList == ["0:delivered:250", "1:delivered:250", "2:delivered:250"])
        #expect(Array(s.actions.suffix(2)) == [.messageDone, .ready])
        #expect(s.machine.isReady)
        #expect(!s.machine.inTransaction)
    }

    @Test("Per-recipient outcomes: 2xx delivered after the dot, 5xx failed, 4xx deferred (RFC 5321 §4.2.5)")
    func perRecipient() {
        var s = SenderSession()
        s.connect()
        s.start(message(to: ["b@example.com", "c@example.com", "d@example.com"]))
        s.upstream("250 2.1.0 Ok")
        s.upstream("250 2.1.5 Ok")
        #expect(s.outcomes.isEmpty, "an accepted RCPT is not yet delivered")
        s.upstream("550 5.1.1 no such user")
        #expect(s.outcomeList == ["1:failed:550"])
        s.upstream("450 4.2.1 try later")
        #expect(s.outcomeList == ["2:deferred:450"])
        s.upstream("354 go")
        #expect(s.actions == [.sendText])
        _ = s.machine.textSent()
        s.upstream("250 2.0.0 queued")
        #expect(s.outcomeList == ["0:delivered:250"])
        #expect(s.done)
    }

    @Test("The reply to the final dot decides for every accepted recipient", arguments: [
        ("250 2.0.0 ok", RecipientOutcome.delivered), ("452 4.3.1 full", .deferred), ("554 5.6.0 rejected", .failed),
    ])
    func finalReply(line: String, outcome: RecipientOutcome) {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
        _ = s.machine.textSent()
        s.upstream(line)
        #expect(s.outcomes.map { $0.index } == [0, 1])
        #expect(s.outcomes.allSatisfy { $0.outcome == outcome })
        #expect(Array(s.actions.suffix(2)) == [.messageDone, .ready], "no RSET is needed after the final reply")
    }

    @Test("A 3xx to the end of data is no delivery: the recipients are deferred and the connection closed (RFC 5321 §4.3.2)",
          arguments: ["354 go on", "334 what"])
    func thirdClassAfterDot(line: String) {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
        _ = s.machine.textSent()
        s.upstream(line)
        #expect(s.outcomes.map { $0.index } == [0, 1])
        #expect(s.outcomes.allSatisfy { $0.outcome == .deferred })
        #expect(s.done)
        #expect(s.closed)
        #expect(s.machine.isClosed)
    }

    @Test("A 3xx to MAIL or RCPT is not an acceptance: everything unreported is deferred (RFC 5321 §4.3.2)",
          arguments: [0, 1, 2])
    func thirdClassInEnvelope(position: Int) {
        var s = SenderSession()
        s.connect()
        s.start(message())
        for _ in 0..<position { s.upstream("250 ok") }
        s.upstream("354 go on")
        #expect(s.outcomes.count == 2)
        #expect(s.outcomes.allSatisfy { $0.outcome == .deferred })
        #expect(s.done)
        #expect(s.closed)
    }

    @Test("MAIL refused: every recipient gets MAIL's reply; no RSET (RFC 5321 §4.1.1.2)", arguments: [
        ("550 5.7.1 sender denied", RecipientOutcome.failed), ("451 4.3.0 later", .deferred),
    ])
    func mailRefused(line: String, outcome: RecipientOutcome) {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream(line)
        #expect(s.outcomes.count == 2)
        #expect(s.outcomes.allSatisfy { $0.outcome == outcome && $0.code == Int(line.prefix(3))! })
        s.upstream("503 5.5.1 need MAIL")
        s.upstream("503 5.5.1 need MAIL")
        #expect(s.outcomes.isEmpty, "RCPT replies after a refused MAIL are not outcomes")
        s.upstream("503 5.5.1 need MAIL")
        #expect(s.actions == [.messageDone, .ready])
        #expect(s.sent.isEmpty)
    }

    @Test("All RCPT refused and DATA refused: RSET, then ready for the next message")
    func allRcptRefused() {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok")
        s.upstream("550 5.1.1 no")
        s.upstream("550 5.1.1 no")
        #expect(s.outcomes.count == 1)
        s.upstream("554 5.5.1 no valid recipients")
        #expect(s.outcomes.isEmpty)
        #expect(s.done)
        #expect(s.sent == "RSET\r\n")
        s.upstream("250 2.0.0 ok")
        #expect(s.actions == [.ready])
        #expect(s.machine.isReady)
    }

    @Test("354 with no accepted recipient: a lone \".\" ends the empty text (RFC 2920 §3.1)")
    func dataAcceptedWithoutRecipients() {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok")
        s.upstream("550 no")
        s.upstream("450 later")
        s.upstream("354 go ahead")
        #expect(s.actions == [.send(Array(".\r\n".utf8))])
        #expect(!s.actions.contains(.sendText), "no text is sent")
        s.upstream("554 5.5.1 no valid recipients")
        #expect(s.outcomes.isEmpty, "that reply is about no recipient")
        #expect(s.done)
        #expect(s.sent == "RSET\r\n")
        s.upstream("250 ok")
        #expect(s.actions == [.ready])
    }

    @Test("DATA refused after some recipients were accepted: they get DATA's reply")
    func dataRefused() {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("550 no")
        s.upstream("451 4.3.0 try later")
        #expect(s.outcomeList == ["0:deferred:451"])
        #expect(s.done)
        #expect(s.sent == "RSET\r\n")
    }

    @Test("SIZE is sent only when announced; BODY=8BITMIME only when announced and needed (RFC 1870 §6, RFC 6152)",
          arguments: [
              (["PIPELINING"], false, "MAIL FROM:<sender@example.org>\r\n"),
              (["PIPELINING", "SIZE"], false, "MAIL FROM:<sender@example.org> SIZE=500\r\n"),
              (["PIPELINING", "SIZE 9000"], false, "MAIL FROM:<sender@example.org> SIZE=500\r\n"),
              (["PIPELINING", "8BITMIME"], true, "MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n"),
              (["PIPELINING", "8BITMIME"], false, "MAIL FROM:<sender@example.org>\r\n"),
              (["PIPELINING", "SIZE 9000", "8BITMIME"], true, "MAIL FROM:<sender@example.org> SIZE=500 BODY=8BITMIME\r\n"),
          ] as [([String], Bool, String)])
    func mailParameters(keywords: [String], eightBit: Bool, mail: String) {
        var s = SenderSession()
        s.connect(keywords)
        s.start(message(to: ["b@example.com"], eightBit: eightBit))
        #expect(s.sent == mail + "RCPT TO:<b@example.com>\r\nDATA\r\n")
    }

    @Test("A pipelined group fits the sender's output buffer, however many recipients [receiver] allows")
    func groupFitsOutputBuffer() {
        // max_recipients may be set up to 10,000; a recipient path may be 256 octets
        // (RFC 5321 §4.5.3.1.3). The connection cannot write a command group larger
        // than its fixed output buffer (it drops the connection instead), so a larger
        // group would make the message undeliverable on every attempt.
        let local = String(repeating: "l", count: 60)
        let recipients = (0..<1000).map { "\(local)\($0)@" + String(repeating: "d", count: 60) + ".example.com" }
        var s = SenderSession()
        s.connect()
        s.start(message(to: recipients))
        #expect(s.writes >= 1)
        for a in s.actions {
            if case .send(let bytes) = a { #expect(bytes.count <= BufferSizes.senderOutput) }
        }
        // Whatever the grouping, every command is sent exactly once, in order, by the end.
        var all = s.sent
        var replies = 0
        while !all.hasSuffix("DATA\r\n") && replies < 2000 {
            s.upstream("250 ok")
            replies += 1
            all += s.sent
        }
        #expect(all.hasPrefix("MAIL FROM:<sender@example.org> SIZE=500\r\n"))
        #expect(all.components(separatedByCRLF: ()).filter { $0.hasPrefix("RCPT TO:") }.count == 1000)
    }

    @Test("The null reverse-path is sent as MAIL FROM:<>")
    func nullSender() {
        var s = SenderSession()
        s.connect(["PIPELINING"])
        s.start(OutboundMessage(from: .null, recipients: [mb("b@example.com")], size: 1, eightBit: false))
        #expect(s.sent == "MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    }

    @Test("A message over the announced SIZE fails without being sent (RFC 1870 §5)")
    func oversize() {
        var s = SenderSession()
        s.connect(["PIPELINING", "SIZE 1000"])
        s.start(message(size: 1001))
        #expect(s.writes == 0)
        #expect(s.outcomes.map { $0.index } == [0, 1])
        #expect(s.outcomes.allSatisfy { $0.outcome == .failed && $0.code == 552 })
        #expect(Array(s.actions.suffix(2)) == [.messageDone, .ready])
        #expect(s.machine.isReady)
        // Exactly the limit is sent.
        s.start(message(size: 1000))
        #expect(s.sent.hasPrefix("MAIL FROM:<sender@example.org> SIZE=1000\r\n"))
    }

    @Test("SIZE with no number means no limit: a large message is sent")
    func sizeNoLimit() {
        var s = SenderSession()
        s.connect(["PIPELINING", "SIZE"])
        s.start(message(size: 50_000_000))
        #expect(s.writes == 1)
        #expect(s.outcomes.isEmpty)
    }

    @Test("One connection carries several messages")
    func reuse() {
        var s = SenderSession()
        s.connect()
        for n in 0..<3 {
            s.start(message(to: ["r\(n)@example.com"]))
            #expect(s.sent == "MAIL FROM:<sender@example.org> SIZE=500\r\nRCPT TO:<r\(n)@example.com>\r\nDATA\r\n")
            s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
            #expect(s.actions == [.sendText])
            _ = s.machine.textSent()
            s.upstream("250 ok")
            #expect(s.outcomeList == ["0:delivered:250"])
            #expect(s.ready)
        }
        #expect(s.machine.finish() == [.send(Array("QUIT\r\n".utf8))])
        s.upstream("221 2.0.0 bye")
        #expect(s.actions == [.close(failure: nil)])
        #expect(s.machine.isClosed)
    }

    @Test("start() does nothing unless ready, or for a message without recipients")
    func startGuards() {
        var s = SenderSession()
        s.start(message())
        #expect(s.actions.isEmpty)
        s.connect()
        s.start(message(to: []))
        #expect(s.actions.isEmpty)
        s.start(message())
        #expect(s.writes == 1)
        s.start(message())
        #expect(s.actions.isEmpty, "a second start during a transaction is ignored")
    }
}

@Suite("Sender transaction without PIPELINING (RFC 5321 §3.3)")
struct SenderStepwiseTests {
    @Test("One command per reply")
    func oneAtATime() {
        var s = SenderSession()
        s.connect(["SIZE 10000"])
        s.start(message())
        #expect(s.sent == "MAIL FROM:<sender@example.org> SIZE=500\r\n")
        #expect(s.machine.timeoutSeconds == 300)
        s.upstream("250 ok")
        #expect(s.sent == "RCPT TO:<b@example.com>\r\n")
        s.upstream("250 ok")
        #expect(s.sent == "RCPT TO:<c@example.com>\r\n")
        s.upstream("250 ok")
        #expect(s.sent == "DATA\r\n")
        #expect(s.machine.timeoutSeconds == 120)
        s.upstream("354 go")
        #expect(s.actions == [.sendText])
        _ = s.machine.textSent()
        s.upstream("250 ok")
        #expect(s.outcomeList == ["0:delivered:250", "1:delivered:250"])
    }

    @Test("MAIL refused: no RCPT is sent, and no RSET")
    func mailRefused() {
        var s = SenderSession()
        s.connect([])
        s.start(message())
        s.upstream("553 5.1.8 bad sender")
        #expect(s.outcomeList == ["0:failed:553", "1:failed:553"])
        #expect(s.sent.isEmpty)
        #expect(s.actions.suffix(2) == [.messageDone, .ready])
    }

    @Test("All RCPT refused: no DATA, then RSET")
    func allRcptRefused() {
        var s = SenderSession()
        s.connect([])
        s.start(message())
        s.upstream("250 ok")
        s.upstream("550 5.1.1 no")
        #expect(s.sent == "RCPT TO:<c@example.com>\r\n")
        s.upstream("451 4.3.0 later")
        #expect(s.outcomeList == ["1:deferred:451"])
        #expect(!s.sent.contains("DATA"))
        #expect(s.sent == "RSET\r\n")
        #expect(s.done)
        s.upstream("250 ok")
        #expect(s.actions == [.ready])
    }

    @Test("Some RCPT refused: DATA still goes for the rest")
    func someRcptRefused() {
        var s = SenderSession()
        s.connect([])
        s.start(message(to: ["b@example.com", "c@example.com", "d@example.com"]))
        s.upstream("250 ok")
        s.upstream("550 no")
        s.upstream("250 ok")
        s.upstream("550 no")
        #expect(s.sent == "DATA\r\n")
        s.upstream("354 go")
        _ = s.machine.textSent()
        s.upstream("250 ok")
        #expect(s.outcomeList == ["1:delivered:250"])
    }

    @Test("RSET refused after a failed transaction closes the connection")
    func rsetRefused() {
        var s = SenderSession()
        s.connect([])
        s.start(message(to: ["b@example.com"]))
        s.upstream("250 ok")
        s.upstream("550 no")
        #expect(s.sent == "RSET\r\n")
        s.upstream("500 what")
        #expect(s.closed)
        #expect(s.machine.isClosed)
    }
}

@Suite("Sender failures: 421, connection loss, timeouts (RFC 5321 §3.8, §4.5.3.2)")
struct SenderFailureTests {
    @Test("421 mid-transaction defers every recipient without an outcome and closes")
    func reply421() {
        var s = SenderSession()
        s.connect()
        s.start(message(to: ["b@example.com", "c@example.com", "d@example.com"]))
        s.upstream("250 ok")
        s.upstream("550 5.1.1 no")
        s.upstream("421 4.3.2 shutting down")
        #expect(s.outcomeList == ["1:deferred:421", "2:deferred:421"], "recipient 0 already failed")
        #expect(s.done)
        #expect(s.closed)
        #expect(s.failure == .rejected(Reply(421, "4.3.2", "shutting down")))
        #expect(s.machine.isClosed)
    }

    @Test("421 after the dot defers the accepted recipients (at-least-once: they will be sent again)")
    func reply421AfterDot() {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
        _ = s.machine.textSent()
        s.upstream("421 4.4.2 timeout")
        #expect(s.outcomeList == ["0:deferred:421", "1:deferred:421"])
        #expect(s.done)
    }

    @Test("Connection lost at each point of a transaction: unreported recipients are deferred, once",
          arguments: [0, 1, 2, 3, 4, 5])
    func connectionLost(after replies: Int) {
        var s = SenderSession()
        s.connect()
        s.start(message())
        let script = ["250 ok", "550 no", "250 ok", "354 go"]
        var reported: Set<Int> = []
        for r in script.prefix(replies) {
            s.upstream(r)
            reported.formUnion(s.outcomes.map { $0.index })
        }
        if replies >= 4 { _ = s.machine.textSent() }
        s.actions = s.machine.connectionLost("reset by peer")
        let expected = [0, 1].filter { !reported.contains($0) }
        #expect(s.outcomes.map { $0.index } == expected)
        #expect(s.outcomes.allSatisfy { $0.outcome == .deferred && $0.code >= 400 && $0.code < 500 })
        #expect(s.done)
        let closes = s.actions.filter { if case .close = $0 { return true } else { return false } }
        #expect(closes == [.close(failure: .connection("reset by peer"))])
        #expect(s.machine.isClosed)
    }

    @Test("A timeout waiting for the final reply defers the accepted recipients")
    func timeoutAfterDot() {
        var s = SenderSession()
        s.connect()
        s.start(message(to: ["b@example.com"]))
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
        #expect(s.machine.timeoutSeconds == 180)
        _ = s.machine.textSent()
        #expect(s.machine.timeoutSeconds == 600)
        s.actions = s.machine.timedOut()
        #expect(s.outcomes.count == 1)
        #expect(s.outcomes.first?.outcome == .deferred)
        #expect(s.outcomes.first?.code == 451)
        #expect(s.done)
        guard case .timeout? = s.failure else {
            Issue.record("expected a timeout failure, got \(s.actions)")
            return
        }
    }

    @Test("Lost or timed out outside a transaction: just close")
    func outsideTransaction() {
        var s = SenderSession()
        s.actions = s.machine.connectionLost("refused")
        #expect(s.actions == [.close(failure: .connection("refused"))])

        var t = SenderSession()
        t.connect()
        t.actions = t.machine.timedOut()
        #expect(t.outcomes.isEmpty)
        #expect(!t.done)
        #expect(t.machine.isClosed)
    }

    @Test("After QUIT a lost connection or a timeout is a normal close")
    func afterQuit() {
        var s = SenderSession()
        s.connect()
        _ = s.machine.finish()
        #expect(s.machine.connectionLost("eof") == [.close(failure: nil)])

        var t = SenderSession()
        t.connect()
        _ = t.machine.finish()
        #expect(t.machine.timedOut() == [.close(failure: nil)])
    }

    @Test("finish() only when ready")
    func finishGuard() {
        var s = SenderSession()
        #expect(s.machine.finish() == [])
        s.connect()
        s.start(message())
        #expect(s.machine.finish() == [])
    }

    @Test("A reply nobody asked for is a protocol error")
    func unexpectedReply() {
        var s = SenderSession()
        s.connect()
        s.upstream("250 surprise")
        guard case .protocolError? = s.failure else {
            Issue.record("expected a protocol error, got \(s.actions)")
            return
        }
        #expect(s.machine.isClosed)
    }

    @Test("Connection lost after the lone \".\" still finishes the message with messageDone")
    func lostAfterEmptyDot() {
        var s = SenderSession()
        s.connect()
        s.start(message())
        s.upstream("250 ok"); s.upstream("550 no"); s.upstream("550 no"); s.upstream("354 go")
        #expect(s.sent == ".\r\n")
        s.actions = s.machine.connectionLost("reset")
        #expect(s.outcomes.isEmpty, "every recipient was reported already")
        #expect(s.done, "every transaction ends with messageDone")
    }

    @Test("Every started transaction ends with exactly one messageDone")
    func oneMessageDone() {
        // (replies before the event, event) over a three-recipient pipelined message.
        let scripts: [[String]] = [
            ["250 ok", "250 ok", "250 ok", "250 ok", "354 go", "TEXT", "250 ok"],
            ["550 no", "503 x", "503 x", "503 x", "503 x"],
            ["250 ok", "550 no", "550 no", "550 no", "554 no", "250 ok"],
            ["250 ok", "550 no", "550 no", "550 no", "354 go", "250 ok", "250 ok"],
            ["250 ok", "250 ok", "421 bye"],
            ["250 ok", "250 ok", "250 ok", "250 ok", "354 go", "TEXT", "LOST"],
        ]
        for script in scripts {
            var s = SenderSession()
            s.connect()
            s.start(message(to: ["b@example.com", "c@example.com", "d@example.com"]))
            var dones = 0
            var reported: [Int] = []
            for step in script {
                switch step {
                case "TEXT": s.actions = s.machine.textSent()
                case "LOST": s.actions = s.machine.connectionLost("x")
                default: s.upstream(step)
                }
                dones += s.actions.filter { $0 == .messageDone }.count
                reported += s.outcomes.map { $0.index }
            }
            #expect(dones == 1, "\(script)")
            #expect(reported.sorted() == [0, 1, 2], "each recipient reported exactly once: \(script)")
        }
    }

    @Test("Failure replies for deferral are transient")
    func failureReplies() {
        #expect(SenderFailure.connection("x").reply.isTransient)
        #expect(SenderFailure.timeout("x").reply.isTransient)
        #expect(SenderFailure.protocolError("x").reply.isTransient)
        #expect(SenderFailure.rejected(Reply(421, "4.3.2", "x")).reply.code == 421)
        #expect(SenderFailure.timeout("in state sentDot").description == "timeout in state sentDot")
    }

    @Test("Timeouts per state (RFC 5321 §4.5.3.2: 5 min greeting/MAIL/RCPT, 2 DATA, 3 text, 10 after the dot)")
    func timeouts() {
        var s = SenderSession()
        #expect(s.machine.timeoutSeconds == 300)
        s.connect()
        #expect(s.machine.timeoutSeconds == 300)
        s.start(message())
        #expect(s.machine.timeoutSeconds == 300)
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("250 ok")
        #expect(s.machine.timeoutSeconds == 120)
        s.upstream("354 go")
        #expect(s.machine.timeoutSeconds == 180)
        _ = s.machine.textSent()
        #expect(s.machine.timeoutSeconds == 600)
    }
}

@Suite("Sender: the next envelope behind the end of data (RFC 2920 §3.1)")
struct SenderBehindDotTests {
    /// Connected, one message's text sent (its dot queued), awaiting the final reply.
    func afterText(_ keywords: [String] = ["PIPELINING", "SIZE 10000", "8BITMIME"],
                   first: OutboundMessage = message(to: ["b@example.com"])) -> SenderSession {
        var s = SenderSession()
        s.connect(keywords)
        s.start(first)
        for _ in 0..<(first.recipients.count + 1) { s.upstream("250 ok") }
        s.upstream("354 go")
        _ = s.machine.textSent()
        return s
    }

    @Test("The whole envelope leaves behind the dot; the dot's outcome comes first, then the envelope's replies go on")
    func pipelinedEnvelope() {
        var s = afterText()
        s.actions = s.machine.startBehindDot(message: message(to: ["c@example.com"]))
        #expect(s.sent == "MAIL FROM:<sender@example.org> SIZE=500\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        #expect(s.machine.awaitingFinalReply && s.machine.inTransaction)
        #expect(s.machine.timeoutSeconds == 600)
        s.upstream("250 2.0.0 queued")
        #expect(s.outcomeList == ["0:delivered:250"])
        #expect(s.done && !s.ready && s.writes == 0)
        #expect(!s.machine.awaitingFinalReply)
        s.upstream("250 ok"); s.upstream("250 ok")
        #expect(s.actions.isEmpty)
        s.upstream("354 go")
        #expect(s.actions == [.sendText])
        _ = s.machine.textSent()
        s.upstream("250 2.0.0 queued")
        #expect(s.outcomeList == ["0:delivered:250"])
        #expect(s.done && s.ready)
    }

    @Test("A refused end of data fails or defers only its own message; the next one goes on", arguments: [
        ("554 5.6.0 rejected", RecipientOutcome.failed), ("452 4.3.1 full", RecipientOutcome.deferred),
    ])
    func refusedDotIndependent(line: String, outcome: RecipientOutcome) {
        var s = afterText()
        s.actions = s.machine.startBehindDot(message: message(to: ["c@example.com"]))
        s.upstream(line)
        #expect(s.outcomes.map { $0.outcome } == [outcome])
        #expect(s.done && !s.closed)
        s.upstream("250 ok"); s.upstream("250 ok"); s.upstream("354 go")
        #expect(s.actions == [.sendText])
    }

    @Test("421 or a lost connection with both in flight: every unreported recipient of each is deferred, each message done once, in order")
    func abandonBoth() {
        var s = afterText()
        s.actions = s.machine.startBehindDot(message: message(to: ["c@example.com", "d@example.com"]))
        s.upstream("421 4.4.2 closing")
        #expect(s.actions == [
            .recipient(index: 0, outcome: .deferred, reply: Reply(421, "4.4.2", "closing")), .messageDone,
            .recipient(index: 0, outcome: .deferred, reply: Reply(421, "4.4.2", "closing")),
            .recipient(index: 1, outcome: .deferred, reply: Reply(421, "4.4.2", "closing")), .messageDone,
            .close(failure: .rejected(Reply(421, "4.4.2", "closing"))),
        ])
        var t = afterText()
        _ = t.machine.startBehindDot(message: message(to: ["c@example.com"]))
        let lost = t.machine.connectionLost("reset")
        #expect(lost.filter { $0 == .messageDone }.count == 2)
        #expect(lost.last == .close(failure: .connection("reset")))
        var u = afterText()
        _ = u.machine.startBehindDot(message: message(to: ["c@example.com"]))
        u.upstream("354 what")
        #expect(u.closed && u.outcomeList == ["0:deferred:451", "0:deferred:451"])
    }

    @Test("Not without PIPELINING, not over the announced SIZE, not before the text is sent, not for no recipient: nothing changes")
    func refusedCases() {
        var noPipelining = afterText(["SIZE 10000"])
        #expect(noPipelining.machine.startBehindDot(message: message()).isEmpty)
        noPipelining.upstream("250 ok")
        #expect(noPipelining.ready)
        var big = afterText()
        #expect(big.machine.startBehindDot(message: message(size: 20_000)).isEmpty)
        big.upstream("250 ok")
        #expect(big.ready)
        var none = afterText()
        #expect(none.machine.startBehindDot(message: message(to: [])).isEmpty)
        var ready = SenderSession()
        ready.connect()
        #expect(ready.machine.startBehindDot(message: message()).isEmpty)
        #expect(ready.machine.isReady)
    }

    @Test("An envelope longer than one group waits for the final reply")
    func longEnvelopeWaits() {
        var s = afterText()
        let many = (0..<600).map { "recipient-with-a-long-name-\($0)@example.com" }
        #expect(s.machine.startBehindDot(message: message(to: many)).isEmpty)
        s.upstream("250 ok")
        #expect(s.ready)
    }
}

extension String {
    /// The CRLF-terminated lines of the text.
    func components(separatedByCRLF: ()) -> [String] {
        var lines: [String] = []
        var current: [UInt8] = []
        var previous: UInt8 = 0
        for b in utf8 {
            if previous == 13 && b == 10 {
                current.removeLast()
                lines.append(String(decoding: current, as: UTF8.self))
                current = []
            } else {
                current.append(b)
            }
            previous = b
        }
        return lines
    }
}
