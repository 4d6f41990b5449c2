/// A mailbox as it appears in `MAIL FROM:<…>` and `RCPT TO:<…>`: the bytes between
/// the angle brackets, checked against RFC 5321 §4.1.2 and kept verbatim so the
/// sender forwards exactly what the client gave.
public struct Mailbox: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// "local@domain", or empty for the null reverse-path `<>`.
    public let bytes: [UInt8]
    /// Index of the '@' separating local part and domain, nil for `<>` and for the
    /// domain-less `<postmaster>` (RFC 5321 §4.1.1.3).
    public let atIndex: Int?

    public static let null = Mailbox(bytes: [], atIndex: nil)

    init(bytes: [UInt8], atIndex: Int?) {
        self.bytes = bytes
        self.atIndex = atIndex
    }

    public var isNull: Bool { bytes.isEmpty }
    public var localPart: ArraySlice<UInt8> { atIndex.map { bytes[..<$0] } ?? bytes[...] }
    public var domain: ArraySlice<UInt8>? { atIndex.map { bytes[($0 + 1)...] } }
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    /// `<local@domain>`, as logged and as sent upstream.
    public var description: String { "<" + text + ">" }

    /// The same mailbox with the domain lower-cased, for comparing recipients
    /// (domains are case-insensitive, RFC 5321 §2.4; local parts are kept as given).
    public var canonical: [UInt8] {
        guard let at = atIndex else { return ASCII.lowercased(bytes) }
        return Array(bytes[...at]) + ASCII.lowercased(bytes[(at + 1)...])
    }

    /// Limits from RFC 5321 §4.5.3.1.1–3.
    public static let maxLocalPart = 64
    public static let maxDomain = 255
    public static let maxPath = 256

    /// Parses the inside of a path (without angle brackets), dropping an obsolete
    /// source route ("@a,@b:user@c", RFC 5321 §4.1.2 and Appendix C).
    /// `allowUnqualified` also takes a local part without a domain (`root`, as
    /// cron and mail(1) address the board's own users): a recipient for
    /// `[aliases]`; otherwise only "postmaster" may come without one.
    /// `utf8` takes the internationalized syntax of RFC 6531 §3.3 (only in a
    /// transaction whose MAIL said SMTPUTF8, §3.4): UTF8-non-ascii in atoms,
    /// quoted strings and domain labels, as well-formed UTF-8 (RFC 3629 §4) and
    /// within the same octet limits. Without it the address is ASCII, as before.
    public static func parse(_ raw: ArraySlice<UInt8>, allowNull: Bool, allowUnqualified: Bool = false,
                             utf8: Bool = false) -> Mailbox? {
        var s = raw
        if s.isEmpty { return allowNull ? .null : nil }
        // RFC 5321 §4.5.3.1.3: 256 octets for the whole path, route and brackets included.
        guard raw.count + 2 <= maxPath else { return nil }
        if s.first == ASCII.at {
            // RFC 5321 §4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">", where
            // A-d-l = At-domain *( "," At-domain ) and At-domain = "@" Domain. The
            // route is accepted and ignored, but a mailbox must follow the colon:
            // `<@a:>` once indexed the empty rest and killed the daemon (issue 7).
            guard let colon = s.firstIndex(of: ASCII.colon) else { return nil }
            for hop in s[..<colon].split(separator: ASCII.comma, omittingEmptySubsequences: false) {
                guard hop.first == ASCII.at, isDomain(hop.dropFirst()) else { return nil }
            }
            s = s[(colon + 1)...]
            if s.isEmpty { return nil }
        }
        // Local part: dot-string or quoted-string.
        var i = s.startIndex
        if s[i] == ASCII.quote {
            i += 1
            var closed = false
            while i < s.endIndex {
                let b = s[i]
                if b == ASCII.backslash {
                    i += 1
                    guard i < s.endIndex, s[i] >= 32, s[i] <= 126 else { return nil }
                } else if b == ASCII.quote {
                    closed = true
                    i += 1
                    break
                } else if b >= 0x80 && utf8 {
                    // RFC 6531 §3.3: qtextSMTP =/ UTF8-non-ascii.
                    guard let n = utf8NonASCIILength(s, at: i) else { return nil }
                    i += n
                    continue
                } else if b < 32 || b > 126 {
                    return nil
                }
                i += 1
            }
            guard closed else { return nil }
        } else {
            var previousDot = true
            while i < s.endIndex, s[i] != ASCII.at {
                let b = s[i]
                if b == ASCII.dot {
                    if previousDot { return nil }
                    previousDot = true
                } else if isAtext(b) {
                    previousDot = false
                } else if b >= 0x80 && utf8 {
                    // RFC 6531 §3.3: atext =/ UTF8-non-ascii.
                    guard let n = utf8NonASCIILength(s, at: i) else { return nil }
                    previousDot = false
                    i += n
                    continue
                } else {
                    return nil
                }
                i += 1
            }
            if previousDot { return nil }
        }
        let localLength = i - s.startIndex
        guard localLength <= maxLocalPart else { return nil }
        if i == s.endIndex {
            // Only "postmaster" may come without a domain (RFC 5321 §4.1.1.3),
            // unless the caller maps local names.
            guard allowUnqualified || ASCII.equalsIgnoringCase(s, Array("postmaster".utf8)) else { return nil }
            return Mailbox(bytes: Array(s), atIndex: nil)
        }
        guard s[i] == ASCII.at else { return nil }
        let domain = s[(i + 1)...]
        guard isDomain(domain, utf8: utf8) || isAddressLiteral(domain) else { return nil }
        return Mailbox(bytes: Array(s), atIndex: localLength)
    }

    /// RFC 5322 §3.2.3 atext.
    static func isAtext(_ b: UInt8) -> Bool {
        if ASCII.isAlpha(b) || ASCII.isDigit(b) { return true }
        switch b {
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 47, 61, 63, 94, 95, 96, 123, 124, 125, 126: return true
        default: return false
        }
    }

    /// RFC 5321 §4.1.2 Domain: dot-separated labels of letters, digits and hyphens.
    /// With `utf8`, a label may also hold UTF8-non-ascii (RFC 6531 §3.3:
    /// sub-domain =/ U-label); the octet limits stay (63 a label, 255 in all).
    /// Whether a U-label is valid IDNA2008 (RFC 5891 §5.4) needs Unicode tables
    /// the release binary leaves out: it is checked as UTF-8 only, and the
    /// upstream judges the rest.
    static func isDomain(_ d: ArraySlice<UInt8>, utf8: Bool = false) -> Bool {
        guard !d.isEmpty, d.count <= maxDomain else { return false }
        for label in d.split(separator: ASCII.dot, omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63,
                  label.first != 45, label.last != 45 else { return false }
            var i = label.startIndex
            while i < label.endIndex {
                let b = label[i]
                if ASCII.isAlpha(b) || ASCII.isDigit(b) || b == 45 {
                    i += 1
                } else if b >= 0x80 && utf8, let n = utf8NonASCIILength(label, at: i) {
                    i += n
                } else {
                    return false
                }
            }
        }
        return true
    }

    /// The mailbox is all ASCII: it needs no SMTPUTF8 (RFC 6531 §3.4).
    public var isASCII: Bool { bytes.allSatisfy { $0 < 0x80 } }

    /// The length of the UTF8-non-ascii character at `i` (RFC 6532 §3.1, with
    /// UTF8-2/3/4 of RFC 3629 §4: no overlong forms, no surrogates, nothing
    /// beyond U+10FFFF), or nil when the octets there are not one. The C1
    /// controls U+0080–U+009F are refused too (RFC 5198 §2 keeps controls out
    /// of interchanged text), as RFC 6533's "\x{…}" check below refuses them.
    static func utf8NonASCIILength(_ s: ArraySlice<UInt8>, at i: Int) -> Int? {
        guard i >= s.startIndex, i < s.endIndex else { return nil }
        let b0 = s[i]
        /// The continuation octet at `i + k`, if it is in `range`.
        func tail(_ k: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> Bool {
            guard k < s.endIndex - i else { return false }
            return range.contains(s[i + k])
        }
        switch b0 {
        // U+0080–U+009F (0xC2 0x80–0x9F) are the C1 controls: refused like
        // the C0 ones, so no address carries a control into a log or a header.
        case 0xC2: return tail(1, 0xA0...0xBF) ? 2 : nil
        case 0xC3...0xDF: return tail(1) ? 2 : nil
        case 0xE0: return tail(1, 0xA0...0xBF) && tail(2) ? 3 : nil
        case 0xE1...0xEC, 0xEE...0xEF: return tail(1) && tail(2) ? 3 : nil
        case 0xED: return tail(1, 0x80...0x9F) && tail(2) ? 3 : nil
        case 0xF0: return tail(1, 0x90...0xBF) && tail(2) && tail(3) ? 4 : nil
        case 0xF1...0xF3: return tail(1) && tail(2) && tail(3) ? 4 : nil
        case 0xF4: return tail(1, 0x80...0x8F) && tail(2) && tail(3) ? 4 : nil
        default: return nil
        }
    }

    /// Every octet of `s` is ASCII or part of a well-formed UTF-8 character.
    static func isUTF8<C: Collection>(_ s: C) -> Bool where C.Element == UInt8 {
        let a = Array(s)[...]
        var i = a.startIndex
        while i < a.endIndex {
            if a[i] < 0x80 { i += 1; continue }
            guard let n = utf8NonASCIILength(a, at: i) else { return false }
            i += n
        }
        return true
    }

    /// RFC 5321 §4.1.3 address literal: [1.2.3.4] or [IPv6:…].
    static func isAddressLiteral(_ d: ArraySlice<UInt8>) -> Bool {
        guard d.count >= 3, d.first == 91, d.last == 93 else { return false }
        let inner = d.dropFirst().dropLast()
        if ASCII.hasPrefixIgnoringCase(inner, "IPv6:") {
            guard let a = IPAddress(text: inner.dropFirst(5)) else { return false }
            return !a.isV4
        }
        guard let a = IPAddress(text: inner) else { return false }
        return a.isV4
    }
}

