/// One message as the sender hands it to an upstream.
public struct OutboundMessage: Equatable, Sendable {
    public var from: Mailbox
    /// Only the recipients still to be delivered; results refer to these indices.
    public var recipients: [Mailbox]
    /// Bytes of spooled text, for the SIZE parameter (RFC 1870 §3).
    public var size: Int
    public var eightBit: Bool
    /// The message needs SMTPUTF8 (RFC 6531 §3.4: its client said so): it goes
    /// only to an upstream that offers it, never downgraded (§3.2).
    public var smtputf8 = false
    /// RET and ENVID (RFC 3461 §4.3–4.4), passed on when the upstream offers DSN.
    public var ret: DSNReturn? = nil
    public var envelopeID: [UInt8]? = nil
    /// NOTIFY and ORCPT of each of `recipients`, same order; empty for none.
    public var recipientParameters: [RecipientParameters] = []

    public init(from: Mailbox, recipients: [Mailbox], size: Int, eightBit: Bool) {
        self.from = from
        self.recipients = recipients
        self.size = size
        self.eightBit = eightBit
    }
}

/// What the upstream said about one recipient.
public enum RecipientOutcome: Equatable, Sendable {
    /// 2xx to the end of data: the upstream took responsibility (RFC 5321 §6.1).
    case delivered
    /// 5xx: will never succeed; the recipient is finished as failed.
    case failed
    /// 4xx, or the connection broke: try again later.
    case deferred
}

/// Why a sender connection ended early. `.rejected` carries the upstream's reply.
public enum SenderFailure: Error, Equatable, Sendable, CustomStringConvertible {
    case connection(String)
    case timeout(String)
    case protocolError(String)
    case rejected(Reply)
    /// STARTTLS missing or refused, the handshake failed, or the certificate did
    /// not pass: nothing was sent, and certificates get fixed, so never final.
    case tls(String)
    /// AUTH could not be done or was refused (535): a configuration error for
    /// this upstream.
    case auth(String)

    public var description: String {
        switch self {
        case .connection(let s): return s
        case .timeout(let s): return "timeout \(s)"
        case .protocolError(let s): return "protocol error: \(s)"
        case .rejected(let r): return r.description
        case .tls(let s): return "TLS: \(s)"
        case .auth(let s): return "AUTH: \(s)"
        }
    }

    /// A reply to report for recipients this failure left undelivered.
    public var reply: Reply {
        switch self {
        case .rejected(let r): return r
        case .connection(let s): return Reply(451, "4.4.1", s)
        case .timeout(let s): return Reply(451, "4.4.2", "timeout \(s)")
        case .protocolError(let s): return Reply(451, "4.5.0", "protocol error: \(s)")
        case .tls(let s): return Reply(451, "4.7.5", "TLS: \(s)")
        case .auth(let s): return Reply(451, "4.7.8", "AUTH: \(s)")
        }
    }
}

/// Service extensions the upstream announced in its EHLO reply.
public struct Capabilities: Equatable, Sendable {
    public var pipelining = false
    public var eightBitMIME = false
    /// RFC 1870: nil when SIZE was not announced, 0 when announced without a limit.
    public var maxSize: Int? = nil
    /// RFC 3207 §4.
    public var startTLS = false
    /// RFC 4954 §3: the SASL mechanisms offered, upper-cased.
    public var authMechanisms: [String] = []
    /// RFC 6531 §3.1.
    public var smtpUTF8 = false
    /// RFC 3461 §4.
    public var dsn = false

    public init() {}

