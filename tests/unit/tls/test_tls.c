/* test_tls.c — net/tls: a client and a server tls_conn pumped against each
 * other in memory. Handshake, data both ways in random fragmentation, the
 * peer's role and name, and every way a peer is refused: another CA, no
 * certificate, plaintext, expired, wrong role, wrong host, TLS 1.2, and
 * garbage or tampering mid-stream. Random choices print their seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "inbox/error.h"
#include "inbox/limits.h"
#include "net/tls.h"
#include "tls_fixture.h"

static struct fixture fix;

/* ---- fixture: one CA directory for the whole group ---------------------- */

static int group_setup(void **state)
{
    (void)state;
    fixture_dir_make(&fix);
    fixture_ca(&fix, "ca");
    fixture_ca(&fix, "other");
    const char *hosts[] = {"127.0.0.1", "localhost", NULL};
    fixture_issue(&fix, "ca", "n1", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "n2", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca", "fe1", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    fixture_issue(&fix, "ca", "ops", INBOX_ROLE_ADMIN, NULL, 0, 0);
    fixture_issue(&fix, "other", "rogue", INBOX_ROLE_ADMIN, NULL, 0, 0);
    fixture_issue(&fix, "other", "roguenode", INBOX_ROLE_NODE, hosts, 0, 0);
    /* Valid for one day, ten days ago. */
    int64_t ten_days_ago = (int64_t)time(NULL) - 10 * 86400;
    fixture_issue(&fix, "ca", "old", INBOX_ROLE_FRONTEND, NULL, ten_days_ago,
                  1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fixture_dir_remove(&fix);
    return 0;
}

static struct tls_ctx *ctx_make(enum tls_side side, const char *ca,
                                const char *who, unsigned roles)
{
    char crt[64], key[64], cacrt[64], msg[INBOX_TLS_ERRMSG_BYTES];
    snprintf(cacrt, sizeof cacrt, "%s.crt", ca);
    snprintf(crt, sizeof crt, "%s.crt", who);
    snprintf(key, sizeof key, "%s.key", who);
    struct tls_ctx_config cfg = {
        .side = side,
        .ca_path = fixture_path(&fix, cacrt),
        .cert_path = fixture_path(&fix, crt),
        .key_path = fixture_path(&fix, key),
        .peer_roles_allowed = roles,
    };
    struct tls_ctx *ctx = NULL;
    int rc = tls_ctx_new(&cfg, &ctx, msg, sizeof msg);
    if (rc != 0)
        fail_msg("tls_ctx_new(%s): %s: %s", who, inbox_err_name(rc), msg);
    return ctx;
}

/* ---- the pump ----------------------------------------------------------- */

#define RX_CAP (1u * INBOX_MIB)

struct end {
    struct tls_conn *conn;
    unsigned char *rx; /* plaintext received */
    size_t rx_len;
    int err;
};

static void end_init(struct end *e, struct tls_ctx *ctx, const char *host)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(tls_conn_new(ctx, host, &e->conn), 0);
    e->rx = malloc(RX_CAP);
    assert_non_null(e->rx);
}

static void end_free(struct end *e)
{
    tls_conn_free(e->conn);
    free(e->rx);
}

/* Reads every plaintext byte available; records a sticky error. */
static void end_drain(struct end *e)
{
    for (;;) {
        size_t n = 0;
        assert_true(e->rx_len < RX_CAP);
        int rc = tls_conn_read_plain(e->conn, e->rx + e->rx_len,
                                     RX_CAP - e->rx_len, &n);
        if (rc != 0) {
            assert_int_equal(n, 0);
            e->err = rc;
            assert_int_equal(tls_conn_error(e->conn), rc);
            return;
        }
        e->rx_len += n;
        if (n == 0)
            return;
    }
}

/* Feeds bytes into `to`, draining it whenever it pushes back. */
static void end_feed(struct end *to, const unsigned char *p, size_t len)
{
    while (len > 0 && to->err == 0) {
        size_t took = 0;
        int rc = tls_conn_feed_cipher(to->conn, p, len, &took);
        if (rc != 0) {
            to->err = rc;
            return;
        }
        p += took;
        len -= took;
        end_drain(to); /* makes room if it pushed back */
    }
}

/* Moves all pending ciphertext from -> to, in fragments of 1..frag_max
 * bytes, then lets `to` process it. An optional mutator may spoil bytes
 * in flight. */
static size_t pump(struct end *from, struct end *to, struct rng *r,
                   size_t frag_max)
{
    static unsigned char buf[64 * 1024];
    size_t moved = 0;
    assert_true(frag_max <= sizeof buf);
    while (tls_conn_cipher_pending(from->conn) > 0) {
        assert_true(tls_conn_cipher_pending(from->conn) <=
                    INBOX_TLS_OUT_BYTES_MAX + INBOX_TLS_SLACK_BYTES);
        size_t want = r ? rng_range(r, 1, frag_max) : frag_max;
        size_t n = tls_conn_pull_cipher(from->conn, buf, want);
        assert_true(n > 0 && n <= want);
        moved += n;
        if (to->err == 0)
            end_feed(to, buf, n);
    }
    if (to->err == 0)
        end_drain(to);
    return moved;
}

/* Pumps both ways until nothing moves. */
static void settle(struct end *cli, struct end *srv, struct rng *r,
                   size_t frag_max)
{
    for (int round = 0; round < 64; round++) {
        size_t moved = pump(cli, srv, r, frag_max);
        moved += pump(srv, cli, r, frag_max);
        if (moved == 0)
            return;
    }
    fail_msg("pump did not settle");
}

/* ---- happy paths -------------------------------------------------------- */

static void test_handshake_roles_and_names(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    assert_int_equal(tls_ctx_own_role(sctx), INBOX_ROLE_NODE);
    const char *who[] = {"fe1", "ops", "n2"};
    const enum inbox_role role[] = {INBOX_ROLE_FRONTEND, INBOX_ROLE_ADMIN,
                                    INBOX_ROLE_NODE};
    for (int i = 0; i < 3; i++) {
        struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", who[i], 0);
        struct end cli, srv;
        end_init(&cli, cctx, "127.0.0.1");
        end_init(&srv, sctx, NULL);
        assert_false(tls_conn_handshake_done(cli.conn));
        assert_int_equal(tls_conn_peer_role(srv.conn), INBOX_ROLE_NONE);
        assert_string_equal(tls_conn_peer_name(srv.conn), "");
        /* The ClientHello is ready as soon as the client exists. */
        assert_true(tls_conn_cipher_pending(cli.conn) > 0);
        settle(&cli, &srv, NULL, 64 * 1024);
        assert_int_equal(cli.err, 0);
        assert_int_equal(srv.err, 0);
        assert_true(tls_conn_handshake_done(cli.conn));
        assert_true(tls_conn_handshake_done(srv.conn));
        assert_int_equal(tls_conn_peer_role(srv.conn), role[i]);
        assert_string_equal(tls_conn_peer_name(srv.conn), who[i]);
        assert_int_equal(tls_conn_peer_role(cli.conn), INBOX_ROLE_NODE);
        assert_string_equal(tls_conn_peer_name(cli.conn), "n1");
        assert_string_equal(tls_conn_error_message(srv.conn), "");
        end_free(&cli);
        end_free(&srv);
        tls_ctx_free(cctx);
    }
    tls_ctx_free(sctx);
}

/* Writes as much of data[*off..len) as the connection takes now. */
static void write_some(struct end *e, const unsigned char *data, size_t len,
                       size_t *off, struct rng *r)
{
    if (*off == len)
        return;
    size_t chunk = rng_range(r, 1, 40000);
    if (chunk > len - *off)
        chunk = len - *off;
    size_t took = 0;
    assert_int_equal(tls_conn_write_plain(e->conn, data + *off, chunk, &took),
                     0);
    assert_true(took <= chunk);
    *off += took;
}

static void test_data_both_ways_random_fragments(void **state)
{
    (void)state;
    struct rng r = {rng_seed_pick("data_both_ways")};
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "fe1", 0);
    for (int iter = 0; iter < 4; iter++) {
        size_t frag_max = iter == 0 ? 1 : rng_range(&r, 2, 20000);
        size_t len = iter == 0 ? 4096 : rng_range(&r, 1, 600 * INBOX_KIB);
        unsigned char *up = malloc(len), *down = malloc(len);
        assert_non_null(up);
        assert_non_null(down);
        for (size_t i = 0; i < len; i++) {
            up[i] = (unsigned char)rng_next(&r);
            down[i] = (unsigned char)rng_next(&r);
        }
        struct end cli, srv;
        end_init(&cli, cctx, "localhost");
        end_init(&srv, sctx, NULL);
        /* Nothing is taken before the handshake. */
        size_t took = 1;
        assert_int_equal(tls_conn_write_plain(cli.conn, up, len, &took), 0);
        assert_int_equal(took, 0);

        size_t up_off = 0, down_off = 0;
        for (int round = 0; round < 100000; round++) {
            if (tls_conn_handshake_done(cli.conn))
                write_some(&cli, up, len, &up_off, &r);
            if (tls_conn_handshake_done(srv.conn))
                write_some(&srv, down, len, &down_off, &r);
            size_t moved = pump(&cli, &srv, &r, frag_max);
            moved += pump(&srv, &cli, &r, frag_max);
            assert_int_equal(cli.err, 0);
            assert_int_equal(srv.err, 0);
            if (moved == 0 && up_off == len && down_off == len)
                break;
        }
        assert_int_equal(srv.rx_len, len);
        assert_int_equal(cli.rx_len, len);
        assert_memory_equal(srv.rx, up, len);
        assert_memory_equal(cli.rx, down, len);

        /* Orderly close: the server sees close_notify, then no data. */
        assert_int_equal(tls_conn_close(cli.conn), 0);
        settle(&cli, &srv, &r, frag_max);
        assert_true(tls_conn_peer_closed(srv.conn));
        assert_int_equal(srv.err, 0);
        took = 1;
        assert_int_equal(tls_conn_write_plain(cli.conn, up, 1, &took),
                         INBOX_ESHUTDOWN);
        end_free(&cli);
        end_free(&srv);
        free(up);
        free(down);
    }
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* The buffers stay bounded: writes stop near the outbound bound until it
 * is drained, and feeding more than the inbound bound is pushed back. */
static void test_bounds_push_back(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "n2", 0);
    struct end cli, srv;
    end_init(&cli, cctx, NULL);
    end_init(&srv, sctx, NULL);
    settle(&cli, &srv, NULL, 16 * 1024);
    assert_true(tls_conn_handshake_done(srv.conn));

    size_t big = 2 * INBOX_TLS_OUT_BYTES_MAX;
    unsigned char *data = calloc(1, big);
    size_t cipher_cap = 4 * INBOX_TLS_OUT_BYTES_MAX;
    unsigned char *cipher = malloc(cipher_cap);
    assert_non_null(data);
    assert_non_null(cipher);
    size_t plain_total = 0, cipher_len = 0;
    for (int round = 0; round < 3; round++) {
        size_t took = 0;
        assert_int_equal(tls_conn_write_plain(cli.conn, data, big, &took), 0);
        assert_true(took > INBOX_TLS_OUT_BYTES_MAX / 2 && took < big);
        assert_true(tls_conn_cipher_pending(cli.conn) <=
                    INBOX_TLS_OUT_BYTES_MAX);
        size_t more = 0;
        assert_int_equal(tls_conn_write_plain(cli.conn, data, big, &more), 0);
        assert_true(more < INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX);
        assert_true(tls_conn_cipher_pending(cli.conn) <=
                    INBOX_TLS_OUT_BYTES_MAX);
        plain_total += took + more;
        cipher_len += tls_conn_pull_cipher(cli.conn, cipher + cipher_len,
                                           cipher_cap - cipher_len);
        assert_int_equal(tls_conn_cipher_pending(cli.conn), 0);
    }
    assert_true(cipher_len > INBOX_TLS_IN_BYTES_MAX);

    /* All of it at once, without letting the server read in between. */
    size_t fed = 0, fed2 = 1;
    assert_int_equal(tls_conn_feed_cipher(srv.conn, cipher, cipher_len, &fed),
                     0);
    assert_int_equal(fed, INBOX_TLS_IN_BYTES_MAX);
    assert_int_equal(
        tls_conn_feed_cipher(srv.conn, cipher + fed, cipher_len - fed, &fed2),
        0);
    assert_int_equal(fed2, 0);
    end_drain(&srv);
    end_feed(&srv, cipher + fed, cipher_len - fed);
    end_drain(&srv);
    assert_int_equal(srv.err, 0);
    assert_int_equal(srv.rx_len, plain_total);
    free(cipher);
    free(data);
    end_free(&cli);
    end_free(&srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* ---- refusals ----------------------------------------------------------- */

/* The client finishes first in TLS 1.3 and may send data at once; when
 * the server then refuses the client, none of it may be delivered. */
static void refused_client_case(const char *client, unsigned server_roles,
                                int want_err, const char *want_text)
{
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", server_roles);
    char crt[64], key[64];
    snprintf(crt, sizeof crt, "%s.crt", client);
    snprintf(key, sizeof key, "%s.key", client);
    /* A raw OpenSSL client: it trusts our CA but presents whatever
     * certificate it holds. tls_ctx_new would refuse to load a foreign
     * or expired certificate at start-up, so it cannot play this part. */
    SSL_CTX *raw = SSL_CTX_new(TLS_client_method());
    assert_non_null(raw);
    SSL_CTX_set_min_proto_version(raw, TLS1_3_VERSION);
    assert_int_equal(
        SSL_CTX_load_verify_locations(raw, fixture_path(&fix, "ca.crt"), NULL),
        1);
    assert_int_equal(SSL_CTX_use_certificate_file(raw, fixture_path(&fix, crt),
                                                  SSL_FILETYPE_PEM),
                     1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(raw, fixture_path(&fix, key),
                                                 SSL_FILETYPE_PEM),
                     1);
    SSL_CTX_set_verify(raw, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(raw);
    BIO *rin = BIO_new(BIO_s_mem()), *rout = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rin, -1);
    SSL_set_bio(ssl, rin, rout);
    SSL_set_connect_state(ssl);

    struct end srv;
    end_init(&srv, sctx, NULL);
    static unsigned char buf[64 * 1024];
    int client_done = 0, sent_secret = 0;
    for (int round = 0; round < 16 && srv.err == 0; round++) {
        if (!client_done) {
            client_done = SSL_do_handshake(ssl) == 1;
            ERR_clear_error();
        }
        if (client_done && !sent_secret) {
            assert_int_equal(SSL_write(ssl, "secret data", 11), 11);
            sent_secret = 1;
        }
        int n;
        while ((n = BIO_read(rout, buf, sizeof buf)) > 0)
            end_feed(&srv, buf, (size_t)n);
        if (srv.err == 0)
            end_drain(&srv);
        size_t m;
        while ((m = tls_conn_pull_cipher(srv.conn, buf, sizeof buf)) > 0)
            BIO_write(rin, buf, (int)m);
    }
    assert_true(client_done && sent_secret);
    assert_int_equal(srv.err, want_err);
    if (want_err == 0) { /* the control case */
        assert_true(tls_conn_handshake_done(srv.conn));
        assert_int_equal(srv.rx_len, 11);
        assert_int_equal(tls_conn_peer_role(srv.conn), INBOX_ROLE_FRONTEND);
        assert_string_equal(tls_conn_peer_name(srv.conn), client);
        goto done;
    }
    assert_int_equal(srv.rx_len, 0);
    assert_false(tls_conn_handshake_done(srv.conn));
    assert_int_equal(tls_conn_peer_role(srv.conn), INBOX_ROLE_NONE);
    const char *text = tls_conn_error_message(srv.conn);
    printf("%s: server says: %s\n", client, text);
    if (strstr(text, want_text) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", text, want_text);
    /* Sticky, and the same on every call. */
    size_t n = 0;
    assert_int_equal(tls_conn_read_plain(srv.conn, buf, sizeof buf, &n),
                     want_err);
    assert_int_equal(tls_conn_feed_cipher(srv.conn, "x", 1, &n), want_err);
    assert_int_equal(tls_conn_write_plain(srv.conn, "x", 1, &n), want_err);
done:
    SSL_free(ssl);
    SSL_CTX_free(raw);
    end_free(&srv);
    tls_ctx_free(sctx);
}

/* Writes <name>.crt/.key: a certificate signed by CA <ca>, with subject
 * CN=<cn>, made by hand with OpenSSL so it can break net/cert's rules
 * (`san` is an OpenSSL config string, or NULL for no subjectAltName). */
static void forge_by(const char *ca_name, const char *name, const char *cn,
                     const char *san)
{
    char ca_crt[64], ca_keyf[64];
    snprintf(ca_crt, sizeof ca_crt, "%s.crt", ca_name);
    snprintf(ca_keyf, sizeof ca_keyf, "%s.key", ca_name);
    FILE *fp = fopen(fixture_path(&fix, ca_keyf), "r");
    assert_non_null(fp);
    EVP_PKEY *ca_key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    fclose(fp);
    fp = fopen(fixture_path(&fix, ca_crt), "r");
    assert_non_null(fp);
    X509 *ca = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(ca_key);
    assert_non_null(ca);

    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, "clientAuth");
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (san != NULL) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);

    char crt[64], keyf[64];
    snprintf(crt, sizeof crt, "%s.crt", name);
    snprintf(keyf, sizeof keyf, "%s.key", name);
    fp = fopen(fixture_path(&fix, crt), "w");
    assert_non_null(fp);
    PEM_write_X509(fp, x);
    fclose(fp);
    fp = fopen(fixture_path(&fix, keyf), "w");
    assert_non_null(fp);
    PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
    fclose(fp);
    X509_free(x);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

static void forge(const char *name, const char *san)
{
    forge_by("ca", name, name, san);
}

/* The role rule: exactly one known "inboxd:role=" URI, or no entry. */
static void test_refuse_missing_or_ambiguous_role(void **state)
{
    (void)state;
    forge("norole", NULL);
    refused_client_case("norole", 0, INBOX_ETLS_ROLE, "carries no inboxd role");
    forge("tworoles", "URI:inboxd:role=frontend,URI:inboxd:role=admin");
    refused_client_case("tworoles", 0, INBOX_ETLS_ROLE,
                        "carries no inboxd role");
    forge("oddrole", "URI:inboxd:role=root");
    refused_client_case("oddrole", 0, INBOX_ETLS_ROLE,
                        "carries no inboxd role");
    forge("other-uri", "URI:https://example.com/,DNS:localhost");
    refused_client_case("other-uri", 0, INBOX_ETLS_ROLE,
                        "carries no inboxd role");
    /* The same forge with one good role gets in: the refusals above are
     * about the role alone. */
    forge("goodrole", "URI:https://example.com/,URI:inboxd:role=frontend");
    refused_client_case("goodrole", 0, 0, "");
}

/* A refused peer's certificate text reaches our logs only made harmless,
 * and a CN that breaks the name rule is refused even from our CA. */
static void test_hostile_names(void **state)
{
    (void)state;
    forge_by("other", "evilcn", "x\nlevel=error msg=\"forged\"",
             "URI:inboxd:role=admin");
    refused_client_case("evilcn", 0, INBOX_ETLS_UNTRUSTED,
                        "peer CN=x?level=error msg=?forged?");
    forge_by("ca", "spacecn", "fe 1", "URI:inboxd:role=frontend");
    refused_client_case("spacecn", 0, INBOX_EUNAUTHENTICATED,
                        "no valid common name (CN=fe 1)");
}

static void test_refuse_client_from_other_ca(void **state)
{
    (void)state;
    refused_client_case("rogue", 0, INBOX_ETLS_UNTRUSTED,
                        "peer certificate not signed by the cluster CA");
}

static void test_refuse_expired_client(void **state)
{
    (void)state;
    refused_client_case("old", 0, INBOX_ETLS_EXPIRED, "expired");
}

static void test_refuse_role_not_allowed(void **state)
{
    (void)state;
    /* A listener for peer nodes only; a front-end knocks. */
    refused_client_case("fe1", INBOX_ROLE_BIT(INBOX_ROLE_NODE), INBOX_ETLS_ROLE,
                        "peer role frontend is not allowed");
}

/* Our own client against a rogue server: the client refuses, and the
 * server learns why from the alert. */
static void test_client_refuses_server_from_other_ca(void **state)
{
    (void)state;
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "n2", 0);
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "other", "roguenode", 0);
    struct end cli, srv;
    end_init(&cli, cctx, "127.0.0.1");
    end_init(&srv, sctx, NULL);
    settle(&cli, &srv, NULL, 1000);
    assert_int_equal(cli.err, INBOX_ETLS_UNTRUSTED);
    printf("client: %s\nserver: %s\n", tls_conn_error_message(cli.conn),
           tls_conn_error_message(srv.conn));
    assert_non_null(strstr(tls_conn_error_message(cli.conn), "roguenode"));
    assert_false(tls_conn_handshake_done(cli.conn));
    assert_int_equal(srv.err, INBOX_ETLS_REFUSED);
    assert_non_null(
        strstr(tls_conn_error_message(srv.conn), "does not accept our"));
    end_free(&cli);
    end_free(&srv);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* After the server refuses a client, the client's next read reports the
 * alert, in words. */
static void test_refused_client_hears_why(void **state)
{
    (void)state;
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "fe1", 0);
    struct tls_ctx *sctx =
        ctx_make(TLS_SIDE_SERVER, "ca", "n1", INBOX_ROLE_BIT(INBOX_ROLE_NODE));
    struct end cli, srv;
    end_init(&cli, cctx, NULL);
    end_init(&srv, sctx, NULL);
    settle(&cli, &srv, NULL, 1000);
    assert_int_equal(srv.err, INBOX_ETLS_ROLE);
    assert_int_equal(cli.err, INBOX_ETLS_REFUSED);
    assert_int_equal(cli.rx_len, 0);
    end_free(&cli);
    end_free(&srv);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_refuse_wrong_host(void **state)
{
    (void)state;
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "n2", 0);
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    const char *hosts[] = {"10.9.9.9", "elsewhere.example"};
    for (int i = 0; i < 2; i++) {
        struct end cli, srv;
        end_init(&cli, cctx, hosts[i]);
        end_init(&srv, sctx, NULL);
        settle(&cli, &srv, NULL, 1000);
        assert_int_equal(cli.err, INBOX_ETLS_HOSTNAME);
        printf("wrong host: %s\n", tls_conn_error_message(cli.conn));
        assert_int_equal(srv.err, INBOX_ETLS_REFUSED);
        end_free(&cli);
        end_free(&srv);
    }
    /* A server side does not check host names. */
    struct tls_conn *c = NULL;
    assert_int_equal(tls_conn_new(sctx, "127.0.0.1", &c), INBOX_EINVAL);
    assert_null(c);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

/* A raw OpenSSL client with no certificate, or speaking only TLS 1.2. */
static int raw_client_against(struct end *srv, int max_version, int with_cert)
{
    SSL_CTX *raw = SSL_CTX_new(TLS_client_method());
    assert_non_null(raw);
    SSL_CTX_set_max_proto_version(raw, max_version);
    assert_int_equal(
        SSL_CTX_load_verify_locations(raw, fixture_path(&fix, "ca.crt"), NULL),
        1);
    if (with_cert) {
        assert_int_equal(
            SSL_CTX_use_certificate_file(raw, fixture_path(&fix, "fe1.crt"),
                                         SSL_FILETYPE_PEM),
            1);
        assert_int_equal(
            SSL_CTX_use_PrivateKey_file(raw, fixture_path(&fix, "fe1.key"),
                                        SSL_FILETYPE_PEM),
            1);
    }
    SSL *ssl = SSL_new(raw);
    BIO *rin = BIO_new(BIO_s_mem()), *rout = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rin, -1);
    SSL_set_bio(ssl, rin, rout);
    SSL_set_connect_state(ssl);
    static unsigned char buf[64 * 1024];
    int said_hello = 0;
    for (int round = 0; round < 16 && srv->err == 0; round++) {
        if (SSL_do_handshake(ssl) == 1 && !said_hello)
            said_hello = SSL_write(ssl, "hello", 5) == 5;
        ERR_clear_error();
        int n;
        while ((n = BIO_read(rout, buf, sizeof buf)) > 0)
            end_feed(srv, buf, (size_t)n);
        if (srv->err == 0)
            end_drain(srv);
        size_t m;
        while ((m = tls_conn_pull_cipher(srv->conn, buf, sizeof buf)) > 0)
            BIO_write(rin, buf, (int)m);
    }
    SSL_free(ssl);
    SSL_CTX_free(raw);
    ERR_clear_error();
    return srv->err;
}

