/*
 * config.c — one table of options drives defaults, the INI file, flags and
 * the usage text. Adding an option is adding a row (and a struct field).
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"
#include "inbox/limits.h"

enum opt_type { OPT_STRING, OPT_U64, OPT_SIZE, OPT_DURATION };

struct opt {
    const char *section;
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t string_bytes; /* OPT_STRING: size of the field */
    uint64_t min, max;   /* numeric types: inclusive range */
    const char *def;     /* default, in the same textual form as the file */
    const char *help;
};

#define STR(sec, nm, field, def, help)                                         \
    {                                                                          \
        sec, nm, OPT_STRING, offsetof(struct config, field),                   \
            sizeof(((struct config *)0)->field), 0, 0, def, help               \
    }
#define NUM(sec, nm, type, field, lo, hi, def, help)                           \
    {                                                                          \
        sec, nm, type, offsetof(struct config, field), 0, lo, hi, def, help    \
    }

static const struct opt opts[] = {
    STR("node", "data_dir", data_dir, "./inboxd-data",
        "directory holding the WAL, the store and the certificates"),
    NUM("node", "id", OPT_U64, node_id, 1, UINT32_MAX, "1",
        "this node's id in the cluster"),
    STR("node", "listen", listen, "127.0.0.1:7420",
        "host:port for client connections"),
    STR("node", "metrics", metrics, "127.0.0.1:7421",
        "host:port for Prometheus /metrics (empty: off)"),
    STR("node", "log_level", log_level, "info", "debug, info, warn or error"),
    STR("node", "advertise", advertise, "",
        "host:port clients are told to reach this node at (default: listen)"),
    STR("tls", "ca", tls_ca, "",
        "cluster CA certificate (default: DATA/tls/ca.crt)"),
    STR("tls", "cert", tls_cert, "",
        "this node's certificate (default: DATA/tls/node.crt)"),
    STR("tls", "key", tls_key, "",
        "this node's private key (default: DATA/tls/node.key)"),
    NUM("cluster", "shard_count", OPT_U64, shard_count, 1,
        INBOX_SHARD_COUNT_MAX, "64",
        "shards of the inbox key space (fixed at cluster creation)"),
    STR("cluster", "members", members, "",
        "the cluster's nodes as id@host:port,... (their client ports, "
        "which peers use too); must include node.id unless joining; empty: "
        "this node alone"),
    NUM("cluster", "join", OPT_U64, join, 0, 1, "0",
        "1: this node joins a running cluster (cluster.members is then the "
        "list the cluster was created with, without this node); add it "
        "with `inboxctl cluster add-node`"),
    NUM("raft", "tick", OPT_DURATION, raft_tick_ms, INBOX_NODE_TICK_MS_MIN,
        INBOX_NODE_TICK_MS_MAX, "100ms",
        "one Raft tick: heartbeats and election timeouts count in ticks"),
    NUM("raft", "election_ticks", OPT_U64, raft_election_ticks, 3, 1000, "10",
        "base election timeout in ticks (randomized up to twice that)"),
    NUM("raft", "heartbeat_ticks", OPT_U64, raft_heartbeat_ticks, 1, 100, "1",
        "leader heartbeat interval in ticks (less than election_ticks)"),
    NUM("raft", "lease_reads", OPT_U64, raft_lease_reads, 0, 1, "0",
        "1: a leader holding a quorum lease serves reads without a "
        "heartbeat round (needs clocks that run at the same rate)"),
    NUM("raft", "retain_entries", OPT_U64, raft_retain_entries, 1,
        INBOX_NODE_RETAIN_ENTRIES_MAX, "262144",
        "WAL entries a leader keeps for a lagging follower before it needs "
        "a snapshot"),
    NUM("wal", "segment_bytes", OPT_SIZE, wal_segment_bytes,
        INBOX_WAL_SEGMENT_BYTES_MIN, INBOX_WAL_SEGMENT_BYTES_MAX, "64MiB",
        "WAL segment size"),
    NUM("store", "map_bytes", OPT_SIZE, store_map_bytes, 16u * INBOX_MIB,
        UINT64_C(1) << 44, "64GiB", "LMDB map size (address space, not disk)"),
    NUM("store", "checkpoint_interval", OPT_DURATION, store_checkpoint_ms, 10,
        3600u * 1000u, "5s",
        "how often the store commits a checkpoint (longer: less disk "
        "traffic, longer replay after a crash)"),
    NUM("store", "inbox_pending_messages_max", OPT_U64,
        inbox_pending_messages_max, 1, INBOX_PENDING_MESSAGES_DEFAULT, "100000",
        "pending messages one inbox may hold"),
    NUM("store", "inbox_pending_bytes_max", OPT_SIZE, inbox_pending_bytes_max,
        INBOX_PAYLOAD_BYTES_MAX, INBOX_PENDING_BYTES_DEFAULT, "64MiB",
        "pending payload bytes one inbox may hold"),
    NUM("store", "dedup_window", OPT_DURATION, dedup_window_ms, 0,
        UINT64_C(30) * 24 * 3600 * 1000, "24h",
        "how long a msg id is remembered for retries"),
    NUM("store", "default_ttl", OPT_DURATION, default_ttl_ms, 0,
        INBOX_TTL_MS_MAX, "30d",
        "how long a message waits when its enqueue gives no ttl"),
    NUM("limits", "connections_max", OPT_U64, conn_max, 1, 1000000, "10000",
        "client connections at once"),
    NUM("limits", "connection_inflight_max", OPT_U64, conn_inflight_max, 1,
        65536, "256", "requests in flight per connection"),
    NUM("limits", "connection_output_bytes_max", OPT_SIZE,
        conn_output_bytes_max, 64u * INBOX_KIB, 1024u * INBOX_MIB, "8MiB",
        "queued response bytes per connection before reads pause"),
};

