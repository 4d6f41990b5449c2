// Starting a helper process of the daemon (the sync helpers, the password
// checker): internal to CLibc, not seen by Swift.
#ifndef POSTERN_FORKED_HELPER_H
#define POSTERN_FORKED_HELPER_H

#include <sys/types.h>

/// Forks a helper on the other end of a SOCK_SEQPACKET socket pair. In the
/// child, the pair's end is standard input, standard output and error are
/// /dev/null, every other descriptor is closed, the signal mask is empty, it
/// is killed when the daemon dies (PR_SET_PDEATHSIG), SIGTERM, SIGINT, SIGHUP
/// and SIGPIPE are ignored, and `helper_main()` runs and its result is the
/// exit status. In the
/// daemon, `*sock` is its non-blocking end (3 or above) and the child's pid is
/// returned; -1 with errno on failure.
int cl_fork_helper(int *sock, int (*helper_main)(void));

#endif
