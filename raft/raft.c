/*
 * raft.c — the Raft consensus core as a pure state machine.
 *
 * Design note
 * ===========
 * Roles and transitions (the function that makes each one):
 *
 *   FOLLOWER --election timeout, pre_vote on--> PRE_CANDIDATE
 * become_pre_candidate FOLLOWER --election timeout, pre_vote off-> CANDIDATE
 * become_candidate FOLLOWER --TIMEOUT_NOW (transfer)---------> CANDIDATE
 * become_candidate PRE_CANDIDATE --quorum of pre-votes-------> CANDIDATE
 * become_candidate CANDIDATE --quorum of votes---------------> LEADER
 * become_leader any --higher term, or a leader of our term-> FOLLOWER
 * become_follower LEADER --check-quorum fails, or its own removal commits-->
 * FOLLOWER
 *
 * Only voters in the membership ever leave FOLLOWER. Learners and removed
 * nodes stay followers forever.
 *
 * Invariants (checked by check_invariants() under assert):
 *   I1. commit <= last_index(); applied <= commit.
 *   I2. The unstable entries are contiguous from unstable_offset and
 *       unstable_offset <= stable_last + 1.
 *   I3. A leader's own match is its persisted last index (stable_last): it
 *       counts itself towards a commit only for durable entries (§10.2.1).
 *   I4. commit moves forward only; a leader moves it only to an index whose
 *       entry has the current term (§5.4.2, Figure 8).
 *   I5. vote is set at most once per term, and is persisted before any
 *       message that depends on it leaves (msgs_after, see raft.h).
 *   I6. membership is the last conf entry in the log (dissertation §4.1);
 *       conf_stack holds, for each uncommitted conf entry, the membership
 *       before it, so truncating the log restores it.
 *   I7. A leader has at most one uncommitted conf entry, and proposes none
 *       until it has committed an entry of its own term (the fix to
 *       single-server changes published in 2015 on raft-dev).
 *   I8. Follower progress: match < next; in REPLICATE the inflight ring
 *       holds the last index of each unacked APPEND, increasing.
 *   I9. A follower's match only grows (it is the last index the follower
 *       acknowledged in this term), with one exception: the follower proves
 *       it lost acknowledged entries (see "Lost tail" below), and then
 *       match drops to the follower's commit index. Lowering match never
 *       lowers commit (I4); it only stops counting entries the follower no
 *       longer holds.
 *
 * Lost tail. Raft assumes an acknowledged entry stays on the follower's
 * disk. Ours can lose it: the WAL cuts a torn or corrupt tail on restart,
 * taking entries it had acknowledged and, with them, HARD_STATE records
 * interleaved with those entries (so the node may also come back with an
 * older term, vote and commit). Without help the leader would never repair
 * such a follower: its match is above the follower's last index, so an
 * idle leader sends nothing, and every APPEND the follower rejects at
 * prev <= match looks stale. So every heartbeat carries the leader's match
 * for the receiver and that entry's term (bcast_heartbeat); a follower
 * whose log lacks that entry takes no commit from it (its entries there
 * may be older ones the cut brought back) and answers with a rejecting
 * HEARTBEAT_RESP holding its last index and commit (handle_heartbeat); the
 * leader lowers match to that commit and probes from the follower's end
 * (lost_tail). A heartbeat is sent after the ack that set the match it
 * carries, so the answer is proof, not a reordered old message; answers to
 * rounds sent before an earlier lowering are ignored (regress_round). A
 * rejected APPEND at prev <= match is never acted on: it may be stale, and
 * re-probing at once on it was a message loop with such a follower.
 *
 * What a follower that lost acknowledged entries can still break: a
 * committed entry may have been held by a bare majority including it; if
 * the other holders are down, a candidate lacking the entry can win with
 * its vote (its shortened log looks up to date) and the entry is lost.
 * Guard (handle_vote): while a node's log ends below the highest commit
 * index it has heard from a leader (commit_heard: a lagging or a
 * shortened log), it refuses any candidate whose last index is below that
 * commit index — no legitimate leader lacks a committed entry (§5.4.1), so
 * this refuses no candidate Raft needs. It closes the window once the node
 * has heard from a leader after restarting; before that it knows nothing
 * and cannot help. A lost vote (HARD_STATE cut) can likewise let it vote twice
 * in a term; nothing in raft can detect that.
 *
 * Persistence contract (raft.h): entries and hard state of a ready are made
 * durable by the caller before msgs_after go out; a leader's replication
 * messages may go first because its term and vote are already durable and
 * it counts itself only on raft_advance.
 */
#include "raft.h"

#include <assert.h>
#include <string.h>

#include "inbox/endian.h"

#define PEERS_MAX (INBOX_RAFT_VOTERS_MAX + INBOX_RAFT_LEARNERS_MAX)
#define ROUND_RING 64u
#define ARENA_BLOCK_BYTES (64u * 1024u)

enum pr_state { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };

struct progress {
    uint64_t id;
    uint64_t match;
    uint64_t next;
    uint32_t state;
    bool probe_sent; /* PROBE: one APPEND out, wait for its answer */
    bool recent_active;
    uint64_t acked_round;
    /* Lost tail (I9): heartbeat rounds up to this one were sent before the
     * last time match was lowered; how many times it was. */
    uint64_t regress_round;
    uint64_t regressions_count;
    /* REPLICATE: ring of in-flight APPENDs (last index, bytes). */
    uint32_t infl_start;
    uint32_t infl_count;
    uint64_t infl_bytes;
    uint64_t infl_index[INBOX_RAFT_INFLIGHT_MSGS_MAX];
    uint32_t infl_size[INBOX_RAFT_INFLIGHT_MSGS_MAX];
    /* SNAPSHOT: which snapshot, next offset the follower wants. */
    struct raft_snapshot_meta snap;
    uint64_t snap_offset;
    uint32_t snap_wait_ticks;
};

struct pending_read {
    uint64_t ctx;
    uint64_t index;
    uint64_t round; /* 0: waits for the next heartbeat round */
};

struct conf_undo {
    uint64_t index;
    struct raft_membership before;
};

struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t used;
};

struct qmsg {
    struct raft_msg m;
    bool now; /* may be sent before persisting */
};

struct raft {
    struct raft_options o;
    struct raft_storage *st;
    uint64_t id;
    uint64_t rng;

    /* Persistent state (§5.1 Figure 2) and what the caller has persisted. */
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
    struct raft_hard_state persisted_hs;
    /* The highest commit index heard from a leader, possibly beyond our
     * log (volatile: the vote guard in handle_vote). */
    uint64_t commit_heard;
    /* Lost-tail repairs made as leader (lost_tail), and the latest's
     * follower: raft_regressions. */
    uint64_t regressions_total;
    uint64_t regressed_last;

    enum raft_role role;
    uint64_t leader;
    uint64_t ticks;
    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;

    /* Log: stable entries in storage up to stable_last; unstable in memory
     * from unstable_offset (which may shadow stable ones being replaced). */
    uint64_t stable_last;
    uint64_t unstable_offset;
    struct raft_entry *unstable;
    size_t unstable_count;
    size_t unstable_cap;
    bool snap_pending; /* snapshot to install in this ready */
    struct raft_snapshot_meta pending_snap;
    uint64_t applied;

    /* Membership (I6). */
    struct raft_membership memb;
    struct conf_undo conf_stack[INBOX_RAFT_CONF_PENDING_MAX];
    uint32_t conf_count;

    /* Peers (self included); votes during an election. */
    struct progress pr[PEERS_MAX];
    uint32_t pr_count;
    uint64_t votes_granted[PEERS_MAX];
    uint64_t votes_rejected[PEERS_MAX];
    uint32_t granted_count;
    uint32_t rejected_count;

    /* Leader bookkeeping. */
    uint64_t uncommitted_bytes;
    uint64_t transferee;
    uint32_t transfer_elapsed;
    bool lease_disabled;
    uint64_t round;
    uint64_t round_tick[ROUND_RING];
    uint64_t lease_until;
    bool read_round_needed;
    /* Sends deferred to the next raft_ready, so everything proposed or
     * committed in one cycle travels in one APPEND per follower. */
    bool bcast_pending;
    bool bcast_empty_pending;
    struct pending_read reads[INBOX_RAFT_READS_PENDING_MAX];
    uint32_t reads_count;
    struct raft_read_state reads_ready[INBOX_RAFT_READS_PENDING_MAX];
    uint32_t reads_ready_count;

    /* Incoming snapshot (follower). */
    struct raft_snapshot_meta in_snap;
    uint64_t in_offset;
    bool chunk_queued;
    struct raft_snapshot_chunk chunk;

