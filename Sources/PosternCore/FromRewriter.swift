/// Rewrites the `From:` field of a message on its way to a smarthost that
/// accepts only its own account as sender (Gmail, Microsoft 365, Amazon SES:
/// `[upstream] rewrite_from = yes`), keeping the original author reachable as
/// `Reply-To:`.
///
/// Input is the spooled text (CRLF line ends, not dot-stuffed); the output goes
/// on to `DataEncoder`. It streams: the text comes in chunks of any size and
/// goes out through an output buffer of any size, and the output does not
/// depend on where either is cut.
///
/// What it does, in the header section only (up to the first empty line,
/// RFC 5322 §2.1; the body streams through untouched):
/// - every `From:` field (the name compared case-insensitively, with the
///   obsolete blanks before the colon, §4.5; with its continuation lines,
///   §2.2.3) is taken out of the stream;
/// - at the end of the header section — before the empty line, at the end of
///   the text when there is none, at the start when the text begins with the
///   empty line — `From:` with the new address is written, and `Reply-To:`
///   with the original author when the header has no `Reply-To:` of its own
///   (`FromFields`). Moving From: to the end is what makes this
///   streamable, and it changes nothing: the order of fields carries no
///   meaning (RFC 5322 §3.6);
/// - every other octet passes through unchanged, 8-bit ones included.
///
/// Only CRLF ends a line (RFC 5322 §2.1): a bare CR or LF is an ordinary octet
/// of its line, which is how `DataEncoder` after this sees it too.
///
/// Memory is fixed, whatever the size of the message or its lines, and is
/// reserved once in `init` (`reset()` reuses it for the next message):
/// `maxFieldName` (64) octets for the start of the field being classified,
/// `maxFromValue` (4096) octets of the first From: field's value (a longer one
/// is still taken out, but only this much of it is used), and `maxGenerated`
/// (10,240) for the fields written at the end of the header: 14,400 octets,
/// plus a few dozen of flags and counters.
///
/// Progress: a call to `rewrite` with input left and at least one octet of
/// output room always consumes or produces at least one octet; a call to
/// `finish` with at least one octet of room produces at least one or says it
/// is done. Any output room works; bigger is faster.
public struct FromRewriter: Sendable {
    /// Octets of the first From: value kept to find the display name and address.
    public static let maxFromValue = 4096
    /// Octets of a field's start held until its name is known. A name plus
    /// blanks before the colon longer than this is passed through as another
    /// field.
    public static let maxFieldName = 64
    /// Octets of the generated fields at most (see `FromFields`).
    public static let maxGenerated = 10 * 1024

    public struct Step: Equatable, Sendable {
        public var consumed: Int
        public var produced: Int
    }

    public struct Ending: Equatable, Sendable {
        public var produced: Int
        /// Every octet is out; further calls produce nothing.
        public var done: Bool
    }

    private enum State: Equatable, Sendable {
        /// Header, at the start of a line.
        case lineStart
        /// Header, a CR at the start of a line, held until the next octet says
        /// whether this is the empty line that ends the header.
        case lineStartCR
        /// Header, collecting the start of a field in `name` until it is known
        /// to be From:, Reply-To: or another field.
        case fieldName
        /// Writing `name` out, then `otherField`.
        case writingName
        /// Header, passing a field (or its continuation line) through.
        case otherField
        /// Header, taking a From: field out of the stream.
        case fromField
        /// Writing `generated` out, then the body, or the end.
        case writingGenerated(thenBody: Bool)
        case body
        case done
    }

    private let sender: Mailbox
    private let qualifyDomain: [UInt8]
    private var state = State.lineStart
    private var name: [UInt8] = []
    private var nameWritten = 0
    /// The first From: field's value, unfolded (the CRLF of each continuation removed).
    private var from: [UInt8] = []
    private var fromSeen = false
    private var fromTruncated = false
    /// The From: field being taken out is the first one: its value goes to `from`.
    private var capturing = false
    /// A CR in a From: field, held until the next octet says whether it ends the line.
    private var fromPendingCR = false
    /// The last octet passed through in `otherField` was a CR.
    private var previousWasCR = false
    /// The field whose line just ended was a From: field (a continuation belongs to it).
    private var lastFieldWasFrom = false
    private var replyToSeen = false
    /// `finish` was called: `writingName` leads to the generated fields.
    private var finishing = false
    private var generated: [UInt8] = []
    private var generatedWritten = 0

