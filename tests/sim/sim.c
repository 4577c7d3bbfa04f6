/*
 * sim.c — the deterministic Raft simulator (TigerBeetle's VOPR, in small).
 *
 * From one seed it builds a cluster of 3 or 5 voters (plus spare ids for
 * membership changes), a fault profile and a workload, then runs: the
 * network drops, delays, duplicates and reorders messages, partitions come
 * and go (symmetric and one-way), nodes crash (also in the middle of a ready
 * batch) and restart with only what they had persisted, clocks tick at
 * different rates, allocations fail, logs are compacted into snapshots, and
 * meanwhile clients write, read (ReadIndex or lease), change membership and
 * transfer leadership. After every step the checker verifies Raft's safety
 * properties (see check_* below); at the end faults heal and liveness is
 * required within a bounded number of ticks.
 *
 *   sim --seed N [--nodes 3|5] [--profile P] [-v]   replay one seed
 *   sim --seeds N [--from S] [--nodes K] [--profile P]  run N seeds
 *   P: calm | storm | flap (default: each seed picks its own)
 *
 * A failure prints the seed, the check that fired, and the last events.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "inbox/endian.h"

#define TICK 100u           /* time units per nominal tick */
#define STEP 10u            /* time units per simulation step */
#define FAULT_TICKS 300u    /* ticks of chaos */
#define LIVENESS_TICKS 300u /* ticks allowed to recover once healed */
#define READS_MAX 64u
#define LIVENESS_WRITES 3u

struct hist {
    uint64_t term;
    uint64_t hash;
    uint64_t digest; /* state machine digest after applying it */
    bool known;
};

struct lm_slot {
    uint64_t index, term, prev_term, hash;
    bool used;
};

struct pending_read {
    uint64_t ctx;
    uint64_t node;
    uint64_t term;
    uint64_t floor; /* index of the newest write known applied at issue */
    uint64_t index;
    bool confirmed;
    bool used;
};

struct checker {
    struct sim_cluster *c;
    struct hist *hist;
    uint64_t hist_cap;
    uint64_t hist_len;
    uint64_t *leader_of_term;
    uint64_t lot_cap;
    struct lm_slot *lm;
    uint64_t lm_cap;
    uint64_t lm_count;
    uint64_t newest_write; /* log index of the newest write applied anywhere */
    struct pending_read reads[READS_MAX];
    uint64_t next_ctx;
    uint64_t next_write;
    bool removed[SIM_NODES_MAX + 1];
    bool failed;
    char why[512];
    /* stats */
    uint64_t reads_served;
    uint64_t writes_ok;
    uint64_t elections;
    uint64_t snaps_installed;
    uint64_t confs_ok;
    uint64_t transfers_ok;
};

static bool verbose;
/* Fault profile: -1 mixed (by seed), 0 calm, 1 storm, 2 flap. */
static int forced_profile = -1;

static void fail(struct checker *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct checker *k, const char *fmt, ...)
{
    if (k->failed)
        return;
    k->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->why, sizeof k->why, fmt, ap);
    va_end(ap);
}

static uint64_t entry_hash(const struct raft_entry *e)
{
    uint64_t h = 1469598103934665603ull ^ e->type;
    for (uint32_t i = 0; i < e->len; i++)
        h = (h ^ e->data[i]) * 1099511628211ull;
    return h;
}

static void *grow(void *p, uint64_t *cap, uint64_t need, size_t elem)
{
    if (need < *cap)
        return p;
    uint64_t n = *cap ? *cap : 1024;
    while (n <= need)
        n *= 2;
    p = realloc(p, n * elem);
    if (!p)
        abort();
    memset((char *)p + *cap * elem, 0, (n - *cap) * elem);
    *cap = n;
    return p;
}

/* ---- check: log matching (§5.3) ----------------------------------------- */

/* (index, term) identifies an entry: one leader per term makes at most one
 * entry per index, and by induction the previous entry matches too. */
