import CLibc
@testable import PosternCore
@testable import PosternRuntime

// The spool's recovery scan (Spool.openReadOnly, or Spool.open, which also
// deletes and starts segments) over one to three segment files made of the
// fuzzer's bytes, in memory behind the SpoolStorage seam; then every message it
// queued is read back the way delivery reads it (MessageReader).
//
// Input: two mode bytes, then each file's length (two bytes) and contents, the
// last file taking the rest. Mode bits: 0–1 file count, 2 give each file a valid
// header, 3 seal the records (a valid length, kind and CRC-32C for each, so the
// scan gets past the checksum), 4 the clock is synchronised, 5 open for writing;
// second byte: 0 sequence numbers above 2^32, 1–3 all set: make the first record
// larger than the scan's 64 KiB buffer (rarely, as it is slow), 4 end each file
// with zero-filled room as the writer leaves it (bits 5–7: how long, 1 to 63,001
// bytes), so sealed records reach the zero-filled end ("Zero-filled room"
// in SpoolCodec.swift).

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let mode = input.byte()
    let mode2 = input.byte()
    let files = Int(mode & 3) % 3 + 1
    let disk = MemoryDisk()
    // Sequence numbers around 2^32: the spool does not read segments it could
    // not index (issue 7 item 7), and must not trap on them.
    let base: UInt64 = mode2 & 1 != 0 ? 0xffff_fff0 : 1
    for k in 0..<files {
        let length = k == files - 1 ? input.remaining : input.int(0...65535) % (input.remaining + 1)
        var bytes = Array(input.bytes(length))
        let seq = base + UInt64(k) * 8
        if mode & 4 != 0 { bytes = SpoolCodec.segmentHeader(sequence: seq) + bytes }
        if mode & 8 != 0 { sealRecords(&bytes, inflateFirst: mode2 & 0x0e == 0x0e) }
        if mode2 & 0x10 != 0 { bytes += [UInt8](repeating: 0, count: Int(mode2 >> 5) * 9_000 + 1) }
        disk.files["/spool/" + SpoolCodec.segmentName(seq)] = bytes
    }
    disk.files["/spool/lock"] = []
    let spool = Spool(dir: "/spool", segmentSize: 64 * 1024, maxSize: 1 << 30, log: Log(quiet: true), storage: disk)
    let clock = ClockReading(wall: 1_800_000_000, monotonic: 5_000_000_000, synchronised: mode & 0x10 != 0)
    let opened = mode & 0x20 != 0 ? spool.open(clock: clock) : spool.openReadOnly(clock: clock)
    guard case .success(let report) = opened else { return }
    require(report.queued == spool.queue.count, "the report and the queue disagree")
    require(report.queued <= report.records, "more messages than records")
    let reader = MessageReader(capacity: 4096)
    for m in spool.queue.messages {
        require(m.recipientCount > 0 || m.isFinished, "a queued message with no recipient")
        readBack(m, spool, reader)
    }
    if mode & 0x20 != 0 { spool.close() }
}

/// Reads a queued message as the sender would: envelope, then text to the commit.
/// Its text must add up to the size its commit record gave.
func readBack(_ m: QueuedMessage, _ spool: Spool, _ reader: MessageReader) {
    guard case .success = reader.open(m, spool: spool) else { return }
    var size = 0
    while true {
        switch reader.next(spool: spool) {
        case .failure: return
        case .success(.end):
            // A second envelope and commit with a queued message's id must not
            // leave it reading back without its text (corpus: reported-copy-…).
            require(size == m.size, "read \(size) bytes of a \(m.size)-byte message")
            return
        case .success(.text):
            size += reader.pendingText.count
            reader.advance(reader.pendingText.count)
        }
    }
}

