import CLibc

/// The file operations the spool performs, behind one small protocol: the daemon
/// uses `PosixStorage`; the crash tests run the same spool code over a simulated
/// disk that loses power at random points and drops, tears or reorders every
/// write no completed sync covered (issue 3).
///
/// Class-bound so `any SpoolStorage` works in Embedded Swift.
public protocol SpoolStorage: AnyObject {
    /// mkdir(2) with mode 0700; an existing directory is fine.
    func makeDirectory(_ path: String) -> Result<Void, Errno>
    /// Opens (creating) and flock(2)s a lock file; returns its descriptor.
    func lock(_ path: String) -> Result<Int32, Errno>
    /// The names in a directory (readdir(3)).
    func list(_ directory: String) -> Result<[String], Errno>
    func openForReading(_ path: String) -> Result<Int32, Errno>
    /// Creates a new file (O_CREAT | O_EXCL) for writing.
    func create(_ path: String) -> Result<Int32, Errno>
    /// fstat(2) st_size; EOVERFLOW when it does not fit an `Int` (a file over
    /// 2 GiB on a 32-bit board).
    func size(_ fd: Int32) -> Result<Int, Errno>
    /// One pread(2): up to `buffer.count` bytes, fewer when the file ends
    /// first (or when the kernel returns fewer), 0 at its end.
    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno>
    /// pwritev(2) of `parts` at `offset`; returns bytes written (less than the
    /// total on a short write).
    func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno>
    /// fdatasync(2).
    func syncData(_ fd: Int32) -> Result<Void, Errno>
    /// ftruncate(2).
    func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno>
    func close(_ fd: Int32)
    func unlink(_ path: String) -> Result<Void, Errno>
    /// fsync(2) of a directory, making its entries (created and removed files) durable.
    func syncDirectory(_ path: String) -> Result<Void, Errno>
    /// statvfs(3): bytes an unprivileged writer may still use on the file system
    /// holding `path` (f_bavail × f_frsize), at most `Int64.max` (64 bits on
    /// every board: a 32-bit one's card holds more than 2 GiB).
    func availableSpace(_ path: String) -> Result<Int64, Errno>

    // The group commit's sync, without waiting for it (issue 11 item 3). At most
    // `syncCapacity` run at once; their outcomes come in the order they were
    // started. What a sync covers is what was written before `startSync`;
    // writes after it belong to a later one.

    /// Starts fdatasync(2) of `files` and, when `directory` is set, fsync(2) of
    /// that directory. `.finished` when it ran at once (the default, and the
    /// fallback when no helper can run it).
    func startSync(files: [Int32], directory: String?) -> SyncStart
    /// The outcome of the oldest started sync once it has finished, nil while
    /// it runs; with `wait` it blocks until the outcome is there.
    func syncOutcome(wait: Bool) -> Result<Void, Errno>?
    /// Polls readable when the oldest started sync may have finished; -1 when
    /// syncs finish within `startSync`.
    var syncPollFD: Int32 { get }
    /// How many started syncs may run at once.
    var syncCapacity: Int { get }
    /// Every sync runs within `startSync` (nothing runs them elsewhere): the
    /// spool then syncs a deletion at once rather than with the next commit.
    var syncsAtOnce: Bool { get }

    // A finished segment's unlink, without waiting for it: one at a time.

    /// Starts unlink(2) of `path` elsewhere; false when it cannot (the default):
    /// the spool then calls `unlink`.
    func startUnlink(_ path: String) -> Bool
    /// The started unlink's outcome once it has finished, nil while it runs;
    /// with `wait` it blocks until then. `.unable` when it could not run at all.
    func unlinkOutcome(wait: Bool) -> UnlinkOutcome?
    /// Polls readable when the started unlink may have finished; -1 when none runs.
    var unlinkPollFD: Int32 { get }
}

