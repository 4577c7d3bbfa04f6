/*
 * test_wire.c — the Raft wire encoding (raft/wire.h): every message type
 * round trips, batches decode in sequence, and everything malformed —
 * each truncation, lengths that disagree, counts over their bounds, unknown
 * types, versions and flags — is refused with INBOX_EPROTO without reading
 * outside the input (buffers are allocated to the exact size so ASan sees
 * any over-read). A seeded random round trip closes; a failure prints its
 * seed and iteration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inbox/endian.h"
#include "wire.h"

static struct raft_entry ents[INBOX_RAFT_MSG_ENTRIES_MAX];
static struct raft_entry src_ents[INBOX_RAFT_MSG_ENTRIES_MAX];

/* Offsets in the fixed part (wire.h). */
#define OFF_VERSION 4u
#define OFF_TYPE 5u
#define OFF_FLAGS 6u
#define OFF_ENTRIES_COUNT 88u

static const uint8_t payload[] = "the quick brown fox jumps over the lazy dog";

/* A message of `type` with every field set to something distinct, three
 * entries (one conf, one empty), full snapshot meta and a chunk. */
static void sample_msg(struct raft_msg *m, uint32_t type)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->flags = RAFT_MSG_F_REJECT | RAFT_MSG_F_LAST;
    m->group = 0x0102030405060708ull;
    m->from = 3;
    m->to = 0xfffffffffffffffeull;
    m->term = 77;
    m->index = 1000;
    m->log_term = 76;
    m->commit = 999;
    m->context = 0xdeadbeefcafef00dull;
    m->hint_index = 500;
    m->hint_term = 70;
    src_ents[0] = (struct raft_entry){77, 1001, RAFT_ENTRY_NORMAL, 10, payload};
    src_ents[1] = (struct raft_entry){77, 1002, RAFT_ENTRY_CONF, 12, payload};
    src_ents[2] = (struct raft_entry){77, 1003, RAFT_ENTRY_NORMAL, 0, NULL};
    m->entries = src_ents;
    m->entries_count = 3;
    m->snap.index = 900;
    m->snap.term = 60;
    m->snap.data_bytes = 123456;
    m->snap.membership.voters_count = 3;
    m->snap.membership.learners_count = 2;
    for (uint32_t i = 0; i < 3; i++)
        m->snap.membership.voters[i] = 10 + i;
    for (uint32_t i = 0; i < 2; i++)
        m->snap.membership.learners[i] = 20 + i;
    m->chunk = payload;
    m->chunk_len = (uint32_t)sizeof payload;
}

static void assert_entries_equal(const struct raft_msg *a,
                                 const struct raft_msg *b)
{
    assert_int_equal(a->entries_count, b->entries_count);
    for (uint32_t i = 0; i < a->entries_count; i++) {
        const struct raft_entry *x = &a->entries[i], *y = &b->entries[i];
        assert_int_equal(x->term, y->term);
        assert_int_equal(x->index, y->index);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->len, y->len);
        if (x->len > 0)
            assert_memory_equal(x->data, y->data, x->len);
        else
            assert_null(y->data);
    }
}

/* got is what decode made of want: equal in every field the type carries,
 * zero in the others. */
static void assert_msg_equal(const struct raft_msg *want,
                             const struct raft_msg *got)
{
    assert_int_equal(want->type, got->type);
    assert_int_equal(want->flags, got->flags);
    assert_int_equal(want->group, got->group);
    assert_int_equal(want->from, got->from);
    assert_int_equal(want->to, got->to);
    assert_int_equal(want->term, got->term);
    assert_int_equal(want->index, got->index);
    assert_int_equal(want->log_term, got->log_term);
    assert_int_equal(want->commit, got->commit);
    assert_int_equal(want->context, got->context);
    assert_int_equal(want->hint_index, got->hint_index);
    assert_int_equal(want->hint_term, got->hint_term);
    assert_entries_equal(want, got);
    if (want->type == RAFT_MSG_SNAPSHOT ||
        want->type == RAFT_MSG_SNAPSHOT_RESP) {
        const struct raft_snapshot_meta *x = &want->snap, *y = &got->snap;
        assert_int_equal(x->index, y->index);
        assert_int_equal(x->term, y->term);
        assert_int_equal(x->data_bytes, y->data_bytes);
        assert_int_equal(x->membership.voters_count,
                         y->membership.voters_count);
        assert_int_equal(x->membership.learners_count,
                         y->membership.learners_count);
        assert_memory_equal(x->membership.voters, y->membership.voters,
                            8u * x->membership.voters_count);
        assert_memory_equal(x->membership.learners, y->membership.learners,
                            8u * x->membership.learners_count);
    } else {
        static const struct raft_snapshot_meta zero;
        assert_memory_equal(&got->snap, &zero, sizeof zero);
    }
    if (want->type == RAFT_MSG_SNAPSHOT) {
        assert_int_equal(want->chunk_len, got->chunk_len);
        if (want->chunk_len > 0)
            assert_memory_equal(want->chunk, got->chunk, want->chunk_len);
        else
            assert_null(got->chunk);
    } else {
        assert_int_equal(got->chunk_len, 0);
        assert_null(got->chunk);
    }
}

