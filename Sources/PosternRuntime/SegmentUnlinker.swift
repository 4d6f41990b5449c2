import CLibc
import PosternCore

/// Unlinks finished spool segments through io_uring (`IORING_OP_UNLINKAT`), so
/// the loop goes on while the kernel frees their blocks: unlinking a 4 MiB
/// segment took 2–5 ms on ext4 (measured on the development machine), and with
/// 5 MB messages one went with nearly every message, stalling every client and
/// the delivery each time (issue 11).
///
/// A ring of its own, beside the syncs' (`SyncRing`): its eventfd then says
/// only that an unlink finished, and each ring's completions have one reader.
/// One unlink at a time is all the spool asks for: it deletes the oldest
/// segment, and the next only once this one's unlink is durable.
///
/// Where the ring cannot be set up, or the kernel cannot run the opcode (before
/// Linux 5.11 it completes with EINVAL), the spool unlinks in the loop as before.
public final class SegmentUnlinker {
    let ring: OpaquePointer
    let log: Log
    /// An unlink was submitted and has not completed.
    var running = false
    /// Set once the ring failed in a way that will not mend: no unlink is given
    /// to it again.
    public private(set) var broken = false
    /// Submission entries: one unlink runs at a time; a few spare.
    static let entries: UInt32 = 4

    init(ring: OpaquePointer, log: Log) {
        self.ring = ring
        self.log = log
    }

    deinit { cl_uring_close(ring) }

    /// A ring, or the reason io_uring cannot be used here.
    public static func open(log: Log) -> Result<SegmentUnlinker, Errno> {
        guard let r = cl_uring_open(entries) else { return .failure(Errno.current("io_uring_setup")) }
        return .success(SegmentUnlinker(ring: r, log: log))
    }

    /// Polls readable once the running unlink has completed.
    public var fd: Int32 { cl_uring_event_fd(ring) }

    /// Submits the unlink of `path`; false when the ring cannot take it (the
    /// caller unlinks in the loop).
    func start(_ path: String) -> Bool {
        guard !broken, !running else { return false }
        guard cl_uring_unlink(ring, path, 1) == 0 else {
            giveUp(Errno.current("io_uring_enter").text)
            return false
        }
        running = true
        return true
    }

    /// The running unlink's outcome once it has completed, nil while it runs
    /// (or when none does); with `wait` it blocks until then.
    func receive(wait: Bool) -> UnlinkOutcome? {
        guard running else { return nil }
        cl_uring_clear(ring)
        var tag: UInt64 = 0
        var result: Int32 = 0
        guard cl_uring_next(ring, wait ? 1 : 0, &tag, &result) == 1 else {
            guard wait else { return nil }
            // Nothing will come (the ring failed): whether the name went is
            // unknown, and an unlink in the loop finds out (ENOENT counts as done).
            running = false
            giveUp(Errno.current("io_uring_enter").text)
            return .unable
        }
        running = false
        if result >= 0 { return .finished(.success(())) }
        // A negative errno; anything else the kernel never posts counts as EIO.
        let code = result > -4096 ? -result : EIO
        switch code {
        case EINVAL, EOPNOTSUPP, ENOSYS, EBADF:
            // A kernel without the opcode: it says nothing of the file.
            giveUp(Errno(code, "io_uring unlinkat").text)
            return .unable
        default:
            return .finished(.failure(Errno(code, "unlink (io_uring)")))
        }
    }

    func giveUp(_ why: String) {
        guard !broken else { return }
        broken = true
        log.info("io_uring cannot unlink spool segments; unlinking them in the loop", [("reason", why)])
    }
}