    /* Outgoing messages, and per-cycle memory, both freed on advance. */
    struct qmsg *q;
    size_t q_count;
    size_t q_cap;
    struct arena_block *arena;
    bool in_ready;
    uint64_t ready_applied_to;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t rng_next(struct raft *r)
{
    /* splitmix64: deterministic from the seed, no global state. */
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *ralloc(struct raft *r, size_t n)
{
    return r->o.allocator.alloc(r->o.allocator.ctx, n);
}

static void rfree(struct raft *r, void *p, size_t n)
{
    if (p)
        r->o.allocator.free(r->o.allocator.ctx, p, n);
}

static void *arena_alloc(struct raft *r, size_t n)
{
    n = (n + 15u) & ~(size_t)15u;
    struct arena_block *b = r->arena;
    if (!b || b->size - b->used < n) {
        size_t size = sizeof(*b) + (n + sizeof(*b) + 16u > ARENA_BLOCK_BYTES
                                        ? n + sizeof(*b) + 16u
                                        : ARENA_BLOCK_BYTES);
        b = ralloc(r, size);
        if (!b)
            return NULL;
        b->next = r->arena;
        b->size = size;
        b->used = (sizeof(*b) + 15u) & ~(size_t)15u;
        r->arena = b;
    }
    void *p = (char *)b + b->used;
    b->used += n;
    return p;
}

/* Free every block but one of the standard size, kept for the next cycle
 * (hot path: no malloc per ready once warm). */
static void arena_reset(struct raft *r, bool keep)
{
    struct arena_block *kept = NULL;
    while (r->arena) {
        struct arena_block *b = r->arena;
        r->arena = b->next;
        if (keep && !kept && b->size == sizeof(*b) + ARENA_BLOCK_BYTES) {
            kept = b;
            continue;
        }
        rfree(r, b, b->size);
    }
    if (kept) {
        kept->next = NULL;
        kept->used = (sizeof(*kept) + 15u) & ~(size_t)15u;
        r->arena = kept;
    }
}

bool raft_membership_is_voter(const struct raft_membership *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->voters_count; i++)
        if (m->voters[i] == id)
            return true;
    return false;
}

bool raft_membership_is_learner(const struct raft_membership *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->learners_count; i++)
        if (m->learners[i] == id)
            return true;
    return false;
}

static void ids_remove(uint64_t *ids, uint32_t *count, uint64_t id)
{
    for (uint32_t i = 0; i < *count; i++) {
        if (ids[i] == id) {
            ids[i] = ids[*count - 1];
            (*count)--;
            return;
        }
    }
}

int raft_membership_apply(struct raft_membership *m,
                          const struct raft_conf_change *cc)
{
    uint64_t id = cc->node_id;
    bool voter = raft_membership_is_voter(m, id);
    bool learner = raft_membership_is_learner(m, id);
    if (id == RAFT_NONE)
        return INBOX_EINVAL;
    switch (cc->op) {
    case RAFT_CONF_ADD_LEARNER:
        if (voter || learner || m->learners_count >= INBOX_RAFT_LEARNERS_MAX)
            return INBOX_EINVAL;
        m->learners[m->learners_count++] = id;
        return 0;
    case RAFT_CONF_ADD_VOTER:
    case RAFT_CONF_PROMOTE:
        if (voter || (cc->op == RAFT_CONF_PROMOTE && !learner) ||
            (cc->op == RAFT_CONF_ADD_VOTER && learner) ||
            m->voters_count >= INBOX_RAFT_VOTERS_MAX)
            return INBOX_EINVAL;
        if (learner)
            ids_remove(m->learners, &m->learners_count, id);
        m->voters[m->voters_count++] = id;
        return 0;
    case RAFT_CONF_REMOVE:
        if (voter && m->voters_count <= 1)
            return INBOX_EINVAL; /* never remove the last voter */
        if (voter)
            ids_remove(m->voters, &m->voters_count, id);
        else if (learner)
            ids_remove(m->learners, &m->learners_count, id);
        else
            return INBOX_EINVAL;
        return 0;
    default:
        return INBOX_EINVAL;
    }
}

void raft_conf_change_encode(const struct raft_conf_change *cc,
                             uint8_t out[RAFT_CONF_CHANGE_BYTES])
{
    put_u32le(out, cc->op);
    put_u64le(out + 4, cc->node_id);
}

int raft_conf_change_decode(const uint8_t *data, size_t len,
                            struct raft_conf_change *out)
{
    if (len != RAFT_CONF_CHANGE_BYTES)
        return INBOX_EINVAL;
    out->op = get_u32le(data);
    out->node_id = get_u64le(data + 4);
    return 0;
}

static uint32_t quorum(const struct raft *r)
{
    return r->memb.voters_count / 2u + 1u;
}

static bool is_voter(const struct raft *r, uint64_t id)
{
    return raft_membership_is_voter(&r->memb, id);
}

static struct progress *pr_find(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->pr_count; i++)
        if (r->pr[i].id == id)
            return &r->pr[i];
    return NULL;
}

/* ---- the log ------------------------------------------------------------ */

static uint64_t last_index(const struct raft *r)
{
    return r->unstable_offset + r->unstable_count - 1u;
}

/* Term of entry i: 0 on success, INBOX_ECOMPACTED / INBOX_EUNAVAILABLE. */
static int term_of(const struct raft *r, uint64_t i, uint64_t *t)
{
    if (i >= r->unstable_offset) {
        if (i - r->unstable_offset >= r->unstable_count)
            return INBOX_EUNAVAILABLE;
        *t = r->unstable[i - r->unstable_offset].term;
        return 0;
    }
    if (r->snap_pending) {
        if (i == r->pending_snap.index) {
            *t = r->pending_snap.term;
            return 0;
        }
        return INBOX_ECOMPACTED;
    }
    if (i > r->stable_last)
        return INBOX_EUNAVAILABLE;
    return r->st->term(r->st->ctx, i, t);
}

static uint64_t term_or0(const struct raft *r, uint64_t i)
{
    uint64_t t = 0;
    if (term_of(r, i, &t) != 0)
        return 0;
    return t;
}

static uint64_t last_term(const struct raft *r)
{
    return term_or0(r, last_index(r));
}

/* Dissertation §5.4.1: is (index, term) at least as up-to-date as ours? */
static bool log_up_to_date(const struct raft *r, uint64_t index, uint64_t t)
{
    uint64_t lt = last_term(r);
    return t > lt || (t == lt && index >= last_index(r));
}

static void sync_progress(struct raft *r);

static void conf_truncate(struct raft *r, uint64_t from)
{
    bool changed = false;
    while (r->conf_count > 0 &&
           r->conf_stack[r->conf_count - 1].index >= from) {
        r->conf_count--;
        r->memb = r->conf_stack[r->conf_count].before;
        changed = true;
    }
    if (changed)
        sync_progress(r);
}

/* Record a conf entry just appended at index (I6). */
static int conf_appended(struct raft *r, const struct raft_entry *e)
{
    struct raft_conf_change cc;
    if (r->conf_count >= INBOX_RAFT_CONF_PENDING_MAX)
        return INBOX_ERANGE;
    r->conf_stack[r->conf_count].index = e->index;
    r->conf_stack[r->conf_count].before = r->memb;
    r->conf_count++;
    /* A malformed or inapplicable change is a no-op on every replica alike,
     * since all of them apply the same log prefix. */
    if (raft_conf_change_decode(e->data, e->len, &cc) == 0)
        (void)raft_membership_apply(&r->memb, &cc);
    return 0;
}

/* Unstable entry data lives in the per-cycle arena: every unstable entry is
 * persisted (or discarded) by the next raft_advance, which frees both. */
static void unstable_free_from(struct raft *r, size_t k)
{
    r->unstable_count = k;
}

/* Drop every entry at index >= from (§5.3: "delete the existing entry and
 * all that follow it"). */
static void log_truncate(struct raft *r, uint64_t from)
{
    assert(from > r->commit);
    if (from >= r->unstable_offset) {
        unstable_free_from(r, (size_t)(from - r->unstable_offset));
    } else {
        unstable_free_from(r, 0);
        r->unstable_offset = from; /* shadows stable entries >= from */
    }
    conf_truncate(r, from);
}

/* Room for extra more unstable entries, so appends cannot fail halfway. */
static int unstable_reserve(struct raft *r, size_t extra)
{
    if (r->unstable_count + extra <= r->unstable_cap)
        return 0;
    size_t cap = r->unstable_cap ? r->unstable_cap : 64u;
    while (cap < r->unstable_count + extra)
        cap *= 2u;
    struct raft_entry *n = ralloc(r, cap * sizeof(*n));
    if (!n)
        return INBOX_ENOMEM;
    if (r->unstable_count)
        memcpy(n, r->unstable, r->unstable_count * sizeof(*n));
    rfree(r, r->unstable, r->unstable_cap * sizeof(*n));
    r->unstable = n;
    r->unstable_cap = cap;
    return 0;
}

/* Copy len bytes into the cycle's arena (NULL with len 0 is fine). */
static int arena_copy(struct raft *r, const void *data, uint32_t len,
                      const uint8_t **out)
{
    *out = NULL;
    if (len == 0)
        return 0;
    uint8_t *p = arena_alloc(r, len);
    if (!p)
        return INBOX_ENOMEM;
    memcpy(p, data, len);
    *out = p;
    return 0;
}

/* Append one entry at last_index()+1; data must already live in the arena
 * and a slot must be reserved (unstable_reserve). Cannot fail. */
static void log_append(struct raft *r, uint64_t term, uint32_t type,
                       const uint8_t *data, uint32_t len)
{
    assert(r->unstable_count < r->unstable_cap);
    struct raft_entry *e = &r->unstable[r->unstable_count++];
    e->term = term;
    e->index = r->unstable_offset + r->unstable_count - 1u;
    e->type = type;
    e->len = len;
    e->data = data;
    if (type == RAFT_ENTRY_CONF && conf_appended(r, e) == 0)
        sync_progress(r);
}

