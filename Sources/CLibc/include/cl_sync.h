// The spool's sync helper (issue 11 item 3): a child process that runs
// fdatasync(2) and fsync(2) for the daemon, so the poll loop never waits for a
// sync (5-50 ms on an SD card). Mechanism only; when to sync, and what a result
// promises, is decided in Swift (SyncHelper.swift, Spool.swift).
//
// The daemon and the helper talk over a SOCK_SEQPACKET socket pair: the daemon
// sends one request (a cl_sync_request with the descriptors to sync attached as
// SCM_RIGHTS), the helper syncs them all, closes its copies and answers with one
// cl_sync_reply. One request is outstanding at a time.
#ifndef POSTERN_CL_SYNC_H
#define POSTERN_CL_SYNC_H

#include <stdint.h>

/// Descriptors one request may carry (segments, then the spool directory).
#define CL_SYNC_MAX_FDS 32

/// Starts `exe helper_argument PARENT_PID` (the daemon's own binary,
/// /proc/self/exe, running `postern sync-helper`) with one end of a new socket
/// pair as its standard input, /dev/null as standard output, the daemon's
/// standard error, no other descriptor, an empty signal mask and default signal
/// actions, in the daemon's process group. Stores the daemon's end (non-blocking,
/// close-on-exec) in *sock. Returns the child's pid, or -1 with errno.
int cl_sync_helper_spawn(const char *exe, const char *helper_argument, int *sock);

/// Sends a request: fdatasync `files[0..<n]`, then fsync `directory_fd` when it
/// is 0 or more. Returns 0 or -1 with errno (EINVAL for more than
/// CL_SYNC_MAX_FDS descriptors).
int cl_sync_send(int sock, const int *files, int n, int directory_fd);

/// Reads the answer to the outstanding request: 1 with *error set (0 when every
/// sync succeeded); 0 when none has come yet (only when `wait` is 0); -1 with
/// errno when the helper is gone (EPIPE at end of file) or the socket failed.
/// With `wait` 1 it blocks until the answer or the helper's end.
int cl_sync_receive(int sock, int wait, int *error);

/// The helper's main loop, on standard input (`postern sync-helper PARENT`):
/// dies with the daemon (PR_SET_PDEATHSIG) and at end of file, ignores SIGTERM,
/// SIGINT and SIGHUP (the daemon decides when it is done: at its exit the socket
/// closes). Returns the exit status: 0 at end of file, 64 when standard input is
/// not the daemon's socket or `parent` is not its parent.
int cl_sync_helper_main(int parent);

#endif
