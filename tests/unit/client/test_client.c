/*
 * test_client.c — libinbox against fake inboxd nodes (fake_server.h) on
 * 127.0.0.1 over mutual TLS: HELLO and ROUTE, enqueue and the other data
 * operations, NOT_LEADER redirects to a second node, reconnect and retry
 * with the same msg id after a dropped connection, deadlines and late
 * answers, 1000 pipelined enqueues answered out of order, NOTIFY pushes and
 * lost watches, a server from another CA, the in-flight bound, fan-out
 * split by leader, and the routing vectors of docs/protocol.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_server.h"
#include "inbox/client.h"
#include "inbox/error.h"
#include "tls_fixture.h"

static struct fixture fix;
static struct fake_cluster cluster;
static struct fake fa, fb;

/* ---- fixture ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    fixture_ca(&fix, "ca");
    fixture_ca(&fix, "other");
    const char *hosts[] = {"127.0.0.1", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    fixture_issue(&fix, "other", "rogue", INBOX_ROLE_NODE, hosts, 0, 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fixture_dir_remove(&fix);
    return 0;
}

static void fake_up(struct fake *f, uint64_t node_id, const char *cert)
{
    char crt[64], key[64];
    snprintf(crt, sizeof crt, "%s.crt", cert);
    snprintf(key, sizeof key, "%s.key", cert);
    char ca[FIX_PATH_BYTES + 64], c1[FIX_PATH_BYTES + 64],
        k1[FIX_PATH_BYTES + 64];
    snprintf(ca, sizeof ca, "%s", fixture_path(&fix, "ca.crt"));
    snprintf(c1, sizeof c1, "%s", fixture_path(&fix, crt));
    snprintf(k1, sizeof k1, "%s", fixture_path(&fix, key));
    fake_start(f, node_id, ca, c1, k1, &cluster);
}

/* Two fake nodes 1 and 2; every shard led by node 1. */
static int setup_two(void **state)
{
    (void)state;
    memset(&cluster, 0, sizeof cluster);
    fake_up(&fa, 1, "n1");
    fake_up(&fb, 2, "n1");
    fb.next_seq = 100;
    cluster.epoch = 1;
    cluster.nodes_count = 2;
    cluster.node_ids[0] = 1;
    cluster.node_ids[1] = 2;
    snprintf(cluster.addrs[0], sizeof cluster.addrs[0], "%s", fa.addr);
    snprintf(cluster.addrs[1], sizeof cluster.addrs[1], "%s", fb.addr);
    for (int s = 0; s < FAKE_SHARDS; s++)
        cluster.leaders[s] = 1;
    return 0;
}

static int teardown_two(void **state)
{
    (void)state;
    fake_stop(&fa);
    fake_stop(&fb);
    return 0;
}

static struct notes {
    int count;
    int lost;
    uint64_t last_seq;
    char inbox[32];
} notes;

static void on_notify(void *arg, int status, const uint8_t *inbox,
                      size_t inbox_len, uint64_t last_seq)
{
    struct notes *n = arg;
    if (status != 0) {
        assert_null(inbox);
        n->lost++;
        return;
    }
    n->count++;
    n->last_seq = last_seq;
    assert_true(inbox_len < sizeof n->inbox);
    memcpy(n->inbox, inbox, inbox_len);
    n->inbox[inbox_len] = '\0';
}

/* stall_timeout_ms for the next client_make (0: the default). */
static uint32_t next_stall_ms;

