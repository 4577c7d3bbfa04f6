/* tls_fixture.c — temporary directories and certificates for the TLS
 * tests (see tls_fixture.h). */
#include "tls_fixture.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "inbox/limits.h"

void fixture_dir_make(struct fixture *f)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/inbox_tls_XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
}

void fixture_dir_remove(struct fixture *f)
{
    DIR *d = opendir(f->dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlink(fixture_path(f, e->d_name));
    }
    closedir(d);
    rmdir(f->dir);
}

const char *fixture_path(const struct fixture *f, const char *name)
{
    static char slots[8][FIX_PATH_BYTES + 64];
    static unsigned next;
    char *p = slots[next++ % 8];
    int n = snprintf(p, sizeof slots[0], "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < sizeof slots[0]);
    return p;
}

void fixture_ca(const struct fixture *f, const char *ca)
{
    char crt[64], key[64], msg[INBOX_TLS_ERRMSG_BYTES];
    snprintf(crt, sizeof crt, "%s.crt", ca);
    snprintf(key, sizeof key, "%s.key", ca);
    struct cert_ca_config cfg = {
        .cert_path = fixture_path(f, crt),
        .key_path = fixture_path(f, key),
        .name = ca,
    };
    int rc = cert_ca_create(&cfg, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_ca_create %s: %d %s", ca, rc, msg);
}

void fixture_issue(const struct fixture *f, const char *ca, const char *name,
                   enum inbox_role role, const char *const *hosts,
                   int64_t not_before_unix_s, uint32_t valid_days)
{
    char ca_crt[64], ca_key[64], crt[64], key[64];
    char msg[INBOX_TLS_ERRMSG_BYTES];
    snprintf(ca_crt, sizeof ca_crt, "%s.crt", ca);
    snprintf(ca_key, sizeof ca_key, "%s.key", ca);
    snprintf(crt, sizeof crt, "%s.crt", name);
    snprintf(key, sizeof key, "%s.key", name);
    size_t n = 0;
    while (hosts != NULL && hosts[n] != NULL)
        n++;
    struct cert_issue_config cfg = {
        .ca_cert_path = fixture_path(f, ca_crt),
        .ca_key_path = fixture_path(f, ca_key),
        .cert_path = fixture_path(f, crt),
        .key_path = fixture_path(f, key),
        .name = name,
        .role = role,
        .hosts = hosts,
        .hosts_count = n,
        .valid_days = valid_days,
        .not_before_unix_s = not_before_unix_s,
    };
    int rc = cert_issue(&cfg, msg, sizeof msg);
    if (rc != 0)
        fail_msg("cert_issue %s: %d %s", name, rc, msg);
}

uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

size_t rng_range(struct rng *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

uint64_t rng_seed_pick(const char *test_name)
{
    const char *env = getenv("INBOX_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0)
                        : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (seed == 0)
        seed = 1;
    printf("%s: seed %llu (replay with INBOX_TEST_SEED=%llu)\n", test_name,
           (unsigned long long)seed, (unsigned long long)seed);
    return seed;
}