/// The argument of MAIL FROM / RCPT TO: a path and its ESMTP parameters.
public struct PathArgument: Equatable, Sendable {
    public var mailbox: Mailbox
    /// (keyword upper-cased, value) pairs, RFC 5321 §4.1.2 Mail-parameters.
    public var parameters: [(keyword: String, value: String?)]

    public static func == (a: PathArgument, b: PathArgument) -> Bool {
        a.mailbox == b.mailbox && a.parameters.count == b.parameters.count
            && zip(a.parameters, b.parameters).allSatisfy { $0.keyword == $1.keyword && $0.value == $1.value }
    }

    public enum Failure: Error, Equatable, Sendable {
        case missingPrefix
        case badPath
        case badParameter
    }

    /// Parses `FROM:<path> params` or `TO:<path> params` (the text after the verb).
    /// Tolerates a space after the colon and a path without brackets, as Postfix
    /// does: alerting devices send both. `utf8` takes an internationalized
    /// mailbox (`Mailbox.parse`) and UTF-8 in parameter values (RFC 6531 §3.3:
    /// esmtp-value =/ UTF8-non-ascii), well-formed only.
    public static func parse(_ arg: ArraySlice<UInt8>, prefix: String, allowNull: Bool,
                             allowUnqualified: Bool = false, utf8: Bool = false) -> Result<PathArgument, Failure> {
        let p = Array(prefix.utf8)
        guard ASCII.hasPrefixIgnoringCase(arg, prefix) else { return .failure(.missingPrefix) }
        var s = arg.dropFirst(p.count)
        while let f = s.first, ASCII.isSpace(f) { s = s.dropFirst() }
        let path: ArraySlice<UInt8>
        var rest: ArraySlice<UInt8>
        if s.first == ASCII.lessThan {
            // Find the closing '>' outside a quoted local part.
            var i = s.startIndex + 1
            var inQuote = false
            var close: Int? = nil
            while i < s.endIndex {
                let b = s[i]
                if inQuote && b == ASCII.backslash { i += 2; continue }
                if b == ASCII.quote { inQuote.toggle() }
                if !inQuote && b == ASCII.greaterThan { close = i; break }
                i += 1
            }
            guard let c = close else { return .failure(.badPath) }
            path = s[(s.startIndex + 1)..<c]
            rest = s[(c + 1)...]
        } else {
            let end = s.firstIndex(of: ASCII.space) ?? s.endIndex
            path = s[..<end]
            rest = s[end...]
            if path.isEmpty { return .failure(.badPath) }
        }
        guard let mailbox = Mailbox.parse(path, allowNull: allowNull, allowUnqualified: allowUnqualified, utf8: utf8) else {
            return .failure(.badPath)
        }
        var params: [(keyword: String, value: String?)] = []
        if let f = rest.first, !ASCII.isSpace(f) { return .failure(.badParameter) }
        for token in rest.split(whereSeparator: { ASCII.isSpace($0) }) {
            let kv = token.split(separator: ASCII.equals, maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0]
            guard !key.isEmpty, key.allSatisfy({ ASCII.isAlpha($0) || ASCII.isDigit($0) || $0 == 45 }) else {
                return .failure(.badParameter)
            }
            var value: String? = nil
            if kv.count == 2 {
                guard !kv[1].isEmpty, kv[1].allSatisfy({ ($0 > 32 && $0 < 127 && $0 != ASCII.equals) || ($0 >= 0x80 && utf8) }),
                      !utf8 || Mailbox.isUTF8(kv[1]) else {
                    return .failure(.badParameter)
                }
                value = ASCII.string(kv[1])
            }
            params.append((keyword: ASCII.string(key.map { ASCII.isAlpha($0) ? $0 & 0xdf : $0 }), value: value))
        }
        return .success(PathArgument(mailbox: mailbox, parameters: params))
    }
}

