/*
 * fake_server.c — see fake_server.h. One thread per fake: poll(2) on the
 * listening socket and its connections (blocking sockets, read only after
 * POLLIN), TLS through net/tls, frames through net/codec. Frame handling
 * runs under the fake's mutex so the test can change the script between
 * calls.
 */
#include "fake_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "inbox/error.h"
#include "net/codec.h"

struct held {
    uint64_t due_ms;
    uint64_t id;
    uint8_t *frame;
    size_t len;
};

struct fake_conn {
    int fd;
    struct tls_conn *tls;
    struct inbox_parser parser;
    uint8_t *body_buf;
    uint8_t *out;
    size_t out_len, out_cap;
    bool hello_done;
    bool dead;
    bool silent; /* FAKE_SILENT_FIRST: a peer that stopped answering */
    struct held delayed[FAKE_DELAYED_MAX];
    int delayed_count;
    struct held held[FAKE_HELD_MAX];
    int held_count;
    int idle_rounds;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void die(const char *what)
{
    fprintf(stderr, "fake_server: %s\n", what);
    abort();
}

/* ---- output ------------------------------------------------------------- */

static void out_append(struct fake *f, struct fake_conn *fc, uint64_t id,
                       const uint8_t *p, size_t len)
{
    if (fc->out_len + len > fc->out_cap) {
        size_t cap = (fc->out_len + len) * 2;
        fc->out = realloc(fc->out, cap);
        if (fc->out == NULL)
            die("out of memory");
        fc->out_cap = cap;
    }
    memcpy(fc->out + fc->out_len, p, len);
    fc->out_len += len;
    if (id != 0) {
        if (id < f->last_answered_id)
            f->out_of_order++;
        f->last_answered_id = id;
    }
}

static uint8_t *encode(const struct inbox_msg *m, size_t *len)
{
    size_t n = 0;
    inbox_msg_encode(m, NULL, 0, &n);
    uint8_t *buf = malloc(n);
    if (buf == NULL || inbox_msg_encode(m, buf, n, len) != 0)
        die("encode");
    return buf;
}

enum send_how { SEND_NOW, SEND_DELAYED, SEND_HELD };

static void send_msg(struct fake *f, struct fake_conn *fc,
                     const struct inbox_msg *m, enum send_how how)
{
    size_t len = 0;
    uint8_t *frame = encode(m, &len);
    if (how == SEND_DELAYED && fc->delayed_count < FAKE_DELAYED_MAX) {
        fc->delayed[fc->delayed_count++] = (struct held){
            now_ms() + f->delay_ms, m->hdr.request_id, frame, len};
        return;
    }
    if (how == SEND_HELD && fc->held_count < FAKE_HELD_MAX) {
        fc->held[fc->held_count++] =
            (struct held){0, m->hdr.request_id, frame, len};
        return;
    }
    out_append(f, fc, m->hdr.request_id, frame, len);
    free(frame);
}

/* Plaintext -> TLS -> socket (blocking writes). */
static void conn_flush(struct fake_conn *fc)
{
    size_t off = 0;
    uint8_t cipher[16384];
    for (;;) {
        if (off < fc->out_len && !fc->dead) {
            size_t took = 0;
            if (tls_conn_write_plain(fc->tls, fc->out + off, fc->out_len - off,
                                     &took) != 0)
                fc->dead = true;
            off += took;
        }
        size_t n = tls_conn_pull_cipher(fc->tls, cipher, sizeof cipher);
        if (n == 0 && (off == fc->out_len || fc->dead))
            break;
        size_t sent = 0;
        while (sent < n) {
            ssize_t w = send(fc->fd, cipher + sent, n - sent, MSG_NOSIGNAL);
            if (w <= 0) {
                fc->dead = true;
                break;
            }
            sent += (size_t)w;
        }
        if (fc->dead && n == 0)
            break;
    }
    fc->out_len = 0;
}

/* ---- answers ------------------------------------------------------------ */

static void reply_init(struct inbox_msg *r, const struct inbox_msg *req)
{
    memset(r, 0, sizeof *r);
    r->hdr.version = 1;
    r->hdr.opcode = req->hdr.opcode;
    r->hdr.flags = INBOX_FLAG_RESPONSE;
    r->hdr.request_id = req->hdr.request_id;
}

static void reply_error(struct fake *f, struct fake_conn *fc,
                        const struct inbox_msg *req, int err, const char *text)
{
    struct inbox_msg r;
    reply_init(&r, req);
    r.hdr.flags |= INBOX_FLAG_ERROR;
    r.body.error.code = (uint16_t)-err;
    r.body.error.message.ptr = (const uint8_t *)text;
    r.body.error.message.len = (uint32_t)strlen(text);
    send_msg(f, fc, &r, SEND_NOW);
}

static void reply_not_leader(struct fake *f, struct fake_conn *fc,
                             const struct inbox_msg *req)
{
    const struct fake_cluster *cl = f->cluster;
    uint32_t to = f->redirect_to;
    struct inbox_bytes addr = {(const uint8_t *)cl->addrs[to],
                               (uint32_t)strlen(cl->addrs[to])};
    struct inbox_msg r;
    reply_init(&r, req);
    r.hdr.flags |= INBOX_FLAG_ERROR;
    r.body.error.code = 1300;
    r.body.error.message.ptr = (const uint8_t *)"not leader";
    r.body.error.message.len = 10;
    r.body.error.shard =
        (uint32_t)(XXH3_64bits(req->body.enqueue_req.inbox.ptr,
                               req->body.enqueue_req.inbox.len) %
                   FAKE_SHARDS);
    bool none = f->mode == FAKE_NO_LEADER;
    r.body.error.leader.node_id = none ? 0 : cl->node_ids[to];
    r.body.error.leader.addrs_count = none ? 0 : 1;
    r.body.error.leader.addrs = none ? NULL : &addr;
    send_msg(f, fc, &r, SEND_NOW);
}

static void on_route(struct fake *f, struct fake_conn *fc,
                     const struct inbox_msg *req)
{
    const struct fake_cluster *cl = f->cluster;
    struct inbox_bytes addrs[FAKE_NODES_MAX];
    struct inbox_node nodes[FAKE_NODES_MAX];
    memset(nodes, 0, sizeof nodes);
    for (uint32_t i = 0; i < cl->nodes_count; i++) {
        addrs[i].ptr = (const uint8_t *)cl->addrs[i];
        addrs[i].len = (uint32_t)strlen(cl->addrs[i]);
        nodes[i].node_id = cl->node_ids[i];
        nodes[i].addrs_count = 1;
        nodes[i].addrs = &addrs[i];
    }
    uint64_t leaders[FAKE_SHARDS];
    for (int i = 0; i < FAKE_SHARDS; i++)
        leaders[i] = f->mode == FAKE_NO_LEADER ? 0
                     : f->stale_route_once     ? f->node_id
                                               : cl->leaders[i];
    f->stale_route_once = false;
    f->routes++;
    struct inbox_msg r;
    reply_init(&r, req);
    r.body.route_resp.epoch = cl->epoch;
    r.body.route_resp.hash = INBOX_HASH_XXH3_64;
    r.body.route_resp.nodes_count = cl->nodes_count;
    r.body.route_resp.nodes = nodes;
    r.body.route_resp.shard_count = FAKE_SHARDS;
    r.body.route_resp.leaders = leaders;
    send_msg(f, fc, &r, SEND_NOW);
}

static void on_enqueue(struct fake *f, struct fake_conn *fc,
                       const struct inbox_msg *req)
{
    const struct inbox_enqueue_req *e = &req->body.enqueue_req;
    if (f->enqueues < FAKE_RECORDS_MAX)
        memcpy(f->msg_ids[f->enqueues], e->msg_id, INBOX_MSG_ID_BYTES);
    f->enqueues++;
    if (f->mode == FAKE_NOT_LEADER || f->mode == FAKE_NO_LEADER) {
        reply_not_leader(f, fc, req);
        return;
    }
    if (f->mode == FAKE_DROP_FIRST && f->enqueues == 1) {
        fc->dead = true; /* no answer: the client must retry */
        return;
    }
    if (f->mode == FAKE_GARBAGE_FIRST && f->enqueues == 1) {
        uint8_t junk[INBOX_FRAME_HEADER_BYTES];
        memset(junk, 0xee, sizeof junk);
        out_append(f, fc, 0, junk, sizeof junk);
        return;
    }
    if (f->mode == FAKE_BUSY_FIRST && f->enqueues == 1) {
        reply_error(f, fc, req, INBOX_EBUSY, "busy, try later");
        return;
    }
    struct inbox_msg r;
    reply_init(&r, req);
    if (e->payload.len > 1 && e->payload.len < 20 && e->payload.ptr[0] == '#') {
        char num[24];
        memcpy(num, e->payload.ptr + 1, e->payload.len - 1);
        num[e->payload.len - 1] = '\0';
        r.body.enqueue_resp.seq = strtoull(num, NULL, 10);
    } else {
        r.body.enqueue_resp.seq = ++f->next_seq;
    }
    enum send_how how = f->mode == FAKE_DELAY     ? SEND_DELAYED
                        : f->mode == FAKE_REORDER ? SEND_HELD
                                                  : SEND_NOW;
    send_msg(f, fc, &r, how);
}

static void on_enqueue_many(struct fake *f, struct fake_conn *fc,
                            const struct inbox_msg *req)
{
    struct inbox_enqueue_result res[INBOX_FANOUT_INBOXES_MAX];
    uint32_t n = req->body.enqueue_many_req.count;
    struct inbox_iter it = req->body.enqueue_many_req.iter;
    struct inbox_target t;
    for (uint32_t i = 0; i < n && inbox_next_target(&it, &t); i++) {
        uint64_t shard = XXH3_64bits(t.inbox.ptr, t.inbox.len) % FAKE_SHARDS;
        if (f->cluster->leaders[shard] != f->node_id) {
            res[i] = (struct inbox_enqueue_result){1300, false, 0};
            f->many_not_leader++;
            continue;
        }
        res[i] = (struct inbox_enqueue_result){0, false, ++f->next_seq};
        f->many_targets++;
    }
    struct inbox_msg r;
    reply_init(&r, req);
    r.body.enqueue_many_resp.count = n;
    r.body.enqueue_many_resp.results = res;
    send_msg(f, fc, &r, SEND_NOW);
}

static void on_fetch(struct fake *f, struct fake_conn *fc,
                     const struct inbox_msg *req)
{
    uint64_t after = req->body.fetch_req.after_seq;
    struct inbox_message msgs[2];
    memset(msgs, 0, sizeof msgs);
    const char *texts[2] = {"m1", "m2"};
    for (int i = 0; i < 2; i++) {
        msgs[i].seq = after + 1 + (uint64_t)i;
        msgs[i].msg_id[0] = (uint8_t)(i + 1);
        msgs[i].enqueue_ts_ms = 1000 + (uint64_t)i;
        msgs[i].payload.ptr = (const uint8_t *)texts[i];
        msgs[i].payload.len = 2;
    }
    struct inbox_msg r;
    reply_init(&r, req);
    r.body.fetch_resp.acked_seq = after;
    r.body.fetch_resp.last_seq = after + 2;
    r.body.fetch_resp.count = 2;
    r.body.fetch_resp.messages = msgs;
    send_msg(f, fc, &r, SEND_NOW);
}

static void on_keys(struct fake *f, struct fake_conn *fc,
                    const struct inbox_msg *req)
{
    struct inbox_code_u64 items[INBOX_SEEN_GET_INBOXES_MAX];
    struct inbox_iter it = req->body.keys_req.iter;
    struct inbox_bytes key, first = {0};
    uint32_t n = 0;
    while (inbox_next_key(&it, &key)) {
        if (n == 0)
            first = key;
        items[n].code = 0;
        items[n].value = req->hdr.opcode == INBOX_OP_WATCH
                             ? f->watch_last_seq
                             : (uint64_t)key.len * 1000u;
        n++;
    }
    struct inbox_msg r;
    reply_init(&r, req);
    if (req->hdr.opcode != INBOX_OP_UNWATCH) {
        r.body.code_u64_resp.count = n;
        r.body.code_u64_resp.items = items;
    }
    send_msg(f, fc, &r, SEND_NOW);
    if (req->hdr.opcode == INBOX_OP_WATCH) {
        struct inbox_msg p;
        memset(&p, 0, sizeof p);
        p.hdr.version = 1;
        p.hdr.opcode = INBOX_OP_NOTIFY;
        p.hdr.flags = INBOX_FLAG_PUSH;
        p.body.notify.inbox = first;
        p.body.notify.last_seq = f->watch_last_seq + 1;
        send_msg(f, fc, &p, SEND_NOW);
    }
}

static void handle(struct fake *f, struct fake_conn *fc,
                   const struct inbox_msg *req)
{
    struct inbox_msg r;
    reply_init(&r, req);
    switch (req->hdr.opcode) {
    case INBOX_OP_ROUTE:
        on_route(f, fc, req);
        return;
    case INBOX_OP_ENQUEUE:
        on_enqueue(f, fc, req);
        return;
    case INBOX_OP_ENQUEUE_MANY:
        on_enqueue_many(f, fc, req);
        return;
    case INBOX_OP_FETCH:
        on_fetch(f, fc, req);
        return;
    case INBOX_OP_SEEN_GET:
    case INBOX_OP_WATCH:
    case INBOX_OP_UNWATCH:
        on_keys(f, fc, req);
        return;
    case INBOX_OP_ACK:
        if (req->body.ack_req.up_to_seq > 100) {
            reply_error(f, fc, req, INBOX_EACK_BEYOND_LAST,
                        "ack beyond the last seq 100");
            return;
        }
        r.body.ack_resp.acked_seq = req->body.ack_req.up_to_seq;
        break;
    case INBOX_OP_SEEN_SET:
        r.body.seen_set_resp.ts_ms = req->body.seen_set_req.ts_ms;
        break;
    case INBOX_OP_PING:
        f->pings++;
        break;
    case INBOX_OP_STATUS: {
        struct inbox_shard_status sh = {3, INBOX_REPLICA_LEADER, f->node_id, 5,
                                        9};
        r.body.status_resp.node_id = f->node_id;
        r.body.status_resp.uptime_ms = 1234;
        r.body.status_resp.count = 1;
        r.body.status_resp.shards = &sh;
        send_msg(f, fc, &r, SEND_NOW);
        return;
    }
    case INBOX_OP_ADD_NODE:
    case INBOX_OP_REMOVE_NODE:
    case INBOX_OP_TRANSFER_LEADER:
    case INBOX_OP_MOVE_REPLICA:
    case INBOX_OP_SNAPSHOT:
        r.body.admin_resp.epoch = 40 + req->hdr.opcode - INBOX_OP_ADD_NODE;
        break;
    default:
        reply_error(f, fc, req, INBOX_EINTERNAL, "fake: not scripted");
        return;
    }
    send_msg(f, fc, &r, SEND_NOW);
}

static void on_frame(struct fake *f, struct fake_conn *fc,
                     const struct inbox_frame *fr)
{
    struct inbox_msg req;
    if (inbox_msg_decode(&fr->hdr, fr->body, &req) != 0) {
        fc->dead = true;
        return;
    }
    if (!fc->hello_done) {
        if (req.hdr.opcode != INBOX_OP_HELLO) {
            fc->dead = true;
            return;
        }
        struct inbox_msg r;
        reply_init(&r, &req);
        r.body.hello_resp.version = 1;
        r.body.hello_resp.node_id = f->node_id;
        r.body.hello_resp.body_bytes_max = INBOX_FRAME_BODY_BYTES_MAX;
        r.body.hello_resp.shard_count = FAKE_SHARDS;
        send_msg(f, fc, &r, SEND_NOW);
        fc->hello_done = true;
        fc->parser.version = 1;
        return;
    }
    if (fc->silent && req.hdr.opcode != INBOX_OP_ROUTE) {
        if (req.hdr.opcode == INBOX_OP_ENQUEUE) { /* record, never answer */
            if (f->enqueues < FAKE_RECORDS_MAX)
                memcpy(f->msg_ids[f->enqueues], req.body.enqueue_req.msg_id,
                       INBOX_MSG_ID_BYTES);
            f->enqueues++;
        }
        return;
    }
    handle(f, fc, &req);
}

/* ---- connections -------------------------------------------------------- */

static void conn_read(struct fake *f, struct fake_conn *fc)
{
    uint8_t buf[16384], plain[16384];
    ssize_t n = read(fc->fd, buf, sizeof buf);
    if (n <= 0) {
        fc->dead = true;
        return;
    }
    size_t off = 0;
    while (off < (size_t)n && !fc->dead) {
        size_t took = 0;
        if (tls_conn_feed_cipher(fc->tls, buf + off, (size_t)n - off, &took))
            fc->dead = true;
        off += took;
        for (;;) {
            size_t got = 0;
            if (tls_conn_read_plain(fc->tls, plain, sizeof plain, &got) != 0) {
                fc->dead = true;
                break;
            }
            if (got == 0)
                break;
            size_t used = 0, p = 0;
            while (p < got && !fc->dead) {
                struct inbox_frame fr;
                int rc = inbox_parser_feed(&fc->parser, plain + p, got - p,
                                           &used, &fr);
                p += used;
                if (rc < 0)
                    fc->dead = true;
                else if (rc == INBOX_PARSE_FRAME) {
                    pthread_mutex_lock(&f->mu);
                    on_frame(f, fc, &fr);
                    pthread_mutex_unlock(&f->mu);
                }
            }
        }
    }
    fc->idle_rounds = 0;
}

static void conn_free(struct fake_conn *fc)
{
    close(fc->fd);
    tls_conn_free(fc->tls);
    for (int i = 0; i < fc->delayed_count; i++)
        free(fc->delayed[i].frame);
    for (int i = 0; i < fc->held_count; i++)
        free(fc->held[i].frame);
    free(fc->body_buf);
    free(fc->out);
    free(fc);
}

static void accept_one(struct fake *f)
{
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return;
    int slot = -1;
    for (int i = 0; i < FAKE_CONNS_MAX; i++)
        if (f->conns[i] == NULL) {
            slot = i;
            break;
        }
    struct fake_conn *fc = calloc(1, sizeof *fc);
    if (slot < 0 || fc == NULL) {
        free(fc);
        close(fd);
        return;
    }
    fc->fd = fd;
    fc->body_buf = malloc(INBOX_FRAME_BODY_BYTES_MAX);
    if (fc->body_buf == NULL || tls_conn_new(f->tls, NULL, &fc->tls) != 0)
        die("accept");
    inbox_parser_init(&fc->parser, fc->body_buf, INBOX_FRAME_BODY_BYTES_MAX);
    f->conns[slot] = fc;
    pthread_mutex_lock(&f->mu);
    fc->silent = f->mode == FAKE_SILENT_FIRST && f->accepted == 0;
    f->accepted++;
    pthread_mutex_unlock(&f->mu);
}

/* Delayed answers that are due, held answers (reverse order) once the
 * client has paused or enough are held, and drop_all. */
static void conn_timers(struct fake *f, struct fake_conn *fc)
{
    uint64_t now = now_ms();
    for (int i = 0; i < fc->delayed_count;) {
        if (fc->delayed[i].due_ms > now) {
            i++;
            continue;
        }
        out_append(f, fc, fc->delayed[i].id, fc->delayed[i].frame,
                   fc->delayed[i].len);
        free(fc->delayed[i].frame);
        fc->delayed[i] = fc->delayed[--fc->delayed_count];
    }
    if (fc->held_count > 0 &&
        (fc->held_count >= 16 || ++fc->idle_rounds >= 2)) {
        for (int i = fc->held_count - 1; i >= 0; i--) {
            out_append(f, fc, fc->held[i].id, fc->held[i].frame,
                       fc->held[i].len);
            free(fc->held[i].frame);
        }
        fc->held_count = 0;
    }
    if (f->drop_all)
        fc->dead = true;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    struct pollfd pfds[1 + FAKE_CONNS_MAX];
    struct fake_conn *who[1 + FAKE_CONNS_MAX];
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        int n = 0;
        pfds[n++] = (struct pollfd){.fd = f->lfd, .events = POLLIN};
        for (int i = 0; i < FAKE_CONNS_MAX; i++)
            if (f->conns[i]) {
                who[n] = f->conns[i];
                pfds[n++] =
                    (struct pollfd){.fd = f->conns[i]->fd, .events = POLLIN};
            }
        if (poll(pfds, (nfds_t)n, 5) < 0 && errno != EINTR)
            die("poll");
        if (pfds[0].revents & POLLIN)
            accept_one(f);
        for (int i = 1; i < n; i++)
            if (pfds[i].revents)
                conn_read(f, who[i]);
        pthread_mutex_lock(&f->mu);
        for (int i = 0; i < FAKE_CONNS_MAX; i++)
            if (f->conns[i])
                conn_timers(f, f->conns[i]);
        f->drop_all = false;
        pthread_mutex_unlock(&f->mu);
        for (int i = 0; i < FAKE_CONNS_MAX; i++) {
            struct fake_conn *fc = f->conns[i];
            if (fc == NULL)
                continue;
            conn_flush(fc);
            if (fc->dead) {
                conn_free(fc);
                f->conns[i] = NULL;
            }
        }
    }
    return NULL;
}

