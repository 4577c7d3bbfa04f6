/*
 * peer.c — outgoing peer links: Raft bytes queued from any thread, framed
 * as RAFT requests and streamed over one mutual-TLS connection per peer
 * (see net/peer.h and docs/transport.md, "Peer links").
 *
 * A link (struct peer_link) lives from peer_set_addr until peer_remove or
 * peer_free; it owns the peer's queue and counters. A connection (struct
 * peer_conn) is one attempt to reach the peer; it is made lazily when bytes
 * are queued and no connection exists, and freed by its handle's close
 * callback. A failed connection is detached from its link at once, so a
 * new attempt never waits for the old handle to finish closing.
 *
 * Connection states (struct peer_conn.state):
 *   CONNECTING  uv_tcp_connect in progress.
 *   TLS         connected; the client handshake runs (ClientHello sent).
 *   HELLO       TLS open, our HELLO (request id 1) sent, answer awaited.
 *   READY       HELLO answered with version 1: RAFT frames flow.
 *   CLOSING     uv_close called; the close callback frees the struct.
 * Transitions:
 *   CONNECTING -> TLS      connect_done
 *   TLS -> HELLO           conn_decrypt, when TLS reports the handshake done
 *   HELLO -> READY         conn_on_hello
 *   any -> CLOSING         conn_fail (a failure: queue dropped, backoff;
 *                          the connect timer bounds CONNECTING..HELLO) or
 *                          conn_close (stop, removal, address change)
 *
 * Invariants:
 *   1. conn->link != NULL exactly when conn->state != CLOSING, and then
 *      conn->link->conn == conn.
 *   2. conn->inflight <= inflight_frames_max; RAFT frames are built only in
 *      READY and only while under it. Each answer frees one slot.
 *   3. A link's staging frame (frame_off < frame_len) holds at most one
 *      frame: the next frame is built only once TLS took all of it.
 *   4. At most one uv_write per connection is in flight (writing), from
 *      the connection's own wbuf.
 *   5. A queue holds whole records ([u32 len][len bytes]); q_used (bytes
 *      between q_off and q_len) <= queue_bytes_max.
 *   6. Only the loop thread touches a link's loop fields (conn, backoff_ms,
 *      frame*); the fields marked "under mu" are shared with senders.
 */
#include "net/peer.h"

#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/endian.h"
#include "inbox/error.h"
#include "net/codec.h"
#include "server/log.h"

#define TCP_KEEPALIVE_DELAY_S 60
#define HELLO_REQUEST_ID 1u
#define PEER_CLIENT_NAME "inboxd-peer"
/* The ciphertext one write may carry: all TLS may hold (invariant 3 of
 * net/tls.h). */
#define WBUF_BYTES (INBOX_TLS_OUT_BYTES_MAX + INBOX_TLS_SLACK_BYTES)
#define QUEUE_GROW_MIN_BYTES (64u * INBOX_KIB)
#define RAFT_LEN_BYTES 4u
#define HOST_BYTES 48u

enum conn_state {
    PC_CONNECTING = 0,
    PC_TLS = 1,
    PC_HELLO = 2,
    PC_READY = 3,
    PC_CLOSING = 4,
};

struct peer_conn {
    struct peers *p;
    struct peer_link *link; /* invariant 1 */
    enum conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect_timeout_ms, until READY */
    unsigned handles; /* open handles: the struct goes with the last */
    uv_connect_t connect_req;
    uv_write_t write_req;
    bool writing; /* invariant 4 */
    struct tls_conn *tls;
    char host[HOST_BYTES]; /* the name the server's certificate must carry */
    uint64_t next_request_id;
    uint32_t inflight; /* invariant 2 */
    struct inbox_parser parser;
    uint8_t *rbuf; /* INBOX_CONN_READ_BYTES of ciphertext from the socket */
    uint8_t *wbuf; /* WBUF_BYTES of ciphertext being written */
    uint8_t plain[INBOX_CONN_PLAIN_BYTES];
    uint8_t body[PEER_RESPONSE_BODY_BYTES_MAX];
};

struct peer_link {
    struct peer_link *next; /* written once before publication, or by the
                               loop under mu when unlinking */
    uint64_t id;
    /* under mu */
    char addr[PEER_ADDR_BYTES];
    char host[HOST_BYTES];
    struct sockaddr_storage sa;
    bool addr_changed;
    bool removed;
    uint8_t *q; /* invariant 5 */
    size_t q_off, q_len, q_cap;
    uint64_t q_payload_bytes; /* the callers' bytes among q_off..q_len */
    uint64_t backoff_until_ns;
    struct peer_link_info info; /* connected, counters, last_error */
    /* loop thread only */
    struct peer_conn *conn;
    uint32_t backoff_ms;
    uint32_t fail_streak; /* failures since the last success */
    uint8_t *frame;       /* staging frame, invariant 3 */
    size_t frame_cap, frame_len, frame_off;
};

struct peer_metrics {
    struct metrics_counter frames_sent;
    struct metrics_counter bytes_sent;
    struct metrics_counter dropped_bytes;
    struct metrics_counter connects;
    struct metrics_counter connect_failures;
    struct metrics_counter error_responses;
    struct metrics_gauge connected;
};
#define DESCS_COUNT 7u

