import CLibc
import PosternCore

/// Forwards the queue to the upstream: owns the one sender connection, the pure
/// `SMTPSender`, the `MessageReader` and the retry schedule. Messages go in
/// order of arrival over one reused connection; recipient outcomes are written
/// to the spool as they arrive.
public final class Delivery {
    enum Phase: Equatable { case idle, connecting, connected }

    struct Current {
        var id: UInt64
        /// Sender index → recipient index in the spooled envelope.
        var recipientIndex: [Int]
        var recipients: [Mailbox]
        var from: Mailbox
        var deferred = false
        var deferReply: Reply? = nil
    }

    /// These four may change on reload; a connection in use keeps going with the
    /// upstream it was opened to.
    public var upstream: UpstreamConfig
    public var heloName: String
    public var policy: RetryPolicy
    public var expiry: ExpiryPolicy
    /// While the clock is unsynchronised, expired deadlines are looked at again
    /// only this often (monotonic nanoseconds of the next look).
    var expiryRecheckAt: Int64 = 0
    let spool: Spool
    let log: Log
    let kernel: any Kernel

    let input = ByteBuffer(capacity: BufferSizes.senderInput)
    let output = ByteBuffer(capacity: BufferSizes.senderOutput)
    let reader = MessageReader()
    var framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
    var replies = ReplyParser()
    var encoder = DataEncoder()
    var machine: SMTPSender

    public private(set) var fd: Int32 = -1
    var phase = Phase.idle
    var streaming = false
    var current: Current? = nil
    var addresses: [cl_ip_endpoint] = []
    var addressIndex = 0
    var deadline: Int64 = 0
    /// When an idle connection is closed with QUIT (connection reuse window).
    var idleUntil: Int64 = 0
    var upstreamFailures = 0
    var upstreamRetryAt: Int64 = 0
    /// Why the upstream was last unreachable, for `postern status`.
    public private(set) var lastError: String? = nil
    public private(set) var lastDeliveryWall: Int64? = nil
    /// Distinct upstream replies that deferred or failed messages, so each queued
    /// message keeps its last reply as one byte (`QueuedMessage.lastReply`).
    var replyTable: [String] = [""]
    var replyIndex: [String: UInt8] = [:]

    /// How long an idle upstream connection is kept for more mail (Postfix's
    /// smtp_connection_cache_time_limit is 2s).
    static let idleHoldNanoseconds: Int64 = 2_000_000_000
    static let connectTimeoutNanoseconds: Int64 = 30_000_000_000

    public init(upstream: UpstreamConfig, heloName: String, policy: RetryPolicy, expiry: ExpiryPolicy,
                spool: Spool, log: Log, kernel: any Kernel = PosixKernel()) {
        self.kernel = kernel
        self.upstream = upstream
        self.heloName = heloName
        self.policy = policy
        self.expiry = expiry
        self.spool = spool
        self.log = log
        machine = SMTPSender(heloName: heloName)
    }

    public var pollEvents: Int16 {
        guard fd >= 0 else { return 0 }
        if phase == .connecting { return Int16(POLLOUT) }
        var e = Int16(POLLIN)
        if !output.isEmpty { e |= Int16(POLLOUT) }
        return e
    }

    /// The next moment this needs the loop's attention, if any.
    public func nextWakeup(now: Int64) -> Int64? {
        var t: Int64? = nil
        func earliest(_ v: Int64) { if t == nil || v < t! { t = v } }
        if fd >= 0 {
            earliest(deadline)
            if machine.isReady && current == nil { earliest(idleUntil) }
            if phase == .connected && machine.isReady && current == nil && spool.queue.nextDue(now: now) != nil {
                earliest(now)
            }
        } else if !spool.queue.isEmpty, let due = spool.queue.earliestAttempt() {
            earliest(max(due, upstreamRetryAt))
        }
        if let deadline = spool.queue.earliestExpiry(), deadline < Int64(UInt32.max) {
            earliest(max(deadline * 1_000_000_000, expiryRecheckAt))
        }
        return t
    }

