import Testing
@testable import PosternCore

let second: Int64 = 1_000_000_000

@Suite("Retry policy: exponential backoff with jitter, on the monotonic clock")
struct RetryPolicyTests {
    static let policy = RetryPolicy(initialSeconds: 60, maxSeconds: 3600)

    @Test("With the smallest jitter the delay is 3/4 of initial·2^(attempt−1), capped at max", arguments: [
        (1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1920), (7, 3600), (8, 3600), (50, 3600),
    ])
    func smallestJitter(attempt: Int, base: Int64) {
        #expect(Self.policy.delayNanoseconds(afterAttempt: attempt, random: 0) == base * second * 3 / 4)
    }

    @Test("With the largest jitter the delay stays just below the base delay", arguments: [1, 2, 5, 7, 100])
    func largestJitter(attempt: Int) {
        let base = min(Int64(60) << Int64(min(attempt - 1, 20)), 3600) * second
        let d = Self.policy.delayNanoseconds(afterAttempt: attempt, random: .max)
        #expect(d < base)
        #expect(d >= base - base / 1000)
    }

    @Test("max is a true upper bound and 3/4·initial a lower bound, for any attempt and random value")
    func bounds() {
        var r: UInt64 = 0x1234_5678
        for attempt in 1...200 {
            for _ in 0..<20 {
                r = r &* 6364136223846793005 &+ 1442695040888963407
                let d = Self.policy.delayNanoseconds(afterAttempt: attempt, random: r)
                #expect(d <= 3600 * second)
                #expect(d >= 45 * second)
            }
        }
    }

    @Test("Delays do not shrink as attempts grow (same random value)")
    func monotonic() {
        for random: UInt64 in [0, 1 << 63, .max] {
            var previous: Int64 = 0
            for attempt in 1...30 {
                let d = Self.policy.delayNanoseconds(afterAttempt: attempt, random: random)
                #expect(d >= previous)
                previous = d
            }
        }
    }

    @Test("Jitter spreads messages deferred together")
    func spread() {
        let delays = Set((0..<16).map { i in Self.policy.delayNanoseconds(afterAttempt: 3, random: UInt64(i) << 60) })
        #expect(delays.count == 16)
    }

    @Test("Attempt numbers below 1 count as the first attempt", arguments: [0, -1, Int.min])
    func belowOne(attempt: Int) {
        #expect(Self.policy.delayNanoseconds(afterAttempt: attempt, random: 0)
            == Self.policy.delayNanoseconds(afterAttempt: 1, random: 0))
    }

    @Test("A huge attempt number neither traps nor exceeds max")
    func huge() {
        let d = Self.policy.delayNanoseconds(afterAttempt: Int.max, random: 0)
        #expect(d == 2700 * second)
    }

    @Test("initial equal to max gives a constant delay")
    func constant() {
        let p = RetryPolicy(initialSeconds: 30, maxSeconds: 30)
        for attempt in 1...5 { #expect(p.delayNanoseconds(afterAttempt: attempt, random: 0) == 30 * second * 3 / 4) }
    }

    @Test("The policy comes from [retry]")
    func fromConfig() {
        var c = RetryConfig()
        c.initial = 5
        c.max = 60
        #expect(RetryPolicy(c) == RetryPolicy(initialSeconds: 5, maxSeconds: 60))
        #expect(RetryPolicy(RetryConfig()) == RetryPolicy(initialSeconds: 60, maxSeconds: 3600))
    }
}
