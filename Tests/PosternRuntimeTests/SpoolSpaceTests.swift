import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// A spool over a simulated disk, for the full-disk tests.
func simulatedSpool(_ disk: SimulatedDisk, segmentSize: Int = 1 << 20, maxSize: Int64 = 1 << 30) -> Spool {
    let spool = Spool(dir: "/spool", segmentSize: segmentSize, maxSize: maxSize, log: Log(quiet: true), storage: disk)
    guard case .success = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true)) else {
        Issue.record("spool did not open")
        return spool
    }
    return spool
}

/// Receives one message; nil when the spool refused it at any step.
func tryReceive(_ spool: Spool, _ text: [UInt8], now: Int64 = 0) -> UInt64? {
    guard case .success(var t) = spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: now) else { return nil }
    var i = 0
    while i < text.count {
        let end = min(text.count, i + 16 * 1024)
        if case .failure = text[i..<end].withUnsafeBytes({ spool.appendText(&t, $0, now: now) }) {
            spool.abort(t, now: now)
            return nil
        }
        i = end
    }
    guard case .success = spool.commit(t, now: now) else { return nil }
    let flushed = spool.flush()
    return flushed.committed.contains { $0.id == t.id } ? t.id : nil
}

/// Fills the spool until a message is refused; returns the ids accepted.
func fillUntilRefused(_ spool: Spool, size: Int, limit: Int = 10_000) -> [UInt64] {
    var ids: [UInt64] = []
    for i in 0..<limit {
        guard let id = tryReceive(spool, sampleText(size, seed: UInt8(i % 250))) else { return ids }
        ids.append(id)
    }
    Issue.record("\(limit) messages accepted without a refusal")
    return ids
}

func segmentNames(_ disk: SimulatedDisk) -> [String] {
    disk.names.keys.filter { $0.hasSuffix(".seg") }.sorted()
}

/// Gives back the zero-filled room after the active segment's records
/// (`Spool.prefillWindow`), which the next records would use before the disk
/// could refuse them: for tests of what a full disk refuses.
func dropZeroRoom(_ spool: Spool) {
    guard spool.activeFD >= 0 else { return }
    _ = spool.storage.truncate(spool.activeFD, to: spool.activeOffset)
    spool.preparedEnd = spool.activeOffset
}

/// Another program's file on the same file system.
func hog(_ disk: SimulatedDisk, _ bytes: Int) {
    let inode = SimulatedDisk.Inode()
    inode.current = [UInt8](repeating: 0, count: bytes)
    inode.durable = inode.current
    disk.names["/other/hog"] = inode
}

@Suite("Spool: a full disk recovers as soon as space is free (issue 7 item 4)")
struct SpoolFullDiskTests {
    @Test("a full disk whose only segment is the active one recovers when the queue drains")
    func activeSegmentReclaimed() {
        let disk = SimulatedDisk()
        disk.capacity = 512 * 1024
        // The segment size is larger than the disk: the active segment is never
        // closed by size, as with a 4 MiB segment on a 4 MiB tmpfs.
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        let ids = fillUntilRefused(spool, size: 20_000)
        #expect(ids.count >= 20)
        #expect(!spool.acceptsMail(now: 1), "full: MAIL is refused at once")
        #expect(segmentNames(disk).count == 1)
        for id in ids { spool.recordOutcome(id, recipient: 0, .delivered, now: 2) }
        _ = spool.flush()
        #expect(spool.queue.isEmpty)
        #expect(spool.reclaimedSegments == 1)
        // No waiting period: the very next MAIL is accepted, and the message is.
        #expect(spool.acceptsMail(now: 3))
        #expect(tryReceive(spool, sampleText(20_000), now: 3) != nil)
        #expect(segmentNames(disk).count == 1)
        #expect(spool.totalBytes < 30_000)
        // And it fills and recovers again.
        let again = fillUntilRefused(spool, size: 20_000)
        #expect(again.count >= 20)
        spool.close()
    }

    @Test("when even a new segment's header does not fit, the finished segment is deleted first")
    func rollFailsDeleteFirst() {
        let disk = SimulatedDisk()
        disk.capacity = 256 * 1024
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        var ids: [UInt64] = []
        for i in 0..<3 { ids.append(tryReceive(spool, sampleText(20_000, seed: UInt8(i)))!) }
        for id in ids { spool.recordOutcome(id, recipient: 0, .delivered, now: 0) }
        _ = spool.flush()
        let before = segmentNames(disk)
        #expect(before.count == 1)
        dropZeroRoom(spool)
        // Another program takes every byte left.
        hog(disk, disk.capacity! - disk.used())
        #expect(disk.used() == disk.capacity)
        // The envelope does not fit; nothing is live, so the spool reclaims: the
        // new segment's header cannot be written, the old segment goes first,
        // and the envelope is written in the new one.
        let t = spool.begin(envelope(["a@example.com"]), arrival: 0, now: 0)
        #expect((try? t.get()) != nil)
        let after = segmentNames(disk)
        #expect(after.count == 1)
        #expect(after != before)
        #expect(spool.reclaimedSegments == 1)
        if case .success(let t) = t { spool.abort(t, now: 0) }
        spool.close()
    }

