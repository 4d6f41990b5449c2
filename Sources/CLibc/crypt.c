// Password hashes through libxcrypt, and the checker process (cl_crypt.h).
#define _GNU_SOURCE
#include "clibc.h"
#include "cl_crypt.h"

#include <crypt.h>
#include <sys/prctl.h>
#include <sys/socket.h>

_Static_assert(CL_CRYPT_OUTPUT_SIZE == CRYPT_OUTPUT_SIZE, "CL_CRYPT_OUTPUT_SIZE follows libxcrypt");
_Static_assert(CL_CRYPT_MAX_PASSWORD < CRYPT_MAX_PASSPHRASE_SIZE, "a password fits crypt_rn's input");

/* Equal strings, in a time that depends on the lengths only (which are not
   secret: every hash of one setting has the same length). */
static int same_string(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return 0;
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

int cl_crypt_check(const char *password, size_t len, const char *hash) {
    if (!hash || (len > 0 && !password)) { errno = EINVAL; return -1; }
    /* crypt(3) takes a C string: a NUL would cut the password short, so a
       password holding one cannot be what was hashed. */
    if (len > CL_CRYPT_MAX_PASSWORD || (len > 0 && memchr(password, 0, len))) return 0;
    struct crypt_data *data = calloc(1, sizeof *data);
    if (!data) { errno = ENOMEM; return -1; }
    /* The password goes in the crypt_data's own input field (it is wiped with
       the rest): no other copy is made. */
    memcpy(data->input, password, len);
    data->input[len] = 0;
    int result;
    errno = 0;
    const char *out = crypt_rn(data->input, hash, data, (int)sizeof *data);
    if (!out || out[0] == '*') {
        /* libxcrypt fails with a string beginning with '*' (never a valid
           hash) or NULL: an unsupported or invalid setting, or no memory. */
        result = -1;
        if (errno == 0) errno = EINVAL;
    } else {
        result = same_string(out, hash);
    }
    int saved = errno;
    explicit_bzero(data, sizeof *data);
    free(data);
    errno = saved;
    return result;
}

int cl_crypt_make(const char *password, size_t len, const char *prefix, char *out, size_t out_len) {
    if (!prefix || !out || (len > 0 && !password)) { errno = EINVAL; return -1; }
    if (strcmp(prefix, "$y$") != 0 && strcmp(prefix, "$6$") != 0) { errno = EINVAL; return -1; }
    if (len > CL_CRYPT_MAX_PASSWORD || (len > 0 && memchr(password, 0, len))) { errno = EINVAL; return -1; }
    struct crypt_data *data = calloc(1, sizeof *data);
    if (!data) { errno = ENOMEM; return -1; }
    int rc = -1;
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    /* count 0: the scheme's default cost; rbytes NULL: random bytes from the
       OS (getrandom). */
    if (!crypt_gensalt_rn(prefix, 0, NULL, 0, salt, (int)sizeof salt)) {
        if (errno == 0) errno = EINVAL;
        goto done;
    }
    memcpy(data->input, password, len);
    data->input[len] = 0;
    errno = 0;
    const char *hashed = crypt_rn(data->input, salt, data, (int)sizeof *data);
    if (!hashed || hashed[0] == '*') {
        if (errno == 0) errno = EINVAL;
        goto done;
    }
    size_t n = strlen(hashed);
    if (n + 1 > out_len) { errno = ERANGE; goto done; }
    memcpy(out, hashed, n + 1);
    rc = 0;
done:;
    int saved = errno;
    explicit_bzero(data, sizeof *data);
    free(data);
    errno = saved;
    return rc;
}

/* --- the checker process ------------------------------------------------- */

/* The messages, private to this file (both ends are C). */
#define CL_CRYPT_MAGIC 0x50435259  /* "PCRY" */

/* A request: the header, then hash_len octets of hash and password_len octets
   of password, in one datagram. */
typedef struct {
    uint32_t magic;
    uint32_t id;
    uint16_t hash_len;
    uint16_t password_len;
} cl_crypt_request;

#define CL_CRYPT_MAX_REQUEST (sizeof(cl_crypt_request) + CL_CRYPT_MAX_HASH + CL_CRYPT_MAX_PASSWORD)

/* The answer: the request's id and 1, 0 or -1. The checker's first message,
   before any request, is an answer with id 0: it says it is ready. */
typedef struct {
    uint32_t magic;
    uint32_t id;
    int32_t result;
} cl_crypt_reply;

int cl_crypt_send(int sock, uint32_t id, const char *hash, size_t hash_len,
                  const char *password, size_t password_len) {
    if (id == 0 || !hash || hash_len > CL_CRYPT_MAX_HASH || password_len > CL_CRYPT_MAX_PASSWORD
        || (password_len > 0 && !password)) {
        errno = EINVAL;
        return -1;
    }
    unsigned char buf[CL_CRYPT_MAX_REQUEST];
    cl_crypt_request req = { CL_CRYPT_MAGIC, id, (uint16_t)hash_len, (uint16_t)password_len };
    memcpy(buf, &req, sizeof req);
    memcpy(buf + sizeof req, hash, hash_len);
    if (password_len > 0) memcpy(buf + sizeof req + hash_len, password, password_len);
    size_t total = sizeof req + hash_len + password_len;
    ssize_t w;
    do { w = send(sock, buf, total, MSG_NOSIGNAL | MSG_DONTWAIT); } while (w < 0 && errno == EINTR);
    int saved = errno;
    explicit_bzero(buf, sizeof buf);
    errno = saved;
    if (w < 0) return -1;
    if ((size_t)w != total) { errno = EIO; return -1; }
    return 0;
}

int cl_crypt_receive(int sock, int wait, uint32_t *id, int *result) {
    cl_crypt_reply reply;
    if (!id || !result) { errno = EINVAL; return -1; }
    for (;;) {
        if (wait) {
            struct pollfd p = { sock, POLLIN, 0 };
            int r = poll(&p, 1, -1);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return -1;
        }
        ssize_t got = recv(sock, &reply, sizeof reply, MSG_DONTWAIT | MSG_TRUNC);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait) continue;
            return 0;
        }
        if (got < 0) return -1;
        if (got == 0) { errno = EPIPE; return -1; }
        if ((size_t)got != sizeof reply || reply.magic != CL_CRYPT_MAGIC
            || reply.result < -1 || reply.result > 1) {
            errno = EPROTO;
            return -1;
        }
        *id = reply.id;
        *result = reply.result;
        return 1;
    }
}

