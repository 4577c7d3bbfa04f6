/*
 * tls.c — mutual TLS 1.3 over OpenSSL memory BIOs (see net/tls.h for the
 * pump, the states and their invariants).
 *
 * Each connection owns an SSL and two memory BIOs: `in` holds ciphertext
 * the network delivered and SSL has not consumed yet, `out` ciphertext SSL
 * produced and the network has not taken yet. `in` answers "retry" when
 * empty (BIO_set_mem_eof_return -1), so SSL reports WANT_READ instead of
 * an end of stream. Both are bounded by what we let into them: feed stops
 * at INBOX_TLS_IN_BYTES_MAX, writes stop before INBOX_TLS_OUT_BYTES_MAX.
 *
 * Transitions (struct tls_conn.state):
 *   HANDSHAKE -> OPEN    handshake_step, when SSL_do_handshake completes
 *                        and open_check accepts the verified peer.
 *   any -> FAILED        conn_fail, from plaintext sniffing (feed), from
 *                        ssl_fail (an SSL call failed) or open_check.
 * The verify callback runs inside SSL_do_handshake. It is where a peer is
 * judged: it maps the first X.509 failure to an INBOX_E* code and message,
 * and on the leaf certificate it reads the role and common name and
 * checks the role against the allowed set. Returning 0 from it makes
 * OpenSSL abort the handshake and send the peer an alert.
 */
#include "net/tls.h"

#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "inbox/error.h"
#include "inbox/limits.h"

/* TLS record content types a peer's first byte may carry. */
#define TLS_CONTENT_ALERT 0x15
#define TLS_CONTENT_HANDSHAKE 0x16
/* Bytes of a non-TLS opening shown in the error message. */
#define TLS_SNIFF_PREVIEW_BYTES 8u
/* One cluster CA signs leaves directly: chain = leaf + CA. */
#define TLS_VERIFY_DEPTH 1

enum tls_state {
    TLS_STATE_HANDSHAKE = 0,
    TLS_STATE_OPEN = 1,
    TLS_STATE_FAILED = 2,
};

struct tls_ctx {
    SSL_CTX *ssl_ctx;
    enum tls_side side;
    unsigned peer_roles_allowed;
    enum inbox_role own_role;
};

struct tls_conn {
    SSL *ssl;
    BIO *in;  /* network -> SSL; owned by ssl */
    BIO *out; /* SSL -> network; owned by ssl */
    enum tls_side side;
    enum tls_state state;
    unsigned peer_roles_allowed;
    int err;          /* sticky, 0 unless FAILED */
    bool sniffed;     /* the first inbound byte was checked */
    bool peer_closed; /* close_notify received */
    bool close_sent;  /* tls_conn_close was called */
    /* Filled by the verify callback during the handshake; published to
     * peer_role / peer_name only on OPEN. */
    int verify_err;
    enum inbox_role verified_role;
    char verified_name[INBOX_CERT_NAME_BYTES_MAX + 1];
    enum inbox_role peer_role;
    char peer_name[INBOX_CERT_NAME_BYTES_MAX + 1];
    char verify_msg[INBOX_TLS_ERRMSG_BYTES];
    char errmsg[INBOX_TLS_ERRMSG_BYTES];
};

/* ---- messages ----------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
msg_set(char *errmsg, size_t errmsg_bytes, const char *fmt, ...)
{
    if (errmsg == NULL || errmsg_bytes == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, errmsg_bytes, fmt, ap);
    va_end(ap);
}

/* OpenSSL's most recent error reason; clears the thread's error queue. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return reason ? reason : "unknown reason";
}

/* True if any error queued by OpenSSL is an allocation failure: then the
 * rest of the queue is a consequence, and the honest answer is ENOMEM.
 * Empties the queue. */
static bool ossl_out_of_memory(void)
{
    bool oom = false;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            oom = true;
    }
    return oom;
}

/* ---- certificates: role and name ---------------------------------------- */

