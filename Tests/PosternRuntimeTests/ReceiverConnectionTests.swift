import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// Receiver connections driven below the socket (ScriptedKernel): partial reads,
/// short writes, EAGAIN, resets, half-closes and slow clients, with the group
/// commit of a spool on a simulated disk.

let transaction = "EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
let messageText = "Subject: test\r\n\r\nline one\r\n..dot\r\nline three\r\n"

@Suite("Receiver connection: pipelining and flow control (RFC 2920 §3.1)")
struct ReceiverPipeliningTests {
    @Test("400 pipelined NOOPs in one read get 400 replies without more input (issue 7: stalled at 147)")
    func pipelinedBatchDoesNotStall() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes("EHLO c\r\n" + String(repeating: "NOOP\r\n", count: 400)))]
        h.run { s.replyCodes.filter { $0 == 250 }.count == 401 }
        #expect(s.replyCodes == [220, 250] + Array(repeating: 250, count: 400))
    }

    @Test("A client that reads its replies late gets every one, in order, as it reads")
    func lateReader() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.window = 0
        s.incoming = [.bytes(bytes("EHLO c\r\n" + String(repeating: "NOOP\r\n", count: 400) + "QUIT\r\n"))]
        h.run(limit: 20) { false }
        #expect(s.replyCodes == [220], "only the greeting, sent before the window closed")
        // The client reads 100 bytes at a time, between loop iterations.
        h.run(limit: 10_000) {
            if s.window == 0 { s.window = 100 }
            return s.closed
        }
        #expect(s.replyCodes == [220, 250] + Array(repeating: 250, count: 400) + [221])
    }

    @Test("Short writes and EAGAIN between them lose and reorder nothing")
    func shortWritesAndEAGAIN() {
        let h = ReceiverHarness()
        let s = h.connect()
        var script: [ScriptedKernel.SendStep] = []
        for i in 0..<400 { script.append(i % 3 == 0 ? .wouldBlock : .take(1 + i % 7)) }
        s.sendScript = script
        s.incoming = [.bytes(bytes("EHLO c\r\n" + String(repeating: "RSET\r\nNOOP\r\n", count: 50)))]
        h.run(limit: 2000) { s.replyCodes.count == 102 }
        #expect(s.replyCodes == [220, 250] + Array(repeating: 250, count: 100))
        #expect(s.sentText.hasPrefix("220 mx.test ESMTP Postern\r\n250-mx.test\r\n"))
    }

    @Test("A long pipelined group: 150 RCPTs over a limit of 100 get 100 × 250 and 50 × 452 4.5.3, then DATA goes on (RFC 5321 §4.5.3.1.10)")
    func recipientOvershootPipelined() {
        let h = ReceiverHarness()
        let s = h.connect()
        var cmds = "EHLO c\r\nMAIL FROM:<a@example.org>\r\n"
        for i in 1...150 { cmds += "RCPT TO:<r\(i)@example.com>\r\n" }
        cmds += "DATA\r\n" + messageText + ".\r\nQUIT\r\n"
        s.incoming = [.bytes(bytes(cmds))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250] + Array(repeating: 250, count: 100) + Array(repeating: 452, count: 50)
                + [354, 250, 221])
        #expect(s.sentText.contains("452 4.5.3 "))
        #expect(h.queuedTexts().map { $0.recipients } == [100])
    }

    @Test("Commands pipelined after the end of data wait for the commit: the 250 comes first (RFC 2920 §3.1, RFC 5321 §6.1)")
    func repliesStayInOrderAcrossTheCommit() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + messageText + ".\r\nNOOP\r\nQUIT\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250, 250, 221])
        let lines = s.sentText.split(separator: "\r\n")
        #expect(lines.count >= 3 && lines[lines.count - 3].hasPrefix("250 2.0.0 Ok: queued as "))
        #expect(h.queuedTexts().count == 1)
    }

    @Test("A client that never reads is no longer read once its replies fill the output, and is cut off at the deadline")
    func neverReads() {
        let h = ReceiverHarness(timeoutSeconds: 3)
        let s = h.connect()
        s.window = 0
        let flood = bytes("EHLO c\r\n" + String(repeating: "NOOP\r\n", count: 5000))
        for k in stride(from: 0, to: flood.count, by: 1000) {
            s.incoming.append(.bytes(Array(flood[k..<min(k + 1000, flood.count)])))
        }
        h.run(limit: 500) { false }
        let readsWhileBlocked = s.reads
        #expect(!s.incoming.isEmpty, "it stopped reading")
        h.run(limit: 500) { false }
        #expect(s.reads == readsWhileBlocked, "and does not poll for input")
        #expect(!s.closed)
        h.advance(seconds: 3.1)
        h.step()
        #expect(s.closed)
    }
}

