import CLibc
import Glibc
@testable import PosternCore
@testable import PosternRuntime

/// A kernel whose sockets are scripts: what each `read` returns (bytes, split
/// wherever the test likes, end of file, an error), how much each `send` takes
/// (everything, a few bytes, EAGAIN, an error) and which connections `accept`
/// hands out. Behind the `Kernel` seam it lets a unit test drive receiver
/// connections the way hostile or unlucky clients do.
final class ScriptedKernel: Kernel {
    enum Chunk {
        case bytes([UInt8])
        case eof
        case error(Int32)
    }

    enum SendStep {
        /// Take at most this many bytes.
        case take(Int)
        case wouldBlock
        case error(Int32)
    }

    final class Socket {
        /// What the client has sent and the daemon has not read yet.
        var incoming: [Chunk] = []
        /// Everything the daemon sent.
        var sent: [UInt8] = []
        /// Consumed one per send before `window` applies.
        var sendScript: [SendStep] = []
        /// Bytes the client will take before it reads again; nil: unlimited.
        var window: Int? = nil
        var closed = false
        /// Reads after the daemon closed the socket (must stay 0).
        var readsAfterClose = 0
        var reads = 0
        /// Reads that found nothing (EAGAIN).
        var emptyReads = 0
        var sends = 0

        var sentText: String { String(decoding: sent, as: UTF8.self) }
        /// The reply codes sent so far, one per final reply line.
        var replyCodes: [Int] {
            sentText.split(separator: "\r\n", omittingEmptySubsequences: true).compactMap { line in
                let b = Array(line.utf8)
                guard b.count >= 4, b[3] == 32 else { return nil }
                return Int(String(decoding: b[0..<3], as: UTF8.self))
            }
        }
    }

    var sockets: [Int32: Socket] = [:]
    var waiting: [Int32: [AcceptedConnection]] = [:]
    var nextFD: Int32 = 1000

    /// A client connects to `listenFD` from `peer`; returns its socket.
    func connect(to listenFD: Int32, from peer: IPAddress) -> (Int32, Socket) {
        nextFD += 1
        let s = Socket()
        sockets[nextFD] = s
        waiting[listenFD, default: []].append(AcceptedConnection(fd: nextFD, peer: peer))
        return (nextFD, s)
    }

    func hasInput(_ fd: Int32) -> Bool { !(sockets[fd]?.incoming.isEmpty ?? true) }

    func canSend(_ fd: Int32) -> Bool {
        guard let s = sockets[fd] else { return false }
        if let step = s.sendScript.first {
            if case .wouldBlock = step { return false }
            return true
        }
        return s.window.map { $0 > 0 } ?? true
    }

    // MARK: Kernel

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Errno> {
        guard let s = sockets[fd] else { return .failure(Errno(EBADF, "read")) }
        if s.closed { s.readsAfterClose += 1; return .failure(Errno(EBADF, "read")) }
        s.reads += 1
        guard let first = s.incoming.first else { s.emptyReads += 1; return .success(.wouldBlock) }
        switch first {
        case .eof:
            return .success(.eof)
        case .error(let e):
            s.incoming.removeFirst()
            return .failure(Errno(e, "read"))
        case .bytes(let b):
            let n = min(b.count, buffer.count)
            for i in 0..<n { buffer[i] = b[i] }
            if n == b.count { s.incoming.removeFirst() } else { s.incoming[0] = .bytes(Array(b[n...])) }
            return .success(.done(n))
        }
    }

    func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Result<Sys.IO, Errno> {
        guard let s = sockets[fd], !s.closed else { return .failure(Errno(EBADF, "send")) }
        s.sends += 1
        var limit = buffer.count
        if !s.sendScript.isEmpty {
            switch s.sendScript.removeFirst() {
            case .take(let n): limit = min(limit, n)
            case .wouldBlock: return .success(.wouldBlock)
            case .error(let e): return .failure(Errno(e, "send"))
            }
        } else if let w = s.window {
            if w == 0 { return .success(.wouldBlock) }
            limit = min(limit, w)
            s.window = w - limit
        }
        s.sent += Array(buffer[0..<limit])
        return .success(.done(limit))
    }

    func accept(_ listenFD: Int32) -> Result<AcceptedConnection?, Errno> {
        guard var q = waiting[listenFD], !q.isEmpty else { return .success(nil) }
        let a = q.removeFirst()
        waiting[listenFD] = q
        return .success(a)
    }

    func acceptLocal(_ listenFD: Int32) -> Result<Int32?, Errno> {
        switch accept(listenFD) {
        case .success(let a): return .success(a?.fd)
        case .failure(let e): return .failure(e)
        }
    }

    /// Outgoing connections, in order; `refuseConnect` makes the next ones fail.
    var outgoing: [(endpoint: cl_ip_endpoint, fd: Int32)] = []
    var refuseConnect: Int32? = nil
    /// Connections to these ports are refused at once (ECONNREFUSED).
    var refusePorts: Set<Int32> = []
    /// Connects report "in progress"; `connectResult` then gives the outcome.
    var connectInProgress = false

