import CLibc
import PosternCore

/// How the spool gives space back and decides whether it can take mail: segment
/// deletion (oldest first, each made durable before the next), the reclaiming
/// of the active segment when the spool is short of space and nothing in it is
/// live, and the quota and free-space checks behind 452 4.3.1 (issue 7 item 4).
///
/// A full disk must not outlive its cause. Draining the queue finishes every
/// message, but the segment being written holds their finished records until it
/// reaches `segment_size`, and on a small file system it never does: so when the
/// spool is short of space and nothing is live, the active segment is reclaimed
/// at once. Doing it only under pressure keeps the flash-wear rule (no file
/// created or deleted per message) in normal running.
extension Spool {
    /// Below this much free space (after a write failed with ENOSPC) MAIL is
    /// refused at once rather than at the end of DATA: a board's alerts are a
    /// few KiB, and a text record is at most 64 KiB plus a segment's first page.
    public static let minimumFreeSpace: Int64 = 128 * 1024

    /// How often `acceptsMail` may retry a reclaim that found nothing to do or
    /// failed; the immediate triggers are a finished message and a failed write.
    static let reclaimRetryNanoseconds: Int64 = 1_000_000_000

    /// Whether new mail can be promised: under `max_size`, and — after a write
    /// failed for lack of space — the file system has `minimumFreeSpace` again
    /// (statvfs(3), so space freed by other programs counts at once). Under
    /// pressure it first reclaims the active segment if nothing in the spool is
    /// live (after a reload lowered `max_size`, or when an earlier reclaim could
    /// not finish); at most once a second.
    public func acceptsMail(now: Int64) -> Bool {
        if underPressure, lastReclaimAttempt.map({ now - $0 >= Self.reclaimRetryNanoseconds }) ?? true {
            lastReclaimAttempt = now
            reclaimIdleSpace()
        }
        if totalBytes >= maxSize { return false }
        if spaceShort {
            if case .success(let free) = storage.availableSpace(dir), free < Self.minimumFreeSpace { return false }
            // Room again (or no way to tell: then let the write decide).
            spaceShort = false
        }
        return true
    }

    /// A write failed for lack of space and no free space was seen since, or the
    /// spool is at `max_size`.
    var underPressure: Bool { spaceShort || totalBytes >= maxSize }

    /// No segment holds anything that must be kept: no queued message, open
    /// transaction, commit waiting for its sync, or compaction copy.
    var nothingLive: Bool {
        queue.isEmpty && openTransactions.isEmpty && awaitingSync.isEmpty && awaitingRelocation.isEmpty
            && inFlight.isEmpty
    }

