/*
 * client.c — the engine of libinbox: connections (non-blocking sockets,
 * TLS as a byte pump, HELLO), the shard map and routing, wires and their
 * request ids, retries with backoff, deadlines, and the poll loop. The
 * objects, their states and invariants are described in client_internal.h;
 * what each operation encodes and hands back is ops.c.
 *
 * Connection states (struct conn, enum conn_state):
 *   IDLE -> CONNECTING      conn_start (connect(2) returned EINPROGRESS)
 *   CONNECTING -> TLS       conn_on_connected (SO_ERROR is 0)
 *   TLS -> HELLO            conn_drain_plain, when the handshake is done
 *   HELLO -> READY          conn_on_hello
 *   any -> IDLE             conn_fail: the socket is closed, every wire on
 *                           it goes back to its call (to be retried, or
 *                           finished with the error when it is fatal: TLS,
 *                           version), and it may be dialled again after a
 *                           backoff. Also when the connect deadline passes.
 *
 * One poll round (inbox_client_poll): run_timers (deadlines, connect
 * timeouts, dispatch of pending units, finishing done calls, encoding and
 * flushing), then poll(2) on every socket, then read/write what is ready,
 * then run_timers again. Everything happens on the caller's thread;
 * callbacks fire from inside the round.
 */
#include "client_internal.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "inbox/error.h"

/* ---- small helpers ------------------------------------------------------ */

