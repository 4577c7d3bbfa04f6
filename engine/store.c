/*
 * store.c — the inbox state machine on LMDB.
 *
 * Design note
 * -----------
 * States of a store:
 *   OPEN       s->txn is a live write transaction; apply and reads use it.
 *   RESTORING  a child transaction of s->txn is live (s->restoring); every
 *              other call answers INBOX_EBUSY.
 *   FAILED     s->failed != 0, s->txn == NULL; every call answers
 *              INBOX_EFAILED until store_close().
 * A store opened with store_options.read_only is OPEN with s->txn a read
 * transaction (the last checkpoint) for good: store_apply,
 * store_checkpoint and store_restore_begin answer INBOX_EINVAL (writable()).
 * Transitions: store_open -> OPEN; store_restore_begin -> RESTORING;
 * store_restore_finish/abort -> OPEN; any failed LMDB write or commit
 * (fail()) -> FAILED.
 *
 * Invariants (1-4 checked by check_inbox() under assert in debug builds
 * after every change to an inbox; 5 and 6 by the tests' replay, snapshot
 * and state-hash comparisons):
 *  1. Per inbox, the stored messages are exactly seqs acked_seq+1 ..
 *     last_seq (gapless; removal happens only at the front).
 *  2. pending_bytes is the sum of their payload lengths.
 *  3. Stored (effective) deadlines are non-decreasing in seq, so the
 *     messages past their deadline are always a prefix of the pending ones.
 *  4. front_deadline is the deadline of message acked_seq+1 (NEVER if the
 *     inbox is empty), and the expiry index holds exactly one key
 *     (shard, front_deadline, inbox) per inbox whose front_deadline is not
 *     NEVER.
 *  5. Every dedup record (inbox, msg id) -> (seq, ts) has exactly one
 *     dedup_exp key (shard, ts, inbox, msg id), and vice versa.
 *  6. A shard's applied index only grows, and is written in the same
 *     transaction as the data it describes.
 *  7. A shard's applied_commands counts the entries store_apply applied
 *     to it (those past the replay guard), in the same transaction as
 *     they were applied, so applied_commands <= applied_index: each index
 *     is applied at most once (asserted in apply_entry()). A snapshot
 *     carries the count; a shard meta of format 1 (no count) reads as
 *     applied_commands == applied_index (see load_shard()).
 *
 * Keys all begin with the shard id, big-endian, so a shard is one
 * contiguous key range in every sub-database (docs/store.md).
 */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "inbox/endian.h"
#include "inbox/error.h"

/* ---- layout -------------------------------------------------------------- */

/* An inbox's metadata, messages and dedup records share one sub-database,
 * under the inbox's key prefix and a tag byte, so that the keys one enqueue
 * touches sit next to each other (usually on one leaf page): one cold B-tree
 * descent per enqueue instead of three. */
enum {
    DB_SHARD = 0,     /* shard                             -> shard_meta */
    DB_INBOX = 1,     /* shard|len|inbox|0                 -> inbox_meta
                         shard|len|inbox|1|seq             -> message
                         shard|len|inbox|2|msg_id          -> seq, ts */
    DB_DEDUP_EXP = 2, /* shard|ts|len|inbox|msg_id     -> (empty) */
    DB_EXPIRY = 3,    /* shard|deadline|len|inbox      -> (empty) */
    DB_COUNT = 4,
};
#define TAG_META 0u
#define TAG_MSG 1u
#define TAG_DEDUP 2u

static const char *const db_names[DB_COUNT] = {
    "shard",
    "inbox",
    "dedup_exp",
    "expiry",
};

/* Format 2 added applied_commands to the shard meta (24 -> 32 bytes). A
 * format-1 store is migrated when opened for writing (migrate_v1()); a
 * read-only open reads either. */
#define STORE_FORMAT_VERSION 2u
#define STORE_FORMAT_VERSION_V1 1u
#define FORMAT_KEY "inboxd.store.format"
#define NEVER UINT64_MAX

#define SHARD_META_BYTES 32u
#define SHARD_META_V1_BYTES 24u /* format 1: no applied_commands */
#define INBOX_META_BYTES 48u
#define MSG_HEADER_BYTES 32u /* msg_id[16] | enqueue_ts u64 | deadline u64 */
#define DEDUP_VALUE_BYTES 16u
#define KEY_BYTES_MAX (4u + 8u + 1u + INBOX_KEY_BYTES_MAX + INBOX_MSG_ID_BYTES)
#define LMDB_KEY_BYTES_MAX 511u

#define SNAP_MAGIC 0x50534E49u /* "INSP" little-endian */
/* Stream version 2 carries format-2 shard metas; restore also takes
 * version 1 (a format-1 node's stream), whose 24-byte metas load_shard()
 * reads. A format-1 node refuses a version-2 stream before touching its
 * state. */
#define SNAP_VERSION 2u
#define SNAP_VERSION_V1 1u
#define SNAP_HEADER_BYTES 32u
#define SNAP_FLAG_LAST 1u
#define SNAP_RECORD_HEADER_BYTES 7u
#define SNAP_TRAILER_BYTES 32u

_Static_assert(KEY_BYTES_MAX <= LMDB_KEY_BYTES_MAX, "keys fit LMDB's bound");
_Static_assert(SNAP_HEADER_BYTES + SNAP_RECORD_HEADER_BYTES + KEY_BYTES_MAX +
                       MSG_HEADER_BYTES + INBOX_PAYLOAD_BYTES_MAX <=
                   INBOX_SNAPSHOT_CHUNK_BYTES_MIN,
               "the largest record fits the smallest snapshot chunk");

struct shard_meta {
    uint64_t applied_index;
    uint64_t applied_term;
    uint64_t now_ms;
    uint64_t applied_commands; /* entries applied (invariant 7) */
};

struct inbox_meta {
    uint64_t last_seq;
    uint64_t acked_seq;
    uint64_t pending_bytes;
    uint64_t last_seen_ms;
    uint64_t front_deadline;
    uint64_t last_deadline;
};

/* Per-shard lower bounds on the earliest expiry deadline and the earliest
 * dedup-prune time: a pure cache that lets an entry skip the two cursor
 * seeks of its maintenance when nothing can be due. Never changes a
 * result: each bound is <= the true first key of its index (a sweep or a
 * prune that finds the first key refreshes it; an insert lowers it), and a
 * slot of another shard reads as 0 ("unknown, look"). Direct-mapped. */
#define HINT_SLOTS 4096u
#define SM_SLOTS 1024u
struct hint {
    uint32_t shard;
    bool valid;
    uint64_t expiry_due; /* no front deadline in the index is below this */
    uint64_t prune_due;  /* no dedup record is prunable before this */
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    MDB_txn *txn;              /* the long-lived write transaction */
    MDB_cursor *cur[DB_COUNT]; /* cursors on txn */
    MDB_txn *rtxn;             /* reset read txn for store_durable_index */
    int failed;
    int lock_fd;
    struct store_options opt;
    struct store_restore *restoring;
    bool read_only; /* opened with store_options.read_only */
    /* Shard metas of the entries being applied: loaded once per shard per
     * store_apply call and written back once at its end, so a batch that
     * mixes shards (the server applies every shard's committed entries
     * together) costs no extra B-tree get and put per entry. Direct-mapped
     * by shard; a collision writes the evicted slot back first. Empty
     * outside store_apply (sm_used_count == 0). */
    struct sm_slot {
        uint32_t shard;
        bool valid;
        struct shard_meta m;
    } sm_slots[SM_SLOTS];
    uint16_t sm_used[SM_SLOTS]; /* slot numbers that are valid */
    uint32_t sm_used_count;
    struct hint hints[HINT_SLOTS];
    struct command cmd; /* decoded entry, reused */
    struct store_target_result results[INBOX_FANOUT_INBOXES_MAX];
};

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static int map_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_MAP_FULL:
        return INBOX_EFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return INBOX_ECORRUPT;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
        return INBOX_EFORMAT;
    default:
        return rc > 0 ? -rc : INBOX_EIO;
    }
}

/* ---- keys and values ----------------------------------------------------- */

/* shard|len|inbox|tag: returns its length, which is also the length of the
 * common prefix of every key of that tag. */
static size_t key_tagged(uint8_t *k, uint32_t shard, const uint8_t *inbox,
                         size_t len, uint8_t tag)
{
    put_u32be(k, shard);
    k[4] = (uint8_t)len;
    memcpy(k + 5, inbox, len);
    k[5 + len] = tag;
    return 6 + len;
}

static size_t key_meta(uint8_t *k, uint32_t shard, const uint8_t *inbox,
                       size_t len)
{
    return key_tagged(k, shard, inbox, len, TAG_META);
}

