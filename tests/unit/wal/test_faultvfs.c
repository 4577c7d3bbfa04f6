/*
 * test_faultvfs.c — the fault-injecting file layer keeps its promises: a
 * crash drops unsynced writes and unsynced directory entries, a synced
 * write and a synced rename survive, the Nth write or sync fails, crashed
 * handles are dead, a torn restart writes whole sectors through.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "faultvfs.h"

static struct vfs_file *open_or_die(const struct vfs *v, const char *path,
                                    unsigned flags)
{
    struct vfs_file *f = NULL;
    assert_int_equal(vfs_open(v, path, flags, &f), 0);
    return f;
}

static size_t file_len(struct faultvfs *fv, const char *path)
{
    uint8_t *d;
    size_t n;
    if (faultvfs_file_get(fv, path, &d, &n) != 0)
        return (size_t)-1;
    free(d);
    return n;
}

static void test_crash_drops_unsynced(void **state)
{
    (void)state;
    struct faultvfs *fv = faultvfs_new(1);
    const struct vfs *v = faultvfs_vfs(fv);
    struct vfs_file *a = open_or_die(v, "/d/a", VFS_OPEN_CREATE);
    struct vfs_file *b = open_or_die(v, "/d/b", VFS_OPEN_CREATE);
    assert_int_equal(vfs_pwrite(a, "hello", 5, 0), 0);
    assert_int_equal(vfs_fdatasync(a), 0);
    assert_int_equal(vfs_pwrite(a, " world", 6, 5), 0); /* not synced */
    assert_int_equal(vfs_pwrite(b, "bbbb", 4, 0), 0);
    assert_int_equal(vfs_fdatasync(b), 0);
    assert_int_equal(vfs_fsync_dir(v, "/d"), 0); /* a and b named */
    struct vfs_file *c = open_or_die(v, "/d/c", VFS_OPEN_CREATE);
    assert_int_equal(vfs_pwrite(c, "cc", 2, 0), 0);
    assert_int_equal(vfs_fdatasync(c), 0); /* data synced, name not */
    assert_int_equal(vfs_rename(v, "/d/b", "/d/b2"), 0); /* not synced */
    assert_true(faultvfs_durable_contains(fv, "hello", 5));
    assert_false(faultvfs_durable_contains(fv, "world", 5));
    faultvfs_crash(fv);
    assert_int_equal(vfs_pwrite(a, "x", 1, 0), -EIO);
    faultvfs_restart(fv, false);
    assert_int_equal(vfs_pwrite(a, "x", 1, 0), -EIO); /* dead handle */
    vfs_close(a);
    vfs_close(b);
    vfs_close(c);
    assert_int_equal(file_len(fv, "/d/a"), 5);
    assert_int_equal(file_len(fv, "/d/b"), 4);
    assert_int_equal(file_len(fv, "/d/b2"), (size_t)-1);
    assert_int_equal(file_len(fv, "/d/c"), (size_t)-1);
    /* A synced rename and a synced unlink survive. */
    assert_int_equal(vfs_rename(v, "/d/b", "/d/b2"), 0);
    assert_int_equal(vfs_unlink(v, "/d/a"), 0);
    assert_int_equal(vfs_fsync_dir(v, "/d"), 0);
    faultvfs_crash(fv);
    faultvfs_restart(fv, false);
    assert_int_equal(file_len(fv, "/d/b2"), 4);
    assert_int_equal(file_len(fv, "/d/a"), (size_t)-1);
    faultvfs_free(fv);
}

static void test_nth_failures(void **state)
{
    (void)state;
    struct faultvfs *fv = faultvfs_new(2);
    const struct vfs *v = faultvfs_vfs(fv);
    struct vfs_file *a = open_or_die(v, "/d/a", VFS_OPEN_CREATE);
    faultvfs_fail_write(fv, 3);
    assert_int_equal(vfs_pwrite(a, "1", 1, 0), 0);
    assert_int_equal(vfs_pwrite(a, "2", 1, 1), 0);
    assert_int_equal(vfs_pwrite(a, "3", 1, 2), -EIO);
    assert_int_equal(vfs_pwrite(a, "4", 1, 3), 0); /* only the Nth */
    faultvfs_fail_sync(fv, 2);
    assert_int_equal(vfs_fdatasync(a), 0);
    assert_int_equal(vfs_fsync_dir(v, "/d"), -EIO);
    assert_int_equal(faultvfs_injected(fv), 2);
    faultvfs_crash_at(fv, 2);
    assert_int_equal(vfs_pwrite(a, "5", 1, 4), 0);
    assert_int_equal(vfs_pwrite(a, "6", 1, 5), -EIO); /* crashed before */
    assert_true(faultvfs_crashed(fv));
    vfs_close(a);
    faultvfs_free(fv);
}

static void test_torn_restart_writes_whole_sectors(void **state)
{
    (void)state;
    struct faultvfs *fv = faultvfs_new(3);
    const struct vfs *v = faultvfs_vfs(fv);
    struct vfs_file *a = open_or_die(v, "/d/a", VFS_OPEN_CREATE);
    assert_int_equal(vfs_fallocate(a, 0, 64 * 512), 0);
    assert_int_equal(vfs_fdatasync(a), 0);
    assert_int_equal(vfs_fsync_dir(v, "/d"), 0);
    uint8_t ones[64 * 512];
    memset(ones, 0xFF, sizeof ones);
    assert_int_equal(vfs_pwrite(a, ones, sizeof ones, 0), 0);
    faultvfs_crash(fv);
    faultvfs_restart(fv, true);
    vfs_close(a);
    uint8_t *d;
    size_t n;
    assert_int_equal(faultvfs_file_get(fv, "/d/a", &d, &n), 0);
    assert_int_equal(n, sizeof ones);
    int kept = 0;
    for (size_t s = 0; s < 64; s++) {
        int ff = 0;
        for (size_t i = 0; i < 512; i++)
            ff += d[s * 512 + i] == 0xFF;
        assert_true(ff == 0 || ff == 512); /* sectors are atomic */
        kept += ff == 512;
    }
    assert_true(kept > 0 && kept < 64); /* some, not all (seed 3) */
    free(d);
    faultvfs_free(fv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_drops_unsynced),
        cmocka_unit_test(test_nth_failures),
        cmocka_unit_test(test_torn_restart_writes_whole_sectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
