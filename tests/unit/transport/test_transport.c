/* test_transport.c — net/transport and net/http_metrics over real sockets
 * on 127.0.0.1 and ephemeral ports. The server's loop runs on a thread; the
 * test's client is a blocking socket driving a net/tls client and the
 * codec. The test handler answers inline, or holds requests for the test
 * thread to answer later (from another thread than the loop's). Every wait
 * is bounded in time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "net/codec.h"
#include "net/http_metrics.h"
#include "net/tls.h"
#include "net/transport.h"
#include "server/log.h"
#include "server/metrics.h"
#include "tls_fixture.h"

#define WAIT_MS 10000
#define HELD_MAX 64
#define BIG_PAYLOAD_BYTES 60000u

static struct fixture fix;
static char log_path[FIX_PATH_BYTES + 16];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the server under test ---------------------------------------------- */

enum mode {
    MODE_IMMEDIATE, /* answer inside on_request */
    MODE_HOLD,      /* keep the request for the test thread */
};

struct server {
    uv_loop_t loop;
    struct tls_ctx *tls;
    struct transport *t;
    struct http_metrics *http;
    uv_thread_t thread;
    bool stopped_by_test;
    /* Handler state, shared with the test thread under mu. */
    uv_mutex_t mu;
    enum mode mode;
    struct transport_req *held[HELD_MAX];
    size_t held_count;
    size_t delivered;
    size_t conns_closed;
    size_t output_peak;
    struct transport_conn *watched;
};

static uint8_t big_payload[BIG_PAYLOAD_BYTES];

/* The answer the test node gives to a request of opcode `op`. */
static void answer(struct transport_req *req)
{
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    struct inbox_message msg = {.seq = 1, .enqueue_ts_ms = 1};
    struct inbox_code_u64 item = {.code = 0, .value = 5};
    switch (transport_req_opcode(req)) {
    case INBOX_OP_ENQUEUE:
        m.body.enqueue_resp.seq = transport_req_id(req) * 10u;
        break;
    case INBOX_OP_FETCH:
        msg.payload.ptr = big_payload;
        msg.payload.len = BIG_PAYLOAD_BYTES;
        m.body.fetch_resp.last_seq = 1;
        m.body.fetch_resp.count = 1;
        m.body.fetch_resp.messages = &msg;
        break;
    case INBOX_OP_WATCH:
        m.body.code_u64_resp.count = 1;
        m.body.code_u64_resp.items = &item;
        break;
    case INBOX_OP_ADD_NODE:
    case INBOX_OP_REMOVE_NODE:
    case INBOX_OP_TRANSFER_LEADER:
    case INBOX_OP_MOVE_REPLICA:
    case INBOX_OP_SNAPSHOT:
        m.body.admin_resp.epoch = 7;
        break;
    default:
        transport_respond_error(req, INBOX_EINVAL, "test node: no answer");
        return;
    }
    transport_respond(req, &m);
}

static void on_request(void *arg, struct transport_req *req,
                       const struct inbox_msg *msg)
{
    struct server *s = arg;
    struct transport_conn *conn = transport_req_conn(req);
    uv_mutex_lock(&s->mu);
    s->delivered++;
    if (msg->hdr.opcode == INBOX_OP_WATCH && s->watched == NULL) {
        transport_conn_ref(conn);
        s->watched = conn;
    }
    if (s->mode == MODE_HOLD && msg->hdr.opcode != INBOX_OP_WATCH) {
        assert_true(s->held_count < HELD_MAX);
        s->held[s->held_count++] = req;
    } else {
        answer(req);
        size_t out = transport_conn_output_bytes(conn);
        if (out > s->output_peak)
            s->output_peak = out;
    }
    uv_mutex_unlock(&s->mu);
}

static void on_conn_closed(void *arg, struct transport_conn *conn)
{
    (void)conn;
    struct server *s = arg;
    uv_mutex_lock(&s->mu);
    s->conns_closed++;
    uv_mutex_unlock(&s->mu);
}

static size_t render(void *arg, char *buf, size_t buf_bytes)
{
    struct server *s = arg;
    size_t n = 0;
    const struct metrics_desc *d = transport_metrics(s->t, &n);
    return metrics_render(buf, buf_bytes, d, n);
}

