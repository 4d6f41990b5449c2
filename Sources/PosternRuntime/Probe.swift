import CLibc
import PosternCore

/// `postern probe` (issue 8 item 8): connects to each configured upstream as the
/// daemon would — the same lookup in a child, the same transport, TLS checks,
/// AUTH and sender state machine — and says what happened at every step, so a
/// person setting up a board sees where it goes wrong. Nothing is sent unless a
/// test address is given; then one short message goes through each upstream.
///
/// Unlike the daemon this is a command that runs to its end, so it waits in
/// poll(2) on one descriptor at a time.
public final class Probe {
    let config: Config
    let heloName: String
    let sendTo: Mailbox?
    let print: (String) -> Void
    let link = UpstreamTransport(kernel: PosixKernel())
    let input = ByteBuffer(capacity: BufferSizes.senderInput)
    let output = ByteBuffer(capacity: BufferSizes.senderOutput)

    /// Every step of a probe has this long.
    static let stepTimeoutNanoseconds: Int64 = 30_000_000_000

    public init(config: Config, heloName: String, sendTo: Mailbox?, print: @escaping (String) -> Void) {
        self.config = config
        self.heloName = heloName
        self.sendTo = sendTo
        self.print = print
    }

    /// Probes every upstream in order; true when each one would take mail (and
    /// took the test message, when one was asked for).
    public func run() -> Bool {
        var all = true
        for (i, u) in config.upstreams.enumerated() {
            if i > 0 { print("") }
            let role = i == 0 ? "primary" : "fallback \(i)"
            print("[upstream] \(u.name) (\(role), line \(u.line)): tls \(u.tls.name), auth \(u.auth.name)")
            let ok = probe(u)
            link.close()
            print(ok ? "=> \(u.name) would take mail" : "=> \(u.name) would NOT take mail")
            all = all && ok
        }
        return all
    }

    func step(_ text: String) { print("  " + text) }

    // MARK: one upstream

    func probe(_ u: UpstreamConfig) -> Bool {
        for w in UpstreamChecks.warnings(Config.with(u)) { step("warning: " + w) }
        guard let endpoints = resolve(u) else { return false }
        guard connect(u, endpoints) else { return false }
        if u.tls == .implicit && !handshake(u) { return false }
        input.clear()
        output.clear()
        var framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
        var replies = ReplyParser()
        var machine = SMTPSender(heloName: heloName, security: Delivery.security(u))
        var verdict: Bool? = nil
        var sentText = false
        /// The test message, made once when it is started.
        var testText: [UInt8] = []
        var pending: [SMTPSender.Action] = []
        var deadline = Clock.monotonic() + Self.stepTimeoutNanoseconds

        while verdict == nil || !pending.isEmpty {
            // Act on what the machine asked for.
            while !pending.isEmpty {
                let action = pending.removeFirst()
                switch action {
                case .send(let bytes):
                    output.append(bytes)
                    for line in Self.lines(bytes) { step("> " + line) }
                case .sendSecret(let bytes):
                    output.append(bytes)
                    step("> AUTH response (not shown)")
                case .startTLS:
                    guard flush() else { return false }
                    input.clear()
                    framer = LineFramer(maxLineLength: BufferSizes.senderInput, strict: false)
                    replies = ReplyParser()
                    guard handshake(u) else { return false }
                    pending += machine.tlsEstablished()
                case .needSecret:
                    switch secret(u) {
                    case .success(var s):
                        pending += machine.provideSecret(s)
                        SASL.wipe(&s)
                    case .failure(let p):
                        pending += machine.secretUnavailable(p.text)
                    }
                case .ready:
                    if machine.authenticatedWith != nil && !sentText {
                        step("authenticated with AUTH \(machine.authenticatedWith?.name.uppercasedASCII ?? "")")
                    }
                    if let to = sendTo, !sentText {
                        sentText = true
                        let from = u.envelopeFrom ?? Mailbox.parse(Array("postern@\(heloName)".utf8)[...], allowNull: false)
                            ?? Mailbox.null
                        testText = testMessage(u, to: to, from: from)
                        pending += machine.start(message: OutboundMessage(from: from, recipients: [to],
                                                                          size: testText.count, eightBit: false))
                    } else {
                        if verdict == nil { verdict = true }
                        pending += machine.finish()
                    }
                case .sendText:
                    var encoder = DataEncoder()
                    let text = testText
                    var wire = [UInt8](repeating: 0, count: text.count * 4 + 8)
                    let n = text.withUnsafeBytes { t in wire.withUnsafeMutableBytes { encoder.encode(t, into: $0).produced } }
                    output.append(Array(wire[0..<n]) + encoder.terminator())
                    step("> (test message, \(text.count) bytes)")
                    pending += machine.textSent()
                case .recipient(_, let outcome, let reply):
                    let word = outcome == .delivered ? "accepted" : outcome == .failed ? "REFUSED" : "deferred"
                    step("test message to \(sendTo?.description ?? ""): \(word) (\(reply))")
                    if outcome != .delivered { verdict = false }
                case .messageDone:
                    if verdict == nil { verdict = true }
                case .close(let failure):
                    if let f = failure {
                        step("FAILED: \(f)")
                        verdict = false
                    }
                    _ = flush()
                    return verdict ?? false
                }
            }
            guard flush() else { return false }
            if verdict != nil && machine.isClosed { break }
            // Wait for the next reply.
            switch readLine(&framer, &replies, deadline: deadline) {
            case .success(let reply):
                for (i, line) in reply.lines.enumerated() {
                    step("< \(reply.code)\(i + 1 < reply.lines.count ? "-" : " ")\(line)")
                }
                deadline = Clock.monotonic() + Self.stepTimeoutNanoseconds
                pending += machine.receive(reply)
            case .failure(let p):
                if machine.stateName == "sentQUIT" { return verdict ?? false }
                step("FAILED: \(p.text)")
                return false
            }
        }
        return verdict ?? false
    }

