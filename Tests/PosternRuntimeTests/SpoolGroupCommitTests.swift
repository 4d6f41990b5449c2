import Testing
@testable import PosternCore
@testable import PosternRuntime

/// The group commit as the daemon runs it since issue 11 item 3: the sync is
/// started, the loop goes on, and the 250s go out when it has finished.
@Suite("Group commit with the sync in flight (issue 11 item 3)")
struct SpoolGroupCommitTests {
    /// `syncNanoseconds`: what the spool has seen syncs take. These tests are
    /// about a card's slow syncs (10 ms), which run beside each other; the
    /// simulated disk's take microseconds, and each one moves the average
    /// only an eighth of the way, so a test's few keep it above the
    /// overlapping threshold.
    func newSpool(_ disk: SimulatedDisk, segmentSize: Int = 1 << 20, syncNanoseconds: Int64 = 10_000_000) -> Spool {
        let spool = Spool(dir: "/spool", segmentSize: segmentSize, maxSize: 1 << 30,
                          log: Log(showDebug: false, quiet: true), storage: disk)
        _ = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true))
        spool.syncNanoseconds = syncNanoseconds
        spool.monotonic = { [clock] in clock.now }
        return spool
    }

    /// The spool's monotonic clock: it moves only when a test moves it.
    final class TestClock {
        var now: Int64 = 1_000_000_000
    }
    let clock = TestClock()

    /// Moves the clock on by the spacing of overlapping syncs, so that the
    /// next one may start beside the running ones (`overlapAllowedAt`).
    func spacingLater(_ spool: Spool) {
        clock.now += spool.syncNanoseconds / Int64(spool.storage.syncCapacity)
    }

    func open(_ spool: Spool, text: Int = 100) -> SpoolTransaction {
        var t = try! spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: 0).get()
        // In pieces of 1000, as a client's text arrives: a segment fills to its
        // size and the next one starts.
        var left = text
        let piece = [UInt8](repeating: 65, count: 1000)
        while left > 0 {
            let n = min(left, piece.count)
            _ = piece[0..<n].withUnsafeBytes { spool.appendText(&t, $0, now: 0) }
            left -= n
        }
        return t
    }

    func commit(_ spool: Spool, text: Int = 100) -> UInt64 {
        let t = open(spool, text: text)
        #expect((try? spool.commit(t, now: 0).get()) != nil)
        return t.id
    }

    @Test("with one helper, a commit written while a sync runs waits for the next one, which starts once it has finished")
    func commitsDuringASyncShareTheNext() {
        let disk = SimulatedDisk()
        disk.syncCapacity = 1
        let spool = newSpool(disk)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        #expect(spool.syncInFlight)
        let b = commit(spool)
        let c = commit(spool)
        // One sync at a time: nothing starts while one runs.
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 1)
        let first = spool.finishGroupCommit(wait: false)
        #expect(first?.committed.map { $0.id } == [a])
        #expect(spool.queue.message(a) != nil && spool.queue.message(b) == nil)
        #expect(spool.groupCommitDue && !spool.syncInFlight)
        #expect(spool.startGroupCommit() == nil)
        let second = spool.finishGroupCommit(wait: false)
        #expect(second?.committed.map { $0.id } == [b, c])
        #expect(disk.startedSyncs == 2)
        #expect(!spool.groupCommitDue)
    }

    @Test("two syncs run at once; their 250s come in the order they started, and commits written while both run share the next")
    func twoSyncsAtOnce() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let b = commit(spool)
        // The second starts beside the first, once the first has run its share.
        spacingLater(spool)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 2)
        let c = commit(spool)
        #expect(!spool.canStartGroupCommit && spool.groupCommitDue)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [b])
        #expect(spool.flush().committed.map { $0.id } == [c])
    }

    @Test("behind a fast sync (under 2 ms) nothing overlaps: the commits written meanwhile wait for it and share the next; a batch of 8 still starts at once")
    func fastSyncsDoNotOverlap() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, syncNanoseconds: Spool.overlapFromNanoseconds - 1)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let b = commit(spool)
        let c = commit(spool)
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 1)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.canStartGroupCommit)
        #expect(spool.flush().committed.map { $0.id } == [b, c])
        #expect(disk.startedSyncs == 2)

        spool.syncNanoseconds = 0
        let d = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let batch = (0..<Spool.ownSyncFrom).map { _ in commit(spool) }
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 4)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [d])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == batch)
    }

    @Test("the sync time is a moving average: one slow sync does not switch to overlapping, two or three do, and a run of fast ones switches back")
    func syncAverage() {
        let slow: Int64 = 10_000_000, fast: Int64 = 200_000
        var average: Int64 = fast
        average = Spool.averageSync(average, slow)
        #expect(average < Spool.overlapFromNanoseconds && average > fast)
        average = Spool.averageSync(average, slow)
        #expect(average >= Spool.overlapFromNanoseconds)
        // A card's first syncs, from nothing known: overlapping from the third.
        var card: Int64 = 0
        for _ in 0..<3 { card = Spool.averageSync(card, slow) }
        #expect(card >= Spool.overlapFromNanoseconds)
        for _ in 0..<16 { average = Spool.averageSync(average, fast) }
        #expect(average < Spool.overlapFromNanoseconds)
        // A clock that went wrong (a negative or huge sample) never traps.
        #expect(Spool.averageSync(average, -5) >= 0)
        #expect(Spool.averageSync(Spool.stalledSyncNanoseconds, Int64.max) == Spool.stalledSyncNanoseconds)
        #expect(Spool.averageSync(0, Int64.min) == 0)
    }

    @Test("the spool learns the sync time from the syncs it runs")
    func learnsSyncTime() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, syncNanoseconds: 10_000_000)
        for _ in 0..<20 {
            _ = commit(spool)
            _ = spool.flush()
        }
        // The simulated disk syncs in microseconds.
        #expect(spool.syncNanoseconds < Spool.overlapFromNanoseconds)
    }

    @Test("a second sync starts beside a running one only while that one is small: one carrying 4 commits makes the next wait for it")
    func noOverlapBehindABigSync() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let big = (0..<Spool.overlapBelow).map { _ in commit(spool) }
        #expect(spool.startGroupCommit() == nil)
        let next = commit(spool)
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 1)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == big)
        #expect(spool.canStartGroupCommit)
        #expect(spool.flush().committed.map { $0.id } == [next])
        #expect(disk.startedSyncs == 2)
    }

    @Test("behind a big sync, a batch of 8 waiting commits is worth a sync of its own and starts beside it; 7 wait")
    func bigBatchOverlapsABigSync() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let big = (0..<Spool.overlapBelow).map { _ in commit(spool) }
        #expect(spool.startGroupCommit() == nil)
        let waiting = (0..<(Spool.ownSyncFrom - 1)).map { _ in commit(spool) }
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        let last = commit(spool)
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 2)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == big)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == waiting + [last])
        #expect(!spool.groupCommitDue)
    }

    @Test("a sync beside running ones starts only once the newest has run a capacity's share of a sync's time; the loop is told when, and a batch of 8 does not wait")
    func overlappingSyncsAreSpaced() {
        let disk = SimulatedDisk()
        disk.syncCapacity = 4
        let spool = newSpool(disk)
        let spacing = spool.syncNanoseconds / 4
        let t0 = clock.now
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        #expect(spool.groupCommitWakeup == nil)   // nothing waits
        let b = commit(spool)
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.groupCommitWakeup == t0 + spacing)
        clock.now = t0 + spacing - 1
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 1)
        clock.now = t0 + spacing
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 2)
        // The next is spaced from the newest, not the oldest.
        let c = commit(spool)
        #expect(spool.groupCommitWakeup == t0 + 2 * spacing)
        #expect(!spool.canStartGroupCommit)
        // Enough waiting commits start at once.
        let batch = (1..<Spool.ownSyncFrom).map { _ in commit(spool) }
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 3)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [b])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [c] + batch)
        #expect(!spool.groupCommitDue && spool.groupCommitWakeup == nil)
    }

    @Test("when no other client could commit (every one waits for a sync), an overlapping sync starts at once; behind a big sync or with no room it still waits")
    func nothingToWaitForStartsAtOnce() {
        let disk = SimulatedDisk()
        disk.syncCapacity = 2
        let spool = newSpool(disk)
        var othersMayCommit = true
        spool.commitsMayFollow = { othersMayCommit }
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let b = commit(spool)
        // Another client is still sending: b waits out the spacing for it.
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.groupCommitWakeup != nil)
        // Every client now waits for a commit: nothing more can join b's sync.
        othersMayCommit = false
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 2)
        // Both run, and two is this storage's capacity: c waits for a slot.
        let c = commit(spool)
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.canStartGroupCommit)
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 3)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [b])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [c])
        // Behind a sync carrying 4 commits the next waits for it, as before.
        let big = (0..<Spool.overlapBelow).map { _ in commit(spool) }
        #expect(spool.startGroupCommit() == nil)
        let d = commit(spool)
        #expect(spool.groupCommitDue && !spool.canStartGroupCommit)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == big)
        #expect(spool.flush().committed.map { $0.id } == [d])
    }

    @Test("after a stalled sync, overlapping syncs are spaced by the latest sync's time, not by the average the stall raised")
    func spacingRecoversAfterAStall() {
        let disk = SimulatedDisk()
        disk.syncCapacity = 4
        let spool = newSpool(disk, syncNanoseconds: 10_000_000)
        // A disk busy with other writes: one sync takes 250 ms.
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        clock.now += 250_000_000
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.syncNanoseconds == 40_000_000)
        // While the stall is the latest sync, the spacing is the average's.
        let t1 = clock.now
        let b = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let c = commit(spool)
        #expect(spool.groupCommitWakeup == t1 + 40_000_000 / 4)
        // The next sync takes 10 ms again: the average is still 36 ms, but
        // the next overlapping sync may start a quarter of 10 ms after the newest.
        clock.now += 10_000_000
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [b])
        #expect(spool.syncNanoseconds == 36_250_000 && spool.lastSyncNanoseconds == 10_000_000)
        let t2 = clock.now
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == 3)
        let d = commit(spool)
        #expect(spool.groupCommitWakeup == t2 + 10_000_000 / 4)
        clock.now = t2 + 10_000_000 / 4
        #expect(spool.startGroupCommit() == nil && disk.startedSyncs == 4)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [c])
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [d])
    }

    @Test("a sync that ran at once (no helper free) is answered only after the one started before it")
    func syncAtOnceWaitsItsTurn() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let b = commit(spool)
        disk.nextSyncAtOnce = true
        spacingLater(spool)
        #expect(spool.startGroupCommit() == nil)
        #expect(spool.queue.message(b) == nil)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [a])
        #expect(spool.finishGroupCommit(wait: false)?.committed.map { $0.id } == [b])
        #expect(!spool.syncInFlight)
    }

    @Test("when the first of two syncs fails, the second fails too: what it covers may be in the dropped pages")
    func failureFailsTheLaterSync() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let b = commit(spool)
        spacingLater(spool)
        #expect(spool.startGroupCommit() == nil)
        disk.failNextSync = true
        #expect(spool.finishGroupCommit(wait: true)?.failed == [a])
        let second = spool.finishGroupCommit(wait: true)
        #expect(second?.failed == [b] && second?.committed.isEmpty == true)
        #expect(spool.queue.isEmpty)
    }

    @Test("a failed sync refuses its batch, the commits written while it ran and the open transactions; new mail goes to a new segment")
    func failedSync() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk)
        let a = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        let openOne = open(spool)
        let b = commit(spool)
        disk.failNextSync = true
        let segment = spool.activeSequence
        let r = spool.finishGroupCommit(wait: false)
        #expect(r?.failed == [a] && r?.error != nil && r?.committed.isEmpty == true)
        // b was written into the file whose sync failed: refused with the next.
        let next = spool.startGroupCommit()
        #expect(next?.failed == [b] && next?.error != nil)
        // The open transaction's text may be in the lost pages.
        #expect((try? spool.commit(openOne, now: 0).get()) == nil)
        // A message received after is accepted, in a new segment.
        let d = commit(spool)
        #expect(spool.activeSequence > segment)
        let fine = spool.flush()
        #expect(fine.committed.map { $0.id } == [d] && fine.error == nil)
        #expect(spool.queue.message(a) == nil && spool.queue.message(b) == nil && spool.queue.message(d) != nil)
    }

    @Test("segments closed under a message are synced by its group commit and closed when it finishes")
    func retiredSegments() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, segmentSize: 4096)
        let before = disk.fds.count
        let id = commit(spool, text: 20_000)
        // The message spans several segments; none was synced on the way.
        #expect(disk.startedSyncs == 0 && disk.syncs == 0)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedFiles.count >= 4, "\(disk.startedFiles.count) files in the sync")
        #expect(disk.fds.count > before)
        let r = spool.finishGroupCommit(wait: true)
        #expect(r?.committed.map { $0.id } == [id])
        // Only the active segment is still open.
        #expect(disk.fds.count == before)
    }

    @Test("a segment filled while its sync runs is closed only once that sync has finished (io_uring looks the descriptor up late)")
    func activeClosedAfterItsSync() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, segmentSize: 4096)
        // Text and commit that end 16 bytes past the segment's size, in it.
        let first = try! spool.begin(envelope(["r@example.com"]), arrival: 1_700_000_000, now: 0).get()
        let text = [UInt8](repeating: 65, count: 4096 + 16 - spool.activeOffset - 2 * SpoolCodec.recordOverhead - 8)
        #expect((try? text.withUnsafeBytes { spool.commit(first, lastText: $0, now: 0) }.get()) != nil)
        let a = first.id
        let full = spool.activeFD
        #expect(spool.activeOffset == 4096 + 16)
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedFiles.contains(full))
        // The next message starts a new segment while the sync of the full one runs.
        let t = open(spool)
        #expect(spool.activeFD != full)
        #expect(disk.closedWhileSyncing.isEmpty)
        #expect(disk.fds[full] != nil, "still open for the running sync")
        let done = spool.finishGroupCommit(wait: true)
        #expect(done?.committed.map { $0.id } == [a])
        #expect(disk.fds[full] == nil, "closed once its sync has finished")
        spool.abort(t, now: 0)
        // A sync of another file leaves the active segment to the next roll, as before.
        _ = spool.flush()
        #expect(disk.closedWhileSyncing.isEmpty)
    }

    @Test("a closed segment alone makes a group commit due, so text is not left unsynced for long")
    func retiredSegmentMakesCommitDue() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, segmentSize: 4096)
        _ = open(spool, text: 6000)
        #expect(spool.groupCommitDue)
        #expect(spool.startGroupCommit() == nil)
        #expect(spool.finishGroupCommit(wait: true)?.error == nil)
        #expect(!spool.groupCommitDue)
    }

    @Test("more than 16 closed segments waiting: the oldest is synced at once, so descriptors stay bounded")
    func retiredBound() {
        let disk = SimulatedDisk()
        let spool = newSpool(disk, segmentSize: 4096)
        // A sync runs for the whole message, so segments pile up behind it.
        _ = commit(spool)
        #expect(spool.startGroupCommit() == nil)
        _ = open(spool, text: 4000 * 40)
        #expect(spool.retired.count <= Spool.maxRetired)
        #expect(disk.syncs > 0)
    }

    func segments(_ names: [String: SimulatedDisk.Inode]) -> [String] {
        names.keys.filter { $0.hasSuffix(".seg") }.sorted()
    }

    /// Three messages over several 4 KiB segments, committed and then delivered:
    /// every segment but the active one is finished.
    func finishedSegments(_ disk: SimulatedDisk) -> (Spool, before: [String]) {
        let spool = newSpool(disk, segmentSize: 4096)
        let ids = (0..<3).map { _ in commit(spool, text: 5000) }
        _ = spool.flush()
        let before = segments(disk.names)
        for id in ids { spool.recordOutcome(id, recipient: 0, .delivered, now: 0) }
        return (spool, before)
    }

    @Test("a finished segment's unlink is made durable by the next commit's directory sync, and the next deletion waits for it")
    func deletionRidesWithTheNextCommit() throws {
        let disk = SimulatedDisk()
        let (spool, before) = finishedSegments(disk)
        #expect(before.count >= 4)
        let oldest = try #require(before.first)
        // Only the oldest went, and its unlink is not durable yet.
        #expect(segments(disk.names) == Array(before.dropFirst()))
        #expect(disk.durableNames[oldest] != nil)
        // A message is arriving: its commit syncs the directory for both, so
        // the deletion makes no group commit of its own.
        let t = open(spool)
        #expect(!spool.groupCommitDue)
        #expect((try? spool.commit(t, now: 0).get()) != nil)
        let syncs = disk.startedSyncs
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedSyncs == syncs + 1)
        #expect(spool.finishGroupCommit(wait: true)?.committed.map { $0.id } == [t.id])
        #expect(disk.durableNames[oldest] == nil)
        // Now the next finished segment has gone (unlinked, waiting for its sync).
        #expect(segments(disk.names) == Array(before.dropFirst(2)))
    }

    @Test("with nothing arriving, each deletion gets a directory sync of its own, one after another, until only the active segment is left")
    func deletionsAlone() {
        let disk = SimulatedDisk()
        let (spool, before) = finishedSegments(disk)
        var rounds = 0
        while spool.groupCommitDue && rounds < 20 {
            #expect(spool.startGroupCommit() == nil)
            #expect(spool.finishGroupCommit(wait: true)?.error == nil)
            rounds += 1
        }
        #expect(rounds == before.count - 1)
        #expect(segments(disk.names).count == 1)
        #expect(segments(disk.durableNames) == segments(disk.names))
    }

    @Test("an unlink run elsewhere (io_uring): the segment counts as gone only once it has finished, and the next waits for its directory sync")
    func unlinkElsewhere() throws {
        let disk = SimulatedDisk()
        disk.asyncUnlinks = true
        let (spool, before) = finishedSegments(disk)
        #expect(before.count >= 4)
        let oldest = try #require(before.first)
        // The oldest's unlink was started, and nothing has happened yet.
        #expect(disk.startedUnlink == oldest)
        #expect(disk.startedUnlinks == 1)
        #expect(segments(disk.names) == before)
        let counted = spool.segmentCount
        #expect(!spool.groupCommitDue)
        // Still running: nothing changes, and no second unlink starts.
        #expect(!spool.finishDeletion(wait: false))
        spool.releaseSpace()
        #expect(disk.startedUnlinks == 1)
        // Finished: gone from the disk and the count, and due a directory sync.
        #expect(spool.finishDeletion(wait: false))
        #expect(segments(disk.names) == Array(before.dropFirst()))
        #expect(spool.segmentCount == counted - 1)
        #expect(disk.durableNames[oldest] != nil)
        #expect(spool.groupCommitDue)
        #expect(disk.startedUnlink == nil)
        // Its directory sync makes it durable; only then does the next start.
        #expect(spool.startGroupCommit() == nil)
        #expect(disk.startedUnlinks == 1)
        #expect(spool.finishGroupCommit(wait: true)?.error == nil)
        #expect(disk.durableNames[oldest] == nil)
        #expect(disk.startedUnlinks == 2)
        #expect(disk.startedUnlink != nil)
    }

    @Test("a failed unlink elsewhere leaves the segment counted and on disk; the next collection tries it again")
    func unlinkElsewhereFails() {
        let disk = SimulatedDisk()
        disk.asyncUnlinks = true
        disk.failNextUnlink = true
        let (spool, before) = finishedSegments(disk)
        let counted = spool.segmentCount
        #expect(spool.finishDeletion(wait: true))
        #expect(segments(disk.names) == before)
        #expect(spool.segmentCount == counted)
        #expect(!spool.groupCommitDue)
        spool.releaseSpace()
        #expect(disk.startedUnlinks == 2)
        #expect(spool.finishDeletion(wait: true))
        #expect(segments(disk.names) == Array(before.dropFirst()))
        #expect(spool.segmentCount == counted - 1)
    }

    @Test("with unlinks elsewhere every finished segment still goes, one directory sync after another, and close waits for a running unlink")
    func unlinksElsewhereAlone() {
        let disk = SimulatedDisk()
        disk.asyncUnlinks = true
        let (spool, before) = finishedSegments(disk)
        var rounds = 0
        while rounds < 40 && (spool.groupCommitDue || disk.startedUnlink != nil) {
            if spool.finishDeletion(wait: true) { continue }
            #expect(spool.startGroupCommit() == nil)
            #expect(spool.finishGroupCommit(wait: true)?.error == nil)
            rounds += 1
        }
        #expect(disk.startedUnlinks == before.count - 1)
        #expect(segments(disk.names).count == 1)
        #expect(segments(disk.durableNames) == segments(disk.names))
        // One more finished segment, its unlink running when the spool closes.
        let disk2 = SimulatedDisk()
        disk2.asyncUnlinks = true
        let (spool2, before2) = finishedSegments(disk2)
        #expect(disk2.startedUnlink != nil)
        spool2.close()
        #expect(disk2.startedUnlink == nil)
        #expect(segments(disk2.durableNames) == Array(before2.dropFirst()))
    }
}
