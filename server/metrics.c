/*
 * metrics.c — histogram bucketing and the Prometheus text renderer.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

uint64_t metrics_bucket_le(unsigned i)
{
    return UINT64_C(1) << i;
}

/* Bucket i holds values in (2^(i-1), 2^i]; bucket 0 holds 0 and 1. */
static unsigned bucket_of(uint64_t v)
{
    if (v <= 1)
        return 0;
    unsigned b = 64u - (unsigned)__builtin_clzll(v - 1);
    return b < METRICS_BUCKETS_COUNT ? b : METRICS_BUCKETS_COUNT;
}

void metrics_histogram_record(struct metrics_histogram *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->buckets[bucket_of(us)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

uint64_t metrics_histogram_quantile(const struct metrics_histogram *h, double q)
{
    uint64_t counts[METRICS_BUCKETS_COUNT + 1];
    uint64_t total = 0;
    for (unsigned i = 0; i <= METRICS_BUCKETS_COUNT; i++) {
        counts[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += counts[i];
    }
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < METRICS_BUCKETS_COUNT; i++) {
        seen += counts[i];
        if (seen > rank)
            return metrics_bucket_le(i);
    }
    return UINT64_MAX;
}

struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void emit(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void emit(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *at = o->len < o->cap ? o->buf + o->len : NULL;
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(at, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static const char *type_name(enum metrics_type t)
{
    switch (t) {
    case METRICS_COUNTER:
        return "counter";
    case METRICS_GAUGE:
        return "gauge";
    case METRICS_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* `{labels,extra}` or `{extra}` or `{labels}` or nothing. */
static void emit_labels(struct out *o, const char *labels, const char *extra)
{
    int has_l = labels != NULL && labels[0] != '\0';
    int has_e = extra != NULL && extra[0] != '\0';
    if (!has_l && !has_e)
        return;
    emit(o, "{%s%s%s}", has_l ? labels : "", has_l && has_e ? "," : "",
         has_e ? extra : "");
}

static void render_histogram(struct out *o, const struct metrics_desc *d)
{
    const struct metrics_histogram *h = d->value;
    double scale = d->scale != 0 ? d->scale : 1.0;
    uint64_t cum = 0;
    for (unsigned i = 0; i < METRICS_BUCKETS_COUNT; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        char le[48];
        snprintf(le, sizeof le, "le=\"%.9g\"",
                 (double)metrics_bucket_le(i) * scale);
        emit(o, "%s_bucket", d->name);
        emit_labels(o, d->labels, le);
        emit(o, " %" PRIu64 "\n", cum);
    }
    cum += atomic_load_explicit(&h->buckets[METRICS_BUCKETS_COUNT],
                                memory_order_relaxed);
    emit(o, "%s_bucket", d->name);
    emit_labels(o, d->labels, "le=\"+Inf\"");
    emit(o, " %" PRIu64 "\n", cum);
    emit(o, "%s_sum", d->name);
    emit_labels(o, d->labels, NULL);
    emit(o, " %.9g\n",
         (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) *
             scale);
    /* _count equals the +Inf bucket by definition; render the same number
     * so a scrape racing with recorders stays self-consistent. */
    emit(o, "%s_count", d->name);
    emit_labels(o, d->labels, NULL);
    emit(o, " %" PRIu64 "\n", cum);
}

size_t metrics_render(char *buf, size_t buf_bytes,
                      const struct metrics_desc *descs, size_t descs_count)
{
    struct out o = {buf, buf_bytes, 0};
    if (buf_bytes > 0)
        buf[0] = '\0';
    for (size_t i = 0; i < descs_count; i++) {
        const struct metrics_desc *d = &descs[i];
        if (i == 0 || strcmp(descs[i - 1].name, d->name) != 0)
            emit(&o, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                 type_name(d->type));
        switch (d->type) {
        case METRICS_COUNTER:
            emit(&o, "%s", d->name);
            emit_labels(&o, d->labels, NULL);
            emit(&o, " %" PRIu64 "\n",
                 atomic_load_explicit(
                     &((const struct metrics_counter *)d->value)->value,
                     memory_order_relaxed));
            break;
        case METRICS_GAUGE:
            emit(&o, "%s", d->name);
            emit_labels(&o, d->labels, NULL);
            emit(&o, " %" PRId64 "\n",
                 atomic_load_explicit(
                     &((const struct metrics_gauge *)d->value)->value,
                     memory_order_relaxed));
            break;
        case METRICS_HISTOGRAM:
            render_histogram(&o, d);
            break;
        }
    }
    return o.len;
}
