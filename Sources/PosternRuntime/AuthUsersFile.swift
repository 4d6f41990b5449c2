import CLibc
import PosternCore

/// Reads `[receiver] auth_users` for the daemon (at start, at each reload)
/// and for `check-config`. The file holds password hashes: one anybody on
/// the board can read invites an offline guess at every password, so, as
/// sshd refuses a key file others can read, it is refused when others may
/// read it (group read is allowed: root:postern 0640 is the usual setup).
public enum AuthUsersFile {
    public static func load(_ path: String) -> Result<AuthUsers, Problem> {
        var st = stat()
        guard stat(path, &st) == 0 else {
            return .failure("cannot read auth_users \(path): \(Errno.current("stat").text)")
        }
        if st.st_mode & UInt32(S_IFMT) != UInt32(S_IFREG) {
            return .failure("auth_users \(path) is not a regular file")
        }
        if st.st_mode & 0o007 != 0 {
            let mode = String(st.st_mode & 0o777, radix: 8)
            return .failure("auth_users \(path) can be read by others (mode 0\(mode)); it holds password hashes: run chmod o-rwx \(path)")
        }
        let bytes: [UInt8]
        switch Sys.readFile(path, limit: AuthUsers.maxFileSize + 1) {
        case .success(let b): bytes = b
        case .failure(let e): return .failure("cannot read auth_users \(path): \(e.text)")
        }
        switch AuthUsers.parse(bytes) {
        case .success(let users): return .success(users)
        case .failure(let e): return .failure("auth_users \(path): \(e)")
        }
    }
}
