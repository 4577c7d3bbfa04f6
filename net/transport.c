/*
 * transport.c — client connections on the event loop: TLS, framing,
 * HELLO, authorization by role, bounds, and the hand-off of requests to the
 * node and of its answers back (see net/transport.h and docs/transport.md).
 *
 * Connection states (struct transport_conn.state):
 *
 *   HANDSHAKE  accepted; TLS handshake running; the handshake timer runs.
 *   HELLO      TLS is open, the peer's role known; the first frame must be
 *              HELLO. The handshake timer still runs (it bounds accept ->
 *              HELLO answered).
 *   READY      HELLO answered; requests flow to the node.
 *   DRAINING   no more requests are read. Either fatal (an ERROR frame that
 *              closes the connection is queued; answers still in flight
 *              are dropped) or graceful (transport_stop: answers still in
 *              flight are awaited and sent). Once the output is flushed,
 *              close_notify is sent, the write side shut down, and inbound
 *              bytes are read and discarded until the peer's EOF (so that
 *              unread input never turns our close into a reset that would
 *              destroy the ERROR frame in flight). The drain timer bounds
 *              all of it.
 *   CLOSED     uv_close was called on both handles; the struct lives until
 *              its last reference goes (handles, requests in flight, the
 *              node's references, pushes in the queue).
 *
 * Transitions and the functions that make them:
 *   HANDSHAKE -> HELLO      conn_decrypt, when tls reports the handshake done
 *   HELLO -> READY          conn_on_hello, after answering HELLO
 *   HANDSHAKE -> DRAINING   conn_tls_failed (a TLS alert may still go out)
 *   HELLO/READY -> DRAINING conn_fatal (ERROR frame, then close) or
 *                           transport_stop's stop_begin (graceful)
 *   any -> CLOSED           conn_close (timers, EOF, I/O errors, the drain
 *                           finishing, the stop deadline)
 *
 * Invariants (checked by conn_invariants):
 *   1. Requests reach the node only in READY, and only while inflight <
 *      conn_inflight_max and the queued output is within
 *      conn_output_bytes_max; otherwise reading pauses (paused) and the
 *      unread bytes wait in rbuf / plain. Nothing is read while paused.
 *   2. inflight counts requests handed to on_request and not answered; each
 *      holds one reference on the connection.
 *   3. Every request gets exactly one answer (asserted in respond); an
 *      answer for a connection that is no longer READY (or graceful
 *      DRAINING) is dropped and counted.
 *   4. Only the loop thread touches a connection's fields, except refs
 *      (atomic) and the immutable id, version and role.
 *   5. At most one uv_write per connection is in flight (writing).
 *   6. The parser's body buffer is allocated only for a body that did not
 *      arrive in one piece, sized to that body (<= INBOX_FRAME_BODY_
 *      BYTES_MAX, checked from the header first), and freed after its frame
 *      when larger than INBOX_CONN_BODY_KEEP_BYTES.
 */
#include "net/transport.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "server/log.h"

#define LISTEN_BACKLOG 511
#define TCP_KEEPALIVE_DELAY_S 60

enum conn_state {
    CONN_HANDSHAKE = 0,
    CONN_HELLO = 1,
    CONN_READY = 2,
    CONN_DRAINING = 3,
    CONN_CLOSED = 4,
};

/* One encoded frame waiting for TLS. */
struct frame_buf {
    struct frame_buf *next;
    size_t len;
    size_t off; /* bytes already taken by TLS */
    uint8_t data[];
};

/* An item handed from any thread to the loop: an answer or a push. */
struct xitem {
    struct xitem *next;
    struct transport_conn *conn; /* holds a reference */
    struct frame_buf *frame;     /* NULL: encoding ran out of memory */
    bool is_req;
};

struct transport_req {
    struct xitem x; /* first: the queue node */
    uint64_t request_id;
    uint64_t start_us; /* dispatched to the node (monotonic) */
    uint8_t opcode;
    atomic_bool answered;
};

struct write_req {
    uv_write_t req;
    struct transport_conn *conn;
    size_t len;
    uint8_t data[];
};

struct transport_conn {
    struct transport *t;
    atomic_uint refs;
    uint64_t id;
    enum conn_state state;
    uint8_t version;      /* chosen at HELLO; 0 before */
    enum inbox_role role; /* from the certificate, at HELLO */
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake, then drain */
    uv_shutdown_t shutdown_req;
    unsigned handles_open;
    struct transport_conn *prev, *next;
    struct tls_conn *tls;
    char peer[64]; /* "ip:port" for logs */
    bool refusing; /* over conn_max: answer the first frame BUSY */
    bool reading;  /* uv_read_start is active */
    bool paused;   /* reading stopped by a bound (invariant 1) */
    bool in_pump;
    bool writing; /* invariant 5 */
    bool drain_graceful;
    bool close_notify_queued;
    bool shutdown_sent;
    /* input */
    uint8_t *rbuf; /* ciphertext from the socket */
    size_t rbuf_len, rbuf_off;
    uint8_t *plain; /* decrypted, not yet parsed */
    size_t plain_len, plain_off;
    struct inbox_parser parser;
    uint8_t *body; /* invariant 6 */
    size_t body_cap;
    uint8_t hdr_peek[INBOX_FRAME_HEADER_BYTES];
    size_t hdr_seen; /* header bytes of the current frame fed so far */
    /* output */
    struct frame_buf *out_head, *out_tail;
    size_t out_plain_bytes;
    size_t write_bytes;
    uint32_t inflight; /* invariant 2 */
    /* On the transport's flush list (answers applied in one async round
     * are flushed once per connection, after the round). */
    bool flush_queued;
    struct transport_conn *flush_next;
};

/* ---- metrics tables ---------------------------------------------------------
 */

static const struct {
    uint8_t op;
    const char *label;
} op_rows[] = {
    {INBOX_OP_HELLO, "op=\"hello\""},
    {INBOX_OP_PING, "op=\"ping\""},
    {INBOX_OP_ENQUEUE, "op=\"enqueue\""},
    {INBOX_OP_ENQUEUE_MANY, "op=\"enqueue_many\""},
    {INBOX_OP_FETCH, "op=\"fetch\""},
    {INBOX_OP_ACK, "op=\"ack\""},
    {INBOX_OP_SEEN_SET, "op=\"seen_set\""},
    {INBOX_OP_SEEN_GET, "op=\"seen_get\""},
    {INBOX_OP_WATCH, "op=\"watch\""},
    {INBOX_OP_UNWATCH, "op=\"unwatch\""},
    {INBOX_OP_ROUTE, "op=\"route\""},
    {INBOX_OP_STATUS, "op=\"status\""},
    {INBOX_OP_ADD_NODE, "op=\"add_node\""},
    {INBOX_OP_REMOVE_NODE, "op=\"remove_node\""},
    {INBOX_OP_TRANSFER_LEADER, "op=\"transfer_leader\""},
    {INBOX_OP_MOVE_REPLICA, "op=\"move_replica\""},
    {INBOX_OP_SNAPSHOT, "op=\"snapshot\""},
};
#define OP_ROWS_COUNT (sizeof op_rows / sizeof op_rows[0])

