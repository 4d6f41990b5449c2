import Testing
@testable import PosternCore

func wire(_ r: Reply) -> String { String(decoding: r.encoded(), as: UTF8.self) }

@Suite("Reply encoding (RFC 5321 §4.2, RFC 2034 §3)")
struct ReplyEncodingTests {
    @Test("A single-line reply with an enhanced code")
    func singleLineEnhanced() {
        #expect(wire(Reply(250, "2.1.0", "Ok")) == "250 2.1.0 Ok\r\n")
        #expect(wire(Reply(550, "5.7.1", "relay access denied")) == "550 5.7.1 relay access denied\r\n")
    }

    @Test("A reply without an enhanced code (greeting, EHLO, 354)")
    func singleLinePlain() {
        #expect(wire(Reply(220, nil, "mx.example ESMTP Postern")) == "220 mx.example ESMTP Postern\r\n")
        #expect(wire(Reply(354, nil, "End data with <CR><LF>.<CR><LF>")) == "354 End data with <CR><LF>.<CR><LF>\r\n")
    }

    @Test("Multi-line: a hyphen after the code on every line but the last (RFC 5321 §4.2.1)")
    func multiLine() {
        let r = Reply(250, nil, ["mx.example", "PIPELINING", "SIZE 1000"])
        #expect(wire(r) == "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    }

    @Test("Multi-line with an enhanced code repeats it on every line (RFC 2034 §4)")
    func multiLineEnhanced() {
        let r = Reply(550, "5.7.1", ["first", "second", "third"])
        #expect(wire(r) == "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n")
    }

    @Test("An enhanced code with empty text has no trailing space")
    func enhancedEmptyText() {
        #expect(wire(Reply(250, "2.0.0", "")) == "250 2.0.0\r\n")
    }

    @Test("No lines at all becomes one empty line")
    func noLines() {
        let r = Reply(250, "2.0.0", [String]())
        #expect(r.lines == [""])
        #expect(wire(r) == "250 2.0.0\r\n")
    }

    @Test("Reply classes", arguments: [
        (211, true, false, false), (250, true, false, false), (354, true, false, false),
        (421, false, true, false), (452, false, true, false), (499, false, true, false),
        (500, false, false, true), (554, false, false, true),
    ])
    func classes(code: Int, positive: Bool, transient: Bool, permanent: Bool) {
        let r = Reply(code, nil, "x")
        #expect(r.isPositive == positive)
        #expect(r.isTransient == transient)
        #expect(r.isPermanent == permanent)
    }

    @Test("description joins continuation lines for logs")
    func description() {
        #expect(Reply(550, "5.7.1", ["a", "b"]).description == "550 5.7.1 a / b")
        #expect(Reply(250, nil, "Ok").description == "250 Ok")
        #expect(Reply(250, nil, ["", "x"]).description == "250 x")
    }
}

/// Feeds the lines to a parser and returns each result.
func parseReplies(_ lines: [String], parser: inout ReplyParser) -> [Result<Reply?, ReplyParser.Failure>] {
    lines.map { parser.feed(Array($0.utf8)[...]) }
}

func parseReply(_ lines: [String]) -> Result<Reply?, ReplyParser.Failure> {
    var p = ReplyParser()
    return parseReplies(lines, parser: &p).last!
}

@Suite("Reply parsing (RFC 5321 §4.2)")
struct ReplyParserTests {
    @Test("A single-line reply with an enhanced code")
    func singleLine() {
        #expect(parseReply(["250 2.1.0 Sender ok"]) == .success(Reply(250, "2.1.0", "Sender ok")))
    }

    @Test("A single-line reply without an enhanced code")
    func singleLinePlain() {
        #expect(parseReply(["220 mx.example ESMTP"]) == .success(Reply(220, nil, "mx.example ESMTP")))
    }