/* The role in a certificate's subjectAltName URI "inboxd:role=<role>".
 * Exactly one such URI must be present: none, two, or an unknown role all
 * read as INBOX_ROLE_NONE, which no one trusts. */
static enum inbox_role cert_role_of(X509 *cert)
{
    int crit = 0;
    GENERAL_NAMES *gens =
        X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL)
        return INBOX_ROLE_NONE;
    const size_t prefix_len = strlen(INBOX_CERT_ROLE_URI_PREFIX);
    enum inbox_role role = INBOX_ROLE_NONE;
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gen = sk_GENERAL_NAME_value(gens, i);
        if (gen->type != GEN_URI)
            continue;
        const unsigned char *data = ASN1_STRING_get0_data(gen->d.ia5);
        int len = ASN1_STRING_length(gen->d.ia5);
        if (len < 0 || (size_t)len <= prefix_len ||
            memcmp(data, INBOX_CERT_ROLE_URI_PREFIX, prefix_len) != 0)
            continue;
        char name[16];
        size_t name_len = (size_t)len - prefix_len;
        found++;
        if (name_len >= sizeof name ||
            memchr(data + prefix_len, '\0', name_len) != NULL)
            continue;
        memcpy(name, data + prefix_len, name_len);
        name[name_len] = '\0';
        if (cert_role_parse(name, &role) != 0)
            role = INBOX_ROLE_NONE;
    }
    GENERAL_NAMES_free(gens);
    return found == 1 ? role : INBOX_ROLE_NONE;
}

/* Copies the single subject CN into `out` if it passes cert_name_check. */
static int cert_name_of(X509 *cert, char out[INBOX_CERT_NAME_BYTES_MAX + 1])
{
    out[0] = '\0';
    X509_NAME *subject = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx < 0 ||
        X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0)
        return INBOX_EINVAL;
    ASN1_STRING *data =
        X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    int rc = INBOX_EINVAL;
    if (len > 0 && (size_t)len <= INBOX_CERT_NAME_BYTES_MAX &&
        memchr(utf8, '\0', (size_t)len) == NULL) {
        memcpy(out, utf8, (size_t)len);
        out[len] = '\0';
        rc = cert_name_check(out);
    }
    OPENSSL_free(utf8);
    if (rc != 0)
        out[0] = '\0';
    return rc;
}

/* The CN of `name` into `out`, for messages. A refused peer chose these
 * bytes, so anything but printable ASCII (a newline forging a log line, a
 * quote breaking logfmt) becomes '?'. */
static void cn_printable(X509_NAME *name,
                         char out[INBOX_CERT_NAME_BYTES_MAX + 1])
{
    out[0] = '\0';
    if (name != NULL)
        X509_NAME_get_text_by_NID(name, NID_commonName, out,
                                  INBOX_CERT_NAME_BYTES_MAX + 1);
    ERR_clear_error();
    for (char *p = out; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
            *p = '?';
    }
}

/* "CN=fe1" or "(no CN)", for messages. */
static void subject_describe(X509 *cert, char *buf, size_t bytes)
{
    char cn[INBOX_CERT_NAME_BYTES_MAX + 1];
    cn_printable(cert ? X509_get_subject_name(cert) : NULL, cn);
    if (cn[0] == '\0')
        snprintf(buf, bytes, "(no CN)");
    else
        snprintf(buf, bytes, "CN=%s", cn);
}

/* ---- verification ------------------------------------------------------- */

/* Maps an X.509 verification error to an INBOX_E* code. */
static int verify_err_map(int xerr)
{
    switch (xerr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return INBOX_ETLS_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return INBOX_ETLS_HOSTNAME;
    case X509_V_ERR_INVALID_PURPOSE:
        return INBOX_ETLS_ROLE;
    case X509_V_ERR_OUT_OF_MEM:
        return INBOX_ENOMEM;
    default:
        /* Unknown issuer, bad signature, self-signed, chain too long... */
        return INBOX_ETLS_UNTRUSTED;
    }
}