/// What became of an unlink started with `SpoolStorage.startUnlink`.
public enum UnlinkOutcome {
    case finished(Result<Void, Errno>)
    /// It never ran (the kernel cannot): the caller unlinks itself.
    case unable
}

/// What `SpoolStorage.startSync` did.
public enum SyncStart {
    /// The sync ran within the call: its outcome.
    case finished(Result<Void, Errno>)
    /// It runs elsewhere; `syncOutcome` tells when it is done.
    case started
}

extension SpoolStorage {
    /// Syncs at once, in the calling thread: the storages of the tests and
    /// `postern queue`.
    public func startSync(files: [Int32], directory: String?) -> SyncStart {
        .finished(syncNow(files: files, directory: directory))
    }

    public func syncOutcome(wait: Bool) -> Result<Void, Errno>? { nil }

    public var syncPollFD: Int32 { -1 }

    public var syncCapacity: Int { 1 }

    public var syncsAtOnce: Bool { true }

    public func startUnlink(_ path: String) -> Bool { false }

    public func unlinkOutcome(wait: Bool) -> UnlinkOutcome? { nil }

    public var unlinkPollFD: Int32 { -1 }

    /// Every file, then the directory; every one is synced even after a failure,
    /// and the first failure is the outcome.
    public func syncNow(files: [Int32], directory: String?) -> Result<Void, Errno> {
        var outcome: Result<Void, Errno> = .success(())
        for fd in files {
            if case .failure(let e) = syncData(fd), case .success = outcome { outcome = .failure(e) }
        }
        if let d = directory, case .failure(let e) = syncDirectory(d), case .success = outcome {
            outcome = .failure(e)
        }
        return outcome
    }
}

/// The real file system, through `Sys`. In the daemon the group commit's syncs
/// run while the loop goes on, two at once: a commit that arrives while one sync
/// runs need not wait for it to end before its own starts. They run through
/// io_uring (`SyncRing`) where the kernel allows it, else in helper processes
/// (`SyncHelper`). If neither can take a sync, or a helper dies with one
/// outstanding, or the ring cannot run one, that sync is run here, at once
/// (fdatasync may be repeated: it only makes durable what is already written).
public final class PosixStorage: SpoolStorage {
    public private(set) var ring: SyncRing?
    public private(set) var helpers: [SyncHelper] = []
    public private(set) var unlinker: SegmentUnlinker?
    /// Who runs each started sync, and what it syncs (to run it here should that
    /// fail), oldest first.
    enum Runner: Equatable { case ring, helper(Int) }
    var outstanding: [(runner: Runner, files: [Int32], directory: String?)] = []

    public init() {}

    /// Runs the syncs through `ring` from now on; the helpers, if any, take over
    /// should it fail.
    public func useSyncRing(_ ring: SyncRing) { self.ring = ring }

    /// Unlinks finished segments through `unlinker` from now on.
    public func useUnlinker(_ unlinker: SegmentUnlinker) { self.unlinker = unlinker }

    /// Runs the syncs in `helpers` (each started on first use, and again after
    /// it died) when there is no working ring.
    public func useSyncHelpers(_ helpers: [SyncHelper]) { self.helpers = helpers }

    public func makeDirectory(_ path: String) -> Result<Void, Errno> { Sys.mkdir(path, 0o700) }

    public func lock(_ path: String) -> Result<Int32, Errno> {
        switch Sys.open(path, O_RDWR | O_CREAT, 0o600) {
        case .failure(let e): return .failure(e)
        case .success(let fd):
            if cl_lock_exclusive(fd) != 0 {
                let e = Errno(cl_errno(), "lock \(path) (is another postern using this spool?)")
                Sys.close(fd)
                return .failure(e)
            }
            return .success(fd)
        }
    }

    public func list(_ directory: String) -> Result<[String], Errno> { Sys.listDirectory(directory) }

    public func openForReading(_ path: String) -> Result<Int32, Errno> { Sys.open(path, O_RDONLY) }

