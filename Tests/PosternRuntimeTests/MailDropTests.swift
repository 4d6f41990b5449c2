import Testing
@testable import PosternRuntime

@Suite("The drop directory's unfinished files (issue 9 item 2)")
struct MailDropTests {
    @Test("A t. file is abandoned after a day; a writer-chosen time at either end of Int64 cannot overflow")
    func abandoned() {
        let now: Int64 = 1_000_000
        let cases: [(mtime: Int64, abandoned: Bool)] = [
            (Int64.min, true), (0, true), (now - 86_401, true), (now - 86_400, false), (now, false), (Int64.max, false),
        ]
        for c in cases {
            #expect(MailDrop.isAbandoned(mtime: c.mtime, now: now) == c.abandoned, "mtime \(c.mtime)")
            #expect(!MailDrop.isAbandoned(mtime: c.mtime, now: Int64.min), "mtime \(c.mtime)")
        }
    }
}
