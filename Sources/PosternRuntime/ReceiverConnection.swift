import CLibc
import PosternCore

/// Everything a receiver connection needs from the daemon, shared by all slots.
public final class ReceiverContext {
    /// Replaced on reload; a connection keeps the settings it started with.
    public var settings: ReceiverSettings
    public var allowClients: [CIDR]
    /// How long a client may take over one command line, or over one block of
    /// message text (`ReceiverConnection.dataBlock`).
    public var timeoutNanoseconds: Int64
    public let spool: Spool
    public let log: Log
    public let kernel: any Kernel
    /// `[receiver] tls_cert`/`tls_key` as loaded; nil without TLS. Replaced on
    /// reload (a renewed certificate); connections keep the one they began with.
    public var tlsServer: TLSServerContext? = nil
    /// `[receiver] auth_users` as loaded; nil without AUTH. Replaced on reload.
    public var authUsers: AuthUsers? = nil
    /// Checks AUTH passwords off the loop (the daemon starts it and feeds it
    /// poll events); without one, a connection checks in the loop through
    /// `fallbackChecker` (tests below the socket).
    public var passwordChecker: PasswordChecker? = nil
    /// The Received header's date of the current second, made once for every
    /// message that arrives in it (`receivedDate`).
    var dateOfSecond: (second: Int64, text: String) = (-1, "")
    lazy var fallbackChecker = PasswordChecker(log: log)
    /// Failed AUTH per client address: delays and lockouts (`AuthThrottle`).
    public var authThrottle = AuthThrottle()
    /// Names each password check, so that a verdict that comes back after its
    /// connection closed (and its slot was reused) is recognised and dropped.
    var lastCheckID: UInt64 = 0

    /// The kernel's word on the wall clock (adjtimex(2)), kept for
    /// `synchronisedCacheNanoseconds`: it stamps every arrival, and asking for
    /// each message was one system call in forty (issue 11).
    var synchronisedReading: (at: Int64, value: Bool)? = nil
    static let synchronisedCacheNanoseconds: Int64 = 250_000_000
    /// The log of clients refused for talking before the greeting, rate
    /// limited like the pool's refusals (`RefusalTally`; issue 12 item 5).
    var earlyTalkerLog = RefusalTally()

    /// Whether the wall clock is synchronised, as of at most a quarter second ago.
    func clockSynchronised(now: Int64) -> Bool {
        if let r = synchronisedReading, now >= r.at, now - r.at < Self.synchronisedCacheNanoseconds { return r.value }
        let value = Clock.synchronised()
        synchronisedReading = (now, value)
        return value
    }

    public init(settings: ReceiverSettings, allowClients: [CIDR], timeoutSeconds: Int, spool: Spool, log: Log,
                kernel: any Kernel) {
        self.settings = settings
        self.allowClients = allowClients
        self.timeoutNanoseconds = Int64(timeoutSeconds) * 1_000_000_000
        self.spool = spool
        self.log = log
        self.kernel = kernel
    }

    /// Now as the Received header's date (RFC 5322 §3.3), formatted once a
    /// second rather than once a message.
    func receivedDate() -> String {
        let now = Clock.wall()
        if now != dateOfSecond.second { dateOfSecond = (now, Clock.rfc5322Date(wall: now)) }
        return dateOfSecond.text
    }
}

/// One client connection: a socket, three fixed buffers from the pool, the pure
/// `SMTPReceiver` and the spool transaction it opens. The connection frames bytes
/// into command lines (`LineFramer`) or message text (`DataDecoder`), as the
/// machine says it expects, feeds the machine and performs its actions. Slots are
/// allocated once at start and reused.
///
/// Flow control, after OpenSMTPD's smtp_io(): commands are taken from the input
/// only while the output has room for their replies. When a pipelining client's
/// replies fill the output, processing pauses, and it resumes as soon as the
/// output drains — from the write event, since the client may have nothing more
/// to send (RFC 2920 §3.1: it may send every command before reading a reply).
/// A client that never reads holds one input and one output buffer, stops being
/// read, and is cut off when its deadline passes.
///
/// Deadlines (RFC 5321 §4.5.3.2): a command line must be complete within
/// `[receiver] timeout` of the previous one (§4.5.3.2.7), and every block of
/// `dataBlock` bytes of message text within `timeout` of the previous block
/// (§4.5.3.2.5). Bytes trickling in do not move a deadline, so a client sending
/// one byte a second cannot hold a slot.
public final class ReceiverConnection {
    /// Bytes of message text that must arrive within one `timeout`.
    public static let dataBlock = 16 * 1024
    /// Room the output must have before another command is taken: more than the
    /// longest reply (the EHLO reply, or a refusal echoing 200 bytes).
    public static let outputReserve = 1024

