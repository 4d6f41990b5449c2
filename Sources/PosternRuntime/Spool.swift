import CLibc
import PosternCore

/// A message being received: its records are in the spool but not yet committed.
public struct SpoolTransaction: Sendable {
    public let id: UInt64
    public let firstSegment: UInt64
    public let firstOffset: Int
    public let arrival: Int64
    public let recipientCount: Int
    /// Bytes of text appended so far.
    public var size = 0

    public var queueID: String { Spool.queueID(id) }
}

/// What the recovery scan found, for the start-up log line.
public struct RecoveryReport: Sendable {
    public var segments = 0
    public var records = 0
    public var queued = 0
    /// Transactions without a commit record: never acknowledged.
    public var dropped = 0
    /// Committed messages whose text records do not add up to the committed size
    /// (a segment of theirs is missing or damaged): "queue_id reason" each.
    public var incomplete: [String] = []
    /// "segment:offset reason" of every place a scan stopped early.
    public var tornTails: [String] = []
}

/// The spool's files: the append-only segments, group commit, the recovery scan and
/// segment deletion. The record format is documented in `SpoolCodec.swift`.
///
/// Receivers call `begin`, `appendText` and `commit`; the loop calls `flush` once
/// per iteration, which performs the one `fdatasync` covering every commit written
/// in that iteration, and only then are those messages queued and 250 sent
/// (DESIGN.md principles 4 and 5).
public final class Spool {
    public let dir: String
    /// These three may change on reload.
    public var segmentSize: Int
    public var maxSize: Int
    public var expiry: ExpiryPolicy
    let log: Log
    public let storage: any SpoolStorage

    var lockFD: Int32 = -1
    var activeFD: Int32 = -1
    public private(set) var activeSequence: UInt64 = 0
    var activeOffset = 0
    /// A write to the active segment failed and could not be undone: start a new one.
    var activeBroken = false
    var segmentSizes: [UInt64: Int] = [:]
    public private(set) var totalBytes = 0
    var nextID: UInt64 = 1
    /// Open transactions: id → the segment of their first record.
    var openTransactions: [UInt64: UInt64] = [:]
    /// Commits written but not yet covered by an fdatasync.
    var awaitingSync: [QueuedMessage] = []
    /// Compaction copies written but not yet covered by an fdatasync.
    struct Relocation {
        var id: UInt64
        var firstSegment: UInt64
        var firstOffset: Int
        var lastSegment: UInt64
    }
    var awaitingRelocation: [Relocation] = []
    /// Reads messages back for compaction; allocated the first time it is needed.
    var compactionReader: MessageReader? = nil
    public private(set) var relocatedMessages = 0
    /// The active segment has writes no fdatasync has covered yet.
    var dirty = false
    /// A commit or recipient record waits for the next group commit.
    var syncWanted = false
    /// A segment was created since the directory was last synced.
    var directorySyncNeeded = false
    /// An fdatasync of a segment being closed failed: the commits waiting for the
    /// next flush cannot be promised.
    var pendingSyncFailure: Errno? = nil
    /// Monotonic time of the last ENOSPC; new mail is refused for a while after it.
    var noSpaceAt: Int64? = nil

    public var queue = Queue()

    public init(dir: String, segmentSize: Int, maxSize: Int, log: Log, storage: any SpoolStorage = PosixStorage(),
                expiry: ExpiryPolicy = ExpiryPolicy(maxAge: SpoolConfig().maxAge)) {
        self.dir = dir
        self.segmentSize = segmentSize
        self.maxSize = maxSize
        self.log = log
        self.storage = storage
        self.expiry = expiry
    }

    public static func queueID(_ id: UInt64) -> String { ASCII.hex(id, width: 16) }

    func path(_ sequence: UInt64) -> String { dir + "/" + SpoolCodec.segmentName(sequence) }

