import CLibc
import Glibc
import Testing
@testable import PosternCore
@testable import PosternRuntime

// Real processes, driven the way the daemon's loop drives them: poll(2) on the
// child's own descriptors with a bounded timeout, `readable` on events, `tick`
// when `nextDeadline` has passed. Nothing sleeps; every wait is bounded.

/// Drives a child until it finishes or `limit` passes.
func drive(_ child: ChildProcess, within limit: Int64 = 5_000_000_000) {
    let start = Clock.monotonic()
    while !child.isFinished && Clock.monotonic() - start < limit {
        var fds = child.pollEntries().map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        _ = Sys.poll(&fds, timeoutMilliseconds: waitMilliseconds(child.nextDeadline()))
        let now = Clock.monotonic()
        for p in fds where p.revents != 0 { child.readable(fd: p.fd, now: now) }
        if let t = child.nextDeadline(), now >= t { child.tick(now: now) }
    }
}

/// Drives a resolver until it finishes or `limit` passes.
func drive(_ resolver: AsyncResolver, within limit: Int64 = 5_000_000_000) {
    let start = Clock.monotonic()
    while !resolver.isFinished && Clock.monotonic() - start < limit {
        var fds = resolver.pollEntries().map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        _ = Sys.poll(&fds, timeoutMilliseconds: waitMilliseconds(resolver.nextDeadline()))
        let now = Clock.monotonic()
        if fds.contains(where: { $0.revents != 0 }) { resolver.readable(now: now) }
        if let t = resolver.nextDeadline(), now >= t { resolver.tick(now: now) }
    }
}

/// The poll timeout for a deadline: at most 100 ms, so the drivers stay bounded.
func waitMilliseconds(_ deadline: Int64?) -> Int32 {
    guard let d = deadline else { return 100 }
    let ms = (d - Clock.monotonic() + 999_999) / 1_000_000
    return Int32(max(0, min(ms, 100)))
}

/// True when `pid` is no child of ours any more: waitpid says ECHILD.
func isReaped(_ pid: Int32) -> Bool {
    var status: Int32 = 0
    return waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD
}

/// A process that is gone or a zombie (then dead, waiting for whoever is its
/// parent now): /proc/<pid>/stat is missing or says Z.
func isDeadProcess(_ pid: Int32) -> Bool {
    guard let f = fopen("/proc/\(pid)/stat", "r") else { return true }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 512)
    guard fgets(&buf, 512, f) != nil else { return true }
    let text = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    guard let close = text.lastIndex(of: ")") else { return false }
    return text[text.index(after: close)...].trimmingPrefix(" ").first == "Z"
}

func outputText(_ child: ChildProcess) -> String {
    child.withOutput { String(decoding: $0, as: UTF8.self) }
}

func temporaryPath(_ name: String) -> String {
    "/tmp/postern-test-\(getpid())-\(Clock.monotonic())-\(name)"
}

@Suite("Child processes: commands and name lookups off the loop", .serialized)
struct ChildProcessTests {
    static let second: Int64 = 1_000_000_000

    @Test("A command's stdout comes back byte for byte on exit status 0")
    func echoToken() {
        let child = ChildProcess.start(argv: ["/bin/echo", "tok-4a7f", "second word"], timeoutNanoseconds: 10 * Self.second,
                                       now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .success(21))
        #expect(outputText(child) == "tok-4a7f second word\n")
        #expect(child.stdoutFD < 0 && child.stderrFD < 0)
        #expect(isReaped(child.pid))
    }

    @Test("A program name without a slash is looked up in PATH")
    func pathLookup() {
        let child = ChildProcess.start(argv: ["printf", "%s", "x y"], timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .success(3))
        #expect(outputText(child) == "x y")
        #expect(isReaped(child.pid))
    }

