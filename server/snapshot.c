/*
 * snapshot.c — shard snapshots as files under DATA/snap/ (see snapshot.h
 * for the files, their format and why none of them is fsync'd).
 */
#include "snapshot.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inbox/error.h"
#include "raft_log.h"

/* Store stream chunk header: body length at byte 16 (docs/store.md). */
#define SNAP_CHUNK_HEADER_BYTES 32u
#define SNAP_CHUNK_BODY_LEN_AT 16u
/* Entries read per WAL read while looking for configuration entries. */
#define SNAP_MEMB_SCAN_ENTRIES 1024u
#define SNAP_MEMB_SCAN_BYTES (4u * INBOX_MIB)

void snapshot_file_init(struct snapshot_file *f)
{
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

void snapshot_stage_init(struct snapshot_stage *st)
{
    memset(st, 0, sizeof(*st));
    st->fd = -1;
}

static bool stale_name(const char *name)
{
    return strncmp(name, "shard-", 6) == 0 ||
           strncmp(name, "incoming-", 9) == 0;
}

int snapshot_dir_init(const char *data_dir, char *dir_out, size_t cap)
{
    int k = snprintf(dir_out, cap, "%s/snap", data_dir);
    if (k < 0 || (size_t)k >= cap)
        return INBOX_ERANGE;
    if (mkdir(dir_out, 0755) != 0 && errno != EEXIST)
        return -errno;
    DIR *d = opendir(dir_out);
    if (!d)
        return -errno;
    struct dirent *e;
    char path[SNAPSHOT_PATH_BYTES + 256];
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (!stale_name(e->d_name))
            continue;
        k = snprintf(path, sizeof(path), "%s/%s", dir_out, e->d_name);
        if (k < 0 || (size_t)k >= sizeof(path))
            continue;
        if (unlink(path) != 0 && errno != ENOENT)
            rc = -errno;
    }
    closedir(d);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t len, uint64_t off, size_t *got)
{
    *got = 0;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
        *got += (size_t)r;
    }
    return 0;
}

/* ---- membership as of an index ------------------------------------------ */

static int apply_conf_entries(const struct wal_entries *b,
                              struct raft_membership *m, uint64_t *last_conf)
{
    for (size_t i = 0; i < b->n; i++) {
        const struct wal_entry *we = &b->v[i];
        if (we->len < RAFT_LOG_ENTRY_PREFIX_BYTES)
            return INBOX_ECORRUPT;
        if (we->data[0] != RAFT_ENTRY_CONF)
            continue;
        struct raft_conf_change cc;
        int rc =
            raft_conf_change_decode(we->data + RAFT_LOG_ENTRY_PREFIX_BYTES,
                                    we->len - RAFT_LOG_ENTRY_PREFIX_BYTES, &cc);
        if (rc != 0)
            return INBOX_ECORRUPT;
        /* Raft applied this change when it was appended; one that did not
         * apply then (a duplicate) changes nothing now either. */
        (void)raft_membership_apply(m, &cc);
        if (last_conf)
            *last_conf = we->index;
    }
    return 0;
}

int snapshot_conf_scan(struct wal *wal, uint32_t shard, uint64_t lo,
                       uint64_t hi, struct raft_membership *m,
                       uint64_t *last_conf)
{
    struct wal_entries b;
    memset(&b, 0, sizeof(b));
    int rc = 0;
    while (lo <= hi && rc == 0) {
        uint64_t end = hi + 1u;
        if (end - lo > SNAP_MEMB_SCAN_ENTRIES)
            end = lo + SNAP_MEMB_SCAN_ENTRIES;
        rc = wal_entries(wal, shard, lo, end, SNAP_MEMB_SCAN_BYTES, &b);
        if (rc == 0 && b.n == 0)
            rc = INBOX_EUNAVAILABLE;
        if (rc == 0)
            rc = apply_conf_entries(&b, m, last_conf);
        lo += b.n;
    }
    wal_entries_free(&b);
    return rc;
}

