@testable import PosternCore

// Whole receiver sessions from bytes: the strict line framer, the receiver state
// machine, the DATA decoder and BDAT chunks, driven the way ReceiverConnection
// drives them (frame lines; after `.startData` decode text and report its size;
// read a chunk's bytes raw; at the end of data answer `.commitMessage` with
// `committed` or `commitFailed`; after `.startTLS` drop what was pipelined;
// answer `.checkCredentials` with a verdict the input chooses).
//
// Input: a flags byte, a byte whose bits decide the commits, the read size, four
// bytes of settings, then what the client sends. The driver is kept small and in
// this file alone: when the receiver's API changes, only `ReceiverDriver` does.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let flags = input.byte()
    let commits = input.byte()
    let readSize = input.int(1...64)
    var settings = ReceiverSettings(
        hostname: "mx.fuzz", maxMessageSize: input.int(0...600), maxRecipients: input.int(1...4),
        recipients: flags & 2 != 0 ? .anyone : RecipientPolicy(patterns: [.domain(Array("example.com".utf8))]))
    settings.maxErrors = input.int(1...24)
    let tlsByte = input.byte()
    settings.tlsAvailable = tlsByte & 1 != 0
    settings.requireTLS = tlsByte & 2 != 0
    settings.authAvailable = tlsByte & 4 != 0
    if flags & 16 != 0 { settings.aliases = fuzzAliases(wildcard: flags & 32 != 0) }
    var driver = ReceiverDriver(settings: settings, clientAllowed: flags & 1 != 0,
                                spoolFullEveryOtherLine: flags & 4 != 0, commits: commits,
                                textBufferSize: flags & 8 != 0 ? 16 : 300, loopback: tlsByte & 8 != 0,
                                verdicts: tlsByte >> 4)
    let stream = input.rest()
    var at = 0
    while at < stream.count && !driver.closed {
        let end = min(stream.count, at + readSize)
        driver.received(UnsafeRawBufferPointer(rebasing: stream[at..<end]))
        at = end
    }
    if driver.closed { return }
    switch flags >> 4 & 3 {
    case 0: driver.perform(driver.machine.disconnected())
    case 1: driver.perform(driver.machine.timedOut())
    case 2: driver.perform(driver.machine.shutdown())
    default: break
    }
}

struct ReceiverDriver {
    var machine: SMTPReceiver
    var framer = LineFramer(maxLineLength: SMTPReceiver.extendedLineLength)
    var decoder = DataDecoder()
    /// Bytes read but not yet framed or decoded, as in the connection's input buffer.
    var pending: [UInt8] = []
    var closed = false
    let spoolFullEveryOtherLine: Bool
    let commits: UInt8
    var commitCount = 0
    var lines = 0
    let textBufferSize: Int
    /// Decoded bytes of the message being received; nil when no spool transaction is open.
    var storedText: Int? = nil

    /// Bits choosing each password check's verdict, two at a time.
    let verdicts: UInt8
    var checks = 0
    let clientAllowed: Bool

    init(settings: ReceiverSettings, clientAllowed: Bool, spoolFullEveryOtherLine: Bool, commits: UInt8,
         textBufferSize: Int, loopback: Bool, verdicts: UInt8) {
        machine = SMTPReceiver(settings: settings)
        self.spoolFullEveryOtherLine = spoolFullEveryOtherLine
        self.commits = commits
        self.textBufferSize = textBufferSize
        self.verdicts = verdicts
        self.clientAllowed = clientAllowed
        perform(machine.start(clientAllowed: clientAllowed, clientText: "[192.0.2.1]", tlsExempt: loopback))
    }

    var chunkDecoder = ChunkDecoder()

