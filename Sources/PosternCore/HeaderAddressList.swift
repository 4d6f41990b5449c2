/// Finds the addresses in the value of an address-list field (To:, Cc:, Bcc:
/// and their Resent- forms, RFC 5322 §3.6.3, §3.6.6), for `sendmail -t`
/// (`SubmissionFilter`); and in a recipient on sendmail's command line, which
/// Postfix reads the same way ("some MUAs specify comma-separated recipient
/// lists; and some MUAs even specify `word word <address>`").
///
/// Like `HeaderMailbox` this is lenient about what real software writes and is
/// not a validator; unlike it, it takes whole lists (RFC 5322 §3.4):
///
/// - address-list = elements separated by commas; empty elements are skipped
///   (obs-addr-list, §4.4: `To: a@b,,c@d,`);
/// - a mailbox is an addr-spec (`root`, `joe@example.com (Joe)`) or a
///   name-addr (`Joe Bloggs <joe@example.com>`, `"Bloggs, Joe" <joe@example.com>`),
///   with comments and blanks anywhere between the parts (CFWS, §3.2.2), an
///   obsolete route inside the angle brackets (`<@relay:joe@example.com>`,
///   §4.4) dropped, and blanks around the dots and the "@" of an addr-spec
///   (obs-local-part, obs-domain, §4.4) removed;
/// - a group (`Team: a@b, c@d;`, `undisclosed-recipients:;`, §3.4) gives its
///   members; its display name is dropped; a ";" outside a group is taken as a
///   comma;
/// - an address without "@domain" (`To: root`, as cron and mail(1) write it) is
///   returned as such, marked unqualified: the caller adds the domain;
/// - an element that is none of these (a display name without an address,
///   unbalanced quotes, comments or brackets, stray specials, `<>`) is returned
///   as `invalid` with its text, so the caller can say which address it could
///   not use rather than drop it.
///
/// The value is the field body after the colon, folded or not: CR and LF count
/// as blanks (unfolding, §2.2.3, removes only the CRLF before a blank). Octets
/// of 128 and above are word octets (RFC 6532 §3.2); whether such an address
/// can be used is for `Mailbox.parse` to say. Work and memory are linear in the
/// value's length: every loop advances, comments are counted, not recursed.
struct HeaderAddressList {
    enum Element: Equatable, Sendable {
        /// An addr-spec as written, without comments and blanks: local part,
        /// then "@" and the domain when `qualified`.
        case address([UInt8], qualified: Bool)
        /// An element that is not an address, trimmed, for the message.
        case invalid([UInt8])
    }

    /// The elements of `value`, in order.
    static func parse(_ value: ArraySlice<UInt8>) -> [Element] {
        var scanner = Scanner(v: value)
        var out: [Element] = []
        while let e = scanner.next() { out.append(e) }
        return out
    }

    /// One lexical token (RFC 5322 §3.2).
    enum Token: Equatable {
        /// An atom (atext and 8-bit octets) or a quoted-string, as written.
        case word(Range<Int>)
        /// A domain literal `[…]`, as written.
        case literal(Range<Int>)
        case dot
        case at
        /// `<…>`: the range of what is between the brackets.
        case angle(Range<Int>)
        /// Something that cannot be part of an address: the element is invalid.
        case bad
    }

    struct Scanner {
        let v: ArraySlice<UInt8>
        var i: Int

        init(v: ArraySlice<UInt8>) {
            self.v = v
            self.i = v.startIndex
        }

