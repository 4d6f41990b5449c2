@testable import PosternCore

// The failure notice (DeliveryReport) composed from arbitrary inputs, and the
// header-section cut (DeliveryReport.headerSectionLength) over arbitrary text.
//
// Input: one byte of choices, sixteen bytes of times (two Int64), then fields
// separated by NUL: host, boundary, Message-ID, queue ID, status, reply,
// upstream, and the original header section (the rest, NULs included).
//
// Checked: no trap; CRLF line ends only and no line over 998 octets; exactly
// three delimiters and a close-delimiter, no other line beginning with the
// delimiter; 7-bit unless the returned header is 8-bit; the cut is within its
// bound and lands on a field boundary or the empty line.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let choices = input.byte()
    var times: [Int64] = []
    for _ in 0..<2 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(input.byte()) }
        times.append(Int64(bitPattern: v))
    }
    let rest = Array(input.rest())
    let pieces = rest.split(separator: 0, maxSplits: 7, omittingEmptySubsequences: false)
    func piece(_ i: Int) -> String { i < pieces.count ? ASCII.string(pieces[i]) : "" }
    let header = pieces.count > 7 ? Array(pieces[7]) : rest

    checkCut(header)

    let mb = Mailbox.parse(Array("admin@example.com".utf8)[...], allowNull: false) ?? Mailbox.null
    let count = Int(choices & 3)
    let recipients = (0..<count).map { n in
        DeliveryReport.Recipient(address: mb, status: piece(4), reply: choices & 4 != 0 ? piece(5) : nil,
                                 upstream: choices & 8 != 0 ? piece(6) : nil,
                                 lastAttempt: n == 0 ? times[1] : nil)
    }
    let report = DeliveryReport(
        reportingHost: piece(0), noticeRecipient: mb, originalSender: choices & 16 != 0 ? mb : .null,
        queueID: piece(3), arrival: choices & 32 != 0 ? times[0] : nil, reportTime: times[1],
        utcOffset: Int(truncatingIfNeeded: times[0]),
        recipients: recipients, reason: choices & 64 != 0 ? .expired(queuedSeconds: times[0]) : .refused,
        boundary: piece(1), messageID: piece(2), originalHeader: header)
    checkMessage(report.compose(), boundary: piece(1))
}

func checkCut(_ text: [UInt8]) {
    for whole in [true, false] {
        let n = DeliveryReport.headerSectionLength(text, isWholeMessage: whole)
        require(n >= 0 && n <= text.count, "a cut outside the text")
        if whole && n == text.count { continue }
        require(n <= DeliveryReport.maxHeaderSection, "a cut past the bound: \(n)")
        if n == 0 { continue }
        // After a CRLF, and before the empty line or the next field's start.
        require(text[n - 2] == ASCII.cr && text[n - 1] == ASCII.lf, "a cut not after a CRLF")
        require(n < text.count && !ASCII.isSpace(text[n]), "a cut before a continuation line or the unknown")
    }
}

func checkMessage(_ m: [UInt8], boundary: String) {
    var lines: [ArraySlice<UInt8>] = []
    var start = 0
    var i = 0
    while i < m.count {
        if m[i] == ASCII.cr {
            require(i + 1 < m.count && m[i + 1] == ASCII.lf, "a bare CR")
            lines.append(m[start..<i])
            i += 2
            start = i
            continue
        }
        require(m[i] != ASCII.lf, "a bare LF")
        i += 1
    }
    require(start == m.count, "the message does not end with CRLF")
    for l in lines { require(l.count <= HeaderFolding.maxLine, "a line of \(l.count) octets") }

    let b = DeliveryReport.validBoundary(boundary) ? Array(boundary.utf8) : DeliveryReport.fallbackBoundary
    let delimiter: [UInt8] = [45, 45] + b
    let close = delimiter + [45, 45]
    var delimiters = 0
    var closes = 0
    for l in lines where l.starts(with: delimiter) {
        if Array(l) == delimiter { delimiters += 1 } else if Array(l) == close { closes += 1 } else {
            require(false, "a line beginning with the delimiter")
        }
    }
    require(delimiters == 3 && closes == 1 && lines.last.map(Array.init) == close, "not three parts and a close")

    let eightBit = m.contains { $0 >= 128 }
    let top = lines.prefix { !$0.isEmpty }
    let declared = top.contains { Array($0) == Array("Content-Transfer-Encoding: 8bit".utf8) }
    require(eightBit == declared, "8-bit content not declared, or declared without")
}
