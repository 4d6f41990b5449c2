@testable import PosternCore

// `AuthThrottle` driven by any sequence of failures, successes and queries
// from up to 16 addresses (IPv4, IPv4-mapped, and IPv6 sharing or not a /64),
// with time moving forward by chosen steps, up to the end of Int64.
//
// Input: one byte of settings (capacity 1–8 or the default 256; maxFailures
// 1–4 or 10), then three bytes per step: operation, address, time step.
//
// Checked: no trap; the table never changes size and never remembers more
// than its capacity; every delay is between the first and the longest; a
// failure that reports a lockout leaves the address locked out until a time
// after now; a success of an address not locked leaves it no failures.

let addresses: [IPAddress] = [
    IPAddress("192.0.2.1")!, IPAddress("192.0.2.2")!, IPAddress("::ffff:192.0.2.1")!, IPAddress("127.0.0.1")!,
    IPAddress("::1")!, IPAddress("2001:db8::1")!, IPAddress("2001:db8::2")!, IPAddress("2001:db8:0:1::1")!,
    IPAddress("10.0.0.1")!, IPAddress("10.0.0.2")!, IPAddress("10.0.0.3")!, IPAddress("10.0.0.4")!,
    IPAddress("fe80::1")!, IPAddress("0.0.0.0")!, IPAddress("255.255.255.255")!, IPAddress("ffff:ffff:ffff:ffff::")!,
]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choice = input.byte()
    var settings = AuthThrottle.Settings()
    if choice & 8 != 0 { settings.capacity = Int(choice & 7) + 1 }
    if choice & 0x40 != 0 { settings.maxFailures = Int(choice >> 4 & 3) + 1 }
    if choice & 0x80 != 0 { settings.lockout = .max; settings.window = .max }
    var t = AuthThrottle(settings: settings)
    let size = t.entries.count
    var now: Int64 = choice & 0x20 != 0 ? Int64.max - 1_000_000_000_000 : 0
    while !input.isEmpty {
        let op = input.byte()
        let address = addresses[Int(input.byte() & 15)]
        let step = input.byte()
        // Steps from 0 to hours, and now and then a jump to near the end of time.
        let delta: Int64 = step == 255 ? Int64.max / 2 : Int64(step) * Int64(step) * 100_000_000
        let (next, overflow) = now.addingReportingOverflow(delta)
        now = overflow ? Int64.max : next
        switch op % 4 {
        case 0, 1:
            let started = t.recordFailure(address, now: now)
            if started {
                require(t.isLockedOut(address, now: now), "a lockout that does not lock")
                let until = t.lockedUntil(address, now: now) ?? now
                require(until > now || until == Int64.max, "a lockout ending before now")
            }
        case 2:
            let locked = t.isLockedOut(address, now: now)
            t.recordSuccess(address, now: now)
            if !locked { require(t.failures(address, now: now) == 0, "a success left failures") }
        default:
            if let until = t.lockedUntil(address, now: now) {
                require(until > now || until == Int64.max, "locked until the past")
            }
        }
        let d = t.delay(for: address, now: now)
        require(d >= t.settings.firstDelay && d <= t.settings.maxDelay, "a delay out of bounds: \(d)")
        require(t.entries.count == size, "the table changed size")
        require(t.count <= t.settings.capacity, "more addresses than the capacity")
    }
}
