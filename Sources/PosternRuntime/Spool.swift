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

/// The spool's files: the append-only segments, group commit and compaction; the
/// recovery scan is in `SpoolRecovery.swift`, segment deletion and the space
/// checks in `SpoolSpace.swift`, and every read goes through `SegmentCursor`.
/// The record format is documented in `SpoolCodec.swift`.
///
/// Receivers call `begin`, `appendText` and `commit`; the loop starts the group
/// commit (`startGroupCommit`): one `fdatasync` covering every commit written
/// since the last one started, run by the storage's sync helper while the loop
/// goes on (issue 11 item 3). When it has finished (`finishGroupCommit`) those
/// messages are queued and their 250s sent (DESIGN.md principles 4 and 5);
/// everything committed meanwhile waits for the next, which starts at once.
/// `flush` does both, waiting: for the tests, and for `close`.
public final class Spool {
    public let dir: String
    /// These three may change on reload.
    public var segmentSize: Int
    /// `[spool] max_size`: 64 bits on every board, like `totalBytes`.
    public var maxSize: Int64
    public var expiry: ExpiryPolicy
    let log: Log
    public let storage: any SpoolStorage

    var lockFD: Int32 = -1
    var activeFD: Int32 = -1
    public internal(set) var activeSequence: UInt64 = 0
    var activeOffset = 0
    /// The active segment holds zeros from `activeOffset` up to here: room a
    /// write filled ahead, which the next records overwrite (`prefillWindow`).
    var preparedEnd = 0
    /// Bytes of records written since the last group commit of a commit started...
    var bytesSinceSync = 0
    /// ...and how many such a group commit has lately covered (a moving
    /// average, `averageSync`'s rule): the prefill's switch.
    var syncBytes = 0
    /// Zeros for the prefill, made on first use (no memory: `ByteBuffer.zeros`).
    var zeroSource: ByteBuffer? = nil
    /// A write to the active segment failed and could not be undone: start a new one.
    var activeBroken = false
    /// Each segment's size fits an `Int` (`SpoolCodec.maxSegmentLength`)...
    var segmentSizes: [UInt64: Int] = [:]
    /// ...but their sum, the spool's size, may pass 2 GiB on a 32-bit board
    /// (issue 10 item 2): it is counted in 64 bits, saturating (`addBytes`).
    public internal(set) var totalBytes: Int64 = 0
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
    /// The active segment has writes no started fdatasync covers.
    var dirty = false
    /// Segments closed (rolled over) with writes no started sync covers: kept
    /// open for the next group commit, which syncs them with the active one, and
    /// closed when it has finished. Everything in them must be durable before a
    /// commit written after them is acknowledged.
    var retired: [Int32] = []
    /// At most this many are kept; beyond it the oldest is synced at once, in
    /// the loop (a message larger than 16 segments arriving faster than a sync).
    static let maxRetired = 16
    /// The group commit whose sync is running: what its end makes durable.
    struct SyncBatch {
        var committed: [QueuedMessage]
        var relocations: [Relocation]
        /// Retired segments it syncs, closed when it ends.
        var retired: [Int32]
        var directory: Bool
        /// Its directory sync makes a segment's unlink durable: the next
        /// deletion waits for it to finish.
        var deletion = false
        /// When its sync started (monotonic nanoseconds).
        var since: Int64 = 0
        /// An earlier sync failed after this one started: what this one covers
        /// may be in the pages the kernel dropped, so it fails too.
        var poisoned: Errno? = nil
        /// It syncs everything written before it started (not only closed
        /// segments): outcome records are durable once it has finished.
        var complete = true
        /// Its sync ran at once (no helper could take it) while earlier ones
        /// still run: its outcome, kept until they have finished.
        var known: Result<Void, Errno>? = nil
        /// The active segment's descriptor when it syncs it (-1 otherwise)...
        var active: Int32 = -1
        /// ...and descriptors to close when it has finished: the active
        /// segment's, when it was closed while this sync ran (`closeWhenSynced`).
        var closeAfter: [Int32] = []
    }
    /// The group commits whose syncs run, oldest first; at most
    /// `storage.syncCapacity`. They finish in this order: a later one is
    /// answered only after every earlier one (it may lack the directory sync
    /// an earlier one carries).
    var inFlight: [SyncBatch] = []
    /// A sync running longer than this is a failing card: the watchdog stops
    /// vouching for the daemon, as it did when a hung sync stopped the loop.
    static let stalledSyncNanoseconds: Int64 = 120_000_000_000
    /// Open transactions with records in a file whose sync failed: their commit
    /// is refused (452), since the kernel may have dropped their text.
    var doomed: [UInt64] = []
    /// A commit or recipient record waits for the next group commit.
    var syncWanted = false
    /// A segment was created since the directory was last synced.
    var directorySyncNeeded = false
    /// A finished segment was unlinked and no started sync of the directory
    /// covers it yet (`collectGarbage`).
    var deletionUnsynced = false
    /// The segment whose unlink runs elsewhere (`SpoolStorage.startUnlink`),
    /// until `finishDeletion`.
    var unlinking: UInt64? = nil
    /// An fdatasync of a segment being closed failed: the commits waiting for the
    /// next flush cannot be promised.
    var pendingSyncFailure: Errno? = nil
    /// A write failed for lack of space (or of segment numbers) and the file
    /// system has not been seen with room since: `acceptsMail` asks statvfs.
    var spaceShort = false
    /// When `acceptsMail` last tried to reclaim space (monotonic nanoseconds).
    var lastReclaimAttempt: Int64? = nil
    /// Times the active segment was reclaimed because the spool was short of space.
    public internal(set) var reclaimedSegments = 0

