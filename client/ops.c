/*
 * ops.c — the operations of libinbox: each submit function checks and
 * copies its arguments into a call (client_internal.h), ops_encode puts a
 * wire of that call into a request frame, and ops_finish hands the result
 * to the call's callback. Routing, retries and I/O are client.c's.
 */
#include "client_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"

/* ---- encoding ----------------------------------------------------------- */

static struct inbox_bytes unit_key(const struct unit *u)
{
    struct inbox_bytes b = {.ptr = u->key, .len = u->key_len};
    return b;
}

static struct unit *first_unit(struct call *call, const struct wire *w)
{
    for (uint32_t i = 0; i < call->units_count; i++)
        if (call->units[i].wire == w)
            return &call->units[i];
    assert(!"a wire without units");
    return &call->units[0];
}

/* The units of a multi-inbox wire, in index order, as keys or targets. */
static uint32_t collect(struct inbox_client *c, struct call *call,
                        const struct wire *w)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < call->units_count; i++) {
        struct unit *u = &call->units[i];
        if (u->wire != w)
            continue;
        assert(n < INBOX_FANOUT_INBOXES_MAX);
        c->s_keys[n] = unit_key(u);
        memcpy(c->s_targets[n].msg_id, u->msg_id, INBOX_MSG_ID_BYTES);
        c->s_targets[n].inbox = unit_key(u);
        n++;
    }
    assert(n == w->units_count);
    return n;
}

int ops_encode(struct inbox_client *c, struct conn *conn, struct wire *w,
               uint8_t *out, size_t cap, size_t *frame_bytes)
{
    struct call *call = w->call;
    struct unit *u = first_unit(call, w);
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = conn->version;
    m.hdr.opcode = call->op;
    m.hdr.request_id = w->id;
    struct inbox_bytes payload = {.ptr = call->payload,
                                  .len = call->payload_len};
    struct inbox_bytes addrs[INBOX_NODE_ADDRS_MAX];
    switch (call->op) {
    case INBOX_OP_ENQUEUE:
        memcpy(m.body.enqueue_req.msg_id, u->msg_id, INBOX_MSG_ID_BYTES);
        m.body.enqueue_req.ttl_ms = call->u64a;
        m.body.enqueue_req.inbox = unit_key(u);
        m.body.enqueue_req.payload = payload;
        break;
    case INBOX_OP_ENQUEUE_MANY:
        m.body.enqueue_many_req.ttl_ms = call->u64a;
        m.body.enqueue_many_req.payload = payload;
        m.body.enqueue_many_req.count = collect(c, call, w);
        m.body.enqueue_many_req.targets = c->s_targets;
        break;
    case INBOX_OP_FETCH:
        m.body.fetch_req.inbox = unit_key(u);
        m.body.fetch_req.after_seq = call->u64a;
        m.body.fetch_req.messages_max = call->u32a;
        m.body.fetch_req.bytes_max = call->u32b;
        m.body.fetch_req.wait_ms = call->u32c;
        m.body.fetch_req.flags = call->flags;
        break;
    case INBOX_OP_ACK:
        m.body.ack_req.inbox = unit_key(u);
        m.body.ack_req.up_to_seq = call->u64a;
        break;
    case INBOX_OP_SEEN_SET:
        m.body.seen_set_req.inbox = unit_key(u);
        m.body.seen_set_req.ts_ms = call->u64a;
        break;
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
    case INBOX_OP_UNWATCH:
        m.body.keys_req.flags = call->op == INBOX_OP_SEEN_GET ? call->flags : 0;
        m.body.keys_req.count = collect(c, call, w);
        m.body.keys_req.keys = c->s_keys;
        break;
    case INBOX_OP_ADD_NODE:
        for (uint8_t i = 0; i < call->addrs_count; i++) {
            addrs[i].ptr = (const uint8_t *)call->addrs[i];
            addrs[i].len = (uint32_t)strlen(call->addrs[i]);
        }
        m.body.add_node_req.node_id = call->u64a;
        m.body.add_node_req.addrs_count = call->addrs_count;
        m.body.add_node_req.addrs = addrs;
        break;
    case INBOX_OP_REMOVE_NODE:
        m.body.remove_node_req.node_id = call->u64a;
        break;
    case INBOX_OP_TRANSFER_LEADER:
        m.body.transfer_leader_req.shard = u->shard;
        m.body.transfer_leader_req.to_node_id = call->u64a;
        break;
    case INBOX_OP_MOVE_REPLICA:
        m.body.move_replica_req.shard = call->u32a;
        m.body.move_replica_req.from_node_id = call->u64a;
        m.body.move_replica_req.to_node_id = call->u64b;
        break;
    case INBOX_OP_SNAPSHOT:
        m.body.snapshot_req.shard = call->u32a;
        break;
    default: /* ROUTE, STATUS, PING: empty bodies */
        break;
    }
    return inbox_msg_encode(&m, out, cap, frame_bytes);
}

