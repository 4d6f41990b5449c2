import Testing
@testable import PosternCore

/// Encodes `text` in pieces of `chunk` bytes through an output buffer of
/// `outputSize` bytes, then appends the terminator: the bytes that go on the wire.
func encodeAll(_ text: [UInt8], chunk: Int = Int.max, outputSize: Int = 4096) -> [UInt8] {
    var encoder = DataEncoder()
    var out: [UInt8] = []
    var output = [UInt8](repeating: 0, count: outputSize)
    var start = 0
    while start < text.count {
        let end = chunk >= text.count - start ? text.count : start + chunk
        var piece = Array(text[start..<end])
        while !piece.isEmpty {
            let step = piece.withUnsafeBytes { i in output.withUnsafeMutableBytes { encoder.encode(i, into: $0) } }
            if step.consumed == 0 {
                Issue.record("encoder made no progress with \(outputSize) bytes of output room")
                return out
            }
            #expect(step.produced <= outputSize)
            #expect(step.produced >= step.consumed)
            out += output[0..<step.produced]
            piece.removeFirst(step.consumed)
        }
        start = end
    }
    let t = encoder.terminator()
    #expect(t.count <= 5)
    return out + t
}

func encodeAll(_ text: String, chunk: Int = Int.max, outputSize: Int = 4096) -> String {
    String(decoding: encodeAll(Array(text.utf8), chunk: chunk, outputSize: outputSize), as: UTF8.self)
}

@Suite("DATA dot-stuffing (RFC 5321 §4.5.2)")
struct DataEncoderStuffingTests {
    @Test("A line beginning with a period gets one more", arguments: [
        (".\r\n", "..\r\n.\r\n"),
        (".foo\r\n", "..foo\r\n.\r\n"),
        ("..\r\n", "...\r\n.\r\n"),
        ("a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"),
        ("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"),
        ("a.b\r\n", "a.b\r\n.\r\n"),
        ("a\r\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n"),
    ])
    func stuffing(text: String, wire: String) {
        #expect(encodeAll(text) == wire)
    }

    @Test("Text in pieces and through small output buffers encodes the same",
          arguments: [(1, 4), (1, 5), (2, 4), (3, 4), (5, 64), (1000, 4)])
    func pieces(chunk: Int, outputSize: Int) {
        let text = ".first\r\nmiddle.\r\n..\r\n.\r\nlast line\r\n"
        #expect(encodeAll(text, chunk: chunk, outputSize: outputSize) == encodeAll(text))
        #expect(encodeAll(text) == "..first\r\nmiddle.\r\n...\r\n..\r\nlast line\r\n.\r\n")
    }

    @Test("A period after a CR split from its LF across pieces is still stuffed")
    func splitCRLF() {
        #expect(encodeAll("a\r\n.b\r\n", chunk: 2) == "a\r\n..b\r\n.\r\n")
    }

    @Test("The encoder never writes more than its output room")
    func respectsOutputRoom() {
        var encoder = DataEncoder()
        let input = Array("....".utf8)
        var storage = [UInt8](repeating: 0xAA, count: 8)
        let step = input.withUnsafeBytes { i in
            storage.withUnsafeMutableBytes { encoder.encode(i, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<5])) }
        }
        #expect(step.produced <= 5)
        #expect(step.consumed >= 1)
        #expect(storage[5...].allSatisfy { $0 == 0xAA })
    }
}

@Suite("DATA terminator (RFC 5321 §4.1.1.4)")
struct DataEncoderTerminatorTests {
    @Test("Text ending in CRLF gets \".CRLF\"")
    func endsWithCRLF() {
        #expect(encodeAll("Hello\r\n") == "Hello\r\n.\r\n")
    }

    @Test("Text not ending in CRLF gets a CRLF first", arguments: ["Hello", "Hello\r", "a\r\nb"])
    func doesNotEndWithCRLF(text: String) {
        #expect(encodeAll(text) == text + "\r\n.\r\n")
    }

    @Test("Empty text is the lone dot line")
    func emptyText() {
        #expect(encodeAll("") == ".\r\n")
        #expect(DataEncoder().terminator() == Array(".\r\n".utf8))
    }
}