    public var queue = Queue()

    /// Told of each segment unlinked, so a reader holding it open (the
    /// sender's, `SegmentCursor.keepsFileOpen`) closes it: its blocks are
    /// freed now, before a write that waits for the space is tried again.
    public var segmentDeleted: ((UInt64) -> Void)? = nil

    public init(dir: String, segmentSize: Int, maxSize: Int64, log: Log, storage: any SpoolStorage = PosixStorage(),
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
        nextID = max(maxID + 1, Self.firstID(wall: clock.wall))
        activeSequence = segmentSizes.keys.max() ?? 0
        if case .failure(let e) = roll() {
            // A full disk at start must not stop the daemon: the queue can still
            // drain, finished segments are deleted, and the next write tries again.
            guard Self.isShortOfSpace(e) else { return .failure(e) }
            spaceShort = true
            log.warning("no room for a new spool segment at start; new mail gets 452 until there is",
                        [("error", e.description)], id: MessageIDs.spoolError)
            collectGarbage(now: true)
            reclaimIdleSpace()
            return .success(report)
        }
        collectGarbage(now: true)
        return .success(report)
    }

    /// The first id after a start: the wall clock in seconds, shifted left by 20
    /// bits (room for a million messages a second). Clamped, so a clock set to
    /// the far future cannot shift bits out (ids stay below `SpoolCodec.maxID`).
    static func firstID(wall: Int64) -> UInt64 {
        UInt64(min(max(wall, 0), Int64(1) << 41)) << 20
    }

    /// ENOSPC/EDQUOT, or the segment numbers ran out: both are cured by
    /// reclaiming finished segments, neither is a failing disk.
    static func isShortOfSpace(_ e: Errno) -> Bool { e.isNoSpace || e.code == EOVERFLOW }

    /// Scans the spool and builds the queue without writing anything: for
    /// `postern queue` when no daemon runs. The spool must not be used to write
    /// after this.
    public func openReadOnly(clock: ClockReading) -> Result<RecoveryReport, Errno> {
        scanAll(clock).map { $0.0 }
    }

    // MARK: writing