/* ---- results ------------------------------------------------------------ */

void ops_single_result(struct call *call, struct unit *u,
                       const struct inbox_msg *m)
{
    switch (call->op) {
    case INBOX_OP_ENQUEUE:
        u->value = m->body.enqueue_resp.seq;
        u->dedup = m->body.enqueue_resp.dedup;
        break;
    case INBOX_OP_ACK:
        u->value = m->body.ack_resp.acked_seq;
        break;
    case INBOX_OP_SEEN_SET:
        u->value = m->body.seen_set_resp.ts_ms;
        break;
    case INBOX_OP_ADD_NODE:
    case INBOX_OP_REMOVE_NODE:
    case INBOX_OP_TRANSFER_LEADER:
    case INBOX_OP_MOVE_REPLICA:
    case INBOX_OP_SNAPSHOT:
        u->value = m->body.admin_resp.epoch;
        break;
    default:
        break;
    }
}

static void finish_fetch(struct inbox_client *c, struct call *call, int status,
                         const struct inbox_msg *m)
{
    if (status != 0 || m == NULL) {
        call->done.fetch(call->arg, status ? status : INBOX_EINTERNAL, NULL);
        return;
    }
    const struct inbox_fetch_resp *r = &m->body.fetch_resp;
    struct inbox_iter it = r->iter;
    struct inbox_message msg;
    size_t n = 0;
    while (n < INBOX_FETCH_MESSAGES_MAX && inbox_next_message(&it, &msg)) {
        struct inbox_client_message *out = &c->s_msgs[n++];
        out->seq = msg.seq;
        memcpy(out->msg_id, msg.msg_id, INBOX_MSG_ID_BYTES);
        out->enqueue_ts_ms = msg.enqueue_ts_ms;
        out->payload = msg.payload.ptr;
        out->payload_len = msg.payload.len;
    }
    struct inbox_client_fetch_result res = {
        .acked_seq = r->acked_seq,
        .last_seq = r->last_seq,
        .stale = r->stale,
        .count = n,
        .messages = c->s_msgs,
    };
    call->done.fetch(call->arg, 0, &res);
}

static void finish_status(struct call *call, int status,
                          const struct inbox_msg *m)
{
    if (status != 0 || m == NULL) {
        call->done.status(call->arg, status ? status : INBOX_EINTERNAL, NULL);
        return;
    }
    const struct inbox_status_resp *r = &m->body.status_resp;
    struct inbox_client_shard_status *shards =
        r->count ? calloc(r->count, sizeof *shards) : NULL;
    if (r->count && shards == NULL) {
        call->done.status(call->arg, INBOX_ENOMEM, NULL);
        return;
    }
    struct inbox_iter it = r->iter;
    struct inbox_shard_status s;
    size_t n = 0;
    while (n < r->count && inbox_next_shard_status(&it, &s)) {
        shards[n].shard = s.shard;
        shards[n].role = s.role;
        shards[n].leader_id = s.leader_id;
        shards[n].term = s.term;
        shards[n].applied_index = s.applied_index;
        n++;
    }
    struct inbox_client_status res = {
        .node_id = r->node_id,
        .uptime_ms = r->uptime_ms,
        .count = n,
        .shards = shards,
    };
    call->done.status(call->arg, 0, &res);
    free(shards);
}

