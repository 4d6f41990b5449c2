import CLibc
import PosternCore

/// The spool's syncs through io_uring (issue 11 item 3): `IORING_OP_FSYNC`
/// requests (with `IORING_FSYNC_DATASYNC` for segments), their completions
/// signalled to the poll loop through an eventfd, so the loop goes on while an SD
/// card takes 5–50 ms per sync. The kernel runs them in its own workers, so
/// unlike the sync helpers (`SyncHelper`) this costs no process and no memory of
/// ours beyond the rings' few pages.
///
/// A batch (`start`) is one request per descriptor, all with the batch's tag; it
/// is finished when every one has completed, and its outcome is the first error.
/// Outcomes are given oldest batch first, as `SpoolStorage` promises, even when a
/// later batch completes first. The kernel takes its own reference to each file
/// when the request is submitted (inside `start`), so a segment closed or deleted
/// afterwards is still the file that is synced.
///
/// When the ring cannot be set up (a kernel without io_uring, a seccomp filter,
/// `kernel.io_uring_disabled`), `open` fails and the daemon uses the helpers. A
/// ring that cannot take a batch, or answers that it cannot run an fsync (a
/// kernel too old for the opcode), is given up: that batch is synced at once
/// in the loop and the helpers take the next ones.
public final class SyncRing {
    let ring: OpaquePointer
    let log: Log
    /// Started batches, oldest first: tag, requests still to complete, first
    /// error. (What each syncs is `PosixStorage`'s to keep, for `.unable`.)
    var batches: [(tag: UInt64, remaining: Int, error: Int32)] = []
    var nextTag: UInt64 = 1
    /// The spool directory, open for the ring's fsyncs of it (one path per daemon).
    var directoryFD: Int32 = -1
    var directoryPath = ""
    /// Set once the ring failed in a way that will not mend: no new batch is
    /// given to it.
    public private(set) var broken = false

    init(ring: OpaquePointer, log: Log) {
        self.ring = ring
        self.log = log
    }

    deinit {
        if directoryFD >= 0 { Sys.close(directoryFD) }
        cl_uring_close(ring)
    }

    /// A ring, or nil with the reason io_uring cannot be used here.
    public static func open(log: Log) -> Result<SyncRing, Errno> {
        guard let r = cl_uring_open(UInt32(CL_URING_ENTRIES)) else { return .failure(Errno.current("io_uring_setup")) }
        return .success(SyncRing(ring: r, log: log))
    }

    /// Polls readable after a completion.
    public var fd: Int32 { cl_uring_event_fd(ring) }

    /// Queues a batch; false when the ring cannot take it (the caller syncs
    /// another way).
    func start(files: [Int32], directory: String?) -> Bool {
        guard !broken, files.count + (directory == nil ? 0 : 1) <= Int(CL_SYNC_MAX_FDS) else { return false }
        var dirFD: Int32 = -1
        if let d = directory {
            if directoryFD < 0 || directoryPath != d {
                if directoryFD >= 0 { Sys.close(directoryFD) }
                directoryFD = cl_open_directory(d)
                directoryPath = d
                if directoryFD < 0 { return false }
            }
            dirFD = directoryFD
        }
        let tag = nextTag
        let queued = files.withUnsafeBufferPointer { cl_uring_sync(ring, $0.baseAddress, Int32(files.count), dirFD, tag) }
        guard queued == 0 else {
            let e = Errno.current("io_uring_enter")
            // No room is not a fault: four batches at most are outstanding,
            // and the ring holds more than that.
            if e.code != EAGAIN { giveUp(e.text) }
            return false
        }
        nextTag &+= 1
        batches.append((tag, files.count + (directory == nil ? 0 : 1), 0))
        return true
    }

    enum Reception {
        case running
        case finished(Result<Void, Errno>)
        /// The ring cannot run this batch's syncs: the caller runs them itself.
        case unable
    }

    /// The oldest batch's outcome once all its requests have completed.
    func receive(wait: Bool) -> Reception {
        guard !batches.isEmpty else { return .running }
        cl_uring_clear(ring)
        var tag: UInt64 = 0
        var result: Int32 = 0
        while true {
            if let first = batches.first, first.remaining <= 0 { break }
            guard cl_uring_next(ring, wait ? 1 : 0, &tag, &result) == 1 else {
                if wait {
                    // Nothing more will come (the ring failed): the loop syncs.
                    giveUp(Errno.current("io_uring_enter").text)
                    batches.removeFirst()
                    return .unable
                }
                return .running
            }
            guard let k = batches.firstIndex(where: { $0.tag == tag }) else { continue }
            batches[k].remaining -= 1
            if result < 0, batches[k].error == 0 { batches[k].error = -result }
        }
        let b = batches.removeFirst()
        switch b.error {
        case 0:
            return .finished(.success(()))
        case EINVAL, EOPNOTSUPP, ENOSYS, EBADF:
            // The ring could not run the request (a kernel without the opcode),
            // which says nothing of the disk: the loop syncs this batch.
            giveUp(Errno(b.error, "io_uring fsync").text)
            return .unable
        default:
            // The disk's answer (EIO, ENOSPC): never retried, as a failed
            // fdatasync may have dropped the pages it could not write.
            return .finished(.failure(Errno(b.error, "fdatasync (io_uring)")))
        }
    }

    func giveUp(_ why: String) {
        guard !broken else { return }
        broken = true
        log.warning("io_uring cannot run the spool's syncs; using the sync helpers", [("reason", why)],
                    id: MessageIDs.spoolError)
    }
}
