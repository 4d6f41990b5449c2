@testable import PosternCore

// The From: rewriter (FromRewriter) over arbitrary message text, split at
// fuzzer-chosen points into small output buffers, against one pass of the whole
// text into a large buffer; and the fields it writes (FromFields) for an
// arbitrary original From: value.
//
// Input: one byte of output-buffer size, eight bytes of split lengths, one byte
// of choices (sender, host name, whether the value was cut), then the text.
//
// Checked: no trap; the split and the output room never change the output;
// every step with room makes progress; the state stays within its stated
// bounds and never allocates after init; the output's header section has
// exactly one From: and no more Reply-To: than it may; the body comes out
// byte for byte; the written fields have CRLF line ends, no line over 998
// octets, and parse back to the new sender and the original address.

let senders = [
    Mailbox.parse(Array("alerts@example.com".utf8)[...], allowNull: false),
    // The longest path there is (RFC 5321 §4.5.3.1.3), for the size bound.
    Mailbox.parse(Array((String(repeating: "l", count: 64) + "@" + String(repeating: "d", count: 63) + "."
                         + String(repeating: "e", count: 63) + "." + String(repeating: "f", count: 60)).utf8)[...],
                  allowNull: false),
]
let hosts = ["raspberrypi", String(repeating: "h", count: 63) + "." + String(repeating: "i", count: 63) + "."
             + String(repeating: "j", count: 63) + "." + String(repeating: "k", count: 61), "not a domain"]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let outputSize = input.int(1...64)
    var splits: [Int] = []
    for _ in 0..<8 { splits.append(input.int(1...64)) }
    let choices = input.byte()
    guard let sender = senders[Int(choices & 1)] else { return }
    let host = hosts[Int(choices >> 1 & 3) % hosts.count]
    let text = Array(input.rest())

    let whole = rewriteAll(text, chunks: [max(1, text.count)], outputSize: text.count + FromRewriter.maxGenerated + 8,
                           sender: sender, host: host)
    let split = rewriteAll(text, chunks: splits, outputSize: outputSize, sender: sender, host: host)
    require(whole == split, "the split points or the output room changed the output")
    checkStructure(input: text, output: whole, sender: sender)

    // The written fields for the text taken as a From: value, cut or not.
    let value = Array(text.prefix(FromRewriter.maxFromValue))
    checkFields(value: value, truncated: choices & 8 != 0, hasReplyTo: choices & 16 != 0, sender: sender, host: host)
}

/// Feeds `text` in pieces of the given lengths (cycling) through output buffers
/// of `outputSize` octets, as the delivery code would with its fixed buffers.
func rewriteAll(_ text: [UInt8], chunks: [Int], outputSize: Int, sender: Mailbox, host: String) -> [UInt8] {
    var r = FromRewriter(sender: sender, qualifyDomain: host)
    let reserved = r.reservedOctets
    var out: [UInt8] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: outputSize, alignment: 1)
    defer { buffer.deallocate() }
    var at = 0
    var k = 0
    text.withUnsafeBytes { t in
        while at < t.count {
            let end = min(t.count, at + chunks[k % chunks.count])
            k += 1
            while at < end {
                let step = r.rewrite(UnsafeRawBufferPointer(rebasing: t[at..<end]), into: buffer)
                require(step.consumed <= end - at && step.produced <= buffer.count, "a step beyond its buffers")
                require(step.consumed + step.produced > 0, "no progress with input and room")
                out += buffer[0..<step.produced]
                at += step.consumed
                checkBounds(r, reserved)
            }
        }
    }
    var rounds = 0
    while true {
        let e = r.finish(into: buffer)
        require(e.produced <= buffer.count, "finish beyond its buffer")
        out += buffer[0..<e.produced]
        checkBounds(r, reserved)
        if e.done { break }
        require(e.produced > 0, "finish made no progress")
        rounds += 1
        require(rounds <= FromRewriter.maxGenerated + FromRewriter.maxFieldName + 8, "finish does not end")
    }
    let after = r.finish(into: buffer)
    require(after.done && after.produced == 0, "finish after done produced more")
    return out
}

func checkBounds(_ r: FromRewriter, _ reserved: Int) {
    let held = r.heldOctets
    require(held.name <= FromRewriter.maxFieldName, "the field-name buffer grew past its bound")
    require(held.from <= FromRewriter.maxFromValue, "the From: buffer grew past its bound")
    require(held.generated <= FromRewriter.maxGenerated, "the generated fields grew past their bound: \(held.generated)")
    require(r.reservedOctets == reserved, "the rewriter allocated after init")
}

/// Lines of a header section as the rewriter sees them: CRLF ends a line; the
/// section ends at the first empty line. Returns the lines (without CRLF) and
/// the offset of the empty line (or the end).
func headerLines(_ text: [UInt8]) -> (lines: [ArraySlice<UInt8>], end: Int) {
    var lines: [ArraySlice<UInt8>] = []
    var start = 0
    var i = 0
    while i < text.count {
        if text[i] == ASCII.cr && i + 1 < text.count && text[i + 1] == ASCII.lf {
            if i == start { return (lines, start) }
            lines.append(text[start..<i])
            i += 2
            start = i
            continue
        }
        i += 1
    }
    if start < text.count { lines.append(text[start...]) }
    return (lines, text.count)
}