// MARK: DSN parameters (RFC 3461)

/// `RET=` of MAIL (RFC 3461 §4.3): what a failure notice returns of the message.
public enum DSNReturn: UInt8, Equatable, Sendable {
    case full = 1
    case headers = 2

    /// The parameter value as sent upstream.
    public var text: String { self == .full ? "FULL" : "HDRS" }
}

/// `NOTIFY=` of RCPT (RFC 3461 §4.1): `NEVER`, or any of `SUCCESS`, `FAILURE`,
/// `DELAY`. Kept as bits; `text` gives the value back in a fixed order.
public struct DSNNotify: Equatable, Hashable, Sendable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let never = DSNNotify(rawValue: 1)
    public static let success = DSNNotify(rawValue: 2)
    public static let failure = DSNNotify(rawValue: 4)
    public static let delay = DSNNotify(rawValue: 8)

    public func contains(_ other: DSNNotify) -> Bool { rawValue & other.rawValue == other.rawValue }

    /// NEVER alone, or a non-empty set of the other three (RFC 3461 §4.1:
    /// "NEVER" MUST NOT be combined with any other keyword).
    public var isValid: Bool { rawValue == 1 || (rawValue != 0 && rawValue & 0xF1 == 0) }

    /// A failure notice may be sent for this recipient: FAILURE was asked for
    /// (an absent NOTIFY is handled by the caller as "FAILURE,DELAY", §4.1).
    public var wantsFailureNotice: Bool { contains(.failure) }

    public var text: String {
        if self == .never { return "NEVER" }
        var words: [String] = []
        if contains(.success) { words.append("SUCCESS") }
        if contains(.failure) { words.append("FAILURE") }
        if contains(.delay) { words.append("DELAY") }
        return words.joined(separator: ",")
    }
}

