/// IPv4 and IPv6 addresses as bytes, with the text forms used in the configuration
/// (`127.0.0.1`, `::1`, `[::1]:25`) and in trace headers (`[IPv6:::1]`).
public struct IPAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 4 octets for IPv4, 16 for IPv6, in network order.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// The four octets of an IPv4 address; no check left to fail.
    init(v4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) { bytes = [a, b, c, d] }

    public var isV4: Bool { bytes.count == 4 }

    /// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries.
    public var unmapped: IPAddress {
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return IPAddress(v4: bytes[12], bytes[13], bytes[14], bytes[15])
        }
        return self
    }

    public static let loopbackV4 = IPAddress(bytes: [127, 0, 0, 1])!
    public static let loopbackV6 = IPAddress(bytes: [UInt8](repeating: 0, count: 15) + [1])!
    public static let unspecifiedV4 = IPAddress(bytes: [0, 0, 0, 0])!

    /// Parses dotted-quad IPv4 or RFC 4291 §2.2 IPv6 text (with `::` and an
    /// optional trailing dotted quad).
    public init?<C: Collection>(text: C) where C.Element == UInt8 {
        let t = Array(text)
        if let v4 = IPAddress.parseV4(t[...]) {
            bytes = v4
        } else if let v6 = IPAddress.parseV6(t) {
            bytes = v6
        } else {
            return nil
        }
    }

    public init?(_ text: String) { self.init(text: Array(text.utf8)) }

    static func parseV4(_ t: ArraySlice<UInt8>) -> [UInt8]? {
        let parts = t.split(separator: ASCII.dot, omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard p.count >= 1, p.count <= 3, let v = ASCII.parseDecimal(p), v <= 255 else { return nil }
            if p.count > 1 && p.first == 48 { return nil } // no leading zeros (octal ambiguity)
            out.append(UInt8(v))
        }
        return out
    }

    static func parseV6(_ t: [UInt8]) -> [UInt8]? {
        guard t.count >= 2, t.count <= 45 else { return nil }
        // At most one "::" stands for a run of zero groups.
        var gap: Int? = nil
        var k = 0
        while k + 1 < t.count {
            if t[k] == ASCII.colon && t[k + 1] == ASCII.colon {
                if gap != nil { return nil }
                gap = k
                k += 2
            } else {
                k += 1
            }
        }
        let left = gap.map { t[..<$0] } ?? t[...]
        let right = gap.map { t[($0 + 2)...] } ?? t[t.count...]
        guard let head = groups(left, mayEndInV4: gap == nil),
              let tail = groups(right, mayEndInV4: true) else { return nil }
        let missing = 16 - head.count - tail.count
        if gap == nil ? missing != 0 : missing < 2 { return nil }
        return head + [UInt8](repeating: 0, count: missing) + tail
    }

    /// Colon-separated hex groups as bytes; the last may be a dotted quad.
    static func groups(_ s: ArraySlice<UInt8>, mayEndInV4: Bool) -> [UInt8]? {
        if s.isEmpty { return [] }
        let parts = s.split(separator: ASCII.colon, omittingEmptySubsequences: false)
        var out: [UInt8] = []
        for (i, g) in parts.enumerated() {
            if mayEndInV4 && i == parts.count - 1 && g.contains(ASCII.dot) {
                guard let v4 = parseV4(g) else { return nil }
                out += v4
            } else {
                guard !g.isEmpty, g.count <= 4, let v = hexValue(g) else { return nil }
                out.append(UInt8(v >> 8))
                out.append(UInt8(v & 0xff))
            }
        }
        return out
    }

    static func hexValue(_ g: ArraySlice<UInt8>) -> UInt16? {
        var v: UInt16 = 0
        for b in g {
            let d: UInt8
            switch b {
            case 48...57: d = b - 48
            case 97...102: d = b - 87
            case 65...70: d = b - 55
            default: return nil
            }
            v = v << 4 | UInt16(d)
        }
        return v
    }

    /// Canonical text (RFC 5952: lower case, longest zero run compressed).
    public var description: String {
        if isV4 {
            return "\(bytes[0]).\(bytes[1]).\(bytes[2]).\(bytes[3])"
        }
        if unmapped.isV4 {
            // RFC 5952 §5: IPv4-mapped addresses in mixed notation.
            return "::ffff:" + unmapped.description
        }
        var words: [Int] = []
        for k in 0..<8 { words.append(Int(bytes[2 * k]) << 8 | Int(bytes[2 * k + 1])) }
        var bestStart = -1, bestLen = 0, k = 0
        while k < 8 {
            if words[k] == 0 {
                var e = k
                while e < 8 && words[e] == 0 { e += 1 }
                if e - k > bestLen && e - k >= 2 { bestStart = k; bestLen = e - k }
                k = e
            } else {
                k += 1
            }
        }
        var s = ""
        k = 0
        while k < 8 {
            if k == bestStart {
                s += "::"
                k += bestLen
                continue
            }
            if !s.isEmpty && !s.hasSuffix(":") { s += ":" }
            s += ASCII.hexTrimmed(UInt64(words[k]))
            k += 1
        }
        return s
    }

    /// The form used inside a `Received:` header (RFC 5321 §4.1.3 address literal).
    public var literal: String { isV4 ? "[\(description)]" : "[IPv6:\(description)]" }
}

