/// Encodes a spooled message for the wire after the upstream's `354`: dot-stuffs
/// every line that begins with a period and appends the end-of-data marker.
///
/// Spooled text always has CRLF line endings (see `DataDecoder`), so only the
/// period rule is needed here.
///
/// - SeeAlso: RFC 5321 §4.5.2 (transparency) and §4.1.1.4 (the CRLF before the
///   final "." belongs to the message; a message not ending in CRLF gets one).
public struct DataEncoder: Sendable {
    private var atLineStart = true
    private var previousWasCR = false

    public init() {}

    public struct Step: Equatable, Sendable {
        public var consumed: Int
        public var produced: Int
    }

    /// Encodes as much of `input` as fits in `output` (worst case two output bytes
    /// per input byte).
    public mutating func encode(_ input: UnsafeRawBufferPointer,
                                into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        while i < n && cap - o >= 2 {
            let b = input[i]
            if atLineStart && b == ASCII.dot {
                output[o] = ASCII.dot
                o += 1
            }
            output[o] = b
            o += 1
            atLineStart = previousWasCR && b == ASCII.lf
            previousWasCR = b == ASCII.cr
            i += 1
        }
        return Step(consumed: i, produced: o)
    }

    /// The bytes that end the data: a CRLF if the text did not end with one, then
    /// ".CRLF". At most five bytes.
    public func terminator() -> [UInt8] {
        atLineStart ? [ASCII.dot, ASCII.cr, ASCII.lf] : [ASCII.cr, ASCII.lf, ASCII.dot, ASCII.cr, ASCII.lf]
    }
}
