/*
 * fuzz_command.c — libFuzzer target for the Raft entry command codec
 * (engine/command.h, library inbox_command): command_decode on arbitrary
 * bytes. What decodes must re-encode (command_encode), the re-encoding must
 * decode again to the same encoding, and — the layout being canonical — it
 * must be byte-identical to the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"

static struct command cmd, cmd2;
static uint8_t out[INBOX_COMMAND_BYTES_MAX], out2[INBOX_COMMAND_BYTES_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (command_decode(data, size, &cmd) != 0)
        return 0;
    size_t n = 0, n2 = 0;
    if (command_encode(&cmd, out, sizeof out, &n) != 0)
        abort(); /* a decoded command must re-encode */
    if (n != size || memcmp(out, data, size) != 0)
        abort(); /* not canonical */
    if (command_decode(out, n, &cmd2) != 0 ||
        command_encode(&cmd2, out2, sizeof out2, &n2) != 0 || n2 != n ||
        memcmp(out, out2, n) != 0)
        abort();
    return 0;
}
