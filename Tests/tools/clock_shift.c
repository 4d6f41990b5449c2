/* clock_shift.c: an LD_PRELOAD shim for the black-box tests that moves the
 * wall clock (CLOCK_REALTIME, and nothing else) forward by
 * $POSTERN_TEST_CLOCK_SHIFT seconds, so a daemon can be run in 2040, or a few
 * seconds either side of 2038-01-19T03:14:07Z, without touching the machine's
 * clock. CLOCK_MONOTONIC and every other clock are left alone: Postern
 * schedules on the monotonic clock, and the tests check that it still does.
 *
 * With $POSTERN_TEST_CLOCK_SYNCHRONISED=1 adjtimex(2) also reports the clock
 * synchronised (TIME_OK, STA_UNSYNC clear): Postern never expires mail on a
 * clock that may be wrong (DESIGN.md principle 6), and a test machine's
 * kernel often says it is.
 *
 * Built by the test with the target's compiler, WITHOUT _TIME_BITS=64, so that
 * the names below are the 32-bit time_t ABI's on a 32-bit target:
 *
 *     $CC -shared -fPIC -O2 -o clock_shift.so clock_shift.c -ldl
 *
 * Every entry point a binary of the target may call for the wall time is
 * overridden. On a 64-bit target that is clock_gettime, gettimeofday and time
 * (time_t is 64 bits, there are no *64 variants). On a 32-bit glibc target
 * (armv7) a binary built with _TIME_BITS=64 calls __clock_gettime64,
 * __gettimeofday64 and __time64, and one built without calls clock_gettime,
 * gettimeofday and time with a 32-bit time_t. Those three behave as glibc
 * 2.36's own do (sysdeps/unix/sysv/linux/clock_gettime.c, gettimeofday.c,
 * time.c): they read the 64-bit time and, when its seconds do not fit a 32-bit
 * time_t (after 2038-01-19T03:14:07Z), fail with EOVERFLOW and return -1
 * without writing the result. The real clock is read through
 * dlsym(RTLD_NEXT, ...).
 *
 * Under qemu-user the guest's dynamic loader honours LD_PRELOAD (qemu-*-static
 * is itself static); the tests hand it over with QEMU_SET_ENV so the host's
 * shell running the wrapper script does not try to preload an ARM library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>

#if defined(_TIME_BITS) && _TIME_BITS == 64 && !defined(__LP64__)
#error "build this shim without _TIME_BITS=64: it defines the 32-bit time_t entry points"
#endif

/* A 32-bit target whose glibc has the *64 entry points (glibc 2.34+). */
#if !defined(__LP64__) && __SIZEOF_POINTER__ == 4
#define SHIM_TIME64 1
#endif

static int64_t shift_seconds(void) {
    static int64_t cached;
    static int known;
    if (!known) {
        const char *s = getenv("POSTERN_TEST_CLOCK_SHIFT");
        cached = s ? strtoll(s, NULL, 10) : 0;
        known = 1;
    }
    return cached;
}

static int report_synchronised(void) {
    const char *s = getenv("POSTERN_TEST_CLOCK_SYNCHRONISED");
    return s && strcmp(s, "1") == 0;
}

static void *real(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) abort();
    return f;
}

#ifdef SHIM_TIME64

/* glibc's struct __timespec64 and __timeval64 on a 32-bit little-endian target. */
struct shim_timespec64 { int64_t tv_sec; int32_t tv_nsec; int32_t pad; };
struct shim_timeval64 { int64_t tv_sec; int64_t tv_usec; };

int __clock_gettime64(clockid_t id, struct shim_timespec64 *tp) {
    static int (*next)(clockid_t, struct shim_timespec64 *);
    if (!next) next = real("__clock_gettime64");
    int r = next(id, tp);
    if (r == 0 && id == CLOCK_REALTIME) tp->tv_sec += shift_seconds();
    return r;
}

int __gettimeofday64(struct shim_timeval64 *tv, void *tz) {
    struct shim_timespec64 ts;
    if (tz) memset(tz, 0, sizeof(struct timezone));
    if (__clock_gettime64(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

int64_t __time64(int64_t *t) {
    struct shim_timespec64 ts;
    if (__clock_gettime64(CLOCK_REALTIME, &ts) != 0) return -1;
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}

static int fits_time32(int64_t s) { return s >= INT32_MIN && s <= INT32_MAX; }

/* The 32-bit time_t entry points, as glibc 2.36's __clock_gettime: read the
   64-bit time; EOVERFLOW and -1 when it does not fit. */
int clock_gettime(clockid_t id, struct timespec *tp) {
    struct shim_timespec64 ts;
    int r = __clock_gettime64(id, &ts);
    if (r == 0) {
        if (!fits_time32(ts.tv_sec)) {
            errno = EOVERFLOW;
            return -1;
        }
        tp->tv_sec = (time_t)ts.tv_sec;
        tp->tv_nsec = ts.tv_nsec;
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct shim_timeval64 t;
    if (__gettimeofday64(&t, tz) != 0) return -1;
    if (!fits_time32(t.tv_sec)) {
        errno = EOVERFLOW;
        return -1;
    }
    tv->tv_sec = (time_t)t.tv_sec;
    tv->tv_usec = (suseconds_t)t.tv_usec;
    return 0;
}

time_t time(time_t *t) {
    int64_t s = __time64(NULL);
    if (s == -1) return -1;
    if (!fits_time32(s)) {
        errno = EOVERFLOW;
        return (time_t)-1;
    }
    if (t) *t = (time_t)s;
    return (time_t)s;
}

/* adjtimex of a _TIME_BITS=64 binary. Only the fields Postern reads are set
   (the return value and status; the caller zeroes the struct): modes, a pad
   word, four 64-bit fields, then status. */
struct shim_timex64_head { unsigned modes; int32_t pad; int64_t offset, freq, maxerror, esterror; int status; };

int ___adjtimex64(struct shim_timex64_head *tx) {
    static int (*next)(struct shim_timex64_head *);
    if (!report_synchronised()) {
        if (!next) next = real("___adjtimex64");
        return next(tx);
    }
    tx->status = 0;
    return TIME_OK;
}

#else /* a 64-bit target: time_t is 64 bits */

int clock_gettime(clockid_t id, struct timespec *tp) {
    static int (*next)(clockid_t, struct timespec *);
    if (!next) next = real("clock_gettime");
    int r = next(id, tp);
    if (r == 0 && id == CLOCK_REALTIME) tp->tv_sec += shift_seconds();
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    if (tz) memset(tz, 0, sizeof(struct timezone));
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *t) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}

#endif

/* adjtimex with the target's default struct timex (the only one on a 64-bit
   target; a 32-bit time_t binary's on armv7). */
int adjtimex(struct timex *tx) {
    static int (*next)(struct timex *);
    if (!report_synchronised()) {
        if (!next) next = real("adjtimex");
        return next(tx);
    }
    tx->status = 0;
    return TIME_OK;
}