    /// Closes the active segment (synced if it holds unsynced records) and starts
    /// the next. The new file's header is synced, and the directory, by the next
    /// `flush` before anything in it is acknowledged (issue 3 item 2).
    ///
    /// `syncingOld: false` is for a segment about to be deleted with nothing live
    /// in it (`reclaimIdleSpace`): syncing it would only wear the flash.
    func roll(syncingOld: Bool = true) -> Result<Void, Errno> {
        if activeFD >= 0 {
            // Everything in the old segment (text of a message that goes on in the
            // new one, too) must be durable before a commit in the new one is:
            // the next group commit syncs it with the new one.
            if dirty && syncingOld {
                retired.append(activeFD)
                if retired.count > Self.maxRetired {
                    let oldest = retired.removeFirst()
                    if case .failure(let e) = storage.syncData(oldest) { syncFailed(e) }
                    closeWhenSynced(oldest)
                }
            } else {
                closeWhenSynced(activeFD)
            }
            activeFD = -1
            dirty = false
        }
        guard activeSequence < SpoolCodec.maxSequence else {
            return .failure(Errno(EOVERFLOW, "start segment \(activeSequence) + 1 (segment numbers exhausted)"))
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
        preparedEnd = header.count
        activeBroken = false
        noteSegment(seq, size: header.count)
        directorySyncNeeded = true
        dirty = true
        return .success(())
    }

    /// Closes `fd` now, or, when a running sync covers it, once the last such
    /// sync has finished. io_uring looks a descriptor up when its worker runs
    /// the fsync, not when it is submitted (an fsync always goes to a worker):
    /// closed before then, the sync fails with EBADF, and with the number
    /// taken again by a new segment or a client's socket, it would sync that
    /// file instead and report the old one durable. (A helper process is handed
    /// its own copy of each descriptor, and the loop's syncs run at once.)
    func closeWhenSynced(_ fd: Int32) {
        if let k = inFlight.lastIndex(where: { $0.active == fd }) {
            inFlight[k].closeAfter.append(fd)
        } else {
            storage.close(fd)
        }
    }

    /// Appends one record to the active segment; returns where it was written.
    /// A failed write is cut off again (ftruncate) so no torn record is left in
    /// the middle of the file. When it failed for lack of space and nothing in the
    /// spool is live, the finished segments are reclaimed and the write tried once
    /// more: a full disk recovers with the next message, not a later one.
    func writeRecord(_ kind: SpoolCodec.Kind, _ id: UInt64, _ payload: UnsafeRawBufferPointer) -> Result<(UInt64, Int), Errno> {
        writeRecords(id, [(kind, payload)])
    }

    /// `writeRecord` for several records of one message, in one write: all of
    /// them or none (a message's last text and its commit; issue 11). Returns
    /// where the first was written.
    func writeRecords(_ id: UInt64, _ records: [(SpoolCodec.Kind, UnsafeRawBufferPointer)]) -> Result<(UInt64, Int), Errno> {
        for (kind, payload) in records where payload.count > SpoolCodec.payloadLimit(kind) {
            return .failure(Errno(EMSGSIZE, "write a \(payload.count)-byte record"))
        }
        switch appendRecords(id, records) {
        case .success(let at):
            return .success(at)
        case .failure(let e):
            noteFailure(e)
            guard Self.isShortOfSpace(e), reclaimIdleSpace() else { return .failure(e) }
            let again = appendRecords(id, records)
            if case .failure(let e) = again { noteFailure(e) }
            return again
        }
    }

    func appendRecords(_ id: UInt64, _ records: [(SpoolCodec.Kind, UnsafeRawBufferPointer)]) -> Result<(UInt64, Int), Errno> {
        var total = 0
        for (_, payload) in records { total += SpoolCodec.recordOverhead + payload.count }
        // A segment never grows past what a 32-bit offset can address.
        if activeOffset >= segmentSize || activeBroken || activeFD < 0
            || total > SpoolCodec.maxSegmentLength - activeOffset {
            if case .failure(let e) = roll() { return .failure(e) }
        }
        // Each record's header and trailer, side by side in one array.
        var frames: [UInt8] = []
        frames.reserveCapacity(records.count * SpoolCodec.recordOverhead)
        for (kind, payload) in records {
            let header = SpoolCodec.recordHeader(kind: kind, id: id, payloadLength: payload.count)
            frames += header
            frames += SpoolCodec.trailer(header: header, payload: payload)
        }
        let start = activeOffset
        let end = start + total   // at most maxSegmentLength: checked above
        func write(zeros: Int) -> Result<Int, Errno> {
            frames.withUnsafeBytes { f in
                var parts: [UnsafeRawBufferPointer] = []
                parts.reserveCapacity(records.count * 3 + 1)
                for (i, (_, payload)) in records.enumerated() {
                    let at = i * SpoolCodec.recordOverhead
                    parts.append(UnsafeRawBufferPointer(rebasing: f[at..<(at + SpoolCodec.recordHeaderLength)]))
                    parts.append(payload)
                    parts.append(UnsafeRawBufferPointer(rebasing: f[(at + SpoolCodec.recordHeaderLength)..<(at + SpoolCodec.recordOverhead)]))
                }
                if zeros > 0 { parts.append(UnsafeRawBufferPointer(rebasing: zeroBytes()[0..<zeros])) }
                return storage.write(activeFD, parts, at: start)
            }
        }
        // Records that end past the room take more room with them, in the same
        // write: the records after them will overwrite it.
        let zeros = end > preparedEnd && prefills ? min(Self.prefillWindow, SpoolCodec.maxSegmentLength - end) : 0
        let result = write(zeros: zeros)
        guard case .success(let n) = result, n >= total else {
            var e = Errno(ENOSPC, "write \(SpoolCodec.segmentName(activeSequence))")
            if case .failure(let f) = result { e = Errno(f.code, "write \(SpoolCodec.segmentName(activeSequence))") }
            // Cut off the partial record; if even that fails, never append to this
            // file again. (A disk that is short of space fills no room in the
            // retry: `prefills`.)
            if case .failure = storage.truncate(activeFD, to: start) { activeBroken = true }
            preparedEnd = start
            return .failure(e)
        }
        // The records are whole; as much of the room as was written serves.
        preparedEnd = max(preparedEnd, start + min(n, total + zeros))
        let (since, overflow) = bytesSinceSync.addingReportingOverflow(total)
        bytesSinceSync = overflow ? Int.max : since
        activeOffset += total
        dirty = true
        segmentSizes[activeSequence, default: 0] += total
        addBytes(total)
        return .success((activeSequence, start))
    }

    /// How far a write that ends past the zero-filled room fills it ahead: the
    /// next records overwrite blocks the file has, and the fdatasync covering
    /// them writes the data alone — no size change, so no inode or journal
    /// commit (see "Zero-filled room" in SpoolCodec.swift). Measured with 2,000
    /// records of 2,200 bytes, each followed by an fdatasync, the zeros
    /// included: on ext4 with a journal (as on a Raspberry Pi) 9.2 KB written to
    /// the device per record against 23-25 KB appending, and 0.18-0.35 ms per
    /// fdatasync against 0.40-0.56; `make bench-flash`, 2 KB messages: 8.6 KB
    /// per message against 20.0 (issue 11). Smaller windows did as well per
    /// record (16 KiB: 8.9 KB) but fill more often.
    static let prefillWindow = SpoolCodec.maxZeroFill

    /// Whether writes fill room ahead: while the group commits lately covered
    /// at most half the window each (small messages, so the room serves two
    /// syncs or more before it is used up). Large messages do not: their own
    /// records would overwrite the zeros before a sync, or a sync would write
    /// zeros that the next record writes again. Nor does a disk short of space.
    var prefills: Bool { syncBytes <= Self.prefillWindow / 2 && !spaceShort }

    func zeroBytes() -> UnsafeRawBufferPointer {
        if let z = zeroSource { return z.zeros }
        let z = ByteBuffer(capacity: Self.prefillWindow)
        zeroSource = z
        return z.zeros
    }

    /// The moving average of the bytes a group commit covers after one more
    /// covered `sample`: an eighth of the way towards it (`averageSync`'s rule),
    /// each sample clamped to 1 GiB so the sum stays within a 32-bit `Int`.
    static func averageBytes(_ average: Int, _ sample: Int) -> Int {
        let s = max(0, min(sample, 1 << 30))
        return average + (s - average) / 8
    }

    func noteFailure(_ e: Errno) {
        if Self.isShortOfSpace(e) { spaceShort = true } else { ioFailure = e }
    }

    /// An I/O error (not a full disk) since the last successful sync: the spool is
    /// failing, and the watchdog stops vouching for the daemon.
    public private(set) var ioFailure: Errno? = nil

    /// Opens a transaction: writes the envelope record.
    public func begin(_ envelope: Envelope, arrival: Int64, arrivalSynchronised: Bool = false, notice: Bool = false,
                      now: Int64) -> Result<SpoolTransaction, Errno> {
        var record = SpoolCodec.EnvelopeRecord(
            arrival: arrival, eightBit: envelope.eightBit, arrivalSynchronised: arrivalSynchronised, notice: notice,
            from: envelope.from.bytes,
            recipients: envelope.recipients.map { $0.bytes })
        // SMTPUTF8 and the DSN parameters (RFC 6531, RFC 3461), kept for the relay.
        record.smtputf8 = envelope.smtputf8
        record.ret = envelope.ret
        record.envelopeID = envelope.envelopeID
        record.recipientParameters = envelope.recipientParameters
        guard SpoolCodec.canEncode(record) else { return .failure(Errno(EMSGSIZE, "envelope too large for the spool")) }
        guard let id = allocateID(arrival: arrival) else {
            let e = Errno(EOVERFLOW, "allocate a message id (a spool record holds an id near the limit)")
            noteFailure(e)
            return .failure(e)
        }
        let payload = SpoolCodec.envelopePayload(record)
        let r = payload.withUnsafeBytes { writeRecord(.envelope, id, $0) }
        switch r {
        case .success(let (seq, offset)):
            openTransactions[id] = seq
            return .success(SpoolTransaction(id: id, firstSegment: seq, firstOffset: offset, arrival: arrival,
                                             recipientCount: envelope.recipients.count))
        case .failure(let e):
            return .failure(e)
        }
    }

    /// Appends a chunk of message text, as records of at most
    /// `SpoolCodec.maxTextPayload` bytes.
    public func appendText(_ t: inout SpoolTransaction, _ bytes: UnsafeRawBufferPointer, now: Int64) -> Result<Void, Errno> {
        var rest = bytes
        while !rest.isEmpty {
            let n = min(rest.count, SpoolCodec.maxTextPayload)
            let (size, overflow) = t.size.addingReportingOverflow(n)
            if overflow { return .failure(Errno(EFBIG, "message text")) }
            if case .failure(let e) = writeRecord(.text, t.id, UnsafeRawBufferPointer(rebasing: rest[0..<n])) {
                return .failure(e)
            }
            t.size = size
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
        return .success(())
    }

    /// Abandons a transaction. The abort record only saves the recovery scan some
    /// memory; without it the transaction is dropped anyway, having no commit.
    public func abort(_ t: SpoolTransaction, now: Int64) {
        _ = writeRecord(.abort, t.id, UnsafeRawBufferPointer(start: nil, count: 0))
        openTransactions[t.id] = nil
        doomed.removeAll { $0 == t.id }
        releaseSpace()
    }

    /// Writes the commit record, after `lastText` (the end of the message's
    /// text, at most `SpoolCodec.maxTextPayload` bytes) in the same write: a
    /// small message's text and commit cost one pwritev, not two (issue 11).
    /// Returns the size of the message's text. The message is promised only
    /// after the next `flush` reports it durable.
    @discardableResult
    public func commit(_ t: SpoolTransaction, lastText: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                       now: Int64) -> Result<Int, Errno> {
        var t = t
        if lastText.count > SpoolCodec.maxTextPayload {
            if case .failure(let e) = appendText(&t, lastText, now: now) {
                abort(t, now: now)
                return .failure(e)
            }
            return commit(t, now: now)
        }
        let (size, overflow) = t.size.addingReportingOverflow(lastText.count)
        if overflow {
            abort(t, now: now)
            return .failure(Errno(EFBIG, "message text"))
        }
        t.size = size
        // Checked before the commit is written: a message the index cannot hold
        // (over 4 GiB of text) is refused, not queued half-way.
        guard var m = QueuedMessage(id: t.id, arrival: t.arrival, size: t.size, firstSegment: t.firstSegment,
                                    firstOffset: t.firstOffset, lastSegment: activeSequence,
                                    recipientStates: [UInt8](repeating: 0, count: t.recipientCount)) else {
            openTransactions[t.id] = nil
            releaseSpace()
            return .failure(Errno(EFBIG, "message too large for the queue"))
        }
        if let k = doomed.firstIndex(of: t.id) {
            doomed.remove(at: k)
            openTransactions[t.id] = nil
            releaseSpace()
            return .failure(Errno(EIO, "sync of the message's text"))
        }
        let payload = SpoolCodec.commitPayload(size: t.size)
        let r = payload.withUnsafeBytes { commitRecord in
            lastText.isEmpty ? writeRecord(.commit, t.id, commitRecord)
                : writeRecords(t.id, [(.text, lastText), (.commit, commitRecord)])
        }
        openTransactions[t.id] = nil
        switch r {
        case .success(let (seq, _)):
            m.move(firstSegment: t.firstSegment, firstOffset: t.firstOffset, lastSegment: seq)
            // Just arrived: its whole max_age is ahead of it, on the monotonic clock.
            m.expiresAt = now / 1_000_000_000 + expiry.maxAge
            awaitingSync.append(m)
            syncWanted = true
            return .success(t.size)
        case .failure(let e):
            releaseSpace()
            return .failure(e)
        }
    }

    /// A group commit is due: commits or compaction copies wait for it, or a
    /// segment was closed with unsynced writes, or a deletion waits for its
    /// directory sync. Text alone does not make one (it is synced with its
    /// commit), nor does a deletion while a message is arriving (its commit will
    /// sync the directory for both) unless space is short.
    public var groupCommitDue: Bool {
        syncWanted || pendingSyncFailure != nil || !retired.isEmpty || deletionDue
    }

    /// The unsynced deletion is synced by the next group commit whatever it holds.
    var deletionDue: Bool { deletionUnsynced && (openTransactions.isEmpty || underPressure) }

    /// A group commit's sync is running.
    public var syncInFlight: Bool { !inFlight.isEmpty }

    /// A group commit is due and may start now: when no sync runs, or when the
    /// running ones are small (fewer than `overlapBelow` commits each), the
    /// newest of them has run its share of a sync's time (`overlapAllowedAt`)
    /// or no other client could still commit (`commitsMayFollow`), and the
    /// storage can run one more at once.
    ///
    /// Overlapping syncs shortens the wait of a few clients (with 4 clients and
    /// 10 ms syncs, 233 messages a second against 176 with one sync at a time,
    /// measured), but every overlapping sync is one more for the card, and a
    /// card runs them one after the other anyway. When the running sync already
    /// carries many commits, the clients are many, and what arrives meanwhile
    /// is better carried by one bigger sync after it (16 clients: 0.13 syncs
    /// per message against 0.20). Unless what waits is itself a big batch
    /// (`ownSyncFrom` commits or more): then it is worth a sync of its own at
    /// once, and the clients' wait shortens without more than one sync per
    /// that many messages.
    ///
    /// And only when syncs are slow (`syncNanoseconds` at least
    /// `overlapFromNanoseconds`): behind a sync of a fraction of a millisecond
    /// (an SSD, a VM's virtual disk) a commit waits little for the next one,
    /// and a sync of its own per message costs CPU and writes for nothing
    /// (2 KB messages, 4 clients, measured: 0.74 syncs per message against
    /// 0.86 in `make bench`'s counting run, 0.80 against 0.86 in `make
    /// bench-flash`; the throughput stayed within this machine's noise).
    public var canStartGroupCommit: Bool {
        guard groupCommitHasRoom else { return false }
        if inFlight.isEmpty || awaitingSync.count >= Self.ownSyncFrom { return true }
        guard let at = overlapAllowedAt else { return false }
        return !commitsMayFollow() || monotonic() >= at
    }

    /// Whether another commit could still come and join the next sync: some
    /// client is connected and not itself waiting for a commit. When none is
    /// (every client's message waits for a sync), the spacing of overlapping
    /// syncs (`overlapAllowedAt`) can group nothing more and only delays the
    /// waiting client, so its sync starts at once. With 4 clients behind
    /// 10 ms syncs, each client's next message comes about a millisecond after
    /// its 250, so most commits found the other three waiting and still sat
    /// out a quarter of a sync: 311 messages a second, against 338 when they
    /// start at once (issue 11, alternating runs; 100 KB: 265 against 301).
    /// The daemon asks its receivers; tests set their own.
    public var commitsMayFollow: () -> Bool = { true }

    /// When a sync may start beside the running ones (monotonic nanoseconds;
    /// nil: not before one of them has finished). Overlapping syncs start at
    /// most one per `syncCapacity`-th of a sync's time, so that the few that
    /// run at once are spread over it, not started back to back: after a big
    /// batch is answered, its clients' next commits come in one by one, and
    /// each started a sync of its own beside the one before (16 clients
    /// behind 10 ms syncs, traced: 80 of 382 syncs carried one commit, and
    /// four often started within 3 ms). Measured in alternating runs (issue
    /// 11): 16 clients took 0.15 to 0.18 syncs per message against 0.17 to
    /// 0.20, at the same rate. 4 clients kept their rate (296-300 messages a
    /// second against 289-316) but, their commits pushed a quarter-sync
    /// apart, rarely share one: 0.97-0.98 syncs per message against
    /// 0.83-0.85. Without a timer for `overlapAllowedAt` (`groupCommitWakeup`)
    /// they fell to 180-200: a lone commit waited for the next event.
    public var overlapAllowedAt: Int64? {
        guard let newest = inFlight.last, syncNanoseconds >= Self.overlapFromNanoseconds,
              inFlight.allSatisfy({ $0.committed.count < Self.overlapBelow }) else { return nil }
        return newest.since + spacingNanoseconds / Int64(max(1, storage.syncCapacity))
    }

    /// The sync time overlapping syncs are spread over: the average, or the
    /// latest sync when that was shorter. A disk busy with other writes
    /// stalls now and then: two syncs in flight together took 246 and 233 ms
    /// among ones of 10 to 60 ms (traced, the spool's own syncs slowed by
    /// 10 ms and `dd` writing beside it). The stall lifted the average from
    /// 16 to 68 ms, and spaced by that the syncs ran one at a time for many
    /// syncs after it: 4 clients got 106 to 119 messages a second against
    /// Postfix's 120 to 146. The latest sync shows the stall is over at once.
    /// The average stays the measure of whether syncs are slow at all, where
    /// one hiccup must not count.
    var spacingNanoseconds: Int64 {
        min(syncNanoseconds, lastSyncNanoseconds ?? syncNanoseconds)
    }

    /// When the loop must look again at a due group commit that waits only for
    /// `overlapAllowedAt` (its poll timeout); nil when nothing waits for that.
    public var groupCommitWakeup: Int64? {
        groupCommitHasRoom ? overlapAllowedAt : nil
    }

    /// A group commit is due and the storage can run one more sync.
    var groupCommitHasRoom: Bool {
        groupCommitDue && inFlight.count < max(1, storage.syncCapacity)
    }

    /// The monotonic clock (nanoseconds) of the sync policy: when syncs start
    /// and how long they take. Tests set their own.
    var monotonic: () -> Int64 = { Clock.monotonic() }

    /// How long a sync has lately taken (monotonic nanoseconds from its start
    /// until the loop saw it finish; a moving average of the last few).
    var syncNanoseconds: Int64 = 0
    /// How long the latest sync took (nil before the first).
    var lastSyncNanoseconds: Int64? = nil
    /// Syncs at least this slow (an SD card's take 5-50 ms) are overlapped.
    static let overlapFromNanoseconds: Int64 = 2_000_000

    /// The moving average after one more sync took `sample`: an eighth of the
    /// way towards it, so one 10 ms hiccup of a fast disk does not switch the
    /// policy, and a card's first two or three syncs do.
    static func averageSync(_ average: Int64, _ sample: Int64) -> Int64 {
        let s = max(0, min(sample, stalledSyncNanoseconds))
        return average + (s - average) / 8
    }

    /// A running sync with this many commits or more makes the next one wait...
    /// 3 was measured and left (issue 11, alternating runs): 16 clients behind
    /// 10 ms syncs took 0.17 to 0.18 syncs per message against 0.17 to 0.20,
    /// but 4 clients sending 100 KB fell to 164-235 messages a second against
    /// 189-251, the row where Postfix is closest. With 2, 4 clients sending
    /// 2 KB fell from about 300 to 177: their syncs no longer overlap.
    static let overlapBelow = 4
    /// ...unless this many commits wait (at most one sync per 8 messages).
    /// With 6, 16 clients behind 10 ms syncs took 0.20 to 0.21 syncs per
    /// message once the daemon spent less CPU per message (issue 11); with
    /// 8, 0.18 to 0.19, and 943 to 966 messages a second against 880 to 921.
    static let ownSyncFrom = 8

    /// Why the spool cannot be vouched for: an I/O error since the last good
    /// sync, or a sync that has not finished in `stalledSyncNanoseconds`.
    public func failure(now: Int64) -> String? {
        if let e = ioFailure { return e.description }
        if let oldest = inFlight.first, now - oldest.since > Self.stalledSyncNanoseconds {
            return "a spool sync has not finished in \((now - oldest.since) / 1_000_000_000)s"
        }
        return nil
    }

    /// Polls readable when the running sync may have finished (-1: none runs).
    public var syncPollFD: Int32 { inFlight.isEmpty ? -1 : storage.syncPollFD }

    /// Polls readable when the running unlink may have finished (-1: none runs).
    public var unlinkPollFD: Int32 { unlinking == nil ? -1 : storage.unlinkPollFD }

    /// The outcome of a group commit: what its clients are told.
    public struct FlushResult {
        /// Messages now durable and queued: their clients get 250.
        public var committed: [QueuedMessage] = []
        /// Messages whose commit could not be made durable: their clients get 452.
        public var failed: [UInt64] = []
        public var error: Errno? = nil
        /// A sync covered everything written before it started.
        public var synced = false
    }

    /// Starts the group commit when one is due and none runs: takes everything
    /// committed so far as its batch and starts one fdatasync of the active
    /// segment and every retired one (and an fsync of the directory after a new
    /// segment). Returns its outcome when it is already known (the storage synced
    /// at once, or a failure stands); nil while the sync runs or when nothing
    /// was due.
    public func startGroupCommit() -> FlushResult? {
        guard canStartGroupCommit else { return nil }
        // Closed segments alone (a large message still arriving) are synced on
        // their own, so their pages go to the card while the message goes on;
        // the active segment and the directory wait for a commit.
        let commits = syncWanted || pendingSyncFailure != nil
        let deletion = deletionUnsynced && (commits || deletionDue)
        var batch = SyncBatch(committed: awaitingSync, relocations: awaitingRelocation, retired: retired,
                              directory: (commits && directorySyncNeeded) || deletion, deletion: deletion,
                              complete: commits)
        if deletion { deletionUnsynced = false }
        awaitingSync = []
        awaitingRelocation = []
        retired = []
        syncWanted = false
        if let e = pendingSyncFailure {
            // A sync or an outcome record failed since the last group commit:
            // what this batch holds cannot be promised.
            pendingSyncFailure = nil
            return finish(batch, .failure(e))
        }
        if commits {
            syncBytes = Self.averageBytes(syncBytes, bytesSinceSync)
            bytesSinceSync = 0
        }
        var files = batch.retired
        if commits && dirty && activeFD >= 0 {
            files.append(activeFD)
            batch.active = activeFD
            dirty = false
        }
        if batch.directory { directorySyncNeeded = false }
        if files.isEmpty && !batch.directory { return finish(batch, .success(())) }
        switch storage.startSync(files: files, directory: batch.directory ? dir : nil) {
        case .finished(let outcome) where inFlight.isEmpty:
            return finish(batch, outcome)
        case .finished(let outcome):
            // Its turn comes after the syncs started before it.
            batch.known = outcome
            inFlight.append(batch)
            return nil
        case .started:
            batch.since = monotonic()
            inFlight.append(batch)
            // Finished already? (Only the oldest can be answered.)
            return inFlight.count == 1 ? finishGroupCommit(wait: false) : nil
        }
    }

    /// The running group commit's outcome once its sync has finished (nil while
    /// it runs, or when none runs); `wait` blocks until it has.
    public func finishGroupCommit(wait: Bool) -> FlushResult? {
        guard let batch = inFlight.first else { return nil }
        let outcome: Result<Void, Errno>
        if let known = batch.known {
            outcome = known
        } else {
            guard let o = storage.syncOutcome(wait: wait) else { return nil }
            outcome = o
            let took = monotonic() - batch.since
            syncNanoseconds = Self.averageSync(syncNanoseconds, took)
            lastSyncNanoseconds = max(0, took)
        }
        inFlight.removeFirst()
        if let e = batch.poisoned { return finish(batch, .failure(e)) }
        return finish(batch, outcome)
    }

    /// Applies a finished sync: on success the batch's messages join the queue
    /// and their relocations take effect; on failure they are refused.
    func finish(_ batch: SyncBatch, _ outcome: Result<Void, Errno>) -> FlushResult {
        // A sync still running may cover one of them too: a batch finished at
        // once (a failure that stands, with syncs running) holds segments
        // retired after a running sync took them as the active one.
        for fd in batch.retired + batch.closeAfter { closeWhenSynced(fd) }
        if case .failure(let e) = outcome {
            if batch.directory { directorySyncNeeded = true }
            if batch.deletion { deletionUnsynced = true }
            syncFailed(e)
            releaseSpace()
            return FlushResult(failed: batch.committed.map { $0.id }, error: e)
        }
        if pendingSyncFailure == nil { ioFailure = nil }
        for m in batch.committed { queue.insert(m) }
        for r in batch.relocations {
            queue.relocate(r.id, firstSegment: r.firstSegment, firstOffset: r.firstOffset, lastSegment: r.lastSegment)
        }
        // The next finished segment may go now that this one's unlink is durable.
        if !batch.relocations.isEmpty || batch.deletion { releaseSpace() }
        return FlushResult(committed: batch.committed, synced: batch.complete)
    }

    /// A sync failed. After a failed fdatasync the kernel may have dropped the
    /// dirty pages, and a second fdatasync of the same file may report success:
    /// nothing written to the spool since the last good sync can be trusted. So
    /// the active file is written no more (the next write starts a new segment),
    /// the commits written meanwhile are refused with the next group commit, and
    /// so are the open transactions (their text may be in the lost pages).
    func syncFailed(_ e: Errno) {
        noteFailure(e)
        activeBroken = true
        dirty = true
        if !awaitingSync.isEmpty || !awaitingRelocation.isEmpty { pendingSyncFailure = e }
        awaitingRelocation = []
        for i in inFlight.indices where inFlight[i].poisoned == nil { inFlight[i].poisoned = e }
        for (id, _) in openTransactions where !doomed.contains(id) { doomed.append(id) }
    }

    /// The group commit, waiting for it: starts one (after the running one, if
    /// any) and returns everything that finished.
    public func flush() -> FlushResult {
        var result = FlushResult()
        func add(_ r: FlushResult?) {
            guard let r else { return }
            result.committed += r.committed
            result.failed += r.failed
            if result.error == nil { result.error = r.error }
            result.synced = r.synced
        }
        while syncInFlight { add(finishGroupCommit(wait: true)) }
        add(startGroupCommit())
        while syncInFlight { add(finishGroupCommit(wait: true)) }
        return result
    }

    /// Records a final outcome for one recipient of a queued message. Returns true
    /// when it finished the message.
    @discardableResult
    public func recordOutcome(_ id: UInt64, recipient: Int, _ outcome: SpoolCodec.Outcome, now: Int64) -> Bool {
        // The record holds the index in a u16; the queue ignores indices the
        // message does not have.
        guard let m = queue.message(id), recipient >= 0, recipient < Int(m.recipientCount) else { return false }
        let payload = SpoolCodec.recipientPayload(index: recipient, outcome: outcome)
        switch payload.withUnsafeBytes({ writeRecord(.recipient, id, $0) }) {
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
        if finished { releaseSpace() }
        return finished
    }

    // MARK: compaction

    /// Bytes the spool may hold beyond its live text before compaction starts:
    /// the live text again (so each copy is paid for by at least as much new mail)
    /// plus two segments.
    ///
    /// In 64 bits: twice a queue of over 1 GiB would overflow a 32-bit `Int`.
    func compactionThreshold() -> Int64 {
        2 * (queue.textBytes + Int64(queue.count) * 256) + 2 * Int64(segmentSize)
    }

    /// When old segments are kept only by a few undelivered messages, copies those
    /// messages forward so the oldest segment can be deleted (see "Compaction" in
    /// SpoolCodec.swift). The copies take effect at the next successful `flush`.
    /// Returns the number of messages copied.
    @discardableResult
    public func compactIfNeeded(now: Int64) -> Int {
        guard awaitingRelocation.isEmpty, inFlight.allSatisfy({ $0.relocations.isEmpty }), totalBytes > compactionThreshold(),
              let oldest = segmentSizes.keys.min(), oldest != activeSequence else { return 0 }
        for (_, s) in openTransactions where s <= oldest { return 0 }
        for m in awaitingSync where m.firstSegment <= oldest { return 0 }
        for b in inFlight { for m in b.committed where m.firstSegment <= oldest { return 0 } }
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
        guard SpoolCodec.canEncode(envelope) else { return "its envelope cannot be written again" }
        let payload = SpoolCodec.envelopePayload(envelope)
        let first: (UInt64, Int)
        switch payload.withUnsafeBytes({ writeRecord(.envelope, m.id, $0) }) {
        case .success(let at): first = at
        case .failure(let e): return e.description
        }
        loop: while true {
            switch reader.next(spool: self) {
            case .failure(let f): return "\(f)"
            case .success(.end): break loop
            case .success(.text):
                let n = reader.pendingText.count
                if case .failure(let e) = writeRecord(.text, m.id, reader.pendingText) {
                    return e.description
                }
                reader.advance(n)
            }
        }
        let commit = SpoolCodec.commitPayload(size: m.size)
        if case .failure(let e) = commit.withUnsafeBytes({ writeRecord(.commit, m.id, $0) }) {
            return e.description
        }
        for i in 0..<Int(m.recipientCount) where m.state(i) != 0 {
            guard let outcome = SpoolCodec.Outcome(rawValue: m.state(i)) else { continue }
            let r = SpoolCodec.recipientPayload(index: i, outcome: outcome)
            if case .failure(let e) = r.withUnsafeBytes({ writeRecord(.recipient, m.id, $0) }) {
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
        while syncInFlight { _ = finishGroupCommit(wait: true) }
        finishDeletion(wait: true)
        if deletionUnsynced { _ = syncDeletions() }
        for fd in retired {
            _ = storage.syncData(fd)
            storage.close(fd)
        }
        retired = []
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
