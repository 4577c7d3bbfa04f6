/*
 * test_codec.c — the frame codec (net/codec.h): round trip of every body
 * layout, the incremental parser over byte-at-a-time and random splits,
 * truncations and mutations of valid frames, limits checked before any
 * allocation or copy, and the worked hex examples of docs/protocol.md.
 *
 * `test_codec --print-examples` prints the examples section of the doc from
 * the codec, so the doc is regenerated rather than typed by hand.
 * Random splits print their seed; INBOX_TEST_SEED=<n> replays one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "codec.h"
#include "inbox/endian.h"
#include "inbox/error.h"
#include "net_samples.h"

#define FRAME_MAX 4096

static uint8_t body_buf[INBOX_FRAME_BODY_BYTES_MAX];

static size_t encode(const struct inbox_msg *m, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int rc = inbox_msg_encode(m, out, cap, &n);
    if (rc != 0)
        fail_msg("encode %s: %s", inbox_op_name(m->hdr.opcode),
                 inbox_err_name(rc));
    return n;
}

/* Parses one whole frame from buf and decodes its body into *m. */
static int parse_one(const uint8_t *buf, size_t len, struct inbox_msg *m)
{
    struct inbox_parser p;
    struct inbox_frame f;
    size_t used = 0;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    int rc = inbox_parser_feed(&p, buf, len, &used, &f);
    if (rc < 0)
        return rc;
    if (rc != INBOX_PARSE_FRAME || used != len)
        return INBOX_EINTERNAL;
    return inbox_msg_decode(&f.hdr, f.body, m);
}

/* ---- field-by-field equality of an encode-side and a decoded message --- */

static void eq_bytes(struct inbox_bytes a, struct inbox_bytes b)
{
    assert_int_equal(a.len, b.len);
    if (a.len > 0)
        assert_memory_equal(a.ptr, b.ptr, a.len);
}

static void eq_node(const struct inbox_node *a, const struct inbox_node *b)
{
    assert_true(a->node_id == b->node_id);
    assert_int_equal(a->addrs_count, b->addrs_count);
    assert_null(b->addrs);
    struct inbox_iter it = b->addrs_iter;
    struct inbox_bytes x;
    for (uint32_t i = 0; i < a->addrs_count; i++) {
        assert_true(inbox_next_bytes16(&it, &x));
        eq_bytes(a->addrs[i], x);
    }
    assert_false(inbox_next_bytes16(&it, &x));
}

