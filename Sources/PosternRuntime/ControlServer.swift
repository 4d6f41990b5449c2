import CLibc
import PosternCore

/// Facts about the daemon that `postern status` shows and only the daemon knows.
public struct DaemonFacts {
    public var startedMonotonic: Int64
    public var activeConnections: Int
    public var maxConnections: Int
}

/// The control socket (`[control] socket`, owner-only): `postern queue`,
/// `flush` and `status` talk to the running daemon through it. Served by the
/// same poll loop, with a small fixed pool of connections.
///
/// The protocol is `ControlRequest`'s: one request line; `OK` or `ERROR <reason>`,
/// the body, then the daemon closes. A long queue listing is produced a few entries at
/// a time as the client reads, so it never blocks the loop nor grows memory.
public final class ControlServer {
    final class Connection {
        enum Job {
            case none
            /// Listing the queue: the next id to show, and the totals so far.
            /// `bytes` in 64 bits: a queue may pass 2 GiB on a 32-bit board.
            case queue(json: Bool, after: UInt64?, count: Int, bytes: Int64)
        }

        var fd: Int32 = -1
        let input = ByteBuffer(capacity: ControlRequest.maxLength)
        let output = ByteBuffer(capacity: 16 * 1024)
        var job = Job.none
        /// What did not fit in `output` (an entry with very many recipients).
        var pending: [UInt8] = []
        var closeWhenFlushed = false
        var deadline: Int64 = 0
    }

    public let path: String
    let spool: Spool
    let delivery: Delivery
    let log: Log
    let kernel: any Kernel
    /// Kept current by the daemon.
    public var facts: DaemonFacts
    public internal(set) var listenFD: Int32 = -1
    let connections: [Connection]
    let reader = MessageReader(capacity: 4096)

    static let requestTimeout: Int64 = 10_000_000_000

    public init(path: String, spool: Spool, delivery: Delivery, log: Log, facts: DaemonFacts,
                kernel: any Kernel = PosixKernel()) {
        self.path = path
        self.kernel = kernel
        self.spool = spool
        self.delivery = delivery
        self.log = log
        self.facts = facts
        connections = (0..<4).map { _ in Connection() }
    }

    /// Binds the socket; returns an error message when it cannot.
    public func open() -> String? {
        if let slash = path.utf8.lastIndex(of: 47), slash != path.utf8.startIndex {
            let parent = String(decoding: path.utf8[..<slash], as: UTF8.self)
            if case .failure(let e) = Sys.mkdir(parent, 0o755) { return "control socket: \(e)" }
        }
        // A socket file left by a daemon that died is removed; one that answers
        // belongs to a running postern.
        let probe = cl_connect_unix(path)
        if probe >= 0 {
            Sys.close(probe)
            return "control socket \(path) is in use by another running postern"
        }
        _ = Sys.unlink(path)
        listenFD = cl_listen_unix(path, 8)
        if listenFD < 0 { return "control socket \(path): \(Errno.current("bind").text)" }
        return nil
    }

    public func close() {
        for c in connections where c.fd >= 0 { drop(c) }
        if listenFD >= 0 {
            kernel.close(listenFD)
            listenFD = -1
            _ = Sys.unlink(path)
        }
    }

    // MARK: poll loop

    public func pollSet() -> [(fd: Int32, events: Int16, index: Int)] {
        var out: [(fd: Int32, events: Int16, index: Int)] = []
        if listenFD >= 0 { out.append((listenFD, Int16(POLLIN), -1)) }
        for (i, c) in connections.enumerated() where c.fd >= 0 {
            let sending = !c.output.isEmpty || !c.pending.isEmpty || c.closeWhenFlushed
            out.append((c.fd, sending ? Int16(POLLOUT) : Int16(POLLIN), i))
        }
        return out
    }

    public func nextDeadline() -> Int64? {
        connections.filter { $0.fd >= 0 }.map { $0.deadline }.min()
    }

