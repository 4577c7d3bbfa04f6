/*
 * test_wal.c — the write-ahead log's contract on real files: append, read
 * and reopen across shards and segments, roll-over, truncate and
 * re-append, release and segment deletion, hard state across deletion and
 * reopen, corruption refused with file and offset, sticky failures.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "faultvfs.h"
#include "wal_test_util.h"

#define LEN_MAX 1500u

static uint64_t salt_const(void *arg, uint32_t shard, uint64_t i)
{
    (void)shard;
    (void)i;
    return (uint64_t)(uintptr_t)arg;
}

static uint64_t term_const(void *arg, uint32_t shard, uint64_t i)
{
    (void)arg;
    (void)i;
    return 1 + shard;
}

static struct wal *open_dir(const char *dir, const struct vfs *vfs)
{
    struct wal *w = NULL;
    char msg[256] = "";
    struct wal_options o = {.dir = dir,
                            .segment_bytes = TEST_SEGMENT_BYTES,
                            .vfs = vfs,
                            .errmsg = msg,
                            .errmsg_bytes = sizeof msg};
    int rc = wal_open(&o, &w);
    if (rc != 0)
        fail_msg("wal_open: %s: %s", inbox_err_name(rc), msg);
    return w;
}

/* Append entries [from, to] of `shard` in batches of `per_batch`, with
 * payloads from salt and term 1 + shard; sync every batch when asked. */
static void append_range(struct wal *w, uint32_t shard, uint64_t from,
                         uint64_t to, uint64_t salt, uint64_t term)
{
    static uint8_t bufs[8][LEN_MAX];
    struct wal_record recs[8];
    uint64_t lsn = 0;
    for (uint64_t i = from; i <= to;) {
        size_t n = 0;
        for (; n < 8 && i <= to; n++, i++) {
            uint32_t len = payload_fill(bufs[n], LEN_MAX, salt, shard, i);
            recs[n] = (struct wal_record){.type = WAL_RECORD_ENTRY,
                                          .shard = shard,
                                          .term = term,
                                          .index = i,
                                          .data = bufs[n],
                                          .len = len};
        }
        assert_int_equal(wal_append(w, recs, n, &lsn), 0);
    }
    assert_int_equal(wal_sync(w, lsn), 0);
}

static void check_shard(struct wal *w, uint32_t shard, uint64_t first,
                        uint64_t last, uint64_t salt)
{
    uint64_t f, l;
    assert_int_equal(wal_range(w, shard, &f, &l), 0);
    assert_int_equal(f, first);
    assert_int_equal(l, last);
    const char *why =
        check_entries(w, shard, first, last, LEN_MAX, 1u << 20, salt_const,
                      term_const, (void *)(uintptr_t)salt);
    if (why)
        fail_msg("%s", why);
    /* Small pages: one entry at a time must work too. */
    why = check_entries(w, shard, first, last, LEN_MAX, 1, salt_const,
                        term_const, (void *)(uintptr_t)salt);
    if (why)
        fail_msg("%s", why);
    for (uint64_t i = first; i <= last; i += 97) {
        uint64_t t;
        assert_int_equal(wal_term(w, shard, i, &t), 0);
        assert_int_equal(t, 1 + shard);
    }
}