@Suite("Receiver connection: partial reads, resets and half-closes")
struct ReceiverConnectionEndingTests {
    @Test("A transaction split into one-byte reads is received whole")
    func oneByteReads() {
        let h = ReceiverHarness()
        let s = h.connect()
        for b in bytes(transaction + messageText + ".\r\nQUIT\r\n") { s.incoming.append(.bytes([b])) }
        h.run(limit: 5000) { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250, 221])
        let q = h.queuedTexts()
        #expect(q.count == 1)
        let text = String(decoding: q.first?.text ?? [], as: UTF8.self)
        #expect(text.hasPrefix("Received: "))
        #expect(text.hasSuffix("Subject: test\r\n\r\nline one\r\n.dot\r\nline three\r\n"))
    }

    @Test("A reset in the middle of the text: nothing is queued, the slot is free again")
    func resetMidData() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + "Subject: half\r\n")), .error(ECONNRESET)]
        h.run { s.closed }
        #expect(h.spool.queue.isEmpty)
        #expect(h.pool.activeCount == 0)
        h.step()
        #expect(h.spool.queue.isEmpty)
    }

    @Test("A reset right after the final dot: the message is still queued (at-least-once), nobody hears the 250")
    func resetAfterDot() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + messageText + ".\r\n")), .error(ECONNRESET)]
        s.sendScript = [.take(1000), .wouldBlock, .wouldBlock, .wouldBlock]
        h.run { s.closed }
        #expect(h.spool.queue.count == 1)
    }

    @Test("A half-close after QUIT: every reply is still sent, then the connection closes")
    func halfCloseAfterQuit() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + messageText + ".\r\nQUIT\r\n")), .eof]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250, 221])
        #expect(h.spool.queue.count == 1)
    }

    @Test("A half-close without QUIT: the replies are sent and the connection closes")
    func halfCloseWithoutQuit() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + messageText + ".\r\n")), .eof]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250])
        #expect(h.spool.queue.count == 1)
    }

    @Test("A half-close in the middle of the text: the message is discarded (RFC 5321 §3.3: no end of data)")
    func halfCloseMidData() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction + "Subject: cut\r\n")), .eof]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 354])
        #expect(h.spool.queue.isEmpty)
    }

    @Test("A send that fails drops the connection (and the message being received)")
    func sendFails() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.sendScript = [.error(EPIPE)]
        s.incoming = [.bytes(bytes(transaction + "Subject: x\r\n"))]
        h.run { s.closed }
        #expect(h.pool.activeCount == 0)
    }

    @Test("The socket is never read after it is closed")
    func noReadAfterClose() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes("QUIT\r\nNOOP\r\n"))]
        h.run { s.closed }
        h.run(limit: 10) { false }
        #expect(s.readsAfterClose == 0)
        #expect(s.replyCodes == [220, 221])
    }
}

@Suite("Receiver connection: deadlines for slow clients (RFC 5321 §4.5.3.2)")
struct ReceiverDeadlineTests {
    @Test("A command trickled at one byte a second is cut off at the timeout, however many bytes arrive (§4.5.3.2.7)")
    func tricklingCommand() {
        let h = ReceiverHarness(timeoutSeconds: 3)
        let s = h.connect()
        var seconds = 0
        for b in bytes("EHLO client.example.with.a.long.name\r\n") {
            s.incoming.append(.bytes([b]))
            h.step()
            if s.closed { break }
            h.advance(seconds: 1)
            seconds += 1
        }
        h.step()
        #expect(s.closed)
        #expect(seconds <= 4)
        #expect(s.replyCodes == [220, 421])
        #expect(s.sentText.contains("421 4.4.2 "))
    }

