import Testing
@testable import PosternCore

let rewriteAliases = aliasMap([
    "root = admin@example.com",
    "cron-job = ops@example.com, admin@example.com",
    "postmaster = root",
])

let rewriteAliasesWithWildcard = aliasMap([
    "root = admin@example.com",
    "* = catchall@example.com",
])

/// Rewrites `text` fed in pieces of `chunk` octets through an output buffer of
/// `outputSize` octets, then finishes.
func rewriteRecipients(_ text: [UInt8], aliases: AliasMap = rewriteAliases, chunk: Int = Int.max,
                       outputSize: Int = 4096) -> [UInt8] {
    var r = RecipientRewriter(aliases: aliases)
    let reserved = r.reservedOctets
    var out: [UInt8] = []
    var output = [UInt8](repeating: 0, count: outputSize)
    var start = 0
    while start < text.count {
        let end = chunk >= text.count - start ? text.count : start + chunk
        var at = start
        while at < end {
            let step = text[at..<end].withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
            if step.consumed == 0 && step.produced == 0 {
                Issue.record("no progress with \(outputSize) octets of room")
                return out
            }
            out += output[0..<step.produced]
            at += step.consumed
        }
        start = end
    }
    while true {
        let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
        out += output[0..<e.produced]
        if e.done { break }
        if e.produced == 0 {
            Issue.record("finish made no progress with \(outputSize) octets of room")
            return out
        }
    }
    #expect(r.reservedOctets == reserved, "the rewriter allocated after init")
    #expect(r.heldOctets.field <= RecipientRewriter.maxField && r.heldOctets.rewritten <= RecipientRewriter.maxRewritten)
    return out
}

func rewriteRecipients(_ text: String, aliases: AliasMap = rewriteAliases) -> String {
    String(decoding: rewriteRecipients(Array(text.utf8), aliases: aliases), as: UTF8.self)
}

@Suite("To:/Cc: rewriting of local recipients (RFC 5322 §3.6.3, §3.4)")
struct RecipientRewriterTests {
    @Test("Each form of a local address in To: is replaced by its alias, display name and comments kept",
          arguments: [
        ("To: root", "To: admin@example.com"),
        ("To: Cron Daemon <root>", "To: Cron Daemon <admin@example.com>"),
        ("To: \"Cron Daemon\" <root@localhost>", "To: \"Cron Daemon\" <admin@example.com>"),
        ("To: root (Cron Daemon)", "To: admin@example.com (Cron Daemon)"),
        ("To: (boss) Root <ROOT@Gateway.Local> (x)", "To: (boss) Root <admin@example.com> (x)"),
        ("To: <root@raspberrypi>", "To: <admin@example.com>"),
        ("To: \"root\"@localhost", "To: admin@example.com"),
        ("To: postmaster", "To: admin@example.com"),
        // obs-angle-addr (RFC 5322 §4.4): the route stays as written.
        ("To: <@relay.example:root@localhost>", "To: <@relay.example:admin@example.com>"),
        ("To:root", "To: admin@example.com"),
    ])
    func forms(field: String, expected: String) {
        let text = "Subject: disk\r\n" + field + "\r\nX-Other: y\r\n\r\nbody root\r\n"
        #expect(rewriteRecipients(text) == "Subject: disk\r\n" + expected + "\r\nX-Other: y\r\n\r\nbody root\r\n")
    }

    @Test("An alias of several addresses replaces the mailbox with the list (RFC 5322 §3.4 address-list)",
          arguments: [
        ("To: Jobs <cron-job>", "To: ops@example.com, admin@example.com"),
        ("To: cron-job, bob@example.net", "To: ops@example.com, admin@example.com, bob@example.net"),
        ("Cc: x@example.net,cron-job (jobs)", "Cc: x@example.net,ops@example.com, admin@example.com (jobs)"),
    ])
    func lists(field: String, expected: String) {
        #expect(rewriteRecipients(field + "\r\n\r\n") == expected + "\r\n\r\n")
    }

    @Test("Mailboxes in groups are replaced; an empty group stays (RFC 5322 §3.4 group)", arguments: [
        ("To: Admins: root, cron-job;", "To: Admins: admin@example.com, ops@example.com, admin@example.com;"),
        ("To: undisclosed-recipients:;", "To: undisclosed-recipients:;"),
        ("To: Team: a@example.net;, root", "To: Team: a@example.net;, admin@example.com"),
        ("To: Team: root", "To: Team: admin@example.com"),
    ])
    func groups(field: String, expected: String) {
        #expect(rewriteRecipients(field + "\r\n\r\n") == expected + "\r\n\r\n")
    }

