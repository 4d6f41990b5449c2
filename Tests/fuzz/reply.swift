@testable import PosternCore

// Whole sender sessions against an upstream whose replies are the fuzzer's
// bytes: the lenient line framer and the reply parser (ReplyParser) feeding the
// sender state machine (SMTPSender), as Delivery drives them, with the EHLO
// capability lines (PIPELINING, SIZE, 8BITMIME, STARTTLS, AUTH) coming from the
// input too. Flags choose STARTTLS and an AUTH mechanism (issue 8), so the TLS
// and SASL states (334 challenges included) meet hostile replies as well.
// Flag 8 starts each next message behind the end of data (startBehindDot), as
// Delivery does, so two transactions are in flight at once.
//
// Input: a flags byte, a security byte, the number of messages and recipients, the read size, a
// message size, then the upstream's byte stream.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let flags = input.byte()
    let security = input.byte()
    let auth: [AuthChoice] = [.none, .auto, .plain, .login, .xoauth2]
    var driver = SenderDriver(messages: input.int(0...3), recipients: input.int(1...4), behindDot: flags & 8 != 0,
                              size: input.int(0...70_000), eightBit: flags & 1 != 0,
                              maxLine: flags & 2 != 0 ? 64 : BufferSizes.senderInput,
                              security: SenderSecurity(startTLS: security & 1 != 0, implicitTLS: security & 2 != 0,
                                                       auth: auth[Int(security >> 2) % auth.count], username: "u@fuzz"),
                              secretFails: security & 0x80 != 0)
    let readSize = input.int(1...64)
    let stream = input.rest()
    var at = 0
    while at < stream.count && !driver.closed {
        let end = min(stream.count, at + readSize)
        driver.received(UnsafeRawBufferPointer(rebasing: stream[at..<end]))
        at = end
    }
    if driver.closed { return }
    if flags & 4 != 0 {
        driver.perform(driver.machine.timedOut())
    } else {
        driver.perform(driver.machine.connectionLost("fuzz: end of input"))
    }
    require(driver.closed, "the session did not close")
    require(driver.current == nil && driver.next == nil, "a message was left without messageDone")
}

struct SenderDriver {
    var machine: SMTPSender
    let secretFails: Bool
    var framer: LineFramer
    var parser = ReplyParser()
    var pending: [UInt8] = []
    var closed = false
    var messagesLeft: Int
    let recipients: Int
    let size: Int
    let eightBit: Bool
    /// Outcomes of the message in flight, by recipient index.
    var current: [RecipientOutcome?]? = nil
    /// The message started behind `current`'s end of data.
    var next: [RecipientOutcome?]? = nil
    let behindDot: Bool

    init(messages: Int, recipients: Int, behindDot: Bool = false, size: Int, eightBit: Bool, maxLine: Int,
         security: SenderSecurity, secretFails: Bool) {
        self.behindDot = behindDot
        machine = SMTPSender(heloName: "postern.fuzz", security: security)
        self.secretFails = secretFails
        messagesLeft = messages
        self.recipients = recipients
        self.size = size
        self.eightBit = eightBit
        framer = LineFramer(maxLineLength: maxLine, strict: false)
    }

    mutating func received(_ bytes: UnsafeRawBufferPointer) {
        pending += bytes
        while !closed {
            let (frame, consumed) = pending.withUnsafeBytes { framer.next(in: $0) }
            require(consumed <= pending.count, "the framer consumed more than it was given")
            let line = Array(pending[0..<consumed])
            pending.removeFirst(consumed)
            switch frame {
            case .needMore: return
            case .tooLong, .bareLineEnding:
                perform(machine.connectionLost("reply line too long"))
            case .line(let range):
                switch parser.feed(line[range]) {
                case .failure: perform(machine.connectionLost("malformed reply"))
                case .success(nil): continue
                case .success(let reply?):
                    require(reply.code >= 200 && reply.code <= 599, "reply code \(reply.code)")
                    _ = machine.timeoutSeconds
                    perform(machine.receive(reply))
                }
            }
        }
    }