#define ERR_ROW(name, num, msg) {num, "code=\"" #name "\""},
static const struct {
    int num;
    const char *label;
} err_rows[] = {INBOX_ERR_MAP(ERR_ROW)};
#undef ERR_ROW
#define ERR_ROWS_COUNT (sizeof err_rows / sizeof err_rows[0])

struct transport_metrics {
    struct metrics_counter accepted;
    struct metrics_counter refused;
    struct metrics_counter closed;
    struct metrics_counter tls_failed;
    struct metrics_counter read_pauses;
    struct metrics_counter dropped;
    struct metrics_counter pushes;
    struct metrics_counter bytes_in;
    struct metrics_counter bytes_out;
    struct metrics_gauge open;
    struct metrics_counter requests[OP_ROWS_COUNT + 1]; /* last: unknown */
    /* dispatch to the node -> answer handed back, by opcode (seconds) */
    struct metrics_histogram latency[OP_ROWS_COUNT + 1];
    struct metrics_counter errors[ERR_ROWS_COUNT + 1]; /* last: other */
};

#define DESCS_MAX (10u + 2u * (OP_ROWS_COUNT + 1u) + ERR_ROWS_COUNT + 1u)

struct transport {
    uv_loop_t *loop;
    struct transport_config cfg;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t stop_timer;
    unsigned handles_open; /* listener (once started), async, stop_timer */
    bool listening;
    bool stopping;  /* stop_begin ran */
    bool finishing; /* the transport's own handles are closing */
    uint16_t port;
    struct transport_conn *conns; /* every conn whose handles are open */
    uint32_t conns_count;         /* of them, not refusing */
    uint32_t refusing_count;
    uint64_t next_conn_id;
    /* Shared with other threads. */
    uv_mutex_t mu;
    struct xitem *xq_head, *xq_tail; /* under mu */
    bool async_closed;               /* under mu */
    atomic_bool stop_requested;
    atomic_uint stop_deadline_ms;
    atomic_bool stopped;
    atomic_ulong reqs_live;
    struct transport_metrics m;
    struct metrics_desc descs[DESCS_MAX];
    size_t descs_count;
    /* Loop thread: set while async_cb applies a round of answers; frames
     * queued meanwhile are flushed once per connection at the end, so a
     * burst of answers becomes one TLS record and one write, not one each. */
    bool batching;
    struct transport_conn *flush_list;
};

/* Set while the loop thread runs the node's on_request: an answer given
 * from inside it is applied at once instead of through the queue, so a
 * node that answers synchronously is bounded exactly (invariant 1). */
static _Thread_local struct transport *tl_loop;

static void conn_close(struct transport_conn *c, const char *why);
static void conn_flush(struct transport_conn *c);
static void conn_pump_in(struct transport_conn *c);
static void stop_maybe_finish(struct transport *t);

/* ---- small helpers ------------------------------------------------------- */

static size_t op_row(uint8_t op)
{
    size_t i = 0;
    while (i < OP_ROWS_COUNT && op_rows[i].op != op)
        i++;
    return i;
}

static void count_request(struct transport *t, uint8_t op)
{
    metrics_counter_add(&t->m.requests[op_row(op)], 1);
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000u;
}

static void count_error(struct transport *t, int code)
{
    int num = code < 0 ? -code : code;
    size_t i = 0;
    while (i < ERR_ROWS_COUNT && err_rows[i].num != num)
        i++;
    metrics_counter_add(&t->m.errors[i], 1);
}

static bool op_is_admin(uint8_t op)
{
    return op >= INBOX_OP_ADD_NODE && op <= INBOX_OP_SNAPSHOT;
}

static bool role_may_admin(enum inbox_role role)
{
    return role == INBOX_ROLE_ADMIN || role == INBOX_ROLE_NODE;
}

/* Encodes m into a fresh frame_buf (any thread). */
static struct frame_buf *frame_encode(const struct inbox_msg *m, int *rc_out)
{
    size_t need = 0;
    int rc = inbox_msg_encode(m, NULL, 0, &need);
    if (rc != INBOX_ERANGE) {
        *rc_out = rc == 0 ? INBOX_EINTERNAL : rc;
        return NULL;
    }
    struct frame_buf *f = malloc(sizeof *f + need);
    if (f == NULL) {
        *rc_out = INBOX_ENOMEM;
        return NULL;
    }
    size_t got = 0;
    rc = inbox_msg_encode(m, f->data, need, &got);
    assert(rc == 0 && got == need);
    (void)rc;
    f->next = NULL;
    f->len = got;
    f->off = 0;
    *rc_out = 0;
    return f;
}

static void error_msg_fill(struct inbox_msg *m, uint8_t version, uint8_t op,
                           uint64_t request_id, int code, const char *message)
{
    memset(m, 0, sizeof *m);
    m->hdr.version = version ? version : INBOX_PROTO_VERSION_MIN;
    m->hdr.opcode = op;
    m->hdr.flags = INBOX_FLAG_RESPONSE | INBOX_FLAG_ERROR;
    m->hdr.request_id = request_id;
    m->body.error.code = (uint16_t)(-code);
    if (message == NULL)
        message = inbox_strerror(code);
    size_t len = strlen(message);
    if (len > INBOX_FRAME_TEXT_BYTES_MAX)
        len = INBOX_FRAME_TEXT_BYTES_MAX;
    m->body.error.message.ptr = (const uint8_t *)message;
    m->body.error.message.len = (uint32_t)len;
    if (code == INBOX_EPROTO_VERSION) {
        m->body.error.version_min = INBOX_PROTO_VERSION_MIN;
        m->body.error.version_max = INBOX_PROTO_VERSION_MAX;
    }
}

static void conn_ref(struct transport_conn *c)
{
    unsigned prev = atomic_fetch_add(&c->refs, 1);
    assert(prev > 0);
    (void)prev;
}

void transport_conn_ref(struct transport_conn *conn)
{
    conn_ref(conn);
}

void transport_conn_unref(struct transport_conn *conn)
{
    if (conn == NULL)
        return;
    unsigned prev = atomic_fetch_sub(&conn->refs, 1);
    assert(prev > 0);
    if (prev == 1) {
        /* Everything but the struct was released when the handles closed
         * (the handles hold a reference until then). */
        assert(conn->state == CONN_CLOSED && conn->handles_open == 0);
        free(conn);
    }
}

static size_t conn_output_bytes(const struct transport_conn *c)
{
    size_t n = c->out_plain_bytes + c->write_bytes;
    if (c->tls != NULL)
        n += tls_conn_cipher_pending(c->tls);
    return n;
}

