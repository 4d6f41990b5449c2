import CLibc
import PosternCore

/// The daemon: one thread, one poll(2) loop (DESIGN.md principle 1). It owns the
/// listeners, the fixed pool of receiver connections, the delivery to the
/// upstream, the spool, the control socket and the signalfd, and runs them until
/// SIGTERM or SIGINT; SIGHUP reloads the configuration (DaemonReload.swift).
///
/// Each iteration: poll; handle signals, new connections, client and upstream I/O;
/// then the group commit (one fdatasync for everything that ended in this
/// iteration) and the 250s it allows; then timers, the delivery schedule, and
/// what systemd is told (status, watchdog).
public final class Daemon {
    var config: Config
    let configPath: String
    let log: Log
    var hostname: String
    let spool: Spool
    /// The spool's files; it runs the group commit's syncs while the loop goes
    /// on, through io_uring or the helpers (`[spool] sync`).
    let storage = PosixStorage()
    /// Two, so that a commit arriving while one sync runs has its own started
    /// at once; used where io_uring is not (`startSyncs`).
    let syncHelpers: [SyncHelper]
    let delivery: Delivery
    var control: ControlServer
    let service: ServiceManager
    let started = Clock.monotonic()
    /// Every socket call of the loop goes through it (`Kernel`).
    let kernel: any Kernel
    var context: ReceiverContext? = nil
    /// Checks AUTH passwords in a child (`PasswordChecker`); started once
    /// `auth_users` is configured.
    var passwordChecker: PasswordChecker? = nil
    var pool: ReceiverPool? = nil
    /// `local`: the submission socket of `postern sendmail` (AF_UNIX); `tls`: a
    /// `listen_tls` socket, where TLS starts with the first byte.
    typealias Listener = (fd: Int32, endpoint: Endpoint?, local: Bool, tls: Bool)
    var listeners: [Listener] = []
    /// The submission socket's path when the daemon created it (removed at exit).
    var ownedLocalSocket: String? = nil
    var mailDrop: MailDrop? = nil
    /// The listeners came from systemd (LISTEN_FDS): `[receiver] listen` is unused.
    var socketActivated = false
    var signalFD: Int32 = -1
    var stopping = false
    var stopDeadline: Int64 = 0
    var pollFDs: [pollfd] = []
    /// Owner of each entry of `pollFDs`.
    enum Owner { case signals, listener(Int), receiver(Int), delivery, deliveryHelper, control(Int), mailDrop, spoolSync, spoolUnlink, passwordChecker }
    var owners: [Owner] = []

    /// How long a stopping daemon waits for the upstream's reply to a message it
    /// has finished sending, to avoid sending it twice after the restart.
    static let stopGraceNanoseconds: Int64 = 5_000_000_000

    public init(config: Config, configPath: String, log: Log, kernel: any Kernel = PosixKernel()) {
        self.config = config
        self.kernel = kernel
        self.configPath = configPath
        self.log = log
        service = ServiceManager(log: log, now: Clock.monotonic())
        hostname = config.receiver.hostname ?? Sys.hostname()
        syncHelpers = [SyncHelper(log: log), SyncHelper(log: log), SyncHelper(log: log), SyncHelper(log: log)]
        spool = Spool(dir: config.spool.dir, segmentSize: config.spool.segmentSize, maxSize: config.spool.maxBytes, log: log,
                      storage: storage, expiry: ExpiryPolicy(maxAge: config.spool.maxAge))
        delivery = Delivery(upstreams: config.upstreams, heloName: hostname, policy: RetryPolicy(config.retry),
                            expiry: ExpiryPolicy(maxAge: config.spool.maxAge), spool: spool, log: log,
                            kernel: kernel, postmaster: config.notify.postmaster)
        delivery.aliases = config.aliases
        control = ControlServer(path: config.control.socket, spool: spool, delivery: delivery, log: log,
                                facts: DaemonFacts(startedMonotonic: started, activeConnections: 0,
                                                   maxConnections: config.receiver.maxConnections),
                                kernel: kernel)
    }