    mutating func perform(_ actions: [SMTPSender.Action]) {
        for action in actions {
            require(!closed, "an action after close")
            switch action {
            case .send(let bytes):
                checkCommands(bytes)
            case .sendSecret(let bytes):
                // RFC 4954 §4: an AUTH line with its initial response may be
                // longer than 512 octets; it is still one CRLF line.
                checkCommands(bytes, limit: 12288)
                require(machine.security.auth != .none, "an AUTH response without AUTH configured")
            case .startTLS:
                require(machine.security.startTLS && !machine.tlsActive, "STARTTLS not asked for")
                perform(machine.tlsEstablished())
            case .needSecret:
                require(machine.security.auth != .none, "a secret without AUTH configured")
                perform(secretFails ? machine.secretUnavailable("fuzz") : machine.provideSecret(Array("s3cret".utf8)))
            case .sendText:
                require(current != nil, "text without a message")
                perform(machine.textSent())
                if behindDot && messagesLeft > 0 && next == nil {
                    let started = machine.startBehindDot(message: message())
                    if !started.isEmpty {
                        messagesLeft -= 1
                        next = [RecipientOutcome?](repeating: nil, count: recipients)
                        perform(started)
                    }
                }
            case .ready:
                require(current == nil && next == nil, "ready with a message in flight")
                if messagesLeft > 0 {
                    messagesLeft -= 1
                    current = [RecipientOutcome?](repeating: nil, count: recipients)
                    perform(machine.start(message: message()))
                } else {
                    perform(machine.finish())
                }
                // Mail only after the TLS and AUTH that were asked for.
                require(!machine.security.startTLS || machine.tlsActive, "ready without STARTTLS")
                require(machine.security.auth == .none || machine.authenticatedWith != nil || machine.isClosed,
                        "ready without AUTH")
            case .recipient(let index, let outcome, let reply):
                guard var c = current else { fatalError("an outcome without a message") }
                require(index >= 0 && index < c.count, "recipient index \(index)")
                require(c[index] == nil, "recipient \(index) reported twice")
                // A 2xx is never reported as failed, nor a 5xx as delivered.
                require(outcome != .delivered || reply.code / 100 == 2, "delivered with \(reply.code)")
                require(outcome != .failed || reply.isPermanent, "failed with \(reply.code)")
                c[index] = outcome
                current = c
            case .messageDone:
                guard let c = current else { fatalError("messageDone without a message") }
                require(c.allSatisfy { $0 != nil }, "messageDone before every recipient was reported")
                current = next
                next = nil
            case .close:
                closed = true
            }
        }
    }

    func message() -> OutboundMessage {
        let rcpts = (0..<recipients).compactMap { Mailbox.parse(Array("r\($0)@example.com".utf8)[...], allowNull: false) }
        let from = Mailbox.parse(Array("s@example.org".utf8)[...], allowNull: true) ?? .null
        return OutboundMessage(from: from, recipients: rcpts, size: size, eightBit: eightBit)
    }

    /// Commands go out as whole CRLF lines with no bare CR or LF, each at most
    /// 512 octets (RFC 5321 §4.5.3.1.4, plus RFC 1870's 26 for SIZE=).
    func checkCommands(_ bytes: [UInt8], limit: Int = 512 + 26) {
        require(bytes.count >= 2 && bytes.suffix(2) == [ASCII.cr, ASCII.lf], "a command not ending in CRLF")
        var length = 0
        var previous: UInt8 = 0
        for b in bytes {
            length += 1
            if b == ASCII.lf {
                require(previous == ASCII.cr, "a bare LF in a command")
                require(length <= limit, "a command line of \(length) octets")
                length = 0
            } else {
                require(previous != ASCII.cr, "a bare CR in a command")
            }
            previous = b
        }
    }
}
