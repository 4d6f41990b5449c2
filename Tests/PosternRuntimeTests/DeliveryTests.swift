import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The sender's connection driven below the socket: the upstream is a script
/// that answers each command line Postern writes (the black-box suite runs the
/// real thing against aiosmtpd); its replies arrive split as the test likes.
final class DeliveryHarness: LoopHarness {
    let kernel = ScriptedKernel()
    let disk = SimulatedDisk()
    let spool: Spool
    let delivery: Delivery
    var now: Int64 = 1_000_000_000_000
    /// How the upstream's replies are cut into reads.
    var replyChunk = Int.max
    /// Reply to the end of data; nil: 250.
    var finalReply: String? = nil
    /// Greetings other than 220, by the upstream's port.
    var greetings: [Int32: String] = [:]
    /// Upstream bytes of each connection already answered.
    var answered: [Int32: Int] = [:]
    /// Message text the upstream received, per transaction (dot-stuffing undone).
    var received: [[UInt8]] = []
    var inText: [Int32: [UInt8]] = [:]

    /// `upstreams` plain-text upstreams, 127.0.0.1:25, 127.0.0.2:26, …
    init(upstreams: Int = 1) {
        spool = Spool(dir: "/spool", segmentSize: 1 << 20, maxSize: 64 << 20, log: Log(quiet: true), storage: disk)
        _ = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true))
        let list = (0..<upstreams).map { i -> UpstreamConfig in
            var upstream = UpstreamConfig()
            upstream.host = "127.0.0.\(i + 1)"
            upstream.port = 25 + i
            upstream.tls = .none
            return upstream
        }
        delivery = Delivery(upstreams: list, heloName: "board.test", policy: RetryPolicy(initialSeconds: 60, maxSeconds: 600),
                            expiry: ExpiryPolicy(maxAge: 86400), spool: spool, log: Log(quiet: true), kernel: kernel)
    }

    /// Queues a message as the receiver would, durably.
    func queue(_ text: String, to recipients: [String] = ["b@example.com"]) {
        let env = Envelope(heloName: "c", esmtp: true, from: Mailbox.parse(Array("a@example.org".utf8)[...], allowNull: true)!,
                           recipients: recipients.map { Mailbox.parse(Array($0.utf8)[...], allowNull: false)! }, eightBit: false)
        var t = try! spool.begin(env, arrival: 1_700_000_000, now: now).get()
        _ = Array(text.utf8).withUnsafeBytes { spool.appendText(&t, $0, now: now) }
        _ = spool.commit(t, now: now)
        _ = spool.flush()
    }

    var connection: ScriptedKernel.Socket? { kernel.outgoing.last.flatMap { kernel.sockets[$0.fd] } }

    /// The upstream: greets a new connection and answers each complete line.
    func upstreamTurn() {
        for (endpoint, fd) in kernel.outgoing {
            guard let s = kernel.sockets[fd], !s.closed else { continue }
            var replies = ""
            if answered[fd] == nil {
                answered[fd] = 0
                replies += (greetings[endpoint.port] ?? "220 upstream.test ESMTP") + "\r\n"
            }
            var at = answered[fd] ?? 0
            while let lf = s.sent[at...].firstIndex(of: 10) {
                let line = Array(s.sent[at..<(lf + 1)])
                at = lf + 1
                if var text = inText[fd] {
                    if line == Array(".\r\n".utf8) {
                        received.append(text)
                        inText[fd] = nil
                        replies += (finalReply ?? "250 2.0.0 queued") + "\r\n"
                    } else {
                        text += line.first == 46 ? Array(line.dropFirst()) : line
                        inText[fd] = text
                    }
                    continue
                }
                let verb = String(decoding: line.prefix(4), as: UTF8.self).uppercased()
                switch verb {
                case "EHLO": replies += "250-upstream.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                case "DATA": replies += "354 go ahead\r\n"; inText[fd] = []
                case "QUIT": replies += "221 bye\r\n"
                default: replies += "250 2.0.0 ok\r\n"
                }
            }
            answered[fd] = at
            let b = Array(replies.utf8)
            var k = 0
            while k < b.count {
                s.incoming.append(.bytes(Array(b[k..<min(b.count, k + replyChunk)])))
                k += replyChunk
            }
        }
    }

    /// One loop iteration for the sender, as `Daemon.run` does it.
    func step() {
        delivery.tick(now: now, stopping: false)
        upstreamTurn()
        if delivery.fd >= 0 {
            var fds = [pollfd(fd: delivery.fd, events: delivery.pollEvents, revents: 0)]
            _ = kernel.poll(&fds, timeoutMilliseconds: 0)
            if fds[0].revents & Int16(POLLOUT) != 0 { delivery.writable(now: now) }
            if delivery.fd >= 0 && fds[0].revents & Int16(POLLIN) != 0 { delivery.readable(now: now) }
        }
        if spool.groupCommitDue { _ = spool.flush() }
    }

}