    public func ready(index: Int, revents: Int16, now: Int64) {
        if index < 0 {
            accept(now: now)
            return
        }
        let c = connections[index]
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 && c.output.isEmpty && !c.closeWhenFlushed {
            read(c, now: now)
        }
        if c.fd >= 0 && revents & Int16(POLLOUT | POLLERR) != 0 { write(c, now: now) }
    }

    public func timers(now: Int64) {
        for c in connections where c.fd >= 0 && now >= c.deadline { drop(c) }
    }

    func accept(now: Int64) {
        while true {
            guard case .success(let accepted) = kernel.acceptLocal(listenFD), let fd = accepted else { return }
            guard let c = connections.first(where: { $0.fd < 0 }) else {
                let busy = Array("ERROR busy: too many control connections\n".utf8)
                _ = busy.withUnsafeBytes { kernel.send(fd, $0) }
                kernel.close(fd)
                continue
            }
            c.fd = fd
            c.input.clear()
            c.output.clear()
            c.job = .none
            c.pending = []
            c.closeWhenFlushed = false
            c.deadline = now + Self.requestTimeout
        }
    }

    func read(_ c: Connection, now: Int64) {
        c.input.compact()
        switch kernel.read(c.fd, c.input.writable) {
        case .success(.done(let n)): c.input.didWrite(n)
        case .success(.wouldBlock): return
        case .success(.eof), .failure:
            drop(c)
            return
        }
        let parsed = ControlRequest.parse(c.input.readable)
        if parsed == .needMore { return }
        // One request per connection: what follows it is never read as another.
        c.input.clear()
        switch parsed {
        case .needMore: return
        case .invalid(let why): answer(c, "ERROR \(why)\n")
        case .request(let request): handle(c, request, now: now)
        }
    }

    func handle(_ c: Connection, _ request: ControlRequest, now: Int64) {
        switch request {
        case .queue(let json):
            put(c, Array(("OK\n" + (json ? QueueReport.jsonHeader() : QueueReport.textHeader())).utf8))
            c.job = .queue(json: json, after: nil, count: 0, bytes: 0)
            write(c, now: now)
        case .flush:
            let n = delivery.retryNow()
            log.notice("flush requested over the control socket", [("queued", "\(n)")])
            answer(c, "OK\n\(n) message\(n == 1 ? "" : "s") scheduled for delivery now\n")
        case .status:
            answer(c, "OK\n" + status(now: now))
        }
    }

    func answer(_ c: Connection, _ text: String) {
        put(c, Array(text.utf8))
        c.closeWhenFlushed = true
    }

    /// Queues bytes for the client: into the fixed buffer, the rest aside.
    func put(_ c: Connection, _ bytes: [UInt8]) {
        if c.pending.isEmpty && c.output.append(bytes) { return }
        c.pending += bytes
    }

    func status(now: Int64) -> String {
        let f = facts
        let wall = Clock.wall()
        var s = "postern \(posternVersion), up \(QueueReport.age((now - f.startedMonotonic) / 1_000_000_000))\n"
        s += "queue:          \(spool.queue.count) message\(spool.queue.count == 1 ? "" : "s"), \(spool.queue.textBytes) bytes of text\n"
        if let oldest = spool.queue.messages.min(by: { $0.arrival < $1.arrival }) {
            s += "oldest message: \(Spool.queueID(oldest.id)), \(QueueReport.age(wall - oldest.arrival)) old\n"
        }
        s += "last delivery:  " + (delivery.lastDeliveryWall.map { "\(QueueReport.age(wall - $0)) ago" } ?? "none since start") + "\n"
        s += "upstream:       \(delivery.upstreamState(now: now))\n"
        for line in delivery.upstreamLines(now: now) { s += "  " + line + "\n" }
        s += "spool:          \(spool.dir), \(spool.totalBytes) bytes in \(spool.segmentCount) segment\(spool.segmentCount == 1 ? "" : "s")"
        s += spool.acceptsMail(now: now) ? "\n" : ", FULL: new mail is refused with 452 4.3.1\n"
        s += "connections:    \(f.activeConnections) of \(f.maxConnections)\n"
        return s
    }

