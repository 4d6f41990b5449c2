import Testing
@testable import PosternCore

func mailbox(_ s: String, allowNull: Bool = false) -> Mailbox? {
    Mailbox.parse(Array(s.utf8)[...], allowNull: allowNull)
}

func path(_ s: String, prefix: String = "FROM:", allowNull: Bool = true) -> Result<PathArgument, PathArgument.Failure> {
    PathArgument.parse(Array(s.utf8)[...], prefix: prefix, allowNull: allowNull)
}

@Suite("Mailbox syntax (RFC 5321 §4.1.2)")
struct MailboxParseTests {
    @Test("Valid mailboxes are kept verbatim", arguments: [
        "user@example.com",
        "first.last@sub.example.org",
        "a@b",
        "User+tag@Example.COM",
        "!#$%&'*+-/=?^_`{|}~@example.com",
        "x@a-b.c-d.example",
        "x@123.example",
        "\"quoted local\"@example.com",
        "\"a\\\"b\"@example.com",
        "\"\"@example.com",
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@[IPv6:::1]",
    ])
    func valid(text: String) {
        let m = mailbox(text)
        #expect(m != nil)
        #expect(m?.text == text)
        #expect(m?.description == "<" + text + ">")
    }

    @Test("Invalid mailboxes are refused", arguments: [
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "@example.com",
        "user@",
        "user",
        "user@@example.com",
        "us er@example.com",
        "us(er@example.com",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@example..com",
        "user@.example.com",
        "user@example.com.",
        "\"unterminated@example.com",
        "\"bad\u{1}\"@example.com",
        "\"a\"b@example.com",
        "user@[192.0.2.256]",
        "user@[192.0.2.1",
        "user@[::1]",
        "user@[IPv6:192.0.2.1]",
        "user@[IPv6:not-an-address]",
        "user@[]",
        "us\u{e9}r@example.com",
    ])
    func invalid(text: String) {
        #expect(mailbox(text) == nil)
    }

    @Test("The null path is accepted only where allowed (RFC 5321 §4.1.1.2)")
    func nullPath() {
        #expect(mailbox("", allowNull: true) == Mailbox.null)
        #expect(mailbox("", allowNull: true)?.isNull == true)
        #expect(mailbox("", allowNull: false) == nil)
    }

    @Test("A domain-less postmaster, in any case (RFC 5321 §4.1.1.3)", arguments: ["postmaster", "Postmaster", "POSTMASTER"])
    func postmaster(text: String) {
        let m = mailbox(text)
        #expect(m?.text == text)
        #expect(m?.atIndex == nil)
        #expect(m?.domain == nil)
        #expect(m.map { Array($0.localPart) } == Array(text.utf8))
    }

    @Test("Local part and domain are split at the right '@'")
    func parts() throws {
        let m = try #require(mailbox("\"a@b\"@example.com"))
        #expect(ASCII.string(m.localPart) == "\"a@b\"")
        #expect(m.domain.map { ASCII.string($0) } == "example.com")
    }

    @Test("A source route is dropped (RFC 5321 §4.1.2, Appendix C)", arguments: [
        ("@relay.example:user@example.com", "user@example.com"),
        ("@a.example,@b.example:user@example.com", "user@example.com"),
    ])
    func sourceRoute(text: String, expected: String) {
        #expect(mailbox(text)?.text == expected)
    }

    @Test("A source route without its colon is refused")
    func sourceRouteWithoutColon() {
        #expect(mailbox("@relay.example,user@example.com") == nil)
    }

    @Test("A source route with nothing after it is refused, not a trap (RFC 5321 §4.1.2)", arguments: [
        "@a:", "@a.example,@b.example:", "@:", "@",
    ])
    func sourceRouteWithoutMailbox(text: String) {
        #expect(mailbox(text) == nil)
        #expect(mailbox(text, allowNull: true) == nil)
        #expect(path("FROM:<\(text)>") == .failure(.badPath))
        #expect(path("TO:<\(text)>", prefix: "TO:", allowNull: false) == .failure(.badPath))
    }