static void loop_main(void *arg)
{
    struct server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static struct tls_ctx *ctx_make(enum tls_side side, const char *ca,
                                const char *who)
{
    char crt[64], key[64], cacrt[64], msg[INBOX_TLS_ERRMSG_BYTES];
    snprintf(cacrt, sizeof cacrt, "%s.crt", ca);
    snprintf(crt, sizeof crt, "%s.crt", who);
    snprintf(key, sizeof key, "%s.key", who);
    struct tls_ctx_config cfg = {
        .side = side,
        .ca_path = fixture_path(&fix, cacrt),
        .cert_path = fixture_path(&fix, crt),
        .key_path = fixture_path(&fix, key),
    };
    struct tls_ctx *ctx = NULL;
    int rc = tls_ctx_new(&cfg, &ctx, msg, sizeof msg);
    if (rc != 0)
        fail_msg("tls_ctx_new(%s): %s: %s", who, inbox_err_name(rc), msg);
    return ctx;
}

/* Starts a transport (and the /metrics listener) with `cfg`'s bounds. */
static void server_start(struct server *s, const struct transport_config *b,
                         enum mode mode)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    assert_int_equal(uv_mutex_init(&s->mu), 0);
    s->mode = mode;
    s->tls = ctx_make(TLS_SIDE_SERVER, "ca", "n1");
    struct transport_config cfg = b ? *b : (struct transport_config){0};
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.tls = s->tls;
    cfg.node_id = 42;
    cfg.shard_count = 64;
    cfg.on_request = on_request;
    cfg.on_conn_closed = on_conn_closed;
    cfg.arg = s;
    assert_int_equal(transport_new(&s->loop, &cfg, &s->t), 0);
    assert_int_equal(transport_start(s->t), 0);
    assert_true(transport_port(s->t) != 0);
    struct http_metrics_config hc = {
        .host = "127.0.0.1", .render = render, .arg = s};
    assert_int_equal(http_metrics_new(&s->loop, &hc, &s->http), 0);
    assert_int_equal(uv_thread_create(&s->thread, loop_main, s), 0);
}

/* Answers whatever the handler still holds (from this thread). */
static void server_answer_held(struct server *s, size_t from_end_first)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->held_count;
    struct transport_req *reqs[HELD_MAX];
    memcpy(reqs, s->held, n * sizeof reqs[0]);
    s->held_count = 0;
    uv_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++)
        answer(reqs[from_end_first ? n - 1 - i : i]);
}

static void server_stop(struct server *s)
{
    transport_stop(s->t, 2000);
    http_metrics_stop(s->http);
    uv_thread_join(&s->thread);
    assert_true(transport_stopped(s->t));
    assert_true(http_metrics_stopped(s->http));
    /* Late answers after the loop ended are queued and freed. */
    server_answer_held(s, 0);
    if (s->watched != NULL)
        transport_conn_unref(s->watched);
    transport_free(s->t);
    http_metrics_free(s->http);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    tls_ctx_free(s->tls);
    uv_mutex_destroy(&s->mu);
}

static size_t server_delivered(struct server *s)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->delivered;
    uv_mutex_unlock(&s->mu);
    return n;
}

static size_t server_held(struct server *s)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->held_count;
    uv_mutex_unlock(&s->mu);
    return n;
}

static size_t server_conns_closed(struct server *s)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->conns_closed;
    uv_mutex_unlock(&s->mu);
    return n;
}

/* Waits until f(s) >= want; returns the last value. */
static size_t wait_for(struct server *s, size_t (*f)(struct server *),
                       size_t want)
{
    uint64_t end = now_ms() + WAIT_MS;
    size_t v = f(s);
    while (v < want && now_ms() < end) {
        sleep_ms(5);
        v = f(s);
    }
    return v;
}

static uint64_t metric_value(struct server *s, const char *name,
                             const char *labels)
{
    size_t n = 0;
    const struct metrics_desc *d = transport_metrics(s->t, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d[i].name, name) != 0)
            continue;
        if (labels != NULL &&
            (d[i].labels == NULL || strcmp(d[i].labels, labels) != 0))
            continue;
        const struct metrics_counter *c = d[i].value;
        return atomic_load(&((struct metrics_counter *)c)->value);
    }
    fail_msg("no metric %s", name);
    return 0;
}

/* ---- a blocking test client ---------------------------------------------- */

#define CLIENT_PLAIN_BYTES (64u * INBOX_KIB)

struct client {
    int fd;
    struct tls_ctx *ctx;
    struct tls_conn *tls;
    struct inbox_parser parser;
    uint8_t *body;
    uint8_t plain[CLIENT_PLAIN_BYTES];
    size_t plain_len, plain_off;
};

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Waits for fd to be readable; false on timeout. */
static bool wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

static void send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0)
            return; /* the server closed: the reads will tell */
        p += n;
        len -= (size_t)n;
    }
}

static void client_push_cipher(struct client *c)
{
    uint8_t buf[16384];
    size_t n;
    while ((n = tls_conn_pull_cipher(c->tls, buf, sizeof buf)) > 0)
        send_all(c->fd, buf, n);
}

/* Reads ciphertext once (bounded wait) and feeds it. Returns bytes read,
 * 0 at EOF, -1 on timeout. */
static ssize_t client_read_cipher(struct client *c, int timeout_ms)
{
    if (!wait_readable(c->fd, timeout_ms))
        return -1;
    uint8_t buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n <= 0)
        return 0;
    size_t off = 0;
    while (off < (size_t)n) {
        size_t took = 0;
        if (tls_conn_feed_cipher(c->tls, buf + off, (size_t)n - off, &took) !=
            0)
            return n;
        off += took;
        if (took == 0) {
            /* make room: decrypt into the plain buffer */
            assert_true(c->plain_off == c->plain_len);
            size_t got = 0;
            tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
            c->plain_off = 0;
            c->plain_len = got;
            if (got > 0)
                break; /* rare; the rest is lost, tests avoid it */
        }
    }
    return n;
}