    let context: ReceiverContext
    public let input = ByteBuffer(capacity: BufferSizes.receiverInput)
    let text = ByteBuffer(capacity: BufferSizes.receiverText)
    public let output = ByteBuffer(capacity: BufferSizes.receiverOutput)

    public private(set) var fd: Int32 = -1
    public internal(set) var machine: SMTPReceiver
    var framer = LineFramer(maxLineLength: SMTPReceiver.extendedLineLength)
    var decoder = DataDecoder()
    /// For text that comes in BDAT chunks (RFC 3030).
    var chunkDecoder = ChunkDecoder()
    var peer = IPAddress.loopbackV4
    /// Set for a connection on the local submission socket: who it is, from the
    /// kernel. Such a client is always allowed to send (any local user may, as
    /// with Postfix's sendmail); `peer` is then loopback, for the slot reservation.
    var local: LocalSender? = nil
    var connectionID = ""
    /// The spool transaction of the message being received; kept until the
    /// group commit has answered for it.
    var transaction: SpoolTransaction? = nil
    /// The client shut down its sending side (read gave end of file): what it
    /// sent is still answered, then the connection closes.
    var inputEnded = false
    /// The connection broke (reset, failed send): nothing more can be sent.
    var peerGone = false
    public internal(set) var deadline: Int64 = 0
    /// Bytes of message text since the deadline last moved.
    var textSinceDeadline = 0

    /// The TLS session once STARTTLS (or an implicit-TLS listener) began one:
    /// every byte then goes through it.
    var tls: TLSChannel? = nil
    /// The handshake is running: nothing is read as SMTP, nothing is sent.
    var handshaking = false
    /// STARTTLS was answered 220: the handshake starts once that reply is out.
    var tlsRequested = false
    /// What a TLS read or write that could not finish waits for (SSL_get_error(3):
    /// a read may need the socket writable, a write may need it readable).
    var readWants = Int16(POLLIN)
    var writeWants = Int16(POLLOUT)

    /// The password check this connection waits for (`ReceiverContext.lastCheckID`).
    public internal(set) var pendingCheck: UInt64? = nil
    /// A failed AUTH's reply is held until then (`AuthThrottle`): it and
    /// what follows are not sent, nothing is read meanwhile, and it is the
    /// connection's deadline. The replies before it (`heldFrom` octets of
    /// the output) still go out.
    var holdUntil: Int64? = nil
    var heldFrom = 0

    public init(context: ReceiverContext) {
        self.context = context
        machine = SMTPReceiver(settings: context.settings)
    }

    public var isActive: Bool { fd >= 0 }
    /// The message's commit record is written and waits for the group commit.
    public var isAwaitingCommit: Bool { machine.isAwaitingCommit }
    /// The id of the transaction waiting for the group commit.
    public var transactionID: UInt64? { machine.isAwaitingCommit ? transaction?.id : nil }

    var outputRoom: Int { output.capacity - output.count }

    /// Input is taken now: only while replies have room and no commit is
    /// pending (replies stay in order, RFC 2920 §3.1).
    var wantsInput: Bool {
        !inputEnded && !peerGone && !machine.isClosed && !machine.isAwaitingCommit && !tlsRequested
            && !machine.isAwaitingAuth && holdUntil == nil
            && input.count < input.capacity && outputRoom >= Self.outputReserve
    }

    /// Poll events wanted: input while `wantsInput`, output while any waits;
    /// during a TLS handshake, what OpenSSL waits for.
    public var pollEvents: Int16 {
        if handshaking, let t = tls { return peerGone ? 0 : t.wants }
        var e: Int16 = 0
        if wantsInput { e |= tls == nil ? Int16(POLLIN) : readWants }
        if sendable > 0 && !peerGone { e |= tls == nil ? Int16(POLLOUT) : writeWants }
        return e
    }

