/* test_store_model.c — randomized check of engine/store against a simple
 * in-memory model of docs/semantics.md.
 *
 * Each seed runs a long random sequence of commands (enqueue with fresh and
 * retried msg ids, enqueue-many, ack including past the last seq, seen-set,
 * time moving forward and sometimes backward, bad and no-op entries) with
 * checkpoints and crash/reopen/replay, and compares every result and read
 * with the model. The seed and op number of a failure are printed; rerun
 * one seed with: test_store_model <seed> [ops].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_harness.h"

#define M_SHARDS 3u
#define M_INBOXES 12u
#define M_IDS 24u     /* msg ids per inbox: small, so retries are common */
#define M_PENDING 20u /* pending_messages_max */
#define M_MSGS 64u
#define NEVER UINT64_MAX

static uint64_t g_seed;
static int g_op;
/* INBOX_MODEL_CHECK_EVERY=1 compares every read after every op, to find
 * the first op where store and model part. */
static int g_check_every;
/* What a run exercised, printed per seed so a reader can see the random
 * walk reaches every rule. */
static struct {
    unsigned dedup, full_msgs, full_bytes, too_large, beyond, swept, hidden,
        crashes, checkpoints;
} g_stats;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fail_msg("seed=%llu op=%d: %s", (unsigned long long)g_seed, g_op,  \
                     #cond);                                                   \
        }                                                                      \
    } while (0)

struct m_msg {
    uint64_t seq, id, ts, deadline;
    uint32_t len;
    uint8_t fill;
};

struct m_dedup {
    int present;
    uint64_t seq, ts;
};

struct m_inbox {
    char name[16];
    uint32_t shard;
    uint64_t last_seq, acked_seq, pending_bytes, last_seen, last_deadline;
    size_t n; /* pending messages msgs[0..n) = seqs acked+1 .. last */
    struct m_msg msgs[M_MSGS];
    struct m_dedup dedup[M_IDS];
};

struct model {
    struct store_options opt;
    struct m_inbox in[M_INBOXES];
    uint64_t now[M_SHARDS];
    uint64_t applied[M_SHARDS];
    uint64_t durable[M_SHARDS];
};

/* The log of every entry applied, for replay after a crash. */
struct log_entry {
    uint32_t shard;
    uint64_t index;
    size_t off, len;
};
static struct log_entry *g_log;
static size_t g_log_n, g_log_cap;
static uint8_t *g_arena;
static size_t g_arena_n, g_arena_cap;

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void log_push(uint32_t shard, uint64_t index, const uint8_t *p,
                     size_t len)
{
    if (g_log_n == g_log_cap) {
        g_log_cap = g_log_cap ? 2 * g_log_cap : 1024;
        g_log = realloc(g_log, g_log_cap * sizeof *g_log);
    }
    while (g_arena == NULL || g_arena_n + len > g_arena_cap) {
        g_arena_cap = g_arena_cap ? 2 * g_arena_cap : 1 << 20;
        g_arena = realloc(g_arena, g_arena_cap);
    }
    if (g_log == NULL || g_arena == NULL)
        abort();
    if (len > 0)
        memcpy(g_arena + g_arena_n, p, len);
    g_log[g_log_n++] = (struct log_entry){shard, index, g_arena_n, len};
    g_arena_n += len;
}

/* ---- the model ----------------------------------------------------------- */

/* Index-key order: deadline, then inbox key length, then bytes. */
static int key_cmp(const struct m_inbox *a, const struct m_inbox *b)
{
    size_t la = strlen(a->name), lb = strlen(b->name);
    if (la != lb)
        return la < lb ? -1 : 1;
    return memcmp(a->name, b->name, la);
}

static void m_pop_front(struct m_inbox *ib)
{
    ib->pending_bytes -= ib->msgs[0].len;
    ib->acked_seq = ib->msgs[0].seq;
    memmove(ib->msgs, ib->msgs + 1, (ib->n - 1) * sizeof ib->msgs[0]);
    ib->n--;
}

