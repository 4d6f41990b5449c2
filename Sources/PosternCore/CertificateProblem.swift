/// Turns a failed TLS handshake into words a person can act on (issue 8 item 2):
/// what was wrong with which certificate, and what to change. Pure: the runtime
/// passes what OpenSSL reported and what the clock says.
public struct CertificateProblem: Equatable, Sendable {
    /// OpenSSL's X509_V_ERR_* codes this looks at (stable across OpenSSL 1.1 and 3).
    public enum Code {
        public static let unableToGetIssuer = 2
        public static let notYetValid = 9
        public static let expired = 10
        public static let selfSigned = 18
        public static let selfSignedInChain = 19
        public static let unableToGetIssuerLocally = 20
        public static let unableToVerifyLeaf = 21
        public static let hostnameMismatch = 62
        public static let ipAddressMismatch = 64
    }

    /// What the handshake reported.
    public struct Report: Equatable, Sendable {
        /// X509_V_ERR_* of the first failed check, 0 when no check failed.
        public var verifyError: Int
        /// 0 for the upstream's own certificate, more for the CAs above it.
        public var depth: Int
        /// OpenSSL's text for `verifyError`.
        public var verifyText: String
        public var pinMismatch: Bool
        /// What OpenSSL or the kernel said about the handshake itself.
        public var handshakeText: String
        /// The upstream's certificate, when it was received.
        public var subject: String?
        public var issuer: String?
        public var notBefore: Int64?
        public var notAfter: Int64?
        /// sha256:… of its public key, as `fingerprint =` takes it.
        public var fingerprint: String?

        public init(verifyError: Int = 0, depth: Int = 0, verifyText: String = "", pinMismatch: Bool = false,
                    handshakeText: String = "", subject: String? = nil, issuer: String? = nil,
                    notBefore: Int64? = nil, notAfter: Int64? = nil, fingerprint: String? = nil) {
            self.verifyError = verifyError
            self.depth = depth
            self.verifyText = verifyText
            self.pinMismatch = pinMismatch
            self.handshakeText = handshakeText
            self.subject = subject
            self.issuer = issuer
            self.notBefore = notBefore
            self.notAfter = notAfter
            self.fingerprint = fingerprint
        }
    }

    /// The sentence for the log and `postern status`.
    public var text: String
    /// The certificate is "not yet valid" only because this board's clock is not
    /// set (no real-time clock: it boots in 1970): try again as soon as the
    /// kernel says the clock is synchronised, not after the backoff.
    public var waitForClock: Bool

    /// `host` is the upstream's name as configured; `wall` the current wall
    /// clock (seconds) and `synchronised` the kernel's view of it.
    public init(_ r: Report, host: String, wall: Int64, synchronised: Bool) {
        waitForClock = false
        let which = r.depth == 0 ? "the certificate" : "a CA certificate in the upstream's chain"
        let subject = r.subject.map { " (\($0))" } ?? ""
        if r.pinMismatch {
            text = "fingerprint mismatch: the upstream's public key is \(r.fingerprint ?? "unknown"), not the pinned fingerprint\(subject)"
            return
        }
        switch r.verifyError {
        case 0:
            text = r.handshakeText.isEmpty ? "TLS handshake failed" : r.handshakeText
        case Code.expired:
            text = "\(which) expired on \(Self.date(r.depth == 0 ? r.notAfter : nil))\(r.depth == 0 ? subject : "")"
        case Code.notYetValid:
            let from = r.depth == 0 ? " until \(Self.date(r.notBefore))" : ""
            if !synchronised {
                text = "\(which) is not valid yet\(from), and this system's clock is not synchronised (it reads \(Self.date(wall))): waiting for the clock to be set"
                waitForClock = true
            } else {
                text = "\(which) is not valid yet\(from)\(r.depth == 0 ? subject : "")"
            }
        case Code.selfSigned:
            text = "the certificate is self-signed\(subject): trust it with ca_file, or pin its key with fingerprint = \(r.fingerprint ?? "sha256:…") (postern probe prints it)"
        case Code.selfSignedInChain:
            text = "the upstream's chain ends in a self-signed CA that is not trusted\(r.issuer.map { " (\($0))" } ?? ""): add it with ca_file"
        case Code.unableToGetIssuerLocally, Code.unableToGetIssuer:
            text = "unknown issuer: \(r.issuer ?? "the issuer") is not among the trusted CAs (check ca_file, or the upstream sends an incomplete chain)"
        case Code.unableToVerifyLeaf:
            text = "unknown issuer: the upstream's certificate cannot be verified by the trusted CAs (the upstream may send an incomplete chain)"
        case Code.hostnameMismatch:
            text = "wrong host name: the certificate is not for \(host)\(subject)"
        case Code.ipAddressMismatch:
            text = "wrong IP address: the certificate is not for \(host)\(subject)"
        default:
            text = "certificate check failed: \(r.verifyText) (X509 error \(r.verifyError) at depth \(r.depth))"
        }
    }

    /// "2026-12-01 18:30 UTC", or "an unknown date".
    public static func date(_ seconds: Int64?) -> String {
        guard let s = seconds else { return "an unknown date" }
        var days = s / 86400
        var rem = s % 86400
        if rem < 0 { rem += 86400; days -= 1 }
        let (y, m, d) = TraceHeader.civil(fromDays: days)
        let minute = Int(rem / 60)
        return "\(y)-\(TraceHeader.two(m))-\(TraceHeader.two(d)) \(TraceHeader.two(minute / 60)):\(TraceHeader.two(minute % 60)) UTC"
    }

    /// "sha256:" and lowercase hex: the form `fingerprint =` takes.
    public static func fingerprintText(_ digest: [UInt8]) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out = Array("sha256:".utf8)
        for b in digest {
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 15)])
        }
        return ASCII.string(out)
    }
}
