import CLibc
import PosternCore

/// The fixed pool of receiver connections (DESIGN.md principle 2): the slots are
/// allocated at start, sized by `max_connections`, and reused. The pool admits
/// new clients (`ConnectionSlots`: a share kept for loopback clients, a cap per
/// client address; `GreetPolicy`: the greeting held back), feeds
/// poll events and deadlines to its connections, and hands them the outcome of
/// each group commit. It reaches sockets only through the `Kernel`, so unit tests
/// drive it below the socket.
public final class ReceiverPool {
    let context: ReceiverContext
    public private(set) var connections: [ReceiverConnection] = []
    /// The indices of the slots attached since the last `pruneActive`: the
    /// loop's passes (poll set, deadlines, timers, group commits) walk these,
    /// not every slot. A connection that has closed stays listed until the next
    /// prune, so every pass still asks `isActive`. With 32 slots and 4 clients,
    /// walking every slot several times per loop iteration was a tenth of the
    /// daemon's instructions relaying 2 KB messages (callgrind, issue 11).
    var activeSlots: [Int] = []
    public private(set) var slots: ConnectionSlots
    /// When new connections are greeted; nil greets every client at once
    /// without a check (until `apply` sets the configured policy).
    public private(set) var greeting: GreetPolicy? = nil
    /// The log of refused connections, one tally per reason (`RefusalTally`).
    var overCapLog = RefusalTally()
    var poolFullLog = RefusalTally()
    var connectionCounter: UInt64 = 0
    /// The host name in the 421 of a refused connection.
    public var hostname: String

    public init(context: ReceiverContext, maxConnections: Int, hostname: String) {
        self.context = context
        self.hostname = hostname
        // No per-client cap until `apply`: a pool made without a configuration
        // (tests, fuzzing) admits as before issue 12.
        slots = ConnectionSlots(total: maxConnections, perClient: maxConnections)
        for _ in 0..<maxConnections { connections.append(ReceiverConnection(context: context)) }
        activeSlots.reserveCapacity(maxConnections)
    }

    public var activeCount: Int { activeSlots.reduce(0) { $0 + (connections[$1].isActive ? 1 : 0) } }

    /// The connections still open, in the order they were admitted.
    var active: [ReceiverConnection] {
        var out: [ReceiverConnection] = []
        for i in activeSlots where connections[i].isActive { out.append(connections[i]) }
        return out
    }

    /// Drops the closed connections from `activeSlots`.
    func pruneActive() {
        activeSlots.removeAll { !connections[$0].isActive }
    }

    /// On reload: more slots are allocated now, once, as at start; fewer only
    /// lowers how many may be active (open connections finish).
    public func resize(maxConnections: Int) {
        while connections.count < maxConnections { connections.append(ReceiverConnection(context: context)) }
        activeSlots.reserveCapacity(connections.count)
        slots = ConnectionSlots(total: maxConnections, perClient: slots.perClient, exempt: slots.exempt)
    }

    /// At start and on reload: the slots, the cap per client and the greeting
    /// policy of `[receiver]`. New connections follow them; open ones keep
    /// their slots (a client over a lowered cap is not cut off).
    public func apply(_ r: ReceiverConfig) {
        resize(maxConnections: r.maxConnections)
        slots = ConnectionSlots(total: r.maxConnections, perClient: r.maxConnectionsPerClient, exempt: r.connectionLimitExempt)
        greeting = GreetPolicy(pauseSeconds: r.greetPause, exempt: r.greetPauseExempt)
    }

    // MARK: accepting

    /// Takes the connections waiting on a listening socket (at most 64 per call,
    /// so one busy listener cannot starve the loop). On a `listen_tls` listener
    /// (`implicitTLS`) each client's TLS handshake comes before the greeting.
    public func accept(from listenFD: Int32, now: Int64, implicitTLS: Bool = false) {
        for _ in 0..<64 {
            switch context.kernel.accept(listenFD) {
            case .success(let accepted?):
                admit(accepted, now: now, implicitTLS: implicitTLS)
            case .success(nil):
                return
            case .failure(let e):
                context.log.warning("accept failed", [("error", e.description)])
                return
            }
        }
    }

    /// Takes the connections waiting on the local submission socket (`postern
    /// sendmail`), each named by `identify` from the kernel's credentials of the
    /// connecting process. One whose credentials cannot be read is closed.
    public func acceptLocal(from listenFD: Int32, now: Int64, identify: (cl_peer_cred) -> LocalSender) {
        for _ in 0..<64 {
            switch context.kernel.acceptLocal(listenFD) {
            case .success(let fd?):
                guard let cred = context.kernel.peerCredentials(fd) else {
                    context.log.warning("local connection without credentials closed", [("error", Errno.current("getsockopt").description)])
                    context.kernel.close(fd)
                    continue
                }
                admit(AcceptedConnection(fd: fd, peer: IPAddress.loopbackV4), now: now, local: identify(cred))
            case .success(nil):
                return
            case .failure(let e):
                context.log.warning("accept failed", [("error", e.description), ("socket", "local")])
                return
            }
        }
    }