static struct inbox_client *client_make(const char *seed, uint32_t inflight)
{
    char ca[FIX_PATH_BYTES + 64], crt[FIX_PATH_BYTES + 64],
        key[FIX_PATH_BYTES + 64];
    snprintf(ca, sizeof ca, "%s", fixture_path(&fix, "ca.crt"));
    snprintf(crt, sizeof crt, "%s", fixture_path(&fix, "fe1.crt"));
    snprintf(key, sizeof key, "%s", fixture_path(&fix, "fe1.key"));
    const char *seeds[] = {seed};
    memset(&notes, 0, sizeof notes);
    struct inbox_client_config cfg = {
        .seeds = seeds,
        .seeds_count = 1,
        .ca_path = ca,
        .cert_path = crt,
        .key_path = key,
        .inflight_max = inflight,
        .connect_timeout_ms = 5000,
        .backoff_min_ms = 5,
        .backoff_max_ms = 50,
        .stall_timeout_ms = next_stall_ms,
        .notify = on_notify,
        .notify_arg = &notes,
    };
    struct inbox_client *c = NULL;
    char msg[256] = "";
    next_stall_ms = 0;
    int rc = inbox_client_new(&cfg, &c, msg, sizeof msg);
    if (rc != 0)
        fail_msg("inbox_client_new: %s: %s", inbox_err_name(rc), msg);
    return c;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls until *flag becomes at least `want`, for at most max_ms. */
static void pump(struct inbox_client *c, const int *flag, int want, int max_ms)
{
    uint64_t end = mono_ms() + (uint64_t)max_ms;
    while (*flag < want && mono_ms() < end)
        assert_true(inbox_client_poll(c, 10) >= 0);
    if (*flag < want)
        fail_msg("pump: %d of %d within %d ms (%s)", *flag, want, max_ms,
                 inbox_client_last_error_message(c));
}

/* Polls for a while regardless (to let late answers arrive). */
static void pump_for(struct inbox_client *c, int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    while (mono_ms() < end)
        assert_true(inbox_client_poll(c, 10) >= 0);
}

/* ---- routing vectors ---------------------------------------------------- */

static void test_shard_vectors(void **state)
{
    (void)state;
    /* docs/protocol.md §6. */
    assert_int_equal(inbox_shard_of("alice", 5, 64), 48);
    assert_int_equal(inbox_shard_of("bob", 3, 64), 37);
    assert_int_equal(inbox_shard_of("carol", 5, 64), 36);
    /* The documented 64-bit hashes, reduced modulo other shard counts. */
    assert_int_equal(inbox_shard_of("alice", 5, 65536),
                     (uint32_t)(0x4da10dd61a0116b0ull % 65536u));
    assert_int_equal(inbox_shard_of("bob", 3, 65521),
                     (uint32_t)(0x1403c0c40f49b8e5ull % 65521u));
    assert_int_equal(inbox_shard_of("carol", 5, 4099),
                     (uint32_t)(0xe2fdb994ad3fcba4ull % 4099u));
    assert_int_equal(inbox_shard_of("x", 1, 1), 0);
}

/* ---- data operations ---------------------------------------------------- */

static void test_enqueue_and_ops(void **state)
{
    (void)state;
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    bool dedup = true;
    uint8_t id[INBOX_MSG_ID_BYTES];
    int rc = inbox_enqueue(c, "alice", 5, NULL, 0, "hello", 5, &seq, &dedup, id,
                           5000);
    assert_int_equal(rc, 0);
    assert_int_equal(seq, 1);
    assert_false(dedup);
    assert_int_equal(inbox_client_shard_count(c), FAKE_SHARDS);
    assert_int_equal(inbox_client_shard_leader(c, 0), 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, 1);
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);

    /* A caller's msg id goes on the wire as given. */
    uint8_t mine[INBOX_MSG_ID_BYTES];
    memset(mine, 0xab, sizeof mine);
    assert_int_equal(
        inbox_enqueue(c, "bob", 3, mine, 1000, "", 0, &seq, NULL, NULL, 5000),
        0);
    assert_int_equal(seq, 2);
    fake_records_get(&fa, &ra);
    assert_memory_equal(ra.msg_ids[1], mine, INBOX_MSG_ID_BYTES);

    struct inbox_client_fetch_result *res = NULL;
    assert_int_equal(inbox_fetch(c, "alice", 5, 4, 10, 0, 0, 0, &res, 5000), 0);
    assert_non_null(res);
    assert_int_equal(res->count, 2);
    assert_int_equal(res->last_seq, 6);
    assert_int_equal(res->messages[0].seq, 5);
    assert_int_equal(res->messages[1].seq, 6);
    assert_int_equal(res->messages[1].payload_len, 2);
    assert_memory_equal(res->messages[1].payload, "m2", 2);
    inbox_fetch_result_free(res);

    uint64_t v = 0;
    assert_int_equal(inbox_ack(c, "alice", 5, 6, &v, 5000), 0);
    assert_int_equal(v, 6);
    /* A server error that is not retryable, with its message. */
    assert_int_equal(inbox_ack(c, "alice", 5, 101, &v, 5000),
                     INBOX_EACK_BEYOND_LAST);
    assert_non_null(
        strstr(inbox_client_last_error_message(c), "beyond the last"));
    assert_int_equal(inbox_seen_set(c, "alice", 5, 777, &v, 5000), 0);
    assert_int_equal(v, 777);
    struct inbox_client_key keys[2] = {{"alice", 5}, {"bo", 2}};
    struct inbox_client_key_item items[2];
    assert_int_equal(inbox_seen_get(c, keys, 2, 0, items, 5000), 0);
    assert_int_equal(items[0].value, 5000);
    assert_int_equal(items[1].value, 2000);

