// # The spool format, version 1
//
// This comment is the one place the on-disk format is written down. Change it
// here, bump `SpoolCodec.version`, and teach the recovery scan the old version.
//
// ## Files
// The spool directory holds segment files named by a 16-digit lower-case hex
// sequence number, `0000000000000001.seg`, `…02.seg`, …, and a `lock` file. The
// daemon appends to one active segment; when it passes `[spool] segment_size` a new
// one is started. Nothing is ever rewritten in place, and no file is created,
// renamed or deleted per message (DESIGN.md principle 5).
//
// ## Segment header (16 bytes, little-endian)
//     0  4  magic "PSTN"
//     4  2  format version (1)
//     6  2  header length (16)
//     8  8  segment sequence number
//
// ## Record (20 bytes + payload, little-endian)
//     0  4  payload length N (at most `maxPayload`)
//     4  1  kind (below)
//     5  3  zero
//     8  8  message id
//    16  N  payload
//  16+N  4  CRC-32C (Castagnoli) of bytes 0 ..< 16+N
//
// Records of concurrent transactions interleave; the message id ties them
// together. Ids increase in order of arrival and are never reused.
//
// ## Kinds
//  1 envelope   i64 arrival (wall-clock seconds), u8 flags (bit 0: 8BITMIME;
//               bit 1: a relocated copy, see Compaction; bit 2: the wall clock
//               was synchronised at arrival, so the arrival time can be trusted
//               for the message's age), u16 len + reverse-path bytes, u16 count,
//               then count × (u16 len + recipient bytes). Written when DATA is
//               accepted.
//  2 text       a chunk of message text: unstuffed, CRLF line endings, the
//               `Received:` header first. Chunks of a message follow its envelope
//               in order, possibly in later segments.
//  3 commit     u64 total text bytes. The message is acknowledged once this record
//               is covered by a completed fdatasync; only then is 250 sent.
//  4 abort      empty. The transaction was abandoned (client gone, over-size).
//  5 recipient  u16 recipient index, u8 outcome (1 delivered, 2 failed). Written
//               when the upstream answers for that recipient for good.
//
// ## Recovery
// At start every segment is scanned in sequence order. A record that is short or
// fails its CRC ends the scan of its file: in the newest segment that is the torn
// tail of a write the crash interrupted, which was never acknowledged. A message is
// queued when its envelope and commit were read, its text records add up to the
// size in the commit, and it has a recipient with no recipient record; envelopes
// without a commit are dropped.
//
// ## Deletion
// Only the oldest segment is ever deleted — when it is not the active one, no
// queued message or open transaction has a record in it — and each deletion is
// made durable (directory fsync) before the next: a newer segment may hold the
// recipient records that finished the messages of older ones.
//
// ## Compaction
// A message stuck in an old segment would keep every newer segment too. When the
// spool holds more than twice its live text plus two segments, the messages
// holding the oldest segment are copied forward: the same id, an envelope with
// the relocated flag, its text, a commit, then a recipient record for each
// recipient already finished. Recovery takes a copy's commit as the message's new
// place and keeps the outcomes already read; an uncommitted copy is dropped like
// any transaction. The old segment goes once the copy is durable.

/// Encodes and decodes spool records. Pure; the runtime does the file I/O.
public enum SpoolCodec {
    public static let version: UInt16 = 1
    public static let magic: [UInt8] = [0x50, 0x53, 0x54, 0x4E] // "PSTN"
    public static let segmentHeaderLength = 16
    public static let recordHeaderLength = 16
    public static let recordOverhead = 20
    /// Larger payloads are treated as corruption (an envelope of 10,000 recipients
    /// of 256 bytes is well under this).
    public static let maxPayload = 4 * 1024 * 1024

    public enum Kind: UInt8, Sendable {
        case envelope = 1
        case text = 2
        case commit = 3
        case abort = 4
        case recipient = 5
    }

    public enum Outcome: UInt8, Sendable {
        case delivered = 1
        case failed = 2
    }

