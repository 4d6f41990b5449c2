import CLibc
import PosternCore

/// A command run for the daemon (a password or OAuth2 token command), bounded in
/// time and output, driven by the poll loop without ever blocking it.
///
/// The program runs without a shell (`cl_spawn`: posix_spawnp with an argv; see
/// `CommandLineWords` for a configured command line), stdin from /dev/null (or a file the caller gives), stdout
/// and stderr on two pipes whose read ends the loop polls, no other descriptor of
/// the daemon, in its own process group. The loop:
///
///     for (fd, events) in child.pollEntries()    // POLLIN on stdout and stderr
///     ... child.readable(fd: fd, now: now)       // on any revents of those fds
///     if let t = child.nextDeadline(), now >= t { child.tick(now: now) }
///     if let outcome = child.outcome { ... }      // nil until it is reaped
///
/// Outcomes: `.success(n)` only for exit status 0 with at most `maxOutput` bytes
/// on stdout before the deadline; the bytes are read with `withOutput` and must be
/// zeroed with `wipe()` once used (they may be an access token). Everything else is
/// `.failure` with a sentence for the log: "timed out after 10s and was killed",
/// "exited with status 3: <first line of stderr>", "killed by signal 9", "printed
/// more than 16384 bytes", "cannot run /usr/bin/x: No such file or directory".
///
/// At the deadline, on too much output and on `cancel`, the whole process group
/// gets SIGKILL and the child is reaped (now, or on a later tick if it has not died
/// yet); `outcome` is set only once it is reaped, so a finished `ChildProcess`
/// never leaves a zombie. One released unreaped is adopted by `ChildReaper`.
public final class ChildProcess {
    public enum Outcome: Equatable, Sendable {
        /// Exit status 0 in time and within the output bound: the number of bytes
        /// printed on stdout, readable through `withOutput` until `wipe()`.
        case success(Int)
        /// A sentence saying what went wrong.
        case failure(String)
    }

    /// Output bound for token and password commands (an OAuth2 access token with
    /// its JSON is a few KiB).
    public static let defaultMaxOutput = 16384
    /// The output bound is at most this: the buffer is allocated at start.
    static let maxOutputLimit = 1 << 20
    /// The first line of stderr is kept for the failure message, this many bytes.
    static let errorLineLimit = 200
    /// More on stderr than this is a runaway program (the message uses the first line).
    static let errorOutputLimit = 65536
    /// One read(2) per readable event of stderr, and the overflow probe of stdout.
    static let scratchSize = 4096

    enum Ending {
        /// Both pipes reached end of file: waiting for its exit status.
        case closedOutput
        /// The deadline passed; the group was sent SIGKILL.
        case timedOut
        /// Killed for this reason (output bound, a read error, cancel).
        case killed(String)
    }

    enum State {
        case running
        /// Waiting to reap it (`ReapSchedule`).
        case ending(Ending, ReapSchedule)
        case finished(Outcome)
    }

    /// argv[0], for messages.
    public let program: String
    public let timeoutNanoseconds: Int64
    public let maxOutput: Int
    /// When the group is killed.
    public let deadline: Int64
    /// The child's pid (its process group id); kept after it is reaped, for logs. 0
    /// when it never started.
    public private(set) var pid: Int32 = 0
    /// The exit status of a child that exited by itself, once reaped (nil when
    /// it was killed, timed out or never ran): a protocol between the daemon
    /// and its own `postern pickup`.
    public private(set) var exitCode: Int32? = nil
    /// Whether `pid` has been reaped (or never existed).
    public private(set) var reaped = true
    public private(set) var stdoutFD: Int32 = -1
    public private(set) var stderrFD: Int32 = -1
    var state: State = .running

    let output: UnsafeMutableRawPointer
    let outputCapacity: Int
    /// Bytes of stdout in `output`.
    public private(set) var outputCount = 0
    var errorLine: [UInt8] = []
    var errorLineComplete = false
    var errorBytes = 0
    let scratch: UnsafeMutableRawPointer

    /// Starts `argv` (argv[0] is looked up in PATH when it has no '/'), its
    /// standard input `stdin` when that is a descriptor (it stays the caller's),
    /// else /dev/null. `maxOutput` is 1 ... 1 MiB (a programmer's constant). The
    /// result may already be finished: a program that cannot be run fails at once.
    public static func start(argv: [String], timeoutNanoseconds: Int64, maxOutput: Int = defaultMaxOutput,
                             stdin: Int32 = -1, now: Int64) -> ChildProcess {
        let child = ChildProcess(program: argv.first ?? "", timeoutNanoseconds: timeoutNanoseconds,
                                 maxOutput: maxOutput, now: now)
        child.spawn(argv, stdin: stdin)
        return child
    }