/* Encode m into a fresh buffer of exactly its size. */
static uint8_t *encode_exact(const struct raft_msg *m, size_t *n)
{
    *n = raft_wire_msg_bytes(m);
    assert_true(*n >= RAFT_WIRE_HEADER_BYTES);
    uint8_t *buf = malloc(*n);
    assert_non_null(buf);
    assert_int_equal(raft_wire_encode(m, buf, *n), *n);
    assert_int_equal(get_u32le(buf), *n);
    return buf;
}

static int decode(const uint8_t *buf, size_t len, struct raft_msg *m)
{
    size_t used = 12345;
    int rc =
        raft_wire_decode(buf, len, m, ents, INBOX_RAFT_MSG_ENTRIES_MAX, &used);
    if (rc == 0)
        assert_int_equal(used, get_u32le(buf));
    else
        assert_int_equal(used, 0);
    return rc;
}

/* Decode buf (exactly one message), compare with want, re-encode and
 * compare bytes (the encoding is canonical). */
static void round_trip(const struct raft_msg *want, const uint8_t *buf,
                       size_t n)
{
    struct raft_msg got;
    assert_int_equal(decode(buf, n, &got), 0);
    assert_msg_equal(want, &got);
    /* Zero copy: data points into the input. */
    for (uint32_t i = 0; i < got.entries_count; i++)
        if (got.entries[i].len > 0)
            assert_true(got.entries[i].data > buf &&
                        got.entries[i].data < buf + n);
    if (got.chunk_len > 0)
        assert_true(got.chunk > buf && got.chunk + got.chunk_len == buf + n);
    uint8_t *again = malloc(n);
    assert_non_null(again);
    assert_int_equal(raft_wire_encode(&got, again, n), n);
    assert_memory_equal(again, buf, n);
    free(again);
}

/* Decode buf[0..len) from a copy of exactly len bytes (so ASan catches any
 * read past it); must be refused. */
static void assert_refused(const uint8_t *buf, size_t len)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, buf, len);
    struct raft_msg m;
    assert_int_equal(decode(len > 0 ? copy : NULL, len, &m), INBOX_EPROTO);
    free(copy);
}

/* ---- round trips -------------------------------------------------------- */

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (uint32_t t = RAFT_MSG_APPEND; t <= RAFT_MSG_TIMEOUT_NOW; t++) {
        struct raft_msg m;
        sample_msg(&m, t);
        size_t n = 0;
        uint8_t *buf = encode_exact(&m, &n);
        size_t want = RAFT_WIRE_HEADER_BYTES + 3u * 21u + 10u + 12u;
        if (t == RAFT_MSG_SNAPSHOT || t == RAFT_MSG_SNAPSHOT_RESP)
            want += 26u + 5u * 8u;
        if (t == RAFT_MSG_SNAPSHOT)
            want += 4u + sizeof payload;
        assert_int_equal(n, want);
        assert_int_equal(buf[OFF_VERSION], RAFT_WIRE_VERSION);
        assert_int_equal(buf[OFF_TYPE], t);
        round_trip(&m, buf, n);
        free(buf);
    }
}

/* The smallest message: no entries, nothing type-specific. */
static void test_round_trip_empty(void **state)
{
    (void)state;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_HEARTBEAT;
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    assert_int_equal(n, RAFT_WIRE_HEADER_BYTES);
    round_trip(&m, buf, n);
    free(buf);
    /* A snapshot with no members and no chunk data. */
    m.type = RAFT_MSG_SNAPSHOT;
    buf = encode_exact(&m, &n);
    assert_int_equal(n, RAFT_WIRE_HEADER_BYTES + 26u + 4u);
    round_trip(&m, buf, n);
    free(buf);
}

