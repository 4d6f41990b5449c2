import Testing
@testable import PosternCore

/// What a connection sees from its framer, with the line's text.
enum FramerEvent: Equatable, CustomStringConvertible {
    case line(String)
    case tooLong
    case bareLineEnding

    var description: String {
        switch self {
        case .line(let s): return "line(\(s.debugDescription))"
        case .tooLong: return "tooLong"
        case .bareLineEnding: return "bareLineEnding"
        }
    }
}

/// A connection in miniature: a growing input buffer from which the framer's
/// consumed bytes are dropped, as the runtime does with its fixed buffer.
struct FramerHarness {
    var framer: LineFramer
    var buffer: [UInt8] = []
    var events: [FramerEvent] = []
    /// The most bytes the buffer ever held after a feed.
    var maxBuffered = 0

    init(maxLineLength: Int = 512, strict: Bool = true) {
        framer = LineFramer(maxLineLength: maxLineLength, strict: strict)
    }

    mutating func feed(_ bytes: [UInt8]) {
        buffer += bytes
        maxBuffered = max(maxBuffered, buffer.count)
        var guardCount = 0
        while true {
            guardCount += 1
            if guardCount > 100_000 { Issue.record("framer made no progress"); return }
            var f = framer
            let (frame, consumed) = buffer.withUnsafeBytes { f.next(in: $0) }
            framer = f
            #expect(consumed >= 0 && consumed <= buffer.count)
            switch frame {
            case .line(let r): events.append(.line(String(decoding: buffer[r], as: UTF8.self)))
            case .tooLong: events.append(.tooLong)
            case .bareLineEnding: events.append(.bareLineEnding)
            case .needMore: break
            }
            buffer.removeFirst(consumed)
            if frame == .needMore { return }
        }
    }

    mutating func feed(_ text: String) { feed(Array(text.utf8)) }
}

/// One call of `next(in:)` on `text`.
func frameOnce(_ text: String, maxLineLength: Int = 512, strict: Bool = true) -> (LineFramer.Frame, Int) {
    var framer = LineFramer(maxLineLength: maxLineLength, strict: strict)
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { framer.next(in: $0) }
}

@Suite("Command line framing (RFC 5321 §2.3.8)")
struct LineFramerBasicTests {
    @Test("A CRLF-terminated line is framed without its line ending")
    func singleLine() {
        let (frame, consumed) = frameOnce("NOOP\r\n")
        #expect(frame == .line(0..<4))
        #expect(consumed == 6)
    }

    @Test("An empty line is a line")
    func emptyLine() {
        let (frame, consumed) = frameOnce("\r\n")
        #expect(frame == .line(0..<0))
        #expect(consumed == 2)
    }

    @Test("Without a line feed the framer needs more and consumes nothing")
    func needMore() {
        #expect(frameOnce("MAIL FROM:<a@b>") == (.needMore, 0))
        #expect(frameOnce("MAIL FROM:<a@b>\r") == (.needMore, 0))
        #expect(frameOnce("") == (.needMore, 0))
    }

    @Test("Several lines in one buffer come out one at a time, in order")
    func severalLines() {
        var h = FramerHarness()
        h.feed("EHLO client\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        #expect(h.events == [.line("EHLO client"), .line("MAIL FROM:<a@b>"), .line("RCPT TO:<c@d>"), .line("DATA")])
        #expect(h.buffer.isEmpty)
    }

    @Test("A partial line stays in the buffer until its CRLF arrives")
    func partialLineKept() {
        var h = FramerHarness()
        h.feed("NOOP\r\nQU")
        #expect(h.events == [.line("NOOP")])
        #expect(h.buffer == Array("QU".utf8))
        h.feed("IT\r\n")
        #expect(h.events == [.line("NOOP"), .line("QUIT")])
        #expect(h.buffer.isEmpty)
    }

    static let script = "EHLO client.example\r\nMAIL FROM:<a@b.example> SIZE=10\r\n\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n"

    @Test("A line split at every byte boundary frames the same way", arguments: 0...script.utf8.count)
    func splitAnywhere(at split: Int) {
        let bytes = Array(Self.script.utf8)
        var h = FramerHarness()
        h.feed(Array(bytes[..<split]))
        h.feed(Array(bytes[split...]))
        #expect(h.events == [.line("EHLO client.example"), .line("MAIL FROM:<a@b.example> SIZE=10"), .line(""),
                             .line("RCPT TO:<c@d.example>"), .line("QUIT")])
        #expect(h.buffer.isEmpty)
    }

    @Test("Lines fed one byte at a time frame the same way")
    func oneByteAtATime() {
        var h = FramerHarness()
        for b in Self.script.utf8 { h.feed([b]) }
        #expect(h.events == [.line("EHLO client.example"), .line("MAIL FROM:<a@b.example> SIZE=10"), .line(""),
                             .line("RCPT TO:<c@d.example>"), .line("QUIT")])
    }
}