    /// Starts everything; returns an error message when the daemon cannot run.
    public func start() -> String? {
        signalFD = cl_signalfd_open()
        if signalFD < 0 { return "signalfd: \(Errno.current("signalfd").text)" }

        // First, while the daemon is small (a helper is a fork of it).
        startSyncs()
        if config.receiver.authUsers != nil { startPasswordChecker(config.receiver) }
        let started = Clock.monotonic()
        let clock = Clock.reading()
        if !clock.synchronised {
            log.notice("the system clock is not synchronised: message ages count from now, and nothing expires until it is")
        }
        switch spool.open(clock: clock) {
        case .failure(let e):
            return "cannot open the spool \(config.spool.dir): \(e)"
        case .success(let report):
            for i in report.incomplete {
                log.error("a committed message is incomplete in the spool (a segment is missing or damaged); it cannot be sent",
                          [("message", i)])
            }
            for t in report.tornTails {
                log.warning("spool scan stopped early in a segment (torn tail of an unacknowledged write, or damage)",
                            [("where", t)])
            }
            let ms = (Clock.monotonic() - started) / 1_000_000
            log.info("spool recovered", [("dir", config.spool.dir), ("segments", "\(report.segments)"),
                                         ("records", "\(report.records)"), ("queued", "\(report.queued)"),
                                         ("dropped_unacknowledged", "\(report.dropped)"), ("ms", "\(ms)")],
                     id: MessageIDs.recovered)
        }

        logUpstreamChecks(config)
        if let problem = openListeners() { return problem }
        if let problem = control.open() { return problem }
        log.info("control socket open", [("path", config.control.socket)])

        let context = ReceiverContext(
            settings: receiverSettings(config), allowClients: config.receiver.allowClients,
            timeoutSeconds: config.receiver.timeout, spool: spool, log: log, kernel: kernel)
        context.passwordChecker = passwordChecker
        switch loadReceiverTLS(config.receiver) {
        case .success(let server): context.tlsServer = server
        case .failure(let p):
            // The board's own alerts must still flow: the receiver runs without
            // TLS (no STARTTLS; listen_tls clients are closed) until a reload
            // loads a working certificate.
            log.error("receiver TLS unavailable: STARTTLS is not offered and listen_tls connections are closed", [("reason", p.text)])
        }
        context.settings.tlsAvailable = context.tlsServer != nil
        switch loadReceiverAuth(config.receiver) {
        case .success(let users): context.authUsers = users
        case .failure(let p):
            // As for TLS: the board's own mail still flows; clients outside
            // allow_clients are refused until a reload loads the file.
            log.error("receiver AUTH unavailable: AUTH is not offered, and clients outside allow_clients cannot relay",
                      [("reason", p.text)])
        }
        context.settings.authAvailable = context.authUsers != nil
        self.context = context
        // The fixed pool: every connection's buffers are allocated here, once.
        let receivers = ReceiverPool(context: context, maxConnections: config.receiver.maxConnections, hostname: hostname)
        receivers.apply(config.receiver) // the cap per client and the greeting pause (issue 12 item 5)
        pool = receivers
        spool.commitsMayFollow = { receivers.clientMayCommit }
        let drop = MailDrop(path: config.local.dropDirectory(spoolDir: config.spool.dir), socketPath: localSocketPath, log: log)
        drop.open(now: Clock.monotonic())
        mailDrop = drop
        log.notice("postern started", [("hostname", hostname), ("upstream", config.upstreams.map { $0.name }.joined(separator: ", ")),
                                       ("queued", "\(spool.queue.count)")], id: MessageIDs.started)
        // READY=1 only now: the spool is recovered and every listener is open.
        service.ready(status: statusText(now: Clock.monotonic()), now: Clock.monotonic())
        return nil
    }

