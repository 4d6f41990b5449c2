@testable import PosternCore

// sendmail's standard input to message text (SubmissionFilter) for any bytes,
// fed in chunks at fuzzer-chosen cut points into 1–64-octet output buffers,
// against one pass of the whole into a large buffer; and, on the same bytes,
// the address-list reader (HeaderAddressList, command-line recipients) and
// the From: value builder.
//
// Input: one byte of options (-t, dot ends input, dot-stuffed, which added
// field values are empty, a long From value), one byte of output-buffer size,
// eight bytes of chunk lengths, one byte of header limit, then the text. A
// limit byte of 128 or more makes the header buffer (byte - 128) octets
// instead of 100 KiB, so that short inputs reach it (the code is the same).
//
// Checked: no trap; the cuts and the output room never change the output, the
// recipients, the problems or the flags; every call progresses (or completes
// the header); nothing comes out before the header is done; the state stays
// within its bounds and never allocates after init; the output has only CRLF
// line ends and ends with one; with dot-stuffing no line is exactly ".", and
// without it no line is "." when a lone dot ends the input; every line of the
// output's header section is a header field or a continuation of one; a
// missing Date/Message-ID/From is there exactly once; no Bcc:/Resent-Bcc: with
// -t; recipients and problems within their bounds; octetsOut counts the output.

let dateName = Array("date".utf8)
let messageIDName = Array("message-id".utf8)
let fromName = Array("from".utf8)
let bccName = Array("bcc".utf8)
let resentBccName = Array("resent-bcc".utf8)
let longFrom = Array((String(repeating: "Very Long Name ", count: 40) + "<someone@example.com>").utf8)

struct Outcome: Equatable {
    var text: [UInt8]
    var recipients: [Mailbox]
    var problems: [Problem]
    var inputEnded: Bool
    var headerTruncated: Bool
    var hadDate: Bool
    var hadMessageID: Bool
    var hadFrom: Bool
}

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choices = input.byte()
    let outputSize = input.int(1...64)
    var chunks: [Int] = []
    for _ in 0..<8 { chunks.append(input.int(1...64)) }
    let limitByte = input.byte()
    let limit = limitByte >= 128 ? Int(limitByte - 128) : SubmissionFilter.maxHeaderSection
    let text = Array(input.rest())

    let options = SubmissionFilter.Options(
        extractRecipients: choices & 1 != 0, dotEndsInput: choices & 2 != 0, dotStuffed: choices & 4 != 0,
        localDomain: Array((choices & 8 != 0 ? "raspberrypi.example" : "not a domain").utf8),
        date: choices & 16 != 0 ? [] : Array("Mon, 01 Jan 2024 12:00:00 +0000".utf8),
        messageID: choices & 32 != 0 ? [] : Array("<1.2@raspberrypi.example>".utf8),
        from: choices & 64 != 0 ? [] : choices & 128 != 0 ? longFrom : Array("root@raspberrypi.example".utf8))

    let whole = submitAll(text, options, limit, chunks: [max(1, text.count)], outputSize: 2 * text.count + 16384)
    let split = submitAll(text, options, limit, chunks: chunks, outputSize: outputSize)
    require(whole == split, "the cut points or the output room changed the result")
    check(whole, options)

    // The pieces on the same bytes.
    let list = HeaderAddressList.parse(text[...])
    require(list.count <= text.count, "more elements than octets")
    let word = String(decoding: text, as: UTF8.self)
    if case .success(let r) = SubmissionFilter.recipients(inArgument: word, localDomain: options.localDomain) {
        require(!r.isEmpty, "a recipient argument with no recipients accepted")
    }
    let address = Array("someone@example.com".utf8)
    let from = SubmissionFilter.fromValue(fullName: text, address: address)
    guard let back = HeaderMailbox.parse(from, complete: true) else {
        require(false, "the From: value does not parse: " + ASCII.printable(from))
        return
    }
    require(Array(from[back.address]) == address, "the From: value has another address")
    require(!from.contains(ASCII.cr) && !from.contains(ASCII.lf), "a line end in the From: value")
}