static void verify_fail_record(struct tls_conn *c, X509_STORE_CTX *xs)
{
    int xerr = X509_STORE_CTX_get_error(xs);
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    char who[INBOX_CERT_NAME_BYTES_MAX + 16];
    char issuer[INBOX_CERT_NAME_BYTES_MAX + 1];
    subject_describe(leaf, who, sizeof who);
    cn_printable(leaf ? X509_get_issuer_name(leaf) : NULL, issuer);
    c->verify_err = verify_err_map(xerr);
    const char *what = inbox_strerror(c->verify_err);
    if (xerr == X509_V_ERR_INVALID_PURPOSE)
        what = "peer certificate may not act as a TLS server or client here "
               "(extendedKeyUsage)";
    msg_set(c->verify_msg, sizeof c->verify_msg,
            "%s (%s; peer %s, issued by CN=%s)", what,
            X509_verify_cert_error_string(xerr), who, issuer);
}

/* Judges the leaf once the chain checked out: a readable name and one
 * allowed role. */
static int leaf_check(struct tls_conn *c, X509 *leaf)
{
    char who[INBOX_CERT_NAME_BYTES_MAX + 16];
    subject_describe(leaf, who, sizeof who);
    if (cert_name_of(leaf, c->verified_name) != 0) {
        c->verify_err = INBOX_EUNAUTHENTICATED;
        msg_set(c->verify_msg, sizeof c->verify_msg,
                "peer certificate has no valid common name (%s)", who);
        return 0;
    }
    enum inbox_role role = cert_role_of(leaf);
    if (role == INBOX_ROLE_NONE) {
        c->verify_err = INBOX_ETLS_ROLE;
        msg_set(c->verify_msg, sizeof c->verify_msg,
                "peer certificate carries no inboxd role (%s; expected one "
                "subjectAltName URI %s<node|admin|frontend>)",
                who, INBOX_CERT_ROLE_URI_PREFIX);
        return 0;
    }
    if ((c->peer_roles_allowed & INBOX_ROLE_BIT(role)) == 0) {
        c->verify_err = INBOX_ETLS_ROLE;
        msg_set(c->verify_msg, sizeof c->verify_msg,
                "peer role %s is not allowed on this %s (%s)",
                cert_role_name(role),
                c->side == TLS_SIDE_SERVER ? "listener" : "connection", who);
        return 0;
    }
    c->verified_role = role;
    return 1;
}

static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl =
        X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = SSL_get_app_data(ssl);
    assert(c != NULL); /* tls_conn_new refuses to go on without it */
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    int depth = X509_STORE_CTX_get_error_depth(xs);
    if (!ok) {
        if (c->verify_err == 0)
            verify_fail_record(c, xs);
        return 0;
    }
    if (depth == 0 && cert != NULL && !leaf_check(c, cert)) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

/* ---- context ------------------------------------------------------------ */

static int ctx_load(struct tls_ctx *t, const struct tls_ctx_config *cfg,
                    char *errmsg, size_t errmsg_bytes)
{
    SSL_CTX *s = t->ssl_ctx;
    if (SSL_CTX_load_verify_locations(s, cfg->ca_path, NULL) != 1) {
        msg_set(errmsg, errmsg_bytes, "cannot load CA %s: %s", cfg->ca_path,
                ossl_reason());
        return INBOX_ETLS_CONFIG;
    }
    if (SSL_CTX_use_certificate_chain_file(s, cfg->cert_path) != 1) {
        msg_set(errmsg, errmsg_bytes, "cannot load certificate %s: %s",
                cfg->cert_path, ossl_reason());
        return INBOX_ETLS_CONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(s, cfg->key_path, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) ==
            X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            msg_set(errmsg, errmsg_bytes,
                    "key %s does not match certificate %s", cfg->key_path,
                    cfg->cert_path);
            return INBOX_ETLS_CONFIG;
        }
        msg_set(errmsg, errmsg_bytes, "cannot load key %s: %s", cfg->key_path,
                ossl_reason());
        return INBOX_ETLS_CONFIG;
    }
    if (SSL_CTX_check_private_key(s) != 1) {
        ERR_clear_error();
        msg_set(errmsg, errmsg_bytes, "key %s does not match certificate %s",
                cfg->key_path, cfg->cert_path);
        return INBOX_ETLS_CONFIG;
    }
    if (t->side == TLS_SIDE_SERVER) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_path);
        if (names == NULL) {
            msg_set(errmsg, errmsg_bytes, "cannot read CA names from %s: %s",
                    cfg->ca_path, ossl_reason());
            return INBOX_ETLS_CONFIG;
        }
        SSL_CTX_set_client_CA_list(s, names);
    }
    return 0;
}

