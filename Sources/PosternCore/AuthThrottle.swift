/// Failed AUTH attempts per client address (issue 12 item 2): the delay
/// before answering a failure, and a lockout after repeated failures. A pure
/// value: the caller passes the monotonic time (nanoseconds) and logs what
/// `recordFailure` reports. The receiver asks `isLockedOut` before taking an
/// AUTH command, records each failure and success, and sleeps (a timer, never
/// the loop) `delay(for:now:)` before sending 535.
///
/// Choices (where RFC 4954 is silent, Postfix 3.9 by default):
/// - **Delay.** Postfix sleeps `smtpd_error_sleep_time` (1 s) before every
///   error reply, and RFC 4954 §4 leaves the rest to the server. Here the
///   delay before a failed AUTH's reply is 1 s for an address's first failure
///   in its window, doubling with each further one (1, 2, 4, 8 s) and capped
///   at 8 s: a guesser on one connection makes at most one guess a second,
///   and from the fourth on one per 8 s, while a user who mistyped once waits
///   a second. The delay never exceeds the command timeout, so the client
///   still gets its answer.
/// - **Lockout.** `maxFailures` (10) failures counted in one window of
///   `window` (10 min; the window starts at the first failure counted in it,
///   so at worst 2·N−1 failures fit in any 10 minutes across a window's end)
///   lock the address out for `lockout` (15 min): AUTH is refused (the caller
///   answers 454 4.7.0, a temporary failure, so a legitimate client retries
///   later rather than bouncing mail). A lockout starts a fresh count: after
///   it ends, another `maxFailures` failures are needed for the next one.
/// - **Keys.** An IPv4 address is its own key (IPv4-mapped IPv6 addresses
///   count as their IPv4 address). An IPv6 address counts by its /64: one
///   host is usually given a whole /64 (RFC 7421; SLAAC, privacy addresses,
///   RFC 8981), so per-address counting would let it take 2^64 fresh
///   addresses. A LAN device sharing a /64 with a guesser shares its count
///   too; on a board's LAN that is the price of counting at all.
/// - **Loopback** is counted like every other address: a local process can
///   guess as well as a remote one, and a lockout of 127.0.0.1 only refuses
///   AUTH, not mail from loopback, which needs no AUTH (the receiver's
///   `allow_clients`).
/// - **Memory.** A fixed table of `capacity` (256) entries of 56 octets (14 KiB),
///   allocated in `init` and never grown. An address not in the table when it
///   fails takes an unused entry, else an expired one (window over, not
///   locked), else the entry used least recently among those not locked,
///   else the locked entry whose lockout ends first. So a guesser with more
///   than 256 addresses (or /64s) can push others out of the table; it is
///   still delayed on every failure, and the bound is what keeps a flood of
///   addresses from growing memory.
///
/// Time arithmetic saturates: no input overflows.
public struct AuthThrottle: Sendable {
    public struct Settings: Equatable, Sendable {
        /// Failures within `window` that start a lockout (at least 1).
        public var maxFailures: Int = 10
        /// Nanoseconds a window of failures lasts from its first failure.
        public var window: Int64 = 600_000_000_000
        /// Nanoseconds an address stays locked out.
        public var lockout: Int64 = 900_000_000_000
        /// The delay before the first failure's reply (Postfix's
        /// smtpd_error_sleep_time: 1 s).
        public var firstDelay: Int64 = 1_000_000_000
        /// The longest delay before a failure's reply.
        public var maxDelay: Int64 = 8_000_000_000
        /// Addresses (or IPv6 /64s) remembered at once.
        public var capacity: Int = 256

        public init() {}
    }

    /// An IPv4 address, or the first 64 bits of an IPv6 address.
    struct Key: Equatable, Sendable {
        var isV6: Bool
        var value: UInt64

        init(_ address: IPAddress) {
            let a = address.unmapped
            var v: UInt64 = 0
            // 4 octets for IPv4, the first 8 (the /64) for IPv6.
            for b in a.bytes.prefix(a.isV4 ? 4 : 8) { v = v << 8 | UInt64(b) }
            isV6 = !a.isV4
            value = v
        }
    }

    struct Entry: Sendable {
        var key: Key
        var inUse: Bool
        /// Failures counted in the current window.
        var failures: Int
        /// When the current window began (its first failure).
        var windowStart: Int64
        /// The last failure (for least-recently-used eviction).
        var lastFailure: Int64
        /// Locked out until this time; `Int64.min` when not locked.
        var lockedUntil: Int64

        static let empty = Entry(key: Key(.unspecifiedV4), inUse: false, failures: 0, windowStart: 0,
                                 lastFailure: 0, lockedUntil: Int64.min)
    }

    public let settings: Settings
    var entries: [Entry]

