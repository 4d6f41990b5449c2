/// A command line from the configuration split into an argv, without a shell: the
/// quoting of sh(1) (POSIX.1-2017 XCU §2.2) and nothing else. No variable,
/// command or tilde expansion, no globbing, no pipes or redirections: `$`, `*`,
/// `|`, `;`, `>` are ordinary characters. A command that needs a shell says so:
/// `sh -c 'pass show mail | head -n 1'`.
///
/// - Words are separated by runs of spaces and tabs; leading and trailing ones are
///   ignored. Every other byte (UTF-8 included) belongs to a word.
/// - `'…'` keeps everything up to the next `'` literally (XCU §2.2.2).
/// - `"…"` keeps everything literally except `\"`, `\\`, `` \` `` and `\$`, which
///   stand for the second character; any other backslash is kept (XCU §2.2.3).
/// - Outside quotes a backslash keeps the next character literally (XCU §2.2.1).
/// - Quoted and unquoted parts next to each other form one word: `a"b c"d` is
///   `ab cd`; `''` and `""` are an empty word.
/// - An unterminated quote, a backslash at the very end, and a NUL byte (it cannot
///   be passed to a program) are errors, each with the 1-based byte column.
///
/// Pure: no syscalls; `quoted` gives a line that splits back to the same words.
public enum CommandLineWords {
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// A `'` or `"` opened at this column is never closed.
        case unterminatedQuote(quote: UInt8, column: Int)
        /// The line ends with a backslash that escapes nothing.
        case trailingBackslash(column: Int)
        /// A NUL byte at this column.
        case nulByte(column: Int)

        public var description: String {
            switch self {
            case .unterminatedQuote(let q, let column):
                let name = q == ASCII.quote ? "double" : "single"
                return "the \(name) quote at column \(column) is not closed"
            case .trailingBackslash(let column):
                return "the backslash at column \(column) ends the line and escapes nothing"
            case .nulByte(let column):
                return "a NUL byte at column \(column)"
            }
        }
    }

    static let singleQuote: UInt8 = 39
    static let backquote: UInt8 = 96
    static let dollar: UInt8 = 36

    public static func split(_ line: String) -> Result<[String], Failure> {
        split(bytes: Array(line.utf8))
    }

    /// The same on raw bytes (the words are made valid UTF-8: a malformed
    /// sequence becomes U+FFFD, as `String(decoding:)` does).
    public static func split<C: Collection>(bytes line: C) -> Result<[String], Failure> where C.Element == UInt8 {
        var words: [String] = []
        var word: [UInt8] = []
        var inWord = false            // a quote makes a word even when it is empty
        var quote: UInt8 = 0          // 0, or the quote that is open
        var quoteColumn = 0
        var escaped = false           // the previous byte was an active backslash
        var column = 0
        for b in line {
            column += 1
            if b == 0 { return .failure(.nulByte(column: column)) }
            if escaped {
                escaped = false
                if quote == ASCII.quote && !(b == ASCII.quote || b == ASCII.backslash || b == backquote || b == dollar) {
                    word.append(ASCII.backslash)   // XCU §2.2.3: kept before any other character
                }
                word.append(b)
                inWord = true
                continue
            }
            switch quote {
            case singleQuote:
                if b == singleQuote { quote = 0 } else { word.append(b) }
            case ASCII.quote:
                if b == ASCII.quote {
                    quote = 0
                } else if b == ASCII.backslash {
                    escaped = true
                } else {
                    word.append(b)
                }
            default:
                if ASCII.isSpace(b) {
                    if inWord {
                        words.append(String(decoding: word, as: UTF8.self))
                        word.removeAll(keepingCapacity: true)
                        inWord = false
                    }
                } else if b == singleQuote || b == ASCII.quote {
                    quote = b
                    quoteColumn = column
                    inWord = true
                } else if b == ASCII.backslash {
                    escaped = true
                    inWord = true
                } else {
                    word.append(b)
                    inWord = true
                }
            }
        }
        if quote != 0 { return .failure(.unterminatedQuote(quote: quote, column: quoteColumn)) }
        if escaped { return .failure(.trailingBackslash(column: column)) }
        if inWord { words.append(String(decoding: word, as: UTF8.self)) }
        return .success(words)
    }

    /// One word as the splitter reads it back: unchanged when it has only
    /// characters that need no quoting, else in single quotes (a `'` inside as `'\''`).
    public static func quoted(_ word: String) -> String {
        let plain = !word.isEmpty && word.utf8.allSatisfy { b in
            ASCII.isAlpha(b) || ASCII.isDigit(b) || b >= 128
                || b == 45 || b == 95 || b == 46 || b == 47 || b == 58 || b == 61 || b == 64 || b == 43 || b == 44
        }
        if plain { return word }
        var out: [UInt8] = [singleQuote]
        for b in word.utf8 {
            if b == singleQuote { out += [singleQuote, ASCII.backslash, singleQuote, singleQuote] } else { out.append(b) }
        }
        out.append(singleQuote)
        return String(decoding: out, as: UTF8.self)
    }

    /// Words joined into a line that `split` turns back into them (for logs).
    public static func quoted(_ words: [String]) -> String {
        var out = ""
        for (i, w) in words.enumerated() {
            if i > 0 { out += " " }
            out += quoted(w)
        }
        return out
    }
}
