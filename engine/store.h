/*
 * store.h — the inbox state machine on LMDB: the whole contract.
 *
 * The store applies committed Raft entries (commands, see command.h) of
 * many shards into one LMDB environment and answers reads. It never calls
 * the WAL: the server hands it committed entries. Semantics (seqs, dedup,
 * ack, last-seen, expiry, bounds) are in docs/semantics.md; keys, values,
 * durability and the snapshot stream are in docs/store.md.
 *
 * Durability. The WAL in front of the store holds every committed entry, so
 * the store does not sync per apply. It keeps ONE long-lived LMDB write
 * transaction open: store_apply() writes into it, reads on the owning thread
 * see it at once, and store_checkpoint() commits it with LMDB's full sync.
 * Only then does store_durable_index() move, and the WAL may be released up
 * to it. A crash loses the uncommitted transaction; on reopen,
 * store_applied() tells where replay from the WAL must start. store_close()
 * does NOT checkpoint.
 *
 * Threads. Every call must come from the thread that called store_open(),
 * except the store_snapshot_* calls, which use their own read transaction
 * (the last checkpoint) and may run on any one other thread while the owner
 * keeps applying. store_close() must not run while a snapshot is open.
 *
 * Failure. If an LMDB put, delete or commit fails (MDB_MAP_FULL, EIO, ...)
 * the store aborts its transaction (losing everything since the last
 * checkpoint, which the WAL still holds), returns that error once, and then
 * answers INBOX_EFAILED to every call until it is closed and reopened.
 *
 * Determinism. Applying the same entries gives the same bytes on every
 * replica, provided every replica uses the same store_options bounds (the
 * per-inbox bounds, the dedup window and the per-entry sweep budgets are
 * cluster-wide settings, not per-node tuning).
 */
#ifndef INBOX_ENGINE_STORE_H
#define INBOX_ENGINE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "inbox/limits.h"

struct store;

struct store_options {
    const char *path;  /* directory; created if missing (one level) */
    uint64_t map_size; /* LMDB map size; default 64 GiB. Full -> EFULL */
    /* Per-inbox bounds (semantic rejections, per entry). */
    uint32_t payload_bytes_max;    /* default INBOX_PAYLOAD_BYTES_MAX */
    uint32_t pending_messages_max; /* default INBOX_PENDING_MESSAGES_DEFAULT */
    uint64_t pending_bytes_max;    /* default INBOX_PENDING_BYTES_DEFAULT */
    uint64_t dedup_window_ms;      /* default INBOX_DEDUP_WINDOW_MS_DEFAULT */
    /* Bounded work per applied entry (must be >= 1). */
    uint32_t
        expiry_sweep_messages_max;    /* INBOX_EXPIRY_SWEEP_MESSAGES_DEFAULT */
    uint32_t dedup_prune_records_max; /* INBOX_DEDUP_PRUNE_RECORDS_DEFAULT */
    uint32_t snapshot_chunk_bytes;    /* INBOX_SNAPSHOT_CHUNK_BYTES_DEFAULT */
    /* Nonzero: open an existing store for reading only (offline tools such
     * as `inboxctl store verify`). Nothing is created or written, not even
     * LMDB's lock file; reads see the last checkpoint; store_apply,
     * store_checkpoint and store_restore_begin answer INBOX_EINVAL. Takes
     * store.lock shared, so it fails with INBOX_ELOCKED while a writer (a
     * running node) has the store, and a writer fails while it is open.
     * INBOX_ENOTFOUND if path holds no store. Default 0. */
    int read_only;
};

/* Fill *o with the defaults (path NULL). */
void store_options_init(struct store_options *o);

/* Open (or create) the store at o->path. INBOX_ELOCKED if another process
 * holds it, INBOX_EFORMAT if it was written by an unknown format version
 * (a format-1 store, from before applied_commands, is migrated to format 2
 * when opened for writing: docs/store.md, "Format versions"),
 * INBOX_EINVAL for bad options, negative errno for system errors. */
