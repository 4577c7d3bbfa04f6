/*
 * log.h — structured logs, one logfmt line per event:
 *
 *   ts=2026-11-27T19:13:57.123Z level=info comp=wal msg="segment sealed"
 * file=000042.wal
 *
 * Fields after msg are given as a printf-style "key=value key2=value2" tail,
 * so call sites stay one line. Values with spaces must be quoted by the
 * caller (log_quote helps). Thread-safe: each line is one write(2) of a
 * buffer assembled on the stack, so lines from threads never interleave.
 */
#ifndef INBOX_SERVER_LOG_H
#define INBOX_SERVER_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

#define LOG_LINE_BYTES_MAX 1024u

/* Set the minimum level and the output fd (default: info, stderr).
 * Call before starting threads. Returns INBOX_EINVAL for an unknown name. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level level);
void log_set_fd(int fd);

/* Emit one line. comp names the component (wal, store, raft, net, server). */
void log_emit(enum log_level level, const char *comp, const char *msg,
              const char *fields_fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(comp, msg, ...) log_emit(LOG_DEBUG, comp, msg, __VA_ARGS__)
#define log_info(comp, msg, ...) log_emit(LOG_INFO, comp, msg, __VA_ARGS__)
#define log_warn(comp, msg, ...) log_emit(LOG_WARN, comp, msg, __VA_ARGS__)
#define log_error(comp, msg, ...) log_emit(LOG_ERROR, comp, msg, __VA_ARGS__)

/* Quote s for a logfmt value into buf ("..." with \" and \\ escaped, cut
 * to fit). Returns buf. */
const char *log_quote(char *buf, size_t buf_bytes, const char *s);

#endif /* INBOX_SERVER_LOG_H */
