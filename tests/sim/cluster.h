/*
 * cluster.h — the deterministic simulator's machinery: Raft nodes over an
 * in-memory log, a simulated network and a simulated clock, all driven from
 * one seed. The `sim` executable adds faults and checks on top; bench_raft
 * drives it with no faults to measure the core's cost.
 *
 * Nothing here reads a clock or a file: a run is a function of its seed.
 */
#ifndef INBOX_SIM_CLUSTER_H
#define INBOX_SIM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define SIM_NODES_MAX 9u
#define SIM_TRACE_EVENTS 96u

/* splitmix64 PRNG: one per cluster, nothing global. */
struct sim_rng {
    uint64_t s;
};
uint64_t sim_rand(struct sim_rng *g);
/* Uniform in [0, n). */
uint64_t sim_below(struct sim_rng *g, uint64_t n);
/* True with probability per_mille / 1000. */
bool sim_chance(struct sim_rng *g, uint32_t per_mille);

struct mem_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};

/* A node's "disk": what survives a crash. */
struct mem_storage {
    struct raft_hard_state hs;
    struct raft_snapshot_meta snap;
    uint8_t *snap_data;
    struct mem_entry *ents; /* ents[k].index == snap.index + 1 + k */
    size_t count;
    size_t cap;
    uint8_t *stage; /* incoming snapshot chunks */
    size_t stage_len;
    /* Graveyard: data of truncated entries, freed at the next advance
     * (raft.h: entry data handed out stays valid until raft_advance). */
    uint8_t **dead;
    size_t dead_count;
    size_t dead_cap;
};

/* The in-memory log, usable alone (unit tests): bind it as a raft_storage,
 * write a ready batch into it (chunk, snapshot, entries, hard state),
 * compact it, release truncated data after raft_advance, free it. */
void sim_storage_bind(struct mem_storage *s, struct raft_storage *out);
void sim_storage_write(struct mem_storage *s, const struct raft_ready *rd);
void sim_storage_compact(struct mem_storage *s, uint64_t at,
                         const struct raft_membership *m, const uint8_t *data,
                         uint32_t len);
void sim_storage_release(struct mem_storage *s);
void sim_storage_free(struct mem_storage *s);

/* The model state machine: a register holding the id of the last write,
 * with the index of that write; snapshots carry it padded to several
 * chunks so chunked transfer is exercised. */
#define SIM_SNAPSHOT_BYTES 40u
struct sim_sm {
    uint64_t applied;
    uint64_t value;       /* write id of the last write applied */
    uint64_t value_index; /* its log index */
    uint64_t writes;      /* writes applied */
    uint64_t digest;      /* hash chain of every applied entry */
    struct raft_membership memb;
};

struct sim_node {
    uint64_t id;
    bool exists; /* has ever been started */
    bool up;
    struct raft *r;
    struct mem_storage st;
    struct sim_sm sm;
    uint32_t tick_period;
    uint64_t next_tick_at;
    uint64_t commit_seen; /* this incarnation */
    uint64_t applied_before_crash;
    uint64_t restart_at;
    enum raft_role role_seen;
    uint64_t term_seen;
};

struct net_msg {
    uint64_t at;
    uint64_t seq; /* tie-break: deterministic order */
    struct raft_msg m;
    void *block; /* entries and data, one allocation */
};

struct sim_event {
    uint64_t t;
    uint32_t kind;
    uint32_t node;
    uint64_t a, b, c, d;
};

/* Fault and workload knobs (per mille unless said otherwise). */
struct sim_faults {
    uint32_t drop;
    uint32_t dup;
    uint32_t long_delay; /* delivered much later: reorders */
    uint32_t delay_min;  /* time units */
    uint32_t delay_max;
    uint32_t partition;       /* per step: start a partition */
    uint32_t heal;            /* per step: heal partitions */
    uint32_t crash;           /* per step: crash a node */
    uint32_t crash_leader;    /* ... choosing the leader, if there is one */
    uint32_t crash_mid_ready; /* per ready: crash between send and persist */
    uint32_t crash_mid_vote;  /* the same, when the ready changes term/vote */
    uint32_t restart_after_min;
    uint32_t restart_after_max;
    uint32_t skew_pct;   /* tick period spread, percent */
    uint32_t alloc_fail; /* per allocation, parts per million */
    uint32_t compact;    /* per step per node: take a snapshot */
};

