@testable import PosternCore

// The To:/Cc: rewriter (RecipientRewriter) over arbitrary message text, split
// at fuzzer-chosen points into small output buffers, against one pass of the
// whole text into a large buffer.
//
// Input: one byte of output-buffer size, eight bytes of split lengths, one byte
// choosing the alias map, then the text.
//
// Checked: no trap; the split and the output room never change the output;
// every step with room makes progress; the state stays within its stated
// bounds and never allocates after init; the header keeps its fields in order,
// every field but To: and Cc: octet for octet; a To:/Cc: field that changed
// had a local address with an alias, keeps its name, has CRLF lines of at most
// 998 octets and (when it parses) no local address with an alias left; a short
// one that has such an address does change while the growth budget lasts; the
// message grows by at most maxGrowth; the body comes out byte for byte.

let localDomains: [[UInt8]] = [Array("localhost".utf8), Array("gateway.local".utf8)]

func aliasMap(_ lines: [String]) -> AliasMap {
    var config: [AliasMap.Line] = []
    for (n, l) in lines.enumerated() {
        let parts = l.split(separator: "=", maxSplits: 1)
        config.append(AliasMap.Line(name: String(parts[0]), value: String(parts[1]), line: n + 1))
    }
    switch AliasMap.build(config, localDomains: localDomains) {
    case .success(let m): return m
    case .failure(let e):
        require(false, "the fuzz target's map does not build: " + e.message)
        return .empty
    }
}

func addresses(_ n: Int, _ prefix: String) -> String {
    var s = ""
    for i in 0..<n { s += (i > 0 ? ", " : "") + prefix + "\(i)@example.com" }
    return s
}

let maps = [
    aliasMap(["root=admin@example.com", "cron-job=ops@example.com, admin@example.com", "postmaster=root"]),
    aliasMap(["root=admin@example.com", "*=catchall@example.com"]),
    // A list that folds, and one too long to fit maxRewritten.
    aliasMap(["list=" + addresses(40, "someone-with-a-long-name-"), "big=" + addresses(1000, "user-number-"),
              "root=admin@example.com"]),
]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let outputSize = input.int(1...64)
    var splits: [Int] = []
    for _ in 0..<8 { splits.append(input.int(1...64)) }
    let choice = Int(input.byte()) % maps.count
    let map = maps[choice]
    let text = Array(input.rest())

    let whole = rewriteAll(text, chunks: [max(1, text.count)], outputSize: text.count + 2 * RecipientRewriter.maxRewritten,
                           map: map)
    let split = rewriteAll(text, chunks: splits, outputSize: outputSize, map: map)
    require(whole == split, "the split points or the output room changed the output")
    checkStructure(input: text, output: whole, map: map, smallExpansions: choice < 2)
}

func rewriteAll(_ text: [UInt8], chunks: [Int], outputSize: Int, map: AliasMap) -> [UInt8] {
    var r = RecipientRewriter(aliases: map)
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
        require(rounds <= RecipientRewriter.maxRewritten + RecipientRewriter.maxField + 8, "finish does not end")
    }
    let after = r.finish(into: buffer)
    require(after.done && after.produced == 0, "finish after done produced more")
    return out
}

func checkBounds(_ r: RecipientRewriter, _ reserved: Int) {
    let held = r.heldOctets
    require(held.field <= RecipientRewriter.maxField, "the field buffer grew past its bound")
    require(held.rewritten <= RecipientRewriter.maxRewritten, "the rewritten field grew past its bound")
    require(r.reservedOctets == reserved, "the rewriter allocated after init")
}

/// The header's fields as the rewriter sees them (a field is a line and the
/// lines after it that begin with a blank; CRLF ends a line; the section ends
/// at the first empty line), each with its CRLFs; and the offset of the body.
func headerFields(_ text: [UInt8]) -> (fields: [ArraySlice<UInt8>], end: Int) {
    var fields: [ArraySlice<UInt8>] = []
    var fieldStart = 0
    var lineStart = 0
    var i = 0
    while i < text.count {
        guard text[i] == ASCII.cr && i + 1 < text.count && text[i + 1] == ASCII.lf else {
            i += 1
            continue
        }
        if i == lineStart {
            if lineStart > fieldStart { fields.append(text[fieldStart..<lineStart]) }
            return (fields, lineStart)
        }
        i += 2
        lineStart = i
        // The next line starts a field unless it begins with a blank.
        if i < text.count && !ASCII.isSpace(text[i]) {
            fields.append(text[fieldStart..<i])
            fieldStart = i
        }
    }
    if text.count > fieldStart { fields.append(text[fieldStart...]) }
    return (fields, text.count)
}

