/*
 * test_cluster.c — three real inboxd processes on 127.0.0.1 as one cluster
 * (every shard a Raft group over all three): SIGKILL of a shard's leader
 * under steady enqueue load, SIGKILL of every node at once, a node whose
 * certificate comes from another CA, and a fourth node joining under load
 * (`inboxctl cluster add-node`) while node 1 leaves (`cluster remove-node`,
 * then stopped), with `cluster transfer-leader` to the new node.
 *
 * The head-to-toe check (cluster_verify) reads every inbox from every node
 * with STALE_OK over a raw connection pinned to that node (libinbox sends
 * FETCH to the shard's leader even with STALE_OK, client.c pick_unit), once
 * all nodes report the same applied index for every shard: every
 * acknowledged enqueue is present exactly once at its acknowledged seq,
 * seqs run gapless from 1, no msg id is stored twice, every stored message
 * is one that was sent to that inbox with its payload, and all the nodes
 * checked (a mask over up to NODES_MAX slots) hold the very same inboxes.
 *
 * Usage: test_cluster PATH/TO/inboxd [PATH/TO/inboxctl]  (or $INBOXD_BIN,
 * $INBOXCTL_BIN). inboxctl, when given, is what finds the leader to kill
 * (`inboxctl route --json`); else the ROUTE op through libinbox does.
 * $INBOX_TEST_FILTER runs only the tests matching a cmocka pattern.
 * A failed test keeps its nodes' directories and prints their log tails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inbox/client.h"
#include "inbox/error.h"
#include "inbox/limits.h"
#include "inboxd_proc.h"
#include "net/cert.h"
#include "net/codec.h"
#include "raw_client.h"

#define NODES 3u     /* the cluster as created: nodes 1..3 */
#define NODES_MAX 4u /* node slots: node 4 joins (test_add_and_remove_node) */
#define ALL3 ((1u << NODES) - 1u)
#define SHARDS 8u
#define SHARDS_ARG "8"

#define CALL_MS 10000u        /* deadline of one client call */
#define RAW_MS 5000           /* one raw request and its answer */
#define LEADERS_WAIT_MS 30000 /* every shard has a leader */
#define APPLIED_WAIT_MS 30000 /* every node applied the same index */
#define LOAD_WAIT_MS 30000    /* the writers reach their first acks */
#define RESUME_WAIT_MS 20000  /* writes resume after a kill (waited) */
#define RESUME_MS_MAX 10000u  /* ... and must have resumed within this */
#define LOG_WAIT_MS 15000     /* a log line shows up */
#define STOP_MS 20000u

/* The load: WRITERS threads, each with its own client and up to DEPTH
 * enqueues in flight, to HOT inboxes (three in four enqueues) and COLD
 * ones. */
#define WRITERS 3u
#define DEPTH 8u
#define HOT 3u
#define COLD 120u
#define INBOXES (HOT + COLD)
#define OPS_MAX 200000u
#define LOAD_ACKED_MIN 300u
#define LOAD_MS_MIN 1000u
#define PAYLOAD_BYTES_MAX 256u

enum op_state { OP_UNSENT, OP_INFLIGHT, OP_ACKED, OP_FAILED };

/* ---- inboxes, msg ids, payloads ------------------------------------------ */

static char inbox_names[INBOXES][16];
static uint32_t inbox_shards[INBOXES];

static void inboxes_init(void)
{
    for (uint32_t i = 0; i < INBOXES; i++) {
        if (i < HOT)
            snprintf(inbox_names[i], sizeof inbox_names[i], "hot-%u", i);
        else
            snprintf(inbox_names[i], sizeof inbox_names[i], "cold-%03u",
                     i - HOT);
        inbox_shards[i] =
            inbox_shard_of(inbox_names[i], strlen(inbox_names[i]), SHARDS);
    }
}

static void msg_id_make(uint8_t id[INBOX_MSG_ID_BYTES], uint32_t writer,
                        uint32_t n)
{
    memset(id, 0xC1, INBOX_MSG_ID_BYTES);
    memcpy(id, &writer, sizeof writer);
    memcpy(id + 4, &n, sizeof n);
}

static bool msg_id_parse(const uint8_t id[INBOX_MSG_ID_BYTES], uint32_t *writer,
                         uint32_t *n)
{
    memcpy(writer, id, sizeof *writer);
    memcpy(n, id + 4, sizeof *n);
    for (size_t i = 8; i < INBOX_MSG_ID_BYTES; i++)
        if (id[i] != 0xC1)
            return false;
    return true;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* The payload of (writer, n): 8..PAYLOAD_BYTES_MAX bytes from both. */
static size_t payload_make(uint8_t *buf, uint32_t writer, uint32_t n)
{
    size_t len =
        8 + (size_t)((n * 7919u + writer * 104729u) % (PAYLOAD_BYTES_MAX - 8u));
    uint64_t s = ((uint64_t)writer << 32 | n) | 1u;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)rng_next(&s);
    return len;
}

/* ---- the cluster ----------------------------------------------------------
 */

struct load;
static void load_stop(struct load *l, unsigned drain_ms);
static void load_free(struct load *l);
struct verify;
static void verify_free(struct verify *vf);
struct pinned;
static void pinned_close(struct pinned *pn);

struct cluster {
    struct inboxd_proc p[NODES_MAX];
    unsigned slots; /* p[0..slots) are initialized */
    uint16_t ports[NODES_MAX];
    char addrs[NODES_MAX][32];
    char ids[NODES_MAX][8];
    char members[128];
    const char *args[NODES_MAX][14];
    const char *retain; /* --raft-retain-entries for every node, or NULL */
    /* Certificates, under node 1's root (kept or removed with it). */
    char tls[PROC_PATH_BYTES];
    char ca[PROC_PATH_BYTES], ca_key[PROC_PATH_BYTES];
    char admin_crt[PROC_PATH_BYTES], admin_key[PROC_PATH_BYTES];
    char node_crt[NODES_MAX][PROC_PATH_BYTES];
    char node_key[NODES_MAX][PROC_PATH_BYTES];
    /* Another CA, its node 3 and its admin (test_foreign_ca). */
    char xca[PROC_PATH_BYTES], xca_key[PROC_PATH_BYTES];
    char xadmin_crt[PROC_PATH_BYTES], xadmin_key[PROC_PATH_BYTES];
    char xnode_crt[PROC_PATH_BYTES], xnode_key[PROC_PATH_BYTES];
    struct load *load; /* stopped and freed by the teardown */
    struct verify *vf; /* freed by the teardown */
    struct pinned *pn; /* cluster_verify's link; the teardown frees it */
    bool passed;
};

static const char *inboxd_bin;
static const char *inboxctl_bin;

static void path_in(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PROC_PATH_BYTES, "%s/%s", dir, name);
    assert_true(n > 0 && n < (int)PROC_PATH_BYTES);
}

