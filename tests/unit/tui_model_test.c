/*  tui_model_test.c: the TUI's model (client/tui_model.c) without a
 *  terminal: user log and unread counts, recipient modes, fates filled in
 *  from replies and receipts, resend, the clock's changed entries, the
 *  entry and exchange-log limits, rendering of hostile text, wrapping by
 *  display width, the input line (UTF-8, wide characters, combining marks,
 *  history) and Tab completion. Also client/xchg.c, the exchange's state
 *  machine the TUI and `causeway exchange` share.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "tui_model.h"
#include "xchg.h"

static void users_and_unread(void **state)
{
    (void) state;
    tm_t *m = tm_new("alice");
    assert_non_null(m);
    cw_user_t log[] = {{.name = "carol", .online = 0}, {.name = "bob", .online = 1}};
    tm_users(m, log, 2, 1);
    assert_int_equal(tm_n_users(m), 3);
    assert_string_equal(tm_user(m, 0)->name, "alice");
    assert_true(tm_user(m, 0)->me && tm_user(m, 0)->online);
    assert_string_equal(tm_user(m, 1)->name, "bob");
    assert_true(tm_user(m, 1)->online);
    assert_false(tm_user(m, 2)->online);
    tm_presence(m, "dave", 1);   /* someone new */
    assert_int_equal(tm_n_users(m), 4);
    tm_presence(m, "bob", 0);
    assert_false(tm_user(m, (size_t) tm_find_user(m, "bob"))->online);
    /* A page of the log does not mark the others offline. */
    cw_user_t page[] = {{.name = "carol", .online = 1}};
    tm_users(m, page, 1, 0);
    assert_true(tm_user(m, (size_t) tm_find_user(m, "dave"))->online);
    tm_users(m, page, 1, 1);
    assert_false(tm_user(m, (size_t) tm_find_user(m, "dave"))->online);
    assert_true(tm_user(m, (size_t) tm_find_user(m, "alice"))->online);

    char *to[] = {"alice"};
    cw_message_t msg = {.from = "bob", .to = to, .n_to = 1, .text = "hi", .message_id = "b-1"};
    tm_add_in(m, &msg, 0);
    tm_add_in(m, &msg, 0);
    tm_add_in(m, &msg, 1);   /* a listing is not unread */
    long b = tm_find_user(m, "bob");
    assert_int_equal(tm_user(m, (size_t) b)->unread, 2);
    /* A sender we had never heard of is added (offline). */
    cw_message_t stranger = {.from = "zed", .text = "?", .message_id = ""};
    tm_add_in(m, &stranger, 0);
    assert_true(tm_find_user(m, "zed") >= 0);
    /* Writing to bob reads his messages. */
    const char *names[] = {"bob"};
    tm_add_out(m, 1, names, 1, 0, "yo", 0, 0);
    assert_int_equal(tm_user(m, (size_t) tm_find_user(m, "bob"))->unread, 0);
    tm_destroy(&m);
    tm_destroy(&m);
    assert_null(m);
}

static void recipients(void **state)
{
    (void) state;
    tm_t *m = tm_new("alice");
    const char **names;
    size_t n;
    int bc;
    const char *why = NULL;
    char label[128];
    assert_int_equal(tm_mode(m), TM_TO_ALL);
    assert_int_equal(tm_recipients(m, &names, &n, &bc, &why), 0);
    assert_true(bc);
    assert_string_equal(tm_target_label(m, label, sizeof label), "to everyone (1-to-all)");
    tm_set_mode(m, TM_TO_ONE);
    assert_int_equal(tm_recipients(m, &names, &n, &bc, &why), -1);
    assert_non_null(why);
    tm_choose(m, "bob");
    assert_int_equal(tm_recipients(m, &names, &n, &bc, &why), 0);
    assert_false(bc);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "bob");
    assert_string_equal(tm_target_label(m, label, sizeof label), "to bob (1-to-1)");
    assert_int_equal(tm_toggle(m, "alice"), -1);   /* not ourselves */
    assert_int_equal(tm_toggle(m, "carol"), 0);
    assert_int_equal(tm_toggle(m, "bob"), 0);
    assert_int_equal(tm_mode(m), TM_TO_SET);
    assert_int_equal(tm_recipients(m, &names, &n, &bc, &why), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "bob");   /* in user-log order */
    assert_string_equal(names[1], "carol");
    assert_string_equal(tm_target_label(m, label, sizeof label), "to bob, carol (1-to-n)");
    tm_toggle(m, "bob");
    tm_toggle(m, "carol");
    assert_int_equal(tm_recipients(m, &names, &n, &bc, &why), -1);
    tm_destroy(&m);
}

