/*
 * snapshot.h — Raft snapshots of a shard as files under DATA/snap/: the
 * leader materializes the store's snapshot stream of a shard into a file
 * and serves it to lagging followers chunk by chunk (at any offset, so a
 * broken transfer resumes where the follower stopped); a follower stages
 * the chunks it receives in a file and restores the store from it.
 * docs/node.md, "Snapshots between nodes", tells the whole story.
 *
 * Files (DATA/snap/):
 *   shard-<id>-<index>.snap  a leader's materialized snapshot of shard <id>
 *                            at applied index <index>
 *   incoming-<id>.part       a follower's staged incoming snapshot
 * Both are process-lifetime scratch: snapshot_dir_init() removes every one
 * of them at start-up. Neither is fsync'd: no file here is ever read after
 * a crash (a crash forgets raft's transfer state too, so the transfer
 * restarts from offset 0), and an install becomes durable through the
 * store's checkpoint, not through the staged file.
 *
 * Format: a snapshot file is the store's snapshot stream (docs/store.md,
 * "Snapshot stream": chunks of a 32-byte header and a body, the last one a
 * trailer carrying the applied index and term and the stream checksum)
 * written back to back, nothing else. Raft's snapshot meta travels with
 * every chunk (index, term, data_bytes = file size, membership).
 *
 * Threads: the node thread only (the store's owner).
 */
#ifndef INBOX_SERVER_SNAPSHOT_H
#define INBOX_SERVER_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "store.h"
#include "wal.h"

#define SNAPSHOT_PATH_BYTES 1100u

/* A materialized snapshot (leader side). fd < 0: none. */
struct snapshot_file {
    int fd;
    struct raft_snapshot_meta meta;
    char path[SNAPSHOT_PATH_BYTES];
};

/* A staged incoming snapshot (follower side). fd < 0: none. */
struct snapshot_stage {
    int fd;
    uint64_t index; /* the snapshot being received */
    uint64_t term;
    uint64_t bytes; /* written so far */
    char path[SNAPSHOT_PATH_BYTES];
};

void snapshot_file_init(struct snapshot_file *f);
void snapshot_stage_init(struct snapshot_stage *st);

/* Create DATA/snap (dir_out gets its path) and remove every stale file in
 * it. Returns 0 or -errno / INBOX_ERANGE (path too long). */
int snapshot_dir_init(const char *data_dir, char *dir_out, size_t cap);

/* The membership as of index: m_release (the membership at the WAL's
 * release point `release`) with every configuration entry of the shard in
 * (release, index] applied, read back from the WAL. */
int snapshot_membership_at(struct wal *wal, uint32_t shard, uint64_t release,
                           const struct raft_membership *m_release,
                           uint64_t index, struct raft_membership *out);

/* Apply to m every configuration entry of the shard in [lo, hi], read
 * back from the WAL; *last_conf (if not NULL) gets the index of the last
 * one (unchanged when there is none). INBOX_EUNAVAILABLE if the WAL does
 * not hold the whole range. */
int snapshot_conf_scan(struct wal *wal, uint32_t shard, uint64_t lo,
                       uint64_t hi, struct raft_membership *m,
                       uint64_t *last_conf);

/* Materialize the shard's store snapshot (as of the store's last
 * checkpoint) into dir/shard-<id>-<index>.snap and fill out (meta.index and
 * term are the store's applied index and term, data_bytes the file size,
 * membership as of that index). The caller drops any older file. */
int snapshot_file_make(struct store *store, struct wal *wal, uint32_t shard,
                       const char *dir, uint64_t release,
                       const struct raft_membership *m_release,
                       struct snapshot_file *out);
/* Up to max bytes at offset into buf (*len 0 at or past the end). */
int snapshot_file_read(const struct snapshot_file *f, uint64_t offset,
                       uint8_t *buf, uint32_t max, uint32_t *len);
/* Close and unlink (no-op when none). */
void snapshot_file_drop(struct snapshot_file *f);

/* Write an incoming chunk at its offset into dir/incoming-<shard>.part
 * (offset 0 truncates and starts over; a chunk of another snapshot than
 * the staged one must start at 0, else INBOX_EINVAL). */
int snapshot_stage_write(struct snapshot_stage *st, const char *dir,
                         uint32_t shard, const struct raft_snapshot_chunk *c);
/* Replace the shard's store state with the staged snapshot (store_restore_*
 * into the store's open transaction; not yet durable) and check that the
 * store now carries meta's index and term. INBOX_ECORRUPT if the staged
 * data is not the whole snapshot meta describes. */
int snapshot_stage_restore(struct snapshot_stage *st, struct store *store,
                           uint32_t shard, const struct raft_snapshot_meta *m);
void snapshot_stage_drop(struct snapshot_stage *st);

#endif /* INBOX_SERVER_SNAPSHOT_H */
