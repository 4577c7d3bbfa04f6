/*
 * bench_raft.c — throughput and CPU cost of the Raft core.
 *
 * A 3-node cluster on the simulator's machinery (tests/sim/cluster.c) with
 * no faults: messages arrive one time unit after they leave, nothing is
 * dropped, storage is in memory. The leader gets proposals in batches of
 * 1, 16, 64 and 256 entries (16-byte payloads), at most 8 batches in
 * flight. Reported per batch size:
 *   - entries/s: committed entries per second of process CPU time for the
 *     whole cluster (three nodes, network copies, storage) on one thread;
 *   - cluster ns/entry: that CPU time (CLOCK_PROCESS_CPUTIME_ID) per
 *     committed entry;
 *   - core ns/entry: time inside raft_propose/step/tick/ready/advance on
 *     all three nodes per committed entry — the core's own cost. On this
 *     kind of VM a CPU-time clock read is a ~2 us system call, far too
 *     slow to wrap each call, so these spans are timed with the TSC
 *     (calibrated against CLOCK_MONOTONIC, the clock-read overhead
 *     subtracted); single-threaded, they are CPU time unless preempted.
 *
 *   bench_raft [entries-per-run]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static uint64_t tsc(void)
{
    return __rdtsc();
}
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

static uint64_t ns_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double tsc_ns_per_tick = 0;
static double tsc_pair_overhead = 0; /* ticks one (start, stop) costs */

static void tsc_calibrate(void)
{
#if HAVE_TSC
    uint64_t w0 = ns_of(CLOCK_MONOTONIC), t0 = tsc();
    while (ns_of(CLOCK_MONOTONIC) - w0 < 200000000ull)
        ;
    uint64_t w1 = ns_of(CLOCK_MONOTONIC), t1 = tsc();
    tsc_ns_per_tick = (double)(w1 - w0) / (double)(t1 - t0);
    uint64_t sum = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t a = tsc();
        sum += tsc() - a;
    }
    tsc_pair_overhead = (double)sum / 100000.0;
#endif
}

static void machine(void)
{
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    snprintf(model, sizeof model, "%s", p + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        }
        fclose(f);
    }
    printf("machine: nproc=%ld cpu=\"%s\"\n", sysconf(_SC_NPROCESSORS_ONLN),
           model);
#ifdef NDEBUG
    printf("build: NDEBUG (release)\n");
#else
    printf("build: assertions on (debug): figures are not representative\n");
#endif
}

struct result {
    double entries_per_s;
    double cluster_ns;
    double core_ns;
    uint64_t entries;
    uint64_t msgs;
};

static int run(uint32_t batch, uint64_t target, struct result *res)
{
    static struct sim_cluster c;
    struct raft_options o;
    raft_options_default(&o);
    o.msg_entries_max = 256;
    o.inflight_msgs_max = 64;
    o.uncommitted_bytes_max = 64u * INBOX_MIB;
    struct sim_faults f;
    memset(&f, 0, sizeof(f));
    f.delay_min = f.delay_max = 1;
    int rc = sim_cluster_init(&c, 42, 3, 3, &o, &f);
    if (rc != 0)
        return rc;
    struct sim_node *l = NULL;
    for (int i = 0; i < 100000 && !l; i++) {
        sim_step(&c, 1);
        l = sim_leader(&c);
    }
    if (!l)
        return INBOX_ETIMEOUT;
    while (raft_term_at(l->r, raft_commit(l->r)) != raft_term(l->r))
        sim_step(&c, 1);
    uint8_t payload[16];
    memset(payload, 0xab, sizeof payload);
    uint64_t applied0 = l->sm.applied, proposed = l->sm.applied;
    uint64_t msgs0 = c.msgs_delivered;
#if HAVE_TSC
    c.core_clock = tsc;
#endif
    c.core_time = 0;
    c.core_calls = 0;
    uint64_t cpu0 = ns_of(CLOCK_PROCESS_CPUTIME_ID);
    while (l->sm.applied - applied0 < target) {
        if (proposed - l->sm.applied < 8u * batch &&
            proposed - applied0 < target) {
            uint64_t t0 = c.core_clock ? c.core_clock() : 0;
            for (uint32_t i = 0; i < batch; i++) {
                uint64_t idx;
                if (raft_propose(l->r, payload, sizeof payload, &idx) != 0)
                    return INBOX_EINTERNAL;
                proposed = idx;
            }
            if (c.core_clock) {
                c.core_time += c.core_clock() - t0;
                c.core_calls++;
            }
        }
        sim_step(&c, 1);
        if (raft_role(l->r) != RAFT_LEADER)
            return INBOX_EINTERNAL; /* no faults: must not happen */
    }
    uint64_t cpu = ns_of(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    uint64_t n = l->sm.applied - applied0;
    res->entries = n;
    res->entries_per_s = (double)n * 1e9 / (double)cpu;
    res->cluster_ns = (double)cpu / (double)n;
    double core_ticks =
        (double)c.core_time - tsc_pair_overhead * (double)c.core_calls;
    res->core_ns = HAVE_TSC ? core_ticks * tsc_ns_per_tick / (double)n : 0;
    res->msgs = c.msgs_delivered - msgs0;
    sim_cluster_free(&c);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t target = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000;
    machine();
    tsc_calibrate();
    printf("config: 3 voters, in-memory log, no faults, 1-unit message "
           "delay, 16-byte entries, <= 8 batches in flight, "
           "msg_entries_max=256, inflight_msgs_max=64, %llu entries per "
           "run (batch 1: a quarter)\n",
           (unsigned long long)target);
    printf("%6s %12s %17s %14s %11s\n", "batch", "entries/s",
           "cluster ns/entry", "core ns/entry", "msgs/entry");
    static const uint32_t batches[] = {1, 16, 64, 256};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        struct result r;
        uint64_t t = batches[i] == 1 ? target / 4 : target;
        int rc = run(batches[i], t, &r);
        if (rc != 0) {
            printf("batch %u: failed: %s\n", batches[i], inbox_strerror(rc));
            return 1;
        }
        printf("%6u %12.0f %17.1f %14.1f %11.2f\n", batches[i], r.entries_per_s,
               r.cluster_ns, r.core_ns, (double)r.msgs / (double)r.entries);
    }
    return 0;
}
