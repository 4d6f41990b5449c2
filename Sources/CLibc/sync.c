// The spool's sync helper (cl_sync.h).
#define _GNU_SOURCE
#include "clibc.h"
#include "forked_helper.h"

#include <sys/socket.h>

/* The messages, private to this file (both ends are C). */
#define CL_SYNC_MAGIC 0x50535943  /* "PSYC" */

/* A request: `files` descriptors to fdatasync, then, when `directory` is 1, one
   directory to fsync; they come as SCM_RIGHTS with it. */
typedef struct {
    uint32_t magic;
    uint32_t files;
    uint32_t directory;
} cl_sync_request;

/* The answer: 0, or the errno of the first sync that failed (every descriptor is
   synced even after a failure). The helper's first message, before any request,
   is an answer too: it says the helper is ready. */
typedef struct {
    uint32_t magic;
    int32_t error;
} cl_sync_reply;

static int send_reply(int32_t error) {
    cl_sync_reply reply = { CL_SYNC_MAGIC, error };
    ssize_t w;
    do { w = send(0, &reply, sizeof reply, MSG_NOSIGNAL); } while (w < 0 && errno == EINTR);
    return w == (ssize_t)sizeof reply ? 0 : -1;
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

/* The helper's loop on standard input; returns its exit status. Only
   async-signal-safe calls: it is a fork of the daemon. */
static int helper_main(void) {
    if (send_reply(0) != 0) return 1;
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
        if (send_reply(error) != 0) return 1;
    }
}

int cl_sync_helper_start(int *sock) { return cl_fork_helper(sock, helper_main); }