int store_open(const struct store_options *o, struct store **out);
/* Abort the open transaction (no checkpoint!) and release everything. */
void store_close(struct store *s);

/* ---- apply --------------------------------------------------------------- */

/* A committed entry. data/len is a command (command.h); len 0 is a no-op
 * entry (e.g. Raft's empty or configuration entries): it only advances the
 * applied index and term. Indexes of one shard must increase across calls
 * but may skip values. */
struct store_entry {
    uint32_t shard;
    uint64_t index;
    uint64_t term;
    const uint8_t *data;
    size_t len;
};

/* The outcome for one target inbox of a command. */
struct store_target_result {
    int rc;          /* 0 or a semantic error (docs/semantics.md) */
    uint64_t seq;    /* enqueues: the message's seq (the first one if
                        deduped); ack/seen-set: 0 */
    uint8_t deduped; /* enqueues: 1 if the msg id was already in the window */
    /* The inbox's state after the command, so the answer needs no second
     * read: ack: its acked seq; seen-set: its stored last-seen ms (which
     * only moves forward, so may exceed the request's). 0 otherwise. */
    uint64_t after;
};

/* The outcome of one applied entry. rc is 0, or INBOX_EBAD_COMMAND if the
 * entry did not decode (then targets_count is 0). For a decoded command the
 * per-inbox outcome is in targets[i], in the command's target order.
 * Memory is the store's, valid only during the callback. */
struct store_result {
    uint32_t shard;
    uint64_t index;
    int rc;
    const struct command *command; /* NULL if rc != 0 or no-op */
    uint32_t targets_count;
    const struct store_target_result *targets;
};

/* Called once per applied entry, in order; never for skipped entries.
 * It must not call back into the store. */
typedef void (*store_apply_done_cb)(void *arg, const struct store_result *r);

/* Apply entries[0..count) in order into the open transaction. An entry at
 * or below its shard's applied index is skipped (replay is idempotent). A
 * semantically rejected entry still advances the applied index.
 * Returns 0, or a storage error (then the store is failed, see above).
 * Results already handed to apply_done before a storage error stay true:
 * the entries are committed in the log, and replaying them after reopen
 * yields the same results. apply_done may be NULL. */
int store_apply(struct store *s, const struct store_entry *entries,
                size_t count, void *arg, store_apply_done_cb apply_done);

/* Commit the open transaction with a full sync and open the next one.
 * Returns 0, or a storage error (the store is then failed). */
int store_checkpoint(struct store *s);

/* ---- reads (owning thread; they see every applied entry) ----------------- */

struct store_shard_info {
    uint64_t applied_index; /* 0 if the shard has never applied anything */
    uint64_t applied_term;
    uint64_t now_ms; /* the shard's clock: max leader time applied so far */
    /* Entries store_apply applied to the shard: every entry past the replay
     * guard, whatever it was (a command, accepted or rejected, one that did
     * not decode, a len-0 no-op), counted in the same transaction as its
     * apply; part of the shard's state, so hashed and carried by snapshots.
     * Invariant: applied_commands <= applied_index (each index is applied
     * at most once). The node hands every raft index to store_apply (leader
     * no-ops and configuration entries as len 0) or installs it by
     * snapshot, so for a node's store applied_commands == applied_index;
     * more means some entry was applied twice. */
    uint64_t applied_commands;
};
int store_applied(struct store *s, uint32_t shard,
                  struct store_shard_info *out);
/* The first shard >= from that has any state (a shard meta), for walking
 * every shard: INBOX_ENOTFOUND if there is none. */
int store_shard_next(struct store *s, uint32_t from, uint32_t *shard_out);
/* The applied index as of the last completed checkpoint (on disk). */
int store_durable_index(struct store *s, uint32_t shard, uint64_t *index);

/* A fetched message. payload points into LMDB's memory and, like the data
 * of mdb_get(), is valid only until the next store_apply, store_checkpoint,
 * store_restore_* or store_close call on this store; copy it to keep it. */