struct peers {
    struct peer_config cfg;
    uv_async_t async;
    unsigned handles_open; /* loop: the async + each peer_conn's two */
    bool stopping;         /* loop: stop_begin ran */
    uv_mutex_t mu;
    struct peer_link *links; /* under mu (the head; see peer_link.next) */
    uint32_t links_count;    /* under mu */
    bool stop_requested;     /* under mu */
    bool async_closed;       /* under mu */
    bool async_pending;      /* under mu: a wake-up is on its way */
    atomic_bool stopped;
    struct peer_metrics m;
    struct metrics_desc descs[DESCS_COUNT];
};

static void conn_flush(struct peer_conn *c);

/* ---- small helpers ------------------------------------------------------- */

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static struct peer_link *link_find(struct peers *p, uint64_t id)
{
    for (struct peer_link *l = p->links; l != NULL; l = l->next)
        if (l->id == id && !l->removed)
            return l;
    return NULL;
}

static size_t link_q_used(const struct peer_link *l)
{
    return l->q_len - l->q_off;
}

/* Under mu: drops every queued byte, counting the callers' bytes. */
static void link_drop_queue(struct peers *p, struct peer_link *l)
{
    l->info.dropped_bytes += l->q_payload_bytes;
    metrics_counter_add(&p->m.dropped_bytes, l->q_payload_bytes);
    l->q_off = l->q_len = 0;
    l->q_payload_bytes = 0;
    l->info.queued_bytes = 0;
}

/* "a.b.c.d:port" or "[v6]:port" -> socket address and host literal. */
static int addr_parse(const char *hostport, struct sockaddr_storage *sa,
                      char host[HOST_BYTES])
{
    size_t n = strnlen(hostport, PEER_ADDR_BYTES);
    if (n == 0 || n >= PEER_ADDR_BYTES)
        return INBOX_EINVAL;
    const char *port_s;
    size_t host_len;
    bool v6 = hostport[0] == '[';
    if (v6) {
        const char *end = strchr(hostport, ']');
        if (end == NULL || end[1] != ':')
            return INBOX_EINVAL;
        host_len = (size_t)(end - hostport - 1);
        memcpy(host, hostport + 1, host_len < HOST_BYTES ? host_len : 0);
        port_s = end + 2;
    } else {
        const char *colon = strrchr(hostport, ':');
        if (colon == NULL || memchr(hostport, ':', (size_t)(colon - hostport)))
            return INBOX_EINVAL;
        host_len = (size_t)(colon - hostport);
        memcpy(host, hostport, host_len < HOST_BYTES ? host_len : 0);
        port_s = colon + 1;
    }
    if (host_len == 0 || host_len >= HOST_BYTES)
        return INBOX_EINVAL;
    host[host_len] = '\0';
    unsigned long port = 0;
    if (*port_s == '\0' || strlen(port_s) > 5)
        return INBOX_EINVAL;
    for (const char *d = port_s; *d != '\0'; d++) {
        if (*d < '0' || *d > '9')
            return INBOX_EINVAL;
        port = port * 10u + (unsigned long)(*d - '0');
    }
    if (port == 0 || port > 65535u)
        return INBOX_EINVAL;
    memset(sa, 0, sizeof *sa);
    int rc = v6 ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa)
                : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa);
    return rc == 0 ? 0 : INBOX_EINVAL;
}

/* ---- connection lifetime ------------------------------------------------- */

static void stop_maybe_finish(struct peers *p)
{
    if (p->stopping && p->handles_open == 0)
        atomic_store(&p->stopped, true);
}

static void conn_closed(uv_handle_t *h)
{
    struct peer_conn *c = h->data;
    struct peers *p = c->p;
    assert(c->state == PC_CLOSING && c->link == NULL);
    assert(p->handles_open > 0 && c->handles > 0);
    p->handles_open--;
    if (--c->handles > 0)
        return;
    assert(!c->writing);
    tls_conn_free(c->tls);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
    stop_maybe_finish(p);
}

/* any -> CLOSING, without blame: the caller drops the link's queue if it
 * should. Pending connect and write callbacks run with UV_ECANCELED before
 * conn_closed. */
