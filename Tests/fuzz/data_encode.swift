@testable import PosternCore

// DataEncoder and DataDecoder, which copy runs of ordinary bytes whole (issue 11
// item 2), against verbatim copies of the byte-at-a-time versions they
// replaced: for the same input, split into the same calls with the same output
// room, every call must consume and produce the same bytes, and the decoder
// must end at the same place (its SMTP smuggling rules, RFC 5321 §4.1.1.4,
// bit for bit).
//
// Input: one byte of flags (bit 0: put a run of ordinary octets before the
// text, so short inputs reach the 998-octet line limit; bit 1: the decoder's
// output rooms are large), two bytes of that run's length (0…2,099, with a
// period first when bit 2 is set), eight bytes of call lengths (1…256), eight
// bytes of output rooms, then the text.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let flags = input.byte()
    let run = input.int(0...2099)
    var chunks: [Int] = []
    for _ in 0..<8 { chunks.append(input.int(1...256)) }
    var rooms: [Int] = []
    for _ in 0..<8 { rooms.append(input.int(0...63)) }
    var text: [UInt8] = []
    if flags & 1 != 0 {
        text = [UInt8](repeating: UInt8(ascii: "x"), count: run)
        if flags & 4 != 0 && run > 0 { text[0] = ASCII.dot }
    }
    text += input.rest()

    compareEncoders(text, chunks: chunks, rooms: rooms.map { $0 + 4 })
    compareDecoders(text, chunks: chunks, rooms: rooms.map { flags & 2 != 0 ? $0 * 64 + 3 : $0 + 3 })
}

