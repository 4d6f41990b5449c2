import CLibc
import PosternCore

/// Forwards the queue to the upstreams: owns the one sender connection (its
/// `UpstreamTransport`, plain or TLS), the pure `SMTPSender`, the
/// `MessageReader` and the retry schedule. Messages go in order of arrival over
/// one reused connection; recipient outcomes are written to the spool as they
/// arrive.
///
/// Upstreams are tried in order (DESIGN.md "Delivery rules", issue 8 item 4): a
/// connection that fails — no address, no TCP, TLS or AUTH refused, a 4xx at the
/// greeting, or a drop — moves on to the next one at once; when the last one has
/// failed too, the retry schedule applies, and the next attempt starts again
/// with the primary.
public final class Delivery {
    struct Current {
        var id: UInt64
        /// Sender index → recipient index in the spooled envelope.
        var recipientIndex: [Int]
        var recipients: [Mailbox]
        var from: Mailbox
        var deferred = false
        var deferReply: Reply? = nil
        /// Recipients refused for good in this transaction: recorded, with one
        /// failure notice for all of them, when the transaction ends.
        var failed: [FailureNotices.Failed] = []
    }

    /// What `postern status` says about one upstream.
    public struct UpstreamStatus: Equatable {
        /// Why the last attempt failed; nil after a success or before any try.
        public var lastError: String? = nil
        /// Wall-clock second of the last message this upstream took.
        public var lastDeliveryWall: Int64? = nil
    }

    /// These may change on reload; a connection in use keeps going with the
    /// upstream it was opened to.
    public var upstreams: [UpstreamConfig] {
        didSet {
            // A lookup under way was for the old settings.
            if let r = resolver { _ = r.cancel(now: Clock.monotonic()) }
            resolver = nil
            addresses = []
            if active >= upstreams.count { active = 0 }
            nameOfActive = nil
            if statuses.count != upstreams.count {
                statuses = [UpstreamStatus](repeating: UpstreamStatus(), count: upstreams.count)
            }
        }
    }
    public internal(set) var statuses: [UpstreamStatus]
    /// The upstream being tried or used now (an index into `upstreams`).
    public internal(set) var active = 0
    public var upstream: UpstreamConfig { upstreams[active] }
    /// `upstream.name`, made once per upstream tried rather than in every
    /// line that names it.
    var upstreamName: String {
        if let n = nameOfActive, n.index == active { return n.name }
        let name = upstream.name
        nameOfActive = (active, name)
        return name
    }
    var nameOfActive: (index: Int, name: String)? = nil
    public var heloName: String
    /// `[aliases]`, for `[upstream] rewrite_to` (set by the daemon, and on reload).
    public var aliases = AliasMap.empty
    public var policy: RetryPolicy
    public var expiry: ExpiryPolicy
    /// While the clock is unsynchronised, expired deadlines are looked at again
    /// only this often (monotonic nanoseconds of the next look).
    var expiryRecheckAt: Int64 = 0
    let spool: Spool
    let log: Log
    let link: UpstreamTransport
    /// Failure notices (RFC 3464); nil in tests that do not look at them.
    var notices: FailureNotices?

    let input = ByteBuffer(capacity: BufferSizes.senderInput)
    let output = ByteBuffer(capacity: BufferSizes.senderOutput)
    let text = OutboundText()
    var framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
    var replies = ReplyParser()
    var machine: SMTPSender