static void fmt(uint64_t us, char *buf, size_t size)
{
    snprintf(buf, size, "t%llu", (unsigned long long) us);
}

static void fates_and_receipts(void **state)
{
    (void) state;
    tm_t *m = tm_new("alice");
    const char *to[] = {"bob", "carol", "dave"};
    const tm_entry_t *e = tm_add_out(m, 7, to, 3, 0, "hello", 1, 100);
    assert_true(e->pending);
    assert_int_equal(e->n_fates, 0);
    uint64_t gen = tm_generation(m);
    cw_recipient_t rs[] = {{.name = "bob", .status = CW_ACCEPTED, .seq = 4},
                           {.name = "carol", .status = CW_QUEUE_FULL},
                           {.name = "dave", .status = CW_ACCEPTED, .seq = 1}};
    cw_reply_t r = {.status = CW_ACCEPTED, .recipients = rs, .n_recipients = 3,
                    .message_id = "alice-1"};
    assert_int_equal(tm_send_result(m, 7, CW_ACCEPTED, &r), 0);
    assert_true(tm_generation(m) > gen);
    e = tm_entry(m, 0);
    assert_false(e->pending);
    assert_false(e->failed);
    assert_string_equal(e->message_id, "alice-1");
    assert_int_equal(e->n_fates, 3);
    char w[64];
    assert_string_equal(tm_fate_word(&e->fates[0], w, sizeof w, fmt), "stored #4");
    assert_string_equal(tm_fate_word(&e->fates[1], w, sizeof w, fmt), "QUEUE_FULL");
    assert_int_equal(tm_receipt(m, "alice-1", "dave", 555), 0);
    assert_int_equal(e->fates[2].kind, TM_FATE_READ);
    assert_string_equal(tm_fate_word(&e->fates[2], w, sizeof w, fmt), "read t555");
    assert_int_equal(e->fates[0].kind, TM_FATE_STORED);
    assert_int_equal(tm_receipt(m, "nope", "dave", 1), -1);
    assert_int_equal(tm_receipt(m, "", "dave", 1), -1);
    assert_int_equal(tm_send_result(m, 99, CW_OK, NULL), -1);

    /* A live send whose outcome is unknown is kept, marked, resent. */
    const char *one[] = {"bob"};
    tm_add_out(m, 8, one, 1, 0, "lost", 0, 200);
    cw_reply_t lost = {.status = CW_ERR_DISCONNECTED, .message_id = "alice-2", .detail = ""};
    tm_send_result(m, 8, CW_ERR_DISCONNECTED, &lost);
    const tm_entry_t *f = tm_last_failed(m);
    assert_non_null(f);
    assert_string_equal(f->text, "lost");
    assert_string_equal(f->message_id, "alice-2");
    assert_int_equal(tm_resend(m, 8, 9), 0);
    assert_null(tm_last_failed(m));
    assert_true(f->pending);
    cw_recipient_t d[] = {{.name = "bob", .status = CW_DELIVERED}};
    cw_reply_t ok = {.status = CW_OK, .recipients = d, .n_recipients = 1, .message_id = "alice-2"};
    assert_int_equal(tm_send_result(m, 9, CW_OK, &ok), 0);
    assert_string_equal(tm_fate_word(&f->fates[0], w, sizeof w, NULL), "delivered");
    /* Refused as a whole: failed too. */
    tm_add_out(m, 10, one, 1, 0, "big", 0, 300);
    tm_send_result(m, 10, CW_TOO_LARGE, NULL);
    assert_non_null(tm_last_failed(m));
    assert_int_equal(tm_last_failed(m)->status, CW_TOO_LARGE);
    tm_destroy(&m);
}