uint64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void client_errmsg_set(struct inbox_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

static uint64_t rng_next(struct inbox_client *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545F4914F6CDD1Dull;
}

/* Doubling from backoff_min_ms, capped at backoff_max_ms, then jittered
 * into [half, whole] so that many clients do not retry in step. */
static uint64_t backoff_ms(struct inbox_client *c, uint32_t attempts)
{
    uint64_t b = c->backoff_min_ms;
    for (uint32_t i = 1; i < attempts && b < c->backoff_max_ms; i++)
        b *= 2;
    if (b > c->backoff_max_ms)
        b = c->backoff_max_ms;
    uint64_t half = b / 2;
    return half + rng_next(c) % (b - half + 1);
}

int msg_id_make(uint8_t out[INBOX_MSG_ID_BYTES])
{
    size_t have = 0;
    while (have < INBOX_MSG_ID_BYTES) {
        ssize_t n = getrandom(out + have, INBOX_MSG_ID_BYTES - have, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        have += (size_t)n;
    }
    return 0;
}

uint32_t inbox_shard_of(const void *inbox, size_t inbox_len,
                        uint32_t shard_count)
{
    assert(shard_count >= 1);
    return (uint32_t)(XXH3_64bits(inbox, inbox_len) % shard_count);
}

/* TLS failures, a refused version or a refused certificate will not mend
 * by retrying: the calls they hit are finished with the error. */
static bool err_fatal(int err)
{
    return (err <= INBOX_ETLS_HANDSHAKE && err >= INBOX_ETLS_CONFIG) ||
           err == INBOX_EUNAUTHENTICATED || err == INBOX_EPROTO_VERSION ||
           err == INBOX_EDENIED;
}

/* ---- wires: the request-id hash and the lists --------------------------- */

static void wlist_append(struct wire_list *l, struct wire *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

static void wlist_remove(struct wire_list *l, struct wire *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
}

static struct wire **bucket_of(struct inbox_client *c, uint64_t id)
{
    return &c->buckets[(id * 0x9E3779B97F4A7C15ull >> 20) & c->buckets_mask];
}

static struct wire *wire_find(struct inbox_client *c, uint64_t id)
{
    for (struct wire *w = *bucket_of(c, id); w; w = w->hash_next)
        if (w->id == id)
            return w;
    return NULL;
}

static struct wire *wire_new(struct inbox_client *c, struct call *call,
                             struct conn *conn)
{
    struct wire *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->id = c->next_id++;
    w->call = call;
    w->conn = conn;
    struct wire **b = bucket_of(c, w->id);
    w->hash_next = *b;
    *b = w;
    wlist_append(&conn->unsent, w);
    w->call_next = call->wires;
    call->wires = w;
    call->wires_count++;
    return w;
}

/* Removes a wire from everything and frees it. Its units must already
 * have been given back (unit->wire cleared) by the caller. */
static void wire_unlink(struct inbox_client *c, struct wire *w)
{
    for (struct wire **p = bucket_of(c, w->id); *p; p = &(*p)->hash_next)
        if (*p == w) {
            *p = w->hash_next;
            break;
        }
    wlist_remove(w->sent ? &w->conn->sent : &w->conn->unsent, w);
    struct call *call = w->call;
    for (struct wire **p = &call->wires; *p; p = &(*p)->call_next)
        if (*p == w) {
            *p = w->call_next;
            break;
        }
    assert(call->wires_count > 0);
    call->wires_count--;
    free(w);
}

/* ---- units and calls ---------------------------------------------------- */

static void unit_to(struct call *call, struct unit *u, uint8_t state)
{
    if (u->state == UNIT_PENDING)
        call->units_pending--;
    if (u->state != UNIT_DONE && state == UNIT_DONE)
        call->units_left--;
    if (state == UNIT_PENDING)
        call->units_pending++;
    u->state = state;
    if (state != UNIT_SENT)
        u->wire = NULL;
}

static void unit_done(struct call *call, struct unit *u, int status)
{
    unit_to(call, u, UNIT_DONE);
    u->status = status;
}

/* Gives a wire's units back to its call: PENDING again (retry) or DONE
 * with `err` (fatal), then unlinks the wire. */
static void wire_release(struct inbox_client *c, struct wire *w, int err,
                         bool retry)
{
    struct call *call = w->call;
    for (uint32_t i = 0; i < call->units_count; i++) {
        struct unit *u = &call->units[i];
        if (u->wire != w)
            continue;
        if (retry)
            unit_to(call, u, UNIT_PENDING);
        else
            unit_done(call, u, err);
    }
    call->last_err = err;
    wire_unlink(c, w);
}

static void call_retry_at(struct inbox_client *c, struct call *call,
                          uint64_t at_ms)
{
    call->attempts++;
    c->stats.retries++;
    call->next_try_ms = at_ms;
}

int unit_set_key(struct unit *u, const void *key, size_t len)
{
    if (key == NULL || len < INBOX_KEY_BYTES_MIN || len > INBOX_KEY_BYTES_MAX)
        return INBOX_EKEY_INVALID;
    memcpy(u->key, key, len);
    u->key_len = (uint8_t)len;
    return 0;
}

struct call *call_new(struct inbox_client *c, uint8_t op, size_t units_count,
                      uint32_t timeout_ms, void *arg, int *rc_out)
{
    assert(units_count >= 1);
    if (c == NULL) {
        *rc_out = INBOX_EINVAL;
        return NULL;
    }
    if (c->closing) {
        *rc_out = INBOX_ESHUTDOWN;
        return NULL;
    }
    if (timeout_ms > INBOX_CLIENT_TIMEOUT_MS_MAX) {
        *rc_out = INBOX_EINVAL;
        return NULL;
    }
    if (c->calls_user >= c->inflight_max) {
        *rc_out = INBOX_EBUSY;
        return NULL;
    }
    /* Single-inbox calls (the common case) keep their unit inline. */
    struct call *call = calloc(1, sizeof *call);
    struct unit *units = call == NULL ? NULL
                         : units_count == 1
                             ? &call->unit0
                             : calloc(units_count, sizeof *units);
    if (call == NULL || units == NULL) {
        free(call);
        *rc_out = INBOX_ENOMEM;
        return NULL;
    }
    call->op = op;
    call->units = units;
    call->units_count = (uint32_t)units_count;
    call->units_left = (uint32_t)units_count;
    call->units_pending = (uint32_t)units_count;
    call->arg = arg;
    call->deadline_ms =
        client_now_ms() +
        (timeout_ms ? timeout_ms : INBOX_CLIENT_TIMEOUT_MS_DEFAULT);
    *rc_out = 0;
    return call;
}

void call_free(struct call *call)
{
    if (call == NULL)
        return;
    assert(call->wires == NULL);
    if (call->units != &call->unit0)
        free(call->units);
    free(call->payload);
    free(call->addrs);
    free(call);
}

void call_submit(struct inbox_client *c, struct call *call)
{
    call->prev = c->calls_tail;
    call->next = NULL;
    if (c->calls_tail)
        c->calls_tail->next = call;
    else
        c->calls_head = call;
    c->calls_tail = call;
    if (!call->internal)
        c->calls_user++;
}

static void call_unlink(struct inbox_client *c, struct call *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls_head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        c->calls_tail = call->prev;
    if (!call->internal) {
        assert(c->calls_user > 0);
        c->calls_user--;
    }
}

static void route_finished(struct inbox_client *c, struct call *call,
                           int status);

/* The one place a call ends: unlinked, its callback fired, freed. The
 * overall status is the first failing unit's (0 if none). `m` is the
 * successful response of a single-unit call, for results that point into
 * it (FETCH, STATUS, ROUTE), or NULL. */
static void call_finish(struct inbox_client *c, struct call *call,
                        const struct inbox_msg *m)
{
    assert(call->units_left == 0 && call->wires_count == 0);
    call_unlink(c, call);
    int status = 0;
    for (uint32_t i = 0; i < call->units_count && status == 0; i++)
        status = call->units[i].status;
    if (call->op == INBOX_OP_ROUTE)
        route_finished(c, call, status);
    if (!call->internal) {
        ops_finish(c, call, status, status == 0 ? m : NULL);
        c->fired++;
    }
    call_free(call);
}

static void call_expire(struct inbox_client *c, struct call *call, int status)
{
    while (call->wires)
        wire_release(c, call->wires, status, false);
    for (uint32_t i = 0; i < call->units_count; i++)
        if (call->units[i].state != UNIT_DONE)
            unit_done(call, &call->units[i], status);
    if (status == INBOX_ETIMEOUT && !call->internal)
        client_errmsg_set(c, "%s timed out after %u attempt(s); last error: %s",
                          inbox_op_name(call->op), call->attempts + 1,
                          call->last_err ? inbox_strerror(call->last_err)
                                         : "none (no answer in time)");
    call_finish(c, call, NULL);
}

/* ---- the shard map ------------------------------------------------------ */

static struct node *node_find(struct inbox_client *c, uint64_t id)
{
    for (size_t i = 0; i < c->nodes_count; i++)
        if (c->nodes[i].id == id)
            return &c->nodes[i];
    return NULL;
}

static void node_copy(struct node *dst, const struct inbox_node *src)
{
    struct inbox_iter it = src->addrs_iter;
    struct inbox_bytes a;
    dst->id = src->node_id;
    dst->addrs_count = 0;
    dst->addr_pref = 0;
    while (inbox_next_bytes16(&it, &a) &&
           dst->addrs_count < INBOX_NODE_ADDRS_MAX) {
        memcpy(dst->addrs[dst->addrs_count], a.ptr, a.len);
        dst->addrs[dst->addrs_count][a.len] = '\0';
        dst->addrs_count++;
    }
}

/* A NOT_LEADER detail names a node: learn (or refresh) its addresses. */
static void node_learn(struct inbox_client *c, const struct inbox_node *n)
{
    if (n->node_id == 0 || n->addrs_count == 0)
        return;
    struct node *dst = node_find(c, n->node_id);
    if (dst == NULL) {
        if (c->nodes_count >= INBOX_ROUTE_NODES_MAX)
            return;
        struct node *nodes =
            realloc(c->nodes, (c->nodes_count + 1) * sizeof *nodes);
        if (nodes == NULL)
            return;
        c->nodes = nodes;
        dst = &c->nodes[c->nodes_count++];
    }
    node_copy(dst, n);
}

/* Installs a ROUTE answer unless it is older than the map we hold. */
static int route_apply(struct inbox_client *c, const struct inbox_route_resp *r)
{
    if (c->map_known && r->epoch < c->epoch)
        return 0;
    uint64_t *leaders = malloc((size_t)r->shard_count * sizeof *leaders);
    struct node *nodes =
        r->nodes_count ? calloc(r->nodes_count, sizeof *nodes) : NULL;
    if (leaders == NULL || (r->nodes_count && nodes == NULL)) {
        free(leaders);
        free(nodes);
        return INBOX_ENOMEM;
    }
    struct inbox_iter it = r->leaders_iter;
    for (uint32_t s = 0; s < r->shard_count; s++)
        if (!inbox_next_u64(&it, &leaders[s]))
            leaders[s] = 0;
    it = r->nodes_iter;
    struct inbox_node n;
    size_t count = 0;
    while (count < r->nodes_count && inbox_next_node(&it, &n))
        node_copy(&nodes[count++], &n);
    free(c->leaders);
    free(c->nodes);
    c->leaders = leaders;
    c->nodes = nodes;
    c->nodes_count = count;
    c->shard_count = r->shard_count;
    c->epoch = r->epoch;
    c->map_known = true;
    return 0;
}

/* Which node to ask for the map: 0 (any) until the map names two or more
 * nodes; then the next one in turn that is not route_avoid, preferring
 * one we hold a ready connection to. */
static uint64_t route_target(struct inbox_client *c)
{
    if (!c->map_known || c->nodes_count < 2)
        return 0;
    uint64_t fallback = 0;
    for (size_t k = 0; k < c->nodes_count; k++) {
        const struct node *n = &c->nodes[(c->route_next + k) % c->nodes_count];
        if (n->id == c->route_avoid || n->addrs_count == 0)
            continue;
        bool ready = false;
        for (size_t i = 0; i < c->conns_count && !ready; i++)
            ready = c->conns[i]->node_id == n->id &&
                    c->conns[i]->state == CONN_READY;
        if (ready) {
            c->route_next += k + 1;
            return n->id;
        }
        if (fallback == 0)
            fallback = n->id;
    }
    c->route_next++;
    return fallback;
}

/* Starts a ROUTE refresh unless one is in flight or backing off; in the
 * latter case it starts when the backoff ends (run_timers). */
static void route_refresh(struct inbox_client *c, uint64_t now)
{
    c->route_wanted = true;
    if (c->route_call != NULL || now < c->route_next_ms || c->closing)
        return;
    /* Internal: does not count against inflight_max. */
    struct call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return;
    call->op = INBOX_OP_ROUTE;
    call->u64a = c->epoch; /* to tell whether the answer is news */
    call->internal = true;
    call->route_kind = ROUTE_TO_NODE;
    call->node_id = route_target(c);
    call->units = &call->unit0;
    call->units_count = call->units_left = call->units_pending = 1;
    call->deadline_ms = now + 2u * (uint64_t)c->connect_timeout_ms;
    call_submit(c, call);
    c->route_call = call;
    c->route_wanted = false;
}

/* Every ROUTE call ends here (internal or the user's). */
static void route_finished(struct inbox_client *c, struct call *call,
                           int status)
{
    uint64_t now = client_now_ms();
    if (call == c->route_call)
        c->route_call = NULL;
    if (status == 0 && c->epoch != call->u64a) {
        c->route_failures = 0; /* a newer map: the next may come soon */
        c->route_next_ms = now + c->backoff_min_ms;
    } else {
        /* Failed, or the same epoch again (an election may be running):
         * ask less often. */
        c->route_failures++;
        c->route_next_ms = now + backoff_ms(c, c->route_failures);
    }
    /* Calls waiting for the map try again now; when the map cannot be had
     * for a reason that will not mend (TLS, certificate), they end. */
    bool fatal = status != 0 && err_fatal(status);
    for (struct call *w = c->calls_head; w; w = w->next) {
        if (!w->waits_route || w == call)
            continue;
        w->waits_route = false;
        w->next_try_ms = now;
        if (!fatal)
            continue;
        w->last_err = status;
        for (uint32_t i = 0; i < w->units_count; i++)
            if (w->units[i].state == UNIT_PENDING)
                unit_done(w, &w->units[i], status);
    }
}

uint32_t inbox_client_shard_count(const struct inbox_client *client)
{
    return client->map_known ? client->shard_count : 0;
}

uint64_t inbox_client_shard_leader(const struct inbox_client *client,
                                   uint32_t shard)
{
    if (!client->map_known || shard >= client->shard_count)
        return 0;
    return client->leaders[shard];
}

size_t inbox_client_nodes(const struct inbox_client *client, uint64_t *ids,
                          size_t cap)
{
    for (size_t i = 0; i < client->nodes_count && i < cap; i++)
        ids[i] = client->nodes[i].id;
    return client->nodes_count;
}

const char *inbox_client_node_addr(const struct inbox_client *client,
                                   uint64_t id)
{
    for (size_t i = 0; i < client->nodes_count; i++)
        if (client->nodes[i].id == id && client->nodes[i].addrs_count > 0)
            return client->nodes[i].addrs[0];
    return NULL;
}

/* ---- connections -------------------------------------------------------- */

static void conn_close_socket(struct conn *conn)
{
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = -1;
    tls_conn_free(conn->tls);
    conn->tls = NULL;
    conn->stage_off = conn->stage_len = 0;
    conn->cipher_off = conn->cipher_len = 0;
    conn->state = CONN_IDLE;
}

/* The connection is lost (or could not be made): close it, give its wires
 * back to their calls, and let it be dialled again after a backoff. */
static void conn_fail(struct inbox_client *c, struct conn *conn, int err,
                      const char *why)
{
    uint64_t now = client_now_ms();
    client_errmsg_set(c, "%s: %s%s%s", conn->addr, inbox_strerror(err),
                      why && why[0] ? ": " : "", why ? why : "");
    conn_close_socket(conn);
    conn->failures++;
    conn->reconnect_at_ms = now + backoff_ms(c, conn->failures);
    bool fatal = err_fatal(err);
    bool had_wires = conn->unsent.head || conn->sent.head;
    struct wire_list *lists[2] = {&conn->sent, &conn->unsent};
    for (int l = 0; l < 2; l++)
        while (lists[l]->head) {
            struct call *call = lists[l]->head->call;
            wire_release(c, lists[l]->head, err, !fatal);
            if (!fatal)
                call_retry_at(c, call, now + backoff_ms(c, call->attempts));
        }
    /* A node with several addresses: try the next one next time. */
    for (size_t i = 0; i < c->nodes_count; i++)
        for (uint8_t a = 0; a < c->nodes[i].addrs_count; a++)
            if (strcmp(c->nodes[i].addrs[a], conn->addr) == 0 &&
                c->nodes[i].addr_pref == a)
                c->nodes[i].addr_pref =
                    (uint8_t)((a + 1u) % c->nodes[i].addrs_count);
    /* Leadership may have moved with the failure. */
    if (had_wires && !fatal)
        route_refresh(c, now);
    if (conn->watches > 0) {
        conn->watches = 0;
        if (c->notify) {
            c->notify(c->notify_arg, err, NULL, 0, 0);
            c->fired++;
        }
    }
}

static struct conn *conn_find(struct inbox_client *c, const char *addr)
{
    for (size_t i = 0; i < c->conns_count; i++)
        if (strcmp(c->conns[i]->addr, addr) == 0)
            return c->conns[i];
    return NULL;
}

static struct conn *conn_get(struct inbox_client *c, const char *addr)
{
    struct conn *conn = conn_find(c, addr);
    if (conn)
        return conn;
    if (c->conns_count == c->conns_cap) {
        if (c->conns_cap >= INBOX_CLIENT_CONNS_MAX)
            return NULL;
        size_t cap = c->conns_cap ? c->conns_cap * 2 : 8;
        struct conn **conns = realloc(c->conns, cap * sizeof *conns);
        if (conns == NULL)
            return NULL;
        c->conns = conns;
        struct pollfd *pfds = realloc(c->pfds, cap * sizeof *pfds);
        if (pfds == NULL)
            return NULL;
        c->pfds = pfds;
        struct conn **pconns = realloc(c->pconns, cap * sizeof *pconns);
        if (pconns == NULL)
            return NULL;
        c->pconns = pconns;
        c->conns_cap = cap;
    }
    conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        return NULL;
    snprintf(conn->addr, sizeof conn->addr, "%s", addr);
    conn->fd = -1;
    c->conns[c->conns_count++] = conn;
    return conn;
}

/* Splits "host:port" / "[v6]:port". */
static int addr_split(const char *addr, char *host, size_t host_cap,
                      const char **port)
{
    const char *colon;
    size_t hlen;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return INBOX_EINVAL;
        hlen = (size_t)(end - addr - 1);
        addr++;
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return INBOX_EINVAL;
        hlen = (size_t)(colon - addr);
    }
    if (hlen == 0 || hlen >= host_cap || colon[1] == '\0')
        return INBOX_EINVAL;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    *port = colon + 1;
    return 0;
}

static int conn_buffers(struct conn *conn)
{
    if (conn->body_buf == NULL)
        conn->body_buf = malloc(INBOX_FRAME_BODY_BYTES_MAX);
    if (conn->cipher == NULL)
        conn->cipher = malloc(CIPHER_CAP);
    if (conn->stage == NULL) {
        conn->stage = malloc(INBOX_CLIENT_STAGE_BYTES_MIN);
        conn->stage_cap = conn->stage ? INBOX_CLIENT_STAGE_BYTES_MIN : 0;
    }
    return conn->body_buf && conn->cipher && conn->stage ? 0 : INBOX_ENOMEM;
}

static void conn_flush(struct inbox_client *c, struct conn *conn);

static void conn_on_connected(struct inbox_client *c, struct conn *conn)
{
    conn->state = CONN_TLS;
    conn_flush(c, conn); /* the ClientHello */
}

/* Dials conn->addr. On failure the conn is failed (and backs off). */
static void conn_start(struct inbox_client *c, struct conn *conn, uint64_t now)
{
    char host[ADDR_CAP];
    const char *port;
    int rc = addr_split(conn->addr, host, sizeof host, &port);
    if (rc != 0) {
        conn_fail(c, conn, rc, "bad address");
        return;
    }
    if ((rc = conn_buffers(conn)) != 0) {
        conn_fail(c, conn, rc, "buffers");
        return;
    }
    c->stats.connects++;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        conn_fail(c, conn, -EHOSTUNREACH, gai_strerror(gai));
        return;
    }
    int fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        freeaddrinfo(ai);
        conn_fail(c, conn, rc, "socket");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int crc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int cerr = errno;
    freeaddrinfo(ai);
    conn->fd = fd;
    conn->deadline_ms = now + c->connect_timeout_ms;
    if (crc != 0 && cerr != EINPROGRESS) {
        conn_fail(c, conn, -cerr, "connect");
        return;
    }
    if ((rc = tls_conn_new(c->tls, host, &conn->tls)) != 0) {
        conn_fail(c, conn, rc, "TLS setup");
        return;
    }
    inbox_parser_init(&conn->parser, conn->body_buf,
                      INBOX_FRAME_BODY_BYTES_MAX);
    conn->parser.version = 0;
    conn->version = 0;
    conn->node_id = 0;
    conn->last_rx_ms = now;
    conn->ping_id = 0;
    conn->state = CONN_CONNECTING;
    if (crc == 0)
        conn_on_connected(c, conn);
}

static void conn_send_hello(struct inbox_client *c, struct conn *conn)
{
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = INBOX_PROTO_VERSION_MIN;
    m.hdr.opcode = INBOX_OP_HELLO;
    m.hdr.request_id = conn->hello_id = c->next_id++;
    m.body.hello_req.version_min = INBOX_PROTO_VERSION_MIN;
    m.body.hello_req.version_max = INBOX_PROTO_VERSION_MAX;
    m.body.hello_req.client_name.ptr = (const uint8_t *)c->name;
    m.body.hello_req.client_name.len = (uint32_t)strlen(c->name);
    size_t n = 0;
    assert(conn->stage_len == 0);
    int rc = inbox_msg_encode(&m, conn->stage, conn->stage_cap, &n);
    assert(rc == 0);
    (void)rc;
    conn->stage_len = n;
    conn->state = CONN_HELLO;
}

static void conn_on_hello(struct inbox_client *c, struct conn *conn,
                          const struct inbox_msg *m)
{
    if (m->hdr.flags & INBOX_FLAG_ERROR) {
        const struct inbox_error *e = &m->body.error;
        conn_fail(c, conn, -(int)e->code, "HELLO refused");
        return;
    }
    uint8_t v = m->body.hello_resp.version;
    if (v < INBOX_PROTO_VERSION_MIN || v > INBOX_PROTO_VERSION_MAX) {
        conn_fail(c, conn, INBOX_EPROTO_VERSION,
                  "server chose a version "
                  "outside our range");
        return;
    }
    conn->version = v;
    conn->parser.version = v;
    conn->node_id = m->body.hello_resp.node_id;
    conn->body_bytes_max = m->body.hello_resp.body_bytes_max;
    if (conn->body_bytes_max > INBOX_FRAME_BODY_BYTES_MAX)
        conn->body_bytes_max = INBOX_FRAME_BODY_BYTES_MAX;
    conn->state = CONN_READY;
    conn->failures = 0;
}

/* ---- answers ------------------------------------------------------------ */

/* NOT_LEADER: learn the leader from the detail and resend there (at once
 * for the first few redirects, then with backoff); no leader named: ask
 * ROUTE again. */
static void on_not_leader(struct inbox_client *c, struct wire *w,
                          const struct inbox_error *e, uint64_t now)
{
    struct call *call = w->call;
    c->stats.redirects++;
    bool known = e->leader.node_id != 0;
    if (known) {
        node_learn(c, &e->leader);
        if (call->route_kind == ROUTE_TO_NODE)
            call->node_id = e->leader.node_id;
        else if (c->map_known && e->shard < c->shard_count)
            c->leaders[e->shard] = e->leader.node_id;
    } else {
        /* This node knows no leader: ask another one for the map. */
        if (w->conn != NULL)
            c->route_avoid = w->conn->node_id;
        route_refresh(c, now);
    }
    wire_release(c, w, INBOX_ENOT_LEADER, true);
    if (!known) { /* resend once a new map is in (or the ask failed) */
        call_retry_at(c, call, NEVER_MS);
        call->waits_route = true;
        return;
    }
    bool fast = call->attempts < INBOX_CLIENT_REDIRECTS_FAST_MAX;
    call_retry_at(c, call, fast ? now : now + backoff_ms(c, call->attempts));
}

/* Errors the library retries by itself: the retryable ones (docs/
 * protocol.md) except a full inbox, which clears only when its owner acks;
 * retrying that here would turn a clear error into a timeout, so the
 * caller gets it and decides when to try again. */
static bool retry_transparently(int err)
{
    return inbox_err_retryable(err) && err != INBOX_EINBOX_FULL_MESSAGES &&
           err != INBOX_EINBOX_FULL_BYTES;
}

static void on_error(struct inbox_client *c, struct wire *w,
                     const struct inbox_error *e)
{
    struct call *call = w->call;
    uint64_t now = client_now_ms();
    int err = -(int)e->code;
    client_errmsg_set(c, "%s: %s: %.*s", inbox_op_name(call->op),
                      inbox_err_name(err), (int)e->message.len,
                      e->message.len ? (const char *)e->message.ptr : "");
    if (err == INBOX_ENOT_LEADER) {
        on_not_leader(c, w, e, now);
    } else if (retry_transparently(err)) {
        wire_release(c, w, err, true);
        call_retry_at(c, call, now + backoff_ms(c, call->attempts + 1));
    } else {
        wire_release(c, w, err, false);
        if (call->units_left == 0 && call->wires_count == 0)
            call_finish(c, call, NULL);
    }
}

/* Per-inbox results of ENQUEUE_MANY / SEEN_GET / WATCH / UNWATCH, in the
 * order the units were encoded (ascending index). Returns INBOX_EPROTO
 * when the answer does not match the request. */
static int on_multi(struct inbox_client *c, struct conn *conn, struct wire *w,
                    const struct inbox_msg *m)
{
    struct call *call = w->call;
    uint64_t now = client_now_ms();
    uint32_t count =
        call->op == INBOX_OP_ENQUEUE_MANY ? m->body.enqueue_many_resp.count
        : call->op == INBOX_OP_UNWATCH    ? w->units_count
                                          : m->body.code_u64_resp.count;
    if (count != w->units_count)
        return INBOX_EPROTO;
    struct inbox_iter it = call->op == INBOX_OP_ENQUEUE_MANY
                               ? m->body.enqueue_many_resp.iter
                               : m->body.code_u64_resp.iter;
    bool retry = false, ask_route = false;
    for (uint32_t i = 0; i < call->units_count; i++) {
        struct unit *u = &call->units[i];
        if (u->wire != w)
            continue;
        uint16_t code = 0;
        if (call->op == INBOX_OP_ENQUEUE_MANY) {
            struct inbox_enqueue_result r;
            inbox_next_enqueue_result(&it, &r);
            code = r.code;
            u->value = r.seq;
            u->dedup = r.dedup;
        } else if (call->op != INBOX_OP_UNWATCH) {
            struct inbox_code_u64 r;
            inbox_next_code_u64(&it, &r);
            code = r.code;
            u->value = r.value;
        }
        int err = -(int)code;
        if (code == 0) {
            unit_done(call, u, 0);
            if (call->op == INBOX_OP_WATCH)
                conn->watches++;
            else if (call->op == INBOX_OP_UNWATCH && conn->watches > 0)
                conn->watches--;
        } else if (retry_transparently(err)) {
            unit_to(call, u, UNIT_PENDING);
            call->last_err = err;
            retry = true;
            ask_route |= err == INBOX_ENOT_LEADER;
        } else {
            unit_done(call, u, err);
        }
    }
    wire_unlink(c, w);
    if (ask_route) { /* per-inbox NOT_LEADER has no detail: ask ROUTE */
        route_refresh(c, now);
        call_retry_at(c, call, NEVER_MS);
        call->waits_route = true;
    } else if (retry) {
        call_retry_at(c, call, now + backoff_ms(c, call->attempts + 1));
    }
    if (call->units_left == 0 && call->wires_count == 0)
        call_finish(c, call, NULL);
    return 0;
}

/* A response frame to one of our wires. Returns nonzero when the
 * connection had to be failed. */
static int on_response(struct inbox_client *c, struct conn *conn,
                       struct wire *w, const struct inbox_msg *m)
{
    struct call *call = w->call;
    if (m->hdr.opcode != call->op) {
        conn_fail(c, conn, INBOX_EPROTO, "answer's opcode differs");
        return -1;
    }
    if (m->hdr.flags & INBOX_FLAG_ERROR) {
        on_error(c, w, &m->body.error);
        return 0;
    }
    switch (call->op) {
    case INBOX_OP_ENQUEUE_MANY:
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
    case INBOX_OP_UNWATCH:
        if (on_multi(c, conn, w, m) != 0) {
            conn_fail(c, conn, INBOX_EPROTO, "answer does not match request");
            return -1;
        }
        return 0;
    default:
        break;
    }
    struct unit *u = &call->units[0];
    assert(u->wire == w);
    int status = 0;
    if (call->op == INBOX_OP_ROUTE) {
        status = route_apply(c, &m->body.route_resp);
        /* A node that knows no leader for some shard may be cut off from
         * the rest: ask another one next time. */
        bool gaps = false;
        for (uint32_t i = 0; status == 0 && i < c->shard_count; i++)
            gaps |= c->leaders[i] == 0;
        c->route_avoid = gaps ? conn->node_id : 0;
    }
    ops_single_result(call, u, m);
    unit_done(call, u, status);
    wire_unlink(c, w);
    call_finish(c, call, status == 0 ? m : NULL);
    return 0;
}

static void on_push(struct inbox_client *c, const struct inbox_msg *m)
{
    if (m->hdr.opcode != INBOX_OP_NOTIFY || c->notify == NULL)
        return;
    c->stats.notifies++;
    c->fired++;
    c->notify(c->notify_arg, 0, m->body.notify.inbox.ptr,
              m->body.notify.inbox.len, m->body.notify.last_seq);
}

/* One whole frame from the server. Nonzero: the connection was failed. */
static int conn_on_frame(struct inbox_client *c, struct conn *conn,
                         const struct inbox_frame *f)
{
    const struct inbox_frame_header *h = &f->hdr;
    if (!(h->flags & (INBOX_FLAG_RESPONSE | INBOX_FLAG_PUSH))) {
        conn_fail(c, conn, INBOX_EPROTO, "server sent a request frame");
        return -1;
    }
    struct inbox_msg m;
    int rc = inbox_msg_decode(h, f->body, &m);
    if (rc == INBOX_EUNKNOWN_OP)
        return 0; /* a newer server's frame: skip it (protocol §2.3) */
    if (rc != 0) {
        conn_fail(c, conn, rc, "malformed frame from server");
        return -1;
    }
    if (h->flags & INBOX_FLAG_PUSH) {
        on_push(c, &m);
        return 0;
    }
    if (conn->state == CONN_HELLO) {
        if (h->request_id != conn->hello_id || h->opcode != INBOX_OP_HELLO) {
            conn_fail(c, conn, INBOX_EPROTO, "expected the HELLO answer");
            return -1;
        }
        conn_on_hello(c, conn, &m);
        return conn->state == CONN_READY ? 0 : -1;
    }
    if (h->request_id == conn->ping_id && h->opcode == INBOX_OP_PING) {
        conn->ping_id = 0; /* alive; last_rx_ms was set by the read */
        return 0;
    }
    struct wire *w = wire_find(c, h->request_id);
    if (w == NULL || w->conn != conn || !w->sent) {
        /* The call already ended (deadline) or the id is not ours; a
         * connection-level error (id 0) precedes a close: keep its words. */
        if (h->request_id == 0 && (h->flags & INBOX_FLAG_ERROR))
            client_errmsg_set(c, "%s: %s: %.*s", conn->addr,
                              inbox_err_name(-(int)m.body.error.code),
                              (int)m.body.error.message.len,
                              m.body.error.message.len
                                  ? (const char *)m.body.error.message.ptr
                                  : "");
        else
            c->stats.responses_ignored++;
        return 0;
    }
    return on_response(c, conn, w, &m);
}

/* Decrypts what TLS has and hands out frames. Nonzero: conn failed. */
static int conn_drain_plain(struct inbox_client *c, struct conn *conn)
{
    for (;;) {
        size_t got = 0;
        int rc = tls_conn_read_plain(conn->tls, c->plain,
                                     INBOX_CLIENT_READ_BYTES, &got);
        if (rc != 0) {
            conn_fail(c, conn, rc, tls_conn_error_message(conn->tls));
            return -1;
        }
        if (conn->state == CONN_TLS && tls_conn_handshake_done(conn->tls))
            conn_send_hello(c, conn);
        if (got == 0)
            return 0;
        size_t off = 0;
        while (off < got) {
            size_t used = 0;
            struct inbox_frame f;
            rc = inbox_parser_feed(&conn->parser, c->plain + off, got - off,
                                   &used, &f);
            off += used;
            if (rc < 0) {
                conn_fail(c, conn, rc, "bad frame from server");
                return -1;
            }
            if (rc == INBOX_PARSE_FRAME && conn_on_frame(c, conn, &f) != 0)
                return -1;
        }
    }
}

static void conn_read(struct inbox_client *c, struct conn *conn)
{
    for (unsigned r = 0; r < INBOX_CLIENT_READS_PER_ROUND; r++) {
        ssize_t n = read(conn->fd, c->rbuf, INBOX_CLIENT_READ_BYTES);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_fail(c, conn, -errno, "read");
            return;
        }
        if (n == 0) {
            conn_fail(c, conn, -ECONNRESET, "connection closed by the server");
            return;
        }
        conn->last_rx_ms = client_now_ms();
        size_t off = 0;
        while (off < (size_t)n) {
            size_t took = 0;
            int rc = tls_conn_feed_cipher(conn->tls, c->rbuf + off,
                                          (size_t)n - off, &took);
            if (rc != 0) {
                conn_fail(c, conn, rc, tls_conn_error_message(conn->tls));
                return;
            }
            off += took;
            if (conn_drain_plain(c, conn) != 0)
                return;
        }
        if (tls_conn_peer_closed(conn->tls)) {
            conn_fail(c, conn, -ECONNRESET, "server closed the TLS session");
            return;
        }
    }
}