    /// Takes over an accepted socket.
    /// With `implicitTLS` (a `listen_tls` listener, RFC 8314 §3.3) the TLS
    /// handshake comes first and the greeting is sent through it; otherwise
    /// `greeting` says whether it waits (`greet_pause`).
    public func attach(fd: Int32, peer: IPAddress, id: String, now: Int64, local: LocalSender? = nil,
                       implicitTLS: Bool = false, greeting: GreetPolicy.Plan = .greetNow(refuseEarlyInput: false)) {
        self.fd = fd
        holdsPages = false
        self.peer = local == nil ? peer.unmapped : IPAddress.loopbackV4
        self.local = local
        connectionID = id
        input.clear(); text.clear(); output.clear()
        machine = SMTPReceiver(settings: context.settings)
        framer = LineFramer(maxLineLength: SMTPReceiver.extendedLineLength)
        decoder = DataDecoder()
        transaction = nil
        inputEnded = false
        peerGone = false
        tls = nil
        handshaking = false
        tlsRequested = false
        pendingCheck = nil
        holdUntil = nil
        restartDeadline(now)
        let allowed = local != nil || context.allowClients.contains { $0.contains(self.peer) }
        context.log.debug("client connected", clientFields + [("conn", id), ("allowed", allowed ? "yes" : "no")]
                          + (implicitTLS ? [("tls", "implicit")] : []))
        if implicitTLS {
            // The client speaks first (its ClientHello): no pause, no early-talker
            // check. The greeting waits in the output until the handshake is done.
            refusesEarlyInput = false
            greetAt = nil
            startSession(tls: true, now: now)
            startTLS(now: now)
            sendOutput(now: now)
        } else {
            greetOrPause(greeting, now: now)
        }
    }

    // MARK: events from the loop

    public func readable(now: Int64) {
        guard isActive, !peerGone else { return }
        if handshaking { continueHandshake(now: now); return }
        guard !inputEnded else { return }
        if greetAt != nil { _ = refusedEarlyTalker(now: now); return }
        for _ in 0..<Self.readsPerTurn {
            switch readOnce(now: now) {
            case .broke: return
            case .none where tls == nil: return
            default: pump(now: now)
            }
            // A read that filled the buffer left more behind it, most likely:
            // read it now rather than after another poll.
            guard tls == nil, lastReadFilled, isActive, wantsInput else { return }
        }
    }

    /// Reads of a client that keeps filling the input buffer, before the loop
    /// serves the others: four reads of 16 KiB are one spool text record of
    /// message text (`BufferSizes.receiverText`). A read per poll cost a 5 MB
    /// message 318 polls; with four, 99, and 8% less CPU in `make bench`'s
    /// 5 MB row (13.5 against 14.75 ms per message, alternating runs; issue
    /// 11). The same as an input buffer four times the size, without its
    /// memory in every slot (16 clients sending 100 KB: 0.7 MB more RSS).
    static let readsPerTurn = 4

    public func writable(now: Int64) {
        guard isActive else { return }
        if handshaking { continueHandshake(now: now); return }
        // A TLS read that needed the socket writable (a key update) goes on now.
        if tls != nil && readWants == Int16(POLLOUT) && wantsInput {
            if case .broke = readOnce(now: now) { return }
        }
        pump(now: now)
    }

    enum ReadOutcome { case some, none, broke }

    /// The latest read took all the room the input buffer had.
    var lastReadFilled = false

    /// One read into the input buffer, from the socket or through TLS.
    func readOnce(now: Int64) -> ReadOutcome {
        lastReadFilled = false
        input.compact()
        guard input.freeSpace > 0 else { return .none }
        let result: Result<Sys.IO, Problem>
        if let t = tls {
            result = t.read(input.writable)
            readWants = t.wants
        } else {
            result = context.kernel.read(fd, input.writable).mapError { Problem($0.description) }
        }
        switch result {
        case .success(.done(let n)):
            lastReadFilled = n >= input.freeSpace
            input.didWrite(n)
            return n > 0 ? .some : .none
        case .success(.eof):
            inputEnded = true
            return .some
        case .success(.wouldBlock):
            return .none
        case .failure(let e):
            connectionBroke(e.description, now: now)
            return .broke
        }
    }

