/*
 * cert.c — make the cluster CA and issue node / admin / front-end
 * certificates (EC P-256, SHA-256 signatures, X.509 v3), as PEM files.
 *
 * Crypto and files are kept apart: a certificate and its key are first
 * encoded to memory, then each goes to a temporary file in its target's
 * directory (mkstemp: mode 0600 from the start, so a private key is never
 * readable by others, not even for a moment), fsync'd and given its final
 * mode. Only when both are on disk do they take their names: link(2) when
 * overwriting is not allowed (it fails atomically if the name exists),
 * rename(2) when it is; then the directories are fsync'd. If the
 * certificate cannot take its name, a key this call created is removed.
 */
#include "net/cert.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "inbox/error.h"
#include "inbox/limits.h"

#define CERT_MODE_KEY 0600
#define CERT_MODE_CERT 0644
#define CERT_CA_NAME_DEFAULT "inboxd cluster CA"
#define CERT_ORGANIZATION "inboxd"
#define CERT_SERIAL_BITS 159 /* positive and at most 20 bytes (RFC 5280) */
#define CERT_NOT_BEFORE_SLACK_S 300
#define CERT_VALID_DAYS_MAX 36500u
#define CERT_PATH_BYTES_MAX 4096u

/* ---- roles and names ---------------------------------------------------- */

static const char *const role_names[] = {
    [INBOX_ROLE_NONE] = "none",
    [INBOX_ROLE_NODE] = "node",
    [INBOX_ROLE_ADMIN] = "admin",
    [INBOX_ROLE_FRONTEND] = "frontend",
};

const char *cert_role_name(enum inbox_role role)
{
    if ((unsigned)role >= sizeof role_names / sizeof role_names[0])
        return "none";
    return role_names[role];
}

int cert_role_parse(const char *name, enum inbox_role *role_out)
{
    if (name == NULL || role_out == NULL)
        return INBOX_EINVAL;
    for (unsigned r = INBOX_ROLE_NODE; r <= INBOX_ROLE_FRONTEND; r++) {
        if (strcmp(name, role_names[r]) == 0) {
            *role_out = (enum inbox_role)r;
            return 0;
        }
    }
    return INBOX_EINVAL;
}

static int is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
}

int cert_name_check(const char *name)
{
    if (name == NULL)
        return INBOX_EINVAL;
    size_t len = strnlen(name, INBOX_CERT_NAME_BYTES_MAX + 1);
    if (len == 0 || len > INBOX_CERT_NAME_BYTES_MAX)
        return INBOX_EINVAL;
    if (name[0] == '.' || name[0] == '-')
        return INBOX_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (!is_name_char(name[i]))
            return INBOX_EINVAL;
    }
    return 0;
}

/* A DNS name: dot-separated labels of [A-Za-z0-9-], 1..63 bytes each, not
 * starting or ending with '-'. No wildcards: a node names itself. */
static int dns_name_check(const char *host)
{
    size_t len = strnlen(host, INBOX_CERT_HOST_BYTES_MAX + 1);
    if (len == 0 || len > INBOX_CERT_HOST_BYTES_MAX)
        return INBOX_EINVAL;
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        char ch = host[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || label > 63 || host[i - 1] == '-')
                return INBOX_EINVAL;
            label = 0;
            continue;
        }
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || (ch == '-' && label > 0);
        if (!ok)
            return INBOX_EINVAL;
        label++;
    }
    return 0;
}

/* ---- messages ----------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
msg_set(char *errmsg, size_t errmsg_bytes, const char *fmt, ...)
{
    if (errmsg == NULL || errmsg_bytes == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, errmsg_bytes, fmt, ap);
    va_end(ap);
}

/* The reason of OpenSSL's most recent error, or "unknown reason"; clears
 * the thread's error queue so it never leaks into a later call. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return reason ? reason : "unknown reason";
}

/* ---- files -------------------------------------------------------------- */

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Phase one of writing `path`: the bytes go to a new temporary file next
 * to it (mkstemp: mode 0600 from the start), fsync'd, then given `mode`.
 * The name of the temporary file is left in `tmp`. */