static void eq_lists(const struct inbox_msg *a, const struct inbox_msg *b)
{
    struct inbox_iter it;
    switch (a->hdr.opcode) {
    case INBOX_OP_ENQUEUE_MANY:
        if (a->hdr.flags & INBOX_FLAG_RESPONSE) {
            const struct inbox_enqueue_many_resp *x =
                &a->body.enqueue_many_resp;
            struct inbox_enqueue_result r;
            it = b->body.enqueue_many_resp.iter;
            assert_int_equal(x->count, b->body.enqueue_many_resp.count);
            for (uint32_t i = 0; i < x->count; i++) {
                assert_true(inbox_next_enqueue_result(&it, &r));
                assert_int_equal(r.code, x->results[i].code);
                assert_int_equal(r.dedup, x->results[i].dedup);
                assert_true(r.seq == x->results[i].seq);
            }
            assert_false(inbox_next_enqueue_result(&it, &r));
        } else {
            const struct inbox_enqueue_many_req *x = &a->body.enqueue_many_req;
            struct inbox_target t;
            assert_true(x->ttl_ms == b->body.enqueue_many_req.ttl_ms);
            eq_bytes(x->payload, b->body.enqueue_many_req.payload);
            assert_int_equal(x->count, b->body.enqueue_many_req.count);
            it = b->body.enqueue_many_req.iter;
            for (uint32_t i = 0; i < x->count; i++) {
                assert_true(inbox_next_target(&it, &t));
                assert_memory_equal(t.msg_id, x->targets[i].msg_id, 16);
                eq_bytes(t.inbox, x->targets[i].inbox);
            }
            assert_false(inbox_next_target(&it, &t));
        }
        break;
    case INBOX_OP_FETCH: {
        const struct inbox_fetch_resp *x = &a->body.fetch_resp;
        struct inbox_message m;
        assert_true(x->acked_seq == b->body.fetch_resp.acked_seq);
        assert_true(x->last_seq == b->body.fetch_resp.last_seq);
        assert_int_equal(x->stale, b->body.fetch_resp.stale);
        assert_int_equal(x->count, b->body.fetch_resp.count);
        it = b->body.fetch_resp.iter;
        for (uint32_t i = 0; i < x->count; i++) {
            assert_true(inbox_next_message(&it, &m));
            assert_true(m.seq == x->messages[i].seq);
            assert_memory_equal(m.msg_id, x->messages[i].msg_id, 16);
            assert_true(m.enqueue_ts_ms == x->messages[i].enqueue_ts_ms);
            eq_bytes(m.payload, x->messages[i].payload);
        }
        assert_false(inbox_next_message(&it, &m));
        break;
    }
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
    case INBOX_OP_UNWATCH:
        if (a->hdr.flags & INBOX_FLAG_RESPONSE) {
            const struct inbox_code_u64_resp *x = &a->body.code_u64_resp;
            struct inbox_code_u64 c;
            assert_int_equal(x->count, b->body.code_u64_resp.count);
            it = b->body.code_u64_resp.iter;
            for (uint32_t i = 0; i < x->count; i++) {
                assert_true(inbox_next_code_u64(&it, &c));
                assert_int_equal(c.code, x->items[i].code);
                assert_true(c.value == x->items[i].value);
            }
            assert_false(inbox_next_code_u64(&it, &c));
        } else {
            const struct inbox_keys_req *x = &a->body.keys_req;
            struct inbox_bytes k;
            assert_int_equal(x->flags, b->body.keys_req.flags);
            assert_int_equal(x->count, b->body.keys_req.count);
            it = b->body.keys_req.iter;
            for (uint32_t i = 0; i < x->count; i++) {
                assert_true(inbox_next_key(&it, &k));
                eq_bytes(x->keys[i], k);
            }
            assert_false(inbox_next_key(&it, &k));
        }
        break;
    case INBOX_OP_ROUTE: {
        const struct inbox_route_resp *x = &a->body.route_resp;
        struct inbox_node n;
        uint64_t leader;
        assert_true(x->epoch == b->body.route_resp.epoch);
        assert_int_equal(x->hash, b->body.route_resp.hash);
        assert_int_equal(x->nodes_count, b->body.route_resp.nodes_count);
        it = b->body.route_resp.nodes_iter;
        for (uint32_t i = 0; i < x->nodes_count; i++) {
            assert_true(inbox_next_node(&it, &n));
            eq_node(&x->nodes[i], &n);
        }
        assert_false(inbox_next_node(&it, &n));
        assert_int_equal(x->shard_count, b->body.route_resp.shard_count);
        it = b->body.route_resp.leaders_iter;
        for (uint32_t i = 0; i < x->shard_count; i++) {
            assert_true(inbox_next_u64(&it, &leader));
            assert_true(leader == x->leaders[i]);
        }
        assert_false(inbox_next_u64(&it, &leader));
        break;
    }
    case INBOX_OP_STATUS: {
        const struct inbox_status_resp *x = &a->body.status_resp;
        struct inbox_shard_status s;
        assert_true(x->node_id == b->body.status_resp.node_id);
        assert_true(x->uptime_ms == b->body.status_resp.uptime_ms);
        assert_int_equal(x->count, b->body.status_resp.count);
        it = b->body.status_resp.iter;
        for (uint32_t i = 0; i < x->count; i++) {
            assert_true(inbox_next_shard_status(&it, &s));
            assert_int_equal(s.shard, x->shards[i].shard);
            assert_int_equal(s.role, x->shards[i].role);
            assert_true(s.leader_id == x->shards[i].leader_id);
            assert_true(s.term == x->shards[i].term);
            assert_true(s.applied_index == x->shards[i].applied_index);
        }
        assert_false(inbox_next_shard_status(&it, &s));
        break;
    }
    case INBOX_OP_ADD_NODE:
        eq_node(&a->body.add_node_req, &b->body.add_node_req);
        break;
    default:
        fail_msg("no list in opcode %u", a->hdr.opcode);
    }
}

/* True for layouts compared by eq_lists, false for flat ones. */
static bool has_list(const struct inbox_msg *m)
{
    bool resp = m->hdr.flags & INBOX_FLAG_RESPONSE;
    switch (m->hdr.opcode) {
    case INBOX_OP_ENQUEUE_MANY:
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
        return true;
    case INBOX_OP_UNWATCH:
    case INBOX_OP_ADD_NODE:
        return !resp;
    case INBOX_OP_FETCH:
    case INBOX_OP_ROUTE:
    case INBOX_OP_STATUS:
        return resp;
    default:
        return false;
    }
}

