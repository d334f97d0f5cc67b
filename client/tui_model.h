/*  tui_model.h: what `causeway tui` shows, as pure logic: the user log with
 *  unread counts, the recipient choice, the conversation with each sent
 *  message's fate per recipient, the vector clock with its changed entries,
 *  the exchange log, the input line with its history and name completion,
 *  and the rendering of untrusted text into safe wide-character strings.
 *
 *  Nothing here touches the terminal, the network or a clock: tui.c (the
 *  ncurses view and controller) feeds it and draws what it holds, and
 *  tests/unit/tui_model_test.c drives it directly. Single-threaded.
 *  Strings given to it are copied; pointers it hands out stay valid until
 *  the next call that changes the same part of the model.
 *
 *  Limits: at most TM_ENTRIES_MAX conversation entries and TM_XLOG_MAX
 *  exchange log lines (the oldest go first), TM_HISTORY_MAX input lines
 *  remembered, TM_LINE_MAX characters in the input line (more are refused).
 */
#ifndef CW_TUI_MODEL_H
#define CW_TUI_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <wchar.h>

#include "causeway.h"

#define TM_ENTRIES_MAX 5000
#define TM_XLOG_MAX 1000
#define TM_HISTORY_MAX 200
#define TM_LINE_MAX 4096

typedef struct tm tm_t;

/* --- the user log -------------------------------------------------------- */

typedef struct {
    char *name;
    int online;
    int me;               /* our own name */
    unsigned unread;      /* messages from them since we last picked or wrote to them */
    int selected;         /* in the recipient set (TM_TO_SET) */
} tm_user_t;

/* A model for the session of `me`. NULL on out of memory. */
tm_t *tm_new(const char *me);
void tm_destroy(tm_t **p);
const char *tm_me(const tm_t *m);

/* The broker's user log (login, who, reconnection): every name listed is
 * known from now on with its online mark; names not listed stay known
 * (offline) as the broker may have listed a page only when `complete` is 0;
 * with complete they are marked offline. Sorted by name. */
void tm_users(tm_t *m, const cw_user_t *users, size_t n, int complete);
/* A presence event: adds the name if new. */
void tm_presence(tm_t *m, const char *name, int online);
size_t tm_n_users(const tm_t *m);
const tm_user_t *tm_user(const tm_t *m, size_t i);
/* Index of name, or -1. */
long tm_find_user(const tm_t *m, const char *name);
/* The unread count of name goes to 0. */
void tm_mark_read(tm_t *m, const char *name);

/* --- recipients ----------------------------------------------------------- */

typedef enum {
    TM_TO_ONE = 0,    /* one user (tm_choose) */
    TM_TO_SET = 1,    /* the users toggled with tm_toggle */
    TM_TO_ALL = 2,    /* everyone (broadcast) */
} tm_mode_t;

tm_mode_t tm_mode(const tm_t *m);
void tm_set_mode(tm_t *m, tm_mode_t mode);
/* Mode one, recipient name (known or not: the broker judges). */
void tm_choose(tm_t *m, const char *name);
/* Mode set; name in or out of the set. Our own name is refused (returns -1). */
int tm_toggle(tm_t *m, const char *name);
/* The recipients of the next send: *names (owned by m, valid until the
 * next change of users or choice), *n, *broadcast. Returns 0, or -1 with
 * a reason in why if there is nobody to send to. */
int tm_recipients(const tm_t *m, const char ***names, size_t *n, int *broadcast,
                  const char **why);
/* One line for people: "to bob", "to bob, carol (set)", "to everyone",
 * "to (nobody chosen)". Written into buf; returns buf. */
char *tm_target_label(const tm_t *m, char *buf, size_t size);

/* --- the conversation ----------------------------------------------------- */

