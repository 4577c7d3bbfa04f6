/*
 * test_wal_faults.c — randomized crash and failure test over the fault vfs.
 *
 * Per seed, for several rounds: threads append batches (entries, explicit
 * and implicit truncations, hard states) for the shards each owns, sync
 * some of them, and release prefixes (which deletes segments); the fault
 * vfs fails the Nth write or sync, or crashes at the Nth mutation. Then the
 * log is closed (after a power loss, torn or not, or a mere process
 * restart), reopened, and checked against a model.
 *
 * The model keeps, per shard, the state verified at the last reopen and
 * every operation issued since, with how many of them were acknowledged
 * durable. The log is append-only, so what recovery finds must be the
 * state after some prefix of those operations that includes every
 * acknowledged one: every durable entry is there, intact, in order, and
 * nothing appears that was not written. After an injected failure every
 * write must be refused (sticky). An acknowledged hard state survives.
 *
 * Seeds are fixed; a failure prints its seed and round. Run one seed with
 * `test_wal_faults <seed>`.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "faultvfs.h"
#include "wal_test_util.h"

#define THREADS 3
#define SHARDS_PER_THREAD 2
#define SHARDS (THREADS * SHARDS_PER_THREAD)
#define ROUNDS 5
#define BATCHES 40
#define BATCH_RECORDS_MAX 6
#define LEN_MAX 4000u
#define SEEDS 24
#define VER_MAX (ROUNDS * BATCHES * BATCH_RECORDS_MAX + 8)
#define INDEX_MAX VER_MAX
#define OPS_MAX (BATCHES * (BATCH_RECORDS_MAX + 4) + 8)

enum op_kind { OP_APPEND, OP_TRUNCATE, OP_RELEASE };

struct op {
    enum op_kind kind;
    uint64_t index;
    uint32_t ver; /* OP_APPEND: the content's version */
};

/* A shard's log as the model sees it: entries [first, last], each a
 * content version. */
struct view {
    uint64_t first, last;
    uint32_t ver[INDEX_MAX];
};

struct model {
    struct view base; /* verified at the last reopen */
    struct view cur;  /* base + every op issued since */
    struct op ops[OPS_MAX];
    size_t nops, dur_ops;          /* ops issued; ops acknowledged durable */
    uint64_t hs_durable, hs_tried; /* commit of acknowledged / tried hs */
};

struct run {
    uint64_t seed;
    int round;
    struct wal *w;
    struct model m[SHARDS];
    uint32_t nver[SHARDS];
    uint32_t ver_round[SHARDS][VER_MAX]; /* version -> round (term - 1) */
    uint64_t ver_hash[SHARDS][VER_MAX];  /* 0 = not computed yet */
    uint64_t rterm[INDEX_MAX], rhash[INDEX_MAX]; /* what recovery found */
};

struct worker {
    struct run *run;
    int id;
    uint64_t rng;
    int first_error;
    char error[200]; /* a broken expectation, reported by the main thread */
};

static uint64_t next(uint64_t *rng)
{
    *rng = mix64(*rng);
    return *rng;
}

static uint64_t salt_of(uint64_t seed, uint32_t ver)
{
    return mix64(seed * 7919 + ver);
}

static void view_apply(struct view *v, const struct op *op)
{
    switch (op->kind) {
    case OP_APPEND: /* the model only appends within [first, last + 1] */
        v->last = op->index;
        v->ver[op->index] = op->ver;
        break;
    case OP_TRUNCATE:
        v->last = op->index - 1;
        break;
    case OP_RELEASE:
        if (op->index >= v->last) {
            v->first = op->index + 1;
            v->last = op->index;
        } else if (op->index >= v->first) {
            v->first = op->index + 1;
        }
        break;
    }
}

static void issue(struct model *m, struct op op)
{
    assert(m->nops < OPS_MAX);
    m->ops[m->nops++] = op;
    view_apply(&m->cur, &op);
}

