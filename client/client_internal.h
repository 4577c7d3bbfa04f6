/*
 * client_internal.h — the state of a libinbox client, shared by the files
 * of client/ (client.c: connections, routing, retries, the poll loop;
 * ops.c: what each operation puts on the wire and hands its callback;
 * sync.c uses only the public API). Not installed; nothing outside client/
 * includes it.
 *
 * Objects:
 *   call   one submitted operation: its deadline, its callback, and its
 *          units. A unit is one inbox of the call (ENQUEUE has one,
 *          ENQUEUE_MANY / SEEN_GET / WATCH / UNWATCH one per inbox) or,
 *          for calls without an inbox (ROUTE, STATUS, admin), a single unit
 *          routed to a node.
 *   wire   one request frame on one connection, carrying some units of a
 *          call (the units of a multi-inbox call are grouped by leader:
 *          one wire per node). Found again by request id in a hash table.
 *   conn   one connection, to one address ("host:port").
 *
 * Unit states: PENDING (to be sent) -> SENT (on a wire) -> DONE (status
 * and value final). SENT goes back to PENDING when its wire is lost (the
 * connection dropped) or answered with a retryable error; then the call's
 * next_try_ms is set by the backoff. A call is finished (callback fired,
 * freed) once every unit is DONE and no wire of it is left; its deadline
 * turns every unit not DONE into DONE with INBOX_ETIMEOUT and unlinks its
 * wires, so a late answer finds no wire and is ignored.
 *
 * Invariants:
 *   1. units_left = units not DONE; units_pending = units PENDING.
 *   2. A unit is SENT exactly when unit->wire != NULL, and that wire is in
 *      call->wires, in the id hash, and on its conn's unsent or sent list.
 *   3. Wires are on a conn's sent list only in CONN_READY; a conn that
 *      leaves READY (conn_fail) gives all its wires back to their calls.
 *   4. calls_user counts calls not internal; it never exceeds inflight_max.
 */
#ifndef INBOX_CLIENT_INTERNAL_H
#define INBOX_CLIENT_INTERNAL_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbox/client.h"
#include "net/codec.h"
#include "net/tls.h"

#define ADDR_CAP (INBOX_NODE_ADDR_BYTES_MAX + 1u)
#define CIPHER_CAP (64u * INBOX_KIB)
#define ERRMSG_CAP (INBOX_FRAME_TEXT_BYTES_MAX + 256u)
#define NEVER_MS UINT64_MAX

enum unit_state { UNIT_PENDING = 0, UNIT_SENT = 1, UNIT_DONE = 2 };

struct wire;

struct unit {
    uint8_t state;   /* enum unit_state */
    uint8_t key_len; /* 0: the call has no inbox */
    bool dedup;
    uint32_t shard;
    int status;
    uint64_t value;
    struct wire *wire;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint8_t key[INBOX_KEY_BYTES_MAX];
};

enum route_kind {
    ROUTE_BY_KEY = 0,   /* to the leader of shard_of(unit key) */
    ROUTE_BY_SHARD = 1, /* to the leader of unit->shard */
    ROUTE_TO_NODE = 2,  /* to call->node_id, 0: any node */
};

union call_done {
    inbox_enqueue_done_fn *enqueue;
    inbox_enqueue_many_done_fn *enqueue_many;
    inbox_fetch_done_fn *fetch;
    inbox_ack_done_fn *ack;
    inbox_seen_set_done_fn *seen_set;
    inbox_seen_get_done_fn *keys;
    inbox_route_done_fn *route;
    inbox_status_done_fn *status;
    inbox_admin_done_fn *admin;
};

struct call {
    struct call *prev, *next; /* the client's list of live calls */
    uint8_t op;               /* enum inbox_op */
    uint8_t route_kind;       /* enum route_kind */
    uint8_t flags;            /* FETCH / SEEN_GET flags */
    bool internal;            /* the client's own ROUTE refresh */
    bool waits_route;         /* some unit waits for the shard map */
    uint32_t attempts;
    int last_err; /* what the latest attempt ran into */
    uint64_t deadline_ms;
    uint64_t next_try_ms; /* dispatch pending units then; NEVER_MS: kicked */
    uint64_t node_id;     /* ROUTE_TO_NODE target, 0 = any */
    /* Parameters: FETCH after_seq / bytes / messages / wait; ACK up_to;
     * SEEN_SET ts; ENQUEUE(_MANY) ttl; admin ids. */
    uint64_t u64a, u64b;
    uint32_t u32a, u32b, u32c;
    uint8_t *payload; /* owned copy */
    uint32_t payload_len;
    char (*addrs)[ADDR_CAP]; /* ADD_NODE: owned copies */
    uint8_t addrs_count;
    uint32_t units_count, units_left, units_pending;
    struct unit *units; /* &unit0 when units_count is 1, else heap */
    struct unit unit0;
    struct wire *wires; /* linked by wire->call_next */
    uint32_t wires_count;
    void *arg;
    union call_done done;
};

