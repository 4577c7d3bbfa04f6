/* test_command.c — the command codec: round trips, every truncation,
 * hand-made malformed encodings, and random mutations (which must never
 * crash, and which decode only to something that re-encodes to the same
 * bytes: the encoding is canonical). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "command.h"
#include "inbox/endian.h"
#include "inbox/error.h"

static struct command dec; /* 24 KiB: not on the stack */
static uint8_t buf[INBOX_COMMAND_BYTES_MAX];
static uint8_t buf2[INBOX_COMMAND_BYTES_MAX];

static const uint8_t ID_A[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                                 9, 10, 11, 12, 13, 14, 15, 16};

static size_t enc_enqueue(uint8_t *b)
{
    size_t len;
    assert_int_equal(command_encode_enqueue(b, INBOX_COMMAND_BYTES_MAX,
                                            0x1122334455667788ull,
                                            (const uint8_t *)"alice", 5, ID_A,
                                            60000, "payload", 7, &len),
                     0);
    assert_int_equal(len, command_bytes_enqueue(5, 7));
    return len;
}

static size_t enc_many(uint8_t *b, size_t n)
{
    static char names[INBOX_FANOUT_INBOXES_MAX][32];
    static struct command_target t[INBOX_FANOUT_INBOXES_MAX];
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "member-%u", (unsigned)i);
        t[i] = (struct command_target){(const uint8_t *)names[i], ID_A,
                                       (uint16_t)strlen(names[i])};
    }
    size_t len;
    assert_int_equal(command_encode_enqueue_many(b, INBOX_COMMAND_BYTES_MAX, 42,
                                                 0, "group message", 13, t, n,
                                                 &len),
                     0);
    assert_int_equal(len, command_bytes_enqueue_many(t, n, 13));
    return len;
}

static size_t enc_ack(uint8_t *b)
{
    size_t len;
    assert_int_equal(command_encode_ack(b, INBOX_COMMAND_BYTES_MAX, 7,
                                        (const uint8_t *)"bob", 3, 99, &len),
                     0);
    return len;
}

static size_t enc_seen(uint8_t *b)
{
    size_t len;
    assert_int_equal(command_encode_seen_set(b, INBOX_COMMAND_BYTES_MAX, 8,
                                             (const uint8_t *)"carol", 5,
                                             123456, &len),
                     0);
    return len;
}

/* decode -> encode gives back the same bytes. */
static void assert_canonical(const uint8_t *b, size_t len)
{
    size_t len2;
    assert_int_equal(command_decode(b, len, &dec), 0);
    assert_int_equal(command_encode(&dec, buf2, sizeof buf2, &len2), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, b, len);
}

static void test_roundtrip_every_command(void **state)
{
    (void)state;
    size_t len = enc_enqueue(buf);
    assert_int_equal(command_decode(buf, len, &dec), 0);
    assert_int_equal(dec.type, COMMAND_ENQUEUE);
    assert_true(dec.leader_ts_ms == 0x1122334455667788ull);
    assert_int_equal(dec.ttl_ms, 60000);
    assert_int_equal(dec.payload_len, 7);
    assert_memory_equal(dec.payload, "payload", 7);
    assert_int_equal(dec.targets_count, 1);
    assert_int_equal(dec.targets[0].inbox_len, 5);
    assert_memory_equal(dec.targets[0].inbox, "alice", 5);
    assert_memory_equal(dec.targets[0].msg_id, ID_A, 16);
    assert_canonical(buf, len);

    len = enc_many(buf, 3);
    assert_int_equal(command_decode(buf, len, &dec), 0);
    assert_int_equal(dec.type, COMMAND_ENQUEUE_MANY);
    assert_int_equal(dec.targets_count, 3);
    assert_memory_equal(dec.targets[2].inbox, "member-2", 8);
    assert_memory_equal(dec.payload, "group message", 13);
    assert_canonical(buf, len);

    len = enc_many(buf, INBOX_FANOUT_INBOXES_MAX);
    assert_true(len <= INBOX_COMMAND_BYTES_MAX);
    assert_canonical(buf, len);

    len = enc_ack(buf);
    assert_int_equal(command_decode(buf, len, &dec), 0);
    assert_int_equal(dec.type, COMMAND_ACK);
    assert_int_equal(dec.ack_seq, 99);
    assert_null(dec.targets[0].msg_id);
    assert_canonical(buf, len);

    len = enc_seen(buf);
    assert_int_equal(command_decode(buf, len, &dec), 0);
    assert_int_equal(dec.type, COMMAND_SEEN_SET);
    assert_int_equal(dec.seen_ts_ms, 123456);
    assert_canonical(buf, len);

    /* The largest possible enqueue. */
    static uint8_t pay[INBOX_PAYLOAD_BYTES_MAX];
    static uint8_t key[INBOX_KEY_BYTES_MAX];
    memset(key, 'k', sizeof key);
    assert_int_equal(command_encode_enqueue(buf, sizeof buf, 1, key, sizeof key,
                                            ID_A, INBOX_TTL_MS_MAX, pay,
                                            sizeof pay, &len),
                     0);
    assert_canonical(buf, len);
}

