/*
 * vfs.h — the small file layer under the write-ahead log.
 *
 * Everything the WAL does to the file system goes through a `struct vfs`:
 * open, pread, pwrite, fdatasync, ftruncate, fallocate, size, close, unlink,
 * rename, list a directory, fsync a directory, lock a file. `vfs_posix()` is
 * the real implementation; tests/lib/faultvfs.c is an in-memory one that fails
 * the Nth write or sync and simulates crashes (SQLite's test VFS habit). The
 * table is the seam for fault injection, so keep it narrow.
 *
 * Conventions: every function returns 0 or a negative errno (-EIO, -ENOSPC).
 * pwrite writes all `len` bytes or fails; pread reads until `len` bytes or
 * end of file and reports how many it got. A `struct vfs_file` belongs to
 * the caller from open until close; close always releases it, even when it
 * reports an error. Calls on distinct files may run concurrently; pread,
 * pwrite and fdatasync on one file may too (as with the POSIX calls).
 */
#ifndef INBOX_ENGINE_VFS_H
#define INBOX_ENGINE_VFS_H

#include <stddef.h>
#include <stdint.h>

/* open() flags. The file is always opened read-write. */
#define VFS_OPEN_CREATE 0x1u   /* create if missing */
#define VFS_OPEN_TRUNCATE 0x2u /* truncate to zero length */

struct vfs;

/* An open file. Implementations embed this as their first member. */
struct vfs_file {
    const struct vfs *vfs;
};

/* Called once per directory entry (not "." or ".."); nonzero stops the
 * listing and is returned by list_dir. `name` is valid during the call. */
typedef int (*vfs_list_dir_cb)(void *arg, const char *name);

struct vfs {
    int (*open)(const struct vfs *vfs, const char *path, unsigned flags,
                struct vfs_file **out);
    int (*close)(struct vfs_file *f);
    int (*pread)(struct vfs_file *f, void *buf, size_t len, uint64_t off,
                 size_t *got);
    int (*pwrite)(struct vfs_file *f, const void *buf, size_t len,
                  uint64_t off);
    int (*fdatasync)(struct vfs_file *f);
    int (*ftruncate)(struct vfs_file *f, uint64_t size);
    /* Make [off, off + len) allocated; the file grows if it ends earlier
     * and the new bytes read as zero. */
    int (*fallocate)(struct vfs_file *f, uint64_t off, uint64_t len);
    int (*size)(struct vfs_file *f, uint64_t *size);
    int (*unlink)(const struct vfs *vfs, const char *path);
    int (*rename)(const struct vfs *vfs, const char *from, const char *to);
    int (*list_dir)(const struct vfs *vfs, const char *dir, vfs_list_dir_cb cb,
                    void *arg);
    /* Make the directory's entries (creates, renames, unlinks) durable. */
    int (*fsync_dir)(const struct vfs *vfs, const char *dir);
    /* Create or open the file at path and hold an exclusive lock on it
     * until the returned file is closed; -EWOULDBLOCK if another holder
     * (another process, or another open in this one) has it. */
    int (*lock)(const struct vfs *vfs, const char *path, struct vfs_file **out);
};

/* The POSIX implementation. Static; valid for the life of the process. */
const struct vfs *vfs_posix(void);

/* Dispatch helpers, so callers read like the system calls they stand for. */
static inline int vfs_open(const struct vfs *vfs, const char *path,
                           unsigned flags, struct vfs_file **out)
{
    return vfs->open(vfs, path, flags, out);
}

static inline int vfs_close(struct vfs_file *f)
{
    return f->vfs->close(f);
}

static inline int vfs_pread(struct vfs_file *f, void *buf, size_t len,
                            uint64_t off, size_t *got)
{
    return f->vfs->pread(f, buf, len, off, got);
}

static inline int vfs_pwrite(struct vfs_file *f, const void *buf, size_t len,
                             uint64_t off)
{
    return f->vfs->pwrite(f, buf, len, off);
}

static inline int vfs_fdatasync(struct vfs_file *f)
{
    return f->vfs->fdatasync(f);
}

static inline int vfs_ftruncate(struct vfs_file *f, uint64_t size)
{
    return f->vfs->ftruncate(f, size);
}

static inline int vfs_fallocate(struct vfs_file *f, uint64_t off, uint64_t len)
{
    return f->vfs->fallocate(f, off, len);
}

static inline int vfs_size(struct vfs_file *f, uint64_t *size)
{
    return f->vfs->size(f, size);
}

static inline int vfs_unlink(const struct vfs *vfs, const char *path)
{
    return vfs->unlink(vfs, path);
}

static inline int vfs_rename(const struct vfs *vfs, const char *from,
                             const char *to)
{
    return vfs->rename(vfs, from, to);
}

static inline int vfs_list_dir(const struct vfs *vfs, const char *dir,
                               vfs_list_dir_cb cb, void *arg)
{
    return vfs->list_dir(vfs, dir, cb, arg);
}

static inline int vfs_fsync_dir(const struct vfs *vfs, const char *dir)
{
    return vfs->fsync_dir(vfs, dir);
}

static inline int vfs_lock(const struct vfs *vfs, const char *path,
                           struct vfs_file **out)
{
    return vfs->lock(vfs, path, out);
}

#endif /* INBOX_ENGINE_VFS_H */
