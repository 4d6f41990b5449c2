import CLibc
import PosternCore

/// What can be checked about the upstreams before any connection: files that
/// must exist with the right modes, and settings that work but weaken security.
/// `postern check-config` prints both and fails on problems; the daemon logs
/// them at every start and reload (issue 8 items 2 and 3).
public enum UpstreamChecks {
    /// Files the upstreams need that cannot be used: each names the file and the
    /// [upstream] it belongs to. `loadingTLS` also loads ca_file and the client
    /// certificate as a connection would; the daemon leaves that to its first
    /// connection, so an idle daemon has nothing of OpenSSL initialised.
    public static func problems(_ c: Config, loadingTLS: Bool = true) -> [String] {
        var out: [String] = []
        for u in c.upstreams {
            let at = "[upstream] \(u.name) (line \(u.line))"
            if case .file(let path)? = u.secret, let p = SecretFile.problem(path) {
                out.append("\(at): \(p)")
            }
            if loadingTLS, u.tls != .none, u.caFile != nil || u.clientCert != nil {
                // Loads the CA file and the client certificate as a connection would.
                var error = [CChar](repeating: 0, count: 300)
                let ctx = error.withUnsafeMutableBufferPointer { e in
                    cl_tls_client_context(u.caFile, nil, u.clientCert, u.clientKey, e.baseAddress, e.count)
                }
                if let ctx { cl_tls_context_free(ctx) } else { out.append("\(at): \(TLSChannel.text(error))") }
            }
        }
        return out
    }

    /// Settings that are allowed but leave mail or passwords exposed.
    public static func warnings(_ c: Config) -> [String] {
        var out: [String] = []
        for u in c.upstreams {
            let at = "[upstream] \(u.name) (line \(u.line))"
            if u.tls != .none && !u.verify {
                out.append("\(at): verify = no: the upstream's certificate is not checked, so anyone on the path can pose as it and read the mail")
            }
            if u.tls == .none && u.auth != .none {
                out.append("\(at): tls = none with AUTH: the password crosses the network in clear")
            }
        }
        return out
    }
}
