// The libc surface Postern uses, and helpers for what Swift cannot call directly:
// errno (a macro), variadic functions (open, fcntl), sockaddr marshalling and the
// sigset macros. Each helper is a thin wrapper; policy stays in Swift.
#ifndef POSTERN_CLIBC_H
#define POSTERN_CLIBC_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "cl_process.h"
#include "cl_local.h"
#include "crc32c.h"

// 64-bit time_t and off_t in everything Postern compiles, the Swift side
// included (the clang importer reads this header): on armv7 that takes
// -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64 (the Makefile's board flags). With a
// 32-bit time_t the wall clock cannot be read from 2038-01-19T03:14:08Z on, and
// with a 32-bit off_t no file passes 2 GiB (issue 10 item 2).
_Static_assert(sizeof(time_t) == 8, "Postern needs a 64-bit time_t: build with -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64");
_Static_assert(sizeof(off_t) == 8, "Postern needs a 64-bit off_t: build with -D_FILE_OFFSET_BITS=64");

/// errno of the calling thread.
int cl_errno(void);

/// open(2) with an explicit mode (open is variadic in C).
int cl_open(const char *path, int flags, unsigned mode);

/// fcntl(F_SETFL, flags | O_NONBLOCK). Returns 0 or -1 with errno.
int cl_set_nonblocking(int fd);

/// Blocks SIGTERM, SIGINT, SIGHUP and ignores SIGPIPE, then returns a non-blocking
/// close-on-exec signalfd(2) for the blocked ones, or -1 with errno.
int cl_signalfd_open(void);

/// Reads one signal from a signalfd. Returns the signal number, 0 when none is
/// pending (EAGAIN), or -1 with errno.
int cl_signalfd_read(int fd);

/// An IP address and port in a family-neutral form: family is 4 or 6, bytes holds
/// 4 or 16 octets in network order.
typedef struct {
    int family;
    int port;
    unsigned char bytes[16];
} cl_ip_endpoint;

/// socket + SO_REUSEADDR (+ IPV6_V6ONLY) + bind + listen, non-blocking and close-on-exec.
/// Returns the fd or -1 with errno.
int cl_listen_tcp(const cl_ip_endpoint *ep, int backlog);

/// The local endpoint of a bound socket (for port 0 in tests). Returns 0 or -1.
int cl_local_endpoint(int fd, cl_ip_endpoint *out);

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC; fills the peer's endpoint.
/// Returns the fd or -1 with errno.
int cl_accept(int listen_fd, cl_ip_endpoint *peer);

/// A non-blocking connect(2) to ep. Returns the fd (connection may be in progress)
/// or -1 with errno; *in_progress is set when EINPROGRESS was returned.
int cl_connect_tcp(const cl_ip_endpoint *ep, int *in_progress);

/// 1 when fd is a listening TCP (AF_INET/AF_INET6 stream) socket, else 0: checks
/// the sockets systemd passes before using them.
int cl_is_listening_tcp(int fd);

/// getsockopt(SO_ERROR): the result of a non-blocking connect. Returns 0 or an errno.
int cl_socket_error(int fd);

/// setsockopt(TCP_NODELAY, 1).
int cl_set_nodelay(int fd);

/// send(2) with MSG_NOSIGNAL.
ssize_t cl_send(int fd, const void *buf, size_t len);

/// signal(SIGPIPE, SIG_IGN), for commands that write to sockets outside the
/// daemon (which ignores it in cl_signalfd_open): OpenSSL writes without
/// MSG_NOSIGNAL. Returns 0 or -1.
int cl_ignore_sigpipe(void);

/// A listening AF_UNIX stream socket at `path` with mode 0600 (owner only),
/// non-blocking and close-on-exec. Returns the fd or -1 with errno.
int cl_listen_unix(const char *path, int backlog);

/// A blocking connect(2) to the AF_UNIX stream socket at `path`. Returns the fd
/// or -1 with errno.
int cl_connect_unix(const char *path);

/// accept4(2) without the peer's address. Returns the fd or -1 with errno.
int cl_accept_plain(int listen_fd);

/// 1 when the kernel reports the system clock synchronised (adjtimex(2) gives
/// no TIME_ERROR and STA_UNSYNC is clear), else 0.
int cl_clock_synchronised(void);

/// CLOCK_MONOTONIC in nanoseconds.
int64_t cl_monotonic_ns(void);

/// CLOCK_REALTIME in whole seconds since the epoch.
int64_t cl_wall_seconds(void);

/// The local time zone's offset from UTC in seconds at the given instant.
long cl_utc_offset(int64_t seconds);

/// getrandom(2) of 8 bytes (falls back to the clock if the call fails).
uint64_t cl_random64(void);

/* A buffer's storage as its own private anonymous mapping (NULL when mmap
   fails); release gives its pages back (MADV_DONTNEED: they read as zeros). */
void *cl_buffer_map(size_t size);
void cl_buffer_unmap(void *p, size_t size);
void cl_buffer_release(void *p, size_t size);

/// flock(LOCK_EX | LOCK_NB). Returns 0 or -1 with errno.
int cl_lock_exclusive(int fd);

/// The name of a directory entry.
const char *cl_dirent_name(const struct dirent *entry);

/// fsync(2) of a directory by path. Returns 0 or -1 with errno.
int cl_sync_directory(const char *path);

// TLS toward the upstream (tls.c).
#include "cl_tls.h"

// The spool's sync helper (sync.c).
#include "cl_sync.h"

// The spool's syncs through io_uring (uring.c).
#include "cl_uring.h"

// Password hashes through libcrypt and the checker process (crypt.c).
#include "cl_crypt.h"

#endif
