/*
 * faultvfs.h — an in-memory file layer (engine/vfs.h) that fails on
 * command and simulates crashes, for storage tests (SQLite's test VFS).
 *
 * Model. Every file (inode) has two contents: the volatile one that reads
 * and writes see, and the durable one that survives a crash. fdatasync of
 * a file copies its volatile content to its durable one. Directory entries
 * work the same way: create, rename and unlink change the volatile
 * namespace; fsync_dir of a directory makes that directory's volatile
 * entries durable. A crash freezes the durable state: every later call
 * fails with -EIO and changes nothing, until faultvfs_restart brings the
 * file system back as the durable state says (optionally with a random
 * subset of the unsynced sectors written through, as real disks do), and
 * every file handle opened before the crash stays dead (-EIO; close frees).
 *
 * Faults: the Nth pwrite from now fails with -EIO (after writing a random
 * prefix of its bytes to the volatile content); the Nth sync (fdatasync or
 * fsync_dir) fails with -EIO and makes nothing durable; the Nth mutating
 * call crashes the machine just before it runs. Counting starts when the
 * fault is armed; 0 disarms.
 *
 * Thread-safe: one mutex around everything.
 */
#ifndef INBOX_TESTS_FAULTVFS_H
#define INBOX_TESTS_FAULTVFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfs.h"

struct faultvfs;

/* The seed drives the partial writes and torn restarts. */
struct faultvfs *faultvfs_new(uint64_t seed);
void faultvfs_free(struct faultvfs *fv);
const struct vfs *faultvfs_vfs(struct faultvfs *fv);

void faultvfs_fail_write(struct faultvfs *fv, uint64_t nth);
void faultvfs_fail_sync(struct faultvfs *fv, uint64_t nth);
void faultvfs_crash_at(struct faultvfs *fv, uint64_t nth_mutation);
/* Make every fdatasync take this long, like a real flush (0 = instant). */
void faultvfs_sync_delay_us(struct faultvfs *fv, uint64_t us);
/* Crash now. */
void faultvfs_crash(struct faultvfs *fv);
bool faultvfs_crashed(struct faultvfs *fv);
/* Power back on: the files are their durable content; with `torn`, each
 * unsynced 512-byte sector is written through with probability 1/2. */
void faultvfs_restart(struct faultvfs *fv, bool torn);

/* A process restart without power loss: files keep their volatile content,
 * handles opened before are dead, armed faults are disarmed. */
void faultvfs_restart_keep(struct faultvfs *fv);

/* Counters since creation. */
uint64_t faultvfs_data_syncs(struct faultvfs *fv);
uint64_t faultvfs_writes(struct faultvfs *fv);
uint64_t faultvfs_injected(struct faultvfs *fv); /* failures injected */

/* Does any durably named file's durable content contain these bytes? */
bool faultvfs_durable_contains(struct faultvfs *fv, const void *needle,
                               size_t len);

/* Test access to a file by path: get a malloc'd copy of its volatile
 * content (caller frees), or set its content, volatile and durable both,
 * as if written and synced (for corrupting a file on purpose). */
int faultvfs_file_get(struct faultvfs *fv, const char *path, uint8_t **data,
                      size_t *len);
int faultvfs_file_set(struct faultvfs *fv, const char *path,
                      const uint8_t *data, size_t len);

#endif /* INBOX_TESTS_FAULTVFS_H */
