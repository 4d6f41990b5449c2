import Testing
@testable import PosternCore

@Suite("Receiver CHUNKING: BDAT (RFC 3030)")
struct ReceiverChunkingTests {
    /// EHLO, MAIL and one RCPT, accepted.
    static func ready(_ settings: ReceiverSettings = ReceiverSession.settings()) -> ReceiverSession {
        var s = ReceiverSession(settings)
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@b.example>")
        s.send("RCPT TO:<c@d.example>")
        return s
    }

    @Test("RFC 3030 §2: EHLO offers CHUNKING (and not BINARYMIME)")
    func offered() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        let keywords = (s.reply?.lines ?? []).dropFirst()
        #expect(keywords.contains("CHUNKING"))
        #expect(!keywords.contains("BINARYMIME"))
    }

    @Test("RFC 3030 §2: chunks are answered 250 with their size, LAST is committed, then 250 queued")
    func chunks() {
        var s = Self.ready()
        s.send("BDAT 10")
        guard case .startData(let env)? = s.actions.first else {
            Issue.record("no startData: \(s.actions)")
            return
        }
        #expect(env.recipients.map { $0.description } == ["<c@d.example>"])
        #expect(s.replies.isEmpty, "no reply before the chunk is read")
        #expect(s.machine.chunkRemaining == 10 && !s.machine.chunkIsLast)
        s.event(s.machine.receiveText(count: 4) + s.machine.receiveChunk(count: 4))
        #expect(s.replies.isEmpty && s.machine.chunkRemaining == 6)
        s.event(s.machine.receiveText(count: 6) + s.machine.receiveChunk(count: 6))
        s.expect(250, "2.0.0")
        #expect(s.reply?.lines == ["Ok: 10 octets received"])
        #expect(s.state == .gotChunks)
        s.send("BDAT 3 LAST")
        #expect(s.actions.isEmpty && s.machine.chunkIsLast)
        s.event(s.machine.receiveText(count: 3) + s.machine.receiveChunk(count: 3))
        #expect(s.actions == [.commitMessage])
        s.event(s.machine.committed(queueID: "q1"))
        s.expect(250, "2.0.0")
        #expect(s.state == .greeted)
    }

    @Test("RFC 3030 §2: BDAT 0 LAST ends the message at once; the size word is digits only; LAST in any case")
    func zeroLast() {
        var s = Self.ready()
        s.send("BDAT 5")
        s.event(s.machine.receiveText(count: 5) + s.machine.receiveChunk(count: 5))
        s.send("bdat 0 last")
        #expect(s.actions == [.commitMessage])
    }

    @Test("RFC 3030 §2: a refused BDAT's bytes are still read, then the refusal is sent; they never become commands")
    func refusedChunkIsDiscarded() {
        var s = ReceiverSession()
        s.send("EHLO client.test")
        s.send("MAIL FROM:<a@b.example>")
        s.send("BDAT 20 LAST")
        #expect(s.replies.isEmpty && s.machine.chunkRemaining == 20 && !s.machine.isStoring)
        s.event(s.machine.receiveChunk(count: 20))
        s.expect(503, "5.5.1")
        #expect(s.state == .greeted, "the transaction failed")
        var before = ReceiverSession()
        before.send("BDAT 3")
        #expect(before.machine.chunkRemaining == 3)
        before.event(before.machine.receiveChunk(count: 3))
        before.expect(503, "5.5.1")
        #expect(before.state == .connected)
    }

    @Test("RFC 3030 §2 and RFC 1870: a chunk larger than the message may be is read and refused 552 5.3.4")
    func tooBig() {
        var s = Self.ready(ReceiverSession.settings(maxSize: 100))
        s.send("BDAT 60")
        s.event(s.machine.receiveText(count: 60) + s.machine.receiveChunk(count: 60))
        s.expect(250, "2.0.0")
        s.send("BDAT 50 LAST")
        #expect(s.actions == [.abortMessage])
        s.event(s.machine.receiveChunk(count: 50))
        s.expect(552, "5.3.4")
        // A chunk size past Int.max is just too big, on a 32-bit board too.
        var huge = Self.ready(ReceiverSession.settings(maxSize: 100))
        huge.send("BDAT 99999999999999999999999999")
        #expect(huge.machine.chunkRemaining == Int.max)
    }

    @Test("Text that grows past the limit while a chunk is read (bare LFs made CRLF) is thrown away, then 552")
    func growsPastLimit() {
        var s = Self.ready(ReceiverSession.settings(maxSize: 100))
        s.send("BDAT 80 LAST")
        s.event(s.machine.receiveText(count: 90))
        s.event(s.machine.receiveText(count: 20))
        #expect(s.actions == [.abortMessage])
        s.event(s.machine.receiveChunk(count: 80))
        s.expect(552, "5.3.4")
        #expect(s.state == .greeted)
    }

    @Test("A BDAT without a readable size: 501, then 421 and close (the chunk's end cannot be found)",
          arguments: ["BDAT", "BDAT x", "BDAT -1", "BDAT 10 FIRST", "BDAT 10 LAST more", "BDAT +5"])
    func syntax(line: String) {
        var s = Self.ready()
        s.send(line)
        #expect(s.replies.map { $0.code } == [501, 421])
        #expect(s.actions.last == .close)
        #expect(s.machine.isClosed)
    }

    @Test("RFC 3030 §2: DATA cannot follow BDAT in a transaction; RSET and EHLO throw the chunked message away")
    func mixing() {
        var s = Self.ready()
        s.send("BDAT 2")
        s.event(s.machine.receiveText(count: 2) + s.machine.receiveChunk(count: 2))
        s.send("DATA")
        s.expect(503, "5.5.1")
        s.send("MAIL FROM:<x@y.example>")
        s.expect(503, "5.5.1")
        s.send("RSET")
        #expect(s.actions.first == .abortMessage)
        #expect(s.state == .greeted)
        var e = Self.ready()
        e.send("BDAT 2")
        e.event(e.machine.receiveText(count: 2) + e.machine.receiveChunk(count: 2))
        e.send("EHLO again.test")
        #expect(e.actions.first == .abortMessage)
        #expect(e.machine.disconnected() == [])
    }

    @Test("A client that leaves between chunks: the open message is thrown away")
    func disconnectBetweenChunks() {
        var s = Self.ready()
        s.send("BDAT 2")
        s.event(s.machine.receiveText(count: 2) + s.machine.receiveChunk(count: 2))
        #expect(s.machine.disconnected() == [.abortMessage])
    }
}

