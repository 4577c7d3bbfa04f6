/*
 * error.h — the one error space of inboxd.
 *
 * 0 is success. Project errors are negative numbers from -1000 down, each
 * with a stable name and a message, generated from the single X-macro list
 * below (in the manner of libuv's UV_ERRNO_MAP). System errors travel as
 * negative errno values (-EIO, -ENOSPC, ...), which never collide with the
 * project's range. The wire protocol carries the positive value of a project
 * code (see docs/protocol.md), so a code's number, once released, never
 * changes: append new codes at the end of their group only.
 *
 * Header-only and libc-only, so raft/ may include it.
 */
#ifndef INBOX_ERROR_H
#define INBOX_ERROR_H

#include <string.h>

/* X(NAME, number, message). Numbers are stable wire values. */
#define INBOX_ERR_MAP(X)                                                       \
    /* generic */                                                              \
    X(NOMEM, 1000, "out of memory")                                            \
    X(INVAL, 1001, "invalid argument")                                         \
    X(RANGE, 1002, "value out of its allowed range")                           \
    X(NOTFOUND, 1003, "not found")                                             \
    X(EXISTS, 1004, "already exists")                                          \
    X(SHUTDOWN, 1005, "shutting down")                                         \
    X(TIMEOUT, 1006, "timed out")                                              \
    X(BUSY, 1007, "busy: too many requests in flight, retry later")            \
    X(INTERNAL, 1008, "internal error")                                        \
    X(UNSUPPORTED, 1009, "operation not supported by this deployment")         \
    /* storage (engine/) */                                                    \
    X(IO, 1100, "I/O error")                                                   \
    X(CORRUPT, 1101, "corrupt record: checksum or format mismatch")            \
    X(FAILED, 1102, "storage failed earlier; refusing writes until reopen")    \
    X(FORMAT, 1103, "unsupported on-disk format version")                      \
    X(COMPACTED, 1104, "requested entries were compacted away")                \
    X(UNAVAILABLE, 1105, "requested entries are not in the log")               \
    X(FULL, 1106, "storage map is full")                                       \
    X(LOCKED, 1107, "data directory is in use by another process")             \
    /* inbox semantics (engine/store) */                                       \
    X(KEY_INVALID, 1200, "inbox key must be 1-128 bytes")                      \
    X(PAYLOAD_TOO_LARGE, 1201, "payload exceeds the per-message limit")        \
    X(INBOX_FULL_MESSAGES, 1202, "inbox has too many pending messages")        \
    X(INBOX_FULL_BYTES, 1203, "inbox has too many pending bytes")              \
    X(ACK_BEYOND_LAST, 1204, "ack is past the inbox's last sequence number")   \
    X(TOO_MANY_INBOXES, 1205, "too many inboxes in one request")               \
    X(BAD_COMMAND, 1206, "malformed command entry")                            \
    X(SNAPSHOT_MISMATCH, 1207, "snapshot does not belong to this shard")       \
    /* consensus (raft/) */                                                    \
    X(NOT_LEADER, 1300, "this node is not the leader of the shard")            \
    X(PROPOSAL_DROPPED, 1301,                                                  \
      "proposal dropped: no leader or leadership lost")                        \
    X(TOO_MANY_PROPOSALS, 1302, "too many uncommitted proposals")              \
    X(CONF_CHANGE_PENDING, 1303, "a membership change is already in progress") \
    X(STALE_READ, 1304, "read could not be confirmed by a quorum")             \
    X(TRANSFER_IN_PROGRESS, 1305, "leadership transfer in progress")           \
    /* protocol (net/) */                                                      \
    X(PROTO, 1400, "malformed frame")                                          \
    X(PROTO_VERSION, 1401, "unsupported protocol version")                     \
    X(FRAME_TOO_LARGE, 1402, "frame exceeds the size limit")                   \
    X(UNKNOWN_OP, 1403, "unknown opcode")                                      \
    X(DENIED, 1404, "permission denied")                                       \
    X(UNAUTHENTICATED, 1405, "no valid client certificate")                    \
    /* protocol (net/): TLS layer, 1450 and up */                              \
    X(TLS_HANDSHAKE, 1450, "TLS handshake failed")                             \
    X(TLS_UNTRUSTED, 1451, "peer certificate not signed by the cluster CA")    \
    X(TLS_PLAINTEXT, 1452, "peer spoke plaintext, not TLS")                    \
    X(TLS_EXPIRED, 1453, "peer certificate expired or not yet valid")          \
    X(TLS_ROLE, 1454, "peer certificate role missing or not allowed here")     \
    X(TLS_HOSTNAME, 1455, "peer certificate does not name the expected host")  \
    X(TLS_REFUSED, 1456, "peer refused the TLS session (sent a fatal alert)")  \
    X(TLS_RECORD, 1457, "corrupt or unexpected TLS record")                    \
    X(TLS_CONFIG, 1458, "cannot load TLS CA, certificate or key")

enum inbox_err {
#define INBOX_ERR_ENUM(name, num, msg) INBOX_E##name = -(num),
    INBOX_ERR_MAP(INBOX_ERR_ENUM)
#undef INBOX_ERR_ENUM
};

/* The stable name of a code ("NOT_LEADER"); for negative errno, "ERRNO". */
static inline const char *inbox_err_name(int rc)
{
    switch (rc) {
    case 0:
        return "OK";
#define INBOX_ERR_NAME(name, num, msg)                                         \
    case -(num):                                                               \
        return #name;
        INBOX_ERR_MAP(INBOX_ERR_NAME)
#undef INBOX_ERR_NAME
    default:
        return rc < 0 && rc > -1000 ? "ERRNO" : "UNKNOWN";
    }
}

/* A human message for any rc: project codes, negative errno, or 0.
 * The returned string is static; it is valid for the life of the process. */
static inline const char *inbox_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
#define INBOX_ERR_MSG(name, num, msg)                                          \
    case -(num):                                                               \
        return msg;
        INBOX_ERR_MAP(INBOX_ERR_MSG)
#undef INBOX_ERR_MSG
    default:
        return rc < 0 && rc > -1000 ? strerror(-rc) : "unknown error";
    }
}

#endif /* INBOX_ERROR_H */