    /// Called once per loop iteration: connects when mail is due, starts the next
    /// message on a ready connection, closes an idle one, and handles timeouts.
    public func tick(now: Int64, stopping: Bool) {
        if fd >= 0 && now >= deadline {
            if phase == .connecting {
                connectFailed("connect timed out", now: now)
            } else {
                perform(machine.timedOut(), now: now)
            }
        }
        if stopping { return }
        expireDue(now: now)
        if fd < 0 {
            guard now >= upstreamRetryAt, spool.queue.nextDue(now: now) != nil else { return }
            connect(now: now)
            return
        }
        if phase == .connected && machine.isReady && current == nil {
            if let m = spool.queue.nextDue(now: now) {
                startMessage(m, now: now)
            } else if now >= idleUntil {
                perform(machine.finish(), now: now)
                flushOutput(now: now)
            }
        }
    }

    /// The daemon is stopping. Returns true while a final reply is still awaited
    /// (worth a short grace period: closing now could make a duplicate).
    public func stop(now: Int64) -> Bool {
        if fd >= 0 && machine.awaitingFinalReply { return true }
        if fd >= 0 {
            if machine.isReady {
                perform(machine.finish(), now: now)
                flushOutput(now: now)
            }
            closeSocket()
        }
        releaseCurrent(now: now)
        return false
    }

    // MARK: expiry

    /// Gives up the messages past `[spool] max_age`: each pending recipient is
    /// finished as failed and an `expired` event is logged at error level. Never
    /// while the clock is unsynchronised (`ExpiryPolicy`). A delivery status
    /// notification (RFC 3464) to the sender comes with `[notify]`.
    func expireDue(now: Int64) {
        guard now >= expiryRecheckAt, let first = spool.queue.earliestExpiry(),
              first <= now / 1_000_000_000 else { return }
        let clock = ClockReading(wall: Clock.wall(), monotonic: now, synchronised: Clock.synchronised())
        guard expiry.isExpired(deadline: first, at: clock) else {
            // Due, but the clock cannot be trusted: look again in a minute.
            expiryRecheckAt = now + 60_000_000_000
            return
        }
        for id in spool.queue.expired(atMonotonicSecond: clock.monotonicSeconds) {
            guard let m = spool.queue.message(id) else { continue }
            let age = QueueReport.age(clock.wall - m.arrival)
            log.event(.expired, .error, "message expired after max_age; giving it up", [
                ("queue_id", Spool.queueID(id)), ("size", "\(m.size)"), ("attempt", "\(m.attempts)"),
                ("age", age), ("pending", "\(m.pendingRecipients.count)"),
                ("reply", lastReply(of: m) ?? lastError ?? "none"),
            ])
            for i in m.pendingRecipients { spool.recordOutcome(id, recipient: i, .failed, now: now) }
        }
    }

    // MARK: reporting (the control socket)

    /// `postern flush`: forget the backoff and try every message now. Returns
    /// the number of queued messages.
    public func retryNow() -> Int {
        upstreamRetryAt = 0
        spool.queue.makeAllDue()
        return spool.queue.count
    }

    func intern(_ reply: String) -> UInt8 {
        if let i = replyIndex[reply] { return i }
        if replyTable.count >= 256 {
            // Rare: many distinct replies. Start a new table rather than grow.
            replyTable = [""]
            replyIndex = [:]
            spool.queue.clearLastReplies()
        }
        replyTable.append(reply)
        let i = UInt8(replyTable.count - 1)
        replyIndex[reply] = i
        return i
    }

    public func lastReply(of m: QueuedMessage) -> String? {
        m.lastReply == 0 || Int(m.lastReply) >= replyTable.count ? nil : replyTable[Int(m.lastReply)]
    }

    /// Seconds until `m` is tried again (nil: being sent now).
    public func secondsUntilTry(_ m: QueuedMessage, now: Int64) -> Int? {
        if m.inFlight { return nil }
        var at = m.nextAttempt
        if fd < 0 { at = max(at, upstreamRetryAt) }
        return Int(clamping: max(0, at - now) / 1_000_000_000)
    }