#define OPTS_COUNT (sizeof opts / sizeof opts[0])

static void seterr(char *err, size_t err_bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t err_bytes, const char *fmt, ...)
{
    if (err == NULL || err_bytes == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_bytes, fmt, ap);
    va_end(ap);
}

/* Parse a decimal with an optional unit suffix from a table of (suffix,
 * multiplier). Whole numbers only; overflow is an error. */
struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_with_units(const char *s, const struct unit *units,
                            size_t units_count, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return INBOX_EINVAL;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return INBOX_EINVAL;
    while (*end == ' ')
        end++;
    uint64_t mult = 0;
    for (size_t i = 0; i < units_count; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            mult = units[i].mult;
            break;
        }
    }
    if (mult == 0)
        return INBOX_EINVAL;
    if (v != 0 && mult > UINT64_MAX / v)
        return INBOX_EINVAL;
    *out = (uint64_t)v * mult;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", UINT64_C(1) << 10},
        {"MiB", UINT64_C(1) << 20},
        {"GiB", UINT64_C(1) << 30},
        {"TiB", UINT64_C(1) << 40},
    };
    return parse_with_units(s, units, sizeof units / sizeof units[0], out);
}

int config_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"ms", 1},          {"s", 1000},         {"m", 60 * 1000},
        {"h", 3600 * 1000}, {"d", 86400 * 1000},
    };
    return parse_with_units(s, units, sizeof units / sizeof units[0], out);
}

/* Set one option from its textual value. On error writes what is wrong
 * (without location) to err. */