    @Test("Message text trickled at one byte a second is cut off, and nothing is queued (§4.5.3.2.5)")
    func tricklingText() {
        let h = ReceiverHarness(timeoutSeconds: 3)
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction))]
        h.run { s.replyCodes.last == 354 }
        var seconds = 0
        while !s.closed && seconds < 100 {
            s.incoming.append(.bytes(bytes("x")))
            h.step()
            h.advance(seconds: 1)
            seconds += 1
        }
        h.step()
        #expect(s.closed)
        #expect(seconds <= 5)
        #expect(h.spool.queue.isEmpty)
    }

    @Test("A steady client is not cut off: each command and each 16 KiB block of text restarts the deadline")
    func steadyClientKeepsGoing() {
        let h = ReceiverHarness(timeoutSeconds: 3)
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction))]
        h.run { s.replyCodes.last == 354 }
        // 200 KiB of text at 10 KiB a second: a 16 KiB block every 1.6 seconds.
        let line = bytes(String(repeating: "x", count: 1022) + "\r\n")
        for _ in 0..<200 {
            s.incoming.append(.bytes(line))
            h.step()
            h.advance(seconds: 0.1)
        }
        s.incoming.append(.bytes(bytes(".\r\n")))
        h.run { h.spool.queue.count == 1 }
        #expect(!s.closed)
        for _ in 0..<5 {
            s.incoming.append(.bytes(bytes("NOOP\r\n")))
            h.step()
            h.advance(seconds: 2)
        }
        #expect(!s.closed)
        #expect(h.queuedTexts().first.map { $0.text.count > 200 * 1024 } == true)
    }
}

@Suite("Receiver connection: reads per turn of the loop (issue 11)")
struct ReceiverReadsPerTurnTests {
    /// 16 KiB of message text: lines of 1,022 x and CRLF.
    static let block = bytes(String(repeating: String(repeating: "x", count: 1022) + "\r\n", count: 16))

    @Test("Text that fills the input buffer is read again in the same turn, four reads at most; the next client is served in that turn too")
    func fullReadsAreReadAgain() {
        let h = ReceiverHarness()
        let big = h.connect()
        big.incoming = [.bytes(bytes(transaction))]
        h.run { big.replyCodes.last == 354 }
        let other = h.connect()
        h.run { other.replyCodes == [220] }
        for _ in 0..<10 { big.incoming.append(.bytes(Self.block)) }
        other.incoming = [.bytes(bytes("NOOP\r\n"))]
        let before = big.reads
        h.step()
        #expect(big.reads - before == ReceiverConnection.readsPerTurn)
        #expect(other.replyCodes == [220, 250])
        big.incoming.append(.bytes(bytes(".\r\nQUIT\r\n")))
        h.run { big.closed }
        #expect(big.replyCodes == [220, 250, 250, 250, 354, 250, 221])
        #expect(h.queuedTexts().first.map { $0.text.count > 10 * Self.block.count } == true)
    }

    @Test("A read that leaves room in the buffer ends the turn: no second read to find EAGAIN")
    func shortReadEndsTheTurn() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes("EHLO c\r\n"))]
        let before = s.reads
        h.step()
        #expect(s.reads - before == 1)
        #expect(s.emptyReads == 0)
        #expect(s.replyCodes == [220, 250])
    }

    @Test("A full read that ends the message is not followed by another: what was pipelined after the dot waits for the commit (RFC 2920 §3.1)")
    func noReadAgainWhileAwaitingCommit() {
        let h = ReceiverHarness()
        let s = h.connect()
        s.incoming = [.bytes(bytes(transaction))]
        h.run { s.replyCodes.last == 354 }
        // Exactly the buffer's 16 KiB, the end of data last.
        let text = Array(Self.block[0..<(15 * 1024)]) + bytes(String(repeating: "y", count: 1019) + "\r\n.\r\n")
        #expect(text.count == 16 * 1024)
        s.incoming = [.bytes(text), .bytes(bytes("NOOP\r\n"))]
        let before = s.reads
        h.step()
        #expect(s.reads - before == 1)
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250])
        h.step()
        #expect(s.replyCodes == [220, 250, 250, 250, 354, 250, 250])
    }
}

