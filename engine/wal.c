/*
 * wal.c — the node-wide write-ahead log (contract in wal.h, format in
 * docs/storage.md).
 *
 * Design note.
 *
 * Segment states (docs/storage.md has the diagram):
 *   preallocated  wal-prealloc.tmp: allocated to segment_bytes, header
 *                 written and fdatasync'd                (segment_create)
 *   active        renamed to wal-<id>.seg, directory fsync'd; records are
 *                 appended at `end`                      (segment_create)
 *   sealed        fdatasync'd whole, the next one active (rollover)
 *   deletable     below the cutoff: no shard has a live entry in it, and
 *                 the hard states / releases it held were re-logged and
 *                 synced                                 (gc)
 *   deleted       unlinked, directory fsync'd            (gc)
 *
 * Invariants:
 *   1. segs[] holds consecutive segment ids, oldest first; the last one is
 *      active. Records carry consecutive sequence numbers (LSNs) across
 *      segments; a segment's header names its first LSN.
 *   2. Every record in a sealed segment is durable (rollover syncs it
 *      before the next segment becomes active). So a bad record in a
 *      sealed segment is corruption, never a torn write.
 *   3. durable_seq <= written_seq; every record with seq <= durable_seq
 *      has had an fdatasync return after it was written. Each record
 *      carries the durable_seq of its writing time ("synced" field), which
 *      is what lets recovery tell a torn tail from corruption.
 *   4. A shard's live entries [first, last] lie in non-decreasing segment
 *      order, so the oldest segment still needed is the minimum over shards
 *      of the segment of their first live entry.
 *   5. At most one thread runs an fdatasync for group commit (`syncing`);
 *      writes (pwrite) happen under `mu`, fdatasync outside it.
 *   6. A segment is freed only when no reader or sync leader pins it.
 *
 * Locks: `mu` guards everything; `gc_mu` serialises release/delete, which
 * drops `mu` around its syncs and unlinks.
 */
#include "wal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "inbox/endian.h"
#include "inbox/error.h"
#include "inbox/limits.h"

/* ---- format (docs/storage.md) ------------------------------------------- */
static const uint8_t SEG_MAGIC[8] = {'I', 'N', 'B', 'X', 'W', 'A', 'L', 0};
#define SEG_VERSION 1u
#define SEG_HEADER_BYTES 64u
#define SEG_HEADER_SUMMED 56u
#define REC_HEADER_BYTES 48u
#define REC_CHECKSUM_BYTES 8u
#define REC_ALIGN 8u
#define HARD_STATE_PAYLOAD_BYTES 8u
/* The record header's last byte: a header whose write was cut short ends
 * in zero (preallocated space) here; a bit flip does not. */
#define REC_HEADER_END 0xA5u
/* The stored checksum has its top bit set, so a record's last byte is
 * never zero: a record ending in zero was not completely written. */
#define REC_CHECKSUM_MARK (1ull << 63)
/* Sector size for the torn-write test: a write that was cut short leaves
 * whole sectors of zeros (preallocated space) where it did not land. */
#define SECTOR_BYTES 512u
#define PREALLOC_NAME "wal-prealloc.tmp"
#define LOCK_NAME "wal.lock"
#define SEG_NAME_BYTES 32u
#define ZERO_CHUNK_BYTES (64u * INBOX_KIB)

_Static_assert(REC_HEADER_BYTES + REC_CHECKSUM_BYTES + REC_ALIGN - 1 <=
                   INBOX_WAL_RECORD_OVERHEAD_BYTES,
               "record framing within the declared overhead");
_Static_assert(SEG_HEADER_BYTES + INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX +
                       INBOX_WAL_RECORD_OVERHEAD_BYTES <=
                   INBOX_WAL_SEGMENT_BYTES_MIN,
               "the largest record fits in an empty segment");
_Static_assert(SEG_HEADER_BYTES % REC_ALIGN == 0, "records start aligned");

struct seg {
    uint64_t id;
    uint64_t first_seq;
    uint64_t cap; /* file size; records end at or before it */
    uint64_t end; /* end of the records (the next write offset if active) */
    struct vfs_file *f;
    int refs;    /* pins: readers and the sync leader */
    bool doomed; /* detached from segs[]; freed when refs drops to 0 */
};

/* Where one live entry lives; 24 bytes per entry in memory. */
struct loc {
    uint64_t term;
    uint32_t seg; /* segment id */
    uint32_t off; /* record offset in the segment */
    uint32_t len; /* payload bytes */
};

struct shard {
    struct loc *ents; /* entry `first` is ents[head] */
    size_t head, cap;
    uint64_t first, last; /* empty when last == first - 1 */
    bool based;           /* first is fixed (an entry or a release seen) */
    bool has_hs, has_rel;
    struct wal_hard_state hs;
    uint64_t hs_seg;
    uint64_t rel, rel_term, rel_seg;
    /* wal_append's validation scratch, valid when b_epoch == batch_epoch */
    uint64_t b_epoch, b_first, b_last;
    bool b_based;
};

struct wal {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* durable_seq, syncing or failed changed */
    pthread_mutex_t gc_mu;
    const struct vfs *vfs;
    struct vfs_file *lock; /* held while open: one process per log */
    char dir[INBOX_WAL_DIR_BYTES_MAX];
    uint64_t segment_bytes;
    struct seg **segs;
    size_t nsegs, segs_cap;
    struct shard **shards; /* by id, INBOX_WAL_SHARD_IDS_MAX slots */
    uint32_t *shard_ids;   /* ids of the shards that exist */
    size_t nshard_ids, shard_ids_cap;
    uint64_t written_seq, durable_seq;
    bool syncing;
    int failed;
    uint64_t batch_epoch;
    uint8_t *buf; /* encode buffer for appends; recovery's read buffer */
    size_t buf_cap;
    struct wal_stats st;
    char errmsg[256];
};

/* A decoded record header; payload points into the image it came from. */
struct rec {
    uint32_t len;
    uint32_t shard;
    uint64_t seq, synced, term, index;
    uint8_t type;
    const uint8_t *payload;
    size_t total; /* framed bytes, padding included */
};

enum rec_status { REC_OK, REC_IMPLAUSIBLE, REC_INCOMPLETE, REC_CHECKSUM };

/* ---- small helpers ------------------------------------------------------ */

static size_t rec_total(uint32_t len)
{
    size_t raw = REC_HEADER_BYTES + (size_t)len + REC_CHECKSUM_BYTES;
    return (raw + REC_ALIGN - 1) & ~(size_t)(REC_ALIGN - 1);
}

static void seg_name(char *out, uint64_t id)
{
    snprintf(out, SEG_NAME_BYTES, "wal-%016" PRIx64 ".seg", id);
}

static void seg_path(const struct wal *w, char *out, size_t n, uint64_t id)
{
    char name[SEG_NAME_BYTES];
    seg_name(name, id);
    snprintf(out, n, "%s/%s", w->dir, name);
}

