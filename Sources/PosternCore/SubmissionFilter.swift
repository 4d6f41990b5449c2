/// Turns what a program writes on sendmail's standard input into the text of a
/// message for submission: for `postern sendmail`, which sends it to the local
/// receiver as SMTP DATA, or stores it in the drop directory when the daemon
/// does not answer.
///
/// It streams like `FromRewriter`: the input comes in chunks of any size cut
/// anywhere, the output goes through a buffer of any size, and the result does
/// not depend on where either is cut. The model, where this says nothing, is
/// what Postfix's sendmail(1) and cleanup(8) do with the same input.
///
/// Lines. A line ends at LF, at CRLF, and at a bare CR; a run of CRs counts as
/// one line end with the LF after it if there is one (`a\r\r\n` is one line, as
/// Postfix's `sendmail_fix_line_endings = always` strips every CR before the
/// LF). Each line end becomes CRLF (RFC 5322 §2.1, RFC 5321 §2.3.8), so the
/// output has no bare CR or LF. Postfix keeps a bare CR inside a line as data;
/// Postern does not, because its receiver stores a bare CR as a line end
/// (`DataDecoder`): were a bare CR data here, `To: a@b\rBcc: c@d` would be one
/// To: field to this filter and a To: and a Bcc: to the receiver, and the Bcc
/// would escape its removal. A last line without a line end gets one, so the
/// text always ends with CRLF (what SMTP DATA needs before its final dot,
/// RFC 5321 §4.1.1.4).
///
/// What happens to the text:
/// - Leading mbox separator lines are dropped: every line before the first
///   other line that starts with "From " after any number of ">" (Postfix's
///   rule; `>From ` is how UUCP forwarded them).
/// - With `dotEndsInput` (sendmail without `-i`/`-oi`), a line that is exactly
///   "." ends the input: it and everything after it are dropped, and
///   `inputEnded` tells the caller to stop reading. A "." alone on the last
///   line, without a line end, counts too. Without `dotEndsInput` it is text.
/// - With `dotStuffed` the output is SMTP DATA text: a line that starts with
///   "." gets another one (RFC 5321 §4.5.2); the caller writes the final
///   ".\r\n" itself. Without it the output is the plain text, for a file.
/// - The header section (RFC 5322 §2.1) is held until it is complete, in a
///   buffer of `maxHeaderSection` octets, before anything goes out: with
///   `extractRecipients` the recipients must be known before the text is sent.
///   It ends at the first empty line, or at the first line that is neither a
///   header field (a field name of printable ASCII but ":", blanks, ":",
///   §2.2, §3.6.8, obs-optional §4.5) nor a continuation of one (§2.2.3); an
///   empty line is then inserted before that line so it stays body.
/// - Date:, Message-ID: and From: (names in any case, §1.2.2) that are missing
///   are added at the end of the header section (§3.6 requires Date and From;
///   §3.6.4 says Message-ID SHOULD be present), with the values the caller
///   gives; an empty value adds nothing.
/// - With `extractRecipients` (`sendmail -t`), the addresses of every To:,
///   Cc: and Bcc: field (continuation lines included; lists, display names,
///   comments, quoted-strings and groups, §3.4, read by `HeaderAddressList`)
///   become `recipients`; when there is a Resent-To:, Resent-Cc: or
///   Resent-Bcc: field, those fields are read instead (§3.6.6), as Postfix
///   does. Bcc: and Resent-Bcc: fields are then removed from the text
///   (§3.6.3, the first of its three ways; Postfix removes them too). An
///   address without a domain (`To: root`) gets "@" and `localDomain`.
///   Duplicates (`Mailbox.canonical`) are kept once. An element that is not a
///   usable address is a `problem` naming the field and the text, never
///   silently dropped; more than `maxRecipients` is a problem too.
/// - Everything else passes through unchanged: 8-bit octets, NUL (the
///   receiver decides what it takes), long lines.
/// - After the header section the body streams through with only the line-end
///   conversion, the dot handling and the dot-stuffing.
///
/// A header section longer than `maxHeaderSection` (Postfix's
/// header_size_limit, 102,400): the complete lines that fit are the header
/// section, the added fields and an empty line follow, and the rest of the
/// input, from the line that did not fit on, streams as body. `headerTruncated`
/// says so. With `extractRecipients` the recipients come from the part that
/// was held, and a problem says that the rest was not read for them (it may
/// hold more To: or Bcc: fields, and a Bcc: there would now be body text):
/// Postfix's sendmail -t refuses such a message too.
///
/// The caller's loop: read a chunk, call `filter` until the chunk is consumed,
/// writing out what it produces; at the end of the input, `finish` until done.
/// Nothing is produced before `headerDone`; the call that completes the header
/// section returns at once, having produced nothing, so the caller can read
/// `recipients` and `problems` and send the envelope before any text. After
/// `inputEnded`, input is consumed and dropped.
///
/// Memory is fixed and reserved in `init`: `maxHeaderSection` + 2 octets for
/// the header section, the three added fields (each value cut at
/// `maxFieldValue` octets), 8 octets of output held back when the output room
/// runs out. When the header section is complete, `recipients` is filled —
/// at most `maxRecipients` mailboxes of at most 256 octets each, found with a
/// set of their canonical forms that is freed at once — and `problems`, at
/// most `maxProblems`. The body costs nothing.
///
/// Progress: a call to `filter` with input left and at least one octet of
/// output room consumes or produces at least one octet, or completes the
/// header (`headerDone` turns true); a call to `finish` with room produces at
/// least one octet, completes the header, or says it is done.
public struct SubmissionFilter: Sendable {
    /// Octets of header section held (Postfix's header_size_limit).
    public static let maxHeaderSection = 102_400
    /// Recipients taken from the header at most.
    public static let maxRecipients = 10_000
    /// Problems kept at most; the last one says when more were left out.
    public static let maxProblems = 20
    /// Octets of each added field's value at most.
    public static let maxFieldValue = 4096
    /// Octets of a full name that `fromValue` uses at most.
    public static let maxFullName = 256