/// Both encoders, call by call, with output rooms of at least 4 bytes.
func compareEncoders(_ text: [UInt8], chunks: [Int], rooms: [Int]) {
    var new = DataEncoder()
    var old = ByteWiseDataEncoder()
    let size = rooms.max() ?? 4
    var newOut = [UInt8](repeating: 0, count: size)
    var oldOut = [UInt8](repeating: 0, count: size)
    var at = 0
    var call = 0
    text.withUnsafeBytes { all in
        while at < text.count {
            let end = min(text.count, at + chunks[call % chunks.count])
            let room = rooms[call % rooms.count]
            call += 1
            let piece = UnsafeRawBufferPointer(rebasing: all[at..<end])
            let n = newOut.withUnsafeMutableBytes { new.encode(piece, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            let o = oldOut.withUnsafeMutableBytes { old.encode(piece, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            require(n.consumed == o.consumed && n.produced == o.produced, "the encoder's step differs from the byte-wise one")
            require(newOut[0..<n.produced] == oldOut[0..<o.produced], "the encoder's output differs from the byte-wise one")
            require(n.consumed > 0, "the encoder took nothing with four bytes of room")
            at += n.consumed
        }
    }
    require(new.terminator() == old.terminator(), "the encoders end the data differently")
}

/// Both decoders, call by call, until the end of data, with rooms of at least 3.
func compareDecoders(_ text: [UInt8], chunks: [Int], rooms: [Int]) {
    var new = DataDecoder()
    var old = ByteWiseDataDecoder()
    let size = rooms.max() ?? 3
    var newOut = [UInt8](repeating: 0, count: size)
    var oldOut = [UInt8](repeating: 0, count: size)
    var at = 0
    var call = 0
    var stalls = 0
    text.withUnsafeBytes { all in
        while at < text.count && !new.isEnded {
            let end = min(text.count, at + chunks[call % chunks.count])
            let room = rooms[call % rooms.count]
            call += 1
            let piece = UnsafeRawBufferPointer(rebasing: all[at..<end])
            let n = newOut.withUnsafeMutableBytes { new.decode(piece, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            let o = oldOut.withUnsafeMutableBytes { old.decode(piece, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            require(n.consumed == o.consumed && n.produced == o.produced && n.ended == o.ended,
                    "the decoder's step differs from the byte-wise one")
            require(newOut[0..<n.produced] == oldOut[0..<o.produced], "the decoder's output differs from the byte-wise one")
            stalls = n.consumed == 0 && n.produced == 0 ? stalls + 1 : 0
            require(stalls < 3, "the decoder stopped making progress")
            at += n.consumed
        }
    }
    require(new.isEnded == old.isEnded, "the decoders disagree on the end of data")
}

// MARK: the byte-at-a-time versions (Sources/PosternCore before issue 11), verbatim but for their names

struct ByteWiseDataEncoder {
    static let maxLineOctets = 998

    private var lineLength = 0
    private var previousWasCR = false

    init() {}

    struct Step: Equatable {
        var consumed: Int
        var produced: Int
    }

    /// Encodes as much of `input` as fits in `output` (at most four output bytes
    /// per input byte).
    mutating func encode(_ input: UnsafeRawBufferPointer,
                                into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        while i < n && cap - o >= 4 {
            let b = input[i]
            if lineLength >= Self.maxLineOctets && b != ASCII.cr && b != ASCII.lf {
                output[o] = ASCII.cr
                output[o + 1] = ASCII.lf
                output[o + 2] = ASCII.space
                o += 3
                lineLength = 1
            }
            if lineLength == 0 && b == ASCII.dot {
                output[o] = ASCII.dot
                o += 1
                lineLength += 1
            }
            output[o] = b
            o += 1
            if previousWasCR && b == ASCII.lf {
                lineLength = 0
            } else if b != ASCII.cr {
                lineLength += 1
            }
            previousWasCR = b == ASCII.cr
            i += 1
        }
        return Step(consumed: i, produced: o)
    }

    /// The bytes that end the data: a CRLF if the text did not end with one, then
    /// ".CRLF". At most five bytes.
    func terminator() -> [UInt8] {
        lineLength == 0 && !previousWasCR ? [ASCII.dot, ASCII.cr, ASCII.lf]
                                          : [ASCII.cr, ASCII.lf, ASCII.dot, ASCII.cr, ASCII.lf]
    }
}

struct ByteWiseDataDecoder {
    enum State: Equatable {
        /// At the start of a line; `afterCRLF` is false after a normalised bare CR/LF.
        case lineStart(afterCRLF: Bool)
        case middle
        case sawCR
        case sawDot(afterCRLF: Bool)
        case sawDotCR
        case ended
    }

    struct Step: Equatable {
        /// Input bytes consumed.
        var consumed: Int
        /// Decoded bytes written to the output.
        var produced: Int
        /// The end-of-data marker was consumed; input after it is the next command.
        var ended: Bool
    }

    var state: State = .lineStart(afterCRLF: true)

    init() {}

    var isEnded: Bool { state == .ended }

    /// Decodes as much of `input` as fits in `output`. The output needs room for two
    /// bytes per input byte in the worst case (a bare LF becomes CRLF); the decoder
    /// stops early rather than overflow.
    mutating func decode(_ input: UnsafeRawBufferPointer,
                                into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        while i < n {
            if state == .ended { break }
            if cap - o < 3 { break }
            let b = input[i]
            switch state {
            case .middle:
                // Fast path: copy a run of ordinary bytes.
                if b != ASCII.cr && b != ASCII.lf {
                    var j = i
                    let limit = min(n, i + (cap - o - 2))
                    while j < limit {
                        let c = input[j]
                        if c == ASCII.cr || c == ASCII.lf { break }
                        output[o] = c
                        o += 1
                        j += 1
                    }
                    i = j
                    continue
                }
                if b == ASCII.cr { state = .sawCR } else { o = newline(output, o, crlf: false) }
                i += 1
            case .lineStart(let afterCRLF):
                switch b {
                case ASCII.dot: state = .sawDot(afterCRLF: afterCRLF)
                case ASCII.cr: state = .sawCR
                case ASCII.lf: o = newline(output, o, crlf: false)
                default:
                    output[o] = b; o += 1
                    state = .middle
                }
                i += 1
            case .sawCR:
                if b == ASCII.lf {
                    o = newline(output, o, crlf: true)
                    i += 1
                } else {
                    // A bare CR: store it as a line end and look at `b` again.
                    o = newline(output, o, crlf: false)
                }
            case .sawDot(let afterCRLF):
                if b == ASCII.cr && afterCRLF {
                    state = .sawDotCR
                    i += 1
                } else if b == ASCII.cr || b == ASCII.lf {
                    // "." ended by a bare line ending: content, kept as a "." line.
                    output[o] = ASCII.dot; o += 1
                    state = .middle
                } else {
                    // The leading dot was stuffing; the line goes on with `b`.
                    output[o] = b; o += 1
                    state = .middle
                    i += 1
                }
            case .sawDotCR:
                if b == ASCII.lf {
                    state = .ended
                    i += 1
                } else {
                    // ".<CR>x": the dot was stuffing, the CR is a bare CR.
                    o = newline(output, o, crlf: false)
                }
            case .ended:
                break
            }
        }
        return Step(consumed: i, produced: o, ended: state == .ended)
    }

    @inline(__always)
    private mutating func newline(_ output: UnsafeMutableRawBufferPointer, _ o: Int, crlf: Bool) -> Int {
        output[o] = ASCII.cr
        output[o + 1] = ASCII.lf
        state = .lineStart(afterCRLF: crlf)
        return o + 2
    }
}
