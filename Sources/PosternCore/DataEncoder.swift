/// Encodes a spooled message for the wire after the upstream's `354`: dot-stuffs
/// every line that begins with a period, breaks over-long lines, and appends the
/// end-of-data marker.
///
/// Spooled text always has CRLF line endings (see `DataDecoder`), so only the
/// period rule and the length rule are needed here.
///
/// - SeeAlso: RFC 5321 §4.5.2 (transparency), §4.1.1.4 (the CRLF before the final
///   "." belongs to the message; a message not ending in CRLF gets one) and
///   §4.5.3.1.6 (a text line is at most 1000 octets with its CRLF). Postern
///   receives longer lines without complaint, but many upstreams refuse them with
///   a 5xx, which would lose the alert; like Postfix's smtp_line_length_limit, a
///   line reaching 998 octets is broken by inserting CRLF and a space, which
///   keeps header lines valid as folded continuations.
public struct DataEncoder: Sendable {
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
    ///
    /// Byte by byte, this is the rule: before a byte other than CR or LF on a
    /// line of 998 octets, CRLF and a space; a period that starts a line is
    /// doubled; a line starts after CRLF (a bare CR starts none, and a bare LF
    /// counts as an octet of the line); one byte is taken only while four bytes
    /// of output are free. Inside a line most bytes need none of it, so a run of
    /// bytes that are not CR or LF, up to the 998th octet and within that output
    /// room, is found a word at a time (`DataDecoder.lineEndOffset`), the usual
    /// line end (CRLF and a byte that is not a period) is one step, and a span
    /// of such runs and line ends is copied at once; every other byte takes the
    /// byte-by-byte rule. The output is the same as the rule's for any input,
    /// any split into calls and any output size (DataCodecEquivalenceTests,
    /// fuzz target `data_encode`).
    public mutating func encode(_ input: UnsafeRawBufferPointer,
                                into output: UnsafeMutableRawBufferPointer) -> Step {
        guard let source = input.baseAddress, let target = output.baseAddress else {
            return Step(consumed: 0, produced: 0)
        }
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        while i < n && cap - o >= 4 {
            if !previousWasCR && lineLength > 0 {
                // Inside a line and below its limit, ordinary bytes go through
                // as they are. The byte-by-byte loop would take the k-th byte of
                // a run only with cap - (o + k) >= 4 and lineLength + k < 998.
                // After the run, the usual end of a line: CRLF, then a byte that
                // starts the next one and is neither a period nor a line end.
                // Byte by byte that is three steps (each needing four bytes of
                // room, so six in all) that copy the three bytes and leave a
                // line of one octet; CR and LF are never broken before, whatever
                // the length. Output equals input over such a span of runs and
                // line ends, so it is scanned first and copied once.
                let spanStart = i
                let spanOutput = o
                var progressed = true
                while progressed && i < n && cap - o >= 4 {
                    progressed = false
                    if lineLength < Self.maxLineOctets {
                        let limit = min(n - i, Self.maxLineOctets - lineLength, cap - o - 3)
                        let run = DataDecoder.lineEndOffset(source + i, limit)
                        i += run
                        o += run
                        lineLength += run
                        progressed = run > 0
                    }
                    if n - i >= 3 && cap - o >= 6 && input[i] == ASCII.cr && input[i + 1] == ASCII.lf {
                        let c = input[i + 2]
                        if c != ASCII.dot && c != ASCII.cr && c != ASCII.lf {
                            i += 3
                            o += 3
                            lineLength = 1
                            progressed = true
                        }
                    }
                }
                (target + spanOutput).copyMemory(from: source + spanStart, byteCount: i - spanStart)
                if progressed { continue }
            }
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
