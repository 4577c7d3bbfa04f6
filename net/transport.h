/*
 * transport.h — the server side of the client protocol: what inboxd's event
 * loop does with a connection, up to the point where a decoded request is
 * handed to the node and its response comes back.
 *
 * A transport owns a TCP listener on a libuv loop. Each accepted connection
 * runs mutual TLS (net/tls.h, from the caller's server tls_ctx), then the
 * frame parser (net/codec.h). The transport answers HELLO and PING itself,
 * refuses what is malformed, oversized, unknown or not allowed for the
 * peer's certificate role, and hands every other request to the node's
 * on_request callback. docs/transport.md describes the connection states,
 * the bounds and the shutdown sequence; transport.c has the state machine.
 *
 * Threads. Everything runs on the loop thread (the thread calling uv_run)
 * except the functions marked "any thread": transport_respond*,
 * transport_push, transport_conn_ref/unref, transport_stop,
 * transport_stopped. Those encode on the caller's thread and hand the bytes
 * to the loop through a mutex-protected queue and a uv_async.
 *
 * Lifetimes.
 *   - struct transport: transport_new .. transport_free. transport_free is
 *     called after transport_stopped() is true and uv_run has returned (or
 *     at least run until the transport's handles closed), and after every
 *     request was answered.
 *   - struct transport_req: handed to on_request; owned by the node until
 *     it calls transport_respond or transport_respond_error exactly once
 *     (asserted); the call consumes it. Answering after the connection
 *     closed is allowed and harmless: the answer is dropped.
 *   - struct transport_conn: valid during on_request and on_conn_closed.
 *     To keep it longer (a WATCH), take a reference with transport_conn_ref
 *     (loop thread, while it is valid) and drop it with transport_conn_unref
 *     (any thread). A referenced connection may be closed; pushes to it are
 *     then dropped.
 *   - const struct inbox_msg *msg given to on_request, and every byte it
 *     points to, is valid only during the call: copy what must outlive it.
 */
#ifndef INBOX_NET_TRANSPORT_H
#define INBOX_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/cert.h"
#include "net/codec.h"
#include "net/tls.h"
#include "server/metrics.h"

struct transport;
struct transport_conn;
struct transport_req;

/* Called on the loop thread for every data and admin request that passed
 * the transport's checks (decoded, allowed for the peer's role). */
typedef void (*transport_request_fn)(void *arg, struct transport_req *req,
                                     const struct inbox_msg *msg);

/* Called on the loop thread once per connection that completed HELLO,
 * when it closes (for any reason): the node drops its WATCHes of it. Its
 * requests still in flight may be answered later (the answers are
 * dropped). */
typedef void (*transport_conn_closed_fn)(void *arg,
                                         struct transport_conn *conn);

struct transport_config {
    const char *host;     /* IP literal to listen on, e.g. "127.0.0.1" */
    uint16_t port;        /* 0: an ephemeral port (see transport_port) */
    struct tls_ctx *tls;  /* TLS_SIDE_SERVER; borrowed, outlives transport */
    uint64_t node_id;     /* announced in HELLO */
    uint32_t shard_count; /* announced in HELLO */
    /* Bounds (docs/transport.md). 0 means the server config's default. */
    uint32_t conn_max;               /* open connections; more: ERROR BUSY */
    uint32_t conn_inflight_max;      /* requests at the node per connection */
    uint64_t conn_output_bytes_max;  /* queued output before reads pause */
    uint32_t handshake_timeout_ms;   /* accept -> HELLO answered */
    uint32_t drain_timeout_ms;       /* DRAINING -> forced close */
    transport_request_fn on_request; /* required */
    transport_conn_closed_fn on_conn_closed; /* may be NULL */
    void *arg;
};

/* Defaults for the 0 fields above (the server config's defaults). */
#define TRANSPORT_CONN_MAX_DEFAULT 10000u
#define TRANSPORT_CONN_INFLIGHT_MAX_DEFAULT 256u
#define TRANSPORT_CONN_OUTPUT_BYTES_MAX_DEFAULT (8u * INBOX_MIB)

