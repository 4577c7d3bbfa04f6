/* test_log.c — logfmt lines: levels filter, fields follow msg, quoting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "inbox/error.h"
#include "log.h"

static size_t capture(int fds[2], char *buf, size_t cap)
{
    ssize_t n = read(fds[0], buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static void test_levels_fields_quoting(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    log_set_fd(fds[1]);
    assert_int_equal(log_set_level_name("loud"), INBOX_EINVAL);
    assert_int_equal(log_set_level_name("warn"), 0);
    log_info("wal", "hidden", "x=%d", 1);
    log_warn("wal", "segment \"sealed\"", "file=%s index=%d", "000042.wal", 7);
    char buf[2048];
    capture(fds, buf, sizeof buf);
    assert_null(strstr(buf, "hidden"));
    assert_non_null(strstr(buf, " level=warn comp=wal msg=\"segment "
                                "\\\"sealed\\\"\" file=000042.wal index=7\n"));
    assert_true(strncmp(buf, "ts=", 3) == 0);
    /* An overlong line is cut but still ends in a newline. */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_error("server", "big", "v=%s", big);
    size_t n = capture(fds, buf, sizeof buf);
    assert_int_equal(n, LOG_LINE_BYTES_MAX - 1);
    assert_int_equal(buf[n - 1], '\n');
    log_set_fd(2);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_fields_quoting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
