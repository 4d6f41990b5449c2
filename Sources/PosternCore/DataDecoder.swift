/// Decodes the text a client sends after `354`: removes dot-stuffing, finds the
/// end-of-data marker, and normalises line endings.
///
/// The decoder is a byte-at-a-time state machine with no buffer of its own, so a
/// message of any size and a line of any length stream through in fixed memory.
/// Inside a line it takes the run up to the next CR or LF whole (the bytes the
/// machine would copy one by one), and the usual line end (CRLF and a byte that
/// is not a period) in one step, and copies a span of such runs and line ends,
/// which goes through unchanged, at once; every call consumes and produces
/// exactly what the byte-at-a-time machine does (DataCodecEquivalenceTests,
/// fuzz target `data_encode`).
///
/// - Only `CRLF.CRLF` ends the data (RFC 5321 §4.1.1.4). A `.` line after a bare LF
///   or bare CR is content, not the end — the "SMTP smuggling" defence of
///   DESIGN.md principle 7.
/// - Dot-stuffing is undone at the start of every line (RFC 5321 §4.5.2).
/// - A bare CR or LF is stored as CRLF. RFC 5321 §2.3.8 forbids them on the wire
///   and RFC 6152 forbids them in 8BITMIME content; storing them normalised means
///   the sender can never forward a line ending that an upstream might read
///   differently from us. Alert senders on small devices often use bare LF, and
///   like Postfix for its own networks we accept rather than refuse them.
public struct DataDecoder: Sendable {
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
        guard let source = input.baseAddress, let target = output.baseAddress else {
            return Step(consumed: 0, produced: 0, ended: isEnded)
        }
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        while i < n {
            // A pattern, not `==`: the size-optimised build calls the derived
            // `==` of this enum with payloads once per line (0.7% of a 5 MB
            // relay's samples).
            if case .ended = state { break }
            if cap - o < 3 { break }
            let b = input[i]
            switch state {
            case .middle:
                // Fast path: a span of text that goes through unchanged. Each
                // step of it is a run of ordinary bytes (`lineEndOffset`), at
                // most `cap - o - 2` of them (the room the byte-at-a-time loop
                // this replaced stopped at), and then the usual end of a line:
                // CRLF and a byte that starts the next one and is neither a
                // period nor a line end. Byte by byte that line end is three
                // steps (sawCR, lineStart, middle again) needing three bytes of
                // room at the first two and at the third after the CRLF was
                // written: five in all. Output equals input over the span, so
                // it is scanned first and copied once: one copy per span, not
                // one per line (a 5 MB message of 76-octet lines has 67,000).
                let spanStart = i
                let spanOutput = o
                var progressed = true
                while progressed && i < n && cap - o >= 3 {
                    progressed = false
                    let c0 = input[i]
                    if c0 != ASCII.cr && c0 != ASCII.lf {
                        let run = Self.lineEndOffset(source + i, min(n - i, cap - o - 2))
                        i += run
                        o += run
                        progressed = true
                    }
                    if n - i >= 3 && cap - o >= 5 && input[i] == ASCII.cr && input[i + 1] == ASCII.lf {
                        let c = input[i + 2]
                        if c != ASCII.dot && c != ASCII.cr && c != ASCII.lf {
                            i += 3
                            o += 3
                            progressed = true
                        }
                    }
                }
                (target + spanOutput).copyMemory(from: source + spanStart, byteCount: i - spanStart)
                // The last step took nothing: the byte at `i` is a CR or LF
                // that is not the usual line end (or lacks the room for it).
                if progressed { continue }
                if input[i] == ASCII.cr { state = .sawCR } else { o = newline(output, o, crlf: false) }
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

    /// The offset of the first CR or LF in the `count` bytes at `base`, or
    /// `count` when there is none: the end of the run of ordinary bytes both
    /// codecs copy whole. A machine word at a time: a byte of `x ^ 0x0D0D…` is
    /// zero where `x` has a CR, and the lowest byte flagged by the classic
    /// zero-byte test `(v - 0x0101…) & ~v & 0x8080…` is exactly the first zero
    /// byte (a borrow only ever flags bytes above it), so the lowest flag of
    /// the CR and LF tests together is the first line end. Words are read
    /// little-endian, so the lowest flag is the earliest byte.
    ///
    /// Where every CPU of the architecture has 16-byte vectors (SSE2 on
    /// x86_64, NEON on aarch64), blocks of 16 bytes without a line end are
    /// passed over first, two compares each, and the first block with one
    /// gives its exact place from the compares' mask; the word loop then
    /// takes only the last 15 bytes or fewer. This more than halves the
    /// codecs' time on long lines. Not on armv7: Debian's armhf baseline has
    /// no NEON, and the vector would be split into 16 byte compares.
    @inline(__always)
    static func lineEndOffset(_ base: UnsafeRawPointer, _ count: Int) -> Int {
        let ones = UInt(truncatingIfNeeded: 0x0101_0101_0101_0101 as UInt64)
        let highs = ones &* 0x80
        let crs = ones &* UInt(ASCII.cr)
        let lfs = ones &* UInt(ASCII.lf)
        let width = MemoryLayout<UInt>.size
        var j = 0
        #if arch(x86_64) || arch(arm64)
        let crVector = SIMD16<UInt8>(repeating: ASCII.cr)
        let lfVector = SIMD16<UInt8>(repeating: ASCII.lf)
        while count - j >= 16 {
            let v = base.loadUnaligned(fromByteOffset: j, as: SIMD16<UInt8>.self)
            // The mask's 16 lanes read as two words: nonzero where a lane
            // matched. (`any(_:)` would reduce the lanes through a generic
            // `min()` the size-optimised build does not inline.)
            // A matching lane is all ones, and the words are little-endian:
            // the lowest set bit is the first line end.
            let lanes = unsafeBitCast((v .== crVector) .| (v .== lfVector), to: (UInt64, UInt64).self)
            if lanes.0 != 0 { return j + lanes.0.trailingZeroBitCount / 8 }
            if lanes.1 != 0 { return j + 8 + lanes.1.trailingZeroBitCount / 8 }
            j += 16
        }
        #endif
        while count - j >= width {
            let x = UInt(littleEndian: base.loadUnaligned(fromByteOffset: j, as: UInt.self))
            let a = x ^ crs
            let b = x ^ lfs
            let flags = ((a &- ones) & ~a | (b &- ones) & ~b) & highs
            if flags != 0 { return j + flags.trailingZeroBitCount / 8 }
            j += width
        }
        while j < count {
            let c = base.load(fromByteOffset: j, as: UInt8.self)
            if c == ASCII.cr || c == ASCII.lf { return j }
            j += 1
        }
        return count
    }

    @inline(__always)
    private mutating func newline(_ output: UnsafeMutableRawBufferPointer, _ o: Int, crlf: Bool) -> Int {
        output[o] = ASCII.cr
        output[o + 1] = ASCII.lf
        state = .lineStart(afterCRLF: crlf)
        return o + 2
    }
}
