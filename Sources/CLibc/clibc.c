#define _GNU_SOURCE
#include "clibc.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/timex.h>
#include <sys/un.h>

int cl_errno(void) { return errno; }

int cl_open(const char *path, int flags, unsigned mode) {
    int fd;
    do { fd = open(path, flags, (mode_t)mode); } while (fd < 0 && errno == EINTR);
    return fd;
}

int cl_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int cl_signalfd_open(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int cl_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n;
    do { n = read(fd, &info, sizeof info); } while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (n != (ssize_t)sizeof info) return 0;
    return (int)info.ssi_signo;
}

static socklen_t to_sockaddr(const cl_ip_endpoint *ep, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (ep->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)ep->port);
        memcpy(&s6->sin6_addr, ep->bytes, 16);
        return sizeof *s6;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)ep->port);
    memcpy(&s4->sin_addr, ep->bytes, 4);
    return sizeof *s4;
}

static void from_sockaddr(const struct sockaddr_storage *ss, cl_ip_endpoint *ep) {
    memset(ep, 0, sizeof *ep);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        ep->family = 6;
        ep->port = ntohs(s6->sin6_port);
        memcpy(ep->bytes, &s6->sin6_addr, 16);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        ep->family = 4;
        ep->port = ntohs(s4->sin_port);
        memcpy(ep->bytes, &s4->sin_addr, 4);
    }
}

int cl_listen_tcp(const cl_ip_endpoint *ep, int backlog) {
    struct sockaddr_storage ss;
    socklen_t len = to_sockaddr(ep, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ep->family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cl_local_endpoint(int fd, cl_ip_endpoint *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    from_sockaddr(&ss, out);
    return 0;
}

int cl_accept(int listen_fd, cl_ip_endpoint *peer) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd;
    do {
        fd = accept4(listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0) from_sockaddr(&ss, peer);
    return fd;
}

int cl_connect_tcp(const cl_ip_endpoint *ep, int *in_progress) {
    struct sockaddr_storage ss;
    socklen_t len = to_sockaddr(ep, &ss);
    *in_progress = 0;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        if (errno == EINPROGRESS || errno == EINTR) {
            *in_progress = 1;
        } else {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
    }
    return fd;
}

int cl_is_listening_tcp(int fd) {
    int listening = 0, type = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) return 0;
    len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return 0;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return 0;
    return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

int cl_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

int cl_ignore_sigpipe(void) { return signal(SIGPIPE, SIG_IGN) == SIG_ERR ? -1 : 0; }

int cl_set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

ssize_t cl_send(int fd, const void *buf, size_t len) {
    ssize_t n;
    do { n = send(fd, buf, len, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

static int unix_address(const char *path, struct sockaddr_un *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(sa->sun_path, path);
    return 0;
}

int cl_listen_unix(const char *path, int backlog) {
    return cl_listen_unix_mode(path, backlog, 0600);   /* owner only (local.c) */
}

int cl_connect_unix(const char *path) {
    struct sockaddr_un sa;
    if (unix_address(path, &sa) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc;
    do { rc = connect(fd, (struct sockaddr *)&sa, sizeof sa); } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cl_accept_plain(int listen_fd) {
    int fd;
    do { fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); } while (fd < 0 && errno == EINTR);
    return fd;
}

int cl_clock_synchronised(void) {
    struct timex tx;
    memset(&tx, 0, sizeof tx);   /* modes = 0: read only */
    int state = adjtimex(&tx);
    return state != -1 && state != TIME_ERROR && !(tx.status & STA_UNSYNC);
}

int64_t cl_monotonic_ns(void) {
    struct timespec ts = {0, 0};
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A clock that cannot be read gives 0 (1970, as a board without an RTC reads
   before NTP), never what was on the stack. With a 32-bit time_t that would be
   every reading from 2038-01-19T03:14:08Z on (glibc's clock_gettime fails with
   EOVERFLOW); clibc.h refuses such a build. */
int64_t cl_wall_seconds(void) {
    struct timespec ts = {0, 0};
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec;
}

long cl_utc_offset(int64_t seconds) {
    time_t t = (time_t)seconds;
    if ((int64_t)t != seconds) return 0;   /* not a time_t here: call it UTC */
    struct tm tm;
    if (!localtime_r(&t, &tm)) return 0;
    return tm.tm_gmtoff;
}

uint64_t cl_random64(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        v = (uint64_t)cl_monotonic_ns() * 0x9E3779B97F4A7C15ull;
    }
    return v;
}

void *cl_buffer_map(size_t size) {
    if (size == 0) return NULL;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void cl_buffer_unmap(void *p, size_t size) { munmap(p, size); }

void cl_buffer_release(void *p, size_t size) { (void)madvise(p, size, MADV_DONTNEED); }

int cl_lock_exclusive(int fd) { return flock(fd, LOCK_EX | LOCK_NB); }

const char *cl_dirent_name(const struct dirent *entry) { return entry->d_name; }

int cl_sync_directory(const char *path) {
    int fd = cl_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}
