/*
 * node.h — an inboxd node: its shards running as Raft groups over the
 * node-wide WAL and the LMDB store. The whole contract; docs/node.md tells
 * the story (threads, the life of an enqueue, recovery, checkpoints).
 *
 * A node owns, under its data directory:
 *   DATA/node.meta   identity: node id, shard count, bootstrap membership
 *   DATA/members     each shard's membership at its WAL release point, once
 *                    it differs from the bootstrap one (server/members.h)
 *   DATA/wal/        the write-ahead log (engine/wal.h)
 *   DATA/store/      the LMDB store (engine/store.h)
 *   DATA/snap/       snapshots sent to or received from other nodes
 *                    (server/snapshot.h; scratch, emptied at start)
 *
 * Threads. node_open starts two threads: the node thread, which owns every
 * raft group and the store (every raft_* and store_* call happens there),
 * and the sync thread, which runs wal_sync so the node thread never waits
 * for an fdatasync. The request functions below are thread-safe and never
 * block on I/O: they copy their arguments, queue the request (bounded) and
 * return. Completion callbacks run on the node thread: they must be cheap,
 * must not block, and must not call node_close/node_abort_for_test (they
 * may submit new requests).
 *
 * Requests return 0 when accepted, in which case `done` is called exactly
 * once later; or an error at once, in which case `done` is never called:
 *   INBOX_EINVAL / INBOX_EKEY_INVALID / INBOX_EPAYLOAD_TOO_LARGE /
 *   INBOX_ETOO_MANY_INBOXES / INBOX_ERANGE  malformed request
 *   INBOX_EBUSY       too many requests in flight (retry later)
 *   INBOX_ESHUTDOWN   the node is closing
 *   INBOX_EFAILED     (writes) storage failed earlier; restart the node
 * A completion's rc is 0, a semantic error of the store (docs/semantics.md:
 * INBOX_EACK_BEYOND_LAST, INBOX_EINBOX_FULL_*, ...), a raft refusal
 * (INBOX_ENOT_LEADER with res->leader, INBOX_ETOO_MANY_PROPOSALS,
 * INBOX_EPROPOSAL_DROPPED, ...), INBOX_EFAILED, or INBOX_ESHUTDOWN.
 */
#ifndef INBOX_SERVER_NODE_H
#define INBOX_SERVER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "inbox/limits.h"
#include "metrics.h"
#include "raft.h"
#include "store.h"

struct node;
struct vfs;
struct config;

#define NODE_TICK_MS_DEFAULT 100u
#define NODE_CHECKPOINT_MS_DEFAULT 5000u
#define NODE_ERRMSG_BYTES 256u
/* A learner is promoted to voter once its match index is within this many
 * entries of its leader's last index (and nonzero): a voter that is far
 * behind would stall commits the moment it counts toward the quorum. */
#define NODE_PROMOTE_LAG_MAX 64u
/* Membership requests (add / remove targets) a node keeps retrying; a new
 * one past this replaces the oldest. */
#define NODE_MEMBER_TARGETS_MAX 4u

/* Called on the node thread after an enqueue is applied to an inbox (not
 * for a deduplicated retry), with the inbox's new last seq: the hook for
 * WATCH (NOTIFY pushes) and long-poll FETCH. Must be cheap; inbox is valid
 * during the call only. */
typedef void (*node_enqueue_applied_cb)(void *arg, uint32_t shard,
                                        const uint8_t *inbox, size_t inbox_len,
                                        uint64_t last_seq);

/* Called on the node thread with encoded Raft messages (raft/wire.h, one
 * or more whole messages, at most INBOX_RAFT_BATCH_BYTES_MAX bytes) for
 * node `to`: the peer transport's hand-off. The bytes are valid during the
 * call only; it must not block (a full queue drops them: Raft tolerates
 * message loss). */
typedef void (*node_send_cb)(void *arg, uint64_t to, const uint8_t *bytes,
                             size_t len);

