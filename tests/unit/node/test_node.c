/*
 * test_node.c — server/node: shards as single-voter Raft groups over the
 * WAL and the store. Round trips across shards, gapless seqs under
 * concurrent submitters, dedup, ack bounds, restart after a graceful close,
 * crash (no checkpoint) and replay, WAL release by checkpoints, identity
 * checks, an injected WAL failure (tests/lib's fault vfs), and three
 * nodes in one process replicating, failing over and catching up (also
 * after a follower lost entries it had acknowledged).
 *
 * Scratch directories are made in the working directory (the build tree).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faultvfs.h"
#include "inbox/error.h"
#include "log.h"
#include "members.h"
#include "node.h"
#include "node_meta.h"
#include "wire.h"

/* ---- fixtures ----------------------------------------------------------- */

#define OUT_MSGS_MAX 256u
#define OUT_PAYLOAD_MAX 64u

/* A deep copy of one completion, filled on the node thread. */
struct outcome {
    int rc;
    bool stale;
    uint64_t seq;
    bool deduped;
    uint64_t leader;
    uint32_t shard;
    size_t count;
    uint64_t seqs[OUT_MSGS_MAX];
    uint64_t ts[OUT_MSGS_MAX];
    uint32_t lens[OUT_MSGS_MAX];
    char payloads[OUT_MSGS_MAX][OUT_PAYLOAD_MAX];
    uint32_t targets_count;
    struct store_target_result targets[16];
    size_t seen_count;
    uint64_t seen[16];
    int seen_rc[16];
    struct store_inbox_info info;
};

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct outcome out;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_destroy(struct waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void copy_result(struct outcome *o, const struct node_result *r)
{
    memset(o, 0, sizeof(*o));
    o->rc = r->rc;
    o->stale = r->stale;
    o->seq = r->seq;
    o->deduped = r->deduped;
    o->leader = r->leader;
    o->shard = r->shard;
    o->count = r->messages_count;
    for (size_t i = 0; i < r->messages_count && i < OUT_MSGS_MAX; i++) {
        o->seqs[i] = r->messages[i].seq;
        o->ts[i] = r->messages[i].enqueue_ts_ms;
        uint32_t len = r->messages[i].payload_len;
        o->lens[i] = len;
        memcpy(o->payloads[i], r->messages[i].payload,
               len < OUT_PAYLOAD_MAX ? len : OUT_PAYLOAD_MAX);
    }
    o->targets_count = r->targets_count;
    for (uint32_t i = 0; i < r->targets_count && i < 16; i++)
        o->targets[i] = r->targets[i];
    o->seen_count = r->seen_count;
    for (size_t i = 0; i < r->seen_count && i < 16; i++) {
        o->seen[i] = r->seen_ms[i];
        o->seen_rc[i] = r->seen_rc ? r->seen_rc[i] : 0;
    }
    o->info = r->info;
}

static void waiter_done(void *arg, const struct node_result *r)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    copy_result(&w->out, r);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait for the completion of a request that was accepted (rc 0), or
 * report the immediate refusal as the outcome. */
static struct outcome *waiter_wait(struct waiter *w, int submit_rc)
{
    if (submit_rc != 0) {
        w->out.rc = submit_rc;
        return &w->out;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    w->done = false;
    pthread_mutex_unlock(&w->mu);
    return &w->out;
}

struct fixture {
    char dir[256];
    struct node_options o;
    struct node *n;
    struct faultvfs *fv;
    struct waiter w;
    pthread_mutex_t notify_mu;
    uint64_t notify_calls;
    uint64_t notify_last_seq;
    char errmsg[256];
};

static void on_enqueue(void *arg, uint32_t shard, const uint8_t *inbox,
                       size_t inbox_len, uint64_t last_seq)
{
    struct fixture *f = arg;
    (void)shard;
    (void)inbox;
    (void)inbox_len;
    pthread_mutex_lock(&f->notify_mu);
    f->notify_calls++;
    f->notify_last_seq = last_seq;
    pthread_mutex_unlock(&f->notify_mu);
}

/* rm -r of a scratch directory (two levels deep at most here). */
static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        (void)unlink(dir);
        return;
    }
    struct dirent *e;
    char path[600];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && (errno == EISDIR || errno == EPERM))
            rm_rf(path);
    }
    closedir(d);
    (void)rmdir(dir);
}

static struct fixture *fixture_new(uint32_t shards)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "node-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    waiter_init(&f->w);
    pthread_mutex_init(&f->notify_mu, NULL);
    node_options_init(&f->o);
    f->o.data_dir = f->dir;
    f->o.node_id = 7;
    f->o.shard_count = shards;
    f->o.tick_interval_ms = 20;
    f->o.checkpoint_interval_ms = 3600u * 1000u; /* only when asked */
    f->o.store_map_bytes = 256u * INBOX_MIB;
    f->o.enqueue_applied = on_enqueue;
    f->o.enqueue_applied_arg = f;
    f->o.errmsg = f->errmsg;
    f->o.errmsg_bytes = sizeof(f->errmsg);
    return f;
}

static void fixture_open(struct fixture *f)
{
    int rc = node_open(&f->o, &f->n);
    if (rc != 0)
        fprintf(stderr, "node_open: %s: %s\n", inbox_err_name(rc), f->errmsg);
    assert_int_equal(rc, 0);
}

static void fixture_free(struct fixture *f)
{
    if (f->n)
        node_close(f->n);
    if (f->fv)
        faultvfs_free(f->fv);
    rm_rf(f->dir);
    waiter_destroy(&f->w);
    pthread_mutex_destroy(&f->notify_mu);
    free(f);
}

static void msg_id_of(uint8_t id[INBOX_MSG_ID_BYTES], uint64_t a, uint64_t b)
{
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

static const uint8_t *key(const char *s)
{
    return (const uint8_t *)s;
}

/* Synchronous helpers. */
static struct outcome *enqueue(struct fixture *f, const char *inbox,
                               uint64_t id, const char *payload)
{
    uint8_t mid[INBOX_MSG_ID_BYTES];
    msg_id_of(mid, id, 0x1d);
    int rc = node_enqueue(f->n, key(inbox), strlen(inbox), mid, 0, payload,
                          strlen(payload), waiter_done, &f->w);
    return waiter_wait(&f->w, rc);
}

static struct outcome *fetch(struct fixture *f, const char *inbox,
                             uint64_t after)
{
    int rc = node_fetch(f->n, key(inbox), strlen(inbox), after, OUT_MSGS_MAX,
                        INBOX_FETCH_BYTES_MAX, 0, waiter_done, &f->w);
    return waiter_wait(&f->w, rc);
}

static struct outcome *ack(struct fixture *f, const char *inbox, uint64_t upto)
{
    int rc =
        node_ack(f->n, key(inbox), strlen(inbox), upto, waiter_done, &f->w);
    return waiter_wait(&f->w, rc);
}

/* A counter's value by metric name. */
static uint64_t counter_of(struct node *n, const char *name)
{
    const struct metrics_desc *d;
    size_t count;
    node_metrics(n, &d, &count);
    for (size_t i = 0; i < count; i++)
        if (strcmp(d[i].name, name) == 0 && d[i].type == METRICS_COUNTER)
            return atomic_load(
                &((const struct metrics_counter *)d[i].value)->value);
    fail_msg("no counter %s", name);
    return 0;
}

static uint32_t count_segments(const char *dir)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/wal", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    uint32_t k = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "wal-", 4) == 0 && strstr(e->d_name, ".seg"))
            k++;
    closedir(d);
    return k;
}

/* ---- tests -------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    fixture_open(f);
    const char *inboxes[] = {"alice", "bob", "carol", "dave", "erin"};
    bool shard_seen[8] = {false};
    uint32_t shards_used = 0;
    for (size_t i = 0; i < 5; i++) {
        uint32_t sh = node_shard_of(f->n, key(inboxes[i]), strlen(inboxes[i]));
        if (!shard_seen[sh])
            shards_used++;
        shard_seen[sh] = true;
        for (uint64_t k = 1; k <= 3; k++) {
            char payload[32];
            snprintf(payload, sizeof(payload), "%s-%llu", inboxes[i],
                     (unsigned long long)k);
            struct outcome *o = enqueue(f, inboxes[i], i * 100 + k, payload);
            assert_int_equal(o->rc, 0);
            assert_int_equal(o->seq, k);
            assert_false(o->deduped);
            assert_int_equal(o->shard, sh);
        }
    }
    assert_true(shards_used >= 3);
    /* docs/protocol.md's routing vectors, with 64 shards: alice 48. */
    for (size_t i = 0; i < 5; i++) {
        struct outcome *o = fetch(f, inboxes[i], 0);
        assert_int_equal(o->rc, 0);
        assert_int_equal(o->count, 3);
        for (size_t k = 0; k < 3; k++) {
            char want[32];
            snprintf(want, sizeof(want), "%s-%zu", inboxes[i], k + 1);
            assert_int_equal(o->seqs[k], k + 1);
            assert_int_equal(o->lens[k], strlen(want));
            assert_memory_equal(o->payloads[k], want, strlen(want));
        }
    }
    /* A fetch also reports the inbox's acked and last seq. */
    struct outcome *sf = fetch(f, "alice", 1);
    assert_int_equal(sf->count, 2);
    assert_int_equal(sf->info.next_seq, 4);
    assert_int_equal(sf->info.acked_seq, 0);
    /* stamped with the leader's wall clock, never going back */
    struct outcome *stamped = fetch(f, "erin", 0);
    time_t now = time(NULL);
    for (size_t k = 0; k < stamped->count; k++) {
        assert_true(stamped->ts[k] / 1000 + 60 >= (uint64_t)now);
        assert_true(stamped->ts[k] / 1000 <= (uint64_t)now + 60);
        if (k > 0)
            assert_true(stamped->ts[k] >= stamped->ts[k - 1]);
    }
    /* fetch after a seq, ack, fetch again */
    struct outcome *o = fetch(f, "alice", 1);
    assert_int_equal(o->count, 2);
    assert_int_equal(o->seqs[0], 2);
    o = ack(f, "alice", 2);
    assert_int_equal(o->rc, 0);
    o = fetch(f, "alice", 0);
    assert_int_equal(o->count, 1);
    assert_int_equal(o->seqs[0], 3);
    /* inbox info */
    int rc = node_inbox_info(f->n, key("alice"), 5, waiter_done, &f->w);
    o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->info.next_seq, 4);
    assert_int_equal(o->info.acked_seq, 2);
    assert_int_equal(o->info.pending_count, 1);
    /* seen set / get across shards */
    rc = node_seen_set(f->n, key("bob"), 3, 1700000000123ull, waiter_done,
                       &f->w);
    assert_int_equal(waiter_wait(&f->w, rc)->rc, 0);
    rc = node_seen_set(f->n, key("carol"), 5, 1700000000456ull, waiter_done,
                       &f->w);
    assert_int_equal(waiter_wait(&f->w, rc)->rc, 0);
    struct node_inbox q[3] = {
        {key("carol"), 5}, {key("nobody"), 6}, {key("bob"), 3}};
    rc = node_seen_get(f->n, q, 3, 0, waiter_done, &f->w);
    o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->seen_count, 3);
    assert_int_equal(o->seen[0], 1700000000456ull);
    assert_int_equal(o->seen[1], 0);
    assert_int_equal(o->seen[2], 1700000000123ull);
    /* enqueue_many across shards, results in request order */
    uint8_t ids[4][INBOX_MSG_ID_BYTES];
    struct command_target t[4];
    for (int i = 0; i < 4; i++) {
        msg_id_of(ids[i], 9000 + (uint64_t)i, 1);
        t[i].inbox = key(inboxes[i + 1]);
        t[i].inbox_len = (uint16_t)strlen(inboxes[i + 1]);
        t[i].msg_id = ids[i];
    }
    rc = node_enqueue_many(f->n, t, 4, 0, "fan", 3, waiter_done, &f->w);
    o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->targets_count, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o->targets[i].rc, 0);
        assert_int_equal(o->targets[i].seq, 4);
    }
    /* the notify hook saw every applied enqueue */
    pthread_mutex_lock(&f->notify_mu);
    assert_int_equal(f->notify_calls, 15 + 4);
    pthread_mutex_unlock(&f->notify_mu);
    /* every shard has elected itself */
    for (uint32_t s = 0; s < 8; s++) {
        struct node_shard_status st;
        assert_int_equal(node_status(f->n, s, &st), 0);
        assert_int_equal(st.role, 3);
        assert_int_equal(st.leader, 7);
        assert_true(st.term >= 1);
        assert_true(st.applied <= st.commit);
    }
    /* malformed requests are refused at once */
    assert_int_equal(
        node_enqueue(f->n, key(""), 0, ids[0], 0, "x", 1, waiter_done, &f->w),
        INBOX_EKEY_INVALID);
    assert_int_equal(
        node_fetch(f->n, key("a"), 1, 0, 0, 0, 0, waiter_done, &f->w),
        INBOX_EINVAL);
    /* metrics render */
    const struct metrics_desc *d;
    size_t dc;
    node_metrics(f->n, &d, &dc);
    static char buf[64 * 1024];
    size_t need = metrics_render(buf, sizeof(buf), d, dc);
    assert_true(need < sizeof(buf));
    assert_non_null(strstr(buf, "inbox_node_proposals_total"));
    assert_non_null(strstr(buf, "inbox_node_raft_role{shard=\"3\"} 3"));
    fixture_free(f);
}