    /* Bad arguments fail at submit. */
    assert_int_equal(
        inbox_enqueue(c, "", 0, NULL, 0, "x", 1, NULL, NULL, NULL, 100),
        INBOX_EKEY_INVALID);
    assert_int_equal(inbox_client_inflight(c), 0);
    inbox_client_free(c);
}

/* ---- NOT_LEADER --------------------------------------------------------- */

static void test_not_leader_redirect(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_NOT_LEADER;
    fa.redirect_to = 1;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    int rc =
        inbox_enqueue(c, "alice", 5, NULL, 0, "hi", 2, &seq, NULL, id, 5000);
    assert_int_equal(rc, 0);
    assert_int_equal(seq, 101); /* node 2 answered */
    struct fake_records ra, rb;
    fake_records_get(&fa, &ra);
    fake_records_get(&fb, &rb);
    assert_int_equal(ra.enqueues, 1);
    assert_int_equal(rb.enqueues, 1);
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    assert_memory_equal(rb.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    /* The map learned the new leader: the next call goes to node 2 first. */
    uint32_t shard = inbox_shard_of("alice", 5, FAKE_SHARDS);
    assert_int_equal(inbox_client_shard_leader(c, shard), 2);
    assert_int_equal(
        inbox_enqueue(c, "alice", 5, NULL, 0, "hi", 2, &seq, NULL, NULL, 5000),
        0);
    assert_int_equal(seq, 102);
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, 1);
    struct inbox_client_stats st;
    inbox_client_stats_get(c, &st);
    assert_int_equal(st.redirects, 1);
    inbox_client_free(c);
}

/* A node cut off from the others (it knows no leader, its map says so)
 * must not be the only one the client asks: with the seed in that state,
 * the client learns the map from the other node and gets its write in. */
static void test_cut_off_node_not_asked_again(void **state)
{
    (void)state;
    for (int s = 0; s < FAKE_SHARDS; s++)
        cluster.leaders[s] = 2;
    fake_lock(&fa);
    fa.mode = FAKE_NO_LEADER;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    int rc =
        inbox_enqueue(c, "alice", 5, NULL, 0, "hi", 2, &seq, NULL, NULL, 5000);
    assert_int_equal(rc, 0);
    assert_int_equal(seq, 101); /* node 2 answered */
    struct fake_records rb;
    fake_records_get(&fb, &rb);
    assert_true(rb.routes >= 1); /* the map came from node 2 */
    inbox_client_free(c);
}

/* A STALE_OK read does not wait for a leader: with none known, a node the
 * client is connected to answers; without the flag the read waits (and
 * here times out). */
static void test_stale_read_without_leader(void **state)
{
    (void)state;
    for (int s = 0; s < FAKE_SHARDS; s++)
        cluster.leaders[s] = 0; /* an election everywhere */
    struct inbox_client *c = client_make(fa.addr, 0);
    struct inbox_client_fetch_result *fr = NULL;
    int rc = inbox_fetch(c, "alice", 5, 0, 10, 0, 0, INBOX_CLIENT_STALE_OK, &fr,
                         3000);
    assert_int_equal(rc, 0);
    assert_non_null(fr);
    inbox_fetch_result_free(fr);
    fr = NULL;
    rc = inbox_fetch(c, "alice", 5, 0, 10, 0, 0, 0, &fr, 500);
    assert_int_equal(rc, INBOX_ETIMEOUT);
    assert_null(fr);
    inbox_client_free(c);
}

/* ---- dropped connection: retry with the same msg id --------------------- */

static void test_drop_retries_same_msg_id(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_DROP_FIRST;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    int rc =
        inbox_enqueue(c, "carol", 5, NULL, 0, "x", 1, &seq, NULL, id, 10000);
    assert_int_equal(rc, 0);
    assert_int_equal(seq, 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, 2);
    assert_true(ra.accepted >= 2);
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    assert_memory_equal(ra.msg_ids[1], id, INBOX_MSG_ID_BYTES);
    struct inbox_client_stats st;
    inbox_client_stats_get(c, &st);
    assert_true(st.connects >= 2);
    assert_true(st.retries >= 1);
    inbox_client_free(c);
}

/* ---- deadline and a late answer ----------------------------------------- */

