/*
 * node.c — an inboxd node: every shard's Raft group driven over the
 * node-wide WAL and the LMDB store (contract in node.h, story in
 * docs/node.md).
 *
 * Design note
 * -----------
 * Threads and ownership:
 *   - callers (the transport's loop thread, tests): build a request (all
 *     arguments copied), count it against the bounds, and push it on the
 *     submission list under n->mu.
 *   - the node thread: owns every struct shard (raft, raft_log, queues),
 *     the store (store_open/store_close happen on it too) and the request
 *     objects once taken off the submission list. It never calls wal_sync.
 *   - the sync thread: loops wal_sync(target_lsn) and publishes
 *     durable_lsn; appends made while an fdatasync runs ride the next one.
 *
 * States of a shard (struct shard), one raft group:
 *   IDLE      not in a ready cycle: requests go straight to raft
 *             (raft_propose / raft_read_index).
 *   PERSIST   raft_ready taken, its entries and hard state appended to the
 *             WAL (run_ready), waiting for durable_lsn >= wait_lsn. Raft
 *             must not be called: requests wait in s->incoming, ticks in
 *             s->ticks_owed.
 *   (a ready with nothing to persist goes IDLE -> finish at once)
 * Transitions: run_ready (IDLE -> PERSIST), finish_ready (PERSIST -> IDLE:
 * msgs_after, apply, reads, raft_advance, then the waiting requests).
 *
 * A request is split into parts, one per shard it touches. A part sits in
 * exactly one queue of its shard at a time:
 *   incoming  arrived while the shard was in PERSIST
 *   proposed  its command is in raft's log at (index, term); completed
 *             when the entry at index is applied (same term: ours; other
 *             term or skipped: INBOX_EPROPOSAL_DROPPED)
 *   reading   waiting for raft's read state for ctx
 *   read_wait read index known; served when applied >= index
 *   retry     refused with INBOX_ESTALE_READ (new leader, nothing of its
 *             term committed yet), or past the reads raft can hand back
 *             in one ready: asked again after the next advance
 * Invariants (check_shard() under assert):
 *   1. A shard in PERSIST has wait_lsn != 0 and is in n->waiting (until
 *      the node fails: then it stays in PERSIST for good).
 *   2. proposed is sorted by index; read_wait by read index.
 *   3. No write is answered before the entry carrying it is durable in the
 *      WAL and applied to the store (finish_ready runs only after
 *      durable_lsn >= wait_lsn of the ready that persisted it).
 *   4. Once n->failed is set, no new entry is proposed and every write in
 *      flight is answered INBOX_EFAILED.
 *   5. s->log.membership is the shard's membership at its WAL release
 *      point, and DATA/members (n->mrecs) says so durably before any
 *      release or snapshot install moves that point past a membership
 *      change (membership_before_release, install_snapshot).
 *
 * Membership changes (docs/node.md): node_member_add/remove queue targets
 * (n->targets, under mu) that the node thread merges into n->tg and works
 * on for the shards it leads (members_drive, on every tick); any leader
 * promotes caught-up learners (promote_learners). node_transfer_leader
 * sets s->xfer_to, run by transfers_run.
 */
#include "node.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

#include "config.h"
#include "inbox/error.h"
#include "log.h"
#include "members.h"
#include "node_meta.h"
#include "raft.h"
#include "raft_log.h"
#include "snapshot.h"
#include "wal.h"
#include "wire.h"

#define PATH_BYTES_MAX 1100u
#define NODE_READY_PASSES_MAX 8u
/* The round's record arena is kept between rounds up to this size. */
#define NODE_ARENA_BYTES_KEPT (4u * INBOX_MIB)

/* ---- peers: types ------------------------------------------------------ */

/* A batch received from a peer, waiting for the node thread. */
struct inbatch {
    struct inbatch *next;
    size_t len;
    uint8_t data[];
};

/* Messages for one peer, encoded during a pass of the node loop and handed
 * to node_options.send at its end (or when the batch is full). */
struct outbox {
    uint64_t to;
    uint8_t *buf; /* INBOX_RAFT_BATCH_BYTES_MAX, allocated on first use */
    size_t len;
};
#define NODE_OUTBOXES_MAX (INBOX_RAFT_VOTERS_MAX + INBOX_RAFT_LEARNERS_MAX)
/* A shard's parked buffer is kept for reuse up to this size. */
#define NODE_PARKED_BYTES_KEPT (64u * INBOX_KIB)

/* ---- requests ----------------------------------------------------------- */

enum req_kind {
    REQ_ENQUEUE,
    REQ_ENQUEUE_MANY,
    REQ_ACK,
    REQ_SEEN_SET,
    REQ_FETCH,
    REQ_SEEN_GET,
    REQ_INFO,
};

static bool kind_is_write(enum req_kind k)
{
    return k <= REQ_SEEN_SET;
}

struct req;

struct part {
    struct req *req;
    struct part *next;
    uint32_t shard;
    uint32_t first;         /* into req->order */
    uint32_t targets_count; /* targets of this shard */
    uint64_t index;         /* proposals: entry index; reads: read index */
    uint64_t term;          /* proposals: the leader's term */
    uint64_t ctx;           /* reads: raft_read_index ctx */
};

struct req {
    struct req *next; /* submission list */
    enum req_kind kind;
    node_done_cb done;
    void *arg;
    uint32_t parts_count;
    uint32_t parts_left;
    int rc;
    uint64_t leader;
    size_t bytes;
    bool stale_ok; /* reads: a follower may serve from its own state */
    bool stale;    /* some part was served by a follower */
    /* arguments (copied) */
    uint64_t ttl_ms;
    uint64_t u64; /* after_seq, ack seq or seen ts */
    uint32_t max_messages;
    uint32_t max_bytes;
    const uint8_t *payload;
    uint32_t payload_len;
    uint32_t targets_count;
    struct command_target *targets; /* request order */
    uint32_t *order;                /* positions grouped by shard */
    struct store_target_result *results;
    uint64_t *seen;
    int *seen_rc; /* SEEN_GET: per target, its part's error (0: ok) */
    /* single-part results */
    uint64_t seq;
    bool deduped;
    uint64_t after;
    struct store_inbox_info info;
    const struct store_message *msgs;
    size_t msgs_count;
    struct part parts[];
};

struct pq {
    struct part *head;
    struct part *tail;
};

static void pq_push(struct pq *q, struct part *p)
{
    p->next = NULL;
    if (q->tail)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
}

static struct part *pq_pop(struct pq *q)
{
    struct part *p = q->head;
    if (p) {
        q->head = p->next;
        if (!q->head)
            q->tail = NULL;
        p->next = NULL;
    }
    return p;
}

/* Take the whole queue (its parts stay linked through next). */
static struct part *pq_take(struct pq *q)
{
    struct part *p = q->head;
    q->head = q->tail = NULL;
    return p;
}

/* ---- node --------------------------------------------------------------- */

struct shard {
    uint32_t id;
    struct raft *r;
    struct raft_log log;
    struct raft_ready rd;
    bool in_ready;
    bool dirty;
    uint64_t wait_lsn;
    uint32_t ticks_owed;
    uint32_t reads_asked; /* raft_read_index calls since the last ready */
    uint64_t applied;
    uint64_t released;
    /* Term and vote of the last hard state written: a ready whose hard
     * state changes only the commit index need not wait for a sync. */
    uint64_t hs_term, hs_vote;
    /* Configuration entries above the release point: none below
     * conf_from (0: none known at all), none above conf_hi. A checkpoint
     * releasing past conf_from reads them back to compute the membership
     * at its new release point (docs/node.md, "Membership"). */
    uint64_t conf_from, conf_hi;
    /* The membership at the release point a checkpoint is about to
     * release to (valid while memb_next_ok). */
    struct raft_membership memb_next;
    bool memb_next_ok;
    /* A leadership transfer asked by node_transfer_leader: 0 none,
     * UINT64_MAX the most caught-up other voter, else that voter. */
    _Atomic uint64_t xfer_to;
    /* The membership last published (node thread) and the published copy
     * (under n->memb_mu, for node_shard_members). */
    struct raft_membership memb_seen, memb_pub;
    enum raft_role role_seen;
    uint32_t role_changes; /* since start, for the log level above */
    struct pq incoming, proposed, reading, read_wait, retry;
    /* An incoming snapshot being received (follower). */
    struct snapshot_stage stage;
    /* After a failed materialization, none is tried again before this
     * (mono ms): raft asks at every probe. */
    uint64_t snap_retry_ms;
    /* Peer messages that arrived during a ready cycle (raft/wire.h
     * encoding), stepped right after raft_advance. */
    uint8_t *parked;
    size_t parked_len, parked_cap;
    /* published for node_status (relaxed atomics) */
    _Atomic uint64_t st_role, st_term, st_leader, st_commit, st_applied,
        st_last, st_released;
    _Atomic bool st_voter, st_learner;
    struct metrics_gauge g_role, g_term;
    uint64_t regr_seen; /* raft_regressions as watch_regressions last saw */
    char label[24];
};

struct node_metrics {
    struct metrics_counter proposals;
    struct metrics_counter proposals_failed;
    struct metrics_counter reads;
    struct metrics_counter applied;
    struct metrics_counter busy;
    struct metrics_counter wal_appends;
    struct metrics_counter checkpoints;
    struct metrics_counter peer_msgs_in;
    struct metrics_counter peer_msgs_out;
    struct metrics_counter peer_msgs_dropped;
    struct metrics_counter snapshots_made;
    struct metrics_counter snapshot_chunks_sent;
    struct metrics_counter snapshots_sent;
    struct metrics_counter snapshots_installed;
    struct metrics_counter follower_regressions;
    struct metrics_gauge failed;
    struct metrics_gauge wal_segments;
    struct metrics_histogram fsync_us;
    struct metrics_histogram fsync_records;
    struct metrics_histogram append_records;
    struct metrics_histogram checkpoint_us;
    struct metrics_histogram snapshot_make_us;
    struct metrics_histogram snapshot_install_us;
};

/* A membership request the node keeps retrying (node_member_add/remove). */
struct member_target {
    uint64_t id;
    bool remove;
};

struct node {
    struct node_options o;
    char data_dir[PATH_BYTES_MAX];
    char snap_dir[PATH_BYTES_MAX];
    struct raft_log_snap_hooks snap_hooks;
    struct raft_membership boot;
    /* DATA/members as on disk, normalized at start-up so that each
     * present record's index is at or below its shard's release point and
     * its membership is the one there (node thread after start). */
    struct members_rec *mrecs;
    pthread_mutex_t memb_mu; /* guards every shard's memb_pub */
    uint32_t shard_count;
    struct shard *shards;
    struct wal *wal;
    struct store *store;
    char errmsg[NODE_ERRMSG_BYTES];

    pthread_t thread;
    pthread_t sync_thread;
    bool thread_started;
    bool sync_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the node thread waits here */
    pthread_cond_t sync_cv; /* the sync thread waits here */
    pthread_cond_t ctl_cv;  /* node_open / node_checkpoint wait here */
    /* under mu */
    struct req *sub_head, *sub_tail;
    uint64_t target_lsn;
    uint64_t durable_lsn;
    int sync_err;
    bool sync_stop;
    int stop; /* 0 running, 1 close, 2 abort */
    bool start_done;
    int start_rc;
    bool exited;
    uint64_t ckpt_asked, ckpt_done;
    int ckpt_rc;
    struct inbatch *in_head, *in_tail; /* peer batches not yet stepped */
    uint64_t in_bytes;
    struct member_target targets[NODE_MEMBER_TARGETS_MAX]; /* new ones */
    uint32_t targets_count;
    bool member_kick; /* new targets or a transfer to look at */
    _Atomic bool xfer_pending;
    /* node thread only: the targets being worked on */
    struct member_target tg[NODE_MEMBER_TARGETS_MAX];
    uint32_t tg_count;

    _Atomic bool accepting;
    _Atomic int failed;
    _Atomic uint32_t reqs_live;
    _Atomic uint64_t bytes_live;

    /* node thread only */
    uint64_t last_ts_ms;
    uint64_t read_ctx;
    bool aborting;           /* node thread's copy of stop == 2 */
    bool applied_since_ckpt; /* a checkpoint would change something */
    uint32_t *dirty, *dirty_scratch;
    size_t dirty_count;
    uint32_t *waiting;
    size_t waiting_count;
    struct wal_record *recs;
    size_t *recs_off;
    size_t recs_count, recs_cap;
    uint8_t *arena;
    size_t arena_used, arena_cap;
    uint64_t framed_bytes;
    struct store_entry *sents;
    size_t sents_cap;
    uint8_t *cmd_buf;
    struct command_target *tmp_targets;
    struct store_inbox_ref *tmp_refs;
    uint64_t *tmp_seen;
    struct store_message *fetch_buf;
    struct wal_release *rels;
    /* Outgoing peer messages of this pass, encoded per destination. */
    struct outbox outs[NODE_OUTBOXES_MAX];
    size_t outs_count;
    struct raft_entry *wire_ents; /* INBOX_RAFT_MSG_ENTRIES_MAX, decoding */

    struct node_metrics m;
    struct metrics_desc *descs;
    size_t descs_count;
};

/* ---- time --------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The leader's stamp: wall clock, never below the previous stamp (nor the
 * shards' clocks recovered at open), so time in the log never runs back. */
static uint64_t stamp_ms(struct node *n)
{
    uint64_t now = wall_ms();
    if (now < n->last_ts_ms)
        now = n->last_ts_ms;
    n->last_ts_ms = now;
    return now;
}

static void deadline_ts(struct timespec *ts, uint64_t ms_from_now)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms_from_now / 1000u);
    ts->tv_nsec += (long)(ms_from_now % 1000u) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* snprintf that reports truncation instead of warning about it. */
__attribute__((format(printf, 3, 4))) static int fmt(char *buf, size_t cap,
                                                     const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int k = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    return k < 0 || (size_t)k >= cap ? INBOX_ERANGE : 0;
}

/* ---- completion --------------------------------------------------------- */

static void req_free(struct node *n, struct req *q)
{
    atomic_fetch_sub_explicit(&n->bytes_live, q->bytes, memory_order_relaxed);
    atomic_fetch_sub_explicit(&n->reqs_live, 1u, memory_order_relaxed);
    free(q);
}

static void req_complete(struct node *n, struct req *q)
{
    struct node_result res;
    memset(&res, 0, sizeof(res));
    res.rc = q->rc;
    res.shard = q->parts[0].shard;
    res.leader = q->leader;
    res.stale = q->stale;
    switch (q->kind) {
    case REQ_ENQUEUE:
        res.seq = q->seq;
        res.deduped = q->deduped;
        break;
    case REQ_ACK:
    case REQ_SEEN_SET:
        res.after = q->after;
        break;
    case REQ_ENQUEUE_MANY:
        res.targets = q->results;
        res.targets_count = q->targets_count;
        break;
    case REQ_FETCH:
        res.messages = q->msgs;
        res.messages_count = q->msgs_count;
        res.info = q->info;
        break;
    case REQ_SEEN_GET:
        res.seen_ms = q->seen;
        res.seen_rc = q->seen_rc;
        res.seen_count = q->targets_count;
        break;
    case REQ_INFO:
        res.info = q->info;
        break;
    default:
        break;
    }
    q->done(q->arg, &res);
    req_free(n, q);
}

/* A part is finished with rc (0 or its shard's whole-part error). */
static void part_finish(struct node *n, struct part *p, int rc)
{
    struct req *q = p->req;
    if (rc != 0) {
        if (q->rc == 0)
            q->rc = rc;
        if (q->kind == REQ_ENQUEUE_MANY)
            for (uint32_t i = 0; i < p->targets_count; i++)
                q->results[q->order[p->first + i]].rc = rc;
        if (q->kind == REQ_SEEN_GET)
            for (uint32_t i = 0; i < p->targets_count; i++) {
                q->seen_rc[q->order[p->first + i]] = rc;
                q->seen[q->order[p->first + i]] = 0;
            }
        if (kind_is_write(q->kind))
            metrics_counter_add(&n->m.proposals_failed, 1);
    }
    assert(q->parts_left > 0);
    if (--q->parts_left == 0)
        req_complete(n, q);
}