struct store_message {
    uint64_t seq;
    uint64_t enqueue_ts_ms;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    const uint8_t *payload;
    uint32_t payload_len;
};

/* Messages of an inbox with seq > after_seq, in seq order, hiding acked and
 * expired ones (relative to the shard's now_ms). At most
 * min(max_messages, INBOX_FETCH_MESSAGES_MAX) messages, and at most
 * max_bytes (capped at INBOX_FETCH_BYTES_MAX) of payload, except that the
 * first message is returned whatever its size. out must have room for
 * min(max_messages, INBOX_FETCH_MESSAGES_MAX) entries. An unknown inbox
 * has no messages (count 0, rc 0). */
int store_fetch_since(struct store *s, uint32_t shard, const uint8_t *inbox,
                      size_t inbox_len, uint64_t after_seq,
                      uint32_t max_messages, uint32_t max_bytes,
                      struct store_message *out, size_t *count_out);

/* An inbox's metadata as stored. pending_* count messages not yet acked or
 * swept by expiry: they may include messages past their deadline that a
 * fetch already hides (docs/semantics.md, "Expiry"). */
struct store_inbox_info {
    uint64_t next_seq;  /* the seq the next enqueue gets (1 for a new inbox) */
    uint64_t acked_seq; /* every seq <= this is gone (acked or expired) */
    uint64_t pending_count; /* next_seq - 1 - acked_seq */
    uint64_t pending_bytes; /* payload bytes of the pending messages */
    uint64_t last_seen_ms;  /* 0 if never set */
};
int store_inbox_info(struct store *s, uint32_t shard, const uint8_t *inbox,
                     size_t inbox_len, struct store_inbox_info *out);

struct store_inbox_ref {
    uint32_t shard;
    const uint8_t *inbox;
    uint16_t inbox_len;
};
/* last_seen_ms of each inbox (0 if unknown). count <= SEEN_GET_INBOXES_MAX
 * else INBOX_ETOO_MANY_INBOXES. */
int store_seen_get(struct store *s, const struct store_inbox_ref *inboxes,
                   size_t count, uint64_t *last_seen_ms_out);

/* XXH3-64 over the shard's whole state (every sub-database's key range, in
 * a fixed order, applied index included): equal on replicas that applied
 * the same entries. */
int store_state_hash(struct store *s, uint32_t shard, uint64_t *hash_out);

/* ---- snapshot and restore (docs/store.md, "Snapshot stream") ------------- */

struct store_snapshot;

/* Start streaming a shard as of the last checkpoint. Any thread. */
int store_snapshot_begin(struct store *s, uint32_t shard,
                         struct store_snapshot **out);
/* The applied index and term the snapshot carries. */
void store_snapshot_meta(const struct store_snapshot *snap,
                         uint64_t *applied_index, uint64_t *applied_term);
/* Next chunk: *chunk points into the snapshot's buffer, valid until the next
 * call on snap. *chunk_len is 0 after the last chunk has been returned. */
int store_snapshot_next(struct store_snapshot *snap, const uint8_t **chunk,
                        size_t *chunk_len);
void store_snapshot_end(struct store_snapshot *snap);

struct store_restore;

/* Replace a shard's state with a snapshot stream, atomically: nothing
 * changes unless store_restore_finish() returns 0. Between begin and
 * finish/abort the store answers INBOX_EBUSY to every other call (the
 * server should receive the whole snapshot before starting a restore). */
int store_restore_begin(struct store *s, uint32_t shard,
                        struct store_restore **out);
/* Feed the chunks in order. INBOX_ECORRUPT for a bad checksum, sequence or
 * record; INBOX_ESNAPSHOT_MISMATCH for another shard's stream. After an
 * error, only store_restore_abort() is allowed. */
int store_restore_chunk(struct store_restore *r, const uint8_t *chunk,
                        size_t len);
/* Check the trailer (overall checksum) and install. Frees r either way. */
int store_restore_finish(struct store_restore *r);
void store_restore_abort(struct store_restore *r);

#endif /* INBOX_ENGINE_STORE_H */
