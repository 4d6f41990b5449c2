import CLibc
import PosternCore
import PosternRuntime

// `postern sendmail` and the same binary called as `sendmail`, `mailq` or
// `newaliases` (issue 9): how cron, smartd, mdadm, apcupsd/NUT, unattended-
// upgrades and mail(1) hand the board's own mail to Postern.
//
// A message travels like this:
//  1. the options are parsed (`SendmailArguments`, Postfix's sendmail(1) as the
//     model) and standard input is read through `SubmissionFilter` up to the end
//     of the header section: line ends become CRLF, recipients are taken from
//     To/Cc/Bcc with -t, and Date:, Message-ID: and From: are added if missing;
//  2. a copy starts in the drop directory (`DropWriter`, `t.RANDOM`, mode 0640);
//  3. the message is submitted to the daemon on the local socket
//     (`SubmissionClient`); the daemon learns the user from the kernel
//     (SO_PEERCRED), never from us;
//  4. on the daemon's 250 the copy is removed and sendmail exits 0. If the
//     daemon is not running, does not answer, answers 4xx or goes away in the
//     middle, the rest of standard input goes to the copy, which is synced and
//     renamed `m.TIME.RANDOM` (the daemon takes it in when it runs), and
//     sendmail still exits 0. Only when neither worked does it exit 75.

let exDataErr: Int32 = 65
let exNoUser: Int32 = 67

/// The configuration file: -C, else POSTERN_CONFIG, else the default.
func configPathFromEnvironment() -> String {
    if let p = getenv("POSTERN_CONFIG") {
        let s = String(cString: p)
        if !s.isEmpty { return s }
    }
    return defaultConfig
}

/// The last path component of argv[0].
func programName(_ argv0: String) -> String {
    guard let slash = argv0.utf8.lastIndex(of: 47) else { return argv0 }
    return String(decoding: argv0.utf8[argv0.utf8.index(after: slash)...], as: UTF8.self)
}

func sendmailCommand(_ args: [String], program: String) -> Int32 {
    let options: SendmailArguments
    switch SendmailArguments.parse(args, programName: program) {
    case .success(let o): options = o
    case .failure(let p):
        Sys.writeStderr("\(program): \(p)\nusage: \(program) [-t] [-i] [-f sender] [-F name] [-bs | -bp | -q] [recipient ...]\n")
        return exUsage
    }
    let path = options.configFile ?? configPathFromEnvironment()
    switch options.mode {
    case .listQueue: return controlCommand("queue", ["--config", path], allowed: ["--config"])
    case .flushQueue: return controlCommand("flush", ["--config", path], allowed: ["--config"])
    case .initAliases, .hostStatus: return 0
    case .smtpSession, .deliver: break
    }
    let config = submissionConfig(path, program: program)
    if options.mode == .smtpSession { return smtpSession(config, program: program) }
    return Submission(options: options, config: config, program: program).run()
}

/// The configuration as far as submission needs it (the socket, the drop
/// directory, the host name). A file that cannot be read or parsed is reported,
/// and the defaults are used: the message is worth more than the error.
func submissionConfig(_ path: String, program: String) -> Config {
    switch ConfigFile.load(path) {
    case .success(let c): return c
    case .failure(let e):
        Sys.writeStderr("\(program): warning: \(e); using the default socket and drop directory\n")
        return Config()
    }
}

/// One message from standard input to the daemon or the drop directory.
final class Submission {
    let options: SendmailArguments
    let config: Config
    let program: String
    let hostname: String
    let input: FilteredInput
    var copy: DropWriter? = nil
    var copyProblem: Problem? = nil

    init(options: SendmailArguments, config: Config, program: String) {
        self.options = options
        self.config = config
        self.program = program
        hostname = config.receiver.hostname ?? Sys.hostname()
        input = FilteredInput()
    }

    func fail(_ code: Int32, _ text: String) -> Int32 {
        Sys.writeStderr("\(program): \(text)\n")
        return code
    }

