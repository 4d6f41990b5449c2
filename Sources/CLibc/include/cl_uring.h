// The spool's syncs through io_uring (issue 11 item 3): fdatasync(2) of segments
// and fsync(2) of the spool directory issued without waiting, their completions
// signalled to the poll loop through an eventfd. Mechanism only; when to sync,
// and what a completed one promises, is decided in Swift (SyncRing.swift,
// Spool.swift). Where io_uring is missing or refused (a kernel before 5.1, a
// seccomp filter, io_uring_disabled), the daemon falls back to the sync helpers
// (cl_sync.h).
//
// The spool's unlinks of finished segments go through a ring of their own the
// same way (SegmentUnlinker.swift): freeing a 4 MiB file's blocks took 2–5 ms
// of the loop on ext4.
//
// No liburing: the three system calls and the two rings are used directly, each
// request one IORING_OP_FSYNC (or IORING_OP_UNLINKAT) tagged with the caller's
// 64-bit tag.
#ifndef POSTERN_CL_URING_H
#define POSTERN_CL_URING_H

#include <stdint.h>

/// Submission queue entries of the sync ring: four batches (`syncCapacity`) of
/// CL_SYNC_MAX_FDS descriptors fit.
#define CL_URING_ENTRIES 128

typedef struct cl_uring cl_uring;

/// Sets up a ring of `entries` submission entries and its eventfd
/// (non-blocking, close-on-exec). NULL with errno (ENOSYS: no io_uring; EPERM:
/// refused by seccomp or io_uring_disabled).
cl_uring *cl_uring_open(unsigned entries);

/// The eventfd: readable once a completion has been posted since the last
/// `cl_uring_clear`.
int cl_uring_event_fd(const cl_uring *ring);

/// Queues fdatasync of `files[0..<n]` and, when `directory_fd` is 0 or more, fsync
/// of it (`n` + 1 requests), all tagged `tag`, and submits them. 0 when every
/// request was queued (some may still wait for the next submit, which
/// `cl_uring_next` retries); -1 with errno when none was (EAGAIN: no room in the
/// queue; anything else: the ring cannot submit).
int cl_uring_sync(cl_uring *ring, const int *files, int n, int directory_fd, uint64_t tag);

/// Queues and submits unlink(2) of `path` (IORING_OP_UNLINKAT, Linux 5.11; an
/// older kernel completes it with -EINVAL), tagged `tag`. `path` need only live
/// through the call. 0 when queued; -1 with errno as for `cl_uring_sync`.
int cl_uring_unlink(cl_uring *ring, const char *path, uint64_t tag);

/// Takes the next completion: 1 with *tag and *result (0, or a negative errno)
/// set; 0 when there is none. With `wait` 1 it blocks until one comes (then 0
/// only when nothing is outstanding or the wait failed).
int cl_uring_next(cl_uring *ring, int wait, uint64_t *tag, int32_t *result);

/// Empties the eventfd (before taking completions, so that one posted after them
/// makes it readable again).
void cl_uring_clear(cl_uring *ring);

/// Unmaps the rings and closes both descriptors.
void cl_uring_close(cl_uring *ring);

#endif
