import CLibc
import CSystemd

/// `postern abi` (issue 10 item 1), a diagnostics command not listed in the usage:
/// the C layouts this binary was compiled with, as the Swift compiler saw them —
/// the size, alignment and field offsets of every C struct the Swift code
/// creates or reads, the widths of the C types it passes, and the value of
/// every C constant it uses. One `name value` line per fact.
///
/// The board binaries are compiled by Swift for a bare-metal triple reading
/// glibc's headers, while the C helpers are compiled by Debian's cross gcc and
/// everything is linked against Debian's glibc: two compilers that could
/// disagree about a layout without either complaining. Tests/tools/abi_facts.c
/// prints the same names from the C side, compiled by the target's gcc, and
/// Tests/blackbox/test_abi.py requires both outputs to be identical on every
/// architecture. That C file is the list of names; this one follows it.
///
/// Field offsets are measured from a pointer into a local value
/// (`MemoryLayout.offset(of:)` would need key paths).
public enum ABIReport {
    public static func text() -> String {
        var r = ABIFacts()

        // --- C types (Swift's Int is pointer-wide: what size_t and ssize_t import as)
        r.type("Int", Int.self)
        r.type("int", CInt.self)
        r.type("long", CLong.self)
        r.type("long_long", CLongLong.self)
        r.type("pointer", UnsafeRawPointer.self)
        r.type("off_t", off_t.self)
        r.type("time_t", time_t.self)
        r.type("size_t", size_t.self)
        r.type("ssize_t", ssize_t.self)
        r.type("pid_t", pid_t.self)
        r.type("uid_t", uid_t.self)
        r.type("gid_t", gid_t.self)
        r.type("mode_t", mode_t.self)
        r.type("dev_t", dev_t.self)
        r.type("ino_t", ino_t.self)
        r.type("socklen_t", socklen_t.self)
        r.type("nfds_t", nfds_t.self)

        // --- libc structs Swift creates or reads
        r.layout("pollfd", pollfd()) { p in
            [abiField("fd", p, &p.pointee.fd), abiField("events", p, &p.pointee.events),
             abiField("revents", p, &p.pointee.revents)]
        }
        r.layout("stat", stat()) { p in
            [abiField("st_dev", p, &p.pointee.st_dev), abiField("st_ino", p, &p.pointee.st_ino),
             abiField("st_mode", p, &p.pointee.st_mode), abiField("st_size", p, &p.pointee.st_size)]
        }
        r.layout("statvfs", statvfs()) { p in
            [abiField("f_frsize", p, &p.pointee.f_frsize), abiField("f_bavail", p, &p.pointee.f_bavail)]
        }
        r.layout("iovec", iovec()) { p in
            [abiField("iov_base", p, &p.pointee.iov_base), abiField("iov_len", p, &p.pointee.iov_len)]
        }

        // --- the helpers' structs (Sources/CLibc/include), every field
        r.layout("cl_ip_endpoint", cl_ip_endpoint()) { p in
            [abiField("family", p, &p.pointee.family), abiField("port", p, &p.pointee.port),
             abiField("bytes", p, &p.pointee.bytes)]
        }
        r.layout("cl_peer_cred", cl_peer_cred()) { p in
            [abiField("pid", p, &p.pointee.pid), abiField("uid", p, &p.pointee.uid), abiField("gid", p, &p.pointee.gid)]
        }
        r.layout("cl_file_facts", cl_file_facts()) { p in
            [abiField("uid", p, &p.pointee.uid), abiField("mode", p, &p.pointee.mode), abiField("nlink", p, &p.pointee.nlink),
             abiField("size", p, &p.pointee.size), abiField("mtime", p, &p.pointee.mtime)]
        }
        r.layout("cl_child", cl_child()) { p in
            [abiField("pid", p, &p.pointee.pid), abiField("stdout_fd", p, &p.pointee.stdout_fd),
             abiField("stderr_fd", p, &p.pointee.stderr_fd)]
        }
        r.layout("cl_exit_status", cl_exit_status()) { p in
            [abiField("kind", p, &p.pointee.kind), abiField("value", p, &p.pointee.value)]
        }
        r.layout("cl_tls_peer", cl_tls_peer()) { p in
            [abiField("subject", p, &p.pointee.subject), abiField("issuer", p, &p.pointee.issuer),
             abiField("not_before", p, &p.pointee.not_before), abiField("not_after", p, &p.pointee.not_after),
             abiField("spki_sha256", p, &p.pointee.spki_sha256), abiField("protocol", p, &p.pointee.protocol),
             abiField("cipher", p, &p.pointee.cipher)]
        }
        r.layout("cl_tls_cert_info", cl_tls_cert_info()) { p in
            [abiField("subject", p, &p.pointee.subject), abiField("not_after", p, &p.pointee.not_after)]
        }

        // --- the helpers' constants
        r.constant("CL_TLS_DONE", CL_TLS_DONE)
        r.constant("CL_TLS_WANT_READ", CL_TLS_WANT_READ)
        r.constant("CL_TLS_WANT_WRITE", CL_TLS_WANT_WRITE)
        r.constant("CL_TLS_CLOSED", CL_TLS_CLOSED)
        r.constant("CL_TLS_FAILED", CL_TLS_FAILED)
        r.constant("CL_EXITED", CL_EXITED)
        r.constant("CL_SIGNALED", CL_SIGNALED)
        r.constant("CL_RESOLVE_MAGIC", CL_RESOLVE_MAGIC)
        r.constant("CL_RESOLVE_MAX", CL_RESOLVE_MAX)
        r.constant("CL_RESOLVE_TEXT_MAX", CL_RESOLVE_TEXT_MAX)
        r.constant("CL_SYNC_MAX_FDS", CL_SYNC_MAX_FDS)
        r.constant("CL_URING_ENTRIES", CL_URING_ENTRIES)
        r.constant("CL_CRYPT_MAX_HASH", CL_CRYPT_MAX_HASH)
        r.constant("CL_CRYPT_MAX_PASSWORD", CL_CRYPT_MAX_PASSWORD)
        r.constant("CL_CRYPT_OUTPUT_SIZE", CL_CRYPT_OUTPUT_SIZE)

        // --- libc and libsystemd constants the Swift code uses
        r.constant("EAGAIN", EAGAIN)
        r.constant("EWOULDBLOCK", EWOULDBLOCK)
        r.constant("EBADF", EBADF)
        r.constant("ECONNABORTED", ECONNABORTED)
        r.constant("EDQUOT", EDQUOT)
        r.constant("EEXIST", EEXIST)
        r.constant("EFBIG", EFBIG)
        r.constant("EINTR", EINTR)
        r.constant("EMSGSIZE", EMSGSIZE)
        r.constant("ENOENT", ENOENT)
        r.constant("ENOSPC", ENOSPC)
        r.constant("EIO", EIO)
        r.constant("EOVERFLOW", EOVERFLOW)
        r.constant("EPIPE", EPIPE)
        r.constant("EINVAL", EINVAL)
        r.constant("ENOSYS", ENOSYS)
        r.constant("EOPNOTSUPP", EOPNOTSUPP)
        r.constant("SIGHUP", SIGHUP)
        r.constant("SIGINT", SIGINT)
        r.constant("SIGKILL", SIGKILL)
        r.constant("SIGTERM", SIGTERM)
        r.constant("O_RDONLY", O_RDONLY)
        r.constant("O_WRONLY", O_WRONLY)
        r.constant("O_RDWR", O_RDWR)
        r.constant("O_CREAT", O_CREAT)
        r.constant("O_EXCL", O_EXCL)
        r.constant("O_NONBLOCK", O_NONBLOCK)
        r.constant("O_CLOEXEC", O_CLOEXEC)
        r.constant("F_OK", F_OK)
        r.constant("POLLIN", POLLIN)
        r.constant("POLLOUT", POLLOUT)
        r.constant("POLLERR", POLLERR)
        r.constant("POLLHUP", POLLHUP)
        r.constant("S_IFMT", S_IFMT)
        r.constant("S_IFREG", S_IFREG)
        r.constant("SHUT_WR", SHUT_WR)
        r.constant("SD_LISTEN_FDS_START", SD_LISTEN_FDS_START)
        return r.text
    }
}

