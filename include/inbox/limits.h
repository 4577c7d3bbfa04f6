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
/* A message's time-to-live; 0 means "never expires". */
#define INBOX_TTL_MS_MAX (366ull * 24u * 3600u * 1000u)

/* ---- commands (engine/store entry encoding) ----------------------------- */
/* The largest encoded command: an ENQUEUE_MANY at full fan-out with the
 * largest payload, plus a fixed header. */
#define INBOX_COMMAND_HEADER_BYTES_MAX 64u
#define INBOX_COMMAND_BYTES_MAX                                                \
    (INBOX_COMMAND_HEADER_BYTES_MAX + INBOX_PAYLOAD_BYTES_MAX +                \
     INBOX_FANOUT_INBOXES_MAX *                                                \
         (2u + INBOX_KEY_BYTES_MAX + INBOX_MSG_ID_BYTES))
/* Bounded deterministic work per applied entry (engine/store): expired
 * messages removed and expired dedup records pruned. Defaults; every replica
 * of a shard must use the same values. */
#define INBOX_EXPIRY_SWEEP_MESSAGES_DEFAULT 64u
#define INBOX_DEDUP_PRUNE_RECORDS_DEFAULT 64u
/* Shard snapshot stream (engine/store): one chunk, header included. */
#define INBOX_SNAPSHOT_CHUNK_BYTES_DEFAULT (1u * INBOX_MIB)
#define INBOX_SNAPSHOT_CHUNK_BYTES_MIN (128u * INBOX_KIB)
#define INBOX_SNAPSHOT_CHUNK_BYTES_MAX (4u * INBOX_MIB)

/* ---- engine/wal --------------------------------------------------------- */
#define INBOX_WAL_RECORD_OVERHEAD_BYTES 64u
#define INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX (512u * INBOX_KIB)
#define INBOX_WAL_SEGMENT_BYTES_DEFAULT (64u * INBOX_MIB)
#define INBOX_WAL_SEGMENT_BYTES_MIN (1u * INBOX_MIB)
#define INBOX_WAL_SEGMENT_BYTES_MAX (1024u * INBOX_MIB)
/* Records in one wal_append call. */
#define INBOX_WAL_BATCH_RECORDS_MAX 65536u
/* Framed bytes of one wal_append call (the reusable encode buffer's cap). */
#define INBOX_WAL_BATCH_BYTES_MAX (64u * INBOX_MIB)
/* Shard ids in WAL records are < this: every shard plus a few system
 * groups (the metadata group). The WAL indexes shards by id directly. */
#define INBOX_WAL_SHARD_IDS_MAX (INBOX_SHARD_COUNT_MAX + 16u)
/* Length of the WAL directory's path. */
#define INBOX_WAL_DIR_BYTES_MAX 1024u

/* ---- raft/ -------------------------------------------------------------- */
#define INBOX_RAFT_VOTERS_MAX 7u
#define INBOX_RAFT_LEARNERS_MAX 4u
/* Pipelined APPENDs in flight to one follower (the window's hard cap). */
#define INBOX_RAFT_INFLIGHT_MSGS_MAX 256u
/* Entries in one APPEND, and entry data bytes in one APPEND (hard caps on
 * what a node accepts off the wire, whatever the options say). */
#define INBOX_RAFT_MSG_ENTRIES_MAX 4096u
#define INBOX_RAFT_MSG_BYTES_MAX (4u * INBOX_MIB)
/* One InstallSnapshot chunk. */
#define INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX (1u * INBOX_MIB)
/* ReadIndex requests waiting for their heartbeat round. */
#define INBOX_RAFT_READS_PENDING_MAX 1024u
/* Committed entries handed out in one ready batch. */
#define INBOX_RAFT_READY_ENTRIES_MAX 4096u
/* Uncommitted membership-change entries one log may hold (one per leader
 * term at most survives, see raft.c); more is refused as malformed. */
#define INBOX_RAFT_CONF_PENDING_MAX 16u
_Static_assert(INBOX_COMMAND_BYTES_MAX <= INBOX_RAFT_MSG_BYTES_MAX,
               "a command must fit in one raft APPEND");

