/*
 * cluster.c — simulator machinery: in-memory storage implementing
 * raft_storage, a lossy reordering network, per-node clocks with skew, and
 * the ready/persist/send/apply/advance cycle exactly as raft.h prescribes.
 */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/endian.h"

/* ---- PRNG --------------------------------------------------------------- */

uint64_t sim_rand(struct sim_rng *g)
{
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sim_below(struct sim_rng *g, uint64_t n)
{
    return n ? sim_rand(g) % n : 0;
}

bool sim_chance(struct sim_rng *g, uint32_t per_mille)
{
    return per_mille > 0 && sim_below(g, 1000) < per_mille;
}

/* ---- allocator (counts; can fail on purpose) ---------------------------- */

static void *sim_alloc(void *ctx, size_t size)
{
    struct sim_cluster *c = ctx;
    if (c->alloc_faults_on && c->f.alloc_fail > 0 &&
        sim_below(&c->rng, 1000000) < c->f.alloc_fail) {
        c->alloc.failed++;
        return NULL;
    }
    void *p = malloc(size);
    if (p) {
        c->alloc.allocs++;
        c->alloc.bytes_live += size;
    }
    return p;
}

static void sim_free(void *ctx, void *p, size_t size)
{
    struct sim_cluster *c = ctx;
    c->alloc.frees++;
    c->alloc.bytes_live -= size;
    free(p);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "sim: out of memory\n");
        abort();
    }
    return p;
}

/* ---- trace -------------------------------------------------------------- */

void sim_trace(struct sim_cluster *c, uint32_t kind, uint64_t node, uint64_t a,
               uint64_t b, uint64_t cc, uint64_t d)
{
    struct sim_event *e = &c->trace[c->trace_count % SIM_TRACE_EVENTS];
    e->t = c->now;
    e->kind = kind;
    e->node = (uint32_t)node;
    e->a = a;
    e->b = b;
    e->c = cc;
    e->d = d;
    c->trace_count++;
}

static void event_print(const struct sim_event *e)
{
    unsigned long long a = e->a, b = e->b, cc = e->c, d = e->d;
    printf("  t=%-7llu n%u ", (unsigned long long)e->t, e->node);
    switch (e->kind) {
    case EV_DELIVER:
        printf("<- n%llu %s term=%llu index=%llu\n", a,
               raft_msg_type_name((uint32_t)b), cc, d);
        break;
    case EV_DROP:
        printf("drop from n%llu %s term=%llu\n", a,
               raft_msg_type_name((uint32_t)b), cc);
        break;
    case EV_ROLE:
        printf("becomes %s term=%llu last=%llu commit=%llu\n",
               raft_role_name((enum raft_role)a), b, cc, d);
        break;
    case EV_PROPOSE:
        printf("propose write %llu -> index %llu rc=%lld\n", a, b,
               (long long)(int64_t)cc);
        break;
    case EV_CRASH:
        printf("crash (persisted last=%llu commit=%llu)\n", a, b);
        break;
    case EV_CRASH_MID_READY:
        printf("crash mid-ready: sent %llu msgs, lost %llu entries\n", a, b);
        break;
    case EV_RESTART:
        printf("restart term=%llu vote=%llu commit=%llu last=%llu\n", a, b, cc,
               d);
        break;
    case EV_PARTITION:
        printf("partition mask=%llx one-way=%llu\n", a, b);
        break;
    case EV_HEAL:
        printf("heal\n");
        break;
    case EV_CONF:
        printf("conf change op=%llu node=%llu rc=%lld\n", a, b,
               (long long)(int64_t)cc);
        break;
    case EV_TRANSFER:
        printf("transfer to n%llu rc=%lld\n", a, (long long)(int64_t)b);
        break;
    case EV_READ:
        printf("read ctx=%llu floor=%llu rc=%lld\n", a, b,
               (long long)(int64_t)cc);
        break;
    case EV_READ_DONE:
        printf("read ctx=%llu at index %llu sees write@%llu (floor %llu)\n", a,
               b, cc, d);
        break;
    case EV_APPLY:
        printf("apply index=%llu term=%llu type=%llu\n", a, b, cc);
        break;
    case EV_COMPACT:
        printf("compact to %llu\n", a);
        break;
    case EV_SNAP_INSTALL:
        printf("install snapshot index=%llu term=%llu\n", a, b);
        break;
    default:
        printf("note %llu %llu %llu %llu\n", a, b, cc, d);
        break;
    }
}