static size_t key_msg(uint8_t *k, uint32_t shard, const uint8_t *inbox,
                      size_t len, uint64_t seq)
{
    size_t n = key_tagged(k, shard, inbox, len, TAG_MSG);
    put_u64be(k + n, seq);
    return n + 8;
}

static size_t key_dedup(uint8_t *k, uint32_t shard, const uint8_t *inbox,
                        size_t len, const uint8_t *msg_id)
{
    size_t n = key_tagged(k, shard, inbox, len, TAG_DEDUP);
    memcpy(k + n, msg_id, INBOX_MSG_ID_BYTES);
    return n + INBOX_MSG_ID_BYTES;
}

/* shard|u64be|len|inbox[|msg_id]: the dedup_exp and expiry keys. */
static size_t key_timed(uint8_t *k, uint32_t shard, uint64_t t,
                        const uint8_t *inbox, size_t len, const uint8_t *msg_id)
{
    put_u32be(k, shard);
    put_u64be(k + 4, t);
    k[12] = (uint8_t)len;
    memcpy(k + 13, inbox, len);
    if (msg_id == NULL)
        return 13 + len;
    memcpy(k + 13 + len, msg_id, INBOX_MSG_ID_BYTES);
    return 13 + len + INBOX_MSG_ID_BYTES;
}

static void shard_meta_put(uint8_t *v, const struct shard_meta *m)
{
    put_u64le(v, m->applied_index);
    put_u64le(v + 8, m->applied_term);
    put_u64le(v + 16, m->now_ms);
    put_u64le(v + 24, m->applied_commands);
}

/* v holds len bytes: SHARD_META_BYTES, or SHARD_META_V1_BYTES for a meta
 * written by format 1, which did not count. Every raft index a node has
 * reaches store_apply once (commands, leader no-ops and configuration
 * entries alike) or comes in a snapshot, so applied_index is exactly what
 * format 2 would have counted for a correct node; taking it keeps the
 * count equal on replicas that upgrade at different times (a replica
 * started at 0 would count less than one that had applied the same
 * entries after its upgrade). It cannot break invariant 7. */
static void shard_meta_get(const uint8_t *v, size_t len, struct shard_meta *m)
{
    assert(len == SHARD_META_BYTES || len == SHARD_META_V1_BYTES);
    m->applied_index = get_u64le(v);
    m->applied_term = get_u64le(v + 8);
    m->now_ms = get_u64le(v + 16);
    m->applied_commands =
        len == SHARD_META_BYTES ? get_u64le(v + 24) : m->applied_index;
}

static void inbox_meta_put(uint8_t *v, const struct inbox_meta *m)
{
    put_u64le(v, m->last_seq);
    put_u64le(v + 8, m->acked_seq);
    put_u64le(v + 16, m->pending_bytes);
    put_u64le(v + 24, m->last_seen_ms);
    put_u64le(v + 32, m->front_deadline);
    put_u64le(v + 40, m->last_deadline);
}

static void inbox_meta_get(const uint8_t *v, struct inbox_meta *m)
{
    m->last_seq = get_u64le(v);
    m->acked_seq = get_u64le(v + 8);
    m->pending_bytes = get_u64le(v + 16);
    m->last_seen_ms = get_u64le(v + 24);
    m->front_deadline = get_u64le(v + 32);
    m->last_deadline = get_u64le(v + 40);
}

static uint64_t pending_count(const struct inbox_meta *m)
{
    return m->last_seq - m->acked_seq;
}

/* ---- low-level access ---------------------------------------------------- */

static int db_get(struct store *s, int db, const uint8_t *k, size_t klen,
                  MDB_val *v)
{
    MDB_val key = {klen, (void *)k};
    return mdb_get(s->txn, s->dbi[db], &key, v);
}

static int db_put(struct store *s, int db, const uint8_t *k, size_t klen,
                  const void *v, size_t vlen)
{
    MDB_val key = {klen, (void *)k};
    MDB_val val = {vlen, (void *)v};
    return map_mdb(mdb_put(s->txn, s->dbi[db], &key, &val, 0));
}

static int db_del(struct store *s, int db, const uint8_t *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(s->txn, s->dbi[db], &key, NULL);
    return rc == MDB_NOTFOUND ? 0 : map_mdb(rc);
}

/* End s->txn. LMDB frees a write transaction's cursors with it, but a
 * read transaction's (a read-only store's) must be closed by hand. */
static void end_txn(struct store *s)
{
    if (s->txn == NULL)
        return;
    for (int i = 0; i < DB_COUNT && s->read_only; i++) {
        if (s->cur[i] != NULL)
            mdb_cursor_close(s->cur[i]);
        s->cur[i] = NULL;
    }
    mdb_txn_abort(s->txn);
    s->txn = NULL;
}

static int open_cursors(struct store *s)
{
    for (int i = 0; i < DB_COUNT; i++) {
        int rc = mdb_cursor_open(s->txn, s->dbi[i], &s->cur[i]);
        if (rc != 0)
            return map_mdb(rc);
    }
    return 0;
}

/* The store's transaction: a write transaction, or for a read-only store
 * a read transaction (its reads then see the last checkpoint). */
static int begin_txn(struct store *s)
{
    int rc =
        mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &s->txn);
    if (rc != 0) {
        s->txn = NULL;
        return map_mdb(rc);
    }
    return open_cursors(s);
}

/* Enter FAILED: drop the transaction (the WAL still holds what it had). */
static int fail(struct store *s, int rc)
{
    assert(rc != 0);
    if (s->txn != NULL)
        mdb_txn_abort(s->txn);
    s->txn = NULL;
    for (uint32_t i = 0; i < s->sm_used_count; i++)
        s->sm_slots[s->sm_used[i]].valid = false;
    s->sm_used_count = 0;
    s->failed = INBOX_EFAILED;
    return rc;
}

static int usable(const struct store *s)
{
    if (s->failed != 0)
        return INBOX_EFAILED;
    if (s->restoring != NULL)
        return INBOX_EBUSY;
    return 0;
}

/* usable() for the calls that write: a read-only store refuses them. */
static int writable(const struct store *s)
{
    int rc = usable(s);
    return rc == 0 && s->read_only ? INBOX_EINVAL : rc;
}

static int load_inbox(struct store *s, uint32_t shard, const uint8_t *inbox,
                      size_t len, struct inbox_meta *m, bool *found)
{
    uint8_t k[KEY_BYTES_MAX];
    MDB_val v;
    int rc = db_get(s, DB_INBOX, k, key_meta(k, shard, inbox, len), &v);
    if (rc == MDB_NOTFOUND) {
        *m = (struct inbox_meta){0, 0, 0, 0, NEVER, NEVER};
        if (found)
            *found = false;
        return 0;
    }
    if (rc != 0)
        return map_mdb(rc);
    if (v.mv_size != INBOX_META_BYTES)
        return INBOX_ECORRUPT;
    inbox_meta_get(v.mv_data, m);
    if (found)
        *found = true;
    return 0;
}

static int save_inbox(struct store *s, uint32_t shard, const uint8_t *inbox,
                      size_t len, const struct inbox_meta *m)
{
    uint8_t k[KEY_BYTES_MAX], v[INBOX_META_BYTES];
    inbox_meta_put(v, m);
    return db_put(s, DB_INBOX, k, key_meta(k, shard, inbox, len), v, sizeof v);
}

static int load_shard(MDB_txn *txn, MDB_dbi dbi, uint32_t shard,
                      struct shard_meta *m)
{
    uint8_t k[4];
    put_u32be(k, shard);
    MDB_val key = {4, k}, v;
    int rc = mdb_get(txn, dbi, &key, &v);
    if (rc == MDB_NOTFOUND) {
        *m = (struct shard_meta){0, 0, 0, 0};
        return 0;
    }
    if (rc != 0)
        return map_mdb(rc);
    if (v.mv_size != SHARD_META_BYTES && v.mv_size != SHARD_META_V1_BYTES)
        return INBOX_ECORRUPT;
    shard_meta_get(v.mv_data, v.mv_size, m);
    return 0;
}

static int put_shard(struct store *s, const struct sm_slot *slot)
{
    uint8_t k[4], v[SHARD_META_BYTES];
    put_u32be(k, slot->shard);
    shard_meta_put(v, &slot->m);
    return db_put(s, DB_SHARD, k, 4, v, sizeof v);
}

/* The cached meta of shard, loading it (and writing back the slot's
 * previous shard) on a miss. */
