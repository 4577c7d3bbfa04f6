/*
 * sync.c — the synchronous wrappers of libinbox, for simple users such as
 * inboxctl: submit one call, then run inbox_client_poll() until its
 * callback has fired. The call's own deadline bounds the wait, so these
 * never block forever. Results that point into the client's buffers are
 * copied out before the callback returns.
 */
#include "client_internal.h"

#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"

struct waiter {
    bool done;
    int status;
    uint64_t u64;
    bool flag;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    size_t count;
    void *items; /* caller's array, or a heap result */
};

/* The deadline of the call bounds this loop: run_timers expires the call
 * even when poll(2) itself fails. */
static int wait_done(struct inbox_client *c, struct waiter *w, int rc)
{
    if (rc != 0)
        return rc;
    while (!w->done)
        (void)inbox_client_poll(c, 1000);
    return w->status;
}

static bool reentered(const struct inbox_client *c)
{
    return c == NULL || c->depth > 0;
}

static void enqueue_done(void *arg, int status, uint64_t seq, bool dedup,
                         const uint8_t *msg_id)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    w->u64 = seq;
    w->flag = dedup;
    memcpy(w->msg_id, msg_id, INBOX_MSG_ID_BYTES);
}

int inbox_enqueue(struct inbox_client *client, const void *inbox,
                  size_t inbox_len, const uint8_t *msg_id, uint64_t ttl_ms,
                  const void *payload, size_t payload_len, uint64_t *seq_out,
                  bool *dedup_out, uint8_t *msg_id_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_enqueue(client, inbox, inbox_len, msg_id,
                                         ttl_ms, payload, payload_len,
                                         timeout_ms, &w, enqueue_done);
    rc = wait_done(client, &w, rc);
    if (w.done && msg_id_out)
        memcpy(msg_id_out, w.msg_id, INBOX_MSG_ID_BYTES);
    if (rc == 0 && seq_out)
        *seq_out = w.u64;
    if (rc == 0 && dedup_out)
        *dedup_out = w.flag;
    return rc;
}

static void enqueue_many_done(void *arg, int status, size_t count,
                              const struct inbox_client_enqueue_item *items)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    if (w->items)
        memcpy(w->items, items, count * sizeof *items);
}

int inbox_enqueue_many(struct inbox_client *client,
                       const struct inbox_client_target *targets, size_t count,
                       uint64_t ttl_ms, const void *payload, size_t payload_len,
                       struct inbox_client_enqueue_item *items_out,
                       uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {.items = items_out};
    int rc = inbox_client_submit_enqueue_many(client, targets, count, ttl_ms,
                                              payload, payload_len, timeout_ms,
                                              &w, enqueue_many_done);
    return wait_done(client, &w, rc);
}

/* One heap block: the result, the messages, then the payload bytes. */
static void fetch_done(void *arg, int status,
                       const struct inbox_client_fetch_result *r)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    if (status != 0)
        return;
    size_t bytes = sizeof *r + r->count * sizeof r->messages[0];
    for (size_t i = 0; i < r->count; i++)
        bytes += r->messages[i].payload_len;
    struct inbox_client_fetch_result *copy = malloc(bytes);
    if (copy == NULL) {
        w->status = INBOX_ENOMEM;
        return;
    }
    *copy = *r;
    struct inbox_client_message *msgs =
        (struct inbox_client_message *)(copy + 1);
    uint8_t *data = (uint8_t *)(msgs + r->count);
    for (size_t i = 0; i < r->count; i++) {
        msgs[i] = r->messages[i];
        if (r->messages[i].payload_len)
            memcpy(data, r->messages[i].payload, r->messages[i].payload_len);
        msgs[i].payload = data;
        data += r->messages[i].payload_len;
    }
    copy->messages = msgs;
    w->items = copy;
}

int inbox_fetch(struct inbox_client *client, const void *inbox,
                size_t inbox_len, uint64_t after_seq, uint32_t messages_max,
                uint32_t bytes_max, uint32_t wait_ms, uint8_t flags,
                struct inbox_client_fetch_result **result_out,
                uint32_t timeout_ms)
{
    if (reentered(client) || result_out == NULL)
        return INBOX_EINVAL;
    *result_out = NULL;
    struct waiter w = {0};
    int rc = inbox_client_submit_fetch(client, inbox, inbox_len, after_seq,
                                       messages_max, bytes_max, wait_ms, flags,
                                       timeout_ms, &w, fetch_done);
    rc = wait_done(client, &w, rc);
    if (rc == 0)
        *result_out = w.items;
    return rc;
}

void inbox_fetch_result_free(struct inbox_client_fetch_result *result)
{
    free(result);
}

static void u64_done(void *arg, int status, uint64_t value)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    w->u64 = value;
}

static int u64_out(int rc, const struct waiter *w, uint64_t *out)
{
    if (rc == 0 && out)
        *out = w->u64;
    return rc;
}

