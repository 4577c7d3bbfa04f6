/* test_config.c — defaults, INI files, flags and their precedence, and
 * that every kind of bad input is refused with a message that locates it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "addrbook.h"
#include "config.h"
#include "inbox/error.h"

static char tmpfile_path[256];

static const char *write_ini(const char *text)
{
    snprintf(tmpfile_path, sizeof tmpfile_path, "/tmp/inbox_cfg_%d.ini",
             (int)getpid());
    FILE *f = fopen(tmpfile_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return tmpfile_path;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tmpfile_path);
    return 0;
}

static void test_defaults_are_usable(void **state)
{
    (void)state;
    struct config c;
    char err[256] = "";
    config_defaults(&c);
    assert_string_equal(c.data_dir, "./inboxd-data");
    assert_int_equal(c.shard_count, 64);
    assert_int_equal(c.wal_segment_bytes, 64u << 20);
    assert_int_equal(c.store_checkpoint_ms, 5000);
    assert_true(c.dedup_window_ms == UINT64_C(24) * 3600 * 1000);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
}

static void test_file_then_flags_precedence(void **state)
{
    (void)state;
    struct config c;
    char err[256] = "";
    bool help = true;
    config_defaults(&c);
    const char *p = write_ini("; comment\n[node]\ndata_dir = /var/lib/x\n"
                              "id = 3\n[wal]\nsegment_bytes = 8MiB\n"
                              "[store]\ncheckpoint_interval = 250ms\n");
    const char *argv[] = {"inboxd",   "--node-id", "5",
                          "--config", p,           "--store-dedup-window=2h",
                          NULL};
    assert_int_equal(
        config_parse_args(&c, 6, (char **)argv, &help, err, sizeof err), 0);
    assert_false(help);
    assert_string_equal(c.data_dir, "/var/lib/x"); /* from the file */
    assert_int_equal(c.node_id, 5); /* the flag beats the file, in any order */
    assert_int_equal(c.wal_segment_bytes, 8u << 20);
    assert_int_equal(c.store_checkpoint_ms, 250);
    assert_true(c.dedup_window_ms == UINT64_C(2) * 3600 * 1000);
}

static void expect_file_error(const char *text, const char *needle)
{
    struct config c;
    char err[256] = "";
    config_defaults(&c);
    struct config before = c;
    const char *p = write_ini(text);
    int rc = config_load_file(&c, p, err, sizeof err);
    assert_int_equal(rc, INBOX_EINVAL);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
    assert_non_null(strstr(err, p)); /* names the file */
    (void)before;
}

static void test_bad_files_are_located(void **state)
{
    (void)state;
    expect_file_error("[node]\nid = 1\ndata_dri = x\n", ":3: unknown option");
    expect_file_error("[nod]\nid = 1\n", "section [nod]");
    expect_file_error("[wal]\nsegment_bytes = 12 furlongs\n", "not a size");
    expect_file_error("[wal]\nsegment_bytes = 4KiB\n", "out of range");
    expect_file_error("[node]\nid = -4\n", "whole number");
    expect_file_error("[store]\ncheckpoint_interval = soon\n",
                      "not a duration");
    expect_file_error("[node]\nthis line has no equals\n", ":2: syntax");
}

static void test_missing_file(void **state)
{
    (void)state;
    struct config c;
    char err[256] = "";
    config_defaults(&c);
    int rc = config_load_file(&c, "/nonexistent/inboxd.ini", err, sizeof err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "/nonexistent/inboxd.ini"));
}