@Suite("Delivery below the socket: split replies, short writes, resets")
struct DeliveryTests {
    /// 60 KB in lines of 100 octets, one with a leading dot (stuffed on the wire).
    static let text = "Subject: t\r\n\r\n.leading dot\r\n" + String(repeating: String(repeating: "0123456789", count: 10) + "\r\n", count: 600) + "end\r\n"
    static let textBytes = Array(text.utf8)

    /// The upstream got exactly these texts (compared without printing 60 KB).
    func got(_ h: DeliveryHarness, _ texts: [[UInt8]]) -> Bool { h.received == texts }

    @Test("Replies split into one-byte reads: delivered once, byte for byte, and finished in the spool")
    func oneByteReplies() {
        let h = DeliveryHarness()
        h.replyChunk = 1
        h.queue(Self.text)
        h.run { h.spool.queue.isEmpty }
        #expect(h.spool.queue.isEmpty)
        #expect(got(h, [Self.textBytes]))
    }

    @Test("A long message goes out about `bytesPerTurn` per event of the loop, the rest at the next POLLOUT; it arrives whole, once")
    func boundedSendPerTurn() {
        let h = DeliveryHarness()
        // 600 KB in lines of 100 octets: an upstream socket that takes
        // everything at once, as loopback's did.
        let big = "Subject: big\r\n\r\n" + String(repeating: String(repeating: "0123456789", count: 10) + "\r\n", count: 6000)
        h.queue(big)
        var most = 0
        var before = 0
        var turns = 0
        while !h.spool.queue.isEmpty && turns < 2000 {
            h.step()
            turns += 1
            let sent = h.connection?.sent.count ?? 0
            most = max(most, sent - before)
            before = sent
        }
        #expect(h.spool.queue.isEmpty)
        #expect(got(h, [Array(big.utf8)]))
        // A turn can hold two events of the connection (writable, then
        // readable), each bounded; without the bound the 600 KB left in one.
        #expect(most >= Delivery.bytesPerTurn)
        #expect(most < 2 * Delivery.bytesPerTurn)
    }