static int tmp_write(const char *path, const char *data, size_t len,
                     mode_t mode, char tmp[CERT_PATH_BYTES_MAX + 16],
                     char *errmsg, size_t errmsg_bytes)
{
    int w = snprintf(tmp, CERT_PATH_BYTES_MAX + 16, "%s.tmp.XXXXXX", path);
    if (w < 0 || (size_t)w >= CERT_PATH_BYTES_MAX + 16) {
        msg_set(errmsg, errmsg_bytes, "path too long: %s", path);
        return INBOX_EINVAL;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = -errno;
        msg_set(errmsg, errmsg_bytes, "cannot create a file next to %s: %s",
                path, strerror(errno));
        return rc;
    }
    int rc = write_all(fd, data, len);
    if (rc == 0 && fchmod(fd, mode) != 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        msg_set(errmsg, errmsg_bytes, "cannot write %s: %s", tmp,
                strerror(-rc));
        unlink(tmp);
    }
    return rc;
}

/* Phase two: the temporary file takes its final name. Without
 * `overwrite`, link(2) fails atomically if the name exists; with it,
 * rename(2) replaces the old file. The temporary name is gone after. */
static int tmp_commit(const char *tmp, const char *path, bool overwrite,
                      char *errmsg, size_t errmsg_bytes)
{
    int rc = 0;
    if (overwrite ? rename(tmp, path) != 0 : link(tmp, path) != 0) {
        rc = errno == EEXIST ? INBOX_EEXISTS : -errno;
        msg_set(errmsg, errmsg_bytes, "cannot create %s: %s", path,
                errno == EEXIST ? "file exists (refusing to overwrite it)"
                                : strerror(errno));
    }
    unlink(tmp); /* after a rename, a no-op */
    return rc;
}

/* Makes the new names durable: fsync the directory holding `path`. */
static void dir_sync(const char *path)
{
    char dir[CERT_PATH_BYTES_MAX + 1];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: the files themselves are synced */
        close(fd);
    }
}

/* Checks both outputs up front, so that a refused overwrite writes nothing
 * and generates no key. The link(2) in tmp_commit still guards the
 * race with another writer. */
static int outputs_check(const char *cert_path, const char *key_path,
                         bool overwrite, char *errmsg, size_t errmsg_bytes)
{
    if (cert_path == NULL || key_path == NULL || cert_path[0] == '\0' ||
        key_path[0] == '\0') {
        msg_set(errmsg, errmsg_bytes, "certificate and key paths required");
        return INBOX_EINVAL;
    }
    if (strlen(cert_path) > CERT_PATH_BYTES_MAX ||
        strlen(key_path) > CERT_PATH_BYTES_MAX) {
        msg_set(errmsg, errmsg_bytes, "path too long");
        return INBOX_EINVAL;
    }
    if (strcmp(cert_path, key_path) == 0) {
        msg_set(errmsg, errmsg_bytes,
                "certificate and key must be different files: %s", key_path);
        return INBOX_EINVAL;
    }
    if (overwrite)
        return 0;
    const char *paths[2] = {cert_path, key_path};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (lstat(paths[i], &st) == 0) {
            msg_set(errmsg, errmsg_bytes,
                    "%s exists (refusing to overwrite it)", paths[i]);
            return INBOX_EEXISTS;
        }
    }
    return 0;
}

/* Encodes key (0600) and certificate (0644) and writes both. Everything
 * that can plausibly fail (encoding, a full disk) happens before either
 * final name is touched; if the certificate's name then cannot be taken,
 * a key created by this call is removed again. */
static int pair_write(X509 *cert, EVP_PKEY *key, const char *cert_path,
                      const char *key_path, bool overwrite, char *errmsg,
                      size_t errmsg_bytes)
{
    int rc = INBOX_ENOMEM;
    BIO *key_pem = BIO_new(BIO_s_mem());
    BIO *cert_pem = BIO_new(BIO_s_mem());
    if (key_pem == NULL || cert_pem == NULL) {
        msg_set(errmsg, errmsg_bytes, "out of memory");
        goto err_after_bio;
    }
    if (!PEM_write_bio_PrivateKey(key_pem, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509(cert_pem, cert)) {
        rc = INBOX_EINTERNAL;
        msg_set(errmsg, errmsg_bytes, "cannot encode PEM: %s", ossl_reason());
        goto err_after_bio;
    }
    char key_tmp[CERT_PATH_BYTES_MAX + 16], cert_tmp[CERT_PATH_BYTES_MAX + 16];
    char *data;
    long len = BIO_get_mem_data(key_pem, &data);
    rc = tmp_write(key_path, data, (size_t)len, CERT_MODE_KEY, key_tmp, errmsg,
                   errmsg_bytes);
    if (rc != 0)
        goto err_after_bio;
    len = BIO_get_mem_data(cert_pem, &data);
    rc = tmp_write(cert_path, data, (size_t)len, CERT_MODE_CERT, cert_tmp,
                   errmsg, errmsg_bytes);
    if (rc != 0)
        goto err_after_key_tmp;
    rc = tmp_commit(key_tmp, key_path, overwrite, errmsg, errmsg_bytes);
    if (rc != 0)
        goto err_after_cert_tmp;
    rc = tmp_commit(cert_tmp, cert_path, overwrite, errmsg, errmsg_bytes);
    if (rc != 0) {
        if (!overwrite)
            unlink(key_path);
        goto err_after_bio;
    }
    dir_sync(key_path);
    dir_sync(cert_path);
    BIO_free(cert_pem);
    BIO_free(key_pem);
    return 0;

err_after_cert_tmp:
    unlink(cert_tmp);
err_after_key_tmp:
    unlink(key_tmp); /* a no-op if tmp_commit removed it already */
err_after_bio:
    BIO_free(cert_pem);
    BIO_free(key_pem);
    return rc;
}

/* ---- certificate building ----------------------------------------------- */

static int ext_add(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return INBOX_EINTERNAL;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : INBOX_EINTERNAL;
}

static int name_set(X509_NAME *name, const char *cn)
{
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                    (const unsigned char *)CERT_ORGANIZATION,
                                    -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    (const unsigned char *)cn, -1, -1, 0))
        return INBOX_EINTERNAL;
    return 0;
}