/// The DSN parameters of one recipient, as received (RFC 3461 §4.1, §4.2);
/// nil where the client gave none.
public struct RecipientParameters: Equatable, Sendable {
    public var notify: DSNNotify?
    /// The `ORCPT` value exactly as received ("rfc822;user+40example.com"),
    /// already checked by `DSNParameters.orcpt`.
    public var orcpt: [UInt8]?

    public init(notify: DSNNotify? = nil, orcpt: [UInt8]? = nil) {
        self.notify = notify
        self.orcpt = orcpt
    }

    public static let none = RecipientParameters()
    public var isEmpty: Bool { notify == nil && orcpt == nil }
}

/// Parsers of the DSN parameter values (RFC 3461 §4 and RFC 6533 §3). Each
/// returns the value to keep, or nil when it is malformed (the receiver then
/// answers 501 5.5.4). Values are kept as received and passed upstream as
/// they came; they are decoded only to be checked.
public enum DSNParameters {
    /// RFC 3461 §4.4: ENVID is at most 100 characters (counted decoded, so
    /// the raw xtext is at most three times that).
    public static let maxEnvelopeID = 100
    public static let maxEnvelopeIDRaw = 300
    /// RFC 3461 §4.2: "The entire ORCPT parameter MAY be up to 500 characters".
    public static let maxOriginalRecipient = 500

