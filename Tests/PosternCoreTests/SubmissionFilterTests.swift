import Testing
@testable import PosternCore

let submissionDate = "Mon, 01 Jan 2024 12:00:00 +0000"
let submissionID = "<20240101120000.1234@raspberrypi.example>"
let submissionFrom = "Cron Daemon <root@raspberrypi.example>"

func submissionOptions(extract: Bool = false, dotEnds: Bool = true, stuffed: Bool = false,
                       date: String = submissionDate, messageID: String = submissionID,
                       from: String = submissionFrom) -> SubmissionFilter.Options {
    SubmissionFilter.Options(extractRecipients: extract, dotEndsInput: dotEnds, dotStuffed: stuffed,
                             localDomain: Array("raspberrypi.example".utf8), date: Array(date.utf8),
                             messageID: Array(messageID.utf8), from: Array(from.utf8))
}

/// Runs `text` through a filter in pieces of `chunk` octets and output buffers
/// of `outputSize` octets, as `postern sendmail` does with stdin; checks that
/// nothing comes out before the header is done and that every call progresses.
func submitAll(_ text: [UInt8], _ options: SubmissionFilter.Options, chunk: Int = Int.max,
               outputSize: Int = 4096, headerLimit: Int = SubmissionFilter.maxHeaderSection)
    -> (text: [UInt8], filter: SubmissionFilter) {
    var f = SubmissionFilter(options, headerLimit: headerLimit)
    let reserved = f.reservedOctets
    var out: [UInt8] = []
    var output = [UInt8](repeating: 0, count: outputSize)
    var start = 0
    while start < text.count {
        let end = chunk >= text.count - start ? text.count : start + chunk
        var at = start
        while at < end {
            let before = f.headerDone
            let step = text[at..<end].withUnsafeBytes { i in output.withUnsafeMutableBytes { f.filter(i, into: $0) } }
            if !before { #expect(step.produced == 0, "output before the header was done") }
            if step.consumed == 0 && step.produced == 0 && before == f.headerDone {
                Issue.record("no progress with \(outputSize) octets of room")
                return (out, f)
            }
            out += output[0..<step.produced]
            at += step.consumed
        }
        start = end
    }
    while true {
        let before = f.headerDone
        let e = output.withUnsafeMutableBytes { f.finish(into: $0) }
        out += output[0..<e.produced]
        if e.done { break }
        if e.produced == 0 && before == f.headerDone {
            Issue.record("finish made no progress with \(outputSize) octets of room")
            return (out, f)
        }
    }
    #expect(f.reservedOctets == reserved, "the filter allocated after init")
    #expect(f.octetsOut == Int64(out.count))
    return (out, f)
}

func submit(_ text: String, _ options: SubmissionFilter.Options = submissionOptions(),
            chunk: Int = Int.max, outputSize: Int = 4096) -> (text: String, filter: SubmissionFilter) {
    let r = submitAll(Array(text.utf8), options, chunk: chunk, outputSize: outputSize)
    return (String(decoding: r.text, as: UTF8.self), r.filter)
}

let addedFields = "Date: \(submissionDate)\r\nMessage-ID: \(submissionID)\r\nFrom: \(submissionFrom)\r\n"

/// `expected` with "§" standing for the added fields (keeps argument lists simple to type-check).
func expanded(_ expected: String) -> String {
    String(expected.split(separator: "§", omittingEmptySubsequences: false).joined(separator: addedFields))
}

func addresses(_ f: SubmissionFilter) -> [String] { f.recipients.map(\.text) }

@Suite("sendmail's standard input to message text (RFC 5322 §2.1, §3.6; RFC 5321 §4.5.2)")
struct SubmissionFilterTests {
    // MARK: what programs write

    @Test("cron's message: From: kept, Date: and Message-ID: added before the empty line, -i keeps a lone dot")
    func cron() throws {
        let input = """
            From: root (Cron Daemon)
            To: root
            Subject: Cron <root@raspberrypi> /usr/local/bin/backup
            MIME-Version: 1.0
            Content-Type: text/plain; charset=UTF-8
            Content-Transfer-Encoding: 8bit
            X-Cron-Env: <SHELL=/bin/sh>
            X-Cron-Env: <HOME=/root>
            X-Cron-Env: <PATH=/usr/bin:/bin>
            X-Cron-Env: <LOGNAME=root>

            backup done
            .
            bye

            """
        let (out, f) = submit(input, submissionOptions(dotEnds: false, stuffed: true))
        #expect(out == """
            From: root (Cron Daemon)\r
            To: root\r
            Subject: Cron <root@raspberrypi> /usr/local/bin/backup\r
            MIME-Version: 1.0\r
            Content-Type: text/plain; charset=UTF-8\r
            Content-Transfer-Encoding: 8bit\r
            X-Cron-Env: <SHELL=/bin/sh>\r
            X-Cron-Env: <HOME=/root>\r
            X-Cron-Env: <PATH=/usr/bin:/bin>\r
            X-Cron-Env: <LOGNAME=root>\r
            Date: \(submissionDate)\r
            Message-ID: \(submissionID)\r
            \r
            backup done\r
            ..\r
            bye\r

            """)
        #expect(f.headerDone && !f.inputEnded && f.problems.isEmpty && f.recipients.isEmpty)
        #expect(f.hadFrom && !f.hadDate && !f.hadMessageID)
    }

    @Test("mail(1) with -t: To, Cc with a group, Bcc; recipients qualified, Bcc: removed (RFC 5322 §3.6.3)")
    func mailxExtract() throws {
        let input = """
            To: ops@example.com, root
            Cc: Team: a@example.com, "Bloggs, Joe" <b@example.com>;
            Bcc: secret@example.com,
             other@example.net (Other)
            Subject: disk

            sda is failing

            """
        let (out, f) = submit(input, submissionOptions(extract: true))
        #expect(addresses(f) == ["ops@example.com", "root@raspberrypi.example", "a@example.com", "b@example.com",
                                 "secret@example.com", "other@example.net"])
        #expect(f.problems.isEmpty)
        #expect(out == """
            To: ops@example.com, root\r
            Cc: Team: a@example.com, "Bloggs, Joe" <b@example.com>;\r
            Subject: disk\r
            \(addedFields)\r
            sda is failing\r

            """)
    }

    @Test("Without -t, Bcc: stays and no recipients are read")
    func noExtract() throws {
        let (out, f) = submit("Bcc: a@example.com\nTo: b\n\nx\n")
        #expect(out.hasPrefix("Bcc: a@example.com\r\nTo: b\r\n"))
        #expect(f.recipients.isEmpty && f.problems.isEmpty)
    }

    @Test("echo hello | sendmail root: the three fields, the empty line, the body")
    func bodyOnly() throws {
        let (out, f) = submit("hello\n")
        #expect(out == addedFields + "\r\nhello\r\n")
        #expect(f.headerDone && !f.headerTruncated)
    }

    @Test("Empty input gives the three fields and nothing else; a header alone gets no empty line (RFC 5322 §3.5)")
    func emptyAndHeaderOnly() throws {
        #expect(submit("").text == addedFields)
        #expect(submit("Subject: x\n").text == "Subject: x\r\n" + addedFields)
        #expect(submit("Subject: x").text == "Subject: x\r\n" + addedFields)
        // An empty line given is kept: an empty body.
        #expect(submit("Subject: x\n\n").text == "Subject: x\r\n" + addedFields + "\r\n")
        #expect(submit("\n").text == addedFields + "\r\n")
    }

    @Test("Fields present in any case are not added again (RFC 5322 §1.2.2, §3.6)")
    func presentFields() throws {
        let input = "DATE: Tue, 2 Jan 2024 00:00:00 +0000\nmessage-id: <x@y>\nfrom : me@example.com\n\nb\n"
        let (out, f) = submit(input)
        #expect(out == "DATE: Tue, 2 Jan 2024 00:00:00 +0000\r\nmessage-id: <x@y>\r\nfrom : me@example.com\r\n\r\nb\r\n")
        #expect(f.hadDate && f.hadMessageID && f.hadFrom)
    }

    @Test("An empty option value adds no field; a long one is folded into valid lines (RFC 5322 §2.1.1, §2.2.3)")
    func optionValues() throws {
        let none = submit("x\n", submissionOptions(date: "", messageID: "", from: "")).text
        #expect(none == "\r\nx\r\n")
        let long = String(repeating: "word ", count: 60) + "<a@b>"
        let out = submit("", submissionOptions(from: long + "\r\nBcc: x@y")).text
        let lines = out.split(separator: "\r\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count > 3)
        for l in lines {
            #expect(l.utf8.count <= 78 || !l.contains(" "))
            #expect(!l.hasPrefix("Bcc"))
        }
    }

    // MARK: line ends

    @Test("LF alone becomes CRLF, CRLF stays, CRs before LF are one line end, a bare CR ends a line", arguments: [
        ("a: 1\nb: 2\n\nx\ny\n", "a: 1\r\nb: 2\r\n§\r\nx\r\ny\r\n"),
        ("a: 1\r\nb: 2\r\n\r\nx\r\ny\r\n", "a: 1\r\nb: 2\r\n§\r\nx\r\ny\r\n"),
        ("a: 1\r\r\n\r\r\nx\r\r\r\n", "a: 1\r\n§\r\nx\r\n"),
        ("a: 1\rb: 2\r\rx\ry", "a: 1\r\nb: 2\r\n§\r\nx\r\ny\r\n"),
        ("\n\rx\r", "§\r\n\r\nx\r\n"),
        ("x\n\n\n", "§\r\nx\r\n\r\n\r\n"),
    ])
    func lineEnds(input: String, expected: String) throws {
        #expect(submit(input).text == expanded(expected))
    }

    @Test("A bare CR cannot hide a Bcc: from removal: it ends the To: line")
    func bareCRBcc() throws {
        let (out, f) = submit("To: a@example.com\rBcc: hidden@example.com\r\n\r\nx\r\n", submissionOptions(extract: true))
        #expect(!out.contains("hidden"))
        #expect(addresses(f) == ["a@example.com", "hidden@example.com"])
    }

    // MARK: the lone dot

    @Test("Without -i a lone dot ends the input; what follows is dropped", arguments: [
        ("Subject: a\n\nline\n.\nafter\n", "Subject: a\r\n§\r\nline\r\n"),
        ("Subject: a\r\n\r\nline\r\n.\r\nafter\r\n", "Subject: a\r\n§\r\nline\r\n"),
        ("Subject: a\n\nline\n.", "Subject: a\r\n§\r\nline\r\n"),
        ("Subject: a\n.\nafter\n", "Subject: a\r\n§"),
        (".\nSubject: a\n", "§"),
        ("x\n.\r\r\nafter", "§\r\nx\r\n"),
    ])
    func loneDotEnds(input: String, expected: String) throws {
        let (out, f) = submit(input)
        #expect(out == expanded(expected))
        #expect(f.inputEnded)
    }

    @Test("Lines that only begin with a dot are text, dot-stuffed for SMTP (RFC 5321 §4.5.2)")
    func dotLines() throws {
        let (out, f) = submit("x\n..\n.x\n. \n", submissionOptions(stuffed: true))
        #expect(out == addedFields + "\r\nx\r\n...\r\n..x\r\n.. \r\n")
        #expect(!f.inputEnded)
        #expect(submit("x\n..\n.x\n", submissionOptions(stuffed: false)).text == addedFields + "\r\nx\r\n..\r\n.x\r\n")
    }

    @Test("With -i a lone dot is text: stuffed for SMTP, kept for a file")
    func dotWithI() throws {
        let (out, f) = submit("x\n.\ny\n.", submissionOptions(dotEnds: false, stuffed: true))
        #expect(out == addedFields + "\r\nx\r\n..\r\ny\r\n..\r\n")
        #expect(!f.inputEnded)
        #expect(submit("x\n.\ny\n", submissionOptions(dotEnds: false)).text == addedFields + "\r\nx\r\n.\r\ny\r\n")
    }

    @Test("The lone dot's call consumes the rest of the input, so the caller's loop ends")
    func dotConsumesRest() throws {
        var f = SubmissionFilter(submissionOptions())
        var out = [UInt8](repeating: 0, count: 4096)
        let text = Array("x\n.\nmore text that is not read\n".utf8)
        var at = 0
        var produced: [UInt8] = []
        while at < text.count {
            let step = text[at...].withUnsafeBytes { i in out.withUnsafeMutableBytes { f.filter(i, into: $0) } }
            produced += out[0..<step.produced]
            at += step.consumed
        }
        #expect(f.inputEnded)
        let e = out.withUnsafeMutableBytes { f.finish(into: $0) }
        produced += out[0..<e.produced]
        #expect(e.done)
        #expect(String(decoding: produced, as: UTF8.self) == addedFields + "\r\nx\r\n")
    }

    @Test("A dot-stuffed header line: a field name may begin with a dot (RFC 5322 §3.6.8)")
    func dotInHeader() throws {
        #expect(submit(".x: 1\n\nb\n", submissionOptions(stuffed: true)).text == "..x: 1\r\n" + addedFields + "\r\nb\r\n")
    }

    // MARK: the header section

    @Test("Leading mbox From_ lines (and >From_) are dropped, later ones are text")
    func mboxFrom() throws {
        let (out, _) = submit("From root@pi Mon Jan  1 00:00:00 2024\n>From x\nSubject: s\n\nFrom me\n")
        #expect(out == "Subject: s\r\n" + addedFields + "\r\nFrom me\r\n")
        #expect(submit("Subject: s\nFrom root\n").text == "Subject: s\r\n" + addedFields + "\r\nFrom root\r\n")
        #expect(submit("From: a@b\n\nx\n").text.hasPrefix("From: a@b\r\n"))
    }

    @Test("A line that is no header field ends the header section; an empty line is inserted before it (RFC 5322 §2.1)",
          arguments: [
        ("Subject: a\nnot a header\nmore\n", "Subject: a\r\n§\r\nnot a header\r\nmore\r\n"),
        (" leading blank\n", "§\r\n leading blank\r\n"),
        ("Subject: a\n folded\n\tagain\nX: y\n\nb\n", "Subject: a\r\n folded\r\n\tagain\r\nX: y\r\n§\r\nb\r\n"),
        ("Sub ject: a\n", "§\r\nSub ject: a\r\n"),
        (": no name\n", "§\r\n: no name\r\n"),
        ("Subject : obsolete blank\n\nb\n", "Subject : obsolete blank\r\n§\r\nb\r\n"),
        ("Subject: a\nSubject\n", "Subject: a\r\n§\r\nSubject\r\n"),
    ])
    func headerEnd(input: String, expected: String) throws {
        #expect(submit(input).text == expanded(expected))
    }

    @Test("Resent-To/Cc/Bcc take the place of To/Cc/Bcc when present (RFC 5322 §3.6.6)")
    func resent() throws {
        let input = "To: old@example.com\nBcc: oldhidden@example.com\nResent-To: new@example.com\nResent-Bcc: newhidden@example.com\n\nb\n"
        let (out, f) = submit(input, submissionOptions(extract: true))
        #expect(addresses(f) == ["new@example.com", "newhidden@example.com"])
        #expect(out == "To: old@example.com\r\nResent-To: new@example.com\r\n" + addedFields + "\r\nb\r\n")
    }

    @Test("Address lists as software writes them (RFC 5322 §3.4, §4.4)", arguments: [
        ("To: undisclosed-recipients:;\n", []),
        ("To: a@example.com,,b@example.com,\n", ["a@example.com", "b@example.com"]),
        ("To: \"Joe, the boss\" <joe@example.com> (office), root (Cron Daemon)\n",
         ["joe@example.com", "root@raspberrypi.example"]),
        ("To: Ops <@relay.example,@r2.example:ops@example.com>\n", ["ops@example.com"]),
        ("To: john . doe @ example . com\n", ["john.doe@example.com"]),
        ("To: \"john doe\"@example.com\n", ["\"john doe\"@example.com"]),
        ("To: x@[192.0.2.1]\n", ["x@[192.0.2.1]"]),
        ("To: a@example.com\nCc: A@EXAMPLE.COM, a@Example.com\nBcc: a@example.com\n", ["a@example.com", "A@EXAMPLE.COM"]),
        ("to: a@example.com\ncC: b@example.com\nBCC: c@example.com\n", ["a@example.com", "b@example.com", "c@example.com"]),
        ("To: g1: a@example.com;, g2: ;, b@example.com\n", ["a@example.com", "b@example.com"]),
        ("To: a@example.com\nTo: b@example.com\n", ["a@example.com", "b@example.com"]),
        ("Bcc:\n", []),
    ] as [(String, [String])])
    func addressLists(input: String, expected: [String]) throws {
        let (_, f) = submit(input + "\nb\n", submissionOptions(extract: true))
        #expect(addresses(f) == expected)
        #expect(f.problems.isEmpty)
    }

    @Test("An address that cannot be used is a problem naming the field and the text, not dropped", arguments: [
        ("To: Joe Bloggs\n", "To: \"Joe Bloggs\" is not an address"),
        ("Cc: a@example.com, <>\n", "Cc: \"<>\" is not an address"),
        ("Bcc: \"unclosed@example.com\n", "Bcc: \"\"unclosed@example.com\" is not an address"),
        ("To: (comment\n", "To: \"(comment\" is not an address"),
        ("To: a@b@c\n", "To: \"a@b@c\" is not an address"),
        ("To: a@-bad-.example\n", "To: the address \"a@-bad-.example\" cannot be used (RFC 5321 §4.1.2 local@domain)"),
        ("To: jürgen@example.com\n", "To: the address \"jürgen@example.com\" cannot be used (RFC 5321 §4.1.2 local@domain)"),
        ("Resent-To: <a@b> junk\n", "Resent-To: \"<a@b> junk\" is not an address"),
    ])
    func badAddress(input: String, problem: String) throws {
        let (_, f) = submit(input + "\nb\n", submissionOptions(extract: true))
        #expect(f.problems.map(\.text) == [problem])
    }

    @Test("A header of colons and at-signs is read in linear time (no rescan per colon)")
    func pathologicalList() throws {
        let input = "To: " + String(repeating: "a@b:", count: 8000) + "\nCc: " + String(repeating: "(", count: 8000)
            + "\nBcc: " + String(repeating: "x:", count: 8000) + "\n\nb\n"
        let (out, f) = submit(input, submissionOptions(extract: true))
        #expect(f.problems.count == 2)
        #expect(f.recipients.isEmpty && !f.headerTruncated)
        let ending = out.hasSuffix(addedFields + "\r\nb\r\n")
        #expect(ending)
    }

    @Test("Problems are bounded: the last one says more were left out")
    func manyProblems() throws {
        let input = "To: " + (0..<50).map { "bad\($0) word" }.joined(separator: ", ") + "\n\nb\n"
        let (_, f) = submit(input, submissionOptions(extract: true))
        #expect(f.problems.count == SubmissionFilter.maxProblems)
        #expect(f.problems.last?.text.contains("left out") == true)
    }

    @Test("More than maxRecipients recipients in the header is a problem")
    func tooManyRecipients() throws {
        let input = "To: " + (0...SubmissionFilter.maxRecipients).map { String($0) }.joined(separator: ",") + "\n\nb\n"
        let (_, f) = submit(input, submissionOptions(extract: true))
        #expect(f.recipients.count == SubmissionFilter.maxRecipients)
        #expect(f.problems.map(\.text) == ["more than 10000 recipients in the header"])
    }

    @Test("A header section over the limit: the complete lines that fit are the header, the rest is body")
    func overLimit() throws {
        let field = "X-Filler: " + String(repeating: "f", count: 88) + "\n"       // 99 octets, 100 as CRLF
        let count = SubmissionFilter.maxHeaderSection / 100 + 10
        let input = "To: a@example.com\n" + String(repeating: field, count: count) + "Bcc: late@example.com\n\nbody\n"
        for extract in [false, true] {
            let (out, f) = submit(input, submissionOptions(extract: extract), chunk: 777, outputSize: 333)
            #expect(f.headerTruncated)
            let parts = out.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
            try #require(parts.count == 2)
            let header = parts[0] + "\r\n"
            #expect(header.utf8.count <= SubmissionFilter.maxHeaderSection + addedFields.utf8.count)
            #expect(header.hasSuffix(addedFields))
            #expect(header.hasPrefix("To: a@example.com\r\nX-Filler: "))
            // Every octet of the input is there, the rest as body.
            #expect(parts[1].hasSuffix("Bcc: late@example.com\r\n\r\nbody\r\n"))
            #expect(out.utf8.count == input.utf8.count + count + 4 + addedFields.utf8.count + 2)
            if extract {
                #expect(addresses(f) == ["a@example.com"])
                #expect(f.problems.count == 1)
                #expect(f.problems.first?.text.contains("longer than 102400") == true)
            } else {
                #expect(f.problems.isEmpty)
            }
        }
    }

    @Test("One line longer than the header limit: no header, the line is body, dots and all")
    func oneLongLine() throws {
        let long = "." + String(repeating: "x", count: SubmissionFilter.maxHeaderSection + 5000)
        let (out, f) = submit(long + "\n.\n", submissionOptions(stuffed: true), chunk: 4096, outputSize: 1000)
        #expect(f.headerTruncated && f.inputEnded)
        #expect(out == addedFields + "\r\n." + long + "\r\n")
    }

    @Test("A header over the limit with Bcc: removed: the partial line stays mid-line, so a dot in it is text (fuzz find)")
    func overLimitAfterBccRemoval() throws {
        // The limit falls just before the ".": the line "0123456789." is cut
        // there, and the body goes on in the middle of that line.
        let input = "To: a@example.com\nBcc: b@example.com\n0123456789.\n"
        let limit = 19 + 20 + 10    // the two fields held with CRLF, then "0123456789"
        let (out, f) = submitAll(Array(input.utf8), submissionOptions(extract: true, stuffed: true), headerLimit: limit)
        #expect(f.headerTruncated && !f.inputEnded)
        #expect(String(decoding: out, as: UTF8.self) == "To: a@example.com\r\n" + addedFields + "\r\n0123456789.\r\n")
    }

    @Test("A line of exactly the limit fits; the next octet starts the body")
    func exactLimit() throws {
        let line = "X: " + String(repeating: "y", count: SubmissionFilter.maxHeaderSection - 3)
        let (out, f) = submit(line + "\nZ: 1\n\nb\n")
        #expect(f.headerTruncated)
        #expect(out == line + "\r\n" + addedFields + "\r\nZ: 1\r\n\r\nb\r\n")
    }

    // MARK: octets

    @Test("8-bit octets and NUL pass through unchanged")
    func eightBit() throws {
        let input: [UInt8] = Array("Subject: Grüße\n\n".utf8) + [0xC3, 0xA4, 0x00, 0xFF, 0x0A]
        let (out, _) = submitAll(input, submissionOptions())
        #expect(out == Array("Subject: Grüße\r\n".utf8) + Array(addedFields.utf8) + [13, 10, 0xC3, 0xA4, 0x00, 0xFF, 13, 10])
    }

    @Test("Cut points and output room never change the output", arguments: [1, 2, 3, 5, 7, 64])
    func cutPoints(outputSize: Int) throws {
        let inputs = [
            "From x\nTo: a@example.com, root\r\nBcc: b@example.com\n  (c)\r\r\nSubject: s\n\n.x\n..\r\n.\rtail\n",
            "Subject: a\n.\n",
            "x\r\n.\r\n",
            ".",
            "\r",
            "body\r",
        ]
        for input in inputs {
            for options in [submissionOptions(extract: true, stuffed: true), submissionOptions(dotEnds: false)] {
                // The real header limit, and one that the inputs overflow.
                for limit in [SubmissionFilter.maxHeaderSection, 20] {
                    let whole = submitAll(Array(input.utf8), options, headerLimit: limit)
                    for chunk in 1...8 {
                        let cut = submitAll(Array(input.utf8), options, chunk: chunk, outputSize: outputSize,
                                            headerLimit: limit)
                        #expect(cut.text == whole.text, "chunk \(chunk), output \(outputSize), limit \(limit): \(input)")
                        #expect(cut.filter.recipients == whole.filter.recipients)
                        #expect(cut.filter.problems == whole.filter.problems)
                    }
                }
            }
        }
    }

    @Test("A zero-octet output buffer is no trap and no progress once output is due")
    func zeroRoom() throws {
        var f = SubmissionFilter(submissionOptions())
        let text = Array("x\n".utf8)
        var empty: [UInt8] = []
        let s = text.withUnsafeBytes { i in empty.withUnsafeMutableBytes { f.filter(i, into: $0) } }
        #expect(f.headerDone && s.produced == 0)
        let e = empty.withUnsafeMutableBytes { f.finish(into: $0) }
        #expect(!e.done && e.produced == 0)
    }

    // MARK: helpers for the caller

    @Test("The From: value for a full name: atoms as they are, anything else quoted (RFC 5322 §3.2.4, §3.2.5)",
          arguments: [
        ("CronDaemon", "CronDaemon <root@pi.example>"),
        ("Cron Daemon", "Cron Daemon <root@pi.example>"),
        ("John Q. Public", "\"John Q. Public\" <root@pi.example>"),
        ("Say \"hi\" \\o/", "\"Say \\\"hi\\\" \\\\o/\" <root@pi.example>"),
        ("Jürgen Müller", "Jürgen Müller <root@pi.example>"),
        ("", "root@pi.example"),
        ("  \u{1} ", "root@pi.example"),
        ("a\r\nBcc: x", "\"a  Bcc: x\" <root@pi.example>"),
        ("two  spaces", "\"two  spaces\" <root@pi.example>"),
    ])
    func fromValue(name: String, expected: String) throws {
        let v = SubmissionFilter.fromValue(fullName: Array(name.utf8), address: Array("root@pi.example".utf8))
        #expect(String(decoding: v, as: UTF8.self) == expected)
        // It makes a From: field that reads back as one mailbox with that address.
        let back = try #require(HeaderMailbox.parse(v, complete: true))
        #expect(Array(v[back.address]) == Array("root@pi.example".utf8))
    }

    @Test("The full name is cut at maxFullName octets, not inside a UTF-8 sequence")
    func longFullName() throws {
        let name = Array(String(repeating: "ü", count: 200).utf8)
        let v = SubmissionFilter.fromValue(fullName: name, address: Array("a@b".utf8))
        #expect(v.count <= SubmissionFilter.maxFullName + 2 + " <a@b>".utf8.count)
        #expect(String(validating: v, as: UTF8.self) != nil)
    }

    @Test("Command-line recipients are read as address lists and qualified, as Postfix does", arguments: [
        ("root", ["root@raspberrypi.example"]),
        ("a@example.com, Joe <b@example.com>", ["a@example.com", "b@example.com"]),
        ("postmaster", ["postmaster@raspberrypi.example"]),
    ])
    func commandLine(argument: String, expected: [String]) throws {
        let r = SubmissionFilter.recipients(inArgument: argument, localDomain: Array("raspberrypi.example".utf8))
        #expect((try? r.get())?.map(\.text) == expected)
    }

    @Test("A command-line recipient without a usable address is a problem naming it", arguments: [
        "", "Joe Bloggs", ",", "a@b@c", "<>",
    ])
    func commandLineBad(argument: String) throws {
        let r = SubmissionFilter.recipients(inArgument: argument, localDomain: Array("raspberrypi.example".utf8))
        guard case .failure(let p) = r else {
            Issue.record("accepted \(argument)")
            return
        }
        #expect(p.text.contains("recipient"))
    }
}
