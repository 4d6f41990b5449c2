@testable import PosternCore

// AliasMap.build over any [aliases] lines, then expand.
//
// Input: one byte of choices (bit 7: structured mode; bits 0-1: which local
// domains), then
// - text mode: the text, split into lines at LF, each split at its first "="
//   into name and value (blanks trimmed; no "=" gives an empty value), as the
//   configuration parser hands them over;
// - structured mode: pairs of bytes, each a target (kind and number) of the
//   current line, a byte of 255 starting the next line; names n0-n7 and "*",
//   targets n0-n7, n0-n7@localhost, "*", u0-u7 at example.com in two cases.
//   This reaches chains, loops and diamonds at once, and each map built is
//   checked against a plain recursive resolution.
//
// Checked: no trap; an error names one of the input's lines; a map that
// builds expands every name it has (and every local part when it has "*");
// expand never returns a local address, an address that does not parse, a
// duplicate (Mailbox.canonical) or more than maxExpansion addresses; all names
// together stay within maxTotal; and in structured mode the expansions are
// those of the reference, which fails exactly when the build must.

let domainSets: [[[UInt8]]] = [
    [],
    [Array("localhost".utf8)],
    [Array("localhost".utf8), Array("Gateway.Local.".utf8), Array("raspberrypi".utf8)],
    [Array("LOCALHOST".utf8), Array("example.com".utf8)],
]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choices = input.byte()
    let domains = domainSets[Int(choices & 3)]
    if choices & 0x80 != 0 {
        structured(&input, domains)
    } else {
        text(Array(input.rest()), domains)
    }
}

func text(_ text: [UInt8], _ domains: [[UInt8]]) {
    var lines: [AliasMap.Line] = []
    var probes: [[UInt8]] = [Array("root".utf8), Array("*".utf8), Array("\"root\"".utf8), []]
    for (n, raw) in text.split(separator: ASCII.lf, omittingEmptySubsequences: false).enumerated() {
        let name: ArraySlice<UInt8>
        let value: ArraySlice<UInt8>
        if let eq = raw.firstIndex(of: ASCII.equals) {
            name = ASCII.trimmed(raw[..<eq])
            value = ASCII.trimmed(raw[(eq + 1)...])
        } else {
            name = ASCII.trimmed(raw)
            value = []
        }
        lines.append(AliasMap.Line(name: ASCII.string(name), value: ASCII.string(value), line: n + 1))
        probes.append(Array(name))
        // The words of the values too: the local names the lines point at.
        for w in value.split(whereSeparator: { $0 == ASCII.comma || ASCII.isSpace($0) }) {
            probes.append(Array(w.prefix { $0 != ASCII.at }))
        }
    }
    switch AliasMap.build(lines, localDomains: domains) {
    case .failure(let e):
        require(e.line >= 1 && e.line <= lines.count, "an error on line \(e.line) of \(lines.count)")
        require(!e.message.isEmpty, "an error without a message")
    case .success(let map):
        let wildcard = map.expand(localPart: Array("*".utf8)[...]) != nil
        var total = 0
        var counted: Set<[UInt8]> = []
        for l in lines {
            let key = ASCII.lowercased(Array(l.name.utf8))
            require(map.expand(localPart: key[...]) != nil, "a name of the map expands to nothing")
            if counted.insert(key).inserted, let e = map.expand(localPart: key[...]) {
                total += e.count
            }
        }
        require(total <= AliasMap.maxTotal, "\(total) addresses stored")
        require(lines.count <= AliasMap.maxNames, "\(lines.count) names")
        for p in probes {
            let e = map.expand(localPart: p[...])
            require(!wildcard || e != nil, "a local part expands to nothing beside a wildcard")
            if let e { checkExpansion(e, map) }
        }
    }
}

func checkExpansion(_ e: [Mailbox], _ map: AliasMap) {
    require(!e.isEmpty, "an empty expansion")
    require(e.count <= AliasMap.maxExpansion, "an expansion of \(e.count) addresses")
    var seen: Set<[UInt8]> = []
    for m in e {
        require(m.domain != nil, "an address without a domain")
        require(!map.isLocal(m), "a local address in an expansion: " + m.text)
        require(Mailbox.parse(m.bytes[...], allowNull: false) == m, "an address that does not parse: " + m.text)
        require(seen.insert(m.canonical).inserted, "a duplicate address: " + m.text)
    }
}

