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

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int addrbook_save(const char *data_dir, const struct addrbook *b)
{
    char path[ADDRBOOK_PATH_BYTES], tmp[ADDRBOOK_PATH_BYTES];
    int rc = path_of(path, sizeof path, data_dir, ADDRBOOK_FILE);
    if (rc == 0)
        rc = path_of(tmp, sizeof tmp, data_dir, ADDRBOOK_FILE ".tmp");
    if (rc != 0)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        rc = -errno;
        close(fd);
        return rc;
    }
    fprintf(f, "%s\n", ADDRBOOK_MAGIC);
    for (size_t i = 0; i < b->count; i++)
        fprintf(f, "%" PRIu64 " %s\n", b->nodes[i].id, b->nodes[i].addr);
    fprintf(f, "end %zu\n", b->count);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = -errno;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        (void)unlink(tmp);
        return rc;
    }
    return fsync_dir(data_dir);
}
