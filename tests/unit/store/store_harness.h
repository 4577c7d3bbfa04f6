/*
 * store_harness.h — shared fixture for the store tests: a store in a fresh
 * temporary directory, per-shard Raft indexes, and one-call helpers that
 * encode a command, apply it as the next entry and capture its results.
 * Header-only (static functions) so each test binary stays one .c file.
 */
#ifndef INBOX_TEST_STORE_HARNESS_H
#define INBOX_TEST_STORE_HARNESS_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "command.h"
#include "inbox/error.h"
#include "store.h"

#define H_SHARDS 8u

struct h_result {
    int rc;
    uint32_t count;
    struct store_target_result t[INBOX_FANOUT_INBOXES_MAX];
};

struct harness {
    struct store *s;
    struct store_options opt;
    char dir[256];
    uint64_t next_index[H_SHARDS]; /* next Raft index to use per shard */
    uint64_t term;
    struct h_result last;
    unsigned callbacks;
    uint8_t buf[INBOX_COMMAND_BYTES_MAX];
};

static inline void h_capture(void *arg, const struct store_result *r)
{
    struct harness *h = arg;
    h->callbacks++;
    h->last.rc = r->rc;
    h->last.count = r->targets_count;
    for (uint32_t i = 0; i < r->targets_count; i++)
        h->last.t[i] = r->targets[i];
}

static inline void h_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline int h_open(struct harness *h)
{
    h->opt.path = h->dir;
    return store_open(&h->opt, &h->s);
}

/* A new harness with default options (callers may edit h->opt and
 * reopen) on a fresh directory. */
static inline struct harness *h_new_with(const struct store_options *o)
{
    struct harness *h = calloc(1, sizeof *h);
    if (h == NULL)
        abort();
    if (o != NULL)
        h->opt = *o;
    else
        store_options_init(&h->opt);
    h->opt.map_size =
        h->opt.map_size > (1ull << 30) ? (1ull << 30) : h->opt.map_size;
    const char *tmp = getenv("TMPDIR");
    snprintf(h->dir, sizeof h->dir, "%s/inbox-store-XXXXXX",
             tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(h->dir) == NULL)
        abort();
    for (unsigned i = 0; i < H_SHARDS; i++)
        h->next_index[i] = 1;
    h->term = 1;
    if (h_open(h) != 0)
        abort();
    return h;
}

static inline struct harness *h_new(void)
{
    return h_new_with(NULL);
}

static inline void h_free(struct harness *h)
{
    store_close(h->s);
    h_rmdir(h->dir);
    free(h);
}

/* Close without a checkpoint (a crash) and reopen. */
static inline int h_reopen(struct harness *h)
{
    store_close(h->s);
    h->s = NULL;
    return h_open(h);
}

/* Apply buf[0..len) as the next entry of shard; returns store_apply's rc;
 * the entry's results are in h->last. */
static inline int h_apply_bytes(struct harness *h, uint32_t shard,
                                const uint8_t *p, size_t len)
{
    struct store_entry e = {shard, h->next_index[shard]++, h->term, p, len};
    memset(&h->last, 0, sizeof h->last.rc + sizeof h->last.count);
    h->last.rc = 12345;
    return store_apply(h->s, &e, 1, h, h_capture);
}

static inline void h_id(uint8_t id[INBOX_MSG_ID_BYTES], uint64_t n)
{
    memset(id, 0, INBOX_MSG_ID_BYTES);
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(n >> (8 * i));
}

/* Enqueue; returns the target's rc (or a storage rc); *seq gets its seq. */
static inline int h_enqueue(struct harness *h, uint32_t shard,
                            const char *inbox, uint64_t id, uint64_t ts,
                            uint64_t ttl, const void *payload, size_t plen,
                            uint64_t *seq)
{
    uint8_t mid[INBOX_MSG_ID_BYTES];
    size_t len;
    h_id(mid, id);
    int rc = command_encode_enqueue(h->buf, sizeof h->buf, ts,
                                    (const uint8_t *)inbox, strlen(inbox), mid,
                                    ttl, payload, plen, &len);
    if (rc != 0)
        return rc;
    if ((rc = h_apply_bytes(h, shard, h->buf, len)) != 0)
        return rc;
    if (seq != NULL)
        *seq = h->last.t[0].seq;
    return h->last.t[0].rc;
}

static inline int h_ack(struct harness *h, uint32_t shard, const char *inbox,
                        uint64_t ts, uint64_t up_to)
{
    size_t len;
    int rc =
        command_encode_ack(h->buf, sizeof h->buf, ts, (const uint8_t *)inbox,
                           strlen(inbox), up_to, &len);
    if (rc == 0)
        rc = h_apply_bytes(h, shard, h->buf, len);
    return rc != 0 ? rc : h->last.t[0].rc;
}

static inline int h_seen(struct harness *h, uint32_t shard, const char *inbox,
                         uint64_t ts, uint64_t seen)
{
    size_t len;
    int rc = command_encode_seen_set(h->buf, sizeof h->buf, ts,
                                     (const uint8_t *)inbox, strlen(inbox),
                                     seen, &len);
    if (rc == 0)
        rc = h_apply_bytes(h, shard, h->buf, len);
    return rc != 0 ? rc : h->last.t[0].rc;
}

static inline int h_info(struct harness *h, uint32_t shard, const char *inbox,
                         struct store_inbox_info *info)
{
    return store_inbox_info(h->s, shard, (const uint8_t *)inbox, strlen(inbox),
                            info);
}

static inline size_t h_fetch(struct harness *h, uint32_t shard,
                             const char *inbox, uint64_t after,
                             struct store_message *out, size_t max)
{
    size_t n = 0;
    int rc =
        store_fetch_since(h->s, shard, (const uint8_t *)inbox, strlen(inbox),
                          after, (uint32_t)max, INBOX_FETCH_BYTES_MAX, out, &n);
    if (rc != 0)
        abort();
    return n;
}

static inline uint64_t h_hash(struct harness *h, uint32_t shard)
{
    uint64_t x = 0;
    if (store_state_hash(h->s, shard, &x) != 0)
        abort();
    return x;
}

#endif /* INBOX_TEST_STORE_HARNESS_H */
