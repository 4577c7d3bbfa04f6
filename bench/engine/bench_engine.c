/*
 * bench_engine.c — durable enqueues through the WAL and the LMDB store.
 *
 * Models what a node does for an enqueue, minus the network and Raft:
 *
 *   writer threads (one per group of shards, like Raft groups' proposals):
 *     encode a batch of ENQUEUE commands to random inboxes -> wal_append
 *     -> wal_sync (group commit: concurrent writers share fdatasyncs)
 *     -> hand the durable batch to the apply thread
 *   apply thread (the store's owner, like the server's state-machine thread):
 *     store_apply the batch -> the batch is "answered" (latency stops here)
 *     every --checkpoint-ms: store_checkpoint, then release the WAL prefix
 *     each shard no longer needs.
 *
 * Prints enqueues/s, fsyncs/s, p50/p99 batch latency (append to applied),
 * and write amplification: bytes this process wrote to disk
 * (/proc/self/io write_bytes) per payload byte. Bounded by --seconds and
 * --count; everything it writes is under --dir, removed at start.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "command.h"
#include "inbox/error.h"
#include "inbox/limits.h"
#include "metrics.h"
#include "store.h"
#include "wal.h"

#define BATCH_SLOTS_PER_WRITER 4u
#define WRITERS_MAX 64u
#define INBOX_NAME_BYTES 16u

struct opts {
    double seconds;
    uint64_t count;
    uint32_t inboxes;
    uint32_t payload;
    uint32_t writers;
    uint32_t batch;
    uint32_t shards;
    uint32_t checkpoint_ms;
    uint64_t segment_bytes;
    uint64_t map_bytes;
    const char *dir;
};

struct slot {
    uint8_t *arena;
    struct wal_record *recs;
    struct store_entry *entries;
    uint32_t n;
    uint64_t t_start_ns;
    uint64_t t_durable_ns;
    struct slot *next; /* apply queue link */
    struct writer *owner;
};

struct writer {
    pthread_t thread;
    uint32_t id;
    uint64_t rng;
    uint64_t *next_index; /* per shard, only shards this writer owns */
    uint32_t *inboxes;    /* inbox numbers whose shard this writer owns */
    uint32_t inboxes_count;
    struct slot slots[BATCH_SLOTS_PER_WRITER];
    /* free slots: a small stack guarded by the bench lock */
    struct slot *free[BATCH_SLOTS_PER_WRITER];
    uint32_t free_count;
    pthread_cond_t free_cv;
};

static struct {
    struct opts o;
    struct wal *wal;
    pthread_mutex_t mu;
    pthread_cond_t apply_cv;
    struct slot *head, *tail; /* apply queue, FIFO */
    atomic_bool stop;
    atomic_uint_fast64_t submitted;
    struct writer writers[WRITERS_MAX];
    char (*names)[INBOX_NAME_BYTES];
    uint8_t *name_lens;
    uint32_t *shard_of;
    uint8_t *payload;
    struct metrics_histogram batch_lat, sync_lat;
    int error;
} B;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t proc_write_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return 0;
    char line[128];
    uint64_t v = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static void fail(const char *what, int rc)
{
    fprintf(stderr, "bench_engine: %s: %s (%s)\n", what, inbox_strerror(rc),
            inbox_err_name(rc));
    exit(1);
}

/* Set the stop flag and wake every waiter. */
static void request_stop(void)
{
    pthread_mutex_lock(&B.mu);
    atomic_store(&B.stop, true);
    pthread_cond_broadcast(&B.apply_cv);
    for (uint32_t i = 0; i < B.o.writers; i++)
        pthread_cond_broadcast(&B.writers[i].free_cv);
    pthread_mutex_unlock(&B.mu);
}

/* ---- writers ------------------------------------------------------------ */

static size_t cmd_bytes_max(void)
{
    return command_bytes_enqueue(INBOX_NAME_BYTES, B.o.payload);
}