/* A READY connection we are waiting on: requests out, or watches held. */
static bool conn_awaits(const struct conn *conn)
{
    return conn->state == CONN_READY &&
           (conn->sent.head != NULL || conn->watches > 0);
}

/* Encodes queued wires into the stage (READY only), moves the stage into
 * TLS and TLS's ciphertext into the socket, as far as each will take. */
static void stage_fill(struct inbox_client *c, struct conn *conn)
{
    while (conn->unsent.head) {
        struct wire *w = conn->unsent.head;
        if (conn->stage_off == conn->stage_len)
            conn->stage_off = conn->stage_len = 0;
        size_t n = 0;
        int rc = ops_encode(c, conn, w, conn->stage + conn->stage_len,
                            conn->stage_cap - conn->stage_len, &n);
        if (rc == INBOX_ERANGE) {
            if (conn->stage_off > 0) { /* compact, then try again */
                memmove(conn->stage, conn->stage + conn->stage_off,
                        conn->stage_len - conn->stage_off);
                conn->stage_len -= conn->stage_off;
                conn->stage_off = 0;
                continue;
            }
            if (conn->stage_len > 0)
                return; /* wait until TLS takes what is staged */
            uint8_t *grown = realloc(conn->stage, n);
            if (grown == NULL)
                return;
            conn->stage = grown;
            conn->stage_cap = n;
            continue;
        }
        if (rc != 0) { /* cannot be encoded: the call fails with it */
            wire_release(c, w, rc, false);
            continue;
        }
        if (n - INBOX_FRAME_HEADER_BYTES > conn->body_bytes_max) {
            /* The server would refuse it and close: fail just this call. */
            wire_release(c, w, INBOX_EFRAME_TOO_LARGE, false);
            continue;
        }
        conn->stage_len += n;
        if (!conn_awaits(conn)) /* the stall clock starts now */
            conn->last_rx_ms = client_now_ms();
        wlist_remove(&conn->unsent, w);
        wlist_append(&conn->sent, w);
        w->sent = true;
        c->stats.requests_sent++;
    }
}