static void lm_check(struct checker *k, uint64_t node, uint64_t index,
                     uint64_t term, uint64_t prev_term, uint64_t hash)
{
    if (k->lm_count * 2 >= k->lm_cap) {
        uint64_t old_cap = k->lm_cap;
        struct lm_slot *old = k->lm;
        k->lm_cap = old_cap ? old_cap * 2 : 4096;
        k->lm = calloc(k->lm_cap, sizeof(*k->lm));
        if (!k->lm)
            abort();
        k->lm_count = 0;
        for (uint64_t i = 0; i < old_cap; i++)
            if (old[i].used)
                lm_check(k, 0, old[i].index, old[i].term, old[i].prev_term,
                         old[i].hash);
        free(old);
    }
    uint64_t h =
        (index * 0x9E3779B97F4A7C15ull) ^ (term * 0xC2B2AE3D27D4EB4Full);
    for (uint64_t i = h & (k->lm_cap - 1);; i = (i + 1) & (k->lm_cap - 1)) {
        struct lm_slot *s = &k->lm[i];
        if (!s->used) {
            s->used = true;
            s->index = index;
            s->term = term;
            s->prev_term = prev_term;
            s->hash = hash;
            k->lm_count++;
            return;
        }
        if (s->index == index && s->term == term) {
            if (s->hash != hash || s->prev_term != prev_term)
                fail(k,
                     "log matching: n%llu holds entry %llu@term %llu that "
                     "differs from another node's (prev term %llu vs %llu)",
                     (unsigned long long)node, (unsigned long long)index,
                     (unsigned long long)term, (unsigned long long)prev_term,
                     (unsigned long long)s->prev_term);
            return;
        }
    }
}

static uint64_t st_term_at(const struct mem_storage *s, uint64_t i)
{
    if (i == s->snap.index)
        return s->snap.term;
    if (i < s->snap.index || i > s->snap.index + s->count)
        return UINT64_MAX;
    return s->ents[i - s->snap.index - 1].term;
}

static void on_persisted(void *ctx, struct sim_cluster *c, struct sim_node *n,
                         const struct raft_entry *ents, size_t count)
{
    struct checker *k = ctx;
    for (size_t i = 0; i < count; i++) {
        uint64_t prev = st_term_at(&n->st, ents[i].index - 1);
        if (prev == UINT64_MAX)
            continue;
        lm_check(k, n->id, ents[i].index, ents[i].term, prev,
                 entry_hash(&ents[i]));
    }
}

/* ---- check: state machine safety (§5.4.3) ------------------------------- */

static void on_applied(void *ctx, struct sim_cluster *c, struct sim_node *n,
                       const struct raft_entry *e)
{
    struct checker *k = ctx;
    sim_trace(c, EV_APPLY, n->id, e->index, e->term, e->type, 0);
    k->hist = grow(k->hist, &k->hist_cap, e->index + 1, sizeof(*k->hist));
    struct hist *h = &k->hist[e->index];
    uint64_t hash = entry_hash(e);
    if (h->known) {
        if (h->term != e->term || h->hash != hash)
            fail(k,
                 "state machine safety: n%llu applied %llu@term %llu, "
                 "another node applied %llu@term %llu there",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)e->index,
                 (unsigned long long)h->term);
        else if (h->digest != n->sm.digest)
            fail(k, "state machines diverged at index %llu on n%llu",
                 (unsigned long long)e->index, (unsigned long long)n->id);
        return;
    }
    h->known = true;
    h->term = e->term;
    h->hash = hash;
    h->digest = n->sm.digest;
    if (e->index > k->hist_len)
        k->hist_len = e->index;
    if (e->type == RAFT_ENTRY_NORMAL && e->len == 8 &&
        e->index > k->newest_write)
        k->newest_write = e->index;
}

static void on_snapshot(void *ctx, struct sim_cluster *c, struct sim_node *n)
{
    struct checker *k = ctx;
    k->snaps_installed++;
    uint64_t i = n->sm.applied;
    if (i < k->hist_cap && k->hist[i].known &&
        k->hist[i].digest != n->sm.digest)
        fail(k, "snapshot at %llu installed on n%llu has the wrong state",
             (unsigned long long)i, (unsigned long long)n->id);
}

/* ---- check: nothing applied is lost after a restart --------------------- */