@Suite("ChunkDecoder: BDAT text to the spool's form (RFC 3030 §3, RFC 5321 §2.3.8)")
struct ChunkDecoderTests {
    static func decode(_ chunks: [String], finish: Bool = true) -> String {
        var d = ChunkDecoder()
        var out: [UInt8] = []
        var room = [UInt8](repeating: 0, count: 7)
        for c in chunks {
            var bytes = Array(c.utf8)[...]
            while !bytes.isEmpty {
                let step = bytes.withUnsafeBytes { i in room.withUnsafeMutableBytes { d.decode(i, into: $0) } }
                out += room[0..<step.produced]
                bytes = bytes.dropFirst(step.consumed)
            }
        }
        if finish {
            let n = room.withUnsafeMutableBytes { d.finish(into: $0) }
            out += room[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("CRLF text passes unchanged, dots included (no dot-stuffing in BDAT)")
    func plain() {
        #expect(Self.decode(["a\r\n.\r\n..b\r\n"]) == "a\r\n.\r\n..b\r\n")
    }

    @Test("Bare LF and bare CR become CRLF; CR and LF split across chunks are one line end")
    func lineEnds() {
        #expect(Self.decode(["a\nb\rc\r\n"]) == "a\r\nb\r\nc\r\n")
        #expect(Self.decode(["a\r", "\nb\r\n"]) == "a\r\nb\r\n")
        #expect(Self.decode(["a\r", "b\r\n"]) == "a\r\nb\r\n")
        #expect(Self.decode(["\r\r\n\n"]) == "\r\n\r\n\r\n")
    }

    @Test("finish ends an unfinished last line or a pending CR, and adds nothing after a line end")
    func finish() {
        #expect(Self.decode(["no end"]) == "no end\r\n")
        #expect(Self.decode(["cr at end\r"]) == "cr at end\r\n")
        #expect(Self.decode(["done\r\n"]) == "done\r\n")
        #expect(Self.decode([]) == "")
    }
}
