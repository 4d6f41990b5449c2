@testable import PosternCore

// The configuration parser (ConfigParser.parse) over arbitrary text, on the
// platform's width and as a 32-bit board would run it (the first byte chooses).
// A file is either a Config whose values respect their documented relations, or
// an error naming a line of the file.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    var parser = ConfigParser(file: "/fuzz/postern.conf", baseDirectory: "/fuzz")
    if input.bool() { parser.platformIntMax = Int64(Int32.max) }
    let text = Array(input.rest())
    let lines = text.reduce(1) { $1 == ASCII.lf ? $0 + 1 : $0 }
    switch parser.parse(text) {
    case .failure(let e):
        require(e.file == "/fuzz/postern.conf", "the error names another file")
        require(e.line >= 0 && e.line <= lines, "error line \(e.line) of \(lines)")
        require(!e.message.isEmpty, "an empty error")
    case .success(let c):
        require(Int64(c.spool.segmentSize) <= c.spool.maxBytes, "segment_size above max_size")
        require(c.retry.initial <= c.retry.max, "retry initial above max")
        // Issue 8: AUTH only with a name and one secret; a pin is 32 bytes;
        // rewriting From: needs the address to write.
        for u in c.upstreams {
            require(u.auth == .none || (u.username != nil && u.secret != nil), "AUTH without a name or secret")
            require(u.fingerprint.map { $0.count == 32 } ?? true, "a fingerprint of the wrong length")
            require(!u.rewriteFrom || u.envelopeFrom != nil, "rewrite_from without envelope_from")
            require((u.clientCert == nil) == (u.clientKey == nil), "a client certificate without its key")
            if case .command(let argv)? = u.secret { require(!argv.isEmpty, "an empty password_command") }
        }
        require(c.receiver.maxMessageSize >= 1024, "max_message_size below its minimum")
        // max_size is 64-bit on every board (issue 10 item 2); the per-message
        // and per-segment sizes stay within the platform's `Int`.
        require(c.spool.maxBytes <= SpoolConfig.maxSizeCeiling, "max_size beyond its ceiling")
        require(Int64(c.spool.segmentSize) <= parser.sizeCeiling, "segment_size beyond the platform")
        require(Int64(c.receiver.maxMessageSize) <= parser.sizeCeiling, "max_message_size beyond the platform")
        require(!c.upstreams.isEmpty, "no upstream")
        _ = MemoryBudget(c).lines(c)
    }
}