/// The kind of the field a line begins, decided as the rewriter decides it.
func kind(_ line: ArraySlice<UInt8>) -> FromRewriter.FieldKind {
    var prefix: [UInt8] = []
    for b in line.prefix(FromRewriter.maxFieldName) {
        prefix.append(b)
        let k = FromRewriter.classify(prefix)
        if k != .undecided { return k }
    }
    return .other
}

func checkStructure(input: [UInt8], output: [UInt8], sender: Mailbox) {
    let (inLines, inEnd) = headerLines(input)
    let (outLines, outEnd) = headerLines(output)
    // The body, from the empty line on, is untouched.
    require(Array(input[inEnd...]) == Array(output[outEnd...]), "the body changed")
    var inReplyTo = 0
    for l in inLines where !(l.first.map(ASCII.isSpace) ?? false) {
        if kind(l) == .replyTo { inReplyTo += 1 }
    }
    var from: [ArraySlice<UInt8>] = []
    var replyTo: [ArraySlice<UInt8>] = []
    var outFrom = 0
    var outReplyTo = 0
    var current = FromRewriter.FieldKind.other
    for (n, l) in outLines.enumerated() {
        if n == 0 || !(l.first.map(ASCII.isSpace) ?? false) {
            current = kind(l)
            if current == .from { outFrom += 1 }
            if current == .replyTo { outReplyTo += 1 }
        }
        if current == .from { from.append(l) }
        if current == .replyTo && inReplyTo == 0 { replyTo.append(l) }
    }
    require(outFrom == 1, "\(outFrom) From: fields in the output")
    require(inReplyTo > 0 ? outReplyTo == inReplyTo : outReplyTo <= 1, "a Reply-To: added beside one that was there")
    for l in from + replyTo {
        require(l.count <= HeaderFolding.maxLine, "a written line of \(l.count) octets")
        require(!l.contains(ASCII.cr) && !l.contains(ASCII.lf), "a bare CR or LF in a written field")
    }
    let newFrom = unfold(from)
    require(newFrom.starts(with: Array("From: ".utf8)), "the From: field is not the written one")
}

/// The value of a field from its lines: the name and colon dropped, the lines
/// joined (unfolding removes only the CRLF, RFC 5322 §2.2.3).
func unfold(_ lines: [ArraySlice<UInt8>]) -> [UInt8] {
    var out: [UInt8] = []
    for l in lines { out += l }
    return out
}

func checkFields(value: [UInt8], truncated: Bool, hasReplyTo: Bool, sender: Mailbox, host: String) {
    let domain = Array(host.utf8)
    let qualify = Mailbox.isDomain(domain[...]) ? domain : Array("localhost".utf8)
    var out: [UInt8] = []
    FromFields.append(original: value, truncated: truncated, hasReplyTo: hasReplyTo, sender: sender,
                      qualifyDomain: qualify, to: &out)
    // Generous for two fields and the CRLFs the rewriter adds around them.
    require(out.count + 5 <= FromRewriter.maxGenerated, "written fields of \(out.count) octets")
    let (lines, end) = headerLines(out)
    require(end == out.count && out.suffix(2) == [ASCII.cr, ASCII.lf], "the fields do not end with CRLF")
    var fields: [[ArraySlice<UInt8>]] = []
    for l in lines {
        require(l.count <= HeaderFolding.maxLine, "a written line of \(l.count) octets")
        require(!l.contains(ASCII.cr) && !l.contains(ASCII.lf), "a bare CR or LF in a written field")
        if ASCII.isSpace(l.first ?? 0) {
            require(!fields.isEmpty, "the fields begin with a continuation line")
            if !fields.isEmpty { fields[fields.count - 1].append(l) }
        } else {
            fields.append([l])
        }
    }
    require(fields.count == 1 || fields.count == 2, "\(fields.count) fields written")
    require(!hasReplyTo || fields.count == 1, "a Reply-To: written beside an existing one")

    // No hard break (a run over 998 octets without a blank) means the written
    // values are the originals: then they must parse back.
    var run = 0
    var longRun = false
    for b in value {
        run = ASCII.isSpace(b) ? 0 : run + 1
        if run > 900 { longRun = true }
    }
    if longRun { return }
    let fromValue = Array(unfold(fields[0]).dropFirst(5))
    guard let newFrom = HeaderMailbox.parse(fromValue, complete: true) else {
        require(false, "the written From: does not parse: " + ASCII.printable(fromValue))
        return
    }
    require(Array(fromValue[newFrom.address]) == sender.bytes, "the written From: has another address")
    let original = HeaderMailbox.parse(value, complete: !truncated)
    if fields.count == 2 {
        let replyValue = Array(unfold(fields[1]).dropFirst(9))
        if let o = original {
            let expected = Array(value[o.address]) + (o.isUnqualified ? [ASCII.at] + qualify : [])
            // An unqualified address that its qualifying domain makes longer
            // than a line is hard-broken like any long run (RFC 5322 §2.1.1),
            // and cannot parse back.
            if expected.count > 900 { return }
            guard let back = HeaderMailbox.parse(replyValue, complete: true) else {
                require(false, "the written Reply-To: does not parse: " + ASCII.printable(replyValue))
                return
            }
            require(HeaderFolding.sanitized(replyValue[back.address]) == HeaderFolding.sanitized(expected),
                    "the written Reply-To: has another address")
        }
    } else if original != nil && !hasReplyTo {
        require(false, "a From: that parsed gave no Reply-To:")
    }
}
