/*
 * serve.h — the protocol service: what each request opcode means for the
 * node, between the transport (net/transport.h, the loop thread) and the
 * node (server/node.h, the node thread).
 *
 * It turns decoded requests into node calls and node completions into
 * responses, and owns the two things that live between them:
 *   - WATCH: per-connection watches of inboxes; the node's enqueue-applied
 *     hook pushes NOTIFY to every connection watching that inbox;
 *   - long-poll FETCH: a fetch that finds nothing above after_seq and asked
 *     to wait is parked until an enqueue to its inbox is applied (then it is
 *     fetched again) or its wait runs out (then it is answered as it is).
 *
 * Threads: serve_on_request and serve_on_conn_closed run on the loop thread
 * (they are the transport's callbacks); serve_enqueue_applied runs on the
 * node thread (it is the node's hook). The watch and waiter tables are
 * shared between them under one mutex.
 */
#ifndef INBOX_SERVER_SERVE_H
#define INBOX_SERVER_SERVE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "addrbook.h"
#include "config.h"
#include "net/codec.h"
#include "net/transport.h"

struct node;
struct serve;

struct serve_options {
    uv_loop_t *loop;
    uint64_t node_id;
    const char *advertise;   /* "host:port" clients reach this node at */
    uint64_t default_ttl_ms; /* for ENQUEUE ttl_ms 0; 0 = never expires */
    /* Where the cluster's nodes are (copied), for ROUTE and for the leader
     * named in NOT_LEADER; this node is always at `advertise`. */
    const struct addrbook *book;
    /* ADD_NODE learned an address (loop thread): make it durable and open
     * a peer link. Returns 0 or an INBOX_E* code (the request fails with
     * it and the node is not added). */
    int (*node_added)(void *arg, uint64_t id, const char *addr);
    void *node_added_arg;
};

/* Create the service; attach the node and transport with serve_attach
 * before the loop runs (the node's hook and the transport's callbacks need
 * the service first, hence two steps). */
int serve_new(const struct serve_options *o, struct serve **out);
void serve_attach(struct serve *sv, struct node *node, struct transport *t);
void serve_free(struct serve *sv);

/* Answer every parked long-poll now (shutdown: the transport waits for
 * in-flight requests, and a parked fetch is one). Loop thread. */
void serve_stop(struct serve *sv);

/* Transport callbacks (loop thread); arg is the struct serve. */
void serve_on_request(void *arg, struct transport_req *req,
                      const struct inbox_msg *msg);
void serve_on_conn_closed(void *arg, struct transport_conn *conn);

/* Node hook (node thread); arg is the struct serve. */
void serve_enqueue_applied(void *arg, uint32_t shard, const uint8_t *inbox,
                           size_t inbox_len, uint64_t last_seq);

/* Parked fetches and watches right now, for metrics and tests. */
void serve_counts(struct serve *sv, size_t *waiters, size_t *watches);

#endif /* INBOX_SERVER_SERVE_H */
