import CLibc
import PosternCore

/// What the recovery scan found, for the start-up log line.
public struct RecoveryReport: Sendable {
    public var segments = 0
    public var records = 0
    public var queued = 0
    /// Transactions without a commit record: never acknowledged.
    public var dropped = 0
    /// Committed messages that cannot be queued (a segment of theirs is missing
    /// or damaged, or their envelope or commit is unreadable): "queue_id reason".
    public var incomplete: [String] = []
    /// "segment:offset reason" of every place a scan stopped early.
    public var tornTails: [String] = []
    /// CRC-valid records whose contents are impossible, and files named like
    /// segments that are not read: "segment:offset reason", the first
    /// `RecoveryReport.listed` of them (each is logged as it is found).
    public var skipped: [String] = []
    public var skippedCount = 0

    static let listed = 100
}

/// The recovery scan (see "Recovery" in SpoolCodec.swift): every segment in
/// sequence order through one `SegmentCursor`, rebuilding the queue. Every
/// number read from a record is checked before it is used for an index, a
/// narrowing or an allocation, so a crafted spool file is skipped and logged,
/// never a trap (issue 7 items 7 and 8).
extension Spool {
    struct RecoveryScan {
        struct Pending {
            var segment: UInt64
            var offset: Int
            var arrival: Int64
            var recipients: Int
            var arrivalSynchronised: Bool
            var textBytes = 0
        }
        /// When the scan runs: expiry deadlines are counted from here.
        let clock: ClockReading
        var pending: [UInt64: Pending] = [:]
        /// Transactions whose envelope record could not be parsed: their commit
        /// is reported, not silently dropped.
        var unreadableEnvelopes: Set<UInt64> = []
        var incomplete: [String] = []
        var maxID: UInt64 = 0
    }

    /// The recovery scan of every segment, in sequence order. Returns the report
    /// and the largest message id seen.
    func scanAll(_ clock: ClockReading) -> Result<(RecoveryReport, UInt64), Errno> {
        let names: [String]
        switch storage.list(dir) {
        case .success(let n): names = n
        case .failure(let e): return .failure(e)
        }
        var report = RecoveryReport()
        var sequences: [UInt64] = []
        for name in names {
            guard let seq = SpoolCodec.segmentSequence(fileName: name) else { continue }
            if seq > SpoolCodec.maxSequence {
                skip(&report, "\(name):0 sequence beyond \(SpoolCodec.maxSequence), not read")
                continue
            }
            sequences.append(seq)
        }
        sequences.sort()
        var scan = RecoveryScan(clock: clock)
        let cursor = SegmentCursor(capacity: BufferSizes.spoolRead)
        for seq in sequences {
            report.segments += 1
            if case .failure(let e) = scanSegment(seq, cursor, &scan, &report) { return .failure(e) }
        }
        report.queued = queue.count
        report.dropped = scan.pending.count
        report.incomplete = scan.incomplete
        return .success((report, scan.maxID))
    }

    func scanSegment(_ seq: UInt64, _ cursor: SegmentCursor, _ scan: inout RecoveryScan,
                     _ report: inout RecoveryReport) -> Result<Void, Errno> {
        switch segmentFileSize(seq) {
        case .failure(let e): return .failure(e)
        case .success(let size): noteSegment(seq, size: size)
        }
        switch cursor.start(storage: storage, path: path(seq), sequence: seq, at: SpoolCodec.segmentHeaderLength) {
        case .success: break
        case .failure(.io(let e)): return .failure(e)
        case .failure(.damaged(let why)):
            report.tornTails.append(why)
            return .success(())
        }
        while true {
            switch cursor.next() {
            case .success(nil):
                return .success(())
            case .success(let r?):
                report.records += 1
                apply(r, cursor.payload, seq, &scan, &report)
            case .failure(.io(let e)):
                return .failure(e)
            case .failure(.damaged(let why)):
                report.tornTails.append(why)
                return .success(())
            }
        }
    }

    /// The size of a segment file, for the spool's accounting. A file too large
    /// for an `Int` (a 32-bit board) counts as the longest a segment can be; the
    /// cursor reads no further than that anyway.
    func segmentFileSize(_ seq: UInt64) -> Result<Int, Errno> {
        let fd: Int32
        switch storage.openForReading(path(seq)) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { storage.close(fd) }
        switch storage.size(fd) {
        case .success(let s): return .success(min(s, SpoolCodec.maxSegmentLength))
        case .failure(let e) where e.code == EOVERFLOW: return .success(SpoolCodec.maxSegmentLength)
        case .failure(let e): return .failure(e)
        }
    }

    /// Logs a skipped file, and lists the first few in the report.
    func skip(_ report: inout RecoveryReport, _ what: String) {
        report.skippedCount += 1
        guard report.skippedCount <= RecoveryReport.listed else { return }
        report.skipped.append(what)
        log.warning("spool record skipped: its contents are impossible (damage, or a file someone else wrote)",
                    [("where", what)], id: MessageIDs.spoolError)
    }

    /// Skips record `r` of segment `seq`: "segment:offset <message id> why".
    /// The text is built here only, when a record is skipped.
    func skip(_ report: inout RecoveryReport, _ seq: UInt64, _ r: SegmentCursor.Record, _ why: String) {
        skip(&report, SpoolCodec.segmentName(seq) + ":" + String(r.offset) + " " + Spool.queueID(r.id) + " " + why)
    }