struct enq_result {
    int calls;
    int status;
    uint64_t seq;
};

static void enq_done(void *arg, int status, uint64_t seq, bool dedup,
                     const uint8_t *msg_id)
{
    (void)dedup;
    assert_non_null(msg_id);
    struct enq_result *r = arg;
    r->calls++;
    r->status = status;
    r->seq = seq;
}

static void test_timeout_and_late_answer(void **state)
{
    (void)state;
    struct inbox_client *c = client_make(fa.addr, 0);
    assert_int_equal(inbox_route(c, NULL, 5000), 0); /* connected */
    fake_lock(&fa);
    fa.mode = FAKE_DELAY;
    fa.delay_ms = 400;
    fake_unlock(&fa);
    struct enq_result r = {0};
    assert_int_equal(inbox_client_submit_enqueue(c, "alice", 5, NULL, 0, "x", 1,
                                                 100, &r, enq_done),
                     0);
    pump(c, &r.calls, 1, 5000);
    assert_int_equal(r.status, INBOX_ETIMEOUT);
    assert_non_null(strstr(inbox_client_last_error_message(c), "timed out"));
    /* The answer comes after the deadline: it is ignored, the callback
     * does not fire again, and the connection stays usable. */
    pump_for(c, 600);
    assert_int_equal(r.calls, 1);
    struct inbox_client_stats st;
    inbox_client_stats_get(c, &st);
    assert_int_equal(st.responses_ignored, 1);
    fake_lock(&fa);
    fa.mode = FAKE_NORMAL;
    uint32_t accepted = fa.accepted;
    fake_unlock(&fa);
    uint64_t seq = 0;
    assert_int_equal(
        inbox_enqueue(c, "alice", 5, NULL, 0, "y", 1, &seq, NULL, NULL, 5000),
        0);
    assert_int_equal(seq, 2);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.accepted, accepted);
    inbox_client_free(c);
}

/* ---- pipelining --------------------------------------------------------- */

#define PIPE_N 1000

static struct pipe_state {
    int done;
    int order[PIPE_N];
    int status[PIPE_N];
    uint64_t seq[PIPE_N];
} pipe_st;

static void pipe_done(void *arg, int status, uint64_t seq, bool dedup,
                      const uint8_t *msg_id)
{
    (void)dedup;
    (void)msg_id;
    int i = (int)(intptr_t)arg;
    pipe_st.status[i] = status;
    pipe_st.seq[i] = seq;
    pipe_st.order[pipe_st.done++] = i;
}

static void test_pipeline_out_of_order(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_REORDER;
    fake_unlock(&fa);
    memset(&pipe_st, 0, sizeof pipe_st);
    struct inbox_client *c = client_make(fa.addr, 0);
    for (int i = 0; i < PIPE_N; i++) {
        char inbox[16], payload[16];
        int il = snprintf(inbox, sizeof inbox, "user%d", i % 37);
        int pl = snprintf(payload, sizeof payload, "#%d", i + 1);
        assert_int_equal(inbox_client_submit_enqueue(
                             c, inbox, (size_t)il, NULL, 0, payload, (size_t)pl,
                             20000, (void *)(intptr_t)i, pipe_done),
                         0);
    }
    assert_int_equal(inbox_client_inflight(c), PIPE_N);
    pump(c, &pipe_st.done, PIPE_N, 25000);
    int inversions = 0;
    for (int i = 0; i < PIPE_N; i++) {
        assert_int_equal(pipe_st.status[i], 0);
        assert_int_equal(pipe_st.seq[i], (uint64_t)i + 1);
        if (i > 0 && pipe_st.order[i] < pipe_st.order[i - 1])
            inversions++;
    }
    assert_true(inversions > 0); /* answers really came out of order */
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, PIPE_N);
    assert_true(ra.out_of_order > 0);
    assert_int_equal(inbox_client_inflight(c), 0);
    inbox_client_free(c);
}

/* ---- NOTIFY ------------------------------------------------------------- */

static void test_watch_notify(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.watch_last_seq = 7;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    struct inbox_client_key key = {"alice", 5};
    struct inbox_client_key_item item;
    assert_int_equal(inbox_watch(c, &key, 1, &item, 5000), 0);
    assert_int_equal(item.status, 0);
    assert_int_equal(item.value, 7);
    pump(c, &notes.count, 1, 5000);
    assert_int_equal(notes.last_seq, 8);
    assert_string_equal(notes.inbox, "alice");
    /* The server forgets watches with the connection: the client says so. */
    fake_lock(&fa);
    fa.drop_all = true;
    fake_unlock(&fa);
    pump(c, &notes.lost, 1, 5000);
    inbox_client_free(c);
}

