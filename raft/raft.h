/*
 * raft.h — the consensus core of a shard: the whole public contract.
 *
 * A Raft group member as a pure state machine, in the manner of etcd's raft.
 * It does no I/O, reads no clock, starts no thread, keeps no global state and
 * allocates only through the allocator it is given. Inputs are messages
 * (raft_step), ticks (raft_tick), proposals (raft_propose,
 * raft_propose_conf_change), reads (raft_read_index) and leadership transfers
 * (raft_transfer_leader). Outputs come out as a ready batch (raft_ready):
 *
 *   loop {
 *     feed inputs: raft_step / raft_tick / raft_propose / ...
 *     if (raft_has_ready(r)) {
 *       raft_ready(r, &rd);
 *       1. send rd.msgs            (may go out before or while persisting)
 *       2. if rd.snapshot_chunk: write that chunk of an incoming snapshot
 *          if rd.snapshot:   install it: state machine from the received
 *                            data, log replaced by the snapshot
 *          append rd.entries to the log (truncating any stable entry at or
 *          after rd.entries[0].index first), persist rd.hard_state if
 *          rd.hard_state_changed — and make all of it durable (fsync)
 *       3. only now send rd.msgs_after (votes, append acks, anything that
 *          promises durable state: Raft §5.2, §5.3, "persist before reply")
 *       4. apply rd.committed in order; serve rd.reads once applied >= index
 *       5. raft_advance(r, &rd)
 *     }
 *   }
 *
 * Between raft_ready and raft_advance the caller must not call any other
 * raft_* function on that node (except the const accessors). A crash at any
 * point loses only what step 2 had not made durable; restarting from what is
 * durable is always safe.
 *
 * Membership: single-server changes (Raft dissertation §4.1), not joint
 * consensus; a configuration takes effect as soon as its entry is in the log,
 * see docs/raft.md for why. Learners replicate but never vote.
 *
 * Ownership: every pointer inside a ready batch belongs to raft and is valid
 * until raft_advance. Messages passed to raft_step belong to the caller and
 * are not retained (raft copies what it keeps). Entry data handed out by the
 * storage interface must stay valid until the next raft_advance.
 *
 * Includes nothing beyond libc and the project's include/inbox headers.
 */
#ifndef INBOX_RAFT_H
#define INBOX_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbox/error.h"
#include "inbox/limits.h"

/* Node ids are nonzero; 0 means "none". */
#define RAFT_NONE 0u

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* application data (len 0: a leader's no-op) */
    RAFT_ENTRY_CONF = 1,   /* a raft_conf_change, encoded by raft */
};

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type; /* enum raft_entry_type */
    uint32_t len;
    const uint8_t *data; /* len bytes; owner depends on who handed it out */
};

/* Membership. Voters and learners are disjoint; ids are nonzero. */
struct raft_membership {
    uint32_t voters_count;
    uint32_t learners_count;
    uint64_t voters[INBOX_RAFT_VOTERS_MAX];
    uint64_t learners[INBOX_RAFT_LEARNERS_MAX];
};

enum raft_conf_op {
    RAFT_CONF_ADD_LEARNER = 1, /* new node, non-voting */
    RAFT_CONF_PROMOTE = 2,     /* learner -> voter */
    RAFT_CONF_ADD_VOTER = 3,   /* new node straight to voter */
    RAFT_CONF_REMOVE = 4,      /* voter or learner leaves */
};

struct raft_conf_change {
    uint32_t op; /* enum raft_conf_op */
    uint64_t node_id;
};

/* Wire form of a conf-change entry's data: u32le op, u64le node id. */
#define RAFT_CONF_CHANGE_BYTES 12u
void raft_conf_change_encode(const struct raft_conf_change *cc,
                             uint8_t out[RAFT_CONF_CHANGE_BYTES]);
int raft_conf_change_decode(const uint8_t *data, size_t len,
                            struct raft_conf_change *out);