static void eq_flat(const struct inbox_msg *a, const struct inbox_msg *b)
{
    switch (a->hdr.opcode) {
    case INBOX_OP_HELLO:
        if (a->hdr.flags & INBOX_FLAG_RESPONSE) {
            const struct inbox_hello_resp *x = &a->body.hello_resp;
            const struct inbox_hello_resp *y = &b->body.hello_resp;
            assert_int_equal(x->version, y->version);
            assert_true(x->node_id == y->node_id);
            assert_int_equal(x->body_bytes_max, y->body_bytes_max);
            assert_int_equal(x->shard_count, y->shard_count);
        } else {
            assert_int_equal(a->body.hello_req.version_min,
                             b->body.hello_req.version_min);
            assert_int_equal(a->body.hello_req.version_max,
                             b->body.hello_req.version_max);
            eq_bytes(a->body.hello_req.client_name,
                     b->body.hello_req.client_name);
        }
        break;
    case INBOX_OP_ENQUEUE:
        if (a->hdr.flags & INBOX_FLAG_RESPONSE) {
            assert_true(a->body.enqueue_resp.seq == b->body.enqueue_resp.seq);
            assert_int_equal(a->body.enqueue_resp.dedup,
                             b->body.enqueue_resp.dedup);
        } else {
            const struct inbox_enqueue_req *x = &a->body.enqueue_req;
            assert_memory_equal(x->msg_id, b->body.enqueue_req.msg_id, 16);
            assert_true(x->ttl_ms == b->body.enqueue_req.ttl_ms);
            eq_bytes(x->inbox, b->body.enqueue_req.inbox);
            eq_bytes(x->payload, b->body.enqueue_req.payload);
        }
        break;
    case INBOX_OP_FETCH: {
        const struct inbox_fetch_req *x = &a->body.fetch_req;
        const struct inbox_fetch_req *y = &b->body.fetch_req;
        eq_bytes(x->inbox, y->inbox);
        assert_true(x->after_seq == y->after_seq);
        assert_int_equal(x->messages_max, y->messages_max);
        assert_int_equal(x->bytes_max, y->bytes_max);
        assert_int_equal(x->wait_ms, y->wait_ms);
        assert_int_equal(x->flags, y->flags);
        break;
    }
    case INBOX_OP_ACK:
    case INBOX_OP_SEEN_SET:
        /* Both layouts are {key, u64} / {u64}; compare through ack. */
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            eq_bytes(a->body.ack_req.inbox, b->body.ack_req.inbox);
            assert_true(a->body.ack_req.up_to_seq == b->body.ack_req.up_to_seq);
        } else {
            assert_true(a->body.ack_resp.acked_seq ==
                        b->body.ack_resp.acked_seq);
        }
        break;
    case INBOX_OP_NOTIFY:
        eq_bytes(a->body.notify.inbox, b->body.notify.inbox);
        assert_true(a->body.notify.last_seq == b->body.notify.last_seq);
        break;
    case INBOX_OP_TRANSFER_LEADER:
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            assert_int_equal(a->body.transfer_leader_req.shard,
                             b->body.transfer_leader_req.shard);
            assert_true(a->body.transfer_leader_req.to_node_id ==
                        b->body.transfer_leader_req.to_node_id);
            break;
        }
        goto admin_resp;
    case INBOX_OP_MOVE_REPLICA:
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            const struct inbox_move_replica_req *x = &a->body.move_replica_req;
            const struct inbox_move_replica_req *y = &b->body.move_replica_req;
            assert_int_equal(x->shard, y->shard);
            assert_true(x->from_node_id == y->from_node_id);
            assert_true(x->to_node_id == y->to_node_id);
            break;
        }
        goto admin_resp;
    case INBOX_OP_REMOVE_NODE:
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            assert_true(a->body.remove_node_req.node_id ==
                        b->body.remove_node_req.node_id);
            break;
        }
        goto admin_resp;
    case INBOX_OP_SNAPSHOT:
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            assert_int_equal(a->body.snapshot_req.shard,
                             b->body.snapshot_req.shard);
            break;
        }
        goto admin_resp;
    case INBOX_OP_RAFT:
        if (!(a->hdr.flags & INBOX_FLAG_RESPONSE)) {
            assert_int_equal(a->body.raft_req.batch.len,
                             b->body.raft_req.batch.len);
            assert_memory_equal(a->body.raft_req.batch.ptr,
                                b->body.raft_req.batch.ptr,
                                a->body.raft_req.batch.len);
        } else {
            assert_int_equal(b->hdr.body_bytes, 0);
        }
        break;
    case INBOX_OP_ADD_NODE:
    admin_resp:
        assert_true(a->body.admin_resp.epoch == b->body.admin_resp.epoch);
        break;
    default: /* PING, ROUTE and STATUS requests, UNWATCH response: empty */
        assert_int_equal(b->hdr.body_bytes, 0);
        break;
    }
}

static void eq_error(const struct inbox_error *a, const struct inbox_error *b)
{
    assert_int_equal(a->code, b->code);
    eq_bytes(a->message, b->message);
    if (-(int)a->code == INBOX_ENOT_LEADER) {
        assert_int_equal(a->shard, b->shard);
        eq_node(&a->leader, &b->leader);
    } else if (-(int)a->code == INBOX_EPROTO_VERSION) {
        assert_int_equal(a->version_min, b->version_min);
        assert_int_equal(a->version_max, b->version_max);
    } else {
        eq_bytes(a->detail, b->detail);
    }
}

static void eq_msg(const struct inbox_msg *a, const struct inbox_msg *b)
{
    assert_int_equal(a->hdr.version, b->hdr.version);
    assert_int_equal(a->hdr.opcode, b->hdr.opcode);
    assert_int_equal(a->hdr.flags, b->hdr.flags);
    assert_true(a->hdr.request_id == b->hdr.request_id);
    if (a->hdr.flags & INBOX_FLAG_ERROR)
        eq_error(&a->body.error, &b->body.error);
    else if (has_list(a))
        eq_lists(a, b);
    else
        eq_flat(a, b);
}

/* ---- tests -------------------------------------------------------------- */

/* Every sample: encode, parse, decode, compare field by field, and the
 * decoded message re-encodes to the very same bytes (the encoding is
 * canonical, which the fuzzer also checks on arbitrary input). */
static void test_roundtrip_every_message(void **state)
{
    (void)state;
    size_t n;
    const struct net_sample *s = net_samples(&n);
    assert_true(n >= 36);
    for (size_t i = 0; i < n; i++) {
        uint8_t a[FRAME_MAX], b[FRAME_MAX];
        struct inbox_msg m;
        size_t alen = encode(&s[i].msg, a, sizeof a);
        int rc = parse_one(a, alen, &m);
        if (rc != 0)
            fail_msg("%s: %s", s[i].name, inbox_err_name(rc));
        assert_int_equal(m.hdr.body_bytes, alen - INBOX_FRAME_HEADER_BYTES);
        eq_msg(&s[i].msg, &m);
        size_t blen = encode(&m, b, sizeof b);
        assert_int_equal(alen, blen);
        assert_memory_equal(a, b, alen);
    }
}