static void test_dedup_and_ack_beyond(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    struct outcome *o = enqueue(f, "dave", 1, "one");
    assert_int_equal(o->seq, 1);
    o = enqueue(f, "dave", 2, "two");
    assert_int_equal(o->seq, 2);
    o = enqueue(f, "dave", 1, "one again");
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->seq, 1);
    assert_true(o->deduped);
    o = fetch(f, "dave", 0);
    assert_int_equal(o->count, 2);
    o = ack(f, "dave", 3);
    assert_int_equal(o->rc, INBOX_EACK_BEYOND_LAST);
    o = ack(f, "dave", 2);
    assert_int_equal(o->rc, 0);
    o = fetch(f, "dave", 0);
    assert_int_equal(o->count, 0);
    fixture_free(f);
}

/* ---- concurrency -------------------------------------------------------- */

#define SUBMITTERS 4u
#define PER_SUBMITTER 300u
#define CONC_INBOXES 3u

struct conc {
    struct fixture *f;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t outstanding;
    uint32_t errors;
    uint64_t seq[SUBMITTERS][PER_SUBMITTER];
};

struct conc_req {
    struct conc *c;
    uint32_t thread;
    uint32_t i;
};

static void conc_done(void *arg, const struct node_result *r)
{
    struct conc_req *cr = arg;
    struct conc *c = cr->c;
    pthread_mutex_lock(&c->mu);
    if (r->rc != 0 || r->deduped)
        c->errors++;
    c->seq[cr->thread][cr->i] = r->seq;
    c->outstanding--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static const char *conc_inbox(uint32_t i)
{
    static const char *names[CONC_INBOXES] = {"g-one", "g-two", "g-three"};
    return names[i % CONC_INBOXES];
}

struct submitter {
    struct conc *c;
    uint32_t thread;
    struct conc_req reqs[PER_SUBMITTER];
};

static void *submitter_main(void *arg)
{
    struct submitter *s = arg;
    struct conc *c = s->c;
    for (uint32_t i = 0; i < PER_SUBMITTER; i++) {
        uint8_t mid[INBOX_MSG_ID_BYTES];
        msg_id_of(mid, s->thread, i);
        s->reqs[i] = (struct conc_req){c, s->thread, i};
        const char *inbox = conc_inbox(i);
        pthread_mutex_lock(&c->mu);
        c->outstanding++;
        pthread_mutex_unlock(&c->mu);
        int rc;
        while ((rc = node_enqueue(c->f->n, key(inbox), strlen(inbox), mid, 0,
                                  &i, sizeof(i), conc_done, &s->reqs[i])) ==
               INBOX_EBUSY)
            usleep(1000);
        if (rc != 0) {
            pthread_mutex_lock(&c->mu);
            c->outstanding--;
            c->errors++;
            pthread_mutex_unlock(&c->mu);
        }
    }
    return NULL;
}

static void test_gapless_concurrent(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    struct conc *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->f = f;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    struct submitter *subs = calloc(SUBMITTERS, sizeof(*subs));
    assert_non_null(subs);
    pthread_t th[SUBMITTERS];
    for (uint32_t t = 0; t < SUBMITTERS; t++) {
        subs[t].c = c;
        subs[t].thread = t;
        assert_int_equal(pthread_create(&th[t], NULL, submitter_main, &subs[t]),
                         0);
    }
    for (uint32_t t = 0; t < SUBMITTERS; t++)
        pthread_join(th[t], NULL);
    pthread_mutex_lock(&c->mu);
    while (c->outstanding > 0)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    assert_int_equal(c->errors, 0);
    /* group commit: proposals share appends (and so fsyncs) */
    uint64_t proposals = counter_of(f->n, "inbox_node_proposals_total");
    uint64_t appends = counter_of(f->n, "inbox_node_wal_appends_total");
    assert_int_equal(proposals, SUBMITTERS * PER_SUBMITTER);
    assert_true(appends < proposals);
    /* per inbox: the seqs handed out are exactly 1..N, each once */
    for (uint32_t b = 0; b < CONC_INBOXES; b++) {
        uint32_t total = 0;
        static bool seen[SUBMITTERS * PER_SUBMITTER + 1];
        memset(seen, 0, sizeof(seen));
        for (uint32_t t = 0; t < SUBMITTERS; t++)
            for (uint32_t i = b; i < PER_SUBMITTER; i += CONC_INBOXES) {
                uint64_t s = c->seq[t][i];
                assert_true(s >= 1 && s <= SUBMITTERS * PER_SUBMITTER);
                assert_false(seen[s]);
                seen[s] = true;
                total++;
            }
        for (uint32_t s = 1; s <= total; s++)
            assert_true(seen[s]);
        /* and a fetch shows them gapless, in seq order */
        uint64_t after = 0;
        uint32_t fetched = 0;
        for (;;) {
            struct outcome *o = fetch(f, conc_inbox(b), after);
            assert_int_equal(o->rc, 0);
            if (o->count == 0)
                break;
            for (size_t k = 0; k < o->count; k++)
                assert_int_equal(o->seqs[k], after + 1 + k);
            after += o->count;
            fetched += (uint32_t)o->count;
        }
        assert_int_equal(fetched, total);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(subs);
    free(c);
    fixture_free(f);
}

/* Many reads in one cycle: more than raft hands back per ready. */
#define READS_BURST 3000u

struct burst {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done;
    uint32_t bad;
};

static void burst_done(void *arg, const struct node_result *r)
{
    struct burst *b = arg;
    pthread_mutex_lock(&b->mu);
    if (r->rc != 0 || r->messages_count != 1 || r->messages[0].seq != 1)
        b->bad++;
    b->done++;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void test_read_burst(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(2);
    fixture_open(f);
    assert_int_equal(enqueue(f, "burst", 1, "b")->rc, 0);
    struct burst b = {.done = 0};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    for (uint32_t i = 0; i < READS_BURST; i++)
        assert_int_equal(
            node_fetch(f->n, key("burst"), 5, 0, 10, 1024, 0, burst_done, &b),
            0);
    pthread_mutex_lock(&b.mu);
    while (b.done < READS_BURST)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    assert_int_equal(b.bad, 0);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    fixture_free(f);
}

/* ---- restart, crash ----------------------------------------------------- */

static void test_restart_graceful(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    for (uint64_t k = 1; k <= 20; k++) {
        char p[16];
        snprintf(p, sizeof(p), "m%llu", (unsigned long long)k);
        assert_int_equal(enqueue(f, k % 2 ? "odd" : "even", k, p)->rc, 0);
    }
    assert_int_equal(ack(f, "odd", 3)->rc, 0);
    int rc = node_seen_set(f->n, key("odd"), 3, 42, waiter_done, &f->w);
    assert_int_equal(waiter_wait(&f->w, rc)->rc, 0);
    node_close(f->n);
    f->n = NULL;
    fixture_open(f);
    struct outcome *o = fetch(f, "odd", 0);
    assert_int_equal(o->count, 7);
    assert_int_equal(o->seqs[0], 4);
    o = fetch(f, "even", 0);
    assert_int_equal(o->count, 10);
    assert_memory_equal(o->payloads[9], "m20", 3);
    struct node_inbox q = {key("odd"), 3};
    rc = node_seen_get(f->n, &q, 1, 0, waiter_done, &f->w);
    assert_int_equal(waiter_wait(&f->w, rc)->seen[0], 42);
    /* seqs continue, the dedup window survived */
    o = enqueue(f, "even", 2, "m2");
    assert_true(o->deduped);
    assert_int_equal(o->seq, 1);
    o = enqueue(f, "even", 100, "new");
    assert_int_equal(o->seq, 11);
    /* a graceful close checkpointed: the store holds everything */
    for (uint32_t s = 0; s < 4; s++) {
        struct node_shard_status st;
        assert_int_equal(node_status(f->n, s, &st), 0);
        assert_int_equal(st.role, 3);
    }
    fixture_free(f);
}

static void test_crash_replay(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    enum { N = 60 };
    uint64_t seqs[N];
    for (uint64_t k = 0; k < N; k++) {
        char p[16];
        snprintf(p, sizeof(p), "c%llu", (unsigned long long)k);
        struct outcome *o = enqueue(f, k % 3 ? "crash-a" : "crash-b", k, p);
        assert_int_equal(o->rc, 0);
        seqs[k] = o->seq;
        if (k == 20) /* part of it is in the store's last checkpoint */
            assert_int_equal(node_checkpoint(f->n), 0);
    }
    assert_int_equal(ack(f, "crash-b", 2)->rc, 0);
    node_abort_for_test(f->n); /* no sync of the store, no checkpoint */
    f->n = NULL;
    fixture_open(f);
    /* every acknowledged enqueue is there exactly once, with its seq */
    struct outcome *o = fetch(f, "crash-a", 0);
    assert_int_equal(o->rc, 0);
    uint32_t want_a = 0;
    for (uint64_t k = 0; k < N; k++) {
        if (k % 3 == 0)
            continue;
        char p[16];
        snprintf(p, sizeof(p), "c%llu", (unsigned long long)k);
        assert_int_equal(o->seqs[want_a], seqs[k]);
        assert_memory_equal(o->payloads[want_a], p, strlen(p));
        want_a++;
    }
    assert_int_equal(o->count, want_a);
    o = fetch(f, "crash-b", 0);
    assert_int_equal(o->count, N / 3 - 2); /* the ack survived too */
    assert_int_equal(o->seqs[0], 3);
    /* replay kept dedup state: a retry gets its first seq */
    o = enqueue(f, "crash-a", 1, "c1");
    assert_true(o->deduped);
    assert_int_equal(o->seq, seqs[1]);
    o = enqueue(f, "crash-a", 1000, "after");
    assert_int_equal(o->seq, want_a + 1);
    /* crash again right away: replay is idempotent over replay */
    node_abort_for_test(f->n);
    f->n = NULL;
    fixture_open(f);
    o = fetch(f, "crash-a", 0);
    assert_int_equal(o->count, want_a + 1);
    fixture_free(f);
}

/* Each shard of the stopped node's store, opened read-only as
 * `inboxctl store verify` does: every raft index reaches store_apply once
 * (or comes by snapshot), so applied_commands must equal applied_index.
 * The last shard's info and state hash are left in *last and *hash. */
static void expect_applied_once(struct fixture *f, uint32_t shards,
                                struct store_shard_info *last, uint64_t *hash)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/store", f->dir);
    struct store_options so;
    store_options_init(&so);
    so.path = path;
    so.map_size = f->o.store_map_bytes;
    so.read_only = 1;
    struct store *st;
    assert_int_equal(store_open(&so, &st), 0);
    for (uint32_t s = 0; s < shards; s++) {
        struct store_shard_info si;
        assert_int_equal(store_applied(st, s, &si), 0);
        assert_int_equal(store_state_hash(st, s, hash), 0);
        if (si.applied_commands != si.applied_index)
            fprintf(stderr,
                    "node %llu shard %u: applied_commands %llu != "
                    "applied_index %llu: %lld entries applied twice\n",
                    (unsigned long long)f->o.node_id, s,
                    (unsigned long long)si.applied_commands,
                    (unsigned long long)si.applied_index,
                    (long long)(si.applied_commands - si.applied_index));
        assert_true(si.applied_index > 0);
        assert_true(si.applied_commands == si.applied_index);
        *last = si;
    }
    store_close(st);
}

/* ---- checkpoints release the WAL ---------------------------------------- */

static void test_checkpoint_releases_segments(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(2);
    f->o.wal_segment_bytes = INBOX_WAL_SEGMENT_BYTES_MIN;
    fixture_open(f);
    static char big[16 * 1024];
    memset(big, 'x', sizeof(big) - 1);
    uint8_t mid[INBOX_MSG_ID_BYTES];
    /* ~4 MiB of entries: several 1 MiB segments */
    for (uint64_t k = 0; k < 256; k++) {
        msg_id_of(mid, k, 77);
        const char *inbox = k % 2 ? "seg-a" : "seg-b";
        int rc = node_enqueue(f->n, key(inbox), strlen(inbox), mid, 0, big,
                              sizeof(big), waiter_done, &f->w);
        assert_int_equal(waiter_wait(&f->w, rc)->rc, 0);
        if (k % 2)
            assert_int_equal(ack(f, inbox, k / 2 + 1)->rc, 0);
    }
    uint32_t before = count_segments(f->dir);
    assert_true(before >= 4);
    assert_int_equal(node_checkpoint(f->n), 0);
    uint32_t after = count_segments(f->dir);
    assert_true(after < before);
    assert_true(after <= 2);
    struct node_shard_status st;
    assert_int_equal(node_status(f->n, 0, &st), 0);
    assert_true(st.released > 0);
    /* and the node still works, and restarts from the released log */
    assert_int_equal(enqueue(f, "seg-a", 5000, "tail")->rc, 0);
    node_abort_for_test(f->n);
    f->n = NULL;
    fixture_open(f);
    int rc = node_inbox_info(f->n, key("seg-b"), 5, waiter_done, &f->w);
    struct outcome *o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->info.pending_count, 128);
    o = fetch(f, "seg-b", 0); /* capped by INBOX_FETCH_BYTES_MAX */
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->count, INBOX_FETCH_BYTES_MAX / sizeof(big));
    o = fetch(f, "seg-a", 0);
    assert_int_equal(o->count, 1);
    assert_memory_equal(o->payloads[0], "tail", 4);
    fixture_free(f);
}

