import CLibc
import PosternCore

/// One TLS connection toward an upstream: OpenSSL (through cl_tls.h) on the
/// connection's own non-blocking socket, driven by the poll loop. A call that
/// cannot finish says which readiness it waits for (`wants`), and the loop polls
/// for exactly that (SSL_get_error(3): WANT_READ and WANT_WRITE may come from
/// any call, a read can need a write during the handshake or a key update).
///
/// The context (trust store, client certificate) is made per connection and
/// freed with it: a daemon that is not sending holds nothing of OpenSSL's but
/// its code, and a renewed ca_file or client certificate counts at the next
/// connection without a reload.
final class TLSChannel {
    enum Step: Equatable {
        case done
        case pending
        case failed(CertificateProblem.Report)
    }

    /// The client context this channel made and frees; nil for a server
    /// channel, whose context the daemon shares among its clients.
    private let context: OpaquePointer?
    /// Keeps a server channel's context object alive as long as the channel.
    private let server: TLSServerContext?
    private let tls: OpaquePointer
    /// POLLIN or POLLOUT: what the last call that could not finish waits for.
    private(set) var wants = Int16(POLLIN)
    private var closed = false

    private init(context: OpaquePointer?, server: TLSServerContext? = nil, tls: OpaquePointer) {
        self.context = context
        self.server = server
        self.tls = tls
    }

    /// A server connection on the accepted socket `fd` (STARTTLS or implicit
    /// TLS from a client), or nil when OpenSSL cannot allocate one.
    static func accept(fd: Int32, context: TLSServerContext) -> TLSChannel? {
        guard let tls = cl_tls_server(context.pointer, fd) else { return nil }
        return TLSChannel(context: nil, server: context, tls: tls)
    }

    /// The negotiated protocol and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384").
    var negotiated: String { String(cString: cl_tls_protocol(tls)) + " " + String(cString: cl_tls_cipher(tls)) }

    /// OpenSSL holds decrypted bytes not yet read: poll would not announce them.
    var hasPending: Bool { cl_tls_pending(tls) != 0 }

    deinit { close() }

    /// A client connection on the connected socket `fd` to `upstream`, verified
    /// as its settings say.
    static func open(fd: Int32, upstream u: UpstreamConfig) -> Result<TLSChannel, Problem> {
        var error = [CChar](repeating: 0, count: 300)
        let caDir = u.caFile == nil ? TLSDefaults.systemCertificateDirectory : nil
        let made = error.withUnsafeMutableBufferPointer { e in
            cl_tls_client_context(u.caFile, caDir, u.clientCert, u.clientKey, e.baseAddress, e.count)
        }
        guard let context = made else { return .failure(Problem(Self.text(error))) }
        let isIP = IPAddress(u.host) != nil
        let pin = u.fingerprint.flatMap { $0.count == 32 ? $0 : nil }
        let made2: OpaquePointer? = pin.map { p in
            p.withUnsafeBufferPointer { cl_tls_client(context, fd, u.host, isIP ? 1 : 0, u.verify ? 1 : 0, $0.baseAddress) }
        } ?? cl_tls_client(context, fd, u.host, isIP ? 1 : 0, u.verify ? 1 : 0, nil)
        guard let tls = made2 else {
            cl_tls_context_free(context)
            return .failure("cannot start TLS (out of memory)")
        }
        return .success(TLSChannel(context: context, tls: tls))
    }

    func handshake() -> Step {
        switch cl_tls_handshake(tls) {
        case Int32(CL_TLS_DONE): return .done
        case Int32(CL_TLS_WANT_READ): wants = Int16(POLLIN); return .pending
        case Int32(CL_TLS_WANT_WRITE): wants = Int16(POLLOUT); return .pending
        default: return .failed(report())
        }
    }