    public struct Options: Sendable {
        /// `-t`: take recipients from the header and remove Bcc:.
        public var extractRecipients: Bool
        /// Without `-i`: a line with a single "." ends the input.
        public var dotEndsInput: Bool
        /// SMTP DATA text (dot-stuffed) rather than plain text.
        public var dotStuffed: Bool
        /// Added to header addresses without a domain.
        public var localDomain: [UInt8]
        /// The values of the fields added when missing, without the names;
        /// empty adds nothing. Control characters become spaces; long values
        /// are folded (RFC 5322 §2.2.3).
        public var date: [UInt8]
        public var messageID: [UInt8]
        public var from: [UInt8]

        public init(extractRecipients: Bool = false, dotEndsInput: Bool = true, dotStuffed: Bool = true,
                    localDomain: [UInt8], date: [UInt8], messageID: [UInt8], from: [UInt8]) {
            self.extractRecipients = extractRecipients
            self.dotEndsInput = dotEndsInput
            self.dotStuffed = dotStuffed
            self.localDomain = localDomain
            self.date = date
            self.messageID = messageID
            self.from = from
        }
    }

    /// The streaming contract of the header rewriters (`FromRewriter`).
    public typealias Step = FromRewriter.Step
    public typealias Ending = FromRewriter.Ending

    private enum Phase: Equatable, Sendable {
        /// Collecting the header section in `held`.
        case holding
        /// Writing `held[..<headerEnd]`, from the index.
        case writingHeader(Int)
        /// Writing `generated`, from the index.
        case writingGenerated(Int)
        /// Writing `held[headerEnd...]` (body text read with the header), from the index.
        case writingHeldBody(Int)
        /// Streaming the body from the input.
        case body
        case done
    }

    /// Where the body's current line is, for the lone-dot rule.
    private enum Line: Equatable, Sendable {
        case start
        /// The line so far is "." (with `dotEndsInput`), not written yet.
        case dot
        case middle
    }

    /// Why the header section ended.
    private enum HeaderEnd {
        /// The empty line: it is part of the text.
        case emptyLine
        /// A line that is no header line: it is in `held` after the header.
        case bodyLine
        /// `held` is full: the partial line after the header is body.
        case overflow
        /// The input ended (at its end or at the lone dot): no body.
        case endOfInput
    }

    private let options: Options
    /// `maxHeaderSection`, smaller in tests and the fuzz target (to reach the
    /// limit with short inputs).
    private let headerLimit: Int
    private let dateField: [UInt8]
    private let messageIDField: [UInt8]
    private let fromField: [UInt8]

