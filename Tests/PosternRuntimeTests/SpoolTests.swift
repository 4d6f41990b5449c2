import Foundation
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// A scratch spool directory, removed afterwards.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "postern-spool-" + UUID().uuidString
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func segments() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
    }
}

func mailbox(_ s: String) -> Mailbox { Mailbox.parse(Array(s.utf8)[...], allowNull: true)! }

func envelope(_ rcpts: [String], from: String = "sender@example.com") -> Envelope {
    Envelope(heloName: "client.example", esmtp: true, from: mailbox(from), recipients: rcpts.map(mailbox), eightBit: false)
}

func openSpool(_ dir: TempDir, segmentSize: Int = 4 << 20) -> (Spool, RecoveryReport) {
    let spool = Spool(dir: dir.path, segmentSize: segmentSize, maxSize: 64 << 20, log: Log())
    guard case .success(let report) = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true)) else {
        Issue.record("spool did not open")
        return (spool, RecoveryReport())
    }
    return (spool, report)
}

/// Receives one whole message the way a receiver connection does.
@discardableResult
func receive(_ spool: Spool, _ rcpts: [String], text: [UInt8], chunk: Int = 1000) -> SpoolTransaction {
    var t = try! spool.begin(envelope(rcpts), arrival: 1_700_000_000, now: 0).get()
    var i = 0
    while i < text.count {
        let end = min(text.count, i + chunk)
        let r = text[i..<end].withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
        #expect((try? r.get()) != nil)
        i = end
    }
    #expect((try? spool.commit(t, now: 0).get()) != nil)
    return t
}

/// Reads a queued message back as the sender does.
func readBack(_ spool: Spool, _ m: QueuedMessage) -> (SpoolCodec.EnvelopeRecord, [UInt8])? {
    let reader = MessageReader(capacity: 4096)
    guard case .success(let env) = reader.open(m, spool: spool) else { return nil }
    var out: [UInt8] = []
    while true {
        switch reader.next(spool: spool) {
        case .success(.end): return (env, out)
        case .success(.text):
            out += Array(reader.pendingText)
            reader.advance(reader.pendingText.count)
        case .failure: return nil
        }
    }
}

func sampleText(_ n: Int, seed: UInt8 = 0) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(n)
    var line = 0
    while out.count < n {
        let l = Array("line \(line) seed \(seed) ".utf8) + [UInt8](repeating: 97 + UInt8(line % 26), count: line % 90) + [13, 10]
        out += l
        line += 1
    }
    return Array(out.prefix(n))
}

@Suite("Spool: group commit and recovery (DESIGN.md principles 4 and 5)")
struct SpoolTests {
    @Test("a committed message is queued only after flush, and survives a restart")
    func commitThenRecover() {
        let dir = TempDir()
        let text = sampleText(50_000)
        do {
            let (spool, _) = openSpool(dir)
            let t = receive(spool, ["a@example.com", "b@example.com"], text: text)
            #expect(spool.queue.isEmpty, "not queued before the fdatasync")
            let r = spool.flush()
            #expect(r.error == nil)
            #expect(r.committed.map { $0.id } == [t.id])
            #expect(spool.queue.count == 1)
            spool.close()
        }
        let (spool, report) = openSpool(dir)
        #expect(report.queued == 1)
        #expect(spool.queue.count == 1)
        let m = spool.queue.messages[0]
        #expect(m.size == text.count)
        #expect(m.pendingRecipients == [0, 1])
        let back = readBack(spool, m)
        #expect(back?.1 == text)
        #expect(back?.0.recipients == [Array("a@example.com".utf8), Array("b@example.com".utf8)])
        spool.close()
    }

    @Test("an unacknowledged transaction (no commit record) is dropped by recovery")
    func uncommittedDropped() {
        let dir = TempDir()
        do {
            let (spool, _) = openSpool(dir)
            var t = try! spool.begin(envelope(["a@example.com"]), arrival: 0, now: 0).get()
            _ = Array("Subject: x\r\n".utf8).withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
            receive(spool, ["b@example.com"], text: sampleText(100))
            _ = spool.flush()
            spool.close()
        }
        let (spool, report) = openSpool(dir)
        #expect(report.queued == 1)
        #expect(report.dropped == 1)
        spool.close()
    }

