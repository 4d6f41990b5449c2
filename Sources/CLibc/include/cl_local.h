// Local submission (issue 9): the submission socket any local user may connect to,
// the kernel's word on who connected (SO_PEERCRED), the drop directory's files
// and the inotify watch on it. Mechanism only; policy is in Swift
// (LocalListener.swift, MailDrop.swift, LocalSubmission.swift).
#ifndef POSTERN_CL_LOCAL_H
#define POSTERN_CL_LOCAL_H

#include <stddef.h>
#include <stdint.h>

/// A listening AF_UNIX stream socket at `path`, non-blocking and close-on-exec,
/// with the socket file's mode set to `mode` after bind (0666: every local user
/// may connect, as to Postfix's public/pickup). Returns the fd or -1 with errno.
int cl_listen_unix_mode(const char *path, int backlog, unsigned mode);

/// 1 when `fd` is a listening AF_UNIX stream socket, else 0.
int cl_is_listening_unix(int fd);

/// The path an AF_UNIX socket is bound to, into `buf` (NUL-terminated). Returns
/// its length, or -1 (not AF_UNIX, abstract or unnamed, or too long).
int cl_unix_socket_path(int fd, char *buf, size_t len);

/// The connecting process of an AF_UNIX stream socket, as the kernel recorded it
/// at connect(2) (SO_PEERCRED, unix(7)): never what the client says.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} cl_peer_cred;

/// getsockopt(SO_PEERCRED). Returns 0 or -1 with errno.
int cl_peer_credentials(int fd, cl_peer_cred *out);

/// The login name of `uid` (getpwuid_r(3)) into `buf`, NUL-terminated. Returns
/// its length, or -1 when there is none (or it does not fit).
int cl_user_name(uint32_t uid, char *buf, size_t len);

/// The full name of `uid`: the GECOS field up to its first comma, with '&'
/// left as it is. Returns its length (0 when empty) or -1.
int cl_user_full_name(uint32_t uid, char *buf, size_t len);

/// getuid(2), geteuid(2).
uint32_t cl_getuid(void);
uint32_t cl_geteuid(void);

/// gethostname(2) into `buf`, NUL-terminated. Returns its length or -1.
int cl_host_name(char *buf, size_t len);

/// What open of a drop file found (fstat(2) of the opened descriptor).
typedef struct {
    uint32_t uid;
    uint32_t mode;      /* st_mode */
    uint64_t nlink;
    int64_t size;
    int64_t mtime;      /* seconds */
} cl_file_facts;

/// open(2) of `name` inside the directory `dir_fd` (openat) read-only,
/// O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC (a symbolic link or a FIFO planted in a
/// world-writable directory never makes the daemon follow it or wait), then
/// fstat(2). Returns the fd (blocking again) or -1 with errno.
int cl_open_drop_file(int dir_fd, const char *name, cl_file_facts *out);

/// open(2) of a directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC. Returns the fd or -1.
int cl_open_directory(const char *path);

/// open(2) of a directory with O_PATH | O_DIRECTORY | O_CLOEXEC: enough to create,
/// rename and remove files in it (openat, renameat, unlinkat) without the read
/// permission a user lacks on the drop directory. Returns the fd or -1.
int cl_open_directory_path(const char *path);

/// Makes a rename in `dir` durable: fsync(2) of the directory, or, when the
/// caller may not open it for reading (a local user and the drop directory),
/// syncfs(2) of the file system through `file_fd`. Returns 0 or -1 with errno.
int cl_sync_entry(const char *dir, int file_fd);

/// fstatat(2) of `name` in `dir_fd` without following a link: 0 and `out`, or -1.
int cl_stat_at(int dir_fd, const char *name, cl_file_facts *out);

/// unlinkat(2), renameat(2) within one directory. 0 or -1 with errno.
int cl_unlink_at(int dir_fd, const char *name);
int cl_rename_at(int dir_fd, const char *from, const char *to);

/// An inotify descriptor (non-blocking, close-on-exec) watching `path` for
/// files renamed into it (IN_MOVED_TO) and the directory going away. Returns the
/// fd or -1 with errno.
int cl_inotify_directory(const char *path);

/// Reads and discards every pending inotify event. Returns how many bytes were
/// read (0: none), or -1 with errno (EAGAIN is 0).
int cl_inotify_drain(int fd);

/// fstat(2) of a path: mode, owner and group of a directory, for the start-up
/// check of the drop directory. Returns 0 or -1 with errno.
int cl_stat_path(const char *path, uint32_t *mode, uint32_t *uid, uint32_t *gid);

/// mkdir(2) then chmod(2) to exactly `mode` (mkdir is subject to the umask and
/// does not set the setgid or sticky bits on every system). An existing
/// directory is only chmod'ed. Returns 0 or -1 with errno.
int cl_make_directory(const char *path, unsigned mode);

/// CLOCK_REALTIME in nanoseconds since the epoch (drop file names sort by it).
int64_t cl_wall_nanoseconds(void);

/// open(2) of a new file `name` in the directory `dir_fd` for writing: O_CREAT |
/// O_EXCL | O_NOFOLLOW | O_CLOEXEC, then fchmod(2) to `mode` whatever the umask.
/// Returns the fd or -1 with errno.
int cl_create_at(int dir_fd, const char *name, unsigned mode);

#endif