static void conn_close(struct peer_conn *c)
{
    if (c->state == PC_CLOSING)
        return;
    struct peer_link *l = c->link;
    assert(l != NULL && l->conn == c);
    bool was_ready = c->state == PC_READY;
    c->state = PC_CLOSING;
    c->link = NULL;
    l->conn = NULL;
    l->frame_len = l->frame_off = 0; /* a partly sent frame is lost */
    uv_mutex_lock(&c->p->mu);
    l->info.connected = false;
    l->info.inflight = 0;
    uv_mutex_unlock(&c->p->mu);
    if (was_ready)
        metrics_gauge_add(&c->p->m.connected, -1);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

/* A failure: record why, drop the queue, back off, close. Stale Raft
 * messages are useless after a reconnect; Raft resends what matters. */
static void conn_fail(struct peer_conn *c, const char *why)
{
    if (c->state == PC_CLOSING)
        return;
    struct peers *p = c->p;
    struct peer_link *l = c->link;
    bool before_ready = c->state != PC_READY;
    uint32_t wait_ms = l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2u > PEER_BACKOFF_MS_MAX
                        ? PEER_BACKOFF_MS_MAX
                        : l->backoff_ms * 2u;
    uv_mutex_lock(&p->mu);
    snprintf(l->info.last_error, sizeof l->info.last_error, "%s", why);
    l->backoff_until_ns = now_ns() + (uint64_t)wait_ms * 1000000u;
    if (before_ready) {
        l->info.connect_failures++;
        metrics_counter_add(&p->m.connect_failures, 1);
    }
    link_drop_queue(p, l);
    uv_mutex_unlock(&p->mu);
    char quoted[PEER_ERROR_BYTES + 8];
    log_quote(quoted, sizeof quoted, why);
    if (l->fail_streak++ == 0)
        log_warn("net", "peer link failed",
                 "self=%" PRIu64 " peer=%" PRIu64 " host=%s why=%s "
                 "backoff_ms=%u",
                 p->cfg.self_id, l->id, c->host, quoted, wait_ms);
    else
        log_debug("net", "peer link failed again",
                  "self=%" PRIu64 " peer=%" PRIu64 " why=%s backoff_ms=%u",
                  p->cfg.self_id, l->id, quoted, wait_ms);
    conn_close(c);
}

static void conn_fail_tls(struct peer_conn *c, int rc)
{
    char why[PEER_ERROR_BYTES];
    snprintf(why, sizeof why, "%s: %s", inbox_err_name(rc),
             tls_conn_error_message(c->tls));
    conn_fail(c, why);
}

/* ---- output -------------------------------------------------------------- */

/* Under mu: the records from the head of l's queue that fit one batch. */
static size_t queue_batch_bytes(const struct peer_link *l, size_t *end_off)
{
    size_t off = l->q_off, batch = 0;
    while (off < l->q_len) {
        uint32_t len = get_u32le(l->q + off);
        if (batch + len > INBOX_RAFT_BATCH_BYTES_MAX)
            break;
        batch += len;
        off += PEER_RECORD_OVERHEAD_BYTES + len;
    }
    *end_off = off;
    return batch;
}

/* Checks a staged frame the way the receiver will (debug builds). */
static bool frame_decodes(const uint8_t *frame, size_t len, size_t batch)
{
    struct inbox_frame_header h;
    struct inbox_msg m;
    return inbox_frame_header_decode(frame, &h) == 0 &&
           h.body_bytes == len - INBOX_FRAME_HEADER_BYTES &&
           inbox_msg_decode(&h, frame + INBOX_FRAME_HEADER_BYTES, &m) == 0 &&
           m.body.raft_req.batch.len == batch;
}

/* Packs the head of the queue into one RAFT frame in the staging buffer.
 * Returns true if a frame was built. */
static bool frame_build(struct peer_conn *c)
{
    struct peers *p = c->p;
    struct peer_link *l = c->link;
    assert(c->state == PC_READY && l->frame_len == 0);
    uv_mutex_lock(&p->mu);
    size_t end_off = 0;
    size_t batch = queue_batch_bytes(l, &end_off);
    if (batch == 0) {
        uv_mutex_unlock(&p->mu);
        return false;
    }
    size_t need = INBOX_FRAME_HEADER_BYTES + RAFT_LEN_BYTES + batch;
    if (need > l->frame_cap) {
        /* Grows to the high-water mark once and is reused. */
        uint8_t *f = realloc(l->frame, need);
        if (f == NULL) {
            uv_mutex_unlock(&p->mu);
            conn_fail(c, "out of memory for a frame");
            return false;
        }
        l->frame = f;
        l->frame_cap = need;
    }
    struct inbox_frame_header h = {
        .version = INBOX_PROTO_VERSION_MIN,
        .opcode = INBOX_OP_RAFT,
        .flags = 0,
        .request_id = c->next_request_id++,
        .body_bytes = (uint32_t)(RAFT_LEN_BYTES + batch),
    };
    inbox_frame_header_encode(l->frame, &h);
    uint8_t *w = l->frame + INBOX_FRAME_HEADER_BYTES;
    put_u32le(w, (uint32_t)batch);
    w += RAFT_LEN_BYTES;
    for (size_t off = l->q_off; off < end_off;) {
        uint32_t len = get_u32le(l->q + off);
        memcpy(w, l->q + off + PEER_RECORD_OVERHEAD_BYTES, len);
        w += len;
        off += PEER_RECORD_OVERHEAD_BYTES + len;
    }
    l->q_off = end_off;
    l->q_payload_bytes -= batch;
    if (l->q_off == l->q_len)
        l->q_off = l->q_len = 0;
    l->info.queued_bytes = link_q_used(l);
    l->info.frames_sent++;
    l->info.bytes_sent += batch;
    c->inflight++;
    l->info.inflight = c->inflight;
    uv_mutex_unlock(&p->mu);
    metrics_counter_add(&p->m.frames_sent, 1);
    metrics_counter_add(&p->m.bytes_sent, batch);
    l->frame_len = need;
    l->frame_off = 0;
    assert((size_t)(w - l->frame) == need);
    (void)frame_decodes; /* used by assert only */
    assert(frame_decodes(l->frame, need, batch));
    return true;
}

static void write_done(uv_write_t *req, int status)
{
    struct peer_conn *c = req->data;
    c->writing = false;
    if (c->state == PC_CLOSING)
        return;
    if (status < 0) {
        char why[PEER_ERROR_BYTES];
        snprintf(why, sizeof why, "write failed: %s", uv_strerror(status));
        conn_fail(c, why);
        return;
    }
    conn_flush(c);
}

/* Staged frame -> TLS -> socket; builds the next frame from the queue
 * whenever TLS took the last one and a slot is free (invariants 2, 3). */
static void conn_flush(struct peer_conn *c)
{
    if (c->state == PC_CLOSING || c->tls == NULL)
        return;
    struct peer_link *l = c->link;
    for (;;) {
        if (l->frame_off < l->frame_len) {
            size_t took = 0;
            int rc = tls_conn_write_plain(c->tls, l->frame + l->frame_off,
                                          l->frame_len - l->frame_off, &took);
            if (rc != 0) {
                conn_fail_tls(c, rc);
                return;
            }
            if (took == 0)
                break; /* TLS is full: write, then come back */
            l->frame_off += took;
            if (l->frame_off == l->frame_len)
                l->frame_off = l->frame_len = 0;
            continue;
        }
        if (c->state != PC_READY ||
            c->inflight >= c->p->cfg.inflight_frames_max)
            break;
        if (!frame_build(c))
            break;
    }
    if (c->state == PC_CLOSING)
        return;
    if (!c->writing && tls_conn_cipher_pending(c->tls) > 0) {
        size_t n = tls_conn_pull_cipher(c->tls, c->wbuf, WBUF_BYTES);
        uv_buf_t b = uv_buf_init((char *)c->wbuf, (unsigned)n);
        int rc =
            uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_done);
        if (rc != 0) {
            char why[PEER_ERROR_BYTES];
            snprintf(why, sizeof why, "write failed: %s", uv_strerror(rc));
            conn_fail(c, why);
            return;
        }
        c->writing = true;
    }
}

