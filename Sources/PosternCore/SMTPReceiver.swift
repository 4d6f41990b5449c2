/// What a receiver transaction has gathered by the time DATA starts.
public struct Envelope: Equatable, Sendable {
    public var heloName: String
    /// EHLO (true) or HELO (false): chooses "ESMTP"/"SMTP" in the trace header.
    public var esmtp: Bool
    public var from: Mailbox
    public var recipients: [Mailbox]
    /// The client declared `BODY=8BITMIME` (RFC 6152).
    public var eightBit: Bool

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
/// Each command has a `check…` step that returns the refusal (and never changes
/// state) and a `proceed…` step that applies it, in the manner of OpenSMTPD's
/// smtp_session.c.
///
/// Message text does not pass through here: after `.startData` the connection
/// decodes it (`DataDecoder`) straight into the spool and reports only its size.
public struct SMTPReceiver: Sendable {
    /// Named for what has happened in the session.
    public enum State: Equatable, Sendable, CustomStringConvertible {
        /// Greeting sent; no HELO/EHLO yet.
        case connected
        /// HELO/EHLO done, no transaction open.
        case greeted
        /// MAIL accepted.
        case gotMail
        /// MAIL and at least one RCPT accepted.
        case gotRecipients
        /// 354 sent; message text is streaming into the spool.
        case receivingData
        /// End of data seen; waiting for the spool to make the message durable.
        case awaitingCommit
        case closed