/* ---- identity ----------------------------------------------------------- */

static void test_shard_count_mismatch(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    assert_int_equal(enqueue(f, "x", 1, "y")->rc, 0);
    node_close(f->n);
    f->n = NULL;
    f->o.shard_count = 8;
    struct node *n2 = NULL;
    assert_int_equal(node_open(&f->o, &n2), INBOX_EINVAL);
    assert_null(n2);
    assert_non_null(strstr(f->errmsg, "shard_count 4"));
    f->o.shard_count = 4;
    f->o.node_id = 8;
    assert_int_equal(node_open(&f->o, &n2), INBOX_EINVAL);
    assert_non_null(strstr(f->errmsg, "node 7"));
    f->o.node_id = 7;
    fixture_open(f);
    assert_int_equal(fetch(f, "x", 0)->count, 1);
    /* the identity file as documented */
    struct node_meta m;
    assert_int_equal(node_meta_read(f->dir, &m), 0);
    assert_int_equal(m.node_id, 7);
    assert_int_equal(m.shard_count, 4);
    assert_int_equal(m.voters_count, 1);
    assert_int_equal(m.voters[0], 7);
    fixture_free(f);
}

/* ---- storage failure ---------------------------------------------------- */

static void test_wal_failure_sticky(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    f->fv = faultvfs_new(1234);
    assert_non_null(f->fv);
    f->o.wal_vfs = faultvfs_vfs(f->fv);
    fixture_open(f);
    for (uint64_t k = 1; k <= 5; k++)
        assert_int_equal(enqueue(f, "fail-a", k, "ok")->rc, 0);
    assert_int_equal(node_failed(f->n), 0);
    faultvfs_fail_sync(f->fv, 1);
    struct outcome *o = enqueue(f, "fail-a", 6, "lost?");
    assert_int_equal(o->rc, INBOX_EFAILED);
    assert_true(node_failed(f->n) != 0);
    /* sticky: later writes fail, on any shard */
    o = enqueue(f, "fail-b", 7, "no");
    assert_int_equal(o->rc, INBOX_EFAILED);
    o = ack(f, "fail-a", 1);
    assert_int_equal(o->rc, INBOX_EFAILED);
    /* reads keep working and show every acknowledged write */
    o = fetch(f, "fail-a", 0);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->count, 5);
    int rc = node_inbox_info(f->n, key("fail-a"), 6, waiter_done, &f->w);
    o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->info.next_seq, 6);
    node_close(f->n); /* graceful close of a failed node must not hang */
    f->n = NULL;
    fixture_free(f);
}

/* The store's map fills up: the store fails (sticky), writes answer
 * EFAILED; reopened with a larger map, the WAL replays every acknowledged
 * enqueue the failed store had lost. */
static void test_store_full_then_recover(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(2);
    f->o.store_map_bytes = 2u * INBOX_MIB;
    fixture_open(f);
    static char big[8 * 1024];
    memset(big, 'y', sizeof(big));
    uint8_t mid[INBOX_MSG_ID_BYTES];
    uint64_t acked = 0;
    int rc = 0;
    for (uint64_t k = 0; k < 1000; k++) {
        msg_id_of(mid, k, 5);
        rc = node_enqueue(f->n, key("full"), 4, mid, 0, big, sizeof(big),
                          waiter_done, &f->w);
        rc = waiter_wait(&f->w, rc)->rc;
        if (rc != 0)
            break;
        acked++;
        assert_int_equal(f->w.out.seq, acked);
    }
    assert_int_equal(rc, INBOX_EFAILED);
    assert_true(acked > 10);
    assert_int_equal(node_failed(f->n), INBOX_EFULL);
    assert_int_equal(enqueue(f, "other", 1, "x")->rc, INBOX_EFAILED);
    /* the failed store answers reads with EFAILED too */
    assert_int_equal(fetch(f, "full", 0)->rc, INBOX_EFAILED);
    node_close(f->n);
    f->n = NULL;
    f->o.store_map_bytes = 64u * INBOX_MIB;
    fixture_open(f);
    rc = node_inbox_info(f->n, key("full"), 4, waiter_done, &f->w);
    struct outcome *o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    /* every acknowledged enqueue is back; the one answered EFAILED may or
     * may not be (its outcome was unknown) */
    assert_true(o->info.next_seq - 1 == acked ||
                o->info.next_seq - 1 == acked + 1);
    msg_id_of(mid, 0, 5); /* a retry of the first enqueue */
    rc = node_enqueue(f->n, key("full"), 4, mid, 0, big, sizeof(big),
                      waiter_done, &f->w);
    o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_true(o->deduped);
    assert_int_equal(o->seq, 1);
    fixture_free(f);
}

/* Power loss under load: the WAL's file layer crashes (every unsynced
 * write is lost, torn sectors may land) while enqueues are in flight.
 * Every enqueue that was acknowledged must come back with its seq. */
#define POWER_REQS 400u

struct power {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done;
    uint32_t acked;
    int rc[POWER_REQS];
    uint64_t seq[POWER_REQS];
    uint32_t idx[POWER_REQS];
};

struct power_req {
    struct power *pw;
    uint32_t i;
};

static void power_done(void *arg, const struct node_result *r)
{
    struct power_req *pr = arg;
    struct power *pw = pr->pw;
    pthread_mutex_lock(&pw->mu);
    pw->rc[pr->i] = r->rc;
    pw->seq[pr->i] = r->seq;
    if (r->rc == 0)
        pw->acked++;
    pw->done++;
    pthread_cond_broadcast(&pw->cv);
    pthread_mutex_unlock(&pw->mu);
}

static void test_power_loss_under_load(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    f->fv = faultvfs_new(99);
    assert_non_null(f->fv);
    faultvfs_sync_delay_us(f->fv, 5000); /* slow disk: batches pile up */
    f->o.wal_vfs = faultvfs_vfs(f->fv);
    fixture_open(f);
    struct power *pw = calloc(1, sizeof(*pw));
    struct power_req *prs = calloc(POWER_REQS, sizeof(*prs));
    assert_non_null(pw);
    assert_non_null(prs);
    pthread_mutex_init(&pw->mu, NULL);
    pthread_cond_init(&pw->cv, NULL);
    uint32_t submitted = 0;
    for (uint32_t i = 0; i < POWER_REQS; i++) {
        uint8_t mid[INBOX_MSG_ID_BYTES];
        msg_id_of(mid, i, 3);
        prs[i] = (struct power_req){pw, i};
        const char *inbox = i % 2 ? "pow-a" : "pow-b";
        int rc = node_enqueue(f->n, key(inbox), 5, mid, 0, &i, sizeof(i),
                              power_done, &prs[i]);
        if (rc != 0) {
            pw->rc[i] = rc;
            continue;
        }
        submitted++;
        if (i == POWER_REQS / 2) { /* crash with half of them in flight */
            pthread_mutex_lock(&pw->mu);
            while (pw->acked < 50)
                pthread_cond_wait(&pw->cv, &pw->mu);
            pthread_mutex_unlock(&pw->mu);
            faultvfs_crash(f->fv);
        }
    }
    pthread_mutex_lock(&pw->mu);
    while (pw->done < submitted)
        pthread_cond_wait(&pw->cv, &pw->mu);
    pthread_mutex_unlock(&pw->mu);
    assert_true(pw->acked >= 50);
    assert_true(node_failed(f->n) != 0);
    node_abort_for_test(f->n);
    f->n = NULL;
    faultvfs_restart(f->fv, true);
    fixture_open(f);
    for (int b = 0; b < 2; b++) {
        const char *inbox = b ? "pow-a" : "pow-b";
        uint64_t after = 0;
        uint32_t found = 0;
        for (;;) {
            struct outcome *o = fetch(f, inbox, after);
            assert_int_equal(o->rc, 0);
            if (o->count == 0)
                break;
            for (size_t k = 0; k < o->count; k++) {
                assert_int_equal(o->seqs[k], after + 1 + k); /* gapless */
                uint32_t i;
                assert_int_equal(o->lens[k], sizeof(i));
                memcpy(&i, o->payloads[k], sizeof(i));
                assert_true(i < POWER_REQS && (int)(i % 2) == b);
                /* acknowledged ones kept their seq */
                if (pw->rc[i] == 0)
                    assert_int_equal(pw->seq[i], o->seqs[k]);
                pw->idx[i] = 1;
            }
            after += o->count;
            found += (uint32_t)o->count;
        }
        (void)found;
    }
    for (uint32_t i = 0; i < POWER_REQS; i++)
        if (pw->rc[i] == 0)
            assert_int_equal(pw->idx[i], 1); /* nothing acked was lost */
    pthread_mutex_destroy(&pw->mu);
    pthread_cond_destroy(&pw->cv);
    free(prs);
    free(pw);
    fixture_free(f);
}

