import Testing
@testable import PosternCore

let rewriteSender = Mailbox.parse(Array("alerts@example.com".utf8)[...], allowNull: false)!

/// Rewrites `text` fed in pieces of `chunk` octets through an output buffer of
/// `outputSize` octets, then finishes: the text that goes on to DataEncoder.
func rewriteAll(_ text: [UInt8], chunk: Int = Int.max, outputSize: Int = 4096,
                qualifyDomain: String = "raspberrypi") -> [UInt8] {
    var r = FromRewriter(sender: rewriteSender, qualifyDomain: qualifyDomain)
    let reserved = r.reservedOctets
    var out: [UInt8] = []
    var output = [UInt8](repeating: 0, count: outputSize)
    var start = 0
    while start < text.count {
        let end = chunk >= text.count - start ? text.count : start + chunk
        var at = start
        while at < end {
            let step = text[at..<end].withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
            if step.consumed == 0 && step.produced == 0 {
                Issue.record("no progress with \(outputSize) octets of room")
                return out
            }
            #expect(step.produced <= outputSize)
            out += output[0..<step.produced]
            at += step.consumed
        }
        start = end
    }
    while true {
        let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
        out += output[0..<e.produced]
        if e.done { break }
        if e.produced == 0 {
            Issue.record("finish made no progress with \(outputSize) octets of room")
            return out
        }
    }
    #expect(r.reservedOctets == reserved, "the rewriter allocated after init")
    return out
}

func rewriteAll(_ text: String, chunk: Int = Int.max, outputSize: Int = 4096) -> String {
    String(decoding: rewriteAll(Array(text.utf8), chunk: chunk, outputSize: outputSize), as: UTF8.self)
}

@Suite("From: rewriting for smarthosts (RFC 5322 §3.6.2, §3.4)")
struct FromRewriterTests {
    @Test("Each From: form gives the new From: with the original display name, and Reply-To: the original",
          arguments: [
        // name-addr, unqualified (cron): the display is kept, the address qualified.
        ("From: Cron Daemon <root>\r\n",
         "From: Cron Daemon <alerts@example.com>\r\nReply-To: Cron Daemon <root@raspberrypi>\r\n"),
        // quoted-string display (RFC 5322 §3.2.4)
        ("From: \"Joe Bloggs\" <joe@example.net>\r\n",
         "From: \"Joe Bloggs\" <alerts@example.com>\r\nReply-To: \"Joe Bloggs\" <joe@example.net>\r\n"),
        // bare addr-spec: the address becomes the display name, as a quoted-string
        ("From: joe@example.net\r\n",
         "From: \"joe@example.net\" <alerts@example.com>\r\nReply-To: joe@example.net\r\n"),
        // addr (Comment), unqualified: the comment stays in Reply-To
        ("From: root (Cron Daemon)\r\n",
         "From: \"root@raspberrypi\" <alerts@example.com>\r\nReply-To: root@raspberrypi (Cron Daemon)\r\n"),
        // bare unqualified address
        ("From: root\r\n",
         "From: \"root@raspberrypi\" <alerts@example.com>\r\nReply-To: root@raspberrypi\r\n"),
        // angle-addr without display name
        ("From: <joe@example.net>\r\n",
         "From: \"joe@example.net\" <alerts@example.com>\r\nReply-To: <joe@example.net>\r\n"),
        // comments around and between the words of the display name
        ("From: (the boss) Joe (J.) Bloggs <joe@example.net> (office)\r\n",
         "From: Joe (J.) Bloggs <alerts@example.com>\r\nReply-To: (the boss) Joe (J.) Bloggs <joe@example.net> (office)\r\n"),
        // obs-phrase with a period (RFC 5322 §4.1)
        ("From: John Q. Public <jqp@example.org>\r\n",
         "From: John Q. Public <alerts@example.com>\r\nReply-To: John Q. Public <jqp@example.org>\r\n"),
        // obs-route (RFC 5322 §4.4): dropped from the display, kept in Reply-To as written
        ("From: Joe <@relay.example:joe@example.net>\r\n",
         "From: Joe <alerts@example.com>\r\nReply-To: Joe <@relay.example:joe@example.net>\r\n"),
        // an empty quoted display name is no display name
        ("From: \"\" <joe@example.net>\r\n",
         "From: \"joe@example.net\" <alerts@example.com>\r\nReply-To: \"\" <joe@example.net>\r\n"),
        // domain literal
        ("From: ops@[192.0.2.1]\r\n",
         "From: \"ops@[192.0.2.1]\" <alerts@example.com>\r\nReply-To: ops@[192.0.2.1]\r\n"),
    ])
    func forms(from: String, expected: String) {
        let text = "To: admin@example.com\r\n" + from + "Subject: disk\r\n\r\nbody\r\n"
        #expect(rewriteAll(text) == "To: admin@example.com\r\nSubject: disk\r\n" + expected + "\r\nbody\r\n")
    }

