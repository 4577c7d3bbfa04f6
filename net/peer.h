/*
 * peer.h — the sending side of node-to-node Raft traffic: one outgoing
 * mutual-TLS connection per known peer, carrying RAFT frames
 * (docs/protocol.md §4.12) to that peer's client port, where
 * net/transport receives them.
 *
 * The node hands already-encoded Raft messages (raft/wire.h's encoding,
 * opaque here) to peer_send from any thread. Bytes queued for one peer
 * between two loop iterations leave together, packed in order into as few
 * RAFT frames as fit INBOX_RAFT_BATCH_BYTES_MAX; the bytes of one
 * peer_send call are never split across frames. A link is opened lazily by
 * the first bytes queued for it, and kept.
 *
 * Loss, not blocking. Raft tolerates lost messages and resends, so every
 * bound here drops instead of waiting: bytes over a peer's queue bound,
 * bytes sent while the link backs off after a failure, and the bytes still
 * queued when a connection fails are all dropped and counted. Nothing in
 * this module ever blocks a caller on I/O.
 *
 * Threads. Everything runs on the loop given in the config except the
 * functions marked "any thread". They take one mutex, copy the bytes into
 * the peer's queue buffer (reused, grown to its high-water mark) and wake
 * the loop with one uv_async.
 *
 * Lifetimes. struct peers: peer_new .. peer_free. peer_free comes after
 * peer_stopped() is true, which happens on the loop once every handle the
 * module opened has run its close callback (so run the loop after
 * peer_stop, as the server does until uv_run returns). No pointer into
 * caller memory is kept: addresses and bytes are copied.
 *
 * docs/transport.md, section "Peer links", has the connection states, the
 * bounds and the failure handling; peer.c has the state machine.
 */
#ifndef INBOX_NET_PEER_H
#define INBOX_NET_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "inbox/limits.h"
#include "net/tls.h"
#include "server/metrics.h"

/* Defaults for the 0 fields of struct peer_config. */
#define PEER_QUEUE_BYTES_MAX_DEFAULT (8u * INBOX_MIB)
#define PEER_INFLIGHT_FRAMES_MAX_DEFAULT 32u
/* Caps on the config fields: a frame in flight may hold up to 2 MiB. */
#define PEER_INFLIGHT_FRAMES_MAX 1024u
/* Each queued send costs its bytes plus this much in the queue bound. */
#define PEER_RECORD_OVERHEAD_BYTES 4u
/* The queue bound must take at least one whole largest send. */
#define PEER_QUEUE_BYTES_MIN                                                   \
    (INBOX_RAFT_BATCH_BYTES_MAX + PEER_RECORD_OVERHEAD_BYTES)
/* Connect + TLS handshake + HELLO answered, default (ms). */
#define PEER_CONNECT_TIMEOUT_MS_DEFAULT 5000u
/* Reconnect backoff after a failure: doubles from min to max; reset when a
 * connection gets past HELLO. */
#define PEER_BACKOFF_MS_MIN 50u
#define PEER_BACKOFF_MS_MAX 1000u
/* "host:port" as given to peer_set_addr, NUL included. */
#define PEER_ADDR_BYTES 64u
/* Known peers (links), including removed ones not yet reaped. */
#define PEER_LINKS_MAX 256u
/* The largest response body a link takes: an ERROR with its text and
 * detail, or a HELLO answer. Anything longer is a protocol failure. */
#define PEER_RESPONSE_BODY_BYTES_MAX (8u * INBOX_KIB)
/* struct peer_link_info.last_error, NUL included. */
#define PEER_ERROR_BYTES 128u
_Static_assert(PEER_QUEUE_BYTES_MIN <= PEER_QUEUE_BYTES_MAX_DEFAULT,
               "the default queue bound takes the largest send");
_Static_assert(PEER_INFLIGHT_FRAMES_MAX_DEFAULT <= PEER_INFLIGHT_FRAMES_MAX,
               "default in-flight bound within its cap");
_Static_assert(PEER_RESPONSE_BODY_BYTES_MAX >=
                   2u * INBOX_FRAME_TEXT_BYTES_MAX + 64u,
               "an ERROR answer fits the response body buffer");