static bool conn_invariants(const struct transport_conn *c)
{
    const struct transport *t = c->t;
    if (c->state > CONN_CLOSED)
        return false;
    if (c->inflight > t->cfg.conn_inflight_max)
        return false;
    if (c->paused && c->reading)
        return false;
    if (c->state != CONN_READY && c->state != CONN_DRAINING && c->inflight)
        return false;
    if (c->rbuf_off > c->rbuf_len || c->plain_off > c->plain_len)
        return false;
    if (c->hdr_seen > INBOX_FRAME_HEADER_BYTES)
        return false;
    if (c->body_cap > INBOX_FRAME_BODY_BYTES_MAX)
        return false;
    return true;
}

/* Requests may be handed out (invariant 1). */
static bool conn_may_dispatch(const struct transport_conn *c)
{
    const struct transport *t = c->t;
    if (c->state != CONN_HELLO && c->state != CONN_READY)
        return false;
    return c->inflight < t->cfg.conn_inflight_max &&
           conn_output_bytes(c) <= t->cfg.conn_output_bytes_max;
}

/* ---- output
 * ------------------------------------------------------------------ */

/* Put c on the round's flush list (it holds a reference until flushed). */
static void conn_defer_flush(struct transport_conn *c)
{
    if (c->flush_queued)
        return;
    c->flush_queued = true;
    transport_conn_ref(c);
    c->flush_next = c->t->flush_list;
    c->t->flush_list = c;
}

static void conn_queue_frame(struct transport_conn *c, struct frame_buf *f)
{
    assert(c->state != CONN_CLOSED);
    f->next = NULL;
    if (c->out_tail != NULL)
        c->out_tail->next = f;
    else
        c->out_head = f;
    c->out_tail = f;
    c->out_plain_bytes += f->len;
    if (c->t->batching)
        conn_defer_flush(c);
    else
        conn_flush(c);
}

/* Encodes and queues a frame made on the loop thread. */
static void conn_send_msg(struct transport_conn *c, const struct inbox_msg *m)
{
    int rc = 0;
    struct frame_buf *f = frame_encode(m, &rc);
    if (f == NULL) {
        log_error("net", "cannot encode a frame", "conn=%" PRIu64 " err=%s",
                  c->id, inbox_err_name(rc));
        conn_close(c, "encode failed");
        return;
    }
    conn_queue_frame(c, f);
}

/* ERROR for the frame with header h (NULL: unreadable, request id 0). */
static void conn_send_error(struct transport_conn *c,
                            const struct inbox_frame_header *h, int code,
                            const char *message)
{
    struct inbox_msg m;
    error_msg_fill(&m, c->version, h ? h->opcode : 0, h ? h->request_id : 0,
                   code, message);
    count_error(c->t, code);
    conn_send_msg(c, &m);
}

static void conn_drop_input(struct transport_conn *c)
{
    c->rbuf_off = c->rbuf_len;
    c->plain_off = c->plain_len;
}

static void conn_stop_reading(struct transport_conn *c)
{
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static void conn_timer_done(uv_timer_t *timer);

/* HELLO/READY/HANDSHAKE -> DRAINING. */
static void conn_drain(struct transport_conn *c, bool graceful)
{
    assert(c->state != CONN_DRAINING && c->state != CONN_CLOSED);
    c->state = CONN_DRAINING;
    c->drain_graceful = graceful;
    c->paused = false;
    conn_stop_reading(c);
    conn_drop_input(c);
    uv_timer_start(&c->timer, conn_timer_done, c->t->cfg.drain_timeout_ms, 0);
    conn_flush(c);
}

/* A connection-level error: ERROR frame, then close once it is flushed. */
static void conn_fatal(struct transport_conn *c,
                       const struct inbox_frame_header *h, int code,
                       const char *message)
{
    log_info("net", "closing connection after a protocol error",
             "conn=%" PRIu64 " peer=%s err=%s request_id=%" PRIu64, c->id,
             c->peer, inbox_err_name(code), h ? h->request_id : 0);
    conn_send_error(c, h, code, message);
    if (c->state != CONN_CLOSED)
        conn_drain(c, false);
}

static void write_done(uv_write_t *req, int status);
static void shutdown_done(uv_shutdown_t *req, int status);

static bool conn_drain_ready_for_close_notify(const struct transport_conn *c)
{
    return c->state == CONN_DRAINING && c->out_head == NULL &&
           !c->close_notify_queued && (!c->drain_graceful || c->inflight == 0);
}

/* Frames -> TLS -> socket, as far as the bounds let; in DRAINING, ends
 * with close_notify and the shutdown of the write side. */
static void conn_flush(struct transport_conn *c)
{
    if (c->state == CONN_CLOSED || c->tls == NULL)
        return;
    /* Small frames are gathered into one TLS record (up to a record's
     * plaintext), so a burst of answers costs one record, not one each. */
    uint8_t gather[INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX];
    while (c->out_head != NULL) {
        struct frame_buf *f = c->out_head;
        const uint8_t *src = f->data + f->off;
        size_t len = f->len - f->off;
        if (f->next != NULL && len < sizeof gather) {
            len = 0;
            for (struct frame_buf *g = f; g != NULL && len < sizeof gather;
                 g = g->next) {
                size_t n = g->len - g->off;
                if (n > sizeof gather - len)
                    n = sizeof gather - len;
                memcpy(gather + len, g->data + g->off, n);
                len += n;
            }
            src = gather;
        }
        size_t took = 0;
        int rc = tls_conn_write_plain(c->tls, src, len, &took);
        if (rc != 0) {
            log_warn("net", "tls write failed", "conn=%" PRIu64 " err=%s",
                     c->id, inbox_err_name(rc));
            conn_close(c, "tls write failed");
            return;
        }
        if (took == 0)
            break;
        c->out_plain_bytes -= took;
        while (took > 0) { /* consume across the frames gathered */
            f = c->out_head;
            size_t n = f->len - f->off;
            if (n > took)
                n = took;
            f->off += n;
            took -= n;
            if (f->off == f->len) {
                c->out_head = f->next;
                if (c->out_head == NULL)
                    c->out_tail = NULL;
                free(f);
            }
        }
    }
    if (conn_drain_ready_for_close_notify(c)) {
        c->close_notify_queued = true;
        if (tls_conn_handshake_done(c->tls) && tls_conn_error(c->tls) == 0)
            (void)tls_conn_close(c->tls);
    }
    size_t pending = tls_conn_cipher_pending(c->tls);
    if (!c->writing && pending > 0) {
        struct write_req *w = malloc(sizeof *w + pending);
        if (w == NULL) {
            conn_close(c, "out of memory");
            return;
        }
        w->conn = c;
        w->len = tls_conn_pull_cipher(c->tls, w->data, pending);
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
        int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done);
        if (rc != 0) {
            free(w);
            conn_close(c, "write failed");
            return;
        }
        c->writing = true;
        c->write_bytes = w->len;
    }
    if (c->state == CONN_DRAINING && c->close_notify_queued && !c->writing &&
        !c->shutdown_sent) {
        c->shutdown_sent = true;
        if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp,
                        shutdown_done) != 0)
            conn_close(c, "shutdown failed");
    }
}