static void on_restarted(void *ctx, struct sim_cluster *c, struct sim_node *n)
{
    struct checker *k = ctx;
    const struct mem_storage *s = &n->st;
    uint64_t durable =
        s->hs.commit > s->snap.index ? s->hs.commit : s->snap.index;
    if (durable < n->applied_before_crash ||
        s->snap.index + s->count < n->applied_before_crash)
        fail(k,
             "n%llu applied up to %llu before crashing, but after restart its "
             "commit is %llu and its log ends at %llu",
             (unsigned long long)n->id,
             (unsigned long long)n->applied_before_crash,
             (unsigned long long)durable,
             (unsigned long long)(s->snap.index + s->count));
    for (uint64_t i = s->snap.index + 1; i <= durable && i < k->hist_cap; i++)
        if (k->hist[i].known && k->hist[i].term != st_term_at(s, i))
            fail(k, "n%llu restarted with entry %llu of the wrong term",
                 (unsigned long long)n->id, (unsigned long long)i);
}

/* ---- check: linearizable reads (§6.4) ----------------------------------- */

static void serve_read(struct checker *k, struct sim_node *n,
                       struct pending_read *pr)
{
    uint64_t seen = n->sm.value_index;
    sim_trace(k->c, EV_READ_DONE, n->id, pr->ctx, pr->index, seen, pr->floor);
    /* The register is the last write: a read that began after a write was
     * known applied (committed) must see that write or a later one. */
    if (seen < pr->floor)
        fail(k,
             "stale read on n%llu (term %llu): saw the write at index %llu, "
             "but the write at %llu had been applied before the read began",
             (unsigned long long)n->id, (unsigned long long)pr->term,
             (unsigned long long)seen, (unsigned long long)pr->floor);
    k->reads_served++;
    pr->used = false;
}

static void on_read_done(void *ctx, struct sim_cluster *c, struct sim_node *n,
                         const struct raft_read_state *rs)
{
    struct checker *k = ctx;
    for (uint32_t i = 0; i < READS_MAX; i++) {
        struct pending_read *pr = &k->reads[i];
        if (pr->used && pr->ctx == rs->ctx && pr->node == n->id) {
            pr->confirmed = true;
            pr->index = rs->index;
        }
    }
}

static void reads_progress(struct checker *k)
{
    for (uint32_t i = 0; i < READS_MAX; i++) {
        struct pending_read *pr = &k->reads[i];
        if (!pr->used)
            continue;
        struct sim_node *n = &k->c->nodes[pr->node];
        if (!n->up || raft_term(n->r) != pr->term) {
            pr->used = false; /* the client times out and retries */
            continue;
        }
        if (pr->confirmed && n->sm.applied >= pr->index)
            serve_read(k, n, pr);
    }
}

/* ---- per-step checks ---------------------------------------------------- */

/* §5.4 Leader Completeness: a new leader holds every committed entry. */
static void check_new_leader(struct checker *k, struct sim_node *n)
{
    uint64_t last = raft_last_index(n->r);
    uint64_t from = n->st.snap.index + 1;
    if (last < k->hist_len)
        fail(k,
             "leader completeness: n%llu leads term %llu with log ending at "
             "%llu, but %llu is committed",
             (unsigned long long)n->id, (unsigned long long)raft_term(n->r),
             (unsigned long long)last, (unsigned long long)k->hist_len);
    for (uint64_t i = from; i <= k->hist_len && i <= last; i++)
        if (k->hist[i].known && raft_term_at(n->r, i) != k->hist[i].term)
            fail(k,
                 "leader completeness: n%llu leads term %llu but its entry "
                 "%llu has term %llu, the committed one has term %llu",
                 (unsigned long long)n->id, (unsigned long long)raft_term(n->r),
                 (unsigned long long)i,
                 (unsigned long long)raft_term_at(n->r, i),
                 (unsigned long long)k->hist[i].term);
}

