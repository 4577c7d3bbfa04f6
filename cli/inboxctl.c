/*
 * inboxctl — query and administer inboxd.
 *
 * One table of commands; each has a usage text shown by `--help` and on a
 * wrong flag. Exit codes are stable so scripts can rely on them:
 *
 *   0  success
 *   1  the operation failed (the error is printed: name, message, advice)
 *   2  usage error: unknown command or flag, missing or malformed value
 *   3  cannot reach the cluster (connection, TLS) — retrying may help
 *   4  store verify: the store opened, and an invariant does not hold
 *
 * `cert` needs no node; `store verify` reads a stopped node's files. Every
 * other command talks to the cluster through libinbox (include/inbox/client.h)
 * and takes the global connection options (--addr, --ca, --cert, --key,
 * --timeout, --json), before or after the command's name.
 *
 * Each remote command runs one call (watch: a watch, then pushes) on the
 * library's async core and drives inbox_client_poll() itself rather than
 * using the synchronous wrappers: the library retries a refused connection
 * until the call's deadline, which is right for a service and wrong for a
 * person at a terminal. So while a call is pending and the library has met
 * a failure, inboxctl checks (at most once a second) whether any --addr
 * still accepts TCP connections, and says "cannot connect" at once when
 * none does (exit 3).
 *
 * Output: a human form by default; with --json one JSON object on stdout
 * (watch: one object per line), and on failure {"error": NAME, ...} on
 * stdout besides the text on stderr. Payloads in JSON are text when they
 * are valid UTF-8 ("payload_encoding": "utf8") and base64 otherwise
 * ("payload_encoding": "base64").
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cert.h"
#include "store_verify.h"
#include "inbox/client.h"
#include "inbox/error.h"
#include "inbox/limits.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_UNREACHABLE = 3,
    EXIT_VIOLATED = 4,
};

#define PATH_BYTES_MAX 1024

struct command {
    const char *name; /* "cert ca" */
    const char *summary;
    const char *usage;
    int (*run)(int argc, char **argv);
    bool remote; /* takes the global connection options */
};

static const struct command *find_command(const char *a, const char *b);

static const char global_usage[] =
    "\nconnection options (before or after the command):\n"
    "  --addr HOST:PORT  a node to start from; repeat for several seeds\n"
    "                    (default 127.0.0.1:7420)\n"
    "  --ca FILE         the cluster CA (default ./inboxd-data/tls/ca.crt)\n"
    "  --cert FILE       this client's certificate\n"
    "                    (default ./inboxd-data/tls/admin.crt)\n"
    "  --key FILE        its key (default ./inboxd-data/tls/admin.key)\n"
    "                    (inboxd makes these three on its first start)\n"
    "  --timeout MS      deadline of the operation, connecting and retries\n"
    "                    included (default 10000)\n"
    "  --json            JSON on stdout; a failure prints {\"error\": NAME,\n"
    "                    \"message\": ..., \"advice\": ...} there too\n"
    "exit codes: 0 ok, 1 operation failed, 2 usage, 3 cannot reach the "
    "cluster (connection or TLS), 4 store verify found a violation\n";

static void print_usage(const struct command *c, FILE *f)
{
    fputs(c->usage, f);
    if (c->remote)
        fputs(global_usage, f);
}

static int usage_error(const struct command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const struct command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "inboxctl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n\n");
    print_usage(c, stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int op_error(const char *what, int rc, const char *detail,
                    const char *advice)
{
    fprintf(stderr, "inboxctl: %s: %s (%s)", what, inbox_strerror(rc),
            inbox_err_name(rc));
    if (detail && detail[0])
        fprintf(stderr, ": %s", detail);
    fprintf(stderr, "\n");
    if (advice)
        fprintf(stderr, "  %s\n", advice);
    return EXIT_FAILED;
}

static int parse_days(const struct command *c, const char *v, uint32_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long d = strtoul(v, &end, 10);
    if (errno || end == v || *end || d == 0 || d > 36500) {
        usage_error(c,
                    "--days wants a number of days from 1 to 36500, not "
                    "'%s'",
                    v);
        return -1;
    }
    *out = (uint32_t)d;
    return 0;
}

/* Create dir (one level) if missing; certificates live together there. */
static int ensure_dir(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

static void join(char *out, const char *dir, const char *name, const char *ext)
{
    snprintf(out, PATH_BYTES_MAX, "%s/%s%s", dir, name, ext);
}

/* ---- cert ca ------------------------------------------------------------- */

static int cmd_cert_ca(int argc, char **argv)
{
    const struct command *c = find_command("cert", "ca");
    const char *dir = "./inboxd-data/tls";
    uint32_t days = 0;
    bool force = false;
    static const struct option lo[] = {{"dir", required_argument, 0, 'd'},
                                       {"days", required_argument, 0, 'D'},
                                       {"force", no_argument, 0, 'f'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd':
            dir = optarg;
            break;
        case 'D':
            if (parse_days(c, optarg, &days) != 0)
                return EXIT_USAGE;
            break;
        case 'f':
            force = true;
            break;
        case 'h':
            fputs(c->usage, stdout);
            return EXIT_OK;
        default:
            return usage_error(c, "unknown or incomplete option '%s'",
                               argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind]);
    int rc = ensure_dir(dir);
    if (rc != 0)
        return op_error("cannot create the certificate directory", rc, dir,
                        "check the path and its permissions");
    char crt[PATH_BYTES_MAX], key[PATH_BYTES_MAX];
    join(crt, dir, "ca", ".crt");
    join(key, dir, "ca", ".key");
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct cert_ca_config cfg = {.cert_path = crt,
                                 .key_path = key,
                                 .valid_days = days,
                                 .overwrite = force};
    rc = cert_ca_create(&cfg, msg, sizeof msg);
    if (rc == INBOX_EEXISTS)
        return op_error("the CA exists already", rc, msg,
                        "keep it (every certificate of the cluster is signed "
                        "by it), or pass --force to replace it");
    if (rc != 0)
        return op_error("cannot create the CA", rc, msg, NULL);
    printf("created cluster CA: %s (key %s, keep it private)\n", crt, key);
    return EXIT_OK;
}

/* ---- cert node / cert client --------------------------------------------- */

static int issue(const struct command *c, int argc, char **argv, bool node)
{
    const char *dir = "./inboxd-data/tls";
    const char *name = NULL, *role_name = node ? "node" : NULL;
    const char *hosts[INBOX_CERT_HOSTS_MAX];
    size_t hosts_count = 0;
    uint32_t days = 0;
    bool force = false;
    static const struct option lo[] = {{"dir", required_argument, 0, 'd'},
                                       {"name", required_argument, 0, 'n'},
                                       {"host", required_argument, 0, 'H'},
                                       {"role", required_argument, 0, 'r'},
                                       {"days", required_argument, 0, 'D'},
                                       {"force", no_argument, 0, 'f'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'd':
            dir = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'H':
            if (!node)
                return usage_error(c, "--host is for node certificates");
            if (hosts_count == INBOX_CERT_HOSTS_MAX)
                return usage_error(c, "at most %u --host values",
                                   INBOX_CERT_HOSTS_MAX);
            hosts[hosts_count++] = optarg;
            break;
        case 'r':
            if (node)
                return usage_error(c, "a node certificate's role is 'node'");
            role_name = optarg;
            break;
        case 'D':
            if (parse_days(c, optarg, &days) != 0)
                return EXIT_USAGE;
            break;
        case 'f':
            force = true;
            break;
        case 'h':
            fputs(c->usage, stdout);
            return EXIT_OK;
        default:
            return usage_error(c, "unknown or incomplete option '%s'",
                               argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind]);
    if (name == NULL)
        return usage_error(c, "--name is required");
    if (cert_name_check(name) != 0)
        return usage_error(c,
                           "--name '%s': use 1-%u of A-Z a-z 0-9 . _ -, not "
                           "starting with . or -",
                           name, INBOX_CERT_NAME_BYTES_MAX);
    enum inbox_role role = INBOX_ROLE_NONE;
    if (role_name == NULL)
        return usage_error(c, "--role is required: frontend or admin");
    if (cert_role_parse(role_name, &role) != 0 ||
        (!node && role == INBOX_ROLE_NODE))
        return usage_error(c, "--role '%s': use frontend or admin", role_name);
    if (node && hosts_count == 0)
        return usage_error(c, "a node needs at least one --host (an address "
                              "or name its peers and clients dial)");
    char ca_crt[PATH_BYTES_MAX], ca_key[PATH_BYTES_MAX];
    char crt[PATH_BYTES_MAX], key[PATH_BYTES_MAX];
    join(ca_crt, dir, "ca", ".crt");
    join(ca_key, dir, "ca", ".key");
    join(crt, dir, name, ".crt");
    join(key, dir, name, ".key");
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct cert_issue_config cfg = {.ca_cert_path = ca_crt,
                                    .ca_key_path = ca_key,
                                    .cert_path = crt,
                                    .key_path = key,
                                    .name = name,
                                    .role = role,
                                    .hosts = hosts,
                                    .hosts_count = hosts_count,
                                    .valid_days = days,
                                    .overwrite = force};
    int rc = cert_issue(&cfg, msg, sizeof msg);
    if (rc == INBOX_EEXISTS)
        return op_error("the certificate exists already", rc, msg,
                        "pass --force to issue a new one in its place");
    if (rc == INBOX_ETLS_CONFIG || rc == -ENOENT)
        return op_error("cannot read the cluster CA", rc, msg,
                        "create it first with `inboxctl cert ca --dir DIR`");
    if (rc != 0)
        return op_error("cannot issue the certificate", rc, msg, NULL);
    printf("issued %s certificate for %s: %s (key %s)\n", cert_role_name(role),
           name, crt, key);
    return EXIT_OK;
}

static int cmd_cert_node(int argc, char **argv)
{
    return issue(find_command("cert", "node"), argc, argv, true);
}

static int cmd_cert_client(int argc, char **argv)
{
    return issue(find_command("cert", "client"), argc, argv, false);
}

/* ---- global connection options ------------------------------------------- */

#define SEED_DEFAULT "127.0.0.1:7420"
#define TLS_DIR_DEFAULT "./inboxd-data/tls"
#define TIMEOUT_MS_DEFAULT INBOX_CLIENT_TIMEOUT_MS_DEFAULT
#define CONNECT_TIMEOUT_MS_MAX INBOX_CLIENT_CONNECT_TIMEOUT_MS_DEFAULT
#define PROBE_INTERVAL_MS 1000u
#define PROBE_CONNECT_MS_MAX 1000
#define POLL_SLICE_MS 100
#define OPTIONS_MAX 24
#define WHY_BYTES 1536
#define HOST_BYTES_MAX 256
#define PORT_BYTES_MAX 8
/* Human output shows this much of a payload, then "... (N bytes)". */
#define PAYLOAD_SHOW_BYTES_MAX 200u
#define PAYLOAD_SHOW_HEX_BYTES_MAX 48u
/* status lists each shard up to this many, else summarises by role. */
#define STATUS_LIST_SHARDS_MAX 16u
/* "2026-11-27T20:02:13.182Z", with room for any int gmtime_r gives. */
#define TIME_TEXT_BYTES 96

enum global_opt {
    OPT_ADDR = 1000,
    OPT_CA,
    OPT_CERT,
    OPT_KEY,
    OPT_TIMEOUT,
    OPT_JSON,
};

static const struct option global_options[] = {
    {"addr", required_argument, 0, OPT_ADDR},
    {"ca", required_argument, 0, OPT_CA},
    {"cert", required_argument, 0, OPT_CERT},
    {"key", required_argument, 0, OPT_KEY},
    {"timeout", required_argument, 0, OPT_TIMEOUT},
    {"json", no_argument, 0, OPT_JSON},
    {"help", no_argument, 0, 'h'},
};

#define GLOBAL_OPTIONS_COUNT (sizeof global_options / sizeof global_options[0])

struct global {
    const char *seeds[INBOX_CLIENT_SEEDS_MAX];
    size_t seeds_count;
    const char *ca, *cert, *key;
    uint32_t timeout_ms;
    bool json;
};

/* A command's own option (ch from its struct option table). Returns -1 to
 * go on, else the exit code to stop with. */
typedef int own_option_fn(void *ctx, const struct command *c, int ch,
                          const char *arg);

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* parse_u64, or a usage error naming what was wanted. Returns -1 on
 * success (go on), else the exit code. */
static int want_u64(const struct command *c, const char *what, const char *s,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    if (parse_u64(s, min, max, out) == 0)
        return -1;
    return usage_error(
        c, "%s wants a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'",
        what, min, max, s);
}

/* "500ms", "30s", "5m", "2h", "7d"; a bare number is milliseconds. */
static int parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"", 1},          {"ms", 1},          {"s", 1000},
                 {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000}};
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0)
            continue;
        if (v != 0 && units[i].mult > UINT64_MAX / v)
            return -1;
        *out = (uint64_t)v * units[i].mult;
        return 0;
    }
    return -1;
}

/* "host:port" or "[v6]:port" -> host and port (both non-empty). */
static int split_addr(const char *addr, char *host, size_t host_bytes,
                      char *port, size_t port_bytes)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return -1;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[') {
        if (hl < 3 || addr[hl - 1] != ']')
            return -1;
        h = addr + 1;
        hl -= 2;
    }
    size_t pl = strlen(colon + 1);
    uint64_t p = 0;
    if (hl == 0 || hl >= host_bytes || pl >= port_bytes ||
        parse_u64(colon + 1, 1, 65535, &p) != 0)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, colon + 1, pl + 1);
    return 0;
}

static int global_option(const struct command *c, struct global *g, int ch,
                         const char *arg)
{
    char host[HOST_BYTES_MAX], port[PORT_BYTES_MAX];
    uint64_t v = 0;
    switch (ch) {
    case OPT_ADDR:
        if (g->seeds_count == INBOX_CLIENT_SEEDS_MAX)
            return usage_error(c, "at most %u --addr values",
                               INBOX_CLIENT_SEEDS_MAX);
        if (strlen(arg) > INBOX_NODE_ADDR_BYTES_MAX ||
            split_addr(arg, host, sizeof host, port, sizeof port) != 0)
            return usage_error(c,
                               "--addr wants HOST:PORT (IPv6 as [::1]:7420), "
                               "not '%s'",
                               arg);
        g->seeds[g->seeds_count++] = arg;
        return -1;
    case OPT_CA:
        g->ca = arg;
        return -1;
    case OPT_CERT:
        g->cert = arg;
        return -1;
    case OPT_KEY:
        g->key = arg;
        return -1;
    case OPT_TIMEOUT:
        if (want_u64(c, "--timeout (ms)", arg, 1, INBOX_CLIENT_TIMEOUT_MS_MAX,
                     &v) >= 0)
            return EXIT_USAGE;
        g->timeout_ms = (uint32_t)v;
        return -1;
    case OPT_JSON:
        g->json = true;
        return -1;
    default:
        return -2; /* not a global option */
    }
}

