import Testing
@testable import PosternCore

func parseRecord(_ bytes: [UInt8]) -> SpoolCodec.Parse {
    bytes.withUnsafeBytes { SpoolCodec.parseRecord($0) }
}

/// The payload bytes of the record at the start of `bytes`.
func payload(of bytes: [UInt8], _ frame: SpoolCodec.RecordFrame) -> [UInt8] {
    Array(bytes[frame.payloadOffset..<(frame.payloadOffset + frame.payloadLength)])
}

@Suite("CRC-32C (Castagnoli, RFC 3720 §B.4)")
struct CRC32CTests {
    @Test("Known answers", arguments: [
        (Array("123456789".utf8), UInt32(0xE306_9283)),
        ([], 0),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C),
    ] as [([UInt8], UInt32)])
    func knownAnswers(bytes: [UInt8], crc: UInt32) {
        #expect(CRC32C.checksum(bytes) == crc)
    }

    @Test("Updating in pieces gives the same value as at once")
    func incremental() {
        let data = Array("The quick brown fox jumps over the lazy dog".utf8)
        for split in 0...data.count {
            var c = CRC32C()
            data[..<split].withUnsafeBytes { c.update($0) }
            data[split...].withUnsafeBytes { c.update($0) }
            #expect(c.value == CRC32C.checksum(data))
        }
    }
}

@Suite("Spool segment files (SpoolCodec format, version 2; version 1 read)")
struct SpoolSegmentTests {
    @Test("The 16-byte segment header: magic, version, header length, sequence (little-endian)")
    func header() {
        let h = SpoolCodec.segmentHeader(sequence: 0x0102_0304_0506_0708)
        #expect(h == [0x50, 0x53, 0x54, 0x4E, 2, 0, 16, 0, 8, 7, 6, 5, 4, 3, 2, 1])
        #expect(h.count == SpoolCodec.segmentHeaderLength)
    }

    @Test("A segment header parses back to its sequence", arguments: [UInt64(0), 1, 0xabc, UInt64.max])
    func headerRoundTrip(sequence: UInt64) {
        let h = SpoolCodec.segmentHeader(sequence: sequence)
        #expect(h.withUnsafeBytes { SpoolCodec.parseSegmentHeader($0) } == sequence)
    }

    @Test("Bad segment headers are refused")
    func badHeaders() {
        let good = SpoolCodec.segmentHeader(sequence: 7)
        var badMagic = good; badMagic[0] = 0x51
        var badVersion = good; badVersion[4] = 3
        var versionZero = good; versionZero[4] = 0
        let short = Array(good.prefix(15))
        for h in [badMagic, badVersion, versionZero, short, []] {
            #expect(h.withUnsafeBytes { SpoolCodec.parseSegmentHeader($0) } == nil)
        }
    }

    @Test("A version-1 segment header (written before the ESMTP parameters) is still read")
    func versionOneHeader() {
        var h = SpoolCodec.segmentHeader(sequence: 7)
        h[4] = 1
        #expect(h.withUnsafeBytes { SpoolCodec.parseSegmentHeader($0) } == 7)
    }

    @Test("Segment names are 16 lower-case hex digits and .seg", arguments: [
        (UInt64(1), "0000000000000001.seg"),
        (0xabc, "0000000000000abc.seg"),
        (0, "0000000000000000.seg"),
        (UInt64.max, "ffffffffffffffff.seg"),
    ])
    func names(sequence: UInt64, name: String) {
        #expect(SpoolCodec.segmentName(sequence) == name)
        #expect(SpoolCodec.segmentSequence(fileName: name) == sequence)
    }

    @Test("Other file names are not segments", arguments: [
        "lock", "1.seg", "000000000000001.seg", "00000000000000001.seg", "000000000000000g.seg",
        "0000000000000001.seg.tmp", "0000000000000001.tmp", "0000000000000001.SEG", ".seg", "",
        "0000000000000001 seg", "-000000000000001.seg",
        // The format names segments in lower-case hex; "…A.seg" is not segment 10.
        "000000000000000A.seg", "0000000000000ABC.seg",
    ])
    func notSegments(name: String) {
        #expect(SpoolCodec.segmentSequence(fileName: name) == nil)
    }
}