    /// Whether new mail can be promised: under `max_size`, and no ENOSPC in the last
    /// ten seconds.
    public func acceptsMail(now: Int64) -> Bool {
        if totalBytes >= maxSize { return false }
        if let t = noSpaceAt, now - t < 10_000_000_000 { return false }
        return true
    }

    // MARK: start-up

    /// Creates and locks the directory, scans every segment, rebuilds the queue,
    /// deletes what is finished and opens a new active segment.
    public func open(clock: ClockReading) -> Result<RecoveryReport, Errno> {
        if case .failure(let e) = storage.makeDirectory(dir) { return .failure(e) }
        switch storage.lock(dir + "/lock") {
        case .success(let fd): lockFD = fd
        case .failure(let e): return .failure(e)
        }
        let report: RecoveryReport
        let maxID: UInt64
        switch scanAll(clock) {
        case .success(let r): (report, maxID) = r
        case .failure(let e): return .failure(e)
        }
        nextID = max(maxID + 1, UInt64(max(clock.wall, 0)) << 20)
        activeSequence = segmentSizes.keys.max() ?? 0
        if case .failure(let e) = roll() { return .failure(e) }
        collectGarbage()
        return .success(report)
    }

    /// Scans the spool and builds the queue without writing anything: for
    /// `postern queue` when no daemon runs. The spool must not be used to write
    /// after this.
    public func openReadOnly(clock: ClockReading) -> Result<RecoveryReport, Errno> {
        scanAll(clock).map { $0.0 }
    }

