/*
 * wire.h — the byte encoding of Raft messages between nodes.
 *
 * A struct raft_msg (raft.h) becomes a self-delimiting run of bytes: it
 * opens with its own length, so a batch is simply messages laid end to end
 * and a reader can find the next one without understanding this one. The
 * transport carries such batches in RAFT frames (docs/protocol.md §4.12).
 * Pure like the rest of raft/: libc and include/inbox only, no allocation.
 *
 * Format, version 1. Every integer is little-endian (inbox/endian.h).
 * There is no magic number of its own: a batch only ever travels inside a
 * RAFT frame, whose header carries the magic, and four more bytes on every
 * heartbeat would buy nothing. The version byte is per message.
 *
 *   offset  size  field
 *   0       4     bytes          u32: the whole message, these 4 included
 *   4       1     version        u8:  RAFT_WIRE_VERSION (1)
 *   5       1     type           u8:  enum raft_msg_type, 1..11
 *   6       2     flags          u16: RAFT_MSG_F_* only, other bits zero
 *   8       8     group          u64
 *   16      8     from           u64
 *   24      8     to             u64
 *   32      8     term           u64
 *   40      8     index          u64
 *   48      8     log_term       u64
 *   56      8     commit         u64
 *   64      8     context        u64
 *   72      8     hint_index     u64
 *   80      8     hint_term      u64
 *   88      4     entries_count  u32: <= INBOX_RAFT_MSG_ENTRIES_MAX
 *   92            entries_count entries, each:
 *                   +0   8    term   u64
 *                   +8   8    index  u64
 *                   +16  1    type   u8: RAFT_ENTRY_NORMAL (0) or _CONF (1)
 *                   +17  4    len    u32
 *                   +21  len  data
 *                 the lens summing to at most INBOX_RAFT_MSG_BYTES_MAX;
 *   then for SNAPSHOT and SNAPSHOT_RESP only, the snapshot meta:
 *                   +0   8    index           u64
 *                   +8   8    term            u64
 *                   +16  8    data_bytes      u64
 *                   +24  1    voters_count    u8: <= INBOX_RAFT_VOTERS_MAX
 *                   +25  1    learners_count  u8: <= INBOX_RAFT_LEARNERS_MAX
 *                   +26       voters_count u64 voters, then
 *                             learners_count u64 learners
 *   then for SNAPSHOT only, the chunk:
 *                   +0   4    chunk_len  u32: <= the chunk bound
 *                   +4   chunk_len bytes
 *
 * The fields must consume exactly `bytes`: a message that ends early or
 * leaves bytes over is malformed. The encoding is canonical: decoding then
 * re-encoding gives back the same bytes. Fields a type does not carry
 * (snapshot meta outside SNAPSHOT/SNAPSHOT_RESP, the chunk outside
 * SNAPSHOT) are not encoded and decode as zero. Entries are encoded for
 * every type (raft sends them only in APPEND). The wire checks syntax and
 * bounds only; meaning (entry indexes following m->index, ids being
 * members, ...) is raft_step's to check.
 */
#ifndef INBOX_RAFT_WIRE_H
#define INBOX_RAFT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "raft.h"

#define RAFT_WIRE_VERSION 1u
/* The length prefix; a reader needs this many bytes to learn the rest. */
#define RAFT_WIRE_PREFIX_BYTES 4u
/* The fixed part, through entries_count: the smallest message. */
#define RAFT_WIRE_HEADER_BYTES 92u
#define RAFT_WIRE_ENTRY_HEADER_BYTES 21u
#define RAFT_WIRE_SNAPSHOT_META_BYTES_MAX                                      \
    (26u + 8u * (INBOX_RAFT_VOTERS_MAX + INBOX_RAFT_LEARNERS_MAX))
/* The largest message: full entries, meta and chunk at once (only APPEND
 * carries entries in practice, but the bound covers what decode accepts).
 * This belongs with the other raft/ bounds in inbox/limits.h. */
#define RAFT_WIRE_MSG_BYTES_MAX                                                \
    (RAFT_WIRE_HEADER_BYTES +                                                  \
     INBOX_RAFT_MSG_ENTRIES_MAX * RAFT_WIRE_ENTRY_HEADER_BYTES +               \
     INBOX_RAFT_MSG_BYTES_MAX + RAFT_WIRE_SNAPSHOT_META_BYTES_MAX + 4u +       \
     INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX)
_Static_assert(RAFT_WIRE_MSG_BYTES_MAX <= UINT32_MAX,
               "a message's length fits in its u32 prefix");
_Static_assert(INBOX_RAFT_VOTERS_MAX <= 255u && INBOX_RAFT_LEARNERS_MAX <= 255u,
               "member counts fit in a u8");

/* Bytes raft_wire_encode writes for m (exact); 0 if m cannot be encoded:
 * an unknown type, flags outside RAFT_MSG_F_*, entries over
 * INBOX_RAFT_MSG_ENTRIES_MAX or their data over INBOX_RAFT_MSG_BYTES_MAX, an
 * entry type other than 0 or 1, entries (or data of nonzero length) given
 * as NULL, members over their bounds (snapshot types), a chunk over
 * INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX or NULL with a nonzero length
 * (SNAPSHOT). Such a message is exactly one the decoder would refuse. */
size_t raft_wire_msg_bytes(const struct raft_msg *m);

/* Encode m at buf (cap bytes). Returns the bytes written, 0 if they do not
 * fit in cap or m cannot be encoded (see raft_wire_msg_bytes); nothing past
 * the returned count is touched. m is only read. */
size_t raft_wire_encode(const struct raft_msg *m, uint8_t *buf, size_t cap);

/* For a stream reader: the length of the message at the front of
 * buf[0..len). Sets *msg_bytes to RAFT_WIRE_PREFIX_BYTES if len is shorter
 * than that (read more first), else to the message's declared length
 * (read until that many bytes are there, then raft_wire_decode). Returns
 * INBOX_EPROTO if the declared length is below RAFT_WIRE_HEADER_BYTES or
 * above RAFT_WIRE_MSG_BYTES_MAX: no amount of reading will help. */
int raft_wire_peek(const uint8_t *buf, size_t len, size_t *msg_bytes);

/* Decode one message from the front of buf[0..len): a batch is decoded by
 * calling again at buf + *consumed until len is used up.
 *
 * Entries go to ents (room for ents_cap; pass INBOX_RAFT_MSG_ENTRIES_MAX to
 * take anything a peer may send) and m->entries points at ents (NULL when
 * there are none). Ownership: nothing is copied — entry data and m->chunk
 * point INTO buf, so buf and ents must outlive every use of *m (raft_step
 * copies what it keeps, so stepping before buf is reused is enough).
 * Zero-length data and chunks are NULL.
 *
 * Returns 0 and sets *consumed to the message's bytes, or INBOX_EPROTO for
 * anything malformed: shorter than its declared length (a truncated
 * message — use raft_wire_peek to wait for a whole one), a declared length
 * that disagrees with what the fields consume, an unknown version or type,
 * flags or an entry type outside their sets, any count or length over its
 * bound (including more entries than ents_cap). On error *consumed is 0,
 * *m and ents hold garbage, and the rest of the batch cannot be trusted.
 * Never reads outside buf[0..len), never allocates. */
int raft_wire_decode(const uint8_t *buf, size_t len, struct raft_msg *m,
                     struct raft_entry *ents, size_t ents_cap,
                     size_t *consumed);

#endif /* INBOX_RAFT_WIRE_H */