/* Layout spot checks against the byte-by-byte description in wire.h. */
static void test_layout(void **state)
{
    (void)state;
    struct raft_msg m;
    sample_msg(&m, RAFT_MSG_APPEND);
    m.flags = RAFT_MSG_F_TRANSFER;
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    assert_int_equal(get_u16le(buf + OFF_FLAGS), RAFT_MSG_F_TRANSFER);
    assert_int_equal(get_u64le(buf + 8), m.group);
    assert_int_equal(get_u64le(buf + 80), m.hint_term);
    assert_int_equal(get_u32le(buf + OFF_ENTRIES_COUNT), 3);
    const uint8_t *e1 = buf + RAFT_WIRE_HEADER_BYTES + 21u + 10u;
    assert_int_equal(get_u64le(e1 + 8), 1002);
    assert_int_equal(e1[16], RAFT_ENTRY_CONF);
    assert_int_equal(get_u32le(e1 + 17), 12);
    assert_memory_equal(e1 + 21, payload, 12);
    free(buf);
}

static void test_batch(void **state)
{
    (void)state;
    static const uint32_t types[] = {
        RAFT_MSG_APPEND,    RAFT_MSG_HEARTBEAT,     RAFT_MSG_SNAPSHOT,
        RAFT_MSG_VOTE_RESP, RAFT_MSG_SNAPSHOT_RESP, RAFT_MSG_APPEND,
    };
    enum { COUNT = sizeof types / sizeof types[0] };
    struct raft_msg msgs[COUNT];
    size_t total = 0;
    for (size_t i = 0; i < COUNT; i++) {
        sample_msg(&msgs[i], types[i]);
        msgs[i].term = 100 + i;
        total += raft_wire_msg_bytes(&msgs[i]);
    }
    uint8_t *batch = malloc(total);
    assert_non_null(batch);
    size_t off = 0;
    for (size_t i = 0; i < COUNT; i++) {
        size_t n = raft_wire_encode(&msgs[i], batch + off, total - off);
        assert_int_not_equal(n, 0);
        off += n;
    }
    assert_int_equal(off, total);
    off = 0;
    for (size_t i = 0; i < COUNT; i++) {
        size_t want = 0, used = 0;
        assert_int_equal(raft_wire_peek(batch + off, total - off, &want), 0);
        assert_int_equal(want, raft_wire_msg_bytes(&msgs[i]));
        struct raft_msg got;
        assert_int_equal(raft_wire_decode(batch + off, total - off, &got, ents,
                                          INBOX_RAFT_MSG_ENTRIES_MAX, &used),
                         0);
        assert_int_equal(used, want);
        assert_msg_equal(&msgs[i], &got);
        off += used;
    }
    assert_int_equal(off, total);
    free(batch);
}

static void test_peek(void **state)
{
    (void)state;
    uint8_t b[8] = {0};
    size_t n = 0;
    for (size_t len = 0; len < RAFT_WIRE_PREFIX_BYTES; len++) {
        assert_int_equal(raft_wire_peek(b, len, &n), 0);
        assert_int_equal(n, RAFT_WIRE_PREFIX_BYTES);
    }
    put_u32le(b, RAFT_WIRE_HEADER_BYTES);
    assert_int_equal(raft_wire_peek(b, 4, &n), 0);
    assert_int_equal(n, RAFT_WIRE_HEADER_BYTES);
    put_u32le(b, RAFT_WIRE_MSG_BYTES_MAX);
    assert_int_equal(raft_wire_peek(b, 8, &n), 0);
    assert_int_equal(n, RAFT_WIRE_MSG_BYTES_MAX);
    static const uint32_t bad[] = {0,
                                   3,
                                   4,
                                   RAFT_WIRE_HEADER_BYTES - 1u,
                                   RAFT_WIRE_MSG_BYTES_MAX + 1u,
                                   UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put_u32le(b, bad[i]);
        assert_int_equal(raft_wire_peek(b, 4, &n), INBOX_EPROTO);
    }
}

/* ---- malformed input ---------------------------------------------------- */

/* Every proper prefix is refused, as given (declared length past the end)
 * and with the length field rewritten to agree with the prefix (then the
 * fields run past the declared end). */