    @Test("Each hop of a source route is an At-domain, \"@\" Domain (RFC 5321 §4.1.2)", arguments: [
        "@:user@example.com", "relay:user@example.com", "@relay..example:user@example.com",
        "@a.example,:user@example.com", "@a.example,b.example:user@example.com", "@a b:user@example.com",
    ])
    func sourceRouteHops(text: String) {
        #expect(mailbox(text) == nil)
    }

    @Test("The 256-octet path limit counts the source route (RFC 5321 §4.5.3.1.3)")
    func pathLimitWithRoute() {
        let route = "@" + Self.domain(length: 240) + ":"
        #expect(mailbox(route + "user@example.com") == nil)
        #expect(mailbox("@r.example:user@example.com")?.text == "user@example.com")
    }

    @Test("The local part is at most 64 octets (RFC 5321 §4.5.3.1.1)")
    func localPartLimit() {
        let ok = String(repeating: "a", count: 64) + "@example.com"
        let tooLong = String(repeating: "a", count: 65) + "@example.com"
        #expect(mailbox(ok) != nil)
        #expect(mailbox(tooLong) == nil)
        let quotedOK = "\"" + String(repeating: "a", count: 62) + "\"@example.com"
        let quotedLong = "\"" + String(repeating: "a", count: 63) + "\"@example.com"
        #expect(mailbox(quotedOK) != nil)
        #expect(mailbox(quotedLong) == nil)
    }

    /// A domain of exactly `n` octets in labels of at most 63.
    static func domain(length n: Int) -> String {
        var labels: [String] = []
        var left = n
        while left > 0 {
            let take = min(63, left == 64 ? 61 : left)  // never leave a lone trailing dot
            labels.append(String(repeating: "d", count: take))
            left -= take
            if left > 0 { left -= 1 }  // the dot
        }
        return labels.joined(separator: ".")
    }

    @Test("The whole path is at most 256 octets including the brackets (RFC 5321 §4.5.3.1.3)")
    func pathLimit() {
        // "<" + local(10) + "@" + domain + ">" = 256 → domain of 243.
        let local = String(repeating: "l", count: 10)
        let atLimit = local + "@" + Self.domain(length: 243)
        let overLimit = local + "@" + Self.domain(length: 244)
        #expect(atLimit.utf8.count + 2 == 256)
        #expect(overLimit.utf8.count + 2 == 257)
        #expect(mailbox(atLimit) != nil)
        #expect(mailbox(overLimit) == nil)
    }

    @Test("A domain label is at most 63 octets (RFC 1035 §2.3.4)")
    func labelLimit() {
        #expect(mailbox("u@" + String(repeating: "a", count: 63) + ".example") != nil)
        #expect(mailbox("u@" + String(repeating: "a", count: 64) + ".example") == nil)
    }

    @Test("canonical lower-cases the domain only (RFC 5321 §2.4)")
    func canonical() throws {
        let m = try #require(mailbox("Ops.Team@Example.COM"))
        #expect(m.canonical == Array("Ops.Team@example.com".utf8))
        let pm = try #require(mailbox("PostMaster"))
        #expect(pm.canonical == Array("postmaster".utf8))
    }
}

@Suite("MAIL FROM / RCPT TO arguments (RFC 5321 §4.1.2, §4.1.1.2–3)")
struct PathArgumentTests {
    @Test("A path in angle brackets")
    func bracketed() {
        let r = path("FROM:<a@example.com>")
        #expect(r == .success(PathArgument(mailbox: mailbox("a@example.com")!, parameters: [])))
    }

    @Test("The verb's argument prefix is case-insensitive", arguments: ["FROM:", "from:", "From:"])
    func prefixCase(prefix: String) {
        #expect((try? path(prefix + "<a@example.com>").get())?.mailbox.text == "a@example.com")
    }

