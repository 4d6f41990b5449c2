/// What a receiver transaction has gathered by the time DATA starts.
public struct Envelope: Equatable, Sendable {
    public var heloName: String
    /// EHLO (true) or HELO (false): chooses "ESMTP"/"SMTP" in the trace header.
    public var esmtp: Bool
    public var from: Mailbox
    public var recipients: [Mailbox]
    /// The client declared `BODY=8BITMIME` (RFC 6152).
    public var eightBit: Bool
    /// The message came over TLS (STARTTLS or implicit TLS): "ESMTPS" in the
    /// trace header (RFC 3848 §2).
    public var tls = false
    /// MAIL said `SMTPUTF8` (RFC 6531 §3.4): the message may hold UTF-8
    /// addresses and header fields, and goes upstream only to a receiver that
    /// offers SMTPUTF8 (§3.2).
    public var smtputf8 = false
    /// MAIL's `RET=` (RFC 3461 §4.3); nil when not given.
    public var ret: DSNReturn? = nil
    /// MAIL's `ENVID=` as received, xtext (RFC 3461 §4.4); nil when not given.
    public var envelopeID: [UInt8]? = nil
    /// RCPT's `NOTIFY=` and `ORCPT=` (RFC 3461 §4.1, §4.2), one per recipient in
    /// `recipients`' order; empty when no recipient had any.
    public var recipientParameters: [RecipientParameters] = []
    /// The user the client authenticated as (RFC 4954 §4), for the trace
    /// header ("ESMTPA", RFC 3848 §2) and the journal; nil without AUTH.
    public var authUser: String? = nil

    public init(heloName: String, esmtp: Bool, from: Mailbox, recipients: [Mailbox], eightBit: Bool) {
        self.heloName = heloName
        self.esmtp = esmtp
        self.from = from
        self.recipients = recipients
        self.eightBit = eightBit
    }
}

/// The settings a receiver session needs, taken from `[receiver]`.
public struct ReceiverSettings: Sendable {
    public var hostname: String
    public var maxMessageSize: Int
    public var maxRecipients: Int
    public var recipients: RecipientPolicy
    /// Error replies after which the session is closed (Postfix's
    /// smtpd_hard_error_limit): a confused or hostile client cannot loop forever.
    public var maxErrors = 20
    /// RCPTs beyond `maxRecipients` answered 452 before each further one counts as
    /// an error (Postfix's smtpd_recipient_overshoot_limit): a client that simply
    /// has more recipients than we take keeps its transaction (RFC 5321
    /// §4.5.3.1.10), one that sends thousands is eventually cut off.
    public var recipientOvershootLimit = 1000
    /// `[aliases]`: local recipients (no domain, `@localhost`, `@` the board's
    /// names) are replaced by their addresses at RCPT; an unmapped one gets
    /// 550 5.1.1 at once rather than a bounce later.
    public var aliases = AliasMap.empty
    /// `[receiver] tls_cert` is set: STARTTLS is offered (RFC 3207 §4).
    public var tlsAvailable = false
    /// `[receiver] require_tls`: MAIL needs TLS first, except from clients
    /// `start` says are exempt (loopback and the local socket).
    public var requireTLS = false
    /// `[receiver] auth_users` is loaded: AUTH is offered over TLS and on
    /// loopback, and a client outside `allow_clients` must use it before
    /// MAIL (issue 12 item 2).
    public var authAvailable = false

    public init(hostname: String, maxMessageSize: Int, maxRecipients: Int, recipients: RecipientPolicy) {
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.recipients = recipients
    }
}

/// The receiver side of one SMTP session (RFC 5321 §4.1 and §3.3), as a pure state
/// machine: it is fed framed command lines and spool outcomes and returns actions
/// for the connection to perform. It never touches a socket, file or clock.
///
/// Each command has a `check…` step that parses and validates it and returns
/// either the refusal (never changing state) or the parsed value, and a
/// `proceed…` step that applies that value, in the manner of OpenSMTPD's
/// smtp_session.c. The state carries the data valid in it, so the connection asks
/// the machine what it expects (`expectsText`, `isAwaitingCommit`, `isClosed`)
/// instead of keeping flags of its own.
///
/// Message text does not pass through here: after `.startData` the connection
/// decodes it (`DataDecoder`) straight into the spool and reports only its size.
public struct SMTPReceiver: Sendable {
    /// What a transaction has gathered before DATA.
    public struct Transaction: Equatable, Sendable {
        public var from: Mailbox
        /// The client declared `BODY=8BITMIME` (RFC 6152).
        public var eightBit: Bool
        /// MAIL's SMTPUTF8, RET and ENVID (RFC 6531 §3.4, RFC 3461 §4.3–4.4).
        public var smtputf8 = false
        public var ret: DSNReturn? = nil
        public var envelopeID: [UInt8]? = nil
        public var recipients: [Mailbox] = []
        /// NOTIFY and ORCPT of each of `recipients` (RFC 3461 §4.1–4.2).
        public var recipientParameters: [RecipientParameters] = []
        /// Canonical forms of `recipients`, so a repeated RCPT is accepted once.
        var recipientKeys: Set<[UInt8]> = []
        /// RCPTs refused for a reason of their own (not the limit): with no
        /// recipient accepted, DATA then gets 554 rather than 503 (RFC 2920 §3.1).
        var refusedRecipients = 0
        /// RCPTs answered 452 because `maxRecipients` were accepted already.
        var excessRecipients = 0
    }

    /// Named for what has happened in the session.
    public enum State: Equatable, Sendable {
        /// Greeting sent; no HELO/EHLO yet.
        case connected
        /// HELO/EHLO done, no transaction open.
        case greeted
        /// MAIL accepted, no recipient yet.
        case gotMail(Transaction)
        /// MAIL and at least one RCPT accepted.
        case gotRecipients(Transaction)
        /// 354 sent; message text is streaming into the spool. `size` counts the
        /// decoded text; `oversize` means it passed `maxMessageSize` and was
        /// thrown away, to be refused at the end of data (RFC 1870 §6.3).
        case receivingData(Envelope, size: Int, oversize: Bool)
        /// A BDAT chunk's bytes are being read (RFC 3030 §2), into the spool or,
        /// after a refusal, into nothing.
        case receivingChunk(Chunk)
        /// Between BDAT chunks of a message: its spool transaction is open.
        case gotChunks(Envelope, size: Int)
        /// End of data seen; waiting for the spool to make the message durable.
        case awaitingCommit(Envelope)
        case closed

