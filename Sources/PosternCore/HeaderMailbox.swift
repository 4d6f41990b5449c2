/// Finds the display name and the address in the value of a header field that
/// holds one mailbox (RFC 5322 §3.4), as `FromRewriter` needs them.
///
/// This is not a validator. It finds where the parts are, leniently enough for
/// what alerting software really writes — obsolete phrases with periods
/// (§4.1), a source route inside the angle brackets (§4.4), raw UTF-8 (RFC 6532
/// §3.2) and an address without a domain (`From: root`, as cron and mail(1)
/// write it) — and gives up (nil) on everything else: a group (§3.4), a list of
/// mailboxes, unbalanced quotes, comments or brackets. The caller then falls
/// back to what needs no parse.
///
/// The value is the unfolded field body (RFC 5322 §2.2.3), without the name and
/// the colon; positions in the result index that array.
struct HeaderMailbox: Equatable, Sendable {
    /// The display name exactly as written (from its first word to its last,
    /// comments between words included), nil when there is none or it is
    /// only empty quoted-strings.
    var display: Range<Int>?
    /// The addr-spec: local part, then "@" and the domain when there is one.
    var address: Range<Int>
    /// The address has no "@domain" and needs qualifying.
    var isUnqualified: Bool

    /// Parses `value`. With `complete == false` (the value was cut at the
    /// rewriter's bound) whatever follows the mailbox is ignored, since it may
    /// be the cut-off rest of a comment.
    static func parse(_ v: [UInt8], complete: Bool) -> HeaderMailbox? {
        guard let start = skipCFWS(v, 0) else { return nil }
        // name-addr = [display-name] angle-addr; display-name = phrase = 1*word
        // (§3.4, §3.2.5), obs-phrase also allows "." (§4.1).
        var i = start
        var lastWordEnd = start
        var words = 0
        while i < v.count {
            let b = v[i]
            if b == ASCII.quote {
                guard let e = quotedStringEnd(v[...], i) else { return nil }
                i = e
            } else if isWordOctet(b) || b == ASCII.dot {
                while i < v.count && (isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
            } else {
                break
            }
            words += 1
            lastWordEnd = i
            guard let next = skipCFWS(v, i) else { return nil }
            i = next
        }
        if i < v.count && v[i] == ASCII.lessThan {
            let display = words > 0 && hasText(v[start..<lastWordEnd]) ? start..<lastWordEnd : nil
            guard var k = skipCFWS(v, i + 1) else { return nil }
            // obs-angle-addr = [CFWS] "<" obs-route addr-spec ">" [CFWS] (§4.4):
            // the route ends at the first colon and is dropped.
            if k < v.count && v[k] == ASCII.at {
                while k < v.count && v[k] != ASCII.colon && v[k] != ASCII.greaterThan { k += 1 }
                guard k < v.count, v[k] == ASCII.colon, let after = skipCFWS(v, k + 1) else { return nil }
                k = after
            }
            guard let spec = addrSpec(v, k), let close = skipCFWS(v, spec.end),
                  close < v.count, v[close] == ASCII.greaterThan else { return nil }
            if complete {
                guard let rest = skipCFWS(v, close + 1), rest == v.count else { return nil }
            }
            return HeaderMailbox(display: display, address: k..<spec.end, isUnqualified: !spec.hasDomain)
        }
        // addr-spec alone, with comments around it: `root`, `joe@example.com
        // (Joe)` (§3.4.1).
        guard let spec = addrSpec(v, start) else { return nil }
        if complete {
            guard let rest = skipCFWS(v, spec.end), rest == v.count else { return nil }
        }
        return HeaderMailbox(display: nil, address: start..<spec.end, isUnqualified: !spec.hasDomain)
    }

    /// The value holds an "@" between something that can end a local part and
    /// something that can begin a domain, outside comments and quoted-strings:
    /// worth keeping as Reply-To even when it did not parse (a group, a list).
    static func looksAddressLike(_ v: [UInt8]) -> Bool {
        var i = 0
        while i < v.count {
            let b = v[i]
            if b == 40 /* ( */ {
                guard let e = commentEnd(v[...], i) else { return false }
                i = e
                continue
            }
            if b == ASCII.quote {
                guard let e = quotedStringEnd(v[...], i) else { return false }
                i = e
                if i < v.count && v[i] == ASCII.at && i + 1 < v.count && isDomainStart(v[i + 1]) { return true }
                continue
            }
            if b == ASCII.at && i > 0 && i + 1 < v.count && isWordOctet(v[i - 1]) && isDomainStart(v[i + 1]) {
                return true
            }
            i += 1
        }
        return false
    }

    // MARK: lexical pieces (RFC 5322 §3.2)

    /// atext (§3.2.3) or a UTF-8 octet (RFC 6532 §3.2): what a word, local part
    /// or domain label is made of. "=" and "?" are atext, so an RFC 2047
    /// encoded-word is a word too.
    static func isWordOctet(_ b: UInt8) -> Bool { b >= 128 || Mailbox.isAtext(b) }

    private static func isDomainStart(_ b: UInt8) -> Bool { isWordOctet(b) || b == 91 /* [ */ }

    /// A byte that makes a display name worth keeping: anything but quotes and blanks.
    private static func hasText(_ s: ArraySlice<UInt8>) -> Bool {
        s.contains { $0 != ASCII.quote && !ASCII.isSpace($0) }
    }

    /// addr-spec = local-part "@" domain (§3.4.1), or a local part alone. The
    /// local part is a quoted-string or atoms and periods (dot-atom, leniently:
    /// obs-local-part, §4.4); the domain is atoms and periods or a
    /// domain-literal.
    private static func addrSpec(_ v: [UInt8], _ start: Int) -> (end: Int, hasDomain: Bool)? {
        var i = start
        guard i < v.count else { return nil }
        if v[i] == ASCII.quote {
            guard let e = quotedStringEnd(v[...], i) else { return nil }
            i = e
        } else {
            while i < v.count && (isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
            guard i > start else { return nil }
        }
        guard i < v.count, v[i] == ASCII.at else { return (i, false) }
        i += 1
        let domainStart = i
        if i < v.count && v[i] == 91 /* [ */ {
            // domain-literal = "[" *dtext "]", obs-dtext allows quoted-pair (§3.4.1, §4.4).
            i += 1
            while i < v.count && v[i] != 93 /* ] */ {
                if v[i] == 91 { return nil }
                i += v[i] == ASCII.backslash ? 2 : 1
            }
            guard i < v.count else { return nil }
            return (i + 1, true)
        }
        while i < v.count && (isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
        guard i > domainStart else { return nil }
        return (i, true)
    }

    /// Skips blanks and comments (CFWS, §3.2.2). Nil when a comment is not closed.
    static func skipCFWS(_ v: [UInt8], _ start: Int) -> Int? {
        var i = start
        while i < v.count {
            if ASCII.isSpace(v[i]) {
                i += 1
            } else if v[i] == 40 /* ( */ {
                guard let e = commentEnd(v[...], i) else { return nil }
                i = e
            } else {
                break
            }
        }
        return i
    }

    /// The index after the comment opening at `start`; comments nest and take
    /// quoted-pairs (§3.2.2). Counted, not recursive: depth costs no stack.
    /// (Also `HeaderAddressList`'s; a whole array is passed as `v[...]`.)
    static func commentEnd(_ v: ArraySlice<UInt8>, _ start: Int) -> Int? {
        var depth = 0
        var i = start
        while i < v.endIndex {
            switch v[i] {
            case ASCII.backslash: i += 1
            case 40: depth += 1
            case 41:
                depth -= 1
                if depth == 0 { return i + 1 }
            default: break
            }
            i += 1
        }
        return nil
    }

    /// The index after the quoted-string opening at `start` (§3.2.4).
    static func quotedStringEnd(_ v: ArraySlice<UInt8>, _ start: Int) -> Int? {
        var i = start + 1
        while i < v.endIndex {
            if v[i] == ASCII.backslash {
                i += 2
                continue
            }
            if v[i] == ASCII.quote { return i + 1 }
            i += 1
        }
        return nil
    }
}