/* TLS open: send HELLO (protocol §2.2), versions 1 to 1. */
static void conn_send_hello(struct peer_conn *c)
{
    struct peer_link *l = c->link;
    assert(l->frame_len == 0);
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = INBOX_PROTO_VERSION_MIN;
    m.hdr.opcode = INBOX_OP_HELLO;
    m.hdr.request_id = HELLO_REQUEST_ID;
    m.body.hello_req.version_min = INBOX_PROTO_VERSION_MIN;
    m.body.hello_req.version_max = INBOX_PROTO_VERSION_MIN;
    m.body.hello_req.client_name.ptr = (const uint8_t *)PEER_CLIENT_NAME;
    m.body.hello_req.client_name.len = sizeof PEER_CLIENT_NAME - 1;
    size_t need = 0;
    int rc = inbox_msg_encode(&m, NULL, 0, &need);
    assert(rc == INBOX_ERANGE);
    if (need > l->frame_cap) {
        uint8_t *f = realloc(l->frame, need);
        if (f == NULL) {
            conn_fail(c, "out of memory for HELLO");
            return;
        }
        l->frame = f;
        l->frame_cap = need;
    }
    rc = inbox_msg_encode(&m, l->frame, l->frame_cap, &l->frame_len);
    assert(rc == 0);
    (void)rc;
    l->frame_off = 0;
    c->next_request_id = HELLO_REQUEST_ID + 1u;
    c->state = PC_HELLO;
}

/* ---- input --------------------------------------------------------------- */

static void conn_on_hello(struct peer_conn *c, const struct inbox_msg *m)
{
    struct peers *p = c->p;
    struct peer_link *l = c->link;
    char why[PEER_ERROR_BYTES];
    if (m->hdr.opcode != INBOX_OP_HELLO ||
        m->hdr.request_id != HELLO_REQUEST_ID) {
        conn_fail(c, "the answer to HELLO is not HELLO");
        return;
    }
    if (m->hdr.flags & INBOX_FLAG_ERROR) {
        snprintf(why, sizeof why, "HELLO refused: %s: %.*s",
                 inbox_err_name(-(int)m->body.error.code),
                 (int)m->body.error.message.len,
                 (const char *)m->body.error.message.ptr);
        conn_fail(c, why);
        return;
    }
    if (m->body.hello_resp.version != INBOX_PROTO_VERSION_MIN) {
        conn_fail(c, "HELLO chose a version we do not speak");
        return;
    }
    c->parser.version = m->body.hello_resp.version;
    c->state = PC_READY;
    uv_timer_stop(&c->timer);
    l->backoff_ms = PEER_BACKOFF_MS_MIN;
    l->fail_streak = 0;
    uv_mutex_lock(&p->mu);
    l->info.connected = true;
    l->info.connects++;
    uv_mutex_unlock(&p->mu);
    metrics_counter_add(&p->m.connects, 1);
    metrics_gauge_add(&p->m.connected, 1);
    log_debug("net", "peer link ready",
              "self=%" PRIu64 " peer=%" PRIu64 " host=%s node_id=%" PRIu64,
              p->cfg.self_id, l->id, c->host, m->body.hello_resp.node_id);
}