/* Parses argv: the command's own options (handed to own_option) and the
 * global ones. Returns -1 to go on with the positionals at
 * argv[optind..argc), else the exit code (0 after --help, 2 on a wrong
 * option). */
static int parse_options(const struct command *c, int argc, char **argv,
                         const struct option *own, size_t own_count,
                         own_option_fn *own_option, void *ctx, struct global *g)
{
    struct option all[OPTIONS_MAX];
    assert(own_count + GLOBAL_OPTIONS_COUNT < OPTIONS_MAX);
    if (own_count > 0)
        memcpy(all, own, own_count * sizeof *own);
    memcpy(all + own_count, global_options, sizeof global_options);
    memset(&all[own_count + GLOBAL_OPTIONS_COUNT], 0, sizeof all[0]);
    memset(g, 0, sizeof *g);
    g->ca = TLS_DIR_DEFAULT "/ca.crt";
    g->cert = TLS_DIR_DEFAULT "/admin.crt";
    g->key = TLS_DIR_DEFAULT "/admin.key";
    g->timeout_ms = TIMEOUT_MS_DEFAULT;
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", all, NULL)) != -1) {
        if (ch == 'h') {
            print_usage(c, stdout);
            return EXIT_OK;
        }
        if (ch == '?' || ch == ':')
            return usage_error(c, "unknown or incomplete option '%s'",
                               argv[optind - 1]);
        int rc = global_option(c, g, ch, optarg);
        if (rc == -2 && own_option != NULL)
            rc = own_option(ctx, c, ch, optarg);
        if (rc >= 0)
            return rc;
    }
    if (g->seeds_count == 0)
        g->seeds[g->seeds_count++] = SEED_DEFAULT;
    return -1;
}

/* An inbox name from the command line: 1..128 bytes. */
static int check_inbox(const struct command *c, const char *inbox)
{
    size_t n = strlen(inbox);
    if (n >= INBOX_KEY_BYTES_MIN && n <= INBOX_KEY_BYTES_MAX)
        return -1;
    return usage_error(c, "an inbox name is %u-%u bytes, not %zu",
                       INBOX_KEY_BYTES_MIN, INBOX_KEY_BYTES_MAX, n);
}

static int parse_msg_id(const char *s, uint8_t out[INBOX_MSG_ID_BYTES])
{
    if (strlen(s) != 2u * INBOX_MSG_ID_BYTES)
        return -1;
    for (size_t i = 0; i < INBOX_MSG_ID_BYTES; i++) {
        unsigned v = 0;
        for (size_t j = 0; j < 2; j++) {
            char ch = s[2 * i + j];
            unsigned d = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                         : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                         : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10)
                                                  : 16u;
            if (d == 16u)
                return -1;
            v = v * 16u + d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void hex_encode(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ms since the epoch as "2026-11-27T20:02:13.182Z"; 0 as "never". */
static const char *fmt_time(char *buf, size_t buf_bytes, uint64_t ms)
{
    if (ms == 0) {
        snprintf(buf, buf_bytes, "never");
        return buf;
    }
    time_t secs = (time_t)(ms / 1000u);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, buf_bytes, "%" PRIu64 "ms", ms);
        return buf;
    }
    snprintf(buf, buf_bytes, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000u));
    return buf;
}

/* ---- JSON and payload text ----------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (n > 0 bytes left), or 0. */
static size_t utf8_seq_len(const uint8_t *p, size_t n)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint8_t b = p[0];
    size_t len;
    uint32_t cp;
    if (b < 0x80)
        return 1;
    if ((b & 0xE0) == 0xC0) {
        len = 2;
        cp = b & 0x1Fu;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3;
        cp = b & 0x0Fu;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4;
        cp = b & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static bool utf8_valid(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq_len(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* Valid UTF-8 without control characters: shown as it is. */
static bool printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return utf8_valid(p, n);
}

/* A JSON string: valid UTF-8 passes, control characters are escaped, and a
 * byte that is not part of valid UTF-8 becomes \u00XX (so the output is
 * always valid JSON; such bytes in an inbox name read back as Latin-1). */
static void json_bytes(FILE *f, const void *ptr, size_t n)
{
    const uint8_t *p = ptr;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        uint8_t b = p[i];
        size_t l = utf8_seq_len(p + i, n - i);
        if (b == '"' || b == '\\') {
            fprintf(f, "\\%c", b);
        } else if (b == '\n') {
            fputs("\\n", f);
        } else if (b == '\t') {
            fputs("\\t", f);
        } else if (b == '\r') {
            fputs("\\r", f);
        } else if (b < 0x20 || b == 0x7f || l == 0) {
            fprintf(f, "\\u%04x", (unsigned)b);
        } else {
            fwrite(p + i, 1, l, f);
            i += l;
            continue;
        }
        i++;
    }
    fputc('"', f);
}

static void json_str(FILE *f, const char *s)
{
    json_bytes(f, s, strlen(s));
}

static void base64_write(FILE *f, const uint8_t *p, size_t n)
{
    static const char a[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', f);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(a[(v >> 18) & 63], f);
        fputc(a[(v >> 12) & 63], f);
        fputc(i + 1 < n ? a[(v >> 6) & 63] : '=', f);
        fputc(i + 2 < n ? a[v & 63] : '=', f);
    }
    fputc('"', f);
}

/* "payload": text or base64, and "payload_encoding" saying which. */
static void json_payload(FILE *f, const uint8_t *p, size_t n)
{
    bool text = utf8_valid(p, n);
    fputs("\"payload\":", f);
    if (text)
        json_bytes(f, p, n);
    else
        base64_write(f, p, n);
    fprintf(f, ",\"payload_encoding\":\"%s\"", text ? "utf8" : "base64");
}

/* A payload for people: the text when printable, else "hex:..."; long ones
 * are cut, with their size. */
static void human_payload(FILE *f, const uint8_t *p, size_t n)
{
    size_t show;
    if (printable(p, n)) {
        show = n < PAYLOAD_SHOW_BYTES_MAX ? n : PAYLOAD_SHOW_BYTES_MAX;
        while (show < n && show > 0 && (p[show] & 0xC0) == 0x80)
            show--; /* do not cut a character in two */
        fwrite(p, 1, show, f);
    } else {
        show = n < PAYLOAD_SHOW_HEX_BYTES_MAX ? n : PAYLOAD_SHOW_HEX_BYTES_MAX;
        fputs("hex:", f);
        for (size_t i = 0; i < show; i++)
            fprintf(f, "%02x", p[i]);
    }
    if (show < n)
        fprintf(f, "... (%zu bytes)", n);
}

/* ---- errors -------------------------------------------------------------- */

static bool err_is_tls(int rc)
{
    return (rc <= INBOX_ETLS_HANDSHAKE && rc >= INBOX_ETLS_CONFIG) ||
           rc == INBOX_EUNAUTHENTICATED || rc == INBOX_EPROTO_VERSION;
}

/* Negative errno stands for "could not connect" (from the probe). */
static bool err_is_unreachable(int rc)
{
    return rc < 0 && rc > -1000;
}

static int exit_for(int rc)
{
    if (rc == 0)
        return EXIT_OK;
    return err_is_unreachable(rc) || err_is_tls(rc) ? EXIT_UNREACHABLE
                                                    : EXIT_FAILED;
}

/* Prints a failure: "inboxctl: CMD: NAME: message" and the advice on
 * stderr; with --json also {"error": NAME, ...} on stdout. Returns `code`. */
static int report(const struct command *c, const struct global *g, int code,
                  const char *name, const char *message, const char *advice)
{
    fprintf(stderr, "inboxctl: %s: %s: %s\n", c->name, name, message);
    if (advice != NULL && advice[0] != '\0')
        fprintf(stderr, "  %s\n", advice);
    if (g != NULL && g->json) {
        fputs("{\"error\":", stdout);
        json_str(stdout, name);
        fputs(",\"message\":", stdout);
        json_str(stdout, message);
        fputs(",\"advice\":", stdout);
        json_str(stdout, advice ? advice : "");
        fprintf(stdout, ",\"exit\":%d}\n", code);
    }
    return code;
}

/* ---- a session: one client, its calls, and the reachability probe -------- */

struct session {
    const struct command *cmd;
    const struct global *g;
    struct inbox_client *client;
    char why[WHY_BYTES]; /* what inboxctl itself found (files, probe) */
    bool file_missing;   /* a TLS file cannot be read */
};

/* A TCP connection to addr, bounded by timeout_ms: 0 when it is accepted,
 * else -errno (-EHOSTUNREACH when the host does not resolve). */
static int tcp_probe(const char *addr, int timeout_ms)
{
    char host[HOST_BYTES_MAX], port[PORT_BYTES_MAX];
    if (split_addr(addr, host, sizeof host, port, sizeof port) != 0)
        return -EINVAL;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    int err = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai != NULL && err != 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            err = 0;
        } else if (errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int n = poll(&pfd, 1, timeout_ms);
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (n == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0)
                err = soerr == 0 ? 0 : -soerr;
            else
                err = n == 0 ? -ETIMEDOUT : -errno;
        } else {
            err = -errno;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return err;
}

/* 0 when some seed accepts a TCP connection; else the first seed's -errno,
 * with every seed's failure in s->why. */
static int seeds_probe(struct session *s)
{
    int first = 0;
    size_t at = (size_t)snprintf(s->why, sizeof s->why, "cannot connect to");
    for (size_t i = 0; i < s->g->seeds_count; i++) {
        int timeout = s->g->timeout_ms < PROBE_CONNECT_MS_MAX
                          ? (int)s->g->timeout_ms
                          : PROBE_CONNECT_MS_MAX;
        int rc = tcp_probe(s->g->seeds[i], timeout);
        if (rc == 0) {
            s->why[0] = '\0';
            return 0;
        }
        if (first == 0)
            first = rc;
        if (at < sizeof s->why)
            at += (size_t)snprintf(s->why + at, sizeof s->why - at, "%s %s: %s",
                                   i == 0 ? "" : ",", s->g->seeds[i],
                                   rc == -EHOSTUNREACH
                                       ? "host unknown or unreachable"
                                       : strerror(-rc));
    }
    return first;
}

static int check_file(struct session *s, const char *flag, const char *path)
{
    if (access(path, R_OK) == 0)
        return 0;
    s->file_missing = true;
    snprintf(s->why, sizeof s->why, "cannot read %s %s: %s", flag, path,
             strerror(errno));
    return INBOX_ETLS_CONFIG;
}

/* Checks the TLS files and makes the client (it connects lazily). */
static int session_open(struct session *s, const struct command *c,
                        const struct global *g, inbox_client_notify_fn *notify,
                        void *notify_arg)
{
    memset(s, 0, sizeof *s);
    s->cmd = c;
    s->g = g;
    int rc = check_file(s, "--ca", g->ca);
    if (rc == 0)
        rc = check_file(s, "--cert", g->cert);
    if (rc == 0)
        rc = check_file(s, "--key", g->key);
    if (rc != 0)
        return rc;
    struct inbox_client_config cfg = {
        .seeds = g->seeds,
        .seeds_count = g->seeds_count,
        .ca_path = g->ca,
        .cert_path = g->cert,
        .key_path = g->key,
        .client_name = "inboxctl/0.1",
        .connect_timeout_ms = g->timeout_ms < CONNECT_TIMEOUT_MS_MAX
                                  ? g->timeout_ms
                                  : CONNECT_TIMEOUT_MS_MAX,
        .notify = notify,
        .notify_arg = notify_arg,
    };
    return inbox_client_new(&cfg, &s->client, s->why, sizeof s->why);
}

/* One round of I/O. With `probe`, once the client has met a failure,
 * checks (at most once a second) that some seed still accepts TCP
 * connections. Returns 0, or the probe's -errno. */
static int session_step(struct session *s, uint64_t *probe_at_ms, bool probe)
{
    (void)inbox_client_poll(s->client, POLL_SLICE_MS);
    if (!probe || inbox_client_last_error_message(s->client)[0] == '\0')
        return 0;
    uint64_t now = mono_ms();
    if (now < *probe_at_ms)
        return 0;
    *probe_at_ms = now + PROBE_INTERVAL_MS;
    return seeds_probe(s);
}

/* Runs the client until *done (a call's callback fired): bounded by the
 * call's deadline, or cut short when no seed can be reached. */
static int session_wait(struct session *s, const bool *done)
{
    uint64_t probe_at_ms = 0;
    while (!*done) {
        int rc = session_step(s, &probe_at_ms, true);
        if (rc != 0 && !*done)
            return rc;
    }
    return 0;
}

/* The headline of a failure: the code's text, then what the library or
 * the server said, without saying the same thing twice (the library's
 * messages repeat the code's text, and "OP: NAME: " before a server's). */
static void compose(char *out, size_t cap, int rc, const char *detail)
{
    const char *text = inbox_strerror(rc);
    char name_sep[64];
    snprintf(name_sep, sizeof name_sep, ": %s: ", inbox_err_name(rc));
    const char *p = strstr(detail, name_sep);
    if (p != NULL)
        detail = p + strlen(name_sep);
    if (detail[0] == '\0' || strcmp(detail, text) == 0) {
        snprintf(out, cap, "%s", text);
        return;
    }
    if (strstr(detail, text) == NULL) {
        snprintf(out, cap, "%s: %s", text, detail);
        return;
    }
    size_t tl = strlen(text), o = 0;
    for (const char *q = detail; *q != '\0' && o + 1 < cap;) {
        if (strncmp(q, text, tl) == 0 && strncmp(q + tl, ": ", 2) == 0 &&
            strncmp(q + tl + 2, text, tl) == 0) {
            q += tl + 2;
            continue;
        }
        out[o++] = *q++;
    }
    out[o] = '\0';
}

/* What a failure means, in words, and what to do about it. */
static const char *explain(struct session *s, int rc, char *msg,
                           size_t msg_bytes)
{
    const char *lib =
        s->client ? inbox_client_last_error_message(s->client) : "";
    const char *detail = s->why[0] ? s->why : lib;
    const struct global *g = s->g;
    char said[WHY_BYTES + 128];
    compose(said, sizeof said, rc, detail);
    snprintf(msg, msg_bytes, "%s", said);
    if (err_is_unreachable(rc)) {
        snprintf(msg, msg_bytes, "%s", s->why[0] ? s->why : strerror(-rc));
        return "is inboxd running? start it with scripts/run.sh, or pass "
               "--addr HOST:PORT of a running node";
    }
    switch (rc) {
    case INBOX_ETLS_UNTRUSTED:
        snprintf(msg, msg_bytes,
                 "the server's certificate is not signed by --ca %s (%s)",
                 g->ca, said);
        return "pass the cluster's CA with --ca (inboxd writes it to "
               "DATA/tls/ca.crt on its first start)";
    case INBOX_ETLS_REFUSED:
    case INBOX_EUNAUTHENTICATED:
        snprintf(msg, msg_bytes,
                 "the server refused this client's certificate --cert %s (%s)",
                 g->cert, said);
        return "use a certificate signed by the cluster's CA: inboxd's "
               "DATA/tls/admin.crt, or one made with `inboxctl cert client`";
    case INBOX_ETLS_HOSTNAME:
        snprintf(msg, msg_bytes,
                 "the server's certificate does not name the host dialled "
                 "(%s)",
                 said);
        return "dial the node at an address its certificate names (inboxd's "
               "own certificate names 127.0.0.1 and localhost)";
    case INBOX_ETLS_EXPIRED:
        return "check both clocks; reissue certificates with `inboxctl cert`";
    case INBOX_ETLS_ROLE:
        return "--addr must reach an inboxd node, and --cert be a frontend "
               "or admin client certificate";
    case INBOX_ETLS_HANDSHAKE:
    case INBOX_ETLS_PLAINTEXT:
    case INBOX_ETLS_RECORD:
        return "is --addr inboxd's client port (default 7420), not /metrics "
               "or another service?";
    case INBOX_ETLS_CONFIG:
        if (!s->file_missing)
            return "--ca, --cert and --key must belong together: the "
                   "certificate signed by that CA, the key its own (inboxd "
                   "makes DATA/tls/ca.crt, admin.crt and admin.key)";
        return "inboxd makes DATA/tls/{ca.crt,admin.crt,admin.key} on its "
               "first start: run inboxctl in the directory holding "
               "inboxd-data, or pass --ca, --cert and --key";
    case INBOX_EPROTO_VERSION:
        return "inboxctl and inboxd share no protocol version: upgrade the "
               "older one";
    case INBOX_EDENIED:
        return "admin operations need an admin certificate: --cert/--key of "
               "inboxd's DATA/tls/admin.crt, or one made with `inboxctl cert "
               "client --role admin`";
    case INBOX_EACK_BEYOND_LAST:
        return "ack at most the inbox's last_seq (fetch shows it)";
    case INBOX_EPAYLOAD_TOO_LARGE:
        snprintf(msg, msg_bytes, "%s (the limit is %u bytes)", said,
                 INBOX_PAYLOAD_BYTES_MAX);
        return "split the payload, or store it elsewhere and enqueue a "
               "reference";
    case INBOX_ETIMEOUT:
        return "the cluster did not answer within --timeout; the outcome is "
               "unknown: retry (a write is safe to retry)";
    case INBOX_EINBOX_FULL_MESSAGES:
    case INBOX_EINBOX_FULL_BYTES:
        return "the inbox is full: retry after its owner fetches and acks";
    case INBOX_EBUSY:
    case INBOX_ESHUTDOWN:
        return "retry in a moment";
    default:
        return NULL;
    }
}

/* Ends a session: on failure (a deadline is first checked against the
 * probe: "timed out" because nothing listens is "cannot connect") prints
 * the error, then frees the client. Returns the exit code. */
static int session_end(struct session *s, int rc, const char *more_advice)
{
    int code = EXIT_OK;
    if (rc == INBOX_ETIMEOUT) {
        int p = seeds_probe(s);
        if (p != 0)
            rc = p;
    }
    if (rc != 0) {
        char msg[WHY_BYTES + 512];
        const char *advice = explain(s, rc, msg, sizeof msg);
        char both[1024];
        if (more_advice != NULL) {
            snprintf(both, sizeof both, "%s%s%s", advice ? advice : "",
                     advice ? "\n  " : "", more_advice);
            advice = both;
        }
        code =
            report(s->cmd, s->g, exit_for(rc),
                   err_is_unreachable(rc) ? "UNREACHABLE" : inbox_err_name(rc),
                   msg, advice);
    }
    inbox_client_free(s->client);
    s->client = NULL;
    return code;
}

/* ---- payloads from the command line, a file or stdin --------------------- */

/* Reads the payload: `arg` itself, or the file `file` ("-": stdin). Holds
 * at most the limit: a larger input is counted, not kept. Returns 0, or an
 * exit code after reporting. */
static int payload_load(const struct command *c, const struct global *g,
                        const char *arg, const char *file, uint8_t **out,
                        size_t *len_out)
{
    *out = NULL;
    *len_out = 0;
    size_t total = 0;
    uint8_t *buf = malloc(INBOX_PAYLOAD_BYTES_MAX + 1u);
    if (buf == NULL)
        return report(c, g, EXIT_FAILED, "NOMEM", "out of memory", NULL);
    if (file == NULL) {
        total = strlen(arg);
        memcpy(buf, arg,
               total <= INBOX_PAYLOAD_BYTES_MAX ? total
                                                : INBOX_PAYLOAD_BYTES_MAX);
    } else {
        bool in = strcmp(file, "-") == 0;
        FILE *f = in ? stdin : fopen(file, "rb");
        char msg[PATH_BYTES_MAX + 128];
        if (f == NULL) {
            snprintf(msg, sizeof msg, "cannot read --file %s: %s", file,
                     strerror(errno));
            free(buf);
            return report(c, g, EXIT_FAILED, "IO", msg,
                          "check the path and its permissions");
        }
        uint8_t sink[4096];
        size_t n;
        while (
            (n = fread(total <= INBOX_PAYLOAD_BYTES_MAX ? buf + total : sink, 1,
                       total <= INBOX_PAYLOAD_BYTES_MAX
                           ? INBOX_PAYLOAD_BYTES_MAX + 1u - total
                           : sizeof sink,
                       f)) > 0)
            total += n;
        bool failed = ferror(f) != 0;
        if (!in)
            fclose(f);
        if (failed) {
            snprintf(msg, sizeof msg, "error reading %s", in ? "stdin" : file);
            free(buf);
            return report(c, g, EXIT_FAILED, "IO", msg, NULL);
        }
    }
    if (total > INBOX_PAYLOAD_BYTES_MAX) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the payload is %zu bytes; the limit is %u bytes (64 KiB)",
                 total, INBOX_PAYLOAD_BYTES_MAX);
        free(buf);
        return report(c, g, EXIT_FAILED, "PAYLOAD_TOO_LARGE", msg,
                      "split it, or store it elsewhere and enqueue a "
                      "reference");
    }
    *out = buf;
    *len_out = total;
    return 0;
}