/* node_close with requests in flight: each completes exactly once, and
 * every one answered 0 is there after reopening. */
/* The commit index alone is written without waiting for a sync (etcd's
 * MustSync rule), so after power loss the WAL's durable commit may lag the
 * store's checkpointed applied index. Here the checkpoint's WAL release
 * fails its sync and the WAL loses everything unsynced: the node must still
 * reopen (whatever the store applied was committed) with every answered
 * enqueue in place. */
static void test_power_loss_after_checkpoint(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(1);
    f->fv = faultvfs_new(4242);
    assert_non_null(f->fv);
    f->o.wal_vfs = faultvfs_vfs(f->fv);
    fixture_open(f);
    for (uint64_t k = 1; k <= 5; k++)
        assert_int_equal(enqueue(f, "ckpt-a", k, "kept")->rc, 0);
    faultvfs_fail_sync(f->fv, 1); /* the checkpoint's release sync */
    (void)node_checkpoint(f->n);
    node_abort_for_test(f->n);
    f->n = NULL;
    faultvfs_restart(f->fv, false); /* power loss: unsynced writes gone */
    fixture_open(f);
    struct outcome *o = fetch(f, "ckpt-a", 0);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->count, 5);
    assert_int_equal(enqueue(f, "ckpt-a", 6, "next")->seq, 6);
    fixture_free(f);
}

static void test_close_with_inflight(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    fixture_open(f);
    struct power *pw = calloc(1, sizeof(*pw));
    struct power_req *prs = calloc(POWER_REQS, sizeof(*prs));
    assert_non_null(pw);
    assert_non_null(prs);
    pthread_mutex_init(&pw->mu, NULL);
    pthread_cond_init(&pw->cv, NULL);
    uint32_t submitted = 0;
    for (uint32_t i = 0; i < POWER_REQS; i++) {
        uint8_t mid[INBOX_MSG_ID_BYTES];
        msg_id_of(mid, i, 4);
        prs[i] = (struct power_req){pw, i};
        int rc = node_enqueue(f->n, key("closing"), 7, mid, 0, &i, sizeof(i),
                              power_done, &prs[i]);
        assert_int_equal(rc, 0);
        submitted++;
    }
    node_close(f->n); /* returns only when every request was answered */
    f->n = NULL;
    assert_int_equal(pw->done, submitted);
    uint32_t ok = 0;
    for (uint32_t i = 0; i < POWER_REQS; i++) {
        assert_true(pw->rc[i] == 0 || pw->rc[i] == INBOX_ESHUTDOWN);
        ok += pw->rc[i] == 0;
    }
    fixture_open(f);
    int rc = node_inbox_info(f->n, key("closing"), 7, waiter_done, &f->w);
    struct outcome *o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_true(o->info.next_seq - 1 >= ok);
    /* the acknowledged ones kept their seqs */
    uint64_t after = 0;
    uint32_t seen = 0;
    for (;;) {
        o = fetch(f, "closing", after);
        if (o->count == 0)
            break;
        for (size_t k = 0; k < o->count; k++) {
            uint32_t i;
            memcpy(&i, o->payloads[k], sizeof(i));
            if (pw->rc[i] == 0) {
                assert_int_equal(pw->seq[i], o->seqs[k]);
                seen++;
            }
        }
        after += o->count;
    }
    assert_int_equal(seen, ok);
    pthread_mutex_destroy(&pw->mu);
    pthread_cond_destroy(&pw->cv);
    free(prs);
    free(pw);
    fixture_free(f);
}

/* docs/protocol.md's routing vectors. */
/* ---- three nodes in one process ------------------------------------------
 * The nodes' send hooks deliver straight into each other's node_receive,
 * through a table that can kill a node or cut links, so replication,
 * failover and catch-up run without sockets. */

#define CL_NODES 3u /* the members the cluster is created with */
#define CL_SLOTS 5u /* node ids 1..CL_SLOTS; the others join later */

struct cluster;

struct cl_link {
    struct cluster *cl;
    uint64_t from;
};

struct cluster {
    pthread_mutex_t mu;
    struct node *live[CL_SLOTS + 1u]; /* by node id; NULL = down */
    bool cut[CL_SLOTS + 1u][CL_SLOTS + 1u];
    struct fixture *f[CL_SLOTS + 1u]; /* NULL: no such node (yet) */
    struct cl_link links[CL_SLOTS + 1u];
    /* Left out of cl_leader / cl_wait_applied (a removed node that keeps
     * running: it never learns who leads). */
    bool ignore[CL_SLOTS + 1u];
    uint32_t shards;
    uint64_t retain;
    uint32_t chunk_bytes;
    /* Snapshot chunks delivered to each node, and those at offset 0. Once
     * snap_cut_after chunks reached a node (0: never), the next batch
     * carrying one is dropped and the node's links are cut: a transfer
     * broken midway, deterministically. */
    uint64_t snap_chunks[CL_SLOTS + 1u];
    uint64_t snap_starts[CL_SLOTS + 1u];
    uint64_t snap_cut_after;
    bool snap_cut_done;
    struct raft_entry ents[INBOX_RAFT_MSG_ENTRIES_MAX]; /* decoding, mu */
};

static void cl_cut_links(struct cluster *cl, uint64_t id, bool cut)
{
    for (uint64_t o = 1; o <= CL_SLOTS; o++)
        if (o != id)
            cl->cut[id][o] = cl->cut[o][id] = cut;
}

/* Count the snapshot chunks of a batch for `to` (mu held); false when the
 * batch is to be dropped and the links cut. */
static bool cl_watch_snapshots(struct cluster *cl, uint64_t to,
                               const uint8_t *bytes, size_t len)
{
    uint64_t chunks = 0, starts = 0;
    for (size_t off = 0; off < len;) {
        struct raft_msg m;
        size_t used = 0;
        if (raft_wire_decode(bytes + off, len - off, &m, cl->ents,
                             INBOX_RAFT_MSG_ENTRIES_MAX, &used) != 0)
            break;
        off += used;
        if (m.type == RAFT_MSG_SNAPSHOT) {
            chunks++;
            starts += m.index == 0;
        }
    }
    if (chunks && cl->snap_cut_after && !cl->snap_cut_done &&
        cl->snap_chunks[to] >= cl->snap_cut_after) {
        cl->snap_cut_done = true;
        cl_cut_links(cl, to, true);
        return false;
    }
    cl->snap_chunks[to] += chunks;
    cl->snap_starts[to] += starts;
    return true;
}

static void cl_send(void *arg, uint64_t to, const uint8_t *bytes, size_t len)
{
    struct cl_link *l = arg;
    struct cluster *cl = l->cl;
    pthread_mutex_lock(&cl->mu);
    if (to >= 1 && to <= CL_SLOTS && cl->live[to] && !cl->cut[l->from][to] &&
        cl_watch_snapshots(cl, to, bytes, len))
        (void)node_receive(cl->live[to], bytes, len);
    pthread_mutex_unlock(&cl->mu);
}

static void cl_open(struct cluster *cl, uint64_t id)
{
    fixture_open(cl->f[id]);
    pthread_mutex_lock(&cl->mu);
    cl->live[id] = cl->f[id]->n;
    pthread_mutex_unlock(&cl->mu);
}

/* Crash node id: off the table first, so nobody delivers into it. */
static void cl_crash(struct cluster *cl, uint64_t id)
{
    pthread_mutex_lock(&cl->mu);
    cl->live[id] = NULL;
    pthread_mutex_unlock(&cl->mu);
    node_abort_for_test(cl->f[id]->n);
    cl->f[id]->n = NULL;
}

static void cl_isolate(struct cluster *cl, uint64_t id, bool cut)
{
    pthread_mutex_lock(&cl->mu);
    cl_cut_links(cl, id, cut);
    pthread_mutex_unlock(&cl->mu);
}

/* A cluster whose leaders keep at most retain entries for a lagging
 * follower and send snapshots in chunks of chunk_bytes (0: defaults). */
/* Lease reads for the clusters made while set (test_lease_reads). */
static bool cl_lease_reads;

static struct cluster *cl_new_opts(uint32_t shards, uint64_t retain,
                                   uint32_t chunk_bytes)
{
    struct cluster *cl = calloc(1, sizeof(*cl));
    assert_non_null(cl);
    pthread_mutex_init(&cl->mu, NULL);
    cl->shards = shards;
    cl->retain = retain;
    cl->chunk_bytes = chunk_bytes;
    for (uint64_t id = 1; id <= CL_NODES; id++) {
        struct fixture *f = fixture_new(shards);
        f->o.node_id = id;
        f->o.members_count = CL_NODES;
        for (uint32_t i = 0; i < CL_NODES; i++)
            f->o.members[i] = i + 1u;
        cl->links[id] = (struct cl_link){cl, id};
        f->o.send = cl_send;
        f->o.send_arg = &cl->links[id];
        f->o.retain_entries_max = retain;
        f->o.snapshot_chunk_bytes = chunk_bytes;
        f->o.lease_reads = cl_lease_reads;
        cl->f[id] = f;
    }
    for (uint64_t id = 1; id <= CL_NODES; id++)
        cl_open(cl, id);
    return cl;
}

/* A new node joining the running cluster (join: it starts from the
 * cluster's bootstrap members, without itself), not yet opened. */
static void cl_add_slot(struct cluster *cl, uint64_t id)
{
    assert_true(id > CL_NODES && id <= CL_SLOTS && !cl->f[id]);
    struct fixture *f = fixture_new(cl->shards);
    f->o.node_id = id;
    f->o.join = true;
    f->o.members_count = CL_NODES;
    for (uint32_t i = 0; i < CL_NODES; i++)
        f->o.members[i] = i + 1u;
    cl->links[id] = (struct cl_link){cl, id};
    f->o.send = cl_send;
    f->o.send_arg = &cl->links[id];
    f->o.retain_entries_max = cl->retain;
    f->o.snapshot_chunk_bytes = cl->chunk_bytes;
    cl->f[id] = f;
}

static struct cluster *cl_new(uint32_t shards)
{
    return cl_new_opts(shards, 0, 0);
}

static void cl_free(struct cluster *cl)
{
    for (uint64_t id = 1; id <= CL_SLOTS; id++) {
        if (!cl->f[id])
            continue;
        pthread_mutex_lock(&cl->mu);
        cl->live[id] = NULL;
        pthread_mutex_unlock(&cl->mu);
        fixture_free(cl->f[id]);
    }
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The node leading `shard` among the live ones, once exactly one live node
 * says it leads and every other live node agrees (bounded wait). */
static uint64_t cl_leader(struct cluster *cl, uint32_t shard)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint64_t leader = 0, agree = 0, live = 0;
        for (uint64_t id = 1; id <= CL_SLOTS; id++) {
            struct node *n = cl->f[id] ? cl->f[id]->n : NULL;
            if (!n || cl->ignore[id])
                continue;
            live++;
            struct node_shard_status st;
            assert_int_equal(node_status(n, shard, &st), 0);
            if (st.role == 3 /* RAFT_LEADER */)
                leader = leader ? UINT64_MAX : id;
            if (st.leader != 0)
                agree += st.leader;
        }
        if (leader != 0 && leader != UINT64_MAX && agree == leader * live)
            return leader;
        sleep_ms(10);
    }
    fail_msg("no leader for shard %u", shard);
    return 0;
}