    /// The recovery scan of every segment, in sequence order. Returns the report
    /// and the largest message id seen.
    func scanAll(_ clock: ClockReading) -> Result<(RecoveryReport, UInt64), Errno> {
        let names: [String]
        switch storage.list(dir) {
        case .success(let n): names = n
        case .failure(let e): return .failure(e)
        }
        var sequences = names.compactMap { SpoolCodec.segmentSequence(fileName: $0) }
        sequences.sort()
        var report = RecoveryReport()
        var scan = RecoveryScan(clock: clock)
        let buffer = ByteBuffer(capacity: BufferSizes.spoolRead)
        for seq in sequences {
            report.segments += 1
            if case .failure(let e) = scanSegment(seq, buffer, &scan, &report) { return .failure(e) }
        }
        report.queued = queue.count
        report.dropped = scan.pending.count
        report.incomplete = scan.incomplete
        return .success((report, scan.maxID))
    }

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
        var incomplete: [String] = []
        var maxID: UInt64 = 0
    }

    func scanSegment(_ seq: UInt64, _ buffer: ByteBuffer, _ scan: inout RecoveryScan,
                     _ report: inout RecoveryReport) -> Result<Void, Errno> {
        let fd: Int32
        switch storage.openForReading(path(seq)) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { storage.close(fd) }
        let fileSize: Int
        switch storage.size(fd) {
        case .success(let s): fileSize = s
        case .failure(let e): return .failure(e)
        }
        segmentSizes[seq] = fileSize
        totalBytes += fileSize
        buffer.clear()
        var header = [UInt8](repeating: 0, count: SpoolCodec.segmentHeaderLength)
        let got = header.withUnsafeMutableBytes { storage.read(fd, $0, at: 0) }
        guard case .success(let n) = got, n == header.count,
              header.withUnsafeBytes({ SpoolCodec.parseSegmentHeader($0) }) == seq else {
            report.tornTails.append("\(SpoolCodec.segmentName(seq)):0 bad segment header")
            return .success(())
        }
        var fileOffset = SpoolCodec.segmentHeaderLength   // of buffer.start
        while true {
            let parse = SpoolCodec.parseRecord(buffer.readable)
            switch parse {
            case .record(let frame):
                let payload = UnsafeRawBufferPointer(rebasing: buffer.readable[frame.payloadOffset..<(frame.payloadOffset + frame.payloadLength)])
                apply(frame, payload, seq, fileOffset, &scan)
                report.records += 1
                buffer.consume(frame.length)
                fileOffset += frame.length
            case .needMore(let total):
                if fileOffset + buffer.count >= fileSize {
                    if buffer.count > 0 {
                        report.tornTails.append("\(SpoolCodec.segmentName(seq)):\(fileOffset) incomplete record")
                    }
                    return .success(())
                }
                if total > buffer.capacity {
                    // Only an envelope with very many recipients is this big.
                    var big = [UInt8](repeating: 0, count: total)
                    let r = big.withUnsafeMutableBytes { storage.read(fd, $0, at: fileOffset) }
                    guard case .success(let got) = r, got == total else {
                        report.tornTails.append("\(SpoolCodec.segmentName(seq)):\(fileOffset) incomplete record")
                        return .success(())
                    }
                    let ok: Bool = big.withUnsafeBytes { b in
                        guard case .record(let frame) = SpoolCodec.parseRecord(b) else { return false }
                        apply(frame, UnsafeRawBufferPointer(rebasing: b[frame.payloadOffset..<(frame.payloadOffset + frame.payloadLength)]),
                              seq, fileOffset, &scan)
                        return true
                    }
                    guard ok else {
                        report.tornTails.append("\(SpoolCodec.segmentName(seq)):\(fileOffset) corrupt record")
                        return .success(())
                    }
                    report.records += 1
                    fileOffset += total
                    buffer.clear()
                    continue
                }
                buffer.compact()
                let r = storage.read(fd, buffer.writable, at: fileOffset + buffer.count)
                switch r {
                case .success(let got):
                    if got == 0 {
                        report.tornTails.append("\(SpoolCodec.segmentName(seq)):\(fileOffset) incomplete record")
                        return .success(())
                    }
                    buffer.didWrite(min(got, buffer.freeSpace))
                case .failure(let e): return .failure(e)
                }
            case .corrupt(let why):
                report.tornTails.append("\(SpoolCodec.segmentName(seq)):\(fileOffset) \(why)")
                return .success(())
            }
        }
    }

    func apply(_ frame: SpoolCodec.RecordFrame, _ payload: UnsafeRawBufferPointer, _ seq: UInt64,
               _ offset: Int, _ scan: inout RecoveryScan) {
        scan.maxID = max(scan.maxID, frame.id)
        switch frame.kind {
        case .envelope:
            guard let e = SpoolCodec.parseEnvelope(payload) else { return }
            scan.pending[frame.id] = RecoveryScan.Pending(segment: seq, offset: offset, arrival: e.arrival,
                                                          recipients: e.recipients.count,
                                                          arrivalSynchronised: e.arrivalSynchronised)
        case .text:
            scan.pending[frame.id]?.textBytes += frame.payloadLength
        case .commit:
            guard let p = scan.pending.removeValue(forKey: frame.id), let size = SpoolCodec.parseCommit(payload) else { return }
            if p.textBytes != size {
                // A segment in the middle of the message is gone or damaged: what is
                // left cannot be sent as the message that was received. (For a
                // relocated copy the original, if still there, stays in use.)
                if queue.message(frame.id) == nil {
                    scan.incomplete.append("\(Spool.queueID(frame.id)) has \(p.textBytes) of \(size) bytes of text")
                }
                return
            }
            if queue.message(frame.id) != nil {
                // A compaction copy became durable: the message lives here now, with
                // the outcomes already read for it.
                queue.relocate(frame.id, firstSegment: p.segment, firstOffset: p.offset, lastSegment: seq)
                return
            }
            var m = QueuedMessage(id: frame.id, arrival: p.arrival, size: size,
                                  firstSegment: p.segment, firstOffset: p.offset, lastSegment: seq,
                                  recipientStates: [UInt8](repeating: 0, count: p.recipients))
            m.expiresAt = expiry.deadline(arrival: p.arrival, arrivalSynchronised: p.arrivalSynchronised,
                                          loadedAt: scan.clock)
            // Straight into the queue (ids arrive nearly in order, so this is an
            // append): a long queue loads in linear time and no second copy of
            // the index is built. A message finished by later records leaves it.
            queue.insert(m)
        case .abort:
            scan.pending[frame.id] = nil
        case .recipient:
            guard let r = SpoolCodec.parseRecipient(payload), let m = queue.message(frame.id),
                  r.index < Int(m.recipientCount) else { return }
            queue.noteRecord(of: frame.id, inSegment: seq)
            queue.setOutcome(frame.id, recipient: r.index, r.outcome)
        }
    }

    // MARK: writing

    /// Closes the active segment (synced if it holds unsynced records) and starts
    /// the next. The new file's header is synced, and the directory, by the next
    /// `flush` before anything in it is acknowledged (issue 3 item 2).
    func roll() -> Result<Void, Errno> {
        if activeFD >= 0 {
            // Everything in the old segment (text of a message that goes on in the
            // new one, too) must be durable before a commit in the new one is.
            if dirty {
                if case .failure(let e) = storage.syncData(activeFD) { pendingSyncFailure = e }
            }
            storage.close(activeFD)
            activeFD = -1
        }
        let seq = activeSequence + 1
        let fd: Int32
        switch storage.create(path(seq)) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        let header = SpoolCodec.segmentHeader(sequence: seq)
        let written = header.withUnsafeBytes { storage.write(fd, [$0], at: 0) }
        if case .success(let n) = written, n == header.count {} else {
            storage.close(fd)
            _ = storage.unlink(path(seq))
            if case .failure(let e) = written { return .failure(e) }
            return .failure(Errno(ENOSPC, "write \(SpoolCodec.segmentName(seq))"))
        }
        activeFD = fd
        activeSequence = seq
        activeOffset = header.count
        activeBroken = false
        segmentSizes[seq] = header.count
        totalBytes += header.count
        directorySyncNeeded = true
        dirty = true
        return .success(())
    }

    /// Appends one record to the active segment; returns where it was written.
    /// A failed write is cut off again (ftruncate) so no torn record is left in
    /// the middle of the file.
    func writeRecord(_ kind: SpoolCodec.Kind, _ id: UInt64, _ payload: UnsafeRawBufferPointer,
                     now: Int64) -> Result<(UInt64, Int), Errno> {
        if activeOffset >= segmentSize || activeBroken || activeFD < 0 {
            if case .failure(let e) = roll() { return .failure(noteFailure(e, now)) }
        }
        let header = SpoolCodec.recordHeader(kind: kind, id: id, payloadLength: payload.count)
        let trailer = SpoolCodec.trailer(header: header, payload: payload)
        let total = header.count + payload.count + trailer.count
        let start = activeOffset
        let result = header.withUnsafeBytes { h in
            trailer.withUnsafeBytes { t in storage.write(activeFD, [h, payload, t], at: start) }
        }
        if case .success(let n) = result, n == total {} else {
            var e = Errno(ENOSPC, "write \(SpoolCodec.segmentName(activeSequence))")
            if case .failure(let f) = result { e = Errno(f.code, "write \(SpoolCodec.segmentName(activeSequence))") }
            // Cut off the partial record; if even that fails, never append to this
            // file again.
            if case .failure = storage.truncate(activeFD, to: start) { activeBroken = true }
            return .failure(noteFailure(e, now))
        }
        activeOffset += total
        dirty = true
        segmentSizes[activeSequence, default: 0] += total
        totalBytes += total
        return .success((activeSequence, start))
    }

    func noteFailure(_ e: Errno, _ now: Int64) -> Errno {
        if e.isNoSpace { noSpaceAt = now } else { ioFailure = e }
        return e
    }

    /// An I/O error (not a full disk) since the last successful sync: the spool is
    /// failing, and the watchdog stops vouching for the daemon.
    public private(set) var ioFailure: Errno? = nil

    /// Opens a transaction: writes the envelope record.
    public func begin(_ envelope: Envelope, arrival: Int64, arrivalSynchronised: Bool = false,
                      now: Int64) -> Result<SpoolTransaction, Errno> {
        let id = nextID
        nextID += 1
        let payload = SpoolCodec.envelopePayload(SpoolCodec.EnvelopeRecord(
            arrival: arrival, eightBit: envelope.eightBit, arrivalSynchronised: arrivalSynchronised,
            from: envelope.from.bytes,
            recipients: envelope.recipients.map { $0.bytes }))
        let r = payload.withUnsafeBytes { writeRecord(.envelope, id, $0, now: now) }
        switch r {
        case .success(let (seq, offset)):
            openTransactions[id] = seq
            return .success(SpoolTransaction(id: id, firstSegment: seq, firstOffset: offset, arrival: arrival,
                                             recipientCount: envelope.recipients.count))
        case .failure(let e):
            return .failure(e)
        }
    }

    /// Appends a chunk of message text.
    public func appendText(_ t: inout SpoolTransaction, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Result<Void, Errno> {
        if bytes.isEmpty { return .success(()) }
        switch writeRecord(.text, t.id, bytes, now: now) {
        case .success:
            t.size += bytes.count
            return .success(())
        case .failure(let e):
            return .failure(e)
        }
    }

    /// Abandons a transaction. The abort record only saves the recovery scan some
    /// memory; without it the transaction is dropped anyway, having no commit.
    public func abort(_ t: SpoolTransaction, now: Int64) {
        _ = writeRecord(.abort, t.id, UnsafeRawBufferPointer(start: nil, count: 0), now: now)
        openTransactions[t.id] = nil
        collectGarbage()
    }

    /// Writes the commit record. The message is promised only after the next
    /// `flush` reports it durable.
    public func commit(_ t: SpoolTransaction, now: Int64) -> Result<Void, Errno> {
        let payload = SpoolCodec.commitPayload(size: t.size)
        let r = payload.withUnsafeBytes { writeRecord(.commit, t.id, $0, now: now) }
        openTransactions[t.id] = nil
        switch r {
        case .success:
            var m = QueuedMessage(id: t.id, arrival: t.arrival, size: t.size, firstSegment: t.firstSegment,
                                  firstOffset: t.firstOffset, lastSegment: activeSequence,
                                  recipientStates: [UInt8](repeating: 0, count: t.recipientCount))
            // Just arrived: its whole max_age is ahead of it, on the monotonic clock.
            m.expiresAt = now / 1_000_000_000 + expiry.maxAge
            awaitingSync.append(m)
            syncWanted = true
            return .success(())
        case .failure(let e):
            collectGarbage()
            return .failure(e)
        }
    }

    /// A group commit is due: commits or recipient records wait for it. Text alone
    /// does not make one (it is synced with its commit, or when its segment closes).
    public var groupCommitDue: Bool { syncWanted || pendingSyncFailure != nil }

    /// The group commit: one fdatasync (and a directory sync after a new segment)
    /// for everything written since the last flush, when a commit or compaction
    /// copy waits for it. On success the committed messages join the queue and are
    /// returned, so their clients can be told 250; on failure their ids come back
    /// in `failed` for a 452.
    public struct FlushResult {
        /// Messages now durable and queued: their clients get 250.
        public var committed: [QueuedMessage] = []
        /// Messages whose commit could not be made durable: their clients get 452.
        public var failed: [UInt64] = []
        public var error: Errno? = nil
        /// An fdatasync covered everything written before this flush.
        public var synced = false
    }

    public func flush() -> FlushResult {
        guard syncWanted || pendingSyncFailure != nil else { return FlushResult() }
        var failure = pendingSyncFailure
        pendingSyncFailure = nil
        if failure == nil && dirty && activeFD >= 0 {
            if case .failure(let e) = storage.syncData(activeFD) { failure = e }
        }
        if failure == nil && directorySyncNeeded, case .failure(let e) = storage.syncDirectory(dir) {
            failure = e
        }
        syncWanted = false
        if failure == nil {
            dirty = false
            directorySyncNeeded = false
            ioFailure = nil
        } else if let f = failure, !f.isNoSpace {
            ioFailure = f
        }
        let waiting = awaitingSync
        awaitingSync = []
        if let e = failure {
            awaitingRelocation = []
            // After a failed fdatasync the kernel may have dropped the dirty pages:
            // nothing written since the last good sync can be trusted, so stop
            // writing to this file (the next write starts a new segment).
            activeBroken = true
            collectGarbage()
            return FlushResult(failed: waiting.map { $0.id }, error: e)
        }
        for m in waiting { queue.insert(m) }
        let relocations = awaitingRelocation
        awaitingRelocation = []
        for r in relocations {
            queue.relocate(r.id, firstSegment: r.firstSegment, firstOffset: r.firstOffset, lastSegment: r.lastSegment)
        }
        if !relocations.isEmpty { collectGarbage() }
        return FlushResult(committed: waiting, synced: true)
    }

    /// Records a final outcome for one recipient of a queued message. Returns true
    /// when it finished the message.
    @discardableResult
    public func recordOutcome(_ id: UInt64, recipient: Int, _ outcome: SpoolCodec.Outcome, now: Int64) -> Bool {
        let payload = SpoolCodec.recipientPayload(index: recipient, outcome: outcome)
        switch payload.withUnsafeBytes({ writeRecord(.recipient, id, $0, now: now) }) {
        case .success(let (seq, _)):
            queue.noteRecord(of: id, inSegment: seq)
            // No fdatasync of its own: the record becomes durable with the next
            // group commit or when its segment is closed. A crash before that
            // can only make the recipient be sent again, which principle 4 allows;
            // a sync per delivered message would double the spool's flash wear.
        case .failure(let e):
            // Delivery already happened; without the record a restart may send it
            // again (at-least-once), which is the safe direction. The next flush
            // reports the failure: what it covers is not all durable.
            log.warning("could not record a delivery outcome", [("queue_id", Spool.queueID(id)), ("error", e.description)], id: MessageIDs.spoolError)
            pendingSyncFailure = e
        }
        let finished = queue.setOutcome(id, recipient: recipient, outcome)
        if finished { collectGarbage() }
        return finished
    }

    /// Deletes finished segments from the oldest on: while the oldest segment is
    /// not the active one, holds no queued message and is older than every open
    /// transaction, it goes.
    ///
    /// Only ever the oldest, each unlink made durable before the next: a newer
    /// segment holds the recipient records that finished the messages of older
    /// ones, so it must outlive them, also across a crash (the crash tests found
    /// both orders of failure). A message stuck in an old segment would hold
    /// every newer one; compaction copies it forward so the oldest can go.
    func collectGarbage() {
        var pin = UInt64.max
        for (_, s) in openTransactions { pin = min(pin, s) }
        for m in awaitingSync { pin = min(pin, m.firstSegment) }
        while let oldest = segmentSizes.keys.min(), oldest != activeSequence, oldest < pin,
              !queue.isReferenced(oldest) {
            if case .failure(let e) = storage.unlink(path(oldest)) {
                log.warning("could not delete a finished segment", [("error", e.description)], id: MessageIDs.spoolError)
                return
            }
            totalBytes -= segmentSizes[oldest] ?? 0
            segmentSizes[oldest] = nil
            log.debug("segment deleted", [("segment", SpoolCodec.segmentName(oldest))])
            if case .failure(let e) = storage.syncDirectory(dir) {
                log.warning("could not sync the spool directory", [("error", e.description)], id: MessageIDs.spoolError)
                return
            }
        }
    }

    // MARK: compaction

    /// Bytes the spool may hold beyond its live text before compaction starts:
    /// the live text again (so each copy is paid for by at least as much new mail)
    /// plus two segments.
    func compactionThreshold() -> Int {
        2 * (queue.textBytes + queue.count * 256) + 2 * segmentSize
    }

    /// When old segments are kept only by a few undelivered messages, copies those
    /// messages forward so the oldest segment can be deleted (see "Compaction" in
    /// SpoolCodec.swift). The copies take effect at the next successful `flush`.
    /// Returns the number of messages copied.
    @discardableResult
    public func compactIfNeeded(now: Int64) -> Int {
        guard awaitingRelocation.isEmpty, totalBytes > compactionThreshold(),
              let oldest = segmentSizes.keys.min(), oldest != activeSequence else { return 0 }
        for (_, s) in openTransactions where s <= oldest { return 0 }
        for m in awaitingSync where m.firstSegment <= oldest { return 0 }
        let holders = queue.messages.filter { $0.firstSegment <= oldest && oldest <= $0.lastSegment }
        // A message being sent is read from its old place; wait until it is answered.
        guard !holders.isEmpty, !holders.contains(where: { $0.inFlight }) else { return 0 }
        var copied = 0
        for m in holders {
            if let e = copy(m, now: now) {
                log.warning("compaction stopped: could not copy a message forward",
                            [("queue_id", Spool.queueID(m.id)), ("error", e)])
                break
            }
            copied += 1
        }
        if copied > 0 {
            syncWanted = true
            relocatedMessages += copied
            log.info("compacting the spool", [("segment", SpoolCodec.segmentName(oldest)), ("messages", "\(copied)"),
                                              ("spool_bytes", "\(totalBytes)"), ("live_bytes", "\(queue.textBytes)")])
        }
        return copied
    }

    /// Writes a relocated copy of `m`: envelope, text, commit, finished recipients.
    /// Returns nil when done, else why not.
    func copy(_ m: QueuedMessage, now: Int64) -> String? {
        let reader = compactionReader ?? MessageReader()
        compactionReader = reader
        var envelope: SpoolCodec.EnvelopeRecord
        switch reader.open(m, spool: self) {
        case .success(let e): envelope = e
        case .failure(let f): return "\(f)"
        }
        envelope.relocated = true
        let payload = SpoolCodec.envelopePayload(envelope)
        let first: (UInt64, Int)
        switch payload.withUnsafeBytes({ writeRecord(.envelope, m.id, $0, now: now) }) {
        case .success(let at): first = at
        case .failure(let e): return e.description
        }
        loop: while true {
            switch reader.next(spool: self) {
            case .failure(let f): return "\(f)"
            case .success(.end): break loop
            case .success(.text):
                let n = reader.pendingText.count
                if case .failure(let e) = writeRecord(.text, m.id, reader.pendingText, now: now) {
                    return e.description
                }
                reader.advance(n)
            }
        }
        let commit = SpoolCodec.commitPayload(size: m.size)
        if case .failure(let e) = commit.withUnsafeBytes({ writeRecord(.commit, m.id, $0, now: now) }) {
            return e.description
        }
        for i in 0..<Int(m.recipientCount) where m.state(i) != 0 {
            guard let outcome = SpoolCodec.Outcome(rawValue: m.state(i)) else { continue }
            let r = SpoolCodec.recipientPayload(index: i, outcome: outcome)
            if case .failure(let e) = r.withUnsafeBytes({ writeRecord(.recipient, m.id, $0, now: now) }) {
                return e.description
            }
        }
        awaitingRelocation.append(Relocation(id: m.id, firstSegment: first.0, firstOffset: first.1,
                                             lastSegment: activeSequence))
        return nil
    }

    /// The next existing segment after `seq`, for reading a message that continues
    /// there.
    public func segment(after seq: UInt64) -> UInt64? {
        var best: UInt64? = nil
        for (s, _) in segmentSizes where s > seq {
            if best == nil || s < best! { best = s }
        }
        return best
    }

    public func segmentPath(_ seq: UInt64) -> String { path(seq) }

    public var segmentCount: Int { segmentSizes.count }

    public func close() {
        if activeFD >= 0 {
            if dirty { _ = storage.syncData(activeFD) }
            storage.close(activeFD)
            activeFD = -1
        }
        if lockFD >= 0 {
            storage.close(lockFD)
            lockFD = -1
        }
    }
}