    init(program: String, timeoutNanoseconds: Int64, maxOutput: Int, now: Int64) {
        precondition(maxOutput > 0 && maxOutput <= Self.maxOutputLimit, "ChildProcess maxOutput out of range")
        self.program = program
        self.timeoutNanoseconds = timeoutNanoseconds
        self.maxOutput = maxOutput
        deadline = ChildReaper.later(now, timeoutNanoseconds)
        outputCapacity = maxOutput
        output = UnsafeMutableRawPointer.allocate(byteCount: maxOutput, alignment: 16)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: maxOutput)
        scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
        scratch.initializeMemory(as: UInt8.self, repeating: 0, count: Self.scratchSize)
        errorLine.reserveCapacity(Self.errorLineLimit)
    }

    deinit {
        closePipes()
        if !reaped {
            ChildReaper.killGroup(pid)
            if ChildReaper.reap(pid) == .running { ChildReaper.adopt(pid) }
        }
        cl_wipe(output, outputCapacity)
        cl_wipe(scratch, Self.scratchSize)
        output.deallocate()
        scratch.deallocate()
    }

    func spawn(_ argv: [String], stdin: Int32) {
        guard let first = argv.first, !first.isEmpty else {
            state = .finished(.failure("no command to run"))
            return
        }
        if argv.contains(where: { $0.utf8.contains(0) }) {
            state = .finished(.failure("cannot run \(first): an argument contains a NUL byte"))
            return
        }
        var cArgs: [UnsafeMutablePointer<CChar>?] = []
        cArgs.reserveCapacity(argv.count + 1)
        for a in argv { cArgs.append(strdup(a)) }
        defer { for p in cArgs { free(p) } }
        if cArgs.contains(where: { $0 == nil }) {
            state = .finished(.failure("cannot run \(first): out of memory"))
            return
        }
        cArgs.append(nil)
        var spawned = cl_child()
        let rc = cArgs.withUnsafeBufferPointer { cl_spawn($0.baseAddress, stdin, &spawned) }
        guard rc == 0 else {
            state = .finished(.failure("cannot run \(first): \(Errno(rc, "posix_spawn").text)"))
            return
        }
        pid = spawned.pid
        reaped = false
        stdoutFD = spawned.stdout_fd
        stderrFD = spawned.stderr_fd
    }

    // MARK: the loop's side

    /// The descriptors to poll, each for POLLIN (hang-up and error are reported by
    /// poll anyway); empty once both pipes reached end of file.
    public func pollEntries() -> [(fd: Int32, events: Int16)] {
        var out: [(fd: Int32, events: Int16)] = []
        if stdoutFD >= 0 { out.append((stdoutFD, Int16(POLLIN))) }
        if stderrFD >= 0 { out.append((stderrFD, Int16(POLLIN))) }
        return out
    }

    /// When `tick` is due: the deadline while it runs, a reaping retry after it
    /// ended; nil once finished.
    public func nextDeadline() -> Int64? {
        switch state {
        case .running: return deadline
        case .ending(.closedOutput, let reaping): return min(reaping.nextTry, deadline)
        case .ending(_, let reaping): return reaping.nextTry
        case .finished: return nil
        }
    }

    /// The result, once the child is reaped.
    public var outcome: Outcome? {
        if case .finished(let o) = state { return o }
        return nil
    }

    public var isFinished: Bool { outcome != nil }

    /// Called when poll reports `fd` (one of `pollEntries`) readable, hung up or in
    /// error. Reads once; never blocks.
    public func readable(fd: Int32, now: Int64) {
        guard case .running = state, fd >= 0 else { return }
        if fd == stdoutFD {
            readStdout(now: now)
        } else if fd == stderrFD {
            readStderr(now: now)
        }
        if case .running = state, stdoutFD < 0, stderrFD < 0 {
            // Both pipes closed: the child has exited, or closed them and runs on
            // (then the deadline still applies).
            state = .ending(.closedOutput, ReapSchedule(now: now))
            tryReap(now: now)
        }
    }

    /// Enforces the deadline and reaps; call when `nextDeadline()` has passed.
    public func tick(now: Int64) {
        ChildReaper.reapAdopted()
        switch state {
        case .running:
            if now >= deadline { kill(.timedOut, now: now) }
        case .ending(.closedOutput, let reaping):
            if now >= deadline {
                kill(.timedOut, now: now)
            } else if now >= reaping.nextTry {
                tryReap(now: now)
            }
        case .ending(_, let reaping):
            if now >= reaping.nextTry { tryReap(now: now) }
        case .finished:
            break
        }
    }

    /// The daemon is stopping (or no longer needs the result): SIGKILL to the group
    /// and a reap attempt. Returns true when the child is reaped; otherwise keep
    /// calling `tick` until `isFinished` (the outcome is then `.failure("cancelled")`),
    /// or release it and `ChildReaper` takes it over.
    @discardableResult
    public func cancel(now: Int64) -> Bool {
        switch state {
        case .running, .ending(.closedOutput, _):
            kill(.killed("cancelled"), now: now)
        case .ending, .finished:
            break
        }
        return isFinished
    }

    // MARK: output

    /// The bytes printed on stdout so far (all of them once `.success`), valid
    /// inside `body` only. Empty after `wipe()`.
    public func withOutput<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(start: output, count: outputCount))
    }

    /// Zeroes the stdout buffer (and the scratch and stderr copies) so a token does
    /// not linger in memory; `withOutput` gives no bytes afterwards.
    public func wipe() {
        cl_wipe(output, outputCapacity)
        cl_wipe(scratch, Self.scratchSize)
        errorLine.withUnsafeMutableBytes { cl_wipe($0.baseAddress, $0.count) }
        errorLine.removeAll(keepingCapacity: true)
        outputCount = 0
    }

    /// The first line of stderr, as printable text (empty if none).
    public var firstErrorLine: String {
        var line = errorLine[...]
        while let last = line.last, last == ASCII.cr || ASCII.isSpace(last) { line = line.dropLast() }
        while let first = line.first, ASCII.isSpace(first) { line = line.dropFirst() }
        return ASCII.printable(line, limit: Self.errorLineLimit)
    }

    // MARK: internals

    func readStdout(now: Int64) {
        if outputCount < outputCapacity {
            let space = UnsafeMutableRawBufferPointer(start: output + outputCount, count: outputCapacity - outputCount)
            switch Sys.read(stdoutFD, space) {
            case .success(.done(let n)): outputCount += min(n, space.count)
            case .success(.eof): closeStdout()
            case .success(.wouldBlock): break
            case .failure(let e): kill(.killed("reading its output failed: \(e.text)"), now: now)
            }
            return
        }
        // The buffer is full: one more byte is one too many. Read a single byte so
        // no more of what follows (a token, perhaps) is copied anywhere.
        let probe = UnsafeMutableRawBufferPointer(start: scratch, count: 1)
        switch Sys.read(stdoutFD, probe) {
        case .success(.done):
            cl_wipe(scratch, 1)
            kill(.killed("printed more than \(maxOutput) bytes"), now: now)
        case .success(.eof): closeStdout()
        case .success(.wouldBlock): break
        case .failure(let e): kill(.killed("reading its output failed: \(e.text)"), now: now)
        }
    }

    func readStderr(now: Int64) {
        let buf = UnsafeMutableRawBufferPointer(start: scratch, count: Self.scratchSize)
        switch Sys.read(stderrFD, buf) {
        case .success(.done(let n)):
            let got = min(n, buf.count)
            for i in 0..<got where !errorLineComplete {
                let b = buf[i]
                if b == ASCII.lf || errorLine.count >= Self.errorLineLimit {
                    errorLineComplete = true
                } else {
                    errorLine.append(b)
                }
            }
            cl_wipe(scratch, got)
            errorBytes += got
            if errorBytes > Self.errorOutputLimit {
                kill(.killed("printed more than \(Self.errorOutputLimit) bytes on standard error"), now: now)
            }
        case .success(.eof): closeStderr()
        case .success(.wouldBlock): break
        case .failure(let e): kill(.killed("reading its error output failed: \(e.text)"), now: now)
        }
    }

    func kill(_ ending: Ending, now: Int64) {
        closePipes()
        if !reaped { ChildReaper.killGroup(pid) }
        state = .ending(ending, ReapSchedule(now: now))
        tryReap(now: now)
    }

    func tryReap(now: Int64) {
        guard case .ending(let ending, var reaping) = state else { return }
        if reaped {
            finish(ending, .unknown)
            return
        }
        guard let status = reaping.attempt(pid, now: now) else {
            state = .ending(ending, reaping)
            return
        }
        reaped = true
        finish(ending, status)
    }

    func finish(_ ending: Ending, _ status: ExitStatus) {
        if case (.closedOutput, .exited(let code)) = (ending, status) { exitCode = code }
        let outcome: Outcome
        switch (ending, status) {
        case (.closedOutput, .exited(0)):
            outcome = .success(outputCount)
        case (.closedOutput, .exited), (.closedOutput, .signaled):
            let line = firstErrorLine
            outcome = .failure(line.isEmpty ? status.description : "\(status): \(line)")
        case (.closedOutput, .unknown):
            outcome = .failure("ended, but its exit status was lost (reaped elsewhere)")
        case (.timedOut, .exited(let code)):
            // It had exited by itself; something it started kept the pipes open.
            outcome = .failure("timed out after \(ChildReaper.duration(timeoutNanoseconds)) and was killed"
                + " (it had exited with status \(code), but a process it started kept its output open)")
        case (.timedOut, _):
            outcome = .failure("timed out after \(ChildReaper.duration(timeoutNanoseconds)) and was killed")
        case (.killed(let reason), _):
            outcome = .failure(reason)
        }
        if case .failure = outcome { wipe() }
        state = .finished(outcome)
    }

    func closeStdout() {
        if stdoutFD >= 0 { Sys.close(stdoutFD) }
        stdoutFD = -1
    }

    func closeStderr() {
        if stderrFD >= 0 { Sys.close(stderrFD) }
        stderrFD = -1
    }

    func closePipes() {
        closeStdout()
        closeStderr()
    }
}
