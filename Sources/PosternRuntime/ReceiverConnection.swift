import CLibc
import PosternCore

/// Everything a receiver connection needs from the daemon, shared by all slots.
public final class ReceiverContext {
    /// Replaced on reload; a connection keeps the settings it started with.
    public var settings: ReceiverSettings
    public var allowClients: [CIDR]
    public var timeoutNanoseconds: Int64
    public let spool: Spool
    public let log: Log

    public init(settings: ReceiverSettings, allowClients: [CIDR], timeoutSeconds: Int, spool: Spool, log: Log) {
        self.settings = settings
        self.allowClients = allowClients
        self.timeoutNanoseconds = Int64(timeoutSeconds) * 1_000_000_000
        self.spool = spool
        self.log = log
    }
}

/// One client connection: a socket, three fixed buffers from the pool, the pure
/// `SMTPReceiver` and the spool transaction it opens. The connection frames bytes
/// into lines (`LineFramer`) or message text (`DataDecoder`), feeds the machine
/// and performs its actions. Slots are allocated once at start and reused.
public final class ReceiverConnection {
    enum Mode { case commands, text }

    let context: ReceiverContext
    public let input = ByteBuffer(capacity: BufferSizes.receiverInput)
    let text = ByteBuffer(capacity: BufferSizes.receiverText)
    public let output = ByteBuffer(capacity: BufferSizes.receiverOutput)

    public private(set) var fd: Int32 = -1
    var machine: SMTPReceiver
    var framer = LineFramer()
    var decoder = DataDecoder()
    var mode = Mode.commands
    var peer = IPAddress.loopbackV4
    var connectionID = ""
    var envelope: Envelope? = nil
    var transaction: SpoolTransaction? = nil
    /// Text is being written to the spool (false after an abort or a failed write).
    var storing = false
    /// The commit record is written; waiting for the loop's fdatasync.
    public private(set) var awaitingCommit = false
    /// Close once the output is written.
    var closing = false
    var peerClosed = false
    public private(set) var deadline: Int64 = 0

    public init(context: ReceiverContext) {
        self.context = context
        machine = SMTPReceiver(settings: context.settings)
    }

    public var isActive: Bool { fd >= 0 }

    /// Poll events wanted: reading only while the previous replies are not piling
    /// up and no commit is pending (replies must stay in order, RFC 2920 §3.1).
    public var pollEvents: Int16 {
        var e: Int16 = 0
        if !closing && !awaitingCommit && !peerClosed && input.freeSpace > 0 && output.count < output.capacity / 2 {
            e |= Int16(POLLIN)
        }
        if !output.isEmpty { e |= Int16(POLLOUT) }
        return e
    }

    /// Takes over an accepted socket.
    public func attach(fd: Int32, peer: IPAddress, id: String, now: Int64) {
        self.fd = fd
        self.peer = peer.unmapped
        connectionID = id
        input.clear(); text.clear(); output.clear()
        machine = SMTPReceiver(settings: context.settings)
        framer = LineFramer()
        mode = .commands
        envelope = nil
        transaction = nil
        storing = false
        awaitingCommit = false
        closing = false
        peerClosed = false
        deadline = now + context.timeoutNanoseconds
        let allowed = context.allowClients.contains { $0.contains(self.peer) }
        context.log.debug("client connected", [("conn", id), ("client", self.peer.description), ("allowed", allowed ? "yes" : "no")])
        perform(machine.start(clientAllowed: allowed, clientText: self.peer.literal), now: now)
        flushOutput()
    }

    // MARK: events from the loop

    public func readable(now: Int64) {
        input.compact()
        switch Sys.read(fd, input.writable) {
        case .success(.done(let n)):
            input.didWrite(n)
            deadline = now + context.timeoutNanoseconds
            process(now: now)
        case .success(.eof):
            peerClosed = true
            process(now: now)
            disconnect(reason: "client closed the connection", now: now)
        case .success(.wouldBlock):
            break
        case .failure(let e):
            disconnect(reason: e.description, now: now)
        }
    }

    public func writable(now: Int64) {
        flushOutput()
    }

    public func timedOut(now: Int64) {
        if awaitingCommit { deadline = now + context.timeoutNanoseconds; return }
        context.log.info("client timed out", [("conn", connectionID), ("client", peer.description)])
        perform(machine.timedOut(), now: now)
        flushOutput()
        if isActive { close() }
    }

    /// The daemon is stopping: 421 and close (RFC 5321 §3.8).
    public func shutdown(now: Int64) {
        perform(machine.shutdown(), now: now)
        flushOutput()
        if isActive { close() }
    }

    /// The loop's fdatasync covered this connection's commit.
    public func committed(now: Int64) {
        guard awaitingCommit, let t = transaction, let env = envelope else { return }
        awaitingCommit = false
        context.log.event(.received, .info, "message received", [
            ("queue_id", t.queueID), ("from", env.from.description),
            ("rcpt", env.recipients.map { $0.description }.joined(separator: ",")),
            ("size", "\(t.size)"), ("client", peer.description), ("conn", connectionID),
        ])
        transaction = nil
        envelope = nil
        perform(machine.committed(queueID: t.queueID), now: now)
        process(now: now)
        flushOutput()
    }

    /// The loop's fdatasync failed: the message cannot be promised.
    public func commitFailed(_ e: Errno, now: Int64) {
        guard awaitingCommit else { return }
        awaitingCommit = false
        context.log.error("spool sync failed; message refused with 4xx", [("conn", connectionID), ("error", e.description)], id: MessageIDs.spoolError)
        transaction = nil
        envelope = nil
        perform(machine.commitFailed(), now: now)
        process(now: now)
        flushOutput()
    }

