import Testing
@testable import PosternCore

@Suite("Decimal numbers from the wire and the configuration, at 32-bit widths (issue 7 item 7)")
struct ParseDecimalTests {
    @Test("Digits give their value", arguments: [
        ("0", 0), ("7", 7), ("0007", 7), ("65535", 65535), ("2147483647", 2_147_483_647),
        ("000000000000000000000000000042", 42),
    ])
    func value(text: String, expected: Int) {
        #expect(ASCII.parseDecimal(Array(text.utf8)) == expected)
    }

    @Test("Anything but digits is not a number", arguments: ["", " 1", "1 ", "-1", "+1", "1.5", "1e3", "١", "0x10"])
    func notANumber(text: String) {
        #expect(ASCII.parseDecimal(Array(text.utf8)) == nil)
        #expect(ASCII.parseDecimal(Array(text.utf8), as: Int32.self) == nil)
    }

    @Test("On a 32-bit board (Int is Int32) the largest value is exact and the next one saturates", arguments: [
        ("2147483646", Int32(2_147_483_646)), ("2147483647", Int32.max), ("2147483648", Int32.max),
        ("99999999999", Int32.max), ("999999999999999999", Int32.max), ("9999999999999999999", Int32.max),
        ("99999999999999999999", Int32.max),
    ])
    func int32(text: String, expected: Int32) {
        #expect(ASCII.parseDecimal(Array(text.utf8), as: Int32.self) == expected)
    }

    @Test("18 and 19 digits, and the 20 that RFC 1870 §3 allows for SIZE, never overflow Int64", arguments: [
        ("999999999999999999", Int64(999_999_999_999_999_999)),
        ("9223372036854775807", Int64.max),
        ("9223372036854775808", Int64.max),
        ("9999999999999999999", Int64.max),
        ("99999999999999999999", Int64.max),
    ])
    func int64(text: String, expected: Int64) {
        #expect(ASCII.parseDecimal(Array(text.utf8), as: Int64.self) == expected)
    }

    @Test("A saturated value is above every limit it is compared with")
    func saturatedIsLarge() throws {
        let v = try #require(ASCII.parseDecimal(Array("99999999999".utf8), as: Int32.self))
        #expect(v > Int32(1 << 30))
        let w = try #require(ASCII.parseDecimal(Array(String(repeating: "9", count: 1000).utf8)))
        #expect(w == Int.max)
    }

    @Test("Unsigned widths saturate at their own maximum")
    func unsigned() {
        #expect(ASCII.parseDecimal(Array("255".utf8), as: UInt8.self) == 255)
        #expect(ASCII.parseDecimal(Array("256".utf8), as: UInt8.self) == 255)
        #expect(ASCII.parseDecimal(Array("18446744073709551616".utf8), as: UInt64.self) == UInt64.max)
    }
}
