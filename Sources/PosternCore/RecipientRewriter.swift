/// Rewrites the local addresses in the `To:` and `Cc:` fields of a message on
/// its way to a smarthost that refuses them (`[upstream] rewrite_to = yes`):
/// Amazon SES answers "554 Missing final '@domain'" to `To: root`, as cron
/// writes it.
///
/// Input is the spooled text (CRLF line ends, not dot-stuffed); the output goes
/// on to `DataEncoder` (after `FromRewriter` when both are on: the two touch
/// different fields). It streams under the same contract as `FromRewriter`,
/// whose `Step` and `Ending` it uses: the text comes in chunks of any size and
/// goes out through an output buffer of any size, and the output does not
/// depend on where either is cut.
///
/// What it does, in the header section only (up to the first empty line,
/// RFC 5322 §2.1; the body streams through untouched):
/// - each `To:` and `Cc:` field (RFC 5322 §3.6.3; the name compared
///   case-insensitively, with the obsolete blanks before the colon, §4.5; with
///   its continuation lines, §2.2.3) is held until it ends, and its mailboxes
///   are found (`AliasHeaderAddresses`);
/// - every mailbox whose address is local (`AliasMap.isLocal`: no domain, or
///   one of the board's names) and has an alias is replaced by the alias's
///   addresses: with one address only the addr-spec changes, so a display name
///   and comments stay (`Cron Daemon <root>` → `Cron Daemon
///   <admin@example.com>`); with several, the mailbox (display name and
///   address) becomes the list (`a@example.com, b@example.com`), which is
///   still an address list, inside a group too (§3.4). A local address with no
///   alias is left as written;
/// - a field with something replaced is written again unfolded and folded
///   anew by `HeaderFolding` (lines of at most 998 octets, RFC 5322 §2.1.1),
///   its name as written; everything else in it stays, except that runs of
///   more than 64 blanks are shortened and blanks at the ends are dropped
///   (`foldable`), which changes only CFWS, display names and comments
///   (§3.2.2), and that a run of more than 998 octets without a blank is
///   broken by `HeaderFolding` (the one way to keep the line legal);
/// - a field with nothing to replace, one that does not parse, one longer than
///   `maxField`, one whose rewritten form would exceed `maxRewritten`, and one
///   that would make the message grow by more than `maxGrowth` (32,768
///   octets) in all passes through unchanged, octet for octet — as does every
///   other field.
///
/// Only CRLF ends a line (RFC 5322 §2.1): a bare CR or LF is an ordinary octet
/// of its line (and a To: field holding one is not parsed, so it passes
/// unchanged).
///
/// Memory is fixed, whatever the size of the message or its lines, and is
/// reserved once in `init` (`reset()` reuses it for the next message):
/// `maxField` (8,192) octets for the field being held and `maxRewritten`
/// (16,384) for its rewritten form: 24,576 octets, plus a few flags and
/// counters. While a field is rewritten, working copies bounded by the same
/// sizes (and the mailboxes found, at most one per 2 octets of the field) are
/// allocated and freed.
///
/// Progress: a call to `rewrite` with input left and at least one octet of
/// output room always consumes or produces at least one octet; a call to
/// `finish` with at least one octet of room produces at least one or says it
/// is done. Any output room works; bigger is faster.
public struct RecipientRewriter: Sendable {
    /// Octets of a To: or Cc: field held, name, folds and CRLF included; a
    /// longer field passes unchanged. Ten times what a To: of a few dozen
    /// addresses takes.
    public static let maxField = 8 * 1024
    /// Octets of a rewritten field at most; a field whose aliases would make it
    /// longer passes unchanged.
    public static let maxRewritten = 16 * 1024
    /// Octets the rewriting adds to one message at most, all its fields
    /// together; a field that would go past this passes unchanged. So the
    /// text sent is at most this much longer than the spooled text, which
    /// bounds the SIZE= the sender declares (RFC 1870 §3).
    public static let maxGrowth = 2 * maxRewritten
    /// Octets of a field's start held until its name is known (as `FromRewriter`).
    public static let maxFieldName = FromRewriter.maxFieldName

