/* test_store_cost.c — what a checkpoint costs, in bytes written.
 *
 * Applies 100-byte enqueues to random inboxes and checkpoints every N
 * entries, for a few cadences, and reports the bytes the process wrote per
 * checkpoint and per entry (/proc/self/io "wchar": every byte handed to
 * write/pwrite, which is what LMDB's commit writes: the dirty pages and the
 * meta page). The assertion is the property the durability design relies
 * on: checkpointing less often writes fewer bytes per entry. Throughput is
 * printed for information only (timing belongs to benchmarks).
 *
 *   test_store_cost [entries] [inboxes] [cadence]
 *   (defaults: 20000 entries, 10000 inboxes, cadences 256, 2048, all)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store_harness.h"

static unsigned g_entries = 20000, g_inboxes = 10000, g_cadence;

static uint64_t wchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "wchar: %llu", (unsigned long long *)&v) == 1)
            break;
    fclose(f);
    return v;
}

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static double cpu_s(void)
{
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define BATCH 256u

/* One run at a cadence; returns bytes written per entry. */
static double run(unsigned cadence)
{
    struct harness *h = h_new();
    static uint8_t arena[BATCH][256];
    static struct store_entry batch[BATCH];
    static const uint8_t payload[100];
    uint64_t seed = 7, index = 1, ts = 1000000;
    /* Warm: every inbox exists once, so the run measures steady state. */
    unsigned warm = g_inboxes;
    uint64_t w0 = 0, bytes;
    unsigned checkpoints = 0, since = 0;
    double t0 = 0, apply_cpu = 0, ckpt_wall = 0;
    for (unsigned done = 0; done < warm + g_entries;) {
        if (done == warm) {
            assert_int_equal(store_checkpoint(h->s), 0);
            w0 = wchar();
            t0 = now_s();
        }
        unsigned n = 0, end = done < warm ? warm : warm + g_entries;
        for (; n < BATCH && done + n < end; n++) {
            unsigned k =
                done + n < warm ? done + n : (unsigned)(rng(&seed) % g_inboxes);
            char inbox[24];
            uint8_t id[INBOX_MSG_ID_BYTES];
            size_t len;
            snprintf(inbox, sizeof inbox, "user-%08u", k);
            h_id(id, index);
            assert_int_equal(
                command_encode_enqueue(arena[n], sizeof arena[n], ts++,
                                       (const uint8_t *)inbox, strlen(inbox),
                                       id, 0, payload, sizeof payload, &len),
                0);
            batch[n] = (struct store_entry){0, index++, 1, arena[n], len};
        }
        double c0 = cpu_s();
        assert_int_equal(store_apply(h->s, batch, n, NULL, NULL), 0);
        if (done >= warm)
            apply_cpu += cpu_s() - c0;
        done += n;
        since += done > warm ? n : 0;
        if (since >= cadence && done < warm + g_entries) {
            double w = now_s();
            assert_int_equal(store_checkpoint(h->s), 0);
            ckpt_wall += now_s() - w;
            checkpoints++;
            since = 0;
        }
    }
    double w = now_s();
    assert_int_equal(store_checkpoint(h->s), 0);
    ckpt_wall += now_s() - w;
    checkpoints++;
    double dt = now_s() - t0;
    bytes = wchar() - w0;
    printf("cadence %6u entries: %4u checkpoints, %8.1f KiB/checkpoint, "
           "%7.1f bytes/entry, %.0f entries/s overall; apply %.2f us/entry "
           "CPU, checkpoint %.1f ms each\n",
           cadence, checkpoints, (double)bytes / checkpoints / 1024.0,
           (double)bytes / g_entries, g_entries / dt,
           apply_cpu * 1e6 / g_entries, ckpt_wall * 1e3 / checkpoints);
    h_free(h);
    return (double)bytes / g_entries;
}

static void test_checkpoint_cadence_cost(void **state)
{
    (void)state;
    printf("%u 100-byte enqueues over %u inboxes, batches of %u\n", g_entries,
           g_inboxes, BATCH);
    if (g_cadence != 0) { /* one cadence only: for profiling */
        run(g_cadence);
        return;
    }
    double b256 = run(BATCH);
    double b2k = run(8 * BATCH);
    double all = run(g_entries);
    assert_true(b256 > b2k);
    assert_true(b2k > all);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_entries = (unsigned)strtoul(argv[1], NULL, 0);
    if (argc > 2)
        g_inboxes = (unsigned)strtoul(argv[2], NULL, 0);
    if (argc > 3)
        g_cadence = (unsigned)strtoul(argv[3], NULL, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_cadence_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
