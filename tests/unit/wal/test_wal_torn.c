/*
 * test_wal_torn.c — a torn tail cut at every byte offset of the last
 * record: the file truncated there (real files), or zeros from there to the
 * end of the preallocated segment (in-memory files). Reopen must succeed,
 * keep every earlier record intact, drop the torn one, and take appends.
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

#define LEN_MAX 300u
#define LAST_LEN 150u
#define SHARDS 3u
#define PER_SHARD 20u

/* The file image behind a path, on disk or in the fault vfs. */
struct files {
    struct faultvfs *fv; /* NULL: real files */
};

static uint8_t *image_get(struct files *fs, const char *path, size_t *len)
{
    uint8_t *data = NULL;
    if (fs->fv) {
        assert_int_equal(faultvfs_file_get(fs->fv, path, &data, len), 0);
        return data;
    }
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    data = malloc(*len);
    assert_int_equal(fread(data, 1, *len, fp), *len);
    fclose(fp);
    return data;
}

static void image_set(struct files *fs, const char *path, const uint8_t *data,
                      size_t len)
{
    if (fs->fv) {
        assert_int_equal(faultvfs_file_set(fs->fv, path, data, len), 0);
        return;
    }
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static uint64_t salt_of(void *arg, uint32_t shard, uint64_t i)
{
    (void)arg;
    (void)shard;
    (void)i;
    return 1;
}

static uint64_t term_of(void *arg, uint32_t shard, uint64_t i)
{
    (void)arg;
    (void)i;
    return shard;
}

static struct wal *reopen(const char *dir, struct files *fs)
{
    struct wal *w = NULL;
    char msg[256] = "";
    struct wal_options o = {.dir = dir,
                            .segment_bytes = TEST_SEGMENT_BYTES,
                            .vfs = fs->fv ? faultvfs_vfs(fs->fv) : NULL,
                            .errmsg = msg,
                            .errmsg_bytes = sizeof msg};
    int rc = wal_open(&o, &w);
    if (rc != 0)
        fail_msg("wal_open: %s: %s", inbox_err_name(rc), msg);
    return w;
}

static void append_one(struct wal *w, uint32_t shard, uint64_t i, uint64_t salt,
                       uint32_t len_max, uint32_t *len_out)
{
    uint8_t buf[LEN_MAX];
    uint32_t len = payload_fill(buf, len_max, salt, shard, i);
    struct wal_record r = {.type = WAL_RECORD_ENTRY,
                           .shard = shard,
                           .term = shard,
                           .index = i,
                           .data = buf,
                           .len = len};
    uint64_t lsn;
    assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
    assert_int_equal(wal_sync(w, lsn), 0);
    if (len_out)
        *len_out = len;
}

/* The log before the cut: three shards, then one last record on shard 2
 * whose payload is exactly LAST_LEN bytes. Returns its segment offset. */
static uint64_t build_log(const char *dir, struct files *fs)
{
    struct wal *w = reopen(dir, fs);
    for (uint64_t i = 1; i <= PER_SHARD; i++)
        for (uint32_t s = 1; s <= SHARDS; s++)
            append_one(w, s, i, 1, LEN_MAX, NULL);
    struct wal_hard_state hs = {.term = 2, .vote = 1, .commit = 5};
    uint64_t lsn;
    assert_int_equal(wal_hard_state_set(w, 2, &hs, &lsn), 0);
    struct wal_stats st;
    wal_stats_get(w, &st);
    uint64_t x = 64 + st.bytes_written;
    uint8_t buf[LAST_LEN];
    memset(buf, 0x5A, sizeof buf);
    struct wal_record r = {.type = WAL_RECORD_ENTRY,
                           .shard = 2,
                           .term = 2,
                           .index = PER_SHARD + 1,
                           .data = buf,
                           .len = LAST_LEN};
    assert_int_equal(wal_append(w, &r, 1, &lsn), 0);
    assert_int_equal(wal_sync(w, lsn), 0);
    wal_close(w);
    return x;
}

static void check_intact(struct wal *w, uint64_t last2)
{
    for (uint32_t s = 1; s <= SHARDS; s++) {
        uint64_t f, l;
        assert_int_equal(wal_range(w, s, &f, &l), 0);
        assert_int_equal(f, 1);
        assert_int_equal(l, s == 2 ? last2 : PER_SHARD);
        const char *why = check_entries(w, s, 1, PER_SHARD, LEN_MAX, 1u << 20,
                                        salt_of, term_of, NULL);
        if (why)
            fail_msg("%s", why);
    }
    struct wal_hard_state hs;
    assert_int_equal(wal_hard_state_get(w, 2, &hs), 0);
    assert_int_equal(hs.commit, 5);
}

static void run(struct files *fs, const char *dir, bool zero_mode)
{
    uint64_t x = build_log(dir, fs);
    char path[512];
    snprintf(path, sizeof path, "%s/wal-%016x.seg", dir, 1);
    size_t size;
    uint8_t *img = image_get(fs, path, &size);
    uint8_t *cut = malloc(size);
    const size_t rec_bytes = 48 + LAST_LEN + 8; /* without padding */
    size_t torn_seen = 0;
    for (size_t k = 0; k <= rec_bytes; k++) {
        size_t len = size;
        memcpy(cut, img, size);
        if (zero_mode)
            memset(cut + x + k, 0, size - x - k);
        else
            len = (size_t)x + k;
        image_set(fs, path, cut, len);
        struct wal *w = reopen(dir, fs);
        /* k == rec_bytes: nothing was cut, the record is whole. */
        bool whole = k == rec_bytes;
        check_intact(w, whole ? PER_SHARD + 1 : PER_SHARD);
        /* The cut is reported: at the record's offset, at most the k bytes
         * of it that had landed; nothing for a whole record or none. */
        struct wal_stats st;
        wal_stats_get(w, &st);
        if (whole || k == 0)
            assert_int_equal(st.torn_bytes, 0);
        assert_true(st.torn_bytes <= k);
        if (st.torn_bytes > 0) {
            assert_int_equal(st.torn_segment, 1);
            assert_int_equal(st.torn_offset, x);
        }
        torn_seen += st.torn_bytes > 0;
        uint32_t len_new;
        append_one(w, 2, PER_SHARD + (whole ? 2 : 1), 99, LEN_MAX, &len_new);
        wal_close(w);
        w = reopen(dir, fs);
        wal_stats_get(w, &st);
        assert_int_equal(st.torn_bytes, 0); /* a clean end this time */
        check_intact(w, PER_SHARD + (whole ? 2 : 1));
        struct wal_entries es = {0};
        uint64_t i = PER_SHARD + (whole ? 2 : 1);
        assert_int_equal(wal_entries(w, 2, i, i + 1, 1, &es), 0);
        assert_int_equal(es.n, 1);
        assert_int_equal(es.v[0].len, len_new);
        wal_entries_free(&es);
        wal_close(w);
    }
    /* Most partial records are torn tails (a few cuts leave only zeros). */
    assert_true(torn_seen >= rec_bytes / 2);
    free(cut);
    free(img);
}

static void test_torn_tail_truncated_files(void **state)
{
    (void)state;
    struct files fs = {0};
    char *dir = tmpdir_make("torn");
    run(&fs, dir, false);
    tmpdir_remove(dir);
}

static void test_torn_tail_zeroed_memory(void **state)
{
    (void)state;
    struct files fs = {.fv = faultvfs_new(3)};
    run(&fs, "/torn", true);
    faultvfs_free(fs.fv);
}

static void test_torn_tail_truncated_memory(void **state)
{
    (void)state;
    struct files fs = {.fv = faultvfs_new(4)};
    run(&fs, "/torn", false);
    faultvfs_free(fs.fv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torn_tail_truncated_files),
        cmocka_unit_test(test_torn_tail_zeroed_memory),
        cmocka_unit_test(test_torn_tail_truncated_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
