import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// A disk whose files can be larger than what it keeps of them: a "hollow"
/// file reports its full length to fstat but holds only its segment header,
/// and reads end there. So a spool of several GiB can be recovered and counted
/// without writing (or holding) more than a few KiB. Everything the spool
/// writes itself is kept whole.
final class HollowDisk: SpoolStorage {
    final class File {
        var bytes: [UInt8] = []
        /// What fstat reports: at least `bytes.count`.
        var length = 0
    }

    var files: [String: File] = [:]
    var fds: [Int32: File] = [:]
    var nextFD: Int32 = 100
    var free: Int64 = 8 << 40

    /// A finished segment file of `length` bytes of which only the header is kept.
    func addHollowSegment(_ dir: String, sequence: UInt64, length: Int) {
        let f = File()
        f.bytes = SpoolCodec.segmentHeader(sequence: sequence)
        f.length = length
        files[dir + "/" + SpoolCodec.segmentName(sequence)] = f
    }

    func open(_ f: File) -> Int32 {
        nextFD += 1
        fds[nextFD] = f
        return nextFD
    }

    func makeDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }
    func lock(_ path: String) -> Result<Int32, Errno> { .success(open(File())) }

    func list(_ directory: String) -> Result<[String], Errno> {
        let prefix = directory + "/"
        return .success(files.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
    }

    func openForReading(_ path: String) -> Result<Int32, Errno> {
        guard let f = files[path] else { return .failure(Errno(ENOENT, "open \(path)")) }
        return .success(open(f))
    }

    func create(_ path: String) -> Result<Int32, Errno> {
        if files[path] != nil { return .failure(Errno(EEXIST, "open \(path)")) }
        let f = File()
        files[path] = f
        return .success(open(f))
    }

    func size(_ fd: Int32) -> Result<Int, Errno> { .success(fds[fd]!.length) }

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        let c = fds[fd]!.bytes
        guard offset < c.count else { return .success(0) }
        let n = min(buffer.count, c.count - offset)
        c.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
        return .success(n)
    }

    func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        let f = fds[fd]!
        var bytes: [UInt8] = []
        for p in parts { bytes.append(contentsOf: p) }
        if f.bytes.count < offset + bytes.count {
            f.bytes += [UInt8](repeating: 0, count: offset + bytes.count - f.bytes.count)
        }
        f.bytes.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        f.length = max(f.length, f.bytes.count)
        return .success(bytes.count)
    }

    func syncData(_ fd: Int32) -> Result<Void, Errno> { .success(()) }

    func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno> {
        let f = fds[fd]!
        if length < f.bytes.count { f.bytes = Array(f.bytes.prefix(length)) }
        f.length = length
        return .success(())
    }

    func close(_ fd: Int32) { fds[fd] = nil }

    func unlink(_ path: String) -> Result<Void, Errno> {
        files.removeValue(forKey: path) == nil ? .failure(Errno(ENOENT, "unlink \(path)")) : .success(())
    }

    func syncDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }
    func availableSpace(_ path: String) -> Result<Int64, Errno> { .success(free) }
}

@Suite("A spool larger than 2 GiB: 64-bit accounting on every board (issue 10 item 2)")
struct SpoolLargeTests {
    static let dir = "/spool"
    static let gib = 1 << 30
    static let wall: Int64 = 1_800_000_000

    func clock() -> ClockReading { ClockReading(wall: Self.wall, monotonic: 0, synchronised: true) }

    /// A spool whose oldest segment holds one queued message, followed by
    /// `hollow` finished segments of 1 GiB each; recovered by a fresh `Spool`.
    func largeSpool(hollow: Int, maxSize: Int64) -> (Spool, HollowDisk, UInt64) {
        let disk = HollowDisk()
        let first = Spool(dir: Self.dir, segmentSize: 1 << 20, maxSize: maxSize, log: Log(quiet: true), storage: disk)
        guard case .success = first.open(clock: clock()) else { fatalError("open") }
        guard let id = tryReceive(first, sampleText(5_000, seed: 7)) else { fatalError("receive") }
        first.close()
        for i in 0..<hollow {
            disk.addHollowSegment(Self.dir, sequence: UInt64(2 + i), length: Self.gib)
        }
        let spool = Spool(dir: Self.dir, segmentSize: 1 << 20, maxSize: maxSize, log: Log(quiet: true), storage: disk)
        guard case .success(let report) = spool.open(clock: clock()) else { fatalError("reopen") }
        #expect(report.queued == 1)
        #expect(report.tornTails.isEmpty)
        return (spool, disk, id)
    }

    @Test("Recovery counts 3 GiB of segments exactly, past Int32.max")
    func recoveryCountsPast2GiB() {
        let (spool, _, _) = largeSpool(hollow: 3, maxSize: 4 << 30)
        #expect(spool.segmentCount == 5)   // the message's, three of 1 GiB, the new active one
        #expect(spool.totalBytes > Int64(Int32.max))
        #expect(spool.totalBytes >= 3 << 30 && spool.totalBytes < (3 << 30) + (1 << 20))
        // Under max_size = 4G: still taking mail, and a new message is counted on top.
        #expect(spool.acceptsMail(now: 0))
        let before = spool.totalBytes
        #expect(tryReceive(spool, sampleText(20_000, seed: 3)) != nil)
        #expect(spool.totalBytes > before + 20_000 && spool.totalBytes < before + 21_000)
    }

    @Test("max_size = 2G on a 3 GiB spool: new mail refused (452), not a wrapped total that looks empty")
    func fullPast2GiB() {
        let (spool, _, _) = largeSpool(hollow: 3, maxSize: 2 << 30)
        #expect(!spool.acceptsMail(now: 0))
        #expect(spool.underPressure)
    }

    @Test("Delivering the last message frees all 3 GiB: the total comes back down, never below 0")
    func deliveredFreesPast2GiB() {
        let (spool, disk, id) = largeSpool(hollow: 3, maxSize: 2 << 30)
        #expect(!spool.acceptsMail(now: 0))
        #expect(spool.recordOutcome(id, recipient: 0, .delivered, now: 0))
        #expect(spool.totalBytes < 1 << 20)
        #expect(spool.totalBytes > 0)
        #expect(disk.files.keys.filter { $0.hasSuffix(".seg") }.count == 1)
        #expect(spool.acceptsMail(now: 1_000_000_000))
    }

    @Test("Lowering max_size below a >2 GiB spool on reload, then raising it")
    func reloadAcrossTheBoundary() {
        let (spool, _, _) = largeSpool(hollow: 4, maxSize: 8 << 30)
        #expect(spool.acceptsMail(now: 0))
        spool.maxSize = 3 << 30
        #expect(!spool.acceptsMail(now: 2_000_000_000))
        spool.maxSize = SpoolConfig.maxSizeCeiling
        #expect(spool.acceptsMail(now: 4_000_000_000))
    }

    @Test("A file system with more than 2 GiB free is reported in full")
    func freeSpaceIn64Bits() {
        let disk = HollowDisk()
        disk.free = 5 << 30
        #expect(disk.availableSpace("/") == .success(5 << 30))
        // The real statvfs: whatever this machine has, in 64 bits and never negative.
        if case .success(let n) = PosixStorage().availableSpace("/") { #expect(n >= 0) }
    }
}
