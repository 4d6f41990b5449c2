// Child processes for the poll loop: a program run without a shell with its output
// on two non-blocking pipes, a name lookup in a forked child, and the non-blocking
// reaping and killing of both. Mechanism only: when to kill, how long to wait and
// what a result means is decided in Swift (ChildProcess.swift, AsyncResolver.swift).
#ifndef POSTERN_CL_PROCESS_H
#define POSTERN_CL_PROCESS_H

#include <stddef.h>

/// A program started by cl_spawn: its pid (also its process group id) and the read
/// ends of its standard output and standard error, non-blocking and close-on-exec.
typedef struct {
    int pid;
    int stdout_fd;
    int stderr_fd;
} cl_child;

/// posix_spawnp(3) of argv[0] (searched in PATH when it has no '/') with the
/// NULL-terminated `argv` and the daemon's environment, no shell. In the child:
/// stdin is `stdin_fd` when it is 0 or more (a drop file for `postern pickup`),
/// else /dev/null; stdout and stderr are the write ends of two pipes, every
/// other descriptor is closed (whatever its close-on-exec flag), the signal mask is
/// empty and every signal has its default action (the daemon blocks SIGTERM, SIGINT
/// and SIGHUP for its signalfd and ignores SIGPIPE; a child must not inherit that),
/// and it leads a new process group, so cl_kill_group reaches everything it starts.
/// Returns 0 and fills `out`, or an errno value: glibc reports a failed exec (ENOENT,
/// EACCES, ...) here, so there is no separate error pipe.
int cl_spawn(char *const argv[], int stdin_fd, cl_child *out);

/// A reaped child's status: kind 1 = exited with `value` as its exit status,
/// kind 2 = killed by signal `value`.
typedef struct {
    int kind;
    int value;
} cl_exit_status;

#define CL_EXITED 1
#define CL_SIGNALED 2

/// waitpid(pid, WNOHANG), EINTR retried. Returns 1 when the child was reaped
/// (`status` filled), 0 when it is still running, -1 with errno (ECHILD: no such
/// child, or already reaped).
int cl_reap(int pid, cl_exit_status *status);

/// kill(-pgid, sig): the signal to every process of the group. Returns 0 or -1 with errno.
int cl_kill_group(int pgid, int sig);

/// fork(2)s a child that resolves `host` with getaddrinfo(3) (AF_UNSPEC,
/// SOCK_STREAM, AI_ADDRCONFIG), writes one record (below) to a pipe and _exits.
/// Returns the child's pid and sets *read_fd to the pipe's read end (non-blocking,
/// close-on-exec), or -1 with errno. The child gets PR_SET_PDEATHSIG = SIGKILL (it
/// dies with the daemon) and closes every descriptor but stdio and the pipe before
/// it looks anything up, so it never holds a listening socket, a client connection
/// or a spool file for longer than the few instructions after fork.
///
/// The record, every integer a 32-bit int in host byte order:
///   word 0  CL_RESOLVE_MAGIC
///   word 1  0 for addresses, else getaddrinfo's (non-zero) error code
///   word 2  addresses: their count n, 1 ... CL_RESOLVE_MAX;
///           error: the byte length n of its text, 0 ... CL_RESOLVE_TEXT_MAX
///   then    n cl_ip_endpoint structs (family 4 or 6, the port, 16 address bytes;
///           in getaddrinfo's order) or the n bytes of gai_strerror's text
/// It is one write(2) of at most 12 + 16 * sizeof(cl_ip_endpoint) bytes (under
/// PIPE_BUF); the reader checks every field and the exact length before use.
int cl_resolve_fork(const char *host, int port, int *read_fd);

#define CL_RESOLVE_MAGIC 0x50525331  /* "PRS1" */
#define CL_RESOLVE_MAX 16
#define CL_RESOLVE_TEXT_MAX 200

/// explicit_bzero(3): zeroes memory in a way the compiler may not drop (secrets
/// printed by a password command).
void cl_wipe(void *p, size_t n);

#endif