    func run() -> Int32 {
        let uid = cl_getuid()
        let user = LocalUsers.name(uid) ?? "uid\(uid)"
        let sender: Mailbox
        if let f = options.sender {
            guard let m = f.isEmpty ? Mailbox.null : qualify(f) else {
                return fail(exUsage, "-f: '\(f)' is not a valid address")
            }
            sender = m
        } else {
            guard let m = qualify(user) else { return fail(exSoftware, "cannot make an address of the user name '\(user)'") }
            sender = m
        }
        let fromAddress = sender.isNull ? (qualify(user) ?? sender) : sender
        let fullName = options.fullName ?? LocalUsers.fullName(uid)
        let wall = Clock.wall()
        let filterOptions = SubmissionFilter.Options(
            extractRecipients: options.extractRecipients, dotEndsInput: options.dotEndsInput, dotStuffed: false,
            localDomain: Array(hostname.utf8),
            date: Array(TraceHeader.date(seconds: wall, utcOffset: Int(cl_utc_offset(wall))).utf8),
            messageID: Array("<\(ASCII.hex(UInt64(bitPattern: wall), width: 10)).\(ASCII.hex(cl_random64(), width: 16))@\(hostname)>".utf8),
            from: SubmissionFilter.fromValue(fullName: Array((fullName ?? "").utf8), address: fromAddress.bytes))
        input.start(SubmissionFilter(filterOptions))

        // The header section first: with -t it holds the recipients.
        if let why = input.readHeader() { return fail(exTempFail, why) }
        if let p = input.filter.problems.first { return fail(exDataErr, p.text) }
        var recipients: [Mailbox] = []
        var seen: Set<[UInt8]> = []
        for word in options.recipients {
            switch SubmissionFilter.recipients(inArgument: word, localDomain: Array(hostname.utf8)) {
            case .success(let list):
                for m in list where seen.insert(m.canonical).inserted { recipients.append(m) }
            case .failure(let p):
                return fail(exDataErr, p.text)
            }
        }
        for m in input.filter.recipients where seen.insert(m.canonical).inserted { recipients.append(m) }
        if recipients.isEmpty {
            return fail(exUsage, options.extractRecipients ? "no recipient addresses found in the message header"
                                                           : "no recipients: give them as arguments, or use -t")
        }
        if recipients.count > DropEnvelope.maxRecipients {
            return fail(exDataErr, "more than \(DropEnvelope.maxRecipients) recipients")
        }

        // A copy in the drop directory, in case the daemon does not take it.
        let dropDir = config.local.dropDirectory(spoolDir: config.spool.dir)
        switch DropWriter.create(in: dropDir) {
        case .success(let w):
            if let p = w.write(DropEnvelope.encode(sender: sender, recipients: recipients)) { copyProblem = p } else { copy = w }
        case .failure(let p): copyProblem = p
        }
        input.copy = copy

        let trace: ((String) -> Void)? = options.verbose > 0 ? { Sys.writeStderr($0 + "\n") } : nil
        var daemonProblem = ""
        switch SubmissionClient.connect(config.local.socket, trace: trace) {
        case .failure(let p):
            daemonProblem = "postern is not running (\(p))"
        case .success(let client):
            let outcome = client.transfer(heloName: hostname, sender: sender, recipients: recipients,
                                          sevenBit: options.bodyType == .sevenBit) { input.fill($0) }
            switch outcome {
            case .accepted(let reply, let refused):
                input.copy?.discard()
                for (rcpt, r) in refused { Sys.writeStderr("\(program): \(rcpt): \(r)\n") }
                if options.verbose > 0 { Sys.writeStderr("\(program): \(reply)\n") }
                return 0
            case .refused(let why):
                input.copy?.discard()
                return fail(exDataErr, "refused: \(why)")
            case .noRecipients(let why):
                input.copy?.discard()
                return fail(exNoUser, "refused: \(why)")
            case .failed(let why):
                daemonProblem = why
            }
        }
        // The daemon did not take it: the drop directory does.
        guard let w = copy, input.copyProblem == nil else {
            let why = input.copyProblem ?? copyProblem ?? "no drop directory"
            return fail(exTempFail, "message not sent: \(daemonProblem); and not stored: \(why)")
        }
        if let why = input.drain() { return fail(exTempFail, "message not sent: \(daemonProblem); and not stored: \(why)") }
        if let p = w.publish() { return fail(exTempFail, "message not sent: \(daemonProblem); and not stored: \(p)") }
        if options.verbose > 0 {
            Sys.writeStderr("\(program): \(daemonProblem); the message is stored in \(dropDir) for the daemon\n")
        }
        return 0
    }