static void check_step(struct checker *k)
{
    struct sim_cluster *c = k->c;
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (!n->up)
            continue;
        enum raft_role role = raft_role(n->r);
        uint64_t term = raft_term(n->r);
        uint64_t commit = raft_commit(n->r);
        if (commit < n->commit_seen)
            fail(k, "commit index of n%u went back from %llu to %llu", id,
                 (unsigned long long)n->commit_seen,
                 (unsigned long long)commit);
        n->commit_seen = commit;
        if (role != n->role_seen || term != n->term_seen)
            sim_trace(c, EV_ROLE, id, role, term, raft_last_index(n->r),
                      commit);
        if (role == RAFT_LEADER) {
            /* §5.2 Election Safety: at most one leader per term. */
            k->leader_of_term = grow(k->leader_of_term, &k->lot_cap, term + 1,
                                     sizeof(uint64_t));
            uint64_t *l = &k->leader_of_term[term];
            if (*l != 0 && *l != id)
                fail(k, "election safety: n%llu and n%u both lead term %llu",
                     (unsigned long long)*l, id, (unsigned long long)term);
            if (*l == 0) {
                *l = id;
                k->elections++;
                check_new_leader(k, n);
            }
        }
        n->role_seen = role;
        n->term_seen = term;
    }
}

/* ---- workload ----------------------------------------------------------- */

static struct sim_node *any_leader(struct checker *k)
{
    struct sim_cluster *c = k->c;
    uint32_t ids[SIM_NODES_MAX];
    uint32_t n = 0;
    for (uint32_t id = 1; id <= c->nodes_count; id++)
        if (c->nodes[id].up && raft_role(c->nodes[id].r) == RAFT_LEADER)
            ids[n++] = id;
    if (n == 0)
        return NULL;
    return &c->nodes[ids[sim_below(&c->rng, n)]];
}

static int propose_write(struct checker *k, struct sim_node *n, uint64_t *index)
{
    uint8_t buf[8];
    uint64_t w = ++k->next_write;
    put_u64le(buf, w);
    int rc = raft_propose(n->r, buf, sizeof buf, index);
    sim_trace(k->c, EV_PROPOSE, n->id, w, rc == 0 ? *index : 0,
              (uint64_t)(int64_t)rc, 0);
    if (rc == 0)
        k->writes_ok++;
    return rc;
}

static void issue_read(struct checker *k, struct sim_node *n)
{
    uint32_t slot = READS_MAX;
    for (uint32_t i = 0; i < READS_MAX; i++)
        if (!k->reads[i].used) {
            slot = i;
            break;
        }
    if (slot == READS_MAX)
        return;
    uint64_t ctx = ++k->next_ctx;
    int rc = raft_read_index(n->r, ctx);
    sim_trace(k->c, EV_READ, n->id, ctx, k->newest_write, (uint64_t)(int64_t)rc,
              0);
    if (rc != 0)
        return;
    struct pending_read *pr = &k->reads[slot];
    memset(pr, 0, sizeof(*pr));
    pr->used = true;
    pr->ctx = ctx;
    pr->node = n->id;
    pr->term = raft_term(n->r);
    pr->floor = k->newest_write;
}

static void conf_change(struct checker *k, struct sim_node *l)
{
    struct sim_cluster *c = k->c;
    const struct raft_membership *m = raft_membership(l->r);
    struct raft_conf_change cc = {0};
    if (m->learners_count > 0 && sim_chance(&c->rng, 700)) {
        cc.op = sim_chance(&c->rng, 800) ? RAFT_CONF_PROMOTE : RAFT_CONF_REMOVE;
        cc.node_id = m->learners[sim_below(&c->rng, m->learners_count)];
    } else if (m->voters_count > 3 && sim_chance(&c->rng, 500)) {
        cc.op = RAFT_CONF_REMOVE;
        cc.node_id = m->voters[sim_below(&c->rng, m->voters_count)];
    } else {
        uint64_t fresh = 0;
        for (uint32_t id = 1; id <= c->nodes_count; id++)
            if (!c->nodes[id].exists && !k->removed[id]) {
                fresh = id;
                break;
            }
        if (fresh == 0)
            return;
        cc.op = sim_chance(&c->rng, 850) ? RAFT_CONF_ADD_LEARNER
                                         : RAFT_CONF_ADD_VOTER;
        cc.node_id = fresh;
    }
    uint64_t index = 0;
    int rc = raft_propose_conf_change(l->r, &cc, &index);
    sim_trace(c, EV_CONF, l->id, cc.op, cc.node_id, (uint64_t)(int64_t)rc, 0);
    if (rc != 0)
        return;
    k->confs_ok++;
    if (cc.op == RAFT_CONF_REMOVE)
        k->removed[cc.node_id] = true; /* never re-added under that id */
    if (cc.op == RAFT_CONF_ADD_LEARNER || cc.op == RAFT_CONF_ADD_VOTER)
        (void)sim_node_start(c, cc.node_id);
}

