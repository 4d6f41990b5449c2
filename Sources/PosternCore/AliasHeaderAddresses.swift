/// Finds the mailboxes in the value of an address-list header field (To:,
/// Cc:, RFC 5322 §3.6.3), as `RecipientRewriter` needs them to replace local
/// addresses by their aliases.
///
/// Like `HeaderMailbox`, this is not a validator: it finds where the parts are,
/// leniently enough for what alerting software writes — display names with
/// periods (obs-phrase, §4.1), empty list elements (obs-addr-list, §4.4), a
/// source route in the angle brackets (§4.4), raw UTF-8 (RFC 6532 §3.2),
/// addresses without a domain (`To: root`, as cron and mail(1) write it),
/// groups (`undisclosed-recipients:;`, §3.4) and a group missing its final
/// ";" — and gives up (nil) on everything else: unbalanced quotes, comments or
/// brackets, a phrase with no address (`To: John Smith`), nested groups,
/// blanks around the "@". The rewriter then leaves the field as it was, which
/// is always safe.
///
/// The value is the unfolded field body (RFC 5322 §2.2.3) without the name and
/// the colon; positions index that array. Named apart from the general
/// address-list parser of `sendmail -t` (`SubmissionFilter`), which has other
/// needs (it reads every address; this one only needs to rewrite some).
enum AliasHeaderAddresses {
    struct Found: Equatable, Sendable {
        /// The whole mailbox: the display name (if any) and the angle-addr,
        /// or the addr-spec alone; comments around it excluded.
        var mailbox: Range<Int>
        /// The addr-spec (a source route excluded).
        var address: Range<Int>
        var localPart: Range<Int>
        /// After the "@"; nil for an address without a domain.
        var domain: Range<Int>?
    }

    /// The mailboxes of `v` in order, groups' members included; nil when `v`
    /// is not an address list this parser understands.
    static func parse(_ v: [UInt8]) -> [Found]? {
        var found: [Found] = []
        var i = 0
        var inGroup = false
        while true {
            guard let p = HeaderMailbox.skipCFWS(v, i) else { return nil }
            i = p
            guard i < v.count else { return found }
            if v[i] == ASCII.comma {
                // An empty element (obs-addr-list, obs-mbox-list, §4.4).
                i += 1
                continue
            }
            if inGroup && v[i] == 59 /* ; */ {
                // group = display-name ":" [group-list] ";" [CFWS] (§3.4)
                inGroup = false
                guard let q = HeaderMailbox.skipCFWS(v, i + 1) else { return nil }
                i = q
                if i < v.count {
                    guard v[i] == ASCII.comma else { return nil }
                    i += 1
                }
                continue
            }

            // display-name = phrase = 1*word, with "." (obs-phrase, §4.1);
            // or the local part of an addr-spec, which is one such word here.
            let start = i
            var words = 0
            var lastWordEnd = i
            while i < v.count {
                let b = v[i]
                if b == ASCII.quote {
                    guard let e = HeaderMailbox.quotedStringEnd(v[...], i) else { return nil }
                    i = e
                } else if HeaderMailbox.isWordOctet(b) || b == ASCII.dot {
                    while i < v.count && (HeaderMailbox.isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
                } else {
                    break
                }
                words += 1
                lastWordEnd = i
                if i < v.count && v[i] == ASCII.at { break }
                guard let next = HeaderMailbox.skipCFWS(v, i) else { return nil }
                i = next
            }

            if i < v.count && v[i] == ASCII.at {
                // addr-spec = local-part "@" domain (§3.4.1), no blanks around "@".
                guard words == 1, lastWordEnd == i, let end = domainEnd(v, i + 1) else { return nil }
                found.append(Found(mailbox: start..<end, address: start..<end, localPart: start..<i,
                                   domain: (i + 1)..<end))
                i = end
            } else if i < v.count && v[i] == ASCII.lessThan {
                // name-addr = [display-name] angle-addr (§3.4)
                guard var k = HeaderMailbox.skipCFWS(v, i + 1) else { return nil }
                // obs-angle-addr: a route up to the first colon, dropped (§4.4).
                if k < v.count && v[k] == ASCII.at {
                    while k < v.count && v[k] != ASCII.colon && v[k] != ASCII.greaterThan { k += 1 }
                    guard k < v.count, v[k] == ASCII.colon, let after = HeaderMailbox.skipCFWS(v, k + 1) else {
                        return nil
                    }
                    k = after
                }
                guard let spec = addrSpec(v, k), let close = HeaderMailbox.skipCFWS(v, spec.end),
                      close < v.count, v[close] == ASCII.greaterThan else { return nil }
                found.append(Found(mailbox: start..<(close + 1), address: k..<spec.end,
                                   localPart: k..<spec.localEnd, domain: spec.domain))
                i = close + 1
            } else if i < v.count && v[i] == ASCII.colon {
                // group: display-name ":" (§3.4); groups do not nest.
                guard words > 0, !inGroup else { return nil }
                inGroup = true
                i += 1
                continue
            } else {
                // An addr-spec without a domain: one word, then the end of
                // the element. More words are a phrase with no address.
                guard words == 1,
                      i == v.count || v[i] == ASCII.comma || (inGroup && v[i] == 59) else { return nil }
                found.append(Found(mailbox: start..<lastWordEnd, address: start..<lastWordEnd,
                                   localPart: start..<lastWordEnd, domain: nil))
            }

            // After a mailbox: the end, a comma, or the group's ";".
            guard let q = HeaderMailbox.skipCFWS(v, i) else { return nil }
            i = q
            guard i < v.count else { return found }
            if v[i] == ASCII.comma {
                i += 1
            } else if !(inGroup && v[i] == 59) {
                return nil
            }
        }
    }

    /// local-part ["@" domain] inside angle brackets; the local part is a
    /// quoted-string or atoms and periods.
    private static func addrSpec(_ v: [UInt8], _ start: Int) -> (end: Int, localEnd: Int, domain: Range<Int>?)? {
        var i = start
        guard i < v.count else { return nil }
        if v[i] == ASCII.quote {
            guard let e = HeaderMailbox.quotedStringEnd(v[...], i) else { return nil }
            i = e
        } else {
            while i < v.count && (HeaderMailbox.isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
            guard i > start else { return nil }
        }
        guard i < v.count, v[i] == ASCII.at else { return (i, i, nil) }
        guard let end = domainEnd(v, i + 1) else { return nil }
        return (end, i, (i + 1)..<end)
    }

    /// The end of the domain starting at `start`: atoms and periods, or a
    /// domain-literal (`[192.0.2.1]`, with obs-dtext's quoted-pairs, §3.4.1, §4.4).
    private static func domainEnd(_ v: [UInt8], _ start: Int) -> Int? {
        var i = start
        guard i < v.count else { return nil }
        if v[i] == 91 /* [ */ {
            i += 1
            while i < v.count && v[i] != 93 /* ] */ {
                if v[i] == 91 { return nil }
                i += v[i] == ASCII.backslash ? 2 : 1
            }
            guard i < v.count else { return nil }
            return i + 1
        }
        while i < v.count && (HeaderMailbox.isWordOctet(v[i]) || v[i] == ASCII.dot) { i += 1 }
        return i > start ? i : nil
    }
}