    /// Reads the keyword lines after the first line of an EHLO reply
    /// (RFC 5321 §4.1.1.1 ehlo-line).
    public init(ehloLines: [String]) {
        for line in ehloLines.dropFirst() {
            let words = line.utf8.split(separator: ASCII.space)
            guard let keyword = words.first else { continue }
            let k = ASCII.string(keyword).uppercasedASCII
            switch k {
            case "PIPELINING": pipelining = true
            case "8BITMIME": eightBitMIME = true
            case "SIZE": maxSize = words.count > 1 ? (ASCII.parseDecimal(words[1]) ?? 0) : 0
            case "STARTTLS": startTLS = true
            case "SMTPUTF8": smtpUTF8 = true
            case "DSN": dsn = true
            case "AUTH":
                addMechanisms(words.dropFirst())
            default:
                // Old servers announce "AUTH=LOGIN PLAIN" (before RFC 2554 was final).
                if k.hasPrefix("AUTH=") {
                    addMechanisms([Array(keyword.dropFirst(5))[...]] + words.dropFirst().map { Array($0)[...] })
                }
            }
        }
    }
}

extension Capabilities {
    mutating func addMechanisms<S: Sequence>(_ words: S) where S.Element: Collection, S.Element.Element == UInt8 {
        for w in words where !w.isEmpty && w.count <= 64 {
            let m = ASCII.string(w).uppercasedASCII
            if !authMechanisms.contains(m) && authMechanisms.count < 32 { authMechanisms.append(m) }
        }
    }
}

/// What the sender must do before mail: STARTTLS, and AUTH as whom.
public struct SenderSecurity: Equatable, Sendable {
    /// Say STARTTLS after EHLO and refuse to go on without it (RFC 3207).
    public var startTLS: Bool
    /// The connection is TLS from the first byte (implicit TLS): AUTH is allowed.
    public var implicitTLS: Bool
    public var auth: AuthChoice
    public var username: String

    public init(startTLS: Bool = false, implicitTLS: Bool = false, auth: AuthChoice = .none, username: String = "") {
        self.startTLS = startTLS
        self.implicitTLS = implicitTLS
        self.auth = auth
        self.username = username
    }

    public static let plain = SenderSecurity()
}

/// The sender side of an SMTP session toward the upstream (RFC 5321 §3.3, §4.1),
/// as a pure state machine. It is fed replies and connection events and returns
/// actions; the connection streams message text itself (`DataEncoder`) when told
/// `.sendText`, and reports back with `textSent()`.
///
/// One connection carries many messages: after each transaction the machine is
/// `.ready` again for the next one. With PIPELINING (RFC 2920) MAIL, every RCPT
/// and DATA leave in one write; without it, one command per reply.
public struct SMTPSender: Sendable {
    enum Step: Equatable, Sendable {
        case mail
        case rcpt(Int)
        case data
    }

    struct Transaction: Equatable, Sendable {
        var message: OutboundMessage
        /// Replies still expected, in order.
        var awaiting: [Step]
        /// Commands not yet written (stepwise mode without PIPELINING).
        var unsent: [Step]
        var mailAccepted = false
        var accepted: [Int] = []
        /// Recipients whose outcome has been reported already.
        var reported: Set<Int> = []
    }

    /// Named for what was last sent.
    enum State: Equatable, Sendable, CustomStringConvertible {
        case awaitingGreeting
        case sentEHLO
        case sentHELO
        case sentSTARTTLS
        /// The connection is doing the TLS handshake after STARTTLS's 220.
        case handshaking
        /// AUTH needs the secret; the connection is reading it.
        case awaitingSecret(AuthChoice)
        /// AUTH LOGIN: `step` 0 awaits the user name prompt, 1 the password
        /// prompt (the secret is held only until then).
        case sentAuthLogin(step: Int, secret: [UInt8])
        /// The whole AUTH response was sent; 235 or a refusal comes next.
        case sentAuth(AuthChoice)
        /// The exchange was cancelled or the server sent an error challenge
        /// (XOAUTH2); its final refusal comes next.
        case sentAuthCancel(detail: String)
        case ready
        case sentEnvelope(Transaction)
        case sendingText(Transaction)
        case sentDot(Transaction)
        /// The end of data went out with the next message's whole envelope behind
        /// it (`startBehindDot`): the first reply is the end of data's, the rest
        /// are the envelope's.
        case sentDotThenEnvelope(Transaction, next: Transaction)
        /// "." sent only to close a DATA the upstream accepted for no recipient.
        case sentEmptyDot
        case sentRSET
        case sentQUIT
        case closed