typedef enum {
    TM_FATE_SENDING = 0,  /* no reply yet */
    TM_FATE_DELIVERED,    /* live: handed to the recipient's session */
    TM_FATE_OFFLINE,      /* live: recipient not online, nothing stored */
    TM_FATE_STORED,       /* durable: in the recipient's queue at seq */
    TM_FATE_READ,         /* durable: the recipient acknowledged it (receipt) at at_us */
    TM_FATE_REFUSED,      /* another per-recipient status (UNKNOWN_USER, QUEUE_FULL, ...) */
} tm_fate_kind_t;

typedef struct {
    char *name;
    tm_fate_kind_t kind;
    cw_status_t status;   /* the broker's per-recipient status */
    uint64_t seq;         /* STORED / READ: the seq in their queue */
    uint64_t at_us;       /* READ: when they acknowledged it */
} tm_fate_t;

typedef enum {
    TM_IN = 1,            /* a message for us */
    TM_OUT = 2,           /* one we sent */
    TM_NOTE = 3,          /* a line from the program (connection, help, results) */
    TM_ERROR = 4,         /* a line from the program about a failure */
} tm_kind_t;

typedef struct {
    tm_kind_t kind;
    uint64_t id;          /* OUT: the send's id (given by the caller) */
    char *from;           /* IN: sender; OUT: us */
    char **to;            /* recipients as addressed (none for broadcast) */
    size_t n_to;
    int broadcast;
    char *text;           /* as received/typed (render with tm_render) */
    uint64_t ts_us;       /* IN: broker receipt time; OUT: when typed; NOTE: when */
    int durable;
    uint64_t seq;         /* IN durable: seq in our queue */
    int listing;          /* IN: from a fetch (1) or history (2) listing */
    int expired;          /* IN: durable message whose TTL ran out */
    int receipt_requested; /* IN: the sender asked for a read receipt (our ack tells them) */
    char *message_id;     /* "" if unknown yet */
    int pending;          /* OUT: no reply yet */
    cw_status_t status;   /* OUT: the send's status once known */
    int failed;           /* OUT: outcome unknown or refused as a whole: can be resent */
    tm_fate_t *fates;     /* OUT: one per recipient once known */
    size_t n_fates;
} tm_entry_t;

size_t tm_n_entries(const tm_t *m);
const tm_entry_t *tm_entry(const tm_t *m, size_t i);   /* 0 = oldest kept */
/* Counts every change to entries (added, updated): the view redraws when it moves. */
uint64_t tm_generation(const tm_t *m);

/* A message for us (delivery, or fetch/history listing 1/2). Counts as
 * unread for the sender unless listing. */
void tm_add_in(tm_t *m, const cw_message_t *msg, int listing);
/* A send we just asked for (pending). Resets the unread counts of its
 * recipients. Returns the entry or NULL (out of memory). */
const tm_entry_t *tm_add_out(tm_t *m, uint64_t id, const char *const *to, size_t n_to,
                             int broadcast, const char *text, int durable, uint64_t now_us);
/* The outcome of send `id`: st and, if the broker replied, its reply (fates,
 * message id). A live send with a local error (timeout, lost connection) or
 * a whole-request refusal is marked failed. Returns 0, -1 if no such entry. */
int tm_send_result(tm_t *m, uint64_t id, cw_status_t st, const cw_reply_t *reply);
/* A read receipt: recipient acknowledged our message message_id at at_us.
 * Returns 0, -1 if no kept entry has that id. */
