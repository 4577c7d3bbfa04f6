/*
 * serve.c — requests to node calls, completions to responses; WATCH and
 * long-poll FETCH.
 *
 * Design note
 * -----------
 * Every request gets exactly one response (the transport asserts it). A
 * request either is answered on the loop thread at once (a refusal, ROUTE,
 * STATUS, UNWATCH) or becomes a node call whose completion answers it on
 * the node thread (transport_respond is thread-safe).
 *
 * A FETCH is a `struct fetch` that lives until it is answered. Its states:
 *   READING  a node_fetch is in flight                 (node owns it)
 *   PARKED   linked in its inbox entry and in the global waiter list
 *            (the table owns it, under sv->mu)
 * READING -> PARKED: fetch_done found no message and the wait is not over.
 * PARKED -> READING: serve_enqueue_applied saw last_seq > after_seq, or the
 *   wait timer found the deadline passed (then may_wait is cleared, so the
 *   next completion answers whatever it finds), or serve_stop.
 * READING -> answered and freed: fetch_done in every other case.
 * Invariant: a fetch is in exactly one of these places, so it is answered
 * exactly once. Unlinking happens under sv->mu by whoever wakes it; the
 * node thread parks under the same mutex, and both the park and the hook
 * run on the node thread, so no enqueue can slip between a fetch's read and
 * its parking.
 *
 * Watches are `struct watch` records linked twice: in their inbox entry
 * (for the hook) and in their connection's list (to drop them all when the
 * connection closes). Each holds a reference on its connection.
 */
#include "serve.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "log.h"
#include "node.h"
#include "raft/raft.h"

#define SERVE_BUCKETS 4096u
#define SERVE_WAIT_SCAN_MS 20u

struct entry; /* an inbox somebody watches or waits on */

struct fetch {
    struct serve *sv;
    struct transport_req *req;
    struct entry *entry; /* PARKED: the inbox entry it is linked in */
    struct fetch *next_in_entry;
    struct fetch *prev, *next; /* PARKED: the global waiter list */
    uint64_t after_seq;
    uint64_t deadline_ms; /* monotonic */
    uint32_t messages_max;
    uint32_t bytes_max;
    uint32_t read_flags; /* NODE_READ_STALE_OK */
    bool may_wait;
    uint8_t inbox_len;
    uint8_t inbox[INBOX_KEY_BYTES_MAX];
};

struct watch {
    struct entry *entry;
    struct transport_conn *conn;
    struct watch *next_in_entry;
    struct watch *next_of_conn;
};

struct entry {
    struct entry *next; /* bucket chain */
    struct fetch *fetches;
    struct watch *watches;
    uint8_t len;
    uint8_t key[INBOX_KEY_BYTES_MAX];
};

/* The watches of one connection (a chained table keyed by the pointer). */
struct conn_watches {
    struct conn_watches *next;
    struct transport_conn *conn;
    struct watch *watches;
};