static void fill_batch(struct writer *w, struct slot *s)
{
    size_t off = 0, cap = (size_t)B.o.batch * cmd_bytes_max();
    uint64_t ts = wall_ms();
    for (uint32_t i = 0; i < B.o.batch; i++) {
        uint32_t inbox = w->inboxes[xorshift(&w->rng) % w->inboxes_count];
        uint32_t shard = B.shard_of[inbox];
        uint8_t msg_id[INBOX_MSG_ID_BYTES];
        uint64_t r1 = xorshift(&w->rng), r2 = xorshift(&w->rng);
        memcpy(msg_id, &r1, 8);
        memcpy(msg_id + 8, &r2, 8);
        size_t len = 0;
        int rc = command_encode_enqueue(
            s->arena + off, cap - off, ts, (const uint8_t *)B.names[inbox],
            B.name_lens[inbox], msg_id, 0, B.payload, B.o.payload, &len);
        if (rc != 0)
            fail("command_encode_enqueue", rc);
        uint64_t index = ++w->next_index[shard];
        s->recs[i] = (struct wal_record){.type = WAL_RECORD_ENTRY,
                                         .shard = shard,
                                         .term = 1,
                                         .index = index,
                                         .data = s->arena + off,
                                         .len = (uint32_t)len};
        s->entries[i] = (struct store_entry){.shard = shard,
                                             .index = index,
                                             .term = 1,
                                             .data = s->arena + off,
                                             .len = len};
        off += len;
    }
    s->n = B.o.batch;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&B.mu);
        while (w->free_count == 0 && !atomic_load(&B.stop))
            pthread_cond_wait(&w->free_cv, &B.mu);
        if (atomic_load(&B.stop)) {
            pthread_mutex_unlock(&B.mu);
            return NULL;
        }
        struct slot *s = w->free[--w->free_count];
        pthread_mutex_unlock(&B.mu);

        if (B.o.count &&
            atomic_fetch_add(&B.submitted, B.o.batch) >= B.o.count) {
            pthread_mutex_lock(&B.mu);
            w->free[w->free_count++] = s;
            pthread_mutex_unlock(&B.mu);
            request_stop();
            return NULL;
        }
        s->t_start_ns = now_ns();
        fill_batch(w, s);
        uint64_t lsn = 0;
        int rc = wal_append(B.wal, s->recs, s->n, &lsn);
        if (rc != 0)
            fail("wal_append", rc);
        uint64_t t0 = now_ns();
        rc = wal_sync(B.wal, lsn);
        if (rc != 0)
            fail("wal_sync", rc);
        s->t_durable_ns = now_ns();
        metrics_histogram_record(&B.sync_lat, (s->t_durable_ns - t0) / 1000);

        pthread_mutex_lock(&B.mu);
        s->next = NULL;
        if (B.tail)
            B.tail->next = s;
        else
            B.head = s;
        B.tail = s;
        pthread_cond_signal(&B.apply_cv);
        pthread_mutex_unlock(&B.mu);
    }
}

/* ---- apply thread (this is the store's owner) --------------------------- */

struct apply_stats {
    uint64_t applied;
    uint64_t checkpoints;
    uint64_t checkpoint_ns;
    uint64_t apply_ns;
    uint64_t released_segments_hint;
};

static void checkpoint_and_release(struct store *st, struct apply_stats *as)
{
    uint64_t t0 = now_ns();
    int rc = store_checkpoint(st);
    if (rc != 0)
        fail("store_checkpoint", rc);
    as->checkpoint_ns += now_ns() - t0;
    as->checkpoints++;
    /* One release record per shard, one sync and one deletion pass for all
     * of them (wal_release_prefixes). */
    struct wal_release rel[1024];
    size_t n = 0;
    for (uint32_t sh = 0; sh < B.o.shards; sh++) {
        uint64_t durable = 0, term = 0;
        rc = store_durable_index(st, sh, &durable);
        if (rc != 0)
            fail("store_durable_index", rc);
        if (durable == 0)
            continue;
        rc = wal_term(B.wal, sh, durable, &term);
        if (rc != 0)
            fail("wal_term", rc);
        rel[n++] = (struct wal_release){sh, durable, term};
        if (n == sizeof rel / sizeof rel[0]) {
            rc = wal_release_prefixes(B.wal, rel, n);
            if (rc != 0)
                fail("wal_release_prefixes", rc);
            n = 0;
        }
    }
    if (n > 0 && (rc = wal_release_prefixes(B.wal, rel, n)) != 0)
        fail("wal_release_prefixes", rc);
}

static void apply_loop(struct store *st, struct apply_stats *as,
                       uint64_t deadline_ns)
{
    uint64_t next_ckpt = now_ns() + (uint64_t)B.o.checkpoint_ms * 1000000u;
    for (;;) {
        pthread_mutex_lock(&B.mu);
        while (B.head == NULL && !atomic_load(&B.stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&B.apply_cv, &B.mu, &ts);
            if (now_ns() >= deadline_ns && !atomic_load(&B.stop)) {
                pthread_mutex_unlock(&B.mu);
                request_stop();
                pthread_mutex_lock(&B.mu);
            }
        }
        struct slot *s = B.head;
        if (s) {
            B.head = s->next;
            if (B.head == NULL)
                B.tail = NULL;
        }
        pthread_mutex_unlock(&B.mu);
        if (s == NULL)
            return; /* stopped and drained */

        uint64_t t0 = now_ns();
        int rc = store_apply(st, s->entries, s->n, NULL, NULL);
        if (rc != 0)
            fail("store_apply", rc);
        uint64_t t1 = now_ns();
        as->apply_ns += t1 - t0;
        as->applied += s->n;
        metrics_histogram_record(&B.batch_lat, (t1 - s->t_start_ns) / 1000);

        pthread_mutex_lock(&B.mu);
        struct writer *w = s->owner;
        w->free[w->free_count++] = s;
        pthread_cond_signal(&w->free_cv);
        pthread_mutex_unlock(&B.mu);

        if (t1 >= next_ckpt) {
            checkpoint_and_release(st, as);
            next_ckpt = now_ns() + (uint64_t)B.o.checkpoint_ms * 1000000u;
        }
        if (t1 >= deadline_ns && !atomic_load(&B.stop))
            request_stop();
    }
}