/// The lines of the report, in the format of Tests/tools/abi_facts.c.
struct ABIFacts {
    var text = ""

    @inline(never)
    mutating func add(_ name: String, _ value: Int64) {
        text += name + " \(value)\n"
    }

    /// A C type as Swift imports it: `type.<label>.size` and `.align`.
    mutating func type<T>(_ label: String, _: T.Type) {
        record("type." + label, MemoryLayout<T>.size, MemoryLayout<T>.alignment, [])
    }

    /// A struct's size and alignment, then the offset and size of each field that
    /// `fields` measures in a zeroed local value.
    mutating func layout<S>(_ name: String, _ zero: S, _ fields: (UnsafeMutablePointer<S>) -> [ABIField]) {
        var value = zero
        let measured = withUnsafeMutablePointer(to: &value, fields)
        record("struct." + name, MemoryLayout<S>.size, MemoryLayout<S>.alignment, measured)
    }

    /// The generic functions above are specialised for every type; the lines are
    /// written once, here (an Embedded build keeps each specialisation).
    @inline(never)
    mutating func record(_ prefix: String, _ size: Int, _ alignment: Int, _ fields: [ABIField]) {
        add(prefix + ".size", Int64(size))
        add(prefix + ".align", Int64(alignment))
        for f in fields {
            add(prefix + "." + f.name + ".offset", Int64(f.offset))
            add(prefix + "." + f.name + ".size", Int64(f.size))
        }
    }

    /// A C constant whatever integer type Swift imported it as (every value
    /// printed fits in 64 bits; truncating never traps).
    mutating func constant<T: BinaryInteger>(_ name: String, _ value: T) {
        add("const." + name, Int64(truncatingIfNeeded: value))
    }
}

struct ABIField {
    var name: String
    var offset: Int
    var size: Int
}

/// A field of the struct at `base`: its distance from the start and its size.
func abiField<S, F>(_ name: String, _ base: UnsafeMutablePointer<S>, _ f: UnsafeMutablePointer<F>) -> ABIField {
    ABIField(name: name, offset: UnsafeRawPointer(base).distance(to: UnsafeRawPointer(f)), size: MemoryLayout<F>.size)
}
