/*
 * test_wal_group.c — group commit: threads appending and syncing at once
 * share fdatasyncs (fewer fdatasyncs than syncs requested), and no
 * wal_sync returns before its record is in the fault vfs's durable view.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "faultvfs.h"
#include "wal_test_util.h"

#define THREADS 8
#define SYNCS_PER_THREAD 100
#define PAYLOAD_BYTES 100

struct ctx {
    struct wal *w;
    struct faultvfs *fv;
    int id;
    int bad; /* syncs that returned before their record was durable */
    int err;
};

static void *worker(void *arg)
{
    struct ctx *c = arg;
    uint8_t payload[PAYLOAD_BYTES];
    for (int i = 0; i < SYNCS_PER_THREAD && c->err == 0; i++) {
        /* A tag no other record carries: "G", thread, iteration. */
        memset(payload, 0x33, sizeof payload);
        snprintf((char *)payload, 24, "G%02d-%05d-tag", c->id, i);
        struct wal_record r = {.type = WAL_RECORD_ENTRY,
                               .shard = (uint32_t)c->id,
                               .term = 1,
                               .index = (uint64_t)i + 1,
                               .data = payload,
                               .len = sizeof payload};
        uint64_t lsn;
        c->err = wal_append(c->w, &r, 1, &lsn);
        if (c->err == 0)
            c->err = wal_sync(c->w, lsn);
        if (c->err == 0 &&
            !faultvfs_durable_contains(c->fv, payload, sizeof payload))
            c->bad++;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    struct faultvfs *fv = faultvfs_new(5);
    faultvfs_sync_delay_us(fv, 300); /* a flush takes time, as on disks */
    struct wal *w;
    struct wal_options o = {.dir = "/g",
                            .segment_bytes = TEST_SEGMENT_BYTES,
                            .vfs = faultvfs_vfs(fv)};
    assert_int_equal(wal_open(&o, &w), 0);
    uint64_t syncs0 = faultvfs_data_syncs(fv);
    struct ctx c[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        c[i] = (struct ctx){.w = w, .fv = fv, .id = i};
        pthread_create(&t[i], NULL, worker, &c[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(c[i].err, 0);
        assert_int_equal(c[i].bad, 0);
    }
    struct wal_stats st;
    wal_stats_get(w, &st);
    uint64_t data_syncs = faultvfs_data_syncs(fv) - syncs0;
    const uint64_t requested = THREADS * SYNCS_PER_THREAD;
    printf("group commit: %" PRIu64 " syncs requested, %" PRIu64
           " waited, %" PRIu64 " fdatasyncs (vfs saw %" PRIu64
           "), %.2f records per fdatasync\n",
           requested, st.syncs, st.fsyncs, data_syncs,
           st.fsyncs ? (double)st.records_synced / (double)st.fsyncs : 0.0);
    assert_true(st.fsyncs <= st.syncs);
    assert_true(data_syncs < requested);
    assert_int_equal(st.durable_lsn, requested);
    assert_int_equal(st.records_synced, requested);
    /* Everything is there after a power loss. */
    faultvfs_crash(fv);
    wal_close(w);
    faultvfs_restart(fv, true);
    o.vfs = faultvfs_vfs(fv);
    assert_int_equal(wal_open(&o, &w), 0);
    for (uint32_t s = 0; s < THREADS; s++) {
        uint64_t f, l;
        assert_int_equal(wal_range(w, s, &f, &l), 0);
        assert_int_equal(l, SYNCS_PER_THREAD);
    }
    wal_close(w);
    faultvfs_free(fv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
