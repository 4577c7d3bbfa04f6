/*
 * codec.h — the frame codec of inboxd's binary protocol.
 *
 * Pure encode/decode over byte buffers: no libuv, no sockets, no allocation.
 * The byte-level specification is docs/protocol.md; this header is its C
 * face. Three layers:
 *
 *   1. the fixed 24-byte frame header (inbox_frame_header_encode/_decode);
 *   2. an incremental parser (struct inbox_parser) that is fed bytes as they
 *      arrive, in any fragmentation, and hands out whole frames; it tells
 *      "need more bytes" apart from "malformed: answer with an error and
 *      close" (Redis's networking.c habit), and refuses an oversized body
 *      length before a single body byte is buffered;
 *   3. the bodies of every request, response, push and error
 *      (inbox_msg_encode / inbox_msg_decode).
 *
 * Memory and lifetimes (read this before keeping a pointer):
 *   - Nothing here allocates. The parser copies a fragmented body into the
 *     buffer its caller gave to inbox_parser_init; the encoder writes into the
 *     caller's buffer.
 *   - Decoding is zero-copy: every `struct inbox_bytes` and every list
 *     iterator in a decoded `struct inbox_msg` points into the body that was
 *     decoded. It is valid exactly as long as that body is: for a body from
 *     inbox_parser_feed, until the next call of inbox_parser_feed on that
 *     parser or until the caller's input bytes are released, whichever comes
 *     first. Copy out what must outlive it.
 *   - Lists: on encode the caller sets `count` and the array (`items`,
 *     `keys`, ...). On decode `count` and `iter` are set and the array is
 *     NULL; walk the list with the matching inbox_next_* function. The
 *     decoder has already validated every element, so a next function only
 *     returns false at the end of the list.
 */
#ifndef INBOX_NET_CODEC_H
#define INBOX_NET_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbox/limits.h"

/* ---- frame header ------------------------------------------------------- */

/* The bytes "INBX" (49 4E 42 58) read as a little-endian u32. */
#define INBOX_PROTO_MAGIC 0x58424E49u
/* Protocol versions this codec speaks. */
#define INBOX_PROTO_VERSION_MIN 1u
#define INBOX_PROTO_VERSION_MAX 1u
/* Request id 0 is reserved for server pushes (NOTIFY); requests use 1.. */
#define INBOX_REQUEST_ID_PUSH 0u

enum inbox_op {
    INBOX_OP_HELLO = 0x01,
    INBOX_OP_PING = 0x02,
    INBOX_OP_ENQUEUE = 0x10,
    INBOX_OP_ENQUEUE_MANY = 0x11,
    INBOX_OP_FETCH = 0x12,
    INBOX_OP_ACK = 0x13,
    INBOX_OP_SEEN_SET = 0x14,
    INBOX_OP_SEEN_GET = 0x15,
    INBOX_OP_WATCH = 0x16,
    INBOX_OP_UNWATCH = 0x17,
    INBOX_OP_NOTIFY = 0x18, /* server push only */
    INBOX_OP_ROUTE = 0x20,
    INBOX_OP_STATUS = 0x21,
    INBOX_OP_ADD_NODE = 0x30,
    INBOX_OP_REMOVE_NODE = 0x31,
    INBOX_OP_TRANSFER_LEADER = 0x32,
    INBOX_OP_MOVE_REPLICA = 0x33,
    INBOX_OP_SNAPSHOT = 0x34,
    INBOX_OP_RAFT = 0x40, /* node to node: a batch of Raft messages */
};

/* Header flags (u16). Bits not in INBOX_FLAGS_KNOWN must be zero. */
enum inbox_frame_flag {
    INBOX_FLAG_RESPONSE = 0x0001, /* server -> client, answers request_id */
    INBOX_FLAG_ERROR = 0x0002,    /* with RESPONSE: the body is an ERROR */
    INBOX_FLAG_PUSH = 0x0004,     /* server push; request_id is 0 */
};
#define INBOX_FLAGS_KNOWN 0x0007u

struct inbox_frame_header {
    uint8_t version;
    uint8_t opcode; /* enum inbox_op */
    uint16_t flags; /* enum inbox_frame_flag */
    uint64_t request_id;
    uint32_t body_bytes;
};