/* Connects with certificate `who` (signed by the cluster CA) and completes
 * the handshake. */
static void client_open(struct client *c, uint16_t port, const char *who)
{
    memset(c, 0, sizeof *c);
    c->fd = tcp_connect(port);
    c->ctx = ctx_make(TLS_SIDE_CLIENT, "ca", who);
    assert_int_equal(tls_conn_new(c->ctx, "127.0.0.1", &c->tls), 0);
    c->body = malloc(INBOX_FRAME_BODY_BYTES_MAX);
    assert_non_null(c->body);
    inbox_parser_init(&c->parser, c->body, INBOX_FRAME_BODY_BYTES_MAX);
    client_push_cipher(c);
    uint64_t end = now_ms() + WAIT_MS;
    while (!tls_conn_handshake_done(c->tls)) {
        assert_true(now_ms() < end);
        ssize_t n = client_read_cipher(c, WAIT_MS);
        assert_true(n > 0);
        size_t got = 0;
        assert_int_equal(
            tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got), 0);
        c->plain_len = got;
        client_push_cipher(c);
    }
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tls_conn_free(c->tls);
    tls_ctx_free(c->ctx);
    free(c->body);
}

static void client_send_plain(struct client *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        size_t took = 0;
        int rc = tls_conn_write_plain(c->tls, p, len, &took);
        if (rc != 0)
            return;
        p += took;
        len -= took;
        client_push_cipher(c);
    }
}

static void client_send(struct client *c, const struct inbox_msg *m)
{
    size_t need = 0;
    assert_int_equal(inbox_msg_encode(m, NULL, 0, &need), INBOX_ERANGE);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_int_equal(inbox_msg_encode(m, buf, need, &need), 0);
    client_send_plain(c, buf, need);
    free(buf);
}

/* Next frame into *m (valid until the next call). 1: a frame; 0: the
 * server closed (EOF or close_notify); -1: timeout; else a TLS error. */
static int client_recv(struct client *c, struct inbox_msg *m, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        while (c->plain_off < c->plain_len) {
            size_t used = 0;
            struct inbox_frame f;
            int rc = inbox_parser_feed(&c->parser, c->plain + c->plain_off,
                                       c->plain_len - c->plain_off, &used, &f);
            c->plain_off += used;
            if (rc < 0)
                fail_msg("client: server sent a bad frame: %s",
                         inbox_err_name(rc));
            if (rc == INBOX_PARSE_FRAME) {
                assert_int_equal(inbox_msg_decode(&f.hdr, f.body, m), 0);
                return 1;
            }
        }
        size_t got = 0;
        int rc = tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
        if (rc != 0)
            return rc;
        c->plain_off = 0;
        c->plain_len = got;
        if (got > 0)
            continue;
        if (tls_conn_peer_closed(c->tls))
            return 0;
        uint64_t now = now_ms();
        if (now >= end)
            return -1;
        ssize_t n = client_read_cipher(c, (int)(end - now));
        if (n == 0)
            return 0;
    }
}

static void msg_init(struct inbox_msg *m, uint8_t op, uint64_t id)
{
    memset(m, 0, sizeof *m);
    m->hdr.version = 1;
    m->hdr.opcode = op;
    m->hdr.request_id = id;
}

static void send_hello(struct client *c, uint8_t lo, uint8_t hi, uint64_t id)
{
    struct inbox_msg m;
    msg_init(&m, INBOX_OP_HELLO, id);
    m.hdr.version = lo;
    m.body.hello_req.version_min = lo;
    m.body.hello_req.version_max = hi;
    m.body.hello_req.client_name.ptr = (const uint8_t *)"test";
    m.body.hello_req.client_name.len = 4;
    client_send(c, &m);
}

static void client_hello(struct client *c)
{
    send_hello(c, 1, 1, 1);
    struct inbox_msg m;
    assert_int_equal(client_recv(c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.opcode, INBOX_OP_HELLO);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_RESPONSE);
    assert_int_equal(m.body.hello_resp.version, 1);
}

static void send_enqueue(struct client *c, uint64_t id)
{
    struct inbox_msg m;
    msg_init(&m, INBOX_OP_ENQUEUE, id);
    memset(m.body.enqueue_req.msg_id, (int)id, INBOX_MSG_ID_BYTES);
    m.body.enqueue_req.inbox.ptr = (const uint8_t *)"alice";
    m.body.enqueue_req.inbox.len = 5;
    m.body.enqueue_req.payload.ptr = (const uint8_t *)"hi";
    m.body.enqueue_req.payload.len = 2;
    client_send(c, &m);
}

static void send_simple(struct client *c, uint8_t op, uint64_t id)
{
    struct inbox_msg m;
    msg_init(&m, op, id);
    client_send(c, &m);
}