/* Every op has a name, every sample's op is known, unknown ones are not. */
static void test_op_names_and_retryable(void **state)
{
    (void)state;
    assert_string_equal(inbox_op_name(INBOX_OP_ENQUEUE_MANY), "ENQUEUE_MANY");
    assert_null(inbox_op_name(0x7f));
    assert_true(inbox_err_retryable(INBOX_ENOT_LEADER));
    assert_true(inbox_err_retryable(INBOX_EBUSY));
    assert_false(inbox_err_retryable(INBOX_EPROTO));
    assert_false(inbox_err_retryable(INBOX_EKEY_INVALID));
    assert_false(inbox_err_retryable(0));
}

struct stream {
    uint8_t *bytes;
    size_t len;
    size_t frames;
    size_t *ends; /* end offset of each frame */
};

/* All samples, `rounds` times, back to back. */
static void stream_build(struct stream *st, int rounds)
{
    size_t n;
    const struct net_sample *s = net_samples(&n);
    st->bytes = malloc(n * rounds * FRAME_MAX);
    st->ends = malloc(n * rounds * sizeof *st->ends);
    assert_non_null(st->bytes);
    assert_non_null(st->ends);
    st->len = 0;
    st->frames = 0;
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < n; i++) {
            st->len += encode(&s[i].msg, st->bytes + st->len, FRAME_MAX);
            st->ends[st->frames++] = st->len;
        }
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Feeds the stream in chunks (chunk 0: random sizes from *seed) and checks
 * that exactly the encoded frames come out, in order, byte for byte. */
static void stream_feed(const struct stream *st, size_t chunk, uint64_t seed)
{
    struct inbox_parser p;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    size_t off = 0, got = 0, start = 0;
    while (off < st->len) {
        size_t want = chunk ? chunk : 1 + rng_next(&seed) % 200;
        size_t len = want < st->len - off ? want : st->len - off;
        const uint8_t *in = st->bytes + off;
        while (len > 0) {
            struct inbox_frame f;
            size_t used;
            int rc = inbox_parser_feed(&p, in, len, &used, &f);
            assert_true(rc >= 0);
            assert_true(used <= len);
            in += used;
            len -= used;
            off += used;
            if (rc == INBOX_PARSE_MORE) {
                assert_int_equal(len, 0);
                continue;
            }
            assert_true(got < st->frames);
            assert_int_equal(off, st->ends[got]);
            assert_int_equal(INBOX_FRAME_HEADER_BYTES + f.hdr.body_bytes,
                             off - start);
            if (f.hdr.body_bytes > 0)
                assert_memory_equal(
                    f.body, st->bytes + start + INBOX_FRAME_HEADER_BYTES,
                    f.hdr.body_bytes);
            struct inbox_msg m;
            assert_int_equal(inbox_msg_decode(&f.hdr, f.body, &m), 0);
            got++;
            start = off;
        }
    }
    assert_int_equal(got, st->frames);
}

static void test_parser_byte_at_a_time(void **state)
{
    (void)state;
    struct stream st;
    stream_build(&st, 3);
    stream_feed(&st, 1, 0);
    stream_feed(&st, st.len, 0); /* and all at once (the zero-copy path) */
    free(st.bytes);
    free(st.ends);
}

