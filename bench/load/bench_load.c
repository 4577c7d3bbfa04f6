/*
 * bench_load.c — load on a running inboxd through libinbox.
 *
 * N connections: one struct inbox_client each (a client keeps one
 * connection per node, so against one node that is one TCP + TLS
 * connection). The clients are spread over T threads. With T = N (the
 * default) each thread owns one client and blocks in inbox_client_poll(),
 * so an idle client costs no CPU; with T < N a thread polls its clients
 * round-robin without blocking and naps --idle-us when a whole round fired
 * nothing (fewer threads, but it spends CPU looking).
 *
 * Each client keeps up to P calls in flight: a completion callback records
 * the latency and submits the next call at once, so the pipeline stays
 * full. A call is, by percentage:
 *   ENQUEUE  a --payload byte message (our own random msg id) to one of K
 *            inboxes "user00000000".."user<K-1>" drawn at random;
 *   FETCH    up to --fetch-max messages after seq 0 of a random inbox
 *            (what is not acked yet; like Redis's XRANGE - + COUNT 10);
 *   ACK      up to the seq an earlier enqueue of this thread got back, for
 *            that inbox (from a ring of recent enqueues; while the ring is
 *            empty the call is an ENQUEUE instead).
 *
 * It stops submitting after --seconds or --count calls, whichever comes
 * first, then waits for the calls in flight (each bounded by --timeout-ms)
 * and prints the machine, the configuration, ops/s and p50/p99/p999/max
 * latency per operation. Latency runs from submit (the call is queued and
 * written within the same poll round) to the completion callback; only
 * successful calls are in the histograms, failures are counted by error.
 *
 * Histograms are log-linear in nanoseconds, 64 sub-buckets per power of
 * two, so a reported quantile (a bucket's upper bound) overshoots by at
 * most 1/64 (1.6%). server/metrics.h's power-of-two buckets would round a
 * p999 up by as much as 2x, too coarse to compare with a peer. Each thread
 * fills its own histograms; they are merged after the threads are joined.
 *
 * Exit: 0 every call succeeded, 1 some call failed, 2 usage, 3 the server
 * could not be reached (the connect phase before the clock starts failed).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "inbox/client.h"
#include "inbox/error.h"
#include "inbox/limits.h"

#define CONNECTIONS_MAX 4096u
#define INFLIGHT_MAX 4096u /* per connection */
#define SECONDS_MAX 3600.0
#define INBOX_NAME_BYTES 16u   /* "user" + 8 digits + NUL, padded */
#define INBOXES_MAX 100000000u /* 8 digits */
#define ACK_RING_SLOTS 4096u   /* recent enqueues a thread may ack */
#define ERR_KINDS_MAX 8u       /* distinct error codes kept per thread */
#define ERRMSG_BYTES 256u
#define POLL_BLOCK_MS 100            /* one client per thread: poll(2) bound */
#define DRAIN_GRACE_NS 2000000000ull /* past the last deadline, give up */

_Static_assert(ACK_RING_SLOTS > 0 &&
                   (ACK_RING_SLOTS & (ACK_RING_SLOTS - 1)) == 0,
               "the ack ring is indexed with a mask");
_Static_assert(INFLIGHT_MAX <= INBOX_CLIENT_INFLIGHT_MAX,
               "a connection's pipeline fits the client's in-flight bound");

/* ---- log-linear histogram ------------------------------------------------ */
/*
 * Bucket index of a value v (ns): below 2*SUB every value has its own
 * bucket; above, v's top SUB_BITS+1 bits pick one of SUB buckets in its
 * power of two. Values past 2^(MSB_MAX+1)-1 ns (about 2.4 hours) are
 * clamped into the last bucket.
 */
#define HIST_SUB_BITS 6u
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MSB_MAX 42u
#define HIST_BUCKETS ((HIST_MSB_MAX - HIST_SUB_BITS + 2u) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
};

static unsigned hist_index(uint64_t v)
{
    const uint64_t clamp = (UINT64_C(1) << (HIST_MSB_MAX + 1u)) - 1u;
    if (v > clamp)
        v = clamp;
    if (v < 2u * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The largest value that falls into bucket i. */
static uint64_t hist_bucket_high(unsigned i)
{
    if (i < 2u * HIST_SUB)
        return i;
    unsigned shift = i / HIST_SUB - 1u;
    uint64_t top = i % HIST_SUB + HIST_SUB;
    return ((top + 1u) << shift) - 1u;
}

static void hist_record(struct hist *h, uint64_t ns)
{
    unsigned i = hist_index(ns);
    h->counts[i]++;
    h->total++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

/* The value at or below which a fraction q of the observations fall (the
 * upper bound of its bucket, never above the largest value seen). */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t high = hist_bucket_high(i);
            return high < h->max_ns ? high : h->max_ns;
        }
    }
    return h->max_ns;
}