/* Entries [lo, hi) with at most max_bytes of data and count_max entries
 * (at least one), into an arena array. */
static int log_slice(struct raft *r, uint64_t lo, uint64_t hi,
                     uint64_t max_bytes, size_t count_max,
                     struct raft_entry **out, size_t *n)
{
    *n = 0;
    *out = NULL;
    if (lo >= hi)
        return 0;
    size_t want = (size_t)(hi - lo);
    if (want > count_max)
        want = count_max;
    struct raft_entry *a = arena_alloc(r, want * sizeof(*a));
    if (!a)
        return INBOX_ENOMEM;
    size_t k = 0;
    uint64_t bytes = 0;
    if (lo < r->unstable_offset) {
        if (r->snap_pending)
            return INBOX_ECOMPACTED;
        uint64_t shi = hi < r->unstable_offset ? hi : r->unstable_offset;
        if (shi > lo + want)
            shi = lo + want;
        int rc = r->st->entries(r->st->ctx, lo, shi, max_bytes, a, want, &k);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < k; j++)
            bytes += a[j].len;
        if (lo + k < shi) { /* byte bound hit inside storage */
            *out = a;
            *n = k;
            return 0;
        }
    }
    for (uint64_t i = lo + k; i < hi && k < want; i++) {
        const struct raft_entry *e = &r->unstable[i - r->unstable_offset];
        if (k > 0 && bytes + e->len > max_bytes)
            break;
        a[k++] = *e;
        bytes += e->len;
    }
    *out = a;
    *n = k;
    return 0;
}

/* Largest index <= index whose term is <= t (fast backtracking; the idea of
 * §5.3's "the follower can include the term of the conflicting entry"). */
static uint64_t find_conflict_by_term(const struct raft *r, uint64_t index,
                                      uint64_t t)
{
    uint64_t li = last_index(r);
    if (index > li)
        index = li;
    for (; index > 0; index--) {
        uint64_t it;
        if (term_of(r, index, &it) != 0)
            break; /* compacted: everything below is committed */
        if (it <= t)
            break;
    }
    return index;
}

/* ---- messages ----------------------------------------------------------- */

static bool sent_before_persist(const struct raft *r, uint32_t type)
{
    if (r->role != RAFT_LEADER)
        return false;
    return type == RAFT_MSG_APPEND || type == RAFT_MSG_HEARTBEAT ||
           type == RAFT_MSG_SNAPSHOT || type == RAFT_MSG_TIMEOUT_NOW;
}

/* Queue m. A message that cannot be queued is dropped: the protocol treats
 * that exactly like a network loss. */
static void send(struct raft *r, struct raft_msg *m)
{
    m->group = r->o.group;
    m->from = r->id;
    if (m->term == 0)
        m->term = r->term;
    if (r->q_count == r->q_cap) {
        size_t cap = r->q_cap ? r->q_cap * 2u : 32u;
        struct qmsg *n = ralloc(r, cap * sizeof(*n));
        if (!n)
            return;
        if (r->q_count)
            memcpy(n, r->q, r->q_count * sizeof(*n));
        rfree(r, r->q, r->q_cap * sizeof(*n));
        r->q = n;
        r->q_cap = cap;
    }
    r->q[r->q_count].m = *m;
    r->q[r->q_count].now = sent_before_persist(r, m->type);
    r->q_count++;
}

/* On a term change, messages stamped with the old term are useless to their
 * receivers (they ignore lower terms); drop them. */
static void purge_old_msgs(struct raft *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->q_count; i++)
        if (r->q[i].m.term >= r->term)
            r->q[k++] = r->q[i];
    r->q_count = k;
}

/* ---- role transitions --------------------------------------------------- */

static void reset_randomized_timeout(struct raft *r)
{
    r->randomized_timeout =
        r->o.election_ticks + (uint32_t)(rng_next(r) % r->o.election_ticks);
}

static void infl_reset(struct progress *p)
{
    p->infl_start = 0;
    p->infl_count = 0;
    p->infl_bytes = 0;
}

static void pr_reset(struct raft *r, struct progress *p)
{
    p->match = 0;
    p->next = last_index(r) + 1u;
    p->state = PR_PROBE;
    p->probe_sent = false;
    p->recent_active = false;
    p->acked_round = 0;
    p->regress_round = r->round; /* answers to earlier rounds: not ours */
    p->snap_wait_ticks = 0;
    infl_reset(p);
    if (p->id == r->id)
        p->match =
            r->stable_last < last_index(r) ? r->stable_last : last_index(r);
}

/* Make pr[] hold exactly the members (self always included). */
static void sync_progress(struct raft *r)
{
    struct progress old[PEERS_MAX];
    uint32_t old_count = r->pr_count;
    memcpy(old, r->pr, old_count * sizeof(old[0]));
    uint64_t ids[PEERS_MAX + 1];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->memb.voters_count; i++)
        ids[n++] = r->memb.voters[i];
    for (uint32_t i = 0; i < r->memb.learners_count; i++)
        ids[n++] = r->memb.learners[i];
    if (!is_voter(r, r->id) && !raft_membership_is_learner(&r->memb, r->id))
        ids[n++] = r->id;
    r->pr_count = 0;
    for (uint32_t i = 0; i < n && r->pr_count < PEERS_MAX; i++) {
        struct progress *p = &r->pr[r->pr_count++];
        bool found = false;
        for (uint32_t j = 0; j < old_count; j++) {
            if (old[j].id == ids[i]) {
                *p = old[j];
                found = true;
                break;
            }
        }
        if (!found) {
            memset(p, 0, sizeof(*p));
            p->id = ids[i];
            pr_reset(r, p);
        }
    }
}

static void drop_reads(struct raft *r)
{
    r->reads_count = 0;
    r->read_round_needed = false;
}

static void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    if (term != r->term) {
        assert(term > r->term);
        r->term = term;
        r->vote = RAFT_NONE;
        purge_old_msgs(r);
    }
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->transferee = RAFT_NONE;
    r->uncommitted_bytes = 0;
    r->lease_until = 0;
    r->bcast_pending = false;
    r->bcast_empty_pending = false;
    drop_reads(r);
    reset_randomized_timeout(r);
}

static void send_vote_requests(struct raft *r, uint32_t type, uint64_t term,
                               bool transfer)
{
    for (uint32_t i = 0; i < r->memb.voters_count; i++) {
        uint64_t to = r->memb.voters[i];
        if (to == r->id)
            continue;
        struct raft_msg m = {0};
        m.type = type;
        m.to = to;
        m.term = term;
        m.index = last_index(r);
        m.log_term = last_term(r);
        m.flags = transfer ? RAFT_MSG_F_TRANSFER : 0u;
        send(r, &m);
    }
}

static void votes_reset(struct raft *r)
{
    r->granted_count = 0;
    r->rejected_count = 0;
}

/* Count a vote once per voter; returns +1 won, -1 lost, 0 pending. */
static int votes_record(struct raft *r, uint64_t from, bool granted)
{
    for (uint32_t i = 0; i < r->granted_count; i++)
        if (r->votes_granted[i] == from)
            goto tally;
    for (uint32_t i = 0; i < r->rejected_count; i++)
        if (r->votes_rejected[i] == from)
            goto tally;
    if (!is_voter(r, from))
        goto tally;
    if (granted)
        r->votes_granted[r->granted_count++] = from;
    else
        r->votes_rejected[r->rejected_count++] = from;
tally:
    if (r->granted_count >= quorum(r))
        return 1;
    if (r->rejected_count >= quorum(r))
        return -1;
    return 0;
}

static void become_leader(struct raft *r);

/* Dissertation §9.6: ask first whether we could win, without disturbing
 * anyone's term. */
static void become_pre_candidate(struct raft *r)
{
    r->role = RAFT_PRE_CANDIDATE;
    r->leader = RAFT_NONE;
    r->election_elapsed = 0;
    reset_randomized_timeout(r);
    votes_reset(r);
    send_vote_requests(r, RAFT_MSG_PRE_VOTE, r->term + 1u, false);
}

/* §5.2: increment the term, vote for self, ask the others. */
static void become_candidate(struct raft *r, bool transfer)
{
    become_follower(r, r->term + 1u, RAFT_NONE);
    r->role = RAFT_CANDIDATE;
    r->vote = r->id;
    votes_reset(r);
    if (votes_record(r, r->id, true) > 0) {
        become_leader(r);
        return;
    }
    send_vote_requests(r, RAFT_MSG_VOTE, r->term, transfer);
}

static void campaign(struct raft *r, bool transfer)
{
    if (!is_voter(r, r->id))
        return;
    if (r->o.pre_vote && !transfer) {
        become_pre_candidate(r);
        if (votes_record(r, r->id, true) > 0)
            become_candidate(r, false);
        return;
    }
    become_candidate(r, transfer);
}

static void bcast_append(struct raft *r, bool send_if_empty);

/* §5.2/§8: a new leader appends a no-op of its term so it can commit (and
 * so learn the commit index) — entries of older terms commit only with it. */
