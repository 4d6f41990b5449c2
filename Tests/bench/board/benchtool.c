/* benchtool: the SMTP source, SMTP sink and /proc helpers of the board footprint
 * bench (Tests/bench/board_footprint.py), one static binary so that a busybox
 * initramfs needs nothing else. Built with `<triple>-gcc -static -O2` for the
 * boards and with `gcc -static -O2` for x86_64. Loopback (127.0.0.1) only.
 *
 *   benchtool sink PORT COUNTFILE          SMTP sink: 250 to everything, text discarded;
 *                                          COUNTFILE holds the number of messages taken
 *   benchtool load PORT CLIENTS COUNT SIZE COUNT messages of SIZE bytes over CLIENTS
 *                                          concurrent sessions (one process each)
 *   benchtool notify PATH                  reads sd_notify datagrams on a unix socket,
 *                                          one line per datagram on stdout (with a time)
 *   benchtool wait-listen PORT SECONDS     until 127.0.0.1:PORT is listening (/proc/net/tcp)
 *   benchtool wait-count FILE N SECONDS    until FILE holds a number >= N
 *   benchtool sample PID MS                samples VmRSS, VmHWM (status), Rss and Private_Dirty
 *                                          (smaps_rollup) every MS until SIGTERM or PID
 *                                          ends; prints the maxima
 *
 * The source speaks correct SMTP (RFC 5321): it reads the whole multi-line
 * EHLO reply (4.2.1), waits for each reply before the next command, and
 * dot-stuffs the text (4.5.2); a line starting with "." is in every message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "benchtool: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static long number(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0) die("bad %s: %s", what, s);
    return v;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* ---- sink ---------------------------------------------------------------- */

#define MAXCONN 64

struct peer {
    int fd;
    char out[4096];     /* replies to the bytes of one read, sent together */
    size_t outlen;
    int data;           /* inside DATA text */
    char line[1024];    /* the current command line, or the start of a text line */
    size_t len;         /* bytes of the current line seen (may exceed sizeof line) */
};

/* Replies are collected and sent once per read: a pipelining client (RFC 2920)
 * gets one segment, not one per reply held back by Nagle against its delayed ACK. */
static void reply(struct peer *p, const char *s)
{
    size_t n = strlen(s);
    if (p->outlen + n > sizeof p->out) {
        (void)write_all(p->fd, p->out, p->outlen);
        p->outlen = 0;
    }
    memcpy(p->out + p->outlen, s, n);
    p->outlen += n;
}

static void flush_replies(struct peer *p)
{
    if (p->outlen) (void)write_all(p->fd, p->out, p->outlen);
    p->outlen = 0;
}

static void write_count(const char *path, long count)
{
    char tmp[4096], buf[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open %s: %s", tmp, strerror(errno));
    int n = snprintf(buf, sizeof buf, "%ld\n", count);
    (void)write_all(fd, buf, (size_t)n);
    close(fd);
    if (rename(tmp, path) != 0) die("rename %s: %s", path, strerror(errno));
}

/* One complete line (ending in LF) of a peer: a command, or a text line. */
static int line_done(struct peer *p, long *count, const char *countfile)
{
    size_t n = p->len < sizeof p->line ? p->len : sizeof p->line;
    if (p->data) {
        if ((p->len == 3 && memcmp(p->line, ".\r\n", 3) == 0) || (p->len == 2 && memcmp(p->line, ".\n", 2) == 0)) {
            p->data = 0;
            ++*count;
            write_count(countfile, *count);
            reply(p, "250 2.0.0 ok\r\n");
        }
        return 0;
    }
    char verb[5] = {0};
    for (size_t i = 0; i < 4 && i < n; i++) {
        char c = p->line[i];
        verb[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    if (!strcmp(verb, "EHLO")) {
        reply(p, "250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n");
    } else if (!strcmp(verb, "DATA")) {
        p->data = 1;
        reply(p, "354 go ahead\r\n");
    } else if (!strcmp(verb, "QUIT")) {
        reply(p, "221 2.0.0 bye\r\n");
        return 1;
    } else {
        reply(p, "250 2.0.0 ok\r\n");
    }
    return 0;
}

static _Noreturn int sink(int argc, char **argv)
{
    if (argc != 4) die("usage: sink PORT COUNTFILE");
    int port = (int)number(argv[2], "port");
    const char *countfile = argv[3];
    long count = 0;
    write_count(countfile, 0);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(port);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0) die("bind 127.0.0.1:%d: %s", port, strerror(errno));
    if (listen(ls, 64) != 0) die("listen: %s", strerror(errno));
    static struct peer peers[MAXCONN];
    for (int i = 0; i < MAXCONN; i++) peers[i].fd = -1;
    static char buf[65536];
    for (;;) {
        struct pollfd pf[MAXCONN + 1];
        int idx[MAXCONN + 1];
        int n = 0;
        pf[n].fd = ls; pf[n].events = POLLIN; idx[n++] = -1;
        for (int i = 0; i < MAXCONN; i++)
            if (peers[i].fd >= 0) { pf[n].fd = peers[i].fd; pf[n].events = POLLIN; idx[n++] = i; }
        if (poll(pf, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll: %s", strerror(errno));
        }
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents) continue;
            if (idx[k] < 0) {
                int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0) continue;
                int slot = -1;
                for (int i = 0; i < MAXCONN; i++) if (peers[i].fd < 0) { slot = i; break; }
                if (slot < 0) { (void)write_all(fd, "421 busy\r\n", 10); close(fd); continue; }
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                peers[slot].fd = fd; peers[slot].data = 0; peers[slot].len = 0; peers[slot].outlen = 0;
                reply(&peers[slot], "220 sink.bench ESMTP\r\n");
                flush_replies(&peers[slot]);
                continue;
            }
            struct peer *p = &peers[idx[k]];
            ssize_t r = read(p->fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                close(p->fd); p->fd = -1;
                continue;
            }
            for (ssize_t i = 0; i < r && p->fd >= 0; i++) {
                if (p->len < sizeof p->line) p->line[p->len] = buf[i];
                p->len++;
                if (buf[i] == '\n') {
                    int quit = line_done(p, &count, countfile);
                    p->len = 0;
                    if (quit) { flush_replies(p); close(p->fd); p->fd = -1; }
                }
            }
            if (p->fd >= 0) flush_replies(p);
        }
    }
}

