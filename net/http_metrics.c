/*
 * http_metrics.c — GET /metrics over plaintext HTTP/1.1 (see
 * net/http_metrics.h).
 *
 * A connection reads its request head into a fixed buffer, answers once,
 * then shuts down its write side and closes. States: READING (head
 * arriving; the timer runs) -> WRITING (response queued; nothing more is
 * read) -> CLOSED (uv_close called). Invariants: 1. at most one response
 * per connection; 2. head bytes buffered <= INBOX_HTTP_REQUEST_BYTES_MAX;
 * 3. open connections <= INBOX_HTTP_CONNS_MAX.
 */
#include "net/http_metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbox/error.h"
#include "inbox/limits.h"

enum hconn_state { H_READING, H_WRITING, H_CLOSED };

struct hconn {
    struct http_metrics *h;
    enum hconn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    unsigned handles_open;
    struct hconn *prev, *next;
    char *out; /* the response being written */
    size_t len;
    char buf[INBOX_HTTP_REQUEST_BYTES_MAX];
};

struct http_metrics {
    uv_loop_t *loop;
    struct http_metrics_config cfg;
    uv_tcp_t listener;
    uv_async_t async;
    unsigned handles_open;
    bool stopping;
    bool async_closing;
    uint16_t port;
    struct hconn *conns;
    unsigned conns_count;
    char *render_buf;
    size_t render_cap;
    atomic_bool stop_requested;
    atomic_bool stopped;
};

static void h_maybe_finish(struct http_metrics *h);

static void hconn_closed(uv_handle_t *handle)
{
    struct hconn *c = handle->data;
    if (--c->handles_open > 0)
        return;
    struct http_metrics *h = c->h;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->conns_count--;
    free(c->out);
    free(c);
    h_maybe_finish(h);
}

static void hconn_close(struct hconn *c)
{
    if (c->state == H_CLOSED)
        return;
    c->state = H_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, hconn_closed);
    uv_close((uv_handle_t *)&c->timer, hconn_closed);
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    hconn_close(req->data);
}

static void write_done(uv_write_t *req, int status)
{
    struct hconn *c = req->data;
    if (status < 0 || c->state == H_CLOSED) {
        hconn_close(c);
        return;
    }
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_done) !=
        0)
        hconn_close(c);
}

/* Queues the one response of this connection (invariant 1). */
static void hconn_respond(struct hconn *c, const char *status, const char *type,
                          const char *body, size_t body_len)
{
    assert(c->state == H_READING);
    c->state = H_WRITING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, type, body_len,
                     strncmp(status, "405", 3) == 0 ? "Allow: GET\r\n" : "");
    assert(n > 0 && (size_t)n < sizeof head);
    c->len = (size_t)n + body_len;
    c->out = malloc(c->len);
    if (c->out == NULL) {
        hconn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (body_len > 0)
        memcpy(c->out + n, body, body_len);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->len);
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0)
        hconn_close(c);
}

static void hconn_respond_text(struct hconn *c, const char *status,
                               const char *text)
{
    hconn_respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void hconn_respond_metrics(struct hconn *c)
{
    struct http_metrics *h = c->h;
    for (int attempt = 0; attempt < 3; attempt++) {
        size_t need = h->cfg.render(h->cfg.arg, h->render_buf, h->render_cap);
        if (need < h->render_cap) {
            hconn_respond(c, "200 OK",
                          "text/plain; version=0.0.4; charset=utf-8",
                          h->render_buf, need);
            return;
        }
        if (need + 1 > INBOX_HTTP_RESPONSE_BYTES_MAX)
            break;
        char *bigger = realloc(h->render_buf, need + 1);
        if (bigger == NULL)
            break;
        h->render_buf = bigger;
        h->render_cap = need + 1;
    }
    hconn_respond_text(c, "500 Internal Server Error", "cannot render\n");
}

/* Method names are upper-case letters ("GET"). */
static bool is_tchar(char ch)
{
    return ch >= 'A' && ch <= 'Z';
}

/* Judges the request line line[0..len) (no CRLF) and answers. */
static void hconn_request_line(struct hconn *c, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && is_tchar(line[i]))
        i++;
    size_t method_len = i;
    if (method_len == 0 || i >= len || line[i] != ' ')
        goto bad;
    size_t target = ++i;
    while (i < len && line[i] > ' ' && line[i] < 0x7f)
        i++;
    size_t target_len = i - target;
    if (target_len == 0 || i >= len || line[i] != ' ')
        goto bad;
    i++;
    if (len - i != 8 || (memcmp(line + i, "HTTP/1.1", 8) != 0 &&
                         memcmp(line + i, "HTTP/1.0", 8) != 0))
        goto bad;
    if (method_len != 3 || memcmp(line, "GET", 3) != 0) {
        hconn_respond_text(c, "405 Method Not Allowed", "only GET\n");
        return;
    }
    const char *path = line + target;
    if ((target_len == 8 && memcmp(path, "/metrics", 8) == 0) ||
        (target_len > 8 && memcmp(path, "/metrics?", 9) == 0)) {
        hconn_respond_metrics(c);
        return;
    }
    hconn_respond_text(c, "404 Not Found", "not found; try /metrics\n");
    return;
bad:
    hconn_respond_text(c, "400 Bad Request", "bad request\n");
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct hconn *c = handle->data;
    assert(c->len < sizeof c->buf);
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct hconn *c = s->data;
    if (nread == 0 || c->state != H_READING)
        return;
    if (nread < 0) {
        hconn_close(c);
        return;
    }
    size_t old = c->len;
    c->len += (size_t)nread;
    /* Bytes a request head never holds: answer 400 at once. */
    for (size_t i = old; i < c->len; i++) {
        unsigned char ch = (unsigned char)c->buf[i];
        if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') ||
            ch >= 0x7f) {
            hconn_respond_text(c, "400 Bad Request", "bad request\n");
            return;
        }
    }
    const char *eol = memchr(c->buf, '\n', c->len);
    if (eol != NULL) {
        size_t line_len = (size_t)(eol - c->buf);
        if (line_len == 0 || c->buf[line_len - 1] != '\r') {
            hconn_respond_text(c, "400 Bad Request", "bad request\n");
            return;
        }
        /* The request line decides; wait for the end of the head only to
         * read it all before answering (so the close does not reset). */
        bool head_done = false;
        for (size_t i = 3; i < c->len && !head_done; i++)
            head_done = memcmp(c->buf + i - 3, "\r\n\r\n", 4) == 0;
        if (head_done) {
            hconn_request_line(c, c->buf, line_len - 1);
            return;
        }
    }
    if (c->len == sizeof c->buf)
        hconn_respond_text(c, "400 Bad Request", "request head too large\n");
}