/* Our own certificate must be one the peers will accept: signed by the
 * cluster CA, in its validity period, with a role (a node's if we serve).
 * Failing here, at start-up, beats failing every handshake later. */
static int ctx_own_cert_check(struct tls_ctx *t,
                              const struct tls_ctx_config *cfg, char *errmsg,
                              size_t errmsg_bytes)
{
    X509 *own = SSL_CTX_get0_certificate(t->ssl_ctx);
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    if (own == NULL || xs == NULL) {
        X509_STORE_CTX_free(xs);
        msg_set(errmsg, errmsg_bytes, "out of memory");
        return INBOX_ENOMEM;
    }
    int rc = 0;
    if (X509_STORE_CTX_init(xs, SSL_CTX_get_cert_store(t->ssl_ctx), own,
                            NULL) != 1 ||
        X509_verify_cert(xs) != 1) {
        msg_set(errmsg, errmsg_bytes,
                "certificate %s does not verify against CA %s: %s",
                cfg->cert_path, cfg->ca_path,
                X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
        rc = INBOX_ETLS_CONFIG;
    }
    X509_STORE_CTX_free(xs);
    ERR_clear_error();
    if (rc != 0)
        return rc;
    t->own_role = cert_role_of(own);
    if (t->own_role == INBOX_ROLE_NONE) {
        msg_set(errmsg, errmsg_bytes, "certificate %s carries no inboxd role",
                cfg->cert_path);
        return INBOX_ETLS_CONFIG;
    }
    if (t->side == TLS_SIDE_SERVER && t->own_role != INBOX_ROLE_NODE) {
        msg_set(errmsg, errmsg_bytes,
                "certificate %s has role %s; only a node may accept "
                "connections",
                cfg->cert_path, cert_role_name(t->own_role));
        return INBOX_ETLS_CONFIG;
    }
    return 0;
}

static void ctx_policy_set(SSL_CTX *s)
{
    SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       verify_cb);
    SSL_CTX_set_verify_depth(s, TLS_VERIFY_DEPTH);
    /* No resumption: every connection proves its certificate afresh, and
     * no tickets or cached sessions outlive a revoked or rotated cert. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(s, 0);
    SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
    /* Send only our own certificate: every peer holds the CA already. */
    SSL_CTX_set_mode(s, SSL_MODE_NO_AUTO_CHAIN);
}