    @Test("The null reverse-path <>")
    func nullReversePath() {
        #expect((try? path("FROM:<>").get())?.mailbox == Mailbox.null)
        #expect(path("TO:<>", prefix: "TO:", allowNull: false) == .failure(.badPath))
    }

    @Test("A missing prefix", arguments: ["<a@example.com>", "FROM <a@example.com>", "FRM:<a@b>", "TO:<a@b>", ""])
    func missingPrefix(arg: String) {
        #expect(path(arg) == .failure(.missingPrefix))
    }

    @Test("Tolerated: a space after the colon and a path without brackets (as Postfix)", arguments: [
        "FROM: <a@example.com>", "FROM:a@example.com", "FROM: a@example.com", "FROM:\t<a@example.com>",
    ])
    func tolerated(arg: String) {
        #expect((try? path(arg).get())?.mailbox.text == "a@example.com")
    }

    @Test("Bad paths", arguments: [
        "FROM:<a@example.com", "FROM:<a@@example.com>", "FROM:", "FROM: ", "FROM:<.a@example.com>",
        "FROM:<a@b> <c@d>x", "FROM:<\"a@b>",
    ])
    func badPath(arg: String) {
        let r = path(arg)
        #expect(r == .failure(.badPath) || r == .failure(.badParameter), "\(arg): \(r)")
        #expect(r != .failure(.missingPrefix))
    }

    @Test("Unbracketed and unterminated paths are bad paths", arguments: ["FROM:<a@example.com", "FROM:", "FROM: "])
    func badPathExact(arg: String) {
        #expect(path(arg) == .failure(.badPath))
    }

    @Test("A '>' inside a quoted local part does not close the path")
    func quotedAngle() {
        #expect((try? path("FROM:<\"a>b\"@example.com>").get())?.mailbox.text == "\"a>b\"@example.com")
    }

    @Test("Parameters: keywords upper-cased, values kept (RFC 5321 §4.1.2 Mail-parameters)")
    func parameters() throws {
        let p = try path("FROM:<a@example.com> size=1000 BODY=8BITMIME x-flag").get()
        #expect(p.parameters.count == 3)
        #expect(p.parameters[0].keyword == "SIZE")
        #expect(p.parameters[0].value == "1000")
        #expect(p.parameters[1].keyword == "BODY")
        #expect(p.parameters[1].value == "8BITMIME")
        #expect(p.parameters[2].keyword == "X-FLAG")
        #expect(p.parameters[2].value == nil)
    }

    @Test("Parameters after an unbracketed path")
    func parametersUnbracketed() throws {
        let p = try path("FROM:a@example.com SIZE=5").get()
        #expect(p.mailbox.text == "a@example.com")
        #expect(p.parameters.map { $0.keyword } == ["SIZE"])
        #expect(p.parameters.map { $0.value } == ["5"])
    }

    @Test("Several spaces between parameters are accepted")
    func extraSpaces() throws {
        let p = try path("FROM:<a@b>  SIZE=1   BODY=7BIT ").get()
        #expect(p.parameters.map { $0.keyword } == ["SIZE", "BODY"])
    }

    @Test("Bad parameters", arguments: [
        "FROM:<a@b>SIZE=1",
        "FROM:<a@b> SIZE=",
        "FROM:<a@b> =1",
        "FROM:<a@b> SI_ZE=1",
        "FROM:<a@b> SIZE=1=2",
        "FROM:<a@b> SIZE=\u{1}",
        "FROM:<a@b> K\u{e9}Y=1",
    ])
    func badParameters(arg: String) {
        #expect(path(arg) == .failure(.badParameter))
    }

    @Test("PathArgument equality compares parameters")
    func equality() throws {
        let a = try path("FROM:<a@b> SIZE=1").get()
        let b = try path("FROM:<a@b> SIZE=2").get()
        let c = try path("FROM:<a@b> size=1").get()
        #expect(a != b)
        #expect(a == c)
    }
}