/* Apply cc to m (the same rule raft uses); INBOX_EINVAL if it does not fit
 * (unknown node for PROMOTE/REMOVE, duplicate for ADD, bounds). */
int raft_membership_apply(struct raft_membership *m,
                          const struct raft_conf_change *cc);
bool raft_membership_is_voter(const struct raft_membership *m, uint64_t id);
bool raft_membership_is_learner(const struct raft_membership *m, uint64_t id);

/* Metadata of a snapshot: the log prefix up to index it replaces, and the
 * membership as of that index. data_bytes is the application's data size. */
struct raft_snapshot_meta {
    uint64_t index;
    uint64_t term;
    uint64_t data_bytes;
    struct raft_membership membership;
};

/* What must be durable across a crash (§5.1 Figure 2 "persistent state";
 * commit is kept too so a restart need not re-learn it). */
struct raft_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* AppendEntries (§5.3) */
    RAFT_MSG_APPEND_RESP = 2, /* index = last matching; reject + hint */
    RAFT_MSG_VOTE = 3,        /* RequestVote (§5.2) */
    RAFT_MSG_VOTE_RESP = 4,
    RAFT_MSG_PRE_VOTE = 5, /* dissertation §9.6; term = candidate's term+1 */
    RAFT_MSG_PRE_VOTE_RESP = 6,
    RAFT_MSG_HEARTBEAT = 7, /* round in context (ReadIndex, lease) */
    RAFT_MSG_HEARTBEAT_RESP = 8,
    RAFT_MSG_SNAPSHOT = 9, /* one chunk of an InstallSnapshot (§7) */
    RAFT_MSG_SNAPSHOT_RESP = 10,
    RAFT_MSG_TIMEOUT_NOW = 11, /* leadership transfer (dissertation §3.10) */
};

/* Flags in raft_msg.flags. */
#define RAFT_MSG_F_REJECT 1u   /* response: rejected */
#define RAFT_MSG_F_TRANSFER 2u /* vote: campaign started by TimeoutNow */
#define RAFT_MSG_F_LAST 4u     /* snapshot chunk: the final one */

/* One message. Fields a type does not use are zero. */
struct raft_msg {
    uint64_t group; /* the caller's group id: raft copies it, never reads */
    uint32_t type;  /* enum raft_msg_type */
    uint32_t flags;
    uint64_t from;
    uint64_t to;
    uint64_t term;
    /* APPEND: prev index/term. VOTE*: last index/term. APPEND_RESP: the
     * highest index known to match (accept) or the rejected prev index.
     * HEARTBEAT: the leader's match for the receiver, and its term.
     * HEARTBEAT_RESP reject (the receiver lacks that entry: it lost entries
     * it had acknowledged): its last index, and its commit in commit.
     * SNAPSHOT(_RESP): byte offset of the chunk / next offset wanted. */
    uint64_t index;
    uint64_t log_term;
    uint64_t commit;
    uint64_t context; /* heartbeat round */
    /* APPEND_RESP reject: the follower's hint (largest index with a term <=
     * the probe's log_term, and that term): fast backtracking. */
    uint64_t hint_index;
    uint64_t hint_term;
    uint32_t entries_count;
    const struct raft_entry *entries;
    /* SNAPSHOT: metadata and one chunk of data. */
    struct raft_snapshot_meta snap;
    uint32_t chunk_len;
    const uint8_t *chunk;
};

/* The log storage raft reads: the stable (persisted) entries. The WAL
 * implements it in production and an in-memory log in tests. Stable entries
 * are (snapshot.index, last_index]; term(snapshot.index) is snapshot.term. */