static void test_encoder_validates(void **state)
{
    (void)state;
    size_t len;
    static uint8_t key[INBOX_KEY_BYTES_MAX + 1];
    assert_int_equal(command_encode_enqueue(buf, sizeof buf, 1, key, 0, ID_A, 0,
                                            "x", 1, &len),
                     INBOX_EKEY_INVALID);
    assert_int_equal(command_encode_enqueue(buf, sizeof buf, 1, key, sizeof key,
                                            ID_A, 0, "x", 1, &len),
                     INBOX_EKEY_INVALID);
    static uint8_t pay[INBOX_PAYLOAD_BYTES_MAX + 1];
    assert_int_equal(command_encode_enqueue(buf, sizeof buf, 1, key, 1, ID_A, 0,
                                            pay, sizeof pay, &len),
                     INBOX_EPAYLOAD_TOO_LARGE);
    assert_int_equal(command_encode_enqueue(buf, sizeof buf, 1, key, 1, ID_A,
                                            INBOX_TTL_MS_MAX + 1, "x", 1, &len),
                     INBOX_ERANGE);
    assert_int_equal(
        command_encode_enqueue(buf, 10, 1, key, 1, ID_A, 0, "x", 1, &len),
        INBOX_ERANGE);
    assert_int_equal(command_encode_enqueue_many(buf, sizeof buf, 1, 0, "x", 1,
                                                 NULL, 0, &len),
                     INBOX_ETOO_MANY_INBOXES);
    assert_int_equal(command_encode_ack(buf, sizeof buf, 1, key, 0, 1, &len),
                     INBOX_EKEY_INVALID);
}

static void test_every_truncation_rejected(void **state)
{
    (void)state;
    size_t (*enc[])(uint8_t *) = {enc_enqueue, enc_ack, enc_seen};
    for (size_t e = 0; e < 4; e++) {
        size_t len = e < 3 ? enc[e](buf) : enc_many(buf, 5);
        assert_int_equal(command_decode(buf, len, &dec), 0);
        for (size_t cut = 0; cut < len; cut++) {
            /* A fresh heap copy of exactly `cut` bytes, so ASan sees any
             * read past the end. */
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, buf, cut);
            assert_int_equal(command_decode(p, cut, &dec), INBOX_EBAD_COMMAND);
            free(p);
        }
        /* And one trailing byte too many. */
        buf[len] = 0;
        assert_int_equal(command_decode(buf, len + 1, &dec),
                         INBOX_EBAD_COMMAND);
    }
    assert_int_equal(command_decode(NULL, 0, &dec), INBOX_EBAD_COMMAND);
}

static void test_malformed_fields_rejected(void **state)
{
    (void)state;
    size_t len = enc_enqueue(buf);
    buf[0] = 2; /* version */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    buf[0] = 1;
    buf[1] = 9; /* type */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    buf[1] = COMMAND_ENQUEUE;
    buf[3] = 1; /* reserved */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    buf[3] = 0;
    buf[12] = 0; /* inbox_len 0 */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    buf[12] = 5;
    /* ttl over the bound: at 12 + 1 + 5 + 16 */
    put_u64le(buf + 34, INBOX_TTL_MS_MAX + 1);
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    put_u64le(buf + 34, 60000);
    put_u32le(buf + 42, 0xFFFFFFFFu); /* payload_len */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    put_u32le(buf + 42, 7);
    assert_int_equal(command_decode(buf, len, &dec), 0);

    /* inbox_len over the bound, with the bytes present. */
    static uint8_t key[INBOX_KEY_BYTES_MAX];
    assert_int_equal(
        command_encode_ack(buf, sizeof buf, 1, key, sizeof key, 1, &len), 0);
    buf[12] = INBOX_KEY_BYTES_MAX + 1;
    buf[len] = 0;
    assert_int_equal(command_decode(buf, len + 1, &dec), INBOX_EBAD_COMMAND);

    /* ENQUEUE_MANY count 0 and count over the bound. */
    len = enc_many(buf, 2);
    size_t count_at = COMMAND_HEADER_BYTES + 12 + 13;
    assert_int_equal(get_u16le(buf + count_at), 2);
    put_u16le(buf + count_at, 0);
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    put_u16le(buf + count_at, INBOX_FANOUT_INBOXES_MAX + 1);
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    put_u16le(buf + count_at, 3); /* more than present */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
    put_u16le(buf + count_at, 1); /* fewer: trailing bytes */
    assert_int_equal(command_decode(buf, len, &dec), INBOX_EBAD_COMMAND);
}

static uint64_t rng(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void test_random_mutations_never_crash(void **state)
{
    (void)state;
    uint64_t seed = 20261127;
    static uint8_t orig[4096];
    unsigned accepted = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len;
        switch (round % 4) {
        case 0:
            len = enc_enqueue(orig);
            break;
        case 1:
            len = enc_many(orig, 1 + round % 7);
            break;
        case 2:
            len = enc_ack(orig);
            break;
        default:
            len = enc_seen(orig);
            break;
        }
        /* Mutate 1..4 bytes, sometimes also the length. */
        int flips = 1 + (int)(rng(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = rng(&seed) % len;
            orig[at] = (uint8_t)rng(&seed);
        }
        if (rng(&seed) % 4 == 0)
            len = rng(&seed) % (len + 8);
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, orig, len);
        if (command_decode(p, len, &dec) == 0) {
            accepted++;
            assert_canonical(p, len);
        }
        free(p);
    }
    printf("mutations: %u of 20000 still decoded (and were canonical)\n",
           accepted);
    /* Pure random bytes. */
    for (int round = 0; round < 5000; round++) {
        size_t len = rng(&seed) % 200;
        uint8_t *p = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            p[i] = (uint8_t)rng(&seed);
        if (len > 0 && rng(&seed) % 2)
            p[0] = 1; /* get past the version check */
        if (command_decode(p, len, &dec) == 0)
            assert_canonical(p, len);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_command),
        cmocka_unit_test(test_encoder_validates),
        cmocka_unit_test(test_every_truncation_rejected),
        cmocka_unit_test(test_malformed_fields_rejected),
        cmocka_unit_test(test_random_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
