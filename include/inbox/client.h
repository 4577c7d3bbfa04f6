/*
 * client.h — libinbox, the C client of inboxd.
 *
 * One `struct inbox_client` talks to a whole cluster: it connects over
 * mutual TLS to the seed addresses of its config, negotiates the protocol
 * version (HELLO), learns the shard map (ROUTE), keeps one connection per
 * node, and sends each request to the leader of its inbox's shard. It
 * follows NOT_LEADER redirects, reconnects with backoff, and retries a
 * request until its deadline; an ENQUEUE is always retried with the same
 * msg id, so the server's dedup makes the retry safe. docs/client.md is the
 * usage guide; docs/protocol.md is the wire protocol.
 *
 * Two layers:
 *   1. The async core. inbox_client_submit_<op>() copies its arguments,
 *      queues the call and returns at once; inbox_client_poll() does all
 *      the I/O (non-blocking sockets and poll(2)) and fires each call's
 *      completion callback exactly once: with the result, or an error, or
 *      INBOX_ETIMEOUT when its deadline passes. Calls are pipelined and
 *      their answers may come back in any order.
 *   2. Synchronous wrappers (inbox_enqueue(), inbox_fetch(), ...) built on
 *      the core: submit, then poll until that call completes.
 *
 * Threads: none inside. A client belongs to one thread at a time; use one
 * client per thread. Callbacks run inside inbox_client_poll() (or
 * inbox_client_free()) on the caller's thread. A callback may submit new
 * calls; it must not call inbox_client_poll(), a synchronous wrapper or
 * inbox_client_free() on the same client (they return INBOX_EINVAL or
 * assert). No signal handler is needed: sockets are written with
 * MSG_NOSIGNAL, so a vanished server never raises SIGPIPE.
 *
 * Ownership:
 *   - Every submit copies what it is given (inboxes, payloads, msg ids,
 *     addresses): the caller's buffers may be reused as soon as it returns.
 *   - Everything a callback receives through a pointer (results, fetched
 *     messages and their payloads, msg ids, error items, the NOTIFY inbox)
 *     is owned by the client and valid only until the callback returns.
 *     Copy what must outlive it.
 *   - The synchronous inbox_fetch() and inbox_status() return heap results
 *     the caller frees with inbox_fetch_result_free() / _status_free().
 *   - Strings returned by inbox_client_last_error_message() are owned by the
 *     client and valid until its next call.
 *
 * Errors: 0 or a negative INBOX_E* code (include/inbox/error.h); an error
 * answered by a server arrives as the negated code of its ERROR body (e.g.
 * INBOX_EACK_BEYOND_LAST), with the server's message in
 * inbox_client_last_error_message(). Submit functions fail fast with
 * INBOX_EINVAL / INBOX_EKEY_INVALID / INBOX_EPAYLOAD_TOO_LARGE /
 * INBOX_ETOO_MANY_INBOXES for bad arguments, INBOX_EBUSY when the client
 * already has `inflight_max` calls in flight, INBOX_ESHUTDOWN while the
 * client is being freed; then no callback fires.
 */
#ifndef INBOX_CLIENT_H
#define INBOX_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbox/error.h"
#include "inbox/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the client --------------------------------------------------------- */

struct inbox_client;

/* A server push: `inbox` now ends at `last_seq` (a hint to FETCH; pushes
 * may be coalesced). Called with status != 0, inbox NULL and last_seq 0
 * when a connection that carried watches was lost: the server forgot those
 * watches, so the caller should WATCH again (and FETCH what it missed). */
typedef void inbox_client_notify_fn(void *arg, int status, const uint8_t *inbox,
                                    size_t inbox_len, uint64_t last_seq);

