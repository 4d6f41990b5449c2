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
    public static func parse(_ raw: ArraySlice<UInt8>, allowNull: Bool, allowUnqualified: Bool = false) -> Mailbox? {
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
        guard isDomain(domain) || isAddressLiteral(domain) else { return nil }
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
    static func isDomain(_ d: ArraySlice<UInt8>) -> Bool {
        guard !d.isEmpty, d.count <= maxDomain else { return false }
        for label in d.split(separator: ASCII.dot, omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63,
                  label.first != 45, label.last != 45 else { return false }
            for b in label where !(ASCII.isAlpha(b) || ASCII.isDigit(b) || b == 45) { return false }
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
    /// does: alerting devices send both.
    public static func parse(_ arg: ArraySlice<UInt8>, prefix: String, allowNull: Bool,
                             allowUnqualified: Bool = false) -> Result<PathArgument, Failure> {
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
        guard let mailbox = Mailbox.parse(path, allowNull: allowNull, allowUnqualified: allowUnqualified) else {
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
                guard !kv[1].isEmpty, kv[1].allSatisfy({ $0 > 32 && $0 < 127 && $0 != ASCII.equals }) else {
                    return .failure(.badParameter)
                }
                value = ASCII.string(kv[1])
            }
            params.append((keyword: ASCII.string(key.map { ASCII.isAlpha($0) ? $0 & 0xdf : $0 }), value: value))
        }
        return .success(PathArgument(mailbox: mailbox, parameters: params))
    }
}
