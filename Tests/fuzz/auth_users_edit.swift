@testable import PosternCore

// `AuthUsers.setting` (`postern passwd`) over any auth_users file, user name
// and hash; and `AuthUsers.problem(userName:)`.
//
// Input: one byte of user-name length (0–63), one byte choosing the hash (a
// valid yescrypt or SHA-512-crypt string, a locked one, a weak one, or the
// next 0–127 input octets), the user name, then the file.
//
// Checked: no trap; a success only when the file parses and the name passes
// `problem(userName:)`; the result parses, gives the user the new hash and
// every other user the hash it had; the number of users grows by one exactly
// when no line was replaced; every line but the replaced one is kept byte for
// byte and in order (an added line comes last); the result stays within
// `maxFileSize`.

let hashes: [[UInt8]] = [
    Array("$y$j9T$eI6TMlxlx3MlwTc2Fh/4r.$HkoTZYGa2C4bRCHaD9akEWlN54d96LzDorsKeT2sV37".utf8),
    Array("$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/".utf8),
    Array("!".utf8),
    Array("$1$abc$def".utf8),
]

func lines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
    bytes.split(separator: 10, omittingEmptySubsequences: false)
}

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let userLength = input.int(0...63)
    let hashChoice = input.int(0...4)
    let hash = hashChoice < hashes.count ? hashes[hashChoice] : Array(input.bytes(input.int(0...127)))
    let user = Array(input.bytes(userLength))
    let file = Array(input.rest())

    let before = AuthUsers.parse(file)
    let result = AuthUsers.setting(user: user, hash: hash, in: file)
    guard case .success(let edit) = result else { return }
    guard case .success(let old) = before else { require(false, "an edit of a file that does not parse"); return }
    require(AuthUsers.problem(userName: user) == nil, "an edit for a user name the file refuses")
    require(edit.bytes.count <= AuthUsers.maxFileSize, "the result is larger than the bound")
    guard case .success(let new) = AuthUsers.parse(edit.bytes) else { require(false, "the result does not parse"); return }
    guard let h = new.hash(for: user) else { require(false, "the user is not in the result"); return }
    if h.isLocked {
        require(hash.isEmpty || hash.first == 33 || hash.first == 42, "a hash became a locked account")
    } else {
        require(h.text == hash, "the user's hash is not the one given")
    }
    require(new.count == old.count + (edit.replacedLine == nil ? 1 : 0), "the number of users is wrong")
    require((old.line(for: user) != nil) == (edit.replacedLine != nil), "replaced without an old line, or added beside one")

    let oldLines = lines(file)
    let newLines = lines(edit.bytes)
    if let replaced = edit.replacedLine {
        require(oldLines.count == newLines.count, "a replacement changed the number of lines")
        for i in oldLines.indices where i + 1 != replaced {
            require(oldLines[i].elementsEqual(newLines[i]), "line \(i + 1) changed")
        }
    } else {
        // The old text, a LF when it lacked one, then the new line and a LF.
        require(edit.bytes.starts(with: file), "an addition changed the text before it")
        require(edit.bytes.last == 10, "an added line without a LF")
    }
    // Every other user keeps the hash it had.
    var start = 0
    while start <= file.count {
        let end = file[start...].firstIndex(of: 10) ?? file.count
        if let colon = file[start..<end].firstIndex(of: 58) {
            let name = Array(file[start..<colon])
            if name != user, let h = old.hash(for: name) {
                require(new.hash(for: name) == h, "another user's hash changed")
            }
        }
        start = end + 1
    }
}
