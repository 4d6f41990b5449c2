/// The `[aliases]` section of postern.conf: where mail for a local recipient
/// goes. Cron, smartd and mdadm write to `root`, which means nothing to the
/// smarthost; the map turns it into real addresses.
///
/// ```
/// [aliases]
/// root = admin@example.com
/// cron-job = ops@example.com, admin@example.com
/// postmaster = root
/// * = admin@example.com          # every other local name
/// ```
///
/// A recipient is *local* when it has no domain (`root`), or its domain is one
/// of the board's own names (`localDomains`: `localhost`, the receiver's
/// `hostname`, the system's host name; compared without case, a trailing dot
/// ignored, RFC 5321 §2.4). The receiver asks `isLocal` for each RCPT TO and
/// `expand` for the addresses to queue instead; `RecipientRewriter` asks the
/// same for the addresses in To: and Cc:.
///
/// Rules, after Postfix's aliases(5) and virtual(5) where this text is silent:
/// - A name is a local part (a dot-atom, RFC 5322 §3.2.3; at most 64 octets,
///   RFC 5321 §4.5.3.1.1) or `*`, the name of every local part with no entry
///   of its own. Names compare without ASCII case, as Postfix folds the lookup
///   key to lower case (postalias(1)); a quoted local part (`"root"`) is looked
///   up by its content (RFC 5321 §4.1.2: it is the same mailbox). A name
///   written twice, in any case, is an error naming both lines. A name with a
///   domain (`root@host`) is an error: the domain adds nothing (every local
///   domain shares one set of names, as in Postfix's local(8)) and would
///   suggest that other domains could be aliased too.
/// - A value is a comma-separated list of one or more targets. A target is a
///   full address (`Mailbox.parse`, optionally in angle brackets) or a local
///   name (no domain, or a local domain), which is resolved through the map
///   again; one with no entry goes to `*`, and without `*` the build fails.
///   Commands (`|cmd`), files (`/path`) and `:include:` of aliases(5) are not
///   supported: Postern delivers nothing on the board itself.
/// - Resolution happens once, in `build`: `expand` returns the final
///   (non-local) addresses, duplicates removed (by `Mailbox.canonical`), in
///   the order first seen. A loop (`a = b`, `b = a`; `a = a`; `* = x` where `x`
///   is unmapped) is an error naming the line where it closes and the chain.
///
/// Bounds, so that a hostile configuration cannot make the build slow or big:
/// `maxNames` (1,000) entries; a chain of at most `maxChainDepth` (100)
/// aliases (sendmail's `MaxAliasRecursion` is 10); at most `maxExpansion`
/// (1,000) addresses reached from one name, counted before duplicates are
/// removed (Postfix's `virtual_alias_expansion_limit` is also 1,000), which
/// bounds the work of the build to about 2,000 steps per name; at most `maxTotal` (10,000) addresses stored for all names together.
/// The stored addresses share the storage of the targets parsed from the
/// configuration, so the map holds little more than the `[aliases]` text plus
/// 24 octets per stored address (at most 240 KB). While building, an alias
/// on the chain being resolved costs a few words (its addresses are merged
/// only once all its targets are resolved), and one merge at a time holds a
/// set of at most `maxExpansion` references.
public struct AliasMap: Equatable, Sendable {
    /// One `name = value` line of the section, as the configuration parser
    /// read it (comments stripped, blanks trimmed).
    public struct Line: Equatable, Sendable {
        public var name: String
        public var value: String
        /// The line number in the configuration file, for errors.
        public var line: Int

        public init(name: String, value: String, line: Int) {
            self.name = name
            self.value = value
            self.line = line
        }
    }

    /// Entries in the section at most.
    public static let maxNames = 1000
    /// Aliases in one chain at most (`a = b`, `b = c`, … counts each name).
    public static let maxChainDepth = 100
    /// Addresses reached from one name at most, duplicates included.
    public static let maxExpansion = 1000
    /// Addresses stored for all names together at most.
    public static let maxTotal = 10_000

    /// The lower-cased name ("*" for the wildcard) → its final addresses.
    private var entries: [[UInt8]: [Mailbox]]
    /// Lower-cased, without a trailing dot, no duplicates.
    private var localDomains: [[UInt8]]

    private static let wildcard: [UInt8] = [42] // "*"

    /// No aliases and no local domains: every address with a domain is not
    /// local, and no local part expands.
    public static let empty = AliasMap(entries: [:], localDomains: [])

