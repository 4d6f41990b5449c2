/// When to send systemd's watchdog ping, and when to withhold it
/// (sd_watchdog_enabled(3): ping at half the interval).
///
/// A ping says "this daemon is doing its job", so it is sent only while:
/// - the loop is turning: the last iteration's work took less than the whole
///   interval (a loop stuck in a syscall sends nothing at all, which is the
///   other half of the same check);
/// - the spool is writable: no write or sync has failed with an I/O error since
///   the last good sync. A full disk is not a fault of the daemon (it answers 452
///   and keeps delivering, and a restart frees nothing), so it does not count.
/// When the spool has been failing for a whole interval, the daemon knows it is
/// wedged and asks for the restart itself (`WATCHDOG=trigger`).
public struct WatchdogPolicy: Equatable, Sendable {
    public enum Verdict: Equatable, Sendable {
        case notYet
        case ping
        /// Unhealthy: send nothing, so systemd restarts the service after the interval.
        case withhold(String)
        /// Wedged for a whole interval: ask for the restart now.
        case trigger(String)
    }

    /// The watchdog interval in nanoseconds (WatchdogSec).
    public let interval: Int64
    public private(set) var lastPing: Int64
    var unhealthySince: Int64? = nil
    var triggered = false

    public init(interval: Int64, now: Int64) {
        self.interval = interval
        lastPing = now
    }

    /// When the next ping is due.
    public var nextPing: Int64 { lastPing + interval / 2 }

    /// Called at the end of each loop iteration.
    /// - Parameters:
    ///   - iterationWork: nanoseconds the iteration spent working (not in poll).
    ///   - spoolFailure: the spool's current I/O error, if any.
    public mutating func check(now: Int64, iterationWork: Int64, spoolFailure: String?) -> Verdict {
        var problem: String? = nil
        if iterationWork >= interval {
            problem = "the loop stalled for \(iterationWork / 1_000_000) ms"
        } else if let f = spoolFailure {
            problem = "the spool is failing: \(f)"
        }
        if let p = problem {
            let since = unhealthySince ?? now
            unhealthySince = since
            if now - since >= interval && !triggered {
                triggered = true
                return .trigger(p)
            }
            return now >= nextPing ? .withhold(p) : .notYet
        }
        unhealthySince = nil
        triggered = false
        guard now >= nextPing else { return .notYet }
        lastPing = now
        return .ping
    }
}