static void test_every_truncation_refused(void **state)
{
    (void)state;
    static const uint32_t types[] = {RAFT_MSG_APPEND, RAFT_MSG_SNAPSHOT,
                                     RAFT_MSG_SNAPSHOT_RESP};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        struct raft_msg m;
        sample_msg(&m, types[t]);
        size_t n = 0;
        uint8_t *buf = encode_exact(&m, &n);
        uint8_t *patched = malloc(n);
        assert_non_null(patched);
        for (size_t len = 0; len < n; len++) {
            assert_refused(buf, len);
            if (len >= RAFT_WIRE_PREFIX_BYTES) {
                memcpy(patched, buf, len);
                put_u32le(patched, (uint32_t)len);
                assert_refused(patched, len);
            }
        }
        free(patched);
        free(buf);
    }
}

static void test_length_disagrees(void **state)
{
    (void)state;
    struct raft_msg m;
    sample_msg(&m, RAFT_MSG_SNAPSHOT);
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    uint8_t *longer = calloc(1, n + 1);
    assert_non_null(longer);
    memcpy(longer, buf, n);
    /* Declared one longer than the fields: a stray byte inside. */
    put_u32le(longer, (uint32_t)(n + 1));
    assert_refused(longer, n + 1);
    /* Declared one shorter: the chunk runs past the end. */
    put_u32le(longer, (uint32_t)(n - 1));
    assert_refused(longer, n + 1);
    /* Right length with a trailing byte after it: fine, consumed is n. */
    put_u32le(longer, (uint32_t)n);
    struct raft_msg got;
    size_t used = 0;
    assert_int_equal(raft_wire_decode(longer, n + 1, &got, ents,
                                      INBOX_RAFT_MSG_ENTRIES_MAX, &used),
                     0);
    assert_int_equal(used, n);
    /* Declared lengths that can never be right. */
    static const uint32_t bad[] = {0, 1, RAFT_WIRE_HEADER_BYTES - 1u,
                                   RAFT_WIRE_MSG_BYTES_MAX + 1u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(longer, buf, n);
        put_u32le(longer, bad[i]);
        assert_refused(longer, n + 1);
    }
    /* A chunk length that disagrees with the total. */
    memcpy(longer, buf, n);
    put_u32le(longer + n - sizeof payload - 4u, (uint32_t)sizeof payload + 1u);
    assert_refused(longer, n);
    free(longer);
    free(buf);
}

static void test_entries_count_bounds(void **state)
{
    (void)state;
    struct raft_msg m, got;
    sample_msg(&m, RAFT_MSG_APPEND);
    size_t n = 0, used = 0;
    uint8_t *buf = encode_exact(&m, &n);
    /* Three entries, room for two: refused, and ents[2] is not written. */
    struct raft_entry small[3];
    memset(small, 0xaa, sizeof small);
    assert_int_equal(raft_wire_decode(buf, n, &got, small, 2, &used),
                     INBOX_EPROTO);
    assert_int_equal(used, 0);
    uint8_t canary[sizeof small[2]];
    memset(canary, 0xaa, sizeof canary);
    assert_memory_equal(&small[2], canary, sizeof canary);
    assert_int_equal(raft_wire_decode(buf, n, &got, small, 3, &used), 0);
    /* No entries and no room: fine. */
    struct raft_msg hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT;
    uint8_t b[RAFT_WIRE_HEADER_BYTES];
    assert_int_equal(raft_wire_encode(&hb, b, sizeof b), sizeof b);
    assert_int_equal(raft_wire_decode(b, sizeof b, &got, NULL, 0, &used), 0);
    assert_null(got.entries);
    /* Counts over the protocol bound, or simply larger than the message. */
    static const uint32_t bad[] = {4, INBOX_RAFT_MSG_ENTRIES_MAX,
                                   INBOX_RAFT_MSG_ENTRIES_MAX + 1u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put_u32le(buf + OFF_ENTRIES_COUNT, bad[i]);
        assert_refused(buf, n);
    }
    free(buf);
}

/* A message over the bound on entry data, built by hand since the encoder
 * refuses to write one. */
