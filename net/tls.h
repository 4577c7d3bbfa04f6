/*
 * tls.h — mutual TLS 1.3 for inboxd connections, as a pure byte pump.
 *
 * No sockets and no event loop in here: OpenSSL runs over memory buffers,
 * and the caller moves bytes between them and the network. The libuv
 * read/write callbacks drive a connection like this:
 *
 *   on bytes read from the socket:
 *       tls_conn_feed_cipher(c, bytes)       (may take fewer: see below)
 *       tls_conn_read_plain(c, buf)          until it returns 0 bytes;
 *                                            this also runs the handshake
 *   when the application has data to send:
 *       tls_conn_write_plain(c, data)        (may take fewer: backpressure)
 *   after any of the above:
 *       while tls_conn_cipher_pending(c):    tls_conn_pull_cipher(c, buf)
 *                                            and write buf to the socket
 *
 * Trust: one cluster CA. Both sides present a certificate signed by it and
 * both verify the other's (SSL_VERIFY_PEER + FAIL_IF_NO_PEER_CERT); no
 * system trust store is consulted. TLS 1.3 only, no session tickets or
 * resumption. Each certificate carries a role (net/cert.h); the server side
 * accepts the roles in `peer_roles_allowed`, a client side by default
 * accepts only a node, optionally checking its address or host name too.
 *
 * Connection states (struct tls_conn):
 *   HANDSHAKE  created; tls_conn_read_plain advances the handshake.
 *              tls_conn_new of a client queues the ClientHello at once.
 *   OPEN       handshake done, peer certificate verified and its role
 *              allowed; tls_conn_peer_role/_name are valid. Data flows.
 *   FAILED     sticky: every call returns the same INBOX_E* code, and
 *              tls_conn_error_message says why in words. Ciphertext still
 *              pending (usually a TLS alert telling the peer why) may be
 *              pulled and sent before closing the socket.
 * Invariants:
 *   1. Plaintext is handed out only in OPEN: nothing a peer sends is
 *      delivered unless its certificate verified and its role is allowed.
 *   2. Ciphertext buffered in <= INBOX_TLS_IN_BYTES_MAX (feed pushes back).
 *   3. tls_conn_write_plain never takes plaintext that would push the
 *      outbound ciphertext over INBOX_TLS_OUT_BYTES_MAX. TLS's own
 *      messages (the handshake flight, one pending KeyUpdate, an alert,
 *      close_notify) are all that may come on top: < INBOX_TLS_SLACK_BYTES.
 *   4. peer_closed (close_notify received) is set at most once and only
 *      in OPEN; after it tls_conn_read_plain returns 0 bytes.
 *   5. err != 0 exactly in FAILED, and it never changes once set.
 *
 * Threads: a tls_ctx may be shared by connections on several threads once
 * created; a tls_conn belongs to one thread at a time.
 */
#ifndef INBOX_NET_TLS_H
#define INBOX_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "net/cert.h"

enum tls_side {
    TLS_SIDE_SERVER = 0, /* accepts connections */
    TLS_SIDE_CLIENT = 1, /* connects */
};

struct tls_ctx_config {
    enum tls_side side;
    const char *ca_path;   /* the cluster CA certificate (PEM) */
    const char *cert_path; /* own certificate (PEM), signed by the CA */
    const char *key_path;  /* own private key (PEM) */
    /* Roles a peer may hold, a set of INBOX_ROLE_BIT()s. 0 means the
     * default: INBOX_ROLES_ANY for a server, only a node for a client.
     * A server port for peers only would pass INBOX_ROLE_BIT(NODE). */
    unsigned peer_roles_allowed;
};

struct tls_ctx;
struct tls_conn;

/* Loads and checks CA, certificate and key: the files parse, the key
 * matches the certificate, the certificate is signed by the CA and carries
 * a role (a server's must be a node). Returns 0 and *ctx_out; or
 * INBOX_ETLS_CONFIG (message names the file and the reason), INBOX_EINVAL,
 * INBOX_ENOMEM. `errmsg` as in net/cert.h. */
int tls_ctx_new(const struct tls_ctx_config *config, struct tls_ctx **ctx_out,
                char *errmsg, size_t errmsg_bytes);

/* Drops the caller's reference; connections keep the context alive until
 * they are freed. NULL is a no-op. */