    func admit(_ accepted: AcceptedConnection, now: Int64, local: LocalSender? = nil, implicitTLS: Bool = false) {
        connectionCounter += 1
        let peer = accepted.peer.unmapped
        // Counted over the fixed slots: no table per client, no allocation.
        var active = 0, fromSameClient = 0
        pruneActive()
        for i in activeSlots {
            let c = connections[i]
            active += 1
            if c.local == nil && ConnectionSlots.sameClient(c.peer, peer) { fromSameClient += 1 }
        }
        let verdict = slots.admission(peer: peer, local: local != nil, active: active, fromSameClient: fromSameClient)
        guard verdict == .admit, let index = connections.firstIndex(where: { !$0.isActive }) else {
            refuse(accepted.fd, peer: peer, overCap: verdict == .clientOverCap, now: now)
            return
        }
        let slot = connections[index]
        // Listed before it is attached: a pruned list never holds an inactive
        // slot, so this one is not listed yet.
        activeSlots.append(index)
        pagesIdleSince = nil
        let plan = implicitTLS ? .greetNow(refuseEarlyInput: false)
            : greeting?.plan(peer: peer, local: local != nil, now: now) ?? .greetNow(refuseEarlyInput: false)
        slot.attach(fd: accepted.fd, peer: peer, id: ASCII.hexTrimmed(connectionCounter), now: now, local: local,
                    implicitTLS: implicitTLS, greeting: plan)
        if !slot.isActive { noteClosed(now: now) }
    }

    /// RFC 5321 §3.1: 421 at connect when we cannot serve the client now, and
    /// close. The wording over the per-client cap is Postfix's. Logged through
    /// a `RefusalTally`: in a storm, the first refusal and then one summary a
    /// second, so a thousand refusals do not write a thousand lines.
    func refuse(_ fd: Int32, peer: IPAddress, overCap: Bool, now: Int64) {
        let reply = overCap
            ? Reply(421, "4.7.0", "\(hostname) Error: too many connections from \(peer)")
            : Reply(421, "4.7.0", "\(hostname) Too many connections, try again later")
        _ = reply.encoded().withUnsafeBytes { context.kernel.send(fd, $0) }
        context.kernel.close(fd)
        logRefusalSummaries(now: now)
        if overCap {
            guard overCapLog.refused(now: now) else { return }
            context.log.event(.rejected, .warning, "connection refused: too many connections from one client", [
                ("client", peer.description), ("reply", "421 4.7.0"),
                ("max_connections_per_client", "\(slots.perClient)"),
            ])
        } else {
            guard poolFullLog.refused(now: now) else { return }
            context.log.event(.rejected, .warning, "connection refused: max_connections reached", [
                ("client", peer.description), ("reply", "421 4.7.0"),
                ("max_connections", "\(slots.total)"),
                ("reserved_for_loopback", peer.isLoopback ? "0" : "\(slots.reservedForLoopback)"),
            ])
        }
    }

    /// One line for the refusals each tally counted without logging, once its
    /// second has passed.
    func logRefusalSummaries(now: Int64) {
        if let n = overCapLog.summary(now: now) {
            context.log.event(.rejected, .warning, "more connections refused: too many connections from one client", [
                ("refused", "\(n)"), ("reply", "421 4.7.0"), ("max_connections_per_client", "\(slots.perClient)"),
            ])
        }
        if let n = poolFullLog.summary(now: now) {
            context.log.event(.rejected, .warning, "more connections refused: max_connections reached", [
                ("refused", "\(n)"), ("reply", "421 4.7.0"), ("max_connections", "\(slots.total)"),
            ])
        }
        Self.logEarlyTalkerSummary(context, now: now)
    }

    /// The summary of the clients refused for talking before the greeting
    /// (`ReceiverConnection.refusedEarlyTalker`), once its second has passed.
    static func logEarlyTalkerSummary(_ context: ReceiverContext, now: Int64) {
        if let n = context.earlyTalkerLog.summary(now: now) {
            context.log.event(.rejected, .notice, "more clients sent input before the greeting; refused", [
                ("refused", "\(n)"), ("reply", "554 5.5.0"),
            ])
        }
    }

    // MARK: the pages of closed connections

    /// How long the pool stays without a connection before the closed ones
    /// give their buffers' pages back. Clients that connect once per message
    /// leave the pool empty for a moment after every group commit; giving the
    /// pages back each time, only to fault them in again at the next accept,
    /// cost three madvise calls and three page faults per message (issue 11).
    /// Under the upstream's two-second idle hold, so a daemon is back to its
    /// idle memory (issue 10) by the time the upstream connection is let go.
    public static let pageReleaseDelay: Int64 = 1_000_000_000