/* Writes the 24 header bytes. The header must be valid (asserted). */
void inbox_frame_header_encode(uint8_t out[INBOX_FRAME_HEADER_BYTES],
                               const struct inbox_frame_header *h);

/* Reads and checks 24 header bytes: magic, reserved field zero, known flags
 * in a legal combination, request id rules, body length at most
 * INBOX_FRAME_BODY_BYTES_MAX. Returns 0, INBOX_EFRAME_TOO_LARGE or
 * INBOX_EPROTO. The version and opcode are not judged here: the version is
 * the connection's business (inbox_parser.version) and an unknown opcode
 * is answered with UNKNOWN_OP without closing (see inbox_msg_decode). */
int inbox_frame_header_decode(const uint8_t in[INBOX_FRAME_HEADER_BYTES],
                              struct inbox_frame_header *h);

/* ---- incremental parser ------------------------------------------------- */

enum inbox_parse_result {
    INBOX_PARSE_MORE = 0,  /* every byte consumed; feed more when it comes */
    INBOX_PARSE_FRAME = 1, /* one frame is out; feed the rest of the input */
};

/*
 * Parser states: HEADER (collecting up to 24 header bytes) -> BODY
 * (collecting body_bytes) -> back to HEADER once a frame is handed out; any
 * malformed input moves it to FAILED, which is sticky: every later feed
 * returns the same error. Invariants: hdr_have < 24 in HEADER; body_have <
 * hdr.body_bytes <= body_cap in BODY.
 */
struct inbox_parser {
    uint8_t *body_buf; /* caller's buffer for bodies that arrive split */
    uint32_t body_cap; /* min(its size, INBOX_FRAME_BODY_BYTES_MAX) */
    uint8_t version;   /* 0: accept any; else frames must carry this */
    uint8_t state;     /* private */
    uint8_t hdr_have;  /* private */
    uint8_t hdr_buf[INBOX_FRAME_HEADER_BYTES]; /* private */
    uint32_t body_have;                        /* private */
    int err;                                   /* the sticky error in FAILED */
    struct inbox_frame_header hdr; /* private: the frame being read */
};

/* A parsed frame. `body` points either into the caller's input (when the
 * frame arrived whole in one feed: no copy) or into parser->body_buf; see
 * the lifetime rule at the top of this file. */
struct inbox_frame {
    struct inbox_frame_header hdr;
    const uint8_t *body; /* hdr.body_bytes bytes; NULL only if 0 bytes */
};

/* body_buf of body_buf_bytes is owned by the caller and must outlive the
 * parser; bodies longer than it (or than INBOX_FRAME_BODY_BYTES_MAX) are
 * refused with INBOX_EFRAME_TOO_LARGE. A server gives each connection a
 * buffer of INBOX_FRAME_BODY_BYTES_MAX; a client may give less. */
void inbox_parser_init(struct inbox_parser *p, uint8_t *body_buf,
                       size_t body_buf_bytes);

/* Consumes bytes from in[0..len). Returns INBOX_PARSE_FRAME with *out filled
 * and *consumed_bytes telling how much of `in` was used (call again with the
 * rest), INBOX_PARSE_MORE with all of `in` consumed, or a negative code
 * after which the connection must be closed: INBOX_EPROTO (malformed),
 * INBOX_EFRAME_TOO_LARGE (body length over the limit, detected from the
 * header alone), INBOX_EPROTO_VERSION (version differs from p->version). On
 * error hdr of the offending frame is in *out when it could be read, so the
 * server can answer with its request id. */
int inbox_parser_feed(struct inbox_parser *p, const uint8_t *in, size_t len,
                      size_t *consumed_bytes, struct inbox_frame *out);

/* ---- bodies ------------------------------------------------------------- */

/* A byte string inside a body (key, payload, address, text). */
struct inbox_bytes {
    const uint8_t *ptr;
    uint32_t len;
};

/* A validated list inside a decoded body (see the top of this file). */
struct inbox_iter {
    const uint8_t *ptr;
    const uint8_t *end;
    uint32_t left;
};

/* A node: its id and its addresses ("host:port", tried in order). */
struct inbox_node {
    uint64_t node_id;
    uint32_t addrs_count;            /* 0..INBOX_NODE_ADDRS_MAX */
    const struct inbox_bytes *addrs; /* encode */
    struct inbox_iter addrs_iter;    /* decode: inbox_next_bytes16 */
};

