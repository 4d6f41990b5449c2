/// The command line of `postern sendmail` (and of the same binary called as
/// `sendmail`, `mailq` or `newaliases`), parsed into a value: what to do, the
/// envelope options and the recipients named on it.
///
/// The model is Postfix's sendmail(1), which programs on a board already call
/// (cron, mail(1), smartd, mdadm, apcupsd, unattended-upgrades):
///
/// - Options are read as Postfix reads them, with getopt(3) in POSIX mode (its
///   option string `A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx`, plus
///   Sendmail's `d:`): the first word that is not an option, `-` alone, or the
///   word after `--` ends the options, and every later word is a recipient,
///   even one that begins with "-". Flags may be bundled (`-ti`), and an option
///   that takes a value takes the rest of its word or else the next word,
///   whatever that word looks like (`-tif addr`, `-f -x`: the sender is "-x").
/// - `-q` alone is a word of its own (getopt cannot express an optional value):
///   flush the queue. `-qVALUE` flushes too: an interval (`-q30m`), a site
///   (`-qRexample.com`, `-qSexample.com`) or a queue ID (`-qIID`); Postern has one
///   queue and flushes all of it.
/// - Options that set something Postern has no use for are accepted and ignored
///   as Postfix ignores them, with their value where they take one: `-A`, `-G`,
///   `-U`, `-c`, `-m`, `-n`, `-x`, `-L`, `-N`, `-O`, `-R`, `-V`, `-X`, `-e`,
///   `-h`, `-p`, `-d`, and every `-o` but `-oi` (`-oem`, `-odi`, `-oQ/dir`,
///   `-o7`, …). `-B` must say `7BIT` or `8BITMIME` (RFC 6152), as in Postfix
///   (here in any case).
///   `-n` is accepted as Postfix's manual says (its code refuses it; in
///   Sendmail it only turns off aliasing).
/// - What Postern cannot do is refused: `-bd`, `-bl` (run as a daemon: that is
///   `postern run`), `-bv` (verify recipients), `-q` with a letter other than
///   R, S or I.
/// - Anything else is a usage error: a `Problem` that names the option.
///
/// Checks after the options, as Postfix makes them: `-t` only when delivering,
/// and no recipients in a mode that takes none (`-bp`, `-q`, `-bs`, `-bi`).
/// Delivering with neither recipients nor `-t` is an error too: there is no one
/// to deliver to.
///
/// Pure: no syscalls. Words may be any text (argv is bytes; the caller makes
/// them `String`s, a malformed sequence becoming U+FFFD), and nothing in them
/// traps. Recipients and values are kept as given: qualifying, parsing and
/// checking addresses is the caller's business.
public struct SendmailArguments: Equatable, Sendable {
    public enum Mode: Equatable, Sendable {
        /// `-bm` (the default): read a message on standard input and submit it.
        case deliver
        /// `-bs`: an SMTP session on standard input and output.
        case smtpSession
        /// `-bp`, or called as `mailq`: list the queue.
        case listQueue
        /// `-q…`: retry every deferred message now.
        case flushQueue
        /// `-bi`, `-I`, or called as `newaliases`: Postern's aliases live in its
        /// configuration, so there is nothing to rebuild (exit 0).
        case initAliases
        /// `-bh`, `-bH`: Postern keeps no host status, like Postfix: nothing to
        /// do (exit 0).
        case hostStatus
    }

    /// `-B`: the body type the program declared (RFC 6152).
    public enum BodyType: Equatable, Sendable {
        case sevenBit
        case eightBitMIME
    }

    public var mode: Mode = .deliver
    /// Words after the options, as given (any number; may begin with "-").
    public var recipients: [String] = []
    /// `-t`: also take recipients from To:, Cc:, Bcc: (or the Resent- ones).
    /// Recipients on the command line are added to them (Postfix 2.1 and later).
    public var extractRecipients = false
    /// False with `-i` or `-oi`: a line with a single "." is not the end of input.
    public var dotEndsInput = true
    /// `-f` or `-r` (the last one given), without one enclosing pair of angle
    /// brackets; "" for the null sender (`-f ''`, `-f '<>'`).
    public var sender: String? = nil
    /// `-F`: the sender's full name, for a From: that has to be added.
    public var fullName: String? = nil
    /// `-B`, when given.
    public var bodyType: BodyType? = nil
    /// How many times `-v` was given.
    public var verbose = 0
    /// `-C`: the configuration file.
    public var configFile: String? = nil

