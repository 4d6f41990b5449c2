import Testing
@testable import PosternCore

@Suite("Log lines: key=value, one line per event")
struct LogRecordTests {
    @Test("Level, event, fields in order, then msg")
    func line() {
        let r = LogRecord(.info, "message received", event: .received,
                          [("queue_id", "00000000000000a1"), ("from", "<a@example.org>"), ("size", "1234")])
        #expect(r.keyValueLine() == "level=info event=received queue_id=00000000000000a1 from=<a@example.org> size=1234 msg=\"message received\"")
    }

    @Test("No event, no fields")
    func minimal() {
        #expect(LogRecord(.debug, "tick").keyValueLine() == "level=debug msg=tick")
    }

    @Test("Values are quoted when they hold spaces, quotes, '=', backslashes or nothing", arguments: [
        ("plain", "plain"),
        ("", "\"\""),
        ("two words", "\"two words\""),
        ("a=b", "\"a=b\""),
        ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("550 5.7.1 denied", "\"550 5.7.1 denied\""),
        ("<a@b>", "<a@b>"),
        ("caf\u{e9}", "caf\u{e9}"),
    ])
    func quoting(value: String, expected: String) {
        #expect(LogRecord.quoted(value) == expected)
    }

    @Test("Control characters are replaced so a peer cannot forge a log line", arguments: [
        ("a\nb", "a?b"),
        ("a\r\nlevel=error msg=forged", "\"a??level=error msg=forged\""),
        ("tab\there", "tab?here"),
        ("nul\u{0}", "nul?"),
        ("del\u{7f}", "del?"),
        ("esc\u{1b}[31m", "esc?[31m"),
    ])
    func controlCharacters(value: String, expected: String) {
        #expect(LogRecord.quoted(value) == expected)
    }

    @Test("A whole line never holds a line break, whatever the fields and message")
    func oneLine() {
        let r = LogRecord(.warning, "bad\ncommand", event: .rejected, [("helo", "x\r\ny"), ("reply", "500 5.5.2\n")])
        let line = r.keyValueLine()
        #expect(!line.contains("\n") && !line.contains("\r"))
        #expect(line.hasPrefix("level=warning event=rejected "))
    }

    @Test("Journal fields: MESSAGE with the fields, PRIORITY, SYSLOG_IDENTIFIER, MESSAGE_ID, POSTERN_EVENT, one POSTERN_<NAME> each")
    func journal() {
        let r = LogRecord(.info, "message received", event: .received,
                          [("queue_id", "00000000000000a1"), ("reply", "250 2.0.0 Ok"), ("auth-user", "x\ny")])
        #expect(r.journalFields(identifier: "postern") == [
            "MESSAGE=message received (queue_id=00000000000000a1 reply=\"250 2.0.0 Ok\" auth-user=x?y)",
            "PRIORITY=6",
            "SYSLOG_IDENTIFIER=postern",
            "MESSAGE_ID=" + MessageIDs.received,
            "POSTERN_EVENT=received",
            "POSTERN_QUEUE_ID=00000000000000a1",
            "POSTERN_REPLY=250 2.0.0 Ok",
            "POSTERN_AUTH_USER=x\ny",
        ])
        #expect(LogRecord(.error, "stopped").journalFields(identifier: "p") == [
            "MESSAGE=stopped", "PRIORITY=3", "SYSLOG_IDENTIFIER=p",
        ])
    }

    @Test("Priorities are syslog's (RFC 5424 §6.2.1)")
    func priorities() {
        #expect(Priority.error.rawValue == 3)
        #expect(Priority.warning.rawValue == 4)
        #expect(Priority.notice.rawValue == 5)
        #expect(Priority.info.rawValue == 6)
        #expect(Priority.debug.rawValue == 7)
        #expect([Priority.error, .warning, .notice, .info, .debug].map { $0.name } == ["error", "warning", "notice", "info", "debug"])
    }

    @Test("Event names are DESIGN.md's POSTERN_EVENT values")
    func events() {
        let kinds: [EventKind] = [.received, .delivered, .deferred, .failed, .expired, .rejected]
        #expect(kinds.map { $0.name } == ["received", "delivered", "deferred", "failed", "expired", "rejected"])
    }
}
