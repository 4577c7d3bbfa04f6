/*
 * node_meta.h — a node's identity file, DATA/node.meta: which node this
 * data directory belongs to, how many shards the cluster was created with,
 * and the membership every shard's Raft group started from (bootstrap).
 *
 * Format (96 bytes, little-endian), written once at first start through a
 * temporary file, fsync, rename and directory fsync, so it is either absent
 * or whole:
 *
 *   offset size field
 *   0      8    magic "INBXNODE"
 *   8      4    format version (1)
 *   12     4    shard count (1..INBOX_SHARD_COUNT_MAX)
 *   16     8    node id (nonzero)
 *   24     4    bootstrap voters count (1..INBOX_RAFT_VOTERS_MAX)
 *   28     4    reserved, zero
 *   32     56   bootstrap voters: 7 x u64 node id, unused slots zero
 *   88     8    XXH3-64 of bytes [0, 88)
 */
#ifndef INBOX_SERVER_NODE_META_H
#define INBOX_SERVER_NODE_META_H

#include <stddef.h>
#include <stdint.h>

#include "inbox/limits.h"

#define NODE_META_FILE "node.meta"
#define NODE_META_VERSION 1u
#define NODE_META_BYTES 96u

struct node_meta {
    uint64_t node_id;
    uint32_t shard_count;
    uint32_t voters_count;
    uint64_t voters[INBOX_RAFT_VOTERS_MAX];
};

/* Read DATA/node.meta. INBOX_ENOTFOUND if there is none (first start),
 * INBOX_ECORRUPT for a bad magic, size or checksum, INBOX_EFORMAT for
 * another version, negative errno otherwise. */
int node_meta_read(const char *data_dir, struct node_meta *out);
/* Write it durably (temporary file, fsync, rename, directory fsync). */
int node_meta_write(const char *data_dir, const struct node_meta *m);

#endif /* INBOX_SERVER_NODE_META_H */
