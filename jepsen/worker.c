/*
 * worker.c — the Jepsen client: concurrent operations on a live inboxd
 * cluster, every one of them recorded.
 *
 * T threads, each with its own libinbox client (a client belongs to one
 * thread), run for --seconds. Each thread draws operations from the mix
 * (enqueue, fetch, ack, seen_set, seen_get) over an inbox set of a few hot
 * inboxes (most of the traffic) and many cold ones, and writes one JSON
 * line before it starts an operation ("invoke") and one when it ends:
 *
 *   {"t":NS,"p":P,"type":"invoke"|"ok"|"fail"|"info","f":F,"inbox":K,
 *    "value":{...}}
 *
 * t is CLOCK_MONOTONIC in ns (the clock run.py stamps its faults with, so
 * the two histories share a time line). "ok" means the operation took
 * effect (or, for a read, returned this value); "fail" means it certainly
 * did not; "info" means its outcome is unknown (a timeout, a lost
 * connection): it may take effect at any later time. As in Jepsen, a
 * thread whose operation ends "info" continues as a new process (p grows
 * by PROCESS_GENERATION), since the old one may still be in flight.
 *
 * Enqueues carry our own msg ids: seed, worker, thread and a counter, so
 * every id in a run is unique and the checker can name each message. The
 * payload is the hex of the id, so a fetch can verify it. An enqueue that
 * ends "info" is kept and retried later as a new operation with the SAME
 * msg id: the server's dedup must give it at most one seq.
 *
 * --drain: instead of the random mix, fetch every inbox of the set from
 * seq 0 to its end, page by page (recorded the same way, with
 * "phase":"drain"): the final read the checker looks for lost messages in.
 *
 * Exit: 0 done, 1 the drain could not read every inbox, 2 usage, 3 the
 * client could not be created.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inbox/client.h"
#include "inbox/error.h"
#include "inbox/limits.h"

#define THREADS_MAX 64u
#define SEEDS_MAX 8u
#define INBOX_NAME_BYTES 32u
#define HOT_MAX 64u
#define COLD_MAX 100000u
#define UNKNOWN_MAX 256u    /* unknown enqueues a thread keeps retrying */
#define FETCH_MESSAGES 256u /* page size of a run fetch */
#define DRAIN_FETCH_MESSAGES 1024u
#define DRAIN_ATTEMPTS_MAX 60u /* per page; 0.5 s apart */
#define DRAIN_RETRY_NS 500000000ll
#define PROCESS_GENERATION 100000
#define LINE_BYTES_INITIAL 4096u
#define HOT_PERCENT 80u      /* share of ops that go to a hot inbox */
#define SEEN_JITTER_MS 3000u /* seen_set values wander below "now" */

_Static_assert(FETCH_MESSAGES <= INBOX_FETCH_MESSAGES_MAX, "page fits");
_Static_assert(DRAIN_FETCH_MESSAGES <= INBOX_FETCH_MESSAGES_MAX, "page fits");
_Static_assert(THREADS_MAX * 1000 < PROCESS_GENERATION, "process ids");

enum op_kind {
    OP_ENQUEUE,
    OP_FETCH,
    OP_ACK,
    OP_SEEN_SET,
    OP_SEEN_GET,
    OP_KINDS
};
static const char *const op_names[OP_KINDS] = {"enqueue", "fetch", "ack",
                                               "seen_set", "seen_get"};

struct options {
    const char *seeds[SEEDS_MAX];
    size_t seeds_count;
    const char *ca, *cert, *key, *out;
    double seconds;
    uint64_t seed;
    unsigned threads, worker, hot, cold;
    unsigned mix[OP_KINDS]; /* weights */
    uint32_t timeout_ms;
    uint32_t think_ms; /* random pause 0..think_ms between ops */
    bool drain;
};

static struct options opt;
static FILE *out;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- small helpers ---------------------------------------------------------
 */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000ll,
                          .tv_nsec = ns % 1000000000ll};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* splitmix64: a thread's private random stream, seeded from --seed. */
static uint64_t rnd_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n == 0 ? 0 : rnd_next(s) % n;
}