    /// Deletes finished segments, and under pressure the active one too.
    func releaseSpace() {
        collectGarbage()
        if underPressure { reclaimIdleSpace() }
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
    ///
    /// In the daemon the directory sync that makes an unlink durable is not run
    /// here but by the next group commit, while the loop goes on (issue 11: it
    /// shares the sync a new segment or the next message needs anyway), and the
    /// next deletion waits for it to finish (`finish` calls back). The unlink
    /// itself runs elsewhere too where the storage can (`startUnlink`, io_uring):
    /// the segment is counted gone, and its unlink due a directory sync, once it
    /// has finished (`finishDeletion`). With `now` (start, and reclaiming space
    /// under pressure), or when the storage syncs at once anyway, each unlink is
    /// run and synced here.
    func collectGarbage(now: Bool = false) {
        let here = now || storage.syncsAtOnce
        if unlinking != nil {
            guard here else { return }
            finishDeletion(wait: true)
        }
        var pin = UInt64.max
        for (_, s) in openTransactions { pin = min(pin, s) }
        for m in awaitingSync { pin = min(pin, m.firstSegment) }
        for b in inFlight { for m in b.committed { pin = min(pin, m.firstSegment) } }
        while let oldest = segmentSizes.keys.min(), oldest != activeSequence, oldest < pin,
              !queue.isReferenced(oldest) {
            if deletionUnsynced || inFlight.contains(where: { $0.deletion }) {
                // An earlier unlink is not known durable yet.
                guard here, syncDeletions() else { return }
            }
            if !here {
                // The reader lets go of the file first, so that the unlink, not
                // its close in the loop, frees the blocks.
                segmentDeleted?(oldest)
                if storage.startUnlink(path(oldest)) {
                    unlinking = oldest
                    return
                }
            }
            if !deleteSegment(oldest) { return }
        }
        if here && deletionUnsynced { _ = syncDeletions() }
    }

    /// Unlinks segment `seq`; the directory sync that makes it durable is
    /// `syncDeletions` or the next group commit's. False when the unlink failed
    /// (logged). A file already gone (removed by hand, or by an unlink elsewhere
    /// whose outcome was lost) counts as deleted: else it would hold every
    /// newer segment forever.
    func deleteSegment(_ seq: UInt64) -> Bool {
        if case .failure(let e) = storage.unlink(path(seq)), e.code != ENOENT {
            log.warning("could not delete a finished segment", [("error", e.description)], id: MessageIDs.spoolError)
            return false
        }
        forgetSegment(seq)
        return true
    }

    /// The segment is gone: no longer counted, and its unlink due a directory sync.
    func forgetSegment(_ seq: UInt64) {
        subtractBytes(segmentSizes[seq] ?? 0)
        segmentSizes[seq] = nil
        deletionUnsynced = true
        segmentDeleted?(seq)
        log.debug("segment deleted", [("segment", SpoolCodec.segmentName(seq))])
    }

    /// The unlink `collectGarbage` started, once it has finished (with `wait`,
    /// blocking until then): on success the segment is gone and the next group
    /// commit syncs the directory; on failure it stays, and a later
    /// `collectGarbage` tries again. True when it finished.
    @discardableResult
    public func finishDeletion(wait: Bool) -> Bool {
        guard let seq = unlinking else { return false }
        guard let outcome = storage.unlinkOutcome(wait: wait) else {
            guard wait else { return false }
            // Nothing is running after all: unlink here.
            unlinking = nil
            _ = deleteSegment(seq)
            return true
        }
        unlinking = nil
        switch outcome {
        case .finished(.success):
            forgetSegment(seq)
        case .finished(.failure(let e)) where e.code == ENOENT:
            forgetSegment(seq)
        case .finished(.failure(let e)):
            log.warning("could not delete a finished segment", [("error", e.description)], id: MessageIDs.spoolError)
        case .unable:
            // Whether the name went is not known: unlinking again tells.
            _ = deleteSegment(seq)
        }
        return true
    }

    /// Syncs the directory now, making every unlink so far durable. False when
    /// it failed (logged): the next deletion must not become durable before the
    /// earlier ones, so the caller stops deleting.
    func syncDeletions() -> Bool {
        if case .failure(let e) = storage.syncDirectory(dir) {
            log.warning("could not sync the spool directory", [("error", e.description)], id: MessageIDs.spoolError)
            return false
        }
        deletionUnsynced = false
        return true
    }

    /// When nothing in the spool is live, deletes every segment, the active one
    /// included, so a full disk or quota recovers as soon as the queue drains.
    /// Returns true when it freed space.
    ///
    /// The order keeps the rules of "Deletion" in SpoolCodec.swift: the older
    /// segments go first, oldest first; then a new segment is started and the old
    /// active one deleted like any other. When even the new segment cannot be
    /// created or its header written (the disk is that full, or the sequence
    /// numbers ran out), the old active segment — now the only one, with nothing
    /// live in it and no older segment whose messages its records finish — is
    /// deleted first and the new one started after. A crash anywhere in between
    /// leaves only finished segments, or none: recovery queues nothing from them
    /// and starts a new segment. The new segment is made durable, as always, by
    /// the flush before anything in it is acknowledged.
    @discardableResult
    func reclaimIdleSpace() -> Bool {
        guard nothingLive else { return false }
        // With only its header written (or already deleted) the active segment
        // gives nothing back; older finished segments are `collectGarbage`'s.
        guard activeHoldsRecords else { return false }
        let before = totalBytes
        collectGarbage(now: true)
        let old = activeSequence
        switch roll(syncingOld: false) {
        case .success:
            collectGarbage(now: true)
        case .failure(let e):
            log.warning("no room for a new spool segment; deleting the finished one first",
                        [("error", e.description)], id: MessageIDs.spoolError)
            if segmentSizes.count == 1, segmentSizes[old] != nil, deleteSegment(old), syncDeletions() {
                // Everything is gone: the numbering may start again if it ran out.
                if activeSequence >= SpoolCodec.maxSequence { activeSequence = 0 }
                if case .failure(let e) = roll() {
                    log.warning("still no room for a new spool segment", [("error", e.description)],
                                id: MessageIDs.spoolError)
                }
            }
        }
        let freed = totalBytes < before
        if segmentSizes.count <= (activeFD >= 0 ? 1 : 0) {
            // Every old segment is gone: a failed sync or outcome record in them
            // no longer stands between the next commit and its 250.
            pendingSyncFailure = nil
        }
        if freed {
            reclaimedSegments += 1
            log.info("spool space reclaimed: nothing queued, finished segments deleted",
                     [("freed_bytes", "\(before - totalBytes)"), ("spool_bytes", "\(totalBytes)")])
        }
        return freed
    }

    /// The active segment holds records, not just its header (or, with no
    /// segment open, the segment numbered `activeSequence` is still there).
    var activeHoldsRecords: Bool {
        activeFD >= 0 ? activeOffset > SpoolCodec.segmentHeaderLength : segmentSizes[activeSequence] != nil
    }

    /// The next message id. Ids only need to increase and to be unique among
    /// the records on disk; only a crafted record with an id just below
    /// `SpoolCodec.maxID` can exhaust them. Then, once nothing in the spool is
    /// live, every segment is deleted (no id is left on disk) and numbering
    /// starts again from the clock, as at a first start; until then, nil.
    func allocateID(arrival: Int64) -> UInt64? {
        if nextID >= SpoolCodec.maxID {
            guard nothingLive else { return nil }
            collectGarbage(now: true)
            if activeHoldsRecords { reclaimIdleSpace() }
            let onlyAnEmptyActive = segmentSizes.keys.allSatisfy { $0 == activeSequence && activeFD >= 0 }
            guard onlyAnEmptyActive, !activeHoldsRecords else { return nil }
            nextID = Self.firstID(wall: arrival)
            log.warning("message ids ran out (a spool record held an id near the limit); numbering starts again",
                        [("next_id", Spool.queueID(nextID))], id: MessageIDs.spoolError)
        }
        let id = nextID
        nextID += 1
        return id
    }

    // MARK: accounting

    /// Counts a segment found by the scan or started by `roll`.
    func noteSegment(_ seq: UInt64, size: Int) {
        segmentSizes[seq] = size
        addBytes(size)
    }

    /// In 64 bits on every board, so a spool of more than 2 GiB is counted
    /// right on a 32-bit one (issue 10 item 2). Saturating all the same: only a
    /// crafted spool could pass `Int64.max`, and it then simply counts as full.
    func addBytes(_ n: Int) {
        let (sum, overflow) = totalBytes.addingReportingOverflow(Int64(n))
        totalBytes = overflow ? Int64.max : sum
    }

    func subtractBytes(_ n: Int) {
        totalBytes = max(0, totalBytes - Int64(n))
    }
}