/* A fresh certificate for `key`: v3, random serial, subject O=inboxd,
 * CN=name, validity [not_before, not_before + days). */
static X509 *cert_skeleton(EVP_PKEY *key, const char *name, time_t not_before,
                           uint32_t valid_days)
{
    X509 *cert = X509_new();
    BIGNUM *serial = BN_new();
    if (cert == NULL || serial == NULL)
        goto err;
    if (!X509_set_version(cert, X509_VERSION_3) ||
        !BN_rand(serial, CERT_SERIAL_BITS, BN_RAND_TOP_ANY,
                 BN_RAND_BOTTOM_ODD) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) ||
        !X509_time_adj_ex(X509_getm_notBefore(cert), 0, 0, &not_before) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert), (int)valid_days, 0,
                          &not_before) ||
        !X509_set_pubkey(cert, key) ||
        name_set(X509_get_subject_name(cert), name) != 0)
        goto err;
    BN_free(serial);
    return cert;
err:
    BN_free(serial);
    X509_free(cert);
    return NULL;
}

static int gen_push(GENERAL_NAMES *gens, int type, ASN1_STRING *value)
{
    GENERAL_NAME *gen = GENERAL_NAME_new();
    if (gen == NULL) {
        ASN1_STRING_free(value);
        return INBOX_ENOMEM;
    }
    GENERAL_NAME_set0_value(gen, type, value);
    if (!sk_GENERAL_NAME_push(gens, gen)) {
        GENERAL_NAME_free(gen);
        return INBOX_ENOMEM;
    }
    return 0;
}

/* subjectAltName: URI:inboxd:role=<role>, then one IP or DNS entry per
 * host. Hosts were checked by issue_config_check. */
static int san_add(X509 *cert, enum inbox_role role, const char *const *hosts,
                   size_t hosts_count)
{
    int rc = INBOX_ENOMEM;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    if (gens == NULL)
        return rc;
    char uri[64];
    snprintf(uri, sizeof uri, "%s%s", INBOX_CERT_ROLE_URI_PREFIX,
             cert_role_name(role));
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (s == NULL || !ASN1_STRING_set(s, uri, -1)) {
        ASN1_IA5STRING_free(s);
        goto err_after_alloc;
    }
    if ((rc = gen_push(gens, GEN_URI, s)) != 0)
        goto err_after_alloc;
    for (size_t i = 0; i < hosts_count; i++) {
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(hosts[i]);
        if (ip != NULL) {
            if ((rc = gen_push(gens, GEN_IPADD, ip)) != 0)
                goto err_after_alloc;
            continue;
        }
        ERR_clear_error();
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        if (dns == NULL || !ASN1_STRING_set(dns, hosts[i], -1)) {
            ASN1_IA5STRING_free(dns);
            rc = INBOX_ENOMEM;
            goto err_after_alloc;
        }
        if ((rc = gen_push(gens, GEN_DNS, dns)) != 0)
            goto err_after_alloc;
    }
    rc = X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0,
                           X509V3_ADD_DEFAULT) == 1
             ? 0
             : INBOX_EINTERNAL;
err_after_alloc:
    GENERAL_NAMES_free(gens);
    return rc;
}

static time_t now_unix(void)
{
    return time(NULL);
}

