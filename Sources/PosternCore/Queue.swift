/// One acknowledged message waiting for delivery: the small index entry kept in
/// memory for each queued message (DESIGN.md principle 2). Its envelope and text
/// stay on disk and are read again when the message is sent.
///
/// Packed to 64 bytes (`MemoryLayout<QueuedMessage>.stride`) for a message with
/// up to 32 recipients: the recipient states are two bits each in one word, with
/// a heap array only for larger messages. 100,000 queued messages take 6.4 MB.
///
/// The packing narrows: segment sequences, the envelope's offset and the text
/// size are kept in 32 bits, the recipient count in 16. The initialiser checks
/// each value and fails when one does not fit, so a spool file with values
/// beyond these widths is refused as damage instead of trapping or wrapping
/// (the spool format keeps writers well inside them: `SpoolCodec.maxSequence`,
/// `maxSegmentLength`, and the u16 recipient count).
public struct QueuedMessage: Equatable, Sendable {
    public let id: UInt64
    /// Two bits per recipient (0 pending, else `SpoolCodec.Outcome`), recipients
    /// 0–31; `overflow` holds one byte per recipient from 32 on.
    var stateBits: UInt64 = 0
    var overflow: [UInt8] = []
    /// Monotonic nanoseconds before which the message is not tried (0: now).
    public var nextAttempt: Int64 = 0
    var arrivalSeconds: UInt32
    var size32: UInt32
    var first32: UInt32
    var firstOffset32: UInt32
    var last32: UInt32
    /// The monotonic second at which the message expires (`ExpiryPolicy`).
    var expires32: UInt32 = .max
    public let recipientCount: UInt16
    var attempts16: UInt16 = 0
    /// Handed to the sender and not yet answered.
    public var inFlight = false
    /// The upstream's last reply to this message, as an index into the sender's
    /// table of distinct replies (0: none yet). Kept in memory only: retry
    /// bookkeeping never touches the disk.
    public var lastReply: UInt8 = 0

    /// Nil when a value does not fit the packed entry (see above).
    public init?(id: UInt64, arrival: Int64, size: Int, firstSegment: UInt64, firstOffset: Int,
                 lastSegment: UInt64, recipientStates: [UInt8]) {
        guard let size32 = UInt32(exactly: size), let first32 = UInt32(exactly: firstSegment),
              let firstOffset32 = UInt32(exactly: firstOffset), let last32 = UInt32(exactly: lastSegment),
              let count = UInt16(exactly: recipientStates.count) else { return nil }
        self.id = id
        // The arrival is only shown (age, logs), never computed with: a time
        // before 1970 or after 2106 is shown as the nearest one that fits.
        arrivalSeconds = UInt32(clamping: arrival)
        self.size32 = size32
        self.first32 = first32
        self.firstOffset32 = firstOffset32
        self.last32 = last32
        recipientCount = count
        if recipientStates.count > 32 { overflow = [UInt8](repeating: 0, count: recipientStates.count - 32) }
        for (i, s) in recipientStates.enumerated() where s != 0 { setState(i, s) }
    }

    /// Wall-clock arrival, seconds since the epoch (for age and logs only).
    public var arrival: Int64 { Int64(arrivalSeconds) }
    /// Bytes of text.
    public var size: Int { Int(size32) }
    /// Where the envelope record is: the message's records start there.
    public var firstSegment: UInt64 { UInt64(first32) }
    public var firstOffset: Int { Int(firstOffset32) }
    /// The newest segment holding a record of this message; every segment from
    /// `firstSegment` to here is kept while the message is queued.
    public var lastSegment: UInt64 { UInt64(last32) }
    /// The monotonic second at which the message is given up (`ExpiryPolicy`).
    public var expiresAt: Int64 {
        get { Int64(expires32) }
        set { expires32 = UInt32(clamping: newValue) }
    }
    /// Delivery attempts that reached this message.
    public var attempts: Int {
        get { Int(attempts16) }
        set { attempts16 = UInt16(clamping: newValue) }
    }