static void part_fail_leader(struct node *n, struct shard *s, struct part *p,
                             int rc)
{
    if (rc == INBOX_ENOT_LEADER && s->r)
        p->req->leader = raft_leader(s->r);
    part_finish(n, p, rc);
}

static void pq_fail_all(struct node *n, struct pq *q, int rc)
{
    struct part *p;
    while ((p = pq_pop(q)) != NULL)
        part_finish(n, p, rc);
}

/* ---- sticky failure ----------------------------------------------------- */

static void serve_read(struct node *n, struct shard *s, struct part *p);

static bool single_self_voter(const struct node *n,
                              const struct raft_membership *m)
{
    return m->voters_count == 1 && m->voters[0] == n->o.node_id;
}

/* A read after the storage failed: with one voter, and that voter us, no
 * write can be accepted anywhere any more, so the applied state is the
 * final one and serving it is linearizable (writes answered EFAILED are
 * indeterminate: they may reappear after a restart, like any write whose
 * answer was lost). With other voters this node must not answer. */
static void read_after_failure(struct node *n, struct shard *s, struct part *p)
{
    if (s->r && single_self_voter(n, raft_membership(s->r)))
        serve_read(n, s, p);
    else
        part_finish(n, p, INBOX_EFAILED);
}

/* Storage failed: log it loudly, answer every write in flight with
 * INBOX_EFAILED, and serve the reads in flight from the state applied so
 * far, which (one voter: nobody else can have accepted a write) is the
 * final state. Shards stuck in PERSIST stay there. */
static void node_fail(struct node *n, const char *what, int rc)
{
    if (atomic_load(&n->failed) != 0)
        return;
    atomic_store(&n->failed, rc ? rc : INBOX_EINTERNAL);
    metrics_gauge_set(&n->m.failed, 1);
    log_error("node", "STORAGE FAILED: refusing all writes until restart",
              "what=%s rc=%d err=%s node=%llu", what, rc, inbox_err_name(rc),
              (unsigned long long)n->o.node_id);
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        pq_fail_all(n, &s->proposed, INBOX_EFAILED);
        struct pq all[] = {s->incoming, s->reading, s->read_wait, s->retry};
        s->incoming = s->reading = s->read_wait = s->retry = (struct pq){0};
        for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
            struct part *p;
            while ((p = pq_pop(&all[k])) != NULL) {
                if (kind_is_write(p->req->kind))
                    part_finish(n, p, INBOX_EFAILED);
                else
                    read_after_failure(n, s, p);
            }
        }
    }
}

/* ---- dispatch ----------------------------------------------------------- */

static void mark_dirty(struct node *n, struct shard *s)
{
    if (!s->dirty) {
        s->dirty = true;
        n->dirty[n->dirty_count++] = s->id;
    }
}

static int encode_part(struct node *n, struct part *p, size_t *len)
{
    struct req *q = p->req;
    uint64_t ts = stamp_ms(n);
    const struct command_target *t = &q->targets[q->order[p->first]];
    switch (q->kind) {
    case REQ_ENQUEUE:
        return command_encode_enqueue(
            n->cmd_buf, INBOX_COMMAND_BYTES_MAX, ts, t->inbox, t->inbox_len,
            t->msg_id, q->ttl_ms, q->payload, q->payload_len, len);
    case REQ_ENQUEUE_MANY:
        for (uint32_t i = 0; i < p->targets_count; i++)
            n->tmp_targets[i] = q->targets[q->order[p->first + i]];
        return command_encode_enqueue_many(
            n->cmd_buf, INBOX_COMMAND_BYTES_MAX, ts, q->ttl_ms, q->payload,
            q->payload_len, n->tmp_targets, p->targets_count, len);
    case REQ_ACK:
        return command_encode_ack(n->cmd_buf, INBOX_COMMAND_BYTES_MAX, ts,
                                  t->inbox, t->inbox_len, q->u64, len);
    case REQ_SEEN_SET:
        return command_encode_seen_set(n->cmd_buf, INBOX_COMMAND_BYTES_MAX, ts,
                                       t->inbox, t->inbox_len, q->u64, len);
    default:
        return INBOX_EINTERNAL;
    }
}

/* Our log was cut at index (a later leader overwrote it, §5.3) and we
 * lead again: proposals at or above it will never apply as ours. Keeps
 * invariant 2. Rare, so a walk is fine. */
static void drop_proposals_from(struct node *n, struct shard *s, uint64_t index)
{
    struct part *list = pq_take(&s->proposed), *next;
    for (struct part *p = list; p; p = next) {
        next = p->next;
        if (p->index >= index)
            part_finish(n, p, INBOX_EPROPOSAL_DROPPED);
        else
            pq_push(&s->proposed, p);
    }
}

static void propose(struct node *n, struct shard *s, struct part *p)
{
    size_t len = 0;
    int rc = encode_part(n, p, &len);
    if (rc == 0)
        rc = raft_propose(s->r, n->cmd_buf, (uint32_t)len, &p->index);
    if (rc != 0) {
        part_fail_leader(n, s, p, rc);
        return;
    }
    p->term = raft_term(s->r);
    metrics_counter_add(&n->m.proposals, 1);
    if (s->proposed.tail && s->proposed.tail->index >= p->index)
        drop_proposals_from(n, s, p->index);
    pq_push(&s->proposed, p);
}

static void read_index(struct node *n, struct shard *s, struct part *p)
{
    /* Raft hands out at most INBOX_RAFT_READS_PENDING_MAX read states per
     * ready and silently drops the rest (see docs/node.md, "Known
     * gaps"), so ask for no more than that per cycle; the others wait for
     * the next advance. */
    if (s->reads_asked >= INBOX_RAFT_READS_PENDING_MAX) {
        pq_push(&s->retry, p);
        return;
    }
    s->reads_asked++;
    p->ctx = ++n->read_ctx;
    int rc = raft_read_index(s->r, p->ctx);
    if (rc == 0)
        pq_push(&s->reading, p);
    else if (rc == INBOX_ESTALE_READ)
        pq_push(&s->retry, p);
    else
        part_fail_leader(n, s, p, rc);
}

/* Hand a part to its shard's raft, or park it while the shard is in a
 * ready cycle (raft must not be called between ready and advance). */
static void shard_dispatch(struct node *n, struct shard *s, struct part *p)
{
    bool write = kind_is_write(p->req->kind);
    if (atomic_load(&n->failed) != 0) {
        if (write)
            part_finish(n, p, INBOX_EFAILED);
        else
            read_after_failure(n, s, p);
        return;
    }
#ifdef INBOX_PLANT_FOLLOWER_READS_AS_LEADER
    /* PLANTED BUG (jepsen/README.md): a follower serves every read from
     * its own applied state, STALE_OK or not, and answers it as a
     * linearizable read (res->stale stays false). */
    if (!write && raft_role(s->r) != RAFT_LEADER) {
        serve_read(n, s, p);
        return;
    }
#endif
    if (s->in_ready && !(p->req->stale_ok && !write)) {
        pq_push(&s->incoming, p);
        return;
    }
    if (!write && p->req->stale_ok && raft_role(s->r) != RAFT_LEADER) {
        /* A follower read: this node's applied state, possibly behind. */
        p->req->stale = true;
        serve_read(n, s, p);
        return;
    }
    if (write)
        propose(n, s, p);
    else
        read_index(n, s, p);
    mark_dirty(n, s);
}

static void dispatch_requests(struct node *n, struct req *list)
{
    while (list) {
        struct req *q = list;
        list = q->next;
        q->next = NULL;
        if (n->aborting) {
            q->rc = INBOX_ESHUTDOWN;
            q->parts_left = 0;
            req_complete(n, q);
            continue;
        }
        uint32_t count = q->parts_count;
        for (uint32_t i = 0; i < count; i++)
            shard_dispatch(n, &n->shards[q->parts[i].shard], &q->parts[i]);
    }
}

/* ---- reads -------------------------------------------------------------- */

static void serve_read(struct node *n, struct shard *s, struct part *p)
{
    struct req *q = p->req;
    const struct command_target *t = &q->targets[q->order[p->first]];
    int rc = 0;
    metrics_counter_add(&n->m.reads, 1);
    switch (q->kind) {
    case REQ_FETCH:
        rc = store_fetch_since(n->store, s->id, t->inbox, t->inbox_len, q->u64,
                               q->max_messages, q->max_bytes, n->fetch_buf,
                               &q->msgs_count);
        q->msgs = n->fetch_buf;
        /* The inbox's acked and last seq, from the same state, for the
         * FETCH response (the store reads only; payloads stay valid). */
        if (rc == 0)
            rc = store_inbox_info(n->store, s->id, t->inbox, t->inbox_len,
                                  &q->info);
        break;
    case REQ_INFO:
        rc =
            store_inbox_info(n->store, s->id, t->inbox, t->inbox_len, &q->info);
        break;
    case REQ_SEEN_GET:
        for (uint32_t i = 0; i < p->targets_count; i++) {
            const struct command_target *ti =
                &q->targets[q->order[p->first + i]];
            n->tmp_refs[i].shard = s->id;
            n->tmp_refs[i].inbox = ti->inbox;
            n->tmp_refs[i].inbox_len = ti->inbox_len;
        }
        rc = store_seen_get(n->store, n->tmp_refs, p->targets_count,
                            n->tmp_seen);
        for (uint32_t i = 0; rc == 0 && i < p->targets_count; i++)
            q->seen[q->order[p->first + i]] = n->tmp_seen[i];
        break;
    default:
        rc = INBOX_EINTERNAL;
        break;
    }
    /* The callback runs inside part_finish when this is the last part, so
     * FETCH payloads are still valid (no store call in between). */
    part_finish(n, p, rc);
}

static void serve_reads_ready(struct node *n, struct shard *s)
{
    while (s->read_wait.head && s->read_wait.head->index <= s->applied)
        serve_read(n, s, pq_pop(&s->read_wait));
}

/* Read states of this ready: move their parts to read_wait. Raft hands
 * them back in the order they were asked, so the search is short. */
static void take_read_states(struct shard *s, const struct raft_ready *rd)
{
    for (size_t i = 0; i < rd->reads_count; i++) {
        struct part *prev = NULL, *p = s->reading.head;
        while (p && p->ctx != rd->reads[i].ctx) {
            prev = p;
            p = p->next;
        }
        if (!p)
            continue;
        if (prev)
            prev->next = p->next;
        else
            s->reading.head = p->next;
        if (s->reading.tail == p)
            s->reading.tail = prev;
        p->index = rd->reads[i].index;
        /* Read indexes are commit indexes: non-decreasing (invariant 2). */
        assert(!s->read_wait.tail || s->read_wait.tail->index <= p->index);
        pq_push(&s->read_wait, p);
    }
}

/* ---- apply -------------------------------------------------------------- */

struct apply_ctx {
    struct node *n;
    struct shard *s;
    const struct raft_entry *ents;
    size_t count;
    size_t cursor;
};

static void write_result(struct part *p, const struct store_result *r)
{
    struct req *q = p->req;
    if (r->rc != 0 || r->targets_count != p->targets_count) {
        if (q->rc == 0)
            q->rc = r->rc ? r->rc : INBOX_EINTERNAL;
        return;
    }
    switch (q->kind) {
    case REQ_ENQUEUE:
        q->seq = r->targets[0].seq;
        q->deduped = r->targets[0].deduped != 0;
        q->rc = r->targets[0].rc;
        break;
    case REQ_ENQUEUE_MANY:
        for (uint32_t i = 0; i < p->targets_count; i++)
            q->results[q->order[p->first + i]] = r->targets[i];
        break;
    default: /* ACK, SEEN_SET */
        q->rc = r->targets[0].rc;
        q->after = r->targets[0].after;
        break;
    }
}

static void notify_enqueues(struct node *n, const struct store_result *r)
{
    const struct command *c = r->command;
    if (!n->o.enqueue_applied || !c ||
        (c->type != COMMAND_ENQUEUE && c->type != COMMAND_ENQUEUE_MANY))
        return;
    for (uint32_t i = 0; i < r->targets_count && i < c->targets_count; i++)
        if (r->targets[i].rc == 0 && !r->targets[i].deduped)
            n->o.enqueue_applied(n->o.enqueue_applied_arg, r->shard,
                                 c->targets[i].inbox, c->targets[i].inbox_len,
                                 r->targets[i].seq);
}

static void apply_done(void *arg, const struct store_result *r)
{
    struct apply_ctx *a = arg;
    struct node *n = a->n;
    struct shard *s = a->s;
    while (a->cursor < a->count && a->ents[a->cursor].index < r->index)
        a->cursor++;
    assert(a->cursor < a->count && a->ents[a->cursor].index == r->index);
    uint64_t term = a->ents[a->cursor].term;
    /* Entries replayed after a restart carry earlier stamps of ours (or a
     * previous leader's): never stamp below them. */
    if (r->command && r->command->leader_ts_ms > n->last_ts_ms)
        n->last_ts_ms = r->command->leader_ts_ms;
    notify_enqueues(n, r);
    /* Proposals below this index never made it into the log. */
    while (s->proposed.head && s->proposed.head->index < r->index)
        part_finish(n, pq_pop(&s->proposed), INBOX_EPROPOSAL_DROPPED);
    struct part *p = s->proposed.head;
    if (!p || p->index != r->index)
        return;
    pq_pop(&s->proposed);
    if (p->term != term) { /* another leader's entry took the index */
        part_finish(n, p, INBOX_EPROPOSAL_DROPPED);
        return;
    }
    write_result(p, r);
    part_finish(n, p, 0);
}

static int apply_committed(struct node *n, struct shard *s,
                           const struct raft_ready *rd)
{
    size_t count = rd->committed_count;
    if (count == 0)
        return 0;
    if (count > n->sents_cap) {
        struct store_entry *e = realloc(n->sents, count * sizeof(*e));
        if (!e)
            return INBOX_ENOMEM;
        n->sents = e;
        n->sents_cap = count;
    }
    for (size_t i = 0; i < count; i++) {
        const struct raft_entry *e = &rd->committed[i];
        bool conf = e->type == RAFT_ENTRY_CONF;
        if (conf) {
            if (s->conf_from == 0 || e->index < s->conf_from)
                s->conf_from = e->index;
            if (e->index > s->conf_hi)
                s->conf_hi = e->index;
        }
        n->sents[i].shard = s->id;
        n->sents[i].index = e->index;
        n->sents[i].term = e->term;
        /* Configuration entries are no-ops for the store (raft keeps the
         * membership); they only advance its applied index. */
        n->sents[i].data = conf ? NULL : e->data;
        n->sents[i].len = conf ? 0 : e->len;
    }
    struct apply_ctx a = {n, s, rd->committed, count, 0};
    int rc = store_apply(n->store, n->sents, count, &a, apply_done);
    if (rc != 0)
        return rc;
    s->applied = rd->committed[count - 1].index;
    n->applied_since_ckpt = true;
    metrics_counter_add(&n->m.applied, count);
    return 0;
}

/* ---- the ready cycle ---------------------------------------------------- */

/* ---- peers ------------------------------------------------------------- */

static void outbox_flush(struct node *n, struct outbox *ob)
{
    if (ob->len == 0)
        return;
    if (n->o.send)
        n->o.send(n->o.send_arg, ob->to, ob->buf, ob->len);
    ob->len = 0;
}

