import CLibc

/// How a reaped child ended (waitpid(2)'s status, decoded by `cl_reap`).
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    /// It called exit with this status.
    case exited(Int32)
    /// A signal ended it.
    case signaled(Int32)
    /// Reaped, but the status said neither (cannot happen without WUNTRACED), or the
    /// child was reaped elsewhere (ECHILD) and its status is lost.
    case unknown

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signaled(let sig): return "killed by signal \(sig)"
        case .unknown: return "ended with an unknown status"
        }
    }
}

/// Reaping without blocking the loop. A child is reaped with waitpid(WNOHANG) as
/// soon as its end is likely (its pipes reached end of file, or it was sent
/// SIGKILL); when it is not a zombie yet (the kernel closes a process's files a
/// moment before it becomes one, and a SIGKILLed process in uninterruptible sleep
/// dies only when the sleep ends) the owner asks again on a later tick, after
/// 1 ms, then twice as long each time up to 100 ms.
///
/// Children whose owner was dropped before they were reaped (a `ChildProcess` or
/// `AsyncResolver` released mid-run) are adopted here: their group was sent
/// SIGKILL, and every later `tick` of any child, or the loop itself through
/// `reapAdopted()`, reaps them. Nothing else in the daemon may call waitpid(-1),
/// or it would take these statuses.
public enum ChildReaper {
    /// The first retry after a child was found not yet reapable.
    static let firstRetryNanoseconds: Int64 = 1_000_000
    /// Retries back off to this interval.
    static let maxRetryNanoseconds: Int64 = 100_000_000

    /// One waitpid(pid, WNOHANG).
    enum Reap: Equatable {
        case reaped(ExitStatus)
        case running
    }

    static func reap(_ pid: Int32) -> Reap {
        var status = cl_exit_status()
        switch cl_reap(pid, &status) {
        case 1:
            switch status.kind {
            case CL_EXITED: return .reaped(.exited(status.value))
            case CL_SIGNALED: return .reaped(.signaled(status.value))
            default: return .reaped(.unknown)
            }
        case 0:
            return .running
        default:
            // ECHILD: not our child any more (reaped elsewhere). Nothing is left
            // to wait for, and asking again would never change the answer.
            return .reaped(.unknown)
        }
    }

    /// SIGKILL to the child's process group and to the child itself. Only called
    /// while the child is unreaped: until then its pid (and so its group id) cannot
    /// be given to another process.
    static func killGroup(_ pid: Int32) {
        guard pid > 1 else { return }
        _ = cl_kill_group(pid, SIGKILL)
        _ = kill(pid, SIGKILL)
    }

    /// SIGKILL to the child alone (the resolver's child shares the daemon's group).
    static func killProcess(_ pid: Int32) {
        guard pid > 1 else { return }
        _ = kill(pid, SIGKILL)
    }

    /// The next retry delay after `delay`.
    static func backoff(_ delay: Int64) -> Int64 {
        delay >= maxRetryNanoseconds / 2 ? maxRetryNanoseconds : max(firstRetryNanoseconds, delay * 2)
    }

    /// Children that were killed and are waiting to be reaped without an owner.
    /// One thread (DESIGN.md principle 1): the daemon's loop is the only user.
    nonisolated(unsafe) static var adopted: [Int32] = []

    /// Takes over a child that was sent SIGKILL but is not reaped yet.
    static func adopt(_ pid: Int32) {
        guard pid > 0 else { return }
        adopted.append(pid)
    }

    /// How many adopted children are still unreaped (the loop calls `reapAdopted`
    /// every `maxRetryNanoseconds` while this is not zero).
    public static var adoptedCount: Int { adopted.count }

    /// Reaps every adopted child that has died; returns how many are left.
    @discardableResult
    public static func reapAdopted() -> Int {
        if adopted.isEmpty { return 0 }
        adopted.removeAll { reap($0) != .running }
        return adopted.count
    }

    /// "10s", "1.5s", "300ms", "1ns": a timeout as people write it.
    static func duration(_ nanoseconds: Int64) -> String {
        let ns = max(0, nanoseconds)
        if ns >= 1_000_000_000 {
            let whole = ns / 1_000_000_000
            let tenths = ns % 1_000_000_000 / 100_000_000
            return tenths == 0 ? "\(whole)s" : "\(whole).\(tenths)s"
        }
        if ns >= 1_000_000 { return "\(ns / 1_000_000)ms" }
        return "\(ns)ns"
    }

    /// `now + delta`, saturating instead of trapping on overflow.
    static func later(_ now: Int64, _ delta: Int64) -> Int64 {
        let (sum, overflow) = now.addingReportingOverflow(max(0, delta))
        return overflow ? Int64.max : sum
    }
}

/// Reaping one child that is ending, without blocking the loop: waitpid(WNOHANG)
/// at once, then again after 1 ms, 2 ms, … up to `ChildReaper.maxRetryNanoseconds`
/// while it has not died yet (the kernel closes a process's files a moment before
/// it can be reaped, so EOF on its pipes does not mean it is reapable).
struct ReapSchedule: Equatable {
    /// When `attempt` should run again.
    private(set) var nextTry: Int64
    private var delay: Int64 = 0

    init(now: Int64) {
        nextTry = now
    }

    /// One waitpid of `pid`: its exit status once reaped; nil while it still
    /// runs, with the next attempt scheduled.
    mutating func attempt(_ pid: Int32, now: Int64) -> ExitStatus? {
        switch ChildReaper.reap(pid) {
        case .reaped(let status):
            return status
        case .running:
            delay = ChildReaper.backoff(delay)
            nextTry = ChildReaper.later(now, delay)
            return nil
        }
    }
}