/* ---- a server the cluster CA did not sign ------------------------------- */

static void test_wrong_ca_server(void **state)
{
    (void)state;
    struct fake rogue;
    char ca[FIX_PATH_BYTES + 64], crt[FIX_PATH_BYTES + 64],
        key[FIX_PATH_BYTES + 64];
    snprintf(ca, sizeof ca, "%s", fixture_path(&fix, "other.crt"));
    snprintf(crt, sizeof crt, "%s", fixture_path(&fix, "rogue.crt"));
    snprintf(key, sizeof key, "%s", fixture_path(&fix, "rogue.key"));
    memset(&cluster, 0, sizeof cluster);
    fake_start(&rogue, 9, ca, crt, key, &cluster);
    struct inbox_client *c = client_make(rogue.addr, 0);
    int rc =
        inbox_enqueue(c, "alice", 5, NULL, 0, "x", 1, NULL, NULL, NULL, 8000);
    assert_int_equal(rc, INBOX_ETLS_UNTRUSTED);
    assert_true(strlen(inbox_client_last_error_message(c)) > 0);
    struct fake_records rr;
    fake_records_get(&rogue, &rr);
    assert_int_equal(rr.enqueues, 0);
    inbox_client_free(c);
    fake_stop(&rogue);
}

/* ---- the in-flight bound ------------------------------------------------ */

static void test_inflight_bound(void **state)
{
    (void)state;
    struct inbox_client *c = client_make(fa.addr, 4);
    struct enq_result r = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(inbox_client_submit_enqueue(c, "a", 1, NULL, 0, "x", 1,
                                                     5000, &r, enq_done),
                         0);
    assert_int_equal(inbox_client_submit_enqueue(c, "a", 1, NULL, 0, "x", 1,
                                                 5000, &r, enq_done),
                     INBOX_EBUSY);
    assert_int_equal(inbox_client_inflight(c), 4);
    assert_int_equal(r.calls, 0);
    /* Freeing completes what is in flight. */
    inbox_client_free(c);
    assert_int_equal(r.calls, 4);
    assert_int_equal(r.status, INBOX_ESHUTDOWN);

    /* Once calls complete there is room again. */
    c = client_make(fa.addr, 2);
    memset(&r, 0, sizeof r);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(inbox_client_submit_enqueue(c, "a", 1, NULL, 0, "x", 1,
                                                     5000, &r, enq_done),
                         0);
        assert_int_equal(inbox_client_submit_enqueue(c, "a", 1, NULL, 0, "x", 1,
                                                     5000, &r, enq_done),
                         0);
        assert_int_equal(inbox_client_submit_enqueue(c, "a", 1, NULL, 0, "x", 1,
                                                     5000, &r, enq_done),
                         INBOX_EBUSY);
        pump(c, &r.calls, 2 * (round + 1), 5000);
        assert_int_equal(r.status, 0);
    }
    inbox_client_free(c);
}

/* ---- fan-out split by leader -------------------------------------------- */

static void test_enqueue_many_split(void **state)
{
    (void)state;
    fake_lock(&fa);
    fake_lock(&fb);
    cluster.leaders[0] = cluster.leaders[1] = 1;
    cluster.leaders[2] = cluster.leaders[3] = 2;
    fake_unlock(&fb);
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    struct inbox_client_target t[8];
    char names[8][8];
    uint32_t on_b = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "u%d", i);
        t[i] = (struct inbox_client_target){names[i], strlen(names[i]), NULL};
        on_b += inbox_shard_of(names[i], strlen(names[i]), FAKE_SHARDS) >= 2;
    }
    struct inbox_client_enqueue_item items[8];
    assert_int_equal(inbox_enqueue_many(c, t, 8, 0, "group", 5, items, 5000),
                     0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(items[i].status, 0);
        uint32_t s = inbox_shard_of(names[i], strlen(names[i]), FAKE_SHARDS);
        if (s >= 2)
            assert_true(items[i].seq > 100);
        else
            assert_true(items[i].seq >= 1 && items[i].seq <= 8);
    }
    struct fake_records ra, rb;
    fake_records_get(&fa, &ra);
    fake_records_get(&fb, &rb);
    assert_int_equal(rb.many_targets, on_b);
    assert_int_equal(ra.many_targets, 8 - on_b);
    inbox_client_free(c);
}