    /// Recipient `i`'s state; 0 for an index the message does not have.
    public func state(_ i: Int) -> UInt8 {
        guard i >= 0, i < Int(recipientCount) else { return 0 }
        return i < 32 ? UInt8((stateBits >> UInt64(2 * i)) & 3) : overflow[i - 32]
    }

    /// Sets recipient `i`'s state; an index the message does not have is ignored.
    public mutating func setState(_ i: Int, _ value: UInt8) {
        guard i >= 0, i < Int(recipientCount) else { return }
        if i < 32 {
            stateBits = stateBits & ~(3 << UInt64(2 * i)) | UInt64(value & 3) << UInt64(2 * i)
        } else {
            overflow[i - 32] = value
        }
    }

    /// Per recipient: 0 pending, else `SpoolCodec.Outcome` raw value.
    public var recipientStates: [UInt8] { (0..<Int(recipientCount)).map(state) }

    public var pendingRecipients: [Int] { (0..<Int(recipientCount)).filter { state($0) == 0 } }

    public var isFinished: Bool {
        for i in 0..<Int(recipientCount) where state(i) == 0 { return false }
        return true
    }

    /// Moves the entry to a new place; false (and unchanged) when the place does
    /// not fit the packed entry.
    @discardableResult
    public mutating func move(firstSegment: UInt64, firstOffset: Int, lastSegment: UInt64) -> Bool {
        guard let f = UInt32(exactly: firstSegment), let o = UInt32(exactly: firstOffset),
              let l = UInt32(exactly: lastSegment) else { return false }
        first32 = f
        firstOffset32 = o
        last32 = l
        return true
    }

    /// Extends the span to `segment`; false when it does not fit.
    mutating func extend(to segment: UInt64) -> Bool {
        guard let l = UInt32(exactly: segment) else { return false }
        last32 = l
        return true
    }
}

/// The delivery queue: queued messages in order of arrival (id order), and how
/// many queued messages hold each segment. Pure; the runtime persists changes to
/// the spool before or after calling in, as each method's comment says.
public struct Queue: Sendable {
    public private(set) var messages: [QueuedMessage] = []
    /// Segment sequence → number of queued messages whose span covers it.
    public private(set) var segmentRefs: [UInt64: Int] = [:]
    /// Sum of the text sizes of the queued messages: 64 bits, since on a 32-bit
    /// board the queue may hold more than 2 GiB (issue 10 item 2). Each size is
    /// below 2^32 (the packed entry), so the sum cannot overflow.
    public private(set) var textBytes: Int64 = 0
    /// `earliestAttempt()` and `earliestExpiry()` cached until the queue changes;
    /// nil when unknown.
    var earliestCache: Int64?? = nil
    var expiryCache: Int64?? = nil

    public init() {}

    public var count: Int { messages.count }
    public var isEmpty: Bool { messages.isEmpty }

    func index(of id: UInt64) -> Int? {
        let i = insertionPoint(id)
        return i < messages.count && messages[i].id == id ? i : nil
    }