static void issue(const char *ca, const char *ca_key, const char *crt,
                  const char *key, const char *name, enum inbox_role role)
{
    const char *hosts[] = {"127.0.0.1"};
    struct cert_issue_config ic = {.ca_cert_path = ca,
                                   .ca_key_path = ca_key,
                                   .cert_path = crt,
                                   .key_path = key,
                                   .name = name,
                                   .role = role,
                                   .hosts = hosts,
                                   .hosts_count =
                                       role == INBOX_ROLE_NODE ? 1u : 0u};
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    int rc = cert_issue(&ic, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_issue %s: %s %s", name, inbox_err_name(rc), msg);
}

static void make_ca(const char *crt, const char *key, const char *name)
{
    struct cert_ca_config cc = {
        .cert_path = crt, .key_path = key, .name = name};
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    int rc = cert_ca_create(&cc, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_ca_create: %s %s", inbox_err_name(rc), msg);
}

/* One CA, a node certificate per node, an admin; and another CA with a
 * node 3 and an admin of its own. */
static void make_certificates(struct cluster *c)
{
    path_in(c->tls, c->p[0].root, "tls");
    assert_int_equal(mkdir(c->tls, 0700), 0);
    path_in(c->ca, c->tls, "ca.crt");
    path_in(c->ca_key, c->tls, "ca.key");
    path_in(c->admin_crt, c->tls, "admin.crt");
    path_in(c->admin_key, c->tls, "admin.key");
    make_ca(c->ca, c->ca_key, NULL);
    issue(c->ca, c->ca_key, c->admin_crt, c->admin_key, "admin",
          INBOX_ROLE_ADMIN);
    for (unsigned i = 0; i < NODES; i++) {
        char name[16], file[32];
        snprintf(name, sizeof name, "n%u", i + 1);
        snprintf(file, sizeof file, "%s.crt", name);
        path_in(c->node_crt[i], c->tls, file);
        snprintf(file, sizeof file, "%s.key", name);
        path_in(c->node_key[i], c->tls, file);
        issue(c->ca, c->ca_key, c->node_crt[i], c->node_key[i], name,
              INBOX_ROLE_NODE);
    }
    path_in(c->xca, c->tls, "other-ca.crt");
    path_in(c->xca_key, c->tls, "other-ca.key");
    path_in(c->xadmin_crt, c->tls, "other-admin.crt");
    path_in(c->xadmin_key, c->tls, "other-admin.key");
    path_in(c->xnode_crt, c->tls, "other-n3.crt");
    path_in(c->xnode_key, c->tls, "other-n3.key");
    make_ca(c->xca, c->xca_key, "other cluster CA");
    issue(c->xca, c->xca_key, c->xadmin_crt, c->xadmin_key, "admin",
          INBOX_ROLE_ADMIN);
    issue(c->xca, c->xca_key, c->xnode_crt, c->xnode_key, "n3",
          INBOX_ROLE_NODE);
}

static int cluster_setup(void **state)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    *state = c;
    for (unsigned i = 0; i < NODES; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%u", i + 1);
        if (proc_init(&c->p[i], name) != 0)
            return -1;
        c->slots = i + 1;
    }
    return 0;
}

static int cluster_teardown(void **state)
{
    struct cluster *c = *state;
    if (c == NULL)
        return 0;
    for (unsigned i = 0; i < c->slots; i++)
        proc_kill9(&c->p[i]);
    if (c->load != NULL) {
        load_stop(c->load, 500);
        load_free(c->load);
    }
    verify_free(c->vf);
    if (c->pn != NULL)
        pinned_close(c->pn);
    free(c->pn);
    bool keep = !c->passed && getenv("INBOX_TEST_CLEAN") == NULL;
    for (unsigned i = c->slots; i-- > 0;)
        proc_destroy(&c->p[i], keep);
    free(c);
    return 0;
}

/* Slot i's port (fresh, unlike the other slots'), address and id. */
static void node_address(struct cluster *c, unsigned i)
{
    c->ports[i] = proc_free_port();
    assert_true(c->ports[i] != 0);
    for (unsigned j = 0; j < i; j++)
        assert_true(c->ports[j] != c->ports[i]);
    snprintf(c->addrs[i], sizeof c->addrs[i], "127.0.0.1:%u",
             (unsigned)c->ports[i]);
    snprintf(c->ids[i], sizeof c->ids[i], "%u", i + 1);
}

/* Slot i's flags: the same for every node, plus --cluster-join 1 for a
 * node that joins the running cluster. */
static void node_flags(struct cluster *c, unsigned i, bool join)
{
    const char **a = c->args[i];
    size_t n = 0;
    a[n++] = "--node-id";
    a[n++] = c->ids[i];
    a[n++] = "--cluster-members";
    a[n++] = c->members;
    a[n++] = "--cluster-shard-count";
    a[n++] = SHARDS_ARG;
    /* Checkpoints during the load: WAL segments are released while a
     * node is down and while it catches up. */
    a[n++] = "--store-checkpoint-interval";
    a[n++] = "1s";
    a[n++] = "--wal-segment-bytes";
    a[n++] = "1MiB";
    if (join) {
        a[n++] = "--cluster-join";
        a[n++] = "1";
    }
    if (c->retain != NULL) {
        a[n++] = "--raft-retain-entries";
        a[n++] = c->retain;
    }
    assert_true(n <= sizeof c->args[i] / sizeof c->args[i][0]);
    proc_add_args(&c->p[i], a, n);
}

/* Fixes the ports and members, makes the certificates, and gives each
 * node its flags (node 3 its TLS: `node3_foreign` for the other CA's). */
static void cluster_configure(struct cluster *c, bool metrics,
                              bool node3_foreign)
{
    make_certificates(c);
    size_t at = 0;
    for (unsigned i = 0; i < NODES; i++) {
        node_address(c, i);
        at += (size_t)snprintf(c->members + at, sizeof c->members - at,
                               "%s%u@%s", i ? "," : "", i + 1, c->addrs[i]);
        assert_true(at < sizeof c->members);
    }
    for (unsigned i = 0; i < NODES; i++) {
        struct inboxd_proc *p = &c->p[i];
        node_flags(c, i, false);
        if (metrics) {
            uint16_t mp = proc_free_port();
            assert_true(mp != 0);
            snprintf(p->metrics, sizeof p->metrics, "127.0.0.1:%u",
                     (unsigned)mp);
        }
        int rc = i == 2 && node3_foreign
                     ? proc_set_tls(p, c->xca, c->xnode_crt, c->xnode_key,
                                    c->xadmin_crt, c->xadmin_key)
                     : proc_set_tls(p, c->ca, c->node_crt[i], c->node_key[i],
                                    c->admin_crt, c->admin_key);
        assert_int_equal(rc, 0);
    }
}

/* Node 4 (slot NODES), after cluster_configure: its own port, a node
 * certificate from the cluster's CA, and the same flags plus
 * --cluster-join 1 (cluster.members stays nodes 1..3). */
static void node4_configure(struct cluster *c)
{
    unsigned i = NODES;
    assert_int_equal(proc_init(&c->p[i], "n4"), 0);
    c->slots = i + 1;
    node_address(c, i);
    path_in(c->node_crt[i], c->tls, "n4.crt");
    path_in(c->node_key[i], c->tls, "n4.key");
    issue(c->ca, c->ca_key, c->node_crt[i], c->node_key[i], "n4",
          INBOX_ROLE_NODE);
    node_flags(c, i, true);
    assert_int_equal(proc_set_tls(&c->p[i], c->ca, c->node_crt[i],
                                  c->node_key[i], c->admin_crt, c->admin_key),
                     0);
}

static void cluster_logs(struct cluster *c)
{
    for (unsigned i = 0; i < c->slots; i++)
        proc_log_tail(&c->p[i], 25);
}

static void node_start(struct cluster *c, unsigned i)
{
    if (proc_start_at(&c->p[i], c->ports[i]) != 0) {
        cluster_logs(c);
        fail_msg("node %u did not start on port %u", i + 1,
                 (unsigned)c->ports[i]);
    }
}

static void cluster_start(struct cluster *c)
{
    for (unsigned i = 0; i < NODES; i++)
        node_start(c, i);
}

/* A libinbox client seeded with the nodes in `mask` (bit i: node i + 1). */
static struct inbox_client *cluster_client(struct cluster *c, unsigned mask,
                                           const char *ca, const char *crt,
                                           const char *key)
{
    const char *seeds[NODES_MAX];
    size_t n = 0;
    for (unsigned i = 0; i < c->slots; i++)
        if (mask & (1u << i))
            seeds[n++] = c->addrs[i];
    struct inbox_client_config cfg = {
        .seeds = seeds,
        .seeds_count = n,
        .ca_path = ca,
        .cert_path = crt,
        .key_path = key,
        .client_name = "test_cluster",
        .connect_timeout_ms = 3000,
        .backoff_min_ms = 20,
        .backoff_max_ms = 200,
    };
    struct inbox_client *cl = NULL;
    char why[512] = "";
    int rc = inbox_client_new(&cfg, &cl, why, sizeof why);
    if (rc != 0)
        fprintf(stderr, "inbox_client_new: %s: %s\n", inbox_err_name(rc), why);
    return cl;
}

/* ---- raw requests pinned to one node ------------------------------------- */

struct pinned {
    struct raw_client raw;
    uint64_t next_id;
    bool open;
};

static void pinned_close(struct pinned *pn)
{
    if (pn->open)
        raw_close(&pn->raw);
    pn->open = false;
}

static int pinned_open(struct pinned *pn, uint16_t port, const char *ca,
                       const char *crt, const char *key)
{
    pn->next_id = 2; /* raw_hello used 1 */
    int rc = raw_open(&pn->raw, port, ca, crt, key, RAW_MS);
    pn->open = true;
    if (rc == 0)
        rc = raw_hello(&pn->raw, RAW_MS);
    if (rc != 0)
        pinned_close(pn);
    return rc;
}

/* Sends m (its request id set here) and reads the answer to it into m.
 * 0, the negated ERROR code (message on stderr unless `quiet`), or another
 * failure. */
static int pinned_call(struct pinned *pn, struct inbox_msg *m, bool quiet)
{
    uint64_t id = pn->next_id++;
    m->hdr.version = 1;
    m->hdr.flags = 0;
    m->hdr.request_id = id;
    uint8_t op = m->hdr.opcode;
    int rc = raw_send(&pn->raw, m);
    if (rc != 0)
        return rc;
    for (;;) {
        rc = raw_recv(&pn->raw, m, RAW_MS);
        if (rc != 1)
            return rc == 0 ? INBOX_ESHUTDOWN : rc == -1 ? INBOX_ETIMEOUT : rc;
        if (m->hdr.request_id != id)
            continue; /* a push */
        if (m->hdr.flags & INBOX_FLAG_ERROR) {
            if (!quiet)
                fprintf(stderr, "%s: ERROR %u %.*s\n", inbox_op_name(op),
                        m->body.error.code, (int)m->body.error.message.len,
                        (const char *)m->body.error.message.ptr);
            return -(int)m->body.error.code;
        }
        return m->hdr.opcode == op ? 0 : INBOX_EPROTO;
    }
}

struct node_view {
    bool up;
    uint64_t node_id;
    struct inbox_shard_status shards[SHARDS];
};

/* STATUS of one node. 0 or an error. */
static int pinned_status(struct pinned *pn, struct node_view *v)
{
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.opcode = INBOX_OP_STATUS;
    int rc = pinned_call(pn, &m, false);
    if (rc != 0)
        return rc;
    memset(v, 0, sizeof *v);
    v->node_id = m.body.status_resp.node_id;
    struct inbox_iter it = m.body.status_resp.iter;
    struct inbox_shard_status s;
    size_t n = 0;
    while (inbox_next_shard_status(&it, &s)) {
        if (s.shard >= SHARDS)
            return INBOX_EPROTO;
        v->shards[s.shard] = s;
        n++;
    }
    if (n != SHARDS)
        return INBOX_EPROTO;
    v->up = true;
    return 0;
}

/* STATUS of every node in `mask`, over fresh connections with the main
 * CA. A node that does not answer is left !up. */
static void cluster_views(struct cluster *c, unsigned mask,
                          struct node_view v[NODES_MAX])
{
    for (unsigned i = 0; i < NODES_MAX; i++) {
        memset(&v[i], 0, sizeof v[i]);
        if (!(mask & (1u << i)) || i >= c->slots || c->p[i].pid == 0)
            continue;
        struct pinned *pn = calloc(1, sizeof *pn);
        assert_non_null(pn);
        if (pinned_open(pn, c->ports[i], c->p[i].ca, c->p[i].admin_crt,
                        c->p[i].admin_key) == 0)
            (void)pinned_status(pn, &v[i]);
        pinned_close(pn);
        free(pn);
    }
}

/* Every shard has one leader that every node in `mask` names and that
 * says it leads. */
static bool leaders_agree(struct node_view v[NODES_MAX], unsigned mask,
                          uint64_t leaders[SHARDS])
{
    for (uint32_t s = 0; s < SHARDS; s++) {
        uint64_t l = 0;
        for (unsigned i = 0; i < NODES_MAX; i++) {
            if (!(mask & (1u << i)))
                continue;
            if (!v[i].up || v[i].shards[s].leader_id == 0)
                return false;
            if (l == 0)
                l = v[i].shards[s].leader_id;
            if (v[i].shards[s].leader_id != l)
                return false;
        }
        if (l == 0 || l > NODES_MAX || !(mask & (1u << (l - 1))) ||
            v[l - 1].shards[s].role != INBOX_REPLICA_LEADER)
            return false;
        leaders[s] = l;
    }
    return true;
}

/* Waits (bounded) until every shard has a leader the nodes of `mask` agree
 * on. Returns how long it took. */
static uint64_t cluster_wait_leaders(struct cluster *c, unsigned mask,
                                     uint64_t leaders[SHARDS])
{
    struct node_view v[NODES_MAX];
    uint64_t t0 = proc_now_ms(), end = t0 + LEADERS_WAIT_MS;
    for (;;) {
        cluster_views(c, mask, v);
        if (leaders_agree(v, mask, leaders))
            return proc_now_ms() - t0;
        if (proc_now_ms() >= end)
            break;
        proc_sleep_ms(50);
    }
    cluster_logs(c);
    for (unsigned i = 0; i < NODES_MAX; i++)
        for (uint32_t s = 0; v[i].up && s < SHARDS; s++)
            fprintf(stderr,
                    "node %u shard %u: role %u leader %" PRIu64 " term %" PRIu64
                    " applied %" PRIu64 "\n",
                    i + 1, s, v[i].shards[s].role, v[i].shards[s].leader_id,
                    v[i].shards[s].term, v[i].shards[s].applied_index);
    fail_msg("no agreed leader for every shard after %d ms", LEADERS_WAIT_MS);
    return 0;
}

/* The lowest node slot in `mask` (mask != 0). */
static unsigned mask_first(unsigned mask)
{
    unsigned i = 0;
    while (!(mask & (1u << i)))
        i++;
    return i;
}

/* Waits (bounded) until every node of `mask` applied the same index in
 * every shard, so a stale read on any of them sees all there is. */
static void cluster_wait_applied(struct cluster *c, unsigned mask)
{
    struct node_view v[NODES_MAX];
    unsigned f = mask_first(mask);
    uint64_t t0 = proc_now_ms(), end = t0 + APPLIED_WAIT_MS;
    for (;;) {
        cluster_views(c, mask, v);
        bool same = true;
        for (unsigned i = 0; i < NODES_MAX; i++)
            same = same && (!(mask & (1u << i)) || v[i].up);
        for (uint32_t s = 0; same && s < SHARDS; s++)
            for (unsigned i = f + 1; i < NODES_MAX; i++)
                same = same && (!(mask & (1u << i)) ||
                                v[i].shards[s].applied_index ==
                                    v[f].shards[s].applied_index);
        if (same) {
            print_message("    every node applied the same indexes after "
                          "%" PRIu64 " ms\n",
                          proc_now_ms() - t0);
            return;
        }
        if (proc_now_ms() >= end)
            break;
        proc_sleep_ms(50);
    }
    cluster_logs(c);
    for (uint32_t s = 0; s < SHARDS; s++) {
        fprintf(stderr, "shard %u applied:", s);
        for (unsigned i = 0; i < NODES_MAX; i++)
            if (mask & (1u << i))
                fprintf(stderr, " node %u %s%" PRIu64, i + 1,
                        v[i].up ? "" : "(down) ", v[i].shards[s].applied_index);
        fputc('\n', stderr);
    }
    fail_msg("nodes did not converge on one applied index in %d ms",
             APPLIED_WAIT_MS);
}

/* ---- the load --------------------------------------------------------------
 */

struct op {
    struct writer *w;
    uint32_t inbox;
    uint8_t state;
    bool dedup;
    int status;
    uint64_t seq;
    uint64_t submit_ms;
    uint32_t found; /* per verified node */
    uint64_t found_seq;
};

struct writer {
    pthread_t th;
    bool started;
    uint32_t id;
    struct load *l;
    struct op *ops;
    size_t ops_count;
    size_t inflight;
    uint64_t rng;
    int setup_rc;
    atomic_size_t acked;
};

struct load {
    struct cluster *c;
    struct writer w[WRITERS];
    atomic_bool stop;
    atomic_uint drain_ms;
    /* Failover watch: the shard whose leader is killed, when, and when the
     * first enqueue to it submitted after the kill was acknowledged. */
    atomic_uint watch_shard;
    atomic_uint_least64_t kill_ms;
    atomic_uint_least64_t resumed_ms;
};

static void enqueue_done(void *arg, int status, uint64_t seq, bool dedup,
                         const uint8_t *msg_id)
{
    (void)msg_id;
    struct op *op = arg;
    struct load *l = op->w->l;
    op->status = status;
    op->state = status == 0 ? OP_ACKED : OP_FAILED;
    op->seq = status == 0 ? seq : 0;
    op->dedup = dedup;
    op->w->inflight--;
    if (status != 0)
        return;
    atomic_fetch_add(&op->w->acked, 1);
    uint64_t kill = atomic_load(&l->kill_ms);
    if (kill != 0 && op->submit_ms > kill &&
        inbox_shards[op->inbox] == atomic_load(&l->watch_shard)) {
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&l->resumed_ms, &zero, proc_now_ms());
    }
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct cluster *c = w->l->c;
    struct inbox_client *cl = cluster_client(c, (1u << NODES) - 1u, c->ca,
                                             c->admin_crt, c->admin_key);
    if (cl == NULL) {
        w->setup_rc = -1;
        return NULL;
    }
    uint8_t payload[PAYLOAD_BYTES_MAX], id[INBOX_MSG_ID_BYTES];
    while (!atomic_load(&w->l->stop)) {
        while (w->inflight < DEPTH && w->ops_count < OPS_MAX) {
            uint32_t n = (uint32_t)w->ops_count;
            struct op *op = &w->ops[n];
            op->w = w;
            uint64_t r = rng_next(&w->rng);
            op->inbox = r % 4u != 0 ? (uint32_t)((r >> 8) % HOT)
                                    : HOT + (uint32_t)((r >> 8) % COLD);
            msg_id_make(id, w->id, n);
            size_t len = payload_make(payload, w->id, n);
            const char *ib = inbox_names[op->inbox];
            op->state = OP_INFLIGHT;
            op->submit_ms = proc_now_ms();
            int rc =
                inbox_client_submit_enqueue(cl, ib, strlen(ib), id, 0, payload,
                                            len, CALL_MS, op, enqueue_done);
            if (rc != 0) {
                op->state = OP_UNSENT;
                break;
            }
            w->ops_count++;
            w->inflight++;
        }
        inbox_client_poll(cl, 10);
    }
    /* Let what is in flight finish (bounded); the rest completes with
     * SHUTDOWN in inbox_client_free: outcome unknown. */
    uint64_t end = proc_now_ms() + atomic_load(&w->l->drain_ms);
    while (w->inflight > 0 && proc_now_ms() < end)
        inbox_client_poll(cl, 10);
    inbox_client_free(cl);
    return NULL;
}

