/*
 * powerfail.c — what a power cut would take from inboxd's WAL.
 *
 * An LD_PRELOAD library for jepsen/run.py's `power` nemesis. A process
 * kill keeps everything a program wrote in the page cache, so it cannot
 * show that an acknowledgement came before its fsync; a power cut can. This
 * library records, for each WAL segment (a path containing "/wal/wal-"),
 * how far the file was made durable: on each successful fdatasync/fsync of
 * a file descriptor, the end of the data written to it by pwrite before
 * that sync began. After killing the node, run.py erases what lies past
 * that point (all of it, or all but a whole number of 512-byte sectors:
 * un-synced sectors may or may not have reached the disk), which is what
 * the disk could hold after a power cut.
 *
 * The record is a file ($POWERFAIL_STATE), truncated when the process
 * starts, of 256-byte slots indexed by fd: { u64 synced end (little
 * endian), path NUL-terminated }. Slots are written with pwrite, so a
 * SIGKILL leaves them whole. A segment with no slot was not synced by this
 * process: run.py leaves it whole (it was synced before this process
 * started: recovery syncs the last segment, and sealed segments are synced
 * whole). A new segment's data is therefore only cut once the process has
 * synced it at least once; before that the cut is conservative (nothing).
 *
 * Without $POWERFAIL_STATE every call passes straight through. Only pwrite
 * is tracked, as that is all the WAL writes with (engine/vfs.c).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define POWERFAIL_FDS_MAX 65536
#define POWERFAIL_SLOT_BYTES 256
#define POWERFAIL_PATH_BYTES (POWERFAIL_SLOT_BYTES - 8)

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);
typedef int (*close_fn)(int);

static pwrite_fn real_pwrite;
static pwrite_fn real_pwrite64;
static sync_fn real_fdatasync;
static sync_fn real_fsync;
static close_fn real_close;
static int state_fd = -1;
/* End of the data pwrite put in each fd since it was opened. */
static _Atomic uint64_t written_end[POWERFAIL_FDS_MAX];

__attribute__((constructor)) static void powerfail_init(void)
{
    real_pwrite = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite64");
    real_fdatasync = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    real_close = (close_fn)dlsym(RTLD_NEXT, "close");
    const char *path = getenv("POWERFAIL_STATE");
    if (path == NULL || path[0] == 0)
        return;
    state_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (state_fd < 0) {
        fprintf(stderr, "powerfail: cannot open %s: %s\n", path,
                strerror(errno));
        abort(); /* a power nemesis without its record would lie */
    }
}

static void note_written(int fd, off_t off, ssize_t n)
{
    if (state_fd < 0 || n <= 0 || fd < 0 || fd >= POWERFAIL_FDS_MAX)
        return;
    uint64_t end = (uint64_t)off + (uint64_t)n;
    uint64_t cur = atomic_load(&written_end[fd]);
    while (cur < end &&
           !atomic_compare_exchange_weak(&written_end[fd], &cur, end)) {
    }
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    ssize_t n = real_pwrite(fd, buf, len, off);
    note_written(fd, off, n);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    ssize_t n = real_pwrite64(fd, buf, len, off);
    note_written(fd, off, n);
    return n;
}

/* After a successful sync of fd: the data written before it began is
 * durable. Record it if fd is a WAL segment. */
static void note_synced(int fd, uint64_t end)
{
    if (end == 0)
        return;
    char link[64];
    uint8_t slot[POWERFAIL_SLOT_BYTES];
    memset(slot, 0, sizeof slot);
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, (char *)slot + 8, POWERFAIL_PATH_BYTES - 1);
    if (k <= 0 || strstr((char *)slot + 8, "/wal/wal-") == NULL)
        return;
    for (int i = 0; i < 8; i++)
        slot[i] = (uint8_t)(end >> (8 * i));
    int saved = errno;
    (void)real_pwrite(state_fd, slot, sizeof slot,
                      (off_t)fd * POWERFAIL_SLOT_BYTES);
    errno = saved;
}

static int synced(sync_fn real, int fd)
{
    bool track = state_fd >= 0 && fd >= 0 && fd < POWERFAIL_FDS_MAX;
    uint64_t end = track ? atomic_load(&written_end[fd]) : 0;
    int rc = real(fd);
    if (rc == 0 && track)
        note_synced(fd, end);
    return rc;
}

int fdatasync(int fd)
{
    return synced(real_fdatasync, fd);
}

int fsync(int fd)
{
    return synced(real_fsync, fd);
}

int close(int fd)
{
    if (fd >= 0 && fd < POWERFAIL_FDS_MAX)
        atomic_store(&written_end[fd], 0);
    return real_close(fd);
}