/* Expects an ERROR with `code` for request `id`. */
static void expect_error(struct client *c, uint64_t id, int code)
{
    struct inbox_msg m;
    assert_int_equal(client_recv(c, &m, WAIT_MS), 1);
    assert_true(m.hdr.flags & INBOX_FLAG_ERROR);
    assert_int_equal(m.hdr.request_id, id);
    if (m.body.error.code != (uint16_t)-code)
        fail_msg("expected %s, got code %u", inbox_err_name(code),
                 m.body.error.code);
}

static void expect_closed(struct client *c)
{
    struct inbox_msg m;
    int rc = client_recv(c, &m, WAIT_MS);
    if (rc == 1)
        fail_msg("expected the close, got a frame op %u", m.hdr.opcode);
    assert_true(rc != -1); /* not a timeout */
}

static void ping_ok(struct client *c, uint64_t id)
{
    send_simple(c, INBOX_OP_PING, id);
    struct inbox_msg m;
    assert_int_equal(client_recv(c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.opcode, INBOX_OP_PING);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_RESPONSE);
    assert_int_equal(m.hdr.request_id, id);
}

/* ---- tests ----------------------------------------------------------------
 */

static void test_hello_negotiation(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client c;
    struct inbox_msg m;

    /* 1..3 against a server speaking 1: version 1, node and shards. */
    client_open(&c, transport_port(s.t), "fe1");
    send_hello(&c, 1, 3, 5);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 5);
    assert_int_equal(m.body.hello_resp.version, 1);
    assert_int_equal(m.body.hello_resp.node_id, 42);
    assert_int_equal(m.body.hello_resp.shard_count, 64);
    assert_int_equal(m.body.hello_resp.body_bytes_max,
                     INBOX_FRAME_BODY_BYTES_MAX);
    ping_ok(&c, 6);
    client_close(&c);

    /* 2..3 does not overlap: PROTO_VERSION with the server's range. */
    client_open(&c, transport_port(s.t), "fe1");
    send_hello(&c, 2, 3, 7);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_true(m.hdr.flags & INBOX_FLAG_ERROR);
    assert_int_equal(m.body.error.code, 1401);
    assert_int_equal(m.body.error.version_min, 1);
    assert_int_equal(m.body.error.version_max, 1);
    expect_closed(&c);
    client_close(&c);

    /* After HELLO every frame carries the chosen version. */
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    msg_init(&m, INBOX_OP_PING, 9);
    m.hdr.version = 2;
    client_send(&c, &m);
    expect_error(&c, 9, INBOX_EPROTO_VERSION);
    expect_closed(&c);
    client_close(&c);

    /* A first frame other than HELLO: PROTO and close. */
    client_open(&c, transport_port(s.t), "fe1");
    send_simple(&c, INBOX_OP_PING, 8);
    expect_error(&c, 8, INBOX_EPROTO);
    expect_closed(&c);
    client_close(&c);
    server_stop(&s);
}

/* Requests pipelined; the test thread answers them in reverse order after a
 * delay; every answer carries its own request id. */
static void test_pipelined_out_of_order(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_HOLD);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    enum { N = 8 };
    for (uint64_t id = 10; id < 10 + N; id++)
        send_enqueue(&c, id);
    assert_int_equal(wait_for(&s, server_held, N), N);
    sleep_ms(50);
    server_answer_held(&s, 1);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        struct inbox_msg m;
        assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
        assert_int_equal(m.hdr.opcode, INBOX_OP_ENQUEUE);
        uint64_t id = m.hdr.request_id;
        assert_true(id >= 10 && id < 10 + N);
        /* reverse order: the last request's answer comes first */
        assert_int_equal(id, 10 + N - 1 - (uint64_t)i);
        assert_int_equal(m.body.enqueue_resp.seq, id * 10u);
        assert_false(seen[id - 10]);
        seen[id - 10] = true;
    }
    assert_int_equal(
        metric_value(&s, "inbox_transport_requests_total", "op=\"enqueue\""),
        N);
    /* Every answered request is in its opcode's latency histogram; the
     * answers were held back by the handler, so none took ~0 us. */
    {
        size_t nd = 0;
        const struct metrics_desc *d = transport_metrics(s.t, &nd);
        const struct metrics_histogram *h = NULL;
        for (size_t i = 0; i < nd; i++)
            if (strcmp(d[i].name, "inbox_transport_request_seconds") == 0 &&
                d[i].labels && strcmp(d[i].labels, "op=\"enqueue\"") == 0)
                h = d[i].value;
        assert_non_null(h);
        assert_int_equal(atomic_load(&((struct metrics_histogram *)h)->count),
                         N);
        assert_true(metrics_histogram_quantile(h, 0.5) >= 1000);
    }
    client_close(&c);
    server_stop(&s);
}

/* A malformed body: ERROR PROTO with its id, then close; another
 * connection is untouched. */
