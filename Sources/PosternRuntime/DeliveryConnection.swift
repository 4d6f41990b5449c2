import CLibc
import PosternCore

/// How `Delivery` reaches an upstream: the name lookup in a child, TCP to each
/// address in turn, TLS (implicit, or after STARTTLS) with the certificate
/// checked, the AUTH secret from a file or a command, and what happens when any
/// of it fails — the next upstream at once, or the retry schedule after the last
/// (issue 8 items 1–5).
extension Delivery {
    // MARK: connecting

    /// What the sender must do on a connection to `u`.
    static func security(_ u: UpstreamConfig) -> SenderSecurity {
        SenderSecurity(startTLS: u.tls == .starttls, implicitTLS: u.tls == .implicit, auth: u.auth,
                       username: u.username ?? "")
    }

    /// Connects to the active upstream's next address; looks the name up first
    /// (in a child, `AsyncResolver`) and comes back here when the answer is in.
    func connect(now: Int64) {
        if addresses.isEmpty || addressIndex >= addresses.count {
            if resolver == nil {
                resolver = AsyncResolver.start(host: upstream.host, port: upstream.port,
                                               timeoutNanoseconds: Self.resolveTimeoutNanoseconds, now: now)
                if resolver?.isFinished == false { log.debug("resolving", [("upstream", upstream.name)]) }
            }
            guard let r = resolver, let outcome = r.outcome else { return }
            resolver = nil
            switch outcome {
            case .success(let endpoints):
                addresses = endpoints
                addressIndex = 0
            case .failure(let text):
                upstreamFailed(.connection("cannot resolve \(upstream.host): \(text)"), now: now)
                return
            }
        }
        if case .failure(let e) = link.connect(addresses[addressIndex]) {
            connectFailed(e.text, now: now)
            return
        }
        input.clear(); output.clear()
        framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
        replies = ReplyParser()
        machine = SMTPSender(heloName: heloName, security: Self.security(upstream))
        streaming = false
        deadline = now + Self.connectTimeoutNanoseconds
        log.debug("connecting to upstream", [("upstream", upstream.name),
                                             ("address", Daemon.describe(addresses[addressIndex]))])
        if link.phase == .open { connected(now: now) }
    }

    /// TCP is up: implicit TLS starts its handshake now; otherwise the greeting
    /// is awaited.
    func connected(now: Int64) {
        addresses = []
        log.debug("connected to upstream", [("upstream", upstream.name)])
        if upstream.tls == .implicit {
            beginTLS(now: now)
        } else {
            deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
        }
    }

    /// Tries the upstream's next address, or gives up on this upstream.
    func connectFailed(_ reason: String, now: Int64) {
        closeSocket()
        addressIndex += 1
        if addressIndex < addresses.count {
            connect(now: now)
            return
        }
        addresses = []
        upstreamFailed(.connection(reason), now: now)
    }

    // MARK: TLS

    func beginTLS(now: Int64) {
        // RFC 3207 §5 (and CVE-2011-0411's lesson): nothing received before the
        // handshake may be taken as the upstream's reply after it.
        input.clear()
        framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
        replies = ReplyParser()
        if case .failure(let p) = link.startTLS(upstream) {
            upstreamFailed(.tls(p.text), now: now)
            return
        }
        deadline = now + Self.handshakeTimeoutNanoseconds
        continueHandshake(now: now)
    }

    func continueHandshake(now: Int64) {
        switch link.handshake() {
        case .pending:
            return
        case .failed(let report):
            let problem = CertificateProblem(report, host: upstream.host, wall: Clock.wall(),
                                             synchronised: Clock.synchronised())
            if problem.waitForClock { waitingForClock = true }
            upstreamFailed(.tls(problem.text), now: now)
        case .done:
            if let p = link.tls?.peer() {
                log.debug("TLS established", [("upstream", upstream.name), ("protocol", TLSChannel.field(p.protocol)),
                                              ("cipher", TLSChannel.field(p.cipher)),
                                              ("subject", TLSChannel.field(p.subject))])
            }
            deadline = now + Int64(machine.timeoutSeconds) * 1_000_000_000
            if upstream.tls == .starttls {
                perform(machine.tlsEstablished(), now: now)
            }
            // Records decrypted with the last handshake message may already hold
            // the greeting (implicit TLS): poll would not report them.
            if fd >= 0 { readable(now: now) }
        }
    }

    // MARK: AUTH