        public var description: String {
            switch self {
            case .connected: return "connected"
            case .greeted: return "greeted"
            case .gotMail: return "gotMail"
            case .gotRecipients: return "gotRecipients"
            case .receivingData: return "receivingData"
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
        /// A command was refused; log it as a `rejected` event.
        case rejected(command: String, reply: Reply)
        case close
    }

    public let settings: ReceiverSettings
    public private(set) var state: State = .connected
    /// Set by the connection before each line: false while the spool is over
    /// `max_size` or failing, so MAIL gets 452 4.3.1 instead of a promise we cannot keep.
    public var spoolAcceptsMail = true

    private var clientAllowed = true
    private var clientText = ""
    private var heloName = ""
    private var esmtp = false
    private var from = Mailbox.null
    private var eightBit = false
    private var recipients: [Mailbox] = []
    private var recipientKeys: [[UInt8]] = []
    private var rejectedRecipients = 0
    private var messageSize = 0
    private var oversize = false
    private var errors = 0

    public init(settings: ReceiverSettings) {
        self.settings = settings
    }

    // MARK: events

    /// The connection was accepted. `clientAllowed` is the `allow_clients` verdict;
    /// a refused client is still greeted (like Postfix's delayed reject) and gets
    /// 550 5.7.1 at MAIL, so its software sees a clear reason.
    public mutating func start(clientAllowed: Bool, clientText: String) -> [Action] {
        self.clientAllowed = clientAllowed
        self.clientText = clientText
        // RFC 5321 §4.2: the greeting carries no enhanced code (RFC 2034 §3).
        return [.reply(Reply(220, nil, "\(settings.hostname) ESMTP Postern"))]
    }

    /// One command line, without CRLF.
    public mutating func receive(line: ArraySlice<UInt8>) -> [Action] {
        switch state {
        case .closed, .receivingData, .awaitingCommit:
            // The connection does not feed lines in these states; ignore defensively.
            return []
        default: break
        }
        let verbEnd = line.firstIndex(of: ASCII.space) ?? line.endIndex
        let verb = ASCII.lowercased(line[..<verbEnd])
        var arg = line[verbEnd...]
        if arg.first == ASCII.space { arg = arg.dropFirst() }
        if line.contains(0) {
            return refuse(ASCII.printable(line.prefix(16)), Reply(500, "5.5.2", "Error: NUL byte in command"))
        }
        switch String(decoding: verb, as: UTF8.self) {
        case "ehlo": return hello(arg, esmtp: true)
        case "helo": return hello(arg, esmtp: false)
        case "mail": return mail(arg)
        case "rcpt": return rcpt(arg)
        case "data": return data(arg)
        case "rset": return rset(arg)
        case "noop": return [.reply(Reply(250, "2.0.0", "Ok"))]
        case "quit": return quit(arg)
        case "vrfy":
            // RFC 5321 §3.5.3: 252 when we will not verify but would accept.
            return [.reply(Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"))]
        case "help":
            return [.reply(Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"))]
        case "expn", "starttls", "auth", "bdat", "etrn", "turn":
            return refuse(String(decoding: verb, as: UTF8.self).uppercasedASCII,
                          Reply(502, "5.5.1", "Error: command not implemented"))
        default:
            return refuse(ASCII.printable(line.prefix(32)), Reply(500, "5.5.2", "Error: command not recognized"))
        }
    }

    /// A command line longer than 512 octets (RFC 5321 §4.5.3.1.4).
    public mutating func receiveLineTooLong() -> [Action] {
        refuse("(too long)", Reply(500, "5.5.2", "Error: line too long"))
    }

    /// A command line with a bare CR or LF (RFC 5321 §2.3.8).
    public mutating func receiveBareLineEnding() -> [Action] {
        refuse("(bare CR or LF)", Reply(500, "5.5.2", "Error: bare <CR> or <LF> in command; lines must end with <CR><LF>"))
    }

    /// `count` more bytes of decoded message text arrived.
    public mutating func receiveText(count: Int) -> [Action] {
        guard state == .receivingData, !oversize else { return [] }
        messageSize += count
        if messageSize > settings.maxMessageSize {
            oversize = true
            return [.abortMessage]
        }
        return []
    }

    /// The end-of-data marker arrived (RFC 5321 §4.1.1.4).
    public mutating func receiveEndOfData() -> [Action] {
        guard state == .receivingData else { return [] }
        if oversize {
            // RFC 1870 §6.2 / RFC 3463: 552 5.3.4, message too big for system.
            let reply = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)")
            resetTransaction()
            state = .greeted
            return countError(.rejected(command: "DATA", reply: reply), reply)
        }
        state = .awaitingCommit
        return [.commitMessage]
    }

    /// The spool made the message durable: now, and only now, reply 250
    /// (RFC 5321 §6.1; DESIGN.md principle 4).
    public mutating func committed(queueID: String) -> [Action] {
        guard state == .awaitingCommit else { return [] }
        resetTransaction()
        state = .greeted
        return [.reply(Reply(250, "2.0.0", "Ok: queued as \(queueID)"))]
    }

    /// The spool could not store the message (disk full, quota, I/O error). A 4xx
    /// keeps the message with the client, which will retry; never a 5xx
    /// (issue 3: 452 4.3.1 for ENOSPC and EIO alike).
    public mutating func commitFailed() -> [Action] {
        guard state == .awaitingCommit || state == .receivingData else { return [] }
        let reply = Reply(452, "4.3.1", "Error: insufficient system storage, try again later")
        resetTransaction()
        state = .greeted
        return [.rejected(command: "DATA", reply: reply), .reply(reply)]
    }

    /// The client stayed silent for `[receiver] timeout` (RFC 5321 §4.5.3.2.7).
    public mutating func timedOut() -> [Action] {
        closeWith(Reply(421, "4.4.2", "\(settings.hostname) Error: timeout exceeded"))
    }

    /// The daemon is stopping (RFC 5321 §3.8: 421 and close).
    public mutating func shutdown() -> [Action] {
        closeWith(Reply(421, "4.3.2", "\(settings.hostname) Service shutting down, closing transmission channel"))
    }

    /// The client closed the connection or it broke.
    public mutating func disconnected() -> [Action] {
        let wasStoring = state == .receivingData && !oversize
        state = .closed
        return wasStoring ? [.abortMessage] : []
    }

    // MARK: commands

    /// EHLO/HELO (RFC 5321 §4.1.1.1). Either one resets any transaction (§4.1.4).
    mutating func hello(_ arg: ArraySlice<UInt8>, esmtp: Bool) -> [Action] {
        let name = ASCII.trimmed(arg)
        if name.isEmpty {
            return refuse(esmtp ? "EHLO" : "HELO", Reply(501, "5.5.4", "Syntax: \(esmtp ? "EHLO" : "HELO") hostname"))
        }
        let first = name.prefix { !ASCII.isSpace($0) }
        resetTransaction()
        heloName = ASCII.printable(first, limit: 255)
        self.esmtp = esmtp
        state = .greeted
        if !esmtp { return [.reply(Reply(250, nil, settings.hostname))] }
        // RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2034.
        return [.reply(Reply(250, nil, [
            settings.hostname,
            "PIPELINING",
            "SIZE \(settings.maxMessageSize)",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]))]
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2).
    mutating func mail(_ arg: ArraySlice<UInt8>) -> [Action] {
        if let refusal = checkMail(arg) { return refuse("MAIL", refusal) }
        guard case .success(let path) = PathArgument.parse(arg, prefix: "FROM:", allowNull: true) else { return [] }
        from = path.mailbox
        eightBit = path.parameters.contains { $0.keyword == "BODY" && $0.value?.uppercasedASCII == "8BITMIME" }
        state = .gotMail
        return [.reply(Reply(250, "2.1.0", "Ok"))]
    }

    func checkMail(_ arg: ArraySlice<UInt8>) -> Reply? {
        switch state {
        case .connected: return Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        case .gotMail, .gotRecipients: return Reply(503, "5.5.1", "Error: nested MAIL command")
        default: break
        }
        let path: PathArgument
        switch PathArgument.parse(arg, prefix: "FROM:", allowNull: true) {
        case .failure(.missingPrefix): return Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        case .failure(.badPath): return Reply(501, "5.1.7", "Bad sender address syntax")
        case .failure(.badParameter): return Reply(501, "5.5.4", "Syntax error in parameters")
        case .success(let p): path = p
        }
        var sawSize = false, sawBody = false
        for p in path.parameters {
            switch p.keyword {
            case "SIZE" where !sawSize:
                // RFC 1870 §6.1: refuse up front when the declared size is too big.
                sawSize = true
                guard let v = p.value.flatMap({ ASCII.parseDecimal($0.utf8) }) else {
                    return Reply(501, "5.5.4", "Bad SIZE parameter")
                }
                if v > settings.maxMessageSize {
                    return Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size (\(settings.maxMessageSize) bytes)")
                }
            case "BODY" where !sawBody:
                sawBody = true
                let v = p.value?.uppercasedASCII
                guard v == "7BIT" || v == "8BITMIME" else { return Reply(501, "5.5.4", "Bad BODY parameter") }
            default:
                return Reply(555, "5.5.4", "Unsupported option: \(p.keyword)")
            }
        }
        if !clientAllowed {
            return Reply(550, "5.7.1", "Client host \(clientText) is not allowed to send mail here")
        }
        if !spoolAcceptsMail {
            return Reply(452, "4.3.1", "Error: insufficient system storage, try again later")
        }
        return nil
    }

    /// RCPT TO (RFC 5321 §4.1.1.3).
    mutating func rcpt(_ arg: ArraySlice<UInt8>) -> [Action] {
        if let refusal = checkRcpt(arg) {
            if state == .gotMail || state == .gotRecipients { rejectedRecipients += 1 }
            return refuse("RCPT", refusal)
        }
        guard case .success(let path) = PathArgument.parse(arg, prefix: "TO:", allowNull: false) else { return [] }
        let key = path.mailbox.canonical
        if !recipientKeys.contains(key) {
            recipientKeys.append(key)
            recipients.append(path.mailbox)
        }
        state = .gotRecipients
        return [.reply(Reply(250, "2.1.5", "Ok"))]
    }

    func checkRcpt(_ arg: ArraySlice<UInt8>) -> Reply? {
        switch state {
        case .gotMail, .gotRecipients: break
        default: return Reply(503, "5.5.1", "Error: need MAIL command")
        }
        let path: PathArgument
        switch PathArgument.parse(arg, prefix: "TO:", allowNull: false) {
        case .failure(.missingPrefix): return Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        case .failure(.badPath): return Reply(501, "5.1.3", "Bad recipient address syntax")
        case .failure(.badParameter): return Reply(501, "5.5.4", "Syntax error in parameters")
        case .success(let p): path = p
        }
        if let p = path.parameters.first { return Reply(555, "5.5.4", "Unsupported option: \(p.keyword)") }
        if recipients.count >= settings.maxRecipients && !recipientKeys.contains(path.mailbox.canonical) {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients, so the client
            // sends the rest in another transaction.
            return Reply(452, "4.5.3", "Error: too many recipients")
        }
        // RFC 5321 §4.5.1: mail to the domain-less <Postmaster> must be accepted,
        // whatever allow_recipients says.
        if !settings.recipients.allows(path.mailbox) && path.mailbox.atIndex != nil {
            return Reply(550, "5.7.1", "\(path.mailbox): Recipient address rejected: relay access denied")
        }
        return nil
    }

    /// DATA (RFC 5321 §4.1.1.4).
    mutating func data(_ arg: ArraySlice<UInt8>) -> [Action] {
        if let refusal = checkData(arg) { return refuse("DATA", refusal) }
        messageSize = 0
        oversize = false
        state = .receivingData
        let envelope = Envelope(heloName: heloName, esmtp: esmtp, from: from, recipients: recipients, eightBit: eightBit)
        // 354 is an intermediate reply and carries no enhanced code (RFC 3463 has
        // no class 3).
        return [.startData(envelope), .reply(Reply(354, nil, "End data with <CR><LF>.<CR><LF>"))]
    }

    func checkData(_ arg: ArraySlice<UInt8>) -> Reply? {
        switch state {
        case .gotRecipients: break
        case .gotMail:
            // RFC 5321 §3.3 / RFC 2920 §3.1: every RCPT was refused.
            return rejectedRecipients > 0 ? Reply(554, "5.5.1", "Error: no valid recipients")
                                          : Reply(503, "5.5.1", "Error: need RCPT command")
        case .connected: return Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        default: return Reply(503, "5.5.1", "Error: need MAIL command")
        }
        if !ASCII.trimmed(arg).isEmpty { return Reply(501, "5.5.4", "Syntax: DATA") }
        return nil
    }

    /// RSET (RFC 5321 §4.1.1.5).
    mutating func rset(_ arg: ArraySlice<UInt8>) -> [Action] {
        if !ASCII.trimmed(arg).isEmpty { return refuse("RSET", Reply(501, "5.5.4", "Syntax: RSET")) }
        resetTransaction()
        if state != .connected { state = .greeted }
        return [.reply(Reply(250, "2.0.0", "Ok"))]
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
            let wasStoring = state == .receivingData
            var actions: [Action] = [note, .reply(reply)]
            if wasStoring { actions.append(.abortMessage) }
            return actions + closeWith(Reply(421, "4.7.0", "\(settings.hostname) Error: too many errors"))
        }
        return [note, .reply(reply)]
    }

    private mutating func closeWith(_ reply: Reply) -> [Action] {
        let wasStoring = state == .receivingData && !oversize
        resetTransaction()
        state = .closed
        return (wasStoring ? [.abortMessage] : []) + [.reply(reply), .close]
    }

    private mutating func resetTransaction() {
        from = .null
        eightBit = false
        recipients = []
        recipientKeys = []
        rejectedRecipients = 0
        messageSize = 0
        oversize = false
    }
}

extension String {
    /// ASCII upper case, without the Unicode tables.
    public var uppercasedASCII: String {
        String(decoding: utf8.map { ($0 >= 97 && $0 <= 122) ? $0 - 32 : $0 }, as: UTF8.self)
    }
}
