/*
 * tls_fixture.h — shared by the net/tls and net/cert tests: a temporary
 * directory holding a cluster CA, a second ("other") CA, and certificates
 * issued with net/cert; a seeded random source; path helpers.
 */
#ifndef INBOX_TESTS_TLS_FIXTURE_H
#define INBOX_TESTS_TLS_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "net/cert.h"

#define FIX_PATH_BYTES 512

struct fixture {
    char dir[FIX_PATH_BYTES];
};

/* Makes an empty temporary directory. */
void fixture_dir_make(struct fixture *f);

/* Removes the directory and every file in it (no subdirectories). */
void fixture_dir_remove(struct fixture *f);

/* "<dir>/<name>" into a static rotating buffer (8 slots). */
const char *fixture_path(const struct fixture *f, const char *name);

/* Creates <ca>.crt / <ca>.key. */
void fixture_ca(const struct fixture *f, const char *ca);

/* Issues <name>.crt / <name>.key from <ca>.crt / <ca>.key. `hosts` is a
 * comma-free list of up to 4 hosts, NULL-terminated (may be NULL). */
void fixture_issue(const struct fixture *f, const char *ca, const char *name,
                   enum inbox_role role, const char *const *hosts,
                   int64_t not_before_unix_s, uint32_t valid_days);

/* A small deterministic generator (xorshift64*). */
struct rng {
    uint64_t s;
};
uint64_t rng_next(struct rng *r);
/* Uniform in [lo, hi]. */
size_t rng_range(struct rng *r, size_t lo, size_t hi);
/* Seed from $INBOX_TEST_SEED or the clock; prints it for replay. */
uint64_t rng_seed_pick(const char *test_name);

#endif /* INBOX_TESTS_TLS_FIXTURE_H */