    private var phase = Phase.holding
    /// The header section, CRLF line ends, then the line being read.
    private var held: [UInt8] = []
    /// Where the line being read starts in `held`.
    private var lineStart = 0
    /// The header's length in `held`, once it is complete.
    private var headerEnd = 0
    /// No line has been kept yet: mbox "From " lines are still dropped.
    private var skippingFromLines = true
    /// One or more CRs were read: a line end, with the LF if one follows.
    private var crRun = false
    private var line = Line.start
    /// Fields added at the end of the header section, and the empty line.
    private var generated: [UInt8] = []
    /// Output that did not fit in the caller's buffer (at most 4 octets).
    private var pending: [UInt8] = []
    private var pendingAt = 0
    /// The next output octet starts a line (for dot-stuffing).
    private var atOutputLineStart = true
    private var finishing = false

    /// The header section is complete: `recipients` and `problems` are final
    /// (but for a problem-free header, `problems` stays empty), output may start.
    public private(set) var headerDone = false
    /// The lone "." was read (with `dotEndsInput`): stop reading.
    public private(set) var inputEnded = false
    /// The header section did not fit in `maxHeaderSection`.
    public private(set) var headerTruncated = false
    /// With `extractRecipients`, the recipients from the header, once `headerDone`.
    public private(set) var recipients: [Mailbox] = []
    /// Addresses that could not be used, and too many recipients.
    public private(set) var problems: [Problem] = []
    /// Octets produced so far.
    public private(set) var octetsOut: Int64 = 0
    /// Which of the fields were in the header (for tests).
    private(set) var hadDate = false
    private(set) var hadMessageID = false
    private(set) var hadFrom = false

    public init(_ options: Options) {
        self.init(options, headerLimit: Self.maxHeaderSection)
    }

    init(_ options: Options, headerLimit: Int) {
        self.options = options
        self.headerLimit = max(0, headerLimit)
        dateField = Self.field("Date: ", options.date)
        messageIDField = Self.field("Message-ID: ", options.messageID)
        fromField = Self.field("From: ", options.from)
        held.reserveCapacity(self.headerLimit + 2)
        generated.reserveCapacity(dateField.count + messageIDField.count + fromField.count + 2)
        pending.reserveCapacity(8)
    }

    /// Octets reserved (for tests and the fuzz target: never grows after `init`).
    var reservedOctets: Int { held.capacity + generated.capacity + pending.capacity }
    /// Octets held now (for tests and the fuzz target: never above the bounds).
    var heldOctets: (header: Int, pending: Int) { (held.count, pending.count - pendingAt) }

    // MARK: streaming