        var description: String {
            switch self {
            case .awaitingGreeting: return "awaitingGreeting"
            case .sentEHLO: return "sentEHLO"
            case .sentHELO: return "sentHELO"
            case .sentSTARTTLS: return "sentSTARTTLS"
            case .handshaking: return "handshaking"
            case .awaitingSecret: return "awaitingSecret"
            case .sentAuthLogin: return "sentAuthLogin"
            case .sentAuth: return "sentAuth"
            case .sentAuthCancel: return "sentAuthCancel"
            case .ready: return "ready"
            case .sentEnvelope: return "sentEnvelope"
            case .sendingText: return "sendingText"
            case .sentDot: return "sentDot"
            case .sentDotThenEnvelope: return "sentDotThenEnvelope"
            case .sentEmptyDot: return "sentEmptyDot"
            case .sentRSET: return "sentRSET"
            case .sentQUIT: return "sentQUIT"
            case .closed: return "closed"
            }
        }
    }

    public enum Action: Equatable, Sendable {
        /// Write these command bytes.
        case send([UInt8])
        /// Write these bytes, which carry a secret: wipe them once written.
        case sendSecret([UInt8])
        /// Do the TLS handshake (STARTTLS was accepted), then call `tlsEstablished()`.
        case startTLS
        /// Get the AUTH secret and call `provideSecret(_:)` (or `secretUnavailable`).
        case needSecret
        /// Stream the message text, dot-stuffed, then the end-of-data marker.
        case sendText
        /// Ready for `start(message:)` (or `finish()` when there is nothing to send).
        case ready
        case recipient(index: Int, outcome: RecipientOutcome, reply: Reply)
        /// The current message's transaction is over; every recipient was reported.
        case messageDone
        /// Close the connection; `failure` is nil after a normal QUIT.
        case close(failure: SenderFailure?)
    }

    public let heloName: String
    public let security: SenderSecurity
    var state: State = .awaitingGreeting
    public private(set) var capabilities = Capabilities()
    /// STARTTLS succeeded on this connection.
    public private(set) var tlsActive = false
    /// The SASL mechanism that authenticated this connection.
    public private(set) var authenticatedWith: AuthChoice? = nil

    public init(heloName: String, security: SenderSecurity = .plain) {
        self.heloName = heloName
        self.security = security
    }

    public var stateName: String { state.description }
    // Patterns, not `==`: the size-optimised build calls the derived `==` of
    // `State`, which copies both values with their transactions, and the
    // delivery asks `isReady` about two dozen times a message (3% of a 2 KB
    // relay's user-space instructions, callgrind).
    public var isReady: Bool { if case .ready = state { return true } else { return false } }
    public var isClosed: Bool { if case .closed = state { return true } else { return false } }
    /// A transaction is under way (a message would be left half-sent by closing).
    public var inTransaction: Bool {
        switch state {
        case .sentEnvelope, .sendingText, .sentDot, .sentDotThenEnvelope: return true
        default: return false
        }
    }
    /// Waiting for the reply to the end of data (closing now would risk a duplicate).
    public var awaitingFinalReply: Bool {
        switch state {
        case .sentDot, .sentDotThenEnvelope: return true
        default: return false
        }
    }

    /// Seconds to wait in the current state (RFC 5321 §4.5.3.2: 5 minutes for the
    /// greeting, MAIL and RCPT; 2 for DATA; 3 per text block; 10 after the dot).
    public var timeoutSeconds: Int {
        switch state {
        case .sentEnvelope(let t): return t.awaiting.first == .data ? 120 : 300
        case .sendingText: return 180
        case .sentDot, .sentDotThenEnvelope, .sentEmptyDot: return 600
        case .ready: return 300
        case .sentSTARTTLS, .sentAuth, .sentAuthLogin, .sentAuthCancel: return 120
        case .handshaking, .awaitingSecret: return 60
        default: return 300
        }
    }

