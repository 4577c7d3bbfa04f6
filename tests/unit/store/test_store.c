/* test_store.c — engine/store semantics, one test per rule of
 * docs/semantics.md, plus durability (replay, crash before checkpoint,
 * sticky failure) and snapshot/restore. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <lmdb.h>

#include "inbox/endian.h"
#include "store_harness.h"

static const char PAY[] = "hello, inbox";

static void test_gapless_seqs_and_fetch(void **state)
{
    (void)state;
    struct harness *h = h_new();
    uint64_t seq;
    for (uint64_t i = 1; i <= 5; i++) {
        assert_int_equal(h_enqueue(h, 1, "alice", 100 + i, 10, 0, PAY, i, &seq),
                         0);
        assert_int_equal(seq, i);
        if (i <= 3) {
            assert_int_equal(
                h_enqueue(h, 1, "bob", 200 + i, 10, 0, PAY, 3, &seq), 0);
            assert_int_equal(seq, i);
        }
    }
    struct store_message m[8];
    assert_int_equal(h_fetch(h, 1, "alice", 0, m, 8), 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(m[i].seq, i + 1);
        assert_int_equal(m[i].payload_len, i + 1);
        assert_memory_equal(m[i].payload, PAY, i + 1);
        assert_int_equal(m[i].enqueue_ts_ms, 10);
        assert_int_equal(m[i].msg_id[0], 101 + i);
    }
    assert_int_equal(h_fetch(h, 1, "alice", 2, m, 8), 3);
    assert_int_equal(m[0].seq, 3);
    assert_int_equal(h_fetch(h, 1, "alice", 2, m, 2), 2);
    assert_int_equal(h_fetch(h, 1, "alice", 5, m, 8), 0);
    assert_int_equal(h_fetch(h, 1, "nobody", 0, m, 8), 0);
    /* Same inbox name in another shard is another inbox. */
    assert_int_equal(h_fetch(h, 2, "alice", 0, m, 8), 0);
    /* max_bytes: stops before exceeding, but always returns one. */
    size_t n;
    assert_int_equal(
        store_fetch_since(h->s, 1, (const uint8_t *)"alice", 5, 0, 8, 3, m, &n),
        0);
    assert_int_equal(n, 2); /* 1 + 2 bytes */
    assert_int_equal(
        store_fetch_since(h->s, 1, (const uint8_t *)"alice", 5, 2, 8, 1, m, &n),
        0);
    assert_int_equal(n, 1); /* seq 3 has 3 bytes > 1: returned anyway */
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "alice", &info), 0);
    assert_int_equal(info.next_seq, 6);
    assert_int_equal(info.pending_count, 5);
    assert_int_equal(info.pending_bytes, 15);
    assert_int_equal(
        store_fetch_since(h->s, 1, (const uint8_t *)"", 0, 0, 8, 8, m, &n),
        INBOX_EKEY_INVALID);
    h_free(h);
}