    func connect(_ endpoint: cl_ip_endpoint) -> Result<(fd: Int32, inProgress: Bool), Errno> {
        if let e = refuseConnect { return .failure(Errno(e, "connect")) }
        if refusePorts.contains(endpoint.port) { return .failure(Errno(ECONNREFUSED, "connect")) }
        nextFD += 1
        sockets[nextFD] = Socket()
        outgoing.append((endpoint, nextFD))
        return .success((nextFD, connectInProgress))
    }

    func connectResult(_ fd: Int32) -> Int32 { 0 }

    func close(_ fd: Int32) { sockets[fd]?.closed = true }

    func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Result<Int, Errno> {
        var ready = 0
        for i in fds.indices {
            var r: Int16 = 0
            if fds[i].events & Int16(POLLIN) != 0 && (hasInput(fds[i].fd) || !(waiting[fds[i].fd]?.isEmpty ?? true)) {
                r |= Int16(POLLIN)
            }
            if fds[i].events & Int16(POLLOUT) != 0 && canSend(fds[i].fd) { r |= Int16(POLLOUT) }
            fds[i].revents = r
            if r != 0 { ready += 1 }
        }
        return .success(ready)
    }
}

/// The receiver side of the daemon's loop over a scripted kernel and a spool on
/// a simulated disk: each `step()` is one iteration (poll, dispatch, group
/// commit, timers), with the clock under the test's control.
final class ReceiverHarness: LoopHarness {
    static let listenFD: Int32 = 3

    let kernel = ScriptedKernel()
    let disk = SimulatedDisk()
    let spool: Spool
    let context: ReceiverContext
    let pool: ReceiverPool
    var now: Int64 = 1_000_000_000_000

    init(maxConnections: Int = 4, timeoutSeconds: Int = 3, maxRecipients: Int = 100, maxMessageSize: Int = 1 << 20) {
        spool = Spool(dir: "/spool", segmentSize: 1 << 20, maxSize: 64 << 20, log: Log(quiet: true), storage: disk)
        _ = spool.open(clock: ClockReading(wall: 1_700_000_000, monotonic: 0, synchronised: true))
        let settings = ReceiverSettings(hostname: "mx.test", maxMessageSize: maxMessageSize,
                                        maxRecipients: maxRecipients, recipients: .anyone)
        context = ReceiverContext(settings: settings, allowClients: [CIDR("0.0.0.0/0")!, CIDR("::/0")!],
                                  timeoutSeconds: timeoutSeconds, spool: spool, log: Log(quiet: true), kernel: kernel)
        pool = ReceiverPool(context: context, maxConnections: maxConnections, hostname: "mx.test")
    }

    /// A client connects and is accepted; returns its socket.
    @discardableResult
    func connect(from peer: String = "127.0.0.1") -> ScriptedKernel.Socket {
        let (_, s) = kernel.connect(to: Self.listenFD, from: IPAddress(peer)!)
        pool.accept(from: Self.listenFD, now: now)
        return s
    }

    /// One loop iteration, as `Daemon.run` does it.
    func step() {
        dispatch()
        if spool.groupCommitDue { pool.commitDone(spool.flush(), now: now) }
        pool.timers(now: now)
    }

    /// The first half of an iteration, poll and dispatch: a commit written in
    /// it stays waiting for its sync.
    func dispatch() {
        var fds = pool.pollEntries().map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        let indices = pool.pollEntries().map { $0.index }
        _ = kernel.poll(&fds, timeoutMilliseconds: 0)
        for (k, p) in fds.enumerated() where p.revents != 0 {
            pool.ready(index: indices[k], revents: p.revents, now: now)
        }
    }

    func advance(seconds: Double) { now += Int64(seconds * 1e9) }

    /// The text of every queued message, in order.
    func queuedTexts() -> [(recipients: Int, text: [UInt8])] {
        spool.queue.messages.compactMap { m in
            let reader = MessageReader()
            guard case .success(let env) = reader.open(m, spool: spool) else { return nil }
            var out: [UInt8] = []
            while true {
                switch reader.next(spool: spool) {
                case .success(.end): return (env.recipients.count, out)
                case .success(.text):
                    out += Array(reader.pendingText)
                    reader.advance(reader.pendingText.count)
                case .failure: return nil
                }
            }
        }
    }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// A test's stand-in for the daemon's loop: `step()` is one iteration.
protocol LoopHarness: AnyObject {
    func step()
}

extension LoopHarness {
    /// Steps until `done` holds (at most `limit` iterations); returns whether it did.
    @discardableResult
    func run(limit: Int = 2000, until done: () -> Bool) -> Bool {
        for _ in 0..<limit {
            if done() { return true }
            step()
        }
        return done()
    }
}