void fake_start(struct fake *f, uint64_t node_id, const char *ca_crt,
                const char *cert, const char *key,
                const struct fake_cluster *cluster)
{
    memset(f, 0, sizeof *f);
    f->node_id = node_id;
    f->cluster = cluster;
    pthread_mutex_init(&f->mu, NULL);
    char msg[INBOX_TLS_ERRMSG_BYTES];
    struct tls_ctx_config cfg = {
        .side = TLS_SIDE_SERVER,
        .ca_path = ca_crt,
        .cert_path = cert,
        .key_path = key,
    };
    if (tls_ctx_new(&cfg, &f->tls, msg, sizeof msg) != 0)
        die(msg);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(f->lfd, 16) != 0 ||
        getsockname(f->lfd, (struct sockaddr *)&sa, &len) != 0)
        die("listen");
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u",
             (unsigned)ntohs(sa.sin_port));
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
        die("pthread_create");
}

void fake_stop(struct fake *f)
{
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    pthread_join(f->thread, NULL);
    for (int i = 0; i < FAKE_CONNS_MAX; i++)
        if (f->conns[i])
            conn_free(f->conns[i]);
    close(f->lfd);
    tls_ctx_free(f->tls);
    pthread_mutex_destroy(&f->mu);
}

void fake_lock(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
}

void fake_unlock(struct fake *f)
{
    pthread_mutex_unlock(&f->mu);
}

void fake_records_get(struct fake *f, struct fake_records *out)
{
    pthread_mutex_lock(&f->mu);
    out->accepted = f->accepted;
    out->enqueues = f->enqueues;
    out->many_targets = f->many_targets;
    out->many_not_leader = f->many_not_leader;
    out->routes = f->routes;
    out->out_of_order = f->out_of_order;
    out->pings = f->pings;
    memcpy(out->msg_ids, f->msg_ids, sizeof out->msg_ids);
    pthread_mutex_unlock(&f->mu);
}
