/*
 * test_inboxd.c — inboxd end to end: real inboxd processes on 127.0.0.1
 * (inboxd_proc.c), driven through libinbox for every operation and error
 * code, through a raw TLS client (raw_client.c) for malformed frames and
 * raw error codes, and killed with SIGKILL under load to check that every
 * acknowledged enqueue survives exactly once.
 *
 * Usage: test_inboxd PATH/TO/inboxd   (or $INBOXD_BIN). CTest passes the
 * binary of the build. Each test starts its own node on a fresh temporary
 * data directory and a fresh port; the cmocka teardown kills whatever is
 * still running (an atexit handler and PR_SET_PDEATHSIG back it up) and
 * removes the directory, or keeps it and prints the log's tail when the
 * test failed. Every wait is bounded.
 *
 * $INBOX_TEST_SEED replays the durability test's kill timing and inbox
 * choice (it prints the seed it used); $INBOX_TEST_FILTER runs only the
 * tests matching a cmocka pattern ("*kill9*"); $INBOX_TEST_CLEAN removes
 * a failed test's directory instead of keeping it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inbox/client.h"
#include "inbox/error.h"
#include "inbox/limits.h"
#include "inboxd_proc.h"
#include "net/cert.h"
#include "net/codec.h"
#include "raw_client.h"

#define T_MS 10000u   /* deadline of one client call */
#define WAIT_MS 10000 /* bound of any wait for an event */
#define STOP_MS 20000u

/* ---- per-test world ------------------------------------------------------ */

#define CLIENTS_MAX 8

struct k9;
static void k9_free(struct k9 *k);

struct world {
    struct inboxd_proc p;
    bool passed; /* set at the end of a test body; else the dir is kept */
    /* Freed by the teardown if a failed assertion skipped the test's own
     * cleanup (so a failure is not buried under leak reports). */
    struct inbox_client *clients[CLIENTS_MAX];
    struct k9 *k9;
    /* Callback state (an async call's arg, the notify arg): freed after the
     * clients, whose teardown may still fire callbacks into it. */
    void *allocs[CLIENTS_MAX];
};

/* Zeroed memory that lives until the teardown, after the clients. */
static void *world_alloc(struct world *w, size_t bytes)
{
    for (size_t i = 0; i < CLIENTS_MAX; i++) {
        if (w->allocs[i] == NULL) {
            w->allocs[i] = calloc(1, bytes);
            assert_non_null(w->allocs[i]);
            return w->allocs[i];
        }
    }
    fail_msg("more than %u world allocations", CLIENTS_MAX);
    return NULL;
}

/* Records a client of the test's main thread for the teardown. */
static struct inbox_client *track(struct world *w, struct inbox_client *c)
{
    assert_non_null(c);
    for (size_t i = 0; i < CLIENTS_MAX; i++) {
        if (w->clients[i] == NULL) {
            w->clients[i] = c;
            return c;
        }
    }
    inbox_client_free(c);
    fail_msg("more than %u clients in one test", CLIENTS_MAX);
    return NULL;
}

static void client_free(struct world *w, struct inbox_client *c)
{
    for (size_t i = 0; i < CLIENTS_MAX; i++)
        if (w->clients[i] == c)
            w->clients[i] = NULL;
    inbox_client_free(c);
}

static int world_setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    if (proc_init(&w->p, "t") != 0) {
        free(w);
        return -1;
    }
    *state = w;
    return 0;
}

/* After a passing test the node is stopped with SIGTERM and must exit 0
 * (a sanitizer build exits non-zero on a leak or error at shutdown); after
 * a failing one it is killed. A sanitizer report in inboxd's log fails the
 * test even if every assertion held. */
static int world_teardown(void **state)
{
    struct world *w = *state;
    for (size_t i = 0; i < CLIENTS_MAX; i++)
        inbox_client_free(w->clients[i]);
    for (size_t i = 0; i < CLIENTS_MAX; i++)
        free(w->allocs[i]);
    k9_free(w->k9);
    bool bad = false;
    if (w->passed && w->p.pid != 0) {
        int code = proc_stop(&w->p, STOP_MS);
        if (code != 0) {
            fprintf(stderr, "inboxd exited with %d after SIGTERM\n", code);
            bad = true;
        }
    }
    proc_kill9(&w->p);
    if (proc_log_contains(&w->p, "ERROR: AddressSanitizer") ||
        proc_log_contains(&w->p, "ERROR: LeakSanitizer") ||
        proc_log_contains(&w->p, "runtime error:")) {
        fprintf(stderr, "inboxd reported a sanitizer error\n");
        bad = true;
    }
    proc_destroy(&w->p,
                 (!w->passed || bad) && getenv("INBOX_TEST_CLEAN") == NULL);
    free(w);
    return bad ? -1 : 0;
}

static void start(struct world *w, const char *const *args, size_t count)
{
    proc_add_args(&w->p, args, count);
    if (proc_start(&w->p) != 0)
        fail_msg("inboxd did not start (see the log above)");
}

static struct inbox_client *client_admin(struct world *w)
{
    return track(w, proc_client(&w->p, NULL, NULL, NULL, NULL, NULL));
}

/* Fails with the code's name and the client's last message. */
#define assert_rc(c, rc, want)                                                 \
    do {                                                                       \
        int rc_ = (rc), want_ = (want);                                        \
        if (rc_ != want_)                                                      \
            fail_msg("%s: got %s (%d), want %s; client says: %s", #rc,         \
                     inbox_err_name(rc_), rc_, inbox_err_name(want_),          \
                     inbox_client_last_error_message(c));                      \
    } while (0)

static void msg_id_make(uint8_t id[INBOX_MSG_ID_BYTES], uint8_t tag, uint32_t n)
{
    memset(id, 0, INBOX_MSG_ID_BYTES);
    id[0] = tag;
    memcpy(id + 1, &n, sizeof n);
}

static uint64_t enqueue_ok(struct inbox_client *c, const char *inbox,
                           const uint8_t *msg_id, const void *payload,
                           size_t len, bool *dedup)
{
    uint64_t seq = 0;
    bool d = false;
    assert_rc(c,
              inbox_enqueue(c, inbox, strlen(inbox), msg_id, 0, payload, len,
                            &seq, &d, NULL, T_MS),
              0);
    if (dedup != NULL)
        *dedup = d;
    return seq;
}

static struct inbox_client_fetch_result *
fetch_ok(struct inbox_client *c, const char *inbox, uint64_t after,
         uint32_t messages_max, uint32_t bytes_max)
{
    struct inbox_client_fetch_result *r = NULL;
    assert_rc(c,
              inbox_fetch(c, inbox, strlen(inbox), after, messages_max,
                          bytes_max, 0, 0, &r, T_MS),
              0);
    assert_non_null(r);
    return r;
}

/* ---- operations ---------------------------------------------------------- */

/* ENQUEUE: seqs 1, 2, 3 per inbox; the same msg id again is a dedup hit
 * answering the first seq, and stores nothing. */
static void test_enqueue_dedup(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    uint8_t id[3][INBOX_MSG_ID_BYTES];
    bool dedup = true;
    for (uint32_t i = 0; i < 3; i++) {
        msg_id_make(id[i], 0xE1, i);
        char payload[16];
        snprintf(payload, sizeof payload, "m%u", (unsigned)i);
        assert_int_equal(
            enqueue_ok(c, "alice", id[i], payload, strlen(payload), &dedup),
            i + 1);
        assert_false(dedup);
    }
    /* Another inbox has its own seqs. */
    uint8_t other[INBOX_MSG_ID_BYTES];
    msg_id_make(other, 0xE2, 0);
    assert_int_equal(enqueue_ok(c, "bob", other, "b", 1, &dedup), 1);
    /* The first msg id again, even with another payload. */
    assert_int_equal(enqueue_ok(c, "alice", id[0], "again", 5, &dedup), 1);
    assert_true(dedup);
    assert_int_equal(enqueue_ok(c, "alice", id[2], "m2", 2, &dedup), 3);
    assert_true(dedup);
    /* A library-made msg id is reported back. */
    uint8_t made[INBOX_MSG_ID_BYTES] = {0}, zero[INBOX_MSG_ID_BYTES] = {0};
    uint64_t seq = 0;
    assert_rc(c,
              inbox_enqueue(c, "alice", 5, NULL, 0, "m3", 2, &seq, &dedup, made,
                            T_MS),
              0);
    assert_int_equal(seq, 4);
    assert_memory_not_equal(made, zero, INBOX_MSG_ID_BYTES);

    struct inbox_client_fetch_result *r = fetch_ok(c, "alice", 0, 0, 0);
    assert_int_equal(r->count, 4);
    assert_int_equal(r->last_seq, 4);
    assert_int_equal(r->acked_seq, 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r->messages[i].seq, i + 1);
        assert_memory_equal(r->messages[i].msg_id, id[i], INBOX_MSG_ID_BYTES);
        assert_int_equal(r->messages[i].payload_len, 2);
        assert_true(r->messages[i].payload[1] == (uint8_t)('0' + i));
        assert_true(r->messages[i].enqueue_ts_ms > 0);
    }
    assert_memory_equal(r->messages[3].msg_id, made, INBOX_MSG_ID_BYTES);
    inbox_fetch_result_free(r);
    client_free(w, c);
    w->passed = true;
}