    public struct EnvelopeRecord: Equatable, Sendable {
        public var arrival: Int64
        public var eightBit: Bool
        /// A copy written by compaction (flags bit 1).
        public var relocated: Bool
        /// The wall clock was synchronised at arrival (flags bit 2).
        public var arrivalSynchronised: Bool
        public var from: [UInt8]
        public var recipients: [[UInt8]]

        public init(arrival: Int64, eightBit: Bool, relocated: Bool = false, arrivalSynchronised: Bool = false,
                    from: [UInt8], recipients: [[UInt8]]) {
            self.arrival = arrival
            self.eightBit = eightBit
            self.relocated = relocated
            self.arrivalSynchronised = arrivalSynchronised
            self.from = from
            self.recipients = recipients
        }
    }

    // MARK: encoding

    public static func segmentHeader(sequence: UInt64) -> [UInt8] {
        var out = magic
        putLE(&out, UInt64(version), 2)
        putLE(&out, UInt64(segmentHeaderLength), 2)
        putLE(&out, sequence, 8)
        return out
    }

    /// The 16-byte record header.
    public static func recordHeader(kind: Kind, id: UInt64, payloadLength: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(recordHeaderLength)
        putLE(&out, UInt64(payloadLength), 4)
        out.append(kind.rawValue)
        out.append(0); out.append(0); out.append(0)
        putLE(&out, id, 8)
        return out
    }

    /// The 4-byte trailer: CRC-32C of header and payload.
    public static func trailer(header: [UInt8], payload: UnsafeRawBufferPointer) -> [UInt8] {
        var crc = CRC32C()
        header.withUnsafeBytes { crc.update($0) }
        crc.update(payload)
        var out: [UInt8] = []
        putLE(&out, UInt64(crc.value), 4)
        return out
    }

    /// A whole record with a small payload, as one array.
    public static func record(kind: Kind, id: UInt64, payload: [UInt8]) -> [UInt8] {
        let header = recordHeader(kind: kind, id: id, payloadLength: payload.count)
        let tail = payload.withUnsafeBytes { trailer(header: header, payload: $0) }
        return header + payload + tail
    }

    public static func envelopePayload(_ e: EnvelopeRecord) -> [UInt8] {
        var out: [UInt8] = []
        putLE(&out, UInt64(bitPattern: e.arrival), 8)
        out.append((e.eightBit ? 1 : 0) | (e.relocated ? 2 : 0) | (e.arrivalSynchronised ? 4 : 0))
        putLE(&out, UInt64(e.from.count), 2)
        out += e.from
        putLE(&out, UInt64(e.recipients.count), 2)
        for r in e.recipients {
            putLE(&out, UInt64(r.count), 2)
            out += r
        }
        return out
    }

    public static func commitPayload(size: Int) -> [UInt8] {
        var out: [UInt8] = []
        putLE(&out, UInt64(size), 8)
        return out
    }

    public static func recipientPayload(index: Int, outcome: Outcome) -> [UInt8] {
        var out: [UInt8] = []
        putLE(&out, UInt64(index), 2)
        out.append(outcome.rawValue)
        return out
    }