int tls_ctx_new(const struct tls_ctx_config *config, struct tls_ctx **ctx_out,
                char *errmsg, size_t errmsg_bytes)
{
    msg_set(errmsg, errmsg_bytes, "%s", "");
    if (config == NULL || ctx_out == NULL || config->ca_path == NULL ||
        config->cert_path == NULL || config->key_path == NULL ||
        (config->side != TLS_SIDE_SERVER && config->side != TLS_SIDE_CLIENT) ||
        (config->peer_roles_allowed & ~INBOX_ROLES_ANY) != 0) {
        msg_set(errmsg, errmsg_bytes, "bad TLS configuration");
        return INBOX_EINVAL;
    }
    *ctx_out = NULL;
    struct tls_ctx *t = calloc(1, sizeof *t);
    if (t == NULL)
        goto err_nomem;
    t->side = config->side;
    t->peer_roles_allowed = config->peer_roles_allowed;
    if (t->peer_roles_allowed == 0)
        t->peer_roles_allowed = t->side == TLS_SIDE_SERVER
                                    ? INBOX_ROLES_ANY
                                    : INBOX_ROLE_BIT(INBOX_ROLE_NODE);
    t->ssl_ctx = SSL_CTX_new(t->side == TLS_SIDE_SERVER ? TLS_server_method()
                                                        : TLS_client_method());
    if (t->ssl_ctx == NULL)
        goto err_after_alloc;
    ctx_policy_set(t->ssl_ctx);
    int rc = ctx_load(t, config, errmsg, errmsg_bytes);
    if (rc == 0)
        rc = ctx_own_cert_check(t, config, errmsg, errmsg_bytes);
    if (rc != 0) {
        SSL_CTX_free(t->ssl_ctx);
        free(t);
        return rc;
    }
    *ctx_out = t;
    return 0;

err_after_alloc:
    free(t);
err_nomem:
    ERR_clear_error();
    msg_set(errmsg, errmsg_bytes, "out of memory");
    return INBOX_ENOMEM;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx); /* each SSL holds its own reference */
    free(ctx);
}

enum inbox_role tls_ctx_own_role(const struct tls_ctx *ctx)
{
    assert(ctx != NULL);
    return ctx->own_role;
}

/* ---- connection: failure ------------------------------------------------ */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int
conn_fail(struct tls_conn *c, int err, const char *fmt, ...)
{
    assert(err < 0);
    assert(c->state != TLS_STATE_FAILED);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->state = TLS_STATE_FAILED;
    c->err = err;
    ERR_clear_error();
    return err;
}

/* A fatal alert the peer sent us, as OpenSSL reports it: reason codes from
 * SSL_AD_REASON_OFFSET up are "alert received" plus the alert number. */
static int alert_fail(struct tls_conn *c, int alert)
{
    const char *why = "";
    switch (alert) {
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_REQUIRED:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
        why = ": it does not accept our certificate";
        break;
    case SSL_AD_PROTOCOL_VERSION:
        why = ": it does not speak TLS 1.3";
        break;
    default:
        break;
    }
    return conn_fail(c, INBOX_ETLS_REFUSED,
                     "peer sent fatal TLS alert \"%s\"%s",
                     SSL_alert_desc_string_long(alert), why);
}

/* Turns a failed SSL call into the connection's sticky error. */
static int ssl_fail(struct tls_conn *c, int ssl_err)
{
    if (c->verify_err != 0)
        return conn_fail(c, c->verify_err, "%s", c->verify_msg);
    unsigned long e = ERR_peek_error(); /* the first, most specific one */
    int reason = ERR_GET_REASON(e);
    const char *text = e ? ERR_reason_error_string(e) : NULL;
    if (ossl_out_of_memory())
        return conn_fail(c, INBOX_ENOMEM, "out of memory in TLS (%s)",
                         text ? text : "allocation failed");
    if (text == NULL)
        text = ssl_err == SSL_ERROR_SYSCALL ? "unexpected end of stream"
                                            : "unknown reason";
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
        return alert_fail(c, reason - SSL_AD_REASON_OFFSET);
    switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return conn_fail(c, INBOX_EUNAUTHENTICATED,
                         "peer presented no certificate; mutual TLS requires "
                         "one signed by the cluster CA");
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return conn_fail(c, INBOX_ETLS_PLAINTEXT, "%s (%s)",
                         inbox_strerror(INBOX_ETLS_PLAINTEXT), text);
    case SSL_R_UNSUPPORTED_PROTOCOL:
        return conn_fail(c, INBOX_ETLS_HANDSHAKE,
                         "TLS handshake failed: peer does not speak TLS 1.3 "
                         "(%s)",
                         text);
    default:
        break;
    }
    if (c->state == TLS_STATE_HANDSHAKE)
        return conn_fail(c, INBOX_ETLS_HANDSHAKE, "TLS handshake failed (%s)",
                         text);
    return conn_fail(c, INBOX_ETLS_RECORD, "%s (%s)",
                     inbox_strerror(INBOX_ETLS_RECORD), text);
}