/* Wait until every live node applied at least `index` of shard. */
static void cl_wait_applied(struct cluster *cl, uint32_t shard, uint64_t index)
{
    for (int tries = 0; tries < 1000; tries++) {
        bool all = true;
        for (uint64_t id = 1; id <= CL_SLOTS; id++) {
            struct node_shard_status st;
            if (cl->f[id] && !cl->ignore[id] && cl->f[id]->n &&
                (node_status(cl->f[id]->n, shard, &st) != 0 ||
                 st.applied < index))
                all = false;
        }
        if (all)
            return;
        sleep_ms(10);
    }
    fail_msg("shard %u never applied %llu everywhere", shard,
             (unsigned long long)index);
}

static void expect_inbox_flags(struct fixture *f, const char *inbox,
                               uint64_t count, uint32_t flags)
{
    int rc = node_fetch(f->n, key(inbox), strlen(inbox), 0, OUT_MSGS_MAX,
                        INBOX_FETCH_BYTES_MAX, flags, waiter_done, &f->w);
    struct outcome *o = waiter_wait(&f->w, rc);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->count, count);
    for (uint64_t i = 0; i < count; i++) {
        char p[24];
        snprintf(p, sizeof(p), "r%llu", (unsigned long long)i + 1u);
        assert_int_equal(o->seqs[i], i + 1u);
        assert_memory_equal(o->payloads[i], p, strlen(p));
    }
}

static void expect_inbox(struct fixture *f, const char *inbox, uint64_t count)
{
    expect_inbox_flags(f, inbox, count, 0);
}

/* A node's own applied state, read without the leader; a follower may
 * apply the last entries a moment after the leader answered, so wait for
 * them (bounded) before checking. */
static void expect_inbox_local(struct fixture *f, const char *inbox,
                               uint64_t count)
{
    for (int tries = 0; tries < 500; tries++) {
        int rc = node_fetch(f->n, key(inbox), strlen(inbox), 0, OUT_MSGS_MAX,
                            INBOX_FETCH_BYTES_MAX, NODE_READ_STALE_OK,
                            waiter_done, &f->w);
        struct outcome *o = waiter_wait(&f->w, rc);
        if (o->rc == 0 && o->count >= count)
            break;
        sleep_ms(10);
    }
    expect_inbox_flags(f, inbox, count, NODE_READ_STALE_OK);
}

static void enqueue_n(struct fixture *f, const char *inbox, uint64_t from,
                      uint64_t to)
{
    for (uint64_t k = from; k <= to; k++) {
        char p[24];
        snprintf(p, sizeof(p), "r%llu", (unsigned long long)k);
        struct outcome *o = enqueue(f, inbox, k, p);
        assert_int_equal(o->rc, 0);
        assert_int_equal(o->seq, k);
    }
}

static void test_three_nodes_replicate_and_fail_over(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(4);
    const char *inbox = "alice";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t l1 = cl_leader(cl, shard);

    /* A follower refuses writes and names the leader. */
    uint64_t other = l1 % CL_NODES + 1u;
    struct outcome *o = enqueue(cl->f[other], inbox, 99, "x");
    assert_int_equal(o->rc, INBOX_ENOT_LEADER);
    assert_int_equal(o->leader, l1);
    o = fetch(cl->f[other], inbox, 0);
    assert_int_equal(o->rc, INBOX_ENOT_LEADER);
    /* So does SEEN_GET, per inbox: a failed read is never a value (a
     * last-seen of 0 answered as success was found by jepsen/). */
    struct node_inbox q = {key(inbox), (uint16_t)strlen(inbox)};
    int src =
        node_seen_get(cl->f[other]->n, &q, 1, 0, waiter_done, &cl->f[other]->w);
    o = waiter_wait(&cl->f[other]->w, src);
    assert_int_equal(o->rc, INBOX_ENOT_LEADER);
    assert_int_equal(o->seen_count, 1);
    assert_int_equal(o->seen_rc[0], INBOX_ENOT_LEADER);

    enqueue_n(cl->f[l1], inbox, 1, 20);
    struct node_shard_status st;
    assert_int_equal(node_status(cl->f[l1]->n, shard, &st), 0);
    cl_wait_applied(cl, shard, st.commit);
    assert_true(counter_of(cl->f[l1]->n, "inbox_node_peer_msgs_out_total") > 0);

    /* The leader crashes: another takes over with every acknowledged
     * message, and writes go on. */
    cl_crash(cl, l1);
    uint64_t l2 = cl_leader(cl, shard);
    assert_true(l2 != l1);
    expect_inbox(cl->f[l2], inbox, 20);
    enqueue_n(cl->f[l2], inbox, 21, 30);

    /* The old leader comes back, catches up from the log, and once the
     * second leader crashes too it serves all 30 with the third node. */
    cl_open(cl, l1);
    assert_int_equal(node_status(cl->f[l2]->n, shard, &st), 0);
    cl_wait_applied(cl, shard, st.commit);
    cl_crash(cl, l2);
    uint64_t l3 = cl_leader(cl, shard);
    assert_true(l3 != l2);
    expect_inbox(cl->f[l3], inbox, 30);
    cl_open(cl, l2);
    cl_free(cl);
}

/* A leader that keeps log entries for a follower that is down (retain)
 * has committed entries in its WAL below its store's checkpoint; when it
 * crashes and restarts, raft hands them to the store again and the
 * store's replay guard must skip them: each index applied once, which
 * the store's applied_commands records. No client can see a second
 * apply (every command is idempotent under the msg-id dedup window), so
 * this is the check that fails under
 * -DINBOX_PLANT=DOUBLE_APPLY_AFTER_RESTART (jepsen/README.md). */
static void test_restart_replay_applies_once(void **state)
{
    (void)state;
    struct cluster *cl = cl_new_opts(1, 1000, 0);
    const char *inbox = "once";
    uint64_t l = cl_leader(cl, 0);
    uint64_t down = l % CL_NODES + 1u, other = down % CL_NODES + 1u;
    if (other == l)
        other = other % CL_NODES + 1u;
    enqueue_n(cl->f[l], inbox, 1, 5);
    cl_wait_applied(cl, 0, 6);
    cl_crash(cl, down); /* the leader retains entries from here for it */
    enqueue_n(cl->f[l], inbox, 6, 30);
    assert_int_equal(node_checkpoint(cl->f[l]->n), 0);
    enqueue_n(cl->f[l], inbox, 31, 40); /* applied, not checkpointed */
    struct node_shard_status st;
    assert_int_equal(node_status(cl->f[l]->n, 0, &st), 0);
    uint64_t applied = st.applied;
    assert_true(st.released < applied - 10u); /* the WAL kept them */
    cl_crash(cl, l);
    cl_open(cl, l); /* with `other`, a majority again */
    cl_wait_applied(cl, 0, applied);
    uint64_t l2 = cl_leader(cl, 0);
    expect_inbox(cl->f[l2], inbox, 40);
    /* Bring the third node back and let it catch up, then stop all three:
     * every store applied each index once, and stores at the same index
     * hold the same state (the count included). */
    cl_open(cl, down);
    enqueue_n(cl->f[l2], inbox, 41, 41);
    assert_int_equal(node_status(cl->f[l2]->n, 0, &st), 0);
    cl_wait_applied(cl, 0, st.applied);
    uint64_t hash[CL_NODES + 1u], index[CL_NODES + 1u];
    for (uint64_t id = 1; id <= CL_NODES; id++) {
        pthread_mutex_lock(&cl->mu);
        cl->live[id] = NULL;
        pthread_mutex_unlock(&cl->mu);
        node_close(cl->f[id]->n); /* graceful: checkpoints */
        cl->f[id]->n = NULL;
    }
    for (uint64_t id = 1; id <= CL_NODES; id++) {
        struct store_shard_info si;
        expect_applied_once(cl->f[id], 1, &si, &hash[id]);
        index[id] = si.applied_index;
    }
    for (uint64_t id = 2; id <= CL_NODES; id++)
        if (index[id] == index[1])
            assert_true(hash[id] == hash[1]);
    cl_free(cl);
}

static void test_isolated_leader_cannot_commit(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(2);
    const char *inbox = "bob";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t l1 = cl_leader(cl, shard);
    enqueue_n(cl->f[l1], inbox, 1, 3);

    /* Cut the leader off; a write it takes can never be acknowledged. */
    cl_isolate(cl, l1, true);
    struct waiter w;
    waiter_init(&w);
    uint8_t mid[INBOX_MSG_ID_BYTES];
    msg_id_of(mid, 1000, 0x1d);
    int rc = node_enqueue(cl->f[l1]->n, key(inbox), strlen(inbox), mid, 0,
                          "lost", 4, waiter_done, &w);
    /* The majority elects a new leader and goes on. */
    struct fixture *maj = NULL;
    uint64_t l2 = 0;
    for (int tries = 0; tries < 1000 && l2 == 0; tries++) {
        for (uint64_t id = 1; id <= CL_NODES; id++) {
            struct node_shard_status st;
            if (id != l1 && node_status(cl->f[id]->n, shard, &st) == 0 &&
                st.role == 3)
                l2 = id;
        }
        sleep_ms(10);
    }
    assert_true(l2 != 0 && l2 != l1);
    maj = cl->f[l2];
    enqueue_n(maj, inbox, 4, 6);
    /* Check-quorum: cut off from a quorum, the old leader steps down by
     * itself within an election timeout or two (it cannot know of l2). */
    bool stepped_down = false;
    for (int tries = 0; tries < 500 && !stepped_down; tries++) {
        struct node_shard_status st;
        assert_int_equal(node_status(cl->f[l1]->n, shard, &st), 0);
        stepped_down = st.role != 3;
        if (!stepped_down)
            sleep_ms(10);
    }
    assert_true(stepped_down);
    /* Heal: the old leader learns the new term; its write is dropped, not
     * acknowledged, and it never shows up. */
    cl_isolate(cl, l1, false);
    struct outcome *lost = waiter_wait(&w, rc);
    assert_true(lost->rc != 0);
    waiter_destroy(&w);
    assert_int_equal(cl_leader(cl, shard), l2);
    expect_inbox(maj, inbox, 6);
    cl_free(cl);
}

/* ---- snapshots between nodes -------------------------------------------- */

#define SNAP_MSGS 200u
#define SNAP_RETAIN 8u
#define SNAP_MSGS 200u
#define SNAP_RETAIN 8u

struct snap_case {
    struct cluster *cl;
    const char *inbox;
    uint32_t shard;
    uint64_t leader, down, other;
};

/* Files in DATA/snap of a node whose name starts with prefix. */
static uint32_t count_snap_files(struct fixture *f, const char *prefix)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/snap", f->dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    uint32_t k = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            k++;
    closedir(d);
    return k;
}

static void wait_counter(struct fixture *f, const char *name, uint64_t min)
{
    for (int tries = 0; tries < 1000; tries++) {
        if (counter_of(f->n, name) >= min)
            return;
        sleep_ms(10);
    }
    fail_msg("%s never reached %llu", name, (unsigned long long)min);
}

/* Little-endian integers of a WAL record header (docs/storage.md). */
static uint64_t le_at(const uint8_t *p, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = bytes; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* The newest segment of a node's WAL (DATA/wal/wal-<16 hex>.seg). */
static void newest_segment(struct fixture *f, char *path, size_t cap)
{
    char dir[300], best[64] = "";
    snprintf(dir, sizeof(dir), "%s/wal", f->dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "wal-", 4) == 0 && strstr(e->d_name, ".seg") &&
            len < sizeof(best) && strcmp(e->d_name, best) > 0)
            memcpy(best, e->d_name, len + 1);
    }
    closedir(d);
    assert_true(best[0] != '\0');
    snprintf(path, cap, "%s/%s", dir, best);
}

/* What a disk that lost synced writes leaves: in the newest segment of a
 * stopped node's WAL, the record of shard's ENTRY at `index` is cut
 * 24 bytes in (a torn header) and everything after it zeroed, as far as
 * records go (the rest is preallocated zeros already). Returns the bytes
 * zeroed; fails the test if that entry is not in the segment. */