/* A new content version for index i of shard s; fills the record. */
static void entry_new(struct worker *k, uint32_t s, uint64_t i, uint8_t *buf,
                      struct wal_record *rec)
{
    struct run *r = k->run;
    uint32_t ver = ++r->nver[s];
    r->ver_round[s][ver] = (uint32_t)r->round;
    uint32_t len = payload_fill(buf, LEN_MAX, salt_of(r->seed, ver), s, i);
    *rec = (struct wal_record){.type = WAL_RECORD_ENTRY,
                               .shard = s,
                               .term = (uint64_t)r->round + 1,
                               .index = i,
                               .data = buf,
                               .len = len};
    issue(&r->m[s], (struct op){.kind = OP_APPEND, .index = i, .ver = ver});
}

static uint32_t shard_of(const struct worker *k, int j)
{
    return (uint32_t)(k->id * SHARDS_PER_THREAD + j);
}

/* Sometimes start the batch with a conflict on one shard: an explicit
 * TRUNCATE record, or an entry at an index <= last (implicit). Returns the
 * index the shard's next entry goes to, or 0. */
static uint64_t conflict(struct worker *k, uint32_t s, struct wal_record *recs,
                         size_t *n)
{
    struct model *m = &k->run->m[s];
    uint64_t len = m->cur.last + 1 - m->cur.first;
    if (len == 0 || next(&k->rng) % 6 != 0)
        return 0;
    uint64_t back = 1 + next(&k->rng) % (len < 8 ? len : 8);
    uint64_t i = m->cur.last + 1 - back;
    if (next(&k->rng) % 2 == 0)
        return i; /* implicit */
    recs[(*n)++] = (struct wal_record){
        .type = WAL_RECORD_TRUNCATE, .shard = s, .index = i};
    issue(m, (struct op){.kind = OP_TRUNCATE, .index = i});
    return 0;
}

static int batch_append(struct worker *k, uint64_t *lsn)
{
    static _Thread_local uint8_t bufs[BATCH_RECORDS_MAX][LEN_MAX];
    struct wal_record recs[BATCH_RECORDS_MAX + 2];
    struct run *r = k->run;
    size_t n = 0, entries = 1 + next(&k->rng) % BATCH_RECORDS_MAX;
    uint32_t cs = shard_of(k, (int)(next(&k->rng) % SHARDS_PER_THREAD));
    uint64_t at = conflict(k, cs, recs, &n);
    for (size_t e = 0; e < entries; e++) {
        uint32_t s = shard_of(k, (int)(next(&k->rng) % SHARDS_PER_THREAD));
        uint64_t i = r->m[s].cur.last + 1;
        if (s == cs && at != 0) {
            i = at;
            at = 0;
        }
        entry_new(k, s, i, bufs[e], &recs[n++]);
    }
    struct model *m0 = &r->m[shard_of(k, 0)];
    m0->hs_tried++;
    recs[n++] = (struct wal_record){.type = WAL_RECORD_HARD_STATE,
                                    .shard = shard_of(k, 0),
                                    .term = (uint64_t)r->round + 1,
                                    .vote = (uint64_t)k->id,
                                    .index = m0->hs_tried};
    /* A failed append may still be (partly) on disk: its ops stay issued,
     * and recovery may show any prefix of them. */
    return wal_append(r->w, recs, n, lsn);
}

/* Everything this thread issued is durable. */
static void mark_durable(struct worker *k)
{
    for (int j = 0; j < SHARDS_PER_THREAD; j++) {
        struct model *m = &k->run->m[shard_of(k, j)];
        m->dur_ops = m->nops;
    }
    struct model *m0 = &k->run->m[shard_of(k, 0)];
    m0->hs_durable = m0->hs_tried;
}

static int release_some(struct worker *k, int j)
{
    uint32_t s = shard_of(k, j);
    struct model *m = &k->run->m[s];
    if (m->cur.last < m->cur.first + 2)
        return 0;
    uint64_t upto = m->cur.last - (m->cur.last - m->cur.first) / 4;
    uint32_t ver = m->cur.ver[upto];
    uint64_t term = (uint64_t)k->run->ver_round[s][ver] + 1;
    issue(m, (struct op){.kind = OP_RELEASE, .index = upto});
    int rc = wal_release_prefix(k->run->w, s, upto, term);
    if (rc == 0)
        mark_durable(k); /* the release synced everything before it */
    return rc;
}