    /// Filters as much of `input` as fits in `output`.
    public mutating func filter(_ input: UnsafeRawBufferPointer,
                                into output: UnsafeMutableRawBufferPointer) -> Step {
        var i = 0
        var o = 0
        // After `finish`, input is not read.
        let n = finishing ? 0 : input.count
        loop: while true {
            drain(output, &o)
            if pendingAt < pending.count { break loop }
            switch phase {
            case .done:
                break loop
            case .holding:
                guard i < n else { break loop }
                let b = input[i]
                if crRun {
                    if b == ASCII.cr { i += 1; continue loop }
                    crRun = false
                    if b == ASCII.lf { i += 1 }
                    heldLineEnd()
                    if phase != .holding { break loop }
                    continue loop
                }
                if b == ASCII.cr {
                    i += 1
                    crRun = true
                    continue loop
                }
                if b == ASCII.lf {
                    i += 1
                    heldLineEnd()
                    if phase != .holding { break loop }
                    continue loop
                }
                if held.count >= headerLimit {
                    // `b` is not taken: it is the next octet of the body.
                    overflow()
                    break loop
                }
                held.append(b)
                i += 1
                // The rest of the line, up to the bound.
                let room = headerLimit - held.count
                var k = 0
                while k < room && i < n {
                    let c = input[i]
                    if c == ASCII.cr || c == ASCII.lf { break }
                    held.append(c)
                    i += 1
                    k += 1
                }
            case .writingHeader(var k):
                while k < headerEnd && pendingAt == pending.count {
                    emit(held[k], output, &o)
                    k += 1
                }
                phase = k < headerEnd ? .writingHeader(k) : .writingGenerated(0)
            case .writingGenerated(var k):
                while k < generated.count && pendingAt == pending.count {
                    emit(generated[k], output, &o)
                    k += 1
                }
                phase = k < generated.count ? .writingGenerated(k) : .writingHeldBody(headerEnd)
            case .writingHeldBody(var k):
                while k < held.count && pendingAt == pending.count {
                    emit(held[k], output, &o)
                    k += 1
                }
                if k < held.count {
                    phase = .writingHeldBody(k)
                } else {
                    phase = inputEnded ? .done : .body
                }
            case .body:
                guard i < n else {
                    if finishing { endOfBody(output, &o) }
                    if phase == .body { break loop }
                    continue loop
                }
                let b = input[i]
                if crRun {
                    if b == ASCII.cr { i += 1; continue loop }
                    crRun = false
                    if b == ASCII.lf { i += 1 }
                    bodyLineEnd(output, &o)
                    continue loop
                }
                switch b {
                case ASCII.cr:
                    i += 1
                    crRun = true
                case ASCII.lf:
                    i += 1
                    bodyLineEnd(output, &o)
                default:
                    i += 1
                    switch line {
                    case .start:
                        if b == ASCII.dot && options.dotEndsInput {
                            line = .dot
                        } else {
                            emit(b, output, &o)
                            line = .middle
                        }
                    case .dot:
                        emit(ASCII.dot, output, &o)
                        emit(b, output, &o)
                        line = .middle
                    case .middle:
                        emit(b, output, &o)
                        // The rest of the line straight into the output: in
                        // the middle of a line nothing is stuffed.
                        if pendingAt == pending.count, let src = input.baseAddress, let dst = output.baseAddress {
                            var j = i
                            let limit = min(n, i + (output.count - o))
                            while j < limit {
                                let c = (src + j).load(as: UInt8.self)
                                if c == ASCII.cr || c == ASCII.lf { break }
                                j += 1
                            }
                            if j > i {
                                (dst + o).copyMemory(from: src + i, byteCount: j - i)
                                o += j - i
                                i = j
                            }
                        }
                    }
                }
            }
        }
        // After the lone dot, or after the end, the rest of the input is dropped.
        let consumed = inputEnded || phase == .done || finishing ? input.count : i
        octetsOut += Int64(o)
        return Step(consumed: consumed, produced: o)
    }

    /// The end of the input: completes the header section if the input ended
    /// inside it, then writes what is left. Call until `done`.
    public mutating func finish(into output: UnsafeMutableRawBufferPointer) -> Ending {
        if !finishing {
            finishing = true
            if phase == .holding {
                if crRun || held.count > lineStart {
                    crRun = false
                    heldLineEnd()
                }
                if phase == .holding { completeHeader(.endOfInput) }
                // The header is complete: let the caller read the recipients first.
                return Ending(produced: 0, done: false)
            }
        }
        let step = filter(UnsafeRawBufferPointer(start: nil, count: 0), into: output)
        return Ending(produced: step.produced, done: phase == .done && pendingAt == pending.count)
    }

    // MARK: output

    /// Writes what was held back.
    private mutating func drain(_ output: UnsafeMutableRawBufferPointer, _ o: inout Int) {
        while pendingAt < pending.count && o < output.count {
            output[o] = pending[pendingAt]
            o += 1
            pendingAt += 1
        }
        if pendingAt == pending.count && pendingAt > 0 {
            pending.removeAll(keepingCapacity: true)
            pendingAt = 0
        }
    }

    /// Writes one octet of text, dot-stuffed at the start of a line (RFC 5321
    /// §4.5.2); what does not fit is held back in `pending`.
    private mutating func emit(_ b: UInt8, _ output: UnsafeMutableRawBufferPointer, _ o: inout Int) {
        if options.dotStuffed && atOutputLineStart && b == ASCII.dot { put(ASCII.dot, output, &o) }
        put(b, output, &o)
        atOutputLineStart = b == ASCII.lf
    }

    @inline(__always)
    private mutating func put(_ b: UInt8, _ output: UnsafeMutableRawBufferPointer, _ o: inout Int) {
        if pendingAt == pending.count && o < output.count {
            output[o] = b
            o += 1
        } else {
            pending.append(b)
        }
    }

