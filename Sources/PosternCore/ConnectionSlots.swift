/// How the fixed pool of receiver connections (`[receiver] max_connections`) is
/// shared: the last quarter of the slots (at least one, when there are two or
/// more) is kept for loopback clients, so LAN devices — or a handful of hostile
/// or stuck clients on the LAN — can never lock the board's own alerts out.
public struct ConnectionSlots: Equatable, Sendable {
    public let total: Int

    public init(total: Int) {
        self.total = total
    }

    /// Slots only loopback clients may take.
    public var reservedForLoopback: Int { total >= 2 ? max(1, total / 4) : 0 }

    /// Whether a new client may take a slot while `active` slots are in use.
    public func admits(loopback: Bool, active: Int) -> Bool {
        if active >= total { return false }
        return loopback || active < total - reservedForLoopback
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
