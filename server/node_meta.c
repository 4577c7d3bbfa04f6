/*
 * node_meta.c — read and write DATA/node.meta (format in node_meta.h).
 */
#include "node_meta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "inbox/endian.h"
#include "durable_file.h"
#include "inbox/error.h"

static const uint8_t meta_magic[8] = {'I', 'N', 'B', 'X', 'N', 'O', 'D', 'E'};

#define PATH_BYTES_MAX 1100u

static void encode(const struct node_meta *m, uint8_t b[NODE_META_BYTES])
{
    memset(b, 0, NODE_META_BYTES);
    memcpy(b, meta_magic, 8);
    put_u32le(b + 8, NODE_META_VERSION);
    put_u32le(b + 12, m->shard_count);
    put_u64le(b + 16, m->node_id);
    put_u32le(b + 24, m->voters_count);
    for (uint32_t i = 0; i < m->voters_count; i++)
        put_u64le(b + 32 + 8u * i, m->voters[i]);
    put_u64le(b + 88, XXH3_64bits(b, 88));
}

static int decode(const uint8_t b[NODE_META_BYTES], struct node_meta *m)
{
    if (memcmp(b, meta_magic, 8) != 0 ||
        get_u64le(b + 88) != XXH3_64bits(b, 88))
        return INBOX_ECORRUPT;
    if (get_u32le(b + 8) != NODE_META_VERSION)
        return INBOX_EFORMAT;
    memset(m, 0, sizeof(*m));
    m->shard_count = get_u32le(b + 12);
    m->node_id = get_u64le(b + 16);
    m->voters_count = get_u32le(b + 24);
    if (m->shard_count == 0 || m->shard_count > INBOX_SHARD_COUNT_MAX ||
        m->node_id == 0 || m->voters_count == 0 ||
        m->voters_count > INBOX_RAFT_VOTERS_MAX || get_u32le(b + 28) != 0)
        return INBOX_ECORRUPT;
    for (uint32_t i = 0; i < m->voters_count; i++)
        m->voters[i] = get_u64le(b + 32 + 8u * i);
    return 0;
}

static int path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    return k < 0 || (size_t)k >= cap ? INBOX_ERANGE : 0;
}

int node_meta_read(const char *data_dir, struct node_meta *out)
{
    char path[PATH_BYTES_MAX];
    int rc = path_join(path, sizeof(path), data_dir, NODE_META_FILE);
    if (rc != 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? INBOX_ENOTFOUND : -errno;
    uint8_t b[NODE_META_BYTES + 1];
    ssize_t got = read(fd, b, sizeof(b));
    rc = got < 0 ? -errno : 0;
    close(fd);
    if (rc != 0)
        return rc;
    if (got != (ssize_t)NODE_META_BYTES)
        return INBOX_ECORRUPT;
    return decode(b, out);
}

int node_meta_write(const char *data_dir, const struct node_meta *m)
{
    uint8_t b[NODE_META_BYTES];
    encode(m, b);
    return durable_file_replace(data_dir, NODE_META_FILE, b, sizeof(b));
}