/* ---- state -----------------------------------------------------------------
 */

enum op { OP_ENQUEUE, OP_FETCH, OP_ACK, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"enqueue", "fetch", "ack"};

struct opts {
    const char *server;
    const char *tls_dir;
    const char *ca, *cert, *key;
    uint32_t connections;
    uint32_t threads;
    uint32_t inflight;
    uint32_t inboxes;
    uint32_t payload;
    uint32_t fetch_pct;
    uint32_t ack_pct;
    uint32_t fetch_max;
    double seconds;
    uint64_t count;
    uint32_t timeout_ms;
    uint32_t idle_us;
};

struct conn;

/* One call in flight; a connection owns `inflight` of them. */
struct call {
    struct conn *conn;
    uint64_t t0_ns;
    uint32_t inbox;
    enum op op;
    struct call *next_free;
};

struct conn {
    struct inbox_client *client;
    struct worker *w;
    struct call *calls;
    struct call *free;
    uint32_t inflight;
};

struct err_count {
    int code;
    uint64_t count;
};

struct ack_slot {
    uint32_t inbox;
    uint64_t seq;
};

struct worker {
    pthread_t thread;
    uint64_t rng;
    struct conn *conns;
    uint32_t conns_count;
    bool submitting;   /* until the time or count budget is spent */
    struct hist *hist; /* OP_COUNT of them */
    uint64_t ok[OP_COUNT], failed[OP_COUNT];
    uint64_t fetched_messages;
    struct ack_slot *acks; /* ring of recent enqueues, FIFO */
    uint32_t acks_head, acks_count;
    struct err_count errs[ERR_KINDS_MAX];
    uint64_t errs_other;
    char last_err[ERRMSG_BYTES];
    int setup_rc;
    uint64_t done_ns;
};

static struct {
    struct opts o;
    char ca[1024], cert[1024], key[1024];
    char (*names)[INBOX_NAME_BYTES];
    uint8_t *name_lens;
    uint8_t *payload;
    struct worker *workers;
    struct conn *conns;
    pthread_barrier_t ready, go;
    bool abort;
    bool freeing; /* callbacks must not touch their client */
    uint64_t start_ns, deadline_ns;
    _Atomic uint64_t submitted;
} G;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ---- errors ----------------------------------------------------------------
 */

static void err_note(struct worker *w, int code, const struct inbox_client *c)
{
    const char *msg = G.freeing ? "" : inbox_client_last_error_message(c);
    if (msg != NULL && msg[0] != '\0')
        snprintf(w->last_err, sizeof w->last_err, "%s", msg);
    for (unsigned i = 0; i < ERR_KINDS_MAX; i++) {
        if (w->errs[i].count != 0 && w->errs[i].code != code)
            continue;
        w->errs[i].code = code;
        w->errs[i].count++;
        return;
    }
    w->errs_other++;
}

/* ---- calls -----------------------------------------------------------------
 */

static void conn_fill(struct conn *cn);

static void call_done(struct call *k, int status)
{
    struct conn *cn = k->conn;
    struct worker *w = cn->w;
    if (status == 0) {
        hist_record(&w->hist[k->op], now_ns() - k->t0_ns);
        w->ok[k->op]++;
    } else {
        w->failed[k->op]++;
        err_note(w, status, cn->client);
    }
    k->next_free = cn->free;
    cn->free = k;
    cn->inflight--;
    conn_fill(cn); /* keep the pipeline full: sent within this poll round */
}

static void enqueue_done(void *arg, int status, uint64_t seq, bool dedup,
                         const uint8_t *msg_id)
{
    struct call *k = arg;
    struct worker *w = k->conn->w;
    if (status == 0 && G.o.ack_pct > 0) {
        uint32_t at = (w->acks_head + w->acks_count) & (ACK_RING_SLOTS - 1u);
        w->acks[at] = (struct ack_slot){.inbox = k->inbox, .seq = seq};
        if (w->acks_count < ACK_RING_SLOTS)
            w->acks_count++;
        else
            w->acks_head = (w->acks_head + 1u) & (ACK_RING_SLOTS - 1u);
    }
    call_done(k, status);
}