    private init(entries: [[UInt8]: [Mailbox]], localDomains: [[UInt8]]) {
        self.entries = entries
        self.localDomains = localDomains
    }

    /// No entry at all (not even `*`).
    public var isEmpty: Bool { entries.isEmpty }

    /// Every name with its final addresses, names sorted (`*` first), for
    /// `postern check-config`.
    public var resolved: [(name: String, addresses: [Mailbox])] {
        entries.keys.sorted { $0.lexicographicallyPrecedes($1) }
            .map { (ASCII.string($0), entries[$0] ?? []) }
    }

    /// Is this recipient local: no domain, or a domain that is one of the
    /// board's own names (without case, RFC 5321 §2.4)? The null path `<>` is
    /// never a recipient and is not local.
    public func isLocal(_ mailbox: Mailbox) -> Bool {
        if mailbox.isNull { return false }
        guard let domain = mailbox.domain else { return true }
        return isLocalDomain(domain)
    }

    /// Is `domain` one of the board's own names? A trailing dot is ignored.
    func isLocalDomain(_ domain: ArraySlice<UInt8>) -> Bool {
        var d = domain
        if d.last == ASCII.dot { d = d.dropLast() }
        return localDomains.contains { ASCII.equalsIgnoringCase($0, d) }
    }

    /// The final (non-local) addresses for a local part, in the order first
    /// seen, without duplicates; nil when it has no entry and there is no `*`
    /// (the receiver answers 550 5.1.1 then, RFC 3463 §3.2). Never empty.
    public func expand(localPart: ArraySlice<UInt8>) -> [Mailbox]? {
        entries[Self.key(localPart)] ?? entries[Self.wildcard]
    }

    /// The lookup key of a local part: lower-cased, and a quoted-string
    /// replaced by its content (`"root"` is `root`, RFC 5321 §4.1.2).
    static func key(_ localPart: ArraySlice<UInt8>) -> [UInt8] {
        guard localPart.count >= 2, localPart.first == ASCII.quote, localPart.last == ASCII.quote else {
            return ASCII.lowercased(localPart)
        }
        var out: [UInt8] = []
        out.reserveCapacity(localPart.count)
        var escaped = false
        for b in localPart.dropFirst().dropLast() {
            if !escaped && b == ASCII.backslash {
                escaped = true
                continue
            }
            escaped = false
            out.append(ASCII.lower(b))
        }
        return out
    }

    // MARK: building

    /// A target of one line, parsed.
    private enum Target {
        /// A final address, with its canonical form for removing duplicates.
        case remote(Mailbox, canonical: [UInt8])
        /// A local name, as written (for messages) and as a key.
        case local(written: String, key: [UInt8])
    }

    private struct Entry {
        var name: String
        var line: Int
        var targets: [Target]
    }

    /// One alias being resolved, on the chain from the name being built.
    /// It holds no addresses: those are merged when all its targets are
    /// resolved, so a deep chain costs a few words per alias.
    private struct Frame {
        var node: Int
        /// How the chain reached this alias: the target as written, and
        /// " -> *" when it went through the wildcard.
        var via: String
        /// The next target to look at.
        var next = 0
    }

    /// A final address and its canonical form, which the lists share.
    private struct Resolved {
        var mailbox: Mailbox
        var canonical: [UInt8]
    }

    /// Builds and resolves the map, or gives the first error, naming the line
    /// and the alias. Errors come in line order: each line's own faults
    /// first, then local targets with no alias, then loops and bounds.
    ///
    /// The error's `file` is empty: the configuration parser sets its own
    /// (`ConfigParser.error(line, message)`).
    public static func build(_ lines: [Line], localDomains: [[UInt8]]) -> Result<AliasMap, ConfigError> {
        do throws(ConfigError) {
            return .success(try buildThrowing(lines, localDomains: localDomains))
        } catch {
            return .failure(error)
        }
    }

    private static func failure(_ line: Int, _ message: String) -> ConfigError {
        ConfigError(file: "", line: line, message: message)
    }

