import Testing
@testable import PosternCore

// The run-copying DataEncoder and DataDecoder against verbatim copies of the
// byte-at-a-time versions they replaced (issue 11 item 2): for any input, any
// split of it into calls and any output room, every call must consume and
// produce exactly what the old one did, byte for byte. The decoder's copy
// keeps the SMTP smuggling rules of its doc comment (DESIGN.md principle 7):
// only CRLF.CRLF ends the data, bare CR and LF become CRLF.

// MARK: the byte-at-a-time versions, verbatim but for their names

struct ByteWiseDataEncoder: Sendable {
    /// Octets of a line before the CRLF (RFC 5321 §4.5.3.1.6: 1000 with it).
    public static let maxLineOctets = 998

    private var lineLength = 0
    private var previousWasCR = false

    public init() {}

    public struct Step: Equatable, Sendable {
        public var consumed: Int
        public var produced: Int
    }

    /// Encodes as much of `input` as fits in `output` (at most four output bytes
    /// per input byte).
    public mutating func encode(_ input: UnsafeRawBufferPointer,
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
    public func terminator() -> [UInt8] {
        lineLength == 0 && !previousWasCR ? [ASCII.dot, ASCII.cr, ASCII.lf]
                                          : [ASCII.cr, ASCII.lf, ASCII.dot, ASCII.cr, ASCII.lf]
    }
}

struct ByteWiseDataDecoder: Sendable {
    enum State: Equatable, Sendable {
        /// At the start of a line; `afterCRLF` is false after a normalised bare CR/LF.
        case lineStart(afterCRLF: Bool)
        case middle
        case sawCR
        case sawDot(afterCRLF: Bool)
        case sawDotCR
        case ended
    }

    public struct Step: Equatable, Sendable {
        /// Input bytes consumed.
        public var consumed: Int
        /// Decoded bytes written to the output.
        public var produced: Int
        /// The end-of-data marker was consumed; input after it is the next command.
        public var ended: Bool
    }

    var state: State = .lineStart(afterCRLF: true)

    public init() {}

    public var isEnded: Bool { state == .ended }

    /// Decodes as much of `input` as fits in `output`. The output needs room for two
    /// bytes per input byte in the worst case (a bare LF becomes CRLF); the decoder
    /// stops early rather than overflow.
    public mutating func decode(_ input: UnsafeRawBufferPointer,
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

// MARK: inputs

/// A seeded generator (64-bit LCG, high bits): every run tests the same inputs.
struct EquivalenceRandom {
    var x: UInt64
    init(_ seed: UInt64) { x = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return x >> 16
    }
    mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + Int(next() % UInt64(r.count)) }
    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }
}

/// Message-like text: lines of every interesting length (short, 76, 997, 998,
/// 999, 2000) with periods at their starts, every kind of line end (CRLF,
/// bare LF, bare CR, CR CR LF, none), lone periods, end-of-data markers with
/// the right and the wrong line ends around them, and random bytes of all 256
/// values.
func equivalenceText(_ r: inout EquivalenceRandom, maxLength: Int) -> [UInt8] {
    var t: [UInt8] = []
    let lengths = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 76, 996, 997, 998, 999, 1000, 1996, 1997, 2000]
    while t.count < maxLength {
        switch r.int(0...9) {
        case 0:
            t += [ASCII.dot]
        case 1:
            t += [ASCII.cr, ASCII.lf, ASCII.dot, ASCII.cr, ASCII.lf]
        case 2:
            for _ in 0..<r.int(1...40) { t.append(UInt8(truncatingIfNeeded: r.next())) }
        case 3:
            t += [[ASCII.lf, ASCII.dot], [ASCII.cr, ASCII.dot], [ASCII.dot, ASCII.cr], [ASCII.dot, ASCII.lf],
                  [ASCII.dot, ASCII.cr, ASCII.cr, ASCII.lf], [ASCII.cr, ASCII.cr, ASCII.lf, ASCII.dot, ASCII.dot]][r.int(0...5)]
        default:
            if r.chance(30) { t.append(ASCII.dot) }
            if r.chance(10) { t.append(ASCII.dot) }
            let n = r.chance(50) ? lengths[r.int(0...(lengths.count - 1))] : r.int(0...120)
            for _ in 0..<n { t.append(UInt8(r.int(0x20...0x7E))) }
        }
        switch r.int(0...9) {
        case 0: t += [ASCII.lf]
        case 1: t += [ASCII.cr]
        case 2: t += [ASCII.cr, ASCII.cr, ASCII.lf]
        case 3: break
        default: t += [ASCII.cr, ASCII.lf]
        }
    }
    return t
}