void sim_trace_print(const struct sim_cluster *c, size_t last)
{
    uint64_t n =
        c->trace_count < SIM_TRACE_EVENTS ? c->trace_count : SIM_TRACE_EVENTS;
    if (last < n)
        n = last;
    printf("last %llu events:\n", (unsigned long long)n);
    for (uint64_t i = c->trace_count - n; i < c->trace_count; i++)
        event_print(&c->trace[i % SIM_TRACE_EVENTS]);
}

/* ---- in-memory storage (raft_storage) ----------------------------------- */

static uint64_t st_last_index(void *ctx)
{
    struct mem_storage *s = ctx;
    return s->snap.index + s->count;
}

static int st_term(void *ctx, uint64_t i, uint64_t *t)
{
    struct mem_storage *s = ctx;
    if (i < s->snap.index)
        return INBOX_ECOMPACTED;
    if (i == s->snap.index) {
        *t = s->snap.term;
        return 0;
    }
    if (i > s->snap.index + s->count)
        return INBOX_EUNAVAILABLE;
    *t = s->ents[i - s->snap.index - 1].term;
    return 0;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                      struct raft_entry *out, size_t cap, size_t *n)
{
    struct mem_storage *s = ctx;
    *n = 0;
    if (lo <= s->snap.index)
        return INBOX_ECOMPACTED;
    if (hi > s->snap.index + s->count + 1)
        return INBOX_EUNAVAILABLE;
    uint64_t bytes = 0;
    for (uint64_t i = lo; i < hi && *n < cap; i++) {
        const struct mem_entry *e = &s->ents[i - s->snap.index - 1];
        if (*n > 0 && bytes + e->len > max_bytes)
            break;
        out[*n].term = e->term;
        out[*n].index = e->index;
        out[*n].type = e->type;
        out[*n].len = e->len;
        out[*n].data = e->data;
        bytes += e->len;
        (*n)++;
    }
    return 0;
}

static void st_snapshot(void *ctx, struct raft_snapshot_meta *out)
{
    struct mem_storage *s = ctx;
    *out = s->snap;
}

static int st_snapshot_chunk(void *ctx, uint64_t index, uint64_t offset,
                             uint32_t max, const uint8_t **data, uint32_t *len)
{
    struct mem_storage *s = ctx;
    if (index != s->snap.index || offset > s->snap.data_bytes)
        return INBOX_ENOTFOUND;
    uint64_t left = s->snap.data_bytes - offset;
    *len = (uint32_t)(left < max ? left : max);
    *data = s->snap_data + offset;
    return 0;
}

static void bury(struct mem_storage *s, uint8_t *p)
{
    if (!p)
        return;
    if (s->dead_count == s->dead_cap) {
        s->dead_cap = s->dead_cap ? s->dead_cap * 2 : 64;
        s->dead = realloc(s->dead, s->dead_cap * sizeof(*s->dead));
        if (!s->dead)
            abort();
    }
    s->dead[s->dead_count++] = p;
}

void sim_storage_release(struct mem_storage *s)
{
    for (size_t i = 0; i < s->dead_count; i++)
        free(s->dead[i]);
    s->dead_count = 0;
}

static void st_truncate_from(struct mem_storage *s, uint64_t from)
{
    while (s->count > 0 && s->ents[s->count - 1].index >= from) {
        bury(s, s->ents[s->count - 1].data);
        s->count--;
    }
}

static void st_append(struct mem_storage *s, const struct raft_entry *e)
{
    if (s->count == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->ents = realloc(s->ents, s->cap * sizeof(*s->ents));
        if (!s->ents)
            abort();
    }
    struct mem_entry *m = &s->ents[s->count++];
    m->term = e->term;
    m->index = e->index;
    m->type = e->type;
    m->len = e->len;
    m->data = NULL;
    if (e->len) {
        m->data = xmalloc(e->len);
        memcpy(m->data, e->data, e->len);
    }
}