    /// An address as given, or `name@hostname` for a name without a domain.
    func qualify(_ text: String) -> Mailbox? {
        var bytes = Array(text.utf8)
        if !bytes.contains(ASCII.at) { bytes += [ASCII.at] + Array(hostname.utf8) }
        return Mailbox.parse(bytes[...], allowNull: false)
    }
}

/// Standard input through `SubmissionFilter`, as the text source of the
/// transfer, copying every octet it hands out to the drop file.
final class FilteredInput {
    var filter = SubmissionFilter(SubmissionFilter.Options(localDomain: [], date: [], messageID: [], from: []))
    let inBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    var inStart = 0
    var inEnd = 0
    var eof = false
    var finished = false
    /// Output produced while the header was read, before the transfer asked.
    var stash: [UInt8] = []
    var copy: DropWriter? = nil
    var copyProblem: Problem? = nil
    var readProblem: String? = nil

    deinit { inBuffer.deallocate() }

    func start(_ f: SubmissionFilter) { filter = f }

    /// Reads until the header section is complete (or the input ends).
    func readHeader() -> String? {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
        defer { scratch.deallocate() }
        while !filter.headerDone && !finished {
            guard let n = next(scratch) else { return readProblem ?? "standard input cannot be read" }
            stash += scratch[0..<n]
            if n == 0 && (eof || filter.inputEnded) && !filter.headerDone { break }
        }
        return nil
    }

    /// The transfer's source: the next text, 0 at the end, nil on a read error.
    func fill(_ out: UnsafeMutableRawBufferPointer) -> Int? {
        if !stash.isEmpty {
            let n = min(stash.count, out.count)
            for i in 0..<n { out[i] = stash[i] }
            stash.removeFirst(n)
            return tee(out, n)
        }
        while !finished {
            guard let n = next(out) else { return nil }
            if n > 0 { return tee(out, n) }
        }
        return 0
    }

    /// Everything left, into the drop file only.
    func drain() -> String? {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
        defer { scratch.deallocate() }
        while true {
            guard let n = fill(scratch) else { return readProblem ?? "standard input cannot be read" }
            if let p = copyProblem { return p.text }
            if n == 0 { return nil }
        }
    }

    func tee(_ out: UnsafeMutableRawBufferPointer, _ n: Int) -> Int {
        if let c = copy, copyProblem == nil, n > 0 {
            copyProblem = c.write(UnsafeRawBufferPointer(rebasing: out[0..<n]))
        }
        return n
    }

    /// One step of the filter: reads standard input when its bytes are used up.
    func next(_ out: UnsafeMutableRawBufferPointer) -> Int? {
        if inStart == inEnd && !eof && !filter.inputEnded {
            inStart = 0
            inEnd = 0
            switch Sys.read(0, inBuffer) {
            case .success(.done(let n)): inEnd = n
            case .success(.eof): eof = true
            case .success(.wouldBlock): return 0
            case .failure(let e):
                readProblem = "standard input: \(e.text)"
                return nil
            }
        }
        if inStart < inEnd && !filter.inputEnded {
            let step = filter.filter(UnsafeRawBufferPointer(rebasing: inBuffer[inStart..<inEnd]), into: out)
            inStart += step.consumed
            return step.produced
        }
        let ending = filter.finish(into: out)
        if ending.done { finished = true }
        return ending.produced
    }
}

