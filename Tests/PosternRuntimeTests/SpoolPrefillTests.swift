import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The zero-filled room after the active segment's records (`Spool.prefillWindow`,
/// "Zero-filled room" in SpoolCodec.swift): written ahead while the syncs cover
/// small writes, so the records after it overwrite blocks the file has and their
/// fdatasync writes no inode (issue 11); read as the end of the records.
@Suite("Spool: zero-filled room ahead of small records (issue 11)")
struct SpoolPrefillTests {
    func newSpool(_ disk: SimulatedDisk) -> Spool { simulatedSpool(disk, segmentSize: 4 << 20) }

    /// A message received and synced, as the receiver does it.
    @discardableResult
    func receive(_ spool: Spool, _ size: Int, seed: UInt8 = 0) -> UInt64 {
        let t = try! spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: 0).get()
        var text = sampleText(size, seed: seed)
        var t2 = t
        while text.count > SpoolCodec.maxTextPayload {
            _ = text.prefix(SpoolCodec.maxTextPayload).withUnsafeBytes { spool.appendText(&t2, $0, now: 0) }
            text.removeFirst(SpoolCodec.maxTextPayload)
        }
        _ = text.withUnsafeBytes { spool.commit(t2, lastText: $0, now: 0) }
        _ = spool.flush()
        return t.id
    }

    func fileSize(_ disk: SimulatedDisk, _ spool: Spool) -> Int {
        disk.names[spool.path(spool.activeSequence)]?.current.count ?? -1
    }

    func reopen(_ disk: SimulatedDisk) -> (Spool, RecoveryReport) {
        let spool = Spool(dir: "/spool", segmentSize: 4 << 20, maxSize: 1 << 30,
                          log: Log(showDebug: false, quiet: true), storage: disk)
        guard case .success(let report) = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0,
                                                                        synchronised: true)) else {
            Issue.record("spool did not open")
            return (spool, RecoveryReport())
        }
        return (spool, report)
    }

    @Test("small messages: the first write fills 64 KiB of zeros after itself, in the same pwritev; the next ones overwrite them")
    func roomAhead() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let before = disk.writes
        receive(spool, 2000)
        #expect(disk.writes - before == 2, "the envelope, then the text and commit: no write of its own for the zeros")
        let size = fileSize(disk, spool)
        #expect(size >= spool.activeOffset + Spool.prefillWindow - 2100)
        #expect(size <= spool.activeOffset + Spool.prefillWindow)
        let file = disk.names[spool.path(spool.activeSequence)]!.current
        #expect(file[spool.activeOffset...].allSatisfy { $0 == 0 })
        // The next messages go into the room: the file does not grow...
        let grown = size
        var ids: [UInt64] = []
        while spool.preparedEnd - spool.activeOffset > 2200 {
            ids.append(receive(spool, 2000, seed: UInt8(ids.count % 200)))
            #expect(fileSize(disk, spool) == grown)
        }
        #expect(ids.count >= 25)
        // ...until one passes its end and takes the next 64 KiB with it.
        var more = 0
        while fileSize(disk, spool) == grown && more < 3 { ids.append(receive(spool, 2000)); more += 1 }
        #expect(more <= 2)
        #expect(fileSize(disk, spool) > grown + Spool.prefillWindow - 2200)
        #expect(spool.preparedEnd == fileSize(disk, spool))
        for id in ids {
            guard let m = spool.queue.message(id) else { Issue.record("not queued"); continue }
            #expect(readBack(spool, m) != nil)
        }
    }

    @Test("large messages fill no room: once the syncs cover more than half the window, a write ends the file")
    func noRoomForLarge() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        for i in 0..<4 { receive(spool, 200_000, seed: UInt8(i)) }
        #expect(spool.syncBytes > Spool.prefillWindow / 2)
        #expect(!spool.prefills)
        receive(spool, 200_000, seed: 9)
        #expect(fileSize(disk, spool) == spool.activeOffset)
        // Small messages again: the average falls within a few dozen syncs and
        // the room comes back.
        var n = 0
        while !spool.prefills && n < 200 { receive(spool, 2000, seed: UInt8(n % 200)); n += 1 }
        #expect(spool.prefills)
        #expect(n > 3, "one small message does not switch it")
        receive(spool, 2000)
        #expect(fileSize(disk, spool) > spool.activeOffset)
    }

    @Test("the average of bytes per sync moves an eighth of the way, and wild samples stay within 32 bits")
    func averageBytes() {
        #expect(Spool.averageBytes(0, 8000) == 1000)
        #expect(Spool.averageBytes(8000, 0) == 7000)
        #expect(Spool.averageBytes(0, -5) == 0)
        #expect(Spool.averageBytes(0, Int.max) == (1 << 30) / 8)
        var a = 0
        for _ in 0..<500 { a = Spool.averageBytes(a, Int.max) }
        #expect(a <= 1 << 30)
        #expect(a > (1 << 30) - 8)
    }

    @Test("recovery: records followed by zero-filled room scan to their end, with no torn tail")
    func recoveryAcrossRoom() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let ids = (0..<3).map { receive(spool, 2000, seed: UInt8($0)) }
        let seg = spool.path(spool.activeSequence)
        let end = spool.activeOffset
        spool.close()
        #expect(disk.names[seg]!.current.count > end)
        let (again, report) = reopen(disk)
        #expect(report.tornTails.isEmpty)
        #expect(report.skippedCount == 0)
        #expect(again.queue.messages.map { $0.id } == ids)
        // Room shorter than a record header ends the file as well.
        again.close()
        disk.names[seg]!.current.removeLast(disk.names[seg]!.current.count - (end + 5))
        let (third, report3) = reopen(disk)
        #expect(report3.tornTails.isEmpty)
        #expect(third.queue.messages.map { $0.id } == ids)
        third.close()
    }

    @Test("recovery: a byte that is not zero in the room is damage, reported where it is; the messages before it are kept")
    func damageInRoom() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let ids = (0..<2).map { receive(spool, 2000, seed: UInt8($0)) }
        let seg = spool.path(spool.activeSequence)
        let end = spool.activeOffset
        spool.close()
        disk.names[seg]!.current[end + 40_000] = 7
        let (again, report) = reopen(disk)
        let name = SpoolCodec.segmentName(spool.activeSequence)
        #expect(report.tornTails == ["\(name):\(end + 40_000) bytes after the zero-filled end of the records"])
        #expect(again.queue.messages.map { $0.id } == ids)
        again.close()
        // Zeros further than a writer fills ahead are damage too, and the
        // check reads no further than that (a crafted file of 2 GiB of zeros
        // costs the scan 64 KiB).
        disk.names[seg]!.current = Array(disk.names[seg]!.current[..<end])
            + [UInt8](repeating: 0, count: 20 << 20)
        let readsBefore = disk.reads
        let (third, report3) = reopen(disk)
        #expect(report3.tornTails == ["\(name):\(end + SpoolCodec.maxZeroFill) zero-filled room longer than a writer leaves"])
        #expect(third.queue.messages.map { $0.id } == ids)
        #expect(disk.reads - readsBefore < 20, "20 MiB of zeros read 64 KiB at a time would take 320")
        third.close()
        // Exactly as much room as a writer leaves is the end, not damage.
        disk.names[seg]!.current = Array(disk.names[seg]!.current[..<(end + SpoolCodec.maxZeroFill)])
        let (fourth, report4) = reopen(disk)
        #expect(report4.tornTails.isEmpty)
        #expect(fourth.queue.messages.map { $0.id } == ids)
        fourth.close()
    }

    @Test("a disk with room for the records but not all the zeros: the records are whole, and the room that fit serves")
    func roomDoesNotFit() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        receive(spool, 2000)
        dropZeroRoom(spool)
        disk.capacity = disk.used() + 4000
        let id = receive(spool, 2000, seed: 3)
        guard let m = spool.queue.message(id) else { Issue.record("refused on a disk with room for it"); return }
        #expect(readBack(spool, m)?.1 == sampleText(2000, seed: 3))
        #expect(disk.used() == disk.capacity)
        #expect(spool.preparedEnd == fileSize(disk, spool))
        // The next message does not fit: refused, its partial record cut off.
        #expect(tryReceive(spool, sampleText(3000)) == nil)
        #expect(spool.queue.count == 2)
        #expect(!spool.prefills, "a disk short of space fills no room")
        spool.close()
        let (again, report) = reopen(disk)
        #expect(report.tornTails.isEmpty, "\(report.tornTails)")
        #expect(again.queue.count == 2)
        again.close()
    }
}
