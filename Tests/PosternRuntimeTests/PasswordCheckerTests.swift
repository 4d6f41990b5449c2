import CLibc
import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

// Real checker processes (fork), driven as the daemon's loop drives them:
// poll(2) on `pollFD` with a bounded timeout, `collect` on events and when
// `nextDeadline` has passed. Every wait is bounded.

/// A crypt(3) string for `password` made by libxcrypt.
private func makeHash(_ password: String, prefix: String = "$6$") -> AuthHash {
    var out = [CChar](repeating: 0, count: Int(CL_CRYPT_OUTPUT_SIZE))
    let bytes = Array(password.utf8)
    let rc = bytes.withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { cl_crypt_make($0.baseAddress, $0.count, prefix, &out, out.count) }
    }
    precondition(rc == 0)
    let text = String(cString: out)
    guard case .success(let users) = AuthUsers.parse(Array("u:\(text)\n".utf8)), let h = users.hash(for: Array("u".utf8)) else {
        preconditionFailure("hash not accepted")
    }
    return h
}

private let sha512 = makeHash("correct horse")
/// Made once by libxcrypt (`cl_crypt_make`, "$y$"): no yescrypt runs in the
/// test process, so its peak RSS shows what the checker keeps out of it.
private let yescrypt = AuthHash(scheme: .yescrypt,
    text: Array("$y$j9T$eI6TMlxlx3MlwTc2Fh/4r.$HkoTZYGa2C4bRCHaD9akEWlN54d96LzDorsKeT2sV37".utf8))

/// Collects until `count` answers came or `limit` passed.
private func drive(_ checker: PasswordChecker, until count: Int,
                   within limit: Int64 = 10_000_000_000) -> [(id: UInt64, verdict: PasswordChecker.Verdict)] {
    var results: [(id: UInt64, verdict: PasswordChecker.Verdict)] = []
    let start = Clock.monotonic()
    while results.count < count && Clock.monotonic() - start < limit {
        var timeout: Int32 = 100
        if let d = checker.nextDeadline { timeout = Int32(max(0, min((d - Clock.monotonic()) / 1_000_000 + 1, 100))) }
        if checker.pollFD >= 0 {
            var fds = [pollfd(fd: checker.pollFD, events: Int16(POLLIN), revents: 0)]
            _ = Sys.poll(&fds, timeoutMilliseconds: timeout)
        }
        results += checker.collect()
    }
    return results
}

private func quietLog() -> Log { Log(quiet: true) }