static void transfer(struct checker *k, struct sim_node *l)
{
    struct sim_cluster *c = k->c;
    const struct raft_membership *m = raft_membership(l->r);
    if (m->voters_count < 2)
        return;
    uint64_t to = m->voters[sim_below(&c->rng, m->voters_count)];
    if (to == l->id)
        return;
    int rc = raft_transfer_leader(l->r, to);
    sim_trace(c, EV_TRANSFER, l->id, to, (uint64_t)(int64_t)rc, 0, 0);
    if (rc == 0)
        k->transfers_ok++;
}

static void partition(struct sim_cluster *c)
{
    uint32_t n = c->nodes_count;
    uint64_t mask = sim_rand(&c->rng) & ((1ull << (n + 1)) - 2);
    bool one_way = sim_chance(&c->rng, 300);
    memset(c->blocked, 0, sizeof(c->blocked));
    for (uint32_t a = 1; a <= n; a++)
        for (uint32_t b = 1; b <= n; b++) {
            bool sa = (mask >> a) & 1, sb = (mask >> b) & 1;
            if (sa && !sb)
                c->blocked[a][b] = true;
            if (!sa && sb && !one_way)
                c->blocked[a][b] = true;
        }
    sim_trace(c, EV_PARTITION, 0, mask, one_way, 0, 0);
}

static void chaos(struct checker *k)
{
    struct sim_cluster *c = k->c;
    if (sim_chance(&c->rng, c->f.partition))
        partition(c);
    if (sim_chance(&c->rng, c->f.heal)) {
        sim_heal_all(c);
        sim_trace(c, EV_HEAL, 0, 0, 0, 0, 0);
    }
    if (sim_chance(&c->rng, c->f.crash)) {
        uint64_t id = 1 + sim_below(&c->rng, c->nodes_count);
        struct sim_node *l = sim_leader(c);
        if (l && sim_chance(&c->rng, c->f.crash_leader))
            id = l->id;
        struct sim_node *n = &c->nodes[id];
        if (n->up) {
            sim_node_crash(c, id);
            n->restart_at = c->now + c->f.restart_after_min +
                            sim_below(&c->rng, c->f.restart_after_max -
                                                   c->f.restart_after_min + 1);
        }
    }
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (n->exists && !n->up && n->restart_at <= c->now)
            (void)sim_node_start(c, id);
        if (n->up && sim_chance(&c->rng, c->f.compact))
            sim_node_compact(c, n);
    }
}

static void workload(struct checker *k)
{
    struct sim_cluster *c = k->c;
    struct sim_node *l = any_leader(k);
    if (!l)
        return;
    uint64_t index;
    if (sim_chance(&c->rng, 150))
        (void)propose_write(k, l, &index);
    if (sim_chance(&c->rng, 100))
        issue_read(k, l);
    if (sim_chance(&c->rng, 4))
        conf_change(k, l);
    if (sim_chance(&c->rng, 2))
        transfer(k, l);
}

/* ---- one run ------------------------------------------------------------ */

struct run_result {
    bool ok;
    uint64_t ticks_to_recover;
};