static void clock_changes(void **state)
{
    (void) state;
    tm_t *m = tm_new("a");
    cw_clock_item_t c1[] = {{.node = "a", .counter = 1}};
    tm_clock(m, c1, 1);
    uint64_t v;
    int ch;
    assert_string_equal(tm_clock_entry(m, 0, &v, &ch), "a");
    assert_int_equal(v, 1);
    assert_true(ch);
    cw_clock_item_t c2[] = {{.node = "a", .counter = 2}, {.node = "b", .counter = 5}};
    tm_clock(m, c2, 2);
    cw_clock_item_t c3[] = {{.node = "a", .counter = 3}, {.node = "b", .counter = 5}};
    tm_clock(m, c3, 2);
    tm_clock_entry(m, 0, &v, &ch);
    assert_int_equal(v, 3);
    assert_true(ch);
    tm_clock_entry(m, 1, &v, &ch);
    assert_false(ch);   /* b did not move */
    assert_null(tm_clock_entry(m, 2, NULL, NULL));
    tm_destroy(&m);
}

static void limits(void **state)
{
    (void) state;
    tm_t *m = tm_new("a");
    for (int i = 0; i < TM_ENTRIES_MAX + 10; i++)
        tm_note(m, TM_NOTE, 0, "note %d", i);
    assert_int_equal(tm_n_entries(m), TM_ENTRIES_MAX);
    assert_string_equal(tm_entry(m, 0)->text, "note 10");
    for (int i = 0; i < TM_XLOG_MAX + 3; i++)
        tm_xlog(m, "x %d", i);
    assert_int_equal(tm_n_xlog(m), TM_XLOG_MAX);
    assert_string_equal(tm_xlog_line(m, 0), "x 3");
    assert_null(tm_xlog_line(m, TM_XLOG_MAX));
    tm_destroy(&m);
}

static void render_hostile_text(void **state)
{
    (void) state;
    wchar_t out[64];
    /* Newline, escape, bell, DEL, a C1 control (U+009B, CSI), a bidi
     * override, invalid bytes: all visible, nothing that acts. */
    /* common/cw_render's one-line rule: LF as \n, ESC ^[, BEL ^G, DEL ^?,
     * C1 (U+009B, CSI) and bidi overrides as <U+XXXX>, bad bytes U+FFFD. */
    size_t n = tm_render("a\nb\x1b[2J\x07\x7f\xc2\x9b\xe2\x80\xae\xff!", out, 64);
    const wchar_t *want = L"a\\nb^[[2J^G^?<U+009B><U+202E>\uFFFD!";
    assert_int_equal(n, wcslen(want));
    assert_memory_equal(out, want, (n + 1) * sizeof(wchar_t));
    for (size_t i = 0; i < n; i++)
        assert_true(wcwidth(out[i]) >= 1);   /* every one takes a cell */
    /* Wide and combining characters kept as they are. */
    n = tm_render("日本 e\xcc\x81 \xf0\x9f\x91\x8d", out, 64);
    assert_int_equal(n, 7);
    assert_int_equal(tm_width(out, n), 2 + 2 + 1 + 1 + 0 + 1 + 2);
    /* A mark at the very start gets a base of its own. */
    n = tm_render("\xcc\x81x", out, 64);
    assert_int_equal(out[0], 0x25CC);
    assert_int_equal(out[1], 0x301);
    /* The output is bounded. */
    n = tm_render("abcdef", out, 4);
    assert_int_equal(n, 3);
    assert_int_equal(out[3], 0);
}

static void wrap_by_width(void **state)
{
    (void) state;
    size_t ends[8];
    /* 日本語 is 6 columns: in 5 columns a wide character never splits. */
    size_t rows = tm_wrap(L"日本語", 5, ends, 8);
    assert_int_equal(rows, 2);
    assert_int_equal(ends[0], 2);
    assert_int_equal(ends[1], 3);
    /* A base and its mark stay on one row. */
    rows = tm_wrap(L"abe\u0301cd", 3, ends, 8);
    assert_int_equal(rows, 2);
    assert_int_equal(ends[0], 4);
    rows = tm_wrap(L"", 10, ends, 8);
    assert_int_equal(rows, 1);
    assert_int_equal(ends[0], 0);
    rows = tm_wrap(L"aaaaaaaaaa", 2, ends, 3);   /* cut at max_rows */
    assert_int_equal(rows, 3);
}

