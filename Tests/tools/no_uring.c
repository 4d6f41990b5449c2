/* An LD_PRELOAD shim for Tests/blackbox/test_sync_ring.py: io_uring_setup(2),
   made through glibc's syscall(3) as the daemon makes it, fails with the errno
   in $NO_URING_ERRNO (default ENOSYS, as on a kernel without io_uring; EPERM is
   what a seccomp filter or kernel.io_uring_disabled = 2 gives). Every other
   system call goes through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/syscall.h>

long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == __NR_io_uring_setup) {
        const char *e = getenv("NO_URING_ERRNO");
        errno = e ? atoi(e) : ENOSYS;
        return -1;
    }
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
