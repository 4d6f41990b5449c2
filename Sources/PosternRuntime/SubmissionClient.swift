import CLibc
import PosternCore

/// The client side of the local submission socket, for `postern sendmail` and
/// the daemon's `postern pickup` child: one SMTP transaction to the running
/// daemon (RFC 5321 §3.3), blocking, each wait bounded by the client timeouts of
/// RFC 5321 §4.5.3.2. These are short-lived processes of their own, so blocking
/// is right here; the daemon's loop never runs this code.
///
/// The text is streamed: the caller's `source` fills a buffer with plain text
/// (CRLF line ends, not dot-stuffed) and `DataEncoder` dot-stuffs it on the way
/// out, so a message of any size costs the fixed buffers only.
public final class SubmissionClient {
    /// How a transaction ended.
    public enum Outcome {
        /// 250 after the final dot: the message is on the daemon's disk. `refused`
        /// holds the recipients the daemon would not take, with its reply.
        case accepted(queueReply: Reply, refused: [(Mailbox, Reply)])
        /// A 5xx for the whole message (MAIL, DATA or the final dot).
        case refused(String)
        /// Every recipient got a 5xx (an unknown local user: 550 5.1.1).
        case noRecipients(String)
        /// A 4xx, or the daemon went away or did not answer: the message is not
        /// in its spool, and may be offered again (the drop directory).
        case failed(String)
    }

    /// RFC 5321 §4.5.3.2: the client's waits. The greeting gets a minute here:
    /// under socket activation a daemon that was stopped starts first (and
    /// recovers its spool) before it answers.
    static let greetingMs: Int32 = 60_000
    static let commandMs: Int32 = 300_000
    static let dataInitiationMs: Int32 = 120_000
    static let dataBlockMs: Int32 = 180_000
    static let finalMs: Int32 = 600_000

    let fd: Int32
    /// Prints the dialogue (sendmail -v).
    var trace: ((String) -> Void)?
    var framer = LineFramer(maxLineLength: 4096, strict: false)
    var replies = ReplyParser()
    let input = ByteBuffer(capacity: 8192)

    init(fd: Int32, trace: ((String) -> Void)?) {
        self.fd = fd
        self.trace = trace
    }

    deinit { Sys.close(fd) }

    /// Connects to the daemon's submission socket; nil and the reason when
    /// nothing listens there (the daemon is not running).
    public static func connect(_ path: String, trace: ((String) -> Void)? = nil) -> Result<SubmissionClient, Problem> {
        let fd = cl_connect_unix(path)
        if fd < 0 { return .failure("cannot connect to \(path): \(Errno.current("connect").text)") }
        _ = cl_set_nonblocking(fd)
        return .success(SubmissionClient(fd: fd, trace: trace))
    }

    /// One whole transaction. `source` fills the buffer it is given with the next
    /// plain text and returns the count, 0 at the end, or nil when the text
    /// cannot be read (the transaction is then abandoned, nothing is queued).
    public func transfer(heloName: String, sender: Mailbox, recipients: [Mailbox], sevenBit: Bool = false,
                         source: (UnsafeMutableRawBufferPointer) -> Int?) -> Outcome {
        switch exchange(nil, Self.greetingMs) {
        case .failure(let p): return .failed("no greeting: \(p)")
        case .success(let r) where r.code != 220: return r.isPermanent ? .refused("greeting: \(r)") : .failed("greeting: \(r)")
        default: break
        }
        switch exchange("EHLO \(heloName)", Self.commandMs) {
        case .failure(let p): return .failed("EHLO: \(p)")
        case .success(let r) where r.code != 250: return r.isPermanent ? .refused("EHLO: \(r)") : .failed("EHLO: \(r)")
        default: break
        }
        // BODY=8BITMIME unless the program said 7BIT (sendmail -B): whether the
        // text has 8-bit octets is known only once it has been read, and the
        // daemon stores it as given (RFC 6152 §3).
        switch exchange("MAIL FROM:\(sender) BODY=\(sevenBit ? "7BIT" : "8BITMIME")", Self.commandMs) {
        case .failure(let p): return .failed("MAIL: \(p)")
        case .success(let r) where r.code != 250: return outcome("MAIL FROM:\(sender)", r)
        default: break
        }
        var refused: [(Mailbox, Reply)] = []
        var accepted = 0
        var lastTransient: Reply? = nil
        for rcpt in recipients {
            switch exchange("RCPT TO:\(rcpt)", Self.commandMs) {
            case .failure(let p): return .failed("RCPT: \(p)")
            case .success(let r) where r.code == 250 || r.code == 251: accepted += 1
            case .success(let r) where r.isTransient: lastTransient = r
            case .success(let r): refused.append((rcpt, r))
            }
        }
        if let r = lastTransient {
            // A recipient the daemon cannot take now (452: too many, or the spool
            // is full): all of the message is offered again later rather than
            // part of it now.
            _ = exchange("RSET", Self.commandMs)
            return .failed("RCPT: \(r)")
        }
        if accepted == 0 {
            _ = exchange("QUIT", Self.commandMs)
            return .noRecipients(refused.map { "\($0.0): \($0.1)" }.joined(separator: "; "))
        }
        switch exchange("DATA", Self.dataInitiationMs) {
        case .failure(let p): return .failed("DATA: \(p)")
        case .success(let r) where r.code != 354: return outcome("DATA", r)
        default: break
        }
        if let why = sendText(source) { return .failed(why) }
        switch exchange(nil, Self.finalMs) {
        case .failure(let p): return .failed("end of data: \(p)")
        case .success(let r) where r.code != 250: return outcome("end of data", r)
        case .success(let r):
            _ = exchange("QUIT", Self.commandMs)
            return .accepted(queueReply: r, refused: refused)
        }
    }