/* Several shards interleaved over several segments; reopen sees it all. */
static void test_append_read_reopen(void **state)
{
    (void)state;
    char *dir = tmpdir_make("basic");
    struct wal *w = open_dir(dir, NULL);
    const uint32_t shards[] = {0, 3, 7, 65536};
    uint64_t last = 0;
    for (int round = 0; round < 30; round++) {
        for (size_t s = 0; s < 4; s++)
            append_range(w, shards[s], last + 1, last + 40, 42, 1 + shards[s]);
        last += 40;
    }
    struct wal_stats st;
    wal_stats_get(w, &st);
    assert_true(st.segments >= 3); /* ~4 MiB in 1 MiB segments */
    assert_int_equal(st.segments, dir_count_files(dir, ".seg"));
    assert_int_equal(st.durable_lsn, st.written_lsn);
    assert_true(st.fsyncs >= 1 && st.fsyncs <= st.syncs + st.segments);
    for (size_t s = 0; s < 4; s++)
        check_shard(w, shards[s], 1, last, 42);
    wal_close(w);

    w = open_dir(dir, NULL);
    for (size_t s = 0; s < 4; s++)
        check_shard(w, shards[s], 1, last, 42);
    /* Appending after reopen continues the log. */
    append_range(w, 3, last + 1, last + 10, 42, 4);
    check_shard(w, 3, 1, last + 10, 42);
    /* Reads outside the log. */
    struct wal_entries es = {0};
    assert_int_equal(wal_entries(w, 3, 0, 5, 100, &es), INBOX_ECOMPACTED);
    assert_int_equal(wal_entries(w, 3, 1, last + 12, 100, &es),
                     INBOX_EUNAVAILABLE);
    assert_int_equal(wal_entries(w, 99, 1, 2, 100, &es), INBOX_EUNAVAILABLE);
    assert_int_equal(wal_entries(w, 3, 5, 5, 100, &es), 0);
    assert_int_equal(es.n, 0);
    wal_entries_free(&es);
    uint64_t t;
    assert_int_equal(wal_term(w, 3, last + 11, &t), INBOX_EUNAVAILABLE);
    assert_int_equal(wal_term(w, 3, 0, &t), 0);
    assert_int_equal(t, 0);
    wal_close(w);
    tmpdir_remove(dir);
}

static void test_bad_requests(void **state)
{
    (void)state;
    char *dir = tmpdir_make("bad");
    struct wal *w = open_dir(dir, NULL);
    uint8_t b = 1;
    struct wal_record r = {.type = WAL_RECORD_ENTRY,
                           .shard = 1,
                           .term = 1,
                           .index = 1,
                           .data = &b,
                           .len = 1};
    assert_int_equal(wal_append(w, &r, 0, NULL), INBOX_EINVAL);
    r.shard = INBOX_WAL_SHARD_IDS_MAX;
    assert_int_equal(wal_append(w, &r, 1, NULL), INBOX_EINVAL);
    r.shard = 1;
    r.type = WAL_RECORD_RELEASE;
    assert_int_equal(wal_append(w, &r, 1, NULL), INBOX_EINVAL);
    r.type = WAL_RECORD_ENTRY;
    r.len = INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX + 1;
    assert_int_equal(wal_append(w, &r, 1, NULL), INBOX_EINVAL);
    r.len = 1;
    r.index = 0;
    assert_int_equal(wal_append(w, &r, 1, NULL), INBOX_EINVAL);
    /* A batch with a gap is refused whole: nothing is written. */
    struct wal_record two[2] = {r, r};
    two[0].index = 1;
    two[1].index = 3;
    assert_int_equal(wal_append(w, two, 2, NULL), INBOX_EINVAL);
    uint64_t f, l;
    assert_int_equal(wal_range(w, 1, &f, &l), 0);
    assert_int_equal(f, 1);
    assert_int_equal(l, 0);
    assert_int_equal(wal_sync(w, 1), INBOX_EINVAL); /* never appended */
    assert_int_equal(wal_sync(w, 0), 0);
    struct wal_options o = {.dir = dir, .segment_bytes = 4096};
    struct wal *w2;
    assert_int_equal(wal_open(&o, &w2), INBOX_ERANGE);
    /* One process per log: a second open is refused while the first
     * holds it. */
    o.segment_bytes = 0;
    assert_int_equal(wal_open(&o, &w2), INBOX_ELOCKED);
    wal_close(w);
    tmpdir_remove(dir);
}

/* Raft conflict: truncate a suffix, re-append at those indexes with a new
 * term; the new entries win, also after reopen. Implicit truncation by an
 * append at an index <= last works the same way. */
