/// Every setting Postern reads from `postern.conf`, with its default. The limits
/// live here, in one place; each comment gives the unit and where the number
/// comes from. `ConfigParser` fills this from a file.
///
/// A few defaults depend on another setting, so that a default never conflicts
/// with what the user wrote (issue 7 item 5). When only one key of a pair is
/// written, the other follows it by the rule of the `…(for…:)` function next to
/// it; when both are written and conflict, the parser reports both lines:
/// - `segment_size` follows `max_size`, `max_size` follows `segment_size`;
/// - `max_message_size` is at most `max_size`;
/// - `[retry] initial` is at most `max`, `max` at least `initial`.
public struct Config: Sendable {
    public var receiver = ReceiverConfig()
    public var spool = SpoolConfig()
    /// Tried in order: the first is primary, the rest are fallbacks.
    public var upstreams: [UpstreamConfig] = []
    public var retry = RetryConfig()
    public var control = ControlConfig()
    public var notify = NotifyConfig()
    public var local = LocalConfig()
    /// `[aliases]`, resolved: local recipients to real addresses.
    public var aliases = AliasMap.empty
    /// "section.key" of each setting not written but derived from another one, for
    /// `postern check-config` to say so.
    public var derived: [String] = []

    public init() {}
}

/// A TLS protocol version, as `tls_min_version` writes it.
public enum TLSVersion: Int, Sendable, CaseIterable {
    case v1_0 = 10, v1_1 = 11, v1_2 = 12, v1_3 = 13

    public init?(text: String) {
        switch text {
        case "1.0", "TLSv1", "TLSv1.0": self = .v1_0
        case "1.1", "TLSv1.1": self = .v1_1
        case "1.2", "TLSv1.2": self = .v1_2
        case "1.3", "TLSv1.3": self = .v1_3
        default: return nil
        }
    }

    public var text: String {
        switch self {
        case .v1_0: return "1.0"
        case .v1_1: return "1.1"
        case .v1_2: return "1.2"
        case .v1_3: return "1.3"
        }
    }
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
    /// Bytes of message text, advertised as SIZE (RFC 1870). 10 MiB as DESIGN.md,
    /// or the spool's `max_size` if that is smaller.
    public var maxMessageSize = 10 * 1024 * 1024
    /// Recipients per transaction; RFC 5321 §4.5.3.1.8 requires accepting 100.
    public var maxRecipients = 100
    /// Simultaneous client connections; each takes one fixed buffer set, and a
    /// quarter of them is kept for loopback clients (`ConnectionSlots`).
    public var maxConnections = 16
    /// Seconds a client has for each command line (RFC 5321 §4.5.3.2.7 suggests
    /// 5 minutes) and for each 16 KiB block of message text (§4.5.3.2.5).
    public var timeout = 300
    /// The server certificate chain and its key (PEM): with both, STARTTLS is
    /// offered (RFC 3207) and `listen_tls` may be used. Read at start and at
    /// each reload.
    public var tlsCert: String? = nil
    public var tlsKey: String? = nil
    /// The oldest TLS version a client may use. 1.2 by default (RFC 8996 retired
    /// 1.0 and 1.1); 1.0 is allowed, with a warning, for old cameras and printers.
    public var tlsMinVersion = TLSVersion.v1_2
    /// MAIL is refused (530 5.7.0, RFC 3207 §4) from clients outside loopback
    /// until they have started TLS.
    public var requireTLS = false
    /// The `user:hash` file of clients that may use AUTH (`AuthUsers`, issue
    /// 12 item 2), read at start and at each reload. With it, AUTH is offered
    /// over TLS and on loopback, and a client outside `allow_clients` must
    /// authenticate before MAIL.
    public var authUsers: String? = nil
    /// Listeners where TLS starts with the first byte (RFC 8314 §3.3, port 465).
    public var listenTLS: [Endpoint] = []
    /// Connections one client address may hold at once (`ConnectionSlots`):
    /// half of `maxConnections`, at least 1, unless written (Postfix's
    /// smtpd_client_connection_count_limit is half its default process limit).
    public var maxConnectionsPerClient = 8
    /// Clients the per-client cap does not apply to (Postfix exempts
    /// `$mynetworks`): loopback; may be written empty.
    public var connectionLimitExempt: [CIDR] = ConnectionSlots.loopbackNetworks
    /// Seconds the greeting waits for clients outside `greetPauseExempt`, any
    /// input before it refusing them (RFC 5321 §3.1; `GreetPolicy`). 0–60.
    public var greetPause = 1
    /// Clients greeted at once and never checked for early input: loopback;
    /// may be written empty.
    public var greetPauseExempt: [CIDR] = ConnectionSlots.loopbackNetworks

    public init() {}

    /// The default `max_connections_per_client` for `max_connections`.
    public static func maxConnectionsPerClient(forMaxConnections total: Int) -> Int {
        ConnectionSlots.defaultPerClient(total: total)
    }