struct raft_storage {
    void *ctx;
    uint64_t (*last_index)(void *ctx);
    /* Term of entry i for snapshot.index <= i <= last_index; returns
     * INBOX_ECOMPACTED below, INBOX_EUNAVAILABLE above. */
    int (*term)(void *ctx, uint64_t i, uint64_t *term);
    /* Entries [lo, hi) into out (at most cap), stopping once max_bytes of
     * data is reached (but always at least one). Data pointers stay valid
     * until the next raft_advance. */
    int (*entries)(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                   struct raft_entry *out, size_t cap, size_t *n);
    /* Metadata of the latest snapshot (index 0: none / bootstrap). */
    void (*snapshot)(void *ctx, struct raft_snapshot_meta *out);
    /* A chunk of that snapshot's data starting at offset: up to max bytes,
     * pointer valid until the next raft_advance. */
    int (*snapshot_chunk)(void *ctx, uint64_t index, uint64_t offset,
                          uint32_t max, const uint8_t **data, uint32_t *len);
};

/* The allocator. free gets the size that was asked for. alloc may fail
 * (return NULL); raft then fails the call with INBOX_ENOMEM or drops the
 * affected message (which the protocol tolerates as a network loss). */
struct raft_allocator {
    void *ctx;
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *p, size_t size);
};

struct raft_options {
    uint64_t id;              /* this node; nonzero */
    uint64_t group;           /* stamped on every outgoing message */
    uint64_t seed;            /* randomness for election timeouts */
    uint32_t election_ticks;  /* base election timeout, in ticks */
    uint32_t heartbeat_ticks; /* heartbeat interval, < election_ticks */
    bool pre_vote;            /* dissertation §9.6 */
    bool check_quorum;        /* dissertation §6.2 / §4.2.3 */
    /* Leader lease reads (§6.4.1): valid only with check_quorum, and for
     * election_ticks - lease_drift_ticks after a heartbeat round that a
     * quorum answered. 0 disables leases. */
    uint32_t lease_drift_ticks;
    bool lease_reads;
    uint32_t msg_entries_max; /* entries per APPEND */
    uint32_t msg_bytes_max;   /* entry data bytes per APPEND; also max entry */
    uint32_t inflight_msgs_max;     /* pipelined APPENDs per follower */
    uint64_t inflight_bytes_max;    /* their bytes per follower */
    uint64_t uncommitted_bytes_max; /* proposals not yet committed */
    uint32_t snapshot_chunk_bytes;  /* chunk size for InstallSnapshot */
    uint64_t committed_bytes_max;   /* per ready: entries to apply */
    uint64_t applied;               /* the caller's applied index at start */
    struct raft_storage storage;
    struct raft_allocator allocator;
};

/* Sensible defaults for everything but id, group, seed, storage, allocator. */
void raft_options_default(struct raft_options *o);

/* A confirmed read (§6.4): serve it once applied >= index. */
struct raft_read_state {
    uint64_t ctx;
    uint64_t index;
};

/* An incoming snapshot chunk to write to the caller's staging area. */
struct raft_snapshot_chunk {
    struct raft_snapshot_meta meta;
    uint64_t offset;
    uint32_t len;
    const uint8_t *data;
    bool last;
};

struct raft_ready {
    bool hard_state_changed;
    struct raft_hard_state hard_state;
    /* Entries to append durably; entries[0].index may be <= the stable last
     * index: truncate the stable log from there first (§5.3). */
    const struct raft_entry *entries;
    size_t entries_count;
    /* Send at once, even before persisting: a leader's appends, heartbeats,
     * snapshot chunks, TimeoutNow (its term is already durable; it counts
     * its own log only once persisted, so this is safe — §10.2.1). */
    const struct raft_msg *msgs;
    size_t msgs_count;
    /* Send only after everything above is durable. */
    const struct raft_msg *msgs_after;
    size_t msgs_after_count;
    /* Write this chunk of an incoming snapshot (staging). */
    const struct raft_snapshot_chunk *snapshot_chunk;
    /* Install this snapshot from the staged data: replace the log (its
     * entries are all discarded), restore the state machine. */
    const struct raft_snapshot_meta *snapshot;
    /* Apply in order, after persisting. */
    const struct raft_entry *committed;
    size_t committed_count;
    const struct raft_read_state *reads;
    size_t reads_count;
    /* Soft state, for the caller's routing. */
    uint64_t leader;
    enum raft_role role;
};