    /// Since when the pool has had no connection while closed ones hold pages.
    public private(set) var pagesIdleSince: Int64? = nil

    /// Called wherever a connection may have closed: once none is open, the
    /// wait for `pageReleaseDelay` starts.
    func noteClosed(now: Int64) {
        if activeSlots.contains(where: { connections[$0].isActive }) { return }
        if connections.contains(where: { $0.holdsPages }) { pagesIdleSince = now }
    }

    /// Gives the closed connections' pages back when the pool has been without
    /// a connection for `pageReleaseDelay` (or at once with `force`).
    func releaseIdlePages(now: Int64, force: Bool = false) {
        guard let since = pagesIdleSince, force || now - since >= Self.pageReleaseDelay else { return }
        if activeSlots.contains(where: { connections[$0].isActive }) { return }
        for c in connections where c.holdsPages { c.releasePages() }
        pagesIdleSince = nil
    }

    // MARK: the loop

    /// The poll entries of the active connections: (slot index, fd, events),
    /// given to `add` one by one (once per loop iteration, so no array is made).
    public func pollEntries(_ add: (_ index: Int, _ fd: Int32, _ events: Int16) -> Void) {
        pruneActive()
        for i in activeSlots {
            let c = connections[i]
            add(i, c.fd, c.pollEvents)
        }
    }

    /// The same entries as an array (tests and the fuzz target).
    public func pollEntries() -> [(index: Int, fd: Int32, events: Int16)] {
        var out: [(index: Int, fd: Int32, events: Int16)] = []
        pollEntries { out.append(($0, $1, $2)) }
        return out
    }

    /// Poll reported `revents` for the connection in `index`.
    public func ready(index: Int, revents: Int16, now: Int64) {
        guard index >= 0 && index < connections.count else { return }
        let c = connections[index]
        if revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 && c.isActive { c.writable(now: now) }
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 && c.isActive { c.readable(now: now) }
        if !c.isActive { noteClosed(now: now) }
    }

    public func nextDeadline() -> Int64? {
        var next: Int64? = nil
        for i in activeSlots where connections[i].isActive {
            let d = connections[i].deadline
            if next.map({ d < $0 }) ?? true { next = d }
        }
        if let since = pagesIdleSince {
            let t = since + Self.pageReleaseDelay
            if next.map({ t < $0 }) ?? true { next = t }
        }
        if let t = overCapLog.summaryDue, next.map({ t < $0 }) ?? true { next = t }
        if let t = poolFullLog.summaryDue, next.map({ t < $0 }) ?? true { next = t }
        if let t = context.earlyTalkerLog.summaryDue, next.map({ t < $0 }) ?? true { next = t }
        return next
    }

    public func timers(now: Int64) {
        var closed = false
        for i in activeSlots {
            let c = connections[i]
            guard c.isActive && now >= c.deadline else { continue }
            c.timedOut(now: now)
            if !c.isActive { closed = true }
        }
        if closed { noteClosed(now: now) }
        releaseIdlePages(now: now)
        logRefusalSummaries(now: now)
    }

    /// Tells each connection whose commit the group commit covered: 250 for the
    /// durable ones, 452 for those it could not make durable.
    public func commitDone(_ result: Spool.FlushResult, now: Int64) {
        if result.committed.isEmpty && result.failed.isEmpty { return }
        for i in activeSlots {
            let c = connections[i]
            guard c.isActive, let id = c.transactionID else { continue }
            if result.committed.contains(where: { $0.id == id }) {
                c.committed(now: now)
            } else if let e = result.error, result.failed.contains(id) {
                c.commitFailed(e, now: now)
            }
        }
        noteClosed(now: now)
    }

    /// The password checker's verdicts, to the connections waiting for them;
    /// one whose connection has closed meanwhile is dropped.
    public func authChecked(_ results: [(id: UInt64, verdict: PasswordChecker.Verdict)], now: Int64) {
        for r in results {
            active.first { $0.pendingCheck == r.id }?.authChecked(id: r.id, verdict: r.verdict, now: now)
        }
        noteClosed(now: now)
    }

    /// 421 to every client without a commit pending (RFC 5321 §3.8).
    public func shutdown(now: Int64) {
        for c in active { c.shutdown(now: now) }
        noteClosed(now: now)
        releaseIdlePages(now: now, force: true)
    }

    public var awaitingCommit: Bool { activeSlots.contains { connections[$0].isActive && connections[$0].isAwaitingCommit } }

    /// Some client is connected and not waiting for a commit: it could still
    /// send one (`Spool.commitsMayFollow`).
    public var clientMayCommit: Bool { activeSlots.contains { connections[$0].isActive && !connections[$0].isAwaitingCommit } }
}