static void become_leader(struct raft *r)
{
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->transferee = RAFT_NONE;
    r->lease_disabled = false;
    r->lease_until = 0;
    r->uncommitted_bytes = 0;
    for (uint32_t i = 0; i < r->pr_count; i++)
        pr_reset(r, &r->pr[i]);
    if (unstable_reserve(r, 1) != 0) {
        /* Without the no-op we cannot commit; let the election rerun. */
        become_follower(r, r->term, RAFT_NONE);
        return;
    }
    log_append(r, r->term, RAFT_ENTRY_NORMAL, NULL, 0);
    bcast_append(r, true);
}

/* ---- replication (leader) ----------------------------------------------- */

static bool infl_full(const struct raft *r, const struct progress *p)
{
    return p->infl_count >= r->o.inflight_msgs_max ||
           p->infl_bytes >= r->o.inflight_bytes_max;
}

static void infl_add(struct progress *p, uint64_t index, uint32_t bytes)
{
    uint32_t k = (p->infl_start + p->infl_count) % INBOX_RAFT_INFLIGHT_MSGS_MAX;
    p->infl_index[k] = index;
    p->infl_size[k] = bytes;
    p->infl_count++;
    p->infl_bytes += bytes;
}

static void infl_free_to(struct progress *p, uint64_t index)
{
    while (p->infl_count > 0 && p->infl_index[p->infl_start] <= index) {
        p->infl_bytes -= p->infl_size[p->infl_start];
        p->infl_start = (p->infl_start + 1u) % INBOX_RAFT_INFLIGHT_MSGS_MAX;
        p->infl_count--;
    }
}

static void become_probe(struct raft *r, struct progress *p)
{
    p->state = PR_PROBE;
    p->probe_sent = false;
    p->next = p->match + 1u;
    infl_reset(p);
}

static void send_snapshot_chunk(struct raft *r, struct progress *p)
{
    const uint8_t *data = NULL;
    uint32_t len = 0;
    int rc = 0;
    if (p->snap.data_bytes > 0)
        rc = r->st->snapshot_chunk(r->st->ctx, p->snap.index, p->snap_offset,
                                   r->o.snapshot_chunk_bytes, &data, &len);
    p->snap_wait_ticks = 0;
    if (rc != 0) {
        become_probe(r, p); /* snapshot replaced meanwhile: start over */
        return;
    }
    struct raft_msg m = {0};
    m.type = RAFT_MSG_SNAPSHOT;
    m.to = p->id;
    m.index = p->snap_offset;
    m.snap = p->snap;
    m.chunk = data;
    m.chunk_len = len;
    if (p->snap_offset + len >= p->snap.data_bytes)
        m.flags = RAFT_MSG_F_LAST;
    send(r, &m);
}

/* §7: the entries the follower needs are compacted away. */
static void start_snapshot(struct raft *r, struct progress *p)
{
    p->state = PR_SNAPSHOT;
    infl_reset(p);
    r->st->snapshot(r->st->ctx, &p->snap);
    p->snap_offset = 0;
    send_snapshot_chunk(r, p);
}

/* Send one APPEND to p if its state allows; true if one was sent. */
static bool send_append(struct raft *r, struct progress *p, bool send_if_empty)
{
    if (p->id == r->id || p->state == PR_SNAPSHOT)
        return false;
    if (p->state == PR_PROBE && p->probe_sent)
        return false;
    if (p->state == PR_REPLICATE && infl_full(r, p))
        return false;
    uint64_t li = last_index(r);
    if (p->next > li + 1u)
        p->next = li + 1u;
    uint64_t prev = p->next - 1u;
    uint64_t prev_term = 0;
    struct raft_entry *ents = NULL;
    size_t n = 0;
    int rc = term_of(r, prev, &prev_term);
    if (rc == 0)
        rc = log_slice(r, p->next, li + 1u, r->o.msg_bytes_max,
                       r->o.msg_entries_max, &ents, &n);
    if (rc == INBOX_ECOMPACTED) {
        start_snapshot(r, p);
        return true;
    }
    if (rc != 0)
        return false;
    if (n == 0 && !send_if_empty && p->state == PR_REPLICATE)
        return false;
    struct raft_msg m = {0};
    m.type = RAFT_MSG_APPEND;
    m.to = p->id;
    m.index = prev;
    m.log_term = prev_term;
    m.commit = r->commit;
    m.entries = ents;
    m.entries_count = (uint32_t)n;
    send(r, &m);
    if (p->state == PR_REPLICATE && n > 0) {
        uint32_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += ents[i].len;
        p->next = ents[n - 1].index + 1u;
        infl_add(p, ents[n - 1].index, bytes);
    } else if (p->state == PR_PROBE) {
        p->probe_sent = true;
    }
    return true;
}

/* Pipelining: keep sending while the window has room. */
static void send_appends(struct raft *r, struct progress *p, bool if_empty)
{
    if (!send_append(r, p, if_empty))
        return;
    while (p->state == PR_REPLICATE && p->next <= last_index(r) &&
           send_append(r, p, false))
        ;
}

static void bcast_append(struct raft *r, bool send_if_empty)
{
    for (uint32_t i = 0; i < r->pr_count; i++)
        send_appends(r, &r->pr[i], send_if_empty);
}

