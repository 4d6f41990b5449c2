import Testing
@testable import PosternCore

@Suite("Expiry on an untrustworthy clock (DESIGN.md principle 6, issue 3 item 8)")
struct ExpiryPolicyTests {
    let policy = ExpiryPolicy(maxAge: 5 * 86400)
    let today: Int64 = 1_796_000_000          // a wall-clock reading in 2026
    let bootMonotonic: Int64 = 30 * 1_000_000_000

    func reading(wall: Int64, monotonicSeconds: Int64, synchronised: Bool = true) -> ClockReading {
        ClockReading(wall: wall, monotonic: monotonicSeconds * 1_000_000_000, synchronised: synchronised)
    }

    @Test("a message keeps the age it already has when both clock readings are trustworthy")
    func accruedAge() {
        let load = reading(wall: today, monotonicSeconds: 100)
        let d = policy.deadline(arrival: today - 86400, arrivalSynchronised: true, loadedAt: load)
        #expect(d == 100 + 4 * 86400)
        #expect(!policy.isExpired(deadline: d, at: reading(wall: today, monotonicSeconds: d - 1)))
        #expect(policy.isExpired(deadline: d, at: reading(wall: today, monotonicSeconds: d)))
    }

    @Test("a message already older than max_age expires at once, but only on a synchronised clock")
    func alreadyOld() {
        let load = reading(wall: today, monotonicSeconds: 100)
        let d = policy.deadline(arrival: today - 6 * 86400, arrivalSynchronised: true, loadedAt: load)
        #expect(d == 100)
        #expect(policy.isExpired(deadline: d, at: load))
        #expect(!policy.isExpired(deadline: d, at: reading(wall: today, monotonicSeconds: 100, synchronised: false)))
    }

    @Test("boot in 1970 with a spool from today: no message expires when NTP jumps the clock forward")
    func bootIn1970() {
        // The spool is scanned at boot, clock unsynchronised and in 1970.
        let boot = reading(wall: 40, monotonicSeconds: 30, synchronised: false)
        let d = policy.deadline(arrival: today - 2 * 86400, arrivalSynchronised: true, loadedAt: boot)
        #expect(d == 30 + 5 * 86400, "the full max_age, counted from the scan")
        // NTP syncs ten minutes later: still far from the deadline.
        #expect(!policy.isExpired(deadline: d, at: reading(wall: today, monotonicSeconds: 630)))
    }

    @Test("mail received while the clock said 1970 gets no age from that arrival time")
    func arrivalIn1970() {
        let load = reading(wall: today, monotonicSeconds: 5000)
        let d = policy.deadline(arrival: 600, arrivalSynchronised: false, loadedAt: load)
        #expect(d == 5000 + 5 * 86400, "56 years of bogus age are ignored")
    }

    @Test("an arrival time no synchronised clock gives (a damaged spool record) gives no age, and no trap",
          arguments: [Int64.min, Int64.min + 0x6553_f100, -1, Int64.max])
    func impossibleArrival(arrival: Int64) {
        for wall in [today, Int64.max, Int64.min, 0] {
            let load = reading(wall: wall, monotonicSeconds: 100)
            let d = policy.deadline(arrival: arrival, arrivalSynchronised: true, loadedAt: load)
            #expect(d == 100 + 5 * 86400)
        }
    }

    @Test("a clock that went backwards gives no negative age and no early expiry")
    func backwards() {
        let load = reading(wall: today - 86400, monotonicSeconds: 10)
        let d = policy.deadline(arrival: today, arrivalSynchronised: true, loadedAt: load)
        #expect(d == 10 + 5 * 86400)
    }

    @Test("wall-clock jumps after loading move no deadline: the age runs on the monotonic clock",
          arguments: [Int64(0), Int64(40), Int64(4_000_000_000), Int64(-86400 * 365)])
    func jumpsAfterLoading(jumpTo: Int64) {
        let load = reading(wall: today, monotonicSeconds: 100)
        let d = policy.deadline(arrival: today - 3600, arrivalSynchronised: true, loadedAt: load)
        // One hour later, whatever the wall clock now says:
        #expect(!policy.isExpired(deadline: d, at: reading(wall: jumpTo, monotonicSeconds: 3700)))
        // And exactly at the deadline, whatever it says:
        #expect(policy.isExpired(deadline: d, at: reading(wall: jumpTo, monotonicSeconds: d)))
    }

    @Test("nothing expires while the clock is unsynchronised, however late it is")
    func neverWhileUnsynchronised() {
        #expect(!policy.isExpired(deadline: 0, at: reading(wall: today, monotonicSeconds: 1 << 32, synchronised: false)))
    }
}