/* After the first failure, every write must be refused. */
static void check_sticky(struct worker *k, uint64_t lsn)
{
    struct wal_record r = {.type = WAL_RECORD_HARD_STATE,
                           .shard = shard_of(k, 0)};
    int a = wal_append(k->run->w, &r, 1, NULL);
    int s = wal_sync(k->run->w, lsn);
    if (a != INBOX_EFAILED || (s != INBOX_EFAILED && s != 0))
        snprintf(k->error, sizeof k->error,
                 "not sticky after %s: append %s, sync %s",
                 inbox_err_name(k->first_error), inbox_err_name(a),
                 inbox_err_name(s));
}

static void *worker_main(void *arg)
{
    struct worker *k = arg;
    uint64_t lsn = 0;
    for (int b = 0; b < BATCHES; b++) {
        int rc = batch_append(k, &lsn);
        if (rc == 0 && (next(&k->rng) % 2 == 0 || b + 1 == BATCHES)) {
            rc = wal_sync(k->run->w, lsn);
            if (rc == 0)
                mark_durable(k);
        }
        for (int j = 0; rc == 0 && b % 5 == 4 && j < SHARDS_PER_THREAD; j++)
            rc = release_some(k, j);
        if (rc != 0) {
            k->first_error = rc;
            if (rc != -EIO && rc != INBOX_EFAILED)
                snprintf(k->error, sizeof k->error, "unexpected error %s",
                         inbox_err_name(rc));
            else
                check_sticky(k, lsn);
            break;
        }
    }
    return NULL;
}

static uint64_t ver_hash(struct run *r, uint32_t s, uint32_t ver, uint64_t i)
{
    if (r->ver_hash[s][ver] == 0) {
        static uint8_t buf[LEN_MAX];
        uint32_t len = payload_fill(buf, LEN_MAX, salt_of(r->seed, ver), s, i);
        r->ver_hash[s][ver] = XXH3_64bits(buf, len) | 1;
    }
    return r->ver_hash[s][ver];
}

static bool view_matches(struct run *r, uint32_t s, const struct view *v,
                         uint64_t first, uint64_t last)
{
    if (v->first != first || v->last != last)
        return false;
    for (uint64_t i = first; i <= last; i++) {
        uint32_t ver = v->ver[i];
        if (r->rterm[i] != (uint64_t)r->ver_round[s][ver] + 1 ||
            r->rhash[i] != ver_hash(r, s, ver, i))
            return false;
    }
    return true;
}

/* Read what recovery found for shard s into rterm/rhash. */
static void recovered_read(struct run *r, uint32_t s, uint64_t first,
                           uint64_t last)
{
    struct wal_entries es = {0};
    for (uint64_t i = first; i <= last;) {
        int rc = wal_entries(r->w, s, i, last + 1, 256 * 1024, &es);
        if (rc != 0)
            fail_msg("seed %" PRIu64 " round %d shard %u: read %" PRIu64 ": %s",
                     r->seed, r->round, s, i, inbox_err_name(rc));
        for (size_t k = 0; k < es.n; k++, i++) {
            r->rterm[i] = es.v[k].term;
            r->rhash[i] = XXH3_64bits(es.v[k].data, es.v[k].len) | 1;
        }
    }
    wal_entries_free(&es);
}

/* Find the prefix of the issued ops that recovery shows; it must include
 * every acknowledged op. Then adopt it as the new base. */
static void verify_shard(struct run *r, uint32_t s)
{
    struct model *m = &r->m[s];
    uint64_t first, last;
    assert_int_equal(wal_range(r->w, s, &first, &last), 0);
    if (last >= INDEX_MAX)
        fail_msg("seed %" PRIu64 ": last %" PRIu64, r->seed, last);
    recovered_read(r, s, first, last);
    static struct view v;
    v = m->base;
    size_t p = 0;
    for (;; p++) {
        if (p >= m->dur_ops && view_matches(r, s, &v, first, last))
            break;
        if (p == m->nops)
            fail_msg("seed %" PRIu64 " round %d shard %u: recovered [%" PRIu64
                     ", %" PRIu64 "] is no prefix of the %zu ops issued "
                     "that keeps the %zu durable ones",
                     r->seed, r->round, s, first, last, m->nops, m->dur_ops);
        view_apply(&v, &m->ops[p]);
    }
    m->base = v;
    m->cur = v;
    m->nops = m->dur_ops = 0;
}