static void bcast_heartbeat(struct raft *r)
{
    r->round++;
    r->round_tick[r->round % ROUND_RING] = r->ticks;
    struct progress *self = pr_find(r, r->id);
    if (self)
        self->acked_round = r->round;
    for (uint32_t i = 0; i < r->pr_count; i++) {
        struct progress *p = &r->pr[i];
        if (p->id == r->id)
            continue;
        struct raft_msg m = {0};
        m.type = RAFT_MSG_HEARTBEAT;
        m.to = p->id;
        m.commit = p->match < r->commit ? p->match : r->commit;
        m.context = r->round;
        /* Lost tail: the follower checks it still holds its match. */
        m.index = p->match;
        m.log_term = term_or0(r, p->match);
        send(r, &m);
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void sort_desc(uint64_t *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) /* n <= 7: insertion sort */
        for (uint32_t j = i; j > 0 && cmp_desc(&v[j - 1], &v[j]) > 0; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

/* The value a quorum of voters has reached: the quorum-th largest. */
static uint64_t quorum_value(struct raft *r, bool rounds)
{
    uint64_t v[INBOX_RAFT_VOTERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->memb.voters_count; i++) {
        struct progress *p = pr_find(r, r->memb.voters[i]);
        v[n++] = p ? (rounds ? p->acked_round : p->match) : 0;
    }
    if (n == 0)
        return 0;
    sort_desc(v, n);
    return v[quorum(r) - 1u];
}

static void commit_advanced(struct raft *r)
{
    /* Conf entries at or below commit are committed: forget their undo. */
    uint32_t k = 0;
    while (k < r->conf_count && r->conf_stack[k].index <= r->commit)
        k++;
    if (k > 0) {
        memmove(r->conf_stack, r->conf_stack + k,
                (r->conf_count - k) * sizeof(r->conf_stack[0]));
        r->conf_count -= k;
    }
}

static void commit_to(struct raft *r, uint64_t index)
{
    if (index > r->commit) {
        assert(index <= last_index(r));
        r->commit = index;
        commit_advanced(r);
    }
}

#ifdef RAFT_PLANT_BUG_COMMIT_OLD_TERM
#define COMMIT_NEEDS_CURRENT_TERM 0
#else
#define COMMIT_NEEDS_CURRENT_TERM 1
#endif

/* §5.3/§5.4.2: commit the highest index a quorum has persisted, but only if
 * that entry is of the current term (Figure 8); earlier entries then commit
 * indirectly by the Log Matching Property. */
static bool maybe_commit(struct raft *r)
{
    uint64_t n = quorum_value(r, false);
    if (n <= r->commit)
        return false;
    if (COMMIT_NEEDS_CURRENT_TERM && term_or0(r, n) != r->term)
        return false;
    commit_to(r, n);
    /* Dissertation §4.2.2: a leader removed from the membership steps down
     * once the entry removing it is committed. */
    if (!is_voter(r, r->id) && r->conf_count == 0)
        become_follower(r, r->term, RAFT_NONE);
    return true;
}

static bool committed_in_term(const struct raft *r)
{
    return term_or0(r, r->commit) == r->term;
}

/* ---- reads (§6.4) ------------------------------------------------------- */

/* Queue a confirmed read for the next ready batch. False when the batch is
 * full: the caller must keep the read (or refuse it) — a read accepted by
 * raft_read_index is never dropped. */
static bool read_ready(struct raft *r, uint64_t ctx, uint64_t index)
{
    if (r->reads_ready_count >= INBOX_RAFT_READS_PENDING_MAX)
        return false;
    r->reads_ready[r->reads_ready_count].ctx = ctx;
    r->reads_ready[r->reads_ready_count].index = index;
    r->reads_ready_count++;
    return true;
}

/* A heartbeat round confirmed by a quorum: release its reads, extend the
 * lease (§6.4.1) from the moment the round was sent. */
static void rounds_acked(struct raft *r)
{
    uint64_t q = quorum_value(r, true);
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->reads_count; i++) {
        /* Confirmed reads that do not fit this ready batch stay here and
         * are released by raft_advance, once the batch is consumed. */
        if (r->reads[i].round != 0 && r->reads[i].round <= q &&
            read_ready(r, r->reads[i].ctx, r->reads[i].index))
            continue;
        r->reads[k++] = r->reads[i];
    }
    r->reads_count = k;
    if (q > 0 && q + ROUND_RING > r->round) {
        uint64_t until = r->round_tick[q % ROUND_RING] + r->o.election_ticks -
                         r->o.lease_drift_ticks;
        if (until > r->lease_until)
            r->lease_until = until;
    }
}

static bool lease_valid(const struct raft *r)
{
    return r->o.lease_reads && r->o.check_quorum && !r->lease_disabled &&
           r->transferee == RAFT_NONE && r->ticks < r->lease_until;
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
    assert(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return INBOX_ENOT_LEADER;
    /* §6.4 step 1: the commit index is only known to be current once an
     * entry of this term is committed. */
    if (!committed_in_term(r))
        return INBOX_ESTALE_READ;
    if ((r->memb.voters_count == 1 && is_voter(r, r->id)) || lease_valid(r))
        return read_ready(r, ctx, r->commit) ? 0 : INBOX_EBUSY;
    if (r->reads_count >= INBOX_RAFT_READS_PENDING_MAX)
        return INBOX_EBUSY;
    r->reads[r->reads_count].ctx = ctx;
    r->reads[r->reads_count].index = r->commit;
    r->reads[r->reads_count].round = 0;
    r->reads_count++;
#ifdef RAFT_PLANT_BUG_READ_NO_HEARTBEAT
    /* Planted bug 4: serve from local state with no quorum round. */
    r->reads_count--;
    (void)read_ready(r, ctx, r->commit);
#else
    r->read_round_needed = true;
#endif
    return 0;
}

/* Start one heartbeat round for every read registered since the last. */
static void start_read_round(struct raft *r)
{
    if (!r->read_round_needed)
        return;
    r->read_round_needed = false;
    bcast_heartbeat(r);
    for (uint32_t i = 0; i < r->reads_count; i++)
        if (r->reads[i].round == 0)
            r->reads[i].round = r->round;
}

/* ---- ticks -------------------------------------------------------------- */

static bool quorum_active(struct raft *r)
{
    uint32_t active = 0;
    for (uint32_t i = 0; i < r->memb.voters_count; i++) {
        uint64_t id = r->memb.voters[i];
        struct progress *p = pr_find(r, id);
        if (id == r->id || (p && p->recent_active))
            active++;
    }
    for (uint32_t i = 0; i < r->pr_count; i++)
        r->pr[i].recent_active = false;
    return active >= quorum(r);
}

static void tick_leader(struct raft *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->o.election_ticks) {
        r->election_elapsed = 0;
        /* Dissertation §6.2: a leader that has not heard from a quorum for
         * an election timeout steps down. */
        if (r->o.check_quorum && !quorum_active(r)) {
            become_follower(r, r->term, RAFT_NONE);
            return;
        }
        r->transferee = RAFT_NONE; /* §3.10: abort a stalled transfer */
    }
    for (uint32_t i = 0; i < r->pr_count; i++) {
        struct progress *p = &r->pr[i];
        if (p->state == PR_SNAPSHOT &&
            ++p->snap_wait_ticks >= 2u * r->o.heartbeat_ticks)
            send_snapshot_chunk(r, p); /* lost chunk: resend */
    }
    if (r->heartbeat_elapsed >= r->o.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        bcast_heartbeat(r);
    }
}

void raft_tick(struct raft *r)
{
    assert(!r->in_ready);
    r->ticks++;
    if (r->role == RAFT_LEADER) {
        tick_leader(r);
        return;
    }
    if (r->election_elapsed < UINT32_MAX)
        r->election_elapsed++;
    /* §5.2: no word from a leader for an election timeout: campaign. A node
     * that may not campaign (learner, removed) only forgets the leader, and
     * its elapsed time keeps growing so it stops shielding that leader
     * (in_lease) from elections. */
    if (r->election_elapsed >= r->randomized_timeout) {
        if (!is_voter(r, r->id)) {
            r->leader = RAFT_NONE;
            return;
        }
        r->election_elapsed = 0;
        campaign(r, false);
    }
}

/* ---- message handlers --------------------------------------------------- */

static void reply(struct raft *r, const struct raft_msg *req, uint32_t type,
                  struct raft_msg *m)
{
    m->type = type;
    m->to = req->from;
    send(r, m);
}

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PRE_VOTE;
    /* §5.2: one vote per term, first come first served; a pre-vote for a
     * future term binds nothing. */
    bool can_vote = r->vote == m->from ||
                    (r->vote == RAFT_NONE && r->leader == RAFT_NONE) ||
                    (pre && m->term > r->term);
#ifdef RAFT_PLANT_BUG_VOTE_NO_UP_TO_DATE
    bool up_to_date = true || log_up_to_date(r, m->index, m->log_term);
#else
    /* §5.4.1: only a candidate whose log is at least as up-to-date. */
    bool up_to_date = log_up_to_date(r, m->index, m->log_term);
    /* Lost tail guard (design note): while our log ends below a commit
     * index a leader told us of, our own log is no yardstick; a candidate
     * whose log ends below that index lacks a committed entry. (Once our
     * log reaches it again, the rule above covers this.) */
    if (r->commit_heard > last_index(r) && m->index < r->commit_heard)
        up_to_date = false;
#endif
    struct raft_msg resp = {0};
    if (can_vote && up_to_date) {
        resp.term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
    } else {
        resp.term = r->term;
        resp.flags = RAFT_MSG_F_REJECT;
    }
    reply(r, m, pre ? RAFT_MSG_PRE_VOTE_RESP : RAFT_MSG_VOTE_RESP, &resp);
}

static void handle_vote_resp(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PRE_VOTE_RESP;
    if (pre ? r->role != RAFT_PRE_CANDIDATE : r->role != RAFT_CANDIDATE)
        return;
    if (pre && m->term != r->term + 1u && !(m->flags & RAFT_MSG_F_REJECT))
        return;
    int res = votes_record(r, m->from, !(m->flags & RAFT_MSG_F_REJECT));
    if (res > 0) {
        if (pre)
            become_candidate(r, false);
        else
            become_leader(r);
    } else if (res < 0) {
        become_follower(r, r->term, RAFT_NONE);
    }
}

/* §5.3 AppendEntries receiver rules 1-5. */
static void handle_append(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg resp = {0};
    if (m->index < r->commit) {
        /* Everything up to our commit matches any leader's log (§5.4). */
        resp.index = r->commit;
        reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        return;
    }
    uint64_t t = 0;
    if (term_of(r, m->index, &t) != 0 || t != m->log_term) {
        /* Rule 2: reject, with a hint that skips a whole term at a time. */
        uint64_t hint = find_conflict_by_term(r, m->index, m->log_term);
        resp.flags = RAFT_MSG_F_REJECT;
        resp.index = m->index;
        resp.hint_index = hint;
        resp.hint_term = term_or0(r, hint);
        reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        return;
    }
    /* Take everything we need first, so a failure changes nothing: the
     * message is then dropped and the leader retries. */
    uint32_t confs = 0;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < m->entries_count; i++) {
        confs += m->entries[i].type == RAFT_ENTRY_CONF;
        bytes += m->entries[i].len;
    }
    uint8_t *data = bytes > 0 ? arena_alloc(r, (size_t)bytes) : NULL;
    if ((bytes > 0 && !data) || unstable_reserve(r, m->entries_count) != 0 ||
        r->conf_count + confs > INBOX_RAFT_CONF_PENDING_MAX)
        return;
    for (uint32_t i = 0; i < m->entries_count; i++) {
        const struct raft_entry *e = &m->entries[i];
        uint64_t have = 0;
        if (e->index <= last_index(r)) {
            if (term_of(r, e->index, &have) == 0 && have == e->term)
                continue;              /* rule 4: already there */
            log_truncate(r, e->index); /* rule 3: conflict */
        }
        if (e->len > 0)
            memcpy(data, e->data, e->len);
        log_append(r, e->term, e->type, e->len > 0 ? data : NULL, e->len);
        data += e->len;
    }
    uint64_t last_new = m->index + m->entries_count;
    assert(last_new <= last_index(r));
    /* Rule 5. */
    commit_to(r, m->commit < last_new ? m->commit : last_new);
    resp.index = last_new;
    reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
}

/* §7 InstallSnapshot receiver, one chunk at a time. */
static void install_snapshot(struct raft *r, const struct raft_snapshot_meta *s)
{
    unstable_free_from(r, 0);
    r->snap_pending = true;
    r->pending_snap = *s;
    r->unstable_offset = s->index + 1u;
    r->stable_last = s->index;
    r->commit = s->index;
    r->applied = s->index;
    r->memb = s->membership;
    r->conf_count = 0;
    sync_progress(r);
}

