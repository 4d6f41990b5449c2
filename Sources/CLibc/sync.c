// The spool's sync helper (cl_sync.h).
#define _GNU_SOURCE
#include "clibc.h"

#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>

extern char **environ;

/* The messages, private to this file (both ends are C). */
#define CL_SYNC_MAGIC 0x50535943  /* "PSYC" */

// A request: `files` descriptors to fdatasync, then, when `directory` is 1, one
// directory to fsync.
typedef struct {
    uint32_t magic;
    uint32_t files;
    uint32_t directory;
} cl_sync_request;

// The answer: 0, or the errno of the first sync that failed (every descriptor is
// synced even after a failure).
typedef struct {
    uint32_t magic;
    int32_t error;
} cl_sync_reply;


int cl_sync_helper_spawn(const char *exe, const char *helper_argument, int *sock) {
    if (!exe || !helper_argument || !sock) { errno = EINVAL; return -1; }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    /* Our end at 3 or above (a daemon started with stdio closed) and non-blocking:
       the loop polls it. */
    if (sv[0] <= 2) {
        int moved = fcntl(sv[0], F_DUPFD_CLOEXEC, 3);
        int saved = errno;
        close(sv[0]);
        errno = saved;
        sv[0] = moved;
    }
    if (sv[0] < 0 || cl_set_nonblocking(sv[0]) != 0) {
        int saved = errno;
        if (sv[0] >= 0) close(sv[0]);
        close(sv[1]);
        errno = saved;
        return -1;
    }
    char parent[24];
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    char *argv[] = { (char *)exe, (char *)helper_argument, parent, NULL };
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc == 0) {
        rc = posix_spawnattr_init(&attr);
        if (rc != 0) posix_spawn_file_actions_destroy(&actions);
    }
    pid_t pid = -1;
    if (rc == 0) {
        rc = posix_spawn_file_actions_adddup2(&actions, sv[1], 0);
        if (rc == 0) rc = posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        /* Nothing of the daemon's (the spool lock, listening sockets) may live on
           in the helper: a lingering copy of the lock would keep a restarted
           daemon out of its spool. */
        if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
        if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
        if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
        if (rc == 0) rc = posix_spawn(&pid, exe, &actions, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
    }
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        errno = rc;
        return -1;
    }
    *sock = sv[0];
    return (int)pid;
}

int cl_sync_send(int sock, const int *files, int n, int directory_fd) {
    int total = n + (directory_fd >= 0 ? 1 : 0);
    if (n < 0 || total > CL_SYNC_MAX_FDS || (n > 0 && !files)) { errno = EINVAL; return -1; }
    cl_sync_request req = { CL_SYNC_MAGIC, (uint32_t)n, directory_fd >= 0 ? 1u : 0u };
    struct iovec iov = { &req, sizeof req };
    union {
        char buf[CMSG_SPACE(sizeof(int) * CL_SYNC_MAX_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (total > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)total);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)total);
        int *out = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) out[i] = files[i];
        if (directory_fd >= 0) out[n] = directory_fd;
    }
    ssize_t w;
    do { w = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (w < 0 && errno == EINTR);
    if (w < 0) return -1;
    if ((size_t)w != sizeof req) { errno = EIO; return -1; }
    return 0;
}

int cl_sync_receive(int sock, int wait, int *error) {
    cl_sync_reply reply;
    for (;;) {
        if (wait) {
            struct pollfd p = { sock, POLLIN, 0 };
            int r = poll(&p, 1, -1);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return -1;
        }
        ssize_t got = recv(sock, &reply, sizeof reply, MSG_DONTWAIT);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait) continue;
            return 0;
        }
        if (got < 0) return -1;
        if (got == 0) { errno = EPIPE; return -1; }
        if ((size_t)got != sizeof reply || reply.magic != CL_SYNC_MAGIC) { errno = EPROTO; return -1; }
        *error = reply.error;
        return 1;
    }
}

/* Syncs what one request carries; returns the first errno, or 0. */
static int32_t sync_all(const int *fds, int files, int total) {
    int32_t first = 0;
    for (int i = 0; i < total; i++) {
        int r;
        if (i < files) {
            do { r = fdatasync(fds[i]); } while (r != 0 && errno == EINTR);
        } else {
            do { r = fsync(fds[i]); } while (r != 0 && errno == EINTR);
        }
        if (r != 0 && first == 0) first = errno ? errno : EIO;
    }
    return first;
}

int cl_sync_helper_main(int parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (parent <= 1 || getppid() != parent) return 64;
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) return 64;
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        cl_sync_request req;
        struct iovec iov = { &req, sizeof req };
        union {
            char buf[CMSG_SPACE(sizeof(int) * CL_SYNC_MAX_FDS)];
            struct cmsghdr align;
        } control;
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        ssize_t got;
        do { got = recvmsg(0, &msg, MSG_CMSG_CLOEXEC); } while (got < 0 && errno == EINTR);
        if (got == 0) return 0;
        if (got < 0) return 1;
        int fds[CL_SYNC_MAX_FDS];
        int count = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const int *in = (const int *)CMSG_DATA(c);
            for (size_t i = 0; i < n; i++) {
                if (count < CL_SYNC_MAX_FDS) fds[count++] = in[i];
                else close(in[i]);
            }
        }
        int32_t error;
        if ((size_t)got != sizeof req || req.magic != CL_SYNC_MAGIC || (msg.msg_flags & MSG_CTRUNC)
            || req.files > CL_SYNC_MAX_FDS || req.directory > 1
            || (int)(req.files + req.directory) != count) {
            /* Never report a sync that did not happen as done. */
            error = EPROTO;
        } else {
            error = sync_all(fds, (int)req.files, count);
        }
        for (int i = 0; i < count; i++) close(fds[i]);
        cl_sync_reply reply = { CL_SYNC_MAGIC, error };
        ssize_t w;
        do { w = send(0, &reply, sizeof reply, MSG_NOSIGNAL); } while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof reply) return 1;
    }
}