static void conn_maybe_resume(struct transport_conn *c)
{
    if (c->paused && conn_may_dispatch(c)) {
        c->paused = false;
        conn_pump_in(c);
    }
}

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct transport_conn *c = w->conn;
    size_t len = w->len;
    free(w);
    c->writing = false;
    c->write_bytes = 0;
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("net", "write failed", "conn=%" PRIu64 " err=%s", c->id,
                      uv_strerror(status));
        conn_close(c, "write failed");
        return;
    }
    metrics_counter_add(&c->t->m.bytes_out, len);
    conn_flush(c);
    conn_maybe_resume(c);
}

/* ---- input -----------------------------------------------------------------
 */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct transport_conn *c = h->data;
    assert(c->rbuf_off == c->rbuf_len);
    if (c->rbuf == NULL)
        c->rbuf = malloc(INBOX_CONN_READ_BYTES);
    c->rbuf_off = c->rbuf_len = 0;
    *buf = uv_buf_init((char *)c->rbuf, c->rbuf ? INBOX_CONN_READ_BYTES : 0);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct transport_conn *c = s->data;
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        conn_close(c, "out of memory");
        return;
    }
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "peer closed" : "read failed");
        return;
    }
    metrics_counter_add(&c->t->m.bytes_in, (uint64_t)nread);
    if (c->state == CONN_DRAINING) {
        return; /* lingering after shutdown: discard until EOF */
    }
    c->rbuf_off = 0;
    c->rbuf_len = (size_t)nread;
    conn_pump_in(c);
}

static void conn_tls_failed(struct transport_conn *c, int rc)
{
    char reason[INBOX_TLS_ERRMSG_BYTES + 8];
    log_quote(reason, sizeof reason, tls_conn_error_message(c->tls));
    log_warn("net", "tls refused a connection",
             "conn=%" PRIu64 " peer=%s err=%s reason=%s", c->id, c->peer,
             inbox_err_name(rc), reason);
    metrics_counter_add(&c->t->m.tls_failed, 1);
    if (c->state == CONN_HANDSHAKE)
        conn_drain(c, false); /* the alert, if any, still goes out */
    else
        conn_close(c, "tls failed");
}

/* TLS -> plain. Returns 1 if plaintext came out, 0 if none, -1 if the
 * connection left the reading states. */
static int conn_decrypt(struct transport_conn *c)
{
    assert(c->plain_off == c->plain_len);
    if (c->plain == NULL) {
        c->plain = malloc(INBOX_CONN_PLAIN_BYTES);
        if (c->plain == NULL) {
            conn_close(c, "out of memory");
            return -1;
        }
    }
    bool was_open = tls_conn_handshake_done(c->tls);
    size_t got = 0;
    int rc =
        tls_conn_read_plain(c->tls, c->plain, INBOX_CONN_PLAIN_BYTES, &got);
    if (rc != 0) {
        conn_tls_failed(c, rc);
        return -1;
    }
    if (!was_open && tls_conn_handshake_done(c->tls)) {
        c->role = tls_conn_peer_role(c->tls);
        c->state = CONN_HELLO;
        log_debug("net", "tls open", "conn=%" PRIu64 " peer=%s role=%s name=%s",
                  c->id, c->peer, cert_role_name(c->role),
                  tls_conn_peer_name(c->tls));
    }
    c->plain_off = 0;
    c->plain_len = got;
    if (got == 0 && tls_conn_peer_closed(c->tls)) {
        conn_close(c, "peer sent close_notify");
        return -1;
    }
    return got > 0;
}

static void conn_on_hello(struct transport_conn *c, const struct inbox_frame *f)
{
    const struct inbox_frame_header *h = &f->hdr;
    if (h->opcode != INBOX_OP_HELLO) {
        conn_fatal(c, h, INBOX_EPROTO, "the first frame must be HELLO");
        return;
    }
    count_request(c->t, h->opcode);
    struct inbox_msg req;
    if (inbox_msg_decode(h, f->body, &req) != 0) {
        conn_fatal(c, h, INBOX_EPROTO, "malformed HELLO");
        return;
    }
    if (c->refusing) {
        conn_fatal(c, h, INBOX_EBUSY, "too many connections");
        return;
    }
    unsigned lo = req.body.hello_req.version_min;
    unsigned hi = req.body.hello_req.version_max;
    if (hi > INBOX_PROTO_VERSION_MAX)
        hi = INBOX_PROTO_VERSION_MAX;
    if (lo < INBOX_PROTO_VERSION_MIN)
        lo = INBOX_PROTO_VERSION_MIN;
    if (lo > hi) {
        conn_fatal(c, h, INBOX_EPROTO_VERSION, NULL);
        return;
    }
    struct inbox_msg resp;
    memset(&resp, 0, sizeof resp);
    resp.hdr.version = (uint8_t)hi;
    resp.hdr.opcode = INBOX_OP_HELLO;
    resp.hdr.flags = INBOX_FLAG_RESPONSE;
    resp.hdr.request_id = h->request_id;
    resp.body.hello_resp.version = (uint8_t)hi;
    resp.body.hello_resp.node_id = c->t->cfg.node_id;
    resp.body.hello_resp.body_bytes_max = INBOX_FRAME_BODY_BYTES_MAX;
    resp.body.hello_resp.shard_count = c->t->cfg.shard_count;
    c->version = (uint8_t)hi;
    c->parser.version = (uint8_t)hi;
    c->state = CONN_READY;
    uv_timer_stop(&c->timer);
    conn_send_msg(c, &resp);
}

static void conn_dispatch(struct transport_conn *c, const struct inbox_msg *m)
{
    struct transport *t = c->t;
    struct transport_req *req = calloc(1, sizeof *req);
    if (req == NULL) {
        conn_close(c, "out of memory");
        return;
    }
    req->x.conn = c;
    req->x.is_req = true;
    req->request_id = m->hdr.request_id;
    req->opcode = m->hdr.opcode;
    req->start_us = mono_us();
    conn_ref(c);
    c->inflight++;
    atomic_fetch_add(&t->reqs_live, 1);
    struct transport *saved = tl_loop;
    tl_loop = t;
    t->cfg.on_request(t->cfg.arg, req, m);
    tl_loop = saved;
}

