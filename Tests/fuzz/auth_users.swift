@testable import PosternCore

// The auth_users file (AuthUsers.parse) over any bytes, then lookups.
//
// Input: the whole file.
//
// Checked: no trap; the same bytes parse the same way twice; an error names a
// line of the file (or 0, the whole file) and says something; a success has
// one user per line that is neither blank nor a comment, each found by its
// exact bytes, with its hash as written (or locked, when the hash is empty or
// begins with '*' or '!'), every name 1–255 octets of visible ASCII without
// ':' and every hash of visible ASCII; a name with one byte changed, or cut,
// is not found unless the file has that name too.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    let bytes = Array(data)
    let result = AuthUsers.parse(bytes)
    require(result == AuthUsers.parse(bytes), "parse is not deterministic")

    let lines = bytes.split(separator: ASCII.lf, omittingEmptySubsequences: false)
    switch result {
    case .failure(let e):
        require(e.line >= 0 && e.line <= lines.count, "an error names a line the file does not have")
        require(!e.message.isEmpty, "an error without a message")
        require(e.line > 0 || bytes.count > AuthUsers.maxFileSize, "a whole-file error for a small file")
    case .success(let users):
        var names: [[UInt8]] = []
        for raw in lines {
            var line = raw
            if line.last == ASCII.cr { line = line.dropLast() }
            let content = line.drop { ASCII.isSpace($0) }
            if content.isEmpty || content.first == ASCII.hash { continue }
            guard let colon = line.firstIndex(of: ASCII.colon) else {
                require(false, "a line without ':' was accepted")
                return
            }
            let user = Array(line[line.startIndex..<colon])
            let hash = Array(line[(colon + 1)...])
            require(!user.isEmpty && user.count <= AuthUsers.maxUserLength, "a user name of a bad length")
            require(user.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != ASCII.colon }, "a user name outside visible ASCII")
            require(hash.count <= AuthUsers.maxHashLength, "a hash over the limit")
            require(hash.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != ASCII.colon }, "a hash outside visible ASCII")
            guard let found = users.hash(for: user) else {
                require(false, "a user of the file is not found")
                return
            }
            if hash.isEmpty || hash.first == 42 || hash.first == 33 {
                require(found.isLocked && found.text.isEmpty, "a locked account is not locked")
            } else {
                require(!found.isLocked && found.text == hash, "the hash is not the one written")
                require(hash.first == 36, "a hash that is not a crypt(3) string was accepted")
            }
            names.append(user)
        }
        require(users.count == names.count, "the number of users is not the number of lines")
        // Near misses: one byte changed, one byte cut.
        for name in names.prefix(8) {
            var changed = name
            changed[0] ^= 0x20
            require(users.hash(for: changed) == nil || names.contains(changed), "a changed name was found")
            let cut = Array(name.dropLast())
            require(users.hash(for: cut) == nil || names.contains(cut), "a cut name was found")
        }
    }
    // Lookups of any bytes never trap.
    _ = AuthUsers().hash(for: bytes)
    if case .success(let users) = result { _ = users.hash(for: Array(bytes.prefix(300))) }
}