static void m_sweep(struct model *m, uint32_t shard)
{
    uint32_t budget = m->opt.expiry_sweep_messages_max;
    uint64_t now = m->now[shard];
    while (budget > 0) {
        struct m_inbox *best = NULL;
        for (unsigned k = 0; k < M_INBOXES; k++) {
            struct m_inbox *ib = &m->in[k];
            if (ib->shard != shard || ib->n == 0 || ib->msgs[0].deadline > now)
                continue;
            if (best == NULL || ib->msgs[0].deadline < best->msgs[0].deadline ||
                (ib->msgs[0].deadline == best->msgs[0].deadline &&
                 key_cmp(ib, best) < 0))
                best = ib;
        }
        if (best == NULL)
            return;
        while (budget > 0 && best->n > 0 && best->msgs[0].deadline <= now) {
            m_pop_front(best);
            g_stats.swept++;
            budget--;
        }
    }
}

static void m_begin(struct model *m, uint32_t shard, uint64_t ts)
{
    if (ts > m->now[shard])
        m->now[shard] = ts;
    m_sweep(m, shard);
}

static struct store_target_result m_enqueue_(struct model *m,
                                             struct m_inbox *ib, uint64_t id,
                                             uint64_t ttl, uint32_t len,
                                             uint8_t fill);

static struct store_target_result m_enqueue(struct model *m, struct m_inbox *ib,
                                            uint64_t id, uint64_t ttl,
                                            uint32_t len, uint8_t fill)
{
    struct store_target_result r = m_enqueue_(m, ib, id, ttl, len, fill);
    g_stats.dedup += r.deduped;
    g_stats.full_msgs += r.rc == INBOX_EINBOX_FULL_MESSAGES;
    g_stats.full_bytes += r.rc == INBOX_EINBOX_FULL_BYTES;
    g_stats.too_large += r.rc == INBOX_EPAYLOAD_TOO_LARGE;
    return r;
}

static struct store_target_result m_enqueue_(struct model *m,
                                             struct m_inbox *ib, uint64_t id,
                                             uint64_t ttl, uint32_t len,
                                             uint8_t fill)
{
    uint64_t now = m->now[ib->shard];
    struct m_dedup *d = &ib->dedup[id];
    if (d->present && now < sat_add(d->ts, m->opt.dedup_window_ms))
        return (struct store_target_result){0, d->seq, 1, 0};
    if (len > m->opt.payload_bytes_max)
        return (struct store_target_result){INBOX_EPAYLOAD_TOO_LARGE, 0, 0, 0};
    if (ib->n >= m->opt.pending_messages_max)
        return (struct store_target_result){INBOX_EINBOX_FULL_MESSAGES, 0, 0,
                                            0};
    if (ib->pending_bytes + len > m->opt.pending_bytes_max)
        return (struct store_target_result){INBOX_EINBOX_FULL_BYTES, 0, 0, 0};
    uint64_t deadline = ttl == 0 ? NEVER : sat_add(now, ttl);
    if (ib->n > 0 && ib->last_deadline > deadline)
        deadline = ib->last_deadline;
    uint64_t seq = ++ib->last_seq;
    ib->msgs[ib->n++] = (struct m_msg){seq, id, now, deadline, len, fill};
    ib->pending_bytes += len;
    ib->last_deadline = deadline;
    *d = (struct m_dedup){1, seq, now};
    return (struct store_target_result){0, seq, 0, 0};
}

static int m_ack(struct m_inbox *ib, uint64_t up_to)
{
    if (up_to > ib->last_seq) {
        g_stats.beyond++;
        return INBOX_EACK_BEYOND_LAST;
    }
    while (ib->n > 0 && ib->msgs[0].seq <= up_to)
        m_pop_front(ib);
    if (up_to > ib->acked_seq)
        ib->acked_seq = up_to;
    return 0;
}

/* ---- driving both -------------------------------------------------------- */

struct run {
    struct harness *h;
    struct model m;
    uint64_t seed;
    uint64_t clock;
    uint64_t ids_used[M_INBOXES]; /* bitmask of ids used per inbox */
};

