/* test_metrics.c — histogram bucketing, quantiles and the text format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static void test_buckets_and_quantiles(void **state)
{
    (void)state;
    static struct metrics_histogram h;
    memset(&h, 0, sizeof h);
    assert_int_equal(metrics_histogram_quantile(&h, 0.5), 0);
    /* 90 fast (3 us -> bucket le=4), 10 slow (1000 us -> le=1024). */
    for (int i = 0; i < 90; i++)
        metrics_histogram_record(&h, 3);
    for (int i = 0; i < 10; i++)
        metrics_histogram_record(&h, 1000);
    assert_int_equal(metrics_histogram_quantile(&h, 0.5), 4);
    assert_int_equal(metrics_histogram_quantile(&h, 0.89), 4);
    assert_int_equal(metrics_histogram_quantile(&h, 0.95), 1024);
    assert_int_equal(metrics_histogram_quantile(&h, 1.0), 1024);
    /* Boundaries: a value equal to a bound falls in that bucket. */
    memset(&h, 0, sizeof h);
    metrics_histogram_record(&h, 1024);
    assert_int_equal(metrics_histogram_quantile(&h, 0.5), 1024);
    memset(&h, 0, sizeof h);
    metrics_histogram_record(&h, 1025);
    assert_int_equal(metrics_histogram_quantile(&h, 0.5), 2048);
    /* Beyond the last bucket lands in +Inf. */
    memset(&h, 0, sizeof h);
    metrics_histogram_record(&h, UINT64_C(1) << 40);
    assert_true(metrics_histogram_quantile(&h, 0.5) == UINT64_MAX);
}

static void test_render_text_format(void **state)
{
    (void)state;
    static struct metrics_counter reqs_enq, reqs_fetch;
    static struct metrics_gauge conns;
    static struct metrics_histogram lat;
    memset(&lat, 0, sizeof lat);
    metrics_counter_add(&reqs_enq, 7);
    metrics_counter_add(&reqs_fetch, 2);
    metrics_gauge_set(&conns, 3);
    metrics_gauge_add(&conns, -1);
    metrics_histogram_record(&lat, 3);
    metrics_histogram_record(&lat, 5);
    const struct metrics_desc d[] = {
        {"inboxd_requests_total", "Requests by op", METRICS_COUNTER,
         "op=\"enqueue\"", &reqs_enq, 0},
        {"inboxd_requests_total", "Requests by op", METRICS_COUNTER,
         "op=\"fetch\"", &reqs_fetch, 0},
        {"inboxd_connections", "Open connections", METRICS_GAUGE, NULL, &conns,
         0},
        {"inboxd_latency_seconds", "Latency", METRICS_HISTOGRAM, NULL, &lat,
         1e-6},
    };
    size_t need = metrics_render(NULL, 0, d, 4);
    char *buf = malloc(need + 1);
    assert_int_equal(metrics_render(buf, need + 1, d, 4), need);
    /* HELP/TYPE once per name. */
    const char *first = strstr(buf, "# TYPE inboxd_requests_total counter");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# TYPE inboxd_requests_total"));
    assert_non_null(strstr(buf, "inboxd_requests_total{op=\"enqueue\"} 7\n"));
    assert_non_null(strstr(buf, "inboxd_requests_total{op=\"fetch\"} 2\n"));
    assert_non_null(strstr(buf, "inboxd_connections 2\n"));
    /* Cumulative buckets in seconds: 3us -> le 4e-06, 5us -> le 8e-06. */
    assert_non_null(
        strstr(buf, "inboxd_latency_seconds_bucket{le=\"2e-06\"} 0\n"));
    assert_non_null(
        strstr(buf, "inboxd_latency_seconds_bucket{le=\"4e-06\"} 1\n"));
    assert_non_null(
        strstr(buf, "inboxd_latency_seconds_bucket{le=\"8e-06\"} 2\n"));
    assert_non_null(
        strstr(buf, "inboxd_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(buf, "inboxd_latency_seconds_count 2\n"));
    assert_non_null(strstr(buf, "inboxd_latency_seconds_sum 8e-06\n"));
    /* A short buffer is cut, never overrun, and reports what it needed. */
    char small[16];
    assert_int_equal(metrics_render(small, sizeof small, d, 4), need);
    assert_int_equal(strlen(small), sizeof small - 1);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_and_quantiles),
        cmocka_unit_test(test_render_text_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