static void test_truncate_then_reappend(void **state)
{
    (void)state;
    char *dir = tmpdir_make("trunc");
    struct wal *w = open_dir(dir, NULL);
    append_range(w, 5, 1, 10, 7, 6);
    uint64_t lsn, f, l, t;
    assert_int_equal(wal_truncate_suffix(w, 5, 11, &lsn), 0); /* no-op */
    assert_int_equal(wal_truncate_suffix(w, 5, 12, &lsn), INBOX_EINVAL);
    assert_int_equal(wal_truncate_suffix(w, 5, 6, &lsn), 0);
    assert_int_equal(wal_range(w, 5, &f, &l), 0);
    assert_int_equal(l, 5);
    assert_int_equal(wal_term(w, 5, 6, &t), INBOX_EUNAVAILABLE);
    /* Re-append 6..12 with other payloads and term 9. */
    uint8_t buf[LEN_MAX];
    for (uint64_t i = 6; i <= 12; i++) {
        uint32_t len = payload_fill(buf, LEN_MAX, 8, 5, i);
        struct wal_record r = {.type = WAL_RECORD_ENTRY,
                               .shard = 5,
                               .term = 9,
                               .index = i,
                               .data = buf,
                               .len = len};
        assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
    }
    /* Implicit: an append at 11 voids 11..12. */
    uint32_t len = payload_fill(buf, LEN_MAX, 9, 5, 11);
    struct wal_record r = {.type = WAL_RECORD_ENTRY,
                           .shard = 5,
                           .term = 10,
                           .index = 11,
                           .data = buf,
                           .len = len};
    assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
    assert_int_equal(wal_sync(w, lsn), 0);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(wal_range(w, 5, &f, &l), 0);
        assert_int_equal(f, 1);
        assert_int_equal(l, 11);
        struct wal_entries es = {0};
        assert_int_equal(wal_entries(w, 5, 1, 12, UINT64_MAX, &es), 0);
        assert_int_equal(es.n, 11);
        for (size_t k = 0; k < es.n; k++) {
            uint64_t i = k + 1;
            uint64_t salt = i <= 5 ? 7 : i <= 10 ? 8 : 9;
            uint64_t term = i <= 5 ? 6 : i <= 10 ? 9 : 10;
            uint32_t n = payload_fill(buf, LEN_MAX, salt, 5, i);
            assert_int_equal(es.v[k].term, term);
            assert_int_equal(es.v[k].len, n);
            assert_memory_equal(es.v[k].data, buf, n);
        }
        wal_entries_free(&es);
        wal_close(w);
        w = open_dir(dir, NULL);
    }
    wal_close(w);
    tmpdir_remove(dir);
}

/* Release deletes segments once no shard needs them; hard states whose
 * records lived there are re-logged and survive deletion and reopen. */