    private mutating func bodyLineEnd(_ output: UnsafeMutableRawBufferPointer, _ o: inout Int) {
        if line == .dot {
            // The lone dot: the end of the input; the line is not text.
            inputEnded = true
            phase = .done
            return
        }
        emit(ASCII.cr, output, &o)
        emit(ASCII.lf, output, &o)
        line = .start
    }

    /// The input ended in the body: the last line gets its line end.
    private mutating func endOfBody(_ output: UnsafeMutableRawBufferPointer, _ o: inout Int) {
        if crRun {
            crRun = false
            bodyLineEnd(output, &o)
        } else if line == .dot {
            inputEnded = true
        } else if line == .middle {
            bodyLineEnd(output, &o)
        }
        phase = .done
    }

    // MARK: the header section

    /// A line of the header section has ended (its octets are
    /// `held[lineStart...]`): keep it, drop it, or end the header section.
    private mutating func heldLineEnd() {
        let length = held.count - lineStart
        if options.dotEndsInput && length == 1 && held[lineStart] == ASCII.dot {
            held.removeLast()
            inputEnded = true
            completeHeader(.endOfInput)
            return
        }
        if skippingFromLines {
            if Self.isMboxSeparator(held[lineStart...]) {
                held.removeLast(length)
                return
            }
            skippingFromLines = false
        }
        if length == 0 {
            completeHeader(.emptyLine)
            return
        }
        held.append(ASCII.cr)
        held.append(ASCII.lf)
        // A continuation line needs a field before it: the first line of the
        // header cannot be one.
        if Self.isFieldStart(held[lineStart...]) || (lineStart > 0 && ASCII.isSpace(held[lineStart])) {
            lineStart = held.count
        } else {
            completeHeader(.bodyLine)
        }
    }

    private mutating func overflow() {
        headerTruncated = true
        // The partial line goes on in the body. (Asked before completeHeader,
        // which may move it when it removes Bcc: fields.)
        let partial = held.count > lineStart
        completeHeader(.overflow)
        line = partial ? .middle : .start
    }

    /// The header section is `held[..<lineStart]`: read it, remove Bcc: when
    /// extracting, and plan the output.
    private mutating func completeHeader(_ end: HeaderEnd) {
        headerDone = true
        var resent = false
        Self.forEachField(held, upTo: lineStart) { kind, _, _, _ in
            switch kind {
            case .date: hadDate = true
            case .messageID: hadMessageID = true
            case .from: hadFrom = true
            case .resentTo, .resentCc, .resentBcc: resent = true
            default: break
            }
        }
        var headerLength = lineStart
        if options.extractRecipients {
            extractRecipients(resent: resent)
            if end == .overflow {
                report(Problem("the header section is longer than \(headerLimit) octets: recipients were taken only from its first part, and the rest may name more (or hold a Bcc: that would be sent as text)"))
            }
            headerLength = removeBcc()
        }
        headerEnd = headerLength
        generated.removeAll(keepingCapacity: true)
        if !hadDate { generated += dateField }
        if !hadMessageID { generated += messageIDField }
        if !hadFrom { generated += fromField }
        if end != .endOfInput {
            generated.append(ASCII.cr)
            generated.append(ASCII.lf)
        }
        line = .start
        phase = .writingHeader(0)
    }

    enum FieldKind: Equatable {
        case date, messageID, from, to, cc, bcc, resentTo, resentCc, resentBcc, other

        var name: String {
            switch self {
            case .date: return "Date"
            case .messageID: return "Message-ID"
            case .from: return "From"
            case .to: return "To"
            case .cc: return "Cc"
            case .bcc: return "Bcc"
            case .resentTo: return "Resent-To"
            case .resentCc: return "Resent-Cc"
            case .resentBcc: return "Resent-Bcc"
            case .other: return "other"
            }
        }
    }

    private static let kinds: [(FieldKind, [UInt8])] = [
        (.date, Array("date".utf8)), (.messageID, Array("message-id".utf8)), (.from, Array("from".utf8)),
        (.to, Array("to".utf8)), (.cc, Array("cc".utf8)), (.bcc, Array("bcc".utf8)),
        (.resentTo, Array("resent-to".utf8)), (.resentCc, Array("resent-cc".utf8)),
        (.resentBcc, Array("resent-bcc".utf8)),
    ]