/* ---- the CA ------------------------------------------------------------- */

int cert_ca_create(const struct cert_ca_config *config, char *errmsg,
                   size_t errmsg_bytes)
{
    msg_set(errmsg, errmsg_bytes, "%s", "");
    if (config == NULL)
        return INBOX_EINVAL;
    const char *name = config->name ? config->name : CERT_CA_NAME_DEFAULT;
    uint32_t days =
        config->valid_days ? config->valid_days : CERT_CA_VALID_DAYS_DEFAULT;
    if (strlen(name) == 0 || strlen(name) > INBOX_CERT_NAME_BYTES_MAX ||
        days > CERT_VALID_DAYS_MAX) {
        msg_set(errmsg, errmsg_bytes, "bad CA name or validity");
        return INBOX_EINVAL;
    }
    int rc = outputs_check(config->cert_path, config->key_path,
                           config->overwrite, errmsg, errmsg_bytes);
    if (rc != 0)
        return rc;

    rc = INBOX_EINTERNAL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        goto err;
    X509 *cert =
        cert_skeleton(key, name, now_unix() - CERT_NOT_BEFORE_SLACK_S, days);
    if (cert == NULL)
        goto err_after_key;
    /* Self-signed: the issuer is the subject. */
    static const char ca_constraints[] = "critical,CA:TRUE,pathlen:0";
    static const char ca_usage[] = "critical,keyCertSign,cRLSign";
    if (!X509_set_issuer_name(cert, X509_get_subject_name(cert)) ||
        ext_add(cert, cert, NID_basic_constraints, ca_constraints) != 0 ||
        ext_add(cert, cert, NID_key_usage, ca_usage) != 0 ||
        ext_add(cert, cert, NID_subject_key_identifier, "hash") != 0 ||
        X509_sign(cert, key, EVP_sha256()) <= 0)
        goto err_after_cert;
    rc = pair_write(cert, key, config->cert_path, config->key_path,
                    config->overwrite, errmsg, errmsg_bytes);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;

err_after_cert:
    X509_free(cert);
err_after_key:
    EVP_PKEY_free(key);
err:
    msg_set(errmsg, errmsg_bytes, "cannot make the CA: %s", ossl_reason());
    return rc;
}

/* ---- issuing ------------------------------------------------------------ */

static int issue_config_check(const struct cert_issue_config *c, char *errmsg,
                              size_t errmsg_bytes)
{
    if (c->ca_cert_path == NULL || c->ca_key_path == NULL) {
        msg_set(errmsg, errmsg_bytes, "CA certificate and key required");
        return INBOX_EINVAL;
    }
    if (cert_name_check(c->name) != 0) {
        msg_set(errmsg, errmsg_bytes,
                "bad name \"%.64s\": 1-%u bytes of A-Z a-z 0-9 . _ -",
                c->name ? c->name : "", INBOX_CERT_NAME_BYTES_MAX);
        return INBOX_EINVAL;
    }
    if (c->role != INBOX_ROLE_NODE && c->role != INBOX_ROLE_ADMIN &&
        c->role != INBOX_ROLE_FRONTEND) {
        msg_set(errmsg, errmsg_bytes, "role must be node, admin or frontend");
        return INBOX_EINVAL;
    }
    if (c->hosts_count > INBOX_CERT_HOSTS_MAX ||
        (c->hosts_count > 0 && c->hosts == NULL)) {
        msg_set(errmsg, errmsg_bytes, "at most %u hosts", INBOX_CERT_HOSTS_MAX);
        return INBOX_EINVAL;
    }
    if (c->role == INBOX_ROLE_NODE && c->hosts_count == 0) {
        msg_set(errmsg, errmsg_bytes,
                "a node certificate needs at least one host (address or "
                "DNS name)");
        return INBOX_EINVAL;
    }
    for (size_t i = 0; i < c->hosts_count; i++) {
        const char *h = c->hosts[i];
        if (h == NULL) {
            msg_set(errmsg, errmsg_bytes, "host %zu is NULL", i);
            return INBOX_EINVAL;
        }
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(h);
        ERR_clear_error();
        ASN1_OCTET_STRING_free(ip);
        if (ip == NULL && dns_name_check(h) != 0) {
            msg_set(errmsg, errmsg_bytes,
                    "bad host \"%.64s\": not an IP address or DNS name", h);
            return INBOX_EINVAL;
        }
    }
    if (c->valid_days > CERT_VALID_DAYS_MAX) {
        msg_set(errmsg, errmsg_bytes, "validity over %u days",
                CERT_VALID_DAYS_MAX);
        return INBOX_EINVAL;
    }
    return outputs_check(c->cert_path, c->key_path, c->overwrite, errmsg,
                         errmsg_bytes);
}

