/*
 * addrbook.h — where the cluster's nodes are: node id -> "host:port" (its
 * client port, which peers use too), kept in DATA/peers so a node that
 * learned a member's address at run time (ADD_NODE) still knows it after a
 * restart.
 *
 * Sources, lowest precedence first: the addresses recorded in DATA/peers,
 * then cluster.members from the configuration (which an operator edits to
 * move a node). ADD_NODE records a new address and rewrites the file.
 *
 * File format (text, one line each, '\n' ends every line):
 *   inboxd-peers 1
 *   <id> <host:port>        one per node, ids ascending, each once
 *   end <count>
 * It is written through a temporary file, fsync, rename and a directory
 * fsync, so it is either the old or the new one whole; the closing "end"
 * line with the count catches a file cut short by other means. Anything
 * else is INBOX_ECORRUPT with the line named: a node never guesses where
 * its peers are.
 *
 * Not thread-safe: the loop thread owns the book.
 */
#ifndef INBOX_SERVER_ADDRBOOK_H
#define INBOX_SERVER_ADDRBOOK_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define ADDRBOOK_FILE "peers"
#define ADDRBOOK_NODES_MAX 16u

struct addrbook {
    size_t count;
    struct config_member nodes[ADDRBOOK_NODES_MAX]; /* ids ascending */
};

/* Read DATA/peers into b (empty when there is none). 0, INBOX_ECORRUPT
 * (with "peers:LINE: what" in err), or -errno. */
int addrbook_load(const char *data_dir, struct addrbook *b, char *err,
                  size_t err_bytes);
/* Write b to DATA/peers durably. 0 or -errno. */
int addrbook_save(const char *data_dir, const struct addrbook *b);
/* Set id's address. Returns 1 when b changed, 0 when it already said so,
 * INBOX_EINVAL (id 0, address empty, too long or without a port),
 * INBOX_ERANGE (the book is full). */
int addrbook_set(struct addrbook *b, uint64_t id, const char *addr);
/* id's address, or NULL. */
const char *addrbook_get(const struct addrbook *b, uint64_t id);

#endif /* INBOX_SERVER_ADDRBOOK_H */