static void test_dedup_within_window(void **state)
{
    (void)state;
    struct harness *h = h_new();
    uint64_t seq;
    assert_int_equal(h_enqueue(h, 1, "a", 7, 1000, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(h->last.t[0].deduped, 0);
    assert_int_equal(h_enqueue(h, 1, "a", 8, 1001, 0, "y", 1, &seq), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(h_enqueue(h, 1, "a", 7, 1002, 0, "z", 1, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(h->last.t[0].deduped, 1);
    /* Still the first seq after it was acked. */
    assert_int_equal(h_ack(h, 1, "a", 1003, 2), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 7, 1004, 0, "z", 1, &seq), 0);
    assert_int_equal(seq, 1);
    /* Dedup is per inbox. */
    assert_int_equal(h_enqueue(h, 1, "b", 7, 1005, 0, "z", 1, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(h->last.t[0].deduped, 0);
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.next_seq, 3);
    assert_int_equal(info.pending_count, 0);
    h_free(h);
}

/* Stream a snapshot of shard (after a checkpoint) and return the number of
 * records its trailer declares. */
static uint64_t snapshot_records(struct harness *h, uint32_t shard)
{
    struct store_snapshot *snap;
    assert_int_equal(store_snapshot_begin(h->s, shard, &snap), 0);
    const uint8_t *c, *last = NULL;
    size_t len, last_len = 0;
    for (;;) {
        assert_int_equal(store_snapshot_next(snap, &c, &len), 0);
        if (len == 0)
            break;
        last = c;
        last_len = len;
    }
    assert_int_equal(last_len, 64);
    uint64_t n = get_u64le(last + 32);
    store_snapshot_end(snap);
    return n;
}

static void test_dedup_beyond_window_and_pruning(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.dedup_window_ms = 1000;
    o.dedup_prune_records_max = 2;
    struct harness *h = h_new_with(&o);
    uint64_t seq;
    assert_int_equal(h_enqueue(h, 1, "a", 7, 0, 0, "x", 1, &seq), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 7, 999, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(h->last.t[0].deduped, 1);
    /* At window end the record is gone: a new message. */
    assert_int_equal(h_enqueue(h, 1, "a", 7, 1000, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(h->last.t[0].deduped, 0);
    assert_int_equal(h_enqueue(h, 1, "a", 7, 1500, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 2);
    /* Pruning: 10 more ids, then every message acked; after the window,
     * each entry prunes at most 2 records. */
    for (uint64_t i = 0; i < 10; i++)
        assert_int_equal(h_enqueue(h, 1, "a", 100 + i, 1600, 0, "x", 1, NULL),
                         0);
    assert_int_equal(h_ack(h, 1, "a", 1600, 12), 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    /* shard + inbox + 11 dedup + 11 dedup_exp */
    assert_int_equal(snapshot_records(h, 1), 24);
    assert_int_equal(h_seen(h, 1, "a", 2600, 1), 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    assert_int_equal(snapshot_records(h, 1), 20); /* 2 pruned */
    for (int i = 0; i < 5; i++)
        assert_int_equal(h_seen(h, 1, "a", 2600, 1), 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    assert_int_equal(snapshot_records(h, 1), 2);
    h_free(h);
}

static void test_ack_idempotent_deletes_and_beyond_last(void **state)
{
    (void)state;
    struct harness *h = h_new();
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(h_enqueue(h, 1, "a", i, 10, 0, "abcd", 4, NULL), 0);
    assert_int_equal(h_ack(h, 1, "a", 11, 3), 0);
    struct store_message m[8];
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 2);
    assert_int_equal(m[0].seq, 4);
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 3);
    assert_int_equal(info.pending_count, 2);
    assert_int_equal(info.pending_bytes, 8);
    /* Idempotent: the same or a lower ack changes nothing. */
    assert_int_equal(h_ack(h, 1, "a", 12, 3), 0);
    assert_int_equal(h_ack(h, 1, "a", 12, 1), 0);
    assert_int_equal(h_ack(h, 1, "a", 12, 0), 0);
    struct store_inbox_info info2;
    assert_int_equal(h_info(h, 1, "a", &info2), 0);
    assert_memory_equal(&info, &info2, sizeof info);
    /* Beyond the last seq: a clear error, nothing deleted. */
    assert_int_equal(h_ack(h, 1, "a", 13, 6), INBOX_EACK_BEYOND_LAST);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 2);
    assert_int_equal(h_ack(h, 1, "nobody", 13, 1), INBOX_EACK_BEYOND_LAST);
    assert_int_equal(h_ack(h, 1, "nobody", 13, 0), 0);
    /* Ack everything: the messages are deleted, the seqs never reused. */
    assert_int_equal(h_ack(h, 1, "a", 14, 5), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 0);
    uint64_t seq;
    assert_int_equal(h_enqueue(h, 1, "a", 99, 15, 0, "z", 1, &seq), 0);
    assert_int_equal(seq, 6);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 1);
    assert_int_equal(m[0].seq, 6);
    h_free(h);
}

static void test_last_seen_forward_only(void **state)
{
    (void)state;
    struct harness *h = h_new();
    assert_int_equal(h_seen(h, 1, "a", 1, 100), 0);
    assert_int_equal(h_seen(h, 1, "a", 2, 50), 0);
    assert_int_equal(h_seen(h, 2, "b", 3, 7), 0);
    struct store_inbox_ref refs[3] = {
        {1, (const uint8_t *)"a", 1},
        {2, (const uint8_t *)"b", 1},
        {1, (const uint8_t *)"zz", 2},
    };
    uint64_t out[3];
    assert_int_equal(store_seen_get(h->s, refs, 3, out), 0);
    assert_int_equal(out[0], 100);
    assert_int_equal(out[1], 7);
    assert_int_equal(out[2], 0);
    assert_int_equal(h_seen(h, 1, "a", 4, 200), 0);
    assert_int_equal(store_seen_get(h->s, refs, 1, out), 0);
    assert_int_equal(out[0], 200);
    /* A seen-set does not create messages. */
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.next_seq, 1);
    assert_int_equal(info.last_seen_ms, 200);
    assert_int_equal(
        store_seen_get(h->s, refs, INBOX_SEEN_GET_INBOXES_MAX + 1, out),
        INBOX_ETOO_MANY_INBOXES);
    h_free(h);
}

static void test_ttl_expiry_front_in_order(void **state)
{
    (void)state;
    struct harness *h = h_new();
    struct store_message m[8];
    struct store_inbox_info info;
    assert_int_equal(h_enqueue(h, 1, "a", 1, 0, 1000, "1", 1, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 2, 0, 3000, "2", 1, NULL), 0);
    /* Shorter TTL behind a longer one waits for it (deadline 3000). */
    assert_int_equal(h_enqueue(h, 1, "a", 3, 100, 500, "3", 1, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 4, 100, 0, "4", 1, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 5, 100, 10, "5", 1, NULL), 0);
    /* Time moves with entries of any inbox of the shard. */
    assert_int_equal(h_seen(h, 1, "other", 999, 1), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 5);
    assert_int_equal(h_seen(h, 1, "other", 1000, 1), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 4);
    assert_int_equal(m[0].seq, 2);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 1); /* swept like an implicit ack */
    assert_int_equal(h_seen(h, 1, "other", 3000, 1), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 2);
    assert_int_equal(m[0].seq, 4);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 3);
    assert_int_equal(info.pending_count, 2);
    /* 4 never expires, and neither does 5 behind it. */
    assert_int_equal(h_seen(h, 1, "other", 1000000, 1), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 2);
    /* Once the inbox is empty, a new message's own TTL applies. */
    assert_int_equal(h_ack(h, 1, "a", 1000000, 5), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 6, 1000000, 100, "6", 1, NULL), 0);
    assert_int_equal(h_seen(h, 1, "other", 1000100, 1), 0);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 0);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 6);
    assert_int_equal(info.pending_count, 0);
    /* Expiry is per shard clock: shard 2 has not seen that time. */
    assert_int_equal(h_enqueue(h, 2, "a", 1, 0, 10, "x", 1, NULL), 0);
    assert_int_equal(h_fetch(h, 2, "a", 0, m, 8), 1);
    h_free(h);
}

static void test_ttl_reads_hide_unswept(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.expiry_sweep_messages_max = 1;
    struct harness *h = h_new_with(&o);
    struct store_message m[16];
    struct store_inbox_info info;
    for (uint64_t i = 1; i <= 6; i++)
        assert_int_equal(h_enqueue(h, 1, "a", i, 0, 10, "x", 1, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 7, 0, 20, "x", 1, NULL), 0);
    /* One entry at t=10 sweeps one message; fetch hides all six. */
    assert_int_equal(h_seen(h, 1, "a", 10, 1), 0);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 1);
    assert_int_equal(info.pending_count, 6);
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 16), 1);
    assert_int_equal(m[0].seq, 7);
    assert_int_equal(h_fetch(h, 1, "a", 3, m, 16), 1);
    /* Acking hidden messages is allowed; they are simply deleted. */
    assert_int_equal(h_ack(h, 1, "a", 10, 4), 0);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 4); /* the entry's sweep ran first */
    for (int i = 0; i < 3; i++)
        assert_int_equal(h_seen(h, 1, "a", 10, 1), 0);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.acked_seq, 6);
    assert_int_equal(info.pending_count, 1);
    h_free(h);
}

