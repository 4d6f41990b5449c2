@testable import PosternCore

// The DATA decoder (DataDecoder) with the text split at fuzzer-chosen points into
// small output buffers, against one decode of the whole text into a large buffer,
// and the encoder (DataEncoder) round trip.
//
// Input: one byte of output-buffer size, eight bytes of split lengths, then the
// text the client sends after 354.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let outputSize = input.int(3...64)
    var splits: [Int] = []
    for _ in 0..<8 { splits.append(input.int(1...32)) }
    let text = input.rest()

    let whole = decodeAll(text, chunks: [text.count], outputSize: 2 * text.count + 3)
    let split = decodeAll(text, chunks: splits, outputSize: outputSize)
    require(whole.output == split.output, "the split points changed the decoded text")
    require(whole.consumed == split.consumed && whole.ended == split.ended, "the split points changed the end")

    // Only CRLF.CRLF ends the data (RFC 5321 §4.1.1.4); the CRLF that ends the
    // DATA command counts as the first CRLF, so ".CRLF" at the very start ends too.
    if whole.ended {
        let consumed = Array(UnsafeRawBufferPointer(rebasing: text[0..<whole.consumed]))
        let dotLine: [UInt8] = [ASCII.dot, ASCII.cr, ASCII.lf]
        require(consumed == dotLine || consumed.suffix(5) == [ASCII.cr, ASCII.lf] + dotLine,
                "the data ended without CRLF.CRLF")
    } else {
        require(whole.consumed == text.count, "input left over without an end")
    }
    checkLineEndings(whole.output)
    if whole.ended { checkRoundTrip(whole.output) }
}

struct Decoded {
    var output: [UInt8] = []
    var consumed = 0
    var ended = false
}

/// Feeds `text` in pieces of the given lengths (cycling) through output buffers of
/// `outputSize` bytes, as the connection does with its fixed buffers.
func decodeAll(_ text: UnsafeRawBufferPointer, chunks: [Int], outputSize: Int) -> Decoded {
    var decoder = DataDecoder()
    var result = Decoded()
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: outputSize, alignment: 1)
    defer { out.deallocate() }
    var k = 0
    var stalls = 0
    while result.consumed < text.count && !result.ended {
        let end = min(text.count, result.consumed + chunks[k % chunks.count])
        k += 1
        let step = decoder.decode(UnsafeRawBufferPointer(rebasing: text[result.consumed..<end]), into: out)
        require(step.produced <= out.count && step.consumed <= end - result.consumed, "a step beyond its buffers")
        result.output += out[0..<step.produced]
        result.consumed += step.consumed
        result.ended = step.ended
        require(step.ended == decoder.isEnded, "isEnded disagrees with the step")
        // With three bytes of room the decoder always makes progress.
        stalls = step.consumed == 0 && step.produced == 0 ? stalls + 1 : 0
        require(stalls < 3, "the decoder stopped making progress")
    }
    return result
}

/// Decoded text holds CRLF line endings only: a bare CR or LF never reaches the
/// spool (RFC 5321 §2.3.8), so the sender never forwards one.
func checkLineEndings(_ text: [UInt8]) {
    var i = 0
    while i < text.count {
        if text[i] == ASCII.cr {
            require(i + 1 < text.count && text[i + 1] == ASCII.lf, "a bare CR in decoded text")
            i += 2
            continue
        }
        require(text[i] != ASCII.lf, "a bare LF in decoded text")
        i += 1
    }
}

/// What the sender encodes from the spooled text decodes back to it (plus the CRLF
/// the encoder adds to text that does not end in one, RFC 5321 §4.1.1.4), as long
/// as no line needs breaking at 998 octets (RFC 5321 §4.5.3.1.6).
func checkRoundTrip(_ text: [UInt8]) {
    var lineLength = 0
    for b in text {
        if b == ASCII.lf { lineLength = 0 } else if b != ASCII.cr { lineLength += 1 }
        if lineLength >= DataEncoder.maxLineOctets { return }
    }
    var encoder = DataEncoder()
    var wire: [UInt8] = []
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
    defer { out.deallocate() }
    text.withUnsafeBytes { t in
        var at = 0
        while at < t.count {
            let step = encoder.encode(UnsafeRawBufferPointer(rebasing: t[at...]), into: out)
            wire += out[0..<step.produced]
            at += step.consumed
        }
    }
    wire += encoder.terminator()
    let back = wire.withUnsafeBytes { decodeAll($0, chunks: [wire.count], outputSize: 2 * wire.count + 3) }
    require(back.ended && back.consumed == wire.count, "the encoded text does not end exactly at its terminator")
    let endsInCRLF = text.isEmpty || text.suffix(2) == [ASCII.cr, ASCII.lf]
    require(back.output == (endsInCRLF ? text : text + [ASCII.cr, ASCII.lf]), "encode then decode changed the text")
}
