// Password hashes through libxcrypt's crypt(3) (issue 12 item 2): checking a
// password against an `auth_users` hash, making a new hash for `postern
// passwd`, and the checker process that runs the checks off the daemon's loop.
// Mechanism only; which hash, what a result means and when to check in the
// loop instead is decided in Swift (PasswordChecker.swift, Passwd.swift).
//
// The daemon and the checker talk over a SOCK_SEQPACKET socket pair: the
// checker first says it is ready (an answer with id 0 and result 0), then, for
// each request (an id, a hash and a password), answers once with the id and
// the result. The daemon keeps one request outstanding at a time.
#ifndef POSTERN_CL_CRYPT_H
#define POSTERN_CL_CRYPT_H

#include <stddef.h>
#include <stdint.h>

/// The longest hash a request carries, in octets (AuthUsers.maxHashLength).
#define CL_CRYPT_MAX_HASH 512
/// The longest password a request carries, in octets (RFC 4616 §2: 255).
#define CL_CRYPT_MAX_PASSWORD 255
/// The largest output of crypt_rn and of cl_crypt_make (libxcrypt's
/// CRYPT_OUTPUT_SIZE, with its NUL).
#define CL_CRYPT_OUTPUT_SIZE 384

/// Checks `password[0..<len]` against the crypt(3) string `hash` (NUL
/// terminated). Returns 1 when they match, 0 when they do not (a password
/// holding a NUL octet, or longer than CL_CRYPT_MAX_PASSWORD, cannot match), -1
/// when the hash cannot be checked (unsupported or invalid setting, out of
/// memory; errno set). The 32 KiB `struct crypt_data` is on the heap, never on
/// the caller's stack; it and the copy of the password are wiped
/// (explicit_bzero) before returning. The final comparison takes the same time
/// wherever the first difference is.
int cl_crypt_check(const char *password, size_t len, const char *hash);

/// Makes a crypt(3) string for `password[0..<len]`: a random salt from the OS
/// with the scheme's default cost (crypt_gensalt_rn(prefix, 0, NULL, 0)), then
/// crypt_rn. `prefix` is "$y$" (yescrypt) or "$6$" (SHA-512-crypt). Writes the
/// NUL-terminated string to out (at most out_len octets, CL_CRYPT_OUTPUT_SIZE is
/// enough). Returns 0, or -1 with errno (EINVAL: a NUL in the password, a
/// password longer than CL_CRYPT_MAX_PASSWORD, an unknown prefix; ERANGE: out
/// too small).
int cl_crypt_make(const char *password, size_t len, const char *prefix, char *out, size_t out_len);

/// Starts the checker: a fork of the daemon whose end of a new socket pair is
/// its standard input, /dev/null as standard output and error, no other
/// descriptor, an empty signal mask, SIGTERM, SIGINT and SIGHUP ignored and
/// PR_SET_PDEATHSIG (as the sync helper, cl_sync.h). Stores the daemon's end
/// (non-blocking, close-on-exec) in *sock. Returns the child's pid, or -1 with
/// errno.
int cl_crypt_helper_start(int *sock);

/// Sends one request without blocking. The copy of the password made for the
/// message is wiped before returning. Returns 0, or -1 with errno (EINVAL: a
/// hash or password too long, or id 0, which is the ready message's; EAGAIN:
/// the socket is full).
int cl_crypt_send(int sock, uint32_t id, const char *hash, size_t hash_len,
                  const char *password, size_t password_len);

/// Reads the next answer (the first is the checker's ready message, id 0): 1
/// with *id and *result (1 match, 0 no match, -1 cannot check) set; 0 when none
/// has come yet (only when `wait` is 0); -1 with errno when the checker is gone
/// (EPIPE at end of file), sent something malformed (EPROTO) or the socket
/// failed. With `wait` 1 it blocks until an answer or the checker's end.
int cl_crypt_receive(int sock, int wait, uint32_t *id, int *result);

// --- postern passwd ---------------------------------------------------------

/// Reads one line from the terminal on `fd` without echo (termios: ECHO off,
/// ECHONL on, so the Enter still shows), after writing `prompt` to standard
/// error. Echo is restored before returning, and also when SIGINT, SIGTERM,
/// SIGHUP or SIGQUIT arrives meanwhile (the signal then does what it would
/// have done). Stores at most `cap` octets (without the LF) in buf and their
/// count in *len. Returns 0; 1 when the line was longer than `cap` (the rest
/// is read and dropped, buf wiped); -1 with errno (ENOTTY: fd is not a
/// terminal; EPIPE: end of file before a LF).
int cl_read_password_tty(int fd, const char *prompt, char *buf, size_t cap, size_t *len);

/// Replaces the file at `path` with `data[0..<len]` atomically: a new file in
/// the same directory (O_EXCL, mode 0600), then, when `path` exists, the old
/// file's permission bits and owner (fchown only when they differ from the
/// new file's), write, fsync, rename over `path`, fsync of the directory. A
/// new file gets mode 0600. The new file is removed on any failure. Returns
/// 0, or -1 with errno and *step naming the call that failed.
int cl_replace_file(const char *path, const void *data, size_t len, const char **step);

/// The peak resident set size (VmHWM) of process `pid` (0: this process), in
/// KiB, from /proc; -1 when it cannot be read. For measurements and tests.
long cl_process_peak_rss_kib(int pid);

#endif
