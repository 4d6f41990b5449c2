// Byte-level helpers for protocol text. SMTP commands, keywords and domains are
// ASCII and compared case-insensitively (RFC 5321 §2.4); doing that on bytes keeps
// the Unicode tables out of the Embedded release binary.

public enum ASCII {
    public static let cr: UInt8 = 13
    public static let lf: UInt8 = 10
    public static let space: UInt8 = 32
    public static let tab: UInt8 = 9
    public static let dot: UInt8 = 46
    public static let colon: UInt8 = 58
    public static let lessThan: UInt8 = 60
    public static let greaterThan: UInt8 = 62
    public static let at: UInt8 = 64
    public static let equals: UInt8 = 61
    public static let quote: UInt8 = 34
    public static let backslash: UInt8 = 92
    public static let hash: UInt8 = 35
    public static let comma: UInt8 = 44
    public static let crlf: [UInt8] = [13, 10]

    @inline(__always)
    public static func lower(_ b: UInt8) -> UInt8 { (b >= 65 && b <= 90) ? b | 0x20 : b }

    /// The value of a hexadecimal digit of either case, or nil.
    public static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: return b - 48
        case 65...70: return b - 55
        case 97...102: return b - 87
        default: return nil
        }
    }

    @inline(__always)
    public static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }

    @inline(__always)
    public static func isAlpha(_ b: UInt8) -> Bool { (b | 0x20) >= 97 && (b | 0x20) <= 122 }

    @inline(__always)
    public static func isSpace(_ b: UInt8) -> Bool { b == space || b == tab }

    /// Case-insensitive equality of two ASCII byte sequences.
    public static func equalsIgnoringCase<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
    where A.Element == UInt8, B.Element == UInt8 {
        guard a.count == b.count else { return false }
        var i = a.makeIterator()
        var j = b.makeIterator()
        while let x = i.next(), let y = j.next() {
            if lower(x) != lower(y) { return false }
        }
        return true
    }

    /// `bytes` begins with `prefix`, ignoring ASCII case.
    public static func hasPrefixIgnoringCase<A: Collection>(_ bytes: A, _ prefix: String) -> Bool
    where A.Element == UInt8 {
        let p = Array(prefix.utf8)
        guard bytes.count >= p.count else { return false }
        var it = bytes.makeIterator()
        for c in p {
            guard let b = it.next(), lower(b) == lower(c) else { return false }
        }
        return true
    }

    public static func lowercased<A: Collection>(_ bytes: A) -> [UInt8] where A.Element == UInt8 {
        bytes.map(lower)
    }

    /// Leading and trailing spaces and tabs removed.
    public static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = bytes
        while let f = s.first, isSpace(f) { s = s.dropFirst() }
        while let l = s.last, isSpace(l) { s = s.dropLast() }
        return s
    }

    /// A non-negative decimal number, or nil when empty or not all digits.
    ///
    /// A number too large for `T` gives `T.max`: it is a number (RFC 1870 §3 lets
    /// `SIZE=` carry 20 digits, more than even a UInt64 holds), and it is above
    /// every limit it is compared with, so the caller refuses it as too large.
    /// Every step is checked: on a 32-bit board `Int` is `Int32`, and an unchecked
    /// `v * 10` of 10 digits would trap there (issue 7 item 7).
    public static func parseDecimal<A: Collection, T: FixedWidthInteger>(_ bytes: A, as type: T.Type) -> T?
    where A.Element == UInt8 {
        guard !bytes.isEmpty else { return nil }
        var v: T = 0
        var saturated = false
        for b in bytes {
            guard isDigit(b) else { return nil }
            if saturated { continue }
            let times10 = v.multipliedReportingOverflow(by: 10)
            let sum = times10.partialValue.addingReportingOverflow(T(b - 48))
            if times10.overflow || sum.overflow {
                saturated = true
            } else {
                v = sum.partialValue
            }
        }
        return saturated ? T.max : v
    }

    /// `parseDecimal(_:as:)` for the platform's `Int`.
    public static func parseDecimal<A: Collection>(_ bytes: A) -> Int? where A.Element == UInt8 {
        parseDecimal(bytes, as: Int.self)
    }

    /// Text of bytes known to be ASCII/UTF-8, with control characters made visible,
    /// for log lines and replies that echo what the peer sent.
    public static func printable<A: Collection>(_ bytes: A, limit: Int = 200) -> String
    where A.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(min(bytes.count, limit))
        for b in bytes {
            if out.count >= limit { break }
            out.append(b < 32 || b == 127 ? 63 /* ? */ : b)
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func string<A: Collection>(_ bytes: A) -> String where A.Element == UInt8 {
        String(decoding: Array(bytes), as: UTF8.self)
    }

    /// Lower-case hexadecimal of `value`, zero-padded to `width` digits.
    public static func hex(_ value: UInt64, width: Int) -> String {
        var out = [UInt8](repeating: 48, count: max(0, width))
        var v = value
        var i = out.count - 1
        while i >= 0 {
            let d = UInt8(truncatingIfNeeded: v & 15)
            out[i] = d < 10 ? 48 + d : 87 + d  // 0-9, a-f
            v >>= 4
            i -= 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    /// Appends `s` as UTF-8 in one copy: what log lines, trace headers and
    /// replies are built with, byte by byte in a buffer rather than by String
    /// concatenation (issue 11).
    public mutating func appendUTF8(_ s: String) {
        var s = s
        s.withUTF8 { append(contentsOf: $0) }
    }
}
