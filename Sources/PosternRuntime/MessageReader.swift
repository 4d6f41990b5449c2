import CLibc
import PosternCore

/// Reads one queued message back from the spool for the sender (and for
/// compaction and `postern queue`): its envelope, then its text chunks in
/// order, skipping the records of other messages that were interleaved with it
/// and going on into later segments. Every record comes through a
/// `SegmentCursor`, so every byte handed out has had its CRC checked; one fixed
/// buffer serves any message size.
///
/// It walks the records the recovery scan walked, by the same rule: a segment
/// is read up to its end or its first damage, then the next segment. And it
/// ends the message only when the text it handed out adds up to the size in the
/// commit record and in the index, so damage that appeared after the scan (a
/// record gone bad on the card while the message was queued) fails the message
/// instead of sending it with a piece missing.
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

    let cursor: SegmentCursor
    var id: UInt64 = 0
    /// The text size in the queue's index.
    var expectedSize = 0
    /// Text bytes of the message passed so far (handed out or not).
    var textSeen = 0
    /// The current text record's payload length, and how much of it was used.
    var textLength = 0
    var textUsed = 0
    /// The first damage the walk stepped over, for the failure message.
    var damage: String? = nil

    /// `keepsFileOpen`: for the sender, which reads message after message
    /// (`SegmentCursor.keepsFileOpen`; `releaseFile` lets go of the segment).
    public init(capacity: Int = BufferSizes.spoolRead, keepsFileOpen: Bool = false) {
        cursor = SegmentCursor(capacity: capacity)
        cursor.keepsFileOpen = keepsFileOpen
    }

    /// Closes the segment the reader keeps open, if any.
    public func releaseFile() { cursor.releaseFile() }

    /// Closes the segment the reader keeps open if it is segment `seq`.
    public func releaseFile(ifHolding seq: UInt64) { cursor.releaseFile(ifHolding: seq) }

    /// Positions the reader on `message` and returns its envelope.
    public func open(_ message: QueuedMessage, spool: Spool) -> Result<SpoolCodec.EnvelopeRecord, Failure> {
        id = message.id
        expectedSize = message.size
        textSeen = 0
        textLength = 0
        textUsed = 0
        damage = nil
        let started = cursor.start(storage: spool.storage, path: spool.segmentPath(message.firstSegment),
                                   sequence: message.firstSegment, at: message.firstOffset)
        if case .failure(let p) = started { return .failure(Self.failure(p)) }
        switch cursor.next() {
        case .failure(let p):
            return .failure(Self.failure(p))
        case .success(let r?) where r.id == id && r.kind == .envelope:
            guard let e = SpoolCodec.parseEnvelope(cursor.payload) else {
                return .failure(.corrupt("\(SpoolCodec.segmentName(message.firstSegment)):\(r.offset) bad envelope"))
            }
            return .success(e)
        case .success:
            return .failure(.corrupt("message \(Spool.queueID(id)) does not start with its envelope"))
        }
    }

    /// The unsent part of the current text record.
    public var pendingText: UnsafeRawBufferPointer {
        guard textUsed < textLength else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: cursor.payload[textUsed..<textLength])
    }

    /// Marks `n` bytes of `pendingText` as sent.
    public func advance(_ n: Int) {
        precondition(n >= 0 && n <= textLength - textUsed)
        textUsed += n
    }

    /// Moves to the next text record of the message, or reports its end.
    public func next(spool: Spool) -> Result<Next, Failure> {
        textLength = 0
        textUsed = 0
        while true {
            switch cursor.next() {
            case .failure(.io(let e)):
                return .failure(.io(e))
            case .failure(.damaged(let why)):
                // As the recovery scan does: the rest of this file is not read.
                if damage == nil { damage = why }
                if let f = moveToNextSegment(spool) { return .failure(f) }
            case .success(nil):
                // The clean end of this segment: the message goes on in the next.
                if let f = moveToNextSegment(spool) { return .failure(f) }
            case .success(let r?):
                guard r.id == id else { continue }       // another message's record
                switch r.kind {
                case .commit:
                    guard SpoolCodec.parseCommit(cursor.payload) == textSeen, textSeen == expectedSize else {
                        return .failure(.corrupt(damage ?? "message \(Spool.queueID(id)) has \(textSeen) bytes of text, "
                                                 + "its commit and index say otherwise"))
                    }
                    return .success(.end)
                case .text where r.payloadLength > 0:
                    // Bounded by the commit's size, so no sum can overflow.
                    guard r.payloadLength <= expectedSize - textSeen else {
                        return .failure(.corrupt("message \(Spool.queueID(id)) has more text than its size"))
                    }
                    textSeen += r.payloadLength
                    textLength = r.payloadLength
                    return .success(.text)
                default:
                    continue                             // this message's outcome records
                }
            }
        }
    }

    /// Starts the segment after the current one; a failure when there is none.
    /// A segment whose header is bad is passed over, as recovery does.
    func moveToNextSegment(_ spool: Spool) -> Failure? {
        while true {
            guard let following = spool.segment(after: cursor.sequence) else {
                return .corrupt(damage ?? "message \(Spool.queueID(id)) has no commit record")
            }
            switch cursor.start(storage: spool.storage, path: spool.segmentPath(following),
                                sequence: following, at: SpoolCodec.segmentHeaderLength) {
            case .success: return nil
            case .failure(.io(let e)): return .io(e)
            case .failure(.damaged(let why)):
                if damage == nil { damage = why }
            }
        }
    }

    static func failure(_ p: SegmentCursor.Problem) -> Failure {
        switch p {
        case .io(let e): return .io(e)
        case .damaged(let why): return .corrupt(why)
        }
    }
}