static void fetch_done(void *arg, int status,
                       const struct inbox_client_fetch_result *result)
{
    struct call *k = arg;
    if (status == 0)
        k->conn->w->fetched_messages += result->count;
    call_done(k, status);
}

static void ack_done(void *arg, int status, uint64_t acked_seq)
{
    call_done(arg, status);
}

/* True while this thread may submit one more call (takes it from the count
 * budget). Once false it stays false. */
static bool budget_take(struct worker *w)
{
    if (!w->submitting)
        return false;
    if (now_ns() >= G.deadline_ns ||
        (G.o.count != 0 &&
         atomic_fetch_add_explicit(&G.submitted, 1, memory_order_relaxed) >=
             G.o.count)) {
        w->submitting = false;
        return false;
    }
    return true;
}

static int call_submit(struct conn *cn, struct call *k)
{
    struct worker *w = cn->w;
    uint32_t r = (uint32_t)(xorshift(&w->rng) % 100u);
    k->inbox = (uint32_t)(xorshift(&w->rng) % G.o.inboxes);
    k->op = OP_ENQUEUE;
    if (r < G.o.fetch_pct)
        k->op = OP_FETCH;
    else if (r < G.o.fetch_pct + G.o.ack_pct && w->acks_count > 0)
        k->op = OP_ACK;
    k->t0_ns = now_ns();
    switch (k->op) {
    case OP_FETCH:
        return inbox_client_submit_fetch(
            cn->client, G.names[k->inbox], G.name_lens[k->inbox], 0,
            G.o.fetch_max, 0, 0, 0, G.o.timeout_ms, k, fetch_done);
    case OP_ACK: {
        struct ack_slot a = w->acks[w->acks_head];
        w->acks_head = (w->acks_head + 1u) & (ACK_RING_SLOTS - 1u);
        w->acks_count--;
        k->inbox = a.inbox;
        return inbox_client_submit_ack(cn->client, G.names[a.inbox],
                                       G.name_lens[a.inbox], a.seq,
                                       G.o.timeout_ms, k, ack_done);
    }
    case OP_ENQUEUE:
    case OP_COUNT:
        break;
    }
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint64_t r1 = xorshift(&w->rng), r2 = xorshift(&w->rng);
    memcpy(msg_id, &r1, 8);
    memcpy(msg_id + 8, &r2, 8);
    return inbox_client_submit_enqueue(
        cn->client, G.names[k->inbox], G.name_lens[k->inbox], msg_id, 0,
        G.payload, G.o.payload, G.o.timeout_ms, k, enqueue_done);
}

/* Submit until the connection has P calls in flight or the budget ends. A
 * call refused at submit counts as a failure; the rest wait for a later
 * round. */
static void conn_fill(struct conn *cn)
{
    struct worker *w = cn->w;
    while (cn->inflight < G.o.inflight && budget_take(w)) {
        struct call *k = cn->free;
        cn->free = k->next_free;
        int rc = call_submit(cn, k);
        if (rc != 0) {
            k->next_free = cn->free;
            cn->free = k;
            w->failed[k->op]++;
            err_note(w, rc, cn->client);
            return;
        }
        cn->inflight++;
    }
}

/* ---- threads ---------------------------------------------------------------
 */

static uint32_t worker_inflight(const struct worker *w)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->conns_count; i++)
        n += w->conns[i].inflight;
    return n;
}

/* Connect every client of this thread before the clock starts: TCP, TLS,
 * HELLO and the shard map (ROUTE). */
static int worker_connect(struct worker *w)
{
    for (uint32_t i = 0; i < w->conns_count; i++) {
        int rc = inbox_route(w->conns[i].client, NULL, G.o.timeout_ms);
        if (rc != 0) {
            snprintf(w->last_err, sizeof w->last_err, "%s",
                     inbox_client_last_error_message(w->conns[i].client));
            return rc;
        }
    }
    return 0;
}

