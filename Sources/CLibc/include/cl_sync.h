// The spool's sync helper (issue 11 item 3): a child process that runs
// fdatasync(2) and fsync(2) for the daemon, so the poll loop never waits for a
// sync (5-50 ms on an SD card). Mechanism only; when to sync, and what a result
// promises, is decided in Swift (SyncHelper.swift, Spool.swift).
//
// The daemon and the helper talk over a SOCK_SEQPACKET socket pair: the helper
// first says it is ready (an answer of 0), then, for each request the daemon
// sends (the descriptors to sync attached as SCM_RIGHTS), syncs them all, closes
// its copies and answers once. One request is outstanding at a time.
#ifndef POSTERN_CL_SYNC_H
#define POSTERN_CL_SYNC_H

#include <stdint.h>

/// Descriptors one request may carry (segments, then the spool directory).
#define CL_SYNC_MAX_FDS 32

/// Starts the helper: a fork of the daemon whose end of a new socket pair is its
/// standard input, with /dev/null as standard output and error, no other
/// descriptor, an empty signal mask, SIGTERM, SIGINT and SIGHUP ignored (the
/// daemon decides when it is done: at its exit the socket closes) and
/// PR_SET_PDEATHSIG, so it dies with the daemon whatever kills that. Stores the
/// daemon's end (non-blocking, close-on-exec) in *sock. Returns the child's pid,
/// or -1 with errno.
int cl_sync_helper_start(int *sock);

/// Sends a request: fdatasync `files[0..<n]`, then fsync `directory_fd` when it
/// is 0 or more. Returns 0 or -1 with errno (EINVAL for more than
/// CL_SYNC_MAX_FDS descriptors).
int cl_sync_send(int sock, const int *files, int n, int directory_fd);

/// Reads the next answer (the first is the helper's ready message): 1 with *error set (0 when every
/// sync succeeded); 0 when none has come yet (only when `wait` is 0); -1 with
/// errno when the helper is gone (EPIPE at end of file) or the socket failed.
/// With `wait` 1 it blocks until the answer or the helper's end.
int cl_sync_receive(int sock, int wait, int *error);

#endif
