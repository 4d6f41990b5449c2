/* slow_sync.c: an LD_PRELOAD shim for `make bench` (Tests/bench/relay_bench.py)
 * that makes every durable sync slow, as on an SD card or a cheap eMMC, where
 * one flush takes milliseconds: a relay that syncs once per message then runs at
 * most 1000/SLOW_SYNC_MS messages per second per syncing thread, and one that
 * shares a sync between transactions does better. On the development machine a
 * sync of a small append costs well under a millisecond, which hides that.
 *
 * fsync, fdatasync and syncfs, and sync_file_range when asked to wait
 * (SYNC_FILE_RANGE_WAIT_BEFORE or SYNC_FILE_RANGE_WAIT_AFTER; a call that only
 * starts write-out returns at once, as the kernel's does), call the real
 * function (dlsym(RTLD_NEXT, ...)) and then sleep $SLOW_SYNC_MS milliseconds
 * (default 10; 0 sleeps not at all). The real call's result and errno are
 * returned unchanged.
 *
 * With $SLOW_SYNC_COUNT_FILE set, every intercepted call also appends one line
 * "<pid> <name>\n" to that file (O_APPEND, one write(2) each: lines from
 * concurrent processes do not interleave), so the benchmark can check that the
 * shim is really loaded in each process that syncs (Postfix's master scrubs its
 * children's environment unless import_environment names the variables).
 *
 * LD_PRELOAD is inherited across fork and kept across exec as long as the
 * environment is, so a helper process that syncs on the daemon's behalf is
 * covered too. A sync submitted through io_uring (IORING_OP_FSYNC) is not a
 * library call and is NOT slowed: the benchmark counts io_uring_enter(2) calls
 * with strace so that such a design shows up in its figures.
 *
 * Built by `make build/tools/slow_sync.so`:
 *
 *     gcc -shared -fPIC -O2 -Wall -o build/tools/slow_sync.so Tests/tools/slow_sync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static long delay_ms(void) {
    static long cached = -1;
    if (cached < 0) {
        const char *s = getenv("SLOW_SYNC_MS");
        long v = 10;
        if (s != NULL && *s != '\0') {
            char *end = NULL;
            long parsed = strtol(s, &end, 10);
            if (end != NULL && *end == '\0' && parsed >= 0 && parsed <= 60000) v = parsed;
        }
        cached = v;
    }
    return cached;
}

/* Appends "<pid> <name>\n" to $SLOW_SYNC_COUNT_FILE, if set. Best effort: a
 * failure here must not change what the caller sees. */
static void note(const char *name) {
    const char *path = getenv("SLOW_SYNC_COUNT_FILE");
    if (path == NULL || *path == '\0') return;
    int saved = errno;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), name);
        if (n > 0 && (size_t)n < sizeof line) {
            ssize_t w = write(fd, line, (size_t)n);
            (void)w;
        }
        close(fd);
    }
    errno = saved;
}

/* Sleeps the configured delay, through signals, keeping errno. */
static void slow_down(const char *name) {
    note(name);
    long ms = delay_ms();
    if (ms == 0) return;
    int saved = errno;
    struct timespec left = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    errno = saved;
}

static void *real(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (f == NULL) {
        /* Nothing sensible to fall back to: the program would sync nothing. */
        static const char msg[] = "slow_sync: dlsym failed\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        abort();
    }
    return f;
}

int fsync(int fd) {
    static int (*f)(int);
    if (f == NULL) f = (int (*)(int))real("fsync");
    int rc = f(fd);
    slow_down("fsync");
    return rc;
}

int fdatasync(int fd) {
    static int (*f)(int);
    if (f == NULL) f = (int (*)(int))real("fdatasync");
    int rc = f(fd);
    slow_down("fdatasync");
    return rc;
}

int syncfs(int fd) {
    static int (*f)(int);
    if (f == NULL) f = (int (*)(int))real("syncfs");
    int rc = f(fd);
    slow_down("syncfs");
    return rc;
}

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags) {
    static int (*f)(int, off_t, off_t, unsigned int);
    if (f == NULL) f = (int (*)(int, off_t, off_t, unsigned int))real("sync_file_range");
    int rc = f(fd, offset, nbytes, flags);
    if (flags & (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER)) slow_down("sync_file_range");
    return rc;
}