        /// The next non-empty element, nil at the end.
        mutating func next() -> Element? {
            while i < v.endIndex {
                let start = i
                var tokens: [Token] = []
                // The tokens so far are words and dots only: a colon after
                // them ends a group's display name. Kept as a flag so that a
                // run of colons costs no rescan.
                var phraseOnly = true
                // Collect the tokens of one element, up to a separator.
                element: while i < v.endIndex {
                    let b = v[i]
                    switch b {
                    case ASCII.space, ASCII.tab, ASCII.cr, ASCII.lf:
                        i += 1
                    case 40 /* ( */:
                        if let e = HeaderMailbox.commentEnd(v, i) {
                            i = e
                        } else {
                            i = fail(&tokens)
                        }
                    case ASCII.comma, 59 /* ; */:
                        break element
                    case ASCII.colon:
                        // A group's display name ends here (§3.4): what came
                        // before must be a phrase, and it is dropped.
                        if phraseOnly {
                            tokens.removeAll()
                        } else {
                            tokens.append(.bad)
                        }
                        i += 1
                    case ASCII.quote:
                        if let e = HeaderMailbox.quotedStringEnd(v, i) {
                            tokens.append(.word(i..<e))
                            i = e
                        } else {
                            i = fail(&tokens)
                        }
                    case 91 /* [ */:
                        phraseOnly = false
                        if let e = HeaderAddressList.literalEnd(v, i) {
                            tokens.append(.literal(i..<e))
                            i = e
                        } else {
                            i = fail(&tokens)
                        }
                    case ASCII.lessThan:
                        phraseOnly = false
                        if let e = HeaderAddressList.angleEnd(v, i) {
                            tokens.append(.angle((i + 1)..<(e - 1)))
                            i = e
                        } else {
                            i = fail(&tokens)
                        }
                    case ASCII.dot:
                        tokens.append(.dot)
                        i += 1
                    case ASCII.at:
                        phraseOnly = false
                        tokens.append(.at)
                        i += 1
                    default:
                        if HeaderMailbox.isWordOctet(b) {
                            let s = i
                            while i < v.endIndex && HeaderMailbox.isWordOctet(v[i]) { i += 1 }
                            tokens.append(.word(s..<i))
                        } else {
                            phraseOnly = false
                            tokens.append(.bad)
                            i += 1
                        }
                    }
                }
                let end = i
                if i < v.endIndex { i += 1 }
                if tokens.isEmpty { continue }
                return element(tokens, text: v[start..<end])
            }
            return nil
        }

        /// An unclosed comment, quote, literal or bracket: the rest of the value
        /// belongs to it, and the element is invalid.
        private func fail(_ tokens: inout [Token]) -> Int {
            tokens.append(.bad)
            return v.endIndex
        }

        private func element(_ tokens: [Token], text: ArraySlice<UInt8>) -> Element {
            var invalid: Element { Element.invalid(Array(ASCII.trimmed(HeaderAddressList.blanked(text)[...]))) }
            if tokens.contains(.bad) { return invalid }
            // name-addr: a phrase, then the angle-addr, then nothing (§3.4).
            if let a = tokens.firstIndex(where: { if case .angle = $0 { return true }; return false }) {
                guard a == tokens.count - 1, case .angle(let inner) = tokens[a] else { return invalid }
                for t in tokens[..<a] {
                    switch t {
                    case .word, .dot: continue
                    default: return invalid
                    }
                }
                guard let spec = HeaderAddressList.angleContent(v, inner) else { return invalid }
                return spec
            }
            return HeaderAddressList.addrSpec(v, tokens) ?? invalid
        }
    }

    /// The addr-spec inside angle brackets, its route dropped (§4.4
    /// obs-angle-addr: `<@a,@b:joe@example.com>`).
    static func angleContent(_ v: ArraySlice<UInt8>, _ inner: Range<Int>) -> Element? {
        var tokens: [Token] = []
        var routeEnded = false
        var i = inner.lowerBound
        let end = inner.upperBound
        while i < end {
            let b = v[i]
            switch b {
            case ASCII.space, ASCII.tab, ASCII.cr, ASCII.lf:
                i += 1
            case 40 /* ( */:
                guard let e = HeaderMailbox.commentEnd(v, i), e <= end else { return nil }
                i = e
            case ASCII.colon:
                // The end of a route: everything before it was "@domain,…".
                guard !routeEnded, tokens.first == .at else { return nil }
                tokens.removeAll()
                routeEnded = true
                i += 1
            case ASCII.comma:
                // Only between the hops of a route.
                guard !routeEnded, tokens.first == .at else { return nil }
                i += 1
            case ASCII.quote:
                guard let e = HeaderMailbox.quotedStringEnd(v, i), e <= end else { return nil }
                tokens.append(.word(i..<e))
                i = e
            case 91 /* [ */:
                guard let e = literalEnd(v, i), e <= end else { return nil }
                tokens.append(.literal(i..<e))
                i = e
            case ASCII.dot:
                tokens.append(.dot)
                i += 1
            case ASCII.at:
                tokens.append(.at)
                i += 1
            default:
                guard HeaderMailbox.isWordOctet(b) else { return nil }
                let s = i
                while i < end && HeaderMailbox.isWordOctet(v[i]) { i += 1 }
                tokens.append(.word(s..<i))
            }
        }
        return addrSpec(v, tokens)
    }

