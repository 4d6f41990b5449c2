import Testing
@testable import PosternCore

/// The result of decoding a whole input through `DataDecoder`.
struct Decoded: Equatable, CustomStringConvertible {
    var text: [UInt8]
    /// Input bytes consumed in total.
    var consumed: Int
    var ended: Bool

    var description: String {
        "Decoded(text: \(String(decoding: text, as: UTF8.self).debugDescription), consumed: \(consumed), ended: \(ended))"
    }
}

/// Feeds `input` to a fresh decoder in pieces of `chunk` bytes, each piece decoded
/// into an output buffer of `outputSize` bytes as often as it takes, the way the
/// connection drives the decoder. Stops at the end marker.
func decodeAll(_ input: [UInt8], chunk: Int = Int.max, outputSize: Int = 4096) -> Decoded {
    var decoder = DataDecoder()
    var out: [UInt8] = []
    var output = [UInt8](repeating: 0, count: outputSize)
    var consumed = 0
    var ended = false
    var start = 0
    while start < input.count && !ended {
        let end = chunk >= input.count - start ? input.count : start + chunk
        var piece = Array(input[start..<end])
        var pieceConsumed = 0
        while !piece.isEmpty {
            let step = piece.withUnsafeBytes { inp in
                output.withUnsafeMutableBytes { decoder.decode(inp, into: $0) }
            }
            if step.consumed == 0 && step.produced == 0 && !step.ended {
                Issue.record("decoder made no progress with \(outputSize) bytes of output room")
                return Decoded(text: out, consumed: consumed, ended: ended)
            }
            #expect(step.produced <= outputSize)
            out += output[0..<step.produced]
            piece.removeFirst(step.consumed)
            pieceConsumed += step.consumed
            if step.ended { ended = true; break }
        }
        consumed += pieceConsumed
        start = end
    }
    if ended { #expect(decoder.isEnded) }
    return Decoded(text: out, consumed: consumed, ended: ended)
}

func decodeAll(_ input: String, chunk: Int = Int.max, outputSize: Int = 4096) -> Decoded {
    decodeAll(Array(input.utf8), chunk: chunk, outputSize: outputSize)
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("DATA end of data (RFC 5321 §4.1.1.4)")
struct DataDecoderEndTests {
    @Test("Text up to CRLF.CRLF is the message; the CRLF before the dot belongs to it")
    func simpleMessage() {
        let input = "Subject: x\r\n\r\nHello\r\n.\r\n"
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes("Subject: x\r\n\r\nHello\r\n"), consumed: input.utf8.count, ended: true))
    }

    @Test("An empty message is the lone dot line right after DATA")
    func emptyMessage() {
        #expect(decodeAll(".\r\n") == Decoded(text: [], consumed: 3, ended: true))
    }

    @Test("A message of one empty line")
    func oneEmptyLine() {
        #expect(decodeAll("\r\n.\r\n") == Decoded(text: bytes("\r\n"), consumed: 5, ended: true))
    }

    @Test("Bytes after the end marker are not consumed (they are the next command)")
    func bytesAfterEndNotConsumed() {
        let input = "Hi\r\n.\r\nQUIT\r\n"
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes("Hi\r\n"), consumed: 7, ended: true))
        // A decoder that has ended takes nothing more.
        var decoder = DataDecoder()
        var out = [UInt8](repeating: 0, count: 64)
        let all = bytes(input)
        let first = all.withUnsafeBytes { i in out.withUnsafeMutableBytes { decoder.decode(i, into: $0) } }
        #expect(first == DataDecoder.Step(consumed: 7, produced: 4, ended: true))
        let rest = Array(all[7...])
        let second = rest.withUnsafeBytes { i in out.withUnsafeMutableBytes { decoder.decode(i, into: $0) } }
        #expect(second == DataDecoder.Step(consumed: 0, produced: 0, ended: true))
    }

    @Test("Without the end marker the decoder has not ended", arguments: [
        "Hello", "Hello\r\n", "Hello\r\n.", "Hello\r\n.\r", "Hello\r\n..\r\n", "Hello\r\n. \r\n",
    ])
    func notEnded(input: String) {
        let d = decodeAll(input)
        #expect(!d.ended)
        #expect(d.consumed == input.utf8.count)
    }

    @Test("A dot in mid-line followed by CRLF is not an end")
    func dotMidLine() {
        let d = decodeAll("a.\r\nb\r\n.\r\n")
        #expect(d == Decoded(text: bytes("a.\r\nb\r\n"), consumed: 10, ended: true))
    }

    @Test("The end marker split across reads is still found",
          arguments: ["Hi\r", "Hi\r\n", "Hi\r\n.", "Hi\r\n.\r"])
    func markerSplit(first: String) {
        let all = bytes("Hi\r\n.\r\n")
        let n = first.utf8.count
        let d = decodeAll(all, chunk: n)
        #expect(d == Decoded(text: bytes("Hi\r\n"), consumed: 7, ended: true))
    }
}