@Suite("Command line length limit (RFC 5321 §4.5.3.1.4)")
struct LineFramerLimitTests {
    /// A line of `total` octets including its CRLF.
    static func line(total: Int) -> String { String(repeating: "x", count: total - 2) + "\r\n" }

    @Test("A line of exactly 512 octets including CRLF is accepted")
    func exactlyAtLimit() {
        let (frame, consumed) = frameOnce(Self.line(total: 512))
        #expect(frame == .line(0..<510))
        #expect(consumed == 512)
    }

    @Test("Lines of 513 octets or more are too long", arguments: [513, 514, 600, 4096])
    func overLimitInOneBuffer(total: Int) {
        let (frame, consumed) = frameOnce(Self.line(total: total))
        #expect(frame == .tooLong)
        #expect(consumed == total)
    }

    @Test("Lines around the limit, framed through a connection", arguments: [509, 510, 511, 512, 513, 514])
    func aroundLimitStreamed(total: Int) {
        var h = FramerHarness()
        for chunk in chunks(Array(Self.line(total: total).utf8), size: 100) { h.feed(chunk) }
        h.feed("NOOP\r\n")
        let expected: [FramerEvent] = total <= 512 ? [.line(String(repeating: "x", count: total - 2))] : [.tooLong]
        #expect(h.events == expected + [.line("NOOP")])
    }

    @Test("An over-long line is reported once and its remainder skipped without being buffered")
    func overLongStreamedReportedOnce() {
        var h = FramerHarness()
        let long = [UInt8](repeating: 65, count: 100_000)
        for chunk in chunks(long, size: 1000) { h.feed(chunk) }
        #expect(h.events.isEmpty, "nothing is reported before the line ends")
        #expect(h.framer.discarding)
        // Memory stays bounded: never more than the limit plus one read.
        #expect(h.maxBuffered <= 512 + 1000)
        #expect(h.buffer.count < 512)
        h.feed("\r\nNOOP\r\n")
        #expect(h.events == [.tooLong, .line("NOOP")])
        #expect(!h.framer.discarding)
        #expect(h.buffer.isEmpty)
    }

    @Test("An over-long line fed one byte at a time holds at most the limit")
    func overLongByteAtATime() {
        var h = FramerHarness()
        for _ in 0..<2000 { h.feed([0x61]) }
        #expect(h.maxBuffered <= 512)
        h.feed("\r\n")
        h.feed("QUIT\r\n")
        #expect(h.events == [.tooLong, .line("QUIT")])
    }

    @Test("The line after an over-long one that arrives in the same read is framed")
    func lineAfterOverLongSameBuffer() {
        var h = FramerHarness()
        h.feed(Self.line(total: 700) + "RSET\r\n")
        #expect(h.events == [.tooLong, .line("RSET")])
    }

    @Test("A custom limit is honoured")
    func customLimit() {
        #expect(frameOnce("abcd\r\n", maxLineLength: 6).0 == .line(0..<4))
        #expect(frameOnce("abcde\r\n", maxLineLength: 6).0 == .tooLong)
    }