void sim_storage_bind(struct mem_storage *s, struct raft_storage *out)
{
    out->ctx = s;
    out->last_index = st_last_index;
    out->term = st_term;
    out->entries = st_entries;
    out->snapshot = st_snapshot;
    out->snapshot_chunk = st_snapshot_chunk;
}

void sim_storage_compact(struct mem_storage *s, uint64_t at,
                         const struct raft_membership *m, const uint8_t *data,
                         uint32_t len)
{
    if (at <= s->snap.index || at > s->snap.index + s->count)
        return;
    uint64_t t = s->ents[at - s->snap.index - 1].term;
    size_t drop = (size_t)(at - s->snap.index);
    for (size_t i = 0; i < drop; i++)
        bury(s, s->ents[i].data);
    memmove(s->ents, s->ents + drop, (s->count - drop) * sizeof(*s->ents));
    s->count -= drop;
    s->snap.index = at;
    s->snap.term = t;
    s->snap.membership = *m;
    s->snap.data_bytes = len;
    free(s->snap_data);
    s->snap_data = xmalloc(len + 1u);
    if (len)
        memcpy(s->snap_data, data, len);
}

void sim_storage_free(struct mem_storage *s)
{
    for (size_t i = 0; i < s->count; i++)
        free(s->ents[i].data);
    free(s->ents);
    free(s->snap_data);
    free(s->stage);
    sim_storage_release(s);
    free(s->dead);
    memset(s, 0, sizeof(*s));
}

/* ---- state machine ------------------------------------------------------ */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h;
}

static void sm_encode(const struct sim_sm *sm, uint8_t out[SIM_SNAPSHOT_BYTES])
{
    memset(out, 0, SIM_SNAPSHOT_BYTES);
    put_u64le(out, sm->value);
    put_u64le(out + 8, sm->value_index);
    put_u64le(out + 16, sm->writes);
    put_u64le(out + 24, sm->digest);
    put_u64le(out + 32, 0x534e4150u); /* "SNAP" */
}

static void sm_decode(struct sim_sm *sm, const uint8_t *in, size_t len,
                      const struct raft_snapshot_meta *meta)
{
    memset(sm, 0, sizeof(*sm));
    sm->applied = meta->index;
    sm->memb = meta->membership;
    if (len >= 32) {
        sm->value = get_u64le(in);
        sm->value_index = get_u64le(in + 8);
        sm->writes = get_u64le(in + 16);
        sm->digest = get_u64le(in + 24);
    }
}

static void sm_apply(struct sim_sm *sm, const struct raft_entry *e)
{
    sm->applied = e->index;
    sm->digest = mix(mix(sm->digest, e->term), e->len);
    if (e->type == RAFT_ENTRY_CONF) {
        struct raft_conf_change cc;
        if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
            (void)raft_membership_apply(&sm->memb, &cc);
        return;
    }
    if (e->len == 8) {
        sm->value = get_u64le(e->data);
        sm->value_index = e->index;
        sm->writes++;
        sm->digest = mix(sm->digest, sm->value);
    }
}

/* ---- nodes -------------------------------------------------------------- */

static void bootstrap_storage(struct sim_cluster *c, struct mem_storage *s)
{
    memset(s, 0, sizeof(*s));
    s->snap.membership.voters_count = c->initial_voters;
    for (uint32_t i = 0; i < c->initial_voters; i++)
        s->snap.membership.voters[i] = i + 1u;
}

int sim_node_start(struct sim_cluster *c, uint64_t id)
{
    struct sim_node *n = &c->nodes[id];
    if (n->up)
        return 0;
    if (!n->exists) {
        bootstrap_storage(c, &n->st);
        n->exists = true;
    }
    sim_storage_release(&n->st);
    struct raft_options o = c->base;
    o.id = id;
    o.seed = mix(c->seed, id * 7919u + n->restart_at);
    sim_storage_bind(&n->st, &o.storage);
    o.allocator.ctx = c;
    o.allocator.alloc = sim_alloc;
    o.allocator.free = sim_free;
    /* The state machine is volatile: rebuild it from the snapshot, and let
     * raft hand the committed entries after it back to us. */
    sm_decode(&n->sm, n->st.snap_data, n->st.snap.data_bytes, &n->st.snap);
    o.applied = n->st.snap.index;
    bool faults = c->alloc_faults_on;
    c->alloc_faults_on = false;
    int rc = raft_create(&o, &n->st.hs, &n->r);
    c->alloc_faults_on = faults;
    if (rc != 0)
        return rc;
    n->up = true;
    if (c->now > 0)
        n->next_tick_at = c->now + n->tick_period;
    n->commit_seen = raft_commit(n->r);
    n->role_seen = RAFT_FOLLOWER;
    n->term_seen = raft_term(n->r);
    sim_trace(c, EV_RESTART, id, n->st.hs.term, n->st.hs.vote, n->st.hs.commit,
              st_last_index(&n->st));
    if (c->hooks.restarted)
        c->hooks.restarted(c->hooks.ctx, c, n);
    return 0;
}