    /// STARTTLS and `listen_tls` are possible.
    public var tlsEnabled: Bool { tlsCert != nil && tlsKey != nil }

    /// The default `max_message_size` for a spool of `spoolSize` bytes: a message
    /// larger than the whole spool could never be queued, so none is invited.
    /// At most the 10 MiB default, so it fits an `Int` on every board.
    public static func maxMessageSize(forSpoolSize spoolSize: Int64) -> Int {
        Int(clamping: Swift.min(Int64(ReceiverConfig().maxMessageSize), spoolSize))
    }
}

public struct SpoolConfig: Sendable {
    public var dir = "/var/spool/postern"
    /// Bytes of segment files beyond which new mail gets 452 4.3.1. 64 MiB, or
    /// the written `segment_size` if that is larger; at most `maxSizeCeiling`.
    /// 64 bits on every board: on a 32-bit one (armv7, whose `Int` is 32 bits)
    /// the spool may still hold more than 2 GiB (issue 10 item 2). Only the
    /// spool-wide sums are this wide; a message and a segment stay within `Int`.
    public var maxBytes: Int64 = 64 * 1024 * 1024
    /// Bytes after which a new segment file is started. Smaller segments give space
    /// back sooner; larger ones mean fewer file creations on flash. The default
    /// is derived from `max_size`: see `segmentSize(forMaxSize:)`.
    public var segmentSize = 4 * 1024 * 1024

    /// The largest `max_size` accepted, the same on every board: 1 TiB, far
    /// beyond a board's storage and far below where an `Int64` sum of it and a
    /// record could overflow.
    public static let maxSizeCeiling: Int64 = 1 << 40

    /// Smallest segment size the configuration accepts.
    public static let minSegmentSize = 64 * 1024

    /// The default segment size for a spool of `maxSize` bytes: a quarter of it,
    /// between 64 KiB and 4 MiB. Space comes back a whole segment at a time, so a
    /// segment of a quarter of the spool lets the oldest be freed while three
    /// others are in use; 4 MiB (the default for the default 64 MiB spool) keeps
    /// files few on flash; 64 KiB is the smallest accepted and is never larger
    /// than `max_size`, whose minimum is the same.
    public static func segmentSize(forMaxSize maxSize: Int64) -> Int {
        // Between 64 KiB and 4 MiB: narrowed only once it is that small.
        let quarter = Swift.min(Int64(SpoolConfig().segmentSize), maxSize / 4)
        return Swift.max(minSegmentSize, Int(clamping: quarter))
    }

    /// The default `max_size` when only `segment_size` is written: 64 MiB, or one
    /// segment if that is larger.
    public static func maxSize(forSegmentSize segmentSize: Int) -> Int64 {
        Swift.max(SpoolConfig().maxBytes, Int64(segmentSize))
    }
    /// Seconds a message may stay queued before it is given up (Postfix's
    /// maximal_queue_lifetime is also 5 days). See `ExpiryPolicy`.
    public var maxAge = 5 * 86400
    /// `sync`: how the group commit's syncs run so the loop goes on while they
    /// do (issue 11 item 3).
    public var sync = SyncMethod.auto

    public init() {}
}

/// `[spool] sync`: what runs the group commit's fdatasync and directory fsync.
public enum SyncMethod: Equatable, Sendable {
    /// io_uring where the kernel allows it, else `helper`.
    case auto
    /// io_uring only; where it cannot run, the loop syncs.
    case ioUring
    /// Two helper processes, forks of the daemon made at start.
    case helper
    /// In the loop, which waits: for a system where the daemon must neither
    /// fork nor use io_uring (the tests under qemu-user, whose forked children
    /// hang and which has no io_uring).
    case loop

    /// As written in the configuration.
    public var name: String {
        switch self {
        case .auto: return "auto"
        case .ioUring: return "io_uring"
        case .helper: return "helper"
        case .loop: return "loop"
        }
    }

    public static let all: [SyncMethod] = [.auto, .ioUring, .helper, .loop]
}

/// How the connection to an upstream is protected.
public enum TLSMode: Equatable, Sendable {
    /// Plain TCP; only when written (`tls = none`).
    case none
    /// STARTTLS after the first EHLO (RFC 3207); an upstream that does not offer
    /// it gets nothing.
    case starttls
    /// TLS from the first byte (RFC 8314 §3.3), the default for port 465.
    case implicit

    public var name: String {
        switch self {
        case .none: return "none"
        case .starttls: return "starttls"
        case .implicit: return "implicit"
        }
    }

    /// The default when `tls` is not written: implicit TLS on the submissions
    /// port 465 (RFC 8314 §7.3), STARTTLS everywhere else.
    public static func defaultMode(forPort port: Int) -> TLSMode { port == 465 ? .implicit : .starttls }
}

