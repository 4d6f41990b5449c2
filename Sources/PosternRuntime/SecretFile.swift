import CLibc
import PosternCore

/// `password_file`: a secret in a file only its owner may read (issue 8 item 3).
/// The first line is the secret. It is read when a connection needs it and the
/// caller wipes it after use, so it does not sit in the daemon's memory (or a
/// core dump) between connections.
enum SecretFile {
    /// Longer than any password or token an upstream takes; a bigger file is
    /// not a password file.
    static let limit = 16 * 1024

    /// What is wrong with the file, or nil: missing, not a regular file, or
    /// readable by group or others.
    static func problem(_ path: String) -> String? {
        switch open(path) {
        case .success(let fd):
            Sys.close(fd)
            return nil
        case .failure(let problem):
            return problem.text
        }
    }

    /// The secret (first line, without its line ending). Wipe it after use.
    static func read(_ path: String) -> Result<[UInt8], Problem> {
        let fd: Int32
        switch open(path) {
        case .success(let f): fd = f
        case .failure(let text): return .failure(text)
        }
        defer { Sys.close(fd) }
        var buffer = [UInt8](repeating: 0, count: limit + 1)
        defer { SASL.wipe(&buffer) }
        var total = 0
        while total <= limit {
            let r = buffer.withUnsafeMutableBytes { Sys.read(fd, UnsafeMutableRawBufferPointer(rebasing: $0[total...])) }
            switch r {
            case .success(.done(let n)): total += n
            case .success(.eof), .success(.wouldBlock):
                let secret = SASL.firstLine(buffer[0..<total])
                if secret.isEmpty { return .failure("password_file \(path) is empty") }
                return .success(secret)
            case .failure(let e): return .failure("cannot read password_file \(path): \(e.text)")
            }
        }
        return .failure("password_file \(path) is larger than \(limit / 1024) KiB; it should hold one line")
    }

    /// Opens a file of secrets for reading: a regular file that others (and,
    /// unless `groupMayRead`, the group) cannot read. `setting` names it in
    /// the messages. Also for `auth_users` (`AuthUsersFile`), whose hashes
    /// root:postern 0640 lets the daemon's group read.
    static func open(_ path: String, setting: String = "password_file", groupMayRead: Bool = false) -> Result<Int32, Problem> {
        let fd: Int32
        // O_NONBLOCK: a FIFO put in its place must not stop the loop in open(2);
        // it is refused below as not a regular file.
        switch Sys.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) {
        case .success(let f): fd = f
        case .failure(let e): return .failure("cannot open \(setting) \(path): \(e.text)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = Errno.current("fstat")
            Sys.close(fd)
            return .failure("cannot stat \(setting) \(path): \(e.text)")
        }
        if st.st_mode & UInt32(S_IFMT) != UInt32(S_IFREG) {
            Sys.close(fd)
            return .failure("\(setting) \(path) is not a regular file")
        }
        if st.st_mode & (groupMayRead ? 0o007 : 0o077) != 0 {
            Sys.close(fd)
            let mode = String(st.st_mode & 0o777, radix: 8)
            return .failure(groupMayRead
                ? "\(setting) \(path) can be read by others (mode 0\(mode)); it holds password hashes: run chmod o-rwx \(path)"
                : "\(setting) \(path) is readable by group or others (mode 0\(mode)); run: chmod 600 \(path)")
        }
        return .success(fd)
    }
}
