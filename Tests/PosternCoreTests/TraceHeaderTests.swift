import Testing
@testable import PosternCore

@Suite("Trace header date (RFC 5322 §3.3)")
struct TraceDateTests {
    @Test("Known instants in UTC, including leap days and century years", arguments: [
        (Int64(0), "Thu, 1 Jan 1970 00:00:00 +0000"),
        (-1, "Wed, 31 Dec 1969 23:59:59 +0000"),
        (-86400, "Wed, 31 Dec 1969 00:00:00 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_709_210_096, "Thu, 29 Feb 2024 12:34:56 +0000"),
        (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 +0000"),
        (4_107_542_400, "Mon, 1 Mar 2100 00:00:00 +0000"),
        (13_574_563_200, "Tue, 29 Feb 2400 00:00:00 +0000"),
        (-2_203_891_200, "Thu, 1 Mar 1900 00:00:00 +0000"),
        (1_796_016_629, "Mon, 30 Nov 2026 05:30:29 +0000"),
        (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 +0000"),
    ])
    func utc(seconds: Int64, expected: String) {
        #expect(TraceHeader.date(seconds: seconds, utcOffset: 0) == expected)
    }

    @Test("Local time and the zone offset (+hhmm / -hhmm)", arguments: [
        (Int64(1_700_000_000), 19_800, "Wed, 15 Nov 2023 03:43:20 +0530"),
        (1_700_000_000, -28_800, "Tue, 14 Nov 2023 14:13:20 -0800"),
        (1_700_000_000, 50_400, "Wed, 15 Nov 2023 12:13:20 +1400"),
        (1_700_000_000, -43_200, "Tue, 14 Nov 2023 10:13:20 -1200"),
        (1_700_000_000, 20_700, "Wed, 15 Nov 2023 03:58:20 +0545"),
        (1_700_000_000, -9_000, "Tue, 14 Nov 2023 19:43:20 -0230"),
        // Offsets that move the local date across a year boundary.
        (946_683_000, 3_600, "Sat, 1 Jan 2000 00:30:00 +0100"),
        (946_686_600, -3_600, "Fri, 31 Dec 1999 23:30:00 -0100"),
    ])
    func offsets(seconds: Int64, offset: Int, expected: String) {
        #expect(TraceHeader.date(seconds: seconds, utcOffset: offset) == expected)
    }

    @Test("Every day of four years matches the RFC 5322 shape and advances by one day")
    func everyDay() {
        var previousDay = 0
        for day in 0..<(366 * 4) {
            let s = TraceHeader.date(seconds: Int64(day) * 86400 + 43_200 + 946_684_800, utcOffset: 0)
            let parts = s.split(separator: " ")
            #expect(parts.count == 6, "\(s)")
            #expect(["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(String(parts[0])), "\(s)")
            let d = Int(parts[1]) ?? 0
            #expect(d == previousDay + 1 || d == 1, "\(s)")
            previousDay = d
            #expect(parts[4] == "12:00:00")
            #expect(parts[5] == "+0000")
        }
    }

    @Test("Weekdays cycle in order")
    func weekdays() {
        let names = (0..<7).map { TraceHeader.date(seconds: Int64($0) * 86400, utcOffset: 0).prefix(3) }
        #expect(names == ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"])
    }
}

@Suite("Received: trace header (RFC 5321 §4.4)")
struct ReceivedHeaderTests {
    static func info(recipient: Mailbox?, address: IPAddress = .loopbackV4, proto: String = "ESMTP") -> TraceHeader.Info {
        TraceHeader.Info(heloName: "client.test", clientAddress: address, hostname: "mx.test", protocolName: proto,
                         queueID: "00000000000000a1", recipient: recipient, date: "Thu, 1 Jan 1970 00:00:00 +0000")
    }

    @Test("from (helo [address]) by host with protocol id …; date, folded with CRLF + tab")
    func shape() {
        let h = String(decoding: TraceHeader.received(Self.info(recipient: nil)), as: UTF8.self)
        #expect(h == "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Postern) with ESMTP id 00000000000000a1; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test("A single recipient is named in a for clause")
    func forClause() {
        let h = String(decoding: TraceHeader.received(Self.info(recipient: mb("a@example.com"))), as: UTF8.self)
        #expect(h == "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Postern) with ESMTP id 00000000000000a1\r\n\tfor <a@example.com>; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test("An IPv6 client is written as an IPv6 address literal (RFC 5321 §4.1.3)")
    func ipv6() {
        let h = String(decoding: TraceHeader.received(Self.info(recipient: nil, address: IPAddress("2001:db8::7")!)), as: UTF8.self)
        #expect(h.hasPrefix("Received: from client.test ([IPv6:2001:db8::7])\r\n"))
    }

    @Test("HELO sessions say SMTP (RFC 3848)")
    func smtp() {
        let h = String(decoding: TraceHeader.received(Self.info(recipient: nil, proto: "SMTP")), as: UTF8.self)
        #expect(h.contains(" with SMTP id "))
    }

    @Test("Lines end in CRLF, continuation lines start with white space, none longer than 998 (RFC 5322 §2.1.1, §2.2.3)")
    func folding() {
        let bytes = TraceHeader.received(Self.info(recipient: mb("a@example.com")))
        #expect(bytes.suffix(2) == [13, 10])
        // Split at CRLF on bytes; any CR or LF left inside a line is a bare one.
        var lines: [[UInt8]] = [[]]
        var i = 0
        while i < bytes.count {
            if bytes[i] == 13 && i + 1 < bytes.count && bytes[i + 1] == 10 {
                lines.append([])
                i += 2
            } else {
                lines[lines.count - 1].append(bytes[i])
                i += 1
            }
        }
        #expect(lines.last == [], "the header ends in CRLF")
        lines.removeLast()
        #expect(lines.count == 3)
        for (n, line) in lines.enumerated() {
            #expect(line.count <= 998)
            #expect(!line.contains(13) && !line.contains(10))
            if n > 0 { #expect(line.first == 9 || line.first == 32) }
        }
        let first = String(decoding: lines[0], as: UTF8.self)
        #expect(first.hasPrefix("Received: "))
    }
}