int snapshot_membership_at(struct wal *wal, uint32_t shard, uint64_t release,
                           const struct raft_membership *m_release,
                           uint64_t index, struct raft_membership *out)
{
    *out = *m_release;
    return snapshot_conf_scan(wal, shard, release + 1u, index, out, NULL);
}

/* ---- leader: materialize and serve ----------------------------------------
 */

/* Stream the store's snapshot into fd; *bytes the file size. */
static int stream_to_file(struct store_snapshot *snap, int fd, uint64_t *bytes)
{
    *bytes = 0;
    for (;;) {
        const uint8_t *chunk;
        size_t len = 0;
        int rc = store_snapshot_next(snap, &chunk, &len);
        if (rc != 0)
            return rc;
        if (len == 0)
            return 0;
        rc = write_all(fd, chunk, len, *bytes);
        if (rc != 0)
            return rc;
        *bytes += len;
    }
}

int snapshot_file_make(struct store *store, struct wal *wal, uint32_t shard,
                       const char *dir, uint64_t release,
                       const struct raft_membership *m_release,
                       struct snapshot_file *out)
{
    snapshot_file_init(out);
    struct store_snapshot *snap;
    int rc = store_snapshot_begin(store, shard, &snap);
    if (rc != 0)
        return rc;
    uint64_t index = 0, term = 0;
    store_snapshot_meta(snap, &index, &term);
    /* The store's durable state covers the WAL's release point (a
     * checkpoint precedes every release), so the snapshot replaces at least
     * the released prefix. */
    if (index < release || index == 0 || term == 0) {
        rc = INBOX_EUNAVAILABLE;
        goto err_after_begin;
    }
    rc = snapshot_membership_at(wal, shard, release, m_release, index,
                                &out->meta.membership);
    if (rc != 0)
        goto err_after_begin;
    int k = snprintf(out->path, sizeof(out->path), "%s/shard-%u-%llu.snap", dir,
                     shard, (unsigned long long)index);
    if (k < 0 || (size_t)k >= sizeof(out->path)) {
        rc = INBOX_ERANGE;
        goto err_after_begin;
    }
    out->fd = open(out->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out->fd < 0) {
        rc = -errno;
        goto err_after_begin;
    }
    uint64_t bytes = 0;
    rc = stream_to_file(snap, out->fd, &bytes);
    if (rc != 0)
        goto err_after_open;
    store_snapshot_end(snap);
    /* The trailer alone makes a stream non-empty: raft never sees an
     * "empty data" snapshot from here. */
    assert(bytes >= SNAP_CHUNK_HEADER_BYTES);
    out->meta.index = index;
    out->meta.term = term;
    out->meta.data_bytes = bytes;
    return 0;

err_after_open:
    snapshot_file_drop(out);
err_after_begin:
    store_snapshot_end(snap);
    snapshot_file_init(out);
    return rc;
}

int snapshot_file_read(const struct snapshot_file *f, uint64_t offset,
                       uint8_t *buf, uint32_t max, uint32_t *len)
{
    *len = 0;
    if (f->fd < 0)
        return INBOX_EUNAVAILABLE;
    if (offset >= f->meta.data_bytes)
        return 0;
    uint64_t want = f->meta.data_bytes - offset;
    if (want > max)
        want = max;
    size_t got = 0;
    int rc = read_all(f->fd, buf, (size_t)want, offset, &got);
    if (rc != 0)
        return rc;
    if (got != want)
        return INBOX_ECORRUPT; /* the file shrank under us */
    *len = (uint32_t)got;
    return 0;
}

void snapshot_file_drop(struct snapshot_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        (void)unlink(f->path);
    }
    snapshot_file_init(f);
}

/* ---- follower: stage and restore ------------------------------------------
 */