static void input_line(void **state)
{
    (void) state;
    tm_line_t *l = tm_line_new();
    tm_line_set(l, "héllo 日本");
    size_t len, cur;
    const wchar_t *t = tm_line_text(l, &len, &cur);
    assert_int_equal(len, 8);
    assert_int_equal(cur, 8);
    tm_line_left(l);
    tm_line_left(l);
    tm_line_insert(l, L'>');
    char *s = tm_line_utf8(l);
    assert_string_equal(s, "héllo >日本");
    free(s);
    /* Combining mark: one step and one backspace take base and mark. */
    tm_line_set(l, "xe\xcc\x81");
    tm_line_left(l);
    tm_line_text(l, &len, &cur);
    assert_int_equal(cur, 1);
    tm_line_end(l);
    tm_line_backspace(l);
    s = tm_line_utf8(l);
    assert_string_equal(s, "x");
    free(s);
    /* Control characters are refused. */
    assert_int_equal(tm_line_insert(l, 0x1b), -1);
    assert_int_equal(tm_line_insert(l, 0x9b), -1);
    /* Kill word / start / end, delete. */
    tm_line_set(l, "one two three");
    tm_line_kill_word(l);
    s = tm_line_utf8(l);
    assert_string_equal(s, "one two ");
    free(s);
    tm_line_home(l);
    tm_line_delete(l);
    tm_line_right(l);
    tm_line_kill_end(l);
    s = tm_line_utf8(l);
    assert_string_equal(s, "n");
    free(s);
    /* The view keeps the cursor visible, by display width. */
    tm_line_set(l, "日本語日本語日本語");   /* 18 columns */
    size_t first;
    int col;
    tm_line_view(l, 8, &first, &col);
    assert_true(col <= 7);
    assert_int_equal(tm_width(t + first, 9 - first), col);
    tm_line_home(l);
    tm_line_view(l, 8, &first, &col);
    assert_int_equal(first, 0);
    assert_int_equal(col, 0);
    /* The limit. */
    tm_line_set(l, "");
    for (int i = 0; i < TM_LINE_MAX; i++)
        assert_int_equal(tm_line_insert(l, L'a'), 0);
    assert_int_equal(tm_line_insert(l, L'a'), -1);
    /* History. */
    tm_line_set(l, "first");
    tm_line_submit(l);
    tm_line_set(l, "second");
    tm_line_submit(l);
    tm_line_set(l, "second");
    tm_line_submit(l);   /* the same again: remembered once */
    tm_line_set(l, "typing");
    tm_line_prev(l);
    s = tm_line_utf8(l);
    assert_string_equal(s, "second");
    free(s);
    tm_line_prev(l);
    tm_line_prev(l);   /* stays at the oldest */
    s = tm_line_utf8(l);
    assert_string_equal(s, "first");
    free(s);
    tm_line_next(l);
    tm_line_next(l);
    s = tm_line_utf8(l);
    assert_string_equal(s, "typing");   /* the line being typed came back */
    free(s);
    tm_line_destroy(&l);
    assert_null(l);
}

static void completion(void **state)
{
    (void) state;
    tm_t *m = tm_new("alice");
    cw_user_t log[] = {{.name = "bob"}, {.name = "bobby"}, {.name = "carol"}, {.name = "alice2"}};
    tm_users(m, log, 4, 1);
    tm_line_t *l = tm_line_new();
    char buf[128];
    tm_line_set(l, "/to c");
    assert_int_equal(tm_complete(m, l, buf, sizeof buf), 1);
    char *s = tm_line_utf8(l);
    assert_string_equal(s, "/to carol ");
    free(s);
    tm_line_set(l, "/to carol,b");
    assert_int_equal(tm_complete(m, l, buf, sizeof buf), 2);
    assert_string_equal(buf, "bob, bobby");
    s = tm_line_utf8(l);
    assert_string_equal(s, "/to carol,bob");   /* the common prefix */
    free(s);
    tm_line_set(l, "al");
    assert_int_equal(tm_complete(m, l, buf, sizeof buf), 1);   /* not ourselves */
    s = tm_line_utf8(l);
    assert_string_equal(s, "alice2 ");
    free(s);
    tm_line_set(l, "zz");
    assert_int_equal(tm_complete(m, l, buf, sizeof buf), 0);
    tm_line_destroy(&l);
    tm_destroy(&m);
}

