/*
 * faultvfs.c — in-memory file layer with injected failures and crashes
 * (model and contract in faultvfs.h).
 */
#include "faultvfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECTOR 512u

struct content {
    uint8_t *p;
    size_t len, cap;
};

struct inode {
    struct content vol, dur;
    size_t dirty_lo, dirty_hi; /* volatile bytes that differ from durable */
    bool locked;               /* by a handle from fv_lock */
    struct inode *next;        /* all inodes, freed with the vfs */
};

struct dirent_ {
    char *path;
    struct inode *ino;
};

struct names {
    struct dirent_ *v;
    size_t n, cap;
};

struct faultvfs {
    struct vfs base; /* first: the vfs pointer is the faultvfs pointer */
    pthread_mutex_t mu;
    uint64_t rng;
    struct inode *inodes;
    struct names vol, dur;
    uint64_t gen; /* restarts; handles of older generations are dead */
    bool crashed;
    uint64_t fail_write, fail_sync, crash_at; /* countdowns, 0 = off */
    uint64_t sync_delay_us; /* fdatasync takes this long (outside mu) */
    uint64_t data_syncs, writes, injected;
};

struct ffile {
    struct vfs_file base;
    struct inode *ino;
    uint64_t gen;
    bool lock; /* holds its inode's lock */
};

static struct faultvfs *FV(const struct vfs *v)
{
    return (struct faultvfs *)(void *)(uintptr_t)v;
}

static struct ffile *FF(struct vfs_file *f)
{
    return (struct ffile *)(void *)f;
}

static uint64_t rng_next(struct faultvfs *fv)
{
    /* splitmix64 */
    uint64_t z = (fv->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int content_resize(struct content *c, size_t len)
{
    if (len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < len)
            cap *= 2;
        uint8_t *p = realloc(c->p, cap);
        if (p == NULL)
            return -ENOMEM;
        c->p = p;
        c->cap = cap;
    }
    if (len > c->len)
        memset(c->p + c->len, 0, len - c->len);
    c->len = len;
    return 0;
}

static void dirty(struct inode *ino, size_t lo, size_t hi)
{
    if (ino->dirty_lo >= ino->dirty_hi) {
        ino->dirty_lo = lo;
        ino->dirty_hi = hi;
        return;
    }
    if (lo < ino->dirty_lo)
        ino->dirty_lo = lo;
    if (hi > ino->dirty_hi)
        ino->dirty_hi = hi;
}

static struct dirent_ *names_find(struct names *ns, const char *path)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i].path, path) == 0)
            return &ns->v[i];
    return NULL;
}

static int names_add(struct names *ns, const char *path, struct inode *ino)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? 2 * ns->cap : 16;
        struct dirent_ *v = realloc(ns->v, cap * sizeof *v);
        if (v == NULL)
            return -ENOMEM;
        ns->v = v;
        ns->cap = cap;
    }
    char *p = strdup(path);
    if (p == NULL)
        return -ENOMEM;
    ns->v[ns->n++] = (struct dirent_){.path = p, .ino = ino};
    return 0;
}

static void names_del(struct names *ns, struct dirent_ *e)
{
    free(e->path);
    *e = ns->v[--ns->n];
}

/* Is path directly inside dir? */
static bool in_dir(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && path[n] == '/' &&
           strchr(path + n + 1, '/') == NULL;
}

/* Count one mutating call; true if the machine crashes before it. */
static bool mutation(struct faultvfs *fv)
{
    if (fv->crashed)
        return true;
    if (fv->crash_at && --fv->crash_at == 0)
        fv->crashed = true;
    return fv->crashed;
}

static bool dead(struct faultvfs *fv, struct vfs_file *f)
{
    return fv->crashed || FF(f)->gen != fv->gen;
}

/* ---- the vfs table ------------------------------------------------------ */