struct node_options {
    const char *data_dir; /* must exist; copied */
    uint64_t node_id;     /* nonzero */
    uint32_t shard_count; /* 1..INBOX_SHARD_COUNT_MAX; fixed at creation */
    uint64_t wal_segment_bytes;      /* 0 = WAL default */
    uint64_t store_map_bytes;        /* 0 = store default */
    uint32_t checkpoint_interval_ms; /* 0 = NODE_CHECKPOINT_MS_DEFAULT */
    uint32_t tick_interval_ms;       /* 0 = NODE_TICK_MS_DEFAULT */
    /* Cluster-wide state machine bounds (store_options); 0 = default. */
    uint32_t inbox_pending_messages_max;
    uint64_t inbox_pending_bytes_max;
    uint64_t dedup_window_ms;
    /* Raft timing in ticks; 0 = raft's defaults. */
    uint32_t election_ticks;
    uint32_t heartbeat_ticks;
    /* Leader leases (Raft dissertation §6.4.1): a leader that heard from a
     * quorum within the last election timeout (less a drift margin) serves
     * linearizable reads without a heartbeat round. Sound only while the
     * nodes' clocks advance at about the same rate; off by default. */
    bool lease_reads;
    /* Per shard: bytes proposed and not yet committed, past which
     * proposals complete with INBOX_ETOO_MANY_PROPOSALS; 0 = raft's
     * default. */
    uint64_t uncommitted_bytes_max;
    /* Requests in flight past which new ones are refused with INBOX_EBUSY;
     * 0 or more than INBOX_NODE_REQUESTS_MAX = INBOX_NODE_REQUESTS_MAX. */
    uint32_t requests_max;
    /* The voters every shard's Raft group starts with, used only when the
     * data directory is new (then recorded in DATA/node.meta; later
     * starts use the recorded ones). 0 members = this node alone. When
     * given, node_id must be one of them (unless `join`). */
    uint32_t members_count;
    uint64_t members[INBOX_RAFT_VOTERS_MAX];
    /* This node joins a running cluster: its id need not be among
     * `members` (which must then be the member list the cluster was
     * created with, so every node starts each shard from the same
     * bootstrap membership; at least one member is required). It never
     * campaigns until a leader adds it (node_member_add on that leader:
     * learner, then voter once caught up). Only read on first start, like
     * `members`. */
    bool join;
    /* A leader's checkpoint keeps up to this many WAL entries that its
     * slowest follower still lacks (past it the follower is caught up by a
     * snapshot); 0 = INBOX_NODE_RETAIN_ENTRIES_MAX, larger is capped. */
    uint64_t retain_entries_max;
    /* Bytes of snapshot data per InstallSnapshot chunk between nodes;
     * 0 = raft's default, capped at INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX. */
    uint32_t snapshot_chunk_bytes;
    /* Where messages to other nodes go (NULL: dropped, single node). */
    node_send_cb send;
    void *send_arg;
    /* Optional hook, see node_enqueue_applied_cb. */
    node_enqueue_applied_cb enqueue_applied;
    void *enqueue_applied_arg;
    /* Test seam: the WAL's file layer (NULL = POSIX). Must outlive the
     * node. */
    const struct vfs *wal_vfs;
    /* Optional: on a failed open, a human message is written here. */
    char *errmsg;
    size_t errmsg_bytes;
};

/* Zero everything (defaults everywhere; data_dir and node_id must be set). */
void node_options_init(struct node_options *o);
/* Fill o from the server configuration (data_dir points into c). */
void node_options_from_config(struct node_options *o, const struct config *c);

/* Open the node: read or create DATA/node.meta (a different shard count
 * or node id than recorded is INBOX_EINVAL with a message naming both),
 * open the store and the WAL, recover every shard's raft group, start the
 * threads. INBOX_ELOCKED if another process uses the directory. */
int node_open(const struct node_options *o, struct node **out);

/* Graceful close: refuse new requests (INBOX_ESHUTDOWN), let the ones in
 * flight finish (at most INBOX_NODE_DRAIN_MS_MAX, then they complete with
 * INBOX_ESHUTDOWN), make the WAL durable, checkpoint the store, release the
 * WAL, stop the threads, close everything. Not from a callback. */
void node_close(struct node *n);

/* A crash, for tests: stop at once, complete everything in flight with
 * INBOX_ESHUTDOWN, no sync, no checkpoint (the store's open transaction is
 * dropped); reopening must replay the WAL. */
void node_abort_for_test(struct node *n);

/* ---- requests ----------------------------------------------------------- */

/* What a completion reports. Only the fields of the request's kind are set;
 * every pointer is valid during the callback only. */