    @Test("A command past its deadline is killed and reaped, and says so")
    func timeout() {
        let start = Clock.monotonic()
        let child = ChildProcess.start(argv: ["/bin/sleep", "30"], timeoutNanoseconds: 300_000_000, now: start)
        drive(child)
        let took = Clock.monotonic() - start
        #expect(child.outcome == .failure("timed out after 300ms and was killed"))
        #expect(took >= 300_000_000 && took < 5 * Self.second)
        #expect(isReaped(child.pid))
        #expect(child.nextDeadline() == nil)
    }

    @Test("The whole process group is killed at the deadline, not just the child")
    func groupKilled() throws {
        let file = temporaryPath("grandchild")
        defer { unlink(file) }
        let child = ChildProcess.start(argv: ["/bin/sh", "-c", "sleep 30 & echo $! > \(file); wait"],
                                       timeoutNanoseconds: 500_000_000, now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .failure("timed out after 500ms and was killed"))
        #expect(isReaped(child.pid))
        let bytes = try #require(try? Sys.readFile(file).get())
        let grandchild = try #require(Int32(String(decoding: bytes, as: UTF8.self).trimmingPrefix(" ").split(separator: "\n").first ?? ""))
        // SIGKILL went to the group; the grandchild's new parent reaps it.
        var dead = isDeadProcess(grandchild)
        let start = Clock.monotonic()
        while !dead && Clock.monotonic() - start < 2 * Self.second {
            var none: [pollfd] = []
            _ = Sys.poll(&none, timeoutMilliseconds: 10)
            dead = isDeadProcess(grandchild)
        }
        #expect(dead)
    }

    @Test("A command that exits but leaves a process holding its output times out, and the message says why")
    func backgroundKeepsOutputOpen() {
        let child = ChildProcess.start(argv: ["/bin/sh", "-c", "sleep 30 &"], timeoutNanoseconds: 400_000_000,
                                       now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .failure("timed out after 400ms and was killed (it had exited with status 0, "
            + "but a process it started kept its output open)"))
        #expect(isReaped(child.pid))
    }

    @Test("Output beyond the bound kills the command")
    func outputBound() {
        let start = Clock.monotonic()
        let child = ChildProcess.start(argv: ["yes"], timeoutNanoseconds: 10 * Self.second, now: start)
        drive(child)
        #expect(child.outcome == .failure("printed more than 16384 bytes"))
        #expect(Clock.monotonic() - start < 5 * Self.second)
        #expect(isReaped(child.pid))
        // A failure keeps nothing of what was printed.
        #expect(child.withOutput { $0.count } == 0)
    }

    @Test("Exactly the bound is fine; one byte more is not", arguments: [(4096, true), (4097, false)])
    func boundIsInclusive(count: Int, fits: Bool) {
        let child = ChildProcess.start(argv: ["head", "-c", "\(count)", "/dev/zero"], timeoutNanoseconds: 10 * Self.second,
                                       maxOutput: 4096, now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == (fits ? .success(4096) : .failure("printed more than 4096 bytes")))
        #expect(isReaped(child.pid))
    }

    @Test("A program that cannot be run is named in the failure", arguments: [
        ("/nonexistent/postern-password", "cannot run /nonexistent/postern-password: No such file or directory"),
        ("postern-no-such-program", "cannot run postern-no-such-program: No such file or directory"),
        ("/dev/null", "cannot run /dev/null: Permission denied"),
    ])
    func missingProgram(program: String, message: String) {
        let child = ChildProcess.start(argv: [program], timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        #expect(child.outcome == .failure(message))
        #expect(child.pollEntries().isEmpty)
        #expect(child.nextDeadline() == nil)
    }

    @Test("No command, and an argument with a NUL, fail without starting anything")
    func badArgv() {
        let now = Clock.monotonic()
        #expect(ChildProcess.start(argv: [], timeoutNanoseconds: Self.second, now: now).outcome == .failure("no command to run"))
        #expect(ChildProcess.start(argv: [""], timeoutNanoseconds: Self.second, now: now).outcome == .failure("no command to run"))
        #expect(ChildProcess.start(argv: ["/bin/echo", "a\u{0}b"], timeoutNanoseconds: Self.second, now: now).outcome
            == .failure("cannot run /bin/echo: an argument contains a NUL byte"))
    }