    /// One line on the upstream for `postern status`.
    public func upstreamState(now: Int64) -> String {
        if fd >= 0 {
            switch phase {
            case .connecting: return "connecting to \(upstream.name)"
            default: return "connected to \(upstream.name)" + (current == nil ? ", idle" : ", sending")
            }
        }
        if let e = lastError {
            let wait = max(0, upstreamRetryAt - now) / 1_000_000_000
            return "\(upstream.name) unreachable (\(e)); \(upstreamFailures) failed attempt\(upstreamFailures == 1 ? "" : "s"), next in \(wait)s"
        }
        return "\(upstream.name), not connected"
    }

    // MARK: connecting

    func connect(now: Int64) {
        if addresses.isEmpty || addressIndex >= addresses.count {
            addresses = resolve()
            addressIndex = 0
            if addresses.isEmpty {
                connectFailed("cannot resolve \(upstream.host)", now: now)
                return
            }
        }
        switch kernel.connect(addresses[addressIndex]) {
        case .failure(let e):
            connectFailed(e.text, now: now)
            return
        case .success(let (s, inProgress)):
            fd = s
            phase = inProgress ? .connecting : .connected
        }
        input.clear(); output.clear()
        framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
        replies = ReplyParser()
        machine = SMTPSender(heloName: heloName)
        streaming = false
        deadline = now + Self.connectTimeoutNanoseconds
        if phase == .connected { deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000 }
        log.debug("connecting to upstream", [("upstream", upstream.name)])
    }

    func resolve() -> [cl_ip_endpoint] {
        if let ip = IPAddress(upstream.host) {
            var ep = cl_ip_endpoint()
            ep.family = ip.isV4 ? 4 : 6
            ep.port = Int32(upstream.port)
            withUnsafeMutableBytes(of: &ep.bytes) { b in for (i, v) in ip.bytes.enumerated() { b[i] = v } }
            return [ep]
        }
        // getaddrinfo blocks the loop; acceptable for a smarthost name looked up
        // once per connection, and a known limitation until an async resolver lands.
        var out = [cl_ip_endpoint](repeating: cl_ip_endpoint(), count: 8)
        let n = out.withUnsafeMutableBufferPointer { cl_resolve(upstream.host, Int32(upstream.port), $0.baseAddress, 8) }
        if n <= 0 {
            log.warning("cannot resolve upstream host", [("upstream", upstream.name),
                                                        ("error", String(cString: cl_resolve_error(n)))])
            return []
        }
        return Array(out[0..<Int(n)])
    }

    /// Tries the upstream's next address, or backs off when none is left.
    func connectFailed(_ reason: String, now: Int64) {
        closeSocket()
        addressIndex += 1
        if addressIndex < addresses.count {
            connect(now: now)
            return
        }
        addresses = []
        backoff(reason, now: now)
    }

    /// The upstream could not be reached or dropped us: wait before the next try.
    func backoff(_ reason: String, now: Int64) {
        upstreamFailures += 1
        lastError = reason
        let delay = policy.delayNanoseconds(afterAttempt: upstreamFailures, random: Clock.random())
        upstreamRetryAt = now + delay
        var due = 0
        for m in spool.queue.messages where m.nextAttempt <= now { due += 1 }
        log.event(.deferred, .warning, "upstream unavailable; will retry", [
            ("upstream", upstream.name), ("reply", reason), ("attempt", "\(upstreamFailures)"),
            ("queued", "\(spool.queue.count)"), ("due", "\(due)"), ("retry_in", "\(delay / 1_000_000_000)s"),
        ])
    }

    // MARK: events from the loop

    public func writable(now: Int64) {
        if phase == .connecting {
            let err = kernel.connectResult(fd)
            if err != 0 {
                connectFailed(Errno(err, "connect").text, now: now)
                return
            }
            phase = .connected
            addresses = []
            deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
            log.debug("connected to upstream", [("upstream", upstream.name)])
            return
        }
        flushOutput(now: now)
    }

