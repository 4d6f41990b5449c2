import CLibc
import PosternCore

/// The process that runs the spool's syncs, so the poll loop never waits for
/// one (issue 11 item 3: an fdatasync on an SD card takes 5–50 ms, and every
/// client, the delivery and the watchdog used to wait with it).
///
/// It is a fork of the daemon (`cl_sync_helper_start`; its loop is C, a few
/// hundred bytes of stack and no heap), on the other end of a SOCK_SEQPACKET
/// socket pair. A request carries the descriptors to sync (SCM_RIGHTS: the helper
/// gets its own copies of the daemon's open files, so a segment closed or deleted
/// meanwhile is still the same file); the answer is 0 or the first errno. One
/// request at a time (`PosixStorage` keeps it so).
///
/// Forked, not executed: a new process of the daemon's binary would pay again
/// for everything a starting process dirties (the relocations of libssl,
/// libcrypto and libsystemd: 728 kB of private memory, measured), while a fork
/// shares the daemon's pages and owns only those either side writes later. It
/// is forked first thing in `Daemon.start`, while the daemon is small.
///
/// When it cannot be started or is gone, the sync runs in the loop as before
/// (`PosixStorage.startSync`); it is started again at the next sync, at most
/// once a minute (once an hour when it never answered: it cannot run here),
/// and a helper that cannot run is logged once until one works.
public final class SyncHelper {
    /// The daemon's end of the socket pair, -1 while no helper runs.
    public private(set) var fd: Int32 = -1
    public private(set) var pid: Int32 = 0
    let log: Log
    /// No new start before this (monotonic nanoseconds) after one failed or died.
    var retryAt: Int64 = 0
    /// A failure to start was logged and no start has worked since.
    var failureLogged = false
    /// Times a helper was started (the first included).
    public private(set) var starts = 0
    /// The running helper said it is ready (its first message): it works here.
    var ready = false
    /// When the running helper was started (monotonic nanoseconds).
    var startedAt: Int64 = 0

    static let restartDelay: Int64 = 60_000_000_000
    /// After a helper that never became ready (it cannot run here: a seccomp
    /// filter that kills it, an emulator whose forked children hang).
    static let brokenDelay: Int64 = 3_600_000_000_000
    /// A helper not ready this long after its start is killed: a fork and a few
    /// system calls take well under a millisecond, even on a small board.
    static let readyTimeout: Int64 = 2_000_000_000
    public init(log: Log) {
        self.log = log
    }

    /// Starts the helper if none runs and a start is allowed now. True when one runs.
    @discardableResult
    public func start(now: Int64 = Clock.monotonic()) -> Bool {
        if fd >= 0 { return true }
        guard now >= retryAt else { return false }
        var sock: Int32 = -1
        let child = cl_sync_helper_start(&sock)
        guard child > 0 else {
            retryAt = now + Self.restartDelay
            if !failureLogged {
                failureLogged = true
                log.warning("cannot start the sync helper; the spool syncs in the loop", [
                    ("error", Errno.current("fork").description)], id: MessageIDs.spoolError)
            }
            return false
        }
        fd = sock
        pid = child
        starts += 1
        ready = false
        startedAt = now
        log.debug("sync helper started", [("pid", "\(child)")])
        return true
    }

    /// Sends a request; false when no helper runs, or it is not ready yet, or it
    /// could not take it (the caller syncs in the loop).
    func send(files: [Int32], directory: String?) -> Bool {
        guard files.count + (directory == nil ? 0 : 1) <= Int(CL_SYNC_MAX_FDS), start(), isReady() else { return false }
        var dirFD: Int32 = -1
        if let d = directory {
            dirFD = cl_open_directory(d)
            if dirFD < 0 { return false }
        }
        defer { if dirFD >= 0 { Sys.close(dirFD) } }
        let sent = files.withUnsafeBufferPointer { cl_sync_send(fd, $0.baseAddress, Int32(files.count), dirFD) }
        if sent != 0 {
            let e = Errno.current("send to the sync helper")
            ended("it could not be reached: \(e.text)")
            return false
        }
        return true
    }

    /// Whether the running helper has said it is ready, looking for its first
    /// message without waiting; one not ready after `readyTimeout` is killed.
    func isReady(now: Int64 = Clock.monotonic()) -> Bool {
        if ready { return true }
        var error: Int32 = 0
        switch cl_sync_receive(fd, 0, &error) {
        case 1:
            ready = true
            failureLogged = false
            return true
        case 0:
            if now - startedAt > Self.readyTimeout { ended("it was not ready \(Self.readyTimeout / 1_000_000_000)s after its start") }
            return false
        default:
            ended(Errno.current("sync helper").text)
            return false
        }
    }

    enum Reception {
        case running
        case finished(Result<Void, Errno>)
        /// The helper ended with the request outstanding.
        case gone
    }

    func receive(wait: Bool) -> Reception {
        guard fd >= 0 else { return .gone }
        var error: Int32 = 0
        switch cl_sync_receive(fd, wait ? 1 : 0, &error) {
        case 1:
            return .finished(error == 0 ? .success(()) : .failure(Errno(error, "fdatasync (sync helper)")))
        case 0:
            return .running
        default:
            let e = Errno.current("sync helper")
            ended(e.code == EPIPE ? "it exited" : e.text)
            return .gone
        }
    }

    /// The helper is gone or unusable: closes our end, reaps it (or leaves it
    /// to `ChildReaper`), and allows a new start after `restartDelay`.
    func ended(_ why: String) {
        let broken = !ready
        if !broken || !failureLogged {
            log.warning(broken ? "the sync helper cannot run here; the spool syncs in the loop"
                               : "the sync helper ended; the spool syncs in the loop until it is back",
                        [("pid", "\(pid)"), ("reason", why)], id: MessageIDs.spoolError)
        }
        if broken { failureLogged = true }
        stop()
        retryAt = Clock.monotonic() + (broken ? Self.brokenDelay : Self.restartDelay)
    }

    /// Closes the socket and kills the helper (a sync it was running is
    /// redone or no longer wanted); `ChildReaper` reaps it.
    public func stop() {
        guard fd >= 0 else { return }
        Sys.close(fd)
        fd = -1
        ChildReaper.killProcess(pid)
        ChildReaper.adopt(pid)
        pid = 0
    }
}