/* One round of I/O over this thread's clients. */
static void worker_poll(struct worker *w)
{
    if (w->conns_count == 1) {
        inbox_client_poll(w->conns[0].client, POLL_BLOCK_MS);
        return;
    }
    int fired = 0;
    for (uint32_t i = 0; i < w->conns_count; i++) {
        int n = inbox_client_poll(w->conns[i].client, 0);
        if (n > 0)
            fired += n;
    }
    if (fired == 0 && G.o.idle_us > 0) {
        struct timespec nap = {.tv_sec = 0,
                               .tv_nsec = (long)G.o.idle_us * 1000L};
        nanosleep(&nap, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->setup_rc = worker_connect(w);
    pthread_barrier_wait(&G.ready);
    pthread_barrier_wait(&G.go); /* main has set the clock */
    if (G.abort)
        return NULL;
    w->submitting = true;
    uint64_t give_up_ns =
        G.deadline_ns + (uint64_t)G.o.timeout_ms * 1000000u + DRAIN_GRACE_NS;
    for (;;) {
        for (uint32_t i = 0; i < w->conns_count; i++)
            conn_fill(&w->conns[i]);
        if (!w->submitting && worker_inflight(w) == 0)
            break;
        if (now_ns() >= give_up_ns)
            break; /* inbox_client_free() fails what is left */
        worker_poll(w);
    }
    w->done_ns = now_ns();
    return NULL;
}

/* ---- set-up ----------------------------------------------------------------
 */

static void usage(int code)
{
    fprintf(code == 0 ? stdout : stderr,
            "usage: bench_load [options]\n"
            "  --server HOST:PORT   inboxd to load (127.0.0.1:7420)\n"
            "  --tls-dir DIR        ca.crt, admin.crt, admin.key from DIR\n"
            "                       (inboxd makes them in DATA/tls)\n"
            "  --ca F --cert F --key F   or each file by itself\n"
            "  --connections N      clients, one connection each (50)\n"
            "  --threads T          threads they are spread over "
            "(0: one per client)\n"
            "  --inflight P         calls in flight per client (16)\n"
            "  --inboxes K          inboxes drawn at random (100000)\n"
            "  --payload BYTES      enqueued payload size (100)\n"
            "  --fetch-pct N        percent of calls that FETCH (0)\n"
            "  --ack-pct N          percent of calls that ACK (0)\n"
            "  --fetch-max N        messages per FETCH (10)\n"
            "  --seconds S          stop submitting after S seconds (10)\n"
            "  --count C            ... or after C calls (0: no bound)\n"
            "  --timeout-ms MS      each call's deadline (10000)\n"
            "  --idle-us US         nap of a multi-client thread that "
            "found nothing (50)\n");
    exit(code);
}

static uint32_t arg_u32(const char *name, const char *v, uint32_t lo,
                        uint32_t hi)
{
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "bench_load: %s must be %u..%u\n", name, lo, hi);
        exit(2);
    }
    return (uint32_t)x;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.server = "127.0.0.1:7420",
                       .connections = 50,
                       .inflight = 16,
                       .inboxes = 100000,
                       .payload = 100,
                       .fetch_max = 10,
                       .seconds = 10,
                       .timeout_ms = 10000,
                       .idle_us = 50};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            usage(0);
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (v == NULL)
            usage(2);
        if (!strcmp(a, "--server"))
            o->server = v;
        else if (!strcmp(a, "--tls-dir"))
            o->tls_dir = v;
        else if (!strcmp(a, "--ca"))
            o->ca = v;
        else if (!strcmp(a, "--cert"))
            o->cert = v;
        else if (!strcmp(a, "--key"))
            o->key = v;
        else if (!strcmp(a, "--connections"))
            o->connections = arg_u32(a, v, 1, CONNECTIONS_MAX);
        else if (!strcmp(a, "--threads"))
            o->threads = arg_u32(a, v, 0, CONNECTIONS_MAX);
        else if (!strcmp(a, "--inflight"))
            o->inflight = arg_u32(a, v, 1, INFLIGHT_MAX);
        else if (!strcmp(a, "--inboxes"))
            o->inboxes = arg_u32(a, v, 1, INBOXES_MAX);
        else if (!strcmp(a, "--payload"))
            o->payload = arg_u32(a, v, 0, INBOX_PAYLOAD_BYTES_MAX);
        else if (!strcmp(a, "--fetch-pct"))
            o->fetch_pct = arg_u32(a, v, 0, 100);
        else if (!strcmp(a, "--ack-pct"))
            o->ack_pct = arg_u32(a, v, 0, 100);
        else if (!strcmp(a, "--fetch-max"))
            o->fetch_max = arg_u32(a, v, 1, UINT32_MAX);
        else if (!strcmp(a, "--seconds"))
            o->seconds = atof(v);
        else if (!strcmp(a, "--count"))
            o->count = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--timeout-ms"))
            o->timeout_ms = arg_u32(a, v, 1, INBOX_CLIENT_TIMEOUT_MS_MAX);
        else if (!strcmp(a, "--idle-us"))
            o->idle_us = arg_u32(a, v, 0, 1000000);
        else
            usage(2);
    }
    if (o->threads == 0 || o->threads > o->connections)
        o->threads = o->connections;
    if (o->seconds <= 0 || o->seconds > SECONDS_MAX) {
        fprintf(stderr, "bench_load: --seconds must be in (0, %.0f]\n",
                SECONDS_MAX);
        exit(2);
    }
    if (o->fetch_pct + o->ack_pct > 100) {
        fprintf(stderr, "bench_load: --fetch-pct + --ack-pct > 100\n");
        exit(2);
    }
}

