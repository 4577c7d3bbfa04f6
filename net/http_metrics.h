/*
 * http_metrics.h — a minimal plaintext HTTP/1.1 listener for Prometheus:
 * GET /metrics answers 200 with the text the render callback writes
 * (Content-Type text/plain; version=0.0.4); any other path of a GET is 404,
 * another method 405, and a request that is not HTTP (or whose head is over
 * INBOX_HTTP_REQUEST_BYTES_MAX) 400. One request per connection: the
 * connection is closed after the response (Connection: close). At most
 * INBOX_HTTP_CONNS_MAX clients at once (more are closed at accept), each
 * with a timeout from accept to response.
 *
 * It runs on the caller's libuv loop; render is called on the loop thread.
 * No TLS: bind it to a management address (docs/transport.md).
 */
#ifndef INBOX_NET_HTTP_METRICS_H
#define INBOX_NET_HTTP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct http_metrics;

/* Writes the exposition text into buf[0..buf_bytes) and returns the bytes it
 * needed, like snprintf (metrics_render has this shape): when the return is
 * >= buf_bytes the caller retries with a larger buffer. */
typedef size_t (*http_metrics_render_fn)(void *arg, char *buf,
                                         size_t buf_bytes);

struct http_metrics_config {
    const char *host; /* IP literal, e.g. "127.0.0.1" */
    uint16_t port;    /* 0: ephemeral (see http_metrics_port) */
    http_metrics_render_fn render;
    void *arg;
    uint32_t timeout_ms; /* accept -> response sent; 0: the default */
};

/* Creates the listener and starts listening on `loop`. Returns 0,
 * INBOX_EINVAL, INBOX_ENOMEM or a negative errno (bind/listen). */
int http_metrics_new(uv_loop_t *loop, const struct http_metrics_config *config,
                     struct http_metrics **out);

uint16_t http_metrics_port(const struct http_metrics *h);

/* Any thread: close the listener and every connection, then the listener's
 * own handles (uv_run can then return). Idempotent. */
void http_metrics_stop(struct http_metrics *h);

/* Any thread: true once every handle is closed. */
bool http_metrics_stopped(const struct http_metrics *h);

/* After http_metrics_stopped(). NULL is a no-op. */
void http_metrics_free(struct http_metrics *h);

#endif /* INBOX_NET_HTTP_METRICS_H */