    /// Decrypted bytes into `buffer`, as `Sys.read` reports them.
    func read(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Problem> {
        guard buffer.count > 0 else { return .success(.wouldBlock) }
        var done = 0
        switch cl_tls_read(tls, buffer.baseAddress, buffer.count, &done) {
        case Int32(CL_TLS_DONE): wants = Int16(POLLIN); return .success(.done(done))
        case Int32(CL_TLS_WANT_READ): wants = Int16(POLLIN); return .success(.wouldBlock)
        case Int32(CL_TLS_WANT_WRITE): wants = Int16(POLLOUT); return .success(.wouldBlock)
        case Int32(CL_TLS_CLOSED): return .success(.eof)
        default: return .failure(Problem(failureText))
        }
    }

    /// Encrypts and sends up to `bytes.count` bytes, as `Sys.send` reports them.
    func write(_ bytes: UnsafeRawBufferPointer) -> Result<Sys.IO, Problem> {
        guard bytes.count > 0 else { return .success(.done(0)) }
        var done = 0
        switch cl_tls_write(tls, bytes.baseAddress, bytes.count, &done) {
        case Int32(CL_TLS_DONE): wants = Int16(POLLIN); return .success(.done(done))
        case Int32(CL_TLS_WANT_READ): wants = Int16(POLLIN); return .success(.wouldBlock)
        case Int32(CL_TLS_WANT_WRITE): wants = Int16(POLLOUT); return .success(.wouldBlock)
        default: return .failure(Problem(failureText))
        }
    }

    var failureText: String { String(cString: cl_tls_failure(tls)) }

    /// The upstream's certificate and the negotiated protocol, if any.
    func peer() -> cl_tls_peer? {
        var p = cl_tls_peer()
        return cl_tls_peer_info(tls, &p) == 0 ? p : nil
    }

    /// Everything known about a failed handshake, for `CertificateProblem`.
    func report() -> CertificateProblem.Report {
        var depth: Int32 = 0
        let code = cl_tls_verify_error(tls, &depth)
        var r = CertificateProblem.Report(
            verifyError: Int(truncatingIfNeeded: code), depth: Int(depth),
            verifyText: String(cString: cl_tls_verify_error_text(code)),
            pinMismatch: cl_tls_pin_mismatch(tls) != 0, handshakeText: failureText)
        if let p = peer() {
            r.subject = Self.field(p.subject)
            r.issuer = Self.field(p.issuer)
            r.notBefore = p.not_before
            r.notAfter = p.not_after
            r.fingerprint = CertificateProblem.fingerprintText(Self.bytes(p.spki_sha256))
        }
        return r
    }

    /// Sends close_notify and frees the connection; the socket is the caller's.
    func close() {
        guard !closed else { return }
        closed = true
        cl_tls_shutdown(tls)
        cl_tls_free(tls)
        if let c = context { cl_tls_context_free(c) }
    }

    static func text(_ chars: [CChar]) -> String {
        chars.withUnsafeBufferPointer { b in b.baseAddress.map { String(cString: $0) } ?? "" }
    }

    /// A fixed C char array of the peer struct as a String.
    static func field<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { raw in
            let bytes = raw.prefix(while: { $0 != 0 })
            return ASCII.printable(bytes, limit: raw.count)
        }
    }

    static func bytes<T>(_ tuple: T) -> [UInt8] { withUnsafeBytes(of: tuple) { Array($0) } }
}

/// The server side's certificate and settings (`[receiver] tls_cert`, `tls_key`,
/// `tls_min_version`), shared by every client connection. Made at start and
/// again at each reload, so a renewed certificate is served from the next
/// handshake; connections in progress keep the one they started with (OpenSSL
/// counts its references), so a reload drops none of them.
public final class TLSServerContext {
    let pointer: OpaquePointer
    /// The certificate's subject and expiry, for the start-up log.
    public let subject: String
    public let notAfter: Int64

    private init(pointer: OpaquePointer) {
        self.pointer = pointer
        var info = cl_tls_cert_info()
        if cl_tls_context_cert_info(pointer, &info) == 0 {
            subject = TLSChannel.field(info.subject)
            notAfter = info.not_after
        } else {
            subject = ""
            notAfter = 0
        }
    }

    deinit { cl_tls_context_free(pointer) }

    public static func make(certFile: String, keyFile: String, minVersion: TLSVersion) -> Result<TLSServerContext, Problem> {
        var error = [CChar](repeating: 0, count: 300)
        let made = error.withUnsafeMutableBufferPointer { e in
            cl_tls_server_context(certFile, keyFile, Int32(minVersion.rawValue), e.baseAddress, e.count)
        }
        guard let pointer = made else { return .failure(Problem(TLSChannel.text(error))) }
        return .success(TLSServerContext(pointer: pointer))
    }
}
