/* An LD_PRELOAD shim for the tests of the spool's sync helper
   (Tests/blackbox/test_sync_helper.py): every fdatasync and fsync is logged to
   $SYNC_GATE_DIR/log as "enter PID MONOTONIC_NS" and "leave PID MONOTONIC_NS", and
   while the file $SYNC_GATE_DIR/hold exists each one waits for it to go away
   (after the real call) -- a sync on a very slow card, under the test's control;
   $SYNC_GATE_DIR/delay, when it exists, holds a number of milliseconds each one
   takes at least.
   Inherited by the helper process the daemon starts. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void note(const char *what) {
    const char *dir = getenv("SYNC_GATE_DIR");
    if (!dir) return;
    char path[4096], line[128];
    snprintf(path, sizeof path, "%s/log", dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    int n = snprintf(line, sizeof line, "%s %d %lld\n", what, (int)getpid(), now_ns());
    if (write(fd, line, (size_t)n) < 0) { /* nothing to do */ }
    close(fd);
}

static void hold(void) {
    const char *dir = getenv("SYNC_GATE_DIR");
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/delay", dir);
    FILE *f = fopen(path, "re");
    if (f) {
        int ms = 0;
        if (fscanf(f, "%d", &ms) == 1 && ms > 0 && ms < 60000) usleep((useconds_t)ms * 1000);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/hold", dir);
    /* At most a minute, so a broken test cannot hang the suite. */
    for (int i = 0; i < 6000 && access(path, F_OK) == 0; i++) usleep(10000);
}

static int gated(const char *name, int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    note("enter");
    int r = real ? real(fd) : -1;
    hold();
    note("leave");
    return r;
}

int fdatasync(int fd) { return gated("fdatasync", fd); }
int fsync(int fd) { return gated("fsync", fd); }
