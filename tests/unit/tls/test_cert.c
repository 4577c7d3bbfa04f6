/* test_cert.c — net/cert: the cluster CA, issued certificates, their
 * extensions and file modes, and the refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "net/cert.h"
#include "tls_fixture.h"

static struct fixture fix;

static int setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fixture_dir_remove(&fix);
    return 0;
}

static X509 *cert_load(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(x);
    return x;
}

static unsigned file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static size_t file_read(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

/* True when `cert` verifies against the CA in `ca_path`. */
static int verifies_against(X509 *cert, const char *ca_path)
{
    X509_STORE *store = X509_STORE_new();
    assert_int_equal(X509_STORE_load_file(store, ca_path), 1);
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    assert_int_equal(X509_STORE_CTX_init(xs, store, cert, NULL), 1);
    int ok = X509_verify_cert(xs) == 1;
    X509_STORE_CTX_free(xs);
    X509_STORE_free(store);
    ERR_clear_error();
    return ok;
}

/* Counts subjectAltName entries of `type` equal to `value` (for IP: the
 * text form is parsed). */
static int san_has(X509 *cert, int type, const char *value)
{
    GENERAL_NAMES *gens =
        X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL)
        return 0;
    ASN1_OCTET_STRING *ip = type == GEN_IPADD ? a2i_IPADDRESS(value) : NULL;
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != type)
            continue;
        if (type == GEN_IPADD) {
            found += ASN1_OCTET_STRING_cmp(g->d.ip, ip) == 0;
        } else {
            const ASN1_STRING *s = g->d.ia5;
            found +=
                (size_t)ASN1_STRING_length(s) == strlen(value) &&
                memcmp(ASN1_STRING_get0_data(s), value, strlen(value)) == 0;
        }
    }
    ASN1_OCTET_STRING_free(ip);
    GENERAL_NAMES_free(gens);
    return found;
}

static void test_role_names(void **state)
{
    (void)state;
    enum inbox_role r;
    const enum inbox_role all[] = {INBOX_ROLE_NODE, INBOX_ROLE_ADMIN,
                                   INBOX_ROLE_FRONTEND};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cert_role_parse(cert_role_name(all[i]), &r), 0);
        assert_int_equal(r, all[i]);
    }
    assert_string_equal(cert_role_name(INBOX_ROLE_ADMIN), "admin");
    assert_string_equal(cert_role_name((enum inbox_role)99), "none");
    assert_int_equal(cert_role_parse("none", &r), INBOX_EINVAL);
    assert_int_equal(cert_role_parse("Admin", &r), INBOX_EINVAL);
    assert_int_equal(cert_role_parse("", &r), INBOX_EINVAL);
}