static void verify(struct run *r)
{
    for (uint32_t s = 0; s < SHARDS; s++) {
        verify_shard(r, s);
        struct model *m = &r->m[s];
        if (s % SHARDS_PER_THREAD != 0 || m->hs_durable == 0)
            continue;
        struct wal_hard_state hs;
        assert_int_equal(wal_hard_state_get(r->w, s, &hs), 0);
        if (hs.commit < m->hs_durable || hs.commit > m->hs_tried)
            fail_msg("seed %" PRIu64 " round %d shard %u: hard state commit "
                     "%" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]",
                     r->seed, r->round, s, hs.commit, m->hs_durable,
                     m->hs_tried);
        m->hs_durable = m->hs_tried = hs.commit;
    }
}

static struct wal *open_fv(struct faultvfs *fv, struct run *r)
{
    struct wal *w = NULL;
    char msg[256] = "";
    struct wal_options o = {.dir = "/f",
                            .segment_bytes = TEST_SEGMENT_BYTES,
                            .vfs = faultvfs_vfs(fv),
                            .errmsg = msg,
                            .errmsg_bytes = sizeof msg};
    int rc = wal_open(&o, &w);
    if (rc != 0)
        fail_msg("seed %" PRIu64 " round %d: reopen: %s: %s", r->seed, r->round,
                 inbox_err_name(rc), msg);
    return w;
}

static void arm(struct faultvfs *fv, uint64_t *rng)
{
    switch (next(rng) % 4) {
    case 0:
        faultvfs_fail_write(fv, 1 + next(rng) % 120);
        break;
    case 1:
        faultvfs_fail_sync(fv, 1 + next(rng) % 60);
        break;
    case 2:
        faultvfs_crash_at(fv, 1 + next(rng) % 250);
        break;
    default:
        break; /* a clean round */
    }
}

static void run_round(struct run *r, struct faultvfs *fv, uint64_t *rng)
{
    arm(fv, rng);
    struct worker k[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        k[i] = (struct worker){.run = r,
                               .id = i,
                               .rng = mix64(r->seed + 77 * (uint64_t)i +
                                            1000 * (uint64_t)r->round)};
        pthread_create(&t[i], NULL, worker_main, &k[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (k[i].error[0])
            fail_msg("seed %" PRIu64 " round %d thread %d: %s", r->seed,
                     r->round, i, k[i].error);
    if (faultvfs_crashed(fv) || next(rng) % 3 != 0) { /* power loss */
        faultvfs_crash(fv); /* nothing more reaches the disk */
        wal_close(r->w);
        faultvfs_restart(fv, next(rng) % 2 == 0);
    } else { /* a process restart: the page cache survives */
        wal_close(r->w);
        faultvfs_restart_keep(fv);
    }
    r->w = open_fv(fv, r);
    verify(r);
}

static void run_seed(uint64_t seed)
{
    static struct run r;
    memset(&r, 0, sizeof r);
    r.seed = seed;
    for (int s = 0; s < SHARDS; s++) {
        r.m[s].base.first = r.m[s].cur.first = 1;
    }
    uint64_t rng = mix64(seed);
    struct faultvfs *fv = faultvfs_new(seed);
    r.w = open_fv(fv, &r);
    for (r.round = 0; r.round < ROUNDS; r.round++)
        run_round(&r, fv, &rng);
    wal_close(r.w);
    faultvfs_free(fv);
}

static uint64_t only_seed;

static void test_random_faults(void **state)
{
    (void)state;
    if (only_seed) {
        run_seed(only_seed);
        return;
    }
    for (uint64_t seed = 1; seed <= SEEDS; seed++)
        run_seed(seed);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        only_seed = strtoull(argv[1], NULL, 10);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