/* The numbered invariants of net/tls.h, for assert() at every entry:
 * debug and sanitizer builds pay for them, release builds do not. */
#ifndef NDEBUG
static bool conn_invariants(const struct tls_conn *c)
{
    if ((c->err != 0) != (c->state == TLS_STATE_FAILED))
        return false; /* 5 */
    if (BIO_ctrl_pending(c->in) > INBOX_TLS_IN_BYTES_MAX)
        return false; /* 2 */
    if (c->state == TLS_STATE_OPEN &&
        (c->peer_role == INBOX_ROLE_NONE ||
         (c->peer_roles_allowed & INBOX_ROLE_BIT(c->peer_role)) == 0 ||
         c->peer_name[0] == '\0'))
        return false; /* 1 */
    if (c->state == TLS_STATE_HANDSHAKE &&
        (c->peer_role != INBOX_ROLE_NONE || c->peer_closed))
        return false; /* 1, 4 */
    if (c->peer_closed && c->peer_role == INBOX_ROLE_NONE)
        return false; /* 4 */
    return true;
}
#endif

/* ---- connection: lifecycle ---------------------------------------------- */

int tls_conn_new(struct tls_ctx *ctx, const char *peer_host,
                 struct tls_conn **conn_out)
{
    if (ctx == NULL || conn_out == NULL ||
        (peer_host != NULL && ctx->side != TLS_SIDE_CLIENT))
        return INBOX_EINVAL;
    *conn_out = NULL;
    struct tls_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return INBOX_ENOMEM;
    c->side = ctx->side;
    c->peer_roles_allowed = ctx->peer_roles_allowed;
    int rc = INBOX_ENOMEM;
    c->ssl = SSL_new(ctx->ssl_ctx);
    if (c->ssl == NULL)
        goto err_after_alloc;
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    if (c->in == NULL || c->out == NULL) {
        BIO_free(c->in);
        BIO_free(c->out);
        goto err_after_ssl;
    }
    BIO_set_mem_eof_return(c->in, -1);  /* empty means "retry", not EOF */
    SSL_set_bio(c->ssl, c->in, c->out); /* ssl owns both from here */
    /* ex_data storage is allocated on first use: this can fail, and then
     * verify_cb would find no connection. */
    if (SSL_set_app_data(c->ssl, c) != 1)
        goto err_after_ssl;
    if (peer_host != NULL) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        int ok = X509_VERIFY_PARAM_set1_ip_asc(param, peer_host);
        if (!ok) {
            ERR_clear_error();
            X509_VERIFY_PARAM_set_hostflags(
                param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = X509_VERIFY_PARAM_set1_host(param, peer_host, 0);
        }
        if (!ok) {
            rc = INBOX_EINVAL;
            goto err_after_ssl;
        }
    }
    if (c->side == TLS_SIDE_CLIENT) {
        SSL_set_connect_state(c->ssl);
        /* Queue the ClientHello now: the caller only has to flush. */
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
            rc = ossl_out_of_memory() ? INBOX_ENOMEM : INBOX_EINTERNAL;
            goto err_after_ssl;
        }
    } else {
        SSL_set_accept_state(c->ssl);
    }
    *conn_out = c;
    return 0;

err_after_ssl:
    SSL_free(c->ssl);
err_after_alloc:
    ERR_clear_error();
    free(c);
    return rc;
}

void tls_conn_free(struct tls_conn *conn)
{
    if (conn == NULL)
        return;
    SSL_free(conn->ssl); /* frees both BIOs */
    free(conn);
}