    func outcome(_ step: String, _ r: Reply) -> Outcome {
        r.isPermanent ? .refused("\(step): \(r)") : .failed("\(step): \(r)")
    }

    /// Streams the text through `DataEncoder`, then the end-of-data marker.
    func sendText(_ source: (UnsafeMutableRawBufferPointer) -> Int?) -> String? {
        var encoder = DataEncoder()
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
        let wire = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { plain.deallocate(); wire.deallocate() }
        while true {
            guard let n = source(plain) else { return "the message text could not be read" }
            if n <= 0 { break }
            var offset = 0
            while offset < n {
                let step = encoder.encode(UnsafeRawBufferPointer(rebasing: plain[offset..<n]), into: wire)
                offset += step.consumed
                if let why = sendAll(UnsafeRawBufferPointer(rebasing: wire[0..<step.produced]), Self.dataBlockMs) {
                    return why
                }
            }
        }
        let end = encoder.terminator()
        trace?(">>> .")
        return end.withUnsafeBytes { sendAll($0, Self.dataBlockMs) }
    }

    // MARK: the wire

    /// Sends `line` (if any) and reads the reply.
    func exchange(_ line: String?, _ timeoutMs: Int32) -> Result<Reply, Problem> {
        if let l = line {
            trace?(">>> " + l)
            let bytes = Array((l + "\r\n").utf8)
            if let why = bytes.withUnsafeBytes({ sendAll($0, Self.commandMs) }) { return .failure(Problem(why)) }
        }
        let r = readReply(timeoutMs)
        if case .success(let reply) = r { trace?("<<< \(reply)") }
        return r
    }

    func readReply(_ timeoutMs: Int32) -> Result<Reply, Problem> {
        while true {
            // Whole lines already buffered first.
            while !input.isEmpty {
                let view = input.readable
                let (frame, consumed) = framer.next(in: view)
                var line: [UInt8]? = nil
                if case .line(let range) = frame { line = Array(view[range]) }
                input.consume(consumed)
                if let bytes = line {
                    switch replies.feed(bytes[...]) {
                    case .success(let reply?): return .success(reply)
                    case .success(nil): continue
                    case .failure(.malformed(let text)): return .failure("malformed reply '\(text)'")
                    }
                }
                if case .needMore = frame { break }
            }
            input.compact()
            guard wait(Int16(POLLIN), timeoutMs) else { return .failure("no reply within \(timeoutMs / 1000) s") }
            switch Sys.read(fd, input.writable) {
            case .success(.done(let n)): input.didWrite(n)
            case .success(.eof): return .failure("the daemon closed the connection")
            case .success(.wouldBlock): continue
            case .failure(let e): return .failure("read: \(e.text)")
            }
        }
    }

    func sendAll(_ bytes: UnsafeRawBufferPointer, _ timeoutMs: Int32) -> String? {
        var offset = 0
        while offset < bytes.count {
            switch Sys.send(fd, UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
            case .success(.done(let n)): offset += n
            case .success(.wouldBlock):
                if !wait(Int16(POLLOUT), timeoutMs) { return "the daemon took nothing for \(timeoutMs / 1000) s" }
            case .success(.eof): return "the daemon closed the connection"
            case .failure(let e): return "send: \(e.text)"
            }
        }
        return nil
    }

    func wait(_ events: Int16, _ timeoutMs: Int32) -> Bool {
        var fds = [pollfd(fd: fd, events: events, revents: 0)]
        switch Sys.poll(&fds, timeoutMilliseconds: timeoutMs) {
        case .success(let n): return n > 0
        case .failure: return false
        }
    }
}