static void hex_of(const uint8_t *b, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[b[i] >> 4];
        hex[2 * i + 1] = digits[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

/* ---- one JSON line ----------------------------------------------------------
 */
/*
 * A line is built in the thread's own growing buffer, then written whole
 * under out_lock, so lines of different threads never interleave.
 */
struct line {
    char *buf;
    size_t len, cap;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
line_add(struct line *l, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(l->buf + l->len, l->cap - l->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < l->cap - l->len) {
            l->len += (size_t)n;
            return;
        }
        size_t cap = l->cap * 2 + (size_t)n;
        char *buf = realloc(l->buf, cap);
        if (buf == NULL)
            abort();
        l->buf = buf;
        l->cap = cap;
    }
}

static void line_start(struct line *l, int64_t p, const char *type,
                       enum op_kind f, const char *inbox)
{
    l->len = 0;
    line_add(l,
             "{\"t\":%" PRId64 ",\"p\":%" PRId64
             ",\"type\":\"%s\",\"f\":\"%s\",\"inbox\":\"%s\"",
             now_ns(), p, type, op_names[f], inbox);
}

static void line_emit(struct line *l)
{
    line_add(l, "}\n");
    pthread_mutex_lock(&out_lock);
    fwrite(l->buf, 1, l->len, out);
    fflush(out); /* a killed worker loses at most the line being written */
    pthread_mutex_unlock(&out_lock);
}

static void line_error(struct line *l, int rc)
{
    line_add(l, ",\"error\":\"%s\"", inbox_err_name(rc));
}

/* A write whose status is not ok: certainly not applied ("fail") only when
 * the server (or the submit) refused it for good; anything else — a
 * timeout, a lost connection, a retryable error at the deadline — leaves
 * its outcome unknown ("info"). */
static const char *write_outcome(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case INBOX_EINBOX_FULL_MESSAGES:
    case INBOX_EINBOX_FULL_BYTES:
    case INBOX_EPAYLOAD_TOO_LARGE:
    case INBOX_EKEY_INVALID:
    case INBOX_EACK_BEYOND_LAST:
    case INBOX_EINVAL:
    case INBOX_EBUSY:
    case INBOX_EDENIED:
        return "fail";
    default:
        return "info";
    }
}

/* ---- a worker thread
 * ---------------------------------------------------------- */

struct unknown_enqueue {
    unsigned inbox;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
};

struct thread_state {
    unsigned index;
    pthread_t tid;
    struct inbox_client *client;
    uint64_t rnd;
    int64_t p;
    uint64_t counter;
    struct line line;
    uint64_t *ack_hint; /* per inbox: a seq this thread saw, to ack up to */
    struct unknown_enqueue unknown[UNKNOWN_MAX];
    size_t unknown_count;
    uint64_t ops, oks;
    int rc; /* exit status of the thread */
};

static void inbox_name(unsigned i, char *name)
{
    if (i < opt.hot)
        snprintf(name, INBOX_NAME_BYTES, "hot-%u", i);
    else
        snprintf(name, INBOX_NAME_BYTES, "cold-%u", i - opt.hot);
}

static unsigned inbox_pick(struct thread_state *ts)
{
    if (opt.cold == 0 ||
        (opt.hot > 0 && rnd_below(&ts->rnd, 100) < HOT_PERCENT))
        return (unsigned)rnd_below(&ts->rnd, opt.hot);
    return opt.hot + (unsigned)rnd_below(&ts->rnd, opt.cold);
}

static void invoked_info(struct thread_state *ts, const char *type)
{
    if (strcmp(type, "info") == 0)
        ts->p += PROCESS_GENERATION;
}

static void unknown_forget(struct thread_state *ts, size_t i)
{
    ts->unknown[i] = ts->unknown[--ts->unknown_count];
}

/* ENQUEUE: a new message, or the retry of an unknown one (same msg id). */
static void op_enqueue(struct thread_state *ts)
{
    struct unknown_enqueue m;
    size_t retry = SIZE_MAX;
    if (ts->unknown_count > 0 && rnd_below(&ts->rnd, 2) == 0) {
        retry = (size_t)rnd_below(&ts->rnd, ts->unknown_count);
        m = ts->unknown[retry];
    } else {
        m.inbox = inbox_pick(ts);
        uint64_t c = ++ts->counter;
        uint32_t s = (uint32_t)opt.seed;
        m.msg_id[0] = (uint8_t)(s >> 24);
        m.msg_id[1] = (uint8_t)(s >> 16);
        m.msg_id[2] = (uint8_t)(s >> 8);
        m.msg_id[3] = (uint8_t)s;
        m.msg_id[4] = (uint8_t)(opt.worker >> 8);
        m.msg_id[5] = (uint8_t)opt.worker;
        m.msg_id[6] = (uint8_t)(ts->index >> 8);
        m.msg_id[7] = (uint8_t)ts->index;
        for (int i = 0; i < 8; i++)
            m.msg_id[8 + i] = (uint8_t)(c >> (56 - 8 * i));
    }
    char name[INBOX_NAME_BYTES], hex[2 * INBOX_MSG_ID_BYTES + 1];
    inbox_name(m.inbox, name);
    hex_of(m.msg_id, INBOX_MSG_ID_BYTES, hex);

    line_start(&ts->line, ts->p, "invoke", OP_ENQUEUE, name);
    line_add(&ts->line, ",\"value\":{\"id\":\"%s\",\"retry\":%s}", hex,
             retry == SIZE_MAX ? "false" : "true");
    line_emit(&ts->line);

    uint64_t seq = 0;
    bool dedup = false;
    int rc = inbox_enqueue(ts->client, name, strlen(name), m.msg_id, 0, hex,
                           2 * INBOX_MSG_ID_BYTES, &seq, &dedup, NULL,
                           opt.timeout_ms);
    const char *type = write_outcome(rc);
    line_start(&ts->line, ts->p, type, OP_ENQUEUE, name);
    line_add(&ts->line, ",\"value\":{\"id\":\"%s\"", hex);
    if (rc == 0)
        line_add(&ts->line, ",\"seq\":%" PRIu64 ",\"dedup\":%s", seq,
                 dedup ? "true" : "false");
    line_add(&ts->line, "}");
    if (rc != 0)
        line_error(&ts->line, rc);
    line_emit(&ts->line);

    if (rc == 0) {
        ts->oks++;
        if (seq > ts->ack_hint[m.inbox])
            ts->ack_hint[m.inbox] = seq;
    }
    if (strcmp(type, "info") == 0) {
        if (retry == SIZE_MAX && ts->unknown_count < UNKNOWN_MAX)
            ts->unknown[ts->unknown_count++] = m;
    } else if (retry != SIZE_MAX) {
        unknown_forget(ts, retry);
    }
    invoked_info(ts, type);
}

/* Writes a fetch result: bounds, then [seq,"id"] per message; a payload
 * that is not the hex of its msg id is counted in "bad_payload". */
static void fetch_value(struct line *l, uint64_t after, uint32_t max,
                        const struct inbox_client_fetch_result *r)
{
    line_add(l,
             ",\"value\":{\"after\":%" PRIu64 ",\"max\":%" PRIu32
             ",\"acked\":%" PRIu64 ",\"last\":%" PRIu64 ",\"msgs\":[",
             after, max, r->acked_seq, r->last_seq);
    unsigned bad = 0;
    for (size_t i = 0; i < r->count; i++) {
        const struct inbox_client_message *m = &r->messages[i];
        char hex[2 * INBOX_MSG_ID_BYTES + 1];
        hex_of(m->msg_id, INBOX_MSG_ID_BYTES, hex);
        if (m->payload_len != 2 * INBOX_MSG_ID_BYTES ||
            memcmp(m->payload, hex, 2 * INBOX_MSG_ID_BYTES) != 0)
            bad++;
        line_add(l, "%s[%" PRIu64 ",\"%s\"]", i ? "," : "", m->seq, hex);
    }
    line_add(l, "],\"bad_payload\":%u}", bad);
}

/* One recorded FETCH; returns its status and leaves the result in *res. */
static int fetch_recorded(struct thread_state *ts, const char *name,
                          uint64_t after, uint32_t max, const char *phase,
                          struct inbox_client_fetch_result **res)
{
    line_start(&ts->line, ts->p, "invoke", OP_FETCH, name);
    line_add(&ts->line,
             ",\"value\":{\"after\":%" PRIu64 ",\"max\":%" PRIu32 "}%s%s%s",
             after, max, phase ? ",\"phase\":\"" : "", phase ? phase : "",
             phase ? "\"" : "");
    line_emit(&ts->line);
    *res = NULL;
    int rc = inbox_fetch(ts->client, name, strlen(name), after, max, 0, 0, 0,
                         res, opt.timeout_ms);
    /* A read has no effect: any error is a "fail". */
    line_start(&ts->line, ts->p, rc == 0 ? "ok" : "fail", OP_FETCH, name);
    if (rc == 0)
        fetch_value(&ts->line, after, max, *res);
    else
        line_error(&ts->line, rc);
    if (phase)
        line_add(&ts->line, ",\"phase\":\"%s\"", phase);
    line_emit(&ts->line);
    return rc;
}

static void op_fetch(struct thread_state *ts)
{
    unsigned i = inbox_pick(ts);
    char name[INBOX_NAME_BYTES];
    inbox_name(i, name);
    /* Mostly from 0 (the whole pending window, as a reconnecting device
     * reads), sometimes from a seq this thread knows. */
    uint64_t after = 0;
    if (ts->ack_hint[i] > 0 && rnd_below(&ts->rnd, 4) == 0)
        after = rnd_below(&ts->rnd, ts->ack_hint[i] + 1);
    struct inbox_client_fetch_result *res;
    int rc = fetch_recorded(ts, name, after, FETCH_MESSAGES, NULL, &res);
    if (rc == 0) {
        ts->oks++;
        if (res->count > 0) {
            uint64_t s = res->messages[rnd_below(&ts->rnd, res->count)].seq;
            if (s > ts->ack_hint[i])
                ts->ack_hint[i] = s;
        }
        inbox_fetch_result_free(res);
    }
}

/* A write that takes one u64 and answers one (ack, seen_set): its invoke
 * line, {"value":{IN:v}}, and its completion, {"value":{IN:v,RES:got}}
 * (RES only when it succeeded). */
static void u64_write_invoke(struct thread_state *ts, enum op_kind op,
                             const char *name, const char *in, uint64_t v)
{
    line_start(&ts->line, ts->p, "invoke", op, name);
    line_add(&ts->line, ",\"value\":{\"%s\":%" PRIu64 "}", in, v);
    line_emit(&ts->line);
}

static void u64_write_done(struct thread_state *ts, enum op_kind op,
                           const char *name, const char *in, uint64_t v,
                           const char *res, uint64_t got, int rc)
{
    const char *type = write_outcome(rc);
    line_start(&ts->line, ts->p, type, op, name);
    line_add(&ts->line, ",\"value\":{\"%s\":%" PRIu64, in, v);
    if (rc == 0)
        line_add(&ts->line, ",\"%s\":%" PRIu64, res, got);
    line_add(&ts->line, "}");
    if (rc != 0)
        line_error(&ts->line, rc);
    line_emit(&ts->line);
    if (rc == 0)
        ts->oks++;
    invoked_info(ts, type);
}

static void op_ack(struct thread_state *ts)
{
    unsigned i = inbox_pick(ts);
    if (ts->ack_hint[i] == 0) { /* nothing known here yet: read instead */
        op_fetch(ts);
        return;
    }
    char name[INBOX_NAME_BYTES];
    inbox_name(i, name);
    uint64_t up_to = ts->ack_hint[i];
    u64_write_invoke(ts, OP_ACK, name, "up_to", up_to);
    uint64_t acked = 0;
    int rc = inbox_ack(ts->client, name, strlen(name), up_to, &acked,
                       opt.timeout_ms);
    u64_write_done(ts, OP_ACK, name, "up_to", up_to, "acked", acked, rc);
}

static void op_seen_set(struct thread_state *ts)
{
    unsigned i = inbox_pick(ts);
    char name[INBOX_NAME_BYTES];
    inbox_name(i, name);
    /* A value near "now" but wandering below it, so some sets are older
     * than the stored value (a no-op success that must not move it). */
    uint64_t v = (uint64_t)(now_ns() / 1000000) + SEEN_JITTER_MS -
                 rnd_below(&ts->rnd, SEEN_JITTER_MS);
    u64_write_invoke(ts, OP_SEEN_SET, name, "ts", v);
    uint64_t stored = 0;
    int rc = inbox_seen_set(ts->client, name, strlen(name), v, &stored,
                            opt.timeout_ms);
    u64_write_done(ts, OP_SEEN_SET, name, "ts", v, "stored", stored, rc);
}

static void op_seen_get(struct thread_state *ts)
{
    unsigned i = inbox_pick(ts);
    char name[INBOX_NAME_BYTES];
    inbox_name(i, name);
    line_start(&ts->line, ts->p, "invoke", OP_SEEN_GET, name);
    line_emit(&ts->line);
    struct inbox_client_key key = {.ptr = name, .len = strlen(name)};
    struct inbox_client_key_item item = {0};
    int rc = inbox_seen_get(ts->client, &key, 1, 0, &item, opt.timeout_ms);
    if (rc == 0 && item.status != 0)
        rc = item.status;
    line_start(&ts->line, ts->p, rc == 0 ? "ok" : "fail", OP_SEEN_GET, name);
    if (rc == 0)
        line_add(&ts->line, ",\"value\":{\"ts\":%" PRIu64 "}", item.value);
    else
        line_error(&ts->line, rc);
    line_emit(&ts->line);
    if (rc == 0)
        ts->oks++;
}

static enum op_kind op_pick(struct thread_state *ts)
{
    unsigned total = 0;
    for (int k = 0; k < OP_KINDS; k++)
        total += opt.mix[k];
    unsigned r = (unsigned)rnd_below(&ts->rnd, total);
    for (int k = 0; k < OP_KINDS; k++) {
        if (r < opt.mix[k])
            return (enum op_kind)k;
        r -= opt.mix[k];
    }
    return OP_FETCH;
}

/* --drain: every inbox of the set, from seq 0 to its last seq, page by
 * page; a page that fails is retried (each attempt recorded). */
static int drain_inbox(struct thread_state *ts, unsigned i)
{
    char name[INBOX_NAME_BYTES];
    inbox_name(i, name);
    uint64_t after = 0;
    for (unsigned attempt = 0; attempt < DRAIN_ATTEMPTS_MAX;) {
        struct inbox_client_fetch_result *res;
        int rc = fetch_recorded(ts, name, after, DRAIN_FETCH_MESSAGES, "drain",
                                &res);
        if (rc != 0) {
            attempt++;
            sleep_ns(DRAIN_RETRY_NS);
            continue;
        }
        bool done = res->count == 0 ||
                    res->messages[res->count - 1].seq >= res->last_seq;
        if (!done)
            after = res->messages[res->count - 1].seq;
        inbox_fetch_result_free(res);
        if (done)
            return 0;
    }
    fprintf(stderr, "jepsen_worker: drain of %s failed\n", name);
    return 1;
}

static void *thread_main(void *arg)
{
    struct thread_state *ts = arg;
    if (opt.drain) {
        for (unsigned i = 0; i < opt.hot + opt.cold; i++)
            if (i % opt.threads == ts->index && drain_inbox(ts, i) != 0)
                ts->rc = 1;
        return NULL;
    }
    int64_t end = now_ns() + (int64_t)(opt.seconds * 1e9);
    while (now_ns() < end) {
        switch (op_pick(ts)) {
        case OP_ENQUEUE:
            op_enqueue(ts);
            break;
        case OP_FETCH:
            op_fetch(ts);
            break;
        case OP_ACK:
            op_ack(ts);
            break;
        case OP_SEEN_SET:
            op_seen_set(ts);
            break;
        case OP_SEEN_GET:
            op_seen_get(ts);
            break;
        case OP_KINDS:
            break;
        }
        ts->ops++;
        if (opt.think_ms > 0)
            sleep_ns((int64_t)rnd_below(&ts->rnd, opt.think_ms + 1) * 1000000);
    }
    return NULL;
}

/* ---- command line -----------------------------------------------------------
 */

static void usage(void)
{
    fprintf(stderr,
            "usage: jepsen_worker --seed-addr HOST:PORT [...] --ca F --cert F "
            "--key F\n"
            "  [--out FILE] [--seconds S] [--seed N] [--threads T] "
            "[--worker W]\n"
            "  [--hot H] [--cold C] [--timeout-ms MS] [--think-ms MS]\n"
            "  [--mix enqueue,fetch,ack,seen_set,seen_get weights] "
            "[--drain]\n");
}

static bool parse_u(const char *s, unsigned long long max,
                    unsigned long long *v)
{
    char *end;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *v <= max;
}

static int parse_args(int argc, char **argv)
{
    opt = (struct options){.seconds = 30,
                           .seed = 1,
                           .threads = 4,
                           .hot = 3,
                           .cold = 100,
                           .timeout_ms = 2000,
                           .think_ms = 2,
                           .mix = {40, 30, 10, 10, 10}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        if (strcmp(a, "--drain") == 0) {
            opt.drain = true;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--seed-addr") == 0 && opt.seeds_count < SEEDS_MAX)
            opt.seeds[opt.seeds_count++] = v;
        else if (strcmp(a, "--ca") == 0)
            opt.ca = v;
        else if (strcmp(a, "--cert") == 0)
            opt.cert = v;
        else if (strcmp(a, "--key") == 0)
            opt.key = v;
        else if (strcmp(a, "--out") == 0)
            opt.out = v;
        else if (strcmp(a, "--seconds") == 0)
            opt.seconds = atof(v);
        else if (strcmp(a, "--seed") == 0 && parse_u(v, UINT64_MAX, &n))
            opt.seed = n;
        else if (strcmp(a, "--threads") == 0 && parse_u(v, THREADS_MAX, &n) &&
                 n > 0)
            opt.threads = (unsigned)n;
        else if (strcmp(a, "--worker") == 0 && parse_u(v, 999, &n))
            opt.worker = (unsigned)n;
        else if (strcmp(a, "--hot") == 0 && parse_u(v, HOT_MAX, &n))
            opt.hot = (unsigned)n;
        else if (strcmp(a, "--cold") == 0 && parse_u(v, COLD_MAX, &n))
            opt.cold = (unsigned)n;
        else if (strcmp(a, "--timeout-ms") == 0 &&
                 parse_u(v, INBOX_CLIENT_TIMEOUT_MS_MAX, &n) && n > 0)
            opt.timeout_ms = (uint32_t)n;
        else if (strcmp(a, "--think-ms") == 0 && parse_u(v, 10000, &n))
            opt.think_ms = (uint32_t)n;
        else if (strcmp(a, "--mix") == 0) {
            unsigned w[OP_KINDS];
            if (sscanf(v, "%u,%u,%u,%u,%u", &w[0], &w[1], &w[2], &w[3],
                       &w[4]) != 5)
                return -1;
            unsigned total = 0;
            for (int k = 0; k < OP_KINDS; k++)
                total += (opt.mix[k] = w[k]);
            if (total == 0)
                return -1;
        } else
            return -1;
    }
    if (opt.seeds_count == 0 || !opt.ca || !opt.cert || !opt.key ||
        opt.hot + opt.cold == 0 || !(opt.seconds >= 0 && opt.seconds <= 86400))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        usage();
        return 2;
    }
    out = stdout;
    if (opt.out && (out = fopen(opt.out, "a")) == NULL) {
        perror(opt.out);
        return 2;
    }
    static struct thread_state ts[THREADS_MAX];
    struct inbox_client_config cfg = {
        .seeds = opt.seeds,
        .seeds_count = opt.seeds_count,
        .ca_path = opt.ca,
        .cert_path = opt.cert,
        .key_path = opt.key,
        .client_name = "jepsen_worker",
        .connect_timeout_ms = 1000,
        .stall_timeout_ms = 1000, /* notice a paused or cut node quickly */
        .backoff_min_ms = 20,
        .backoff_max_ms = 250,
    };
    int rc = 0;
    unsigned started = 0;
    for (unsigned t = 0; t < opt.threads; t++) {
        char why[256] = "";
        ts[t].index = t;
        ts[t].rnd = opt.seed * 1000003u + opt.worker * 1009u + t;
        ts[t].p = (opt.drain ? 999 : (int64_t)opt.worker) * 1000 + t;
        ts[t].line.cap = LINE_BYTES_INITIAL;
        ts[t].line.buf = malloc(LINE_BYTES_INITIAL);
        ts[t].ack_hint = calloc(opt.hot + opt.cold, sizeof(uint64_t));
        if (!ts[t].line.buf || !ts[t].ack_hint) {
            fprintf(stderr, "jepsen_worker: out of memory\n");
            rc = 3;
            break;
        }
        int crc = inbox_client_new(&cfg, &ts[t].client, why, sizeof why);
        if (crc != 0) {
            fprintf(stderr, "jepsen_worker: client: %s: %s\n",
                    inbox_strerror(crc), why);
            rc = 3;
            break;
        }
        if (pthread_create(&ts[t].tid, NULL, thread_main, &ts[t]) != 0) {
            inbox_client_free(ts[t].client);
            ts[t].client = NULL;
            rc = 3;
            break;
        }
        started++;
    }
    uint64_t ops = 0, oks = 0;
    for (unsigned t = 0; t < started; t++) {
        pthread_join(ts[t].tid, NULL);
        inbox_client_free(ts[t].client);
        ops += ts[t].ops;
        oks += ts[t].oks;
        if (ts[t].rc != 0 && rc == 0)
            rc = ts[t].rc;
    }
    for (unsigned t = 0; t < opt.threads; t++) {
        free(ts[t].line.buf);
        free(ts[t].ack_hint);
    }
    if (out != stdout)
        fclose(out);
    if (!opt.drain)
        fprintf(stderr, "jepsen_worker %u: %" PRIu64 " ops, %" PRIu64 " ok\n",
                opt.worker, ops, oks);
    return rc;
}