    /// - Parameters:
    ///   - sender: the address the smarthost accepts (`[upstream] envelope_from`).
    ///   - qualifyDomain: the board's host name, added to an address without a
    ///     domain (`From: root`) for the display name and Reply-To. If it is not
    ///     a domain (RFC 5321 §4.1.2), "localhost" is used.
    public init(sender: Mailbox, qualifyDomain: String) {
        self.sender = sender
        let d = Array(qualifyDomain.utf8)
        self.qualifyDomain = Mailbox.isDomain(d[...]) ? d : Array("localhost".utf8)
        name.reserveCapacity(Self.maxFieldName)
        from.reserveCapacity(Self.maxFromValue)
        generated.reserveCapacity(Self.maxGenerated)
    }

    /// Ready for the next message, keeping the memory.
    public mutating func reset() {
        state = .lineStart
        name.removeAll(keepingCapacity: true)
        nameWritten = 0
        from.removeAll(keepingCapacity: true)
        fromSeen = false
        fromTruncated = false
        capturing = false
        fromPendingCR = false
        previousWasCR = false
        lastFieldWasFrom = false
        replyToSeen = false
        finishing = false
        generated.removeAll(keepingCapacity: true)
        generatedWritten = 0
    }

    /// Octets held now (for tests and the fuzz target: never above the bounds).
    var heldOctets: (name: Int, from: Int, generated: Int) { (name.count, from.count, generated.count) }
    /// Octets reserved (for tests and the fuzz target: never grows after `init`).
    var reservedOctets: Int { name.capacity + from.capacity + generated.capacity }

    /// Rewrites as much of `input` as fits in `output`.
    public mutating func rewrite(_ input: UnsafeRawBufferPointer,
                                 into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0
        var o = 0
        let n = input.count
        let cap = output.count
        loop: while true {
            switch state {
            case .done:
                break loop
            case .body:
                let k = min(n - i, cap - o)
                if k > 0, let src = input.baseAddress, let dst = output.baseAddress {
                    (dst + o).copyMemory(from: src + i, byteCount: k)
                    i += k
                    o += k
                }
                break loop
            case .writingName:
                while nameWritten < name.count && o < cap {
                    output[o] = name[nameWritten]
                    o += 1
                    nameWritten += 1
                }
                guard nameWritten == name.count else { break loop }
                previousWasCR = name.last == ASCII.cr
                name.removeAll(keepingCapacity: true)
                nameWritten = 0
                state = finishing ? .writingGenerated(thenBody: false) : .otherField
            case .writingGenerated(let thenBody):
                while generatedWritten < generated.count && o < cap {
                    output[o] = generated[generatedWritten]
                    o += 1
                    generatedWritten += 1
                }
                guard generatedWritten == generated.count else { break loop }
                generated.removeAll(keepingCapacity: true)
                generatedWritten = 0
                state = thenBody ? .body : .done
            case .otherField:
                // Pass the line through up to and including its CRLF.
                while i < n && o < cap {
                    let b = input[i]
                    output[o] = b
                    i += 1
                    o += 1
                    if previousWasCR && b == ASCII.lf {
                        previousWasCR = false
                        lastFieldWasFrom = false
                        state = .lineStart
                        continue loop
                    }
                    previousWasCR = b == ASCII.cr
                }
                break loop
            case .fromField:
                while i < n {
                    let b = input[i]
                    i += 1
                    if fromPendingCR {
                        fromPendingCR = false
                        if b == ASCII.lf {
                            lastFieldWasFrom = true
                            state = .lineStart
                            continue loop
                        }
                        keepFromOctet(ASCII.cr)
                    }
                    if b == ASCII.cr { fromPendingCR = true } else { keepFromOctet(b) }
                }
                break loop
            case .lineStart:
                guard i < n else { break loop }
                let b = input[i]
                if ASCII.isSpace(b) {
                    // A continuation line (RFC 5322 §2.2.3) belongs to the field before it.
                    if lastFieldWasFrom {
                        state = .fromField
                    } else {
                        previousWasCR = false
                        state = .otherField
                    }
                } else if b == ASCII.cr {
                    i += 1
                    state = .lineStartCR
                } else {
                    lastFieldWasFrom = false
                    state = .fieldName
                }
            case .lineStartCR:
                guard i < n else { break loop }
                if input[i] == ASCII.lf {
                    // The empty line: the header ends here (RFC 5322 §2.1). The
                    // new fields go before it, then the empty line itself.
                    i += 1
                    compose(leadingCRLF: false)
                    generated.append(ASCII.cr)
                    generated.append(ASCII.lf)
                    state = .writingGenerated(thenBody: true)
                } else {
                    // A line that begins with a bare CR: not a field name we
                    // look for, so another field.
                    lastFieldWasFrom = false
                    name.append(ASCII.cr)
                    state = .writingName
                }
            case .fieldName:
                while i < n {
                    name.append(input[i])
                    i += 1
                    switch Self.classify(name) {
                    case .undecided:
                        if name.count >= Self.maxFieldName { state = .writingName; continue loop }
                    case .from:
                        // RFC 5322 §3.6.2 wants one From:; each one is taken out,
                        // the first one's value is kept.
                        name.removeAll(keepingCapacity: true)
                        capturing = !fromSeen
                        fromSeen = true
                        fromPendingCR = false
                        state = .fromField
                        continue loop
                    case .replyTo:
                        replyToSeen = true
                        state = .writingName
                        continue loop
                    case .other:
                        state = .writingName
                        continue loop
                    }
                }
                break loop
            }
        }
        return Step(consumed: i, produced: o)
    }

