/*
 * harness.h — a hand-driven network of raft nodes for the unit tests: no
 * clock, no randomness beyond raft's own seed; a test decides which message
 * is delivered, dropped or inspected.
 */
#ifndef INBOX_TEST_RAFT_HARNESS_H
#define INBOX_TEST_RAFT_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "raft.h"

#define T_NODES 8u
#define T_QUEUE 4096u

struct t_msg {
    struct raft_msg m;
    void *block;
    bool after; /* came out in msgs_after */
};

struct t_node {
    uint64_t id;
    struct raft *r;
    struct mem_storage st;
    uint64_t applied;
    uint64_t applied_data_sum;
    struct raft_read_state reads[64];
    uint32_t reads_count;
    uint64_t reads_total; /* every read released, including past reads[] */
    bool installed_snapshot;
};

struct t_net {
    struct t_node n[T_NODES + 1];
    uint32_t count;
    struct t_msg q[T_QUEUE];
    size_t qn;
    bool cut[T_NODES + 1][T_NODES + 1];
    struct raft_options o;
    long fail_allocs_after; /* <0: never fail */
    uint64_t allocs;
};

static void *t_alloc(void *ctx, size_t size)
{
    struct t_net *t = ctx;
    if (t->fail_allocs_after >= 0) {
        if (t->fail_allocs_after == 0)
            return NULL;
        t->fail_allocs_after--;
    }
    t->allocs++;
    return malloc(size);
}

static void t_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    (void)size;
    free(p);
}

/* Options every test starts from: deterministic, small bounds. */
static inline void t_options(struct raft_options *o)
{
    raft_options_default(o);
    o->election_ticks = 10;
    o->heartbeat_ticks = 1;
    o->pre_vote = false;
    o->check_quorum = false;
    o->msg_entries_max = 64;
    o->msg_bytes_max = 4096;
    o->inflight_msgs_max = 8;
    o->inflight_bytes_max = 1u << 20;
    o->uncommitted_bytes_max = 1u << 20;
    o->snapshot_chunk_bytes = 4;
}

/* Nodes 1..voters are voters, voters+1..voters+learners learners. */
static inline void t_start(struct t_net *t, uint64_t id)
{
    struct t_node *n = &t->n[id];
    struct raft_options o = t->o;
    o.id = id;
    o.seed = 1000 + id;
    o.applied = n->st.snap.index;
    n->applied = n->st.snap.index;
    sim_storage_bind(&n->st, &o.storage);
    o.allocator.ctx = t;
    o.allocator.alloc = t_alloc;
    o.allocator.free = t_free;
    int rc = raft_create(&o, &n->st.hs, &n->r);
    if (rc != 0)
        abort();
}

static inline void t_init(struct t_net *t, uint32_t voters, uint32_t learners,
                          const struct raft_options *o)
{
    memset(t, 0, sizeof(*t));
    t->fail_allocs_after = -1;
    if (o)
        t->o = *o;
    else
        t_options(&t->o);
    t->count = voters + learners;
    for (uint32_t id = 1; id <= t->count; id++) {
        struct t_node *n = &t->n[id];
        n->id = id;
        n->st.snap.membership.voters_count = voters;
        for (uint32_t v = 0; v < voters; v++)
            n->st.snap.membership.voters[v] = v + 1;
        n->st.snap.membership.learners_count = learners;
        for (uint32_t l = 0; l < learners; l++)
            n->st.snap.membership.learners[l] = voters + l + 1;
        t_start(t, id);
    }
}

static inline void t_crash(struct t_net *t, uint64_t id)
{
    raft_destroy(t->n[id].r);
    t->n[id].r = NULL;
}

static inline void t_fini(struct t_net *t)
{
    for (uint32_t id = 1; id <= t->count; id++) {
        if (t->n[id].r)
            raft_destroy(t->n[id].r);
        sim_storage_free(&t->n[id].st);
    }
    for (size_t i = 0; i < t->qn; i++)
        free(t->q[i].block);
}

