/*
 * raft_log.c — raft_storage over the node-wide WAL for one shard (see
 * raft_log.h for the record layout and the memory rules).
 */
#include "raft_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"

void raft_log_init(struct raft_log *l, struct wal *wal, uint32_t shard,
                   const struct raft_membership *m)
{
    memset(l, 0, sizeof(*l));
    l->wal = wal;
    l->shard = shard;
    l->membership = *m;
    snapshot_file_init(&l->snap);
}

void raft_log_free(struct raft_log *l)
{
    for (size_t i = 0; i < l->bufs_cap; i++)
        wal_entries_free(&l->bufs[i].e);
    free(l->bufs);
    l->bufs = NULL;
    l->bufs_cap = 0;
    l->bufs_used = 0;
    for (size_t i = 0; i < l->cbufs_cap; i++)
        free(l->cbufs[i].p);
    free(l->cbufs);
    l->cbufs = NULL;
    l->cbufs_cap = 0;
    l->cbufs_used = 0;
    snapshot_file_drop(&l->snap);
}

void raft_log_snapshots_enable(struct raft_log *l,
                               const struct raft_log_snap_hooks *hooks)
{
    l->hooks = hooks;
}

void raft_log_snapshot_drop(struct raft_log *l)
{
    snapshot_file_drop(&l->snap);
}

void raft_log_set_membership(struct raft_log *l,
                             const struct raft_membership *m)
{
    l->membership = *m;
}

void raft_log_reads_done(struct raft_log *l)
{
    for (size_t i = 0; i < l->bufs_cap; i++) {
        struct raft_log_buf *b = &l->bufs[i];
        if (i >= RAFT_LOG_BUFS_KEPT || b->bytes > RAFT_LOG_BUF_BYTES_KEPT) {
            wal_entries_free(&b->e);
            memset(b, 0, sizeof(*b));
        }
    }
    l->bufs_used = 0;
    /* Chunk buffers: keep one for the next transfer, free the rest. */
    for (size_t i = 1; i < l->cbufs_cap; i++) {
        free(l->cbufs[i].p);
        memset(&l->cbufs[i], 0, sizeof(l->cbufs[i]));
    }
    l->cbufs_used = 0;
}

/* A chunk buffer of at least max bytes for one snapshot_chunk() call. */
static uint8_t *cbuf_take(struct raft_log *l, uint32_t max)
{
    if (l->cbufs_used == l->cbufs_cap) {
        size_t cap = l->cbufs_cap ? l->cbufs_cap * 2u : 4u;
        struct raft_log_cbuf *b = realloc(l->cbufs, cap * sizeof(*b));
        if (!b)
            return NULL;
        memset(b + l->cbufs_cap, 0, (cap - l->cbufs_cap) * sizeof(*b));
        l->cbufs = b;
        l->cbufs_cap = cap;
    }
    struct raft_log_cbuf *b = &l->cbufs[l->cbufs_used];
    if (b->cap < max) {
        uint8_t *p = realloc(b->p, max);
        if (!p)
            return NULL;
        b->p = p;
        b->cap = max;
    }
    l->cbufs_used++;
    return b->p;
}

/* A buffer for one entries() call, or NULL when out of memory. */
static struct raft_log_buf *buf_take(struct raft_log *l)
{
    if (l->bufs_used == l->bufs_cap) {
        size_t cap = l->bufs_cap ? l->bufs_cap * 2u : 4u;
        struct raft_log_buf *b = realloc(l->bufs, cap * sizeof(*b));
        if (!b)
            return NULL;
        memset(b + l->bufs_cap, 0, (cap - l->bufs_cap) * sizeof(*b));
        l->bufs = b;
        l->bufs_cap = cap;
    }
    return &l->bufs[l->bufs_used++];
}

static uint64_t st_last_index(void *ctx)
{
    struct raft_log *l = ctx;
    uint64_t first = 1, last = 0;
    (void)wal_range(l->wal, l->shard, &first, &last);
    return last;
}