    public func timedOut(now: Int64) {
        guard isActive else { return }
        if handshaking {
            // No SMTP reply can be sent in the middle of a handshake.
            context.log.info("client timed out in the TLS handshake", clientFields + [("conn", connectionID)])
            close()
            return
        }
        if greetAt != nil { greet(now: now); return }
        if holdUntil != nil {
            // The throttle's delay is over: the failed AUTH's reply goes out.
            holdUntil = nil
            restartDeadline(now)
            pump(now: now)
            return
        }
        if machine.isAwaitingCommit {
            // The group commit runs in this same loop iteration; never cut off a
            // client whose message is about to be promised.
            restartDeadline(now)
            return
        }
        if !machine.isClosed {
            context.log.info("client timed out", clientFields + [("conn", connectionID),
                                                   ("state", machine.phase.description)])
            perform(machine.timedOut(), now: now)
            sendOutput(now: now)
        }
        close()
    }

    /// The daemon is stopping: 421 and close (RFC 5321 §3.8). Not while a commit
    /// is pending: the daemon answers those first.
    public func shutdown(now: Int64) {
        guard isActive, !machine.isAwaitingCommit else { return }
        holdUntil = nil
        if !machine.isClosed {
            perform(machine.shutdown(), now: now)
            sendOutput(now: now)
        }
        close()
    }

    /// The loop's fdatasync covered this connection's commit.
    public func committed(now: Int64) {
        guard machine.isAwaitingCommit, let t = transaction, let env = machine.envelope else { return }
        context.log.event(.received, .info, "message received", [
            ("queue_id", t.queueID), ("from", env.from.description),
            ("rcpt", env.recipients.map { $0.description }.joined(separator: ",")),
            ("size", "\(t.size)"), ("conn", connectionID),
        ] + clientFields + (env.authUser.map { [("auth_user", $0)] } ?? []))
        transaction = nil
        perform(machine.committed(queueID: t.queueID), now: now)
        afterCommit(now: now)
    }

    /// The loop's fdatasync failed: the message cannot be promised.
    public func commitFailed(_ e: Errno, now: Int64) {
        guard machine.isAwaitingCommit else { return }
        context.log.error("spool sync failed; message refused with 4xx", [("conn", connectionID), ("error", e.description)],
                          id: MessageIDs.spoolError)
        transaction = nil
        perform(machine.commitFailed(), now: now)
        afterCommit(now: now)
    }

    func afterCommit(now: Int64) {
        restartDeadline(now)
        if peerGone {
            // The client left while its message was being made durable: it is
            // queued all the same (at-least-once), and nobody is left to tell.
            close()
            return
        }
        pump(now: now)
    }

    // MARK: before the greeting (issue 12 item 5, `GreetPolicy`)

    /// While the greeting is held back (`greet_pause`): when it is due. It is
    /// the connection's deadline meanwhile; the command deadline starts with the
    /// greeting, so the pause is not counted against the client.
    var greetAt: Int64? = nil
    /// Input before the greeting refuses the client (RFC 5321 §3.1, §4.3.1).
    var refusesEarlyInput = false

    /// Greets now, or holds the greeting back, as the pool's `GreetPolicy` says.
    func greetOrPause(_ plan: GreetPolicy.Plan, now: Int64) {
        switch plan {
        case .greetNow(let refuse):
            refusesEarlyInput = refuse
            greet(now: now)
        case .pauseUntil(let t):
            refusesEarlyInput = true
            greetAt = t
            deadline = t
        }
    }

    /// Sends the 220 (or the machine's refusal), unless the client has talked.
    func greet(now: Int64) {
        greetAt = nil
        if refusesEarlyInput && refusedEarlyTalker(now: now) { return }
        restartDeadline(now)
        startSession(tls: false, now: now)
        sendOutput(now: now)
    }

    /// Starts the SMTP session: the machine's greeting (or refusal) goes into
    /// the output.
    func startSession(tls: Bool, now: Int64) {
        let allowed = local != nil || context.allowClients.contains { $0.contains(peer) }
        perform(machine.start(clientAllowed: allowed, clientText: local.map { "local user \($0.name)" } ?? peer.literal,
                              tls: tls, tlsExempt: local != nil || peer.isLoopback),
                now: now)
    }