int snapshot_stage_write(struct snapshot_stage *st, const char *dir,
                         uint32_t shard, const struct raft_snapshot_chunk *c)
{
    bool same =
        st->fd >= 0 && st->index == c->meta.index && st->term == c->meta.term;
    if (c->offset == 0 || !same) {
        if (c->offset != 0)
            return INBOX_EINVAL; /* raft feeds chunks in order from 0 */
        snapshot_stage_drop(st);
        int k = snprintf(st->path, sizeof(st->path), "%s/incoming-%u.part", dir,
                         shard);
        if (k < 0 || (size_t)k >= sizeof(st->path))
            return INBOX_ERANGE;
        st->fd = open(st->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (st->fd < 0)
            return -errno;
        st->index = c->meta.index;
        st->term = c->meta.term;
        st->bytes = 0;
    }
    if (c->offset != st->bytes)
        return INBOX_EINVAL;
    int rc = write_all(st->fd, c->data, c->len, c->offset);
    if (rc == 0)
        st->bytes += c->len;
    return rc;
}

/* Feed the staged file to an open restore, one store chunk at a time. */
static int feed_chunks(struct snapshot_stage *st, struct store_restore *r,
                       uint8_t *buf, size_t cap)
{
    uint64_t off = 0;
    while (off < st->bytes) {
        size_t got = 0;
        int rc = read_all(st->fd, buf, SNAP_CHUNK_HEADER_BYTES, off, &got);
        if (rc != 0)
            return rc;
        if (got != SNAP_CHUNK_HEADER_BYTES)
            return INBOX_ECORRUPT;
        uint32_t body = (uint32_t)buf[SNAP_CHUNK_BODY_LEN_AT] |
                        (uint32_t)buf[SNAP_CHUNK_BODY_LEN_AT + 1] << 8 |
                        (uint32_t)buf[SNAP_CHUNK_BODY_LEN_AT + 2] << 16 |
                        (uint32_t)buf[SNAP_CHUNK_BODY_LEN_AT + 3] << 24;
        /* A length read off the disk is checked before it is used. */
        if (body > cap - SNAP_CHUNK_HEADER_BYTES ||
            off + SNAP_CHUNK_HEADER_BYTES + body > st->bytes)
            return INBOX_ECORRUPT;
        rc = read_all(st->fd, buf + SNAP_CHUNK_HEADER_BYTES, body,
                      off + SNAP_CHUNK_HEADER_BYTES, &got);
        if (rc != 0)
            return rc;
        if (got != body)
            return INBOX_ECORRUPT;
        rc = store_restore_chunk(r, buf, SNAP_CHUNK_HEADER_BYTES + body);
        if (rc != 0)
            return rc;
        off += SNAP_CHUNK_HEADER_BYTES + body;
    }
    return 0;
}

int snapshot_stage_restore(struct snapshot_stage *st, struct store *store,
                           uint32_t shard, const struct raft_snapshot_meta *m)
{
    if (st->fd < 0 || st->index != m->index || st->term != m->term ||
        st->bytes != m->data_bytes)
        return INBOX_ECORRUPT;
    size_t cap = SNAP_CHUNK_HEADER_BYTES + INBOX_SNAPSHOT_CHUNK_BYTES_MAX;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return INBOX_ENOMEM;
    struct store_restore *r;
    int rc = store_restore_begin(store, shard, &r);
    if (rc != 0)
        goto out;
    rc = feed_chunks(st, r, buf, cap);
    if (rc != 0) {
        store_restore_abort(r);
        goto out;
    }
    rc = store_restore_finish(r);
    if (rc != 0)
        goto out;
    /* Pair with snapshot_file_make: the state the trailer carried is the
     * one raft's meta names. */
    struct store_shard_info info;
    rc = store_applied(store, shard, &info);
    if (rc == 0 &&
        (info.applied_index != m->index || info.applied_term != m->term))
        rc = INBOX_ECORRUPT;
out:
    free(buf);
    return rc;
}

void snapshot_stage_drop(struct snapshot_stage *st)
{
    if (st->fd >= 0) {
        close(st->fd);
        (void)unlink(st->path);
    }
    snapshot_stage_init(st);
}
