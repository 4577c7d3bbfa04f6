/*
 * codec.c — frame header, incremental parser and body codec of the binary
 * protocol. The wire layout of every field is docs/protocol.md; the order of
 * the reads and writes below follows its tables one for one.
 *
 * Two small cursors do all the byte work. A reader (struct rd) never reads
 * past its end: the first short read marks it bad and every later read
 * returns zero, so a decoder reads its whole layout and checks `bad` once
 * (plus its own range checks) — every length is checked before use and
 * before any pointer is formed from it. A writer (struct wr) counts bytes
 * even past its capacity, which is how encoding into a zero-sized buffer
 * measures a frame.
 */
#include "codec.h"

#include <assert.h>
#include <string.h>

#include "inbox/endian.h"
#include "inbox/error.h"

/* Every count and length fits the wire field that carries it. */
_Static_assert(INBOX_FANOUT_INBOXES_MAX <= UINT16_MAX, "u16 target count");
_Static_assert(INBOX_SEEN_GET_INBOXES_MAX <= UINT16_MAX, "u16 key count");
_Static_assert(INBOX_WATCH_INBOXES_MAX <= UINT16_MAX, "u16 key count");
_Static_assert(INBOX_FETCH_MESSAGES_MAX <= UINT16_MAX, "u16 message count");
_Static_assert(INBOX_ROUTE_NODES_MAX <= UINT16_MAX, "u16 node count");
_Static_assert(INBOX_NODE_ADDRS_MAX <= UINT8_MAX, "u8 address count");
_Static_assert(INBOX_FRAME_TEXT_BYTES_MAX <= UINT16_MAX, "u16 text length");
_Static_assert(INBOX_NODE_ADDR_BYTES_MAX <= UINT16_MAX, "u16 address length");
_Static_assert(INBOX_FRAME_BODY_BYTES_MAX <= UINT32_MAX, "u32 body length");

/* ---- reader ------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};

/* Returns n bytes or NULL (and marks the reader bad) if fewer remain. No
 * arithmetic is done on a NULL base (UBSan rightly objects to NULL + 0). */
static const uint8_t *rd_take(struct rd *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *at = r->p;
    if (n > 0)
        r->p += n;
    return at;
}

static uint8_t rd_u8(struct rd *r)
{
    const uint8_t *b = rd_take(r, 1);
    return b ? b[0] : 0;
}

static uint16_t rd_u16(struct rd *r)
{
    const uint8_t *b = rd_take(r, 2);
    return b ? get_u16le(b) : 0;
}

static uint32_t rd_u32(struct rd *r)
{
    const uint8_t *b = rd_take(r, 4);
    return b ? get_u32le(b) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
    const uint8_t *b = rd_take(r, 8);
    return b ? get_u64le(b) : 0;
}

/* A boolean byte: 0 or 1, anything else is malformed. */
static bool rd_bool(struct rd *r)
{
    uint8_t v = rd_u8(r);
    if (v > 1)
        r->bad = true;
    return v == 1;
}

static void rd_check(struct rd *r, bool ok)
{
    if (!ok)
        r->bad = true;
}

static void rd_span(struct rd *r, uint32_t len, struct inbox_bytes *out)
{
    out->ptr = rd_take(r, len);
    out->len = r->bad ? 0 : len;
}

/* key: u8 length 1..INBOX_KEY_BYTES_MAX, then the bytes. */
static void rd_key(struct rd *r, struct inbox_bytes *out)
{
    uint8_t len = rd_u8(r);
    rd_check(r, len >= INBOX_KEY_BYTES_MIN && len <= INBOX_KEY_BYTES_MAX);
    rd_span(r, len, out);
}

/* str: u16 length min..max, then the bytes. */
static void rd_str(struct rd *r, uint32_t min, uint32_t max,
                   struct inbox_bytes *out)
{
    uint16_t len = rd_u16(r);
    rd_check(r, len >= min && len <= max);
    rd_span(r, len, out);
}

/* payload: u32 length 0..INBOX_PAYLOAD_BYTES_MAX, then the bytes. */
static void rd_payload(struct rd *r, struct inbox_bytes *out)
{
    uint32_t len = rd_u32(r);
    rd_check(r, len <= INBOX_PAYLOAD_BYTES_MAX);
    rd_span(r, len, out);
}

static void rd_msg_id(struct rd *r, uint8_t out[INBOX_MSG_ID_BYTES])
{
    const uint8_t *b = rd_take(r, INBOX_MSG_ID_BYTES);
    if (b)
        memcpy(out, b, INBOX_MSG_ID_BYTES);
    else
        memset(out, 0, INBOX_MSG_ID_BYTES);
}

/* ---- lists -------------------------------------------------------------- */

/* Reads one list element into *out; marks the reader bad if malformed. */
typedef void (*rd_elem_fn)(struct rd *r, void *out);

/* Validates `count` elements now, so that walking them later cannot fail. */
static void rd_list(struct rd *r, uint32_t count, rd_elem_fn elem,
                    void *scratch, struct inbox_iter *it)
{
    it->ptr = r->p;
    for (uint32_t i = 0; i < count && !r->bad; i++)
        elem(r, scratch);
    it->end = r->p;
    it->left = r->bad ? 0 : count;
}

static bool iter_next(struct inbox_iter *it, rd_elem_fn elem, void *out)
{
    if (it->left == 0)
        return false;
    struct rd r = {it->ptr, it->end, false};
    elem(&r, out);
    /* rd_list validated this element when the body was decoded. */
    assert(!r.bad);
    it->ptr = r.p;
    it->left--;
    return true;
}

static void el_addr(struct rd *r, void *out)
{
    rd_str(r, 1, INBOX_NODE_ADDR_BYTES_MAX, out);
}

static void el_key(struct rd *r, void *out)
{
    rd_key(r, out);
}

static void el_target(struct rd *r, void *out)
{
    struct inbox_target *t = out;
    rd_msg_id(r, t->msg_id);
    rd_key(r, &t->inbox);
}

static void el_enqueue_result(struct rd *r, void *out)
{
    struct inbox_enqueue_result *e = out;
    e->code = rd_u16(r);
    e->dedup = rd_bool(r);
    e->seq = rd_u64(r);
    /* Canonical form: a failed inbox carries no seq and no dedup. */
    rd_check(r, e->code == 0 || (!e->dedup && e->seq == 0));
}

