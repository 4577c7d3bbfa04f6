/*
 * test_client_inboxd.c — libinbox against a real inboxd process (the
 * binary is passed in INBOXD_PATH by CMake) on 127.0.0.1, with the
 * certificates inboxd makes on its first start: every data operation once,
 * then pipelined enqueues while the server is killed (SIGKILL) and
 * restarted; the client must reconnect and retry, and the inboxes must end
 * up holding every message exactly once (same msg id on retry, server
 * dedup). This is where the client's and the server's reading of
 * docs/protocol.md meet.
 *
 * Strictly an integration test; it lives with the client's tests because
 * it tests the client. Child processes are ended by their pid.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "inbox/client.h"
#include "inbox/error.h"

#ifndef INBOXD_PATH
#error "INBOXD_PATH must name the inboxd binary"
#endif

#define PIPE_N 3000
#define INBOXES 50

static char dir[256];
static char listen_addr[32];
static pid_t server_pid = -1;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *path(const char *name)
{
    static char buf[4][512];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static void server_start(void)
{
    char log[600];
    snprintf(log, sizeof log, "%s/inboxd.log", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(INBOXD_PATH, "inboxd", "--node-data-dir", path("data"),
              "--node-listen", listen_addr, "--node-metrics", "",
              "--cluster-shard-count", "8", "--node-log-level", "warn",
              (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
}

static void server_stop(int sig)
{
    if (server_pid <= 0)
        return;
    kill(server_pid, sig);
    int status;
    waitpid(server_pid, &status, 0);
    server_pid = -1;
}

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/inbox_clientd_XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    /* An ephemeral port: bound, read, released for inboxd to take. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    snprintf(listen_addr, sizeof listen_addr, "127.0.0.1:%u",
             (unsigned)ntohs(sa.sin_port));
    server_start();
    /* inboxd writes its CA and an admin certificate on first start. */
    uint64_t end = mono_ms() + 20000;
    struct stat st;
    while (stat(path("data/tls/admin.key"), &st) != 0 && mono_ms() < end)
        sleep_ms(20);
    assert_int_equal(stat(path("data/tls/admin.key"), &st), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_stop(SIGTERM);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int notified;
static void on_notify(void *arg, int status, const uint8_t *inbox,
                      size_t inbox_len, uint64_t last_seq)
{
    (void)arg;
    (void)last_seq;
    if (status == 0 && inbox_len == 5 && memcmp(inbox, "alice", 5) == 0)
        notified++;
}

static struct inbox_client *client_make(void)
{
    char ca[600], crt[600], key[600];
    snprintf(ca, sizeof ca, "%s", path("data/tls/ca.crt"));
    snprintf(crt, sizeof crt, "%s", path("data/tls/admin.crt"));
    snprintf(key, sizeof key, "%s", path("data/tls/admin.key"));
    const char *seeds[] = {listen_addr};
    struct inbox_client_config cfg = {
        .seeds = seeds,
        .seeds_count = 1,
        .ca_path = ca,
        .cert_path = crt,
        .key_path = key,
        .backoff_min_ms = 10,
        .backoff_max_ms = 200,
        .notify = on_notify,
    };
    struct inbox_client *c = NULL;
    char msg[256] = "";
    int rc = inbox_client_new(&cfg, &c, msg, sizeof msg);
    if (rc != 0)
        fail_msg("inbox_client_new: %s: %s", inbox_err_name(rc), msg);
    return c;
}

#define OK(expr)                                                               \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        if (rc_ != 0)                                                          \
            fail_msg("%s: %s (%s)", #expr, inbox_err_name(rc_),                \
                     inbox_client_last_error_message(c));                      \
    } while (0)

