/*
 * fuzz_raftwire.c — libFuzzer target for the Raft wire encoding
 * (raft/wire.h, library inbox_raft).
 *
 * The input is a batch as a RAFT frame body would carry it. It is decoded
 * message by message, as a receiver would, until it is used up or a
 * message is refused. raft_wire_peek must agree with decode on each
 * message's length, and every message that decodes must re-encode to
 * exactly the input slice it came from (the encoding is canonical: decode
 * accepts nothing encode would not write). ASan and UBSan catch any read
 * outside the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static struct raft_entry ents[INBOX_RAFT_MSG_ENTRIES_MAX];
static uint8_t out[RAFT_WIRE_MSG_BYTES_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        const uint8_t *p = data + off;
        size_t left = size - off;
        struct raft_msg m;
        size_t used = 0, peeked = 0;
        int peek_rc = raft_wire_peek(p, left, &peeked);
        if (raft_wire_decode(p, left, &m, ents, INBOX_RAFT_MSG_ENTRIES_MAX,
                             &used) != 0) {
            if (used != 0)
                abort();
            return 0;
        }
        if (peek_rc != 0 || peeked != used || used > left ||
            used < RAFT_WIRE_HEADER_BYTES)
            abort();
        if (raft_wire_msg_bytes(&m) != used)
            abort();
        if (raft_wire_encode(&m, out, sizeof out) != used ||
            memcmp(out, p, used) != 0)
            abort(); /* not canonical */
        off += used;
    }
    return 0;
}
