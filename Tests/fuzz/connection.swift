import CLibc
@testable import PosternCore
@testable import PosternRuntime

// Whole client connections, below the socket: the receiver pool, its
// connections, the receiver machine and a spool in memory, driven by a kernel
// whose reads, writes and clock the fuzzer controls — partial reads, short
// writes, EAGAIN, half-closes, resets and time passing, in any order, for two
// clients at once.
//
// Input: a settings byte (bits 0–1 the spool's space, bit 2 a small message
// limit, bit 3 AUTH with one user, checked in the loop), then events until the bytes run out. Each event is a
// byte (its low 3 bits the kind, bit 3 the client) and its arguments:
//   0 the client sends the next n bytes (n from one byte, 1–256)
//   1 the client reads: its window becomes n bytes (0: it stops reading)
//   2 the client shuts down its sending side (end of file)
//   3 the connection is reset
//   4 time passes (0.1–25.6 s)
//   5 a client connects in that slot (after it was closed)
//   6 the client sends what it sent last again, n times (a pipelined flood
//     from a short input)
//   7 one loop iteration
// Then both clients read everything: with no time passing, every command
// and every byte of text they sent must be processed (a stalled session is
// a failure), and after a half-close every session must end.
//
// Invariants: every reply is a well-formed reply line; replies never exceed the
// output buffer; a closed socket is never read or written again; every
// "250 … queued as ID" names a message the spool holds (nothing acknowledged is
// lost); no session stalls.

final class FuzzSocket {
    var incoming: [UInt8] = []
    var eof = false
    var reset = false
    var sent: [UInt8] = []
    var window = Int.max
    var closed = false
}

final class FuzzKernel: Kernel {
    var sockets: [Int32: FuzzSocket] = [:]
    var waiting: [AcceptedConnection] = []
    var nextFD: Int32 = 100

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Errno> {
        guard let s = sockets[fd] else { return .failure(Errno(EBADF, "read")) }
        require(!s.closed, "read of a closed socket")
        if s.reset { return .failure(Errno(ECONNRESET, "read")) }
        if s.incoming.isEmpty { return .success(s.eof ? .eof : .wouldBlock) }
        let n = min(buffer.count, s.incoming.count)
        for i in 0..<n { buffer[i] = s.incoming[i] }
        s.incoming.removeFirst(n)
        return .success(.done(n))
    }

    func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Result<Sys.IO, Errno> {
        guard let s = sockets[fd] else { return .failure(Errno(EBADF, "send")) }
        require(!s.closed, "send on a closed socket")
        if s.reset { return .failure(Errno(EPIPE, "send")) }
        if s.window == 0 { return .success(.wouldBlock) }
        let n = min(buffer.count, s.window)
        if s.window != Int.max { s.window -= n }
        s.sent += Array(buffer[0..<n])
        return .success(.done(n))
    }

    func accept(_ listenFD: Int32) -> Result<AcceptedConnection?, Errno> {
        if waiting.isEmpty { return .success(nil) }
        return .success(waiting.removeFirst())
    }

    func acceptLocal(_ listenFD: Int32) -> Result<Int32?, Errno> { .success(nil) }
    func connect(_ endpoint: cl_ip_endpoint) -> Result<(fd: Int32, inProgress: Bool), Errno> {
        .failure(Errno(ECONNREFUSED, "connect"))
    }
    func connectResult(_ fd: Int32) -> Int32 { ECONNREFUSED }
    func close(_ fd: Int32) { sockets[fd]?.closed = true }

    func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Result<Int, Errno> {
        var n = 0
        for i in fds.indices {
            guard let s = sockets[fds[i].fd] else { continue }
            var r: Int16 = 0
            if fds[i].events & Int16(POLLIN) != 0 && (!s.incoming.isEmpty || s.eof || s.reset) { r |= Int16(POLLIN) }
            if fds[i].events & Int16(POLLOUT) != 0 && (s.window > 0 || s.reset) { r |= Int16(POLLOUT) }
            if s.reset { r |= Int16(POLLERR) }
            fds[i].revents = r
            if r != 0 { n += 1 }
        }
        return .success(n)
    }
}

/// Files in memory, durable at once: this target is about connections, not
/// power loss (the crash tests cover that).
final class FuzzStorage: SpoolStorage {
    var files: [String: [UInt8]] = [:]
    var fds: [Int32: String] = [:]
    var nextFD: Int32 = 10
    /// Writes fail with ENOSPC beyond this many bytes in all.
    var capacity = Int.max

