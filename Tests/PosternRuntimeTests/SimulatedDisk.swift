import Glibc
@testable import PosternRuntime

/// A deterministic pseudo-random generator (SplitMix64), so every crash case can
/// be replayed from its seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
}

/// An in-memory disk with power-loss semantics, behind the spool's storage seam.
///
/// Each file keeps what a completed `syncData` made durable and the operations
/// since. Directory entries become durable only with `syncDirectory`. When the
/// power goes (`die()`), every later operation fails with EIO and changes
/// nothing; `powerCycle` then builds the disk as it could be found after the
/// reboot: each unsynced write dropped, kept or torn at a random byte, in any
/// combination, and each unsynced create or unlink kept or lost.
final class SimulatedDisk: SpoolStorage {
    enum Op {
        case write(offset: Int, bytes: [UInt8])
        case truncate(Int)
    }

    final class Inode {
        var durable: [UInt8] = []
        var current: [UInt8] = []
        var pending: [Op] = []
        /// Operations ever done on it; those from `durableOps` on are `pending`.
        var ops = 0
        var durableOps = 0
    }

    var names: [String: Inode] = [:]
    var durableNames: [String: Inode] = [:]
    var fds: [Int32: Inode] = [:]
    var nextFD: Int32 = 100
    var dead = false
    /// When set, writes beyond this many bytes of file content fail short (ENOSPC).
    var capacity: Int? = nil
    /// Counts operations that change something, so a test can pick a crash point.
    var mutations = 0
    var crashAt: Int? = nil
    var syncs = 0
    var trace = false
    var fdNames: [Int32: String] = [:]

    init() {}

    func used() -> Int { names.values.reduce(0) { $0 + $1.current.count } }


    func fail(_ call: String) -> Errno { Errno(EIO, call) }

    /// Counts a mutating operation; the power goes when the crash point is reached.
    func tick() -> Bool {
        if dead { return false }
        mutations += 1
        if let c = crashAt, mutations >= c { dead = true; return false }
        return true
    }

    func die() { dead = true }

    // MARK: SpoolStorage

    func makeDirectory(_ path: String) -> Result<Void, Errno> { dead ? .failure(fail("mkdir")) : .success(()) }

    func lock(_ path: String) -> Result<Int32, Errno> {
        if dead { return .failure(fail("open")) }
        nextFD += 1
        return .success(nextFD)
    }

    func list(_ directory: String) -> Result<[String], Errno> {
        if dead { return .failure(fail("opendir")) }
        let prefix = directory + "/"
        return .success(names.keys.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
    }

    func openForReading(_ path: String) -> Result<Int32, Errno> {
        if dead { return .failure(fail("open")) }
        guard let inode = names[path] else { return .failure(Errno(ENOENT, "open \(path)")) }
        nextFD += 1
        fds[nextFD] = inode
        return .success(nextFD)
    }

    func create(_ path: String) -> Result<Int32, Errno> {
        guard tick() else { return .failure(fail("open")) }
        if names[path] != nil { return .failure(Errno(EEXIST, "open \(path)")) }
        let inode = Inode()
        names[path] = inode
        nextFD += 1
        fds[nextFD] = inode
        fdNames[nextFD] = path
        return .success(nextFD)
    }

    func size(_ fd: Int32) -> Result<Int, Errno> {
        if dead { return .failure(fail("fstat")) }
        return .success(fds[fd]!.current.count)
    }

    /// preads made, and the most bytes one returns (nil: all asked for, as a
    /// regular file's does; a number models a kernel returning short counts).
    var reads = 0
    var readLimit: Int? = nil

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        if dead { return .failure(fail("pread")) }
        reads += 1
        let c = fds[fd]!.current
        guard offset < c.count else { return .success(0) }
        let n = min(buffer.count, c.count - offset, readLimit ?? Int.max)
        c.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
        return .success(n)
    }

    /// pwritev calls made.
    var writes = 0

