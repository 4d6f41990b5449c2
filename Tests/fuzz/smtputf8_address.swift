@testable import PosternCore

// Internationalized mailboxes (RFC 6531 §3.3): `Mailbox.parse(…, utf8: true)`
// and `PathArgument.parse(…, utf8: true)` over any bytes, against the ASCII
// parser, and the utf-8-addr-xtext form a notice writes for them (RFC 6533 §3).
//
// Input: one byte of choices (null path, unqualified, path argument), then the
// bytes under test.
//
// Checked: no trap; a mailbox taken is well-formed UTF-8 within the octet limits
// (64 local, 256 path), holds no control octet, has its '@' where it says, and
// parses back to itself; the UTF-8 syntax is a superset of the ASCII one (an
// address the ASCII parser takes comes out the same, and an all-ASCII address
// the UTF-8 parser takes is taken without it); its xtext form is ASCII and is a
// valid RFC 6533 utf-8 address.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choice = input.byte()
    let raw = Array(input.rest())[...]
    let allowNull = choice & 1 != 0
    let allowUnqualified = choice & 2 != 0
    if choice & 4 != 0 {
        checkPathArgument(raw, allowNull: allowNull)
        return
    }
    let ascii = Mailbox.parse(raw, allowNull: allowNull, allowUnqualified: allowUnqualified)
    let m = Mailbox.parse(raw, allowNull: allowNull, allowUnqualified: allowUnqualified, utf8: true)
    if let a = ascii { require(m == a, "the UTF-8 parser differs from the ASCII one on \(a)") }
    guard let m = m else { return }
    checkUTF8Mailbox(m, allowNull: allowNull, allowUnqualified: allowUnqualified)
    if m.isASCII { require(ascii != nil, "an ASCII mailbox the ASCII parser refuses") }
    else { require(ascii == nil, "the ASCII parser took a UTF-8 mailbox") }
}

func checkUTF8Mailbox(_ m: Mailbox, allowNull: Bool, allowUnqualified: Bool) {
    require(m.bytes.count + 2 <= Mailbox.maxPath, "a path of \(m.bytes.count) octets")
    require(m.localPart.count <= Mailbox.maxLocalPart, "a local part of \(m.localPart.count) octets")
    require(!m.isNull || allowNull, "the null path where it is not allowed")
    require(Mailbox.isUTF8(m.bytes), "ill-formed UTF-8 in a mailbox")
    require(m.bytes.allSatisfy { $0 >= 32 && $0 != 127 }, "a control octet in a mailbox")
    if let at = m.atIndex {
        require(m.bytes[at] == ASCII.at, "atIndex is not an @")
        if let d = m.domain { require(d.count <= Mailbox.maxDomain, "a domain of \(d.count) octets") }
    }
    require(Mailbox.parse(m.bytes[...], allowNull: allowNull, allowUnqualified: allowUnqualified, utf8: true) == m,
            "the parsed mailbox does not parse back")
    _ = m.canonical
    _ = m.description
    if !m.isNull {
        let xtext = DSNParameters.utf8AddressXtext(m.bytes, escapeASCII: true)
        require(xtext.allSatisfy { $0 > 32 && $0 < 127 }, "utf-8-addr-xtext not printable ASCII")
        require(DSNParameters.isUTF8AddressText(xtext[...], unitext: false), "utf-8-addr-xtext of a mailbox not valid")
        // As an ORCPT in unitext, the mailbox itself is valid (RFC 6533 §3) when
        // it has no octet QUCHAR leaves out ('+', '=', '\\', space).
        if !m.bytes.contains(where: { $0 == 43 || $0 == ASCII.equals || $0 == ASCII.backslash || $0 == ASCII.space }) {
            require(DSNParameters.originalRecipient(Array("utf-8;".utf8) + m.bytes, utf8: true) != nil,
                    "a UTF-8 mailbox refused as a unitext ORCPT")
        }
    }
}

func checkPathArgument(_ raw: ArraySlice<UInt8>, allowNull: Bool) {
    let arg = Array("TO:".utf8) + raw
    let ascii = PathArgument.parse(arg[...], prefix: "TO:", allowNull: allowNull)
    let utf8 = PathArgument.parse(arg[...], prefix: "TO:", allowNull: allowNull, utf8: true)
    if case .success = ascii { require(utf8 == ascii, "the UTF-8 path parser differs from the ASCII one") }
    guard case .success(let p) = utf8 else { return }
    checkUTF8Mailbox(p.mailbox, allowNull: allowNull, allowUnqualified: false)
    for parameter in p.parameters {
        require(!parameter.keyword.isEmpty, "an empty keyword")
        if let v = parameter.value {
            require(!v.isEmpty && v.utf8.allSatisfy { $0 > 32 && $0 != 127 && $0 != ASCII.equals }, "a bad value")
            require(Mailbox.isUTF8(v.utf8), "ill-formed UTF-8 in a value")
        }
    }
}