    func open(_ path: String) -> Int32 { nextFD += 1; fds[nextFD] = path; return nextFD }
    func makeDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }
    func lock(_ path: String) -> Result<Int32, Errno> { .success(open(path)) }
    func list(_ directory: String) -> Result<[String], Errno> {
        .success(files.keys.compactMap { $0.hasPrefix(directory + "/") ? String($0.dropFirst(directory.count + 1)) : nil })
    }
    func openForReading(_ path: String) -> Result<Int32, Errno> {
        files[path] == nil ? .failure(Errno(ENOENT, "open")) : .success(open(path))
    }
    func create(_ path: String) -> Result<Int32, Errno> {
        if files[path] != nil { return .failure(Errno(EEXIST, "open")) }
        files[path] = []
        return .success(open(path))
    }
    func size(_ fd: Int32) -> Result<Int, Errno> { .success(fds[fd].flatMap { files[$0]?.count } ?? 0) }
    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        guard let p = fds[fd], let f = files[p] else { return .failure(Errno(EBADF, "pread")) }
        let n = max(0, min(buffer.count, f.count - offset))
        for i in 0..<n { buffer[i] = f[offset + i] }
        return .success(n)
    }
    func write(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        guard let p = fds[fd], var f = files[p] else { return .failure(Errno(EBADF, "pwritev")) }
        var used = 0
        for (_, v) in files { used += v.count }
        var at = offset
        for part in parts {
            for b in part {
                if at >= f.count && used >= capacity { files[p] = f; return .success(at - offset) }
                if at < f.count { f[at] = b } else { f.append(b); used += 1 }
                at += 1
            }
        }
        files[p] = f
        return .success(at - offset)
    }
    func syncData(_ fd: Int32) -> Result<Void, Errno> { .success(()) }
    func truncate(_ fd: Int32, to length: Int) -> Result<Void, Errno> {
        if let p = fds[fd], let f = files[p], length <= f.count { files[p] = Array(f.prefix(length)) }
        return .success(())
    }
    func close(_ fd: Int32) { fds[fd] = nil }
    func unlink(_ path: String) -> Result<Void, Errno> { files[path] = nil; return .success(()) }
    func syncDirectory(_ path: String) -> Result<Void, Errno> { .success(()) }
    func availableSpace(_ path: String) -> Result<Int64, Errno> {
        if capacity == Int.max { return .success(Int64.max) }
        var used = 0
        for (_, v) in files { used += v.count }
        return .success(Int64(max(0, capacity - used)))
    }
}

