/// How the fixed pool of receiver connections (`[receiver] max_connections`) is
/// shared: the last quarter of the slots (at least one, when there are two or
/// more) is kept for loopback clients, so LAN devices — or a handful of hostile
/// or stuck clients on the LAN — can never lock the board's own alerts out.
///
/// Within the rest, one client address may hold at most `perClient` slots at
/// once (`[receiver] max_connections_per_client`, issue 12 item 5), so one
/// misbehaving camera cannot take every slot the other LAN devices share.
/// This is Postfix's anvil(8) count limit (`smtpd_client_connection_count_limit`,
/// 50 against a `default_process_limit` of 100: half the pool), with its
/// exception list (`smtpd_client_event_limit_exceptions`, there `$mynetworks`,
/// here `connection_limit_exempt`, loopback by default: the board's own
/// programs are trusted as Postfix trusts its own networks, and a LAN device
/// allowed to relay is not exempt, since the cap exists for exactly those).
///
/// A client is its whole address, IPv6 included: Postfix (internet-facing)
/// counts an IPv6 client by its network, because whoever holds one address
/// holds its /64; on the LAN Postern serves, every device shares the one /64
/// of the home network (RFC 4291 §2.5.1, RFC 4862 §5.5.3), so counting by /64
/// would make the per-client cap a cap on the whole LAN. The address is the
/// kernel's (accept(2)), IPv4-mapped IPv6 taken as the IPv4 it carries.
///
/// Pure value: the pool counts its active connections per address by scanning
/// its fixed slots (at most 1,024, no allocation) and asks `admission`.
public struct ConnectionSlots: Equatable, Sendable {
    public let total: Int
    /// Connections one client address may hold at once, at least 1.
    public let perClient: Int
    /// Client networks the per-client cap does not apply to.
    public let exempt: [CIDR]

    /// 127.0.0.0/8 and ::1: the defaults of `connection_limit_exempt` and
    /// `greet_pause_exempt`.
    public static let loopbackNetworks = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]

    /// The default per-client cap for a pool of `total`: half of it, at least
    /// one (Postfix's 50 of 100).
    public static func defaultPerClient(total: Int) -> Int { Swift.max(1, total / 2) }

    public init(total: Int, perClient: Int? = nil, exempt: [CIDR] = ConnectionSlots.loopbackNetworks) {
        self.total = total
        self.perClient = Swift.max(1, perClient ?? Self.defaultPerClient(total: total))
        self.exempt = exempt
    }

    /// Slots only loopback clients may take.
    public var reservedForLoopback: Int { total >= 2 ? Swift.max(1, total / 4) : 0 }

    /// Whether a new client may take a slot while `active` slots are in use.
    public func admits(loopback: Bool, active: Int) -> Bool {
        if active >= total { return false }
        return loopback || active < total - reservedForLoopback
    }

    /// Why a new connection is refused, or that it is taken.
    public enum Verdict: Equatable, Sendable {
        case admit
        /// Every slot this client may use is taken (`max_connections`, or the
        /// share left after the loopback reserve).
        case poolFull
        /// This client already holds `perClient` slots.
        case clientOverCap
    }

    /// The verdict on a new connection from `peer` while `active` slots are in
    /// use, `fromSameClient` of them by `peer` (`sameClient`). A connection on
    /// the local submission socket is `local`: exempt from the per-client cap,
    /// like any process of the board's own.
    public func admission(peer: IPAddress, local: Bool = false, active: Int, fromSameClient: Int) -> Verdict {
        if !admits(loopback: local || peer.isLoopback, active: active) { return .poolFull }
        if !local && fromSameClient >= perClient && !isExempt(peer) { return .clientOverCap }
        return .admit
    }

    /// Whether `peer` is outside the per-client cap.
    public func isExempt(_ peer: IPAddress) -> Bool { exempt.contains { $0.contains(peer) } }

    /// Whether two connections count as the same client: the same address,
    /// after IPv4-mapped IPv6 is unmapped (see the type's comment for /128).
    public static func sameClient(_ a: IPAddress, _ b: IPAddress) -> Bool {
        a.bytes.count == b.bytes.count ? a.bytes == b.bytes : a.unmapped == b.unmapped
    }
}

/// When a new connection gets its greeting (`[receiver] greet_pause`, issue 12
/// item 5). RFC 5321 §3.1 and §4.3.1: a client waits for the 220 before it
/// sends anything. Spam bots and scanners often do not; a client outside
/// `exempt` that sends a byte before the greeting is refused with 554 5.5.0
/// and closed (Exim's "SMTP protocol synchronization error", Postfix
/// postscreen's PREGREET test).
///
/// The greeting waits `pauseNanoseconds` (default 1 s) so that such a client has
/// time to show itself. postscreen waits 6 s, but postscreen faces the internet
/// and its clients are MTAs that keep mail queued; Postern's LAN clients are
/// cameras and scripts with short timeouts, and every second of pause is a
/// second each of their messages holds a slot. Most bots talk at once, so one
/// second catches them. With no pause, input already readable at the moment
/// the greeting goes out is still refused (one non-blocking read).
///
/// Exempt clients (loopback by default, and always the local submission
/// socket) are greeted at once and never checked: the board's own programs
/// include `printf … | nc localhost 25` scripts that would be refused by the
/// race alone.
public struct GreetPolicy: Equatable, Sendable {
    /// 0 to greet at once; at most `maxPauseSeconds`.
    public let pauseNanoseconds: Int64
    public let exempt: [CIDR]

