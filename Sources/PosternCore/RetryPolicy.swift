/// When to try a deferred message (or an unreachable upstream) again: exponential
/// backoff from `[retry] initial` to `[retry] max`, with jitter so that messages
/// deferred together do not all come back in the same instant.
///
/// Pure: the caller passes the attempt number and a random value; delays are in
/// nanoseconds on the monotonic clock (DESIGN.md principle 6).
public struct RetryPolicy: Equatable, Sendable {
    public var initialSeconds: Int
    public var maxSeconds: Int

    public init(initialSeconds: Int, maxSeconds: Int) {
        self.initialSeconds = initialSeconds
        self.maxSeconds = maxSeconds
    }

    public init(_ config: RetryConfig) {
        self.init(initialSeconds: config.initial, maxSeconds: config.max)
    }

    /// The delay after the `attempt`-th failure (1-based): initial·2^(attempt−1),
    /// capped at max, then scaled by a factor in [0.75, 1.0) drawn from `random`.
    /// Jitter only shortens, so `max` stays a true upper bound.
    public func delayNanoseconds(afterAttempt attempt: Int, random: UInt64) -> Int64 {
        let a = Swift.max(1, attempt)
        var seconds = Int64(initialSeconds)
        var i = 1
        while i < a && seconds < Int64(maxSeconds) {
            seconds *= 2
            i += 1
        }
        seconds = Swift.min(seconds, Int64(maxSeconds))
        let nanos = seconds * 1_000_000_000
        // 0.75 + 0.25 * (random / 2^64), in integer arithmetic.
        let fraction = Int64(random >> 40)            // 24 random bits
        let jitter = (nanos / 4) / (1 << 24) * fraction
        return nanos - nanos / 4 + jitter
    }
}
