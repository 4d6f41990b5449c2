import CLibc
import PosternCore

/// The one reader of segment files: walks the records of one segment through a
/// fixed buffer and hands out only records whose CRC matched. The recovery scan
/// (`SpoolRecovery.swift`) and `MessageReader` (delivery, compaction, `postern
/// queue`) both read through it, so a damaged or crafted file is judged the
/// same way wherever it is read (STYLE.md "One verified reader per format"; E-MailRelay's
/// `FileIterator`/`StoredFile` split is the model).
///
/// A record larger than the buffer — only an envelope with hundreds of
/// recipients, or a read with a small buffer — is read whole into a temporary
/// array bounded by `SpoolCodec.maxPayload` and verified there; the temporary is
/// released at the next record. Text records are at most
/// `SpoolCodec.maxTextPayload`, so with the 64 KiB buffer a message of any size
/// streams through without one.
///
/// The file is opened for each read and closed at once: a cursor never holds a
/// descriptor between calls, so no reader (a `postern queue` listing, a delivery
/// abandoned mid-message) keeps a deleted segment's blocks allocated on a full
/// disk. The one exception is the sender's cursor (`keepsFileOpen`): it keeps
/// the segment it reads open from message to message, since opening it, reading
/// its header again and closing it were three of the few dozen system calls a
/// small message costs (issue 11). It lets go of it when the spool deletes
/// that segment (`Spool.segmentDeleted`, so a full disk gets the blocks back
/// at once), when the sender's connection closes, and when it starts another
/// segment.
public final class SegmentCursor {
    /// Why the walk stopped before the end of the file.
    public enum Problem: Error, Equatable, CustomStringConvertible {
        /// A read failed: the file may be fine, try again later.
        case io(Errno)
        /// "<segment>:<offset> <reason>": a torn tail, damage or a crafted file.
        /// Nothing after it in this file is read.
        case damaged(String)

        public var description: String {
            switch self {
            case .io(let e): return e.description
            case .damaged(let why): return why
            }
        }
    }

    /// A verified record. Its payload is `payload` until the next `next()`.
    public struct Record: Equatable, Sendable {
        public var kind: SpoolCodec.Kind
        public var id: UInt64
        /// File offset of the record's first byte.
        public var offset: Int
        public var payloadLength: Int
        /// Bytes the whole record occupies.
        public var length: Int
    }

    let buffer: ByteBuffer
    var storage: (any SpoolStorage)? = nil
    var path = ""
    public private(set) var sequence: UInt64 = 0
    /// File offset of `buffer.start`: where the next unread byte comes from.
    var bufferOffset = 0
    /// The record `next()` returned last, and where its payload is held.
    var current: Record? = nil
    /// The record larger than the buffer, when `current` is one; freed at the
    /// next record.
    var temporary: UnsafeMutableRawBufferPointer? = nil
    /// The descriptor `start` holds while it reads; -1 otherwise.
    var openFD: Int32 = -1
    /// Keep the segment open between calls (see above); `releaseFile` closes it.
    public var keepsFileOpen = false
    /// The descriptor kept open, of segment `sequence` at `path`, whose header
    /// was checked through it; -1 when none.
    var heldFD: Int32 = -1

    public init(capacity: Int = BufferSizes.spoolRead) {
        precondition(capacity >= SpoolCodec.recordOverhead, "a spool read buffer must hold a record header")
        buffer = ByteBuffer(capacity: capacity)
    }

    deinit {
        releaseTemporary()
        releaseFile()
    }

    /// Closes the segment kept open, if any.
    public func releaseFile() {
        if heldFD >= 0 { storage?.close(heldFD) }
        heldFD = -1
    }

    /// Closes the segment kept open if it is segment `seq`.
    public func releaseFile(ifHolding seq: UInt64) {
        if heldFD >= 0 && sequence == seq { releaseFile() }
    }

    public var capacity: Int { buffer.capacity }