/* An answer to a RAFT frame: frees one in-flight slot (invariant 2). */
static void conn_on_raft_answer(struct peer_conn *c, const struct inbox_msg *m)
{
    struct peers *p = c->p;
    struct peer_link *l = c->link;
    if (m->hdr.opcode != INBOX_OP_RAFT || c->inflight == 0 ||
        m->hdr.request_id <= HELLO_REQUEST_ID ||
        m->hdr.request_id >= c->next_request_id) {
        conn_fail(c, "unexpected answer from the peer");
        return;
    }
    c->inflight--;
    bool error = (m->hdr.flags & INBOX_FLAG_ERROR) != 0;
    char why[PEER_ERROR_BYTES];
    if (error)
        snprintf(why, sizeof why, "RAFT answered %s: %.*s",
                 inbox_err_name(-(int)m->body.error.code),
                 (int)m->body.error.message.len,
                 (const char *)m->body.error.message.ptr);
    uv_mutex_lock(&p->mu);
    l->info.inflight = c->inflight;
    if (error) {
        l->info.error_responses++;
        snprintf(l->info.last_error, sizeof l->info.last_error, "%s", why);
    }
    uv_mutex_unlock(&p->mu);
    if (error) {
        metrics_counter_add(&p->m.error_responses, 1);
        char quoted[PEER_ERROR_BYTES + 8];
        log_warn("net", "peer refused a raft batch",
                 "self=%" PRIu64 " peer=%" PRIu64 " why=%s", p->cfg.self_id,
                 l->id, log_quote(quoted, sizeof quoted, why));
    }
}

static void conn_on_frame(struct peer_conn *c, const struct inbox_frame *f)
{
    const struct inbox_frame_header *h = &f->hdr;
    if (!(h->flags & INBOX_FLAG_RESPONSE) || (h->flags & INBOX_FLAG_PUSH)) {
        conn_fail(c, "the peer sent a frame that is not an answer");
        return;
    }
    struct inbox_msg m;
    if (inbox_msg_decode(h, f->body, &m) != 0) {
        conn_fail(c, "malformed answer from the peer");
        return;
    }
    if (c->state == PC_HELLO)
        conn_on_hello(c, &m);
    else if (c->state == PC_READY)
        conn_on_raft_answer(c, &m);
    else
        conn_fail(c, "an answer before HELLO");
}

/* Plaintext -> frames. Returns false once the connection closed. */
static bool conn_parse(struct peer_conn *c, const uint8_t *in, size_t len)
{
    while (len > 0 && c->state != PC_CLOSING) {
        size_t used = 0;
        struct inbox_frame f;
        int rc = inbox_parser_feed(&c->parser, in, len, &used, &f);
        in += used;
        len -= used;
        if (rc == INBOX_PARSE_MORE)
            break;
        if (rc < 0) {
            char why[PEER_ERROR_BYTES];
            snprintf(why, sizeof why, "bad frame from the peer: %s",
                     inbox_err_name(rc));
            conn_fail(c, why);
            break;
        }
        conn_on_frame(c, &f);
    }
    return c->state != PC_CLOSING;
}

/* TLS -> plaintext -> frames, until TLS has nothing whole left. Returns
 * false once the connection closed. */
static bool conn_decrypt(struct peer_conn *c)
{
    while (c->state != PC_CLOSING) {
        bool was_open = tls_conn_handshake_done(c->tls);
        size_t got = 0;
        int rc = tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
        if (rc != 0) {
            conn_fail_tls(c, rc);
            return false;
        }
        if (!was_open && tls_conn_handshake_done(c->tls))
            conn_send_hello(c);
        if (got == 0) {
            if (tls_conn_peer_closed(c->tls))
                conn_fail(c, "the peer sent close_notify");
            break;
        }
        if (!conn_parse(c, c->plain, got))
            return false;
    }
    return c->state != PC_CLOSING;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct peer_conn *c = h->data;
    *buf = uv_buf_init((char *)c->rbuf, INBOX_CONN_READ_BYTES);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct peer_conn *c = s->data;
    if (nread == 0 || c->state == PC_CLOSING)
        return;
    if (nread < 0) {
        char why[PEER_ERROR_BYTES];
        snprintf(why, sizeof why, "%s",
                 nread == UV_EOF ? "the peer closed the connection"
                                 : uv_strerror((int)nread));
        conn_fail(c, why);
        return;
    }
    size_t off = 0;
    unsigned stalls = 0;
    while (off < (size_t)nread) {
        size_t took = 0;
        int rc = tls_conn_feed_cipher(c->tls, c->rbuf + off,
                                      (size_t)nread - off, &took);
        if (rc != 0) {
            conn_fail_tls(c, rc);
            return;
        }
        off += took;
        if (!conn_decrypt(c))
            return;
        /* A full inbound buffer takes nothing; conn_decrypt then empties
         * it as far as whole records go, and a record is smaller than the
         * buffer, so the next feed must take something. */
        stalls = took == 0 ? stalls + 1u : 0u;
        if (stalls > 1u) {
            conn_fail(c, "tls took no input");
            return;
        }
    }
    conn_flush(c);
}