    public var fd: Int32 { link.fd }
    var streaming = false
    /// The output holds an AUTH response: zero the buffer once it is sent.
    var outputHoldsSecret = false
    var current: Current? = nil
    /// The message whose envelope went out behind `current`'s end of data
    /// (`SMTPSender.startBehindDot`); it becomes `current` at that one's
    /// `.messageDone`.
    var pipelined: Current? = nil
    /// The daemon is stopping: no message is started behind an end of data.
    var stopRequested = false
    var addresses: [cl_ip_endpoint] = []
    var addressIndex = 0
    /// The name lookup of the active upstream, in a child process (issue 8 item
    /// 5: the loop never waits on DNS).
    var resolver: AsyncResolver? = nil
    /// `password_command` running for the connection waiting in AUTH.
    var secretCommand: ChildProcess? = nil
    var deadline: Int64 = 0
    /// When an idle connection is closed with QUIT (connection reuse window).
    var idleUntil: Int64 = 0
    var upstreamFailures = 0
    var upstreamRetryAt: Int64 = 0
    /// A certificate was "not yet valid" while the clock was unsynchronised: try
    /// again as soon as the clock is set, not when the backoff ends.
    var waitingForClock = false
    /// Why the upstreams were last unreachable, for `postern status`.
    public internal(set) var lastError: String? = nil
    public private(set) var lastDeliveryWall: Int64? = nil
    /// Distinct upstream replies that deferred or failed messages, so each queued
    /// message keeps its last reply as one byte (`QueuedMessage.lastReply`).
    var replyTable: [String] = [""]
    var replyIndex: [String: UInt8] = [:]

    /// How long an idle upstream connection is kept for more mail (Postfix's
    /// smtp_connection_cache_time_limit is 2s).
    static let idleHoldNanoseconds: Int64 = 2_000_000_000
    static let connectTimeoutNanoseconds: Int64 = 30_000_000_000
    /// A TLS handshake that takes longer is given up (Postfix's
    /// smtp_starttls_timeout is 300s; a smarthost answers in well under a second).
    static let handshakeTimeoutNanoseconds: Int64 = 60_000_000_000
    /// How often the clock is looked at while waiting for it to be set.
    static let clockPollNanoseconds: Int64 = 2_000_000_000
    /// A name lookup that takes longer is given up (glibc's own default is 5s
    /// per server and try; a LAN without its DNS server would stall far longer).
    static let resolveTimeoutNanoseconds: Int64 = 10_000_000_000
    /// `password_command` must print the secret within this (a token helper
    /// that refreshes over the network takes a second or two).
    static let secretCommandTimeoutNanoseconds: Int64 = 15_000_000_000
    /// How often a child that ignored its SIGKILL for a moment is reaped again.
    static let reapPollNanoseconds: Int64 = 100_000_000

    public init(upstreams: [UpstreamConfig], heloName: String, policy: RetryPolicy, expiry: ExpiryPolicy,
                spool: Spool, log: Log, kernel: any Kernel = PosixKernel(), postmaster: Mailbox? = nil) {
        precondition(!upstreams.isEmpty, "the configuration guarantees one [upstream]")
        notices = FailureNotices(postmaster: postmaster, hostname: heloName, spool: spool, log: log)
        link = UpstreamTransport(kernel: kernel)
        self.upstreams = upstreams
        statuses = [UpstreamStatus](repeating: UpstreamStatus(), count: upstreams.count)
        self.heloName = heloName
        self.policy = policy
        self.expiry = expiry
        self.spool = spool
        self.log = log
        machine = SMTPSender(heloName: heloName)
        // The sender's reader keeps its segment open, idle or not, until the
        // spool deletes it. (The closure holds the reader, not the delivery.)
        let reader = text.reader
        spool.segmentDeleted = { reader.releaseFile(ifHolding: $0) }
    }

    public convenience init(upstream: UpstreamConfig, heloName: String, policy: RetryPolicy, expiry: ExpiryPolicy,
                            spool: Spool, log: Log, kernel: any Kernel = PosixKernel()) {
        self.init(upstreams: [upstream], heloName: heloName, policy: policy, expiry: expiry, spool: spool, log: log,
                  kernel: kernel)
    }

    public var pollEvents: Int16 { link.pollEvents(outputPending: !output.isEmpty) }

    /// The next moment this needs the loop's attention, if any.
    public func nextWakeup(now: Int64) -> Int64? {
        var t: Int64? = nil
        func earliest(_ v: Int64) { if t == nil || v < t! { t = v } }
        if fd >= 0 {
            earliest(deadline)
            if machine.isReady && current == nil { earliest(idleUntil) }
            if link.phase == .open && machine.isReady && current == nil && spool.queue.hasDue(now: now) {
                earliest(now)
            }
        } else if resolver == nil, !spool.queue.isEmpty, let due = spool.queue.earliestAttempt() {
            earliest(max(due, upstreamRetryAt))
            if waitingForClock { earliest(now + Self.clockPollNanoseconds) }
        }
        if let t = resolver?.nextDeadline() { earliest(t) }
        if let t = secretCommand?.nextDeadline() { earliest(t) }
        if ChildReaper.adoptedCount > 0 { earliest(now + Self.reapPollNanoseconds) }
        if let deadline = spool.queue.earliestExpiry(), deadline < Int64(UInt32.max) {
            earliest(max(deadline * 1_000_000_000, expiryRecheckAt))
        }
        return t
    }

