import PosternCore

/// AUTH for a receiver connection (RFC 4954; issue 12 item 2): the machine
/// (`SMTPReceiver`, `SASLServer`) runs the exchange and says when credentials
/// are to be checked; here they are checked off the loop (`PasswordChecker`),
/// failures are counted per client address (`AuthThrottle`) and their replies
/// held for its delay, and what happened is logged, never the password.
extension ReceiverConnection {
    /// `.checkCredentials`: takes the credentials from the machine and hands
    /// the password to the checker, which wipes it. The verdict comes back
    /// through `authChecked`, at once when the check ran in the loop.
    func checkCredentials(now: Int64) {
        guard var credentials = machine.takeCredentials() else { return }
        // Moved, not copied, into the checker: the only copy is the one it wipes.
        var password: [UInt8] = []
        swap(&password, &credentials.password)
        let checker = context.passwordChecker ?? context.fallbackChecker
        context.lastCheckID &+= 1
        let id = context.lastCheckID
        let hash = context.authUsers?.hash(for: credentials.user)
        switch checker.submit(id: id, hash: hash, password: &password, now: now) {
        case .queued:
            pendingCheck = id
        case .busy:
            context.log.warning("too many password checks waiting; AUTH answered 454", clientFields + [("conn", connectionID)])
            perform(machine.authChecked(.unavailable), now: now)
        case .checked(let verdict):
            deliver(verdict, now: now)
        }
    }

    /// The checker's verdict on the check this connection waits for.
    public func authChecked(id: UInt64, verdict: PasswordChecker.Verdict, now: Int64) {
        guard isActive, pendingCheck == id else { return }
        pendingCheck = nil
        restartDeadline(now)
        deliver(verdict, now: now)
        pump(now: now)
    }

    func deliver(_ verdict: PasswordChecker.Verdict, now: Int64) {
        switch verdict {
        case .match: perform(machine.authChecked(.match), now: now)
        case .mismatch: perform(machine.authChecked(.mismatch), now: now)
        case .unusable:
            // A hash libcrypt cannot use here (a scheme disabled in its build,
            // say): the administrator must see it; the client gets 454.
            context.log.error("a password hash in auth_users cannot be checked; AUTH answered 454",
                              clientFields + [("conn", connectionID)])
            perform(machine.authChecked(.unavailable), now: now)
        }
    }

    /// `.authFailed`: counts the failure against the client's address, logs
    /// it (and a lockout it starts), and holds the reply that follows for the
    /// throttle's delay (1, 2, 4, 8 s).
    func authFailed(user: String?, reply: Reply, now: Int64) {
        let lockedOut = context.authThrottle.recordFailure(peer, now: now)
        let delay = context.authThrottle.delay(for: peer, now: now)
        context.log.event(.rejected, .notice, "authentication failed", clientFields + [
            ("reply", reply.description), ("conn", connectionID), ("delay_ms", "\(delay / 1_000_000)"),
        ] + (user.map { [("auth_user", $0)] } ?? []))
        if lockedOut {
            context.log.warning("client locked out of AUTH after repeated failures", clientFields + [
                ("auth_lockout_seconds", "\(context.authThrottle.settings.lockout / 1_000_000_000)"),
                ("failures", "\(context.authThrottle.settings.maxFailures)"),
            ])
        }
        holdUntil = now &+ delay
        heldFrom = output.count
        deadline = now &+ delay
    }
}