    func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        writes += 1
        guard tick() else { return .failure(fail("pwritev")) }
        let inode = fds[fd]!
        var bytes: [UInt8] = []
        bytes.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for p in parts { bytes.append(contentsOf: p) }
        if let cap = capacity {
            let growth = max(0, offset + bytes.count - inode.current.count)
            let room = max(0, cap - used())
            if growth > room {
                let allowed = max(0, bytes.count - (growth - room))
                if allowed == 0 { return .failure(Errno(ENOSPC, "pwritev")) }
                bytes = Array(bytes.prefix(allowed))
            }
        }
        apply(.write(offset: offset, bytes: bytes), to: &inode.current)
        inode.pending.append(.write(offset: offset, bytes: bytes))
        inode.ops += 1
        if trace && bytes.count >= 5 { print("write \(fdNames[fd] ?? "?") @\(offset) +\(bytes.count) kind \(bytes[4])") }
        return .success(bytes.count)
    }

    func syncData(_ fd: Int32) -> Result<Void, Errno> {
        if trace { print("sync \(fdNames[fd] ?? "?") dead=\(dead)") }
        guard tick() else { return .failure(fail("fdatasync")) }
        let inode = fds[fd]!
        inode.durable = inode.current
        inode.pending = []
        inode.durableOps = inode.ops
        syncs += 1
        return .success(())
    }

    func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno> {
        guard tick() else { return .failure(fail("ftruncate")) }
        let inode = fds[fd]!
        apply(.truncate(length), to: &inode.current)
        inode.pending.append(.truncate(length))
        inode.ops += 1
        return .success(())
    }

    /// Descriptors closed while a started sync covered them. io_uring looks
    /// each up only when its worker runs the fsync: such a close makes the sync
    /// fail with EBADF, or sync whatever file took the number since.
    var closedWhileSyncing: [Int32] = []

    func close(_ fd: Int32) {
        if started.contains(where: { $0.fds.contains(fd) }) { closedWhileSyncing.append(fd) }
        fds[fd] = nil
    }

    func unlink(_ path: String) -> Result<Void, Errno> {
        guard tick() else { return .failure(fail("unlink")) }
        guard names.removeValue(forKey: path) != nil else { return .failure(Errno(ENOENT, "unlink \(path)")) }
        return .success(())
    }

    func syncDirectory(_ path: String) -> Result<Void, Errno> {
        guard tick() else { return .failure(fail("fsync")) }
        durableNames = names
        durableNamesStamp = mutations
        return .success(())
    }

    // MARK: syncs that finish later (the daemon's sync helper)

    /// When (in `mutations`) the names made durable last were taken: a
    /// directory sync finishing later must not undo a newer one.
    var durableNamesStamp = 0
    /// The sync started and not finished yet: each file with the count of its
    /// operations it covers (those before `startSync`), and the names as they
    /// were then.
    var started: [(files: [(Inode, Int)], fds: [Int32], names: [String: Inode]?, stamp: Int)] = []
    /// Syncs that may run at once (the daemon's storage runs four; the rules
    /// that limit them are the spool's, and two show them).
    var syncCapacity = 2
    /// Syncs started so far.
    var startedSyncs = 0
    /// Of those, the ones started while another was running.
    var startedBesideOthers = 0
    /// Looks without waiting that find a started sync still running (the first
    /// is the spool's own, right after starting it).
    var pollsBeforeFinish = 1
    var pollsUnanswered = 0
    /// The next sync runs within `startSync`.
    var nextSyncAtOnce = false
    /// The next started sync finishes with EIO.
    var failNextSync = false
    /// The descriptors the running sync covers.
    var startedFiles: [Int32] = []

    /// Covers what was written before this call, and nothing after it (the least
    /// a real fdatasync promises): the power may go before it finishes, and
    /// writes go on meanwhile.
    func startSync(files: [Int32], directory: String?) -> SyncStart {
        if nextSyncAtOnce {
            // As PosixStorage does when no helper can take a sync.
            nextSyncAtOnce = false
            return .finished(syncNow(files: files, directory: directory))
        }
        guard tick() else { return .finished(.failure(fail("fdatasync"))) }
        precondition(started.count < syncCapacity, "more syncs than the capacity")
        if !started.isEmpty { startedBesideOthers += 1 }
        started.append((files.map { (fds[$0]!, fds[$0]!.ops) }, files, directory == nil ? nil : names, mutations))
        startedSyncs += 1
        startedFiles = files
        return .started
    }

    func syncOutcome(wait: Bool) -> Result<Void, Errno>? {
        guard let s = started.first else { return nil }
        if !wait && pollsUnanswered < pollsBeforeFinish {
            pollsUnanswered += 1
            return nil
        }
        pollsUnanswered = 0
        started.removeFirst()
        guard tick() else { return .failure(fail("fdatasync")) }
        if failNextSync {
            // The disk reported a write error: nothing it covered became durable.
            failNextSync = false
            return .failure(fail("fdatasync"))
        }
        for (inode, covered) in s.files where covered > inode.durableOps {
            let n = covered - inode.durableOps
            for op in inode.pending.prefix(n) { apply(op, to: &inode.durable) }
            inode.pending.removeFirst(n)
            inode.durableOps = covered
        }
        if let n = s.names, s.stamp > durableNamesStamp {
            durableNames = n
            durableNamesStamp = s.stamp
        }
        syncs += 1
        return .success(())
    }

    /// Never readable: the tests ask `syncOutcome` themselves.
    var syncPollFD: Int32 { -1 }

    // MARK: unlinks that finish later (the daemon's io_uring unlinks)

    /// `startUnlink` takes unlinks (else the spool unlinks in the call).
    var asyncUnlinks = false
    /// The unlink started and not finished: it happens when its outcome is taken.
    var startedUnlink: String? = nil
    /// Unlinks started so far.
    var startedUnlinks = 0
    /// Looks without waiting that find the started unlink still running.
    var unlinkPollsBeforeFinish = 1
    var unlinkPollsUnanswered = 0
    /// The next started unlink fails with EACCES (and changes nothing).
    var failNextUnlink = false

    func startUnlink(_ path: String) -> Bool {
        guard asyncUnlinks else { return false }
        precondition(startedUnlink == nil, "a second unlink while one runs")
        startedUnlink = path
        startedUnlinks += 1
        return true
    }

    func unlinkOutcome(wait: Bool) -> UnlinkOutcome? {
        guard let p = startedUnlink else { return nil }
        if !wait && unlinkPollsUnanswered < unlinkPollsBeforeFinish {
            unlinkPollsUnanswered += 1
            return nil
        }
        unlinkPollsUnanswered = 0
        startedUnlink = nil
        if failNextUnlink {
            failNextUnlink = false
            return .finished(.failure(Errno(EACCES, "unlink \(p)")))
        }
        return .finished(unlink(p))
    }

    var syncsAtOnce: Bool { false }

    func availableSpace(_ path: String) -> Result<Int64, Errno> {
        if dead { return .failure(fail("statvfs")) }
        guard let cap = capacity else { return .success(Int64.max) }
        return .success(Int64(max(0, cap - used())))
    }

    // MARK: power loss

    func apply(_ op: Op, to content: inout [UInt8]) {
        switch op {
        case .write(let offset, let bytes):
            if content.count < offset { content += [UInt8](repeating: 0, count: offset - content.count) }
            let overlap = min(bytes.count, content.count - offset)
            content.replaceSubrange(offset..<(offset + overlap), with: bytes[0..<overlap])
            content.append(contentsOf: bytes[overlap...])
        case .truncate(let n):
            if n < content.count { content.removeLast(content.count - n) }
            else { content += [UInt8](repeating: 0, count: n - content.count) }
        }
    }

    /// The disk after the power comes back.
    func powerCycle(_ rng: inout SplitMix) -> SimulatedDisk {
        let after = SimulatedDisk()
        var survivors: [ObjectIdentifier: Inode] = [:]
        func survivor(_ inode: Inode) -> Inode {
            if let s = survivors[ObjectIdentifier(inode)] { return s }
            let s = Inode()
            var content = inode.durable
            for op in inode.pending {
                switch rng.below(3) {
                case 0: break                                   // never reached the disk
                case 1: apply(op, to: &content)                 // reached it whole
                default:                                        // torn
                    if case .write(let offset, let bytes) = op, !bytes.isEmpty {
                        apply(.write(offset: offset, bytes: Array(bytes.prefix(rng.below(bytes.count)))), to: &content)
                    }
                }
            }
            s.durable = content
            s.current = content
            survivors[ObjectIdentifier(inode)] = s
            return s
        }
        // Entries made durable by a directory sync are there; newer creates and
        // unlinks may or may not have reached the disk.
        var all = durableNames
        for (name, inode) in names where durableNames[name] == nil {
            if rng.chance(50) { all[name] = inode }
        }
        for (name, _) in durableNames where names[name] == nil {
            if rng.chance(50) { all[name] = nil }
        }
        for (name, inode) in all {
            after.names[name] = survivor(inode)
        }
        after.durableNames = after.names
        return after
    }
}
