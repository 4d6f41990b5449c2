import CLibc

/// A fixed-capacity byte buffer, allocated once and reused for the life of the
/// daemon (DESIGN.md principle 2). Bytes are appended at `end` and consumed from
/// `start`; `compact()` moves the unconsumed bytes to the front.
///
/// The storage is its own anonymous mapping (mmap), not the malloc heap: a page
/// costs memory only once written, so the slots of connections that never come
/// cost nothing, and `release()` gives a closed connection's pages back. Heap
/// buffers cost the page malloc writes its chunk header into, in use or not:
/// 12.5 KiB per receiver slot, a fifth of an idle daemon's private memory at the
/// default 16 connections (measured with `make bench-board`, issue 10).
public final class ByteBuffer {
    public let capacity: Int
    let base: UnsafeMutableRawPointer
    /// False when mmap failed and the storage came from the heap instead.
    let mapped: Bool
    public private(set) var start = 0
    public private(set) var end = 0

    public init(capacity: Int) {
        self.capacity = capacity
        if let p = cl_buffer_map(capacity) {
            base = p
            mapped = true
        } else {
            base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
            // Zeros, as a new mapping reads (`zeros` relies on it).
            base.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
            mapped = false
        }
    }

    /// All of a buffer that is never written: `capacity` zero bytes. Reading a
    /// mapping's untouched pages maps the kernel's shared zero page, so this
    /// costs no memory however often it is written out (the spool's
    /// zero-filled room, `Spool.prefillWindow`).
    var zeros: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: capacity) }

    deinit {
        if mapped { cl_buffer_unmap(base, capacity) } else { base.deallocate() }
    }

    /// Empties the buffer and returns its pages to the kernel (they read as
    /// zeros when next used): for a connection that has ended.
    public func release() {
        clear()
        if mapped { cl_buffer_release(base, capacity) }
    }

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