// Serialized: the memory test reads this process's peak RSS.
@Suite("Password checker: crypt(3) checks in a child process, off the loop", .serialized)
struct PasswordCheckerTests {
    @Test("cl_crypt_check: match, mismatch, NUL in the password, unusable hash")
    func cryptCheck() {
        func check(_ pw: [UInt8], _ hash: String) -> Int32 {
            pw.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { cl_crypt_check($0.baseAddress, $0.count, hash) }
            }
        }
        let h = String(decoding: sha512.text, as: UTF8.self)
        #expect(check(Array("correct horse".utf8), h) == 1)
        #expect(check(Array("correct horsf".utf8), h) == 0)
        #expect(check(Array("correct horse".utf8) + [0], h) == 0)
        #expect(check(Array("correct\0horse".utf8), h) == 0)
        #expect(check([], h) == 0)
        #expect(check(Array("x".utf8), "$y$notahash") == -1)
        #expect(check(Array("x".utf8), "") == -1)
    }

    @Test("A right password matches and a wrong one does not, through the checker")
    func matchAndMismatch() {
        let checker = PasswordChecker(log: quietLog())
        defer { checker.stop() }
        #expect(checker.start())
        #expect(checker.submit(id: 1, hash: sha512, password: Array("correct horse".utf8)) == .queued)
        #expect(checker.submit(id: 2, hash: sha512, password: Array("wrong".utf8)) == .queued)
        #expect(checker.submit(id: 3, hash: yescrypt, password: Array("correct horse".utf8)) == .queued)
        let results = drive(checker, until: 3)
        #expect(results.map { $0.id } == [1, 2, 3])
        #expect(results.map { $0.verdict } == [.match, .mismatch, .match])
        #expect(checker.checksInLoop == 0)
        #expect(checker.pending == 0)
    }

    @Test("A hash libcrypt cannot use is answered unusable")
    func badHash() {
        let checker = PasswordChecker(log: quietLog())
        defer { checker.stop() }
        checker.start()
        let bad = AuthHash(scheme: .yescrypt, text: Array("$y$nonsense".utf8))
        #expect(checker.submit(id: 7, hash: bad, password: Array("x".utf8)) == .queued)
        let results = drive(checker, until: 1)
        #expect(results.count == 1)
        #expect(results.first?.verdict == .unusable)
    }

    @Test("An unknown user or a locked account is checked (same cost) and never matches")
    func unknownAndLocked() {
        let checker = PasswordChecker(log: quietLog())
        defer { checker.stop() }
        checker.start()
        #expect(checker.submit(id: 1, hash: nil, password: Array("postern-dummy-never-matches".utf8)) == .queued)
        #expect(checker.submit(id: 2, hash: .locked, password: Array("anything".utf8)) == .queued)
        let results = drive(checker, until: 2)
        #expect(results.map { $0.verdict } == [.mismatch, .mismatch])
    }

    @Test("Beyond one running and 8 waiting checks, submit answers busy")
    func queueFull() {
        let checker = PasswordChecker(log: quietLog())
        defer { checker.stop() }
        checker.start()
        var submissions: [PasswordChecker.Submission] = []
        for i in 0..<12 {
            submissions.append(checker.submit(id: UInt64(i), hash: sha512, password: Array("correct horse".utf8)))
        }
        #expect(submissions.prefix(9).allSatisfy { $0 == .queued })
        #expect(submissions.dropFirst(9).allSatisfy { $0 == .busy })
        let results = drive(checker, until: 9)
        #expect(results.map { $0.id } == Array(0..<9))
        #expect(results.allSatisfy { $0.verdict == .match })
        #expect(checker.submit(id: 99, hash: sha512, password: Array("x".utf8)) == .queued)
    }

    @Test("A killed checker's checks are redone: by a new checker when one may start, else in the loop")
    func killedChecker() {
        var timing = PasswordChecker.Timing()
        timing.stableAfter = 0  // any checker that answered counts as stable: restart at once
        let checker = PasswordChecker(log: quietLog(), timing: timing)
        defer { checker.stop() }
        checker.start()
        #expect(checker.submit(id: 1, hash: sha512, password: Array("correct horse".utf8)) == .queued)
        #expect(drive(checker, until: 1).first?.verdict == .match)
        let first = checker.pid
        #expect(kill(first, SIGKILL) == 0)
        #expect(checker.submit(id: 2, hash: yescrypt, password: Array("correct horse".utf8)) == .queued)
        let results = drive(checker, until: 1)
        #expect(results.map { $0.id } == [2])
        #expect(results.first?.verdict == .match)
        #expect(checker.starts == 2)
        #expect(checker.pid != first)
        #expect(checker.checksInLoop == 0)
        ChildReaper.reapAdopted()
    }

    @Test("With no restart allowed yet, checks run in the loop and are still right")
    func fallbackInLoop() {
        var timing = PasswordChecker.Timing()
        timing.stableAfter = .max
        timing.firstRestartDelay = 3_600_000_000_000
        let checker = PasswordChecker(log: quietLog(), timing: timing)
        defer { checker.stop() }
        checker.start()
        #expect(checker.submit(id: 1, hash: sha512, password: Array("correct horse".utf8)) == .queued)
        #expect(drive(checker, until: 1).first?.verdict == .match)
        #expect(kill(checker.pid, SIGKILL) == 0)
        // The death is seen at the next collect, and the waiting checks then
        // run here; or, when the child is already gone as a check is sent to
        // it, at once: the next submit then checks in the loop and answers
        // straight away. Which one depends on how fast the kernel tears the
        // killed child down (a full parallel test run saw both).
        var answers: [UInt64: PasswordChecker.Verdict] = [:]
        for (id, password) in [(UInt64(2), "correct horse"), (3, "nope")] {
            switch checker.submit(id: id, hash: sha512, password: Array(password.utf8)) {
            case .queued: break
            case .checked(let v): answers[id] = v
            case .busy: Issue.record("check \(id) answered busy")
            }
        }
        for r in drive(checker, until: 2 - answers.count) { answers[r.id] = r.verdict }
        #expect(answers == [2: .match, 3: .mismatch])
        #expect(checker.pollFD == -1)
        #expect(checker.submit(id: 4, hash: sha512, password: Array("correct horse".utf8)) == .checked(.match))
        #expect(checker.checksInLoop == 3)
        #expect(checker.starts == 1)
        ChildReaper.reapAdopted()
    }

    @Test("Without start() every check runs in the loop")
    func notStarted() {
        let checker = PasswordChecker(log: quietLog())
        #expect(checker.submit(id: 1, hash: sha512, password: Array("correct horse".utf8)) == .checked(.match))
        #expect(checker.submit(id: 2, hash: sha512, password: Array("x".utf8)) == .checked(.mismatch))
        #expect(checker.pollFD == -1)
    }

    @Test("Passwords too long or with NUL never match, and are refused before any check")
    func oversize() {
        let checker = PasswordChecker(log: quietLog())
        #expect(checker.submit(id: 1, hash: sha512, password: [UInt8](repeating: 97, count: 256)) == .checked(.mismatch))
        #expect(checker.submit(id: 2, hash: sha512, password: Array("correct horse".utf8) + [0]) == .checked(.mismatch))
        #expect(checker.checksInLoop == 0)
    }

    @Test("yescrypt's MiBs stay in the checker: the daemon's peak RSS does not move over 20 checks")
    func memoryStaysInChild() {
        let checker = PasswordChecker(log: quietLog())
        defer { checker.stop() }
        checker.start()
        // The first check makes the checker ready (its peak is then the
        // daemon's pages it shares).
        #expect(checker.submit(id: 100, hash: sha512, password: Array("correct horse".utf8)) == .queued)
        _ = drive(checker, until: 1)
        let before = cl_process_peak_rss_kib(0)
        let childBefore = cl_process_peak_rss_kib(checker.pid)
        var got = 0
        var started = Clock.monotonic()
        var elapsed: Int64 = 0
        for round in 0..<20 {
            started = Clock.monotonic()
            #expect(checker.submit(id: UInt64(round), hash: yescrypt, password: Array("correct horse".utf8)) == .queued)
            got += drive(checker, until: 1).filter { $0.verdict == .match }.count
            elapsed += Clock.monotonic() - started
        }
        let after = cl_process_peak_rss_kib(0)
        let child = cl_process_peak_rss_kib(checker.pid)
        print("password checker: 20 yescrypt checks, \(elapsed / 20 / 1000) µs each (round trip); "
              + "VmHWM daemon \(before) -> \(after) KiB, checker \(childBefore) -> \(child) KiB")
        #expect(got == 20)
        // yescrypt's work area is 16 MiB: the checker's peak grows by it, the
        // daemon's not (other suites running beside this one may add a little).
        #expect(child - childBefore > 12 * 1024, "the checker's peak grew by \(child - childBefore) KiB")
        #expect(after - before < 8 * 1024, "the daemon's peak grew by \(after - before) KiB")
    }
}

extension PasswordChecker {
    /// The tests' passwords are literals: moved in from a copy.
    func submit(id: UInt64, hash: AuthHash?, password: [UInt8]) -> Submission {
        var moved = password
        return submit(id: id, hash: hash, password: &moved)
    }
}