    @Test("a torn tail after the last commit is ignored and everything acknowledged is kept")
    func tornTail() throws {
        let dir = TempDir()
        var ids: [UInt64] = []
        var end = 0
        do {
            let (spool, _) = openSpool(dir)
            for i in 0..<3 { ids.append(receive(spool, ["r\(i)@example.com"], text: sampleText(3000, seed: UInt8(i))).id) }
            _ = spool.flush()
            // A transaction in flight when the power went: its record is cut short.
            var t = try! spool.begin(envelope(["late@example.com"]), arrival: 0, now: 0).get()
            _ = sampleText(5000).withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
            end = spool.activeOffset
            spool.close()
        }
        let last = dir.path + "/" + dir.segments().last!
        let data = try Data(contentsOf: URL(fileURLWithPath: last))
        #expect(data.count > end, "small messages leave zero-filled room after the records")
        // Cut at the end of the file, and torn with the zero-filled room after
        // it, as a record written over the room is torn by a crash.
        for cut in [1, 7, 19, 2500] {
            for withRoom in [false, true] {
                var torn = data.prefix(end - cut)
                if withRoom { torn += Data(count: data.count - torn.count) }
                try torn.write(to: URL(fileURLWithPath: last))
                let (spool, report) = openSpool(dir)
                #expect(spool.queue.messages.map { $0.id } == ids)
                #expect(!report.tornTails.isEmpty)
                spool.close()
                // Re-opening created a new empty segment; drop it to keep the cut file last.
                for s in dir.segments() where dir.path + "/" + s != last {
                    if s > (last as NSString).lastPathComponent { try FileManager.default.removeItem(atPath: dir.path + "/" + s) }
                }
            }
        }
    }

    @Test("a bad CRC inside a record stops the scan of that file only")
    func badCRC() throws {
        let dir = TempDir()
        var end = 0
        do {
            let (spool, _) = openSpool(dir)
            receive(spool, ["a@example.com"], text: sampleText(2000, seed: 1))
            receive(spool, ["b@example.com"], text: sampleText(2000, seed: 2))
            _ = spool.flush()
            end = spool.activeOffset
            spool.close()
        }
        // Flip a byte in the text of the second message.
        let seg = dir.path + "/" + dir.segments().last!
        var data = try Data(contentsOf: URL(fileURLWithPath: seg))
        data[end - 100] ^= 0xff
        try data.write(to: URL(fileURLWithPath: seg))
        let (spool, report) = openSpool(dir)
        #expect(report.tornTails.contains { $0.contains("CRC") })
        #expect(spool.queue.count == 1)
        spool.close()
    }

    @Test("recipient outcomes survive a restart: a delivered recipient is never sent again")
    func outcomesRecovered() {
        let dir = TempDir()
        do {
            let (spool, _) = openSpool(dir)
            let t = receive(spool, ["a@example.com", "b@example.com", "c@example.com"], text: sampleText(500))
            _ = spool.flush()
            #expect(spool.recordOutcome(t.id, recipient: 0, .delivered, now: 0) == false)
            #expect(spool.recordOutcome(t.id, recipient: 2, .failed, now: 0) == false)
            _ = spool.flush()
            spool.close()
        }
        let (spool, _) = openSpool(dir)
        #expect(spool.queue.count == 1)
        #expect(spool.queue.messages.first?.pendingRecipients == [1])
        spool.close()
    }