    /// One non-blocking read into the slot's own input buffer (no other
    /// memory): any byte before the greeting refuses the client with 554 5.5.0
    /// and closes the connection. True when the connection is closed.
    func refusedEarlyTalker(now: Int64) -> Bool {
        input.clear()
        switch context.kernel.read(fd, input.writable) {
        case .success(.wouldBlock), .success(.done(0)):
            return false
        case .success(.done(let n)):
            ReceiverPool.logEarlyTalkerSummary(context, now: now)
            if context.earlyTalkerLog.refused(now: now) {
                context.log.event(.rejected, .notice, "client sent input before the greeting; refused", clientFields + [
                    ("reply", "554 5.5.0"), ("bytes", "\(n)"), ("conn", connectionID),
                ])
            }
            input.clear()
            let reply = GreetPolicy.earlyTalkerReply(hostname: context.settings.hostname).encoded()
            _ = reply.withUnsafeBytes { context.kernel.send(fd, $0) }
            close()
            return true
        case .success(.eof):
            context.log.debug("client disconnected before the greeting", [("conn", connectionID)])
            inputEnded = true
            close()
            return true
        case .failure(let e):
            connectionBroke(e.description, now: now)
            return true
        }
    }

    // MARK: input

    enum Stop { case needInput, outputFull, waiting }

    /// Processes buffered input and sends replies, for as long as the output
    /// drains: a pipelined batch bigger than the output buffer is answered in
    /// rounds without waiting for more input.
    func pump(now: Int64) {
        while isActive {
            let stop = process(now: now)
            sendOutput(now: now)
            if stop == .outputFull, isActive, outputRoom >= Self.outputReserve { continue }
            // OpenSSL may hold decrypted bytes of a record the input had no room
            // for: the socket will not become readable for them, so they are
            // read now, or a pipelining client would stall.
            if isActive, !handshaking, let t = tls, t.hasPending, wantsInput {
                if case .some = readOnce(now: now) { continue }
            }
            break
        }
    }

    /// Feeds buffered input to the machine: command lines, or message text while
    /// it expects text. Returns why it stopped.
    func process(now: Int64) -> Stop {
        var stop = Stop.waiting
        while isActive && !peerGone && !machine.isClosed && !machine.isAwaitingCommit && !tlsRequested
                && !machine.isAwaitingAuth && holdUntil == nil {
            if outputRoom < Self.outputReserve { stop = .outputFull; break }
            let progressed = machine.expectsText ? decodeText(now: now)
                : machine.chunkRemaining != nil ? readChunk(now: now) : nextCommand(now: now)
            if !progressed { stop = .needInput; break }
        }
        if stop == .needInput && inputEnded {
            // The client half-closed and everything it sent is answered. A message
            // it did not finish is thrown away (RFC 5321 §3.3: no end of data).
            if machine.expectsText {
                context.log.info("client closed the connection during DATA; message discarded",
                                 [("conn", connectionID)] + clientFields)
            }
            perform(machine.disconnected(), now: now)
        }
        return stop
    }

    /// Frames and handles one command line. Returns false when more input is needed.
    func nextCommand(now: Int64) -> Bool {
        let (frame, consumed) = framer.next(in: input.readable)
        switch frame {
        case .needMore:
            input.consume(consumed)
            return false
        case .line(let range):
            let line = Array(input.readable[range])
            input.consume(consumed)
            restartDeadline(now)
            machine.spoolAcceptsMail = context.spool.acceptsMail(now: now)
            if machine.authOffered { machine.authLockedOut = context.authThrottle.isLockedOut(peer, now: now) }
            let before = machine.phase
            perform(machine.receive(line: line[...]), now: now)
            if machine.phase != before {
                context.log.debug("receiver \(before) -> \(machine.phase)", [("conn", connectionID)])
            }
        case .tooLong:
            input.consume(consumed)
            restartDeadline(now)
            perform(machine.receiveLineTooLong(), now: now)
        case .bareLineEnding:
            input.consume(consumed)
            restartDeadline(now)
            perform(machine.receiveBareLineEnding(), now: now)
        }
        return true
    }