static void connect_done(uv_connect_t *req, int status)
{
    struct peer_conn *c = req->data;
    if (c->state == PC_CLOSING)
        return;
    char why[PEER_ERROR_BYTES];
    if (status < 0) {
        snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
        conn_fail(c, why);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, TCP_KEEPALIVE_DELAY_S);
    int rc = tls_conn_new(c->p->cfg.tls, c->host, &c->tls);
    if (rc != 0) {
        snprintf(why, sizeof why, "tls: %s", inbox_err_name(rc));
        conn_fail(c, why);
        return;
    }
    c->state = PC_TLS;
    rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc != 0) {
        snprintf(why, sizeof why, "read: %s", uv_strerror(rc));
        conn_fail(c, why);
        return;
    }
    conn_flush(c); /* the ClientHello */
}

static void conn_timeout(uv_timer_t *t)
{
    struct peer_conn *c = t->data;
    char why[PEER_ERROR_BYTES];
    snprintf(why, sizeof why, "no HELLO answer within %u ms",
             c->p->cfg.connect_timeout_ms);
    conn_fail(c, why);
}

/* Opens a connection for l (loop thread, no connection yet). */
static void link_open(struct peers *p, struct peer_link *l)
{
    assert(l->conn == NULL);
    struct peer_conn *c = calloc(1, sizeof *c);
    uint8_t *rbuf = malloc(INBOX_CONN_READ_BYTES);
    uint8_t *wbuf = malloc(WBUF_BYTES);
    if (c == NULL || rbuf == NULL || wbuf == NULL ||
        uv_tcp_init(p->cfg.loop, &c->tcp) != 0) {
        free(c);
        free(rbuf);
        free(wbuf);
        uv_mutex_lock(&p->mu);
        snprintf(l->info.last_error, sizeof l->info.last_error,
                 "out of memory for a connection");
        link_drop_queue(p, l);
        uv_mutex_unlock(&p->mu);
        return;
    }
    uv_timer_init(p->cfg.loop, &c->timer); /* cannot fail */
    /* From here c closes through conn_close / conn_fail. */
    c->handles = 2;
    p->handles_open += 2;
    c->p = p;
    c->link = l;
    l->conn = c;
    c->state = PC_CONNECTING;
    c->rbuf = rbuf;
    c->wbuf = wbuf;
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->write_req.data = c;
    inbox_parser_init(&c->parser, c->body, sizeof c->body);
    struct sockaddr_storage sa;
    uv_mutex_lock(&p->mu);
    sa = l->sa;
    memcpy(c->host, l->host, sizeof c->host);
    uv_mutex_unlock(&p->mu);
    uv_timer_start(&c->timer, conn_timeout, p->cfg.connect_timeout_ms, 0);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp,
                            (const struct sockaddr *)&sa, connect_done);
    if (rc != 0) {
        char why[PEER_ERROR_BYTES];
        snprintf(why, sizeof why, "connect: %s", uv_strerror(rc));
        conn_fail(c, why);
    }
}

/* ---- the loop's side of the hand-off ------------------------------------- */

static void link_free(struct peer_link *l)
{
    assert(l->conn == NULL);
    free(l->q);
    free(l->frame);
    free(l);
}

/* Applies what other threads asked of l, then opens or feeds its link. */
static void link_service(struct peers *p, struct peer_link *l)
{
    uv_mutex_lock(&p->mu);
    bool changed = l->addr_changed;
    l->addr_changed = false;
    if (changed && l->conn != NULL)
        link_drop_queue(p, l);
    bool queued = link_q_used(l) > 0;
    uv_mutex_unlock(&p->mu);
    if (changed && l->conn != NULL)
        conn_close(l->conn);
    if (!queued)
        return;
    if (l->conn == NULL)
        link_open(p, l);
    else
        conn_flush(l->conn);
}

static void handle_closed(uv_handle_t *h)
{
    struct peers *p = h->data;
    assert(p->handles_open > 0);
    p->handles_open--;
    stop_maybe_finish(p);
}

/* Closes every link and the async handle (loop thread). */
static void stop_begin(struct peers *p)
{
    if (p->stopping)
        return;
    p->stopping = true;
    uv_mutex_lock(&p->mu);
    struct peer_link *head = p->links;
    p->async_closed = true;
    for (struct peer_link *l = head; l != NULL; l = l->next)
        link_drop_queue(p, l);
    uv_mutex_unlock(&p->mu);
    for (struct peer_link *l = head; l != NULL; l = l->next)
        if (l->conn != NULL)
            conn_close(l->conn);
    uv_close((uv_handle_t *)&p->async, handle_closed);
}

/* Unlinks removed links (under mu) and frees them after closing their
 * connections. */
