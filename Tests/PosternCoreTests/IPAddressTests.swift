import Testing
@testable import PosternCore

@Suite("IPv4 address text (RFC 791 dotted quad)")
struct IPv4Tests {
    @Test("Dotted quads parse to four octets", arguments: [
        ("0.0.0.0", [0, 0, 0, 0]),
        ("127.0.0.1", [127, 0, 0, 1]),
        ("192.0.2.255", [192, 0, 2, 255]),
        ("255.255.255.255", [255, 255, 255, 255]),
        ("10.0.10.100", [10, 0, 10, 100]),
    ] as [(String, [UInt8])])
    func parse(text: String, bytes: [UInt8]) {
        let a = IPAddress(text)
        #expect(a?.bytes == bytes)
        #expect(a?.isV4 == true)
        #expect(a?.description == text)
    }

    @Test("Not IPv4 addresses", arguments: [
        "", "1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "01.2.3.4", "1.2.3.04", "1.2..4", "1.2.3.",
        ".1.2.3", "1.2.3.-4", "1.2.3.4 ", " 1.2.3.4", "a.b.c.d", "1.2.3.4/8", "1234.1.1.1",
    ])
    func invalid(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test("Address literal for Received headers (RFC 5321 §4.1.3)")
    func literal() {
        #expect(IPAddress("192.0.2.1")?.literal == "[192.0.2.1]")
    }

    @Test("init(bytes:) takes only 4 or 16 octets", arguments: [0, 1, 3, 5, 8, 15, 17])
    func badByteCounts(count: Int) {
        #expect(IPAddress(bytes: [UInt8](repeating: 1, count: count)) == nil)
    }
}

@Suite("IPv6 address text (RFC 4291 §2.2, canonical form RFC 5952)")
struct IPv6Tests {
    static func v6(_ words: [UInt16]) -> [UInt8] { words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] } }

    @Test("Text forms parse to sixteen octets", arguments: [
        ("::", [0, 0, 0, 0, 0, 0, 0, 0]),
        ("::1", [0, 0, 0, 0, 0, 0, 0, 1]),
        ("1::", [1, 0, 0, 0, 0, 0, 0, 0]),
        ("2001:db8::1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
        ("2001:DB8:0:0:0:0:0:1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", [0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329]),
        ("1:2:3:4:5:6:7:8", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("1:2:3:4:5:6:7::", [1, 2, 3, 4, 5, 6, 7, 0]),
        ("::2:3:4:5:6:7:8", [0, 2, 3, 4, 5, 6, 7, 8]),
        ("fe80::a:b", [0xfe80, 0, 0, 0, 0, 0, 0xa, 0xb]),
        ("::ffff:192.0.2.1", [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]),
        ("1:2:3:4:5:6:1.2.3.4", [1, 2, 3, 4, 5, 6, 0x0102, 0x0304]),
        ("::1.2.3.4", [0, 0, 0, 0, 0, 0, 0x0102, 0x0304]),
        ("0000:0000:0000:0000:0000:ffff:255.255.255.255", [0, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff]),
    ] as [(String, [UInt16])])
    func parse(text: String, words: [UInt16]) {
        let a = IPAddress(text)
        #expect(a?.bytes == Self.v6(words))
        #expect(a?.isV4 == false)
    }

    @Test("Not IPv6 addresses", arguments: [
        ":", ":::", "1::2::3", "::1::", "12345::", "g::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", ":1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:", "1:2:3:4:5:6:7:8::", "::1.2.3.4.5", "1.2.3.4::", "::ffff:1.2.3", "::ffff:1.2.3.4:5",
        " ::1", "::1 ", "[::1]", "::1%eth0", "1:2:3:4:5:6:7:1.2.3.4",
        "0000:0000:0000:0000:0000:0000:0000:0000:0000",
    ])
    func invalid(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test("Canonical text: lower case, no leading zeros, longest zero run as :: (RFC 5952 §4)", arguments: [
        ("::", "::"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
        // §4.2.2: a single zero field is not shortened.
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        // §4.2.3: the longest run is shortened; on a tie, the first.
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"),
        ("FE80::ABCD", "fe80::abcd"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
    ])
    func canonical(text: String, expected: String) {
        #expect(IPAddress(text)?.description == expected)
    }

    @Test("Canonical text parses back to the same address")
    func canonicalRoundTrip() {
        var state: UInt64 = 0x5952
        for _ in 0..<500 {
            var words: [UInt16] = []
            for _ in 0..<8 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                // Many zero words, so that runs of zeros are common.
                let r = state >> 33
                words.append(r % 3 == 0 ? UInt16(truncatingIfNeeded: r >> 4) : 0)
            }
            let a = IPAddress(bytes: Self.v6(words))!
            #expect(IPAddress(a.description) == a, "\(a)")
        }
    }

    @Test("Address literal for Received headers (RFC 5321 §4.1.3)")
    func literal() {
        #expect(IPAddress("2001:db8::1")?.literal == "[IPv6:2001:db8::1]")
        #expect(IPAddress.loopbackV6.literal == "[IPv6:::1]")
    }

    @Test("An IPv4-mapped address unmaps to IPv4; others stay as they are")
    func unmapped() {
        #expect(IPAddress("::ffff:192.0.2.1")?.unmapped == IPAddress("192.0.2.1"))
        #expect(IPAddress("::ffff:192.0.2.1")?.unmapped.description == "192.0.2.1")
        #expect(IPAddress("::1")?.unmapped == IPAddress("::1"))
        #expect(IPAddress("::fffe:192.0.2.1")?.unmapped.isV4 == false)
        #expect(IPAddress("192.0.2.1")?.unmapped == IPAddress("192.0.2.1"))
    }

    @Test("The loopback constants")
    func loopback() {
        #expect(IPAddress.loopbackV4 == IPAddress("127.0.0.1"))
        #expect(IPAddress.loopbackV6 == IPAddress("::1"))
    }
}

@Suite("Address blocks (CIDR, RFC 4632 §3.1)")
struct CIDRTests {
    @Test("Membership", arguments: [
        ("127.0.0.0/8", "127.0.0.1", true),
        ("127.0.0.0/8", "127.255.255.255", true),
        ("127.0.0.0/8", "128.0.0.1", false),
        ("192.168.1.0/24", "192.168.1.255", true),
        ("192.168.1.0/24", "192.168.2.0", false),
        ("192.168.1.128/25", "192.168.1.200", true),
        ("192.168.1.128/25", "192.168.1.100", false),
        ("10.0.0.0/12", "10.15.255.255", true),
        ("10.0.0.0/12", "10.16.0.0", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("192.0.2.7", "192.0.2.7", true),
        ("192.0.2.7", "192.0.2.8", false),
        ("192.0.2.7/32", "192.0.2.7", true),
        ("::1/128", "::1", true),
        ("::1/128", "::2", false),
        ("fe80::/10", "fe80::1", true),
        ("fe80::/10", "febf:ffff::1", true),
        ("fe80::/10", "fec0::1", false),
        ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::1", false),
        ("::/0", "2001:db8::1", true),
        // An IPv4 client seen on a dual-stack socket is matched as IPv4.
        ("127.0.0.0/8", "::ffff:127.0.0.1", true),
        ("192.168.0.0/16", "::ffff:192.168.4.5", true),
        ("192.168.0.0/16", "::ffff:10.0.0.1", false),
        // Families do not mix otherwise.
        ("0.0.0.0/0", "::1", false),
        ("::/0", "127.0.0.1", false),
    ])
    func contains(block: String, address: String, expected: Bool) throws {
        let c = try #require(CIDR(block))
        let a = try #require(IPAddress(address))
        #expect(c.contains(a) == expected)
    }

    @Test("A bare address is a block of one", arguments: [("10.1.2.3", 32), ("::1", 128)])
    func bareAddress(text: String, length: Int) {
        #expect(CIDR(text)?.prefixLength == length)
    }

    @Test("Not blocks", arguments: ["127.0.0.0/33", "::1/129", "127.0.0.1/", "/8", "127.0.0.0/8/8", "127.0.0.0/-1",
                                    "localhost", "127.0.0.0/x", ""])
    func invalid(text: String) {
        #expect(CIDR(text) == nil)
    }

    @Test("description", arguments: [("127.0.0.0/8", "127.0.0.0/8"), ("::1/128", "::1/128"), ("10.0.0.1", "10.0.0.1/32"),
                                     ("2001:DB8::/32", "2001:db8::/32")])
    func description(text: String, expected: String) {
        #expect(CIDR(text)?.description == expected)
    }
}

@Suite("Listen endpoints (address:port, [IPv6]:port)")
struct EndpointTests {
    @Test("Valid endpoints", arguments: [
        ("127.0.0.1:25", "127.0.0.1", 25),
        ("0.0.0.0:2525", "0.0.0.0", 2525),
        ("[::1]:25", "::1", 25),
        ("[2001:db8::1]:587", "2001:db8::1", 587),
        ("192.0.2.1:65535", "192.0.2.1", 65535),
    ])
    func valid(text: String, address: String, port: Int) {
        let e = Endpoint(text)
        #expect(e?.address == IPAddress(address))
        #expect(e?.port == port)
        #expect(e?.description == text)
    }

    @Test("Invalid endpoints", arguments: [
        "::1:25", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "[::1]25", "[::1]", "[::1]:", "localhost:25",
        "127.0.0.1:2x5", "[::1:25", ":25", "", "127.0.0.1:-1", "[]:25",
    ])
    func invalid(text: String) {
        #expect(Endpoint(text) == nil)
    }

    @Test("description brackets IPv6 and uses canonical text")
    func description() {
        #expect(Endpoint(address: IPAddress("2001:DB8:0:0:0:0:0:1")!, port: 25).description == "[2001:db8::1]:25")
        #expect(Endpoint(address: .loopbackV4, port: 587).description == "127.0.0.1:587")
    }
}