    public typealias Step = FromRewriter.Step
    public typealias Ending = FromRewriter.Ending

    /// What comes after writing out what is held.
    private enum Next: Equatable, Sendable {
        case lineStart, otherField, body, done
    }

    private enum State: Equatable, Sendable {
        /// Header, at the start of a line, nothing held.
        case lineStart
        /// Header, a CR at the start of a line held in `held`, until the next
        /// octet says whether this is the empty line that ends the header.
        case lineStartCR
        /// Header, collecting the start of a field in `held` until it is
        /// known to be To:, Cc: or another field.
        case fieldName
        /// Header, holding a To: or Cc: field in `held`.
        case addressField
        /// Header, a held To: or Cc: line just ended with CRLF: the next
        /// octet says whether a continuation line follows.
        case addressFieldLineEnd
        /// Writing `held` out, then the next state.
        case writingHeld(Next)
        /// Writing `rewritten` out, then the next state.
        case writingRewritten(Next)
        /// Header, passing a field (or its continuation line) through.
        case otherField
        case body
        case done
    }

    private let aliases: AliasMap
    private var state = State.lineStart
    private var held: [UInt8] = []
    private var rewritten: [UInt8] = []
    /// Octets of `held` or `rewritten` already written.
    private var written = 0
    /// The last octet passed through in `otherField` was a CR.
    private var previousWasCR = false
    /// `finish` was called.
    private var finishing = false
    /// Octets added to this message so far (`maxGrowth`).
    private var grown = 0

    public init(aliases: AliasMap) {
        self.aliases = aliases
        held.reserveCapacity(Self.maxField)
        rewritten.reserveCapacity(Self.maxRewritten)
    }

    /// Ready for the next message, keeping the memory.
    public mutating func reset() {
        state = .lineStart
        held.removeAll(keepingCapacity: true)
        rewritten.removeAll(keepingCapacity: true)
        written = 0
        previousWasCR = false
        finishing = false
        grown = 0
    }