    public init(settings: Settings = Settings()) {
        var s = settings
        s.maxFailures = max(1, s.maxFailures)
        s.capacity = max(1, s.capacity)
        s.window = max(0, s.window)
        s.lockout = max(0, s.lockout)
        s.firstDelay = max(0, s.firstDelay)
        s.maxDelay = max(s.firstDelay, s.maxDelay)
        self.settings = s
        entries = [Entry](repeating: .empty, count: s.capacity)
    }

    /// Addresses currently remembered.
    public var count: Int { entries.reduce(0) { $0 + ($1.inUse ? 1 : 0) } }

    /// Until when `address` is locked out, or nil when it is not.
    public func lockedUntil(_ address: IPAddress, now: Int64) -> Int64? {
        guard let i = index(of: Key(address)), locked(entries[i], now: now) else { return nil }
        return entries[i].lockedUntil
    }

    /// Whether AUTH from `address` is refused now.
    public func isLockedOut(_ address: IPAddress, now: Int64) -> Bool {
        lockedUntil(address, now: now) != nil
    }

    /// Failures of `address` counted in its current window (0 when the
    /// window is over or the address is unknown).
    public func failures(_ address: IPAddress, now: Int64) -> Int {
        guard let i = index(of: Key(address)), !windowOver(entries[i], now: now) else { return 0 }
        return entries[i].failures
    }

    /// The delay before answering a failed AUTH, in nanoseconds: after
    /// `recordFailure`, 1 s for the window's first failure, doubling for each
    /// further one, at most 8 s (see the type's comment). At least the first
    /// delay even when the address was pushed out of the table; the longest
    /// delay when the failure started a lockout.
    public func delay(for address: IPAddress, now: Int64) -> Int64 {
        if isLockedOut(address, now: now) { return settings.maxDelay }
        let n = max(1, failures(address, now: now))
        var d = settings.firstDelay
        var step = 1
        while step < n && d > 0 && d < settings.maxDelay {
            let (doubled, overflow) = d.multipliedReportingOverflow(by: 2)
            d = overflow ? settings.maxDelay : doubled
            step += 1
        }
        return min(d, settings.maxDelay)
    }

    /// Counts a failed AUTH from `address`. Returns true when this failure
    /// started a lockout (the caller logs it, once).
    @discardableResult
    public mutating func recordFailure(_ address: IPAddress, now: Int64) -> Bool {
        let key = Key(address)
        let i = index(of: key) ?? claim(key, now: now)
        var e = entries[i]
        if locked(e, now: now) {
            // Refused AUTH while locked does not reach here; if it does, the
            // lockout simply runs on.
            e.lastFailure = now
            entries[i] = e
            return false
        }
        if windowOver(e, now: now) {
            e.failures = 0
            e.windowStart = now
        }
        e.failures += 1
        e.lastFailure = now
        var started = false
        if e.failures >= settings.maxFailures {
            let (until, overflow) = now.addingReportingOverflow(settings.lockout)
            e.lockedUntil = overflow ? Int64.max : until
            e.failures = 0
            e.windowStart = now
            started = true
        }
        entries[i] = e
        return started
    }

    /// A successful AUTH from `address`: its failures are forgotten.
    public mutating func recordSuccess(_ address: IPAddress, now: Int64) {
        guard let i = index(of: Key(address)), !locked(entries[i], now: now) else { return }
        entries[i] = .empty
    }

    // MARK: - the table

    func index(of key: Key) -> Int? {
        entries.firstIndex { $0.inUse && $0.key == key }
    }

    /// A lockout that saturated at `Int64.max` lasts to the end of time,
    /// even at `now == Int64.max`.
    func locked(_ e: Entry, now: Int64) -> Bool {
        e.lockedUntil > now || e.lockedUntil == Int64.max
    }

    func windowOver(_ e: Entry, now: Int64) -> Bool {
        let (end, overflow) = e.windowStart.addingReportingOverflow(settings.window)
        return !overflow && now >= end
    }

    /// An entry for a new key: unused, else expired, else the least recently
    /// failed unlocked one, else the locked one whose lockout ends first.
    mutating func claim(_ key: Key, now: Int64) -> Int {
        var choice = 0
        var rank = (tier: Int.max, time: Int64.max)
        for (i, e) in entries.enumerated() {
            let isLocked = locked(e, now: now)
            let r: (tier: Int, time: Int64)
            if !e.inUse { r = (0, 0) }
            else if !isLocked && windowOver(e, now: now) { r = (1, e.lastFailure) }
            else if !isLocked { r = (2, e.lastFailure) }
            else { r = (3, e.lockedUntil) }
            if r.tier < rank.tier || (r.tier == rank.tier && r.time < rank.time) {
                rank = r
                choice = i
                if r.tier == 0 { break }
            }
        }
        var fresh = Entry.empty
        fresh.key = key
        fresh.inUse = true
        fresh.windowStart = now
        entries[choice] = fresh
        return choice
    }
}