static uint64_t wal_cut_at_entry(struct fixture *f, uint32_t shard,
                                 uint64_t index)
{
    char path[400];
    newest_segment(f, path, sizeof(path));
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    uint64_t off = 64, cut = 0; /* records start after the 64-byte header */
    uint8_t h[48];
    while (fseek(fp, (long)off, SEEK_SET) == 0 &&
           fread(h, 1, sizeof(h), fp) == sizeof(h) && h[47] == 0xA5) {
        if (cut == 0 && h[40] == 1 /* ENTRY */ && le_at(h + 4, 4) == shard &&
            le_at(h + 32, 8) == index)
            cut = off + 24u;
        off += (56u + le_at(h, 4) + 7u) / 8u * 8u;
    }
    assert_true(cut != 0 && off > cut);
    static const uint8_t zeros[4096];
    assert_int_equal(fseek(fp, (long)cut, SEEK_SET), 0);
    for (uint64_t left = off - cut; left > 0;) {
        size_t k = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
        assert_int_equal(fwrite(zeros, 1, k, fp), k);
        left -= k;
    }
    assert_int_equal(fclose(fp), 0);
    return off - cut;
}

#define REGR_METRIC "inbox_node_raft_follower_log_regressions_total"

/* Hand shard's leadership from `from` to `to` and wait until all agree. */
static void cl_move_leader(struct cluster *cl, uint32_t shard, uint64_t from,
                           uint64_t to)
{
    assert_int_equal(node_transfer_leader(cl->f[from]->n, shard, to), 0);
    for (int tries = 0; tries < 200; tries++) {
        if (cl_leader(cl, shard) == to)
            return;
        sleep_ms(10);
    }
    fail_msg("shard %u never moved to node %llu", shard,
             (unsigned long long)to);
}

/* A follower loses entries it had acknowledged (its WAL tail cut while it
 * was down). The leader finds out from its heartbeats (raft's "Lost
 * tail"), repairs it from the log, and says so in its metric. The writes
 * are made while the third node is down, so each one was committed on the
 * victim's acknowledgement: the cut entries were acknowledged. */
static void test_follower_lost_tail_counted(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(1);
    const char *inbox = "lost";
    uint64_t l = cl_leader(cl, 0);
    uint64_t victim = l % CL_NODES + 1u, other = 6u - l - victim;
    enqueue_n(cl->f[l], inbox, 1, 5);
    struct node_shard_status st;
    assert_int_equal(node_status(cl->f[l]->n, 0, &st), 0);
    cl_wait_applied(cl, 0, st.commit);

    cl_crash(cl, other);
    enqueue_n(cl->f[l], inbox, 6, 15);
    assert_int_equal(node_status(cl->f[l]->n, 0, &st), 0);
    uint64_t cut_index = st.commit; /* held and acknowledged by victim */
    enqueue_n(cl->f[l], inbox, 16, 30);
    assert_int_equal(node_status(cl->f[l]->n, 0, &st), 0);
    uint64_t acked = st.commit;
    assert_true(cut_index < acked);
    cl_open(cl, other);
    cl_wait_applied(cl, 0, acked);
    assert_int_equal(counter_of(cl->f[l]->n, REGR_METRIC), 0);

    /* The victim stops and comes back without the entries from
     * cut_index on; isolated first, to see that they are gone. */
    cl_crash(cl, victim);
    assert_true(wal_cut_at_entry(cl->f[victim], 0, cut_index) > 0);
    cl_isolate(cl, victim, true);
    cl_open(cl, victim);
    assert_int_equal(node_status(cl->f[victim]->n, 0, &st), 0);
    assert_int_equal(st.last_index, cut_index - 1u);
    cl_isolate(cl, victim, false);

    /* The leader counts the regression and brings the victim back. */
    wait_counter(cl->f[l], REGR_METRIC, 1);
    assert_int_equal(cl_leader(cl, 0), l);
    struct node_shard_status sl;
    assert_int_equal(node_status(cl->f[l]->n, 0, &sl), 0);
    cl_wait_applied(cl, 0, sl.applied);
    assert_int_equal(node_status(cl->f[victim]->n, 0, &st), 0);
    assert_int_equal(node_status(cl->f[l]->n, 0, &sl), 0);
    assert_int_equal(st.applied, sl.applied);
    expect_inbox_local(cl->f[victim], inbox, 30);

    /* Raft keeps the count across leaderships: leading again after
     * another node did must not count the old event twice. */
    uint64_t counted = counter_of(cl->f[l]->n, REGR_METRIC);
    cl_move_leader(cl, 0, l, other);
    enqueue_n(cl->f[other], inbox, 31, 31);
    /* Some ticks as a follower, so that a node that forgot the counts it
     * saw when it stopped leading would count the old event again. */
    sleep_ms(100);
    cl_move_leader(cl, 0, other, l);
    enqueue_n(cl->f[l], inbox, 32, 32);
    sleep_ms(200); /* ten ticks of leading: a bogus delta would show */
    assert_int_equal(counter_of(cl->f[l]->n, REGR_METRIC), counted);
    assert_int_equal(counter_of(cl->f[other]->n, REGR_METRIC), 0);
    cl_free(cl);
}

/* A follower of the inbox's shard goes down; the leader takes SNAP_MSGS
 * writes and the live nodes checkpoint, so the leader's WAL is released
 * far past the down node's log (retention SNAP_RETAIN entries). */
static void snap_setup(struct snap_case *c, const char *inbox,
                       uint32_t chunk_bytes)
{
    c->cl = cl_new_opts(2, SNAP_RETAIN, chunk_bytes);
    c->inbox = inbox;
    c->shard = node_shard_of(c->cl->f[1]->n, key(inbox), strlen(inbox));
    c->leader = cl_leader(c->cl, c->shard);
    c->down = c->leader % CL_NODES + 1u;
    c->other = 6u - c->leader - c->down;
    struct node_shard_status st;
    assert_int_equal(node_status(c->cl->f[c->down]->n, c->shard, &st), 0);
    uint64_t down_last = st.last_index;
    cl_crash(c->cl, c->down);
    enqueue_n(c->cl->f[c->leader], inbox, 1, SNAP_MSGS);
    assert_int_equal(node_checkpoint(c->cl->f[c->leader]->n), 0);
    assert_int_equal(node_checkpoint(c->cl->f[c->other]->n), 0);
    assert_int_equal(node_status(c->cl->f[c->leader]->n, c->shard, &st), 0);
    assert_true(st.released > down_last + SNAP_RETAIN);
}

static void snap_wait_caught_up(struct snap_case *c)
{
    struct node_shard_status st;
    assert_int_equal(node_status(c->cl->f[c->leader]->n, c->shard, &st), 0);
    cl_wait_applied(c->cl, c->shard, st.commit);
}

static void test_snapshot_catch_up(void **state)
{
    (void)state;
    struct snap_case c;
    /* Small chunks: the snapshot (~20 KiB) takes many of them. */
    snap_setup(&c, "carol", 2048);
    struct cluster *cl = c.cl;
    cl_open(cl, c.down);
    snap_wait_caught_up(&c);
    struct fixture *fl = cl->f[c.leader], *fd = cl->f[c.down];
    assert_int_equal(counter_of(fd->n, "inbox_node_snapshots_installed_total"),
                     1);
    assert_int_equal(counter_of(fl->n, "inbox_node_snapshots_made_total"), 1);
    assert_int_equal(counter_of(fl->n, "inbox_node_snapshots_sent_total"), 1);
    assert_true(counter_of(fl->n, "inbox_node_snapshot_chunks_sent_total") > 4);
    pthread_mutex_lock(&cl->mu);
    assert_true(cl->snap_chunks[c.down] > 4);
    assert_int_equal(cl->snap_starts[c.down], 1);
    pthread_mutex_unlock(&cl->mu);
    /* Its own store holds everything, and it goes on from the log. */
    expect_inbox_local(fd, c.inbox, SNAP_MSGS);
    enqueue_n(fl, c.inbox, SNAP_MSGS + 1u, SNAP_MSGS + 10u);
    snap_wait_caught_up(&c);
    expect_inbox_local(fd, c.inbox, SNAP_MSGS + 10u);
    assert_int_equal(count_snap_files(fd, "incoming-"), 0);
    /* Nobody needs the leader's snapshot file any more. */
    assert_int_equal(count_snap_files(fl, "shard-"), 1);
    assert_int_equal(node_checkpoint(fl->n), 0);
    assert_int_equal(count_snap_files(fl, "shard-"), 0);

    /* The other nodes fail one at a time; each time the snapshot-installed
     * node is half of the quorum, and the new leader serves everything. */
    cl_crash(cl, c.leader);
    uint64_t l2 = cl_leader(cl, c.shard);
    assert_true(l2 == c.down || l2 == c.other);
    expect_inbox(cl->f[l2], c.inbox, SNAP_MSGS + 10u);
    cl_open(cl, c.leader);
    struct node_shard_status st;
    assert_int_equal(node_status(cl->f[l2]->n, c.shard, &st), 0);
    cl_wait_applied(cl, c.shard, st.commit);
    cl_crash(cl, c.other);
    uint64_t l3 = cl_leader(cl, c.shard);
    assert_true(l3 == c.down || l3 == c.leader);
    expect_inbox(cl->f[l3], c.inbox, SNAP_MSGS + 10u);
    expect_inbox_local(fd, c.inbox, SNAP_MSGS + 10u);
    cl_open(cl, c.other);
    cl_free(cl);
}

static void test_snapshot_transfer_interrupted(void **state)
{
    (void)state;
    struct snap_case c;
    snap_setup(&c, "dave", 1024);
    struct cluster *cl = c.cl;
    pthread_mutex_lock(&cl->mu);
    cl->snap_cut_after = 3; /* the 4th chunk breaks the link */
    pthread_mutex_unlock(&cl->mu);
    cl_open(cl, c.down);
    bool cut = false;
    for (int tries = 0; tries < 1000 && !cut; tries++) {
        pthread_mutex_lock(&cl->mu);
        cut = cl->snap_cut_done;
        pthread_mutex_unlock(&cl->mu);
        if (!cut)
            sleep_ms(10);
    }
    assert_true(cut);
    /* Several heartbeats' worth of resends fall into the cut. */
    sleep_ms(300);
    struct fixture *fd = cl->f[c.down];
    assert_int_equal(counter_of(fd->n, "inbox_node_snapshots_installed_total"),
                     0);
    assert_int_equal(count_snap_files(fd, "incoming-"), 1);
    cl_isolate(cl, c.down, false);
    snap_wait_caught_up(&c);
    assert_int_equal(counter_of(fd->n, "inbox_node_snapshots_installed_total"),
                     1);
    /* Resumed at the follower's offset, not started over. */
    pthread_mutex_lock(&cl->mu);
    assert_int_equal(cl->snap_starts[c.down], 1);
    assert_true(cl->snap_chunks[c.down] > 3);
    pthread_mutex_unlock(&cl->mu);
    expect_inbox_local(fd, c.inbox, SNAP_MSGS);
    cl_free(cl);
}

static void test_snapshot_crash_after_install(void **state)
{
    (void)state;
    struct snap_case c;
    snap_setup(&c, "erin", 4096);
    struct cluster *cl = c.cl;
    cl_open(cl, c.down);
    wait_counter(cl->f[c.down], "inbox_node_snapshots_installed_total", 1);
    /* Crash at once: no checkpoint, the store's open transaction and any
     * unsynced WAL record are lost. The install itself must survive. */
    cl_crash(cl, c.down);
    cl_open(cl, c.down);
    snap_wait_caught_up(&c);
    struct fixture *fd = cl->f[c.down];
    expect_inbox_local(fd, c.inbox, SNAP_MSGS);
    /* Caught up from the log: the installed state was durable. */
    assert_int_equal(counter_of(fd->n, "inbox_node_snapshots_installed_total"),
                     0);
    enqueue_n(cl->f[c.leader], c.inbox, SNAP_MSGS + 1u, SNAP_MSGS + 5u);
    snap_wait_caught_up(&c);
    expect_inbox_local(fd, c.inbox, SNAP_MSGS + 5u);
    cl_free(cl);
}