struct raft;

/* Create a node from durable state: hard state hs and the storage (its
 * snapshot gives the membership at its index; conf entries after it are
 * read back). *out is allocated with the allocator. */
int raft_create(const struct raft_options *o, const struct raft_hard_state *hs,
                struct raft **out);
void raft_destroy(struct raft *r);

/* Advance time by one tick. */
void raft_tick(struct raft *r);
/* Feed one received message. Messages of other groups, or malformed ones,
 * return INBOX_EINVAL and change nothing. */
int raft_step(struct raft *r, const struct raft_msg *m);
/* Propose application data (copied). Leader only: INBOX_ENOT_LEADER,
 * INBOX_ETRANSFER_IN_PROGRESS, INBOX_ETOO_MANY_PROPOSALS (bound on
 * uncommitted bytes), INBOX_ERANGE (larger than msg_bytes_max),
 * INBOX_ENOMEM. On success *index is the entry's index. */
int raft_propose(struct raft *r, const void *data, uint32_t len,
                 uint64_t *index);
/* Propose a single-server membership change. INBOX_ECONF_CHANGE_PENDING if
 * one is uncommitted or this leader has not yet committed an entry of its
 * term (the dissertation's safety fix); INBOX_EINVAL if it does not apply. */
int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc,
                             uint64_t *index);
/* Ask for a linearizable read; the answer comes back as a raft_read_state
 * with this ctx in a later ready. INBOX_ENOT_LEADER; INBOX_ESTALE_READ if
 * the leader has not yet committed an entry of its term (retry);
 * INBOX_EBUSY if too many reads wait. */
int raft_read_index(struct raft *r, uint64_t ctx);
/* Transfer leadership to a voter (dissertation §3.10). */
int raft_transfer_leader(struct raft *r, uint64_t to);
/* Start an election now (tests, tools). */
int raft_campaign(struct raft *r);

bool raft_has_ready(const struct raft *r);
/* Fill rd; valid until raft_advance. Returns INBOX_EINVAL if called again
 * before raft_advance. */
int raft_ready(struct raft *r, struct raft_ready *rd);
/* The caller has done everything rd asked. */
void raft_advance(struct raft *r, const struct raft_ready *rd);

/* Const accessors. */
enum raft_role raft_role(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_leader(const struct raft *r);
uint64_t raft_commit(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
/* Term of entry i as this node sees it (unstable or stable); 0 if unknown. */
uint64_t raft_term_at(const struct raft *r, uint64_t i);
/* The membership in effect (the latest in the log). */
const struct raft_membership *raft_membership(const struct raft *r);
/* Progress of a follower as the leader sees it (match index); 0 if none. */
uint64_t raft_match_of(const struct raft *r, uint64_t id);
/* The same in full, for status pages and tests; INBOX_ENOTFOUND if id is
 * not a member. state: 0 probe, 1 replicate, 2 snapshot. */
struct raft_progress_info {
    uint64_t match;
    uint64_t next;
    uint32_t state;
    uint32_t inflight_msgs;
    bool paused;
    /* Times this node, as leader, found the follower had lost entries it
     * had acknowledged (a cut WAL tail) and lowered its match. */
    uint64_t regressions_count;
};
int raft_progress_of(const struct raft *r, uint64_t id,
                     struct raft_progress_info *out);
/* Lost-tail repairs this node made as leader over the life of r (the sum
 * of every regressions_count, never lowered when a progress is reset or
 * recreated), and in *last_follower (if not NULL) the follower of the
 * latest, 0 if none. */
uint64_t raft_regressions(const struct raft *r, uint64_t *last_follower);
const char *raft_role_name(enum raft_role role);
const char *raft_msg_type_name(uint32_t type);

#endif /* INBOX_RAFT_H */