static uint64_t pick_id(struct run *r, unsigned k)
{
    uint64_t id = rng(&r->seed) % M_IDS;
    r->ids_used[k] |= 1ull << id;
    return id;
}

static void fill_payload(uint8_t *p, uint32_t len, uint8_t fill)
{
    memset(p, fill, len);
}

/* Apply bytes as the next entry of shard in both store and log. */
static void apply(struct run *r, uint32_t shard, const uint8_t *p, size_t len)
{
    uint64_t index = ++r->m.applied[shard];
    r->h->next_index[shard] = index;
    log_push(shard, index, p, len);
    CHECK(h_apply_bytes(r->h, shard, p, len) == 0);
    CHECK(r->h->next_index[shard] == index + 1);
}

static uint64_t next_ts(struct run *r)
{
    uint64_t x = rng(&r->seed) % 100;
    if (x < 3 && r->clock > 500)
        return r->clock - rng(&r->seed) % 500; /* a skewed leader */
    if (x >= 97)
        r->clock += 3000 + rng(&r->seed) % 5000; /* a quiet spell */
    else
        r->clock += x < 60 ? x : x * 5;
    return r->clock;
}

static void op_enqueue(struct run *r, unsigned k)
{
    struct m_inbox *ib = &r->m.in[k];
    static uint8_t pay[128], cmd[512];
    uint64_t ts = next_ts(r), id = pick_id(r, k);
    uint64_t ttl = rng(&r->seed) % 10 == 0 ? 0 : 50 + rng(&r->seed) % 3000;
    uint32_t len = (uint32_t)(rng(&r->seed) % 100);
    uint8_t fill = (uint8_t)rng(&r->seed);
    uint8_t mid[INBOX_MSG_ID_BYTES];
    size_t n;
    h_id(mid, id);
    fill_payload(pay, len, fill);
    CHECK(command_encode_enqueue(cmd, sizeof cmd, ts, (uint8_t *)ib->name,
                                 strlen(ib->name), mid, ttl, pay, len,
                                 &n) == 0);
    apply(r, ib->shard, cmd, n);
    m_begin(&r->m, ib->shard, ts);
    struct store_target_result want = m_enqueue(&r->m, ib, id, ttl, len, fill);
    CHECK(r->h->last.rc == 0 && r->h->last.count == 1);
    CHECK(r->h->last.t[0].rc == want.rc);
    CHECK(r->h->last.t[0].seq == want.seq);
    CHECK(r->h->last.t[0].deduped == want.deduped);
}

static void op_enqueue_many(struct run *r, uint32_t shard)
{
    static uint8_t pay[128], cmd[4096];
    struct command_target t[6];
    uint8_t mids[6][INBOX_MSG_ID_BYTES];
    unsigned ks[6];
    uint64_t ids[6];
    unsigned cnt = 1 + (unsigned)(rng(&r->seed) % 6);
    for (unsigned i = 0; i < cnt; i++) {
        /* inboxes of this shard: k % M_SHARDS == shard */
        ks[i] = shard +
                M_SHARDS * (unsigned)(rng(&r->seed) % (M_INBOXES / M_SHARDS));
        ids[i] = pick_id(r, ks[i]);
        h_id(mids[i], ids[i]);
        t[i] = (struct command_target){(uint8_t *)r->m.in[ks[i]].name, mids[i],
                                       (uint16_t)strlen(r->m.in[ks[i]].name)};
    }
    uint64_t ts = next_ts(r);
    uint64_t ttl = rng(&r->seed) % 5 == 0 ? 0 : 50 + rng(&r->seed) % 3000;
    uint32_t len = (uint32_t)(rng(&r->seed) % 60);
    uint8_t fill = (uint8_t)rng(&r->seed);
    size_t n;
    fill_payload(pay, len, fill);
    CHECK(command_encode_enqueue_many(cmd, sizeof cmd, ts, ttl, pay, len, t,
                                      cnt, &n) == 0);
    apply(r, shard, cmd, n);
    m_begin(&r->m, shard, ts);
    CHECK(r->h->last.rc == 0 && r->h->last.count == cnt);
    for (unsigned i = 0; i < cnt; i++) {
        struct store_target_result want =
            m_enqueue(&r->m, &r->m.in[ks[i]], ids[i], ttl, len, fill);
        CHECK(r->h->last.t[i].rc == want.rc);
        CHECK(r->h->last.t[i].seq == want.seq);
        CHECK(r->h->last.t[i].deduped == want.deduped);
    }
}