static struct load *load_start(struct cluster *c, uint64_t seed)
{
    struct load *l = calloc(1, sizeof *l);
    assert_non_null(l);
    c->load = l;
    l->c = c;
    atomic_init(&l->stop, false);
    atomic_init(&l->drain_ms, CALL_MS + 2000u);
    atomic_init(&l->watch_shard, UINT32_MAX);
    atomic_init(&l->kill_ms, 0);
    atomic_init(&l->resumed_ms, 0);
    for (uint32_t i = 0; i < WRITERS; i++) {
        struct writer *w = &l->w[i];
        w->id = i;
        w->l = l;
        w->rng = (seed + i * 0x9E3779B97F4A7C15ull) | 1u;
        atomic_init(&w->acked, 0);
        w->ops = calloc(OPS_MAX, sizeof *w->ops);
        assert_non_null(w->ops);
    }
    for (uint32_t i = 0; i < WRITERS; i++) {
        if (pthread_create(&l->w[i].th, NULL, writer_main, &l->w[i]) != 0)
            fail_msg("pthread_create failed");
        l->w[i].started = true;
    }
    return l;
}

static size_t load_acked(struct load *l)
{
    size_t n = 0;
    for (uint32_t i = 0; i < WRITERS; i++)
        n += atomic_load(&l->w[i].acked);
    return n;
}