    /// `NOTIFY=` (RFC 3461 §4.1): "NEVER" or a comma list of SUCCESS,
    /// FAILURE, DELAY, any case. A keyword repeated in the list counts once
    /// (as Postfix takes it).
    public static func notify<C: Collection>(_ value: C) -> DSNNotify? where C.Element == UInt8 {
        guard !value.isEmpty, value.count <= 64 else { return nil }
        var bits: UInt8 = 0
        for word in Array(value).split(separator: ASCII.comma, omittingEmptySubsequences: false) {
            if ASCII.equalsIgnoringCase(word, Array("NEVER".utf8)) { bits |= DSNNotify.never.rawValue }
            else if ASCII.equalsIgnoringCase(word, Array("SUCCESS".utf8)) { bits |= DSNNotify.success.rawValue }
            else if ASCII.equalsIgnoringCase(word, Array("FAILURE".utf8)) { bits |= DSNNotify.failure.rawValue }
            else if ASCII.equalsIgnoringCase(word, Array("DELAY".utf8)) { bits |= DSNNotify.delay.rawValue }
            else { return nil }
        }
        let n = DSNNotify(rawValue: bits)
        return n.isValid ? n : nil
    }

    /// `RET=` (RFC 3461 §4.3): FULL or HDRS, any case.
    public static func ret<C: Collection>(_ value: C) -> DSNReturn? where C.Element == UInt8 {
        if ASCII.equalsIgnoringCase(value, Array("FULL".utf8)) { return .full }
        if ASCII.equalsIgnoringCase(value, Array("HDRS".utf8)) { return .headers }
        return nil
    }

    /// `ENVID=` (RFC 3461 §4.4): xtext whose decoded form is 1–100 printable
    /// US-ASCII characters (graphic and space). Returns the raw value.
    public static func envelopeID<C: Collection>(_ value: C) -> [UInt8]? where C.Element == UInt8 {
        guard !value.isEmpty, value.count <= maxEnvelopeIDRaw, let decoded = decodeXtext(value),
              !decoded.isEmpty, decoded.count <= maxEnvelopeID,
              decoded.allSatisfy({ $0 >= 32 && $0 <= 126 }) else { return nil }
        return Array(value)
    }

