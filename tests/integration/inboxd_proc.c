/*
 * inboxd_proc.c — start, probe, stop and kill real inboxd processes for the
 * integration tests (see inboxd_proc.h for the contract).
 */
#include "inboxd_proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_ATTEMPTS_MAX 5u
#define READY_TIMEOUT_MS 30000u
#define PROBE_TIMEOUT_MS 3000u
#define LIVE_MAX 16u

static const char *binary;
static pid_t live[LIVE_MAX]; /* every child not yet reaped */
static bool atexit_set;

uint64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void proc_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the table of live children ------------------------------------------ */

static void kill_live(void)
{
    for (size_t i = 0; i < LIVE_MAX; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    }
}

static void live_add(pid_t pid)
{
    if (!atexit_set) {
        atexit(kill_live);
        atexit_set = true;
    }
    for (size_t i = 0; i < LIVE_MAX; i++) {
        if (live[i] == 0) {
            live[i] = pid;
            return;
        }
    }
    /* Table full: a test bug; better to kill than to leak. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fprintf(stderr, "inboxd_proc: more than %u live children\n", LIVE_MAX);
    abort();
}

static void live_remove(pid_t pid)
{
    for (size_t i = 0; i < LIVE_MAX; i++)
        if (live[i] == pid)
            live[i] = 0;
}

/* ---- paths and files --------------------------------------------------- */

void proc_set_binary(const char *path)
{
    binary = path;
}

static int join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int proc_init(struct inboxd_proc *p, const char *name)
{
    memset(p, 0, sizeof *p);
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    int n = snprintf(p->root, sizeof p->root, "%s/test_inboxd-%s-XXXXXX", tmp,
                     name);
    if (n < 0 || (size_t)n >= sizeof p->root)
        return -ENAMETOOLONG;
    if (mkdtemp(p->root) == NULL)
        return -errno;
    if (join(p->data, sizeof p->data, p->root, "data") != 0 ||
        join(p->log, sizeof p->log, p->root, "inboxd.log") != 0 ||
        join(p->ca, sizeof p->ca, p->data, "tls/ca.crt") != 0 ||
        join(p->ca_key, sizeof p->ca_key, p->data, "tls/ca.key") != 0 ||
        join(p->admin_crt, sizeof p->admin_crt, p->data, "tls/admin.crt") !=
            0 ||
        join(p->admin_key, sizeof p->admin_key, p->data, "tls/admin.key") != 0)
        return -ENAMETOOLONG;
    return 0;
}

void proc_add_args(struct inboxd_proc *p, const char *const *args, size_t count)
{
    for (size_t i = 0; i < count && p->args_count < PROC_ARGS_MAX; i++)
        p->args[p->args_count++] = args[i];
}

/* Removes a directory tree (no symlink games: it is our own temp dir). */
static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[PROC_PATH_BYTES * 2];
        if (join(sub, sizeof sub, path, e->d_name) != 0)
            continue;
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

void proc_log_tail(const struct inboxd_proc *p, unsigned lines)
{
    FILE *f = fopen(p->log, "r");
    if (f == NULL)
        return;
    /* Keep the last `lines` lines in a ring of offsets. */
    long offs[64];
    if (lines > 64)
        lines = 64;
    unsigned count = 0;
    long at = 0;
    int ch, prev = '\n';
    while ((ch = fgetc(f)) != EOF) {
        if (prev == '\n')
            offs[count++ % lines] = at;
        prev = ch;
        at++;
    }
    long from = count <= lines ? (count ? offs[0] : 0) : offs[count % lines];
    fseek(f, from, SEEK_SET);
    fprintf(stderr, "---- tail of %s ----\n", p->log);
    while ((ch = fgetc(f)) != EOF)
        fputc(ch, stderr);
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

bool proc_log_contains(const struct inboxd_proc *p, const char *needle)
{
    FILE *f = fopen(p->log, "r");
    if (f == NULL)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* ---- ports ------------------------------------------------------------- */

/* A port the kernel just handed out for 127.0.0.1 (bound, then closed: it
 * may be taken again before inboxd binds it, which proc_start survives). */
uint16_t proc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool tcp_accepts(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ---- processes --------------------------------------------------------- */

/* Reaps the child if it exited. Returns true (and *status) if it did. */
static bool reaped(struct inboxd_proc *p, int *status)
{
    int st = 0;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r != p->pid)
        return false;
    live_remove(p->pid);
    p->pid = 0;
    if (status != NULL)
        *status = st;
    return true;
}

static int exit_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return 255;
}

static int spawn(struct inboxd_proc *p)
{
    char listen_arg[48];
    snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%u", (unsigned)p->port);
    const char *argv[PROC_ARGS_MAX + 24];
    size_t n = 0;
    argv[n++] = binary;
    argv[n++] = "--node-data-dir";
    argv[n++] = p->data;
    argv[n++] = "--node-listen";
    argv[n++] = listen_arg;
    argv[n++] = "--node-metrics";
    argv[n++] = p->metrics;
    if (p->tls_cert[0] != '\0') {
        argv[n++] = "--tls-ca";
        argv[n++] = p->ca;
        argv[n++] = "--tls-cert";
        argv[n++] = p->tls_cert;
        argv[n++] = "--tls-key";
        argv[n++] = p->tls_key;
    }
    for (size_t i = 0; i < p->args_count; i++)
        argv[n++] = p->args[i];
    argv[n] = NULL;
    int logfd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        return -errno;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(logfd);
        return -e;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(logfd, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execv(binary, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(logfd);
    p->pid = pid;
    live_add(pid);
    return 0;
}

/* A client gets through TLS, HELLO and ROUTE. */
static bool probe(const struct inboxd_proc *p)
{
    struct inbox_client *c = proc_client(p, NULL, NULL, NULL, NULL, NULL);
    if (c == NULL)
        return false;
    uint64_t epoch = 0;
    int rc = inbox_route(c, &epoch, PROBE_TIMEOUT_MS);
    inbox_client_free(c);
    return rc == 0;
}

/* Waits until the node answers. 0 ready; 1 the process exited (maybe the
 * port was taken: retry); -1 timeout (the process is killed). */
static int wait_ready(struct inboxd_proc *p)
{
    uint64_t end = proc_now_ms() + READY_TIMEOUT_MS;
    while (proc_now_ms() < end) {
        int st = 0;
        if (reaped(p, &st)) {
            fprintf(stderr, "inboxd_proc: inboxd on port %u exited with %d\n",
                    (unsigned)p->port, exit_code(st));
            return 1;
        }
        if (tcp_accepts(p->port)) {
            if (probe(p))
                return 0;
            /* Someone else's listener, or not ready: look again. */
        }
        proc_sleep_ms(20);
    }
    fprintf(stderr, "inboxd_proc: inboxd on port %u not ready after %u ms\n",
            (unsigned)p->port, READY_TIMEOUT_MS);
    proc_kill9(p);
    return -1;
}

int proc_start(struct inboxd_proc *p)
{
    if (binary == NULL || p->pid != 0)
        return -EINVAL;
    for (unsigned attempt = 0; attempt < START_ATTEMPTS_MAX; attempt++) {
        p->port = proc_free_port();
        if (p->port == 0)
            continue;
        snprintf(p->seed, sizeof p->seed, "127.0.0.1:%u", (unsigned)p->port);
        int rc = spawn(p);
        if (rc != 0) {
            fprintf(stderr, "inboxd_proc: spawn: %s\n", strerror(-rc));
            return rc;
        }
        rc = wait_ready(p);
        if (rc == 0)
            return 0;
        if (rc < 0 || !proc_log_contains(p, "cannot listen"))
            break; /* not a port race: do not hide it */
    }
    proc_log_tail(p, 30);
    return -EIO;
}

int proc_start_at(struct inboxd_proc *p, uint16_t port)
{
    if (port == 0)
        return proc_start(p);
    if (binary == NULL || p->pid != 0)
        return -EINVAL;
    p->port = port;
    snprintf(p->seed, sizeof p->seed, "127.0.0.1:%u", (unsigned)p->port);
    for (unsigned attempt = 0; attempt < START_ATTEMPTS_MAX; attempt++) {
        if (attempt > 0)
            proc_sleep_ms(200u * attempt);
        int rc = spawn(p);
        if (rc != 0) {
            fprintf(stderr, "inboxd_proc: spawn: %s\n", strerror(-rc));
            return rc;
        }
        rc = wait_ready(p);
        if (rc == 0)
            return 0;
        if (rc < 0 || !proc_log_contains(p, "cannot listen"))
            break; /* not a port still held: do not hide it */
    }
    proc_log_tail(p, 30);
    return -EIO;
}

static int copy_path(char *out, const char *in)
{
    size_t len = strlen(in);
    if (len >= PROC_PATH_BYTES)
        return -ENAMETOOLONG;
    memcpy(out, in, len + 1);
    return 0;
}

int proc_set_tls(struct inboxd_proc *p, const char *ca, const char *node_crt,
                 const char *node_key, const char *admin_crt,
                 const char *admin_key)
{
    if (copy_path(p->ca, ca) != 0 || copy_path(p->tls_cert, node_crt) != 0 ||
        copy_path(p->tls_key, node_key) != 0 ||
        copy_path(p->admin_crt, admin_crt) != 0 ||
        copy_path(p->admin_key, admin_key) != 0) {
        p->tls_cert[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

void proc_kill9(struct inboxd_proc *p)
{
    if (p->pid == 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0); /* SIGKILL cannot be caught: this returns */
    live_remove(p->pid);
    p->pid = 0;
}

void proc_term(struct inboxd_proc *p)
{
    if (p->pid != 0)
        kill(p->pid, SIGTERM);
}

int proc_wait(struct inboxd_proc *p, unsigned timeout_ms)
{
    if (p->pid == 0)
        return -1;
    uint64_t end = proc_now_ms() + timeout_ms;
    int st = 0;
    while (proc_now_ms() < end) {
        if (reaped(p, &st))
            return exit_code(st);
        proc_sleep_ms(10);
    }
    fprintf(stderr, "inboxd_proc: no exit after %u ms; SIGKILL\n", timeout_ms);
    proc_kill9(p);
    return -1;
}

int proc_stop(struct inboxd_proc *p, unsigned timeout_ms)
{
    proc_term(p);
    return proc_wait(p, timeout_ms);
}

void proc_destroy(struct inboxd_proc *p, bool keep)
{
    proc_kill9(p);
    if (p->root[0] == '\0')
        return;
    if (keep) {
        proc_log_tail(p, 40);
        fprintf(stderr, "inboxd_proc: kept %s for inspection\n", p->root);
        return;
    }
    remove_tree(p->root);
    p->root[0] = '\0';
}

struct inbox_client *proc_client(const struct inboxd_proc *p, const char *crt,
                                 const char *key, const char *ca,
                                 inbox_client_notify_fn *notify,
                                 void *notify_arg)
{
    const char *seeds[] = {p->seed};
    struct inbox_client_config cfg = {
        .seeds = seeds,
        .seeds_count = 1,
        .ca_path = ca ? ca : p->ca,
        .cert_path = crt ? crt : p->admin_crt,
        .key_path = key ? key : p->admin_key,
        .client_name = "test_inboxd",
        .connect_timeout_ms = 5000,
        .notify = notify,
        .notify_arg = notify_arg,
    };
    struct inbox_client *c = NULL;
    char why[512] = "";
    int rc = inbox_client_new(&cfg, &c, why, sizeof why);
    if (rc != 0) {
        fprintf(stderr, "inboxd_proc: inbox_client_new: %s: %s\n",
                inbox_err_name(rc), why);
        return NULL;
    }
    return c;
}