    /// Calls `body` for each field of `held[..<end]` (complete lines, the first
    /// one a field): its kind, where it starts, where its value starts (after
    /// the colon) and where it ends (after the CRLF of its last line).
    /// (`held` is passed by value so that `body` may change `self`.)
    private static func forEachField(_ held: [UInt8], upTo end: Int, _ body: (FieldKind, Int, Int, Int) -> Void) {
        var start = 0
        while start < end {
            // The field's lines: up to a line that does not begin with a blank.
            var next = start
            repeat {
                next = lineEnd(held, from: next, limit: end)
            } while next < end && ASCII.isSpace(held[next])
            var colon = start
            while colon < next && held[colon] != ASCII.colon { colon += 1 }
            var nameEnd = colon
            while nameEnd > start && ASCII.isSpace(held[nameEnd - 1]) { nameEnd -= 1 }
            let name = held[start..<nameEnd]
            var kind = FieldKind.other
            for (k, n) in kinds where ASCII.equalsIgnoringCase(name, n) {
                kind = k
                break
            }
            body(kind, start, min(colon + 1, next), next)
            start = next
        }
    }

    /// The index after the CRLF of the line starting at `from`.
    private static func lineEnd(_ bytes: [UInt8], from: Int, limit: Int) -> Int {
        var i = from
        while i + 1 < limit {
            if bytes[i] == ASCII.cr && bytes[i + 1] == ASCII.lf { return i + 2 }
            i += 1
        }
        return limit
    }

    /// Reads the recipient fields (RFC 5322 §3.6.3, or §3.6.6 when `resent`).
    private mutating func extractRecipients(resent: Bool) {
        var seen = Set<[UInt8]>()
        var full = false
        Self.forEachField(held, upTo: lineStart) { kind, _, valueStart, fieldEnd in
            switch kind {
            case .to, .cc, .bcc: if resent { return }
            case .resentTo, .resentCc, .resentBcc: if !resent { return }
            default: return
            }
            // The value without the CRLF that ends the field.
            let value = held[valueStart..<max(valueStart, fieldEnd - 2)]
            for element in HeaderAddressList.parse(value) {
                if full { return }
                switch element {
                case .invalid(let text):
                    report(Problem(kind.name + ": \"" + ASCII.printable(text) + "\" is not an address"))
                case .address(let spec, let qualified):
                    let address = qualified ? spec : spec + [ASCII.at] + options.localDomain
                    guard let mailbox = Mailbox.parse(address[...], allowNull: false) else {
                        report(Problem(kind.name + ": the address \"" + ASCII.printable(address)
                                       + "\" cannot be used (RFC 5321 §4.1.2 local@domain)"))
                        continue
                    }
                    guard seen.insert(mailbox.canonical).inserted else { continue }
                    guard recipients.count < Self.maxRecipients else {
                        report(Problem("more than \(Self.maxRecipients) recipients in the header"))
                        full = true
                        return
                    }
                    recipients.append(mailbox)
                }
            }
        }
    }

    /// Removes every Bcc: and Resent-Bcc: field from `held` (the body octets
    /// after the header move with it); returns the header's new length.
    private mutating func removeBcc() -> Int {
        var ranges: [Range<Int>] = []
        Self.forEachField(held, upTo: lineStart) { kind, start, _, end in
            if kind == .bcc || kind == .resentBcc { ranges.append(start..<end) }
        }
        guard !ranges.isEmpty else { return lineStart }
        var w = ranges[0].lowerBound
        var r = w
        var k = 0
        while r < held.count {
            if k < ranges.count && r == ranges[k].lowerBound {
                r = ranges[k].upperBound
                k += 1
                continue
            }
            held[w] = held[r]
            w += 1
            r += 1
        }
        let removed = held.count - w
        held.removeLast(removed)
        return lineStart - removed
    }

    private mutating func report(_ problem: Problem) {
        if problems.count < Self.maxProblems - 1 {
            problems.append(problem)
        } else if problems.count == Self.maxProblems - 1 {
            problems.append(Problem("more problems with the header's addresses were left out"))
        }
    }

    // MARK: line kinds