static void conn_flush(struct inbox_client *c, struct conn *conn)
{
    if (conn->state == CONN_IDLE || conn->state == CONN_CONNECTING)
        return;
    for (;;) {
        bool progress = false;
        if (conn->state == CONN_READY)
            stage_fill(c, conn);
        if (conn->stage_off < conn->stage_len) {
            size_t took = 0;
            int rc =
                tls_conn_write_plain(conn->tls, conn->stage + conn->stage_off,
                                     conn->stage_len - conn->stage_off, &took);
            if (rc != 0) {
                conn_fail(c, conn, rc, tls_conn_error_message(conn->tls));
                return;
            }
            conn->stage_off += took;
            progress |= took > 0;
        }
        if (conn->cipher_off == conn->cipher_len) {
            conn->cipher_off = 0;
            conn->cipher_len =
                tls_conn_pull_cipher(conn->tls, conn->cipher, CIPHER_CAP);
        }
        if (conn->cipher_off < conn->cipher_len) {
            /* send(MSG_NOSIGNAL), not write: a server that went away must
             * not kill the caller's process with SIGPIPE. */
            ssize_t n = send(conn->fd, conn->cipher + conn->cipher_off,
                             conn->cipher_len - conn->cipher_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    conn_fail(c, conn, -errno, "write");
                return;
            }
            conn->cipher_off += (size_t)n;
            progress |= n > 0;
        }
        if (!progress)
            return;
    }
}