static void test_release_and_hard_state(void **state)
{
    (void)state;
    char *dir = tmpdir_make("release");
    struct wal *w = open_dir(dir, NULL);
    struct wal_hard_state hs1 = {.term = 3, .vote = 2, .commit = 1};
    struct wal_hard_state hs2 = {.term = 4, .vote = 0, .commit = 0};
    struct wal_hard_state got;
    uint64_t lsn, f, l, t;
    assert_int_equal(wal_hard_state_get(w, 1, &got), INBOX_ENOTFOUND);
    assert_int_equal(wal_hard_state_set(w, 1, &hs1, &lsn), 0);
    assert_int_equal(wal_hard_state_set(w, 2, &hs2, &lsn), 0);
    for (int round = 0; round < 40; round++) {
        append_range(w, 1, 1 + 50 * round, 50 * (round + 1), 11, 2);
        append_range(w, 2, 1 + 50 * round, 50 * (round + 1), 12, 3);
    }
    struct wal_stats st;
    wal_stats_get(w, &st);
    uint64_t segs_before = st.segments;
    assert_true(segs_before >= 3);
    /* Shard 2 still needs everything: nothing can go. */
    assert_int_equal(wal_release_prefix(w, 1, 1900, 2), 0);
    wal_stats_get(w, &st);
    assert_int_equal(st.segments, segs_before);
    /* A release with the wrong term for an entry in the log is refused. */
    assert_int_equal(wal_release_prefix(w, 2, 1900, 99), INBOX_EINVAL);
    assert_int_equal(wal_release_prefix(w, 2, 1900, 3), 0);
    wal_stats_get(w, &st);
    assert_true(st.segments < segs_before);
    assert_true(st.segments_deleted > 0);
    assert_int_equal(st.segments, dir_count_files(dir, ".seg"));
    /* Released again at or below: no-op. */
    assert_int_equal(wal_release_prefix(w, 2, 1000, 3), 0);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(wal_hard_state_get(w, 1, &got), 0);
        assert_memory_equal(&got, &hs1, sizeof got);
        assert_int_equal(wal_hard_state_get(w, 2, &got), 0);
        assert_memory_equal(&got, &hs2, sizeof got);
        for (uint32_t s = 1; s <= 2; s++) {
            assert_int_equal(wal_range(w, s, &f, &l), 0);
            assert_int_equal(f, 1901);
            assert_int_equal(l, 2000);
            assert_int_equal(wal_term(w, s, 1900, &t), 0);
            assert_int_equal(t, s + 1);
            assert_int_equal(wal_term(w, s, 1899, &t), INBOX_ECOMPACTED);
        }
        const char *why =
            check_entries(w, 1, 1901, 2000, LEN_MAX, 4096, salt_const,
                          term_const, (void *)(uintptr_t)11);
        if (why)
            fail_msg("%s", why);
        wal_close(w);
        w = open_dir(dir, NULL);
    }
    /* Snapshot install on a fresh shard: the log starts after it. */
    assert_int_equal(wal_release_prefix(w, 9, 100, 7), 0);
    assert_int_equal(wal_range(w, 9, &f, &l), 0);
    assert_int_equal(f, 101);
    assert_int_equal(l, 100);
    assert_int_equal(wal_term(w, 9, 100, &t), 0);
    assert_int_equal(t, 7);
    uint8_t b = 1;
    struct wal_record r = {.type = WAL_RECORD_ENTRY,
                           .shard = 9,
                           .term = 7,
                           .index = 50,
                           .data = &b,
                           .len = 1};
    assert_int_equal(wal_append(w, &r, 1, &lsn), INBOX_ECOMPACTED);
    r.index = 101;
    assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
    /* Everything released: the oldest segments go, the hard states and
     * releases are re-logged forward, and all of it survives reopen. */
    struct wal_release rels[3] = {
        {.shard = 1, .index = 2000, .term = 2},
        {.shard = 2, .index = 2000, .term = 99}, /* wrong term */
        {.shard = 9, .index = 101, .term = 7},
    };
    assert_int_equal(wal_release_prefixes(w, rels, 3), INBOX_EINVAL);
    assert_int_equal(wal_range(w, 1, &f, &l), 0);
    assert_int_equal(f, 1901); /* refused whole: nothing released */
    rels[1].term = 3;
    assert_int_equal(wal_release_prefixes(w, rels, 3), 0);
    wal_stats_get(w, &st);
    assert_int_equal(st.segments, 1);
    wal_close(w);
    w = open_dir(dir, NULL);
    assert_int_equal(wal_hard_state_get(w, 1, &got), 0);
    assert_memory_equal(&got, &hs1, sizeof got);
    assert_int_equal(wal_range(w, 2, &f, &l), 0);
    assert_int_equal(f, 2001);
    assert_int_equal(l, 2000);
    assert_int_equal(wal_term(w, 2, 2000, &t), 0);
    assert_int_equal(t, 3);
    assert_int_equal(wal_range(w, 9, &f, &l), 0);
    assert_int_equal(f, 102);
    wal_close(w);
    tmpdir_remove(dir);
}

static void flip_bit(const char *path, long off)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    fputc(c ^ 0x10, fp);
    fclose(fp);
}

/* Size of the framed record carrying a payload of len bytes. */
static long framed(uint32_t len)
{
    return (long)((48 + len + 8 + 7) & ~7u);
}

/* A flipped bit before the tail is refused, naming file and offset: in a
 * sealed segment, in the last segment with later durable records, and in
 * the middle of the last (synced) batch. */
