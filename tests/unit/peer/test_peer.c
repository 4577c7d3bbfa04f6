/* test_peer.c — net/peer against a real net/transport server on 127.0.0.1.
 * The server's loop and the peers' loop each run on a thread; the server's
 * handler records every RAFT batch and answers it at once, or holds it for
 * the test thread to answer later. Messages carry a sequence number, their
 * length and a pattern, so the receiving side checks order and integrity.
 * Every wait is bounded in time. */
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
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "inbox/endian.h"
#include "inbox/error.h"
#include "inbox/limits.h"
#include "net/codec.h"
#include "net/peer.h"
#include "net/tls.h"
#include "net/transport.h"
#include "server/log.h"
#include "tls_fixture.h"

#define WAIT_MS 10000
#define HELD_MAX 256
#define PEER_ID 7u
#define MSG_HEAD_BYTES 8u

static struct fixture fix;

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

/* ---- the receiving server ------------------------------------------------ */

struct server {
    uv_loop_t loop;
    struct tls_ctx *tls;
    struct transport *t;
    uv_thread_t thread;
    uv_mutex_t mu;
    bool hold; /* keep RAFT requests for the test thread */
    struct transport_req *held[HELD_MAX];
    size_t held_count;
    uint8_t *recv; /* every batch, concatenated */
    size_t recv_len, recv_cap;
    size_t frames;
    size_t last_batch_bytes;
};

static void on_request(void *arg, struct transport_req *req,
                       const struct inbox_msg *msg)
{
    struct server *s = arg;
    if (msg->hdr.opcode != INBOX_OP_RAFT) {
        transport_respond_error(req, INBOX_EINVAL, "test: raft only");
        return;
    }
    const struct inbox_bytes *b = &msg->body.raft_req.batch;
    uv_mutex_lock(&s->mu);
    if (s->recv_len + b->len > s->recv_cap) {
        size_t cap = s->recv_cap ? s->recv_cap : 65536u;
        while (cap < s->recv_len + b->len)
            cap *= 2u;
        s->recv = realloc(s->recv, cap);
        assert_non_null(s->recv);
        s->recv_cap = cap;
    }
    memcpy(s->recv + s->recv_len, b->ptr, b->len);
    s->recv_len += b->len;
    s->frames++;
    s->last_batch_bytes = b->len;
    bool hold = s->hold;
    if (hold) {
        assert_true(s->held_count < HELD_MAX);
        s->held[s->held_count++] = req;
    }
    uv_mutex_unlock(&s->mu);
    if (!hold) {
        struct inbox_msg m;
        memset(&m, 0, sizeof m);
        transport_respond(req, &m);
    }
}

static void server_loop_main(void *arg)
{
    struct server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

static void server_start(struct server *s, uint16_t port, bool hold)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    assert_int_equal(uv_mutex_init(&s->mu), 0);
    s->hold = hold;
    s->tls = ctx_make(TLS_SIDE_SERVER, "ca", "n1");
    struct transport_config cfg = {
        .host = "127.0.0.1",
        .port = port,
        .tls = s->tls,
        .node_id = PEER_ID,
        .shard_count = 1,
        .on_request = on_request,
        .arg = s,
    };
    assert_int_equal(transport_new(&s->loop, &cfg, &s->t), 0);
    assert_int_equal(transport_start(s->t), 0);
    assert_int_equal(uv_thread_create(&s->thread, server_loop_main, s), 0);
}

static uint16_t server_port(struct server *s)
{
    return transport_port(s->t);
}

/* Answers every held request (from the test thread). */
static size_t server_answer_held(struct server *s)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->held_count;
    struct transport_req *reqs[HELD_MAX];
    memcpy(reqs, s->held, n * sizeof reqs[0]);
    s->held_count = 0;
    uv_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        struct inbox_msg m;
        memset(&m, 0, sizeof m);
        transport_respond(reqs[i], &m);
    }
    return n;
}

static void server_stop(struct server *s)
{
    transport_stop(s->t, 2000);
    uv_thread_join(&s->thread);
    assert_true(transport_stopped(s->t));
    server_answer_held(s); /* late answers are queued and freed */
    transport_free(s->t);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    tls_ctx_free(s->tls);
    uv_mutex_destroy(&s->mu);
    free(s->recv);
}

