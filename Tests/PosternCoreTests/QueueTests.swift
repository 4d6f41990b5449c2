import Testing
@testable import PosternCore

func queued(_ id: UInt64, segments: ClosedRange<UInt64> = 1...1, recipients: Int = 1, arrival: Int64 = 0) -> QueuedMessage {
    QueuedMessage(id: id, arrival: arrival, size: 100, firstSegment: segments.lowerBound, firstOffset: 16,
                  lastSegment: segments.upperBound, recipientStates: [UInt8](repeating: 0, count: recipients))!
}

@Suite("Delivery queue: order and lookup")
struct QueueOrderTests {
    @Test("Messages are kept in id order whatever the insertion order")
    func order() {
        var q = Queue()
        for id: UInt64 in [5, 1, 9, 3, 7] { q.insert(queued(id)) }
        #expect(q.messages.map { $0.id } == [1, 3, 5, 7, 9])
        #expect(q.count == 5)
        #expect(!q.isEmpty)
        for id: UInt64 in [1, 3, 5, 7, 9] { #expect(q.message(id)?.id == id) }
        for id: UInt64 in [0, 2, 4, 8, 10] { #expect(q.message(id) == nil) }
    }

    @Test("An empty queue")
    func empty() {
        var q = Queue()
        #expect(q.isEmpty)
        #expect(q.count == 0)
        #expect(q.nextDue(now: .max) == nil)
        #expect(q.earliestAttempt() == nil)
        #expect(!q.isReferenced(1))
    }
}

@Suite("Delivery queue: recipient outcomes")
struct QueueOutcomeTests {
    @Test("A message is finished and removed when its last recipient has an outcome")
    func finishing() {
        var q = Queue()
        q.insert(queued(1, recipients: 3))
        #expect(q.message(1)?.pendingRecipients == [0, 1, 2])
        let finished1 = q.setOutcome(1, recipient: 1, .delivered)
        #expect(!finished1)
        #expect(q.message(1)?.pendingRecipients == [0, 2])
        #expect(q.message(1)?.recipientStates == [0, 1, 0])
        let finished2 = q.setOutcome(1, recipient: 0, .failed)
        #expect(!finished2)
        #expect(q.message(1)?.isFinished == false)
        let finished3 = q.setOutcome(1, recipient: 2, .delivered)
        #expect(finished3)
        #expect(q.message(1) == nil)
        #expect(q.isEmpty)
    }

    @Test("Outcomes for unknown messages or recipients change nothing")
    func unknown() {
        var q = Queue()
        q.insert(queued(1, recipients: 1))
        let finished1 = q.setOutcome(2, recipient: 0, .delivered)
        #expect(!finished1)
        let finished2 = q.setOutcome(1, recipient: 1, .delivered)
        #expect(!finished2)
        #expect(q.message(1)?.pendingRecipients == [0])
    }

    @Test("QueuedMessage pending and finished")
    func queuedMessage() {
        var m = queued(1, recipients: 2)
        #expect(!m.isFinished)
        m.setState(0, 1)
        m.setState(1, 2)
        #expect(m.isFinished)
        #expect(m.pendingRecipients.isEmpty)
        #expect(m.recipientStates == [1, 2])
    }

    @Test("Recipient states pack two bits each, with a heap array only past 32 recipients")
    func packedStates() {
        #expect(MemoryLayout<QueuedMessage>.stride <= 64)
        for count in [1, 31, 32, 33, 100] {
            var m = queued(1, recipients: count)
            for i in stride(from: 0, to: count, by: 3) { m.setState(i, i % 2 == 0 ? 1 : 2) }
            for i in 0..<count {
                #expect(m.state(i) == (i % 3 == 0 ? (i % 2 == 0 ? 1 : 2) : 0))
            }
            #expect(m.pendingRecipients.count == count - (count + 2) / 3)
        }
    }
}

@Suite("Delivery queue: segment references (DESIGN.md principle 5)")
struct QueueSegmentTests {
    @Test("A message holds every segment from its first to its last record")
    func span() {
        var q = Queue()
        q.insert(queued(1, segments: 2...4))
        #expect(!q.isReferenced(1))
        #expect(q.isReferenced(2) && q.isReferenced(3) && q.isReferenced(4))
        #expect(!q.isReferenced(5))
        #expect(q.segmentRefs == [2: 1, 3: 1, 4: 1])
    }

    @Test("Segments are released when their last message finishes")
    func release() {
        var q = Queue()
        q.insert(queued(1, segments: 1...2))
        q.insert(queued(2, segments: 2...3))
        #expect(q.segmentRefs == [1: 1, 2: 2, 3: 1])
        q.setOutcome(1, recipient: 0, .delivered)
        #expect(!q.isReferenced(1))
        #expect(q.isReferenced(2))
        #expect(q.segmentRefs == [2: 1, 3: 1])
        q.setOutcome(2, recipient: 0, .failed)
        #expect(q.segmentRefs.isEmpty)
    }

    @Test("A later record (an outcome in a newer segment) extends the span")
    func noteRecord() {
        var q = Queue()
        q.insert(queued(1, segments: 1...1))
        q.noteRecord(of: 1, inSegment: 3)
        #expect(q.message(1)?.lastSegment == 3)
        #expect(q.segmentRefs == [1: 1, 2: 1, 3: 1])
        // An older or the same segment changes nothing.
        q.noteRecord(of: 1, inSegment: 2)
        q.noteRecord(of: 1, inSegment: 3)
        #expect(q.message(1)?.lastSegment == 3)
        #expect(q.segmentRefs == [1: 1, 2: 1, 3: 1])
        // An unknown message changes nothing.
        q.noteRecord(of: 9, inSegment: 7)
        #expect(!q.isReferenced(7))
        q.setOutcome(1, recipient: 0, .delivered)
        #expect(q.segmentRefs.isEmpty)
    }
}

@Suite("Delivery queue: scheduling on the monotonic clock (DESIGN.md principle 6)")
struct QueueSchedulingTests {
    @Test("The oldest due message that is not in flight is next")
    func nextDue() {
        var q = Queue()
        q.insert(queued(1))
        q.insert(queued(2))
        q.insert(queued(3))
        #expect(q.nextDue(now: 0)?.id == 1)
        q.setInFlight(1, true)
        #expect(q.nextDue(now: 0)?.id == 2)
        q.deferMessage(2, now: 100, delay: 50)
        #expect(q.nextDue(now: 100)?.id == 3)
        q.setInFlight(3, true)
        #expect(q.nextDue(now: 149) == nil)
        #expect(q.nextDue(now: 150)?.id == 2)
    }

    @Test("deferMessage clears in-flight and sets the next attempt; countAttempt counts")
    func deferAndCount() {
        var q = Queue()
        q.insert(queued(1))
        q.setInFlight(1, true)
        q.countAttempt(1)
        q.deferMessage(1, now: 1_000, delay: 500)
        #expect(q.message(1)?.inFlight == false)
        #expect(q.message(1)?.nextAttempt == 1_500)
        #expect(q.message(1)?.attempts == 1)
        q.countAttempt(1)
        #expect(q.message(1)?.attempts == 2)
    }

    @Test("earliestAttempt is the soonest next attempt among messages not in flight")
    func earliest() {
        var q = Queue()
        q.insert(queued(1))
        q.insert(queued(2))
        q.deferMessage(1, now: 0, delay: 300)
        q.deferMessage(2, now: 0, delay: 200)
        #expect(q.earliestAttempt() == 200)
        q.setInFlight(2, true)
        #expect(q.earliestAttempt() == 300)
        q.setInFlight(1, true)
        #expect(q.earliestAttempt() == nil)
    }

    @Test("makeAllDue makes every message due now (postern flush)")
    func makeAllDue() {
        var q = Queue()
        q.insert(queued(1))
        q.insert(queued(2))
        q.deferMessage(1, now: 10, delay: 1_000)
        q.deferMessage(2, now: 10, delay: 2_000)
        #expect(q.nextDue(now: 11) == nil)
        q.makeAllDue()
        #expect(q.nextDue(now: 0)?.id == 1)
        #expect(q.earliestAttempt() == 0)
    }

    @Test("Operations on unknown ids are ignored")
    func unknownIds() {
        var q = Queue()
        q.insert(queued(1))
        q.setInFlight(5, true)
        q.deferMessage(5, now: 0, delay: 10)
        q.countAttempt(5)
        #expect(q.count == 1)
        #expect(q.message(1)?.inFlight == false)
        #expect(q.message(1)?.attempts == 0)
    }
}

@Suite("Queue index narrowing is checked (issue 7 item 7: 32-bit boards, crafted spool files)")
struct QueueIndexWidthTests {
    func entry(size: Int = 1, first: UInt64 = 1, offset: Int = 16, last: UInt64 = 1, recipients: Int = 1) -> QueuedMessage? {
        QueuedMessage(id: 1, arrival: 0, size: size, firstSegment: first, firstOffset: offset, lastSegment: last,
                      recipientStates: [UInt8](repeating: 0, count: recipients))
    }

    @Test("Values at the widths' limits fit")
    func limitsFit() {
        let m = entry(size: Int(UInt32.max), first: UInt64(UInt32.max), offset: Int(Int32.max),
                      last: UInt64(UInt32.max), recipients: Int(UInt16.max))
        #expect(m?.size == Int(UInt32.max))
        #expect(m?.firstSegment == UInt64(UInt32.max))
        #expect(m?.firstOffset == Int(Int32.max))
        #expect(m?.lastSegment == UInt64(UInt32.max))
        // 65,535 recipients (an envelope's u16 count) no longer traps an Int16.
        #expect(m?.recipientCount == UInt16.max)
        #expect(m?.pendingRecipients.count == 65_535)
    }

    @Test("A value one past a width fails instead of trapping or wrapping")
    func pastLimitsFail() {
        #expect(entry(size: Int(UInt32.max) + 1) == nil)
        #expect(entry(size: -1) == nil)
        #expect(entry(first: UInt64(UInt32.max) + 1) == nil)
        #expect(entry(offset: Int(UInt32.max) + 1) == nil)
        #expect(entry(offset: -1) == nil)
        #expect(entry(last: UInt64.max) == nil)
        #expect(entry(recipients: Int(UInt16.max) + 1) == nil)
    }

    @Test("An arrival outside 1970–2106 is shown as the nearest that fits")
    func arrivalClamped() {
        let before = QueuedMessage(id: 1, arrival: Int64.min, size: 1, firstSegment: 1, firstOffset: 16,
                                   lastSegment: 1, recipientStates: [0])
        let after = QueuedMessage(id: 1, arrival: Int64.max, size: 1, firstSegment: 1, firstOffset: 16,
                                  lastSegment: 1, recipientStates: [0])
        #expect(before?.arrival == 0)
        #expect(after?.arrival == Int64(UInt32.max))
    }

    @Test("Recipient indices outside the message read as pending and change nothing")
    func recipientIndices() {
        var m = entry(recipients: 40)!
        for i in [-1, 40, Int.max, Int.min] {
            #expect(m.state(i) == 0)
            m.setState(i, 1)
        }
        #expect(m.pendingRecipients.count == 40)
        var q = Queue()
        q.insert(queued(1, recipients: 2))
        for i in [-1, 2, Int.max, Int.min] {
            let finished = q.setOutcome(1, recipient: i, .delivered)
            #expect(!finished)
        }
        #expect(q.message(1)?.pendingRecipients == [0, 1])
    }

    @Test("A span or a move beyond 32-bit sequences is refused and changes nothing")
    func spans() {
        var q = Queue()
        q.insert(queued(1, segments: 1...2))
        q.noteRecord(of: 1, inSegment: UInt64(UInt32.max) + 1)
        #expect(q.message(1)?.lastSegment == 2)
        #expect(!q.isReferenced(3))
        q.relocate(1, firstSegment: UInt64.max, firstOffset: 16, lastSegment: UInt64.max)
        #expect(q.message(1)?.firstSegment == 1)
        #expect(q.isReferenced(1) && q.isReferenced(2))
        var m = queued(2)
        let moved = m.move(firstSegment: 1, firstOffset: Int(UInt32.max) + 1, lastSegment: 1)
        #expect(!moved)
        #expect(m.firstOffset == 16)
    }
}

@Suite("The queue's text total past 2 GiB (issue 10 item 2)")
struct QueueLargeTests {
    @Test("Three messages of 1 GiB: 3 GiB of text, then back to 0")
    func textBytesPast2GiB() {
        var q = Queue()
        for i in 0..<3 {
            let m = QueuedMessage(id: UInt64(i + 1), arrival: 1_800_000_000, size: 1 << 30, firstSegment: UInt64(i + 1),
                                  firstOffset: 16, lastSegment: UInt64(i + 1), recipientStates: [0])!
            q.insert(m)
        }
        #expect(q.textBytes == 3 << 30)
        #expect(QueueReport.textFooter(count: q.count, bytes: q.textBytes) == "-- 3 messages, 3221225472 bytes of text\n")
        #expect(QueueReport.jsonFooter(count: q.count, bytes: q.textBytes).contains("\"text_bytes\":3221225472"))
        for i in 0..<3 { q.setOutcome(UInt64(i + 1), recipient: 0, .delivered) }
        #expect(q.textBytes == 0)
    }
}