static void test_bound_pending_messages(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.pending_messages_max = 3;
    struct harness *h = h_new_with(&o);
    uint64_t seq;
    for (uint64_t i = 1; i <= 3; i++)
        assert_int_equal(h_enqueue(h, 1, "a", i, 0, 0, "x", 1, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 4, 0, 0, "x", 1, &seq),
                     INBOX_EINBOX_FULL_MESSAGES);
    assert_int_equal(seq, 0);
    /* A rejected entry still advances the applied index. */
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 1, &si), 0);
    assert_int_equal(si.applied_index, 4);
    /* A dedup hit answers even when full. */
    assert_int_equal(h_enqueue(h, 1, "a", 2, 0, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(h_ack(h, 1, "a", 0, 1), 0);
    /* The rejected id was not recorded: its retry gets the next seq. */
    assert_int_equal(h_enqueue(h, 1, "a", 4, 0, 0, "x", 1, &seq), 0);
    assert_int_equal(seq, 4);
    h_free(h);
}

static void test_bound_pending_bytes(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.pending_bytes_max = 250;
    struct harness *h = h_new_with(&o);
    static const uint8_t big[100];
    assert_int_equal(h_enqueue(h, 1, "a", 1, 0, 0, big, 100, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 2, 0, 0, big, 100, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "a", 3, 0, 0, big, 100, NULL),
                     INBOX_EINBOX_FULL_BYTES);
    assert_int_equal(h_enqueue(h, 1, "a", 4, 0, 0, big, 50, NULL), 0);
    assert_int_equal(h_enqueue(h, 1, "b", 5, 0, 0, big, 100, NULL), 0);
    h_free(h);
}

static void test_bound_payload_size(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.payload_bytes_max = 50;
    struct harness *h = h_new_with(&o);
    static const uint8_t big[100];
    assert_int_equal(h_enqueue(h, 1, "a", 1, 0, 0, big, 51, NULL),
                     INBOX_EPAYLOAD_TOO_LARGE);
    assert_int_equal(h_enqueue(h, 1, "a", 2, 0, 0, big, 50, NULL), 0);
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.next_seq, 2);
    h_free(h);
}

static void test_enqueue_many_per_inbox_results(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.pending_messages_max = 1;
    struct harness *h = h_new_with(&o);
    assert_int_equal(h_enqueue(h, 1, "full", 99, 0, 0, "x", 1, NULL), 0);
    uint8_t ids[3][INBOX_MSG_ID_BYTES];
    const char *names[3] = {"g1", "full", "g2"};
    struct command_target t[3];
    for (int i = 0; i < 3; i++) {
        h_id(ids[i], 500); /* one msg id for every inbox */
        t[i] = (struct command_target){(const uint8_t *)names[i], ids[i],
                                       (uint16_t)strlen(names[i])};
    }
    size_t len;
    static uint8_t many[1024];
    assert_int_equal(command_encode_enqueue_many(many, sizeof many, 5, 0, "grp",
                                                 3, t, 3, &len),
                     0);
    assert_int_equal(h_apply_bytes(h, 1, many, len), 0);
    assert_int_equal(h->last.rc, 0);
    assert_int_equal(h->last.count, 3);
    assert_int_equal(h->last.t[0].rc, 0);
    assert_int_equal(h->last.t[0].seq, 1);
    assert_int_equal(h->last.t[1].rc, INBOX_EINBOX_FULL_MESSAGES);
    assert_int_equal(h->last.t[2].seq, 1);
    /* Retried after "full" drained: dedup for two, new for one. */
    assert_int_equal(h_ack(h, 1, "full", 6, 1), 0);
    assert_int_equal(h_apply_bytes(h, 1, many, len), 0);
    assert_int_equal(h->last.t[0].deduped, 1);
    assert_int_equal(h->last.t[1].rc, 0);
    assert_int_equal(h->last.t[1].deduped, 0);
    assert_int_equal(h->last.t[1].seq, 2);
    assert_int_equal(h->last.t[2].deduped, 1);
    h_free(h);
}

static void test_bad_and_noop_entries_advance_index(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static const uint8_t junk[] = {9, 9, 9};
    assert_int_equal(h_apply_bytes(h, 3, junk, sizeof junk), 0);
    assert_int_equal(h->last.rc, INBOX_EBAD_COMMAND);
    assert_int_equal(h->last.count, 0);
    assert_int_equal(h_apply_bytes(h, 3, NULL, 0), 0);
    assert_int_equal(h->last.rc, 0);
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 3, &si), 0);
    assert_int_equal(si.applied_index, 2);
    assert_int_equal(h->callbacks, 2);
    h_free(h);
}

/* Encoded entries of a small workload, for replay tests. */
struct workload {
    size_t n;
    struct store_entry e[40];
    uint8_t bytes[40][256];
};

static void make_workload(struct workload *w, uint32_t shard)
{
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < 40; i++) {
        uint8_t id[INBOX_MSG_ID_BYTES];
        char inbox[8];
        size_t len;
        snprintf(inbox, sizeof inbox, "u%zu", i % 4);
        h_id(id, i % 30); /* some retries */
        uint64_t ts = 1000 + i * 10;
        int rc;
        if (i % 7 == 6)
            rc = command_encode_ack(w->bytes[i], 256, ts, (uint8_t *)inbox,
                                    strlen(inbox), i / 8, &len);
        else if (i % 5 == 4)
            rc = command_encode_seen_set(w->bytes[i], 256, ts, (uint8_t *)inbox,
                                         strlen(inbox), ts, &len);
        else
            rc = command_encode_enqueue(w->bytes[i], 256, ts, (uint8_t *)inbox,
                                        strlen(inbox), id, i % 3 ? 0 : 150,
                                        "payload", 7, &len);
        assert_int_equal(rc, 0);
        w->e[i] = (struct store_entry){shard, i + 1, 1, w->bytes[i], len};
    }
    w->n = 40;
}