struct node_result {
    int rc;
    uint32_t shard;  /* single-inbox requests: the inbox's shard */
    bool stale;      /* reads: served by a follower (NODE_READ_STALE_OK) */
    uint64_t leader; /* INBOX_ENOT_LEADER: the shard's leader, 0 unknown */
    /* ENQUEUE */
    uint64_t seq;
    bool deduped;
    /* ACK: the inbox's acked seq afterwards; SEEN_SET: its stored last-seen
     * ms (store_target_result.after) */
    uint64_t after;
    /* ENQUEUE_MANY: one result per target, in the request's order (each
     * with its own rc; res->rc is the first whole-shard failure, if any) */
    const struct store_target_result *targets;
    uint32_t targets_count;
    /* FETCH: payloads point into the store (valid during the callback) */
    const struct store_message *messages;
    size_t messages_count;
    /* SEEN_GET: one value per inbox, in the request's order (0 = never) */
    const uint64_t *seen_ms;
    /* SEEN_GET: per inbox, 0 or the error its shard's read failed with
     * (then its seen_ms is 0 and means nothing; res->rc is the first) */
    const int *seen_rc;
    size_t seen_count;
    /* INBOX_INFO, and FETCH (the inbox's state the messages were read
     * from: acked seq and next seq for the response) */
    struct store_inbox_info info;
};

typedef void (*node_done_cb)(void *arg, const struct node_result *res);

/* An inbox named in a multi-inbox read. */
struct node_inbox {
    const uint8_t *inbox;
    uint16_t inbox_len;
};

/* The shard an inbox lives in: XXH3-64(inbox, seed 0) % shard_count
 * (docs/protocol.md, "Routing"). */
uint32_t node_shard_of(const struct node *n, const uint8_t *inbox,
                       size_t inbox_len);
uint32_t node_shard_count(const struct node *n);

/* Writes: proposed as a command stamped with this leader's clock (ms since
 * the epoch, never smaller than its previous stamp) and answered once
 * applied, i.e. once durable in the WAL and in the store's state. */
int node_enqueue(struct node *n, const uint8_t *inbox, size_t inbox_len,
                 const uint8_t msg_id[INBOX_MSG_ID_BYTES], uint64_t ttl_ms,
                 const void *payload, size_t payload_len, node_done_cb done,
                 void *arg);
/* One payload to 1..INBOX_FANOUT_INBOXES_MAX inboxes, each with its msg id
 * (targets[i].msg_id must be set). Split into one command per shard. */
int node_enqueue_many(struct node *n, const struct command_target *targets,
                      size_t targets_count, uint64_t ttl_ms,
                      const void *payload, size_t payload_len,
                      node_done_cb done, void *arg);
int node_ack(struct node *n, const uint8_t *inbox, size_t inbox_len,
             uint64_t upto_seq, node_done_cb done, void *arg);
int node_seen_set(struct node *n, const uint8_t *inbox, size_t inbox_len,
                  uint64_t seen_ts_ms, node_done_cb done, void *arg);

/* Reads are linearizable (raft_read_index on the leader; served once the
 * shard's applied index reaches the read index; a follower completes them
 * with INBOX_ENOT_LEADER). With NODE_READ_STALE_OK a node that is not the
 * shard's leader serves the read at once from its own applied state, which
 * may lag the leader's (res->stale is set then); the leader still reads
 * linearizably. */
#define NODE_READ_STALE_OK 0x01u
int node_fetch(struct node *n, const uint8_t *inbox, size_t inbox_len,
               uint64_t after_seq, uint32_t max_messages, uint32_t max_bytes,
               uint32_t flags, node_done_cb done, void *arg);
/* 1..INBOX_SEEN_GET_INBOXES_MAX inboxes; each shard is read on its own
 * (the answer is not one snapshot across shards). */
int node_seen_get(struct node *n, const struct node_inbox *inboxes,
                  size_t count, uint32_t flags, node_done_cb done, void *arg);
int node_inbox_info(struct node *n, const uint8_t *inbox, size_t inbox_len,
                    node_done_cb done, void *arg);

/* ---- peers -------------------------------------------------------------- */