static bool conn_wants_write(const struct conn *conn)
{
    if (conn->state == CONN_CONNECTING)
        return true;
    return conn->cipher_off < conn->cipher_len ||
           (conn->tls && tls_conn_cipher_pending(conn->tls) > 0);
}

/* ---- dispatch: pending units onto wires --------------------------------- */

enum pick {
    PICK_OK,    /* *out is the connection to use */
    PICK_WAIT,  /* its address backs off until *wait_ms */
    PICK_ROUTE, /* the map does not say where: ask ROUTE */
    PICK_RANGE, /* the call names a shard the cluster does not have */
};

/* A live connection, or one dialled now; PICK_WAIT with *wait_ms when the
 * address is backing off. */
static enum pick conn_use(struct inbox_client *c, struct conn *conn,
                          uint64_t now, uint64_t *wait_ms, struct conn **out)
{
    if (conn == NULL)
        return PICK_ROUTE;
    if (conn->state == CONN_IDLE) {
        if (now < conn->reconnect_at_ms) {
            *wait_ms = conn->reconnect_at_ms;
            return PICK_WAIT;
        }
        conn_start(c, conn, now);
        if (conn->state == CONN_IDLE) {
            *wait_ms = conn->reconnect_at_ms;
            return PICK_WAIT;
        }
    }
    *out = conn;
    return PICK_OK;
}

