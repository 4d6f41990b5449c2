// Local submission (cl_local.h): the public submission socket, SO_PEERCRED, the
// user database, drop-directory files and inotify.
#define _GNU_SOURCE
#include "clibc.h"

#include <pwd.h>
#include <sys/inotify.h>
#include <sys/un.h>

int cl_listen_unix_mode(const char *path, int backlog, unsigned mode) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* Created owner-only, then opened up: no moment with a wider mode than asked. */
    mode_t old = umask(0077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc == 0) rc = chmod(path, (mode_t)mode);
    if (rc != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cl_is_listening_unix(int fd) {
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) return 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0) return 0;
    return ss.ss_family == AF_UNIX;
}

int cl_unix_socket_path(int fd, char *buf, size_t len) {
    struct sockaddr_un sa;
    socklen_t salen = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0 || sa.sun_family != AF_UNIX) return -1;
    if (salen <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == 0) return -1;
    size_t n = strnlen(sa.sun_path, sizeof sa.sun_path);
    if (n + 1 > len) return -1;
    memcpy(buf, sa.sun_path, n);
    buf[n] = 0;
    return (int)n;
}

int cl_peer_credentials(int fd, cl_peer_cred *out) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    out->pid = (int32_t)cred.pid;
    out->uid = (uint32_t)cred.uid;
    out->gid = (uint32_t)cred.gid;
    return 0;
}

static int lookup(uint32_t uid, struct passwd *pw, char *scratch, size_t scratch_len) {
    struct passwd *found = NULL;
    int rc = getpwuid_r((uid_t)uid, pw, scratch, scratch_len, &found);
    return rc == 0 && found != NULL ? 0 : -1;
}

int cl_user_name(uint32_t uid, char *buf, size_t len) {
    struct passwd pw;
    char scratch[4096];
    if (lookup(uid, &pw, scratch, sizeof scratch) != 0 || !pw.pw_name) return -1;
    size_t n = strlen(pw.pw_name);
    if (n == 0 || n + 1 > len) return -1;
    memcpy(buf, pw.pw_name, n + 1);
    return (int)n;
}

int cl_user_full_name(uint32_t uid, char *buf, size_t len) {
    struct passwd pw;
    char scratch[4096];
    if (lookup(uid, &pw, scratch, sizeof scratch) != 0) return -1;
    const char *g = pw.pw_gecos ? pw.pw_gecos : "";
    size_t n = strcspn(g, ",");
    if (n + 1 > len) n = len - 1;
    memcpy(buf, g, n);
    buf[n] = 0;
    return (int)n;
}

uint32_t cl_getuid(void) { return (uint32_t)getuid(); }
uint32_t cl_geteuid(void) { return (uint32_t)geteuid(); }

int cl_host_name(char *buf, size_t len) {
    if (len == 0 || gethostname(buf, len) != 0) return -1;
    buf[len - 1] = 0;
    return (int)strlen(buf);
}

static void facts(const struct stat *st, cl_file_facts *out) {
    out->uid = (uint32_t)st->st_uid;
    out->mode = (uint32_t)st->st_mode;
    out->nlink = (uint64_t)st->st_nlink;
    out->size = (int64_t)st->st_size;
    out->mtime = (int64_t)st->st_mtime;
}

int cl_open_drop_file(int dir_fd, const char *name, cl_file_facts *out) {
    int fd;
    do {
        fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -1;
    struct stat st;
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) != 0 || flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    facts(&st, out);
    return fd;
}

int cl_open_directory(const char *path) {
    int fd;
    do { fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); } while (fd < 0 && errno == EINTR);
    return fd;
}

int cl_open_directory_path(const char *path) {
    int fd;
    do { fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC); } while (fd < 0 && errno == EINTR);
    return fd;
}

int cl_sync_entry(const char *dir, int file_fd) {
    if (cl_sync_directory(dir) == 0) return 0;
    if (errno != EACCES && errno != EPERM) return -1;
    return syncfs(file_fd);
}

int cl_stat_at(int dir_fd, const char *name, cl_file_facts *out) {
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    facts(&st, out);
    return 0;
}

int cl_unlink_at(int dir_fd, const char *name) { return unlinkat(dir_fd, name, 0); }

int cl_rename_at(int dir_fd, const char *from, const char *to) { return renameat(dir_fd, from, dir_fd, to); }

int cl_inotify_directory(const char *path) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, path, IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cl_inotify_drain(int fd) {
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) { total += (int)n; if (total > (1 << 20)) return total; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return total;
        return n == 0 ? total : -1;
    }
}

int cl_stat_path(const char *path, uint32_t *mode, uint32_t *uid, uint32_t *gid) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *mode = (uint32_t)st.st_mode;
    *uid = (uint32_t)st.st_uid;
    *gid = (uint32_t)st.st_gid;
    return 0;
}

int cl_make_directory(const char *path, unsigned mode) {
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (lstat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    if ((st.st_mode & 07777) == mode) return 0;
    return chmod(path, (mode_t)mode);
}

int64_t cl_wall_nanoseconds(void) {
    struct timespec ts = {0, 0};
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cl_create_at(int dir_fd, const char *name, unsigned mode) {
    int fd;
    do {
        fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -1;
    if (fchmod(fd, (mode_t)mode) != 0) {
        int saved = errno;
        close(fd);
        unlinkat(dir_fd, name, 0);
        errno = saved;
        return -1;
    }
    return fd;
}
