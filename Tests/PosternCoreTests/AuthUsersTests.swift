import Testing
@testable import PosternCore

private let sha512 = "$6$Mqn0I0o5sA9H1wIj$D2SZChzrrYbjmemf4Ae7mw.HpqljPjRKAIOHSdEUliuT8tG4WboXDSAaV.UMrTWF9oC/EwPvMI5.Knbb9gbjx1"
private let sha256 = "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM."
private let yescrypt = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
private let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"

private func parse(_ text: String) -> Result<AuthUsers, AuthUsersError> {
    AuthUsers.parse(Array(text.utf8))
}

private func users(_ text: String) -> AuthUsers? {
    if case .success(let u) = parse(text) { return u }
    Issue.record("expected \(text.debugDescription) to parse: \(parse(text))")
    return nil
}

private func error(_ text: String) -> AuthUsersError? {
    if case .failure(let e) = parse(text) { return e }
    Issue.record("expected \(text.debugDescription) to be refused")
    return nil
}

@Suite("auth_users file")
struct AuthUsersTests {
    @Test("user:hash lines are read; lookups give the hash and its scheme")
    func readsUsers() throws {
        let u = try #require(users("camera1:\(yescrypt)\ngrafana:\(sha512)\nups:\(sha256)\nnas:\(bcrypt)\n"))
        #expect(u.count == 4)
        #expect(u.hash(for: bytes("camera1")) == AuthHash(scheme: .yescrypt, text: bytes(yescrypt)))
        #expect(u.hash(for: bytes("grafana"))?.scheme == .sha512Crypt)
        #expect(u.hash(for: bytes("ups"))?.scheme == .sha256Crypt)
        #expect(u.hash(for: bytes("nas"))?.scheme == .bcrypt)
        #expect(u.hash(for: bytes("grafana"))?.text == bytes(sha512))
        #expect(u.line(for: bytes("ups")) == 3)
        #expect(u.hash(for: bytes("nobody")) == nil)
    }

    @Test("Every accepted scheme prefix: $y$ $gy$ $7$ $6$ $5$ $2b$ $2y$ $2a$", arguments: [
        ("$y$j9T$salt$hash", AuthHash.Scheme.yescrypt),
        ("$gy$j9T$salt$hash", .gostYescrypt),
        ("$7$CU..../....salt$hash", .scrypt),
        ("$6$rounds=5000$salt$hash", .sha512Crypt),
        ("$5$salt$hash", .sha256Crypt),
        ("$2b$10$abcdefghijklmnopqrstuv", .bcrypt),
        ("$2y$10$abcdefghijklmnopqrstuv", .bcrypt),
        ("$2a$10$abcdefghijklmnopqrstuv", .bcrypt),
    ])
    func acceptedSchemes(hash: String, scheme: AuthHash.Scheme) {
        #expect(users("bob:\(hash)")?.hash(for: bytes("bob"))?.scheme == scheme)
    }

    @Test("Blank lines, comments after blanks, CRLF and a missing final LF are fine")
    func blanksCommentsCRLF() {
        let u = users("# users\r\n\r\n   \n\t# indented comment\r\nbob:\(sha512)\r\n  \nalice:\(sha256)")
        #expect(u?.count == 2)
        #expect(u?.hash(for: bytes("bob"))?.text == bytes(sha512), "the CR is not part of the hash")
        #expect(u?.hash(for: bytes("alice"))?.scheme == .sha256Crypt)
    }

    @Test("An empty file, or only comments, is no users")
    func emptyFile() {
        #expect(users("")?.isEmpty == true)
        #expect(users("\n\n# nothing\n")?.isEmpty == true)
    }

    @Test("Empty, '*' and '!'-prefixed hashes are locked accounts, kept and never able to log in (shadow(5))",
          arguments: ["", "*", "!", "!!", "!\(sha512)", "*LK*", "!$1$old$md5hash"])
    func lockedAccounts(hash: String) {
        let h = users("bob:\(hash)\n")?.hash(for: bytes("bob"))
        #expect(h == AuthHash.locked)
        #expect(h?.isLocked == true)
        #expect(h?.text == [])
        #expect(h?.description == "locked")
    }