static void count_cb(void *arg, const struct store_result *r)
{
    (void)r;
    (*(unsigned *)arg)++;
}

static void test_replay_is_idempotent(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static struct workload w;
    make_workload(&w, 1);
    unsigned calls = 0;
    assert_int_equal(store_apply(h->s, w.e, 30, &calls, count_cb), 0);
    assert_int_equal(calls, 30);
    uint64_t h30 = h_hash(h, 1);
    /* The same entries again: all skipped. */
    assert_int_equal(store_apply(h->s, w.e, 30, &calls, count_cb), 0);
    assert_int_equal(calls, 30);
    assert_true(h_hash(h, 1) == h30);
    /* An overlapping batch applies only what is new. */
    assert_int_equal(store_apply(h->s, w.e + 20, 20, &calls, count_cb), 0);
    assert_int_equal(calls, 40);
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 1, &si), 0);
    assert_int_equal(si.applied_index, 40);
    /* Same as applying each entry exactly once on a fresh store. */
    struct harness *g = h_new();
    for (size_t i = 0; i < w.n; i++)
        assert_int_equal(store_apply(g->s, &w.e[i], 1, NULL, NULL), 0);
    assert_true(h_hash(h, 1) == h_hash(g, 1));
    h_free(g);
    h_free(h);
}

/* One store_apply call whose entries interleave many shards, including
 * shards that share a slot of the store's per-call shard table (1, 1025 and
 * 2049 all map to slot 1), gives every shard the same applied index and
 * state as applying each shard's entries on its own. */
static void test_mixed_shard_batch(void **state)
{
    (void)state;
    static const uint32_t shards[] = {1, 1025, 2049, 7, 1, 3000, 1025, 7};
    enum { ROUNDS = 20, N = ROUNDS * 8 };
    static uint8_t bufs[N][256];
    static struct store_entry batch[N];
    uint64_t next[4096] = {0};
    uint8_t mid[INBOX_MSG_ID_BYTES];
    for (size_t i = 0; i < N; i++) {
        uint32_t sh = shards[i % 8];
        char inbox[32];
        snprintf(inbox, sizeof inbox, "u%zu", i % 5);
        h_id(mid, i + 1);
        size_t len = 0;
        assert_int_equal(
            command_encode_enqueue(bufs[i], sizeof bufs[i], 1000 + i,
                                   (const uint8_t *)inbox, strlen(inbox), mid,
                                   0, "x", 1, &len),
            0);
        batch[i] = (struct store_entry){sh, ++next[sh], 1, bufs[i], len};
    }
    struct harness *h = h_new(), *g = h_new();
    assert_int_equal(store_apply(h->s, batch, N, NULL, NULL), 0);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(store_apply(g->s, &batch[i], 1, NULL, NULL), 0);
    static const uint32_t distinct[] = {1, 1025, 2049, 7, 3000};
    for (size_t k = 0; k < 5; k++) {
        struct store_shard_info a, b;
        assert_int_equal(store_applied(h->s, distinct[k], &a), 0);
        assert_int_equal(store_applied(g->s, distinct[k], &b), 0);
        assert_true(a.applied_index == next[distinct[k]]);
        assert_true(a.applied_index == b.applied_index);
        assert_true(a.now_ms == b.now_ms);
        assert_true(h_hash(h, distinct[k]) == h_hash(g, distinct[k]));
    }
    /* And it survives a checkpoint and a reopen. */
    assert_int_equal(store_checkpoint(h->s), 0);
    assert_int_equal(h_reopen(h), 0);
    struct store_shard_info a;
    assert_int_equal(store_applied(h->s, 1025, &a), 0);
    assert_true(a.applied_index == next[1025]);
    h_free(g);
    h_free(h);
}

static void test_crash_before_checkpoint(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static struct workload w;
    make_workload(&w, 2);
    uint64_t durable;
    assert_int_equal(store_apply(h->s, w.e, 15, NULL, NULL), 0);
    assert_int_equal(store_durable_index(h->s, 2, &durable), 0);
    assert_int_equal(durable, 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    assert_int_equal(store_durable_index(h->s, 2, &durable), 0);
    assert_int_equal(durable, 15);
    assert_int_equal(store_apply(h->s, w.e + 15, 25, NULL, NULL), 0);
    assert_int_equal(store_durable_index(h->s, 2, &durable), 0);
    assert_int_equal(durable, 15); /* applied but not yet durable */
    uint64_t before = h_hash(h, 2);
    assert_int_equal(h_reopen(h), 0); /* no checkpoint: a crash */
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 2, &si), 0);
    assert_int_equal(si.applied_index, 15);
    assert_true(h_hash(h, 2) != before);
    /* Replay from the WAL: everything, as a restarting server would. */
    assert_int_equal(store_apply(h->s, w.e, w.n, NULL, NULL), 0);
    assert_true(h_hash(h, 2) == before);
    h_free(h);
}

static void test_map_full_is_sticky(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.map_size = 1u << 20;
    struct harness *h = h_new_with(&o);
    static uint8_t big[60000];
    int rc = 0;
    uint64_t i;
    for (i = 1; i < 100 && rc == 0; i++) {
        rc = h_enqueue(h, 1, "a", i, 0, 0, big, sizeof big, NULL);
        if (i == 3)
            assert_int_equal(store_checkpoint(h->s), 0);
    }
    assert_int_equal(rc, INBOX_EFULL);
    assert_int_equal(h_enqueue(h, 1, "a", i, 0, 0, "x", 1, NULL),
                     INBOX_EFAILED);
    struct store_inbox_info info;
    assert_int_equal(h_info(h, 1, "a", &info), INBOX_EFAILED);
    assert_int_equal(store_checkpoint(h->s), INBOX_EFAILED);
    assert_int_equal(h_reopen(h), 0);
    assert_int_equal(h_info(h, 1, "a", &info), 0);
    assert_int_equal(info.next_seq, 4);
    h_free(h);
}

/* A checkpoint whose writes fail (the file may not grow: RLIMIT_FSIZE makes
 * pwrite fail with EFBIG) is reported, and the store is then failed until
 * reopened, at its last good checkpoint. */