int tm_receipt(tm_t *m, const char *message_id, const char *recipient, uint64_t at_us);
/* The newest failed entry (to resend), or NULL. */
const tm_entry_t *tm_last_failed(const tm_t *m);
/* Entry `id` goes back to pending under the new id new_id (a resend). */
int tm_resend(tm_t *m, uint64_t id, uint64_t new_id);
/* A program line (TM_NOTE or TM_ERROR). */
void tm_note(tm_t *m, tm_kind_t kind, uint64_t now_us, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "delivered", "offline", "stored #3", "read 12:00:05" (time formatted by
 * the caller's fmt_time, may be NULL), "sending", or the status name. */
const char *tm_fate_word(const tm_fate_t *f, char *buf, size_t size,
                         void (*fmt_time)(uint64_t us, char *buf, size_t size));

/* --- the vector clock ------------------------------------------------------ */

/* Our clock after a send or delivery: the entries that differ from the
 * previous one are marked changed. */
void tm_clock(tm_t *m, const cw_clock_item_t *items, size_t n);
size_t tm_n_clock(const tm_t *m);
/* Entry i: name, counter, changed since the previous clock. */
const char *tm_clock_entry(const tm_t *m, size_t i, uint64_t *counter, int *changed);

/* --- the exchange log --------------------------------------------------------- */

void tm_xlog(tm_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t tm_n_xlog(const tm_t *m);
const char *tm_xlog_line(const tm_t *m, size_t i);

/* --- rendering untrusted text ---------------------------------------------------- */

/* Converts UTF-8 text (from the wire: anything) into at most cap-1 wide
 * characters plus L'\0' that cannot move the cursor or pass for another
 * line: common/cw_render's one-line rule (newline as \n, C0 controls in
 * caret notation, C1, separators and bidi controls as <U+XXXX>, invalid
 * bytes as U+FFFD); anything still unprintable becomes U+FFFD, and a
 * combining mark at the start is put on U+25CC. Returns the number of
 * wide characters. */
size_t tm_render(const char *utf8, wchar_t *out, size_t cap);
/* Display width of s[0..n) (wcwidth; 0-width marks count 0). */
int tm_width(const wchar_t *s, size_t n);
/* Splits s into rows of at most `width` columns: ends[i] is the index one
 * past row i's last character (a combining mark stays with its base, a wide
 * character that does not fit starts the next row). Returns the number of
 * rows (at least 1), at most max_rows (the rest is cut). */
size_t tm_wrap(const wchar_t *s, int width, size_t *ends, size_t max_rows);

/* --- the input line ------------------------------------------------------------------ */

typedef struct tm_line tm_line_t;

tm_line_t *tm_line_new(void);
void tm_line_destroy(tm_line_t **p);
/* Inserts c at the cursor (refused, -1, if TM_LINE_MAX is reached or c is a
 * control character). */
int tm_line_insert(tm_line_t *l, wchar_t c);
/* Cursor movement and editing; a base character and its combining marks
 * move and go as one. */
void tm_line_left(tm_line_t *l);
void tm_line_right(tm_line_t *l);
void tm_line_home(tm_line_t *l);
void tm_line_end(tm_line_t *l);
void tm_line_backspace(tm_line_t *l);
void tm_line_delete(tm_line_t *l);
void tm_line_kill_end(tm_line_t *l);     /* Ctrl-K */
void tm_line_kill_start(tm_line_t *l);   /* Ctrl-U */
void tm_line_kill_word(tm_line_t *l);    /* Ctrl-W: the word before the cursor */
const wchar_t *tm_line_text(const tm_line_t *l, size_t *len, size_t *cursor);
/* The line as UTF-8 (caller frees), NULL on out of memory. */
char *tm_line_utf8(const tm_line_t *l);
/* Replaces the line by UTF-8 text (invalid bytes dropped), cursor at the end. */
void tm_line_set(tm_line_t *l, const char *utf8);
/* Which part to show in `width` columns so the cursor is visible:
 * characters [*first, ...) and the cursor's column. */
void tm_line_view(tm_line_t *l, int width, size_t *first, int *cursor_col);
/* History: the submitted line is remembered (not if empty or the same as
 * the last); prev/next walk it (the line being typed is kept as the
 * newest). */
void tm_line_submit(tm_line_t *l);
void tm_line_prev(tm_line_t *l);
void tm_line_next(tm_line_t *l);

/* Tab: completes the word before the cursor among the user names of m.
 * One match: the name and a space (", " after /to's list is not added; a
 * comma-separated word completes its last part). Several: their longest
 * common prefix, and the matches into buf ("bob, bobby") for the status
 * line. Returns the number of matches. */
size_t tm_complete(const tm_t *m, tm_line_t *l, char *buf, size_t size);

#endif