        var phase: Phase {
            switch self {
            case .connected: return .connected
            case .greeted: return .greeted
            case .gotMail: return .gotMail
            case .gotRecipients: return .gotRecipients
            case .receivingData: return .receivingData
            case .receivingChunk: return .receivingChunk
            case .gotChunks: return .gotChunks
            case .awaitingCommit: return .awaitingCommit
            case .closed: return .closed
            }
        }
    }

    /// The BDAT chunk being read.
    public struct Chunk: Equatable, Sendable {
        /// The message the chunk belongs to; nil when the BDAT was refused and
        /// its bytes are read only to be thrown away (RFC 3030 §2: the chunk is
        /// on its way whatever the reply, and must never be read as commands).
        public var envelope: Envelope?
        /// The chunk size the command declared, and the bytes of it still to come.
        public var declared: Int
        public var remaining: Int
        public var last: Bool
        /// Decoded text of the message so far, all chunks.
        public var size: Int
        /// The message passed `maxMessageSize`: thrown away, 552 at the chunk's end.
        public var oversize: Bool
        /// For a refused BDAT: the reply, sent once its bytes are read.
        public var refusal: Reply?
    }

    /// The state without its data, for logs and tests.
    public enum Phase: Equatable, Sendable, CustomStringConvertible {
        case connected, greeted, gotMail, gotRecipients, receivingData, receivingChunk, gotChunks, awaitingCommit, closed

        public var description: String {
            switch self {
            case .connected: return "connected"
            case .greeted: return "greeted"
            case .gotMail: return "gotMail"
            case .gotRecipients: return "gotRecipients"
            case .receivingData: return "receivingData"
            case .receivingChunk: return "receivingChunk"
            case .gotChunks: return "gotChunks"
            case .awaitingCommit: return "awaitingCommit"
            case .closed: return "closed"
            }
        }
    }

    public enum Action: Equatable, Sendable {
        case reply(Reply)
        /// DATA accepted: open a spool transaction for this envelope and decode the
        /// following bytes as message text.
        case startData(Envelope)
        /// Throw away the open spool transaction (over-size, RSET, disconnect).
        case abortMessage
        /// Make the message durable; answer later with `committed` or `commitFailed`.
        case commitMessage
        /// STARTTLS was accepted (RFC 3207 §4): once the 220 before this action
        /// is sent, discard every byte the client sent after the command (it
        /// was sent in the clear and must never be executed: the
        /// command-injection class of CVE-2011-0411) and start the handshake.
        case startTLS
        /// A command was refused; log it as a `rejected` event.
        case rejected(command: String, reply: Reply)
        /// An AUTH exchange gave credentials: take them (`takeCredentials`),
        /// check them, and report the verdict with `authChecked`. No command
        /// is read meanwhile (`isAwaitingAuth`).
        case checkCredentials
        /// AUTH succeeded: log it (never the password).
        case authSucceeded(user: String, mechanism: String)
        /// AUTH failed for want of the right credentials (a wrong password, an
        /// unknown user, an authzid refused): count the failure against the
        /// client, log it (in place of `.rejected`), and hold the reply that
        /// follows for the throttle's delay (`AuthThrottle`). `user` is the
        /// name the client gave, if any.
        case authFailed(user: String?, reply: Reply)
        case close
    }

    /// What the password check said (`PasswordChecker`).
    public enum AuthVerdict: Equatable, Sendable {
        case match
        case mismatch
        /// The check could not run (too many waiting, an unusable hash): 454.
        case unavailable
    }

    public let settings: ReceiverSettings
    public private(set) var state: State = .connected {
        didSet { phase = state.phase }
    }
    /// Set by the connection before each line: false while the spool is over
    /// `max_size` or failing, so MAIL gets 452 4.3.1 instead of a promise we cannot keep.
    public var spoolAcceptsMail = true

    private var clientAllowed = true
    private var clientText = ""
    /// TLS is active (started with STARTTLS, or implicit from the first byte).
    public private(set) var tlsActive = false
    /// `require_tls` does not apply (loopback, the local submission socket).
    private var tlsExempt = false
    /// From the last HELO/EHLO (RFC 5321 §4.1.1.1).
    private var heloName = ""
    /// EHLO (true) or HELO (false).
    private var esmtp = false
    private var errors = 0
    /// Set by the connection before each line: the client's address is locked
    /// out of AUTH after repeated failures (`AuthThrottle`), and AUTH gets 454.
    public var authLockedOut = false
    /// The AUTH exchange in progress (RFC 4954 §4): lines go to it, not to
    /// the command parser.
    private var sasl: SASLServer? = nil
    /// Credentials an exchange gave, until the connection takes them; and the
    /// user and mechanism while the check runs.
    private var credentials: (user: [UInt8], password: [UInt8])? = nil
    private var checking: (user: String, mechanism: String)? = nil
    /// The user a successful AUTH authenticated (RFC 4954 §4): it stays for
    /// the session (RSET and EHLO keep it; STARTTLS forgets it, RFC 3207 §4.2).
    public private(set) var authenticatedUser: String? = nil

    public init(settings: ReceiverSettings) {
        self.settings = settings
    }

    // MARK: what the connection asks

    /// `state` without its payload, kept as it changes: the connection asks
    /// for it dozens of times per message, and reading it from `state` copied
    /// the payload (retains and releases) each time.
    public private(set) var phase: Phase = .connected