    // MARK: steps

    func resolve(_ u: UpstreamConfig) -> [cl_ip_endpoint]? {
        let r = AsyncResolver.start(host: u.host, port: u.port, timeoutNanoseconds: Delivery.resolveTimeoutNanoseconds,
                                    now: Clock.monotonic())
        while !r.isFinished {
            var fds = r.pollEntries().map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
            let wait = max(1, min(100, ((r.nextDeadline() ?? Clock.monotonic()) - Clock.monotonic()) / 1_000_000))
            _ = Sys.poll(&fds, timeoutMilliseconds: Int32(clamping: wait))
            r.readable(now: Clock.monotonic())
            r.tick(now: Clock.monotonic())
        }
        switch r.outcome {
        case .success(let endpoints)?:
            if IPAddress(u.host) == nil {
                step("resolved \(u.host): " + endpoints.map { Daemon.describe($0) }.joined(separator: ", "))
            }
            return endpoints
        case .failure(let text)?:
            step("FAILED: cannot resolve \(u.host): \(text)")
            return nil
        case nil:
            return nil
        }
    }

    func connect(_ u: UpstreamConfig, _ endpoints: [cl_ip_endpoint]) -> Bool {
        for ep in endpoints {
            let started = Clock.monotonic()
            if case .failure(let e) = link.connect(ep) {
                step("connect \(Daemon.describe(ep)): \(e.text)")
                continue
            }
            if link.phase == .connecting {
                guard wait(Int16(POLLOUT), until: started + Delivery.connectTimeoutNanoseconds) else {
                    step("connect \(Daemon.describe(ep)): timed out")
                    link.close()
                    continue
                }
                let err = link.finishConnect()
                if err != 0 {
                    step("connect \(Daemon.describe(ep)): \(Errno(err, "connect").text)")
                    link.close()
                    continue
                }
            }
            step("connected to \(Daemon.describe(ep)) in \((Clock.monotonic() - started) / 1_000_000) ms")
            return true
        }
        step("FAILED: no address of \(u.host) accepted a connection")
        return false
    }

    /// The TLS handshake, then what the certificate says and whether it passed.
    func handshake(_ u: UpstreamConfig) -> Bool {
        if case .failure(let p) = link.startTLS(u) {
            step("FAILED: TLS: \(p.text)")
            return false
        }
        let deadline = Clock.monotonic() + Delivery.handshakeTimeoutNanoseconds
        while true {
            switch link.handshake() {
            case .done:
                if let p = link.tls?.peer() {
                    step("TLS \(TLSChannel.field(p.protocol)), \(TLSChannel.field(p.cipher))")
                    certificate(TLSChannel.field(p.subject), TLSChannel.field(p.issuer), p.not_before, p.not_after,
                                CertificateProblem.fingerprintText(TLSChannel.bytes(p.spki_sha256)))
                }
                if !u.verify {
                    step("certificate NOT checked (verify = no)")
                } else if u.fingerprint != nil {
                    step("certificate accepted: its public key matches fingerprint")
                } else {
                    step("certificate verified: chain to a trusted CA, valid now, issued for \(u.host)")
                }
                return true
            case .pending:
                guard wait(link.pollEvents(outputPending: false), until: deadline) else {
                    step("FAILED: TLS handshake timed out")
                    return false
                }
            case .failed(let report):
                if let s = report.subject {
                    certificate(s, report.issuer ?? "?", report.notBefore ?? 0, report.notAfter ?? 0,
                                report.fingerprint ?? "?")
                }
                let problem = CertificateProblem(report, host: u.host, wall: Clock.wall(), synchronised: Clock.synchronised())
                step("FAILED: TLS: \(problem.text)")
                return false
            }
        }
    }

    func certificate(_ subject: String, _ issuer: String, _ notBefore: Int64, _ notAfter: Int64, _ pin: String) {
        step("certificate: \(subject)")
        step("  issued by \(issuer)")
        step("  valid from \(CertificateProblem.date(notBefore)) until \(CertificateProblem.date(notAfter))")
        step("  public key \(pin)   (for fingerprint =)")
    }