/// Rewrites the records after the segment header so each passes the checks
/// before its content: a payload length that fits the file, a known kind, zero
/// padding and a correct CRC-32C. The first can be padded with 65,536 zero bytes,
/// past the scan's 64 KiB read buffer.
func sealRecords(_ bytes: inout [UInt8], inflateFirst: Bool) {
    var at = SpoolCodec.segmentHeaderLength
    var first = true
    while bytes.count - at >= SpoolCodec.recordOverhead {
        let room = bytes.count - at - SpoolCodec.recordOverhead
        var n = Int(SpoolCodec.getLE(bytes.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[at..<(at + 4)]) }, 0, 4) ?? 0) % (room + 1)
        if first && inflateFirst {
            bytes.insert(contentsOf: [UInt8](repeating: 0, count: 65_536), at: at + SpoolCodec.recordHeaderLength + n)
            n += 65_536
        }
        first = false
        let kind = SpoolCodec.Kind(rawValue: bytes[at + 4]) ?? SpoolCodec.Kind(rawValue: bytes[at + 4] % 5 + 1) ?? .text
        let id = bytes.withUnsafeBytes { SpoolCodec.getLE(UnsafeRawBufferPointer(rebasing: $0[at..<(at + 16)]), 8, 8) } ?? 0
        bytes.replaceSubrange(at..<(at + SpoolCodec.recordHeaderLength),
                              with: SpoolCodec.recordHeader(kind: kind, id: id, payloadLength: n))
        let crc = CRC32C.checksum(Array(bytes[at..<(at + SpoolCodec.recordHeaderLength + n)]))
        let trailer = at + SpoolCodec.recordHeaderLength + n
        for i in 0..<4 { bytes[trailer + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        at = trailer + 4
    }
}

/// Files in memory: no power loss, no errors, just enough of SpoolStorage for the
/// spool to scan, read, append, delete and sync.
final class MemoryDisk: SpoolStorage {
    var files: [String: [UInt8]] = [:]
    var open: [Int32: String] = [:]
    var nextFD: Int32 = 3

    func makeDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }

    func lock(_ path: String) -> Result<Int32, Errno> { openFile(path) }

    func list(_ directory: String) -> Result<[String], Errno> {
        let prefix = directory + "/"
        return .success(files.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
    }

    func openForReading(_ path: String) -> Result<Int32, Errno> {
        files[path] == nil ? .failure(Errno(ENOENT, "open")) : openFile(path)
    }

    func create(_ path: String) -> Result<Int32, Errno> {
        if files[path] != nil { return .failure(Errno(EEXIST, "open")) }
        files[path] = []
        return openFile(path)
    }

    func openFile(_ path: String) -> Result<Int32, Errno> {
        nextFD += 1
        open[nextFD] = path
        return .success(nextFD)
    }

    func content(_ fd: Int32) -> [UInt8]? { open[fd].flatMap { files[$0] } }

    func size(_ fd: Int32) -> Result<Int, Errno> {
        guard let c = content(fd) else { return .failure(Errno(EBADF, "fstat")) }
        return .success(c.count)
    }

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        guard let c = content(fd) else { return .failure(Errno(EBADF, "pread")) }
        guard offset < c.count else { return .success(0) }
        let n = min(buffer.count, c.count - offset)
        c.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + n)])) }
        return .success(n)
    }

    func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        guard let path = open[fd], var c = files[path] else { return .failure(Errno(EBADF, "pwritev")) }
        var at = offset
        for p in parts {
            if c.count < at + p.count { c += [UInt8](repeating: 0, count: at + p.count - c.count) }
            c.replaceSubrange(at..<(at + p.count), with: p)
            at += p.count
        }
        files[path] = c
        return .success(at - offset)
    }

    func syncData(_ fd: Int32) -> Result<Void, Errno> { .success(()) }

    func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno> {
        guard let path = open[fd], let c = files[path] else { return .failure(Errno(EBADF, "ftruncate")) }
        files[path] = length <= c.count ? Array(c[0..<length]) : c + [UInt8](repeating: 0, count: length - c.count)
        return .success(())
    }

    func close(_ fd: Int32) { open[fd] = nil }

    func unlink(_ path: String) -> Result<Void, Errno> {
        files[path] = nil
        return .success(())
    }

    func syncDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }
    func availableSpace(_ path: String) -> Result<Int64, Errno> { .success(1 << 30) }
}