@Suite("Spool records (SpoolCodec format, version 2)")
struct SpoolRecordTests {
    static let envelope = SpoolCodec.EnvelopeRecord(
        arrival: 1_796_016_629, eightBit: true, from: Array("sender@example.org".utf8),
        recipients: [Array("a@example.com".utf8), Array("\"b c\"@example.com".utf8), Array("postmaster".utf8)])

    static let payloads: [(SpoolCodec.Kind, [UInt8])] = [
        (.envelope, SpoolCodec.envelopePayload(envelope)),
        (.text, Array("Received: from x\r\n\r\nHello\r\n".utf8)),
        (.text, []),
        (.commit, SpoolCodec.commitPayload(size: 123_456)),
        (.abort, []),
        (.recipient, SpoolCodec.recipientPayload(index: 2, outcome: .failed)),
    ]

    @Test("Every kind of record parses back: kind, id, payload, length")
    func roundTrip() {
        for (kind, p) in Self.payloads {
            for id in [UInt64(0), 1, 0xdead_beef_cafe, UInt64.max] {
                let r = SpoolCodec.record(kind: kind, id: id, payload: p)
                #expect(r.count == SpoolCodec.recordOverhead + p.count)
                let expected = SpoolCodec.RecordFrame(kind: kind, id: id, payloadOffset: 16, payloadLength: p.count,
                                                      length: r.count)
                #expect(parseRecord(r) == .record(expected))
                #expect(payload(of: r, expected) == p)
                // Trailing bytes (the next record) do not disturb the parse.
                #expect(parseRecord(r + [1, 2, 3]) == .record(expected))
            }
        }
    }