    /// Called once per loop iteration: connects when mail is due, starts the next
    /// message on a ready connection, closes an idle one, and handles timeouts.
    public func tick(now: Int64, stopping: Bool) {
        stopRequested = stopping
        if fd >= 0 && now >= deadline {
            switch link.phase {
            case .connecting: connectFailed("connect timed out", now: now)
            case .handshaking: upstreamFailed(.tls("the TLS handshake timed out"), now: now)
            default: perform(machine.timedOut(), now: now)
            }
        }
        helperTick(now: now)
        if stopping { return }
        expireDue(now: now)
        if waitingForClock && fd < 0 && Clock.synchronised() {
            waitingForClock = false
            upstreamRetryAt = 0
            log.notice("the system clock is synchronised now; trying the upstream again", [("upstream", upstream.name)])
        }
        if fd < 0 {
            guard resolver == nil, now >= upstreamRetryAt, spool.queue.hasDue(now: now) else { return }
            connect(now: now)
            return
        }
        if link.phase == .open && machine.isReady && current == nil {
            if let m = spool.queue.nextDue(now: now) {
                startMessage(m, now: now)
            } else {
                // Nothing to send. The segment read last stays open for the
                // next message (most likely in the same, active segment); the
                // spool has it closed when it deletes it.
                if now >= idleUntil {
                    perform(machine.finish(), now: now)
                    flushOutput(now: now)
                }
            }
        }
    }