static void test_parser_random_splits(void **state)
{
    (void)state;
    const char *env = getenv("INBOX_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 0x9e3779b97f4a7c15ull;
    struct stream st;
    stream_build(&st, 5);
    print_message("split seed 0x%016llx (INBOX_TEST_SEED replays)\n",
                  (unsigned long long)seed);
    for (int run = 0; run < 50; run++) {
        uint64_t s = seed + (uint64_t)run * 0x2545f4914f6cdd1dull;
        if (s == 0)
            s = 1;
        stream_feed(&st, 0, s);
    }
    free(st.bytes);
    free(st.ends);
}

/* A frame cut short anywhere is "need more", never a frame or an error;
 * a body cut short anywhere (header says the shorter length) is EPROTO. */
static void test_every_truncation(void **state)
{
    (void)state;
    size_t n;
    const struct net_sample *s = net_samples(&n);
    for (size_t i = 0; i < n; i++) {
        uint8_t a[FRAME_MAX];
        size_t alen = encode(&s[i].msg, a, sizeof a);
        for (size_t cut = 0; cut < alen; cut++) {
            struct inbox_parser p;
            struct inbox_frame f;
            size_t used;
            inbox_parser_init(&p, body_buf, sizeof body_buf);
            assert_int_equal(inbox_parser_feed(&p, a, cut, &used, &f),
                             INBOX_PARSE_MORE);
            assert_int_equal(used, cut);
        }
        struct inbox_frame_header h;
        assert_int_equal(inbox_frame_header_decode(a, &h), 0);
        for (uint32_t body = 0; body < h.body_bytes; body++) {
            struct inbox_frame_header t = h;
            struct inbox_msg m;
            t.body_bytes = body;
            int rc = inbox_msg_decode(&t, a + INBOX_FRAME_HEADER_BYTES, &m);
            if (rc != INBOX_EPROTO)
                fail_msg("%s cut to %u: %s", s[i].name, body,
                         inbox_err_name(rc));
        }
    }
}

/* Mutated frames: each byte replaced by a handful of values. Nothing
 * crashes (ASan/UBSan watch), and anything that still decodes re-encodes to
 * exactly the mutated bytes: the decoder accepts only canonical input. */
static void test_mutations(void **state)
{
    (void)state;
    static const uint8_t values[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff};
    size_t n, decoded = 0, refused = 0;
    const struct net_sample *s = net_samples(&n);
    for (size_t i = 0; i < n; i++) {
        uint8_t a[FRAME_MAX], b[FRAME_MAX], c[FRAME_MAX];
        size_t alen = encode(&s[i].msg, a, sizeof a);
        for (size_t at = 0; at < alen; at++)
            for (size_t v = 0; v < sizeof values + 1; v++) {
                memcpy(b, a, alen);
                b[at] = v < sizeof values ? values[v] : (uint8_t)~a[at];
                if (b[at] == a[at])
                    continue;
                struct inbox_msg m;
                int rc = parse_one(b, alen, &m);
                if (rc != 0) {
                    refused++;
                    continue;
                }
                decoded++;
                size_t clen = encode(&m, c, sizeof c);
                assert_int_equal(clen, alen);
                assert_memory_equal(b, c, alen);
            }
    }
    print_message("mutations: %zu decoded, %zu refused\n", decoded, refused);
    assert_true(decoded > 0 && refused > 0);
}

/* Raw header bytes, written by hand so that invalid ones can be made. */
static void header_bytes(uint8_t *b, uint16_t flags, uint64_t id,
                         uint32_t body_bytes)
{
    put_u32le(b, INBOX_PROTO_MAGIC);
    b[4] = 1;
    b[5] = INBOX_OP_PING;
    put_u16le(b + 6, flags);
    put_u64le(b + 8, id);
    put_u32le(b + 16, body_bytes);
    put_u32le(b + 20, 0);
}

/* The body length is judged as soon as the 24th header byte arrives:
 * nothing of the body is buffered (the caller's buffer stays untouched). */
static void test_oversized_refused_before_buffering(void **state)
{
    (void)state;
    static const uint32_t lens[] = {INBOX_FRAME_BODY_BYTES_MAX + 1, 0x80000000u,
                                    0xffffffffu};
    uint8_t small[64];
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t in[INBOX_FRAME_HEADER_BYTES + 16];
        memset(in, 0xab, sizeof in);
        header_bytes(in, 0, 9, lens[i]);
        memset(small, 0x5a, sizeof small);
        struct inbox_parser p;
        struct inbox_frame f;
        size_t used;
        inbox_parser_init(&p, small, sizeof small);
        assert_int_equal(inbox_parser_feed(&p, in, 23, &used, &f),
                         INBOX_PARSE_MORE);
        assert_int_equal(
            inbox_parser_feed(&p, in + 23, sizeof in - 23, &used, &f),
            INBOX_EFRAME_TOO_LARGE);
        assert_int_equal(used, 1);
        assert_true(f.hdr.request_id == 9); /* to answer it */
        for (size_t j = 0; j < sizeof small; j++)
            assert_int_equal(small[j], 0x5a);
        /* The failure is sticky. */
        assert_int_equal(inbox_parser_feed(&p, in, 1, &used, &f),
                         INBOX_EFRAME_TOO_LARGE);
        assert_int_equal(used, 0);
    }
    /* Within the protocol limit but over this parser's buffer. */
    uint8_t in[INBOX_FRAME_HEADER_BYTES];
    header_bytes(in, 0, 9, sizeof small + 1);
    struct inbox_parser p;
    struct inbox_frame f;
    size_t used;
    inbox_parser_init(&p, small, sizeof small);
    assert_int_equal(inbox_parser_feed(&p, in, sizeof in, &used, &f),
                     INBOX_EFRAME_TOO_LARGE);
    /* Exactly the limit passes the header check. */
    struct inbox_frame_header h;
    header_bytes(in, 0, 9, INBOX_FRAME_BODY_BYTES_MAX);
    assert_int_equal(inbox_frame_header_decode(in, &h), 0);
}

static int feed_header(const uint8_t *in, uint8_t version)
{
    struct inbox_parser p;
    struct inbox_frame f;
    size_t used;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    p.version = version;
    return inbox_parser_feed(&p, in, INBOX_FRAME_HEADER_BYTES, &used, &f);
}

