import CLibc
import PosternCore

/// Checks AUTH passwords against `auth_users` hashes without stalling the
/// poll loop (issue 12 item 2, DESIGN.md principle 1).
///
/// A crypt(3) check is slow by design. Measured on this project's x86-64
/// build machine (AMD EPYC): yescrypt `$y$` at its default cost takes 32 ms
/// and raises the peak resident set (VmHWM) by 16.7 MiB (it allocates its
/// 16 MiB work area per check); SHA-512-crypt `$6$` (5,000 rounds) takes
/// 3 ms and 0.5 MiB. Under qemu-user on the same machine, yescrypt takes
/// 105 ms as aarch64 and 224 ms as armv7; a real Cortex-A53 board is in that
/// range. Every other client would wait that long if the loop checked, and
/// the daemon's RSS would keep yescrypt's 16 MiB peak for good.
///
/// So the checks run in a child (`cl_crypt_helper_start`, its loop in C), a
/// fork of the daemon on the other end of a SOCK_SEQPACKET socket pair, like
/// the spool's `SyncHelper`. A request carries a wire id, the hash (≤ 512
/// octets) and the password (≤ 255 octets); the answer carries the id and
/// 1/0/-1. The checker wipes the password after each check. One request is
/// outstanding at a time; up to `queueLimit` more wait here, and beyond
/// that `submit` answers `.busy` (the receiver answers 454 4.7.0, a
/// temporary failure, RFC 4954 §6). Memory here: at most `queueLimit` + 1
/// requests of at most 767 octets each (12 KiB for 16 connections).
///
/// Passwords waiting here are overwritten with zeros once sent or checked
/// (best effort: Swift may have made copies of an array before it got here).
///
/// When the checker cannot run (fork fails, it never says it is ready, it
/// died recently), the check runs in the loop (`submit` answers
/// `.checked(…)` at once) and the loop stalls for the cost above; that is
/// logged once. A checker that ends is started again at the next request:
/// at once when it had run for at least `stableAfter` (a minute), else
/// after a delay that doubles from 1 s up to a minute; after one that never
/// said it was ready (it cannot run here), an hour. Requests it had not
/// answered are sent to the new one, or checked in the loop when no new
/// one may start yet.
///
/// An unknown user or a locked account is checked against a fixed yescrypt
/// hash and always answered `.mismatch`, so that the time of the answer does
/// not tell a missing user from a wrong password.
///
/// The loop: `start()` once (when `auth_users` is set); poll `pollFD` for
/// POLLIN when it is 0 or more; call `collect(now:)` when it is readable or
/// when `nextDeadline` has passed; `stop()` at exit.
public final class PasswordChecker {
    /// A check's outcome.
    public enum Verdict: Equatable, Sendable, CustomStringConvertible {
        case match
        case mismatch
        /// The hash cannot be checked (an unsupported or invalid setting, no
        /// memory): the caller answers a temporary failure and logs it.
        case unusable

        public var description: String {
            switch self {
            case .match: return "match"
            case .mismatch: return "mismatch"
            case .unusable: return "unusable"
            }
        }
    }

    /// What `submit` did.
    public enum Submission: Equatable, Sendable {
        /// The answer comes from a later `collect`.
        case queued
        /// Too many checks are waiting: answer a temporary failure.
        case busy
        /// Checked at once, in the loop (no checker runs).
        case checked(Verdict)
    }

    /// Timing of restarts and timeouts, in monotonic nanoseconds.
    public struct Timing: Sendable {
        /// The first delay before a restart after a short-lived checker.
        public var firstRestartDelay: Int64 = 1_000_000_000
        /// The longest delay before a restart.
        public var maxRestartDelay: Int64 = 60_000_000_000
        /// A checker that ran this long is restarted at once when it ends.
        public var stableAfter: Int64 = 60_000_000_000
        /// After a checker that never said it was ready.
        public var brokenDelay: Int64 = 3_600_000_000_000
        /// A checker not ready this long after its start is killed: a fork
        /// takes well under a millisecond, even on a small board.
        public var readyTimeout: Int64 = 2_000_000_000
        /// A check not answered this long after it was sent is given up (the
        /// checker is killed and the check redone): 100 times yescrypt's
        /// cost on armv7 under emulation.
        public var answerTimeout: Int64 = 20_000_000_000

        public init() {}
    }

    /// Checks waiting beside the one the checker is running: 8 unless set.
    /// The daemon sets it to `max_connections`: a connection waits for at
    /// most one check, so a burst of devices logging in at once after an
    /// outage is never answered busy, and the bound stays that of the pool.
    public var queueLimit = 8

    /// Compared against for an unknown user or a locked account (the
    /// password "postern-dummy-never-matches"; the answer is `.mismatch`
    /// whatever the check says).
    static let dummyHash = Array("$y$j9T$PQjdRfgkEQC1Gklk2Y51B1$AJzo30z0vHgjp9sUUi9ry1hTTvad10EmwYycxwPFpJ8".utf8)

