import CLibc
import PosternCore

/// The drop directory (issue 9 item 2): where `postern sendmail` stores a message
/// durably when the daemon does not answer, and where the daemon takes it in, in
/// order, at start and whenever a file arrives while it runs.
///
/// Why a directory anyone may write to is safe (the model is Postfix's maildrop,
/// without its setgid helper):
/// - the directory is mode 3733 owned by the daemon's user and group: every user
///   may create a file (-wx), no one but the owner may list it (no r), the sticky
///   bit lets no one remove or rename another's file, and the setgid bit gives
///   every new file the daemon's group;
/// - `sendmail` writes its file 0640, so the owner and the daemon's group can read
///   it and other users cannot, and its name is random (unguessable even if
///   reading were possible);
/// - the daemon opens each file with O_NOFOLLOW | O_NONBLOCK (a planted symbolic
///   link or FIFO is neither followed nor waited on), takes only regular files
///   with one link (a hard link to someone else's file is refused), and records
///   the file's owner as the submitter — the kernel's word, not the file's.
///
/// Taking a file in: the daemon opens it and starts `postern pickup` with the
/// file as its standard input. The child submits the message on the local
/// submission socket like `sendmail` does; the daemon recognises the child's
/// connection by its pid (SO_PEERCRED) and gives the message the file owner's
/// identity (`identify`). On the child's 0 the message is in the spool and the
/// file is removed; on 75 (or a crash, or a timeout) it stays and is tried again
/// later; on 65 (the daemon refused it for good, or the file is not a drop file)
/// it is renamed `failed.NAME`, kept for the administrator, and logged as an
/// error. One file at a time, oldest name first (`sendmail` names files by the
/// time of submission).
public final class MailDrop {
    /// Name prefixes: `m.` a message ready to take in, `t.` one being written
    /// (sendmail renames it to `m.` once it is synced), `failed.` refused for good.
    public static let readyPrefix = "m."
    public static let writingPrefix = "t."
    public static let failedPrefix = "failed."
    /// The pickup's exit statuses (sysexits.h).
    static let exitDataError: Int32 = 65
    /// A file being written by a sendmail that died is removed after this long.
    static let abandonedAfterSeconds: Int64 = 86400
    /// Retry of a file that could not be taken in (daemon busy, spool full).
    static let retryNanoseconds: Int64 = 60_000_000_000
    /// Without inotify the directory is looked at this often. With it, an idle
    /// daemon never wakes for the directory (issue 10: wake-ups of an idle daemon).
    static let rescanNanoseconds: Int64 = 300_000_000_000
    /// A pickup taking longer than this is killed (a 2 GiB message on an SD card
    /// takes minutes, not an hour).
    static let pickupTimeoutNanoseconds: Int64 = 3_600_000_000_000

    public let path: String
    /// The socket the pickup child submits on.
    var socketPath: String
    let log: Log
    var dirFD: Int32 = -1
    var watchFD: Int32 = -1
    /// The directory is to be listed at the next tick.
    var scanDue = true
    var nextScan: Int64 = 0
    var child: ChildProcess? = nil
    var current: (name: String, fd: Int32, owner: UInt32)? = nil
    /// Names that failed for a passing reason, tried again at `retryAt`.
    var retryAt: Int64? = nil

    public init(path: String, socketPath: String, log: Log) {
        self.path = path
        self.socketPath = socketPath
        self.log = log
    }

    /// Creates the directory (mode 3733) if it is missing and watches it. A
    /// directory that cannot be used is logged, not fatal: mail over the sockets
    /// still flows; `sendmail` then reports it when it needs the directory.
    public func open(now: Int64) {
        if cl_make_directory(path, 0o3733) != 0 {
            log.error("the drop directory cannot be created or set to mode 3733; postern sendmail cannot store mail while the daemon is stopped",
                      [("dir", path), ("error", Errno.current("mkdir").description)])
        }
        makeParentTraversable()
        dirFD = cl_open_directory(path)
        if dirFD < 0 {
            log.error("the drop directory cannot be opened", [("dir", path), ("error", Errno.current("open").description)])
            return
        }
        watchFD = cl_inotify_directory(path)
        if watchFD < 0 {
            log.warning("cannot watch the drop directory; it is looked at every 5 minutes instead",
                        [("dir", path), ("error", Errno.current("inotify").description)])
        }
        scanDue = true
        nextScan = now
    }

