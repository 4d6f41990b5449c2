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
    public var dropped = 0
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
    let segmentSize: Int
    let maxSize: Int
    let log: Log

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
    var syncNeeded = false
    var directorySyncNeeded = false
    /// An fdatasync of a segment being closed failed: the commits waiting for the
    /// next flush cannot be promised.
    var pendingSyncFailure: Errno? = nil
    /// Monotonic time of the last ENOSPC; new mail is refused for a while after it.
    var noSpaceAt: Int64? = nil

    public var queue = Queue()

    public init(dir: String, segmentSize: Int, maxSize: Int, log: Log) {
        self.dir = dir
        self.segmentSize = segmentSize
        self.maxSize = maxSize
        self.log = log
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
    public func open(wallNow: Int64) -> Result<RecoveryReport, Errno> {
        if case .failure(let e) = Sys.mkdir(dir, 0o700) { return .failure(e) }
        switch Sys.open(dir + "/lock", O_RDWR | O_CREAT, 0o600) {
        case .success(let fd): lockFD = fd
        case .failure(let e): return .failure(e)
        }
        if cl_lock_exclusive(lockFD) != 0 {
            return .failure(Errno(cl_errno(), "lock \(dir)/lock (is another postern using this spool?)"))
        }
        let names: [String]
        switch Sys.listDirectory(dir) {
        case .success(let n): names = n
        case .failure(let e): return .failure(e)
        }
        var sequences = names.compactMap { SpoolCodec.segmentSequence(fileName: $0) }
        sequences.sort()
        var report = RecoveryReport()
        var scan = RecoveryScan()
        let buffer = ByteBuffer(capacity: BufferSizes.spoolRead)
        for seq in sequences {
            report.segments += 1
            if case .failure(let e) = scanSegment(seq, buffer, &scan, &report) { return .failure(e) }
        }
        for m in scan.committed.values where !m.isFinished {
            queue.insert(m)
            report.queued += 1
        }
        report.dropped = scan.pending.count
        nextID = max(scan.maxID + 1, UInt64(max(wallNow, 0)) << 20)
        activeSequence = sequences.last ?? 0
        if case .failure(let e) = roll() { return .failure(e) }
        collectGarbage()
        return .success(report)
    }

    struct RecoveryScan {
        struct Pending {
            var segment: UInt64
            var offset: Int
            var arrival: Int64
            var recipients: Int
        }
        var pending: [UInt64: Pending] = [:]
        var committed: [UInt64: QueuedMessage] = [:]
        var maxID: UInt64 = 0
    }

    func scanSegment(_ seq: UInt64, _ buffer: ByteBuffer, _ scan: inout RecoveryScan,
                     _ report: inout RecoveryReport) -> Result<Void, Errno> {
        let fd: Int32
        switch Sys.open(path(seq), O_RDONLY) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { Sys.close(fd) }
        let fileSize: Int
        switch Sys.fileSize(fd) {
        case .success(let s): fileSize = s
        case .failure(let e): return .failure(e)
        }
        segmentSizes[seq] = fileSize
        totalBytes += fileSize
        buffer.clear()
        var header = [UInt8](repeating: 0, count: SpoolCodec.segmentHeaderLength)
        let got = header.withUnsafeMutableBytes { Sys.pread(fd, $0, at: 0) }
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
                    let r = big.withUnsafeMutableBytes { Sys.pread(fd, $0, at: fileOffset) }
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
                let r = Sys.pread(fd, buffer.writable, at: fileOffset + buffer.count)
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
                                                          recipients: e.recipients.count)
        case .text:
            break
        case .commit:
            guard let p = scan.pending.removeValue(forKey: frame.id), let size = SpoolCodec.parseCommit(payload) else { return }
            scan.committed[frame.id] = QueuedMessage(id: frame.id, arrival: p.arrival, size: size,
                                                     firstSegment: p.segment, firstOffset: p.offset, lastSegment: seq,
                                                     recipientStates: [UInt8](repeating: 0, count: p.recipients))
        case .abort:
            scan.pending[frame.id] = nil
        case .recipient:
            guard var m = scan.committed[frame.id], let r = SpoolCodec.parseRecipient(payload),
                  r.index < m.recipientStates.count else { return }
            m.recipientStates[r.index] = r.outcome.rawValue
            m.lastSegment = seq
            scan.committed[frame.id] = m
        }
    }

    // MARK: writing

    /// Closes the active segment (synced if it holds unsynced records) and starts
    /// the next. The new file's header is synced, and the directory, by the next
    /// `flush` before anything in it is acknowledged (issue 3 item 2).
    func roll() -> Result<Void, Errno> {
        if activeFD >= 0 {
            if syncNeeded {
                if case .failure(let e) = Sys.fdatasync(activeFD) { pendingSyncFailure = e }
            }
            Sys.close(activeFD)
            activeFD = -1
        }
        let seq = activeSequence + 1
        let fd: Int32
        switch Sys.open(path(seq), O_WRONLY | O_CREAT | O_EXCL, 0o600) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        let header = SpoolCodec.segmentHeader(sequence: seq)
        if case .failure(let e) = header.withUnsafeBytes({ Sys.pwrite(fd, $0, at: 0) }) {
            Sys.close(fd)
            _ = Sys.unlink(path(seq))
            return .failure(e)
        }
        activeFD = fd
        activeSequence = seq
        activeOffset = header.count
        activeBroken = false
        segmentSizes[seq] = header.count
        totalBytes += header.count
        directorySyncNeeded = true
        syncNeeded = true
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
        let result: Int = header.withUnsafeBytes { h in
            trailer.withUnsafeBytes { t in
                var iov = [
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress), iov_len: h.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: t.baseAddress), iov_len: t.count),
                ]
                while true {
                    let n = iov.withUnsafeMutableBufferPointer { pwritev(activeFD, $0.baseAddress, 3, off_t(start)) }
                    if n < 0 && cl_errno() == EINTR { continue }
                    return n
                }
            }
        }
        if result != total {
            let e = result < 0 ? Errno.current("pwritev \(SpoolCodec.segmentName(activeSequence))")
                               : Errno(ENOSPC, "pwritev \(SpoolCodec.segmentName(activeSequence))")
            if case .failure = Sys.ftruncate(activeFD, start) { activeBroken = true }
            return .failure(noteFailure(e, now))
        }
        activeOffset += total
        segmentSizes[activeSequence, default: 0] += total
        totalBytes += total
        return .success((activeSequence, start))
    }

    func noteFailure(_ e: Errno, _ now: Int64) -> Errno {
        if e.isNoSpace { noSpaceAt = now }
        return e
    }

    /// Opens a transaction: writes the envelope record.
    public func begin(_ envelope: Envelope, arrival: Int64, now: Int64) -> Result<SpoolTransaction, Errno> {
        let id = nextID
        nextID += 1
        let payload = SpoolCodec.envelopePayload(SpoolCodec.EnvelopeRecord(
            arrival: arrival, eightBit: envelope.eightBit, from: envelope.from.bytes,
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
            awaitingSync.append(QueuedMessage(id: t.id, arrival: t.arrival, size: t.size, firstSegment: t.firstSegment,
                                              firstOffset: t.firstOffset, lastSegment: activeSequence,
                                              recipientStates: [UInt8](repeating: 0, count: t.recipientCount)))
            syncNeeded = true
            return .success(())
        case .failure(let e):
            collectGarbage()
            return .failure(e)
        }
    }

    public var hasUnsyncedWrites: Bool { syncNeeded || directorySyncNeeded }

    /// The group commit: one fdatasync (and a directory sync after a new segment)
    /// for everything written since the last flush. On success the committed
    /// messages join the queue and their ids are returned, so their clients can be
    /// told 250; on failure their ids come back in `failed` for a 451.
    public func flush() -> (committed: [QueuedMessage], failed: [UInt64], error: Errno?) {
        guard syncNeeded || directorySyncNeeded || pendingSyncFailure != nil else { return ([], [], nil) }
        var failure = pendingSyncFailure
        pendingSyncFailure = nil
        if failure == nil && syncNeeded && activeFD >= 0 {
            if case .failure(let e) = Sys.fdatasync(activeFD) { failure = e }
        }
        if failure == nil && directorySyncNeeded && cl_sync_directory(dir) != 0 {
            failure = Errno.current("fsync \(dir)")
        }
        syncNeeded = false
        directorySyncNeeded = false
        let waiting = awaitingSync
        awaitingSync = []
        if let e = failure {
            // After a failed fdatasync the kernel may have dropped the dirty pages:
            // nothing written since the last good sync can be trusted, so stop
            // writing to this file (the next write starts a new segment).
            activeBroken = true
            collectGarbage()
            return ([], waiting.map { $0.id }, e)
        }
        for m in waiting { queue.insert(m) }
        return (waiting, [], nil)
    }

    /// Records a final outcome for one recipient of a queued message. Returns true
    /// when it finished the message.
    @discardableResult
    public func recordOutcome(_ id: UInt64, recipient: Int, _ outcome: SpoolCodec.Outcome, now: Int64) -> Bool {
        let payload = SpoolCodec.recipientPayload(index: recipient, outcome: outcome)
        switch payload.withUnsafeBytes({ writeRecord(.recipient, id, $0, now: now) }) {
        case .success(let (seq, _)):
            queue.noteRecord(of: id, inSegment: seq)
            syncNeeded = true
        case .failure(let e):
            // Delivery already happened; without the record a restart may send it
            // again (at-least-once), which is the safe direction.
            log.warning("could not record a delivery outcome", [("queue_id", Spool.queueID(id)), ("error", e.description)])
        }
        let finished = queue.setOutcome(id, recipient: recipient, outcome)
        if finished { collectGarbage() }
        return finished
    }

    /// Deletes every segment that is not active, holds no queued message and
    /// is older than every open transaction.
    func collectGarbage() {
        var pin = UInt64.max
        for (_, s) in openTransactions { pin = min(pin, s) }
        for m in awaitingSync { pin = min(pin, m.firstSegment) }
        var doomed: [UInt64] = []
        for (seq, _) in segmentSizes where seq != activeSequence && seq < pin && !queue.isReferenced(seq) {
            doomed.append(seq)
        }
        for seq in doomed {
            switch Sys.unlink(path(seq)) {
            case .success:
                totalBytes -= segmentSizes[seq] ?? 0
                segmentSizes[seq] = nil
                log.debug("segment deleted", [("segment", SpoolCodec.segmentName(seq))])
            case .failure(let e):
                log.warning("could not delete a finished segment", [("error", e.description)])
            }
        }
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
            if syncNeeded { _ = Sys.fdatasync(activeFD) }
            Sys.close(activeFD)
            activeFD = -1
        }
        if lockFD >= 0 {
            Sys.close(lockFD)
            lockFD = -1
        }
    }
}