    // MARK: events

    /// A reply from the upstream.
    public mutating func receive(_ reply: Reply) -> [Action] {
        if reply.code == 421 {
            // RFC 5321 §3.8: the upstream is closing; everything in flight is deferred.
            return abandon(.rejected(reply))
        }
        switch state {
        case .awaitingGreeting:
            guard reply.code == 220 else {
                state = .sentQUIT
                return [.send(command("QUIT")), .close(failure: .rejected(reply))]
            }
            state = .sentEHLO
            return [.send(command("EHLO " + heloName))]
        case .sentEHLO:
            if reply.code == 250 {
                capabilities = Capabilities(ehloLines: reply.lines)
                return afterEHLO()
            }
            if needsESMTP {
                return giveUp(security.startTLS && !tlsActive
                    ? .tls("the upstream refused EHLO (\(reply)), so it cannot do STARTTLS")
                    : .auth("the upstream refused EHLO (\(reply)), so it cannot do AUTH"))
            }
            // RFC 5321 §3.2: an old receiver refuses EHLO; fall back to HELO.
            state = .sentHELO
            return [.send(command("HELO " + heloName))]
        case .sentHELO:
            guard reply.code == 250 else { return abandon(.rejected(reply)) }
            capabilities = Capabilities()
            state = .ready
            return [.ready]
        case .sentSTARTTLS:
            // RFC 3207 §4: 220 means go ahead; 454 (TLS not available) or
            // anything else means no TLS, and then no mail.
            guard reply.code == 220 else { return giveUp(.tls("the upstream refused STARTTLS: \(reply)")) }
            state = .handshaking
            return [.startTLS]
        case .sentAuthLogin(let step, var secret):
            guard reply.code == 334 else {
                SASL.wipe(&secret)
                return giveUp(.auth(authRefusal(reply)))
            }
            if step == 0 {
                state = .sentAuthLogin(step: 1, secret: secret)
                return [.send(Base64.encode(Array(security.username.utf8)) + ASCII.crlf)]
            }
            let response = Base64.encode(secret) + ASCII.crlf
            SASL.wipe(&secret)
            state = .sentAuth(.login)
            return [.sendSecret(response)]
        case .sentAuth(let mechanism):
            if reply.code == 235 {
                // RFC 4954 §6: 235 2.7.0 Authentication succeeded.
                authenticatedWith = mechanism
                state = .ready
                return [.ready]
            }
            if reply.code == 334 {
                // XOAUTH2 answers a bad token with a base64 JSON challenge; the
                // client sends an empty response and gets the final 535. Any other
                // challenge after a complete response is cancelled with "*"
                // (RFC 4954 §4).
                let detail = reply.lines.first.flatMap { Base64.decode($0.utf8) }.map { ASCII.printable($0) } ?? ""
                state = .sentAuthCancel(detail: detail)
                return [.send(mechanism == .xoauth2 ? ASCII.crlf : command("*"))]
            }
            return giveUp(.auth(authRefusal(reply)))
        case .sentAuthCancel(let detail):
            return giveUp(.auth(authRefusal(reply) + (detail.isEmpty ? "" : " (\(detail))")))
        case .sentEnvelope(var t):
            return envelopeReply(reply, &t)
        case .sentDot(let t):
            // RFC 5321 §4.3.2: the end of data is answered 250 or an error. A 3xx
            // (the fuzzer sent 354) is no delivery: the upstream is out of step and
            // may or may not hold the message, so defer it (at-least-once) and close.
            if reply.code / 100 == 3 {
                return abandon(.protocolError("unexpected reply \(reply) to the end of data"))
            }
            var actions = endOfDataOutcome(reply, t)
            state = .ready
            actions.append(.ready)
            return actions
        case .sentDotThenEnvelope(let t, let next):
            // The same for the end of data; then the next transaction goes on
            // with its envelope's replies, as if it had been started now. RFC
            // 2920 §3.1: its commands are independent of this reply.
            if reply.code / 100 == 3 {
                return abandon(.protocolError("unexpected reply \(reply) to the end of data"))
            }
            let actions = endOfDataOutcome(reply, t)
            state = .sentEnvelope(next)
            return actions
        case .sentEmptyDot:
            return afterFailedTransaction()
        case .sentRSET:
            guard reply.isPositive else { return abandon(.rejected(reply)) }
            state = .ready
            return [.ready]
        case .sentQUIT:
            state = .closed
            return [.close(failure: nil)]
        case .ready, .sendingText, .closed, .handshaking, .awaitingSecret:
            // A reply nobody asked for: the upstream is out of step with us.
            return abandon(.protocolError("unexpected reply \(reply)"))
        }
    }

