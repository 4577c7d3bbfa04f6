/*
 * cert.h — the cluster's certificates: one CA, and the certificates it
 * issues to nodes, admins and front-ends.
 *
 * This is what `inboxctl cert` wraps: `cert ca` makes the cluster CA,
 * `cert node --name n1 --host 127.0.0.1` and `cert client --name fe1
 * --role frontend` issue leaf certificates signed by it. Keys are EC P-256.
 * Output is PEM; private keys are written mode 0600, certificates 0644.
 * An existing file is never overwritten unless the caller asks.
 *
 * A certificate says what its holder is (enum inbox_role) in one place: a
 * subjectAltName URI "inboxd:role=<role>" (docs/security.md says why that
 * and not the subject's OU). Node certificates carry the node's addresses
 * and host names as subjectAltName IP / DNS entries and may act as TLS
 * server and client (extendedKeyUsage serverAuth, clientAuth); admin and
 * front-end certificates are clientAuth only, so they cannot pose as a node.
 *
 * Every function is synchronous and thread-safe (no shared state). Errors
 * are INBOX_E* codes or negative errno; when `errmsg` is not NULL it gets a
 * human message naming the file or field at fault (NUL-terminated, cut to
 * `errmsg_bytes`; INBOX_TLS_ERRMSG_BYTES is enough).
 */
#ifndef INBOX_NET_CERT_H
#define INBOX_NET_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the holder of a certificate is. Values are stable. */
enum inbox_role {
    INBOX_ROLE_NONE = 0,     /* no role, or an unreadable one: never trusted */
    INBOX_ROLE_NODE = 1,     /* a peer inboxd: replication, routing, data */
    INBOX_ROLE_ADMIN = 2,    /* data and admin operations */
    INBOX_ROLE_FRONTEND = 3, /* data operations only */
};

/* One bit per role, for sets of allowed roles. */
#define INBOX_ROLE_BIT(role) (1u << (unsigned)(role))
#define INBOX_ROLES_ANY                                                        \
    (INBOX_ROLE_BIT(INBOX_ROLE_NODE) | INBOX_ROLE_BIT(INBOX_ROLE_ADMIN) |      \
     INBOX_ROLE_BIT(INBOX_ROLE_FRONTEND))

/* The prefix of the subjectAltName URI that carries the role. */
#define INBOX_CERT_ROLE_URI_PREFIX "inboxd:role="

/* "node", "admin", "frontend"; "none" for INBOX_ROLE_NONE or out of range.
 * The string is static. */
const char *cert_role_name(enum inbox_role role);

/* Parses a role name (exact, lower case). "none" is not a role: returns
 * INBOX_EINVAL for it and for anything unknown. */
int cert_role_parse(const char *name, enum inbox_role *role_out);

/* Checks a certificate common name: 1..INBOX_CERT_NAME_BYTES_MAX bytes of
 * [A-Za-z0-9._-], not starting with '.' or '-'. 0 or INBOX_EINVAL. */
int cert_name_check(const char *name);

/* Default validity: the CA for ten years, leaf certificates for one. */
#define CERT_CA_VALID_DAYS_DEFAULT 3650u
#define CERT_LEAF_VALID_DAYS_DEFAULT 365u

struct cert_ca_config {
    const char *cert_path; /* PEM certificate out, e.g. "tls/ca.crt" */
    const char *key_path;  /* PEM private key out, mode 0600 */
    const char *name;      /* subject CN; NULL means "inboxd cluster CA" */
    uint32_t valid_days;   /* 0 means CERT_CA_VALID_DAYS_DEFAULT */
    bool overwrite;        /* replace existing files instead of INBOX_EEXISTS */
};

/* Creates a self-signed cluster CA: a fresh P-256 key, basicConstraints
 * CA:TRUE (critical, pathlen 0), keyUsage keyCertSign + cRLSign.
 * Returns 0; INBOX_EEXISTS when an output file exists and !overwrite (then
 * nothing is written); INBOX_EINVAL for a bad config; negative errno for a
 * file error; INBOX_EINTERNAL when OpenSSL fails. On failure no output
 * file is left half-written. */
int cert_ca_create(const struct cert_ca_config *config, char *errmsg,
                   size_t errmsg_bytes);

struct cert_issue_config {
    const char *ca_cert_path; /* the cluster CA (PEM), from cert_ca_create */
    const char *ca_key_path;
    const char *cert_path; /* PEM certificate out */
    const char *key_path;  /* PEM private key out, mode 0600 */
    const char *name;      /* subject CN; cert_name_check() rules */
    enum inbox_role role;  /* not INBOX_ROLE_NONE */
    /* subjectAltName entries: IPv4/IPv6 literals become IP entries, the
     * rest DNS names. A node needs at least one; clients may have none. */
    const char *const *hosts;
    size_t hosts_count;  /* <= INBOX_CERT_HOSTS_MAX */
    uint32_t valid_days; /* 0 means CERT_LEAF_VALID_DAYS_DEFAULT */
    /* Start of validity, seconds since the epoch; 0 means five minutes ago
     * (slack for clock skew between nodes). Tests use it to make expired
     * certificates. */
    int64_t not_before_unix_s;
    bool overwrite;
};

/* Issues a certificate for `config->role`, signed by the CA. Same returns
 * as cert_ca_create, plus INBOX_ETLS_CONFIG when the CA files cannot be
 * read or the key does not match the CA certificate. */
int cert_issue(const struct cert_issue_config *config, char *errmsg,
               size_t errmsg_bytes);

#endif /* INBOX_NET_CERT_H */
