/*
 * raw_client.c — a blocking TLS protocol client for tests (raw_client.h).
 * Shaped after the one in tests/unit/transport/test_transport.c, but it
 * returns errors instead of asserting, so a test can expect a close.
 */
#include "raw_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "inbox/error.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        if (poll(&pf, 1, 10000) != 1)
            return INBOX_ETIMEOUT;
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int push_cipher(struct raw_client *c)
{
    uint8_t buf[16384];
    size_t n;
    while ((n = tls_conn_pull_cipher(c->tls, buf, sizeof buf)) > 0) {
        int rc = send_all(c->fd, buf, n);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Reads ciphertext once (bounded) and feeds all of it. 1 bytes fed; 0 EOF
 * or reset; -1 timeout; else the TLS error. */
static int read_cipher(struct raw_client *c, int timeout_ms)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (poll(&pf, 1, timeout_ms < 0 ? 0 : timeout_ms) != 1)
        return -1;
    uint8_t buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n <= 0)
        return 0;
    size_t off = 0;
    while (off < (size_t)n) {
        size_t took = 0;
        int rc =
            tls_conn_feed_cipher(c->tls, buf + off, (size_t)n - off, &took);
        if (rc != 0)
            return rc;
        off += took;
        if (took == 0) {
            /* TLS's input is full: decrypt into our buffer to make room.
             * Only possible when the caller let plaintext pile up; the
             * tests read frame by frame, so the buffer is empty here. */
            if (c->plain_off != c->plain_len)
                return INBOX_EINTERNAL;
            size_t got = 0;
            rc = tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
            if (rc != 0)
                return rc;
            c->plain_off = 0;
            c->plain_len = got;
            if (got == 0 && took == 0)
                return INBOX_EINTERNAL;
        }
    }
    return 1;
}

int raw_open(struct raw_client *c, uint16_t port, const char *ca,
             const char *crt, const char *key, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    char msg[INBOX_TLS_ERRMSG_BYTES] = "";
    struct tls_ctx_config cfg = {.side = TLS_SIDE_CLIENT,
                                 .ca_path = ca,
                                 .cert_path = crt,
                                 .key_path = key};
    int rc = tls_ctx_new(&cfg, &c->ctx, msg, sizeof msg);
    if (rc != 0) {
        fprintf(stderr, "raw_open: tls_ctx_new: %s: %s\n", inbox_err_name(rc),
                msg);
        return rc;
    }
    rc = tls_conn_new(c->ctx, "127.0.0.1", &c->tls);
    if (rc != 0)
        return rc;
    c->body = malloc(INBOX_FRAME_BODY_BYTES_MAX);
    if (c->body == NULL)
        return INBOX_ENOMEM;
    inbox_parser_init(&c->parser, c->body, INBOX_FRAME_BODY_BYTES_MAX);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -errno;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = push_cipher(c);
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (rc == 0 && !tls_conn_handshake_done(c->tls)) {
        uint64_t now = now_ms();
        if (now >= end)
            return INBOX_ETIMEOUT;
        rc = read_cipher(c, (int)(end - now));
        if (rc == 0)
            return tls_conn_error(c->tls) ? tls_conn_error(c->tls)
                                          : INBOX_ETLS_HANDSHAKE;
        if (rc == -1)
            return INBOX_ETIMEOUT;
        if (rc < 0)
            return rc;
        size_t got = 0;
        rc = tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
        c->plain_len = got;
        c->plain_off = 0;
        if (rc == 0)
            rc = push_cipher(c);
    }
    return rc;
}

void raw_close(struct raw_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tls_conn_free(c->tls);
    c->tls = NULL;
    tls_ctx_free(c->ctx);
    c->ctx = NULL;
    free(c->body);
    c->body = NULL;
}

int raw_send_bytes(struct raw_client *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        size_t took = 0;
        int rc = tls_conn_write_plain(c->tls, p, len, &took);
        if (rc != 0)
            return rc;
        p += took;
        len -= took;
        rc = push_cipher(c);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int raw_send(struct raw_client *c, const struct inbox_msg *m)
{
    size_t need = 0;
    int rc = inbox_msg_encode(m, NULL, 0, &need);
    if (rc != INBOX_ERANGE)
        return rc;
    uint8_t *buf = malloc(need);
    if (buf == NULL)
        return INBOX_ENOMEM;
    rc = inbox_msg_encode(m, buf, need, &need);
    if (rc == 0)
        rc = raw_send_bytes(c, buf, need);
    free(buf);
    return rc;
}

int raw_send_frame(struct raw_client *c, uint8_t opcode, uint64_t request_id,
                   const void *body, uint32_t body_len)
{
    struct inbox_frame_header h = {.version = 1,
                                   .opcode = opcode,
                                   .flags = 0,
                                   .request_id = request_id,
                                   .body_bytes = body_len};
    uint8_t hdr[INBOX_FRAME_HEADER_BYTES];
    inbox_frame_header_encode(hdr, &h);
    int rc = raw_send_bytes(c, hdr, sizeof hdr);
    if (rc == 0 && body_len > 0)
        rc = raw_send_bytes(c, body, body_len);
    return rc;
}

int raw_recv(struct raw_client *c, struct inbox_msg *m, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        while (c->plain_off < c->plain_len) {
            size_t used = 0;
            struct inbox_frame f;
            int rc = inbox_parser_feed(&c->parser, c->plain + c->plain_off,
                                       c->plain_len - c->plain_off, &used, &f);
            c->plain_off += used;
            if (rc < 0)
                return rc;
            if (rc == INBOX_PARSE_FRAME) {
                rc = inbox_msg_decode(&f.hdr, f.body, m);
                return rc == 0 ? 1 : rc;
            }
        }
        size_t got = 0;
        int rc = tls_conn_read_plain(c->tls, c->plain, sizeof c->plain, &got);
        if (rc != 0)
            return rc;
        c->plain_off = 0;
        c->plain_len = got;
        if (got > 0)
            continue;
        if (tls_conn_peer_closed(c->tls))
            return 0;
        uint64_t now = now_ms();
        if (now >= end)
            return -1;
        rc = read_cipher(c, (int)(end - now));
        if (rc == 0)
            return 0;
        if (rc < -1)
            return rc;
    }
}

int raw_hello(struct raw_client *c, int timeout_ms)
{
    struct inbox_msg m;
    memset(&m, 0, sizeof m);
    m.hdr.version = 1;
    m.hdr.opcode = INBOX_OP_HELLO;
    m.hdr.request_id = 1;
    m.body.hello_req.version_min = 1;
    m.body.hello_req.version_max = 1;
    m.body.hello_req.client_name.ptr = (const uint8_t *)"raw";
    m.body.hello_req.client_name.len = 3;
    int rc = raw_send(c, &m);
    if (rc != 0)
        return rc;
    rc = raw_recv(c, &m, timeout_ms);
    if (rc != 1)
        return rc == 0 ? INBOX_ESHUTDOWN : rc;
    if (m.hdr.opcode != INBOX_OP_HELLO || m.hdr.flags != INBOX_FLAG_RESPONSE ||
        m.body.hello_resp.version != 1)
        return INBOX_EPROTO;
    return 0;
}