enum conn_state {
    CONN_IDLE = 0,       /* no socket; may be dialled at reconnect_at_ms */
    CONN_CONNECTING = 1, /* non-blocking connect in progress */
    CONN_TLS = 2,        /* TLS handshake */
    CONN_HELLO = 3,      /* HELLO sent, its answer awaited */
    CONN_READY = 4,      /* requests flow */
};

struct wire_list {
    struct wire *head, *tail;
};

struct conn {
    char addr[ADDR_CAP];
    uint64_t node_id; /* from HELLO; 0 until then */
    int fd;
    uint8_t state; /* enum conn_state */
    uint8_t version;
    struct tls_conn *tls;
    struct inbox_parser parser;
    uint8_t *body_buf; /* INBOX_FRAME_BODY_BYTES_MAX, for the parser */
    uint8_t *stage;    /* encoded plaintext not yet taken by TLS */
    size_t stage_cap, stage_off, stage_len;
    uint8_t *cipher; /* ciphertext pulled from TLS, not yet written */
    size_t cipher_off, cipher_len;
    uint64_t hello_id;
    uint32_t body_bytes_max;  /* the server's request body limit (HELLO) */
    uint64_t deadline_ms;     /* connect + handshake + HELLO */
    uint64_t last_rx_ms;      /* bytes last came in (or we began to wait) */
    uint64_t ping_id;         /* the PING awaiting its answer, or 0 */
    uint64_t reconnect_at_ms; /* IDLE: not before this */
    uint32_t failures;        /* in a row; reset by READY */
    uint32_t watches;         /* inboxes watched over this connection */
    struct wire_list unsent;  /* wires waiting to be encoded */
    struct wire_list sent;    /* wires awaiting their answer */
};

struct wire {
    uint64_t id;
    struct call *call;
    struct conn *conn;
    struct wire *hash_next;
    struct wire *prev, *next; /* conn->unsent or conn->sent */
    struct wire *call_next;
    uint32_t units_count;
    bool sent;
};

struct node {
    uint64_t id;
    uint8_t addrs_count;
    uint8_t addr_pref; /* the address to dial next */
    char addrs[INBOX_NODE_ADDRS_MAX][ADDR_CAP];
};

struct inbox_client {
    struct tls_ctx *tls;
    char name[INBOX_FRAME_TEXT_BYTES_MAX + 1];
    char (*seeds)[ADDR_CAP];
    size_t seeds_count;
    size_t any_next; /* round robin over seeds and nodes */
    /* Map refreshes rotate over the map's nodes, skipping the node that
     * last said it knows no leader (NOT_LEADER naming none, or a map with
     * a shard unled): it may be cut off from the others, and its map would
     * say so again. */
    size_t route_next;
    uint64_t route_avoid;
    uint32_t inflight_max, connect_timeout_ms, stall_timeout_ms;
    uint32_t backoff_min_ms, backoff_max_ms;
    inbox_client_notify_fn *notify;
    void *notify_arg;

    struct call *calls_head, *calls_tail;
    size_t calls_user;

    /* The shard map. */
    bool map_known;
    uint64_t epoch;
    uint32_t shard_count;
    uint64_t *leaders;
    struct node *nodes;
    size_t nodes_count;
    struct call *route_call; /* the refresh in flight, or NULL */
    bool route_wanted;       /* a refresh is due once route_next_ms passes */
    uint64_t route_next_ms;  /* no new refresh before this */
    uint32_t route_failures;

    struct conn **conns;
    size_t conns_count, conns_cap;
    struct pollfd *pfds;
    struct conn **pconns;

    struct wire **buckets;
    size_t buckets_mask;
    uint64_t next_id;
    uint64_t rng;

    uint8_t *rbuf;  /* INBOX_CLIENT_READ_BYTES: socket reads */
    uint8_t *plain; /* INBOX_CLIENT_READ_BYTES: decrypted bytes */
    struct inbox_target *s_targets;
    struct inbox_bytes *s_keys;
    struct inbox_client_enqueue_item *s_items;
    struct inbox_client_key_item *s_kitems;
    struct inbox_client_message *s_msgs;

    int depth;    /* inside poll or free: no re-entry */
    bool closing; /* inside free */
    int fired;    /* callbacks fired in this poll */
    char errmsg[ERRMSG_CAP];
    struct inbox_client_stats stats;
};

/* ops.c */
int ops_encode(struct inbox_client *c, struct conn *conn, struct wire *w,
               uint8_t *out, size_t cap, size_t *frame_bytes);
void ops_finish(struct inbox_client *c, struct call *call, int status,
                const struct inbox_msg *m);
/* Fills u->status/value/dedup from a successful single-unit response. */
void ops_single_result(struct call *call, struct unit *u,
                       const struct inbox_msg *m);

/* client.c */
uint64_t client_now_ms(void);
void client_errmsg_set(struct inbox_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
struct call *call_new(struct inbox_client *c, uint8_t op, size_t units_count,
                      uint32_t timeout_ms, void *arg, int *rc_out);
void call_submit(struct inbox_client *c, struct call *call);
void call_free(struct call *call);
int unit_set_key(struct unit *u, const void *key, size_t len);
int msg_id_make(uint8_t out[INBOX_MSG_ID_BYTES]);

#endif /* INBOX_CLIENT_INTERNAL_H */