    static func putLE(_ out: inout [UInt8], _ v: UInt64, _ bytes: Int) {
        for i in 0..<bytes { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    // MARK: decoding

    public static func getLE(_ b: UnsafeRawBufferPointer, _ at: Int, _ bytes: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<bytes { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }

    /// Checks a segment header; returns its sequence number.
    public static func parseSegmentHeader(_ b: UnsafeRawBufferPointer) -> UInt64? {
        guard b.count >= segmentHeaderLength,
              b[0] == magic[0], b[1] == magic[1], b[2] == magic[2], b[3] == magic[3],
              getLE(b, 4, 2) == UInt64(version) else { return nil }
        return getLE(b, 8, 8)
    }

    public struct RecordFrame: Equatable, Sendable {
        public var kind: Kind
        public var id: UInt64
        /// Payload position relative to the start of the record.
        public var payloadOffset: Int
        public var payloadLength: Int
        /// Bytes the whole record occupies.
        public var length: Int

        public init(kind: Kind, id: UInt64, payloadOffset: Int, payloadLength: Int, length: Int) {
            self.kind = kind
            self.id = id
            self.payloadOffset = payloadOffset
            self.payloadLength = payloadLength
            self.length = length
        }
    }

    public enum Parse: Equatable, Sendable {
        case record(RecordFrame)
        /// The record is not complete in the bytes given; at least `total` bytes
        /// from its start are needed.
        case needMore(total: Int)
        /// Not a valid record: bad length, unknown kind or CRC mismatch.
        case corrupt(String)
    }

    /// Parses the record starting at `b[0]`, verifying its CRC.
    public static func parseRecord(_ b: UnsafeRawBufferPointer) -> Parse {
        guard b.count >= recordHeaderLength else { return .needMore(total: recordHeaderLength) }
        let n = Int(getLE(b, 0, 4))
        guard n <= maxPayload else { return .corrupt("payload length \(n)") }
        guard let kind = Kind(rawValue: b[4]), b[5] == 0, b[6] == 0, b[7] == 0 else {
            return .corrupt("bad record kind \(b[4])")
        }
        let total = recordOverhead + n
        guard b.count >= total else { return .needMore(total: total) }
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: b[0..<(recordHeaderLength + n)]))
        guard UInt32(getLE(b, recordHeaderLength + n, 4)) == crc.value else { return .corrupt("CRC mismatch") }
        return .record(RecordFrame(kind: kind, id: getLE(b, 8, 8), payloadOffset: recordHeaderLength,
                                   payloadLength: n, length: total))
    }

    public static func parseEnvelope(_ p: UnsafeRawBufferPointer) -> EnvelopeRecord? {
        var at = 0
        func take(_ n: Int) -> Int? {
            guard at + n <= p.count else { return nil }
            defer { at += n }
            return at
        }
        guard let a = take(8), let f = take(1), let fl = take(2) else { return nil }
        let arrival = Int64(bitPattern: getLE(p, a, 8))
        let flags = p[f]
        let fromLength = Int(getLE(p, fl, 2))
        guard let fp = take(fromLength) else { return nil }
        let from = Array(p[fp..<(fp + fromLength)])
        guard let c = take(2) else { return nil }
        let count = Int(getLE(p, c, 2))
        var rcpts: [[UInt8]] = []
        rcpts.reserveCapacity(count)
        for _ in 0..<count {
            guard let l = take(2) else { return nil }
            let len = Int(getLE(p, l, 2))
            guard let rp = take(len) else { return nil }
            rcpts.append(Array(p[rp..<(rp + len)]))
        }
        guard at == p.count else { return nil }
        return EnvelopeRecord(arrival: arrival, eightBit: flags & 1 != 0, relocated: flags & 2 != 0,
                              arrivalSynchronised: flags & 4 != 0, from: from, recipients: rcpts)
    }

    public static func parseCommit(_ p: UnsafeRawBufferPointer) -> Int? {
        p.count == 8 ? Int(getLE(p, 0, 8)) : nil
    }

    public static func parseRecipient(_ p: UnsafeRawBufferPointer) -> (index: Int, outcome: Outcome)? {
        guard p.count == 3, let o = Outcome(rawValue: p[2]) else { return nil }
        return (Int(getLE(p, 0, 2)), o)
    }

    /// "0000000000000001.seg"
    public static func segmentName(_ sequence: UInt64) -> String { ASCII.hex(sequence, width: 16) + ".seg" }

    /// The sequence number of a segment file name, nil for other names.
    public static func segmentSequence(fileName: String) -> UInt64? {
        let b = Array(fileName.utf8)
        guard b.count == 20, b[16...] == Array(".seg".utf8)[...] else { return nil }
        var v: UInt64 = 0
        for c in b[0..<16] {
            switch c {
            case 48...57: v = v << 4 | UInt64(c - 48)
            case 97...102: v = v << 4 | UInt64(c - 87)
            default: return nil // the format names segments in lower-case hex only
            }
        }
        return v
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI and ext4 use:
/// better error detection than CRC-32 for the same cost.
public struct CRC32C: Sendable {
    public private(set) var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    public var value: UInt32 { ~state }

    static let table: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        return t
    }()

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var c = state
        Self.table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        }
        state = c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c = CRC32C()
        bytes.withUnsafeBytes { c.update($0) }
        return c.value
    }
}