struct peer_config {
    uv_loop_t *loop;     /* the loop links run on (the server's); borrowed */
    struct tls_ctx *tls; /* TLS_SIDE_CLIENT with a node certificate;
                            borrowed, must outlive the struct peers */
    uint64_t self_id;    /* for logs only */
    uint64_t queue_bytes_max; /* per peer, bytes (+ PEER_RECORD_OVERHEAD_BYTES
                                 per send) queued and not yet framed;
                                 0: PEER_QUEUE_BYTES_MAX_DEFAULT; else at
                                 least PEER_QUEUE_BYTES_MIN */
    uint32_t inflight_frames_max; /* RAFT frames sent and not yet answered
                                     per link; 0: the default; at most
                                     PEER_INFLIGHT_FRAMES_MAX */
    uint32_t connect_timeout_ms;  /* connect -> HELLO answered, else the
                                     attempt fails; 0: the default */
};

struct peers;

/* Creates the module on c->loop. Call on the loop's thread or before
 * uv_run starts (it initializes a uv_async). Returns 0, INBOX_EINVAL (bad
 * config) or INBOX_ENOMEM. */
int peer_new(const struct peer_config *c, struct peers **out);

/* Any thread. Sets or replaces the address of node `id`: "a.b.c.d:port" or
 * "[v6]:port", IP literals only (no DNS). The address is also the host the
 * peer's certificate must name in its subjectAltName. Changing the address
 * of a known peer drops its connection (and its queued bytes). Returns 0,
 * INBOX_EINVAL (id 0 or a malformed address), INBOX_ERANGE (more than
 * PEER_LINKS_MAX peers), INBOX_ENOMEM, INBOX_ESHUTDOWN after peer_stop. */
int peer_set_addr(struct peers *p, uint64_t id, const char *hostport);

/* Any thread. Forgets node `id`: its connection is closed, its queued bytes
 * dropped. Returns 0, INBOX_ENOTFOUND, INBOX_ESHUTDOWN. */
int peer_remove(struct peers *p, uint64_t id);

/* Any thread, never blocks on I/O. Copies `len` bytes (one or more whole
 * Raft messages) into node `to`'s queue. Returns:
 *   0                 queued;
 *   INBOX_EINVAL      len 0 or bytes NULL;
 *   INBOX_ERANGE      len > INBOX_RAFT_BATCH_BYTES_MAX;
 *   INBOX_ENOTFOUND   no such peer;
 *   INBOX_EBUSY       dropped and counted: the queue is over
 *                     queue_bytes_max, or the link is backing off after a
 *                     failure (docs/transport.md, "Peer links");
 *   INBOX_ENOMEM      dropped and counted: the queue could not grow;
 *   INBOX_ESHUTDOWN   after peer_stop. */
int peer_send(struct peers *p, uint64_t to, const void *bytes, size_t len);

/* A link's state and counters, for status pages. Counters start at 0 when
 * the peer is first added and survive address changes. */
struct peer_link_info {
    bool connected;            /* connection open and past HELLO */
    uint32_t inflight;         /* frames sent, not yet answered */
    uint64_t queued_bytes;     /* queued, not yet framed (with overhead) */
    uint64_t frames_sent;      /* RAFT frames handed to TLS */
    uint64_t bytes_sent;       /* batch bytes in those frames */
    uint64_t dropped_bytes;    /* bytes given to peer_send and dropped */
    uint64_t connects;         /* connections that got past HELLO */
    uint64_t connect_failures; /* attempts that failed before that */
    uint64_t error_responses;  /* ERROR answers to RAFT frames */
    char last_error[PEER_ERROR_BYTES]; /* "" if none yet */
};

/* Any thread. Returns 0 or INBOX_ENOTFOUND. */
int peer_link_info(struct peers *p, uint64_t id, struct peer_link_info *out);

/* Any thread, idempotent. Closes every link (queued bytes dropped) and the
 * module's handles; peer_send etc. return INBOX_ESHUTDOWN from now on. The
 * work happens on the loop: run it until peer_stopped. */
void peer_stop(struct peers *p);

/* Any thread: true once stop completed and every handle is closed. */
bool peer_stopped(const struct peers *p);

/* Frees everything (see Lifetimes). NULL is a no-op. */
void peer_free(struct peers *p);

/* The module's metrics summed over all links, for metrics_render (any
 * thread; the array and values live as long as the struct peers). */
const struct metrics_desc *peer_metrics(const struct peers *p, size_t *count);

#endif /* INBOX_NET_PEER_H */