static int opt_set(const struct opt *o, struct config *c, const char *value,
                   char *err, size_t err_bytes)
{
    char *field = (char *)c + o->offset;
    if (o->type == OPT_STRING) {
        size_t n = strlen(value);
        if (n >= o->string_bytes) {
            seterr(err, err_bytes, "%s.%s: value longer than %zu bytes",
                   o->section, o->name, o->string_bytes - 1);
            return INBOX_EINVAL;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    uint64_t v = 0;
    int rc = o->type == OPT_DURATION ? config_parse_duration_ms(value, &v)
                                     : config_parse_size(value, &v);
    if (rc != 0 ||
        (o->type == OPT_U64 && strspn(value, "0123456789") != strlen(value))) {
        seterr(err, err_bytes, "%s.%s: '%s' is not a %s", o->section, o->name,
               value,
               o->type == OPT_DURATION ? "duration (e.g. 500ms, 2s, 1m)"
               : o->type == OPT_SIZE   ? "size (e.g. 4096, 64KiB, 1GiB)"
                                       : "whole number");
        return INBOX_EINVAL;
    }
    if (v < o->min || v > o->max) {
        seterr(err, err_bytes,
               "%s.%s: %s is out of range [%" PRIu64 ", %" PRIu64 "]",
               o->section, o->name, value, o->min, o->max);
        return INBOX_EINVAL;
    }
    memcpy(field, &v, sizeof v);
    return 0;
}

static const struct opt *opt_find(const char *section, const char *name)
{
    for (size_t i = 0; i < OPTS_COUNT; i++)
        if (strcmp(opts[i].section, section) == 0 &&
            strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < OPTS_COUNT; i++) {
        if (opt_set(&opts[i], c, opts[i].def, NULL, 0) != 0)
            abort(); /* a bad default is a bug in the table */
    }
}

struct ini_state {
    struct config *c;
    char *err;
    size_t err_bytes;
    int failed;
};

static int ini_handler_fn(void *user, const char *section, const char *name,
                          const char *value)
{
    struct ini_state *st = user;
    if (st->failed)
        return 1; /* report only the first error */
    const struct opt *o = opt_find(section, name);
    if (o == NULL) {
        seterr(st->err, st->err_bytes, "unknown option '%s' in section [%s]",
               name, section);
        st->failed = 1;
        return 0;
    }
    if (opt_set(o, st->c, value, st->err, st->err_bytes) != 0) {
        st->failed = 1;
        return 0;
    }
    return 1;
}

int config_load_file(struct config *c, const char *path, char *err,
                     size_t err_bytes)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        seterr(err, err_bytes, "%s: %s", path, strerror(e));
        return -e;
    }
    char why[CONFIG_ERROR_BYTES_MAX] = "";
    struct ini_state st = {c, why, sizeof why, 0};
    int line = ini_parse_file(f, ini_handler_fn, &st);
    fclose(f);
    if (line == 0)
        return 0;
    if (line < 0) {
        seterr(err, err_bytes, "%s: out of memory while parsing", path);
        return INBOX_ENOMEM;
    }
    /* inih returns the line of the first error: ours or a syntax error. */
    if (st.failed) {
        seterr(err, err_bytes, "%s:%d: %s", path, line, why);
    } else {
        seterr(err, err_bytes,
               "%s:%d: syntax error (expected [section] or "
               "name = value)",
               path, line);
    }
    return INBOX_EINVAL;
}

/* "--wal-segment-bytes" -> section "wal", name "segment_bytes". */
static const struct opt *opt_from_flag(const char *flag)
{
    for (size_t i = 0; i < OPTS_COUNT; i++) {
        const struct opt *o = &opts[i];
        size_t sl = strlen(o->section);
        if (strncmp(flag, o->section, sl) != 0 || flag[sl] != '-')
            continue;
        const char *p = flag + sl + 1;
        const char *n = o->name;
        while (*p && *n && (*p == *n || (*p == '-' && *n == '_'))) {
            p++;
            n++;
        }
        if (*p == '\0' && *n == '\0')
            return o;
    }
    return NULL;
}