struct inbox_client_config {
    /* "host:port" addresses to learn the cluster from (IPv6 as "[::1]:7400");
     * 1..INBOX_CLIENT_SEEDS_MAX. Host names are resolved with getaddrinfo()
     * when a connection starts (that may block: prefer IP literals). */
    const char *const *seeds;
    size_t seeds_count;
    /* The cluster CA, and this client's certificate and key (PEM), made
     * with `inboxctl cert client`. Servers must present a node certificate
     * naming the host of the address the client dialled. */
    const char *ca_path;
    const char *cert_path;
    const char *key_path;
    /* Sent in HELLO; NULL: "libinbox/0.1". */
    const char *client_name;
    /* Calls in flight at once (0: INBOX_CLIENT_INFLIGHT_DEFAULT, at most
     * INBOX_CLIENT_INFLIGHT_MAX); one more is refused with INBOX_EBUSY. */
    uint32_t inflight_max;
    /* TCP connect + TLS handshake + HELLO must finish within this
     * (0: INBOX_CLIENT_CONNECT_TIMEOUT_MS_DEFAULT). */
    uint32_t connect_timeout_ms;
    /* A connection with requests or watches outstanding that receives
     * nothing for this long gets a PING; for twice this long, it is closed
     * and its requests are retried (0: INBOX_CLIENT_STALL_TIMEOUT_MS_DEFAULT).
     * Catches peers that vanished without a FIN (partitions, SIGSTOP). */
    uint32_t stall_timeout_ms;
    /* Retry backoff: doubling from min to max, with jitter (0: defaults). */
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    /* Server pushes (NOTIFY) and lost watches; may be NULL. */
    inbox_client_notify_fn *notify;
    void *notify_arg;
};

/* Checks the config and loads the TLS files; connects lazily (on the first
 * call). Returns 0 and *client_out, INBOX_EINVAL, INBOX_ENOMEM or
 * INBOX_ETLS_CONFIG (inbox_client_last_error_message() cannot be asked
 * yet: the reason goes to errmsg when it is not NULL). */
int inbox_client_new(const struct inbox_client_config *config,
                     struct inbox_client **client_out, char *errmsg,
                     size_t errmsg_bytes);

/* Closes every connection and completes every call still in flight with
 * INBOX_ESHUTDOWN (their callbacks fire here: they must not use the
 * client). NULL is a no-op. */
void inbox_client_free(struct inbox_client *client);

/* One round of I/O: runs timers (deadlines, backoff, reconnects), sends
 * what is queued, waits for socket events up to timeout_ms (0: not at all;
 * negative is INBOX_EINVAL) or less when a deadline or retry is due
 * sooner, or not at all when a callback already fired in this round; then
 * reads, fires callbacks, and sends again. Call it in a loop. Returns the
 * number of callbacks fired (>= 0), INBOX_EINVAL when called from a
 * callback, or a negative errno if poll(2) fails. */
int inbox_client_poll(struct inbox_client *client, int timeout_ms);

/* Calls submitted and not yet completed. */
size_t inbox_client_inflight(const struct inbox_client *client);

/* A human message about the latest failure seen by this client: the
 * server's ERROR message, a TLS or socket failure, or what a timed-out call
 * last ran into. "" if none. Owned by the client. */
const char *inbox_client_last_error_message(const struct inbox_client *client);

/* Counters, for benchmarks and tests. */
struct inbox_client_stats {
    uint64_t requests_sent;     /* request frames written (retries too) */
    uint64_t responses_ignored; /* late answers to calls already completed */
    uint64_t retries;           /* re-sends after an error or lost conn */
    uint64_t redirects;         /* NOT_LEADER answers followed */
    uint64_t connects;          /* connections started */
    uint64_t notifies;          /* NOTIFY pushes delivered */
};
void inbox_client_stats_get(const struct inbox_client *client,
                            struct inbox_client_stats *stats_out);

/* The shard of an inbox: XXH3_64bits(inbox, seed 0) % shard_count
 * (docs/protocol.md §6). shard_count >= 1. */
uint32_t inbox_shard_of(const void *inbox, size_t inbox_len,
                        uint32_t shard_count);

/* The client's current shard map: shard count (0 until learned) and the
 * leader node id of a shard (0 unknown). */
uint32_t inbox_client_shard_count(const struct inbox_client *client);
uint64_t inbox_client_shard_leader(const struct inbox_client *client,
                                   uint32_t shard);
/* The nodes of the shard map: writes up to cap ids, returns how many there
 * are. A node's first address, or NULL for an unknown id; the string is
 * valid until the next ROUTE. */
size_t inbox_client_nodes(const struct inbox_client *client, uint64_t *ids,
                          size_t cap);
const char *inbox_client_node_addr(const struct inbox_client *client,
                                   uint64_t id);

/* ---- common types ------------------------------------------------------- */

/* An inbox key (1..INBOX_KEY_BYTES_MAX bytes) given to a submit. */
struct inbox_client_key {
    const void *ptr;
    size_t len;
};

/* A fan-out target: an inbox and its msg id (NULL: the library makes one
 * from getrandom(2); it is reported back in the result). */
struct inbox_client_target {
    const void *inbox;
    size_t inbox_len;
    const uint8_t *msg_id; /* INBOX_MSG_ID_BYTES bytes, or NULL */
};