static void test_name_check(void **state)
{
    (void)state;
    assert_int_equal(cert_name_check("n1"), 0);
    assert_int_equal(cert_name_check("fe-1.eu_west"), 0);
    assert_int_equal(cert_name_check(""), INBOX_EINVAL);
    assert_int_equal(cert_name_check("-x"), INBOX_EINVAL);
    assert_int_equal(cert_name_check("a b"), INBOX_EINVAL);
    assert_int_equal(cert_name_check("a,CN=admin"), INBOX_EINVAL);
    char longname[INBOX_CERT_NAME_BYTES_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(cert_name_check(longname), INBOX_EINVAL);
    longname[INBOX_CERT_NAME_BYTES_MAX] = '\0';
    assert_int_equal(cert_name_check(longname), 0);
}

static void test_ca_create_and_refuse_overwrite(void **state)
{
    (void)state;
    char msg[INBOX_TLS_ERRMSG_BYTES];
    struct cert_ca_config cfg = {
        .cert_path = fixture_path(&fix, "ca.crt"),
        .key_path = fixture_path(&fix, "ca.key"),
    };
    assert_int_equal(cert_ca_create(&cfg, msg, sizeof msg), 0);
    assert_int_equal(file_mode(cfg.key_path), 0600);
    assert_int_equal(file_mode(cfg.cert_path), 0644);

    X509 *ca = cert_load(cfg.cert_path);
    assert_true(X509_check_ca(ca) >= 1);
    assert_int_equal(X509_check_issued(ca, ca), X509_V_OK);
    assert_true(verifies_against(ca, cfg.cert_path));
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn,
                              sizeof cn);
    assert_string_equal(cn, "inboxd cluster CA");
    /* Long validity: at least nine years from now. */
    time_t later = time(NULL) + 9 * 365 * 86400L;
    assert_true(X509_cmp_time(X509_get0_notAfter(ca), &later) > 0);
    EVP_PKEY *pub = X509_get0_pubkey(ca);
    assert_int_equal(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_get_bits(pub), 256);

    char before[4096], after[4096];
    size_t n_before = file_read(cfg.key_path, before, sizeof before);
    assert_int_equal(cert_ca_create(&cfg, msg, sizeof msg), INBOX_EEXISTS);
    assert_non_null(strstr(msg, "refusing to overwrite"));
    size_t n_after = file_read(cfg.key_path, after, sizeof after);
    assert_int_equal(n_before, n_after);
    assert_memory_equal(before, after, n_before);

    cfg.overwrite = true;
    assert_int_equal(cert_ca_create(&cfg, msg, sizeof msg), 0);
    n_after = file_read(cfg.key_path, after, sizeof after);
    assert_true(n_before != n_after || memcmp(before, after, n_before) != 0);
    assert_int_equal(file_mode(cfg.key_path), 0600);
    X509_free(ca);
}

static void test_issue_node(void **state)
{
    (void)state;
    fixture_ca(&fix, "ca");
    const char *hosts[] = {"127.0.0.1", "localhost", "::1", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    assert_int_equal(file_mode(fixture_path(&fix, "n1.key")), 0600);
    assert_int_equal(file_mode(fixture_path(&fix, "n1.crt")), 0644);

    X509 *x = cert_load(fixture_path(&fix, "n1.crt"));
    assert_true(verifies_against(x, fixture_path(&fix, "ca.crt")));
    assert_int_equal(X509_check_ca(x), 0);
    assert_int_equal(san_has(x, GEN_URI, "inboxd:role=node"), 1);
    assert_int_equal(san_has(x, GEN_IPADD, "127.0.0.1"), 1);
    assert_int_equal(san_has(x, GEN_IPADD, "::1"), 1);
    assert_int_equal(san_has(x, GEN_DNS, "localhost"), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.2", 0), 0);
    /* A node is both TLS server and TLS client. */
    assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0), 1);
    assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_CLIENT, 0), 1);
    /* Default validity about a year. */
    time_t in_300d = time(NULL) + 300 * 86400L;
    assert_true(X509_cmp_time(X509_get0_notAfter(x), &in_300d) > 0);
    X509_free(x);
    ERR_clear_error();
}

static void test_issue_clients(void **state)
{
    (void)state;
    fixture_ca(&fix, "ca");
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    fixture_issue(&fix, "ca", "ops", INBOX_ROLE_ADMIN, NULL, 0, 30);

    X509 *fe = cert_load(fixture_path(&fix, "fe1.crt"));
    assert_int_equal(san_has(fe, GEN_URI, "inboxd:role=frontend"), 1);
    assert_int_equal(san_has(fe, GEN_URI, "inboxd:role=node"), 0);
    /* Client certificates cannot pose as a server. */
    assert_int_equal(X509_check_purpose(fe, X509_PURPOSE_SSL_CLIENT, 0), 1);
    assert_int_equal(X509_check_purpose(fe, X509_PURPOSE_SSL_SERVER, 0), 0);
    X509 *op = cert_load(fixture_path(&fix, "ops.crt"));
    assert_int_equal(san_has(op, GEN_URI, "inboxd:role=admin"), 1);
    time_t in_31d = time(NULL) + 31 * 86400L;
    assert_true(X509_cmp_time(X509_get0_notAfter(op), &in_31d) < 0);
    X509_free(fe);
    X509_free(op);
    ERR_clear_error();
}