static void op_ack(struct run *r, unsigned k)
{
    struct m_inbox *ib = &r->m.in[k];
    static uint8_t cmd[256];
    uint64_t ts = next_ts(r);
    uint64_t up_to = rng(&r->seed) % (ib->last_seq + 3);
    if (rng(&r->seed) % 3 == 0 && ib->n > 0)
        up_to = ib->msgs[rng(&r->seed) % ib->n].seq;
    size_t n;
    CHECK(command_encode_ack(cmd, sizeof cmd, ts, (uint8_t *)ib->name,
                             strlen(ib->name), up_to, &n) == 0);
    apply(r, ib->shard, cmd, n);
    m_begin(&r->m, ib->shard, ts);
    int want = m_ack(ib, up_to);
    CHECK(r->h->last.rc == 0 && r->h->last.t[0].rc == want);
    /* The result carries the inbox's acked seq afterwards. */
    CHECK(r->h->last.t[0].after == (want == 0 ? ib->acked_seq : 0));
}

static void op_seen(struct run *r, unsigned k)
{
    struct m_inbox *ib = &r->m.in[k];
    static uint8_t cmd[256];
    uint64_t ts = next_ts(r);
    uint64_t seen = rng(&r->seed) % (r->clock + 1);
    size_t n;
    CHECK(command_encode_seen_set(cmd, sizeof cmd, ts, (uint8_t *)ib->name,
                                  strlen(ib->name), seen, &n) == 0);
    apply(r, ib->shard, cmd, n);
    m_begin(&r->m, ib->shard, ts);
    if (seen > ib->last_seen)
        ib->last_seen = seen;
    CHECK(r->h->last.rc == 0 && r->h->last.t[0].rc == 0);
    CHECK(r->h->last.t[0].after == ib->last_seen); /* the stored value */
}

static void op_odd_entry(struct run *r, uint32_t shard)
{
    static const uint8_t junk[] = {1, 3, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 200};
    if (rng(&r->seed) % 2) {
        apply(r, shard, NULL, 0);
        CHECK(r->h->last.rc == 0);
    } else {
        apply(r, shard, junk, sizeof junk);
        CHECK(r->h->last.rc == INBOX_EBAD_COMMAND);
    }
}

/* ---- comparing reads ----------------------------------------------------- */

static void check_inbox_reads(struct run *r, unsigned k)
{
    struct m_inbox *ib = &r->m.in[k];
    struct store_inbox_info info;
    CHECK(h_info(r->h, ib->shard, ib->name, &info) == 0);
    CHECK(info.next_seq == ib->last_seq + 1);
    CHECK(info.acked_seq == ib->acked_seq);
    CHECK(info.pending_count == ib->n);
    CHECK(info.pending_bytes == ib->pending_bytes);
    CHECK(info.last_seen_ms == ib->last_seen);

    uint64_t after = rng(&r->seed) % (ib->last_seq + 2);
    uint32_t maxm = 1 + (uint32_t)(rng(&r->seed) % 12);
    uint32_t maxb = (uint32_t)(rng(&r->seed) % 400);
    static struct store_message got[16];
    size_t n;
    CHECK(store_fetch_since(r->h->s, ib->shard, (uint8_t *)ib->name,
                            strlen(ib->name), after, maxm, maxb, got, &n) == 0);
    /* The model's answer. */
    uint64_t now = r->m.now[ib->shard], bytes = 0;
    size_t want = 0;
    for (size_t i = 0; i < ib->n && want < maxm; i++) {
        const struct m_msg *mm = &ib->msgs[i];
        if (mm->seq <= after)
            continue;
        if (mm->deadline <= now) {
            g_stats.hidden++;
            continue;
        }
        if (want > 0 && bytes + mm->len > maxb)
            break;
        CHECK(want < n);
        CHECK(got[want].seq == mm->seq);
        CHECK(got[want].enqueue_ts_ms == mm->ts);
        CHECK(got[want].payload_len == mm->len);
        CHECK(got[want].msg_id[0] == (uint8_t)mm->id);
        for (uint32_t b = 0; b < mm->len; b++)
            CHECK(got[want].payload[b] == mm->fill);
        bytes += mm->len;
        want++;
    }
    CHECK(n == want);
}

