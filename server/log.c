/*
 * log.c — logfmt lines, each assembled on the stack and written at once.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inbox/error.h"

static _Atomic int min_level = LOG_INFO;
static _Atomic int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    atomic_store(&min_level, (int)level);
}

int log_set_level_name(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            log_set_level((enum log_level)i);
            return 0;
        }
    }
    return INBOX_EINVAL;
}

void log_set_fd(int fd)
{
    atomic_store(&out_fd, fd);
}

const char *log_quote(char *buf, size_t buf_bytes, const char *s)
{
    size_t o = 0;
    if (buf_bytes < 3) {
        if (buf_bytes > 0)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; *s && o + 3 < buf_bytes; s++) {
        if (*s == '"' || *s == '\\')
            buf[o++] = '\\';
        else if (*s == '\n')
            continue;
        buf[o++] = *s;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_emit(enum log_level level, const char *comp, const char *msg,
              const char *fields_fmt, ...)
{
    if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
        return;
    char line[LOG_LINE_BYTES_MAX];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char qmsg[256];
    int n =
        snprintf(line, sizeof line,
                 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s "
                 "msg=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level],
                 comp, log_quote(qmsg, sizeof qmsg, msg));
    size_t len = n > 0 ? (size_t)n : 0;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    if (fields_fmt != NULL && fields_fmt[0] != '\0' && len < sizeof line - 3) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fields_fmt);
        n = vsnprintf(line + len, sizeof line - len - 1, fields_fmt, ap);
        va_end(ap);
        if (n > 0)
            len += (size_t)n;
        if (len > sizeof line - 2)
            len = sizeof line - 2;
    }
    line[len++] = '\n';
    /* One write per line; a short write to a log is not worth a retry loop
     * that could block the caller. */
    ssize_t w =
        write(atomic_load_explicit(&out_fd, memory_order_relaxed), line, len);
    (void)w;
}