@Suite("Receiver pool: whether a client could still commit (Spool.commitsMayFollow)")
struct ReceiverPoolCommitTests {
    @Test("A client whose message waits for its sync sends no other commit meanwhile; a connected client that does not wait could")
    func clientMayCommit() {
        let h = ReceiverHarness()
        #expect(!h.pool.clientMayCommit)
        let a = h.connect()
        let b = h.connect()
        #expect(h.pool.clientMayCommit)
        a.incoming = [.bytes(bytes(transaction + "Subject: t\r\n\r\nbody\r\n.\r\n"))]
        for _ in 0..<10 where !h.pool.awaitingCommit { h.dispatch() }
        #expect(h.pool.awaitingCommit)
        #expect(a.replyCodes == [220, 250, 250, 250, 354])
        // b is connected and in no transaction: it could still commit.
        #expect(h.pool.clientMayCommit)
        b.incoming = [.bytes(bytes("QUIT\r\n"))]
        for _ in 0..<10 where !b.closed { h.dispatch() }
        #expect(b.closed)
        // Only a is left, and it waits for its sync.
        #expect(!h.pool.clientMayCommit)
        h.step()
        #expect(a.replyCodes.last == 250)
        #expect(h.pool.clientMayCommit)
    }
}

@Suite("Receiver pool: slots kept for loopback clients")
struct ReceiverPoolTests {
    @Test("The reserve is a quarter of the slots, at least one when there are two or more")
    func reserveSize() {
        #expect(ConnectionSlots(total: 1).reservedForLoopback == 0)
        #expect(ConnectionSlots(total: 2).reservedForLoopback == 1)
        #expect(ConnectionSlots(total: 16).reservedForLoopback == 4)
        #expect(ConnectionSlots(total: 1024).reservedForLoopback == 256)
    }

    @Test("LAN clients cannot take the last slots: a loopback client still gets in, then 421 for everyone (RFC 5321 §3.1)")
    func lanCannotLockOutLocalAlerts() {
        let h = ReceiverHarness(maxConnections: 4)
        let lan = (1...4).map { h.connect(from: "192.0.2.\($0)") }
        #expect(lan.map { $0.replyCodes } == [[220], [220], [220], [421]])
        #expect(lan[3].closed)
        let local = h.connect(from: "127.0.0.1")
        #expect(local.replyCodes == [220])
        let extra = h.connect(from: "::1")
        #expect(extra.replyCodes == [421])
        #expect(extra.sentText.hasPrefix("421 4.7.0 "))
    }

    @Test("Loopback and IPv4-mapped loopback addresses count as local; others do not")
    func loopbackAddresses() {
        #expect(IPAddress("127.0.0.1")!.isLoopback)
        #expect(IPAddress("127.255.0.9")!.isLoopback)
        #expect(IPAddress("::1")!.isLoopback)
        #expect(IPAddress("::ffff:127.0.0.1")!.isLoopback)
        #expect(!IPAddress("192.168.1.5")!.isLoopback)
        #expect(!IPAddress("::")!.isLoopback)
        #expect(!IPAddress("::ffff:10.0.0.1")!.isLoopback)
        #expect(!IPAddress.unspecifiedV4.isLoopback)
    }

    @Test("A closed connection keeps its buffers' pages while the pool is busy; they go back once it has been empty a second")
    func pagesReleasedWhenIdle() {
        let h = ReceiverHarness(maxConnections: 4)
        let a = h.connect(from: "192.0.2.1")
        let b = h.connect(from: "192.0.2.2")
        a.incoming = [.bytes(bytes("QUIT\r\n"))]
        h.step()
        #expect(a.closed)
        // b is still open: the slot keeps its pages for the next client.
        #expect(h.pool.connections[0].holdsPages)
        #expect(h.pool.pagesIdleSince == nil)
        b.incoming = [.bytes(bytes("QUIT\r\n"))]
        h.step()
        #expect(b.closed)
        let since = h.pool.pagesIdleSince
        #expect(since == h.now)
        // The loop wakes for the release, not before.
        #expect(h.pool.nextDeadline() == h.now + ReceiverPool.pageReleaseDelay)
        h.advance(seconds: 0.5)
        h.step()
        #expect(h.pool.connections[0].holdsPages && h.pool.connections[1].holdsPages)
        // A client arriving meanwhile takes a slot with its pages; the wait starts over.
        let c = h.connect(from: "192.0.2.3")
        #expect(c.replyCodes == [220])
        #expect(h.pool.pagesIdleSince == nil)
        #expect(h.pool.nextDeadline() == h.pool.connections[0].deadline)
        c.incoming = [.bytes(bytes("QUIT\r\n"))]
        h.step()
        #expect(h.pool.pagesIdleSince == h.now)
        h.advance(seconds: 1)
        h.step()
        #expect(!h.pool.connections.contains { $0.holdsPages })
        #expect(h.pool.pagesIdleSince == nil)
        #expect(h.pool.nextDeadline() == nil)
        // The slots serve as before once their pages are gone.
        let d = h.connect(from: "192.0.2.4")
        d.incoming = [.bytes(bytes("HELO x\r\nQUIT\r\n"))]
        h.step()
        #expect(d.replyCodes == [220, 250, 221])
    }

