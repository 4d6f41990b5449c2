import Testing
@testable import PosternCore

@Suite("CommandLineWords: a command line split as sh(1) quotes it (POSIX.1-2017 XCU §2.2), without a shell")
struct CommandLineWordsTests {
    func words(_ line: String) -> [String]? {
        guard case .success(let w) = CommandLineWords.split(line) else { return nil }
        return w
    }

    func failure(_ line: String) -> CommandLineWords.Failure? {
        guard case .failure(let f) = CommandLineWords.split(line) else { return nil }
        return f
    }

    @Test("Words are separated by runs of spaces and tabs", arguments: [
        ("", []),
        ("   \t ", []),
        ("pass", ["pass"]),
        ("pass show mail/token", ["pass", "show", "mail/token"]),
        ("  /usr/bin/oauth2  --account\tops \t ", ["/usr/bin/oauth2", "--account", "ops"]),
        ("a$HOME *.txt | ; > x", ["a$HOME", "*.txt", "|", ";", ">", "x"]),
        ("ünï cødé", ["ünï", "cødé"]),
    ] as [(String, [String])])
    func plainWords(line: String, expected: [String]) {
        #expect(words(line) == expected)
    }

    @Test("Single quotes keep everything literally (XCU §2.2.2)", arguments: [
        ("'a b'", ["a b"]),
        ("'a\\b'", ["a\\b"]),
        ("'say \"hi\"'", ["say \"hi\""]),
        ("''", [""]),
        ("a '' b", ["a", "", "b"]),
        ("'$x' '\t'", ["$x", "\t"]),
    ] as [(String, [String])])
    func singleQuotes(line: String, expected: [String]) {
        #expect(words(line) == expected)
    }

    @Test("Double quotes: backslash escapes only \" \\ ` and $ (XCU §2.2.3)", arguments: [
        ("\"a b\"", ["a b"]),
        ("\"\"", [""]),
        ("\"say \\\"hi\\\"\"", ["say \"hi\""]),
        ("\"back\\\\slash\"", ["back\\slash"]),
        ("\"\\$HOME \\`x\\`\"", ["$HOME `x`"]),
        ("\"keep \\n and \\a\"", ["keep \\n and \\a"]),
        ("\"it's\"", ["it's"]),
    ] as [(String, [String])])
    func doubleQuotes(line: String, expected: [String]) {
        #expect(words(line) == expected)
    }

    @Test("Outside quotes a backslash keeps the next character (XCU §2.2.1)", arguments: [
        ("a\\ b", ["a b"]),
        ("\\'x\\'", ["'x'"]),
        ("\\\"", ["\""]),
        ("\\\\", ["\\"]),
        ("a\\\tb c", ["a\tb", "c"]),
        ("\\n", ["n"]),
    ] as [(String, [String])])
    func backslash(line: String, expected: [String]) {
        #expect(words(line) == expected)
    }

    @Test("Quoted and unquoted parts next to each other are one word", arguments: [
        ("a\"b c\"d", ["ab cd"]),
        ("--user='ops team'", ["--user=ops team"]),
        ("'a'\"b\"c\\ d", ["abc d"]),
        ("sh -c 'pass show mail | head -n 1'", ["sh", "-c", "pass show mail | head -n 1"]),
        ("x 'it'\\''s'", ["x", "it's"]),
    ] as [(String, [String])])
    func concatenation(line: String, expected: [String]) {
        #expect(words(line) == expected)
    }

    @Test("Errors name what is wrong and where")
    func errors() {
        #expect(failure("pass 'show") == .unterminatedQuote(quote: 39, column: 6))
        #expect(failure("a \"b c") == .unterminatedQuote(quote: 34, column: 3))
        #expect(failure("\"ends with \\\"") == .unterminatedQuote(quote: 34, column: 1))
        #expect(failure("a b\\") == .trailingBackslash(column: 4))
        #expect(failure("a\u{0}b") == .nulByte(column: 2))
        #expect(failure("'a\u{0}'") == .nulByte(column: 3))
        #expect(CommandLineWords.Failure.unterminatedQuote(quote: 39, column: 6).description
            == "the single quote at column 6 is not closed")
        #expect(CommandLineWords.Failure.unterminatedQuote(quote: 34, column: 1).description
            == "the double quote at column 1 is not closed")
        #expect(CommandLineWords.Failure.trailingBackslash(column: 4).description
            == "the backslash at column 4 ends the line and escapes nothing")
        #expect(CommandLineWords.Failure.nulByte(column: 2).description == "a NUL byte at column 2")
    }

    @Test("quoted() gives a line that splits back to the same words", arguments: [
        ["pass", "show", "mail/token"],
        ["sh", "-c", "echo 'hi' \"there\" $HOME | cat"],
        ["", "a b", "it's", "\\", "\t", "--x=1,2", "ünï"],
    ])
    func roundTrip(argv: [String]) {
        let line = CommandLineWords.quoted(argv)
        #expect(words(line) == argv, "\(line)")
    }

    @Test("Plain words are not quoted")
    func plainNotQuoted() {
        #expect(CommandLineWords.quoted(["/usr/bin/oauth2", "--user=ops@example.com"]) == "/usr/bin/oauth2 --user=ops@example.com")
        #expect(CommandLineWords.quoted(["a b", ""]) == "'a b' ''")
    }

    @Test("No input traps: every byte sequence up to length 4 over the interesting bytes")
    func exhaustiveShortInputs() {
        let alphabet: [UInt8] = [0, 9, 32, 34, 39, 92, 97, 0xC3, 0xFF]
        var count = 0
        func visit(_ prefix: [UInt8]) {
            count += 1
            switch CommandLineWords.split(bytes: prefix) {
            case .success(let ws):
                #expect(!ws.contains { $0.utf8.contains(0) })
            case .failure:
                #expect(prefix.contains { $0 == 0 || $0 == 34 || $0 == 39 || $0 == 92 })
            }
            guard prefix.count < 4 else { return }
            for b in alphabet { visit(prefix + [b]) }
        }
        visit([])
        #expect(count == 1 + 9 + 81 + 729 + 6561)
    }
}