void sim_node_crash(struct sim_cluster *c, uint64_t id)
{
    struct sim_node *n = &c->nodes[id];
    if (!n->up)
        return;
    sim_trace(c, EV_CRASH, id, st_last_index(&n->st), n->st.hs.commit, 0, 0);
    if (n->sm.applied > n->applied_before_crash)
        n->applied_before_crash = n->sm.applied;
    raft_destroy(n->r);
    n->r = NULL;
    n->up = false;
    free(n->st.stage);
    n->st.stage = NULL; /* staging is scratch: lost on crash */
    n->st.stage_len = 0;
    sim_storage_release(&n->st);
}

void sim_node_compact(struct sim_cluster *c, struct sim_node *n)
{
    uint64_t at = n->sm.applied;
    if (at <= n->st.snap.index || at > n->st.snap.index + n->st.count)
        return;
    uint8_t buf[SIM_SNAPSHOT_BYTES];
    sm_encode(&n->sm, buf);
    sim_storage_compact(&n->st, at, &n->sm.memb, buf, SIM_SNAPSHOT_BYTES);
    sim_trace(c, EV_COMPACT, n->id, at, n->st.snap.term, 0, 0);
}

/* Time inside raft's own calls, when the bench supplies a clock (the
 * simulator itself never reads one). */
static uint64_t core_clock(const struct sim_cluster *c)
{
    return c->core_clock ? c->core_clock() : 0;
}

static void core_add(struct sim_cluster *c, uint64_t t0)
{
    if (c->core_clock) {
        c->core_time += c->core_clock() - t0;
        c->core_calls++;
    }
}

/* ---- network ------------------------------------------------------------ */

static void net_push(struct sim_cluster *c, const struct raft_msg *m,
                     uint64_t at)
{
    if (c->net_count == c->net_cap) {
        c->net_cap = c->net_cap ? c->net_cap * 2 : 256;
        c->net = realloc(c->net, c->net_cap * sizeof(*c->net));
        if (!c->net)
            abort();
    }
    struct net_msg *nm = &c->net[c->net_count++];
    nm->at = at;
    nm->seq = c->net_seq++;
    nm->m = *m;
    size_t bytes = m->entries_count * sizeof(struct raft_entry) + m->chunk_len;
    for (uint32_t i = 0; i < m->entries_count; i++)
        bytes += m->entries[i].len;
    nm->block = NULL;
    if (bytes == 0)
        return;
    uint8_t *b = xmalloc(bytes);
    nm->block = b;
    struct raft_entry *ents = (struct raft_entry *)(void *)b;
    uint8_t *data = b + m->entries_count * sizeof(struct raft_entry);
    for (uint32_t i = 0; i < m->entries_count; i++) {
        ents[i] = m->entries[i];
        if (ents[i].len) {
            memcpy(data, m->entries[i].data, ents[i].len);
            ents[i].data = data;
            data += ents[i].len;
        } else {
            ents[i].data = NULL;
        }
    }
    nm->m.entries = m->entries_count ? ents : NULL;
    if (m->chunk_len) {
        memcpy(data, m->chunk, m->chunk_len);
        nm->m.chunk = data;
    }
}

static void net_send(struct sim_cluster *c, const struct raft_msg *m)
{
    if (m->to > c->nodes_count || m->to == 0)
        return;
    if (c->blocked[m->from][m->to] || sim_chance(&c->rng, c->f.drop)) {
        sim_trace(c, EV_DROP, m->to, m->from, m->type, m->term, 0);
        return;
    }
    int copies = sim_chance(&c->rng, c->f.dup) ? 2 : 1;
    for (int k = 0; k < copies; k++) {
        uint64_t d = c->f.delay_min +
                     sim_below(&c->rng, c->f.delay_max - c->f.delay_min + 1);
        if (sim_chance(&c->rng, c->f.long_delay))
            d += sim_below(&c->rng, 10u * c->f.delay_max + 1);
        net_push(c, m, c->now + d);
    }
}

