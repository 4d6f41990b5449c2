// TLS toward the upstream over OpenSSL, for a non-blocking socket in the poll
// loop. OpenSSL's types stay behind two opaque handles so Swift never imports
// OpenSSL's headers (several of its calls are macros Swift cannot see, e.g.
// SSL_set_tlsext_host_name). Only mechanics live here: the policy — which
// failure means what, what to log, when to retry — is in Swift.
#ifndef POSTERN_CL_TLS_H
#define POSTERN_CL_TLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cl_tls_context cl_tls_context;
typedef struct cl_tls cl_tls;

/// Results of handshake, read, write and shutdown.
enum {
    CL_TLS_DONE = 0,
    /// Call again when the socket is readable.
    CL_TLS_WANT_READ = 1,
    /// Call again when the socket is writable.
    CL_TLS_WANT_WRITE = 2,
    /// The peer closed the connection (close_notify or end of stream).
    CL_TLS_CLOSED = 3,
    /// Failed for good: see cl_tls_failure and cl_tls_verify_error.
    CL_TLS_FAILED = -1,
};

/// A client context: TLS 1.2 at least, peer verification on, partial writes and
/// SSL_MODE_RELEASE_BUFFERS (an idle connection holds no record buffers).
/// Trust comes from `ca_file` (a PEM bundle, read now) when given, else from the
/// hashed directory `ca_dir` (certificates looked up by subject hash when a chain
/// needs them, so the system store is never parsed whole). `cert_file` and
/// `key_file` (both or neither) are the client certificate chain and its key.
/// Returns NULL and a sentence in `error` on failure.
cl_tls_context *cl_tls_client_context(const char *ca_file, const char *ca_dir, const char *cert_file,
                                      const char *key_file, char *error, size_t error_len);
void cl_tls_context_free(cl_tls_context *ctx);

/// A server context for clients that start TLS with us (RFC 3207 STARTTLS, or
/// implicit TLS on a `listen_tls` port, RFC 8314 §3.3): the certificate chain
/// `cert_file` and its key `key_file` (PEM, read now, so a renewed certificate
/// counts from the next context: the daemon makes one at start and at each
/// reload), TLS `min_version` (10, 11, 12 or 13) at least. For 1.0 and 1.1 the
/// OpenSSL security level is lowered to 0, without which OpenSSL 3 refuses
/// those versions (their handshakes sign with SHA-1). No session cache (a
/// board keeps no per-client state); stateless tickets still resume. Same modes
/// as the client context. Returns NULL and a sentence in `error` on failure.
cl_tls_context *cl_tls_server_context(const char *cert_file, const char *key_file, int min_version, char *error,
                                      size_t error_len);

/// Facts about a server context's certificate for the start-up log.
typedef struct {
    char subject[256];
    int64_t not_after;
} cl_tls_cert_info;
int cl_tls_context_cert_info(const cl_tls_context *ctx, cl_tls_cert_info *out);

/// A server connection over the accepted non-blocking socket `fd`. The
/// connection holds its own reference to the context's OpenSSL context, so the
/// daemon may free or replace the context (a reload) while it runs.
cl_tls *cl_tls_server(cl_tls_context *ctx, int fd);

/// The negotiated protocol ("TLSv1.3") and cipher, once the handshake is done.
const char *cl_tls_protocol(const cl_tls *t);
const char *cl_tls_cipher(const cl_tls *t);

/// Decrypted bytes OpenSSL holds already: they must be read before waiting
/// for the socket, which may never become readable for them.
int cl_tls_pending(const cl_tls *t);

/// A client connection over the connected non-blocking socket `fd`.
/// `server_name` is sent as SNI (RFC 6066 §3, host names only) and, when
/// `verify` is set and no pin is given, checked against the certificate (a host
/// name or, when `name_is_ip`, an IP address). With `spki_sha256` (32 bytes) the
/// pinned public key is the trust anchor, as Postfix's fingerprint level: the
/// chain and the name are not checked, the leaf's key must match and its dates
/// must hold. With `verify` = 0 nothing is checked. Returns NULL on allocation
/// failure.
cl_tls *cl_tls_client(cl_tls_context *ctx, int fd, const char *server_name, int name_is_ip, int verify,
                      const unsigned char *spki_sha256);

int cl_tls_handshake(cl_tls *t);
/// SSL_read_ex: CL_TLS_DONE with *done > 0, or a want, CLOSED or FAILED.
int cl_tls_read(cl_tls *t, void *buf, size_t len, size_t *done);
/// SSL_write_ex with partial writes: CL_TLS_DONE with *done > 0, or a want or FAILED.
int cl_tls_write(cl_tls *t, const void *buf, size_t len, size_t *done);
/// Sends close_notify once, without waiting for the peer's.
void cl_tls_shutdown(cl_tls *t);
void cl_tls_free(cl_tls *t);

/// Why the last call failed, in OpenSSL's or the kernel's words ("" if none).
const char *cl_tls_failure(const cl_tls *t);
/// The first certificate check that failed: an X509_V_ERR_* code (0 for none)
/// and the depth in the chain (0 = the upstream's own certificate).
long cl_tls_verify_error(const cl_tls *t, int *depth);
/// OpenSSL's words for an X509_V_ERR_* code.
const char *cl_tls_verify_error_text(long code);
/// 1 when a pin was given and the upstream's key did not match it.
int cl_tls_pin_mismatch(const cl_tls *t);

/// What the upstream presented, for logs and `postern probe`.
typedef struct {
    char subject[256];
    char issuer[256];
    /// Seconds since the epoch (UTC).
    int64_t not_before;
    int64_t not_after;
    /// SHA-256 of the DER SubjectPublicKeyInfo: what `fingerprint =` pins.
    unsigned char spki_sha256[32];
    char protocol[16];
    char cipher[64];
} cl_tls_peer;

/// Fills `out` from the upstream's certificate (also after a failed check, when
/// the certificate was received). Returns 0, or -1 when there is none.
int cl_tls_peer_info(const cl_tls *t, cl_tls_peer *out);

#endif