static void tls_paths(void)
{
    const struct opts *o = &G.o;
    if (o->tls_dir != NULL) {
        snprintf(G.ca, sizeof G.ca, "%s/ca.crt", o->tls_dir);
        snprintf(G.cert, sizeof G.cert, "%s/admin.crt", o->tls_dir);
        snprintf(G.key, sizeof G.key, "%s/admin.key", o->tls_dir);
    }
    if (o->ca != NULL)
        snprintf(G.ca, sizeof G.ca, "%s", o->ca);
    if (o->cert != NULL)
        snprintf(G.cert, sizeof G.cert, "%s", o->cert);
    if (o->key != NULL)
        snprintf(G.key, sizeof G.key, "%s", o->key);
    if (G.ca[0] == '\0' || G.cert[0] == '\0' || G.key[0] == '\0') {
        fprintf(stderr, "bench_load: give --tls-dir, or --ca, --cert and "
                        "--key\n");
        exit(2);
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL) {
        fprintf(stderr, "bench_load: out of memory\n");
        exit(1);
    }
    return p;
}

static void setup_data(void)
{
    G.names = xcalloc(G.o.inboxes, sizeof *G.names);
    G.name_lens = xcalloc(G.o.inboxes, 1);
    G.payload = xcalloc(G.o.payload + 1u, 1);
    for (uint32_t i = 0; i < G.o.payload; i++)
        G.payload[i] = (uint8_t)('a' + i % 26u);
    for (uint32_t i = 0; i < G.o.inboxes; i++) {
        int len = snprintf(G.names[i], INBOX_NAME_BYTES, "user%08u", i);
        G.name_lens[i] = (uint8_t)len;
    }
}

/* Make the clients (they connect lazily) and deal them out to threads. */
static void setup_clients(void)
{
    const char *seeds[] = {G.o.server};
    struct inbox_client_config cfg = {.seeds = seeds,
                                      .seeds_count = 1,
                                      .ca_path = G.ca,
                                      .cert_path = G.cert,
                                      .key_path = G.key,
                                      .client_name = "bench_load",
                                      .inflight_max = G.o.inflight};
    G.conns = xcalloc(G.o.connections, sizeof *G.conns);
    G.workers = xcalloc(G.o.threads, sizeof *G.workers);
    for (uint32_t t = 0; t < G.o.threads; t++) {
        struct worker *w = &G.workers[t];
        w->rng = 0x9E3779B97F4A7C15ull ^ (t + 1u) * 0xBF58476D1CE4E5B9ull;
        w->hist = xcalloc(OP_COUNT, sizeof *w->hist);
        w->acks = xcalloc(ACK_RING_SLOTS, sizeof *w->acks);
    }
    for (uint32_t i = 0; i < G.o.connections; i++) {
        struct conn *cn = &G.conns[i];
        char why[ERRMSG_BYTES] = "";
        int rc = inbox_client_new(&cfg, &cn->client, why, sizeof why);
        if (rc != 0) {
            fprintf(stderr, "bench_load: client: %s (%s) %s\n",
                    inbox_strerror(rc), inbox_err_name(rc), why);
            exit(rc == INBOX_ETLS_CONFIG ? 2 : 1);
        }
        cn->calls = xcalloc(G.o.inflight, sizeof *cn->calls);
        for (uint32_t k = 0; k < G.o.inflight; k++) {
            cn->calls[k].conn = cn;
            cn->calls[k].next_free = cn->free;
            cn->free = &cn->calls[k];
        }
    }
    /* Contiguous runs of clients per thread: thread t owns
     * [t*N/T, (t+1)*N/T). */
    for (uint32_t t = 0; t < G.o.threads; t++) {
        struct worker *w = &G.workers[t];
        uint32_t lo = (uint32_t)((uint64_t)t * G.o.connections / G.o.threads);
        uint32_t hi =
            (uint32_t)((uint64_t)(t + 1u) * G.o.connections / G.o.threads);
        w->conns = &G.conns[lo];
        w->conns_count = hi - lo;
        for (uint32_t i = lo; i < hi; i++)
            G.conns[i].w = w;
    }
}