void tls_ctx_free(struct tls_ctx *ctx);

/* The role in our own certificate. */
enum inbox_role tls_ctx_own_role(const struct tls_ctx *ctx);

/* Creates a connection in HANDSHAKE. `peer_host` (client side only, may be
 * NULL) is an IP literal or DNS name the server's certificate must list in
 * its subjectAltName; the server side must pass NULL. A client's
 * ClientHello is pending as ciphertext when this returns.
 * Returns 0, INBOX_EINVAL or INBOX_ENOMEM. */
int tls_conn_new(struct tls_ctx *ctx, const char *peer_host,
                 struct tls_conn **conn_out);

/* Frees the connection and every OpenSSL object it holds. NULL is a no-op.
 * To close politely, call tls_conn_close and send the pending ciphertext
 * first. */
void tls_conn_free(struct tls_conn *conn);

/* Network -> TLS. Copies up to `len` bytes of ciphertext received from the
 * peer into the connection, as many as fit under INBOX_TLS_IN_BYTES_MAX;
 * *accepted_bytes says how many. Fewer than `len` means: call
 * tls_conn_read_plain to make room (or stop reading the socket while the
 * application cannot take more plaintext), then feed the rest.
 * The first bytes of a connection are checked to look like TLS; if not,
 * the connection fails with INBOX_ETLS_PLAINTEXT. Returns 0 or the sticky
 * error. */
int tls_conn_feed_cipher(struct tls_conn *conn, const void *buf, size_t len,
                         size_t *accepted_bytes);

/* TLS -> application. Advances the handshake if it is not done, then
 * decrypts into buf up to `cap` bytes of plaintext; *read_bytes says how
 * many (0 means: needs more ciphertext, or the peer closed; see
 * tls_conn_peer_closed). After a successful return, check
 * tls_conn_cipher_pending: the handshake may have produced bytes to send.
 * If the stream breaks after some plaintext was decrypted in this call,
 * that plaintext is returned with 0 and the next call returns the error.
 * Returns 0 or the sticky error (INBOX_ETLS_*, INBOX_EUNAUTHENTICATED). */
int tls_conn_read_plain(struct tls_conn *conn, void *buf, size_t cap,
                        size_t *read_bytes);

/* Application -> TLS. Encrypts up to `len` bytes; *written_bytes says how
 * many were taken: 0 before the handshake is done, and fewer than `len`
 * when the outbound ciphertext is near INBOX_TLS_OUT_BYTES_MAX (pull and
 * send it, then write the rest). Returns 0 or the sticky error. */
int tls_conn_write_plain(struct tls_conn *conn, const void *buf, size_t len,
                         size_t *written_bytes);

/* Bytes of ciphertext waiting to be sent to the peer. */
size_t tls_conn_cipher_pending(const struct tls_conn *conn);

/* TLS -> network. Moves up to `cap` bytes of pending ciphertext into buf
 * (the caller owns buf; it can be handed to uv_write). Works in every
 * state, FAILED included, so a final alert can still go out. Returns the
 * number of bytes moved. */
size_t tls_conn_pull_cipher(struct tls_conn *conn, void *buf, size_t cap);

/* Queues a close_notify alert (once). Writes after it are refused with
 * INBOX_ESHUTDOWN. Returns 0 or the sticky error. */
int tls_conn_close(struct tls_conn *conn);

/* True once the handshake completed and the peer passed every check. */
bool tls_conn_handshake_done(const struct tls_conn *conn);

/* True once the peer sent close_notify: no more plaintext will come. */
bool tls_conn_peer_closed(const struct tls_conn *conn);

/* The peer's role and certificate common name; INBOX_ROLE_NONE and ""
 * until the handshake is done. The name is owned by the connection and
 * valid until tls_conn_free. */
enum inbox_role tls_conn_peer_role(const struct tls_conn *conn);
const char *tls_conn_peer_name(const struct tls_conn *conn);

/* 0 while healthy; else the sticky INBOX_E* code. */
int tls_conn_error(const struct tls_conn *conn);

/* A human message for the sticky error, e.g. "peer certificate not signed
 * by the cluster CA (unable to get local issuer certificate; subject
 * CN=fe1)"; "" while healthy. Owned by the connection. */
const char *tls_conn_error_message(const struct tls_conn *conn);

#endif /* INBOX_NET_TLS_H */