static int fv_open(const struct vfs *v, const char *path, unsigned flags,
                   struct vfs_file **out)
{
    struct faultvfs *fv = FV(v);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    struct dirent_ *e = names_find(&fv->vol, path);
    struct inode *ino = e ? e->ino : NULL;
    if ((flags & (VFS_OPEN_CREATE | VFS_OPEN_TRUNCATE)) && mutation(fv)) {
        rc = -EIO;
    } else if (fv->crashed) {
        rc = -EIO;
    } else if (ino == NULL && !(flags & VFS_OPEN_CREATE)) {
        rc = -ENOENT;
    } else if (ino == NULL) {
        ino = calloc(1, sizeof *ino);
        if (ino == NULL || names_add(&fv->vol, path, ino) != 0) {
            free(ino);
            rc = -ENOMEM;
        } else {
            ino->next = fv->inodes;
            fv->inodes = ino;
        }
    }
    if (rc == 0 && (flags & VFS_OPEN_TRUNCATE) && ino->vol.len > 0) {
        dirty(ino, 0, ino->vol.len);
        ino->vol.len = 0;
    }
    struct ffile *f = NULL;
    if (rc == 0 && (f = calloc(1, sizeof *f)) == NULL)
        rc = -ENOMEM;
    if (rc == 0) {
        f->base.vfs = v;
        f->ino = ino;
        f->gen = fv->gen;
        *out = &f->base;
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_close(struct vfs_file *f)
{
    struct faultvfs *fv = FV(f->vfs);
    pthread_mutex_lock(&fv->mu);
    if (FF(f)->lock)
        FF(f)->ino->locked = false;
    pthread_mutex_unlock(&fv->mu);
    free(FF(f));
    return 0;
}

static int fv_pread(struct vfs_file *f, void *buf, size_t len, uint64_t off,
                    size_t *got)
{
    struct faultvfs *fv = FV(f->vfs);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (dead(fv, f)) {
        rc = -EIO;
    } else {
        const struct content *c = &FF(f)->ino->vol;
        size_t n = off >= c->len ? 0 : c->len - (size_t)off;
        if (n > len)
            n = len;
        if (n > 0)
            memcpy(buf, c->p + off, n);
        *got = n;
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_pwrite(struct vfs_file *f, const void *buf, size_t len,
                     uint64_t off)
{
    struct faultvfs *fv = FV(f->vfs);
    struct inode *ino = FF(f)->ino;
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (mutation(fv) || dead(fv, f)) {
        rc = -EIO;
        goto out;
    }
    fv->writes++;
    size_t n = len;
    if (fv->fail_write && --fv->fail_write == 0) {
        fv->injected++;
        rc = -EIO;
        n = len ? (size_t)(rng_next(fv) % len) : 0; /* a partial write */
    }
    if (off + n > ino->vol.len && content_resize(&ino->vol, off + n) != 0) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(ino->vol.p + off, buf, n);
    if (n > 0)
        dirty(ino, (size_t)off, (size_t)off + n);
out:
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static bool sync_fails(struct faultvfs *fv)
{
    if (fv->fail_sync && --fv->fail_sync == 0) {
        fv->injected++;
        return true;
    }
    return false;
}

static int fv_fdatasync(struct vfs_file *f)
{
    struct faultvfs *fv = FV(f->vfs);
    struct inode *ino = FF(f)->ino;
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    uint64_t delay = fv->sync_delay_us;
    pthread_mutex_unlock(&fv->mu);
    if (delay > 0) /* a disk's flush latency: what group commit hides */
        nanosleep(&(struct timespec){.tv_sec = (time_t)(delay / 1000000),
                                     .tv_nsec = (long)(delay % 1000000) * 1000},
                  NULL);
    pthread_mutex_lock(&fv->mu);
    if (mutation(fv) || dead(fv, f)) {
        rc = -EIO;
    } else if (sync_fails(fv)) {
        rc = -EIO;
    } else if ((rc = content_resize(&ino->dur, ino->vol.len)) == 0) {
        size_t hi = ino->dirty_hi < ino->vol.len ? ino->dirty_hi : ino->vol.len;
        if (ino->dirty_lo < hi)
            memcpy(ino->dur.p + ino->dirty_lo, ino->vol.p + ino->dirty_lo,
                   hi - ino->dirty_lo);
        ino->dirty_lo = ino->dirty_hi = 0;
        fv->data_syncs++;
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int set_len(struct faultvfs *fv, struct vfs_file *f, uint64_t len,
                   bool grow_only)
{
    struct inode *ino = FF(f)->ino;
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (mutation(fv) || dead(fv, f)) {
        rc = -EIO;
    } else if (!(grow_only && len <= ino->vol.len)) {
        size_t old = ino->vol.len;
        rc = content_resize(&ino->vol, (size_t)len);
        if (rc == 0 && old != len)
            dirty(ino, old < len ? old : (size_t)len, old < len ? len : old);
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_ftruncate(struct vfs_file *f, uint64_t size)
{
    return set_len(FV(f->vfs), f, size, false);
}

static int fv_fallocate(struct vfs_file *f, uint64_t off, uint64_t len)
{
    return set_len(FV(f->vfs), f, off + len, true);
}

static int fv_size(struct vfs_file *f, uint64_t *size)
{
    struct faultvfs *fv = FV(f->vfs);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (dead(fv, f))
        rc = -EIO;
    else
        *size = FF(f)->ino->vol.len;
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_unlink(const struct vfs *v, const char *path)
{
    struct faultvfs *fv = FV(v);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    struct dirent_ *e = names_find(&fv->vol, path);
    if (mutation(fv))
        rc = -EIO;
    else if (e == NULL)
        rc = -ENOENT;
    else
        names_del(&fv->vol, e);
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_rename(const struct vfs *v, const char *from, const char *to)
{
    struct faultvfs *fv = FV(v);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    struct dirent_ *e = names_find(&fv->vol, from);
    if (mutation(fv)) {
        rc = -EIO;
    } else if (e == NULL) {
        rc = -ENOENT;
    } else {
        struct inode *ino = e->ino;
        names_del(&fv->vol, e);
        struct dirent_ *t = names_find(&fv->vol, to);
        if (t != NULL)
            t->ino = ino;
        else
            rc = names_add(&fv->vol, to, ino);
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_list_dir(const struct vfs *v, const char *dir, vfs_list_dir_cb cb,
                       void *arg)
{
    struct faultvfs *fv = FV(v);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (fv->crashed)
        rc = -EIO;
    for (size_t i = 0; i < fv->vol.n && rc == 0; i++)
        if (in_dir(fv->vol.v[i].path, dir))
            rc = cb(arg, fv->vol.v[i].path + strlen(dir) + 1);
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_fsync_dir(const struct vfs *v, const char *dir)
{
    struct faultvfs *fv = FV(v);
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    if (mutation(fv) || sync_fails(fv)) {
        rc = -EIO;
        goto out;
    }
    for (size_t i = 0; i < fv->dur.n;) {
        if (in_dir(fv->dur.v[i].path, dir))
            names_del(&fv->dur, &fv->dur.v[i]);
        else
            i++;
    }
    for (size_t i = 0; i < fv->vol.n && rc == 0; i++)
        if (in_dir(fv->vol.v[i].path, dir))
            rc = names_add(&fv->dur, fv->vol.v[i].path, fv->vol.v[i].ino);
out:
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int fv_lock(const struct vfs *v, const char *path, struct vfs_file **out)
{
    struct faultvfs *fv = FV(v);
    int rc = fv_open(v, path, VFS_OPEN_CREATE, out);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&fv->mu);
    struct ffile *f = FF(*out);
    if (f->ino->locked) {
        rc = -EWOULDBLOCK;
    } else {
        f->ino->locked = true;
        f->lock = true;
    }
    pthread_mutex_unlock(&fv->mu);
    if (rc != 0) {
        fv_close(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- control ------------------------------------------------------------ */

struct faultvfs *faultvfs_new(uint64_t seed)
{
    struct faultvfs *fv = calloc(1, sizeof *fv);
    if (fv == NULL)
        return NULL;
    fv->base = (struct vfs){
        .open = fv_open,
        .close = fv_close,
        .pread = fv_pread,
        .pwrite = fv_pwrite,
        .fdatasync = fv_fdatasync,
        .ftruncate = fv_ftruncate,
        .fallocate = fv_fallocate,
        .size = fv_size,
        .unlink = fv_unlink,
        .rename = fv_rename,
        .list_dir = fv_list_dir,
        .fsync_dir = fv_fsync_dir,
        .lock = fv_lock,
    };
    pthread_mutex_init(&fv->mu, NULL);
    fv->rng = seed;
    return fv;
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i].path);
    free(ns->v);
}

void faultvfs_free(struct faultvfs *fv)
{
    if (fv == NULL)
        return;
    names_free(&fv->vol);
    names_free(&fv->dur);
    while (fv->inodes) {
        struct inode *n = fv->inodes->next;
        free(fv->inodes->vol.p);
        free(fv->inodes->dur.p);
        free(fv->inodes);
        fv->inodes = n;
    }
    pthread_mutex_destroy(&fv->mu);
    free(fv);
}

const struct vfs *faultvfs_vfs(struct faultvfs *fv)
{
    return &fv->base;
}

#define SETTER(name, field)                                                    \
    void faultvfs_##name(struct faultvfs *fv, uint64_t nth)                    \
    {                                                                          \
        pthread_mutex_lock(&fv->mu);                                           \
        fv->field = nth;                                                       \
        pthread_mutex_unlock(&fv->mu);                                         \
    }
SETTER(fail_write, fail_write)
SETTER(fail_sync, fail_sync)
SETTER(crash_at, crash_at)
SETTER(sync_delay_us, sync_delay_us)
#undef SETTER

#define GETTER(type, name, expr)                                               \
    type faultvfs_##name(struct faultvfs *fv)                                  \
    {                                                                          \
        pthread_mutex_lock(&fv->mu);                                           \
        type v = (expr);                                                       \
        pthread_mutex_unlock(&fv->mu);                                         \
        return v;                                                              \
    }
GETTER(bool, crashed, fv->crashed)
GETTER(uint64_t, data_syncs, fv->data_syncs)
GETTER(uint64_t, writes, fv->writes)
GETTER(uint64_t, injected, fv->injected)
#undef GETTER

void faultvfs_crash(struct faultvfs *fv)
{
    pthread_mutex_lock(&fv->mu);
    fv->crashed = true;
    pthread_mutex_unlock(&fv->mu);
}

/* Write a random subset of the unsynced sectors through to durable. */
static void tear(struct faultvfs *fv, struct inode *ino)
{
    size_t hi = ino->dirty_hi < ino->vol.len ? ino->dirty_hi : ino->vol.len;
    for (size_t lo = ino->dirty_lo / SECTOR * SECTOR; lo < hi; lo += SECTOR) {
        if (rng_next(fv) & 1)
            continue;
        size_t a = lo < ino->dirty_lo ? ino->dirty_lo : lo;
        size_t b = lo + SECTOR < hi ? lo + SECTOR : hi;
        if (b > ino->dur.len && content_resize(&ino->dur, b) != 0)
            return;
        memcpy(ino->dur.p + a, ino->vol.p + a, b - a);
    }
}

void faultvfs_restart(struct faultvfs *fv, bool torn)
{
    pthread_mutex_lock(&fv->mu);
    for (struct inode *ino = fv->inodes; ino; ino = ino->next) {
        if (torn)
            tear(fv, ino);
        content_resize(&ino->vol, ino->dur.len);
        if (ino->dur.len > 0)
            memcpy(ino->vol.p, ino->dur.p, ino->dur.len);
        ino->dirty_lo = ino->dirty_hi = 0;
    }
    names_free(&fv->vol);
    fv->vol = (struct names){0};
    for (size_t i = 0; i < fv->dur.n; i++)
        names_add(&fv->vol, fv->dur.v[i].path, fv->dur.v[i].ino);
    fv->crashed = false;
    fv->fail_write = fv->fail_sync = fv->crash_at = 0;
    fv->gen++;
    pthread_mutex_unlock(&fv->mu);
}

void faultvfs_restart_keep(struct faultvfs *fv)
{
    pthread_mutex_lock(&fv->mu);
    fv->crashed = false;
    fv->fail_write = fv->fail_sync = fv->crash_at = 0;
    fv->gen++;
    pthread_mutex_unlock(&fv->mu);
}

/* memmem is a GNU extension; this is the portable equivalent. */
static bool find(const uint8_t *hay, size_t n, const uint8_t *needle,
                 size_t len)
{
    if (len == 0)
        return true;
    for (const uint8_t *p = hay; n >= len;) {
        const uint8_t *q = memchr(p, needle[0], n - len + 1);
        if (q == NULL)
            return false;
        if (memcmp(q, needle, len) == 0)
            return true;
        n -= (size_t)(q - p) + 1;
        p = q + 1;
    }
    return false;
}

bool faultvfs_durable_contains(struct faultvfs *fv, const void *needle,
                               size_t len)
{
    bool found = false;
    pthread_mutex_lock(&fv->mu);
    for (size_t i = 0; i < fv->dur.n && !found; i++) {
        const struct content *c = &fv->dur.v[i].ino->dur;
        found = find(c->p, c->len, needle, len);
    }
    pthread_mutex_unlock(&fv->mu);
    return found;
}

int faultvfs_file_get(struct faultvfs *fv, const char *path, uint8_t **data,
                      size_t *len)
{
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    struct dirent_ *e = names_find(&fv->vol, path);
    if (e == NULL) {
        rc = -ENOENT;
    } else {
        *len = e->ino->vol.len;
        *data = malloc(*len ? *len : 1);
        if (*data == NULL)
            rc = -ENOMEM;
        else if (*len)
            memcpy(*data, e->ino->vol.p, *len);
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

int faultvfs_file_set(struct faultvfs *fv, const char *path,
                      const uint8_t *data, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&fv->mu);
    struct dirent_ *e = names_find(&fv->vol, path);
    if (e == NULL) {
        rc = -ENOENT;
    } else {
        struct inode *ino = e->ino;
        ino->vol.len = ino->dur.len = 0;
        rc = content_resize(&ino->vol, len);
        if (rc == 0)
            rc = content_resize(&ino->dur, len);
        if (rc == 0 && len > 0) {
            memcpy(ino->vol.p, data, len);
            memcpy(ino->dur.p, data, len);
        }
        ino->dirty_lo = ino->dirty_hi = 0;
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}
