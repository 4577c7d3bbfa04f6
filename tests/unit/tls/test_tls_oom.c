/* test_tls_oom.c — net/tls under allocation failure (SQLite's habit of
 * out-of-memory loops): OpenSSL's allocator is replaced by one that fails
 * the Nth allocation, and a whole session — contexts, connections,
 * handshake, data both ways, close — runs for N = 1, 2, ... Every failure
 * must come back as an error code, never a crash, an assertion or a leak
 * (LeakSanitizer checks the last in the ASan build). The same for issuing
 * a certificate, which must also leave both files or neither. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "net/tls.h"
#include "tls_fixture.h"

static struct fixture fix;

/* ---- a failing allocator ------------------------------------------------ */

static int64_t alloc_countdown = -1; /* < 0: never fail */
static uint64_t alloc_count;
static uint64_t alloc_failed;

static int alloc_should_fail(void)
{
    alloc_count++;
    if (alloc_countdown < 0)
        return 0;
    if (alloc_countdown-- == 0) {
        alloc_failed++;
        return 1;
    }
    return 0;
}

static void *oom_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return alloc_should_fail() ? NULL : malloc(n);
}

static void *oom_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return alloc_should_fail() ? NULL : realloc(p, n);
}

static void oom_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

/* ---- one session, tolerant of failure ----------------------------------- */

static int ctx_open(enum tls_side side, const char *who, struct tls_ctx **out)
{
    char crt[64], key[64], msg[INBOX_TLS_ERRMSG_BYTES];
    snprintf(crt, sizeof crt, "%s.crt", who);
    snprintf(key, sizeof key, "%s.key", who);
    struct tls_ctx_config cfg = {
        .side = side,
        .ca_path = fixture_path(&fix, "ca.crt"),
        .cert_path = fixture_path(&fix, crt),
        .key_path = fixture_path(&fix, key),
    };
    int rc = tls_ctx_new(&cfg, out, msg, sizeof msg);
    assert_true(rc <= 0);
    assert_true((rc == 0) == (*out != NULL));
    return rc;
}

/* Moves ciphertext from -> to and reads what arrives; returns the first
 * error, if any. */
static int hop(struct tls_conn *from, struct tls_conn *to, size_t *rx)
{
    unsigned char buf[8192];
    size_t n;
    while ((n = tls_conn_pull_cipher(from, buf, sizeof buf)) > 0) {
        size_t off = 0;
        while (off < n) {
            size_t took = 0, got = 0;
            int rc = tls_conn_feed_cipher(to, buf + off, n - off, &took);
            if (rc != 0)
                return rc;
            off += took;
            unsigned char plain[8192];
            do {
                rc = tls_conn_read_plain(to, plain, sizeof plain, &got);
                if (rc != 0)
                    return rc;
                *rx += got;
            } while (got > 0);
        }
    }
    size_t got = 0;
    unsigned char plain[256];
    int rc = tls_conn_read_plain(to, plain, sizeof plain, &got);
    *rx += got;
    return rc;
}

/* Allocation numbers (alloc_count) at which session() starts and ends
 * making its two connections, as of the last session. */
static uint64_t conns_from, conns_to;

