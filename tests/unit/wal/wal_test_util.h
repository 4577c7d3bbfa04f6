/*
 * wal_test_util.h — helpers shared by the WAL tests: scratch directories,
 * deterministic payloads, and checking a shard's log against what was
 * written. Header-only (static functions) so each test binary stays one
 * add_test.
 */
#ifndef INBOX_TESTS_WAL_TEST_UTIL_H
#define INBOX_TESTS_WAL_TEST_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "wal.h"

#define TEST_SEGMENT_BYTES INBOX_WAL_SEGMENT_BYTES_MIN

static inline uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A payload that is a pure function of (salt, shard, index): length in
 * [1, len_max], every byte nonzero (so no accidental zero sectors). */
static inline uint32_t payload_fill(uint8_t *buf, uint32_t len_max,
                                    uint64_t salt, uint32_t shard,
                                    uint64_t index)
{
    uint64_t h = mix64(salt ^ mix64(((uint64_t)shard << 40) ^ index));
    uint32_t len = 1 + (uint32_t)(h % len_max);
    for (uint32_t i = 0; i < len; i++) {
        h = mix64(h);
        buf[i] = (uint8_t)(1 + h % 255);
    }
    return len;
}

/* A fresh scratch directory under the build tree's cwd; caller frees. */
static inline char *tmpdir_make(const char *tag)
{
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "./wal-test-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        abort();
    }
    return strdup(d);
}

static inline int dir_count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (l >= s && strcmp(e->d_name + l - s, suffix) == 0)
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

static inline void tmpdir_remove(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    free(dir);
}

/* Check the shard's entries [lo, hi] against payload_fill(salt_of(i)),
 * term_of(i), reading through wal_entries in pages of bytes_max. Returns
 * 0 or a description of the first mismatch (static string). */
typedef uint64_t (*salt_fn)(void *arg, uint32_t shard, uint64_t index);

static inline const char *check_entries(struct wal *w, uint32_t shard,
                                        uint64_t lo, uint64_t hi,
                                        uint32_t len_max, uint64_t bytes_max,
                                        salt_fn salt, salt_fn term_of,
                                        void *arg)
{
    static char why[200];
    struct wal_entries es = {0};
    uint8_t *want = malloc(len_max);
    uint64_t i = lo;
    while (i <= hi) {
        int rc = wal_entries(w, shard, i, hi + 1, bytes_max, &es);
        if (rc != 0 || es.n == 0) {
            snprintf(why, sizeof why, "shard %u: wal_entries(%llu) = %s", shard,
                     (unsigned long long)i, inbox_err_name(rc));
            goto out;
        }
        for (size_t k = 0; k < es.n; k++, i++) {
            uint32_t len =
                payload_fill(want, len_max, salt(arg, shard, i), shard, i);
            const struct wal_entry *e = &es.v[k];
            if (e->index != i || e->len != len ||
                memcmp(e->data, want, len) != 0 ||
                e->term != term_of(arg, shard, i)) {
                snprintf(why, sizeof why, "shard %u index %llu differs", shard,
                         (unsigned long long)i);
                goto out;
            }
        }
    }
    free(want);
    wal_entries_free(&es);
    return NULL;
out:
    free(want);
    wal_entries_free(&es);
    return why;
}

#endif /* INBOX_TESTS_WAL_TEST_UTIL_H */