    public func create(_ path: String) -> Result<Int32, Errno> { Sys.open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600) }

    public func size(_ fd: Int32) -> Result<Int, Errno> {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .failure(Errno.current("fstat")) }
        guard let n = Int(exactly: st.st_size) else { return .failure(Errno(EOVERFLOW, "fstat")) }
        return .success(n)
    }

    public func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        Sys.pread(fd, buffer, at: offset)
    }

    public func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        Sys.pwritev(fd, parts, at: offset)
    }

    public func syncData(_ fd: Int32) -> Result<Void, Errno> { Sys.fdatasync(fd) }

    public func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno> { Sys.ftruncate(fd, length) }

    public func close(_ fd: Int32) { Sys.close(fd) }

    public func unlink(_ path: String) -> Result<Void, Errno> { Sys.unlink(path) }

    public func startUnlink(_ path: String) -> Bool { unlinker?.start(path) ?? false }

    public func unlinkOutcome(wait: Bool) -> UnlinkOutcome? { unlinker?.receive(wait: wait) }

    public var unlinkPollFD: Int32 {
        guard let u = unlinker, u.running else { return -1 }
        return u.fd
    }

    public func syncDirectory(_ path: String) -> Result<Void, Errno> {
        cl_sync_directory(path) == 0 ? .success(()) : .failure(Errno.current("fsync \(path)"))
    }

    public func startSync(files: [Int32], directory: String?) -> SyncStart {
        if let r = ring, !r.broken, r.start(files: files, directory: directory) {
            outstanding.append((.ring, files, directory))
            return .started
        }
        if ring?.broken != false {
            for k in helpers.indices where !outstanding.contains(where: { $0.runner == .helper(k) }) {
                guard helpers[k].send(files: files, directory: directory) else { continue }
                outstanding.append((.helper(k), files, directory))
                return .started
            }
        }
        return .finished(syncNow(files: files, directory: directory))
    }

    public func syncOutcome(wait: Bool) -> Result<Void, Errno>? {
        guard let o = outstanding.first else { return nil }
        switch o.runner {
        case .ring:
            guard let r = ring else { return nil }
            switch r.receive(wait: wait) {
            case .running:
                return nil
            case .finished(let outcome):
                outstanding.removeFirst()
                return outcome
            case .unable:
                outstanding.removeFirst()
                return syncNow(files: o.files, directory: o.directory)
            }
        case .helper(let k):
            switch helpers[k].receive(wait: wait) {
            case .running:
                return nil
            case .finished(let outcome):
                outstanding.removeFirst()
                return outcome
            case .gone:
                outstanding.removeFirst()
                return syncNow(files: o.files, directory: o.directory)
            }
        }
    }

    public var syncPollFD: Int32 {
        switch outstanding.first?.runner {
        case nil: return -1
        case .ring: return ring?.fd ?? -1
        case .helper(let k): return helpers[k].fd
        }
    }

    /// Four at once, whichever runs them (the daemon starts four helpers):
    /// with 4 clients and 10 ms syncs, two at once kept the clients waiting for
    /// a free one (237 messages a second against Postfix's 261; four: 305
    /// against 292, measured in one `make bench` run each). The spool's overlap
    /// rules (`canStartGroupCommit`) keep many clients to few big syncs.
    public var syncCapacity: Int { ring != nil ? 4 : max(1, helpers.count) }

    public var syncsAtOnce: Bool { ring == nil && helpers.isEmpty }

    public func availableSpace(_ path: String) -> Result<Int64, Errno> {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return .failure(Errno.current("statvfs \(path)")) }
        // The widths differ between boards (32-bit fsblkcnt_t on armv7 without
        // large-file support): multiply in 64 bits, saturating.
        let (bytes, overflow) = UInt64(st.f_bavail).multipliedReportingOverflow(by: UInt64(st.f_frsize))
        return .success(overflow ? Int64.max : Int64(clamping: bytes))
    }
}