static void test_malformed_closes_only_that_connection(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client a, b;
    client_open(&a, transport_port(s.t), "fe1");
    client_open(&b, transport_port(s.t), "fe1");
    client_hello(&a);
    client_hello(&b);

    /* An ACK whose body has a trailing byte. */
    uint8_t frame[INBOX_FRAME_HEADER_BYTES + 16];
    struct inbox_frame_header h = {.version = 1,
                                   .opcode = INBOX_OP_ACK,
                                   .request_id = 77,
                                   .body_bytes = 15};
    inbox_frame_header_encode(frame, &h);
    uint8_t *body = frame + INBOX_FRAME_HEADER_BYTES;
    body[0] = 5;
    memcpy(body + 1, "alice", 5);
    memset(body + 6, 0, 9); /* u64 seq + 1 extra byte */
    client_send_plain(&a, frame, INBOX_FRAME_HEADER_BYTES + 15);
    expect_error(&a, 77, INBOX_EPROTO);
    expect_closed(&a);

    ping_ok(&b, 2);
    send_enqueue(&b, 3);
    struct inbox_msg m;
    assert_int_equal(client_recv(&b, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 3);
    assert_int_equal(m.body.enqueue_resp.seq, 30);

    /* A frame flagged RESPONSE travels the wrong way: PROTO, close. */
    struct client d;
    client_open(&d, transport_port(s.t), "fe1");
    client_hello(&d);
    msg_init(&m, INBOX_OP_ENQUEUE, 5);
    m.hdr.flags = INBOX_FLAG_RESPONSE;
    m.body.enqueue_resp.seq = 1;
    client_send(&d, &m);
    expect_error(&d, 5, INBOX_EPROTO);
    expect_closed(&d);
    client_close(&d);

    /* A bad magic: PROTO with request id 0. */
    memcpy(frame, "XXXX", 4);
    client_send_plain(&b, frame, INBOX_FRAME_HEADER_BYTES);
    expect_error(&b, 0, INBOX_EPROTO);
    expect_closed(&b);
    client_close(&a);
    client_close(&b);
    server_stop(&s);
}

static void test_oversized_frame(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    uint8_t hdr[INBOX_FRAME_HEADER_BYTES];
    struct inbox_frame_header h = {.version = 1,
                                   .opcode = INBOX_OP_ENQUEUE,
                                   .request_id = 9,
                                   .body_bytes = 16};
    inbox_frame_header_encode(hdr, &h);
    uint32_t big = INBOX_FRAME_BODY_BYTES_MAX + 1u;
    memcpy(hdr + 16, &big, 4); /* little-endian host assumed, as in CI */
    client_send_plain(&c, hdr, sizeof hdr);
    expect_error(&c, 9, INBOX_EFRAME_TOO_LARGE);
    expect_closed(&c);
    client_close(&c);

    /* A large body split across many TLS records still gets through. */
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    struct inbox_msg m;
    msg_init(&m, INBOX_OP_ENQUEUE, 11);
    m.body.enqueue_req.inbox.ptr = (const uint8_t *)"bob";
    m.body.enqueue_req.inbox.len = 3;
    m.body.enqueue_req.payload.ptr = big_payload;
    m.body.enqueue_req.payload.len = BIG_PAYLOAD_BYTES;
    client_send(&c, &m);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 11);
    assert_int_equal(m.body.enqueue_resp.seq, 110);
    client_close(&c);
    server_stop(&s);
}

static void test_unknown_opcode_keeps_connection(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    uint8_t frame[INBOX_FRAME_HEADER_BYTES + 3];
    struct inbox_frame_header h = {
        .version = 1, .opcode = 0x7f, .request_id = 21, .body_bytes = 3};
    inbox_frame_header_encode(frame, &h);
    memcpy(frame + INBOX_FRAME_HEADER_BYTES, "abc", 3);
    client_send_plain(&c, frame, sizeof frame);
    struct inbox_msg m;
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_true(m.hdr.flags & INBOX_FLAG_ERROR);
    assert_int_equal(m.hdr.request_id, 21);
    assert_int_equal(m.hdr.opcode, 0x7f);
    assert_int_equal(m.body.error.code, 1403);
    ping_ok(&c, 22);
    assert_int_equal(
        metric_value(&s, "inbox_transport_errors_total", "code=\"UNKNOWN_OP\""),
        1);
    client_close(&c);
    server_stop(&s);
}

static bool log_contains(const char *needle)
{
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    static char buf[1u << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Reads raw bytes until EOF (bounded); returns how many came. */
static size_t drain_raw(int fd)
{
    size_t total = 0;
    uint8_t buf[4096];
    uint64_t end = now_ms() + WAIT_MS;
    while (now_ms() < end && wait_readable(fd, WAIT_MS)) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i + 4 <= n; i++)
            assert_false(memcmp(buf + i, "INBX", 4) == 0);
        total += (size_t)n;
    }
    return total;
}

/* A plaintext client and a client whose certificate another CA signed get
 * no frame; the refusal is logged with TLS's reason. */