    @Test("A local address with no alias is left as written; other addresses in the field too")
    func unmappedStays() {
        #expect(rewriteRecipients("To: nobody, root\r\n\r\n") == "To: nobody, admin@example.com\r\n\r\n")
        #expect(rewriteRecipients("To: nobody\r\n\r\n") == "To: nobody\r\n\r\n")
        #expect(rewriteRecipients("To: nobody\r\n\r\n", aliases: rewriteAliasesWithWildcard)
                == "To: catchall@example.com\r\n\r\n")
    }

    @Test("A field with nothing to replace passes octet for octet, folding and all")
    func untouched() {
        let fields = [
            "To: a@example.net,\r\n  b@example.net   \r\n",
            "Cc:   Joe   <joe@example.net>\r\n",
            "To: root@example.com\r\n",
            "To: undisclosed-recipients:;\r\n",
            "To: \r\n",
        ]
        for f in fields {
            #expect(rewriteRecipients(f + "\r\nbody\r\n") == f + "\r\nbody\r\n")
        }
    }

    @Test("A field that does not parse as an address list passes unchanged (RFC 5322 §3.4)", arguments: [
        "To: John Smith\r\n",
        "To: \"unclosed root\r\n",
        "To: root (unclosed\r\n",
        "To: <root\r\n",
        "To: root @localhost\r\n",
        "To: A: B: root;;\r\n",
        "To: root; x\r\n",
        "To: root\rx\r\n",
        "To: root\nx\r\n",
        "To: <>\r\n",
    ])
    func unparseable(field: String) {
        #expect(rewriteRecipients(field + "\r\n") == field + "\r\n")
    }

    @Test("Field names compare without case, with blanks before the colon (RFC 5322 §1.2.2, §4.5)")
    func fieldNames() {
        #expect(rewriteRecipients("TO : root\r\ncC\t:root\r\n\r\n") == "TO : admin@example.com\r\ncC\t: admin@example.com\r\n\r\n")
        let others = "Tox: root\r\nTo-X: root\r\nX-To: root\r\nBcc: root\r\nResent-To: root\r\nC: root\r\nT: root\r\n"
        #expect(rewriteRecipients(others + "\r\n") == others + "\r\n")
    }

    @Test("A folded field is unfolded to be read (RFC 5322 §2.2.3) and written again folded")
    func folded() {
        let text = "To: Cron\r\n Daemon\r\n\t<root>,\r\n bob@example.net\r\nSubject: s\r\n x\r\n\r\nb\r\n"
        #expect(rewriteRecipients(text)
                == "To: Cron Daemon\t<admin@example.com>, bob@example.net\r\nSubject: s\r\n x\r\n\r\nb\r\n")
    }

    @Test("A long rewritten field is folded: lines of at most 78 octets where blanks allow, never over 998 (RFC 5322 §2.1.1)")
    func longListFolds() {
        let names = (0..<40).map { "n\($0)" }
        let map = aliasMap(names.map { "\($0) = someone-with-a-long-name-\($0)@example.com" })
        let text = "To: " + names.joined(separator: ", ") + "\r\n\r\n"
        let out = rewriteRecipients(Array(text.utf8), aliases: map)
        let header = String(decoding: out, as: UTF8.self)
        let lines = header.split(separator: "\r\n", omittingEmptySubsequences: false)
        #expect(lines.count > 10)
        for l in lines { #expect(l.utf8.count <= 78) }
        let unfolded = unfoldedText(out)
        #expect(unfolded == "To: " + names.map { "someone-with-a-long-name-\($0)@example.com" }.joined(separator: ", ") + "\r\n\r\n")
    }

    @Test("The body is untouched, To: lines in it included (RFC 5322 §2.1)")
    func body() {
        let text = "Subject: s\r\n\r\nTo: root\r\n\r\nCc: root\r\n"
        #expect(rewriteRecipients(text) == text)
        #expect(rewriteRecipients("\r\nTo: root\r\n") == "\r\nTo: root\r\n")
    }

    @Test("Where the header ends: at the empty line, at the end of the text, or in a field (RFC 5322 §2.1)",
          arguments: [
        ("To: root\r\n", "To: admin@example.com\r\n"),
        ("To: root", "To: admin@example.com"),
        ("To: root\r", "To: root\r"),
        ("To: root\r\n ", "To: admin@example.com"),
        ("To: root\r\n (x)", "To: admin@example.com (x)"),
        ("Subject: s\r\nTo", "Subject: s\r\nTo"),
        ("To", "To"),
        ("\r", "\r"),
        ("\r\n", "\r\n"),
        ("", ""),
        ("To: root\r\n\r", "To: admin@example.com\r\n\r"),
        ("\rTo: root\r\n\r\n", "\rTo: root\r\n\r\n"),
    ])
    func ends(text: String, expected: String) {
        #expect(rewriteRecipients(text) == expected)
    }

    @Test("A field longer than maxField passes unchanged, continuation lines included")
    func tooLong() {
        let long = "To: root," + String(repeating: " a@example.net,\r\n", count: RecipientRewriter.maxField / 16) + " root\r\n"
        let text = long + "Cc: root\r\n\r\nbody\r\n"
        #expect(rewriteRecipients(text) == long + "Cc: admin@example.com\r\n\r\nbody\r\n")
    }

    @Test("A field just under maxField is rewritten")
    func justUnder() {
        let padding = String(repeating: "word ", count: (RecipientRewriter.maxField - 200) / 5)
        let field = "To: root (" + padding + ")\r\n"
        let out = rewriteRecipients(Array((field + "\r\n").utf8))
        #expect(unfoldedText(out) == "To: admin@example.com (" + padding + ")\r\n\r\n")
    }

    @Test("A field whose aliases would make it longer than maxRewritten passes unchanged")
    func rewrittenTooLong() {
        let list = (0..<1000).map { "user-number-\($0)@example.com" }.joined(separator: ", ")
        let map = aliasMap(["all = " + list])
        let text = "To: all\r\nCc: a@example.net, all\r\n\r\n"
        #expect(rewriteRecipients(Array(text.utf8), aliases: map) == Array(text.utf8))
        let short = aliasMap(["all = " + (0..<100).map { "u\($0)@example.com" }.joined(separator: ", ")])
        #expect(rewriteRecipients(Array(text.utf8), aliases: short) != Array(text.utf8))
    }

    @Test("The message grows by at most maxGrowth: later fields pass unchanged once it is spent (RFC 1870 §3)")
    func growthBudget() {
        let list = (0..<400).map { "user-\($0)@example.com" }.joined(separator: ", ")
        let map = aliasMap(["all = " + list])
        let field = "Cc: all\r\n"
        let text = String(repeating: field, count: 4) + "\r\nbody\r\n"
        let out = rewriteRecipients(Array(text.utf8), aliases: map)
        // Each rewritten field adds about 9,700 octets: three fit in 32,768.
        let fields = String(decoding: out, as: UTF8.self).split(separator: "\r\nCc:", omittingEmptySubsequences: false)
        #expect(fields.count == 4)
        #expect(fields.filter { $0.hasPrefix(" all\r\n") || $0.hasPrefix("Cc: all\r\n") }.count == 1)
        #expect(out.count - text.utf8.count <= RecipientRewriter.maxGrowth)
        #expect(String(decoding: out, as: UTF8.self).hasSuffix("\r\nCc: all\r\n\r\nbody\r\n"))
        #expect(String(decoding: out, as: UTF8.self).hasPrefix("Cc: user-0@example.com, "))
        // A new message has the whole budget again.
        var r = RecipientRewriter(aliases: map)
        var output = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<2 {
            r.reset()
            let step = Array(text.utf8).withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
            var all = Array(output[0..<step.produced])
            let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
            all += output[0..<e.produced]
            #expect(all == out)
        }
    }

    @Test("Other fields, 8-bit octets and bare CR or LF pass through unchanged")
    func otherFields() {
        let raw: [UInt8] = Array("X-Raw: ".utf8) + [0xe9, 0x00, 0xff, 13, 10] + Array("Subject: a\rb\nc\r\n".utf8)
            + Array("To: J\u{f6}rg <root>\r\n\r\n".utf8) + [0xff, 13]
        let expected: [UInt8] = Array("X-Raw: ".utf8) + [0xe9, 0x00, 0xff, 13, 10] + Array("Subject: a\rb\nc\r\n".utf8)
            + Array("To: J\u{f6}rg <admin@example.com>\r\n\r\n".utf8) + [0xff, 13]
        #expect(rewriteRecipients(raw) == expected)
    }

    @Test("A local part that no envelope could carry is not taken for a recipient (RFC 5321 §4.1.2)")
    func notALocalPart() {
        #expect(rewriteRecipients("To: .\r\n\r\n", aliases: rewriteAliasesWithWildcard) == "To: .\r\n\r\n")
        #expect(rewriteRecipients("To: a..b\r\n\r\n", aliases: rewriteAliasesWithWildcard) == "To: a..b\r\n\r\n")
        #expect(rewriteRecipients("To: j\u{f6}rg\r\n\r\n", aliases: rewriteAliasesWithWildcard) == "To: j\u{f6}rg\r\n\r\n")
    }

    @Test("Control octets in a rewritten field stay: spaced out, a quoted local part could become a recipient (RFC 5321 §4.1.2)")
    func controlOctetsStay() {
        let text: [UInt8] = Array("Cc: root, \"".utf8) + [1, 0] + Array("x\" (\u{7f})\r\n\r\n".utf8)
        let expected: [UInt8] = Array("Cc: admin@example.com, \"".utf8) + [1, 0] + Array("x\" (\u{7f})\r\n\r\n".utf8)
        #expect(rewriteRecipients(text, aliases: rewriteAliasesWithWildcard) == expected)
    }

    @Test("A rewritten field loses only blanks at its ends and beyond 64 in a run (RFC 5322 §3.2.2 CFWS)")
    func blanks() {
        let run = String(repeating: " ", count: 100)
        let out = rewriteRecipients(Array(("To:   root ," + run + "(x)  \r\n\r\n").utf8))
        // Folded before the run of blanks (the line would pass 78 octets).
        #expect(String(decoding: out, as: UTF8.self) == "To: admin@example.com ,\r\n" + String(repeating: " ", count: 64) + "(x)\r\n\r\n")
    }

    @Test("The output does not depend on the input's chunks or the output room", arguments: [1, 2, 3, 5, 7, 64])
    func splits(size: Int) {
        let texts = [
            "Subject: s\r\nTo: Cron Daemon <root>,\r\n cron-job\r\nCc: root\r\n\r\nTo: root\r\n",
            "to: root\r\n\r\n",
            "To: root",
            "\r\n\r\nTo: root",
            "Cc: a@example.net\r\n\tb@example.net\r\nTo: \"x\" <postmaster>\r\n\r",
        ]
        for t in texts {
            let one = rewriteRecipients(Array(t.utf8))
            #expect(rewriteRecipients(Array(t.utf8), chunk: size) == one)
            #expect(rewriteRecipients(Array(t.utf8), outputSize: size) == one)
            #expect(rewriteRecipients(Array(t.utf8), chunk: size, outputSize: size) == one)
        }
    }

    @Test("reset() makes it ready for the next message, keeping its memory")
    func reset() {
        var r = RecipientRewriter(aliases: rewriteAliases)
        let reserved = r.reservedOctets
        var output = [UInt8](repeating: 0, count: 256)
        let first = Array("Subject: s\r\nTo: ro".utf8)
        _ = first.withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
        r.reset()
        let text = Array("To: root\r\n\r\n".utf8)
        let step = text.withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
        var out = Array(output[0..<step.produced])
        let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
        out += output[0..<e.produced]
        #expect(e.done)
        #expect(out == Array("To: admin@example.com\r\n\r\n".utf8))
        #expect(r.reservedOctets == reserved)
    }

    @Test("finish after done produces nothing more")
    func finishTwice() {
        var r = RecipientRewriter(aliases: rewriteAliases)
        var output = [UInt8](repeating: 0, count: 64)
        let text = Array("To: root".utf8)
        _ = text.withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
        let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
        #expect(e.done && e.produced == 21)
        let again = output.withUnsafeMutableBytes { r.finish(into: $0) }
        #expect(again.done && again.produced == 0)
    }
}