static size_t server_frames(struct server *s)
{
    uv_mutex_lock(&s->mu);
    size_t n = s->frames;
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

/* ---- messages -------------------------------------------------------------
 * [u32 seq][u32 len][len - 8 bytes: (seq + i) * 31] */

static uint8_t *msg_make(uint32_t seq, size_t len)
{
    assert_true(len >= MSG_HEAD_BYTES);
    uint8_t *m = malloc(len);
    assert_non_null(m);
    put_u32le(m, seq);
    put_u32le(m + 4, (uint32_t)len);
    for (size_t i = MSG_HEAD_BYTES; i < len; i++)
        m[i] = (uint8_t)((seq + i) * 31u);
    return m;
}

static int send_msg(struct peers *p, uint32_t seq, size_t len)
{
    uint8_t *m = msg_make(seq, len);
    int rc = peer_send(p, PEER_ID, m, len);
    free(m);
    return rc;
}

/* Walks the bytes the server received: every message intact, sequence
 * numbers strictly increasing. Returns the count; *last the last seq. */
/* Checks every message received (whole, in order) and returns how many
 * have a seq >= from; *last: the last seq. */
static size_t server_check_msgs_from(struct server *s, uint32_t from,
                                     uint32_t *last)
{
    uv_mutex_lock(&s->mu);
    size_t off = 0, count = 0;
    int64_t prev = -1;
    while (off < s->recv_len) {
        assert_true(s->recv_len - off >= MSG_HEAD_BYTES);
        uint32_t seq = get_u32le(s->recv + off);
        uint32_t len = get_u32le(s->recv + off + 4);
        assert_true(len >= MSG_HEAD_BYTES && len <= s->recv_len - off);
        for (size_t i = MSG_HEAD_BYTES; i < len; i++)
            if (s->recv[off + i] != (uint8_t)((seq + i) * 31u))
                fail_msg("message %u corrupt at byte %zu", seq, i);
        assert_true((int64_t)seq > prev);
        prev = seq;
        off += len;
        count += seq >= from;
    }
    uv_mutex_unlock(&s->mu);
    if (last != NULL)
        *last = prev < 0 ? 0 : (uint32_t)prev;
    return count;
}

static size_t server_check_msgs(struct server *s, uint32_t *last)
{
    return server_check_msgs_from(s, 0, last);
}

/* Waits until the server holds `want` messages, answering held requests
 * as they come. Returns the count. */
static size_t wait_msgs(struct server *s, size_t want)
{
    uint64_t end = now_ms() + WAIT_MS;
    size_t n = server_check_msgs(s, NULL);
    while (n < want && now_ms() < end) {
        server_answer_held(s);
        sleep_ms(2);
        n = server_check_msgs(s, NULL);
    }
    return n;
}

static size_t wait_held(struct server *s, size_t want)
{
    uint64_t end = now_ms() + WAIT_MS;
    size_t n = server_held(s);
    while (n < want && now_ms() < end) {
        sleep_ms(2);
        n = server_held(s);
    }
    return n;
}

/* ---- the sending side ---------------------------------------------------- */

struct sender {
    uv_loop_t loop;
    struct tls_ctx *tls;
    struct peers *p;
    uv_thread_t thread;
};

static void sender_loop_main(void *arg)
{
    struct sender *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
}

static void sender_start(struct sender *c, const char *ca, const char *who,
                         uint32_t inflight_max, uint64_t queue_max,
                         uint32_t connect_timeout_ms)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    c->tls = ctx_make(TLS_SIDE_CLIENT, ca, who);
    struct peer_config cfg = {
        .loop = &c->loop,
        .tls = c->tls,
        .self_id = 1,
        .queue_bytes_max = queue_max,
        .inflight_frames_max = inflight_max,
        .connect_timeout_ms = connect_timeout_ms,
    };
    assert_int_equal(peer_new(&cfg, &c->p), 0);
    assert_int_equal(uv_thread_create(&c->thread, sender_loop_main, c), 0);
}

static void sender_stop(struct sender *c)
{
    peer_stop(c->p);
    peer_stop(c->p); /* idempotent */
    uv_thread_join(&c->thread);
    assert_true(peer_stopped(c->p));
    assert_int_equal(peer_send(c->p, PEER_ID, "x", 1), INBOX_ESHUTDOWN);
    peer_free(c->p);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    tls_ctx_free(c->tls);
}

static void set_port(struct sender *c, uint16_t port)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    assert_int_equal(peer_set_addr(c->p, PEER_ID, addr), 0);
}

static struct peer_link_info info_of(struct sender *c)
{
    struct peer_link_info i;
    assert_int_equal(peer_link_info(c->p, PEER_ID, &i), 0);
    return i;
}