void ops_finish(struct inbox_client *c, struct call *call, int status,
                const struct inbox_msg *m)
{
    struct unit *u = &call->units[0];
    bool ok = status == 0;
    switch (call->op) {
    case INBOX_OP_ENQUEUE:
        call->done.enqueue(call->arg, status, ok ? u->value : 0, ok && u->dedup,
                           u->msg_id);
        break;
    case INBOX_OP_ENQUEUE_MANY:
        for (uint32_t i = 0; i < call->units_count; i++) {
            struct inbox_client_enqueue_item *it = &c->s_items[i];
            u = &call->units[i];
            it->status = u->status;
            it->dedup = u->status == 0 && u->dedup;
            it->seq = u->status == 0 ? u->value : 0;
            memcpy(it->msg_id, u->msg_id, INBOX_MSG_ID_BYTES);
        }
        call->done.enqueue_many(call->arg, status, call->units_count,
                                c->s_items);
        break;
    case INBOX_OP_FETCH:
        finish_fetch(c, call, status, m);
        break;
    case INBOX_OP_ACK:
        call->done.ack(call->arg, status, ok ? u->value : 0);
        break;
    case INBOX_OP_SEEN_SET:
        call->done.seen_set(call->arg, status, ok ? u->value : 0);
        break;
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
    case INBOX_OP_UNWATCH:
        for (uint32_t i = 0; i < call->units_count; i++) {
            u = &call->units[i];
            c->s_kitems[i].status = u->status;
            c->s_kitems[i].value = u->status == 0 ? u->value : 0;
        }
        call->done.keys(call->arg, status, call->units_count, c->s_kitems);
        break;
    case INBOX_OP_ROUTE:
        call->done.route(call->arg, status, ok ? c->epoch : 0,
                         ok ? c->shard_count : 0,
                         ok ? (uint32_t)c->nodes_count : 0);
        break;
    case INBOX_OP_STATUS:
        finish_status(call, status, m);
        break;
    default: /* admin */
        call->done.admin(call->arg, status, ok ? u->value : 0);
        break;
    }
}

/* ---- submit ------------------------------------------------------------- */

/* A call on one inbox, routed to its shard's leader. */
static struct call *single_new(struct inbox_client *c, uint8_t op,
                               const void *inbox, size_t inbox_len,
                               uint32_t timeout_ms, void *arg, int *rc)
{
    struct call *call = call_new(c, op, 1, timeout_ms, arg, rc);
    if (call == NULL)
        return NULL;
    if ((*rc = unit_set_key(&call->units[0], inbox, inbox_len)) != 0) {
        call_free(call);
        return NULL;
    }
    call->route_kind = ROUTE_BY_KEY;
    return call;
}

static int payload_copy(struct call *call, const void *payload, size_t len)
{
    if (len > INBOX_PAYLOAD_BYTES_MAX)
        return INBOX_EPAYLOAD_TOO_LARGE;
    if (len > 0 && payload == NULL)
        return INBOX_EINVAL;
    if (len == 0)
        return 0;
    call->payload = malloc(len);
    if (call->payload == NULL)
        return INBOX_ENOMEM;
    memcpy(call->payload, payload, len);
    call->payload_len = (uint32_t)len;
    return 0;
}