    @Test("A slot freed by a timeout is taken by the next client")
    func slotReused() {
        let h = ReceiverHarness(maxConnections: 2, timeoutSeconds: 3)
        let idle = h.connect(from: "192.0.2.1")
        #expect(h.connect(from: "192.0.2.2").replyCodes == [421])
        h.advance(seconds: 4)
        h.step()
        #expect(idle.closed)
        #expect(h.connect(from: "192.0.2.3").replyCodes == [220])
    }
}


@Suite("Receiver connection: require_tls and STARTTLS (RFC 3207)")
struct ReceiverRequireTLSTests {
    static func harness() -> ReceiverHarness {
        let h = ReceiverHarness()
        h.context.settings.tlsAvailable = true
        h.context.settings.requireTLS = true
        return h
    }

    @Test("RFC 3207 §4: with require_tls a LAN client's MAIL before STARTTLS gets 530 5.7.0; a loopback client's is taken")
    func requireTLSSparesLoopbackOnly() {
        let h = Self.harness()
        let lan = h.connect(from: "192.0.2.7")
        lan.incoming = [.bytes(bytes("EHLO cam\r\nMAIL FROM:<cam@lan.example>\r\nQUIT\r\n"))]
        h.run { lan.closed }
        #expect(lan.replyCodes == [220, 250, 530, 221])
        #expect(lan.sentText.contains("530 5.7.0 Must issue a STARTTLS command first\r\n"))
        let board = h.connect(from: "127.0.0.1")
        board.incoming = [.bytes(bytes("EHLO board\r\nMAIL FROM:<alarm@board>\r\nQUIT\r\n"))]
        h.run { board.closed }
        #expect(board.replyCodes == [220, 250, 250, 221])
    }

