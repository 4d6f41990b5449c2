import CLibc
import PosternCore

/// Reads one queued message back from the spool for the sender: its envelope,
/// then its text chunks in order, skipping the records of other messages that
/// were interleaved with it. Uses one fixed buffer for any message size.
public final class MessageReader {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case io(Errno)
        case corrupt(String)

        public var description: String {
            switch self {
            case .io(let e): return e.description
            case .corrupt(let why): return "corrupt spool: " + why
            }
        }
    }

    public enum Next: Equatable {
        /// `pendingText` holds more text.
        case text
        /// The commit record was reached: the text is complete.
        case end
    }

    let buffer: ByteBuffer
    /// The storage of the spool being read, set by `open`.
    var storage: (any SpoolStorage)? = nil
    var fd: Int32 = -1
    var segment: UInt64 = 0
    /// File offset of `buffer.start`.
    var fileOffset = 0
    var id: UInt64 = 0
    /// Remaining payload of the current text record, inside the buffer.
    var textRemaining = 0
    /// Bytes after the text payload (the CRC) to skip once the text is used.
    var trailerRemaining = 0

    public init(capacity: Int = BufferSizes.spoolRead) {
        buffer = ByteBuffer(capacity: capacity)
    }

    deinit { closeFile() }

    func closeFile() {
        if fd >= 0 { storage?.close(fd); fd = -1 }
    }

    /// Positions the reader on `message` and returns its envelope.
    public func open(_ message: QueuedMessage, spool: Spool) -> Result<SpoolCodec.EnvelopeRecord, Failure> {
        closeFile()
        storage = spool.storage
        buffer.clear()
        textRemaining = 0
        trailerRemaining = 0
        id = message.id
        segment = message.firstSegment
        fileOffset = message.firstOffset
        switch spool.storage.openForReading(spool.segmentPath(segment)) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(.io(e))
        }
        while true {
            switch frame(spool: spool) {
            case .failure(let f): return .failure(f)
            case .success(let fr):
                guard fr.id == id, fr.kind == .envelope else {
                    return .failure(.corrupt("message \(Spool.queueID(id)) does not start with its envelope"))
                }
                if fr.length > buffer.capacity {
                    return readBigEnvelope(fr)
                }
                let p = payload(fr)
                guard let e = SpoolCodec.parseEnvelope(p) else { return .failure(.corrupt("bad envelope")) }
                buffer.consume(fr.length)
                fileOffset += fr.length
                return .success(e)
            }
        }
    }

    func readBigEnvelope(_ fr: SpoolCodec.RecordFrame) -> Result<SpoolCodec.EnvelopeRecord, Failure> {
        var big = [UInt8](repeating: 0, count: fr.length)
        guard case .success(let got) = big.withUnsafeMutableBytes({ storage!.read(fd, $0, at: fileOffset) }),
              got == fr.length else { return .failure(.corrupt("short envelope")) }
        let e: SpoolCodec.EnvelopeRecord? = big.withUnsafeBytes {
            SpoolCodec.parseEnvelope(UnsafeRawBufferPointer(rebasing: $0[fr.payloadOffset..<(fr.payloadOffset + fr.payloadLength)]))
        }
        guard let env = e else { return .failure(.corrupt("bad envelope")) }
        buffer.clear()
        fileOffset += fr.length
        return .success(env)
    }

    /// The unsent part of the current text record.
    public var pendingText: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer.readable[0..<textRemaining])
    }

    /// Marks `n` bytes of `pendingText` as sent.
    public func advance(_ n: Int) {
        precondition(n <= textRemaining)
        buffer.consume(n)
        fileOffset += n
        textRemaining -= n
        if textRemaining == 0 && trailerRemaining > 0 {
            buffer.consume(trailerRemaining)
            fileOffset += trailerRemaining
            trailerRemaining = 0
        }
    }

    /// Moves to the next text record of the message, or reports its end.
    public func next(spool: Spool) -> Result<Next, Failure> {
        precondition(textRemaining == 0)
        while true {
            switch frame(spool: spool) {
            case .failure(let f): return .failure(f)
            case .success(let fr):
                if fr.id == id && fr.kind == .commit {
                    closeFile()
                    return .success(.end)
                }
                if fr.id == id && fr.kind == .text {
                    buffer.consume(fr.payloadOffset)
                    fileOffset += fr.payloadOffset
                    textRemaining = fr.payloadLength
                    trailerRemaining = fr.length - fr.payloadOffset - fr.payloadLength
                    if textRemaining == 0 { advance(0); continue }
                    return .success(.text)
                }
                // Another message's record, or this one's outcome records.
                skip(fr.length)
            }
        }
    }

    func skip(_ n: Int) {
        if n <= buffer.count {
            buffer.consume(n)
        } else {
            buffer.clear()
        }
        fileOffset += n
    }

    func payload(_ fr: SpoolCodec.RecordFrame) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer.readable[fr.payloadOffset..<(fr.payloadOffset + fr.payloadLength)])
    }

    /// The frame of the record at `fileOffset`, reading more of the file (and
    /// moving to the next segment at a segment's end) as needed. A record larger
    /// than the buffer is returned with only its header checked.
    func frame(spool: Spool) -> Result<SpoolCodec.RecordFrame, Failure> {
        while true {
            switch SpoolCodec.parseRecord(buffer.readable) {
            case .record(let fr):
                return .success(fr)
            case .corrupt(let why):
                return .failure(.corrupt("\(SpoolCodec.segmentName(segment)) at \(fileOffset): \(why)"))
            case .needMore(let total):
                if total > buffer.capacity && buffer.count >= SpoolCodec.recordHeaderLength {
                    let b = buffer.readable
                    let n = Int(SpoolCodec.getLE(b, 0, 4))
                    guard let kind = SpoolCodec.Kind(rawValue: b[4]) else { return .failure(.corrupt("bad kind")) }
                    return .success(SpoolCodec.RecordFrame(kind: kind, id: SpoolCodec.getLE(b, 8, 8),
                                                           payloadOffset: SpoolCodec.recordHeaderLength,
                                                           payloadLength: n, length: total))
                }
                buffer.compact()
                switch spool.storage.read(fd, buffer.writable, at: fileOffset + buffer.count) {
                case .failure(let e): return .failure(.io(e))
                case .success(let got):
                    if got > 0 {
                        buffer.didWrite(got)
                        continue
                    }
                    // End of this segment's data.
                    if buffer.count > 0 {
                        return .failure(.corrupt("\(SpoolCodec.segmentName(segment)) ends inside a record"))
                    }
                    guard let nextSegment = spool.segment(after: segment) else {
                        return .failure(.corrupt("message \(Spool.queueID(id)) has no commit record"))
                    }
                    closeFile()
                    switch spool.storage.openForReading(spool.segmentPath(nextSegment)) {
                    case .success(let f): fd = f
                    case .failure(let e): return .failure(.io(e))
                    }
                    segment = nextSegment
                    fileOffset = SpoolCodec.segmentHeaderLength
                }
            }
        }
    }
}