int inbox_client_submit_enqueue(struct inbox_client *client, const void *inbox,
                                size_t inbox_len, const uint8_t *msg_id,
                                uint64_t ttl_ms, const void *payload,
                                size_t payload_len, uint32_t timeout_ms,
                                void *arg, inbox_enqueue_done_fn *enqueue_done)
{
    int rc;
    if (enqueue_done == NULL || ttl_ms > INBOX_TTL_MS_MAX)
        return INBOX_EINVAL;
    struct call *call = single_new(client, INBOX_OP_ENQUEUE, inbox, inbox_len,
                                   timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    struct unit *u = &call->units[0];
    rc = msg_id ? (memcpy(u->msg_id, msg_id, INBOX_MSG_ID_BYTES), 0)
                : msg_id_make(u->msg_id);
    if (rc == 0)
        rc = payload_copy(call, payload, payload_len);
    if (rc != 0) {
        call_free(call);
        return rc;
    }
    call->u64a = ttl_ms;
    call->done.enqueue = enqueue_done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_enqueue_many(
    struct inbox_client *client, const struct inbox_client_target *targets,
    size_t count, uint64_t ttl_ms, const void *payload, size_t payload_len,
    uint32_t timeout_ms, void *arg,
    inbox_enqueue_many_done_fn *enqueue_many_done)
{
    if (enqueue_many_done == NULL || targets == NULL || count == 0 ||
        ttl_ms > INBOX_TTL_MS_MAX)
        return INBOX_EINVAL;
    if (count > INBOX_FANOUT_INBOXES_MAX)
        return INBOX_ETOO_MANY_INBOXES;
    int rc;
    struct call *call =
        call_new(client, INBOX_OP_ENQUEUE_MANY, count, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    for (size_t i = 0; i < count && rc == 0; i++) {
        struct unit *u = &call->units[i];
        rc = unit_set_key(u, targets[i].inbox, targets[i].inbox_len);
        if (rc == 0 && targets[i].msg_id)
            memcpy(u->msg_id, targets[i].msg_id, INBOX_MSG_ID_BYTES);
        else if (rc == 0)
            rc = msg_id_make(u->msg_id);
    }
    if (rc == 0)
        rc = payload_copy(call, payload, payload_len);
    if (rc != 0) {
        call_free(call);
        return rc;
    }
    call->route_kind = ROUTE_BY_KEY;
    call->u64a = ttl_ms;
    call->done.enqueue_many = enqueue_many_done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_fetch(struct inbox_client *client, const void *inbox,
                              size_t inbox_len, uint64_t after_seq,
                              uint32_t messages_max, uint32_t bytes_max,
                              uint32_t wait_ms, uint8_t flags,
                              uint32_t timeout_ms, void *arg,
                              inbox_fetch_done_fn *fetch_done)
{
    int rc;
    if (fetch_done == NULL || (flags & ~INBOX_CLIENT_STALE_OK) != 0)
        return INBOX_EINVAL;
    if (wait_ms > INBOX_FETCH_WAIT_MS_MAX)
        wait_ms = INBOX_FETCH_WAIT_MS_MAX;
    /* The default deadline leaves room for the long-poll. */
    if (timeout_ms == 0)
        timeout_ms = wait_ms + INBOX_CLIENT_TIMEOUT_MS_DEFAULT;
    struct call *call = single_new(client, INBOX_OP_FETCH, inbox, inbox_len,
                                   timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u64a = after_seq;
    call->u32a = messages_max;
    call->u32b = bytes_max;
    call->u32c = wait_ms;
    call->flags = flags;
    call->done.fetch = fetch_done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_ack(struct inbox_client *client, const void *inbox,
                            size_t inbox_len, uint64_t up_to_seq,
                            uint32_t timeout_ms, void *arg,
                            inbox_ack_done_fn *ack_done)
{
    int rc;
    if (ack_done == NULL)
        return INBOX_EINVAL;
    struct call *call = single_new(client, INBOX_OP_ACK, inbox, inbox_len,
                                   timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u64a = up_to_seq;
    call->done.ack = ack_done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_seen_set(struct inbox_client *client, const void *inbox,
                                 size_t inbox_len, uint64_t ts_ms,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_seen_set_done_fn *seen_set_done)
{
    int rc;
    if (seen_set_done == NULL)
        return INBOX_EINVAL;
    struct call *call = single_new(client, INBOX_OP_SEEN_SET, inbox, inbox_len,
                                   timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u64a = ts_ms;
    call->done.seen_set = seen_set_done;
    call_submit(client, call);
    return 0;
}

static int submit_keys(struct inbox_client *client, uint8_t op,
                       const struct inbox_client_key *inboxes, size_t count,
                       uint8_t flags, uint32_t timeout_ms, void *arg,
                       inbox_seen_get_done_fn *done)
{
    if (done == NULL || inboxes == NULL || count == 0 ||
        (flags & ~INBOX_CLIENT_STALE_OK) != 0)
        return INBOX_EINVAL;
    _Static_assert(INBOX_SEEN_GET_INBOXES_MAX <= INBOX_FANOUT_INBOXES_MAX &&
                       INBOX_WATCH_INBOXES_MAX <= INBOX_FANOUT_INBOXES_MAX,
                   "the scratch arrays are sized by the fan-out bound");
    if (count > (op == INBOX_OP_SEEN_GET ? INBOX_SEEN_GET_INBOXES_MAX
                                         : INBOX_WATCH_INBOXES_MAX))
        return INBOX_ETOO_MANY_INBOXES;
    int rc;
    struct call *call = call_new(client, op, count, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = unit_set_key(&call->units[i], inboxes[i].ptr, inboxes[i].len);
    if (rc != 0) {
        call_free(call);
        return rc;
    }
    call->route_kind = ROUTE_BY_KEY;
    call->flags = flags;
    call->done.keys = done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_seen_get(struct inbox_client *client,
                                 const struct inbox_client_key *inboxes,
                                 size_t count, uint8_t flags,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_seen_get_done_fn *seen_get_done)
{
    return submit_keys(client, INBOX_OP_SEEN_GET, inboxes, count, flags,
                       timeout_ms, arg, seen_get_done);
}

int inbox_client_submit_watch(struct inbox_client *client,
                              const struct inbox_client_key *inboxes,
                              size_t count, uint32_t timeout_ms, void *arg,
                              inbox_watch_done_fn *watch_done)
{
    return submit_keys(client, INBOX_OP_WATCH, inboxes, count, 0, timeout_ms,
                       arg, watch_done);
}

int inbox_client_submit_unwatch(struct inbox_client *client,
                                const struct inbox_client_key *inboxes,
                                size_t count, uint32_t timeout_ms, void *arg,
                                inbox_unwatch_done_fn *unwatch_done)
{
    return submit_keys(client, INBOX_OP_UNWATCH, inboxes, count, 0, timeout_ms,
                       arg, unwatch_done);
}

/* A call without an inbox, to node_id (0: any node). */
static struct call *node_call_new(struct inbox_client *c, uint8_t op,
                                  uint64_t node_id, uint32_t timeout_ms,
                                  void *arg, int *rc)
{
    struct call *call = call_new(c, op, 1, timeout_ms, arg, rc);
    if (call == NULL)
        return NULL;
    call->route_kind = ROUTE_TO_NODE;
    call->node_id = node_id;
    return call;
}

int inbox_client_submit_route(struct inbox_client *client, uint32_t timeout_ms,
                              void *arg, inbox_route_done_fn *route_done)
{
    return inbox_client_submit_route_at(client, 0, timeout_ms, arg, route_done);
}

int inbox_client_submit_route_at(struct inbox_client *client, uint64_t node_id,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_route_done_fn *route_done)
{
    int rc;
    if (route_done == NULL)
        return INBOX_EINVAL;
    struct call *call =
        node_call_new(client, INBOX_OP_ROUTE, node_id, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u64a = client->epoch; /* to tell whether the answer is news */
    call->done.route = route_done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_status(struct inbox_client *client, uint64_t node_id,
                               uint32_t timeout_ms, void *arg,
                               inbox_status_done_fn *status_done)
{
    int rc;
    if (status_done == NULL)
        return INBOX_EINVAL;
    struct call *call =
        node_call_new(client, INBOX_OP_STATUS, node_id, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->done.status = status_done;
    call_submit(client, call);
    return 0;
}

static int admin_submit(struct inbox_client *client, struct call *call,
                        inbox_admin_done_fn *done)
{
    call->done.admin = done;
    call_submit(client, call);
    return 0;
}

int inbox_client_submit_add_node(struct inbox_client *client,
                                 uint64_t at_node_id, uint64_t node_id,
                                 const char *const *addrs, size_t addrs_count,
                                 uint32_t timeout_ms, void *arg,
                                 inbox_admin_done_fn *add_node_done)
{
    if (add_node_done == NULL || node_id == 0 || addrs == NULL ||
        addrs_count == 0 || addrs_count > INBOX_NODE_ADDRS_MAX)
        return INBOX_EINVAL;
    for (size_t i = 0; i < addrs_count; i++)
        if (addrs[i] == NULL || addrs[i][0] == '\0' ||
            strlen(addrs[i]) > INBOX_NODE_ADDR_BYTES_MAX)
            return INBOX_EINVAL;
    int rc;
    struct call *call = node_call_new(client, INBOX_OP_ADD_NODE, at_node_id,
                                      timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->addrs = calloc(addrs_count, sizeof *call->addrs);
    if (call->addrs == NULL) {
        call_free(call);
        return INBOX_ENOMEM;
    }
    for (size_t i = 0; i < addrs_count; i++)
        strcpy(call->addrs[i], addrs[i]);
    call->addrs_count = (uint8_t)addrs_count;
    call->u64a = node_id;
    return admin_submit(client, call, add_node_done);
}

int inbox_client_submit_remove_node(struct inbox_client *client,
                                    uint64_t at_node_id, uint64_t node_id,
                                    uint32_t timeout_ms, void *arg,
                                    inbox_admin_done_fn *remove_node_done)
{
    if (remove_node_done == NULL || node_id == 0)
        return INBOX_EINVAL;
    int rc;
    struct call *call = node_call_new(client, INBOX_OP_REMOVE_NODE, at_node_id,
                                      timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u64a = node_id;
    return admin_submit(client, call, remove_node_done);
}

int inbox_client_submit_transfer_leader(
    struct inbox_client *client, uint32_t shard, uint64_t to_node_id,
    uint32_t timeout_ms, void *arg, inbox_admin_done_fn *transfer_leader_done)
{
    if (transfer_leader_done == NULL || shard >= INBOX_SHARD_COUNT_MAX)
        return INBOX_EINVAL;
    int rc;
    struct call *call = node_call_new(client, INBOX_OP_TRANSFER_LEADER, 0,
                                      timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->route_kind = ROUTE_BY_SHARD;
    call->units[0].shard = shard;
    call->u64a = to_node_id;
    return admin_submit(client, call, transfer_leader_done);
}

int inbox_client_submit_move_replica(struct inbox_client *client,
                                     uint32_t shard, uint64_t from_node_id,
                                     uint64_t to_node_id, uint32_t timeout_ms,
                                     void *arg,
                                     inbox_admin_done_fn *move_replica_done)
{
    if (move_replica_done == NULL || from_node_id == 0 || to_node_id == 0 ||
        shard >= INBOX_SHARD_COUNT_MAX)
        return INBOX_EINVAL;
    int rc;
    struct call *call =
        node_call_new(client, INBOX_OP_MOVE_REPLICA, 0, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u32a = shard;
    call->u64a = from_node_id;
    call->u64b = to_node_id;
    return admin_submit(client, call, move_replica_done);
}

int inbox_client_submit_snapshot(struct inbox_client *client, uint64_t node_id,
                                 uint32_t shard, uint32_t timeout_ms, void *arg,
                                 inbox_admin_done_fn *snapshot_done)
{
    if (snapshot_done == NULL ||
        (shard >= INBOX_SHARD_COUNT_MAX && shard != INBOX_CLIENT_SHARD_ALL))
        return INBOX_EINVAL;
    int rc;
    struct call *call =
        node_call_new(client, INBOX_OP_SNAPSHOT, node_id, timeout_ms, arg, &rc);
    if (call == NULL)
        return rc;
    call->u32a = shard;
    return admin_submit(client, call, snapshot_done);
}