    @Test("STARTTLS without a loaded certificate: the 220 is sent, then the connection closes; nothing pipelined after it runs")
    func startTLSWithoutContextCloses() {
        let h = Self.harness()
        let s = h.connect(from: "192.0.2.7")
        s.incoming = [.bytes(bytes("EHLO cam\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<a@b.example>\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 220])
        #expect(h.pool.activeCount == 0)
    }
}

@Suite("Receiver connection: BDAT chunks (RFC 3030)")
struct ReceiverChunkingConnectionTests {
    static let envelope = "EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"

    static func text(_ h: ReceiverHarness) -> [String] {
        h.queuedTexts().map { String(decoding: $0.text, as: UTF8.self) }
    }

    @Test("RFC 3030 §4.2: pipelined chunks in one read, a CR and LF split between chunks, bare LF made CRLF, last line ended")
    func pipelinedChunks() {
        let h = ReceiverHarness()
        let s = h.connect()
        let a = "Subject: c\r\n\r\none\r", b = "\ntwo\nthree"
        s.incoming = [.bytes(bytes(Self.envelope + "BDAT \(a.utf8.count)\r\n" + a + "BDAT \(b.utf8.count) LAST\r\n" + b + "QUIT\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 250, 250, 221])
        #expect(s.sentText.contains("250 2.0.0 Ok: \(a.utf8.count) octets received\r\n"))
        let texts = Self.text(h)
        #expect(texts.count == 1)
        #expect(texts.first?.hasSuffix("Subject: c\r\n\r\none\r\ntwo\r\nthree\r\n") == true)
    }

    @Test("A chunk in one-byte reads, and a chunk larger than every buffer, arrive whole")
    func splitReads() {
        let h = ReceiverHarness()
        let s = h.connect()
        let body = String(repeating: "0123456789abcdef\r\n", count: 4000)   // 72,000 bytes
        for b in bytes(Self.envelope + "BDAT 5\r\nab\r\nc") { s.incoming.append(.bytes([b])) }
        s.incoming.append(.bytes(bytes("BDAT \(body.utf8.count) LAST\r\n" + body + "QUIT\r\n")))
        h.run(limit: 10_000) { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 250, 250, 250, 221])
        #expect(Self.text(h).first?.hasSuffix("ab\r\nc" + body) == true)
    }

    @Test("RFC 3030 §2: the bytes of a refused BDAT are never read as commands (no message smuggled in them)")
    func refusedChunkSmugglesNothing() {
        let h = ReceiverHarness()
        let s = h.connect()
        let inner = "\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
        s.incoming = [.bytes(bytes("EHLO c\r\nMAIL FROM:<a@example.org>\r\nBDAT \(inner.utf8.count) LAST\r\n" + inner + "NOOP\r\nQUIT\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 250, 503, 250, 221])
        #expect(h.queuedTexts().isEmpty)
    }

    @Test("A client that leaves between chunks queues nothing; one that leaves inside a chunk neither")
    func leaveBetweenChunks() {
        for tail in ["", "BDAT 10 LAST\r\nabc"] {
            let h = ReceiverHarness()
            let s = h.connect()
            s.incoming = [.bytes(bytes(Self.envelope + "BDAT 3\r\nabc" + tail)), .eof]
            h.run { s.closed }
            #expect(h.queuedTexts().isEmpty)
            #expect(h.pool.activeCount == 0)
        }
    }
}

@Suite("Receiver connection: AUTH (RFC 4954)")
struct ReceiverAuthConnectionTests {
    /// "secret", SHA-512-crypt with 1,000 rounds (a quick check in the loop:
    /// the harness has no checker process, so `fallbackChecker` runs it).
    static let users = "alice:$6$rounds=1000$saltsaltsalt$eX3bxJXT3.ujpABOqZ7ph4r9D9Fn0.qoDqJgZU6cTq8xPfk2.Fmq2bf1GgjAlb6X1QXE7sMOtwZRTxjI1OZvT1\n"

    static func harness() -> ReceiverHarness {
        let h = ReceiverHarness()
        guard case .success(let u) = AuthUsers.parse(bytes(users)) else { preconditionFailure("test users") }
        h.context.authUsers = u
        h.context.settings.authAvailable = true
        h.context.allowClients = [CIDR("127.0.0.0/8")!]
        return h
    }

    @Test("RFC 4954 §4: AUTH PLAIN then a message: 235, Received: names the user with ESMTPA (RFC 3848 §2)")
    func authenticatedMessage() {
        let h = Self.harness()
        let s = h.connect(from: "127.0.0.2")
        s.incoming = [.bytes(bytes("EHLO board\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b.example>\r\n"
                                   + "RCPT TO:<c@d.example>\r\nDATA\r\nSubject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 235, 250, 250, 354, 250, 221])
        let text = String(decoding: h.queuedTexts().first?.text ?? [], as: UTF8.self)
        #expect(text.contains("(Authenticated sender: alice)\r\n"))
        #expect(text.contains("with ESMTPA id"))
    }

    @Test("A wrong password's 535 is held for the throttle's delay; nothing pipelined behind it is answered first")
    func failureIsDelayed() {
        let h = Self.harness()
        let s = h.connect(from: "192.0.2.7")
        // A LAN client in the clear may not AUTH (538); from loopback it may.
        s.incoming = [.bytes(bytes("EHLO cam\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nNOOP\r\n"))]
        h.run { s.replyCodes.count >= 4 }
        #expect(s.replyCodes == [220, 250, 538, 250])
        let l = h.connect(from: "127.0.0.1")
        l.incoming = [.bytes(bytes("EHLO board\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nNOOP\r\n"))]
        h.run { l.replyCodes.count >= 2 }
        #expect(l.replyCodes == [220, 250])
        h.advance(seconds: 0.5)
        h.step()
        #expect(l.replyCodes == [220, 250], "held for 1 s")
        h.advance(seconds: 0.6)
        h.run { l.replyCodes.count >= 4 }
        #expect(l.replyCodes == [220, 250, 535, 250])
        #expect(h.context.authThrottle.failures(IPAddress("127.0.0.1")!, now: h.now) == 1)
    }

    @Test("After 10 failures an address is locked out: AUTH gets 454 even with the right password")
    func lockout() {
        let h = Self.harness()
        for _ in 0..<10 { h.context.authThrottle.recordFailure(IPAddress("127.0.0.1")!, now: h.now) }
        let s = h.connect(from: "127.0.0.1")
        s.incoming = [.bytes(bytes("EHLO board\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n"))]
        h.run { s.closed }
        #expect(s.replyCodes == [220, 250, 454, 221])
    }
}
