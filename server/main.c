/*
 * main.c — inboxd: configuration, certificates, the node, the transport,
 * /metrics, signals. The composition root: nothing here decides what a
 * request means (serve.c) or how it is stored (node.c).
 *
 * Start-up order: config -> data dir -> certificates (made on first start
 * when none were configured) -> node (WAL + store + shards) -> TLS context
 * -> transport and /metrics listeners -> run. Shutdown (SIGTERM, SIGINT):
 * stop accepting, answer parked long-polls, let in-flight requests finish
 * (bounded), close the listeners, then close the node, which makes the WAL
 * durable and checkpoints the store.
 *
 * Exit codes: 0 clean shutdown, 1 failed at run time, 2 bad configuration.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "addrbook.h"
#include "config.h"
#include "inbox/error.h"
#include "log.h"
#include "metrics.h"
#include "net/cert.h"
#include "net/http_metrics.h"
#include "net/peer.h"
#include "net/tls.h"
#include "net/transport.h"
#include "node.h"
#include "serve.h"

#define SHUTDOWN_DRAIN_MS 5000u
#define PATH_BYTES 1024u
#define METRICS_DESCS_MAX 1024u

struct inboxd {
    struct config cfg;
    uv_loop_t loop;
    struct node *node;
    struct serve *serve;
    struct transport *transport;
    struct http_metrics *http;
    struct tls_ctx *tls;
    struct tls_ctx *peer_tls; /* client side, for links to other nodes */
    struct peers *peers;
    struct addrbook book; /* DATA/peers + cluster.members (loop thread) */
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_poll;
    int stopping;
};

/* "host:port" -> host (into buf) and port. */
static int split_addr(const char *addr, char *host, size_t host_bytes,
                      uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= host_bytes)
        return INBOX_EINVAL;
    char *end = NULL;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p > 65535)
        return INBOX_EINVAL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* dir/name into out; INBOX_ERANGE if it does not fit. */
static int path_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? INBOX_ERANGE : 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* With no TLS files configured, use DATA/tls, creating a CA, this node's
 * certificate and an admin client certificate on first start, so that
 * `inboxd` with no arguments is a usable node. */