struct inbox_hello_req {
    uint8_t version_min, version_max;
    struct inbox_bytes client_name; /* 0..INBOX_FRAME_TEXT_BYTES_MAX */
};
struct inbox_hello_resp {
    uint8_t version; /* chosen */
    uint64_t node_id;
    uint32_t body_bytes_max; /* the largest body the server accepts */
    uint32_t shard_count;
};

struct inbox_enqueue_req {
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint64_t ttl_ms; /* 0: the server's default */
    struct inbox_bytes inbox;
    struct inbox_bytes payload;
};
struct inbox_enqueue_resp {
    uint64_t seq;
    bool dedup; /* the msg id was seen before; seq is the first one's */
};

struct inbox_target {
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    struct inbox_bytes inbox;
};
struct inbox_enqueue_many_req {
    uint64_t ttl_ms;
    struct inbox_bytes payload;
    uint32_t count;                     /* 1..INBOX_FANOUT_INBOXES_MAX */
    const struct inbox_target *targets; /* encode */
    struct inbox_iter iter;             /* decode: inbox_next_target */
};
struct inbox_enqueue_result {
    uint16_t code; /* 0, or the positive INBOX_E* number for this inbox */
    bool dedup;
    uint64_t seq; /* 0 when code != 0 */
};
struct inbox_enqueue_many_resp {
    uint32_t count;
    const struct inbox_enqueue_result *results; /* encode */
    struct inbox_iter iter; /* decode: inbox_next_enqueue_result */
};

#define INBOX_FETCH_STALE_OK 0x01u /* a follower may serve a stale read */
struct inbox_fetch_req {
    struct inbox_bytes inbox;
    uint64_t after_seq;
    uint32_t messages_max; /* 0 or above the cap: the server's cap */
    uint32_t bytes_max;    /* payload bytes; 0 or above: the server's cap */
    uint32_t wait_ms;      /* long-poll; the server clamps it */
    uint8_t flags;         /* INBOX_FETCH_STALE_OK */
};
struct inbox_message {
    uint64_t seq;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint64_t enqueue_ts_ms;
    struct inbox_bytes payload;
};
struct inbox_fetch_resp {
    uint64_t acked_seq;
    uint64_t last_seq;
    bool stale;     /* served by a follower; may lag the leader */
    uint32_t count; /* 0..INBOX_FETCH_MESSAGES_MAX */
    const struct inbox_message *messages; /* encode */
    struct inbox_iter iter;               /* decode: inbox_next_message */
};

struct inbox_ack_req {
    struct inbox_bytes inbox;
    uint64_t up_to_seq;
};
struct inbox_ack_resp {
    uint64_t acked_seq;
};

struct inbox_seen_set_req {
    struct inbox_bytes inbox;
    uint64_t ts_ms;
};
struct inbox_seen_set_resp {
    uint64_t ts_ms; /* the stored value: max(old, requested) */
};

/* SEEN_GET, WATCH and UNWATCH requests: a list of inboxes. */
struct inbox_keys_req {
    uint8_t flags;  /* SEEN_GET: INBOX_FETCH_STALE_OK; else 0 */
    uint32_t count; /* 1..INBOX_SEEN_GET_INBOXES_MAX / _WATCH_ */
    const struct inbox_bytes *keys; /* encode */
    struct inbox_iter iter;         /* decode: inbox_next_key */
};
/* SEEN_GET and WATCH responses: per inbox, in request order, a code and a
 * value (SEEN_GET: last-seen ts ms, 0 = never; WATCH: current last seq). */
struct inbox_code_u64 {
    uint16_t code;
    uint64_t value;
};
struct inbox_code_u64_resp {
    uint32_t count;
    const struct inbox_code_u64 *items; /* encode */
    struct inbox_iter iter;             /* decode: inbox_next_code_u64 */
};

struct inbox_notify {
    struct inbox_bytes inbox;
    uint64_t last_seq;
};