static int send_crypt_reply(uint32_t id, int32_t result) {
    cl_crypt_reply reply = { CL_CRYPT_MAGIC, id, result };
    ssize_t w;
    do { w = send(0, &reply, sizeof reply, MSG_NOSIGNAL); } while (w < 0 && errno == EINTR);
    return w == (ssize_t)sizeof reply ? 0 : -1;
}

/* The checker's loop on standard input; returns its exit status. It is a fork
   of a single-threaded daemon, so malloc (crypt_rn's yescrypt allocates its
   MiBs with mmap) is safe here. */
static int checker_main(pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The daemon may have died before PR_SET_PDEATHSIG took effect. */
    if (getppid() != parent) return 1;
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Not dumpable: a core or a ptrace attach of the checker would show the
       password it is checking. */
    prctl(PR_SET_DUMPABLE, 0);
    if (send_crypt_reply(0, 0) != 0) return 1;
    /* One octet more than the largest request: a longer datagram is cut, and
       MSG_TRUNC gives its real length. */
    unsigned char buf[CL_CRYPT_MAX_REQUEST + 1];
    char hash[CL_CRYPT_MAX_HASH + 1];
    for (;;) {
        ssize_t got;
        do { got = recv(0, buf, sizeof buf, MSG_TRUNC); } while (got < 0 && errno == EINTR);
        if (got == 0) return 0;
        if (got < 0) return 1;
        cl_crypt_request req;
        int32_t result = -1;
        uint32_t id = 0;
        if ((size_t)got >= sizeof req) {
            memcpy(&req, buf, sizeof req);
            id = req.id;
            if (req.magic == CL_CRYPT_MAGIC && req.hash_len <= CL_CRYPT_MAX_HASH
                && req.password_len <= CL_CRYPT_MAX_PASSWORD
                && (size_t)got == sizeof req + req.hash_len + req.password_len) {
                memcpy(hash, buf + sizeof req, req.hash_len);
                hash[req.hash_len] = 0;
                /* A NUL inside the hash would make crypt_rn check a shorter
                   setting than the one stored: refuse it. */
                if (strlen(hash) == req.hash_len) {
                    result = cl_crypt_check((const char *)buf + sizeof req + req.hash_len,
                                            req.password_len, hash);
                }
            }
        }
        /* The password leaves no copy behind in the checker. */
        explicit_bzero(buf, sizeof buf);
        if (send_crypt_reply(id, result) != 0) return 1;
    }
}

int cl_crypt_helper_start(int *sock) {
    if (!sock) { errno = EINVAL; return -1; }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    /* Our end at 3 or above (with stdio closed it could be 0, where the
       child's end goes) and non-blocking: the loop polls it. */
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
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(sv[0]);
        close(sv[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        /* _exit, never exit: the daemon's atexit handlers and buffers are not
           the checker's. Every descriptor but its end of the pair is closed:
           the spool lock (a copy would keep a restarted daemon out of its
           spool) and client sockets (a copy would keep a connection open). */
        if (dup2(sv[1], 0) < 0) _exit(1);
        if (close_range(3, ~0U, 0) != 0) {
            for (int fd = 3; fd < 65536; fd++) close(fd);
        }
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2) close(null);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        _exit(checker_main(parent));
    }
    close(sv[1]);
    *sock = sv[0];
    return (int)pid;
}

long cl_process_peak_rss_kib(int pid) {
    char path[64];
    if (pid > 0) snprintf(path, sizeof path, "/proc/%d/status", pid);
    else snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}