    /// Local users reach the drop directory through its parent: the spool
    /// directory (0700 by default) gets search permission (0711; nothing in it
    /// can be listed or read by them).
    func makeParentTraversable() {
        guard let slash = path.utf8.lastIndex(of: 47), slash != path.utf8.startIndex else { return }
        let parent = String(decoding: path.utf8[..<slash], as: UTF8.self)
        var mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        guard cl_stat_path(parent, &mode, &uid, &gid) == 0, uid == cl_geteuid(), mode & 0o011 != 0o011 else { return }
        if chmod(parent, mode_t((mode & 0o7777) | 0o011)) == 0 {
            log.info("made the drop directory's parent searchable by local users", [("dir", parent), ("mode", "0711")])
        }
    }

    public func close(now: Int64) {
        if let c = child, !c.isFinished { c.cancel(now: now) }
        child = nil
        closeCurrent()
        if watchFD >= 0 { Sys.close(watchFD); watchFD = -1 }
        if dirFD >= 0 { Sys.close(dirFD); dirFD = -1 }
    }

    func closeCurrent() {
        if let c = current { Sys.close(c.fd) }
        current = nil
    }

    // MARK: the loop

    public func pollEntries() -> [(fd: Int32, events: Int16)] {
        var out: [(fd: Int32, events: Int16)] = []
        if watchFD >= 0 { out.append((watchFD, Int16(POLLIN))) }
        if let c = child { out += c.pollEntries() }
        return out
    }

    public func ready(fd: Int32, now: Int64) {
        if fd == watchFD {
            if cl_inotify_drain(watchFD) != 0 { scanDue = true }
            return
        }
        child?.readable(fd: fd, now: now)
        finishPickupIfDone(now: now)
    }

    public func nextWakeup(now: Int64) -> Int64? {
        if dirFD < 0 { return nil }
        if child != nil { return child?.nextDeadline() }
        if scanDue { return now }
        var next: Int64? = watchFD < 0 ? nextScan : nil
        if let r = retryAt, next.map({ r < $0 }) ?? true { next = r }
        return next
    }

    /// Starts the next pickup when none runs; `canAccept` is false while the
    /// spool refuses mail (the child would only get 452).
    public func tick(now: Int64, canAccept: Bool) {
        if let c = child {
            if let t = c.nextDeadline(), now >= t { c.tick(now: now) }
            finishPickupIfDone(now: now)
            return
        }
        guard dirFD >= 0 else { return }
        if watchFD < 0 && now >= nextScan { scanDue = true }
        if let r = retryAt, now >= r { retryAt = nil; scanDue = true }
        guard scanDue else { return }
        scanDue = false
        if !canAccept {
            // The spool refuses mail now: look again later rather than spin.
            retryAt = now + Self.retryNanoseconds
            return
        }
        nextScan = now + Self.rescanNanoseconds
        startNext(now: now)
    }

    /// Who a local connection is: the pickup child submitting a file speaks for
    /// the file's owner; nil for anyone else (the caller names them from their
    /// own credentials).
    public func identify(_ cred: cl_peer_cred) -> LocalSender? {
        guard let c = child, !c.isFinished, cred.pid == c.pid, cred.uid == cl_geteuid(),
              let file = current else { return nil }
        return LocalSender(uid: file.owner, user: LocalUsers.name(file.owner), pid: nil)
    }

    // MARK: taking a file in