/* ENQUEUE_MANY: one payload to several inboxes, each answered with its own
 * next seq; repeating the call dedups every target. */
static void test_enqueue_many(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    uint8_t pre[INBOX_MSG_ID_BYTES];
    for (uint32_t i = 0; i < 2; i++) {
        msg_id_make(pre, 0xA0, i);
        enqueue_ok(c, "carol", pre, "x", 1, NULL);
    }
    const char *names[] = {"carol", "dan", "eve"};
    uint8_t ids[3][INBOX_MSG_ID_BYTES];
    struct inbox_client_target t[3];
    for (uint32_t i = 0; i < 3; i++) {
        msg_id_make(ids[i], 0xA1, i);
        t[i] = (struct inbox_client_target){names[i], strlen(names[i]), ids[i]};
    }
    struct inbox_client_enqueue_item items[3];
    memset(items, 0xFF, sizeof items);
    assert_rc(c, inbox_enqueue_many(c, t, 3, 0, "group", 5, items, T_MS), 0);
    const uint64_t want[3] = {3, 1, 1};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(items[i].status, 0);
        assert_int_equal(items[i].seq, want[i]);
        assert_false(items[i].dedup);
        assert_memory_equal(items[i].msg_id, ids[i], INBOX_MSG_ID_BYTES);
    }
    /* Again: each target's msg id is known, the first seqs come back. */
    memset(items, 0, sizeof items);
    assert_rc(c, inbox_enqueue_many(c, t, 3, 0, "group", 5, items, T_MS), 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(items[i].seq, want[i]);
        assert_true(items[i].dedup);
    }
    /* NULL msg ids: the library makes distinct ones. */
    struct inbox_client_target t2[2] = {{"dan", 3, NULL}, {"dan", 3, NULL}};
    assert_rc(c, inbox_enqueue_many(c, t2, 2, 0, "two", 3, items, T_MS), 0);
    assert_true((items[0].seq == 2 && items[1].seq == 3) ||
                (items[0].seq == 3 && items[1].seq == 2));
    assert_memory_not_equal(items[0].msg_id, items[1].msg_id,
                            INBOX_MSG_ID_BYTES);
    for (size_t i = 0; i < 3; i++) {
        struct inbox_client_fetch_result *r = fetch_ok(c, names[i], 0, 0, 0);
        assert_int_equal(r->last_seq, i == 0 ? 3 : i == 1 ? 3 : 1);
        const struct inbox_client_message *m = &r->messages[want[i] - 1];
        assert_int_equal(m->seq, want[i]);
        assert_memory_equal(m->msg_id, ids[i], INBOX_MSG_ID_BYTES);
        assert_int_equal(m->payload_len, 5);
        assert_memory_equal(m->payload, "group", 5);
        inbox_fetch_result_free(r);
    }
    client_free(w, c);
    w->passed = true;
}

