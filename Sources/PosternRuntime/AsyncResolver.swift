import CLibc
import PosternCore

/// A host name looked up without blocking the loop: getaddrinfo(3) runs in a
/// forked child (`cl_resolve_fork`) that writes one record to a pipe and exits.
///
/// Why a process: getaddrinfo blocks for as long as the name server takes, and
/// getaddrinfo_a starts threads inside libc; the daemon is one thread by principle
/// (DESIGN.md principle 1), and a child can be killed at a deadline. The child dies
/// with the daemon (PR_SET_PDEATHSIG) and closes every descriptor but stdio and its
/// pipe before looking anything up.
///
/// An IP literal ("192.0.2.1", "::1") is answered at once, without a child. The loop:
///
///     if resolver.fd >= 0 { poll it for POLLIN }
///     ... resolver.readable(now: now)             // on any revents of fd
///     if let t = resolver.nextDeadline(), now >= t { resolver.tick(now: now) }
///     if let outcome = resolver.outcome { ... }    // nil until the child is reaped
///
/// `.success` holds 1 ... 16 endpoints in getaddrinfo's order (IPv6 and IPv4 as
/// the system's address selection sorted them) with the port set; `.failure` holds
/// getaddrinfo's words ("Name or service not known") or "no answer from the name
/// server within 10s" when the child was killed at the deadline.
public final class AsyncResolver {
    public enum Outcome {
        case success([cl_ip_endpoint])
        case failure(String)
    }

    /// The largest record the child writes: the header and 16 endpoints.
    static let headerSize = 12
    static let endpointSize = MemoryLayout<cl_ip_endpoint>.size
    static let recordLimit = headerSize + Int(CL_RESOLVE_MAX) * endpointSize

    enum Ending {
        /// The pipe reached end of file: the record is in `record`.
        case answered
        /// The deadline passed; the child was sent SIGKILL.
        case timedOut
        /// Killed for this reason (a malformed answer, a read error, cancel).
        case killed(String)
    }

    enum State {
        case running
        case ending(Ending, ReapSchedule)
        case finished(Outcome)
    }

    public let host: String
    public let port: Int
    public let timeoutNanoseconds: Int64
    public let deadline: Int64
    /// The child's pid, kept after it is reaped (for logs); 0 when there was none.
    public private(set) var pid: Int32 = 0
    public private(set) var reaped = true
    /// The pipe to poll for POLLIN; -1 when there is nothing to poll.
    public private(set) var fd: Int32 = -1
    var state: State = .running
    /// What the child wrote, up to one byte more than a record can be.
    var record: [UInt8]
    var recordCount = 0

    /// Looks `host` up for TCP `port`. The result may already be finished: an IP
    /// literal, or a child that could not be started.
    public static func start(host: String, port: Int, timeoutNanoseconds: Int64, now: Int64) -> AsyncResolver {
        let r = AsyncResolver(host: host, port: port, timeoutNanoseconds: timeoutNanoseconds, now: now)
        r.begin()
        return r
    }

    init(host: String, port: Int, timeoutNanoseconds: Int64, now: Int64) {
        self.host = host
        self.port = port
        self.timeoutNanoseconds = timeoutNanoseconds
        deadline = ChildReaper.later(now, timeoutNanoseconds)
        record = [UInt8](repeating: 0, count: Self.recordLimit + 1)
    }

    deinit {
        closePipe()
        if !reaped {
            ChildReaper.killProcess(pid)
            if ChildReaper.reap(pid) == .running { ChildReaper.adopt(pid) }
        }
    }

    func begin() {
        guard port >= 0 && port <= 65535 else {
            state = .finished(.failure("port \(port) is out of range"))
            return
        }
        if let ip = IPAddress(host) {
            state = .finished(.success([Self.endpoint(ip, port: port)]))
            return
        }
        guard !host.isEmpty else {
            state = .finished(.failure("no host name"))
            return
        }
        // A DNS name is at most 253 characters (RFC 1035 §2.3.4); a NUL would cut it short.
        guard host.utf8.count <= 253, !host.utf8.contains(0) else {
            state = .finished(.failure("not a host name"))
            return
        }
        var readFD: Int32 = -1
        let child = cl_resolve_fork(host, Int32(port), &readFD)
        guard child > 0 else {
            state = .finished(.failure("cannot start the resolver: \(Errno.current("fork"))"))
            return
        }
        pid = child
        reaped = false
        fd = readFD
    }

    /// An endpoint for an address and port (the port is 0 ... 65535).
    static func endpoint(_ ip: IPAddress, port: Int) -> cl_ip_endpoint {
        var ep = cl_ip_endpoint()
        ep.family = ip.isV4 ? 4 : 6
        ep.port = Int32(truncatingIfNeeded: port)
        withUnsafeMutableBytes(of: &ep.bytes) { b in
            for (i, v) in ip.bytes.enumerated() where i < b.count { b[i] = v }
        }
        return ep
    }

    // MARK: the loop's side

    public func pollEntries() -> [(fd: Int32, events: Int16)] {
        fd >= 0 ? [(fd, Int16(POLLIN))] : []
    }

    /// When `tick` is due: the deadline while the child runs, a reaping retry after
    /// it answered or was killed; nil once finished.
    public func nextDeadline() -> Int64? {
        switch state {
        case .running: return deadline
        case .ending(.answered, let reaping): return min(reaping.nextTry, deadline)
        case .ending(_, let reaping): return reaping.nextTry
        case .finished: return nil
        }
    }