/* Deliver every message due by now, in (time, seq) order. */
static void net_deliver(struct sim_cluster *c)
{
    for (;;) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < c->net_count; i++) {
            if (c->net[i].at > c->now)
                continue;
            if (best == SIZE_MAX || c->net[i].at < c->net[best].at ||
                (c->net[i].at == c->net[best].at &&
                 c->net[i].seq < c->net[best].seq))
                best = i;
        }
        if (best == SIZE_MAX)
            return;
        struct net_msg nm = c->net[best];
        c->net[best] = c->net[--c->net_count];
        struct sim_node *n = &c->nodes[nm.m.to];
        if (n->up && !c->blocked[nm.m.from][nm.m.to]) {
            sim_trace(c, EV_DELIVER, nm.m.to, nm.m.from, nm.m.type, nm.m.term,
                      nm.m.index);
            c->msgs_delivered++;
            uint64_t t0 = core_clock(c);
            (void)raft_step(n->r, &nm.m);
            core_add(c, t0);
        }
        free(nm.block);
    }
}

/* ---- the ready cycle ---------------------------------------------------- */

void sim_storage_write(struct mem_storage *s, const struct raft_ready *rd)
{
    if (rd->snapshot_chunk) {
        const struct raft_snapshot_chunk *ch = rd->snapshot_chunk;
        if (ch->offset == 0) {
            free(s->stage);
            s->stage = xmalloc(ch->meta.data_bytes + 1);
            s->stage_len = 0;
        }
        if (s->stage && ch->offset == s->stage_len &&
            ch->offset + ch->len <= ch->meta.data_bytes) {
            memcpy(s->stage + ch->offset, ch->data, ch->len);
            s->stage_len += ch->len;
        }
    }
    if (rd->snapshot) {
        /* Install: the log is replaced by the snapshot and its data. */
        st_truncate_from(s, 0);
        s->snap = *rd->snapshot;
        free(s->snap_data);
        s->snap_data = xmalloc(s->snap.data_bytes + 1);
        if (s->stage && s->stage_len == s->snap.data_bytes)
            memcpy(s->snap_data, s->stage, s->stage_len);
        else
            memset(s->snap_data, 0, s->snap.data_bytes + 1);
    }
    if (rd->entries_count > 0) {
        st_truncate_from(s, rd->entries[0].index);
        for (size_t i = 0; i < rd->entries_count; i++)
            st_append(s, &rd->entries[i]);
    }
    if (rd->hard_state_changed)
        s->hs = rd->hard_state;
}

static void persist(struct sim_cluster *c, struct sim_node *n,
                    const struct raft_ready *rd)
{
    struct mem_storage *s = &n->st;
    sim_storage_write(s, rd);
    if (rd->snapshot) {
        sm_decode(&n->sm, s->snap_data, s->snap.data_bytes, &s->snap);
        sim_trace(c, EV_SNAP_INSTALL, n->id, s->snap.index, s->snap.term, 0, 0);
        if (c->hooks.snapshot_installed)
            c->hooks.snapshot_installed(c->hooks.ctx, c, n);
    }
    if (rd->entries_count > 0 && c->hooks.persisted)
        c->hooks.persisted(c->hooks.ctx, c, n, rd->entries, rd->entries_count);
}

