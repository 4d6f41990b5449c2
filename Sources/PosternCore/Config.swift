/// Every setting Postern reads from `postern.conf`, with its default. The limits
/// live here, in one place; each comment gives the unit and where the number
/// comes from. `ConfigParser` fills this from a file.
public struct Config: Sendable {
    public var receiver = ReceiverConfig()
    public var spool = SpoolConfig()
    /// Tried in order: the first is primary, the rest are fallbacks.
    public var upstreams: [UpstreamConfig] = []
    public var retry = RetryConfig()
    public var control = ControlConfig()

    public init() {}
}

public struct ReceiverConfig: Sendable {
    /// Where local clients connect. Loopback only by default (DESIGN.md principle 7).
    public var listen: [Endpoint] = [Endpoint("127.0.0.1:25")!, Endpoint("[::1]:25")!]
    /// Our name in the greeting and `Received:` headers; nil means gethostname(2).
    public var hostname: String? = nil
    /// Client networks allowed to send mail (the others get 550 5.7.1).
    public var allowClients: [CIDR] = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]
    /// Recipients accepted (the others get 550 5.7.1): no open relay.
    public var allowRecipients: RecipientPolicy = .anyone
    /// Bytes of message text, advertised as SIZE (RFC 1870). 10 MiB as DESIGN.md.
    public var maxMessageSize = 10 * 1024 * 1024
    /// Recipients per transaction; RFC 5321 §4.5.3.1.8 requires accepting 100.
    public var maxRecipients = 100
    /// Simultaneous client connections; each takes one fixed buffer set, and a
    /// quarter of them is kept for loopback clients (`ConnectionSlots`).
    public var maxConnections = 16
    /// Seconds a client has for each command line (RFC 5321 §4.5.3.2.7 suggests
    /// 5 minutes) and for each 16 KiB block of message text (§4.5.3.2.5).
    public var timeout = 300

    public init() {}
}

public struct SpoolConfig: Sendable {
    public var dir = "/var/spool/postern"
    /// Bytes of segment files beyond which new mail gets 452 4.3.1.
    public var maxSize = 64 * 1024 * 1024
    /// Bytes after which a new segment file is started. Smaller segments give space
    /// back sooner; larger ones mean fewer file creations on flash.
    public var segmentSize = 4 * 1024 * 1024
    /// Seconds a message may stay queued before it is given up (Postfix's
    /// maximal_queue_lifetime is also 5 days). See `ExpiryPolicy`.
    public var maxAge = 5 * 86400

    public init() {}
}

public enum TLSMode: Equatable, Sendable {
    case none
}

public struct UpstreamConfig: Sendable {
    public var host = ""
    public var port = 25
    public var tls = TLSMode.none
    /// The reverse-path used toward this upstream, when the smarthost accepts only
    /// its own account as sender; nil forwards the client's.
    public var envelopeFrom: Mailbox? = nil
    /// Line of the section header, for messages about this upstream.
    public var line = 0

    public init() {}

    public var name: String {
        IPAddress(host).map { Endpoint(address: $0, port: port).description } ?? "\(host):\(port)"
    }
}

public struct RetryConfig: Sendable {
    /// Seconds before the first retry of a deferred message.
    public var initial = 60
    /// Seconds between retries at most; the delay doubles from `initial` up to this.
    public var max = 3600

    public init() {}
}

public struct ControlConfig: Sendable {
    public var socket = "/run/postern/control"

    public init() {}
}
