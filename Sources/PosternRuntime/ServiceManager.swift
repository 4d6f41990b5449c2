import PosternCore

/// What the daemon tells systemd (sd_notify(3)): READY=1 once the spool is
/// recovered and every listener open, STATUS= kept current but rate-limited,
/// STOPPING=1, RELOADING=1 with MONOTONIC_USEC, and the watchdog pings, sent only
/// while `WatchdogPolicy` finds the daemon healthy. Silent when not run by
/// systemd.
public final class ServiceManager {
    let log: Log
    public private(set) var watchdog: WatchdogPolicy?
    var lastStatus = ""
    var lastStatusAt: Int64 = 0
    /// A changed status waiting for the rate limit.
    var pendingStatus: String? = nil
    /// The last unhealthy reason logged, so a withheld ping is logged once.
    var withheldReason: String? = nil

    /// STATUS= at most this often (systemd does not want a stream of updates).
    static let statusInterval: Int64 = 2_000_000_000
    /// Whether there is a service manager to notify (sd_notify(3) reads
    /// NOTIFY_SOCKET at each call and does nothing without it; the environment
    /// does not change under the daemon).
    let notifying = Systemd.notifySocketSet()

    public init(log: Log, now: Int64) {
        self.log = log
        if let usec = Systemd.watchdogMicroseconds() {
            watchdog = WatchdogPolicy(interval: Int64(usec) * 1000, now: now)
            log.info("systemd watchdog enabled", [("interval_ms", "\(usec / 1000)")])
        }
    }

    public func ready(status: String, now: Int64) {
        lastStatus = status
        lastStatusAt = now
        pendingStatus = nil
        Systemd.notify("READY=1\nSTATUS=" + status)
    }

    public func stopping() {
        Systemd.notify("STOPPING=1\nSTATUS=Stopping: finishing or abandoning the transactions in progress")
    }

    /// Before re-reading the configuration; `ready` follows when done.
    public func reloading(now: Int64) {
        Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(now / 1000)\nSTATUS=Reloading the configuration")
    }

    /// Offers the current status; it is sent when it changed, at most every two
    /// seconds.
    public func status(_ text: String, now: Int64) {
        status(now: now) { text }
    }

    /// The same, with the text made only when it can matter: the loop offers
    /// its status at every iteration, and building it (queue ages, the
    /// upstream's name) was a few percent of the CPU per message at a thousand
    /// messages a second (issue 11). Not at all without a service manager to
    /// tell; while a changed status already waits for the rate limit it is
    /// made again only when the wait is over (the wake-up `nextWakeup` asks
    /// for brings that iteration).
    public func status(now: Int64, _ make: () -> String) {
        guard notifying else { return }
        let due = now - lastStatusAt >= Self.statusInterval
        if pendingStatus != nil && !due { return }
        let text = make()
        if text == lastStatus { pendingStatus = nil; return }
        if now - lastStatusAt >= Self.statusInterval {
            lastStatus = text
            lastStatusAt = now
            pendingStatus = nil
            Systemd.notify("STATUS=" + text)
        } else {
            pendingStatus = text
        }
    }

    /// Ends an iteration: the watchdog's verdict.
    public func afterIteration(now: Int64, work: Int64, spoolFailure: String?) {
        guard var w = watchdog else { return }
        let verdict = w.check(now: now, iterationWork: work, spoolFailure: spoolFailure)
        watchdog = w
        switch verdict {
        case .notYet:
            break
        case .ping:
            Systemd.notify("WATCHDOG=1")
            if withheldReason != nil {
                log.notice("healthy again: watchdog pings resumed", id: MessageIDs.watchdog)
                withheldReason = nil
            }
        case .withhold(let why):
            if withheldReason != why {
                log.error("unhealthy: watchdog pings withheld, systemd will restart the service", [("reason", why)],
                          id: MessageIDs.watchdog)
                withheldReason = why
            }
        case .trigger(let why):
            log.error("wedged: asking systemd for a restart", [("reason", why)], id: MessageIDs.watchdog)
            Systemd.notify("WATCHDOG=trigger\nSTATUS=Wedged: " + why)
        }
    }

    /// The next moment the loop must wake for the service manager, if any.
    public func nextWakeup() -> Int64? {
        var t = watchdog?.nextPing
        if pendingStatus != nil {
            let due = lastStatusAt + Self.statusInterval
            t = t.map { min($0, due) } ?? due
        }
        return t
    }

    /// Sends a status the rate limit held back, once its time has come.
    public func flushPendingStatus(now: Int64) {
        if let p = pendingStatus { status(p, now: now) }
    }
}