    /// Decodes buffered input as message text into the staging buffer, which
    /// goes to the spool as one text record when full, or with the commit
    /// record at the end of data.
    /// Returns false when more input is needed.
    func decodeText(now: Int64) -> Bool {
        if input.isEmpty { return false }
        text.compact()
        let step = decoder.decode(input.readable, into: text.writable)
        input.consume(step.consumed)
        text.didWrite(step.produced)
        textSinceDeadline += step.consumed
        if textSinceDeadline >= Self.dataBlock { restartDeadline(now) }
        if step.produced > 0 { perform(machine.receiveText(count: step.produced), now: now) }
        // At the end of data what is staged goes with the commit record, in
        // one write (`commit`); a refused message's is cleared (`abortMessage`).
        if !step.ended && text.freeSpace < 64 { storeText(now: now) }
        if step.ended {
            restartDeadline(now)
            perform(machine.receiveEndOfData(), now: now)
        }
        return true
    }

    /// Takes buffered bytes of a BDAT chunk: decoded into the staging buffer
    /// (stored like DATA's text), or thrown away after a refused BDAT. Returns
    /// false when more input is needed.
    func readChunk(now: Int64) -> Bool {
        guard let remaining = machine.chunkRemaining else { return false }
        if remaining > 0 && input.isEmpty { return false }
        var taken = min(remaining, input.count)
        if machine.isStoring {
            text.compact()
            let step = chunkDecoder.decode(UnsafeRawBufferPointer(rebasing: input.readable.prefix(taken)),
                                           into: text.writable)
            taken = step.consumed
            text.didWrite(step.produced)
            if step.produced > 0 { perform(machine.receiveText(count: step.produced), now: now) }
            if text.freeSpace < 64 { storeText(now: now) }
        }
        input.consume(taken)
        textSinceDeadline += taken
        if textSinceDeadline >= Self.dataBlock { restartDeadline(now) }
        perform(machine.receiveChunk(count: taken), now: now)
        if machine.chunkRemaining == nil { restartDeadline(now) }
        return true
    }

    func restartDeadline(_ now: Int64) {
        deadline = now + context.timeoutNanoseconds
        textSinceDeadline = 0
    }

    /// Appends the staged text to the spool as one text record.
    func storeText(now: Int64) {
        defer { text.clear() }
        guard var t = transaction, !text.isEmpty else { return }
        if case .failure(let e) = context.spool.appendText(&t, text.readable, now: now) {
            storeFailed(e, now: now)
            return
        }
        transaction = t
    }

    /// The spool could not take the text: the transaction is dropped, the rest of
    /// the text is read and thrown away, and the end of data gets 452 4.3.1.
    func storeFailed(_ e: Errno, now: Int64) {
        context.log.error("spool write failed", [("conn", connectionID), ("error", e.description)], id: MessageIDs.spoolError)
        if let t = transaction { context.spool.abort(t, now: now) }
        transaction = nil
    }

    // MARK: actions

    func perform(_ actions: [SMTPReceiver.Action], now: Int64) {
        for action in actions {
            switch action {
            case .reply(let r):
                if peerGone { continue }
                if !output.append(r.encoded()) {
                    // `process` keeps `outputReserve` free for each command, so
                    // only a client out of step with its replies gets here.
                    context.log.warning("reply does not fit the output buffer; closing", [("conn", connectionID)])
                    connectionBroke("output overflow", now: now)
                    return
                }
            case .startData(let env):
                startData(env, now: now)
            case .abortMessage:
                if let t = transaction { context.spool.abort(t, now: now) }
                transaction = nil
                text.clear()
            case .commitMessage:
                commit(now: now)
            case .rejected(let command, let reply):
                context.log.event(.rejected, .notice, "command rejected", clientFields + [
                    ("command", command), ("reply", reply.description), ("conn", connectionID),
                ])
            case .close:
                // The machine is closed now; the connection closes once the
                // reply is sent (`sendOutput`).
                break
            case .checkCredentials:
                checkCredentials(now: now)
            case .authSucceeded(let user, let mechanism):
                context.authThrottle.recordSuccess(peer, now: now)
                context.log.info("client authenticated", clientFields + [
                    ("auth_user", user), ("mechanism", mechanism), ("conn", connectionID),
                ])
            case .authFailed(let user, let reply):
                authFailed(user: user, reply: reply, now: now)
            case .startTLS:
                // RFC 3207 §4 and CVE-2011-0411: whatever the client pipelined
                // after STARTTLS came in the clear; it is thrown away, never
                // read as a command. The handshake starts once the 220 is out.
                if input.count > 0 {
                    context.log.notice("bytes sent after STARTTLS before the handshake discarded",
                                       clientFields + [("conn", connectionID), ("bytes", "\(input.count)")])
                }
                input.clear()
                tlsRequested = true
            }
        }
    }