    // MARK: STARTTLS and AUTH

    var needsESMTP: Bool { (security.startTLS && !tlsActive) || security.auth != .none }

    /// After a 250 to EHLO: STARTTLS if required and not done yet, then AUTH if
    /// configured, then ready for mail.
    mutating func afterEHLO() -> [Action] {
        if security.startTLS && !tlsActive {
            // RFC 3207 §4: only a server that announces STARTTLS takes it; without
            // it, nothing is sent (no fallback to plain text).
            guard capabilities.startTLS else { return giveUp(.tls("the upstream does not offer STARTTLS")) }
            state = .sentSTARTTLS
            return [.send(command("STARTTLS"))]
        }
        if security.auth != .none && authenticatedWith == nil {
            switch SASL.choose(security.auth, offered: capabilities.authMechanisms) {
            case .failure(let f): return giveUp(f)
            case .success(let mechanism):
                state = .awaitingSecret(mechanism)
                return [.needSecret]
            }
        }
        state = .ready
        return [.ready]
    }

    /// The TLS handshake after STARTTLS succeeded: start over with EHLO, as
    /// RFC 3207 §4.2 requires (everything learnt before TLS is discarded).
    public mutating func tlsEstablished() -> [Action] {
        guard case .handshaking = state else { return [] }
        tlsActive = true
        capabilities = Capabilities()
        state = .sentEHLO
        return [.send(command("EHLO " + heloName))]
    }

    /// The AUTH secret, read for this connection. The caller wipes its copy;
    /// this machine keeps one only for AUTH LOGIN's second prompt.
    public mutating func provideSecret(_ secret: [UInt8]) -> [Action] {
        guard case .awaitingSecret(let mechanism) = state else { return [] }
        switch mechanism {
        case .plain:
            // RFC 4954 §4: the initial response goes with the command.
            state = .sentAuth(.plain)
            return [.sendSecret(Array("AUTH PLAIN ".utf8) + SASL.plain(username: security.username, secret: secret) + ASCII.crlf)]
        case .xoauth2:
            state = .sentAuth(.xoauth2)
            return [.sendSecret(Array("AUTH XOAUTH2 ".utf8) + SASL.xoauth2(username: security.username, token: secret) + ASCII.crlf)]
        case .login, .auto, .none:
            state = .sentAuthLogin(step: 0, secret: secret)
            return [.send(command("AUTH LOGIN"))]
        }
    }

    /// The secret could not be read (file mode, command failed): no AUTH, no mail.
    public mutating func secretUnavailable(_ reason: String) -> [Action] {
        guard case .awaitingSecret = state else { return [] }
        return giveUp(.auth(reason))
    }

    func authRefusal(_ reply: Reply) -> String {
        switch reply.code {
        case 535: return "the upstream refused the credentials (\(reply))"
        case 534: return "the upstream wants a stronger mechanism or an app password (\(reply))"
        case 538: return "the upstream requires encryption for this mechanism (\(reply))"
        case 454: return "temporary authentication failure at the upstream (\(reply))"
        default: return "unexpected reply to AUTH (\(reply))"
        }
    }

