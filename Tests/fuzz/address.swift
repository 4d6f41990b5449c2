@testable import PosternCore

// Mailbox and path parsing (MAIL FROM / RCPT TO arguments with ESMTP
// parameters) and recipient-policy patterns. The first byte chooses what the
// rest is; a 0 byte separates a policy from the address it is checked against.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let mode = input.byte()
    let rest = Array(input.rest())
    switch mode % 4 {
    case 0: checkMailbox(rest[...], allowNull: mode & 4 != 0)
    case 1: checkPath(rest[...], prefix: "FROM:", allowNull: true)
    case 2: checkPath(rest[...], prefix: "TO:", allowNull: false)
    default: checkPolicy(rest)
    }
}

func checkMailbox(_ raw: ArraySlice<UInt8>, allowNull: Bool) {
    guard let m = Mailbox.parse(raw, allowNull: allowNull) else { return }
    // RFC 5321 §4.5.3.1.3: the path with its brackets is at most 256 octets.
    require(m.bytes.count + 2 <= Mailbox.maxPath, "a path of \(m.bytes.count) octets")
    require(m.isNull == m.bytes.isEmpty, "isNull")
    require(!m.isNull || allowNull, "the null path where it is not allowed")
    require(m.localPart.count <= Mailbox.maxLocalPart, "a local part of \(m.localPart.count)")
    // Printable ASCII only (a space can be quoted), so a reply or header that
    // echoes a mailbox can never carry a line ending.
    require(m.bytes.allSatisfy { $0 >= 32 && $0 < 127 }, "a control or 8-bit byte in a mailbox")
    if let at = m.atIndex { require(m.bytes[at] == ASCII.at, "atIndex is not an @") }
    // What is kept is a mailbox on its own: parsing it again gives it back.
    require(Mailbox.parse(m.bytes[...], allowNull: allowNull) == m, "the parsed mailbox does not parse back")
    _ = m.canonical
    _ = m.domain
    _ = m.description
}

func checkPath(_ raw: ArraySlice<UInt8>, prefix: String, allowNull: Bool) {
    guard case .success(let p) = PathArgument.parse(raw, prefix: prefix, allowNull: allowNull) else { return }
    checkMailbox(p.mailbox.bytes[...], allowNull: allowNull)
    for (keyword, value) in p.parameters {
        require(!keyword.isEmpty, "an empty keyword")
        require(keyword.utf8.allSatisfy { !(97...122).contains($0) }, "a keyword not upper-cased")
        if let v = value { require(!v.isEmpty && !v.utf8.contains(ASCII.space), "a bad parameter value") }
    }
}

func checkPolicy(_ raw: [UInt8]) {
    let parts = raw.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    let patternText = ASCII.string(parts[0])
    var patterns: [RecipientPolicy.Pattern] = []
    for item in patternText.utf8.split(separator: ASCII.comma) {
        guard let p = RecipientPolicy.pattern(ASCII.string(item)) else { continue }
        patterns.append(p)
        // A mailbox pattern allows the mailbox it was written as, in any case.
        if case .mailbox = p, let m = Mailbox.parse(Array(item)[...], allowNull: false) {
            require(RecipientPolicy(patterns: [p]).allows(m), "a mailbox pattern refuses its own mailbox")
        }
    }
    guard parts.count == 2, let rcpt = Mailbox.parse(parts[1], allowNull: false) else { return }
    let policy = RecipientPolicy(patterns: patterns)
    let allowed = policy.allows(rcpt)
    if patterns.contains(.any) { require(allowed, "* refuses a recipient") }
    if patterns.isEmpty { require(!allowed, "an empty policy allows a recipient") }
    if let d = rcpt.domain, patterns.contains(.domain(ASCII.lowercased(d))) {
        require(allowed, "*@domain refuses a mailbox at that domain")
    }
}