    @Test("A multi-line reply completes only on its last line")
    func multiLine() {
        var p = ReplyParser()
        let results = parseReplies(["250-mx.example Hello", "250-PIPELINING", "250-SIZE 1000", "250 8BITMIME"], parser: &p)
        #expect(results[0] == .success(nil))
        #expect(results[1] == .success(nil))
        #expect(results[2] == .success(nil))
        #expect(results[3] == .success(Reply(250, nil, ["mx.example Hello", "PIPELINING", "SIZE 1000", "8BITMIME"])))
    }

    @Test("The parser starts afresh after each reply")
    func consecutiveReplies() {
        var p = ReplyParser()
        let results = parseReplies(["250-a", "250 b", "550 5.1.1 no such user"], parser: &p)
        #expect(results[1] == .success(Reply(250, nil, ["a", "b"])))
        #expect(results[2] == .success(Reply(550, "5.1.1", "no such user")))
    }

    @Test("An enhanced code is taken off every line of a multi-line reply")
    func multiLineEnhanced() {
        #expect(parseReply(["550-5.7.1 first", "550 5.7.1 second"]) == .success(Reply(550, "5.7.1", ["first", "second"])))
    }

    @Test("Lines of one reply with different codes are malformed (RFC 5321 §4.2.1)")
    func mismatchedCodes() {
        var p = ReplyParser()
        let results = parseReplies(["250-first", "251 second"], parser: &p)
        #expect(results[0] == .success(nil))
        guard case .failure(.malformed) = results[1] else {
            Issue.record("expected malformed, got \(results[1])")
            return
        }
    }

    @Test("Malformed reply lines", arguments: ["", "2", "25", "abc", "2x0 ok", "250x ok", "250_ok", "199 too low",
                                                "600 too high", "099 x", "-250 x", " 250 x"])
    func malformed(line: String) {
        guard case .failure(.malformed) = parseReply([line]) else {
            Issue.record("\(line.debugDescription) should be malformed, got \(parseReply([line]))")
            return
        }
    }

    @Test("A bare code is a complete reply with empty text")
    func bareCode() {
        #expect(parseReply(["250"]) == .success(Reply(250, nil, [""])))
    }

    @Test("Control characters in reply text are made printable")
    func controlCharacters() {
        #expect(parseReply(["250 a\u{1}b\u{7f}"]) == .success(Reply(250, nil, "a?b?")))
    }

    @Test("At most maxLines lines are kept; the reply still completes")
    func lineLimit() {
        var p = ReplyParser()
        p.maxLines = 5
        var lines = (0..<100).map { "250-line \($0)" }
        lines.append("250 last")
        let results = parseReplies(lines, parser: &p)
        #expect(results.dropLast().allSatisfy { $0 == .success(nil) })
        guard case .success(let reply?) = results.last! else {
            Issue.record("no reply")
            return
        }
        #expect(reply.lines == ["line 0", "line 1", "line 2", "line 3", "line 4"])
    }

    @Test("Enhanced status code extraction (RFC 3463 §2)", arguments: [
        ("2.0.0 Ok", "2.0.0"),
        ("5.7.1 denied", "5.7.1"),
        ("4.4.2", "4.4.2"),
        ("5.1.10 bad", "5.1.10"),
        ("4.123.456 x", "4.123.456"),
        ("2.0 Ok", nil),
        ("2.0.0.0 Ok", nil),
        ("2.0. Ok", nil),
        ("3.0.0 Ok", nil),
        ("1.0.0 Ok", nil),
        ("2.1000.0 x", nil),
        ("2.0.1000 x", nil),
        ("2.0.0x", nil),
        ("Ok 2.0.0", nil),
        ("", nil),
        (".2.0.0", nil),
    ] as [(String, String?)])
    func enhanced(text: String, expected: String?) {
        #expect(ReplyParser.enhancedCode(in: text) == expected)
    }

    @Test("An enhanced code must start the text to be recognised")
    func enhancedOnlyAtStart() {
        #expect(parseReply(["250 Ok 2.0.0"]) == .success(Reply(250, nil, "Ok 2.0.0")))
    }
}
