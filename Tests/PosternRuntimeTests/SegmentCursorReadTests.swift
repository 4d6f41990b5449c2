import Testing
@testable import PosternCore
@testable import PosternRuntime

/// How the spool's one reader reads (`SegmentCursor.fill`): as few preads as a
/// message needs, and every record whole whatever counts the kernel returns.
@Suite("Reading segments: one pread for a small message, short reads survived (issue 11)")
struct SegmentCursorReadTests {
    func spoolWith(_ disk: SimulatedDisk, texts: [[UInt8]]) -> (Spool, [QueuedMessage]) {
        let spool = Spool(dir: "/spool", segmentSize: 1 << 20, maxSize: 1 << 30,
                          log: Log(showDebug: false, quiet: true), storage: disk)
        _ = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true))
        let ids = texts.map { receive(spool, ["r@example.com"], text: $0, chunk: 70_000).id }
        _ = spool.flush()
        return (spool, ids.compactMap { spool.queue.message($0) })
    }

    /// Reads the message as the sender does, with its own reader that keeps
    /// the segment open; returns the text and the reads it took.
    func send(_ reader: MessageReader, _ m: QueuedMessage, _ spool: Spool, _ disk: SimulatedDisk) -> ([UInt8]?, Int) {
        let before = disk.reads
        guard case .success = reader.open(m, spool: spool) else { return (nil, disk.reads - before) }
        var out: [UInt8] = []
        while true {
            switch reader.next(spool: spool) {
            case .success(.end): return (out, disk.reads - before)
            case .success(.text):
                out += Array(reader.pendingText)
                reader.advance(reader.pendingText.count)
            case .failure: return (nil, disk.reads - before)
            }
        }
    }

    @Test("a 2 KB message in a segment kept open is read with one pread: none is spent finding the end of the file")
    func onePreadPerSmallMessage() {
        let disk = SimulatedDisk()
        let texts = [sampleText(2000, seed: 1), sampleText(2000, seed: 2)]
        let (spool, queued) = spoolWith(disk, texts: texts)
        #expect(queued.count == 2)
        let reader = MessageReader(keepsFileOpen: true)
        // The first opens the segment: its header, then the records.
        let first = send(reader, queued[0], spool, disk)
        #expect(first.0 == texts[0] && first.1 == 2)
        let second = send(reader, queued[1], spool, disk)
        #expect(second.0 == texts[1] && second.1 == 1)
        reader.releaseFile()
    }

    @Test("reads cut short (7 bytes each) still give every record whole: the segment header, small records, and a 65,516-byte one (larger than a 4 KiB reader)")
    func shortReads() {
        let disk = SimulatedDisk()
        let texts = [sampleText(2000, seed: 3), sampleText(70_000, seed: 4), sampleText(10, seed: 5)]
        let (spool, queued) = spoolWith(disk, texts: texts)
        #expect(queued.count == 3)
        disk.readLimit = 7
        for (i, m) in queued.enumerated() {
            // A 4 KiB reader too: the largest record goes through its temporary.
            for reader in [MessageReader(), MessageReader(capacity: 4096), MessageReader(keepsFileOpen: true)] {
                #expect(send(reader, m, spool, disk).0 == texts[i])
                reader.releaseFile()
            }
        }
    }
}
