import CLibc
import Foundation
import Testing
@testable import PosternCore
@testable import PosternRuntime

/// Whether this kernel lets us set up a ring (Linux 5.1 and later, not refused
/// by seccomp or kernel.io_uring_disabled); the tests need a real one.
private let ringAvailable: Bool = {
    if case .success = SyncRing.open(log: Log(quiet: true)) { return true }
    return false
}()

/// A scratch directory with one written file, open for writing.
private final class Scratch {
    let dir = TempDir()
    let fd: Int32
    init() {
        _ = Sys.mkdir(dir.path, 0o700)
        fd = open(dir.path + "/0001.seg", O_WRONLY | O_CREAT, 0o600)
        let bytes = [UInt8](repeating: 0x41, count: 8192)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
    deinit { close(fd) }
}

private func openRing() throws -> SyncRing {
    switch SyncRing.open(log: Log(quiet: true)) {
    case .success(let r): return r
    case .failure(let e): throw e
    }
}

/// Polls `fd` readable for at most 5 s.
private func readable(_ fd: Int32) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&p, 1, 5000) == 1
}

@Suite("The spool's syncs through io_uring (issue 11 item 3)", .enabled(if: ringAvailable, "this kernel has no io_uring for us"))
struct SyncRingTests {
    @Test("A batch of a segment and the directory completes, and the eventfd tells the loop so")
    func batchCompletesAndEventFDSaysSo() throws {
        let s = Scratch()
        let ring = try openRing()
        #expect(ring.start(files: [s.fd], directory: s.dir.path))
        var outcome: Result<Void, Errno>? = nil
        for _ in 0..<4 where outcome == nil {
            #expect(readable(ring.fd))
            switch ring.receive(wait: false) {
            case .running: continue
            case .finished(let r): outcome = r
            case .unable: Issue.record("the ring gave the batch back")
            }
        }
        #expect(throws: Never.self) { try outcome?.get() }
        #expect(outcome != nil)
        #expect(ring.batches.isEmpty)
        // Nothing outstanding. The eventfd may still hold the last request's
        // signal: the kernel posts a completion before it signals it, so a
        // receive can take the completion and clear the eventfd just before the
        // signal lands (a fresh-clone CI run saw that). Such a late signal is a
        // spurious wake-up only: the daemon polls the eventfd only while a batch
        // is outstanding, and a receive reports nothing for it.
        guard case .running = ring.receive(wait: false) else {
            Issue.record("a receive with nothing outstanding reported an outcome")
            return
        }
        #expect(ring.batches.isEmpty)
    }

    @Test("Outcomes come oldest batch first, each once")
    func outcomesInOrder() throws {
        let s = Scratch()
        let ring = try openRing()
        #expect(ring.start(files: [s.fd, s.fd], directory: s.dir.path))
        #expect(ring.start(files: [s.fd], directory: nil))
        let first = ring.batches.map(\.tag)
        #expect(first.count == 2)
        for expected in first {
            let tag = ring.batches.first?.tag
            guard case .finished(.success) = ring.receive(wait: true) else {
                Issue.record("batch \(expected) did not succeed")
                return
            }
            #expect(tag == expected)
        }
        #expect(ring.batches.isEmpty)
        guard case .running = ring.receive(wait: true) else { Issue.record("an outcome with nothing started"); return }
    }

    @Test("PosixStorage starts the sync in the ring, polls the ring's eventfd, and gives the outcome once")
    func storageUsesTheRing() throws {
        let s = Scratch()
        let storage = PosixStorage()
        let ring = try openRing()
        storage.useSyncRing(ring)
        #expect(storage.syncCapacity == 4)
        guard case .started = storage.startSync(files: [s.fd], directory: s.dir.path) else {
            Issue.record("the sync ran in the loop")
            return
        }
        #expect(storage.syncPollFD == ring.fd)
        let outcome = storage.syncOutcome(wait: true)
        #expect(throws: Never.self) { try outcome?.get() }
        #expect(outcome != nil)
        #expect(storage.syncPollFD == -1)
        #expect(storage.syncOutcome(wait: true) == nil)
    }

    @Test("A request the ring cannot run (a descriptor not open): the batch is synced in the loop, with its true outcome, and the ring is given up")
    func ringGivesUp() throws {
        let s = Scratch()
        let storage = PosixStorage()
        let ring = try openRing()
        storage.useSyncRing(ring)
        // A descriptor no file can have (far above any RLIMIT_NOFILE here). A
        // closed one is not safe: the tests run in parallel in one process,
        // and another test's open(2) may take its number at once (seen in CI).
        let notOpen: Int32 = 0x3FFF_FFFF
        guard case .started = storage.startSync(files: [notOpen], directory: nil) else {
            Issue.record("the sync ran in the loop")
            return
        }
        guard case .failure(let e) = storage.syncOutcome(wait: true) else {
            Issue.record("a sync of a closed descriptor succeeded")
            return
        }
        #expect(e.code == EBADF)
        #expect(ring.broken)
        // No helpers here: the next sync runs in the loop, and works.
        guard case .finished(.success) = storage.startSync(files: [s.fd], directory: s.dir.path) else {
            Issue.record("the next sync did not run in the loop")
            return
        }
    }

    @Test("A segment's unlink runs in its own ring: the eventfd says when it is done, the file is gone, and a missing file is the kernel's ENOENT")
    func unlinkThroughTheRing() throws {
        let s = Scratch()
        let storage = PosixStorage()
        let unlinker: SegmentUnlinker
        switch SegmentUnlinker.open(log: Log(quiet: true)) {
        case .success(let u): unlinker = u
        case .failure(let e): throw e
        }
        storage.useUnlinker(unlinker)
        let path = s.dir.path + "/0001.seg"
        #expect(storage.unlinkPollFD == -1)
        #expect(storage.startUnlink(path))
        // One at a time: a second is refused while the first runs.
        #expect(!storage.startUnlink(path))
        #expect(storage.unlinkPollFD == unlinker.fd)
        #expect(readable(unlinker.fd))
        guard case .finished(.success)? = storage.unlinkOutcome(wait: true) else {
            Issue.record("the unlink did not succeed (a kernel before 5.11 gives the ring up: \(unlinker.broken))")
            return
        }
        #expect(access(path, F_OK) != 0)
        #expect(storage.unlinkPollFD == -1)
        #expect(storage.unlinkOutcome(wait: true) == nil)
        // The same name again: gone, and the ring says so.
        #expect(storage.startUnlink(path))
        guard case .finished(.failure(let e))? = storage.unlinkOutcome(wait: true) else {
            Issue.record("unlinking a missing file succeeded")
            return
        }
        #expect(e.code == ENOENT)
        #expect(!unlinker.broken)
    }
}
