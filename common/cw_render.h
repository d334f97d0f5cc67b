/*  cw_render: untrusted text made safe and unambiguous on a terminal.
 *
 *  Message texts (and anything else a peer or a trace file chose) are
 *  printed by every program: the chat, listen, fetch, history, clockd. A
 *  text must not pass for program output: a newline followed by
 *  "[04:01:00] carol -> you: ..." would look like a message from carol, a
 *  carriage return or an escape sequence could move the cursor, recolour
 *  or clear the screen, a line as long as the terminal would wrap to
 *  column 0 by itself. One rule, applied by everyone:
 *
 *    - every line break of the text (LF) starts a continuation line that
 *      begins with the caller's continuation prefix (e.g. "    | "), never
 *      at column 0 with the sender's bytes (CW_RENDER_ONELINE: shown as the
 *      two characters \n instead, for one-line-per-record output);
 *    - with a width, text that would reach the terminal's last column is
 *      wrapped onto a continuation line the same way (display widths from
 *      wcwidth(3) in the current locale: wide CJK and emoji count 2,
 *      combining marks 0);
 *    - C0 controls other than LF and TAB as caret notation (ESC is ^[, CR
 *      is ^M, DEL is ^?), TAB as spaces to the next multiple of 8;
 *      C1 controls (U+0080..U+009F: U+009B is a CSI on some terminals), the
 *      line and paragraph separators U+2028/U+2029, bidirectional controls
 *      (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) and code
 *      points the locale cannot print as <U+XXXX>;
 *    - bytes that are not well-formed UTF-8 as U+FFFD.
 *  Everything else (printable UTF-8: accents, combining marks, CJK,
 *  emoji) is copied unchanged.
 *
 *  Thread-safe (no state); the widths depend on the process's LC_CTYPE,
 *  which cw_render_locale() sets to a UTF-8 one.
 *  Hand-written: no Debian library renders untrusted text this way (libc
 *  has wcwidth, which this uses; vis(3) from libbsd escapes but neither
 *  marks continuation lines nor wraps).
 */
#ifndef CW_RENDER_H
#define CW_RENDER_H

#include <stddef.h>

enum {
    CW_RENDER_ONELINE = 1, /* LF, CR and TAB as \n, \r, \t: the text stays on one line */
};

/* Renders the len bytes at text (NULs in them are shown as ^@). col: the
 * display column where the text starts on the current line (the width of
 * what precedes it, see cw_render_width); width: the terminal's width in
 * columns for wrapping, 0 for none (not a terminal); cont: the prefix of
 * every continuation line (ASCII; NULL: "  | "). Returns a new
 * NUL-terminated string (caller frees), NULL if out of memory. */
char *cw_render_text(const char *text, size_t len, int col, int width, const char *cont,
                     int flags);

/* Display width in columns of a NUL-terminated UTF-8 string as
 * cw_render_text would print it (one line: LF counts as 2, like \n). */
int cw_render_width(const char *s);

/* The width of the terminal on file descriptor fd, 0 if it is not one (or
 * the size is unknown). */
int cw_render_term_width(int fd);

/* Makes LC_CTYPE a UTF-8 locale: the one the environment names if it is
 * UTF-8, else C.UTF-8 (always present on Debian), else leaves it. Returns
 * 1 if LC_CTYPE is UTF-8 afterwards. Call once at program start, before
 * threads. */
int cw_render_locale(void);

#endif