@Suite("DATA end only on CRLF.CRLF: SMTP smuggling (RFC 5321 §4.1.1.4, §2.3.8)")
struct DataDecoderSmugglingTests {
    /// Line endings around a dot that a lax receiver might take for the end of data.
    /// Each must be content, normalised to CRLF, and the real end comes later.
    @Test("A dot line with a bare line ending is content, not the end", arguments: [
        // (smuggled prefix, expected decoded text of prefix + "X\r\n.\r\n")
        ("a\n.\n", "a\r\n.\r\nX\r\n"),
        ("a\r.\r", "a\r\n.\r\nX\r\n"),
        ("a\r\n.\n", "a\r\n.\r\nX\r\n"),
        ("a\n.\r\n", "a\r\n.\r\nX\r\n"),
        ("a\r.\r\n", "a\r\n.\r\nX\r\n"),
        ("a\n.\r", "a\r\n.\r\nX\r\n"),
    ])
    func smuggled(prefix: String, expected: String) {
        let alone = decodeAll(prefix)
        #expect(!alone.ended, "\(prefix.debugDescription) must not end the data")
        let input = prefix + "X\r\n.\r\n"
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes(expected), consumed: input.utf8.count, ended: true))
    }

    @Test("A smuggled MAIL command after a bare-LF dot stays inside the message")
    func smuggledCommandStaysContent() {
        let input = "Subject: hi\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n.\r\nQUIT\r\n"
        let d = decodeAll(input)
        #expect(d.ended)
        #expect(d.text == bytes("Subject: hi\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n"))
        #expect(d.consumed == input.utf8.count - "QUIT\r\n".utf8.count)
    }

    @Test("\".<CR>\" after CRLF followed by text is not an end: the dot is stuffing, the CR a bare CR")
    func dotBareCRText() {
        let input = "a\r\n.\rX\r\n.\r\n"
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes("a\r\n\r\nX\r\n"), consumed: input.utf8.count, ended: true))
    }
}

@Suite("DATA dot-unstuffing (RFC 5321 §4.5.2)")
struct DataDecoderUnstuffingTests {
    @Test("A leading dot is removed from every line", arguments: [
        ("..\r\n.\r\n", ".\r\n"),
        ("..foo\r\n.\r\n", ".foo\r\n"),
        (".foo\r\n.\r\n", "foo\r\n"),
        ("...\r\n.\r\n", "..\r\n"),
        ("a\r\n..\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"),
        ("a\r\n...b\r\n.\r\n", "a\r\n..b\r\n"),
        ("x.y\r\n.z.\r\n.\r\n", "x.y\r\nz.\r\n"),
        ("..\r\n..\r\n.\r\n", ".\r\n.\r\n"),
    ])
    func unstuff(input: String, expected: String) {
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes(expected), consumed: input.utf8.count, ended: true))
    }

    @Test("Dots in the middle of a line are kept")
    func middleDots() {
        #expect(decodeAll("a..b.\r\n.\r\n").text == bytes("a..b.\r\n"))
    }
}

