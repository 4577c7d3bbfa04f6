/*
 * fuzz_frame.c — libFuzzer target for the frame codec (net/codec.h).
 *
 * The input is a byte stream as it would arrive on a connection. It is
 * parsed twice: once in a single feed (the zero-copy path) and once in
 * chunks of pseudo-random sizes derived from the input (the buffering
 * path); both must hand out the same frames and end in the same state.
 * Every frame's body goes through inbox_msg_decode; a body that decodes is
 * re-encoded (which walks every list through its iterator) and must give
 * back exactly the frame's bytes, since the encoding is canonical.
 * ASan and UBSan catch any read outside the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define DIGESTS_MAX 4096

struct run {
    uint64_t digests[DIGESTS_MAX];
    size_t frames;
    int end_rc;
};

static uint8_t body_buf[INBOX_FRAME_BODY_BYTES_MAX];
static uint8_t reencoded[INBOX_FRAME_HEADER_BYTES + INBOX_FRAME_BODY_BYTES_MAX];
static struct run run_a, run_b;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void check_frame(const struct inbox_frame *f, const uint8_t *hdr_bytes,
                        struct run *r)
{
    struct inbox_msg m;
    uint64_t h =
        fnv(0xcbf29ce484222325ull, hdr_bytes, INBOX_FRAME_HEADER_BYTES);
    if (f->hdr.body_bytes > 0)
        h = fnv(h, f->body, f->hdr.body_bytes);
    if (r->frames < DIGESTS_MAX)
        r->digests[r->frames] = h;
    r->frames++;
    if (inbox_msg_decode(&f->hdr, f->body, &m) != 0)
        return;
    size_t n = 0;
    if (inbox_msg_encode(&m, reencoded, sizeof reencoded, &n) != 0)
        abort(); /* a decoded message must always re-encode */
    if (n != INBOX_FRAME_HEADER_BYTES + f->hdr.body_bytes ||
        memcmp(reencoded, hdr_bytes, INBOX_FRAME_HEADER_BYTES) != 0 ||
        (f->hdr.body_bytes > 0 && memcmp(reencoded + INBOX_FRAME_HEADER_BYTES,
                                         f->body, f->hdr.body_bytes) != 0))
        abort(); /* not canonical: decode accepted what encode would not write
                  */
}

/* chunk 0: one feed; else pseudo-random chunk sizes from `seed`. */
static void parse(const uint8_t *data, size_t size, uint64_t seed,
                  struct run *r)
{
    struct inbox_parser p;
    inbox_parser_init(&p, body_buf, sizeof body_buf);
    /* Odd-sized inputs play a connection past HELLO (version pinned). */
    p.version = (size & 1) ? 1 : 0;
    r->frames = 0;
    r->end_rc = INBOX_PARSE_MORE;
    size_t off = 0;
    /* Header bytes of the frame being parsed, for the canonical check. */
    size_t frame_start = 0;
    while (off < size) {
        size_t len = size - off;
        if (seed != 0) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            size_t want = 1 + seed % 64;
            len = want < len ? want : len;
        }
        const uint8_t *in = data + off;
        while (len > 0) {
            struct inbox_frame f;
            size_t used = 0;
            int rc = inbox_parser_feed(&p, in, len, &used, &f);
            if (used > len)
                abort();
            in += used;
            len -= used;
            off += used;
            if (rc < 0) {
                r->end_rc = rc;
                return;
            }
            if (rc == INBOX_PARSE_FRAME) {
                check_frame(&f, data + frame_start, r);
                frame_start = off;
            } else if (len != 0) {
                abort(); /* MORE must mean everything was consumed */
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ size;
    if (size > 0)
        seed ^= (uint64_t)data[size - 1] << 32;
    parse(data, size, 0, &run_a);
    parse(data, size, seed, &run_b);
    if (run_a.frames != run_b.frames || run_a.end_rc != run_b.end_rc)
        abort();
    size_t n = run_a.frames < DIGESTS_MAX ? run_a.frames : DIGESTS_MAX;
    if (memcmp(run_a.digests, run_b.digests, n * sizeof run_a.digests[0]))
        abort();
    return 0;
}