static void reap_removed(struct peers *p)
{
    struct peer_link *dead = NULL;
    uv_mutex_lock(&p->mu);
    struct peer_link **pp = &p->links;
    while (*pp != NULL) {
        struct peer_link *l = *pp;
        if (l->removed) {
            *pp = l->next;
            l->next = dead;
            dead = l;
            p->links_count--;
        } else {
            pp = &l->next;
        }
    }
    uv_mutex_unlock(&p->mu);
    while (dead != NULL) {
        struct peer_link *l = dead;
        dead = l->next;
        if (l->conn != NULL)
            conn_close(l->conn);
        link_free(l);
    }
}

static void async_cb(uv_async_t *a)
{
    struct peers *p = a->data;
    uv_mutex_lock(&p->mu);
    bool stop = p->stop_requested;
    p->async_pending = false;
    uv_mutex_unlock(&p->mu);
    if (stop) {
        stop_begin(p);
        return;
    }
    reap_removed(p);
    /* Other threads only ever push new links at the head, so the chain
     * from the head read here is stable (invariant 6). */
    uv_mutex_lock(&p->mu);
    struct peer_link *head = p->links;
    uv_mutex_unlock(&p->mu);
    for (struct peer_link *l = head; l != NULL; l = l->next)
        link_service(p, l);
}

/* Under mu: wake the loop once per round. */
static void kick(struct peers *p)
{
    if (p->async_pending || p->async_closed)
        return;
    p->async_pending = true;
    uv_async_send(&p->async);
}

/* ---- public API ---------------------------------------------------------- */

static void metrics_init(struct peers *p)
{
    struct peer_metrics *m = &p->m;
    const struct metrics_desc d[DESCS_COUNT] = {
        {"inbox_peer_frames_sent_total", "RAFT frames sent to peers",
         METRICS_COUNTER, NULL, &m->frames_sent, 0},
        {"inbox_peer_sent_bytes_total", "Raft message bytes sent to peers",
         METRICS_COUNTER, NULL, &m->bytes_sent, 0},
        {"inbox_peer_dropped_bytes_total",
         "Raft message bytes dropped (queue bound, backoff, link failure)",
         METRICS_COUNTER, NULL, &m->dropped_bytes, 0},
        {"inbox_peer_connects_total", "peer links that got past HELLO",
         METRICS_COUNTER, NULL, &m->connects, 0},
        {"inbox_peer_connect_failures_total",
         "peer connection attempts that failed before HELLO was answered",
         METRICS_COUNTER, NULL, &m->connect_failures, 0},
        {"inbox_peer_error_responses_total", "ERROR answers to RAFT frames",
         METRICS_COUNTER, NULL, &m->error_responses, 0},
        {"inbox_peer_links_connected", "peer links open and past HELLO",
         METRICS_GAUGE, NULL, &m->connected, 0},
    };
    memcpy(p->descs, d, sizeof d);
}

int peer_new(const struct peer_config *c, struct peers **out)
{
    if (c == NULL || out == NULL || c->loop == NULL || c->tls == NULL)
        return INBOX_EINVAL;
    if (c->queue_bytes_max != 0 && c->queue_bytes_max < PEER_QUEUE_BYTES_MIN)
        return INBOX_EINVAL;
    if (c->inflight_frames_max > PEER_INFLIGHT_FRAMES_MAX)
        return INBOX_EINVAL;
    struct peers *p = calloc(1, sizeof *p);
    if (p == NULL)
        return INBOX_ENOMEM;
    p->cfg = *c;
    if (p->cfg.queue_bytes_max == 0)
        p->cfg.queue_bytes_max = PEER_QUEUE_BYTES_MAX_DEFAULT;
    if (p->cfg.inflight_frames_max == 0)
        p->cfg.inflight_frames_max = PEER_INFLIGHT_FRAMES_MAX_DEFAULT;
    if (p->cfg.connect_timeout_ms == 0)
        p->cfg.connect_timeout_ms = PEER_CONNECT_TIMEOUT_MS_DEFAULT;
    if (uv_mutex_init(&p->mu) != 0)
        goto err_after_alloc;
    if (uv_async_init(c->loop, &p->async, async_cb) != 0)
        goto err_after_mutex;
    p->async.data = p;
    p->handles_open = 1;
    atomic_init(&p->stopped, false);
    metrics_init(p);
    *out = p;
    return 0;

err_after_mutex:
    uv_mutex_destroy(&p->mu);
err_after_alloc:
    free(p);
    return INBOX_ENOMEM;
}