    @Test("reset() forgets a partly skipped line")
    func reset() {
        var h = FramerHarness()
        h.feed([UInt8](repeating: 0x61, count: 600))
        #expect(h.framer.discarding)
        h.framer.reset()
        #expect(!h.framer.discarding)
        h.feed("NOOP\r\n")
        #expect(h.events == [.line("NOOP")])
    }
}

@Suite("Bare CR and LF in commands (RFC 5321 §2.3.8)")
struct LineFramerBareLineEndingTests {
    @Test("Strict framing refuses a line holding a bare LF, up to its CRLF",
          arguments: ["NOOP\nQUIT\r\n", "\n\r\n", "NOOP\n\r\n", "\nNOOP\r\n"])
    func bareLF(text: String) {
        let (frame, consumed) = frameOnce(text)
        #expect(frame == .bareLineEnding)
        #expect(consumed == text.utf8.count)
    }

    @Test("A bare LF is not a line end: without CRLF the framer waits")
    func bareLFIsNotALineEnd() {
        #expect(frameOnce("NOOP\n") == (.needMore, 0))
        #expect(frameOnce("NOOP\nQUIT") == (.needMore, 0))
    }

    @Test("Strict framing refuses a bare CR inside a line",
          arguments: ["NO\rOP\r\n", "\rNOOP\r\n", "NOOP\r\r\n"])
    func bareCR(text: String) {
        let (frame, consumed) = frameOnce(text)
        #expect(frame == .bareLineEnding)
        #expect(consumed == text.utf8.count)
    }

    static let smuggling = ["MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\nNOOP\r\n", "MAIL FROM:<a@b>\rRCPT TO:<c@d>\r\nNOOP\r\n"]

    @Test("A bare CR or LF never splits one line into two commands; the next CRLF line is framed",
          arguments: smuggling)
    func neverSplits(text: String) {
        var h = FramerHarness()
        h.feed(text)
        #expect(h.events == [.bareLineEnding, .line("NOOP")])
        #expect(h.buffer.isEmpty)
    }

    @Test("The same holds when the input is split at every byte boundary", arguments: smuggling)
    func neverSplitsAnySplit(text: String) {
        let bytes = Array(text.utf8)
        for split in 0...bytes.count {
            var h = FramerHarness()
            h.feed(Array(bytes[..<split]))
            h.feed(Array(bytes[split...]))
            #expect(h.events == [.bareLineEnding, .line("NOOP")], "split at \(split)")
        }
    }

    @Test("A CR split from its LF across reads is not bare")
    func crlfAcrossReads() {
        var h = FramerHarness()
        h.feed("NOOP\r")
        #expect(h.events.isEmpty)
        h.feed("\nQUIT\r")
        h.feed("\n")
        #expect(h.events == [.line("NOOP"), .line("QUIT")])
    }

    @Test("An over-long line whose CR and LF arrive in different reads is reported once")
    func overLongCRLFAcrossReads() {
        var h = FramerHarness()
        h.feed([UInt8](repeating: 0x78, count: 700) + [13])
        h.feed("\nNOOP\r\n")
        #expect(h.events == [.tooLong, .line("NOOP")])
    }

    @Test("Lenient framing (upstream replies) accepts a bare LF as a line end")
    func lenientBareLF() {
        var h = FramerHarness(strict: false)
        h.feed("250-first\n250-second\r\n250 last\n")
        #expect(h.events == [.line("250-first"), .line("250-second"), .line("250 last")])
    }

    @Test("Lenient framing keeps a CR inside a line as text")
    func lenientCRInside() {
        let (frame, consumed) = frameOnce("250 a\rb\r\n", strict: false)
        #expect(frame == .line(0..<7))
        #expect(consumed == 9)
    }

    @Test("Lenient framing still enforces the length limit")
    func lenientLimit() {
        #expect(frameOnce(String(repeating: "2", count: 600) + "\n", strict: false).0 == .tooLong)
    }
}

/// `bytes` in pieces of at most `size`.
func chunks(_ bytes: [UInt8], size: Int) -> [[UInt8]] {
    stride(from: 0, to: bytes.count, by: size).map { Array(bytes[$0..<min($0 + size, bytes.count)]) }
}
