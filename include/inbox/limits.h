/*
 * limits.h — every bound in inboxd, in one place.
 *
 * Each queue, batch, frame, loop and buffer has a named upper bound here
 * (TigerBeetle's habit); where bounds relate, a _Static_assert says how.
 * Lengths read off the wire or the disk are checked against these before
 * anything is allocated for them. Header-only and libc-only.
 *
 * Sections are per module; add a bound to its module's section.
 */
#ifndef INBOX_LIMITS_H
#define INBOX_LIMITS_H

#include <stdint.h>

#define INBOX_KIB (1024u)
#define INBOX_MIB (1024u * 1024u)

/* ---- data model --------------------------------------------------------- */
#define INBOX_KEY_BYTES_MIN 1u
#define INBOX_KEY_BYTES_MAX 128u
#define INBOX_MSG_ID_BYTES 16u
#define INBOX_PAYLOAD_BYTES_MAX (64u * INBOX_KIB)
/* ENQUEUE_MANY: one payload to at most this many inboxes (group fan-out). */
#define INBOX_FANOUT_INBOXES_MAX 1024u
/* SEEN_GET: at most this many inboxes per request. */
#define INBOX_SEEN_GET_INBOXES_MAX 1024u
/* FETCH: per-request caps (the request may ask for less). */
#define INBOX_FETCH_MESSAGES_MAX 1024u
#define INBOX_FETCH_BYTES_MAX (1u * INBOX_MIB)
/* Per-inbox pending bounds: defaults, configurable downwards. */
#define INBOX_PENDING_MESSAGES_DEFAULT 100000u
#define INBOX_PENDING_BYTES_DEFAULT (64u * INBOX_MIB)
/* Dedup window default: a retried msg id within this time returns its seq. */
#define INBOX_DEDUP_WINDOW_MS_DEFAULT (24u * 3600u * 1000u)
/* Shards of the key space; fixed when a cluster is created. */
#define INBOX_SHARD_COUNT_DEFAULT 64u
#define INBOX_SHARD_COUNT_MAX 65536u

/* ---- commands (engine/store entry encoding) ----------------------------- */
/* The largest encoded command: an ENQUEUE_MANY at full fan-out with the
 * largest payload, plus a fixed header. */
#define INBOX_COMMAND_HEADER_BYTES_MAX 64u
#define INBOX_COMMAND_BYTES_MAX                                                \
    (INBOX_COMMAND_HEADER_BYTES_MAX + INBOX_PAYLOAD_BYTES_MAX +                \
     INBOX_FANOUT_INBOXES_MAX * (2u + INBOX_KEY_BYTES_MAX + INBOX_MSG_ID_BYTES))

/* ---- engine/wal --------------------------------------------------------- */
#define INBOX_WAL_RECORD_OVERHEAD_BYTES 64u
#define INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX (512u * INBOX_KIB)
#define INBOX_WAL_SEGMENT_BYTES_DEFAULT (64u * INBOX_MIB)
#define INBOX_WAL_SEGMENT_BYTES_MIN (1u * INBOX_MIB)
#define INBOX_WAL_SEGMENT_BYTES_MAX (1024u * INBOX_MIB)
/* Records in one wal_append call. */
#define INBOX_WAL_BATCH_RECORDS_MAX 65536u

/* ---- raft/ -------------------------------------------------------------- */
#define INBOX_RAFT_VOTERS_MAX 7u
#define INBOX_RAFT_LEARNERS_MAX 4u

/* ---- net/ (frames) ------------------------------------------------------ */
#define INBOX_FRAME_HEADER_BYTES 24u
#define INBOX_FRAME_BODY_BYTES_MAX (2u * INBOX_MIB)

/* ---- relations ---------------------------------------------------------- */
_Static_assert(INBOX_COMMAND_BYTES_MAX <= INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX,
               "a command must fit in one WAL record");
_Static_assert(INBOX_COMMAND_BYTES_MAX <= INBOX_FRAME_BODY_BYTES_MAX,
               "a command must fit in one frame");
_Static_assert(INBOX_FETCH_BYTES_MAX + 64u * INBOX_KIB <=
                   INBOX_FRAME_BODY_BYTES_MAX,
               "a full fetch response must fit in one frame");
_Static_assert(INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX +
                       INBOX_WAL_RECORD_OVERHEAD_BYTES <=
                   INBOX_WAL_SEGMENT_BYTES_MIN,
               "the largest record must fit in the smallest segment");
_Static_assert(INBOX_FETCH_MESSAGES_MAX <= INBOX_PENDING_MESSAGES_DEFAULT,
               "fetch cap within pending cap");

#endif /* INBOX_LIMITS_H */
