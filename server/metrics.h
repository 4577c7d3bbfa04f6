/*
 * metrics.h — counters, gauges and latency histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * Recording is lock-free (relaxed atomics), so the event loop, the WAL's
 * sync thread and the store thread may all record into the same metrics.
 * Rendering reads each value once; a scrape is a consistent-enough view, not
 * a snapshot (Prometheus tolerates that by design).
 *
 * Histograms use fixed power-of-two buckets in microseconds, from 1 us to
 * 2^METRICS_BUCKETS_COUNT-1 us (about 67 s), so recording is a bit scan and
 * an increment; no allocation anywhere.
 */
#ifndef INBOX_SERVER_METRICS_H
#define INBOX_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_BUCKETS_COUNT 27u /* le 1us, 2us, 4us ... 2^26 us (~67 s) */

struct metrics_counter {
    _Atomic uint64_t value;
};

struct metrics_gauge {
    _Atomic int64_t value;
};

struct metrics_histogram {
    _Atomic uint64_t buckets[METRICS_BUCKETS_COUNT + 1]; /* last: +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};

static inline void metrics_counter_add(struct metrics_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

static inline void metrics_gauge_set(struct metrics_gauge *g, int64_t v)
{
    atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

static inline void metrics_gauge_add(struct metrics_gauge *g, int64_t d)
{
    atomic_fetch_add_explicit(&g->value, d, memory_order_relaxed);
}

/* Record one observation of `us` microseconds (or any unit the metric's
 * name says: batch sizes use the same buckets, counted in records). */
void metrics_histogram_record(struct metrics_histogram *h, uint64_t us);

/* Upper bound of bucket i (inclusive), in the histogram's unit. */
uint64_t metrics_bucket_le(unsigned i);

/* The value below which a fraction q (0..1) of the observations fall, as
 * the upper bound of the bucket that holds it (an over-estimate by at most
 * a factor of two). 0 when empty. Used by benchmarks and `status`. */
uint64_t metrics_histogram_quantile(const struct metrics_histogram *h,
                                    double q);

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

/* One exported series: a name, its help text, its labels (already in
 * Prometheus form, e.g. `op="enqueue"`, or NULL) and where its value is. */
struct metrics_desc {
    const char *name;
    const char *help;
    enum metrics_type type;
    const char *labels;
    const void *value; /* struct metrics_counter/_gauge/_histogram */
    double scale;      /* histograms: multiply bucket bounds (e.g. 1e-6 for
                          seconds); 0 means 1 */
};

/* Render descs in the text format into buf; series of the same name must be
 * adjacent (HELP and TYPE are written once per name). Returns the bytes
 * needed, like snprintf: if that is >= buf_bytes the output was cut. */
size_t metrics_render(char *buf, size_t buf_bytes,
                      const struct metrics_desc *descs, size_t descs_count);

#endif /* INBOX_SERVER_METRICS_H */