@Suite("Recipient policy: no open relay (DESIGN.md principle 7)")
struct RecipientPolicyTests {
    @Test("Pattern forms", arguments: [
        ("*", RecipientPolicy.Pattern.any),
        ("*@example.com", .domain(Array("example.com".utf8))),
        ("@example.com", .domain(Array("example.com".utf8))),
        ("*@EXAMPLE.com", .domain(Array("example.com".utf8))),
        ("*@*.example.com", .subdomainsOf(Array("example.com".utf8))),
        ("@*.example.com", .subdomainsOf(Array("example.com".utf8))),
        ("ops@example.net", .mailbox(Array("ops@example.net".utf8))),
        ("Ops@Example.NET", .mailbox(Array("ops@example.net".utf8))),
        ("postmaster", .mailbox(Array("postmaster".utf8))),
    ] as [(String, RecipientPolicy.Pattern)])
    func patterns(text: String, expected: RecipientPolicy.Pattern) {
        #expect(RecipientPolicy.pattern(text) == expected)
    }

    @Test("Not patterns", arguments: ["", "**", "*@", "@", "*@*", "*@-bad.com", "ops", "a@b@c", "*.example.com",
                                      "*@*.", "user@", "*@exa mple.com"])
    func notPatterns(text: String) {
        #expect(RecipientPolicy.pattern(text) == nil)
    }

    static func policy(_ patterns: String...) -> RecipientPolicy {
        RecipientPolicy(patterns: patterns.map { RecipientPolicy.pattern($0)! })
    }

    @Test("* allows anyone")
    func anyone() {
        #expect(RecipientPolicy.anyone.allows(mailbox("x@y.z")!))
        #expect(Self.policy("*").allows(mailbox("postmaster")!))
    }

    @Test("A domain pattern", arguments: [
        ("a@example.com", true), ("A@EXAMPLE.COM", true), ("a@sub.example.com", false),
        ("a@example.org", false), ("a@xexample.com", false), ("postmaster", false),
    ])
    func domain(rcpt: String, allowed: Bool) {
        #expect(Self.policy("*@example.com").allows(mailbox(rcpt)!) == allowed)
    }

    @Test("A subdomain pattern", arguments: [
        ("a@sub.example.com", true), ("a@deep.sub.example.com", true), ("a@SUB.Example.Com", true),
        ("a@example.com", false), ("a@subexample.com", false), ("a@sub.example.org", false),
    ])
    func subdomains(rcpt: String, allowed: Bool) {
        #expect(Self.policy("*@*.example.com").allows(mailbox(rcpt)!) == allowed)
    }

    @Test("A mailbox pattern", arguments: [
        ("ops@example.net", true), ("OPS@Example.Net", true), ("ops2@example.net", false),
        ("dev@example.net", false), ("ops@sub.example.net", false),
    ])
    func mailboxPattern(rcpt: String, allowed: Bool) {
        #expect(Self.policy("ops@example.net").allows(mailbox(rcpt)!) == allowed)
    }

    @Test("The domain-less postmaster pattern (RFC 5321 §4.1.1.3)")
    func postmasterPattern() {
        let p = Self.policy("postmaster")
        #expect(p.allows(mailbox("Postmaster")!))
        #expect(!p.allows(mailbox("postmaster@example.com")!))
    }

    @Test("Several patterns: any one allows")
    func several() {
        let p = Self.policy("*@example.com", "ops@example.net")
        #expect(p.allows(mailbox("a@example.com")!))
        #expect(p.allows(mailbox("ops@example.net")!))
        #expect(!p.allows(mailbox("a@example.net")!))
    }

    @Test("No patterns allow nobody")
    func none() {
        #expect(!RecipientPolicy(patterns: []).allows(mailbox("a@example.com")!))
    }
}
