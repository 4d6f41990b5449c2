/// Where the failure notice (`DeliveryReport`) about a given-up message goes.
/// A pure decision: the delivery code asks it once per failed message and
/// logs the answer.
///
/// - Never a notice about a notice: "SMTP servers MUST NOT send notification
///   messages about problems transporting notification messages" (RFC 5321
///   §3.6.3), or two systems that fail each other's mail loop forever. The caller says whether the failed
///   message is one. Postern's own notices go out with the null reverse-path
///   (RFC 5321 §3.6.3, §6.1) and must always be flagged.
/// - The sender gets it when it is a real remote address: it has a domain,
///   and the domain is a name the smarthost can route to (not this board's
///   host name, not `localhost`, not a single label such as `nas`, not an
///   address literal such as `[192.168.1.5]`). A notice to anything else
///   would itself fail at the smarthost and be lost.
/// - Otherwise the configured `[notify] postmaster` gets it: an empty sender
///   (a device that sent with `MAIL FROM:<>` but whose message is not flagged
///   as a notice), `<postmaster>` without a domain, a local or unroutable
///   domain (mail from cron, smartd or a printer on the LAN). RFC 5321 §6.1
///   forbids a notice *to* the null reverse-path, and §4.5.5 describes
///   exactly this: hosts "set up to forward such failed notification
///   messages to someone who is able to fix problems with the mail system,
///   e.g., via the postmaster alias" (Postfix's double bounce). A caller that
///   wants the strict reading passes `failedMessageIsNotice: sender.isNull`.
///   Without a postmaster the failure is only logged.
public struct NoticePolicy: Equatable, Sendable {
    public enum Destination: Equatable, Sendable {
        /// To the original envelope sender.
        case sender(Mailbox)
        /// To `[notify] postmaster`.
        case postmaster(Mailbox)
        /// No notice; the failure is logged (with the reason).
        case logOnly(Reason)
    }

    public enum Reason: Equatable, Sendable {
        /// The failed message is itself a notice.
        case failedMessageIsNotice
        /// The sender is not a remote address and no postmaster is configured.
        case noPostmaster
    }

    public var postmaster: Mailbox?
    /// Lower-cased domains that are this board: its host name and `localhost`.
    public var localDomains: [[UInt8]]

    /// - Parameters:
    ///   - postmaster: `[notify] postmaster`, nil when not set.
    ///   - hostname: the board's host name (`[receiver] hostname`).
    public init(postmaster: Mailbox?, hostname: String) {
        self.postmaster = postmaster
        var local = [ASCII.lowercased("localhost".utf8)]
        let h = ASCII.lowercased(hostname.utf8)
        if !h.isEmpty && h != local[0] { local.append(h) }
        self.localDomains = local
    }

    /// The destination of the notice about a failed message sent by `sender`.
    public func destination(sender: Mailbox, failedMessageIsNotice: Bool) -> Destination {
        if failedMessageIsNotice { return .logOnly(.failedMessageIsNotice) }
        if isRemote(sender) { return .sender(sender) }
        if let p = postmaster { return .postmaster(p) }
        return .logOnly(.noPostmaster)
    }

    /// A mailbox with a domain name of at least two labels that is not one of
    /// `localDomains` (compared without case, RFC 5321 §2.4).
    public func isRemote(_ m: Mailbox) -> Bool {
        guard let d = m.domain.map({ ASCII.lowercased($0) }), !d.isEmpty else { return false }
        if d.first == 91 /* [ an address literal */ { return false }
        guard d.contains(ASCII.dot) else { return false }
        return !localDomains.contains(d)
    }
}