/* Creates a transport on `loop` (not started). Returns 0, INBOX_EINVAL or
 * INBOX_ENOMEM. */
int transport_new(uv_loop_t *loop, const struct transport_config *config,
                  struct transport **out);

/* Binds and listens (loop thread, or before uv_run). Returns 0, INBOX_EINVAL
 * for a bad host, or a negative errno (e.g. -EADDRINUSE). */
int transport_start(struct transport *t);

/* The bound port (after transport_start). */
uint16_t transport_port(const struct transport *t);

/* Graceful shutdown, from any thread (a SIGTERM handler on the loop calls
 * it too): stop accepting; stop reading new requests; let requests in
 * flight be answered and flushed for up to deadline_ms; then close every
 * connection and the transport's own handles, so that uv_run returns once
 * nothing else is active on the loop. Idempotent. */
void transport_stop(struct transport *t, uint32_t deadline_ms);

/* Any thread: true once stop completed and every handle is closed. */
bool transport_stopped(const struct transport *t);

/* Frees the transport (see Lifetimes above). NULL is a no-op. */
void transport_free(struct transport *t);

/* ---- requests (any thread) ----------------------------------------------- */

/* Answers req with resp. The transport fills resp's header: request id,
 * opcode, the RESPONSE flag (ERROR is kept if set) and the version, so the
 * caller only sets the body (and hdr.flags = INBOX_FLAG_ERROR for an error
 * body). Consumes req. An encoding failure (a body breaking a limit) is
 * logged and answered as ERROR INTERNAL instead. */
void transport_respond(struct transport_req *req, const struct inbox_msg *resp);

/* Answers req with ERROR `code` (a negative INBOX_E* code) and a message
 * (may be NULL: the code's own message). Consumes req. */
void transport_respond_error(struct transport_req *req, int code,
                             const char *message);

/* Request accessors (valid until the request is answered). */
uint64_t transport_req_id(const struct transport_req *req);
uint8_t transport_req_opcode(const struct transport_req *req);
struct transport_conn *transport_req_conn(const struct transport_req *req);
/* The `arg` of the transport_config (the service), for completions that
 * only hold the request. */
void *transport_req_arg(const struct transport_req *req);

/* ---- connections ----------------------------------------------------------
 */

/* References (see Lifetimes). ref: loop thread, or any thread that already
 * holds a reference. unref: any thread. */
void transport_conn_ref(struct transport_conn *conn);
void transport_conn_unref(struct transport_conn *conn);

/* Sends a server push (NOTIFY) on conn; any thread, caller holds a
 * reference or is in a callback that gave it conn. The transport sets the
 * header (opcode NOTIFY, PUSH flag, request id 0, version). Dropped if the
 * connection is closed or closing. A connection whose queued output is
 * over conn_output_bytes_max when a push arrives is closed (a consumer too
 * slow even for hints; it reconnects and WATCHes again). Returns 0, the
 * encoder's error for a body breaking a limit, or INBOX_ENOMEM. */
int transport_push(struct transport_conn *conn, const struct inbox_msg *msg);

/* Stable for the connection's life; any thread. */
uint64_t transport_conn_id(const struct transport_conn *conn);
enum inbox_role transport_conn_role(const struct transport_conn *conn);

/* Loop thread: output bytes queued for the connection (frames not yet
 * encrypted + ciphertext in TLS + ciphertext being written), and requests
 * handed to the node and not yet answered. */
size_t transport_conn_output_bytes(const struct transport_conn *conn);
uint32_t transport_conn_inflight(const struct transport_conn *conn);

/* ---- metrics ----------------------------------------------------------------
 */

/* The transport's metrics, for metrics_render (any thread; the array and
 * the values live as long as the transport). */
const struct metrics_desc *transport_metrics(const struct transport *t,
                                             size_t *count);

#endif /* INBOX_NET_TRANSPORT_H */
