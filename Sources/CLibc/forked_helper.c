// The fork of a helper process (forked_helper.h).
#define _GNU_SOURCE
#include "forked_helper.h"
#include "clibc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

int cl_fork_helper(int *sock, int (*helper_main)(void)) {
    if (!sock) { errno = EINVAL; return -1; }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    /* Our end at 3 or above (with stdio closed it could be 0, where the child's
       end goes) and non-blocking: the loop polls it. */
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
        /* Only async-signal-safe calls from here on, and _exit: the daemon's
           atexit handlers and buffers are not the helper's. Its end of the pair
           becomes standard input, standard output and error /dev/null, and
           everything else is closed: the spool lock above all (a copy living on
           here would keep a restarted daemon out of its spool), and client
           sockets (a copy would keep a closed connection open). */
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
        /* The helper dies with the daemon, and only with it: the daemon's
           stop and reload signals (sent to the whole unit, or typed at a
           terminal to the process group) are not its. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* The daemon may have died before PR_SET_PDEATHSIG took effect. */
        if (getppid() != parent) _exit(1);
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        _exit(helper_main());
    }
    close(sv[1]);
    *sock = sv[0];
    return (int)pid;
}