    @Test("with nothing to reclaim and not even room for a header, every write fails with ENOSPC and the spool keeps going")
    func nothingToReclaim() {
        let disk = SimulatedDisk()
        disk.capacity = 2 * Int(Spool.minimumFreeSpace)
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        hog(disk, disk.capacity! - disk.used())
        for _ in 0..<3 {
            guard case .failure(let e) = spool.begin(envelope(["a@example.com"]), arrival: 0, now: 0) else {
                Issue.record("a write succeeded on a full disk")
                continue
            }
            #expect(e.isNoSpace)
        }
        #expect(!spool.acceptsMail(now: 0))
        #expect(spool.ioFailure == nil, "a full disk is not a failing disk")
        // The other program frees its space: accepted at once, no waiting period.
        disk.names["/other/hog"] = nil
        #expect(spool.acceptsMail(now: 1))
        #expect(tryReceive(spool, sampleText(5_000)) != nil)
        spool.close()
    }

    @Test("space freed by another program is seen at once, also with mail queued")
    func otherProgramFreesSpace() {
        let disk = SimulatedDisk()
        disk.capacity = 256 * 1024
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        hog(disk, 150 * 1024)
        let ids = fillUntilRefused(spool, size: 20_000)
        #expect(!ids.isEmpty)
        #expect(!spool.acceptsMail(now: 0))
        #expect(!spool.acceptsMail(now: 30_000_000_000), "still full: still refused")
        // Nothing is reclaimed while messages are queued.
        #expect(spool.reclaimedSegments == 0)
        disk.names["/other/hog"] = nil
        #expect(spool.acceptsMail(now: 30_000_000_001))
        #expect(tryReceive(spool, sampleText(20_000)) != nil)
        #expect(spool.queue.count == ids.count + 1)
        spool.close()
    }

    @Test("a recipient record that cannot be written on a full disk still lets the drained spool recover")
    func outcomesOnFullDisk() {
        let disk = SimulatedDisk()
        disk.capacity = 300 * 1024
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        let ids = fillUntilRefused(spool, size: 10_000)
        // Not a byte left for the recipient records.
        hog(disk, disk.capacity! - disk.used())
        for id in ids { spool.recordOutcome(id, recipient: 0, .delivered, now: 0) }
        _ = spool.flush()
        #expect(spool.queue.isEmpty)
        disk.names["/other/hog"] = nil
        #expect(spool.acceptsMail(now: 0))
        #expect(disk.used() < 10_000, "the finished segment is gone (\(disk.used()) bytes in use)")
        #expect(tryReceive(spool, sampleText(10_000)) != nil)
        spool.close()
    }
}

@Suite("Spool: the quota and the flash-wear rule (issue 7 item 4)")
struct SpoolQuotaTests {
    @Test("max_size reached by the active segment alone recovers when the queue drains")
    func quotaReclaimed() {
        let disk = SimulatedDisk()
        let spool = simulatedSpool(disk, segmentSize: 256 * 1024, maxSize: 256 * 1024)
        var ids: [UInt64] = []
        while spool.acceptsMail(now: 0) {
            guard let id = tryReceive(spool, sampleText(20_000)) else { break }
            ids.append(id)
        }
        #expect(ids.count >= 10)
        #expect(!spool.acceptsMail(now: 0))
        for id in ids { spool.recordOutcome(id, recipient: 0, .delivered, now: 0) }
        #expect(spool.acceptsMail(now: 1))
        // The last message may have rolled into a second segment, which then holds
        // its tail; the full one is gone either way.
        #expect(spool.totalBytes < 20_000)
        #expect(segmentNames(disk).count == 1)
        spool.close()
    }

    @Test("a quota lowered below the spool by a reload recovers once nothing is live")
    func quotaLowered() {
        let disk = SimulatedDisk()
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        for i in 0..<10 {
            let id = tryReceive(spool, sampleText(20_000, seed: UInt8(i)))!
            spool.recordOutcome(id, recipient: 0, .delivered, now: 0)
        }
        _ = spool.flush()
        spool.maxSize = 100_000
        #expect(spool.acceptsMail(now: 0))
        #expect(spool.totalBytes < 100_000)
    }

    @Test("without pressure a drained queue leaves the active segment alone: no file per message")
    func noChurnWithoutPressure() {
        let disk = SimulatedDisk()
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        let first = segmentNames(disk)
        for i in 0..<50 {
            let id = tryReceive(spool, sampleText(2_000, seed: UInt8(i)))!
            spool.recordOutcome(id, recipient: 0, .delivered, now: 0)
            _ = spool.flush()
            #expect(spool.acceptsMail(now: Int64(i) * 2_000_000_000))
        }
        #expect(segmentNames(disk) == first)
        #expect(spool.reclaimedSegments == 0)
    }

    @Test("under pressure nothing is reclaimed while a message is live in the active segment")
    func liveMessageKept() {
        let disk = SimulatedDisk()
        disk.capacity = 200 * 1024
        let spool = simulatedSpool(disk, segmentSize: 4 << 20)
        let ids = fillUntilRefused(spool, size: 20_000)
        for id in ids.dropLast() { spool.recordOutcome(id, recipient: 0, .delivered, now: 0) }
        _ = spool.flush()
        #expect(spool.reclaimedSegments == 0)
        #expect(spool.queue.count == 1)
        #expect(readBack(spool, spool.queue.messages[0])?.1.count == 20_000)
        spool.recordOutcome(ids.last!, recipient: 0, .delivered, now: 0)
        #expect(spool.reclaimedSegments == 1)
    }
}