    /// verify = no, AUTH in clear and unusable password files are said at every
    /// start and reload; mail is still taken in and queued meanwhile.
    func logUpstreamChecks(_ c: Config) {
        for w in UpstreamChecks.warnings(c) { log.warning(w) }
        for p in UpstreamChecks.problems(c, loadingTLS: false) { log.error(p + "; mail for it stays queued") }
    }

    func receiverSettings(_ c: Config) -> ReceiverSettings {
        var s = ReceiverSettings(hostname: c.receiver.hostname ?? Sys.hostname(), maxMessageSize: c.receiver.maxMessageSize,
                                 maxRecipients: c.receiver.maxRecipients, recipients: c.receiver.allowRecipients)
        s.aliases = c.aliases
        s.tlsAvailable = c.receiver.tlsEnabled && context?.tlsServer != nil
        s.requireTLS = c.receiver.requireTLS
        s.authAvailable = c.receiver.authUsers != nil && context?.authUsers != nil
        return s
    }

    /// The listening sockets: those systemd passed (socket activation, sd_listen_fds(3)),
    /// else `[receiver] listen`.
    func openListeners() -> String? {
        let passed = Systemd.listenFDs()
        if !passed.isEmpty {
            for (fd, name) in passed {
                if cl_is_listening_unix(fd) != 0 {
                    // postern.socket's ListenStream=/run/postern/submit.
                    _ = cl_set_nonblocking(fd)
                    listeners.append((fd, nil, true, false))
                    log.info("listening", [("socket", Self.unixPath(fd) ?? "?"), ("from", "systemd"), ("name", name),
                                           ("for", "postern sendmail")])
                    continue
                }
                guard cl_is_listening_tcp(fd) != 0 else {
                    return "the socket systemd passed as '\(name)' (fd \(fd)) is not a listening TCP or unix socket"
                }
                _ = cl_set_nonblocking(fd)
                // FileDescriptorName=smtps (or submissions, RFC 8314 §7.3): implicit TLS.
                let tls = name == "smtps" || name == "submissions"
                listeners.append((fd, nil, false, tls))
                var bound = cl_ip_endpoint()
                _ = cl_local_endpoint(fd, &bound)
                log.info("listening", [("address", Self.describe(bound)), ("from", "systemd"), ("name", name)]
                         + (tls ? [("tls", "implicit")] : []))
            }
            socketActivated = true
            log.info("socket-activated: [receiver] listen is not used", [("sockets", "\(passed.count)")])
            return openLocalListener()
        }
        for (endpoint, tls) in Self.wantedListeners(config.receiver) {
            switch Self.listen(endpoint) {
            case .success(let fd):
                listeners.append((fd, endpoint, false, tls))
                var bound = cl_ip_endpoint()
                _ = cl_local_endpoint(fd, &bound)
                log.info("listening", [("address", Self.describe(bound))] + (tls ? [("tls", "implicit")] : []))
            case .failure(let e):
                return "cannot listen on \(endpoint): \(e.text)"
            }
        }
        return openLocalListener()
    }

    /// `[receiver] listen`, then `listen_tls` (implicit TLS).
    static func wantedListeners(_ r: ReceiverConfig) -> [(endpoint: Endpoint, tls: Bool)] {
        r.listen.map { ($0, false) } + r.listenTLS.map { ($0, true) }
    }