    /// The daemon is stopping. Returns true while a final reply is still awaited
    /// (worth a short grace period: closing now could make a duplicate).
    public func stop(now: Int64) -> Bool {
        stopRequested = true
        cancelHelpers(now: now)
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
            // Expiry is decided on the monotonic clock; the wall-clock age can
            // read a second short of max_age (arrival is kept in whole seconds).
            // It was queued at least max_age, so that is the least we report.
            let queued = max(clock.wall - m.arrival, expiry.maxAge)
            let age = QueueReport.age(queued)
            log.event(.expired, .error, "message expired after max_age; giving it up", [
                ("queue_id", Spool.queueID(id)), ("size", "\(m.size)"), ("attempt", "\(m.attempts)"),
                ("age", age), ("pending", "\(m.pendingRecipients.count)"),
                ("reply", lastReply(of: m) ?? lastError ?? "none"),
            ])
            let reply = lastReply(of: m)
            let failed = m.pendingRecipients.map { FailureNotices.Failed(index: $0, status: "4.4.7", reply: reply, upstream: nil) }
            notices?.send(about: id, failed: failed,
                          reason: .expired(queuedSeconds: queued), now: now)
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

    /// One line on the upstreams for `postern status` and systemd's STATUS=.
    public func upstreamState(now: Int64) -> String {
        if resolver != nil { return "looking up \(upstream.host)" }
        if fd >= 0 {
            switch link.phase {
            case .connecting: return "connecting to \(upstream.name)"
            case .handshaking: return "TLS handshake with \(upstream.name)"
            default:
                return "connected to \(upstream.name)" + (link.isTLS ? " (TLS)" : "") + (current == nil ? ", idle" : ", sending")
            }
        }
        if let e = lastError {
            let wait = max(0, upstreamRetryAt - now) / 1_000_000_000
            let who = upstreams.count == 1 ? "\(upstream.name) unreachable" : "all \(upstreams.count) upstreams unreachable"
            return "\(who) (\(e)); \(upstreamFailures) failed attempt\(upstreamFailures == 1 ? "" : "s"), next in \(wait)s"
        }
        return "\(upstream.name), not connected"
    }

    /// One line per upstream for `postern status`: its role, and its last error
    /// or last delivery.
    public func upstreamLines(now: Int64) -> [String] {
        let wall = Clock.wall()
        var lines: [String] = []
        for (i, u) in upstreams.enumerated() {
            let role = i == 0 ? "primary" : "fallback \(i)"
            var s = "\(u.name) (\(role), tls \(u.tls.name)\(u.auth == .none ? "" : ", auth \(u.auth.name)")): "
            let status = i < statuses.count ? statuses[i] : UpstreamStatus()
            if fd >= 0 && i == active {
                s += link.phase == .open ? "connected" : "connecting"
            } else if let e = status.lastError {
                s += "last attempt failed: \(e)"
            } else if let t = status.lastDeliveryWall {
                s += "ok, last delivery \(QueueReport.age(wall - t)) ago"
            } else {
                s += "not tried since start"
            }
            lines.append(s)
        }
        return lines
    }

    // MARK: events from the loop

    public func writable(now: Int64) {
        switch link.phase {
        case .connecting:
            let err = link.finishConnect()
            if err != 0 {
                connectFailed(Errno(err, "connect").text, now: now)
                return
            }
            connected(now: now)
        case .handshaking:
            continueHandshake(now: now)
        case .open:
            flushOutput(now: now)
            // A TLS read that needed to write first (a key update) goes on now.
            if fd >= 0 && link.isTLS { readable(now: now) }
        case .closed:
            return
        }
    }

    public func readable(now: Int64) {
        switch link.phase {
        case .handshaking:
            continueHandshake(now: now)
            return
        case .connecting, .closed:
            // Events of a socket that failed to connect can reach its successor
            // in the same iteration; nothing is read before the connect is done,
            // or the greeting would be consumed and never handled.
            return
        case .open:
            break
        }
        // Read until the transport has nothing more: TLS may hold decrypted
        // bytes that poll(2) cannot see. A plain socket that filled less than
        // the room offered has nothing more now, and poll(2) reports what comes
        // later: reading again would only return EAGAIN (two wasted reads per
        // message, issue 11).
        while fd >= 0 {
            input.compact()
            if input.freeSpace == 0 {
                perform(machine.connectionLost("reply line too long"), now: now)
                return
            }
            let room = input.freeSpace
            switch link.read(input.writable) {
            case .success(.done(let n)):
                input.didWrite(n)
                if n < room && !link.isTLS {
                    _ = processReplies(now: now)
                    return
                }
            case .success(.eof):
                perform(machine.connectionLost("upstream closed the connection"), now: now)
                return
            case .success(.wouldBlock):
                return
            case .failure(let p):
                perform(machine.connectionLost(p.text), now: now)
                return
            }
            if !processReplies(now: now) { return }
        }
    }

    /// Frames and handles every complete reply in the input. False when the
    /// connection ended or TLS is starting (the rest of the input is gone).
    func processReplies(now: Int64) -> Bool {
        while fd >= 0 && link.phase == .open {
            let (frame, consumed) = framer.next(in: input.readable)
            switch frame {
            case .needMore:
                input.consume(consumed)
                return true
            case .tooLong, .bareLineEnding:
                input.consume(consumed)
                perform(machine.connectionLost("reply line too long"), now: now)
                return false
            case .line(let range):
                let line = Array(input.readable[range])
                input.consume(consumed)
                switch replies.feed(line[...]) {
                case .failure(.malformed(let text)):
                    perform(machine.connectionLost("malformed reply: \(text)"), now: now)
                    return false
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
        return false
    }

    // MARK: messages

    /// Starts `m` on the ready connection, or with `behindDot` behind the end
    /// of data just queued for `current` (when the machine can: otherwise
    /// nothing happens, and `tick` starts the next message once the connection
    /// is ready).
    func startMessage(_ m: QueuedMessage, now: Int64, behindDot: Bool = false) {
        let envelope: SpoolCodec.EnvelopeRecord
        switch text.reader.open(m, spool: spool) {
        case .success(let e): envelope = e
        case .failure(let f):
            unreadable(m.id, f, now: now)
            return
        }
        // A message received with SMTPUTF8 may hold UTF-8 addresses (RFC 6531 §3.3).
        let utf8 = envelope.smtputf8
        guard let from = Mailbox.parse(envelope.from[...], allowNull: true, utf8: utf8) else {
            unreadable(m.id, .corrupt("bad reverse-path"), now: now)
            return
        }
        var indices: [Int] = []
        var rcpts: [Mailbox] = []
        var parameters: [RecipientParameters] = []
        for i in m.pendingRecipients where i < envelope.recipients.count {
            guard let r = Mailbox.parse(envelope.recipients[i][...], allowNull: false, utf8: utf8) else { continue }
            indices.append(i)
            rcpts.append(r)
            if i < envelope.recipientParameters.count { parameters.append(envelope.recipientParameters[i]) }
        }
        let sentFrom = upstream.envelopeFrom ?? from
        let started = Current(id: m.id, recipientIndex: indices, recipients: rcpts, from: from)
        // The text of `current` is all in the output already (behind a dot):
        // the encoder and rewriters are free for this one.
        text.begin(rewriteFrom: upstream.rewriteFrom ? upstream.envelopeFrom : nil, qualifyDomain: heloName,
                   rewriteTo: upstream.rewriteTo ? aliases : nil)
        var outbound = OutboundMessage(from: sentFrom, recipients: rcpts, size: m.size + text.sizeAllowance,
                                       eightBit: envelope.eightBit)
        // SMTPUTF8 and DSN parameters as received (RFC 6531 §3.4, RFC 3461 §5);
        // the machine drops what the upstream does not offer, and refuses to
        // send an SMTPUTF8 message where SMTPUTF8 is not offered. A NOTIFY that
        // asks for SUCCESS, relayed to an upstream without DSN, gets no
        // "relayed" notice from Postern: only failure notices exist here.
        outbound.smtputf8 = envelope.smtputf8
        outbound.ret = envelope.ret
        outbound.envelopeID = envelope.envelopeID
        if parameters.count == rcpts.count && parameters.contains(where: { !$0.isEmpty }) {
            outbound.recipientParameters = parameters
        }
        if behindDot {
            let actions = machine.startBehindDot(message: outbound)
            if actions.isEmpty { return }
            pipelined = started
            spool.queue.setInFlight(m.id, true)
            spool.queue.countAttempt(m.id)
            perform(actions, now: now)
            return
        }
        current = started
        spool.queue.setInFlight(m.id, true)
        spool.queue.countAttempt(m.id)
        perform(machine.start(message: outbound), now: now)
    }

    /// The end of data of `current` is in the output: the next due message's
    /// envelope goes right behind it when there is room for a whole group.
    func startBehindDot(now: Int64) {
        guard !stopRequested, pipelined == nil, current != nil, machine.capabilities.pipelining,
              output.capacity - output.count >= SMTPSender.maxGroupBytes,
              let m = spool.queue.nextDue(now: now) else { return }
        startMessage(m, now: now, behindDot: true)
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
            case .sendSecret(let bytes):
                outputHoldsSecret = true
                if !output.append(bytes) {
                    perform(machine.connectionLost("AUTH response too long for the output buffer"), now: now)
                    return
                }
            case .startTLS:
                // Whatever follows the 220 in this read is not trusted: beginTLS
                // drops it with the rest of the plaintext input.
                flushOutput(now: now)
                beginTLS(now: now)
                return
            case .needSecret:
                provideSecret(now: now)
                return
            case .sendText:
                streaming = true
            case .ready:
                upstreamFailures = 0
                lastError = nil
                if active < statuses.count { statuses[active].lastError = nil }
                // A fallback carries what is queued now and is then let go, so
                // the next message tries the primary again.
                idleUntil = active == 0 ? now + Self.idleHoldNanoseconds : now
            case .recipient(let index, let outcome, let reply):
                recipientResult(index, outcome, reply, now: now)
            case .messageDone:
                messageDone(now: now)
            case .close(let failure):
                if let f = failure {
                    upstreamFailed(f, now: now)
                } else {
                    closeSocket()
                    // The next connection starts with the primary again.
                    active = 0
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
            ("upstream", upstreamName), ("reply", reply.description), ("attempt", "\(attempt)"),
        ]
        switch outcome {
        case .delivered:
            lastDeliveryWall = Clock.wall()
            if active < statuses.count { statuses[active].lastDeliveryWall = lastDeliveryWall }
            log.event(.delivered, .info, "delivered", fields)
            spool.recordOutcome(c.id, recipient: spooledIndex, .delivered, now: now)
        case .failed:
            log.event(.failed, .error, "recipient refused by the upstream; giving up", fields)
            // Recorded when the transaction ends, after its failure notice is queued.
            c.failed.append(FailureNotices.Failed(index: spooledIndex, status: reply.enhanced ?? "5.0.0",
                                                  reply: reply.description, upstream: upstream.host))
            current = c
        case .deferred:
            log.event(.deferred, .warning, "deferred; will retry", fields)
            spool.queue.setLastReply(c.id, intern(reply.description))
            c.deferred = true
            current = c
        }
    }

    func messageDone(now: Int64) {
        guard let c = current else { return }
        // The message started behind this one's end of data is next.
        current = pipelined
        pipelined = nil
        streaming = false
        if !c.failed.isEmpty {
            notices?.send(about: c.id, failed: c.failed, reason: .refused, now: now)
            for f in c.failed { spool.recordOutcome(c.id, recipient: f.index, .failed, now: now) }
        }
        if spool.queue.message(c.id) != nil {
            let attempts = spool.queue.message(c.id)?.attempts ?? 1
            spool.queue.deferMessage(c.id, now: now, delay: policy.delayNanoseconds(afterAttempt: attempts, random: Clock.random()))
        }
    }

    /// A connection failure left the current message without a final answer.
    func releaseCurrent(now: Int64) {
        if let p = pipelined { spool.queue.setInFlight(p.id, false) }
        pipelined = nil
        guard let c = current else { return }
        current = nil
        streaming = false
        spool.queue.setInFlight(c.id, false)
    }

    /// Fills the output buffer with wire text (`OutboundText`); the end-of-data
    /// marker goes in the same buffer as the last text, so it leaves in the same write.
    func pumpText(now: Int64) {
        guard streaming else { return }
        switch text.fill(output, spool: spool) {
        case .more:
            return
        case .done:
            streaming = false
            _ = machine.textSent()
            startBehindDot(now: now)
        case .failed(let f):
            let id = current?.id
            streaming = false
            // Abandon the transaction without the final dot so the upstream
            // discards the partial text.
            perform(machine.connectionLost("spool read failed"), now: now)
            if let id = id { unreadable(id, f, now: now) }
        }
    }

    func flushOutput(now: Int64) {
        var sent = 0
        while fd >= 0 {
            if output.isEmpty {
                if streaming { pumpText(now: now); if output.isEmpty { return } } else { return }
            }
            // The rest waits in the output for the next POLLOUT.
            if sent >= Self.bytesPerTurn { return }
            switch link.send(output.readable) {
            case .success(.done(let n)):
                output.consume(n)
                sent += n
                if output.isEmpty && outputHoldsSecret {
                    output.wipe()
                    outputHoldsSecret = false
                }
                deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
            case .success(.wouldBlock), .success(.eof):
                return
            case .failure(let p):
                perform(machine.connectionLost(p.text), now: now)
                return
            }
        }
    }

    /// Bytes sent to the upstream per event the loop hands over (a turn can
    /// hold two: writable, then readable) before the others are served, like
    /// the receiver's `readsPerTurn`. Over loopback the socket took a whole
    /// 5 MB message at once: 153 sends in one turn, through which no client
    /// was read or answered.
    /// 128 KiB is two spool records; a 5 MB message then takes 40 turns, and a
    /// client sending NOOPs beside it waited 1.6 to 2.8 ms at the 99th
    /// percentile against 4.2 to 4.9 (three runs each; issue 11).
    static let bytesPerTurn = 128 * 1024

    func closeSocket() {
        link.close()
        text.reader.releaseFile()
        streaming = false
        if outputHoldsSecret { output.wipe() }
        outputHoldsSecret = false
        input.release()
        output.release()
    }
}