int inbox_ack(struct inbox_client *client, const void *inbox, size_t inbox_len,
              uint64_t up_to_seq, uint64_t *acked_seq_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_ack(client, inbox, inbox_len, up_to_seq,
                                     timeout_ms, &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, acked_seq_out);
}

int inbox_seen_set(struct inbox_client *client, const void *inbox,
                   size_t inbox_len, uint64_t ts_ms, uint64_t *ts_ms_out,
                   uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_seen_set(client, inbox, inbox_len, ts_ms,
                                          timeout_ms, &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, ts_ms_out);
}

static void keys_done(void *arg, int status, size_t count,
                      const struct inbox_client_key_item *items)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    if (w->items)
        memcpy(w->items, items, count * sizeof *items);
}

int inbox_seen_get(struct inbox_client *client,
                   const struct inbox_client_key *inboxes, size_t count,
                   uint8_t flags, struct inbox_client_key_item *items_out,
                   uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {.items = items_out};
    int rc = inbox_client_submit_seen_get(client, inboxes, count, flags,
                                          timeout_ms, &w, keys_done);
    return wait_done(client, &w, rc);
}

int inbox_watch(struct inbox_client *client,
                const struct inbox_client_key *inboxes, size_t count,
                struct inbox_client_key_item *items_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {.items = items_out};
    int rc = inbox_client_submit_watch(client, inboxes, count, timeout_ms, &w,
                                       keys_done);
    return wait_done(client, &w, rc);
}

int inbox_unwatch(struct inbox_client *client,
                  const struct inbox_client_key *inboxes, size_t count,
                  struct inbox_client_key_item *items_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {.items = items_out};
    int rc = inbox_client_submit_unwatch(client, inboxes, count, timeout_ms, &w,
                                         keys_done);
    return wait_done(client, &w, rc);
}

static void route_done(void *arg, int status, uint64_t epoch,
                       uint32_t shard_count, uint32_t nodes_count)
{
    (void)shard_count;
    (void)nodes_count;
    u64_done(arg, status, epoch);
}

int inbox_route(struct inbox_client *client, uint64_t *epoch_out,
                uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_route(client, timeout_ms, &w, route_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}

static void status_done(void *arg, int status,
                        const struct inbox_client_status *r)
{
    struct waiter *w = arg;
    w->done = true;
    w->status = status;
    if (status != 0)
        return;
    struct inbox_client_status *copy =
        malloc(sizeof *copy + r->count * sizeof r->shards[0]);
    if (copy == NULL) {
        w->status = INBOX_ENOMEM;
        return;
    }
    *copy = *r;
    struct inbox_client_shard_status *shards =
        (struct inbox_client_shard_status *)(copy + 1);
    if (r->count)
        memcpy(shards, r->shards, r->count * sizeof *shards);
    copy->shards = shards;
    w->items = copy;
}

int inbox_status(struct inbox_client *client, uint64_t node_id,
                 struct inbox_client_status **result_out, uint32_t timeout_ms)
{
    if (reentered(client) || result_out == NULL)
        return INBOX_EINVAL;
    *result_out = NULL;
    struct waiter w = {0};
    int rc = inbox_client_submit_status(client, node_id, timeout_ms, &w,
                                        status_done);
    rc = wait_done(client, &w, rc);
    if (rc == 0)
        *result_out = w.items;
    return rc;
}

void inbox_status_free(struct inbox_client_status *result)
{
    free(result);
}

int inbox_add_node(struct inbox_client *client, uint64_t node_id,
                   const char *const *addrs, size_t addrs_count,
                   uint64_t *epoch_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_add_node(
        client, 0, node_id, addrs, addrs_count, timeout_ms, &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}

int inbox_remove_node(struct inbox_client *client, uint64_t node_id,
                      uint64_t *epoch_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_remove_node(client, 0, node_id, timeout_ms, &w,
                                             u64_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}

int inbox_transfer_leader(struct inbox_client *client, uint32_t shard,
                          uint64_t to_node_id, uint64_t *epoch_out,
                          uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_transfer_leader(client, shard, to_node_id,
                                                 timeout_ms, &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}

int inbox_move_replica(struct inbox_client *client, uint32_t shard,
                       uint64_t from_node_id, uint64_t to_node_id,
                       uint64_t *epoch_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_move_replica(
        client, shard, from_node_id, to_node_id, timeout_ms, &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}

int inbox_snapshot(struct inbox_client *client, uint64_t node_id,
                   uint32_t shard, uint64_t *epoch_out, uint32_t timeout_ms)
{
    if (reentered(client))
        return INBOX_EINVAL;
    struct waiter w = {0};
    int rc = inbox_client_submit_snapshot(client, node_id, shard, timeout_ms,
                                          &w, u64_done);
    return u64_out(wait_done(client, &w, rc), &w, epoch_out);
}
