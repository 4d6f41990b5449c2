import CLibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The definition, one bit at a time (RFC 3720 §B.4).
private func bitwise(_ crc: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
    var c = crc
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    }
    return c
}

@Suite("CRC-32C in hardware (crc32c.c) against the table version (RFC 3720 §B.4)")
struct CRCAccelerationTests {
    /// This machine is x86_64 with SSE4.2 (every x86_64 CPU since 2008); a
    /// machine without it skips the comparisons (qemu covers the ARM paths).
    var hardware: cl_crc32c_function? { cl_crc32c_hardware() }

    @Test("RFC 3720 §B.4 examples in hardware", arguments: [
        ([UInt8](repeating: 0, count: 32), UInt32(0x8A91_36AA)),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
    ] as [([UInt8], UInt32)])
    func rfc3720Examples(bytes: [UInt8], crc: UInt32) throws {
        let f = try #require(hardware)
        #expect(~bytes.withUnsafeBytes { f(0xFFFF_FFFF, $0.baseAddress, $0.count) } == crc)
    }

    @Test("Every length 0…300 from every start 0…15: hardware == table version == bit by bit")
    func everyLengthAndAlignment() throws {
        let f = try #require(hardware)
        var x: UInt64 = 3
        let data: [UInt8] = (0..<320).map { _ in
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: x >> 33)
        }
        var failures = 0
        data.withUnsafeBytes { all in
            for start in 0..<16 {
                for length in 0...300 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let want = bitwise(0xFFFF_FFFF, data[start..<(start + length)])
                    let soft = CRC32C.software(0xFFFF_FFFF, slice)
                    let hard = f(0xFFFF_FFFF, slice.baseAddress, slice.count)
                    // Continued from a register that is not the initial one.
                    let continued = f(soft, slice.baseAddress, slice.count)
                    if soft != want || hard != want || continued != CRC32C.software(soft, slice) { failures += 1 }
                }
            }
        }
        #expect(failures == 0)
    }

    /// The hardware version runs three chains at once over blocks of 3 × 4096
    /// and then 3 × 512 bytes and joins them (crc32c.c): every length around
    /// the block boundaries, from starts that are and are not word-aligned, and
    /// a few long ones, continued from a register that is not the initial one.
    @Test("Lengths around the interleaved blocks (3 × 512, 3 × 4096): hardware == table version")
    func interleavedBlocks() throws {
        let f = try #require(hardware)
        var x: UInt64 = 11
        let data: [UInt8] = (0..<70_000).map { _ in
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: x >> 33)
        }
        var lengths: [Int] = []
        for boundary in [1536, 3072, 4608, 12_288, 13_824, 16_384, 24_576, 26_112] {
            lengths += (boundary - 9)...(boundary + 9)
        }
        lengths += [16_400, 16_408, 40_000, 65_536, 69_000]
        var failures = 0
        data.withUnsafeBytes { all in
            for start in [0, 1, 3, 8, 13] {
                for length in lengths {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let register = 0xFFFF_FFFF ^ UInt32(truncatingIfNeeded: length &* 2_654_435_761)
                    if f(register, slice.baseAddress, slice.count) != CRC32C.software(register, slice) { failures += 1 }
                }
            }
        }
        #expect(failures == 0)
    }

    @Test("The entry point installs the hardware version where the CPU has it")
    func installs() {
        // Installing twice installs the same function; every test computing a
        // CRC meanwhile gets the same values either way.
        #expect(installCRCAcceleration() == (hardware != nil))
        #expect((CRC32C.accelerated != nil) == (hardware != nil))
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum([]) == 0)
    }
}