    func startData(_ env: Envelope, now: Int64) {
        decoder = DataDecoder()
        chunkDecoder = ChunkDecoder()
        text.clear()
        switch context.spool.begin(env, arrival: Clock.wall(), arrivalSynchronised: context.clockSynchronised(now: now), now: now) {
        case .success(let t):
            transaction = t
            // RFC 5321 §4.4: the trace header goes first.
            let header = TraceHeader.received(TraceHeader.Info(
                heloName: env.heloName, clientAddress: peer, hostname: context.settings.hostname,
                protocolName: Self.protocolName(env), queueID: t.queueID,
                recipient: env.recipients.count == 1 ? env.recipients.first : nil, date: context.receivedDate(),
                local: local, authUser: env.authUser))
            text.append(header)
        case .failure(let e):
            storeFailed(e, now: now)
        }
    }

    /// The log fields naming the client: its address, or for a local submission
    /// "local" with the user, uid and pid the kernel gave (POSTERN_USER, POSTERN_UID,
    /// POSTERN_PID in the journal).
    var clientFields: [(String, String)] {
        guard let l = local else { return [("client", peer.description)] }
        var f: [(String, String)] = [("client", "local"), ("uid", "\(l.uid)")]
        if let u = l.user { f.append(("user", u)) }
        if let p = l.pid { f.append(("pid", "\(p)")) } else { f.append(("via", "maildrop")) }
        return f
    }

    /// Writes the last of the text and the commit record, in one write: the
    /// text staged after the last full buffer, with what a BDAT message's last
    /// line needs (`ChunkDecoder.finish`; nothing after DATA).
    func commit(now: Int64) {
        if text.freeSpace < 2 { storeText(now: now) }
        text.compact()
        text.didWrite(chunkDecoder.finish(into: text.writable))
        defer { text.clear() }
        guard let t = transaction else {
            perform(machine.commitFailed(), now: now)
            return
        }
        switch context.spool.commit(t, lastText: text.readable, now: now) {
        case .success(let size):
            transaction?.size = size
        case .failure(let e):
            transaction = nil
            context.log.error("spool write failed", [("conn", connectionID), ("error", e.description)], id: MessageIDs.spoolError)
            perform(machine.commitFailed(), now: now)
        }
    }

    // MARK: output and closing

    /// The `with` of the trace header: RFC 3848 §2 ("ESMTPS" for ESMTP over
    /// TLS) and RFC 6531 §3.7.3 ("UTF8SMTP", "UTF8SMTPS" for SMTPUTF8 mail);
    /// HELO stays "SMTP".
    static func protocolName(_ env: Envelope) -> String {
        guard env.esmtp else { return "SMTP" }
        return (env.smtputf8 ? "UTF8SMTP" : "ESMTP") + (env.tls ? "S" : "") + (env.authUser != nil ? "A" : "")
    }

    /// Output octets that may be sent now: all, or those before a held reply.
    var sendable: Int { holdUntil == nil ? output.count : min(heldFrom, output.count) }

    /// Sends what the output holds, as far as the socket takes it; closes once
    /// the machine is closed and its last reply is out. A held reply and what
    /// follows it wait (`holdUntil`).
    func sendOutput(now: Int64) {
        guard isActive, !handshaking else { return }
        while sendable > 0 && !peerGone {
            let bytes = UnsafeRawBufferPointer(rebasing: output.readable.prefix(sendable))
            let result: Result<Sys.IO, Problem>
            if let t = tls {
                result = t.write(bytes)
                writeWants = t.wants
            } else {
                result = context.kernel.send(fd, bytes).mapError { Problem($0.description) }
            }
            switch result {
            case .success(.done(let n)) where n > 0:
                output.consume(n)
                heldFrom -= min(n, heldFrom)
            case .success:
                return
            case .failure(let e):
                connectionBroke(e.description, now: now)
                return
            }
        }
        if holdUntil != nil { return }
        if machine.isClosed && output.isEmpty { close(); return }
        if tlsRequested && output.isEmpty && !peerGone {
            tlsRequested = false
            startTLS(now: now)
        }
    }