    /// Input is message text for the DATA decoder, not command lines.
    public var expectsText: Bool { phase == .receivingData }
    /// The end of data was seen; the spool's verdict is awaited before anything
    /// else may be read or answered (replies stay in order, RFC 2920 §3.1).
    public var isAwaitingCommit: Bool { phase == .awaitingCommit }
    public var isClosed: Bool { phase == .closed }
    /// Credentials are being checked: nothing more is read or answered until
    /// `authChecked` (replies stay in order, RFC 2920 §3.1).
    public var isAwaitingAuth: Bool { checking != nil }
    /// AUTH may be used now: `auth_users` is loaded and the session is over
    /// TLS or from loopback or the local socket, so a password never crosses
    /// the LAN in the clear (RFC 4954 §4 leaves when to offer AUTH to the
    /// server; Postfix's smtpd_tls_auth_only, here always on off loopback).
    public var authOffered: Bool { settings.authAvailable && (tlsActive || tlsExempt) }

    /// The envelope of the message being received or committed.
    public var envelope: Envelope? {
        switch state {
        case .receivingData(let e, _, _), .awaitingCommit(let e), .gotChunks(let e, _): return e
        case .receivingChunk(let c): return c.envelope
        default: return nil
        }
    }

    /// Bytes of a BDAT chunk still to be read, raw, before the next command;
    /// nil when no chunk is being read.
    public var chunkRemaining: Int? {
        if case .receivingChunk(let c) = state { return c.remaining }
        return nil
    }

    /// The chunk being read is the message's last (`BDAT n LAST`).
    public var chunkIsLast: Bool {
        if case .receivingChunk(let c) = state { return c.last }
        return false
    }

    // MARK: events

    /// The connection was accepted. `clientAllowed` is the `allow_clients` verdict;
    /// a refused client is still greeted (like Postfix's delayed reject) and gets
    /// 550 5.7.1 at MAIL, so its software sees a clear reason.
    /// `tls` is set for an implicit-TLS listener, where the handshake came
    /// before the greeting; `tlsExempt` for clients `require_tls` spares.
    public mutating func start(clientAllowed: Bool, clientText: String, tls: Bool = false,
                               tlsExempt: Bool = false) -> [Action] {
        self.clientAllowed = clientAllowed
        self.clientText = clientText
        self.tlsActive = tls
        self.tlsExempt = tlsExempt
        // RFC 5321 §4.2: the greeting carries no enhanced code (RFC 2034 §3).
        return [.reply(Reply(220, nil, "\(settings.hostname) ESMTP Postern"))]
    }

    /// One command line, without CRLF.
    public mutating func receive(line: ArraySlice<UInt8>) -> [Action] {
        switch phase {
        case .closed, .receivingData, .receivingChunk, .awaitingCommit:
            // The connection does not feed lines in these states; ignore defensively.
            return []
        default: break
        }
        if isAwaitingAuth { return [] }
        if var exchange = sasl {
            sasl = nil
            let step = exchange.receive(line: line)
            return authStep(exchange, step)
        }
        if line.contains(0) {
            return refuse(ASCII.printable(line.prefix(16)), Reply(500, "5.5.2", "Error: NUL byte in command"))
        }
        let verbEnd = line.firstIndex(of: ASCII.space) ?? line.endIndex
        let verb = ASCII.lowercased(line[..<verbEnd])
        // RFC 5321 §4.5.3.1.4: 512 octets with the CRLF. Only MAIL and RCPT grow
        // with their extensions' parameters (RFC 1870 §3, RFC 3461 §5, RFC 6531
        // §3.4), up to the framer's `extendedLineLength`; and AUTH, whose initial
        // response may be long (RFC 4954 §4).
        if line.count > 510 && verb != Self.mailVerb && verb != Self.rcptVerb && verb != Self.authVerb {
            return receiveLineTooLong()
        }
        var arg = line[verbEnd...]
        if arg.first == ASCII.space { arg = arg.dropFirst() }
        switch String(decoding: verb, as: UTF8.self) {
        case "ehlo": return hello(arg, esmtp: true)
        case "helo": return hello(arg, esmtp: false)
        case "mail": return mail(arg)
        case "rcpt": return rcpt(arg)
        case "data": return data(arg)
        case "rset": return rset(arg)
        case "noop": return [.reply(Reply(250, "2.0.0", "Ok"))]
        case "quit": return quit(arg)
        case "starttls": return startTLS(arg)
        case "bdat": return bdat(arg)
        case "auth": return auth(arg)
        case "vrfy":
            // RFC 5321 §3.5.3: 252 when we will not verify but would accept.
            return [.reply(Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"))]
        case "help":
            return [.reply(Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
                                     + (settings.tlsAvailable ? " STARTTLS" : "") + (authOffered ? " AUTH" : "")))]
        case "expn", "etrn", "turn":
            return refuse(String(decoding: verb, as: UTF8.self).uppercasedASCII,
                          Reply(502, "5.5.1", "Error: command not implemented"))
        default:
            return refuse(ASCII.printable(line.prefix(32)), Reply(500, "5.5.2", "Error: command not recognized"))
        }
    }

    /// The longest command line the connection frames, CRLF included: a MAIL
    /// or RCPT with every parameter at its longest (a 256-octet path, SIZE,
    /// BODY, RET, a 100-character ENVID and a 500-octet ORCPT, both xtext), as
    /// Postfix's smtpd frames lines of up to 2,048 octets.
    public static let extendedLineLength = 2048
    static let mailVerb = Array("mail".utf8), rcptVerb = Array("rcpt".utf8), authVerb = Array("auth".utf8)

    /// A command line longer than 512 octets (RFC 5321 §4.5.3.1.4), or a MAIL
    /// or RCPT longer than `extendedLineLength`.
    public mutating func receiveLineTooLong() -> [Action] {
        if var exchange = sasl {
            // RFC 4954 §6: 500 5.5.6, and the exchange ends.
            sasl = nil
            return authStep(exchange, exchange.receiveTooLongLine())
        }
        return refuse("(too long)", Reply(500, "5.5.2", "Error: line too long"))
    }

    /// A command line with a bare CR or LF (RFC 5321 §2.3.8). It ends an AUTH
    /// exchange in progress: the line cannot be the response.
    public mutating func receiveBareLineEnding() -> [Action] {
        sasl = nil
        return refuse("(bare CR or LF)", Reply(500, "5.5.2", "Error: bare <CR> or <LF> in command; lines must end with <CR><LF>"))
    }

    /// `count` more bytes of decoded message text arrived (DATA or a BDAT chunk).
    public mutating func receiveText(count: Int) -> [Action] {
        if case .receivingChunk(var c) = state {
            guard c.envelope != nil, !c.oversize else { return [] }
            if count > settings.maxMessageSize - c.size {
                c.oversize = true
                state = .receivingChunk(c)
                return [.abortMessage]
            }
            c.size += count
            state = .receivingChunk(c)
            return []
        }
        guard case .receivingData(let envelope, let size, let oversize) = state, !oversize else { return [] }
        // Compared by subtraction: `size + count` cannot overflow a 32-bit Int.
        if count > settings.maxMessageSize - size {
            state = .receivingData(envelope, size: size, oversize: true)
            return [.abortMessage]
        }
        state = .receivingData(envelope, size: size + count, oversize: false)
        return []
    }

    /// The end-of-data marker arrived (RFC 5321 §4.1.1.4).
    public mutating func receiveEndOfData() -> [Action] {
        guard case .receivingData(let envelope, _, let oversize) = state else { return [] }
        if oversize {
            // RFC 1870 §6.3 / RFC 3463: 552 5.3.4, message too big for system.
            let reply = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)")
            state = .greeted
            return countError(.rejected(command: "DATA", reply: reply), reply)
        }
        state = .awaitingCommit(envelope)
        return [.commitMessage]
    }

