@testable import PosternCore

// The envelope at the head of a drop file (`DropEnvelope.parse`), which any
// local user can write and the daemon's pickup reads: any bytes give an
// envelope, a request for more, or a refusal naming a line — never a trap. An
// envelope has a sender and 1 … maxRecipients recipients, each a valid
// mailbox, ends inside the input, and encodes back to the same bytes when the
// input was written by `encode` (first byte 1: the rest are recipients to encode).

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let mode = input.byte()
    let rest = Array(input.rest())
    if mode == 1 {
        var rcpts: [Mailbox] = []
        for word in rest.split(separator: 10) where rcpts.count < 20 {
            if let m = Mailbox.parse(word, allowNull: false) { rcpts.append(m) }
        }
        guard !rcpts.isEmpty else { return }
        let bytes = DropEnvelope.encode(sender: .null, recipients: rcpts)
        guard case .envelope(let p) = DropEnvelope.parse(bytes[...]) else {
            require(false, "an encoded envelope does not parse")
            return
        }
        require(p.length == bytes.count && p.recipients == rcpts && p.sender.isNull, "round trip changed the envelope")
        return
    }
    switch DropEnvelope.parse(rest[...]) {
    case .envelope(let p):
        require(p.length >= 1 && p.length <= rest.count, "envelope length \(p.length) of \(rest.count)")
        require(!p.recipients.isEmpty && p.recipients.count <= DropEnvelope.maxRecipients, "\(p.recipients.count) recipients")
        require(p.recipients.allSatisfy { !$0.isNull }, "a null recipient")
    case .needMore:
        require(rest.count < DropEnvelope.maxLength, "needMore past the bound")
    case .invalid(let problem):
        require(!problem.text.isEmpty, "an empty refusal")
    }
}
