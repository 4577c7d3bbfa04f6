/*
 * raft_log.h — one shard's Raft log over the node-wide WAL: the
 * raft_storage implementation (raft/raft.h) that the node hands to each
 * shard's raft, and the encoding of a ready batch into WAL records.
 *
 * What lives where (docs/node.md, "Recovery"):
 *   - entries: WAL ENTRY records of the shard. The record payload is one
 *     byte of entry type (enum raft_entry_type: 0 normal, 1 configuration)
 *     followed by the entry's data; the WAL itself knows only term, index
 *     and opaque bytes. An entry of length 0 (a leader's no-op) is stored as
 *     the type byte alone.
 *   - hard state: WAL HARD_STATE records (term, vote, commit).
 *   - the "snapshot": at raft_create, the released WAL prefix. Its index
 *     is the shard's release point R (first - 1), its term the WAL's
 *     remembered term of that entry, and its membership the one the node
 *     persisted for the shard at R (DATA/members, server/members.h; else
 *     node_meta's bootstrap membership); the node moves it along with
 *     every release and install (raft_log_set_membership).
 *   - snapshots sent to followers (once raft_log_snapshots_enable ran):
 *     raft asks snapshot() only when a follower needs entries <= R. The
 *     answer must describe real data, never "empty data at R" (raft skips
 *     snapshot_chunk when data_bytes is 0, and the follower would install
 *     an empty state). So snapshot() returns the shard's materialized
 *     snapshot file (server/snapshot.h) when one exists with index >= R;
 *     otherwise it asks the node's make hook to materialize one now
 *     (synchronously, on the node thread: the store's last checkpoint,
 *     index X >= R, term and membership as of X, data_bytes = file size),
 *     dropping the older file. If that fails, it answers index R with
 *     data_bytes UINT64_MAX and snapshot_chunk() then refuses
 *     (INBOX_EUNAVAILABLE), so raft falls back to probing and asks again
 *     later; nothing is ever installed from it.
 *     snapshot_chunk(index, offset, max) preads the file at any offset, so
 *     a transfer interrupted by a broken link resumes at the offset the
 *     follower asks for. An index other than the file's (the file was
 *     replaced meanwhile) is INBOX_EUNAVAILABLE: raft starts over.
 *
 * Memory. Raft may keep the data pointers it gets from entries() and
 * snapshot_chunk() until its next raft_advance, and may call them several
 * times in between, so each call reads into its own buffer from a pool;
 * raft_log_reads_done()
 * (called by the node right after raft_advance and after raft_create)
 * recycles the pool without freeing it, so steady state allocates nothing.
 *
 * Threads: a raft_log is used only by the node thread (like its raft).
 */
#ifndef INBOX_SERVER_RAFT_LOG_H
#define INBOX_SERVER_RAFT_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "snapshot.h"
#include "wal.h"

/* Bytes of framing a raft entry gets inside its WAL record payload. */
#define RAFT_LOG_ENTRY_PREFIX_BYTES 1u

/* A pooled read buffer and the payload bytes it last held. */
struct raft_log_buf {
    struct wal_entries e;
    size_t bytes;
};

/* Pooled buffers kept across cycles, and the payload a kept buffer may
 * hold on to; anything beyond is freed at raft_log_reads_done. */
#define RAFT_LOG_BUFS_KEPT 4u
#define RAFT_LOG_BUF_BYTES_KEPT (1u * INBOX_MIB)

/* A pooled snapshot chunk buffer. */
struct raft_log_cbuf {
    uint8_t *p;
    uint32_t cap;
};

struct raft_log;

/* How a raft_log gets a snapshot made: the node's hook (it owns the store).
 * make fills out with a materialized snapshot of l's shard whose index is
 * at least release, or returns an error. */
struct raft_log_snap_hooks {
    void *ctx;
    int (*make)(void *ctx, struct raft_log *l, uint64_t release,
                struct snapshot_file *out);
};

struct raft_log {
    struct wal *wal;
    uint32_t shard;
    struct raft_membership membership; /* as of the release point */
    /* The materialized snapshot served to followers (fd < 0: none). */
    struct snapshot_file snap;
    const struct raft_log_snap_hooks *hooks; /* NULL: snapshots disabled */
    /* private: read buffers handed to raft since the last reads_done */
    struct raft_log_buf *bufs;
    size_t bufs_used;
    size_t bufs_cap;
    struct raft_log_cbuf *cbufs;
    size_t cbufs_used;
    size_t cbufs_cap;
};

/* Bind l to a shard of an open WAL. m is the membership in effect at the
 * shard's release point (copied). Allocates nothing. */
void raft_log_init(struct raft_log *l, struct wal *wal, uint32_t shard,
                   const struct raft_membership *m);
/* Free the read buffers and drop the materialized snapshot. The WAL is not
 * touched. */
void raft_log_free(struct raft_log *l);

/* From now on snapshot() may materialize snapshots through hooks (call it
 * after raft_create, so raft starts from the release point). */
void raft_log_snapshots_enable(struct raft_log *l,
                               const struct raft_log_snap_hooks *hooks);
/* Close and delete the materialized snapshot, if any (no follower needs
 * it, or the log was replaced by an installed snapshot). Safe while raft
 * holds chunk pointers: those point into the pool, not the file. */
void raft_log_snapshot_drop(struct raft_log *l);
/* The release point moved (a checkpoint's release, a snapshot install):
 * the membership at the new one. */
void raft_log_set_membership(struct raft_log *l,
                             const struct raft_membership *m);

/* The raft_storage table for raft_options.storage (ctx is l). */
void raft_log_storage(struct raft_log *l, struct raft_storage *out);

/* Raft no longer holds pointers from earlier entries() calls: reuse the
 * buffers (at most RAFT_LOG_BUFS_KEPT of them, each trimmed back when it
 * held more than RAFT_LOG_BUF_BYTES_KEPT, so a large replay at start-up
 * does not stay resident). */
void raft_log_reads_done(struct raft_log *l);

/* The hard state to start raft with (zeroes when the WAL has none). */
int raft_log_hard_state(struct raft_log *l, struct raft_hard_state *hs);

/* Bytes of WAL record payload an entry of data length len takes. */
static inline size_t raft_log_record_bytes(uint32_t len)
{
    return (size_t)len + RAFT_LOG_ENTRY_PREFIX_BYTES;
}

/* Fill rec for entry e, with its payload (type byte + data) written to
 * buf, which must have raft_log_record_bytes(e->len) bytes and stay valid
 * until the record is appended. */
void raft_log_entry_record(const struct raft_log *l, const struct raft_entry *e,
                           uint8_t *buf, struct wal_record *rec);
/* Fill rec with the shard's hard state. */
void raft_log_hard_state_record(const struct raft_log *l,
                                const struct raft_hard_state *hs,
                                struct wal_record *rec);

#endif /* INBOX_SERVER_RAFT_LOG_H */
