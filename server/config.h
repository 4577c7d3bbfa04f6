/*
 * config.h — inboxd's configuration: embedded defaults, an INI file, flags.
 *
 * Precedence, lowest first: the defaults compiled in here, then the INI file
 * named by --config, then command-line flags. Every option is one row of a
 * single table (config.c) that drives the INI parser, the flag parser and
 * `inboxd --help`, so the three can never disagree.
 *
 * INI layout: `[section]` then `name = value`; a flag is `--section-name`
 * (e.g. `[wal] segment_bytes = 64MiB` is `--wal-segment-bytes 64MiB`).
 * Sizes take KiB/MiB/GiB suffixes, durations ms/s/m. Unknown sections or
 * names, malformed values and values out of range are errors naming the file
 * and line (or the flag): a typo never silently falls back to a default.
 */
#ifndef INBOX_SERVER_CONFIG_H
#define INBOX_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_STRING_BYTES_MAX 512u
#define CONFIG_ERROR_BYTES_MAX 512u

struct config {
    /* [node] */
    char data_dir[CONFIG_STRING_BYTES_MAX];
    uint64_t node_id;
    char listen[CONFIG_STRING_BYTES_MAX]; /* host:port for clients */
    char
        metrics[CONFIG_STRING_BYTES_MAX]; /* host:port for /metrics, "" = off */
    char log_level[16];                   /* debug, info, warn, error */
    char advertise[CONFIG_STRING_BYTES_MAX]; /* host:port for ROUTE; "" = listen
                                              */
    /* [tls] */
    char tls_ca[CONFIG_STRING_BYTES_MAX];
    char tls_cert[CONFIG_STRING_BYTES_MAX];
    char tls_key[CONFIG_STRING_BYTES_MAX];
    /* [cluster] */
    uint64_t shard_count;
    char members[CONFIG_STRING_BYTES_MAX * 4]; /* id@host:port,... */
    uint64_t join; /* 1: joining a running cluster (not in members) */
    /* [raft] */
    uint64_t raft_tick_ms;
    uint64_t raft_election_ticks;
    uint64_t raft_heartbeat_ticks;
    uint64_t raft_lease_reads;
    uint64_t raft_retain_entries;
    /* [wal] */
    uint64_t wal_segment_bytes;
    /* [store] */
    uint64_t store_map_bytes;
    uint64_t store_checkpoint_ms;
    uint64_t inbox_pending_messages_max;
    uint64_t inbox_pending_bytes_max;
    uint64_t dedup_window_ms;
    uint64_t default_ttl_ms; /* for enqueues that give no ttl */
    /* [limits] */
    uint64_t conn_max;
    uint64_t conn_inflight_max;
    uint64_t conn_output_bytes_max;
};

/* Fill c with the embedded defaults: a usable single node with its data
 * under ./inboxd-data, its certificates under ./inboxd-data/tls. */
void config_defaults(struct config *c);

/* Apply an INI file over c. On error returns INBOX_EINVAL (or -errno when
 * the file cannot be read) and writes "file:line: what is wrong" to err. */
int config_load_file(struct config *c, const char *path, char *err,
                     size_t err_bytes);

/* Apply flags over c. argv[0] is skipped. "--config FILE" is applied first,
 * wherever it appears, so flags always win over the file. Sets *help when
 * --help was given (the caller prints config_usage and exits 0). On error
 * returns INBOX_EINVAL and writes a message naming the flag to err. */
int config_parse_args(struct config *c, int argc, char **argv, bool *help,
                      char *err, size_t err_bytes);

/* Check relations between options (e.g. the TLS files all set or none).
 * Returns 0 or INBOX_EINVAL with a message in err. */
int config_validate(const struct config *c, char *err, size_t err_bytes);

/* Write the usage text, one line per option with its default, to buf.
 * Returns the number of bytes it needed (like snprintf). */
size_t config_usage(char *buf, size_t buf_bytes, const char *argv0);

/* cluster.members, parsed: "1@127.0.0.1:7420,2@127.0.0.1:7430". */
#define CONFIG_MEMBERS_MAX 7u
#define CONFIG_ADDR_BYTES 129u
struct config_member {
    uint64_t id;
    char addr[CONFIG_ADDR_BYTES]; /* host:port, clients and peers */
};
/* Returns 0 and the members (count 0 when the option is empty), or
 * INBOX_EINVAL with a message naming the bad item: a malformed item, an
 * id of 0 or listed twice, more than CONFIG_MEMBERS_MAX, an address
 * without a port or longer than 128 bytes. */
int config_members(const struct config *c, struct config_member *out,
                   size_t *count, char *err, size_t err_bytes);

/* Parse "64MiB" / "4096" / "1GiB" and "500ms" / "2s" / "1m". Exposed for the
 * CLI, which takes the same forms. Return 0 or INBOX_EINVAL. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration_ms(const char *s, uint64_t *out);

#endif /* INBOX_SERVER_CONFIG_H */