static void test_failed_checkpoint_is_sticky(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static uint8_t big[8000];
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(h_enqueue(h, 1, "a", i, 0, 0, big, sizeof big, NULL),
                         0);
    assert_int_equal(store_checkpoint(h->s), 0);
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", h->dir);
    assert_int_equal(stat(path, &st), 0);
    for (uint64_t i = 6; i <= 40; i++)
        assert_int_equal(h_enqueue(h, 1, "a", i, 0, 0, big, sizeof big, NULL),
                         0);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = store_checkpoint(h->s);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_int_equal(rc, -EFBIG);
    assert_int_equal(h_enqueue(h, 1, "a", 41, 0, 0, "x", 1, NULL),
                     INBOX_EFAILED);
    assert_int_equal(store_checkpoint(h->s), INBOX_EFAILED);
    uint64_t d;
    assert_int_equal(store_durable_index(h->s, 1, &d), INBOX_EFAILED);
    assert_int_equal(h_reopen(h), 0);
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 1, &si), 0);
    assert_int_equal(si.applied_index, 5);
    struct store_message m[8];
    assert_int_equal(h_fetch(h, 1, "a", 0, m, 8), 5);
    h_free(h);
}

static void test_second_open_is_locked(void **state)
{
    (void)state;
    struct harness *h = h_new();
    struct store *other;
    assert_int_equal(store_open(&h->opt, &other), INBOX_ELOCKED);
    h_free(h);
}

/* ---- applied_commands ---------------------------------------------------- */

static uint64_t applied_commands(struct harness *h, uint32_t shard)
{
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, shard, &si), 0);
    assert_true(si.applied_commands <= si.applied_index);
    return si.applied_commands;
}

/* Every entry past the replay guard is counted once, whatever it was;
 * replayed ones are not; the count is durable at a checkpoint, lost with
 * the open transaction in a crash like everything else, and part of the
 * state hash. */
static void test_applied_commands_counted_once(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static struct workload w;
    make_workload(&w, 1);
    assert_int_equal(applied_commands(h, 1), 0);
    assert_int_equal(store_apply(h->s, w.e, 10, NULL, NULL), 0);
    assert_int_equal(applied_commands(h, 1), 10);
    assert_int_equal(applied_commands(h, 2), 0); /* per shard */
    /* Rejected, undecodable and no-op entries count too. */
    h->next_index[1] = 11;
    static const uint8_t junk[] = {9, 9, 9};
    assert_int_equal(h_apply_bytes(h, 1, junk, sizeof junk), 0);
    assert_int_equal(h_apply_bytes(h, 1, NULL, 0), 0);
    assert_int_equal(h_ack(h, 1, "u0", 5000, 999), INBOX_EACK_BEYOND_LAST);
    assert_int_equal(applied_commands(h, 1), 13);
    /* Replays (index <= applied) are skipped and not counted. */
    uint64_t hash = h_hash(h, 1);
    assert_int_equal(store_apply(h->s, w.e, 13, NULL, NULL), 0);
    assert_int_equal(applied_commands(h, 1), 13);
    assert_true(h_hash(h, 1) == hash);
    /* An index gap: counted once, so below the applied index. */
    struct store_entry e = {1, 20, 1, NULL, 0};
    assert_int_equal(store_apply(h->s, &e, 1, NULL, NULL), 0);
    struct store_shard_info si;
    assert_int_equal(store_applied(h->s, 1, &si), 0);
    assert_int_equal(si.applied_index, 20);
    assert_int_equal(si.applied_commands, 14);
    /* Durable at a checkpoint; a crash rolls it back with the rest, and
     * replaying the WAL counts each lost entry once. */
    assert_int_equal(store_checkpoint(h->s), 0);
    struct store_entry more[2] = {{1, 21, 1, NULL, 0}, {1, 22, 1, NULL, 0}};
    assert_int_equal(store_apply(h->s, more, 2, NULL, NULL), 0);
    assert_int_equal(applied_commands(h, 1), 16);
    assert_int_equal(h_reopen(h), 0);
    assert_int_equal(applied_commands(h, 1), 14);
    assert_int_equal(store_apply(h->s, w.e, 13, NULL, NULL), 0);
    assert_int_equal(store_apply(h->s, &e, 1, NULL, NULL), 0);
    assert_int_equal(store_apply(h->s, more, 2, NULL, NULL), 0);
    assert_int_equal(applied_commands(h, 1), 16);
    h_free(h);
}

/* Two shards equal but for the count (same index, term and clock, no
 * inbox) hash differently. */
static void test_applied_commands_in_state_hash(void **state)
{
    (void)state;
    struct harness *a = h_new(), *b = h_new();
    struct store_entry two[2] = {{1, 1, 1, NULL, 0}, {1, 2, 1, NULL, 0}};
    assert_int_equal(store_apply(a->s, two, 2, NULL, NULL), 0);
    assert_int_equal(store_apply(b->s, &two[1], 1, NULL, NULL), 0);
    struct store_shard_info sa, sb;
    assert_int_equal(store_applied(a->s, 1, &sa), 0);
    assert_int_equal(store_applied(b->s, 1, &sb), 0);
    assert_int_equal(sa.applied_index, sb.applied_index);
    assert_int_equal(sa.applied_term, sb.applied_term);
    assert_int_equal(sa.now_ms, sb.now_ms);
    assert_int_equal(sa.applied_commands, 2);
    assert_int_equal(sb.applied_commands, 1);
    assert_true(h_hash(a, 1) != h_hash(b, 1));
    h_free(b);
    h_free(a);
}

/* A read-only open sees the last checkpoint, writes nothing, refuses
 * writes, and is kept out while a writer holds the store (and keeps a
 * writer out). Not a store: NOTFOUND. */
