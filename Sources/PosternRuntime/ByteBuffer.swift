/// A fixed-capacity byte buffer, allocated once and reused for the life of the
/// daemon (DESIGN.md principle 2). Bytes are appended at `end` and consumed from
/// `start`; `compact()` moves the unconsumed bytes to the front.
public final class ByteBuffer {
    public let capacity: Int
    let base: UnsafeMutableRawPointer
    public private(set) var start = 0
    public private(set) var end = 0

    public init(capacity: Int) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    public var count: Int { end - start }
    public var isEmpty: Bool { end == start }
    public var freeSpace: Int { capacity - end }

    /// The unconsumed bytes.
    public var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + start, count: end - start) }

    /// Space after the last byte, for read(2) or an encoder to fill.
    public var writable: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + end, count: capacity - end)
    }

    public func didWrite(_ n: Int) {
        precondition(n >= 0 && end + n <= capacity)
        end += n
    }

    public func consume(_ n: Int) {
        precondition(n >= 0 && start + n <= end)
        start += n
        if start == end { start = 0; end = 0 }
    }

    /// Moves the unconsumed bytes to the front, making all free space contiguous.
    public func compact() {
        guard start > 0 else { return }
        let n = end - start
        if n > 0 { (base).copyMemory(from: base + start, byteCount: n) }
        start = 0
        end = n
    }

    /// Appends `bytes` if they fit (compacting first if needed); false if not.
    @discardableResult
    public func append(_ bytes: [UInt8]) -> Bool {
        if bytes.isEmpty { return true }
        if freeSpace < bytes.count { compact() }
        guard freeSpace >= bytes.count else { return false }
        bytes.withUnsafeBytes { (base + end).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        end += bytes.count
        return true
    }

    /// Zeroes the whole storage and empties the buffer: for bytes that carried a
    /// secret (an AUTH response), which must not linger until overwritten.
    public func wipe() {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        clear()
    }

    public func clear() {
        start = 0
        end = 0
    }
}
