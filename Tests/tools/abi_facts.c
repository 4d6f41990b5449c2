// The C side of `postern abi` (issue 10 item 1): the size, alignment and field
// offsets of every C struct the Swift code creates or reads, the widths of the
// C types it passes, and the value of every C constant it uses, as the target's
// own C compiler sees them through the headers the helpers of Sources/CLibc are
// built with. One `name value` line per fact.
//
// This file is THE list of facts: Sources/PosternRuntime/ABIReport.swift prints
// the same names as the Swift compiler sees them, and Tests/blackbox/test_abi.py
// compiles this file with the target's gcc, runs it beside the binary under
// test and requires the two outputs to be identical (a name missing on either
// side fails). The test also requires every C constant, every `cl_*` struct and
// every stat/statvfs field the Swift sources mention to be listed here.
//
// Compiled as the board objects of the Makefile are (-D_FILE_OFFSET_BITS=64
// -D_TIME_BITS=64 -I Sources/CLibc/include); _GNU_SOURCE as in the helpers.
#define _GNU_SOURCE
#include "clibc.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

static void fact(const char *name, long long value) { printf("%s %lld\n", name, value); }

// A C type Swift passes or stores: its size and alignment.
#define TYPE(label, T)                                  \
    fact("type." label ".size", (long long)sizeof(T));  \
    fact("type." label ".align", (long long)_Alignof(T))

// A struct: its size and alignment; then each field Swift uses: offset and size.
#define STRUCT(S, T)                                      \
    fact("struct." S ".size", (long long)sizeof(T));      \
    fact("struct." S ".align", (long long)_Alignof(T))
