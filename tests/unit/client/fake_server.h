/*
 * fake_server.h — a scriptable stand-in for an inboxd node, for the client
 * tests: a thread serving 127.0.0.1 on an ephemeral port over mutual TLS
 * (net/tls) with the real frame codec (net/codec). It answers HELLO and
 * ROUTE from a shared cluster description and the data operations from
 * simple rules; a test switches its `mode` to make it misbehave (redirect,
 * drop, delay, reorder) and reads what it recorded. Every field below the
 * mutex is guarded by it.
 */
#ifndef INBOX_TESTS_FAKE_SERVER_H
#define INBOX_TESTS_FAKE_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "inbox/limits.h"
#include "net/tls.h"

#define FAKE_NODES_MAX 2
#define FAKE_SHARDS 4
#define FAKE_CONNS_MAX 8
#define FAKE_RECORDS_MAX 64
#define FAKE_HELD_MAX 64
#define FAKE_DELAYED_MAX 8

/* What ROUTE answers, shared by the fakes of one test. */
struct fake_cluster {
    uint64_t epoch;
    uint32_t nodes_count;
    uint64_t node_ids[FAKE_NODES_MAX];
    char addrs[FAKE_NODES_MAX][32];
    uint64_t leaders[FAKE_SHARDS];
};

enum fake_mode {
    FAKE_NORMAL = 0,
    FAKE_NOT_LEADER,    /* ENQUEUE -> NOT_LEADER naming `redirect_to` */
    FAKE_DROP_FIRST,    /* first ENQUEUE: record it, then close the conn */
    FAKE_DELAY,         /* ENQUEUE answered after delay_ms */
    FAKE_REORDER,       /* ENQUEUE answers held and sent in reverse order */
    FAKE_BUSY_FIRST,    /* first ENQUEUE: record it, answer ERROR BUSY */
    FAKE_GARBAGE_FIRST, /* first ENQUEUE: answer bytes that are no frame */
    FAKE_SILENT_FIRST,  /* first connection: after ROUTE, never answer */
    FAKE_NO_LEADER,     /* cut off: ROUTE names no leader, ENQUEUE is
                           NOT_LEADER naming none */
};

struct fake_conn;

struct fake {
    uint64_t node_id;
    char addr[32];
    struct tls_ctx *tls;
    const struct fake_cluster *cluster;
    int lfd;
    pthread_t thread;
    volatile int stop; /* written by the test, read by the thread */

    pthread_mutex_t mu;
    enum fake_mode mode;
    uint32_t redirect_to; /* index into cluster nodes */
    uint32_t delay_ms;
    bool drop_all; /* close every connection at the next round */
    /* The next ROUTE says every shard is led by this node (a stale map);
     * ENQUEUE_MANY targets of shards the cluster says another node leads
     * are answered 1300 NOT_LEADER. */
    bool stale_route_once;
    uint64_t next_seq;
    uint64_t watch_last_seq;
    /* Records. */
    uint32_t accepted;
    uint32_t enqueues;
    uint8_t msg_ids[FAKE_RECORDS_MAX][INBOX_MSG_ID_BYTES];
    uint32_t many_targets;    /* fan-out targets enqueued here */
    uint32_t many_not_leader; /* fan-out targets answered NOT_LEADER */
    uint32_t routes;          /* ROUTE requests answered */
    uint32_t pings;           /* PING requests answered */
    uint32_t out_of_order;    /* answers sent after a higher request id */
    uint64_t last_answered_id;

    /* Thread-private. */
    struct fake_conn *conns[FAKE_CONNS_MAX];
};

/* Starts a fake node serving with certificate <cert>.crt/.key signed by
 * <ca_crt>; the cluster description must outlive it. */
void fake_start(struct fake *f, uint64_t node_id, const char *ca_crt,
                const char *cert, const char *key,
                const struct fake_cluster *cluster);
void fake_stop(struct fake *f);

/* What a fake recorded, copied under its lock (assert on the copy, never
 * while holding the lock: a failed assertion jumps out of the test). */
struct fake_records {
    uint32_t accepted, enqueues, many_targets, many_not_leader, routes;
    uint32_t out_of_order, pings;
    uint8_t msg_ids[FAKE_RECORDS_MAX][INBOX_MSG_ID_BYTES];
};
void fake_records_get(struct fake *f, struct fake_records *out);

/* Guarded access for the test thread (to change the script). */
void fake_lock(struct fake *f);
void fake_unlock(struct fake *f);

#endif /* INBOX_TESTS_FAKE_SERVER_H */