    public func readable(now: Int64) {
        input.compact()
        switch kernel.read(fd, input.writable) {
        case .success(.done(let n)):
            input.didWrite(n)
        case .success(.eof):
            perform(machine.connectionLost("upstream closed the connection"), now: now)
            return
        case .success(.wouldBlock):
            return
        case .failure(let e):
            perform(machine.connectionLost(e.text), now: now)
            return
        }
        while fd >= 0 {
            let (frame, consumed) = framer.next(in: input.readable)
            switch frame {
            case .needMore:
                input.consume(consumed)
                return
            case .tooLong, .bareLineEnding:
                input.consume(consumed)
                perform(machine.connectionLost("reply line too long"), now: now)
                return
            case .line(let range):
                let line = Array(input.readable[range])
                input.consume(consumed)
                switch replies.feed(line[...]) {
                case .failure(.malformed(let text)):
                    perform(machine.connectionLost("malformed reply: \(text)"), now: now)
                    return
                case .success(nil):
                    continue
                case .success(let reply?):
                    let before = machine.stateName
                    let actions = machine.receive(reply)
                    log.debug("sender \(before) -> \(machine.stateName)", [("reply", reply.description)])
                    deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
                    perform(actions, now: now)
                }
            }
        }
    }

    // MARK: messages

    func startMessage(_ m: QueuedMessage, now: Int64) {
        let envelope: SpoolCodec.EnvelopeRecord
        switch reader.open(m, spool: spool) {
        case .success(let e): envelope = e
        case .failure(let f):
            unreadable(m.id, f, now: now)
            return
        }
        guard let from = Mailbox.parse(envelope.from[...], allowNull: true) else {
            unreadable(m.id, .corrupt("bad reverse-path"), now: now)
            return
        }
        var indices: [Int] = []
        var rcpts: [Mailbox] = []
        for i in m.pendingRecipients where i < envelope.recipients.count {
            guard let r = Mailbox.parse(envelope.recipients[i][...], allowNull: false) else { continue }
            indices.append(i)
            rcpts.append(r)
        }
        let sentFrom = upstream.envelopeFrom ?? from
        current = Current(id: m.id, recipientIndex: indices, recipients: rcpts, from: from)
        spool.queue.setInFlight(m.id, true)
        spool.queue.countAttempt(m.id)
        encoder = DataEncoder()
        perform(machine.start(message: OutboundMessage(from: sentFrom, recipients: rcpts, size: m.size,
                                                       eightBit: envelope.eightBit)), now: now)
    }

    /// The spool cannot give back this message.
    func unreadable(_ id: UInt64, _ f: MessageReader.Failure, now: Int64) {
        switch f {
        case .io(let e):
            log.error("cannot read a queued message; will retry", [("queue_id", Spool.queueID(id)), ("error", e.description)])
            spool.queue.deferMessage(id, now: now, delay: policy.delayNanoseconds(afterAttempt: 1, random: Clock.random()))
        case .corrupt(let why):
            // It can never be sent: finish it as failed, loudly.
            log.error("queued message is corrupt in the spool; giving it up", [("queue_id", Spool.queueID(id)), ("error", why)])
            if let m = spool.queue.message(id) {
                for i in m.pendingRecipients { spool.recordOutcome(id, recipient: i, .failed, now: now) }
            }
        }
    }

    func perform(_ actions: [SMTPSender.Action], now: Int64) {
        for action in actions {
            switch action {
            case .send(let bytes):
                if !output.append(bytes) {
                    perform(machine.connectionLost("command too long for the output buffer"), now: now)
                    return
                }
            case .sendText:
                streaming = true
            case .ready:
                upstreamFailures = 0
                lastError = nil
                idleUntil = now + Self.idleHoldNanoseconds
            case .recipient(let index, let outcome, let reply):
                recipientResult(index, outcome, reply, now: now)
            case .messageDone:
                messageDone(now: now)
            case .close(let failure):
                closeSocket()
                if let f = failure {
                    releaseCurrent(now: now)
                    backoff(f.description, now: now)
                }
            }
        }
        if fd >= 0 {
            if streaming { pumpText(now: now) }
            flushOutput(now: now)
        }
    }