/* ---- load ---------------------------------------------------------------- */

struct conn {
    int fd;
    char buf[4096];
    size_t have;
};

/* Reads one reply (all its lines, RFC 5321 4.2.1); returns its code. */
static int read_reply(struct conn *c, char *last, size_t lastsize)
{
    for (;;) {
        char *nl;
        while ((nl = memchr(c->buf, '\n', c->have)) == NULL) {
            if (c->have == sizeof c->buf) die("reply line too long");
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) die("connection closed while waiting for a reply");
            c->have += (size_t)r;
        }
        size_t len = (size_t)(nl - c->buf) + 1;
        if (len < 4) die("short reply line");
        int code = (c->buf[0] - '0') * 100 + (c->buf[1] - '0') * 10 + (c->buf[2] - '0');
        int more = c->buf[3] == '-';
        if (last) {
            size_t n = len < lastsize - 1 ? len : lastsize - 1;
            memcpy(last, c->buf, n);
            last[n] = 0;
        }
        memmove(c->buf, c->buf + len, c->have - len);
        c->have -= len;
        if (!more) return code;
    }
}

static void command(struct conn *c, const char *line, int want)
{
    char last[512];
    if (write_all(c->fd, line, strlen(line)) != 0) die("write: %s", strerror(errno));
    int code = read_reply(c, last, sizeof last);
    if (code / 100 != want / 100) die("'%.*s' answered: %s", (int)strcspn(line, "\r"), line, last);
}

/* The text of one message of about `size` bytes, dot-stuffed, then CRLF.CRLF. */
static void send_text(struct conn *c, int client, long seq, long size)
{
    static char chunk[65536];
    size_t n = 0;
    n += (size_t)snprintf(chunk, sizeof chunk,
                          "From: Bench <bench@board.bench>\r\nTo: ops@example.com\r\n"
                          "Subject: bench %d/%ld\r\n\r\n"
                          "..this line starts with a dot (stuffed)\r\n", client, seq);
    long sent = 0;
    const char *row = "the quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv\r\n";
    size_t rowlen = strlen(row); /* 80 bytes */
    while (sent + (long)n < size) {
        if (n + rowlen > sizeof chunk) {
            if (write_all(c->fd, chunk, n) != 0) die("write: %s", strerror(errno));
            sent += (long)n;
            n = 0;
            continue;
        }
        memcpy(chunk + n, row, rowlen);
        n += rowlen;
    }
    memcpy(chunk + n, ".\r\n", 3);
    n += 3;
    if (write_all(c->fd, chunk, n) != 0) die("write: %s", strerror(errno));
}