static int ensure_certificates(struct config *c, const char *listen_host)
{
    if (c->tls_ca[0] != '\0')
        return 0; /* configured: use them as they are */
    char dir[PATH_BYTES];
    char ca_key[PATH_BYTES], adm_crt[PATH_BYTES], adm_key[PATH_BYTES];
    if (path_join(dir, sizeof dir, c->data_dir, "tls") != 0 ||
        path_join(c->tls_ca, sizeof c->tls_ca, dir, "ca.crt") != 0 ||
        path_join(c->tls_cert, sizeof c->tls_cert, dir, "node.crt") != 0 ||
        path_join(c->tls_key, sizeof c->tls_key, dir, "node.key") != 0 ||
        path_join(ca_key, sizeof ca_key, dir, "ca.key") != 0 ||
        path_join(adm_crt, sizeof adm_crt, dir, "admin.crt") != 0 ||
        path_join(adm_key, sizeof adm_key, dir, "admin.key") != 0) {
        log_error("server", "data directory path too long", "dir=%s",
                  c->data_dir);
        return INBOX_ERANGE;
    }
    if (file_exists(c->tls_ca))
        return 0;
    struct config_member ms[CONFIG_MEMBERS_MAX];
    size_t mc = 0;
    if (config_members(c, ms, &mc, NULL, 0) == 0 && mc > 1) {
        /* A CA of its own would trust nobody else in the cluster. */
        log_error("server",
                  "a cluster needs certificates from one CA: make them with "
                  "`inboxctl cert ca` and `inboxctl cert node` and give "
                  "tls.ca, tls.cert and tls.key",
                  "members=%zu", mc);
        return INBOX_EINVAL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct cert_ca_config ca = {.cert_path = c->tls_ca, .key_path = ca_key};
    int rc = cert_ca_create(&ca, msg, sizeof msg);
    const char *hosts[] = {"127.0.0.1", "localhost", listen_host};
    size_t hosts_count = strcmp(listen_host, "127.0.0.1") == 0 ? 2 : 3;
    struct cert_issue_config node = {.ca_cert_path = c->tls_ca,
                                     .ca_key_path = ca_key,
                                     .cert_path = c->tls_cert,
                                     .key_path = c->tls_key,
                                     .name = "node",
                                     .role = INBOX_ROLE_NODE,
                                     .hosts = hosts,
                                     .hosts_count = hosts_count};
    if (rc == 0)
        rc = cert_issue(&node, msg, sizeof msg);
    struct cert_issue_config admin = {.ca_cert_path = c->tls_ca,
                                      .ca_key_path = ca_key,
                                      .cert_path = adm_crt,
                                      .key_path = adm_key,
                                      .name = "admin",
                                      .role = INBOX_ROLE_ADMIN};
    if (rc == 0)
        rc = cert_issue(&admin, msg, sizeof msg);
    if (rc != 0) {
        log_error("server", "cannot create certificates", "dir=%s err=%s %s",
                  dir, inbox_err_name(rc), msg);
        return rc;
    }
    log_info("server", "created a cluster CA and certificates",
             "dir=%s node=node.crt client=admin.crt", dir);
    return 0;
}

static size_t render_metrics(void *arg, char *buf, size_t buf_bytes)
{
    struct inboxd *d = arg;
    const struct metrics_desc *nd = NULL;
    size_t nn = 0, tn = 0;
    node_metrics(d->node, &nd, &nn);
    const struct metrics_desc *td = transport_metrics(d->transport, &tn);
    size_t need = metrics_render(buf, buf_bytes, nd, nn);
    size_t at = need < buf_bytes ? need : buf_bytes;
    need += metrics_render(buf_bytes > at ? buf + at : NULL,
                           buf_bytes > at ? buf_bytes - at : 0, td, tn);
    if (d->peers != NULL) {
        size_t pn = 0;
        const struct metrics_desc *pd = peer_metrics(d->peers, &pn);
        at = need < buf_bytes ? need : buf_bytes;
        need += metrics_render(buf_bytes > at ? buf + at : NULL,
                               buf_bytes > at ? buf_bytes - at : 0, pd, pn);
    }
    return need;
}

/* ---- shutdown ------------------------------------------------------------ */

static void stop_poll_cb(uv_timer_t *t)
{
    struct inboxd *d = t->data;
    if (!transport_stopped(d->transport) ||
        (d->http != NULL && !http_metrics_stopped(d->http)) ||
        (d->peers != NULL && !peer_stopped(d->peers)))
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct inboxd *d = s->data;
    if (d->stopping++) {
        log_warn("server", "second signal: exiting at once", "signal=%d",
                 signum);
        exit(1);
    }
    log_info("server", "shutting down", "signal=%d drain_ms=%u", signum,
             SHUTDOWN_DRAIN_MS);
    serve_stop(d->serve);
    transport_stop(d->transport, SHUTDOWN_DRAIN_MS);
    if (d->http != NULL)
        http_metrics_stop(d->http);
    if (d->peers != NULL)
        peer_stop(d->peers);
    uv_timer_init(&d->loop, &d->stop_poll);
    d->stop_poll.data = d;
    uv_timer_start(&d->stop_poll, stop_poll_cb, 20, 20);
}

/* ---- main ------------------------------------------------------------------
 */

static int load_config(struct config *c, int argc, char **argv)
{
    char err[CONFIG_ERROR_BYTES_MAX] = "";
    bool help = false;
    config_defaults(c);
    if (config_parse_args(c, argc, argv, &help, err, sizeof err) != 0) {
        fprintf(stderr, "inboxd: %s\n", err);
        return 2;
    }
    if (help) {
        size_t need = config_usage(NULL, 0, argv[0]);
        char *buf = malloc(need + 1);
        if (buf != NULL) {
            config_usage(buf, need + 1, argv[0]);
            fputs(buf, stdout);
            free(buf);
        }
        return 0;
    }
    if (config_validate(c, err, sizeof err) != 0) {
        fprintf(stderr, "inboxd: %s\n", err);
        return 2;
    }
    return -1; /* carry on */
}

/* The node thread's send hook: queue the bytes on the link to `to`. A full
 * queue or a link in backoff drops them, which Raft tolerates. */
static void send_to_peer(void *arg, uint64_t to, const uint8_t *bytes,
                         size_t len)
{
    struct inboxd *d = arg;
    (void)peer_send(d->peers, to, bytes, len);
}

/* Links to the other nodes (before the node opens: it may send at once),
 * one per address in the book; ADD_NODE adds more at run time. The links
 * present this node's certificate as a client. */
static int start_peers(struct inboxd *d)
{
    char tlserr[INBOX_TLS_ERRMSG_BYTES] = "";
    struct tls_ctx_config tcfg = {.side = TLS_SIDE_CLIENT,
                                  .ca_path = d->cfg.tls_ca,
                                  .cert_path = d->cfg.tls_cert,
                                  .key_path = d->cfg.tls_key};
    int rc = tls_ctx_new(&tcfg, &d->peer_tls, tlserr, sizeof tlserr);
    if (rc != 0) {
        log_error("server", "cannot load TLS files for peer links", "err=%s %s",
                  inbox_err_name(rc), tlserr);
        return rc;
    }
    struct peer_config pc = {
        .loop = &d->loop, .tls = d->peer_tls, .self_id = d->cfg.node_id};
    rc = peer_new(&pc, &d->peers);
    for (size_t i = 0; rc == 0 && i < d->book.count; i++) {
        const struct config_member *m = &d->book.nodes[i];
        if (m->id == d->cfg.node_id)
            continue;
        rc = peer_set_addr(d->peers, m->id, m->addr);
        if (rc != 0)
            log_error("server", "bad peer address", "node=%" PRIu64 " addr=%s",
                      m->id, m->addr);
    }
    return rc;
}

/* The address book: DATA/peers (what ADD_NODE taught this node), then
 * cluster.members over it (the operator's word wins). Saved when the
 * configuration added or changed something. */
static int load_addrbook(struct inboxd *d)
{
    char err[256] = "";
    int rc = addrbook_load(d->cfg.data_dir, &d->book, err, sizeof err);
    if (rc != 0) {
        log_error("server", "cannot read the address book", "dir=%s err=%s %s",
                  d->cfg.data_dir, inbox_err_name(rc), err);
        return rc;
    }
    struct config_member ms[CONFIG_MEMBERS_MAX];
    size_t mc = 0;
    (void)config_members(&d->cfg, ms, &mc, NULL, 0);
    bool changed = false;
    for (size_t i = 0; i < mc; i++) {
        rc = addrbook_set(&d->book, ms[i].id, ms[i].addr);
        if (rc < 0)
            return rc;
        changed |= rc == 1;
    }
    return changed ? addrbook_save(d->cfg.data_dir, &d->book) : 0;
}

/* serve's hook: ADD_NODE taught us where a node is. */
static int node_added(void *arg, uint64_t id, const char *addr)
{
    struct inboxd *d = arg;
    struct addrbook next = d->book;
    int rc = addrbook_set(&next, id, addr);
    if (rc == 1)
        rc = addrbook_save(d->cfg.data_dir, &next);
    if (rc < 0) {
        log_error("server", "cannot record a node's address",
                  "node=%" PRIu64 " addr=%s err=%s", id, addr,
                  inbox_err_name(rc));
        return rc;
    }
    d->book = next;
    rc = peer_set_addr(d->peers, id, addr);
    log_info("server", "node address recorded", "node=%" PRIu64 " addr=%s", id,
             addr);
    return rc;
}

static int start_listeners(struct inboxd *d, const char *host, uint16_t port)
{
    struct transport_config tc = {
        .host = host,
        .port = port,
        .tls = d->tls,
        .node_id = d->cfg.node_id,
        .shard_count = (uint32_t)d->cfg.shard_count,
        .conn_max = (uint32_t)d->cfg.conn_max,
        .conn_inflight_max = (uint32_t)d->cfg.conn_inflight_max,
        .conn_output_bytes_max = d->cfg.conn_output_bytes_max,
        .on_request = serve_on_request,
        .on_conn_closed = serve_on_conn_closed,
        .arg = d->serve};
    int rc = transport_new(&d->loop, &tc, &d->transport);
    if (rc == 0)
        rc = transport_start(d->transport);
    if (rc != 0) {
        log_error("server", "cannot listen", "addr=%s err=%s (%s)",
                  d->cfg.listen, inbox_err_name(rc), inbox_strerror(rc));
        return rc;
    }
    serve_attach(d->serve, d->node, d->transport);
    if (d->cfg.metrics[0] == '\0')
        return 0;
    char mhost[256];
    uint16_t mport;
    if (split_addr(d->cfg.metrics, mhost, sizeof mhost, &mport) != 0)
        return INBOX_EINVAL;
    struct http_metrics_config hc = {
        .host = mhost, .port = mport, .render = render_metrics, .arg = d};
    rc = http_metrics_new(&d->loop, &hc, &d->http);
    if (rc != 0)
        log_error("server", "cannot serve /metrics", "addr=%s err=%s",
                  d->cfg.metrics, inbox_err_name(rc));
    return rc;
}

int main(int argc, char **argv)
{
    static struct inboxd d;
    int code = load_config(&d.cfg, argc, argv);
    if (code >= 0)
        return code;
    log_set_level_name(d.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);

    char host[256];
    uint16_t port;
    if (split_addr(d.cfg.listen, host, sizeof host, &port) != 0) {
        fprintf(stderr, "inboxd: node.listen '%s' must be host:port\n",
                d.cfg.listen);
        return 2;
    }
    if (mkdir(d.cfg.data_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "inboxd: cannot create %s: %s\n", d.cfg.data_dir,
                strerror(errno));
        return 2;
    }
    if (ensure_certificates(&d.cfg, host) != 0)
        return 1;

    uv_loop_init(&d.loop);
    struct config_member members[CONFIG_MEMBERS_MAX];
    size_t members_count = 0;
    (void)config_members(&d.cfg, members, &members_count, NULL, 0);
    if (load_addrbook(&d) != 0)
        return 1;
    struct serve_options so = {.loop = &d.loop,
                               .node_id = d.cfg.node_id,
                               .advertise = d.cfg.advertise[0] ? d.cfg.advertise
                                                               : d.cfg.listen,
                               .default_ttl_ms = d.cfg.default_ttl_ms,
                               .book = &d.book,
                               .node_added = node_added,
                               .node_added_arg = &d};
    if (serve_new(&so, &d.serve) != 0)
        return 1;

    char tlserr[INBOX_TLS_ERRMSG_BYTES] = "";
    struct tls_ctx_config tcfg = {.side = TLS_SIDE_SERVER,
                                  .ca_path = d.cfg.tls_ca,
                                  .cert_path = d.cfg.tls_cert,
                                  .key_path = d.cfg.tls_key};
    int rc = tls_ctx_new(&tcfg, &d.tls, tlserr, sizeof tlserr);
    if (rc != 0) {
        log_error("server", "cannot load TLS files", "err=%s %s",
                  inbox_err_name(rc), tlserr);
        return 2;
    }
    if (start_peers(&d) != 0)
        return 2;

    char err[NODE_ERRMSG_BYTES] = "";
    struct node_options no;
    node_options_from_config(&no, &d.cfg);
    no.enqueue_applied = serve_enqueue_applied;
    no.enqueue_applied_arg = d.serve;
    no.errmsg = err;
    no.errmsg_bytes = sizeof err;
    no.send = send_to_peer;
    no.send_arg = &d;
    rc = node_open(&no, &d.node);
    if (rc != 0) {
        log_error("server", "cannot open the node", "dir=%s err=%s (%s) %s",
                  d.cfg.data_dir, inbox_err_name(rc), inbox_strerror(rc), err);
        return rc == INBOX_EINVAL ? 2 : 1;
    }

    if (start_listeners(&d, host, port) != 0) {
        node_close(d.node);
        return 1;
    }
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    log_info("server", "inboxd ready",
             "node=%" PRIu64 " listen=%s:%u metrics=%s shards=%" PRIu64
             " members=%zu data=%s ca=%s",
             d.cfg.node_id, host, (unsigned)transport_port(d.transport),
             d.cfg.metrics[0] ? d.cfg.metrics : "off", d.cfg.shard_count,
             members_count ? members_count : 1u, d.cfg.data_dir, d.cfg.tls_ca);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    /* The node first: it completes whatever is still in flight (answers to
     * closed connections are dropped by the transport), makes the WAL
     * durable and checkpoints the store. */
    int failed = node_failed(d.node);
    node_close(d.node);
    serve_free(d.serve);
    transport_free(d.transport);
    if (d.http != NULL)
        http_metrics_free(d.http);
    uv_run(&d.loop, UV_RUN_DEFAULT); /* close the service's timer */
    peer_free(d.peers);
    tls_ctx_free(d.peer_tls);
    tls_ctx_free(d.tls);
    uv_loop_close(&d.loop);
    log_info("server", "inboxd stopped", "storage=%s",
             failed ? inbox_err_name(failed) : "ok");
    return failed ? 1 : 0;
}
