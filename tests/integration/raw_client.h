/*
 * raw_client.h — a blocking protocol client built directly on net/tls and
 * net/codec, for what libinbox will not send: malformed frames, hand-made
 * bodies, and frames whose answer the test wants to see raw (ERROR codes
 * that libinbox would retry). Every wait is bounded.
 */
#ifndef INBOX_TESTS_RAW_CLIENT_H
#define INBOX_TESTS_RAW_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "net/codec.h"
#include "net/tls.h"

#define RAW_PLAIN_BYTES (64u * 1024u)

struct raw_client {
    int fd;
    struct tls_ctx *ctx;
    struct tls_conn *tls;
    struct inbox_parser parser;
    uint8_t *body;
    uint8_t plain[RAW_PLAIN_BYTES];
    size_t plain_len, plain_off;
};

/* TCP connect to 127.0.0.1:port and a TLS handshake with crt/key against
 * ca. 0, or an INBOX_E* / -errno code (message on stderr). */
int raw_open(struct raw_client *c, uint16_t port, const char *ca,
             const char *crt, const char *key, int timeout_ms);
void raw_close(struct raw_client *c);

/* Sends bytes of plaintext (frames) over TLS. 0 or an error code. */
int raw_send_bytes(struct raw_client *c, const void *buf, size_t len);
/* Encodes and sends m. 0 or an error code. */
int raw_send(struct raw_client *c, const struct inbox_msg *m);
/* Sends a header (opcode, request id, body length) and `body` as is. */
int raw_send_frame(struct raw_client *c, uint8_t opcode, uint64_t request_id,
                   const void *body, uint32_t body_len);

/* Next frame into *m (valid until the next call). 1 a frame; 0 the server
 * closed (EOF, reset or close_notify); -1 timeout; another negative value:
 * a TLS or parse error. */
int raw_recv(struct raw_client *c, struct inbox_msg *m, int timeout_ms);

/* HELLO 1..1 and its answer. 0 or nonzero. */
int raw_hello(struct raw_client *c, int timeout_ms);

#endif /* INBOX_TESTS_RAW_CLIENT_H */
