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

    private let context: OpaquePointer
    private let tls: OpaquePointer
    /// POLLIN or POLLOUT: what the last call that could not finish waits for.
    private(set) var wants = Int16(POLLIN)
    private var closed = false

    private init(context: OpaquePointer, tls: OpaquePointer) {
        self.context = context
        self.tls = tls
    }

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
        cl_tls_context_free(context)
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