static void test_refuse_client_without_certificate(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct end srv;
    end_init(&srv, sctx, NULL);
    assert_int_equal(raw_client_against(&srv, TLS1_3_VERSION, 0),
                     INBOX_EUNAUTHENTICATED);
    printf("no certificate: %s\n", tls_conn_error_message(srv.conn));
    assert_non_null(
        strstr(tls_conn_error_message(srv.conn), "presented no certificate"));
    assert_int_equal(srv.rx_len, 0);
    end_free(&srv);

    /* The same raw client with a certificate gets in: the harness is
     * sound, the refusal above is about the certificate. */
    end_init(&srv, sctx, NULL);
    assert_int_equal(raw_client_against(&srv, TLS1_3_VERSION, 1), 0);
    assert_true(tls_conn_handshake_done(srv.conn));
    assert_int_equal(srv.rx_len, 5);
    assert_memory_equal(srv.rx, "hello", 5);
    end_free(&srv);
    tls_ctx_free(sctx);
}

static void test_refuse_tls12(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct end srv;
    end_init(&srv, sctx, NULL);
    assert_int_equal(raw_client_against(&srv, TLS1_2_VERSION, 1),
                     INBOX_ETLS_HANDSHAKE);
    printf("tls 1.2: %s\n", tls_conn_error_message(srv.conn));
    assert_non_null(strstr(tls_conn_error_message(srv.conn), "TLS 1.3"));
    end_free(&srv);
    tls_ctx_free(sctx);
}