int peer_set_addr(struct peers *p, uint64_t id, const char *hostport)
{
    if (id == 0 || hostport == NULL)
        return INBOX_EINVAL;
    struct sockaddr_storage sa;
    char host[HOST_BYTES];
    int rc = addr_parse(hostport, &sa, host);
    if (rc != 0)
        return rc;
    struct peer_link *fresh = calloc(1, sizeof *fresh);
    if (fresh == NULL)
        return INBOX_ENOMEM;
    uv_mutex_lock(&p->mu);
    if (p->stop_requested) {
        rc = INBOX_ESHUTDOWN;
        goto out;
    }
    struct peer_link *l = link_find(p, id);
    if (l == NULL) {
        if (p->links_count >= PEER_LINKS_MAX) {
            rc = INBOX_ERANGE;
            goto out;
        }
        l = fresh;
        fresh = NULL;
        l->id = id;
        l->backoff_ms = PEER_BACKOFF_MS_MIN;
        l->next = p->links; /* publication: see async_cb */
        p->links = l;
        p->links_count++;
    } else if (strcmp(l->addr, hostport) == 0) {
        goto out; /* unchanged */
    }
    snprintf(l->addr, sizeof l->addr, "%s", hostport);
    memcpy(l->host, host, sizeof l->host);
    l->sa = sa;
    l->addr_changed = true;
    l->backoff_until_ns = 0; /* a new address deserves a try at once */
    kick(p);
out:
    uv_mutex_unlock(&p->mu);
    free(fresh);
    return rc;
}

int peer_remove(struct peers *p, uint64_t id)
{
    int rc = 0;
    uv_mutex_lock(&p->mu);
    struct peer_link *l = p->stop_requested ? NULL : link_find(p, id);
    if (p->stop_requested) {
        rc = INBOX_ESHUTDOWN;
    } else if (l == NULL) {
        rc = INBOX_ENOTFOUND;
    } else {
        l->removed = true;
        link_drop_queue(p, l);
        kick(p);
    }
    uv_mutex_unlock(&p->mu);
    return rc;
}

/* Under mu: room for one more record of len bytes (invariant 5). */
static int queue_reserve(struct peers *p, struct peer_link *l, size_t rec)
{
    if (link_q_used(l) + rec > p->cfg.queue_bytes_max)
        return INBOX_EBUSY;
    if (l->q_len + rec <= l->q_cap)
        return 0;
    if (l->q_off > 0) { /* compact: the loop only reads under mu too */
        memmove(l->q, l->q + l->q_off, link_q_used(l));
        l->q_len -= l->q_off;
        l->q_off = 0;
        if (l->q_len + rec <= l->q_cap)
            return 0;
    }
    size_t cap = l->q_cap ? l->q_cap * 2u : QUEUE_GROW_MIN_BYTES;
    if (cap < l->q_len + rec)
        cap = l->q_len + rec;
    if (cap > p->cfg.queue_bytes_max)
        cap = (size_t)p->cfg.queue_bytes_max;
    uint8_t *q = realloc(l->q, cap);
    if (q == NULL)
        return INBOX_ENOMEM;
    l->q = q;
    l->q_cap = cap;
    return 0;
}

int peer_send(struct peers *p, uint64_t to, const void *bytes, size_t len)
{
    if (bytes == NULL || len == 0)
        return INBOX_EINVAL;
    if (len > INBOX_RAFT_BATCH_BYTES_MAX)
        return INBOX_ERANGE;
    size_t rec = PEER_RECORD_OVERHEAD_BYTES + len;
    int rc = 0;
    uv_mutex_lock(&p->mu);
    struct peer_link *l = p->stop_requested ? NULL : link_find(p, to);
    if (p->stop_requested)
        rc = INBOX_ESHUTDOWN;
    else if (l == NULL)
        rc = INBOX_ENOTFOUND;
    else if (l->backoff_until_ns != 0 && now_ns() < l->backoff_until_ns)
        rc = INBOX_EBUSY;
    else
        rc = queue_reserve(p, l, rec);
    if (rc == 0) {
        put_u32le(l->q + l->q_len, (uint32_t)len);
        memcpy(l->q + l->q_len + PEER_RECORD_OVERHEAD_BYTES, bytes, len);
        l->q_len += rec;
        l->q_payload_bytes += len;
        l->info.queued_bytes = link_q_used(l);
        kick(p);
    } else if (l != NULL) {
        l->info.dropped_bytes += len;
        metrics_counter_add(&p->m.dropped_bytes, len);
    }
    uv_mutex_unlock(&p->mu);
    return rc;
}

int peer_link_info(struct peers *p, uint64_t id, struct peer_link_info *out)
{
    int rc = INBOX_ENOTFOUND;
    uv_mutex_lock(&p->mu);
    struct peer_link *l = link_find(p, id);
    if (l != NULL) {
        *out = l->info;
        rc = 0;
    }
    uv_mutex_unlock(&p->mu);
    return rc;
}

void peer_stop(struct peers *p)
{
    uv_mutex_lock(&p->mu);
    if (!p->stop_requested) {
        p->stop_requested = true;
        if (!p->async_closed)
            uv_async_send(&p->async);
    }
    uv_mutex_unlock(&p->mu);
}

bool peer_stopped(const struct peers *p)
{
    return atomic_load(&p->stopped);
}

void peer_free(struct peers *p)
{
    if (p == NULL)
        return;
    assert(peer_stopped(p));
    while (p->links != NULL) {
        struct peer_link *l = p->links;
        p->links = l->next;
        link_free(l);
    }
    uv_mutex_destroy(&p->mu);
    free(p);
}

const struct metrics_desc *peer_metrics(const struct peers *p, size_t *count)
{
    *count = DESCS_COUNT;
    return p->descs;
}