/* Hand every destination's messages of this pass to the peer transport:
 * one call per peer per pass, so a round's APPENDs, heartbeats and votes
 * for every shard travel together. */
static void outboxes_flush(struct node *n)
{
    for (size_t i = 0; i < n->outs_count; i++)
        outbox_flush(n, &n->outs[i]);
}

static struct outbox *outbox_for(struct node *n, uint64_t to)
{
    for (size_t i = 0; i < n->outs_count; i++)
        if (n->outs[i].to == to)
            return &n->outs[i];
    if (n->outs_count == NODE_OUTBOXES_MAX) {
        /* Members come and go: reuse an empty box of a departed peer. */
        for (size_t i = 0; i < n->outs_count; i++)
            if (n->outs[i].len == 0) {
                n->outs[i].to = to;
                return &n->outs[i];
            }
        return NULL;
    }
    struct outbox *ob = &n->outs[n->outs_count];
    if (!ob->buf && !(ob->buf = malloc(INBOX_RAFT_BATCH_BYTES_MAX)))
        return NULL;
    ob->to = to;
    ob->len = 0;
    n->outs_count++;
    return ob;
}

/* Raft's messages leave through here: encoded at once (they are raft's only
 * until raft_advance) into their destination's batch. A message that
 * cannot be sent is dropped, which Raft tolerates as a network loss. */
static void send_msgs(struct node *n, const struct raft_msg *msgs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct raft_msg *m = &msgs[i];
        if (m->to == n->o.node_id || m->to == RAFT_NONE)
            continue;
        struct outbox *ob = n->o.send ? outbox_for(n, m->to) : NULL;
        size_t need = raft_wire_msg_bytes(m);
        if (!ob || need > INBOX_RAFT_BATCH_BYTES_MAX) {
            metrics_counter_add(&n->m.peer_msgs_dropped, 1);
            continue;
        }
        if (ob->len + need > INBOX_RAFT_BATCH_BYTES_MAX)
            outbox_flush(n, ob);
        size_t w = raft_wire_encode(m, ob->buf + ob->len,
                                    INBOX_RAFT_BATCH_BYTES_MAX - ob->len);
        assert(w == need);
        ob->len += w;
        metrics_counter_add(&n->m.peer_msgs_out, 1);
        if (m->type == RAFT_MSG_SNAPSHOT) {
            metrics_counter_add(&n->m.snapshot_chunks_sent, 1);
            if (m->flags & RAFT_MSG_F_LAST)
                metrics_counter_add(&n->m.snapshots_sent, 1);
        }
    }
}

static void publish(struct node *n, struct shard *s);
static void publish_membership(struct node *n, struct shard *s);
static void mark_dirty(struct node *n, struct shard *s);

/* Park an encoded message of a shard that is in a ready cycle. */
static void park(struct node *n, struct shard *s, const uint8_t *msg,
                 size_t len)
{
    if (s->parked_len + len > INBOX_NODE_PARKED_BYTES_MAX) {
        metrics_counter_add(&n->m.peer_msgs_dropped, 1);
        return;
    }
    if (s->parked_len + len > s->parked_cap) {
        size_t cap = s->parked_cap ? s->parked_cap : 4096u;
        while (cap < s->parked_len + len)
            cap *= 2u;
        uint8_t *p = realloc(s->parked, cap);
        if (!p) {
            metrics_counter_add(&n->m.peer_msgs_dropped, 1);
            return;
        }
        s->parked = p;
        s->parked_cap = cap;
    }
    memcpy(s->parked + s->parked_len, msg, len);
    s->parked_len += len;
}

/* Step every message of an encoded batch into its shard's group (or park
 * it while the shard is in a ready cycle). fresh: the batch came off the
 * network now (counted), rather than out of a shard's parked buffer. */
static void step_batch(struct node *n, const uint8_t *buf, size_t len,
                       bool fresh)
{
    size_t off = 0;
    while (off < len) {
        struct raft_msg m;
        size_t used = 0;
        int rc = raft_wire_decode(buf + off, len - off, &m, n->wire_ents,
                                  INBOX_RAFT_MSG_ENTRIES_MAX, &used);
        if (rc != 0) {
            /* The rest of the batch cannot be framed: drop it. */
            metrics_counter_add(&n->m.peer_msgs_dropped, 1);
            log_warn("node", "malformed raft message from a peer dropped",
                     "err=%s offset=%zu", inbox_err_name(rc), off);
            return;
        }
        const uint8_t *raw = buf + off;
        off += used;
        if (m.group >= n->shard_count || m.to != n->o.node_id) {
            metrics_counter_add(&n->m.peer_msgs_dropped, 1);
            continue;
        }
        struct shard *s = &n->shards[m.group];
        if (fresh)
            metrics_counter_add(&n->m.peer_msgs_in, 1);
        if (s->in_ready) {
            park(n, s, raw, used);
            continue;
        }
        if (raft_step(s->r, &m) != 0)
            metrics_counter_add(&n->m.peer_msgs_dropped, 1);
        mark_dirty(n, s);
    }
}

/* After raft_advance: the messages that waited for it. The shard is out
 * of its ready cycle now, so none of them is parked again. */
static void step_parked(struct node *n, struct shard *s)
{
    if (s->parked_len == 0)
        return;
    uint8_t *buf = s->parked;
    size_t len = s->parked_len, cap = s->parked_cap;
    s->parked = NULL;
    s->parked_len = s->parked_cap = 0;
    step_batch(n, buf, len, false);
    assert(s->parked == NULL);
    if (cap <= NODE_PARKED_BYTES_KEPT) {
        s->parked = buf; /* reuse the allocation */
        s->parked_cap = cap;
    } else {
        free(buf);
    }
}

static void publish(struct node *n, struct shard *s)
{
    publish_membership(n, s);
    atomic_store_explicit(&s->st_role, (uint64_t)raft_role(s->r),
                          memory_order_relaxed);
    atomic_store_explicit(&s->st_term, raft_term(s->r), memory_order_relaxed);
    atomic_store_explicit(&s->st_leader, raft_leader(s->r),
                          memory_order_relaxed);
    atomic_store_explicit(&s->st_commit, raft_commit(s->r),
                          memory_order_relaxed);
    atomic_store_explicit(&s->st_applied, s->applied, memory_order_relaxed);
    atomic_store_explicit(&s->st_last, raft_last_index(s->r),
                          memory_order_relaxed);
    atomic_store_explicit(&s->st_released, s->released, memory_order_relaxed);
    metrics_gauge_set(&s->g_role, (int64_t)raft_role(s->r));
    metrics_gauge_set(&s->g_term, (int64_t)raft_term(s->r));
}

/* The membership, for node_shard_members and node_status: copied under
 * memb_mu only when it changed (rare), so a pass costs a compare. */
static void publish_membership(struct node *n, struct shard *s)
{
    const struct raft_membership *m = raft_membership(s->r);
    if (memcmp(m, &s->memb_seen, sizeof(*m)) == 0)
        return;
    s->memb_seen = *m;
    pthread_mutex_lock(&n->memb_mu);
    s->memb_pub = *m;
    pthread_mutex_unlock(&n->memb_mu);
    atomic_store_explicit(&s->st_voter,
                          raft_membership_is_voter(m, n->o.node_id),
                          memory_order_relaxed);
    atomic_store_explicit(&s->st_learner,
                          raft_membership_is_learner(m, n->o.node_id),
                          memory_order_relaxed);
}

#ifndef NDEBUG
/* Invariant 2 (and parts belong to this shard). */
static bool check_shard(const struct shard *s)
{
    uint64_t last = 0;
    for (const struct part *p = s->proposed.head; p; p = p->next) {
        if (p->shard != s->id || p->index <= last)
            return false;
        last = p->index;
    }
    last = 0;
    for (const struct part *p = s->read_wait.head; p; p = p->next) {
        if (p->shard != s->id || p->index < last)
            return false;
        last = p->index;
    }
    return true;
}
#endif

/* Steps 3-5 of raft.h's loop, once the ready's state is durable. */
static void finish_ready(struct node *n, struct shard *s)
{
    struct raft_ready *rd = &s->rd;
    assert(s->in_ready);
    assert(check_shard(s));
    send_msgs(n, rd->msgs_after, rd->msgs_after_count);
#ifdef INBOX_PLANT_ACK_BEFORE_QUORUM
    /* PLANTED BUG (jepsen/README.md): a leader applies its new entries and
     * answers their writes once they are durable here, before a quorum has
     * them (the later commit finds them applied: the store skips them). A
     * leader cut off or killed before its followers ack loses them. */
    if (raft_role(s->r) == RAFT_LEADER && rd->entries_count > 0) {
        struct raft_ready early = {.committed = rd->entries,
                                   .committed_count = rd->entries_count};
        if (apply_committed(n, s, &early) != 0) {
            node_fail(n, "store_apply (planted)", INBOX_EINTERNAL);
            return;
        }
    }
#endif
    int rc = apply_committed(n, s, rd);
    if (rc != 0) {
        node_fail(n, "store_apply", rc);
        return; /* the shard stays in its ready: nothing more is applied */
    }
    take_read_states(s, rd);
    serve_reads_ready(n, s);
    raft_advance(s->r, rd);
    raft_log_reads_done(&s->log);
    s->in_ready = false;
    s->wait_lsn = 0;
    step_parked(n, s);
    enum raft_role role = raft_role(s->r);
    if (role != RAFT_LEADER && s->role_seen == RAFT_LEADER) {
        /* Raft dropped its pending reads when it stepped down. */
        struct part *p;
        while ((p = pq_pop(&s->reading)) != NULL)
            part_fail_leader(n, s, p, INBOX_ENOT_LEADER);
    }
    if (role != s->role_seen) {
        /* A shard's first election after start is routine (a node hosting
         * thousands of shards would log thousands of lines): debug. Every
         * later change of role is news: info. */
        enum log_level lvl = s->role_changes++ == 0 ? LOG_DEBUG : LOG_INFO;
        log_emit(lvl, "node", "shard role changed",
                 "shard=%u role=%s term=%llu leader=%llu", s->id,
                 raft_role_name(role), (unsigned long long)raft_term(s->r),
                 (unsigned long long)raft_leader(s->r));
    }
    s->role_seen = role;
    for (; s->ticks_owed > 0; s->ticks_owed--)
        raft_tick(s->r);
    struct part *list = pq_take(&s->retry), *next;
    for (struct part *p = list; p; p = next) {
        next = p->next;
        shard_dispatch(n, s, p);
    }
    list = pq_take(&s->incoming);
    for (struct part *p = list; p; p = next) {
        next = p->next;
        shard_dispatch(n, s, p);
    }
    publish(n, s);
    mark_dirty(n, s);
    assert(check_shard(s));
}

static int batch_reserve(struct node *n, size_t bytes)
{
    if (n->recs_count == n->recs_cap) {
        size_t cap = n->recs_cap ? n->recs_cap * 2u : 256u;
        struct wal_record *r = realloc(n->recs, cap * sizeof(*r));
        if (!r)
            return INBOX_ENOMEM;
        n->recs = r;
        size_t *o = realloc(n->recs_off, cap * sizeof(*o));
        if (!o)
            return INBOX_ENOMEM;
        n->recs_off = o;
        n->recs_cap = cap;
    }
    if (n->arena_used + bytes > n->arena_cap) {
        size_t cap = n->arena_cap ? n->arena_cap : 64u * INBOX_KIB;
        while (cap < n->arena_used + bytes)
            cap *= 2u;
        uint8_t *a = realloc(n->arena, cap);
        if (!a)
            return INBOX_ENOMEM;
        n->arena = a;
        n->arena_cap = cap;
    }
    return 0;
}

/* Write the records gathered so far with one wal_append. */
static int batch_flush(struct node *n, uint64_t *lsn)
{
    if (n->recs_count == 0)
        return 0;
    for (size_t i = 0; i < n->recs_count; i++)
        if (n->recs[i].type == WAL_RECORD_ENTRY)
            n->recs[i].data = n->arena + n->recs_off[i];
    int rc = wal_append(n->wal, n->recs, n->recs_count, lsn);
    metrics_counter_add(&n->m.wal_appends, 1);
    metrics_histogram_record(&n->m.append_records, n->recs_count);
    n->recs_count = 0;
    n->arena_used = 0;
    n->framed_bytes = 0;
    if (n->arena_cap > NODE_ARENA_BYTES_KEPT) { /* one huge round */
        free(n->arena);
        n->arena = NULL;
        n->arena_cap = 0;
    }
    return rc;
}

/* Make room for one record of `bytes` payload, flushing first when the
 * batch would pass wal_append's bounds. */
static int batch_room(struct node *n, size_t bytes, uint64_t *lsn)
{
    uint64_t framed = bytes + INBOX_WAL_RECORD_OVERHEAD_BYTES;
    if (n->recs_count == INBOX_WAL_BATCH_RECORDS_MAX ||
        n->framed_bytes + framed > INBOX_WAL_BATCH_BYTES_MAX) {
        int rc = batch_flush(n, lsn);
        if (rc != 0)
            return rc;
    }
    int rc = batch_reserve(n, bytes);
    if (rc == 0)
        n->framed_bytes += framed;
    return rc;
}

static int batch_add_entry(struct node *n, const struct shard *s,
                           const struct raft_entry *e, uint64_t *lsn)
{
    size_t bytes = raft_log_record_bytes(e->len);
    int rc = batch_room(n, bytes, lsn);
    if (rc != 0)
        return rc;
    size_t i = n->recs_count++;
    n->recs_off[i] = n->arena_used;
    raft_log_entry_record(&s->log, e, n->arena + n->arena_used, &n->recs[i]);
    n->recs[i].data = NULL; /* fixed up at flush: the arena may move */
    n->arena_used += bytes;
    return 0;
}

static int batch_add_hard_state(struct node *n, const struct shard *s,
                                const struct raft_hard_state *hs, uint64_t *lsn)
{
    int rc = batch_room(n, 0, lsn);
    if (rc != 0)
        return rc;
    size_t i = n->recs_count++;
    n->recs_off[i] = 0;
    raft_log_hard_state_record(&s->log, hs, &n->recs[i]);
    return 0;
}

/* Step 2 of raft.h's loop for one shard: its entries, then its hard state,
 * into the round's batch. */
static int persist_ready(struct node *n, struct shard *s, uint64_t *lsn)
{
    const struct raft_ready *rd = &s->rd;
    for (size_t i = 0; i < rd->entries_count; i++) {
        int rc = batch_add_entry(n, s, &rd->entries[i], lsn);
        if (rc != 0)
            return rc;
    }
    if (rd->hard_state_changed)
        return batch_add_hard_state(n, s, &rd->hard_state, lsn);
    return 0;
}

/* ---- snapshots (docs/node.md, "Snapshots between nodes") ---------------- */

/* After a failed materialization, raft's probes do not retry for this
 * long (each attempt reads the whole shard). */
#define NODE_SNAPSHOT_RETRY_MS 1000u

/* Leader: raft_log's make hook. Runs on the node thread inside a raft
 * call, the first time raft needs a snapshot of the shard past the last
 * materialized one. */
static int snap_make(void *ctx, struct raft_log *l, uint64_t release,
                     struct snapshot_file *out)
{
    struct node *n = ctx;
    struct shard *s = &n->shards[l->shard];
    uint64_t now = mono_ms();
    if (now < s->snap_retry_ms)
        return INBOX_EBUSY;
    uint64_t t0 = mono_us();
    int rc = snapshot_file_make(n->store, n->wal, l->shard, n->snap_dir,
                                release, &l->membership, out);
    uint64_t us = mono_us() - t0;
    if (rc != 0) {
        s->snap_retry_ms = now + NODE_SNAPSHOT_RETRY_MS;
        log_warn("node", "cannot materialize a snapshot",
                 "shard=%u release=%llu err=%s", l->shard,
                 (unsigned long long)release, inbox_err_name(rc));
        return rc;
    }
    metrics_counter_add(&n->m.snapshots_made, 1);
    metrics_histogram_record(&n->m.snapshot_make_us, us);
    log_info("node", "snapshot materialized",
             "shard=%u index=%llu term=%llu bytes=%llu us=%llu", l->shard,
             (unsigned long long)out->meta.index,
             (unsigned long long)out->meta.term,
             (unsigned long long)out->meta.data_bytes, (unsigned long long)us);
    return 0;
}