    /// Ends the session before any mail: QUIT, then close with `failure`.
    mutating func giveUp(_ failure: SenderFailure) -> [Action] {
        if case .sentAuthLogin(_, var secret) = state { SASL.wipe(&secret) }
        state = .closed
        return [.send(command("QUIT")), .close(failure: failure)]
    }

    /// The accepted recipients' outcomes from the reply to the end of data, and
    /// the end of the transaction.
    func endOfDataOutcome(_ reply: Reply, _ t: Transaction) -> [Action] {
        let outcome: RecipientOutcome = reply.code / 100 == 2 ? .delivered : (reply.isPermanent ? .failed : .deferred)
        var actions: [Action] = t.accepted.map { .recipient(index: $0, outcome: outcome, reply: reply) }
        actions.append(.messageDone)
        return actions
    }

    /// Begins the next transaction right behind the end of data, before its
    /// reply: RFC 2920 §3.1 lets message content be the first "command" of a
    /// group, so the text's end, MAIL, the RCPTs and DATA leave in one write and
    /// a connection that carries message after message pays one round trip per
    /// message instead of two (issue 11). Only in `.sentDot`, only when the
    /// upstream announced PIPELINING, the whole envelope fits one group and the
    /// message is within the announced SIZE; otherwise it returns no action and
    /// changes nothing, and the caller starts the message with `start` once the
    /// machine is ready. The outcomes of the finished message come first (with
    /// its `.messageDone`), then those of this one; no `.ready` in between.
    public mutating func startBehindDot(message: OutboundMessage) -> [Action] {
        guard case .sentDot(let done) = state, capabilities.pipelining, !message.recipients.isEmpty else { return [] }
        if let limit = capabilities.maxSize, limit > 0, message.size > limit { return [] }
        if message.smtputf8 && !capabilities.smtpUTF8 { return [] }
        var steps: [Step] = [.mail]
        for i in message.recipients.indices { steps.append(.rcpt(i)) }
        steps.append(.data)
        var t = Transaction(message: message, awaiting: [], unsent: steps)
        let bytes = flushGroup(&t)
        guard t.unsent.isEmpty else { return [] }
        state = .sentDotThenEnvelope(done, next: t)
        return [.send(bytes)]
    }

    /// Begins a transaction for `message`. Only valid when `.ready`.
    public mutating func start(message: OutboundMessage) -> [Action] {
        guard isReady, !message.recipients.isEmpty else { return [] }
        if let limit = capabilities.maxSize, limit > 0, message.size > limit {
            // RFC 1870 §5: do not send what the upstream announced it will refuse.
            let reply = Reply(552, "5.3.4", "message size \(message.size) exceeds the upstream's limit of \(limit) bytes")
            var actions: [Action] = message.recipients.indices.map { .recipient(index: $0, outcome: .failed, reply: reply) }
            actions.append(.messageDone)
            actions.append(.ready)
            return actions
        }
        if message.smtputf8 && !capabilities.smtpUTF8 {
            // RFC 6531 §3.2: a message that needs SMTPUTF8 is not sent to a
            // receiver without it (no downgrade); it is returned as
            // undeliverable, with X.6.7 (RFC 5248, as Postfix does).
            let reply = Reply(553, "5.6.7", "SMTPUTF8 is required, but was not offered by the upstream")
            var actions: [Action] = message.recipients.indices.map { .recipient(index: $0, outcome: .failed, reply: reply) }
            actions.append(.messageDone)
            actions.append(.ready)
            return actions
        }
        var steps: [Step] = [.mail]
        for i in message.recipients.indices { steps.append(.rcpt(i)) }
        steps.append(.data)
        var t = Transaction(message: message, awaiting: [], unsent: steps)
        let bytes = capabilities.pipelining ? flushGroup(&t) : flushOne(&t)
        state = .sentEnvelope(t)
        return [.send(bytes)]
    }

