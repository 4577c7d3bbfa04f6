/* test_common.c — the shared headers: error map and endian helpers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "inbox/endian.h"
#include "inbox/error.h"
#include "inbox/limits.h"

static void test_error_names_unique_and_stable(void **state)
{
    (void)state;
    assert_string_equal(inbox_err_name(0), "OK");
    assert_string_equal(inbox_err_name(INBOX_ENOT_LEADER), "NOT_LEADER");
    assert_int_equal(INBOX_ENOT_LEADER, -1300);
    assert_string_equal(inbox_err_name(-EIO), "ERRNO");
    assert_string_equal(inbox_strerror(-ENOSPC), strerror(ENOSPC));
    assert_string_equal(inbox_err_name(-999999), "UNKNOWN");
    /* Every code has a distinct name and a non-empty message. */
    static const int codes[] = {
#define C(name, num, msg) INBOX_E##name,
        INBOX_ERR_MAP(C)
#undef C
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] <= -1000);
        assert_true(strlen(inbox_strerror(codes[i])) > 0);
        for (size_t j = i + 1; j < n; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(inbox_err_name(codes[i]),
                                    inbox_err_name(codes[j]));
        }
    }
}

static void test_endian_roundtrip(void **state)
{
    (void)state;
    uint8_t b[9] = {0};
    put_u64le(b + 1, 0x0102030405060708ull);
    assert_int_equal(b[1], 0x08);
    assert_int_equal(b[8], 0x01);
    assert_true(get_u64le(b + 1) == 0x0102030405060708ull);
    put_u32le(b, 0xA1B2C3D4u);
    assert_int_equal(b[0], 0xD4);
    assert_int_equal(get_u32le(b), 0xA1B2C3D4u);
    put_u16le(b, 0xBEEF);
    assert_int_equal(get_u16le(b), 0xBEEF);
    put_u64be(b, 0x0102030405060708ull);
    assert_int_equal(b[0], 0x01);
    assert_true(get_u64be(b) == 0x0102030405060708ull);
    put_u32be(b, 7);
    assert_int_equal(b[3], 7);
    assert_int_equal(get_u32be(b), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names_unique_and_stable),
        cmocka_unit_test(test_endian_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
