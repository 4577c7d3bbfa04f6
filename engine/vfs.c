/*
 * vfs.c — the POSIX implementation of the file layer (see vfs.h).
 *
 * Thin wrappers over the system calls that retry EINTR and short transfers
 * and turn failures into negative errno. Nothing here buffers: durability is
 * exactly what fdatasync(2) and fsync(2) on the directory say it is.
 */
#include "vfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct posix_file {
    struct vfs_file base;
    int fd;
};

static struct posix_file *pf(struct vfs_file *f)
{
    return (struct posix_file *)(void *)f;
}

static int px_open(const struct vfs *vfs, const char *path, unsigned flags,
                   struct vfs_file **out)
{
    int oflags = O_RDWR | O_CLOEXEC;
    if (flags & VFS_OPEN_CREATE)
        oflags |= O_CREAT;
    if (flags & VFS_OPEN_TRUNCATE)
        oflags |= O_TRUNC;
    struct posix_file *f = malloc(sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    int fd;
    do {
        fd = open(path, oflags, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int rc = -errno;
        free(f);
        return rc;
    }
    f->base.vfs = vfs;
    f->fd = fd;
    *out = &f->base;
    return 0;
}

static int px_close(struct vfs_file *f)
{
    /* close(2) releases the descriptor even when it fails; never retry. */
    int rc = close(pf(f)->fd) == 0 ? 0 : -errno;
    free(pf(f));
    return rc;
}

static int px_pread(struct vfs_file *f, void *buf, size_t len, uint64_t off,
                    size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(pf(f)->fd, (char *)buf + done, len - done,
                          (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

static int px_pwrite(struct vfs_file *f, const void *buf, size_t len,
                     uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(pf(f)->fd, (const char *)buf + done, len - done,
                           (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    return 0;
}

static int px_fdatasync(struct vfs_file *f)
{
    /* No EINTR retry: after a failed fdatasync the kernel may have dropped
     * the dirty pages, so a retry that "succeeds" proves nothing. The WAL
     * treats any failure as fatal (sticky). */
    return fdatasync(pf(f)->fd) == 0 ? 0 : -errno;
}

static int px_ftruncate(struct vfs_file *f, uint64_t size)
{
    int rc;
    do {
        rc = ftruncate(pf(f)->fd, (off_t)size);
    } while (rc < 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}

static int px_fallocate(struct vfs_file *f, uint64_t off, uint64_t len)
{
    int rc;
    do {
        rc = posix_fallocate(pf(f)->fd, (off_t)off, (off_t)len);
    } while (rc == EINTR);
    return -rc; /* posix_fallocate returns the error number itself */
}

static int px_size(struct vfs_file *f, uint64_t *size)
{
    struct stat st;
    if (fstat(pf(f)->fd, &st) != 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_unlink(const struct vfs *vfs, const char *path)
{
    (void)vfs;
    return unlink(path) == 0 ? 0 : -errno;
}

static int px_rename(const struct vfs *vfs, const char *from, const char *to)
{
    (void)vfs;
    return rename(from, to) == 0 ? 0 : -errno;
}

static int px_list_dir(const struct vfs *vfs, const char *dir,
                       vfs_list_dir_cb cb, void *arg)
{
    (void)vfs;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            rc = errno ? -errno : 0;
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        rc = cb(arg, e->d_name);
        if (rc != 0)
            break;
    }
    closedir(d);
    return rc;
}

static int px_fsync_dir(const struct vfs *vfs, const char *dir)
{
    (void)vfs;
    int fd;
    do {
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* flock(2), not fcntl(2) locks: those are per process, so a second open of
 * the same log in one process would not see the first. */
static int px_lock(const struct vfs *vfs, const char *path,
                   struct vfs_file **out)
{
    int rc = px_open(vfs, path, VFS_OPEN_CREATE, out);
    if (rc != 0)
        return rc;
    int r;
    do {
        r = flock(pf(*out)->fd, LOCK_EX | LOCK_NB);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        rc = -errno;
        px_close(*out);
        *out = NULL;
    }
    return rc;
}

static const struct vfs px_vfs = {
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fdatasync = px_fdatasync,
    .ftruncate = px_ftruncate,
    .fallocate = px_fallocate,
    .size = px_size,
    .unlink = px_unlink,
    .rename = px_rename,
    .list_dir = px_list_dir,
    .fsync_dir = px_fsync_dir,
    .lock = px_lock,
};

const struct vfs *vfs_posix(void)
{
    return &px_vfs;
}
