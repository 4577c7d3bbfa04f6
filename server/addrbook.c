/*
 * addrbook.c — DATA/peers: node id -> address, written atomically.
 */
#include "addrbook.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable_file.h"
#include "inbox/error.h"

#define ADDRBOOK_MAGIC "inboxd-peers 1"
#define ADDRBOOK_PATH_BYTES 1200u

static int path_of(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? INBOX_ERANGE : 0;
}

static int addr_ok(const char *addr)
{
    size_t len = addr ? strlen(addr) : 0;
    const char *colon = len ? strrchr(addr, ':') : NULL;
    return len > 0 && len < CONFIG_ADDR_BYTES && colon && colon != addr &&
           colon[1] != '\0' && strchr(addr, ' ') == NULL;
}

int addrbook_set(struct addrbook *b, uint64_t id, const char *addr)
{
    if (id == 0 || !addr_ok(addr))
        return INBOX_EINVAL;
    size_t i = 0;
    while (i < b->count && b->nodes[i].id < id)
        i++;
    if (i < b->count && b->nodes[i].id == id) {
        if (strcmp(b->nodes[i].addr, addr) == 0)
            return 0;
        snprintf(b->nodes[i].addr, sizeof b->nodes[i].addr, "%s", addr);
        return 1;
    }
    if (b->count == ADDRBOOK_NODES_MAX)
        return INBOX_ERANGE;
    memmove(&b->nodes[i + 1], &b->nodes[i],
            (b->count - i) * sizeof b->nodes[0]);
    b->nodes[i].id = id;
    snprintf(b->nodes[i].addr, sizeof b->nodes[i].addr, "%s", addr);
    b->count++;
    return 1;
}

const char *addrbook_get(const struct addrbook *b, uint64_t id)
{
    for (size_t i = 0; i < b->count; i++)
        if (b->nodes[i].id == id)
            return b->nodes[i].addr;
    return NULL;
}

static int corrupt(char *err, size_t err_bytes, unsigned line, const char *what)
{
    if (err && err_bytes)
        snprintf(err, err_bytes, "%s:%u: %s", ADDRBOOK_FILE, line, what);
    return INBOX_ECORRUPT;
}

int addrbook_load(const char *data_dir, struct addrbook *b, char *err,
                  size_t err_bytes)
{
    char path[ADDRBOOK_PATH_BYTES];
    memset(b, 0, sizeof *b);
    int rc = path_of(path, sizeof path, data_dir, ADDRBOOK_FILE);
    if (rc != 0)
        return rc;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    char line[CONFIG_ADDR_BYTES + 64];
    unsigned n = 0;
    bool ended = false;
    rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        n++;
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            rc = corrupt(err, err_bytes, n, "line too long or not ended");
            break;
        }
        line[len - 1] = '\0';
        if (ended) {
            rc = corrupt(err, err_bytes, n, "text after the end line");
        } else if (n == 1) {
            if (strcmp(line, ADDRBOOK_MAGIC) != 0)
                rc = corrupt(err, err_bytes, n, "not '" ADDRBOOK_MAGIC "'");
        } else if (strncmp(line, "end ", 4) == 0) {
            char *e = NULL;
            unsigned long long c = strtoull(line + 4, &e, 10);
            if (*e != '\0' || c != b->count)
                rc = corrupt(err, err_bytes, n, "end count disagrees");
            ended = true;
        } else {
            char *sp = strchr(line, ' ');
            char *e = NULL;
            uint64_t id = sp ? strtoull(line, &e, 10) : 0;
            if (!sp || e != sp || id == 0 ||
                (b->count && b->nodes[b->count - 1].id >= id) ||
                addrbook_set(b, id, sp + 1) != 1)
                rc = corrupt(err, err_bytes, n,
                             "not '<id> <host:port>' with ids ascending");
        }
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    if (rc == 0 && !ended)
        rc = corrupt(err, err_bytes, n, "no end line (file cut short)");
    fclose(f);
    if (rc != 0)
        memset(b, 0, sizeof *b);
    return rc;
}

int addrbook_save(const char *data_dir, const struct addrbook *b)
{
    /* At most 32 bytes of id, space and newline per node beside its
     * address, and two lines of framing. */
    char buf[64 + ADDRBOOK_NODES_MAX * (CONFIG_ADDR_BYTES + 32)];
    size_t at = 0;
    at += (size_t)snprintf(buf + at, sizeof buf - at, "%s\n", ADDRBOOK_MAGIC);
    for (size_t i = 0; i < b->count; i++)
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%" PRIu64 " %s\n",
                               b->nodes[i].id, b->nodes[i].addr);
    at += (size_t)snprintf(buf + at, sizeof buf - at, "end %zu\n", b->count);
    if (at >= sizeof buf)
        return INBOX_ERANGE;
    return durable_file_replace(data_dir, ADDRBOOK_FILE, buf, at);
}
