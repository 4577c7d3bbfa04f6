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
 *
 * Commands that talk to a node arrive with the client library; this file
 * starts with `cert`, which needs no node.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cert.h"
#include "inbox/error.h"
#include "inbox/limits.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_UNREACHABLE = 3,
};

#define PATH_BYTES_MAX 1024

struct command {
    const char *name; /* "cert ca" */
    const char *summary;
    const char *usage;
    int (*run)(int argc, char **argv);
};

static const struct command *find_command(const char *a, const char *b);

static int usage_error(const struct command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const struct command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "inboxctl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n\n%s", c->usage);
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
        usage_error(c, "--days wants a number of days from 1 to 36500, not "
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

static void join(char *out, const char *dir, const char *name,
                 const char *ext)
{
    snprintf(out, PATH_BYTES_MAX, "%s/%s%s", dir, name, ext);
}

/* ---- cert ca ------------------------------------------------------------ */

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

/* ---- cert node / cert client -------------------------------------------- */

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
        return usage_error(c, "--role '%s': use frontend or admin",
                           role_name);
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
    printf("issued %s certificate for %s: %s (key %s)\n",
           cert_role_name(role), name, crt, key);
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

/* ---- table and dispatch ------------------------------------------------- */

static const struct command commands[] = {
    {"cert ca", "create the cluster CA",
     "usage: inboxctl cert ca [--dir DIR] [--days N] [--force]\n"
     "  Creates DIR/ca.crt and DIR/ca.key (default DIR ./inboxd-data/tls).\n"
     "  --days N   validity (default 3650)\n"
     "  --force    replace an existing CA (invalidates every certificate)\n",
     cmd_cert_ca},
    {"cert node", "issue a node certificate",
     "usage: inboxctl cert node --name NAME --host HOST [--host HOST ...]\n"
     "                          [--dir DIR] [--days N] [--force]\n"
     "  Creates DIR/NAME.crt and DIR/NAME.key signed by DIR/ca.*.\n"
     "  --host     an address or DNS name the node is reached at\n",
     cmd_cert_node},
    {"cert client", "issue a client certificate (frontend or admin)",
     "usage: inboxctl cert client --name NAME --role frontend|admin\n"
     "                            [--dir DIR] [--days N] [--force]\n"
     "  frontend: data operations; admin: data and admin operations.\n",
     cmd_cert_client},
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
    fprintf(f, "\nexit codes: 0 ok, 1 operation failed, 2 usage error, "
               "3 cluster unreachable\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    /* Two-word commands first ("cert ca"), then one-word ones. */
    const struct command *c = NULL;
    int shift = 0;
    if (argc >= 3 && argv[2][0] != '-') {
        c = find_command(argv[1], argv[2]);
        shift = 2;
    }
    if (c == NULL) {
        c = find_command(argv[1], NULL);
        shift = 1;
    }
    if (c == NULL) {
        fprintf(stderr, "inboxctl: unknown command '%s%s%s'\n\n", argv[1],
                argc >= 3 && argv[2][0] != '-' ? " " : "",
                argc >= 3 && argv[2][0] != '-' ? argv[2] : "");
        print_help(stderr);
        return EXIT_USAGE;
    }
    /* getopt sees the command's own argv: argv[0] is its last word. */
    return c->run(argc - shift, argv + shift);
}