/// `sendmail -bs`: an SMTP session on standard input and output, relayed to the
/// daemon's submission socket (which learns the user from the kernel). Without a
/// running daemon the client gets 421 at once and nothing is accepted, so
/// nothing can be lost.
func smtpSession(_ config: Config, program: String) -> Int32 {
    let fd = cl_connect_unix(config.local.socket)
    if fd < 0 {
        let hostname = config.receiver.hostname ?? Sys.hostname()
        Sys.writeStdout("421 4.3.0 \(hostname) Postern is not running; try again later\r\n")
        Sys.writeStderr("\(program): postern is not running (\(config.local.socket): \(Errno.current("connect").text))\n")
        return exTempFail
    }
    defer { Sys.close(fd) }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    defer { buffer.deallocate() }
    var stdinOpen = true
    while true {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        if stdinOpen { fds.append(pollfd(fd: 0, events: Int16(POLLIN), revents: 0)) }
        guard case .success = Sys.poll(&fds, timeoutMilliseconds: -1) else { return exIOErr }
        if fds[0].revents != 0 {
            guard case .success(.done(let n)) = Sys.read(fd, buffer) else { return 0 }   // the daemon closed: done
            if !writeAll(1, UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { return 0 }
        }
        if stdinOpen && fds.count > 1 && fds[1].revents != 0 {
            switch Sys.read(0, buffer) {
            case .success(.done(let n)):
                if !writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { return 0 }
            default:
                // End of our input: the daemon answers what it has, then closes.
                stdinOpen = false
                _ = shutdown(fd, Int32(SHUT_WR))
            }
        }
    }
}

let exIOErr: Int32 = 74

/// Blocking write of everything (standard output, or the socket).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    while offset < bytes.count {
        switch Sys.send(fd, UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
        case .success(.done(let n)): offset += n
        case .success(.wouldBlock):
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            _ = Sys.poll(&fds, timeoutMilliseconds: 1000)
        default:
            // Not a socket (standard output to a pipe): write(2).
            let n = write(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
            if n <= 0 { return false }
            offset += n
        }
    }
    return true
}

/// `postern pickup --socket PATH`: run by the daemon with a drop file as standard
/// input (`MailDrop`). Exit 0: the daemon took the message; 65: refused for good
/// or not a drop file; 75: try again later.
func pickupCommand(_ args: [String]) -> Int32 {
    guard args.count == 2, args[0] == "--socket" else {
        Sys.writeStderr("usage: postern pickup --socket PATH < dropfile (run by the daemon)\n")
        return exUsage
    }
    var head: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    defer { chunk.deallocate() }
    var parsed: DropEnvelope.Parsed? = nil
    while parsed == nil {
        switch Sys.read(0, chunk) {
        case .success(.done(let n)): head += chunk[0..<n]
        case .success(.eof), .success(.wouldBlock):
            Sys.writeStderr("not a drop file: it ends inside the envelope\n")
            return exDataErr
        case .failure(let e):
            Sys.writeStderr("cannot read the drop file: \(e.text)\n")
            return exTempFail
        }
        switch DropEnvelope.parse(head[...]) {
        case .envelope(let p): parsed = p
        case .needMore: continue
        case .invalid(let p):
            Sys.writeStderr("not a drop file: \(p)\n")
            return exDataErr
        }
    }
    guard let envelope = parsed else { return exSoftware }
    var leftover = Array(head[envelope.length...])
    let client: SubmissionClient
    switch SubmissionClient.connect(args[1]) {
    case .success(let c): client = c
    case .failure(let p):
        Sys.writeStderr("\(p)\n")
        return exTempFail
    }
    var readFailed = false
    let outcome = client.transfer(heloName: Sys.hostname(), sender: envelope.sender, recipients: envelope.recipients) { out in
        if !leftover.isEmpty {
            let n = min(leftover.count, out.count)
            for i in 0..<n { out[i] = leftover[i] }
            leftover.removeFirst(n)
            return n
        }
        switch Sys.read(0, out) {
        case .success(.done(let n)): return n
        case .success(.eof), .success(.wouldBlock): return 0
        case .failure:
            readFailed = true
            return nil
        }
    }
    switch outcome {
    case .accepted(_, let refused):
        for (rcpt, r) in refused { Sys.writeStderr("recipient \(rcpt) refused: \(r)\n") }
        return 0
    case .refused(let why), .noRecipients(let why):
        Sys.writeStderr("refused: \(why)\n")
        return exDataErr
    case .failed(let why):
        Sys.writeStderr(readFailed ? "the drop file cannot be read: \(why)\n" : "\(why)\n")
        return exTempFail
    }
}
