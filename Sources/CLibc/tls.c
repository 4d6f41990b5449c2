// The OpenSSL layer behind cl_tls.h. Every call clears OpenSSL's per-thread
// error queue first, so a failure is always read from this call's errors and
// never from an older one (SSL_get_error(3) requires it).
#include "cl_tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct cl_tls_context {
    SSL_CTX *ctx;
};

struct cl_tls {
    SSL *ssl;
    /// A server connection: failures speak of "the client", not "the upstream".
    int server;
    int verify;
    int has_pin;
    unsigned char pin[32];
    int pin_checked;
    int pin_mismatch;
    long verify_error;
    int verify_depth;
    /// The upstream's certificate as seen by the check, kept for the report
    /// after a failed handshake (OpenSSL drops it then).
    X509 *leaf;
    char failure[256];
};

static void set_text(char *dst, size_t len, const char *text) {
    if (len == 0) return;
    snprintf(dst, len, "%s", text);
}

/// OpenSSL's newest queued error in words, or `fallback`.
static void queue_text(char *dst, size_t len, const char *fallback) {
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        set_text(dst, len, fallback);
        return;
    }
    char buf[200];
    const char *reason = ERR_reason_error_string(e);
    if (reason != NULL) {
        set_text(dst, len, reason);
    } else {
        ERR_error_string_n(e, buf, sizeof buf);
        set_text(dst, len, buf);
    }
}