func isAddressField(_ field: ArraySlice<UInt8>) -> Bool {
    var prefix: [UInt8] = []
    for b in field.prefix(RecipientRewriter.maxFieldName) {
        prefix.append(b)
        let k = RecipientRewriter.classify(prefix)
        if k != .undecided { return k == .address }
    }
    return false
}

/// The value of a field: after the first colon, CRLF before a blank removed;
/// nil when another CR or LF is in it. `longRun` tells a run of more than 900
/// octets without a blank (where folding has to break a word).
func unfoldedValue(_ field: ArraySlice<UInt8>) -> (value: [UInt8], longRun: Bool)? {
    guard let colon = field.firstIndex(of: ASCII.colon) else { return nil }
    var body = field[(colon + 1)...]
    if body.count >= 2 && body.suffix(2).elementsEqual([ASCII.cr, ASCII.lf]) { body = body.dropLast(2) }
    var out: [UInt8] = []
    var run = 0
    var longRun = false
    var i = body.startIndex
    while i < body.endIndex {
        let b = body[i]
        if b == ASCII.cr || b == ASCII.lf {
            guard b == ASCII.cr, i + 2 < body.endIndex, body[i + 1] == ASCII.lf, ASCII.isSpace(body[i + 2]) else { return nil }
            i += 2
            continue
        }
        run = ASCII.isSpace(b) ? 0 : run + 1
        if run > 900 { longRun = true }
        out.append(b)
        i += 1
    }
    return (out, longRun)
}

/// How many mailboxes of the value are local with an alias (as the rewriter
/// decides it), or nil when the value does not parse.
func aliasedMailboxes(_ value: [UInt8], _ map: AliasMap) -> Int? {
    guard let found = AliasHeaderAddresses.parse(value) else { return nil }
    var n = 0
    for f in found {
        if let d = f.domain, !map.isLocalDomain(value[d]) { continue }
        let local = value[f.localPart]
        guard Mailbox.parse(local + Array("@localhost".utf8), allowNull: false) != nil,
              map.expand(localPart: local) != nil else { continue }
        n += 1
    }
    return n
}

func checkStructure(input: [UInt8], output: [UInt8], map: AliasMap, smallExpansions: Bool) {
    let (inFields, inEnd) = headerFields(input)
    let (outFields, outEnd) = headerFields(output)
    require(Array(input[inEnd...]) == Array(output[outEnd...]), "the body changed")
    require(inFields.count == outFields.count, "\(inFields.count) fields in, \(outFields.count) out")
    require(output.count - input.count <= RecipientRewriter.maxGrowth, "the message grew by \(output.count - input.count)")
    var grown = 0
    for (a, b) in zip(inFields, outFields) {
        let same = a.elementsEqual(b)
        guard isAddressField(a) else {
            require(same, "a field other than To: or Cc: changed")
            continue
        }
        let original = unfoldedValue(a)
        let aliased = original.flatMap { aliasedMailboxes($0.value, map) } ?? 0
        if same {
            // A short field with an aliased address cannot stay (small
            // aliases cannot reach maxRewritten; it grows by less than 8,000
            // octets), unless the message's growth budget is spent.
            require(!(smallExpansions && aliased > 0 && a.count <= 400 && grown + 8000 <= RecipientRewriter.maxGrowth),
                    "a To:/Cc: field with an aliased address stayed")
            continue
        }
        grown += max(0, b.count - a.count)
        require(a.count <= RecipientRewriter.maxField, "a field longer than maxField changed")
        require(aliased > 0, "a To:/Cc: field without an aliased address changed")
        require(isAddressField(b), "the rewritten field is not To: or Cc:")
        if let colon = a.firstIndex(of: ASCII.colon) {
            require(b.starts(with: a[...colon]), "the field name changed")
        }
        var lineStart = b.startIndex
        var i = b.startIndex
        while i < b.endIndex {
            if b[i] == ASCII.cr || b[i] == ASCII.lf {
                require(b[i] == ASCII.cr && i + 1 < b.endIndex && b[i + 1] == ASCII.lf, "a bare CR or LF in a rewritten field")
                require(i - lineStart <= HeaderFolding.maxLine, "a rewritten line of \(i - lineStart) octets")
                i += 2
                lineStart = i
                continue
            }
            i += 1
        }
        require(b.endIndex - lineStart <= HeaderFolding.maxLine, "a rewritten last line of \(b.endIndex - lineStart) octets")
        let endsCRLF = a.suffix(2).elementsEqual([ASCII.cr, ASCII.lf])
        require(endsCRLF == b.suffix(2).elementsEqual([ASCII.cr, ASCII.lf]), "the field's final CRLF changed")
        if let o = original, !o.longRun, let rewritten = unfoldedValue(b) {
            require(aliasedMailboxes(rewritten.value, map) == 0, "an aliased address left in a rewritten field")
        }
    }
}
