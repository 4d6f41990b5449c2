/// The `From:` and `Reply-To:` fields that `FromRewriter` writes at the end of
/// the header section in place of the original From:.
///
/// - `From: <display> <sender>`. The display name is the original one, kept
///   verbatim (a phrase or quoted-string: an RFC 2047 encoded-word in it stays
///   where it was, outside any quoted-string, RFC 2047 §5); when there was none,
///   the original address as a quoted-string (`"root@raspberrypi"`), so the
///   reader still sees which machine or program wrote. An address with "=?" in
///   it, or longer than a path can be (RFC 5321 §4.5.3.1.3), gives no display
///   name: quoting it could put an encoded-word inside a quoted-string.
/// - `Reply-To: <the original From value>`, unless the header has a Reply-To:
///   of its own (replies already go there). An address without a domain
///   (`root`, `Cron Daemon <root>`) gets "@" and the board's host name, so
///   the reply can be routed back.
/// - A From: that does not parse as one mailbox (a group, a list, garbage,
///   RFC 5322 §3.4): `From: <sender>`, and the original value as Reply-To only
///   if it holds something address-like (a group or list of addresses is a
///   valid Reply-To, RFC 5322 §3.6.2).
/// - No From: at all: `From: <sender>` and no Reply-To.
/// - A From: longer than `FromRewriter.maxFromValue`: its first part is parsed
///   as far as the mailbox; Reply-To is then written from the parts found
///   (display name and address), never from a cut value, and left out when
///   the first part does not parse.
///
/// Control octets of the original become spaces; the fields are folded by
/// `HeaderFolding` (no line over 998 octets, RFC 5322 §2.1.1).
///
/// Length: each field is at most its name, `maxFromValue` octets of the
/// original, the sender's path (256) and the host name (255), plus what
/// folding adds (each fold's CRLF costs 2 octets and two neighbouring lines
/// together exceed 78 octets, so at most 2/39 more, and 3 octets per 997 for
/// a hard break): under 4,700 octets, so both fields with the CRLFs around
/// them stay under `FromRewriter.maxGenerated` (10 KiB).
enum FromFields {
    static func append(original: [UInt8]?, truncated: Bool, hasReplyTo: Bool, sender: Mailbox,
                       qualifyDomain: [UInt8], to out: inout [UInt8]) {
        let newAddress = [ASCII.lessThan] + sender.bytes + [ASCII.greaterThan]
        guard let value = original else {
            HeaderFolding.append(fromPrefix, newAddress, to: &out)
            return
        }
        var display: [UInt8]? = nil
        var replyTo: [UInt8]? = nil
        if let p = HeaderMailbox.parse(value, complete: !truncated) {
            let qualification = p.isUnqualified ? [ASCII.at] + qualifyDomain : []
            let address = Array(value[p.address]) + qualification
            let verbatim = p.display.map { HeaderFolding.sanitized(value[$0]) }
            display = verbatim ?? quoted(address)
            if !truncated {
                var v = value
                v.insert(contentsOf: qualification, at: p.address.upperBound)
                replyTo = v
            } else if let d = verbatim {
                replyTo = d + [ASCII.space, ASCII.lessThan] + address + [ASCII.greaterThan]
            } else {
                replyTo = address
            }
        } else if !truncated && HeaderMailbox.looksAddressLike(value) {
            replyTo = value
        }
        if let d = display, !d.isEmpty {
            HeaderFolding.append(fromPrefix, d + [ASCII.space] + newAddress, to: &out)
        } else {
            HeaderFolding.append(fromPrefix, newAddress, to: &out)
        }
        if !hasReplyTo, let r = replyTo {
            let v = HeaderFolding.sanitized(r)
            if !v.isEmpty { HeaderFolding.append(replyToPrefix, v, to: &out) }
        }
    }

    private static let fromPrefix: [UInt8] = Array("From: ".utf8)
    private static let replyToPrefix: [UInt8] = Array("Reply-To: ".utf8)

    /// `address` as a quoted-string (RFC 5322 §3.2.4: `"` and `\` escaped),
    /// or nil when it must not be one (see the type's comment).
    static func quoted(_ address: [UInt8]) -> [UInt8]? {
        guard address.count <= Mailbox.maxPath else { return nil }
        var out: [UInt8] = [ASCII.quote]
        var previous: UInt8 = 0
        for raw in address {
            if previous == ASCII.equals && raw == 63 /* ? */ { return nil }
            previous = raw
            let b = raw < 32 || raw == 127 ? ASCII.space : raw
            if b == ASCII.quote || b == ASCII.backslash { out.append(ASCII.backslash) }
            out.append(b)
        }
        out.append(ASCII.quote)
        return out
    }
}
