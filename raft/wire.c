/*
 * wire.c — encoding and decoding of Raft messages (format in wire.h).
 *
 * Both directions walk the same field order; the encoder first sizes the
 * message exactly (msg_bytes, which also refuses what the decoder would
 * refuse), the decoder reads through a bounded cursor that never moves past
 * the message's declared end and fails sticky on the first short read, so
 * every field access is bounds-checked in one place.
 */
#include "wire.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "inbox/endian.h"

#define FLAGS_KNOWN (RAFT_MSG_F_REJECT | RAFT_MSG_F_TRANSFER | RAFT_MSG_F_LAST)

static bool type_known(uint32_t type)
{
    return type >= RAFT_MSG_APPEND && type <= RAFT_MSG_TIMEOUT_NOW;
}

static bool has_snapshot_meta(uint32_t type)
{
    return type == RAFT_MSG_SNAPSHOT || type == RAFT_MSG_SNAPSHOT_RESP;
}

static bool has_chunk(uint32_t type)
{
    return type == RAFT_MSG_SNAPSHOT;
}

/* ---- encode ------------------------------------------------------------- */

/* Bytes of the entries section, or 0 with *ok false if it is not
 * encodable. */
static size_t entries_bytes(const struct raft_msg *m, bool *ok)
{
    if (m->entries_count > INBOX_RAFT_MSG_ENTRIES_MAX ||
        (m->entries_count > 0 && m->entries == NULL)) {
        *ok = false;
        return 0;
    }
    uint64_t data_bytes = 0;
    for (uint32_t i = 0; i < m->entries_count; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->type > RAFT_ENTRY_CONF || (e->len > 0 && e->data == NULL)) {
            *ok = false;
            return 0;
        }
        data_bytes += e->len;
    }
    if (data_bytes > INBOX_RAFT_MSG_BYTES_MAX) {
        *ok = false;
        return 0;
    }
    return (size_t)m->entries_count * RAFT_WIRE_ENTRY_HEADER_BYTES +
           (size_t)data_bytes;
}

size_t raft_wire_msg_bytes(const struct raft_msg *m)
{
    assert(m != NULL);
    if (!type_known(m->type) || (m->flags & ~FLAGS_KNOWN) != 0)
        return 0;
    bool ok = true;
    size_t n = RAFT_WIRE_HEADER_BYTES + entries_bytes(m, &ok);
    if (!ok)
        return 0;
    if (has_snapshot_meta(m->type)) {
        const struct raft_membership *mb = &m->snap.membership;
        if (mb->voters_count > INBOX_RAFT_VOTERS_MAX ||
            mb->learners_count > INBOX_RAFT_LEARNERS_MAX)
            return 0;
        n += 26u + 8u * ((size_t)mb->voters_count + mb->learners_count);
    }
    if (has_chunk(m->type)) {
        if (m->chunk_len > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX ||
            (m->chunk_len > 0 && m->chunk == NULL))
            return 0;
        n += 4u + m->chunk_len;
    }
    assert(n >= RAFT_WIRE_HEADER_BYTES && n <= RAFT_WIRE_MSG_BYTES_MAX);
    return n;
}

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    put_u16le(p, v);
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    put_u32le(p, v);
    return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    put_u64le(p, v);
    return p + 8;
}

static uint8_t *put_bytes(uint8_t *p, const uint8_t *src, uint32_t n)
{
    if (n > 0)
        memcpy(p, src, n);
    return p + n;
}

static uint8_t *put_header(uint8_t *p, const struct raft_msg *m, size_t n)
{
    p = put_u32(p, (uint32_t)n);
    p = put_u8(p, (uint8_t)RAFT_WIRE_VERSION);
    p = put_u8(p, (uint8_t)m->type);
    p = put_u16(p, (uint16_t)m->flags);
    const uint64_t fields[] = {
        m->group,    m->from,   m->to,      m->term,       m->index,
        m->log_term, m->commit, m->context, m->hint_index, m->hint_term};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        p = put_u64(p, fields[i]);
    return put_u32(p, m->entries_count);
}

static uint8_t *put_snapshot_meta(uint8_t *p,
                                  const struct raft_snapshot_meta *s)
{
    const struct raft_membership *mb = &s->membership;
    p = put_u64(p, s->index);
    p = put_u64(p, s->term);
    p = put_u64(p, s->data_bytes);
    p = put_u8(p, (uint8_t)mb->voters_count);
    p = put_u8(p, (uint8_t)mb->learners_count);
    for (uint32_t i = 0; i < mb->voters_count; i++)
        p = put_u64(p, mb->voters[i]);
    for (uint32_t i = 0; i < mb->learners_count; i++)
        p = put_u64(p, mb->learners[i]);
    return p;
}

size_t raft_wire_encode(const struct raft_msg *m, uint8_t *buf, size_t cap)
{
    assert(m != NULL && (buf != NULL || cap == 0));
    size_t n = raft_wire_msg_bytes(m);
    if (n == 0 || n > cap)
        return 0;
    uint8_t *p = put_header(buf, m, n);
    for (uint32_t i = 0; i < m->entries_count; i++) {
        const struct raft_entry *e = &m->entries[i];
        p = put_u64(p, e->term);
        p = put_u64(p, e->index);
        p = put_u8(p, (uint8_t)e->type);
        p = put_u32(p, e->len);
        p = put_bytes(p, e->data, e->len);
    }
    if (has_snapshot_meta(m->type))
        p = put_snapshot_meta(p, &m->snap);
    if (has_chunk(m->type)) {
        p = put_u32(p, m->chunk_len);
        p = put_bytes(p, m->chunk, m->chunk_len);
    }
    assert((size_t)(p - buf) == n); /* msg_bytes and encode agree */
    return n;
}