static void test_header_rules(void **state)
{
    (void)state;
    uint8_t b[INBOX_FRAME_HEADER_BYTES];
    header_bytes(b, 0, 1, 0);
    assert_int_equal(feed_header(b, 0), INBOX_PARSE_FRAME);
    assert_int_equal(feed_header(b, 1), INBOX_PARSE_FRAME);
    assert_int_equal(feed_header(b, 2), INBOX_EPROTO_VERSION);
    b[0] = 'X'; /* magic */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    header_bytes(b, 0, 1, 0);
    b[4] = 0; /* version 0 never exists */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    header_bytes(b, 0, 1, 0);
    b[23] = 1; /* reserved */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    header_bytes(b, 0, 1, 0);
    put_u16le(b + 6, 0x0008); /* unknown flag */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    put_u16le(b + 6, INBOX_FLAG_ERROR); /* ERROR without RESPONSE */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    header_bytes(b, 0, 0, 0); /* request id 0 on a request */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    put_u16le(b + 6, INBOX_FLAG_PUSH); /* PUSH of a PING */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    b[5] = INBOX_OP_NOTIFY;
    assert_int_equal(feed_header(b, 0), INBOX_PARSE_FRAME);
    put_u64le(b + 8, 5); /* PUSH with a request id */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
    put_u16le(b + 6, 0); /* NOTIFY as a request */
    assert_int_equal(feed_header(b, 0), INBOX_EPROTO);
}

/* An unknown opcode frames fine (the server answers UNKNOWN_OP and keeps
 * the connection); the next frame parses. */
static void test_unknown_opcode_keeps_stream(void **state)
{
    (void)state;
    uint8_t in[2 * INBOX_FRAME_HEADER_BYTES + 3];
    header_bytes(in, 0, 7, 3);
    in[5] = 0x7f;
    memcpy(in + INBOX_FRAME_HEADER_BYTES, "abc", 3);
    header_bytes(in + INBOX_FRAME_HEADER_BYTES + 3, 0, 8, 0);
    struct inbox_parser p;
    struct inbox_frame f;
    struct inbox_msg m;
    size_t used;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    assert_int_equal(inbox_parser_feed(&p, in, sizeof in, &used, &f),
                     INBOX_PARSE_FRAME);
    assert_int_equal(inbox_msg_decode(&f.hdr, f.body, &m), INBOX_EUNKNOWN_OP);
    assert_true(m.hdr.request_id == 7);
    assert_int_equal(
        inbox_parser_feed(&p, in + used, sizeof in - used, &used, &f),
        INBOX_PARSE_FRAME);
    assert_int_equal(inbox_msg_decode(&f.hdr, f.body, &m), 0);
    assert_int_equal(m.hdr.opcode, INBOX_OP_PING);
}

/* A body that arrives whole is handed out in place (no copy); one that
 * arrives in pieces is assembled in the caller's buffer. */
static void test_zero_copy_and_buffered_bodies(void **state)
{
    (void)state;
    uint8_t a[FRAME_MAX];
    size_t n = encode(&net_sample_find("enqueue_req")->msg, a, sizeof a);
    struct inbox_parser p;
    struct inbox_frame f;
    size_t used;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    assert_int_equal(inbox_parser_feed(&p, a, n, &used, &f), INBOX_PARSE_FRAME);
    assert_ptr_equal(f.body, a + INBOX_FRAME_HEADER_BYTES);
    /* Header split, body whole in the second piece: still in place. */
    assert_int_equal(inbox_parser_feed(&p, a, 10, &used, &f), INBOX_PARSE_MORE);
    assert_int_equal(inbox_parser_feed(&p, a + 10, n - 10, &used, &f),
                     INBOX_PARSE_FRAME);
    assert_ptr_equal(f.body, a + INBOX_FRAME_HEADER_BYTES);
    /* Body split: assembled in body_buf. */
    assert_int_equal(inbox_parser_feed(&p, a, n - 1, &used, &f),
                     INBOX_PARSE_MORE);
    assert_int_equal(inbox_parser_feed(&p, a + n - 1, 1, &used, &f),
                     INBOX_PARSE_FRAME);
    assert_ptr_equal(f.body, body_buf);
    assert_memory_equal(f.body, a + INBOX_FRAME_HEADER_BYTES,
                        n - INBOX_FRAME_HEADER_BYTES);
}

/* Once the connection's version is set, a frame of another version ends
 * the stream with PROTO_VERSION, and the failure is sticky. */
static void test_version_mismatch_mid_stream(void **state)
{
    (void)state;
    uint8_t a[2 * FRAME_MAX];
    struct inbox_msg m = net_sample_find("ack_req")->msg;
    size_t n1 = encode(&m, a, sizeof a);
    m.hdr.version = 2;
    size_t n2 = encode(&m, a + n1, sizeof a - n1);
    struct inbox_parser p;
    struct inbox_frame f;
    size_t used;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    p.version = 1;
    assert_int_equal(inbox_parser_feed(&p, a, n1 + n2, &used, &f),
                     INBOX_PARSE_FRAME);
    assert_int_equal(used, n1);
    assert_int_equal(inbox_parser_feed(&p, a + n1, n2, &used, &f),
                     INBOX_EPROTO_VERSION);
    assert_int_equal(inbox_parser_feed(&p, a, n1, &used, &f),
                     INBOX_EPROTO_VERSION);
}