/* Waits until the link's field, read by f, reaches want. */
static uint64_t wait_info(struct sender *c,
                          uint64_t (*f)(const struct peer_link_info *),
                          uint64_t want)
{
    uint64_t end = now_ms() + WAIT_MS;
    struct peer_link_info i = info_of(c);
    while (f(&i) < want && now_ms() < end) {
        sleep_ms(2);
        i = info_of(c);
    }
    return f(&i);
}

static uint64_t f_failures(const struct peer_link_info *i)
{
    return i->connect_failures;
}
static uint64_t f_errors(const struct peer_link_info *i)
{
    return i->error_responses;
}

/* A port nothing listens on (yet). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends numbered messages every few ms until one arrives; then `more`
 * messages that must all arrive. Returns the next free seq. Probe messages
 * still in flight when the first one arrives may land after it, so the
 * `more` are counted by seq, not by the total. */
static uint32_t send_until_delivered(struct sender *c, struct server *s,
                                     uint32_t seq, uint32_t more)
{
    uint64_t end = now_ms() + WAIT_MS;
    size_t before = server_check_msgs(s, NULL);
    while (server_check_msgs(s, NULL) == before) {
        assert_true(now_ms() < end);
        int rc = send_msg(c->p, seq++, 100);
        assert_true(rc == 0 || rc == INBOX_EBUSY);
        sleep_ms(5);
    }
    uint32_t first = seq;
    for (uint32_t i = 0; i < more; i++)
        assert_int_equal(send_msg(c->p, seq++, 200 + i), 0);
    end = now_ms() + WAIT_MS;
    while (server_check_msgs_from(s, first, NULL) < more && now_ms() < end) {
        server_answer_held(s);
        sleep_ms(2);
    }
    uint32_t last = 0;
    assert_int_equal(server_check_msgs_from(s, first, &last), more);
    assert_int_equal(last, first + more - 1u);
    return seq;
}

/* ---- tests --------------------------------------------------------------- */

static void test_api_checks(void **state)
{
    (void)state;
    struct sender c;
    sender_start(&c, "ca", "n2", 0, 0, 0);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "127.0.0.1"), INBOX_EINVAL);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "localhost:1"), INBOX_EINVAL);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "::1:5"), INBOX_EINVAL);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "1.2.3.4:0"), INBOX_EINVAL);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "1.2.3.4:65536"),
                     INBOX_EINVAL);
    assert_int_equal(peer_set_addr(c.p, 0, "1.2.3.4:5"), INBOX_EINVAL);
    assert_int_equal(peer_send(c.p, PEER_ID, "x", 1), INBOX_ENOTFOUND);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "[::1]:9"), 0);
    assert_int_equal(peer_set_addr(c.p, PEER_ID, "127.0.0.1:9"), 0);
    uint8_t one = 1;
    assert_int_equal(peer_send(c.p, PEER_ID, &one, 0), INBOX_EINVAL);
    assert_int_equal(
        peer_send(c.p, PEER_ID, &one, INBOX_RAFT_BATCH_BYTES_MAX + 1u),
        INBOX_ERANGE);
    assert_int_equal(peer_remove(c.p, PEER_ID), 0);
    assert_int_equal(peer_remove(c.p, PEER_ID), INBOX_ENOTFOUND);
    assert_int_equal(peer_send(c.p, PEER_ID, &one, 1), INBOX_ENOTFOUND);
    struct peer_link_info i;
    assert_int_equal(peer_link_info(c.p, PEER_ID, &i), INBOX_ENOTFOUND);
    /* A queue bound below one largest send is refused. */
    struct peer_config bad = {
        .loop = &c.loop, .tls = c.tls, .queue_bytes_max = 1000};
    struct peers *p = NULL;
    assert_int_equal(peer_new(&bad, &p), INBOX_EINVAL);
    sender_stop(&c);
}