static void fill(uint8_t *buf, size_t len, uint32_t salt)
{
    uint32_t x = salt * 2654435761u + 1u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

/* FETCH: after a seq, at most messages_max, payload bytes within bytes_max
 * except the first message, which always comes. */
static void test_fetch_bounds(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    static uint8_t big[INBOX_PAYLOAD_BYTES_MAX];
    uint8_t small[1000];
    for (uint32_t i = 0; i < 5; i++) {
        fill(small, sizeof small, i);
        assert_int_equal(
            enqueue_ok(c, "frank", NULL, small, sizeof small, NULL), i + 1);
    }
    fill(big, sizeof big, 99);
    assert_int_equal(enqueue_ok(c, "frank", NULL, big, sizeof big, NULL), 6);

    struct inbox_client_fetch_result *r = fetch_ok(c, "frank", 0, 2, 0);
    assert_int_equal(r->count, 2);
    assert_int_equal(r->messages[0].seq, 1);
    assert_int_equal(r->messages[1].seq, 2);
    assert_int_equal(r->last_seq, 6);
    fill(small, sizeof small, 1);
    assert_memory_equal(r->messages[1].payload, small, sizeof small);
    inbox_fetch_result_free(r);

    r = fetch_ok(c, "frank", 2, 0, 0); /* after seq 2: 3..6 */
    assert_int_equal(r->count, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(r->messages[i].seq, 3 + i);
    assert_int_equal(r->messages[3].payload_len, INBOX_PAYLOAD_BYTES_MAX);
    assert_memory_equal(r->messages[3].payload, big, sizeof big);
    for (size_t i = 1; i < 4; i++)
        assert_true(r->messages[i].enqueue_ts_ms >=
                    r->messages[i - 1].enqueue_ts_ms);
    inbox_fetch_result_free(r);

    r = fetch_ok(c, "frank", 0, 0, 2500); /* 1000 + 1000 fit, not 3000 */
    assert_int_equal(r->count, 2);
    inbox_fetch_result_free(r);
    r = fetch_ok(c, "frank", 0, 0, 10); /* the first comes anyway */
    assert_int_equal(r->count, 1);
    assert_int_equal(r->messages[0].seq, 1);
    inbox_fetch_result_free(r);
    r = fetch_ok(c, "frank", 5, 0, 1); /* a 64 KiB first message too */
    assert_int_equal(r->count, 1);
    assert_int_equal(r->messages[0].seq, 6);
    assert_int_equal(r->messages[0].payload_len, INBOX_PAYLOAD_BYTES_MAX);
    inbox_fetch_result_free(r);
    r = fetch_ok(c, "frank", 6, 0, 0); /* nothing after the last */
    assert_int_equal(r->count, 0);
    assert_int_equal(r->last_seq, 6);
    inbox_fetch_result_free(r);
    r = fetch_ok(c, "nobody", 0, 0, 0); /* an inbox never written */
    assert_int_equal(r->count, 0);
    assert_int_equal(r->last_seq, 0);
    inbox_fetch_result_free(r);
    client_free(w, c);
    w->passed = true;
}

/* ACK: deletes up to a seq, idempotent, below the acked seq a no-op,
 * beyond the last seq ACK_BEYOND_LAST; FETCH starts after the acked seq. */
static void test_ack(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    for (uint32_t i = 0; i < 5; i++)
        enqueue_ok(c, "gina", NULL, "m", 1, NULL);
    uint64_t acked = 0;
    assert_rc(c, inbox_ack(c, "gina", 4, 2, &acked, T_MS), 0);
    assert_int_equal(acked, 2);
    assert_rc(c, inbox_ack(c, "gina", 4, 2, &acked, T_MS), 0);
    assert_int_equal(acked, 2);
    assert_rc(c, inbox_ack(c, "gina", 4, 1, &acked, T_MS), 0);
    assert_int_equal(acked, 2);
    struct inbox_client_fetch_result *r = fetch_ok(c, "gina", 0, 0, 0);
    assert_int_equal(r->acked_seq, 2);
    assert_int_equal(r->count, 3);
    assert_int_equal(r->messages[0].seq, 3);
    inbox_fetch_result_free(r);
    assert_rc(c, inbox_ack(c, "gina", 4, 6, &acked, T_MS),
              INBOX_EACK_BEYOND_LAST);
    assert_rc(c, inbox_ack(c, "nobody", 6, 1, &acked, T_MS),
              INBOX_EACK_BEYOND_LAST);
    assert_rc(c, inbox_ack(c, "gina", 4, 5, &acked, T_MS), 0);
    assert_int_equal(acked, 5);
    r = fetch_ok(c, "gina", 0, 0, 0);
    assert_int_equal(r->count, 0);
    assert_int_equal(r->acked_seq, 5);
    assert_int_equal(r->last_seq, 5);
    inbox_fetch_result_free(r);
    /* Seqs go on after everything was acked. */
    assert_int_equal(enqueue_ok(c, "gina", NULL, "n", 1, NULL), 6);
    client_free(w, c);
    w->passed = true;
}

/* SEEN_SET moves forward only; SEEN_GET reads several inboxes (0: never). */
static void test_seen(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    uint64_t ts = 0;
    assert_rc(c, inbox_seen_set(c, "hana", 4, 1000, &ts, T_MS), 0);
    assert_int_equal(ts, 1000);
    assert_rc(c, inbox_seen_set(c, "hana", 4, 500, &ts, T_MS), 0);
    assert_int_equal(ts, 1000);
    assert_rc(c, inbox_seen_set(c, "ivan", 4, 7, &ts, T_MS), 0);
    assert_int_equal(ts, 7);
    struct inbox_client_key keys[3] = {{"hana", 4}, {"never", 5}, {"ivan", 4}};
    struct inbox_client_key_item items[3];
    assert_rc(c, inbox_seen_get(c, keys, 3, 0, items, T_MS), 0);
    assert_int_equal(items[0].status, 0);
    assert_int_equal(items[0].value, 1000);
    assert_int_equal(items[1].status, 0);
    assert_int_equal(items[1].value, 0);
    assert_int_equal(items[2].value, 7);
    assert_rc(c, inbox_seen_set(c, "hana", 4, 2000, &ts, T_MS), 0);
    assert_int_equal(ts, 2000);
    assert_rc(c, inbox_seen_get(c, keys, 1, 0, items, T_MS), 0);
    assert_int_equal(items[0].value, 2000);
    client_free(w, c);
    w->passed = true;
}

/* ---- WATCH / NOTIFY and long-poll ---------------------------------------- */

#define NOTES_MAX 64

struct notes {
    size_t count;
    int lost; /* a status != 0 notify: watches lost */
    struct {
        char inbox[INBOX_KEY_BYTES_MAX + 1];
        uint64_t last_seq;
    } n[NOTES_MAX];
};

static void notify_fn(void *arg, int status, const uint8_t *inbox,
                      size_t inbox_len, uint64_t last_seq)
{
    struct notes *ns = arg;
    if (status != 0) {
        ns->lost = status;
        return;
    }
    if (ns->count == NOTES_MAX)
        return;
    memcpy(ns->n[ns->count].inbox, inbox, inbox_len);
    ns->n[ns->count].inbox[inbox_len] = '\0';
    ns->n[ns->count].last_seq = last_seq;
    ns->count++;
}

/* The highest last_seq notified for inbox, 0 if none. */
static uint64_t noted(const struct notes *ns, const char *inbox)
{
    uint64_t best = 0;
    for (size_t i = 0; i < ns->count; i++)
        if (strcmp(ns->n[i].inbox, inbox) == 0 && ns->n[i].last_seq > best)
            best = ns->n[i].last_seq;
    return best;
}

/* Polls c until a NOTIFY for inbox reaches last_seq (bounded). */
static bool await_note(struct inbox_client *c, const struct notes *ns,
                       const char *inbox, uint64_t last_seq)
{
    uint64_t end = proc_now_ms() + WAIT_MS;
    while (noted(ns, inbox) < last_seq && proc_now_ms() < end)
        inbox_client_poll(c, 50);
    return noted(ns, inbox) >= last_seq;
}

/* WATCH answers the current last seq; an enqueue from another client
 * arrives as a NOTIFY push; after UNWATCH no push comes for that inbox
 * (checked by ordering: a later push for a still-watched inbox arrives and
 * nothing for the unwatched one came before it). */
static void test_watch_notify(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct notes *ns = world_alloc(w, sizeof *ns);
    struct inbox_client *a =
        track(w, proc_client(&w->p, NULL, NULL, NULL, notify_fn, ns));
    assert_non_null(a);
    struct inbox_client *c = client_admin(w); /* "c" for assert_rc */
    enqueue_ok(c, "judy", NULL, "0", 1, NULL);

    struct inbox_client_key keys[2] = {{"judy", 4}, {"kim", 3}};
    struct inbox_client_key_item items[2];
    assert_int_equal(inbox_watch(a, keys, 2, items, T_MS), 0);
    assert_int_equal(items[0].status, 0);
    assert_int_equal(items[0].value, 1);
    assert_int_equal(items[1].status, 0);
    assert_int_equal(items[1].value, 0);

    enqueue_ok(c, "judy", NULL, "1", 1, NULL);
    assert_true(await_note(a, ns, "judy", 2));
    assert_int_equal(noted(ns, "judy"), 2);
    enqueue_ok(c, "kim", NULL, "k", 1, NULL);
    assert_true(await_note(a, ns, "kim", 1));

    /* ENQUEUE_MANY notifies each watched target. */
    struct inbox_client_target t[2] = {{"judy", 4, NULL}, {"kim", 3, NULL}};
    struct inbox_client_enqueue_item ei[2];
    assert_rc(c, inbox_enqueue_many(c, t, 2, 0, "m", 1, ei, T_MS), 0);
    assert_true(await_note(a, ns, "judy", 3));
    assert_true(await_note(a, ns, "kim", 2));

    assert_int_equal(inbox_unwatch(a, keys, 1, items, T_MS), 0);
    size_t before = ns->count;
    enqueue_ok(c, "judy", NULL, "2", 1, NULL); /* judy 4: not watched */
    enqueue_ok(c, "kim", NULL, "k", 1, NULL);  /* kim 3: watched */
    assert_true(await_note(a, ns, "kim", 3));
    for (size_t i = before; i < ns->count; i++)
        assert_string_not_equal(ns->n[i].inbox, "judy");
    assert_int_equal(ns->lost, 0);
    struct inbox_client_stats st;
    inbox_client_stats_get(a, &st);
    assert_true(st.notifies >= 4);
    client_free(w, a);
    client_free(w, c);
    w->passed = true;
}

struct fetch_wait {
    bool done;
    int status;
    size_t count;
    uint64_t seq;
    char payload[16];
    uint64_t done_ms;
};

static void fetch_wait_done(void *arg, int status,
                            const struct inbox_client_fetch_result *r)
{
    struct fetch_wait *fw = arg;
    fw->done = true;
    fw->status = status;
    fw->done_ms = proc_now_ms();
    if (status != 0)
        return;
    fw->count = r->count;
    if (r->count > 0) {
        fw->seq = r->messages[0].seq;
        size_t n = r->messages[0].payload_len;
        if (n >= sizeof fw->payload)
            n = sizeof fw->payload - 1;
        memcpy(fw->payload, r->messages[0].payload, n);
        fw->payload[n] = '\0';
    }
}

/* A long-poll FETCH parks until an enqueue lands (answered long before its
 * wait is over), and answers empty once its wait passes with nothing. */
static void test_long_poll(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *a = client_admin(w);
    struct inbox_client *c = client_admin(w);
    const uint32_t wait_ms = 30000;
    struct fetch_wait *fw = world_alloc(w, sizeof *fw);
    assert_int_equal(inbox_client_submit_fetch(a, "liam", 4, 0, 0, 0, wait_ms,
                                               0, 0, fw, fetch_wait_done),
                     0);
    /* It is parked: nothing completes it for a while. */
    uint64_t end = proc_now_ms() + 300;
    while (proc_now_ms() < end)
        inbox_client_poll(a, 20);
    assert_false(fw->done);

    uint64_t sent = proc_now_ms();
    assert_int_equal(enqueue_ok(c, "liam", NULL, "wake", 4, NULL), 1);
    end = proc_now_ms() + WAIT_MS;
    while (!fw->done && proc_now_ms() < end)
        inbox_client_poll(a, 50);
    assert_true(fw->done);
    assert_int_equal(fw->status, 0);
    assert_int_equal(fw->count, 1);
    assert_int_equal(fw->seq, 1);
    assert_string_equal(fw->payload, "wake");
    /* Woken by the enqueue, not by the end of its 30 s wait. */
    assert_true(fw->done_ms - sent < wait_ms / 2);

    /* Nothing comes: an empty answer after the wait. */
    struct inbox_client_fetch_result *r = NULL;
    uint64_t t0 = proc_now_ms();
    assert_int_equal(inbox_fetch(a, "liam", 4, 1, 0, 0, 400, 0, &r, 0), 0);
    uint64_t took = proc_now_ms() - t0;
    assert_int_equal(r->count, 0);
    assert_int_equal(r->last_seq, 1);
    assert_true(took >= 350);
    inbox_fetch_result_free(r);

    /* A parked fetch after a seq that already exists answers at once. */
    r = NULL;
    assert_int_equal(inbox_fetch(a, "liam", 4, 0, 0, 0, wait_ms, 0, &r, 0), 0);
    assert_int_equal(r->count, 1);
    inbox_fetch_result_free(r);
    client_free(w, c);

    /* SIGTERM with a fetch parked: it is answered (empty) at once, not
     * dropped, and the node exits 0 (main.c: "answer parked long-polls"). */
    memset(fw, 0, sizeof *fw);
    assert_int_equal(inbox_client_submit_fetch(a, "liam", 4, 1, 0, 0, wait_ms,
                                               0, 0, fw, fetch_wait_done),
                     0);
    end = proc_now_ms() + 300;
    while (proc_now_ms() < end)
        inbox_client_poll(a, 20);
    assert_false(fw->done);
    uint64_t termed = proc_now_ms();
    proc_term(&w->p);
    end = proc_now_ms() + WAIT_MS;
    while (!fw->done && proc_now_ms() < end)
        inbox_client_poll(a, 50);
    assert_true(fw->done);
    assert_int_equal(fw->status, 0);
    assert_int_equal(fw->count, 0);
    assert_true(fw->done_ms - termed < wait_ms / 2);
    client_free(w, a);
    assert_int_equal(proc_wait(&w->p, STOP_MS), 0);
    w->passed = true;
}

/* ---- ROUTE, STATUS ------------------------------------------------------- */

static void test_route_status(void **state)
{
    struct world *w = *state;
    const char *args[] = {"--node-id", "7", "--cluster-shard-count", "16"};
    start(w, args, 4);
    struct inbox_client *c = client_admin(w);
    uint64_t epoch = 0;
    assert_rc(c, inbox_route(c, &epoch, T_MS), 0);
    assert_true(epoch >= 1);
    assert_int_equal(inbox_client_shard_count(c), 16);
    for (uint32_t s = 0; s < 16; s++)
        assert_int_equal(inbox_client_shard_leader(c, s), 7);
    assert_int_equal(inbox_shard_of("alice", 5, 64), 48); /* protocol §6 */

    enqueue_ok(c, "alice", NULL, "x", 1, NULL);
    struct inbox_client_status *st = NULL;
    assert_rc(c, inbox_status(c, 0, &st, T_MS), 0);
    assert_int_equal(st->node_id, 7);
    assert_int_equal(st->count, 16);
    uint32_t alice = inbox_shard_of("alice", 5, 16);
    for (size_t i = 0; i < st->count; i++) {
        assert_int_equal(st->shards[i].shard, i);
        assert_int_equal(st->shards[i].role, 2); /* leader */
        assert_int_equal(st->shards[i].leader_id, 7);
        assert_true(st->shards[i].term >= 1);
        /* the leader's no-op, plus alice's enqueue on hers */
        assert_true(st->shards[i].applied_index >= (i == alice ? 2u : 1u));
    }
    inbox_status_free(st);
    client_free(w, c);
    w->passed = true;
}

/* ---- error codes --------------------------------------------------------- */

/* Bad keys and payloads are refused by the library before sending (the
 * wire cannot even carry them: protocol §1, and test_malformed checks that
 * the server closes a connection that sends them). */
static void test_errors_arguments(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    char key[INBOX_KEY_BYTES_MAX + 2];
    memset(key, 'k', sizeof key);
    static uint8_t payload[INBOX_PAYLOAD_BYTES_MAX + 1];
    assert_rc(c,
              inbox_enqueue(c, key, INBOX_KEY_BYTES_MAX + 1, NULL, 0, "x", 1,
                            NULL, NULL, NULL, T_MS),
              INBOX_EKEY_INVALID);
    assert_rc(c,
              inbox_enqueue(c, "", 0, NULL, 0, "x", 1, NULL, NULL, NULL, T_MS),
              INBOX_EKEY_INVALID);
    assert_rc(c,
              inbox_enqueue(c, "zed", 3, NULL, 0, payload, sizeof payload, NULL,
                            NULL, NULL, T_MS),
              INBOX_EPAYLOAD_TOO_LARGE);
    struct inbox_client_fetch_result *r = NULL;
    assert_rc(c, inbox_fetch(c, "", 0, 0, 0, 0, 0, 0, &r, T_MS),
              INBOX_EKEY_INVALID);
    assert_rc(c, inbox_ack(c, key, INBOX_KEY_BYTES_MAX + 1, 1, NULL, T_MS),
              INBOX_EKEY_INVALID);
    /* The longest key and the largest payload are fine. */
    uint64_t seq = 0;
    assert_rc(c,
              inbox_enqueue(c, key, INBOX_KEY_BYTES_MAX, NULL, 0, payload,
                            INBOX_PAYLOAD_BYTES_MAX, &seq, NULL, NULL, T_MS),
              0);
    assert_int_equal(seq, 1);
    client_free(w, c);
    w->passed = true;
}

/* Raw ENQUEUE request body (protocol §4.2). Returns its length. */
static size_t enqueue_body(uint8_t *out, size_t cap, const uint8_t *msg_id,
                           const char *inbox, uint32_t payload_len,
                           uint8_t fill_byte)
{
    size_t klen = strlen(inbox);
    size_t need = 16 + 8 + 1 + klen + 4 + payload_len;
    assert_true(need <= cap);
    size_t at = 0;
    memcpy(out, msg_id, 16);
    at += 16;
    memset(out + at, 0, 8); /* ttl 0: default */
    at += 8;
    out[at++] = (uint8_t)klen;
    memcpy(out + at, inbox, klen);
    at += klen;
    out[at++] = (uint8_t)payload_len;
    out[at++] = (uint8_t)(payload_len >> 8);
    out[at++] = (uint8_t)(payload_len >> 16);
    out[at++] = (uint8_t)(payload_len >> 24);
    memset(out + at, fill_byte, payload_len);
    return at + payload_len;
}

static void expect_error(struct raw_client *r, uint64_t id, int code)
{
    struct inbox_msg m;
    int rc = raw_recv(r, &m, WAIT_MS);
    if (rc != 1)
        fail_msg("request %llu: no answer (%d)", (unsigned long long)id, rc);
    if (!(m.hdr.flags & INBOX_FLAG_ERROR))
        fail_msg("request %llu: want %s, got op %u flags %u id %llu (seq "
                 "%llu if an ENQUEUE)",
                 (unsigned long long)id, inbox_err_name(code),
                 (unsigned)m.hdr.opcode, (unsigned)m.hdr.flags,
                 (unsigned long long)m.hdr.request_id,
                 (unsigned long long)m.body.enqueue_resp.seq);
    assert_int_equal(m.hdr.request_id, id);
    if (m.body.error.code != (uint16_t)-code)
        fail_msg("request %llu: want %s, got code %u", (unsigned long long)id,
                 inbox_err_name(code), (unsigned)m.body.error.code);
}

static void expect_ping(struct raw_client *r, uint64_t id)
{
    assert_int_equal(raw_send_frame(r, INBOX_OP_PING, id, NULL, 0), 0);
    struct inbox_msg m;
    assert_int_equal(raw_recv(r, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.opcode, INBOX_OP_PING);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_RESPONSE);
    assert_int_equal(m.hdr.request_id, id);
}

/* Over its pending bound an inbox answers INBOX_FULL_MESSAGES (raw frame
 * and libinbox alike), the connection stays, other inboxes are not
 * affected, an ACK makes room, and a retry of a stored msg id still gets
 * its seq while the inbox is full. */
static void test_errors_inbox_full(void **state)
{
    struct world *w = *state;
    const char *args[] = {"--store-inbox-pending-messages-max", "5"};
    start(w, args, 2);
    struct inbox_client *c = client_admin(w);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(enqueue_ok(c, "max", NULL, "m", 1, NULL), i + 1);

    struct raw_client r;
    assert_int_equal(raw_open(&r, w->p.port, w->p.ca, w->p.admin_crt,
                              w->p.admin_key, WAIT_MS),
                     0);
    assert_int_equal(raw_hello(&r, WAIT_MS), 0);
    uint8_t id[INBOX_MSG_ID_BYTES], body[256];
    msg_id_make(id, 0xF0, 1);
    size_t n = enqueue_body(body, sizeof body, id, "max", 1, 'x');
    assert_int_equal(
        raw_send_frame(&r, INBOX_OP_ENQUEUE, 10, body, (uint32_t)n), 0);
    expect_error(&r, 10, INBOX_EINBOX_FULL_MESSAGES);
    expect_ping(&r, 11); /* the connection stays */

    /* libinbox: answered at once with the code (docs/client.md: a full
     * inbox clears only when its owner acks, so it is not retried). */
    uint64_t seq = 0, t0 = proc_now_ms();
    assert_rc(c,
              inbox_enqueue(c, "max", 3, id, 0, "x", 1, &seq, NULL, NULL, T_MS),
              INBOX_EINBOX_FULL_MESSAGES);
    assert_true(proc_now_ms() - t0 < T_MS / 2); /* not retried to the end */
    const char *why = inbox_client_last_error_message(c);
    if (strstr(why, "INBOX_FULL_MESSAGES") == NULL)
        fail_msg("the client's message does not name the error: %s", why);
    /* Other inboxes are not affected. */
    assert_int_equal(enqueue_ok(c, "other", NULL, "m", 1, NULL), 1);
    /* Room again after an ACK; the refused msg id was not stored. */
    assert_rc(c, inbox_ack(c, "max", 3, 1, NULL, T_MS), 0);
    bool dedup = true;
    assert_int_equal(enqueue_ok(c, "max", id, "x", 1, &dedup), 6);
    assert_false(dedup);
    /* Full again. A retry of the stored msg id is still answered with its
     * seq (dedup comes before the bound); a new one is refused. */
    assert_int_equal(
        raw_send_frame(&r, INBOX_OP_ENQUEUE, 12, body, (uint32_t)n), 0);
    struct inbox_msg m;
    assert_int_equal(raw_recv(&r, &m, WAIT_MS), 1);
    assert_int_equal(m.hdr.flags, INBOX_FLAG_RESPONSE);
    assert_int_equal(m.hdr.request_id, 12);
    assert_int_equal(m.body.enqueue_resp.seq, 6);
    assert_true(m.body.enqueue_resp.dedup);
    msg_id_make(id, 0xF0, 2);
    n = enqueue_body(body, sizeof body, id, "max", 1, 'y');
    assert_int_equal(
        raw_send_frame(&r, INBOX_OP_ENQUEUE, 13, body, (uint32_t)n), 0);
    expect_error(&r, 13, INBOX_EINBOX_FULL_MESSAGES);
    raw_close(&r);
    struct inbox_client_fetch_result *fr = fetch_ok(c, "max", 0, 0, 0);
    assert_int_equal(fr->acked_seq, 1);
    assert_int_equal(fr->count, 5);
    assert_int_equal(fr->last_seq, 6);
    inbox_fetch_result_free(fr);
    client_free(w, c);
    w->passed = true;
}

/* Membership admin ops on a node alone: what cannot be done is refused
 * with a clear code, what is a no-op succeeds. */
static void test_errors_unsupported(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    const char *addrs[] = {"127.0.0.1:1"};
    uint64_t epoch = 0;
    /* Adding itself; removing its only voter; moving a replica. */
    assert_rc(c, inbox_add_node(c, 1, addrs, 1, &epoch, T_MS), INBOX_EEXISTS);
    assert_rc(c, inbox_remove_node(c, 1, &epoch, T_MS), INBOX_EINVAL);
    assert_rc(c, inbox_move_replica(c, 0, 1, 2, &epoch, T_MS),
              INBOX_EUNSUPPORTED);
    /* No other voter to hand shard 0 to. */
    assert_rc(c, inbox_transfer_leader(c, 0, 0, &epoch, T_MS), INBOX_EINVAL);
    /* Removing a node that is no member is a no-op. */
    assert_rc(c, inbox_remove_node(c, 2, &epoch, T_MS), 0);
    assert_rc(c, inbox_snapshot(c, 0, INBOX_CLIENT_SHARD_ALL, &epoch, T_MS), 0);
    assert_true(epoch >= 1);
    client_free(w, c);
    w->passed = true;
}

/* ---- authentication ------------------------------------------------------ */

/* root/name into out (PROC_PATH_BYTES), or the test fails. */
static void path_in(char *out, const char *root, const char *name)
{
    int n = snprintf(out, PROC_PATH_BYTES, "%s/%s", root, name);
    assert_true(n > 0 && (size_t)n < PROC_PATH_BYTES);
}

static void issue(const struct inboxd_proc *p, const char *ca_crt,
                  const char *ca_key, const char *name, enum inbox_role role,
                  char *crt, char *key)
{
    char file[64];
    snprintf(file, sizeof file, "%s.crt", name);
    path_in(crt, p->root, file);
    snprintf(file, sizeof file, "%s.key", name);
    path_in(key, p->root, file);
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct cert_issue_config cfg = {.ca_cert_path = ca_crt,
                                    .ca_key_path = ca_key,
                                    .cert_path = crt,
                                    .key_path = key,
                                    .name = name,
                                    .role = role};
    int rc = cert_issue(&cfg, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_issue %s: %s: %s", name, inbox_err_name(rc), msg);
}

/* A plaintext client gets no frame: the connection is closed (at most a
 * TLS alert comes back, never an INBX frame). */
static void test_auth_plaintext(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(w->p.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = 1;
    m.hdr.opcode = INBOX_OP_HELLO;
    m.hdr.request_id = 1;
    m.body.hello_req.version_min = 1;
    m.body.hello_req.version_max = 1;
    uint8_t frame[64];
    size_t n = 0;
    assert_int_equal(inbox_msg_encode(&m, frame, sizeof frame, &n), 0);
    assert_int_equal(send(fd, frame, n, MSG_NOSIGNAL), (ssize_t)n);
    uint8_t got[4096];
    size_t have = 0;
    bool closed = false;
    uint64_t end = proc_now_ms() + WAIT_MS;
    while (!closed && proc_now_ms() < end) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) != 1)
            continue;
        ssize_t k = recv(fd, got + have, sizeof got - have, 0);
        if (k <= 0)
            closed = true;
        else
            have += (size_t)k;
        if (have == sizeof got)
            break;
    }
    close(fd);
    assert_true(closed);
    for (size_t i = 0; i + 4 <= have; i++)
        assert_false(memcmp(got + i, "INBX", 4) == 0);
    if (have > 0)
        assert_int_equal(got[0], 0x15); /* a TLS alert record */
    /* The node still serves TLS clients. */
    struct inbox_client *c = client_admin(w);
    enqueue_ok(c, "after", NULL, "x", 1, NULL);
    client_free(w, c);
    w->passed = true;
}

static bool is_tls_error(int rc)
{
    return rc <= INBOX_ETLS_HANDSHAKE && rc >= INBOX_ETLS_CONFIG;
}

/* Writes the concatenation of two PEM files to out. */
static void concat(const char *out, const char *a, const char *b)
{
    FILE *o = fopen(out, "w");
    assert_non_null(o);
    const char *in[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(in[i], "r");
        assert_non_null(f);
        int ch;
        while ((ch = fgetc(f)) != EOF)
            fputc(ch, o);
        fclose(f);
    }
    assert_int_equal(fclose(o), 0);
}

/* Certificates from another CA fail with a TLS error wherever they meet
 * the cluster's: libinbox refuses to load a certificate its CA file does
 * not sign; a client trusting both CAs presents the foreign certificate
 * and the node refuses it in the handshake; a client trusting only the
 * other CA refuses the node's certificate. No frame is exchanged, TLS
 * failures are not retried into a timeout, nothing is stored. */
static void test_auth_other_ca(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    char oca[PROC_PATH_BYTES], oca_key[PROC_PATH_BYTES];
    char both[PROC_PATH_BYTES];
    path_in(oca, w->p.root, "other-ca.crt");
    path_in(oca_key, w->p.root, "other-ca.key");
    path_in(both, w->p.root, "both-cas.crt");
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct cert_ca_config cc = {
        .cert_path = oca, .key_path = oca_key, .name = "other CA"};
    int rc = cert_ca_create(&cc, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_ca_create: %s", msg);
    char crt[PROC_PATH_BYTES], key[PROC_PATH_BYTES];
    issue(&w->p, oca, oca_key, "rogue", INBOX_ROLE_ADMIN, crt, key);
    concat(both, w->p.ca, oca);

    /* 1. libinbox will not even load it against the cluster CA. */
    const char *seeds[] = {w->p.seed};
    struct inbox_client_config cfg = {.seeds = seeds,
                                      .seeds_count = 1,
                                      .ca_path = w->p.ca,
                                      .cert_path = crt,
                                      .key_path = key};
    struct inbox_client *c = NULL;
    rc = inbox_client_new(&cfg, &c, msg, sizeof msg);
    assert_int_equal(rc, INBOX_ETLS_CONFIG);
    assert_null(c);

    /* 2. Trusting both CAs, the client presents the foreign certificate:
     * the node refuses it. */
    c = track(w, proc_client(&w->p, crt, key, both, NULL, NULL));
    assert_non_null(c);
    uint64_t t0 = proc_now_ms();
    rc =
        inbox_enqueue(c, "mallory", 7, NULL, 0, "x", 1, NULL, NULL, NULL, T_MS);
    if (!is_tls_error(rc))
        fail_msg("want a TLS error, got %s: %s", inbox_err_name(rc),
                 inbox_client_last_error_message(c));
    print_message("    node refused the foreign certificate: %s (%s)\n",
                  inbox_err_name(rc), inbox_client_last_error_message(c));
    assert_true(proc_now_ms() - t0 < T_MS); /* failed, not timed out */
    client_free(w, c);

    /* The same with the raw client: the handshake or the first read fails
     * with a TLS error, and no frame ever comes back. */
    struct raw_client r;
    rc = raw_open(&r, w->p.port, both, crt, key, WAIT_MS);
    if (rc == 0) {
        /* TLS 1.3: the client may finish before the server's verdict,
         * which then arrives as an alert instead of a HELLO answer. */
        struct inbox_msg m;
        memset(&m, 0, sizeof m);
        m.hdr.version = 1;
        m.hdr.opcode = INBOX_OP_HELLO;
        m.hdr.request_id = 1;
        m.body.hello_req.version_min = 1;
        m.body.hello_req.version_max = 1;
        raw_send(&r, &m);
        rc = raw_recv(&r, &m, WAIT_MS);
        assert_int_not_equal(rc, 1); /* no frame */
    }
    raw_close(&r);
    assert_int_not_equal(rc, -1); /* not a timeout */
    if (rc != 0 && !is_tls_error(rc))
        fail_msg("raw: want a TLS error or a close, got %d", rc);

    /* 3. Trusting only the other CA: the node's certificate is refused. */
    c = track(w, proc_client(&w->p, crt, key, oca, NULL, NULL));
    assert_non_null(c);
    rc =
        inbox_enqueue(c, "mallory", 7, NULL, 0, "x", 1, NULL, NULL, NULL, T_MS);
    if (rc != INBOX_ETLS_UNTRUSTED)
        fail_msg("want TLS_UNTRUSTED, got %s: %s", inbox_err_name(rc),
                 inbox_client_last_error_message(c));
    client_free(w, c);

    /* Nothing was stored, the node logged why, and it still serves. */
    c = client_admin(w);
    struct inbox_client_fetch_result *fr = fetch_ok(c, "mallory", 0, 0, 0);
    assert_int_equal(fr->last_seq, 0);
    inbox_fetch_result_free(fr);
    client_free(w, c);
    assert_true(proc_log_contains(&w->p, "TLS_"));
    w->passed = true;
}

/* A frontend certificate may use data operations but not SNAPSHOT
 * (DENIED); the admin certificate may. */
static void test_auth_roles(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    char crt[PROC_PATH_BYTES], key[PROC_PATH_BYTES];
    issue(&w->p, w->p.ca, w->p.ca_key, "fe1", INBOX_ROLE_FRONTEND, crt, key);
    struct inbox_client *c =
        track(w, proc_client(&w->p, crt, key, NULL, NULL, NULL));
    assert_non_null(c);
    assert_int_equal(enqueue_ok(c, "nina", NULL, "fe", 2, NULL), 1);
    struct inbox_client_fetch_result *r = fetch_ok(c, "nina", 0, 0, 0);
    assert_int_equal(r->count, 1);
    inbox_fetch_result_free(r);
    uint64_t epoch = 0;
    assert_rc(c, inbox_snapshot(c, 0, INBOX_CLIENT_SHARD_ALL, &epoch, T_MS),
              INBOX_EDENIED);
    const char *addrs[] = {"127.0.0.1:1"};
    assert_rc(c, inbox_add_node(c, 2, addrs, 1, &epoch, T_MS), INBOX_EDENIED);
    /* The connection stays usable after DENIED. */
    assert_int_equal(enqueue_ok(c, "nina", NULL, "fe", 2, NULL), 2);
    client_free(w, c);

    c = client_admin(w);
    epoch = 0;
    assert_rc(c, inbox_snapshot(c, 0, INBOX_CLIENT_SHARD_ALL, &epoch, T_MS), 0);
    assert_true(epoch >= 1);
    assert_rc(c, inbox_snapshot(c, 0, 3, &epoch, T_MS), 0);
    client_free(w, c);
    w->passed = true;
}

/* ---- malformed input ----------------------------------------------------- */

struct bad_frame {
    const char *what;
    uint8_t opcode;
    uint8_t body[INBOX_PAYLOAD_BYTES_MAX + 256];
    uint32_t len;
};

/* Each bad frame, on its own connection, gets ERROR PROTO with its request
 * id and a close, while a well-behaved libinbox client with requests in
 * flight all along keeps getting answers, and its data stays intact. */
static void test_malformed(void **state)
{
    struct world *w = *state;
    start(w, NULL, 0);
    struct inbox_client *c = client_admin(w);
    assert_int_equal(enqueue_ok(c, "olga", NULL, "before", 6, NULL), 1);

    static struct bad_frame bad[8];
    size_t nbad = 0;
    uint8_t id[INBOX_MSG_ID_BYTES];
    msg_id_make(id, 0xBA, 0);
    /* garbage: a body that is not an ENQUEUE at all */
    bad[nbad] = (struct bad_frame){
        "garbage body", INBOX_OP_ENQUEUE, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 5};
    nbad++;
    /* a valid ENQUEUE body plus one trailing byte */
    bad[nbad].what = "trailing byte";
    bad[nbad].opcode = INBOX_OP_ENQUEUE;
    bad[nbad].len = (uint32_t)enqueue_body(
        bad[nbad].body, sizeof bad[nbad].body - 1, id, "olga", 3, 'x');
    bad[nbad].body[bad[nbad].len++] = 0;
    nbad++;
    /* a key of length 0 */
    bad[nbad].what = "empty key";
    bad[nbad].opcode = INBOX_OP_ENQUEUE;
    bad[nbad].len = (uint32_t)enqueue_body(
        bad[nbad].body, sizeof bad[nbad].body, id, "", 1, 'x');
    nbad++;
    /* a payload length running past the body */
    bad[nbad].what = "payload past the body";
    bad[nbad].opcode = INBOX_OP_ENQUEUE;
    bad[nbad].len = (uint32_t)enqueue_body(
        bad[nbad].body, sizeof bad[nbad].body, id, "olga", 4, 'x');
    bad[nbad].body[16 + 8 + 1 + 4] = 100; /* claims 100 bytes, has 4 */
    nbad++;
    /* FETCH with a truncated body */
    bad[nbad] = (struct bad_frame){
        "truncated fetch", INBOX_OP_FETCH, {4, 'o', 'l', 'g', 'a', 1, 0}, 7};
    nbad++;
    /* ACK whose key length says 200 (> 128) */
    bad[nbad] =
        (struct bad_frame){"key over 128", INBOX_OP_ACK, {200, 'a', 'b'}, 3};
    nbad++;
    /* a payload of 64 KiB + 1, all of it sent: over the protocol's limit */
    bad[nbad].what = "payload over 64 KiB";
    bad[nbad].opcode = INBOX_OP_ENQUEUE;
    bad[nbad].len =
        (uint32_t)enqueue_body(bad[nbad].body, sizeof bad[nbad].body, id,
                               "olga", INBOX_PAYLOAD_BYTES_MAX + 1, 'p');
    nbad++;

    enum { N = 16 };
    struct fetch_wait *fw = world_alloc(w, N * sizeof *fw);
    for (size_t i = 0; i < nbad; i++) {
        /* The good client puts requests in flight first. */
        memset(fw, 0, N * sizeof *fw);
        int ok = 0;
        for (int k = 0; k < N; k++)
            ok += inbox_client_submit_fetch(c, "olga", 4, 0, 0, 0, 0, 0, T_MS,
                                            &fw[k], fetch_wait_done) == 0;
        assert_int_equal(ok, N);
        inbox_client_poll(c, 0); /* send them */

        struct raw_client r;
        assert_int_equal(raw_open(&r, w->p.port, w->p.ca, w->p.admin_crt,
                                  w->p.admin_key, WAIT_MS),
                         0);
        assert_int_equal(raw_hello(&r, WAIT_MS), 0);
        expect_ping(&r, 2);
        uint64_t rid = 100 + i;
        assert_int_equal(
            raw_send_frame(&r, bad[i].opcode, rid, bad[i].body, bad[i].len), 0);
        struct inbox_msg m;
        int rc = raw_recv(&r, &m, WAIT_MS);
        if (rc != 1)
            fail_msg("%s: no ERROR frame (%d)", bad[i].what, rc);
        if (!(m.hdr.flags & INBOX_FLAG_ERROR) || m.hdr.request_id != rid ||
            m.body.error.code != (uint16_t)-INBOX_EPROTO)
            fail_msg("%s: want ERROR PROTO for %llu, got flags %u id %llu "
                     "code %u",
                     bad[i].what, (unsigned long long)rid,
                     (unsigned)m.hdr.flags,
                     (unsigned long long)m.hdr.request_id,
                     (unsigned)m.body.error.code);
        rc = raw_recv(&r, &m, WAIT_MS);
        if (rc != 0)
            fail_msg("%s: want the close, got %d", bad[i].what, rc);
        raw_close(&r);

        /* The good client: every request answered, then one more write. */
        uint64_t end = proc_now_ms() + WAIT_MS;
        int done = 0;
        while (done < N && proc_now_ms() < end) {
            inbox_client_poll(c, 50);
            done = 0;
            for (int k = 0; k < N; k++)
                done += fw[k].done;
        }
        assert_int_equal(done, N);
        for (int k = 0; k < N; k++) {
            assert_int_equal(fw[k].status, 0);
            assert_int_equal(fw[k].seq, 1);
            assert_string_equal(fw[k].payload, "before");
        }
        assert_int_equal(enqueue_ok(c, "olga", NULL, "during", 6, NULL), 2 + i);
    }
    /* None of the malformed enqueues was stored. */
    struct inbox_client_fetch_result *r = fetch_ok(c, "olga", 0, 0, 0);
    assert_int_equal(r->count, 1 + nbad);
    for (size_t i = 0; i < r->count; i++)
        assert_memory_not_equal(r->messages[i].msg_id, id, INBOX_MSG_ID_BYTES);
    inbox_fetch_result_free(r);
    client_free(w, c);
    w->passed = true;
}

/* ---- durability: kill -9 under load -------------------------------------- */

#define K9_THREADS 4
#define K9_INBOXES 8
/* Calls in flight per thread: deep pipelines make load, shallow ones get
 * their acknowledgements back within a millisecond or two of the server's
 * write, so an acknowledgement given before the write was durable is
 * caught even when the window of un-synced writes is short. */
static const size_t k9_depth[K9_THREADS] = {16, 8, 2, 1};
#define K9_OPS_MAX 50000   /* per thread per round */
#define K9_ACKED_MIN 300u  /* acknowledged before the kill, at least */
#define K9_LOAD_MS_MIN 800 /* load runs at least this long before the kill */
#define K9_ROUNDS 3
#define K9_TIMEOUT_MS 20000u
#define K9_DRAIN_MS 500u /* after the kill, to read answers already sent */

enum op_state { OP_UNSENT = 0, OP_INFLIGHT, OP_ACKED, OP_FAILED };

struct k9_thread;

struct k9_op {
    struct k9_thread *t;
    uint8_t inbox;
    uint8_t state;
    int status;
    uint64_t seq;       /* OP_ACKED: the answered seq */
    uint64_t found_seq; /* where the verification found it, 0: absent */
    uint32_t found;     /* times found */
};

struct k9_thread {
    pthread_t th;
    uint32_t id; /* unique over rounds: round * K9_THREADS + index */
    struct inboxd_proc *p;
    struct k9_op *ops;
    size_t ops_count;
    size_t depth; /* calls in flight at most */
    size_t inflight;
    uint64_t rng;
    int setup_rc;
    atomic_bool *stop;
    atomic_size_t acked;
};

static const char *k9_inbox(uint32_t i)
{
    static const char *names[K9_INBOXES] = {"k9-a", "k9-b", "k9-c", "k9-d",
                                            "k9-e", "k9-f", "k9-g", "k9-h"};
    return names[i];
}

static void k9_id(uint8_t id[INBOX_MSG_ID_BYTES], uint32_t thread, uint32_t n)
{
    memset(id, 0x5A, INBOX_MSG_ID_BYTES);
    id[0] = 0x99;
    memcpy(id + 1, &thread, sizeof thread);
    memcpy(id + 5, &n, sizeof n);
}

static bool k9_id_parse(const uint8_t id[INBOX_MSG_ID_BYTES], uint32_t *thread,
                        uint32_t *n)
{
    if (id[0] != 0x99)
        return false;
    memcpy(thread, id + 1, sizeof *thread);
    memcpy(n, id + 5, sizeof *n);
    for (size_t i = 9; i < INBOX_MSG_ID_BYTES; i++)
        if (id[i] != 0x5A)
            return false;
    return true;
}

/* The payload of (thread, n): 8..1031 bytes derived from both. */
static size_t k9_payload(uint8_t *buf, uint32_t thread, uint32_t n)
{
    size_t len = 8 + (size_t)((n * 7919u + thread * 104729u) % 1024u);
    fill(buf, len, thread * 1000003u + n);
    return len;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* Runs on the op's thread, inside inbox_client_poll or _free. */
static void k9_done(void *arg, int status, uint64_t seq, bool dedup,
                    const uint8_t *msg_id)
{
    (void)dedup;
    (void)msg_id;
    struct k9_op *op = arg;
    op->status = status;
    op->state = status == 0 ? OP_ACKED : OP_FAILED;
    op->seq = status == 0 ? seq : 0;
    op->t->inflight--;
    if (status == 0)
        atomic_fetch_add(&op->t->acked, 1);
}

static void *k9_main(void *arg)
{
    struct k9_thread *t = arg;
    struct inbox_client *c = proc_client(t->p, NULL, NULL, NULL, NULL, NULL);
    if (c == NULL) {
        t->setup_rc = -1;
        return NULL;
    }
    uint8_t payload[1100], id[INBOX_MSG_ID_BYTES];
    while (!atomic_load(t->stop)) {
        while (t->inflight < t->depth && t->ops_count < K9_OPS_MAX) {
            uint32_t n = (uint32_t)t->ops_count;
            struct k9_op *op = &t->ops[n];
            op->t = t;
            op->inbox = (uint8_t)(rng_next(&t->rng) % K9_INBOXES);
            k9_id(id, t->id, n);
            size_t len = k9_payload(payload, t->id, n);
            const char *ib = k9_inbox(op->inbox);
            op->state = OP_INFLIGHT;
            int rc =
                inbox_client_submit_enqueue(c, ib, strlen(ib), id, 0, payload,
                                            len, K9_TIMEOUT_MS, op, k9_done);
            if (rc != 0) {
                op->state = OP_UNSENT;
                break;
            }
            t->ops_count++;
            t->inflight++;
        }
        inbox_client_poll(c, 10);
    }
    /* The server is dead. Read the answers it sent before it died (they
     * may still sit in our socket buffer): every one of them is an
     * acknowledgement the durability check must hold the server to. Then
     * whatever is still in flight completes with SHUTDOWN: its outcome is
     * unknown. */
    uint64_t end = proc_now_ms() + K9_DRAIN_MS;
    while (t->inflight > 0 && proc_now_ms() < end)
        inbox_client_poll(c, 10);
    inbox_client_free(c);
    return NULL;
}

/* What a verification fetch found in one inbox: the msg ids by seq. */
struct k9_inbox_state {
    uint64_t last_seq;
    uint64_t count;
    uint8_t (*ids)[INBOX_MSG_ID_BYTES]; /* [seq - 1] */
};

struct k9 {
    struct k9_thread threads[K9_ROUNDS * K9_THREADS];
    size_t threads_count;
    struct k9_inbox_state inboxes[K9_INBOXES];
    struct k9_inbox_state before[K9_INBOXES]; /* before the graceful stop */
};

/* Every thread is joined when this runs (k9_round joins before it can
 * fail). NULL is a no-op. */
static void k9_free(struct k9 *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < K9_INBOXES; i++) {
        free(k->inboxes[i].ids);
        free(k->before[i].ids);
    }
    for (size_t i = 0; i < k->threads_count; i++)
        free(k->threads[i].ops);
    free(k);
}

static struct k9_op *k9_lookup(struct k9 *k, const uint8_t *msg_id)
{
    uint32_t thread = 0, n = 0;
    if (!k9_id_parse(msg_id, &thread, &n) || thread >= k->threads_count)
        return NULL;
    struct k9_thread *t = &k->threads[thread];
    return n < t->ops_count ? &t->ops[n] : NULL;
}

/* Reads every inbox whole and checks it against what the threads saw:
 * seqs gapless from 1, no msg id twice, each message one that was sent
 * to this inbox with its payload, every acknowledged one at its seq. */
static void k9_verify(struct k9 *k, struct inbox_client *c)
{
    for (size_t t = 0; t < k->threads_count; t++)
        for (size_t i = 0; i < k->threads[t].ops_count; i++) {
            k->threads[t].ops[i].found = 0;
            k->threads[t].ops[i].found_seq = 0;
        }
    uint8_t payload[1100];
    for (uint32_t ib = 0; ib < K9_INBOXES; ib++) {
        struct k9_inbox_state *s = &k->inboxes[ib];
        const char *name = k9_inbox(ib);
        uint64_t after = 0;
        s->count = 0;
        for (;;) {
            struct inbox_client_fetch_result *r =
                fetch_ok(c, name, after, INBOX_FETCH_MESSAGES_MAX, 0);
            assert_int_equal(r->acked_seq, 0);
            s->last_seq = r->last_seq;
            s->ids = realloc(s->ids, (r->last_seq + 1) * INBOX_MSG_ID_BYTES);
            assert_non_null(s->ids);
            for (size_t i = 0; i < r->count; i++) {
                const struct inbox_client_message *m = &r->messages[i];
                if (m->seq != after + 1)
                    fail_msg("%s: seq %llu after %llu: a gap", name,
                             (unsigned long long)m->seq,
                             (unsigned long long)after);
                after = m->seq;
                struct k9_op *op = k9_lookup(k, m->msg_id);
                if (op == NULL)
                    fail_msg("%s seq %llu: a msg id nobody sent", name,
                             (unsigned long long)m->seq);
                uint32_t th = 0, n = 0;
                k9_id_parse(m->msg_id, &th, &n);
                if (op->inbox != ib)
                    fail_msg("%s seq %llu: message of inbox %s", name,
                             (unsigned long long)m->seq, k9_inbox(op->inbox));
                if (op->state == OP_UNSENT)
                    fail_msg("%s seq %llu: never submitted", name,
                             (unsigned long long)m->seq);
                size_t len = k9_payload(payload, th, n);
                if (m->payload_len != len ||
                    memcmp(m->payload, payload, len) != 0)
                    fail_msg("%s seq %llu: payload differs", name,
                             (unsigned long long)m->seq);
                op->found++;
                op->found_seq = m->seq;
                if (op->found > 1)
                    fail_msg("%s seq %llu: msg id (t%u, %u) stored twice", name,
                             (unsigned long long)m->seq, th, n);
                memcpy(s->ids[m->seq - 1], m->msg_id, INBOX_MSG_ID_BYTES);
                s->count++;
            }
            bool more = r->count > 0 && after < r->last_seq;
            inbox_fetch_result_free(r);
            if (!more)
                break;
        }
        if (s->count != s->last_seq)
            fail_msg("%s: %llu messages, last seq %llu", name,
                     (unsigned long long)s->count,
                     (unsigned long long)s->last_seq);
    }
    size_t acked = 0, unknown = 0, unknown_found = 0;
    for (size_t t = 0; t < k->threads_count; t++) {
        for (size_t i = 0; i < k->threads[t].ops_count; i++) {
            struct k9_op *op = &k->threads[t].ops[i];
            if (op->state == OP_ACKED) {
                acked++;
                if (op->found != 1 || op->found_seq != op->seq)
                    fail_msg("acknowledged enqueue (t%zu, %zu) to %s at seq "
                             "%llu: found %u times (at %llu)",
                             t, i, k9_inbox(op->inbox),
                             (unsigned long long)op->seq, op->found,
                             (unsigned long long)op->found_seq);
            } else {
                unknown++;
                unknown_found += op->found;
            }
        }
    }
    print_message("    verified: %zu acknowledged present once at their "
                  "seqs; %zu unknown outcomes, %zu of them stored\n",
                  acked, unknown, unknown_found);
}

/* Sends every unknown-outcome enqueue again with its msg id: one that was
 * stored must dedup to where it is, one that was not is appended; and a
 * sample of acknowledged ones must dedup to their seqs. After this every
 * op of the round is acknowledged. */
static void k9_resend(struct k9 *k, struct inbox_client *c, size_t first)
{
    uint8_t payload[1100], id[INBOX_MSG_ID_BYTES];
    for (size_t t = first; t < k->threads_count; t++) {
        struct k9_thread *th = &k->threads[t];
        for (size_t i = 0; i < th->ops_count; i++) {
            struct k9_op *op = &th->ops[i];
            bool sample = op->state == OP_ACKED && i % 64 == 0;
            if (op->state == OP_ACKED && !sample)
                continue;
            k9_id(id, th->id, (uint32_t)i);
            size_t len = k9_payload(payload, th->id, (uint32_t)i);
            bool dedup = false;
            uint64_t seq =
                enqueue_ok(c, k9_inbox(op->inbox), id, payload, len, &dedup);
            struct k9_inbox_state *s = &k->inboxes[op->inbox];
            if (op->found) {
                if (!dedup || seq != op->found_seq)
                    fail_msg("resent (t%zu, %zu): dedup %d seq %llu, but it "
                             "is stored at %llu",
                             t, i, dedup, (unsigned long long)seq,
                             (unsigned long long)op->found_seq);
            } else {
                if (dedup || seq != s->last_seq + 1)
                    fail_msg("resent (t%zu, %zu): dedup %d seq %llu, want a "
                             "new seq %llu",
                             t, i, dedup, (unsigned long long)seq,
                             (unsigned long long)(s->last_seq + 1));
                s->last_seq = seq;
            }
            op->state = OP_ACKED;
            op->seq = seq;
        }
    }
}

/* One round: load from K9_THREADS clients, SIGKILL mid-load, restart on
 * the same data directory, verify, resend the unknown ones. */
static void k9_round(struct world *w, struct k9 *k, uint64_t *rng)
{
    atomic_bool stop = false;
    size_t first = k->threads_count;
    for (size_t i = 0; i < K9_THREADS; i++) {
        struct k9_thread *t = &k->threads[k->threads_count];
        memset(t, 0, sizeof *t);
        t->id = (uint32_t)k->threads_count;
        t->depth = k9_depth[i];
        t->p = &w->p;
        t->ops = calloc(K9_OPS_MAX, sizeof *t->ops);
        assert_non_null(t->ops);
        t->rng = rng_next(rng) | 1u;
        t->stop = &stop;
        atomic_init(&t->acked, 0);
        k->threads_count++;
    }
    size_t started = first;
    while (started < k->threads_count &&
           pthread_create(&k->threads[started].th, NULL, k9_main,
                          &k->threads[started]) == 0)
        started++;
    if (started < k->threads_count) { /* stop the others before failing */
        atomic_store(&stop, true);
        for (size_t i = first; i < started; i++)
            pthread_join(k->threads[i].th, NULL);
        fail_msg("pthread_create failed");
    }
    /* Load until enough is acknowledged, then a little more at random. */
    uint64_t t0 = proc_now_ms(), end = t0 + 60000;
    size_t acked = 0;
    while (proc_now_ms() < end) {
        acked = 0;
        for (size_t i = first; i < k->threads_count; i++)
            acked += atomic_load(&k->threads[i].acked);
        if (acked >= K9_ACKED_MIN && proc_now_ms() - t0 >= K9_LOAD_MS_MIN)
            break;
        proc_sleep_ms(10);
    }
    proc_sleep_ms((unsigned)(rng_next(rng) % 300));
    proc_kill9(&w->p);
    atomic_store(&stop, true);
    for (size_t i = first; i < k->threads_count; i++)
        pthread_join(k->threads[i].th, NULL);
    size_t sent = 0;
    acked = 0;
    for (size_t i = first; i < k->threads_count; i++) {
        assert_int_equal(k->threads[i].setup_rc, 0);
        sent += k->threads[i].ops_count;
        for (size_t j = 0; j < k->threads[i].ops_count; j++)
            acked += k->threads[i].ops[j].state == OP_ACKED;
    }
    print_message("    killed -9 after %llu ms: %zu enqueues sent, %zu "
                  "acknowledged\n",
                  (unsigned long long)(proc_now_ms() - t0), sent, acked);
    if (acked < K9_ACKED_MIN)
        fail_msg("only %zu enqueues acknowledged before the kill", acked);

    if (proc_start(&w->p) != 0)
        fail_msg("inboxd did not restart after kill -9");
    struct inbox_client *c = client_admin(w);
    k9_verify(k, c);
    k9_resend(k, c, first);
    k9_verify(k, c); /* and the resends landed where they should */
    client_free(w, c);
}

static void test_kill9_durability(void **state)
{
    struct world *w = *state;
    /* Checkpoints and small WAL segments during the load, so a crash lands
     * between checkpoints and recovery replays the WAL over a store that
     * already holds part of it. */
    const char *args[] = {"--store-checkpoint-interval",
                          "150ms",
                          "--wal-segment-bytes",
                          "1MiB",
                          "--node-log-level",
                          "warn"};
    start(w, args, 6);
    uint64_t seed = (uint64_t)proc_now_ms() ^ (uint64_t)getpid() << 32;
    const char *env = getenv("INBOX_TEST_SEED");
    if (env != NULL)
        seed = strtoull(env, NULL, 0);
    print_message("    INBOX_TEST_SEED=%llu\n", (unsigned long long)seed);
    uint64_t rng = seed | 1u;
    struct k9 *k = calloc(1, sizeof *k);
    assert_non_null(k);
    w->k9 = k;
    for (int round = 0; round < K9_ROUNDS; round++)
        k9_round(w, k, &rng);

    /* Graceful restart: SIGTERM exits 0 and everything is still there. */
    for (uint32_t i = 0; i < K9_INBOXES; i++) {
        k->before[i].last_seq = k->inboxes[i].last_seq;
        k->before[i].ids =
            malloc((k->inboxes[i].last_seq + 1) * INBOX_MSG_ID_BYTES);
        assert_non_null(k->before[i].ids);
        memcpy(k->before[i].ids, k->inboxes[i].ids,
               k->inboxes[i].last_seq * INBOX_MSG_ID_BYTES);
    }
    int code = proc_stop(&w->p, STOP_MS);
    assert_int_equal(code, 0);
    if (proc_start(&w->p) != 0)
        fail_msg("inboxd did not restart after SIGTERM");
    struct inbox_client *c = client_admin(w);
    k9_verify(k, c);
    for (uint32_t i = 0; i < K9_INBOXES; i++) {
        assert_int_equal(k->inboxes[i].last_seq, k->before[i].last_seq);
        assert_memory_equal(k->inboxes[i].ids, k->before[i].ids,
                            k->before[i].last_seq * INBOX_MSG_ID_BYTES);
    }
    /* And it keeps going: the next seq follows the last. */
    assert_int_equal(enqueue_ok(c, k9_inbox(0), NULL, "next", 4, NULL),
                     k->inboxes[0].last_seq + 1);
    client_free(w, c);
    assert_int_equal(proc_stop(&w->p, STOP_MS), 0);
    w->passed = true;
}

/* ---- main ------------------------------------------------------------------
 */

int main(int argc, char **argv)
{
    const char *bin = argc > 1 ? argv[1] : getenv("INBOXD_BIN");
    if (bin == NULL || access(bin, X_OK) != 0) {
        fprintf(stderr, "usage: %s PATH/TO/inboxd (or set INBOXD_BIN)\n",
                argv[0]);
        return 2;
    }
    proc_set_binary(bin);
    const char *filter = getenv("INBOX_TEST_FILTER"); /* e.g. "*kill9*" */
    if (filter != NULL)
        cmocka_set_test_filter(filter);
#define T(f) cmocka_unit_test_setup_teardown(f, world_setup, world_teardown)
    const struct CMUnitTest tests[] = {
        T(test_enqueue_dedup),
        T(test_enqueue_many),
        T(test_fetch_bounds),
        T(test_ack),
        T(test_seen),
        T(test_watch_notify),
        T(test_long_poll),
        T(test_route_status),
        T(test_errors_arguments),
        T(test_errors_inbox_full),
        T(test_errors_unsupported),
        T(test_auth_plaintext),
        T(test_auth_other_ca),
        T(test_auth_roles),
        T(test_malformed),
        T(test_kill9_durability),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