    @Test("finished segments are deleted; a restart then finds an empty queue")
    func segmentsDeleted() {
        let dir = TempDir()
        do {
            let (spool, _) = openSpool(dir, segmentSize: 64 * 1024)
            var ids: [UInt64] = []
            for i in 0..<20 { ids.append(receive(spool, ["r@example.com"], text: sampleText(20_000, seed: UInt8(i))).id) }
            _ = spool.flush()
            #expect(dir.segments().count > 3)
            for id in ids { #expect(spool.recordOutcome(id, recipient: 0, .delivered, now: 0)) }
            _ = spool.flush()
            #expect(spool.queue.isEmpty)
            #expect(dir.segments().count == 1, "only the active segment is left")
            spool.close()
        }
        let (spool, report) = openSpool(dir)
        #expect(spool.queue.isEmpty)
        #expect(report.queued == 0)
        spool.close()
    }

    @Test("interleaved transactions across segment boundaries read back intact")
    func interleaved() {
        let dir = TempDir()
        let (spool, _) = openSpool(dir, segmentSize: 64 * 1024)
        var texts: [UInt64: [UInt8]] = [:]
        var open: [(SpoolTransaction, [UInt8], Int)] = []
        for k in 0..<6 {
            let text = sampleText(30_000 + k * 7_000, seed: UInt8(k))
            let t = try! spool.begin(envelope(["k\(k)@example.com"]), arrival: 0, now: 0).get()
            open.append((t, text, 0))
        }
        // Round-robin 777-byte chunks from six concurrent transactions.
        var active = open.count
        while active > 0 {
            active = 0
            for i in open.indices {
                var (t, text, at) = open[i]
                guard at < text.count else { continue }
                let end = min(text.count, at + 777)
                _ = text[at..<end].withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
                at = end
                if at == text.count {
                    #expect((try? spool.commit(t, now: 0).get()) != nil)
                    texts[t.id] = text
                }
                open[i] = (t, text, at)
                active += 1
            }
        }
        _ = spool.flush()
        #expect(spool.queue.count == 6)
        #expect(dir.segments().count > 2)
        for m in spool.queue.messages {
            #expect(readBack(spool, m)?.1 == texts[m.id])
        }
        spool.close()
    }

    @Test("a second daemon cannot open a spool in use")
    func locked() {
        let dir = TempDir()
        let (first, _) = openSpool(dir)
        let second = Spool(dir: dir.path, segmentSize: 1 << 20, maxSize: 1 << 30, log: Log())
        guard case .failure(let e) = second.open(clock: ClockReading(wall: 0, monotonic: 0, synchronised: true)) else {
            Issue.record("second open succeeded")
            return
        }
        #expect(e.description.contains("another postern"))
        first.close()
    }

    @Test("ids keep increasing across restarts")
    func idsIncrease() {
        let dir = TempDir()
        var first: UInt64 = 0
        do {
            let (spool, _) = openSpool(dir)
            first = receive(spool, ["a@example.com"], text: sampleText(10)).id
            _ = spool.flush()
            spool.close()
        }
        let (spool, _) = openSpool(dir)
        let second = receive(spool, ["a@example.com"], text: sampleText(10)).id
        #expect(second > first)
        spool.close()
    }
}

@Suite("Spool: space comes back (issue 3 item 4)")
struct SpoolSpaceTests {
    @Test("a message stuck for days does not keep the segments after it: the spool stays bounded")
    func stuckMessageCompacted() {
        let dir = TempDir()
        let segmentSize = 64 * 1024
        let stuckText = sampleText(30_000, seed: 99)
        var stuckID: UInt64 = 0
        var peak: Int64 = 0
        do {
            let (spool, _) = openSpool(dir, segmentSize: segmentSize)
            stuckID = receive(spool, ["stuck@example.com", "done@example.com"], text: stuckText).id
            _ = spool.flush()
            spool.recordOutcome(stuckID, recipient: 1, .delivered, now: 0)
            // Weeks of traffic that is delivered at once, around the stuck message.
            for i in 0..<600 {
                let id = receive(spool, ["r@example.com"], text: sampleText(5_000, seed: UInt8(i % 200))).id
                _ = spool.flush()
                spool.recordOutcome(id, recipient: 0, .delivered, now: 0)
                spool.compactIfNeeded(now: 0)
                _ = spool.flush()
                peak = max(peak, spool.totalBytes)
            }
            #expect(spool.relocatedMessages > 0)
            // Live text is 30 KB: the bound is twice that plus two segments, and one
            // segment of slack while the next copy is due.
            #expect(peak <= 2 * (30_000 + 256) + 3 * segmentSize, "peak spool size \(peak)")
            #expect(dir.segments().count <= 5)
            spool.close()
        }
        // After a restart the stuck message is still there, once, with its finished
        // recipient remembered and its text intact.
        let (spool, report) = openSpool(dir, segmentSize: segmentSize)
        #expect(report.queued == 1)
        let m = spool.queue.message(stuckID)
        #expect(m?.pendingRecipients == [0])
        if let m { #expect(readBack(spool, m)?.1 == stuckText) }
        spool.close()
    }
}

@Suite("Spool: expiry deadlines at recovery (issue 3 item 8)")
struct SpoolExpiryTests {
    @Test("recovered messages get deadlines from the arrival only when it was synchronised")
    func deadlinesAtRecovery() {
        let dir = TempDir()
        let day: Int64 = 86400
        let now = Int64(1_796_000_000)
        do {
            let spool = Spool(dir: dir.path, segmentSize: 1 << 20, maxSize: 1 << 30, log: Log(quiet: true),
                              expiry: ExpiryPolicy(maxAge: Int(5 * day)))
            _ = spool.open(clock: ClockReading(wall: now, monotonic: 0, synchronised: true))
            for (arrival, synced) in [(now - 2 * day, true), (now - 2 * day, false), (600, false)] {
                var t = try! spool.begin(envelope(["a@example.com"]), arrival: arrival, arrivalSynchronised: synced, now: 0).get()
                _ = Array("x\r\n".utf8).withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
                _ = spool.commit(t, now: 0)
            }
            _ = spool.flush()
            spool.close()
        }
        let spool = Spool(dir: dir.path, segmentSize: 1 << 20, maxSize: 1 << 30, log: Log(quiet: true),
                          expiry: ExpiryPolicy(maxAge: Int(5 * day)))
        _ = spool.open(clock: ClockReading(wall: now, monotonic: 1000 * 1_000_000_000, synchronised: true))
        #expect(spool.queue.messages.map { $0.expiresAt } == [1000 + 3 * day, 1000 + 5 * day, 1000 + 5 * day])
        spool.close()
    }
}

@Suite("Spool: SMTPUTF8 and DSN parameters survive a restart (SpoolCodec version 2)")
struct SpoolParameterRecoveryTests {
    @Test("the envelope's SMTPUTF8, RET, ENVID, NOTIFY and ORCPT are read back after a restart as they were received")
    func parametersRecovered() {
        let dir = TempDir()
        var env = Envelope(heloName: "client.example", esmtp: true,
                           from: Mailbox.parse(Array("pelé@example.com".utf8)[...], allowNull: true, utf8: true)!,
                           recipients: [Mailbox.parse(Array("用户@例子.广告".utf8)[...], allowNull: false, utf8: true)!,
                                        mailbox("b@example.com")],
                           eightBit: true)
        env.smtputf8 = true
        env.ret = .headers
        env.envelopeID = Array("QQ+2B314159".utf8)
        env.recipientParameters = [RecipientParameters(notify: .never, orcpt: Array("utf-8;用户@例子.广告".utf8)), .none]
        let text = sampleText(3000)
        do {
            let (spool, _) = openSpool(dir)
            var t = try! spool.begin(env, arrival: 1_700_000_000, now: 0).get()
            _ = text.withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
            #expect((try? spool.commit(t, now: 0).get()) != nil)
            #expect(spool.flush().error == nil)
            spool.close()
        }
        let (spool, report) = openSpool(dir)
        #expect(report.queued == 1)
        guard let m = spool.queue.messages.first, let (e, back) = readBack(spool, m) else {
            Issue.record("not queued")
            return
        }
        #expect(back == text)
        #expect(e.smtputf8 && e.eightBit)
        #expect(e.from == Array("pelé@example.com".utf8))
        #expect(e.ret == .headers)
        #expect(e.envelopeID == Array("QQ+2B314159".utf8))
        #expect(e.recipientParameters == env.recipientParameters)
        spool.close()
    }
}