static void plaintext_case(struct tls_ctx *ctx, const void *bytes, size_t len,
                           const char *want_preview)
{
    struct end e;
    end_init(&e, ctx, NULL);
    size_t took = 0;
    int rc = tls_conn_feed_cipher(e.conn, bytes, len, &took);
    assert_int_equal(rc, INBOX_ETLS_PLAINTEXT);
    assert_int_equal(took, 0);
    const char *msg = tls_conn_error_message(e.conn);
    printf("plaintext: %s\n", msg);
    assert_non_null(strstr(msg, "peer spoke plaintext, not TLS"));
    if (strstr(msg, want_preview) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", msg, want_preview);
    size_t n = 0;
    unsigned char buf[16];
    assert_int_equal(tls_conn_read_plain(e.conn, buf, sizeof buf, &n),
                     INBOX_ETLS_PLAINTEXT);
    assert_int_equal(n, 0);
    end_free(&e);
}

static void test_refuse_plaintext(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    const char http[] = "GET / HTTP/1.1\r\nHost: n1\r\n\r\n";
    plaintext_case(sctx, http, sizeof http - 1, "\"GET / HT\"");
    /* An inboxd frame header in the clear: "INBX", version 1, HELLO. */
    const unsigned char frame[24] = {'I', 'N', 'B', 'X', 1, 0, 0x01};
    plaintext_case(sctx, frame, sizeof frame, "\"INBX\\x01\\x00\\x01\\x00\"");
    /* A client whose server answers in plaintext. */
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "fe1", 0);
    plaintext_case(cctx, "-ERR not TLS\r\n", 14, "-ERR not");
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* ---- damage mid-stream -------------------------------------------------- */

static void open_pair(struct tls_ctx *cctx, struct tls_ctx *sctx,
                      struct end *cli, struct end *srv)
{
    end_init(cli, cctx, NULL);
    end_init(srv, sctx, NULL);
    settle(cli, srv, NULL, 4096);
    assert_true(tls_conn_handshake_done(srv->conn));
    assert_true(tls_conn_handshake_done(cli->conn));
}

static void test_garbage_mid_stream(void **state)
{
    (void)state;
    struct rng r = {rng_seed_pick("garbage_mid_stream")};
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "ops", 0);
    for (int iter = 0; iter < 20; iter++) {
        struct end cli, srv;
        open_pair(cctx, sctx, &cli, &srv);
        size_t took;
        assert_int_equal(tls_conn_write_plain(cli.conn, "ping", 4, &took), 0);
        pump(&cli, &srv, &r, 100);
        assert_int_equal(srv.rx_len, 4);

        unsigned char junk[512];
        size_t len = rng_range(&r, 1, sizeof junk);
        for (size_t i = 0; i < len; i++)
            junk[i] = (unsigned char)rng_next(&r);
        if (iter == 0) /* a plausible header with an absurd length */
            memcpy(junk, "\x17\x03\x03\xff\xff", len = 5);
        if (iter == 1) /* a plausible header, then bytes that are no MAC */
            memcpy(junk, "\x17\x03\x03\x00\x20", 5), len = 5 + 32;
        end_feed(&srv, junk, len);
        end_drain(&srv);
        if (iter == 0 || iter == 1 || srv.err != 0) {
            assert_int_equal(srv.err, INBOX_ETLS_RECORD);
            assert_non_null(strstr(tls_conn_error_message(srv.conn),
                                   "corrupt or unexpected TLS record"));
        } else {
            /* Too short to judge yet: the bytes wait for the rest of
             * their record, and more garbage settles it. */
            memset(junk, 0xEE, sizeof junk);
            for (int k = 0; k < 200 && srv.err == 0; k++)
                end_feed(&srv, junk, sizeof junk);
            assert_int_equal(srv.err, INBOX_ETLS_RECORD);
        }
        assert_int_equal(srv.rx_len, 4);
        /* The client hears about it and fails too. */
        pump(&srv, &cli, &r, 100);
        end_free(&cli);
        end_free(&srv);
    }
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

static void test_tampered_record(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "fe1", 0);
    struct end cli, srv;
    open_pair(cctx, sctx, &cli, &srv);
    size_t took;
    assert_int_equal(tls_conn_write_plain(cli.conn, "transfer 100", 12, &took),
                     0);
    unsigned char buf[256];
    size_t n = tls_conn_pull_cipher(cli.conn, buf, sizeof buf);
    assert_true(n > 12 + 5);
    buf[n - 3] ^= 0x01; /* a bit of the AEAD tag */
    end_feed(&srv, buf, n);
    end_drain(&srv);
    assert_int_equal(srv.err, INBOX_ETLS_RECORD);
    printf("tampered: %s\n", tls_conn_error_message(srv.conn));
    assert_int_equal(srv.rx_len, 0);
    end_free(&cli);
    end_free(&srv);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

/* ---- CA rotation -------------------------------------------------------- */

static void file_append(const char *dst, const char *src)
{
    FILE *in = fopen(src, "r"), *out = fopen(dst, "a");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static int handshake_with(struct tls_ctx *cctx, struct tls_ctx *sctx)
{
    struct end cli, srv;
    end_init(&cli, cctx, NULL);
    end_init(&srv, sctx, NULL);
    settle(&cli, &srv, NULL, 4096);
    int rc = srv.err ? srv.err : cli.err;
    if (rc == 0 && !tls_conn_handshake_done(srv.conn))
        rc = INBOX_EINTERNAL;
    end_free(&cli);
    end_free(&srv);
    return rc;
}

/* docs/security.md's CA rotation: a trust bundle with the old and the new
 * CA lets old and new certificates meet during the overlap, even when both
 * CAs have the same name; dropping the old CA then shuts old ones out. */
static void test_ca_rotation_with_bundle(void **state)
{
    (void)state;
    char msg[INBOX_TLS_ERRMSG_BYTES];
    struct cert_ca_config ca2 = {
        .cert_path = fixture_path(&fix, "ca2.crt"),
        .key_path = fixture_path(&fix, "ca2.key"),
        .name = "ca", /* the same subject as the old CA */
    };
    assert_int_equal(cert_ca_create(&ca2, msg, sizeof msg), 0);
    const char *hosts[] = {"127.0.0.1", NULL};
    fixture_issue(&fix, "ca2", "n1new", INBOX_ROLE_NODE, hosts, 0, 0);
    fixture_issue(&fix, "ca2", "fe1new", INBOX_ROLE_FRONTEND, NULL, 0, 0);
    file_append(fixture_path(&fix, "bundle.crt"), fixture_path(&fix, "ca.crt"));
    file_append(fixture_path(&fix, "bundle.crt"),
                fixture_path(&fix, "ca2.crt"));

    /* During the overlap everyone trusts the bundle. */
    struct tls_ctx *s_old = ctx_make(TLS_SIDE_SERVER, "bundle", "n1", 0);
    struct tls_ctx *s_new = ctx_make(TLS_SIDE_SERVER, "bundle", "n1new", 0);
    struct tls_ctx *c_old = ctx_make(TLS_SIDE_CLIENT, "bundle", "fe1", 0);
    struct tls_ctx *c_new = ctx_make(TLS_SIDE_CLIENT, "bundle", "fe1new", 0);
    assert_int_equal(handshake_with(c_old, s_old), 0);
    assert_int_equal(handshake_with(c_old, s_new), 0);
    assert_int_equal(handshake_with(c_new, s_old), 0);
    assert_int_equal(handshake_with(c_new, s_new), 0);
    /* After it, only the new CA: old certificates are out. */
    struct tls_ctx *s_only = ctx_make(TLS_SIDE_SERVER, "ca2", "n1new", 0);
    assert_int_equal(handshake_with(c_new, s_only), 0);
    assert_int_equal(handshake_with(c_old, s_only), INBOX_ETLS_UNTRUSTED);
    tls_ctx_free(s_only);
    tls_ctx_free(c_new);
    tls_ctx_free(c_old);
    tls_ctx_free(s_new);
    tls_ctx_free(s_old);
}

/* A context may be replaced while connections made from it live on: the
 * way a node picks up a renewed certificate without dropping anyone. */
static void test_ctx_swap_keeps_connections(void **state)
{
    (void)state;
    struct tls_ctx *sctx = ctx_make(TLS_SIDE_SERVER, "ca", "n1", 0);
    struct tls_ctx *cctx = ctx_make(TLS_SIDE_CLIENT, "ca", "fe1", 0);
    struct end cli, srv;
    end_init(&cli, cctx, NULL);
    end_init(&srv, sctx, NULL);
    tls_ctx_free(sctx); /* mid-handshake */
    settle(&cli, &srv, NULL, 4096);
    assert_true(tls_conn_handshake_done(srv.conn));
    tls_ctx_free(cctx);
    size_t took = 0;
    assert_int_equal(tls_conn_write_plain(cli.conn, "still here", 10, &took),
                     0);
    settle(&cli, &srv, NULL, 4096);
    assert_int_equal(srv.rx_len, 10);
    end_free(&cli);
    end_free(&srv);
}

/* ---- configuration ------------------------------------------------------ */

static int ctx_try(enum tls_side side, const char *ca, const char *crt,
                   const char *key, char *msg)
{
    struct tls_ctx_config cfg = {
        .side = side,
        .ca_path = fixture_path(&fix, ca),
        .cert_path = fixture_path(&fix, crt),
        .key_path = fixture_path(&fix, key),
    };
    struct tls_ctx *ctx = NULL;
    int rc = tls_ctx_new(&cfg, &ctx, msg, INBOX_TLS_ERRMSG_BYTES);
    if (rc == 0)
        tls_ctx_free(ctx);
    else
        assert_null(ctx);
    return rc;
}

static void test_ctx_config_errors(void **state)
{
    (void)state;
    char msg[INBOX_TLS_ERRMSG_BYTES];
    const enum tls_side srv = TLS_SIDE_SERVER, cli = TLS_SIDE_CLIENT;
    assert_int_equal(ctx_try(srv, "ca.crt", "n1.crt", "n1.key", msg), 0);
    assert_int_equal(ctx_try(srv, "nope.crt", "n1.crt", "n1.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "nope.crt"));
    assert_int_equal(ctx_try(srv, "ca.crt", "nope.crt", "n1.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_int_equal(ctx_try(srv, "ca.crt", "n1.crt", "n2.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "does not match"));
    /* Own certificate from another CA: caught at start-up. */
    assert_int_equal(ctx_try(cli, "ca.crt", "rogue.crt", "rogue.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "does not verify"));
    assert_int_equal(ctx_try(cli, "ca.crt", "old.crt", "old.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "expired"));
    /* Only a node may serve. */
    assert_int_equal(ctx_try(srv, "ca.crt", "ops.crt", "ops.key", msg),
                     INBOX_ETLS_CONFIG);
    assert_non_null(strstr(msg, "only a node"));
    assert_int_equal(ctx_try(cli, "ca.crt", "ops.crt", "ops.key", msg), 0);

    struct tls_ctx *ctx = NULL;
    struct tls_ctx_config bad = {.side = TLS_SIDE_CLIENT};
    assert_int_equal(tls_ctx_new(&bad, &ctx, msg, sizeof msg), INBOX_EINVAL);
    tls_ctx_free(NULL);
    tls_conn_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_roles_and_names),
        cmocka_unit_test(test_data_both_ways_random_fragments),
        cmocka_unit_test(test_bounds_push_back),
        cmocka_unit_test(test_refuse_client_from_other_ca),
        cmocka_unit_test(test_refuse_expired_client),
        cmocka_unit_test(test_refuse_role_not_allowed),
        cmocka_unit_test(test_refuse_missing_or_ambiguous_role),
        cmocka_unit_test(test_hostile_names),
        cmocka_unit_test(test_client_refuses_server_from_other_ca),
        cmocka_unit_test(test_refused_client_hears_why),
        cmocka_unit_test(test_refuse_wrong_host),
        cmocka_unit_test(test_refuse_client_without_certificate),
        cmocka_unit_test(test_refuse_tls12),
        cmocka_unit_test(test_refuse_plaintext),
        cmocka_unit_test(test_garbage_mid_stream),
        cmocka_unit_test(test_tampered_record),
        cmocka_unit_test(test_ca_rotation_with_bundle),
        cmocka_unit_test(test_ctx_swap_keeps_connections),
        cmocka_unit_test(test_ctx_config_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