static void test_every_operation(void **state)
{
    (void)state;
    struct inbox_client *c = client_make();
    uint64_t seq = 0, v = 0;
    bool dedup = true;
    uint8_t id[INBOX_MSG_ID_BYTES];
    /* The first call waits for inboxd to listen: connection refused is
     * retried until the deadline. */
    OK(inbox_enqueue(c, "alice", 5, NULL, 0, "hello", 5, &seq, &dedup, id,
                     20000));
    assert_int_equal(seq, 1);
    assert_false(dedup);
    assert_int_equal(inbox_client_shard_count(c), 8);
    /* The same msg id again: the first seq, flagged dedup. */
    OK(inbox_enqueue(c, "alice", 5, id, 0, "hello", 5, &seq, &dedup, NULL,
                     5000));
    assert_int_equal(seq, 1);
    assert_true(dedup);

    struct inbox_client_key alice = {"alice", 5};
    struct inbox_client_key_item item;
    OK(inbox_watch(c, &alice, 1, &item, 5000));
    assert_int_equal(item.status, 0);
    assert_int_equal(item.value, 1);
    OK(inbox_enqueue(c, "alice", 5, NULL, 0, "second", 6, &seq, NULL, NULL,
                     5000));
    assert_int_equal(seq, 2);
    uint64_t end = mono_ms() + 5000;
    while (notified == 0 && mono_ms() < end)
        assert_true(inbox_client_poll(c, 20) >= 0);
    assert_true(notified > 0);

    struct inbox_client_fetch_result *res = NULL;
    OK(inbox_fetch(c, "alice", 5, 0, 10, 0, 0, 0, &res, 5000));
    assert_int_equal(res->count, 2);
    assert_int_equal(res->last_seq, 2);
    assert_int_equal(res->messages[1].seq, 2);
    assert_memory_equal(res->messages[1].payload, "second", 6);
    inbox_fetch_result_free(res);
    OK(inbox_ack(c, "alice", 5, 1, &v, 5000));
    assert_int_equal(v, 1);
    assert_int_equal(inbox_ack(c, "alice", 5, 99, &v, 5000),
                     INBOX_EACK_BEYOND_LAST);
    OK(inbox_seen_set(c, "alice", 5, 12345, &v, 5000));
    assert_int_equal(v, 12345);
    struct inbox_client_key keys[2] = {{"alice", 5}, {"nobody", 6}};
    struct inbox_client_key_item items[2];
    OK(inbox_seen_get(c, keys, 2, 0, items, 5000));
    assert_int_equal(items[0].value, 12345);
    assert_int_equal(items[1].value, 0);
    struct inbox_client_target t[3] = {
        {"alice", 5, NULL}, {"bob", 3, NULL}, {"carol", 5, NULL}};
    struct inbox_client_enqueue_item many[3];
    OK(inbox_enqueue_many(c, t, 3, 0, "group", 5, many, 5000));
    assert_int_equal(many[0].seq, 3);
    assert_int_equal(many[1].seq, 1);
    assert_int_equal(many[2].seq, 1);
    struct inbox_client_status *st = NULL;
    OK(inbox_status(c, 0, &st, 5000));
    assert_int_equal(st->node_id, 1);
    assert_int_equal(st->count, 8);
    inbox_status_free(st);
    OK(inbox_unwatch(c, &alice, 1, &item, 5000));
    inbox_client_free(c);
}

static int pipe_left, pipe_failed, pipe_done_count;
static bool killed;

/* Once a third of the enqueues are answered, with the rest in flight. */
static void maybe_kill(void)
{
    if (killed || pipe_done_count < PIPE_N / 3)
        return;
    killed = true;
    server_stop(SIGKILL); /* answers in flight are lost */
    server_start();
}

static void pipe_done(void *arg, int status, uint64_t seq, bool dedup,
                      const uint8_t *msg_id)
{
    (void)arg;
    (void)seq;
    (void)dedup;
    (void)msg_id;
    pipe_left--;
    pipe_done_count++;
    if (status != 0)
        pipe_failed++;
}

static void test_server_killed_mid_pipeline(void **state)
{
    (void)state;
    struct inbox_client *c = client_make();
    uint64_t seq;
    OK(inbox_enqueue(c, "warmup", 6, NULL, 0, "x", 1, &seq, NULL, NULL, 20000));
    pipe_left = pipe_failed = pipe_done_count = 0;
    killed = false;
    for (int i = 0; i < PIPE_N; i++) {
        char inbox[16];
        int l = snprintf(inbox, sizeof inbox, "r%d", i % INBOXES);
        int rc;
        while ((rc = inbox_client_submit_enqueue(c, inbox, (size_t)l, NULL, 0,
                                                 "x", 1, 20000, NULL,
                                                 pipe_done)) == INBOX_EBUSY) {
            assert_true(inbox_client_poll(c, 10) >= 0);
            maybe_kill();
        }
        assert_int_equal(rc, 0);
        pipe_left++;
    }
    uint64_t end = mono_ms() + 30000;
    while (pipe_left > 0 && mono_ms() < end) {
        assert_true(inbox_client_poll(c, 50) >= 0);
        maybe_kill();
    }
    assert_true(killed);
    assert_int_equal(pipe_left, 0);
    assert_int_equal(pipe_failed, 0);
    /* Every message stored exactly once. */
    uint64_t stored = 0;
    for (int i = 0; i < INBOXES; i++) {
        char inbox[16];
        int l = snprintf(inbox, sizeof inbox, "r%d", i);
        struct inbox_client_fetch_result *res = NULL;
        OK(inbox_fetch(c, inbox, (size_t)l, 0, 1, 0, 0, 0, &res, 5000));
        stored += res->last_seq;
        inbox_fetch_result_free(res);
    }
    assert_int_equal(stored, PIPE_N);
    struct inbox_client_stats s;
    inbox_client_stats_get(c, &s);
    assert_true(s.connects >= 2);
    assert_true(s.retries > 0); /* calls were in flight at the kill */
    inbox_client_free(c);
}

int main(void)
{
    /* No SIGPIPE handler on purpose: the library must not raise it when
     * the server dies under it (it sends with MSG_NOSIGNAL). */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_operation),
        cmocka_unit_test(test_server_killed_mid_pipeline),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