/* A crash between an install's store checkpoint and its WAL reset leaves
 * the store ahead of the WAL's log of the shard; start-up must finish the
 * reset (raft_create would refuse applied > commit otherwise). Made here
 * by applying no-op entries past the WAL straight into the store. */
static void test_snapshot_interrupted_install_recovers(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(1);
    fixture_open(f);
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(enqueue(f, "frank", i, "x")->rc, 0);
    struct node_shard_status st;
    assert_int_equal(node_status(f->n, 0, &st), 0);
    uint64_t applied = st.applied, term = st.term;
    assert_int_equal(node_checkpoint(f->n), 0);
    node_abort_for_test(f->n);
    f->n = NULL;

    char path[300];
    snprintf(path, sizeof(path), "%s/store", f->dir);
    struct store_options so;
    store_options_init(&so);
    so.path = path;
    so.map_size = f->o.store_map_bytes;
    struct store *s;
    assert_int_equal(store_open(&so, &s), 0);
    struct store_shard_info info;
    assert_int_equal(store_applied(s, 0, &info), 0);
    struct store_entry e[3];
    for (uint64_t i = 0; i < 3; i++)
        e[i] = (struct store_entry){0, applied + 10u + i, term, NULL, 0};
    assert_int_equal(store_apply(s, e, 3, NULL, NULL), 0);
    assert_int_equal(store_checkpoint(s), 0);
    store_close(s);

    fixture_open(f);
    assert_int_equal(node_status(f->n, 0, &st), 0);
    assert_true(st.applied >= applied + 12u);
    struct outcome *o = fetch(f, "frank", 0);
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->count, 5);
    o = enqueue(f, "frank", 6, "y");
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->seq, 6);
    fixture_free(f);
}

/* ---- membership changes ------------------------------------------------- */

static bool memb_has_voter(const struct raft_membership *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->voters_count; i++)
        if (m->voters[i] == id)
            return true;
    return false;
}

static bool memb_has_learner(const struct raft_membership *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->learners_count; i++)
        if (m->learners[i] == id)
            return true;
    return false;
}

enum want { WANT_LEARNER, WANT_VOTER, WANT_GONE };

/* Does every shard, as every live node that is not ignored sees it, list
 * id as wanted? */
static bool cl_members_are(struct cluster *cl, uint64_t id, enum want w)
{
    for (uint64_t k = 1; k <= CL_SLOTS; k++) {
        struct node *n = cl->f[k] ? cl->f[k]->n : NULL;
        if (!n || cl->ignore[k])
            continue;
        for (uint32_t s = 0; s < cl->shards; s++) {
            struct raft_membership m;
            assert_int_equal(node_shard_members(n, s, &m), 0);
            bool v = memb_has_voter(&m, id), l = memb_has_learner(&m, id);
            if ((w == WANT_VOTER && !v) || (w == WANT_LEARNER && !l) ||
                (w == WANT_GONE && (v || l)))
                return false;
        }
    }
    return true;
}

/* The admin tool's loop: ask every live node (it is idempotent) until
 * every shard lists id as wanted (bounded wait). */
static void cl_members_drive(struct cluster *cl, uint64_t id, enum want w)
{
    for (int tries = 0; tries < 1500; tries++) {
        for (uint64_t k = 1; k <= CL_SLOTS; k++) {
            struct node *n = cl->f[k] ? cl->f[k]->n : NULL;
            if (!n)
                continue;
            int rc = w == WANT_GONE ? node_member_remove(n, id)
                                    : node_member_add(n, id);
            assert_int_equal(rc, 0);
        }
        if (cl_members_are(cl, id, w))
            return;
        sleep_ms(20);
    }
    fail_msg("node %llu never became %s in every shard", (unsigned long long)id,
             w == WANT_VOTER     ? "a voter"
             : w == WANT_LEARNER ? "a learner"
                                 : "absent");
}

static bool file_exists(struct fixture *f, const char *name)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    return access(path, F_OK) == 0;
}

/* Wait until a node applied the leader's commit of a shard. */
static void cl_wait_shard(struct cluster *cl, uint32_t shard)
{
    struct node_shard_status st;
    uint64_t l = cl_leader(cl, shard);
    assert_int_equal(node_status(cl->f[l]->n, shard, &st), 0);
    cl_wait_applied(cl, shard, st.commit);
}

/* Node 4 joins under writes. Its links are cut at first: it becomes a
 * learner everywhere but, having nothing, is never promoted; healed, it
 * catches up (from the log, or with `snap` from a snapshot: the leaders'
 * WALs are released past the conf entries first) and every shard makes it
 * a voter. Then each original node in turn crashes: the three left,
 * node 4 among them, serve everything. */
static void member_add_case(bool snap)
{
    struct cluster *cl = snap ? cl_new_opts(2, SNAP_RETAIN, 2048) : cl_new(2);
    const char *inbox = snap ? "grace" : "heidi";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t l = cl_leader(cl, shard);
    uint64_t total = snap ? SNAP_MSGS : 20u;
    enqueue_n(cl->f[l], inbox, 1, total / 2u);

    cl_add_slot(cl, 4);
    cl_isolate(cl, 4, true);
    cl_open(cl, 4);
    cl->ignore[4] = true; /* it hears from nobody yet */
    struct node_shard_status st;
    assert_int_equal(node_status(cl->f[4]->n, shard, &st), 0);
    assert_false(st.voter);
    assert_false(st.learner);
    cl_members_drive(cl, 4, WANT_LEARNER);
    enqueue_n(cl->f[l], inbox, total / 2u + 1u, total);
    /* Several election timeouts of ticks: still only a learner (its match
     * is 0), and it never campaigned. */
    for (int i = 0; i < 20; i++) {
        for (uint64_t k = 1; k <= CL_NODES; k++)
            assert_int_equal(node_member_add(cl->f[k]->n, 4), 0);
        sleep_ms(30);
    }
    assert_true(cl_members_are(cl, 4, WANT_LEARNER));
    assert_int_equal(node_status(cl->f[4]->n, shard, &st), 0);
    assert_int_equal(st.role, 0 /* follower */);
    assert_int_equal(st.term, 0);
    if (snap) {
        /* The leaders' WALs go past the ADD_LEARNER entries: DATA/members
         * keeps the membership at the release point. */
        for (uint64_t k = 1; k <= CL_NODES; k++) {
            assert_int_equal(node_checkpoint(cl->f[k]->n), 0);
            assert_true(file_exists(cl->f[k], "members"));
            assert_int_equal(node_status(cl->f[k]->n, shard, &st), 0);
            assert_true(st.released > SNAP_RETAIN);
        }
    }
    cl_isolate(cl, 4, false);
    cl->ignore[4] = false;
    cl_members_drive(cl, 4, WANT_VOTER);
    cl_wait_shard(cl, shard);
    for (uint32_t s = 0; s < cl->shards; s++) {
        assert_int_equal(node_status(cl->f[4]->n, s, &st), 0);
        assert_true(st.voter);
        assert_false(st.learner);
    }
    uint64_t installed =
        counter_of(cl->f[4]->n, "inbox_node_snapshots_installed_total");
    if (snap) {
        assert_true(installed >= 1);
        /* The snapshot carried a membership other than node.meta's. */
        assert_true(file_exists(cl->f[4], "members"));
    } else {
        assert_int_equal(installed, 0);
    }
    expect_inbox_local(cl->f[4], inbox, total);

    for (uint64_t down = 1; down <= CL_NODES; down++) {
        cl_crash(cl, down);
        uint64_t l2 = cl_leader(cl, shard);
        assert_true(l2 != down);
        expect_inbox(cl->f[l2], inbox, total);
        enqueue_n(cl->f[l2], inbox, total + 1u, total + 1u);
        total++;
        cl_open(cl, down);
        cl_wait_shard(cl, shard);
    }
    /* A restart of the new node (after a snapshot install: its membership
     * comes back from DATA/members) keeps it a voter. */
    cl_crash(cl, 4);
    cl_open(cl, 4);
    for (uint32_t s = 0; s < cl->shards; s++) {
        assert_int_equal(node_status(cl->f[4]->n, s, &st), 0);
        assert_true(st.voter);
    }
    cl_wait_shard(cl, shard);
    expect_inbox_local(cl->f[4], inbox, total);
    cl_free(cl);
}

static void test_member_add_from_log(void **state)
{
    (void)state;
    member_add_case(false);
}

static void test_member_add_by_snapshot(void **state)
{
    (void)state;
    member_add_case(true);
}

/* Remove the leader of a shard: it hands its shards over first, the new
 * leaders remove it; the two left serve, and the removed node, still
 * running, disrupts nobody (no leader or term moves for many election
 * timeouts). */
static void test_member_remove(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(4);
    const char *inbox = "ivan";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t gone = cl_leader(cl, shard);
    enqueue_n(cl->f[gone], inbox, 1, 10);
    cl->ignore[gone] = true;
    cl_members_drive(cl, gone, WANT_GONE);
    /* The last voter is never removed. */
    uint64_t keep = gone % CL_NODES + 1u;
    uint64_t third = 6u - gone - keep;
    cl->ignore[third] = true;
    cl_members_drive(cl, third, WANT_GONE);
    assert_int_equal(node_member_remove(cl->f[keep]->n, keep), INBOX_EINVAL);
    assert_int_equal(node_member_remove(cl->f[keep]->n, 0), INBOX_EINVAL);
    assert_int_equal(node_member_add(cl->f[keep]->n, 0), INBOX_EINVAL);
    /* Bring the third back as a voter: two voters again. */
    cl->ignore[third] = false;
    cl_members_drive(cl, third, WANT_VOTER);

    uint64_t leaders[4], terms[4];
    for (uint32_t s = 0; s < cl->shards; s++) {
        leaders[s] = cl_leader(cl, s);
        assert_true(leaders[s] != gone);
        struct node_shard_status st;
        assert_int_equal(node_status(cl->f[leaders[s]]->n, s, &st), 0);
        terms[s] = st.term;
    }
    uint64_t l2 = leaders[shard];
    expect_inbox(cl->f[l2], inbox, 10);
    enqueue_n(cl->f[l2], inbox, 11, 15);
    /* election timeout = 10 ticks of 20 ms: wait ten of them. */
    sleep_ms(2000);
    for (uint32_t s = 0; s < cl->shards; s++) {
        struct node_shard_status st;
        assert_int_equal(cl_leader(cl, s), leaders[s]);
        assert_int_equal(node_status(cl->f[leaders[s]]->n, s, &st), 0);
        assert_int_equal(st.term, terms[s]);
    }
    expect_inbox(cl->f[l2], inbox, 15);
    cl_free(cl);
}

/* Every node restarts after the membership changed and the WALs were
 * released past the conf entries: each shard's membership comes back from
 * DATA/members, and the cluster serves everything. */