static int st_term(void *ctx, uint64_t i, uint64_t *term)
{
    struct raft_log *l = ctx;
    return wal_term(l->wal, l->shard, i, term);
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                      struct raft_entry *out, size_t cap, size_t *n)
{
    struct raft_log *l = ctx;
    *n = 0;
    if (lo >= hi || cap == 0)
        return 0;
    if (hi - lo > cap)
        hi = lo + cap;
    struct raft_log_buf *pb = buf_take(l);
    if (!pb)
        return INBOX_ENOMEM;
    struct wal_entries *b = &pb->e;
    int rc = wal_entries(l->wal, l->shard, lo, hi, max_bytes, b);
    if (rc != 0)
        return rc;
    pb->bytes = 0;
    assert(b->n >= 1 && b->n <= hi - lo);
    for (size_t i = 0; i < b->n; i++) {
        const struct wal_entry *we = &b->v[i];
        /* Pair with raft_log_entry_record: a type byte, then the data. */
        if (we->len < RAFT_LOG_ENTRY_PREFIX_BYTES ||
            we->data[0] > RAFT_ENTRY_CONF || we->index != lo + i)
            return INBOX_ECORRUPT;
        pb->bytes += we->len;
        out[i].term = we->term;
        out[i].index = we->index;
        out[i].type = we->data[0];
        out[i].len = we->len - RAFT_LOG_ENTRY_PREFIX_BYTES;
        out[i].data =
            out[i].len ? we->data + RAFT_LOG_ENTRY_PREFIX_BYTES : NULL;
    }
    *n = b->n;
    return 0;
}

/* The released prefix as a snapshot: what raft starts from. */
static void release_meta(struct raft_log *l, struct raft_snapshot_meta *out)
{
    uint64_t first = 1, last = 0, term = 0;
    (void)wal_range(l->wal, l->shard, &first, &last);
    memset(out, 0, sizeof(*out));
    out->index = first - 1u;
    if (out->index > 0 && wal_term(l->wal, l->shard, out->index, &term) != 0)
        term = 0; /* unknown boundary term: raft's log matching fails safe */
    out->term = term;
    out->membership = l->membership;
}

static void st_snapshot(void *ctx, struct raft_snapshot_meta *out)
{
    struct raft_log *l = ctx;
    release_meta(l, out);
    /* Before enabling (raft_create) and with nothing released, the release
     * point is the answer: raft never sends a snapshot at index 0. */
    if (!l->hooks || out->index == 0)
        return;
    if (l->snap.fd >= 0 && l->snap.meta.index >= out->index) {
        *out = l->snap.meta;
        return;
    }
    struct snapshot_file f;
    if (l->hooks->make(l->hooks->ctx, l, out->index, &f) == 0) {
        assert(f.fd >= 0 && f.meta.index >= out->index && f.meta.data_bytes);
        snapshot_file_drop(&l->snap);
        l->snap = f;
        *out = l->snap.meta;
        return;
    }
    /* No data to offer now: a meta that snapshot_chunk refuses, so raft
     * goes back to probing instead of sending an empty snapshot. */
    out->data_bytes = UINT64_MAX;
}

static int st_snapshot_chunk(void *ctx, uint64_t index, uint64_t offset,
                             uint32_t max, const uint8_t **data, uint32_t *len)
{
    struct raft_log *l = ctx;
    *data = NULL;
    *len = 0;
    if (l->snap.fd < 0 || index != l->snap.meta.index || max == 0)
        return INBOX_EUNAVAILABLE;
    uint8_t *buf = cbuf_take(l, max);
    if (!buf)
        return INBOX_ENOMEM;
    int rc = snapshot_file_read(&l->snap, offset, buf, max, len);
    if (rc != 0)
        return rc;
    *data = buf;
    return 0;
}

void raft_log_storage(struct raft_log *l, struct raft_storage *out)
{
    out->ctx = l;
    out->last_index = st_last_index;
    out->term = st_term;
    out->entries = st_entries;
    out->snapshot = st_snapshot;
    out->snapshot_chunk = st_snapshot_chunk;
}

int raft_log_hard_state(struct raft_log *l, struct raft_hard_state *hs)
{
    struct wal_hard_state w;
    memset(hs, 0, sizeof(*hs));
    int rc = wal_hard_state_get(l->wal, l->shard, &w);
    if (rc == INBOX_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    hs->term = w.term;
    hs->vote = w.vote;
    hs->commit = w.commit;
    return 0;
}

void raft_log_entry_record(const struct raft_log *l, const struct raft_entry *e,
                           uint8_t *buf, struct wal_record *rec)
{
    assert(e->type <= RAFT_ENTRY_CONF);
    assert(e->index >= 1 && e->term >= 1);
    buf[0] = (uint8_t)e->type;
    if (e->len)
        memcpy(buf + RAFT_LOG_ENTRY_PREFIX_BYTES, e->data, e->len);
    memset(rec, 0, sizeof(*rec));
    rec->type = WAL_RECORD_ENTRY;
    rec->shard = l->shard;
    rec->term = e->term;
    rec->index = e->index;
    rec->data = buf;
    rec->len = (uint32_t)raft_log_record_bytes(e->len);
}

void raft_log_hard_state_record(const struct raft_log *l,
                                const struct raft_hard_state *hs,
                                struct wal_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->type = WAL_RECORD_HARD_STATE;
    rec->shard = l->shard;
    rec->term = hs->term;
    rec->vote = hs->vote;
    rec->index = hs->commit;
}
