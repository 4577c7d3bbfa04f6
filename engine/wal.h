/*
 * wal.h — the node-wide write-ahead log: the whole contract.
 *
 * One log per node, shared by every shard (Raft group) hosted there, so one
 * fdatasync covers every shard's entries of a batch. The log is a directory
 * of append-only segment files; each record is framed with its length and an
 * XXH3-64 checksum (format byte by byte in docs/storage.md).
 *
 * What the log keeps, per shard:
 *   - the Raft entries [first, last] (term, index, payload), indexed in
 *     memory so wal_term() needs no I/O and wal_entries() one pread per run
 *     of adjacent records;
 *   - the latest hard state (term, vote, commit);
 *   - the released prefix: entries <= released are gone (compaction), and
 *     the term of entry `released` is remembered for Raft's log matching.
 *
 * Writes are append-only. A conflicting suffix (Raft §5.3) is voided either
 * by wal_truncate_suffix() or implicitly by appending an entry at an index
 * <= last: later appends at those indexes win. Release (compaction) and
 * segment deletion happen in wal_release_prefix(es)().
 *
 * Memory: 24 bytes per live entry, plus one open file per segment.
 *
 * Durability: wal_append() writes (one pwrite per call) and returns an LSN;
 * nothing is durable until wal_sync(lsn) returns 0. Concurrent wal_sync()
 * callers share fdatasyncs (group commit, leader/follower). After any
 * failed write or sync the log is failed: every later write or sync returns
 * INBOX_EFAILED until the log is closed and reopened (recovery then decides
 * what is on disk).
 *
 * Opening recovers: every record's checksum is verified; a torn tail at the
 * end of the last segment is cut; corruption anywhere else fails the open
 * with INBOX_ECORRUPT and a message naming the file and offset.
 *
 * Threads: every function except wal_open and wal_close may be called from
 * any thread concurrently. wal_close must not race with any other call.
 *
 * Errors: 0 or a negative code of include/inbox/error.h (or -errno from the
 * file system). INBOX_EINVAL for a malformed request, INBOX_ECOMPACTED for
 * an index below the released prefix, INBOX_EUNAVAILABLE for one above the
 * last entry, INBOX_EFAILED when the log is failed.
 */
#ifndef INBOX_ENGINE_WAL_H
#define INBOX_ENGINE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "vfs.h"

struct wal;

struct wal_options {
    /* Directory holding the segments; it must exist. Copied at open. */
    const char *dir;
    /* Segment size; 0 = INBOX_WAL_SEGMENT_BYTES_DEFAULT. Must lie within
     * [INBOX_WAL_SEGMENT_BYTES_MIN, INBOX_WAL_SEGMENT_BYTES_MAX]. Existing
     * segments keep the size they were created with. */
    uint64_t segment_bytes;
    /* File layer; NULL = vfs_posix(). Must outlive the wal. */
    const struct vfs *vfs;
    /* Optional: on a failed open, a NUL-terminated human message (naming
     * the file and offset for INBOX_ECORRUPT) is written here. */
    char *errmsg;
    size_t errmsg_bytes;
};

/* Record types, as written on disk (docs/storage.md). */
enum wal_record_type {
    WAL_RECORD_ENTRY = 1,      /* a Raft entry: term, index, payload */
    WAL_RECORD_TRUNCATE = 2,   /* voids the shard's entries >= index */
    WAL_RECORD_HARD_STATE = 3, /* term, vote, commit */
    WAL_RECORD_RELEASE = 4,    /* entries <= index released (compaction) */
};

/* One record handed to wal_append. Only ENTRY, TRUNCATE and HARD_STATE may
 * be appended this way (RELEASE goes through wal_release_prefix).
 *   ENTRY:      term, index, data/len (len <= INBOX_WAL_RECORD_PAYLOAD_
 *               BYTES_MAX). index must be in [first, last + 1] of the
 *               shard; any index >= 1 if no entry or release was ever
 *               logged for the shard. An index <= last voids the entries
 *               >= index.
 *   TRUNCATE:   index in [first, last + 1]; voids entries >= index.
 *   HARD_STATE: term, vote, index = commit.
 * Fields not used by a type must be zero. The data is copied; the caller
 * keeps ownership. */
struct wal_record {
    uint8_t type;
    uint32_t shard; /* < INBOX_WAL_SHARD_IDS_MAX */
    uint64_t term;
    uint64_t index;
    uint64_t vote;
    const void *data;
    uint32_t len;
};

struct wal_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

/* One entry returned by wal_entries. */
struct wal_entry {
    uint64_t term;
    uint64_t index;
    const uint8_t *data; /* points into the owning struct wal_entries */
    uint32_t len;
};

/* The result buffer of wal_entries, owned by the caller. Zero-initialise
 * it, reuse it across calls (its memory is kept and grown, never shrunk, so
 * steady-state reads allocate nothing), and release it with
 * wal_entries_free. v[0..n) and the bytes their `data` point at stay valid
 * until the next wal_entries call on the same struct or wal_entries_free,
 * whatever else happens to the log (even wal_close). */
struct wal_entries {
    struct wal_entry *v;
    size_t n;
    /* private */
    size_t v_cap;
    uint8_t *buf;
    size_t buf_cap;
    void *loc;
    size_t loc_cap;
};