    private static func buildThrowing(_ lines: [Line], localDomains rawDomains: [[UInt8]]) throws(ConfigError) -> AliasMap {
        var domains: [[UInt8]] = []
        for raw in rawDomains {
            var d = raw[...]
            if d.last == ASCII.dot { d = d.dropLast() }
            let lower = ASCII.lowercased(d)
            if !lower.isEmpty && !domains.contains(lower) { domains.append(lower) }
        }
        let shell = AliasMap(entries: [:], localDomains: domains)

        // Each line on its own: the name, duplicates, the targets.
        var entries: [Entry] = []
        var index: [[UInt8]: Int] = [:]
        for l in lines {
            guard entries.count < maxNames else {
                throw failure(l.line, "more than \(maxNames) aliases")
            }
            let name = Array(l.name.utf8)
            let shown = ASCII.printable(name, limit: 80)
            if name.contains(ASCII.at) {
                throw failure(l.line, "alias \(shown): a name is a local part without a domain (every local domain shares the names); only local recipients are aliased")
            }
            guard name == wildcard || isDotAtom(name[...]) else {
                throw failure(l.line, "alias \(shown): a name is a local part (letters, digits and !#$%&'*+-/=?^_`{|}~ between dots, at most \(Mailbox.maxLocalPart) octets) or *")
            }
            let key = ASCII.lowercased(name)
            if let first = index[key] {
                throw failure(l.line, "alias \(shown) is defined twice (lines \(entries[first].line) and \(l.line))")
            }
            let targets = try parseTargets(Array(l.value.utf8), alias: shown, line: l.line, in: shell)
            index[key] = entries.count
            entries.append(Entry(name: shown, line: l.line, targets: targets))
        }

        // Every local target needs an alias, its own or the wildcard's.
        let wildcardNode = index[wildcard]
        for e in entries {
            for case .local(let written, let key) in e.targets where index[key] == nil && wildcardNode == nil {
                throw failure(e.line, "alias \(e.name): target \(written) is a local name with no alias")
            }
        }
        /// The alias a local target leads to, and how the chain shows the step.
        func child(_ written: String, _ key: [UInt8]) -> (node: Int, via: String)? {
            if let c = index[key] { return (c, written) }
            if let w = wildcardNode { return (w, written + " -> *") }
            return nil // refused above
        }

        // Resolve each alias once, depth first without recursion (a chain
        // costs no stack), each result reused by the aliases that lead to it.
        // An alias is merged when every target of it is resolved.
        var state = [UInt8](repeating: 0, count: entries.count) // 0 new, 1 on the chain, 2 resolved
        var resolved = [[Resolved]](repeating: [], count: entries.count)
        var total = 0
        for root in entries.indices where state[root] == 0 {
            var stack = [Frame(node: root, via: entries[root].name)]
            state[root] = 1
            while let top = stack.indices.last {
                let node = stack[top].node
                let entry = entries[node]
                guard stack[top].next < entry.targets.count else {
                    stack.removeLast()
                    let list = try merged(node, entries, resolved, child)
                    state[node] = 2
                    total += list.count
                    if total > maxTotal {
                        throw failure(entry.line, "aliases expand to more than \(maxTotal) addresses in all")
                    }
                    resolved[node] = list
                    continue
                }
                let target = entry.targets[stack[top].next]
                stack[top].next += 1
                guard case .local(let written, let key) = target, let (next, via) = child(written, key) else { continue }
                switch state[next] {
                case 2:
                    continue
                case 1:
                    let start = stack.firstIndex { $0.node == next } ?? 0
                    var chain = [entries[next].name]
                    for f in stack[(start + 1)...] { chain.append(f.via) }
                    chain.append(via)
                    throw failure(entry.line, "alias loop: " + shownChain(chain))
                default:
                    guard stack.count < maxChainDepth else {
                        var chain = [entries[root].name]
                        for f in stack.dropFirst() { chain.append(f.via) }
                        chain.append(via)
                        throw failure(entry.line, "alias \(entries[root].name): a chain of more than \(maxChainDepth) aliases: " + shownChain(chain))
                    }
                    state[next] = 1
                    stack.append(Frame(node: next, via: via))
                }
            }
        }

        var map: [[UInt8]: [Mailbox]] = [:]
        for (key, node) in index { map[key] = resolved[node].map { $0.mailbox } }
        return AliasMap(entries: map, localDomains: domains)
    }

