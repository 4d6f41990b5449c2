import Testing
@testable import PosternCore

/// The definition of CRC-32C one bit at a time (RFC 3720 §B.4: reflected
/// polynomial 0x82F63B78), on the raw register: what every faster version
/// must equal.
func crc32cBitwise(_ crc: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
    var c = crc
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    }
    return c
}

/// Bytes that are not a pattern a table bug could hide in.
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed
    return (0..<count).map { _ in
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: x >> 33)
    }
}

@Suite("CRC-32C table version (slicing-by-8, RFC 3720 §B.4)")
struct CRC32CSoftwareTests {
    @Test("RFC 3720 §B.4 examples, through the table version", arguments: [
        ([UInt8](repeating: 0, count: 32), UInt32(0x8A91_36AA)),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
        (Array("123456789".utf8), 0xE306_9283),
    ] as [([UInt8], UInt32)])
    func rfc3720Examples(bytes: [UInt8], crc: UInt32) {
        #expect(~bytes.withUnsafeBytes { CRC32C.software(0xFFFF_FFFF, $0) } == crc)
        #expect(~crc32cBitwise(0xFFFF_FFFF, bytes[...]) == crc)
    }

    @Test("Every length 0…300 from every start 0…15 equals the bit-by-bit definition")
    func everyLengthAndAlignment() {
        let data = pseudoRandomBytes(320, seed: 11)
        data.withUnsafeBytes { all in
            for start in 0..<16 {
                for length in 0...300 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let want = crc32cBitwise(0xFFFF_FFFF, data[start..<(start + length)])
                    let got = CRC32C.software(0xFFFF_FFFF, slice)
                    if got != want {
                        Issue.record("start \(start) length \(length): \(got) != \(want)")
                        return
                    }
                }
            }
        }
    }

    @Test("The table version continues from any register: split anywhere, the same value")
    func continuesFromAnyRegister() {
        let data = pseudoRandomBytes(200, seed: 5)
        let whole = crc32cBitwise(0xFFFF_FFFF, data[...])
        data.withUnsafeBytes { all in
            for split in 0...data.count {
                let first = CRC32C.software(0xFFFF_FFFF, UnsafeRawBufferPointer(rebasing: all[..<split]))
                #expect(CRC32C.software(first, UnsafeRawBufferPointer(rebasing: all[split...])) == whole)
            }
        }
    }

    @Test("An empty buffer, with or without an address, leaves the register as it was")
    func emptyBuffer() {
        #expect(CRC32C.software(0x1234_5678, UnsafeRawBufferPointer(start: nil, count: 0)) == 0x1234_5678)
        let one: [UInt8] = [1]
        one.withUnsafeBytes { #expect(CRC32C.software(0x1234_5678, UnsafeRawBufferPointer(rebasing: $0[0..<0])) == 0x1234_5678) }
    }
}