/* Make the shard's WAL log continue right after (index, term): void the
 * entries at or past index (the snapshot replaces the whole log, Raft §7),
 * then release everything up to index, past the last entry if need be
 * (the log is then empty and continues at index + 1). The release's sync
 * covers the truncation logged before it. */
static int wal_reset_to(struct wal *wal, uint32_t shard, uint64_t index,
                        uint64_t term)
{
    uint64_t first = 1, last = 0, lsn = 0;
    int rc = wal_range(wal, shard, &first, &last);
    if (rc != 0)
        return rc;
    if (index < first)
        return 0; /* already released there */
    if (last >= index && (rc = wal_truncate_suffix(wal, shard, index, &lsn)))
        return rc;
    return wal_release_prefix(wal, shard, index, term);
}

/* The shard's record in DATA/members now says: membership m as of index
 * (written before what makes it true: the release or the install; until
 * then the record it replaces, kept as prev, is the one in effect). The
 * in-memory record is normalized (present: its index is at or below the
 * release point and m is s->log.membership; absent: the bootstrap one),
 * so it becomes prev as it is. */
static void members_rec_set(struct node *n, struct shard *s, uint64_t index,
                            const struct raft_membership *m)
{
    struct members_rec *r = &n->mrecs[s->id];
    assert(r->present ? r->index <= s->released &&
                            members_same(&r->m, &s->log.membership)
                      : members_same(&n->boot, &s->log.membership));
    r->prev = s->log.membership;
    r->prev_index = r->present ? r->index : 0;
    r->m = *m;
    r->index = index;
    r->present = true;
}

/* Follower, step 2 of raft.h's loop for rd.snapshot (its last chunk was
 * staged just before). Each step is durable before the next starts, so a
 * crash anywhere leaves a state that start-up makes whole (docs/node.md):
 *   1. the store's shard state := the staged snapshot (in the store's
 *      open transaction: a crash drops it, nothing changed);
 *   2. if the snapshot's membership is not the one at our release point:
 *      DATA/members gets (snapshot index, its membership), the old record
 *      kept as prev (a crash now: the record is ahead of the WAL's release
 *      point, so start-up uses prev, and nothing else changed);
 *   3. store_checkpoint: the store is durable at the snapshot index (a
 *      crash now leaves the store ahead of the WAL: shard_start finishes
 *      the install, finish_interrupted_install, and the record of step 2
 *      is then in effect);
 *   4. the WAL's log of the shard restarts after the snapshot index
 *      (wal_reset_to, synced): only now may the WAL forget anything.
 * Then the ready's entries (past the index) and hard state are persisted
 * as usual. Returns 0, or the error after node_fail. */
static int install_snapshot(struct node *n, struct shard *s,
                            const struct raft_snapshot_meta *m)
{
    uint64_t t0 = mono_us();
    const char *what = "snapshot membership";
    int rc = INBOX_ECORRUPT;
    if (!members_valid(&m->membership))
        goto err;
    what = "snapshot restore";
    if ((rc = snapshot_stage_restore(&s->stage, n->store, s->id, m)) != 0)
        goto err;
    if (!members_same(&m->membership, &s->log.membership)) {
        what = "members write (snapshot install)";
        members_rec_set(n, s, m->index, &m->membership);
        if ((rc = members_write(n->data_dir, n->shard_count, n->mrecs)) != 0)
            goto err;
    }
    what = "store_checkpoint (snapshot install)";
    if ((rc = store_checkpoint(n->store)) != 0)
        goto err;
    what = "wal reset (snapshot install)";
    if ((rc = wal_reset_to(n->wal, s->id, m->index, m->term)) != 0)
        goto err;
    snapshot_stage_drop(&s->stage);
    raft_log_snapshot_drop(&s->log);
    raft_log_set_membership(&s->log, &m->membership);
    s->released = m->index;
    s->applied = m->index;
    s->conf_from = s->conf_hi = 0;
    /* Our proposals at or below the index (from an earlier term as leader)
     * are either in the snapshot or gone; which one is unknown. */
    while (s->proposed.head && s->proposed.head->index <= m->index)
        part_finish(n, pq_pop(&s->proposed), INBOX_EPROPOSAL_DROPPED);
    struct store_shard_info info;
    if (store_applied(n->store, s->id, &info) == 0 &&
        info.now_ms > n->last_ts_ms)
        n->last_ts_ms = info.now_ms;
    uint64_t us = mono_us() - t0;
    metrics_counter_add(&n->m.snapshots_installed, 1);
    metrics_histogram_record(&n->m.snapshot_install_us, us);
    log_info("node", "snapshot installed",
             "shard=%u index=%llu term=%llu bytes=%llu us=%llu", s->id,
             (unsigned long long)m->index, (unsigned long long)m->term,
             (unsigned long long)m->data_bytes, (unsigned long long)us);
    return 0;

err:
    node_fail(n, what, rc);
    return rc;
}

/* A crash between an install's store checkpoint and its WAL reset leaves
 * the store at the snapshot index while the WAL's log of the shard ends
 * below it, or holds another term there (the suffix the snapshot
 * replaced). The store applies only committed entries of this log, so in
 * no other case is it ahead of the WAL: redo the reset. */
static int finish_interrupted_install(struct node *n, struct shard *s,
                                      const struct store_shard_info *info)
{
    uint64_t first = 1, last = 0, term = 0;
    uint64_t a = info->applied_index;
    (void)wal_range(n->wal, s->id, &first, &last);
    if (a < first)
        return 0; /* nothing applied, or at the release point */
    if (a <= last && wal_term(n->wal, s->id, a, &term) == 0 &&
        term == info->applied_term)
        return 0;
    log_warn("node", "completing an interrupted snapshot install",
             "shard=%u index=%llu term=%llu wal_last=%llu", s->id,
             (unsigned long long)a, (unsigned long long)info->applied_term,
             (unsigned long long)last);
    return wal_reset_to(n->wal, s->id, a, info->applied_term);
}

/* Does any follower of this leader still receive the shard's snapshot? */
static bool snapshot_in_use(const struct node *n, const struct shard *s)
{
    if (raft_role(s->r) != RAFT_LEADER)
        return false;
    const struct raft_membership *m = raft_membership(s->r);
    for (uint32_t i = 0; i < m->voters_count + m->learners_count; i++) {
        uint64_t id = i < m->voters_count ? m->voters[i]
                                          : m->learners[i - m->voters_count];
        struct raft_progress_info pi;
        if (id != n->o.node_id && raft_progress_of(s->r, id, &pi) == 0 &&
            pi.state == 2 /* snapshot */)
            return true;
    }
    return false;
}

/* With the checkpoint timer: delete materialized snapshots nobody reads. */
static void snapshots_gc(struct node *n)
{
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        if (s->log.snap.fd >= 0 && !snapshot_in_use(n, s))
            raft_log_snapshot_drop(&s->log);
    }
}

static void start_ready(struct node *n, struct shard *s, uint64_t *lsn,
                        bool *persisting)
{
    *persisting = false;
    if (raft_ready(s->r, &s->rd) != 0)
        return;
    s->in_ready = true;
    s->reads_asked = 0;
    send_msgs(n, s->rd.msgs, s->rd.msgs_count);
    if (s->rd.snapshot_chunk) {
        int rc = snapshot_stage_write(&s->stage, n->snap_dir, s->id,
                                      s->rd.snapshot_chunk);
        if (rc != 0) {
            node_fail(n, "snapshot chunk write", rc);
            return;
        }
    }
    if (s->rd.snapshot) {
        int rc = install_snapshot(n, s, s->rd.snapshot);
        if (rc != 0)
            return; /* node_fail'd: the shard stays in its ready */
    }
    /* What must be durable before this ready's msgs_after go out and its
     * committed entries are applied: new entries, and a new term or vote
     * (Raft §5.1-5.2). A change of the commit index alone need not wait:
     * the entries it covers are already durable, and after a crash the
     * commit index is recovered as at least the store's applied index
     * (shard_start). So such a hard state is written with the next append
     * but not waited for, saving one fdatasync per write (etcd's
     * MustSync rule). */
    const struct raft_hard_state *hs = &s->rd.hard_state;
    bool hs_sync = s->rd.hard_state_changed &&
                   (hs->term != s->hs_term || hs->vote != s->hs_vote);
    if (s->rd.entries_count > 0 || s->rd.hard_state_changed) {
        int rc = persist_ready(n, s, lsn);
        if (rc != 0) {
            node_fail(n, "wal_append", rc);
            return;
        }
        if (s->rd.hard_state_changed) {
            s->hs_term = hs->term;
            s->hs_vote = hs->vote;
        }
    }
    if (s->rd.entries_count == 0 && !hs_sync) {
        finish_ready(n, s);
        return;
    }
    *persisting = true;
}

/* One round: every dirty shard with a ready gets its state into one
 * wal_append (several only past the batch bounds), then the sync thread is
 * asked for durability. Shards with nothing to persist finish at once and
 * may produce another ready, hence the passes. */
static void run_ready(struct node *n)
{
    uint64_t lsn = 0;
    size_t first_waiting = n->waiting_count;
    for (unsigned pass = 0; pass < NODE_READY_PASSES_MAX && n->dirty_count;
         pass++) {
        uint32_t *list = n->dirty;
        size_t count = n->dirty_count;
        n->dirty = n->dirty_scratch;
        n->dirty_scratch = list;
        n->dirty_count = 0;
        for (size_t i = 0; i < count; i++) {
            struct shard *s = &n->shards[list[i]];
            s->dirty = false;
            if (s->in_ready || atomic_load(&n->failed) != 0 ||
                !raft_has_ready(s->r))
                continue;
            bool persisting = false;
            start_ready(n, s, &lsn, &persisting);
            if (persisting)
                n->waiting[n->waiting_count++] = s->id;
        }
    }
    /* Commit-only hard states may be in the batch with nobody waiting:
     * write them anyway (the next sync makes them durable). */
    int rc = batch_flush(n, &lsn);
    if (rc == 0 && n->waiting_count == first_waiting)
        return;
    if (rc != 0) {
        node_fail(n, "wal_append", rc);
        return;
    }
    for (size_t i = first_waiting; i < n->waiting_count; i++)
        n->shards[n->waiting[i]].wait_lsn = lsn;
    pthread_mutex_lock(&n->mu);
    if (lsn > n->target_lsn)
        n->target_lsn = lsn;
    pthread_cond_signal(&n->sync_cv);
    pthread_mutex_unlock(&n->mu);
}

/* Finish every shard whose ready is now durable. */
static void complete_durable(struct node *n, uint64_t durable)
{
    size_t k = 0;
    for (size_t i = 0; i < n->waiting_count; i++) {
        struct shard *s = &n->shards[n->waiting[i]];
        if (s->wait_lsn != 0 && s->wait_lsn <= durable &&
            atomic_load(&n->failed) == 0)
            finish_ready(n, s);
        else
            n->waiting[k++] = n->waiting[i];
    }
    n->waiting_count = k;
}

static void members_drive(struct node *n);

/* ---- follower log regressions (docs/node.md) ---------------------------- */

/* Once a tick: raft's lost-tail repairs (I9) grew, so a follower had lost
 * entries it acknowledged (a disk that dropped synced writes, or a torn
 * tail cut at its restart). Count and log it. raft's total only grows over
 * the life of s->r, whatever leaderships and memberships come and go. */
static void watch_regressions(struct node *n, struct shard *s)
{
    uint64_t follower = 0;
    uint64_t total = raft_regressions(s->r, &follower);
    if (total == s->regr_seen)
        return;
    assert(total > s->regr_seen); /* s->r lives as long as the shard */
    metrics_counter_add(&n->m.follower_regressions, total - s->regr_seen);
    log_warn("node", "follower lost entries it had acknowledged",
             "shard=%u follower=%llu events=%llu shard_total=%llu", s->id,
             (unsigned long long)follower,
             (unsigned long long)(total - s->regr_seen),
             (unsigned long long)total);
    s->regr_seen = total;
}

static void tick_all(struct node *n)
{
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        if (s->in_ready) {
            s->ticks_owed++;
            continue;
        }
        raft_tick(s->r);
        publish(n, s);
        mark_dirty(n, s);
        watch_regressions(n, s);
    }
    members_drive(n);
}

/* ---- membership changes (docs/node.md, "Membership changes") ------------ */

static const char *conf_op_name(uint32_t op)
{
    switch (op) {
    case RAFT_CONF_ADD_LEARNER:
        return "add_learner";
    case RAFT_CONF_PROMOTE:
        return "promote";
    case RAFT_CONF_ADD_VOTER:
        return "add_voter";
    case RAFT_CONF_REMOVE:
        return "remove";
    default:
        return "?";
    }
}

/* May the node thread call this shard's raft and does it lead? */
static bool leads_now(const struct node *n, const struct shard *s)
{
    return !s->in_ready && atomic_load(&n->failed) == 0 &&
           raft_role(s->r) == RAFT_LEADER;
}

/* The voter other than this node with the highest match (0: none). */
static uint64_t best_other_voter(const struct node *n, const struct shard *s)
{
    const struct raft_membership *m = raft_membership(s->r);
    uint64_t best = 0, best_match = 0;
    for (uint32_t i = 0; i < m->voters_count; i++) {
        struct raft_progress_info pi;
        uint64_t id = m->voters[i];
        if (id == n->o.node_id || raft_progress_of(s->r, id, &pi) != 0)
            continue;
        if (best == 0 || pi.match > best_match) {
            best = id;
            best_match = pi.match;
        }
    }
    return best;
}

/* Leader: hand the shard to `to` (UINT64_MAX: the most caught-up other
 * voter), Raft dissertation §3.10. Raft brings it up to date and sends
 * TIMEOUT_NOW; the transfer is abandoned after an election timeout. */
static void transfer_leader(struct node *n, struct shard *s, uint64_t to)
{
    if (to == UINT64_MAX)
        to = best_other_voter(n, s);
    if (to == 0)
        return;
    int rc = raft_transfer_leader(s->r, to);
    if (rc == 0)
        log_info("node", "leadership transfer started",
                 "shard=%u to=%llu term=%llu", s->id, (unsigned long long)to,
                 (unsigned long long)raft_term(s->r));
    mark_dirty(n, s);
}

/* Leader: propose one single-server change (raft refuses a second one
 * while one is uncommitted: INBOX_ECONF_CHANGE_PENDING, retried on the
 * next tick). */
static int conf_change(struct node *n, struct shard *s, uint32_t op,
                       uint64_t id)
{
    struct raft_conf_change cc = {.op = op, .node_id = id};
    uint64_t index = 0;
    int rc = raft_propose_conf_change(s->r, &cc, &index);
    if (rc == 0) {
        log_info("node", "membership change proposed",
                 "shard=%u op=%s node=%llu index=%llu term=%llu", s->id,
                 conf_op_name(op), (unsigned long long)id,
                 (unsigned long long)index,
                 (unsigned long long)raft_term(s->r));
        mark_dirty(n, s);
    }
    return rc;
}

static bool target_removing(const struct node *n, uint64_t id)
{
    for (uint32_t i = 0; i < n->tg_count; i++)
        if (n->tg[i].id == id && n->tg[i].remove)
            return true;
    return false;
}