/* Waits (bounded) until `more` acks beyond `base`, and at least ms_min. */
static void load_wait_acks(struct load *l, size_t base, size_t more,
                           uint64_t ms_min)
{
    uint64_t t0 = proc_now_ms(), end = t0 + LOAD_WAIT_MS;
    while (load_acked(l) < base + more || proc_now_ms() - t0 < ms_min) {
        if (proc_now_ms() >= end) {
            cluster_logs(l->c);
            fail_msg("only %zu of %zu enqueues acknowledged in %d ms",
                     load_acked(l) - base, more, LOAD_WAIT_MS);
        }
        proc_sleep_ms(10);
    }
}

/* Stops and joins the writers (idempotent). */
static void load_stop(struct load *l, unsigned drain_ms)
{
    atomic_store(&l->drain_ms, drain_ms);
    atomic_store(&l->stop, true);
    for (uint32_t i = 0; i < WRITERS; i++) {
        if (l->w[i].started)
            pthread_join(l->w[i].th, NULL);
        l->w[i].started = false;
    }
}

static void load_free(struct load *l)
{
    for (uint32_t i = 0; i < WRITERS; i++)
        free(l->w[i].ops);
    free(l);
}

static void load_summary(struct load *l, const char *when)
{
    size_t sent = 0, acked = 0, dedup = 0, failed = 0;
    for (uint32_t i = 0; i < WRITERS; i++) {
        assert_int_equal(l->w[i].setup_rc, 0);
        sent += l->w[i].ops_count;
        for (size_t j = 0; j < l->w[i].ops_count; j++) {
            acked += l->w[i].ops[j].state == OP_ACKED;
            dedup += l->w[i].ops[j].state == OP_ACKED && l->w[i].ops[j].dedup;
            failed += l->w[i].ops[j].state != OP_ACKED;
        }
    }
    print_message("    %s: %zu enqueues sent, %zu acknowledged (%zu as "
                  "dedup), %zu failed or unknown\n",
                  when, sent, acked, dedup, failed);
}

/* ---- the head-to-toe check ------------------------------------------------
 */

/* What one node holds in one inbox: the msg ids by seq. */
struct inbox_view {
    uint64_t last_seq;
    uint8_t (*ids)[INBOX_MSG_ID_BYTES]; /* [seq - 1] */
};

struct verify {
    struct inbox_view v[NODES_MAX][INBOXES];
    size_t stale_answers;
};

static void verify_free(struct verify *vf)
{
    if (vf == NULL)
        return;
    for (unsigned i = 0; i < NODES_MAX; i++)
        for (uint32_t b = 0; b < INBOXES; b++)
            free(vf->v[i][b].ids);
    free(vf);
}

static struct op *op_lookup(struct load *l, const uint8_t *msg_id,
                            uint32_t *writer, uint32_t *n)
{
    if (!msg_id_parse(msg_id, writer, n) || *writer >= WRITERS)
        return NULL;
    struct writer *w = &l->w[*writer];
    return *n < w->ops_count ? &w->ops[*n] : NULL;
}

/* One message of a node's inbox, against what the writers saw. */
static void verify_message(struct load *l, uint32_t b,
                           const struct inbox_message *m, unsigned node)
{
    uint32_t wi = 0, n = 0;
    struct op *op = op_lookup(l, m->msg_id, &wi, &n);
    const char *name = inbox_names[b];
    if (op == NULL)
        fail_msg("node %u %s seq %" PRIu64 ": a msg id nobody sent", node, name,
                 m->seq);
    if (op->inbox != b)
        fail_msg("node %u %s seq %" PRIu64 ": a message for %s", node, name,
                 m->seq, inbox_names[op->inbox]);
    uint8_t payload[PAYLOAD_BYTES_MAX];
    size_t len = payload_make(payload, wi, n);
    if (m->payload.len != len || memcmp(m->payload.ptr, payload, len) != 0)
        fail_msg("node %u %s seq %" PRIu64 ": payload differs", node, name,
                 m->seq);
    op->found++;
    if (op->found > 1)
        fail_msg("node %u %s: msg id (w%u, %u) stored at seq %" PRIu64
                 " and %" PRIu64,
                 node, name, wi, n, op->found_seq, m->seq);
    op->found_seq = m->seq;
}

/* Reads one inbox whole from one node with STALE_OK. */
static void verify_inbox(struct load *l, struct verify *vf, struct pinned *pn,
                         unsigned node, uint32_t b)
{
    struct inbox_view *iv = &vf->v[node - 1][b];
    const char *name = inbox_names[b];
    uint64_t after = 0;
    for (;;) {
        struct inbox_msg m;
        memset(&m, 0, sizeof m);
        m.hdr.opcode = INBOX_OP_FETCH;
        m.body.fetch_req.inbox.ptr = (const uint8_t *)name;
        m.body.fetch_req.inbox.len = (uint32_t)strlen(name);
        m.body.fetch_req.after_seq = after;
        m.body.fetch_req.messages_max = INBOX_FETCH_MESSAGES_MAX;
        m.body.fetch_req.flags = INBOX_FETCH_STALE_OK;
        int rc = pinned_call(pn, &m, false);
        if (rc != 0)
            fail_msg("node %u: FETCH %s after %" PRIu64 " STALE_OK: %s", node,
                     name, after, inbox_err_name(rc));
        const struct inbox_fetch_resp *r = &m.body.fetch_resp;
        vf->stale_answers += r->stale;
        assert_int_equal(r->acked_seq, 0);
        if (after == 0) {
            iv->last_seq = r->last_seq;
            iv->ids = calloc(r->last_seq + 1, INBOX_MSG_ID_BYTES);
            assert_non_null(iv->ids);
        } else if (r->last_seq != iv->last_seq) {
            fail_msg("node %u %s: last seq moved from %" PRIu64 " to %" PRIu64
                     " while nothing was written",
                     node, name, iv->last_seq, r->last_seq);
        }
        struct inbox_iter it = r->iter;
        struct inbox_message msg;
        while (inbox_next_message(&it, &msg)) {
            if (msg.seq != after + 1)
                fail_msg("node %u %s: seq %" PRIu64 " after %" PRIu64 ": a gap",
                         node, name, msg.seq, after);
            if (msg.seq > iv->last_seq)
                fail_msg("node %u %s: seq %" PRIu64 " past last seq %" PRIu64,
                         node, name, msg.seq, iv->last_seq);
            after = msg.seq;
            verify_message(l, b, &msg, node);
            memcpy(iv->ids[msg.seq - 1], msg.msg_id, INBOX_MSG_ID_BYTES);
        }
        if (r->count == 0 || after >= iv->last_seq)
            break;
    }
    if (after != iv->last_seq)
        fail_msg("node %u %s: read up to seq %" PRIu64 ", last seq %" PRIu64,
                 node, name, after, iv->last_seq);
}