static void test_entry_data_bound(void **state)
{
    (void)state;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND;
    uint8_t *data = calloc(1, INBOX_RAFT_MSG_BYTES_MAX + 1u);
    assert_non_null(data);
    src_ents[0] = (struct raft_entry){1, 1, 0, INBOX_RAFT_MSG_BYTES_MAX, data};
    src_ents[1] = (struct raft_entry){1, 2, 0, 1, data};
    m.entries = src_ents;
    m.entries_count = 2;
    assert_int_equal(raft_wire_msg_bytes(&m), 0); /* over the bound */
    src_ents[1].len = 0;
    src_ents[1].data = NULL;
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n); /* exactly at the bound: fine */
    round_trip(&m, buf, n);
    uint8_t *over = malloc(n + 1);
    assert_non_null(over);
    memcpy(over, buf, n);
    over[n] = 0x55;
    put_u32le(over, (uint32_t)(n + 1));
    put_u32le(over + n - 4, 1); /* the last entry's len: 0 -> 1 */
    assert_refused(over, n + 1);
    /* A single entry claiming more than the whole message. */
    memcpy(over, buf, n);
    put_u32le(over + RAFT_WIRE_HEADER_BYTES + 17u, UINT32_MAX);
    assert_refused(over, n);
    free(over);
    free(buf);
    free(data);
}

/* One byte at `off` set to each of `vals`: refused. */
static void refuse_byte(const uint8_t *buf, size_t n, size_t off,
                        const uint8_t *vals, size_t count)
{
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    for (size_t i = 0; i < count; i++) {
        memcpy(copy, buf, n);
        copy[off] = vals[i];
        assert_refused(copy, n);
    }
    free(copy);
}

static void test_bad_type_version_flags(void **state)
{
    (void)state;
    struct raft_msg m;
    sample_msg(&m, RAFT_MSG_SNAPSHOT);
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    static const uint8_t types[] = {0, RAFT_MSG_TIMEOUT_NOW + 1u, 0x80, 0xff};
    refuse_byte(buf, n, OFF_TYPE, types, sizeof types);
    static const uint8_t versions[] = {0, 2, 0xff};
    refuse_byte(buf, n, OFF_VERSION, versions, sizeof versions);
    /* Reserved flag bits, low byte and high byte. */
    static const uint8_t flags_lo[] = {0x08, 0x10, 0x80, 0xff};
    refuse_byte(buf, n, OFF_FLAGS, flags_lo, sizeof flags_lo);
    static const uint8_t flags_hi[] = {0x01, 0x80};
    refuse_byte(buf, n, OFF_FLAGS + 1u, flags_hi, sizeof flags_hi);
    /* Entry type other than 0 or 1. */
    static const uint8_t etypes[] = {2, 0xff};
    refuse_byte(buf, n, RAFT_WIRE_HEADER_BYTES + 16u, etypes, sizeof etypes);
    /* Member counts over their bounds. */
    size_t meta = RAFT_WIRE_HEADER_BYTES + 3u * 21u + 10u + 12u;
    static const uint8_t voters[] = {INBOX_RAFT_VOTERS_MAX + 1u, 0xff};
    refuse_byte(buf, n, meta + 24u, voters, sizeof voters);
    static const uint8_t learners[] = {INBOX_RAFT_LEARNERS_MAX + 1u, 0xff};
    refuse_byte(buf, n, meta + 25u, learners, sizeof learners);
    free(buf);
    /* Every defined flag is accepted on its own. */
    const uint32_t ok_flags[] = {RAFT_MSG_F_REJECT, RAFT_MSG_F_TRANSFER,
                                 RAFT_MSG_F_LAST, 7u};
    for (size_t i = 0; i < sizeof ok_flags / sizeof ok_flags[0]; i++) {
        m.flags = ok_flags[i];
        buf = encode_exact(&m, &n);
        round_trip(&m, buf, n);
        free(buf);
    }
}

static void test_chunk_bound(void **state)
{
    (void)state;
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_SNAPSHOT;
    m.flags = RAFT_MSG_F_LAST;
    uint8_t *data = malloc(INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 1u);
    assert_non_null(data);
    for (size_t i = 0; i <= INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX; i++)
        data[i] = (uint8_t)(i * 31u);
    m.chunk = data;
    m.chunk_len = INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 1u;
    assert_int_equal(raft_wire_msg_bytes(&m), 0);
    m.chunk_len = INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX;
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    round_trip(&m, buf, n);
    /* The same bytes plus one, length fields made to agree. */
    uint8_t *over = malloc(n + 1);
    assert_non_null(over);
    memcpy(over, buf, n);
    over[n] = 1;
    put_u32le(over, (uint32_t)(n + 1));
    put_u32le(over + RAFT_WIRE_HEADER_BYTES + 26u,
              INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 1u);
    assert_refused(over, n + 1);
    free(over);
    free(buf);
    free(data);
}

