// Child processes for the poll loop (cl_process.h): posix_spawn with pipes, the
// forked name lookup, non-blocking reaping and process-group kills.
#define _GNU_SOURCE
#include "clibc.h"

#include <netdb.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>

extern char **environ;

/* A daemon started with stdin, stdout or stderr closed would get a pipe end there;
   dup2 onto itself would then leave close-on-exec set, and the child's own stdio
   would collide with it. Every pipe end is moved to 3 or above. */
static int above_stdio(int fd) {
    if (fd > 2) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int saved = errno;
    close(fd);
    errno = saved;
    return moved;
}

/* pipe2(O_CLOEXEC) with both ends at 3 or above and the read end non-blocking
   (set before any child exists, so nothing can fail once there is one). The write
   end stays blocking for the child. Returns 0 or -1 with errno. */
static int cloexec_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    fds[0] = above_stdio(fds[0]);
    fds[1] = above_stdio(fds[1]);
    if (fds[0] < 0 || fds[1] < 0 || cl_set_nonblocking(fds[0]) != 0) {
        int saved = errno;
        if (fds[0] >= 0) close(fds[0]);
        if (fds[1] >= 0) close(fds[1]);
        errno = saved;
        return -1;
    }
    return 0;
}

int cl_spawn(char *const argv[], int stdin_fd, cl_child *out) {
    if (!argv || !argv[0] || !out) return EINVAL;
    int o[2], e[2];
    if (cloexec_pipe(o) != 0) return errno;
    if (cloexec_pipe(e) != 0) {
        int saved = errno;
        close(o[0]);
        close(o[1]);
        return saved;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);   /* glibc leaves out its internal signals */
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc == 0) {
        rc = posix_spawnattr_init(&attr);
        if (rc != 0) posix_spawn_file_actions_destroy(&actions);
    }
    if (rc == 0) {
        rc = stdin_fd >= 0 ? posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0)
                           : posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, o[1], 1);
        if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, e[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        /* Every descriptor of the daemon is close-on-exec already; this also covers
           one a library opened without it. */
        if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
        if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK
                                                          | POSIX_SPAWN_SETSIGDEF);
        if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
        if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
        if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
        pid_t pid = -1;
        if (rc == 0) rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
        if (rc == 0) {
            out->pid = (int)pid;
            out->stdout_fd = o[0];
            out->stderr_fd = e[0];
        }
    }
    /* The write ends live only in the child, so end of file means the child (and
       whatever it started that kept them) closed them. */
    close(o[1]);
    close(e[1]);
    if (rc != 0) {
        close(o[0]);
        close(e[0]);
    }
    return rc;
}

int cl_reap(int pid, cl_exit_status *status) {
    /* waitpid(0) and waitpid(-1) would reap someone else's child. */
    if (pid <= 0) { errno = EINVAL; return -1; }
    int raw = 0;
    pid_t r;
    do { r = waitpid((pid_t)pid, &raw, WNOHANG); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (WIFEXITED(raw)) {
        status->kind = CL_EXITED;
        status->value = WEXITSTATUS(raw);
    } else if (WIFSIGNALED(raw)) {
        status->kind = CL_SIGNALED;
        status->value = WTERMSIG(raw);
    } else {
        status->kind = 0;
        status->value = raw;
    }
    return 1;
}

int cl_kill_group(int pgid, int sig) {
    /* kill(0) is our own group and kill(-1) every process we may signal. */
    if (pgid <= 1) { errno = EINVAL; return -1; }
    return kill(-(pid_t)pgid, sig);
}

/* Closes every descriptor from `low` up: close_range(2), or one by one where the
   kernel lacks it (before 5.9) or a seccomp filter refuses it. */
static void close_from(int low) {
    if (close_range((unsigned)low, ~0U, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (long fd = low; fd < max; fd++) close((int)fd);
}

static void write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* The record of cl_process.h: the header, then the payload. */
static size_t put_header(unsigned char *buf, int32_t status, int32_t n) {
    int32_t words[3] = { CL_RESOLVE_MAGIC, status, n };
    memcpy(buf, words, sizeof words);
    return sizeof words;
}

__attribute__((noreturn))
static void resolver_child(const char *host, int port, int wfd, pid_t parent) {
    /* Die with the daemon; if it is already gone, the signal will never come. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    /* Keep stdio and the pipe (as fd 3); close the rest, listening sockets first
       of all: nothing of the daemon's may outlive it in this process. */
    if (wfd != 3) {
        if (dup2(wfd, 3) < 0) _exit(1);
        wfd = 3;
    }
    close_from(4);
    signal(SIGPIPE, SIG_IGN);

    unsigned char buf[12 + CL_RESOLVE_MAX * sizeof(cl_ip_endpoint)];
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    int32_t n = 0;
    if (rc == 0) {
        size_t at = 12;
        for (struct addrinfo *ai = res; ai && n < CL_RESOLVE_MAX; ai = ai->ai_next) {
            cl_ip_endpoint ep;
            memset(&ep, 0, sizeof ep);
            ep.port = port;
            if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
                ep.family = 6;
                memcpy(ep.bytes, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
            } else if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
                ep.family = 4;
                memcpy(ep.bytes, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
            } else {
                continue;
            }
            memcpy(buf + at, &ep, sizeof ep);
            at += sizeof ep;
            n++;
        }
        freeaddrinfo(res);
        if (n > 0) {
            put_header(buf, 0, n);
            write_all(wfd, buf, at);
            _exit(0);
        }
        rc = EAI_NODATA;
    }
    char text[CL_RESOLVE_TEXT_MAX + 1];
    if (rc == EAI_SYSTEM) {
        int saved = errno;
        snprintf(text, sizeof text, "%s: %s", gai_strerror(rc), strerror(saved));
    } else {
        snprintf(text, sizeof text, "%s", gai_strerror(rc));
    }
    size_t len = strlen(text);
    size_t at = put_header(buf, rc, (int32_t)len);
    memcpy(buf + at, text, len);
    write_all(wfd, buf, at + len);
    _exit(0);
}

int cl_resolve_fork(const char *host, int port, int *read_fd) {
    if (!host || !read_fd) { errno = EINVAL; return -1; }
    int p[2];
    if (cloexec_pipe(p) != 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(p[0]);
        close(p[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        resolver_child(host, port, p[1], parent);
    }
    close(p[1]);
    *read_fd = p[0];
    return (int)pid;
}

void cl_wipe(void *p, size_t n) {
    if (p && n) explicit_bzero(p, n);
}