static void timer_done(uv_timer_t *timer)
{
    hconn_close(timer->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct http_metrics *h = server->data;
    if (status < 0)
        return;
    struct hconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return; /* the kernel keeps it queued; retried on the next accept */
    if (uv_tcp_init(h->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->h = h;
    c->tcp.data = c;
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    c->shutdown_req.data = c;
    c->handles_open = 2;
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->conns_count++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        h->conns_count > INBOX_HTTP_CONNS_MAX || h->stopping) {
        hconn_close(c);
        return;
    }
    uv_timer_start(&c->timer, timer_done, h->cfg.timeout_ms, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        hconn_close(c);
}

static void h_handle_closed(uv_handle_t *handle)
{
    struct http_metrics *h = handle->data;
    if (--h->handles_open == 0)
        atomic_store(&h->stopped, true);
}

/* After stop, once the last connection closed: close the async too. */
static void h_maybe_finish(struct http_metrics *h)
{
    if (!h->stopping || h->conns != NULL || h->async_closing)
        return;
    h->async_closing = true;
    uv_close((uv_handle_t *)&h->async, h_handle_closed);
}

static void async_cb(uv_async_t *a)
{
    struct http_metrics *h = a->data;
    if (!atomic_load(&h->stop_requested) || h->stopping)
        return;
    h->stopping = true;
    uv_close((uv_handle_t *)&h->listener, h_handle_closed);
    for (struct hconn *c = h->conns; c != NULL; c = c->next)
        hconn_close(c);
    h_maybe_finish(h);
}

void http_metrics_stop(struct http_metrics *h)
{
    if (!atomic_exchange(&h->stop_requested, true))
        uv_async_send(&h->async);
}

bool http_metrics_stopped(const struct http_metrics *h)
{
    return atomic_load(&((struct http_metrics *)h)->stopped);
}

int http_metrics_new(uv_loop_t *loop, const struct http_metrics_config *config,
                     struct http_metrics **out)
{
    if (loop == NULL || config == NULL || config->render == NULL ||
        config->host == NULL || out == NULL)
        return INBOX_EINVAL;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } addr;
    memset(&addr, 0, sizeof addr);
    if (uv_ip4_addr(config->host, config->port, &addr.in4) != 0 &&
        uv_ip6_addr(config->host, config->port, &addr.in6) != 0)
        return INBOX_EINVAL;
    struct http_metrics *h = calloc(1, sizeof *h);
    if (h == NULL)
        return INBOX_ENOMEM;
    h->loop = loop;
    h->cfg = *config;
    if (h->cfg.timeout_ms == 0)
        h->cfg.timeout_ms = INBOX_HTTP_TIMEOUT_MS_DEFAULT;
    h->render_cap = 64u * INBOX_KIB;
    h->render_buf = malloc(h->render_cap);
    atomic_init(&h->stop_requested, false);
    atomic_init(&h->stopped, false);
    int rc = INBOX_ENOMEM;
    if (h->render_buf == NULL)
        goto err_after_alloc;
    rc = uv_tcp_init(loop, &h->listener);
    if (rc != 0)
        goto err_after_alloc;
    h->listener.data = h;
    rc = uv_async_init(loop, &h->async, async_cb);
    if (rc != 0) {
        /* Closing needs the loop to run; not worth it for this path. */
        uv_close((uv_handle_t *)&h->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        goto err_after_alloc;
    }
    h->async.data = h;
    h->handles_open = 2;
    rc = uv_tcp_bind(&h->listener, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 128, on_connection);
    int len = sizeof addr;
    if (rc == 0)
        rc = uv_tcp_getsockname(&h->listener, &addr.sa, &len);
    if (rc != 0) {
        /* The caller cannot stop what it never got: close here. */
        h->stopping = h->async_closing = true;
        uv_close((uv_handle_t *)&h->listener, h_handle_closed);
        uv_close((uv_handle_t *)&h->async, h_handle_closed);
        while (!atomic_load(&h->stopped))
            uv_run(loop, UV_RUN_NOWAIT);
        goto err_after_alloc;
    }
    h->port = ntohs(addr.sa.sa_family == AF_INET ? addr.in4.sin_port
                                                 : addr.in6.sin6_port);
    *out = h;
    return 0;

err_after_alloc:
    free(h->render_buf);
    free(h);
    return rc;
}

uint16_t http_metrics_port(const struct http_metrics *h)
{
    return h->port;
}

void http_metrics_free(struct http_metrics *h)
{
    if (h == NULL)
        return;
    assert(http_metrics_stopped(h));
    free(h->render_buf);
    free(h);
}