extension ASCII {
    /// Hexadecimal without leading zeros.
    public static func hexTrimmed(_ value: UInt64) -> String {
        if value == 0 { return "0" }
        var digits = 1
        var v = value >> 4
        while v != 0 { digits += 1; v >>= 4 }
        return hex(value, width: digits)
    }
}

/// An address block such as `127.0.0.0/8` or `::1/128`.
public struct CIDR: Equatable, Sendable, CustomStringConvertible {
    public let network: IPAddress
    public let prefixLength: Int

    public init?(_ text: String) {
        let t = Array(text.utf8)
        let parts = t.split(separator: 47 /* / */, maxSplits: 1, omittingEmptySubsequences: false)
        guard let addr = IPAddress(text: parts[0]) else { return nil }
        let maxLen = addr.bytes.count * 8
        var len = maxLen
        if parts.count == 2 {
            guard let l = ASCII.parseDecimal(parts[1]), l <= maxLen else { return nil }
            len = l
        }
        network = addr
        prefixLength = len
    }

    public func contains(_ address: IPAddress) -> Bool {
        let a = address.unmapped
        guard a.bytes.count == network.bytes.count else { return false }
        var bits = prefixLength
        var i = 0
        while bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if a.bytes[i] & mask != network.bytes[i] & mask { return false }
            bits -= 8
            i += 1
        }
        return true
    }

    public var description: String { "\(network)/\(prefixLength)" }
}

/// An IP address and TCP port, written `127.0.0.1:25` or `[::1]:25`.
public struct Endpoint: Equatable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let port: Int

    public init(address: IPAddress, port: Int) {
        self.address = address
        self.port = port
    }

    public init?(_ text: String) {
        let t = Array(text.utf8)
        let hostPart: ArraySlice<UInt8>
        let portPart: ArraySlice<UInt8>
        if t.first == 91 /* [ */ {
            guard let close = t.firstIndex(of: 93 /* ] */), close + 1 < t.count,
                  t[close + 1] == ASCII.colon else { return nil }
            hostPart = t[1..<close]
            portPart = t[(close + 2)...]
        } else {
            guard let colon = t.lastIndex(of: ASCII.colon) else { return nil }
            hostPart = t[..<colon]
            portPart = t[(colon + 1)...]
            if hostPart.contains(ASCII.colon) { return nil } // IPv6 needs brackets
        }
        guard let addr = IPAddress(text: hostPart), let p = ASCII.parseDecimal(portPart),
              p <= 65535 else { return nil }
        address = addr
        port = p
    }

    public var description: String {
        address.isV4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