    @Test("A non-zero exit status is reported with the first line of stderr")
    func exitStatus() {
        let child = ChildProcess.start(argv: ["sh", "-c", "echo out; echo '  oops: no token\r' >&2; echo second >&2; exit 3"],
                                       timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .failure("exited with status 3: oops: no token"))
        #expect(isReaped(child.pid))
    }

    @Test("A non-zero exit status without stderr, and a long stderr line cut short")
    func exitStatusPlain() {
        let quiet = ChildProcess.start(argv: ["sh", "-c", "exit 7"], timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(quiet)
        #expect(quiet.outcome == .failure("exited with status 7"))
        let long = ChildProcess.start(argv: ["sh", "-c", "printf '%0300d\\033\\n' 0 >&2; exit 1"],
                                      timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(long)
        #expect(long.outcome == .failure("exited with status 1: " + String(repeating: "0", count: 200)))
        #expect(isReaped(quiet.pid) && isReaped(long.pid))
    }

    @Test("A command killed by a signal says which")
    func signaled() {
        let child = ChildProcess.start(argv: ["sh", "-c", "kill -9 $$"], timeoutNanoseconds: 10 * Self.second,
                                       now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .failure("killed by signal 9"))
        #expect(isReaped(child.pid))
    }

    @Test("Endless stderr is bounded too")
    func stderrBound() {
        let child = ChildProcess.start(argv: ["sh", "-c", "yes >&2"], timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .failure("printed more than 65536 bytes on standard error"))
        #expect(isReaped(child.pid))
    }

    @Test("wipe() zeroes the output buffer")
    func wipe() {
        let child = ChildProcess.start(argv: ["/bin/echo", "ya29.secret-access-token"], timeoutNanoseconds: 10 * Self.second,
                                       now: Clock.monotonic())
        drive(child)
        #expect(child.outcome == .success(25))
        #expect(outputText(child) == "ya29.secret-access-token\n")
        child.wipe()
        #expect(child.withOutput { $0.count } == 0)
        let raw = UnsafeRawBufferPointer(start: child.output, count: child.outputCapacity)
        #expect(raw.allSatisfy { $0 == 0 })
        #expect(UnsafeRawBufferPointer(start: child.scratch, count: ChildProcess.scratchSize).allSatisfy { $0 == 0 })
    }

    @Test("cancel() kills and reaps a running command")
    func cancel() {
        let child = ChildProcess.start(argv: ["/bin/sleep", "30"], timeoutNanoseconds: 60 * Self.second, now: Clock.monotonic())
        let pid = child.pid
        #expect(pid > 0)
        if !child.cancel(now: Clock.monotonic()) { drive(child) }
        #expect(child.outcome == .failure("cancelled"))
        #expect(child.pollEntries().isEmpty)
        #expect(isReaped(pid))
    }

    @Test("A running command released by its owner is killed and reaped by ChildReaper")
    func releasedIsAdopted() {
        var child: ChildProcess? = ChildProcess.start(argv: ["/bin/sleep", "30"], timeoutNanoseconds: 60 * Self.second,
                                                      now: Clock.monotonic())
        let pid = child!.pid
        child = nil
        let start = Clock.monotonic()
        while ChildReaper.reapAdopted() > 0 && Clock.monotonic() - start < 5 * Self.second {
            var none: [pollfd] = []
            _ = Sys.poll(&none, timeoutMilliseconds: 1)
        }
        #expect(ChildReaper.adoptedCount == 0)
        #expect(isReaped(pid))
    }

    @Test("The child has stdin on /dev/null, no other descriptor of ours, no blocked or ignored signal, and its own group")
    func hygiene() throws {
        // A descriptor opened without O_CLOEXEC, as a careless library might.
        let leak = open("/dev/null", O_RDONLY)
        #expect(leak >= 0)
        defer { close(leak) }
        // What the daemon does to itself: SIGTERM blocked (for its signalfd), SIGPIPE ignored.
        var block = sigset_t()
        var old = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &block, &old)
        let oldPipe = signal(SIGPIPE, SIG_IGN)
        defer {
            pthread_sigmask(SIG_SETMASK, &old, nil)
            signal(SIGPIPE, oldPipe)
        }
        let fds = ChildProcess.start(argv: ["/bin/ls", "-1", "/proc/self/fd"], timeoutNanoseconds: 10 * Self.second,
                                     now: Clock.monotonic())
        drive(fds)
        // 3 is the directory ls itself reads.
        #expect(fds.outcome == .success(8))
        #expect(outputText(fds) == "0\n1\n2\n3\n")
        let stdin = ChildProcess.start(argv: ["readlink", "/proc/self/fd/0"], timeoutNanoseconds: 10 * Self.second,
                                       now: Clock.monotonic())
        drive(stdin)
        #expect(outputText(stdin) == "/dev/null\n")
        let status = ChildProcess.start(argv: ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
                                        timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(status)
        // glibc's posix_spawn leaves its two internal signals (32 and 33, bits 31
        // and 32) ignored in the child, whatever it is asked; nothing else is.
        #expect(outputText(status) == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
            || outputText(status) == "SigBlk:\t0000000000000000\nSigIgn:\t0000000180000000\n")
        let stat = ChildProcess.start(argv: ["cat", "/proc/self/stat"], timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
        drive(stat)
        // pid (comm) state ppid pgrp ...: the group is its own.
        let text = outputText(stat)
        let afterComm = try #require(text.lastIndex(of: ")").map { text[text.index($0, offsetBy: 2)...] })
        let fields = afterComm.split(separator: " ")
        #expect(fields.count > 3 && fields[2] == "\(stat.pid)")
        #expect(fields.count > 1 && fields[1] == "\(getpid())")
        for c in [fds, stdin, status, stat] { #expect(isReaped(c.pid)) }
    }

    @Test("Durations in messages read as people write them", arguments: [
        (10_000_000_000, "10s"), (1_500_000_000, "1.5s"), (300_000_000, "300ms"), (1, "1ns"), (0, "0ns"), (-5, "0ns"),
    ] as [(Int64, String)])
    func durations(ns: Int64, text: String) {
        #expect(ChildReaper.duration(ns) == text)
    }

    @Test("Safety of the C helpers: no reaping or killing of pid 0, -1 or 1")
    func cHelperGuards() {
        var status = cl_exit_status()
        #expect(cl_reap(0, &status) == -1)
        #expect(cl_reap(-1, &status) == -1)
        #expect(cl_kill_group(0, 0) == -1)
        #expect(cl_kill_group(1, 0) == -1)
        #expect(cl_kill_group(-1, 0) == -1)
    }
}

extension ChildProcessTests {
    @Suite("AsyncResolver: getaddrinfo in a child, the loop never blocked")
    struct AsyncResolverTests {
        static let second: Int64 = 1_000_000_000

        func addresses(_ r: AsyncResolver) -> [String] {
            guard case .success(let eps) = r.outcome else { return [] }
            return eps.map { ep in
                let bytes = withUnsafeBytes(of: ep.bytes) { Array($0.prefix(ep.family == 4 ? 4 : 16)) }
                return "\(IPAddress(bytes: bytes)!)"
            }
        }

        @Test("localhost resolves to loopback addresses with the port set")
        func localhost() {
            let r = AsyncResolver.start(host: "localhost", port: 587, timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
            #expect(r.pid > 0 && r.fd >= 0)
            drive(r)
            guard case .success(let eps) = r.outcome else {
                Issue.record("localhost did not resolve: \(String(describing: r.outcome))")
                return
            }
            #expect(!eps.isEmpty)
            #expect(eps.allSatisfy { $0.port == 587 && ($0.family == 4 || $0.family == 6) })
            #expect(addresses(r).allSatisfy { $0 == "127.0.0.1" || $0 == "::1" })
            #expect(isReaped(r.pid))
            #expect(r.fd < 0 && r.nextDeadline() == nil)
        }

        @Test("IP literals are answered at once, without a child", arguments: [
            ("127.0.0.1", 4, "127.0.0.1"), ("::1", 6, "::1"), ("192.0.2.7", 4, "192.0.2.7"), ("2001:db8::25", 6, "2001:db8::25"),
        ])
        func literals(host: String, family: Int32, text: String) {
            let r = AsyncResolver.start(host: host, port: 25, timeoutNanoseconds: Self.second, now: Clock.monotonic())
            #expect(r.pid == 0 && r.fd < 0 && r.pollEntries().isEmpty)
            guard case .success(let eps) = r.outcome, eps.count == 1 else {
                Issue.record("no immediate answer")
                return
            }
            #expect(eps[0].family == family && eps[0].port == 25)
            #expect(addresses(r) == [text])
        }

        @Test("A name that does not exist fails with getaddrinfo's words")
        func invalidName() {
            let r = AsyncResolver.start(host: "name.invalid", port: 25, timeoutNanoseconds: 10 * Self.second,
                                        now: Clock.monotonic())
            drive(r)
            guard case .failure(let text) = r.outcome else {
                Issue.record("name.invalid resolved: \(String(describing: r.outcome))")
                return
            }
            // RFC 6761 §6.4: .invalid never resolves. Which of getaddrinfo's errors
            // that is depends on the name server; the text is gai_strerror's.
            let eaiNoData: Int32 = -5  // EAI_NODATA, a GNU extension Swift does not import
            let known = [EAI_NONAME, eaiNoData, EAI_AGAIN, EAI_FAIL].map { String(cString: gai_strerror($0)) }
            #expect(known.contains(text), "\(text)")
            #expect(isReaped(r.pid))
        }

        @Test("A resolver that does not answer in time is killed and reaped")
        func timeout() {
            let start = Clock.monotonic()
            let r = AsyncResolver.start(host: "localhost", port: 25, timeoutNanoseconds: 1, now: start)
            #expect(r.pid > 0)
            // The deadline has passed before the loop ever sees the pipe.
            r.tick(now: start + 1)
            drive(r)
            guard case .failure(let text) = r.outcome else {
                Issue.record("no timeout: \(String(describing: r.outcome))")
                return
            }
            #expect(text == "no answer from the name server within 1ns")
            #expect(isReaped(r.pid))
            #expect(r.fd < 0)
        }

        @Test("cancel() kills and reaps the lookup")
        func cancel() {
            let r = AsyncResolver.start(host: "localhost", port: 25, timeoutNanoseconds: 10 * Self.second, now: Clock.monotonic())
            let pid = r.pid
            if !r.cancel(now: Clock.monotonic()) { drive(r) }
            guard case .failure(let text) = r.outcome else {
                Issue.record("not cancelled")
                return
            }
            #expect(text == "cancelled")
            #expect(isReaped(pid))
        }

        @Test("Bad requests fail without a child")
        func badRequests() {
            let now = Clock.monotonic()
            for (host, port, message) in [("", 25, "no host name"), ("mail.example", 70000, "port 70000 is out of range"),
                                          ("mail.example", -1, "port -1 is out of range"),
                                          (String(repeating: "a", count: 254), 25, "not a host name"),
                                          ("a\u{0}b", 25, "not a host name")] {
                let r = AsyncResolver.start(host: host, port: port, timeoutNanoseconds: Self.second, now: now)
                #expect(r.pid == 0)
                guard case .failure(let text) = r.outcome else {
                    Issue.record("\(host) did not fail")
                    continue
                }
                #expect(text == message)
            }
        }

        // MARK: the record from the child

        func header(_ magic: Int32, _ status: Int32, _ n: Int32) -> [UInt8] {
            var out: [UInt8] = []
            for w in [magic, status, n] { withUnsafeBytes(of: w) { out += $0 } }
            return out
        }

        func endpointBytes(family: Int32, port: Int32, _ address: [UInt8]) -> [UInt8] {
            var ep = cl_ip_endpoint()
            ep.family = family
            ep.port = port
            withUnsafeMutableBytes(of: &ep.bytes) { b in for (i, v) in address.enumerated() where i < 16 { b[i] = v } }
            return withUnsafeBytes(of: ep) { Array($0) }
        }

        func decode(_ bytes: [UInt8], port: Int = 25) -> AsyncResolver.Outcome? {
            bytes.withUnsafeBytes { AsyncResolver.decode($0, port: port) }
        }

        @Test("A well-formed record decodes in order")
        func goodRecord() {
            let v6 = [UInt8](repeating: 0, count: 15) + [1]
            let bytes = header(CL_RESOLVE_MAGIC, 0, 2) + endpointBytes(family: 6, port: 25, v6)
                + endpointBytes(family: 4, port: 25, [192, 0, 2, 1])
            guard case .success(let eps) = decode(bytes) else {
                Issue.record("not decoded")
                return
            }
            #expect(eps.map { $0.family } == [6, 4])
            #expect(eps.allSatisfy { $0.port == 25 })
            let text = "Name or service not known"
            guard case .failure(let t) = decode(header(CL_RESOLVE_MAGIC, EAI_NONAME, Int32(text.utf8.count)) + Array(text.utf8)) else {
                Issue.record("failure record not decoded")
                return
            }
            #expect(t == text)
        }

        @Test("Malformed records are refused, never trusted")
        func malformedRecords() {
            let ep = endpointBytes(family: 4, port: 25, [127, 0, 0, 1])
            let bad: [(String, [UInt8])] = [
                ("empty", []),
                ("short header", Array(header(CL_RESOLVE_MAGIC, 0, 1).prefix(11))),
                ("bad magic", header(0x12345678, 0, 1) + ep),
                ("no addresses", header(CL_RESOLVE_MAGIC, 0, 0)),
                ("too many", header(CL_RESOLVE_MAGIC, 0, 17) + Array((0..<17).map { _ in ep }.joined())),
                ("negative count", header(CL_RESOLVE_MAGIC, 0, -1) + ep),
                ("huge count", header(CL_RESOLVE_MAGIC, 0, Int32.max) + ep),
                ("one byte short", Array((header(CL_RESOLVE_MAGIC, 0, 1) + ep).dropLast())),
                ("one byte long", header(CL_RESOLVE_MAGIC, 0, 1) + ep + [0]),
                ("family 5", header(CL_RESOLVE_MAGIC, 0, 1) + endpointBytes(family: 5, port: 25, [1, 2, 3, 4])),
                ("family 0", header(CL_RESOLVE_MAGIC, 0, 1) + endpointBytes(family: 0, port: 25, [1, 2, 3, 4])),
                ("another port", header(CL_RESOLVE_MAGIC, 0, 1) + endpointBytes(family: 4, port: 26, [1, 2, 3, 4])),
                ("text too long", header(CL_RESOLVE_MAGIC, -2, 201) + [UInt8](repeating: 65, count: 201)),
                ("text length off", header(CL_RESOLVE_MAGIC, -2, 5) + Array("abcd".utf8)),
                ("negative text length", header(CL_RESOLVE_MAGIC, -2, -3)),
            ]
            for (name, bytes) in bad {
                #expect(decode(bytes) == nil, "\(name)")
            }
        }

        @Test("Random bytes never trap the decoder")
        func randomRecords() {
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<3_000 {
                let n = Int.random(in: 0...(AsyncResolver.recordLimit + 2), using: &rng)
                var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if n >= 12 && Bool.random(using: &rng) {
                    // Often a valid header, so the checks behind it are reached.
                    let count = Int32.random(in: -1...17, using: &rng)
                    bytes.replaceSubrange(0..<12, with: header(CL_RESOLVE_MAGIC, Bool.random() ? 0 : -2, count))
                }
                _ = decode(bytes)
            }
        }
    }
}