/* ---- set-up and report -------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_engine [--seconds S] [--count N] [--inboxes N]\n"
            "         [--payload BYTES] [--writers N] [--batch N] "
            "[--shards N]\n"
            "         [--checkpoint-ms MS] [--segment-mib N] [--map-gib N] "
            "[--dir DIR]\n");
    exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.seconds = 10,
                       .count = 0,
                       .inboxes = 100000,
                       .payload = 100,
                       .writers = 4,
                       .batch = 256,
                       .shards = 64,
                       .checkpoint_ms = 5000,
                       .segment_bytes = 64u * INBOX_MIB,
                       .map_bytes = 0,
                       .dir = "./bench-engine-data"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (!strcmp(a, "--seconds"))
            o->seconds = atof(v);
        else if (!strcmp(a, "--count"))
            o->count = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--inboxes"))
            o->inboxes = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--payload"))
            o->payload = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--writers"))
            o->writers = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--batch"))
            o->batch = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--shards"))
            o->shards = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--checkpoint-ms"))
            o->checkpoint_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--segment-mib"))
            o->segment_bytes = strtoull(v, NULL, 10) * INBOX_MIB;
        else if (!strcmp(a, "--map-gib"))
            o->map_bytes = strtoull(v, NULL, 10) << 30;
        else if (!strcmp(a, "--dir"))
            o->dir = v;
        else
            usage();
        i++;
    }
    if (o->seconds <= 0 || o->seconds > 3600 || o->inboxes == 0 ||
        o->payload == 0 || o->payload > INBOX_PAYLOAD_BYTES_MAX ||
        o->writers == 0 || o->writers > WRITERS_MAX || o->batch == 0 ||
        o->batch > INBOX_WAL_BATCH_RECORDS_MAX || o->shards == 0 ||
        o->shards > INBOX_SHARD_COUNT_MAX || o->shards < o->writers ||
        o->checkpoint_ms == 0) {
        fprintf(stderr, "bench_engine: an option is out of range\n");
        usage();
    }
}

static void print_machine(void)
{
    struct utsname u;
    uname(&u);
    char model[128] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
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

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_engine: could not clear %s\n", dir);
}

static void setup_data(void)
{
    uint32_t n = B.o.inboxes;
    B.names = calloc(n, sizeof *B.names);
    B.name_lens = calloc(n, 1);
    B.shard_of = calloc(n, sizeof *B.shard_of);
    B.payload = malloc(B.o.payload);
    if (!B.names || !B.name_lens || !B.shard_of || !B.payload)
        fail("setup", INBOX_ENOMEM);
    for (uint32_t i = 0; i < B.o.payload; i++)
        B.payload[i] = (uint8_t)('a' + i % 26);
    for (uint32_t i = 0; i < n; i++) {
        int len = snprintf(B.names[i], INBOX_NAME_BYTES, "user%08u", i);
        B.name_lens[i] = (uint8_t)len;
        B.shard_of[i] =
            (uint32_t)(XXH3_64bits(B.names[i], (size_t)len) % B.o.shards);
    }
    size_t arena = (size_t)B.o.batch * cmd_bytes_max();
    for (uint32_t w = 0; w < B.o.writers; w++) {
        struct writer *wr = &B.writers[w];
        wr->id = w;
        wr->rng = 0x9E3779B97F4A7C15ull ^ (w + 1) * 0xBF58476D1CE4E5B9ull;
        wr->next_index = calloc(B.o.shards, sizeof *wr->next_index);
        wr->inboxes = calloc(n, sizeof *wr->inboxes);
        if (!wr->next_index || !wr->inboxes)
            fail("setup", INBOX_ENOMEM);
        for (uint32_t i = 0; i < n; i++)
            if (B.shard_of[i] % B.o.writers == w)
                wr->inboxes[wr->inboxes_count++] = i;
        pthread_cond_init(&wr->free_cv, NULL);
        for (uint32_t k = 0; k < BATCH_SLOTS_PER_WRITER; k++) {
            struct slot *s = &wr->slots[k];
            s->arena = malloc(arena);
            s->recs = calloc(B.o.batch, sizeof *s->recs);
            s->entries = calloc(B.o.batch, sizeof *s->entries);
            if (!s->arena || !s->recs || !s->entries)
                fail("setup", INBOX_ENOMEM);
            s->owner = wr;
            wr->free[wr->free_count++] = s;
        }
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv, &B.o);
    pthread_mutex_init(&B.mu, NULL);
    pthread_cond_init(&B.apply_cv, NULL);
    setup_data();

    rm_rf(B.o.dir);
    if (mkdir(B.o.dir, 0755) != 0 && errno != EEXIST)
        fail("mkdir", -errno);
    char wal_dir[1024], store_dir[1024];
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", B.o.dir);
    snprintf(store_dir, sizeof store_dir, "%s/store", B.o.dir);

    if (mkdir(wal_dir, 0755) != 0)
        fail("mkdir wal", -errno);
    struct wal_options wo = {.dir = wal_dir,
                             .segment_bytes = B.o.segment_bytes};
    int rc = wal_open(&wo, &B.wal);
    if (rc != 0)
        fail("wal_open", rc);
    struct store_options so;
    store_options_init(&so);
    so.path = store_dir;
    if (B.o.map_bytes)
        so.map_size = B.o.map_bytes;
    struct store *st = NULL;
    rc = store_open(&so, &st);
    if (rc != 0)
        fail("store_open", rc);

    print_machine();
    printf("config: inboxes=%u payload=%uB writers=%u batch=%u shards=%u "
           "checkpoint=%ums segment=%" PRIu64 "MiB dir=%s\n",
           B.o.inboxes, B.o.payload, B.o.writers, B.o.batch, B.o.shards,
           B.o.checkpoint_ms, B.o.segment_bytes / INBOX_MIB, B.o.dir);
    fflush(stdout);

    struct wal_stats ws0;
    wal_stats_get(B.wal, &ws0);
    uint64_t wb0 = proc_write_bytes();
    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + (uint64_t)(B.o.seconds * 1e9);
    for (uint32_t w = 0; w < B.o.writers; w++)
        pthread_create(&B.writers[w].thread, NULL, writer_main, &B.writers[w]);
    struct apply_stats as = {0};
    apply_loop(st, &as, deadline);
    for (uint32_t w = 0; w < B.o.writers; w++)
        pthread_join(B.writers[w].thread, NULL);
    /* Writers may have made batches durable after the apply loop ended;
     * apply them too so every durable batch is counted once. */
    request_stop();
    apply_loop(st, &as, 0);
    uint64_t elapsed = now_ns() - t0;
    checkpoint_and_release(st, &as);
    uint64_t wb1 = proc_write_bytes();
    struct wal_stats ws1;
    wal_stats_get(B.wal, &ws1);

    double secs = (double)elapsed / 1e9;
    uint64_t fsyncs = ws1.fsyncs - ws0.fsyncs;
    uint64_t wal_bytes = ws1.bytes_written - ws0.bytes_written;
    double payload_bytes = (double)as.applied * B.o.payload;
    printf("enqueues: %" PRIu64 " in %.2f s = %.0f durable enqueues/s\n",
           as.applied, secs, (double)as.applied / secs);
    printf("fsyncs: %" PRIu64 " = %.0f/s, %.1f enqueues per fsync\n", fsyncs,
           (double)fsyncs / secs,
           fsyncs ? (double)as.applied / (double)fsyncs : 0.0);
    printf("batch latency (append -> durable -> applied), %u per batch: "
           "p50 <= %" PRIu64 " us, p99 <= %" PRIu64 " us\n",
           B.o.batch, metrics_histogram_quantile(&B.batch_lat, 0.5),
           metrics_histogram_quantile(&B.batch_lat, 0.99));
    printf("wal_sync wait: p50 <= %" PRIu64 " us, p99 <= %" PRIu64 " us\n",
           metrics_histogram_quantile(&B.sync_lat, 0.5),
           metrics_histogram_quantile(&B.sync_lat, 0.99));
    printf("apply thread: %.0f ns per enqueue applied; %" PRIu64
           " checkpoints, %.1f ms each\n",
           as.applied ? (double)as.apply_ns / (double)as.applied : 0.0,
           as.checkpoints,
           as.checkpoints
               ? (double)as.checkpoint_ns / 1e6 / (double)as.checkpoints
               : 0.0);
    printf("write amplification: %.2f (disk bytes written %.1f MB: wal %.1f "
           "MB, store+other %.1f MB; payload %.1f MB)\n",
           payload_bytes > 0 ? (double)(wb1 - wb0) / payload_bytes : 0.0,
           (double)(wb1 - wb0) / 1e6, (double)wal_bytes / 1e6,
           ((double)(wb1 - wb0) - (double)wal_bytes) / 1e6,
           payload_bytes / 1e6);
    store_close(st);
    wal_close(B.wal);
    rm_rf(B.o.dir);
    return 0;
}