/* ---- net/ (frames) ------------------------------------------------------ */
#define INBOX_FRAME_HEADER_BYTES 24u
#define INBOX_FRAME_BODY_BYTES_MAX (2u * INBOX_MIB)
/* A RAFT frame's batch of Raft messages (docs/protocol.md §4.12). */
#define INBOX_RAFT_BATCH_BYTES_MAX (INBOX_FRAME_BODY_BYTES_MAX - 4u)
/* TLS (net/tls): ciphertext fed in but not yet decrypted, and ciphertext
 * waiting to go out, per connection. Writes are accepted only while the
 * outbound bytes, counted with worst-case record overhead, stay under the
 * bound; the handshake and alerts may add at most INBOX_TLS_SLACK_BYTES. */
#define INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX (16u * INBOX_KIB)
#define INBOX_TLS_RECORD_OVERHEAD_BYTES_MAX 256u
#define INBOX_TLS_IN_BYTES_MAX (256u * INBOX_KIB)
#define INBOX_TLS_OUT_BYTES_MAX (256u * INBOX_KIB)
#define INBOX_TLS_SLACK_BYTES (16u * INBOX_KIB)
/* Certificates (net/cert): common name and host names, hosts per cert. */
#define INBOX_CERT_NAME_BYTES_MAX 64u
#define INBOX_CERT_HOST_BYTES_MAX 253u
#define INBOX_CERT_HOSTS_MAX 16u
/* A human error message from net/tls or net/cert, NUL included. */
#define INBOX_TLS_ERRMSG_BYTES 256u
/* Short UTF-8 text in a body: HELLO client name, ERROR message. */
#define INBOX_FRAME_TEXT_BYTES_MAX 1024u
/* A node address ("host:port") and how many one node advertises. */
#define INBOX_NODE_ADDR_BYTES_MAX 128u
#define INBOX_NODE_ADDRS_MAX 4u
/* ROUTE: nodes in the node table; STATUS: shards listed by one node. */
#define INBOX_ROUTE_NODES_MAX 1024u
#define INBOX_STATUS_SHARDS_MAX INBOX_SHARD_COUNT_MAX
/* WATCH / UNWATCH: inboxes per request. */
#define INBOX_WATCH_INBOXES_MAX 1024u
/* FETCH long-poll: the longest wait the server honours (it clamps). */
#define INBOX_FETCH_WAIT_MS_MAX 60000u
/* Transport (net/transport, docs/transport.md): per-connection buffers,
 * allocated when bytes arrive and freed once consumed; body buffers above
 * the keep size are freed after their frame; connections over the limit
 * that are still being told BUSY; the default timers. */
#define INBOX_CONN_READ_BYTES (64u * INBOX_KIB)
#define INBOX_CONN_PLAIN_BYTES INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX
#define INBOX_CONN_BODY_KEEP_BYTES (64u * INBOX_KIB)
#define INBOX_CONN_REFUSING_MAX 64u
#define INBOX_CONN_HANDSHAKE_TIMEOUT_MS_DEFAULT 10000u
#define INBOX_CONN_DRAIN_TIMEOUT_MS_DEFAULT 5000u
/* GET /metrics (net/http_metrics): request head, rendered body, clients. */
#define INBOX_HTTP_REQUEST_BYTES_MAX (8u * INBOX_KIB)
#define INBOX_HTTP_RESPONSE_BYTES_MAX (16u * INBOX_MIB)
#define INBOX_HTTP_CONNS_MAX 64u
#define INBOX_HTTP_TIMEOUT_MS_DEFAULT 5000u
/* The largest ROUTE and STATUS response bodies (docs/protocol.md). */
#define INBOX_ROUTE_NODE_BYTES_MAX                                             \
    (8u + 1u + INBOX_NODE_ADDRS_MAX * (2u + INBOX_NODE_ADDR_BYTES_MAX))
#define INBOX_ROUTE_RESP_BYTES_MAX                                             \
    (8u + 1u + 2u + INBOX_ROUTE_NODES_MAX * INBOX_ROUTE_NODE_BYTES_MAX + 4u +  \
     INBOX_SHARD_COUNT_MAX * 8u)
#define INBOX_STATUS_RESP_BYTES_MAX (20u + INBOX_STATUS_SHARDS_MAX * 29u)
_Static_assert(INBOX_ROUTE_RESP_BYTES_MAX <= INBOX_FRAME_BODY_BYTES_MAX,
               "a full shard map must fit in one frame");