/* ---- call results -------------------------------------------------------- */

/* The result of a call with scalar answers. */
struct wait_one {
    bool done;
    int status;
    uint64_t value; /* seq, acked seq, ts, epoch */
    bool dedup;
    uint32_t shard_count, nodes_count;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
};

static void enqueue_done(void *arg, int status, uint64_t seq, bool dedup,
                         const uint8_t *msg_id)
{
    struct wait_one *w = arg;
    w->done = true;
    w->status = status;
    w->value = seq;
    w->dedup = dedup;
    if (msg_id != NULL)
        memcpy(w->msg_id, msg_id, INBOX_MSG_ID_BYTES);
}

static void value_done(void *arg, int status, uint64_t value)
{
    struct wait_one *w = arg;
    w->done = true;
    w->status = status;
    w->value = value;
}

static void route_done(void *arg, int status, uint64_t epoch,
                       uint32_t shard_count, uint32_t nodes_count)
{
    struct wait_one *w = arg;
    w->done = true;
    w->status = status;
    w->value = epoch;
    w->shard_count = shard_count;
    w->nodes_count = nodes_count;
}

/* ROUTE, answered by node_id (0: any), waited for; the map is in the
 * client afterwards. 0 or the error. */
static int session_route(struct session *s, uint64_t node_id,
                         uint32_t timeout_ms, struct wait_one *w)
{
    memset(w, 0, sizeof *w);
    int rc = inbox_client_submit_route_at(s->client, node_id, timeout_ms, w,
                                          route_done);
    if (rc == 0)
        rc = session_wait(s, &w->done);
    return rc != 0 ? rc : w->status;
}

/* The result of a multi-inbox call: one item per inbox, copied out. */
struct wait_keys {
    bool done;
    int status;
    size_t count;
    struct inbox_client_key_item *items;         /* seen get, watch */
    struct inbox_client_enqueue_item *enq_items; /* enqueue-many */
};

static void keys_done(void *arg, int status, size_t count,
                      const struct inbox_client_key_item *items)
{
    struct wait_keys *w = arg;
    w->done = true;
    w->status = status;
    if (items != NULL && w->items != NULL && count == w->count)
        memcpy(w->items, items, count * sizeof *items);
}

static void enqueue_many_done(void *arg, int status, size_t count,
                              const struct inbox_client_enqueue_item *items)
{
    struct wait_keys *w = arg;
    w->done = true;
    w->status = status;
    if (items != NULL && w->enq_items != NULL && count == w->count)
        memcpy(w->enq_items, items, count * sizeof *items);
}

/* ---- enqueue ------------------------------------------------------------- */

enum { OWN_FILE = 'f', OWN_MSG_ID = 'm', OWN_TTL = 't', OWN_INBOX = 'i' };

struct enqueue_args {
    const char *file;
    bool has_msg_id;
    uint8_t msg_id[INBOX_MSG_ID_BYTES];
    uint64_t ttl_ms;
    const char **inboxes; /* enqueue-many */
    size_t inboxes_count, inboxes_cap;
};

static int enqueue_option(void *ctx, const struct command *c, int ch,
                          const char *arg)
{
    struct enqueue_args *a = ctx;
    switch (ch) {
    case OWN_FILE:
        a->file = arg;
        return -1;
    case OWN_MSG_ID:
        if (parse_msg_id(arg, a->msg_id) != 0)
            return usage_error(c,
                               "--msg-id wants %u hex digits (16 bytes), not "
                               "'%s'",
                               2u * INBOX_MSG_ID_BYTES, arg);
        a->has_msg_id = true;
        return -1;
    case OWN_TTL:
        if (parse_duration_ms(arg, &a->ttl_ms) != 0 || a->ttl_ms == 0 ||
            a->ttl_ms > INBOX_TTL_MS_MAX)
            return usage_error(c,
                               "--ttl wants a duration from 1ms to 366d "
                               "(e.g. 500ms, 30s, 5m, 2h, 7d), not '%s'",
                               arg);
        return -1;
    case OWN_INBOX:
        if (a->inboxes_count == a->inboxes_cap)
            return usage_error(c, "at most %u --inbox values",
                               INBOX_FANOUT_INBOXES_MAX);
        if (check_inbox(c, arg) >= 0)
            return EXIT_USAGE;
        a->inboxes[a->inboxes_count++] = arg;
        return -1;
    default:
        return usage_error(c, "unexpected option");
    }
}

/* The payload from PAYLOAD, --file F, or "-" (stdin): exactly one. */
static int payload_args(const struct command *c, const struct global *g,
                        struct enqueue_args *a, int argc, char **argv,
                        int first, uint8_t **payload, size_t *len)
{
    const char *arg = first < argc ? argv[first] : NULL;
    if (first + 1 < argc)
        return usage_error(c, "unexpected argument '%s'", argv[first + 1]);
    if (arg != NULL && a->file != NULL)
        return usage_error(c, "give the payload once: PAYLOAD, --file F or "
                              "- (stdin)");
    if (arg == NULL && a->file == NULL)
        return usage_error(c, "no payload: give PAYLOAD, --file F or - "
                              "(stdin); '' is an empty one");
    const char *file = a->file;
    if (arg != NULL && strcmp(arg, "-") == 0) {
        file = "-";
        arg = NULL;
    }
    return payload_load(c, g, arg, file, payload, len);
}

static int cmd_enqueue(int argc, char **argv)
{
    const struct command *c = find_command("enqueue", NULL);
    static const struct option own[] = {
        {"file", required_argument, 0, OWN_FILE},
        {"msg-id", required_argument, 0, OWN_MSG_ID},
        {"ttl", required_argument, 0, OWN_TTL},
    };
    struct enqueue_args a;
    memset(&a, 0, sizeof a);
    struct global g;
    int code = parse_options(c, argc, argv, own, 3, enqueue_option, &a, &g);
    if (code >= 0)
        return code;
    if (optind >= argc)
        return usage_error(c, "which inbox?");
    const char *inbox = argv[optind];
    if (check_inbox(c, inbox) >= 0)
        return EXIT_USAGE;
    uint8_t *payload = NULL;
    size_t len = 0;
    code = payload_args(c, &g, &a, argc, argv, optind + 1, &payload, &len);
    if (code != 0)
        return code;
    /* Our own msg id when none was given, so that it can be shown (for a
     * safe retry) whatever happens to the call. */
    if (!a.has_msg_id &&
        getrandom(a.msg_id, sizeof a.msg_id, 0) != (ssize_t)sizeof a.msg_id) {
        free(payload);
        return report(c, &g, EXIT_FAILED, "IO", "getrandom failed", NULL);
    }

    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_enqueue(s.client, inbox, strlen(inbox),
                                         a.msg_id, a.ttl_ms, payload, len,
                                         g.timeout_ms, &w, enqueue_done);
    free(payload);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    char hex[2 * INBOX_MSG_ID_BYTES + 1];
    hex_encode(hex, a.msg_id, INBOX_MSG_ID_BYTES);
    if (rc == 0 && g.json) {
        fputs("{\"inbox\":", stdout);
        json_str(stdout, inbox);
        printf(",\"seq\":%" PRIu64 ",\"dedup\":%s,\"msg_id\":\"%s\"}\n",
               w.value, w.dedup ? "true" : "false", hex);
    } else if (rc == 0) {
        printf("seq=%" PRIu64 " dedup=%s msg_id=%s%s\n", w.value,
               w.dedup ? "true" : "false", hex,
               w.dedup ? "  (this msg id was enqueued before: nothing new "
                         "was stored)"
                       : "");
    }
    char retry[128];
    snprintf(retry, sizeof retry,
             "to retry safely, pass the same msg id: --msg-id %s", hex);
    /* Refusals of the request itself gain nothing from a retry. */
    bool retry_helps = rc != 0 && rc != INBOX_EDENIED &&
                       rc != INBOX_EPAYLOAD_TOO_LARGE &&
                       rc != INBOX_EKEY_INVALID && rc != INBOX_EINVAL;
    return session_end(&s, rc, retry_helps ? retry : NULL);
}

