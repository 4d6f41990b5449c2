import Testing
@testable import PosternCore

/// `[aliases]` lines numbered from 1, from "name = value" strings.
func aliasLines(_ lines: [String]) -> [AliasMap.Line] {
    lines.enumerated().map { n, l in
        let parts = l.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let name = parts[0].trimmedSpaces()
        let value = parts.count > 1 ? parts[1].trimmedSpaces() : ""
        return AliasMap.Line(name: name, value: value, line: n + 1)
    }
}

let aliasDomains: [[UInt8]] = ["localhost", "gateway.local", "raspberrypi"].map { Array($0.utf8) }

func buildAliases(_ lines: [String], domains: [[UInt8]] = aliasDomains) -> Result<AliasMap, ConfigError> {
    AliasMap.build(aliasLines(lines), localDomains: domains)
}

func aliasMap(_ lines: [String]) -> AliasMap {
    switch buildAliases(lines) {
    case .success(let m): return m
    case .failure(let e):
        Issue.record("unexpected error: \(e)")
        return .empty
    }
}

func aliasError(_ lines: [String]) -> ConfigError? {
    if case .failure(let e) = buildAliases(lines) { return e }
    return nil
}

/// The texts of `expand` for a local part.
func aliasExpansion(_ map: AliasMap, _ localPart: String) -> [String]? {
    map.expand(localPart: Array(localPart.utf8)[...])?.map(\.text)
}

