/*
 * members.c — read and write DATA/members (format and invariants in
 * members.h).
 */
#include "members.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "inbox/endian.h"
#include "durable_file.h"
#include "inbox/error.h"

_Static_assert(INBOX_RAFT_VOTERS_MAX == 7u && INBOX_RAFT_LEARNERS_MAX == 4u,
               "DATA/members version 1 has 7 voter and 4 learner slots");
_Static_assert(MEMBERS_MEMB_BYTES ==
                   8u + 8u * (INBOX_RAFT_VOTERS_MAX + INBOX_RAFT_LEARNERS_MAX),
               "membership block size");

static const uint8_t memb_magic[8] = {'I', 'N', 'B', 'X', 'M', 'E', 'M', 'B'};

#define PATH_BYTES_MAX 1100u

static bool id_in(const uint64_t *ids, uint32_t count, uint64_t id)
{
    for (uint32_t i = 0; i < count; i++)
        if (ids[i] == id)
            return true;
    return false;
}

bool members_same(const struct raft_membership *a,
                  const struct raft_membership *b)
{
    if (a->voters_count != b->voters_count ||
        a->learners_count != b->learners_count)
        return false;
    for (uint32_t i = 0; i < a->voters_count; i++)
        if (!id_in(b->voters, b->voters_count, a->voters[i]))
            return false;
    for (uint32_t i = 0; i < a->learners_count; i++)
        if (!id_in(b->learners, b->learners_count, a->learners[i]))
            return false;
    return true;
}

bool members_valid(const struct raft_membership *m)
{
    if (m->voters_count == 0 || m->voters_count > INBOX_RAFT_VOTERS_MAX ||
        m->learners_count > INBOX_RAFT_LEARNERS_MAX)
        return false;
    for (uint32_t i = 0; i < m->voters_count; i++)
        if (m->voters[i] == 0 || id_in(m->voters, i, m->voters[i]))
            return false;
    for (uint32_t i = 0; i < m->learners_count; i++)
        if (m->learners[i] == 0 || id_in(m->learners, i, m->learners[i]) ||
            id_in(m->voters, m->voters_count, m->learners[i]))
            return false;
    return true;
}

static bool rec_valid(const struct members_rec *r)
{
    return r->prev_index <= r->index && members_valid(&r->m) &&
           members_valid(&r->prev);
}

int members_effective(const struct members_rec *rec, uint64_t release,
                      const struct raft_membership *boot,
                      struct raft_membership *out, uint64_t *index)
{
    if (!rec->present) {
        *out = *boot;
        *index = 0;
        return 0;
    }
    if (rec->index <= release) {
        *out = rec->m;
        *index = rec->index;
        return 0;
    }
    if (rec->prev_index <= release) {
        *out = rec->prev;
        *index = rec->prev_index;
        return 0;
    }
    return INBOX_ECORRUPT;
}

/* ---- encoding ------------------------------------------------------------ */

static void memb_encode(const struct raft_membership *m, uint8_t *b)
{
    memset(b, 0, MEMBERS_MEMB_BYTES);
    put_u32le(b, m->voters_count);
    put_u32le(b + 4, m->learners_count);
    for (uint32_t i = 0; i < m->voters_count; i++)
        put_u64le(b + 8 + 8u * i, m->voters[i]);
    for (uint32_t i = 0; i < m->learners_count; i++)
        put_u64le(b + 8 + 8u * (INBOX_RAFT_VOTERS_MAX + i), m->learners[i]);
}

static bool memb_decode(const uint8_t *b, struct raft_membership *m)
{
    memset(m, 0, sizeof(*m));
    m->voters_count = get_u32le(b);
    m->learners_count = get_u32le(b + 4);
    if (m->voters_count > INBOX_RAFT_VOTERS_MAX ||
        m->learners_count > INBOX_RAFT_LEARNERS_MAX)
        return false;
    for (uint32_t i = 0; i < INBOX_RAFT_VOTERS_MAX; i++) {
        uint64_t id = get_u64le(b + 8 + 8u * i);
        if (i < m->voters_count)
            m->voters[i] = id;
        else if (id != 0)
            return false; /* unused slots are zero */
    }
    for (uint32_t i = 0; i < INBOX_RAFT_LEARNERS_MAX; i++) {
        uint64_t id = get_u64le(b + 8 + 8u * (INBOX_RAFT_VOTERS_MAX + i));
        if (i < m->learners_count)
            m->learners[i] = id;
        else if (id != 0)
            return false;
    }
    return true;
}

static void rec_encode(uint32_t shard, const struct members_rec *r, uint8_t *b)
{
    assert(r->present && rec_valid(r));
    put_u32le(b, shard);
    put_u32le(b + 4, 0);
    put_u64le(b + 8, r->index);
    put_u64le(b + 16, r->prev_index);
    memb_encode(&r->m, b + 24);
    memb_encode(&r->prev, b + 24 + MEMBERS_MEMB_BYTES);
}

__attribute__((format(printf, 3, 4))) static int corrupt(char *err, size_t cap,
                                                         const char *f, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, f);
        (void)vsnprintf(err, cap, f, ap);
        va_end(ap);
    }
    return INBOX_ECORRUPT;
}