static void test_bit_flip_is_corruption(void **state)
{
    (void)state;
    for (int where = 0; where < 3; where++) {
        char *dir = tmpdir_make("flip");
        struct wal *w = open_dir(dir, NULL);
        /* Shard 4, entries of known sizes starting at segment offset 64. */
        uint8_t buf[LEN_MAX];
        long off = 64, target = 0;
        uint64_t lsn;
        int n = where == 0 ? 1500 : 12;
        for (int i = 1; i <= n; i++) {
            uint32_t len = payload_fill(buf, LEN_MAX, 1, 4, (uint64_t)i);
            struct wal_record r = {.type = WAL_RECORD_ENTRY,
                                   .shard = 4,
                                   .term = 5,
                                   .index = (uint64_t)i,
                                   .data = buf,
                                   .len = len};
            assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
            if (where == 1)
                assert_int_equal(wal_sync(w, lsn), 0);
            if (i == 5)
                target = off + 48 + len / 2; /* middle of entry 5 */
            off += framed(len);
        }
        assert_int_equal(wal_sync(w, lsn), 0);
        wal_close(w);
        char path[512];
        snprintf(path, sizeof path, "%s/wal-%016x.seg", dir, 1);
        flip_bit(path, target);
        char msg[256] = "";
        struct wal_options o = {.dir = dir,
                                .segment_bytes = TEST_SEGMENT_BYTES,
                                .errmsg = msg,
                                .errmsg_bytes = sizeof msg};
        assert_int_equal(wal_open(&o, &w), INBOX_ECORRUPT);
        char want[64];
        long rec5 = target - 48 - (long)payload_fill(buf, LEN_MAX, 1, 4, 5) / 2;
        snprintf(want, sizeof want, "at offset %ld", rec5);
        if (strstr(msg, "wal-0000000000000001.seg") == NULL ||
            strstr(msg, want) == NULL)
            fail_msg("message should name file and %s: %s", want, msg);
        tmpdir_remove(dir);
    }
}

/* A failed write or sync makes the log refuse writes until reopened. */
static void test_sticky_failure(void **state)
{
    (void)state;
    for (int kind = 0; kind < 2; kind++) {
        struct faultvfs *fv = faultvfs_new(1);
        struct wal *w = open_dir("/d", faultvfs_vfs(fv));
        uint8_t b[100];
        memset(b, 7, sizeof b);
        struct wal_record r = {.type = WAL_RECORD_ENTRY,
                               .shard = 1,
                               .term = 1,
                               .index = 1,
                               .data = b,
                               .len = sizeof b};
        uint64_t lsn;
        if (kind == 0) {
            faultvfs_fail_write(fv, 1);
            assert_int_equal(wal_append(w, &r, 1, &lsn), -EIO);
        } else {
            faultvfs_fail_sync(fv, 1);
            assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
            assert_int_equal(wal_sync(w, lsn), -EIO);
            assert_int_equal(wal_sync(w, lsn), INBOX_EFAILED);
        }
        r.index = kind == 0 ? 1 : 2;
        assert_int_equal(wal_append(w, &r, 1, &lsn), INBOX_EFAILED);
        struct wal_hard_state hs = {1, 1, 1};
        assert_int_equal(wal_hard_state_set(w, 1, &hs, &lsn), INBOX_EFAILED);
        assert_int_equal(wal_release_prefix(w, 1, 1, 1), INBOX_EFAILED);
        struct wal_stats st;
        wal_stats_get(w, &st);
        assert_int_equal(st.failed, -EIO);
        wal_close(w);
        /* Reopen recovers (the partial write is a torn tail) and writes. */
        w = open_dir("/d", faultvfs_vfs(fv));
        uint64_t f, l;
        assert_int_equal(wal_range(w, 1, &f, &l), 0);
        r.index = l + 1;
        assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
        assert_int_equal(wal_sync(w, lsn), 0);
        wal_close(w);
        faultvfs_free(fv);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read_reopen),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_truncate_then_reappend),
        cmocka_unit_test(test_release_and_hard_state),
        cmocka_unit_test(test_bit_flip_is_corruption),
        cmocka_unit_test(test_sticky_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