    /// The server TLS context of `[receiver] tls_cert`/`tls_key`, nil without
    /// them; what to say about it is logged here (the certificate, an old
    /// `tls_min_version`).
    func loadReceiverTLS(_ r: ReceiverConfig) -> Result<TLSServerContext?, Problem> {
        guard r.tlsEnabled, let cert = r.tlsCert, let key = r.tlsKey else { return .success(nil) }
        switch TLSServerContext.make(certFile: cert, keyFile: key, minVersion: r.tlsMinVersion) {
        case .failure(let p):
            return .failure(p)
        case .success(let server):
            log.info("receiver TLS ready", [("cert", cert), ("subject", server.subject),
                                            ("not_after", CertificateProblem.date(server.notAfter)),
                                            ("tls_min_version", r.tlsMinVersion.text)])
            if server.notAfter > 0 && server.notAfter < Clock.wall() {
                log.warning("the receiver's TLS certificate has expired; clients that check it will refuse it",
                            [("cert", cert), ("not_after", CertificateProblem.date(server.notAfter))])
            }
            if r.tlsMinVersion.rawValue < TLSVersion.v1_2.rawValue {
                log.warning("tls_min_version = \(r.tlsMinVersion.text) lets clients use TLS 1.0 and 1.1, retired by RFC 8996; keep it only for devices that speak nothing newer",
                            [("tls_min_version", r.tlsMinVersion.text)])
            }
            return .success(server)
        }
    }

    /// `[receiver] auth_users` as read now; nil without it. What it means is
    /// logged here, and that AUTH cannot reach LAN clients without TLS.
    func loadReceiverAuth(_ r: ReceiverConfig) -> Result<AuthUsers?, Problem> {
        guard let path = r.authUsers else { return .success(nil) }
        switch AuthUsersFile.load(path) {
        case .failure(let p):
            return .failure(p)
        case .success(let users):
            log.info("receiver AUTH ready", [("auth_users", path), ("users", "\(users.count)")])
            if !r.tlsEnabled {
                log.warning("auth_users without tls_cert: AUTH is offered on loopback only, so clients outside allow_clients cannot relay",
                            [("auth_users", path)])
            }
            return .success(users)
        }
    }

    /// Forks the password checker (while the daemon is small, at start; or at
    /// the reload that first sets `auth_users`), and sizes its queue for `r`'s
    /// connections (at every reload too).
    func startPasswordChecker(_ r: ReceiverConfig) {
        if passwordChecker == nil {
            let checker = PasswordChecker(log: log)
            checker.start()
            passwordChecker = checker
            context?.passwordChecker = checker
        }
        // One check per connection at most: none is ever answered busy.
        passwordChecker?.queueLimit = max(8, r.maxConnections)
    }

    /// The checker's verdicts, to the connections that wait for them.
    func collectPasswordChecks(now: Int64) {
        guard let checker = passwordChecker else { return }
        let results = checker.collect(now: now)
        if !results.isEmpty { pool?.authChecked(results, now: now) }
    }

    /// The local submission socket (`[local] socket`), unless systemd passed one:
    /// mode 0666, since every local user may submit (cron runs users' jobs as
    /// them); the kernel tells who connected.
    func openLocalListener() -> String? {
        if listeners.contains(where: { $0.local }) { return nil }
        let path = config.local.socket
        if let slash = path.utf8.lastIndex(of: 47), slash != path.utf8.startIndex {
            let parent = String(decoding: path.utf8[..<slash], as: UTF8.self)
            if case .failure(let e) = Sys.mkdir(parent, 0o755) { return "local submission socket: \(e)" }
        }
        // A socket file left by a daemon that died is removed; one that answers
        // belongs to a running postern.
        let probe = cl_connect_unix(path)
        if probe >= 0 {
            Sys.close(probe)
            return "local submission socket \(path) is in use by another running postern"
        }
        _ = Sys.unlink(path)
        let fd = cl_listen_unix_mode(path, 128, 0o666)
        if fd < 0 { return "cannot listen on the local submission socket \(path): \(Errno.current("bind").text)" }
        listeners.append((fd, nil, true, false))
        ownedLocalSocket = path
        log.info("listening", [("socket", path), ("for", "postern sendmail")])
        return nil
    }

    /// The path of the local submission socket in use (passed or created).
    var localSocketPath: String {
        if let l = listeners.first(where: { $0.local }), let p = Self.unixPath(l.fd) { return p }
        return config.local.socket
    }