/* One whole frame from the parser, in HELLO or READY. */
static void conn_on_frame(struct transport_conn *c, const struct inbox_frame *f)
{
    const struct inbox_frame_header *h = &f->hdr;
    if (h->flags & (INBOX_FLAG_RESPONSE | INBOX_FLAG_PUSH)) {
        conn_fatal(c, h, INBOX_EPROTO, "responses and pushes go to clients");
        return;
    }
    if (c->state == CONN_HELLO) {
        conn_on_hello(c, f);
        return;
    }
    assert(c->state == CONN_READY);
    count_request(c->t, h->opcode);
    if (h->opcode == INBOX_OP_HELLO) {
        conn_fatal(c, h, INBOX_EPROTO, "HELLO was already answered");
        return;
    }
    struct inbox_msg m;
    int rc = inbox_msg_decode(h, f->body, &m);
    if (rc == INBOX_EUNKNOWN_OP) {
        conn_send_error(c, h, INBOX_EUNKNOWN_OP, NULL);
        return;
    }
    if (rc != 0) {
        conn_fatal(c, h, INBOX_EPROTO, "malformed body");
        return;
    }
    if (h->opcode == INBOX_OP_PING) {
        struct inbox_msg pong;
        memset(&pong, 0, sizeof pong);
        pong.hdr = *h;
        pong.hdr.flags = INBOX_FLAG_RESPONSE;
        conn_send_msg(c, &pong);
        return;
    }
    if (op_is_admin(h->opcode) && !role_may_admin(c->role)) {
        conn_send_error(c, h, INBOX_EDENIED,
                        "admin operations need an admin certificate");
        return;
    }
    if (h->opcode == INBOX_OP_RAFT && c->role != INBOX_ROLE_NODE) {
        conn_send_error(c, h, INBOX_EDENIED,
                        "raft traffic needs a node certificate");
        return;
    }
    conn_dispatch(c, &m);
}

/* Makes the body buffer big enough for the frame whose header is in
 * hdr_peek, unless its body is wholly in the `avail` bytes that follow
 * (then the parser hands it out in place). Invariant 6. */
static bool conn_body_reserve(struct transport_conn *c, size_t avail)
{
    struct inbox_frame_header h;
    if (inbox_frame_header_decode(c->hdr_peek, &h) != 0)
        return true; /* the parser refuses it without touching the buffer */
    if (h.body_bytes <= avail || h.body_bytes <= c->body_cap)
        return true;
    free(c->body);
    c->body = malloc(h.body_bytes);
    c->body_cap = c->body ? h.body_bytes : 0;
    c->parser.body_buf = c->body;
    if (c->body == NULL) {
        conn_close(c, "out of memory");
        return false;
    }
    return true;
}

static void conn_parse_error(struct transport_conn *c, int rc,
                             const struct inbox_frame *f)
{
    /* The header's fields are meaningful only if its magic was right. */
    bool readable = c->hdr_seen == INBOX_FRAME_HEADER_BYTES &&
                    memcmp(c->hdr_peek, "INBX", 4) == 0;
    conn_fatal(c, readable ? &f->hdr : NULL, rc, NULL);
}

/* Feeds plain bytes to the parser, at most up to the end of the current
 * frame's header first (so the body buffer is sized from the header before
 * body bytes arrive), and handles a frame if one comes out. */
static void conn_parse_some(struct transport_conn *c)
{
    const uint8_t *in = c->plain + c->plain_off;
    size_t len = c->plain_len - c->plain_off;
    size_t n = len;
    if (c->hdr_seen < INBOX_FRAME_HEADER_BYTES) {
        if (c->hdr_seen == 0 && len >= INBOX_FRAME_HEADER_BYTES) {
            memcpy(c->hdr_peek, in, INBOX_FRAME_HEADER_BYTES);
            c->hdr_seen = INBOX_FRAME_HEADER_BYTES;
            if (!conn_body_reserve(c, len - INBOX_FRAME_HEADER_BYTES))
                return;
        } else {
            size_t want = INBOX_FRAME_HEADER_BYTES - c->hdr_seen;
            n = want < len ? want : len;
            memcpy(c->hdr_peek + c->hdr_seen, in, n);
            c->hdr_seen += n;
            if (c->hdr_seen == INBOX_FRAME_HEADER_BYTES &&
                !conn_body_reserve(c, 0))
                return;
        }
    }
    size_t used = 0;
    struct inbox_frame f;
    int rc = inbox_parser_feed(&c->parser, in, n, &used, &f);
    c->plain_off += used;
    if (rc == INBOX_PARSE_MORE)
        return;
    if (rc < 0) {
        conn_parse_error(c, rc, &f);
        return;
    }
    c->hdr_seen = 0;
    conn_on_frame(c, &f);
    if (c->body_cap > INBOX_CONN_BODY_KEEP_BYTES) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
        c->parser.body_buf = NULL;
    }
}

static bool conn_reads_input(const struct transport_conn *c)
{
    return c->state == CONN_HANDSHAKE || c->state == CONN_HELLO ||
           c->state == CONN_READY;
}

/* Moves input through TLS and the parser until it is used up or a bound
 * pauses the connection (invariant 1); then reading resumes if it may. */
static void conn_pump_in(struct transport_conn *c)
{
    if (c->in_pump)
        return; /* the outer call re-checks the bounds */
    c->in_pump = true;
    while (conn_reads_input(c)) {
        if (c->plain_off < c->plain_len) {
            if (!conn_may_dispatch(c)) {
                if (!c->paused)
                    metrics_counter_add(&c->t->m.read_pauses, 1);
                c->paused = true;
                conn_stop_reading(c);
                break;
            }
            conn_parse_some(c);
            continue;
        }
        int rc = conn_decrypt(c);
        if (rc < 0)
            break;
        if (rc > 0)
            continue;
        if (c->rbuf_off == c->rbuf_len)
            break;
        size_t took = 0;
        rc = tls_conn_feed_cipher(c->tls, c->rbuf + c->rbuf_off,
                                  c->rbuf_len - c->rbuf_off, &took);
        if (rc != 0) {
            conn_tls_failed(c, rc);
            break;
        }
        /* read_plain above emptied TLS's inbound buffer as far as whole
         * records go, and a record is smaller than that buffer. */
        assert(took > 0);
        c->rbuf_off += took;
    }
    c->in_pump = false;
    if (c->state == CONN_CLOSED)
        return;
    if (conn_reads_input(c) && !c->paused) {
        if (c->rbuf_off == c->rbuf_len && c->plain_off == c->plain_len) {
            free(c->plain); /* idle connections hold no buffers */
            c->plain = NULL;
            c->plain_off = c->plain_len = 0;
        }
        if (!c->reading) {
            c->reading = true;
            if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
                conn_close(c, "read start failed");
                return;
            }
        }
    }
    conn_flush(c);
    (void)conn_invariants; /* used by assert only */
    assert(c->state == CONN_CLOSED || conn_invariants(c));
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    struct transport_conn *c = req->data;
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        conn_close(c, "shutdown failed");
        return;
    }
    /* Linger: read and discard until the peer's EOF or the drain timer. */
    conn_drop_input(c);
    c->reading = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_close(c, "drained");
}