/* Per-inbox result of ENQUEUE_MANY: status 0 and seq/dedup, or an error
 * (INBOX_ETIMEOUT if the call's deadline passed before it was answered). */
struct inbox_client_enqueue_item {
    int status;
    bool dedup;
    uint64_t seq;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
};

/* Per-inbox result of SEEN_GET (value: last-seen ts ms, 0 = never), WATCH
 * (value: the inbox's current last seq) and UNWATCH (value 0). */
struct inbox_client_key_item {
    int status;
    uint64_t value;
};

/* SEEN_GET / FETCH: a follower may answer with possibly stale data. */
#define INBOX_CLIENT_STALE_OK 0x01u

struct inbox_client_message {
    uint64_t seq;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint64_t enqueue_ts_ms;
    const uint8_t *payload; /* see Ownership above */
    size_t payload_len;
};

struct inbox_client_fetch_result {
    uint64_t acked_seq;
    uint64_t last_seq; /* more is waiting when it is above the last seq */
    bool stale;
    size_t count;
    const struct inbox_client_message *messages; /* ascending seqs */
};

struct inbox_client_shard_status {
    uint32_t shard;
    uint8_t role; /* 0 follower, 1 candidate, 2 leader, 3 learner, 4 none */
    uint64_t leader_id;
    uint64_t term;
    uint64_t applied_index;
};

struct inbox_client_status {
    uint64_t node_id;
    uint64_t uptime_ms;
    size_t count;
    const struct inbox_client_shard_status *shards;
};

/* ---- async core --------------------------------------------------------- */
/*
 * Every submit takes `timeout_ms` (0: INBOX_CLIENT_TIMEOUT_MS_DEFAULT, at
 * most INBOX_CLIENT_TIMEOUT_MS_MAX): the call's deadline, covering
 * connecting, redirects and retries. Then `arg`, handed back to the
 * callback, and the callback last. A callback gets `status` 0 or a
 * negative INBOX_E* code; result fields are zero when status != 0 (except
 * where noted).
 *
 * Retries: a lost connection, a retryable error (inbox_err_retryable() in
 * net/codec.h: NOT_LEADER, BUSY, PROPOSAL_DROPPED, ...) or NOT_LEADER
 * re-send the call (to the new leader), with backoff, until its deadline.
 * Non-retryable errors complete the call at once. TLS failures (a server
 * not trusted, ...) are not retried.
 */

/* ENQUEUE. msg_id: INBOX_MSG_ID_BYTES bytes, or NULL for a random one.
 * The callback's msg_id is the one used (also on failure). */
typedef void inbox_enqueue_done_fn(void *arg, int status, uint64_t seq,
                                   bool dedup, const uint8_t *msg_id);
int inbox_client_submit_enqueue(struct inbox_client *client, const void *inbox,
                                size_t inbox_len, const uint8_t *msg_id,
                                uint64_t ttl_ms, const void *payload,
                                size_t payload_len, uint32_t timeout_ms,
                                void *arg, inbox_enqueue_done_fn *enqueue_done);

/* ENQUEUE_MANY: one payload to 1..INBOX_FANOUT_INBOXES_MAX inboxes. The
 * targets are split by shard leader into one request per node and each is
 * retried on its own. The callback gets one item per target, in order;
 * status is 0 when every item succeeded, else the first item's error. */
typedef void
inbox_enqueue_many_done_fn(void *arg, int status, size_t count,
                           const struct inbox_client_enqueue_item *items);
int inbox_client_submit_enqueue_many(
    struct inbox_client *client, const struct inbox_client_target *targets,
    size_t count, uint64_t ttl_ms, const void *payload, size_t payload_len,
    uint32_t timeout_ms, void *arg,
    inbox_enqueue_many_done_fn *enqueue_many_done);

/* FETCH messages after `after_seq`: at most messages_max / bytes_max (0:
 * the server's caps), long-polling up to wait_ms (clamped to
 * INBOX_FETCH_WAIT_MS_MAX; keep timeout_ms above it; timeout_ms 0 means
 * wait_ms + INBOX_CLIENT_TIMEOUT_MS_DEFAULT). flags: INBOX_CLIENT_STALE_OK.
 * The result is NULL when status != 0. */
typedef void
inbox_fetch_done_fn(void *arg, int status,
                    const struct inbox_client_fetch_result *result);