    /// addr-spec = local-part ["@" domain] from tokens (§3.4.1): words joined by
    /// dots, then optionally "@" and atoms joined by dots or one literal.
    static func addrSpec(_ v: ArraySlice<UInt8>, _ tokens: [Token]) -> Element? {
        var out: [UInt8] = []
        var k = 0
        // local-part: word *("." word)
        var expectWord = true
        while k < tokens.count {
            let t = tokens[k]
            if t == .at { break }
            switch t {
            case .word(let r) where expectWord:
                out += v[r]
                expectWord = false
            case .dot where !expectWord:
                out.append(ASCII.dot)
                expectWord = true
            default:
                return nil
            }
            k += 1
        }
        guard !out.isEmpty, !expectWord else { return nil }
        guard k < tokens.count else { return .address(out, qualified: false) }
        out.append(ASCII.at)
        k += 1
        guard k < tokens.count else { return nil }
        if case .literal(let r) = tokens[k] {
            guard k == tokens.count - 1 else { return nil }
            out += v[r]
            return .address(out, qualified: true)
        }
        // domain: atom *("." atom); a quoted-string is no domain.
        expectWord = true
        while k < tokens.count {
            switch tokens[k] {
            case .word(let r) where expectWord && v[r.lowerBound] != ASCII.quote:
                out += v[r]
                expectWord = false
            case .dot where !expectWord:
                out.append(ASCII.dot)
                expectWord = true
            default:
                return nil
            }
            k += 1
        }
        guard !expectWord else { return nil }
        return .address(out, qualified: true)
    }

    // MARK: lexical pieces (RFC 5322 §3.2), on a slice

    /// The index after the domain literal opening at `start` (§3.4.1, with
    /// obs-dtext's quoted-pair, §4.4).
    static func literalEnd(_ v: ArraySlice<UInt8>, _ start: Int) -> Int? {
        var i = start + 1
        while i < v.endIndex {
            switch v[i] {
            case ASCII.backslash: i += 2; continue
            case 91: return nil
            case 93: return i + 1
            default: i += 1
            }
        }
        return nil
    }

    /// The index after the ">" closing the angle-addr opening at `start`;
    /// quoted-strings, comments and literals inside may hold a ">".
    static func angleEnd(_ v: ArraySlice<UInt8>, _ start: Int) -> Int? {
        var i = start + 1
        while i < v.endIndex {
            switch v[i] {
            case ASCII.greaterThan: return i + 1
            case ASCII.lessThan: return nil
            case ASCII.quote:
                guard let e = HeaderMailbox.quotedStringEnd(v, i) else { return nil }
                i = e
            case 40:
                guard let e = HeaderMailbox.commentEnd(v, i) else { return nil }
                i = e
            case 91:
                guard let e = literalEnd(v, i) else { return nil }
                i = e
            default:
                i += 1
            }
        }
        return nil
    }

    /// `text` with CR and LF as spaces, for a message.
    static func blanked(_ text: ArraySlice<UInt8>) -> [UInt8] {
        text.map { $0 == ASCII.cr || $0 == ASCII.lf ? ASCII.space : $0 }
    }
}
