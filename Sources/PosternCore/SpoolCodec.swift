// # The spool format, version 2
//
// This comment is the one place the on-disk format is written down. Change it
// here, bump `SpoolCodec.version`, and teach the recovery scan the old version.
//
// ## Files
// The spool directory holds segment files named by a 16-digit lower-case hex
// sequence number, `0000000000000001.seg`, `…02.seg`, …, and a `lock` file. The
// daemon appends to one active segment; when it passes `[spool] segment_size` a new
// one is started. No record is ever rewritten, and no file is created, renamed or
// deleted per message (DESIGN.md principle 5).
//
// ## Zero-filled room
// After its last record a segment may hold zero bytes: room the writer filled
// ahead (at most `maxZeroFill`, 64 KiB, past the record that made it) so that
// the next records overwrite blocks the file already has. An fdatasync of such
// a write changes neither the file's size nor its blocks, so the file system
// writes the data alone: no inode, no journal commit (issue 11). A record
// header of sixteen zero bytes (kind 0 is no kind) marks the end of the records;
// everything after it must be zero as well, and no more than `maxZeroFill`
// bytes of it, or the scan reports the file as damaged there. The format's
// version is unchanged by this: a reader that predates it ends its scan at the
// same place and reports a torn tail.
//
// ## Segment header (16 bytes, little-endian)
//     0  4  magic "PSTN"
//     4  2  format version (2; 1 is read too, see Versions)
//     6  2  header length (16)
//     8  8  segment sequence number
//
// ## Record (20 bytes + payload, little-endian)
//     0  4  payload length N (at most `maxPayload`; for text at most `maxTextPayload`)
//     4  1  kind (below)
//     5  3  zero
//     8  8  message id
//    16  N  payload
//  16+N  4  CRC-32C (Castagnoli) of bytes 0 ..< 16+N
//
// Records of concurrent transactions interleave; the message id ties them
// together. Ids increase in order of arrival and are never reused; they start
// from the arrival time in seconds shifted left by 20 bits, so every id a
// writer makes is far below `maxID` (2^62), and a larger one is damage.
//
// ## Kinds
//  1 envelope   i64 arrival (wall-clock seconds), u8 flags (bit 0: 8BITMIME;
//               bit 1: a relocated copy, see Compaction; bit 2: the wall clock
//               was synchronised at arrival, so the arrival time can be trusted
//               for the message's age; bit 3: a failure notice Postern wrote,
//               never itself the subject of one; bit 4: the ESMTP parameters
//               below follow; bits 5–7 zero), u16 len + reverse-path bytes, u16 count,
//               then count × (u16 len + recipient bytes). Written when DATA is
//               accepted.
//               With flags bit 4 (version 2), the client's SMTPUTF8 (RFC 6531)
//               and DSN (RFC 3461) parameters, as received, follow:
//                 u8  bit 0: SMTPUTF8; bits 1–2: RET (0 none, 1 FULL, 2 HDRS);
//                     bits 3–7 zero
//                 u16 len + ENVID xtext (0: none; at most 300 bytes)
//                 count × (u8 NOTIFY: 0 none, else bit 0 NEVER, bit 1 SUCCESS,
//                     bit 2 FAILURE, bit 3 DELAY, NEVER alone;
//                     u16 len + ORCPT value (0: none; at most 500 bytes))
//               The reader checks every value as the receiver did (they go
//               upstream as command text), the addresses with the UTF-8 syntax
//               only when SMTPUTF8 is set. An envelope without parameters
//               leaves bit 4 clear and is written exactly as in version 1.
//  2 text       a chunk of message text: unstuffed, CRLF line endings, the
//               `Received:` header first. Chunks of a message follow its envelope
//               in order, possibly in later segments. A chunk is at most
//               `maxTextPayload` (65,516) bytes, so a text record fits a 64 KiB
//               read buffer whole and a message of any size streams through it.
//               (Every version-1 writer kept to this: the receiver wrote 16 KiB
//               chunks, and since issue 11 writes chunks of up to this size;
//               compaction copies records it read whole into 64 KiB. Stating
//               it changed no file, so the version stays 1.)
//  3 commit     u64 total text bytes. The message is acknowledged once this record
//               is covered by a completed fdatasync; only then is 250 sent.
//  4 abort      empty. The transaction was abandoned (client gone, over-size).
//  5 recipient  u16 recipient index, u8 outcome (1 delivered, 2 failed). Written
//               when the upstream answers for that recipient for good.
//
// ## Versions
// Version 2 added flags bit 4 and the parameters it announces; nothing else
// changed. A version-1 segment (no writer set bit 4 then) is read by the same
// rules, so a spool written before the change is read as it is, its messages
// without parameters. A version-1 daemon refuses version-2 segments.
//
// ## Limits a reader enforces
// Segment files are at most `maxSegmentLength` (2^31 - 1) bytes, so every offset
// fits a 32-bit `Int` (armv7 boards) and the queue's 32-bit index; the writer
// starts a new segment before a record would cross it. Sequence numbers go up to
// `maxSequence` (2^32 - 1), the index's width: a file named beyond it is not
// read. No writer comes near either limit (a segment is at most 1 GiB plus one
// record, and 2^32 segments of 4 MiB are 16 PiB), so a value beyond one is
// damage, or a file someone else put there.
//
// ## Recovery
// At start every segment is scanned in sequence order. A record that is short or
// fails its CRC ends the scan of its file: in the newest segment that is the torn
// tail of a write the crash interrupted, which was never acknowledged. A record
// whose CRC is right but whose contents are impossible (a payload that does not
// parse, an id beyond `maxID`, a recipient index beyond the envelope's count, a
// message spanning segments that are not there) is skipped and logged, and the
// scan goes on: anyone who can write the spool directory can write a valid CRC,
// so the checksum guards against torn writes and decay, not against crafted
// files. A message is queued when its envelope and commit were read, its text
// records add up to the size in the commit, and it has a recipient with no
// recipient record; envelopes without a commit are dropped. Sending a message
// reads the same records by the same rules (one reader, `SegmentCursor`), and
// the text must add up to the commit's size again.
//
// ## Deletion
// Only the oldest segment is ever deleted — when no queued message or open
// transaction has a record in it — and each deletion is made durable (directory
// fsync) before the next: a newer segment may hold the recipient records that
// finished the messages of older ones. The active segment (the one being
// written) goes the same way once the spool is short of space (a write failed
// with ENOSPC, or `max_size` is reached) and nothing in any segment is live: a
// new segment is started first and the old ones deleted oldest first; when the
// disk is so full that even the new segment's header cannot be written, the
// active segment, by then the only one, is deleted first and the new one created
// after it. A crash in between leaves finished segments, a new empty one, or
// none: nothing live was in any of them.
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
    public static let version: UInt16 = 2
    /// The oldest format version still read (see "Versions" above).
    public static let oldestReadableVersion: UInt16 = 1
    public static let magic: [UInt8] = [0x50, 0x53, 0x54, 0x4E] // "PSTN"
    public static let segmentHeaderLength = 16
    public static let recordHeaderLength = 16
    public static let recordOverhead = 20
    /// Larger payloads are treated as corruption (an envelope of 10,000 recipients
    /// of 256 bytes is well under this).
    public static let maxPayload = 4 * 1024 * 1024
    /// The largest text chunk: a text record then fits a 64 KiB read buffer whole
    /// (`BufferSizes.spoolRead`), so reading a message back needs no more memory
    /// than that whatever its size. Longer text is written as several records.
    public static let maxTextPayload = 64 * 1024 - recordOverhead
    /// The longest zero-filled room after a segment's records (see "Zero-filled
    /// room" above): what a writer fills ahead, and as far as a reader checks.
    public static let maxZeroFill = 64 * 1024
    /// Ids at or above this are damage (see "Record" above).
    public static let maxID: UInt64 = 1 << 62
    /// The largest segment sequence number the spool uses: the queue's index keeps
    /// sequences in 32 bits.
    public static let maxSequence = UInt64(UInt32.max)
    /// The longest a segment file may be: offsets fit a 32-bit `Int`.
    public static let maxSegmentLength = Int(Int32.max)

    /// The largest payload a record of `kind` may have.
    public static func payloadLimit(_ kind: Kind) -> Int {
        kind == .text ? maxTextPayload : maxPayload
    }

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
        /// A delivery status notification Postern made (flags bit 3): when it
        /// fails, it is logged and dropped, never answered with another.
        public var notice: Bool
        public var from: [UInt8]
        public var recipients: [[UInt8]]
        /// The client's MAIL said SMTPUTF8 (RFC 6531 §3.4).
        public var smtputf8 = false
        /// RET and ENVID of MAIL (RFC 3461 §4.3, §4.4), as received.
        public var ret: DSNReturn? = nil
        public var envelopeID: [UInt8]? = nil
        /// NOTIFY and ORCPT per recipient (RFC 3461 §4.1, §4.2), parallel to
        /// `recipients`; empty when no recipient had any.
        public var recipientParameters: [RecipientParameters] = []

        /// Whether the parameters section (flags bit 4) is written.
        public var hasParameters: Bool {
            smtputf8 || ret != nil || envelopeID != nil || recipientParameters.contains { !$0.isEmpty }
        }

        public init(arrival: Int64, eightBit: Bool, relocated: Bool = false, arrivalSynchronised: Bool = false,
                    notice: Bool = false, from: [UInt8], recipients: [[UInt8]]) {
            self.notice = notice
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

    /// Whether `e` can be written: every length and the count fit their u16
    /// fields, and the payload fits `maxPayload`. Writers check this first.
    public static func canEncode(_ e: EnvelopeRecord) -> Bool {
        guard e.from.count <= 0xFFFF, e.recipients.count <= 0xFFFF else { return false }
        var total = 8 + 1 + 2 + e.from.count + 2
        for r in e.recipients {
            guard r.count <= 0xFFFF else { return false }
            total += 2 + r.count
            if total > maxPayload { return false }
        }
        if e.hasParameters {
            guard e.recipientParameters.isEmpty || e.recipientParameters.count == e.recipients.count,
                  (e.envelopeID?.count ?? 0) <= DSNParameters.maxEnvelopeIDRaw else { return false }
            total += 1 + 2 + (e.envelopeID?.count ?? 0) + 3 * e.recipients.count
            for p in e.recipientParameters {
                guard (p.orcpt?.count ?? 0) <= DSNParameters.maxOriginalRecipient,
                      p.notify.map({ $0.isValid }) ?? true else { return false }
                total += p.orcpt?.count ?? 0
            }
        }
        return total <= maxPayload
    }

    /// The envelope payload. `canEncode(e)` must hold: a length that does not fit
    /// its field would be written wrapped.
    public static func envelopePayload(_ e: EnvelopeRecord) -> [UInt8] {
        precondition(canEncode(e), "envelope does not fit the record format")
        var out: [UInt8] = []
        putLE(&out, UInt64(bitPattern: e.arrival), 8)
        out.append((e.eightBit ? 1 : 0) | (e.relocated ? 2 : 0) | (e.arrivalSynchronised ? 4 : 0) | (e.notice ? 8 : 0)
                   | (e.hasParameters ? 16 : 0))
        putLE(&out, UInt64(e.from.count), 2)
        out += e.from
        putLE(&out, UInt64(e.recipients.count), 2)
        for r in e.recipients {
            putLE(&out, UInt64(r.count), 2)
            out += r
        }
        guard e.hasParameters else { return out }
        out.append((e.smtputf8 ? 1 : 0) | ((e.ret?.rawValue ?? 0) << 1))
        let envid = e.envelopeID ?? []
        putLE(&out, UInt64(envid.count), 2)
        out += envid
        for i in e.recipients.indices {
            let p = i < e.recipientParameters.count ? e.recipientParameters[i] : .none
            out.append(p.notify?.rawValue ?? 0)
            let orcpt = p.orcpt ?? []
            putLE(&out, UInt64(orcpt.count), 2)
            out += orcpt
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
        // One append of the value's first `bytes` bytes, not one per byte: the
        // size build calls `append` out of line, and every record has four of
        // these.
        var le = v.littleEndian
        withUnsafeBytes(of: &le) { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0 ..< max(0, min(bytes, 8))])) }
    }

    // MARK: decoding

    /// The little-endian number of `bytes` (at most 8) bytes at `at`; nil when
    /// they are not all inside `b`.
    public static func getLE(_ b: UnsafeRawBufferPointer, _ at: Int, _ bytes: Int) -> UInt64? {
        guard at >= 0, bytes >= 0, bytes <= 8, at <= b.count, bytes <= b.count - at else { return nil }
        // The record header's fields in one load each (checked in range above);
        // a byte loop called out of line per byte cost 2% of the daemon's
        // instructions relaying small messages.
        switch bytes {
        case 8: return UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
        case 4: return UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        case 2: return UInt64(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
        default:
            var v: UInt64 = 0
            for i in 0..<bytes { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
            return v
        }
    }

    /// Checks a segment header; returns its sequence number.
    public static func parseSegmentHeader(_ b: UnsafeRawBufferPointer) -> UInt64? {
        guard b.count >= segmentHeaderLength,
              b[0] == magic[0], b[1] == magic[1], b[2] == magic[2], b[3] == magic[3],
              let v = getLE(b, 4, 2), v >= UInt64(oldestReadableVersion), v <= UInt64(version) else { return nil }
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

    /// The bytes are all zero: where a record header holds only zeros, the
    /// records have ended and the zero-filled room begins (see "Zero-filled
    /// room" above).
    public static func isZeroFill(_ b: UnsafeRawBufferPointer) -> Bool {
        for byte in b where byte != 0 { return false }
        return true
    }

    /// Parses the record starting at `b[0]`, verifying its CRC. The header alone
    /// decides `needMore` (so a reader learns a record's size from its first 16
    /// bytes); nothing is returned as a record before its CRC matched.
    public static func parseRecord(_ b: UnsafeRawBufferPointer) -> Parse {
        guard b.count >= recordHeaderLength, let n64 = getLE(b, 0, 4), let id = getLE(b, 8, 8) else {
            return .needMore(total: recordHeaderLength)
        }
        guard let kind = Kind(rawValue: b[4]), b[5] == 0, b[6] == 0, b[7] == 0 else {
            return .corrupt("bad record kind \(b[4])")
        }
        // Compared as u64 before any conversion: on a 32-bit board `Int` of a
        // length of 2^31 or more would trap.
        guard n64 <= UInt64(payloadLimit(kind)) else { return .corrupt("payload length \(n64)") }
        let n = Int(n64)
        let total = recordOverhead + n
        guard b.count >= total else { return .needMore(total: total) }
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: b[0..<(recordHeaderLength + n)]))
        guard let stored = getLE(b, recordHeaderLength + n, 4), stored == UInt64(crc.value) else {
            return .corrupt("CRC mismatch")
        }
        return .record(RecordFrame(kind: kind, id: id, payloadOffset: recordHeaderLength,
                                   payloadLength: n, length: total))
    }

    public static func parseEnvelope(_ p: UnsafeRawBufferPointer) -> EnvelopeRecord? {
        var at = 0
        /// The position of the next `n` bytes, if there are that many left.
        func take(_ n: Int) -> Int? {
            guard n >= 0, n <= p.count - at else { return nil }
            defer { at += n }
            return at
        }
        /// The next u16, as an `Int` (it fits on any platform).
        func u16() -> Int? {
            guard let i = take(2), let v = getLE(p, i, 2) else { return nil }
            return Int(v)
        }
        guard let a = take(8), let arrivalBits = getLE(p, a, 8), let f = take(1),
              let fromLength = u16(), let fp = take(fromLength) else { return nil }
        let arrival = Int64(bitPattern: arrivalBits)
        let flags = p[f]
        let from = Array(p[fp..<(fp + fromLength)])
        guard let count = u16() else { return nil }
        var rcpts: [[UInt8]] = []
        // Each recipient takes at least its two length bytes: a count the payload
        // cannot hold reserves no more than the payload could.
        rcpts.reserveCapacity(min(count, (p.count - at) / 2))
        for _ in 0..<count {
            guard let len = u16(), let rp = take(len) else { return nil }
            rcpts.append(Array(p[rp..<(rp + len)]))
        }
        var e = EnvelopeRecord(arrival: arrival, eightBit: flags & 1 != 0, relocated: flags & 2 != 0,
                               arrivalSynchronised: flags & 4 != 0, notice: flags & 8 != 0, from: from, recipients: rcpts)
        guard flags & 0xE0 == 0 else { return nil }
        if flags & 16 != 0 {
            // The parameters section: each value checked as the receiver checks
            // it, since it goes upstream as command text.
            guard let x = take(1) else { return nil }
            let extra = p[x]
            guard extra & 0xF8 == 0 else { return nil }
            e.smtputf8 = extra & 1 != 0
            switch (extra >> 1) & 3 {
            case 0: e.ret = nil
            case 1: e.ret = .full
            case 2: e.ret = .headers
            default: return nil
            }
            guard let envidLength = u16(), envidLength <= DSNParameters.maxEnvelopeIDRaw,
                  let ep = take(envidLength) else { return nil }
            if envidLength > 0 {
                guard let envid = DSNParameters.envelopeID(p[ep..<(ep + envidLength)]) else { return nil }
                e.envelopeID = envid
            }
            var params: [RecipientParameters] = []
            params.reserveCapacity(min(count, (p.count - at) / 3))
            for _ in 0..<count {
                guard let n = take(1), let orcptLength = u16(), orcptLength <= DSNParameters.maxOriginalRecipient,
                      let op = take(orcptLength) else { return nil }
                var r = RecipientParameters()
                if p[n] != 0 {
                    let notify = DSNNotify(rawValue: p[n])
                    guard notify.isValid else { return nil }
                    r.notify = notify
                }
                if orcptLength > 0 {
                    guard let o = DSNParameters.originalRecipient(p[op..<(op + orcptLength)], utf8: e.smtputf8) else { return nil }
                    r.orcpt = o
                }
                params.append(r)
            }
            if params.contains(where: { !$0.isEmpty }) { e.recipientParameters = params }
            // A section that says nothing is not what a writer makes.
            guard e.hasParameters else { return nil }
        }
        guard at == p.count else { return nil }
        return e
    }

    /// The committed text size; nil when the payload is not 8 bytes or the size
    /// does not fit an `Int` (2^31 - 1 on a 32-bit board).
    public static func parseCommit(_ p: UnsafeRawBufferPointer) -> Int? {
        guard p.count == 8, let v = getLE(p, 0, 8) else { return nil }
        return Int(exactly: v)
    }

    public static func parseRecipient(_ p: UnsafeRawBufferPointer) -> (index: Int, outcome: Outcome)? {
        guard p.count == 3, let o = Outcome(rawValue: p[2]), let i = getLE(p, 0, 2) else { return nil }
        return (Int(i), o)
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
///
/// Every byte of a message passes through it twice (the record trailer when
/// written, `parseRecord` when read back), so it is the daemon's hottest loop
/// after the text codecs. Where the CPU has CRC-32C instructions (SSE4.2 on
/// x86_64, the ARMv8 CRC32 extension on aarch64 and on ARMv8 cores running
/// armv7) the runtime installs them as `accelerated` at start; PosternCore
/// stays free of C, and everything else (tests, fuzz targets, CPUs without the
/// instructions) uses the table-driven version here, eight bytes per step
/// ("slicing-by-8", Kounavis and Berry, Intel 2005). Both give the same value
/// for every input.
public struct CRC32C: Sendable {
    public private(set) var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    public var value: UInt32 { ~state }

    /// The hardware update, when the CPU has one: takes the raw register
    /// (`state`), a pointer and a length, returns the new register. Set once at
    /// start, before any spool is read or written (`installCRCAcceleration` in
    /// PosternRuntime), and never changed while the daemon runs.
    nonisolated(unsafe) public static var accelerated: (@convention(c) (UInt32, UnsafeRawPointer?, Int) -> UInt32)? = nil

    /// Eight 256-entry tables, one after the other (8 KiB): table k maps a byte
    /// to its CRC followed by k zero bytes, so eight bytes take eight lookups
    /// and one step. Built on first use only: with `accelerated` set it never is.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if let hardware = Self.accelerated {
            state = hardware(state, bytes.baseAddress, bytes.count)
        } else {
            state = Self.software(state, bytes)
        }
    }

    /// The table-driven update of the raw register `crc` over `bytes`: single
    /// bytes up to an 8-byte boundary of the address, eight at a time, then the
    /// rest one by one. The words are read little-endian (the spool's byte
    /// order; every board Postern targets is little-endian, and the loads say
    /// so rather than assume it).
    public static func software(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return tables.withUnsafeBufferPointer { tableBuffer -> UInt32 in
            // 2,048 entries: every index below is at most 7 * 256 + 255.
            guard let t = tableBuffer.baseAddress else { return crc }
            var c = crc
            var p = base
            var left = bytes.count
            while left > 0 && UInt(bitPattern: p) & 7 != 0 {
                c = t[Int(truncatingIfNeeded: (c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1
                left -= 1
            }
            while left >= 8 {
                let one = UInt32(littleEndian: p.load(as: UInt32.self)) ^ c
                let two = UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self))
                c = t[7 * 256 + Int(truncatingIfNeeded: one & 0xFF)]
                    ^ t[6 * 256 + Int(truncatingIfNeeded: (one >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int(truncatingIfNeeded: (one >> 16) & 0xFF)]
                    ^ t[4 * 256 + Int(truncatingIfNeeded: one >> 24)]
                    ^ t[3 * 256 + Int(truncatingIfNeeded: two & 0xFF)]
                    ^ t[2 * 256 + Int(truncatingIfNeeded: (two >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int(truncatingIfNeeded: (two >> 16) & 0xFF)]
                    ^ t[Int(truncatingIfNeeded: two >> 24)]
                p += 8
                left -= 8
            }
            while left > 0 {
                c = t[Int(truncatingIfNeeded: (c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1
                left -= 1
            }
            return c
        }
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c = CRC32C()
        bytes.withUnsafeBytes { c.update($0) }
        return c.value
    }
}
