/* net_samples.c — sample messages of every body layout (see the header). */
#include "net_samples.h"

#include <assert.h>
#include <string.h>

#include "inbox/error.h"

#define B(s) ((struct inbox_bytes){(const uint8_t *)(s), sizeof(s) - 1})
#define MSG_ID(x)                                                              \
    {                                                                          \
        x, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,   \
            0x0c, 0x0d, 0x0e, 0x0f                                             \
    }

static const struct inbox_target many_targets[] = {
    {MSG_ID(0xa1), B("alice")},
    {MSG_ID(0xb2), B("bob")},
    {MSG_ID(0xc3), B("carol")},
};
static const struct inbox_enqueue_result many_results[] = {
    {0, false, 7},
    {0, true, 3},
    {1300, false, 0}, /* NOT_LEADER: bob's shard lives elsewhere */
};
static const struct inbox_message fetch_messages[] = {
    {5, MSG_ID(0x10), 1764268800000ull, B("hi")},
    {6, MSG_ID(0x11), 1764268800123ull, B("")},
    {7, MSG_ID(0x12), 1764268801000ull, B("see you")},
};
static const struct inbox_bytes two_keys[] = {B("alice"), B("bob")};
static const struct inbox_code_u64 seen_items[] = {
    {0, 1764268800000ull},
    {1300, 0},
};
static const struct inbox_bytes addrs1[] = {B("10.0.0.1:7400"),
                                            B("[fd00::1]:7400")};
static const struct inbox_bytes addrs2[] = {B("10.0.0.2:7400")};
static const struct inbox_node route_nodes[] = {
    {1, 2, addrs1, {0}},
    {2, 1, addrs2, {0}},
};
static const uint64_t route_leaders[] = {1, 2, 0, 1};
static const struct inbox_shard_status status_shards[] = {
    {0, INBOX_REPLICA_LEADER, 1, 3, 1000},
    {3, INBOX_REPLICA_FOLLOWER, 2, 2, 998},
};

#define N_SAMPLES 48
static struct net_sample samples[N_SAMPLES];
static size_t samples_count;

static struct inbox_msg *add(const char *name, uint8_t op, uint16_t flags)
{
    assert(samples_count < N_SAMPLES);
    struct net_sample *s = &samples[samples_count++];
    memset(s, 0, sizeof *s);
    s->name = name;
    s->msg.hdr.version = 1;
    s->msg.hdr.opcode = op;
    s->msg.hdr.flags = flags;
    s->msg.hdr.request_id = flags & INBOX_FLAG_PUSH ? 0 : 0x100 + samples_count;
    return &s->msg;
}

static struct inbox_msg *req(const char *name, uint8_t op)
{
    return add(name, op, 0);
}

static struct inbox_msg *resp(const char *name, uint8_t op)
{
    return add(name, op, INBOX_FLAG_RESPONSE);
}

static void build_data_ops(void)
{
    struct inbox_msg *m;
    m = req("hello_req", INBOX_OP_HELLO);
    m->hdr.request_id = 1;
    m->body.hello_req = (struct inbox_hello_req){1, 1, B("libinbox/0.1")};
    m = resp("hello_resp", INBOX_OP_HELLO);
    m->hdr.request_id = 1;
    m->body.hello_resp =
        (struct inbox_hello_resp){1, 1, INBOX_FRAME_BODY_BYTES_MAX, 64};
    req("ping_req", INBOX_OP_PING);
    resp("ping_resp", INBOX_OP_PING);

    m = req("enqueue_req", INBOX_OP_ENQUEUE);
    m->hdr.request_id = 2;
    m->body.enqueue_req = (struct inbox_enqueue_req){MSG_ID(0x00), 86400000ull,
                                                     B("alice"), B("hello")};
    m = resp("enqueue_resp", INBOX_OP_ENQUEUE);
    m->hdr.request_id = 2;
    m->body.enqueue_resp = (struct inbox_enqueue_resp){42, false};

    m = req("enqueue_many_req", INBOX_OP_ENQUEUE_MANY);
    m->body.enqueue_many_req.ttl_ms = 0;
    m->body.enqueue_many_req.payload = B("group hello");
    m->body.enqueue_many_req.count = 3;
    m->body.enqueue_many_req.targets = many_targets;
    m = resp("enqueue_many_resp", INBOX_OP_ENQUEUE_MANY);
    m->body.enqueue_many_resp.count = 3;
    m->body.enqueue_many_resp.results = many_results;

    m = req("fetch_req", INBOX_OP_FETCH);
    m->hdr.request_id = 3;
    m->body.fetch_req = (struct inbox_fetch_req){
        B("alice"), 4, 100, 65536, 30000, INBOX_FETCH_STALE_OK};
    m = resp("fetch_resp", INBOX_OP_FETCH);
    m->hdr.request_id = 3;
    m->body.fetch_resp.acked_seq = 4;
    m->body.fetch_resp.last_seq = 7;
    m->body.fetch_resp.count = 3;
    m->body.fetch_resp.messages = fetch_messages;
    m = resp("fetch_resp_empty", INBOX_OP_FETCH);
    m->body.fetch_resp.acked_seq = 9;
    m->body.fetch_resp.last_seq = 9;
    m->body.fetch_resp.stale = true;

    m = req("ack_req", INBOX_OP_ACK);
    m->body.ack_req = (struct inbox_ack_req){B("alice"), 7};
    m = resp("ack_resp", INBOX_OP_ACK);
    m->body.ack_resp.acked_seq = 7;
    m = req("seen_set_req", INBOX_OP_SEEN_SET);
    m->body.seen_set_req =
        (struct inbox_seen_set_req){B("alice"), 1764268800000ull};
    m = resp("seen_set_resp", INBOX_OP_SEEN_SET);
    m->body.seen_set_resp.ts_ms = 1764268800000ull;
}