    /// The connection wrote the whole text and the end-of-data marker.
    public mutating func textSent() -> [Action] {
        guard case .sendingText(let t) = state else { return [] }
        state = .sentDot(t)
        return []
    }

    /// Nothing more to send: say QUIT (RFC 5321 §4.1.1.10).
    public mutating func finish() -> [Action] {
        guard isReady else { return [] }
        state = .sentQUIT
        return [.send(command("QUIT"))]
    }

    /// The state's time limit passed without a reply.
    public mutating func timedOut() -> [Action] {
        if state == .sentQUIT { state = .closed; return [.close(failure: nil)] }
        return abandon(.timeout("in state \(state)"))
    }

    /// The connection closed or failed under us.
    public mutating func connectionLost(_ reason: String) -> [Action] {
        if state == .sentQUIT || state == .closed { state = .closed; return [.close(failure: nil)] }
        var actions = abandon(.connection(reason))
        actions.removeAll { if case .close = $0 { return true } else { return false } }
        return actions + [.close(failure: .connection(reason))]
    }

    // MARK: transaction

    mutating func envelopeReply(_ reply: Reply, _ t: inout Transaction) -> [Action] {
        guard let step = t.awaiting.first else { return abandon(.protocolError("unexpected reply \(reply)")) }
        if reply.code / 100 == 3 && step != .data {
            // RFC 5321 §4.3.2: MAIL and RCPT are answered 2xx or an error; a 3xx
            // is not an acceptance, and the upstream is out of step.
            return abandon(.protocolError("unexpected reply \(reply) to \(step == .mail ? "MAIL" : "RCPT")"))
        }
        t.awaiting.removeFirst()
        var actions: [Action] = []
        switch step {
        case .mail:
            if reply.isPositive {
                t.mailAccepted = true
            } else {
                // RFC 5321 §4.1.1.2: a refused MAIL refuses every recipient with it.
                let outcome: RecipientOutcome = reply.isPermanent ? .failed : .deferred
                for i in t.message.recipients.indices {
                    actions.append(.recipient(index: i, outcome: outcome, reply: reply))
                    t.reported.insert(i)
                }
                t.unsent = []
            }
        case .rcpt(let i):
            if t.mailAccepted {
                if reply.isPositive {
                    t.accepted.append(i)
                } else {
                    actions.append(.recipient(index: i, outcome: reply.isPermanent ? .failed : .deferred, reply: reply))
                    t.reported.insert(i)
                }
            }
        case .data:
            if reply.code == 354 {
                if t.accepted.isEmpty {
                    // RFC 2920 §3.1: the upstream accepted DATA for no recipient; end
                    // it with an empty text and forget the reply.
                    state = .sentEmptyDot
                    return actions + [.send([ASCII.dot, ASCII.cr, ASCII.lf])]
                }
                state = .sendingText(t)
                return actions + [.sendText]
            }
            let outcome: RecipientOutcome = reply.isPermanent ? .failed : .deferred
            for i in t.accepted {
                actions.append(.recipient(index: i, outcome: outcome, reply: reply))
                t.reported.insert(i)
            }
            t.accepted = []
        }
        if !t.awaiting.isEmpty {
            state = .sentEnvelope(t)
            return actions
        }
        if t.unsent == [.data] && t.accepted.isEmpty {
            // Every recipient so far was refused: do not send DATA.
            t.unsent = []
        }
        if !t.unsent.isEmpty {
            let bytes = capabilities.pipelining ? flushGroup(&t) : flushOne(&t)
            state = .sentEnvelope(t)
            return actions + [.send(bytes)]
        }
        // The transaction ended without text being sent.
        return actions + afterFailedTransaction(mailWasAccepted: t.mailAccepted)
    }

    /// After a transaction that did not end with the end-of-data reply, RSET so the
    /// next MAIL starts clean (RFC 5321 §4.1.1.5); no RSET is needed when MAIL
    /// itself was refused.
    mutating func afterFailedTransaction(mailWasAccepted: Bool = true) -> [Action] {
        if mailWasAccepted {
            state = .sentRSET
            return [.messageDone, .send(command("RSET"))]
        }
        state = .ready
        return [.messageDone, .ready]
    }

