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

    /// Strict base64 (RFC 4648 §4) for what a client sends in an AUTH
    /// exchange (`SASLServer`): the length is a multiple of 4 and padding is
    /// present (RFC 4648 §3.2: required unless the referring spec says
    /// otherwise, and RFC 4954 does not), '=' only
    /// at the end, no blanks or line breaks (RFC 4648 §3.3: "MUST reject"
    /// characters outside the alphabet), and the pad bits zero (§3.5:
    /// "MAY reject"; it makes every accepted string the one encoding of its
    /// bytes). `decode` is lenient (the upstream's challenges) and
    /// grows its output as it goes; this one reserves the whole output first,
    /// so a secret is never left behind in a freed smaller buffer, and wipes
    /// what it wrote when it refuses. The empty string decodes to nothing.
    public static func decodeStrict<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        let count = text.count
        guard count % 4 == 0 else { return nil }
        var padding = 0
        var last: UInt8 = 0
        var beforeLast: UInt8 = 0
        for c in text {
            beforeLast = last
            last = c
        }
        if count > 0 && last == ASCII.equals {
            padding = beforeLast == ASCII.equals ? 2 : 1
        }
        var out: [UInt8] = []
        out.reserveCapacity(count / 4 * 3)
        var acc: UInt32 = 0
        var quantum = 0
        var index = 0
        let dataCount = count - padding
        for c in text {
            if index == dataCount { break }
            index += 1
            guard let v = value(c) else {
                SASL.wipe(&out)
                acc = 0
                return nil
            }
            acc = (acc << 6 | v) & 0xFFFFFF
            quantum += 1
            if quantum == 4 {
                out.append(UInt8(truncatingIfNeeded: acc >> 16))
                out.append(UInt8(truncatingIfNeeded: acc >> 8))
                out.append(UInt8(truncatingIfNeeded: acc))
                quantum = 0
                acc = 0
            }
        }
        // The final quantum: "xx==" holds 12 bits of which 8 are data, "xxx="
        // 18 bits of which 16 are (RFC 4648 §4); the rest must be zero.
        var ok = true
        if padding == 2 {
            if quantum == 2 && acc & 0xF == 0 {
                out.append(UInt8(truncatingIfNeeded: acc >> 4))
            } else {
                ok = false
            }
        } else if padding == 1 {
            if quantum == 3 && acc & 0x3 == 0 {
                out.append(UInt8(truncatingIfNeeded: acc >> 10))
                out.append(UInt8(truncatingIfNeeded: acc >> 2))
            } else {
                ok = false
            }
        }
        acc = 0
        if !ok {
            SASL.wipe(&out)
            return nil
        }
        return out
    }
}