/// Feeds `text` in pieces of the given lengths (cycling) through output
/// buffers of `outputSize` octets, as `postern sendmail` reads stdin.
func submitAll(_ text: [UInt8], _ options: SubmissionFilter.Options, _ limit: Int, chunks: [Int],
               outputSize: Int) -> Outcome {
    var f = SubmissionFilter(options, headerLimit: limit)
    let reserved = f.reservedOctets
    var out: [UInt8] = []
    out.reserveCapacity(2 * text.count + 4096)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: outputSize, alignment: 1)
    defer { buffer.deallocate() }
    var at = 0
    var k = 0
    text.withUnsafeBytes { t in
        while at < t.count {
            let end = min(t.count, at + chunks[k % chunks.count])
            k += 1
            while at < end {
                let before = f.headerDone
                let step = f.filter(UnsafeRawBufferPointer(rebasing: t[at..<end]), into: buffer)
                require(step.consumed <= end - at && step.produced <= buffer.count, "a step beyond its buffers")
                require(step.consumed + step.produced > 0 || f.headerDone != before, "no progress with input and room")
                require(before || step.produced == 0, "output before the header was done")
                out += buffer[0..<step.produced]
                at += step.consumed
                checkBounds(f, reserved, limit)
            }
        }
    }
    var rounds = 0
    while true {
        let before = f.headerDone
        let e = f.finish(into: buffer)
        require(e.produced <= buffer.count, "finish beyond its buffer")
        require(before || e.produced == 0, "output before the header was done")
        out += buffer[0..<e.produced]
        checkBounds(f, reserved, limit)
        if e.done { break }
        require(e.produced > 0 || f.headerDone != before, "finish made no progress")
        rounds += 1
        require(rounds <= 2 * SubmissionFilter.maxHeaderSection + 3 * SubmissionFilter.maxFieldValue + 64,
                "finish does not end")
    }
    let after = f.finish(into: buffer)
    require(after.done && after.produced == 0, "finish after done produced more")
    require(f.headerDone, "done without the header")
    require(f.octetsOut == Int64(out.count), "octetsOut is not the output's length")
    return Outcome(text: out, recipients: f.recipients, problems: f.problems, inputEnded: f.inputEnded,
                  headerTruncated: f.headerTruncated, hadDate: f.hadDate, hadMessageID: f.hadMessageID,
                  hadFrom: f.hadFrom)
}

func checkBounds(_ f: SubmissionFilter, _ reserved: Int, _ limit: Int) {
    let held = f.heldOctets
    require(held.header <= limit + 2, "the header buffer grew past its bound")
    require(held.pending <= 4, "more than 4 octets held back: \(held.pending)")
    require(f.reservedOctets == reserved, "the filter allocated after init")
    require(f.recipients.count <= SubmissionFilter.maxRecipients, "too many recipients")
    require(f.problems.count <= SubmissionFilter.maxProblems, "too many problems")
}

func check(_ r: Outcome, _ options: SubmissionFilter.Options) {
    let out = r.text
    // Only CRLF line ends, and a CRLF at the end.
    for (i, b) in out.enumerated() {
        if b == ASCII.cr { require(i + 1 < out.count && out[i + 1] == ASCII.lf, "a bare CR in the output") }
        if b == ASCII.lf { require(i > 0 && out[i - 1] == ASCII.cr, "a bare LF in the output") }
    }
    require(out.isEmpty || out.suffix(2) == [ASCII.cr, ASCII.lf], "the output does not end with CRLF")

    // The lines, dot-stuffing undone.
    var lines: [ArraySlice<UInt8>] = []
    var start = 0
    var i = 0
    while i + 1 < out.count {
        if out[i] == ASCII.cr && out[i + 1] == ASCII.lf {
            var l = out[start..<i]
            if options.dotStuffed {
                require(l != [ASCII.dot], "a lone dot line in dot-stuffed output")
                if l.first == ASCII.dot {
                    l = l.dropFirst()
                }
            } else if options.dotEndsInput {
                require(l != [ASCII.dot], "a lone dot line when a lone dot ends the input")
            }
            lines.append(l)
            i += 2
            start = i
            continue
        }
        i += 1
    }

    // The header section: up to the first empty line.
    var date = 0, messageID = 0, from = 0, bcc = 0
    for (n, l) in lines.enumerated() {
        if l.isEmpty { break }
        if n > 0 && ASCII.isSpace(l[l.startIndex]) { continue }
        require(SubmissionFilter.isFieldStart(l), "a header line that is no field: " + ASCII.printable(l))
        let name = l.prefix { $0 != ASCII.colon && !ASCII.isSpace($0) }
        if ASCII.equalsIgnoringCase(name, dateName) { date += 1 }
        if ASCII.equalsIgnoringCase(name, messageIDName) { messageID += 1 }
        if ASCII.equalsIgnoringCase(name, fromName) { from += 1 }
        if ASCII.equalsIgnoringCase(name, bccName) || ASCII.equalsIgnoringCase(name, resentBccName) {
            bcc += 1
        }
    }
    if !r.hadDate { require(date == (options.date.isEmpty ? 0 : 1), "\(date) Date: fields added") }
    if !r.hadMessageID { require(messageID == (options.messageID.isEmpty ? 0 : 1), "\(messageID) Message-ID: fields added") }
    if !r.hadFrom { require(from == (options.from.isEmpty ? 0 : 1), "\(from) From: fields added") }
    if r.hadDate { require(date >= 1, "a Date: field lost") }
    if r.hadMessageID { require(messageID >= 1, "a Message-ID: field lost") }
    if r.hadFrom { require(from >= 1, "a From: field lost") }
    if options.extractRecipients {
        require(bcc == 0, "a Bcc: field in the output header with -t")
    } else {
        require(r.recipients.isEmpty && r.problems.isEmpty, "recipients or problems without -t")
    }
    var seen: [[UInt8]] = []
    for m in r.recipients {
        require(m.atIndex != nil, "an unqualified recipient")
        seen.append(m.canonical)
    }
    // Recipients are distinct (quadratic, but the input is small).
    if seen.count <= 200 {
        for a in 0..<seen.count {
            for b in (a + 1)..<seen.count where seen[a] == seen[b] { require(false, "a duplicate recipient") }
        }
    }
}