/* ---- the encoder -------------------------------------------------------- */

static void test_encoder_refuses(void **state)
{
    (void)state;
    struct raft_msg m;
    uint8_t buf[1024];
    /* Each spoiled sample: msg_bytes and encode both say 0. */
    for (int k = 0; k < 10; k++) {
        sample_msg(&m, RAFT_MSG_SNAPSHOT);
        switch (k) {
        case 0:
            m.type = 0;
            break;
        case 1:
            m.type = RAFT_MSG_TIMEOUT_NOW + 1u;
            break;
        case 2:
            m.flags = 8;
            break;
        case 3:
            m.entries = NULL;
            break;
        case 4:
            m.entries_count = INBOX_RAFT_MSG_ENTRIES_MAX + 1u;
            break;
        case 5:
            src_ents[1].type = 2;
            break;
        case 6:
            src_ents[0].data = NULL;
            break;
        case 7:
            m.snap.membership.voters_count = INBOX_RAFT_VOTERS_MAX + 1u;
            break;
        case 8:
            m.snap.membership.learners_count = INBOX_RAFT_LEARNERS_MAX + 1u;
            break;
        case 9:
            m.chunk = NULL;
            break;
        }
        assert_int_equal(raft_wire_msg_bytes(&m), 0);
        assert_int_equal(raft_wire_encode(&m, buf, sizeof buf), 0);
    }
    /* Fields a type does not carry are ignored, not refused. */
    sample_msg(&m, RAFT_MSG_APPEND);
    m.snap.membership.voters_count = 200;
    m.chunk = NULL;
    assert_int_not_equal(raft_wire_msg_bytes(&m), 0);
    /* Too small a buffer: 0, and nothing written. */
    sample_msg(&m, RAFT_MSG_SNAPSHOT);
    size_t n = raft_wire_msg_bytes(&m);
    assert_true(n < sizeof buf);
    memset(buf, 0x5a, sizeof buf);
    assert_int_equal(raft_wire_encode(&m, buf, n - 1), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0x5a);
    assert_int_equal(raft_wire_encode(&m, buf, n), n);
    for (size_t i = n; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0x5a);
}

/* ---- max sizes ---------------------------------------------------------- */

/* Everything at its bound at once is exactly RAFT_WIRE_MSG_BYTES_MAX. */
static void test_max_sizes(void **state)
{
    (void)state;
    uint8_t *data = malloc(INBOX_RAFT_MSG_BYTES_MAX);
    assert_non_null(data);
    for (size_t i = 0; i < INBOX_RAFT_MSG_BYTES_MAX; i++)
        data[i] = (uint8_t)(i ^ (i >> 8));
    uint32_t per = INBOX_RAFT_MSG_BYTES_MAX / INBOX_RAFT_MSG_ENTRIES_MAX;
    for (uint32_t i = 0; i < INBOX_RAFT_MSG_ENTRIES_MAX; i++)
        src_ents[i] = (struct raft_entry){UINT64_MAX, 5000u + i, i & 1u, per,
                                          data + (size_t)i * per};
    struct raft_msg m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_SNAPSHOT;
    m.flags = 7;
    m.term = UINT64_MAX;
    m.entries = src_ents;
    m.entries_count = INBOX_RAFT_MSG_ENTRIES_MAX;
    struct raft_membership *mb = &m.snap.membership;
    mb->voters_count = INBOX_RAFT_VOTERS_MAX;
    mb->learners_count = INBOX_RAFT_LEARNERS_MAX;
    for (uint32_t i = 0; i < INBOX_RAFT_VOTERS_MAX; i++)
        mb->voters[i] = UINT64_MAX - i;
    for (uint32_t i = 0; i < INBOX_RAFT_LEARNERS_MAX; i++)
        mb->learners[i] = 100u + i;
    m.snap.data_bytes = UINT64_MAX;
    m.chunk = data;
    m.chunk_len = INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX;
    size_t n = 0;
    uint8_t *buf = encode_exact(&m, &n);
    assert_int_equal(n, RAFT_WIRE_MSG_BYTES_MAX);
    round_trip(&m, buf, n);
    free(buf);
    /* A full APPEND, as raft would send it at its caps. */
    m.type = RAFT_MSG_APPEND;
    m.flags = 0;
    buf = encode_exact(&m, &n);
    assert_int_equal(n, RAFT_WIRE_HEADER_BYTES +
                            INBOX_RAFT_MSG_ENTRIES_MAX * 21u +
                            INBOX_RAFT_MSG_BYTES_MAX);
    round_trip(&m, buf, n);
    free(buf);
    free(data);
}