static inline void t_enqueue(struct t_net *t, const struct raft_msg *m,
                             bool after)
{
    if (t->qn == T_QUEUE)
        abort();
    struct t_msg *q = &t->q[t->qn++];
    q->m = *m;
    q->after = after;
    size_t bytes = m->entries_count * sizeof(struct raft_entry) + m->chunk_len;
    for (uint32_t i = 0; i < m->entries_count; i++)
        bytes += m->entries[i].len;
    q->block = malloc(bytes + 1);
    struct raft_entry *ents = q->block;
    uint8_t *data =
        (uint8_t *)q->block + m->entries_count * sizeof(struct raft_entry);
    for (uint32_t i = 0; i < m->entries_count; i++) {
        ents[i] = m->entries[i];
        if (ents[i].len) {
            memcpy(data, m->entries[i].data, ents[i].len);
            ents[i].data = data;
            data += ents[i].len;
        }
    }
    q->m.entries = ents;
    if (m->chunk_len) {
        memcpy(data, m->chunk, m->chunk_len);
        q->m.chunk = data;
    }
}

/* Run one ready cycle of node id (persist, queue messages, apply, advance).
 * Returns false if it had nothing ready. */
static inline bool t_ready(struct t_net *t, uint64_t id)
{
    struct t_node *n = &t->n[id];
    if (!n->r || !raft_has_ready(n->r))
        return false;
    struct raft_ready rd;
    if (raft_ready(n->r, &rd) != 0)
        abort();
    for (size_t i = 0; i < rd.msgs_count; i++)
        t_enqueue(t, &rd.msgs[i], false);
    sim_storage_write(&n->st, &rd);
    if (rd.snapshot) {
        n->installed_snapshot = true;
        n->applied = rd.snapshot->index;
    }
    for (size_t i = 0; i < rd.msgs_after_count; i++)
        t_enqueue(t, &rd.msgs_after[i], true);
    for (size_t i = 0; i < rd.committed_count; i++) {
        if (rd.committed[i].index != n->applied + 1)
            abort();
        n->applied = rd.committed[i].index;
        if (rd.committed[i].len == 1)
            n->applied_data_sum += rd.committed[i].data[0];
    }
    for (size_t i = 0; i < rd.reads_count && n->reads_count < 64; i++)
        n->reads[n->reads_count++] = rd.reads[i];
    n->reads_total += rd.reads_count;
    raft_advance(n->r, &rd);
    sim_storage_release(&n->st);
    return true;
}

static inline void t_ready_all(struct t_net *t)
{
    for (uint32_t id = 1; id <= t->count; id++)
        while (t_ready(t, id))
            ;
}

static inline void t_drop_queue(struct t_net *t)
{
    for (size_t i = 0; i < t->qn; i++)
        free(t->q[i].block);
    t->qn = 0;
}

/* Deliver queued messages (FIFO) until the network is quiet. */
static inline void t_settle(struct t_net *t)
{
    for (int guard = 0; guard < 100000; guard++) {
        t_ready_all(t);
        if (t->qn == 0)
            return;
        struct t_msg q = t->q[0];
        memmove(t->q, t->q + 1, (t->qn - 1) * sizeof(t->q[0]));
        t->qn--;
        struct t_node *to = q.m.to <= t->count ? &t->n[q.m.to] : NULL;
        if (to && to->r && !t->cut[q.m.from][q.m.to])
            (void)raft_step(to->r, &q.m);
        free(q.block);
    }
    abort();
}

static inline void t_tick(struct t_net *t, uint64_t id, uint32_t k)
{
    for (uint32_t i = 0; i < k; i++)
        raft_tick(t->n[id].r);
}

static inline void t_elect(struct t_net *t, uint64_t id)
{
    if (raft_campaign(t->n[id].r) != 0)
        abort();
    t_settle(t);
}

static inline int t_propose_byte(struct t_net *t, uint64_t id, uint8_t b)
{
    uint64_t index;
    return raft_propose(t->n[id].r, &b, 1, &index);
}

static inline void t_isolate(struct t_net *t, uint64_t id)
{
    for (uint32_t j = 1; j <= t->count; j++) {
        t->cut[id][j] = true;
        t->cut[j][id] = true;
    }
}

static inline void t_heal(struct t_net *t)
{
    memset(t->cut, 0, sizeof(t->cut));
}

/* Count queued messages of a type (optionally only those held for after
 * persisting). */
static inline size_t t_count(const struct t_net *t, uint32_t type, int after)
{
    size_t k = 0;
    for (size_t i = 0; i < t->qn; i++)
        if (t->q[i].m.type == type && (after < 0 || t->q[i].after == after))
            k++;
    return k;
}

#endif /* INBOX_TEST_RAFT_HARNESS_H */
