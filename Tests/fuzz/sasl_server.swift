@testable import PosternCore

// The receiver side of AUTH PLAIN and LOGIN (SASLServer) over any AUTH
// arguments and client lines.
//
// Input: one byte of choices, then the bytes, split at LF: the first piece is
// the AUTH command's arguments, the others are the client's lines (at most
// 8). Choice bits: 1, each line is base64-encoded by the harness (so the
// fuzzer writes the decoded responses directly); 2, the arguments' text after
// the first blank is encoded the same way (an initial response); 4, the
// second line is reported as too long by the framer instead.
//
// Checked: no trap; a reply is a 334 with no enhanced code whose text is
// empty, "Username:" or "Password:" in base64 and the exchange goes on;
// a failure is one of 500/501/503/504/535 with a matching enhanced code and
// the exchange is over; credentials come only at the end, with a 1–255-octet
// UTF-8 user and a 1–255-octet password, no NUL in either, and they are what
// the client sent (LOGIN: its two responses; PLAIN: the authcid and passwd
// of its one response, whose authzid is empty or the authcid); at most two
// lines before the end; after the end every line gets 503. And the strict
// base64 decoder on every line: what it accepts is the one encoding of what
// it returns, and the lenient decoder agrees.

func wellFormed(_ r: Reply) -> Bool {
    let wire = r.encoded()
    guard wire.count >= 6, wire.suffix(2) == [ASCII.cr, ASCII.lf][...] else { return false }
    return !wire.dropLast(2).contains(ASCII.cr) && !wire.dropLast(2).contains(ASCII.lf)
}

func checkStep(_ step: SASLServer.Step, _ machine: SASLServer) {
    switch step {
    case .reply(let r):
        require(r.code == 334 && r.enhanced == nil && r.lines.count == 1, "a reply that is not a 334 challenge")
        let text = Array(r.lines[0].utf8)
        let decoded = Base64.decodeStrict(text)
        require(decoded == [] || decoded == Array("Username:".utf8) || decoded == Array("Password:".utf8),
                "an unexpected challenge")
        require(wellFormed(r), "a malformed reply")
        require(!machine.isFinished, "a challenge from a finished exchange")
    case .failed(let r):
        let allowed: [(Int, String)] = [(500, "5.5.6"), (501, "5.7.0"), (501, "5.5.2"), (501, "5.5.4"),
                                        (503, "5.5.1"), (504, "5.5.4"), (535, "5.7.8")]
        require(allowed.contains { $0.0 == r.code && $0.1 == r.enhanced }, "a failure code outside the allowed set")
        require(wellFormed(r), "a malformed reply")
        require(machine.isFinished, "a failure that does not end the exchange")
    case .credentials(let user, let password):
        require(machine.isFinished, "credentials before the end")
        require(!user.isEmpty && user.count <= 255 && !user.contains(0), "a bad user")
        require(SASLServer.isValidUTF8(user), "a user that is not UTF-8")
        require(!password.isEmpty && password.count <= 255 && !password.contains(0), "a bad password")
    }
}

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choices = input.byte()
    let pieces = Array(input.rest()).split(separator: ASCII.lf, omittingEmptySubsequences: false)
    var arguments = Array(pieces.first ?? [])
    if choices & 2 != 0, let blank = arguments.firstIndex(of: ASCII.space) {
        arguments = Array(arguments[...blank]) + Base64.encode(arguments[(blank + 1)...])
    }
    // What the client sent, decoded, in order: the initial response and the lines.
    var responses: [[UInt8]] = []
    let words = arguments.split(whereSeparator: ASCII.isSpace)
    if words.count == 2 {
        if words[1].count == 1 && words[1].first == ASCII.equals {
            responses.append([])
        } else if let d = Base64.decodeStrict(words[1]) {
            responses.append(d)
        }
    }

    var (machine, step) = SASLServer.start(arguments: arguments[...])
    checkStep(step, machine)
    var linesBeforeEnd = 0
    for (n, piece) in pieces.dropFirst().prefix(8).enumerated() {
        let line = choices & 1 != 0 ? Base64.encode(piece) : Array(piece)
        // The strict decoder on its own.
        if let d = Base64.decodeStrict(line) {
            require(Base64.encode(d) == line, "the strict decoder accepted a non-canonical encoding")
            require(Base64.decode(line) == d, "the strict and lenient decoders disagree")
        }
        let wasFinished = machine.isFinished
        if !wasFinished { linesBeforeEnd += 1 }
        if n == 1 && choices & 4 != 0 {
            step = machine.receiveTooLongLine()
        } else {
            if !wasFinished, let d = Base64.decodeStrict(line) { responses.append(d) }
            step = machine.receive(line: line[...])
        }
        checkStep(step, machine)
        if wasFinished {
            require(step == .failed(SASLServer.notInProgress), "a line after the end was not refused")
        }
        if case .credentials(let user, let password) = step {
            switch machine.mechanism {
            case .login?:
                require(responses.count == 2 && responses[0] == user && responses[1] == password,
                        "LOGIN credentials are not the client's responses")
            case .plain?:
                let parts = responses.last?.split(separator: 0, omittingEmptySubsequences: false) ?? []
                require(parts.count == 3 && Array(parts[1]) == user && Array(parts[2]) == password,
                        "PLAIN credentials are not the client's authcid and passwd")
                require(parts[0].isEmpty || Array(parts[0]) == user, "an authzid other than the authcid was accepted")
            case nil:
                require(false, "credentials without a mechanism")
            }
        }
    }
    require(linesBeforeEnd <= 2, "more than two lines in one exchange")
}