    public init() {}

    /// Parses `args` (argv without argv[0]). `programName` is argv[0]: its last
    /// path component `mailq` or `newaliases` chooses the default mode, as in
    /// Postfix; options still override it.
    public static func parse(_ args: [String], programName: String = "sendmail") -> Result<SendmailArguments, Problem> {
        var result = SendmailArguments()
        switch baseName(programName) {
        case "mailq": result.mode = .listQueue
        case "newaliases": result.mode = .initAliases
        default: break
        }
        var k = 0
        options: while k < args.count {
            let word = Array(args[k].utf8)
            if word == doubleDash {
                k += 1
                break options
            }
            // POSIX getopt: a word that does not begin with "-", or is "-"
            // alone, ends the options.
            guard word.count >= 2, word[0] == dash else { break options }
            k += 1
            if word == flushWord {
                result.mode = .flushQueue
                continue
            }
            var j = 1
            while j < word.count {
                let letter = word[j]
                j += 1
                if flagLetters.contains(letter) {
                    result.apply(flag: letter)
                    continue
                }
                guard valueLetters.contains(letter) else {
                    return .failure(Problem("unknown option -" + shown(word, at: j - 1) + inWord(word, at: j - 1)))
                }
                // The rest of the word, or else the next word.
                let value: [UInt8]
                if j < word.count {
                    value = Array(word[j...])
                } else {
                    guard k < args.count else {
                        return .failure(Problem("option -" + shown(word, at: j - 1) + " needs a value"))
                    }
                    value = Array(args[k].utf8)
                    k += 1
                }
                if let problem = result.apply(letter, value) { return .failure(problem) }
                continue options
            }
        }
        if k < args.count { result.recipients = Array(args[k...]) }
        return result.checked()
    }

    // MARK: options

    private static let dash: UInt8 = 45
    private static let doubleDash: [UInt8] = [45, 45]
    private static let flushWord: [UInt8] = [45, 113] // "-q"
    /// Options without a value: G I U c i m n t v x.
    private static let flagLetters: [UInt8] = Array("GIUcimntvx".utf8)
    /// Options with a value: Postfix's A B C F L N O R V X b e f h o p r q, and
    /// Sendmail's d (debug flags).
    private static let valueLetters: [UInt8] = Array("ABCFLNORVXbdefhopqr".utf8)

    private mutating func apply(flag: UInt8) {
        switch flag {
        case 73 /* I */: mode = .initAliases
        case 105 /* i */: dotEndsInput = false
        case 116 /* t */: extractRecipients = true
        case 118 /* v */: if verbose < Int.max { verbose += 1 }
        default: break // G U c m n x: nothing Postern does differently
        }
    }