static void exchange_machine(void **state)
{
    (void) state;
    char err[128];
    const char *bad[] = {"A", "all"};
    assert_null(xchg_new("A", bad, 2, 10, 20, 1, 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "not a user name"));
    const char *alone[] = {"A"};
    assert_null(xchg_new("A", alone, 1, 10, 20, 1, 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "nobody but A"));
    const char *other[] = {"B", "C"};
    assert_null(xchg_new("A", other, 2, 10, 20, 1, 0, 0, err, sizeof err));
    assert_non_null(strstr(err, "not in --group"));
    const char *g[] = {"A", "B", "C", "B"};
    assert_null(xchg_new("A", g, 4, 30, 20, 1, 0, 0, err, sizeof err));
    xchg_t *x = xchg_new("A", g, 4, 10, 20, 42, 2, 0, err, sizeof err);
    assert_non_null(x);
    assert_int_equal(xchg_n_peers(x), 2);   /* B once */
    int wait;
    const char *to;
    assert_int_equal(xchg_step(x, 0, &to, &wait), XCHG_NONE);
    assert_int_equal(wait, -1);
    assert_int_equal(xchg_presence(x, "B", 1), 1);
    assert_int_equal(xchg_presence(x, "zed", 1), 0);
    assert_int_equal(xchg_step(x, 0, &to, &wait), XCHG_NONE);
    xchg_presence(x, "C", 1);
    assert_int_equal(xchg_step(x, 1000, &to, &wait), XCHG_START);
    assert_int_equal(xchg_step(x, 1000, &to, &wait), XCHG_NONE);
    assert_true(wait >= 10 && wait <= 20);
    assert_int_equal(xchg_step(x, 1020, &to, &wait), XCHG_SEND);
    assert_true(strcmp(to, "B") == 0 || strcmp(to, "C") == 0);
    assert_int_equal(xchg_step(x, 1040, &to, &wait), XCHG_SEND);
    assert_int_equal(xchg_sent(x), 2);
    assert_int_equal(xchg_step(x, 1040, &to, &wait), XCHG_FINISH);   /* count reached */
    assert_int_equal(xchg_delivery(x, "B", ""), 0);
    assert_int_equal(xchg_delivery(x, "B", XCHG_DONE_TEXT), 1);
    assert_int_equal(xchg_step(x, 1050, &to, &wait), XCHG_NONE);
    xchg_presence(x, "C", 0);   /* left after the start: done */
    assert_int_equal(xchg_step(x, 1050, &to, &wait), XCHG_LEAVE);
    assert_int_equal(xchg_phase(x), XCHG_FINISHED);
    assert_int_equal(xchg_received(x), 2);
    xchg_destroy(&x);
    /* The same seed picks the same peers. */
    xchg_t *y1 = xchg_new("A", g, 3, 10, 20, 7, 0, 0, err, sizeof err);
    xchg_t *y2 = xchg_new("A", g, 3, 10, 20, 7, 0, 0, err, sizeof err);
    cw_user_t on[] = {{.name = "B", .online = 1}, {.name = "C", .online = 1}};
    xchg_users(y1, on, 2);
    xchg_users(y2, on, 2);
    xchg_step(y1, 0, &to, NULL);
    xchg_step(y2, 0, &to, NULL);
    for (int i = 0; i < 10; i++) {
        const char *t1, *t2;
        assert_int_equal(xchg_step(y1, 100 * (i + 1), &t1, NULL), XCHG_SEND);
        assert_int_equal(xchg_step(y2, 100 * (i + 1), &t2, NULL), XCHG_SEND);
        assert_string_equal(t1, t2);
    }
    xchg_stop(y1);
    assert_int_equal(xchg_step(y1, 5000, &to, NULL), XCHG_FINISH);
    xchg_destroy(&y1);
    xchg_destroy(&y2);
    /* Stopped while waiting: over at once. */
    xchg_t *z = xchg_new("A", g, 3, 10, 20, 7, 0, 0, err, sizeof err);
    xchg_stop(z);
    assert_int_equal(xchg_phase(z), XCHG_FINISHED);
    xchg_destroy(&z);
}

int main(void)
{
    if (!setlocale(LC_CTYPE, "C.UTF-8"))
        return 77;   /* no UTF-8 locale: wcwidth cannot be tested */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(users_and_unread),    cmocka_unit_test(recipients),
        cmocka_unit_test(fates_and_receipts),  cmocka_unit_test(clock_changes),
        cmocka_unit_test(limits),              cmocka_unit_test(render_hostile_text),
        cmocka_unit_test(wrap_by_width),       cmocka_unit_test(input_line),
        cmocka_unit_test(completion),          cmocka_unit_test(exchange_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