    func write(_ c: Connection, now: Int64) {
        while c.fd >= 0 {
            if !c.pending.isEmpty {
                c.output.compact()
                let n = min(c.pending.count, c.output.freeSpace)
                c.output.append(Array(c.pending[0..<n]))
                c.pending.removeFirst(n)
            }
            if c.pending.isEmpty { fill(c, now: now) }
            if c.output.isEmpty {
                if c.closeWhenFlushed { drop(c) }
                return
            }
            switch kernel.send(c.fd, c.output.readable) {
            case .success(.done(let n)):
                c.output.consume(n)
                c.deadline = now + Self.requestTimeout
            case .success(.wouldBlock), .success(.eof):
                return
            case .failure:
                drop(c)
                return
            }
        }
    }

    /// Adds queue entries to the output while there is room.
    func fill(_ c: Connection, now: Int64) {
        guard case .queue(let json, var after, var count, var bytes) = c.job else { return }
        let wall = Clock.wall()
        while c.output.freeSpace > 4096 && c.pending.isEmpty {
            guard let m = nextMessage(after: after) else {
                put(c, Array((json ? QueueReport.jsonFooter(count: count, bytes: bytes)
                                   : QueueReport.textFooter(count: count, bytes: bytes)).utf8))
                c.job = .none
                c.closeWhenFlushed = true
                return
            }
            after = m.id
            guard let info = describe(m, now: now) else { continue }
            let text = json ? QueueReport.json(info, now: wall, first: count == 0) : QueueReport.text(info, now: wall)
            put(c, Array(text.utf8))
            count += 1
            bytes += Int64(m.size)
        }
        c.job = .queue(json: json, after: after, count: count, bytes: bytes)
    }

    func nextMessage(after: UInt64?) -> QueuedMessage? {
        guard let a = after else { return spool.queue.messages.first }
        return spool.queue.message(after: a)
    }

    func describe(_ m: QueuedMessage, now: Int64) -> QueueEntryInfo? {
        guard case .success(let env) = reader.open(m, spool: spool) else { return nil }
        return Self.info(m, env, nextTry: delivery.secondsUntilTry(m, now: now), lastReply: delivery.lastReply(of: m))
    }

    public static func info(_ m: QueuedMessage, _ env: SpoolCodec.EnvelopeRecord, nextTry: Int?, lastReply: String?) -> QueueEntryInfo {
        var rcpts: [(address: String, state: QueueEntryInfo.RecipientState)] = []
        for (i, r) in env.recipients.enumerated() {
            let st: QueueEntryInfo.RecipientState = m.state(i) == 1 ? .delivered : (m.state(i) == 2 ? .failed : .pending)
            rcpts.append((ASCII.printable(r, limit: 300), st))
        }
        return QueueEntryInfo(id: Spool.queueID(m.id), arrival: m.arrival, size: m.size,
                              from: ASCII.printable(env.from, limit: 300), recipients: rcpts,
                              attempts: m.attempts, nextTry: nextTry, lastReply: lastReply)
    }

    func drop(_ c: Connection) {
        if c.fd >= 0 {
            // Read what the client sent beyond its request first: closing a socket
            // with unread input resets it, and the client would lose our answer.
            var scratch = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<16 {
                guard case .success(.done) = scratch.withUnsafeMutableBytes({ kernel.read(c.fd, $0) }) else { break }
            }
            kernel.close(c.fd)
        }
        c.fd = -1
        c.job = .none
        c.input.clear()
        c.output.clear()
        c.pending = []
    }
}

/// The version string of `postern version` and `postern status`.
public let posternVersion = "0.1.0"