#define INBOX_HASH_XXH3_64 1u /* shard = XXH3_64bits(key, seed 0) % count */
struct inbox_route_resp {
    uint64_t epoch;                 /* placement version; larger is newer */
    uint8_t hash;                   /* INBOX_HASH_XXH3_64 */
    uint32_t nodes_count;           /* 0..INBOX_ROUTE_NODES_MAX */
    const struct inbox_node *nodes; /* encode */
    struct inbox_iter nodes_iter;   /* decode: inbox_next_node */
    uint32_t shard_count;           /* 1..INBOX_SHARD_COUNT_MAX */
    const uint64_t *leaders;        /* encode: [shard] = node id, 0 */
    struct inbox_iter leaders_iter; /* decode: inbox_next_u64 */
};

enum inbox_replica_role {
    INBOX_REPLICA_FOLLOWER = 0,
    INBOX_REPLICA_CANDIDATE = 1,
    INBOX_REPLICA_LEADER = 2,
    INBOX_REPLICA_LEARNER = 3,
    INBOX_REPLICA_NONE = 4, /* not a member of the shard's group (joining,
                               or removed) */
};
struct inbox_shard_status {
    uint32_t shard;
    uint8_t role; /* enum inbox_replica_role */
    uint64_t leader_id;
    uint64_t term;
    uint64_t applied_index;
};
struct inbox_status_resp {
    uint64_t node_id;
    uint64_t uptime_ms;
    uint32_t count; /* shards hosted here, 0..INBOX_STATUS_SHARDS_MAX */
    const struct inbox_shard_status *shards; /* encode */
    struct inbox_iter iter; /* decode: inbox_next_shard_status */
};

/* ADD_NODE's request is a node; REMOVE_NODE's a node id. */
struct inbox_remove_node_req {
    uint64_t node_id;
};
struct inbox_transfer_leader_req {
    uint32_t shard;
    uint64_t to_node_id; /* 0: the best caught-up voter */
};
struct inbox_move_replica_req {
    uint32_t shard;
    uint64_t from_node_id;
    uint64_t to_node_id;
};
#define INBOX_SHARD_ALL 0xFFFFFFFFu
struct inbox_snapshot_req {
    uint32_t shard; /* or INBOX_SHARD_ALL: every shard hosted here */
};
/* ADD_NODE, REMOVE_NODE, MOVE_REPLICA, TRANSFER_LEADER, SNAPSHOT answer
 * with the placement epoch at which the change was accepted (SNAPSHOT and
 * TRANSFER_LEADER: the current one). */
/* RAFT (node to node only): u32 length (1..INBOX_RAFT_BATCH_BYTES_MAX),
 * then a batch of Raft messages in raft/wire.h's encoding, opaque to the
 * codec. The response is empty: it only frees
 * the sender's in-flight slot (flow control). */
struct inbox_raft_req {
    struct inbox_bytes batch;
};

struct inbox_admin_resp {
    uint64_t epoch;
};

struct inbox_error {
    uint16_t code; /* positive INBOX_E* number, e.g. 1300 = NOT_LEADER */
    struct inbox_bytes message; /* UTF-8, 0..INBOX_FRAME_TEXT_BYTES_MAX */
    /* Detail, by code (empty for any other code; on decode, an unknown
     * code's detail is kept raw in `detail` and ignored by clients). */
    /* The raw detail bytes: set by decode for every code; on encode, sent
     * as is for codes without a layout below (ignored for the others). */
    struct inbox_bytes detail;
    uint32_t shard;           /* NOT_LEADER */
    struct inbox_node leader; /* NOT_LEADER: node_id 0 = unknown */
    uint8_t version_min,
        version_max; /* PROTO_VERSION: what the server speaks */
};