static void test_tls_refusals(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);

    int fd = tcp_connect(transport_port(s.t));
    uint8_t hello[64];
    struct inbox_msg m;
    msg_init(&m, INBOX_OP_HELLO, 1);
    m.body.hello_req.version_min = m.body.hello_req.version_max = 1;
    size_t len = 0;
    assert_int_equal(inbox_msg_encode(&m, hello, sizeof hello, &len), 0);
    send_all(fd, hello, len);
    assert_int_equal(drain_raw(fd), 0);
    close(fd);

    /* A raw OpenSSL client with the rogue certificate that does not
     * verify the server: only the server's check can stop it. */
    SSL_CTX *raw = SSL_CTX_new(TLS_client_method());
    assert_non_null(raw);
    SSL_CTX_set_min_proto_version(raw, TLS1_3_VERSION);
    assert_int_equal(
        SSL_CTX_use_certificate_file(raw, fixture_path(&fix, "rogue.crt"),
                                     SSL_FILETYPE_PEM),
        1);
    assert_int_equal(
        SSL_CTX_use_PrivateKey_file(raw, fixture_path(&fix, "rogue.key"),
                                    SSL_FILETYPE_PEM),
        1);
    SSL_CTX_set_verify(raw, SSL_VERIFY_NONE, NULL);
    fd = tcp_connect(transport_port(s.t));
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(raw);
    SSL_set_fd(ssl, fd);
    int r = SSL_connect(ssl); /* TLS 1.3: may finish before the server judges */
    if (r == 1) {
        SSL_write(ssl, hello, (int)len);
        uint8_t buf[256];
        assert_true(SSL_read(ssl, buf, sizeof buf) <= 0);
    }
    SSL_free(ssl);
    SSL_CTX_free(raw);
    ERR_clear_error();
    close(fd);

    /* Both refusals are counted and logged with TLS's words. */
    uint64_t end = now_ms() + WAIT_MS;
    while (metric_value(&s, "inbox_transport_tls_failures_total", NULL) < 2 &&
           now_ms() < end)
        sleep_ms(5);
    assert_int_equal(
        metric_value(&s, "inbox_transport_tls_failures_total", NULL), 2);
    assert_int_equal(
        metric_value(&s, "inbox_transport_requests_total", "op=\"hello\""), 0);
    assert_true(log_contains("err=TLS_PLAINTEXT"));
    assert_true(log_contains("err=TLS_UNTRUSTED"));
    assert_true(log_contains("not signed by the cluster CA"));
    server_stop(&s);
}

static void send_snapshot(struct client *c, uint64_t id)
{
    struct inbox_msg m;
    msg_init(&m, INBOX_OP_SNAPSHOT, id);
    m.body.snapshot_req.shard = INBOX_SHARD_ALL;
    client_send(c, &m);
}

static void test_admin_ops_need_admin_role(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client fe, ops;
    client_open(&fe, transport_port(s.t), "fe1");
    client_hello(&fe);
    send_snapshot(&fe, 31);
    expect_error(&fe, 31, INBOX_EDENIED);
    ping_ok(&fe, 32); /* carries on */
    assert_int_equal(server_delivered(&s), 0);

    client_open(&ops, transport_port(s.t), "ops");
    client_hello(&ops);
    send_snapshot(&ops, 33);
    struct inbox_msg m;
    assert_int_equal(client_recv(&ops, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 33);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_RESPONSE);
    assert_int_equal(m.body.admin_resp.epoch, 7);
    assert_int_equal(server_delivered(&s), 1);
    client_close(&fe);
    client_close(&ops);
    server_stop(&s);
}

/* conn_inflight_max = 4: the fifth request waits in the socket until one
 * of the four is answered. */
static void test_inflight_bound(void **state)
{
    (void)state;
    struct server s;
    struct transport_config b = {.conn_inflight_max = 4};
    server_start(&s, &b, MODE_HOLD);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    for (uint64_t id = 1; id <= 5; id++)
        send_enqueue(&c, id + 100);
    assert_int_equal(wait_for(&s, server_held, 4), 4);
    sleep_ms(300);
    assert_int_equal(server_delivered(&s), 4);

    /* Answer one (the first): the fifth is delivered. */
    uv_mutex_lock(&s.mu);
    struct transport_req *first = s.held[0];
    memmove(s.held, s.held + 1, 3 * sizeof s.held[0]);
    s.held_count = 3;
    uv_mutex_unlock(&s.mu);
    answer(first);
    assert_int_equal(wait_for(&s, server_delivered, 5), 5);
    server_answer_held(&s, 0);
    for (int i = 0; i < 5; i++) {
        struct inbox_msg m;
        assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
        assert_true(m.hdr.request_id >= 101 && m.hdr.request_id <= 105);
    }
    assert_true(metric_value(&s, "inbox_transport_read_pauses_total", NULL) >=
                1);
    client_close(&c);
    server_stop(&s);
}

/* A client that never reads: the server stops reading it instead of
 * queueing its answers without bound; once it reads, everything comes. */