/* (1) In order and intact; many small sends coalesce; the largest send. */
static void test_order_coalescing_largest(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, 0, true);
    struct sender c;
    sender_start(&c, "ca", "n2", 1, 0, 0);
    set_port(&c, server_port(&s));

    /* One frame in flight (held) makes the next sends queue up. */
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_int_equal(wait_held(&s, 1), 1);
    enum { SENDS = 1000 };
    for (uint32_t i = 1; i <= SENDS; i++)
        assert_int_equal(send_msg(c.p, i, MSG_HEAD_BYTES + i % 300u), 0);
    assert_int_equal(wait_msgs(&s, SENDS + 1u), SENDS + 1u);
    size_t frames = server_frames(&s);
    assert_true(frames < SENDS + 1u);
    assert_true(frames <= 3u); /* 1 held + all the rest fit one batch */
    server_answer_held(&s);

    /* Exactly INBOX_RAFT_BATCH_BYTES_MAX: one frame of its own. */
    assert_int_equal(send_msg(c.p, SENDS + 1u, INBOX_RAFT_BATCH_BYTES_MAX), 0);
    assert_int_equal(wait_msgs(&s, SENDS + 2u), SENDS + 2u);
    uv_mutex_lock(&s.mu);
    assert_int_equal(s.last_batch_bytes, INBOX_RAFT_BATCH_BYTES_MAX);
    uv_mutex_unlock(&s.mu);
    /* Two large sends that do not fit one batch together: two frames,
     * neither split. */
    size_t f0 = server_frames(&s);
    assert_int_equal(send_msg(c.p, SENDS + 2u, INBOX_MIB + 1u), 0);
    assert_int_equal(send_msg(c.p, SENDS + 3u, INBOX_MIB + 1u), 0);
    assert_int_equal(wait_msgs(&s, SENDS + 4u), SENDS + 4u);
    assert_int_equal(server_frames(&s), f0 + 2u);
    uint32_t last = 0;
    server_check_msgs(&s, &last);
    assert_int_equal(last, SENDS + 3u);

    struct peer_link_info i = info_of(&c);
    assert_true(i.connected);
    assert_int_equal(i.connects, 1);
    assert_int_equal(i.dropped_bytes, 0);
    assert_int_equal(i.frames_sent, server_frames(&s));
    size_t n = 0;
    const struct metrics_desc *d = peer_metrics(c.p, &n);
    assert_int_equal(n, 7);
    assert_string_equal(d[0].name, "inbox_peer_frames_sent_total");
    sender_stop(&c);
    server_stop(&s);
}

/* (2) Server not there yet: dropped and counted; then it starts and later
 * sends arrive. */
static void test_server_starts_late(void **state)
{
    (void)state;
    uint16_t port = free_port();
    struct sender c;
    sender_start(&c, "ca", "n2", 0, 0, 0);
    set_port(&c, port);
    assert_int_equal(send_msg(c.p, 0, 100), 0); /* queued, then dropped */
    assert_true(wait_info(&c, f_failures, 1) >= 1);
    struct peer_link_info i = info_of(&c);
    assert_false(i.connected);
    assert_true(i.dropped_bytes >= 100);
    print_message("no server: %s\n", i.last_error);
    assert_true(strstr(i.last_error, "connect") != NULL);
    /* Sends keep being dropped (backoff) or fail again: never delivered. */
    for (uint32_t k = 1; k < 10; k++) {
        int rc = send_msg(c.p, k, 100);
        assert_true(rc == 0 || rc == INBOX_EBUSY);
        sleep_ms(10);
    }
    assert_true(info_of(&c).connect_failures >= 2);

    struct server s;
    server_start(&s, port, false);
    send_until_delivered(&c, &s, 100, 20);
    assert_true(info_of(&c).connected);
    sender_stop(&c);
    server_stop(&s);
}

/* (3) The server stops mid-stream and comes back on the same port. */
static void test_server_restart(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, 0, false);
    uint16_t port = server_port(&s);
    struct sender c;
    sender_start(&c, "ca", "n2", 0, 0, 0);
    set_port(&c, port);
    uint32_t seq = send_until_delivered(&c, &s, 0, 50);
    server_stop(&s);
    /* Sending on: the link notices, drops, backs off. */
    uint64_t end = now_ms() + WAIT_MS;
    while (info_of(&c).connected) {
        (void)send_msg(c.p, seq++, 100);
        assert_true(now_ms() < end);
        sleep_ms(5);
    }
    server_start(&s, port, false);
    send_until_delivered(&c, &s, seq, 50);
    struct peer_link_info i = info_of(&c);
    assert_true(i.connected);
    assert_int_equal(i.connects, 2);
    assert_true(i.last_error[0] != '\0');
    sender_stop(&c);
    server_stop(&s);
}

/* (4) A sender from another CA gets nowhere; a frontend-role sender is
 * answered DENIED by the transport and nothing reaches the node. */
