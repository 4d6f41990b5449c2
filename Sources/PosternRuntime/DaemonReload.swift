import CLibc
import PosternCore

/// SIGHUP: re-read the configuration without losing or re-sending anything.
///
/// The new file is parsed and every resource it needs (new listen addresses, a
/// new control socket) is opened first; if anything fails the reload is refused
/// with a logged reason and the running configuration stays, whole. Otherwise it
/// takes effect at once: connections already open finish with the settings they
/// started with, new ones get the new settings; the spool and the queue are
/// untouched. `[spool] dir` cannot move while the daemon runs.
extension Daemon {
    func reload(now: Int64) {
        service.reloading(now: now)
        if let why = applyReload(now: now) {
            log.error("configuration reload refused; the running configuration stays", [("reason", why)],
                      id: MessageIDs.reloaded)
        }
        service.ready(status: statusText(now: Clock.monotonic()), now: Clock.monotonic())
    }

    /// Returns why the reload was refused, or nil when it took effect.
    func applyReload(now: Int64) -> String? {
        let new: Config
        switch ConfigFile.load(configPath) {
        case .success(let c): new = c
        case .failure(let e): return e.description
        }
        if new.spool.dir != config.spool.dir {
            return "[spool] dir cannot change while postern runs (restart it to move the spool)"
        }

        // Open what the new configuration needs before changing anything.
        var opened: [Listener] = []
        var listenChanged = false
        let wanted = Self.wantedListeners(new.receiver)
        if !socketActivated && (new.receiver.listen != config.receiver.listen || new.receiver.listenTLS != config.receiver.listenTLS) {
            listenChanged = true
            for (endpoint, tls) in wanted where !listeners.contains(where: { $0.endpoint == endpoint && $0.tls == tls }) {
                switch Self.listen(endpoint) {
                case .success(let fd): opened.append((fd, endpoint, false, tls))
                case .failure(let e):
                    for o in opened { Sys.close(o.fd) }
                    return "cannot listen on \(endpoint): \(e.text)"
                }
            }
        }
        // A renewed certificate is read at every reload; one that does not load
        // refuses the reload, and the running one stays.
        var tlsServer: TLSServerContext? = nil
        switch loadReceiverTLS(new.receiver) {
        case .success(let s): tlsServer = s
        case .failure(let p):
            for o in opened { Sys.close(o.fd) }
            return "[receiver] TLS: \(p.text)"
        }
        // So is auth_users: one that does not load refuses the reload, and the
        // running users stay.
        var authUsers: AuthUsers? = nil
        switch loadReceiverAuth(new.receiver) {
        case .success(let u): authUsers = u
        case .failure(let p):
            for o in opened { Sys.close(o.fd) }
            return "[receiver] \(p.text)"
        }
        var newControl: ControlServer? = nil
        if new.control.socket != config.control.socket {
            let c = ControlServer(path: new.control.socket, spool: spool, delivery: delivery, log: log, facts: control.facts,
                                  kernel: kernel)
            if let problem = c.open() {
                for o in opened { Sys.close(o.fd) }
                return problem
            }
            newControl = c
        }

        // Apply.
        var changed: [String] = []
        if listenChanged {
            // The local submission socket is not one of `[receiver] listen`: it stays.
            func kept(_ l: Listener) -> Bool {
                l.local || wanted.contains(where: { $0.endpoint == l.endpoint && $0.tls == l.tls })
            }
            for l in listeners where !kept(l) { Sys.close(l.fd) }
            listeners = listeners.filter(kept) + opened
            for o in opened {
                log.info("listening", [("address", o.endpoint?.description ?? "?")] + (o.tls ? [("tls", "implicit")] : []))
            }
            changed.append("listen")
        }
        if let c = newControl {
            control.close()
            control = c
            changed.append("control socket")
        }
        hostname = new.receiver.hostname ?? Sys.hostname()
        if authUsers != nil { startPasswordChecker(new.receiver) }
        if let context {
            context.tlsServer = tlsServer
            context.authUsers = authUsers
            context.settings = receiverSettings(new)
            context.allowClients = new.receiver.allowClients
            context.timeoutNanoseconds = Int64(new.receiver.timeout) * 1_000_000_000
        }
        pool?.apply(new.receiver) // resize, cap per client, greeting pause (issue 12 item 5)
        pool?.hostname = hostname
        control.facts.maxConnections = new.receiver.maxConnections
        spool.maxSize = new.spool.maxBytes
        spool.segmentSize = new.spool.segmentSize
        spool.expiry = ExpiryPolicy(maxAge: new.spool.maxAge)
        let upstreamChanged = new.upstreams.map { $0.name } != delivery.upstreams.map { $0.name }
            || new.upstreams.map { $0.envelopeFrom } != delivery.upstreams.map { $0.envelopeFrom }
        delivery.upstreams = new.upstreams
        delivery.heloName = hostname
        delivery.aliases = new.aliases
        delivery.notices?.policy = NoticePolicy(postmaster: new.notify.postmaster, hostname: hostname)
        delivery.notices?.hostname = hostname
        delivery.policy = RetryPolicy(new.retry)
        delivery.expiry = ExpiryPolicy(maxAge: new.spool.maxAge)
        if upstreamChanged {
            // The next connection goes to the new upstream; waiting for the old
            // one's backoff would be pointless.
            _ = delivery.retryNow()
            changed.append("upstream")
        }
        if new.local.socket != config.local.socket
            || new.local.dropDirectory(spoolDir: new.spool.dir) != config.local.dropDirectory(spoolDir: config.spool.dir) {
            log.warning("[local] socket and drop_dir take effect at the next start; the running ones stay",
                        [("socket", localSocketPath), ("drop_dir", mailDrop?.path ?? "")])
        }
        if new.spool.sync != config.spool.sync {
            log.warning("[spool] sync takes effect at the next start; the running method stays",
                        [("sync", config.spool.sync.name)])
        }
        // What runs the syncs was chosen at start: keep saying so.
        var kept = new
        kept.spool.sync = config.spool.sync
        config = kept
        logUpstreamChecks(new)
        log.notice("configuration reloaded", [("file", configPath),
                                              ("changed", changed.isEmpty ? "settings" : changed.joined(separator: ", "))],
                   id: MessageIDs.reloaded)
        return nil
    }
}