static void handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg resp = {0};
    const struct raft_snapshot_meta *s = &m->snap;
    uint64_t t = 0;
    if (s->index <= r->commit) {
        resp.index = r->commit; /* stale: we are past it */
        reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        return;
    }
    if (term_of(r, s->index, &t) == 0 && t == s->term) {
        /* We hold the entry: the snapshot's prefix is ours, commit it. */
        commit_to(r, s->index);
        resp.index = s->index;
        reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        return;
    }
    if (m->index == 0 &&
        (r->in_snap.index != s->index || r->in_snap.term != s->term)) {
        r->in_snap = *s;
        r->in_offset = 0;
    }
    if (r->in_snap.index != s->index || r->in_snap.term != s->term ||
        m->index != r->in_offset || r->chunk_queued ||
        m->chunk_len > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX) {
        resp.snap.index = s->index;
        resp.index = r->in_snap.index == s->index ? r->in_offset : 0;
        if (!r->chunk_queued)
            reply(r, m, RAFT_MSG_SNAPSHOT_RESP, &resp);
        return;
    }
    uint8_t *copy = NULL;
    if (m->chunk_len > 0) {
        copy = arena_alloc(r, m->chunk_len);
        if (!copy)
            return;
        memcpy(copy, m->chunk, m->chunk_len);
    }
    r->chunk.meta = *s;
    r->chunk.offset = m->index;
    r->chunk.len = m->chunk_len;
    r->chunk.data = copy;
    r->chunk.last = (m->flags & RAFT_MSG_F_LAST) != 0;
    r->chunk_queued = true;
    r->in_offset += m->chunk_len;
    if (r->chunk.last) {
        install_snapshot(r, s);
        r->in_snap.index = 0;
        r->in_offset = 0;
        resp.index = s->index;
        reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        return;
    }
    resp.snap.index = s->index;
    resp.index = r->in_offset;
    reply(r, m, RAFT_MSG_SNAPSHOT_RESP, &resp);
}

static void maybe_send_timeout_now(struct raft *r, struct progress *p)
{
    if (r->transferee == p->id && p->match == last_index(r)) {
        struct raft_msg m = {0};
        m.type = RAFT_MSG_TIMEOUT_NOW;
        m.to = p->id;
        /* The target will campaign past the followers' leader stickiness,
         * so our lease no longer holds for the rest of this term. */
        r->lease_disabled = true;
        send(r, &m);
    }
}

static void handle_append_resp(struct raft *r, struct progress *p,
                               const struct raft_msg *m)
{
    p->recent_active = true;
    if (m->flags & RAFT_MSG_F_REJECT) {
        /* Ignored: stale rejections (for an older probe, or for a pipelined
         * APPEND), and any at prev <= match. The latter is either stale or
         * from a follower that lost acknowledged entries, and the two look
         * alike here; a lost tail is proven by a heartbeat answer instead
         * (lost_tail). Probing again at once at prev = match would only
         * draw the same rejection, in a loop. */
        if (m->index <= p->match ||
            (p->state == PR_PROBE && m->index != p->next - 1u))
            return;
        if (p->state == PR_SNAPSHOT)
            return;
        uint64_t probe = m->hint_index;
        if (m->hint_term > 0)
            probe = find_conflict_by_term(r, m->hint_index, m->hint_term);
        uint64_t next = m->index < probe + 1u ? m->index : probe + 1u;
        p->state = PR_PROBE;
        infl_reset(p);
        p->probe_sent = false;
        p->next = next > p->match + 1u ? next : p->match + 1u;
        send_append(r, p, true);
        return;
    }
    if (m->index > last_index(r))
        return; /* from a different log: cannot be ours */
    bool progressed = m->index > p->match;
    /* A follower that just caught up with the commit index learns it now
     * rather than at the next heartbeat. */
    bool caught_up = p->match < r->commit && m->index >= r->commit;
    if (progressed)
        p->match = m->index;
    if (p->next <= p->match)
        p->next = p->match + 1u;
    if (p->state == PR_SNAPSHOT) {
        if (p->match < p->snap.index && !progressed)
            return;
        become_probe(r, p);
    } else if (p->state == PR_PROBE) {
        p->state = PR_REPLICATE;
        infl_reset(p);
        p->next = p->match + 1u;
    } else {
        infl_free_to(p, m->index);
    }
    p->probe_sent = false;
    if (progressed && maybe_commit(r)) {
        if (r->role != RAFT_LEADER)
            return;
        r->bcast_empty_pending = true; /* tell everyone the new commit */
    }
    send_appends(r, p, caught_up);
    maybe_send_timeout_now(r, p);
}

/* Lost tail (design note, I9): the follower answered heartbeat round
 * m->context, which carried its match, saying it lacks that entry; its last
 * index is m->index, its commit m->commit. The round was sent after the ack
 * that set that match, so unless match was lowered since, the follower lost
 * entries it had acknowledged: count only on its commit (entries a leader
 * committed, which ours holds alike) and probe from where its log ends. */
static void lost_tail(struct raft *r, struct progress *p,
                      const struct raft_msg *m)
{
    if (m->context <= p->regress_round || m->context > r->round)
        return; /* sent before an earlier lowering: says nothing new */
    uint64_t keep = m->commit < m->index ? m->commit : m->index;
    if (keep >= p->match)
        return;
    p->match = keep;
    p->regress_round = r->round;
    p->regressions_count++;
    r->regressions_total++;
    r->regressed_last = p->id;
    become_probe(r, p);
    uint64_t next =
        m->index < last_index(r) ? m->index + 1u : last_index(r) + 1u;
    if (next > p->next)
        p->next = next;         /* a mismatch there backtracks as usual */
    assert(p->match < p->next); /* I8 */
}

static void step_leader(struct raft *r, const struct raft_msg *m)
{
    struct progress *p = pr_find(r, m->from);
    if (!p || p->id == r->id)
        return;
    switch (m->type) {
    case RAFT_MSG_APPEND_RESP:
        handle_append_resp(r, p, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        p->recent_active = true;
        p->probe_sent = false;
        if (m->context > p->acked_round && m->context <= r->round) {
            p->acked_round = m->context;
            rounds_acked(r);
        }
        if (m->flags & RAFT_MSG_F_REJECT)
            lost_tail(r, p, m);
        if (p->match < last_index(r)) {
            /* Lost APPENDs would pin a full window forever: free a slot and
             * probe with prev = next-1 (a gap makes the follower reject,
             * which drops us back to PROBE). */
            if (p->state == PR_REPLICATE && infl_full(r, p))
                infl_free_to(p, p->infl_index[p->infl_start]);
            send_appends(r, p, p->state == PR_REPLICATE);
        }
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        p->recent_active = true;
        if (p->state == PR_SNAPSHOT && m->snap.index == p->snap.index) {
            p->snap_offset = m->index;
            send_snapshot_chunk(r, p);
        }
        break;
    default:
        break;
    }
}

/* Does our log lack the entry the leader holds as our match? Then we lost
 * entries we acknowledged to it in this term (design note, "Lost tail").
 * Compacted entries are committed, hence the leader's too. */
static bool lost_acked(const struct raft *r, const struct raft_msg *m)
{
    uint64_t t = 0;
    if (m->index == 0)
        return false;
    int rc = term_of(r, m->index, &t);
    if (rc == INBOX_ECOMPACTED)
        return false;
    return rc != 0 || (m->log_term != 0 && t != m->log_term);
}

/* The heartbeat's commit is at most our match (bcast_heartbeat), so the
 * entries up to it are the leader's — unless we lost some: then entries
 * of ours at those indexes may be older ones the cut WAL brought back, and
 * committing them would apply what no leader committed. */
static void handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
    struct raft_msg resp = {0};
    resp.context = m->context;
    if (lost_acked(r, m)) {
        resp.flags = RAFT_MSG_F_REJECT;
        resp.index = last_index(r);
        resp.commit = r->commit;
    } else {
        commit_to(r, m->commit < last_index(r) ? m->commit : last_index(r));
    }
    reply(r, m, RAFT_MSG_HEARTBEAT_RESP, &resp);
}

static void step_follower(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role != RAFT_FOLLOWER) /* §5.2: a leader of our term */
            become_follower(r, r->term, m->from);
        r->election_elapsed = 0;
        r->leader = m->from;
        /* A leader of our term sends only commit indexes it committed. */
        if (m->commit > r->commit_heard)
            r->commit_heard = m->commit;
        if (m->type == RAFT_MSG_APPEND)
            handle_append(r, m);
        else if (m->type == RAFT_MSG_SNAPSHOT)
            handle_snapshot(r, m);
        else
            handle_heartbeat(r, m);
        break;
    case RAFT_MSG_PRE_VOTE_RESP:
    case RAFT_MSG_VOTE_RESP:
        handle_vote_resp(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        if (r->role == RAFT_FOLLOWER && is_voter(r, r->id))
            campaign(r, true);
        break;
    default:
        break;
    }
}

static bool msg_valid(const struct raft *r, const struct raft_msg *m)
{
    if (m->group != r->o.group || m->to != r->id || m->from == RAFT_NONE ||
        m->from == r->id || m->type < RAFT_MSG_APPEND ||
        m->type > RAFT_MSG_TIMEOUT_NOW)
        return false;
    if (m->chunk_len > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX ||
        m->entries_count > INBOX_RAFT_MSG_ENTRIES_MAX ||
        (m->entries_count > 0 && !m->entries))
        return false;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < m->entries_count; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index != m->index + 1u + i || (e->len > 0 && !e->data))
            return false;
        bytes += e->len;
    }
    if (bytes > INBOX_RAFT_MSG_BYTES_MAX)
        return false;
    return m->chunk_len == 0 || m->chunk != NULL;
}