static void profile(uint64_t seed, struct raft_options *o, struct sim_faults *f)
{
    struct sim_rng g = {seed ^ 0xA5A5A5A5DEADBEEFull};
    raft_options_default(o);
    o->election_ticks = 10;
    o->heartbeat_ticks = 1;
    o->pre_vote = sim_chance(&g, 750);
    o->check_quorum = sim_chance(&g, 750);
    o->lease_reads = o->check_quorum && sim_chance(&g, 500);
    o->lease_drift_ticks = 2;
    o->msg_entries_max = 1 + (uint32_t)sim_below(&g, 8);
    o->msg_bytes_max = 64;
    o->inflight_msgs_max = 2 + (uint32_t)sim_below(&g, 7);
    o->inflight_bytes_max = 256;
    o->uncommitted_bytes_max = 512;
    o->snapshot_chunk_bytes = 16;
    o->committed_bytes_max = 64;
    memset(f, 0, sizeof(*f));
    f->drop = (uint32_t)sim_below(&g, 100);
    f->dup = (uint32_t)sim_below(&g, 50);
    f->long_delay = (uint32_t)sim_below(&g, 30);
    f->delay_min = 1;
    f->delay_max = 10 + (uint32_t)sim_below(&g, 60);
    f->partition = (uint32_t)sim_below(&g, 6);
    f->heal = 3 + (uint32_t)sim_below(&g, 6);
    f->crash = (uint32_t)sim_below(&g, 4);
    f->crash_mid_ready = (uint32_t)sim_below(&g, 3);
    f->crash_mid_vote = (uint32_t)sim_below(&g, 100);
    f->restart_after_min = 10;
    f->restart_after_max = 50 + (uint32_t)sim_below(&g, 2000);
    f->skew_pct = (uint32_t)sim_below(&g, 11);
    f->alloc_fail = sim_chance(&g, 250) ? (uint32_t)sim_below(&g, 300) : 0;
    f->compact = (uint32_t)sim_below(&g, 4);
    bool storm = sim_chance(&g, 350);
    bool flap = !storm && sim_chance(&g, 400);
    if (forced_profile >= 0) {
        storm = forced_profile == 1;
        flap = forced_profile == 2;
    }
    if (storm) {
        /* Storm: leaders crash often and come back fast, messages carry
         * one entry each — the ground on which Figure 8 and lost votes
         * grow. */
        o->msg_entries_max = 1;
        f->crash = 20 + (uint32_t)sim_below(&g, 30);
        f->crash_leader = 700;
        f->crash_mid_vote = 300 + (uint32_t)sim_below(&g, 500);
        f->crash_mid_ready = 5 + (uint32_t)sim_below(&g, 20);
        f->restart_after_max = 20 + (uint32_t)sim_below(&g, 300);
        f->partition = (uint32_t)sim_below(&g, 3);
        f->alloc_fail = 0;
    } else if (flap) {
        /* Flap: the network reshapes itself every few ticks and loses a
         * lot, so leaders are cut off between two messages. */
        o->msg_entries_max = 1;
        o->check_quorum = sim_chance(&g, 300); /* cut-off leaders linger */
        o->lease_reads = false;
        f->partition = 50 + (uint32_t)sim_below(&g, 150);
        f->heal = 20 + (uint32_t)sim_below(&g, 80);
        f->drop = 100 + (uint32_t)sim_below(&g, 200);
        f->crash = 5 + (uint32_t)sim_below(&g, 20);
        f->crash_leader = 500;
        f->restart_after_max = 20 + (uint32_t)sim_below(&g, 500);
    }
}

static bool live_done(struct checker *k, const uint64_t *idx,
                      const uint64_t *term, uint32_t n)
{
    struct sim_cluster *c = k->c;
    struct sim_node *l = sim_leader(c);
    if (!l)
        return false;
    const struct raft_membership *m = raft_membership(l->r);
    for (uint32_t i = 0; i < n; i++)
        if (idx[i] >= k->hist_cap || !k->hist[idx[i]].known ||
            k->hist[idx[i]].term != term[i])
            return false;
    uint64_t need = idx[n - 1];
    for (uint32_t i = 0; i < m->voters_count + m->learners_count; i++) {
        uint64_t id = i < m->voters_count ? m->voters[i]
                                          : m->learners[i - m->voters_count];
        struct sim_node *x = &c->nodes[id];
        if (!x->up || x->sm.applied < need)
            return false;
    }
    return true;
}

/* Heal everything; a leader must emerge and fresh writes must commit and be
 * applied on every member within LIVENESS_TICKS. */
