import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The pool with the issue 12 item 5 limits applied, below the socket.
private func limitedHarness(perClient: Int, exempt: [CIDR] = [], pause: Int = 0,
                            pauseExempt: [CIDR] = []) -> ReceiverHarness {
    let h = ReceiverHarness(maxConnections: 8, timeoutSeconds: 3)
    var r = ReceiverConfig()
    r.maxConnections = 8
    r.maxConnectionsPerClient = perClient
    r.connectionLimitExempt = exempt
    r.greetPause = pause
    r.greetPauseExempt = pauseExempt
    h.pool.apply(r)
    return h
}

@Suite("Receiver pool: connections per client and early talkers (issue 12 item 5)")
struct ReceiverLimitsTests {
    @Test("Over the cap per client: 421 4.7.0 with Postfix's words, and closed (RFC 5321 §3.1)")
    func capPerClient() {
        let h = limitedHarness(perClient: 2)
        let s = (1...3).map { _ in h.connect(from: "192.0.2.7") }
        #expect(s.map { $0.replyCodes } == [[220], [220], [421]])
        #expect(s[2].sentText == "421 4.7.0 mx.test Error: too many connections from 192.0.2.7\r\n")
        #expect(s[2].closed)
        #expect(h.connect(from: "192.0.2.8").replyCodes == [220])
        s[0].incoming = [.bytes(bytes("QUIT\r\n"))]
        h.run { s[0].closed }
        #expect(h.connect(from: "192.0.2.7").replyCodes == [220])
    }

    @Test("The poll set lists every open connection once and no closed one, while slots are freed and taken again")
    func pollSetFollowsSlots() {
        // Loopback clients, which may take every slot (no share is held back).
        let h = ReceiverHarness(maxConnections: 3)
        let a = h.connect(from: "127.0.0.1")
        let b = h.connect(from: "127.0.0.2")
        // a leaves; c is admitted before any poll set is built, into a's slot.
        a.incoming = [.bytes(bytes("QUIT\r\n"))]
        h.run { a.closed }
        let c = h.connect(from: "127.0.0.3")
        let d = h.connect(from: "127.0.0.4")
        #expect([b, c, d].map { $0.replyCodes } == [[220], [220], [220]])
        var entries = h.pool.pollEntries()
        #expect(entries.count == 3 && Set(entries.map { $0.index }).count == 3 && Set(entries.map { $0.fd }).count == 3)
        #expect(h.pool.activeCount == 3)
        // Full: the next client is refused, and the poll set is unchanged.
        let e = h.connect(from: "127.0.0.5")
        #expect(e.replyCodes == [421] && e.closed)
        #expect(h.pool.pollEntries().count == 3)
        // Two leave; their deadlines and polls go with them.
        b.incoming = [.bytes(bytes("QUIT\r\n"))]
        d.incoming = [.bytes(bytes("QUIT\r\n"))]
        h.run { b.closed && d.closed }
        entries = h.pool.pollEntries()
        #expect(entries.count == 1 && h.pool.activeCount == 1)
        c.incoming = [.bytes(bytes("EHLO c\r\n"))]
        h.step()
        #expect(c.replyCodes == [220, 250])
    }

    @Test("A pool made without a configuration has no cap per client and greets at once")
    func unconfigured() {
        let h = ReceiverHarness(maxConnections: 4)
        #expect((1...3).map { _ in h.connect(from: "192.0.2.7").replyCodes } == [[220], [220], [220]])
    }

    @Test("The greeting waits for the pause; the command deadline starts with it (RFC 5321 §4.5.3.2.7)")
    func pause() {
        let h = limitedHarness(perClient: 8, pause: 2)
        let s = h.connect(from: "192.0.2.7")
        h.step()
        #expect(s.sent.isEmpty)
        h.advance(seconds: 1.9)
        h.step()
        #expect(s.sent.isEmpty)
        h.advance(seconds: 0.2)
        h.step()
        #expect(s.replyCodes == [220])
        // 2.9 s after the greeting (4.9 s after connecting) with timeout = 3s: still open.
        h.advance(seconds: 2.9)
        h.step()
        #expect(!s.closed)
        s.incoming = [.bytes(bytes("EHLO c\r\n"))]
        h.step()
        #expect(s.replyCodes == [220, 250])
    }

    @Test("Input during the pause: 554 5.5.0 at once, closed, nothing queued (RFC 5321 §4.3.1)")
    func earlyTalkerDuringPause() {
        let h = limitedHarness(perClient: 8, pause: 5)
        let s = h.connect(from: "192.0.2.7")
        s.incoming = [.bytes(bytes("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n"))]
        h.step()
        #expect(s.replyCodes == [554])
        #expect(s.sentText.hasPrefix("554 5.5.0 mx.test "))
        #expect(s.closed)
        #expect(h.spool.queue.messages.isEmpty)
    }

    @Test("Without a pause, input already there at the greeting refuses a client outside the exemption")
    func noPauseInputAlreadyThere() {
        let h = limitedHarness(perClient: 8, pause: 0, pauseExempt: [CIDR("192.0.2.9")!])
        let (_, s) = h.kernel.connect(to: ReceiverHarness.listenFD, from: IPAddress("192.0.2.7")!)
        s.incoming = [.bytes(bytes("EHLO x\r\n"))]
        h.pool.accept(from: ReceiverHarness.listenFD, now: h.now)
        #expect(s.replyCodes == [554])
        #expect(s.closed)
        // An exempt client may talk first.
        let (_, e) = h.kernel.connect(to: ReceiverHarness.listenFD, from: IPAddress("192.0.2.9")!)
        e.incoming = [.bytes(bytes("EHLO x\r\n"))]
        h.pool.accept(from: ReceiverHarness.listenFD, now: h.now)
        h.step()
        #expect(e.replyCodes == [220, 250])
        // A polite client outside it is greeted at once.
        #expect(h.connect(from: "192.0.2.8").replyCodes == [220])
    }

    @Test("A client that leaves during the pause frees its slot without a reply")
    func leavesDuringPause() {
        let h = limitedHarness(perClient: 1, pause: 5)
        let s = h.connect(from: "192.0.2.7")
        s.incoming = [.eof]
        h.step()
        #expect(s.closed)
        #expect(s.sent.isEmpty)
        #expect(h.pool.activeCount == 0)
    }

    @Test("Reload: a lower cap refuses new connections and keeps the open ones")
    func reload() {
        let h = limitedHarness(perClient: 3)
        let s = (1...2).map { _ in h.connect(from: "192.0.2.7") }
        var r = ReceiverConfig()
        r.maxConnections = 8
        r.maxConnectionsPerClient = 1
        r.connectionLimitExempt = []
        r.greetPause = 0
        h.pool.apply(r)
        #expect(h.connect(from: "192.0.2.7").replyCodes == [421])
        #expect(s.allSatisfy { !$0.closed })
    }
}