    /// Notes a committed message that cannot be queued: "<message id> why".
    func lost(_ scan: inout RecoveryScan, _ id: UInt64, _ why: String) {
        scan.incomplete.append(Spool.queueID(id) + " " + why)
    }

    /// Whether a message may span segments `from` through `to`: every segment in
    /// between must be there, so a span longer than the number of segment files
    /// is damage. This also bounds the work of `Queue.retain`, which counts a
    /// reference for each segment in the span.
    func spanIsPlausible(from: UInt64, to: UInt64) -> Bool {
        to >= from && to - from < UInt64(segmentSizes.count)
    }

    func apply(_ r: SegmentCursor.Record, _ payload: UnsafeRawBufferPointer, _ seq: UInt64,
               _ scan: inout RecoveryScan, _ report: inout RecoveryReport) {
        guard r.id < SpoolCodec.maxID else {
            skip(&report, seq, r, "message id beyond the format's range")
            return
        }
        scan.maxID = max(scan.maxID, r.id)
        switch r.kind {
        case .envelope:
            guard let e = SpoolCodec.parseEnvelope(payload) else {
                skip(&report, seq, r, "envelope does not parse")
                scan.pending[r.id] = nil
                scan.unreadableEnvelopes.insert(r.id)
                return
            }
            if !scan.unreadableEnvelopes.isEmpty { scan.unreadableEnvelopes.remove(r.id) }
            // The arrival is used for the message's age: kept in the range the
            // index shows (1970 to 2106), so the age arithmetic cannot overflow.
            let arrival = min(max(e.arrival, 0), Int64(UInt32.max))
            scan.pending[r.id] = RecoveryScan.Pending(segment: seq, offset: r.offset, arrival: arrival,
                                                      recipients: e.recipients.count,
                                                      arrivalSynchronised: e.arrivalSynchronised)
        case .text:
            guard let p = scan.pending[r.id] else { return }
            // Saturating: only a crafted spool adds up past `Int.max` (2 GiB on
            // 32 bits), and then the commit's size cannot match.
            let (sum, overflow) = p.textBytes.addingReportingOverflow(r.payloadLength)
            scan.pending[r.id]?.textBytes = overflow ? Int.max : sum
        case .commit:
            let p = scan.pending.removeValue(forKey: r.id)
            guard let size = SpoolCodec.parseCommit(payload) else {
                skip(&report, seq, r, "commit does not parse")
                if p != nil, queue.message(r.id) == nil { lost(&scan, r.id, "has an unreadable commit record") }
                return
            }
            guard let p else {
                if scan.unreadableEnvelopes.remove(r.id) != nil, queue.message(r.id) == nil {
                    lost(&scan, r.id, "has an unreadable envelope")
                }
                return
            }
            commitFound(r, p, size: size, seq, &scan, &report)
        case .abort:
            scan.pending[r.id] = nil
        case .recipient:
            guard let o = SpoolCodec.parseRecipient(payload) else {
                skip(&report, seq, r, "recipient record does not parse")
                return
            }
            guard let m = queue.message(r.id) else { return }
            guard o.index < Int(m.recipientCount) else {
                skip(&report, seq, r, "recipient index beyond the envelope's count")
                return
            }
            if seq > m.lastSegment && !spanIsPlausible(from: m.firstSegment, to: seq) {
                skip(&report, seq, r, "recipient record too far from its message")
                return
            }
            queue.noteRecord(of: r.id, inSegment: seq)
            queue.setOutcome(r.id, recipient: o.index, o.outcome)
        }
    }

    func commitFound(_ r: SegmentCursor.Record, _ p: RecoveryScan.Pending, size: Int, _ seq: UInt64,
                     _ scan: inout RecoveryScan, _ report: inout RecoveryReport) {
        let id = r.id
        let original = queue.message(id)
        if p.textBytes != size {
            // A segment in the middle of the message is gone or damaged: what is
            // left cannot be sent as the message that was received. (For a
            // relocated copy the original, if still there, stays in use.)
            if original == nil {
                lost(&scan, id, "has " + String(p.textBytes) + " of " + String(size) + " bytes of text")
            }
            return
        }
        guard spanIsPlausible(from: p.segment, to: seq) else {
            skip(&report, seq, r, "commit spans segments that are not there")
            if original == nil { lost(&scan, id, "spans segments that are not there") }
            return
        }
        if let original {
            // A compaction copy became durable: the message lives here now, with
            // the outcomes already read for it. A copy is the same text, so a
            // different size is not a copy.
            guard original.size == size, p.recipients == Int(original.recipientCount) else {
                skip(&report, seq, r, "copy differs from the message")
                return
            }
            queue.relocate(id, firstSegment: p.segment, firstOffset: p.offset, lastSegment: seq)
            return
        }
        guard var m = QueuedMessage(id: id, arrival: p.arrival, size: size, firstSegment: p.segment,
                                    firstOffset: p.offset, lastSegment: seq,
                                    recipientStates: [UInt8](repeating: 0, count: p.recipients)) else {
            skip(&report, seq, r, "does not fit the queue's index")
            lost(&scan, id, "does not fit the queue's index")
            return
        }
        m.expiresAt = expiry.deadline(arrival: p.arrival, arrivalSynchronised: p.arrivalSynchronised,
                                      loadedAt: scan.clock)
        // Straight into the queue (ids arrive nearly in order, so this is an
        // append): a long queue loads in linear time and no second copy of the
        // index is built. A message finished by later records leaves it.
        queue.insert(m)
    }
}
