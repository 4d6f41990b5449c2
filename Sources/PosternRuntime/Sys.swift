import CLibc

/// Thin, errno-typed wrappers of the system calls the daemon uses. Each retries
/// EINTR and names the C function it wraps; EAGAIN comes back as `.wouldBlock`
/// where a non-blocking descriptor can produce it.
public enum Sys {
    public enum IO: Equatable {
        case done(Int)
        case wouldBlock
        /// End of file / the peer closed (read only).
        case eof
    }

    /// read(2).
    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) -> Result<IO, Errno> {
        while true {
            let n = CLibc.read(fd, buf.baseAddress, buf.count)
            if n > 0 { return .success(.done(n)) }
            if n == 0 { return .success(.eof) }
            let e = cl_errno()
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .success(.wouldBlock) }
            return .failure(Errno(e, "read"))
        }
    }

    /// send(2) with MSG_NOSIGNAL, so a closed peer gives EPIPE instead of SIGPIPE.
    public static func send(_ fd: Int32, _ buf: UnsafeRawBufferPointer) -> Result<IO, Errno> {
        let n = cl_send(fd, buf.baseAddress, buf.count)
        if n >= 0 { return .success(.done(n)) }
        let e = cl_errno()
        if e == EAGAIN || e == EWOULDBLOCK { return .success(.wouldBlock) }
        return .failure(Errno(e, "send"))
    }

    /// pread(2), once (retried on EINTR): up to `buf.count` bytes, fewer when
    /// the file ends first, 0 at its end. Not looped: a reader that got what it
    /// needs asks no more (`SegmentCursor.fill`), which saves the read that
    /// would only find the end of the file, once per message sent (issue 11).
    /// The position is an `off_t` (64 bits on every board, with
    /// _FILE_OFFSET_BITS=64), never summed in a 32-bit `Int`.
    public static func pread(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer, at offset: Int) -> Result<Int, Errno> {
        guard let base = buf.baseAddress, buf.count > 0 else { return .success(0) }
        while true {
            let n = CLibc.pread(fd, base, buf.count, off_t(offset))
            if n >= 0 { return .success(min(n, buf.count)) }
            let e = cl_errno()
            if e == EINTR { continue }
            return .failure(Errno(e, "pread"))
        }
    }

    /// pwrite(2), looping until everything is written.
    public static func pwrite(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int) -> Result<Void, Errno> {
        var done = 0
        while done < buf.count {
            let n = CLibc.pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
            if n > 0 { done += n; continue }
            let e = n == 0 ? ENOSPC : cl_errno()
            if e == EINTR { continue }
            return .failure(Errno(e, "pwrite"))
        }
        return .success(())
    }

    /// pwritev(2) of up to a few buffers at `offset`. Returns the bytes written,
    /// which a full disk can make fewer than asked for.
    public static func pwritev(_ fd: Int32, _ parts: [UnsafeRawBufferPointer], at offset: Int) -> Result<Int, Errno> {
        var iov = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        while true {
            let n = iov.withUnsafeMutableBufferPointer { CLibc.pwritev(fd, $0.baseAddress, Int32($0.count), off_t(offset)) }
            if n >= 0 { return .success(n) }
            let e = cl_errno()
            if e == EINTR { continue }
            return .failure(Errno(e, "pwritev"))
        }
    }

    /// fdatasync(2).
    public static func fdatasync(_ fd: Int32) -> Result<Void, Errno> {
        while CLibc.fdatasync(fd) != 0 {
            let e = cl_errno()
            if e == EINTR { continue }
            return .failure(Errno(e, "fdatasync"))
        }
        return .success(())
    }

    /// ftruncate(2).
    public static func ftruncate(_ fd: Int32, _ length: Int) -> Result<Void, Errno> {
        while CLibc.ftruncate(fd, off_t(length)) != 0 {
            let e = cl_errno()
            if e == EINTR { continue }
            return .failure(Errno(e, "ftruncate"))
        }
        return .success(())
    }

    /// open(2).
    public static func open(_ path: String, _ flags: Int32, _ mode: UInt32 = 0o600) -> Result<Int32, Errno> {
        let fd = cl_open(path, flags | O_CLOEXEC, mode)
        return fd >= 0 ? .success(fd) : .failure(Errno.current("open \(path)"))
    }

    /// close(2). EINTR is not retried: on Linux the descriptor is gone either way.
    public static func close(_ fd: Int32) {
        _ = CLibc.close(fd)
    }

    /// unlink(2).
    public static func unlink(_ path: String) -> Result<Void, Errno> {
        CLibc.unlink(path) == 0 ? .success(()) : .failure(Errno.current("unlink \(path)"))
    }

    /// mkdir(2); an existing directory is fine.
    public static func mkdir(_ path: String, _ mode: UInt32) -> Result<Void, Errno> {
        if CLibc.mkdir(path, mode_t(mode)) == 0 { return .success(()) }
        let e = cl_errno()
        return e == EEXIST ? .success(()) : .failure(Errno(e, "mkdir \(path)"))
    }

    /// Every name in a directory (readdir(3)), without "." and "..".
    public static func listDirectory(_ path: String) -> Result<[String], Errno> {
        guard let dir = opendir(path) else { return .failure(Errno.current("opendir \(path)")) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = String(cString: cl_dirent_name(entry))
            if name != "." && name != ".." { names.append(name) }
        }
        return .success(names)
    }

    /// poll(2).
    public static func poll(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Result<Int, Errno> {
        let n = fds.withUnsafeMutableBufferPointer { CLibc.poll($0.baseAddress, nfds_t($0.count), timeoutMilliseconds) }
        if n >= 0 { return .success(Int(n)) }
        let e = cl_errno()
        return e == EINTR ? .success(0) : .failure(Errno(e, "poll"))
    }

    /// Writes a whole string to standard error (for log lines and messages).
    public static func writeStderr(_ text: String) { writeAll(2, text) }

    public static func writeStdout(_ text: String) { writeAll(1, text) }

    /// write(2) until all of `text` is out; gives up silently on an error, as
    /// there is nowhere left to report it.
    static func writeAll(_ fd: Int32, _ text: String) {
        var t = text
        t.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { writeAll(fd, $0) }
    }

    static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer) {
        guard let base = buf.baseAddress else { return }
        var done = 0
        while done < buf.count {
            let n = CLibc.write(fd, base + done, buf.count - done)
            if n <= 0 {
                if n < 0 && cl_errno() == EINTR { continue }
                break
            }
            done += n
        }
    }

    /// The host name (gethostname(2)).
    public static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, 255) == 0 else { return "localhost" }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Reads a whole (small) file, such as the configuration.
    public static func readFile(_ path: String, limit: Int = 1 << 20) -> Result<[UInt8], Errno> {
        let fd: Int32
        switch open(path, O_RDONLY) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { close(fd) }
        return readAll(fd, limit: limit, name: path)
    }

    /// Reads an open (small) file to its end, or to `limit` bytes.
    public static func readAll(_ fd: Int32, limit: Int, name path: String) -> Result<[UInt8], Errno> {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count < limit {
            let r = chunk.withUnsafeMutableBytes { Sys.read(fd, $0) }
            switch r {
            case .success(.done(let n)): out += chunk[0..<n]
            case .success(.eof), .success(.wouldBlock): return .success(out)
            case .failure(let e): return .failure(Errno(e.code, "read \(path)"))
            }
        }
        return .success(out)
    }
}