    /// The daemon's end of the socket pair, -1 while no checker runs: poll it
    /// for POLLIN.
    public var pollFD: Int32 { fd }
    public private(set) var fd: Int32 = -1
    public private(set) var pid: Int32 = 0
    /// Checkers started (the first included).
    public private(set) var starts = 0
    /// Checks run in the loop because no checker could.
    public private(set) var checksInLoop = 0

    let log: Log
    let timing: Timing
    /// `start()` was called: checks go to a checker when one can run.
    var wanted = false
    var ready = false
    var startedAt: Int64 = 0
    var retryAt: Int64 = 0
    var restartDelay: Int64 = 0
    /// "Checking in the loop" was logged and no checker has worked since.
    var fallbackLogged = false

    struct Request {
        var id: UInt64
        var wireID: UInt32
        /// The crypt(3) string; the dummy hash for an unknown or locked user.
        var hash: [UInt8]
        var password: [UInt8]
        /// The answer is `.mismatch` whatever the check says.
        var forceMismatch: Bool
    }

    /// Waiting checks; the first is the one sent when `sentAt` is set.
    var queue: [Request] = []
    /// When the first of `queue` was sent (monotonic), nil when none is out.
    var sentAt: Int64? = nil
    var nextWireID: UInt32 = 1

    public init(log: Log, timing: Timing = Timing()) {
        self.log = log
        self.timing = timing
        queue.reserveCapacity(queueLimit + 1)
    }

    deinit {
        stop()
    }

    /// Starts the checker (the daemon calls this once at start when
    /// `auth_users` is set, while it is small: the fork shares its pages).
    /// True when one runs; false when checks will run in the loop for now.
    @discardableResult
    public func start(now: Int64 = Clock.monotonic()) -> Bool {
        wanted = true
        return launch(now: now)
    }

    /// Queues a check of `password` against `hash` (nil: no such user),
    /// for the caller's `id`; or checks it at once when no checker can run;
    /// or answers `.busy` when `queueLimit` checks already wait.
    ///
    /// The password is moved out of the caller's array (left empty), so that
    /// the buffer wiped here is the only one: a copy would leave the caller's
    /// reference keeping the original unwiped (copy-on-write).
    public func submit(id: UInt64, hash: AuthHash?, password: inout [UInt8], now: Int64 = Clock.monotonic()) -> Submission {
        var request = Request(id: id, wireID: 0, hash: Self.dummyHash, password: [], forceMismatch: true)
        swap(&request.password, &password)
        if let h = hash, !h.isLocked {
            request.hash = h.text
            request.forceMismatch = false
        }
        // Neither can come from AuthUsers and SASLServer; refused without a check.
        if request.hash.count > Int(CL_CRYPT_MAX_HASH) {
            Self.wipe(&request.password)
            return .checked(.unusable)
        }
        if request.password.count > Int(CL_CRYPT_MAX_PASSWORD) || request.password.contains(0) {
            Self.wipe(&request.password)
            return .checked(.mismatch)
        }
        // `queueLimit` waiting beside the one out (or about to go out).
        if queue.count > queueLimit {
            Self.wipe(&request.password)
            return .busy
        }
        guard wanted, fd >= 0 || launch(now: now) else {
            return .checked(checkInLoop(&request))
        }
        request.wireID = nextWireID
        nextWireID = nextWireID == UInt32.max ? 1 : nextWireID + 1
        queue.append(request)
        // When the checker is found gone while sending, what waits is sent
        // to a new one or checked in the loop by the next `collect`, which
        // `nextDeadline` (0) asks for at once.
        sendNext(now: now)
        return .queued
    }

    /// The answers that have come, without waiting; also restarts a checker
    /// that ended, kills one that stopped answering, and checks in the loop
    /// what no checker can take.
    public func collect(now: Int64 = Clock.monotonic()) -> [(id: UInt64, verdict: Verdict)] {
        var results: [(id: UInt64, verdict: Verdict)] = []
        while fd >= 0 {
            var wireID: UInt32 = 0
            var result: Int32 = 0
            let got = cl_crypt_receive(fd, 0, &wireID, &result)
            if got == 0 { break }
            if got < 0 {
                let e = Errno.current("password checker")
                ended(e.code == EPIPE ? "it exited" : e.text, now: now)
                break
            }
            if !ready {
                guard wireID == 0 else { ended("its first message was not the ready message", now: now); break }
                ready = true
                fallbackLogged = false
                sendNext(now: now)
                continue
            }
            guard sentAt != nil, var request = queue.first, request.wireID == wireID else {
                ended("it answered a check that was not asked", now: now)
                break
            }
            queue.removeFirst()
            sentAt = nil
            results.append((request.id, Self.verdict(result, forceMismatch: request.forceMismatch)))
            Self.wipe(&request.password)
            sendNext(now: now)
        }
        if fd >= 0 {
            if !ready && now &- startedAt > timing.readyTimeout {
                ended("it was not ready \(timing.readyTimeout / 1_000_000_000)s after its start", now: now)
            } else if let sent = sentAt, now &- sent > timing.answerTimeout {
                ended("it did not answer a check within \(timing.answerTimeout / 1_000_000_000)s", now: now)
            }
        }
        if fd < 0 && !queue.isEmpty && !(wanted && launch(now: now)) {
            // No checker may run now: what waits is checked here, at most
            // `queueLimit` + 1 checks (the stall is logged once).
            for i in queue.indices {
                results.append((queue[i].id, checkInLoop(&queue[i])))
            }
            queue.removeAll(keepingCapacity: true)
        }
        return results
    }