    /// The end of the input: writes what is held and the new fields if the
    /// header did not end yet. Call until `done`.
    public mutating func finish(into output: UnsafeMutableRawBufferPointer) -> Ending {
        if !finishing {
            finishing = true
            switch state {
            case .lineStart, .fromField:
                // The output is at the start of a line (a From: field taken out
                // began at one), so the fields follow directly.
                compose(leadingCRLF: false)
                state = .writingGenerated(thenBody: false)
            case .lineStartCR:
                // The held CR is a line of its own; the fields go before it.
                compose(leadingCRLF: false)
                generated.append(ASCII.cr)
                state = .writingGenerated(thenBody: false)
            case .fieldName, .writingName:
                // The held start of the last line goes out first, then a CRLF
                // ends that line (`writingName` leads to `generated`).
                compose(leadingCRLF: !name.isEmpty)
                state = name.isEmpty ? .writingGenerated(thenBody: false) : .writingName
            case .otherField:
                compose(leadingCRLF: true)
                state = .writingGenerated(thenBody: false)
            case .writingGenerated:
                state = .writingGenerated(thenBody: false)
            case .body, .done:
                state = .done
            }
        }
        let step = rewrite(UnsafeRawBufferPointer(start: nil, count: 0), into: output)
        return Ending(produced: step.produced, done: state == .done)
    }

    private mutating func keepFromOctet(_ b: UInt8) {
        guard capturing else { return }
        if from.count < Self.maxFromValue { from.append(b) } else { fromTruncated = true }
    }

    private mutating func compose(leadingCRLF: Bool) {
        generated.removeAll(keepingCapacity: true)
        generatedWritten = 0
        if leadingCRLF {
            generated.append(ASCII.cr)
            generated.append(ASCII.lf)
        }
        FromFields.append(original: fromSeen ? from : nil, truncated: fromTruncated,
                                hasReplyTo: replyToSeen, sender: sender, qualifyDomain: qualifyDomain,
                                to: &generated)
    }

    enum FieldKind: Equatable { case undecided, from, replyTo, other }

    private static let fromName: [UInt8] = Array("from".utf8)
    private static let replyToName: [UInt8] = Array("reply-to".utf8)

    /// What a field is, from its first octets: "From" or "Reply-To" (any
    /// case), blanks (obs-optional, RFC 5322 §4.5), then the colon.
    static func classify(_ start: [UInt8]) -> FieldKind {
        switch match(start, fromName) {
        case .whole: return .from
        case .prefix: return .undecided
        case .no: break
        }
        switch match(start, replyToName) {
        case .whole: return .replyTo
        case .prefix: return .undecided
        case .no: return .other
        }
    }

    private enum Match { case no, prefix, whole }

    /// Whether `s` is `fieldName` (lower case), blanks and a colon, or could
    /// still become that.
    private static func match(_ s: [UInt8], _ fieldName: [UInt8]) -> Match {
        var i = 0
        while i < s.count && i < fieldName.count {
            if ASCII.lower(s[i]) != fieldName[i] { return .no }
            i += 1
        }
        if i < fieldName.count { return .prefix }
        while i < s.count {
            if s[i] == ASCII.colon { return i == s.count - 1 ? .whole : .no }
            if !ASCII.isSpace(s[i]) { return .no }
            i += 1
        }
        return .prefix
    }
}