static int issue(const char *ca, const char *name, enum inbox_role role,
                 const char *const *hosts, size_t hosts_count, char *msg)
{
    char ca_crt[64], ca_key[64], crt[64], key[64];
    snprintf(ca_crt, sizeof ca_crt, "%s.crt", ca);
    snprintf(ca_key, sizeof ca_key, "%s.key", ca);
    snprintf(crt, sizeof crt, "%s.crt", name ? name : "x");
    snprintf(key, sizeof key, "%s.key", name ? name : "x");
    struct cert_issue_config cfg = {
        .ca_cert_path = fixture_path(&fix, ca_crt),
        .ca_key_path = fixture_path(&fix, ca_key),
        .cert_path = fixture_path(&fix, crt),
        .key_path = fixture_path(&fix, key),
        .name = name,
        .role = role,
        .hosts = hosts,
        .hosts_count = hosts_count,
    };
    return cert_issue(&cfg, msg, INBOX_TLS_ERRMSG_BYTES);
}

static void test_issue_refusals(void **state)
{
    (void)state;
    char msg[INBOX_TLS_ERRMSG_BYTES];
    fixture_ca(&fix, "ca");
    fixture_ca(&fix, "other");
    const char *good[] = {"127.0.0.1"};
    const char *bad_host[] = {"a,b"};
    const char *bad_dns[] = {"-x.example"};

    assert_int_equal(issue("ca", "n1", INBOX_ROLE_NODE, NULL, 0, msg),
                     INBOX_EINVAL);
    assert_non_null(strstr(msg, "at least one host"));
    assert_int_equal(issue("ca", "a b", INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_EINVAL);
    assert_int_equal(issue("ca", NULL, INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_EINVAL);
    assert_int_equal(issue("ca", "n1", INBOX_ROLE_NONE, good, 1, msg),
                     INBOX_EINVAL);
    assert_int_equal(issue("ca", "n1", INBOX_ROLE_NODE, bad_host, 1, msg),
                     INBOX_EINVAL);
    assert_int_equal(issue("ca", "n1", INBOX_ROLE_NODE, bad_dns, 1, msg),
                     INBOX_EINVAL);
    assert_int_equal(
        issue("ca", "n1", INBOX_ROLE_NODE, good, INBOX_CERT_HOSTS_MAX + 1, msg),
        INBOX_EINVAL);
    assert_int_equal(issue("missing", "n1", INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "missing.crt"));
    /* Nothing was written by any refusal. */
    assert_false(file_exists(fixture_path(&fix, "n1.crt")));
    assert_false(file_exists(fixture_path(&fix, "n1.key")));

    /* A CA certificate with someone else's key. */
    assert_int_equal(rename(fixture_path(&fix, "other.key"),
                            fixture_path(&fix, "mixed.key")),
                     0);
    assert_int_equal(
        link(fixture_path(&fix, "ca.crt"), fixture_path(&fix, "mixed.crt")), 0);
    assert_int_equal(issue("mixed", "n1", INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "does not match"));

    /* A leaf is not a CA. */
    fixture_issue(&fix, "ca", "n2", INBOX_ROLE_NODE,
                  (const char *const[]){"127.0.0.1", NULL}, 0, 0);
    assert_int_equal(issue("n2", "n3", INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "not a CA"));

    /* An existing certificate: refused, and no key left behind. */
    FILE *fp = fopen(fixture_path(&fix, "n4.crt"), "w");
    assert_non_null(fp);
    fputs("keep me\n", fp);
    fclose(fp);
    assert_int_equal(issue("ca", "n4", INBOX_ROLE_NODE, good, 1, msg),
                     INBOX_EEXISTS);
    assert_false(file_exists(fixture_path(&fix, "n4.key")));
    char buf[32];
    assert_int_equal(file_read(fixture_path(&fix, "n4.crt"), buf, sizeof buf),
                     8);
    assert_memory_equal(buf, "keep me\n", 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_name_check),
        cmocka_unit_test_setup_teardown(test_ca_create_and_refuse_overwrite,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issue_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
