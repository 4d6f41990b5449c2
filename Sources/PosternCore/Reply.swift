/// An SMTP reply: a three-digit code, an optional enhanced status code and one or
/// more lines of text.
///
/// - SeeAlso: RFC 5321 §4.2 (reply syntax, multi-line replies) and RFC 3463 /
///   RFC 2034 (enhanced status codes, `class.subject.detail`, on every line).
public struct Reply: Equatable, Sendable, CustomStringConvertible {
    public var code: Int
    /// The enhanced status code as text ("2.0.0"), or nil for replies that carry
    /// none (the greeting, EHLO/HELO and 354, RFC 2034 §3).
    public var enhanced: String?
    public var lines: [String]

    public init(_ code: Int, _ enhanced: String?, _ lines: [String]) {
        self.code = code
        self.enhanced = enhanced
        self.lines = lines.isEmpty ? [""] : lines
    }

    public init(_ code: Int, _ enhanced: String?, _ text: String) {
        self.init(code, enhanced, [text])
    }

    public var isPositive: Bool { code >= 200 && code < 400 }
    public var isTransient: Bool { code >= 400 && code < 500 }
    public var isPermanent: Bool { code >= 500 }

    /// The reply as it goes on the wire.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for (i, line) in lines.enumerated() {
            appendCode(&out)
            out.append(i == lines.count - 1 ? ASCII.space : 45 /* - */)
            if let e = enhanced {
                out.appendUTF8(e)
                if !line.isEmpty { out.append(ASCII.space) }
            }
            out.appendUTF8(line)
            out.append(ASCII.cr)
            out.append(ASCII.lf)
        }
        return out
    }

    private func appendCode(_ out: inout [UInt8]) {
        out.append(UInt8(48 + (code / 100) % 10))
        out.append(UInt8(48 + (code / 10) % 10))
        out.append(UInt8(48 + code % 10))
    }

    /// One line for logs: "550 5.7.1 text", with continuation lines joined.
    public var description: String {
        var s = "\(code)"
        if let e = enhanced { s += " " + e }
        let text = lines.filter { !$0.isEmpty }
        for (i, l) in text.enumerated() { s += (i == 0 ? " " : " / ") + l }
        return s
    }
}

/// Collects the lines of one reply from an upstream.
///
/// Only the last line ("250 ...") completes a reply; every line must carry the same
/// code (RFC 5321 §4.2.1). At most `maxLines` lines of text are kept so a chatty
/// peer cannot grow memory; the rest still count toward completing the reply.
public struct ReplyParser: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case malformed(String)
    }

    public var maxLines = 40
    private var code: Int? = nil
    private var lines: [String] = []
    /// The enhanced code of the reply being read (from its first line).
    private var enhanced: String? = nil

    public init() {}

    /// Feeds one line (without its line ending). Returns a reply once its last line
    /// arrives, nil while more lines are expected.
    public mutating func feed(_ line: ArraySlice<UInt8>) -> Result<Reply?, Failure> {
        guard line.count >= 3,
              let c = ASCII.parseDecimal(line.prefix(3)), c >= 200, c <= 599 else {
            return .failure(.malformed(ASCII.printable(line)))
        }
        if let expected = code, expected != c {
            return .failure(.malformed(ASCII.printable(line)))
        }
        var more = false
        var text = line.dropFirst(3)
        if let sep = text.first {
            if sep == 45 /* - */ { more = true } else if sep != ASCII.space {
                return .failure(.malformed(ASCII.printable(line)))
            }
            text = text.dropFirst()
        }
        code = c
        if lines.count < maxLines {
            let printable = ASCII.printable(text, limit: 512)
            // The first line says whether the reply has an enhanced code.
            if lines.isEmpty { enhanced = Self.enhancedCode(in: printable) }
            lines.append(Self.withoutCode(printable, enhanced))
        }
        if more { return .success(nil) }
        let reply = Reply(c, enhanced, lines)
        code = nil
        enhanced = nil
        lines = []
        return .success(reply)
    }

    /// A line's text without the enhanced code it starts with, so that
    /// `description` does not repeat it.
    static func withoutCode(_ line: String, _ enhanced: String?) -> String {
        guard let e = enhanced, line.utf8.starts(with: e.utf8) else { return line }
        return String(decoding: line.utf8.dropFirst(e.utf8.count).drop { $0 == ASCII.space }, as: UTF8.self)
    }

    /// The enhanced status code at the start of a line's text, if any (RFC 3463 §2:
    /// class "." subject "." detail, each 1–3 digits).
    static func enhancedCode(in text: String) -> String? {
        let bytes = Array(text.utf8)
        var parts = 0
        var digits = 0
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if ASCII.isDigit(b) {
                digits += 1
                if digits > 3 { return nil }
            } else if b == ASCII.dot && digits > 0 && parts < 2 {
                parts += 1
                digits = 0
            } else {
                break
            }
            i += 1
        }
        guard parts == 2, digits > 0, i == bytes.count || bytes[i] == ASCII.space,
              bytes[0] == 50 || bytes[0] == 52 || bytes[0] == 53 else { return nil }
        return String(decoding: bytes[0..<i], as: UTF8.self)
    }
}
