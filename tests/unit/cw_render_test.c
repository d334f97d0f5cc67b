/*  cw_render_test: unit tests for common/cw_render.c (issue 11 item 12).
 *
 *  A text must not pass for program output: line breaks start marked
 *  continuation lines, control characters and escape sequences are shown
 *  (never sent to the terminal), C1 / bidi / separator code points are
 *  escaped, invalid UTF-8 becomes U+FFFD, long lines wrap onto marked
 *  lines counting wide characters as 2 and combining marks as 0, and
 *  printable UTF-8 is kept byte for byte. Single-threaded; no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cw_render.h"

static void expect(const char *in, int col, int width, int flags, const char *want)
{
    char *got = cw_render_text(in, strlen(in), col, width, "  | ", flags);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("render(\"%s\", col %d, width %d):\n got  \"%s\"\n want \"%s\"", in, col, width,
                 got, want);
    free(got);
}

static void test_forged_line_is_marked(void **state)
{
    (void) state;
    expect("innocent\n[04:01:00] carol -> you: send me your password", 0, 0, 0,
           "innocent\n  | [04:01:00] carol -> you: send me your password");
    expect("a\n\nb\n", 0, 0, 0, "a\n  | \n  | b\n  | ");
    expect("a\nb", 0, 0, CW_RENDER_ONELINE, "a\\nb");
}

static void test_controls_are_visible(void **state)
{
    (void) state;
    expect("x\ry", 0, 0, 0, "x^My");
    expect("\x1b[2J\x1b[H", 0, 0, 0, "^[[2J^[[H");     /* clear screen, home */
    expect("bell\x07 del\x7f", 0, 0, 0, "bell^G del^?");
    expect("a\tb", 0, 0, 0, "a       b");
    expect("a\tb", 0, 0, CW_RENDER_ONELINE, "a\\tb");
    expect("\xc2\x9b" "31m", 0, 0, 0, "<U+009B>31m");    /* C1 CSI */
    expect("x\xe2\x80\xa8y", 0, 0, 0, "x<U+2028>y");    /* line separator */
    expect("\xe2\x80\xae" "evil", 0, 0, 0, "<U+202E>evil"); /* right-to-left override */
    char nul[] = "a\0b";
    char *got = cw_render_text(nul, 3, 0, 0, NULL, 0);
    assert_string_equal(got, "a^@b");
    free(got);
}

static void test_utf8_kept_and_invalid_replaced(void **state)
{
    (void) state;
    const char *s = "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                    "\xf0\x9f\x8e\x89 cafe\xcc\x81";
    expect(s, 0, 0, 0, s);
    expect("a\xff" "b\xc0\xaf", 0, 0, 0, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd");
    expect("\xed\xa0\x80", 0, 0, 0, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
}

static void test_wrapping(void **state)
{
    (void) state;
    /* Width 20 and a 10-column prefix: 9 columns are left on the first line
     * (the last column is never used). */
    expect("0123456789abcdef", 10, 20, 0, "012345678\n  | 9abcdef");
    /* Padding up to the edge does not bring the next text to column 0. */
    expect("          [04:01:00] carol", 0, 20, 0,
           "          [04:01:00\n  | ] carol");
    /* Wide characters count 2, combining marks 0. */
    expect("\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5", 0, 12, 0,
           "\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5");
    expect("\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5", 0, 12, 0,
           "\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\n  | \xe6\x97\xa5");
    expect("e\xcc\x81" "e\xcc\x81" "e\xcc\x81", 0, 10, 0, "e\xcc\x81" "e\xcc\x81" "e\xcc\x81");
    assert_int_equal(cw_render_width("caf\xc3\xa9 \xe6\x97\xa5"), 7);
    assert_int_equal(cw_render_width("e\xcc\x81"), 1);
}

int main(void)
{
    if (!cw_render_locale())
        fail_msg("no UTF-8 locale for LC_CTYPE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forged_line_is_marked),
        cmocka_unit_test(test_controls_are_visible),
        cmocka_unit_test(test_utf8_kept_and_invalid_replaced),
        cmocka_unit_test(test_wrapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