static void test_slow_reader_backpressure(void **state)
{
    (void)state;
    struct server s;
    const uint64_t bound = 256u * INBOX_KIB;
    struct transport_config b = {.conn_output_bytes_max = bound};
    server_start(&s, &b, MODE_IMMEDIATE);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    enum { N = 600 };
    for (uint64_t id = 1; id <= N; id++) {
        struct inbox_msg m;
        msg_init(&m, INBOX_OP_FETCH, id);
        m.body.fetch_req.inbox.ptr = (const uint8_t *)"carol";
        m.body.fetch_req.inbox.len = 5;
        client_send(&c, &m);
    }
    /* Wait until the server stops taking requests. */
    size_t last = 0, now = server_delivered(&s);
    uint64_t end = now_ms() + WAIT_MS;
    while ((now != last || now == 0) && now_ms() < end) {
        last = now;
        sleep_ms(300);
        now = server_delivered(&s);
    }
    assert_true(now < N);
    uv_mutex_lock(&s.mu);
    size_t peak = s.output_peak;
    uv_mutex_unlock(&s.mu);
    const size_t frame_max = BIG_PAYLOAD_BYTES + 1024u;
    printf("slow reader: %zu of %d delivered, output peak %zu (bound %llu)\n",
           now, N, peak, (unsigned long long)bound);
    assert_true(peak > bound / 2); /* the bound was what stopped it */
    assert_true(peak <= bound + frame_max + INBOX_TLS_SLACK_BYTES);
    assert_true(metric_value(&s, "inbox_transport_read_pauses_total", NULL) >=
                1);

    /* Now read: every request is answered once. */
    static bool seen[N + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) {
        struct inbox_msg m;
        assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
        assert_int_equal(m.hdr.opcode, INBOX_OP_FETCH);
        uint64_t id = m.hdr.request_id;
        assert_true(id >= 1 && id <= N && !seen[id]);
        seen[id] = true;
        assert_int_equal(m.body.fetch_resp.count, 1);
    }
    assert_int_equal(server_delivered(&s), N);
    client_close(&c);
    server_stop(&s);
}

/* Answers for a connection that closed are dropped (ASan checks for use
 * after free); the connection's close is reported to the node. */
static void test_response_after_close_dropped(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_HOLD);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    for (uint64_t id = 1; id <= 3; id++)
        send_enqueue(&c, id);
    assert_int_equal(wait_for(&s, server_held, 3), 3);
    client_close(&c);
    assert_int_equal(wait_for(&s, server_conns_closed, 1), 1);
    server_answer_held(&s, 0);
    uint64_t end = now_ms() + WAIT_MS;
    while (metric_value(&s, "inbox_transport_responses_dropped_total", NULL) <
               3 &&
           now_ms() < end)
        sleep_ms(5);
    assert_int_equal(
        metric_value(&s, "inbox_transport_responses_dropped_total", NULL), 3);
    /* The server carries on. */
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    ping_ok(&c, 9);
    client_close(&c);
    server_stop(&s);
}

/* transport_stop: the requests in flight are answered, then the
 * connection closes and the loop ends. */
static void test_graceful_stop(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_HOLD);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    send_enqueue(&c, 1);
    send_enqueue(&c, 2);
    assert_int_equal(wait_for(&s, server_held, 2), 2);
    transport_stop(s.t, 5000);
    sleep_ms(100);
    assert_false(transport_stopped(s.t)); /* waits for the two answers */
    server_answer_held(&s, 1);
    struct inbox_msg m;
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 2);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 1);
    expect_closed(&c);
    client_close(&c);
    uint64_t end = now_ms() + WAIT_MS;
    while (!transport_stopped(s.t) && now_ms() < end)
        sleep_ms(5);
    assert_true(transport_stopped(s.t));
    server_stop(&s);
}

/* A stop whose deadline passes before the node answers closes the
 * connection anyway; the late answer (after the loop ended) is dropped and
 * freed by transport_free. */
static void test_stop_deadline(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_HOLD);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    send_enqueue(&c, 1);
    assert_int_equal(wait_for(&s, server_held, 1), 1);
    transport_stop(s.t, 200);
    expect_closed(&c);
    client_close(&c);
    uint64_t end = now_ms() + WAIT_MS;
    while (!transport_stopped(s.t) && now_ms() < end)
        sleep_ms(5);
    assert_true(transport_stopped(s.t));
    assert_int_equal(server_held(&s), 1);
    assert_true(log_contains("stop deadline"));
    server_stop(&s); /* answers the held request after the loop ended */
}

/* Over conn_max: the newcomer's first frame gets BUSY, then it closes. */
static void test_connection_limit(void **state)
{
    (void)state;
    struct server s;
    struct transport_config b = {.conn_max = 1};
    server_start(&s, &b, MODE_IMMEDIATE);
    struct client a, busy;
    client_open(&a, transport_port(s.t), "fe1");
    client_hello(&a);
    client_open(&busy, transport_port(s.t), "fe1");
    send_hello(&busy, 1, 1, 3);
    expect_error(&busy, 3, INBOX_EBUSY);
    expect_closed(&busy);
    client_close(&busy);
    ping_ok(&a, 4);
    assert_int_equal(
        metric_value(&s, "inbox_transport_connections_refused_total", NULL), 1);
    client_close(&a);
    server_stop(&s);
}