/* ---- randomized --------------------------------------------------------- */

static uint64_t rng;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A random field value: often small, sometimes extreme. */
static uint64_t rand_u64(void)
{
    switch (next() % 4) {
    case 0:
        return 0;
    case 1:
        return next() % 100;
    case 2:
        return UINT64_MAX - next() % 3;
    default:
        return next();
    }
}

static uint8_t rand_data[4096];

static void random_msg(struct raft_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = RAFT_MSG_APPEND + (uint32_t)(next() % RAFT_MSG_TIMEOUT_NOW);
    m->flags = (uint32_t)(next() % 8);
    uint64_t *f[] = {&m->group,      &m->from,     &m->to,     &m->term,
                     &m->index,      &m->log_term, &m->commit, &m->context,
                     &m->hint_index, &m->hint_term};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        *f[i] = rand_u64();
    m->entries_count = (uint32_t)(next() % 9);
    for (uint32_t i = 0; i < m->entries_count; i++) {
        uint32_t len = (uint32_t)(next() % 65);
        src_ents[i] = (struct raft_entry){
            rand_u64(), rand_u64(), (uint32_t)(next() % 2), len,
            len ? rand_data + next() % (sizeof rand_data - 64) : NULL};
    }
    m->entries = m->entries_count ? src_ents : NULL;
    m->snap.index = rand_u64();
    m->snap.term = rand_u64();
    m->snap.data_bytes = rand_u64();
    struct raft_membership *mb = &m->snap.membership;
    mb->voters_count = (uint32_t)(next() % (INBOX_RAFT_VOTERS_MAX + 1u));
    mb->learners_count = (uint32_t)(next() % (INBOX_RAFT_LEARNERS_MAX + 1u));
    for (uint32_t i = 0; i < mb->voters_count; i++)
        mb->voters[i] = rand_u64();
    for (uint32_t i = 0; i < mb->learners_count; i++)
        mb->learners[i] = rand_u64();
    m->chunk_len = (uint32_t)(next() % 200);
    m->chunk =
        m->chunk_len ? rand_data + next() % (sizeof rand_data - 200) : NULL;
}

/* Random messages round trip; a random byte flipped in one is either
 * refused or decodes to something that re-encodes to the flipped bytes. */
static void test_random_round_trip(void **state)
{
    (void)state;
    const uint64_t seed = 0x5eed0f3a11b0a7c3ull;
    rng = seed;
    for (size_t i = 0; i < sizeof rand_data; i++)
        rand_data[i] = (uint8_t)next();
    static uint8_t again[8192];
    for (int iter = 0; iter < 20000; iter++) {
        struct raft_msg m, got;
        random_msg(&m);
        size_t n = 0;
        uint8_t *buf = encode_exact(&m, &n);
        if (decode(buf, n, &got) != 0)
            fprintf(stderr, "seed %#llx iteration %d\n",
                    (unsigned long long)seed, iter);
        assert_int_equal(decode(buf, n, &got), 0);
        assert_msg_equal(&m, &got);
        assert_int_equal(raft_wire_encode(&got, again, sizeof again), n);
        assert_memory_equal(again, buf, n);
        size_t at = (size_t)(next() % n);
        buf[at] ^= (uint8_t)(1u << (next() % 8));
        if (decode(buf, n, &got) == 0) {
            size_t k = raft_wire_encode(&got, again, sizeof again);
            if (k != get_u32le(buf) || memcmp(again, buf, k) != 0)
                fprintf(stderr, "seed %#llx iteration %d: not canonical\n",
                        (unsigned long long)seed, iter);
            assert_int_equal(k, get_u32le(buf));
            assert_memory_equal(again, buf, k);
        }
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_peek),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_length_disagrees),
        cmocka_unit_test(test_entries_count_bounds),
        cmocka_unit_test(test_entry_data_bound),
        cmocka_unit_test(test_bad_type_version_flags),
        cmocka_unit_test(test_chunk_bound),
        cmocka_unit_test(test_encoder_refuses),
        cmocka_unit_test(test_max_sizes),
        cmocka_unit_test(test_random_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
