import Testing
@testable import PosternCore

@Suite("Queue listing for postern queue (text and RFC 8259 JSON)")
struct QueueReportTests {
    let entry = QueueEntryInfo(
        id: "0006b0d1f4800000", arrival: 1_000_000, size: 372, from: "alert@board.local",
        recipients: [("ops@example.com", .pending), ("b@example.com", .delivered), ("c@example.com", .failed)],
        attempts: 3, nextTry: 125, lastReply: "451 4.3.0 \"busy\"\tnow")

    @Test("ages read like mailq's: seconds, minutes, hours and minutes, days and hours")
    func ages() {
        #expect(QueueReport.age(0) == "0s")
        #expect(QueueReport.age(59) == "59s")
        #expect(QueueReport.age(60) == "1m")
        #expect(QueueReport.age(3599) == "59m")
        #expect(QueueReport.age(3600 + 5 * 60) == "1h05m")
        #expect(QueueReport.age(2 * 86400 + 3 * 3600) == "2d03h")
        #expect(QueueReport.age(-10) == "0s", "a clock that went backwards shows no negative age")
    }

    @Test("the text form shows every recipient with its state and the last reply")
    func text() {
        let t = QueueReport.text(entry, now: 1_000_000 + 7200)
        #expect(t.hasPrefix("0006b0d1f4800000  2h00m      372  3      in 2m     <alert@board.local>\n"))
        #expect(t.contains("<ops@example.com> pending\n"))
        #expect(t.contains("<b@example.com> delivered\n"))
        #expect(t.contains("<c@example.com> failed\n"))
        #expect(t.contains("last reply: 451 4.3.0"))
        var sending = entry
        sending.nextTry = nil
        #expect(QueueReport.text(sending, now: 1_000_000).contains("sending"))
        #expect(QueueReport.textFooter(count: 0, bytes: 0) == "Mail queue is empty\n")
        #expect(QueueReport.textFooter(count: 2, bytes: 10) == "-- 2 messages, 10 bytes of text\n")
    }

    @Test("JSON strings escape quotes, backslashes and control characters (RFC 8259 §7)")
    func jsonQuote() {
        #expect(QueueReport.quote("a\"b\\c") == "\"a\\\"b\\\\c\"")
        #expect(QueueReport.quote("t\tn\nr\r") == "\"t\\tn\\nr\\r\"")
        #expect(QueueReport.quote("\u{1}") == "\"\\u0001\"")
        #expect(QueueReport.quote("café") == "\"café\"")
    }

    @Test("the JSON form is one document: header, comma-separated entries, footer")
    func json() {
        let doc = QueueReport.jsonHeader() + QueueReport.json(entry, now: 1_000_060, first: true)
            + QueueReport.json(entry, now: 1_000_060, first: false) + QueueReport.jsonFooter(count: 2, bytes: 744)
        #expect(doc.hasPrefix("{\"messages\":[\n{\"id\":\"0006b0d1f4800000\",\"arrival\":1000000,\"age_seconds\":60,"))
        #expect(doc.contains("\"recipients\":[{\"address\":\"ops@example.com\",\"state\":\"pending\"},"))
        #expect(doc.contains("\"next_try_seconds\":125,\"sending\":false,\"last_reply\":\"451 4.3.0 \\\"busy\\\"\\tnow\"}"))
        #expect(doc.contains("},\n{\"id\""))
        #expect(doc.hasSuffix("\n],\"count\":2,\"text_bytes\":744}\n"))
    }
}