cl_tls_context *cl_tls_client_context(const char *ca_file, const char *ca_dir, const char *cert_file,
                                      const char *key_file, char *error, size_t error_len) {
    ERR_clear_error();
    set_text(error, error_len, "");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        queue_text(error, error_len, "cannot create a TLS context");
        return NULL;
    }
    // RFC 8996 retired TLS 1.0 and 1.1; every smarthost in use speaks 1.2.
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    char text[200];
    if (ca_file != NULL && ca_file[0] != 0) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            queue_text(text, sizeof text, "unreadable");
            snprintf(error, error_len, "cannot load ca_file %s: %s", ca_file, text);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else if (ca_dir != NULL && ca_dir[0] != 0) {
        if (SSL_CTX_load_verify_dir(ctx, ca_dir) != 1) {
            queue_text(text, sizeof text, "unreadable");
            snprintf(error, error_len, "cannot use the certificate directory %s: %s", ca_dir, text);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    if (cert_file != NULL && cert_file[0] != 0) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            queue_text(text, sizeof text, "unreadable");
            snprintf(error, error_len, "cannot load client_cert %s: %s", cert_file, text);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (key_file == NULL || SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
            queue_text(text, sizeof text, "unreadable");
            snprintf(error, error_len, "cannot load client_key %s: %s", key_file ? key_file : "(none)", text);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(error, error_len, "client_key %s does not belong to client_cert %s", key_file, cert_file);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    cl_tls_context *c = calloc(1, sizeof *c);
    if (c == NULL) {
        SSL_CTX_free(ctx);
        set_text(error, error_len, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    return c;
}

static int proto_version(int v) {
    switch (v) {
    case 10: return TLS1_VERSION;
    case 11: return TLS1_1_VERSION;
    case 13: return TLS1_3_VERSION;
    default: return TLS1_2_VERSION;
    }
}

cl_tls_context *cl_tls_server_context(const char *cert_file, const char *key_file, int min_version, char *error,
                                      size_t error_len) {
    ERR_clear_error();
    set_text(error, error_len, "");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        queue_text(error, error_len, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, proto_version(min_version));
    if (min_version < 12) {
        // OpenSSL 3 at its default level 1 refuses TLS 1.0 and 1.1 outright
        // (they sign the handshake with SHA-1 and MD5); level 0 is what old
        // cameras and printers need, and the warning at start says so.
        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    char text[200];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        queue_text(text, sizeof text, "unreadable");
        snprintf(error, error_len, "cannot load tls_cert %s: %s", cert_file, text);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        queue_text(text, sizeof text, "unreadable");
        snprintf(error, error_len, "cannot load tls_key %s: %s", key_file, text);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(error, error_len, "tls_key %s does not belong to tls_cert %s", key_file, cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    cl_tls_context *c = calloc(1, sizeof *c);
    if (c == NULL) {
        SSL_CTX_free(ctx);
        set_text(error, error_len, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    ERR_clear_error();
    return c;
}

cl_tls *cl_tls_server(cl_tls_context *c, int fd) {
    ERR_clear_error();
    cl_tls *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->ssl = SSL_new(c->ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1) {
        if (t->ssl) SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    t->server = 1;
    SSL_set_app_data(t->ssl, t);
    SSL_set_accept_state(t->ssl);
    return t;
}

int cl_tls_pending(const cl_tls *t) { return SSL_pending(t->ssl) > 0; }

const char *cl_tls_protocol(const cl_tls *t) { return SSL_get_version(t->ssl); }

const char *cl_tls_cipher(const cl_tls *t) {
    const char *c = SSL_get_cipher_name(t->ssl);
    return c ? c : "";
}

static void name_text(const X509_NAME *name, char *out, size_t len);
static int64_t epoch_of(const ASN1_TIME *time);

int cl_tls_context_cert_info(const cl_tls_context *c, cl_tls_cert_info *out) {
    memset(out, 0, sizeof *out);
    X509 *cert = SSL_CTX_get0_certificate(c->ctx);
    if (cert == NULL) return -1;
    name_text(X509_get_subject_name(cert), out->subject, sizeof out->subject);
    out->not_after = epoch_of(X509_get0_notAfter(cert));
    ERR_clear_error();
    return 0;
}

void cl_tls_context_free(cl_tls_context *c) {
    if (c == NULL) return;
    SSL_CTX_free(c->ctx);
    free(c);
}

static int spki_sha256(X509 *cert, unsigned char out[32]) {
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) return -1;
    unsigned int n = 0;
    int ok = EVP_Digest(der, (size_t)len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
    OPENSSL_free(der);
    return ok ? 0 : -1;
}

static int is_date_error(int err) {
    return err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID;
}

/// Called by OpenSSL for each certificate of the chain and each problem found.
/// Returning 0 aborts the handshake before anything of ours is sent.
static int verify_callback(int ok, X509_STORE_CTX *store) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    cl_tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
    if (t == NULL) return ok;
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    if (t->leaf == NULL && leaf != NULL && X509_up_ref(leaf) == 1) t->leaf = leaf;
    if (!t->verify) return 1;
    int err = X509_STORE_CTX_get_error(store);
    int depth = X509_STORE_CTX_get_error_depth(store);
    if (t->has_pin) {
        if (!t->pin_checked && leaf != NULL) {
            unsigned char digest[32];
            t->pin_checked = 1;
            t->pin_mismatch = spki_sha256(leaf, digest) != 0 || memcmp(digest, t->pin, 32) != 0;
        }
        if (t->pin_mismatch) return 0;
        // The pinned key replaces the chain and the name; the leaf's dates count.
        if (!ok && !(depth == 0 && is_date_error(err))) ok = 1;
    }
    if (!ok && t->verify_error == 0) {
        t->verify_error = err;
        t->verify_depth = depth;
    }
    return ok;
}

cl_tls *cl_tls_client(cl_tls_context *c, int fd, const char *server_name, int name_is_ip, int verify,
                      const unsigned char *pin) {
    ERR_clear_error();
    cl_tls *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->ssl = SSL_new(c->ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1) {
        if (t->ssl) SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    t->verify = verify;
    if (pin != NULL) {
        t->has_pin = 1;
        memcpy(t->pin, pin, 32);
    }
    SSL_set_app_data(t->ssl, t);
    SSL_set_connect_state(t->ssl);
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER, verify_callback);
    if (server_name != NULL && server_name[0] != 0) {
        // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted".
        if (!name_is_ip) SSL_set_tlsext_host_name(t->ssl, server_name);
        if (verify && pin == NULL) {
            if (name_is_ip) {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name);
            } else {
                SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                SSL_set1_host(t->ssl, server_name);
            }
        }
    }
    return t;
}

/// Maps SSL_get_error after a call that returned `r` <= 0.
static int outcome(cl_tls *t, int r, const char *what) {
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return CL_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return CL_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        set_text(t->failure, sizeof t->failure,
                 t->server ? "the client closed the TLS connection" : "the upstream closed the TLS connection");
        return CL_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0) {
            if (errno != 0) {
                snprintf(t->failure, sizeof t->failure, "%s: %s", what, strerror(errno));
            } else {
                snprintf(t->failure, sizeof t->failure, "the %s closed the connection during %s",
                         t->server ? "client" : "upstream", what);
            }
            return CL_TLS_FAILED;
        }
        /* fall through */
    default: {
        char text[200];
        queue_text(text, sizeof text, "failed");
        snprintf(t->failure, sizeof t->failure, "%s: %s", what, text);
        return CL_TLS_FAILED;
    }
    }
}

int cl_tls_handshake(cl_tls *t) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) return CL_TLS_DONE;
    int o = outcome(t, r, "TLS handshake");
    if (o == CL_TLS_CLOSED) {
        set_text(t->failure, sizeof t->failure,
                 t->server ? "the client closed the connection during the TLS handshake"
                           : "the upstream closed the connection during the TLS handshake");
        return CL_TLS_FAILED;
    }
    if (o == CL_TLS_FAILED && t->verify_error == 0 && !t->pin_mismatch) {
        long v = SSL_get_verify_result(t->ssl);
        if (v != X509_V_OK && t->verify) t->verify_error = v;
    }
    return o;
}

int cl_tls_read(cl_tls *t, void *buf, size_t len, size_t *done) {
    ERR_clear_error();
    errno = 0;
    *done = 0;
    if (SSL_read_ex(t->ssl, buf, len, done) == 1) return CL_TLS_DONE;
    int o = outcome(t, 0, "TLS read");
    if (o == CL_TLS_FAILED) {
        unsigned long e = ERR_peek_last_error();
        // OpenSSL 3 reports a TCP close without close_notify as an error; to
        // SMTP it is the same as a close (RFC 3207 §4.1 leaves it to the client).
        if (e != 0 && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            set_text(t->failure, sizeof t->failure,
                     t->server ? "the client closed the connection" : "the upstream closed the connection");
            return CL_TLS_CLOSED;
        }
    }
    return o;
}

int cl_tls_write(cl_tls *t, const void *buf, size_t len, size_t *done) {
    ERR_clear_error();
    errno = 0;
    *done = 0;
    if (len == 0) return CL_TLS_DONE;
    if (SSL_write_ex(t->ssl, buf, len, done) == 1) return CL_TLS_DONE;
    return outcome(t, 0, "TLS write");
}

void cl_tls_shutdown(cl_tls *t) {
    if (t == NULL || t->ssl == NULL) return;
    ERR_clear_error();
    if (SSL_is_init_finished(t->ssl)) (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

void cl_tls_free(cl_tls *t) {
    if (t == NULL) return;
    if (t->ssl) SSL_free(t->ssl);
    if (t->leaf) X509_free(t->leaf);
    OPENSSL_cleanse(t, sizeof *t);
    free(t);
    ERR_clear_error();
}

const char *cl_tls_failure(const cl_tls *t) { return t->failure; }

long cl_tls_verify_error(const cl_tls *t, int *depth) {
    if (depth) *depth = t->verify_depth;
    return t->verify_error;
}

const char *cl_tls_verify_error_text(long code) { return X509_verify_cert_error_string(code); }

int cl_tls_pin_mismatch(const cl_tls *t) { return t->pin_mismatch; }

static void name_text(const X509_NAME *name, char *out, size_t len) {
    set_text(out, len, "");
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL) return;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        if (n > 0 && data != NULL) {
            size_t k = (size_t)n < len - 1 ? (size_t)n : len - 1;
            memcpy(out, data, k);
            out[k] = 0;
        }
    }
    BIO_free(b);
}

static int64_t epoch_of(const ASN1_TIME *time) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (time == NULL || ASN1_TIME_to_tm(time, &tm) != 1) return 0;
    return (int64_t)timegm(&tm);
}

int cl_tls_peer_info(const cl_tls *t, cl_tls_peer *out) {
    ERR_clear_error();
    memset(out, 0, sizeof *out);
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    if (cert == NULL) cert = t->leaf;
    if (cert == NULL) return -1;
    name_text(X509_get_subject_name(cert), out->subject, sizeof out->subject);
    name_text(X509_get_issuer_name(cert), out->issuer, sizeof out->issuer);
    out->not_before = epoch_of(X509_get0_notBefore(cert));
    out->not_after = epoch_of(X509_get0_notAfter(cert));
    (void)spki_sha256(cert, out->spki_sha256);
    set_text(out->protocol, sizeof out->protocol, SSL_get_version(t->ssl));
    const char *cipher = SSL_get_cipher_name(t->ssl);
    set_text(out->cipher, sizeof out->cipher, cipher ? cipher : "");
    ERR_clear_error();
    return 0;
}