static void test_member_restart_all(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(2);
    const char *inbox = "judy";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t l = cl_leader(cl, shard);
    enqueue_n(cl->f[l], inbox, 1, 10);
    cl_add_slot(cl, 4);
    cl_open(cl, 4);
    cl_members_drive(cl, 4, WANT_VOTER);
    uint64_t gone = l % CL_NODES + 1u;
    cl->ignore[gone] = true;
    cl_members_drive(cl, gone, WANT_GONE);
    cl_crash(cl, gone);
    cl->ignore[gone] = false;
    l = cl_leader(cl, shard);
    enqueue_n(cl->f[l], inbox, 11, 20);
    for (uint32_t s = 0; s < cl->shards; s++)
        cl_wait_shard(cl, s);
    uint64_t ids[3], k = 0;
    for (uint64_t id = 1; id <= 4; id++)
        if (id != gone)
            ids[k++] = id;
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(node_checkpoint(cl->f[ids[i]]->n), 0);
        assert_true(file_exists(cl->f[ids[i]], "members"));
        struct node_shard_status st;
        assert_int_equal(node_status(cl->f[ids[i]]->n, shard, &st), 0);
        assert_true(st.released >= st.applied - 1u);
    }
    for (uint64_t i = 0; i < 3; i++)
        cl_crash(cl, ids[i]);
    for (uint64_t i = 0; i < 3; i++)
        cl_open(cl, ids[i]);
    for (uint64_t i = 0; i < 3; i++)
        for (uint32_t s = 0; s < cl->shards; s++) {
            struct raft_membership m;
            assert_int_equal(node_shard_members(cl->f[ids[i]]->n, s, &m), 0);
            assert_int_equal(m.voters_count, 3);
            assert_int_equal(m.learners_count, 0);
            assert_true(memb_has_voter(&m, 4));
            assert_false(memb_has_voter(&m, gone));
        }
    l = cl_leader(cl, shard);
    expect_inbox(cl->f[l], inbox, 20);
    enqueue_n(cl->f[l], inbox, 21, 22);
    /* And again after a graceful close (its checkpoint releases more). */
    for (uint64_t i = 0; i < 3; i++) {
        pthread_mutex_lock(&cl->mu);
        cl->live[ids[i]] = NULL;
        pthread_mutex_unlock(&cl->mu);
        node_close(cl->f[ids[i]]->n);
        cl->f[ids[i]]->n = NULL;
    }
    for (uint64_t i = 0; i < 3; i++)
        cl_open(cl, ids[i]);
    l = cl_leader(cl, shard);
    expect_inbox(cl->f[l], inbox, 22);
    cl_free(cl);
}

/* node_transfer_leader moves a shard, and refuses what it cannot do. */
static void test_transfer_leader(void **state)
{
    (void)state;
    struct cluster *cl = cl_new(2);
    uint64_t l = cl_leader(cl, 0);
    uint64_t other = l % CL_NODES + 1u;
    assert_int_equal(node_transfer_leader(cl->f[other]->n, 0, l),
                     INBOX_ENOT_LEADER);
    assert_int_equal(node_transfer_leader(cl->f[l]->n, 9, other), INBOX_ERANGE);
    assert_int_equal(node_transfer_leader(cl->f[l]->n, 0, l), INBOX_EINVAL);
    assert_int_equal(node_transfer_leader(cl->f[l]->n, 0, 9), INBOX_EINVAL);
    assert_int_equal(node_transfer_leader(cl->f[l]->n, 0, other), 0);
    uint64_t now = 0;
    for (int tries = 0; tries < 200 && now != other; tries++) {
        now = cl_leader(cl, 0);
        if (now != other)
            sleep_ms(10);
    }
    assert_int_equal(now, other);
    /* 0: the most caught-up other voter. */
    assert_int_equal(node_transfer_leader(cl->f[other]->n, 0, 0), 0);
    for (int tries = 0; tries < 200 && now == other; tries++) {
        now = cl_leader(cl, 0);
        if (now == other)
            sleep_ms(10);
    }
    assert_true(now != other);
    /* The new leader takes writes (an inbox of shard 0). */
    char name[16] = "";
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "kim%d", i);
        if (node_shard_of(cl->f[now]->n, key(name), strlen(name)) == 0)
            break;
    }
    assert_int_equal(node_shard_of(cl->f[now]->n, key(name), strlen(name)), 0);
    struct outcome *o = enqueue(cl->f[now], name, 1, "r1");
    assert_int_equal(o->rc, 0);
    cl_free(cl);
}

/* DATA/members that does not check out is refused at open, loudly. */
static void test_members_file_corrupt(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(2);
    fixture_open(f);
    node_close(f->n);
    f->n = NULL;
    struct members_rec recs[2];
    memset(recs, 0, sizeof(recs));
    recs[1].present = true;
    recs[1].index = 0;
    recs[1].m.voters_count = 1;
    recs[1].m.voters[0] = 7;
    recs[1].m.learners_count = 1;
    recs[1].m.learners[0] = 8;
    recs[1].prev.voters_count = 1;
    recs[1].prev.voters[0] = 7;
    assert_int_equal(members_write(f->dir, 2, recs), 0);
    /* A good file is read: shard 1 has learner 8. */
    fixture_open(f);
    struct raft_membership m;
    assert_int_equal(node_shard_members(f->n, 1, &m), 0);
    assert_int_equal(m.learners_count, 1);
    assert_int_equal(m.learners[0], 8);
    struct node_shard_status st;
    assert_int_equal(node_status(f->n, 1, &st), 0);
    assert_true(st.voter);
    node_close(f->n);
    f->n = NULL;

    char path[300];
    snprintf(path, sizeof(path), "%s/members", f->dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 40, SEEK_SET), 0);
    assert_int_equal(fputc(0x5a, fp), 0x5a);
    fclose(fp);
    assert_int_equal(node_open(&f->o, &f->n), INBOX_ECORRUPT);
    assert_non_null(strstr(f->errmsg, "members"));
    assert_non_null(strstr(f->errmsg, "checksum"));
    /* Cut short: refused too, never read as "no changes". */
    assert_int_equal(truncate(path, 30), 0);
    assert_int_equal(node_open(&f->o, &f->n), INBOX_ECORRUPT);
    assert_non_null(strstr(f->errmsg, "members"));
    f->n = NULL;
    fixture_free(f);
}

/* With leader leases, reads skip the heartbeat round while the lease
 * holds; a leader cut off from the others must still never answer a read
 * that misses a write the new leader acknowledged. */
static void test_lease_reads(void **state)
{
    (void)state;
    cl_lease_reads = true;
    struct cluster *cl = cl_new(2);
    cl_lease_reads = false;
    const char *inbox = "lease";
    uint32_t shard = node_shard_of(cl->f[1]->n, key(inbox), strlen(inbox));
    uint64_t l1 = cl_leader(cl, shard);
    enqueue_n(cl->f[l1], inbox, 1, 5);
    expect_inbox(cl->f[l1], inbox, 5);
    cl_isolate(cl, l1, true);
    uint64_t l2 = 0;
    for (int tries = 0; tries < 1000 && l2 == 0; tries++) {
        for (uint64_t id = 1; id <= CL_NODES; id++) {
            struct node_shard_status st;
            if (id != l1 && node_status(cl->f[id]->n, shard, &st) == 0 &&
                st.role == 3)
                l2 = id;
        }
        sleep_ms(10);
    }
    assert_true(l2 != 0 && l2 != l1);
    enqueue_n(cl->f[l2], inbox, 6, 6);
    struct outcome *o = fetch(cl->f[l1], inbox, 0);
    if (o->rc == 0)
        assert_int_equal(o->count, 6); /* never the stale 5 */
    else
        assert_int_equal(o->rc, INBOX_ENOT_LEADER);
    cl_isolate(cl, l1, false);
    assert_int_equal(cl_leader(cl, shard), l2);
    expect_inbox(cl->f[l2], inbox, 6);
    cl_free(cl);
}

static void test_routing_vectors(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(64);
    fixture_open(f);
    assert_int_equal(node_shard_count(f->n), 64);
    assert_int_equal(node_shard_of(f->n, key("alice"), 5), 48);
    assert_int_equal(node_shard_of(f->n, key("bob"), 3), 37);
    assert_int_equal(node_shard_of(f->n, key("carol"), 5), 36);
    struct outcome *o = enqueue(f, "alice", 1, "a");
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->shard, 48);
    fixture_free(f);
}

/* Bounds: a full request queue answers EBUSY at once; proposals past
 * raft's uncommitted bytes complete with ETOO_MANY_PROPOSALS. A slow disk
 * (the fault vfs's sync delay) keeps requests in flight. */
struct counts {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done, ok, too_many, other;
};

static void counts_done(void *arg, const struct node_result *r)
{
    struct counts *c = arg;
    pthread_mutex_lock(&c->mu);
    if (r->rc == 0)
        c->ok++;
    else if (r->rc == INBOX_ETOO_MANY_PROPOSALS)
        c->too_many++;
    else
        c->other++;
    c->done++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static uint32_t submit_burst(struct fixture *f, struct counts *c,
                             uint32_t count, size_t payload_len, uint32_t *busy)
{
    static char payload[32 * 1024];
    uint32_t accepted = 0;
    *busy = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint8_t mid[INBOX_MSG_ID_BYTES];
        msg_id_of(mid, i, 11);
        int rc = node_enqueue(f->n, key("bound"), 5, mid, 0, payload,
                              payload_len, counts_done, c);
        if (rc == INBOX_EBUSY)
            (*busy)++;
        else if (rc == 0)
            accepted++;
        else
            fail_msg("unexpected %s", inbox_err_name(rc));
    }
    pthread_mutex_lock(&c->mu);
    while (c->done < accepted)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return accepted;
}

static void test_bounds(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(1);
    f->fv = faultvfs_new(7);
    assert_non_null(f->fv);
    faultvfs_sync_delay_us(f->fv, 50000);
    f->o.wal_vfs = faultvfs_vfs(f->fv);
    f->o.requests_max = 8;
    f->o.uncommitted_bytes_max = 100u * 1024u;
    fixture_open(f);
    struct counts c = {.done = 0};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    uint32_t busy = 0;
    uint32_t accepted = submit_burst(f, &c, 40, 16, &busy);
    assert_true(busy > 0);
    assert_true(accepted >= 8);
    assert_int_equal(c.other, 0);
    /* 32 KiB proposals against 100 KiB of uncommitted bytes */
    memset(&c.done, 0, sizeof(c) - offsetof(struct counts, done));
    node_close(f->n);
    f->n = NULL;
    f->o.requests_max = 0;
    fixture_open(f);
    accepted = submit_burst(f, &c, 8, 32 * 1024, &busy);
    assert_int_equal(busy, 0);
    assert_int_equal(c.other, 0);
    assert_true(c.too_many > 0);
    assert_true(c.ok >= 2);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    fixture_free(f);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_routing_vectors),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_dedup_and_ack_beyond),
        cmocka_unit_test(test_gapless_concurrent),
        cmocka_unit_test(test_read_burst),
        cmocka_unit_test(test_restart_graceful),
        cmocka_unit_test(test_crash_replay),
        cmocka_unit_test(test_checkpoint_releases_segments),
        cmocka_unit_test(test_shard_count_mismatch),
        cmocka_unit_test(test_wal_failure_sticky),
        cmocka_unit_test(test_store_full_then_recover),
        cmocka_unit_test(test_power_loss_under_load),
        cmocka_unit_test(test_power_loss_after_checkpoint),
        cmocka_unit_test(test_close_with_inflight),
        cmocka_unit_test(test_three_nodes_replicate_and_fail_over),
        cmocka_unit_test(test_restart_replay_applies_once),
        cmocka_unit_test(test_isolated_leader_cannot_commit),
        cmocka_unit_test(test_lease_reads),
        cmocka_unit_test(test_follower_lost_tail_counted),
        cmocka_unit_test(test_snapshot_catch_up),
        cmocka_unit_test(test_snapshot_transfer_interrupted),
        cmocka_unit_test(test_snapshot_crash_after_install),
        cmocka_unit_test(test_snapshot_interrupted_install_recovers),
        cmocka_unit_test(test_member_add_from_log),
        cmocka_unit_test(test_member_add_by_snapshot),
        cmocka_unit_test(test_member_remove),
        cmocka_unit_test(test_member_restart_all),
        cmocka_unit_test(test_transfer_leader),
        cmocka_unit_test(test_members_file_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
