/*
 * store_verify.c — walk a stopped node's store read-only for
 * `inboxctl store verify` (store_verify.h).
 */
#include "store_verify.h"

#include "inbox/error.h"
#include "store.h"

int store_verify_walk(const char *store_dir, void *arg, verify_shard_fn fn)
{
    struct store_options o;
    store_options_init(&o);
    o.path = store_dir;
    o.read_only = 1;
    struct store *s;
    int rc = store_open(&o, &s);
    if (rc != 0)
        return rc;
    uint32_t from = 0, shard = 0;
    while ((rc = store_shard_next(s, from, &shard)) == 0) {
        struct store_shard_info si;
        struct verify_shard v = {.shard = shard};
        if ((rc = store_applied(s, shard, &si)) != 0 ||
            (rc = store_state_hash(s, shard, &v.state_hash)) != 0)
            break;
        v.applied_index = si.applied_index;
        v.applied_term = si.applied_term;
        v.applied_commands = si.applied_commands;
        if ((rc = fn(arg, &v)) != 0 || shard == UINT32_MAX)
            break;
        from = shard + 1u;
    }
    store_close(s);
    return rc == INBOX_ENOTFOUND ? 0 : rc;
}