    /// When the loop must call `collect` even if `pollFD` stays quiet: the
    /// ready and answer timeouts, and checks waiting with no checker.
    public var nextDeadline: Int64? {
        if fd < 0 { return queue.isEmpty ? nil : 0 }
        if !ready { return startedAt &+ timing.readyTimeout &+ 1 }
        if let sent = sentAt { return sent &+ timing.answerTimeout &+ 1 }
        return nil
    }

    /// Checks waiting or running.
    public var pending: Int { queue.count }

    /// Closes the socket and kills the checker (`ChildReaper` reaps it).
    /// Waiting checks stay queued; `collect` sends them to a new checker or
    /// checks them in the loop.
    public func stop() {
        guard fd >= 0 else { return }
        Sys.close(fd)
        fd = -1
        ChildReaper.killProcess(pid)
        ChildReaper.adopt(pid)
        pid = 0
        ready = false
        sentAt = nil
    }

    // MARK: - internals

    /// Starts a checker if none runs and a start is allowed now.
    func launch(now: Int64) -> Bool {
        if fd >= 0 { return true }
        guard now >= retryAt else { return false }
        var sock: Int32 = -1
        let child = cl_crypt_helper_start(&sock)
        guard child > 0 else {
            let e = Errno.current("fork")
            retryAt = now &+ timing.maxRestartDelay
            noteFallback("cannot start the password checker", [("error", e.description)])
            return false
        }
        fd = sock
        pid = child
        starts += 1
        ready = false
        sentAt = nil
        startedAt = now
        log.debug("password checker started", [("pid", "\(child)")])
        return true
    }

    /// Sends the first waiting check when the checker is ready and idle.
    func sendNext(now: Int64) {
        guard fd >= 0, ready, sentAt == nil, !queue.isEmpty else { return }
        let sock = fd
        let wireID = queue[0].wireID
        let rc = queue[0].hash.withUnsafeBufferPointer { hash in
            queue[0].password.withUnsafeBufferPointer { password in
                hash.withMemoryRebound(to: CChar.self) { h in
                    password.withMemoryRebound(to: CChar.self) { p in
                        cl_crypt_send(sock, wireID, h.baseAddress, h.count, p.baseAddress, p.count)
                    }
                }
            }
        }
        if rc != 0 {
            ended("it could not be reached: \(Errno.current("send").text)", now: now)
            return
        }
        sentAt = now
    }

    /// The checker is gone or unusable: stops it and decides when the next may start.
    func ended(_ why: String, now: Int64) {
        let broken = !ready
        let ranFor = now &- startedAt
        stop()
        if broken {
            retryAt = now &+ timing.brokenDelay
        } else {
            restartDelay = ranFor >= timing.stableAfter ? 0
                : min(max(timing.firstRestartDelay, restartDelay &* 2), timing.maxRestartDelay)
            retryAt = now &+ restartDelay
        }
        if broken {
            noteFallback("the password checker cannot run here", [("reason", why)])
        } else {
            log.warning("the password checker ended", [("reason", why),
                        ("restart_in", "\(restartDelay / 1_000_000_000)s")])
        }
    }

    func noteFallback(_ message: String, _ fields: [(String, String)]) {
        guard !fallbackLogged else { return }
        fallbackLogged = true
        log.warning(message + "; passwords are checked in the loop, which stalls every client for each check "
                    + "(about 32 ms for yescrypt on a fast machine, 100-250 ms on a board)", fields)
    }

    /// One check in the loop (no checker can run).
    func checkInLoop(_ request: inout Request) -> Verdict {
        checksInLoop += 1
        noteFallback("no password checker runs", [])
        let result = Self.check(password: request.password, hash: request.hash)
        Self.wipe(&request.password)
        return Self.verdict(result, forceMismatch: request.forceMismatch)
    }

    static func verdict(_ result: Int32, forceMismatch: Bool) -> Verdict {
        if forceMismatch { return .mismatch }
        switch result {
        case 1: return .match
        case 0: return .mismatch
        default: return .unusable
        }
    }

    /// cl_crypt_check in this process: 1 match, 0 no match, -1 cannot check.
    static func check(password: [UInt8], hash: [UInt8]) -> Int32 {
        var setting = hash.map { CChar(bitPattern: $0) }
        setting.append(0)
        return password.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { pw in
                cl_crypt_check(pw.baseAddress, pw.count, setting)
            }
        }
    }

    /// Overwrites a password's octets in place.
    static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { b in
            if let base = b.baseAddress { explicit_bzero(base, b.count) }
        }
        bytes.removeAll()
    }
}
