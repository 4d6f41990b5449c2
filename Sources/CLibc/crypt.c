// Password hashes through libxcrypt, and the checker process (cl_crypt.h).
#define _GNU_SOURCE
#include "clibc.h"
#include "forked_helper.h"
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
static int checker_main(void) {
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

int cl_crypt_helper_start(int *sock) { return cl_fork_helper(sock, checker_main); }

/* --- postern passwd -------------------------------------------------------- */

#include <termios.h>

/* The terminal's settings while echo is off, restored by the signal handler. */
static int tty_fd = -1;
static struct termios tty_saved;
static const int tty_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
#define TTY_SIGNALS (sizeof tty_signals / sizeof tty_signals[0])
static struct sigaction tty_old_actions[TTY_SIGNALS];

static void tty_restore_and_reraise(int sig) {
    if (tty_fd >= 0) tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
    for (size_t i = 0; i < TTY_SIGNALS; i++) {
        if (tty_signals[i] == sig) sigaction(sig, &tty_old_actions[i], NULL);
    }
    raise(sig);
}

int cl_read_password_tty(int fd, const char *prompt, char *buf, size_t cap, size_t *len) {
    if (!buf || !len || !prompt) { errno = EINVAL; return -1; }
    struct termios t;
    if (tcgetattr(fd, &t) != 0) return -1;
    tty_saved = t;
    tty_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tty_restore_and_reraise;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < TTY_SIGNALS; i++) sigaction(tty_signals[i], &sa, &tty_old_actions[i]);
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_lflag |= ECHONL;
    int rc = 0;
    if (tcsetattr(fd, TCSAFLUSH, &t) != 0) { rc = -1; goto restore; }
    ssize_t w = write(2, prompt, strlen(prompt));
    (void)w;
    size_t n = 0;
    int too_long = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { rc = -1; break; }
        if (r == 0) { errno = EPIPE; rc = -1; break; }
        if (c == '\n') break;
        if (n < cap) buf[n++] = c;
        else too_long = 1;
        c = 0;
    }
    if (rc == 0 && too_long) { explicit_bzero(buf, cap); n = 0; rc = 1; }
    if (rc != 0 && rc != 1) { explicit_bzero(buf, cap); n = 0; }
    *len = n;
restore:;
    int saved = errno;
    tcsetattr(fd, TCSAFLUSH, &tty_saved);
    tty_fd = -1;
    for (size_t i = 0; i < TTY_SIGNALS; i++) sigaction(tty_signals[i], &tty_old_actions[i], NULL);
    errno = saved;
    return rc;
}

int cl_replace_file(const char *path, const void *data, size_t len, const char **step) {
    static const char *unused;
    if (!step) step = &unused;
    *step = "";
    if (!path || (len > 0 && !data)) { errno = EINVAL; *step = "arguments"; return -1; }
    size_t plen = strlen(path);
    if (plen == 0 || plen > 4000) { errno = ENAMETOOLONG; *step = "path"; return -1; }
    /* The directory (for the new file and its fsync) and the base name. */
    char dir[4096], tmp[4200];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (*base == 0) { errno = EISDIR; *step = "path"; return -1; }
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    snprintf(tmp, sizeof tmp, "%s/.%s.postern-%ld", dir, base, (long)getpid());

    struct stat old;
    int had_old = stat(path, &old) == 0;
    if (!had_old && errno != ENOENT) { *step = "stat"; return -1; }
    if (had_old && !S_ISREG(old.st_mode)) { errno = EINVAL; *step = "stat (not a regular file)"; return -1; }

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) { *step = "open"; return -1; }
    if (had_old) {
        struct stat now;
        if (fstat(fd, &now) != 0) { *step = "fstat"; goto fail; }
        if ((now.st_uid != old.st_uid || now.st_gid != old.st_gid)
            && fchown(fd, old.st_uid, old.st_gid) != 0) { *step = "fchown"; goto fail; }
        if (fchmod(fd, old.st_mode & 07777) != 0) { *step = "fchmod"; goto fail; }
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) { *step = "write"; goto fail; }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) { *step = "fsync"; goto fail; }
    if (close(fd) != 0) { fd = -1; *step = "close"; goto fail; }
    fd = -1;
    if (rename(tmp, path) != 0) { *step = "rename"; goto fail; }
    if (cl_sync_directory(dir) != 0) { *step = "fsync (directory)"; return -1; }
    return 0;
fail:;
    int saved = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = saved;
    return -1;
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