@Suite("DATA line ending normalisation (RFC 5321 §2.3.8)")
struct DataDecoderNormalisationTests {
    @Test("Bare LF and bare CR are stored as CRLF", arguments: [
        ("a\nb\n.\r\n", "a\r\nb\r\n.\r\n", false),
        ("a\nb\r\n.\r\n", "a\r\nb\r\n", true),
        ("a\rb\r\n.\r\n", "a\r\nb\r\n", true),
        ("\r\r\n.\r\n", "\r\n\r\n", true),
        ("\n\n\r\n.\r\n", "\r\n\r\n\r\n", true),
        ("a\n\rb\r\n.\r\n", "a\r\n\r\nb\r\n", true),
        ("x\r\n\n.\r\n", "x\r\n\r\n.\r\n", false),
    ])
    func normalise(input: String, expected: String, ended: Bool) {
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes(expected), consumed: input.utf8.count, ended: ended))
    }

    @Test("A bare LF before the final CRLF.CRLF")
    func bareLFThenEnd() {
        let input = "line one\nline two\r\n.\r\n"
        let d = decodeAll(input)
        #expect(d == Decoded(text: bytes("line one\r\nline two\r\n"), consumed: input.utf8.count, ended: true))
    }

    @Test("Decoded text never holds a bare CR or LF")
    func noBareLineEndings() {
        for input in DataDecoderChunkingTests.corpus {
            let text = decodeAll(input).text
            for (i, b) in text.enumerated() {
                if b == 13 { #expect(i + 1 < text.count && text[i + 1] == 10, "bare CR in output of \(input.debugDescription)") }
                if b == 10 { #expect(i > 0 && text[i - 1] == 13, "bare LF in output of \(input.debugDescription)") }
            }
        }
    }

    @Test("NUL and 8-bit bytes pass through unchanged")
    func binaryPassesThrough() {
        let input: [UInt8] = [0, 0xff, 0xc3, 0xa9, 13, 10, 46, 13, 10]
        #expect(decodeAll(input) == Decoded(text: [0, 0xff, 0xc3, 0xa9, 13, 10], consumed: 9, ended: true))
    }
}

@Suite("DATA decoding in pieces (streaming in fixed memory)")
struct DataDecoderChunkingTests {
    static let corpus: [String] = [
        "Subject: x\r\n\r\nHello\r\n.\r\n",
        ".\r\n",
        "..\r\n...x\r\n.\r\n",
        "a\n.\nb\r.\rc\r\n.\n\r\n.\r\n",
        "a\r\n.\rX\r\n.\r\n",
        "\r\r\r\n\n\n.\r\n",
        "line\r\n.\r\nNEXT COMMAND\r\n",
        ".a\r\n.\r\r\n.\r\n",
        "no end here\r\n.",
        "trailing dot line\r\n.\r",
        String(repeating: "0123456789", count: 50) + "\r\n." + String(repeating: "y", count: 300) + "\r\n.\r\n",
    ]

    @Test("Every split into two reads decodes the same as one read", arguments: corpus)
    func everySplitPoint(input: String) {
        let whole = decodeAll(input)
        let b = bytes(input)
        for split in 0...b.count {
            var d = DataDecoder()
            var out: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            var consumed = 0
            var ended = false
            for piece in [Array(b[..<split]), Array(b[split...])] where !ended {
                let step = piece.withUnsafeBytes { i in buffer.withUnsafeMutableBytes { d.decode(i, into: $0) } }
                out += buffer[0..<step.produced]
                consumed += step.consumed
                ended = step.ended
                if !ended { #expect(step.consumed == piece.count) }
            }
            #expect(Decoded(text: out, consumed: consumed, ended: ended) == whole, "split at \(split)")
        }
    }

    @Test("Feeding one byte at a time decodes the same as one read", arguments: corpus)
    func oneByteAtATime(input: String) {
        #expect(decodeAll(input, chunk: 1) == decodeAll(input))
    }

    @Test("Small output buffers decode the same as a large one", arguments: [3, 4, 5, 7, 16])
    func smallOutput(size: Int) {
        for input in Self.corpus {
            #expect(decodeAll(input, outputSize: size) == decodeAll(input), "\(input.debugDescription)")
            #expect(decodeAll(input, chunk: 3, outputSize: size) == decodeAll(input), "\(input.debugDescription)")
        }
    }

    @Test("The decoder never writes more than its output room")
    func respectsOutputRoom() {
        var d = DataDecoder()
        let input = bytes("\n\n\n\n\n\n\n\n")
        // Guard bytes after the output room detect an overflow.
        var storage = [UInt8](repeating: 0xAA, count: 10)
        let step = input.withUnsafeBytes { i in
            storage.withUnsafeMutableBytes { d.decode(i, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<5])) }
        }
        #expect(step.produced <= 5)
        #expect(step.consumed >= 1)
        #expect(storage[5...].allSatisfy { $0 == 0xAA })
    }

    @Test("A 1 MB line with no line ending streams through a 64-byte output buffer")
    func hugeLine() {
        var input = [UInt8](repeating: 0x41, count: 1 << 20)
        input += bytes("\r\n.\r\n")
        let d = decodeAll(input, chunk: 4096, outputSize: 64)
        #expect(d.ended)
        #expect(d.consumed == input.count)
        #expect(d.text.count == (1 << 20) + 2)
    }
}