static void session(int port, int client, long count, long size)
{
    struct conn c = { .have = 0 };
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = loopback(port);
    if (connect(c.fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect 127.0.0.1:%d: %s", port, strerror(errno));
    char last[512];
    if (read_reply(&c, last, sizeof last) != 220) die("greeting: %s", last);
    command(&c, "EHLO load.bench\r\n", 250);
    for (long i = 0; i < count; i++) {
        command(&c, "MAIL FROM:<bench@board.bench>\r\n", 250);
        command(&c, "RCPT TO:<ops@example.com>\r\n", 250);
        command(&c, "DATA\r\n", 354);
        send_text(&c, client, i, size);
        if (read_reply(&c, last, sizeof last) != 250) die("end of data: %s", last);
    }
    command(&c, "QUIT\r\n", 221);
    close(c.fd);
}

static int load(int argc, char **argv)
{
    if (argc != 6) die("usage: load PORT CLIENTS COUNT SIZE");
    int port = (int)number(argv[2], "port");
    long clients = number(argv[3], "clients"), count = number(argv[4], "count"), size = number(argv[5], "size");
    if (clients < 1 || clients > 64) die("clients: 1 to 64");
    signal(SIGPIPE, SIG_IGN);
    double t0 = now();
    for (long k = 0; k < clients; k++) {
        long share = count / clients + (k < count % clients ? 1 : 0);
        pid_t pid = fork();
        if (pid < 0) die("fork: %s", strerror(errno));
        if (pid == 0) {
            session(port, (int)k, share, size);
            _exit(0);
        }
    }
    int failed = 0, status;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    printf("load clients=%ld messages=%ld size=%ld seconds=%.3f failed_clients=%d\n",
           clients, count, size, now() - t0, failed);
    return failed ? 1 : 0;
}

/* ---- notify -------------------------------------------------------------- */

static _Noreturn int notify(int argc, char **argv)
{
    if (argc != 3) die("usage: notify PATH");
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(argv[2]) >= sizeof a.sun_path) die("path too long");
    strcpy(a.sun_path, argv[2]);
    unlink(argv[2]);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind %s: %s", argv[2], strerror(errno));
    setvbuf(stdout, NULL, _IOLBF, 0);
    double t0 = now();
    static char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("recv: %s", strerror(errno));
        }
        for (ssize_t i = 0; i < r; i++) if (buf[i] == '\n') buf[i] = ' ';
        buf[r] = 0;
        printf("%.3f %s\n", now() - t0, buf);
    }
}

/* ---- waits --------------------------------------------------------------- */

static int listening(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f) return 0;
    char line[512];
    char want[32];
    snprintf(want, sizeof want, "0100007F:%04X", port);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char local[64], remote[64];
        unsigned st;
        if (sscanf(line, " %*d: %63s %63s %x", local, remote, &st) == 3 && st == 0x0A && !strcmp(local, want))
            found = 1;
    }
    fclose(f);
    return found;
}

static int wait_listen(int argc, char **argv)
{
    if (argc != 4) die("usage: wait-listen PORT SECONDS");
    int port = (int)number(argv[2], "port");
    double deadline = now() + number(argv[3], "seconds");
    while (!listening(port)) {
        if (now() > deadline) die("127.0.0.1:%d is not listening after %s s", port, argv[3]);
        nap_ms(20);
    }
    return 0;
}

static int wait_count(int argc, char **argv)
{
    if (argc != 5) die("usage: wait-count FILE N SECONDS");
    long want = number(argv[3], "n");
    double t0 = now(), deadline = t0 + number(argv[4], "seconds");
    for (;;) {
        long have = -1;
        FILE *f = fopen(argv[2], "r");
        if (f) {
            if (fscanf(f, "%ld", &have) != 1) have = -1;
            fclose(f);
        }
        if (have >= want) break;
        if (now() > deadline) die("%s holds %ld after %s s, not %ld", argv[2], have, argv[4], want);
        nap_ms(20);
    }
    printf("wait-count %s reached %ld after %.3f s\n", argv[2], want, now() - t0);
    return 0;
}

/* ---- sample -------------------------------------------------------------- */

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static long field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    size_t kl = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int sample(int argc, char **argv)
{
    if (argc != 4) die("usage: sample PID MS");
    long pid = number(argv[2], "pid"), ms = number(argv[3], "ms");
    char status[64], rollup[64];
    snprintf(status, sizeof status, "/proc/%ld/status", pid);
    snprintf(rollup, sizeof rollup, "/proc/%ld/smaps_rollup", pid);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    long rss = 0, hwm = 0, pd = 0, srss = 0, samples = 0;
    while (!stop) {
        long r = field(status, "VmRSS"), h = field(status, "VmHWM");
        long d = field(rollup, "Private_Dirty"), s = field(rollup, "Rss");
        if (r < 0 || d < 0) break;   /* the process is gone */
        samples++;
        if (r > rss) rss = r;
        if (h > hwm) hwm = h;
        if (d > pd) pd = d;
        if (s > srss) srss = s;
        nap_ms(ms);
    }
    /* smaps Rss counts the page tables now; VmRSS/VmHWM come from counters that
     * kernels before 6.2 cache per task and fold in every 64 faults, so there
     * they can lag by a few hundred kB. */
    printf("max_VmRSS=%ld max_VmHWM=%ld max_Private_Dirty=%ld max_smaps_Rss=%ld samples=%ld\n",
           rss, hwm, pd, srss, samples);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) die("usage: benchtool sink|load|notify|wait-listen|wait-count|sample ...");
    const char *m = argv[1];
    if (!strcmp(m, "sink")) return sink(argc, argv);
    if (!strcmp(m, "load")) return load(argc, argv);
    if (!strcmp(m, "notify")) return notify(argc, argv);
    if (!strcmp(m, "wait-listen")) return wait_listen(argc, argv);
    if (!strcmp(m, "wait-count")) return wait_count(argc, argv);
    if (!strcmp(m, "sample")) return sample(argc, argv);
    die("unknown mode %s", m);
    return 2;
}