    @Test("The record layout: length, kind, three zeros, id, payload, CRC-32C, all little-endian")
    func layout() {
        let p = SpoolCodec.commitPayload(size: 5)
        let r = SpoolCodec.record(kind: .commit, id: 0x0102_0304_0506_0708, payload: p)
        let header: [UInt8] = [8, 0, 0, 0, 3, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        #expect(Array(r[0..<16]) == header)
        #expect(Array(r[16..<24]) == [5, 0, 0, 0, 0, 0, 0, 0])
        let crc = CRC32C.checksum(header + p)
        #expect(Array(r[24..<28]) == [UInt8(crc & 0xff), UInt8(crc >> 8 & 0xff), UInt8(crc >> 16 & 0xff), UInt8(crc >> 24)])
        #expect(SpoolCodec.recordHeader(kind: .commit, id: 0x0102_0304_0506_0708, payloadLength: 8) == header)
    }

    @Test("Kind and outcome numbers are the documented ones")
    func numbers() {
        #expect(SpoolCodec.Kind.envelope.rawValue == 1)
        #expect(SpoolCodec.Kind.text.rawValue == 2)
        #expect(SpoolCodec.Kind.commit.rawValue == 3)
        #expect(SpoolCodec.Kind.abort.rawValue == 4)
        #expect(SpoolCodec.Kind.recipient.rawValue == 5)
        #expect(SpoolCodec.Outcome.delivered.rawValue == 1)
        #expect(SpoolCodec.Outcome.failed.rawValue == 2)
        #expect(SpoolCodec.version == 2)
        #expect(SpoolCodec.oldestReadableVersion == 1)
    }

    @Test("Records written one after another parse one after another")
    func sequence() {
        var stream: [UInt8] = []
        for (i, (kind, p)) in Self.payloads.enumerated() { stream += SpoolCodec.record(kind: kind, id: UInt64(i), payload: p) }
        var offset = 0
        var seen: [SpoolCodec.Kind] = []
        while offset < stream.count {
            guard case .record(let f) = parseRecord(Array(stream[offset...])) else {
                Issue.record("no record at \(offset)")
                return
            }
            #expect(f.id == UInt64(seen.count))
            seen.append(f.kind)
            offset += f.length
        }
        #expect(seen == Self.payloads.map { $0.0 })
        #expect(offset == stream.count)
    }

    @Test("A torn record (every truncation length) needs more bytes")
    func torn() {
        for (kind, p) in Self.payloads {
            let r = SpoolCodec.record(kind: kind, id: 42, payload: p)
            for n in 0..<r.count {
                let result = parseRecord(Array(r.prefix(n)))
                guard case .needMore(let total) = result else {
                    Issue.record("\(kind) cut to \(n) of \(r.count): \(result)")
                    continue
                }
                #expect(total > n)
                #expect(total == (n < 16 ? 16 : r.count))
            }
        }
    }

    @Test("Any corrupted byte after the length field is caught (CRC mismatch or bad kind)")
    func corruptBytes() {
        let r = SpoolCodec.record(kind: .envelope, id: 9, payload: SpoolCodec.envelopePayload(Self.envelope))
        for i in 0..<r.count {
            for bit in 0..<8 {
                var bad = r
                bad[i] ^= UInt8(1 << bit)
                let result = parseRecord(bad)
                if case .record = result { Issue.record("flipped bit \(bit) of byte \(i) went unnoticed") }
                if i >= 4 {
                    guard case .corrupt = result else {
                        Issue.record("byte \(i) bit \(bit): \(result)")
                        continue
                    }
                }
            }
        }
    }

    @Test("A CRC mismatch is reported as such")
    func crcMismatch() {
        var r = SpoolCodec.record(kind: .text, id: 1, payload: Array("hello".utf8))
        r[18] ^= 0x20
        #expect(parseRecord(r) == .corrupt("CRC mismatch"))
        var t = SpoolCodec.record(kind: .text, id: 1, payload: Array("hello".utf8))
        t[t.count - 1] ^= 1
        #expect(parseRecord(t) == .corrupt("CRC mismatch"))
    }

    @Test("Unknown kinds, non-zero padding and oversized lengths are corrupt")
    func badHeaders() {
        for kind: UInt8 in [0, 6, 255] {
            var h = SpoolCodec.recordHeader(kind: .text, id: 1, payloadLength: 0)
            h[4] = kind
            let tail = SpoolCodec.trailer(header: h, payload: UnsafeRawBufferPointer(start: nil, count: 0))
            guard case .corrupt = parseRecord(h + tail) else {
                Issue.record("kind \(kind) accepted")
                continue
            }
        }
        var padded = SpoolCodec.recordHeader(kind: .abort, id: 1, payloadLength: 0)
        padded[6] = 1
        let tail = SpoolCodec.trailer(header: padded, payload: UnsafeRawBufferPointer(start: nil, count: 0))
        guard case .corrupt = parseRecord(padded + tail) else {
            Issue.record("non-zero padding accepted")
            return
        }
        let huge = SpoolCodec.recordHeader(kind: .text, id: 1, payloadLength: SpoolCodec.maxPayload + 1)
        guard case .corrupt = parseRecord(huge) else {
            Issue.record("payload over maxPayload accepted")
            return
        }
        let biggest = SpoolCodec.recordHeader(kind: .envelope, id: 1, payloadLength: SpoolCodec.maxPayload)
        #expect(parseRecord(biggest) == .needMore(total: SpoolCodec.maxPayload + 20))
        // Text chunks are smaller: a text record fits a 64 KiB read buffer.
        let longestText = SpoolCodec.recordHeader(kind: .text, id: 1, payloadLength: SpoolCodec.maxTextPayload)
        #expect(parseRecord(longestText) == .needMore(total: 64 * 1024))
        let tooLongText = SpoolCodec.recordHeader(kind: .text, id: 1, payloadLength: SpoolCodec.maxTextPayload + 1)
        #expect(parseRecord(tooLongText) == .corrupt("payload length \(SpoolCodec.maxTextPayload + 1)"))
    }

    @Test("Envelope payload round trip", arguments: [
        SpoolRecordTests.envelope,
        SpoolCodec.EnvelopeRecord(arrival: 0, eightBit: false, from: [], recipients: []),
        SpoolCodec.EnvelopeRecord(arrival: -86400, eightBit: false, from: [], recipients: [Array("x@y".utf8)]),
        // A failure notice (flags bit 3, issue 8 item 6) keeps its mark.
        SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: false, arrivalSynchronised: true, notice: true, from: [],
                                  recipients: [Array("a@b.example".utf8)]),
        SpoolCodec.EnvelopeRecord(arrival: Int64.max, eightBit: true, from: [UInt8](repeating: 0x61, count: 254),
                                  recipients: Array(repeating: [UInt8](repeating: 0x62, count: 254), count: 100)),
    ])
    func envelopeRoundTrip(e: SpoolCodec.EnvelopeRecord) {
        let p = SpoolCodec.envelopePayload(e)
        #expect(p.withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == e)
    }