static void build_list_ops(void)
{
    struct inbox_msg *m;
    m = req("seen_get_req", INBOX_OP_SEEN_GET);
    m->body.keys_req =
        (struct inbox_keys_req){INBOX_FETCH_STALE_OK, 2, two_keys, {0}};
    m = resp("seen_get_resp", INBOX_OP_SEEN_GET);
    m->body.code_u64_resp.count = 2;
    m->body.code_u64_resp.items = seen_items;
    m = req("watch_req", INBOX_OP_WATCH);
    m->body.keys_req = (struct inbox_keys_req){0, 2, two_keys, {0}};
    m = resp("watch_resp", INBOX_OP_WATCH);
    m->body.code_u64_resp.count = 2;
    m->body.code_u64_resp.items = seen_items;
    m = req("unwatch_req", INBOX_OP_UNWATCH);
    m->body.keys_req = (struct inbox_keys_req){0, 1, two_keys, {0}};
    resp("unwatch_resp", INBOX_OP_UNWATCH);
    m = add("notify_push", INBOX_OP_NOTIFY, INBOX_FLAG_PUSH);
    m->body.notify = (struct inbox_notify){B("alice"), 8};

    req("route_req", INBOX_OP_ROUTE);
    m = resp("route_resp", INBOX_OP_ROUTE);
    m->body.route_resp.epoch = 12;
    m->body.route_resp.hash = INBOX_HASH_XXH3_64;
    m->body.route_resp.nodes_count = 2;
    m->body.route_resp.nodes = route_nodes;
    m->body.route_resp.shard_count = 4;
    m->body.route_resp.leaders = route_leaders;
    req("status_req", INBOX_OP_STATUS);
    m = resp("status_resp", INBOX_OP_STATUS);
    m->body.status_resp.node_id = 1;
    m->body.status_resp.uptime_ms = 3600000;
    m->body.status_resp.count = 2;
    m->body.status_resp.shards = status_shards;
}

static void build_admin_ops(void)
{
    struct inbox_msg *m;
    m = req("add_node_req", INBOX_OP_ADD_NODE);
    m->body.add_node_req = (struct inbox_node){3, 1, addrs2, {0}};
    m->body.add_node_req.node_id = 3;
    m = resp("add_node_resp", INBOX_OP_ADD_NODE);
    m->body.admin_resp.epoch = 13;
    m = req("remove_node_req", INBOX_OP_REMOVE_NODE);
    m->body.remove_node_req.node_id = 2;
    m = resp("remove_node_resp", INBOX_OP_REMOVE_NODE);
    m->body.admin_resp.epoch = 14;
    m = req("transfer_leader_req", INBOX_OP_TRANSFER_LEADER);
    m->body.transfer_leader_req = (struct inbox_transfer_leader_req){5, 0};
    m = resp("transfer_leader_resp", INBOX_OP_TRANSFER_LEADER);
    m->body.admin_resp.epoch = 14;
    m = req("move_replica_req", INBOX_OP_MOVE_REPLICA);
    m->body.move_replica_req = (struct inbox_move_replica_req){5, 2, 3};
    m = resp("move_replica_resp", INBOX_OP_MOVE_REPLICA);
    m->body.admin_resp.epoch = 15;
    m = req("snapshot_req", INBOX_OP_SNAPSHOT);
    m->body.snapshot_req.shard = INBOX_SHARD_ALL;
    m = resp("snapshot_resp", INBOX_OP_SNAPSHOT);
    m->body.admin_resp.epoch = 15;
    static const uint8_t batch[] = {1, 2, 3, 4, 5, 6, 7};
    m = req("raft_req", INBOX_OP_RAFT);
    m->body.raft_req.batch = (struct inbox_bytes){batch, sizeof batch};
    resp("raft_resp", INBOX_OP_RAFT);
}

static void build_errors(void)
{
    struct inbox_msg *m;
    uint16_t ef = INBOX_FLAG_RESPONSE | INBOX_FLAG_ERROR;
    m = add("error_not_leader", INBOX_OP_ENQUEUE, ef);
    m->hdr.request_id = 2;
    m->body.error.code = (uint16_t)-INBOX_ENOT_LEADER;
    m->body.error.message = B("not leader");
    m->body.error.shard = 5;
    m->body.error.leader = (struct inbox_node){2, 1, addrs2, {0}};
    m = add("error_proto_version", INBOX_OP_HELLO, ef);
    m->hdr.request_id = 1;
    m->body.error.code = (uint16_t)-INBOX_EPROTO_VERSION;
    m->body.error.message = B("server speaks 1..1");
    m->body.error.version_min = 1;
    m->body.error.version_max = 1;
    m = add("error_busy", INBOX_OP_FETCH, ef);
    m->body.error.code = (uint16_t)-INBOX_EBUSY;
    m->body.error.message = B("too many requests in flight");
    m = add("error_proto_conn", 0x7f, ef);
    m->hdr.request_id = 0; /* connection-level: id unknown, then close */
    m->body.error.code = (uint16_t)-INBOX_EPROTO;
    m->body.error.message = B("bad magic");
    m = add("error_unknown_op", 0x7f, ef);
    m->body.error.code = (uint16_t)-INBOX_EUNKNOWN_OP;
    m->body.error.message = B("");
    m->body.error.detail = B("\x01\x02");
}

const struct net_sample *net_samples(size_t *count)
{
    if (samples_count == 0) {
        build_data_ops();
        build_list_ops();
        build_admin_ops();
        build_errors();
    }
    *count = samples_count;
    return samples;
}

const struct net_sample *net_sample_find(const char *name)
{
    size_t n;
    const struct net_sample *s = net_samples(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return &s[i];
    return NULL;
}