/* One line (or JSON object) per inbox; returns how many failed. */
static size_t enqueue_many_print(const struct global *g, const char **inboxes,
                                 const struct inbox_client_enqueue_item *items,
                                 size_t n)
{
    size_t failed = 0;
    if (g->json)
        fputs("{\"results\":[", stdout);
    for (size_t i = 0; i < n; i++) {
        const struct inbox_client_enqueue_item *it = &items[i];
        char hex[2 * INBOX_MSG_ID_BYTES + 1];
        hex_encode(hex, it->msg_id, INBOX_MSG_ID_BYTES);
        failed += it->status != 0;
        if (g->json) {
            fputs(i ? ",{\"inbox\":" : "{\"inbox\":", stdout);
            json_str(stdout, inboxes[i]);
            if (it->status == 0) {
                printf(",\"seq\":%" PRIu64 ",\"dedup\":%s", it->seq,
                       it->dedup ? "true" : "false");
            } else {
                printf(",\"error\":\"%s\",\"message\":",
                       inbox_err_name(it->status));
                json_str(stdout, inbox_strerror(it->status));
            }
            printf(",\"msg_id\":\"%s\"}", hex);
        } else if (it->status == 0) {
            printf("%s seq=%" PRIu64 " dedup=%s msg_id=%s\n", inboxes[i],
                   it->seq, it->dedup ? "true" : "false", hex);
        } else {
            printf("%s error=%s msg_id=%s  (%s)\n", inboxes[i],
                   inbox_err_name(it->status), hex, inbox_strerror(it->status));
        }
    }
    if (g->json)
        printf("],\"failed\":%zu}\n", failed);
    return failed;
}

static int cmd_enqueue_many(int argc, char **argv)
{
    const struct command *c = find_command("enqueue-many", NULL);
    static const struct option own[] = {
        {"inbox", required_argument, 0, OWN_INBOX},
        {"file", required_argument, 0, OWN_FILE},
        {"ttl", required_argument, 0, OWN_TTL},
    };
    struct enqueue_args a;
    memset(&a, 0, sizeof a);
    a.inboxes_cap = (size_t)argc < INBOX_FANOUT_INBOXES_MAX
                        ? (size_t)argc
                        : INBOX_FANOUT_INBOXES_MAX;
    a.inboxes = calloc(a.inboxes_cap + 1, sizeof *a.inboxes);
    struct inbox_client_target *targets =
        calloc(a.inboxes_cap + 1, sizeof *targets);
    struct inbox_client_enqueue_item *items =
        calloc(a.inboxes_cap + 1, sizeof *items);
    uint8_t *payload = NULL;
    size_t len = 0;
    struct global g;
    int code = EXIT_FAILED;
    if (a.inboxes == NULL || targets == NULL || items == NULL) {
        fprintf(stderr, "inboxctl: out of memory\n");
        goto out;
    }
    code = parse_options(c, argc, argv, own, 3, enqueue_option, &a, &g);
    if (code >= 0)
        goto out;
    code = EXIT_USAGE;
    if (a.inboxes_count == 0) {
        usage_error(c, "give at least one --inbox");
        goto out;
    }
    code = payload_args(c, &g, &a, argc, argv, optind, &payload, &len);
    if (code != 0)
        goto out;
    for (size_t i = 0; i < a.inboxes_count; i++)
        targets[i] = (struct inbox_client_target){
            .inbox = a.inboxes[i], .inbox_len = strlen(a.inboxes[i])};

    struct session s;
    struct wait_keys w = {.count = a.inboxes_count, .enq_items = items};
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_enqueue_many(
            s.client, targets, a.inboxes_count, a.ttl_ms, payload, len,
            g.timeout_ms, &w, enqueue_many_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0) {
        size_t failed =
            enqueue_many_print(&g, a.inboxes, items, a.inboxes_count);
        if (failed > 0) {
            /* Each failure is shown with its inbox (and in the JSON
             * document already printed): say how many on stderr only. */
            inbox_client_free(s.client);
            fprintf(stderr,
                    "inboxctl: enqueue-many: %zu of %zu inboxes failed\n"
                    "  retry them with `inboxctl enqueue INBOX PAYLOAD "
                    "--msg-id ID`, the msg id shown: each is stored once\n",
                    failed, a.inboxes_count);
            code = exit_for(w.status != 0 ? w.status : INBOX_EINTERNAL);
            goto out;
        }
    }
    code = session_end(&s, rc, NULL);
out:
    free(payload);
    free(items);
    free(targets);
    free(a.inboxes);
    return code;
}

/* ---- fetch --------------------------------------------------------------- */

enum { OWN_AFTER = 'a', OWN_MAX = 'n', OWN_MAX_BYTES = 'b', OWN_WAIT = 'w' };

struct fetch_args {
    uint64_t after, max, max_bytes, wait_ms;
};

static int fetch_option(void *ctx, const struct command *c, int ch,
                        const char *arg)
{
    struct fetch_args *a = ctx;
    switch (ch) {
    case OWN_AFTER:
        return want_u64(c, "--after", arg, 0, UINT64_MAX, &a->after);
    case OWN_MAX:
        return want_u64(c, "--max", arg, 0, INBOX_FETCH_MESSAGES_MAX, &a->max);
    case OWN_MAX_BYTES:
        return want_u64(c, "--max-bytes", arg, 0, INBOX_FETCH_BYTES_MAX,
                        &a->max_bytes);
    case OWN_WAIT:
        return want_u64(c, "--wait (ms)", arg, 0, INBOX_FETCH_WAIT_MS_MAX,
                        &a->wait_ms);
    default:
        return usage_error(c, "unexpected option");
    }
}

struct fetch_wait {
    bool done;
    int status;
    bool json;
    const char *inbox;
    uint64_t after;
};

static void fetch_print_json(const struct fetch_wait *w,
                             const struct inbox_client_fetch_result *r)
{
    fputs("{\"inbox\":", stdout);
    json_str(stdout, w->inbox);
    printf(",\"acked_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64
           ",\"stale\":%s,\"messages\":[",
           r->acked_seq, r->last_seq, r->stale ? "true" : "false");
    for (size_t i = 0; i < r->count; i++) {
        const struct inbox_client_message *m = &r->messages[i];
        char hex[2 * INBOX_MSG_ID_BYTES + 1];
        hex_encode(hex, m->msg_id, INBOX_MSG_ID_BYTES);
        printf("%s{\"seq\":%" PRIu64
               ",\"msg_id\":\"%s\",\"enqueue_ts_ms\":%" PRIu64 ",",
               i ? "," : "", m->seq, hex, m->enqueue_ts_ms);
        json_payload(stdout, m->payload, m->payload_len);
        fputs("}", stdout);
    }
    fputs("]}\n", stdout);
}

static void fetch_print_human(const struct fetch_wait *w,
                              const struct inbox_client_fetch_result *r)
{
    int seq_width = 3;
    if (r->count > 0) {
        char buf[24];
        int n = snprintf(buf, sizeof buf, "%" PRIu64,
                         r->messages[r->count - 1].seq);
        seq_width = n > seq_width ? n : seq_width;
    }
    if (r->count > 0)
        printf("%-*s  %-32s  %-24s  %s\n", seq_width, "SEQ", "MSG_ID",
               "ENQUEUED", "PAYLOAD");
    for (size_t i = 0; i < r->count; i++) {
        const struct inbox_client_message *m = &r->messages[i];
        char hex[2 * INBOX_MSG_ID_BYTES + 1], ts[TIME_TEXT_BYTES];
        hex_encode(hex, m->msg_id, INBOX_MSG_ID_BYTES);
        printf("%-*" PRIu64 "  %s  %-24s  ", seq_width, m->seq, hex,
               fmt_time(ts, sizeof ts, m->enqueue_ts_ms));
        human_payload(stdout, m->payload, m->payload_len);
        fputc('\n', stdout);
    }
    uint64_t upto = r->count ? r->messages[r->count - 1].seq : w->after;
    printf("messages=%zu acked_seq=%" PRIu64 " last_seq=%" PRIu64 "%s%s\n",
           r->count, r->acked_seq, r->last_seq, r->stale ? " stale" : "",
           r->last_seq > upto && r->count > 0 ? "  (more: fetch --after "
                                                "the last seq shown)"
                                              : "");
}

/* Printed here: the result's pointers live only during the callback. */
static void fetch_done(void *arg, int status,
                       const struct inbox_client_fetch_result *r)
{
    struct fetch_wait *w = arg;
    w->done = true;
    w->status = status;
    if (status != 0 || r == NULL)
        return;
    if (w->json)
        fetch_print_json(w, r);
    else
        fetch_print_human(w, r);
}