static void test_refused_senders(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, 0, false);

    struct sender c;
    sender_start(&c, "other", "rogue", 0, 0, 0);
    set_port(&c, server_port(&s));
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_true(wait_info(&c, f_failures, 1) >= 1);
    struct peer_link_info i = info_of(&c);
    assert_false(i.connected);
    assert_int_equal(i.connects, 0);
    print_message("other CA: %s\n", i.last_error);
    assert_true(strstr(i.last_error, "TLS") != NULL);
    sender_stop(&c);

    sender_start(&c, "ca", "fe1", 0, 0, 0);
    set_port(&c, server_port(&s));
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_true(wait_info(&c, f_errors, 1) >= 1);
    i = info_of(&c);
    assert_true(i.connected); /* DENIED keeps the connection */
    assert_int_equal(i.inflight, 0);
    print_message("frontend: %s\n", i.last_error);
    assert_true(strstr(i.last_error, "DENIED") != NULL);
    sender_stop(&c);

    assert_int_equal(server_frames(&s), 0);
    server_stop(&s);
}

/* (5) In-flight and queue bounds against a server that does not answer. */
static void test_queue_bound(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, 0, true);
    struct sender c;
    sender_start(&c, "ca", "n2", 2, PEER_QUEUE_BYTES_MIN, 0);
    set_port(&c, server_port(&s));
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_int_equal(wait_held(&s, 1), 1);
    assert_int_equal(send_msg(c.p, 1, 100), 0);
    assert_int_equal(wait_held(&s, 2), 2);

    const size_t len = 64u * INBOX_KIB;
    const size_t rec = len + PEER_RECORD_OVERHEAD_BYTES;
    uint32_t seq = 2;
    int rc = 0;
    while ((rc = send_msg(c.p, seq, len)) == 0)
        seq++;
    assert_int_equal(rc, INBOX_EBUSY);
    size_t accepted = seq - 2u;
    assert_true(accepted * rec <= PEER_QUEUE_BYTES_MIN);
    assert_true((accepted + 1u) * rec > PEER_QUEUE_BYTES_MIN);
    sleep_ms(50); /* nothing more may leave while both slots are taken */
    assert_int_equal(server_frames(&s), 2);
    struct peer_link_info i = info_of(&c);
    assert_int_equal(i.inflight, 2);
    assert_int_equal(i.queued_bytes, accepted * rec);
    assert_int_equal(i.dropped_bytes, len);

    /* Answers free the slots: everything queued arrives, in order. */
    assert_int_equal(wait_msgs(&s, seq), seq);
    uint32_t last = 0;
    server_check_msgs(&s, &last);
    assert_int_equal(last, seq - 1u);
    sender_stop(&c);
    server_stop(&s);
}

/* (6) Stop with links open, frames in flight and bytes queued; and a
 * removal while connected. ASan/LSan check the rest. */
static void test_stop_with_open_links(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, 0, true);
    struct sender c;
    sender_start(&c, "ca", "n2", 1, 0, 0);
    set_port(&c, server_port(&s));
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", server_port(&s));
    assert_int_equal(peer_set_addr(c.p, PEER_ID + 1u, addr), 0);
    assert_int_equal(peer_send(c.p, PEER_ID + 1u, "abcdefgh", 8), 0);
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_int_equal(wait_held(&s, 2), 2);
    assert_int_equal(peer_remove(c.p, PEER_ID + 1u), 0);
    for (uint32_t k = 1; k < 100; k++)
        assert_int_equal(send_msg(c.p, k, 1000), 0);
    assert_true(info_of(&c).queued_bytes > 0);
    sender_stop(&c);
    server_stop(&s);
}

/* (7) A peer that accepts TCP and never speaks TLS: the connect timer
 * fails the attempt. */
static void test_stalled_peer(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    struct sender c;
    sender_start(&c, "ca", "n2", 0, 0, 100);
    set_port(&c, ntohs(a.sin_port));
    assert_int_equal(send_msg(c.p, 0, 100), 0);
    assert_true(wait_info(&c, f_failures, 1) >= 1);
    struct peer_link_info i = info_of(&c);
    print_message("stalled: %s\n", i.last_error);
    assert_true(strstr(i.last_error, "100 ms") != NULL);
    assert_false(i.connected);
    assert_int_equal(i.dropped_bytes, 100);
    sender_stop(&c);
    close(fd);
}

/* ---- main ---------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    fixture_ca(&fix, "ca");
    fixture_ca(&fix, "other");
    const char *hosts[] = {"127.0.0.1", "::1", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "n2", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    fixture_issue(&fix, "other", "rogue", INBOX_ROLE_NODE, hosts, 0, 0);
    char log_path[FIX_PATH_BYTES + 16];
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
        cmocka_unit_test(test_api_checks),
        cmocka_unit_test(test_order_coalescing_largest),
        cmocka_unit_test(test_server_starts_late),
        cmocka_unit_test(test_server_restart),
        cmocka_unit_test(test_refused_senders),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_stop_with_open_links),
        cmocka_unit_test(test_stalled_peer),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