void sim_node_process(struct sim_cluster *c, struct sim_node *n)
{
    for (int rounds = 0; n->up && raft_has_ready(n->r) && rounds < 64;
         rounds++) {
        struct raft_ready rd;
        uint64_t t0 = core_clock(c);
        if (raft_ready(n->r, &rd) != 0)
            abort();
        core_add(c, t0);
        for (size_t i = 0; i < rd.msgs_count; i++)
            net_send(c, &rd.msgs[i]);
        /* Crash after the early messages left but before persisting: the
         * window the persist-before-send rule is about. Likelier when a
         * vote or term is at stake, so the simulator probes it often. */
        bool vote_changed = rd.hard_state.term != n->st.hs.term ||
                            rd.hard_state.vote != n->st.hs.vote;
        uint32_t p = vote_changed ? c->f.crash_mid_vote : c->f.crash_mid_ready;
        if ((rd.entries_count > 0 || vote_changed) && sim_chance(&c->rng, p)) {
            sim_trace(c, EV_CRASH_MID_READY, n->id, rd.msgs_count,
                      rd.entries_count, 0, 0);
            sim_node_crash(c, n->id);
            n->restart_at = c->now + c->f.restart_after_min +
                            sim_below(&c->rng, c->f.restart_after_max -
                                                   c->f.restart_after_min + 1);
            return;
        }
        persist(c, n, &rd);
        for (size_t i = 0; i < rd.msgs_after_count; i++)
            net_send(c, &rd.msgs_after[i]);
        for (size_t i = 0; i < rd.committed_count; i++) {
            const struct raft_entry *e = &rd.committed[i];
            if (e->index != n->sm.applied + 1)
                continue; /* covered by an installed snapshot */
            sm_apply(&n->sm, e);
            c->entries_applied++;
            if (c->hooks.applied)
                c->hooks.applied(c->hooks.ctx, c, n, e);
        }
        for (size_t i = 0; i < rd.reads_count; i++)
            if (c->hooks.read_done)
                c->hooks.read_done(c->hooks.ctx, c, n, &rd.reads[i]);
        t0 = core_clock(c);
        raft_advance(n->r, &rd);
        core_add(c, t0);
        sim_storage_release(&n->st);
    }
}

void sim_step(struct sim_cluster *c, uint64_t dt)
{
    c->now += dt;
    c->alloc_faults_on = true;
    net_deliver(c);
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (!n->up)
            continue;
        while (n->next_tick_at <= c->now) {
            uint64_t t0 = core_clock(c);
            raft_tick(n->r);
            core_add(c, t0);
            n->next_tick_at += n->tick_period;
        }
    }
    for (uint32_t id = 1; id <= c->nodes_count; id++)
        sim_node_process(c, &c->nodes[id]);
    c->alloc_faults_on = false;
}

struct sim_node *sim_leader(struct sim_cluster *c)
{
    struct sim_node *best = NULL;
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (n->up && raft_role(n->r) == RAFT_LEADER &&
            (!best || raft_term(n->r) > raft_term(best->r)))
            best = n;
    }
    return best;
}

void sim_heal_all(struct sim_cluster *c)
{
    memset(c->blocked, 0, sizeof(c->blocked));
}

int sim_cluster_init(struct sim_cluster *c, uint64_t seed, uint32_t voters,
                     uint32_t nodes_count, const struct raft_options *base,
                     const struct sim_faults *f)
{
    if (voters == 0 || voters > nodes_count || nodes_count > SIM_NODES_MAX)
        return INBOX_EINVAL;
    memset(c, 0, sizeof(*c));
    c->seed = seed;
    c->rng.s = seed * 0x2545F4914F6CDD1Dull + 1;
    c->nodes_count = nodes_count;
    c->initial_voters = voters;
    c->base = *base;
    c->f = *f;
    if (c->f.delay_max < c->f.delay_min)
        c->f.delay_max = c->f.delay_min;
    if (c->f.restart_after_max < c->f.restart_after_min)
        c->f.restart_after_max = c->f.restart_after_min;
    for (uint32_t id = 1; id <= nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        n->id = id;
        uint32_t spread = c->f.skew_pct;
        n->tick_period =
            100u - spread + (uint32_t)sim_below(&c->rng, 2u * spread + 1u);
        n->next_tick_at = sim_below(&c->rng, n->tick_period);
    }
    for (uint32_t id = 1; id <= voters; id++) {
        int rc = sim_node_start(c, id);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void sim_cluster_free(struct sim_cluster *c)
{
    for (uint32_t id = 1; id <= c->nodes_count; id++) {
        struct sim_node *n = &c->nodes[id];
        if (n->up)
            raft_destroy(n->r);
        sim_storage_free(&n->st);
    }
    for (size_t i = 0; i < c->net_count; i++)
        free(c->net[i].block);
    free(c->net);
    memset(c, 0, sizeof(*c));
}