    func secret(_ u: UpstreamConfig) -> Result<[UInt8], Problem> {
        switch u.secret {
        case .file(let path)?:
            step("reading password_file \(path)")
            return SecretFile.read(path)
        case .command(let argv)?:
            step("running password_command \(argv.first ?? "")")
            let c = ChildProcess.start(argv: argv, timeoutNanoseconds: Delivery.secretCommandTimeoutNanoseconds,
                                       now: Clock.monotonic())
            while !c.isFinished {
                var fds = c.pollEntries().map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
                let wait = max(1, min(100, ((c.nextDeadline() ?? Clock.monotonic()) - Clock.monotonic()) / 1_000_000))
                _ = Sys.poll(&fds, timeoutMilliseconds: Int32(clamping: wait))
                for f in fds where f.revents != 0 { c.readable(fd: f.fd, now: Clock.monotonic()) }
                c.tick(now: Clock.monotonic())
            }
            defer { c.wipe() }
            switch c.outcome {
            case .success?:
                let s = c.withOutput { SASL.firstLine($0) }
                return s.isEmpty ? .failure("password_command printed nothing") : .success(s)
            case .failure(let why)?:
                return .failure(Problem("password_command failed: \(why)"))
            case nil:
                return .failure("password_command did not finish")
            }
        case nil:
            return .failure("no password_file or password_command is set")
        }
    }

    func testMessage(_ u: UpstreamConfig, to: Mailbox, from: Mailbox) -> [UInt8] {
        let text = "From: \(from.isNull ? "postern@\(heloName)" : from.text)\r\nTo: \(to.text)\r\n"
            + "Subject: Postern probe from \(heloName) through \(u.name)\r\nDate: \(Clock.rfc5322Date())\r\n"
            + "Message-ID: <probe.\(ASCII.hex(Clock.random(), width: 16))@\(heloName)>\r\n"
            + "Auto-Submitted: auto-generated\r\n\r\n"
            + "This test message was sent by `postern probe` on \(heloName) through the upstream \(u.name).\r\n"
        return Array(text.utf8)
    }

    // MARK: I/O

    /// Polls the connection for `events` until `deadline`; false on timeout.
    func wait(_ events: Int16, until deadline: Int64) -> Bool {
        while true {
            let left = deadline - Clock.monotonic()
            if left <= 0 { return false }
            var fds = [pollfd(fd: link.fd, events: events, revents: 0)]
            if case .success(let n) = Sys.poll(&fds, timeoutMilliseconds: Int32(clamping: left / 1_000_000 + 1)), n > 0 {
                return true
            }
        }
    }

    /// Sends everything in the output; false (said) when the connection failed.
    func flush() -> Bool {
        let deadline = Clock.monotonic() + Self.stepTimeoutNanoseconds
        while !output.isEmpty {
            switch link.send(output.readable) {
            case .success(.done(let n)): output.consume(n)
            case .success(.wouldBlock), .success(.eof):
                guard wait(link.pollEvents(outputPending: true), until: deadline) else {
                    step("FAILED: the upstream does not read what is sent")
                    return false
                }
            case .failure(let p):
                step("FAILED: \(p.text)")
                return false
            }
        }
        output.wipe()
        return true
    }

    func readLine(_ framer: inout LineFramer, _ replies: inout ReplyParser, deadline: Int64) -> Result<Reply, Problem> {
        while true {
            let (frame, consumed) = framer.next(in: input.readable)
            switch frame {
            case .line(let range):
                let line = Array(input.readable[range])
                input.consume(consumed)
                switch replies.feed(line[...]) {
                case .success(let r?): return .success(r)
                case .success(nil): continue
                case .failure(.malformed(let text)): return .failure(Problem("malformed reply: \(text)"))
                }
            case .tooLong, .bareLineEnding:
                return .failure("reply line too long")
            case .needMore:
                input.consume(consumed)
            }
            input.compact()
            switch link.read(input.writable) {
            case .success(.done(let n)): input.didWrite(n)
            case .success(.eof): return .failure("the upstream closed the connection")
            case .success(.wouldBlock):
                guard wait(link.pollEvents(outputPending: false), until: deadline) else {
                    return .failure("no reply within \(Self.stepTimeoutNanoseconds / 1_000_000_000)s")
                }
            case .failure(let p): return .failure(p)
            }
        }
    }

    /// The command lines in `bytes` as shown: "EHLO board", "MAIL FROM:<…>".
    static func lines(_ bytes: [UInt8]) -> [String] {
        bytes.split(separator: ASCII.lf).map { line in
            ASCII.printable(line.last == ASCII.cr ? line.dropLast() : line, limit: 200)
        }
    }
}

extension Config {
    /// A configuration holding only `u`, for the per-upstream checks.
    static func with(_ u: UpstreamConfig) -> Config {
        var c = Config()
        c.upstreams = [u]
        return c
    }
}
