/*
 * members.h — DATA/members: each shard's Raft membership at its WAL release
 * point, for the shards whose membership ever differed from node.meta's
 * bootstrap one. It is what lets the node release (compact) a shard's WAL
 * past configuration entries, install a snapshot carrying another
 * membership, and still recover the right membership at restart
 * (docs/node.md, "Membership").
 *
 * A record says: as of index `index` the shard's membership is `m`, and no
 * configuration entry lies in (index, R] where R is the shard's WAL release
 * point. It also keeps the record it replaced (`prev_index`, `prev`): the
 * node writes a new record *before* the release (or snapshot install) that
 * makes it true, so a crash in between leaves a record whose index is past
 * R; start-up then uses `prev` (members_effective). Invariants, checked by
 * members_read and asserted before writing:
 *   1. prev_index <= index; every membership has 1..INBOX_RAFT_VOTERS_MAX
 *      voters and 0..INBOX_RAFT_LEARNERS_MAX learners, nonzero, distinct,
 *      voters and learners disjoint.
 *   2. At most the newest record of a shard is ahead of its release point:
 *      prev_index <= R always (members_effective refuses otherwise).
 *   3. Records are sorted by shard, one per shard, shard < shard count.
 * A shard with no record has node.meta's bootstrap membership at its
 * release point.
 *
 * Format (little-endian), written whole through a temporary file, fsync,
 * rename and a directory fsync, so it is either the old file or the new:
 *
 *   offset size  field
 *   0      8     magic "INBXMEMB"
 *   8      4     format version (1)
 *   12     4     shard count (the node's, 1..INBOX_SHARD_COUNT_MAX)
 *   16     4     record count (0..shard count)
 *   20     4     reserved, zero
 *   24     216*k records:
 *                 0    4   shard id
 *                 4    4   reserved, zero
 *                 8    8   index
 *                 16   8   prev index
 *                 24   96  membership as of index (block below)
 *                 120  96  prev membership
 *   24+216k 8    XXH3-64 of bytes [0, 24 + 216k)
 *
 * Membership block (96 bytes): u32 voters count, u32 learners count,
 * 7 x u64 voters, 4 x u64 learners; unused slots zero.
 *
 * No file: no shard ever changed. A file that is short, long, fails its
 * checksum or breaks an invariant is INBOX_ECORRUPT — never read as empty,
 * since that would silently bring back the bootstrap membership.
 *
 * Threads: the node thread only.
 */
#ifndef INBOX_SERVER_MEMBERS_H
#define INBOX_SERVER_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define MEMBERS_FILE "members"
#define MEMBERS_VERSION 1u
#define MEMBERS_HEADER_BYTES 24u
#define MEMBERS_MEMB_BYTES 96u
#define MEMBERS_REC_BYTES (24u + 2u * MEMBERS_MEMB_BYTES)
#define MEMBERS_TRAILER_BYTES 8u

/* One shard's record; present false: none (bootstrap membership). */
struct members_rec {
    bool present;
    uint64_t index;
    uint64_t prev_index;
    struct raft_membership m;
    struct raft_membership prev;
};

/* Read DATA/members into recs[0..shard_count) (absent ones zeroed).
 * 0 also when there is no file. INBOX_ECORRUPT (errmsg says why),
 * INBOX_EFORMAT for another version, negative errno otherwise. */
int members_read(const char *data_dir, uint32_t shard_count,
                 struct members_rec *recs, char *errmsg, size_t errmsg_bytes);
/* Write every present record durably (temporary file, fsync, rename,
 * directory fsync). */
int members_write(const char *data_dir, uint32_t shard_count,
                  const struct members_rec *recs);

/* The membership in effect at release point `release`: rec->m if
 * rec->index <= release, else rec->prev (a crash came between writing the
 * record and the release it announced); boot when no record.
 * INBOX_ECORRUPT if even prev is past release (invariant 2). */
int members_effective(const struct members_rec *rec, uint64_t release,
                      const struct raft_membership *boot,
                      struct raft_membership *out, uint64_t *index);

/* Same voters and same learners, in any order. */
bool members_same(const struct raft_membership *a,
                  const struct raft_membership *b);
/* Invariant 1 for one membership. */
bool members_valid(const struct raft_membership *m);

#endif /* INBOX_SERVER_MEMBERS_H */