static int shard_slot(struct store *s, uint32_t shard, struct sm_slot **out)
{
    uint16_t i = (uint16_t)(shard % SM_SLOTS);
    struct sm_slot *slot = &s->sm_slots[i];
    int rc;
    if (slot->valid && slot->shard == shard) {
        *out = slot;
        return 0;
    }
    if (slot->valid) {
        if ((rc = put_shard(s, slot)) != 0)
            return rc;
    } else {
        s->sm_used[s->sm_used_count++] = i;
    }
    slot->valid = true;
    slot->shard = shard;
    if ((rc = load_shard(s->txn, s->dbi[DB_SHARD], shard, &slot->m)) != 0)
        return rc;
    *out = slot;
    return 0;
}

/* Write every cached shard meta back and empty the table. */
static int flush_shards(struct store *s)
{
    int rc = 0;
    for (uint32_t i = 0; i < s->sm_used_count; i++) {
        struct sm_slot *slot = &s->sm_slots[s->sm_used[i]];
        if (rc == 0)
            rc = put_shard(s, slot);
        slot->valid = false;
    }
    s->sm_used_count = 0;
    return rc;
}

static struct hint *hint_of(struct store *s, uint32_t shard)
{
    struct hint *h = &s->hints[shard % HINT_SLOTS];
    if (!h->valid || h->shard != shard)
        *h = (struct hint){shard, true, 0, 0};
    return h;
}

/* ---- invariant checker (debug builds) ------------------------------------ */

#ifndef NDEBUG
/* Invariants 1-4 for one inbox; walks its messages, so only under assert. */
static bool check_inbox(struct store *s, uint32_t shard, const uint8_t *inbox,
                        size_t len)
{
    struct inbox_meta m;
    if (load_inbox(s, shard, inbox, len, &m, NULL) != 0)
        return false;
    if (m.acked_seq > m.last_seq)
        return false;
    uint8_t k[KEY_BYTES_MAX];
    size_t klen = key_msg(k, shard, inbox, len, 0);
    size_t plen = klen - 8;
    MDB_val key = {klen, k}, v;
    uint64_t expect = m.acked_seq + 1, bytes = 0, prev_deadline = 0;
    uint64_t front = NEVER;
    MDB_cursor *c = s->cur[DB_INBOX];
    int rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size == klen &&
           memcmp(key.mv_data, k, plen) == 0) {
        uint64_t seq = get_u64be((const uint8_t *)key.mv_data + plen);
        uint64_t deadline = get_u64le((const uint8_t *)v.mv_data + 24);
        if (seq != expect || deadline < prev_deadline)
            return false;
        if (seq == m.acked_seq + 1)
            front = deadline;
        prev_deadline = deadline;
        bytes += v.mv_size - MSG_HEADER_BYTES;
        expect++;
        rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
    }
    if (expect != m.last_seq + 1 || bytes != m.pending_bytes ||
        front != m.front_deadline)
        return false;
    if (front != NEVER) {
        uint8_t ek[KEY_BYTES_MAX];
        size_t eklen = key_timed(ek, shard, front, inbox, len, NULL);
        if (db_get(s, DB_EXPIRY, ek, eklen, &v) != 0)
            return false;
    }
    return true;
}
#endif

/* ---- the front of an inbox: expiry index --------------------------------- */

/* After the front of an inbox changed, point the expiry index at the new
 * front message's deadline (invariant 4). */
static int reindex_front(struct store *s, uint32_t shard, const uint8_t *inbox,
                         size_t len, struct inbox_meta *m)
{
    uint64_t front = NEVER;
    uint8_t k[KEY_BYTES_MAX];
    int rc;
    if (pending_count(m) > 0) {
        MDB_val v;
        rc = db_get(s, DB_INBOX, k,
                    key_msg(k, shard, inbox, len, m->acked_seq + 1), &v);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? INBOX_ECORRUPT : map_mdb(rc);
        if (v.mv_size < MSG_HEADER_BYTES)
            return INBOX_ECORRUPT;
        front = get_u64le((const uint8_t *)v.mv_data + 24);
    }
    if (front == m->front_deadline)
        return 0;
    if (m->front_deadline != NEVER) {
        rc = db_del(s, DB_EXPIRY, k,
                    key_timed(k, shard, m->front_deadline, inbox, len, NULL));
        if (rc != 0)
            return rc;
    }
    if (front != NEVER) {
        rc = db_put(s, DB_EXPIRY, k,
                    key_timed(k, shard, front, inbox, len, NULL), "", 0);
        if (rc != 0)
            return rc;
        struct hint *h = hint_of(s, shard);
        if (front < h->expiry_due)
            h->expiry_due = front;
    }
    m->front_deadline = front;
    return 0;
}

/* Delete the front messages acked_seq+1 .. while seq <= up_to, and while
 * their deadline <= expire_now (pass NEVER to ignore deadlines), at most
 * *budget of them (NULL: unbounded). Updates m; does not save it. */