// MARK: the two side by side

/// Feeds `text` to both encoders in calls of `chunks` input bytes (cycling;
/// what a call leaves is offered again, as OutboundText does) into outputs of
/// `rooms` bytes (cycling); false at the first call where they differ.
func encodersAgree(_ text: [UInt8], chunks: [Int], rooms: [Int]) -> Bool {
    var new = DataEncoder()
    var old = ByteWiseDataEncoder()
    let maxRoom = rooms.max() ?? 4
    var newOut = [UInt8](repeating: 0, count: maxRoom)
    var oldOut = [UInt8](repeating: 0xAA, count: maxRoom)
    var at = 0
    var call = 0
    return text.withUnsafeBytes { all -> Bool in
        while at < text.count {
            let end = min(text.count, at + chunks[call % chunks.count])
            let room = rooms[call % rooms.count]
            call += 1
            let input = UnsafeRawBufferPointer(rebasing: all[at..<end])
            let n = newOut.withUnsafeMutableBytes { new.encode(input, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            let o = oldOut.withUnsafeMutableBytes { old.encode(input, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            guard n.consumed == o.consumed, n.produced == o.produced,
                  newOut[0..<n.produced] == oldOut[0..<o.produced] else { return false }
            guard n.consumed > 0 else { return false }   // four bytes of room always take a byte
            at += n.consumed
        }
        return new.terminator() == old.terminator()
    }
}

/// The same for the decoders, until the end of data or of the text; outputs
/// of at least 3 bytes (the decoder's own minimum for progress).
func decodersAgree(_ text: [UInt8], chunks: [Int], rooms: [Int]) -> Bool {
    var new = DataDecoder()
    var old = ByteWiseDataDecoder()
    let maxRoom = rooms.max() ?? 3
    var newOut = [UInt8](repeating: 0, count: maxRoom)
    var oldOut = [UInt8](repeating: 0xAA, count: maxRoom)
    var at = 0
    var call = 0
    var idle = 0
    return text.withUnsafeBytes { all -> Bool in
        while at < text.count && !new.isEnded {
            let end = min(text.count, at + chunks[call % chunks.count])
            let room = rooms[call % rooms.count]
            call += 1
            let input = UnsafeRawBufferPointer(rebasing: all[at..<end])
            let n = newOut.withUnsafeMutableBytes { new.decode(input, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            let o = oldOut.withUnsafeMutableBytes { old.decode(input, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<room])) }
            guard n.consumed == o.consumed, n.produced == o.produced, n.ended == o.ended,
                  newOut[0..<n.produced] == oldOut[0..<o.produced], sameState(new.state, old.state) else { return false }
            idle = n.consumed == 0 && n.produced == 0 ? idle + 1 : 0
            guard idle < 3 else { return false }
            at += n.consumed
        }
        return new.isEnded == old.isEnded
    }
}

/// The two decoders' states name the same place in the text.
func sameState(_ a: DataDecoder.State, _ b: ByteWiseDataDecoder.State) -> Bool {
    switch (a, b) {
    case (.lineStart(let x), .lineStart(let y)), (.sawDot(let x), .sawDot(let y)): return x == y
    case (.middle, .middle), (.sawCR, .sawCR), (.sawDotCR, .sawDotCR), (.ended, .ended): return true
    default: return false
    }
}

/// Split and room patterns: one call for everything, single bytes, small and
/// odd sizes, and random ones.
func equivalenceSplits(_ r: inout EquivalenceRandom, minimumRoom: Int) -> (chunks: [Int], rooms: [Int]) {
    switch r.int(0...4) {
    case 0: return ([Int.max / 2], [65_536])
    case 1: return ([1], [minimumRoom])
    case 2: return ([r.int(1...9)], [r.int(minimumRoom...12)])
    default:
        let chunks = (0..<r.int(1...8)).map { _ in r.chance(20) ? r.int(1000...5000) : r.int(1...80) }
        let rooms = (0..<r.int(1...8)).map { _ in r.chance(20) ? r.int(1000...5000) : r.int(minimumRoom...80) }
        return (chunks, rooms)
    }
}

@Suite("DATA codecs copy runs whole with the byte-at-a-time output (RFC 5321 §4.5.2, §4.5.3.1.6, §4.1.1.4)")
struct DataCodecEquivalenceTests {
    @Test("The encoder equals the byte-wise encoder on random text, splits and output rooms")
    func encoderRandom() {
        var r = EquivalenceRandom(1)
        for round in 0..<1500 {
            let text = equivalenceText(&r, maxLength: r.chance(10) ? 9000 : 700)
            let (chunks, rooms) = equivalenceSplits(&r, minimumRoom: 4)
            if !encodersAgree(text, chunks: chunks, rooms: rooms) {
                Issue.record("round \(round): chunks \(chunks) rooms \(rooms) text \(text)")
                return
            }
        }
    }

    @Test("Lines of 997, 998, 999 and 2000 octets, dot-led or not: every output room 4…70, CRLF split across calls")
    func encoderLongLines() {
        for length in [997, 998, 999, 2000] {
            for dot in [false, true] {
                var line = [UInt8](repeating: UInt8(ascii: "x"), count: length)
                if dot { line[0] = ASCII.dot }
                let text = line + [ASCII.cr, ASCII.lf] + line + [ASCII.cr] + line + [ASCII.lf] + line
                for room in 4...70 {
                    for chunk in [1, 2, 997, 998, 999, length + 1, Int.max / 2] {
                        #expect(encodersAgree(text, chunks: [chunk], rooms: [room]), "length \(length) room \(room) chunk \(chunk)")
                    }
                }
            }
        }
    }

    @Test("The encoder equals the byte-wise encoder for every split of CRLF and CR CR LF around a period")
    func encoderLineEndSplits() {
        let text = Array("ab\r\n.c\r\r\n.\r\n\r\n..\rx\n.y\r".utf8)
        for first in 1...text.count {
            for room in 4...9 {
                #expect(encodersAgree(text, chunks: [first, 1, 2, 3], rooms: [room, room + 1]))
            }
        }
    }

    @Test("The decoder equals the byte-wise decoder on random text, splits and output rooms")
    func decoderRandom() {
        var r = EquivalenceRandom(2)
        for round in 0..<1500 {
            let text = equivalenceText(&r, maxLength: r.chance(10) ? 9000 : 700)
            let (chunks, rooms) = equivalenceSplits(&r, minimumRoom: 3)
            if !decodersAgree(text, chunks: chunks, rooms: rooms) {
                Issue.record("round \(round): chunks \(chunks) rooms \(rooms) text \(text)")
                return
            }
        }
    }

    @Test("The decoder equals the byte-wise one on every split of the smuggling cases (RFC 5321 §4.1.1.4)", arguments: [
        "a\r\n.\r\nMAIL", "a\n.\r\nb\r\n.\r\n", "a\r\n.\nb\r.\r\n\r\n.\r\n", "a\r\n..\r\n.\r\n",
        "a\r\n.\rx\r\n.\r\n", ".\r\n", "..\r\n\r\n.\r\n", "long line without end",
    ])
    func decoderSmuggling(text: String) {
        let bytes = Array(text.utf8)
        for first in 1...bytes.count {
            for room in 3...9 {
                #expect(decodersAgree(bytes, chunks: [first, 1, 2], rooms: [room, room + 2]))
            }
        }
    }

    @Test("The line-end scan finds the first CR or LF at every offset and alignment")
    func lineEndScan() {
        var r = EquivalenceRandom(3)
        let bytes = (0..<96).map { _ in UInt8(r.int(0x0E...0xFF)) }
        bytes.withUnsafeBytes { all in
            for start in 0..<16 {
                for count in 0...64 {
                    #expect(DataDecoder.lineEndOffset(all.baseAddress! + start, count) == count)
                }
            }
        }
        for end in [ASCII.cr, ASCII.lf] {
            for at in 0..<64 {
                for before in [0x00, 0x0C, 0x0B, 0x0E, 0x80, 0x8D, 0x8A, 0xFF] as [UInt8] {
                    var b = bytes
                    if at > 0 { b[at - 1] = before }
                    b[at] = end
                    b[at + 1] = end == ASCII.cr ? ASCII.lf : ASCII.cr
                    b.withUnsafeBytes { all in
                        for start in 0...min(at, 15) {
                            #expect(DataDecoder.lineEndOffset(all.baseAddress! + start, 80) == at - start)
                            #expect(DataDecoder.lineEndOffset(all.baseAddress! + start, at - start) == at - start)
                        }
                    }
                }
            }
        }
    }
}