static int cmd_fetch(int argc, char **argv)
{
    const struct command *c = find_command("fetch", NULL);
    static const struct option own[] = {
        {"after", required_argument, 0, OWN_AFTER},
        {"max", required_argument, 0, OWN_MAX},
        {"max-bytes", required_argument, 0, OWN_MAX_BYTES},
        {"wait", required_argument, 0, OWN_WAIT},
    };
    struct fetch_args a;
    memset(&a, 0, sizeof a);
    struct global g;
    int code = parse_options(c, argc, argv, own, 4, fetch_option, &a, &g);
    if (code >= 0)
        return code;
    if (argc - optind != 1)
        return usage_error(c, "give exactly one INBOX");
    const char *inbox = argv[optind];
    if (check_inbox(c, inbox) >= 0)
        return EXIT_USAGE;
    uint64_t timeout = g.timeout_ms + a.wait_ms;
    if (timeout > INBOX_CLIENT_TIMEOUT_MS_MAX)
        timeout = INBOX_CLIENT_TIMEOUT_MS_MAX;

    struct session s;
    struct fetch_wait w = {.json = g.json, .inbox = inbox, .after = a.after};
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_fetch(s.client, inbox, strlen(inbox), a.after,
                                       (uint32_t)a.max, (uint32_t)a.max_bytes,
                                       (uint32_t)a.wait_ms, 0,
                                       (uint32_t)timeout, &w, fetch_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    return session_end(&s, rc, NULL);
}

/* ---- ack, seen ----------------------------------------------------------- */

static int cmd_ack(int argc, char **argv)
{
    const struct command *c = find_command("ack", NULL);
    struct global g;
    int code = parse_options(c, argc, argv, NULL, 0, NULL, NULL, &g);
    if (code >= 0)
        return code;
    if (argc - optind != 2)
        return usage_error(c, "give INBOX and SEQ");
    const char *inbox = argv[optind];
    uint64_t seq = 0;
    if (check_inbox(c, inbox) >= 0 ||
        want_u64(c, "SEQ", argv[optind + 1], 0, UINT64_MAX, &seq) >= 0)
        return EXIT_USAGE;

    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_ack(s.client, inbox, strlen(inbox), seq,
                                     g.timeout_ms, &w, value_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    if (rc == 0 && g.json) {
        fputs("{\"inbox\":", stdout);
        json_str(stdout, inbox);
        printf(",\"acked_seq\":%" PRIu64 "}\n", w.value);
    } else if (rc == 0) {
        printf("acked_seq=%" PRIu64 "\n", w.value);
    }
    return session_end(&s, rc, NULL);
}

static int cmd_seen_set(int argc, char **argv)
{
    const struct command *c = find_command("seen", "set");
    struct global g;
    int code = parse_options(c, argc, argv, NULL, 0, NULL, NULL, &g);
    if (code >= 0)
        return code;
    if (argc - optind < 1 || argc - optind > 2)
        return usage_error(c, "give INBOX and optionally TS_MS");
    const char *inbox = argv[optind];
    uint64_t ts = wall_ms();
    if (check_inbox(c, inbox) >= 0)
        return EXIT_USAGE;
    if (argc - optind == 2 &&
        want_u64(c, "TS_MS", argv[optind + 1], 0, UINT64_MAX, &ts) >= 0)
        return EXIT_USAGE;

    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_seen_set(s.client, inbox, strlen(inbox), ts,
                                          g.timeout_ms, &w, value_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    char t[TIME_TEXT_BYTES];
    if (rc == 0 && g.json) {
        fputs("{\"inbox\":", stdout);
        json_str(stdout, inbox);
        printf(",\"ts_ms\":%" PRIu64 ",\"requested_ts_ms\":%" PRIu64 "}\n",
               w.value, ts);
    } else if (rc == 0) {
        printf("ts_ms=%" PRIu64 " (%s)%s\n", w.value,
               fmt_time(t, sizeof t, w.value),
               w.value > ts ? "  (kept: last-seen only moves forward)" : "");
    }
    return session_end(&s, rc, NULL);
}

/* The inboxes of a multi-inbox command (positionals), as keys. */
static int keys_from_args(const struct command *c, int argc, char **argv,
                          size_t max, struct inbox_client_key **keys_out,
                          size_t *count_out)
{
    size_t n = (size_t)(argc - optind);
    if (n == 0)
        return usage_error(c, "give at least one INBOX");
    if (n > max)
        return usage_error(c, "at most %zu inboxes at once", max);
    struct inbox_client_key *keys = calloc(n, sizeof *keys);
    if (keys == NULL) {
        fprintf(stderr, "inboxctl: out of memory\n");
        return EXIT_FAILED;
    }
    for (size_t i = 0; i < n; i++) {
        const char *inbox = argv[optind + (int)i];
        if (check_inbox(c, inbox) >= 0) {
            free(keys);
            return EXIT_USAGE;
        }
        keys[i] = (struct inbox_client_key){inbox, strlen(inbox)};
    }
    *keys_out = keys;
    *count_out = n;
    return -1;
}

static int cmd_seen_get(int argc, char **argv)
{
    const struct command *c = find_command("seen", "get");
    struct global g;
    int code = parse_options(c, argc, argv, NULL, 0, NULL, NULL, &g);
    if (code >= 0)
        return code;
    struct inbox_client_key *keys = NULL;
    size_t n = 0;
    code = keys_from_args(c, argc, argv, INBOX_SEEN_GET_INBOXES_MAX, &keys, &n);
    if (code >= 0)
        return code;
    struct inbox_client_key_item *items = calloc(n, sizeof *items);
    if (items == NULL) {
        free(keys);
        return report(c, &g, EXIT_FAILED, "NOMEM", "out of memory", NULL);
    }
    struct session s;
    struct wait_keys w = {.count = n, .items = items};
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_seen_get(s.client, keys, n, 0, g.timeout_ms,
                                          &w, keys_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    size_t failed = 0;
    if (rc == 0 && g.json)
        fputs("{\"inboxes\":[", stdout);
    else if (rc == 0)
        printf("%-24s  %-14s  %s\n", "INBOX", "LAST_SEEN_MS", "LAST_SEEN");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct inbox_client_key_item *it = &items[i];
        char t[TIME_TEXT_BYTES];
        failed += it->status != 0;
        if (g.json) {
            fputs(i ? ",{\"inbox\":" : "{\"inbox\":", stdout);
            json_bytes(stdout, keys[i].ptr, keys[i].len);
            if (it->status == 0)
                printf(",\"ts_ms\":%" PRIu64 "}", it->value);
            else
                printf(",\"error\":\"%s\",\"message\":\"%s\"}",
                       inbox_err_name(it->status), inbox_strerror(it->status));
        } else if (it->status == 0) {
            printf("%-24s  %-14" PRIu64 "  %s\n", (const char *)keys[i].ptr,
                   it->value, fmt_time(t, sizeof t, it->value));
        } else {
            printf("%-24s  error=%s (%s)\n", (const char *)keys[i].ptr,
                   inbox_err_name(it->status), inbox_strerror(it->status));
        }
    }
    if (rc == 0 && g.json)
        fputs("]}\n", stdout);
    if (rc == 0 && failed > 0)
        rc = w.status != 0 ? w.status : INBOX_EINTERNAL;
    code = session_end(&s, rc, NULL);
    free(items);
    free(keys);
    return code;
}

/* ---- watch --------------------------------------------------------------- */

enum { OWN_COUNT = 'c', OWN_SECONDS = 's' };

struct watch_args {
    uint64_t count, seconds;
};

static int watch_option(void *ctx, const struct command *c, int ch,
                        const char *arg)
{
    struct watch_args *a = ctx;
    if (ch == OWN_COUNT)
        return want_u64(c, "--count", arg, 1, UINT64_MAX, &a->count);
    if (ch == OWN_SECONDS)
        return want_u64(c, "--seconds", arg, 1, 366u * 86400u, &a->seconds);
    return usage_error(c, "unexpected option");
}

struct watch_state {
    bool json;
    uint64_t notified;
    bool lost;
    int lost_status;
};

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void watch_notify(void *arg, int status, const uint8_t *inbox,
                         size_t inbox_len, uint64_t last_seq)
{
    struct watch_state *ws = arg;
    if (status != 0) {
        ws->lost = true;
        ws->lost_status = status;
        return;
    }
    ws->notified++;
    if (ws->json) {
        fputs("{\"event\":\"notify\",\"inbox\":", stdout);
        json_bytes(stdout, inbox, inbox_len);
        printf(",\"last_seq\":%" PRIu64 "}\n", last_seq);
    } else {
        printf("NOTIFY %.*s last_seq=%" PRIu64 "\n", (int)inbox_len,
               (const char *)inbox, last_seq);
    }
    fflush(stdout);
}

/* Prints where each inbox stands; fails when one could not be watched. */
static int watch_started(const struct global *g,
                         const struct inbox_client_key *keys, size_t n,
                         const struct wait_keys *w)
{
    for (size_t i = 0; i < n; i++) {
        const struct inbox_client_key_item *it = &w->items[i];
        if (it->status != 0)
            return it->status;
        if (g->json) {
            fputs("{\"event\":\"watching\",\"inbox\":", stdout);
            json_bytes(stdout, keys[i].ptr, keys[i].len);
            printf(",\"last_seq\":%" PRIu64 "}\n", it->value);
        } else {
            printf("watching %s last_seq=%" PRIu64 "\n",
                   (const char *)keys[i].ptr, it->value);
        }
    }
    fflush(stdout);
    return w->status;
}

/* Pushes until --count of them, --seconds, or SIGINT/SIGTERM. A lost
 * connection drops the server's watches: watch again (that also says
 * where each inbox stands, covering pushes missed meanwhile). */
static int watch_loop(struct session *s, const struct watch_args *a,
                      struct watch_state *ws, struct inbox_client_key *keys,
                      size_t n, struct wait_keys *w)
{
    uint64_t end_ms = a->seconds ? mono_ms() + a->seconds * 1000u : UINT64_MAX;
    uint64_t probe_at_ms = 0;
    bool rewatching = false;
    while (!interrupted && (a->count == 0 || ws->notified < a->count) &&
           mono_ms() < end_ms) {
        if (ws->lost && !rewatching) {
            fprintf(stderr,
                    "inboxctl: watch: connection lost (%s); "
                    "watching again\n",
                    inbox_strerror(ws->lost_status));
            ws->lost = false;
            w->done = false;
            int rc = inbox_client_submit_watch(s->client, keys, n,
                                               s->g->timeout_ms, w, keys_done);
            if (rc != 0)
                return rc;
            rewatching = true;
        }
        int rc = session_step(s, &probe_at_ms, rewatching);
        if (rc != 0)
            return rc;
        if (rewatching && w->done) {
            rewatching = false;
            rc = watch_started(s->g, keys, n, w);
            if (rc != 0)
                return rc;
        }
    }
    if (!interrupted && a->count != 0 && ws->notified < a->count) {
        snprintf(s->why, sizeof s->why,
                 "%" PRIu64 " of %" PRIu64 " notification(s) before --seconds "
                 "%" PRIu64 " ran out",
                 ws->notified, a->count, a->seconds);
        return INBOX_ETIMEOUT;
    }
    return 0;
}

static int cmd_watch(int argc, char **argv)
{
    const struct command *c = find_command("watch", NULL);
    static const struct option own[] = {
        {"count", required_argument, 0, OWN_COUNT},
        {"seconds", required_argument, 0, OWN_SECONDS},
    };
    struct watch_args a;
    memset(&a, 0, sizeof a);
    struct global g;
    int code = parse_options(c, argc, argv, own, 2, watch_option, &a, &g);
    if (code >= 0)
        return code;
    struct inbox_client_key *keys = NULL;
    size_t n = 0;
    code = keys_from_args(c, argc, argv, INBOX_WATCH_INBOXES_MAX, &keys, &n);
    if (code >= 0)
        return code;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct inbox_client_key_item *items = calloc(n, sizeof *items);
    struct watch_state ws = {.json = g.json};
    struct wait_keys w = {.count = n, .items = items};
    struct session s;
    int rc = session_open(&s, c, &g, watch_notify, &ws);
    if (rc == 0 && items == NULL)
        rc = INBOX_ENOMEM;
    if (rc == 0)
        rc = inbox_client_submit_watch(s.client, keys, n, g.timeout_ms, &w,
                                       keys_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = watch_started(&g, keys, n, &w);
    if (rc == 0)
        rc = watch_loop(&s, &a, &ws, keys, n, &w);
    /* A timed-out watch was bounded by --seconds: no need to probe. */
    if (rc == INBOX_ETIMEOUT && s.why[0] != '\0') {
        const char *advice = "nothing was enqueued to the watched inboxes in "
                             "time";
        code = report(c, &g, EXIT_FAILED, "TIMEOUT", s.why, advice);
        inbox_client_free(s.client);
    } else {
        code = session_end(&s, rc, NULL);
    }
    free(items);
    free(keys);
    return code;
}

/* ---- status, route, snapshot --------------------------------------------- */

enum { OWN_NODE = 'N', OWN_SHARDS = 'S', OWN_SHARD = 'H' };

struct node_args {
    uint64_t node_id;
    bool all_shards;
    uint64_t shard;
};

static int node_option(void *ctx, const struct command *c, int ch,
                       const char *arg)
{
    struct node_args *a = ctx;
    switch (ch) {
    case OWN_NODE:
        return want_u64(c, "--node", arg, 0, UINT64_MAX, &a->node_id);
    case OWN_SHARDS:
        a->all_shards = true;
        return -1;
    case OWN_SHARD:
        return want_u64(c, "--shard", arg, 0, INBOX_SHARD_COUNT_MAX - 1u,
                        &a->shard);
    default:
        return usage_error(c, "unexpected option");
    }
}

static const char *role_name(uint8_t role)
{
    static const char *const names[] = {"follower", "candidate", "leader",
                                        "learner", "none"};
    return role < 5 ? names[role] : "unknown";
}

static void fmt_duration(char *buf, size_t buf_bytes, uint64_t ms)
{
    uint64_t s = ms / 1000u;
    if (s < 60)
        snprintf(buf, buf_bytes, "%" PRIu64 ".%03" PRIu64 "s", s, ms % 1000u);
    else if (s < 3600)
        snprintf(buf, buf_bytes, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else
        snprintf(buf, buf_bytes, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s",
                 s / 3600, s / 60 % 60, s % 60);
}

struct status_wait {
    bool done;
    int status;
    bool json, all_shards;
};

static void status_print_json(const struct inbox_client_status *r)
{
    printf("{\"node_id\":%" PRIu64 ",\"uptime_ms\":%" PRIu64
           ",\"shard_count\":%zu,\"shards\":[",
           r->node_id, r->uptime_ms, r->count);
    for (size_t i = 0; i < r->count; i++) {
        const struct inbox_client_shard_status *sh = &r->shards[i];
        printf("%s{\"shard\":%" PRIu32 ",\"role\":\"%s\",\"leader_id\":%" PRIu64
               ",\"term\":%" PRIu64 ",\"applied_index\":%" PRIu64 "}",
               i ? "," : "", sh->shard, role_name(sh->role), sh->leader_id,
               sh->term, sh->applied_index);
    }
    fputs("]}\n", stdout);
}

/* Many shards: one line per role with the ranges of term and applied. */
static void status_print_summary(const struct inbox_client_status *r)
{
    printf("%-10s  %6s  %-15s  %s\n", "ROLE", "SHARDS", "TERMS", "APPLIED");
    size_t known = 0;
    for (uint8_t role = 0; role <= 4; role++) {
        size_t n = 0;
        uint64_t tmin = UINT64_MAX, tmax = 0, amin = UINT64_MAX, amax = 0;
        for (size_t i = 0; i < r->count; i++) {
            const struct inbox_client_shard_status *sh = &r->shards[i];
            uint8_t rl = sh->role < 4 ? sh->role : 4;
            if (rl != role)
                continue;
            n++;
            tmin = sh->term < tmin ? sh->term : tmin;
            tmax = sh->term > tmax ? sh->term : tmax;
            amin = sh->applied_index < amin ? sh->applied_index : amin;
            amax = sh->applied_index > amax ? sh->applied_index : amax;
        }
        if (n == 0)
            continue;
        char terms[48], applied[48];
        snprintf(terms, sizeof terms, "%" PRIu64 "..%" PRIu64, tmin, tmax);
        snprintf(applied, sizeof applied, "%" PRIu64 "..%" PRIu64, amin, amax);
        printf("%-10s  %6zu  %-15s  %s\n", role_name(role), n, terms, applied);
    }
    for (size_t i = 0; i < r->count; i++)
        known += r->shards[i].leader_id != 0;
    printf("leader known for %zu of %zu shards; `inboxctl status --shards` "
           "lists each\n",
           known, r->count);
}

static void status_done(void *arg, int status,
                        const struct inbox_client_status *r)
{
    struct status_wait *w = arg;
    w->done = true;
    w->status = status;
    if (status != 0 || r == NULL)
        return;
    if (w->json) {
        status_print_json(r);
        return;
    }
    char up[48];
    fmt_duration(up, sizeof up, r->uptime_ms);
    printf("node %" PRIu64 "  up %s  %zu shard(s) here\n", r->node_id, up,
           r->count);
    if (!w->all_shards && r->count > STATUS_LIST_SHARDS_MAX) {
        status_print_summary(r);
        return;
    }
    printf("%-6s  %-10s  %-8s  %-8s  %s\n", "SHARD", "ROLE", "LEADER", "TERM",
           "APPLIED");
    for (size_t i = 0; i < r->count; i++) {
        const struct inbox_client_shard_status *sh = &r->shards[i];
        printf("%-6" PRIu32 "  %-10s  %-8" PRIu64 "  %-8" PRIu64 "  %" PRIu64
               "\n",
               sh->shard, role_name(sh->role), sh->leader_id, sh->term,
               sh->applied_index);
    }
}

static int cmd_status(int argc, char **argv)
{
    const struct command *c = find_command("status", NULL);
    static const struct option own[] = {
        {"node", required_argument, 0, OWN_NODE},
        {"shards", no_argument, 0, OWN_SHARDS},
    };
    struct node_args a;
    memset(&a, 0, sizeof a);
    struct global g;
    int code = parse_options(c, argc, argv, own, 2, node_option, &a, &g);
    if (code >= 0)
        return code;
    if (optind < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind]);
    struct session s;
    struct status_wait w = {.json = g.json, .all_shards = a.all_shards};
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = inbox_client_submit_status(s.client, a.node_id, g.timeout_ms, &w,
                                        status_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    return session_end(&s, rc, NULL);
}

/* ---- cluster status ------------------------------------------------------ */

#define CLUSTER_NODES_MAX 16u
#define CLUSTER_STATUS_TIMEOUT_MS 3000u

struct cluster_node {
    struct cluster_wait *w;
    uint64_t id;
    bool done;
    int status;
    uint64_t uptime_ms;
    size_t count;
    struct inbox_client_shard_status *shards; /* copied */
};

struct cluster_wait {
    size_t pending;
    bool all_done;
    size_t count;
    struct cluster_node nodes[CLUSTER_NODES_MAX];
};

static void cluster_status_done(void *arg, int status,
                                const struct inbox_client_status *r)
{
    struct cluster_node *n = arg;
    n->done = true;
    n->status = status;
    if (status == 0 && r != NULL) {
        n->uptime_ms = r->uptime_ms;
        n->shards = calloc(r->count ? r->count : 1u, sizeof *n->shards);
        if (n->shards != NULL) {
            memcpy(n->shards, r->shards, r->count * sizeof *n->shards);
            n->count = r->count;
        } else {
            n->status = INBOX_ENOMEM;
        }
    }
    if (--n->w->pending == 0)
        n->w->all_done = true;
}

/* Node k's applied index of shard s (UINT64_MAX: unknown). */
static uint64_t cluster_applied(const struct cluster_node *n, uint32_t s)
{
    if (n->status != 0)
        return UINT64_MAX;
    for (size_t i = 0; i < n->count; i++)
        if (n->shards[i].shard == s)
            return n->shards[i].applied_index;
    return UINT64_MAX;
}

static void cluster_print(const struct global *g, const struct cluster_wait *w,
                          const struct inbox_client *client, bool all_shards,
                          uint32_t *leaderless, size_t *down)
{
    uint32_t sc = inbox_client_shard_count(client);
    uint64_t lag[CLUSTER_NODES_MAX] = {0}, applied[CLUSTER_NODES_MAX] = {0};
    uint32_t leads[CLUSTER_NODES_MAX] = {0};
    *leaderless = 0;
    *down = 0;
    for (uint32_t s = 0; s < sc; s++) {
        uint64_t leader = inbox_client_shard_leader(client, s);
        uint64_t max = 0;
        bool leader_up = false;
        for (size_t k = 0; k < w->count; k++)
            leader_up |= w->nodes[k].id == leader && w->nodes[k].status == 0;
        if (!leader_up)
            (*leaderless)++; /* none known, or it does not answer */
        for (size_t k = 0; k < w->count; k++) {
            uint64_t a = cluster_applied(&w->nodes[k], s);
            if (a != UINT64_MAX && a > max)
                max = a;
            if (w->nodes[k].id == leader)
                leads[k]++;
        }
        for (size_t k = 0; k < w->count; k++) {
            uint64_t a = cluster_applied(&w->nodes[k], s);
            if (a != UINT64_MAX) {
                applied[k] += a;
                lag[k] += max - a;
            }
        }
    }
    for (size_t k = 0; k < w->count; k++)
        *down += w->nodes[k].status != 0;
    if (g->json) {
        printf("{\"shard_count\":%" PRIu32 ",\"leaderless_shards\":%" PRIu32
               ",\"nodes\":[",
               sc, *leaderless);
        for (size_t k = 0; k < w->count; k++) {
            const struct cluster_node *n = &w->nodes[k];
            const char *addr = inbox_client_node_addr(client, n->id);
            printf("%s{\"node_id\":%" PRIu64 ",\"addr\":\"%s\",", k ? "," : "",
                   n->id, addr ? addr : "");
            if (n->status != 0)
                printf("\"reachable\":false,\"error\":\"%s\"}",
                       inbox_err_name(n->status));
            else
                printf("\"reachable\":true,\"uptime_ms\":%" PRIu64
                       ",\"leads\":%" PRIu32 ",\"applied\":%" PRIu64
                       ",\"lag\":%" PRIu64 "}",
                       n->uptime_ms, leads[k], applied[k], lag[k]);
        }
        fputs("],\"shards\":[", stdout);
        for (uint32_t s = 0; s < sc; s++) {
            printf("%s{\"shard\":%" PRIu32 ",\"leader_id\":%" PRIu64
                   ",\"applied\":{",
                   s ? "," : "", s, inbox_client_shard_leader(client, s));
            bool first = true;
            for (size_t k = 0; k < w->count; k++) {
                uint64_t a = cluster_applied(&w->nodes[k], s);
                if (a == UINT64_MAX)
                    continue;
                printf("%s\"%" PRIu64 "\":%" PRIu64, first ? "" : ",",
                       w->nodes[k].id, a);
                first = false;
            }
            fputs("}}", stdout);
        }
        fputs("]}\n", stdout);
        return;
    }
    printf("cluster: %zu node(s), %" PRIu32 " shard(s), %" PRIu32
           " without a reachable leader, %zu node(s) unreachable\n",
           w->count, sc, *leaderless, *down);
    printf("%-6s  %-22s  %-12s  %-10s  %-6s  %-12s  %s\n", "NODE", "ADDRESS",
           "STATE", "UPTIME", "LEADS", "APPLIED", "LAG");
    for (size_t k = 0; k < w->count; k++) {
        const struct cluster_node *n = &w->nodes[k];
        const char *addr = inbox_client_node_addr(client, n->id);
        if (n->status != 0) {
            printf("%-6" PRIu64 "  %-22s  %-12s  (%s)\n", n->id,
                   addr ? addr : "?", "unreachable", inbox_err_name(n->status));
            continue;
        }
        char up[48];
        fmt_duration(up, sizeof up, n->uptime_ms);
        printf("%-6" PRIu64 "  %-22s  %-12s  %-10s  %-6" PRIu32 "  %-12" PRIu64
               "  %" PRIu64 "\n",
               n->id, addr ? addr : "?", "up", up, leads[k], applied[k],
               lag[k]);
    }
    if (!all_shards)
        return;
    printf("\n%-6s  %-8s", "SHARD", "LEADER");
    for (size_t k = 0; k < w->count; k++)
        printf("  APPLIED@%-4" PRIu64, w->nodes[k].id);
    printf("  LAG\n");
    for (uint32_t s = 0; s < sc; s++) {
        uint64_t max = 0, min = UINT64_MAX;
        printf("%-6" PRIu32 "  %-8" PRIu64, s,
               inbox_client_shard_leader(client, s));
        for (size_t k = 0; k < w->count; k++) {
            uint64_t a = cluster_applied(&w->nodes[k], s);
            if (a == UINT64_MAX) {
                printf("  %-12s", "-");
                continue;
            }
            printf("  %-12" PRIu64, a);
            max = a > max ? a : max;
            min = a < min ? a : min;
        }
        printf("  %" PRIu64 "\n", min == UINT64_MAX ? 0 : max - min);
    }
}

static int cmd_cluster_status(int argc, char **argv)
{
    const struct command *c = find_command("cluster", "status");
    static const struct option own[] = {
        {"shards", no_argument, 0, OWN_SHARDS},
    };
    struct node_args a;
    memset(&a, 0, sizeof a);
    struct global g;
    int code = parse_options(c, argc, argv, own, 1, node_option, &a, &g);
    if (code >= 0)
        return code;
    if (optind < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind]);
    struct session s;
    struct wait_one rw;
    memset(&rw, 0, sizeof rw);
    struct cluster_wait *w = calloc(1, sizeof *w);
    if (w == NULL)
        return report(c, &g, EXIT_FAILED, "NOMEM", "out of memory", NULL);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = session_route(&s, 0, g.timeout_ms, &rw);
    uint64_t ids[CLUSTER_NODES_MAX];
    if (rc == 0) {
        size_t n = inbox_client_nodes(s.client, ids, CLUSTER_NODES_MAX);
        w->count = n < CLUSTER_NODES_MAX ? n : CLUSTER_NODES_MAX;
        uint32_t t = g.timeout_ms < CLUSTER_STATUS_TIMEOUT_MS
                         ? g.timeout_ms
                         : CLUSTER_STATUS_TIMEOUT_MS;
        /* Ask every node at once; a node that does not answer in time is
         * reported unreachable. */
        for (size_t k = 0; k < w->count; k++) {
            struct cluster_node *cn = &w->nodes[k];
            cn->w = w;
            cn->id = ids[k];
            w->pending++;
            int src = inbox_client_submit_status(s.client, ids[k], t, cn,
                                                 cluster_status_done);
            if (src != 0) {
                cn->status = src;
                cn->done = true;
                w->pending--;
            }
        }
        w->all_done = w->pending == 0;
        rc = session_wait(&s, &w->all_done);
    }
    uint32_t leaderless = 0;
    size_t down = 0;
    if (rc == 0)
        cluster_print(&g, w, s.client, a.all_shards, &leaderless, &down);
    for (size_t k = 0; k < w->count; k++)
        free(w->nodes[k].shards);
    free(w);
    code = session_end(&s, rc, NULL);
    if (code == EXIT_OK && (leaderless > 0 || down > 0))
        code = EXIT_FAILED;
    return code;
}

/* ---- cluster add-node / remove-node / transfer-leader -------------------- */

#define MEMBER_STEP_TIMEOUT_MS 3000u
#define MEMBER_WAIT_S_DEFAULT 300u

enum { OWN_WAIT_S = 'w', OWN_TO = 'T' };

struct member_args {
    uint64_t wait_s;
    uint64_t to;
    bool no_wait;
};

static int member_option(void *ctx, const struct command *c, int ch,
                         const char *arg)
{
    struct member_args *a = ctx;
    switch (ch) {
    case OWN_WAIT_S:
        return want_u64(c, "--wait", arg, 0, 86400, &a->wait_s);
    case OWN_TO:
        return want_u64(c, "--to", arg, 1, UINT32_MAX, &a->to);
    default:
        return usage_error(c, "unexpected option");
    }
}

/* Counts the calls of one round still in flight. */
struct round {
    size_t pending;
    bool done;
    int first_error;
};

static void round_admin_done(void *arg, int status, uint64_t epoch)
{
    struct round *r = arg;
    (void)epoch;
    if (status != 0 && r->first_error == 0)
        r->first_error = status;
    if (--r->pending == 0)
        r->done = true;
}

/* Sends ADD_NODE (add) or REMOVE_NODE to every node of the map (and, for
 * REMOVE_NODE, the node itself: it hands its shards' leadership over).
 * Per-node failures are tolerated: the round is repeated. */
static int member_round(struct session *s, uint64_t id, const char *addr,
                        bool add, uint32_t step_ms)
{
    uint64_t ids[CLUSTER_NODES_MAX];
    size_t n = inbox_client_nodes(s->client, ids, CLUSTER_NODES_MAX);
    if (n > CLUSTER_NODES_MAX)
        n = CLUSTER_NODES_MAX;
    struct round r = {0};
    const char *addrs[1] = {addr};
    for (size_t k = 0; k < n; k++) {
        if (add && ids[k] == id)
            continue;
        r.pending++;
        int rc =
            add ? inbox_client_submit_add_node(s->client, ids[k], id, addrs, 1,
                                               step_ms, &r, round_admin_done)
                : inbox_client_submit_remove_node(
                      s->client, ids[k], id, step_ms, &r, round_admin_done);
        if (rc != 0) {
            r.pending--;
            if (r.first_error == 0)
                r.first_error = rc;
        }
    }
    r.done = r.pending == 0;
    int rc = session_wait(s, &r.done);
    return rc != 0 ? rc : r.first_error;
}

struct roles_wait {
    bool done;
    int status;
    size_t voter, learner, none, count;
};

static void roles_done(void *arg, int status,
                       const struct inbox_client_status *res)
{
    struct roles_wait *w = arg;
    w->done = true;
    w->status = status;
    if (status != 0 || res == NULL)
        return;
    w->count = res->count;
    for (size_t i = 0; i < res->count; i++) {
        uint8_t role = res->shards[i].role;
        if (role == 3) /* learner (docs/protocol.md, STATUS) */
            w->learner++;
        else if (role == 4) /* not a member */
            w->none++;
        else
            w->voter++;
    }
}

static double elapsed_s(uint64_t t0)
{
    return (double)(mono_ms() - t0) / 1000.0;
}

/* One membership request and its check take at most this long. */
static uint32_t member_step_ms(const struct global *g)
{
    return g->timeout_ms < MEMBER_STEP_TIMEOUT_MS ? g->timeout_ms
                                                  : MEMBER_STEP_TIMEOUT_MS;
}

/* Between rounds: true to stop (no waiting asked, or the wait is over:
 * *rc = INBOX_ETIMEOUT); else a pause before the next round. */
static bool member_give_up(uint64_t t0, uint64_t wait_s, int *rc)
{
    if (wait_s == 0)
        return true;
    if (elapsed_s(t0) >= (double)wait_s) {
        *rc = INBOX_ETIMEOUT;
        return true;
    }
    usleep(500 * 1000);
    return false;
}

static int cmd_cluster_add_node(int argc, char **argv)
{
    const struct command *c = find_command("cluster", "add-node");
    static const struct option own[] = {
        {"wait", required_argument, 0, OWN_WAIT_S},
    };
    struct member_args a = {.wait_s = MEMBER_WAIT_S_DEFAULT};
    struct global g;
    int code = parse_options(c, argc, argv, own, 1, member_option, &a, &g);
    if (code >= 0)
        return code;
    if (argc - optind != 2)
        return usage_error(c, "needs ID and HOST:PORT");
    uint64_t id = 0;
    if ((code = want_u64(c, "ID", argv[optind], 1, UINT32_MAX, &id)) >= 0)
        return code;
    const char *addr = argv[optind + 1];
    if (strchr(addr, ':') == NULL || strlen(addr) > INBOX_NODE_ADDR_BYTES_MAX)
        return usage_error(c, "'%s' is not HOST:PORT", addr);
    uint32_t step = member_step_ms(&g);
    /* A second session reaches the new node by its address (it is in no
     * map yet) for its own view: which shards count it as what. */
    struct global ng = g;
    ng.seeds[0] = addr;
    ng.seeds_count = 1;
    struct session s, ns;
    struct wait_one rw;
    memset(&rw, 0, sizeof rw);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = session_open(&ns, c, &ng, NULL, NULL);
    else
        memset(&ns, 0, sizeof ns);
    uint64_t t0 = mono_ms();
    bool finished = false;
    struct roles_wait last = {0};
    while (rc == 0 && !finished) {
        rc = session_route(&s, 0, step, &rw);
        if (rc == 0)
            rc = member_round(&s, id, addr, true, step);
        if (rc == INBOX_EDENIED || rc == INBOX_EINVAL || rc == INBOX_EEXISTS)
            break;
        rc = 0; /* unreachable nodes and leaders moving: next round */
        struct roles_wait w = {0};
        int src =
            inbox_client_submit_status(ns.client, 0, step, &w, roles_done);
        if (src == 0)
            src = session_wait(&ns, &w.done);
        if (src == 0)
            src = w.status;
        if (src == 0) {
            last = w;
            finished = w.count > 0 && w.voter == w.count;
        }
        if (!g.json) {
            if (src == 0)
                printf("[%6.1fs] node %" PRIu64 ": voter in %zu of %zu "
                       "shard(s), learner in %zu, not yet in %zu\n",
                       elapsed_s(t0), id, w.voter, w.count, w.learner, w.none);
            else
                printf("[%6.1fs] node %" PRIu64 " at %s does not answer "
                       "(%s): is it running with --cluster-join 1?\n",
                       elapsed_s(t0), id, addr, inbox_err_name(src));
            fflush(stdout);
        }
        if (finished || member_give_up(t0, a.wait_s, &rc))
            break;
    }
    if (g.json && (rc == 0 || rc == INBOX_ETIMEOUT))
        printf("{\"node_id\":%" PRIu64 ",\"addr\":\"%s\",\"voter\":%zu,"
               "\"learner\":%zu,\"none\":%zu,\"shards\":%zu,\"done\":%s}\n",
               id, addr, last.voter, last.learner, last.none, last.count,
               finished ? "true" : "false");
    else if (rc == 0 && finished)
        printf("node %" PRIu64 " is a voter in every shard\n", id);
    if (ns.client != NULL)
        inbox_client_free(ns.client);
    return session_end(&s, rc,
                       rc == INBOX_ETIMEOUT
                           ? "the change goes on in the background; run the "
                             "command again to follow it, or inboxctl "
                             "cluster status"
                           : NULL);
}

static int cmd_cluster_remove_node(int argc, char **argv)
{
    const struct command *c = find_command("cluster", "remove-node");
    static const struct option own[] = {
        {"wait", required_argument, 0, OWN_WAIT_S},
    };
    struct member_args a = {.wait_s = MEMBER_WAIT_S_DEFAULT};
    struct global g;
    int code = parse_options(c, argc, argv, own, 1, member_option, &a, &g);
    if (code >= 0)
        return code;
    if (argc - optind != 1)
        return usage_error(c, "needs ID");
    uint64_t id = 0;
    if ((code = want_u64(c, "ID", argv[optind], 1, UINT32_MAX, &id)) >= 0)
        return code;
    uint32_t step = member_step_ms(&g);
    struct session s;
    int rc = session_open(&s, c, &g, NULL, NULL);
    uint64_t t0 = mono_ms();
    bool finished = false;
    size_t still = 0;
    while (rc == 0 && !finished) {
        struct wait_one rw;
        rc = session_route(&s, 0, step, &rw);
        uint64_t ids[CLUSTER_NODES_MAX];
        size_t n = 0;
        if (rc == 0) {
            n = inbox_client_nodes(s.client, ids, CLUSTER_NODES_MAX);
            n = n < CLUSTER_NODES_MAX ? n : CLUSTER_NODES_MAX;
            rc = member_round(&s, id, NULL, false, step);
        }
        if (rc == INBOX_EDENIED || rc == INBOX_EINVAL)
            break;
        rc = 0;
        /* Done when no other node counts it in any shard: ask each for its
         * view of the map. */
        still = 0;
        size_t asked = 0;
        for (size_t k = 0; k < n; k++) {
            if (ids[k] == id)
                continue;
            if (session_route(&s, ids[k], step, &rw) != 0)
                continue;
            asked++;
            uint64_t seen[CLUSTER_NODES_MAX];
            size_t m = inbox_client_nodes(s.client, seen, CLUSTER_NODES_MAX);
            for (size_t j = 0; j < m && j < CLUSTER_NODES_MAX; j++)
                still += seen[j] == id;
        }
        finished = asked > 0 && still == 0;
        if (!g.json) {
            printf("[%6.1fs] node %" PRIu64 ": still a member in the view of "
                   "%zu of %zu node(s) asked\n",
                   elapsed_s(t0), id, still, asked);
            fflush(stdout);
        }
        if (finished || member_give_up(t0, a.wait_s, &rc))
            break;
    }
    if (g.json && (rc == 0 || rc == INBOX_ETIMEOUT))
        printf("{\"node_id\":%" PRIu64 ",\"done\":%s}\n", id,
               finished ? "true" : "false");
    else if (rc == 0 && finished)
        printf("node %" PRIu64 " is no longer a member of any shard; it can "
               "be stopped\n",
               id);
    return session_end(&s, rc,
                       rc == INBOX_ETIMEOUT
                           ? "the change goes on in the background; run the "
                             "command again to follow it"
                           : NULL);
}

static int cmd_cluster_transfer_leader(int argc, char **argv)
{
    const struct command *c = find_command("cluster", "transfer-leader");
    static const struct option own[] = {
        {"to", required_argument, 0, OWN_TO},
        {"wait", required_argument, 0, OWN_WAIT_S},
    };
    struct member_args a = {.wait_s = 30};
    struct global g;
    int code = parse_options(c, argc, argv, own, 2, member_option, &a, &g);
    if (code >= 0)
        return code;
    if (argc - optind != 1)
        return usage_error(c, "needs SHARD");
    uint64_t shard = 0;
    if ((code = want_u64(c, "SHARD", argv[optind], 0,
                         INBOX_SHARD_COUNT_MAX - 1u, &shard)) >= 0)
        return code;
    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = session_route(&s, 0, g.timeout_ms, &w);
    if (rc == 0 && shard >= inbox_client_shard_count(s.client))
        return session_end(&s, INBOX_ERANGE, "the cluster has fewer shards");
    uint64_t before =
        rc == 0 ? inbox_client_shard_leader(s.client, (uint32_t)shard) : 0;
    if (rc == 0) {
        memset(&w, 0, sizeof w);
        rc = inbox_client_submit_transfer_leader(
            s.client, (uint32_t)shard, a.to, g.timeout_ms, &w, value_done);
    }
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    uint64_t t0 = mono_ms(), now_leader = before;
    while (rc == 0) {
        rc = session_route(&s, 0, g.timeout_ms, &w);
        now_leader = inbox_client_shard_leader(s.client, (uint32_t)shard);
        if (rc == 0 && now_leader != 0 && now_leader != before &&
            (a.to == 0 || now_leader == a.to))
            break;
        if (rc == 0 && elapsed_s(t0) >= (double)a.wait_s)
            rc = INBOX_ETIMEOUT;
        if (rc == 0)
            usleep(100 * 1000);
    }
    if (rc == 0) {
        if (g.json)
            printf("{\"shard\":%" PRIu64 ",\"from\":%" PRIu64 ",\"to\":%" PRIu64
                   "}\n",
                   shard, before, now_leader);
        else
            printf("shard %" PRIu64 ": leader %" PRIu64 " -> %" PRIu64
                   " (%.1fs)\n",
                   shard, before, now_leader, elapsed_s(t0));
    }
    return session_end(&s, rc, NULL);
}

/* Shards per leader node, for route's summary. */
struct leader_count {
    uint64_t node_id;
    uint32_t shards;
};

static void route_print(const struct global *g, const struct wait_one *w,
                        const struct inbox_client *client, char **inboxes,
                        size_t inboxes_count)
{
    uint32_t n = inbox_client_shard_count(client);
    if (g->json) {
        printf("{\"epoch\":%" PRIu64 ",\"shard_count\":%" PRIu32
               ",\"nodes_count\":%" PRIu32 ",\"leaders\":[",
               w->value, n, w->nodes_count);
        for (uint32_t i = 0; i < n; i++)
            printf("%s%" PRIu64, i ? "," : "",
                   inbox_client_shard_leader(client, i));
        fputs("],\"inboxes\":[", stdout);
    } else {
        printf("epoch=%" PRIu64 " shards=%" PRIu32 " nodes=%" PRIu32 "\n",
               w->value, n, w->nodes_count);
        struct leader_count counts[INBOX_ROUTE_NODES_MAX + 1];
        size_t kinds = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t id = inbox_client_shard_leader(client, i);
            size_t k = 0;
            while (k < kinds && counts[k].node_id != id)
                k++;
            if (k == kinds && kinds < sizeof counts / sizeof counts[0])
                counts[kinds++] = (struct leader_count){id, 0};
            if (k < kinds)
                counts[k].shards++;
        }
        for (size_t k = 0; k < kinds; k++) {
            if (counts[k].node_id == 0)
                printf("no known leader: %" PRIu32 " shard(s) (election in "
                       "progress?)\n",
                       counts[k].shards);
            else
                printf("node %" PRIu64 " leads %" PRIu32 " shard(s)\n",
                       counts[k].node_id, counts[k].shards);
        }
    }
    for (size_t i = 0; i < inboxes_count; i++) {
        uint32_t shard =
            n ? inbox_shard_of(inboxes[i], strlen(inboxes[i]), n) : 0;
        uint64_t leader = inbox_client_shard_leader(client, shard);
        if (g->json) {
            fputs(i ? ",{\"inbox\":" : "{\"inbox\":", stdout);
            json_str(stdout, inboxes[i]);
            printf(",\"shard\":%" PRIu32 ",\"leader_id\":%" PRIu64 "}", shard,
                   leader);
        } else {
            printf("%s shard=%" PRIu32 " leader=%" PRIu64 "\n", inboxes[i],
                   shard, leader);
        }
    }
    if (g->json)
        fputs("]}\n", stdout);
}

static int cmd_route(int argc, char **argv)
{
    const struct command *c = find_command("route", NULL);
    struct global g;
    int code = parse_options(c, argc, argv, NULL, 0, NULL, NULL, &g);
    if (code >= 0)
        return code;
    for (int i = optind; i < argc; i++)
        if (check_inbox(c, argv[i]) >= 0)
            return EXIT_USAGE;
    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc = session_route(&s, 0, g.timeout_ms, &w);
    if (rc == 0)
        route_print(&g, &w, s.client, argv + optind, (size_t)(argc - optind));
    return session_end(&s, rc, NULL);
}

static int cmd_snapshot(int argc, char **argv)
{
    const struct command *c = find_command("snapshot", NULL);
    static const struct option own[] = {
        {"node", required_argument, 0, OWN_NODE},
        {"shard", required_argument, 0, OWN_SHARD},
    };
    struct node_args a = {.shard = INBOX_CLIENT_SHARD_ALL};
    struct global g;
    int code = parse_options(c, argc, argv, own, 2, node_option, &a, &g);
    if (code >= 0)
        return code;
    if (optind < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind]);
    struct session s;
    struct wait_one w;
    memset(&w, 0, sizeof w);
    int rc = session_open(&s, c, &g, NULL, NULL);
    if (rc == 0)
        rc =
            inbox_client_submit_snapshot(s.client, a.node_id, (uint32_t)a.shard,
                                         g.timeout_ms, &w, value_done);
    if (rc == 0)
        rc = session_wait(&s, &w.done);
    if (rc == 0)
        rc = w.status;
    if (rc == 0 && g.json)
        printf("{\"epoch\":%" PRIu64 "}\n", w.value);
    else if (rc == 0)
        printf("snapshot taken: epoch=%" PRIu64 "\n", w.value);
    return session_end(&s, rc, NULL);
}

/* ---- store verify -------------------------------------------------------- */

struct verify_out {
    bool json;
    uint32_t shards;
    uint32_t violations;
    uint32_t first_bad; /* the first shard that violates, for the message */
    uint64_t first_bad_commands, first_bad_index;
};

/* One shard: a table row, or an element of the "shards" array. The check
 * is invariant 7 of engine/store.c: applied_commands <= applied_index (each
 * raft index applied at most once). */
static int verify_print(void *arg, const struct verify_shard *v)
{
    struct verify_out *o = arg;
    bool ok = v->applied_commands <= v->applied_index;
    if (!ok && o->violations++ == 0) {
        o->first_bad = v->shard;
        o->first_bad_commands = v->applied_commands;
        o->first_bad_index = v->applied_index;
    }
    if (o->json) {
        printf("%s{\"shard\":%" PRIu32 ",\"applied_index\":%" PRIu64
               ",\"applied_term\":%" PRIu64 ",\"applied_commands\":%" PRIu64
               ",\"state_hash\":\"%016" PRIx64 "\",\"ok\":%s}",
               o->shards ? "," : "", v->shard, v->applied_index,
               v->applied_term, v->applied_commands, v->state_hash,
               ok ? "true" : "false");
    } else {
        if (o->shards == 0)
            printf("%-6s %-14s %-12s %-16s %-16s %s\n", "SHARD",
                   "APPLIED_INDEX", "APPLIED_TERM", "APPLIED_COMMANDS",
                   "STATE_HASH", "CHECK");
        printf("%-6" PRIu32 " %-14" PRIu64 " %-12" PRIu64 " %-16" PRIu64
               " %016" PRIx64 " %s\n",
               v->shard, v->applied_index, v->applied_term, v->applied_commands,
               v->state_hash,
               ok ? "ok" : "VIOLATED: applied_commands > applied_index");
    }
    o->shards++;
    return 0;
}

/* What to say when the store cannot be read: message and advice. */
static const char *verify_explain(int rc, const char *store, char *msg,
                                  size_t msg_bytes)
{
    if (rc == INBOX_ENOTFOUND) {
        snprintf(msg, msg_bytes, "%s holds no inboxd store", store);
        return "DATA_DIR is the node's --node-data-dir, whose store/ holds "
               "data.mdb and store.lock";
    }
    if (rc == INBOX_ELOCKED) {
        snprintf(msg, msg_bytes, "%s is in use by another process", store);
        return "is inboxd running on this data directory? verify reads a "
               "stopped node only: stop it first";
    }
    snprintf(msg, msg_bytes, "cannot read the store in %s: %s", store,
             inbox_strerror(rc));
    return NULL;
}

/* Closes the output the walk began (rc: the walk's) and picks the exit
 * code: 1 when the store could not be read, 4 on a violation. */
static int verify_finish(const struct command *c, struct global *g,
                         const struct verify_out *o, const char *store, int rc)
{
    if (g->json)
        printf("],\"violations\":%" PRIu32 ",\"ok\":%s", o->violations,
               rc == 0 && o->violations == 0 ? "true" : "false");
    if (rc != 0) {
        char msg[PATH_BYTES_MAX + 128];
        const char *advice = verify_explain(rc, store, msg, sizeof msg);
        if (g->json) {
            fputs(",\"error\":", stdout);
            json_str(stdout, inbox_err_name(rc));
            fputs(",\"message\":", stdout);
            json_str(stdout, msg);
            fputs(",\"advice\":", stdout);
            json_str(stdout, advice ? advice : "");
            printf(",\"exit\":%d}\n", EXIT_FAILED);
        }
        g->json = false; /* the document above says it already */
        return report(c, g, EXIT_FAILED, inbox_err_name(rc), msg, advice);
    }
    if (g->json)
        printf(",\"exit\":%d}\n", o->violations ? EXIT_VIOLATED : EXIT_OK);
    else
        printf("shards=%" PRIu32 " violations=%" PRIu32 "\n", o->shards,
               o->violations);
    if (o->violations == 0)
        return EXIT_OK;
    fprintf(stderr,
            "inboxctl: store verify: %s: shard %" PRIu32
            ": applied_commands %" PRIu64 " > applied_index %" PRIu64
            " (%" PRIu32 " shard(s) violate): some raft entry was applied "
            "more than once\n",
            store, o->first_bad, o->first_bad_commands, o->first_bad_index,
            o->violations);
    return EXIT_VIOLATED;
}

static int cmd_store_verify(int argc, char **argv)
{
    const struct command *c = find_command("store", "verify");
    struct global g;
    memset(&g, 0, sizeof g);
    static const struct option lo[] = {{"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'j':
            g.json = true;
            break;
        case 'h':
            fputs(c->usage, stdout);
            return EXIT_OK;
        default:
            return usage_error(c, "unknown or incomplete option '%s'",
                               argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error(c, "missing DATA_DIR");
    if (optind + 1 < argc)
        return usage_error(c, "unexpected argument '%s'", argv[optind + 1]);
    const char *dir = argv[optind];
    char store[PATH_BYTES_MAX];
    struct stat st;
    int e = stat(dir, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (e != 0) {
        char msg[PATH_BYTES_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", dir, strerror(e));
        return report(c, &g, EXIT_FAILED, inbox_err_name(INBOX_ENOTFOUND), msg,
                      "DATA_DIR is the node's --node-data-dir");
    }
    if ((size_t)snprintf(store, sizeof store, "%s/store", dir) >= sizeof store)
        return usage_error(c, "DATA_DIR is too long");
    struct verify_out o = {.json = g.json};
    /* Output starts before the walk, so an error midway (a corrupt shard)
     * closes the document it began: JSON stays one parsable object. */
    if (g.json) {
        fputs("{\"store\":", stdout);
        json_str(stdout, store);
        fputs(",\"shards\":[", stdout);
    }
    int rc = store_verify_walk(store, &o, verify_print);
    return verify_finish(c, &g, &o, store, rc);
}

/* ---- table and dispatch -------------------------------------------------- */

static const struct command commands[] = {
    {"cert ca", "create the cluster CA",
     "usage: inboxctl cert ca [--dir DIR] [--days N] [--force]\n"
     "  Creates DIR/ca.crt and DIR/ca.key (default DIR ./inboxd-data/tls).\n"
     "  --days N   validity (default 3650)\n"
     "  --force    replace an existing CA (invalidates every certificate)\n",
     cmd_cert_ca, false},
    {"cert node", "issue a node certificate",
     "usage: inboxctl cert node --name NAME --host HOST [--host HOST ...]\n"
     "                          [--dir DIR] [--days N] [--force]\n"
     "  Creates DIR/NAME.crt and DIR/NAME.key signed by DIR/ca.*.\n"
     "  --host     an address or DNS name the node is reached at\n",
     cmd_cert_node, false},
    {"cert client", "issue a client certificate (frontend or admin)",
     "usage: inboxctl cert client --name NAME --role frontend|admin\n"
     "                            [--dir DIR] [--days N] [--force]\n"
     "  frontend: data operations; admin: data and admin operations.\n",
     cmd_cert_client, false},
    {"enqueue", "put a message into an inbox",
     "usage: inboxctl enqueue INBOX [PAYLOAD | - | --file F] [--msg-id HEX32]\n"
     "                        [--ttl DURATION]\n"
     "  The payload (0-65536 bytes) is PAYLOAD, the contents of F, or stdin\n"
     "  ('-' or --file -); '' is an empty payload.\n"
     "  --msg-id HEX32  the message's id, 32 hex digits (default: random).\n"
     "                  The same id again in the same inbox is stored once:\n"
     "                  the answer is then the first seq, with dedup=true.\n"
     "  --ttl DURATION  lifetime: 500ms, 30s, 5m, 2h, 7d (default: the\n"
     "                  server's, 30d)\n"
     "  Prints seq=N dedup=true|false msg_id=HEX; on failure the msg id to\n"
     "  retry with. --json: {\"inbox\",\"seq\",\"dedup\",\"msg_id\"}.\n",
     cmd_enqueue, true},
    {"enqueue-many", "put one message into many inboxes",
     "usage: inboxctl enqueue-many --inbox A [--inbox B ...]\n"
     "                             [PAYLOAD | - | --file F] [--ttl DURATION]\n"
     "  One payload into up to 1024 inboxes, each with its own random msg\n"
     "  id. Prints one line per inbox: INBOX seq=N dedup=.. msg_id=HEX, or\n"
     "  INBOX error=NAME msg_id=HEX (exit 1 when any inbox failed).\n"
     "  --json: {\"results\":[{\"inbox\",\"seq\",\"dedup\",\"msg_id\"} or\n"
     "  {\"inbox\",\"error\",\"message\",\"msg_id\"}],\"failed\":N}.\n",
     cmd_enqueue_many, true},
    {"fetch", "read the messages of an inbox",
     "usage: inboxctl fetch INBOX [--after SEQ] [--max N] [--max-bytes B]\n"
     "                      [--wait MS]\n"
     "  Messages with seq > SEQ (default 0), at most N (1-1024; 0: the\n"
     "  server's cap) and about B payload bytes (the first message always\n"
     "  comes). --wait MS: when there is none yet, wait up to MS (at most\n"
     "  60000) for one to arrive.\n"
     "  Prints a table SEQ, MSG_ID, ENQUEUED (UTC), PAYLOAD (text when\n"
     "  printable UTF-8, else hex:...; long ones cut), then\n"
     "  messages=N acked_seq=A last_seq=L.\n"
     "  --json: {\"inbox\",\"acked_seq\",\"last_seq\",\"stale\",\"messages\":\n"
     "  [{\"seq\",\"msg_id\",\"enqueue_ts_ms\",\"payload\",\n"
     "  \"payload_encoding\"}]}: payload_encoding is \"utf8\" when the\n"
     "  payload is valid UTF-8 and payload the (JSON-escaped) text, else\n"
     "  \"base64\" and payload its standard base64 (with padding).\n",
     cmd_fetch, true},
    {"ack", "delete an inbox's messages up to a seq",
     "usage: inboxctl ack INBOX SEQ\n"
     "  Every message with seq <= SEQ is delivered and deleted. Acking\n"
     "  below the acked seq is a no-op; past the last seq fails with\n"
     "  ACK_BEYOND_LAST. Prints acked_seq=N (--json: {\"inbox\",\n"
     "  \"acked_seq\"}).\n",
     cmd_ack, true},
    {"seen set", "record an inbox's last-seen time",
     "usage: inboxctl seen set INBOX [TS_MS]\n"
     "  TS_MS: milliseconds since the epoch (default: now). The stored\n"
     "  value only moves forward: the answer is max(previous, TS_MS).\n"
     "  Prints ts_ms=N (UTC time) (--json: {\"inbox\",\"ts_ms\",\n"
     "  \"requested_ts_ms\"}).\n",
     cmd_seen_set, true},
    {"seen get", "read inboxes' last-seen times",
     "usage: inboxctl seen get INBOX [INBOX ...]\n"
     "  Prints INBOX, LAST_SEEN_MS (0: never), LAST_SEEN (UTC) per inbox.\n"
     "  --json: {\"inboxes\":[{\"inbox\",\"ts_ms\"} or {\"inbox\",\"error\",\n"
     "  \"message\"}]}.\n",
     cmd_seen_get, true},
    {"watch", "print pushes as messages arrive in inboxes",
     "usage: inboxctl watch INBOX [INBOX ...] [--count N] [--seconds S]\n"
     "  Prints 'watching INBOX last_seq=N' for each inbox, then a line\n"
     "  'NOTIFY INBOX last_seq=N' per push as it arrives (pushes may be\n"
     "  coalesced). Stops after N pushes, after S seconds, or on\n"
     "  SIGINT/SIGTERM (exit 0); with --count and --seconds, fewer than N\n"
     "  pushes in S seconds is exit 1 (TIMEOUT). A lost connection is\n"
     "  watched again. --json: one object per line, {\"event\":\"watching\"\n"
     "  or \"notify\",\"inbox\",\"last_seq\"}.\n",
     cmd_watch, true},
    {"status", "a node's shards: role, leader, term, applied",
     "usage: inboxctl status [--node ID] [--shards]\n"
     "  Node id, uptime, and per shard hosted there its role, leader,\n"
     "  term and applied index: a table up to 16 shards, else a summary\n"
     "  per role (--shards: every shard). --node ID: ask that node (default:\n"
     "  any). --json: {\"node_id\",\"uptime_ms\",\"shard_count\",\"shards\":\n"
     "  [{\"shard\",\"role\",\"leader_id\",\"term\",\"applied_index\"}]}.\n",
     cmd_status, true},
    {"route", "the shard map: epoch, leaders, where inboxes live",
     "usage: inboxctl route [INBOX ...]\n"
     "  Prints the placement epoch, shard and node counts, how many shards\n"
     "  each node leads, and for each INBOX its shard and leader.\n"
     "  --json: {\"epoch\",\"shard_count\",\"nodes_count\",\"leaders\":[id "
     "per\n"
     "  shard, 0 "
     "unknown],\"inboxes\":[{\"inbox\",\"shard\",\"leader_id\"}]}.\n",
     cmd_route, true},
    {"cluster status", "every node and shard: reachable, leader, lag",
     "usage: inboxctl cluster status [--shards]\n"
     "  Asks each node of the shard map for its status (3 s each, at once)\n"
     "  and prints per node: address, up or unreachable, uptime, shards it\n"
     "  leads, applied entries summed over its shards, and lag: entries\n"
     "  behind the most advanced replica, summed over shards. --shards:\n"
     "  per shard its leader, each node's applied index and the spread.\n"
     "  Exit 1 when a node is unreachable or a shard has no leader.\n"
     "  --json: "
     "{\"shard_count\",\"leaderless_shards\",\"nodes\":[{\"node_id\",\n"
     "  \"addr\",\"reachable\",\"uptime_ms\",\"leads\",\"applied\",\"lag\"} "
     "or\n"
     "  {\"node_id\",\"addr\",\"reachable\":false,\"error\"}],\"shards\":\n"
     "  [{\"shard\",\"leader_id\",\"applied\":{\"ID\":N}}]}.\n",
     cmd_cluster_status, true},
    {"cluster add-node", "add a node to every shard (admin)",
     "usage: inboxctl cluster add-node ID HOST:PORT [--wait S]\n"
     "  Adds node ID, reached at HOST:PORT (its client port; start it first\n"
     "  with --cluster-join 1 and the cluster's --cluster-members), to every\n"
     "  shard: each node records the address and has the shards it leads\n"
     "  take ID as a learner; leaders promote it to voter once it caught\n"
     "  up (from the log, or by snapshot). Repeats the request every half\n"
     "  second and prints progress (voter / learner / not yet, per shard as\n"
     "  the new node sees it) until ID is a voter everywhere, or S seconds\n"
     "  (default 300; 0: one round, no waiting) pass (exit 1, TIMEOUT: the\n"
     "  change goes on). Needs an admin certificate.\n"
     "  --json: {\"node_id\",\"addr\",\"voter\",\"learner\",\"none\",\n"
     "  \"shards\",\"done\"}.\n",
     cmd_cluster_add_node, true},
    {"cluster remove-node", "remove a node from every shard (admin)",
     "usage: inboxctl cluster remove-node ID [--wait S]\n"
     "  Removes node ID from every shard: each node removes it from the\n"
     "  shards it leads (ID itself first hands its shards' leadership to\n"
     "  another voter). Repeats until no other node counts ID as a member\n"
     "  of any shard, printing progress, or S seconds (default 300) pass.\n"
     "  Then ID can be stopped. Needs an admin certificate.\n"
     "  --json: {\"node_id\",\"done\"}.\n",
     cmd_cluster_remove_node, true},
    {"cluster transfer-leader", "move a shard's leadership (admin)",
     "usage: inboxctl cluster transfer-leader SHARD [--to ID] [--wait S]\n"
     "  Asks the leader of SHARD to hand leadership to voter ID (default:\n"
     "  the most caught-up other voter) and waits up to S seconds (default\n"
     "  30) for the map to show the new leader. Prints shard N: leader A\n"
     "  -> B. --json: {\"shard\",\"from\",\"to\"}. Needs an admin\n"
     "  certificate.\n",
     cmd_cluster_transfer_leader, true},
    {"snapshot", "checkpoint a node's shards (admin)",
     "usage: inboxctl snapshot [--node ID] [--shard N]\n"
     "  Asks node ID (default: any) to snapshot shard N (default: every\n"
     "  shard it hosts). Needs an admin certificate, else DENIED.\n"
     "  Prints snapshot taken: epoch=N (--json: {\"epoch\"}).\n",
     cmd_snapshot, true},
    {"store verify", "check a stopped node's store, per shard (offline)",
     "usage: inboxctl store verify DATA_DIR [--json]\n"
     "  Opens DATA_DIR/store (DATA_DIR: the node's --node-data-dir)\n"
     "  read-only, as of its last checkpoint, and prints per shard that has\n"
     "  any state: shard, applied index and term, applied commands (the\n"
     "  raft entries the store applied, no-ops included) and the state\n"
     "  hash (XXH3-64, hex), and checks applied_commands <= applied_index.\n"
     "  The node must be stopped: a store in use is LOCKED (exit 1).\n"
     "  Replicas of a shard at the same applied index must show the same\n"
     "  state hash; a node's applied_commands equals its applied_index.\n"
     "  Exit 0: every shard ok; 1: cannot read the store; 4: a shard has\n"
     "  applied_commands > applied_index (an entry applied twice).\n"
     "  --json: one document {\"store\",\"shards\":[{\"shard\",\n"
     "  \"applied_index\",\"applied_term\",\"applied_commands\",\n"
     "  \"state_hash\" (16 hex digits),\"ok\"}],\"violations\",\"ok\",\n"
     "  \"exit\"}; when the store cannot be read it also has \"error\"\n"
     "  (NAME), \"message\" and \"advice\" (a missing DATA_DIR: only\n"
     "  those and \"exit\").\n",
     cmd_store_verify, false},
};

#define COMMANDS_COUNT (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *a, const char *b)
{
    char full[64];
    snprintf(full, sizeof full, "%s %s", a, b ? b : "");
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        if (strcmp(commands[i].name, full) == 0 ||
            (b == NULL && strcmp(commands[i].name, a) == 0))
            return &commands[i];
    return NULL;
}

static void print_help(FILE *f)
{
    fprintf(f, "usage: inboxctl <command> [options]   (inboxctl <command> "
               "--help for each)\n\ncommands:\n");
    for (size_t i = 0; i < COMMANDS_COUNT; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fputs(global_usage, f);
}

/* How many argv entries a global option at argv[i] takes (1 or 2), or 0
 * when argv[i] is not one. */
static int global_option_width(const char *arg)
{
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    for (size_t i = 0; i < GLOBAL_OPTIONS_COUNT; i++) {
        const struct option *o = &global_options[i];
        size_t n = strlen(o->name);
        if (o->val == 'h' || strncmp(arg + 2, o->name, n) != 0)
            continue;
        if (arg[2 + n] == '=')
            return 1;
        if (arg[2 + n] == '\0')
            return o->has_arg == required_argument ? 2 : 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* Global options may come before the command: skip them here and hand
     * them to the command after its name. */
    int first = 1;
    while (first < argc) {
        int w = global_option_width(argv[first]);
        if (w == 0)
            break;
        first += w;
    }
    if (first > argc)
        first = argc;
    if (first >= argc || strcmp(argv[first], "--help") == 0 ||
        strcmp(argv[first], "-h") == 0 || strcmp(argv[first], "help") == 0) {
        print_help(first >= argc ? stderr : stdout);
        return first >= argc ? EXIT_USAGE : EXIT_OK;
    }
    /* Two-word commands first ("cert ca"), then one-word ones. */
    const struct command *c = NULL;
    int words = 0;
    if (first + 1 < argc && argv[first + 1][0] != '-') {
        c = find_command(argv[first], argv[first + 1]);
        words = 2;
    }
    if (c == NULL) {
        c = find_command(argv[first], NULL);
        words = 1;
    }
    if (c == NULL) {
        size_t wl = strlen(argv[first]);
        for (size_t i = 0; i < COMMANDS_COUNT; i++)
            if (strncmp(commands[i].name, argv[first], wl) == 0 &&
                commands[i].name[wl] == ' ') {
                fprintf(stderr,
                        "inboxctl: '%s' needs a subcommand:", argv[first]);
                for (size_t j = i; j < COMMANDS_COUNT; j++)
                    if (strncmp(commands[j].name, argv[first], wl) == 0 &&
                        commands[j].name[wl] == ' ')
                        fprintf(stderr, " '%s'", commands[j].name);
                fprintf(stderr, " (each has --help)\n");
                return EXIT_USAGE;
            }
        bool two = first + 1 < argc && argv[first + 1][0] != '-';
        fprintf(stderr, "inboxctl: unknown command '%s%s%s'\n\n", argv[first],
                two ? " " : "", two ? argv[first + 1] : "");
        print_help(stderr);
        return EXIT_USAGE;
    }
    /* The command's argv: its last word (getopt's argv[0]), the global
     * options that came first, then the rest. */
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (args == NULL) {
        fprintf(stderr, "inboxctl: out of memory\n");
        return EXIT_FAILED;
    }
    int n = 0;
    args[n++] = argv[first + words - 1];
    for (int i = 1; i < first; i++)
        args[n++] = argv[i];
    for (int i = first + words; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    int code = c->run(n, args);
    free(args);
    return code;
}