    /// The final addresses of `node`, whose local targets are all resolved:
    /// its targets in order, each alias's list in its place, duplicates
    /// (`Mailbox.canonical`) left out. A second mention of an alias adds
    /// nothing and is not counted; everything else counts towards
    /// `maxExpansion`, duplicates included, so the work is bounded too.
    private static func merged(_ node: Int, _ entries: [Entry], _ resolved: [[Resolved]],
                               _ child: (String, [UInt8]) -> (node: Int, via: String)?) throws(ConfigError) -> [Resolved] {
        let entry = entries[node]
        var list: [Resolved] = []
        var seen: Set<[UInt8]> = []
        var mergedAliases: Set<Int> = []
        var reached = 0
        for target in entry.targets {
            switch target {
            case .remote(let mailbox, let canonical):
                reached += 1
                if reached > maxExpansion { break }
                if seen.insert(canonical).inserted { list.append(Resolved(mailbox: mailbox, canonical: canonical)) }
            case .local(let written, let key):
                guard let (c, _) = child(written, key), mergedAliases.insert(c).inserted else { continue }
                reached += resolved[c].count
                if reached > maxExpansion { break }
                for r in resolved[c] where seen.insert(r.canonical).inserted { list.append(r) }
            }
            if reached > maxExpansion {
                throw failure(entry.line, "alias \(entry.name): expands to more than \(maxExpansion) addresses")
            }
        }
        return list
    }

    /// `a -> b -> c`, with the middle of a long chain left out.
    private static func shownChain(_ names: [String]) -> String {
        var shown = names
        if names.count > 12 {
            shown = Array(names.prefix(6)) + ["..."] + Array(names.suffix(5))
        }
        var out = ""
        for (i, n) in shown.enumerated() {
            if i > 0 { out += " -> " }
            out += n
        }
        return out
    }

    /// The targets of one value: commas outside quoted-strings separate them
    /// (a quoted local part may hold a comma, RFC 5321 §4.1.2).
    private static func parseTargets(_ value: [UInt8], alias: String, line: Int,
                                     in map: AliasMap) throws(ConfigError) -> [Target] {
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0
        var i = 0
        var inQuote = false
        while i < value.count {
            let b = value[i]
            if inQuote && b == ASCII.backslash {
                i += 2
                continue
            }
            if b == ASCII.quote { inQuote.toggle() }
            if b == ASCII.comma && !inQuote {
                pieces.append(value[start..<i])
                start = i + 1
            }
            i += 1
        }
        pieces.append(value[start..<value.count])
        if pieces.count == 1 && ASCII.trimmed(pieces[0]).isEmpty {
            throw failure(line, "alias \(alias): no target address")
        }
        if pieces.count > maxExpansion {
            throw failure(line, "alias \(alias): expands to more than \(maxExpansion) addresses")
        }
        var targets: [Target] = []
        for piece in pieces {
            let t = ASCII.trimmed(piece)
            let shown = ASCII.printable(t, limit: 300)
            if t.isEmpty { throw failure(line, "alias \(alias): an empty address in the list") }
            if t.first == 124 /* | */ || t.first == 47 /* / */ || ASCII.hasPrefixIgnoringCase(t, ":include:") {
                throw failure(line, "alias \(alias): \(shown): commands, files and :include: are not supported; give addresses")
            }
            var path = t
            if path.first == ASCII.lessThan && path.last == ASCII.greaterThan && path.count >= 2 {
                path = path.dropFirst().dropLast()
            }
            if path.contains(ASCII.at) {
                guard let m = Mailbox.parse(path, allowNull: false), let domain = m.domain else {
                    throw failure(line, "alias \(alias): \(shown) is not a valid address")
                }
                if map.isLocalDomain(domain) {
                    targets.append(.local(written: shown, key: key(m.localPart)))
                } else {
                    targets.append(.remote(m, canonical: m.canonical))
                }
            } else {
                guard isDotAtom(path) else {
                    throw failure(line, "alias \(alias): \(shown) is not a valid address")
                }
                targets.append(.local(written: shown, key: ASCII.lowercased(path)))
            }
        }
        return targets
    }

    /// dot-atom-text (RFC 5322 §3.2.3) of at most 64 octets (RFC 5321 §4.5.3.1.1).
    static func isDotAtom(_ s: ArraySlice<UInt8>) -> Bool {
        guard !s.isEmpty, s.count <= Mailbox.maxLocalPart, s.first != ASCII.dot, s.last != ASCII.dot else { return false }
        var previousDot = false
        for b in s {
            if b == ASCII.dot {
                if previousDot { return false }
                previousDot = true
            } else {
                guard Mailbox.isAtext(b) else { return false }
                previousDot = false
            }
        }
        return true
    }
}