struct wal_stats {
    uint64_t appends;        /* wal_append calls (and internal appends) */
    uint64_t records;        /* records written */
    uint64_t bytes_written;  /* bytes written, framing included */
    uint64_t syncs;          /* wal_sync calls that had to wait for a sync */
    uint64_t fsyncs;         /* fdatasyncs of segments (group commits) */
    uint64_t records_synced; /* records made durable by those fdatasyncs */
    uint64_t segments;       /* segment files now in the directory */
    uint64_t segments_created;
    uint64_t segments_deleted;
    /* What the last open's recovery cut as a torn tail (docs/storage.md,
     * "Recovery"): bytes zeroed from offset torn_offset of segment
     * torn_segment; 0 bytes if the log ended cleanly. Records acknowledged
     * as durable can be among them only if the disk lost synced writes. */
    uint64_t torn_bytes;
    uint64_t torn_segment;
    uint64_t torn_offset;
    uint64_t written_lsn; /* LSN of the last record written */
    uint64_t durable_lsn; /* every LSN <= this is durable */
    int failed;           /* the sticky error, 0 if the log is healthy */
};

/* Open (and recover) the log in opts->dir, creating the first segment if
 * there is none. On success *out owns the log until wal_close. The
 * directory is locked while open: INBOX_ELOCKED if another open holds it.
 * INBOX_ECORRUPT / INBOX_EFORMAT when recovery refuses the log (see
 * opts->errmsg for the file and offset). */
int wal_open(const struct wal_options *opts, struct wal **out);

/* Close the files and free the log. It does not sync: call wal_sync first
 * for anything that must be durable. NULL is a no-op. */
void wal_close(struct wal *w);

/* Append n records (1 <= n <= INBOX_WAL_BATCH_RECORDS_MAX, framed size <=
 * INBOX_WAL_BATCH_BYTES_MAX) for any mix of shards. The batch is validated
 * as a whole first: a request error writes nothing. An I/O error fails the
 * log and leaves the batch's outcome unknown (some records may be on disk
 * and come back at the next open, like any unsynced write). On success
 * *lsn_out (optional) is the LSN of the batch's last record; the records
 * are written and visible to readers but not durable until wal_sync. */
int wal_append(struct wal *w, const struct wal_record *recs, size_t n,
               uint64_t *lsn_out);

/* Block until every record with LSN <= lsn is durable (its fdatasync
 * returned). Callers that arrive while an fdatasync is in flight wait and
 * are covered together by the next one. lsn 0 returns at once; an lsn
 * never returned by an append is INBOX_EINVAL. */
int wal_sync(struct wal *w, uint64_t lsn);

/* Entries [lo, hi) of a shard, at most bytes_max payload bytes but always
 * at least one entry when lo < hi (etcd's Storage.Entries). Checksums are
 * verified on the way out (INBOX_ECORRUPT). See struct wal_entries for who
 * owns the result. */
int wal_entries(struct wal *w, uint32_t shard, uint64_t lo, uint64_t hi,
                uint64_t bytes_max, struct wal_entries *out);
void wal_entries_free(struct wal_entries *e);

/* The term of entry i, without I/O. i == first - 1 answers with the term of
 * the released boundary when known; i == 0 answers 0. */
int wal_term(struct wal *w, uint32_t shard, uint64_t i, uint64_t *term);

/* first and last index of a shard's log: entries are [first, last], empty
 * when last == first - 1. A shard never written answers first 1, last 0. */
int wal_range(struct wal *w, uint32_t shard, uint64_t *first, uint64_t *last);

/* Append a TRUNCATE record voiding the shard's entries >= index. */
int wal_truncate_suffix(struct wal *w, uint32_t shard, uint64_t index,
                        uint64_t *lsn_out);

/* Release the shard's entries <= index (the state machine holds them
 * durably, or a snapshot at `index` replaced them); `term` is the term of
 * entry `index` (checked when that entry is in the log). index may exceed
 * last: the log is then empty and continues at index + 1 (snapshot install).
 * The release is synced, then every segment no shard needs any more is
 * deleted (oldest first; hard states and releases living in them are
 * re-logged forward and synced before). Blocks on fdatasync; call it from
 * a background path, not per entry. Releasing at or below the current
 * released index is a no-op. */
int wal_release_prefix(struct wal *w, uint32_t shard, uint64_t index,
                       uint64_t term);

/* Many releases at once (for instance every shard after a store
 * checkpoint): one batch of RELEASE records, one fdatasync, one pass of
 * segment deletion. Each release follows wal_release_prefix's rules; if any
 * is malformed (INBOX_EINVAL) nothing is written. 1 <= n <=
 * INBOX_WAL_BATCH_RECORDS_MAX. */
struct wal_release {
    uint32_t shard;
    uint64_t index;
    uint64_t term;
};
int wal_release_prefixes(struct wal *w, const struct wal_release *v, size_t n);

/* Append a HARD_STATE record (durable after wal_sync, like any record). */
int wal_hard_state_set(struct wal *w, uint32_t shard,
                       const struct wal_hard_state *hs, uint64_t *lsn_out);

/* The latest hard state written for the shard (durable only once synced);
 * INBOX_ENOTFOUND if none was ever written. */
int wal_hard_state_get(struct wal *w, uint32_t shard,
                       struct wal_hard_state *hs);

/* Counters, for the benchmark and metrics; a consistent snapshot. */
void wal_stats_get(struct wal *w, struct wal_stats *stats);

#endif /* INBOX_ENGINE_WAL_H */
