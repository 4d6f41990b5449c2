import Testing
@testable import PosternCore

@Suite("Watchdog pings only while healthy (sd_watchdog_enabled(3): half the interval)")
struct WatchdogPolicyTests {
    let second: Int64 = 1_000_000_000

    @Test("a healthy loop pings at half the interval, not more often")
    func cadence() {
        var w = WatchdogPolicy(interval: 10 * second, now: 0)
        #expect(w.check(now: 4 * second, iterationWork: 1000, spoolFailure: nil) == .notYet)
        #expect(w.check(now: 5 * second, iterationWork: 1000, spoolFailure: nil) == .ping)
        #expect(w.check(now: 6 * second, iterationWork: 1000, spoolFailure: nil) == .notYet)
        #expect(w.nextPing == 10 * second)
        #expect(w.check(now: 10 * second, iterationWork: 1000, spoolFailure: nil) == .ping)
    }

    @Test("an iteration that worked for a whole interval withholds the ping")
    func stalledIteration() {
        var w = WatchdogPolicy(interval: 10 * second, now: 0)
        guard case .withhold(let why) = w.check(now: 11 * second, iterationWork: 10 * second, spoolFailure: nil) else {
            Issue.record("pinged after a stall")
            return
        }
        #expect(why.contains("stalled"))
        // The next healthy iteration pings again.
        #expect(w.check(now: 11 * second + 1, iterationWork: 1000, spoolFailure: nil) == .ping)
    }

    @Test("a failing spool withholds pings, then triggers a restart after a whole interval, once")
    func failingSpool() {
        var w = WatchdogPolicy(interval: 10 * second, now: 0)
        #expect(w.check(now: 5 * second, iterationWork: 1, spoolFailure: "EIO") == .withhold("the spool is failing: EIO"))
        #expect(w.check(now: 14 * second, iterationWork: 1, spoolFailure: "EIO") == .withhold("the spool is failing: EIO"))
        #expect(w.check(now: 15 * second, iterationWork: 1, spoolFailure: "EIO") == .trigger("the spool is failing: EIO"))
        #expect(w.check(now: 16 * second, iterationWork: 1, spoolFailure: "EIO") != .trigger("the spool is failing: EIO"))
        // Healthy again: pings resume.
        #expect(w.check(now: 17 * second, iterationWork: 1, spoolFailure: nil) == .ping)
    }
}

@Suite("Journal entries (systemd.journal-fields(7))")
struct JournalFieldsTests {
    @Test("an event carries MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, its MESSAGE_ID and POSTERN_* fields")
    func event() {
        let r = LogRecord(.warning, "deferred; will retry", event: .deferred,
                          [("queue_id", "0006b0d1f4800000"), ("rcpt", "<a@example.com>"), ("reply", "451 4.3.0 busy")])
        let f = r.journalFields(identifier: "postern")
        #expect(f.contains("MESSAGE=deferred; will retry (queue_id=0006b0d1f4800000 rcpt=<a@example.com> reply=\"451 4.3.0 busy\")"))
        #expect(f.contains("PRIORITY=4"))
        #expect(f.contains("SYSLOG_IDENTIFIER=postern"))
        #expect(f.contains("MESSAGE_ID=" + MessageIDs.deferred))
        #expect(f.contains("POSTERN_EVENT=deferred"))
        #expect(f.contains("POSTERN_QUEUE_ID=0006b0d1f4800000"))
        #expect(f.contains("POSTERN_REPLY=451 4.3.0 busy"))
    }

    @Test("field names are upper case with underscores; every event kind has its own MESSAGE_ID")
    func names() {
        #expect(LogRecord.fieldName("max-connections.x1") == "MAX_CONNECTIONS_X1")
        let kinds: [EventKind] = [.received, .delivered, .deferred, .failed, .expired, .rejected]
        #expect(Set(kinds.map { $0.messageID }).count == kinds.count)
        for id in kinds.map({ $0.messageID }) { #expect(id.utf8.count == 32) }
        #expect(LogRecord(.info, "x").journalFields(identifier: "postern").filter { $0.hasPrefix("MESSAGE_ID=") }.isEmpty)
    }
}