    @Test("An encoded-word display name is kept as it was, never put inside a quoted-string (RFC 2047 §5)")
    func encodedWord() {
        let text = "From: =?UTF-8?Q?J=C3=B6rg?= Meier <jm@example.de>\r\n\r\nx\r\n"
        #expect(rewriteAll(text) == "From: =?UTF-8?Q?J=C3=B6rg?= Meier <alerts@example.com>\r\n"
                + "Reply-To: =?UTF-8?Q?J=C3=B6rg?= Meier <jm@example.de>\r\n\r\nx\r\n")
    }

    @Test("An address holding \"=?\" gives no display name, so no encoded-word lands in a quoted-string (RFC 2047 §5)")
    func encodedWordLikeAddress() {
        let text = "From: =?utf-8?q?x?=@example.com\r\n\r\n"
        #expect(rewriteAll(text) == "From: <alerts@example.com>\r\nReply-To: =?utf-8?q?x?=@example.com\r\n\r\n")
    }

    @Test("A quoted local part is escaped in the display name (RFC 5322 §3.2.4 quoted-pair)")
    func escaping() {
        let text = #"From: "a\"b c\\d"@example.com"# + "\r\n\r\n"
        #expect(rewriteAll(text) == #"From: "\"a\\\"b c\\\\d\"@example.com" <alerts@example.com>"# + "\r\n"
                + #"Reply-To: "a\"b c\\d"@example.com"# + "\r\n\r\n")
    }

    @Test("A raw UTF-8 display name is kept verbatim (RFC 6532 §3.2), other 8-bit fields pass through")
    func eightBit() {
        let text = "Subject: Gr\u{fc}\u{df}e \u{ff}\r\nFrom: J\u{f6}rg <j@example.de>\r\n\r\n\u{e9}t\u{e9}\r\n"
        #expect(rewriteAll(text) == "Subject: Gr\u{fc}\u{df}e \u{ff}\r\nFrom: J\u{f6}rg <alerts@example.com>\r\n"
                + "Reply-To: J\u{f6}rg <j@example.de>\r\n\r\n\u{e9}t\u{e9}\r\n")
        let latin1: [UInt8] = Array("X-Raw: ".utf8) + [0xe9, 0x00, 0xff] + Array("\r\nFrom: a@b.example\r\n\r\n".utf8)
        let out = rewriteAll(latin1)
        #expect(Array(out.prefix(12)) == Array("X-Raw: ".utf8) + [0xe9, 0x00, 0xff, 13, 10])
    }

    @Test("A folded From: is unfolded to be read (RFC 5322 §2.2.3) and taken out with all its lines")
    func folded() {
        let text = "From: Joe\r\n\tBloggs\r\n <joe@example.net>\r\nSubject: s\r\n continued\r\n\r\nbody\r\n"
        #expect(rewriteAll(text) == "Subject: s\r\n continued\r\nFrom: Joe\tBloggs <alerts@example.com>\r\n"
                + "Reply-To: Joe\tBloggs <joe@example.net>\r\n\r\nbody\r\n")
    }

    @Test("Field names compare without case, with blanks before the colon (RFC 5322 §1.2.2, §4.5)")
    func fieldNameCase() {
        #expect(rewriteAll("FROM : a@b.example\r\nreply-TO\t: c@d.example\r\n\r\n")
                == "reply-TO\t: c@d.example\r\nFrom: \"a@b.example\" <alerts@example.com>\r\n\r\n")
        // Names that only begin like From or Reply-To are other fields.
        let others = "Fromage: x\r\nFrom-X: y\r\nReply-Toad: z\r\nX-From: w\r\n"
        #expect(rewriteAll(others + "\r\n") == others + "From: <alerts@example.com>\r\n\r\n")
    }

    @Test("An existing Reply-To:, before or after From:, is kept and no second one is added (RFC 5322 §3.6.2)",
          arguments: [
        "Reply-To: ops@example.org\r\nFrom: root\r\n",
        "From: root\r\nReply-To: ops@example.org\r\n",
    ])
    func existingReplyTo(header: String) {
        #expect(rewriteAll(header + "\r\nb\r\n")
                == "Reply-To: ops@example.org\r\nFrom: \"root@raspberrypi\" <alerts@example.com>\r\n\r\nb\r\n")
    }

    @Test("Without From: a From: with the new address is added, and no Reply-To:")
    func noFrom() {
        #expect(rewriteAll("Subject: s\r\n\r\nbody\r\n") == "Subject: s\r\nFrom: <alerts@example.com>\r\n\r\nbody\r\n")
    }

    @Test("A group or a list falls back to no display name; Reply-To: only when address-like (RFC 5322 §3.4)",
          arguments: [
        ("From: undisclosed-recipients:;\r\n", "From: <alerts@example.com>\r\n"),
        ("From: Team: a@x.example, b@y.example;\r\n",
         "From: <alerts@example.com>\r\nReply-To: Team: a@x.example, b@y.example;\r\n"),
        ("From: a@x.example, b@y.example\r\n",
         "From: <alerts@example.com>\r\nReply-To: a@x.example, b@y.example\r\n"),
        ("From: Joe Bloggs\r\n", "From: <alerts@example.com>\r\n"),
        ("From: <>\r\n", "From: <alerts@example.com>\r\n"),
        ("From:\r\n", "From: <alerts@example.com>\r\n"),
        ("From: \"unclosed <a@b.example>\r\n", "From: <alerts@example.com>\r\n"),
        ("From: Joe (unclosed <a@b.example>\r\n", "From: <alerts@example.com>\r\n"),
        ("From: Joe@home <joe@b.example>\r\n",
         "From: <alerts@example.com>\r\nReply-To: Joe@home <joe@b.example>\r\n"),
    ])
    func unparseable(from: String, expected: String) {
        #expect(rewriteAll(from + "\r\n") == expected + "\r\n")
    }

    @Test("Every From: is taken out; the first one is used (RFC 5322 §3.6: one From:)")
    func severalFrom() {
        let text = "From: first@a.example\r\nSubject: s\r\nfrom: second@b.example\r\n\r\n"
        #expect(rewriteAll(text) == "Subject: s\r\nFrom: \"first@a.example\" <alerts@example.com>\r\n"
                + "Reply-To: first@a.example\r\n\r\n")
    }

    @Test("The body is untouched: From: lines after the empty line stay (RFC 5322 §2.1)")
    func bodyUntouched() {
        let text = "Subject: s\r\n\r\nFrom: not@header.example\r\n\r\nReply-To: x\r\n"
        #expect(rewriteAll(text) == "Subject: s\r\nFrom: <alerts@example.com>\r\n\r\n"
                + "From: not@header.example\r\n\r\nReply-To: x\r\n")
    }

    @Test("Where the fields go when the header has no empty line, or nothing at all (RFC 5322 §2.1)",
          arguments: [
        ("Subject: s\r\nFrom: a@b.example\r\n",
         "Subject: s\r\nFrom: \"a@b.example\" <alerts@example.com>\r\nReply-To: a@b.example\r\n"),
        ("Subject: s", "Subject: s\r\nFrom: <alerts@example.com>\r\n"),
        ("From: a@b.example", "From: \"a@b.example\" <alerts@example.com>\r\nReply-To: a@b.example\r\n"),
        ("Subj", "Subj\r\nFrom: <alerts@example.com>\r\n"),
        ("Fro", "Fro\r\nFrom: <alerts@example.com>\r\n"),
        ("Subject: s\r\n\r", "Subject: s\r\nFrom: <alerts@example.com>\r\n\r"),
        ("", "From: <alerts@example.com>\r\n"),
        ("\r\n", "From: <alerts@example.com>\r\n\r\n"),
        ("\r\nbody only\r\n", "From: <alerts@example.com>\r\n\r\nbody only\r\n"),
    ])
    func headerEnd(text: String, expected: String) {
        #expect(rewriteAll(text) == expected)
    }

    @Test("Only CRLF ends a line: a bare CR or LF stays inside its field (RFC 5322 §2.1)")
    func bareLineEnds() {
        #expect(rewriteAll("Subject: a\nFrom: x\r\n\r\n") == "Subject: a\nFrom: x\r\nFrom: <alerts@example.com>\r\n\r\n")
        #expect(rewriteAll("\rFrom: x\r\n\r\n") == "\rFrom: x\r\nFrom: <alerts@example.com>\r\n\r\n")
        // A bare CR inside a From: value: no phrase, but address-like; the CR
        // becomes a space in Reply-To.
        #expect(rewriteAll("From: Joe\rX <j@a.example>\r\n\r\n")
                == "From: <alerts@example.com>\r\nReply-To: Joe X <j@a.example>\r\n\r\n")
        #expect(rewriteAll("From: (a\rb) j@a.example\r\n\r\n")
                == "From: \"j@a.example\" <alerts@example.com>\r\nReply-To: (a b) j@a.example\r\n\r\n")
    }

    @Test("A From: value past 4 KiB is taken out whole; its first part gives the mailbox")
    func longFrom() {
        let comment = String(repeating: "a", count: 6000)
        let text = "From: Joe <joe@example.net> (" + comment + ")\r\nSubject: s\r\n\r\nbody\r\n"
        #expect(rewriteAll(text) == "Subject: s\r\nFrom: Joe <alerts@example.com>\r\nReply-To: Joe <joe@example.net>\r\n\r\nbody\r\n")
        // Cut inside the mailbox: nothing to keep.
        let cut = "From: \"" + String(repeating: "b", count: 5000) + "\" <joe@example.net>\r\n\r\n"
        #expect(rewriteAll(cut) == "From: <alerts@example.com>\r\n\r\n")
    }

    @Test("The new fields are folded: lines of 78 where blanks allow, never over 998 (RFC 5322 §2.1.1)")
    func folding() {
        let words = (0..<200).map { "word\($0)" }.joined(separator: " ")
        let out = rewriteAll("From: " + words + " <x@example.org>\r\n\r\n")
        let lines = out.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.allSatisfy { $0.utf8.count <= 78 })
        #expect(lines.first == "From: word0 word1 word2 word3 word4 word5 word6 word7 word8 word9 word10")
        // Unfolded, the fields are what they would be on one line.
        #expect(out.replacing("\r\n ", with: " ")
                == "From: " + words + " <alerts@example.com>\r\nReply-To: " + words + " <x@example.org>\r\n\r\n")

        let long = String(repeating: "x", count: 3000)
        let outLong = rewriteAll(Array(("From: " + long + " <x@example.org>\r\n\r\n").utf8))
        for line in outLong.split(separator: 10) { #expect(line.count <= 999) }
        #expect(outLong.count < FromRewriter.maxGenerated)
    }

    @Test("A host name that is no domain is not used to qualify (RFC 5321 §4.1.2)")
    func badQualifyDomain() {
        let out = rewriteAll(Array("From: root\r\n\r\n".utf8), qualifyDomain: "bad name\r\nBcc: x")
        #expect(String(decoding: out, as: UTF8.self)
                == "From: \"root@localhost\" <alerts@example.com>\r\nReply-To: root@localhost\r\n\r\n")
    }

    static let messages: [String] = [
        "From: Cron Daemon <root>\r\nTo: a@b.example\r\nSubject: cron\r\n\r\nline 1\r\n\r\nline 3\r\n",
        "Reply-To: r@x.example\r\nFROM\t:\r\n \"Joe\"\r\n\t<joe@x.example>\r\nX: y\r\n\r\nFrom: body\r\n",
        "Subject: s\r\n continued\r\nfrom: a@b.example\r\n",
        "\r\nFrom: body only\r\n",
        "Subject: no end",
        "X-Long: " + String(repeating: "z", count: 300) + "\r\nFrom: Team: a@x.example;\r\n\r\nb",
        "\rFrom: x\r\nFr\r\nReply-To\r\n\r\r\n\r\n",
    ]

    @Test("The output does not depend on where the input is split, nor on the output room (every split point)",
          arguments: messages)
    func splitInvariance(message: String) {
        let text = Array(message.utf8)
        let whole = rewriteAll(text)
        for outputSize in [1, 2, 7] {
            #expect(rewriteAll(text, chunk: 1, outputSize: outputSize) == whole)
        }
        for split in 0...text.count {
            for outputSize in [1, 5, 4096] {
                var r = FromRewriter(sender: rewriteSender, qualifyDomain: "raspberrypi")
                var out: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: outputSize)
                for piece in [text[..<split], text[split...]] {
                    var at = piece.startIndex
                    while at < piece.endIndex {
                        let step = piece[at...].withUnsafeBytes { i in buffer.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
                        out += buffer[0..<step.produced]
                        at += step.consumed
                        #expect(step.consumed + step.produced > 0)
                        if step.consumed + step.produced == 0 { return }
                    }
                }
                while true {
                    let e = buffer.withUnsafeMutableBytes { r.finish(into: $0) }
                    out += buffer[0..<e.produced]
                    if e.done { break }
                }
                #expect(out == whole, "split at \(split), \(outputSize) octets of room")
            }
        }
    }

    @Test("reset() makes the rewriter ready for the next message, keeping its memory (DESIGN.md principle 2)")
    func reset() {
        var r = FromRewriter(sender: rewriteSender, qualifyDomain: "raspberrypi")
        let reserved = r.reservedOctets
        var buffer = [UInt8](repeating: 0, count: 256)
        let first = Array("From: a@b.example\r\nReply-To: c@d.example\r\n".utf8)
        _ = first.withUnsafeBytes { i in buffer.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
        r.reset()
        #expect(r.reservedOctets == reserved)
        let second = Array("Subject: s\r\n\r\n".utf8)
        let step = second.withUnsafeBytes { i in buffer.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
        #expect(step.consumed == second.count)
        #expect(String(decoding: buffer[0..<step.produced], as: UTF8.self) == "Subject: s\r\nFrom: <alerts@example.com>\r\n\r\n")
    }

    @Test("A 20 MB body streams through a 512-octet output buffer in fixed memory (RFC 5322 §2.1: the body is not looked at)")
    func largeBody() {
        var r = FromRewriter(sender: rewriteSender, qualifyDomain: "raspberrypi")
        let reserved = r.reservedOctets
        let header = Array("From: Cron Daemon <root>\r\nSubject: big\r\n\r\n".utf8)
        let expectedHeader = Array(("Subject: big\r\nFrom: Cron Daemon <alerts@example.com>\r\n"
                                    + "Reply-To: Cron Daemon <root@raspberrypi>\r\n\r\n").utf8)
        // 64 KiB of body lines, From: lines among them, fed 320 times: 20 MiB.
        var chunk: [UInt8] = []
        while chunk.count < 65536 { chunk += Array("From: a line of the body, not a header field 0123456789\r\n".utf8) }
        chunk = Array(chunk.prefix(65536))
        let repeats = 320
        var output = [UInt8](repeating: 0, count: 512)
        var produced: [UInt8] = []
        var bodyOut = 0
        var bodySum: UInt64 = 0
        func feed(_ piece: [UInt8]) {
            var at = 0
            while at < piece.count {
                let step = piece[at...].withUnsafeBytes { i in output.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
                at += step.consumed
                output.withUnsafeBytes { o in
                    for k in 0..<step.produced {
                        if produced.count < expectedHeader.count { produced.append(o[k]) } else {
                            bodySum = bodySum &+ UInt64(o[k]) &* UInt64(bodyOut % 251 + 1)
                            bodyOut += 1
                        }
                    }
                }
                let held = r.heldOctets
                #expect(held.name <= FromRewriter.maxFieldName && held.from <= FromRewriter.maxFromValue
                        && held.generated <= FromRewriter.maxGenerated)
            }
        }
        feed(header)
        for _ in 0..<repeats { feed(chunk) }
        let e = output.withUnsafeMutableBytes { r.finish(into: $0) }
        #expect(e.done && e.produced == 0)
        #expect(produced == expectedHeader)
        #expect(bodyOut == repeats * chunk.count)
        var expectedSum: UInt64 = 0
        var n = 0
        for _ in 0..<repeats {
            for b in chunk {
                expectedSum = expectedSum &+ UInt64(b) &* UInt64(n % 251 + 1)
                n += 1
            }
        }
        #expect(bodySum == expectedSum)
        #expect(r.reservedOctets == reserved)
    }

    @Test("The fixed state stays within its bounds and progress needs one octet of room")
    func bounds() {
        #expect(FromRewriter.maxFieldName + FromRewriter.maxFromValue + FromRewriter.maxGenerated == 14_400)
        var r = FromRewriter(sender: rewriteSender, qualifyDomain: "raspberrypi")
        var one = [UInt8](repeating: 0, count: 1)
        let text = Array("Subject: x\r\n\r\nbody".utf8)
        var at = 0
        var out: [UInt8] = []
        while at < text.count {
            let step = text[at...].withUnsafeBytes { i in one.withUnsafeMutableBytes { r.rewrite(i, into: $0) } }
            #expect(step.consumed + step.produced > 0)
            at += step.consumed
            out += one[0..<step.produced]
        }
        while true {
            let e = one.withUnsafeMutableBytes { r.finish(into: $0) }
            out += one[0..<e.produced]
            if e.done { break }
            #expect(e.produced == 1)
        }
        #expect(String(decoding: out, as: UTF8.self) == "Subject: x\r\nFrom: <alerts@example.com>\r\n\r\nbody")
    }
}
