/*
 * command.c — encode and decode inbox commands (Raft entry payloads).
 *
 * Layout (all integers little-endian; docs/store.md has the byte table):
 *
 *   header        u8 version=1 | u8 type | u16 reserved=0 | u64 leader_ts_ms
 *   ENQUEUE       u8 inbox_len | inbox | msg_id[16] | u64 ttl_ms
 *                 | u32 payload_len | payload
 *   ENQUEUE_MANY  u64 ttl_ms | u32 payload_len | payload | u16 count
 *                 | count x (u8 inbox_len | inbox | msg_id[16])
 *   ACK           u8 inbox_len | inbox | u64 ack_seq
 *   SEEN_SET      u8 inbox_len | inbox | u64 seen_ts_ms
 *
 * The decoder reads through a bounds-checked cursor: every read first
 * checks that the bytes are there, and every length is checked against
 * its limit before it is used to advance.
 */
#include "command.h"

#include <assert.h>
#include <string.h>

#include "inbox/endian.h"
#include "inbox/error.h"

_Static_assert(COMMAND_HEADER_BYTES + 8u + 4u + 2u <=
                   INBOX_COMMAND_HEADER_BYTES_MAX,
               "ENQUEUE_MANY fixed part fits the header bound");
_Static_assert(INBOX_KEY_BYTES_MAX <= 255u, "inbox_len is one byte");
_Static_assert(INBOX_FANOUT_INBOXES_MAX <= 65535u, "count is two bytes");

/* ---- sizes --------------------------------------------------------------- */

size_t command_bytes_enqueue(size_t inbox_len, size_t payload_len)
{
    return COMMAND_HEADER_BYTES + 1 + inbox_len + INBOX_MSG_ID_BYTES + 8 + 4 +
           payload_len;
}

size_t command_bytes_enqueue_many(const struct command_target *targets,
                                  size_t targets_count, size_t payload_len)
{
    size_t n = COMMAND_HEADER_BYTES + 8 + 4 + payload_len + 2;
    for (size_t i = 0; i < targets_count; i++)
        n += 1 + (size_t)targets[i].inbox_len + INBOX_MSG_ID_BYTES;
    return n;
}

size_t command_bytes_ack(size_t inbox_len)
{
    return COMMAND_HEADER_BYTES + 1 + inbox_len + 8;
}

size_t command_bytes_seen_set(size_t inbox_len)
{
    return COMMAND_HEADER_BYTES + 1 + inbox_len + 8;
}

/* ---- encode -------------------------------------------------------------- */

static int check_key(size_t inbox_len, const uint8_t *inbox)
{
    if (inbox == NULL || inbox_len < INBOX_KEY_BYTES_MIN ||
        inbox_len > INBOX_KEY_BYTES_MAX)
        return INBOX_EKEY_INVALID;
    return 0;
}

static uint8_t *put_header(uint8_t *p, uint8_t type, uint64_t ts)
{
    p[0] = COMMAND_VERSION;
    p[1] = type;
    put_u16le(p + 2, 0);
    put_u64le(p + 4, ts);
    return p + COMMAND_HEADER_BYTES;
}

static uint8_t *put_key(uint8_t *p, const uint8_t *inbox, size_t inbox_len)
{
    p[0] = (uint8_t)inbox_len;
    memcpy(p + 1, inbox, inbox_len);
    return p + 1 + inbox_len;
}

int command_encode_enqueue(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                           const uint8_t *inbox, size_t inbox_len,
                           const uint8_t msg_id[INBOX_MSG_ID_BYTES],
                           uint64_t ttl_ms, const void *payload,
                           size_t payload_len, size_t *len_out)
{
    int rc = check_key(inbox_len, inbox);
    if (rc != 0)
        return rc;
    if (payload_len > INBOX_PAYLOAD_BYTES_MAX ||
        (payload_len > 0 && payload == NULL))
        return INBOX_EPAYLOAD_TOO_LARGE;
    if (ttl_ms > INBOX_TTL_MS_MAX || msg_id == NULL)
        return INBOX_ERANGE;
    size_t need = command_bytes_enqueue(inbox_len, payload_len);
    if (need > cap)
        return INBOX_ERANGE;
    uint8_t *p = put_header(buf, COMMAND_ENQUEUE, leader_ts_ms);
    p = put_key(p, inbox, inbox_len);
    memcpy(p, msg_id, INBOX_MSG_ID_BYTES);
    p += INBOX_MSG_ID_BYTES;
    put_u64le(p, ttl_ms);
    put_u32le(p + 8, (uint32_t)payload_len);
    p += 12;
    if (payload_len > 0)
        memcpy(p, payload, payload_len);
    p += payload_len;
    assert((size_t)(p - buf) == need);
    *len_out = need;
    return 0;
}