static void liveness(struct checker *k, struct run_result *res)
{
    struct sim_cluster *c = k->c;
    sim_heal_all(c);
    c->f.drop = c->f.dup = c->f.long_delay = 0;
    c->f.crash = c->f.crash_mid_ready = c->f.crash_mid_vote = 0;
    c->f.alloc_fail = 0;
    for (uint32_t id = 1; id <= c->nodes_count; id++)
        if (c->nodes[id].exists && !c->nodes[id].up)
            (void)sim_node_start(c, id);
    sim_trace(c, EV_HEAL, 0, 1, 0, 0, 0);
    uint64_t start = c->now;
    uint64_t idx[LIVENESS_WRITES] = {0}, term[LIVENESS_WRITES] = {0};
    uint64_t proposed_in = 0;
    while (c->now - start < (uint64_t)LIVENESS_TICKS * TICK) {
        sim_step(c, STEP);
        check_step(k);
        reads_progress(k);
        if (k->failed)
            return;
        struct sim_node *l = sim_leader(c);
        if (l && raft_term(l->r) != proposed_in &&
            raft_term_at(l->r, raft_commit(l->r)) == raft_term(l->r) &&
            raft_commit(l->r) == raft_last_index(l->r)) {
            /* (Re)propose under the current leader, once its backlog has
             * drained, so all the writes fit in its bounds. */
            bool all = true;
            for (uint32_t i = 0; i < LIVENESS_WRITES; i++) {
                if (propose_write(k, l, &idx[i]) != 0) {
                    all = false;
                    break;
                }
                term[i] = raft_term(l->r);
            }
            if (all)
                proposed_in = raft_term(l->r);
            sim_node_process(c, l);
        }
        if (proposed_in && live_done(k, idx, term, LIVENESS_WRITES)) {
            res->ticks_to_recover = (c->now - start) / TICK;
            return;
        }
    }
    struct sim_node *l = sim_leader(c);
    fail(k,
         "liveness: %u ticks after healing, %s; writes proposed in term "
         "%llu not applied everywhere",
         LIVENESS_TICKS, l ? "a leader exists" : "no leader",
         (unsigned long long)proposed_in);
}

static void dump_nodes(struct sim_cluster *c)
{
    printf("nodes:\n");
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (!n->exists)
            continue;
        if (!n->up) {
            printf("  n%u down\n", id);
            continue;
        }
        const struct raft_membership *m = raft_membership(n->r);
        printf("  n%u %-13s term=%llu vote=%llu commit=%llu last=%llu@%llu "
               "applied=%llu snap=%llu voters=",
               id, raft_role_name(raft_role(n->r)),
               (unsigned long long)raft_term(n->r),
               (unsigned long long)n->st.hs.vote,
               (unsigned long long)raft_commit(n->r),
               (unsigned long long)raft_last_index(n->r),
               (unsigned long long)raft_term_at(n->r, raft_last_index(n->r)),
               (unsigned long long)n->sm.applied,
               (unsigned long long)n->st.snap.index);
        for (uint32_t i = 0; i < m->voters_count; i++)
            printf("%llu%s", (unsigned long long)m->voters[i],
                   i + 1 < m->voters_count ? "," : "");
        printf(" learners=");
        for (uint32_t i = 0; i < m->learners_count; i++)
            printf("%llu%s", (unsigned long long)m->learners[i],
                   i + 1 < m->learners_count ? "," : "");
        if (raft_role(n->r) == RAFT_LEADER) {
            printf("\n    progress:");
            for (uint32_t j = 1; j <= c->nodes_count; j++) {
                struct raft_progress_info pi;
                if (raft_progress_of(n->r, j, &pi) != 0)
                    continue;
                printf(" n%u[%s m=%llu n=%llu if=%u%s]", j,
                       pi.state == 0   ? "probe"
                       : pi.state == 1 ? "repl"
                                       : "snap",
                       (unsigned long long)pi.match,
                       (unsigned long long)pi.next, pi.inflight_msgs,
                       pi.paused ? " paused" : "");
            }
        }
        printf("\n");
    }
}

static void run_free(struct checker *k)
{
    free(k->hist);
    free(k->leader_of_term);
    free(k->lm);
}

