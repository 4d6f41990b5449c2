import CLibc
import PosternCore

/// Reads `[receiver] auth_users` for the daemon (at start, at each reload)
/// and for `check-config`. The file holds password hashes: one anybody on
/// the board can read invites an offline guess at every password, so, as
/// sshd refuses a key file others can read, it is refused when others may
/// read it (group read is allowed: root:postern 0640 is the usual setup).
public enum AuthUsersFile {
    public static func load(_ path: String) -> Result<AuthUsers, Problem> {
        let fd: Int32
        switch SecretFile.open(path, setting: "auth_users", groupMayRead: true) {
        case .success(let f): fd = f
        case .failure(let p): return .failure(p)
        }
        defer { Sys.close(fd) }
        switch Sys.readAll(fd, limit: AuthUsers.maxFileSize + 1, name: path) {
        case .failure(let e): return .failure("cannot read auth_users \(path): \(e.text)")
        case .success(let bytes):
            switch AuthUsers.parse(bytes) {
            case .success(let users): return .success(users)
            case .failure(let e): return .failure("auth_users \(path): \(e)")
            }
        }
    }
}