    func recipientResult(_ index: Int, _ outcome: RecipientOutcome, _ reply: Reply, now: Int64) {
        guard var c = current, index < c.recipientIndex.count else { return }
        let spooledIndex = c.recipientIndex[index]
        let queueID = Spool.queueID(c.id)
        let attempt = spool.queue.message(c.id)?.attempts ?? 0
        let fields: [(String, String)] = [
            ("queue_id", queueID), ("from", c.from.description), ("rcpt", c.recipients[index].description),
            ("upstream", upstream.name), ("reply", reply.description), ("attempt", "\(attempt)"),
        ]
        switch outcome {
        case .delivered:
            lastDeliveryWall = Clock.wall()
            log.event(.delivered, .info, "delivered", fields)
            spool.recordOutcome(c.id, recipient: spooledIndex, .delivered, now: now)
        case .failed:
            log.event(.failed, .error, "recipient refused by the upstream; giving up", fields)
            spool.recordOutcome(c.id, recipient: spooledIndex, .failed, now: now)
        case .deferred:
            log.event(.deferred, .warning, "deferred; will retry", fields)
            spool.queue.setLastReply(c.id, intern(reply.description))
            c.deferred = true
            current = c
        }
    }

    func messageDone(now: Int64) {
        guard let c = current else { return }
        current = nil
        streaming = false
        if spool.queue.message(c.id) != nil {
            let attempts = spool.queue.message(c.id)?.attempts ?? 1
            spool.queue.deferMessage(c.id, now: now, delay: policy.delayNanoseconds(afterAttempt: attempts, random: Clock.random()))
        }
    }

    /// A connection failure left the current message without a final answer.
    func releaseCurrent(now: Int64) {
        guard let c = current else { return }
        current = nil
        streaming = false
        spool.queue.setInFlight(c.id, false)
    }

    /// Fills the output buffer with dot-stuffed text; appends the end-of-data
    /// marker to the same buffer as the last text, so it leaves in the same write.
    func pumpText(now: Int64) {
        while streaming {
            if output.freeSpace < 64 { output.compact() }
            if output.freeSpace < 64 { return }
            if reader.pendingText.isEmpty {
                switch reader.next(spool: spool) {
                case .success(.text):
                    continue
                case .success(.end):
                    output.append(encoder.terminator())
                    streaming = false
                    _ = machine.textSent()
                    return
                case .failure(let f):
                    let id = current?.id
                    streaming = false
                    // Abandon the transaction without the final dot so the upstream
                    // discards the partial text.
                    perform(machine.connectionLost("spool read failed"), now: now)
                    if let id = id { unreadable(id, f, now: now) }
                    return
                }
            }
            // Keep room for the terminator (at most 5 bytes).
            let room = UnsafeMutableRawBufferPointer(rebasing: output.writable[0..<(output.freeSpace - 5)])
            let step = encoder.encode(reader.pendingText, into: room)
            reader.advance(step.consumed)
            output.didWrite(step.produced)
        }
    }

    func flushOutput(now: Int64) {
        while fd >= 0 {
            if output.isEmpty {
                if streaming { pumpText(now: now); if output.isEmpty { return } } else { return }
            }
            switch kernel.send(fd, output.readable) {
            case .success(.done(let n)):
                output.consume(n)
                deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
            case .success(.wouldBlock), .success(.eof):
                return
            case .failure(let e):
                perform(machine.connectionLost(e.text), now: now)
                return
            }
        }
    }

    func closeSocket() {
        if fd >= 0 {
            kernel.close(fd)
            fd = -1
        }
        phase = .idle
        streaming = false
        input.clear()
        output.clear()
    }
}
