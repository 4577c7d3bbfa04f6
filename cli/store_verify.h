/*
 * store_verify.h — `inboxctl store verify`'s access to a stopped node's
 * store (engine/store.h), kept out of inboxctl.c, whose command table has
 * its own `struct command` (engine/command.h has another).
 */
#ifndef INBOX_CLI_STORE_VERIFY_H
#define INBOX_CLI_STORE_VERIFY_H

#include <stdint.h>

/* One shard with state, as of the store's last checkpoint. */
struct verify_shard {
    uint32_t shard;
    uint64_t applied_index;
    uint64_t applied_term;
    uint64_t applied_commands;
    uint64_t state_hash; /* store_state_hash */
};

/* Called once per shard that has any state, in shard order; a nonzero
 * return stops the walk and is returned. */
typedef int (*verify_shard_fn)(void *arg, const struct verify_shard *v);

/* Open the store at store_dir read-only (store_options.read_only: nothing
 * is written, and a store a running node holds is INBOX_ELOCKED) and walk
 * its shards. INBOX_ENOTFOUND when store_dir holds no store; other
 * inbox errors (INBOX_EFORMAT, INBOX_ECORRUPT, negative errno) as
 * store_open and the reads return them. */
int store_verify_walk(const char *store_dir, void *arg, verify_shard_fn fn);

#endif /* INBOX_CLI_STORE_VERIFY_H */
