/// Base64 (RFC 4648 §4), for SASL exchanges (RFC 4954 §4: AUTH responses and
/// the upstream's 334 challenges are base64).
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes with padding, no line breaks.
    public static func encode<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var it = bytes.makeIterator()
        while let a = it.next() {
            let b = it.next(), c = it.next()
            let n = UInt32(a) << 16 | UInt32(b ?? 0) << 8 | UInt32(c ?? 0)
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(b == nil ? 61 : alphabet[Int(n >> 6 & 63)])
            out.append(c == nil ? 61 : alphabet[Int(n & 63)])
        }
        return out
    }

    static func value(_ c: UInt8) -> UInt32? {
        switch c {
        case 65...90: return UInt32(c - 65)
        case 97...122: return UInt32(c - 71)
        case 48...57: return UInt32(c + 4)
        case 43: return 62
        case 47: return 63
        default: return nil
        }
    }

    /// Decodes padded or unpadded base64; nil for any other character, a
    /// misplaced '=' or a length that cannot be base64.
    public static func decode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        var out: [UInt8] = []
        var acc: UInt32 = 0
        var bits = 0
        var padding = 0
        var count = 0
        for c in text {
            count += 1
            if c == 61 /* = */ {
                padding += 1
                if padding > 2 { return nil }
                continue
            }
            guard padding == 0, let v = value(c) else { return nil }
            acc = (acc << 6 | v) & 0xFFFFFF
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        let data = count - padding
        // A lone sixth of a byte is not base64; padding only completes a quantum.
        if data % 4 == 1 { return nil }
        if padding > 0 && count % 4 != 0 { return nil }
        return out
    }
}