/* ---- report
 * ------------------------------------------------------------------ */

static void print_machine(void)
{
    struct utsname u;
    uname(&u);
    char model[128] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p != NULL) {
                    snprintf(model, sizeof model, "%s", p + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        }
        fclose(f);
    }
    printf("machine: %ld cores, %s, %s %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           model, u.sysname, u.release);
}

static void print_loadavg(const char *when)
{
    char buf[128] = "unknown";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fgets(buf, sizeof buf, f) == NULL)
            snprintf(buf, sizeof buf, "unknown");
        fclose(f);
    }
    /* "1m 5m 15m running/total lastpid": keep the three averages */
    char a[16] = "?", b[16] = "?", c[16] = "?";
    sscanf(buf, "%15s %15s %15s", a, b, c);
    printf("load average %s: %s %s %s (1/5/15 min)\n", when, a, b, c);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void print_errors(void)
{
    struct err_count all[ERR_KINDS_MAX * 4] = {{0}};
    size_t kinds = 0;
    uint64_t other = 0;
    const char *last = "";
    for (uint32_t t = 0; t < G.o.threads; t++) {
        const struct worker *w = &G.workers[t];
        other += w->errs_other;
        if (w->last_err[0] != '\0')
            last = w->last_err;
        for (unsigned i = 0; i < ERR_KINDS_MAX && w->errs[i].count; i++) {
            size_t j = 0;
            while (j < kinds && all[j].code != w->errs[i].code)
                j++;
            if (j == kinds) {
                if (kinds == sizeof all / sizeof all[0]) {
                    other += w->errs[i].count;
                    continue;
                }
                all[kinds++].code = w->errs[i].code;
            }
            all[j].count += w->errs[i].count;
        }
    }
    if (kinds == 0 && other == 0) {
        printf("errors: none\n");
        return;
    }
    printf("errors:");
    for (size_t j = 0; j < kinds; j++)
        printf(" %s=%" PRIu64, inbox_err_name(all[j].code), all[j].count);
    if (other)
        printf(" other=%" PRIu64, other);
    printf(" (last message: \"%s\")\n", last);
}

static void print_client_stats(void)
{
    struct inbox_client_stats sum = {0};
    for (uint32_t i = 0; i < G.o.connections; i++) {
        if (G.conns[i].client == NULL)
            continue; /* freed with calls in flight */
        struct inbox_client_stats s;
        inbox_client_stats_get(G.conns[i].client, &s);
        sum.requests_sent += s.requests_sent;
        sum.responses_ignored += s.responses_ignored;
        sum.retries += s.retries;
        sum.redirects += s.redirects;
        sum.connects += s.connects;
    }
    printf("client: requests_sent=%" PRIu64 " retries=%" PRIu64
           " redirects=%" PRIu64 " connects=%" PRIu64
           " responses_ignored=%" PRIu64 "\n",
           sum.requests_sent, sum.retries, sum.redirects, sum.connects,
           sum.responses_ignored);
}

