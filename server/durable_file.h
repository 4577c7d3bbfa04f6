/*
 * durable_file.h — small files replaced atomically and durably: the node's
 * identity (node.meta), the shards' memberships (members), the address
 * book (peers).
 *
 * durable_file_replace writes DIR/NAME.tmp, fsyncs it, renames it over
 * DIR/NAME and fsyncs DIR, so after a crash at any point DIR/NAME is
 * either the old file or the new one, whole, and once it returns 0 the new
 * one survives power loss. A failed attempt removes the temporary file.
 */
#ifndef INBOX_SERVER_DURABLE_FILE_H
#define INBOX_SERVER_DURABLE_FILE_H

#include <stddef.h>

/* 0, INBOX_ERANGE (path too long) or -errno. */
int durable_file_replace(const char *dir, const char *name, const void *buf,
                         size_t len);
/* fsync a directory (a rename or unlink in it becomes durable). 0 or
 * -errno. */
int durable_dir_sync(const char *dir);

#endif /* INBOX_SERVER_DURABLE_FILE_H */
