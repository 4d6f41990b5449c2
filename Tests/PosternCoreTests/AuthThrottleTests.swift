import Testing
@testable import PosternCore

private let s: Int64 = 1_000_000_000
private let minute = 60 * s

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

@Suite("AUTH failure throttle: delays, lockout, bounded table (RFC 4954 §4, Postfix smtpd_error_sleep_time)")
struct AuthThrottleTests {
    @Test("The delay before a failure's reply is 1 s, then doubles per failure in the window, capped at 8 s")
    func delayGrows() {
        var t = AuthThrottle()
        let a = ip("192.0.2.7")
        var delays: [Int64] = []
        for i in 0..<6 {
            t.recordFailure(a, now: Int64(i) * s)
            delays.append(t.delay(for: a, now: Int64(i) * s))
        }
        #expect(delays == [1 * s, 2 * s, 4 * s, 8 * s, 8 * s, 8 * s])
    }

    @Test("An address with no failure recorded still waits the first delay (Postfix sleeps 1 s on every error)")
    func unknownAddressDelay() {
        let t = AuthThrottle()
        #expect(t.delay(for: ip("198.51.100.1"), now: 0) == 1 * s)
    }

    @Test("The tenth failure within 10 minutes starts a 15-minute lockout, reported once")
    func lockoutAfterTen() {
        var t = AuthThrottle()
        let a = ip("192.0.2.7")
        var started: [Bool] = []
        for i in 0..<10 { started.append(t.recordFailure(a, now: Int64(i) * 30 * s)) }
        #expect(started == Array(repeating: false, count: 9) + [true])
        let lockStart = 9 * 30 * s
        #expect(t.isLockedOut(a, now: lockStart))
        #expect(t.lockedUntil(a, now: lockStart) == lockStart + 15 * minute)
        #expect(t.delay(for: a, now: lockStart) == 8 * s)
        #expect(t.isLockedOut(a, now: lockStart + 15 * minute - 1))
        #expect(!t.isLockedOut(a, now: lockStart + 15 * minute))
        // A new count after the lockout: one failure does not lock again.
        let again = t.recordFailure(a, now: lockStart + 15 * minute)
        #expect(again == false)
        #expect(!t.isLockedOut(a, now: lockStart + 15 * minute))
        #expect(t.delay(for: a, now: lockStart + 15 * minute) == 1 * s)
    }

    @Test("Failures further apart than the window do not add up")
    func windowExpires() {
        var t = AuthThrottle()
        let a = ip("192.0.2.7")
        for i in 0..<9 { t.recordFailure(a, now: Int64(i) * s) }
        #expect(t.failures(a, now: 9 * s) == 9)
        #expect(t.failures(a, now: 10 * minute) == 0)
        let locked = t.recordFailure(a, now: 10 * minute)
        #expect(locked == false)
        #expect(t.failures(a, now: 10 * minute) == 1)
        #expect(t.delay(for: a, now: 10 * minute) == 1 * s)
    }

    @Test("A success forgets the address's failures; it does not lift a lockout")
    func successClears() {
        var t = AuthThrottle()
        let a = ip("192.0.2.7")
        for i in 0..<5 { t.recordFailure(a, now: Int64(i) * s) }
        t.recordSuccess(a, now: 6 * s)
        #expect(t.failures(a, now: 6 * s) == 0)
        #expect(t.count == 0)
        for i in 0..<10 { t.recordFailure(a, now: 10 * s + Int64(i)) }
        t.recordSuccess(a, now: 11 * s)
        #expect(t.isLockedOut(a, now: 11 * s))
    }

    @Test("Addresses are counted apart; an IPv4-mapped IPv6 address is its IPv4 address")
    func keys() {
        var t = AuthThrottle()
        for i in 0..<10 { t.recordFailure(ip("192.0.2.7"), now: Int64(i)) }
        #expect(t.isLockedOut(ip("192.0.2.7"), now: 10))
        #expect(t.isLockedOut(ip("::ffff:192.0.2.7"), now: 10))
        #expect(!t.isLockedOut(ip("192.0.2.8"), now: 10))
    }

