/// Decodes the message text a client sends in BDAT chunks (RFC 3030 §2) into
/// the form the spool keeps: the same as `DataDecoder` produces from DATA.
///
/// BDAT carries the text as it is, without dot-stuffing or an end marker, so
/// the only work is the line endings. We do not offer BINARYMIME, so the text
/// is lines (RFC 3030 §3: with 7BIT or 8BITMIME "the message … MUST be
/// structured as lines"); as for DATA (`DataDecoder`), a bare CR or LF is
/// stored as CRLF, so no upstream can read a line end differently from us.
/// A CR at the end of one chunk and an LF at the start of the next are one
/// CRLF: the state carries over. At the end of the last chunk, `finish` ends
/// an unfinished last line with CRLF (the text goes out with DATA, whose end
/// marker must follow a CRLF, RFC 5321 §4.1.1.4).
public struct ChunkDecoder: Sendable {
    /// The last byte taken was a CR whose line end is not written yet.
    var sawCR = false
    /// The text written so far ends with a line end (or is empty).
    var atLineStart = true

    public init() {}

    public struct Step: Equatable, Sendable {
        public var consumed: Int
        public var produced: Int
    }

    /// Decodes as much of `input` as fits in `output` (two bytes of room per
    /// input byte in the worst case, a bare LF becoming CRLF).
    public mutating func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0, o = 0
        let n = input.count, cap = output.count
        while i < n && cap - o >= 2 {
            let b = input[i]
            if sawCR {
                // CRLF, or a bare CR: either way one line end; a byte other
                // than LF is then taken at the next turn.
                sawCR = false
                output[o] = ASCII.cr
                output[o + 1] = ASCII.lf
                o += 2
                atLineStart = true
                if b == ASCII.lf { i += 1 }
                continue
            }
            if b == ASCII.cr {
                sawCR = true
                i += 1
            } else if b == ASCII.lf {
                output[o] = ASCII.cr
                output[o + 1] = ASCII.lf
                o += 2
                i += 1
                atLineStart = true
            } else {
                output[o] = b
                o += 1
                i += 1
                atLineStart = false
            }
        }
        return Step(consumed: i, produced: o)
    }

    /// After the last chunk: the line end of a CR left pending, or CRLF after
    /// an unfinished last line. Needs 2 bytes of room; returns the bytes written.
    public mutating func finish(into output: UnsafeMutableRawBufferPointer) -> Int {
        guard output.count >= 2, sawCR || !atLineStart else { return 0 }
        output[0] = ASCII.cr
        output[1] = ASCII.lf
        sawCR = false
        atLineStart = true
        return 2
    }
}