static void conn_timer_done(uv_timer_t *timer)
{
    struct transport_conn *c = timer->data;
    if (c->state == CONN_DRAINING) {
        conn_close(c, "drain timeout");
        return;
    }
    log_info("net", "handshake timeout", "conn=%" PRIu64 " peer=%s", c->id,
             c->peer);
    conn_close(c, "handshake timeout");
}

/* ---- connection lifetime --------------------------------------------------
 */

static void conn_handle_closed(uv_handle_t *h)
{
    struct transport_conn *c = h->data;
    struct transport *t = c->t;
    assert(c->handles_open > 0);
    if (--c->handles_open > 0)
        return;
    tls_conn_free(c->tls);
    c->tls = NULL;
    free(c->rbuf);
    free(c->plain);
    free(c->body);
    c->rbuf = c->plain = c->body = NULL;
    while (c->out_head != NULL) {
        struct frame_buf *f = c->out_head;
        c->out_head = f->next;
        free(f);
    }
    c->out_tail = NULL;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->refusing) {
        t->refusing_count--;
    } else {
        t->conns_count--;
        metrics_gauge_add(&t->m.open, -1);
    }
    transport_conn_unref(c); /* the handles' reference */
    stop_maybe_finish(t);
}

/* any -> CLOSED. Idempotent. */
static void conn_close(struct transport_conn *c, const char *why)
{
    if (c->state == CONN_CLOSED)
        return;
    struct transport *t = c->t;
    bool was_open = c->version != 0;
    log_debug("net", "connection closed", "conn=%" PRIu64 " peer=%s why=%s",
              c->id, c->peer, why);
    c->state = CONN_CLOSED;
    metrics_counter_add(&t->m.closed, 1);
    conn_stop_reading(c);
    c->paused = false;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    if (was_open && t->cfg.on_conn_closed != NULL)
        t->cfg.on_conn_closed(t->cfg.arg, c);
}

static void format_peer(struct transport_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct transport *t = server->data;
    if (status < 0) {
        log_warn("net", "accept failed", "err=%s", uv_strerror(status));
        return;
    }
    struct transport_conn *c = calloc(1, sizeof *c);
    if (c == NULL || uv_tcp_init(t->loop, &c->tcp) != 0) {
        free(c);
        log_error("net", "cannot accept: out of memory", "%s", "");
        return;
    }
    /* From here the conn is on the list and closes through conn_close. */
    c->t = t;
    atomic_init(&c->refs, 1);
    c->id = ++t->next_conn_id;
    c->tcp.data = c;
    uv_timer_init(t->loop, &c->timer);
    c->timer.data = c;
    c->shutdown_req.data = c;
    c->handles_open = 2;
    c->next = t->conns;
    if (t->conns != NULL)
        t->conns->prev = c;
    t->conns = c;
    inbox_parser_init(&c->parser, NULL, 0);
    /* The body buffer is sized per frame (invariant 6): the limit the
     * parser checks headers against is the protocol's, not the buffer's. */
    c->parser.body_cap = INBOX_FRAME_BODY_BYTES_MAX;
    c->refusing = t->conns_count >= t->cfg.conn_max;
    if (c->refusing)
        t->refusing_count++;
    else {
        t->conns_count++;
        metrics_gauge_add(&t->m.open, 1);
    }
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, "accept failed");
        return;
    }
    format_peer(c);
    uv_tcp_nodelay(&c->tcp, 1);
    /* A peer that vanished without a FIN is found by TCP keepalive. */
    uv_tcp_keepalive(&c->tcp, 1, TCP_KEEPALIVE_DELAY_S);
    if (c->refusing) {
        metrics_counter_add(&t->m.refused, 1);
        log_warn("net", "too many connections", "conn=%" PRIu64 " peer=%s",
                 c->id, c->peer);
        if (t->refusing_count > INBOX_CONN_REFUSING_MAX) {
            conn_close(c, "too many connections");
            return;
        }
    } else {
        metrics_counter_add(&t->m.accepted, 1);
    }
    if (t->stopping) {
        conn_close(c, "stopping");
        return;
    }
    if (tls_conn_new(t->cfg.tls, NULL, &c->tls) != 0) {
        conn_close(c, "out of memory");
        return;
    }
    uv_timer_start(&c->timer, conn_timer_done, t->cfg.handshake_timeout_ms, 0);
    conn_pump_in(c); /* starts reading */
}

/* ---- answers and pushes from any thread ------------------------------------
 */

/* Applies an answer or push on the loop thread; consumes x. */
static void xitem_apply(struct transport *t, struct xitem *x)
{
    struct transport_conn *c = x->conn;
    struct frame_buf *f = x->frame;
    if (x->is_req) {
        assert(c->inflight > 0);
        c->inflight--;
        atomic_fetch_sub(&t->reqs_live, 1);
        free(x);
        bool wanted = c->state == CONN_READY ||
                      (c->state == CONN_DRAINING && c->drain_graceful);
        if (wanted && f != NULL) {
            conn_queue_frame(c, f);
        } else {
            free(f);
            metrics_counter_add(&t->m.dropped, 1);
            if (wanted)
                conn_close(c, "out of memory"); /* an answer was lost */
        }
        if (c->state != CONN_CLOSED) {
            if (t->batching) {
                conn_defer_flush(c); /* flushed and resumed after the round */
            } else {
                conn_flush(c);
                conn_maybe_resume(c);
            }
        }
    } else {
        free(x);
        if (c->state == CONN_READY && f != NULL &&
            conn_output_bytes(c) > t->cfg.conn_output_bytes_max) {
            log_warn("net", "closing a connection too slow for its pushes",
                     "conn=%" PRIu64 " peer=%s", c->id, c->peer);
            conn_close(c, "slow consumer");
        }
        if (c->state == CONN_READY && f != NULL) {
            metrics_counter_add(&t->m.pushes, 1);
            conn_queue_frame(c, f);
        } else {
            free(f);
        }
    }
    transport_conn_unref(c);
}

static void xq_submit(struct transport *t, struct xitem *x)
{
    /* Inline only for the connection being pumped: answering another one
     * inline could resume it and re-enter on_request. */
    if (tl_loop == t && x->conn->in_pump) {
        xitem_apply(t, x);
        return;
    }
    uv_mutex_lock(&t->mu);
    x->next = NULL;
    if (t->xq_tail != NULL)
        t->xq_tail->next = x;
    else
        t->xq_head = x;
    t->xq_tail = x;
    if (!t->async_closed)
        uv_async_send(&t->async);
    uv_mutex_unlock(&t->mu);
}

static struct xitem *xq_take(struct transport *t)
{
    uv_mutex_lock(&t->mu);
    struct xitem *x = t->xq_head;
    t->xq_head = t->xq_tail = NULL;
    uv_mutex_unlock(&t->mu);
    return x;
}

static void respond_frame(struct transport_req *req, struct frame_buf *f)
{
    bool already = atomic_exchange(&req->answered, true);
    assert(!already && "a request answered twice");
    (void)already;
    struct transport_conn *c = req->x.conn;
    metrics_histogram_record(&c->t->m.latency[op_row(req->opcode)],
                             mono_us() - req->start_us);
    req->x.frame = f;
    xq_submit(c->t, &req->x);
}