/* Loads the CA pair and checks that it is a CA and that the key fits. */
static int ca_load(const char *cert_path, const char *key_path, X509 **cert,
                   EVP_PKEY **key, char *errmsg, size_t errmsg_bytes)
{
    *cert = NULL;
    *key = NULL;
    BIO *b = BIO_new_file(cert_path, "r");
    if (b != NULL) {
        *cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
    }
    if (*cert == NULL) {
        msg_set(errmsg, errmsg_bytes, "cannot read CA certificate %s: %s",
                cert_path, ossl_reason());
        return INBOX_ETLS_CONFIG;
    }
    b = BIO_new_file(key_path, "r");
    if (b != NULL) {
        *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
    }
    if (*key == NULL) {
        msg_set(errmsg, errmsg_bytes, "cannot read CA key %s: %s", key_path,
                ossl_reason());
        goto err_after_cert;
    }
    if (X509_check_ca(*cert) < 1) {
        msg_set(errmsg, errmsg_bytes, "%s is not a CA certificate", cert_path);
        goto err_after_key;
    }
    if (!X509_check_private_key(*cert, *key)) {
        ERR_clear_error();
        msg_set(errmsg, errmsg_bytes, "CA key %s does not match %s", key_path,
                cert_path);
        goto err_after_key;
    }
    return 0;

err_after_key:
    EVP_PKEY_free(*key);
    *key = NULL;
err_after_cert:
    X509_free(*cert);
    *cert = NULL;
    return INBOX_ETLS_CONFIG;
}

static int leaf_extensions_add(X509 *cert, X509 *ca, enum inbox_role role,
                               const char *const *hosts, size_t hosts_count)
{
    /* Only nodes accept connections, so only nodes are TLS servers. */
    const char *eku =
        role == INBOX_ROLE_NODE ? "serverAuth,clientAuth" : "clientAuth";
    if (ext_add(cert, ca, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        ext_add(cert, ca, NID_key_usage, "critical,digitalSignature") != 0 ||
        ext_add(cert, ca, NID_ext_key_usage, eku) != 0 ||
        ext_add(cert, ca, NID_subject_key_identifier, "hash") != 0 ||
        ext_add(cert, ca, NID_authority_key_identifier, "keyid:always") != 0)
        return INBOX_EINTERNAL;
    return san_add(cert, role, hosts, hosts_count);
}

int cert_issue(const struct cert_issue_config *config, char *errmsg,
               size_t errmsg_bytes)
{
    msg_set(errmsg, errmsg_bytes, "%s", "");
    if (config == NULL)
        return INBOX_EINVAL;
    int rc = issue_config_check(config, errmsg, errmsg_bytes);
    if (rc != 0)
        return rc;
    X509 *ca;
    EVP_PKEY *ca_key;
    rc = ca_load(config->ca_cert_path, config->ca_key_path, &ca, &ca_key,
                 errmsg, errmsg_bytes);
    if (rc != 0)
        return rc;

    rc = INBOX_EINTERNAL;
    uint32_t days =
        config->valid_days ? config->valid_days : CERT_LEAF_VALID_DAYS_DEFAULT;
    time_t not_before = config->not_before_unix_s
                            ? (time_t)config->not_before_unix_s
                            : now_unix() - CERT_NOT_BEFORE_SLACK_S;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        goto err_after_ca;
    X509 *cert = cert_skeleton(key, config->name, not_before, days);
    if (cert == NULL)
        goto err_after_key;
    if (!X509_set_issuer_name(cert, X509_get_subject_name(ca)))
        goto err_after_cert;
    rc = leaf_extensions_add(cert, ca, config->role, config->hosts,
                             config->hosts_count);
    if (rc != 0)
        goto err_after_cert;
    rc = INBOX_EINTERNAL;
    if (X509_sign(cert, ca_key, EVP_sha256()) <= 0)
        goto err_after_cert;
    rc = pair_write(cert, key, config->cert_path, config->key_path,
                    config->overwrite, errmsg, errmsg_bytes);
    X509_free(cert);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    return rc;

err_after_cert:
    X509_free(cert);
err_after_key:
    EVP_PKEY_free(key);
err_after_ca:
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    msg_set(errmsg, errmsg_bytes, "cannot issue the certificate: %s",
            rc == INBOX_ENOMEM ? "out of memory" : ossl_reason());
    return rc;
}