static void check_all(struct run *r)
{
    for (unsigned k = 0; k < M_INBOXES; k++)
        check_inbox_reads(r, k);
    struct store_inbox_ref refs[M_INBOXES];
    uint64_t seen[M_INBOXES];
    for (unsigned k = 0; k < M_INBOXES; k++)
        refs[k] = (struct store_inbox_ref){r->m.in[k].shard,
                                           (uint8_t *)r->m.in[k].name,
                                           (uint16_t)strlen(r->m.in[k].name)};
    CHECK(store_seen_get(r->h->s, refs, M_INBOXES, seen) == 0);
    for (unsigned k = 0; k < M_INBOXES; k++)
        CHECK(seen[k] == r->m.in[k].last_seen);
    for (uint32_t s = 0; s < M_SHARDS; s++) {
        struct store_shard_info si;
        CHECK(store_applied(r->h->s, s, &si) == 0);
        CHECK(si.applied_index == r->m.applied[s]);
        CHECK(si.now_ms == r->m.now[s]);
    }
}

/* Close without checkpoint, reopen, check the durable point, replay the
 * whole log in batches (the store skips what it has), compare hashes. */
static void crash_and_replay(struct run *r)
{
    uint64_t before[M_SHARDS];
    for (uint32_t s = 0; s < M_SHARDS; s++)
        before[s] = h_hash(r->h, s);
    CHECK(h_reopen(r->h) == 0);
    for (uint32_t s = 0; s < M_SHARDS; s++) {
        struct store_shard_info si;
        uint64_t d;
        CHECK(store_applied(r->h->s, s, &si) == 0);
        CHECK(si.applied_index == r->m.durable[s]);
        CHECK(store_durable_index(r->h->s, s, &d) == 0);
        CHECK(d == r->m.durable[s]);
    }
    static struct store_entry batch[64];
    size_t nb = 0;
    for (size_t i = 0; i < g_log_n; i++) {
        const struct log_entry *e = &g_log[i];
        batch[nb++] = (struct store_entry){e->shard, e->index, 1,
                                           g_arena + e->off, e->len};
        if (nb == 64 || i + 1 == g_log_n) {
            CHECK(store_apply(r->h->s, batch, nb, NULL, NULL) == 0);
            nb = 0;
        }
    }
    for (uint32_t s = 0; s < M_SHARDS; s++)
        CHECK(h_hash(r->h, s) == before[s]);
}

/* Snapshot every shard and restore it into a fresh store: same hashes,
 * same reads. */
static void snapshot_roundtrip(struct run *r)
{
    CHECK(store_checkpoint(r->h->s) == 0);
    struct harness *dst = h_new_with(&r->m.opt);
    for (uint32_t s = 0; s < M_SHARDS; s++) {
        struct store_snapshot *snap;
        struct store_restore *rs;
        CHECK(store_snapshot_begin(r->h->s, s, &snap) == 0);
        CHECK(store_restore_begin(dst->s, s, &rs) == 0);
        for (;;) {
            const uint8_t *c;
            size_t len;
            CHECK(store_snapshot_next(snap, &c, &len) == 0);
            if (len == 0)
                break;
            CHECK(store_restore_chunk(rs, c, len) == 0);
        }
        CHECK(store_restore_finish(rs) == 0);
        store_snapshot_end(snap);
        CHECK(h_hash(dst, s) == h_hash(r->h, s));
    }
    struct harness *src = r->h;
    r->h = dst;
    check_all(r);
    r->h = src;
    h_free(dst);
}