    @Test("Envelope payload layout: i64 arrival, u8 flags, u16-prefixed from, u16 count, u16-prefixed recipients")
    func envelopeLayout() {
        let e = SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: true, from: [0x61], recipients: [[0x62, 0x63]])
        #expect(SpoolCodec.envelopePayload(e) == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0x61, 1, 0, 2, 0, 0x62, 0x63])
    }

    @Test("Truncated or padded envelopes are refused")
    func envelopeBad() {
        let p = SpoolCodec.envelopePayload(Self.envelope)
        for n in 0..<p.count {
            #expect(Array(p.prefix(n)).withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == nil, "cut to \(n)")
        }
        #expect((p + [0]).withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == nil)
    }

    @Test("Commit and recipient payloads")
    func smallPayloads() {
        #expect(SpoolCodec.commitPayload(size: 0x0102).withUnsafeBytes { SpoolCodec.parseCommit($0) } == 0x0102)
        #expect([UInt8](repeating: 0, count: 7).withUnsafeBytes { SpoolCodec.parseCommit($0) } == nil)
        #expect([UInt8](repeating: 0, count: 9).withUnsafeBytes { SpoolCodec.parseCommit($0) } == nil)
        for outcome in [SpoolCodec.Outcome.delivered, .failed] {
            let p = SpoolCodec.recipientPayload(index: 513, outcome: outcome)
            #expect(p == [1, 2, outcome.rawValue])
            let parsed = p.withUnsafeBytes { SpoolCodec.parseRecipient($0) }
            #expect(parsed?.index == 513)
            #expect(parsed?.outcome == outcome)
        }
        #expect(([0, 0, 3] as [UInt8]).withUnsafeBytes { SpoolCodec.parseRecipient($0) } == nil)
        #expect(([0, 0, 0] as [UInt8]).withUnsafeBytes { SpoolCodec.parseRecipient($0) } == nil)
        #expect(([0, 1] as [UInt8]).withUnsafeBytes { SpoolCodec.parseRecipient($0) } == nil)
    }
}

/// A record header with an arbitrary 32-bit length field, as a damaged or crafted
/// file can hold.
func rawHeader(length: UInt32, kind: UInt8 = SpoolCodec.Kind.envelope.rawValue, id: UInt64 = 1) -> [UInt8] {
    var h: [UInt8] = []
    for i in 0..<4 { h.append(UInt8(truncatingIfNeeded: length >> (8 * UInt32(i)))) }
    h += [kind, 0, 0, 0]
    for i in 0..<8 { h.append(UInt8(truncatingIfNeeded: id >> (8 * UInt64(i)))) }
    return h
}

@Suite("Spool decoding never traps: 32-bit widths and crafted values (issue 7 item 7)")
struct SpoolCodecWidthTests {
    @Test("Length fields at and past the Int32 boundary are corrupt, never converted first", arguments: [
        UInt32(SpoolCodec.maxPayload) + 1, UInt32(Int32.max), UInt32(Int32.max) + 1, UInt32.max - 19, UInt32.max,
    ])
    func hugeLengths(length: UInt32) {
        for kind in SpoolCodec.Kind.allKinds {
            let h = rawHeader(length: length, kind: kind.rawValue)
            #expect(parseRecord(h) == .corrupt("payload length \(length)"))
            #expect(parseRecord(h + [UInt8](repeating: 0, count: 64)) == .corrupt("payload length \(length)"))
        }
    }