static void test_encoder_limits(void **state)
{
    (void)state;
    static uint8_t big[INBOX_PAYLOAD_BYTES_MAX + 1];
    static uint8_t out[INBOX_FRAME_HEADER_BYTES + 2 * INBOX_PAYLOAD_BYTES_MAX];
    static struct inbox_target targets[INBOX_FANOUT_INBOXES_MAX + 1];
    struct inbox_msg m = *&net_sample_find("enqueue_req")->msg;
    size_t need, got;
    m.body.enqueue_req.inbox = (struct inbox_bytes){big, 0};
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got),
                     INBOX_EKEY_INVALID);
    m.body.enqueue_req.inbox.len = INBOX_KEY_BYTES_MAX + 1;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got),
                     INBOX_EKEY_INVALID);
    m.body.enqueue_req.inbox.len = INBOX_KEY_BYTES_MAX;
    m.body.enqueue_req.payload = (struct inbox_bytes){big, sizeof big};
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got),
                     INBOX_EPAYLOAD_TOO_LARGE);
    m.body.enqueue_req.payload.len = INBOX_PAYLOAD_BYTES_MAX;
    /* Measure with cap 0, then a buffer one byte short, then exact. */
    assert_int_equal(inbox_msg_encode(&m, NULL, 0, &need), INBOX_ERANGE);
    assert_int_equal(need, 24 + 16 + 8 + 1 + 128 + 4 + INBOX_PAYLOAD_BYTES_MAX);
    assert_int_equal(inbox_msg_encode(&m, out, need - 1, &got), INBOX_ERANGE);
    assert_int_equal(inbox_msg_encode(&m, out, need, &got), 0);
    assert_int_equal(got, need);
    struct inbox_msg d;
    assert_int_equal(parse_one(out, got, &d), 0);
    assert_int_equal(d.body.enqueue_req.payload.len, INBOX_PAYLOAD_BYTES_MAX);

    m = net_sample_find("enqueue_many_req")->msg;
    for (size_t i = 0; i < INBOX_FANOUT_INBOXES_MAX + 1; i++)
        targets[i].inbox = (struct inbox_bytes){big, 1};
    m.body.enqueue_many_req.targets = targets;
    m.body.enqueue_many_req.count = INBOX_FANOUT_INBOXES_MAX + 1;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got),
                     INBOX_ETOO_MANY_INBOXES);
    m.body.enqueue_many_req.count = 0;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got),
                     INBOX_ETOO_MANY_INBOXES);
    m.body.enqueue_many_req.count = INBOX_FANOUT_INBOXES_MAX;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got), 0);
    assert_int_equal(parse_one(out, got, &d), 0);
    assert_int_equal(d.body.enqueue_many_req.count, INBOX_FANOUT_INBOXES_MAX);

    /* A list count with no array and no decoded iterator is refused. */
    m.body.enqueue_many_req.targets = NULL;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got), INBOX_EINVAL);
    /* Bad header fields are the caller's bug: EINVAL, nothing sent. */
    m = net_sample_find("ping_req")->msg;
    m.hdr.request_id = 0;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got), INBOX_EINVAL);
    m.hdr.request_id = 1;
    m.hdr.opcode = 0x7f;
    assert_int_equal(inbox_msg_encode(&m, out, sizeof out, &got), INBOX_EINVAL);
}

/* Decoder-side limits on hand-made bodies: a key of 0 or 129 bytes, a
 * payload over the cap, a non-0/1 boolean, trailing bytes. */
static void test_decoder_limits(void **state)
{
    (void)state;
    uint8_t a[FRAME_MAX];
    struct inbox_msg m;
    size_t len = encode(&net_sample_find("ack_req")->msg, a, sizeof a);
    struct inbox_frame_header h;
    assert_int_equal(inbox_frame_header_decode(a, &h), 0);
    uint8_t *body = a + INBOX_FRAME_HEADER_BYTES;
    assert_int_equal(inbox_msg_decode(&h, body, &m), 0);
    body[0] = 0; /* key length 0 */
    assert_int_equal(inbox_msg_decode(&h, body, &m), INBOX_EPROTO);
    body[0] = 129;
    assert_int_equal(inbox_msg_decode(&h, body, &m), INBOX_EPROTO);
    body[0] = 5;
    h.body_bytes++; /* one trailing byte */
    a[len] = 0;
    assert_int_equal(inbox_msg_decode(&h, body, &m), INBOX_EPROTO);

    len = encode(&net_sample_find("enqueue_resp")->msg, a, sizeof a);
    assert_int_equal(inbox_frame_header_decode(a, &h), 0);
    a[len - 1] = 2; /* dedup must be 0 or 1 */
    assert_int_equal(inbox_msg_decode(&h, body, &m), INBOX_EPROTO);

    len = encode(&net_sample_find("enqueue_req")->msg, a, sizeof a);
    assert_int_equal(inbox_frame_header_decode(a, &h), 0);
    /* payload length field sits after msg id, ttl and the 5-byte key */
    put_u32le(body + 16 + 8 + 1 + 5, INBOX_PAYLOAD_BYTES_MAX + 1);
    assert_int_equal(inbox_msg_decode(&h, body, &m), INBOX_EPROTO);
    (void)len;
}

/* ---- the worked examples of docs/protocol.md ---------------------------- */

static const char *const doc_examples[] = {
    "hello_req",  "hello_resp",       "enqueue_req",      "enqueue_resp",
    "fetch_req",  "fetch_resp",       "enqueue_many_req", "notify_push",
    "route_resp", "error_not_leader",
};

static void hex_lines(FILE *out, const uint8_t *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        fprintf(out, "%02x%s", b[i],
                (i % 16 == 15 || i + 1 == len) ? "\n" : " ");
}