    /// ftext = %d33-57 / %d59-126, one or more, then blanks (obs-optional,
    /// RFC 5322 §4.5), then ":" (§3.6.8): the line begins a header field.
    static func isFieldStart(_ line: ArraySlice<UInt8>) -> Bool {
        var i = line.startIndex
        while i < line.endIndex && line[i] >= 33 && line[i] <= 126 && line[i] != ASCII.colon { i += 1 }
        guard i > line.startIndex else { return false }
        while i < line.endIndex && ASCII.isSpace(line[i]) { i += 1 }
        return i < line.endIndex && line[i] == ASCII.colon
    }

    private static let mboxFrom: [UInt8] = Array("From ".utf8)

    /// `From ` after any number of `>`: an mbox separator line (Postfix's
    /// sendmail drops such leading lines).
    static func isMboxSeparator(_ line: ArraySlice<UInt8>) -> Bool {
        var s = line
        while s.first == ASCII.greaterThan { s = s.dropFirst() }
        return s.starts(with: mboxFrom)
    }

    // MARK: the added fields

    /// `name` + `value` folded (RFC 5322 §2.2.3), CRLF; nothing for an empty value.
    private static func field(_ name: String, _ value: [UInt8]) -> [UInt8] {
        let v = HeaderFolding.sanitized(value.prefix(maxFieldValue))
        guard !v.isEmpty else { return [] }
        var out: [UInt8] = []
        HeaderFolding.append(Array(name.utf8), v, to: &out)
        return out
    }

    /// The value of an added From: for a sender's full name (`-F`, or the
    /// user's name) and address: `Full Name <address>`, or the address alone
    /// when there is no name (Postfix's cleanup writes the same). The name is
    /// a phrase (RFC 5322 §3.2.5): kept as it is when it is atoms (atext, or
    /// 8-bit octets, RFC 6532 §3.2) separated by single spaces, else made one
    /// quoted-string with `"` and `\` escaped (§3.2.4). Control characters
    /// and DEL become spaces; at most `maxFullName` octets of the name are used.
    public static func fromValue(fullName: [UInt8], address: [UInt8]) -> [UInt8] {
        var cut = min(fullName.count, maxFullName)
        // Do not split a UTF-8 sequence: back off over continuation octets.
        while cut > 0 && cut < fullName.count && fullName[cut] & 0xC0 == 0x80 { cut -= 1 }
        // DEL is no qtext either (RFC 5322 §3.2.4): a space, like the other controls.
        let name = HeaderFolding.sanitized(fullName[..<cut].map { $0 == 127 ? ASCII.space : $0 })
        guard !name.isEmpty else { return address }
        var atoms = true
        var previousSpace = false
        for b in name {
            if b == ASCII.space {
                if previousSpace { atoms = false }
                previousSpace = true
            } else {
                if !HeaderMailbox.isWordOctet(b) { atoms = false }
                previousSpace = false
            }
        }
        var out: [UInt8] = []
        if atoms {
            out = name
        } else {
            out.append(ASCII.quote)
            for b in name {
                if b == ASCII.quote || b == ASCII.backslash { out.append(ASCII.backslash) }
                out.append(b)
            }
            out.append(ASCII.quote)
        }
        out.append(ASCII.space)
        out.append(ASCII.lessThan)
        out += address
        out.append(ASCII.greaterThan)
        return out
    }

    /// The recipients in one recipient word of sendmail's command line, read
    /// as an address list as Postfix reads it (`root`, `a@b, c@d`,
    /// `Joe <joe@example.com>`), qualified with `localDomain` when they have no
    /// domain. A word with no address, or with one that cannot be used, is a
    /// problem that names it.
    public static func recipients(inArgument argument: String, localDomain: [UInt8]) -> Result<[Mailbox], Problem> {
        let bytes = Array(argument.utf8)
        var out: [Mailbox] = []
        for element in HeaderAddressList.parse(bytes[...]) {
            switch element {
            case .invalid(let text):
                return .failure(Problem("recipient \"" + ASCII.printable(text) + "\" is not an address"))
            case .address(let spec, let qualified):
                let address = qualified ? spec : spec + [ASCII.at] + localDomain
                guard let m = Mailbox.parse(address[...], allowNull: false) else {
                    return .failure(Problem("recipient \"" + ASCII.printable(address)
                                            + "\" cannot be used (RFC 5321 §4.1.2 local@domain)"))
                }
                out.append(m)
            }
        }
        if out.isEmpty {
            return .failure(Problem("recipient \"" + ASCII.printable(bytes) + "\" holds no address"))
        }
        return .success(out)
    }
}