struct sim_cluster;
/* Hooks the checker installs (NULL: none). */
struct sim_hooks {
    void *ctx;
    void (*persisted)(void *ctx, struct sim_cluster *c, struct sim_node *n,
                      const struct raft_entry *ents, size_t count);
    void (*applied)(void *ctx, struct sim_cluster *c, struct sim_node *n,
                    const struct raft_entry *e);
    void (*snapshot_installed)(void *ctx, struct sim_cluster *c,
                               struct sim_node *n);
    void (*read_done)(void *ctx, struct sim_cluster *c, struct sim_node *n,
                      const struct raft_read_state *rs);
    void (*restarted)(void *ctx, struct sim_cluster *c, struct sim_node *n);
};

struct sim_alloc_stats {
    uint64_t allocs;
    uint64_t frees;
    uint64_t failed;
    uint64_t bytes_live;
};

struct sim_cluster {
    struct sim_rng rng;
    uint64_t seed;
    uint64_t now;
    uint32_t nodes_count; /* ids 1..nodes_count may exist */
    uint32_t initial_voters;
    struct sim_node nodes[SIM_NODES_MAX + 1]; /* index = id */
    struct raft_options base;                 /* options every node uses */
    struct sim_faults f;
    bool blocked[SIM_NODES_MAX + 1][SIM_NODES_MAX + 1];
    struct net_msg *net;
    size_t net_count;
    size_t net_cap;
    uint64_t net_seq;
    struct sim_hooks hooks;
    bool alloc_faults_on;
    struct sim_alloc_stats alloc;
    struct sim_event trace[SIM_TRACE_EVENTS];
    uint64_t trace_count;
    uint64_t entries_applied; /* summed over nodes */
    uint64_t msgs_delivered;
    /* Optional clock (bench only): core_time sums its readings across
     * raft_step/tick/ready/advance calls, core_calls counts the calls. */
    uint64_t (*core_clock)(void);
    uint64_t core_time;
    uint64_t core_calls;
};

enum sim_event_kind {
    EV_DELIVER = 1,
    EV_DROP,
    EV_ROLE,
    EV_PROPOSE,
    EV_CRASH,
    EV_RESTART,
    EV_PARTITION,
    EV_HEAL,
    EV_CONF,
    EV_TRANSFER,
    EV_READ,
    EV_READ_DONE,
    EV_APPLY,
    EV_COMPACT,
    EV_SNAP_INSTALL,
    EV_CRASH_MID_READY,
    EV_NOTE,
};

void sim_trace(struct sim_cluster *c, uint32_t kind, uint64_t node, uint64_t a,
               uint64_t b, uint64_t cc, uint64_t d);
void sim_trace_print(const struct sim_cluster *c, size_t last);

/* Set up a cluster of voters 1..voters, with room for spare ids up to
 * nodes_count (for membership changes). base supplies raft options (ids,
 * storage and allocator are filled in). Returns 0 or an error. */
int sim_cluster_init(struct sim_cluster *c, uint64_t seed, uint32_t voters,
                     uint32_t nodes_count, const struct raft_options *base,
                     const struct sim_faults *f);
void sim_cluster_free(struct sim_cluster *c);

/* Start node id fresh (bootstrap storage) or restart it from its storage. */
int sim_node_start(struct sim_cluster *c, uint64_t id);
void sim_node_crash(struct sim_cluster *c, uint64_t id);

/* Advance simulated time by dt: deliver due messages, tick due nodes,
 * process every node's ready batches. */
void sim_step(struct sim_cluster *c, uint64_t dt);
/* Process ready batches of node n until it has none. */
void sim_node_process(struct sim_cluster *c, struct sim_node *n);
/* Take a snapshot at the node's applied index and compact its log. */
void sim_node_compact(struct sim_cluster *c, struct sim_node *n);

/* The node that believes it leads in the highest term, or NULL. */
struct sim_node *sim_leader(struct sim_cluster *c);

void sim_heal_all(struct sim_cluster *c);

#endif /* INBOX_SIM_CLUSTER_H */