    // MARK: TLS

    /// Starts the server side of a handshake on the socket (after STARTTLS's
    /// 220, or at once on an implicit-TLS listener). The handshake has one
    /// `timeout`, like a command (issue 12 item 5).
    func startTLS(now: Int64) {
        guard let server = context.tlsServer, let channel = TLSChannel.accept(fd: fd, context: server) else {
            context.log.warning("cannot start TLS for a client; closing", clientFields + [("conn", connectionID)])
            peerGone = true
            output.clear()
            perform(machine.disconnected(), now: now)
            close()
            return
        }
        tls = channel
        handshaking = true
        restartDeadline(now)
        continueHandshake(now: now)
    }

    func continueHandshake(now: Int64) {
        guard let t = tls else { return }
        switch t.handshake() {
        case .pending:
            return
        case .failed(let report):
            // Old cameras that offer only TLS 1.0 end here unless
            // tls_min_version allows it; the reason says so.
            context.log.info("TLS handshake with a client failed", clientFields + [
                ("conn", connectionID), ("reason", report.handshakeText),
            ])
            peerGone = true
            output.clear()
            perform(machine.disconnected(), now: now)
            close()
        case .done:
            handshaking = false
            readWants = Int16(POLLIN)
            writeWants = Int16(POLLOUT)
            restartDeadline(now)
            // Which devices speak which version is worth seeing (tls_min_version).
            context.log.info("TLS started", clientFields + [("conn", connectionID), ("tls", t.negotiated)])
            // The greeting of an implicit-TLS listener, if it waits; then any
            // bytes the client sent right behind its Finished message.
            sendOutput(now: now)
            if isActive, wantsInput, case .broke = readOnce(now: now) { return }
            pump(now: now)
        }
    }

    /// The connection is gone: a message still arriving is dropped; one awaiting
    /// its commit is kept and the connection closes after the commit.
    func connectionBroke(_ reason: String, now: Int64) {
        guard isActive else { return }
        context.log.debug("client disconnected", [("conn", connectionID), ("reason", reason)])
        peerGone = true
        output.clear()
        perform(machine.disconnected(), now: now)
        if !machine.isAwaitingCommit { close() }
    }

    func close() {
        guard fd >= 0 else { return }
        if !machine.isClosed && !machine.isAwaitingCommit {
            perform(machine.disconnected(), now: Clock.monotonic())
        }
        if let t = tls {
            // close_notify (RFC 8446 §6.1) after a completed handshake, without
            // waiting for the client's.
            t.close()
            tls = nil
            handshaking = false
        } else if !inputEnded && !peerGone {
            drainInput()
        }
        tlsRequested = false
        pendingCheck = nil
        holdUntil = nil
        context.kernel.close(fd)
        fd = -1
        greetAt = nil
        transaction = nil
        // The pages stay until the pool has had no connection for a moment
        // (`ReceiverPool.pageReleaseDelay`): at a busy time the next client
        // takes this slot at once.
        input.clear(); text.clear(); output.clear()
        holdsPages = true
    }

    /// The buffers of a closed connection still hold pages.
    public private(set) var holdsPages = false

    /// Gives a closed connection's pages back to the kernel (they read as
    /// zeros when next used).
    public func releasePages() {
        guard !isActive, holdsPages else { return }
        input.release(); text.release(); output.release()
        holdsPages = false
    }

    /// Reads (a bounded amount of) what the client sent and nobody will read:
    /// closing a socket with unread input resets it, and the client could lose
    /// the last reply (a 221, or the 421 of a timeout).
    func drainInput() {
        for _ in 0..<4 {
            input.clear()
            guard case .success(.done) = context.kernel.read(fd, input.writable) else { return }
        }
    }
}