/* Leader: promote a learner that caught up — its match is nonzero and
 * within NODE_PROMOTE_LAG_MAX of our last index — one change at a time.
 * A learner still behind would count toward the quorum the moment its
 * PROMOTE is appended and could stall every commit until it caught up. */
static void promote_learners(struct node *n, struct shard *s)
{
    const struct raft_membership *m = raft_membership(s->r);
    uint64_t last = raft_last_index(s->r);
    for (uint32_t i = 0; i < m->learners_count; i++) {
        uint64_t id = m->learners[i];
        struct raft_progress_info pi;
        if (target_removing(n, id) || raft_progress_of(s->r, id, &pi) != 0 ||
            pi.match == 0 || pi.match + NODE_PROMOTE_LAG_MAX < last)
            continue;
        if (conf_change(n, s, RAFT_CONF_PROMOTE, id) != INBOX_EINVAL)
            return; /* proposed (m changed under us), or one is pending */
    }
}

/* Leader: one step towards target t in shard s. True if a change or a
 * transfer was started (the shard's other targets wait for the next
 * tick: one conf change at a time). */
static bool target_act(struct node *n, struct shard *s,
                       const struct member_target *t)
{
    const struct raft_membership *m = raft_membership(s->r);
    bool voter = raft_membership_is_voter(m, t->id);
    bool learner = raft_membership_is_learner(m, t->id);
    if (!t->remove) {
        if (voter || learner)
            return false; /* promote_learners takes it from here */
        return conf_change(n, s, RAFT_CONF_ADD_LEARNER, t->id) == 0;
    }
    if (t->id == n->o.node_id) {
        /* A leader does not remove itself: it hands the shard over, and
         * the new leader removes it when asked (node_member_remove). */
        if (voter && raft_role(s->r) == RAFT_LEADER)
            transfer_leader(n, s, UINT64_MAX);
        return true;
    }
    if (voter && m->voters_count <= 1)
        return false; /* never the last voter */
    return conf_change(n, s, RAFT_CONF_REMOVE, t->id) == 0;
}

/* On every tick (and when a request arrives): for every shard this node
 * leads, work on the pending targets, then promote caught-up learners.
 * A target is done once every shard, as this node sees it, has it as a
 * voter (add) or not at all (remove). */
static void members_drive(struct node *n)
{
    if (atomic_load(&n->failed) != 0)
        return;
    bool done[NODE_MEMBER_TARGETS_MAX];
    for (uint32_t t = 0; t < n->tg_count; t++)
        done[t] = true;
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        bool lead = leads_now(n, s), acted = false;
        for (uint32_t t = 0; t < n->tg_count; t++) {
            const struct member_target *tg = &n->tg[t];
            const struct raft_membership *m = raft_membership(s->r);
            bool voter = raft_membership_is_voter(m, tg->id);
            bool goal = tg->remove
                            ? !voter && !raft_membership_is_learner(m, tg->id)
                            : voter;
            if (goal)
                continue;
            done[t] = false;
            if (lead && !acted)
                acted = target_act(n, s, tg);
        }
        if (lead && !acted && raft_role(s->r) == RAFT_LEADER)
            promote_learners(n, s);
    }
    uint32_t k = 0;
    for (uint32_t t = 0; t < n->tg_count; t++) {
        if (done[t]) {
            log_info("node", "membership request done", "op=%s node=%llu",
                     n->tg[t].remove ? "remove" : "add",
                     (unsigned long long)n->tg[t].id);
            continue;
        }
        n->tg[k++] = n->tg[t];
    }
    n->tg_count = k;
}

/* Add t to a bounded target list: a request for the same id replaces the
 * older one; past the bound the oldest goes. */
static void targets_put(struct member_target *list, uint32_t *count,
                        const struct member_target *t)
{
    for (uint32_t i = 0; i < *count; i++) {
        if (list[i].id == t->id) {
            list[i] = *t;
            return;
        }
    }
    if (*count == NODE_MEMBER_TARGETS_MAX) {
        memmove(list, list + 1, (*count - 1u) * sizeof(*list));
        (*count)--;
    }
    list[(*count)++] = *t;
}

/* Transfers asked by node_transfer_leader. A shard in its ready cycle
 * keeps its request for the next pass. */
static void transfers_run(struct node *n)
{
    bool again = false;
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        if (atomic_load_explicit(&s->xfer_to, memory_order_relaxed) == 0)
            continue;
        if (s->in_ready) {
            again = true;
            continue;
        }
        uint64_t to = atomic_exchange(&s->xfer_to, 0);
        if (to != 0 && leads_now(n, s))
            transfer_leader(n, s, to);
    }
    if (again)
        atomic_store(&n->xfer_pending, true);
}

/* ---- checkpoints -------------------------------------------------------- */

/* A leader keeps the entries its slowest follower still lacks, so a
 * follower that was down a while catches up from the log rather than by
 * snapshot, up to node_options.retain_entries_max entries behind. */
static uint64_t retain_for_followers(const struct node *n,
                                     const struct shard *s, uint64_t d)
{
    if (raft_role(s->r) != RAFT_LEADER)
        return d;
    const struct raft_membership *m = raft_membership(s->r);
    uint64_t floor = d;
    for (uint32_t i = 0; i < m->voters_count + m->learners_count; i++) {
        uint64_t id = i < m->voters_count ? m->voters[i]
                                          : m->learners[i - m->voters_count];
        if (id == n->o.node_id)
            continue;
        uint64_t match = raft_match_of(s->r, id);
        if (match < floor && d - match <= n->o.retain_entries_max)
            floor = match;
    }
    return floor;
}

/* The membership at d, the release point a checkpoint is about to move s
 * to: the one at the current release point plus the configuration
 * entries in (released, d], read back from the WAL (only from conf_from:
 * below it there are none). When it differs, the shard's DATA/members
 * record is updated in memory (*changed; the caller writes the file
 * before releasing). */
static int membership_before_release(struct node *n, struct shard *s,
                                     uint64_t d, bool *changed)
{
    s->memb_next_ok = false;
    if (s->conf_from == 0 || d < s->conf_from)
        return 0; /* no configuration entry in (released, d] */
    struct raft_membership m = s->log.membership;
    uint64_t lo = s->conf_from > s->released ? s->conf_from : s->released + 1u;
    uint64_t last_conf = 0;
    int rc = snapshot_conf_scan(n->wal, s->id, lo, d, &m, &last_conf);
    if (rc != 0)
        return rc;
    s->memb_next = m;
    s->memb_next_ok = true;
    if (last_conf != 0 && !members_same(&m, &s->log.membership)) {
        members_rec_set(n, s, last_conf, &m);
        *changed = true;
    }
    return 0;
}

/* The release to d is durable: the membership computed for it is the one
 * at the release point now. */
static void membership_released(struct shard *s, uint64_t d)
{
    if (!s->memb_next_ok)
        return;
    raft_log_set_membership(&s->log, &s->memb_next);
    s->memb_next_ok = false;
    /* Entries above d that are configuration entries: at most those in
     * (d, conf_hi]; start looking right after d next time. */
    s->conf_from = s->conf_hi > d ? d + 1u : 0;
}

/* Commit the store (full sync), then release every shard's WAL prefix up to
 * what the store now holds durably (and no follower still needs), so old
 * segments get deleted. A shard released past configuration entries gets
 * its membership at the new release point written to DATA/members first
 * (one file write for all of them), so a restart finds it. */
static int checkpoint(struct node *n)
{
    if (atomic_load(&n->failed) != 0)
        return INBOX_EFAILED;
    if (!n->applied_since_ckpt)
        return 0; /* an idle node does not sync every interval */
    n->applied_since_ckpt = false;
    uint64_t t0 = mono_us();
    int rc = store_checkpoint(n->store);
    if (rc != 0) {
        node_fail(n, "store_checkpoint", rc);
        return rc;
    }
    size_t k = 0;
    bool members_changed = false;
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        uint64_t d = 0, term = 0;
        if (store_durable_index(n->store, s->id, &d) != 0)
            continue;
        d = retain_for_followers(n, s, d);
        if (d <= s->released || wal_term(n->wal, s->id, d, &term) != 0)
            continue;
        rc = membership_before_release(n, s, d, &members_changed);
        if (rc != 0) {
            /* The WAL lacks entries it should hold: keep this shard's log
             * whole rather than lose its membership. */
            log_error("node", "cannot read configuration entries back",
                      "shard=%u from=%llu to=%llu err=%s", s->id,
                      (unsigned long long)s->released, (unsigned long long)d,
                      inbox_err_name(rc));
            continue;
        }
        n->rels[k].shard = s->id;
        n->rels[k].index = d;
        n->rels[k].term = term;
        k++;
    }
    /* Durable before any release makes it true (DATA/members). */
    if (members_changed &&
        (rc = members_write(n->data_dir, n->shard_count, n->mrecs)) != 0) {
        node_fail(n, "members write (checkpoint)", rc);
        return rc;
    }
    for (size_t done = 0; done < k;) {
        size_t chunk = k - done;
        if (chunk > INBOX_WAL_BATCH_RECORDS_MAX)
            chunk = INBOX_WAL_BATCH_RECORDS_MAX;
        rc = wal_release_prefixes(n->wal, n->rels + done, chunk);
        if (rc != 0) {
            node_fail(n, "wal_release_prefixes", rc);
            return rc;
        }
        for (size_t i = done; i < done + chunk; i++) {
            struct shard *s = &n->shards[n->rels[i].shard];
            s->released = n->rels[i].index;
            membership_released(s, s->released);
            publish(n, s);
        }
        done += chunk;
    }
    struct wal_stats ws;
    wal_stats_get(n->wal, &ws);
    metrics_gauge_set(&n->m.wal_segments, (int64_t)ws.segments);
    metrics_counter_add(&n->m.checkpoints, 1);
    metrics_histogram_record(&n->m.checkpoint_us, mono_us() - t0);
    return 0;
}

/* ---- the node thread ---------------------------------------------------- */

static void *raft_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void raft_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    (void)size;
    free(p);
}

/* The membership at the shard's release point R: its DATA/members record
 * (or the bootstrap one), normalized so the in-memory record is the one in
 * effect at R (a crash between writing a record and the release it
 * announced leaves it ahead of R: its prev is in effect). Configuration
 * entries above R are raft's to read back; the next checkpoint looks for
 * them from R + 1. */
static int shard_membership(struct node *n, struct shard *s,
                            struct raft_membership *m)
{
    uint64_t first = 1, last = 0, index = 0;
    (void)wal_range(n->wal, s->id, &first, &last);
    uint64_t release = first - 1u;
    struct members_rec *r = &n->mrecs[s->id];
    int rc = members_effective(r, release, &n->boot, m, &index);
    if (rc != 0) {
        (void)fmt(
            n->errmsg, sizeof(n->errmsg),
            "%s/%s: shard %u's record (index %llu, previous %llu) is "
            "ahead of its WAL release point %llu",
            n->data_dir, MEMBERS_FILE, s->id, (unsigned long long)r->index,
            (unsigned long long)r->prev_index, (unsigned long long)release);
        return rc;
    }
    if (r->present && r->index > release) {
        log_warn("node",
                 "membership record ahead of the WAL: using the "
                 "previous one",
                 "shard=%u index=%llu release=%llu", s->id,
                 (unsigned long long)r->index, (unsigned long long)release);
        r->m = r->prev;
        r->index = r->prev_index;
    }
    s->conf_from = last > release ? release + 1u : 0;
    s->conf_hi = last;
    return 0;
}

static int shard_start(struct node *n, struct shard *s)
{
    struct store_shard_info info;
    int rc = store_applied(n->store, s->id, &info);
    if (rc != 0)
        return rc;
    snapshot_stage_init(&s->stage);
    rc = finish_interrupted_install(n, s, &info);
    if (rc != 0) {
        (void)fmt(n->errmsg, sizeof(n->errmsg),
                  "shard %u: cannot finish a snapshot install at %llu: %s",
                  s->id, (unsigned long long)info.applied_index,
                  inbox_strerror(rc));
        return rc;
    }
    struct raft_membership memb;
    rc = shard_membership(n, s, &memb);
    if (rc != 0)
        return rc;
    raft_log_init(&s->log, n->wal, s->id, &memb);
    struct raft_hard_state hs;
    rc = raft_log_hard_state(&s->log, &hs);
    if (rc != 0)
        return rc;
    /* The store applies only committed entries, so whatever it applied is
     * committed, even if the commit-only hard state that said so was not
     * yet synced when the node stopped (start_ready does not wait for
     * those). */
    if (info.applied_index > hs.commit)
        hs.commit = info.applied_index;
    s->hs_term = hs.term;
    s->hs_vote = hs.vote;
    if (info.now_ms > n->last_ts_ms)
        n->last_ts_ms = info.now_ms;
    struct raft_options ro;
    raft_options_default(&ro);
    ro.id = n->o.node_id;
    ro.group = s->id;
    ro.seed = n->o.node_id * 0x9E3779B97F4A7C15ull ^ (s->id + 1u) ^ wall_ms();
    if (n->o.election_ticks)
        ro.election_ticks = n->o.election_ticks;
    if (n->o.heartbeat_ticks)
        ro.heartbeat_ticks = n->o.heartbeat_ticks;
    ro.lease_reads = n->o.lease_reads;
    if (n->o.uncommitted_bytes_max)
        ro.uncommitted_bytes_max = n->o.uncommitted_bytes_max;
    /* One APPEND (and one snapshot chunk) must fit in one RAFT frame. */
    ro.msg_bytes_max = INBOX_NODE_RAFT_MSG_BYTES_MAX;
    if (n->o.snapshot_chunk_bytes)
        ro.snapshot_chunk_bytes = n->o.snapshot_chunk_bytes;
    if (ro.snapshot_chunk_bytes > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX)
        ro.snapshot_chunk_bytes = INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX;
    ro.applied = info.applied_index;
#ifdef INBOX_PLANT_DOUBLE_APPLY_AFTER_RESTART
    /* PLANTED BUG (jepsen/README.md): raft restarts from applied 0 (raft
     * raises it to the WAL's release point), so every committed entry the
     * WAL still holds is applied again; store.c's replay guard is planted
     * out too. */
    ro.applied = 0;
#endif
    raft_log_storage(&s->log, &ro.storage);
    ro.allocator.alloc = raft_alloc;
    ro.allocator.free = raft_free;
    rc = raft_create(&ro, &hs, &s->r);
    raft_log_reads_done(&s->log);
    if (rc != 0) {
        (void)fmt(n->errmsg, sizeof(n->errmsg),
                  "shard %u: cannot recover raft (store applied %llu, wal "
                  "commit %llu): %s",
                  s->id, (unsigned long long)info.applied_index,
                  (unsigned long long)hs.commit, inbox_strerror(rc));
        return rc;
    }
    raft_log_snapshots_enable(&s->log, &n->snap_hooks);
    s->applied = info.applied_index;
    uint64_t first = 1, last = 0;
    (void)wal_range(n->wal, s->id, &first, &last);
    s->released = first - 1u;
#ifdef INBOX_PLANT_DOUBLE_APPLY_AFTER_RESTART
    s->applied = s->released; /* where the planted raft restarts */
#endif
    /* One voter, and it is us: no election to wait for. */
    if (single_self_voter(n, raft_membership(s->r)))
        (void)raft_campaign(s->r);
    s->role_seen = RAFT_FOLLOWER;
    publish(n, s);
    mark_dirty(n, s);
    return 0;
}