    /// Octets held now (for tests and the fuzz target: never above the bounds).
    var heldOctets: (field: Int, rewritten: Int) { (held.count, rewritten.count) }
    /// Octets reserved (for tests and the fuzz target: never grows after `init`).
    var reservedOctets: Int { held.capacity + rewritten.capacity }

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
            case .writingHeld(let next):
                while written < held.count && o < cap {
                    output[o] = held[written]
                    o += 1
                    written += 1
                }
                guard written == held.count else { break loop }
                previousWasCR = held.last == ASCII.cr
                held.removeAll(keepingCapacity: true)
                written = 0
                state = after(next)
            case .writingRewritten(let next):
                while written < rewritten.count && o < cap {
                    output[o] = rewritten[written]
                    o += 1
                    written += 1
                }
                guard written == rewritten.count else { break loop }
                previousWasCR = false
                rewritten.removeAll(keepingCapacity: true)
                written = 0
                state = after(next)
            case .otherField:
                // Pass the line through up to and including its CRLF.
                while i < n && o < cap {
                    let b = input[i]
                    output[o] = b
                    i += 1
                    o += 1
                    if previousWasCR && b == ASCII.lf {
                        previousWasCR = false
                        state = .lineStart
                        continue loop
                    }
                    previousWasCR = b == ASCII.cr
                }
                break loop
            case .lineStart:
                guard i < n else { break loop }
                let b = input[i]
                if ASCII.isSpace(b) {
                    // A continuation line (RFC 5322 §2.2.3) of a field passed through.
                    previousWasCR = false
                    state = .otherField
                } else if b == ASCII.cr {
                    held.append(b)
                    i += 1
                    state = .lineStartCR
                } else {
                    state = .fieldName
                }
            case .lineStartCR:
                guard i < n else { break loop }
                if input[i] == ASCII.lf {
                    // The empty line: the header ends here (RFC 5322 §2.1).
                    held.append(ASCII.lf)
                    i += 1
                    state = .writingHeld(.body)
                } else {
                    // A line that begins with a bare CR: another field.
                    state = .writingHeld(.otherField)
                }
            case .fieldName:
                while i < n {
                    held.append(input[i])
                    i += 1
                    switch Self.classify(held) {
                    case .undecided:
                        if held.count >= Self.maxFieldName { state = .writingHeld(.otherField); continue loop }
                    case .address:
                        state = .addressField
                        continue loop
                    case .other:
                        state = .writingHeld(.otherField)
                        continue loop
                    }
                }
                break loop
            case .addressField:
                while i < n {
                    guard held.count < Self.maxField else {
                        // Too long to hold: the field passes as it was, the
                        // rest of it with `otherField` and the continuation
                        // lines as those of any other field.
                        state = .writingHeld(.otherField)
                        continue loop
                    }
                    let b = input[i]
                    i += 1
                    let crlf = b == ASCII.lf && held.last == ASCII.cr
                    held.append(b)
                    if crlf {
                        state = .addressFieldLineEnd
                        continue loop
                    }
                }
                break loop
            case .addressFieldLineEnd:
                guard i < n else { break loop }
                if ASCII.isSpace(input[i]) {
                    state = .addressField
                } else {
                    // The field is complete (RFC 5322 §2.2.3: only a line
                    // beginning with a blank continues it).
                    state = composed(endsWithCRLF: true) ? .writingRewritten(.lineStart) : .writingHeld(.lineStart)
                }
            }
        }
        return Step(consumed: i, produced: o)
    }

    /// The end of the input: writes what is held (a To: or Cc: field ending
    /// without CRLF is rewritten too, and still ends without one). Call until
    /// `done`.
    public mutating func finish(into output: UnsafeMutableRawBufferPointer) -> Ending {
        if !finishing {
            finishing = true
            switch state {
            case .lineStart, .otherField, .body, .done:
                state = .done
            case .lineStartCR, .fieldName:
                state = .writingHeld(.done)
            case .addressField:
                let crlf = held.count >= 2 && held[held.count - 2] == ASCII.cr && held[held.count - 1] == ASCII.lf
                state = composed(endsWithCRLF: crlf) ? .writingRewritten(.done) : .writingHeld(.done)
            case .addressFieldLineEnd:
                state = composed(endsWithCRLF: true) ? .writingRewritten(.done) : .writingHeld(.done)
            case .writingHeld:
                state = .writingHeld(.done)
            case .writingRewritten:
                // `held` was emptied when `rewritten` was made.
                state = .writingRewritten(.done)
            }
        }
        let step = rewrite(UnsafeRawBufferPointer(start: nil, count: 0), into: output)
        return Ending(produced: step.produced, done: state == .done)
    }

    private func after(_ next: Next) -> State {
        if finishing { return .done }
        switch next {
        case .lineStart: return .lineStart
        case .otherField: return .otherField
        case .body: return .body
        case .done: return .done
        }
    }

    /// Rewrites the field in `held` into `rewritten` and empties `held`; false
    /// (and nothing changed) when the field passes as it was.
    private mutating func composed(endsWithCRLF: Bool) -> Bool {
        guard let field = Self.rewrittenField(held, endsWithCRLF: endsWithCRLF, aliases: aliases),
              field.count <= rewritten.capacity else { return false }
        let growth = max(0, field.count - held.count)
        guard growth <= Self.maxGrowth - grown else { return false }
        grown += growth
        rewritten.removeAll(keepingCapacity: true)
        rewritten.append(contentsOf: field)
        held.removeAll(keepingCapacity: true)
        written = 0
        return true
    }

    /// The field `raw` (its name, the colon, the value with its folds, and the
    /// final CRLF when `endsWithCRLF`) with its local addresses replaced by
    /// their aliases, or nil when it stays as it was (see the type's comment).
    static func rewrittenField(_ raw: [UInt8], endsWithCRLF: Bool, aliases: AliasMap) -> [UInt8]? {
        guard let colon = raw.firstIndex(of: ASCII.colon) else { return nil }
        let end = endsWithCRLF ? raw.count - 2 : raw.count
        guard colon < end else { return nil }
        // Unfold (RFC 5322 §2.2.3): remove each CRLF followed by a blank. Any
        // other CR or LF is no part of an address list: leave the field alone.
        var value: [UInt8] = []
        value.reserveCapacity(end - colon)
        var k = colon + 1
        while k < end {
            let b = raw[k]
            if b == ASCII.cr || b == ASCII.lf {
                guard b == ASCII.cr, k + 2 < end, raw[k + 1] == ASCII.lf, ASCII.isSpace(raw[k + 2]) else { return nil }
                k += 2
                continue
            }
            value.append(b)
            k += 1
        }
        guard let found = AliasHeaderAddresses.parse(value) else { return nil }

        var out: [UInt8] = []
        var copied = 0
        var changed = false
        for f in found {
            guard let expansion = expansion(of: f, in: value, aliases: aliases) else { continue }
            // One address keeps the display name and comments around it;
            // several replace the mailbox with the list (RFC 5322 §3.4).
            let replaced = expansion.count == 1 ? f.address : f.mailbox
            var length = 0
            for m in expansion { length += m.bytes.count + 2 }
            guard out.count + (replaced.lowerBound - copied) + length <= maxRewritten else { return nil }
            out.append(contentsOf: value[copied..<replaced.lowerBound])
            for (n, m) in expansion.enumerated() {
                if n > 0 {
                    out.append(ASCII.comma)
                    out.append(ASCII.space)
                }
                out.append(contentsOf: m.bytes)
            }
            copied = replaced.upperBound
            changed = true
        }
        guard changed, out.count + (value.count - copied) <= maxRewritten else { return nil }
        out.append(contentsOf: value[copied...])

        var field: [UInt8] = []
        HeaderFolding.append(raw[...colon] + [ASCII.space], foldable(out), to: &field)
        if !endsWithCRLF { field.removeLast(2) }
        return field.count <= maxRewritten ? field : nil
    }

    /// `value` fit for `HeaderFolding.append` (which it is but for blanks: it
    /// holds no CR or LF, see the unfolding above): blanks at the ends
    /// dropped, so no folded line is blanks only, and runs of more than
    /// `HeaderFolding.maxBlankRun` blanks shortened, so that every line has a
    /// word within reach. Both change only CFWS, a display name or a comment,
    /// never whether an address is local: a quoted local part holding such a
    /// run is longer than 64 octets before and after (RFC 5321 §4.5.3.1.1).
    /// Other octets stay, control octets included, as in a field that passes
    /// unchanged: turning them into spaces could make a quoted local part
    /// that is no recipient into one.
    static func foldable(_ value: [UInt8]) -> [UInt8] {
        HeaderFolding.sanitized(value, keepingControls: true)
    }

    /// The aliases of the mailbox `f` when its address is local and has an
    /// alias; nil when it stays. A local part must be one an envelope could
    /// carry (RFC 5321 §4.1.2), so a stray "." in a list is not taken for a
    /// recipient.
    private static func expansion(of f: AliasHeaderAddresses.Found, in value: [UInt8],
                                  aliases: AliasMap) -> [Mailbox]? {
        let local = value[f.localPart]
        if let d = f.domain {
            guard aliases.isLocalDomain(value[d]) else { return nil }
        }
        // The domain does not matter here (it is checked above): only the
        // local part's syntax is.
        guard Mailbox.parse(local + Array("@localhost".utf8), allowNull: false) != nil,
              let e = aliases.expand(localPart: local), !e.isEmpty else { return nil }
        return e
    }

    enum FieldKind: Equatable { case undecided, address, other }

    private static let toName: [UInt8] = Array("to".utf8)
    private static let ccName: [UInt8] = Array("cc".utf8)

    /// What a field is, from its first octets: "To" or "Cc" (any case),
    /// blanks (obs-optional, RFC 5322 §4.5), then the colon.
    static func classify(_ start: [UInt8]) -> FieldKind {
        switch (match(start, toName), match(start, ccName)) {
        case (.whole, _), (_, .whole): return .address
        case (.prefix, _), (_, .prefix): return .undecided
        default: return .other
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