/* Every acknowledged op found once at its seq; unknown ones at most once. */
static void verify_ops(struct load *l, unsigned node, size_t *acked_out,
                       size_t *unknown_out, size_t *unknown_found_out)
{
    size_t acked = 0, unknown = 0, unknown_found = 0;
    for (uint32_t wi = 0; wi < WRITERS; wi++) {
        struct writer *w = &l->w[wi];
        for (size_t i = 0; i < w->ops_count; i++) {
            struct op *op = &w->ops[i];
            if (op->state == OP_ACKED) {
                acked++;
                if (op->found != 1 || op->found_seq != op->seq)
                    fail_msg("node %u: acknowledged enqueue (w%u, %zu) to %s "
                             "at seq %" PRIu64 ": found %u times (at %" PRIu64
                             ")",
                             node, wi, i, inbox_names[op->inbox], op->seq,
                             op->found, op->found_seq);
            } else {
                unknown++;
                unknown_found += op->found;
            }
            op->found = 0;
            op->found_seq = 0;
        }
    }
    *acked_out = acked;
    *unknown_out = unknown;
    *unknown_found_out = unknown_found;
}

/* The check, on every node of `mask`, once all applied the same indexes;
 * then those nodes must hold identical inboxes. Returns the views (kept in
 * c->vf, freed by the teardown or the next check; v[i] for node i + 1) for
 * the next seqs. */
static struct verify *cluster_verify(struct cluster *c, struct load *l,
                                     unsigned mask)
{
    cluster_wait_applied(c, mask);
    verify_free(c->vf);
    struct verify *vf = calloc(1, sizeof *vf);
    assert_non_null(vf);
    c->vf = vf;
    if (c->pn == NULL)
        c->pn = calloc(1, sizeof *c->pn);
    struct pinned *pn = c->pn;
    assert_non_null(pn);
    for (unsigned i = 0; i < NODES_MAX; i++) {
        if (!(mask & (1u << i)))
            continue;
        int rc =
            pinned_open(pn, c->ports[i], c->ca, c->admin_crt, c->admin_key);
        if (rc != 0) {
            fail_msg("node %u: cannot connect: %s", i + 1, inbox_err_name(rc));
        }
        for (uint32_t b = 0; b < INBOXES; b++)
            verify_inbox(l, vf, pn, i + 1, b);
        pinned_close(pn);
        size_t acked = 0, unknown = 0, unknown_found = 0;
        verify_ops(l, i + 1, &acked, &unknown, &unknown_found);
        uint64_t msgs = 0;
        for (uint32_t b = 0; b < INBOXES; b++)
            msgs += vf->v[i][b].last_seq;
        print_message("    node %u: %" PRIu64 " messages; %zu acknowledged "
                      "present once at their seqs; %zu unknown outcomes, %zu "
                      "of them stored\n",
                      i + 1, msgs, acked, unknown, unknown_found);
    }
    unsigned f = mask_first(mask);
    for (unsigned i = f + 1; i < NODES_MAX; i++)
        for (uint32_t b = 0; mask & (1u << i) && b < INBOXES; b++) {
            const struct inbox_view *a = &vf->v[f][b], *o = &vf->v[i][b];
            if (a->last_seq != o->last_seq ||
                memcmp(a->ids, o->ids, a->last_seq * INBOX_MSG_ID_BYTES) != 0)
                fail_msg("%s differs between node %u (last seq %" PRIu64
                         ") and node %u (%" PRIu64 ")",
                         inbox_names[b], f + 1, a->last_seq, i + 1,
                         o->last_seq);
        }
    /* Followers answered: the reads were served where they were sent. */
    print_message("    %zu of the FETCH answers were stale (a follower's)\n",
                  vf->stale_answers);
    assert_true(vf->stale_answers > 0);
    return vf;
}

/* ---- finding a shard's leader ---------------------------------------------
 */