static void run_seed(uint64_t seed, int ops)
{
    static struct run r;
    memset(&r, 0, sizeof r);
    memset(&g_stats, 0, sizeof g_stats);
    g_seed = seed;
    g_log_n = 0;
    g_arena_n = 0;
    r.seed = seed;
    r.clock = 1000;
    store_options_init(&r.m.opt);
    r.m.opt.pending_messages_max = M_PENDING;
    r.m.opt.pending_bytes_max = 600 + rng(&r.seed) % 600;
    r.m.opt.payload_bytes_max = 90;
    r.m.opt.dedup_window_ms = 500 + rng(&r.seed) % 5000;
    r.m.opt.expiry_sweep_messages_max = 1 + (uint32_t)(rng(&r.seed) % 2);
    if (seed % 4 == 0) /* and sometimes the default budgets */
        r.m.opt.expiry_sweep_messages_max = INBOX_EXPIRY_SWEEP_MESSAGES_DEFAULT;
    r.m.opt.dedup_prune_records_max = 1 + (uint32_t)(rng(&r.seed) % 4);
    r.m.opt.map_size = 256u << 20;
    for (unsigned k = 0; k < M_INBOXES; k++) {
        snprintf(r.m.in[k].name, sizeof r.m.in[k].name, k % 2 ? "u%u" : "usr%u",
                 k);
        r.m.in[k].shard = k % M_SHARDS;
    }
    r.h = h_new_with(&r.m.opt);
    for (g_op = 0; g_op < ops; g_op++) {
        unsigned k = (unsigned)(rng(&r.seed) % M_INBOXES);
        uint64_t x = rng(&r.seed) % 1000;
        if (x < 400)
            op_enqueue(&r, k);
        else if (x < 500)
            op_enqueue_many(&r, k % M_SHARDS);
        else if (x < 700)
            op_ack(&r, k);
        else if (x < 800)
            op_seen(&r, k);
        else if (x < 820)
            op_odd_entry(&r, k % M_SHARDS);
        else if (x < 950)
            check_inbox_reads(&r, k);
        else if (x < 985) {
            CHECK(store_checkpoint(r.h->s) == 0);
            memcpy(r.m.durable, r.m.applied, sizeof r.m.durable);
            g_stats.checkpoints++;
        } else {
            crash_and_replay(&r);
            check_all(&r);
            g_stats.crashes++;
        }
        if (g_op % 97 == 0 || g_check_every)
            check_all(&r);
    }
    check_all(&r);
    snapshot_roundtrip(&r);
    h_free(r.h);
    printf("  dedup hits %u, full(msgs) %u, full(bytes) %u, too large %u, "
           "ack beyond %u, swept %u, hidden in fetch %u, checkpoints %u, "
           "crashes %u\n",
           g_stats.dedup, g_stats.full_msgs, g_stats.full_bytes,
           g_stats.too_large, g_stats.beyond, g_stats.swept, g_stats.hidden,
           g_stats.checkpoints, g_stats.crashes);
}

static uint64_t g_seeds[16] = {1, 2, 3, 42, 20261127};
static int g_seeds_n = 5;
static int g_ops = 3000;

static void test_random_against_model(void **state)
{
    (void)state;
    for (int i = 0; i < g_seeds_n; i++) {
        printf("seed %llu, %d ops\n", (unsigned long long)g_seeds[i], g_ops);
        run_seed(g_seeds[i], g_ops);
    }
    free(g_log);
    free(g_arena);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        g_seeds[0] = strtoull(argv[1], NULL, 0);
        g_seeds_n = 1;
    }
    if (argc > 2)
        g_ops = atoi(argv[2]);
    g_check_every = getenv("INBOX_MODEL_CHECK_EVERY") != NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