_Static_assert(INBOX_STATUS_RESP_BYTES_MAX <= INBOX_FRAME_BODY_BYTES_MAX,
               "a full STATUS must fit in one frame");
_Static_assert(INBOX_KEY_BYTES_MAX <= 255u, "a key length fits in a u8");
_Static_assert(INBOX_FETCH_MESSAGES_MAX *(8u + 16u + 8u + 4u) +
                       INBOX_FETCH_BYTES_MAX + INBOX_PAYLOAD_BYTES_MAX + 64u <=
                   INBOX_FRAME_BODY_BYTES_MAX,
               "a full FETCH response (cap overshot by one payload) fits");
_Static_assert(8u + 4u + INBOX_PAYLOAD_BYTES_MAX + 2u +
                       INBOX_FANOUT_INBOXES_MAX *
                           (INBOX_MSG_ID_BYTES + 1u + INBOX_KEY_BYTES_MAX) <=
                   INBOX_FRAME_BODY_BYTES_MAX,
               "a full ENQUEUE_MANY request fits in one frame");
_Static_assert(3u + INBOX_SEEN_GET_INBOXES_MAX * (1u + INBOX_KEY_BYTES_MAX) <=
                       INBOX_FRAME_BODY_BYTES_MAX &&
                   3u + INBOX_WATCH_INBOXES_MAX * (1u + INBOX_KEY_BYTES_MAX) <=
                       INBOX_FRAME_BODY_BYTES_MAX,
               "full SEEN_GET and WATCH requests fit in one frame");

/* ---- client/ (libinbox) ------------------------------------------------ */
/* Calls one client may have in flight (submit answers INBOX_EBUSY beyond). */
#define INBOX_CLIENT_INFLIGHT_DEFAULT 1024u
#define INBOX_CLIENT_INFLIGHT_MAX 65536u
/* Seed addresses in a client config. */
#define INBOX_CLIENT_SEEDS_MAX 64u
/* Connections (one per dialled address): every node's addresses + seeds. */
#define INBOX_CLIENT_CONNS_MAX                                                 \
    (INBOX_ROUTE_NODES_MAX * INBOX_NODE_ADDRS_MAX + INBOX_CLIENT_SEEDS_MAX)
/* A call's deadline: default and cap (ms). */
#define INBOX_CLIENT_TIMEOUT_MS_DEFAULT 10000u
#define INBOX_CLIENT_TIMEOUT_MS_MAX (INBOX_FETCH_WAIT_MS_MAX + 3600000u)
/* Connect + TLS handshake + HELLO. */
#define INBOX_CLIENT_CONNECT_TIMEOUT_MS_DEFAULT 5000u
/* Retry backoff: doubles from min to max, jittered. */
#define INBOX_CLIENT_BACKOFF_MIN_MS_DEFAULT 10u
#define INBOX_CLIENT_BACKOFF_MAX_MS_DEFAULT 1000u
/* A connection with requests (or watches) outstanding and nothing received
 * for this long is sent a PING; nothing for twice this long: it is closed
 * and its requests retried elsewhere (blackholed peers, SIGSTOPped nodes). */
#define INBOX_CLIENT_STALL_TIMEOUT_MS_DEFAULT 5000u
/* NOT_LEADER redirects followed at once before backoff applies. */
#define INBOX_CLIENT_REDIRECTS_FAST_MAX 4u
/* Socket reads per connection per poll round, bytes per read. */
#define INBOX_CLIENT_READS_PER_ROUND 16u
#define INBOX_CLIENT_READ_BYTES (64u * INBOX_KIB)
/* Plaintext staged for TLS per connection: grows to one whole frame. */
#define INBOX_CLIENT_STAGE_BYTES_MIN (64u * INBOX_KIB)
_Static_assert(INBOX_CLIENT_INFLIGHT_DEFAULT <= INBOX_CLIENT_INFLIGHT_MAX,
               "default in-flight bound within its cap");
_Static_assert(INBOX_CLIENT_BACKOFF_MIN_MS_DEFAULT <=
                   INBOX_CLIENT_BACKOFF_MAX_MS_DEFAULT,
               "backoff bounds ordered");
_Static_assert(INBOX_CLIENT_STAGE_BYTES_MIN <=
                   INBOX_FRAME_HEADER_BYTES + INBOX_FRAME_BODY_BYTES_MAX,
               "staging starts below one frame");