/* Any thread (the transport's loop): a batch of Raft messages received from
 * another node (raft/wire.h encoding, 1..INBOX_RAFT_BATCH_BYTES_MAX bytes),
 * copied and queued for the node thread, which steps each message into its
 * shard's group. Malformed messages and messages for unknown shards are
 * dropped there and counted. Returns 0; INBOX_EBUSY when more than
 * INBOX_NODE_PEER_IN_BYTES_MAX bytes wait (dropped: Raft resends);
 * INBOX_ESHUTDOWN; INBOX_ERANGE for an empty or oversized batch. */
int node_receive(struct node *n, const uint8_t *batch, size_t len);

/* ---- status and metrics (any thread, no waiting) ------------------------ */

struct node_shard_status {
    uint32_t role; /* enum raft_role */
    uint64_t term;
    uint64_t leader;
    uint64_t commit;
    uint64_t applied;
    uint64_t last_index;
    uint64_t released; /* WAL prefix released up to here */
    /* This node in the shard's membership as this node sees it: a voter,
     * a learner, or (both false) not a member. */
    bool voter;
    bool learner;
};

/* As of the node thread's last pass over the shard. INBOX_ERANGE for a
 * shard id out of range. */
int node_status(const struct node *n, uint32_t shard,
                struct node_shard_status *out);
/* The sticky storage error (0 while healthy). */
int node_failed(const struct node *n);
uint64_t node_id(const struct node *n);

/* The node's metric series (valid until node_close), for metrics_render. */
void node_metrics(const struct node *n, const struct metrics_desc **descs,
                  size_t *count);

/* ---- membership (docs/node.md, "Membership changes") ------------------- */

/* Any thread; queued for the node thread; returns at once.
 *
 * node_member_add: every shard this node leads gets `id` as a learner
 * (RAFT_CONF_ADD_LEARNER), one conf change at a time per shard. ANY leader
 * (of any shard, whoever asked) promotes a learner of its shard to voter
 * once the learner has caught up (match nonzero and within
 * NODE_PROMOTE_LAG_MAX entries of the leader's last index). Idempotent.
 * Shards led elsewhere are not touched: the caller (the admin tool)
 * repeats the call on every node until every shard lists `id` as a voter
 * (node_shard_members).
 *
 * node_member_remove: every shard this node leads removes `id`
 * (RAFT_CONF_REMOVE); if `id` is this node, it first transfers leadership
 * of those shards to the most caught-up other voter (the new leader
 * removes it when asked again). Idempotent; repeat until no shard lists
 * it.
 *
 * A request stays pending and is retried on the node's ticks while this
 * node leads (conf changes refused with INBOX_ECONF_CHANGE_PENDING and the
 * like are simply tried again), until every shard, as this node sees it,
 * lists `id` as a voter (add) or not at all (remove), or until a later
 * request for the same id supersedes it; at most NODE_MEMBER_TARGETS_MAX
 * ids are pending (a new one replaces the oldest).
 *
 * Returns 0, INBOX_EINVAL (id 0; a remove of `id` while it is the only
 * voter of some shard, as this node saw it on its last pass: a shard is
 * never left without a voter), INBOX_ESHUTDOWN. */
int node_member_add(struct node *n, uint64_t id);
int node_member_remove(struct node *n, uint64_t id);
/* Transfer leadership of `shard` to voter `to` (0: the most caught-up
 * other voter), Raft dissertation §3.10. INBOX_ENOT_LEADER if this node
 * does not lead it (as of its last pass), INBOX_ERANGE bad shard,
 * INBOX_EINVAL `to` is not a voter (or is this node, or there is no other
 * voter), INBOX_ESHUTDOWN; else 0: the transfer is handed to the node
 * thread and proceeds (watch node_status; raft abandons it after an
 * election timeout). */
int node_transfer_leader(struct node *n, uint32_t shard, uint64_t to);
/* The shard's membership in effect (raft_membership of its group: the
 * latest configuration in its log, committed or not), as of the node
 * thread's last pass; any thread. INBOX_ERANGE bad shard. */
int node_shard_members(const struct node *n, uint32_t shard,
                       struct raft_membership *out);

/* For tests and tools: ask the node thread to checkpoint now and wait
 * until it has (store checkpoint + WAL release). Not from a callback. */
int node_checkpoint(struct node *n);

#endif /* INBOX_SERVER_NODE_H */