void transport_respond_error(struct transport_req *req, int code,
                             const char *message)
{
    assert(req != NULL && code < 0 && code <= -1000);
    struct transport_conn *c = req->x.conn;
    struct inbox_msg m;
    error_msg_fill(&m, c->version, req->opcode, req->request_id, code, message);
    count_error(c->t, code);
    int rc = 0;
    respond_frame(req, frame_encode(&m, &rc));
}

void transport_respond(struct transport_req *req, const struct inbox_msg *resp)
{
    assert(req != NULL && resp != NULL);
    struct transport_conn *c = req->x.conn;
    struct inbox_msg m = *resp;
    m.hdr.version = c->version;
    m.hdr.opcode = req->opcode;
    m.hdr.request_id = req->request_id;
    m.hdr.flags =
        (uint16_t)(INBOX_FLAG_RESPONSE | (resp->hdr.flags & INBOX_FLAG_ERROR));
    int rc = 0;
    struct frame_buf *f = frame_encode(&m, &rc);
    if (f == NULL && rc != INBOX_ENOMEM) {
        log_error("net", "cannot encode a response",
                  "conn=%" PRIu64 " op=%u err=%s", c->id, req->opcode,
                  inbox_err_name(rc));
        transport_respond_error(req, INBOX_EINTERNAL,
                                "the response could not be encoded");
        return;
    }
    if (m.hdr.flags & INBOX_FLAG_ERROR)
        count_error(c->t, -(int)resp->body.error.code);
    respond_frame(req, f);
}

uint64_t transport_req_id(const struct transport_req *req)
{
    return req->request_id;
}

uint8_t transport_req_opcode(const struct transport_req *req)
{
    return req->opcode;
}

void *transport_req_arg(const struct transport_req *req)
{
    return req->x.conn->t->cfg.arg;
}

struct transport_conn *transport_req_conn(const struct transport_req *req)
{
    return req->x.conn;
}

int transport_push(struct transport_conn *conn, const struct inbox_msg *msg)
{
    assert(conn != NULL && msg != NULL);
    struct inbox_msg m = *msg;
    m.hdr.version = conn->version ? conn->version : INBOX_PROTO_VERSION_MIN;
    m.hdr.opcode = INBOX_OP_NOTIFY;
    m.hdr.flags = INBOX_FLAG_PUSH;
    m.hdr.request_id = INBOX_REQUEST_ID_PUSH;
    int rc = 0;
    struct frame_buf *f = frame_encode(&m, &rc);
    if (f == NULL)
        return rc;
    struct xitem *x = calloc(1, sizeof *x);
    if (x == NULL) {
        free(f);
        return INBOX_ENOMEM;
    }
    conn_ref(conn);
    x->conn = conn;
    x->frame = f;
    xq_submit(conn->t, x);
    return 0;
}

uint64_t transport_conn_id(const struct transport_conn *conn)
{
    return conn->id;
}

enum inbox_role transport_conn_role(const struct transport_conn *conn)
{
    return conn->role;
}

size_t transport_conn_output_bytes(const struct transport_conn *conn)
{
    return conn_output_bytes(conn);
}

uint32_t transport_conn_inflight(const struct transport_conn *conn)
{
    return conn->inflight;
}

/* ---- stop -------------------------------------------------------------------
 */

static void t_handle_closed(uv_handle_t *h)
{
    struct transport *t = h->data;
    assert(t->handles_open > 0);
    if (h == (uv_handle_t *)&t->listener) {
        t->listening = false;
        stop_maybe_finish(t);
    }
    if (--t->handles_open == 0)
        atomic_store(&t->stopped, true);
}

/* Once every connection's handles closed: close the transport's own. */
static void stop_maybe_finish(struct transport *t)
{
    if (!t->stopping || t->finishing || t->conns != NULL || t->listening)
        return;
    t->finishing = true;
    /* Answers already queued concern closed connections: drop them now,
     * and let later ones wait in the queue for transport_free. */
    for (struct xitem *x = xq_take(t); x != NULL;) {
        struct xitem *next = x->next;
        xitem_apply(t, x);
        x = next;
    }
    uv_timer_stop(&t->stop_timer);
    uv_close((uv_handle_t *)&t->stop_timer, t_handle_closed);
    uv_mutex_lock(&t->mu);
    t->async_closed = true;
    uv_mutex_unlock(&t->mu);
    uv_close((uv_handle_t *)&t->async, t_handle_closed);
}

static void stop_deadline_done(uv_timer_t *timer)
{
    struct transport *t = timer->data;
    for (struct transport_conn *c = t->conns; c != NULL; c = c->next) {
        if (c->state != CONN_CLOSED) {
            log_warn("net", "stop deadline: closing a connection",
                     "conn=%" PRIu64 " inflight=%u", c->id, c->inflight);
            conn_close(c, "stop deadline");
        }
    }
}

static void stop_begin(struct transport *t)
{
    t->stopping = true;
    log_info("net", "transport stopping", "connections=%u", t->conns_count);
    if (t->listening)
        uv_close((uv_handle_t *)&t->listener, t_handle_closed);
    for (struct transport_conn *c = t->conns; c != NULL; c = c->next) {
        if (c->state == CONN_READY)
            conn_drain(c, true);
        else if (c->state == CONN_HANDSHAKE || c->state == CONN_HELLO)
            conn_close(c, "stopping");
    }
    uv_timer_start(&t->stop_timer, stop_deadline_done,
                   atomic_load(&t->stop_deadline_ms), 0);
    stop_maybe_finish(t);
}

static void async_cb(uv_async_t *a)
{
    struct transport *t = a->data;
    t->batching = true;
    for (struct xitem *x = xq_take(t); x != NULL;) {
        struct xitem *next = x->next;
        xitem_apply(t, x);
        x = next;
    }
    t->batching = false;
    while (t->flush_list != NULL) {
        struct transport_conn *c = t->flush_list;
        t->flush_list = c->flush_next;
        c->flush_queued = false;
        if (c->state != CONN_CLOSED) {
            conn_flush(c);
            conn_maybe_resume(c);
        }
        transport_conn_unref(c);
    }
    if (atomic_load(&t->stop_requested) && !t->stopping)
        stop_begin(t);
}

void transport_stop(struct transport *t, uint32_t deadline_ms)
{
    if (atomic_exchange(&t->stop_requested, true))
        return;
    atomic_store(&t->stop_deadline_ms, deadline_ms);
    uv_mutex_lock(&t->mu);
    if (!t->async_closed)
        uv_async_send(&t->async);
    uv_mutex_unlock(&t->mu);
}

bool transport_stopped(const struct transport *t)
{
    return atomic_load(&((struct transport *)t)->stopped);
}

/* ---- create, start, free
 * ------------------------------------------------------ */