int config_parse_args(struct config *c, int argc, char **argv, bool *help,
                      char *err, size_t err_bytes)
{
    *help = false;
    /* --config first, so flags win over the file wherever they appear. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                seterr(err, err_bytes, "--config needs a file name");
                return INBOX_EINVAL;
            }
            int rc = config_load_file(c, argv[i + 1], err, err_bytes);
            if (rc != 0)
                return rc;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            seterr(err, err_bytes,
                   "unexpected argument '%s' (options start with --; see "
                   "--help)",
                   a);
            return INBOX_EINVAL;
        }
        char flag[128];
        const char *eq = strchr(a + 2, '=');
        size_t fl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (fl >= sizeof flag) {
            seterr(err, err_bytes, "unknown option '%s' (see --help)", a);
            return INBOX_EINVAL;
        }
        memcpy(flag, a + 2, fl);
        flag[fl] = '\0';
        const struct opt *o = opt_from_flag(flag);
        if (o == NULL) {
            seterr(err, err_bytes, "unknown option '--%s' (see --help)", flag);
            return INBOX_EINVAL;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (i + 1 >= argc) {
                seterr(err, err_bytes, "--%s needs a value", flag);
                return INBOX_EINVAL;
            }
            value = argv[++i];
        }
        char why[CONFIG_ERROR_BYTES_MAX];
        if (opt_set(o, c, value, why, sizeof why) != 0) {
            seterr(err, err_bytes, "--%s: %s", flag, why);
            return INBOX_EINVAL;
        }
    }
    return 0;
}

int config_members(const struct config *c, struct config_member *out,
                   size_t *count, char *err, size_t err_bytes)
{
    *count = 0;
    const char *p = c->members;
    while (*p == ' ')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[CONFIG_ADDR_BYTES + 32];
        if (len >= sizeof item) {
            seterr(err, err_bytes,
                   "cluster.members: item '%.40s...' is too "
                   "long",
                   p);
            return INBOX_EINVAL;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *at = strchr(item, '@');
        char *colon = at ? strrchr(at + 1, ':') : NULL;
        char *idend = NULL;
        uint64_t id = at ? strtoull(item, &idend, 10) : 0;
        if (!at || idend != at || id == 0 || id > UINT32_MAX || !colon ||
            colon == at + 1 || colon[1] == '\0' ||
            strlen(at + 1) >= CONFIG_ADDR_BYTES) {
            seterr(err, err_bytes,
                   "cluster.members: '%s' is not id@host:port (id 1..%u)", item,
                   UINT32_MAX);
            return INBOX_EINVAL;
        }
        for (size_t i = 0; i < *count; i++)
            if (out[i].id == id) {
                seterr(err, err_bytes,
                       "cluster.members: node %" PRIu64 " is listed twice", id);
                return INBOX_EINVAL;
            }
        if (*count == CONFIG_MEMBERS_MAX) {
            seterr(err, err_bytes, "cluster.members: at most %u nodes",
                   CONFIG_MEMBERS_MAX);
            return INBOX_EINVAL;
        }
        out[*count].id = id;
        snprintf(out[*count].addr, sizeof out[*count].addr, "%s", at + 1);
        (*count)++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

int config_validate(const struct config *c, char *err, size_t err_bytes)
{
    struct config_member ms[CONFIG_MEMBERS_MAX];
    size_t mc = 0;
    if (config_members(c, ms, &mc, err, err_bytes) != 0)
        return INBOX_EINVAL;
    bool self = mc == 0;
    for (size_t i = 0; i < mc; i++)
        self |= ms[i].id == c->node_id;
    if (!self && !c->join) {
        seterr(err, err_bytes,
               "cluster.members does not list this node (node.id %" PRIu64
               "); to add a node to a running cluster start it with "
               "--cluster-join 1 and run `inboxctl cluster add-node`",
               c->node_id);
        return INBOX_EINVAL;
    }
    if (c->join && (mc == 0 || self)) {
        seterr(err, err_bytes,
               "cluster.join needs cluster.members: the nodes the cluster was "
               "created with, without this one (node.id %" PRIu64 ")",
               c->node_id);
        return INBOX_EINVAL;
    }
    int set =
        (c->tls_ca[0] != 0) + (c->tls_cert[0] != 0) + (c->tls_key[0] != 0);
    if (set != 0 && set != 3) {
        seterr(err, err_bytes,
               "tls.ca, tls.cert and tls.key go together: set all three or "
               "none (none uses the files under the data directory)");
        return INBOX_EINVAL;
    }
    if (c->data_dir[0] == '\0') {
        seterr(err, err_bytes, "node.data_dir must not be empty");
        return INBOX_EINVAL;
    }
    if (c->raft_heartbeat_ticks >= c->raft_election_ticks) {
        seterr(err, err_bytes,
               "raft.heartbeat_ticks (%" PRIu64
               ") must be below raft.election_ticks (%" PRIu64 ")",
               c->raft_heartbeat_ticks, c->raft_election_ticks);
        return INBOX_EINVAL;
    }
    if (strchr(c->listen, ':') == NULL) {
        seterr(err, err_bytes, "node.listen '%s' must be host:port", c->listen);
        return INBOX_EINVAL;
    }
    if (strcmp(c->log_level, "debug") != 0 &&
        strcmp(c->log_level, "info") != 0 &&
        strcmp(c->log_level, "warn") != 0 &&
        strcmp(c->log_level, "error") != 0) {
        seterr(err, err_bytes,
               "node.log_level '%s' must be debug, info, warn or error",
               c->log_level);
        return INBOX_EINVAL;
    }
    return 0;
}

size_t config_usage(char *buf, size_t buf_bytes, const char *argv0)
{
    size_t need = 0;
    int n = snprintf(buf, buf_bytes,
                     "usage: %s [--config FILE] [--SECTION-NAME VALUE ...]\n"
                     "Flags override the INI file; the file overrides the "
                     "defaults shown.\n\n",
                     argv0);
    need += (size_t)(n > 0 ? n : 0);
    for (size_t i = 0; i < OPTS_COUNT; i++) {
        char flag[96];
        snprintf(flag, sizeof flag, "--%s-%s", opts[i].section, opts[i].name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        char *at = need < buf_bytes ? buf + need : NULL;
        size_t room = need < buf_bytes ? buf_bytes - need : 0;
        n = snprintf(at, room, "  %-40s %s (default: %s)\n", flag, opts[i].help,
                     opts[i].def[0] ? opts[i].def : "none");
        need += (size_t)(n > 0 ? n : 0);
    }
    return need;
}