extension Substring {
    fileprivate func trimmedSpaces() -> String {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

@Suite("Aliases for local recipients (aliases(5), virtual(5); RFC 5321 §4.1.2)")
struct AliasMapTests {
    static let example = [
        "root = admin@example.com",
        "cron-job = ops@example.com, admin@example.com",
        "postmaster = root",
        "* = admin@example.com",
    ]

    @Test("The example of postern.conf: direct, lists, chains and the wildcard")
    func example() {
        let map = aliasMap(Self.example)
        #expect(!map.isEmpty)
        #expect(aliasExpansion(map, "root") == ["admin@example.com"])
        #expect(aliasExpansion(map, "cron-job") == ["ops@example.com", "admin@example.com"])
        #expect(aliasExpansion(map, "postmaster") == ["admin@example.com"])
        #expect(aliasExpansion(map, "smartd") == ["admin@example.com"])
    }

    @Test("Without a wildcard an unmapped local part expands to nothing (the receiver answers 550 5.1.1)")
    func unmapped() {
        let map = aliasMap(["root = admin@example.com"])
        #expect(aliasExpansion(map, "root") == ["admin@example.com"])
        #expect(aliasExpansion(map, "bob") == nil)
    }

    @Test("Names compare without case, as Postfix folds the lookup key (postalias(1))")
    func nameCase() {
        let map = aliasMap(["Root = admin@example.com", "MAILER-daemon = ops@example.com"])
        #expect(aliasExpansion(map, "ROOT") == ["admin@example.com"])
        #expect(aliasExpansion(map, "root") == ["admin@example.com"])
        #expect(aliasExpansion(map, "Mailer-Daemon") == ["ops@example.com"])
    }

    @Test("A quoted local part is the same mailbox as its content (RFC 5321 §4.1.2)")
    func quotedLocalPart() {
        let map = aliasMap(["root = admin@example.com"])
        #expect(aliasExpansion(map, "\"root\"") == ["admin@example.com"])
        #expect(aliasExpansion(map, "\"r\\oot\"") == ["admin@example.com"])
        #expect(aliasExpansion(map, "\"root \"") == nil)
    }

    @Test("A name written twice, in any case, is an error naming both lines")
    func duplicate() {
        let e = aliasError(["root = a@example.com", "ops = b@example.com", "ROOT = c@example.com"])
        #expect(e?.line == 3)
        #expect(e?.message == "alias ROOT is defined twice (lines 1 and 3)")
        #expect(aliasError(["* = a@example.com", "* = b@example.com"])?.line == 2)
    }

    @Test("A name with a domain is refused: only local parts are keys")
    func nameWithDomain() {
        let e = aliasError(["root@localhost = a@example.com"])
        #expect(e?.line == 1)
        #expect(e?.message.hasPrefix("alias root@localhost: a name is a local part without a domain") == true)
    }

    @Test("A name that is not a dot-atom is refused (RFC 5322 §3.2.3, RFC 5321 §4.5.3.1.1)",
          arguments: ["a b", ".root", "root.", "a..b", "\"root\"", "r(o)ot", "", String(repeating: "x", count: 65)])
    func badName(name: String) {
        let e = AliasMap.build([AliasMap.Line(name: name, value: "a@example.com", line: 7)], localDomains: aliasDomains)
        guard case .failure(let error) = e else {
            Issue.record("accepted \(name)")
            return
        }
        #expect(error.line == 7)
        #expect(error.message.hasPrefix("alias "))
    }

    @Test("A name of 64 octets and names with atext specials are accepted (RFC 5322 §3.2.3)")
    func goodNames() {
        let long = String(repeating: "x", count: 64)
        let map = aliasMap([long + " = a@example.com", "a.b+c_d-e = b@example.com", "o'brien = c@example.com"])
        #expect(aliasExpansion(map, long) == ["a@example.com"])
        #expect(aliasExpansion(map, "A.B+C_D-E") == ["b@example.com"])
        #expect(aliasExpansion(map, "o'brien") == ["c@example.com"])
    }

    @Test("Empty values, empty list elements and bad addresses are errors naming the line and the address")
    func badValues() {
        #expect(aliasError(["root ="])?.message == "alias root: no target address")
        #expect(aliasError(["root = a@example.com, , b@example.com"])?.message == "alias root: an empty address in the list")
        #expect(aliasError(["root = a@example.com,"])?.message == "alias root: an empty address in the list")
        #expect(aliasError(["x = a@example.com", "root = joe@"])?.line == 2)
        #expect(aliasError(["x = a@example.com", "root = joe@"])?.message == "alias root: joe@ is not a valid address")
        #expect(aliasError(["root = a b"])?.message == "alias root: a b is not a valid address")
        #expect(aliasError(["root = joe@exa_mple.com"])?.message == "alias root: joe@exa_mple.com is not a valid address")
        #expect(aliasError(["root = j\u{f6}rg@example.com"])?.line == 1)
    }

    @Test("Commands, files and :include: of aliases(5) are refused with a clear message",
          arguments: ["|/usr/bin/procmail", "/var/mail/root", ":include:/etc/ops"])
    func unsupportedTargets(target: String) {
        let e = aliasError(["root = " + target])
        #expect(e?.message == "alias root: \(target): commands, files and :include: are not supported; give addresses")
    }

    @Test("A target may be in angle brackets and its local part quoted, with a comma inside (RFC 5321 §4.1.2)")
    func targetForms() {
        let map = aliasMap(["root = <admin@example.com>, \"a,b\"@example.com"])
        #expect(aliasExpansion(map, "root") == ["admin@example.com", "\"a,b\"@example.com"])
    }

    @Test("A local target with no alias and no wildcard is an error naming the line")
    func localTargetWithoutAlias() {
        let e = aliasError(["ops = a@example.com", "root = ops, bob"])
        #expect(e?.line == 2)
        #expect(e?.message == "alias root: target bob is a local name with no alias")
        // @localhost and the board's names are local names too.
        #expect(aliasError(["root = bob@LOCALHOST"])?.message == "alias root: target bob@LOCALHOST is a local name with no alias")
        #expect(aliasError(["root = bob@raspberrypi"])?.line == 1)
    }

    @Test("A local target with no alias of its own goes to the wildcard")
    func localTargetThroughWildcard() {
        let map = aliasMap(["root = bob, carol@example.com", "* = ops@example.com"])
        #expect(aliasExpansion(map, "root") == ["ops@example.com", "carol@example.com"])
    }

    @Test("Targets at a local domain are local names; at another domain they are final (RFC 5321 §2.4)")
    func localDomainTargets() {
        let map = aliasMap(["root = admin@Gateway.Local, ops@localhost, x@gateway.local.example",
                            "admin = a@example.com", "ops = o@example.com"])
        #expect(aliasExpansion(map, "root") == ["a@example.com", "o@example.com", "x@gateway.local.example"])
    }

    @Test("Chains resolve at build time to final addresses, duplicates removed in first-seen order")
    func chainsAndDuplicates() {
        let map = aliasMap([
            "all = ops, dev, root",
            "ops = a@example.com, b@EXAMPLE.com",
            "dev = b@example.com, c@example.com, ops",
            "root = A@example.com",
        ])
        // Domains compare without case (Mailbox.canonical); local parts with it.
        #expect(aliasExpansion(map, "all") == ["a@example.com", "b@EXAMPLE.com", "c@example.com", "A@example.com"])
        #expect(aliasExpansion(map, "dev") == ["b@example.com", "c@example.com", "a@example.com"])
    }

    @Test("expand never returns a local address")
    func neverLocal() {
        let map = aliasMap(Self.example + ["ops = root@localhost, x@raspberrypi, y@example.org"])
        for name in ["root", "cron-job", "postmaster", "ops", "anything"] {
            for m in map.expand(localPart: Array(name.utf8)[...]) ?? [] {
                #expect(!map.isLocal(m))
                #expect(m.domain != nil)
            }
        }
        #expect(aliasExpansion(map, "ops") == ["admin@example.com", "y@example.org"])
    }

    @Test("Loops are errors naming the line where the loop closes and the chain", arguments: [
        (["a = b", "b = a"], 2, "alias loop: a -> b -> a"),
        (["a = a"], 1, "alias loop: a -> a"),
        (["a = b", "b = c", "c = x@example.com, a"], 3, "alias loop: a -> b -> c -> a"),
        (["* = x"], 1, "alias loop: * -> x -> *"),
        (["a = x", "* = a"], 2, "alias loop: a -> x -> * -> a"),
        (["root = root@localhost"], 1, "alias loop: root -> root@localhost"),
        (["x = a@example.com", "a = b", "b = c", "c = b"], 4, "alias loop: b -> c -> b"),
    ])
    func loops(lines: [String], line: Int, message: String) {
        let e = aliasError(lines)
        #expect(e?.line == line)
        #expect(e?.message == message)
    }

    @Test("A diamond (two paths to one alias) is no loop")
    func diamond() {
        let map = aliasMap(["a = b, c", "b = d", "c = d", "d = x@example.com"])
        #expect(aliasExpansion(map, "a") == ["x@example.com"])
    }

    @Test("Chains of up to 100 aliases resolve; a longer one is an error")
    func chainDepth() {
        func chain(_ n: Int) -> [String] {
            (0..<n).map { "a\($0) = " + ($0 == n - 1 ? "end@example.com" : "a\($0 + 1)") }
        }
        #expect(aliasExpansion(aliasMap(chain(AliasMap.maxChainDepth)), "a0") == ["end@example.com"])
        let e = aliasError(chain(AliasMap.maxChainDepth + 1))
        #expect(e?.line == AliasMap.maxChainDepth)
        #expect(e?.message.hasPrefix("alias a0: a chain of more than 100 aliases: a0 -> a1 -> ") == true)
        #expect(e?.message.hasSuffix(" -> a100") == true)
    }

    @Test("One name reaches at most 1,000 addresses, counted before duplicates are removed")
    func expansionBound() {
        let thousand = (0..<1000).map { "u\($0)@example.com" }
        #expect(aliasExpansion(aliasMap(["big = " + thousand.joined(separator: ", ")]), "big")?.count == 1000)
        let e = aliasError(["big = " + (thousand + ["one@example.com"]).joined(separator: ", ")])
        #expect(e?.message == "alias big: expands to more than 1000 addresses")
        // Two lists of 600 with 500 in common: 700 addresses, 1,200 reached.
        let b = (0..<600).map { "u\($0)@example.com" }.joined(separator: ", ")
        let c = (100..<700).map { "u\($0)@example.com" }.joined(separator: ", ")
        let e2 = aliasError(["all = b, c", "b = " + b, "c = " + c])
        #expect(e2?.line == 1)
        #expect(e2?.message == "alias all: expands to more than 1000 addresses")
        // The same alias named twice counts once.
        #expect(aliasExpansion(aliasMap(["all = b, b, B", "b = " + b]), "all")?.count == 600)
    }

    @Test("A chain of aliases that each add a shared list of 999 stops at the expansion bound")
    func deepSharedList() {
        let shared = "b = " + (0..<999).map { "u\($0)@example.com" }.joined(separator: ", ")
        let chain = (0..<99).map { "a\($0) = b, a\($0 + 1)" } + ["a99 = end@example.com", shared]
        let e = aliasError(chain)
        // a98 reaches 999 + 1 addresses; a97 reaches 999 + 1,000.
        #expect(e?.line == 98)
        #expect(e?.message == "alias a97: expands to more than 1000 addresses")
    }

    @Test("All names together store at most 10,000 addresses")
    func totalBound() {
        let thousand = (0..<1000).map { "u\($0)@example.com" }.joined(separator: ", ")
        let ten = ["* = " + thousand] + (1...9).map { "n\($0) = *" }
        #expect(aliasError(ten) == nil)
        let e = aliasError(ten + ["n10 = *"])
        #expect(e?.line == 11)
        #expect(e?.message == "aliases expand to more than 10000 addresses in all")
    }

    @Test("At most 1,000 names")
    func nameBound() {
        let lines = (0...1000).map { "n\($0) = x@example.com" }
        #expect(aliasError(Array(lines.prefix(1000))) == nil)
        #expect(aliasError(lines)?.line == 1001)
        #expect(aliasError(lines)?.message == "more than 1000 aliases")
    }

    @Test("Local recipients: no domain, or one of the board's names without case; a trailing dot ignored (RFC 5321 §2.4)")
    func isLocal() {
        let map = AliasMap.build([], localDomains: [Array("Gateway.LOCAL.".utf8), Array("localhost".utf8), []])
        guard case .success(let m) = map else {
            Issue.record("no map")
            return
        }
        #expect(m.isEmpty)
        func mailbox(_ s: String) -> Mailbox { Mailbox.parse(Array(s.utf8)[...], allowNull: false)! }
        #expect(m.isLocal(mailbox("root@gateway.local")))
        #expect(m.isLocal(mailbox("root@LOCALHOST")))
        #expect(m.isLocal(mailbox("postmaster")))
        #expect(m.isLocal(Mailbox(bytes: Array("root".utf8), atIndex: nil)))
        #expect(!m.isLocal(mailbox("root@gateway.local.example")))
        #expect(!m.isLocal(mailbox("root@example.com")))
        #expect(!m.isLocal(mailbox("root@[127.0.0.1]")))
        #expect(!m.isLocal(.null))
    }

    @Test("The empty map expands nothing")
    func empty() {
        #expect(AliasMap.empty.isEmpty)
        #expect(AliasMap.empty.expand(localPart: Array("root".utf8)[...]) == nil)
        #expect(aliasMap([]).isEmpty)
    }

    @Test("The first error in line order wins: a line's own fault before a later line's")
    func errorOrder() {
        // Line 1's target has no alias, but line 2's bad address is a fault of its own line.
        let e = aliasError(["root = bob", "x = @@"])
        #expect(e?.line == 2)
        let e2 = aliasError(["a = b", "b = a", "c = nobody"])
        #expect(e2?.message == "alias c: target nobody is a local name with no alias")
    }
}
