import Testing
@testable import PosternCore

@Suite("Memory budget (DESIGN.md principle 2)")
struct MemoryBudgetTests {
    @Test("Receiver buffers scale with max_connections only")
    func scaling() {
        var c = Config()
        c.receiver.maxConnections = 4
        let small = MemoryBudget(c)
        c.receiver.maxConnections = 8
        let large = MemoryBudget(c)
        #expect(small.receivers == 4 * BufferSizes.perReceiver)
        #expect(large.receivers == 2 * small.receivers)
        #expect(large.fixedTotal - small.fixedTotal == 4 * BufferSizes.perReceiver)
        c.receiver.maxMessageSize = 1 << 30
        #expect(MemoryBudget(c).fixedTotal == large.fixedTotal, "message size does not change memory")
    }

    @Test("The receiver input buffer holds at least one 512-octet command line (RFC 5321 §4.5.3.1.4)")
    func inputBuffer() {
        #expect(BufferSizes.receiverInput >= 512)
        #expect(BufferSizes.senderInput >= 512)
    }

    @Test("The printed budget names the connections and the totals")
    func lines() {
        var c = Config()
        c.receiver.maxConnections = 3
        let b = MemoryBudget(c)
        let text = b.lines(c)
        #expect(text.first == "memory budget (allocated once at start):")
        #expect(text.contains { $0.contains("3 connections") })
        #expect(text.contains { $0.contains("fixed total") && $0.contains("\(b.fixedTotal / 1024) KiB") })
        #expect(b.perQueuedMessage > 0 && b.perQueuedMessage < 1024)
    }
}