/* A WATCH answered, then a NOTIFY pushed from another thread. */
static void test_push(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    struct inbox_msg m;
    struct inbox_bytes key = {(const uint8_t *)"alice", 5};
    msg_init(&m, INBOX_OP_WATCH, 40);
    m.body.keys_req.count = 1;
    m.body.keys_req.keys = &key;
    client_send(&c, &m);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.request_id, 40);
    assert_int_equal(m.body.code_u64_resp.count, 1);
    uv_mutex_lock(&s.mu);
    struct transport_conn *conn = s.watched;
    uv_mutex_unlock(&s.mu);
    assert_non_null(conn);
    struct inbox_msg push;
    memset(&push, 0, sizeof push);
    push.body.notify.inbox = key;
    push.body.notify.last_seq = 8;
    assert_int_equal(transport_push(conn, &push), 0);
    assert_int_equal(client_recv(&c, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.opcode, INBOX_OP_NOTIFY);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_PUSH);
    assert_int_equal(m.body.notify.last_seq, 8);
    client_close(&c);
    /* A push to the closed (still referenced) connection is dropped. */
    assert_int_equal(wait_for(&s, server_conns_closed, 1), 1);
    assert_int_equal(transport_push(conn, &push), 0);
    server_stop(&s);
}

/* A peer that stalls before TLS completes, or after it without HELLO, is
 * closed by the handshake timer. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    struct server s;
    struct transport_config b = {.handshake_timeout_ms = 200};
    server_start(&s, &b, MODE_IMMEDIATE);
    int fd = tcp_connect(transport_port(s.t));
    uint64_t start = now_ms();
    assert_int_equal(drain_raw(fd), 0); /* EOF, not the test's timeout */
    assert_true(now_ms() - start < WAIT_MS);
    close(fd);

    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    expect_closed(&c);
    client_close(&c);
    assert_true(log_contains("handshake timeout"));
    server_stop(&s);
}

/* Sends `req` to the /metrics port and reads the whole answer. */
static void http_get(uint16_t port, const char *req, char *out, size_t cap)
{
    int fd = tcp_connect(port);
    send_all(fd, req, strlen(req));
    size_t len = 0;
    uint64_t end = now_ms() + WAIT_MS;
    while (len + 1 < cap && now_ms() < end && wait_readable(fd, WAIT_MS)) {
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    close(fd);
}

static void test_http_metrics(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, MODE_IMMEDIATE);
    struct client c;
    client_open(&c, transport_port(s.t), "fe1");
    client_hello(&c);
    ping_ok(&c, 2);
    uint16_t port = http_metrics_port(s.http);
    static char resp[256u * 1024u];
    http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", resp,
             sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(
        strstr(resp, "inbox_transport_connections_accepted_total 1\n"));
    assert_non_null(
        strstr(resp, "inbox_transport_requests_total{op=\"ping\"} 1"));
    assert_non_null(strstr(resp, "inbox_transport_connections_open 1\n"));
    /* Content-Length matches the body. */
    const char *cl = strstr(resp, "Content-Length: ");
    const char *body = strstr(resp, "\r\n\r\n");
    assert_non_null(cl);
    assert_non_null(body);
    assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body + 4));

    http_get(port, "\x16\x03\x01 garbage\r\n\r\n", resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    http_get(port, "hello there\r\n\r\n", resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    http_get(port, "GET /nope HTTP/1.1\r\n\r\n", resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 404 ", 13) == 0);
    http_get(port, "POST /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 405 ", 13) == 0);
    /* An endless head is refused at the bound. */
    static char huge[INBOX_HTTP_REQUEST_BYTES_MAX + 100];
    memset(huge, 'a', sizeof huge - 1);
    memcpy(huge, "GET /", 5);
    huge[sizeof huge - 1] = '\0';
    http_get(port, huge, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    client_close(&c);
    server_stop(&s);
}

/* ---- main ------------------------------------------------------------------
 */

static int group_setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    fixture_ca(&fix, "ca");
    fixture_ca(&fix, "other");
    const char *hosts[] = {"127.0.0.1", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    fixture_issue(&fix, "ca", "ops", INBOX_ROLE_ADMIN, NULL, 0, 0);
    fixture_issue(&fix, "other", "rogue", INBOX_ROLE_ADMIN, NULL, 0, 0);
    for (size_t i = 0; i < BIG_PAYLOAD_BYTES; i++)
        big_payload[i] = (uint8_t)(i * 7u);
    /* Logs go to a file the refusal test reads. */
    snprintf(log_path, sizeof log_path, "%s", fixture_path(&fix, "log.txt"));
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(fd >= 0);
    log_set_fd(fd);
    log_set_level(LOG_DEBUG);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fixture_dir_remove(&fix);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_negotiation),
        cmocka_unit_test(test_pipelined_out_of_order),
        cmocka_unit_test(test_malformed_closes_only_that_connection),
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_unknown_opcode_keeps_connection),
        cmocka_unit_test(test_tls_refusals),
        cmocka_unit_test(test_admin_ops_need_admin_role),
        cmocka_unit_test(test_inflight_bound),
        cmocka_unit_test(test_slow_reader_backpressure),
        cmocka_unit_test(test_response_after_close_dropped),
        cmocka_unit_test(test_graceful_stop),
        cmocka_unit_test(test_stop_deadline),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_push),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_http_metrics),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