static void el_message(struct rd *r, void *out)
{
    struct inbox_message *m = out;
    m->seq = rd_u64(r);
    rd_msg_id(r, m->msg_id);
    m->enqueue_ts_ms = rd_u64(r);
    rd_payload(r, &m->payload);
}

static void el_code_u64(struct rd *r, void *out)
{
    struct inbox_code_u64 *c = out;
    c->code = rd_u16(r);
    c->value = rd_u64(r);
}

static void el_u64(struct rd *r, void *out)
{
    *(uint64_t *)out = rd_u64(r);
}

/* node: u64 id, u8 address count 0..INBOX_NODE_ADDRS_MAX, addresses. */
static void el_node(struct rd *r, void *out)
{
    struct inbox_node *n = out;
    struct inbox_bytes scratch;
    n->node_id = rd_u64(r);
    n->addrs_count = rd_u8(r);
    n->addrs = NULL;
    rd_check(r, n->addrs_count <= INBOX_NODE_ADDRS_MAX);
    rd_list(r, n->addrs_count, el_addr, &scratch, &n->addrs_iter);
}

static void el_shard_status(struct rd *r, void *out)
{
    struct inbox_shard_status *s = out;
    s->shard = rd_u32(r);
    s->role = rd_u8(r);
    rd_check(r, s->role <= INBOX_REPLICA_NONE);
    s->leader_id = rd_u64(r);
    s->term = rd_u64(r);
    s->applied_index = rd_u64(r);
}

bool inbox_next_bytes16(struct inbox_iter *it, struct inbox_bytes *out)
{
    return iter_next(it, el_addr, out);
}

bool inbox_next_key(struct inbox_iter *it, struct inbox_bytes *out)
{
    return iter_next(it, el_key, out);
}

bool inbox_next_target(struct inbox_iter *it, struct inbox_target *out)
{
    return iter_next(it, el_target, out);
}

bool inbox_next_enqueue_result(struct inbox_iter *it,
                               struct inbox_enqueue_result *out)
{
    return iter_next(it, el_enqueue_result, out);
}

bool inbox_next_message(struct inbox_iter *it, struct inbox_message *out)
{
    return iter_next(it, el_message, out);
}

bool inbox_next_code_u64(struct inbox_iter *it, struct inbox_code_u64 *out)
{
    return iter_next(it, el_code_u64, out);
}

bool inbox_next_node(struct inbox_iter *it, struct inbox_node *out)
{
    return iter_next(it, el_node, out);
}

bool inbox_next_u64(struct inbox_iter *it, uint64_t *out)
{
    return iter_next(it, el_u64, out);
}

bool inbox_next_shard_status(struct inbox_iter *it,
                             struct inbox_shard_status *out)
{
    return iter_next(it, el_shard_status, out);
}

/* ---- writer ------------------------------------------------------------- */

struct wr {
    uint8_t *p;
    size_t cap;
    size_t len; /* bytes the encoding needs so far; may exceed cap */
};