    /// `ORCPT=` (RFC 3461 §4.2): addr-type ";" xtext, at most 500 characters
    /// in all. The address is not held to its type's syntax (§4.2 says it is
    /// "NOT constrained"), only to its encoding: for `utf-8` (RFC 6533 §3)
    /// utf-8-addr-xtext, or with `utf8` (SMTPUTF8 in use) also
    /// utf-8-addr-unitext; for any other type xtext whose decoded form is
    /// printable US-ASCII (§4.2 and RFC 3464 §2.3.1). Returns the raw value.
    public static func originalRecipient<C: Collection>(_ value: C, utf8: Bool) -> [UInt8]? where C.Element == UInt8 {
        let v = Array(value)
        guard v.count <= maxOriginalRecipient, let semi = v.firstIndex(of: 59) else { return nil }
        let type = v[..<semi]
        let address = v[(semi + 1)...]
        // addr-type = atom (RFC 3461 §4.2, RFC 5322 §3.2.3), and RFC 6533's "utf-8".
        guard !type.isEmpty, type.allSatisfy({ Mailbox.isAtext($0) && $0 != ASCII.equals && $0 != 43 }),
              !address.isEmpty else { return nil }
        if ASCII.equalsIgnoringCase(type, Array("utf-8".utf8)) {
            guard isUTF8AddressText(address, unitext: utf8) else { return nil }
        } else {
            guard let decoded = decodeXtext(address), !decoded.isEmpty,
                  decoded.allSatisfy({ $0 >= 32 && $0 <= 126 }) else { return nil }
        }
        return v
    }