@Suite("DATA round trip: DataEncoder then DataDecoder (RFC 5321 §4.5.2)")
struct DataRoundTripTests {
    /// A small deterministic generator (SplitMix64), so failures are reproducible.
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    /// CRLF-terminated lines made of pieces that matter to the codec.
    static func texts() -> [[UInt8]] {
        let pieces = [".", "..", "...", "a", "From ", " ", "x.y", "\u{e9}", "\t", "0123456789"]
        var rng = SplitMix(state: 5321)
        var out: [[UInt8]] = [[], Array(".\r\n".utf8), Array("..\r\n".utf8), Array("\r\n".utf8),
                              Array(".\r\n.\r\n.\r\n".utf8)]
        for _ in 0..<300 {
            var text = ""
            for _ in 0..<rng.below(8) {
                for _ in 0..<rng.below(5) { text += pieces[rng.below(pieces.count)] }
                text += "\r\n"
            }
            // Sometimes a last line without CRLF.
            if rng.below(4) == 0 { text += pieces[rng.below(pieces.count)] }
            out.append(Array(text.utf8))
        }
        return out
    }

    @Test("decode(encode(text)) gives back the text (plus CRLF when it lacked one)")
    func roundTrip() {
        for text in Self.texts() {
            let wire = encodeAll(text)
            let decoded = decodeAll(wire)
            let endsWithCRLF = text.count >= 2 && text[text.count - 2] == 13 && text[text.count - 1] == 10
            let expected = text.isEmpty || endsWithCRLF ? text : text + [13, 10]
            #expect(decoded.ended, "\(String(decoding: text, as: UTF8.self).debugDescription)")
            #expect(decoded.consumed == wire.count)
            #expect(decoded.text == expected, "\(String(decoding: text, as: UTF8.self).debugDescription)")
        }
    }

    @Test("The round trip holds with tiny pieces and buffers on both sides")
    func roundTripSmallBuffers() {
        for text in Self.texts().prefix(60) {
            let wire = encodeAll(text, chunk: 3, outputSize: 4)
            #expect(wire == encodeAll(text))
            #expect(decodeAll(wire, chunk: 2, outputSize: 3) == decodeAll(wire))
        }
    }

    @Test("The encoded text holds no premature end marker")
    func noEarlyEnd() {
        let marker = Array("\r\n.\r\n".utf8)
        for text in Self.texts() {
            let wire = [13, 10] + encodeAll(text)  // the CRLF that ended the DATA command
            var count = 0
            if wire.count >= marker.count {
                for i in 0...(wire.count - marker.count) where Array(wire[i..<(i + marker.count)]) == marker { count += 1 }
            }
            #expect(count == 1, "\(String(decoding: text, as: UTF8.self).debugDescription)")
        }
    }
}

@Suite("Long text lines are broken before 1000 octets (RFC 5321 §4.5.3.1.6)")
struct DataEncoderLineLengthTests {
    /// The lengths of the lines on the wire, without their CRLF.
    func lineLengths(_ wire: [UInt8]) -> [Int] {
        var out: [Int] = []
        var current = 0
        var i = 0
        while i < wire.count {
            if wire[i] == 13 && i + 1 < wire.count && wire[i + 1] == 10 {
                out.append(current)
                current = 0
                i += 2
            } else {
                current += 1
                i += 1
            }
        }
        return out
    }

    @Test("a 998-octet line is sent as it is; a 999-octet line is broken with CRLF SP",
          arguments: [(998, [998]), (999, [998, 2]), (3000, [998, 998, 998, 9])])
    func breaks(length: Int, expected: [Int]) {
        let text = [UInt8](repeating: 120, count: length) + [13, 10]
        let wire = encodeAll(text, chunk: 7, outputSize: 4)
        #expect(lineLengths(wire) == expected + [1], "the terminator line '.' comes last")
        // Every continuation starts with a space, so a header stays a folded header.
        var i = 0
        while i + 2 < wire.count {
            if wire[i] == 13 && wire[i + 1] == 10 && i + 2 < wire.count - 3 { #expect(wire[i + 2] == 32) }
            i += 1
        }
        #expect(wire.filter { $0 == 120 }.count == length, "no content octet is lost")
    }

    @Test("a stuffed period counts toward the limit")
    func stuffedDotCounts() {
        let text = [46] + [UInt8](repeating: 120, count: 997) + [13, 10]
        #expect(lineLengths(encodeAll(text)) == [998, 2, 1])
    }
}