    static func unixPath(_ fd: Int32) -> String? {
        var buf = [CChar](repeating: 0, count: 128)
        let n = buf.withUnsafeMutableBufferPointer { cl_unix_socket_path(fd, $0.baseAddress, $0.count) }
        guard n > 0, n < buf.count else { return nil }
        return String(decoding: buf[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func listen(_ endpoint: Endpoint) -> Result<Int32, Errno> {
        var ep = cEndpoint(endpoint)
        let fd = cl_listen_tcp(&ep, 128)
        return fd >= 0 ? .success(fd) : .failure(Errno.current("listen"))
    }

    static func describe(_ ep: cl_ip_endpoint) -> String {
        let bytes = withUnsafeBytes(of: ep.bytes) { Array($0.prefix(ep.family == 6 ? 16 : 4)) }
        guard let a = IPAddress(bytes: bytes) else { return "?" }
        return Endpoint(address: a, port: Int(ep.port)).description
    }

    /// One line for systemd's STATUS= (and `systemctl status`).
    func statusText(now: Int64) -> String {
        let wall = Clock.wall()
        var s = "\(spool.queue.count) queued"
        if let oldest = spool.queue.messages.first {
            s += " (oldest \(QueueReport.age(wall - oldest.arrival)))"
        }
        s += "; last delivery " + (delivery.lastDeliveryWall.map { Clock.timeOfDay($0) } ?? "none")
        s += "; upstream " + delivery.upstreamState(now: now)
        if !spool.acceptsMail(now: now) { s += "; SPOOL FULL" }
        return s
    }

    static func cEndpoint(_ e: Endpoint) -> cl_ip_endpoint {
        var ep = cl_ip_endpoint()
        ep.family = e.address.isV4 ? 4 : 6
        ep.port = Int32(e.port)
        withUnsafeMutableBytes(of: &ep.bytes) { b in for (i, v) in e.address.bytes.enumerated() { b[i] = v } }
        return ep
    }

    /// Runs the loop until stopped. Returns the process exit code.
    public func run() -> Int32 {
        while true {
            let now = Clock.monotonic()
            if stopping && shutdownComplete(now: now) { break }
            buildPollSet()
            let timeout = pollTimeout(now: now)
            if case .failure(let e) = kernel.poll(&pollFDs, timeoutMilliseconds: timeout) {
                log.error("poll failed", [("error", e.description)])
                return 1
            }
            let after = Clock.monotonic()
            dispatch(now: after)
            groupCommit(now: after)
            timers(now: after)
            delivery.tick(now: after, stopping: stopping)
            if !stopping { spool.compactIfNeeded(now: after) }
            // Outcome records or compaction copies written since the group commit
            // above are synced in this same iteration.
            if spool.groupCommitDue { groupCommit(now: after) }
            let end = Clock.monotonic()
            if !stopping { service.status(now: end) { statusText(now: end) } }
            service.afterIteration(now: end, work: end - after, spoolFailure: spool.failure(now: end))
        }
        finish()
        return 0
    }

    func buildPollSet() {
        pollFDs.removeAll(keepingCapacity: true)
        owners.removeAll(keepingCapacity: true)
        pollFDs.append(pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0))
        owners.append(.signals)
        if spool.syncPollFD >= 0 {
            pollFDs.append(pollfd(fd: spool.syncPollFD, events: Int16(POLLIN), revents: 0))
            owners.append(.spoolSync)
        }
        if spool.unlinkPollFD >= 0 {
            pollFDs.append(pollfd(fd: spool.unlinkPollFD, events: Int16(POLLIN), revents: 0))
            owners.append(.spoolUnlink)
        }
        if !stopping {
            for (i, l) in listeners.enumerated() {
                pollFDs.append(pollfd(fd: l.fd, events: Int16(POLLIN), revents: 0))
                owners.append(.listener(i))
            }
        }
        pool?.pollEntries { index, fd, events in
            pollFDs.append(pollfd(fd: fd, events: events, revents: 0))
            owners.append(.receiver(index))
        }
        if delivery.fd >= 0 {
            pollFDs.append(pollfd(fd: delivery.fd, events: delivery.pollEvents, revents: 0))
            owners.append(.delivery)
        }
        if let checker = passwordChecker, checker.pollFD >= 0 {
            pollFDs.append(pollfd(fd: checker.pollFD, events: Int16(POLLIN), revents: 0))
            owners.append(.passwordChecker)
        }
        for entry in delivery.helperPollEntries() {
            pollFDs.append(pollfd(fd: entry.fd, events: entry.events, revents: 0))
            owners.append(.deliveryHelper)
        }
        control.facts.activeConnections = pool?.activeCount ?? 0
        for entry in control.pollSet() {
            pollFDs.append(pollfd(fd: entry.fd, events: entry.events, revents: 0))
            owners.append(.control(entry.index))
        }
        if !stopping {
            for entry in mailDrop?.pollEntries() ?? [] {
                pollFDs.append(pollfd(fd: entry.fd, events: entry.events, revents: 0))
                owners.append(.mailDrop)
            }
        }
    }

    /// Milliseconds until the earliest timer; 0 when work is pending; -1 for none.
    /// An idle daemon sleeps until its next retry, never on a fixed tick.
    func pollTimeout(now: Int64) -> Int32 {
        if spool.canStartGroupCommit { return 0 }
        var next: Int64? = nil
        func earliest(_ t: Int64) { if next == nil || t < next! { next = t } }
        if let t = spool.groupCommitWakeup { earliest(t) }
        if let t = pool?.nextDeadline() { earliest(t) }
        if let t = delivery.nextWakeup(now: now) { earliest(t) }
        if let t = control.nextDeadline() { earliest(t) }
        if let t = service.nextWakeup() { earliest(t) }
        if let t = passwordChecker?.nextDeadline { earliest(t) }
        if !stopping, let t = mailDrop?.nextWakeup(now: now) { earliest(t) }
        if stopping { earliest(stopDeadline) }
        guard let t = next else { return -1 }
        if t <= now { return 0 }
        let ms = (t - now + 999_999) / 1_000_000
        return Int32(min(ms, 3_600_000))
    }

    func dispatch(now: Int64) {
        for (k, p) in pollFDs.enumerated() where p.revents != 0 {
            let readable = p.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0
            let writable = p.revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0
            switch owners[k] {
            case .signals:
                handleSignals(now: now)
            case .listener(let i):
                if listeners[i].local {
                    pool?.acceptLocal(from: listeners[i].fd, now: now, identify: identifyLocal)
                } else {
                    pool?.accept(from: listeners[i].fd, now: now, implicitTLS: listeners[i].tls)
                }
            case .mailDrop:
                mailDrop?.ready(fd: p.fd, now: now)
            case .spoolSync:
                while let r = spool.finishGroupCommit(wait: false) { pool?.commitDone(r, now: now) }
            case .spoolUnlink:
                spool.finishDeletion(wait: false)
            case .receiver(let i):
                pool?.ready(index: i, revents: p.revents, now: now)
            case .control(let i):
                control.ready(index: i, revents: p.revents, now: now)
            case .deliveryHelper:
                delivery.helperReady(fd: p.fd, now: now)
            case .passwordChecker:
                collectPasswordChecks(now: now)
            case .delivery:
                if delivery.fd >= 0 && writable { delivery.writable(now: now) }
                if delivery.fd >= 0 && readable && p.revents & Int16(POLLIN | POLLHUP) != 0 { delivery.readable(now: now) }
            }
        }
    }

    func handleSignals(now: Int64) {
        while true {
            let sig = cl_signalfd_read(signalFD)
            if sig <= 0 { return }
            switch sig {
            case SIGTERM, SIGINT:
                if !stopping {
                    log.notice("stopping", [("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")])
                    service.stopping()
                    beginShutdown(now: now)
                }
            case SIGHUP:
                if !stopping { reload(now: now) }
            default:
                break
            }
        }
    }

    /// Starts the group commit: one fdatasync for every commit written since the
    /// last one started, run through io_uring or by a sync helper; its 250s go
    /// out when it has finished (`dispatch`, `.spoolSync`). Up to four run at a
    /// time (`Spool.canStartGroupCommit`); what is committed while they run
    /// shares the next.
    func groupCommit(now: Int64) {
        if let r = spool.startGroupCommit() { pool?.commitDone(r, now: now) }
    }

    func timers(now: Int64) {
        if let t = passwordChecker?.nextDeadline, now >= t { collectPasswordChecks(now: now) }
        pool?.timers(now: now)
        control.timers(now: now)
        if !stopping { mailDrop?.tick(now: now, canAccept: spool.acceptsMail(now: now)) }
    }

    /// A local submitter as the kernel names it; the pickup child speaks for the
    /// owner of the drop file it submits.
    func identifyLocal(_ cred: cl_peer_cred) -> LocalSender {
        if let owner = mailDrop?.identify(cred) { return owner }
        return LocalSender(uid: cred.uid, user: LocalUsers.name(cred.uid), pid: cred.pid)
    }

    // MARK: stopping

    func beginShutdown(now: Int64) {
        stopping = true
        stopDeadline = now + Self.stopGraceNanoseconds
        // Sockets passed by systemd are closed too: systemd keeps its own copy and
        // queues new connections for the next start.
        for l in listeners { Sys.close(l.fd) }
        listeners = []
    }

    /// Called at the top of each iteration while stopping: commits already written
    /// are synced and answered first, then clients get 421; the upstream gets a
    /// short grace period for a reply to a fully sent message.
    func shutdownComplete(now: Int64) -> Bool {
        groupCommit(now: now)
        pool?.shutdown(now: now)
        let waiting = delivery.stop(now: now) || spool.syncInFlight
        return !waiting || now >= stopDeadline
    }

    /// Chooses what runs the spool's syncs (`[spool] sync`): io_uring when
    /// `auto` or `io_uring` and the kernel allows it; the helpers when `helper`,
    /// or when `auto` and io_uring cannot run here, or later should the ring
    /// fail (then forked on first use).
    func startSyncs() {
        let method = config.spool.sync
        if method == .auto || method == .ioUring {
            switch SyncRing.open(log: log) {
            case .success(let ring):
                storage.useSyncRing(ring)
                log.debug("the spool syncs through io_uring")
                if case .success(let unlinker) = SegmentUnlinker.open(log: log) { storage.useUnlinker(unlinker) }
            case .failure(let e):
                log.info(method == .auto ? "io_uring cannot run here; the spool syncs in helper processes"
                                         : "io_uring cannot run here; the spool syncs in the loop",
                         [("reason", e.text)])
            }
        }
        guard method == .auto || method == .helper else { return }
        storage.useSyncHelpers(syncHelpers)
        if storage.ring == nil { for h in syncHelpers { h.start() } }
    }

    func finish() {
        _ = delivery.stop(now: Clock.monotonic() + Self.stopGraceNanoseconds * 2)
        if delivery.fd >= 0 { delivery.closeSocket() }
        pool?.shutdown(now: Clock.monotonic())
        control.close()
        mailDrop?.close(now: Clock.monotonic())
        if let path = ownedLocalSocket { _ = Sys.unlink(path) }
        spool.close()
        for h in syncHelpers { h.stop() }
        passwordChecker?.stop()
        log.notice("postern stopped", [("queued", "\(spool.queue.count)")], id: MessageIDs.stopped)
    }
}