/* ---- connection: the pump ----------------------------------------------- */

/* "GET / HT" or "\x00\x01..." for messages about a plaintext peer. */
static void preview_format(const unsigned char *p, size_t len, char *out,
                           size_t out_bytes)
{
    size_t o = 0;
    for (size_t i = 0; i < len && i < TLS_SNIFF_PREVIEW_BYTES; i++) {
        int w = (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
                    ? snprintf(out + o, out_bytes - o, "%c", p[i])
                    : snprintf(out + o, out_bytes - o, "\\x%02x", p[i]);
        if (w < 0 || (size_t)w >= out_bytes - o)
            break;
        o += (size_t)w;
    }
}

/* The first byte a peer sends opens a TLS record: a handshake message
 * (ClientHello / ServerHello), or an alert if it gives up at once. Anything
 * else is someone speaking another protocol, most likely inboxd frames or HTTP
 * in the clear: say so instead of "wrong version number". */
static int sniff(struct tls_conn *c, const unsigned char *p, size_t len)
{
    c->sniffed = true;
    if (p[0] == TLS_CONTENT_HANDSHAKE || p[0] == TLS_CONTENT_ALERT)
        return 0;
    char preview[TLS_SNIFF_PREVIEW_BYTES * 4 + 1] = "";
    preview_format(p, len, preview, sizeof preview);
    return conn_fail(c, INBOX_ETLS_PLAINTEXT, "%s (first bytes \"%s\")",
                     inbox_strerror(INBOX_ETLS_PLAINTEXT), preview);
}

int tls_conn_feed_cipher(struct tls_conn *conn, const void *buf, size_t len,
                         size_t *accepted_bytes)
{
    assert(conn != NULL && conn_invariants(conn));
    assert(accepted_bytes != NULL);
    assert(buf != NULL || len == 0);
    *accepted_bytes = 0;
    if (conn->err != 0)
        return conn->err;
    if (len == 0)
        return 0;
    if (!conn->sniffed) {
        int rc = sniff(conn, buf, len);
        if (rc != 0)
            return rc;
    }
    if (conn->peer_closed) {
        /* Nothing after close_notify counts (RFC 8446 section 6.1). */
        *accepted_bytes = len;
        return 0;
    }
    size_t pending = BIO_ctrl_pending(conn->in);
    assert(pending <= INBOX_TLS_IN_BYTES_MAX);
    size_t n = INBOX_TLS_IN_BYTES_MAX - pending;
    if (n > len)
        n = len;
    if (n == 0)
        return 0;
    if (BIO_write(conn->in, buf, (int)n) != (int)n)
        return conn_fail(conn, INBOX_ENOMEM, "out of memory");
    *accepted_bytes = n;
    return 0;
}

/* HANDSHAKE -> OPEN once SSL_do_handshake completed: the verify callback
 * has judged the leaf; check OpenSSL agrees, then publish the peer. */
static int open_check(struct tls_conn *c)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (peer == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK ||
        c->verified_role == INBOX_ROLE_NONE)
        return conn_fail(c, INBOX_EUNAUTHENTICATED,
                         "peer certificate missing or not verified");
    assert(c->peer_roles_allowed & INBOX_ROLE_BIT(c->verified_role));
    assert(SSL_version(c->ssl) == TLS1_3_VERSION);
    c->peer_role = c->verified_role;
    memcpy(c->peer_name, c->verified_name, sizeof c->peer_name);
    c->state = TLS_STATE_OPEN;
    return 0;
}

static int handshake_step(struct tls_conn *c)
{
    assert(c->state == TLS_STATE_HANDSHAKE);
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return open_check(c);
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    return ssl_fail(c, e);
}