static struct run_result run_seed(uint64_t seed, uint32_t voters)
{
    struct run_result res = {0};
    struct raft_options o;
    struct sim_faults f;
    profile(seed, &o, &f);
    static struct sim_cluster c;
    struct checker k;
    memset(&k, 0, sizeof(k));
    k.c = &c;
    uint32_t spare = 3; /* ids for membership changes */
    int rc = sim_cluster_init(&c, seed, voters, voters + spare, &o, &f);
    if (rc != 0) {
        printf("seed %llu: cluster init failed: %s\n", (unsigned long long)seed,
               inbox_strerror(rc));
        return res;
    }
    c.hooks.ctx = &k;
    c.hooks.persisted = on_persisted;
    c.hooks.applied = on_applied;
    c.hooks.snapshot_installed = on_snapshot;
    c.hooks.read_done = on_read_done;
    c.hooks.restarted = on_restarted;
    while (!k.failed && c.now < (uint64_t)FAULT_TICKS * TICK) {
        chaos(&k);
        workload(&k);
        sim_step(&c, STEP);
        check_step(&k);
        reads_progress(&k);
    }
    if (!k.failed)
        liveness(&k, &res);
    if (k.failed) {
        printf("FAIL seed %llu (%u nodes): %s\n", (unsigned long long)seed,
               voters, k.why);
        printf("profile: pre_vote=%d check_quorum=%d lease=%d drop=%u dup=%u "
               "crash=%u leader-bias=%u mid_vote=%u alloc_fail=%uppm "
               "skew=%u%% entries/msg=%u\n",
               o.pre_vote, o.check_quorum, o.lease_reads, f.drop, f.dup,
               f.crash, f.crash_leader, f.crash_mid_vote, f.alloc_fail,
               f.skew_pct, o.msg_entries_max);
        sim_trace_print(&c, verbose ? SIM_TRACE_EVENTS : 40);
        dump_nodes(&c);
        printf("replay: sim --seed %llu --nodes %u\n", (unsigned long long)seed,
               voters);
    } else {
        res.ok = true;
        if (verbose)
            printf("seed %llu ok: now=%llu elections=%llu writes=%llu "
                   "reads=%llu confs=%llu transfers=%llu snaps=%llu "
                   "applied=%llu msgs=%llu allocfail=%llu recover=%llu "
                   "ticks\n",
                   (unsigned long long)seed, (unsigned long long)c.now,
                   (unsigned long long)k.elections,
                   (unsigned long long)k.writes_ok,
                   (unsigned long long)k.reads_served,
                   (unsigned long long)k.confs_ok,
                   (unsigned long long)k.transfers_ok,
                   (unsigned long long)k.snaps_installed,
                   (unsigned long long)c.entries_applied,
                   (unsigned long long)c.msgs_delivered,
                   (unsigned long long)c.alloc.failed,
                   (unsigned long long)res.ticks_to_recover);
    }
    sim_cluster_free(&c);
    run_free(&k);
    return res;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sim --seed N [--nodes 3|5] [--profile P] [-v]\n"
            "       sim --seeds N [--from S] [--nodes 3|5] [--profile P] [-v]\n"
            "P: calm | storm | flap (default: chosen by each seed)\n");
}

int main(int argc, char **argv)
{
    uint64_t seed = 0, seeds = 0, from = 1;
    uint32_t nodes = 0;
    bool one = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
            one = true;
        } else if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            seeds = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--from") && i + 1 < argc) {
            from = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--nodes") && i + 1 < argc) {
            nodes = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--profile") && i + 1 < argc) {
            const char *p = argv[++i];
            forced_profile = !strcmp(p, "calm")    ? 0
                             : !strcmp(p, "storm") ? 1
                             : !strcmp(p, "flap")  ? 2
                                                   : -2;
            if (forced_profile == -2) {
                usage();
                return 2;
            }
        } else if (!strcmp(argv[i], "-v")) {
            verbose = true;
        } else {
            usage();
            return 2;
        }
    }
    if (nodes != 0 && nodes != 3 && nodes != 5) {
        usage();
        return 2;
    }
    if (one) {
        uint32_t v = nodes ? nodes : (seed & 1) ? 5 : 3;
        return run_seed(seed, v).ok ? 0 : 1;
    }
    if (seeds == 0) {
        usage();
        return 2;
    }
    uint64_t failed = 0, worst = 0;
    for (uint64_t s = from; s < from + seeds; s++) {
        uint32_t v = nodes ? nodes : (s & 1) ? 5 : 3;
        struct run_result r = run_seed(s, v);
        if (!r.ok) {
            failed++;
            if (failed >= 3)
                break;
        } else if (r.ticks_to_recover > worst) {
            worst = r.ticks_to_recover;
        }
    }
    printf("%llu seeds from %llu: %llu failed; slowest recovery %llu ticks\n",
           (unsigned long long)seeds, (unsigned long long)from,
           (unsigned long long)failed, (unsigned long long)worst);
    return failed ? 1 : 0;
}