    @Test("getLE reads only inside the buffer")
    func getLEBounds() {
        let b: [UInt8] = [1, 2, 3, 4]
        b.withUnsafeBytes { p in
            #expect(SpoolCodec.getLE(p, 0, 4) == 0x0403_0201)
            #expect(SpoolCodec.getLE(p, 2, 2) == 0x0403)
            #expect(SpoolCodec.getLE(p, 4, 0) == 0)
            #expect(SpoolCodec.getLE(p, 1, 4) == nil)
            #expect(SpoolCodec.getLE(p, 4, 1) == nil)
            #expect(SpoolCodec.getLE(p, -1, 2) == nil)
            #expect(SpoolCodec.getLE(p, Int.max, 2) == nil)
            #expect(SpoolCodec.getLE(p, 0, 9) == nil)
            #expect(SpoolCodec.getLE(p, 0, -1) == nil)
        }
        [UInt8]().withUnsafeBytes { #expect(SpoolCodec.getLE($0, 0, 1) == nil) }
        // Every width, at an odd offset, against putLE.
        for width in 0...8 {
            var out: [UInt8] = [0xee]
            SpoolCodec.putLE(&out, 0x0807_0605_0403_0201, width)
            let expected = width == 8 ? UInt64(0x0807_0605_0403_0201) : UInt64(0x0807_0605_0403_0201) & ((1 << (8 * UInt64(width))) - 1)
            out.withUnsafeBytes { p in
                #expect(p.count == 1 + width)
                #expect(SpoolCodec.getLE(p, 1, width) == expected)
                #expect(SpoolCodec.getLE(p, 2, width) == nil || width == 0)
            }
        }
    }

    @Test("Commit sizes that do not fit an Int are refused", arguments: [
        UInt64(Int64.max) + 1, UInt64.max,
    ])
    func hugeCommits(size: UInt64) {
        var p: [UInt8] = []
        for i in 0..<8 { p.append(UInt8(truncatingIfNeeded: size >> (8 * UInt64(i)))) }
        #expect(p.withUnsafeBytes { SpoolCodec.parseCommit($0) } == nil)
    }

    @Test("Commit sizes past 2^31 parse where Int is 64 bits (on a 32-bit board they are refused)")
    func commitPast32Bits() {
        for size in [UInt64(Int32.max), UInt64(Int32.max) + 1, UInt64(UInt32.max) + 1] {
            var p: [UInt8] = []
            for i in 0..<8 { p.append(UInt8(truncatingIfNeeded: size >> (8 * UInt64(i)))) }
            #expect(p.withUnsafeBytes { SpoolCodec.parseCommit($0) } == Int(exactly: size))
        }
    }

    @Test("An envelope claiming 65,535 recipients in a short payload is refused")
    func envelopeCountLies() {
        var p: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]   // arrival, flags, empty reverse-path
        p += [0xff, 0xff, 3, 0, 0x61, 0x62, 0x63]             // count 65535, one recipient "abc"
        #expect(p.withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == nil)
        // Length fields pointing past the end.
        let fromPastEnd: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x61]
        #expect(fromPastEnd.withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == nil)
    }

    @Test("An envelope of 65,535 recipients round-trips")
    func envelopeMaxCount() {
        let e = SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: false, from: [],
                                          recipients: [[UInt8]](repeating: [0x78], count: 65_535))
        #expect(SpoolCodec.canEncode(e))
        let p = SpoolCodec.envelopePayload(e)
        #expect(p.withUnsafeBytes { SpoolCodec.parseEnvelope($0) }?.recipients.count == 65_535)
    }

    @Test("Envelopes whose fields do not fit their u16 are not encodable (never written wrapped)")
    func canEncode() {
        let long = [UInt8](repeating: 0x61, count: 65_536)
        #expect(!SpoolCodec.canEncode(.init(arrival: 0, eightBit: false, from: long, recipients: [])))
        #expect(!SpoolCodec.canEncode(.init(arrival: 0, eightBit: false, from: [], recipients: [long])))
        #expect(!SpoolCodec.canEncode(.init(arrival: 0, eightBit: false, from: [],
                                            recipients: [[UInt8]](repeating: [], count: 65_536))))
        // Under the u16 limits but over maxPayload in total.
        let big = [UInt8](repeating: 0x61, count: 65_000)
        #expect(!SpoolCodec.canEncode(.init(arrival: 0, eightBit: false, from: [],
                                            recipients: [[UInt8]](repeating: big, count: 70))))
        #expect(SpoolCodec.canEncode(.init(arrival: 0, eightBit: false, from: [0x61], recipients: [big])))
    }

    @Test("Sequence numbers in file names up to 2^64 - 1 parse without overflow")
    func sequenceNames() {
        #expect(SpoolCodec.segmentSequence(fileName: "ffffffffffffffff.seg") == UInt64.max)
        #expect(SpoolCodec.segmentSequence(fileName: "00000000ffffffff.seg") == SpoolCodec.maxSequence)
        #expect(SpoolCodec.maxSegmentLength == Int(Int32.max))
    }
}

extension SpoolCodec.Kind {
    static let allKinds: [SpoolCodec.Kind] = [.envelope, .text, .commit, .abort, .recipient]
}