static void descs_build(struct transport *t)
{
    struct metrics_desc *d = t->descs;
    size_t n = 0;
#define DESC(nm, hp, ty, lb, val)                                              \
    d[n++] = (struct metrics_desc){nm, hp, ty, lb, val, 0}
    DESC("inbox_transport_connections_accepted_total",
         "client connections accepted", METRICS_COUNTER, NULL, &t->m.accepted);
    DESC("inbox_transport_connections_refused_total",
         "client connections refused over connections_max", METRICS_COUNTER,
         NULL, &t->m.refused);
    DESC("inbox_transport_connections_closed_total",
         "client connections closed", METRICS_COUNTER, NULL, &t->m.closed);
    DESC("inbox_transport_connections_open", "client connections open",
         METRICS_GAUGE, NULL, &t->m.open);
    DESC("inbox_transport_tls_failures_total",
         "connections refused or broken by TLS", METRICS_COUNTER, NULL,
         &t->m.tls_failed);
    DESC("inbox_transport_read_pauses_total",
         "times a connection stopped reading at a bound", METRICS_COUNTER, NULL,
         &t->m.read_pauses);
    DESC("inbox_transport_responses_dropped_total",
         "answers for connections already closed", METRICS_COUNTER, NULL,
         &t->m.dropped);
    DESC("inbox_transport_pushes_total", "server pushes sent", METRICS_COUNTER,
         NULL, &t->m.pushes);
    DESC("inbox_transport_received_bytes_total", "bytes read from clients",
         METRICS_COUNTER, NULL, &t->m.bytes_in);
    DESC("inbox_transport_sent_bytes_total", "bytes written to clients",
         METRICS_COUNTER, NULL, &t->m.bytes_out);
    for (size_t i = 0; i <= OP_ROWS_COUNT; i++)
        DESC("inbox_transport_requests_total", "request frames by opcode",
             METRICS_COUNTER,
             i < OP_ROWS_COUNT ? op_rows[i].label : "op=\"unknown\"",
             &t->m.requests[i]);
    for (size_t i = 0; i <= OP_ROWS_COUNT; i++) {
        DESC("inbox_transport_request_seconds",
             "time from a request's dispatch to its answer, by opcode",
             METRICS_HISTOGRAM,
             i < OP_ROWS_COUNT ? op_rows[i].label : "op=\"unknown\"",
             &t->m.latency[i]);
        d[n - 1].scale = 1e-6;
    }
    for (size_t i = 0; i <= ERR_ROWS_COUNT; i++)
        DESC("inbox_transport_errors_total", "ERROR frames sent by code",
             METRICS_COUNTER,
             i < ERR_ROWS_COUNT ? err_rows[i].label : "code=\"other\"",
             &t->m.errors[i]);
#undef DESC
    assert(n <= DESCS_MAX);
    t->descs_count = n;
}

const struct metrics_desc *transport_metrics(const struct transport *t,
                                             size_t *count)
{
    *count = t->descs_count;
    return t->descs;
}

int transport_new(uv_loop_t *loop, const struct transport_config *config,
                  struct transport **out)
{
    if (loop == NULL || config == NULL || out == NULL || config->tls == NULL ||
        config->on_request == NULL || config->host == NULL)
        return INBOX_EINVAL;
    struct transport *t = calloc(1, sizeof *t);
    if (t == NULL)
        return INBOX_ENOMEM;
    t->loop = loop;
    t->cfg = *config;
    if (t->cfg.conn_max == 0)
        t->cfg.conn_max = TRANSPORT_CONN_MAX_DEFAULT;
    if (t->cfg.conn_inflight_max == 0)
        t->cfg.conn_inflight_max = TRANSPORT_CONN_INFLIGHT_MAX_DEFAULT;
    if (t->cfg.conn_output_bytes_max == 0)
        t->cfg.conn_output_bytes_max = TRANSPORT_CONN_OUTPUT_BYTES_MAX_DEFAULT;
    if (t->cfg.handshake_timeout_ms == 0)
        t->cfg.handshake_timeout_ms = INBOX_CONN_HANDSHAKE_TIMEOUT_MS_DEFAULT;
    if (t->cfg.drain_timeout_ms == 0)
        t->cfg.drain_timeout_ms = INBOX_CONN_DRAIN_TIMEOUT_MS_DEFAULT;
    if (uv_mutex_init(&t->mu) != 0) {
        free(t);
        return INBOX_ENOMEM;
    }
    if (uv_async_init(loop, &t->async, async_cb) != 0) {
        uv_mutex_destroy(&t->mu);
        free(t);
        return INBOX_ENOMEM;
    }
    t->async.data = t;
    uv_timer_init(loop, &t->stop_timer);
    t->stop_timer.data = t;
    t->handles_open = 2;
    atomic_init(&t->stop_requested, false);
    atomic_init(&t->stop_deadline_ms, 0);
    atomic_init(&t->stopped, false);
    atomic_init(&t->reqs_live, 0);
    descs_build(t);
    *out = t;
    return 0;
}

int transport_start(struct transport *t)
{
    assert(!t->listening && !t->stopping);
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } addr;
    memset(&addr, 0, sizeof addr);
    if (uv_ip4_addr(t->cfg.host, t->cfg.port, &addr.in4) != 0 &&
        uv_ip6_addr(t->cfg.host, t->cfg.port, &addr.in6) != 0)
        return INBOX_EINVAL;
    int rc = uv_tcp_init(t->loop, &t->listener);
    if (rc != 0)
        return rc;
    t->listener.data = t;
    t->handles_open++;
    t->listening = true;
    rc = uv_tcp_bind(&t->listener, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG,
                       on_connection);
    int len = sizeof addr;
    if (rc == 0)
        rc = uv_tcp_getsockname(&t->listener, &addr.sa, &len);
    if (rc != 0) {
        t->listening = false;
        uv_close((uv_handle_t *)&t->listener, t_handle_closed);
        return rc;
    }
    t->port = ntohs(addr.sa.sa_family == AF_INET ? addr.in4.sin_port
                                                 : addr.in6.sin6_port);
    log_info("net", "listening", "addr=%s:%u", t->cfg.host, t->port);
    return 0;
}

uint16_t transport_port(const struct transport *t)
{
    return t->port;
}

void transport_free(struct transport *t)
{
    if (t == NULL)
        return;
    assert(transport_stopped(t) && "transport_free before the stop finished");
    /* Late answers for closed connections. */
    for (struct xitem *x = xq_take(t); x != NULL;) {
        struct xitem *next = x->next;
        if (x->is_req)
            atomic_fetch_sub(&t->reqs_live, 1);
        free(x->frame);
        struct transport_conn *c = x->conn;
        free(x);
        transport_conn_unref(c);
        x = next;
    }
    assert(atomic_load(&t->reqs_live) == 0 &&
           "every request must be answered before transport_free");
    uv_mutex_destroy(&t->mu);
    free(t);
}