@Suite("Address lists in To:/Cc: for aliasing (RFC 5322 §3.4, §4.4)")
struct AliasHeaderAddressesTests {
    func parts(_ value: String) -> [String]? {
        let v = Array(value.utf8)
        return AliasHeaderAddresses.parse(v)?.map { f in
            let d = f.domain.map { "@" + String(decoding: v[$0], as: UTF8.self) } ?? ""
            return String(decoding: v[f.mailbox], as: UTF8.self) + "|" + String(decoding: v[f.localPart], as: UTF8.self) + d
        }
    }

    @Test("Mailboxes, groups and empty elements are found with their parts")
    func found() {
        #expect(parts(" root") == ["root|root"])
        #expect(parts(" a@b.example, Joe <j@c.example> (x), ,\"q r\"@d") == ["a@b.example|a@b.example", "Joe <j@c.example>|j@c.example", "\"q r\"@d|\"q r\"@d"])
        #expect(parts(" G: a, b@c;, <d>") == ["a|a", "b@c|b@c", "<d>|d"])
        #expect(parts(" John Q. Public <jqp@[192.0.2.1]>") == ["John Q. Public <jqp@[192.0.2.1]>|jqp@[192.0.2.1]"])
        #expect(parts("") == [])
        #expect(parts(" , ,") == [])
        #expect(parts(" G:;") == [])
    }

    @Test("What is not an address list gives nil", arguments: [
        " John Smith", " a@", " <a", " a b@c", " \"x", " (x", " G: H: a;;", " a;", " a@b c", " <a@[1.2.3.4>", " a <b> c",
    ])
    func refused(value: String) {
        #expect(parts(value) == nil)
    }
}

/// The text with each CRLF that is followed by a blank removed (RFC 5322 §2.2.3).
func unfoldedText(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        if bytes[i] == 13 && i + 2 < bytes.count && bytes[i + 1] == 10 && (bytes[i + 2] == 32 || bytes[i + 2] == 9) {
            i += 2
            continue
        }
        out.append(bytes[i])
        i += 1
    }
    return String(decoding: out, as: UTF8.self)
}