struct serve {
    struct serve_options o;
    char advertise[INBOX_NODE_ADDR_BYTES_MAX + 1];
    struct addrbook book; /* under mu */
    struct node *node;
    struct transport *t;
    uint64_t started_ms;
    uv_timer_t wait_timer;
    pthread_mutex_t mu; /* guards everything below */
    struct entry *buckets[SERVE_BUCKETS];
    struct conn_watches *conns[SERVE_BUCKETS];
    struct fetch waiters; /* sentinel of the global PARKED list */
    size_t waiters_count;
    size_t watches_count;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t hash_key(const uint8_t *k, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: a table index, not a shard */
    for (size_t i = 0; i < len; i++)
        h = (h ^ k[i]) * 16777619u;
    return h % SERVE_BUCKETS;
}

/* ---- the inbox table (caller holds sv->mu) ------------------------------ */

static struct entry *entry_find(struct serve *sv, const uint8_t *k, size_t len,
                                bool create)
{
    struct entry **b = &sv->buckets[hash_key(k, len)];
    for (struct entry *e = *b; e != NULL; e = e->next)
        if (e->len == len && memcmp(e->key, k, len) == 0)
            return e;
    if (!create)
        return NULL;
    struct entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->len = (uint8_t)len;
    memcpy(e->key, k, len);
    e->next = *b;
    *b = e;
    return e;
}

/* Free e if nothing hangs on it any more. */
static void entry_release(struct serve *sv, struct entry *e)
{
    if (e->fetches != NULL || e->watches != NULL)
        return;
    struct entry **p = &sv->buckets[hash_key(e->key, e->len)];
    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    free(e);
}

/* Take f off the global PARKED list (not off its entry). */
static void waiters_list_remove(struct serve *sv, struct fetch *f)
{
    f->prev->next = f->next;
    f->next->prev = f->prev;
    f->entry = NULL;
    sv->waiters_count--;
}

/* Unpark f: off its entry (freeing the entry if nothing else hangs on it)
 * and off the global list. */
static void waiter_unlink(struct serve *sv, struct fetch *f)
{
    struct entry *e = f->entry;
    struct fetch **p = &e->fetches;
    while (*p != f)
        p = &(*p)->next_in_entry;
    *p = f->next_in_entry;
    waiters_list_remove(sv, f);
    entry_release(sv, e);
}

/* ---- responses ---------------------------------------------------------- */

static void respond_error(struct transport_req *req, int rc)
{
    transport_respond_error(req, rc, inbox_strerror(rc));
}

/* Copies the address clients reach node id at into out ("" if unknown).
 * Any thread. */
static void member_addr(struct serve *sv, uint64_t id,
                        char out[CONFIG_ADDR_BYTES])
{
    out[0] = '\0';
    if (id == sv->o.node_id) {
        snprintf(out, CONFIG_ADDR_BYTES, "%s", sv->advertise);
        return;
    }
    pthread_mutex_lock(&sv->mu);
    const char *a = addrbook_get(&sv->book, id);
    if (a != NULL)
        snprintf(out, CONFIG_ADDR_BYTES, "%s", a);
    pthread_mutex_unlock(&sv->mu);
}

/* A node completion's error. NOT_LEADER names the shard's leader and its
 * address in the detail (docs/protocol.md §5), so the client goes
 * straight there. */
static void respond_node_error(struct transport_req *req,
                               const struct node_result *res)
{
    if (res->rc != INBOX_ENOT_LEADER) {
        respond_error(req, res->rc);
        return;
    }
    struct serve *sv = transport_req_arg(req);
    char addr[CONFIG_ADDR_BYTES];
    member_addr(sv, res->leader, addr);
    struct inbox_bytes a = {(const uint8_t *)addr, (uint32_t)strlen(addr)};
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.hdr.flags = INBOX_FLAG_ERROR;
    r.body.error.code = (uint16_t)-INBOX_ENOT_LEADER;
    const char *msg = inbox_strerror(INBOX_ENOT_LEADER);
    r.body.error.message =
        (struct inbox_bytes){(const uint8_t *)msg, (uint32_t)strlen(msg)};
    r.body.error.shard = res->shard;
    r.body.error.leader.node_id = a.len > 0 ? res->leader : 0;
    r.body.error.leader.addrs_count = a.len > 0 ? 1 : 0;
    r.body.error.leader.addrs = &a;
    transport_respond(req, &r);
}

/* A node call refused at submission (its completion will not run). */
static void refused(struct transport_req *req, int rc)
{
    assert(rc != 0);
    respond_error(req, rc);
}

/* ---- FETCH and long-poll --------------------------------------------------
 */

static void fetch_submit(struct fetch *f);

static void fetch_answer(struct fetch *f, const struct node_result *res)
{
    struct inbox_message msgs[INBOX_FETCH_MESSAGES_MAX];
    size_t n = res->messages_count;
    assert(n <= INBOX_FETCH_MESSAGES_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct store_message *m = &res->messages[i];
        msgs[i].seq = m->seq;
        memcpy(msgs[i].msg_id, m->msg_id, INBOX_MSG_ID_BYTES);
        msgs[i].enqueue_ts_ms = m->enqueue_ts_ms;
        msgs[i].payload = (struct inbox_bytes){m->payload, m->payload_len};
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.fetch_resp.acked_seq = res->info.acked_seq;
    r.body.fetch_resp.last_seq =
        res->info.next_seq > 0 ? res->info.next_seq - 1 : 0;
    r.body.fetch_resp.count = (uint32_t)n;
    r.body.fetch_resp.messages = msgs;
    r.body.fetch_resp.stale = res->stale;
    transport_respond(f->req, &r);
    free(f);
}

/* Node thread. */
static void fetch_done(void *arg, const struct node_result *res)
{
    struct fetch *f = arg;
    struct serve *sv = f->sv;
    if (res->rc != 0) {
        respond_node_error(f->req, res);
        free(f);
        return;
    }
    if (res->messages_count == 0 && f->may_wait && mono_ms() < f->deadline_ms) {
        pthread_mutex_lock(&sv->mu);
        struct entry *e = entry_find(sv, f->inbox, f->inbox_len, true);
        if (e != NULL) {
            f->entry = e;
            f->next_in_entry = e->fetches;
            e->fetches = f;
            f->next = &sv->waiters;
            f->prev = sv->waiters.prev;
            sv->waiters.prev->next = f;
            sv->waiters.prev = f;
            sv->waiters_count++;
            pthread_mutex_unlock(&sv->mu);
            return;
        }
        pthread_mutex_unlock(&sv->mu); /* no memory to park: answer now */
    }
    fetch_answer(f, res);
}

static void fetch_submit(struct fetch *f)
{
    int rc =
        node_fetch(f->sv->node, f->inbox, f->inbox_len, f->after_seq,
                   f->messages_max, f->bytes_max, f->read_flags, fetch_done, f);
    if (rc != 0) {
        refused(f->req, rc);
        free(f);
    }
}

static void do_fetch(struct serve *sv, struct transport_req *req,
                     const struct inbox_fetch_req *q)
{
    struct fetch *f = calloc(1, sizeof *f);
    if (f == NULL) {
        refused(req, INBOX_ENOMEM);
        return;
    }
    f->sv = sv;
    f->req = req;
    f->after_seq = q->after_seq;
    f->messages_max =
        q->messages_max == 0 ? INBOX_FETCH_MESSAGES_MAX : q->messages_max;
    f->bytes_max = q->bytes_max == 0 ? INBOX_FETCH_BYTES_MAX : q->bytes_max;
    f->read_flags = q->flags & INBOX_FETCH_STALE_OK ? NODE_READ_STALE_OK : 0;
    uint32_t wait = q->wait_ms > INBOX_FETCH_WAIT_MS_MAX
                        ? INBOX_FETCH_WAIT_MS_MAX
                        : q->wait_ms;
    f->may_wait = wait > 0;
    f->deadline_ms = mono_ms() + wait;
    f->inbox_len = (uint8_t)q->inbox.len;
    memcpy(f->inbox, q->inbox.ptr, q->inbox.len);
    fetch_submit(f);
}

/* Wake the parked fetches of one inbox whose after_seq is below last_seq
 * (or all of them when last_seq is UINT64_MAX). Caller holds sv->mu; the
 * woken ones are returned as a list through next_in_entry. */
static struct fetch *wake_entry(struct serve *sv, struct entry *e,
                                uint64_t last_seq)
{
    struct fetch *woken = NULL;
    struct fetch **pp = &e->fetches;
    while (*pp != NULL) {
        struct fetch *f = *pp;
        if (f->after_seq >= last_seq) {
            pp = &f->next_in_entry;
            continue;
        }
        *pp = f->next_in_entry;
        waiters_list_remove(sv, f);
        f->next_in_entry = woken;
        woken = f;
    }
    entry_release(sv, e); /* e may be gone from here on */
    return woken;
}

static void resubmit_all(struct fetch *woken)
{
    while (woken != NULL) {
        struct fetch *next = woken->next_in_entry;
        woken->next_in_entry = NULL;
        fetch_submit(woken);
        woken = next;
    }
}

/* Loop thread, every SERVE_WAIT_SCAN_MS: answer fetches whose wait ran out
 * (one last read, so they answer with whatever is there now). */
static void wait_scan(uv_timer_t *timer)
{
    struct serve *sv = timer->data;
    uint64_t now = mono_ms();
    struct fetch *expired = NULL;
    pthread_mutex_lock(&sv->mu);
    for (struct fetch *f = sv->waiters.next; f != &sv->waiters;) {
        struct fetch *next = f->next;
        if (f->deadline_ms <= now) {
            waiter_unlink(sv, f);
            f->may_wait = false;
            f->next_in_entry = expired;
            expired = f;
        }
        f = next;
    }
    pthread_mutex_unlock(&sv->mu);
    resubmit_all(expired);
}

void serve_stop(struct serve *sv)
{
    struct fetch *all = NULL;
    pthread_mutex_lock(&sv->mu);
    while (sv->waiters.next != &sv->waiters) {
        struct fetch *f = sv->waiters.next;
        waiter_unlink(sv, f);
        f->may_wait = false;
        f->next_in_entry = all;
        all = f;
    }
    pthread_mutex_unlock(&sv->mu);
    resubmit_all(all);
    uv_timer_stop(&sv->wait_timer);
}

/* ---- WATCH ----------------------------------------------------------------
 */

static struct conn_watches **conn_slot(struct serve *sv,
                                       struct transport_conn *conn)
{
    uintptr_t p = (uintptr_t)conn;
    struct conn_watches **s = &sv->conns[(p >> 4) % SERVE_BUCKETS];
    while (*s != NULL && (*s)->conn != conn)
        s = &(*s)->next;
    return s;
}

/* Caller holds sv->mu. 0, or INBOX_ENOMEM. A repeated watch is a no-op. */
static int watch_add(struct serve *sv, struct transport_conn *conn,
                     const uint8_t *k, size_t len)
{
    struct entry *e = entry_find(sv, k, len, true);
    if (e == NULL)
        return INBOX_ENOMEM;
    for (struct watch *w = e->watches; w != NULL; w = w->next_in_entry)
        if (w->conn == conn)
            return 0;
    struct conn_watches **slot = conn_slot(sv, conn);
    if (*slot == NULL) {
        *slot = calloc(1, sizeof **slot);
        if (*slot == NULL) {
            entry_release(sv, e);
            return INBOX_ENOMEM;
        }
        (*slot)->conn = conn;
    }
    struct watch *w = calloc(1, sizeof *w);
    if (w == NULL) {
        entry_release(sv, e);
        return INBOX_ENOMEM;
    }
    w->entry = e;
    w->conn = conn;
    w->next_in_entry = e->watches;
    e->watches = w;
    w->next_of_conn = (*slot)->watches;
    (*slot)->watches = w;
    transport_conn_ref(conn);
    sv->watches_count++;
    return 0;
}

/* Caller holds sv->mu. Drops the watch of conn on one inbox (k != NULL) or
 * on every inbox (k == NULL). */
static void watch_drop(struct serve *sv, struct transport_conn *conn,
                       const uint8_t *k, size_t len)
{
    struct conn_watches **slot = conn_slot(sv, conn);
    if (*slot == NULL)
        return;
    struct watch **pw = &(*slot)->watches;
    while (*pw != NULL) {
        struct watch *w = *pw;
        struct entry *e = w->entry;
        if (k != NULL && (e->len != len || memcmp(e->key, k, len) != 0)) {
            pw = &w->next_of_conn;
            continue;
        }
        *pw = w->next_of_conn;
        struct watch **pe = &e->watches;
        while (*pe != w)
            pe = &(*pe)->next_in_entry;
        *pe = w->next_in_entry;
        entry_release(sv, e);
        transport_conn_unref(conn);
        free(w);
        sv->watches_count--;
    }
    if ((*slot)->watches == NULL) {
        struct conn_watches *dead = *slot;
        *slot = dead->next;
        free(dead);
    }
}

void serve_on_conn_closed(void *arg, struct transport_conn *conn)
{
    struct serve *sv = arg;
    pthread_mutex_lock(&sv->mu);
    watch_drop(sv, conn, NULL, 0);
    pthread_mutex_unlock(&sv->mu);
}

/* Node thread: an enqueue was applied. Wake parked fetches, push NOTIFY. */
void serve_enqueue_applied(void *arg, uint32_t shard, const uint8_t *inbox,
                           size_t inbox_len, uint64_t last_seq)
{
    (void)shard;
    struct serve *sv = arg;
    struct fetch *woken = NULL;
    pthread_mutex_lock(&sv->mu);
    struct entry *e = entry_find(sv, inbox, inbox_len, false);
    if (e != NULL) {
        struct inbox_msg m;
        memset(&m, 0, sizeof m);
        m.hdr.opcode = INBOX_OP_NOTIFY;
        m.hdr.flags = INBOX_FLAG_PUSH;
        m.body.notify.inbox = (struct inbox_bytes){inbox, (uint32_t)inbox_len};
        m.body.notify.last_seq = last_seq;
        for (struct watch *w = e->watches; w != NULL; w = w->next_in_entry)
            (void)transport_push(w->conn, &m); /* a full conn is closed */
        woken = wake_entry(sv, e, last_seq);
    }
    pthread_mutex_unlock(&sv->mu);
    resubmit_all(woken);
}

/* WATCH answers each inbox's current last seq: one info read per inbox,
 * gathered here. `pending` counts the reads not yet answered plus one for
 * the submitting loop, so whichever thread drops it to zero answers; it is
 * touched by the loop thread (submission) and the node thread
 * (completions), hence atomic. */
struct watch_call {
    struct transport_req *req;
    uint32_t count;
    uint32_t pending;
    struct inbox_code_u64 items[];
};

struct watch_item {
    struct watch_call *wc;
    uint32_t i;
};

static void watch_call_put(struct watch_call *wc)
{
    if (__atomic_sub_fetch(&wc->pending, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.code_u64_resp.count = wc->count;
    r.body.code_u64_resp.items = wc->items;
    transport_respond(wc->req, &r);
    free(wc);
}

static void watch_item_done(void *arg, const struct node_result *res)
{
    struct watch_item *it = arg;
    struct watch_call *wc = it->wc;
    wc->items[it->i].code = (uint16_t)(res->rc == 0 ? 0 : -res->rc);
    wc->items[it->i].value =
        res->rc == 0 && res->info.next_seq > 0 ? res->info.next_seq - 1 : 0;
    watch_call_put(wc);
}

static void do_watch(struct serve *sv, struct transport_req *req,
                     const struct inbox_keys_req *q, bool watch)
{
    struct transport_conn *conn = transport_req_conn(req);
    struct inbox_iter it = q->iter;
    struct inbox_bytes k;
    int rc = 0;
    pthread_mutex_lock(&sv->mu);
    while (rc == 0 && inbox_next_key(&it, &k)) {
        if (watch)
            rc = watch_add(sv, conn, k.ptr, k.len);
        else
            watch_drop(sv, conn, k.ptr, k.len);
    }
    pthread_mutex_unlock(&sv->mu);
    if (rc != 0) {
        refused(req, rc);
        return;
    }
    if (!watch) {
        struct inbox_msg r;
        memset(&r, 0, sizeof r);
        transport_respond(req, &r);
        return;
    }
    /* One allocation: the call, its items, and one record per item. */
    size_t n = q->count;
    struct watch_call *wc = malloc(sizeof *wc + n * sizeof wc->items[0] +
                                   n * sizeof(struct watch_item));
    if (wc == NULL) {
        refused(req, INBOX_ENOMEM);
        return;
    }
    struct watch_item *items = (struct watch_item *)(wc->items + n);
    wc->req = req;
    wc->count = (uint32_t)n;
    wc->pending = (uint32_t)n + 1;
    it = q->iter;
    for (uint32_t i = 0; i < n; i++) {
        if (!inbox_next_key(&it, &k)) { /* the codec checked count */
            wc->items[i] =
                (struct inbox_code_u64){(uint16_t)-INBOX_EINTERNAL, 0};
            watch_call_put(wc);
            continue;
        }
        items[i] = (struct watch_item){wc, i};
        rc =
            node_inbox_info(sv->node, k.ptr, k.len, watch_item_done, &items[i]);
        if (rc != 0) { /* refused at once: that is this item's answer */
            wc->items[i] = (struct inbox_code_u64){(uint16_t)-rc, 0};
            watch_call_put(wc);
        }
    }
    watch_call_put(wc); /* the submission guard */
}

/* ---- writes ----------------------------------------------------------------
 */

static void enqueue_done(void *arg, const struct node_result *res)
{
    struct transport_req *req = arg;
    if (res->rc != 0) {
        respond_node_error(req, res);
        return;
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.enqueue_resp.seq = res->seq;
    r.body.enqueue_resp.dedup = res->deduped;
    transport_respond(req, &r);
}

static void enqueue_many_done(void *arg, const struct node_result *res)
{
    struct transport_req *req = arg;
    if (res->targets_count == 0 && res->rc != 0) {
        respond_error(req, res->rc);
        return;
    }
    struct inbox_enqueue_result out[INBOX_FANOUT_INBOXES_MAX];
    for (uint32_t i = 0; i < res->targets_count; i++) {
        const struct store_target_result *t = &res->targets[i];
        out[i].code = (uint16_t)(t->rc == 0 ? 0 : -t->rc);
        out[i].dedup = t->deduped != 0;
        out[i].seq = t->rc == 0 ? t->seq : 0;
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.enqueue_many_resp.count = res->targets_count;
    r.body.enqueue_many_resp.results = out;
    transport_respond(req, &r);
}

/* ACK and SEEN_SET answer with the inbox's state after the write (the
 * acked seq; the stored last-seen), which the store reports with the
 * write's result. */
static void write_done(void *arg, const struct node_result *res)
{
    struct transport_req *req = arg;
    if (res->rc != 0) {
        respond_node_error(req, res);
        return;
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    if (transport_req_opcode(req) == INBOX_OP_ACK)
        r.body.ack_resp.acked_seq = res->after;
    else
        r.body.seen_set_resp.ts_ms = res->after;
    transport_respond(req, &r);
}

static void do_write(struct serve *sv, struct transport_req *req, uint8_t op,
                     struct inbox_bytes inbox, uint64_t value)
{
    int rc = op == INBOX_OP_ACK ? node_ack(sv->node, inbox.ptr, inbox.len,
                                           value, write_done, req)
                                : node_seen_set(sv->node, inbox.ptr, inbox.len,
                                                value, write_done, req);
    if (rc != 0)
        refused(req, rc);
}

static void do_enqueue_many(struct serve *sv, struct transport_req *req,
                            const struct inbox_enqueue_many_req *q)
{
    /* node_enqueue_many copies its arguments before returning. */
    struct command_target t[INBOX_FANOUT_INBOXES_MAX];
    uint8_t ids[INBOX_FANOUT_INBOXES_MAX][INBOX_MSG_ID_BYTES];
    struct inbox_iter it = q->iter;
    struct inbox_target x;
    uint32_t n = 0;
    while (n < INBOX_FANOUT_INBOXES_MAX && inbox_next_target(&it, &x)) {
        memcpy(ids[n], x.msg_id, INBOX_MSG_ID_BYTES);
        t[n] =
            (struct command_target){x.inbox.ptr, ids[n], (uint16_t)x.inbox.len};
        n++;
    }
    uint64_t ttl = q->ttl_ms != 0 ? q->ttl_ms : sv->o.default_ttl_ms;
    int rc = node_enqueue_many(sv->node, t, n, ttl, q->payload.ptr,
                               q->payload.len, enqueue_many_done, req);
    if (rc != 0)
        refused(req, rc);
}

/* ---- reads ------------------------------------------------------------------
 */

static void seen_get_done(void *arg, const struct node_result *res)
{
    struct transport_req *req = arg;
    if (res->rc != 0 && res->seen_count == 0) {
        respond_error(req, res->rc);
        return;
    }
    /* Per inbox: its value, or the error its shard's read failed with (a
     * failed read is never reported as a last-seen of 0). */
    struct inbox_code_u64 items[INBOX_SEEN_GET_INBOXES_MAX];
    for (size_t i = 0; i < res->seen_count; i++) {
        int rc = res->seen_rc != NULL ? res->seen_rc[i] : 0;
        items[i] = (struct inbox_code_u64){(uint16_t)(rc == 0 ? 0 : -rc),
                                           rc == 0 ? res->seen_ms[i] : 0};
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.code_u64_resp.count = (uint32_t)res->seen_count;
    r.body.code_u64_resp.items = items;
    transport_respond(req, &r);
}

static void do_seen_get(struct serve *sv, struct transport_req *req,
                        const struct inbox_keys_req *q)
{
    struct node_inbox in[INBOX_SEEN_GET_INBOXES_MAX];
    struct inbox_iter it = q->iter;
    struct inbox_bytes k;
    size_t n = 0;
    while (n < INBOX_SEEN_GET_INBOXES_MAX && inbox_next_key(&it, &k))
        in[n++] = (struct node_inbox){k.ptr, (uint16_t)k.len};
    uint32_t flags = q->flags & INBOX_FETCH_STALE_OK ? NODE_READ_STALE_OK : 0;
    int rc = node_seen_get(sv->node, in, n, flags, seen_get_done, req);
    if (rc != 0)
        refused(req, rc);
}

static uint8_t replica_role(uint32_t raft_role)
{
    switch (raft_role) {
    case RAFT_LEADER:
        return INBOX_REPLICA_LEADER;
    case RAFT_CANDIDATE:
    case RAFT_PRE_CANDIDATE:
        return INBOX_REPLICA_CANDIDATE;
    default:
        return INBOX_REPLICA_FOLLOWER;
    }
}

static void do_status(struct serve *sv, struct transport_req *req)
{
    uint32_t n = node_shard_count(sv->node);
    struct inbox_shard_status *st = calloc(n, sizeof *st);
    if (st == NULL) {
        refused(req, INBOX_ENOMEM);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct node_shard_status s;
        if (node_status(sv->node, i, &s) != 0)
            memset(&s, 0, sizeof s);
        uint8_t role = s.voter     ? replica_role(s.role)
                       : s.learner ? INBOX_REPLICA_LEARNER
                                   : INBOX_REPLICA_NONE;
        st[i] =
            (struct inbox_shard_status){i, role, s.leader, s.term, s.applied};
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.status_resp.node_id = sv->o.node_id;
    r.body.status_resp.uptime_ms = mono_ms() - sv->started_ms;
    r.body.status_resp.count = n;
    r.body.status_resp.shards = st;
    transport_respond(req, &r);
    free(st);
}

static void do_route(struct serve *sv, struct transport_req *req)
{
    uint32_t n = node_shard_count(sv->node);
    uint64_t *leaders = calloc(n, sizeof *leaders);
    if (leaders == NULL) {
        refused(req, INBOX_ENOMEM);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct node_shard_status s;
        leaders[i] = node_status(sv->node, i, &s) == 0 ? s.leader : 0;
    }
    /* The nodes: this one, and every node some shard counts as a voter or
     * learner (as this node sees it) whose address is known. */
    uint64_t ids[ADDRBOOK_NODES_MAX];
    size_t count = 0;
    ids[count++] = sv->o.node_id;
    for (uint32_t i = 0; i < n; i++) {
        struct raft_membership m;
        if (node_shard_members(sv->node, i, &m) != 0)
            continue;
        for (uint32_t k = 0; k < m.voters_count + m.learners_count; k++) {
            uint64_t id = k < m.voters_count ? m.voters[k]
                                             : m.learners[k - m.voters_count];
            size_t j = 0;
            while (j < count && ids[j] != id)
                j++;
            if (j == count && count < ADDRBOOK_NODES_MAX)
                ids[count++] = id;
        }
    }
    char addr[ADDRBOOK_NODES_MAX][CONFIG_ADDR_BYTES];
    struct inbox_bytes addrs[ADDRBOOK_NODES_MAX];
    struct inbox_node nodes[ADDRBOOK_NODES_MAX];
    size_t known = 0;
    for (size_t i = 0; i < count; i++) {
        member_addr(sv, ids[i], addr[known]);
        if (addr[known][0] == '\0')
            continue;
        addrs[known] = (struct inbox_bytes){(const uint8_t *)addr[known],
                                            (uint32_t)strlen(addr[known])};
        nodes[known] = (struct inbox_node){ids[i], 1, &addrs[known], {0}};
        known++;
    }
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.route_resp.epoch = 1;
    r.body.route_resp.hash = INBOX_HASH_XXH3_64;
    r.body.route_resp.nodes_count = (uint16_t)known;
    r.body.route_resp.nodes = nodes;
    r.body.route_resp.shard_count = n;
    r.body.route_resp.leaders = leaders;
    transport_respond(req, &r);
    free(leaders);
}

/* ---- membership ------------------------------------------------------- */

/* Admin answers carry the placement epoch; placement is "every shard on
 * every member" and has no versions yet, so it is 1. */
static void respond_epoch(struct transport_req *req)
{
    struct inbox_msg r;
    memset(&r, 0, sizeof r);
    r.body.admin_resp.epoch = 1;
    transport_respond(req, &r);
}

/* ADD_NODE: remember where the node is (durably, and a peer link to it),
 * then have every shard this node leads take it as a learner; leaders
 * promote it once caught up. The admin tool sends it to every node. */
static void do_add_node(struct serve *sv, struct transport_req *req,
                        const struct inbox_node *q)
{
    struct inbox_iter it = q->addrs_iter;
    struct inbox_bytes a;
    char addr[CONFIG_ADDR_BYTES];
    if (q->node_id == sv->o.node_id) {
        refused(req, INBOX_EEXISTS);
        return;
    }
    if (!inbox_next_bytes16(&it, &a) || a.len == 0 || a.len >= sizeof addr) {
        refused(req, INBOX_EINVAL);
        return;
    }
    memcpy(addr, a.ptr, a.len);
    addr[a.len] = '\0';
    pthread_mutex_lock(&sv->mu);
    struct addrbook before = sv->book;
    int rc = addrbook_set(&sv->book, q->node_id, addr);
    pthread_mutex_unlock(&sv->mu);
    if (rc == 1 && sv->o.node_added != NULL)
        rc = sv->o.node_added(sv->o.node_added_arg, q->node_id, addr);
    if (rc < 0) {
        pthread_mutex_lock(&sv->mu);
        sv->book = before;
        pthread_mutex_unlock(&sv->mu);
        transport_respond_error(req, rc,
                                rc == INBOX_ERANGE
                                    ? "the address book is full"
                                    : "cannot record the node's address");
        return;
    }
    rc = node_member_add(sv->node, q->node_id);
    if (rc != 0)
        refused(req, rc);
    else
        respond_epoch(req);
}

static void do_transfer_leader(struct serve *sv, struct transport_req *req,
                               const struct inbox_transfer_leader_req *q)
{
    int rc = node_transfer_leader(sv->node, q->shard, q->to_node_id);
    if (rc == INBOX_ENOT_LEADER) {
        struct node_shard_status st;
        struct node_result res;
        memset(&res, 0, sizeof res);
        res.rc = rc;
        res.shard = q->shard;
        res.leader = node_status(sv->node, q->shard, &st) == 0 ? st.leader : 0;
        respond_node_error(req, &res);
        return;
    }
    if (rc != 0)
        refused(req, rc);
    else
        respond_epoch(req);
}

/* SNAPSHOT: a checkpoint of every shard (store commit + WAL release). It
 * blocks on fsyncs, so it runs on libuv's thread pool, not the loop. */
struct snapshot_work {
    uv_work_t work;
    struct serve *sv;
    struct transport_req *req;
    int rc;
};

static void snapshot_run(uv_work_t *w)
{
    struct snapshot_work *sw = w->data;
    sw->rc = node_checkpoint(sw->sv->node);
}

static void snapshot_after(uv_work_t *w, int status)
{
    struct snapshot_work *sw = w->data;
    int rc = status != 0 ? INBOX_ESHUTDOWN : sw->rc;
    if (rc != 0) {
        respond_error(sw->req, rc);
    } else {
        struct inbox_msg r;
        memset(&r, 0, sizeof r);
        r.body.admin_resp.epoch = 1;
        transport_respond(sw->req, &r);
    }
    free(sw);
}

static void do_snapshot(struct serve *sv, struct transport_req *req)
{
    struct snapshot_work *sw = calloc(1, sizeof *sw);
    if (sw == NULL) {
        refused(req, INBOX_ENOMEM);
        return;
    }
    sw->work.data = sw;
    sw->sv = sv;
    sw->req = req;
    int rc = uv_queue_work(sv->o.loop, &sw->work, snapshot_run, snapshot_after);
    if (rc != 0) {
        free(sw);
        refused(req, INBOX_EINTERNAL);
    }
}

/* ---- dispatch
 * ------------------------------------------------------------------ */

void serve_on_request(void *arg, struct transport_req *req,
                      const struct inbox_msg *msg)
{
    struct serve *sv = arg;
    int rc;
    switch (transport_req_opcode(req)) {
    case INBOX_OP_ENQUEUE: {
        const struct inbox_enqueue_req *q = &msg->body.enqueue_req;
        uint64_t ttl = q->ttl_ms != 0 ? q->ttl_ms : sv->o.default_ttl_ms;
        rc = node_enqueue(sv->node, q->inbox.ptr, q->inbox.len, q->msg_id, ttl,
                          q->payload.ptr, q->payload.len, enqueue_done, req);
        if (rc != 0)
            refused(req, rc);
        return;
    }
    case INBOX_OP_ENQUEUE_MANY:
        do_enqueue_many(sv, req, &msg->body.enqueue_many_req);
        return;
    case INBOX_OP_FETCH:
        do_fetch(sv, req, &msg->body.fetch_req);
        return;
    case INBOX_OP_ACK:
        do_write(sv, req, INBOX_OP_ACK, msg->body.ack_req.inbox,
                 msg->body.ack_req.up_to_seq);
        return;
    case INBOX_OP_SEEN_SET:
        do_write(sv, req, INBOX_OP_SEEN_SET, msg->body.seen_set_req.inbox,
                 msg->body.seen_set_req.ts_ms);
        return;
    case INBOX_OP_SEEN_GET:
        do_seen_get(sv, req, &msg->body.keys_req);
        return;
    case INBOX_OP_WATCH:
        do_watch(sv, req, &msg->body.keys_req, true);
        return;
    case INBOX_OP_UNWATCH:
        do_watch(sv, req, &msg->body.keys_req, false);
        return;
    case INBOX_OP_ROUTE:
        do_route(sv, req);
        return;
    case INBOX_OP_STATUS:
        do_status(sv, req);
        return;
    case INBOX_OP_SNAPSHOT:
        do_snapshot(sv, req);
        return;
    case INBOX_OP_RAFT: {
        /* Queued for the node thread; the answer only frees the sender's
         * in-flight slot. A full queue drops the batch (Raft resends). */
        const struct inbox_bytes *b = &msg->body.raft_req.batch;
        rc = node_receive(sv->node, b->ptr, b->len);
        if (rc != 0) {
            refused(req, rc);
            return;
        }
        struct inbox_msg r;
        memset(&r, 0, sizeof r);
        transport_respond(req, &r);
        return;
    }
    case INBOX_OP_ADD_NODE:
        do_add_node(sv, req, &msg->body.add_node_req);
        return;
    case INBOX_OP_REMOVE_NODE:
        rc = node_member_remove(sv->node, msg->body.remove_node_req.node_id);
        if (rc != 0)
            refused(req, rc);
        else
            respond_epoch(req);
        return;
    case INBOX_OP_TRANSFER_LEADER:
        do_transfer_leader(sv, req, &msg->body.transfer_leader_req);
        return;
    default:
        /* MOVE_REPLICA: every shard lives on every member for now. */
        transport_respond_error(req, INBOX_EUNSUPPORTED,
                                "every shard is replicated on every member: "
                                "there are no replicas to move; use "
                                "ADD_NODE / REMOVE_NODE");
        return;
    }
}

/* ---- life cycle
 * ------------------------------------------------------------------ */

int serve_new(const struct serve_options *o, struct serve **out)
{
    if (o->loop == NULL || o->advertise == NULL ||
        strlen(o->advertise) > INBOX_NODE_ADDR_BYTES_MAX)
        return INBOX_EINVAL;
    struct serve *sv = calloc(1, sizeof *sv);
    if (sv == NULL)
        return INBOX_ENOMEM;
    sv->o = *o;
    snprintf(sv->advertise, sizeof sv->advertise, "%s", o->advertise);
    sv->o.advertise = sv->advertise;
    if (o->book != NULL)
        sv->book = *o->book;
    sv->o.book = NULL;
    sv->started_ms = mono_ms();
    sv->waiters.next = sv->waiters.prev = &sv->waiters;
    pthread_mutex_init(&sv->mu, NULL);
    uv_timer_init(o->loop, &sv->wait_timer);
    sv->wait_timer.data = sv;
    *out = sv;
    return 0;
}

void serve_attach(struct serve *sv, struct node *node, struct transport *t)
{
    sv->node = node;
    sv->t = t;
    uv_timer_start(&sv->wait_timer, wait_scan, SERVE_WAIT_SCAN_MS,
                   SERVE_WAIT_SCAN_MS);
}

static void timer_closed(uv_handle_t *h)
{
    struct serve *sv = h->data;
    pthread_mutex_destroy(&sv->mu);
    free(sv);
}

/* After the node is closed: answer what is still parked, free the tables
 * and the service. The timer is closed through the loop, which must run
 * once more. */
void serve_free(struct serve *sv)
{
    if (sv == NULL)
        return;
    pthread_mutex_lock(&sv->mu);
    /* Fetches parked after serve_stop (the node is closed: no more reads). */
    while (sv->waiters.next != &sv->waiters) {
        struct fetch *f = sv->waiters.next;
        waiter_unlink(sv, f);
        respond_error(f->req, INBOX_ESHUTDOWN);
        free(f);
    }
    for (uint32_t b = 0; b < SERVE_BUCKETS; b++) {
        while (sv->conns[b] != NULL)
            watch_drop(sv, sv->conns[b]->conn, NULL, 0);
    }
    pthread_mutex_unlock(&sv->mu);
    uv_close((uv_handle_t *)&sv->wait_timer, timer_closed);
}

void serve_counts(struct serve *sv, size_t *waiters, size_t *watches)
{
    pthread_mutex_lock(&sv->mu);
    *waiters = sv->waiters_count;
    *watches = sv->watches_count;
    pthread_mutex_unlock(&sv->mu);
}