/* ---- server/ (node: shards as Raft groups) ------------------------------ */
/* Requests accepted by a node and not yet answered, and their copied bytes
 * (inboxes, payloads): past either bound a request is refused with
 * INBOX_EBUSY. */
#define INBOX_NODE_REQUESTS_MAX 65536u
#define INBOX_NODE_REQUEST_BYTES_MAX (256u * INBOX_MIB)
/* Timer periods a node accepts. */
#define INBOX_NODE_TICK_MS_MIN 1u
#define INBOX_NODE_TICK_MS_MAX 10000u
#define INBOX_NODE_CHECKPOINT_MS_MIN 10u
#define INBOX_NODE_CHECKPOINT_MS_MAX (3600u * 1000u)
/* A graceful close waits at most this long for requests in flight. */
#define INBOX_NODE_DRAIN_MS_MAX 10000u
/* Raft batches received from peers and not yet stepped; past it a batch
 * is dropped (Raft resends). Per shard: messages parked while the shard is
 * in a ready cycle. */
#define INBOX_NODE_PEER_IN_BYTES_MAX (64u * INBOX_MIB)
#define INBOX_NODE_PARKED_BYTES_MAX (8u * INBOX_MIB)
/* Entry bytes per APPEND a node sends, so one message with its framing
 * (raft/wire.h: under 64 bytes of header per message and 32 per entry)
 * fits in one RAFT frame. */
#define INBOX_NODE_RAFT_MSG_BYTES_MAX (1u * INBOX_MIB)
/* A leader keeps this many WAL entries past its slowest follower's match
 * index before releasing them anyway (the follower then needs a
 * snapshot). */
#define INBOX_NODE_RETAIN_ENTRIES_MAX 262144u
_Static_assert(INBOX_NODE_REQUEST_BYTES_MAX >= 2u * INBOX_COMMAND_BYTES_MAX,
               "a node must accept at least a couple of the largest requests");

/* ---- relations ---------------------------------------------------------- */
_Static_assert(INBOX_COMMAND_BYTES_MAX <= INBOX_NODE_RAFT_MSG_BYTES_MAX,
               "a command must fit in one APPEND between nodes");
_Static_assert(INBOX_NODE_RAFT_MSG_BYTES_MAX + 128u +
                       32u * INBOX_RAFT_MSG_ENTRIES_MAX <=
                   INBOX_RAFT_BATCH_BYTES_MAX,
               "a full APPEND must fit in one RAFT frame");
_Static_assert(INBOX_RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 256u <=
                   INBOX_RAFT_BATCH_BYTES_MAX,
               "a snapshot chunk must fit in one RAFT frame");
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
_Static_assert(INBOX_WAL_RECORD_PAYLOAD_BYTES_MAX +
                       INBOX_WAL_RECORD_OVERHEAD_BYTES <=
                   INBOX_WAL_BATCH_BYTES_MAX,
               "the largest record must fit in one append batch");
_Static_assert(INBOX_WAL_SEGMENT_BYTES_MAX <= UINT32_MAX,
               "WAL offsets within a segment are 32-bit");
_Static_assert(INBOX_WAL_SEGMENT_BYTES_MIN <= INBOX_WAL_SEGMENT_BYTES_DEFAULT &&
                   INBOX_WAL_SEGMENT_BYTES_DEFAULT <=
                       INBOX_WAL_SEGMENT_BYTES_MAX,
               "default segment size within its bounds");
_Static_assert(INBOX_FETCH_MESSAGES_MAX <= INBOX_PENDING_MESSAGES_DEFAULT,
               "fetch cap within pending cap");
_Static_assert(INBOX_TLS_IN_BYTES_MAX >=
                   5u + INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX +
                       INBOX_TLS_RECORD_OVERHEAD_BYTES_MAX,
               "the TLS inbound buffer must hold one whole record");
_Static_assert(INBOX_TLS_OUT_BYTES_MAX >=
                   INBOX_TLS_RECORD_PLAINTEXT_BYTES_MAX +
                       INBOX_TLS_RECORD_OVERHEAD_BYTES_MAX,
               "the TLS outbound buffer must take one whole record");

#endif /* INBOX_LIMITS_H */