/* `inboxctl route INBOX --json` → the inbox's leader id, 0 unknown. */
static uint64_t leader_by_inboxctl(struct cluster *c, const char *inbox)
{
    char cmd[4 * PROC_PATH_BYTES];
    int n = snprintf(cmd, sizeof cmd,
                     "'%s' route '%s' --json --addr %s --addr %s --addr %s "
                     "--ca '%s' --cert '%s' --key '%s' --timeout 5000",
                     inboxctl_bin, inbox, c->addrs[0], c->addrs[1], c->addrs[2],
                     c->ca, c->admin_crt, c->admin_key);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char out[8192];
    size_t len = fread(out, 1, sizeof out - 1, f);
    out[len] = '\0';
    int st = pclose(f);
    if (st != 0) {
        fprintf(stderr, "inboxctl route: status %d: %s\n", st, out);
        return 0;
    }
    const char *p = strstr(out, "\"inboxes\"");
    p = p ? strstr(p, "\"leader_id\"") : NULL;
    p = p ? strchr(p, ':') : NULL;
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* The ROUTE op through libinbox. */
static uint64_t leader_by_route(struct inbox_client *cl, uint32_t shard)
{
    uint64_t epoch = 0;
    if (inbox_route(cl, &epoch, 3000) != 0)
        return 0;
    return inbox_client_shard_leader(cl, shard);
}

static uint64_t find_leader(struct cluster *c, struct inbox_client *cl,
                            uint32_t b)
{
    uint64_t end = proc_now_ms() + LEADERS_WAIT_MS;
    while (proc_now_ms() < end) {
        uint64_t id = inboxctl_bin != NULL
                          ? leader_by_inboxctl(c, inbox_names[b])
                          : leader_by_route(cl, inbox_shards[b]);
        if (id >= 1 && id <= NODES_MAX)
            return id;
        proc_sleep_ms(50);
    }
    fail_msg("no leader for %s's shard in %d ms", inbox_names[b],
             LEADERS_WAIT_MS);
    return 0;
}

/* ---- 1. kill -9 of a leader under load ------------------------------------
 */

static void test_leader_kill9(void **state)
{
    struct cluster *c = *state;
    cluster_configure(c, false, false);
    cluster_start(c);
    uint64_t leaders[SHARDS];
    print_message("    leaders elected in %" PRIu64 " ms\n",
                  cluster_wait_leaders(c, (1u << NODES) - 1u, leaders));
    struct load *l = load_start(c, proc_now_ms());
    load_wait_acks(l, 0, LOAD_ACKED_MIN, LOAD_MS_MIN);

    /* Kill the leader of hot-0's shard. */
    struct inbox_client *cl = cluster_client(c, (1u << NODES) - 1u, c->ca,
                                             c->admin_crt, c->admin_key);
    assert_non_null(cl);
    uint64_t victim = find_leader(c, cl, 0);
    inbox_client_free(cl);
    atomic_store(&l->watch_shard, inbox_shards[0]);
    uint64_t kill_ms = proc_now_ms();
    atomic_store(&l->kill_ms, kill_ms);
    proc_kill9(&c->p[victim - 1]);
    size_t acked_at_kill = load_acked(l);
    print_message("    killed node %" PRIu64 " (leader of shard %u, %s) with "
                  "%zu acknowledged\n",
                  victim, inbox_shards[0], inbox_names[0], acked_at_kill);

    /* Writes to that shard resume: an enqueue submitted after the kill is
     * acknowledged, by a new leader. */
    uint64_t end = kill_ms + RESUME_WAIT_MS;
    while (atomic_load(&l->resumed_ms) == 0 && proc_now_ms() < end)
        proc_sleep_ms(5);
    uint64_t resumed = atomic_load(&l->resumed_ms);
    if (resumed == 0) {
        cluster_logs(c);
        fail_msg("no enqueue to shard %u acknowledged in %d ms after the "
                 "kill",
                 inbox_shards[0], RESUME_WAIT_MS);
    }
    uint64_t gap = resumed - kill_ms;
    print_message("    writes to shard %u resumed %" PRIu64 " ms after the "
                  "kill\n",
                  inbox_shards[0], gap);
    if (gap >= RESUME_MS_MAX)
        fail_msg("writes resumed only after %" PRIu64 " ms", gap);

    /* The killed node comes back on its port and data directory and
     * catches up while the load goes on. */
    node_start(c, (unsigned)victim - 1);
    load_wait_acks(l, load_acked(l), LOAD_ACKED_MIN, 500);
    load_stop(l, CALL_MS + 2000u);
    load_summary(l, "load stopped");

    cluster_verify(c, l, ALL3);
    for (unsigned i = 0; i < NODES; i++)
        assert_int_equal(proc_stop(&c->p[i], STOP_MS), 0);
    c->passed = true;
}

/* ---- 2. kill -9 of every node at once --------------------------------------
 */

static void test_all_kill9(void **state)
{
    struct cluster *c = *state;
    cluster_configure(c, false, false);
    cluster_start(c);
    uint64_t leaders[SHARDS];
    cluster_wait_leaders(c, (1u << NODES) - 1u, leaders);
    struct load *l = load_start(c, proc_now_ms() ^ 0x5bd1e995u);
    load_wait_acks(l, 0, LOAD_ACKED_MIN, LOAD_MS_MIN);
    for (unsigned i = 0; i < NODES; i++)
        proc_kill9(&c->p[i]);
    /* Answers sent before the kill may still sit in the sockets: read
     * them; the rest is unknown. */
    load_stop(l, 500);
    load_summary(l, "all nodes killed");

    uint64_t t0 = proc_now_ms();
    cluster_start(c);
    cluster_wait_leaders(c, (1u << NODES) - 1u, leaders);
    print_message("    restarted; a leader for every shard after %" PRIu64
                  " ms\n",
                  proc_now_ms() - t0);
    struct verify *vf = cluster_verify(c, l, ALL3);

    /* And it takes new writes, each at the next seq of its inbox. */
    struct inbox_client *cl = cluster_client(c, (1u << NODES) - 1u, c->ca,
                                             c->admin_crt, c->admin_key);
    assert_non_null(cl);
    for (uint32_t b = 0; b < INBOXES; b += 7) {
        uint64_t seq = 0;
        bool dedup = true;
        int rc = inbox_enqueue(cl, inbox_names[b], strlen(inbox_names[b]), NULL,
                               0, "after", 5, &seq, &dedup, NULL, CALL_MS);
        if (rc != 0) {
            inbox_client_free(cl);
            fail_msg("enqueue to %s after the restart: %s", inbox_names[b],
                     inbox_err_name(rc));
        }
        assert_false(dedup);
        assert_int_equal(seq, vf->v[0][b].last_seq + 1);
    }
    inbox_client_free(cl);
    for (unsigned i = 0; i < NODES; i++)
        assert_int_equal(proc_stop(&c->p[i], STOP_MS), 0);
    c->passed = true;
}

/* ---- 3. a node with another CA's certificate ----------------------------- */

/* GET /metrics from 127.0.0.1:port; the value of counter `name`, or -1. */
static int64_t metric(const char *addr, const char *name)
{
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int64_t value = -1;
    static char buf[1 << 20];
    size_t len = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        goto out;
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)sizeof req - 1)
        goto out;
    uint64_t end = proc_now_ms() + RAW_MS;
    while (len < sizeof buf - 1 && proc_now_ms() < end) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) != 1)
            continue;
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    size_t nl = strlen(name);
    for (const char *p = strstr(buf, name); p != NULL;
         p = strstr(p + 1, name)) {
        if (p > buf && p[-1] == '\n' && (p[nl] == ' ' || p[nl] == '{')) {
            const char *v = strchr(p + nl, ' ');
            value = v ? strtoll(v + 1, NULL, 10) : -1;
            break;
        }
    }
out:
    close(fd);
    return value;
}

/* Whether a line of p's log holds all three strings. */
static bool log_has(const struct inboxd_proc *p, const char *a, const char *b,
                    const char *d)
{
    FILE *f = fopen(p->log, "r");
    if (f == NULL)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, a) != NULL && strstr(line, b) != NULL &&
                strstr(line, d) != NULL;
    fclose(f);
    return found;
}

/* Waits (bounded) until node i logs that its link to `peer` failed TLS
 * verification. */
static void wait_link_untrusted(struct cluster *c, unsigned i, unsigned peer)
{
    char who[16];
    snprintf(who, sizeof who, "peer=%u ", peer);
    uint64_t end = proc_now_ms() + LOG_WAIT_MS;
    while (
        !log_has(&c->p[i], "msg=\"peer link failed\"", who, "TLS_UNTRUSTED")) {
        if (proc_now_ms() >= end) {
            cluster_logs(c);
            fail_msg("node %u never logged that its link to node %u failed "
                     "with TLS_UNTRUSTED",
                     i + 1, peer);
        }
        proc_sleep_ms(50);
    }
}

static void test_foreign_ca(void **state)
{
    struct cluster *c = *state;
    cluster_configure(c, true, true);
    cluster_start(c);
    /* Nodes 1 and 2 are a quorum: a leader for every shard, one of them. */
    uint64_t leaders[SHARDS];
    print_message("    nodes 1 and 2 elected every leader in %" PRIu64 " ms\n",
                  cluster_wait_leaders(c, 3u, leaders));

    struct inbox_client *cl =
        cluster_client(c, 3u, c->ca, c->admin_crt, c->admin_key);
    assert_non_null(cl);
    for (uint32_t b = 0; b < INBOXES; b += 5) {
        uint64_t seq = 0;
        int rc = inbox_enqueue(cl, inbox_names[b], strlen(inbox_names[b]), NULL,
                               0, "quorum", 6, &seq, NULL, NULL, CALL_MS);
        if (rc != 0) {
            inbox_client_free(cl);
            cluster_logs(c);
            fail_msg("enqueue to %s with node 3 out: %s", inbox_names[b],
                     inbox_err_name(rc));
        }
        assert_int_equal(seq, 1);
    }
    inbox_client_free(cl);

    /* Both directions are refused by TLS: nodes 1 and 2 do not trust node
     * 3's certificate on their links to it, nor node 3 theirs. (Node 3's
     * links to them fail on the client side, before node 3 shows its own
     * certificate, so the listeners of 1 and 2 have nothing to log.) */
    /* Only a node that leads some shard sends to node 3 (heartbeats), and
     * one of 1 and 2 may lead them all: at least one of them must have
     * logged it. */
    uint64_t end = proc_now_ms() + LOG_WAIT_MS;
    while (!log_has(&c->p[0], "msg=\"peer link failed\"", "peer=3 ",
                    "TLS_UNTRUSTED") &&
           !log_has(&c->p[1], "msg=\"peer link failed\"", "peer=3 ",
                    "TLS_UNTRUSTED")) {
        if (proc_now_ms() >= end) {
            cluster_logs(c);
            fail_msg("neither node 1 nor node 2 logged that its link to node "
                     "3 failed with TLS_UNTRUSTED");
        }
        proc_sleep_ms(50);
    }
    wait_link_untrusted(c, 2, 1);
    wait_link_untrusted(c, 2, 2);

    /* Node 3 learned nothing: no Raft message ever reached its node (yet
     * it sent its own: pre-votes), no link of its got past HELLO, and
     * nodes 1 and 2 each have one link up, to each other. */
    const char *in = "inbox_node_peer_msgs_in_total";
    int64_t in1 = metric(c->p[0].metrics, in);
    int64_t in2 = metric(c->p[1].metrics, in);
    int64_t in3 = metric(c->p[2].metrics, in);
    int64_t out3 = metric(c->p[2].metrics, "inbox_node_peer_msgs_out_total");
    int64_t conn3 = metric(c->p[2].metrics, "inbox_peer_connects_total");
    int64_t fail3 =
        metric(c->p[2].metrics, "inbox_peer_connect_failures_total");
    int64_t up1 = metric(c->p[0].metrics, "inbox_peer_links_connected");
    int64_t up2 = metric(c->p[1].metrics, "inbox_peer_links_connected");
    print_message("    raft messages in: node 1 %" PRId64 ", node 2 %" PRId64
                  ", node 3 %" PRId64 " (node 3 sent %" PRId64
                  "); node 3 links: %" PRId64 " connected, %" PRId64
                  " failed; links up: node 1 %" PRId64 ", node 2 %" PRId64 "\n",
                  in1, in2, in3, out3, conn3, fail3, up1, up2);
    assert_int_equal(in3, 0);
    assert_true(out3 > 0);
    assert_int_equal(conn3, 0);
    assert_true(fail3 > 0);
    assert_true(in1 > 0);
    assert_true(in2 > 0);
    assert_int_equal(up1, 1);
    assert_int_equal(up2, 1);
    struct pinned *pn = calloc(1, sizeof *pn);
    assert_non_null(pn);
    struct node_view v3;
    int rc = pinned_open(pn, c->ports[2], c->xca, c->xadmin_crt, c->xadmin_key);
    if (rc == 0)
        rc = pinned_status(pn, &v3);
    pinned_close(pn);
    free(pn);
    assert_int_equal(rc, 0);
    uint64_t term3 = 0;
    for (uint32_t s = 0; s < SHARDS; s++) {
        assert_int_equal(v3.shards[s].leader_id, 0);
        assert_int_equal(v3.shards[s].applied_index, 0);
        assert_int_not_equal(v3.shards[s].role, INBOX_REPLICA_LEADER);
        if (v3.shards[s].term > term3)
            term3 = v3.shards[s].term;
    }
    /* Nodes 1 and 2 still lead every shard between them, as before. */
    struct node_view v[NODES_MAX];
    cluster_views(c, 3u, v);
    assert_true(leaders_agree(v, 3u, leaders));
    print_message("    node 3: no leader, nothing applied, highest term "
                  "%" PRIu64 " (pre-vote keeps a cut-off node's term)\n",
                  term3);
    for (unsigned i = 0; i < NODES; i++)
        assert_int_equal(proc_stop(&c->p[i], STOP_MS), 0);
    c->passed = true;
}