    /// Applies an option with its value; a problem when the value is wrong.
    private mutating func apply(_ letter: UInt8, _ value: [UInt8]) -> Problem? {
        switch letter {
        case 66 /* B */:
            // RFC 6152 §2: BODY=7BIT or BODY=8BITMIME.
            if ASCII.equalsIgnoringCase(value, Array("8BITMIME".utf8)) {
                bodyType = .eightBitMIME
            } else if ASCII.equalsIgnoringCase(value, Array("7BIT".utf8)) {
                bodyType = .sevenBit
            } else {
                return Problem("option -B needs 8BITMIME or 7BIT, not \"" + ASCII.printable(value) + "\"")
            }
        case 67 /* C */: configFile = Self.text(value)
        case 70 /* F */: fullName = Self.text(value)
        case 102 /* f */, 114 /* r */: sender = Self.text(Self.withoutAngleBrackets(value))
        case 98 /* b */:
            // Postfix looks at the first letter only.
            switch value.first {
            case 109 /* m */: mode = .deliver
            case 115 /* s */: mode = .smtpSession
            case 112 /* p */: mode = .listQueue
            case 105 /* i */: mode = .initAliases
            case 104 /* h */, 72 /* H */: mode = .hostStatus
            case 100 /* d */, 108 /* l */:
                return Problem("option -b" + Self.shown(value, at: 0)
                               + " (run as a daemon) is not supported: the daemon is `postern run`, started by systemd")
            default:
                return Problem("option -b" + (value.isEmpty ? "" : Self.shown(value, at: 0)) + " is not supported")
            }
        case 111 /* o */:
            switch value.first {
            case 105 /* i */: dotEndsInput = false
            case 65 /* A */ where value.count == 1:
                return Problem("option -oA needs a path name")
            default: break // -oem, -odi, -oQ…, -o7, -o8, -om, -oA…: ignored, as in Postfix
            }
        case 113 /* q */:
            // -qTIME (an interval), -qRsite, -qSsite, -qIid: Postern flushes
            // its one queue whatever follows.
            switch value.first {
            case .some(let c) where ASCII.isDigit(c): mode = .flushQueue
            case 82 /* R */, 83 /* S */, 73 /* I */: mode = .flushQueue
            default:
                return Problem("option -q" + (value.isEmpty ? "" : Self.shown(value, at: 0)) + " is not supported")
            }
        default:
            break // A L N O R V X d e h p: accepted and ignored, as in Postfix
        }
        return nil
    }

    /// The checks Postfix makes once the options are read.
    private func checked() -> Result<SendmailArguments, Problem> {
        if extractRecipients && mode != .deliver {
            return .failure(Problem("option -t can be used only when delivering mail (-bm)"))
        }
        if mode != .deliver && !recipients.isEmpty {
            return .failure(Problem(Self.modeName(mode) + " takes no recipients, but got \""
                                    + ASCII.printable(recipients[0].utf8) + "\""))
        }
        if mode == .deliver && recipients.isEmpty && !extractRecipients {
            return .failure(Problem("no recipients: name them after the options, or use -t to take them from the message's To:, Cc: and Bcc:"))
        }
        return .success(self)
    }

    private static func modeName(_ mode: Mode) -> String {
        switch mode {
        case .deliver: return "delivering mail (-bm)"
        case .smtpSession: return "an SMTP session (-bs)"
        case .listQueue: return "listing the queue (-bp, mailq)"
        case .flushQueue: return "flushing the queue (-q)"
        case .initAliases: return "initialising aliases (-bi, newaliases)"
        case .hostStatus: return "host status (-bh, -bH)"
        }
    }

    // MARK: helpers

    /// `<a@b>` is `a@b`, `<>` is the null sender; anything else as given.
    static func withoutAngleBrackets(_ value: [UInt8]) -> [UInt8] {
        let v = ASCII.trimmed(value[...])
        guard v.count >= 2, v.first == ASCII.lessThan, v.last == ASCII.greaterThan else { return value }
        return Array(v.dropFirst().dropLast())
    }

    /// The character of `word` that begins at `index`, made printable, for a
    /// message naming an option. Option letters are ASCII; an unknown one may be
    /// the first byte of a UTF-8 sequence, shown whole.
    static func shown(_ word: [UInt8], at index: Int) -> String {
        guard index >= 0 && index < word.count else { return "" }
        let end = min(word.count, index + scalarLength(word[index]))
        return ASCII.printable(String(decoding: word[index..<end], as: UTF8.self).utf8, limit: 8)
    }

    /// Octets of the UTF-8 sequence that `lead` begins.
    private static func scalarLength(_ lead: UInt8) -> Int {
        lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
    }

    /// " in \"-tzi\"" when the option at `index` was bundled with others.
    private static func inWord(_ word: [UInt8], at index: Int) -> String {
        index >= 0 && index < word.count && word.count > 1 + scalarLength(word[index])
            ? " in \"" + ASCII.printable(word) + "\"" : ""
    }

    /// A value as text (the bytes came from a `String`, so nothing is lost).
    private static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    private static func baseName(_ path: String) -> String {
        let bytes = Array(path.utf8)
        guard let slash = bytes.lastIndex(of: 47) else { return path }
        return String(decoding: bytes[(slash + 1)...], as: UTF8.self)
    }
}