// MARK: structured mode

/// A target of the structured mode, as written in the value.
func target(_ kind: UInt8, _ number: UInt8) -> String {
    let k = number & 7
    switch kind % 5 {
    case 0: return "n\(k)"
    case 1: return "n\(k)@localhost"
    case 2: return "*"
    case 3: return "u\(k)@example.com"
    default: return "u\(k)@Example.COM"
    }
}

func structured(_ input: inout FuzzInput, _ domains: [[UInt8]]) {
    // Each line: a name (one byte) and targets (two bytes each) up to 255.
    var lines: [(name: String, targets: [String])] = []
    while !input.isEmpty && lines.count < 12 {
        let n = input.byte()
        let name = n & 15 == 15 ? "*" : "n\(n & 7)"
        var targets: [String] = []
        while !input.isEmpty && targets.count < 8 {
            let kind = input.byte()
            if kind == 255 { break }
            targets.append(target(kind, input.byte()))
        }
        lines.append((name, targets))
    }
    var config: [AliasMap.Line] = []
    for (n, l) in lines.enumerated() {
        var value = ""
        for (i, t) in l.targets.enumerated() { value += (i > 0 ? ", " : "") + t }
        config.append(AliasMap.Line(name: l.name, value: value, line: n + 1))
    }
    let localhost = domains.contains { ASCII.equalsIgnoringCase($0, Array("localhost".utf8)) }
    let exampleIsLocal = domains.contains { ASCII.equalsIgnoringCase($0, Array("example.com".utf8)) }
    let result = AliasMap.build(config, localDomains: domains)

    // The reference: plain recursion over the lines, first definition of a
    // name only (a second one must fail the build anyway).
    var defined: [String: [String]] = [:]
    var duplicate = false
    var emptyValue = false
    for l in lines {
        if defined[l.name] != nil { duplicate = true }
        if l.targets.isEmpty { emptyValue = true }
        if defined[l.name] == nil { defined[l.name] = l.targets }
    }
    /// The addresses of `name`, or nil for a loop or a local name with no
    /// alias. A name resolved once is loop-free from wherever it is reached,
    /// so its result is kept.
    var memo: [String: [String]] = [:]
    func resolve(_ name: String, _ path: [String]) -> [String]? {
        guard let targets = defined[name] ?? defined["*"] else { return nil }
        let node = defined[name] != nil ? name : "*"
        if path.contains(node) { return nil }
        if let known = memo[node] { return known }
        var out: [String] = []
        for t in targets {
            var local: String? = nil
            if t.hasSuffix("@localhost") {
                // Without localhost among the local domains, an address like any other.
                if localhost { local = String(t.prefix(t.utf8.count - 10)) } else { out.append(t) }
            } else if t.hasPrefix("u") {
                if exampleIsLocal { local = String(t.prefix(2)) } else { out.append(t) }
            } else {
                local = t
            }
            if let l = local {
                guard let sub = resolve(l, path + [node]) else { return nil }
                out += sub
            }
        }
        // Duplicates by canonical form: the domain without case.
        var seen: [String] = []
        var unique: [String] = []
        for a in out {
            let c = String(a.prefix(3)) // "uK@" decides: the domain differs only in case
            if !seen.contains(c) {
                seen.append(c)
                unique.append(a)
            }
        }
        memo[node] = unique
        return unique
    }
    var expected: [String: [String]] = [:]
    var referenceFails = duplicate || emptyValue
    if !referenceFails {
        for name in defined.keys {
            guard let e = resolve(name, []) else {
                referenceFails = true
                break
            }
            expected[name] = e
        }
    }
    switch result {
    case .failure(let e):
        require(referenceFails, "the build failed where the reference resolves: " + e.message)
        require(e.line >= 1 && e.line <= config.count, "an error on line \(e.line) of \(config.count)")
    case .success(let map):
        require(!referenceFails, "the build succeeded where the reference fails")
        for (name, e) in expected {
            let got = map.expand(localPart: Array(name.utf8)[...]) ?? []
            checkExpansion(got, map)
            var texts: [String] = []
            for m in got { texts.append(m.text) }
            require(texts == e, "expansion of \(name) differs from the reference")
        }
    }
}