static enum pick pick_node(struct inbox_client *c, uint64_t node_id,
                           uint64_t now, uint64_t *wait_ms, struct conn **out)
{
    struct node *n = node_find(c, node_id);
    if (n == NULL || n->addrs_count == 0) {
        /* Known only from HELLO (a seed): use that connection. */
        for (size_t i = 0; i < c->conns_count; i++)
            if (c->conns[i]->node_id == node_id &&
                c->conns[i]->state != CONN_IDLE) {
                *out = c->conns[i];
                return PICK_OK;
            }
        return PICK_ROUTE;
    }
    for (uint8_t a = 0; a < n->addrs_count; a++) {
        struct conn *conn = conn_find(c, n->addrs[a]);
        if (conn && conn->state != CONN_IDLE) {
            *out = conn;
            return PICK_OK;
        }
    }
    return conn_use(c, conn_get(c, n->addrs[n->addr_pref % n->addrs_count]),
                    now, wait_ms, out);
}

/* Any node: a ready connection, else one being made, else dial the next
 * seed or known node address that is not backing off. */
static enum pick pick_any(struct inbox_client *c, uint64_t now,
                          uint64_t *wait_ms, struct conn **out)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < c->conns_count; i++) {
            struct conn *conn = c->conns[i];
            if (pass == 0 ? conn->state == CONN_READY
                          : conn->state != CONN_IDLE) {
                *out = conn;
                return PICK_OK;
            }
        }
    size_t total = c->seeds_count;
    for (size_t i = 0; i < c->nodes_count; i++)
        total += c->nodes[i].addrs_count;
    uint64_t wait = NEVER_MS;
    for (size_t k = 0; k < total; k++) {
        size_t idx = (c->any_next + k) % total;
        const char *addr = NULL;
        if (idx < c->seeds_count) {
            addr = c->seeds[idx];
        } else {
            idx -= c->seeds_count;
            for (size_t i = 0; i < c->nodes_count && addr == NULL; i++) {
                if (idx < c->nodes[i].addrs_count)
                    addr = c->nodes[i].addrs[idx];
                else
                    idx -= c->nodes[i].addrs_count;
            }
        }
        struct conn *conn = conn_get(c, addr);
        if (conn == NULL)
            continue;
        uint64_t w = NEVER_MS;
        if (conn_use(c, conn, now, &w, out) == PICK_OK) {
            c->any_next += k + 1;
            return PICK_OK;
        }
        if (w < wait)
            wait = w;
    }
    *wait_ms = wait;
    return PICK_WAIT;
}

static enum pick pick_unit(struct inbox_client *c, struct call *call,
                           struct unit *u, uint64_t now, uint64_t *wait_ms,
                           struct conn **out)
{
    if (call->route_kind == ROUTE_TO_NODE)
        return call->node_id ? pick_node(c, call->node_id, now, wait_ms, out)
                             : pick_any(c, now, wait_ms, out);
    if (!c->map_known)
        return PICK_ROUTE;
    if (call->route_kind == ROUTE_BY_KEY)
        u->shard = inbox_shard_of(u->key, u->key_len, c->shard_count);
    if (u->shard >= c->shard_count)
        return PICK_RANGE;
    bool stale_ok =
        (call->op == INBOX_OP_FETCH || call->op == INBOX_OP_SEEN_GET) &&
        (call->flags & INBOX_CLIENT_STALE_OK) != 0;
    enum pick r = c->leaders[u->shard] == 0
                      ? PICK_ROUTE
                      : pick_node(c, c->leaders[u->shard], now, wait_ms, out);
    if (r == PICK_OK || !stale_ok)
        return r;
    /* A read that may be stale need not wait for a leader: while the
     * leader is unknown or unreachable, any node we are connected to
     * answers from its own state (and says it is stale). */
    for (size_t i = 0; i < c->conns_count; i++)
        if (c->conns[i]->state == CONN_READY) {
            *out = c->conns[i];
            return PICK_OK;
        }
    return r;
}

static bool op_multi(uint8_t op)
{
    return op == INBOX_OP_ENQUEUE_MANY || op == INBOX_OP_SEEN_GET ||
           op == INBOX_OP_WATCH || op == INBOX_OP_UNWATCH;
}

/* Puts every pending unit of a call on a wire to its node (grouped: one
 * unsent wire per node), or sets when to try again. */
