/// The envelope at the head of a file in the drop directory, where `postern
/// sendmail` stores a message when the daemon does not answer (issue 9 item 2).
///
/// A drop file is:
///
///     POSTERN-DROP 1 LF
///     F <sender> LF              the reverse-path, "<>" for the null sender
///     R <recipient> LF           one line per recipient, 1 … maxRecipients
///     LF                         the end of the envelope
///     message text               CRLF line ends, not dot-stuffed, headers complete
///
/// Addresses are written without angle brackets (an empty F line is the null
/// sender). The file's owner, not anything in it, says who submitted it.
///
/// The daemon's pickup reads files any local user can write, so `parse` trusts
/// nothing: every line is bounded, every address goes through `Mailbox.parse`,
/// and a file that does not match exactly is refused with a sentence naming the
/// line.
public enum DropEnvelope {
    public static let magic = Array("POSTERN-DROP 1".utf8)
    /// Recipients per file (`postern sendmail -t` bounds what it extracts the same way).
    public static let maxRecipients = 10_000
    /// The envelope's bytes at most: the magic, the sender and every recipient
    /// line (RFC 5321 §4.5.3.1.3: a path is at most 256 octets).
    public static let maxLength = magic.count + 1 + (2 + Mailbox.maxPath + 1) * (maxRecipients + 1) + 1

    public struct Parsed: Equatable, Sendable {
        public var sender: Mailbox
        public var recipients: [Mailbox]
        /// Octets of the envelope, its closing empty line included: the text starts here.
        public var length: Int
    }

    public enum Outcome: Equatable, Sendable {
        /// The envelope is complete.
        case envelope(Parsed)
        /// No empty line yet within the bytes given (and fewer than `maxLength` of them).
        case needMore
        case invalid(Problem)
    }

    public static func encode(sender: Mailbox, recipients: [Mailbox]) -> [UInt8] {
        var out = magic
        out.append(ASCII.lf)
        out += [70, ASCII.space] + sender.bytes   // "F "
        out.append(ASCII.lf)
        for r in recipients {
            out += [82, ASCII.space] + r.bytes    // "R "
            out.append(ASCII.lf)
        }
        out.append(ASCII.lf)
        return out
    }

    /// Parses the envelope at the start of `bytes` (which may hold more of the file).
    public static func parse(_ bytes: ArraySlice<UInt8>) -> Outcome {
        var sender: Mailbox? = nil
        var recipients: [Mailbox] = []
        var lineNumber = 0
        var start = bytes.startIndex
        while start < bytes.endIndex {
            guard let lf = bytes[start...].firstIndex(of: ASCII.lf) else { break }
            lineNumber += 1
            let line = bytes[start..<lf]
            start = lf + 1
            if lineNumber == 1 {
                guard line.elementsEqual(magic) else {
                    return .invalid("line 1 is not '\(ASCII.string(magic[...]))': not a drop file of this version")
                }
                continue
            }
            if line.isEmpty {
                guard let s = sender else { return .invalid("line \(lineNumber): the envelope has no sender line") }
                guard !recipients.isEmpty else { return .invalid("line \(lineNumber): the envelope has no recipient") }
                return .envelope(Parsed(sender: s, recipients: recipients, length: start - bytes.startIndex))
            }
            guard line.count >= 2, line[line.startIndex + 1] == ASCII.space else {
                return .invalid("line \(lineNumber): expected 'F address' or 'R address'")
            }
            let kind = line[line.startIndex]
            let address = line.dropFirst(2)
            if kind == 70 /* F */ {
                guard sender == nil, recipients.isEmpty else { return .invalid("line \(lineNumber): a second or late sender line") }
                guard let m = Mailbox.parse(address, allowNull: true) else {
                    return .invalid("line \(lineNumber): bad sender address '\(ASCII.printable(address, limit: 300))'")
                }
                sender = m
            } else if kind == 82 /* R */ {
                guard sender != nil else { return .invalid("line \(lineNumber): a recipient before the sender") }
                guard recipients.count < maxRecipients else {
                    return .invalid("line \(lineNumber): more than \(maxRecipients) recipients")
                }
                guard let m = Mailbox.parse(address, allowNull: false) else {
                    return .invalid("line \(lineNumber): bad recipient address '\(ASCII.printable(address, limit: 300))'")
                }
                recipients.append(m)
            } else {
                return .invalid("line \(lineNumber): expected 'F address' or 'R address'")
            }
        }
        if bytes.count >= maxLength { return .invalid("the envelope is longer than \(maxLength) bytes") }
        return .needMore
    }
}
