import CLibc
import PosternCore

/// A connection taken from a listening TCP socket.
public struct AcceptedConnection: Equatable {
    public var fd: Int32
    public var peer: IPAddress

    public init(fd: Int32, peer: IPAddress) {
        self.fd = fd
        self.peer = peer
    }
}

/// The socket calls of the poll loop, behind one small protocol, as the spool's
/// file operations are behind `SpoolStorage`: the daemon uses `PosixKernel`; unit
/// tests script partial reads, short writes, EAGAIN and resets and drive the
/// receiver connections, the control server and the receiver pool below the
/// socket (STYLE.md "a seam under the syscalls").
///
/// Class-bound so `any Kernel` works in Embedded Swift.
public protocol Kernel: AnyObject {
    /// read(2) of a non-blocking socket: `.done(n)`, `.eof` or `.wouldBlock`.
    func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Errno>
    /// send(2) with MSG_NOSIGNAL; may take fewer bytes than given.
    func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Result<Sys.IO, Errno>
    /// accept4(2) of a TCP connection, non-blocking; nil when none is waiting.
    func accept(_ listenFD: Int32) -> Result<AcceptedConnection?, Errno>
    /// accept4(2) of a local (AF_UNIX) connection; nil when none is waiting.
    func acceptLocal(_ listenFD: Int32) -> Result<Int32?, Errno>
    /// A non-blocking connect(2) to a TCP endpoint, with TCP_NODELAY: the
    /// descriptor, and whether the connection is still in progress (poll for
    /// writability, then ask `connectResult`).
    func connect(_ endpoint: cl_ip_endpoint) -> Result<(fd: Int32, inProgress: Bool), Errno>
    /// The outcome of a non-blocking connect (getsockopt SO_ERROR): 0 or an errno.
    func connectResult(_ fd: Int32) -> Int32
    /// close(2).
    func close(_ fd: Int32)
    /// poll(2); an interrupted poll reports no descriptor ready.
    func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Result<Int, Errno>
    /// getsockopt(SO_PEERCRED) of an accepted local connection: the process
    /// that connected, as the kernel recorded it; nil when it cannot say.
    func peerCredentials(_ fd: Int32) -> cl_peer_cred?
}

extension Kernel {
    public func peerCredentials(_ fd: Int32) -> cl_peer_cred? {
        var cred = cl_peer_cred()
        return cl_peer_credentials(fd, &cred) == 0 ? cred : nil
    }
}

/// The real kernel, through `Sys` and the C helpers.
public final class PosixKernel: Kernel {
    public init() {}

    public func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Result<Sys.IO, Errno> {
        Sys.read(fd, buffer)
    }

    public func send(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Result<Sys.IO, Errno> {
        Sys.send(fd, buffer)
    }

    public func accept(_ listenFD: Int32) -> Result<AcceptedConnection?, Errno> {
        var peer = cl_ip_endpoint()
        let fd = cl_accept(listenFD, &peer)
        if fd < 0 {
            let e = Errno.current("accept")
            // ECONNABORTED: the client gave up while queued; nothing to take.
            return e.isWouldBlock || e.code == ECONNABORTED ? .success(nil) : .failure(e)
        }
        let bytes = withUnsafeBytes(of: peer.bytes) { Array($0.prefix(peer.family == 6 ? 16 : 4)) }
        // A TCP listener only yields IPv4 and IPv6 peers; anything else is taken as
        // 0.0.0.0, which no allow-list and no loopback reservation matches.
        return .success(AcceptedConnection(fd: fd, peer: IPAddress(bytes: bytes) ?? IPAddress.unspecifiedV4))
    }

    public func acceptLocal(_ listenFD: Int32) -> Result<Int32?, Errno> {
        let fd = cl_accept_plain(listenFD)
        if fd >= 0 { return .success(fd) }
        let e = Errno.current("accept")
        return e.isWouldBlock || e.code == ECONNABORTED ? .success(nil) : .failure(e)
    }

    public func connect(_ endpoint: cl_ip_endpoint) -> Result<(fd: Int32, inProgress: Bool), Errno> {
        var ep = endpoint
        var inProgress: Int32 = 0
        let fd = cl_connect_tcp(&ep, &inProgress)
        if fd < 0 { return .failure(Errno.current("connect")) }
        // The final dot goes out with the last text, not after a delayed ACK.
        _ = cl_set_nodelay(fd)
        return .success((fd, inProgress != 0))
    }

    public func connectResult(_ fd: Int32) -> Int32 { cl_socket_error(fd) }

    public func close(_ fd: Int32) { Sys.close(fd) }

    public func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Result<Int, Errno> {
        Sys.poll(&fds, timeoutMilliseconds: timeoutMilliseconds)
    }
}