/// Bytes a client may have sent and the daemon not yet read: enough for floods
/// that fill every buffer, small enough to keep each input fast.
let maxPending = 256 * 1024

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let settingsByte = input.byte()
    let kernel = FuzzKernel()
    let storage = FuzzStorage()
    // Bit 0–1: a spool that runs out of space after 0, 2, 16 KiB or never.
    storage.capacity = [0, 2048, 16384, Int.max][Int(settingsByte & 3)]
    let spool = Spool(dir: "/s", segmentSize: 64 * 1024, maxSize: 1 << 20, log: Log(quiet: true), storage: storage)
    guard case .success = spool.open(clock: ClockReading(wall: 1_800_000_000, monotonic: 0, synchronised: true)) else { return }
    var settings = ReceiverSettings(hostname: "mx.fuzz", maxMessageSize: settingsByte & 4 != 0 ? 600 : 100_000,
                                    maxRecipients: 3, recipients: .anyone)
    settings.recipientOvershootLimit = 5
    let context = ReceiverContext(settings: settings, allowClients: [CIDR("127.0.0.0/8")!], timeoutSeconds: 3,
                                  spool: spool, log: Log(quiet: true), kernel: kernel)
    if settingsByte & 8 != 0, case .success(let users) = AuthUsers.parse(fuzzAuthUsers) {
        // alice:secret, SHA-512-crypt at 1,000 rounds: cheap enough to check
        // in the loop (no checker process here), so verdicts come at once.
        context.authUsers = users
        context.settings.authAvailable = true
    }
    let pool = ReceiverPool(context: context, maxConnections: 2, hostname: "mx.fuzz")
    var now: Int64 = 1_000_000_000_000
    var clients: [FuzzSocket?] = [nil, nil]
    let peers = [IPAddress.loopbackV4, IPAddress("192.0.2.7")!]

    func connect(_ k: Int) {
        kernel.nextFD += 1
        let s = FuzzSocket()
        kernel.sockets[kernel.nextFD] = s
        kernel.waiting.append(AcceptedConnection(fd: kernel.nextFD, peer: peers[k]))
        clients[k] = s
        pool.accept(from: 3, now: now)
    }

    func step() {
        let entries = pool.pollEntries()
        var fds = entries.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        _ = kernel.poll(&fds, timeoutMilliseconds: 0)
        for (k, p) in fds.enumerated() where p.revents != 0 {
            pool.ready(index: entries[k].index, revents: p.revents, now: now)
        }
        if spool.groupCommitDue { pool.commitDone(spool.flush(), now: now) }
        pool.timers(now: now)
    }

    connect(0)
    connect(1)
    var last: [[UInt8]] = [[], []]
    var events = 0
    while !input.isEmpty && events < 2000 {
        events += 1
        let op = input.byte()
        let k = Int(op >> 3) & 1
        switch op & 7 {
        case 0:
            let n = input.int(1...256)
            last[k] = Array(input.bytes(n))
            if let c = clients[k], !c.eof, c.incoming.count < maxPending { c.incoming += last[k] }
        case 1: clients[k]?.window = input.int(0...255)
        case 2: clients[k]?.eof = true
        case 3: clients[k]?.reset = true
        case 4: now += Int64(input.int(1...256)) * 100_000_000
        case 5: if clients[k]?.closed ?? true { connect(k) }
        case 6:
            let n = input.int(1...256)
            if let c = clients[k], !c.eof {
                for _ in 0..<n where c.incoming.count < maxPending { c.incoming += last[k] }
            }
        default: step()
        }
    }
    // Wind down: the clients read everything and send nothing more. With no time
    // passing, every session must come to its end — whatever was buffered is
    // answered, then the half-close closes it; a connection still open here is
    // stalled (issue 7: a pipelined batch waited for the idle timeout).
    for c in clients { c?.window = Int.max }
    // Enough iterations to read what is pending at 16 KiB a read, and then some.
    let pending = clients.reduce(0) { $0 + ($1?.incoming.count ?? 0) }
    for _ in 0..<(20 + pending / 1024) { step() }
    // A failed AUTH's reply is held for the throttle's delay (at most 8 s),
    // and nothing is read meanwhile: time passes until no reply is held (the
    // replies it releases may lead to more failures, and more holds).
    func releaseHolds() {
        var rounds = 0
        while rounds < 40 && pool.connections.contains(where: { $0.isActive && $0.holdUntil != nil }) {
            rounds += 1
            now += 9_000_000_000
            for _ in 0..<(20 + pending / 1024) { step() }
        }
    }
    releaseHolds()
    for c in pool.connections where c.isActive { requireNotStalled(c) }
    for c in clients { c?.eof = true }
    for _ in 0..<20 where pool.activeCount > 0 {
        step()
        releaseHolds()
    }
    require(pool.activeCount == 0, "a session stalled with its client reading and at end of input")
    for c in clients.compactMap({ $0 }) { check(c.sent, spool) }
}

/// A connection whose client reads everything has nothing left it could
/// process: no complete command line, no text, in its input.
func requireNotStalled(_ c: ReceiverConnection) {
    if c.machine.isClosed || c.machine.isAwaitingCommit || c.peerGone || c.holdUntil != nil { return }
    if c.machine.expectsText {
        require(c.input.isEmpty, "\(c.input.count) bytes of text left unprocessed")
        return
    }
    var framer = c.framer
    let frame = framer.next(in: c.input.readable).frame
    require(frame == .needMore, "a command left unprocessed while its client reads: \(frame)")
}

/// Every reply line is `ddd` then space or hyphen (RFC 5321 §4.2); every
/// "queued as" names a queued message.
func check(_ sent: [UInt8], _ spool: Spool) {
    var start = 0
    var i = 0
    while i + 1 < sent.count {
        if sent[i] == 13 && sent[i + 1] == 10 {
            let line = sent[start..<i]
            require(line.count >= 4 && line.count <= 510, "reply line of \(line.count) bytes")
            let b = Array(line)
            require(b[0] >= 50 && b[0] <= 53 && b[1] >= 48 && b[1] <= 57 && b[2] >= 48 && b[2] <= 57,
                    "reply code is not ddd")
            require(b[3] == 32 || b[3] == 45, "no space or hyphen after the code")
            for c in b { require(c >= 32 && c < 127, "reply byte \(c)") }
            let marker = Array("queued as ".utf8)
            if b.count > marker.count + 16, let at = find(marker, in: b) {
                let id = String(decoding: b[(at + marker.count)...].prefix(16), as: UTF8.self)
                require(spool.queue.messages.contains { Spool.queueID($0.id) == id }, "250 for \(id), which is not queued")
            }
            start = i + 2
            i += 2
            continue
        }
        i += 1
    }
}

func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
    guard hay.count >= needle.count else { return nil }
    for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return i }
    return nil
}

let fuzzAuthUsers = Array("alice:$6$rounds=1000$saltsaltsalt$eX3bxJXT3.ujpABOqZ7ph4r9D9Fn0.qoDqJgZU6cTq8xPfk2.Fmq2bf1GgjAlb6X1QXE7sMOtwZRTxjI1OZvT1\n".utf8)