    @Test("IPv6 counts by /64 (RFC 7421: one host may hold a whole /64)")
    func ipv6Prefix() {
        var t = AuthThrottle()
        for i in 0..<10 { t.recordFailure(ip("2001:db8:1:2::\(i + 1)"), now: Int64(i)) }
        #expect(t.isLockedOut(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), now: 10))
        #expect(!t.isLockedOut(ip("2001:db8:1:3::1"), now: 10))
        #expect(t.count == 1)
    }

    @Test("Loopback is throttled and locked out like any address")
    func loopback() {
        var t = AuthThrottle()
        for i in 0..<10 { t.recordFailure(.loopbackV4, now: Int64(i)) }
        #expect(t.isLockedOut(.loopbackV4, now: 10))
        #expect(!t.isLockedOut(.loopbackV6, now: 10))
    }

    @Test("The table never grows past its capacity; the least recently failed unlocked entry goes first")
    func boundedTable() {
        var settings = AuthThrottle.Settings()
        settings.capacity = 4
        var t = AuthThrottle(settings: settings)
        let locked = ip("10.0.0.1")
        for i in 0..<10 { t.recordFailure(locked, now: Int64(i)) }
        for n in 2...4 { t.recordFailure(ip("10.0.0.\(n)"), now: 100 + Int64(n)) }
        #expect(t.count == 4)
        // A fifth address takes the entry of 10.0.0.2, the oldest unlocked one.
        t.recordFailure(ip("10.0.0.5"), now: 200)
        #expect(t.count == 4)
        #expect(t.failures(ip("10.0.0.2"), now: 200) == 0)
        #expect(t.failures(ip("10.0.0.3"), now: 200) == 1)
        #expect(t.isLockedOut(locked, now: 200))
        // Thousands of addresses later, memory is the same four entries.
        for n in 0..<5000 { t.recordFailure(IPAddress(bytes: [172, 16, UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])!, now: 300 + Int64(n)) }
        #expect(t.entries.count == 4)
        #expect(t.count == 4)
        #expect(t.isLockedOut(locked, now: 6000), "a locked entry goes only when every entry is locked")
    }

    @Test("When every entry is locked, the lockout that ends first is pushed out")
    func allLocked() {
        var settings = AuthThrottle.Settings()
        settings.capacity = 2
        settings.maxFailures = 1
        var t = AuthThrottle(settings: settings)
        let started = [t.recordFailure(ip("10.0.0.1"), now: 1), t.recordFailure(ip("10.0.0.2"), now: 2),
                       t.recordFailure(ip("10.0.0.3"), now: 3)]
        #expect(started == [true, true, true])
        #expect(!t.isLockedOut(ip("10.0.0.1"), now: 4))
        #expect(t.isLockedOut(ip("10.0.0.2"), now: 4))
        #expect(t.isLockedOut(ip("10.0.0.3"), now: 4))
    }

    @Test("Time arithmetic saturates at the ends of Int64 (no trap)", arguments: [Int64.max, Int64.max - 1, Int64.min, 0])
    func saturation(now: Int64) {
        var settings = AuthThrottle.Settings()
        settings.maxFailures = 2
        settings.lockout = .max
        settings.window = .max
        settings.maxDelay = .max
        var t = AuthThrottle(settings: settings)
        let a = ip("192.0.2.1")
        for _ in 0..<70 {
            t.recordFailure(a, now: now)
            _ = t.delay(for: a, now: now)
        }
        // Two failures at one instant lock, for the longest lockout there is (saturated).
        #expect(t.isLockedOut(a, now: now))
        #expect(t.lockedUntil(a, now: now) == (now > 0 ? Int64.max : now + Int64.max))
        #expect(t.delay(for: a, now: now) >= settings.firstDelay)
    }

    @Test("The table's size is fixed at init: 256 entries by default")
    func defaultCapacity() {
        let t = AuthThrottle()
        #expect(t.entries.count == 256)
        #expect(MemoryLayout<AuthThrottle.Entry>.stride <= 64)
    }
}