    @Test("Weak or unknown schemes are errors naming the line, the user and the scheme, not the hash",
          arguments: [
            ("$1$saltsalt$hashhashhashhashhashha", "$1$ (MD5-crypt)"),
            ("$3$$8846f7eaee8fb117ad06bdd830b7586c", "$3$ (NT hash)"),
            ("abJnggxhB/yWI", "DES"),
            ("_J9..CCCCXBrJUJV154M", "BSDi DES (_)"),
            ("$md5$salt$hash", "$md5$ (SunMD5)"),
            ("$x$whatever", "$x$"),
            ("$2$10$abcdefghijklmnopqrstuv", "$2$ (original bcrypt)"),
            ("hunter2", "(not a crypt(3) string)"),
            ("$nodollar", "(not a crypt(3) string)"),
            ("$averyverylongid$x", "(not a crypt(3) string)"),
          ])
    func weakSchemes(hash: String, named: String) throws {
        let e = try #require(error("# c\nbob:\(hash)\n"))
        #expect(e.line == 2)
        #expect(e.description == "line 2: user 'bob': the hash scheme \(named) is too weak or unknown; make one with postern passwd")
        if hash.count > 12 || !hash.hasPrefix("$") {
            #expect(!e.message.contains(hash), "the error repeats the hash")
        }
    }

    @Test("A scheme prefix alone is an error")
    func prefixAlone() {
        #expect(error("bob:$6$")?.message.contains("only the scheme prefix $6$") == true)
        #expect(error("bob:$y$")?.line == 1)
    }

    @Test("A user written twice is an error naming both lines")
    func duplicateUser() {
        let e = error("bob:\(sha512)\nalice:\(sha256)\n\nbob:!\n")
        #expect(e?.line == 4)
        #expect(e?.message == "user 'bob' is also on line 1")
    }

    @Test("Names are compared byte for byte, case-sensitively (RFC 4616 §2: no SASLprep case folding)")
    func caseSensitive() {
        let u = users("Bob:\(sha512)\nbob:\(sha256)\n")
        #expect(u?.count == 2)
        #expect(u?.hash(for: bytes("Bob"))?.scheme == .sha512Crypt)
        #expect(u?.hash(for: bytes("bob"))?.scheme == .sha256Crypt)
        #expect(u?.hash(for: bytes("BOB")) == nil)
        #expect(u?.hash(for: bytes("bob ")) == nil)
        #expect(u?.hash(for: bytes("bob") + [0]) == nil)
        #expect(u?.hash(for: []) == nil)
        #expect(u?.hash(for: [UInt8](repeating: 98, count: 100_000)) == nil)
    }

    @Test("Non-ASCII user names are refused: without SASLprep (RFC 4013) bytes would not match reliably")
    func nonASCIIUser() throws {
        let e = try #require(error("jörg:\(sha512)\n"))
        #expect(e.line == 1)
        #expect(e.message.contains("must be ASCII"))
        #expect(e.message.contains("SASLprep"))
        // Not UTF-8 at all: refused the same way, never a trap.
        let raw = AuthUsers.parse([0xFF, 0xC0, 0x3A] + bytes(sha512))
        guard case .failure(let e2) = raw else { Issue.record("accepted"); return }
        #expect(e2.message.contains("must be ASCII"))
        #expect(e2.message.contains("'??'"))
    }