/* ---- a stale map: per-target NOT_LEADER in a fan-out -------------------- */

static void test_enqueue_many_stale_map(void **state)
{
    (void)state;
    fake_lock(&fa);
    fake_lock(&fb);
    cluster.leaders[0] = cluster.leaders[1] = 1;
    cluster.leaders[2] = cluster.leaders[3] = 2;
    fa.stale_route_once = true; /* the first map puts everything on node 1 */
    fake_unlock(&fb);
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    struct inbox_client_target t[8];
    char names[8][8];
    uint8_t ids[8][INBOX_MSG_ID_BYTES];
    uint32_t on_b = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "u%d", i);
        memset(ids[i], i + 1, INBOX_MSG_ID_BYTES);
        t[i] = (struct inbox_client_target){names[i], strlen(names[i]), ids[i]};
        on_b += inbox_shard_of(names[i], strlen(names[i]), FAKE_SHARDS) >= 2;
    }
    assert_true(on_b > 0 && on_b < 8);
    struct inbox_client_enqueue_item items[8];
    assert_int_equal(inbox_enqueue_many(c, t, 8, 0, "group", 5, items, 5000),
                     0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(items[i].status, 0);
        assert_memory_equal(items[i].msg_id, ids[i], INBOX_MSG_ID_BYTES);
        uint32_t s = inbox_shard_of(names[i], strlen(names[i]), FAKE_SHARDS);
        assert_true(s >= 2 ? items[i].seq > 100 : items[i].seq <= 8);
    }
    struct fake_records ra, rb;
    fake_records_get(&fa, &ra);
    fake_records_get(&fb, &rb);
    assert_int_equal(ra.many_not_leader, on_b); /* refused once ... */
    assert_int_equal(rb.many_targets, on_b);    /* ... then sent to node 2 */
    assert_int_equal(ra.many_targets, 8 - on_b);
    assert_true(ra.routes + rb.routes >= 2); /* the map was asked again */
    assert_int_equal(inbox_client_shard_leader(c, 2), 2);
    inbox_client_free(c);
}

/* ---- BUSY is retried with the same msg id ------------------------------- */

static void test_busy_retried(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_BUSY_FIRST;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    assert_int_equal(
        inbox_enqueue(c, "dave", 4, NULL, 0, "x", 1, &seq, NULL, id, 5000), 0);
    assert_int_equal(seq, 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, 2);
    assert_int_equal(ra.accepted, 1); /* same connection */
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    assert_memory_equal(ra.msg_ids[1], id, INBOX_MSG_ID_BYTES);
    inbox_client_free(c);
}

/* ---- seeds: a dead one, then a live one; nobody at all ------------------ */

