import CLibc
import PosternCore

/// The byte stream to one upstream: a non-blocking TCP connection through the
/// `Kernel`, and TLS over it once started (implicit TLS at once, or after
/// STARTTLS). `Delivery` reads and writes through it without caring which, and
/// asks it what to poll for.
final class UpstreamTransport {
    enum Phase: Equatable {
        case closed
        /// connect(2) in progress: wait for writability, then `connectResult`.
        case connecting
        /// The TLS handshake is under way.
        case handshaking
        case open
    }

    let kernel: any Kernel
    private(set) var fd: Int32 = -1
    private(set) var phase = Phase.closed
    private(set) var tls: TLSChannel? = nil

    init(kernel: any Kernel) {
        self.kernel = kernel
    }

    var isTLS: Bool { tls != nil && phase == .open }

    /// Starts a non-blocking connect.
    func connect(_ endpoint: cl_ip_endpoint) -> Result<Void, Errno> {
        close()
        switch kernel.connect(endpoint) {
        case .failure(let e): return .failure(e)
        case .success(let (s, inProgress)):
            fd = s
            phase = inProgress ? .connecting : .open
            return .success(())
        }
    }

    /// After writability in `.connecting`: 0 when connected, else the errno.
    func finishConnect() -> Int32 {
        let err = kernel.connectResult(fd)
        if err == 0 { phase = .open }
        return err
    }

    /// Begins the TLS handshake on the open connection.
    func startTLS(_ upstream: UpstreamConfig) -> Result<Void, Problem> {
        switch TLSChannel.open(fd: fd, upstream: upstream) {
        case .failure(let text): return .failure(text)
        case .success(let channel):
            tls = channel
            phase = .handshaking
            return .success(())
        }
    }

    /// Drives the handshake; `.done` makes the transport open (encrypted).
    func handshake() -> TLSChannel.Step {
        guard let t = tls, phase == .handshaking else { return .failed(CertificateProblem.Report(handshakeText: "no TLS handshake under way")) }
        let step = t.handshake()
        if step == .done { phase = .open }
        return step
    }

    func read(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Problem> {
        if let t = tls { return t.read(buffer) }
        return kernel.read(fd, buffer).mapError { Problem($0.text) }
    }

    func send(_ bytes: UnsafeRawBufferPointer) -> Result<Sys.IO, Problem> {
        if let t = tls { return t.write(bytes) }
        return kernel.send(fd, bytes).mapError { Problem($0.text) }
    }

    /// What to poll for: `outputPending` when there are bytes to send.
    func pollEvents(outputPending: Bool) -> Int16 {
        switch phase {
        case .closed: return 0
        case .connecting: return Int16(POLLOUT)
        case .handshaking: return tls?.wants ?? Int16(POLLIN)
        case .open:
            var e = Int16(POLLIN)
            if outputPending || tls?.wants == Int16(POLLOUT) { e |= Int16(POLLOUT) }
            return e
        }
    }

    func close() {
        tls?.close()
        tls = nil
        if fd >= 0 { kernel.close(fd) }
        fd = -1
        phase = .closed
    }
}