    public var transactionID: UInt64? { awaitingCommit ? transaction?.id : nil }

    // MARK: input

    func process(now: Int64) {
        while isActive && !closing && !awaitingCommit && output.count < output.capacity / 2 {
            if mode == .text {
                if !decodeText(now: now) { break }
                continue
            }
            let (frame, consumed) = framer.next(in: input.readable)
            switch frame {
            case .needMore:
                input.consume(consumed)
                return
            case .line(let range):
                let line = Array(input.readable[range])
                input.consume(consumed)
                machine.spoolAcceptsMail = context.spool.acceptsMail(now: now)
                let before = machine.state
                let actions = machine.receive(line: line[...])
                if machine.state != before {
                    context.log.debug("receiver \(before) -> \(machine.state)", [("conn", connectionID)])
                }
                perform(actions, now: now)
            case .tooLong:
                input.consume(consumed)
                perform(machine.receiveLineTooLong(), now: now)
            case .bareLineEnding:
                input.consume(consumed)
                perform(machine.receiveBareLineEnding(), now: now)
            }
        }
    }

    /// Decodes buffered input as message text. Returns false when more input is
    /// needed.
    func decodeText(now: Int64) -> Bool {
        if input.isEmpty { return false }
        text.compact()
        let step = decoder.decode(input.readable, into: text.writable)
        input.consume(step.consumed)
        text.didWrite(step.produced)
        if step.produced > 0 { perform(machine.receiveText(count: step.produced), now: now) }
        if step.ended || text.freeSpace < 64 || input.isEmpty { storeText(now: now) }
        if step.ended {
            mode = .commands
            perform(machine.receiveEndOfData(), now: now)
            return true
        }
        return !input.isEmpty
    }

    /// Appends the staged text to the spool as one text record.
    func storeText(now: Int64) {
        defer { text.clear() }
        guard storing, var t = transaction, !text.isEmpty else { return }
        if case .failure(let e) = context.spool.appendText(&t, text.readable, now: now) {
            storeFailed(e, now: now)
            return
        }
        transaction = t
    }

    func storeFailed(_ e: Errno, now: Int64) {
        context.log.error("spool write failed", [("conn", connectionID), ("error", e.description)], id: MessageIDs.spoolError)
        if let t = transaction { context.spool.abort(t, now: now) }
        storing = false
    }

    // MARK: actions

    func perform(_ actions: [SMTPReceiver.Action], now: Int64) {
        for action in actions {
            switch action {
            case .reply(let r):
                if !output.append(r.encoded()) {
                    // Cannot happen while `process` keeps half the buffer free; if it
                    // did, the client is not reading its replies.
                    closing = true
                }
            case .startData(let env):
                startData(env, now: now)
            case .abortMessage:
                if storing, let t = transaction { context.spool.abort(t, now: now) }
                storing = false
                transaction = nil
            case .commitMessage:
                commit(now: now)
            case .rejected(let command, let reply):
                context.log.event(.rejected, .notice, "command rejected", [
                    ("client", peer.description), ("command", command), ("reply", reply.description), ("conn", connectionID),
                ])
            case .close:
                closing = true
            }
        }
    }

    func startData(_ env: Envelope, now: Int64) {
        envelope = env
        mode = .text
        decoder = DataDecoder()
        text.clear()
        switch context.spool.begin(env, arrival: Clock.wall(), arrivalSynchronised: Clock.synchronised(), now: now) {
        case .success(let t):
            transaction = t
            storing = true
            // RFC 5321 §4.4: the trace header goes first.
            let header = TraceHeader.received(TraceHeader.Info(
                heloName: env.heloName, clientAddress: peer, hostname: context.settings.hostname,
                protocolName: env.esmtp ? "ESMTP" : "SMTP", queueID: t.queueID,
                recipient: env.recipients.count == 1 ? env.recipients[0] : nil, date: Clock.rfc5322Date()))
            text.append(header)
        case .failure(let e):
            storeFailed(e, now: now)
        }
    }

    func commit(now: Int64) {
        storeText(now: now)
        guard storing, let t = transaction else {
            perform(machine.commitFailed(), now: now)
            return
        }
        switch context.spool.commit(t, now: now) {
        case .success:
            storing = false
            awaitingCommit = true
        case .failure(let e):
            storing = false
            transaction = nil
            context.log.error("spool write failed", [("conn", connectionID), ("error", e.description)], id: MessageIDs.spoolError)
            perform(machine.commitFailed(), now: now)
        }
    }

    // MARK: output and closing

    func flushOutput() {
        guard isActive else { return }
        while !output.isEmpty {
            switch Sys.send(fd, output.readable) {
            case .success(.done(let n)): output.consume(n)
            case .success(.wouldBlock), .success(.eof): return
            case .failure:
                output.clear()
                closing = true
            }
        }
        if closing && !awaitingCommit { close() }
    }

    func disconnect(reason: String, now: Int64) {
        guard isActive else { return }
        perform(machine.disconnected(), now: now)
        context.log.debug("client disconnected", [("conn", connectionID), ("reason", reason)])
        if awaitingCommit {
            // The commit is written; the flush will make it durable and queue it
            // even though nobody is left to hear the 250 (at-least-once).
            closing = true
            peerClosed = true
            output.clear()
            return
        }
        close()
    }

    func close() {
        guard fd >= 0 else { return }
        if let t = transaction, storing { context.spool.abort(t, now: Clock.monotonic()) }
        transaction = nil
        storing = false
        Sys.close(fd)
        fd = -1
    }

    /// After a flush, a connection whose client left during the commit closes.
    public func closeIfAbandoned() {
        if isActive && peerClosed && !awaitingCommit { close() }
    }
}
