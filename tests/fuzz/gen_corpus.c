/*
 * gen_corpus.c — writes the seed corpora of the fuzz targets:
 *   <dir>/fuzz_frame/<sample>.bin   one frame of every body layout
 *                                   (tests/unit/net/net_samples.c)
 *   <dir>/fuzz_frame/stream.bin     all of them back to back
 *   <dir>/fuzz_command/<type>.bin   one command of every type (when built
 *                                   with engine/command.h)
 * Usage: gen_corpus <dir>   (the committed corpus is tests/fuzz/corpus;
 * regenerate it after a change of layout).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec.h"
#include "net_samples.h"
#ifdef INBOX_FUZZ_COMMAND
#include "command.h"
#endif

static uint8_t buf[1u << 20];

static int write_file(const char *dir, const char *sub, const char *name,
                      const uint8_t *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s.bin", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int frames(const char *dir)
{
    size_t count, all = 0;
    const struct net_sample *s = net_samples(&count);
    static uint8_t stream[1u << 20];
    for (size_t i = 0; i < count; i++) {
        size_t n = 0;
        if (inbox_msg_encode(&s[i].msg, buf, sizeof buf, &n) != 0 ||
            all + n > sizeof stream)
            return 1;
        memcpy(stream + all, buf, n);
        all += n;
        if (write_file(dir, "fuzz_frame", s[i].name, buf, n))
            return 1;
    }
    return write_file(dir, "fuzz_frame", "stream", stream, all);
}

#ifdef INBOX_FUZZ_COMMAND
static int commands(const char *dir)
{
    static const uint8_t id[INBOX_MSG_ID_BYTES] = {1, 2,  3,  4,  5,  6,  7, 8,
                                                   9, 10, 11, 12, 13, 14, 15};
    const uint8_t *k = (const uint8_t *)"alice";
    struct command_target t[2] = {{k, id, 5}, {(const uint8_t *)"bob", id, 3}};
    size_t n = 0;
    int rc = command_encode_enqueue(buf, sizeof buf, 1764268800000ull, k, 5, id,
                                    86400000ull, "hello", 5, &n);
    rc = rc ? rc : write_file(dir, "fuzz_command", "enqueue", buf, n);
    rc = rc ? rc
            : command_encode_enqueue_many(buf, sizeof buf, 1764268800000ull, 0,
                                          "group", 5, t, 2, &n);
    rc = rc ? rc : write_file(dir, "fuzz_command", "enqueue_many", buf, n);
    rc =
        rc ? rc
           : command_encode_ack(buf, sizeof buf, 1764268800000ull, k, 5, 7, &n);
    rc = rc ? rc : write_file(dir, "fuzz_command", "ack", buf, n);
    rc = rc ? rc
            : command_encode_seen_set(buf, sizeof buf, 1764268800000ull, k, 5,
                                      1764268800000ull, &n);
    rc = rc ? rc : write_file(dir, "fuzz_command", "seen_set", buf, n);
    return rc != 0;
}
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
        return 2;
    }
    mkdir(argv[1], 0755);
    if (frames(argv[1]))
        return 1;
#ifdef INBOX_FUZZ_COMMAND
    if (commands(argv[1]))
        return 1;
#endif
    return 0;
}