int inbox_client_submit_fetch(struct inbox_client *client, const void *inbox,
                              size_t inbox_len, uint64_t after_seq,
                              uint32_t messages_max, uint32_t bytes_max,
                              uint32_t wait_ms, uint8_t flags,
                              uint32_t timeout_ms, void *arg,
                              inbox_fetch_done_fn *fetch_done);

/* ACK every message <= up_to_seq. acked_seq: the inbox's acked seq after. */
typedef void inbox_ack_done_fn(void *arg, int status, uint64_t acked_seq);
int inbox_client_submit_ack(struct inbox_client *client, const void *inbox,
                            size_t inbox_len, uint64_t up_to_seq,
                            uint32_t timeout_ms, void *arg,
                            inbox_ack_done_fn *ack_done);

/* SEEN_SET: last-seen moves forward only; ts_ms is the stored value. */
typedef void inbox_seen_set_done_fn(void *arg, int status, uint64_t ts_ms);
int inbox_client_submit_seen_set(struct inbox_client *client, const void *inbox,
                                 size_t inbox_len, uint64_t ts_ms,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_seen_set_done_fn *seen_set_done);

/* SEEN_GET, WATCH, UNWATCH: 1..1024 inboxes (split by leader like
 * ENQUEUE_MANY); one item per inbox, in order. A watch lives on the
 * connection to the inbox's leader; NOTIFY pushes go to config.notify. */
typedef void inbox_seen_get_done_fn(void *arg, int status, size_t count,
                                    const struct inbox_client_key_item *items);
int inbox_client_submit_seen_get(struct inbox_client *client,
                                 const struct inbox_client_key *inboxes,
                                 size_t count, uint8_t flags,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_seen_get_done_fn *seen_get_done);
typedef inbox_seen_get_done_fn inbox_watch_done_fn;
int inbox_client_submit_watch(struct inbox_client *client,
                              const struct inbox_client_key *inboxes,
                              size_t count, uint32_t timeout_ms, void *arg,
                              inbox_watch_done_fn *watch_done);
typedef inbox_seen_get_done_fn inbox_unwatch_done_fn;
int inbox_client_submit_unwatch(struct inbox_client *client,
                                const struct inbox_client_key *inboxes,
                                size_t count, uint32_t timeout_ms, void *arg,
                                inbox_unwatch_done_fn *unwatch_done);

/* ROUTE: refresh the shard map now (the client also does this by itself
 * when it needs to). */
typedef void inbox_route_done_fn(void *arg, int status, uint64_t epoch,
                                 uint32_t shard_count, uint32_t nodes_count);
int inbox_client_submit_route(struct inbox_client *client, uint32_t timeout_ms,
                              void *arg, inbox_route_done_fn *route_done);
/* The same, answered by node `node_id` (0: any): its view of the map
 * (which nodes are members of some shard, as that node sees it). */
int inbox_client_submit_route_at(struct inbox_client *client, uint64_t node_id,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_route_done_fn *route_done);

/* STATUS of node `node_id` (0: any node). NULL result when status != 0. */
typedef void inbox_status_done_fn(void *arg, int status,
                                  const struct inbox_client_status *result);
int inbox_client_submit_status(struct inbox_client *client, uint64_t node_id,
                               uint32_t timeout_ms, void *arg,
                               inbox_status_done_fn *status_done);

/* Admin operations (need an admin certificate, else INBOX_EDENIED). Each
 * answers the placement epoch at which the change was accepted. ADD_NODE
 * and REMOVE_NODE go to node `at_node_id` (0: any node); each node acts on
 * the shards it leads, so an admin tool sends them to every node (see
 * `inboxctl cluster add-node`). TRANSFER_LEADER goes to the shard's leader,
 * SNAPSHOT to `node_id` (0: any). */
typedef void inbox_admin_done_fn(void *arg, int status, uint64_t epoch);
int inbox_client_submit_add_node(struct inbox_client *client,
                                 uint64_t at_node_id, uint64_t node_id,
                                 const char *const *addrs, size_t addrs_count,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_admin_done_fn *add_node_done);
int inbox_client_submit_remove_node(struct inbox_client *client,
                                    uint64_t at_node_id, uint64_t node_id,
                                    uint32_t timeout_ms, void *arg,
                                    inbox_admin_done_fn *remove_node_done);
int inbox_client_submit_transfer_leader(
    struct inbox_client *client, uint32_t shard, uint64_t to_node_id,
    uint32_t timeout_ms, void *arg, inbox_admin_done_fn *transfer_leader_done);