    public var outcome: Outcome? {
        if case .finished(let o) = state { return o }
        return nil
    }

    public var isFinished: Bool { outcome != nil }

    /// Called when poll reports `fd` readable, hung up or in error. Reads once.
    public func readable(now: Int64) {
        guard case .running = state, fd >= 0 else { return }
        let result = record.withUnsafeMutableBytes { all in
            Sys.read(fd, UnsafeMutableRawBufferPointer(rebasing: all[recordCount...]))
        }
        switch result {
        case .success(.done(let n)):
            recordCount = min(recordCount + n, record.count)
            if recordCount > Self.recordLimit { kill(.killed("the resolver's answer was malformed"), now: now) }
        case .success(.eof):
            closePipe()
            state = .ending(.answered, ReapSchedule(now: now))
            tryReap(now: now)
        case .success(.wouldBlock):
            break
        case .failure(let e):
            kill(.killed("reading the resolver's answer failed: \(e.text)"), now: now)
        }
    }

    /// Enforces the deadline and reaps; call when `nextDeadline()` has passed.
    public func tick(now: Int64) {
        ChildReaper.reapAdopted()
        switch state {
        case .running:
            if now >= deadline { kill(.timedOut, now: now) }
        case .ending(.answered, let reaping):
            // The answer is read; the child only has to be reaped. Past the
            // deadline it is killed (it is one _exit away from done anyway).
            if now >= deadline && !reaped { ChildReaper.killProcess(pid) }
            if now >= reaping.nextTry || now >= deadline { tryReap(now: now) }
        case .ending(_, let reaping):
            if now >= reaping.nextTry { tryReap(now: now) }
        case .finished:
            break
        }
    }

    /// No longer needed (the daemon stops, the upstream changed): SIGKILL and a
    /// reap attempt. Returns true when reaped; otherwise keep calling `tick` until
    /// `isFinished`, or release it and `ChildReaper` takes it over.
    @discardableResult
    public func cancel(now: Int64) -> Bool {
        switch state {
        case .running, .ending(.answered, _):
            kill(.killed("cancelled"), now: now)
        case .ending, .finished:
            break
        }
        return isFinished
    }

    // MARK: internals

    func kill(_ ending: Ending, now: Int64) {
        closePipe()
        if !reaped { ChildReaper.killProcess(pid) }
        state = .ending(ending, ReapSchedule(now: now))
        tryReap(now: now)
    }

    func tryReap(now: Int64) {
        guard case .ending(let ending, var reaping) = state else { return }
        var status = ExitStatus.unknown
        if !reaped {
            guard let s = reaping.attempt(pid, now: now) else {
                state = .ending(ending, reaping)
                return
            }
            reaped = true
            status = s
        }
        switch ending {
        case .answered:
            let decoded = record.withUnsafeBytes { Self.decode(UnsafeRawBufferPointer(rebasing: $0[..<recordCount]), port: port) }
            if let outcome = decoded {
                state = .finished(outcome)
            } else if case .signaled(let sig) = status {
                state = .finished(.failure("the resolver process was killed by signal \(sig)"))
            } else {
                state = .finished(.failure("the resolver's answer was malformed"))
            }
        case .timedOut:
            state = .finished(.failure("no answer from the name server within \(ChildReaper.duration(timeoutNanoseconds))"))
        case .killed(let reason):
            state = .finished(.failure(reason))
        }
    }

    func closePipe() {
        if fd >= 0 { Sys.close(fd) }
        fd = -1
    }

    /// The child's record (cl_process.h), checked field by field: the magic, the
    /// status, the count within bounds, the exact length, each endpoint's family
    /// and port. Nil when anything is off.
    static func decode(_ bytes: UnsafeRawBufferPointer, port: Int) -> Outcome? {
        guard bytes.count >= headerSize else { return nil }
        let magic = bytes.loadUnaligned(fromByteOffset: 0, as: Int32.self)
        let status = bytes.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        let n = Int(bytes.loadUnaligned(fromByteOffset: 8, as: Int32.self))
        guard magic == CL_RESOLVE_MAGIC else { return nil }
        if status != 0 {
            guard n >= 0, n <= Int(CL_RESOLVE_TEXT_MAX), bytes.count == headerSize + n else { return nil }
            let text = ASCII.printable(UnsafeRawBufferPointer(rebasing: bytes[headerSize...]), limit: Int(CL_RESOLVE_TEXT_MAX))
            return .failure(text.isEmpty ? "getaddrinfo failed with code \(status)" : text)
        }
        guard n >= 1, n <= Int(CL_RESOLVE_MAX), bytes.count == headerSize + n * endpointSize else { return nil }
        var out: [cl_ip_endpoint] = []
        out.reserveCapacity(n)
        for k in 0..<n {
            var raw = cl_ip_endpoint()
            let from = headerSize + k * endpointSize
            withUnsafeMutableBytes(of: &raw) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[from..<(from + endpointSize)]))
            }
            guard raw.family == 4 || raw.family == 6, Int(raw.port) == port else { return nil }
            // A fresh endpoint: of an IPv4 address only its four bytes are taken.
            let length = raw.family == 4 ? 4 : 16
            let address = withUnsafeBytes(of: raw.bytes) { Array($0.prefix(length)) }
            guard let ip = IPAddress(bytes: address) else { return nil }
            out.append(endpoint(ip, port: port))
        }
        return .success(out)
    }
}