    mutating func received(_ bytes: UnsafeRawBufferPointer) {
        pending += bytes
        while !closed && !pending.isEmpty {
            if machine.expectsText {
                decodeText()
                continue
            }
            if let remaining = machine.chunkRemaining {
                readChunk(remaining)
                continue
            }
            let (frame, consumed) = pending.withUnsafeBytes { framer.next(in: $0) }
            require(consumed <= pending.count, "the framer consumed more than it was given")
            let line = pending[0..<consumed]
            pending.removeFirst(consumed)
            switch frame {
            case .needMore: return
            case .line(let range):
                require(range.upperBound + 2 == consumed, "a line that does not end in CRLF")
                lines += 1
                machine.spoolAcceptsMail = !spoolFullEveryOtherLine || lines % 2 == 0
                // The throttle's lockout, on some lines.
                machine.authLockedOut = verdicts & 8 != 0 && lines % 3 == 0
                perform(machine.receive(line: line[line.startIndex + range.lowerBound..<line.startIndex + range.upperBound]))
            case .tooLong: perform(machine.receiveLineTooLong())
            case .bareLineEnding: perform(machine.receiveBareLineEnding())
            }
        }
    }

    mutating func decodeText() {
        var text = [UInt8](repeating: 0, count: textBufferSize)
        let step = pending.withUnsafeBytes { p in text.withUnsafeMutableBytes { decoder.decode(p, into: $0) } }
        pending.removeFirst(step.consumed)
        if step.produced > 0 {
            storedText = storedText.map { $0 + step.produced }
            perform(machine.receiveText(count: step.produced))
        }
        if step.ended {
            perform(machine.receiveEndOfData())
        }
    }

    /// As `ReceiverConnection.readChunk`: the chunk's bytes are text (or
    /// thrown away after a refusal), never commands.
    mutating func readChunk(_ remaining: Int) {
        let take = min(remaining, pending.count)
        if machine.isStoring {
            var text = [UInt8](repeating: 0, count: textBufferSize)
            var taken = 0
            while taken < take {
                let step = pending[taken..<take].withUnsafeBytes { p in text.withUnsafeMutableBytes { chunkDecoder.decode(p, into: $0) } }
                require(step.consumed > 0 || step.produced == 2, "the chunk decoder made no progress")
                require(step.produced <= 2 * step.consumed + 2, "the chunk decoder produced too much")
                taken += step.consumed
                if step.produced > 0 {
                    storedText = storedText.map { $0 + step.produced }
                    perform(machine.receiveText(count: step.produced))
                }
            }
        }
        pending.removeFirst(take)
        let before = machine.chunkRemaining ?? 0
        perform(machine.receiveChunk(count: take))
        require(machine.chunkRemaining == nil || machine.chunkRemaining == before - take, "the chunk count went wrong")
    }