static int decode(const uint8_t *b, size_t len, uint32_t shard_count,
                  struct members_rec *recs, char *err, size_t cap)
{
    if (len < MEMBERS_HEADER_BYTES + MEMBERS_TRAILER_BYTES ||
        memcmp(b, memb_magic, 8) != 0)
        return corrupt(err, cap, "bad magic or size (%zu bytes)", len);
    uint64_t sum = get_u64le(b + len - MEMBERS_TRAILER_BYTES);
    if (sum != XXH3_64bits(b, len - MEMBERS_TRAILER_BYTES))
        return corrupt(err, cap, "checksum mismatch");
    if (get_u32le(b + 8) != MEMBERS_VERSION) {
        if (err && cap)
            (void)snprintf(err, cap, "format version %u, expected %u",
                           get_u32le(b + 8), MEMBERS_VERSION);
        return INBOX_EFORMAT;
    }
    uint32_t sc = get_u32le(b + 12), count = get_u32le(b + 16);
    if (sc != shard_count)
        return corrupt(err, cap, "written for %u shards, node has %u", sc,
                       shard_count);
    if (count > shard_count || get_u32le(b + 20) != 0 ||
        len != MEMBERS_HEADER_BYTES + (size_t)count * MEMBERS_REC_BYTES +
                   MEMBERS_TRAILER_BYTES)
        return corrupt(err, cap, "record count %u does not match size %zu",
                       count, len);
    int64_t last = -1;
    for (uint32_t k = 0; k < count; k++) {
        const uint8_t *p =
            b + MEMBERS_HEADER_BYTES + (size_t)k * MEMBERS_REC_BYTES;
        uint32_t shard = get_u32le(p);
        if (shard >= shard_count || (int64_t)shard <= last ||
            get_u32le(p + 4) != 0)
            return corrupt(err, cap, "record %u: bad shard %u", k, shard);
        last = shard;
        struct members_rec *r = &recs[shard];
        r->present = true;
        r->index = get_u64le(p + 8);
        r->prev_index = get_u64le(p + 16);
        if (!memb_decode(p + 24, &r->m) ||
            !memb_decode(p + 24 + MEMBERS_MEMB_BYTES, &r->prev) ||
            !rec_valid(r))
            return corrupt(err, cap, "record of shard %u is malformed", shard);
    }
    return 0;
}

static int path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    return k < 0 || (size_t)k >= cap ? INBOX_ERANGE : 0;
}

int members_read(const char *data_dir, uint32_t shard_count,
                 struct members_rec *recs, char *errmsg, size_t errmsg_bytes)
{
    memset(recs, 0, (size_t)shard_count * sizeof(*recs));
    char path[PATH_BYTES_MAX];
    int rc = path_join(path, sizeof(path), data_dir, MEMBERS_FILE);
    if (rc != 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    /* The size read off the disk is checked before anything is allocated
     * for it. */
    size_t max = MEMBERS_HEADER_BYTES +
                 (size_t)shard_count * MEMBERS_REC_BYTES +
                 MEMBERS_TRAILER_BYTES;
    if (st.st_size < 0 || (uint64_t)st.st_size > max) {
        close(fd);
        return corrupt(errmsg, errmsg_bytes, "size %lld exceeds %zu",
                       (long long)st.st_size, max);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *b = malloc(len ? len : 1u);
    if (!b) {
        close(fd);
        return INBOX_ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, b + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len)
        rc = corrupt(errmsg, errmsg_bytes, "short read");
    else
        rc = decode(b, len, shard_count, recs, errmsg, errmsg_bytes);
    free(b);
    if (rc != 0)
        memset(recs, 0, (size_t)shard_count * sizeof(*recs));
    return rc;
}

int members_write(const char *data_dir, uint32_t shard_count,
                  const struct members_rec *recs)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < shard_count; i++)
        count += recs[i].present;
    size_t len = MEMBERS_HEADER_BYTES + (size_t)count * MEMBERS_REC_BYTES +
                 MEMBERS_TRAILER_BYTES;
    uint8_t *b = calloc(1, len);
    if (!b)
        return INBOX_ENOMEM;
    memcpy(b, memb_magic, 8);
    put_u32le(b + 8, MEMBERS_VERSION);
    put_u32le(b + 12, shard_count);
    put_u32le(b + 16, count);
    uint8_t *p = b + MEMBERS_HEADER_BYTES;
    for (uint32_t i = 0; i < shard_count; i++) {
        if (!recs[i].present)
            continue;
        rec_encode(i, &recs[i], p);
        p += MEMBERS_REC_BYTES;
    }
    put_u64le(p, XXH3_64bits(b, len - MEMBERS_TRAILER_BYTES));
#ifndef NDEBUG
    {
        /* Pair with members_read: what goes to disk decodes to recs. */
        struct members_rec *chk = calloc(shard_count, sizeof(*chk));
        if (chk) {
            assert(decode(b, len, shard_count, chk, NULL, 0) == 0);
            for (uint32_t i = 0; i < shard_count; i++)
                assert(chk[i].present == recs[i].present &&
                       (!chk[i].present || chk[i].index == recs[i].index));
            free(chk);
        }
    }
#endif
    int rc = durable_file_replace(data_dir, MEMBERS_FILE, b, len);
    free(b);
    return rc;
}