static int set_err(struct wal *w, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(struct wal *w, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

static int corrupt(struct wal *w, const struct seg *s, uint64_t off,
                   const char *why)
{
    char path[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
    seg_path(w, path, sizeof path, s->id);
    return set_err(w, INBOX_ECORRUPT,
                   "wal: corrupt log in %s at offset %" PRIu64 ": %s", path,
                   off, why);
}

/* Storage failures are sticky (STYLE.md): the first one wins. */
static int fail(struct wal *w, int rc)
{
    assert(rc < 0);
    if (w->failed == 0)
        w->failed = rc;
    pthread_cond_broadcast(&w->cond);
    return rc;
}

static struct seg *active(const struct wal *w)
{
    assert(w->nsegs > 0);
    return w->segs[w->nsegs - 1];
}

static struct seg *seg_by_id(const struct wal *w, uint64_t id)
{
    assert(w->nsegs > 0 && id >= w->segs[0]->id);
    struct seg *s = w->segs[id - w->segs[0]->id];
    assert(s->id == id);
    return s;
}

static void seg_free(struct seg *s)
{
    if (s->f != NULL)
        vfs_close(s->f);
    free(s);
}

static void seg_unpin(struct seg *s)
{
    assert(s->refs > 0);
    if (--s->refs == 0 && s->doomed)
        seg_free(s);
}

static int segs_push(struct wal *w, struct seg *s)
{
    if (w->nsegs == w->segs_cap) {
        size_t cap = w->segs_cap ? 2 * w->segs_cap : 16;
        struct seg **p = realloc(w->segs, cap * sizeof *p);
        if (p == NULL)
            return INBOX_ENOMEM;
        w->segs = p;
        w->segs_cap = cap;
    }
    assert(w->nsegs == 0 || s->id == active(w)->id + 1);
    w->segs[w->nsegs++] = s;
    w->st.segments = w->nsegs;
    return 0;
}

static int buf_reserve(struct wal *w, size_t n)
{
    if (n <= w->buf_cap)
        return 0;
    size_t cap = w->buf_cap ? w->buf_cap : 64 * INBOX_KIB;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(w->buf, cap);
    if (p == NULL)
        return INBOX_ENOMEM;
    w->buf = p;
    w->buf_cap = cap;
    return 0;
}

/* ---- shards ------------------------------------------------------------- */

static struct shard *shard_find(const struct wal *w, uint32_t id)
{
    return id < INBOX_WAL_SHARD_IDS_MAX ? w->shards[id] : NULL;
}

static struct shard *shard_get(struct wal *w, uint32_t id)
{
    assert(id < INBOX_WAL_SHARD_IDS_MAX);
    if (w->shards[id] != NULL)
        return w->shards[id];
    if (w->nshard_ids == w->shard_ids_cap) {
        size_t cap = w->shard_ids_cap ? 2 * w->shard_ids_cap : 64;
        uint32_t *p = realloc(w->shard_ids, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        w->shard_ids = p;
        w->shard_ids_cap = cap;
    }
    struct shard *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->first = 1;
    w->shards[id] = s;
    w->shard_ids[w->nshard_ids++] = id;
    return s;
}

static size_t shard_count(const struct shard *s)
{
    return (size_t)(s->last + 1 - s->first);
}

static struct loc *shard_loc(const struct shard *s, uint64_t i)
{
    assert(s->based && i >= s->first && i <= s->last);
    return &s->ents[s->head + (i - s->first)];
}

/* Room for entry slot head + k; grows (amortised doubling) or slides the
 * live window down, never per entry. */
static int shard_reserve(struct shard *s, size_t k)
{
    if (s->head + k < s->cap)
        return 0;
    size_t n = shard_count(s);
    if (s->head > 0 && s->head >= s->cap / 2) {
        memmove(s->ents, s->ents + s->head, n * sizeof *s->ents);
        s->head = 0;
        if (k < s->cap)
            return 0;
    }
    size_t cap = s->cap ? 2 * s->cap : 64;
    while (cap <= s->head + k)
        cap *= 2;
    struct loc *p = realloc(s->ents, cap * sizeof *p);
    if (p == NULL)
        return INBOX_ENOMEM;
    s->ents = p;
    s->cap = cap;
    return 0;
}

/*
 * The log rules, on (based, first, last). Shared by validation (on scratch
 * copies), the live apply and recovery's replay.
 *
 * Live requests that break them are refused. Replay never refuses: once a
 * prefix of segments is deleted, the oldest records left may describe a
 * shard's history only in part (an old release, entries above a gap whose
 * lower part was released later). Replay then rebases the shard. This is
 * sound because a shard's live entries were written in index order and all
 * lie in retained segments (invariant 4), so from the first live entry on
 * replay repeats exactly what the live log did; missing or damaged records
 * are caught by the checksums and the LSN sequence, not here.
 */
static int rule_entry(bool *based, uint64_t *first, uint64_t *last, uint64_t i,
                      bool replay)
{
    if (i == 0)
        return replay ? INBOX_ECORRUPT : INBOX_EINVAL;
    if (*based && i < *first && !replay)
        return INBOX_ECOMPACTED;
    if (*based && i > *last + 1 && !replay)
        return INBOX_EINVAL;
    if (!*based || i < *first || i > *last + 1) {
        *based = true; /* rebase (an unbased shard, or replay) */
        *first = i;
    }
    *last = i;
    return 0;
}

static int rule_truncate(bool based, uint64_t *first, uint64_t *last,
                         uint64_t i, bool replay)
{
    if (i == 0)
        return replay ? INBOX_ECORRUPT : INBOX_EINVAL;
    if (!based)
        return 0;
    if (i < *first) {
        if (!replay)
            return INBOX_ECOMPACTED;
        *last = *first - 1;
        return 0;
    }
    if (i > *last + 1)
        return replay ? 0 : INBOX_EINVAL;
    *last = i - 1;
    return 0;
}

static int shard_apply_entry(struct shard *s, const struct rec *r, uint64_t seg,
                             uint64_t off, bool replay)
{
    uint64_t first = s->first, last = s->last;
    bool based = s->based;
    int rc = rule_entry(&based, &first, &last, r->index, replay);
    if (rc != 0)
        return rc;
    if (first != s->first || !s->based)
        s->head = 0; /* rebased: the window restarts */
    s->based = true;
    s->first = first;
    s->last = last - 1; /* the slot for `last` is filled below */
    rc = shard_reserve(s, shard_count(s) + 1);
    if (rc != 0)
        return rc;
    s->last = last;
    *shard_loc(s, last) = (struct loc){.term = r->term,
                                       .seg = (uint32_t)seg,
                                       .off = (uint32_t)off,
                                       .len = r->len};
    return 0;
}

static int shard_apply_truncate(struct shard *s, uint64_t i, bool replay)
{
    uint64_t first = s->first;
    int rc = rule_truncate(s->based, &first, &s->last, i, replay);
    if (first != s->first) {
        s->first = first;
        s->head = 0;
    }
    return rc;
}

static void shard_apply_release(struct shard *s, uint64_t upto, uint64_t term,
                                uint64_t seg)
{
    if (s->based && upto + 1 < s->first) {
        /* Below the window: a re-logged copy of the current release. */
        if (s->has_rel && s->rel == upto)
            s->rel_seg = seg;
        return;
    }
    if (!s->based || upto >= s->last) {
        s->head = 0;
        s->first = upto + 1;
        s->last = upto;
    } else if (upto >= s->first) {
        s->head += (size_t)(upto + 1 - s->first);
        s->first = upto + 1;
    }
    s->based = true;
    s->has_rel = true;
    s->rel = upto;
    s->rel_term = term;
    s->rel_seg = seg;
}

/* Apply one record to the in-memory index. */
static int index_record(struct wal *w, const struct rec *r, uint64_t seg,
                        uint64_t off, bool replay)
{
    struct shard *s = shard_get(w, r->shard);
    if (s == NULL)
        return INBOX_ENOMEM;
    switch (r->type) {
    case WAL_RECORD_ENTRY:
        return shard_apply_entry(s, r, seg, off, replay);
    case WAL_RECORD_TRUNCATE:
        return shard_apply_truncate(s, r->index, replay);
    case WAL_RECORD_HARD_STATE:
        s->has_hs = true;
        s->hs = (struct wal_hard_state){
            .term = r->term, .vote = get_u64le(r->payload), .commit = r->index};
        s->hs_seg = seg;
        return 0;
    case WAL_RECORD_RELEASE:
        shard_apply_release(s, r->index, r->term, seg);
        return 0;
    default:
        assert(0 && "record type checked by rec_decode");
        return INBOX_EINTERNAL;
    }
}

/* ---- records ------------------------------------------------------------ */

static bool type_valid(uint8_t t)
{
    return t >= WAL_RECORD_ENTRY && t <= WAL_RECORD_RELEASE;
}

/* Payload length each type allows. */
static bool type_len_valid(uint8_t t, uint32_t len)
{
    switch (t) {
    case WAL_RECORD_ENTRY:
        return len <= INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX;
    case WAL_RECORD_HARD_STATE:
        return len == HARD_STATE_PAYLOAD_BYTES;
    default:
        return len == 0;
    }
}

static void rec_header_get(const uint8_t *p, struct rec *r)
{
    r->len = get_u32le(p + 0);
    r->shard = get_u32le(p + 4);
    r->seq = get_u64le(p + 8);
    r->synced = get_u64le(p + 16);
    r->term = get_u64le(p + 24);
    r->index = get_u64le(p + 32);
    r->type = p[40];
    r->payload = p + REC_HEADER_BYTES;
    r->total = rec_total(r->len);
}

static bool rec_header_plausible(const uint8_t *p, const struct rec *r)
{
    for (int i = 41; i < 47; i++)
        if (p[i] != 0)
            return false;
    if (p[47] != REC_HEADER_END)
        return false;
    return r->seq != 0 && r->synced < r->seq && type_valid(r->type) &&
           type_len_valid(r->type, r->len) &&
           r->shard < INBOX_WAL_SHARD_IDS_MAX;
}

static uint64_t rec_checksum(const uint8_t *p, uint32_t len)
{
    return XXH3_64bits(p, REC_HEADER_BYTES + (size_t)len) | REC_CHECKSUM_MARK;
}

/* Decode and verify the record at p, with `avail` bytes readable. */
static enum rec_status rec_decode(const uint8_t *p, size_t avail, struct rec *r)
{
    if (avail < REC_HEADER_BYTES)
        return REC_INCOMPLETE;
    rec_header_get(p, r);
    if (!rec_header_plausible(p, r))
        return REC_IMPLAUSIBLE;
    if (avail < REC_HEADER_BYTES + (size_t)r->len + REC_CHECKSUM_BYTES)
        return REC_INCOMPLETE;
    if (get_u64le(p + REC_HEADER_BYTES + r->len) != rec_checksum(p, r->len))
        return REC_CHECKSUM;
    return REC_OK;
}

static void rec_encode(uint8_t *p, const struct wal_record *in, uint64_t seq,
                       uint64_t synced)
{
    uint32_t len = in->len;
    const void *data = in->data;
    uint8_t vote[HARD_STATE_PAYLOAD_BYTES];
    if (in->type == WAL_RECORD_HARD_STATE) {
        put_u64le(vote, in->vote);
        len = sizeof vote;
        data = vote;
    }
    put_u32le(p + 0, len);
    put_u32le(p + 4, in->shard);
    put_u64le(p + 8, seq);
    put_u64le(p + 16, synced);
    put_u64le(p + 24, in->term);
    put_u64le(p + 32, in->index);
    p[40] = in->type;
    memset(p + 41, 0, 6);
    p[47] = REC_HEADER_END;
    if (len > 0)
        memcpy(p + REC_HEADER_BYTES, data, len);
    put_u64le(p + REC_HEADER_BYTES + len, rec_checksum(p, len));
    size_t raw = REC_HEADER_BYTES + (size_t)len + REC_CHECKSUM_BYTES;
    memset(p + raw, 0, rec_total(len) - raw);
}

/* ---- segments ----------------------------------------------------------- */

static void seg_header_encode(uint8_t *p, uint64_t id, uint64_t first_seq,
                              uint64_t cap)
{
    memset(p, 0, SEG_HEADER_BYTES);
    memcpy(p, SEG_MAGIC, sizeof SEG_MAGIC);
    put_u32le(p + 8, SEG_VERSION);
    put_u32le(p + 12, SEG_HEADER_BYTES);
    put_u64le(p + 16, id);
    put_u64le(p + 24, first_seq);
    put_u64le(p + 32, cap);
    put_u64le(p + SEG_HEADER_SUMMED, XXH3_64bits(p, SEG_HEADER_SUMMED));
}

/* preallocated -> active: allocate, write and sync the header, then give
 * the file its name and make the name durable. A segment that has its name
 * always has a durable header, so recovery never sees a torn header. */
static int segment_create(struct wal *w, uint64_t id, uint64_t first_seq,
                          struct seg **out)
{
    char tmp[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
    char path[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
    uint8_t hdr[SEG_HEADER_BYTES];
    snprintf(tmp, sizeof tmp, "%s/%s", w->dir, PREALLOC_NAME);
    seg_path(w, path, sizeof path, id);
    if (id > UINT32_MAX)
        return INBOX_EFULL; /* entry locations hold 32-bit segment ids */
    struct seg *s = calloc(1, sizeof *s);
    if (s == NULL)
        return INBOX_ENOMEM;
    int rc = vfs_open(w->vfs, tmp, VFS_OPEN_CREATE | VFS_OPEN_TRUNCATE, &s->f);
    if (rc != 0)
        goto err_after_alloc;
    rc = vfs_fallocate(s->f, 0, w->segment_bytes);
    if (rc != 0)
        goto err_after_open;
    seg_header_encode(hdr, id, first_seq, w->segment_bytes);
    rc = vfs_pwrite(s->f, hdr, sizeof hdr, 0);
    if (rc == 0)
        rc = vfs_fdatasync(s->f);
    if (rc == 0)
        rc = vfs_rename(w->vfs, tmp, path);
    if (rc != 0)
        goto err_after_open;
    rc = vfs_fsync_dir(w->vfs, w->dir);
    if (rc != 0)
        goto err_after_open; /* the file may be named: fail() will follow */
    s->id = id;
    s->first_seq = first_seq;
    s->cap = w->segment_bytes;
    s->end = SEG_HEADER_BYTES;
    w->st.segments_created++;
    *out = s;
    return 0;
err_after_open:
    vfs_close(s->f);
err_after_alloc:
    free(s);
    return set_err(w, rc, "wal: creating segment %s: %s", path,
                   inbox_strerror(rc));
}

/* active -> sealed: sync the whole segment, then open the next one. */
static int rollover(struct wal *w)
{
    struct seg *old = active(w);
    int rc = vfs_fdatasync(old->f);
    if (rc != 0)
        return set_err(w, rc, "wal: fdatasync at rollover: %s",
                       inbox_strerror(rc));
    w->st.fsyncs++;
    w->st.records_synced += w->written_seq - w->durable_seq;
    w->durable_seq = w->written_seq;
    pthread_cond_broadcast(&w->cond);
    struct seg *s;
    rc = segment_create(w, old->id + 1, w->written_seq + 1, &s);
    if (rc != 0)
        return rc;
    rc = segs_push(w, s);
    if (rc != 0)
        seg_free(s);
    return rc;
}

/* ---- append ------------------------------------------------------------- */

static struct shard *scratch(struct wal *w, struct shard *s)
{
    if (s->b_epoch != w->batch_epoch) {
        s->b_epoch = w->batch_epoch;
        s->b_based = s->based;
        s->b_first = s->first;
        s->b_last = s->last;
    }
    return s;
}

static int record_validate(struct wal *w, const struct wal_record *r,
                           bool internal)
{
    if (r->shard >= INBOX_WAL_SHARD_IDS_MAX)
        return INBOX_EINVAL;
    if (r->len > 0 && r->data == NULL)
        return INBOX_EINVAL;
    switch (r->type) {
    case WAL_RECORD_ENTRY:
        if (r->vote != 0 || r->len > INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX)
            return INBOX_EINVAL;
        break;
    case WAL_RECORD_TRUNCATE:
        if (r->term != 0 || r->vote != 0 || r->len != 0)
            return INBOX_EINVAL;
        break;
    case WAL_RECORD_HARD_STATE:
        if (r->len != 0)
            return INBOX_EINVAL;
        return 0;
    case WAL_RECORD_RELEASE:
        return internal ? 0 : INBOX_EINVAL;
    default:
        return INBOX_EINVAL;
    }
    struct shard *s = shard_get(w, r->shard);
    if (s == NULL)
        return INBOX_ENOMEM;
    scratch(w, s);
    if (r->type == WAL_RECORD_ENTRY)
        return rule_entry(&s->b_based, &s->b_first, &s->b_last, r->index,
                          false);
    return rule_truncate(s->b_based, &s->b_first, &s->b_last, r->index, false);
}

static int batch_validate(struct wal *w, const struct wal_record *recs,
                          size_t n, bool internal, size_t *total)
{
    w->batch_epoch++;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = record_validate(w, &recs[i], internal);
        if (rc != 0)
            return rc;
        uint32_t len = recs[i].type == WAL_RECORD_HARD_STATE
                           ? HARD_STATE_PAYLOAD_BYTES
                           : recs[i].len;
        bytes += rec_total(len);
        if (bytes > INBOX_WAL_BATCH_BYTES_MAX)
            return INBOX_ERANGE;
    }
    *total = bytes;
    return 0;
}

/* Index the records of one written chunk; they were just encoded by us, so
 * a failure here is a bug (asserted), except running out of memory. */
static int index_chunk(struct wal *w, struct seg *s, uint64_t off,
                       const uint8_t *p, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        struct rec r;
        /* Paired with the reader's check: well-formed as written. The
         * checksum is verified in debug builds only; release builds do not
         * hash twice on the hot path. */
        assert(rec_decode(p + pos, n - pos, &r) == REC_OK);
        rec_header_get(p + pos, &r);
        assert(r.seq == w->written_seq + 1);
        int rc = index_record(w, &r, s->id, off + pos, false);
        assert(rc == 0 || rc == INBOX_ENOMEM);
        if (rc != 0)
            return rc;
        w->written_seq = r.seq;
        w->st.records++;
        pos += r.total;
    }
    return 0;
}

/* Bytes of whole records from p that fit in `room`. */
static size_t chunk_fit(const uint8_t *p, size_t n, uint64_t room)
{
    size_t pos = 0;
    while (pos < n) {
        size_t t = rec_total(get_u32le(p + pos));
        if (pos + t > room)
            break;
        pos += t;
    }
    return pos;
}

/* Write the encoded batch: one pwrite, unless it crosses a segment end. */
static int batch_write(struct wal *w, size_t total)
{
    size_t pos = 0;
    while (pos < total) {
        struct seg *a = active(w);
        size_t chunk = chunk_fit(w->buf + pos, total - pos, a->cap - a->end);
        if (chunk == 0) {
            int rc = rollover(w);
            if (rc != 0)
                return fail(w, rc);
            continue;
        }
        int rc = vfs_pwrite(a->f, w->buf + pos, chunk, a->end);
        if (rc != 0)
            return fail(w,
                        set_err(w, rc, "wal: write: %s", inbox_strerror(rc)));
        rc = index_chunk(w, a, a->end, w->buf + pos, chunk);
        a->end += chunk;
        w->st.bytes_written += chunk;
        if (rc != 0)
            return fail(w, rc); /* on disk but not indexed: stop writing */
        pos += chunk;
    }
    return 0;
}

static int append_locked(struct wal *w, const struct wal_record *recs, size_t n,
                         bool internal, uint64_t *lsn_out)
{
    if (w->failed)
        return INBOX_EFAILED;
    if (n == 0 || n > INBOX_WAL_BATCH_RECORDS_MAX || recs == NULL)
        return INBOX_EINVAL;
    size_t total;
    int rc = batch_validate(w, recs, n, internal, &total);
    if (rc != 0)
        return rc;
    rc = buf_reserve(w, total);
    if (rc != 0)
        return rc;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        rec_encode(w->buf + pos, &recs[i], w->written_seq + 1 + i,
                   w->durable_seq);
        pos += rec_total(get_u32le(w->buf + pos));
    }
    assert(pos == total);
    rc = batch_write(w, total);
    if (rc != 0)
        return rc;
    w->st.appends++;
    if (lsn_out != NULL)
        *lsn_out = w->written_seq;
    return 0;
}

int wal_append(struct wal *w, const struct wal_record *recs, size_t n,
               uint64_t *lsn_out)
{
    pthread_mutex_lock(&w->mu);
    int rc = append_locked(w, recs, n, false, lsn_out);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- group commit ------------------------------------------------------- */

/* Called and returns with mu held; drops it around the fdatasync so appends
 * keep flowing. Whatever is written by then is covered by the next sync. */
static int sync_lead(struct wal *w)
{
    assert(!w->syncing);
    w->syncing = true;
    uint64_t target = w->written_seq;
    struct seg *a = active(w);
    a->refs++;
    pthread_mutex_unlock(&w->mu);
    int rc = vfs_fdatasync(a->f);
    pthread_mutex_lock(&w->mu);
    seg_unpin(a);
    w->syncing = false;
    if (rc != 0) {
        set_err(w, rc, "wal: fdatasync: %s", inbox_strerror(rc));
        return fail(w, rc);
    }
    w->st.fsyncs++;
    if (target > w->durable_seq) {
        w->st.records_synced += target - w->durable_seq;
        w->durable_seq = target;
    }
    pthread_cond_broadcast(&w->cond);
    return 0;
}

int wal_sync(struct wal *w, uint64_t lsn)
{
    int rc = 0;
    bool counted = false;
    pthread_mutex_lock(&w->mu);
    if (lsn > w->written_seq && !w->failed)
        rc = INBOX_EINVAL;
    while (rc == 0 && w->durable_seq < lsn) {
        if (w->failed) {
            rc = INBOX_EFAILED;
            break;
        }
        if (!counted) {
            w->st.syncs++;
            counted = true;
        }
        if (w->syncing)
            pthread_cond_wait(&w->cond, &w->mu);
        else
            rc = sync_lead(w);
    }
    assert(rc != 0 || w->durable_seq >= lsn);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- reads -------------------------------------------------------------- */

struct rloc {
    struct seg *seg;
    uint32_t off;
    uint32_t total;
    uint64_t term, index;
};

static int entries_reserve(struct wal_entries *e, size_t n, size_t bytes)
{
    if (n > e->v_cap) {
        struct wal_entry *v = realloc(e->v, n * sizeof *v);
        if (v == NULL)
            return INBOX_ENOMEM;
        e->v = v;
        e->v_cap = n;
    }
    if (n > e->loc_cap) {
        struct rloc *l = realloc(e->loc, n * sizeof *l);
        if (l == NULL)
            return INBOX_ENOMEM;
        e->loc = l;
        e->loc_cap = n;
    }
    if (bytes > e->buf_cap) {
        uint8_t *b = realloc(e->buf, bytes);
        if (b == NULL)
            return INBOX_ENOMEM;
        e->buf = b;
        e->buf_cap = bytes;
    }
    return 0;
}

static int range_check(const struct shard *s, uint64_t lo, uint64_t hi)
{
    uint64_t first = s ? s->first : 1, last = s ? s->last : 0;
    if (lo > hi)
        return INBOX_EINVAL;
    if (lo < first)
        return INBOX_ECOMPACTED;
    if (hi > last + 1)
        return INBOX_EUNAVAILABLE;
    return 0;
}

/* Under mu: choose the entries, pin their segments, size the buffers. */
static int entries_plan(struct wal *w, uint32_t shard, uint64_t lo, uint64_t hi,
                        uint64_t bytes_max, struct wal_entries *e,
                        size_t *bytes_out)
{
    const struct shard *s = shard_find(w, shard);
    int rc = range_check(s, lo, hi);
    if (rc != 0 || lo == hi)
        return rc;
    size_t n = 0, bytes = 0;
    uint64_t payload = 0;
    while (lo + n < hi) {
        const struct loc *l = shard_loc(s, lo + n);
        if (n > 0 && payload + l->len > bytes_max)
            break;
        payload += l->len;
        bytes += rec_total(l->len);
        n++;
    }
    rc = entries_reserve(e, n, bytes);
    if (rc != 0)
        return rc;
    struct rloc *rl = e->loc;
    for (size_t i = 0; i < n; i++) {
        const struct loc *l = shard_loc(s, lo + i);
        rl[i] = (struct rloc){.seg = seg_by_id(w, l->seg),
                              .off = l->off,
                              .total = (uint32_t)rec_total(l->len),
                              .term = l->term,
                              .index = lo + i};
        rl[i].seg->refs++;
    }
    e->n = n;
    *bytes_out = bytes;
    return 0;
}

/* Without mu: read runs of adjacent records with one pread each, and
 * verify every record on the way out. */
static int entries_fill(uint32_t shard, struct wal_entries *e)
{
    const struct rloc *rl = e->loc;
    size_t pos = 0;
    for (size_t i = 0; i < e->n;) {
        size_t j = i + 1, run = rl[i].total;
        while (j < e->n && rl[j].seg == rl[i].seg &&
               rl[j].off == rl[j - 1].off + rl[j - 1].total)
            run += rl[j++].total;
        size_t got;
        int rc = vfs_pread(rl[i].seg->f, e->buf + pos, run, rl[i].off, &got);
        if (rc != 0)
            return rc;
        if (got != run)
            return INBOX_ECORRUPT;
        for (; i < j; i++) {
            struct rec r;
            if (rec_decode(e->buf + pos, rl[i].total, &r) != REC_OK ||
                r.type != WAL_RECORD_ENTRY || r.shard != shard ||
                r.index != rl[i].index || r.term != rl[i].term)
                return INBOX_ECORRUPT;
            e->v[i] = (struct wal_entry){.term = r.term,
                                         .index = r.index,
                                         .data = r.payload,
                                         .len = r.len};
            pos += rl[i].total;
        }
    }
    return 0;
}

int wal_entries(struct wal *w, uint32_t shard, uint64_t lo, uint64_t hi,
                uint64_t bytes_max, struct wal_entries *out)
{
    size_t bytes = 0;
    out->n = 0;
    pthread_mutex_lock(&w->mu);
    int rc = entries_plan(w, shard, lo, hi, bytes_max, out, &bytes);
    pthread_mutex_unlock(&w->mu);
    if (rc != 0 || out->n == 0)
        return rc;
    rc = entries_fill(shard, out);
    pthread_mutex_lock(&w->mu);
    const struct rloc *rl = out->loc;
    for (size_t i = 0; i < out->n; i++)
        seg_unpin(rl[i].seg);
    pthread_mutex_unlock(&w->mu);
    if (rc != 0)
        out->n = 0;
    return rc;
}

void wal_entries_free(struct wal_entries *e)
{
    free(e->v);
    free(e->loc);
    free(e->buf);
    memset(e, 0, sizeof *e);
}

int wal_term(struct wal *w, uint32_t shard, uint64_t i, uint64_t *term)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    const struct shard *s = shard_find(w, shard);
    uint64_t first = s ? s->first : 1, last = s ? s->last : 0;
    if (i == 0)
        *term = 0;
    else if (i >= first && i <= last)
        *term = shard_loc(s, i)->term;
    else if (s && s->has_rel && i == s->rel && i + 1 == first)
        *term = s->rel_term;
    else
        rc = i < first ? INBOX_ECOMPACTED : INBOX_EUNAVAILABLE;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int wal_range(struct wal *w, uint32_t shard, uint64_t *first, uint64_t *last)
{
    pthread_mutex_lock(&w->mu);
    const struct shard *s = shard_find(w, shard);
    *first = s ? s->first : 1;
    *last = s ? s->last : 0;
    pthread_mutex_unlock(&w->mu);
    return shard < INBOX_WAL_SHARD_IDS_MAX ? 0 : INBOX_EINVAL;
}

int wal_truncate_suffix(struct wal *w, uint32_t shard, uint64_t index,
                        uint64_t *lsn_out)
{
    struct wal_record r = {
        .type = WAL_RECORD_TRUNCATE, .shard = shard, .index = index};
    return wal_append(w, &r, 1, lsn_out);
}

int wal_hard_state_set(struct wal *w, uint32_t shard,
                       const struct wal_hard_state *hs, uint64_t *lsn_out)
{
    struct wal_record r = {.type = WAL_RECORD_HARD_STATE,
                           .shard = shard,
                           .term = hs->term,
                           .index = hs->commit,
                           .vote = hs->vote};
    return wal_append(w, &r, 1, lsn_out);
}

int wal_hard_state_get(struct wal *w, uint32_t shard, struct wal_hard_state *hs)
{
    int rc = INBOX_ENOTFOUND;
    pthread_mutex_lock(&w->mu);
    const struct shard *s = shard_find(w, shard);
    if (s != NULL && s->has_hs) {
        *hs = s->hs;
        rc = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void wal_stats_get(struct wal *w, struct wal_stats *stats)
{
    pthread_mutex_lock(&w->mu);
    *stats = w->st;
    stats->written_lsn = w->written_seq;
    stats->durable_lsn = w->durable_seq;
    stats->failed = w->failed;
    pthread_mutex_unlock(&w->mu);
}

/* ---- release and segment deletion --------------------------------------- */

/* The oldest segment any shard still needs (invariant 4). */
static uint64_t gc_cutoff(const struct wal *w)
{
    uint64_t cut = active(w)->id;
    for (size_t i = 0; i < w->nshard_ids; i++) {
        const struct shard *s = w->shards[w->shard_ids[i]];
        if (s->based && shard_count(s) > 0 && s->ents[s->head].seg < cut)
            cut = s->ents[s->head].seg;
    }
    return cut;
}

/* Re-log the hard states and releases that live below `cut`, so deleting
 * those segments loses neither. Called with mu held; returns the LSN to
 * sync (0 if nothing was written). */
static int gc_relog(struct wal *w, uint64_t cut, uint64_t *lsn)
{
    struct wal_record *recs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    *lsn = 0;
    for (size_t i = 0; i < w->nshard_ids && rc == 0; i++) {
        uint32_t id = w->shard_ids[i];
        const struct shard *s = w->shards[id];
        if (n + 2 > cap) {
            cap = cap ? 2 * cap : 64;
            struct wal_record *p = realloc(recs, cap * sizeof *p);
            if (p == NULL) {
                rc = INBOX_ENOMEM;
                break;
            }
            recs = p;
        }
        if (s->has_hs && s->hs_seg < cut)
            recs[n++] = (struct wal_record){.type = WAL_RECORD_HARD_STATE,
                                            .shard = id,
                                            .term = s->hs.term,
                                            .index = s->hs.commit,
                                            .vote = s->hs.vote};
        if (s->has_rel && s->rel_seg < cut)
            recs[n++] = (struct wal_record){.type = WAL_RECORD_RELEASE,
                                            .shard = id,
                                            .term = s->rel_term,
                                            .index = s->rel};
    }
    for (size_t i = 0; i < n && rc == 0; i += INBOX_WAL_BATCH_RECORDS_MAX) {
        size_t k = n - i < INBOX_WAL_BATCH_RECORDS_MAX
                       ? n - i
                       : INBOX_WAL_BATCH_RECORDS_MAX;
        rc = append_locked(w, recs + i, k, true, lsn);
    }
    free(recs);
    return rc;
}

/* Delete the segments below `cut`, oldest first, each unlink made durable
 * before the next so the directory always holds a contiguous run. */
static int gc_delete(struct wal *w, uint64_t cut)
{
    size_t k = 0;
    while (k < w->nsegs - 1 && w->segs[k]->id < cut)
        k++;
    if (k == 0)
        return 0;
    struct seg **doomed = malloc(k * sizeof *doomed);
    if (doomed == NULL)
        return INBOX_ENOMEM;
    for (size_t i = 0; i < k; i++) {
        doomed[i] = w->segs[i];
        doomed[i]->doomed = true;
        doomed[i]->refs++;
    }
    memmove(w->segs, w->segs + k, (w->nsegs - k) * sizeof *w->segs);
    w->nsegs -= k;
    w->st.segments = w->nsegs;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    size_t done = 0;
    for (; done < k && rc == 0; done++) {
        char path[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
        seg_path(w, path, sizeof path, doomed[done]->id);
        rc = vfs_unlink(w->vfs, path);
        if (rc == 0)
            rc = vfs_fsync_dir(w->vfs, w->dir);
    }
    pthread_mutex_lock(&w->mu);
    if (rc != 0)
        fail(w,
             set_err(w, rc, "wal: deleting a segment: %s", inbox_strerror(rc)));
    else
        w->st.segments_deleted += done;
    for (size_t i = 0; i < k; i++)
        seg_unpin(doomed[i]);
    free(doomed);
    return rc;
}

static int gc(struct wal *w)
{
    uint64_t lsn;
    pthread_mutex_lock(&w->mu);
    uint64_t cut = gc_cutoff(w);
    int rc = 0;
    if (cut > w->segs[0]->id) {
        rc = gc_relog(w, cut, &lsn);
        if (rc == 0 && lsn != 0) {
            pthread_mutex_unlock(&w->mu);
            rc = wal_sync(w, lsn);
            pthread_mutex_lock(&w->mu);
        }
        if (rc == 0 && w->failed)
            rc = INBOX_EFAILED;
        if (rc == 0)
            rc = gc_delete(w, cut);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Check one release against the log (mu held): 0 and *skip when it is a
 * no-op, 0 when it is to be written, or an error. */
static int release_check(struct wal *w, const struct wal_release *r, bool *skip)
{
    *skip = false;
    if (r->shard >= INBOX_WAL_SHARD_IDS_MAX || r->index == 0)
        return INBOX_EINVAL;
    const struct shard *s = shard_find(w, r->shard);
    if (s == NULL)
        return 0;
    if (s->has_rel && r->index <= s->rel) {
        *skip = true; /* already released */
        return 0;
    }
    if (s->based && r->index >= s->first && r->index <= s->last &&
        shard_loc(s, r->index)->term != r->term)
        return INBOX_EINVAL;
    return 0;
}

/* Append the RELEASE records of the releases that are not no-ops, as one
 * batch (mu held). *lsn is 0 if there was nothing to write. */
static int release_append(struct wal *w, const struct wal_release *v, size_t n,
                          uint64_t *lsn)
{
    *lsn = 0;
    if (w->failed)
        return INBOX_EFAILED;
    struct wal_record *recs = malloc(n * sizeof *recs);
    if (recs == NULL)
        return INBOX_ENOMEM;
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        bool skip;
        rc = release_check(w, &v[i], &skip);
        if (rc == 0 && !skip)
            recs[k++] = (struct wal_record){.type = WAL_RECORD_RELEASE,
                                            .shard = v[i].shard,
                                            .term = v[i].term,
                                            .index = v[i].index};
    }
    if (rc == 0 && k > 0)
        rc = append_locked(w, recs, k, true, lsn);
    free(recs);
    return rc;
}

int wal_release_prefixes(struct wal *w, const struct wal_release *v, size_t n)
{
    if (n == 0 || n > INBOX_WAL_BATCH_RECORDS_MAX || v == NULL)
        return INBOX_EINVAL;
    uint64_t lsn;
    pthread_mutex_lock(&w->gc_mu);
    pthread_mutex_lock(&w->mu);
    int rc = release_append(w, v, n, &lsn);
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && lsn != 0) {
        rc = wal_sync(w, lsn);
        if (rc == 0)
            rc = gc(w);
    }
    pthread_mutex_unlock(&w->gc_mu);
    return rc;
}

int wal_release_prefix(struct wal *w, uint32_t shard, uint64_t index,
                       uint64_t term)
{
    struct wal_release r = {.shard = shard, .index = index, .term = term};
    return wal_release_prefixes(w, &r, 1);
}

/* ---- recovery ----------------------------------------------------------- */

struct listing {
    uint64_t *ids;
    size_t n, cap;
    bool prealloc;
};

static bool parse_seg_name(const char *name, uint64_t *id)
{
    if (strlen(name) != 24 || strncmp(name, "wal-", 4) != 0 ||
        strcmp(name + 20, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 4; i < 20; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return false;
        v = (v << 4) | (uint64_t)d;
    }
    *id = v;
    return true;
}

static int list_cb(void *arg, const char *name)
{
    struct listing *l = arg;
    uint64_t id;
    if (strcmp(name, PREALLOC_NAME) == 0) {
        l->prealloc = true;
        return 0;
    }
    if (!parse_seg_name(name, &id))
        return 0; /* not ours */
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        uint64_t *p = realloc(l->ids, cap * sizeof *p);
        if (p == NULL)
            return INBOX_ENOMEM;
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* Does [a, b) contain a whole sector-aligned piece that is all zero? A
 * write cut short by a crash leaves such pieces (sectors are atomic). */
static bool has_zero_sector_piece(const uint8_t *img, uint64_t a, uint64_t b)
{
    for (uint64_t lo = a; lo < b;) {
        uint64_t hi = (lo / SECTOR_BYTES + 1) * SECTOR_BYTES;
        if (hi > b)
            hi = b;
        if (all_zero(img + lo, (size_t)(hi - lo)))
            return true;
        lo = hi;
    }
    return false;
}

/* Could the bad record at `off` be a write that never fully landed? */
static bool torn_candidate(const uint8_t *img, uint64_t off, uint64_t size)
{
    if (size - off < REC_HEADER_BYTES)
        return true;
    struct rec r;
    rec_header_get(img + off, &r);
    if (!rec_header_plausible(img + off, &r))
        return img[off + REC_HEADER_BYTES - 1] == 0 ||
               has_zero_sector_piece(img, off, off + REC_HEADER_BYTES);
    uint64_t end = off + REC_HEADER_BYTES + r.len + REC_CHECKSUM_BYTES;
    if (end > size)
        return true;
    return img[end - 1] == 0 || has_zero_sector_piece(img, off, end);
}

/* Is there, after `off`, a valid record written when record `expect` was
 * already durable? Then the bad record at `off` was durable: corruption. */
static bool later_durable(const uint8_t *img, uint64_t off, uint64_t size,
                          uint64_t expect)
{
    for (uint64_t y = off + REC_ALIGN; y + REC_HEADER_BYTES <= size;
         y += REC_ALIGN) {
        struct rec r;
        if (get_u64le(img + y + 16) < expect) /* synced field, cheap test */
            continue;
        if (rec_decode(img + y, (size_t)(size - y), &r) == REC_OK &&
            r.synced >= expect)
            return true;
    }
    return false;
}

/* End of the last nonzero byte in [off, size), or off if all are zero.
 * Runs over the preallocated rest of the last segment at every open, so
 * it skips zeros a word at a time. */
static uint64_t nonzero_end(const uint8_t *img, uint64_t off, uint64_t size)
{
    uint64_t end = size;
    while (end > off && end % 8 != 0 && img[end - 1] == 0)
        end--;
    while (end % 8 == 0 && end >= off + 8) {
        uint64_t word;
        memcpy(&word, img + end - 8, sizeof word);
        if (word != 0)
            break;
        end -= 8;
    }
    while (end > off && img[end - 1] == 0)
        end--;
    return end;
}

static int seg_header_check(struct wal *w, struct seg *s, const uint8_t *img,
                            uint64_t size, uint64_t id)
{
    if (size < SEG_HEADER_BYTES)
        return corrupt(w, s, 0, "shorter than a segment header");
    if (memcmp(img, SEG_MAGIC, sizeof SEG_MAGIC) != 0)
        return corrupt(w, s, 0, "bad magic");
    if (get_u64le(img + SEG_HEADER_SUMMED) !=
        XXH3_64bits(img, SEG_HEADER_SUMMED))
        return corrupt(w, s, SEG_HEADER_SUMMED, "header checksum mismatch");
    if (get_u32le(img + 8) != SEG_VERSION ||
        get_u32le(img + 12) != SEG_HEADER_BYTES)
        return set_err(w, INBOX_EFORMAT,
                       "wal: segment %016" PRIx64 " has format version %u", id,
                       get_u32le(img + 8));
    if (get_u64le(img + 16) != id)
        return corrupt(w, s, 16, "segment id does not match its name");
    s->first_seq = get_u64le(img + 24);
    return 0;
}

/*
 * Scan one segment image, replaying its records. The first record that
 * does not verify ends the scan at offset X. If only zeros follow, X is the
 * end of the log. Otherwise it is a torn tail only in the last segment,
 * only if the bad record looks like a write cut short (torn_candidate), and
 * only if no later record was written after it was durable; the caller
 * then zeroes [X, *zero_to). Anything else is corruption (recovery rules in
 * docs/storage.md).
 */
static int scan_segment(struct wal *w, struct seg *s, const uint8_t *img,
                        uint64_t size, bool last, uint64_t *expect,
                        uint64_t *zero_to)
{
    uint64_t off = SEG_HEADER_BYTES;
    enum rec_status st = REC_OK;
    struct rec r;
    while (off < size) {
        st = rec_decode(img + off, (size_t)(size - off), &r);
        if (st == REC_OK && r.seq != *expect)
            return corrupt(w, s, off, "record out of sequence");
        if (st != REC_OK)
            break;
        int rc = index_record(w, &r, s->id, off, true);
        if (rc == INBOX_ENOMEM)
            return rc;
        if (rc != 0) {
            const struct shard *sh = w->shards[r.shard];
            char why[160];
            snprintf(why, sizeof why,
                     "record type %u shard %" PRIu32 " index %" PRIu64
                     " breaks the log's rules (shard log [%" PRIu64 ", %" PRIu64
                     "])",
                     r.type, r.shard, r.index, sh->first, sh->last);
            return corrupt(w, s, off, why);
        }
        off += r.total;
        (*expect)++;
    }
    s->end = off;
    *zero_to = off;
    uint64_t nz = nonzero_end(img, off, size);
    if (nz <= off)
        return 0; /* clean end: zeros (preallocated) or end of file */
    if (!last)
        return corrupt(w, s, off, "bad record in a sealed segment");
    if (!torn_candidate(img, off, size))
        return corrupt(w, s, off, "checksum mismatch before the tail");
    if (later_durable(img, off, size, *expect))
        return corrupt(w, s, off, "bad record followed by durable records");
    *zero_to = nz;
    return 0;
}

/* Zero a torn tail so no stale record survives beyond the new end. */
static int zero_range(struct wal *w, struct seg *s, uint64_t from, uint64_t to)
{
    static const uint8_t zeros[ZERO_CHUNK_BYTES];
    while (from < to) {
        size_t n =
            to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        int rc = vfs_pwrite(s->f, zeros, n, from);
        if (rc != 0)
            return set_err(w, rc, "wal: zeroing a torn tail: %s",
                           inbox_strerror(rc));
        from += n;
    }
    return 0;
}

static int recover_open_segment(struct wal *w, uint64_t id, bool last,
                                uint64_t *expect, bool first)
{
    char path[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
    seg_path(w, path, sizeof path, id);
    struct seg *s = calloc(1, sizeof *s);
    if (s == NULL)
        return INBOX_ENOMEM;
    s->id = id;
    int rc = vfs_open(w->vfs, path, 0, &s->f);
    if (rc != 0) {
        free(s);
        return set_err(w, rc, "wal: open %s: %s", path, inbox_strerror(rc));
    }
    uint64_t size = 0, zero_to = 0;
    size_t got = 0;
    rc = vfs_size(s->f, &size);
    if (rc == 0 && size > INBOX_WAL_SEGMENT_BYTES_MAX)
        rc = corrupt(w, s, size, "segment larger than the maximum");
    if (rc == 0)
        rc = buf_reserve(w, (size_t)size);
    if (rc == 0)
        rc = vfs_pread(s->f, w->buf, (size_t)size, 0, &got);
    if (rc == 0 && got != size)
        rc = corrupt(w, s, got, "short read");
    if (rc == 0)
        rc = seg_header_check(w, s, w->buf, size, id);
    if (rc == 0 && !first && s->first_seq != *expect)
        rc = corrupt(w, s, 24,
                     "first LSN does not follow the previous "
                     "segment");
    if (rc == 0 && first)
        *expect = s->first_seq;
    if (rc == 0)
        rc = scan_segment(w, s, w->buf, size, last, expect, &zero_to);
    if (rc == 0)
        rc = segs_push(w, s);
    if (rc != 0) {
        seg_free(s);
        return rc;
    }
    s->cap = size;
    if (last && zero_to > s->end) {
        rc = zero_range(w, s, s->end, zero_to);
        w->st.torn_bytes = zero_to - s->end;
        w->st.torn_segment = id;
        w->st.torn_offset = s->end;
    }
    return rc;
}

/* After the scan: the last segment becomes active, allocated to its size,
 * and everything recovered is made durable before anyone is told so. */
static int recover_finish(struct wal *w)
{
    struct seg *a = active(w);
    int rc = 0;
    if (a->cap < w->segment_bytes) {
        rc = vfs_fallocate(a->f, 0, w->segment_bytes);
        if (rc == 0)
            a->cap = w->segment_bytes;
    }
    if (rc == 0)
        rc = vfs_fdatasync(a->f);
    if (rc == 0)
        rc = vfs_fsync_dir(w->vfs, w->dir);
    if (rc != 0)
        return set_err(w, rc, "wal: finishing recovery: %s",
                       inbox_strerror(rc));
    return 0;
}

static int recover(struct wal *w)
{
    struct listing l = {0};
    uint64_t expect = 1;
    char path[INBOX_WAL_DIR_BYTES_MAX + SEG_NAME_BYTES];
    snprintf(path, sizeof path, "%s/%s", w->dir, LOCK_NAME);
    int rc = vfs_lock(w->vfs, path, &w->lock);
    if (rc != 0) {
        w->lock = NULL;
        if (rc == -EWOULDBLOCK || rc == -EAGAIN)
            rc = INBOX_ELOCKED;
        return set_err(w, rc, "wal: locking %s: %s", path, inbox_strerror(rc));
    }
    rc = vfs_list_dir(w->vfs, w->dir, list_cb, &l);
    if (rc != 0) {
        set_err(w, rc, "wal: listing %s: %s", w->dir, inbox_strerror(rc));
        goto out;
    }
    if (l.prealloc) { /* a segment that never became active */
        snprintf(path, sizeof path, "%s/%s", w->dir, PREALLOC_NAME);
        rc = vfs_unlink(w->vfs, path);
        if (rc != 0 && rc != -ENOENT)
            goto out;
    }
    if (l.n > 1)
        qsort(l.ids, l.n, sizeof *l.ids, cmp_u64);
    for (size_t i = 1; i < l.n; i++) {
        if (l.ids[i] != l.ids[i - 1] + 1) {
            rc = set_err(w, INBOX_ECORRUPT,
                         "wal: segment %016" PRIx64 " is missing in %s",
                         l.ids[i - 1] + 1, w->dir);
            goto out;
        }
    }
    for (size_t i = 0; i < l.n && rc == 0; i++)
        rc = recover_open_segment(w, l.ids[i], i + 1 == l.n, &expect, i == 0);
    if (rc == 0 && l.n == 0) {
        struct seg *s;
        rc = segment_create(w, 1, 1, &s);
        if (rc == 0 && (rc = segs_push(w, s)) != 0)
            seg_free(s);
    }
    if (rc == 0)
        rc = recover_finish(w);
    w->written_seq = w->durable_seq = expect - 1;
out:
    free(l.ids);
    return rc;
}

static void wal_free(struct wal *w)
{
    for (size_t i = 0; i < w->nsegs; i++) {
        assert(w->segs[i]->refs == 0);
        seg_free(w->segs[i]);
    }
    free(w->segs);
    for (size_t i = 0; i < w->nshard_ids; i++) {
        struct shard *s = w->shards[w->shard_ids[i]];
        free(s->ents);
        free(s);
    }
    free(w->shards);
    free(w->shard_ids);
    free(w->buf);
    if (w->lock != NULL)
        vfs_close(w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->gc_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static int options_check(const struct wal_options *o, uint64_t *segment_bytes)
{
    if (o == NULL || o->dir == NULL || o->dir[0] == '\0' ||
        strlen(o->dir) >= INBOX_WAL_DIR_BYTES_MAX)
        return INBOX_EINVAL;
    uint64_t sb =
        o->segment_bytes ? o->segment_bytes : INBOX_WAL_SEGMENT_BYTES_DEFAULT;
    if (sb < INBOX_WAL_SEGMENT_BYTES_MIN || sb > INBOX_WAL_SEGMENT_BYTES_MAX)
        return INBOX_ERANGE;
    *segment_bytes = sb;
    return 0;
}

int wal_open(const struct wal_options *opts, struct wal **out)
{
    uint64_t sb;
    int rc = options_check(opts, &sb);
    if (rc != 0)
        return rc;
    struct wal *w = calloc(1, sizeof *w);
    if (w == NULL)
        return INBOX_ENOMEM;
    w->shards = calloc(INBOX_WAL_SHARD_IDS_MAX, sizeof *w->shards);
    if (w->shards == NULL) {
        free(w);
        return INBOX_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->gc_mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->vfs = opts->vfs ? opts->vfs : vfs_posix();
    w->segment_bytes = sb;
    snprintf(w->dir, sizeof w->dir, "%s", opts->dir);
    rc = recover(w);
    if (rc != 0) {
        if (opts->errmsg != NULL && opts->errmsg_bytes > 0)
            snprintf(opts->errmsg, opts->errmsg_bytes, "%s",
                     w->errmsg[0] ? w->errmsg : inbox_strerror(rc));
        wal_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void wal_close(struct wal *w)
{
    if (w != NULL)
        wal_free(w);
}