/* Returns 0 when the whole session succeeded. */
static int session(void)
{
    static const char data[3000] = "payload";
    struct tls_ctx *sctx = NULL, *cctx = NULL;
    struct tls_conn *srv = NULL, *cli = NULL;
    size_t srv_rx = 0, cli_rx = 0;
    int rc = ctx_open(TLS_SIDE_SERVER, "n1", &sctx);
    if (rc == 0)
        rc = ctx_open(TLS_SIDE_CLIENT, "fe1", &cctx);
    conns_from = alloc_count;
    if (rc == 0)
        rc = tls_conn_new(sctx, NULL, &srv);
    if (rc == 0)
        rc = tls_conn_new(cctx, "127.0.0.1", &cli);
    conns_to = alloc_count;
    for (int round = 0; rc == 0 && round < 8; round++) {
        size_t took = 0;
        if (tls_conn_handshake_done(cli))
            rc = tls_conn_write_plain(cli, data, sizeof data, &took);
        if (rc == 0 && tls_conn_handshake_done(srv))
            rc = tls_conn_write_plain(srv, data, sizeof data, &took);
        if (rc == 0)
            rc = hop(cli, srv, &srv_rx);
        if (rc == 0)
            rc = hop(srv, cli, &cli_rx);
    }
    if (rc == 0)
        rc = tls_conn_close(cli);
    if (rc == 0)
        rc = hop(cli, srv, &srv_rx);
    if (rc == 0 && (!tls_conn_peer_closed(srv) || srv_rx == 0 || cli_rx == 0))
        rc = INBOX_EINTERNAL; /* cannot happen without an injected fault */
    if (rc != 0) {
        assert_true(rc < 0);
        assert_string_not_equal(inbox_strerror(rc), "unknown error");
    }
    tls_conn_free(cli);
    tls_conn_free(srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
    ERR_clear_error();
    return rc;
}

static void test_every_allocation_failure(void **state)
{
    (void)state;
    /* Warm up: OpenSSL loads providers and algorithms lazily, once per
     * process; a failure there is OpenSSL's to handle, not ours. */
    alloc_countdown = -1;
    assert_int_equal(session(), 0);
    alloc_count = 0;
    assert_int_equal(session(), 0);
    uint64_t total = alloc_count;
    uint64_t from = conns_from, to = conns_to;
    printf("one session makes %llu OpenSSL allocations, %llu of them in "
           "tls_conn_new\n",
           (unsigned long long)total, (unsigned long long)(to - from));
    assert_true(total > 0 && from < to && to <= total);

    /* Every allocation of tls_conn_new fails once, whatever the seed: a
     * failed SSL_set_app_data (its ex_data store) used to leave a
     * connection whose verify callback found no connection and crashed
     * (found by seed 116545733398749). */
    for (uint64_t at = from; at < to; at++) {
        alloc_failed = 0;
        alloc_countdown = (int64_t)at;
        int rc = session();
        alloc_countdown = -1;
        if (alloc_failed == 0)
            assert_int_equal(rc, 0);
    }

    /* Fail each of the first allocations in turn, then a sample of the
     * rest, every k-th with a seeded offset, to keep the test quick:
     * different seeds cover different allocations. */
    struct rng r = {rng_seed_pick("tls_oom")};
    const uint64_t exhaustive = 100, sampled = 100;
    uint64_t stride =
        total > exhaustive ? (total - exhaustive) / sampled + 1 : 1;
    uint64_t failures = 0;
    for (uint64_t n = 0; n <= total; n += n < exhaustive ? 1 : stride) {
        uint64_t at = n < exhaustive ? n : n + rng_range(&r, 0, stride - 1);
        alloc_failed = 0;
        alloc_countdown = (int64_t)at;
        int rc = session();
        alloc_countdown = -1;
        if (alloc_failed == 0)
            assert_int_equal(rc, 0);
        failures += rc != 0;
    }
    printf("%llu sessions failed cleanly\n", (unsigned long long)failures);
    assert_true(failures > 0);
    /* And the process is healthy afterwards. */
    assert_int_equal(session(), 0);
}

/* True if `name` exists in the fixture directory. */
static int exists(const char *name)
{
    return access(fixture_path(&fix, name), F_OK) == 0;
}

/* No temporary file is left behind, whatever failed. */
static void assert_no_tmp_files(void)
{
    DIR *d = opendir(fix.dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
}

static void test_cert_issue_allocation_failure(void **state)
{
    (void)state;
    char msg[INBOX_TLS_ERRMSG_BYTES];
    const char *hosts[] = {"127.0.0.1", "localhost"};
    /* Own copies: fixture_path's buffers rotate. */
    char ca_crt[FIX_PATH_BYTES + 64], ca_key[FIX_PATH_BYTES + 64];
    char crt[FIX_PATH_BYTES + 64], key[FIX_PATH_BYTES + 64];
    snprintf(ca_crt, sizeof ca_crt, "%s", fixture_path(&fix, "ca.crt"));
    snprintf(ca_key, sizeof ca_key, "%s", fixture_path(&fix, "ca.key"));
    snprintf(crt, sizeof crt, "%s", fixture_path(&fix, "x.crt"));
    snprintf(key, sizeof key, "%s", fixture_path(&fix, "x.key"));
    struct cert_issue_config cfg = {
        .ca_cert_path = ca_crt,
        .ca_key_path = ca_key,
        .cert_path = crt,
        .key_path = key,
        .name = "x",
        .role = INBOX_ROLE_NODE,
        .hosts = hosts,
        .hosts_count = 2,
    };
    alloc_count = 0;
    assert_int_equal(cert_issue(&cfg, msg, sizeof msg), 0);
    uint64_t total = alloc_count;
    unlink(cfg.cert_path);
    unlink(cfg.key_path);
    struct rng r = {rng_seed_pick("cert_oom")};
    uint64_t stride = total / 50 + 1, failures = 0;
    for (uint64_t n = 0; n <= total; n += stride) {
        alloc_failed = 0;
        alloc_countdown = (int64_t)(n + rng_range(&r, 0, stride - 1));
        int rc = cert_issue(&cfg, msg, sizeof msg);
        alloc_countdown = -1;
        assert_true(rc <= 0);
        if (alloc_failed == 0 && rc != 0)
            fail_msg("n=%llu: %s", (unsigned long long)n, msg);
        /* Both files or neither. */
        assert_int_equal(exists("x.crt"), rc == 0);
        assert_int_equal(exists("x.key"), rc == 0);
        assert_no_tmp_files();
        failures += rc != 0;
        unlink(cfg.cert_path);
        unlink(cfg.key_path);
        ERR_clear_error();
    }
    printf("cert_issue: %llu allocations, %llu runs failed cleanly\n",
           (unsigned long long)total, (unsigned long long)failures);
    assert_true(failures > 0);
}

static int group_setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    fixture_ca(&fix, "ca");
    const char *hosts[] = {"127.0.0.1", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fixture_dir_remove(&fix);
    return 0;
}

int main(void)
{
    /* Before OpenSSL allocates anything. */
    if (!CRYPTO_set_mem_functions(oom_malloc, oom_realloc, oom_free)) {
        fprintf(stderr, "cannot replace OpenSSL's allocator\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_failure),
        cmocka_unit_test(test_cert_issue_allocation_failure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
