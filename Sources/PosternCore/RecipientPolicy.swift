/// Which recipients the receiver accepts (`[receiver] allow_recipients`), so that
/// Postern is never an open relay (DESIGN.md principle 7).
///
/// Patterns, compared case-insensitively:
/// - `*` — any recipient
/// - `*@example.com` or `@example.com` — any mailbox at that domain
/// - `*@*.example.com` — any mailbox at a subdomain of example.com
/// - `ops@example.net` — that mailbox only
/// - `postmaster` — the domain-less postmaster (RFC 5321 §4.1.1.3)
public struct RecipientPolicy: Equatable, Sendable {
    public enum Pattern: Equatable, Sendable {
        case any
        case domain([UInt8])
        case subdomainsOf([UInt8])
        case mailbox([UInt8])
    }

    public let patterns: [Pattern]

    public init(patterns: [Pattern]) { self.patterns = patterns }

    public static let anyone = RecipientPolicy(patterns: [.any])

    /// Parses one pattern; nil when it is not one of the forms above.
    public static func pattern(_ text: String) -> Pattern? {
        let t = ASCII.lowercased(text.utf8)
        if t == [42] { return .any }
        var domainPart: ArraySlice<UInt8>? = nil
        if t.starts(with: [42, ASCII.at]) { domainPart = t[2...] }
        else if t.first == ASCII.at { domainPart = t[1...] }
        if let d = domainPart {
            if d.starts(with: [42, ASCII.dot]) {
                let base = d.dropFirst(2)
                return Mailbox.isDomain(base) ? .subdomainsOf(Array(base)) : nil
            }
            return Mailbox.isDomain(d) ? .domain(Array(d)) : nil
        }
        guard let m = Mailbox.parse(t[...], allowNull: false) else { return nil }
        return .mailbox(m.bytes)
    }

    public func allows(_ rcpt: Mailbox) -> Bool {
        let lowered = ASCII.lowercased(rcpt.bytes)
        let domain = rcpt.domain.map { ASCII.lowercased($0) }
        for p in patterns {
            switch p {
            case .any: return true
            case .domain(let d): if domain == d { return true }
            case .subdomainsOf(let d):
                if let dom = domain, dom.count > d.count + 1, dom.last(d.count) == d[...],
                   dom[dom.count - d.count - 1] == ASCII.dot { return true }
            case .mailbox(let m): if lowered == m { return true }
            }
        }
        return false
    }
}

extension Array where Element == UInt8 {
    fileprivate func last(_ n: Int) -> ArraySlice<UInt8> { self[(count - n)...] }
}
