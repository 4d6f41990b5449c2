/// One reading of the clocks, taken by the loop and handed to pure code.
public struct ClockReading: Equatable, Sendable {
    /// CLOCK_REALTIME, seconds since the epoch (headers, logs, message age).
    public var wall: Int64
    /// CLOCK_MONOTONIC, nanoseconds (every schedule).
    public var monotonic: Int64
    /// The kernel says the wall clock is synchronised (adjtimex(2): no STA_UNSYNC).
    public var synchronised: Bool

    public init(wall: Int64, monotonic: Int64, synchronised: Bool) {
        self.wall = wall
        self.monotonic = monotonic
        self.synchronised = synchronised
    }

    public var monotonicSeconds: Int64 { monotonic / 1_000_000_000 }
}

/// When a queued message is given up (`[spool] max_age`), safely against the
/// clocks of small boards (DESIGN.md principle 6).
///
/// A board without an RTC boots in 1970 and jumps to today when NTP syncs; a
/// misconfigured server can jump it anywhere. So the wall clock is read once, when
/// a message is loaded (received, or found by the recovery scan), and only if both
/// that reading and the one at arrival were synchronised does the message start
/// with the age it already has; otherwise its age starts at zero then. From there
/// on the age runs on the monotonic clock, which no jump moves: a jump of the wall
/// clock, forward or back, can neither expire the queue at once nor cause a retry
/// storm (retries are monotonic too). And nothing expires while the clock is
/// unsynchronised: a wrong clock gives mail more time, never less.
public struct ExpiryPolicy: Equatable, Sendable {
    /// Seconds a message may stay queued.
    public var maxAge: Int64

    public init(maxAge: Int) { self.maxAge = Int64(maxAge) }

    /// The monotonic second at which a message loaded `now` expires.
    ///
    /// The arrival comes from the spool, where a damaged record (with a valid
    /// CRC) can hold any value: an arrival before 1970 cannot come from a
    /// synchronised clock and gives no age, and the subtraction is checked, so no
    /// arrival time can trap (issue 7; the recovery fuzzer found `Int64.min`).
    public func deadline(arrival: Int64, arrivalSynchronised: Bool, loadedAt now: ClockReading) -> Int64 {
        var accrued: Int64 = 0
        if arrivalSynchronised && now.synchronised && arrival >= 0 {
            let age = now.wall.subtractingReportingOverflow(arrival)
            if !age.overflow { accrued = max(0, age.partialValue) }
        }
        return now.monotonicSeconds + max(0, maxAge - accrued)
    }

    public func isExpired(deadline: Int64, at now: ClockReading) -> Bool {
        now.synchronised && now.monotonicSeconds >= deadline
    }
}