int inbox_client_submit_move_replica(struct inbox_client *client,
                                     uint32_t shard, uint64_t from_node_id,
                                     uint64_t to_node_id, uint32_t timeout_ms,
                                     void *arg,
                                     inbox_admin_done_fn *move_replica_done);
/* shard: a shard id, or INBOX_CLIENT_SHARD_ALL for every shard on the node. */
#define INBOX_CLIENT_SHARD_ALL 0xFFFFFFFFu
int inbox_client_submit_snapshot(struct inbox_client *client, uint64_t node_id,
                                 uint32_t shard, uint32_t timeout_ms, void *arg,
                                 inbox_admin_done_fn *snapshot_done);

/* ---- synchronous wrappers ----------------------------------------------- */
/*
 * Each submits the call and runs inbox_client_poll() until it completes
 * (other calls' callbacks fire meanwhile). Returns the call's status; out
 * parameters are written on success (and msg_id_out always). Not callable
 * from a callback (INBOX_EINVAL). Output pointers may be NULL.
 */
int inbox_enqueue(struct inbox_client *client, const void *inbox,
                  size_t inbox_len, const uint8_t *msg_id, uint64_t ttl_ms,
                  const void *payload, size_t payload_len, uint64_t *seq_out,
                  bool *dedup_out, uint8_t *msg_id_out, uint32_t timeout_ms);

/* items_out: `count` items, filled also when some items failed. */
int inbox_enqueue_many(struct inbox_client *client,
                       const struct inbox_client_target *targets, size_t count,
                       uint64_t ttl_ms, const void *payload, size_t payload_len,
                       struct inbox_client_enqueue_item *items_out,
                       uint32_t timeout_ms);

/* *result_out: one heap block (messages and payloads copied), freed with
 * inbox_fetch_result_free(). */
int inbox_fetch(struct inbox_client *client, const void *inbox,
                size_t inbox_len, uint64_t after_seq, uint32_t messages_max,
                uint32_t bytes_max, uint32_t wait_ms, uint8_t flags,
                struct inbox_client_fetch_result **result_out,
                uint32_t timeout_ms);
void inbox_fetch_result_free(struct inbox_client_fetch_result *result);

int inbox_ack(struct inbox_client *client, const void *inbox, size_t inbox_len,
              uint64_t up_to_seq, uint64_t *acked_seq_out, uint32_t timeout_ms);
int inbox_seen_set(struct inbox_client *client, const void *inbox,
                   size_t inbox_len, uint64_t ts_ms, uint64_t *ts_ms_out,
                   uint32_t timeout_ms);
/* items_out: `count` items. */
int inbox_seen_get(struct inbox_client *client,
                   const struct inbox_client_key *inboxes, size_t count,
                   uint8_t flags, struct inbox_client_key_item *items_out,
                   uint32_t timeout_ms);
int inbox_watch(struct inbox_client *client,
                const struct inbox_client_key *inboxes, size_t count,
                struct inbox_client_key_item *items_out, uint32_t timeout_ms);
int inbox_unwatch(struct inbox_client *client,
                  const struct inbox_client_key *inboxes, size_t count,
                  struct inbox_client_key_item *items_out, uint32_t timeout_ms);
int inbox_route(struct inbox_client *client, uint64_t *epoch_out,
                uint32_t timeout_ms);
/* *result_out: heap, freed with inbox_status_free(). */
int inbox_status(struct inbox_client *client, uint64_t node_id,
                 struct inbox_client_status **result_out, uint32_t timeout_ms);
void inbox_status_free(struct inbox_client_status *result);

int inbox_add_node(struct inbox_client *client, uint64_t node_id,
                   const char *const *addrs, size_t addrs_count,
                   uint64_t *epoch_out, uint32_t timeout_ms);
int inbox_remove_node(struct inbox_client *client, uint64_t node_id,
                      uint64_t *epoch_out, uint32_t timeout_ms);
int inbox_transfer_leader(struct inbox_client *client, uint32_t shard,
                          uint64_t to_node_id, uint64_t *epoch_out,
                          uint32_t timeout_ms);
int inbox_move_replica(struct inbox_client *client, uint32_t shard,
                       uint64_t from_node_id, uint64_t to_node_id,
                       uint64_t *epoch_out, uint32_t timeout_ms);
int inbox_snapshot(struct inbox_client *client, uint64_t node_id,
                   uint32_t shard, uint64_t *epoch_out, uint32_t timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* INBOX_CLIENT_H */