static void wr_raw(struct wr *w, const void *src, size_t n)
{
    if (n > 0 && w->len <= w->cap && n <= w->cap - w->len)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void wr_u8(struct wr *w, uint8_t v)
{
    wr_raw(w, &v, 1);
}

static void wr_u16(struct wr *w, uint16_t v)
{
    uint8_t b[2];
    put_u16le(b, v);
    wr_raw(w, b, 2);
}

static void wr_u32(struct wr *w, uint32_t v)
{
    uint8_t b[4];
    put_u32le(b, v);
    wr_raw(w, b, 4);
}

static void wr_u64(struct wr *w, uint64_t v)
{
    uint8_t b[8];
    put_u64le(b, v);
    wr_raw(w, b, 8);
}

static bool span_ok(const struct inbox_bytes *b)
{
    return b->len == 0 || b->ptr != NULL;
}

static int wr_key(struct wr *w, const struct inbox_bytes *k)
{
    if (k->len < INBOX_KEY_BYTES_MIN || k->len > INBOX_KEY_BYTES_MAX ||
        !span_ok(k))
        return INBOX_EKEY_INVALID;
    wr_u8(w, (uint8_t)k->len);
    wr_raw(w, k->ptr, k->len);
    return 0;
}

static int wr_str(struct wr *w, uint32_t min, uint32_t max,
                  const struct inbox_bytes *s)
{
    if (s->len < min || s->len > max || !span_ok(s))
        return INBOX_EINVAL;
    wr_u16(w, (uint16_t)s->len);
    wr_raw(w, s->ptr, s->len);
    return 0;
}

static int wr_payload(struct wr *w, const struct inbox_bytes *p)
{
    if (p->len > INBOX_PAYLOAD_BYTES_MAX || !span_ok(p))
        return INBOX_EPAYLOAD_TOO_LARGE;
    wr_u32(w, p->len);
    wr_raw(w, p->ptr, p->len);
    return 0;
}

/* An element of an encode-side list: from the caller's array when there is
 * one, else from a decoded list's iterator (so a decoded message re-encodes
 * as is; the fuzzer relies on it). */
#define LIST_ELEM(arr, iter, i, next_fn, out)                                  \
    ((arr) != NULL ? (*(out) = (arr)[i], true) : next_fn(&(iter), (out)))

static int wr_node(struct wr *w, const struct inbox_node *n)
{
    if (n->addrs_count > INBOX_NODE_ADDRS_MAX)
        return INBOX_EINVAL;
    wr_u64(w, n->node_id);
    wr_u8(w, (uint8_t)n->addrs_count);
    struct inbox_iter it = n->addrs_iter;
    for (uint32_t i = 0; i < n->addrs_count; i++) {
        struct inbox_bytes a;
        if (!LIST_ELEM(n->addrs, it, i, inbox_next_bytes16, &a))
            return INBOX_EINVAL;
        int rc = wr_str(w, 1, INBOX_NODE_ADDR_BYTES_MAX, &a);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- frame header ------------------------------------------------------- */

/* Header rules shared by encode (-> EINVAL) and decode (-> EPROTO). */
static bool header_ok(const struct inbox_frame_header *h)
{
    uint16_t f = h->flags;
    if (h->version == 0 || (f & ~INBOX_FLAGS_KNOWN) != 0)
        return false;
    if ((f & INBOX_FLAG_ERROR) && !(f & INBOX_FLAG_RESPONSE))
        return false;
    if (f & INBOX_FLAG_PUSH)
        return f == INBOX_FLAG_PUSH && h->opcode == INBOX_OP_NOTIFY &&
               h->request_id == INBOX_REQUEST_ID_PUSH;
    if (h->opcode == INBOX_OP_NOTIFY && !(f & INBOX_FLAG_ERROR))
        return false; /* NOTIFY is only ever a push */
    /* Request id 0 is the push id; an ERROR response may carry it when the
     * offending frame's id could not be read (the connection then closes). */
    return h->request_id != 0 || (f & INBOX_FLAG_ERROR);
}

void inbox_frame_header_encode(uint8_t out[INBOX_FRAME_HEADER_BYTES],
                               const struct inbox_frame_header *h)
{
    assert(header_ok(h));
    assert(h->body_bytes <= INBOX_FRAME_BODY_BYTES_MAX);
    put_u32le(out + 0, INBOX_PROTO_MAGIC);
    out[4] = h->version;
    out[5] = h->opcode;
    put_u16le(out + 6, h->flags);
    put_u64le(out + 8, h->request_id);
    put_u32le(out + 16, h->body_bytes);
    put_u32le(out + 20, 0); /* reserved */
}

int inbox_frame_header_decode(const uint8_t in[INBOX_FRAME_HEADER_BYTES],
                              struct inbox_frame_header *h)
{
    /* Fill every field first, so that a caller answering an error has the
     * request id whenever it could be read. */
    h->version = in[4];
    h->opcode = in[5];
    h->flags = get_u16le(in + 6);
    h->request_id = get_u64le(in + 8);
    h->body_bytes = get_u32le(in + 16);
    if (get_u32le(in + 0) != INBOX_PROTO_MAGIC || get_u32le(in + 20) != 0 ||
        !header_ok(h))
        return INBOX_EPROTO;
    if (h->body_bytes > INBOX_FRAME_BODY_BYTES_MAX)
        return INBOX_EFRAME_TOO_LARGE;
    return 0;
}

/* ---- incremental parser ------------------------------------------------- */

enum { ST_HEADER = 0, ST_BODY = 1, ST_FAILED = 2 };

void inbox_parser_init(struct inbox_parser *p, uint8_t *body_buf,
                       size_t body_buf_bytes)
{
    assert(body_buf != NULL || body_buf_bytes == 0);
    memset(p, 0, sizeof *p);
    p->body_buf = body_buf;
    p->body_cap = body_buf_bytes < INBOX_FRAME_BODY_BYTES_MAX
                      ? (uint32_t)body_buf_bytes
                      : INBOX_FRAME_BODY_BYTES_MAX;
    p->state = ST_HEADER;
}

static int parser_fail(struct inbox_parser *p, int rc)
{
    assert(rc < 0);
    p->state = ST_FAILED;
    p->err = rc;
    return rc;
}

/* A complete header arrived: judge it before any body byte is taken. */
static int parser_header(struct inbox_parser *p, const uint8_t *hb)
{
    int rc = inbox_frame_header_decode(hb, &p->hdr);
    if (rc != 0)
        return rc;
    if (p->hdr.body_bytes > p->body_cap)
        return INBOX_EFRAME_TOO_LARGE;
    if (p->version != 0 && p->hdr.version != p->version)
        return INBOX_EPROTO_VERSION;
    return 0;
}

int inbox_parser_feed(struct inbox_parser *p, const uint8_t *in, size_t len,
                      size_t *consumed_bytes, struct inbox_frame *out)
{
    size_t used = 0;
    *consumed_bytes = 0;
    if (p->state == ST_FAILED)
        return p->err;
    if (len == 0)
        return INBOX_PARSE_MORE;
    assert(in != NULL);

    if (p->state == ST_HEADER) {
        const uint8_t *hb = in;
        if (p->hdr_have == 0 && len >= INBOX_FRAME_HEADER_BYTES) {
            used = INBOX_FRAME_HEADER_BYTES; /* read it in place */
        } else {
            size_t n = INBOX_FRAME_HEADER_BYTES - p->hdr_have;
            used = n < len ? n : len;
            memcpy(p->hdr_buf + p->hdr_have, in, used);
            p->hdr_have = (uint8_t)(p->hdr_have + used);
            if (p->hdr_have < INBOX_FRAME_HEADER_BYTES) {
                *consumed_bytes = used;
                return INBOX_PARSE_MORE;
            }
            hb = p->hdr_buf;
        }
        p->hdr_have = 0;
        int rc = parser_header(p, hb);
        if (rc != 0) {
            out->hdr = p->hdr;
            out->body = NULL;
            *consumed_bytes = used;
            return parser_fail(p, rc);
        }
        if (p->hdr.body_bytes <= len - used) {
            /* The whole body is in this input: hand it out in place. */
            out->hdr = p->hdr;
            out->body = in + used;
            *consumed_bytes = used + p->hdr.body_bytes;
            return INBOX_PARSE_FRAME;
        }
        p->state = ST_BODY;
        p->body_have = 0;
    }

    assert(p->state == ST_BODY);
    assert(p->body_have < p->hdr.body_bytes);
    assert(p->hdr.body_bytes <= p->body_cap);
    size_t need = p->hdr.body_bytes - p->body_have;
    size_t n = need < len - used ? need : len - used;
    if (n > 0)
        memcpy(p->body_buf + p->body_have, in + used, n);
    p->body_have += (uint32_t)n;
    *consumed_bytes = used + n;
    if (p->body_have < p->hdr.body_bytes)
        return INBOX_PARSE_MORE;
    p->state = ST_HEADER;
    out->hdr = p->hdr;
    out->body = p->body_buf;
    return INBOX_PARSE_FRAME;
}

/* ---- bodies: kinds ------------------------------------------------------ */

/* The body layout a frame carries, from its opcode and flags. */
enum kind {
    K_UNKNOWN,
    K_EMPTY,
    K_ERROR,
    K_NOTIFY,
    K_HELLO_REQ,
    K_HELLO_RESP,
    K_ENQUEUE_REQ,
    K_ENQUEUE_RESP,
    K_MANY_REQ,
    K_MANY_RESP,
    K_FETCH_REQ,
    K_FETCH_RESP,
    K_KEY_U64_REQ, /* ACK, SEEN_SET requests: key, u64 */
    K_U64_RESP,    /* ACK, SEEN_SET responses and admin responses: u64 */
    K_KEYS_REQ,
    K_CODE_U64_RESP,
    K_ROUTE_RESP,
    K_STATUS_RESP,
    K_NODE_REQ,
    K_REMOVE_NODE_REQ,
    K_TRANSFER_REQ,
    K_MOVE_REQ,
    K_SNAPSHOT_REQ,
    K_RAFT_REQ,
};

static enum kind kind_of(const struct inbox_frame_header *h)
{
    if (h->flags & INBOX_FLAG_ERROR)
        return K_ERROR;
    if (h->flags & INBOX_FLAG_PUSH)
        return K_NOTIFY;
    bool resp = (h->flags & INBOX_FLAG_RESPONSE) != 0;
    switch (h->opcode) {
    case INBOX_OP_HELLO:
        return resp ? K_HELLO_RESP : K_HELLO_REQ;
    case INBOX_OP_PING:
        return K_EMPTY;
    case INBOX_OP_ENQUEUE:
        return resp ? K_ENQUEUE_RESP : K_ENQUEUE_REQ;
    case INBOX_OP_ENQUEUE_MANY:
        return resp ? K_MANY_RESP : K_MANY_REQ;
    case INBOX_OP_FETCH:
        return resp ? K_FETCH_RESP : K_FETCH_REQ;
    case INBOX_OP_ACK:
    case INBOX_OP_SEEN_SET:
        return resp ? K_U64_RESP : K_KEY_U64_REQ;
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
        return resp ? K_CODE_U64_RESP : K_KEYS_REQ;
    case INBOX_OP_UNWATCH:
        return resp ? K_EMPTY : K_KEYS_REQ;
    case INBOX_OP_ROUTE:
        return resp ? K_ROUTE_RESP : K_EMPTY;
    case INBOX_OP_STATUS:
        return resp ? K_STATUS_RESP : K_EMPTY;
    case INBOX_OP_ADD_NODE:
        return resp ? K_U64_RESP : K_NODE_REQ;
    case INBOX_OP_REMOVE_NODE:
        return resp ? K_U64_RESP : K_REMOVE_NODE_REQ;
    case INBOX_OP_TRANSFER_LEADER:
        return resp ? K_U64_RESP : K_TRANSFER_REQ;
    case INBOX_OP_MOVE_REPLICA:
        return resp ? K_U64_RESP : K_MOVE_REQ;
    case INBOX_OP_SNAPSHOT:
        return resp ? K_U64_RESP : K_SNAPSHOT_REQ;
    case INBOX_OP_RAFT:
        return resp ? K_EMPTY : K_RAFT_REQ;
    default:
        return K_UNKNOWN;
    }
}

/* The largest list count allowed in a keys request, per opcode. */
static uint32_t keys_max(uint8_t opcode)
{
    return opcode == INBOX_OP_SEEN_GET ? INBOX_SEEN_GET_INBOXES_MAX
                                       : INBOX_WATCH_INBOXES_MAX;
}

/* The u64 of a K_KEY_U64_REQ / K_U64_RESP body, wherever it lives. */
static uint64_t *u64_field(struct inbox_msg *m)
{
    switch (m->hdr.opcode) {
    case INBOX_OP_ACK:
        return m->hdr.flags & INBOX_FLAG_RESPONSE ? &m->body.ack_resp.acked_seq
                                                  : &m->body.ack_req.up_to_seq;
    case INBOX_OP_SEEN_SET:
        return m->hdr.flags & INBOX_FLAG_RESPONSE ? &m->body.seen_set_resp.ts_ms
                                                  : &m->body.seen_set_req.ts_ms;
    default:
        return &m->body.admin_resp.epoch;
    }
}

static struct inbox_bytes *key_field(struct inbox_msg *m)
{
    return m->hdr.opcode == INBOX_OP_ACK ? &m->body.ack_req.inbox
                                         : &m->body.seen_set_req.inbox;
}

/* ---- bodies: decode ----------------------------------------------------- */

static void dec_error(struct rd *r, struct inbox_error *e)
{
    e->code = rd_u16(r);
    rd_check(r, e->code != 0);
    rd_str(r, 0, INBOX_FRAME_TEXT_BYTES_MAX, &e->message);
    rd_str(r, 0, INBOX_FRAME_TEXT_BYTES_MAX, &e->detail);
    if (r->bad)
        return;
    struct rd d = {e->detail.ptr, e->detail.ptr, false};
    if (e->detail.len > 0)
        d.end = e->detail.ptr + e->detail.len;
    switch (-(int)e->code) {
    case INBOX_ENOT_LEADER:
        e->shard = rd_u32(&d);
        el_node(&d, &e->leader);
        break;
    case INBOX_EPROTO_VERSION:
        e->version_min = rd_u8(&d);
        e->version_max = rd_u8(&d);
        rd_check(&d, e->version_min >= 1 && e->version_min <= e->version_max);
        break;
    default:
        return; /* unknown detail: kept raw, not judged */
    }
    rd_check(r, !d.bad && d.p == d.end);
}

static void dec_hello_req(struct rd *r, struct inbox_hello_req *b)
{
    b->version_min = rd_u8(r);
    b->version_max = rd_u8(r);
    rd_check(r, b->version_min >= 1 && b->version_min <= b->version_max);
    rd_str(r, 0, INBOX_FRAME_TEXT_BYTES_MAX, &b->client_name);
}

static void dec_hello_resp(struct rd *r, struct inbox_hello_resp *b)
{
    b->version = rd_u8(r);
    rd_check(r, b->version >= 1);
    b->node_id = rd_u64(r);
    b->body_bytes_max = rd_u32(r);
    b->shard_count = rd_u32(r);
    rd_check(r, b->shard_count <= INBOX_SHARD_COUNT_MAX);
}

static void dec_enqueue_req(struct rd *r, struct inbox_enqueue_req *b)
{
    rd_msg_id(r, b->msg_id);
    b->ttl_ms = rd_u64(r);
    rd_key(r, &b->inbox);
    rd_payload(r, &b->payload);
}

static void dec_many_req(struct rd *r, struct inbox_enqueue_many_req *b)
{
    struct inbox_target scratch;
    b->ttl_ms = rd_u64(r);
    rd_payload(r, &b->payload);
    b->count = rd_u16(r);
    rd_check(r, b->count >= 1 && b->count <= INBOX_FANOUT_INBOXES_MAX);
    b->targets = NULL;
    rd_list(r, b->count, el_target, &scratch, &b->iter);
}

static void dec_many_resp(struct rd *r, struct inbox_enqueue_many_resp *b)
{
    struct inbox_enqueue_result scratch;
    b->count = rd_u16(r);
    rd_check(r, b->count >= 1 && b->count <= INBOX_FANOUT_INBOXES_MAX);
    b->results = NULL;
    rd_list(r, b->count, el_enqueue_result, &scratch, &b->iter);
}

static void dec_fetch_req(struct rd *r, struct inbox_fetch_req *b)
{
    rd_key(r, &b->inbox);
    b->after_seq = rd_u64(r);
    b->messages_max = rd_u32(r);
    b->bytes_max = rd_u32(r);
    b->wait_ms = rd_u32(r);
    b->flags = rd_u8(r);
    rd_check(r, (b->flags & ~INBOX_FETCH_STALE_OK) == 0);
}

static void dec_fetch_resp(struct rd *r, struct inbox_fetch_resp *b)
{
    struct inbox_message scratch;
    b->acked_seq = rd_u64(r);
    b->last_seq = rd_u64(r);
    b->stale = rd_bool(r);
    b->count = rd_u16(r);
    rd_check(r, b->count <= INBOX_FETCH_MESSAGES_MAX);
    b->messages = NULL;
    rd_list(r, b->count, el_message, &scratch, &b->iter);
}

static void dec_keys_req(struct rd *r, uint8_t opcode, struct inbox_keys_req *b)
{
    struct inbox_bytes scratch;
    b->flags = rd_u8(r);
    uint8_t allowed = opcode == INBOX_OP_SEEN_GET ? INBOX_FETCH_STALE_OK : 0;
    rd_check(r, (b->flags & ~allowed) == 0);
    b->count = rd_u16(r);
    rd_check(r, b->count >= 1 && b->count <= keys_max(opcode));
    b->keys = NULL;
    rd_list(r, b->count, el_key, &scratch, &b->iter);
}

static void dec_code_u64_resp(struct rd *r, struct inbox_code_u64_resp *b)
{
    struct inbox_code_u64 scratch;
    b->count = rd_u16(r);
    rd_check(r, b->count >= 1 && b->count <= INBOX_SEEN_GET_INBOXES_MAX &&
                    b->count <= INBOX_WATCH_INBOXES_MAX);
    b->items = NULL;
    rd_list(r, b->count, el_code_u64, &scratch, &b->iter);
}

static void dec_route_resp(struct rd *r, struct inbox_route_resp *b)
{
    struct inbox_node node;
    uint64_t leader;
    b->epoch = rd_u64(r);
    b->hash = rd_u8(r);
    rd_check(r, b->hash == INBOX_HASH_XXH3_64);
    b->nodes_count = rd_u16(r);
    rd_check(r, b->nodes_count <= INBOX_ROUTE_NODES_MAX);
    b->nodes = NULL;
    rd_list(r, b->nodes_count, el_node, &node, &b->nodes_iter);
    b->shard_count = rd_u32(r);
    rd_check(r, b->shard_count >= 1 && b->shard_count <= INBOX_SHARD_COUNT_MAX);
    b->leaders = NULL;
    rd_list(r, b->shard_count, el_u64, &leader, &b->leaders_iter);
}

static void dec_status_resp(struct rd *r, struct inbox_status_resp *b)
{
    struct inbox_shard_status scratch;
    b->node_id = rd_u64(r);
    b->uptime_ms = rd_u64(r);
    b->count = rd_u32(r);
    rd_check(r, b->count <= INBOX_STATUS_SHARDS_MAX);
    b->shards = NULL;
    rd_list(r, b->count, el_shard_status, &scratch, &b->iter);
}

static void dec_admin_req(struct rd *r, enum kind k, struct inbox_msg *m)
{
    switch (k) {
    case K_NODE_REQ:
        el_node(r, &m->body.add_node_req);
        rd_check(r, m->body.add_node_req.node_id != 0 &&
                        m->body.add_node_req.addrs_count >= 1);
        break;
    case K_REMOVE_NODE_REQ:
        m->body.remove_node_req.node_id = rd_u64(r);
        rd_check(r, m->body.remove_node_req.node_id != 0);
        break;
    case K_TRANSFER_REQ:
        m->body.transfer_leader_req.shard = rd_u32(r);
        m->body.transfer_leader_req.to_node_id = rd_u64(r);
        break;
    case K_MOVE_REQ:
        m->body.move_replica_req.shard = rd_u32(r);
        m->body.move_replica_req.from_node_id = rd_u64(r);
        m->body.move_replica_req.to_node_id = rd_u64(r);
        rd_check(r, m->body.move_replica_req.from_node_id != 0 &&
                        m->body.move_replica_req.to_node_id != 0);
        break;
    default:
        assert(k == K_SNAPSHOT_REQ);
        m->body.snapshot_req.shard = rd_u32(r);
        break;
    }
}

static void dec_body(struct rd *r, enum kind k, struct inbox_msg *m)
{
    switch (k) {
    case K_UNKNOWN:
    case K_EMPTY:
        break;
    case K_ERROR:
        dec_error(r, &m->body.error);
        break;
    case K_NOTIFY:
        rd_key(r, &m->body.notify.inbox);
        m->body.notify.last_seq = rd_u64(r);
        break;
    case K_HELLO_REQ:
        dec_hello_req(r, &m->body.hello_req);
        break;
    case K_HELLO_RESP:
        dec_hello_resp(r, &m->body.hello_resp);
        break;
    case K_ENQUEUE_REQ:
        dec_enqueue_req(r, &m->body.enqueue_req);
        break;
    case K_ENQUEUE_RESP:
        m->body.enqueue_resp.seq = rd_u64(r);
        m->body.enqueue_resp.dedup = rd_bool(r);
        break;
    case K_MANY_REQ:
        dec_many_req(r, &m->body.enqueue_many_req);
        break;
    case K_MANY_RESP:
        dec_many_resp(r, &m->body.enqueue_many_resp);
        break;
    case K_FETCH_REQ:
        dec_fetch_req(r, &m->body.fetch_req);
        break;
    case K_FETCH_RESP:
        dec_fetch_resp(r, &m->body.fetch_resp);
        break;
    case K_KEY_U64_REQ:
        rd_key(r, key_field(m));
        *u64_field(m) = rd_u64(r);
        break;
    case K_U64_RESP:
        *u64_field(m) = rd_u64(r);
        break;
    case K_KEYS_REQ:
        dec_keys_req(r, m->hdr.opcode, &m->body.keys_req);
        break;
    case K_CODE_U64_RESP:
        dec_code_u64_resp(r, &m->body.code_u64_resp);
        break;
    case K_ROUTE_RESP:
        dec_route_resp(r, &m->body.route_resp);
        break;
    case K_STATUS_RESP:
        dec_status_resp(r, &m->body.status_resp);
        break;
    case K_RAFT_REQ: {
        uint32_t len = rd_u32(r);
        rd_check(r, len >= 1 && len <= INBOX_RAFT_BATCH_BYTES_MAX);
        rd_span(r, len, &m->body.raft_req.batch);
        break;
    }
    default:
        dec_admin_req(r, k, m);
        break;
    }
}

int inbox_msg_decode(const struct inbox_frame_header *h, const uint8_t *body,
                     struct inbox_msg *m)
{
    static const uint8_t empty[1];
    memset(m, 0, sizeof *m);
    m->hdr = *h;
    enum kind k = kind_of(h);
    if (k == K_UNKNOWN)
        return INBOX_EUNKNOWN_OP;
    if (body == NULL) {
        if (h->body_bytes != 0)
            return INBOX_EPROTO;
        body = empty;
    }
    struct rd r = {body, body + h->body_bytes, false};
    dec_body(&r, k, m);
    /* Every byte must be accounted for: no trailing garbage. */
    if (r.bad || r.p != r.end)
        return INBOX_EPROTO;
    return 0;
}

/* ---- bodies: encode ----------------------------------------------------- */

static int enc_error(struct wr *w, const struct inbox_error *e)
{
    if (e->code == 0)
        return INBOX_EINVAL;
    wr_u16(w, e->code);
    int rc = wr_str(w, 0, INBOX_FRAME_TEXT_BYTES_MAX, &e->message);
    if (rc != 0)
        return rc;
    size_t at = w->len;
    wr_u16(w, 0); /* detail length, patched below */
    switch (-(int)e->code) {
    case INBOX_ENOT_LEADER:
        wr_u32(w, e->shard);
        rc = wr_node(w, &e->leader);
        break;
    case INBOX_EPROTO_VERSION:
        if (e->version_min < 1 || e->version_min > e->version_max)
            return INBOX_EINVAL;
        wr_u8(w, e->version_min);
        wr_u8(w, e->version_max);
        break;
    default:
        if (!span_ok(&e->detail))
            return INBOX_EINVAL;
        wr_raw(w, e->detail.ptr, e->detail.len);
        break;
    }
    size_t detail_len = w->len - at - 2;
    if (rc != 0)
        return rc;
    if (detail_len > INBOX_FRAME_TEXT_BYTES_MAX)
        return INBOX_EINVAL;
    if (at + 2 <= w->cap)
        put_u16le(w->p + at, (uint16_t)detail_len);
    return 0;
}

static int enc_many_req(struct wr *w, const struct inbox_enqueue_many_req *b)
{
    if (b->count < 1 || b->count > INBOX_FANOUT_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    wr_u64(w, b->ttl_ms);
    int rc = wr_payload(w, &b->payload);
    if (rc != 0)
        return rc;
    wr_u16(w, (uint16_t)b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_target t;
        if (!LIST_ELEM(b->targets, it, i, inbox_next_target, &t))
            return INBOX_EINVAL;
        wr_raw(w, t.msg_id, INBOX_MSG_ID_BYTES);
        if ((rc = wr_key(w, &t.inbox)) != 0)
            return rc;
    }
    return 0;
}

static int enc_many_resp(struct wr *w, const struct inbox_enqueue_many_resp *b)
{
    if (b->count < 1 || b->count > INBOX_FANOUT_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    wr_u16(w, (uint16_t)b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_enqueue_result e;
        if (!LIST_ELEM(b->results, it, i, inbox_next_enqueue_result, &e))
            return INBOX_EINVAL;
        if (e.code != 0 && (e.dedup || e.seq != 0))
            return INBOX_EINVAL;
        wr_u16(w, e.code);
        wr_u8(w, e.dedup ? 1 : 0);
        wr_u64(w, e.seq);
    }
    return 0;
}

static int enc_fetch_req(struct wr *w, const struct inbox_fetch_req *b)
{
    if ((b->flags & ~INBOX_FETCH_STALE_OK) != 0)
        return INBOX_EINVAL;
    int rc = wr_key(w, &b->inbox);
    if (rc != 0)
        return rc;
    wr_u64(w, b->after_seq);
    wr_u32(w, b->messages_max);
    wr_u32(w, b->bytes_max);
    wr_u32(w, b->wait_ms);
    wr_u8(w, b->flags);
    return 0;
}

static int enc_fetch_resp(struct wr *w, const struct inbox_fetch_resp *b)
{
    if (b->count > INBOX_FETCH_MESSAGES_MAX)
        return INBOX_EINVAL;
    wr_u64(w, b->acked_seq);
    wr_u64(w, b->last_seq);
    wr_u8(w, b->stale ? 1 : 0);
    wr_u16(w, (uint16_t)b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_message msg;
        if (!LIST_ELEM(b->messages, it, i, inbox_next_message, &msg))
            return INBOX_EINVAL;
        wr_u64(w, msg.seq);
        wr_raw(w, msg.msg_id, INBOX_MSG_ID_BYTES);
        wr_u64(w, msg.enqueue_ts_ms);
        int rc = wr_payload(w, &msg.payload);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int enc_keys_req(struct wr *w, uint8_t opcode,
                        const struct inbox_keys_req *b)
{
    uint8_t allowed = opcode == INBOX_OP_SEEN_GET ? INBOX_FETCH_STALE_OK : 0;
    if ((b->flags & ~allowed) != 0)
        return INBOX_EINVAL;
    if (b->count < 1 || b->count > keys_max(opcode))
        return INBOX_ETOO_MANY_INBOXES;
    wr_u8(w, b->flags);
    wr_u16(w, (uint16_t)b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_bytes k;
        if (!LIST_ELEM(b->keys, it, i, inbox_next_key, &k))
            return INBOX_EINVAL;
        int rc = wr_key(w, &k);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int enc_code_u64_resp(struct wr *w, const struct inbox_code_u64_resp *b)
{
    if (b->count < 1 || b->count > INBOX_SEEN_GET_INBOXES_MAX ||
        b->count > INBOX_WATCH_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    wr_u16(w, (uint16_t)b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_code_u64 c;
        if (!LIST_ELEM(b->items, it, i, inbox_next_code_u64, &c))
            return INBOX_EINVAL;
        wr_u16(w, c.code);
        wr_u64(w, c.value);
    }
    return 0;
}

static int enc_route_resp(struct wr *w, const struct inbox_route_resp *b)
{
    if (b->hash != INBOX_HASH_XXH3_64 ||
        b->nodes_count > INBOX_ROUTE_NODES_MAX || b->shard_count < 1 ||
        b->shard_count > INBOX_SHARD_COUNT_MAX)
        return INBOX_EINVAL;
    wr_u64(w, b->epoch);
    wr_u8(w, b->hash);
    wr_u16(w, (uint16_t)b->nodes_count);
    struct inbox_iter it = b->nodes_iter;
    for (uint32_t i = 0; i < b->nodes_count; i++) {
        struct inbox_node n;
        if (!LIST_ELEM(b->nodes, it, i, inbox_next_node, &n))
            return INBOX_EINVAL;
        int rc = wr_node(w, &n);
        if (rc != 0)
            return rc;
    }
    wr_u32(w, b->shard_count);
    it = b->leaders_iter;
    for (uint32_t i = 0; i < b->shard_count; i++) {
        uint64_t leader;
        if (!LIST_ELEM(b->leaders, it, i, inbox_next_u64, &leader))
            return INBOX_EINVAL;
        wr_u64(w, leader);
    }
    return 0;
}

static int enc_status_resp(struct wr *w, const struct inbox_status_resp *b)
{
    if (b->count > INBOX_STATUS_SHARDS_MAX)
        return INBOX_EINVAL;
    wr_u64(w, b->node_id);
    wr_u64(w, b->uptime_ms);
    wr_u32(w, b->count);
    struct inbox_iter it = b->iter;
    for (uint32_t i = 0; i < b->count; i++) {
        struct inbox_shard_status s;
        if (!LIST_ELEM(b->shards, it, i, inbox_next_shard_status, &s) ||
            s.role > INBOX_REPLICA_NONE)
            return INBOX_EINVAL;
        wr_u32(w, s.shard);
        wr_u8(w, s.role);
        wr_u64(w, s.leader_id);
        wr_u64(w, s.term);
        wr_u64(w, s.applied_index);
    }
    return 0;
}

static int enc_hello(struct wr *w, enum kind k, const struct inbox_msg *m)
{
    if (k == K_HELLO_REQ) {
        const struct inbox_hello_req *b = &m->body.hello_req;
        if (b->version_min < 1 || b->version_min > b->version_max)
            return INBOX_EINVAL;
        wr_u8(w, b->version_min);
        wr_u8(w, b->version_max);
        return wr_str(w, 0, INBOX_FRAME_TEXT_BYTES_MAX, &b->client_name);
    }
    const struct inbox_hello_resp *b = &m->body.hello_resp;
    if (b->version < 1 || b->shard_count > INBOX_SHARD_COUNT_MAX)
        return INBOX_EINVAL;
    wr_u8(w, b->version);
    wr_u64(w, b->node_id);
    wr_u32(w, b->body_bytes_max);
    wr_u32(w, b->shard_count);
    return 0;
}

static int enc_admin_req(struct wr *w, enum kind k, const struct inbox_msg *m)
{
    switch (k) {
    case K_NODE_REQ:
        if (m->body.add_node_req.node_id == 0 ||
            m->body.add_node_req.addrs_count < 1)
            return INBOX_EINVAL;
        return wr_node(w, &m->body.add_node_req);
    case K_REMOVE_NODE_REQ:
        if (m->body.remove_node_req.node_id == 0)
            return INBOX_EINVAL;
        wr_u64(w, m->body.remove_node_req.node_id);
        return 0;
    case K_TRANSFER_REQ:
        wr_u32(w, m->body.transfer_leader_req.shard);
        wr_u64(w, m->body.transfer_leader_req.to_node_id);
        return 0;
    case K_MOVE_REQ:
        if (m->body.move_replica_req.from_node_id == 0 ||
            m->body.move_replica_req.to_node_id == 0)
            return INBOX_EINVAL;
        wr_u32(w, m->body.move_replica_req.shard);
        wr_u64(w, m->body.move_replica_req.from_node_id);
        wr_u64(w, m->body.move_replica_req.to_node_id);
        return 0;
    default:
        assert(k == K_SNAPSHOT_REQ);
        wr_u32(w, m->body.snapshot_req.shard);
        return 0;
    }
}

static int enc_body(struct wr *w, enum kind k, const struct inbox_msg *m)
{
    /* u64_field/key_field only pick an address; nothing is written. */
    struct inbox_msg *mm = (struct inbox_msg *)(uintptr_t)m;
    int rc;
    switch (k) {
    case K_UNKNOWN:
        return INBOX_EINVAL;
    case K_EMPTY:
        return 0;
    case K_ERROR:
        return enc_error(w, &m->body.error);
    case K_NOTIFY:
        if ((rc = wr_key(w, &m->body.notify.inbox)) != 0)
            return rc;
        wr_u64(w, m->body.notify.last_seq);
        return 0;
    case K_HELLO_REQ:
    case K_HELLO_RESP:
        return enc_hello(w, k, m);
    case K_ENQUEUE_REQ:
        wr_raw(w, m->body.enqueue_req.msg_id, INBOX_MSG_ID_BYTES);
        wr_u64(w, m->body.enqueue_req.ttl_ms);
        if ((rc = wr_key(w, &m->body.enqueue_req.inbox)) != 0)
            return rc;
        return wr_payload(w, &m->body.enqueue_req.payload);
    case K_ENQUEUE_RESP:
        wr_u64(w, m->body.enqueue_resp.seq);
        wr_u8(w, m->body.enqueue_resp.dedup ? 1 : 0);
        return 0;
    case K_MANY_REQ:
        return enc_many_req(w, &m->body.enqueue_many_req);
    case K_MANY_RESP:
        return enc_many_resp(w, &m->body.enqueue_many_resp);
    case K_FETCH_REQ:
        return enc_fetch_req(w, &m->body.fetch_req);
    case K_FETCH_RESP:
        return enc_fetch_resp(w, &m->body.fetch_resp);
    case K_KEY_U64_REQ:
        if ((rc = wr_key(w, key_field(mm))) != 0)
            return rc;
        wr_u64(w, *u64_field(mm));
        return 0;
    case K_U64_RESP:
        wr_u64(w, *u64_field(mm));
        return 0;
    case K_KEYS_REQ:
        return enc_keys_req(w, m->hdr.opcode, &m->body.keys_req);
    case K_CODE_U64_RESP:
        return enc_code_u64_resp(w, &m->body.code_u64_resp);
    case K_ROUTE_RESP:
        return enc_route_resp(w, &m->body.route_resp);
    case K_STATUS_RESP:
        return enc_status_resp(w, &m->body.status_resp);
    case K_RAFT_REQ: {
        const struct inbox_bytes *b = &m->body.raft_req.batch;
        if (b->len < 1 || b->len > INBOX_RAFT_BATCH_BYTES_MAX || !span_ok(b))
            return INBOX_EINVAL;
        wr_u32(w, b->len);
        wr_raw(w, b->ptr, b->len);
        return 0;
    }
    default:
        return enc_admin_req(w, k, m);
    }
}

#ifndef NDEBUG
/* What the encoder writes, the decoder accepts (the fuzzer checks the
 * converse). Debug and sanitizer builds pay for this; release builds not. */
static bool frame_decodes(const uint8_t *frame)
{
    struct inbox_frame_header h;
    struct inbox_msg m;
    return inbox_frame_header_decode(frame, &h) == 0 &&
           inbox_msg_decode(&h, frame + INBOX_FRAME_HEADER_BYTES, &m) == 0;
}
#endif

int inbox_msg_encode(const struct inbox_msg *m, uint8_t *out, size_t cap,
                     size_t *frame_bytes)
{
    assert(out != NULL || cap == 0);
    *frame_bytes = 0;
    struct inbox_frame_header h = m->hdr;
    if (!header_ok(&h))
        return INBOX_EINVAL;
    struct wr w = {out, cap, INBOX_FRAME_HEADER_BYTES};
    int rc = enc_body(&w, kind_of(&h), m);
    if (rc != 0)
        return rc;
    size_t body_bytes = w.len - INBOX_FRAME_HEADER_BYTES;
    if (body_bytes > INBOX_FRAME_BODY_BYTES_MAX)
        return INBOX_EFRAME_TOO_LARGE;
    *frame_bytes = w.len;
    if (w.len > cap)
        return INBOX_ERANGE;
    h.body_bytes = (uint32_t)body_bytes;
    inbox_frame_header_encode(out, &h);
    assert(frame_decodes(out));
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

const char *inbox_op_name(uint8_t opcode)
{
    switch (opcode) {
    case INBOX_OP_HELLO:
        return "HELLO";
    case INBOX_OP_PING:
        return "PING";
    case INBOX_OP_ENQUEUE:
        return "ENQUEUE";
    case INBOX_OP_ENQUEUE_MANY:
        return "ENQUEUE_MANY";
    case INBOX_OP_FETCH:
        return "FETCH";
    case INBOX_OP_ACK:
        return "ACK";
    case INBOX_OP_SEEN_SET:
        return "SEEN_SET";
    case INBOX_OP_SEEN_GET:
        return "SEEN_GET";
    case INBOX_OP_WATCH:
        return "WATCH";
    case INBOX_OP_UNWATCH:
        return "UNWATCH";
    case INBOX_OP_NOTIFY:
        return "NOTIFY";
    case INBOX_OP_ROUTE:
        return "ROUTE";
    case INBOX_OP_STATUS:
        return "STATUS";
    case INBOX_OP_ADD_NODE:
        return "ADD_NODE";
    case INBOX_OP_REMOVE_NODE:
        return "REMOVE_NODE";
    case INBOX_OP_TRANSFER_LEADER:
        return "TRANSFER_LEADER";
    case INBOX_OP_MOVE_REPLICA:
        return "MOVE_REPLICA";
    case INBOX_OP_SNAPSHOT:
        return "SNAPSHOT";
    case INBOX_OP_RAFT:
        return "RAFT";
    default:
        return NULL;
    }
}

bool inbox_err_retryable(int rc)
{
    switch (rc) {
    case INBOX_ESHUTDOWN:
    case INBOX_ETIMEOUT:
    case INBOX_EBUSY:
    case INBOX_ENOT_LEADER:
    case INBOX_EPROPOSAL_DROPPED:
    case INBOX_ETOO_MANY_PROPOSALS:
    case INBOX_ECONF_CHANGE_PENDING:
    case INBOX_ESTALE_READ:
    case INBOX_ETRANSFER_IN_PROGRESS:
    case INBOX_EINBOX_FULL_MESSAGES:
    case INBOX_EINBOX_FULL_BYTES:
        return true;
    default:
        return false;
    }
}