/* A loopback port nobody listens on (bound, then closed). */
static void dead_addr(char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    snprintf(out, cap, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
}

static struct inbox_client *client_make2(const char *s1, const char *s2)
{
    char ca[FIX_PATH_BYTES + 64], crt[FIX_PATH_BYTES + 64],
        key[FIX_PATH_BYTES + 64];
    snprintf(ca, sizeof ca, "%s", fixture_path(&fix, "ca.crt"));
    snprintf(crt, sizeof crt, "%s", fixture_path(&fix, "fe1.crt"));
    snprintf(key, sizeof key, "%s", fixture_path(&fix, "fe1.key"));
    const char *seeds[] = {s1, s2};
    struct inbox_client_config cfg = {
        .seeds = seeds,
        .seeds_count = s2 ? 2 : 1,
        .ca_path = ca,
        .cert_path = crt,
        .key_path = key,
        .backoff_min_ms = 5,
        .backoff_max_ms = 50,
    };
    struct inbox_client *c = NULL;
    assert_int_equal(inbox_client_new(&cfg, &c, NULL, 0), 0);
    return c;
}

static void test_seed_failover(void **state)
{
    (void)state;
    char dead[32];
    dead_addr(dead, sizeof dead);
    struct inbox_client *c = client_make2(dead, fa.addr);
    uint64_t seq = 0;
    assert_int_equal(
        inbox_enqueue(c, "alice", 5, NULL, 0, "x", 1, &seq, NULL, NULL, 5000),
        0);
    assert_int_equal(seq, 1);
    inbox_client_free(c);
}

static void test_unreachable_times_out(void **state)
{
    (void)state;
    char dead[32];
    dead_addr(dead, sizeof dead);
    struct inbox_client *c = client_make2(dead, NULL);
    uint8_t id[INBOX_MSG_ID_BYTES], zero[INBOX_MSG_ID_BYTES] = {0};
    memset(id, 0, sizeof id);
    int rc = inbox_enqueue(c, "alice", 5, NULL, 0, "x", 1, NULL, NULL, id, 300);
    assert_int_equal(rc, INBOX_ETIMEOUT);
    /* The generated msg id is handed back even on failure, so the caller
     * can retry with it later. */
    assert_memory_not_equal(id, zero, INBOX_MSG_ID_BYTES);
    struct inbox_client_stats st;
    inbox_client_stats_get(c, &st);
    assert_true(st.connects >= 2); /* it kept trying */
    inbox_client_free(c);

    /* Bad configs are refused up front. */
    const char *bad[] = {"no-port"};
    struct inbox_client_config cfg = {.seeds = bad,
                                      .seeds_count = 1,
                                      .ca_path = "x",
                                      .cert_path = "x",
                                      .key_path = "x"};
    char msg[128];
    assert_int_equal(inbox_client_new(&cfg, &c, msg, sizeof msg), INBOX_EINVAL);
    const char *good[] = {"127.0.0.1:1"};
    cfg.seeds = good;
    assert_int_equal(inbox_client_new(&cfg, &c, msg, sizeof msg),
                     INBOX_ETLS_CONFIG);
}

/* ---- STATUS and admin operations ---------------------------------------- */

static void test_status_and_admin(void **state)
{
    (void)state;
    struct inbox_client *c = client_make(fa.addr, 0);
    struct inbox_client_status *st = NULL;
    assert_int_equal(inbox_status(c, 0, &st, 5000), 0);
    assert_non_null(st);
    assert_int_equal(st->node_id, 1);
    assert_int_equal(st->count, 1);
    assert_int_equal(st->shards[0].shard, 3);
    assert_int_equal(st->shards[0].role, 2);
    assert_int_equal(st->shards[0].applied_index, 9);
    inbox_status_free(st);
    /* To a named node: node 2, learned from the map. */
    assert_int_equal(inbox_route(c, NULL, 5000), 0);
    assert_int_equal(inbox_status(c, 2, &st, 5000), 0);
    assert_int_equal(st->node_id, 2);
    inbox_status_free(st);

    uint64_t epoch = 0;
    const char *addrs[] = {"127.0.0.1:7999"};
    assert_int_equal(inbox_add_node(c, 3, addrs, 1, &epoch, 5000), 0);
    assert_int_equal(epoch, 40);
    assert_int_equal(inbox_remove_node(c, 3, &epoch, 5000), 0);
    assert_int_equal(epoch, 41);
    assert_int_equal(inbox_transfer_leader(c, 1, 2, &epoch, 5000), 0);
    assert_int_equal(epoch, 42);
    assert_int_equal(inbox_move_replica(c, 1, 1, 2, &epoch, 5000), 0);
    assert_int_equal(epoch, 43);
    assert_int_equal(inbox_snapshot(c, 2, INBOX_CLIENT_SHARD_ALL, &epoch, 5000),
                     0);
    assert_int_equal(epoch, 44);
    assert_int_equal(inbox_remove_node(c, 0, &epoch, 5000), INBOX_EINVAL);
    /* A shard the map does not have fails at once. */
    assert_int_equal(inbox_transfer_leader(c, FAKE_SHARDS, 2, &epoch, 5000),
                     INBOX_ERANGE);
    inbox_client_free(c);
}

/* ---- a malformed answer: reconnect and retry ---------------------------- */

static void test_garbage_reconnects(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_GARBAGE_FIRST;
    fake_unlock(&fa);
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    assert_int_equal(
        inbox_enqueue(c, "erin", 4, NULL, 0, "x", 1, &seq, NULL, id, 5000), 0);
    assert_int_equal(seq, 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.enqueues, 2);
    assert_int_equal(ra.accepted, 2); /* the client dropped the bad conn */
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    assert_memory_equal(ra.msg_ids[1], id, INBOX_MSG_ID_BYTES);
    inbox_client_free(c);
}

/* ---- callbacks: submit from inside, no re-entry ------------------------- */

static struct chain {
    struct inbox_client *c;
    int done;
    int reentry_rc;
    int submit_rc;
    uint64_t seqs[2];
} chain;

static void chain_done(void *arg, int status, uint64_t seq, bool dedup,
                       const uint8_t *msg_id)
{
    (void)arg;
    (void)dedup;
    (void)msg_id;
    assert_int_equal(status, 0);
    chain.seqs[chain.done++] = seq;
    if (chain.done == 1) {
        chain.reentry_rc = inbox_client_poll(chain.c, 0);
        uint64_t s;
        assert_int_equal(inbox_enqueue(chain.c, "a", 1, NULL, 0, "x", 1, &s,
                                       NULL, NULL, 1000),
                         INBOX_EINVAL);
        chain.submit_rc = inbox_client_submit_enqueue(
            chain.c, "a", 1, NULL, 0, "y", 1, 5000, NULL, chain_done);
    }
}

static void test_callback_reentry(void **state)
{
    (void)state;
    memset(&chain, 0, sizeof chain);
    chain.c = client_make(fa.addr, 0);
    assert_int_equal(inbox_client_submit_enqueue(chain.c, "a", 1, NULL, 0, "x",
                                                 1, 5000, NULL, chain_done),
                     0);
    pump(chain.c, &chain.done, 2, 5000);
    assert_int_equal(chain.reentry_rc, INBOX_EINVAL);
    assert_int_equal(chain.submit_rc, 0);
    assert_int_equal(chain.seqs[0], 1);
    assert_int_equal(chain.seqs[1], 2);
    assert_int_equal(inbox_client_poll(chain.c, -1), INBOX_EINVAL);
    inbox_client_free(chain.c);
}

/* ---- a peer that stops answering (no FIN): PING, then reconnect ---------- */

static void test_stalled_peer_replaced(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_SILENT_FIRST;
    fake_unlock(&fa);
    next_stall_ms = 100;
    struct inbox_client *c = client_make(fa.addr, 0);
    uint64_t seq = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    assert_int_equal(
        inbox_enqueue(c, "frank", 5, NULL, 0, "x", 1, &seq, NULL, id, 5000), 0);
    assert_int_equal(seq, 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.accepted, 2);
    assert_int_equal(ra.enqueues, 2);
    assert_memory_equal(ra.msg_ids[0], id, INBOX_MSG_ID_BYTES);
    assert_memory_equal(ra.msg_ids[1], id, INBOX_MSG_ID_BYTES);
    assert_non_null(strstr(inbox_client_last_error_message(c), "nothing"));
    inbox_client_free(c);
}

/* ---- a slow peer that answers PING is kept ------------------------------ */

static void test_slow_peer_kept(void **state)
{
    (void)state;
    fake_lock(&fa);
    fa.mode = FAKE_DELAY;
    fa.delay_ms = 500;
    fake_unlock(&fa);
    next_stall_ms = 100;
    struct inbox_client *c = client_make(fa.addr, 0);
    assert_int_equal(inbox_route(c, NULL, 5000), 0);
    uint64_t seq = 0;
    assert_int_equal(
        inbox_enqueue(c, "gina", 4, NULL, 0, "x", 1, &seq, NULL, NULL, 5000),
        0);
    assert_int_equal(seq, 1);
    struct fake_records ra;
    fake_records_get(&fa, &ra);
    assert_int_equal(ra.accepted, 1); /* never reconnected */
    assert_int_equal(ra.enqueues, 1);
    assert_true(ra.pings >= 1); /* but it did ask */
    inbox_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_vectors),
        cmocka_unit_test_setup_teardown(test_enqueue_and_ops, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_not_leader_redirect, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_cut_off_node_not_asked_again,
                                        setup_two, teardown_two),
        cmocka_unit_test_setup_teardown(test_stale_read_without_leader,
                                        setup_two, teardown_two),
        cmocka_unit_test_setup_teardown(test_drop_retries_same_msg_id,
                                        setup_two, teardown_two),
        cmocka_unit_test_setup_teardown(test_timeout_and_late_answer, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_pipeline_out_of_order, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_watch_notify, setup_two,
                                        teardown_two),
        cmocka_unit_test(test_wrong_ca_server),
        cmocka_unit_test_setup_teardown(test_inflight_bound, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_enqueue_many_split, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_enqueue_many_stale_map, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_busy_retried, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_seed_failover, setup_two,
                                        teardown_two),
        cmocka_unit_test(test_unreachable_times_out),
        cmocka_unit_test_setup_teardown(test_status_and_admin, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_garbage_reconnects, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_callback_reentry, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_stalled_peer_replaced, setup_two,
                                        teardown_two),
        cmocka_unit_test_setup_teardown(test_slow_peer_kept, setup_two,
                                        teardown_two),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
