/*
 * inboxd_proc.h — a real inboxd process for integration tests.
 *
 * A `struct inboxd_proc` owns a temporary directory (ROOT) holding the data
 * directory (ROOT/data, with the certificates inboxd makes on first start
 * under ROOT/data/tls) and the process's log (ROOT/inboxd.log). Start it on
 * a free 127.0.0.1 port (a socket bound to port 0 picks it; a start that
 * loses the port to another process is retried on a new one), wait until a
 * client completes TLS + HELLO + ROUTE, stop it with SIGTERM (exit code) or
 * SIGKILL. Every wait is bounded. Every child started is recorded in a
 * process-wide table that an atexit handler kills, and each child asks the
 * kernel to SIGKILL it when the test process dies (PR_SET_PDEATHSIG), so no
 * inboxd outlives a failed or killed test.
 *
 * A cluster test fixes each node's port up front (the members list names
 * them): proc_start_at starts on a given port, and a restart after
 * proc_kill9 or proc_stop comes back on the same port and data directory.
 * proc_set_tls hands a node certificates of the test's making (one CA for
 * the whole cluster) instead of those inboxd makes for a node alone.
 *
 * Not thread-safe: start and stop processes from the main thread only
 * (PR_SET_PDEATHSIG follows the thread that forked).
 */
#ifndef INBOX_TESTS_INBOXD_PROC_H
#define INBOX_TESTS_INBOXD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inbox/client.h"

#define PROC_PATH_BYTES 512u
#define PROC_ARGS_MAX 24u

struct inboxd_proc {
    pid_t pid; /* 0 when not running */
    uint16_t port;
    char seed[32]; /* "127.0.0.1:port" */
    char root[PROC_PATH_BYTES];
    char data[PROC_PATH_BYTES];
    char log[PROC_PATH_BYTES];
    char ca[PROC_PATH_BYTES];        /* data/tls/ca.crt */
    char ca_key[PROC_PATH_BYTES];    /* data/tls/ca.key */
    char admin_crt[PROC_PATH_BYTES]; /* data/tls/admin.crt */
    char admin_key[PROC_PATH_BYTES];
    /* Extra flags given to every start (e.g. "--node-id", "7"). */
    const char *args[PROC_ARGS_MAX];
    size_t args_count;
    /* --node-metrics: "" (the default after proc_init) turns it off. */
    char metrics[48];
    /* Set by proc_set_tls: passed as --tls-cert / --tls-key (with
     * --tls-ca = ca above); "" lets inboxd make its own. */
    char tls_cert[PROC_PATH_BYTES];
    char tls_key[PROC_PATH_BYTES];
};

/* The inboxd binary every proc runs (set once, from argv). */
void proc_set_binary(const char *path);

/* Makes the temporary root; nothing is started. 0 or -errno. */
int proc_init(struct inboxd_proc *p, const char *name);

/* Adds flags for every later start (the strings must outlive p). */
void proc_add_args(struct inboxd_proc *p, const char *const *args,
                   size_t count);

/* Starts inboxd on a fresh port and waits (bounded) until a client gets
 * through TLS, HELLO and ROUTE. 0, or nonzero with the reason and the log's
 * tail on stderr (the process is killed then). */
int proc_start(struct inboxd_proc *p);

/* Starts inboxd on `port` and waits like proc_start; port 0 is proc_start.
 * The port is kept in p->port: to restart a stopped or killed node on the
 * same port and data directory, pass p->port again. A start that finds the
 * port still held (a listener of its previous life not yet gone) is retried
 * on the same port, a few times, with a pause between. */
int proc_start_at(struct inboxd_proc *p, uint16_t port);

/* A port the kernel just handed out for 127.0.0.1, or 0. It is closed
 * again, so another process may take it before inboxd binds it: a test
 * that must fix ports up front (a cluster's members list) takes that small
 * risk. */
uint16_t proc_free_port(void);

/* Makes every later start use these TLS files instead of the ones inboxd
 * creates under DATA/tls: --tls-ca ca --tls-cert node_crt --tls-key
 * node_key; and points p->ca and p->admin_crt / admin_key (what
 * proc_client and the readiness probe use) at ca and admin_crt/admin_key.
 * The strings are copied. 0 or -ENAMETOOLONG. */
int proc_set_tls(struct inboxd_proc *p, const char *ca, const char *node_crt,
                 const char *node_key, const char *admin_crt,
                 const char *admin_key);

/* SIGKILL and reap. No-op when not running. */
void proc_kill9(struct inboxd_proc *p);

/* SIGTERM, then waits up to timeout_ms for the exit. Returns the exit code
 * (0..255), 128+signal if it died of a signal, or -1 on timeout (it is then
 * killed with SIGKILL). Send SIGTERM once: inboxd exits at once, with 1,
 * on a second one. */
int proc_stop(struct inboxd_proc *p, unsigned timeout_ms);

/* The two halves of proc_stop, for a test that acts in between. */
void proc_term(struct inboxd_proc *p);
int proc_wait(struct inboxd_proc *p, unsigned timeout_ms);

/* Kills the process if it runs; removes the root unless `keep` (then its
 * path and the log's tail are printed, for a failed test). */
void proc_destroy(struct inboxd_proc *p, bool keep);

/* Prints the last `lines` lines of the log to stderr. */
void proc_log_tail(const struct inboxd_proc *p, unsigned lines);

/* True if the log contains `needle`. */
bool proc_log_contains(const struct inboxd_proc *p, const char *needle);

/* A libinbox client of this node with the given certificate (NULL: the
 * admin certificate inboxd made) and CA (NULL: the node's CA). NULL on
 * failure (reason on stderr). */
struct inbox_client *proc_client(const struct inboxd_proc *p, const char *crt,
                                 const char *key, const char *ca,
                                 inbox_client_notify_fn *notify,
                                 void *notify_arg);

/* Monotonic milliseconds. */
uint64_t proc_now_ms(void);
void proc_sleep_ms(unsigned ms);

#endif /* INBOX_TESTS_INBOXD_PROC_H */