    func insertionPoint(_ id: UInt64) -> Int {
        // Most lookups and inserts are at the end: the newest message.
        if let last = messages.last, last.id < id { return messages.count }
        var lo = 0, hi = messages.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if messages[mid].id < id { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func message(_ id: UInt64) -> QueuedMessage? { index(of: id).map { messages[$0] } }

    /// The first queued message with an id greater than `id` (for listing a queue
    /// that changes while it is listed).
    public func message(after id: UInt64) -> QueuedMessage? {
        var lo = 0, hi = messages.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if messages[mid].id <= id { lo = mid + 1 } else { hi = mid }
        }
        return lo < messages.count ? messages[lo] : nil
    }

    /// Adds a committed message (after its commit record is durable).
    public mutating func insert(_ m: QueuedMessage) {
        messages.insert(m, at: insertionPoint(m.id))
        retain(m.firstSegment, through: m.lastSegment)
        textBytes += Int64(m.size32)
        earliestCache = nil
        expiryCache = nil
    }

    /// A record of message `id` was written to segment `segment`: keep it.
    public mutating func noteRecord(of id: UInt64, inSegment segment: UInt64) {
        guard let i = index(of: id), segment > messages[i].lastSegment else { return }
        let from = messages[i].lastSegment + 1
        guard messages[i].extend(to: segment) else { return }
        retain(from, through: segment)
    }

    /// The message now lives at a new place (compaction copied it forward and the
    /// copy is durable): its old segments are released.
    public mutating func relocate(_ id: UInt64, firstSegment: UInt64, firstOffset: Int, lastSegment: UInt64) {
        guard let i = index(of: id) else { return }
        let old = messages[i]
        let last = max(lastSegment, old.lastSegment)
        guard messages[i].move(firstSegment: firstSegment, firstOffset: firstOffset, lastSegment: last) else { return }
        retain(firstSegment, through: last)
        release(old.firstSegment, through: old.lastSegment)
    }

    /// Records an outcome for a recipient. Returns true when that finished the
    /// message, which is then removed and its segments released.
    @discardableResult
    public mutating func setOutcome(_ id: UInt64, recipient: Int, _ outcome: SpoolCodec.Outcome) -> Bool {
        guard let i = index(of: id), recipient >= 0, recipient < Int(messages[i].recipientCount) else { return false }
        messages[i].setState(recipient, outcome.rawValue)
        guard messages[i].isFinished else { return false }
        let m = messages.remove(at: i)
        release(m.firstSegment, through: m.lastSegment)
        textBytes -= Int64(m.size32)
        earliestCache = nil
        expiryCache = nil
        return true
    }

    public mutating func setInFlight(_ id: UInt64, _ value: Bool) {
        if let i = index(of: id) { messages[i].inFlight = value }
        earliestCache = nil
        expiryCache = nil
    }

    /// After a failed or partial attempt: wait `delay` before the next one
    /// (`countAttempt` counts attempts when they start).
    public mutating func deferMessage(_ id: UInt64, now: Int64, delay: Int64) {
        guard let i = index(of: id) else { return }
        messages[i].inFlight = false
        messages[i].nextAttempt = now + delay
        earliestCache = nil
    }

    public mutating func countAttempt(_ id: UInt64) {
        if let i = index(of: id) { messages[i].attempts += 1 }
    }

    public mutating func setLastReply(_ id: UInt64, _ reply: UInt8) {
        if let i = index(of: id) { messages[i].lastReply = reply }
    }

    /// Forgets every message's last reply (the table of replies was reset).
    public mutating func clearLastReplies() {
        for i in messages.indices { messages[i].lastReply = 0 }
    }

    /// The oldest message that is due and not in flight.
    public func nextDue(now: Int64) -> QueuedMessage? {
        messages.first { !$0.inFlight && $0.nextAttempt <= now }
    }

    /// Whether a message is due (`nextDue` without copying it out: the loop
    /// asks twice per iteration).
    public func hasDue(now: Int64) -> Bool {
        messages.contains { !$0.inFlight && $0.nextAttempt <= now }
    }

    /// When the next not-in-flight message becomes due (nil when none waits).
    /// Cached: the loop asks every iteration, the queue changes far less often.
    public mutating func earliestAttempt() -> Int64? {
        if let cached = earliestCache { return cached }
        var best: Int64? = nil
        for m in messages where !m.inFlight {
            if best == nil || m.nextAttempt < best! { best = m.nextAttempt }
        }
        earliestCache = .some(best)
        return best
    }

    /// The earliest expiry deadline of a message not in flight (nil: none).
    public mutating func earliestExpiry() -> Int64? {
        if let cached = expiryCache { return cached }
        var best: Int64? = nil
        for m in messages where !m.inFlight {
            if best == nil || m.expiresAt < best! { best = m.expiresAt }
        }
        expiryCache = .some(best)
        return best
    }

    /// The messages not in flight whose deadline has passed.
    public func expired(atMonotonicSecond now: Int64) -> [UInt64] {
        messages.filter { !$0.inFlight && $0.expiresAt <= now }.map { $0.id }
    }

    /// Makes every message due now (`postern flush`, or the upstream came back).
    public mutating func makeAllDue() {
        for i in messages.indices { messages[i].nextAttempt = 0 }
        earliestCache = nil
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