    @Test("User names: 1–255 visible ASCII octets (RFC 4616 §2 authcid), no blanks or control characters")
    func userNameRules() {
        #expect(error(":\(sha512)")?.message == "the user name before ':' is empty")
        #expect(users(String(repeating: "u", count: 255) + ":\(sha512)")?.count == 1)
        #expect(error(String(repeating: "u", count: 256) + ":\(sha512)")?.message
                == "the user name is longer than 255 octets")
        #expect(error(" bob:\(sha512)")?.message.contains("cannot contain blanks") == true)
        #expect(error("bo b:\(sha512)")?.message.contains("cannot contain blanks") == true)
        #expect(error("bob\t:\(sha512)")?.message.contains("cannot contain blanks") == true)
        #expect(error("b\u{7F}ob:\(sha512)")?.message.contains("control") == true)
        #expect(error("bob\r:\(sha512)")?.message.contains("control") == true, "a CR inside the line")
        #expect(users("user@example.com:\(sha512)")?.hash(for: bytes("user@example.com")) != nil)
    }

    @Test("A NUL anywhere is an error, not a trap")
    func nulBytes() {
        #expect(AuthUsers.parse(bytes("b") + [0] + bytes("ob:\(sha512)")).isFailure)
        #expect(AuthUsers.parse(bytes("bob:\(sha512)") + [0]).isFailure)
        #expect(AuthUsers.parse([0]).isFailure)
    }

    @Test("A line without ':' is an error that does not repeat the line (it may be a password)")
    func noColon() {
        let e = error("bob:\(sha512)\nhunter2\n")
        #expect(e?.line == 2)
        #expect(e?.message == "no ':' on the line: each line is user:hash")
    }

    @Test("A line copied from /etc/shadow (more ':' fields) is an error that says so")
    func shadowLine() {
        let e = error("bob:\(sha512):19000:0:99999:7:::\n")
        #expect(e?.message.contains("/etc/shadow") == true)
    }

    @Test("Hashes: visible ASCII only, at most 512 octets")
    func hashRules() {
        #expect(error("bob:\(sha512) \n")?.message.contains("only visible ASCII") == true, "a trailing blank")
        #expect(error("bob: \(sha512)\n")?.message.contains("only visible ASCII") == true, "a leading blank")
        #expect(error("bob:$6$sälz$hash\n")?.message.contains("only visible ASCII") == true)
        #expect(error("bob:$6$a\rb$hash\n")?.message.contains("only visible ASCII") == true, "a CR inside")
        let long = "$6$" + String(repeating: "a", count: 509)
        #expect(users("bob:\(long)")?.hash(for: bytes("bob"))?.text.count == 512)
        #expect(error("bob:\(long)a")?.message == "user 'bob': the hash is longer than 512 octets")
    }

    @Test("At most 10,000 users; the 10,001st is an error naming its line")
    func userLimit() {
        var text: [UInt8] = []
        for i in 0..<AuthUsers.maxUsers { text += bytes("u\(i):$5$s$h\n") }
        guard case .success(let u) = AuthUsers.parse(text) else { Issue.record("10,000 refused"); return }
        #expect(u.count == 10_000)
        #expect(u.hash(for: bytes("u9999"))?.scheme == .sha256Crypt)
        text += bytes("# comment\nlast:$5$s$h\n")
        guard case .failure(let e) = AuthUsers.parse(text) else { Issue.record("10,001 accepted"); return }
        #expect(e.line == 10_002)
        #expect(e.message == "more than 10000 users")
    }

    @Test("A file over 1 MiB is refused whole; exactly 1 MiB is read")
    func sizeLimit() {
        var text = bytes("bob:\(sha512)\n")
        text += [UInt8](repeating: ASCII.lf, count: AuthUsers.maxFileSize - text.count)
        #expect(AuthUsers.parse(text).isSuccess)
        text.append(ASCII.lf)
        guard case .failure(let e) = AuthUsers.parse(text) else { Issue.record("accepted"); return }
        #expect(e.line == 0)
        #expect(e.description == "the file is larger than 1 MiB (1048576 octets)")
    }

    @Test("A hash's description names its scheme, never the hash")
    func hashDescription() {
        let h = users("bob:\(sha512)")?.hash(for: bytes("bob"))
        #expect(h?.description == "sha512-crypt")
    }
}

fileprivate extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var isFailure: Bool { !isSuccess }
}