/// Which SASL mechanism authenticates to the upstream (RFC 4954).
public enum AuthChoice: Equatable, Sendable {
    case none
    /// PLAIN if the upstream offers it, else LOGIN: what msmtp and Postfix do
    /// for a password.
    case auto
    case plain
    case login
    /// Google's and Microsoft's OAuth 2.0 bearer-token mechanism; the secret is
    /// an access token, usually from `password_command`.
    case xoauth2

    public var name: String {
        switch self {
        case .none: return "none"
        case .auto: return "auto"
        case .plain: return "plain"
        case .login: return "login"
        case .xoauth2: return "xoauth2"
        }
    }
}

/// Where the AUTH secret comes from. Never the secret itself: it is read when a
/// connection needs it and wiped after use.
public enum SecretSource: Equatable, Sendable {
    /// A file readable by its owner only; its first line is the secret.
    case file(String)
    /// A program run without a shell; its standard output is the secret (an
    /// OAuth 2.0 access token that expires hourly, a password manager).
    case command([String])
}

public struct UpstreamConfig: Sendable {
    public var host = ""
    public var port = 25
    /// Follows `port` unless written: see `TLSMode.defaultMode(forPort:)`.
    public var tls = TLSMode.starttls
    /// Check the certificate chain and the host name; `verify = no` is logged as
    /// a warning at every start.
    public var verify = true
    /// PEM bundle of trusted CAs; nil uses the system's hashed directory
    /// (`TLSDefaults.systemCertificateDirectory`).
    public var caFile: String? = nil
    /// SHA-256 of the upstream's public key (SubjectPublicKeyInfo): when set, this
    /// key is the trust anchor instead of the CAs and the host name.
    public var fingerprint: [UInt8]? = nil
    public var clientCert: String? = nil
    public var clientKey: String? = nil
    public var auth = AuthChoice.none
    public var username: String? = nil
    public var secret: SecretSource? = nil
    /// The reverse-path used toward this upstream, when the smarthost accepts only
    /// its own account as sender; nil forwards the client's.
    public var envelopeFrom: Mailbox? = nil
    /// Also rewrite the `From:` header to `envelopeFrom`, keeping the original as
    /// the display name and as `Reply-To:` (issue 8 item 7).
    public var rewriteFrom = false
    /// Also rewrite local addresses in `To:` and `Cc:` (`root`) to what
    /// `[aliases]` maps them to: Amazon SES and others refuse `To: root`.
    public var rewriteTo = false
    /// Line of the section header, for messages about this upstream.
    public var line = 0

    public init() {}

    public var name: String {
        IPAddress(host).map { Endpoint(address: $0, port: port).description } ?? "\(host):\(port)"
    }
}

/// Where TLS finds what the configuration does not name.
public enum TLSDefaults {
    /// Debian's hashed directory of trusted CAs (c_rehash names), looked up per
    /// subject when a chain needs it rather than parsed whole.
    public static let systemCertificateDirectory = "/etc/ssl/certs"
}

public struct RetryConfig: Sendable {
    /// Seconds before the first retry of a deferred message: 1 minute, or `max`
    /// if only that is written and it is shorter.
    public var initial = 60
    /// Seconds between retries at most; the delay doubles from `initial` up to
    /// this. 1 hour, or `initial` if only that is written and it is longer.
    public var max = 3600

    public init() {}

    public static func initial(forMax max: Int) -> Int { Swift.min(RetryConfig().initial, max) }

    public static func max(forInitial initial: Int) -> Int { Swift.max(RetryConfig().max, initial) }
}

public struct NotifyConfig: Sendable {
    /// Gets the failure notice (RFC 3464) when the sender of a failed message
    /// is empty or local to the board; nil: such failures are only logged.
    public var postmaster: Mailbox? = nil

    public init() {}
}

public struct ControlConfig: Sendable {
    public var socket = "/run/postern/control"

    public init() {}
}

/// How the board's own programs hand mail over (`postern sendmail`, issue 9).
public struct LocalConfig: Sendable {
    /// The submission socket: every local user may connect (mode 0666), and the
    /// daemon learns who did from the kernel (SO_PEERCRED), not from the client.
    /// Under systemd, postern.socket passes it; else the daemon creates it.
    public var socket = "/run/postern/submit"
    /// Where `sendmail` stores a message durably when the daemon does not answer,
    /// and the daemon takes it in, in order. Mode 3733: anyone may add a file,
    /// no one may list the directory, nor remove or read another's file.
    /// nil: `maildrop` inside the spool directory.
    public var dropDir: String? = nil

    public init() {}

    /// The drop directory for a spool in `spoolDir`.
    public func dropDirectory(spoolDir: String) -> String {
        if let d = dropDir { return d }
        return spoolDir.hasSuffix("/") ? spoolDir + "maildrop" : spoolDir + "/maildrop"
    }
}