static bool in_lease(const struct raft *r)
{
    /* With leases, a node that has just restarted does not know whom it
     * heard from last: it keeps quiet for one election timeout as if a
     * leader were alive, so no lease it granted before crashing is cut
     * short by its vote. */
    if (r->o.lease_reads && r->ticks < r->o.election_ticks)
        return true;
    return r->o.check_quorum && r->leader != RAFT_NONE &&
           r->election_elapsed < r->o.election_ticks;
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    assert(!r->in_ready);
    if (!msg_valid(r, m))
        return INBOX_EINVAL;
    bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PRE_VOTE;
    if (m->term > r->term) {
        /* Dissertation §4.2.3: while we hear from a leader, ignore those who
         * would depose it (unless the leader itself asked, §3.10). */
        if (vote_req && !(m->flags & RAFT_MSG_F_TRANSFER) && in_lease(r))
            return 0;
        if (m->type == RAFT_MSG_PRE_VOTE ||
            (m->type == RAFT_MSG_PRE_VOTE_RESP &&
             !(m->flags & RAFT_MSG_F_REJECT))) {
            /* a pre-vote does not move terms */
        } else if (m->type == RAFT_MSG_APPEND ||
                   m->type == RAFT_MSG_HEARTBEAT ||
                   m->type == RAFT_MSG_SNAPSHOT) {
            become_follower(r, m->term, m->from); /* §5.1 */
        } else {
            become_follower(r, m->term, RAFT_NONE); /* §5.1 */
        }
    } else if (m->term < r->term) {
        /* §5.1: stale. Tell a stale leader our term so it steps down
         * (otherwise, with pre-vote, nodes could wait on it forever). */
        if ((m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT) &&
            (r->o.check_quorum || r->o.pre_vote)) {
            struct raft_msg resp = {0};
            reply(r, m, RAFT_MSG_APPEND_RESP, &resp);
        } else if (m->type == RAFT_MSG_PRE_VOTE) {
            struct raft_msg resp = {0};
            resp.flags = RAFT_MSG_F_REJECT;
            reply(r, m, RAFT_MSG_PRE_VOTE_RESP, &resp);
        }
        return 0;
    }
    if (vote_req) {
        handle_vote(r, m);
        return 0;
    }
    if (r->role == RAFT_LEADER)
        step_leader(r, m);
    else
        step_follower(r, m);
    assert(r->commit <= last_index(r));
    return 0;
}

/* ---- proposals ---------------------------------------------------------- */

static int propose_entry(struct raft *r, uint32_t type, const void *data,
                         uint32_t len, uint64_t *index)
{
    if (r->role != RAFT_LEADER)
        return INBOX_ENOT_LEADER;
    if (r->transferee != RAFT_NONE)
        return INBOX_ETRANSFER_IN_PROGRESS;
    if (len > r->o.msg_bytes_max)
        return INBOX_ERANGE;
    if (r->uncommitted_bytes > 0 &&
        r->uncommitted_bytes + len > r->o.uncommitted_bytes_max)
        return INBOX_ETOO_MANY_PROPOSALS;
    const uint8_t *copy;
    if (unstable_reserve(r, 1) != 0 || arena_copy(r, data, len, &copy) != 0)
        return INBOX_ENOMEM;
    log_append(r, r->term, type, copy, len);
    r->uncommitted_bytes += len;
    if (index)
        *index = last_index(r);
    /* Followers hear of it at the next raft_ready: proposals of one cycle
     * share an APPEND. A single voter commits at raft_advance. */
    r->bcast_pending = true;
    return 0;
}

int raft_propose(struct raft *r, const void *data, uint32_t len,
                 uint64_t *index)
{
    assert(!r->in_ready);
    return propose_entry(r, RAFT_ENTRY_NORMAL, data, len, index);
}

int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc,
                             uint64_t *index)
{
    assert(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return INBOX_ENOT_LEADER;
    /* I7: one change at a time, and only once this leader has committed an
     * entry of its own term. */
    if (r->conf_count > 0 || !committed_in_term(r))
        return INBOX_ECONF_CHANGE_PENDING;
    struct raft_membership m = r->memb;
    if (raft_membership_apply(&m, cc) != 0)
        return INBOX_EINVAL;
    uint8_t buf[RAFT_CONF_CHANGE_BYTES];
    raft_conf_change_encode(cc, buf);
    return propose_entry(r, RAFT_ENTRY_CONF, buf, sizeof buf, index);
}

int raft_transfer_leader(struct raft *r, uint64_t to)
{
    assert(!r->in_ready);
    if (r->role != RAFT_LEADER)
        return INBOX_ENOT_LEADER;
    if (to == r->id || !is_voter(r, to))
        return INBOX_EINVAL;
    if (r->transferee != RAFT_NONE)
        return INBOX_ETRANSFER_IN_PROGRESS;
    struct progress *p = pr_find(r, to);
    if (!p)
        return INBOX_EINVAL;
    r->transferee = to;
    r->election_elapsed = 0; /* the transfer gets one election timeout */
    if (p->match == last_index(r))
        maybe_send_timeout_now(r, p);
    else
        send_appends(r, p, true);
    return 0;
}

int raft_campaign(struct raft *r)
{
    assert(!r->in_ready);
    if (r->role == RAFT_LEADER || !is_voter(r, r->id))
        return INBOX_EINVAL;
    campaign(r, false);
    return 0;
}

/* ---- ready / advance ---------------------------------------------------- */

static bool hs_dirty(const struct raft *r)
{
    return r->term != r->persisted_hs.term || r->vote != r->persisted_hs.vote ||
           r->commit != r->persisted_hs.commit;
}

static uint64_t apply_limit(const struct raft *r)
{
    return r->commit < last_index(r) ? r->commit : last_index(r);
}

bool raft_has_ready(const struct raft *r)
{
    return hs_dirty(r) || r->unstable_count > 0 || r->q_count > 0 ||
           r->bcast_pending || r->bcast_empty_pending || r->snap_pending ||
           r->chunk_queued || r->reads_ready_count > 0 ||
           r->read_round_needed || apply_limit(r) > r->applied;
}

static void split_msgs(struct raft *r, struct raft_ready *rd)
{
    struct raft_msg *now = arena_alloc(r, (r->q_count + 1u) * sizeof(*now));
    struct raft_msg *after = arena_alloc(r, (r->q_count + 1u) * sizeof(*after));
    if (!now || !after) {
        r->q_count = 0; /* as if the network lost them */
        return;
    }
    /* A term or vote not yet durable holds back every message (I5). */
    bool hold =
        r->term != r->persisted_hs.term || r->vote != r->persisted_hs.vote;
    for (size_t i = 0; i < r->q_count; i++) {
        bool go_now = r->q[i].now && !hold;
#ifdef RAFT_PLANT_BUG_VOTE_BEFORE_PERSIST
        /* Planted bug 3: the vote leaves before it is durable. */
        if (r->q[i].m.type == RAFT_MSG_VOTE_RESP)
            go_now = true;
#endif
        if (go_now)
            now[rd->msgs_count++] = r->q[i].m;
        else
            after[rd->msgs_after_count++] = r->q[i].m;
    }
    rd->msgs = now;
    rd->msgs_after = after;
}

static void collect_committed(struct raft *r, struct raft_ready *rd)
{
    uint64_t lo = r->applied + 1u, hi = apply_limit(r) + 1u;
    struct raft_entry *ents = NULL;
    size_t n = 0;
    r->ready_applied_to = r->applied;
    if (lo >= hi)
        return;
    if (log_slice(r, lo, hi, r->o.committed_bytes_max,
                  INBOX_RAFT_READY_ENTRIES_MAX, &ents, &n) != 0)
        return; /* try again next ready */
    rd->committed = ents;
    rd->committed_count = n;
    if (n > 0)
        r->ready_applied_to = ents[n - 1].index;
    if (r->role == RAFT_LEADER) {
        for (size_t i = 0; i < n; i++) {
            uint64_t len = ents[i].len;
            r->uncommitted_bytes -=
                len < r->uncommitted_bytes ? len : r->uncommitted_bytes;
        }
    }
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    if (r->in_ready)
        return INBOX_EINVAL;
    memset(rd, 0, sizeof(*rd));
    if (r->role == RAFT_LEADER && (r->bcast_pending || r->bcast_empty_pending))
        bcast_append(r, r->bcast_empty_pending);
    r->bcast_pending = false;
    r->bcast_empty_pending = false;
    start_read_round(r);
    rd->hard_state_changed = hs_dirty(r);
    rd->hard_state.term = r->term;
    rd->hard_state.vote = r->vote;
    rd->hard_state.commit = r->commit;
    rd->entries = r->unstable;
    rd->entries_count = r->unstable_count;
    split_msgs(r, rd);
    if (r->chunk_queued)
        rd->snapshot_chunk = &r->chunk;
    if (r->snap_pending)
        rd->snapshot = &r->pending_snap;
    collect_committed(r, rd);
    rd->reads = r->reads_ready;
    rd->reads_count = r->reads_ready_count;
    rd->leader = r->leader;
    rd->role = r->role;
    r->in_ready = true;
    return 0;
}

#ifndef NDEBUG
static bool check_invariants(const struct raft *r)
{
    if (r->applied > r->commit || r->commit > last_index(r))
        return false; /* I1 */
    if (r->unstable_offset > r->stable_last + 1u)
        return false; /* I2 */
    for (size_t i = 0; i < r->unstable_count; i++)
        if (r->unstable[i].index != r->unstable_offset + i)
            return false;
    if (r->role == RAFT_LEADER) {
        const struct progress *self = NULL;
        for (uint32_t i = 0; i < r->pr_count; i++)
            if (r->pr[i].id == r->id)
                self = &r->pr[i];
        if (self && self->match > r->stable_last)
            return false; /* I3 */
    }
    if (r->conf_count > 0 && r->conf_stack[0].index <= r->commit)
        return false; /* I6 */
    return true;
}
#endif

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
    assert(r->in_ready);
    r->in_ready = false;
    r->persisted_hs = rd->hard_state;
    /* A truncation always comes with the entries replacing it (handle_append
     * takes its memory first), so the caller's log now ends where ours does.
     */
    assert(rd->entries_count > 0 || r->unstable_offset == r->stable_last + 1u);
    if (rd->entries_count > 0 || r->snap_pending)
        r->stable_last = last_index(r);
    unstable_free_from(r, 0);
    r->unstable_offset = r->stable_last + 1u;
    r->snap_pending = false;
    r->chunk_queued = false;
    if (r->ready_applied_to > r->applied)
        r->applied = r->ready_applied_to;
    r->q_count = 0;
    r->reads_ready_count = 0;
    arena_reset(r, true);
    /* Reads confirmed while the last batch was full. */
    if (r->role == RAFT_LEADER && r->reads_count > 0)
        rounds_acked(r);
    if (r->role == RAFT_LEADER) {
        /* I3: the leader counts itself only for what is now durable. */
        struct progress *self = pr_find(r, r->id);
        if (self && r->stable_last > self->match) {
            self->match = r->stable_last;
            if (maybe_commit(r) && r->role == RAFT_LEADER)
                r->bcast_empty_pending = true;
        }
    }
    assert(check_invariants(r));
}