static void test_read_only_open(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static struct workload w;
    make_workload(&w, 3);
    assert_int_equal(store_apply(h->s, w.e, 12, NULL, NULL), 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    assert_int_equal(store_apply(h->s, w.e + 12, 3, NULL, NULL), 0);
    uint64_t hash12 = 0;
    struct store_options o = h->opt;
    o.read_only = 1;
    struct store *ro;
    assert_int_equal(store_open(&o, &ro), INBOX_ELOCKED); /* writer open */
    assert_int_equal(h_reopen(h), 0); /* a crash: back at index 12 */
    hash12 = h_hash(h, 3);
    store_close(h->s);
    h->s = NULL;
    assert_int_equal(store_open(&o, &ro), 0);
    struct store *rw;
    assert_int_equal(store_open(&h->opt, &rw), INBOX_ELOCKED);
    struct store_shard_info si;
    assert_int_equal(store_applied(ro, 3, &si), 0);
    assert_int_equal(si.applied_index, 12);
    assert_int_equal(si.applied_commands, 12);
    uint64_t hash;
    assert_int_equal(store_state_hash(ro, 3, &hash), 0);
    assert_true(hash == hash12);
    uint32_t shard = 99;
    assert_int_equal(store_shard_next(ro, 0, &shard), 0);
    assert_int_equal(shard, 3);
    assert_int_equal(store_shard_next(ro, 4, &shard), INBOX_ENOTFOUND);
    assert_int_equal(store_apply(ro, w.e + 12, 1, NULL, NULL), INBOX_EINVAL);
    assert_int_equal(store_checkpoint(ro), INBOX_EINVAL);
    struct store_restore *r;
    assert_int_equal(store_restore_begin(ro, 3, &r), INBOX_EINVAL);
    assert_int_equal(store_applied(ro, 3, &si), 0); /* still usable */
    store_close(ro);
    /* Not a store: a directory without one, and no directory at all. */
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", h->dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    o.path = empty;
    assert_int_equal(store_open(&o, &ro), INBOX_ENOTFOUND);
    assert_int_equal(rmdir(empty), 0);
    assert_int_equal(store_open(&o, &ro), INBOX_ENOTFOUND);
    assert_int_equal(h_open(h), 0);
    h_free(h);
}

/* A format-1 store (24-byte shard metas, no count) still opens: read-only
 * as it is, writable migrated to format 2; either way its count reads as
 * its applied index. */
static void test_format1_store_migrates(void **state)
{
    (void)state;
    struct harness *h = h_new();
    static struct workload w;
    make_workload(&w, 1);
    assert_int_equal(store_apply(h->s, w.e, 7, NULL, NULL), 0);
    assert_int_equal(store_checkpoint(h->s), 0);
    store_close(h->s);
    h->s = NULL;
    /* Rewrite it as format 1 would have written it. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main_dbi, shard_dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, h->dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &main_dbi), 0);
    assert_int_equal(mdb_dbi_open(txn, "shard", 0, &shard_dbi), 0);
    char fk[] = "inboxd.store.format";
    uint8_t fv[4] = {1, 0, 0, 0}, sk[4] = {0, 0, 0, 1};
    MDB_val k = {sizeof fk - 1, fk}, v = {4, fv};
    assert_int_equal(mdb_put(txn, main_dbi, &k, &v, 0), 0);
    k = (MDB_val){4, sk};
    assert_int_equal(mdb_get(txn, shard_dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, 32);
    uint8_t meta[24];
    memcpy(meta, v.mv_data, 24);
    v = (MDB_val){24, meta};
    assert_int_equal(mdb_put(txn, shard_dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    struct store_options o = h->opt;
    o.read_only = 1;
    struct store *ro;
    assert_int_equal(store_open(&o, &ro), 0);
    struct store_shard_info si;
    assert_int_equal(store_applied(ro, 1, &si), 0);
    assert_int_equal(si.applied_index, 7);
    assert_int_equal(si.applied_commands, 7);
    store_close(ro);
    assert_int_equal(h_open(h), 0); /* migrates */
    assert_int_equal(applied_commands(h, 1), 7);
    assert_int_equal(store_apply(h->s, w.e + 7, 3, NULL, NULL), 0);
    assert_int_equal(applied_commands(h, 1), 10);
    /* The same hash as a store that counted from the start. */
    struct harness *g = h_new();
    assert_int_equal(store_apply(g->s, w.e, 10, NULL, NULL), 0);
    assert_true(h_hash(h, 1) == h_hash(g, 1));
    h_free(g);
    h_free(h);
}

/* ---- snapshot / restore -------------------------------------------------- */

struct stream {
    size_t n;
    uint8_t *chunk[64];
    size_t len[64];
};

static void stream_take(struct harness *h, uint32_t shard, struct stream *st)
{
    struct store_snapshot *snap;
    memset(st, 0, sizeof *st);
    assert_int_equal(store_snapshot_begin(h->s, shard, &snap), 0);
    for (;;) {
        const uint8_t *c;
        size_t len;
        assert_int_equal(store_snapshot_next(snap, &c, &len), 0);
        if (len == 0)
            break;
        assert_true(st->n < 64);
        st->chunk[st->n] = malloc(len);
        memcpy(st->chunk[st->n], c, len);
        st->len[st->n++] = len;
    }
    store_snapshot_end(snap);
}

static void stream_free(struct stream *st)
{
    for (size_t i = 0; i < st->n; i++)
        free(st->chunk[i]);
}

static int stream_restore(struct harness *h, uint32_t shard,
                          const struct stream *st, size_t upto)
{
    struct store_restore *r;
    int rc = store_restore_begin(h->s, shard, &r);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < upto; i++) {
        rc = store_restore_chunk(r, st->chunk[i], st->len[i]);
        if (rc != 0) {
            store_restore_abort(r);
            return rc;
        }
    }
    return store_restore_finish(r);
}

static void fill(struct harness *h, uint32_t shard, unsigned n,
                 uint64_t id_base)
{
    static uint8_t pay[1000];
    for (unsigned i = 0; i < n; i++) {
        char inbox[16];
        snprintf(inbox, sizeof inbox, "user%u", i % 13);
        memset(pay, (int)i, sizeof pay);
        assert_int_equal(h_enqueue(h, shard, inbox, id_base + i, 100 + i,
                                   i % 2 ? 0 : 100000, pay, 1 + (i * 37) % 1000,
                                   NULL),
                         0);
        if (i % 10 == 9)
            assert_int_equal(h_ack(h, shard, inbox, 100 + i, i / 26), 0);
        if (i % 17 == 0)
            assert_int_equal(h_seen(h, shard, inbox, 100 + i, i), 0);
    }
}