/* ---- decode ------------------------------------------------------------- */

/* A cursor over one message's bytes. The first read that would pass the
 * end sets bad and every later read returns zero, so callers check once. */
struct reader {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static const uint8_t *take(struct reader *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t get_u8(struct reader *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t get_u16(struct reader *r)
{
    const uint8_t *p = take(r, 2);
    return p ? get_u16le(p) : 0;
}

static uint32_t get_u32(struct reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get_u32le(p) : 0;
}

static uint64_t get_u64(struct reader *r)
{
    const uint8_t *p = take(r, 8);
    return p ? get_u64le(p) : 0;
}

/* n bytes of data in place; NULL for n == 0 (and on a short read). */
static const uint8_t *get_bytes(struct reader *r, uint32_t n)
{
    const uint8_t *p = take(r, n);
    return n > 0 ? p : NULL;
}

static bool get_header(struct reader *r, struct raft_msg *m)
{
    (void)get_u32(r); /* the length, checked by the caller */
    uint8_t version = get_u8(r);
    m->type = get_u8(r);
    m->flags = get_u16(r);
    uint64_t *fields[] = {&m->group,      &m->from,     &m->to,     &m->term,
                          &m->index,      &m->log_term, &m->commit, &m->context,
                          &m->hint_index, &m->hint_term};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        *fields[i] = get_u64(r);
    m->entries_count = get_u32(r);
    return !r->bad && version == RAFT_WIRE_VERSION && type_known(m->type) &&
           (m->flags & ~FLAGS_KNOWN) == 0 &&
           m->entries_count <= INBOX_RAFT_MSG_ENTRIES_MAX;
}

static bool get_entries(struct reader *r, struct raft_msg *m,
                        struct raft_entry *ents, size_t ents_cap)
{
    if (m->entries_count > ents_cap)
        return false;
    uint64_t data_bytes = 0;
    for (uint32_t i = 0; i < m->entries_count; i++) {
        struct raft_entry *e = &ents[i];
        e->term = get_u64(r);
        e->index = get_u64(r);
        e->type = get_u8(r);
        e->len = get_u32(r);
        data_bytes += e->len;
        /* Bound before touching the data: a huge len fails here, not in
         * take (which would refuse it too, but say less). */
        if (r->bad || e->type > RAFT_ENTRY_CONF ||
            data_bytes > INBOX_RAFT_MSG_BYTES_MAX)
            return false;
        e->data = get_bytes(r, e->len);
    }
    m->entries = m->entries_count > 0 ? ents : NULL;
    return !r->bad;
}

static bool get_snapshot_meta(struct reader *r, struct raft_snapshot_meta *s)
{
    struct raft_membership *mb = &s->membership;
    s->index = get_u64(r);
    s->term = get_u64(r);
    s->data_bytes = get_u64(r);
    mb->voters_count = get_u8(r);
    mb->learners_count = get_u8(r);
    if (r->bad || mb->voters_count > INBOX_RAFT_VOTERS_MAX ||
        mb->learners_count > INBOX_RAFT_LEARNERS_MAX)
        return false;
    for (uint32_t i = 0; i < mb->voters_count; i++)
        mb->voters[i] = get_u64(r);
    for (uint32_t i = 0; i < mb->learners_count; i++)
        mb->learners[i] = get_u64(r);
    return !r->bad;
}

static bool get_chunk(struct reader *r, struct raft_msg *m)
{
    m->chunk_len = get_u32(r);
    if (r->bad || m->chunk_len > INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX)
        return false;
    m->chunk = get_bytes(r, m->chunk_len);
    return !r->bad;
}

int raft_wire_peek(const uint8_t *buf, size_t len, size_t *msg_bytes)
{
    assert(msg_bytes != NULL && (buf != NULL || len == 0));
    if (len < RAFT_WIRE_PREFIX_BYTES) {
        *msg_bytes = RAFT_WIRE_PREFIX_BYTES;
        return 0;
    }
    uint32_t n = get_u32le(buf);
    if (n < RAFT_WIRE_HEADER_BYTES || n > RAFT_WIRE_MSG_BYTES_MAX)
        return INBOX_EPROTO;
    *msg_bytes = n;
    return 0;
}

int raft_wire_decode(const uint8_t *buf, size_t len, struct raft_msg *m,
                     struct raft_entry *ents, size_t ents_cap, size_t *consumed)
{
    assert(m != NULL && consumed != NULL && (buf != NULL || len == 0));
    assert(ents != NULL || ents_cap == 0);
    *consumed = 0;
    memset(m, 0, sizeof *m);
    size_t n = 0;
    if (raft_wire_peek(buf, len, &n) != 0 || len < RAFT_WIRE_PREFIX_BYTES ||
        n > len)
        return INBOX_EPROTO;
    /* From here on nothing past the declared end is visible. */
    struct reader r = {.p = buf, .left = n, .bad = false};
    if (!get_header(&r, m) || !get_entries(&r, m, ents, ents_cap))
        return INBOX_EPROTO;
    if (has_snapshot_meta(m->type) && !get_snapshot_meta(&r, &m->snap))
        return INBOX_EPROTO;
    if (has_chunk(m->type) && !get_chunk(&r, m))
        return INBOX_EPROTO;
    if (r.left != 0)
        return INBOX_EPROTO;             /* declared longer than its fields */
    assert(raft_wire_msg_bytes(m) == n); /* read back as it was written */
    *consumed = n;
    return 0;
}
