import Testing
@testable import PosternCore
@testable import PosternRuntime

/// `Spool.commit(_:lastText:now:)`: the end of a message's text and its commit
/// record go to the segment in one pwritev (issue 11), and read back as if
/// they had been written apart.
@Suite("Commit with the last text: one write, the same records (issue 11)")
struct SpoolCommitWriteTests {
    func newSpool(_ disk: SimulatedDisk) -> Spool {
        let spool = Spool(dir: "/spool", segmentSize: 1 << 20, maxSize: 1 << 30,
                          log: Log(showDebug: false, quiet: true), storage: disk)
        _ = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true))
        return spool
    }

    /// Receives `first` through appendText and `last` through the commit.
    func receive(_ spool: Spool, first: [UInt8], last: [UInt8]) -> (UInt64, Result<Int, Errno>) {
        var t = try! spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: 0).get()
        if !first.isEmpty { _ = first.withUnsafeBytes { spool.appendText(&t, $0, now: 0) } }
        return (t.id, last.withUnsafeBytes { spool.commit(t, lastText: $0, now: 0) })
    }

    @Test("a 2 KB message: the envelope, then its text and commit in one write; read back whole, its size in the index")
    func oneWrite() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let text = sampleText(2000)
        let before = disk.writes
        let t = try! spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: 0).get()
        #expect(disk.writes == before + 1)
        let r = text.withUnsafeBytes { spool.commit(t, lastText: $0, now: 0) }
        #expect((try? r.get()) == 2000)
        #expect(disk.writes == before + 2)
        _ = spool.flush()
        guard let m = spool.queue.messages.first else { Issue.record("not queued"); return }
        #expect(m.size == 2000)
        #expect(readBack(spool, m)?.1 == text)
    }

    @Test("text before and after: every piece read back in order; an empty last text writes the commit alone")
    func piecesInOrder() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let a = sampleText(70_000, seed: 1), b = sampleText(300, seed: 2)
        let (id1, r1) = receive(spool, first: a, last: b)
        #expect((try? r1.get()) == a.count + b.count)
        let before = disk.writes
        let (id2, r2) = receive(spool, first: b, last: [])
        #expect((try? r2.get()) == b.count)
        #expect(disk.writes == before + 3)     // envelope, text, commit
        _ = spool.flush()
        for (id, text) in [(id1, a + b), (id2, b)] {
            guard let m = spool.queue.message(id) else { Issue.record("not queued"); continue }
            #expect(readBack(spool, m)?.1 == text)
        }
    }

    @Test("a last text larger than one record is written as records before the commit, and reads back whole")
    func largeLastText() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let text = sampleText(SpoolCodec.maxTextPayload * 2 + 5)
        let (id, r) = receive(spool, first: [], last: text)
        #expect((try? r.get()) == text.count)
        _ = spool.flush()
        guard let m = spool.queue.message(id) else { Issue.record("not queued"); return }
        #expect(readBack(spool, m)?.1 == text)
    }

    @Test("a full disk: the combined write fails whole, no torn record is left, and the next message is read back")
    func fullDisk() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let (keep, r0) = receive(spool, first: [], last: sampleText(100, seed: 7))
        #expect((try? r0.get()) != nil)
        _ = spool.flush()
        // Room for the next envelope but not for its text.
        dropZeroRoom(spool)
        disk.capacity = disk.used() + 200
        let (lost, r) = receive(spool, first: [], last: sampleText(2000, seed: 8))
        if case .success = r { Issue.record("committed on a full disk") }
        _ = spool.flush()
        #expect(spool.queue.message(lost) == nil)
        disk.capacity = nil
        let (next, r2) = receive(spool, first: [], last: sampleText(500, seed: 9))
        #expect((try? r2.get()) == 500)
        _ = spool.flush()
        for (id, text) in [(keep, sampleText(100, seed: 7)), (next, sampleText(500, seed: 9))] {
            guard let m = spool.queue.message(id) else { Issue.record("not queued"); continue }
            #expect(readBack(spool, m)?.1 == text)
        }
    }
}