static void expect_flag_error(int argc, const char **argv, const char *needle)
{
    struct config c;
    char err[256] = "";
    bool help = false;
    config_defaults(&c);
    assert_int_equal(
        config_parse_args(&c, argc, (char **)argv, &help, err, sizeof err),
        INBOX_EINVAL);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_bad_flags(void **state)
{
    (void)state;
    const char *a1[] = {"inboxd", "--node-idd", "4"};
    expect_flag_error(3, a1, "unknown option '--node-idd'");
    const char *a2[] = {"inboxd", "--node-id"};
    expect_flag_error(2, a2, "needs a value");
    const char *a3[] = {"inboxd", "stray"};
    expect_flag_error(2, a3, "unexpected argument 'stray'");
    const char *a4[] = {"inboxd", "--cluster-shard-count", "0"};
    expect_flag_error(3, a4, "out of range");
    const char *a5[] = {"inboxd", "--config"};
    expect_flag_error(2, a5, "needs a file");
    const char *a6[] = {"inboxd", "--wal-segment-bytes",
                        "99999999999999999999999"};
    expect_flag_error(3, a6, "not a size");
}

static void test_help_and_usage(void **state)
{
    (void)state;
    struct config c;
    char err[64];
    bool help = false;
    config_defaults(&c);
    const char *argv[] = {"inboxd", "--help"};
    assert_int_equal(
        config_parse_args(&c, 2, (char **)argv, &help, err, sizeof err), 0);
    assert_true(help);
    size_t need = config_usage(NULL, 0, "inboxd");
    char *buf = malloc(need + 1);
    assert_int_equal(config_usage(buf, need + 1, "inboxd"), need);
    assert_non_null(strstr(buf, "--wal-segment-bytes"));
    assert_non_null(strstr(buf, "(default: 64MiB)"));
    free(buf);
}

static void test_validate_relations(void **state)
{
    (void)state;
    struct config c;
    char err[256] = "";
    config_defaults(&c);
    strcpy(c.tls_ca, "/etc/ca.pem");
    assert_int_equal(config_validate(&c, err, sizeof err), INBOX_EINVAL);
    assert_non_null(strstr(err, "go together"));
    config_defaults(&c);
    strcpy(c.log_level, "chatty");
    assert_int_equal(config_validate(&c, err, sizeof err), INBOX_EINVAL);
    config_defaults(&c);
    strcpy(c.listen, "7420");
    assert_int_equal(config_validate(&c, err, sizeof err), INBOX_EINVAL);
}

static void test_members(void **state)
{
    (void)state;
    struct config c;
    struct config_member m[CONFIG_MEMBERS_MAX];
    size_t n = 99;
    char err[256] = "";
    config_defaults(&c);
    assert_int_equal(config_members(&c, m, &n, err, sizeof err), 0);
    assert_int_equal(n, 0); /* a node alone */
    assert_int_equal(config_validate(&c, err, sizeof err), 0);

    snprintf(c.members, sizeof c.members,
             "1@127.0.0.1:7420,2@127.0.0.1:7430,3@[::1]:7440");
    assert_int_equal(config_members(&c, m, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_true(m[0].id == 1 && strcmp(m[0].addr, "127.0.0.1:7420") == 0);
    assert_true(m[2].id == 3 && strcmp(m[2].addr, "[::1]:7440") == 0);
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    c.node_id = 4; /* not a member */
    assert_int_equal(config_validate(&c, err, sizeof err), INBOX_EINVAL);
    assert_non_null(strstr(err, "does not list this node"));
    c.join = 1; /* joining: fine without being listed */
    assert_int_equal(config_validate(&c, err, sizeof err), 0);
    c.node_id = 2; /* joining but listed: a contradiction */
    assert_int_equal(config_validate(&c, err, sizeof err), INBOX_EINVAL);
    assert_non_null(strstr(err, "cluster.join"));
    c.join = 0;
    c.node_id = 1;

    static const char *const bad[] = {
        "1@127.0.0.1",                                     /* no port */
        "127.0.0.1:7420",                                  /* no id */
        "0@127.0.0.1:7420",                                /* id 0 */
        "x@127.0.0.1:7420",                                /* id not a number */
        "1@h:1,1@h:2",                                     /* twice */
        "1@h:1,",                                          /* empty item */
        "1@:7420",                                         /* no host */
        "1@h:",                                            /* empty port */
        "1@h:1,2@h:2,3@h:3,4@h:4,5@h:5,6@h:6,7@h:7,8@h:8", /* too many */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(c.members, sizeof c.members, "%s", bad[i]);
        err[0] = '\0';
        assert_int_equal(config_members(&c, m, &n, err, sizeof err),
                         INBOX_EINVAL);
        assert_non_null(strstr(err, "cluster.members"));
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* DATA/peers: round trip, updates, and every corruption refused. */
static void test_addrbook(void **state)
{
    (void)state;
    char dir[] = "addrbook-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, ADDRBOOK_FILE);
    struct addrbook b, r;
    assert_int_equal(addrbook_load(dir, &b, err, sizeof err), 0);
    assert_int_equal(b.count, 0); /* no file yet: empty */
    assert_int_equal(addrbook_set(&b, 3, "127.0.0.1:7440"), 1);
    assert_int_equal(addrbook_set(&b, 1, "127.0.0.1:7420"), 1);
    assert_int_equal(addrbook_set(&b, 1, "127.0.0.1:7420"), 0); /* same */
    assert_int_equal(addrbook_set(&b, 1, "[::1]:7420"), 1);     /* moved */
    assert_int_equal(addrbook_set(&b, 0, "h:1"), INBOX_EINVAL);
    assert_int_equal(addrbook_set(&b, 2, "no-port"), INBOX_EINVAL);
    assert_int_equal(addrbook_set(&b, 2, "a b:1"), INBOX_EINVAL);
    assert_int_equal(addrbook_save(dir, &b), 0);
    assert_int_equal(addrbook_load(dir, &r, err, sizeof err), 0);
    assert_int_equal(r.count, 2);
    assert_true(r.nodes[0].id == 1 &&
                strcmp(r.nodes[0].addr, "[::1]:7420") == 0);
    assert_string_equal(addrbook_get(&r, 3), "127.0.0.1:7440");
    assert_null(addrbook_get(&r, 2));
    for (uint64_t id = 10; id < 10 + ADDRBOOK_NODES_MAX - 2; id++)
        assert_int_equal(addrbook_set(&r, id, "h:1"), 1);
    assert_int_equal(addrbook_set(&r, 99, "h:1"), INBOX_ERANGE); /* full */

    static const char *const bad[] = {
        "inboxd-peers 2\nend 0\n",               /* another version */
        "inboxd-peers 1\n1 h:1\n",               /* cut short: no end */
        "inboxd-peers 1\n1 h:1\nend 2\n",        /* count disagrees */
        "inboxd-peers 1\n2 h:1\n1 h:2\nend 2\n", /* not ascending */
        "inboxd-peers 1\n1 nowhere\nend 1\n",    /* no port */
        "inboxd-peers 1\n0 h:1\nend 1\n",        /* id 0 */
        "inboxd-peers 1\nend 0\nmore\n",         /* after the end */
        "inboxd-peers 1\nend 0",                 /* last line unended */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        err[0] = '\0';
        assert_int_equal(addrbook_load(dir, &r, err, sizeof err),
                         INBOX_ECORRUPT);
        assert_non_null(strstr(err, ADDRBOOK_FILE ":"));
        assert_int_equal(r.count, 0);
    }
    unlink(path);
    rmdir(dir);
}

static void test_units(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(config_parse_size("1GiB", &v), 0);
    assert_true(v == UINT64_C(1) << 30);
    assert_int_equal(config_parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(config_parse_size("4 KiB", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(config_parse_size("18446744073709551615TiB", &v),
                     INBOX_EINVAL);
    assert_int_equal(config_parse_size("", &v), INBOX_EINVAL);
    assert_int_equal(config_parse_size("-1", &v), INBOX_EINVAL);
    assert_int_equal(config_parse_duration_ms("3m", &v), 0);
    assert_int_equal(v, 180000);
    assert_int_equal(config_parse_duration_ms("3", &v), INBOX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_usable),
        cmocka_unit_test_teardown(test_file_then_flags_precedence, teardown),
        cmocka_unit_test_teardown(test_bad_files_are_located, teardown),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_help_and_usage),
        cmocka_unit_test(test_validate_relations),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_addrbook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