    /// The longest `greet_pause` accepted: the pause holds a slot, and RFC 5321
    /// §4.5.3.2.1 lets a client give up on the greeting after 5 minutes; one
    /// minute is far above any useful pause.
    public static let maxPauseSeconds = 60

    public init(pauseSeconds: Int, exempt: [CIDR] = ConnectionSlots.loopbackNetworks) {
        let s = Swift.min(Swift.max(0, pauseSeconds), Self.maxPauseSeconds)
        pauseNanoseconds = Int64(s) * 1_000_000_000
        self.exempt = exempt
    }

    public enum Plan: Equatable, Sendable {
        /// Greet now; when `refuseEarlyInput`, input already there refuses the client.
        case greetNow(refuseEarlyInput: Bool)
        /// Hold the greeting until this monotonic time, refusing any input before it.
        case pauseUntil(Int64)
    }

    /// The plan for a connection from `peer` accepted at monotonic `now`.
    public func plan(peer: IPAddress, local: Bool, now: Int64) -> Plan {
        if local || exempt.contains(where: { $0.contains(peer) }) { return .greetNow(refuseEarlyInput: false) }
        if pauseNanoseconds == 0 { return .greetNow(refuseEarlyInput: true) }
        let (until, overflow) = now.addingReportingOverflow(pauseNanoseconds)
        return .pauseUntil(overflow ? Int64.max : until)
    }

    /// The refusal of a client that talked before the greeting. RFC 5321 §3.1
    /// allows 554 in place of the 220; 5.5.0 is "other protocol status" (RFC
    /// 3463 §3.6), the closest code for input out of turn.
    public static func earlyTalkerReply(hostname: String) -> Reply {
        Reply(554, "5.5.0", "\(hostname) Error: SMTP protocol synchronization (input before the greeting)")
    }
}

/// Rate limit for the log of refused connections: in a storm of a thousand
/// refusals the journal gets the first one in full and then one summary per
/// `window`, never a line per connection (issue 12 item 5).
///
/// The first refusal after a quiet `window` is logged in full (`refused`
/// returns true); the ones after it within the window are only counted, and
/// `summary` hands their number over once the window has passed, starting the
/// next window at once, so a storm that lasts gives one line a second.
public struct RefusalTally: Equatable, Sendable {
    public let window: Int64
    /// Start of the current window; nil when quiet.
    public private(set) var windowStart: Int64? = nil
    /// Refusals counted but not logged in the current window.
    public private(set) var suppressed = 0

    public init(window: Int64 = 1_000_000_000) { self.window = Swift.max(1, window) }

    /// A connection was refused at `now`: true when it is to be logged in full.
    /// Call `summary` first, so a finished window's count is logged before.
    public mutating func refused(now: Int64) -> Bool {
        if let s = windowStart, !Self.passed(s, window, now) {
            if suppressed < Int.max { suppressed += 1 }
            return false
        }
        windowStart = now
        suppressed = 0
        return true
    }

    /// The refusals to log as one summary line, once the window has passed.
    public mutating func summary(now: Int64) -> Int? {
        guard let s = windowStart, Self.passed(s, window, now) else { return nil }
        if suppressed == 0 {
            windowStart = nil
            return nil
        }
        let n = suppressed
        suppressed = 0
        windowStart = now
        return n
    }

    /// When `summary` has something to hand over.
    public var summaryDue: Int64? {
        guard suppressed > 0, let s = windowStart else { return nil }
        let (t, overflow) = s.addingReportingOverflow(window)
        return overflow ? Int64.max : t
    }

    /// Whether `window` has passed since `start` at `now`: the same end as
    /// `summaryDue`, clamped at the end of the clock so a count is never left.
    static func passed(_ start: Int64, _ window: Int64, _ now: Int64) -> Bool {
        let (end, overflow) = start.addingReportingOverflow(window)
        return now >= (overflow ? Int64.max : end)
    }
}

extension IPAddress {
    /// 127.0.0.0/8 (RFC 1122 §3.2.1.3) or ::1 (RFC 4291 §2.5.3), also written as
    /// an IPv4-mapped address.
    public var isLoopback: Bool {
        let a = unmapped
        return a.isV4 ? a.bytes.first == 127 : a == IPAddress.loopbackV6
    }
}