/* ---- 4. a node joins under load, another leaves ---------------------------
 */

#define CLI_OUT_BYTES 65536u
#define STATUS_WAIT_MS 10000 /* cluster status shows what it must */

/* Runs `inboxctl ARGS --addr ... (the nodes of `mask`) --ca --cert --key`
 * (the admin) and returns its exit code (-1: it did not exit), its stdout
 * in out. Its stderr goes to ours. */
static int inboxctl_run(struct cluster *c, unsigned mask, const char *args,
                        char *out, size_t cap)
{
    char cmd[8 * PROC_PATH_BYTES];
    int n = snprintf(cmd, sizeof cmd, "'%s' %s", inboxctl_bin, args);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    for (unsigned i = 0; i < NODES_MAX; i++)
        if (mask & (1u << i)) {
            n += snprintf(cmd + n, sizeof cmd - (size_t)n, " --addr %s",
                          c->addrs[i]);
            assert_true((size_t)n < sizeof cmd);
        }
    n += snprintf(cmd + n, sizeof cmd - (size_t)n,
                  " --ca '%s' --cert '%s' --key '%s' --timeout 5000", c->ca,
                  c->admin_crt, c->admin_key);
    assert_true((size_t)n < sizeof cmd);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t len = 0;
    for (;;) {
        size_t r = fread(out + len, 1, cap - 1 - len, f);
        len += r;
        if (r == 0 || len == cap - 1)
            break;
    }
    out[len] = '\0';
    if (len == cap - 1) { /* keep the tail: that is what is checked */
        char sink[4096];
        while (fread(sink, 1, sizeof sink, f) > 0) {
        }
    }
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Asserts that an inboxctl run exited 0 and that its last line starts
 * with `want`. */
static void cli_expect(struct cluster *c, const char *what, int code,
                       const char *out, const char *want)
{
    size_t len = strlen(out);
    while (len > 0 && out[len - 1] == '\n')
        len--;
    size_t at = len;
    while (at > 0 && out[at - 1] != '\n')
        at--;
    bool ends =
        len - at >= strlen(want) && strncmp(out + at, want, strlen(want)) == 0;
    if (code != 0 || !ends) {
        cluster_logs(c);
        fprintf(stderr, "---- inboxctl %s: output ----\n%s---- end ----\n",
                what, out);
        fail_msg("inboxctl %s: exit %d (expected exit 0 and a last line "
                 "starting with \"%s\")",
                 what, code, want);
    }
}

/* The unsigned number after `"key":` at or after p, and where it ends
 * (NULL: not found). */
static const char *json_u64(const char *p, const char *key, uint64_t *v)
{
    char k[48];
    snprintf(k, sizeof k, "\"%s\":", key);
    p = strstr(p, k);
    if (p == NULL)
        return NULL;
    char *end = NULL;
    *v = strtoull(p + strlen(k), &end, 10);
    return end;
}

/* Whether `inboxctl cluster status --json` (seeded with `seeds`) exited 0
 * and lists exactly the nodes of `expect`, every one reachable, and every
 * shard with a leader among them. The output stays in out. */
static bool status_shows(struct cluster *c, unsigned seeds, unsigned expect,
                         char *out, size_t cap)
{
    if (inboxctl_run(c, seeds, "cluster status --json", out, cap) != 0)
        return false;
    uint64_t v = 0;
    const char *p = json_u64(out, "shard_count", &v);
    if (p == NULL || v != SHARDS)
        return false;
    p = json_u64(p, "leaderless_shards", &v);
    if (p == NULL || v != 0)
        return false;
    const char *shards = strstr(p, "\"shards\":[");
    if (shards == NULL)
        return false;
    /* The nodes: each {"node_id":N,"addr":..,"reachable":true,...}. */
    unsigned seen = 0;
    for (;;) {
        const char *q = json_u64(p, "node_id", &v);
        if (q == NULL || q > shards)
            break;
        const char *close = strchr(q, '}');
        const char *up = strstr(q, "\"reachable\":true");
        if (v < 1 || v > NODES_MAX || up == NULL || up > close ||
            (seen & (1u << (v - 1))))
            return false;
        seen |= 1u << (v - 1);
        p = close;
    }
    if (seen != expect)
        return false;
    /* The shards: each {"shard":S,"leader_id":N,...}. */
    unsigned count = 0;
    for (p = shards; (p = json_u64(p, "leader_id", &v)) != NULL; count++)
        if (v < 1 || v > NODES_MAX || !(expect & (1u << (v - 1))))
            return false;
    return count == SHARDS;
}

/* Waits (bounded) until status_shows; fails with its last output. */
static void cluster_status_expect(struct cluster *c, unsigned seeds,
                                  unsigned expect)
{
    static char out[CLI_OUT_BYTES];
    uint64_t t0 = proc_now_ms(), end = t0 + STATUS_WAIT_MS;
    unsigned runs = 1;
    while (!status_shows(c, seeds, expect, out, sizeof out)) {
        if (proc_now_ms() >= end) {
            cluster_logs(c);
            fprintf(stderr,
                    "---- last inboxctl cluster status --json ----\n"
                    "%s---- end ----\n",
                    out);
            fail_msg("inboxctl cluster status --json never showed exactly "
                     "nodes 0x%x, reachable, and a leader among them for "
                     "every shard in %d ms (%u runs)",
                     expect, STATUS_WAIT_MS, runs);
        }
        proc_sleep_ms(200);
        runs++;
    }
    print_message("    cluster status: nodes 0x%x reachable, every shard led "
                  "(%u run(s), %" PRIu64 " ms)\n",
                  expect, runs, proc_now_ms() - t0);
}

/* The leader of `shard` per `inboxctl route --json` (seeded with `seeds`);
 * 0 unknown. */
static uint64_t route_leader(struct cluster *c, unsigned seeds, uint32_t shard)
{
    static char out[CLI_OUT_BYTES];
    if (inboxctl_run(c, seeds, "route --json", out, sizeof out) != 0)
        return 0;
    const char *p = strstr(out, "\"leaders\":[");
    if (p == NULL)
        return 0;
    p += strlen("\"leaders\":[");
    for (uint32_t s = 0; s < shard; s++) {
        p = strchr(p, ',');
        if (p == NULL)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

static void test_add_and_remove_node(void **state)
{
    struct cluster *c = *state;
    if (inboxctl_bin == NULL)
        skip();
    static char out[CLI_OUT_BYTES];
    char args[256];
    const unsigned all4 = (1u << NODES_MAX) - 1u;
    const unsigned rest = all4 & ~1u; /* nodes 2, 3, 4 */
    cluster_configure(c, false, false);
    node4_configure(c);
    cluster_start(c);
    uint64_t leaders[SHARDS];
    cluster_wait_leaders(c, ALL3, leaders);
    struct load *l = load_start(c, proc_now_ms() ^ 0x2545F491u);
    load_wait_acks(l, 0, LOAD_ACKED_MIN, LOAD_MS_MIN);

    /* Node 4 joins: started with --cluster-join 1, then added by the CLI
     * while the writers go on. */
    node_start(c, NODES);
    size_t acked0 = load_acked(l);
    uint64_t t0 = proc_now_ms();
    snprintf(args, sizeof args, "cluster add-node 4 %s --wait 60",
             c->addrs[NODES]);
    int code = inboxctl_run(c, ALL3, args, out, sizeof out);
    cli_expect(c, "cluster add-node 4", code, out,
               "node 4 is a voter in every shard");
    size_t acked1 = load_acked(l);
    print_message("    node 4 a voter in every shard after %" PRIu64
                  " ms; %zu enqueues acknowledged meanwhile\n",
                  proc_now_ms() - t0, acked1 - acked0);
    assert_true(acked1 > acked0);
    cluster_status_expect(c, all4, all4);

    /* Node 1 leaves, under load. */
    size_t acked2 = load_acked(l);
    t0 = proc_now_ms();
    code = inboxctl_run(c, rest, "cluster remove-node 1 --wait 60", out,
                        sizeof out);
    cli_expect(c, "cluster remove-node 1", code, out,
               "node 1 is no longer a member of any shard");
    size_t acked3 = load_acked(l);
    print_message("    node 1 removed from every shard after %" PRIu64
                  " ms; %zu enqueues acknowledged meanwhile\n",
                  proc_now_ms() - t0, acked3 - acked2);
    assert_true(acked3 > acked2);
    load_wait_acks(l, acked3, LOAD_ACKED_MIN, 500);

    /* Stopped, it is not missed: {2, 3, 4} lead every shard and take the
     * writes (quorum 2 of 3). */
    assert_int_equal(proc_stop(&c->p[0], STOP_MS), 0);
    print_message("    node 1 stopped; leaders among 2, 3, 4 after %" PRIu64
                  " ms\n",
                  cluster_wait_leaders(c, rest, leaders));
    load_wait_acks(l, load_acked(l), LOAD_ACKED_MIN, 500);
    cluster_status_expect(c, rest, rest);

    /* Leadership of a shard node 4 does not lead moves to it. */
    uint32_t shard = SHARDS;
    for (uint32_t s = 0; s < SHARDS && shard == SHARDS; s++)
        if (leaders[s] != NODES_MAX)
            shard = s;
    if (shard < SHARDS) {
        snprintf(args, sizeof args,
                 "cluster transfer-leader %u --to 4 --wait 30", shard);
        code = inboxctl_run(c, rest, args, out, sizeof out);
        char want[64];
        snprintf(want, sizeof want, "shard %u: leader %" PRIu64 " -> 4", shard,
                 leaders[shard]);
        cli_expect(c, "cluster transfer-leader", code, out, want);
        uint64_t now = route_leader(c, rest, shard);
        if (now != NODES_MAX) {
            cluster_logs(c);
            fail_msg("after transfer-leader, ROUTE names %" PRIu64
                     " the leader of shard %u, not 4",
                     now, shard);
        }
        struct node_view v[NODES_MAX];
        cluster_views(c, 1u << NODES, v);
        assert_true(v[NODES].up);
        assert_int_equal(v[NODES].shards[shard].role, INBOX_REPLICA_LEADER);
        print_message("    shard %u: leader %" PRIu64 " -> 4 (ROUTE agrees)\n",
                      shard, leaders[shard]);
        load_wait_acks(l, load_acked(l), LOAD_ACKED_MIN, 500);
    }

    load_stop(l, CALL_MS + 2000u);
    load_summary(l, "load stopped");
    cluster_verify(c, l, rest);
    for (unsigned i = 1; i < NODES_MAX; i++)
        assert_int_equal(proc_stop(&c->p[i], STOP_MS), 0);
    c->passed = true;
}

/* ---- main ------------------------------------------------------------------
 */

/* ---- 5. a node kept down past the compacted log rejoins by snapshot -----
 */

#define SNAP_WAIT_MS 30000 /* the returning node installs its snapshots */

static void test_rejoin_by_snapshot(void **state)
{
    struct cluster *c = *state;
    /* Leaders keep at most 32 entries for a lagging follower, so a node
     * that misses more than that (and a checkpoint, every second) can
     * only come back by snapshot. */
    c->retain = "32";
    cluster_configure(c, true, false);
    cluster_start(c);
    uint64_t leaders[SHARDS];
    cluster_wait_leaders(c, ALL3, leaders);
    struct load *l = load_start(c, proc_now_ms());
    load_wait_acks(l, 0, LOAD_ACKED_MIN, LOAD_MS_MIN);

    /* Node 3 goes down; the others take many more writes than the leaders
     * keep for it and checkpoint (1 s) past them. */
    proc_kill9(&c->p[2]);
    size_t base = load_acked(l);
    load_wait_acks(l, base, 40u * SHARDS * 4u, 2500);
    print_message("    node 3 down while %zu more enqueues were "
                  "acknowledged\n",
                  load_acked(l) - base);
    int64_t installed0 = 0;

    /* It comes back: every shard it missed is caught up by a snapshot
     * sent over the network, while the load goes on. */
    node_start(c, 2);
    uint64_t t0 = proc_now_ms(), end = t0 + SNAP_WAIT_MS;
    int64_t installed = 0, sent = 0;
    for (;;) {
        installed =
            metric(c->p[2].metrics, "inbox_node_snapshots_installed_total");
        if (installed > installed0 || proc_now_ms() >= end)
            break;
        proc_sleep_ms(50);
    }
    sent = metric(c->p[0].metrics, "inbox_node_snapshots_sent_total") +
           metric(c->p[1].metrics, "inbox_node_snapshots_sent_total");
    print_message("    node 3 installed %" PRId64 " snapshot(s) in %" PRIu64
                  " ms; nodes 1 and 2 sent %" PRId64 "\n",
                  installed, proc_now_ms() - t0, sent);
    if (installed <= installed0) {
        cluster_logs(c);
        fail_msg("node 3 installed no snapshot in %d ms", SNAP_WAIT_MS);
    }
    assert_true(sent >= installed);
    load_wait_acks(l, load_acked(l), LOAD_ACKED_MIN, 500);
    load_stop(l, CALL_MS + 2000u);
    load_summary(l, "load stopped");

    /* Node 3 holds everything, identical to the others. */
    cluster_verify(c, l, ALL3);
    /* And it can carry the cluster: with node 1 down, 2 and 3 serve every
     * acknowledged enqueue (checked on both). */
    assert_int_equal(proc_stop(&c->p[0], STOP_MS), 0);
    cluster_wait_leaders(c, 0x6u, leaders);
    cluster_verify(c, l, 0x6u);
    for (unsigned i = 1; i < NODES; i++)
        assert_int_equal(proc_stop(&c->p[i], STOP_MS), 0);
    c->passed = true;
}

int main(int argc, char **argv)
{
    inboxd_bin = argc > 1 ? argv[1] : getenv("INBOXD_BIN");
    inboxctl_bin = argc > 2 ? argv[2] : getenv("INBOXCTL_BIN");
    if (inboxd_bin == NULL || access(inboxd_bin, X_OK) != 0) {
        fprintf(stderr,
                "usage: %s PATH/TO/inboxd [PATH/TO/inboxctl] (or set "
                "INBOXD_BIN, INBOXCTL_BIN)\n",
                argv[0]);
        return 2;
    }
    if (inboxctl_bin != NULL && access(inboxctl_bin, X_OK) != 0)
        inboxctl_bin = NULL;
    proc_set_binary(inboxd_bin);
    inboxes_init();
    const char *filter = getenv("INBOX_TEST_FILTER");
    if (filter != NULL)
        cmocka_set_test_filter(filter);
#define T(f) cmocka_unit_test_setup_teardown(f, cluster_setup, cluster_teardown)
    const struct CMUnitTest tests[] = {
        T(test_leader_kill9),       T(test_all_kill9),
        T(test_foreign_ca),         T(test_add_and_remove_node),
        T(test_rejoin_by_snapshot),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