int command_encode_enqueue_many(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                                uint64_t ttl_ms, const void *payload,
                                size_t payload_len,
                                const struct command_target *targets,
                                size_t targets_count, size_t *len_out)
{
    if (targets_count == 0 || targets_count > INBOX_FANOUT_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    for (size_t i = 0; i < targets_count; i++) {
        int rc = check_key(targets[i].inbox_len, targets[i].inbox);
        if (rc != 0)
            return rc;
        if (targets[i].msg_id == NULL)
            return INBOX_EINVAL;
    }
    if (payload_len > INBOX_PAYLOAD_BYTES_MAX ||
        (payload_len > 0 && payload == NULL))
        return INBOX_EPAYLOAD_TOO_LARGE;
    if (ttl_ms > INBOX_TTL_MS_MAX)
        return INBOX_ERANGE;
    size_t need =
        command_bytes_enqueue_many(targets, targets_count, payload_len);
    if (need > cap)
        return INBOX_ERANGE;
    uint8_t *p = put_header(buf, COMMAND_ENQUEUE_MANY, leader_ts_ms);
    put_u64le(p, ttl_ms);
    put_u32le(p + 8, (uint32_t)payload_len);
    p += 12;
    if (payload_len > 0)
        memcpy(p, payload, payload_len);
    p += payload_len;
    put_u16le(p, (uint16_t)targets_count);
    p += 2;
    for (size_t i = 0; i < targets_count; i++) {
        p = put_key(p, targets[i].inbox, targets[i].inbox_len);
        memcpy(p, targets[i].msg_id, INBOX_MSG_ID_BYTES);
        p += INBOX_MSG_ID_BYTES;
    }
    assert((size_t)(p - buf) == need);
    assert(need <= INBOX_COMMAND_BYTES_MAX);
    *len_out = need;
    return 0;
}

static int encode_key_u64(uint8_t *buf, size_t cap, uint8_t type,
                          uint64_t leader_ts_ms, const uint8_t *inbox,
                          size_t inbox_len, uint64_t v, size_t *len_out)
{
    int rc = check_key(inbox_len, inbox);
    if (rc != 0)
        return rc;
    size_t need = command_bytes_ack(inbox_len);
    if (need > cap)
        return INBOX_ERANGE;
    uint8_t *p = put_header(buf, type, leader_ts_ms);
    p = put_key(p, inbox, inbox_len);
    put_u64le(p, v);
    *len_out = need;
    return 0;
}

int command_encode_ack(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                       const uint8_t *inbox, size_t inbox_len, uint64_t ack_seq,
                       size_t *len_out)
{
    return encode_key_u64(buf, cap, COMMAND_ACK, leader_ts_ms, inbox, inbox_len,
                          ack_seq, len_out);
}

int command_encode_seen_set(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                            const uint8_t *inbox, size_t inbox_len,
                            uint64_t seen_ts_ms, size_t *len_out)
{
    return encode_key_u64(buf, cap, COMMAND_SEEN_SET, leader_ts_ms, inbox,
                          inbox_len, seen_ts_ms, len_out);
}

int command_encode(const struct command *c, uint8_t *buf, size_t cap,
                   size_t *len_out)
{
    const struct command_target *t = &c->targets[0];
    switch (c->type) {
    case COMMAND_ENQUEUE:
        if (c->targets_count != 1)
            return INBOX_EINVAL;
        return command_encode_enqueue(buf, cap, c->leader_ts_ms, t->inbox,
                                      t->inbox_len, t->msg_id, c->ttl_ms,
                                      c->payload, c->payload_len, len_out);
    case COMMAND_ENQUEUE_MANY:
        return command_encode_enqueue_many(
            buf, cap, c->leader_ts_ms, c->ttl_ms, c->payload, c->payload_len,
            c->targets, c->targets_count, len_out);
    case COMMAND_ACK:
        if (c->targets_count != 1)
            return INBOX_EINVAL;
        return command_encode_ack(buf, cap, c->leader_ts_ms, t->inbox,
                                  t->inbox_len, c->ack_seq, len_out);
    case COMMAND_SEEN_SET:
        if (c->targets_count != 1)
            return INBOX_EINVAL;
        return command_encode_seen_set(buf, cap, c->leader_ts_ms, t->inbox,
                                       t->inbox_len, c->seen_ts_ms, len_out);
    default:
        return INBOX_EINVAL;
    }
}

/* ---- decode -------------------------------------------------------------- */

/* A bounds-checked read cursor. Once a read fails, ok stays 0 and every
 * later read returns zeros without touching memory. */
struct reader {
    const uint8_t *p;
    size_t left;
    int ok;
};

static const uint8_t *take(struct reader *r, size_t n)
{
    if (!r->ok || n > r->left) {
        r->ok = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t take_u8(struct reader *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t take_u16(struct reader *r)
{
    const uint8_t *p = take(r, 2);
    return p ? get_u16le(p) : 0;
}

static uint32_t take_u32(struct reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get_u32le(p) : 0;
}

static uint64_t take_u64(struct reader *r)
{
    const uint8_t *p = take(r, 8);
    return p ? get_u64le(p) : 0;
}

/* u8 inbox_len | inbox [| msg_id] into t. */
static void take_target(struct reader *r, struct command_target *t,
                        int with_msg_id)
{
    uint8_t n = take_u8(r);
    if (n < INBOX_KEY_BYTES_MIN || n > INBOX_KEY_BYTES_MAX)
        r->ok = 0;
    t->inbox_len = n;
    t->inbox = take(r, n);
    t->msg_id = with_msg_id ? take(r, INBOX_MSG_ID_BYTES) : NULL;
}

static void take_ttl_payload(struct reader *r, struct command *c)
{
    c->ttl_ms = take_u64(r);
    if (c->ttl_ms > INBOX_TTL_MS_MAX)
        r->ok = 0;
    c->payload_len = take_u32(r);
    if (c->payload_len > INBOX_PAYLOAD_BYTES_MAX)
        r->ok = 0;
    c->payload = take(r, c->payload_len);
}

int command_decode(const uint8_t *buf, size_t len, struct command *out)
{
    struct reader r = {buf, len, buf != NULL};
    if (len > INBOX_COMMAND_BYTES_MAX)
        return INBOX_EBAD_COMMAND;
    uint8_t version = take_u8(&r);
    out->type = take_u8(&r);
    uint16_t reserved = take_u16(&r);
    out->leader_ts_ms = take_u64(&r);
    if (!r.ok || version != COMMAND_VERSION || reserved != 0)
        return INBOX_EBAD_COMMAND;
    out->ttl_ms = 0;
    out->payload = NULL;
    out->payload_len = 0;
    out->ack_seq = 0;
    out->seen_ts_ms = 0;
    out->targets_count = 1;
    switch (out->type) {
    case COMMAND_ENQUEUE:
        take_target(&r, &out->targets[0], 1);
        take_ttl_payload(&r, out);
        break;
    case COMMAND_ENQUEUE_MANY: {
        take_ttl_payload(&r, out);
        uint16_t n = take_u16(&r);
        if (n == 0 || n > INBOX_FANOUT_INBOXES_MAX)
            return INBOX_EBAD_COMMAND;
        out->targets_count = n;
        for (uint16_t i = 0; i < n && r.ok; i++)
            take_target(&r, &out->targets[i], 1);
        break;
    }
    case COMMAND_ACK:
        take_target(&r, &out->targets[0], 0);
        out->ack_seq = take_u64(&r);
        break;
    case COMMAND_SEEN_SET:
        take_target(&r, &out->targets[0], 0);
        out->seen_ts_ms = take_u64(&r);
        break;
    default:
        return INBOX_EBAD_COMMAND;
    }
    if (!r.ok || r.left != 0)
        return INBOX_EBAD_COMMAND;
    return 0;
}
