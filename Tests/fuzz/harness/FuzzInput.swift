// Shared by every target: reads choices from the front of the fuzzer's bytes.
// Running out of bytes is never an error: every read then gives zero, so each
// input, however short, is a complete test case.

struct FuzzInput {
    let data: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ data: UnsafeRawBufferPointer) { self.data = data }

    var isEmpty: Bool { offset >= data.count }
    var remaining: Int { data.count - offset }

    /// The next byte, or 0 at the end.
    mutating func byte() -> UInt8 {
        guard offset < data.count else { return 0 }
        defer { offset += 1 }
        return data[offset]
    }

    mutating func bool() -> Bool { byte() & 1 != 0 }

    /// A number in `range`, from one byte (two when the range is wider than 256).
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        let width = range.upperBound - range.lowerBound + 1
        var v = Int(byte())
        if width > 256 { v = v << 8 | Int(byte()) }
        return range.lowerBound + v % width
    }

    /// The next `n` bytes (fewer at the end).
    mutating func bytes(_ n: Int) -> UnsafeRawBufferPointer {
        let end = min(data.count, offset + max(0, n))
        defer { offset = end }
        return UnsafeRawBufferPointer(rebasing: data[offset..<end])
    }

    /// Everything not read yet.
    mutating func rest() -> UnsafeRawBufferPointer { bytes(remaining) }
}

/// An invariant of the code under test. A failure is a crash the fuzzer keeps, with
/// the message printed in every build (`precondition` drops it under -O).
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}
