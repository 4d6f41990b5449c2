import Testing
@testable import PosternCore

private let y1 = "$y$j9T$eI6TMlxlx3MlwTc2Fh/4r.$HkoTZYGa2C4bRCHaD9akEWlN54d96LzDorsKeT2sV37"
private let y2 = "$y$j9T$PQjdRfgkEQC1Gklk2Y51B1$AJzo30z0vHgjp9sUUi9ry1hTTvad10EmwYycxwPFpJ8"

private func set(_ user: String, _ hash: String, in file: String) -> Result<AuthUsers.Edit, AuthUsersError> {
    AuthUsers.setting(user: Array(user.utf8), hash: Array(hash.utf8), in: Array(file.utf8))
}

private func text(_ r: Result<AuthUsers.Edit, AuthUsersError>) -> String? {
    guard case .success(let e) = r else { return nil }
    return String(decoding: e.bytes, as: UTF8.self)
}

@Suite("auth_users edits for postern passwd: one line changed, every other kept")
struct AuthUsersEditTests {
    @Test("A new user is added at the end of an empty file")
    func addToEmpty() {
        let r = set("camera1", y1, in: "")
        #expect(text(r) == "camera1:\(y1)\n")
        #expect((try? r.get())?.replacedLine == nil)
    }

    @Test("A file without a final LF gets one before the new line")
    func addAfterUnterminatedLine() {
        #expect(text(set("b", y1, in: "a:*")) == "a:*\nb:\(y1)\n")
        #expect(text(set("b", y1, in: "# c\n")) == "# c\nb:\(y1)\n")
    }

    @Test("An existing user's line is replaced in place, its CR kept; comments and other lines stay byte for byte")
    func replaceInPlace() {
        let file = "# head\r\n\n  # x\r\ngrafana:*\r\ncamera1:\(y2)\r\noldnas:!"
        let r = set("grafana", y1, in: file)
        #expect(text(r) == "# head\r\n\n  # x\r\ngrafana:\(y1)\r\ncamera1:\(y2)\r\noldnas:!")
        #expect((try? r.get())?.replacedLine == 4)
        #expect(text(set("oldnas", y1, in: file)) == "# head\r\n\n  # x\r\ngrafana:*\r\ncamera1:\(y2)\r\noldnas:\(y1)")
    }

    @Test("The result parses, with the new hash for the user and the others unchanged")
    func roundTrip() throws {
        let file = "a:*\nb:\(y2)\n"
        let out = try set("a", y1, in: file).get().bytes
        let users = try AuthUsers.parse(out).get()
        #expect(users.hash(for: Array("a".utf8))?.text == Array(y1.utf8))
        #expect(users.hash(for: Array("b".utf8))?.text == Array(y2.utf8))
        #expect(users.count == 2)
    }

    @Test("A file that does not parse is refused, naming its line")
    func refuseBrokenFile() {
        guard case .failure(let e) = set("a", y1, in: "a:*\nno colon\n") else { Issue.record("accepted"); return }
        #expect(e.line == 2)
    }

    @Test("Bad user names are refused by the file's own rules", arguments: ["", "a:b", "#a", "a b", "caf\u{e9}", "tab\t", String(repeating: "x", count: 256)])
    func refuseBadUser(user: String) {
        #expect(AuthUsers.problem(userName: Array(user.utf8)) != nil)
        guard case .failure = set(user, y1, in: "") else { Issue.record("accepted"); return }
    }

    @Test("Good user names pass", arguments: ["a", "camera1", "alerts@example.com", String(repeating: "x", count: 255), "!~", "a#"])
    func goodUser(user: String) {
        #expect(AuthUsers.problem(userName: Array(user.utf8)) == nil)
    }

    @Test("A hash of a weak scheme or with a ':' is refused")
    func refuseBadHash() {
        for bad in ["$1$abc$def", "plaintext", "$y$a:b"] {
            guard case .failure = set("a", bad, in: "") else { Issue.record("accepted \(bad)"); continue }
        }
    }

    @Test("The result stays within the file's 1 MiB bound")
    func sizeBound() {
        // One comment line 20 octets short of the bound: parses, but not with a user added.
        let filler = "#" + String(repeating: "x", count: AuthUsers.maxFileSize - 22) + "\n"
        #expect((try? AuthUsers.parse(Array(filler.utf8)).get()) != nil)
        guard case .failure(let e) = set("a", y1, in: filler) else { Issue.record("accepted"); return }
        #expect(e.message.contains("1 MiB"))
    }
}
