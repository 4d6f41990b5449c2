@testable import PosternCore

// The DSN parameter parsers (RFC 3461 §4, RFC 6533 §3) on any value, and the
// same values as MAIL and RCPT parameters through the receiver, into the spool
// codec and back.
//
// Input: one byte of choices, then the value. The choice picks NOTIFY, RET,
// ENVID, ORCPT (without or with SMTPUTF8), xtext, or a whole transaction whose
// MAIL and RCPT lines carry the bytes as their parameters.
//
// Checked: no trap; a value taken is given back unchanged and is taken again;
// NOTIFY is NEVER alone or a set of the others and its text parses back;
// ENVID decodes to 1–100 printable characters; ORCPT is at most 500 octets, one
// taken without SMTPUTF8 is taken with it, and its Original-Recipient field is
// printable ASCII (nothing can end a line in a notice); xtext encodes and
// decodes back; a transaction's parameters are ones the parsers take, and its
// envelope record round-trips through SpoolCodec with them.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choice = input.byte()
    let value = Array(input.rest())
    switch choice % 7 {
    case 0:
        guard let n = DSNParameters.notify(value) else { return }
        require(n.isValid, "an invalid NOTIFY taken")
        require(DSNParameters.notify(Array(n.text.utf8)) == n, "NOTIFY text does not parse back")
        require(n == .never ? !n.wantsFailureNotice : true, "NEVER wants a notice")
    case 1:
        guard let r = DSNParameters.ret(value) else { return }
        require(DSNParameters.ret(Array(r.text.utf8)) == r, "RET text does not parse back")
    case 2:
        checkEnvelopeID(value)
    case 3, 4:
        checkOriginalRecipient(value, utf8: choice % 7 == 4)
    case 5:
        if let decoded = DSNParameters.decodeXtext(value) {
            require(decoded.count <= value.count, "xtext grew when decoded")
            require(DSNParameters.decodeXtext(DSNParameters.encodeXtext(decoded)) == decoded, "xtext round trip")
        }
        let encoded = DSNParameters.encodeXtext(value)
        require(encoded.allSatisfy { $0 >= 33 && $0 <= 126 && $0 != ASCII.equals }, "encoded xtext with a non-xchar")
        require(DSNParameters.decodeXtext(encoded) == value, "encode then decode changed the bytes")
    default:
        checkTransaction(value, smtputf8: choice & 8 != 0)
    }
}

func checkEnvelopeID(_ value: [UInt8]) {
    guard let e = DSNParameters.envelopeID(value) else { return }
    require(e == value, "ENVID not kept as received")
    require(value.count <= DSNParameters.maxEnvelopeIDRaw, "ENVID over 300 octets")
    guard let decoded = DSNParameters.decodeXtext(value) else { require(false, "ENVID taken but not xtext"); return }
    require(!decoded.isEmpty && decoded.count <= DSNParameters.maxEnvelopeID, "ENVID of \(decoded.count) characters")
    require(decoded.allSatisfy { $0 >= 32 && $0 <= 126 }, "ENVID decodes to a non-printable octet")
    require(DSNParameters.envelopeIDField(value).map { $0.utf8.elementsEqual(decoded) } == true, "Original-Envelope-Id")
}

func checkOriginalRecipient(_ value: [UInt8], utf8: Bool) {
    guard let o = DSNParameters.originalRecipient(value, utf8: utf8) else { return }
    require(o == value, "ORCPT not kept as received")
    require(value.count <= DSNParameters.maxOriginalRecipient, "ORCPT over 500 octets")
    require(DSNParameters.originalRecipient(value, utf8: true) != nil, "taken without SMTPUTF8 but not with it")
    require(utf8 || value.allSatisfy { $0 < 0x80 }, "8-bit ORCPT without SMTPUTF8")
    guard let field = DSNParameters.originalRecipientField(value) else {
        require(false, "no Original-Recipient field for a valid ORCPT")
        return
    }
    require(field.utf8.allSatisfy { $0 >= 32 && $0 <= 126 }, "Original-Recipient not printable ASCII: \(field)")
}

/// MAIL and RCPT with the bytes as parameters, then DATA: whatever the receiver
/// keeps is valid and survives the spool codec.
func checkTransaction(_ value: [UInt8], smtputf8: Bool) {
    var machine = SMTPReceiver(settings: ReceiverSettings(hostname: "mx.fuzz", maxMessageSize: 1000, maxRecipients: 4,
                                                          recipients: .anyone))
    _ = machine.start(clientAllowed: true, clientText: "[127.0.0.1]")
    _ = machine.receive(line: Array("EHLO fuzz".utf8)[...])
    let halves = value.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    let mailParameters = halves.first.map(Array.init) ?? []
    let rcptParameters = halves.count > 1 ? Array(halves[1]) : []
    _ = machine.receive(line: (Array("MAIL FROM:<a@b.example>".utf8) + (smtputf8 ? Array(" SMTPUTF8".utf8) : [])
                               + [ASCII.space] + mailParameters)[...])
    _ = machine.receive(line: (Array("RCPT TO:<c@d.example> ".utf8) + rcptParameters)[...])
    _ = machine.receive(line: (Array("RCPT TO:<e@f.example> ".utf8) + mailParameters)[...])
    let actions = machine.receive(line: Array("DATA".utf8)[...])
    guard case .startData(let envelope)? = actions.first else { return }
    if let e = envelope.envelopeID { require(DSNParameters.envelopeID(e) == e, "kept ENVID not valid") }
    require(envelope.recipientParameters.isEmpty || envelope.recipientParameters.count == envelope.recipients.count,
            "parameters not parallel to the recipients")
    for p in envelope.recipientParameters {
        if let n = p.notify { require(n.isValid, "kept NOTIFY not valid") }
        if let o = p.orcpt {
            require(DSNParameters.originalRecipient(o, utf8: envelope.smtputf8) == o, "kept ORCPT not valid")
        }
    }
    var record = SpoolCodec.EnvelopeRecord(arrival: 1, eightBit: envelope.eightBit, from: envelope.from.bytes,
                                           recipients: envelope.recipients.map { $0.bytes })
    record.smtputf8 = envelope.smtputf8
    record.ret = envelope.ret
    record.envelopeID = envelope.envelopeID
    record.recipientParameters = envelope.recipientParameters
    require(SpoolCodec.canEncode(record), "a received envelope the spool cannot hold")
    let payload = SpoolCodec.envelopePayload(record)
    require(payload.withUnsafeBytes { SpoolCodec.parseEnvelope($0) } == record, "envelope with parameters round trip")
    // What goes upstream: one command line each, no CR or LF.
    var message = OutboundMessage(from: envelope.from, recipients: envelope.recipients, size: 10, eightBit: false)
    message.smtputf8 = envelope.smtputf8
    message.ret = envelope.ret
    message.envelopeID = envelope.envelopeID
    message.recipientParameters = envelope.recipientParameters
    var sender = SMTPSender(heloName: "fuzz")
    _ = sender.receive(Reply(220, nil, "up"))
    _ = sender.receive(Reply(250, nil, ["up", "PIPELINING", "DSN", "SMTPUTF8"]))
    for action in sender.start(message: message) {
        guard case .send(let bytes) = action else { continue }
        let lines = bytes.split(separator: ASCII.lf, omittingEmptySubsequences: false)
        for line in lines.dropLast() {
            require(line.last == ASCII.cr && !line.dropLast().contains(ASCII.cr), "a command with a bare CR")
        }
        require(lines.last?.isEmpty == true, "a command not ending in CRLF")
    }
}