static int print_examples(void)
{
    for (size_t i = 0; i < sizeof doc_examples / sizeof doc_examples[0]; i++) {
        const struct net_sample *s = net_sample_find(doc_examples[i]);
        uint8_t a[FRAME_MAX];
        size_t n = 0;
        if (!s || inbox_msg_encode(&s->msg, a, sizeof a, &n) != 0)
            return 1;
        printf("<!-- example: %s -->\n```text\n", s->name);
        hex_lines(stdout, a, n);
        printf("```\n\n");
    }
    return 0;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[256 * 1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* Parses the hex lines after `<!-- example: NAME -->` and the ```text
 * fence, up to the closing fence. Returns the byte count, or -1. */
static long doc_hex(const char *doc, const char *name, uint8_t *out, size_t cap)
{
    char marker[128];
    snprintf(marker, sizeof marker, "<!-- example: %s -->", name);
    const char *p = strstr(doc, marker);
    if (!p)
        return -1;
    p = strstr(p, "```text\n");
    if (!p)
        return -1;
    p += 8;
    const char *end = strstr(p, "```");
    if (!end)
        return -1;
    size_t n = 0;
    while (p < end) {
        unsigned v;
        int used;
        if (*p == ' ' || *p == '\n') {
            p++;
            continue;
        }
        if (n >= cap || sscanf(p, "%2x%n", &v, &used) != 1 || used != 2)
            return -1;
        out[n++] = (uint8_t)v;
        p += used;
    }
    return (long)n;
}

static void test_doc_examples_match_codec(void **state)
{
    (void)state;
    const char *doc = read_file(INBOX_PROTOCOL_MD);
    assert_non_null(doc);
    for (size_t i = 0; i < sizeof doc_examples / sizeof doc_examples[0]; i++) {
        const struct net_sample *s = net_sample_find(doc_examples[i]);
        assert_non_null(s);
        uint8_t want[FRAME_MAX], got[FRAME_MAX];
        size_t n = encode(&s->msg, want, sizeof want);
        long dn = doc_hex(doc, s->name, got, sizeof got);
        if (dn < 0)
            fail_msg("docs/protocol.md: example %s missing or unreadable "
                     "(regenerate: test_codec --print-examples)",
                     s->name);
        if ((size_t)dn != n || memcmp(want, got, n) != 0)
            fail_msg("docs/protocol.md: example %s differs from the codec "
                     "(regenerate: test_codec --print-examples)",
                     s->name);
        struct inbox_msg m;
        assert_int_equal(parse_one(got, n, &m), 0);
        eq_msg(&s->msg, &m);
    }
}

/* Every code of INBOX_ERR_MAP has its row in the doc's error table, and the
 * row's "retry" column agrees with inbox_err_retryable. */
static void test_doc_error_table_complete(void **state)
{
    (void)state;
    const char *doc = read_file(INBOX_PROTOCOL_MD);
    assert_non_null(doc);
#define ROW(name, num, msg)                                                    \
    do {                                                                       \
        const char *row = strstr(doc, "| " #num " | `" #name "` |");           \
        if (!row)                                                              \
            fail_msg("docs/protocol.md: no error table row for %d %s", num,    \
                     #name);                                                   \
        const char *eol = strchr(row, '\n');                                   \
        assert_non_null(eol);                                                  \
        bool yes = eol - row > 8 && memcmp(eol - 7, "| yes |", 7) == 0;        \
        bool no = eol - row > 7 && memcmp(eol - 6, "| no |", 6) == 0;          \
        if (!(yes || no) || yes != inbox_err_retryable(-(num)))                \
            fail_msg("docs/protocol.md: retry column of %s disagrees with "    \
                     "inbox_err_retryable",                                    \
                     #name);                                                   \
    } while (0);
    INBOX_ERR_MAP(ROW)
#undef ROW
}

/* The routing test vectors of the doc, against libxxhash (the codec itself
 * does not hash; clients do). */
static void test_doc_shard_vectors(void **state)
{
    (void)state;
    static const char *const keys[] = {"alice", "bob", "carol"};
    const char *doc = read_file(INBOX_PROTOCOL_MD);
    assert_non_null(doc);
    for (size_t i = 0; i < 3; i++) {
        char row[128];
        uint64_t h = XXH3_64bits(keys[i], strlen(keys[i]));
        snprintf(row, sizeof row, "| `%s` | `0x%016llx` | %llu |", keys[i],
                 (unsigned long long)h, (unsigned long long)(h % 64));
        if (!strstr(doc, row))
            fail_msg("docs/protocol.md: routing vector row missing: %s", row);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--print-examples") == 0)
        return print_examples();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_message),
        cmocka_unit_test(test_op_names_and_retryable),
        cmocka_unit_test(test_parser_byte_at_a_time),
        cmocka_unit_test(test_parser_random_splits),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_oversized_refused_before_buffering),
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_unknown_opcode_keeps_stream),
        cmocka_unit_test(test_zero_copy_and_buffered_bodies),
        cmocka_unit_test(test_version_mismatch_mid_stream),
        cmocka_unit_test(test_encoder_limits),
        cmocka_unit_test(test_decoder_limits),
        cmocka_unit_test(test_doc_examples_match_codec),
        cmocka_unit_test(test_doc_error_table_complete),
        cmocka_unit_test(test_doc_shard_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