static int remove_front(struct store *s, uint32_t shard, const uint8_t *inbox,
                        size_t len, struct inbox_meta *m, uint64_t up_to,
                        uint64_t expire_now, uint32_t *budget)
{
    uint8_t k[KEY_BYTES_MAX];
    size_t klen = key_msg(k, shard, inbox, len, m->acked_seq + 1);
    size_t plen = klen - 8;
    MDB_val key = {klen, k}, v;
    MDB_cursor *c = s->cur[DB_INBOX];
    if (m->acked_seq >= up_to || (budget != NULL && *budget == 0))
        return 0;
    int rc = mdb_cursor_get(c, &key, &v, MDB_SET_KEY);
    while (rc == 0) {
        if (key.mv_size != klen || memcmp(key.mv_data, k, plen) != 0 ||
            v.mv_size < MSG_HEADER_BYTES)
            return INBOX_ECORRUPT;
        uint64_t seq = get_u64be((const uint8_t *)key.mv_data + plen);
        if (seq != m->acked_seq + 1)
            return INBOX_ECORRUPT;
        uint64_t deadline = get_u64le((const uint8_t *)v.mv_data + 24);
        if (expire_now != NEVER && deadline > expire_now)
            break;
        m->pending_bytes -= v.mv_size - MSG_HEADER_BYTES;
        rc = mdb_cursor_del(c, 0);
        if (rc != 0)
            return map_mdb(rc);
        m->acked_seq = seq;
        if (budget != NULL)
            --*budget;
        if (seq >= up_to || (budget != NULL && *budget == 0))
            break;
        rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        return m->acked_seq == up_to ? 0 : INBOX_ECORRUPT;
    return map_mdb(rc);
}

/* ---- per-entry bounded maintenance --------------------------------------- */

/* Remove expired front messages of the shard, in (deadline, inbox) order, at
 * most expiry_sweep_messages_max of them (docs/semantics.md, "Expiry"). */
static int sweep_expired(struct store *s, uint32_t shard, uint64_t now)
{
    uint32_t budget = s->opt.expiry_sweep_messages_max;
    uint8_t prefix[4];
    put_u32be(prefix, shard);
    if (now < hint_of(s, shard)->expiry_due)
        return 0;
    while (budget > 0) {
        MDB_val key = {4, prefix}, v;
        int rc = mdb_cursor_get(s->cur[DB_EXPIRY], &key, &v, MDB_SET_RANGE);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return map_mdb(rc);
        const uint8_t *kp = key.mv_data;
        if (rc == MDB_NOTFOUND || key.mv_size < 14 ||
            memcmp(kp, prefix, 4) != 0) {
            hint_of(s, shard)->expiry_due = NEVER; /* index empty */
            return 0;
        }
        if (get_u64be(kp + 4) > now) {
            hint_of(s, shard)->expiry_due = get_u64be(kp + 4);
            return 0;
        }
        uint8_t inbox[INBOX_KEY_BYTES_MAX];
        size_t len = kp[12];
        if (len < 1 || len > INBOX_KEY_BYTES_MAX || key.mv_size != 13 + len)
            return INBOX_ECORRUPT;
        memcpy(inbox, kp + 13, len);
        struct inbox_meta m;
        rc = load_inbox(s, shard, inbox, len, &m, NULL);
        if (rc == 0)
            rc = remove_front(s, shard, inbox, len, &m, m.last_seq, now,
                              &budget);
        if (rc == 0)
            rc = reindex_front(s, shard, inbox, len, &m);
        if (rc == 0)
            rc = save_inbox(s, shard, inbox, len, &m);
        if (rc != 0)
            return rc;
        assert(check_inbox(s, shard, inbox, len));
    }
    return 0;
}

/* Delete dedup records whose window has passed, oldest first, at most
 * dedup_prune_records_max of them. Expired records are already ignored by
 * lookups, so pruning only reclaims space. */
static int prune_dedup(struct store *s, uint32_t shard, uint64_t now)
{
    uint8_t prefix[4];
    put_u32be(prefix, shard);
    if (now < hint_of(s, shard)->prune_due)
        return 0;
    for (uint32_t i = 0; i < s->opt.dedup_prune_records_max; i++) {
        MDB_val key = {4, prefix}, v;
        MDB_cursor *c = s->cur[DB_DEDUP_EXP];
        int rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return map_mdb(rc);
        const uint8_t *kp = key.mv_data;
        if (rc == MDB_NOTFOUND || key.mv_size < 14 ||
            memcmp(kp, prefix, 4) != 0) {
            hint_of(s, shard)->prune_due = NEVER; /* nothing recorded */
            return 0;
        }
        uint64_t due = sat_add(get_u64be(kp + 4), s->opt.dedup_window_ms);
        if (due > now) {
            hint_of(s, shard)->prune_due = due;
            return 0;
        }
        size_t len = kp[12];
        if (len < 1 || len > INBOX_KEY_BYTES_MAX ||
            key.mv_size != 13 + len + INBOX_MSG_ID_BYTES)
            return INBOX_ECORRUPT;
        uint8_t dk[KEY_BYTES_MAX];
        size_t dklen = key_dedup(dk, shard, kp + 13, len, kp + 13 + len);
        rc = mdb_cursor_del(c, 0);
        if (rc != 0)
            return map_mdb(rc);
        rc = db_del(s, DB_INBOX, dk, dklen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------ */

/* The bounds, each with its own code (0 if the message fits). */
static int check_bounds(const struct store *s, const struct inbox_meta *m,
                        uint32_t payload_len)
{
    if (payload_len > s->opt.payload_bytes_max)
        return INBOX_EPAYLOAD_TOO_LARGE;
    if (pending_count(m) >= s->opt.pending_messages_max)
        return INBOX_EINBOX_FULL_MESSAGES;
    if (m->pending_bytes + payload_len > s->opt.pending_bytes_max)
        return INBOX_EINBOX_FULL_BYTES;
    return 0;
}

/* The dedup step of an enqueue. Sets *hit (and res) when (inbox, msg id)
 * has a record within the window. Otherwise, if the message passes its
 * bounds (verdict 0), records (seq, now) for it, replacing an expired
 * record and its dedup_exp key. The common case (a fresh id that fits)
 * costs one B-tree descent: a put with MDB_NOOVERWRITE, which hands back
 * the existing record when there is one. */
static int dedup_step(struct store *s, uint32_t shard, uint64_t now,
                      const struct command_target *t, uint64_t seq, int verdict,
                      struct store_target_result *res, bool *hit)
{
    uint8_t k[KEY_BYTES_MAX], dv[DEDUP_VALUE_BYTES];
    MDB_val key = {key_dedup(k, shard, t->inbox, t->inbox_len, t->msg_id), k};
    MDB_val v = {sizeof dv, dv};
    put_u64le(dv, seq);
    put_u64le(dv + 8, now);
    int rc = verdict == 0
                 ? mdb_put(s->txn, s->dbi[DB_INBOX], &key, &v, MDB_NOOVERWRITE)
                 : mdb_get(s->txn, s->dbi[DB_INBOX], &key, &v);
    uint64_t old_ts = NEVER;
    *hit = false;
    if (rc == MDB_KEYEXIST || (verdict != 0 && rc == 0)) {
        if (v.mv_size != DEDUP_VALUE_BYTES)
            return INBOX_ECORRUPT;
        old_ts = get_u64le((const uint8_t *)v.mv_data + 8);
        if (now < sat_add(old_ts, s->opt.dedup_window_ms)) {
            *res = (struct store_target_result){0, get_u64le(v.mv_data), 1, 0};
            *hit = true;
            return 0;
        }
        if (verdict != 0)
            return 0;
        /* An expired record: replace it. */
        if ((rc = db_put(s, DB_INBOX, k, key.mv_size, dv, sizeof dv)) != 0)
            return rc;
        rc = db_del(
            s, DB_DEDUP_EXP, k,
            key_timed(k, shard, old_ts, t->inbox, t->inbox_len, t->msg_id));
        if (rc != 0)
            return rc;
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return map_mdb(rc);
    }
    if (verdict != 0)
        return 0;
    rc = db_put(s, DB_DEDUP_EXP, k,
                key_timed(k, shard, now, t->inbox, t->inbox_len, t->msg_id), "",
                0);
    if (rc != 0)
        return rc;
    struct hint *hint = hint_of(s, shard);
    uint64_t due = sat_add(now, s->opt.dedup_window_ms);
    if (due < hint->prune_due)
        hint->prune_due = due;
    return 0;
}

/* Enqueue one message. Storage errors are returned; the semantic outcome
 * goes to *res. */
static int enqueue_one(struct store *s, uint32_t shard, uint64_t now,
                       const struct command *c, const struct command_target *t,
                       struct store_target_result *res)
{
    uint8_t k[KEY_BYTES_MAX];
    struct inbox_meta m;
    MDB_val v;
    *res = (struct store_target_result){0, 0, 0, 0};
    int rc = load_inbox(s, shard, t->inbox, t->inbox_len, &m, NULL);
    if (rc != 0)
        return rc;

    uint64_t seq = m.last_seq + 1;
    int verdict = check_bounds(s, &m, c->payload_len);
    bool hit;
    if ((rc = dedup_step(s, shard, now, t, seq, verdict, res, &hit)) != 0)
        return rc;
    if (hit || verdict != 0) {
        res->rc = hit ? 0 : verdict;
        return 0;
    }

    /* The message; its deadline is raised to its predecessor's so that
     * deadlines never decrease within an inbox (invariant 3). */
    uint64_t deadline = c->ttl_ms == 0 ? NEVER : sat_add(now, c->ttl_ms);
    if (pending_count(&m) > 0)
        deadline = max_u64(deadline, m.last_deadline);
    MDB_val key = {key_msg(k, shard, t->inbox, t->inbox_len, seq), k};
    v.mv_size = MSG_HEADER_BYTES + c->payload_len;
    rc = mdb_put(s->txn, s->dbi[DB_INBOX], &key, &v, MDB_RESERVE);
    if (rc != 0)
        return map_mdb(rc);
    uint8_t *p = v.mv_data;
    memcpy(p, t->msg_id, INBOX_MSG_ID_BYTES);
    put_u64le(p + 16, now);
    put_u64le(p + 24, deadline);
    if (c->payload_len > 0)
        memcpy(p + MSG_HEADER_BYTES, c->payload, c->payload_len);

    bool was_empty = pending_count(&m) == 0;
    m.last_seq = seq;
    m.pending_bytes += c->payload_len;
    m.last_deadline = deadline;
    if (was_empty &&
        (rc = reindex_front(s, shard, t->inbox, t->inbox_len, &m)) != 0)
        return rc;
    res->seq = seq;
    return save_inbox(s, shard, t->inbox, t->inbox_len, &m);
}

static int ack_one(struct store *s, uint32_t shard, const struct command *c,
                   struct store_target_result *res)
{
    const struct command_target *t = &c->targets[0];
    struct inbox_meta m;
    *res = (struct store_target_result){0, 0, 0, 0};
    int rc = load_inbox(s, shard, t->inbox, t->inbox_len, &m, NULL);
    if (rc != 0)
        return rc;
    if (c->ack_seq > m.last_seq) {
        res->rc = INBOX_EACK_BEYOND_LAST;
        return 0;
    }
    if (c->ack_seq > m.acked_seq) {
        rc = remove_front(s, shard, t->inbox, t->inbox_len, &m, c->ack_seq,
                          NEVER, NULL);
        if (rc == 0)
            rc = reindex_front(s, shard, t->inbox, t->inbox_len, &m);
        if (rc == 0)
            rc = save_inbox(s, shard, t->inbox, t->inbox_len, &m);
    } /* else idempotent: nothing to delete */
    res->after = m.acked_seq;
    return rc;
}

static int seen_set_one(struct store *s, uint32_t shard,
                        const struct command *c,
                        struct store_target_result *res)
{
    const struct command_target *t = &c->targets[0];
    struct inbox_meta m;
    bool found;
    *res = (struct store_target_result){0, 0, 0, 0};
    int rc = load_inbox(s, shard, t->inbox, t->inbox_len, &m, &found);
    if (rc != 0)
        return rc;
    res->after = max_u64(m.last_seen_ms, c->seen_ts_ms);
    if (found && c->seen_ts_ms <= m.last_seen_ms)
        return 0; /* only moves forward */
    m.last_seen_ms = res->after;
    return save_inbox(s, shard, t->inbox, t->inbox_len, &m);
}

static int exec_command(struct store *s, uint32_t shard, uint64_t now,
                        const struct command *c)
{
    int rc = 0;
    switch (c->type) {
    case COMMAND_ENQUEUE:
    case COMMAND_ENQUEUE_MANY:
        for (uint32_t i = 0; i < c->targets_count && rc == 0; i++) {
            rc = enqueue_one(s, shard, now, c, &c->targets[i], &s->results[i]);
            assert(rc != 0 || check_inbox(s, shard, c->targets[i].inbox,
                                          c->targets[i].inbox_len));
        }
        return rc;
    case COMMAND_ACK:
        rc = ack_one(s, shard, c, &s->results[0]);
        break;
    case COMMAND_SEEN_SET:
        rc = seen_set_one(s, shard, c, &s->results[0]);
        break;
    default:
        assert(!"decoder let an unknown type through");
        return INBOX_EINTERNAL;
    }
    assert(rc != 0 ||
           check_inbox(s, shard, c->targets[0].inbox, c->targets[0].inbox_len));
    return rc;
}

/* ---- apply --------------------------------------------------------------- */

static int apply_entry(struct store *s, const struct store_entry *e, void *arg,
                       store_apply_done_cb apply_done)
{
    struct sm_slot *slot;
    int rc = shard_slot(s, e->shard, &slot);
    if (rc != 0)
        return rc;
    struct shard_meta *sm = &slot->m;
#ifndef INBOX_PLANT_DOUBLE_APPLY_AFTER_RESTART
    if (e->index <= sm->applied_index)
        return 0; /* replay of an entry already applied */
#else
    /* PLANTED BUG (jepsen/README.md): no replay guard; an entry applied
     * before a restart is applied again when raft hands it back. */
#endif

    struct store_result r = {e->shard, e->index, 0, NULL, 0, s->results};
    if (e->len > 0) {
        r.rc = command_decode(e->data, e->len, &s->cmd);
        if (r.rc == 0) {
            uint64_t now = max_u64(sm->now_ms, s->cmd.leader_ts_ms);
            sm->now_ms = now;
            if ((rc = sweep_expired(s, e->shard, now)) != 0 ||
                (rc = prune_dedup(s, e->shard, now)) != 0 ||
                (rc = exec_command(s, e->shard, now, &s->cmd)) != 0)
                return rc;
            r.command = &s->cmd;
            r.targets_count = s->cmd.targets_count;
        }
    }
    /* Counted whatever the entry was (command, rejected or undecodable
     * command, no-op) so that the count depends only on the log: equal on
     * every replica at the same index (invariant 7). */
    sm->applied_commands++;
    sm->applied_index = e->index;
    sm->applied_term = e->term;
    assert(sm->applied_commands <= sm->applied_index);
    if (apply_done != NULL)
        apply_done(arg, &r);
    return 0;
}

int store_apply(struct store *s, const struct store_entry *entries,
                size_t count, void *arg, store_apply_done_cb apply_done)
{
    int rc = writable(s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < count; i++) {
        assert(entries[i].len == 0 || entries[i].data != NULL);
        if ((rc = apply_entry(s, &entries[i], arg, apply_done)) != 0)
            return fail(s, rc);
    }
    if ((rc = flush_shards(s)) != 0)
        return fail(s, rc);
    return 0;
}

int store_checkpoint(struct store *s)
{
    int rc = writable(s);
    if (rc != 0)
        return rc;
    assert(s->sm_used_count == 0);
    rc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    if (rc != 0)
        return fail(s, map_mdb(rc));
    if ((rc = begin_txn(s)) != 0)
        return fail(s, rc);
    return 0;
}

/* ---- open / close -------------------------------------------------------- */

void store_options_init(struct store_options *o)
{
    memset(o, 0, sizeof *o);
    o->map_size = 64ull << 30;
    o->payload_bytes_max = INBOX_PAYLOAD_BYTES_MAX;
    o->pending_messages_max = INBOX_PENDING_MESSAGES_DEFAULT;
    o->pending_bytes_max = INBOX_PENDING_BYTES_DEFAULT;
    o->dedup_window_ms = INBOX_DEDUP_WINDOW_MS_DEFAULT;
    o->expiry_sweep_messages_max = INBOX_EXPIRY_SWEEP_MESSAGES_DEFAULT;
    o->dedup_prune_records_max = INBOX_DEDUP_PRUNE_RECORDS_DEFAULT;
    o->snapshot_chunk_bytes = INBOX_SNAPSHOT_CHUNK_BYTES_DEFAULT;
}

static int check_options(const struct store_options *o)
{
    if (o->path == NULL || o->map_size < (1u << 20) ||
        o->payload_bytes_max > INBOX_PAYLOAD_BYTES_MAX ||
        o->pending_messages_max == 0 || o->pending_bytes_max == 0 ||
        o->expiry_sweep_messages_max == 0 || o->dedup_prune_records_max == 0 ||
        o->snapshot_chunk_bytes < INBOX_SNAPSHOT_CHUNK_BYTES_MIN ||
        o->snapshot_chunk_bytes > INBOX_SNAPSHOT_CHUNK_BYTES_MAX)
        return INBOX_EINVAL;
    return 0;
}

/* Rewrite every format-1 shard meta (24 bytes) as format 2, in txn: the
 * count it gains is load_shard()'s reading of a format-1 meta
 * (applied_commands = applied_index), so the migration changes no value a
 * reader sees, only the bytes (and so the state hash, equally on every
 * replica). One record per shard: cheap enough to do at open. */
static int migrate_v1(MDB_txn *txn, MDB_dbi shard_dbi)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, shard_dbi, &c);
    if (rc != 0)
        return map_mdb(rc);
    MDB_val key, v;
    rc = mdb_cursor_get(c, &key, &v, MDB_FIRST);
    while (rc == 0) {
        if (key.mv_size != 4 || (v.mv_size != SHARD_META_V1_BYTES &&
                                 v.mv_size != SHARD_META_BYTES)) {
            mdb_cursor_close(c);
            return INBOX_ECORRUPT;
        }
        if (v.mv_size == SHARD_META_V1_BYTES) {
            struct shard_meta m;
            uint8_t nv[SHARD_META_BYTES];
            shard_meta_get(v.mv_data, v.mv_size, &m);
            shard_meta_put(nv, &m);
            v = (MDB_val){sizeof nv, nv};
            if ((rc = mdb_cursor_put(c, &key, &v, MDB_CURRENT)) != 0)
                break;
        }
        rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : map_mdb(rc);
}

/* Check (or, writable, write) the format version in txn's main database;
 * a writable open migrates a format-1 store (migrate_v1). */
static int check_format(struct store *s, MDB_txn *txn, MDB_dbi main_dbi)
{
    static char format_key[] = FORMAT_KEY;
    MDB_val key = {sizeof format_key - 1, format_key}, v;
    uint8_t fv[4];
    int rc = mdb_get(txn, main_dbi, &key, &v);
    if (rc == MDB_NOTFOUND && s->read_only)
        return INBOX_EFORMAT; /* every store written by store_open has one */
    if (rc != 0 && rc != MDB_NOTFOUND)
        return map_mdb(rc);
    uint32_t version = STORE_FORMAT_VERSION;
    if (rc == 0) {
        if (v.mv_size != 4)
            return INBOX_EFORMAT;
        version = get_u32le(v.mv_data);
        if (version != STORE_FORMAT_VERSION &&
            version != STORE_FORMAT_VERSION_V1)
            return INBOX_EFORMAT;
        if (version == STORE_FORMAT_VERSION || s->read_only)
            return 0;
        if ((rc = migrate_v1(txn, s->dbi[DB_SHARD])) != 0)
            return rc;
    }
    put_u32le(fv, STORE_FORMAT_VERSION);
    v = (MDB_val){sizeof fv, fv};
    return map_mdb(mdb_put(txn, main_dbi, &key, &v, 0));
}

/* Open the sub-databases and check (or write) the format version, in one
 * committed transaction so the handles are usable afterwards. Read-only,
 * the sub-databases must exist already. */
static int open_dbs(struct store *s)
{
    MDB_txn *txn;
    MDB_dbi main_dbi;
    unsigned create = s->read_only ? 0 : MDB_CREATE;
    int rc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
    if (rc != 0)
        return map_mdb(rc);
    for (int i = 0; i < DB_COUNT && rc == 0; i++)
        rc = mdb_dbi_open(txn, db_names[i], create, &s->dbi[i]);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == MDB_NOTFOUND) /* read-only: a sub-database is missing */
        rc = INBOX_EFORMAT;
    else
        rc = map_mdb(rc);
    if (rc != 0 || (rc = check_format(s, txn, main_dbi)) != 0)
        goto err_after_begin;
    return map_mdb(mdb_txn_commit(txn));

err_after_begin:
    mdb_txn_abort(txn);
    return rc;
}

/* Take <path>/store.lock: exclusive for a writer, shared for a read-only
 * opener, so a reader fails with INBOX_ELOCKED while a node has the store
 * open and a node cannot open it while a reader has. Read-only, the lock
 * file must exist (INBOX_ENOTFOUND: not a store), and is not created. */
static int lock_dir(const char *path, bool read_only, int *fd_out)
{
    size_t n = strlen(path);
    char *lp = malloc(n + sizeof "/store.lock");
    if (lp == NULL)
        return INBOX_ENOMEM;
    memcpy(lp, path, n);
    memcpy(lp + n, "/store.lock", sizeof "/store.lock");
    int fd = read_only ? open(lp, O_RDONLY | O_CLOEXEC)
                       : open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int e = errno;
    free(lp);
    if (fd < 0)
        return read_only && e == ENOENT ? INBOX_ENOTFOUND : -e;
    if (flock(fd, (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        e = errno;
        close(fd);
        return e == EWOULDBLOCK ? INBOX_ELOCKED : -e;
    }
    *fd_out = fd;
    return 0;
}

/* The environment's flags. Read-only, LMDB's own lock file is not used
 * (MDB_NOLOCK): store.lock already keeps every writer out, and so the
 * open changes no file at all. */
static int open_env(struct store *s, const struct store_options *o)
{
    unsigned flags = MDB_NOTLS;
    if (s->read_only) {
        char *dp = malloc(strlen(o->path) + sizeof "/data.mdb");
        if (dp == NULL)
            return INBOX_ENOMEM;
        memcpy(dp, o->path, strlen(o->path));
        memcpy(dp + strlen(o->path), "/data.mdb", sizeof "/data.mdb");
        struct stat st;
        int missing = stat(dp, &st) != 0 && errno == ENOENT;
        free(dp);
        if (missing)
            return INBOX_ENOTFOUND;
        flags |= MDB_RDONLY | MDB_NOLOCK;
    }
    int rc;
    if ((rc = map_mdb(mdb_env_create(&s->env))) != 0)
        return rc;
    if ((rc = map_mdb(mdb_env_set_mapsize(s->env, (size_t)o->map_size))) ||
        (rc = map_mdb(mdb_env_set_maxdbs(s->env, DB_COUNT + 1))) ||
        (rc = map_mdb(mdb_env_open(s->env, o->path, flags, 0644)))) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
    return rc;
}

int store_open(const struct store_options *o, struct store **out)
{
    int rc = check_options(o);
    if (rc != 0)
        return rc;
    if (!o->read_only && mkdir(o->path, 0755) != 0 && errno != EEXIST)
        return -errno;
    struct store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return INBOX_ENOMEM;
    s->opt = *o;
    s->opt.path = NULL; /* not owned; not needed after open */
    s->read_only = o->read_only != 0;
    if ((rc = lock_dir(o->path, s->read_only, &s->lock_fd)) != 0)
        goto err_after_alloc;
    if ((rc = open_env(s, o)) != 0)
        goto err_after_lock;
    if ((rc = open_dbs(s)) != 0)
        goto err_after_env;
    if ((rc = map_mdb(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn))))
        goto err_after_env;
    mdb_txn_reset(s->rtxn);
    if ((rc = begin_txn(s)) != 0)
        goto err_after_rtxn;
    *out = s;
    return 0;

err_after_rtxn:
    end_txn(s);
    mdb_txn_abort(s->rtxn);
err_after_env:
    mdb_env_close(s->env);
err_after_lock:
    close(s->lock_fd);
err_after_alloc:
    free(s);
    return rc;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    if (s->restoring != NULL)
        store_restore_abort(s->restoring);
    end_txn(s);
    mdb_txn_abort(s->rtxn);
    mdb_env_close(s->env);
    close(s->lock_fd);
    free(s);
}

/* ---- reads --------------------------------------------------------------- */

static int check_key(size_t len, const uint8_t *inbox)
{
    return inbox == NULL || len < INBOX_KEY_BYTES_MIN ||
                   len > INBOX_KEY_BYTES_MAX
               ? INBOX_EKEY_INVALID
               : 0;
}

/* The shard meta as the open transaction sees it (the apply cache is
 * always flushed between calls). */
static int shard_now(struct store *s, uint32_t shard, struct shard_meta *m)
{
    assert(s->sm_used_count == 0);
    return load_shard(s->txn, s->dbi[DB_SHARD], shard, m);
}

int store_applied(struct store *s, uint32_t shard, struct store_shard_info *out)
{
    int rc = usable(s);
    struct shard_meta m;
    if (rc != 0 || (rc = shard_now(s, shard, &m)) != 0)
        return rc;
    *out = (struct store_shard_info){m.applied_index, m.applied_term, m.now_ms,
                                     m.applied_commands};
    return 0;
}

int store_shard_next(struct store *s, uint32_t from, uint32_t *shard_out)
{
    int rc = usable(s);
    if (rc != 0)
        return rc;
    uint8_t k[4];
    put_u32be(k, from);
    MDB_val key = {sizeof k, k}, v;
    rc = mdb_cursor_get(s->cur[DB_SHARD], &key, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return INBOX_ENOTFOUND;
    if (rc != 0)
        return map_mdb(rc);
    if (key.mv_size != 4)
        return INBOX_ECORRUPT;
    *shard_out = get_u32be(key.mv_data);
    return 0;
}

int store_durable_index(struct store *s, uint32_t shard, uint64_t *index)
{
    int rc = usable(s);
    if (rc != 0)
        return rc;
    if ((rc = mdb_txn_renew(s->rtxn)) != 0)
        return map_mdb(rc);
    struct shard_meta m;
    rc = load_shard(s->rtxn, s->dbi[DB_SHARD], shard, &m);
    mdb_txn_reset(s->rtxn);
    if (rc == 0)
        *index = m.applied_index;
    return rc;
}

int store_fetch_since(struct store *s, uint32_t shard, const uint8_t *inbox,
                      size_t inbox_len, uint64_t after_seq,
                      uint32_t max_messages, uint32_t max_bytes,
                      struct store_message *out, size_t *count_out)
{
    int rc = usable(s);
    if (rc == 0)
        rc = check_key(inbox_len, inbox);
    if (rc != 0)
        return rc;
    *count_out = 0;
    struct shard_meta sm;
    struct inbox_meta m;
    if ((rc = shard_now(s, shard, &sm)) != 0 ||
        (rc = load_inbox(s, shard, inbox, inbox_len, &m, NULL)) != 0)
        return rc;
    uint64_t start = max_u64(after_seq, m.acked_seq);
    if (start >= m.last_seq)
        return 0;
    start++;
    size_t cap = max_messages < INBOX_FETCH_MESSAGES_MAX
                     ? max_messages
                     : INBOX_FETCH_MESSAGES_MAX;
    uint64_t bytes_cap =
        max_bytes < INBOX_FETCH_BYTES_MAX ? max_bytes : INBOX_FETCH_BYTES_MAX;
    uint64_t bytes = 0;
    size_t n = 0;
    uint8_t k[KEY_BYTES_MAX];
    size_t klen = key_msg(k, shard, inbox, inbox_len, start);
    size_t plen = klen - 8;
    MDB_val key = {klen, k}, v;
    MDB_cursor *c = s->cur[DB_INBOX];
    rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
    while (rc == 0 && n < cap) {
        const uint8_t *kp = key.mv_data, *vp = v.mv_data;
        if (key.mv_size != klen || memcmp(kp, k, plen) != 0)
            break;
        if (v.mv_size < MSG_HEADER_BYTES)
            return INBOX_ECORRUPT;
        uint32_t len = (uint32_t)(v.mv_size - MSG_HEADER_BYTES);
        /* Deadlines are non-decreasing, so hidden ones form a prefix. */
        if (get_u64le(vp + 24) > sm.now_ms) {
            if (n > 0 && bytes + len > bytes_cap)
                break;
            struct store_message *o = &out[n++];
            o->seq = get_u64be(kp + plen);
            memcpy(o->msg_id, vp, INBOX_MSG_ID_BYTES);
            o->enqueue_ts_ms = get_u64le(vp + 16);
            o->payload = vp + MSG_HEADER_BYTES;
            o->payload_len = len;
            bytes += len;
        }
        rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return map_mdb(rc);
    *count_out = n;
    return 0;
}

int store_inbox_info(struct store *s, uint32_t shard, const uint8_t *inbox,
                     size_t inbox_len, struct store_inbox_info *out)
{
    int rc = usable(s);
    if (rc == 0)
        rc = check_key(inbox_len, inbox);
    struct inbox_meta m;
    if (rc != 0 || (rc = load_inbox(s, shard, inbox, inbox_len, &m, NULL)))
        return rc;
    *out = (struct store_inbox_info){m.last_seq + 1, m.acked_seq,
                                     pending_count(&m), m.pending_bytes,
                                     m.last_seen_ms};
    return 0;
}

int store_seen_get(struct store *s, const struct store_inbox_ref *inboxes,
                   size_t count, uint64_t *last_seen_ms_out)
{
    int rc = usable(s);
    if (rc != 0)
        return rc;
    if (count > INBOX_SEEN_GET_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    for (size_t i = 0; i < count; i++) {
        const struct store_inbox_ref *r = &inboxes[i];
        struct inbox_meta m;
        if ((rc = check_key(r->inbox_len, r->inbox)) != 0 ||
            (rc = load_inbox(s, r->shard, r->inbox, r->inbox_len, &m, NULL)))
            return rc;
        last_seen_ms_out[i] = m.last_seen_ms;
    }
    return 0;
}

/* ---- shard range walk (hash, snapshot, restore) -------------------------- */

static bool in_shard(const MDB_val *key, const uint8_t prefix[4])
{
    return key->mv_size >= 4 && memcmp(key->mv_data, prefix, 4) == 0;
}

/* Position c at the first key of the shard (rc MDB_NOTFOUND if none). */
static int shard_first(MDB_cursor *c, const uint8_t prefix[4], MDB_val *key,
                       MDB_val *v)
{
    *key = (MDB_val){4, (void *)prefix};
    int rc = mdb_cursor_get(c, key, v, MDB_SET_RANGE);
    if (rc == 0 && !in_shard(key, prefix))
        return MDB_NOTFOUND;
    return rc;
}

static void hash_record(XXH3_state_t *h, int db, const MDB_val *key,
                        const MDB_val *v)
{
    uint8_t hdr[SNAP_RECORD_HEADER_BYTES];
    hdr[0] = (uint8_t)db;
    put_u16le(hdr + 1, (uint16_t)key->mv_size);
    put_u32le(hdr + 3, (uint32_t)v->mv_size);
    XXH3_64bits_update(h, hdr, sizeof hdr);
    XXH3_64bits_update(h, key->mv_data, key->mv_size);
    XXH3_64bits_update(h, v->mv_data, v->mv_size);
}

int store_state_hash(struct store *s, uint32_t shard, uint64_t *hash_out)
{
    int rc = usable(s);
    if (rc != 0)
        return rc;
    XXH3_state_t *h = XXH3_createState();
    if (h == NULL)
        return INBOX_ENOMEM;
    XXH3_64bits_reset(h);
    uint8_t prefix[4];
    put_u32be(prefix, shard);
    for (int db = 0; db < DB_COUNT; db++) {
        MDB_val key, v;
        rc = shard_first(s->cur[db], prefix, &key, &v);
        while (rc == 0 && in_shard(&key, prefix)) {
            hash_record(h, db, &key, &v);
            rc = mdb_cursor_get(s->cur[db], &key, &v, MDB_NEXT);
        }
        if (rc != 0 && rc != MDB_NOTFOUND)
            break;
        rc = 0;
    }
    *hash_out = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return map_mdb(rc);
}

/* ---- snapshot ------------------------------------------------------------ */

/*
 * Chunk: 32-byte header, then body.
 *   0 u32 magic "INSP" | 4 u16 version | 6 u16 flags (bit 0: last)
 *   8 u32 shard | 12 u32 chunk_no | 16 u32 body_len | 20 u32 reserved (0)
 *   24 u64 checksum = XXH3_64(body, seed = XXH3_64(header[0..24)))
 * Body of a data chunk: records u8 db | u16 key_len | u32 val_len | key | val.
 * Body of the last chunk (trailer): u64 records | u64 applied_index
 *   | u64 applied_term | u64 stream_hash (XXH3_64 over every data body, in
 *   order).
 */
struct store_snapshot {
    MDB_txn *txn;
    MDB_dbi dbi[DB_COUNT];
    MDB_cursor *cur;
    int db; /* sub-database being streamed; DB_COUNT when done */
    enum { SNAP_FRESH, SNAP_AT, SNAP_SENT } state; /* of cur within db */
    bool finished;                                 /* trailer returned */
    uint8_t prefix[4];
    uint32_t shard;
    uint32_t chunk_no;
    uint64_t records;
    struct shard_meta meta;
    XXH3_state_t *stream;
    uint8_t *buf;
    size_t cap;
};

static uint64_t chunk_checksum(const uint8_t *chunk, size_t body_len)
{
    return XXH3_64bits_withSeed(chunk + SNAP_HEADER_BYTES, body_len,
                                XXH3_64bits(chunk, 24));
}

static void chunk_seal(uint8_t *chunk, uint32_t shard, uint32_t chunk_no,
                       uint16_t flags, size_t body_len)
{
    put_u32le(chunk, SNAP_MAGIC);
    put_u16le(chunk + 4, SNAP_VERSION);
    put_u16le(chunk + 6, flags);
    put_u32le(chunk + 8, shard);
    put_u32le(chunk + 12, chunk_no);
    put_u32le(chunk + 16, (uint32_t)body_len);
    put_u32le(chunk + 20, 0);
    put_u64le(chunk + 24, chunk_checksum(chunk, body_len));
}

int store_snapshot_begin(struct store *s, uint32_t shard,
                         struct store_snapshot **out)
{
    struct store_snapshot *snap = calloc(1, sizeof *snap);
    if (snap == NULL)
        return INBOX_ENOMEM;
    int rc = INBOX_ENOMEM;
    snap->cap = s->opt.snapshot_chunk_bytes;
    snap->buf = malloc(snap->cap);
    snap->stream = XXH3_createState();
    if (snap->buf == NULL || snap->stream == NULL)
        goto err_after_alloc;
    XXH3_64bits_reset(snap->stream);
    memcpy(snap->dbi, s->dbi, sizeof snap->dbi);
    snap->shard = shard;
    put_u32be(snap->prefix, shard);
    if ((rc = map_mdb(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &snap->txn))))
        goto err_after_alloc;
    if ((rc = load_shard(snap->txn, snap->dbi[DB_SHARD], shard, &snap->meta)) ||
        (rc = map_mdb(mdb_cursor_open(snap->txn, snap->dbi[0], &snap->cur))))
        goto err_after_txn;
    *out = snap;
    return 0;

err_after_txn:
    mdb_txn_abort(snap->txn);
err_after_alloc:
    XXH3_freeState(snap->stream);
    free(snap->buf);
    free(snap);
    return rc;
}

void store_snapshot_meta(const struct store_snapshot *snap,
                         uint64_t *applied_index, uint64_t *applied_term)
{
    *applied_index = snap->meta.applied_index;
    *applied_term = snap->meta.applied_term;
}

/* The next unsent record of the shard, across sub-databases in order;
 * MDB_NOTFOUND when every sub-database is exhausted. */
static int snap_peek(struct store_snapshot *snap, MDB_val *key, MDB_val *v)
{
    while (snap->db < DB_COUNT) {
        int rc;
        if (snap->state == SNAP_FRESH)
            rc = shard_first(snap->cur, snap->prefix, key, v);
        else if (snap->state == SNAP_AT)
            rc = mdb_cursor_get(snap->cur, key, v, MDB_GET_CURRENT);
        else
            rc = mdb_cursor_get(snap->cur, key, v, MDB_NEXT);
        if (rc == 0 && in_shard(key, snap->prefix)) {
            snap->state = SNAP_AT;
            return 0;
        }
        if (rc != 0 && rc != MDB_NOTFOUND)
            return map_mdb(rc);
        mdb_cursor_close(snap->cur);
        snap->cur = NULL;
        snap->state = SNAP_FRESH;
        if (++snap->db < DB_COUNT) {
            rc = mdb_cursor_open(snap->txn, snap->dbi[snap->db], &snap->cur);
            if (rc != 0)
                return map_mdb(rc);
        }
    }
    return MDB_NOTFOUND;
}

int store_snapshot_next(struct store_snapshot *snap, const uint8_t **chunk,
                        size_t *chunk_len)
{
    uint8_t *body = snap->buf + SNAP_HEADER_BYTES;
    size_t n = 0, room = snap->cap - SNAP_HEADER_BYTES;
    *chunk = snap->buf;
    *chunk_len = 0;
    if (snap->finished)
        return 0;
    MDB_val key, v;
    int rc;
    while ((rc = snap_peek(snap, &key, &v)) == 0) {
        size_t need = SNAP_RECORD_HEADER_BYTES + key.mv_size + v.mv_size;
        if (need > room - n)
            break; /* n > 0 here: any record fits an empty chunk */
        uint8_t *p = body + n;
        p[0] = (uint8_t)snap->db;
        put_u16le(p + 1, (uint16_t)key.mv_size);
        put_u32le(p + 3, (uint32_t)v.mv_size);
        memcpy(p + SNAP_RECORD_HEADER_BYTES, key.mv_data, key.mv_size);
        memcpy(p + SNAP_RECORD_HEADER_BYTES + key.mv_size, v.mv_data,
               v.mv_size);
        n += need;
        snap->records++;
        snap->state = SNAP_SENT;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    assert(rc == MDB_NOTFOUND || n > 0);
    if (n > 0) {
        XXH3_64bits_update(snap->stream, body, n);
        chunk_seal(snap->buf, snap->shard, snap->chunk_no++, 0, n);
        *chunk_len = SNAP_HEADER_BYTES + n;
        return 0;
    }
    /* Nothing left: the trailer. */
    put_u64le(body, snap->records);
    put_u64le(body + 8, snap->meta.applied_index);
    put_u64le(body + 16, snap->meta.applied_term);
    put_u64le(body + 24, XXH3_64bits_digest(snap->stream));
    chunk_seal(snap->buf, snap->shard, snap->chunk_no++, SNAP_FLAG_LAST,
               SNAP_TRAILER_BYTES);
    *chunk_len = SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES;
    snap->finished = true;
    return 0;
}

void store_snapshot_end(struct store_snapshot *snap)
{
    if (snap == NULL)
        return;
    if (snap->cur != NULL)
        mdb_cursor_close(snap->cur);
    mdb_txn_abort(snap->txn);
    XXH3_freeState(snap->stream);
    free(snap->buf);
    free(snap);
}

/* ---- restore ------------------------------------------------------------- */

struct store_restore {
    struct store *s;
    MDB_txn *txn; /* child of s->txn */
    uint32_t shard;
    uint8_t prefix[4];
    uint32_t next_chunk;
    uint64_t records;
    uint64_t applied_before;
    uint64_t applied_index;
    int err;
    bool done;
    XXH3_state_t *stream;
};

/* Delete the shard's keys from every sub-database, in txn. */
static int clear_shard(MDB_txn *txn, const MDB_dbi *dbi, const uint8_t *prefix)
{
    for (int db = 0; db < DB_COUNT; db++) {
        MDB_cursor *c;
        int rc = mdb_cursor_open(txn, dbi[db], &c);
        if (rc != 0)
            return map_mdb(rc);
        MDB_val key, v;
        rc = shard_first(c, prefix, &key, &v);
        while (rc == 0 && in_shard(&key, prefix)) {
            if ((rc = mdb_cursor_del(c, 0)) == 0)
                rc = mdb_cursor_get(c, &key, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return map_mdb(rc);
    }
    return 0;
}

int store_restore_begin(struct store *s, uint32_t shard,
                        struct store_restore **out)
{
    int rc = writable(s);
    if (rc != 0)
        return rc;
    struct store_restore *r = calloc(1, sizeof *r);
    if (r == NULL)
        return INBOX_ENOMEM;
    struct shard_meta before;
    if ((rc = shard_now(s, shard, &before)) != 0)
        goto err_after_alloc;
    r->stream = XXH3_createState();
    if (r->stream == NULL) {
        rc = INBOX_ENOMEM;
        goto err_after_alloc;
    }
    XXH3_64bits_reset(r->stream);
    r->s = s;
    r->shard = shard;
    r->applied_before = before.applied_index;
    put_u32be(r->prefix, shard);
    if ((rc = map_mdb(mdb_txn_begin(s->env, s->txn, 0, &r->txn))) != 0)
        goto err_after_state;
    if ((rc = clear_shard(r->txn, s->dbi, r->prefix)) != 0)
        goto err_after_txn;
    s->restoring = r;
    *out = r;
    return 0;

err_after_txn:
    mdb_txn_abort(r->txn);
err_after_state:
    XXH3_freeState(r->stream);
err_after_alloc:
    free(r);
    return rc;
}

static int restore_records(struct store_restore *r, const uint8_t *p, size_t n)
{
    const struct store *s = r->s;
    while (n > 0) {
        if (n < SNAP_RECORD_HEADER_BYTES)
            return INBOX_ECORRUPT;
        uint8_t db = p[0];
        size_t klen = get_u16le(p + 1), vlen = get_u32le(p + 3);
        p += SNAP_RECORD_HEADER_BYTES;
        n -= SNAP_RECORD_HEADER_BYTES;
        if (db >= DB_COUNT || klen < 4 || klen > KEY_BYTES_MAX ||
            vlen > MSG_HEADER_BYTES + INBOX_PAYLOAD_BYTES_MAX ||
            klen + vlen > n || memcmp(p, r->prefix, 4) != 0)
            return INBOX_ECORRUPT;
        /* A shard meta load_shard() would refuse is refused now. */
        if (db == DB_SHARD && (klen != 4 || (vlen != SHARD_META_BYTES &&
                                             vlen != SHARD_META_V1_BYTES)))
            return INBOX_ECORRUPT;
        MDB_val key = {klen, (void *)p}, v = {vlen, (void *)(p + klen)};
        int rc = mdb_put(r->txn, s->dbi[db], &key, &v, 0);
        if (rc != 0)
            return map_mdb(rc);
        p += klen + vlen;
        n -= klen + vlen;
        r->records++;
    }
    return 0;
}

static int restore_trailer(struct store_restore *r, const uint8_t *body,
                           size_t n)
{
    if (n != SNAP_TRAILER_BYTES || get_u64le(body) != r->records ||
        get_u64le(body + 24) != XXH3_64bits_digest(r->stream))
        return INBOX_ECORRUPT;
    r->applied_index = get_u64le(body + 8);
    r->done = true;
    return 0;
}

int store_restore_chunk(struct store_restore *r, const uint8_t *chunk,
                        size_t len)
{
    if (r->err != 0)
        return r->err;
    int rc = INBOX_ECORRUPT;
    if (r->done || len < SNAP_HEADER_BYTES || get_u32le(chunk) != SNAP_MAGIC ||
        (get_u16le(chunk + 4) != SNAP_VERSION &&
         get_u16le(chunk + 4) != SNAP_VERSION_V1) ||
        (get_u16le(chunk + 6) & ~SNAP_FLAG_LAST) != 0 ||
        get_u32le(chunk + 16) != len - SNAP_HEADER_BYTES ||
        get_u32le(chunk + 20) != 0 ||
        get_u64le(chunk + 24) !=
            chunk_checksum(chunk, len - SNAP_HEADER_BYTES) ||
        get_u32le(chunk + 12) != r->next_chunk)
        goto err;
    if (get_u32le(chunk + 8) != r->shard) {
        rc = INBOX_ESNAPSHOT_MISMATCH;
        goto err;
    }
    r->next_chunk++;
    const uint8_t *body = chunk + SNAP_HEADER_BYTES;
    size_t n = len - SNAP_HEADER_BYTES;
    if (get_u16le(chunk + 6) & SNAP_FLAG_LAST) {
        rc = restore_trailer(r, body, n);
    } else {
        XXH3_64bits_update(r->stream, body, n);
        rc = restore_records(r, body, n);
    }
    if (rc != 0)
        goto err;
    return 0;
err:
    r->err = rc;
    return rc;
}

void store_restore_abort(struct store_restore *r)
{
    if (r == NULL)
        return;
    mdb_txn_abort(r->txn);
    r->s->restoring = NULL;
    XXH3_freeState(r->stream);
    free(r);
}

int store_restore_finish(struct store_restore *r)
{
    int rc = r->err;
    if (rc == 0 && !r->done)
        rc = INBOX_ECORRUPT; /* stream ended before its trailer */
    if (rc == 0 && r->applied_index < r->applied_before)
        rc = INBOX_ERANGE; /* would move the shard backwards */
    if (rc != 0) {
        store_restore_abort(r);
        return rc;
    }
    struct store *s = r->s;
    rc = mdb_txn_commit(r->txn);
    r->txn = NULL;
    s->restoring = NULL;
    s->hints[r->shard % HINT_SLOTS].valid = false;
    XXH3_freeState(r->stream);
    free(r);
    if (rc != 0)
        return fail(s, map_mdb(rc));
    return 0;
}