    /// Starts reading segment `sequence` at `path`: checks its header, then
    /// positions the cursor at `offset` (a record boundary: the first record is at
    /// `SpoolCodec.segmentHeaderLength`, a queued message's at its index entry).
    public func start(storage: any SpoolStorage, path: String, sequence: UInt64, at offset: Int) -> Result<Void, Problem> {
        // The segment kept open serves again only for the same file, through
        // the same storage; its header was checked when it was opened.
        let reuse = heldFD >= 0 && self.storage === storage && self.path == path && self.sequence == sequence
        if !reuse { releaseFile() }
        self.storage = storage
        self.path = path
        self.sequence = sequence
        forgetCurrent()
        buffer.clear()
        bufferOffset = 0
        guard offset >= SpoolCodec.segmentHeaderLength, offset <= SpoolCodec.maxSegmentLength else {
            return .failure(damaged(at: offset, "offset outside the segment"))
        }
        if reuse {
            bufferOffset = offset
            if case .failure(let e) = fill(SpoolCodec.recordHeaderLength) { return .failure(.io(e)) }
            return .success(())
        }
        // One open for the header and the first buffer's worth of records (a
        // `postern queue` listing reads one envelope per message).
        let fd: Int32
        switch storage.openForReading(path) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(.io(e))
        }
        openFD = fd
        var headerChecked = false
        defer {
            if keepsFileOpen && headerChecked { heldFD = fd } else { storage.close(fd) }
            openFD = -1
        }
        var header = [UInt8](repeating: 0, count: SpoolCodec.segmentHeaderLength)
        switch header.withUnsafeMutableBytes({ readFully($0, at: 0) }) {
        case .failure(let e): return .failure(.io(e))
        case .success(let n):
            guard n == header.count, header.withUnsafeBytes({ SpoolCodec.parseSegmentHeader($0) }) == sequence else {
                return .failure(damaged(at: 0, "bad segment header"))
            }
        }
        headerChecked = true
        bufferOffset = offset
        // One read of as much as the buffer holds, while the file is open.
        if case .failure(let e) = fill(SpoolCodec.recordHeaderLength) { return .failure(.io(e)) }
        return .success(())
    }

    /// The next record, its CRC verified; nil at the end of the file when the
    /// last record ended exactly there.
    public func next() -> Result<Record?, Problem> {
        finishCurrent()
        let recordOffset = bufferOffset
        switch fill(SpoolCodec.recordHeaderLength) {
        case .failure(let e): return .failure(.io(e))
        case .success(false):
            if buffer.isEmpty { return .success(nil) }
            if SpoolCodec.isZeroFill(buffer.readable) { return zeroFilledEnd(at: recordOffset) }
            return .failure(damaged(at: recordOffset, "incomplete record"))
        case .success(true): break
        }
        var total: Int
        switch SpoolCodec.parseRecord(buffer.readable) {
        case .corrupt(let why):
            // A header of zeros is no record (kind 0): checked only here, off
            // the way of every record that parses.
            if SpoolCodec.isZeroFill(UnsafeRawBufferPointer(rebasing: buffer.readable.prefix(SpoolCodec.recordHeaderLength))) {
                return zeroFilledEnd(at: recordOffset)
            }
            return .failure(damaged(at: recordOffset, why))
        case .record(let frame):
            // Whole in the buffer and verified (the common case: one CRC pass).
            return accept(frame, at: recordOffset)
        case .needMore(let t):
            total = t
        }
        // Checked, so that a record can never reach past what an `Int` or the
        // queue's index can address, on a 32-bit board too.
        let (end, overflow) = recordOffset.addingReportingOverflow(total)
        guard !overflow, end <= SpoolCodec.maxSegmentLength else {
            return .failure(damaged(at: recordOffset, "record beyond the longest segment"))
        }
        if total <= buffer.capacity {
            switch fill(total) {
            case .failure(let e): return .failure(.io(e))
            case .success(false): return .failure(damaged(at: recordOffset, "incomplete record"))
            case .success(true): break
            }
            return verify(buffer.readable, at: recordOffset)
        }
        // Larger than the buffer: read it whole into the bounded temporary
        // (`parseRecord` refused anything over `maxPayload`).
        let big = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 8)
        temporary = big
        switch readFully(big, at: recordOffset) {
        case .failure(let e):
            releaseTemporary()
            return .failure(.io(e))
        case .success(let n) where n < total:
            releaseTemporary()
            return .failure(damaged(at: recordOffset, "incomplete record"))
        case .success:
            let verified = verify(UnsafeRawBufferPointer(big), at: recordOffset)
            if case .success = verified {
                buffer.clear()
                bufferOffset = end
            }
            return verified
        }
    }

    /// The records ended at `offset`, where the zero-filled room begins (see
    /// "Zero-filled room" in SpoolCodec.swift): the end of the file, once every
    /// byte after it is checked to be zero. A byte that is not is damage there
    /// (or a write the crash tore out of order), reported like a torn tail, and
    /// so is room longer than a writer leaves: the check reads no further than
    /// `maxZeroFill` (64 KiB). Only the recovery scan reads this far.
    func zeroFilledEnd(at offset: Int) -> Result<Record?, Problem> {
        // Saturating: near 2 GiB on a 32-bit board the room ends with the file
        // (`fill` reads nothing past the longest segment).
        let limit = offset > Int.max - SpoolCodec.maxZeroFill ? Int.max : offset + SpoolCodec.maxZeroFill
        while true {
            let held = buffer.readable
            for i in held.indices where held[i] != 0 {
                let (at, overflow) = bufferOffset.addingReportingOverflow(i)
                return .failure(damaged(at: overflow ? offset : at, "bytes after the zero-filled end of the records"))
            }
            let (next, overflow) = bufferOffset.addingReportingOverflow(held.count)
            buffer.clear()
            if overflow { return .success(nil) }
            bufferOffset = next
            if next > limit {
                return .failure(damaged(at: limit, "zero-filled room longer than a writer leaves"))
            }
            switch fill(1) {
            case .failure(let e): return .failure(.io(e))
            case .success(false): return .success(nil)
            case .success(true): continue
            }
        }
    }

    /// The payload of the record `next()` returned last (empty when there is none).
    public var payload: UnsafeRawBufferPointer {
        guard let r = current else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let range = SpoolCodec.recordHeaderLength..<(SpoolCodec.recordHeaderLength + r.payloadLength)
        if let big = temporary { return UnsafeRawBufferPointer(rebasing: big[range]) }
        return UnsafeRawBufferPointer(rebasing: buffer.readable[range])
    }

    /// Where the next record starts (after the one returned last).
    public var nextOffset: Int { current.map { $0.offset + $0.length } ?? bufferOffset }

    // MARK: internals

    func damaged(at offset: Int, _ why: String) -> Problem {
        .damaged("\(SpoolCodec.segmentName(sequence)):\(offset) \(why)")
    }

    /// Checks the CRC of the whole record in `bytes` and makes it current.
    func verify(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Result<Record?, Problem> {
        switch SpoolCodec.parseRecord(bytes) {
        case .record(let frame):
            return accept(frame, at: offset)
        case .corrupt(let why):
            releaseTemporary()
            return .failure(damaged(at: offset, why))
        case .needMore:
            releaseTemporary()
            return .failure(damaged(at: offset, "incomplete record"))
        }
    }

    func accept(_ frame: SpoolCodec.RecordFrame, at offset: Int) -> Result<Record?, Problem> {
        let (end, overflow) = offset.addingReportingOverflow(frame.length)
        guard !overflow, end <= SpoolCodec.maxSegmentLength else {
            return .failure(damaged(at: offset, "record beyond the longest segment"))
        }
        let r = Record(kind: frame.kind, id: frame.id, offset: offset, payloadLength: frame.payloadLength,
                       length: frame.length)
        current = r
        return .success(r)
    }

    /// Moves past the record returned last.
    func finishCurrent() {
        guard let r = current else { return }
        if temporary == nil {
            buffer.consume(r.length)
            bufferOffset += r.length
        }
        forgetCurrent()
    }

    func forgetCurrent() {
        current = nil
        releaseTemporary()
    }

    func releaseTemporary() {
        temporary?.deallocate()
        temporary = nil
    }

    /// Reads until at least `n` (at most the capacity) bytes are buffered; false
    /// when the file ends first. Each read asks for all the free space, and
    /// the next is made only while fewer than `n` are there: a small message's
    /// records come in one read, with no second one to find the end of the file.
    func fill(_ n: Int) -> Result<Bool, Errno> {
        if buffer.count >= n { return .success(true) }
        if buffer.freeSpace < n - buffer.count { buffer.compact() }
        while buffer.count < n && buffer.freeSpace > 0 {
            // Nothing past the longest segment is read: there the file ends.
            let (at, overflow) = bufferOffset.addingReportingOverflow(buffer.count)
            if overflow || at >= SpoolCodec.maxSegmentLength { break }
            switch readFile(buffer.writable, at: at) {
            case .failure(let e): return .failure(e)
            case .success(let got):
                if got <= 0 { return .success(false) }
                buffer.didWrite(min(got, buffer.freeSpace))
            }
        }
        return .success(buffer.count >= n)
    }

    /// `readFile` until `into` is full or the file ends; returns bytes read.
    func readFully(_ into: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        var done = 0
        while done < into.count {
            let (at, overflow) = offset.addingReportingOverflow(done)
            if overflow { break }
            switch readFile(UnsafeMutableRawBufferPointer(rebasing: into[done...]), at: at) {
            case .failure(let e): return .failure(e)
            case .success(let got):
                if got <= 0 { return .success(done) }
                done += min(got, into.count - done)
            }
        }
        return .success(done)
    }

    /// pread of `into` at `offset`, opening and closing the file around it
    /// (unless `start` holds it open for a moment).
    func readFile(_ into: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        guard let storage else { return .failure(Errno(EBADF, "read \(path)")) }
        if openFD >= 0 { return storage.read(openFD, into, at: offset) }
        if heldFD >= 0 { return storage.read(heldFD, into, at: offset) }
        let fd: Int32
        switch storage.openForReading(path) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { storage.close(fd) }
        return storage.read(fd, into, at: offset)
    }
}