/* Returns the number of failed calls. */
static uint64_t report(uint64_t elapsed_ns, double cpu_s)
{
    struct hist *all = xcalloc(OP_COUNT, sizeof *all);
    uint64_t ok[OP_COUNT] = {0}, failed[OP_COUNT] = {0}, fetched = 0;
    for (uint32_t t = 0; t < G.o.threads; t++) {
        const struct worker *w = &G.workers[t];
        for (int op = 0; op < OP_COUNT; op++) {
            hist_merge(&all[op], &w->hist[op]);
            ok[op] += w->ok[op];
            failed[op] += w->failed[op];
        }
        fetched += w->fetched_messages;
    }
    double secs = (double)elapsed_ns / 1e9;
    uint64_t ok_all = ok[OP_ENQUEUE] + ok[OP_FETCH] + ok[OP_ACK];
    uint64_t failed_all =
        failed[OP_ENQUEUE] + failed[OP_FETCH] + failed[OP_ACK];
    printf("total: ops=%" PRIu64 " in %.2f s ops/s=%.0f failed=%" PRIu64
           " client_cpu=%.0f%% (of one core)\n",
           ok_all, secs, (double)ok_all / secs, failed_all,
           100.0 * cpu_s / secs);
    for (int op = 0; op < OP_COUNT; op++) {
        if (ok[op] + failed[op] == 0)
            continue;
        const struct hist *h = &all[op];
        printf("%s: ops=%" PRIu64 " ops/s=%.0f p50_ms=%.3f p99_ms=%.3f "
               "p999_ms=%.3f max_ms=%.3f failed=%" PRIu64 "\n",
               op_names[op], ok[op], (double)ok[op] / secs,
               ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.99)),
               ms(hist_quantile(h, 0.999)), ms(h->max_ns), failed[op]);
    }
    if (ok[OP_FETCH] > 0)
        printf("fetch: %.2f messages per fetch\n",
               (double)fetched / (double)ok[OP_FETCH]);
    free(all);
    return failed_all;
}

int main(int argc, char **argv)
{
    parse(argc, argv, &G.o);
    tls_paths();
    setup_data();
    setup_clients();
    pthread_barrier_init(&G.ready, NULL, G.o.threads + 1u);
    pthread_barrier_init(&G.go, NULL, G.o.threads + 1u);
    for (uint32_t t = 0; t < G.o.threads; t++) {
        int rc = pthread_create(&G.workers[t].thread, NULL, worker_main,
                                &G.workers[t]);
        if (rc != 0) {
            fprintf(stderr, "bench_load: pthread_create: %s\n", strerror(rc));
            exit(1);
        }
    }
    pthread_barrier_wait(&G.ready); /* every client connected, or failed */
    int setup_rc = 0;
    const char *setup_msg = "";
    for (uint32_t t = 0; t < G.o.threads && setup_rc == 0; t++) {
        setup_rc = G.workers[t].setup_rc;
        setup_msg = G.workers[t].last_err;
    }
    print_machine();
    printf("config: server=%s connections=%u threads=%u inflight=%u "
           "inboxes=%u payload=%uB mix=enqueue:%u,fetch:%u,ack:%u "
           "fetch_max=%u seconds=%.1f count=%" PRIu64 " timeout_ms=%u\n",
           G.o.server, G.o.connections, G.o.threads, G.o.inflight, G.o.inboxes,
           G.o.payload, 100u - G.o.fetch_pct - G.o.ack_pct, G.o.fetch_pct,
           G.o.ack_pct, G.o.fetch_max, G.o.seconds, G.o.count, G.o.timeout_ms);
    print_loadavg("before");
    if (setup_rc != 0) {
        fprintf(stderr, "bench_load: cannot reach %s: %s (%s) %s\n", G.o.server,
                inbox_strerror(setup_rc), inbox_err_name(setup_rc), setup_msg);
        G.abort = true;
    }
    fflush(stdout);
    double cpu0 = cpu_seconds();
    G.start_ns = now_ns();
    G.deadline_ns = G.start_ns + (uint64_t)(G.o.seconds * 1e9);
    pthread_barrier_wait(&G.go);
    uint64_t end_ns = G.start_ns;
    for (uint32_t t = 0; t < G.o.threads; t++) {
        pthread_join(G.workers[t].thread, NULL);
        if (G.workers[t].done_ns > end_ns)
            end_ns = G.workers[t].done_ns;
    }
    double cpu_s = cpu_seconds() - cpu0;
    if (G.abort)
        return 3;
    /* Calls still in flight after the grace period: freeing their client
     * completes them with INBOX_ESHUTDOWN (counted as failures). */
    G.freeing = true;
    for (uint32_t i = 0; i < G.o.connections; i++) {
        if (G.conns[i].inflight > 0) {
            inbox_client_free(G.conns[i].client);
            G.conns[i].client = NULL;
        }
    }
    uint64_t failed = report(end_ns - G.start_ns, cpu_s);
    print_client_stats();
    print_errors();
    print_loadavg("after");
    for (uint32_t i = 0; i < G.o.connections; i++)
        inbox_client_free(G.conns[i].client);
    return failed ? 1 : 0;
}