static int node_startup(struct node *n)
{
    char path[PATH_BYTES_MAX];
    struct store_options so;
    store_options_init(&so);
    (void)fmt(path, sizeof(path), "%s/store", n->data_dir);
    so.path = path;
    if (n->o.store_map_bytes)
        so.map_size = n->o.store_map_bytes;
    if (n->o.inbox_pending_messages_max)
        so.pending_messages_max = n->o.inbox_pending_messages_max;
    if (n->o.inbox_pending_bytes_max)
        so.pending_bytes_max = n->o.inbox_pending_bytes_max;
    if (n->o.dedup_window_ms)
        so.dedup_window_ms = n->o.dedup_window_ms;
#ifdef INBOX_PLANT_DEDUP_WINDOW_ZERO
    /* PLANTED BUG (jepsen/README.md): no msg-id dedup window, so a retried
     * enqueue whose first try took effect is applied again. */
    so.dedup_window_ms = 0;
#endif
    int rc = store_open(&so, &n->store);
    if (rc != 0) {
        (void)fmt(n->errmsg, sizeof(n->errmsg), "%s: cannot open store: %s",
                  path, inbox_strerror(rc));
        return rc;
    }
    (void)fmt(path, sizeof(path), "%s/wal", n->data_dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        (void)fmt(n->errmsg, sizeof(n->errmsg), "%s: %s", path,
                  strerror(errno));
        return rc;
    }
    char walmsg[NODE_ERRMSG_BYTES] = "";
    struct wal_options wo = {
        .dir = path,
        .segment_bytes = n->o.wal_segment_bytes,
        .vfs = n->o.wal_vfs,
        .errmsg = walmsg,
        .errmsg_bytes = sizeof(walmsg),
    };
    rc = wal_open(&wo, &n->wal);
    if (rc != 0) {
        (void)fmt(n->errmsg, sizeof(n->errmsg), "cannot open WAL: %s: %s",
                  inbox_strerror(rc), walmsg);
        return rc;
    }
    struct wal_stats ws;
    wal_stats_get(n->wal, &ws);
    if (ws.torn_bytes > 0)
        /* After a crash, un-synced writes; if more was lost, raft repairs
         * this node from its peers (docs/raft.md, "lost tail"). */
        log_warn("node", "wal: cut a torn tail",
                 "segment=%016llx offset=%llu bytes=%llu",
                 (unsigned long long)ws.torn_segment,
                 (unsigned long long)ws.torn_offset,
                 (unsigned long long)ws.torn_bytes);
    rc = snapshot_dir_init(n->data_dir, n->snap_dir, sizeof(n->snap_dir));
    if (rc != 0) {
        (void)fmt(n->errmsg, sizeof(n->errmsg), "%s/snap: %s", n->data_dir,
                  inbox_strerror(rc));
        return rc;
    }
    n->snap_hooks.ctx = n;
    n->snap_hooks.make = snap_make;
    for (uint32_t i = 0; i < n->shard_count; i++) {
        rc = shard_start(n, &n->shards[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void shards_destroy(struct node *n)
{
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        if (s->r)
            raft_destroy(s->r);
        s->r = NULL;
        raft_log_free(&s->log);
        snapshot_stage_drop(&s->stage);
        free(s->parked);
        s->parked = NULL;
        s->parked_len = s->parked_cap = 0;
    }
}

static void fail_everything(struct node *n, int rc)
{
    for (uint32_t i = 0; i < n->shard_count; i++) {
        struct shard *s = &n->shards[i];
        pq_fail_all(n, &s->incoming, rc);
        pq_fail_all(n, &s->proposed, rc);
        pq_fail_all(n, &s->reading, rc);
        pq_fail_all(n, &s->read_wait, rc);
        pq_fail_all(n, &s->retry, rc);
    }
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Wait for work: a submission, a durability report, a control request, or
 * the next timer. Returns with n->mu held. */
static void wait_for_work(struct node *n, uint64_t seen_durable, int seen_stop,
                          uint64_t wake_at_ms)
{
    pthread_mutex_lock(&n->mu);
    while (!n->sub_head && !n->in_head && n->durable_lsn == seen_durable &&
           !n->sync_err && n->stop == seen_stop && !n->member_kick &&
           n->ckpt_asked == n->ckpt_done) {
        uint64_t now = mono_ms();
        if (now >= wake_at_ms)
            break;
        struct timespec ts;
        deadline_ts(&ts, wake_at_ms - now);
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
    }
}

static void inbatches_free(struct inbatch *b)
{
    while (b) {
        struct inbatch *next = b->next;
        free(b);
        b = next;
    }
}

static bool drained(const struct node *n)
{
    return atomic_load(&n->reqs_live) == 0 && n->waiting_count == 0;
}

static void node_loop(struct node *n)
{
    uint64_t tick_ms = n->o.tick_interval_ms;
    uint64_t ckpt_ms = n->o.checkpoint_interval_ms;
    uint64_t next_tick = mono_ms() + tick_ms;
    uint64_t next_ckpt = mono_ms() + ckpt_ms;
    uint64_t seen_durable = 0, drain_until = 0;
    int stop = 0;
    for (;;) {
        bool idle = n->dirty_count == 0;
        wait_for_work(n, seen_durable, stop,
                      idle ? min_u64(next_tick, next_ckpt) : 0);
        struct req *list = n->sub_head;
        n->sub_head = n->sub_tail = NULL;
        struct inbatch *in = n->in_head;
        n->in_head = n->in_tail = NULL;
        n->in_bytes = 0;
        uint64_t durable = n->durable_lsn;
        int sync_err = n->sync_err;
        stop = n->stop;
        bool ckpt_asked = n->ckpt_asked != n->ckpt_done;
        uint64_t ckpt_ticket = n->ckpt_asked;
        bool kick = n->member_kick;
        n->member_kick = false;
        for (uint32_t i = 0; i < n->targets_count; i++)
            targets_put(n->tg, &n->tg_count, &n->targets[i]);
        n->targets_count = 0;
        pthread_mutex_unlock(&n->mu);

        if (stop == 2) {
            n->aborting = true;
            inbatches_free(in);
            dispatch_requests(n, list);
            return;
        }
        if (sync_err != 0)
            node_fail(n, "wal_sync", sync_err);
        seen_durable = durable;
        complete_durable(n, durable);
        for (struct inbatch *b = in; b; b = b->next)
            if (atomic_load(&n->failed) == 0)
                step_batch(n, b->data, b->len, true);
        inbatches_free(in);
        dispatch_requests(n, list);
        if (atomic_exchange(&n->xfer_pending, false))
            transfers_run(n);
        if (kick)
            members_drive(n);
        uint64_t now = mono_ms();
        if (now >= next_tick) {
            tick_all(n);
            next_tick = now + tick_ms;
        }
        if (now >= next_ckpt || ckpt_asked) {
            snapshots_gc(n);
            int rc = checkpoint(n);
            next_ckpt = mono_ms() + ckpt_ms;
            if (ckpt_asked) {
                pthread_mutex_lock(&n->mu);
                n->ckpt_done = ckpt_ticket;
                n->ckpt_rc = rc;
                pthread_cond_broadcast(&n->ctl_cv);
                pthread_mutex_unlock(&n->mu);
            }
        }
        run_ready(n);
        outboxes_flush(n);
        if (stop == 1) {
            if (drain_until == 0)
                drain_until = mono_ms() + INBOX_NODE_DRAIN_MS_MAX;
            if (drained(n) || atomic_load(&n->failed) != 0 ||
                mono_ms() >= drain_until)
                return;
        }
    }
}

static void *node_main(void *arg)
{
    struct node *n = arg;
    int rc = node_startup(n);
    pthread_mutex_lock(&n->mu);
    n->start_done = true;
    n->start_rc = rc;
    pthread_cond_broadcast(&n->ctl_cv);
    pthread_mutex_unlock(&n->mu);
    if (rc == 0) {
        node_loop(n);
        fail_everything(n, INBOX_ESHUTDOWN);
        if (!n->aborting && atomic_load(&n->failed) == 0) {
            /* Graceful: everything appended is made durable by the
             * checkpoint's release (which syncs), or by this sync. */
            pthread_mutex_lock(&n->mu);
            uint64_t target = n->target_lsn;
            pthread_mutex_unlock(&n->mu);
            int src = wal_sync(n->wal, target);
            if (src != 0)
                node_fail(n, "wal_sync", src);
            (void)checkpoint(n);
        }
    }
    shards_destroy(n);
    if (n->store)
        store_close(n->store);
    n->store = NULL;
    pthread_mutex_lock(&n->mu);
    n->exited = true;
    pthread_cond_broadcast(&n->ctl_cv);
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* ---- the sync thread ---------------------------------------------------- */

static void *sync_main(void *arg)
{
    struct node *n = arg;
    pthread_mutex_lock(&n->mu);
    for (;;) {
        while (!n->sync_stop && n->sync_err == 0 &&
               n->target_lsn <= n->durable_lsn)
            pthread_cond_wait(&n->sync_cv, &n->mu);
        if (n->sync_stop || n->sync_err != 0)
            break;
        uint64_t target = n->target_lsn;
        pthread_mutex_unlock(&n->mu);
        struct wal_stats before, after;
        wal_stats_get(n->wal, &before);
        uint64_t t0 = mono_us();
#ifndef INBOX_PLANT_ACK_BEFORE_FSYNC
        int rc = wal_sync(n->wal, target);
#else
        /* PLANTED BUG (jepsen/README.md): appended records are taken as
         * durable without an fdatasync, so followers ack and leaders count
         * themselves before the disk has the entries (they reach it at the
         * next segment seal or checkpoint release). A power cut loses
         * them; a process kill does not (the page cache keeps them). */
        int rc = 0;
#endif
        metrics_histogram_record(&n->m.fsync_us, mono_us() - t0);
        wal_stats_get(n->wal, &after);
        if (rc == 0 && after.records_synced > before.records_synced)
            metrics_histogram_record(&n->m.fsync_records,
                                     after.records_synced -
                                         before.records_synced);
        pthread_mutex_lock(&n->mu);
        if (rc != 0)
            n->sync_err = rc;
        else
            n->durable_lsn = target;
        pthread_cond_signal(&n->cv);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* ---- metrics ------------------------------------------------------------ */

#define DESC(nm, hp, ty, lb, val, sc)                                          \
    (struct metrics_desc)                                                      \
    {                                                                          \
        .name = nm, .help = hp, .type = ty, .labels = lb, .value = val,        \
        .scale = sc                                                            \
    }

static int metrics_build(struct node *n)
{
    size_t cap = 24u + 2u * n->shard_count;
    n->descs = calloc(cap, sizeof(*n->descs));
    if (!n->descs)
        return INBOX_ENOMEM;
    struct metrics_desc *d = n->descs;
    size_t k = 0;
    d[k++] = DESC("inbox_node_proposals_total", "Commands proposed to raft",
                  METRICS_COUNTER, NULL, &n->m.proposals, 0);
    d[k++] = DESC("inbox_node_proposals_failed_total",
                  "Write requests answered with an error", METRICS_COUNTER,
                  NULL, &n->m.proposals_failed, 0);
    d[k++] = DESC("inbox_node_reads_total", "Reads served", METRICS_COUNTER,
                  NULL, &n->m.reads, 0);
    d[k++] = DESC("inbox_node_applied_entries_total",
                  "Raft entries applied to the store", METRICS_COUNTER, NULL,
                  &n->m.applied, 0);
    d[k++] = DESC("inbox_node_busy_total",
                  "Requests refused because a queue was full", METRICS_COUNTER,
                  NULL, &n->m.busy, 0);
    d[k++] = DESC("inbox_node_wal_appends_total", "wal_append calls",
                  METRICS_COUNTER, NULL, &n->m.wal_appends, 0);
    d[k++] = DESC("inbox_node_checkpoints_total", "Store checkpoints",
                  METRICS_COUNTER, NULL, &n->m.checkpoints, 0);
    d[k++] = DESC("inbox_node_storage_failed",
                  "1 once the WAL or the store failed (sticky)", METRICS_GAUGE,
                  NULL, &n->m.failed, 0);
    d[k++] = DESC("inbox_node_wal_segments", "WAL segment files", METRICS_GAUGE,
                  NULL, &n->m.wal_segments, 0);
    d[k++] = DESC("inbox_node_wal_fsync_seconds",
                  "Latency of the sync thread's wal_sync (group commit)",
                  METRICS_HISTOGRAM, NULL, &n->m.fsync_us, 1e-6);
    d[k++] = DESC("inbox_node_wal_append_records",
                  "Records per wal_append (one per round of readies)",
                  METRICS_HISTOGRAM, NULL, &n->m.append_records, 0);
    d[k++] = DESC("inbox_node_wal_fsync_records",
                  "Records made durable per group commit", METRICS_HISTOGRAM,
                  NULL, &n->m.fsync_records, 0);
    d[k++] = DESC("inbox_node_checkpoint_seconds",
                  "Store checkpoint plus WAL release", METRICS_HISTOGRAM, NULL,
                  &n->m.checkpoint_us, 1e-6);
    d[k++] = DESC("inbox_node_peer_msgs_in_total",
                  "Raft messages received from other nodes", METRICS_COUNTER,
                  NULL, &n->m.peer_msgs_in, 0);
    d[k++] = DESC("inbox_node_peer_msgs_out_total",
                  "Raft messages handed to the peer transport", METRICS_COUNTER,
                  NULL, &n->m.peer_msgs_out, 0);
    d[k++] = DESC("inbox_node_peer_msgs_dropped_total",
                  "Raft messages dropped (malformed, unknown shard, bounds)",
                  METRICS_COUNTER, NULL, &n->m.peer_msgs_dropped, 0);
    d[k++] = DESC("inbox_node_snapshots_made_total",
                  "Shard snapshots materialized for followers (leader)",
                  METRICS_COUNTER, NULL, &n->m.snapshots_made, 0);
    d[k++] = DESC("inbox_node_snapshot_chunks_sent_total",
                  "InstallSnapshot chunks sent to followers", METRICS_COUNTER,
                  NULL, &n->m.snapshot_chunks_sent, 0);
    d[k++] = DESC("inbox_node_snapshots_sent_total",
                  "Last chunks of snapshots sent to followers", METRICS_COUNTER,
                  NULL, &n->m.snapshots_sent, 0);
    d[k++] = DESC("inbox_node_snapshots_installed_total",
                  "Snapshots received and installed (follower)",
                  METRICS_COUNTER, NULL, &n->m.snapshots_installed, 0);
    d[k++] = DESC("inbox_node_snapshot_make_seconds",
                  "Materializing a shard snapshot file", METRICS_HISTOGRAM,
                  NULL, &n->m.snapshot_make_us, 1e-6);
    d[k++] = DESC("inbox_node_snapshot_install_seconds",
                  "Restore, store checkpoint and WAL reset of an install",
                  METRICS_HISTOGRAM, NULL, &n->m.snapshot_install_us, 1e-6);
    d[k++] = DESC("inbox_node_raft_follower_log_regressions_total",
                  "Times a follower was found to have lost entries it had "
                  "acknowledged (leader)",
                  METRICS_COUNTER, NULL, &n->m.follower_regressions, 0);
    for (uint32_t i = 0; i < n->shard_count; i++)
        d[k++] =
            DESC("inbox_node_raft_role",
                 "Raft role per shard (0 follower, 1 pre-candidate, 2 "
                 "candidate, 3 leader)",
                 METRICS_GAUGE, n->shards[i].label, &n->shards[i].g_role, 0);
    for (uint32_t i = 0; i < n->shard_count; i++)
        d[k++] =
            DESC("inbox_node_raft_term", "Raft term per shard", METRICS_GAUGE,
                 n->shards[i].label, &n->shards[i].g_term, 0);
    assert(k <= cap);
    n->descs_count = k;
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

void node_options_init(struct node_options *o)
{
    memset(o, 0, sizeof(*o));
}

void node_options_from_config(struct node_options *o, const struct config *c)
{
    node_options_init(o);
    o->data_dir = c->data_dir;
    o->node_id = c->node_id;
    o->shard_count = (uint32_t)c->shard_count;
    o->wal_segment_bytes = c->wal_segment_bytes;
    o->store_map_bytes = c->store_map_bytes;
    o->checkpoint_interval_ms = (uint32_t)c->store_checkpoint_ms;
    o->inbox_pending_messages_max = (uint32_t)c->inbox_pending_messages_max;
    o->inbox_pending_bytes_max = c->inbox_pending_bytes_max;
    o->dedup_window_ms = c->dedup_window_ms;
    o->tick_interval_ms = (uint32_t)c->raft_tick_ms;
    o->election_ticks = (uint32_t)c->raft_election_ticks;
    o->heartbeat_ticks = (uint32_t)c->raft_heartbeat_ticks;
    o->lease_reads = c->raft_lease_reads != 0;
    o->retain_entries_max = c->raft_retain_entries;
    o->join = c->join != 0;
    struct config_member ms[CONFIG_MEMBERS_MAX];
    size_t mc = 0;
    if (config_members(c, ms, &mc, NULL, 0) == 0) {
        o->members_count = (uint32_t)mc;
        for (size_t i = 0; i < mc; i++)
            o->members[i] = ms[i].id;
    }
}

static void errmsg_set(const struct node_options *o, const char *msg)
{
    if (o->errmsg && o->errmsg_bytes)
        (void)fmt(o->errmsg, o->errmsg_bytes, "%s", msg);
}

static int options_check(struct node_options *o, char *err, size_t err_bytes)
{
    if (!o->data_dir || !o->data_dir[0] ||
        strlen(o->data_dir) >= PATH_BYTES_MAX - 64u) {
        (void)fmt(err, err_bytes, "data_dir missing or too long");
        return INBOX_EINVAL;
    }
    if (o->node_id == 0 || o->shard_count == 0 ||
        o->shard_count > INBOX_SHARD_COUNT_MAX) {
        (void)fmt(err, err_bytes,
                  "node_id must be nonzero and shard_count in "
                  "1..%u",
                  INBOX_SHARD_COUNT_MAX);
        return INBOX_EINVAL;
    }
    if (o->members_count > INBOX_RAFT_VOTERS_MAX) {
        (void)fmt(err, err_bytes, "at most %u members", INBOX_RAFT_VOTERS_MAX);
        return INBOX_EINVAL;
    }
    bool self_member = o->members_count == 0;
    for (uint32_t i = 0; i < o->members_count; i++) {
        if (o->members[i] == 0) {
            (void)fmt(err, err_bytes, "member ids must be nonzero");
            return INBOX_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++)
            if (o->members[j] == o->members[i]) {
                (void)fmt(err, err_bytes, "member %llu listed twice",
                          (unsigned long long)o->members[i]);
                return INBOX_EINVAL;
            }
        self_member |= o->members[i] == o->node_id;
    }
    if (o->join && o->members_count == 0) {
        (void)fmt(err, err_bytes,
                  "a joining node needs the members the cluster was created "
                  "with");
        return INBOX_EINVAL;
    }
    if (!self_member && !o->join) {
        (void)fmt(err, err_bytes,
                  "node %llu is not among the bootstrap members",
                  (unsigned long long)o->node_id);
        return INBOX_EINVAL;
    }
    if (!o->tick_interval_ms)
        o->tick_interval_ms = NODE_TICK_MS_DEFAULT;
    if (!o->requests_max || o->requests_max > INBOX_NODE_REQUESTS_MAX)
        o->requests_max = INBOX_NODE_REQUESTS_MAX;
    if (!o->retain_entries_max ||
        o->retain_entries_max > INBOX_NODE_RETAIN_ENTRIES_MAX)
        o->retain_entries_max = INBOX_NODE_RETAIN_ENTRIES_MAX;
    if (o->snapshot_chunk_bytes > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX)
        o->snapshot_chunk_bytes = INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX;
    if (!o->checkpoint_interval_ms)
        o->checkpoint_interval_ms = NODE_CHECKPOINT_MS_DEFAULT;
    if (o->tick_interval_ms < INBOX_NODE_TICK_MS_MIN ||
        o->tick_interval_ms > INBOX_NODE_TICK_MS_MAX ||
        o->checkpoint_interval_ms < INBOX_NODE_CHECKPOINT_MS_MIN ||
        o->checkpoint_interval_ms > INBOX_NODE_CHECKPOINT_MS_MAX) {
        (void)fmt(err, err_bytes, "tick or checkpoint interval out of range");
        return INBOX_ERANGE;
    }
    return 0;
}

/* Read the identity, or write it on first start; refuse a mismatch. */
static int identity(struct node *n, char *err, size_t err_bytes)
{
    struct node_meta m;
    int rc = node_meta_read(n->data_dir, &m);
    if (rc == INBOX_ENOTFOUND) {
        memset(&m, 0, sizeof(m));
        m.node_id = n->o.node_id;
        m.shard_count = n->o.shard_count;
        if (n->o.members_count == 0) {
            m.voters_count = 1;
            m.voters[0] = n->o.node_id;
        } else {
            m.voters_count = n->o.members_count;
            memcpy(m.voters, n->o.members,
                   n->o.members_count * sizeof(m.voters[0]));
        }
        rc = node_meta_write(n->data_dir, &m);
        if (rc != 0) {
            (void)fmt(err, err_bytes, "%s/%s: cannot write: %s", n->data_dir,
                      NODE_META_FILE, inbox_strerror(rc));
            return rc;
        }
        log_info("node", "new node: identity written",
                 "node=%llu shards=%u voters=%u", (unsigned long long)m.node_id,
                 m.shard_count, m.voters_count);
    } else if (rc != 0) {
        (void)fmt(err, err_bytes, "%s/%s: unreadable: %s", n->data_dir,
                  NODE_META_FILE, inbox_strerror(rc));
        return rc;
    }
    if (m.shard_count != n->o.shard_count) {
        (void)fmt(err, err_bytes,
                  "%s was created with shard_count %u, asked for %u: the shard "
                  "count is fixed when a cluster is created",
                  n->data_dir, m.shard_count, n->o.shard_count);
        return INBOX_EINVAL;
    }
    if (m.node_id != n->o.node_id) {
        (void)fmt(err, err_bytes, "%s belongs to node %llu, not node %llu",
                  n->data_dir, (unsigned long long)m.node_id,
                  (unsigned long long)n->o.node_id);
        return INBOX_EINVAL;
    }
    memset(&n->boot, 0, sizeof(n->boot));
    n->boot.voters_count = m.voters_count;
    memcpy(n->boot.voters, m.voters, m.voters_count * sizeof(m.voters[0]));
    return 0;
}

static int alloc_buffers(struct node *n)
{
    uint32_t sc = n->shard_count;
    n->shards = calloc(sc, sizeof(*n->shards));
    n->dirty = calloc(sc, sizeof(*n->dirty));
    n->dirty_scratch = calloc(sc, sizeof(*n->dirty_scratch));
    n->waiting = calloc(sc, sizeof(*n->waiting));
    n->rels = calloc(sc, sizeof(*n->rels));
    n->cmd_buf = malloc(INBOX_COMMAND_BYTES_MAX);
    n->tmp_targets = calloc(INBOX_FANOUT_INBOXES_MAX, sizeof(*n->tmp_targets));
    n->tmp_refs = calloc(INBOX_SEEN_GET_INBOXES_MAX, sizeof(*n->tmp_refs));
    n->tmp_seen = calloc(INBOX_SEEN_GET_INBOXES_MAX, sizeof(*n->tmp_seen));
    n->fetch_buf = calloc(INBOX_FETCH_MESSAGES_MAX, sizeof(*n->fetch_buf));
    n->wire_ents = calloc(INBOX_RAFT_MSG_ENTRIES_MAX, sizeof(*n->wire_ents));
    n->mrecs = calloc(sc, sizeof(*n->mrecs));
    if (!n->mrecs || !n->shards || !n->dirty || !n->dirty_scratch ||
        !n->waiting || !n->rels || !n->cmd_buf || !n->tmp_targets ||
        !n->tmp_refs || !n->tmp_seen || !n->fetch_buf || !n->wire_ents)
        return INBOX_ENOMEM;
    for (uint32_t i = 0; i < sc; i++) {
        n->shards[i].id = i;
        snapshot_stage_init(&n->shards[i].stage);
        snapshot_file_init(&n->shards[i].log.snap);
        (void)fmt(n->shards[i].label, sizeof(n->shards[i].label),
                  "shard=\"%u\"", i);
    }
    return 0;
}

static void node_free(struct node *n)
{
    if (!n)
        return;
    free(n->shards);
    free(n->dirty);
    free(n->dirty_scratch);
    free(n->waiting);
    free(n->rels);
    free(n->cmd_buf);
    free(n->tmp_targets);
    free(n->tmp_refs);
    free(n->tmp_seen);
    free(n->fetch_buf);
    free(n->recs);
    free(n->recs_off);
    free(n->arena);
    free(n->sents);
    free(n->descs);
    free(n->wire_ents);
    for (size_t i = 0; i < NODE_OUTBOXES_MAX; i++)
        free(n->outs[i].buf);
    while (n->in_head) {
        struct inbatch *b = n->in_head;
        n->in_head = b->next;
        free(b);
    }
    pthread_cond_destroy(&n->cv);
    pthread_cond_destroy(&n->sync_cv);
    pthread_cond_destroy(&n->ctl_cv);
    pthread_mutex_destroy(&n->memb_mu);
    pthread_mutex_destroy(&n->mu);
    free(n->mrecs);
    free(n);
}

static int sync_init(struct node *n)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return INBOX_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_mutex_init(&n->mu, NULL) ||
                     pthread_mutex_init(&n->memb_mu, NULL) ||
                     pthread_cond_init(&n->cv, &ca) ||
                     pthread_cond_init(&n->sync_cv, NULL) ||
                     pthread_cond_init(&n->ctl_cv, NULL)
                 ? INBOX_ENOMEM
                 : 0;
    pthread_condattr_destroy(&ca);
    return rc;
}

/* Stop and join both threads; close the WAL. */
static void node_stop(struct node *n, int how)
{
    atomic_store(&n->accepting, false);
    if (n->thread_started) {
        pthread_mutex_lock(&n->mu);
        n->stop = how;
        pthread_cond_signal(&n->cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->thread, NULL);
    }
    if (n->sync_started) {
        pthread_mutex_lock(&n->mu);
        n->sync_stop = true;
        pthread_cond_signal(&n->sync_cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->sync_thread, NULL);
    }
    wal_close(n->wal);
    n->wal = NULL;
    /* Requests that raced with the stop are still on the list. */
    struct req *q = n->sub_head;
    n->sub_head = n->sub_tail = NULL;
    while (q) {
        struct req *next = q->next;
        q->rc = INBOX_ESHUTDOWN;
        req_complete(n, q);
        q = next;
    }
}

int node_open(const struct node_options *opts, struct node **out)
{
    char err[NODE_ERRMSG_BYTES] = "";
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return INBOX_ENOMEM;
    n->o = *opts;
    int rc = sync_init(n);
    if (rc != 0) {
        free(n);
        return rc;
    }
    rc = options_check(&n->o, err, sizeof(err));
    if (rc != 0)
        goto err_after_alloc;
    (void)fmt(n->data_dir, sizeof(n->data_dir), "%s", n->o.data_dir);
    n->o.data_dir = n->data_dir;
    n->shard_count = n->o.shard_count;
    rc = identity(n, err, sizeof(err));
    if (rc != 0)
        goto err_after_alloc;
    rc = alloc_buffers(n);
    if (rc == 0)
        rc = metrics_build(n);
    if (rc != 0) {
        (void)fmt(err, sizeof(err), "out of memory");
        goto err_after_alloc;
    }
    char merr[NODE_ERRMSG_BYTES] = "";
    rc =
        members_read(n->data_dir, n->shard_count, n->mrecs, merr, sizeof(merr));
    if (rc != 0) {
        (void)fmt(err, sizeof(err), "%s/%s: unreadable: %s%s%s", n->data_dir,
                  MEMBERS_FILE, inbox_strerror(rc), merr[0] ? ": " : "", merr);
        goto err_after_alloc;
    }
    if (pthread_create(&n->thread, NULL, node_main, n) != 0) {
        rc = INBOX_ENOMEM;
        (void)fmt(err, sizeof(err), "cannot start the node thread");
        goto err_after_alloc;
    }
    n->thread_started = true;
    pthread_mutex_lock(&n->mu);
    while (!n->start_done)
        pthread_cond_wait(&n->ctl_cv, &n->mu);
    rc = n->start_rc;
    pthread_mutex_unlock(&n->mu);
    if (rc != 0) {
        (void)fmt(err, sizeof(err), "%s", n->errmsg);
        goto err_after_thread;
    }
    if (pthread_create(&n->sync_thread, NULL, sync_main, n) != 0) {
        rc = INBOX_ENOMEM;
        (void)fmt(err, sizeof(err), "cannot start the sync thread");
        goto err_after_thread;
    }
    n->sync_started = true;
    atomic_store(&n->accepting, true);
    log_info("node", "node open", "node=%llu shards=%u dir=%s",
             (unsigned long long)n->o.node_id, n->shard_count, n->data_dir);
    *out = n;
    return 0;

err_after_thread:
    node_stop(n, 2);
err_after_alloc:
    errmsg_set(opts, err);
    char quoted[NODE_ERRMSG_BYTES + 16];
    log_error("node", "cannot open node", "rc=%d err=%s detail=%s", rc,
              inbox_err_name(rc), log_quote(quoted, sizeof(quoted), err));
    node_free(n);
    return rc;
}

void node_close(struct node *n)
{
    if (!n)
        return;
    node_stop(n, 1);
    log_info("node", "node closed", "node=%llu",
             (unsigned long long)n->o.node_id);
    node_free(n);
}

void node_abort_for_test(struct node *n)
{
    if (!n)
        return;
    node_stop(n, 2);
    node_free(n);
}

int node_checkpoint(struct node *n)
{
    pthread_mutex_lock(&n->mu);
    uint64_t ticket = ++n->ckpt_asked;
    pthread_cond_signal(&n->cv);
    while (n->ckpt_done < ticket && !n->exited)
        pthread_cond_wait(&n->ctl_cv, &n->mu);
    int rc = n->ckpt_done >= ticket ? n->ckpt_rc : INBOX_ESHUTDOWN;
    pthread_mutex_unlock(&n->mu);
    return rc;
}

int node_receive(struct node *n, const uint8_t *batch, size_t len)
{
    if (len == 0 || len > INBOX_RAFT_BATCH_BYTES_MAX)
        return INBOX_ERANGE;
    if (!atomic_load(&n->accepting))
        return INBOX_ESHUTDOWN;
    struct inbatch *b = malloc(sizeof(*b) + len);
    if (!b)
        return INBOX_ENOMEM;
    b->next = NULL;
    b->len = len;
    memcpy(b->data, batch, len);
    pthread_mutex_lock(&n->mu);
    if (n->stop != 0) {
        pthread_mutex_unlock(&n->mu);
        free(b);
        return INBOX_ESHUTDOWN;
    }
    if (n->in_bytes + len > INBOX_NODE_PEER_IN_BYTES_MAX) {
        pthread_mutex_unlock(&n->mu);
        free(b);
        metrics_counter_add(&n->m.peer_msgs_dropped, 1);
        return INBOX_EBUSY;
    }
    n->in_bytes += len;
    if (n->in_tail)
        n->in_tail->next = b;
    else
        n->in_head = b;
    n->in_tail = b;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

/* ---- submission --------------------------------------------------------- */

uint32_t node_shard_of(const struct node *n, const uint8_t *inbox,
                       size_t inbox_len)
{
    return (uint32_t)(XXH3_64bits(inbox, inbox_len) % n->shard_count);
}

uint32_t node_shard_count(const struct node *n)
{
    return n->shard_count;
}

uint64_t node_id(const struct node *n)
{
    return n->o.node_id;
}

int node_failed(const struct node *n)
{
    return atomic_load(&n->failed);
}

int node_status(const struct node *n, uint32_t shard,
                struct node_shard_status *out)
{
    if (shard >= n->shard_count)
        return INBOX_ERANGE;
    const struct shard *s = &n->shards[shard];
    out->role =
        (uint32_t)atomic_load_explicit(&s->st_role, memory_order_relaxed);
    out->term = atomic_load_explicit(&s->st_term, memory_order_relaxed);
    out->leader = atomic_load_explicit(&s->st_leader, memory_order_relaxed);
    out->commit = atomic_load_explicit(&s->st_commit, memory_order_relaxed);
    out->applied = atomic_load_explicit(&s->st_applied, memory_order_relaxed);
    out->last_index = atomic_load_explicit(&s->st_last, memory_order_relaxed);
    out->released = atomic_load_explicit(&s->st_released, memory_order_relaxed);
    out->voter = atomic_load_explicit(&s->st_voter, memory_order_relaxed);
    out->learner = atomic_load_explicit(&s->st_learner, memory_order_relaxed);
    return 0;
}

/* ---- membership --------------------------------------------------------- */

static int targets_push(struct node *n, uint64_t id, bool remove)
{
    if (!atomic_load(&n->accepting))
        return INBOX_ESHUTDOWN;
    struct member_target t = {.id = id, .remove = remove};
    pthread_mutex_lock(&n->mu);
    if (n->stop != 0) {
        pthread_mutex_unlock(&n->mu);
        return INBOX_ESHUTDOWN;
    }
    targets_put(n->targets, &n->targets_count, &t);
    n->member_kick = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

int node_member_add(struct node *n, uint64_t id)
{
    if (id == RAFT_NONE)
        return INBOX_EINVAL;
    return targets_push(n, id, false);
}

int node_member_remove(struct node *n, uint64_t id)
{
    if (id == RAFT_NONE)
        return INBOX_EINVAL;
    /* Never leave a shard without a voter (raft refuses it too; this
     * answers the caller instead of retrying forever). */
    bool last_voter = false;
    pthread_mutex_lock(&n->memb_mu);
    for (uint32_t i = 0; i < n->shard_count && !last_voter; i++) {
        const struct raft_membership *m = &n->shards[i].memb_pub;
        last_voter = m->voters_count == 1 && m->voters[0] == id;
    }
    pthread_mutex_unlock(&n->memb_mu);
    if (last_voter)
        return INBOX_EINVAL;
    return targets_push(n, id, true);
}

int node_transfer_leader(struct node *n, uint32_t shard, uint64_t to)
{
    if (shard >= n->shard_count)
        return INBOX_ERANGE;
    if (!atomic_load(&n->accepting))
        return INBOX_ESHUTDOWN;
    struct shard *s = &n->shards[shard];
    if (atomic_load_explicit(&s->st_role, memory_order_relaxed) != RAFT_LEADER)
        return INBOX_ENOT_LEADER;
    struct raft_membership m;
    pthread_mutex_lock(&n->memb_mu);
    m = s->memb_pub;
    pthread_mutex_unlock(&n->memb_mu);
    bool other = false;
    for (uint32_t i = 0; i < m.voters_count; i++)
        other |= m.voters[i] != n->o.node_id;
    if (to == n->o.node_id || (to != 0 && !raft_membership_is_voter(&m, to)) ||
        !other)
        return INBOX_EINVAL;
    atomic_store(&s->xfer_to, to != 0 ? to : UINT64_MAX);
    atomic_store(&n->xfer_pending, true);
    pthread_mutex_lock(&n->mu);
    n->member_kick = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

int node_shard_members(const struct node *n, uint32_t shard,
                       struct raft_membership *out)
{
    if (shard >= n->shard_count)
        return INBOX_ERANGE;
    struct node *mut = (struct node *)n; /* the mutex only */
    pthread_mutex_lock(&mut->memb_mu);
    *out = n->shards[shard].memb_pub;
    pthread_mutex_unlock(&mut->memb_mu);
    return 0;
}

void node_metrics(const struct node *n, const struct metrics_desc **descs,
                  size_t *count)
{
    *descs = n->descs;
    *count = n->descs_count;
}

static size_t align8(size_t x)
{
    return (x + 7u) & ~(size_t)7u;
}

static bool key_ok(size_t len)
{
    return len >= INBOX_KEY_BYTES_MIN && len <= INBOX_KEY_BYTES_MAX;
}

/* What a request looks like before it is built. */
struct req_spec {
    enum req_kind kind;
    const struct command_target *targets; /* msg_id NULL for non-enqueues */
    size_t targets_count;
    const void *payload;
    size_t payload_len;
    uint64_t ttl_ms;
    uint64_t u64;
    uint32_t max_messages;
    uint32_t max_bytes;
    uint32_t flags;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Build the request in one allocation: the parts, the targets (copied),
 * their order grouped by shard, the result arrays, the payload. */
static struct req *req_build(struct node *n, const struct req_spec *sp,
                             size_t *bytes_out)
{
    size_t tc = sp->targets_count;
    uint64_t keys[INBOX_FANOUT_INBOXES_MAX > INBOX_SEEN_GET_INBOXES_MAX
                      ? INBOX_FANOUT_INBOXES_MAX
                      : INBOX_SEEN_GET_INBOXES_MAX];
    size_t key_bytes = 0;
    for (size_t i = 0; i < tc; i++) {
        uint32_t sh =
            node_shard_of(n, sp->targets[i].inbox, sp->targets[i].inbox_len);
        keys[i] = (uint64_t)sh << 32 | i;
        key_bytes += align8(sp->targets[i].inbox_len) +
                     (sp->targets[i].msg_id ? INBOX_MSG_ID_BYTES : 0u);
    }
    qsort(keys, tc, sizeof(keys[0]), cmp_u64);
    uint32_t parts = 0;
    for (size_t i = 0; i < tc; i++)
        if (i == 0 || keys[i] >> 32 != keys[i - 1] >> 32)
            parts++;
    size_t off_parts = align8(sizeof(struct req));
    size_t off_targets = off_parts + align8(parts * sizeof(struct part));
    size_t off_order = off_targets + align8(tc * sizeof(struct command_target));
    size_t off_results = off_order + align8(tc * sizeof(uint32_t));
    size_t results = sp->kind == REQ_ENQUEUE_MANY ? tc : 0;
    size_t off_seen =
        off_results + align8(results * sizeof(struct store_target_result));
    size_t seen = sp->kind == REQ_SEEN_GET ? tc : 0;
    size_t off_seen_rc = off_seen + align8(seen * sizeof(uint64_t));
    size_t off_keys = off_seen_rc + align8(seen * sizeof(int));
    size_t off_payload = off_keys + key_bytes;
    size_t total = off_payload + sp->payload_len;
    uint8_t *mem = calloc(1, total);
    if (!mem)
        return NULL;
    struct req *q = (struct req *)(void *)mem;
    q->kind = sp->kind;
    q->parts_count = parts;
    q->parts_left = parts;
    q->ttl_ms = sp->ttl_ms;
    q->u64 = sp->u64;
    q->max_messages = sp->max_messages;
    q->max_bytes = sp->max_bytes;
    q->stale_ok = (sp->flags & NODE_READ_STALE_OK) != 0;
    q->targets_count = (uint32_t)tc;
    q->targets = (struct command_target *)(void *)(mem + off_targets);
    q->order = (uint32_t *)(void *)(mem + off_order);
    q->results = results ? (void *)(mem + off_results) : NULL;
    q->seen = seen ? (uint64_t *)(void *)(mem + off_seen) : NULL;
    q->seen_rc = seen ? (int *)(void *)(mem + off_seen_rc) : NULL;
    uint8_t *k = mem + off_keys;
    for (size_t i = 0; i < tc; i++) {
        const struct command_target *t = &sp->targets[i];
        memcpy(k, t->inbox, t->inbox_len);
        q->targets[i].inbox = k;
        q->targets[i].inbox_len = t->inbox_len;
        k += align8(t->inbox_len);
        if (t->msg_id) {
            memcpy(k, t->msg_id, INBOX_MSG_ID_BYTES);
            q->targets[i].msg_id = k;
            k += INBOX_MSG_ID_BYTES;
        }
    }
    if (sp->payload_len)
        memcpy(mem + off_payload, sp->payload, sp->payload_len);
    q->payload = mem + off_payload;
    q->payload_len = (uint32_t)sp->payload_len;
    uint32_t pi = 0;
    for (size_t i = 0; i < tc; i++) {
        q->order[i] = (uint32_t)keys[i];
        uint32_t sh = (uint32_t)(keys[i] >> 32);
        if (i == 0 || sh != (uint32_t)(keys[i - 1] >> 32)) {
            struct part *p = &q->parts[pi++];
            p->req = q;
            p->shard = sh;
            p->first = (uint32_t)i;
        }
        q->parts[pi - 1].targets_count++;
    }
    *bytes_out = total;
    return q;
}

static int spec_check(const struct node *n, const struct req_spec *sp)
{
    if (sp->targets_count == 0)
        return INBOX_ETOO_MANY_INBOXES;
    size_t max = sp->kind == REQ_SEEN_GET ? INBOX_SEEN_GET_INBOXES_MAX
                                          : INBOX_FANOUT_INBOXES_MAX;
    if (sp->targets_count > max)
        return INBOX_ETOO_MANY_INBOXES;
    for (size_t i = 0; i < sp->targets_count; i++) {
        if (!sp->targets[i].inbox || !key_ok(sp->targets[i].inbox_len))
            return INBOX_EKEY_INVALID;
        if ((sp->kind == REQ_ENQUEUE || sp->kind == REQ_ENQUEUE_MANY) &&
            !sp->targets[i].msg_id)
            return INBOX_EINVAL;
    }
    if (sp->payload_len > INBOX_PAYLOAD_BYTES_MAX)
        return INBOX_EPAYLOAD_TOO_LARGE;
    if (sp->payload_len && !sp->payload)
        return INBOX_EINVAL;
    if (sp->ttl_ms > INBOX_TTL_MS_MAX)
        return INBOX_ERANGE;
    return 0;
}

static int submit(struct node *n, const struct req_spec *sp, node_done_cb done,
                  void *arg)
{
    if (!done)
        return INBOX_EINVAL;
    int rc = spec_check(n, sp);
    if (rc != 0)
        return rc;
    if (!atomic_load(&n->accepting))
        return INBOX_ESHUTDOWN;
    if (kind_is_write(sp->kind) && atomic_load(&n->failed) != 0)
        return INBOX_EFAILED;
    if (atomic_fetch_add(&n->reqs_live, 1u) >= n->o.requests_max) {
        atomic_fetch_sub(&n->reqs_live, 1u);
        metrics_counter_add(&n->m.busy, 1);
        return INBOX_EBUSY;
    }
    size_t bytes = 0;
    struct req *q = req_build(n, sp, &bytes);
    if (!q) {
        atomic_fetch_sub(&n->reqs_live, 1u);
        return INBOX_ENOMEM;
    }
    q->bytes = bytes;
    if (atomic_fetch_add(&n->bytes_live, bytes) + bytes >
        INBOX_NODE_REQUEST_BYTES_MAX) {
        metrics_counter_add(&n->m.busy, 1);
        req_free(n, q);
        return INBOX_EBUSY;
    }
    q->done = done;
    q->arg = arg;
    pthread_mutex_lock(&n->mu);
    if (!atomic_load(&n->accepting) || n->stop != 0) {
        pthread_mutex_unlock(&n->mu);
        req_free(n, q);
        return INBOX_ESHUTDOWN;
    }
    if (n->sub_tail)
        n->sub_tail->next = q;
    else
        n->sub_head = q;
    n->sub_tail = q;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

static struct command_target one_target(const uint8_t *inbox, size_t len,
                                        const uint8_t *msg_id)
{
    struct command_target t = {inbox, msg_id,
                               (uint16_t)(len > UINT16_MAX ? 0 : len)};
    return t;
}

int node_enqueue(struct node *n, const uint8_t *inbox, size_t inbox_len,
                 const uint8_t msg_id[INBOX_MSG_ID_BYTES], uint64_t ttl_ms,
                 const void *payload, size_t payload_len, node_done_cb done,
                 void *arg)
{
    struct command_target t = one_target(inbox, inbox_len, msg_id);
    struct req_spec sp = {.kind = REQ_ENQUEUE,
                          .targets = &t,
                          .targets_count = 1,
                          .payload = payload,
                          .payload_len = payload_len,
                          .ttl_ms = ttl_ms};
    return submit(n, &sp, done, arg);
}

int node_enqueue_many(struct node *n, const struct command_target *targets,
                      size_t targets_count, uint64_t ttl_ms,
                      const void *payload, size_t payload_len,
                      node_done_cb done, void *arg)
{
    struct req_spec sp = {.kind = REQ_ENQUEUE_MANY,
                          .targets = targets,
                          .targets_count = targets_count,
                          .payload = payload,
                          .payload_len = payload_len,
                          .ttl_ms = ttl_ms};
    if (!targets && targets_count)
        return INBOX_EINVAL;
    return submit(n, &sp, done, arg);
}

int node_ack(struct node *n, const uint8_t *inbox, size_t inbox_len,
             uint64_t upto_seq, node_done_cb done, void *arg)
{
    struct command_target t = one_target(inbox, inbox_len, NULL);
    struct req_spec sp = {
        .kind = REQ_ACK, .targets = &t, .targets_count = 1, .u64 = upto_seq};
    return submit(n, &sp, done, arg);
}

int node_seen_set(struct node *n, const uint8_t *inbox, size_t inbox_len,
                  uint64_t seen_ts_ms, node_done_cb done, void *arg)
{
    struct command_target t = one_target(inbox, inbox_len, NULL);
    struct req_spec sp = {.kind = REQ_SEEN_SET,
                          .targets = &t,
                          .targets_count = 1,
                          .u64 = seen_ts_ms};
    return submit(n, &sp, done, arg);
}

int node_fetch(struct node *n, const uint8_t *inbox, size_t inbox_len,
               uint64_t after_seq, uint32_t max_messages, uint32_t max_bytes,
               uint32_t flags, node_done_cb done, void *arg)
{
    if (max_messages == 0 || (flags & ~NODE_READ_STALE_OK) != 0)
        return INBOX_EINVAL;
    struct command_target t = one_target(inbox, inbox_len, NULL);
    struct req_spec sp = {.kind = REQ_FETCH,
                          .targets = &t,
                          .targets_count = 1,
                          .u64 = after_seq,
                          .max_messages = max_messages,
                          .max_bytes = max_bytes,
                          .flags = flags};
    return submit(n, &sp, done, arg);
}

int node_seen_get(struct node *n, const struct node_inbox *inboxes,
                  size_t count, uint32_t flags, node_done_cb done, void *arg)
{
    struct command_target t[INBOX_SEEN_GET_INBOXES_MAX];
    if ((flags & ~NODE_READ_STALE_OK) != 0)
        return INBOX_EINVAL;
    if (count > INBOX_SEEN_GET_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    if (!inboxes && count)
        return INBOX_EINVAL;
    for (size_t i = 0; i < count; i++)
        t[i] = one_target(inboxes[i].inbox, inboxes[i].inbox_len, NULL);
    struct req_spec sp = {.kind = REQ_SEEN_GET,
                          .targets = t,
                          .targets_count = count,
                          .flags = flags};
    return submit(n, &sp, done, arg);
}

int node_inbox_info(struct node *n, const uint8_t *inbox, size_t inbox_len,
                    node_done_cb done, void *arg)
{
    struct command_target t = one_target(inbox, inbox_len, NULL);
    struct req_spec sp = {.kind = REQ_INFO, .targets = &t, .targets_count = 1};
    return submit(n, &sp, done, arg);
}
