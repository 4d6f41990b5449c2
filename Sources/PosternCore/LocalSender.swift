/// Who handed a message over on the local submission socket, as the kernel says
/// (SO_PEERCRED at connect, or the owner of a drop file): never what the client
/// claims in MAIL FROM or in its headers. It goes into the `Received:` line and
/// the journal, so a message from the board itself can be traced to the user
/// (and for a socket submission, the process) that wrote it.
public struct LocalSender: Equatable, Sendable, CustomStringConvertible {
    public var uid: UInt32
    /// The login name for `uid`, nil when the user database has none.
    public var user: String?
    /// The submitting process; nil for a message taken from the drop directory
    /// (its writer may be long gone).
    public var pid: Int32?

    public init(uid: UInt32, user: String?, pid: Int32?) {
        self.uid = uid
        self.user = user.map(Self.commentSafe)
        self.pid = pid
    }

    /// True when it came through the drop directory.
    public var viaMaildrop: Bool { pid == nil }

    /// "alice" or "uid 1000", for logs.
    public var name: String { user ?? "uid \(uid)" }

    /// "userid 1000 alice, pid 4242" or "userid 1000 alice, via maildrop": what
    /// Postfix writes in its `(Postfix, from userid 1000)` comment, plus the name.
    public var description: String {
        var s = "userid \(uid)"
        if let u = user { s += " \(u)" }
        if let p = pid { s += ", pid \(p)" } else { s += ", via maildrop" }
        return s
    }

    /// A user name reaches a header comment (RFC 5322 §3.2.2) and a log line:
    /// anything but letters, digits, '.', '_', '-' and '$' becomes '?', and it
    /// is cut at 32 octets (useradd's limit).
    static func commentSafe(_ name: String) -> String {
        var out = ""
        for b in name.utf8.prefix(32) {
            let ok = ASCII.isAlpha(b) || ASCII.isDigit(b) || b == ASCII.dot || b == 95 || b == 45 || b == 36
            out.unicodeScalars.append(Unicode.Scalar(ok ? b : 63))
        }
        return out
    }
}