    /// Reads the secret for AUTH and hands it to the machine; the copies are
    /// wiped as soon as the response is built.
    func provideSecret(now: Int64) {
        switch upstream.secret {
        case .file(let path)?:
            switch SecretFile.read(path) {
            case .success(var secret):
                let actions = machine.provideSecret(secret)
                SASL.wipe(&secret)
                perform(actions, now: now)
            case .failure(let p):
                perform(machine.secretUnavailable(p.text), now: now)
            }
        case .command(let argv)?:
            // Run per connection that needs it, never per message; the loop goes
            // on meanwhile and `secretCommandDone` takes the answer.
            secretCommand?.wipe()
            secretCommand = ChildProcess.start(argv: argv, timeoutNanoseconds: Self.secretCommandTimeoutNanoseconds,
                                               now: now)
            if secretCommand?.isFinished == true { secretCommandDone(now: now) }
        case nil:
            perform(machine.secretUnavailable("no password_file or password_command is set"), now: now)
        }
    }

    /// `password_command` ended: its first line is the secret, or its failure
    /// is the AUTH failure.
    func secretCommandDone(now: Int64) {
        guard let command = secretCommand, let outcome = command.outcome else { return }
        secretCommand = nil
        defer { command.wipe() }
        guard fd >= 0 else { return }
        switch outcome {
        case .success:
            var secret = command.withOutput { SASL.firstLine($0) }
            if secret.isEmpty {
                perform(machine.secretUnavailable("password_command \(command.program) printed nothing"), now: now)
                return
            }
            let actions = machine.provideSecret(secret)
            SASL.wipe(&secret)
            perform(actions, now: now)
        case .failure(let why):
            perform(machine.secretUnavailable("password_command \(command.program) failed: \(why)"), now: now)
        }
    }

    // MARK: helper processes

    /// The descriptors of the name lookup and of `password_command`, for the
    /// loop to poll (POLLIN); `helperReady` takes their events.
    public func helperPollEntries() -> [(fd: Int32, events: Int16)] {
        (resolver?.pollEntries() ?? []) + (secretCommand?.pollEntries() ?? [])
    }

    public func helperReady(fd: Int32, now: Int64) {
        if let r = resolver, r.fd == fd {
            r.readable(now: now)
            if r.isFinished { connect(now: now) }
        } else if let c = secretCommand, c.pollEntries().contains(where: { $0.fd == fd }) {
            c.readable(fd: fd, now: now)
            if c.isFinished { secretCommandDone(now: now) }
        }
    }

    /// Deadlines and reaping of the helper processes.
    func helperTick(now: Int64) {
        if let r = resolver {
            r.tick(now: now)
            if r.isFinished { connect(now: now) }
        }
        if let c = secretCommand {
            c.tick(now: now)
            if c.isFinished { secretCommandDone(now: now) }
        }
        if ChildReaper.adoptedCount > 0 { _ = ChildReaper.reapAdopted() }
    }

    func cancelHelpers(now: Int64) {
        if let r = resolver { _ = r.cancel(now: now) }
        resolver = nil
        if let c = secretCommand {
            _ = c.cancel(now: now)
            c.wipe()
        }
        secretCommand = nil
    }

    // MARK: failures

    /// The connection to the active upstream failed before or while sending:
    /// log why, then try the next upstream at once, or back off when this was
    /// the last one.
    func upstreamFailed(_ failure: SenderFailure, now: Int64) {
        closeSocket()
        releaseCurrent(now: now)
        let text = failure.description
        let failed = upstream
        if active < statuses.count { statuses[active].lastError = text }
        let last = active + 1 >= upstreams.count
        var fields: [(String, String)] = [("upstream", failed.name), ("reply", text), ("attempt", "\(upstreamFailures + 1)")]
        var message: String
        var priority = Priority.warning
        switch failure {
        case .auth:
            let secret: String
            switch failed.secret {
            case .command?: secret = "password_command"
            default: secret = "password_file"
            }
            message = "cannot authenticate to the upstream: check username and \(secret) in the [upstream] at line \(failed.line); the mail stays queued"
            priority = .error
        case .tls:
            message = "TLS with the upstream failed; nothing was sent"
            priority = .error
        default:
            message = "upstream unavailable"
        }
        if last {
            active = 0
            addresses = []
            upstreamFailures += 1
            lastError = upstreams.count == 1 ? text : "\(failed.name): \(text)"
            let delay = policy.delayNanoseconds(afterAttempt: upstreamFailures, random: Clock.random())
            upstreamRetryAt = now + delay
            var due = 0
            for m in spool.queue.messages where m.nextAttempt <= now { due += 1 }
            fields += [("queued", "\(spool.queue.count)"), ("due", "\(due)"), ("retry_in", "\(delay / 1_000_000_000)s")]
            message += upstreams.count == 1 ? "; will retry" : "; no upstream left, will retry"
        } else {
            active += 1
            addresses = []
            fields.append(("next_upstream", upstream.name))
            message += "; trying the next upstream"
        }
        log.event(.deferred, priority, message, fields)
    }
}