#define FIELD(S, T, F)                                                  \
    fact("struct." S "." #F ".offset", (long long)offsetof(T, F));      \
    fact("struct." S "." #F ".size", (long long)sizeof(((T *)0)->F))

// A C constant (macro or enumerator): its value.
#define CONST(N) fact("const." #N, (long long)(N))

int main(void) {
    // --- C types (Swift's Int is pointer-wide: what size_t and ssize_t import as)
    TYPE("Int", intptr_t);
    TYPE("int", int);
    TYPE("long", long);
    TYPE("long_long", long long);
    TYPE("pointer", void *);
    TYPE("off_t", off_t);
    TYPE("time_t", time_t);
    TYPE("size_t", size_t);
    TYPE("ssize_t", ssize_t);
    TYPE("pid_t", pid_t);
    TYPE("uid_t", uid_t);
    TYPE("gid_t", gid_t);
    TYPE("mode_t", mode_t);
    TYPE("dev_t", dev_t);
    TYPE("ino_t", ino_t);
    TYPE("socklen_t", socklen_t);
    TYPE("nfds_t", nfds_t);

    // --- libc structs Swift creates or reads
    STRUCT("pollfd", struct pollfd);
    FIELD("pollfd", struct pollfd, fd);
    FIELD("pollfd", struct pollfd, events);
    FIELD("pollfd", struct pollfd, revents);

    STRUCT("stat", struct stat);
    FIELD("stat", struct stat, st_dev);
    FIELD("stat", struct stat, st_ino);
    FIELD("stat", struct stat, st_mode);
    FIELD("stat", struct stat, st_size);

    STRUCT("statvfs", struct statvfs);
    FIELD("statvfs", struct statvfs, f_frsize);
    FIELD("statvfs", struct statvfs, f_bavail);

    STRUCT("iovec", struct iovec);
    FIELD("iovec", struct iovec, iov_base);
    FIELD("iovec", struct iovec, iov_len);

    // --- the helpers' structs (Sources/CLibc/include), every field
    STRUCT("cl_ip_endpoint", cl_ip_endpoint);
    FIELD("cl_ip_endpoint", cl_ip_endpoint, family);
    FIELD("cl_ip_endpoint", cl_ip_endpoint, port);
    FIELD("cl_ip_endpoint", cl_ip_endpoint, bytes);

    STRUCT("cl_peer_cred", cl_peer_cred);
    FIELD("cl_peer_cred", cl_peer_cred, pid);
    FIELD("cl_peer_cred", cl_peer_cred, uid);
    FIELD("cl_peer_cred", cl_peer_cred, gid);

    STRUCT("cl_file_facts", cl_file_facts);
    FIELD("cl_file_facts", cl_file_facts, uid);
    FIELD("cl_file_facts", cl_file_facts, mode);
    FIELD("cl_file_facts", cl_file_facts, nlink);
    FIELD("cl_file_facts", cl_file_facts, size);
    FIELD("cl_file_facts", cl_file_facts, mtime);

    STRUCT("cl_child", cl_child);
    FIELD("cl_child", cl_child, pid);
    FIELD("cl_child", cl_child, stdout_fd);
    FIELD("cl_child", cl_child, stderr_fd);

    STRUCT("cl_exit_status", cl_exit_status);
    FIELD("cl_exit_status", cl_exit_status, kind);
    FIELD("cl_exit_status", cl_exit_status, value);

    STRUCT("cl_tls_peer", cl_tls_peer);
    FIELD("cl_tls_peer", cl_tls_peer, subject);
    FIELD("cl_tls_peer", cl_tls_peer, issuer);
    FIELD("cl_tls_peer", cl_tls_peer, not_before);
    FIELD("cl_tls_peer", cl_tls_peer, not_after);
    FIELD("cl_tls_peer", cl_tls_peer, spki_sha256);
    FIELD("cl_tls_peer", cl_tls_peer, protocol);
    FIELD("cl_tls_peer", cl_tls_peer, cipher);
    STRUCT("cl_tls_cert_info", cl_tls_cert_info);
    FIELD("cl_tls_cert_info", cl_tls_cert_info, subject);
    FIELD("cl_tls_cert_info", cl_tls_cert_info, not_after);

    // --- the helpers' constants (the anonymous enum of cl_tls.h: its values;
    // every cl_tls_* call returns it as an int)
    CONST(CL_TLS_DONE);
    CONST(CL_TLS_WANT_READ);
    CONST(CL_TLS_WANT_WRITE);
    CONST(CL_TLS_CLOSED);
    CONST(CL_TLS_FAILED);
    CONST(CL_EXITED);
    CONST(CL_SIGNALED);
    CONST(CL_RESOLVE_MAGIC);
    CONST(CL_RESOLVE_MAX);
    CONST(CL_RESOLVE_TEXT_MAX);
    CONST(CL_SYNC_MAX_FDS);
    CONST(CL_URING_ENTRIES);
    CONST(CL_CRYPT_MAX_HASH);
    CONST(CL_CRYPT_MAX_PASSWORD);
    CONST(CL_CRYPT_OUTPUT_SIZE);

    // --- libc and libsystemd constants the Swift code uses
    CONST(EAGAIN);
    CONST(EWOULDBLOCK);
    CONST(EBADF);
    CONST(ECONNABORTED);
    CONST(EDQUOT);
    CONST(EEXIST);
    CONST(EFBIG);
    CONST(EINTR);
    CONST(EMSGSIZE);
    CONST(ENOENT);
    CONST(ENOSPC);
    CONST(EIO);
    CONST(EOVERFLOW);
    CONST(EPIPE);
    CONST(EINVAL);
    CONST(ENOSYS);
    CONST(EOPNOTSUPP);
    CONST(SIGHUP);
    CONST(SIGINT);
    CONST(SIGKILL);
    CONST(SIGTERM);
    CONST(O_RDONLY);
    CONST(O_WRONLY);
    CONST(O_RDWR);
    CONST(O_CREAT);
    CONST(O_EXCL);
    CONST(O_NONBLOCK);
    CONST(O_CLOEXEC);
    CONST(F_OK);
    CONST(POLLIN);
    CONST(POLLOUT);
    CONST(POLLERR);
    CONST(POLLHUP);
    CONST(S_IFMT);
    CONST(S_IFREG);
    CONST(SHUT_WR);
    CONST(SD_LISTEN_FDS_START);
    return 0;
}
