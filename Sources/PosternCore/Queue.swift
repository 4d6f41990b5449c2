/// One acknowledged message waiting for delivery: the small index entry kept in
/// memory for each queued message (DESIGN.md principle 2). Its envelope and text
/// stay on disk and are read again when the message is sent.
public struct QueuedMessage: Equatable, Sendable {
    public let id: UInt64
    /// Wall-clock arrival, seconds since the epoch (for age and logs only).
    public var arrival: Int64
    /// Bytes of text.
    public var size: Int
    /// Where the envelope record is: the message's records start there.
    public var firstSegment: UInt64
    public var firstOffset: Int
    /// The newest segment holding a record of this message; every segment from
    /// `firstSegment` to here is kept while the message is queued.
    public var lastSegment: UInt64
    /// Per recipient: 0 pending, else `SpoolCodec.Outcome` raw value.
    public var recipientStates: [UInt8]
    /// Delivery attempts that reached this message.
    public var attempts: Int = 0
    /// Monotonic nanoseconds before which the message is not tried (0: now).
    public var nextAttempt: Int64 = 0
    /// Handed to the sender and not yet answered.
    public var inFlight = false

    public init(id: UInt64, arrival: Int64, size: Int, firstSegment: UInt64, firstOffset: Int,
                lastSegment: UInt64, recipientStates: [UInt8]) {
        self.id = id
        self.arrival = arrival
        self.size = size
        self.firstSegment = firstSegment
        self.firstOffset = firstOffset
        self.lastSegment = lastSegment
        self.recipientStates = recipientStates
    }

    public var pendingRecipients: [Int] {
        recipientStates.indices.filter { recipientStates[$0] == 0 }
    }

    public var isFinished: Bool { !recipientStates.contains(0) }
}

/// The delivery queue: queued messages in order of arrival (id order), and how
/// many queued messages hold each segment. Pure; the runtime persists changes to
/// the spool before or after calling in, as each method's comment says.
public struct Queue: Sendable {
    public private(set) var messages: [QueuedMessage] = []
    /// Segment sequence → number of queued messages whose span covers it.
    public private(set) var segmentRefs: [UInt64: Int] = [:]

    public init() {}

    public var count: Int { messages.count }
    public var isEmpty: Bool { messages.isEmpty }

    func index(of id: UInt64) -> Int? {
        var lo = 0, hi = messages.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if messages[mid].id < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < messages.count && messages[lo].id == id ? lo : nil
    }

    public func message(_ id: UInt64) -> QueuedMessage? { index(of: id).map { messages[$0] } }

    /// Adds a committed message (after its commit record is durable).
    public mutating func insert(_ m: QueuedMessage) {
        var lo = 0, hi = messages.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if messages[mid].id < m.id { lo = mid + 1 } else { hi = mid }
        }
        messages.insert(m, at: lo)
        retain(m.firstSegment, through: m.lastSegment)
    }

    /// A record of message `id` was written to segment `segment`: keep it.
    public mutating func noteRecord(of id: UInt64, inSegment segment: UInt64) {
        guard let i = index(of: id), segment > messages[i].lastSegment else { return }
        retain(messages[i].lastSegment + 1, through: segment)
        messages[i].lastSegment = segment
    }

    /// Records an outcome for a recipient. Returns true when that finished the
    /// message, which is then removed and its segments released.
    @discardableResult
    public mutating func setOutcome(_ id: UInt64, recipient: Int, _ outcome: SpoolCodec.Outcome) -> Bool {
        guard let i = index(of: id), recipient < messages[i].recipientStates.count else { return false }
        messages[i].recipientStates[recipient] = outcome.rawValue
        guard messages[i].isFinished else { return false }
        let m = messages.remove(at: i)
        release(m.firstSegment, through: m.lastSegment)
        return true
    }

    public mutating func setInFlight(_ id: UInt64, _ value: Bool) {
        if let i = index(of: id) { messages[i].inFlight = value }
    }

    /// After a failed or partial attempt: wait `delay` before the next one
    /// (`countAttempt` counts attempts when they start).
    public mutating func deferMessage(_ id: UInt64, now: Int64, delay: Int64) {
        guard let i = index(of: id) else { return }
        messages[i].inFlight = false
        messages[i].nextAttempt = now + delay
    }

    public mutating func countAttempt(_ id: UInt64) {
        if let i = index(of: id) { messages[i].attempts += 1 }
    }

    /// The oldest message that is due and not in flight.
    public func nextDue(now: Int64) -> QueuedMessage? {
        messages.first { !$0.inFlight && $0.nextAttempt <= now }
    }

    /// When the next not-in-flight message becomes due (nil when none waits).
    public func earliestAttempt() -> Int64? {
        var best: Int64? = nil
        for m in messages where !m.inFlight {
            if best == nil || m.nextAttempt < best! { best = m.nextAttempt }
        }
        return best
    }

    /// Makes every message due now (`postern flush`, or the upstream came back).
    public mutating func makeAllDue() {
        for i in messages.indices { messages[i].nextAttempt = 0 }
    }

    public func isReferenced(_ segment: UInt64) -> Bool { (segmentRefs[segment] ?? 0) > 0 }

    mutating func retain(_ from: UInt64, through to: UInt64) {
        guard from <= to else { return }
        for s in from...to { segmentRefs[s, default: 0] += 1 }
    }

    mutating func release(_ from: UInt64, through to: UInt64) {
        guard from <= to else { return }
        for s in from...to {
            let n = (segmentRefs[s] ?? 1) - 1
            if n <= 0 { segmentRefs[s] = nil } else { segmentRefs[s] = n }
        }
    }
}