static void call_dispatch(struct inbox_client *c, struct call *call,
                          uint64_t now)
{
    uint64_t wake = NEVER_MS;
    bool waits_route = false;
    for (uint32_t i = 0; i < call->units_count && call->units_pending; i++) {
        struct unit *u = &call->units[i];
        if (u->state != UNIT_PENDING)
            continue;
        struct conn *conn = NULL;
        uint64_t wait = NEVER_MS;
        enum pick p = pick_unit(c, call, u, now, &wait, &conn);
        if (p == PICK_ROUTE) {
            waits_route = true;
            route_refresh(c, now);
            if (c->route_call == NULL && c->route_next_ms < wake)
                wake = c->route_next_ms;
            continue;
        }
        if (p == PICK_WAIT) {
            if (wait < wake)
                wake = wait;
            continue;
        }
        if (p == PICK_RANGE) { /* finished by run_timers' sweep */
            unit_done(call, u, INBOX_ERANGE);
            continue;
        }
        struct wire *w = NULL;
        if (op_multi(call->op))
            for (w = call->wires; w; w = w->call_next)
                if (w->conn == conn && !w->sent)
                    break;
        if (w == NULL && (w = wire_new(c, call, conn)) == NULL) {
            wake = now + backoff_ms(c, 1);
            continue;
        }
        unit_to(call, u, UNIT_SENT);
        u->wire = w;
        w->units_count++;
    }
    call->waits_route = waits_route;
    call->next_try_ms = wake;
}

/* ---- the poll loop ------------------------------------------------------ */

static void conn_send_ping(struct inbox_client *c, struct conn *conn)
{
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = conn->version;
    m.hdr.opcode = INBOX_OP_PING;
    m.hdr.request_id = c->next_id++;
    if (conn->stage_off == conn->stage_len)
        conn->stage_off = conn->stage_len = 0;
    size_t n = 0;
    if (inbox_msg_encode(&m, conn->stage + conn->stage_len,
                         conn->stage_cap - conn->stage_len, &n) != 0)
        return; /* no room: the peer is not reading; the 2x rule decides */
    conn->stage_len += n;
    conn->ping_id = m.hdr.request_id;
}

/* Nothing heard for stall_timeout_ms: PING; for twice that: give up on the
 * connection (its requests are retried, its watches reported lost). */
static void conn_check_stall(struct inbox_client *c, struct conn *conn,
                             uint64_t now)
{
    if (!conn_awaits(conn) || now < conn->last_rx_ms + c->stall_timeout_ms)
        return;
    if (now >= conn->last_rx_ms + 2u * (uint64_t)c->stall_timeout_ms) {
        char why[64];
        snprintf(why, sizeof why, "nothing received for %u ms",
                 2u * c->stall_timeout_ms);
        conn_fail(c, conn, INBOX_ETIMEOUT, why);
    } else if (conn->ping_id == 0) {
        conn_send_ping(c, conn);
    }
}

static void run_timers(struct inbox_client *c)
{
    uint64_t now = client_now_ms();
    for (size_t i = 0; i < c->conns_count; i++) {
        struct conn *conn = c->conns[i];
        if (conn->state != CONN_IDLE && conn->state != CONN_READY &&
            now >= conn->deadline_ms)
            conn_fail(c, conn, INBOX_ETIMEOUT,
                      "connect, TLS handshake or HELLO took too long");
        else
            conn_check_stall(c, conn, now);
    }
    struct call *next;
    for (struct call *call = c->calls_head; call; call = next) {
        next = call->next;
        if (now >= call->deadline_ms)
            call_expire(c, call, INBOX_ETIMEOUT);
    }
    if (c->route_wanted)
        route_refresh(c, now);
    for (struct call *call = c->calls_head; call; call = call->next)
        if (call->units_pending > 0 && now >= call->next_try_ms)
            call_dispatch(c, call, now);
    for (size_t i = 0; i < c->conns_count; i++)
        conn_flush(c, c->conns[i]);
    /* Calls whose units all ended without an answer to hand over (fatal
     * connection errors, units failed at encode time). Finishing one may
     * end others (a failed ROUTE ends the calls waiting for it): repeat
     * until none is left; each pass finishes at least one call. */
    for (bool again = true; again;) {
        again = false;
        for (struct call *call = c->calls_head; call; call = next) {
            next = call->next;
            if (call->units_left == 0 && call->wires_count == 0) {
                call_finish(c, call, NULL);
                again = true;
            }
        }
    }
}

static int poll_wait_ms(struct inbox_client *c, int timeout_ms)
{
    if (c->fired > 0)
        return 0;
    uint64_t now = client_now_ms();
    uint64_t until = now + (uint64_t)timeout_ms;
    for (struct call *call = c->calls_head; call; call = call->next) {
        if (call->deadline_ms < until)
            until = call->deadline_ms;
        if (call->units_pending > 0 && call->next_try_ms < until)
            until = call->next_try_ms;
    }
    for (size_t i = 0; i < c->conns_count; i++) {
        struct conn *conn = c->conns[i];
        if (conn->state != CONN_IDLE && conn->state != CONN_READY &&
            conn->deadline_ms < until)
            until = conn->deadline_ms;
        if (conn_awaits(conn)) {
            uint64_t at = conn->last_rx_ms + c->stall_timeout_ms;
            if (conn->ping_id != 0 || at <= now)
                at += c->stall_timeout_ms;
            if (at < until)
                until = at;
        }
    }
    if (c->route_wanted && c->route_call == NULL && c->route_next_ms < until)
        until = c->route_next_ms;
    return until <= now ? 0 : (int)(until - now);
}

static void handle_events(struct inbox_client *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct conn *conn = c->pconns[i];
        short re = c->pfds[i].revents;
        if (re == 0 || conn->fd != c->pfds[i].fd)
            continue;
        if (conn->state == CONN_CONNECTING) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
            if (err != 0) {
                conn_fail(c, conn, -err, "connect");
                continue;
            }
            conn_on_connected(c, conn);
            continue;
        }
        if (re & (POLLIN | POLLERR | POLLHUP))
            conn_read(c, conn);
        if (conn->state != CONN_IDLE && (re & POLLOUT))
            conn_flush(c, conn);
    }
}

#ifndef NDEBUG
/* The invariants of client_internal.h, checked after every poll round in
 * debug builds (SQLite's habit: expensive checks run under assert). */
static bool invariants_hold(struct inbox_client *c)
{
    size_t user = 0;
    for (const struct call *call = c->calls_head; call; call = call->next) {
        uint32_t left = 0, pending = 0, wires = 0;
        for (uint32_t i = 0; i < call->units_count; i++) {
            const struct unit *u = &call->units[i];
            left += u->state != UNIT_DONE;
            pending += u->state == UNIT_PENDING;
            if ((u->state == UNIT_SENT) != (u->wire != NULL))
                return false;
            if (u->wire && u->wire->call != call)
                return false;
        }
        for (const struct wire *w = call->wires; w; w = w->call_next) {
            wires++;
            if (wire_find(c, w->id) != w)
                return false;
            if (w->sent && w->conn->state != CONN_READY)
                return false;
        }
        if (left != call->units_left || pending != call->units_pending ||
            wires != call->wires_count)
            return false;
        user += !call->internal;
    }
    return user == c->calls_user && c->calls_user <= c->inflight_max;
}
#endif

int inbox_client_poll(struct inbox_client *client, int timeout_ms)
{
    struct inbox_client *c = client;
    if (c == NULL || c->depth > 0 || timeout_ms < 0)
        return INBOX_EINVAL;
    c->depth++;
    c->fired = 0;
    run_timers(c);
    int wait = poll_wait_ms(c, timeout_ms);
    size_t n = 0;
    for (size_t i = 0; i < c->conns_count; i++) {
        struct conn *conn = c->conns[i];
        if (conn->fd < 0)
            continue;
        c->pfds[n].fd = conn->fd;
        c->pfds[n].events =
            (short)(POLLIN | (conn_wants_write(conn) ? POLLOUT : 0));
        c->pfds[n].revents = 0;
        c->pconns[n] = conn;
        n++;
    }
    int rc = poll(c->pfds, (nfds_t)n, wait);
    if (rc < 0 && errno != EINTR) {
        rc = -errno;
        c->depth--;
        return rc;
    }
    if (rc > 0)
        handle_events(c, n);
    run_timers(c);
    assert(invariants_hold(c));
    c->depth--;
    return c->fired;
}

