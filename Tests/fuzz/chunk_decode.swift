@testable import PosternCore

// `ChunkDecoder` (BDAT text, RFC 3030) over any bytes, cut into chunks and fed
// into small output rooms, against a plain reference of the whole: every bare
// CR or LF and every CRLF becomes one CRLF, and an unfinished last line gets
// one. Checks progress, that the cuts never change the result, and that no
// bare CR or LF comes out.
//
// Input: a byte for the output room (2–65), a byte for the chunk length
// (1–64), then the text.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let room = input.int(2...65)
    let chunk = input.int(1...64)
    let text = Array(input.rest())

    var decoder = ChunkDecoder()
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: room)
    var at = 0
    while at < text.count {
        let end = min(text.count, at + chunk)
        var piece = text[at..<end]
        while !piece.isEmpty {
            let step = piece.withUnsafeBytes { p in buffer.withUnsafeMutableBytes { decoder.decode(p, into: $0) } }
            // A CR left pending by the last call may take a call of its own:
            // its CRLF out, nothing consumed.
            require(step.consumed > 0 || step.produced == 2, "no progress with \(room) bytes of room")
            require(step.consumed <= piece.count && step.produced <= room, "a step past its bounds")
            out += buffer[0..<step.produced]
            piece = piece.dropFirst(step.consumed)
        }
        at = end
    }
    let n = buffer.withUnsafeMutableBytes { decoder.finish(into: $0) }
    out += buffer[0..<n]
    require(out == reference(text), "the decoded text differs from the reference")
    for (i, b) in out.enumerated() {
        if b == ASCII.cr { require(i + 1 < out.count && out[i + 1] == ASCII.lf, "a bare CR came out") }
        if b == ASCII.lf { require(i > 0 && out[i - 1] == ASCII.cr, "a bare LF came out") }
    }
}

/// The whole text at once, the simplest way.
func reference(_ text: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < text.count {
        let b = text[i]
        if b == ASCII.cr {
            out += [ASCII.cr, ASCII.lf]
            i += (i + 1 < text.count && text[i + 1] == ASCII.lf) ? 2 : 1
        } else if b == ASCII.lf {
            out += [ASCII.cr, ASCII.lf]
            i += 1
        } else {
            out.append(b)
            i += 1
        }
    }
    if let last = out.last, last != ASCII.lf { out += [ASCII.cr, ASCII.lf] }
    return out
}