/* ---- life cycle --------------------------------------------------------- */

void raft_options_default(struct raft_options *o)
{
    memset(o, 0, sizeof(*o));
    o->election_ticks = 10;
    o->heartbeat_ticks = 1;
    o->pre_vote = true;
    o->check_quorum = true;
    o->lease_reads = false;
    o->lease_drift_ticks = 2;
    o->msg_entries_max = 256;
    o->msg_bytes_max = 1u * INBOX_MIB;
    o->inflight_msgs_max = 64;
    o->inflight_bytes_max = 16u * INBOX_MIB;
    o->uncommitted_bytes_max = 64u * INBOX_MIB;
    o->snapshot_chunk_bytes = 256u * INBOX_KIB;
    o->committed_bytes_max = 16u * INBOX_MIB;
}

static int options_check(const struct raft_options *o)
{
    if (o->id == RAFT_NONE || o->election_ticks < 2 ||
        o->heartbeat_ticks == 0 || o->heartbeat_ticks >= o->election_ticks)
        return INBOX_EINVAL;
    if (o->msg_entries_max == 0 ||
        o->msg_entries_max > INBOX_RAFT_MSG_ENTRIES_MAX ||
        o->msg_bytes_max == 0 || o->msg_bytes_max > INBOX_RAFT_MSG_BYTES_MAX)
        return INBOX_ERANGE;
    if (o->inflight_msgs_max == 0 ||
        o->inflight_msgs_max > INBOX_RAFT_INFLIGHT_MSGS_MAX ||
        o->snapshot_chunk_bytes == 0 ||
        o->snapshot_chunk_bytes > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX)
        return INBOX_ERANGE;
    if (o->lease_reads && o->lease_drift_ticks >= o->election_ticks)
        return INBOX_ERANGE;
    if (!o->allocator.alloc || !o->allocator.free || !o->storage.last_index ||
        !o->storage.term || !o->storage.entries || !o->storage.snapshot ||
        !o->storage.snapshot_chunk)
        return INBOX_EINVAL;
    return 0;
}

/* Dissertation §4.1: the membership is the latest conf entry in the log,
 * committed or not; read it back from storage after the snapshot. */
static int load_membership(struct raft *r, uint64_t from)
{
    struct raft_entry buf[64];
    uint64_t lo = from;
    while (lo <= r->stable_last) {
        size_t n = 0;
        int rc = r->st->entries(r->st->ctx, lo, r->stable_last + 1u, UINT64_MAX,
                                buf, 64, &n);
        if (rc != 0)
            return rc;
        if (n == 0)
            return INBOX_EINTERNAL;
        for (size_t i = 0; i < n; i++) {
            if (buf[i].type != RAFT_ENTRY_CONF)
                continue;
            if (buf[i].index <= r->commit) {
                struct raft_conf_change cc;
                if (raft_conf_change_decode(buf[i].data, buf[i].len, &cc) == 0)
                    (void)raft_membership_apply(&r->memb, &cc);
            } else if (conf_appended(r, &buf[i]) != 0) {
                return INBOX_ECORRUPT;
            }
        }
        lo += n;
    }
    return 0;
}

int raft_create(const struct raft_options *o, const struct raft_hard_state *hs,
                struct raft **out)
{
    int rc = options_check(o);
    if (rc != 0)
        return rc;
    struct raft *r = o->allocator.alloc(o->allocator.ctx, sizeof(*r));
    if (!r)
        return INBOX_ENOMEM;
    memset(r, 0, sizeof(*r));
    r->o = *o;
    r->st = &r->o.storage;
    r->id = o->id;
    r->rng = o->seed ^ (o->id * 0xD1B54A32D192ED03ull);
    struct raft_snapshot_meta snap;
    r->st->snapshot(r->st->ctx, &snap);
    r->term = hs->term;
    r->vote = hs->vote;
    r->stable_last = r->st->last_index(r->st->ctx);
    if (r->stable_last < snap.index) {
        rc = INBOX_ECORRUPT;
        goto err_after_alloc;
    }
    r->unstable_offset = r->stable_last + 1u;
    r->commit = hs->commit > snap.index ? hs->commit : snap.index;
    if (r->commit > r->stable_last)
        r->commit = r->stable_last;
    r->persisted_hs = *hs;
    r->persisted_hs.commit = r->commit;
    r->applied = o->applied > snap.index ? o->applied : snap.index;
    if (r->applied > r->commit) {
        rc = INBOX_EINVAL;
        goto err_after_alloc;
    }
    r->memb = snap.membership;
    rc = load_membership(r, snap.index + 1u);
    if (rc != 0)
        goto err_after_alloc;
    sync_progress(r);
    become_follower(r, r->term, RAFT_NONE);
    *out = r;
    return 0;

err_after_alloc:
    o->allocator.free(o->allocator.ctx, r, sizeof(*r));
    return rc;
}

void raft_destroy(struct raft *r)
{
    if (!r)
        return;
    unstable_free_from(r, 0);
    rfree(r, r->unstable, r->unstable_cap * sizeof(r->unstable[0]));
    rfree(r, r->q, r->q_cap * sizeof(r->q[0]));
    arena_reset(r, false);
    struct raft_allocator a = r->o.allocator;
    a.free(a.ctx, r, sizeof(*r));
}

/* ---- accessors ---------------------------------------------------------- */

enum raft_role raft_role(const struct raft *r)
{
    return r->role;
}

uint64_t raft_term(const struct raft *r)
{
    return r->term;
}

uint64_t raft_leader(const struct raft *r)
{
    return r->leader;
}

uint64_t raft_commit(const struct raft *r)
{
    return r->commit;
}

uint64_t raft_last_index(const struct raft *r)
{
    return last_index(r);
}

uint64_t raft_term_at(const struct raft *r, uint64_t i)
{
    return term_or0(r, i);
}

const struct raft_membership *raft_membership(const struct raft *r)
{
    return &r->memb;
}

uint64_t raft_regressions(const struct raft *r, uint64_t *last_follower)
{
    if (last_follower)
        *last_follower = r->regressed_last;
    return r->regressions_total;
}

uint64_t raft_match_of(const struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->pr_count; i++)
        if (r->pr[i].id == id)
            return r->pr[i].match;
    return 0;
}

int raft_progress_of(const struct raft *r, uint64_t id,
                     struct raft_progress_info *out)
{
    for (uint32_t i = 0; i < r->pr_count; i++) {
        const struct progress *p = &r->pr[i];
        if (p->id != id)
            continue;
        out->match = p->match;
        out->next = p->next;
        out->state = p->state;
        out->inflight_msgs = p->infl_count;
        out->regressions_count = p->regressions_count;
        out->paused = p->state == PR_PROBE       ? p->probe_sent
                      : p->state == PR_REPLICATE ? infl_full(r, p)
                                                 : true;
        return 0;
    }
    return INBOX_ENOTFOUND;
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}

const char *raft_msg_type_name(uint32_t type)
{
    static const char *const names[] = {
        "?",         "APPEND",   "APPEND_RESP",   "VOTE",
        "VOTE_RESP", "PRE_VOTE", "PRE_VOTE_RESP", "HEARTBEAT",
        "HB_RESP",   "SNAPSHOT", "SNAPSHOT_RESP", "TIMEOUT_NOW",
    };
    return type < sizeof names / sizeof names[0] ? names[type] : "?";
}