int tls_conn_read_plain(struct tls_conn *conn, void *buf, size_t cap,
                        size_t *read_bytes)
{
    assert(conn != NULL && conn_invariants(conn));
    assert(read_bytes != NULL);
    assert(buf != NULL || cap == 0);
    *read_bytes = 0;
    if (conn->err != 0)
        return conn->err;
    if (conn->state == TLS_STATE_HANDSHAKE) {
        int rc = handshake_step(conn);
        if (rc != 0 || conn->state != TLS_STATE_OPEN)
            return rc;
    }
    unsigned char *p = buf;
    size_t got = 0;
    while (got < cap && !conn->peer_closed) {
        size_t want = cap - got;
        if (want > INT_MAX)
            want = INT_MAX;
        ERR_clear_error();
        int n = SSL_read(conn->ssl, p + got, (int)want);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        int e = SSL_get_error(conn->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn->peer_closed = true;
            break;
        }
        /* Authentic plaintext already decrypted is delivered; the error
         * is sticky and the next call returns it. */
        int rc = ssl_fail(conn, e);
        if (got == 0)
            return rc;
        break;
    }
    *read_bytes = got;
    return 0;
}

int tls_conn_write_plain(struct tls_conn *conn, const void *buf, size_t len,
                         size_t *written_bytes)
{
    assert(conn != NULL && conn_invariants(conn));
    assert(written_bytes != NULL);
    assert(buf != NULL || len == 0);
    *written_bytes = 0;
    if (conn->err != 0)
        return conn->err;
    if (conn->close_sent)
        return INBOX_ESHUTDOWN;
    if (conn->state != TLS_STATE_OPEN || len == 0)
        return 0;
    /* Take only what fits under the bound even if every record carries
     * the worst-case overhead: n plaintext bytes make at most
     * n / RECORD + 1 records. */
    size_t pending = BIO_ctrl_pending(conn->out);
    if (pending >= INBOX_TLS_OUT_BYTES_MAX)
        return 0;
    size_t space = INBOX_TLS_OUT_BYTES_MAX - pending;
    size_t overhead = (space / INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX + 1) *
                      INBOX_TLS_RECORD_OVERHEAD_BYTES_MAX;
    if (space <= overhead)
        return 0;
    size_t n = space - overhead;
    if (n > len)
        n = len;
    ERR_clear_error();
    int w = SSL_write(conn->ssl, buf, (int)n);
    if (w <= 0)
        return ssl_fail(conn, SSL_get_error(conn->ssl, w));
    assert((size_t)w == n); /* a memory BIO never pushes back */
    assert(BIO_ctrl_pending(conn->out) <= INBOX_TLS_OUT_BYTES_MAX);
    *written_bytes = (size_t)w;
    return 0;
}

size_t tls_conn_cipher_pending(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return BIO_ctrl_pending(conn->out);
}

size_t tls_conn_pull_cipher(struct tls_conn *conn, void *buf, size_t cap)
{
    assert(conn != NULL);
    assert(buf != NULL || cap == 0);
    if (cap == 0)
        return 0;
    if (cap > INT_MAX)
        cap = INT_MAX;
    int n = BIO_read(conn->out, buf, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

int tls_conn_close(struct tls_conn *conn)
{
    assert(conn != NULL && conn_invariants(conn));
    if (conn->err != 0)
        return conn->err;
    if (conn->close_sent)
        return 0;
    conn->close_sent = true;
    if (conn->state != TLS_STATE_OPEN)
        return 0; /* nothing to say politely before the handshake ends */
    ERR_clear_error();
    int r = SSL_shutdown(conn->ssl);
    if (r < 0)
        return ssl_fail(conn, SSL_get_error(conn->ssl, r));
    return 0;
}

bool tls_conn_handshake_done(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->state == TLS_STATE_OPEN;
}

bool tls_conn_peer_closed(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->peer_closed;
}

enum inbox_role tls_conn_peer_role(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->peer_role;
}

const char *tls_conn_peer_name(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->peer_name;
}

int tls_conn_error(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->err;
}

const char *tls_conn_error_message(const struct tls_conn *conn)
{
    assert(conn != NULL);
    return conn->err != 0 ? conn->errmsg : "";
}