struct inbox_msg {
    struct inbox_frame_header hdr; /* body_bytes is set by encode/decode */
    union {
        struct inbox_hello_req hello_req;
        struct inbox_hello_resp hello_resp;
        struct inbox_enqueue_req enqueue_req;
        struct inbox_enqueue_resp enqueue_resp;
        struct inbox_enqueue_many_req enqueue_many_req;
        struct inbox_enqueue_many_resp enqueue_many_resp;
        struct inbox_fetch_req fetch_req;
        struct inbox_fetch_resp fetch_resp;
        struct inbox_ack_req ack_req;
        struct inbox_ack_resp ack_resp;
        struct inbox_seen_set_req seen_set_req;
        struct inbox_seen_set_resp seen_set_resp;
        struct inbox_keys_req keys_req;           /* SEEN_GET, WATCH, UNWATCH */
        struct inbox_code_u64_resp code_u64_resp; /* SEEN_GET, WATCH */
        struct inbox_notify notify;
        struct inbox_route_resp route_resp;
        struct inbox_status_resp status_resp;
        struct inbox_node add_node_req;
        struct inbox_remove_node_req remove_node_req;
        struct inbox_transfer_leader_req transfer_leader_req;
        struct inbox_move_replica_req move_replica_req;
        struct inbox_snapshot_req snapshot_req;
        struct inbox_raft_req raft_req;
        struct inbox_admin_resp admin_resp;
        struct inbox_error error;
    } body;
};
/* Which union member a frame uses, from (opcode, flags):
 *   ERROR flag                -> error
 *   PUSH flag (NOTIFY)        -> notify
 *   request / RESPONSE of:
 *   HELLO                     -> hello_req / hello_resp
 *   PING, ROUTE req, STATUS req, UNWATCH resp -> empty body
 *   ENQUEUE ... SEEN_SET      -> <op>_req / <op>_resp
 *   SEEN_GET, WATCH, UNWATCH  -> keys_req / code_u64_resp (UNWATCH: empty)
 *   ROUTE, STATUS             -> route_resp / status_resp
 *   ADD_NODE ... SNAPSHOT     -> <op>_req / admin_resp
 *   RAFT                      -> raft_req / empty body */

/* Encodes the whole frame (header then body) into out[0..cap). The header
 * is m->hdr with body_bytes computed. Returns 0 and *frame_bytes; or
 * INBOX_ERANGE when cap is too small, with *frame_bytes the size needed
 * (so encoding with cap 0 measures); or, when a field breaks a limit:
 * INBOX_EKEY_INVALID, INBOX_EPAYLOAD_TOO_LARGE, INBOX_ETOO_MANY_INBOXES,
 * INBOX_EFRAME_TOO_LARGE, INBOX_EINVAL (anything else: bad flags, text or
 * address too long, unknown opcode, ...). Nothing is written on failure
 * except scratch bytes inside out[0..cap). */
int inbox_msg_encode(const struct inbox_msg *m, uint8_t *out, size_t cap,
                     size_t *frame_bytes);

/* Decodes the body of a frame whose header has passed
 * inbox_frame_header_decode. Sets m->hdr = *h and the union member named
 * above, every pointer into `body` (zero-copy). Returns 0,
 * INBOX_EUNKNOWN_OP for an opcode this version does not define (framing is
 * intact: answer ERROR UNKNOWN_OP and carry on), or INBOX_EPROTO for a
 * malformed body (a length running past the body, a key, payload, count or
 * text outside its limit, a non-zero reserved byte, a bad boolean or
 * trailing bytes). */
int inbox_msg_decode(const struct inbox_frame_header *h, const uint8_t *body,
                     struct inbox_msg *m);

/* List walkers for decoded bodies: each fills *out and returns true, or
 * returns false at the end of the list. */
bool inbox_next_bytes16(struct inbox_iter *it, struct inbox_bytes *out);
bool inbox_next_key(struct inbox_iter *it, struct inbox_bytes *out);
bool inbox_next_target(struct inbox_iter *it, struct inbox_target *out);
bool inbox_next_enqueue_result(struct inbox_iter *it,
                               struct inbox_enqueue_result *out);
bool inbox_next_message(struct inbox_iter *it, struct inbox_message *out);
bool inbox_next_code_u64(struct inbox_iter *it, struct inbox_code_u64 *out);
bool inbox_next_node(struct inbox_iter *it, struct inbox_node *out);
bool inbox_next_u64(struct inbox_iter *it, uint64_t *out);
bool inbox_next_shard_status(struct inbox_iter *it,
                             struct inbox_shard_status *out);

/* ---- helpers ------------------------------------------------------------ */

/* The op's name ("ENQUEUE"), or NULL for an unknown opcode. Static. */
const char *inbox_op_name(uint8_t opcode);

/* Whether a client may retry a request that failed with rc (negative
 * INBOX_E* code, or the negated code of an ERROR body): true for codes that
 * say "not now / not here" rather than "never". Retry ENQUEUE with the same
 * msg id. See the error table in docs/protocol.md. */
bool inbox_err_retryable(int rc);

#endif /* INBOX_NET_CODEC_H */