    mutating func perform(_ actions: [SMTPReceiver.Action]) {
        for action in actions {
            require(!closed, "an action after close: \(action)")
            switch action {
            case .reply(let r):
                checkReply(r)
                require(!r.lines.joined().hasPrefix("Ok: queued"), "250 queued without a commit")
            case .startData(let envelope):
                // A BDAT of size 0 has ended its chunk by the time its actions run.
                require(machine.expectsText || machine.chunkRemaining != nil || machine.phase == .gotChunks
                        || machine.phase == .awaitingCommit, "startData in state \(machine.phase)")
                require(!envelope.recipients.isEmpty, "DATA with no recipient")
                // An open relay: a client outside allow_clients is taken only after AUTH.
                require(clientAllowed || (envelope.authUser != nil && machine.settings.authAvailable),
                        "a message from a client outside allow_clients without AUTH")
                require(envelope.recipients.count <= machine.settings.maxRecipients, "too many recipients")
                for r in envelope.recipients {
                    require(r.atIndex == nil || machine.settings.recipients.allows(r) || aliasTargets.contains(r.text),
                            "a refused recipient in the envelope")
                    // A local recipient never reaches the spool: it is replaced by
                    // its alias (only the domain-less postmaster may stay).
                    require(!machine.settings.aliases.isLocal(r) || r.atIndex == nil, "a local recipient in the envelope")
                }
                decoder = DataDecoder()
                chunkDecoder = ChunkDecoder()
                storedText = 0
            case .abortMessage:
                storedText = nil
            case .commitMessage:
                // DESIGN.md principle 4: only a stored message within the limit is committed.
                guard let size = storedText else { fatalError("commit without an open spool transaction") }
                require(size <= machine.settings.maxMessageSize, "a commit of \(size) bytes over the limit")
                storedText = nil
                let ok = commits >> (commitCount % 8) & 1 == 0
                commitCount += 1
                if ok {
                    // Now, and only now, the 250 (RFC 5321 §6.1).
                    require(machine.committed(queueID: "00000000000000AB") == [.reply(Reply(250, "2.0.0", "Ok: queued as 00000000000000AB"))],
                            "the commit was not answered 250")
                } else {
                    perform(machine.commitFailed())
                }
            case .rejected(_, let reply):
                require(reply.code >= 400, "a rejection with \(reply.code)")
            case .close:
                closed = true
            case .checkCredentials:
                require(machine.authOffered && machine.isAwaitingAuth, "a check where AUTH is not offered")
                guard let c = machine.takeCredentials() else { fatalError("checkCredentials without credentials") }
                require(!c.password.isEmpty && c.password.count <= SASLServer.maxFieldLength && !c.password.contains(0),
                        "a password SASLServer should have refused")
                require(machine.takeCredentials() == nil, "credentials handed out twice")
                let verdict: SMTPReceiver.AuthVerdict
                switch verdicts >> (2 * (checks % 2)) & 3 {
                case 0: verdict = .match
                case 1: verdict = .mismatch
                default: verdict = .unavailable
                }
                checks += 1
                perform(machine.authChecked(verdict))
            case .authSucceeded:
                require(machine.authenticatedUser != nil && machine.authOffered, "AUTH succeeded where it is not offered")
            case .authFailed(_, let reply):
                require(reply.code == 535, "an AUTH failure answered \(reply.code)")
            case .startTLS:
                // RFC 3207 §4: what came in the clear after STARTTLS is dropped
                // (the handshake itself is not driven here).
                require(machine.tlsActive && machine.phase == .connected, "startTLS in state \(machine.phase)")
                require(machine.settings.tlsAvailable, "STARTTLS accepted without TLS")
                pending = []
            }
        }
    }

    /// Every reply is well-formed on the wire, whatever the client sent: a code
    /// of three digits, no CR or LF inside a line (RFC 5321 §4.2), and lines of
    /// at most 512 octets with their CRLF (RFC 5321 §4.5.3.1.5).
    func checkReply(_ r: Reply) {
        require(r.code >= 200 && r.code <= 599, "reply code \(r.code)")
        for line in r.lines {
            require(!line.utf8.contains(ASCII.cr) && !line.utf8.contains(ASCII.lf), "a line ending inside a reply")
        }
        let wire = r.encoded()
        var length = 0
        for b in wire {
            length += 1
            if b == ASCII.lf {
                require(length <= 512, "a reply line of \(length) octets")
                length = 0
            }
        }
    }
}

/// `[aliases]` for the session (flags bit 4; bit 5 adds `*`).
let aliasTargets = ["admin@example.com", "a@example.com", "b@example.com", "c@example.org"]

func fuzzAliases(wildcard: Bool) -> AliasMap {
    var lines = [AliasMap.Line(name: "root", value: "admin@example.com", line: 1),
                 AliasMap.Line(name: "ops", value: "a@example.com, b@example.com, root", line: 2)]
    if wildcard { lines.append(AliasMap.Line(name: "*", value: "c@example.org", line: 3)) }
    switch AliasMap.build(lines, localDomains: [Array("localhost".utf8), Array("mx.fuzz".utf8)]) {
    case .success(let m): return m
    case .failure: return .empty
    }
}
