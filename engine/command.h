/*
 * command.h — the inbox commands as Raft entry payloads: encode and decode.
 *
 * A command is what the leader proposes and every replica's store applies:
 * ENQUEUE, ENQUEUE_MANY, ACK and SEEN_SET, each stamped with the leader's
 * clock (ms since the epoch) so that application needs no clock of its own.
 * The byte layout (versioned, little-endian) is documented in docs/store.md.
 *
 * The decoder is a pure function over untrusted bytes: it checks every
 * length against include/inbox/limits.h before reading, never allocates,
 * and answers INBOX_EBAD_COMMAND for anything malformed (it is fuzzed).
 * A decoded command points into the buffer it was decoded from: the
 * pointers are valid for as long as that buffer is.
 *
 * libc only (plus the header-only include/inbox/).
 */
#ifndef INBOX_ENGINE_COMMAND_H
#define INBOX_ENGINE_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "inbox/limits.h"

#define COMMAND_VERSION 1u
/* version u8, type u8, reserved u16, leader_ts_ms u64 */
#define COMMAND_HEADER_BYTES 12u

enum command_type {
    COMMAND_ENQUEUE = 1,
    COMMAND_ENQUEUE_MANY = 2,
    COMMAND_ACK = 3,
    COMMAND_SEEN_SET = 4,
};

/* One inbox a command acts on. msg_id (16 bytes) is set for the enqueue
 * commands and NULL for the others. */
struct command_target {
    const uint8_t *inbox;
    const uint8_t *msg_id;
    uint16_t inbox_len;
};

/* A decoded command. Fields not used by a type are zero. ENQUEUE, ACK and
 * SEEN_SET have exactly one target; ENQUEUE_MANY has 1..FANOUT_MAX. */
struct command {
    uint8_t type; /* enum command_type */
    uint64_t leader_ts_ms;
    uint64_t ttl_ms; /* enqueues: 0 = never expires, else <= TTL_MS_MAX */
    const uint8_t *payload;
    uint32_t payload_len;
    uint64_t ack_seq;    /* ACK: every seq <= ack_seq is delivered */
    uint64_t seen_ts_ms; /* SEEN_SET */
    uint32_t targets_count;
    struct command_target targets[INBOX_FANOUT_INBOXES_MAX];
};

/* Exact encoded sizes, for sizing buffers. Arguments are not validated. */
size_t command_bytes_enqueue(size_t inbox_len, size_t payload_len);
size_t command_bytes_enqueue_many(const struct command_target *targets,
                                  size_t targets_count, size_t payload_len);
size_t command_bytes_ack(size_t inbox_len);
size_t command_bytes_seen_set(size_t inbox_len);

/* Encoders write into buf[0..cap) and set *len_out. They validate their
 * arguments: INBOX_EKEY_INVALID, INBOX_EPAYLOAD_TOO_LARGE,
 * INBOX_ETOO_MANY_INBOXES (0 or too many targets), INBOX_ERANGE (ttl too
 * large, or cap too small: nothing useful was written). */
int command_encode_enqueue(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                           const uint8_t *inbox, size_t inbox_len,
                           const uint8_t msg_id[INBOX_MSG_ID_BYTES],
                           uint64_t ttl_ms, const void *payload,
                           size_t payload_len, size_t *len_out);
/* One payload to many inboxes, each with its own msg id (a client that
 * wants one id for all passes the same id in every target). */
int command_encode_enqueue_many(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                                uint64_t ttl_ms, const void *payload,
                                size_t payload_len,
                                const struct command_target *targets,
                                size_t targets_count, size_t *len_out);
int command_encode_ack(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                       const uint8_t *inbox, size_t inbox_len, uint64_t ack_seq,
                       size_t *len_out);
int command_encode_seen_set(uint8_t *buf, size_t cap, uint64_t leader_ts_ms,
                            const uint8_t *inbox, size_t inbox_len,
                            uint64_t seen_ts_ms, size_t *len_out);
/* Encode any decoded command (dispatches on c->type). */
int command_encode(const struct command *c, uint8_t *buf, size_t cap,
                   size_t *len_out);

/* Decode buf[0..len) into *out. 0 on success, INBOX_EBAD_COMMAND on any
 * malformed input (unknown version or type, non-zero reserved bits, a
 * length out of its bound, truncation, trailing bytes). On success, out's
 * pointers point into buf. On failure *out is unspecified. */
int command_decode(const uint8_t *buf, size_t len, struct command *out);

#endif /* INBOX_ENGINE_COMMAND_H */