static void assert_same_reads(struct harness *a, struct harness *b,
                              uint32_t shard)
{
    for (unsigned u = 0; u < 14; u++) {
        char inbox[16];
        snprintf(inbox, sizeof inbox, "user%u", u);
        struct store_inbox_info ia, ib;
        assert_int_equal(h_info(a, shard, inbox, &ia), 0);
        assert_int_equal(h_info(b, shard, inbox, &ib), 0);
        assert_memory_equal(&ia, &ib, sizeof ia);
        static struct store_message ma[64], mb[64];
        size_t na = h_fetch(a, shard, inbox, 0, ma, 64);
        size_t nb = h_fetch(b, shard, inbox, 0, mb, 64);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            assert_int_equal(ma[i].seq, mb[i].seq);
            assert_int_equal(ma[i].payload_len, mb[i].payload_len);
            assert_memory_equal(ma[i].payload, mb[i].payload,
                                ma[i].payload_len);
            assert_memory_equal(ma[i].msg_id, mb[i].msg_id, 16);
        }
    }
}

static void test_snapshot_restore_roundtrip(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.snapshot_chunk_bytes = INBOX_SNAPSHOT_CHUNK_BYTES_MIN;
    struct harness *src = h_new_with(&o);
    fill(src, 1, 700, 0);
    fill(src, 2, 50, 10000);
    assert_int_equal(store_checkpoint(src->s), 0);
    struct stream st;
    stream_take(src, 1, &st);
    assert_true(st.n >= 3); /* several data chunks and the trailer */
    uint64_t idx, term;
    struct store_snapshot *snap;
    assert_int_equal(store_snapshot_begin(src->s, 1, &snap), 0);
    store_snapshot_meta(snap, &idx, &term);
    store_snapshot_end(snap);
    assert_int_equal(idx, src->next_index[1] - 1);

    /* Into a fresh store. */
    struct harness *dst = h_new_with(&o);
    fill(dst, 2, 20, 20000);
    uint64_t other = h_hash(dst, 2);
    assert_int_equal(stream_restore(dst, 1, &st, st.n), 0);
    assert_true(h_hash(dst, 1) == h_hash(src, 1));
    assert_true(h_hash(dst, 2) == other); /* other shards untouched */
    assert_same_reads(src, dst, 1);
    struct store_shard_info si;
    assert_int_equal(store_applied(dst->s, 1, &si), 0);
    assert_int_equal(si.applied_index, idx);
    /* The restored shard applies further entries like the source. */
    dst->next_index[1] = src->next_index[1];
    fill(src, 1, 30, 50000);
    fill(dst, 1, 30, 50000);
    assert_true(h_hash(dst, 1) == h_hash(src, 1));
    /* Survives a checkpoint and reopen. */
    assert_int_equal(store_checkpoint(dst->s), 0);
    assert_int_equal(h_reopen(dst), 0);
    assert_true(h_hash(dst, 1) == h_hash(src, 1));

    /* Into a stale shard: replaced wholesale. */
    struct harness *stale = h_new_with(&o);
    fill(stale, 1, 60, 0);
    assert_int_equal(stream_restore(stale, 1, &st, st.n), 0);
    struct harness *ref = h_new_with(&o);
    assert_int_equal(stream_restore(ref, 1, &st, st.n), 0);
    assert_true(h_hash(stale, 1) == h_hash(ref, 1));
    h_free(ref);
    h_free(stale);
    h_free(dst);
    h_free(src);
    stream_free(&st);
}

/* A snapshot carries the count as it is, not recomputed from the index:
 * a source whose count is below its index (an index gap) gives a fresh
 * store and a stale one (with a count of its own) exactly its count. */
static void test_applied_commands_snapshot(void **state)
{
    (void)state;
    struct harness *src = h_new();
    src->next_index[1] = 6; /* indexes 1-5 never reach this store */
    fill(src, 1, 40, 0);
    assert_int_equal(store_checkpoint(src->s), 0);
    struct store_shard_info want;
    assert_int_equal(store_applied(src->s, 1, &want), 0);
    assert_true(want.applied_commands < want.applied_index);
    struct stream st;
    stream_take(src, 1, &st);
    struct harness *fresh = h_new(), *stale = h_new();
    fill(stale, 1, 20, 0); /* 20 enqueues, 2 acks, 2 seen-sets */
    assert_int_equal(applied_commands(stale, 1), 24);
    struct harness *dsts[2] = {fresh, stale};
    for (int i = 0; i < 2; i++) {
        struct harness *d = dsts[i];
        assert_int_equal(stream_restore(d, 1, &st, st.n), 0);
        struct store_shard_info si;
        assert_int_equal(store_applied(d->s, 1, &si), 0);
        assert_int_equal(si.applied_index, want.applied_index);
        assert_int_equal(si.applied_commands, want.applied_commands);
        assert_true(h_hash(d, 1) == h_hash(src, 1));
        /* and counts on from there */
        d->next_index[1] = src->next_index[1];
        assert_int_equal(h_seen(d, 1, "user1", 10000, 1), 0);
        assert_int_equal(applied_commands(d, 1), want.applied_commands + 1);
    }
    h_free(stale);
    h_free(fresh);
    h_free(src);
    stream_free(&st);
}