/* ---- life cycle --------------------------------------------------------- */

static int config_check(const struct inbox_client_config *cfg, char *errmsg,
                        size_t errmsg_bytes)
{
    const char *why = NULL;
    if (cfg == NULL)
        why = "no config";
    else if (cfg->seeds == NULL || cfg->seeds_count == 0 ||
             cfg->seeds_count > INBOX_CLIENT_SEEDS_MAX)
        why = "seeds: 1..INBOX_CLIENT_SEEDS_MAX addresses needed";
    else if (cfg->ca_path == NULL || cfg->cert_path == NULL ||
             cfg->key_path == NULL)
        why = "ca_path, cert_path and key_path are needed";
    else if (cfg->inflight_max > INBOX_CLIENT_INFLIGHT_MAX)
        why = "inflight_max above INBOX_CLIENT_INFLIGHT_MAX";
    else if (cfg->client_name &&
             strlen(cfg->client_name) > INBOX_FRAME_TEXT_BYTES_MAX)
        why = "client_name too long";
    for (size_t i = 0; why == NULL && i < cfg->seeds_count; i++) {
        char host[ADDR_CAP];
        const char *port;
        if (cfg->seeds[i] == NULL ||
            strlen(cfg->seeds[i]) > INBOX_NODE_ADDR_BYTES_MAX ||
            addr_split(cfg->seeds[i], host, sizeof host, &port) != 0)
            why = "a seed is not \"host:port\"";
    }
    if (why == NULL)
        return 0;
    if (errmsg && errmsg_bytes)
        snprintf(errmsg, errmsg_bytes, "%s", why);
    return INBOX_EINVAL;
}

int inbox_client_new(const struct inbox_client_config *config,
                     struct inbox_client **client_out, char *errmsg,
                     size_t errmsg_bytes)
{
    int rc = config_check(config, errmsg, errmsg_bytes);
    if (rc != 0 || client_out == NULL)
        return rc ? rc : INBOX_EINVAL;
    struct inbox_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return INBOX_ENOMEM;
    struct tls_ctx_config tcfg = {
        .side = TLS_SIDE_CLIENT,
        .ca_path = config->ca_path,
        .cert_path = config->cert_path,
        .key_path = config->key_path,
    };
    char tmsg[INBOX_TLS_ERRMSG_BYTES] = "";
    rc = tls_ctx_new(&tcfg, &c->tls, tmsg, sizeof tmsg);
    if (rc != 0) {
        if (errmsg && errmsg_bytes)
            snprintf(errmsg, errmsg_bytes, "%s", tmsg);
        goto err_after_alloc;
    }
    snprintf(c->name, sizeof c->name, "%s",
             config->client_name ? config->client_name : "libinbox/0.1");
    c->inflight_max = config->inflight_max ? config->inflight_max
                                           : INBOX_CLIENT_INFLIGHT_DEFAULT;
    c->connect_timeout_ms = config->connect_timeout_ms
                                ? config->connect_timeout_ms
                                : INBOX_CLIENT_CONNECT_TIMEOUT_MS_DEFAULT;
    c->stall_timeout_ms = config->stall_timeout_ms
                              ? config->stall_timeout_ms
                              : INBOX_CLIENT_STALL_TIMEOUT_MS_DEFAULT;
    c->backoff_min_ms = config->backoff_min_ms
                            ? config->backoff_min_ms
                            : INBOX_CLIENT_BACKOFF_MIN_MS_DEFAULT;
    c->backoff_max_ms = config->backoff_max_ms
                            ? config->backoff_max_ms
                            : INBOX_CLIENT_BACKOFF_MAX_MS_DEFAULT;
    if (c->backoff_max_ms < c->backoff_min_ms)
        c->backoff_max_ms = c->backoff_min_ms;
    c->notify = config->notify;
    c->notify_arg = config->notify_arg;
    c->next_id = 1;
    uint8_t seed[INBOX_MSG_ID_BYTES];
    if (msg_id_make(seed) != 0)
        memset(seed, 0x5a, sizeof seed);
    memcpy(&c->rng, seed, sizeof c->rng);
    c->rng |= 1;

    size_t buckets = 64;
    while (buckets < 2u * c->inflight_max)
        buckets *= 2;
    c->buckets = calloc(buckets, sizeof *c->buckets);
    c->buckets_mask = buckets - 1;
    c->seeds = calloc(config->seeds_count, sizeof *c->seeds);
    c->rbuf = malloc(INBOX_CLIENT_READ_BYTES);
    c->plain = malloc(INBOX_CLIENT_READ_BYTES);
    c->s_targets = calloc(INBOX_FANOUT_INBOXES_MAX, sizeof *c->s_targets);
    c->s_keys = calloc(INBOX_FANOUT_INBOXES_MAX, sizeof *c->s_keys);
    c->s_items = calloc(INBOX_FANOUT_INBOXES_MAX, sizeof *c->s_items);
    c->s_kitems = calloc(INBOX_FANOUT_INBOXES_MAX, sizeof *c->s_kitems);
    c->s_msgs = calloc(INBOX_FETCH_MESSAGES_MAX, sizeof *c->s_msgs);
    if (!c->buckets || !c->seeds || !c->rbuf || !c->plain || !c->s_targets ||
        !c->s_keys || !c->s_items || !c->s_kitems || !c->s_msgs) {
        rc = INBOX_ENOMEM;
        goto err_after_tls;
    }
    for (size_t i = 0; i < config->seeds_count; i++)
        snprintf(c->seeds[i], ADDR_CAP, "%s", config->seeds[i]);
    c->seeds_count = config->seeds_count;
    *client_out = c;
    return 0;

err_after_tls:
    free(c->buckets);
    free(c->seeds);
    free(c->rbuf);
    free(c->plain);
    free(c->s_targets);
    free(c->s_keys);
    free(c->s_items);
    free(c->s_kitems);
    free(c->s_msgs);
    tls_ctx_free(c->tls);
err_after_alloc:
    free(c);
    return rc;
}

void inbox_client_free(struct inbox_client *client)
{
    struct inbox_client *c = client;
    if (c == NULL)
        return;
    assert(c->depth == 0 && "inbox_client_free called from a callback");
    c->depth++;
    c->closing = true;
    while (c->calls_head)
        call_expire(c, c->calls_head, INBOX_ESHUTDOWN);
    for (size_t i = 0; i < c->conns_count; i++) {
        struct conn *conn = c->conns[i];
        assert(conn->unsent.head == NULL && conn->sent.head == NULL);
        conn_close_socket(conn);
        free(conn->body_buf);
        free(conn->stage);
        free(conn->cipher);
        free(conn);
    }
    free(c->conns);
    free(c->pfds);
    free(c->pconns);
    free(c->leaders);
    free(c->nodes);
    free(c->buckets);
    free(c->seeds);
    free(c->rbuf);
    free(c->plain);
    free(c->s_targets);
    free(c->s_keys);
    free(c->s_items);
    free(c->s_kitems);
    free(c->s_msgs);
    tls_ctx_free(c->tls);
    free(c);
}

size_t inbox_client_inflight(const struct inbox_client *client)
{
    return client->calls_user;
}

const char *inbox_client_last_error_message(const struct inbox_client *client)
{
    return client->errmsg;
}

void inbox_client_stats_get(const struct inbox_client *client,
                            struct inbox_client_stats *stats_out)
{
    *stats_out = client->stats;
}