    /// Gives up on the connection: every recipient of the transaction in flight that
    /// has no outcome yet is deferred, with a 4xx version of the reason.
    mutating func abandon(_ failure: SenderFailure) -> [Action] {
        var actions: [Action] = []
        let reply = failure.reply
        let transient = reply.isPermanent ? Reply(451, "4.4.0", reply.description) : reply
        switch state {
        case .sentEnvelope(let t), .sendingText(let t), .sentDot(let t):
            for i in t.message.recipients.indices where !t.reported.contains(i) {
                actions.append(.recipient(index: i, outcome: .deferred, reply: transient))
            }
            actions.append(.messageDone)
        case .sentDotThenEnvelope(let t, let next):
            // Both transactions, in the order they were started.
            for m in [t, next] {
                for i in m.message.recipients.indices where !m.reported.contains(i) {
                    actions.append(.recipient(index: i, outcome: .deferred, reply: transient))
                }
                actions.append(.messageDone)
            }
        case .sentEmptyDot:
            // Every recipient was answered already; only the transaction is open.
            actions.append(.messageDone)
        default: break
        }
        state = .closed
        actions.append(.close(failure: failure))
        return actions
    }

    // MARK: commands

    func command(_ text: String) -> [UInt8] { Array(text.utf8) + ASCII.crlf }

    func bytes(for step: Step, _ m: OutboundMessage) -> [UInt8] {
        switch step {
        case .mail:
            var s = "MAIL FROM:\(m.from)"
            if capabilities.maxSize != nil { s += " SIZE=\(m.size)" }
            if m.eightBit && capabilities.eightBitMIME { s += " BODY=8BITMIME" }
            // RFC 6531 §3.4 (`start` saw that it is offered).
            if m.smtputf8 && capabilities.smtpUTF8 { s += " SMTPUTF8" }
            // RFC 3461 §5 (relaying): RET and ENVID only as the client gave them,
            // and only to a receiver that offers DSN; otherwise they are dropped
            // (no "relayed" notice for NOTIFY=SUCCESS is sent: see Delivery).
            if capabilities.dsn {
                if let r = m.ret { s += " RET=" + r.text }
                if let e = m.envelopeID { s += " ENVID=" + ASCII.string(e) }
            }
            return command(s)
        case .rcpt(let i):
            var s = "RCPT TO:\(m.recipients[i])"
            if capabilities.dsn && i < m.recipientParameters.count {
                // RFC 3461 §5 (relaying): NOTIFY and ORCPT passed on as received.
                let p = m.recipientParameters[i]
                if let n = p.notify { s += " NOTIFY=" + n.text }
                if let o = p.orcpt { s += " ORCPT=" + ASCII.string(o) }
            }
            return command(s)
        case .data: return command("DATA")
        }
    }

    /// Bytes of pipelined commands sent before waiting for their replies. Usually
    /// the whole envelope fits; a message with hundreds of recipients goes out in
    /// several groups, so a group always fits the connection's output buffer.
    public static let maxGroupBytes = 8 * 1024

    /// RFC 2920 §3.1: MAIL, the RCPTs and DATA go out together, DATA last in its
    /// group; a long envelope is split into groups of at most `maxGroupBytes`.
    mutating func flushGroup(_ t: inout Transaction) -> [UInt8] {
        var out: [UInt8] = []
        while let s = t.unsent.first {
            let b = bytes(for: s, t.message)
            if !out.isEmpty && out.count + b.count > Self.maxGroupBytes { break }
            out += b
            t.awaiting.append(s)
            t.unsent.removeFirst()
        }
        return out
    }

    mutating func flushOne(_ t: inout Transaction) -> [UInt8] {
        let s = t.unsent.removeFirst()
        t.awaiting.append(s)
        return bytes(for: s, t.message)
    }
}