    /// RFC 3461 §4: xtext = *( xchar / hexchar ), xchar = "!".."~" except "+"
    /// and "=", hexchar = "+" two upper-case hex digits. Nil when malformed.
    public static func decodeXtext<C: Collection>(_ x: C) -> [UInt8]? where C.Element == UInt8 {
        let a = Array(x)
        var out: [UInt8] = []
        out.reserveCapacity(a.count)
        var i = 0
        while i < a.count {
            let b = a[i]
            if b == 43 {
                guard a.count - i >= 3,
                      let h = upperHex(a[i + 1]), let l = upperHex(a[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else if b >= 33 && b <= 126 && b != ASCII.equals {
                out.append(b)
                i += 1
            } else {
                return nil
            }
        }
        return out
    }

    /// xtext of `bytes` (RFC 3461 §4): what is not an xchar becomes "+XX".
    public static func encodeXtext<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for b in bytes {
            if b >= 33 && b <= 126 && b != 43 && b != ASCII.equals {
                out.append(b)
            } else {
                out.append(43)
                out.append(digits[Int(b >> 4)])
                out.append(digits[Int(b & 15)])
            }
        }
        return out
    }

    /// RFC 6533 §3: utf-8-addr-xtext = 1*(QCHAR / EmbeddedUnicodeChar), and
    /// with `unitext` utf-8-addr-unitext = 1*(QUCHAR / EmbeddedUnicodeChar),
    /// where QCHAR is printable ASCII but "+", "=" and "\", QUCHAR adds
    /// UTF8-non-ascii, and EmbeddedUnicodeChar is "\x{" HEXPOINT "}". A
    /// HEXPOINT is taken as 2–6 upper-case hex digits without a leading zero
    /// beyond two digits, naming a scalar value that is not a control character
    /// (so nothing decoded can end a line in a notice) nor a surrogate.
    static func isUTF8AddressText(_ s: ArraySlice<UInt8>, unitext: Bool) -> Bool {
        guard !s.isEmpty else { return false }
        var i = s.startIndex
        while i < s.endIndex {
            let b = s[i]
            if b == ASCII.backslash {
                // "\x{" HEXPOINT "}"
                guard s.endIndex - i >= 6, s[i + 1] == 120, s[i + 2] == 123 else { return false }
                var j = i + 3
                var value: UInt32 = 0
                var digits = 0
                while j < s.endIndex, digits <= 6, let d = upperHex(s[j]) {
                    value = value << 4 | UInt32(d)
                    digits += 1
                    j += 1
                }
                guard j < s.endIndex, s[j] == 125, (2...6).contains(digits),
                      digits == 2 || s[i + 3] != 48,
                      value >= 0x20, value != 0x7F, !(0x80...0x9F).contains(value),
                      !(0xD800...0xDFFF).contains(value), value <= 0x10FFFF else { return false }
                i = j + 1
            } else if b >= 0x21 && b <= 0x7E && b != 43 && b != ASCII.equals {
                i += 1
            } else if b >= 0x80 && unitext, let n = Mailbox.utf8NonASCIILength(s, at: i) {
                i += n
            } else {
                return false
            }
        }
        return true
    }

    /// ENVID's value for the Original-Envelope-Id field (RFC 3461 §6.3 (a),
    /// RFC 3464 §2.2.1): the xtext decoded; nil when it is not a valid ENVID.
    public static func envelopeIDField<C: Collection>(_ raw: C) -> String? where C.Element == UInt8 {
        guard envelopeID(raw) != nil, let decoded = decodeXtext(raw) else { return nil }
        return ASCII.string(decoded)
    }

    /// ORCPT's value for the Original-Recipient field (RFC 3461 §6.3 (d), RFC
    /// 3464 §2.3.1): "addr-type; address", the address decoded from xtext, or
    /// for "utf-8" in utf-8-addr-xtext form (RFC 6533 §3: each UTF8-non-ascii
    /// character as "\x{HEX}"), so the field stays ASCII in a
    /// message/delivery-status part. Nil when it is not a valid ORCPT.
    public static func originalRecipientField<C: Collection>(_ raw: C) -> String? where C.Element == UInt8 {
        let v = Array(raw)
        guard originalRecipient(v, utf8: true) != nil, let semi = v.firstIndex(of: 59) else { return nil }
        let type = v[..<semi]
        let address = v[(semi + 1)...]
        var out = Array(type) + Array("; ".utf8)
        if ASCII.equalsIgnoringCase(type, Array("utf-8".utf8)) {
            // Already QCHARs and "\x{…}": only the UTF-8 characters change.
            out += utf8AddressXtext(address, escapeASCII: false)
        } else {
            guard let decoded = decodeXtext(address) else { return nil }
            out += decoded
        }
        return ASCII.string(out)
    }

    /// utf-8-addr-xtext (RFC 6533 §3) of `s`: each UTF8-non-ascii character as
    /// "\x{HEX}" (upper-case, no leading zeros, at least two digits), and with
    /// `escapeASCII` each ASCII octet that is not a QCHAR ("+", "=", "\", space,
    /// controls) too. An octet that is not well-formed UTF-8 becomes "\x{FFFD}".
    /// For a mailbox in a Final-Recipient field, so a message/delivery-status
    /// part stays ASCII (RFC 6533 §4).
    public static func utf8AddressXtext<C: Collection>(_ s: C, escapeASCII: Bool) -> [UInt8] where C.Element == UInt8 {
        let a = Array(s)[...]
        let digits = Array("0123456789ABCDEF".utf8)
        func escape(_ scalar: UInt32, into out: inout [UInt8]) {
            var hex: [UInt8] = []
            var x = scalar
            while x > 0 { hex.insert(digits[Int(x & 15)], at: 0); x >>= 4 }
            while hex.count < 2 { hex.insert(48, at: 0) }
            out += Array("\\x{".utf8) + hex + [125]
        }
        var out: [UInt8] = []
        var i = a.startIndex
        while i < a.endIndex {
            let b = a[i]
            if b < 0x80 {
                let qchar = b >= 0x21 && b <= 0x7E && b != 43 && b != ASCII.equals && b != ASCII.backslash
                if qchar || !escapeASCII { out.append(b) } else { escape(UInt32(b), into: &out) }
                i += 1
            } else if let n = Mailbox.utf8NonASCIILength(a, at: i) {
                // The scalar value of the 2–4 octet sequence.
                var scalar = UInt32(b) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07)
                for k in 1..<n { scalar = scalar << 6 | (UInt32(a[i + k]) & 0x3F) }
                escape(scalar, into: &out)
                i += n
            } else {
                escape(0xFFFD, into: &out)
                i += 1
            }
        }
        return out
    }

    static func upperHex(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: return b - 48
        case 65...70: return b - 55
        default: return nil
        }
    }
}
