/*
 * durable_file.c — write to a temporary file, fsync, rename, fsync the
 * directory.
 */
#include "durable_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "inbox/error.h"

#define DURABLE_PATH_BYTES 1200u

int durable_dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int durable_file_replace(const char *dir, const char *name, const void *buf,
                         size_t len)
{
    char path[DURABLE_PATH_BYTES], tmp[DURABLE_PATH_BYTES];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    int m = snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    if (n < 0 || (size_t)n >= sizeof path || m < 0 || (size_t)m >= sizeof tmp)
        return INBOX_ERANGE;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        (void)unlink(tmp);
        return rc;
    }
    return durable_dir_sync(dir);
}