    func startNext(now: Int64) {
        guard case .success(let names) = Sys.listDirectory(path) else {
            log.warning("cannot list the drop directory", [("dir", path), ("error", Errno.current("opendir").description)])
            return
        }
        var ready: [String] = []
        for name in names {
            if name.hasPrefix(Self.readyPrefix) { ready.append(name) }
            else if name.hasPrefix(Self.writingPrefix) { removeIfAbandoned(name) }
        }
        ready.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for name in ready {
            var facts = cl_file_facts()
            let fd = cl_open_drop_file(dirFD, name, &facts)
            if fd < 0 {
                let e = Errno.current("open")
                if e.code != ENOENT { refuse(name, owner: nil, why: "cannot be opened: \(e.text)") }
                continue
            }
            guard facts.mode & UInt32(S_IFMT) == UInt32(S_IFREG), facts.nlink == 1 else {
                Sys.close(fd)
                refuse(name, owner: facts.uid, why: "is not a regular file with one link")
                continue
            }
            current = (name, fd, facts.uid)
            child = ChildProcess.start(argv: [Self.selfExecutable, "pickup", "--socket", socketPath],
                                       timeoutNanoseconds: Self.pickupTimeoutNanoseconds, stdin: fd, now: now)
            finishPickupIfDone(now: now)
            return
        }
    }

    /// The daemon's own binary, for the pickup child (also after the package
    /// replaced the file: /proc/self/exe is the running one).
    static let selfExecutable = "/proc/self/exe"

    func finishPickupIfDone(now: Int64) {
        guard let c = child, let outcome = c.outcome, let file = current else { return }
        let owner = LocalUsers.name(file.owner) ?? "uid \(file.owner)"
        switch outcome {
        case .success:
            if cl_unlink_at(dirFD, file.name) != 0 {
                log.error("a message taken from the drop directory could not be removed there; it will be taken in again",
                          [("file", file.name), ("error", Errno.current("unlink").description)])
            } else {
                _ = cl_sync_directory(path)
            }
            log.info("message taken from the drop directory", [("file", file.name), ("user", owner), ("uid", "\(file.owner)")])
            scanDue = true
        case .failure(let why):
            if c.exitCode == Self.exitDataError {
                refuse(file.name, owner: file.owner, why: why)
                scanDue = true
            } else {
                log.warning("a message in the drop directory could not be taken in now; it stays and is tried again",
                            [("file", file.name), ("user", owner), ("reason", why)])
                retryAt = now + Self.retryNanoseconds
            }
        }
        child = nil
        closeCurrent()
    }

    /// A file that can never be taken in is renamed `failed.NAME` and logged
    /// as an error, never deleted: the mail in it is the administrator's to save.
    func refuse(_ name: String, owner: UInt32?, why: String) {
        let target = Self.failedPrefix + name
        let renamed = cl_rename_at(dirFD, name, target) == 0
        var fields: [(String, String)] = [("file", name), ("reason", why), ("dir", path)]
        if let o = owner { fields += [("uid", "\(o)"), ("user", LocalUsers.name(o) ?? "?")] }
        if renamed {
            _ = cl_sync_directory(path)
            fields.append(("kept_as", target))
        }
        log.event(.rejected, .error, "a message in the drop directory was refused; the file is kept", fields)
    }

    /// A `t.` file untouched for a day. The time is the writer's to set
    /// (utimensat), anywhere in Int64: compared without subtracting it, so no
    /// value can overflow.
    static func isAbandoned(mtime: Int64, now: Int64) -> Bool {
        now > Int64.min + abandonedAfterSeconds && mtime < now - abandonedAfterSeconds
    }

    func removeIfAbandoned(_ name: String) {
        var facts = cl_file_facts()
        guard cl_stat_at(dirFD, name, &facts) == 0, Self.isAbandoned(mtime: facts.mtime, now: Clock.wall()) else { return }
        if cl_unlink_at(dirFD, name) == 0 {
            log.info("removed an unfinished file from the drop directory (its writer stopped before it was complete)",
                     [("file", name), ("uid", "\(facts.uid)")])
        }
    }
}
