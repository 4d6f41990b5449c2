/// The journal's MESSAGE_ID of each kind of entry Postern writes: fixed 128-bit
/// ids (made once with `systemd-id128 new`), explained in Deploy/postern.catalog,
/// so `journalctl MESSAGE_ID=…` or `journalctl -x` finds and explains them.
/// Never change an id once released; add new ones for new kinds.
public enum MessageIDs {
    public static let received = "d68fb2e7462b445caac8f9d229f848cc"
    public static let delivered = "34332fe3e0bd46d99914157086bc56af"
    public static let deferred = "8db8ccf84d844976a8277571d3f2d945"
    public static let failed = "afde9db0f221495f9e2019f642baf56e"
    public static let expired = "80ef528ba4164b758ea50319bfddd6c0"
    public static let rejected = "74b28c45e8fd419d96a11b59c0c7f77d"
    /// The daemon is ready: spool recovered, listeners open.
    public static let started = "4d1dc29184894904a7e2702e600ef20e"
    public static let stopped = "fac7ec3a713d4347840ab066d686e8a5"
    /// SIGHUP: the configuration was reloaded, or the new one refused.
    public static let reloaded = "aac3c891669e44238fd5888219e0711b"
    /// The spool could not be written or synced, or holds damaged records.
    public static let spoolError = "2865e937e2734e0c9bd0f58c90746e0d"
    /// The loop is not healthy: watchdog pings stopped or a trigger was sent.
    public static let watchdog = "0f40504ce32e44fd9fe8cee711631fd3"
    /// The recovery scan at start-up finished.
    public static let recovered = "0e3f716f218c41d6abd907510336b42d"
}

extension EventKind {
    public var messageID: String {
        switch self {
        case .received: return MessageIDs.received
        case .delivered: return MessageIDs.delivered
        case .deferred: return MessageIDs.deferred
        case .failed: return MessageIDs.failed
        case .expired: return MessageIDs.expired
        case .rejected: return MessageIDs.rejected
        }
    }
}
