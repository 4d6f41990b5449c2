/// Splits an SMTP byte stream into command (or reply) lines.
///
/// The framer holds no bytes: the connection keeps its fixed input buffer and asks
/// the framer where the next line ends. A line longer than the limit is reported
/// once as `.tooLong` and the rest of it, up to its CRLF, is skipped without
/// being buffered — so a peer cannot grow memory by never sending CRLF.
///
/// - SeeAlso: RFC 5321 §2.3.8 (lines end in CRLF; a bare CR or LF must not be
///   taken as a line end) and §4.5.3.1.4 (command lines are at most 512 octets
///   including the CRLF).
public struct LineFramer: Sendable {
    public enum Frame: Equatable, Sendable {
        /// A whole line; the range excludes the line ending.
        case line(Range<Int>)
        /// No complete line yet; keep the bytes and read more.
        case needMore
        /// The line exceeds the limit; the bytes seen so far were consumed.
        case tooLong
        /// The line holds a CR or LF that is not part of a CRLF (strict mode only).
        case bareLineEnding
    }

    /// Longest line accepted, in octets including CRLF.
    public let maxLineLength: Int
    /// Strict framing (receiver side) refuses bare CR and LF; lenient framing
    /// (reading an upstream's replies) accepts a lone LF as a line end.
    public let strict: Bool
    /// True while skipping the remainder of an over-long line.
    public private(set) var discarding = false

    public init(maxLineLength: Int = 512, strict: Bool = true) {
        self.maxLineLength = maxLineLength
        self.strict = strict
    }

    /// Finds the next frame in `bytes` (the unconsumed input). Returns the frame and
    /// how many bytes the caller must drop from the front of its buffer.
    public mutating func next(in bytes: UnsafeRawBufferPointer) -> (frame: Frame, consumed: Int) {
        strict ? nextStrict(bytes) : nextLenient(bytes)
    }

    /// Only CRLF ends a line. A bare LF or CR inside it makes the whole line, up
    /// to its CRLF, one `.bareLineEnding`: it must never split one command into
    /// two (RFC 5321 §2.3.8).
    mutating func nextStrict(_ bytes: UnsafeRawBufferPointer) -> (frame: Frame, consumed: Int) {
        let n = bytes.count
        var bare = false
        var i = 0
        while i < n {
            let b = bytes[i]
            if b == ASCII.lf {
                if i > 0 && bytes[i - 1] == ASCII.cr { break }
                bare = true
            } else if b == ASCII.cr && i + 1 < n && bytes[i + 1] != ASCII.lf {
                bare = true
            }
            i += 1
        }
        if i == n {
            // No CRLF yet. Past the limit the line can never be accepted: drop what
            // we have, except a final CR that may begin the CRLF.
            if discarding || n >= maxLineLength {
                discarding = true
                let keep = n > 0 && bytes[n - 1] == ASCII.cr ? 1 : 0
                return (.needMore, n - keep)
            }
            return (.needMore, 0)
        }
        if discarding {
            discarding = false
            return (.tooLong, i + 1)
        }
        if i + 1 > maxLineLength { return (.tooLong, i + 1) }
        if bare { return (.bareLineEnding, i + 1) }
        return (.line(0..<(i - 1)), i + 1)
    }

    /// A line feed ends a line, with or without a CR before it (for reading an
    /// upstream's replies).
    mutating func nextLenient(_ bytes: UnsafeRawBufferPointer) -> (frame: Frame, consumed: Int) {
        let n = bytes.count
        var i = 0
        while i < n && bytes[i] != ASCII.lf { i += 1 }
        if i == n {
            if discarding || n >= maxLineLength {
                discarding = true
                return (.needMore, n)
            }
            return (.needMore, 0)
        }
        if discarding {
            discarding = false
            return (.tooLong, i + 1)
        }
        if i + 1 > maxLineLength { return (.tooLong, i + 1) }
        let end = i > 0 && bytes[i - 1] == ASCII.cr ? i - 1 : i
        return (.line(0..<end), i + 1)
    }

    /// Forgets a partly skipped line (after the connection's mode changes).
    public mutating func reset() { discarding = false }
}