    @Test("Plain TCP: a read that fills less than the room offered is not followed by one that can only say EAGAIN")
    func noReadAfterShortRead() {
        let h = DeliveryHarness()
        for i in 0..<3 { h.queue("Subject: \(i)\r\n\r\nbody\r\n") }
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 3)
        guard let s = h.connection else { Issue.record("no connection"); return }
        // Every read found bytes: poll(2) said there were some, and one read took them all.
        #expect(s.reads > 0)
        #expect(s.incoming.isEmpty)
        #expect(s.emptyReads == 0)
    }

    @Test("The sender keeps the segment open from message to message and while it waits for more, and closes it when the spool deletes that segment")
    func segmentHeldWhileSending() {
        let h = DeliveryHarness()
        for i in 0..<3 { h.queue("Subject: \(i)\r\n\r\nbody\r\n") }
        let writers = h.disk.fds.count
        h.run(limit: 10) { h.delivery.current != nil }
        #expect(h.disk.fds.count == writers + 1)      // the reader's, kept open
        h.run { h.received.count == 2 }
        #expect(h.disk.fds.count == writers + 1)      // the same one, still
        h.run { h.spool.queue.isEmpty }
        h.step()
        #expect(h.received.count == 3)
        #expect(h.disk.fds.count == writers + 1)      // kept for the next message
        #expect(h.delivery.text.reader.cursor.heldFD >= 0)
        // Its messages done, the segment is finished once another starts; the
        // spool deletes it, and the reader lets go of it at once: its blocks
        // are free before anything else is written.
        let old = h.spool.activeSequence
        #expect((try? h.spool.roll().get()) != nil)
        _ = h.spool.flush()
        h.spool.collectGarbage(now: true)
        #expect(h.spool.segmentSizes[old] == nil)
        #expect(h.delivery.text.reader.cursor.heldFD == -1)
        // A new message is read from the new segment.
        h.queue("Subject: 3\r\n\r\nbody\r\n")
        h.run { h.received.count == 4 }
        #expect(h.delivery.text.reader.cursor.sequence == h.spool.activeSequence)
    }

    @Test("A segment deleted while the sender holds another is not the sender's business: it keeps its own")
    func otherSegmentDeleted() {
        let h = DeliveryHarness()
        h.queue("Subject: 0\r\n\r\nbody\r\n")
        h.run { h.spool.queue.isEmpty }
        h.step()
        let held = h.delivery.text.reader.cursor.sequence
        h.spool.segmentDeleted?(held + 1)
        #expect(h.delivery.text.reader.cursor.heldFD >= 0 && h.delivery.text.reader.cursor.sequence == held)
    }

    @Test("Message after message: each end of data leaves in one write with the next envelope (RFC 2920 §3.1)")
    func envelopeBehindDot() {
        let h = DeliveryHarness()
        for i in 0..<3 { h.queue("Subject: \(i)\r\n\r\nbody \(i)\r\n") }
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.map { String(decoding: $0, as: UTF8.self) }
                == (0..<3).map { "Subject: \($0)\r\n\r\nbody \($0)\r\n" })
        guard let s = h.connection else { Issue.record("no connection"); return }
        // EHLO; the first envelope; text, dot and the next envelope twice; the last text and dot.
        #expect(s.sends == 5)
        #expect(s.sentText.contains("body 0\r\n.\r\nMAIL FROM:<a@example.org>"))
        #expect(h.delivery.current == nil && h.delivery.pipelined == nil)
        #expect(h.kernel.outgoing.count == 1)
    }

    @Test("A reset with a message behind the dot: both stay queued and both go on the next try, once each")
    func resetWithPipelined() {
        let h = DeliveryHarness()
        for i in 0..<2 { h.queue("Subject: \(i)\r\n\r\nbody \(i)\r\n") }
        h.run(limit: 50) { h.delivery.pipelined != nil }
        #expect(h.delivery.pipelined != nil)
        // The upstream dies before answering the end of data (and the envelope behind it).
        guard let first = h.kernel.outgoing.last, let s = h.connection else { Issue.record("no connection"); return }
        h.answered[first.fd] = s.sent.count
        s.incoming = [.error(ECONNRESET)]
        h.run(limit: 20) { h.delivery.fd < 0 }
        #expect(h.spool.queue.count == 2)
        #expect(!h.spool.queue.messages.contains { $0.inFlight })
        h.now += 700 * 1_000_000_000
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 2)
    }

    @Test("Short writes and EAGAIN while the text streams: the upstream gets it intact")
    func shortWrites() {
        let h = DeliveryHarness()
        h.queue(Self.text)
        h.run(limit: 10) { h.connection != nil }
        var script: [ScriptedKernel.SendStep] = []
        for i in 0..<3000 { script.append(i % 2 == 0 ? .wouldBlock : .take(97 + i % 13)) }
        h.connection?.sendScript = script
        h.run(limit: 20_000) { h.spool.queue.isEmpty }
        #expect(got(h, [Self.textBytes]))
    }

    @Test("A reset while the text is sent: the message stays queued, untouched, and goes on the next try")
    func resetMidText() {
        let h = DeliveryHarness()
        h.queue(Self.text)
        h.run(limit: 10) { h.connection != nil }
        // The upstream reads slowly: 20 KB, then the connection is reset.
        h.connection?.window = 20_000
        h.run(limit: 50) { false }
        #expect(h.received.isEmpty && h.inText.values.contains { !$0.isEmpty })
        h.connection?.incoming = [.error(ECONNRESET)]
        h.run(limit: 20) { h.delivery.fd < 0 }
        #expect(h.delivery.fd < 0)
        #expect(h.spool.queue.count == 1)
        #expect(h.spool.queue.messages.first?.pendingRecipients == [0])
        #expect(h.received.isEmpty)
        #expect(h.connection?.closed == true)
        // The retry waits for its backoff (on the monotonic clock), then delivers.
        h.now += 700 * 1_000_000_000
        h.run { h.spool.queue.isEmpty }
        #expect(got(h, [Self.textBytes]))
        #expect(h.kernel.outgoing.count == 2)
    }

    @Test("A 4xx to the end of data defers; a 5xx fails the recipient for good (RFC 5321 §4.2.1)")
    func finalReplies() {
        let h = DeliveryHarness()
        h.finalReply = "451 4.3.0 try later"
        h.queue("Subject: x\r\n\r\nbody\r\n")
        h.run { h.spool.queue.messages.first.map { $0.attempts == 1 && !$0.inFlight } ?? false }
        #expect(h.spool.queue.count == 1)
        // The idle connection is given up with QUIT after the hold time.
        h.now += 3 * 1_000_000_000
        h.run { h.delivery.fd < 0 }
        h.finalReply = "554 5.7.1 no"
        h.now += 700 * 1_000_000_000
        h.run { h.spool.queue.isEmpty }
        #expect(h.spool.queue.isEmpty)
    }

    @Test("A connect still in progress reads nothing: the greeting waits for the connection to be up")
    func noReadWhileConnecting() {
        let h = DeliveryHarness()
        h.kernel.connectInProgress = true
        h.queue("Subject: x\r\n\r\nbody\r\n")
        h.delivery.tick(now: h.now, stopping: false)
        h.upstreamTurn()    // the greeting is already there
        // The events of a failed earlier socket reach this one first (Daemon.dispatch).
        h.delivery.readable(now: h.now)
        h.delivery.writable(now: h.now)
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 1)
    }

    @Test("Issue 8 item 4: the primary refuses, the fallback takes the mail at once, and the primary is first again")
    func fallbackUpstream() {
        let h = DeliveryHarness(upstreams: 2)
        h.kernel.refusePorts = [25]
        h.queue("Subject: one\r\n\r\nbody\r\n")
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 1)
        #expect(h.kernel.outgoing.map { $0.endpoint.port } == [26])
        #expect(h.delivery.statuses[0].lastError == "Connection refused")
        #expect(h.delivery.statuses[1].lastDeliveryWall != nil)
        // The fallback is let go once idle; the next message tries the primary.
        h.run(limit: 10) { h.delivery.fd < 0 }
        #expect(h.delivery.fd < 0)
        h.kernel.refusePorts = []
        h.queue("Subject: two\r\n\r\nbody\r\n")
        h.run { h.spool.queue.isEmpty }
        #expect(h.kernel.outgoing.map { $0.endpoint.port } == [26, 25])
    }

    @Test("Every upstream refuses: the retry schedule applies, and the next attempt starts with the primary")
    func allUpstreamsDown() {
        let h = DeliveryHarness(upstreams: 3)
        h.kernel.refusePorts = [25, 26, 27]
        h.queue("Subject: x\r\n\r\nbody\r\n")
        h.run(limit: 5) { false }
        #expect(h.delivery.upstreamState(now: h.now).hasPrefix("all 3 upstreams unreachable"))
        #expect(h.delivery.active == 0)
        h.kernel.refusePorts = [25]
        h.now += 700 * 1_000_000_000
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 1)
        #expect(h.kernel.outgoing.map { $0.endpoint.port } == [26])
    }

    @Test("A 4xx greeting moves on to the next upstream at once (issue 8 item 4)")
    func greeting4xxMovesOn() {
        let h = DeliveryHarness(upstreams: 2)
        h.greetings[25] = "421 4.3.2 too busy"
        h.queue("Subject: x\r\n\r\nbody\r\n")
        h.run { h.spool.queue.isEmpty }
        #expect(h.received.count == 1)
        #expect(h.kernel.outgoing.map { $0.endpoint.port } == [25, 26])
        #expect(h.delivery.statuses[0].lastError?.hasPrefix("421 4.3.2") == true)
    }
}