    /// `count` bytes of the BDAT chunk were read (and, unless it was refused,
    /// their text reported with `receiveText` and stored). At the chunk's end:
    /// 250 for a chunk of a message that goes on, the commit after the last,
    /// or the refusal (RFC 3030 §2).
    public mutating func receiveChunk(count: Int) -> [Action] {
        guard case .receivingChunk(var c) = state else { return [] }
        c.remaining -= min(max(count, 0), c.remaining)
        guard c.remaining == 0 else {
            state = .receivingChunk(c)
            return []
        }
        if let refusal = c.refusal {
            // A transaction a refused BDAT belonged to has failed (RFC 3030 §2:
            // the client sends no more chunks of it).
            state = heloName.isEmpty ? .connected : .greeted
            return refuse("BDAT", refusal)
        }
        guard let envelope = c.envelope else { state = .greeted; return [] }
        if c.oversize {
            state = .greeted
            let reply = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)")
            return countError(.rejected(command: "BDAT", reply: reply), reply)
        }
        if c.last {
            state = .awaitingCommit(envelope)
            return [.commitMessage]
        }
        state = .gotChunks(envelope, size: c.size)
        return [.reply(Reply(250, "2.0.0", "Ok: \(c.declared) octets received"))]
    }

    /// The spool made the message durable: now, and only now, reply 250
    /// (RFC 5321 §6.1; DESIGN.md principle 4).
    public mutating func committed(queueID: String) -> [Action] {
        guard isAwaitingCommit else { return [] }
        state = .greeted
        return [.reply(Reply(250, "2.0.0", "Ok: queued as \(queueID)"))]
    }

    /// The spool could not store the message (disk full, quota, I/O error). A 4xx
    /// keeps the message with the client, which will retry; never a 5xx
    /// (issue 3: 452 4.3.1 for ENOSPC and EIO alike).
    public mutating func commitFailed() -> [Action] {
        guard isAwaitingCommit || expectsText else { return [] }
        let reply = Reply(452, "4.3.1", "Error: insufficient system storage, try again later")
        state = .greeted
        return [.rejected(command: "DATA", reply: reply), .reply(reply)]
    }

    /// The client did not complete a command, or a block of message text, within
    /// `[receiver] timeout` (RFC 5321 §4.5.3.2.5 and §4.5.3.2.7).
    public mutating func timedOut() -> [Action] {
        closeWith(Reply(421, "4.4.2", "\(settings.hostname) Error: timeout exceeded"))
    }

    /// The daemon is stopping (RFC 5321 §3.8: 421 and close).
    public mutating func shutdown() -> [Action] {
        closeWith(Reply(421, "4.3.2", "\(settings.hostname) Service shutting down, closing transmission channel"))
    }

    /// The client closed the connection, or it broke. A message still being
    /// received is thrown away; one awaiting its commit stays (it is complete,
    /// and at-least-once delivery allows queueing it unanswered).
    public mutating func disconnected() -> [Action] {
        forgetAuthExchange()
        let actions: [Action] = isStoring ? [.abortMessage] : []
        if !isAwaitingCommit { state = .closed }
        return actions
    }

    /// A spool transaction is open for the message: text is going into it, or
    /// (between BDAT chunks) will.
    public var isStoring: Bool {
        switch state {
        case .receivingData(_, _, let oversize): return !oversize
        case .receivingChunk(let c): return c.envelope != nil && !c.oversize
        case .gotChunks: return true
        default: return false
        }
    }

    // MARK: commands

    /// EHLO/HELO (RFC 5321 §4.1.1.1). Either one resets any transaction (§4.1.4).
    mutating func hello(_ arg: ArraySlice<UInt8>, esmtp: Bool) -> [Action] {
        let name = ASCII.trimmed(arg)
        if name.isEmpty {
            return refuse(esmtp ? "EHLO" : "HELO", Reply(501, "5.5.4", "Syntax: \(esmtp ? "EHLO" : "HELO") hostname"))
        }
        let first = name.prefix { !ASCII.isSpace($0) }
        // A domain or address literal (RFC 5321 §4.1.1.1, §4.1.2) is printable
        // ASCII. The name is not checked further (devices send "localhost" or
        // their model name), but it goes into the Received: header, where 8-bit
        // and control bytes have no place (RFC 5322 §3.6.7).
        guard first.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            return refuse(esmtp ? "EHLO" : "HELO", Reply(501, "5.5.4", "Syntax: \(esmtp ? "EHLO" : "HELO") hostname (printable ASCII)"))
        }
        heloName = ASCII.string(first.prefix(255))
        self.esmtp = esmtp
        // A message between BDAT chunks is thrown away with its transaction.
        let abort: [Action] = isStoring ? [.abortMessage] : []
        state = .greeted
        if !esmtp { return abort + [.reply(Reply(250, nil, settings.hostname))] }
        // RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2034.
        var keywords = [
            settings.hostname,
            "PIPELINING",
            "SIZE \(settings.maxMessageSize)",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            // RFC 3030 §2 (BDAT); not BINARYMIME: text is kept and relayed as lines.
            "CHUNKING",
            "SMTPUTF8", "DSN", // RFC 6531 §3.1, RFC 3461 §4
        ]
        // RFC 3207 §4.2: not offered again once TLS is active.
        if settings.tlsAvailable && !tlsActive { keywords.append("STARTTLS") }
        // RFC 4954 §3; over TLS or from loopback only (`authOffered`).
        if authOffered { keywords.append("AUTH PLAIN LOGIN") }
        return abort + [.reply(Reply(250, nil, keywords))]
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2).
    mutating func mail(_ arg: ArraySlice<UInt8>) -> [Action] {
        switch checkMail(arg) {
        case .failure(let refusal): return refuse("MAIL", refusal)
        case .success(let transaction): return proceedMail(transaction)
        }
    }

    /// Parses and validates MAIL; returns the transaction it opens.
    func checkMail(_ arg: ArraySlice<UInt8>) -> Result<Transaction, Reply> {
        switch phase {
        case .connected: return .failure(Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
        case .gotMail, .gotRecipients, .gotChunks: return .failure(Reply(503, "5.5.1", "Error: nested MAIL command"))
        default: break
        }
        let path: PathArgument
        // Parsed with the UTF-8 syntax (RFC 6531 §3.3) before it is known whether
        // the parameters hold SMTPUTF8: a UTF-8 address without it is refused
        // below with the code RFC 6531 §3.5 names, not as bad syntax.
        switch PathArgument.parse(arg, prefix: "FROM:", allowNull: true, utf8: true) {
        case .failure(.missingPrefix): return .failure(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
        case .failure(.badPath): return .failure(Reply(501, "5.1.7", "Bad sender address syntax"))
        case .failure(.badParameter): return .failure(Reply(501, "5.5.4", "Syntax error in parameters"))
        case .success(let p): path = p
        }
        var sawSize = false, sawBody = false, eightBit = false
        var smtputf8 = false, ret: DSNReturn? = nil, envelopeID: [UInt8]? = nil, sawAuth = false
        for p in path.parameters {
            switch p.keyword {
            case "SIZE" where !sawSize:
                // RFC 1870 §6.1: refuse up front when the declared size is too big.
                sawSize = true
                // Any number of digits: parseDecimal saturates at Int.max, which
                // is too large, on a 32-bit board too.
                guard let size = p.value.flatMap({ ASCII.parseDecimal($0.utf8) }) else {
                    return .failure(Reply(501, "5.5.4", "Bad SIZE parameter"))
                }
                if size > settings.maxMessageSize {
                    return .failure(Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)"))
                }
            case "BODY" where !sawBody:
                sawBody = true
                switch p.value?.uppercasedASCII {
                case "7BIT": eightBit = false
                case "8BITMIME": eightBit = true
                default: return .failure(Reply(501, "5.5.4", "Bad BODY parameter"))
                }
            case "SMTPUTF8":
                // RFC 6531 §3.4: a keyword without a value, given once.
                guard !smtputf8, p.value == nil else { return .failure(Reply(501, "5.5.4", "Bad SMTPUTF8 parameter")) }
                smtputf8 = true
            case "RET":
                // RFC 3461 §4.3; each DSN parameter at most once (§4).
                guard ret == nil, let v = p.value, let r = DSNParameters.ret(v.utf8) else {
                    return .failure(Reply(501, "5.5.4", "Bad RET parameter"))
                }
                ret = r
            case "ENVID":
                // RFC 3461 §4.4: xtext, at most 100 characters.
                guard envelopeID == nil, let v = p.value, let e = DSNParameters.envelopeID(v.utf8) else {
                    return .failure(Reply(501, "5.5.4", "Bad ENVID parameter"))
                }
                envelopeID = e
            case "AUTH" where authOffered && !sawAuth:
                // RFC 4954 §5: "<>" or an xtext mailbox. Checked and not
                // trusted: Postern behaves as for AUTH=<> and passes none on.
                sawAuth = true
                guard let v = p.value, v == "<>" || DSNParameters.decodeXtext(v.utf8) != nil else {
                    return .failure(Reply(501, "5.5.4", "Bad AUTH parameter"))
                }
            default:
                return .failure(Reply(555, "5.5.4", "Unsupported option: \(p.keyword)"))
            }
        }
        if !smtputf8 && !path.mailbox.isASCII {
            // RFC 6531 §3.5: a UTF-8 address outside an SMTPUTF8 transaction is
            // refused with 553 and X.6.7, "Non-ASCII addresses not permitted
            // for that sender/recipient" (RFC 5248).
            return .failure(Reply(553, "5.6.7", "Non-ASCII sender address not permitted without SMTPUTF8"))
        }
        if !smtputf8 && path.parameters.contains(where: { $0.value.map { !$0.utf8.allSatisfy { $0 < 0x80 } } ?? false }) {
            return .failure(Reply(501, "5.5.4", "Syntax error in parameters (UTF-8 needs SMTPUTF8)"))
        }
        if settings.requireTLS && !tlsActive && !tlsExempt {
            // RFC 3207 §4: "530 Must issue a STARTTLS command first".
            return .failure(Reply(530, "5.7.0", "Must issue a STARTTLS command first"))
        }
        if !clientAllowed && authenticatedUser == nil {
            // With `auth_users`, a client outside `allow_clients` relays once it
            // has authenticated (RFC 4954 §6: 530 5.7.0 Authentication required).
            if settings.authAvailable { return .failure(Reply(530, "5.7.0", "Authentication required")) }
            return .failure(Reply(550, "5.7.1", "Client host \(clientText) is not allowed to send mail here"))
        }
        if !spoolAcceptsMail {
            return .failure(Reply(452, "4.3.1", "Error: insufficient system storage, try again later"))
        }
        return .success(Transaction(from: path.mailbox, eightBit: eightBit, smtputf8: smtputf8, ret: ret,
                                    envelopeID: envelopeID))
    }

    mutating func proceedMail(_ transaction: Transaction) -> [Action] {
        state = .gotMail(transaction)
        return [.reply(Reply(250, "2.1.0", "Ok"))]
    }

    /// Why a RCPT is not taken.
    enum RcptRefusal: Error, Equatable {
        /// Refused for itself: syntax, parameters, policy, sequence.
        case refused(Reply)
        /// `maxRecipients` are accepted already (RFC 5321 §4.5.3.1.10).
        case tooMany
    }

    /// RCPT TO (RFC 5321 §4.1.1.3).
    mutating func rcpt(_ arg: ArraySlice<UInt8>) -> [Action] {
        switch checkRcpt(arg) {
        case .success(let (mailboxes, parameters)): return proceedRcpt(mailboxes, parameters)
        case .failure(.refused(let reply)):
            updateTransaction { $0.refusedRecipients += 1 }
            return refuse("RCPT", reply)
        case .failure(.tooMany):
            // RFC 5321 §4.5.3.1.8 and §4.5.3.1.10: 452, and the transaction goes
            // on with the recipients already accepted; the client sends the rest
            // in another. Only far beyond the limit does it count as an error.
            var excess = 0
            updateTransaction { $0.excessRecipients += 1; excess = $0.excessRecipients }
            let reply = Reply(452, "4.5.3", "Error: too many recipients")
            if excess > settings.recipientOvershootLimit { return refuse("RCPT", reply) }
            return [.rejected(command: "RCPT", reply: reply), .reply(reply)]
        }
    }

    /// Parses and validates RCPT; returns the mailboxes to add: the one given,
    /// or for a local recipient the addresses its alias stands for, and the
    /// DSN parameters they all get.
    func checkRcpt(_ arg: ArraySlice<UInt8>) -> Result<([Mailbox], RecipientParameters), RcptRefusal> {
        let transaction: Transaction
        switch state {
        case .gotMail(let t), .gotRecipients(let t): transaction = t
        default: return .failure(.refused(Reply(503, "5.5.1", "Error: need MAIL command")))
        }
        let path: PathArgument
        // UTF-8 syntax always, so a UTF-8 address outside SMTPUTF8 gets 553 5.6.7.
        switch PathArgument.parse(arg, prefix: "TO:", allowNull: false, allowUnqualified: true, utf8: true) {
        case .failure(.missingPrefix): return .failure(.refused(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")))
        case .failure(.badPath): return .failure(.refused(Reply(501, "5.1.3", "Bad recipient address syntax")))
        case .failure(.badParameter): return .failure(.refused(Reply(501, "5.5.4", "Syntax error in parameters")))
        case .success(let p): path = p
        }
        var parameters = RecipientParameters()
        for p in path.parameters {
            switch p.keyword {
            case "NOTIFY":
                // RFC 3461 §4.1; at most once (§4).
                guard parameters.notify == nil, let v = p.value, let n = DSNParameters.notify(v.utf8) else {
                    return .failure(.refused(Reply(501, "5.5.4", "Bad NOTIFY parameter")))
                }
                parameters.notify = n
            case "ORCPT":
                // RFC 3461 §4.2; a "utf-8" address in unitext only with
                // SMTPUTF8 (RFC 6533 §3, RFC 6531 §3.3).
                guard parameters.orcpt == nil, let v = p.value,
                      let o = DSNParameters.originalRecipient(v.utf8, utf8: transaction.smtputf8) else {
                    return .failure(.refused(Reply(501, "5.5.4", "Bad ORCPT parameter")))
                }
                parameters.orcpt = o
            default:
                return .failure(.refused(Reply(555, "5.5.4", "Unsupported option: \(p.keyword)")))
            }
        }
        let mailbox = path.mailbox
        if !transaction.smtputf8 && !mailbox.isASCII {
            // RFC 6531 §3.5: 553 with X.6.7 (RFC 5248).
            return .failure(.refused(Reply(553, "5.6.7", "Non-ASCII recipient address not permitted without SMTPUTF8")))
        }
        var add = [mailbox]
        if settings.aliases.isLocal(mailbox) {
            if let targets = settings.aliases.expand(localPart: mailbox.localPart) {
                // The administrator's own mapping: its addresses are not subject
                // to allow_recipients.
                add = targets
            } else if mailbox.atIndex == nil && ASCII.equalsIgnoringCase(mailbox.bytes[...], Self.postmaster) {
                // RFC 5321 §4.5.1: the domain-less <Postmaster> is always accepted;
                // without an alias for it, it is forwarded as it came.
            } else {
                // RFC 3463 §3.2 X.1.1: bad destination mailbox address.
                return .failure(.refused(Reply(550, "5.1.1", "\(mailbox): Recipient address rejected: no such local user (see [aliases])")))
            }
        } else if !settings.recipients.allows(mailbox) {
            return .failure(.refused(Reply(550, "5.7.1", "\(mailbox): Recipient address rejected: relay access denied")))
        }
        let new = add.filter { !transaction.recipientKeys.contains($0.canonical) }
        if !new.isEmpty && transaction.recipients.count + new.count > settings.maxRecipients {
            return .failure(.tooMany)
        }
        return .success((add, parameters))
    }

    static let postmaster = Array("postmaster".utf8)

    /// Adds the new mailboxes; an alias's addresses all get the RCPT's DSN
    /// parameters. A repeated recipient keeps those it came with first.
    mutating func proceedRcpt(_ mailboxes: [Mailbox], _ parameters: RecipientParameters = .none) -> [Action] {
        updateTransaction { t in
            for mailbox in mailboxes where t.recipientKeys.insert(mailbox.canonical).inserted {
                t.recipients.append(mailbox)
                t.recipientParameters.append(parameters)
            }
        }
        return [.reply(Reply(250, "2.1.5", "Ok"))]
    }

    /// Changes the open transaction in place (and moves `gotMail` to
    /// `gotRecipients` once it has one). The state is emptied while the closure
    /// runs so the recipient arrays are not copied on every RCPT.
    mutating func updateTransaction(_ change: (inout Transaction) -> Void) {
        let current = state
        state = .closed
        switch current {
        case .gotMail(var t), .gotRecipients(var t):
            change(&t)
            state = t.recipients.isEmpty ? .gotMail(t) : .gotRecipients(t)
        default:
            state = current
        }
    }

    /// DATA (RFC 5321 §4.1.1.4).
    mutating func data(_ arg: ArraySlice<UInt8>) -> [Action] {
        switch checkData(arg) {
        case .failure(let refusal): return refuse("DATA", refusal)
        case .success(let envelope): return proceedData(envelope)
        }
    }

    /// Validates DATA; returns the envelope of the message it starts.
    func checkData(_ arg: ArraySlice<UInt8>) -> Result<Envelope, Reply> {
        let transaction: Transaction
        switch state {
        case .gotRecipients(let t): transaction = t
        case .gotMail(let t):
            // RFC 5321 §3.3 / RFC 2920 §3.1: every RCPT was refused.
            return .failure(t.refusedRecipients > 0
                ? Reply(554, "5.5.1", "Error: no valid recipients")
                : Reply(503, "5.5.1", "Error: need RCPT command"))
        case .connected: return .failure(Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
        // RFC 3030 §2: DATA and BDAT cannot be used in the same transaction.
        case .gotChunks: return .failure(Reply(503, "5.5.1", "Error: DATA inside a BDAT transaction"))
        default: return .failure(Reply(503, "5.5.1", "Error: need MAIL command"))
        }
        if !ASCII.trimmed(arg).isEmpty { return .failure(Reply(501, "5.5.4", "Syntax: DATA")) }
        var envelope = Envelope(heloName: heloName, esmtp: esmtp, from: transaction.from,
                                recipients: transaction.recipients, eightBit: transaction.eightBit)
        envelope.tls = tlsActive
        envelope.authUser = authenticatedUser
        envelope.smtputf8 = transaction.smtputf8
        envelope.ret = transaction.ret
        envelope.envelopeID = transaction.envelopeID
        if transaction.recipientParameters.contains(where: { !$0.isEmpty }) {
            envelope.recipientParameters = transaction.recipientParameters
        }
        return .success(envelope)
    }

    mutating func proceedData(_ envelope: Envelope) -> [Action] {
        state = .receivingData(envelope, size: 0, oversize: false)
        // 354 is an intermediate reply and carries no enhanced code (RFC 3463 has
        // no class 3).
        return [.startData(envelope), .reply(Reply(354, nil, "End data with <CR><LF>.<CR><LF>"))]
    }

    /// RSET (RFC 5321 §4.1.1.5).
    mutating func rset(_ arg: ArraySlice<UInt8>) -> [Action] {
        if !ASCII.trimmed(arg).isEmpty { return refuse("RSET", Reply(501, "5.5.4", "Syntax: RSET")) }
        let abort: [Action] = isStoring ? [.abortMessage] : []
        if phase != .connected { state = .greeted }
        return abort + [.reply(Reply(250, "2.0.0", "Ok"))]
    }

    /// BDAT (RFC 3030 §2): `BDAT chunk-size [LAST]`, then exactly chunk-size
    /// bytes of text. The bytes come whatever we answer, so a refused BDAT's
    /// bytes are read and thrown away before the refusal is sent; read as
    /// commands they would be a message smuggled into the session. Only a
    /// command whose size cannot be read leaves no way to find the chunk's end:
    /// 501, then 421 and close.
    mutating func bdat(_ arg: ArraySlice<UInt8>) -> [Action] {
        let words = arg.split(separator: ASCII.space, omittingEmptySubsequences: true)
        guard (1...2).contains(words.count), let sizeWord = words.first, !sizeWord.isEmpty,
              sizeWord.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              words.count == 1 || ASCII.equalsIgnoringCase(words[words.startIndex + 1], Self.lastWord) else {
            let reply = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
            let actions: [Action] = [.rejected(command: "BDAT", reply: reply), .reply(reply)]
            return actions + closeWith(Reply(421, "4.5.0", "\(settings.hostname) Error: the end of the BDAT chunk is unknown; closing"))
        }
        // Any number of digits: parseDecimal saturates at Int.max (a 32-bit
        // board's too), which is then simply more than any message may be.
        let declared = ASCII.parseDecimal(sizeWord) ?? Int.max
        let last = words.count == 2
        var chunk = Chunk(envelope: nil, declared: declared, remaining: declared, last: last, size: 0,
                          oversize: false, refusal: nil)
        let tooBig = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)")
        var actions: [Action] = []
        switch state {
        case .gotRecipients:
            switch checkData([]) {
            case .failure(let refusal): chunk.refusal = refusal
            case .success(let envelope):
                if declared > settings.maxMessageSize {
                    chunk.refusal = tooBig
                } else {
                    chunk.envelope = envelope
                    actions = [.startData(envelope)]
                }
            }
        case .gotChunks(let envelope, let size):
            chunk.size = size
            if declared > settings.maxMessageSize - size {
                chunk.refusal = tooBig
                actions = [.abortMessage]
            } else {
                chunk.envelope = envelope
            }
        case .gotMail(let t):
            chunk.refusal = t.refusedRecipients > 0
                ? Reply(554, "5.5.1", "Error: no valid recipients") : Reply(503, "5.5.1", "Error: need RCPT command")
        case .connected:
            chunk.refusal = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        default:
            chunk.refusal = Reply(503, "5.5.1", "Error: need MAIL command")
        }
        state = .receivingChunk(chunk)
        // A chunk of size 0 ends at once.
        return actions + (declared == 0 ? receiveChunk(count: 0) : [])
    }

    static let lastWord = Array("LAST".utf8)

    /// STARTTLS (RFC 3207 §4). Refused where TLS is not configured (502, as an
    /// unknown command), once TLS is active (554 5.5.1, as Postfix), and inside
    /// a transaction (503: the reset it causes would lose the envelope).
    mutating func startTLS(_ arg: ArraySlice<UInt8>) -> [Action] {
        if !settings.tlsAvailable {
            return refuse("STARTTLS", Reply(502, "5.5.1", "Error: command not implemented"))
        }
        if !ASCII.trimmed(arg).isEmpty { return refuse("STARTTLS", Reply(501, "5.5.4", "Syntax: STARTTLS")) }
        if tlsActive { return refuse("STARTTLS", Reply(554, "5.5.1", "Error: TLS already active")) }
        switch phase {
        case .gotMail, .gotRecipients, .gotChunks:
            return refuse("STARTTLS", Reply(503, "5.5.1", "Error: MAIL transaction in progress"))
        default: break
        }
        // RFC 3207 §4.2: the server MUST discard any knowledge obtained from the
        // client (the EHLO argument) that was not obtained from TLS itself; the
        // client starts again with EHLO.
        tlsActive = true
        state = .connected
        heloName = ""
        esmtp = false
        authenticatedUser = nil
        return [.reply(Reply(220, "2.0.0", "Ready to start TLS")), .startTLS]
    }

    /// AUTH (RFC 4954 §4) with PLAIN or LOGIN (`SASLServer`).
    mutating func auth(_ arg: ArraySlice<UInt8>) -> [Action] {
        if !settings.authAvailable {
            return refuse("AUTH", Reply(502, "5.5.1", "Error: command not implemented"))
        }
        if !authOffered {
            // A LAN client in the clear: RFC 4954 §6, "538 5.7.11 Encryption
            // required for requested authentication mechanism".
            return refuse("AUTH", Reply(538, "5.7.11", "Encryption required for requested authentication mechanism"))
        }
        switch phase {
        case .connected: return refuse("AUTH", Reply(503, "5.5.1", "Error: send EHLO first"))
        // RFC 4954 §4: not during a mail transaction.
        case .gotMail, .gotRecipients, .gotChunks:
            return refuse("AUTH", Reply(503, "5.5.1", "Error: MAIL transaction in progress"))
        default: break
        }
        // RFC 4954 §4: not again after a successful AUTH.
        if authenticatedUser != nil { return refuse("AUTH", Reply(503, "5.5.1", "Error: already authenticated")) }
        if authLockedOut {
            // A temporary failure (RFC 4954 §6): a device with the right password
            // retries later rather than bouncing its mail.
            return refuse("AUTH", Reply(454, "4.7.0", "Error: too many failed authentications from \(clientText); try again later"))
        }
        let (exchange, step) = SASLServer.start(arguments: arg)
        return authStep(exchange, step)
    }

    /// Where an exchange's step leads: a challenge (the exchange goes on),
    /// credentials to check, or its failure.
    mutating func authStep(_ exchange: SASLServer, _ step: SASLServer.Step) -> [Action] {
        switch step {
        case .reply(let r):
            sasl = exchange
            return [.reply(r)]
        case .credentials(let user, let password):
            credentials = (user, password)
            checking = (ASCII.printable(user, limit: 255), exchange.mechanism?.description ?? "")
            return [.checkCredentials]
        case .failed(let r) where r.code == 535:
            // An authzid other than the authcid: counted and delayed like a
            // wrong password (`SASLServer.authzidRefused`).
            return countError(.authFailed(user: nil, reply: r), r)
        case .failed(let r):
            return refuse("AUTH", r)
        }
    }

    /// Ends an exchange the session ends in the middle of; credentials not
    /// yet taken are wiped.
    mutating func forgetAuthExchange() {
        sasl = nil
        checking = nil
        if var c = credentials {
            credentials = nil
            SASL.wipe(&c.password)
        }
    }

    /// Hands the credentials of `.checkCredentials` to the connection, once:
    /// the machine keeps no copy of the password, and the caller wipes it.
    public mutating func takeCredentials() -> (user: [UInt8], password: [UInt8])? {
        defer { credentials = nil }
        return credentials
    }

    /// The verdict on the credentials of `.checkCredentials` (RFC 4954 §6).
    public mutating func authChecked(_ verdict: AuthVerdict) -> [Action] {
        guard let (user, mechanism) = checking, !isClosed else { return [] }
        // Credentials not taken (a caller's mistake) are wiped all the same.
        forgetAuthExchange()
        switch verdict {
        case .match:
            authenticatedUser = user
            return [.authSucceeded(user: user, mechanism: mechanism), .reply(SASLServer.succeeded)]
        case .mismatch:
            return countError(.authFailed(user: user, reply: SASLServer.credentialsInvalid), SASLServer.credentialsInvalid)
        case .unavailable:
            return refuse("AUTH", SASLServer.temporaryFailure)
        }
    }

    /// QUIT (RFC 5321 §4.1.1.10).
    mutating func quit(_ arg: ArraySlice<UInt8>) -> [Action] {
        if !ASCII.trimmed(arg).isEmpty { return refuse("QUIT", Reply(501, "5.5.4", "Syntax: QUIT")) }
        return closeWith(Reply(221, "2.0.0", "Bye"))
    }

    // MARK: helpers

    private mutating func refuse(_ command: String, _ reply: Reply) -> [Action] {
        countError(.rejected(command: command, reply: reply), reply)
    }

    private mutating func countError(_ note: Action, _ reply: Reply) -> [Action] {
        errors += 1
        if errors >= settings.maxErrors {
            return [note, .reply(reply)] + closeWith(Reply(421, "4.7.0", "\(settings.hostname) Error: too many errors"))
        }
        return [note, .reply(reply)]
    }

    private mutating func closeWith(_ reply: Reply) -> [Action] {
        forgetAuthExchange()
        let actions: [Action] = isStoring ? [.abortMessage] : []
        state = .closed
        return actions + [.reply(reply), .close]
    }
}

extension Reply: Error {}

extension String {
    /// ASCII upper case, without the Unicode tables.
    public var uppercasedASCII: String {
        String(decoding: utf8.map { ($0 >= 97 && $0 <= 122) ? $0 - 32 : $0 }, as: UTF8.self)
    }
}