static void test_snapshot_corruption_refused(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.snapshot_chunk_bytes = INBOX_SNAPSHOT_CHUNK_BYTES_MIN;
    struct harness *src = h_new_with(&o);
    fill(src, 1, 700, 0);
    assert_int_equal(store_checkpoint(src->s), 0);
    struct stream st;
    stream_take(src, 1, &st);
    assert_true(st.n >= 3);

    struct harness *dst = h_new_with(&o);
    fill(dst, 1, 20, 0);
    uint64_t before = h_hash(dst, 1);
    /* A flipped byte in a data chunk's body. */
    st.chunk[1][100] ^= 0x40;
    assert_int_equal(stream_restore(dst, 1, &st, st.n), INBOX_ECORRUPT);
    st.chunk[1][100] ^= 0x40;
    assert_true(h_hash(dst, 1) == before);
    /* A flipped byte in a header. */
    st.chunk[0][13] ^= 1;
    assert_int_equal(stream_restore(dst, 1, &st, st.n), INBOX_ECORRUPT);
    st.chunk[0][13] ^= 1;
    /* A chunk missing (sequence gap), a missing trailer, a truncation. */
    struct stream gap = st;
    gap.chunk[1] = st.chunk[2];
    gap.len[1] = st.len[2];
    assert_int_equal(stream_restore(dst, 1, &gap, st.n - 1), INBOX_ECORRUPT);
    assert_int_equal(stream_restore(dst, 1, &st, st.n - 1), INBOX_ECORRUPT);
    size_t keep = st.len[0];
    st.len[0] = keep - 1;
    assert_int_equal(stream_restore(dst, 1, &st, st.n), INBOX_ECORRUPT);
    st.len[0] = keep;
    /* Another shard's stream. */
    assert_int_equal(stream_restore(dst, 2, &st, st.n),
                     INBOX_ESNAPSHOT_MISMATCH);
    assert_true(h_hash(dst, 1) == before);
    /* While a restore is open, the store is busy. */
    struct store_restore *r;
    assert_int_equal(store_restore_begin(dst->s, 1, &r), 0);
    assert_int_equal(h_enqueue(dst, 1, "x", 1, 0, 0, "x", 1, NULL),
                     INBOX_EBUSY);
    store_restore_abort(r);
    dst->next_index[1]--;
    assert_true(h_hash(dst, 1) == before);
    /* The intact stream still installs. */
    assert_int_equal(stream_restore(dst, 1, &st, st.n), 0);
    assert_true(h_hash(dst, 1) == h_hash(src, 1));
    /* An older snapshot than the shard's state is refused. */
    struct harness *old = h_new_with(&o);
    fill(old, 1, 10, 0);
    assert_int_equal(store_checkpoint(old->s), 0);
    struct stream ost;
    stream_take(old, 1, &ost);
    assert_int_equal(stream_restore(dst, 1, &ost, ost.n), INBOX_ERANGE);
    assert_true(h_hash(dst, 1) == h_hash(src, 1));
    stream_free(&ost);
    h_free(old);
    h_free(dst);
    h_free(src);
    stream_free(&st);
}

/* A snapshot streamed on another thread while the owner keeps applying and
 * checkpointing sees exactly the checkpoint it began from. */
struct snap_job {
    struct store *s;
    struct stream st;
    int rc;
};

static void *snap_thread(void *arg)
{
    struct snap_job *j = arg;
    struct store_snapshot *snap = NULL;
    memset(&j->st, 0, sizeof j->st);
    j->rc = store_snapshot_begin(j->s, 1, &snap);
    while (j->rc == 0) {
        const uint8_t *c;
        size_t len;
        if ((j->rc = store_snapshot_next(snap, &c, &len)) != 0 || len == 0)
            break;
        if (j->st.n == 64) {
            j->rc = -1;
            break;
        }
        j->st.chunk[j->st.n] = malloc(len);
        memcpy(j->st.chunk[j->st.n], c, len);
        j->st.len[j->st.n++] = len;
    }
    if (snap != NULL)
        store_snapshot_end(snap);
    return NULL;
}

static void test_snapshot_on_another_thread(void **state)
{
    (void)state;
    struct store_options o;
    store_options_init(&o);
    o.snapshot_chunk_bytes = INBOX_SNAPSHOT_CHUNK_BYTES_MIN;
    struct harness *src = h_new_with(&o);
    fill(src, 1, 400, 0);
    assert_int_equal(store_checkpoint(src->s), 0);
    uint64_t at_checkpoint = h_hash(src, 1);
    struct snap_job job = {src->s, {0}, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, snap_thread, &job), 0);
    fill(src, 1, 200, 100000); /* the owner goes on meanwhile */
    assert_int_equal(store_checkpoint(src->s), 0);
    fill(src, 1, 50, 200000);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(job.rc, 0);
    struct harness *dst = h_new_with(&o);
    assert_int_equal(stream_restore(dst, 1, &job.st, job.st.n), 0);
    assert_true(h_hash(dst, 1) == at_checkpoint);
    stream_free(&job.st);
    h_free(dst);
    h_free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gapless_seqs_and_fetch),
        cmocka_unit_test(test_dedup_within_window),
        cmocka_unit_test(test_dedup_beyond_window_and_pruning),
        cmocka_unit_test(test_ack_idempotent_deletes_and_beyond_last),
        cmocka_unit_test(test_last_seen_forward_only),
        cmocka_unit_test(test_ttl_expiry_front_in_order),
        cmocka_unit_test(test_ttl_reads_hide_unswept),
        cmocka_unit_test(test_bound_pending_messages),
        cmocka_unit_test(test_bound_pending_bytes),
        cmocka_unit_test(test_bound_payload_size),
        cmocka_unit_test(test_enqueue_many_per_inbox_results),
        cmocka_unit_test(test_bad_and_noop_entries_advance_index),
        cmocka_unit_test(test_replay_is_idempotent),
        cmocka_unit_test(test_crash_before_checkpoint),
        cmocka_unit_test(test_map_full_is_sticky),
        cmocka_unit_test(test_failed_checkpoint_is_sticky),
        cmocka_unit_test(test_second_open_is_locked),
        cmocka_unit_test(test_applied_commands_counted_once),
        cmocka_unit_test(test_applied_commands_in_state_hash),
        cmocka_unit_test(test_read_only_open),
        cmocka_unit_test(test_format1_store_migrates),
        cmocka_unit_test(test_mixed_shard_batch),
        cmocka_unit_test(test_snapshot_restore_roundtrip),
        cmocka_unit_test(test_applied_commands_snapshot),
        cmocka_unit_test(test_snapshot_corruption_refused),
        cmocka_unit_test(test_snapshot_on_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
