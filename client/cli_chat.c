/*  cli_chat.c: the interactive chat of `causeway` (causeway chat).
 *
 *  Logs in (asking for a name when none was given or the broker refused
 *  it), then waits with poll() on standard input, the client's event
 *  descriptor and the signal pipe. On a terminal, input is edited with
 *  libedit in callback mode (rl_callback_read_char), and output that
 *  arrives while the user types is printed above the input line: the line
 *  is cleared, the output written, and the prompt and the half-typed text
 *  redrawn. Without a terminal (pipes, tests) lines are read plainly and no
 *  prompt is shown. Durable deliveries are de-duplicated and acknowledged
 *  by libcauseway (auto_ack) once printed; /durable switches what we send.
 *
 *  Runs on the main thread. The state below is file-global because
 *  libedit's line callback takes no user pointer; it is set up by
 *  cli_chat() and used only during it.
 */
#include "cli.h"

#include <editline/readline.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    cw_client_t *c;          /* the connection */
    const cli_opts_t *o;     /* options */
    const char *me;          /* our name, owned by the client */
    int tty;                 /* stdin and stdout are terminals: use libedit */
    int editing;             /* libedit callback handler installed */
    int quit;                /* /quit or end of input */
    int durable;             /* /durable on: sends are durable */
    int store;               /* the broker has a store (LoginInfo.durable) */
    char prompt[96];         /* "alice> " */
    char inbuf[65536];       /* non-terminal input not yet split into lines */
    size_t inlen;
    int in_eof;              /* non-terminal input ended */
} chat;

/* --- output above the input line ---------------------------------------- */

static void out_begin(void)
{
    if (chat.editing) {
        /* Carriage return and erase: the prompt line goes away. */
        fputs("\r\033[K", stdout);
        fflush(stdout);
    }
}

static void out_end(void)
{
    if (chat.editing)
        rl_forced_update_display();
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static void drain_events(void)
{
    cw_event_t *ev;
    while (cw_client_next_event(chat.c, 0, &ev) == CW_OK) {
        out_begin();
        cli_print_event(stdout, chat.o, ev, chat.me);
        out_end();
        cw_event_destroy(&ev);
    }
}

/* --- commands -------------------------------------------------------------- */

static void help(void)
{
    say("  TEXT                 send TEXT to everyone\n"
        "  /all TEXT            the same\n"
        "  /to bob TEXT         send to bob\n"
        "  /to bob,carol TEXT   send to bob and carol\n"
        "  //TEXT               send \"/TEXT\" to everyone\n"
        "  /who                 the user log (* = online)\n"
        "  /clock               our vector clock\n"
        "  /durable on|off      send durably (stored for offline users) or live\n"
        "  /fetch               check for stored messages not shown yet\n"
        "  /history [N]         our last N stored messages (default 20)\n"
        "  /help                this list\n"
        "  /quit                log out and leave (also Ctrl-D)");
}

static void send_text(char **to, size_t n_to, const char *text)
{
    if (!*text) {
        say("nothing to send");
        return;
    }
    cw_send_t msg = {.to = (const char *const *) to, .n_to = n_to, .broadcast = n_to == 0,
                     .text = text, .durable = chat.durable};
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_send(chat.c, &msg, chat.o->timeout_ms, &reply);
    if (reply && (st == CW_OK || st == CW_ACCEPTED || st == CW_QUEUE_FULL))
        cli_print_send(stdout, chat.o, reply, chat.durable, 1);
    else if (chat.o->json)
        cli_print_error_id(stdout, "send", st, reply ? reply->detail : NULL,
                           chat.durable && reply ? reply->message_id : NULL);
    else
        say("  send failed: %s (%s)", reply && *reply->detail ? reply->detail : cw_strerror(st),
            cw_status_name(st));
    cw_reply_destroy(&reply);
}

static void cmd_durable(const char *args)
{
    while (*args == ' ')
        args++;
    if (strcmp(args, "on") == 0 && !chat.store) {
        say("durable sending is not available: this broker has no store (it was started "
            "without --data); messages go to online users only");
        return;
    }
    if (strcmp(args, "on") == 0)
        chat.durable = 1;
    else if (strcmp(args, "off") == 0)
        chat.durable = 0;
    else if (*args) {
        say("usage: /durable on|off");
        return;
    }
    say("durable sending is %s", chat.durable ? "on: messages are stored for offline users"
                                              : "off: messages go to online users only");
}

/* /fetch and /history: a listing of stored messages. */
static void cmd_listing(int fetch, const char *args)
{
    long n = 20;
    while (*args == ' ')
        args++;
    if (!fetch && *args) {
        char *end;
        n = strtol(args, &end, 10);
        if (*end || n < 1 || n > 1000) {
            say("usage: /history [N], N from 1 to 1000");
            return;
        }
    }
    if (fetch)
        drain_events();   /* deliveries already here come first */
    cw_reply_t *reply = NULL;
    /* Fetch leaves out what was shown already; auto_ack acknowledges the
     * rest once printed. */
    cw_status_t st = fetch ? cw_client_fetch(chat.c, 0, chat.o->timeout_ms, &reply)
                           : cw_client_history(chat.c, (uint32_t) n, chat.o->timeout_ms, &reply);
    const char *what = fetch ? "fetch" : "history";
    if (st == CW_OK) {
        cli_print_messages(stdout, chat.o, reply, chat.me);
        cli_print_listing_end(stdout, chat.o, what, reply->n_messages, NULL);
    } else if (chat.o->json) {
        cli_print_error(stdout, what, st, reply ? reply->detail : NULL);
    } else {
        say("  %s failed: %s (%s)", what, reply && *reply->detail ? reply->detail : cw_strerror(st),
            cw_status_name(st));
    }
    cw_reply_destroy(&reply);
}

/* "/to bob,carol some text" (after "/to "). */
static void cmd_to(char *args)
{
    while (*args == ' ')
        args++;
    char *text = strchr(args, ' ');
    if (!*args || !text) {
        say("usage: /to NAME[,NAME...] TEXT");
        return;
    }
    *text++ = '\0';
    while (*text == ' ')
        text++;
    char *to[256];
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(args, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!*tok)
            continue;
        if (n == sizeof to / sizeof to[0]) {
            say("too many recipients (at most %zu per line)", n);
            return;
        }
        to[n++] = tok;
    }
    if (n == 0) {
        say("usage: /to NAME[,NAME...] TEXT");
        return;
    }
    send_text(to, n, text);
}

static void cmd_who(void)
{
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_who(chat.c, chat.o->timeout_ms, &reply);
    if (st == CW_OK)
        cli_print_users(stdout, chat.o, "who", reply->users, reply->n_users);
    else
        say("  who failed: %s (%s)", cw_strerror(st), cw_status_name(st));
    cw_reply_destroy(&reply);
}

/* True if line starts with the command word cmd (followed by end or space). */
static int is_cmd(const char *line, const char *cmd, char **rest)
{
    size_t n = strlen(cmd);
    if (strncmp(line, cmd, n) != 0 || (line[n] && line[n] != ' '))
        return 0;
    *rest = (char *) line + n + (line[n] ? 1 : 0);
    return 1;
}

static void handle_line(char *line)
{
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return;
    char *rest;
    if (p[0] != '/')
        send_text(NULL, 0, p);
    else if (p[1] == '/')
        send_text(NULL, 0, p + 1);
    else if (is_cmd(p, "/to", &rest))
        cmd_to(rest);
    else if (is_cmd(p, "/all", &rest))
        send_text(NULL, 0, rest);
    else if (is_cmd(p, "/who", &rest))
        cmd_who();
    else if (is_cmd(p, "/durable", &rest))
        cmd_durable(rest);
    else if (is_cmd(p, "/fetch", &rest))
        cmd_listing(1, rest);
    else if (is_cmd(p, "/history", &rest))
        cmd_listing(0, rest);
    else if (is_cmd(p, "/clock", &rest)) {
        char buf[4096];
        say("clock %s", cw_client_clock(chat.c, buf, sizeof buf));
    } else if (is_cmd(p, "/help", &rest) || is_cmd(p, "/?", &rest))
        help();
    else if (is_cmd(p, "/quit", &rest) || is_cmd(p, "/exit", &rest))
        chat.quit = 1;
    else
        say("unknown command %s; /help lists them", p);
}

/* libedit's line callback: line is ours to free, NULL at end of input. */
static void on_line(char *line)
{
    if (!line) {
        chat.quit = 1;
        fputc('\n', stdout);
        return;
    }
    if (*line)
        add_history(line);
    handle_line(line);
    free(line);
    /* libedit leaves the terminal in cooked mode after a line and would
     * read the next one in a single blocking call; installing the handler
     * again puts it back in raw, one-character mode and shows the prompt. */
    if (!chat.quit)
        rl_callback_handler_install(chat.prompt, on_line);
}

/* --- plain (non-terminal) input --------------------------------------------- */

/* Reads what is available; returns 0, or -1 at end of input. */
static int fill_input(void)
{
    if (chat.inlen == sizeof chat.inbuf) {
        /* A line longer than the buffer: take it as it is. */
        chat.inbuf[sizeof chat.inbuf - 1] = '\0';
        handle_line(chat.inbuf);
        chat.inlen = 0;
    }
    ssize_t n = read(STDIN_FILENO, chat.inbuf + chat.inlen, sizeof chat.inbuf - chat.inlen - 1);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (n == 0)
        return -1;
    chat.inlen += (size_t) n;
    return 0;
}

/* Takes the next complete line out of the buffer into out; 1 if there was
 * one (or, at end of input, a final unterminated line). */
static int take_line(char *out, size_t size)
{
    char *nl = memchr(chat.inbuf, '\n', chat.inlen);
    size_t len;
    if (nl)
        len = (size_t) (nl - chat.inbuf) + 1;
    else if (chat.in_eof && chat.inlen)
        len = chat.inlen;
    else
        return 0;
    size_t copy = len < size - 1 ? len : size - 1;
    memcpy(out, chat.inbuf, copy);
    out[copy] = '\0';
    memmove(chat.inbuf, chat.inbuf + len, chat.inlen - len);
    chat.inlen -= len;
    return 1;
}

static void plain_input(void)
{
    if (fill_input() != 0)
        chat.in_eof = 1;
    char line[sizeof chat.inbuf];
    while (!chat.quit && take_line(line, sizeof line))
        handle_line(line);
    if (chat.in_eof && !chat.inlen)
        chat.quit = 1;
}

/* --- name and login ------------------------------------------------------- */

/* Asks for a name; NULL at end of input. Caller frees. */
static char *ask_name(void)
{
    for (;;) {
        char *line = NULL;
        if (chat.tty) {
            line = readline("name: ");
            if (!line)
                return NULL;
        } else {
            char buf[256];
            while (!take_line(buf, sizeof buf)) {
                if (chat.in_eof || fill_input() != 0) {
                    chat.in_eof = 1;
                    if (!take_line(buf, sizeof buf))
                        return NULL;
                    break;
                }
            }
            line = strdup(buf);
            if (!line)
                return NULL;
        }
        char *p = line;
        while (*p == ' ')
            p++;
        size_t len = strlen(p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\n' || p[len - 1] == '\r'))
            p[--len] = '\0';
        if (len) {
            char *name = strdup(p);
            free(line);
            return name;
        }
        free(line);
        if (cli_stopping)
            return NULL;
    }
}

/* Logs in, asking for names as needed. Returns 1 when logged in, else 0
 * and *code is the exit code. */
static int chat_login(int *code)
{
    char *asked = NULL;
    const char *name = chat.o->name;
    for (;;) {
        if (!name) {
            free(asked);
            asked = ask_name();
            if (!asked || cli_stopping) {
                free(asked);
                if (chat.tty)
                    fputc('\n', stdout);
                if (!cli_stopping)
                    fprintf(stderr, "causeway chat: no name given (end of input); leaving\n");
                /* Interrupted: a clean exit. Out of names: refused. */
                *code = cli_stopping ? CLI_EXIT_OK : CLI_EXIT_REFUSED;
                return 0;
            }
            name = asked;
        }
        cw_reply_t *reply = NULL;
        cw_status_t st = cw_client_login(chat.c, name, chat.o->timeout_ms, &reply);
        if (st == CW_OK) {
            chat.me = cw_client_name(chat.c);
            chat.store = reply && reply->has_login && reply->login.durable;
            cli_print_login(stdout, chat.o, chat.me, reply);
            cw_reply_destroy(&reply);
            free(asked);
            return 1;
        }
        if (st != CW_NAME_TAKEN && st != CW_BAD_NAME) {
            char what[128];
            snprintf(what, sizeof what, "login as '%s'", name);
            *code = cli_fail(chat.o, what, st, reply);
            cw_reply_destroy(&reply);
            free(asked);
            return 0;
        }
        if (chat.o->json)
            cli_print_error(stdout, "login", st, reply ? reply->detail : NULL);
        fprintf(stderr, "name '%s' refused: %s; try another one\n", name,
                reply && *reply->detail ? reply->detail : cw_strerror(st));
        cw_reply_destroy(&reply);
        name = NULL;
    }
}

/* --- the loop -------------------------------------------------------------- */

int cli_chat(const cli_opts_t *o)
{
    memset(&chat, 0, sizeof chat);
    chat.o = o;
    chat.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    chat.durable = o->durable;
    if (!o->name && !isatty(STDIN_FILENO)) {
        /* Piped input is the messages: never take a name from it. */
        fprintf(stderr, "causeway chat: no --name given and standard input is not a terminal; "
                        "give --name NAME (input lines are then sent as messages)\n");
        return CLI_EXIT_USAGE;
    }
    chat.c = cli_connect(o, 0, 0, 1);
    if (!chat.c)
        return CLI_EXIT_USAGE;
    int code;
    if (!chat_login(&code)) {
        cw_client_destroy(&chat.c);
        return code;
    }
    if (chat.durable && !chat.store) {
        chat.durable = 0;
        say("durable sending is off: this broker has no store (it was started without "
            "--data); messages go to online users only");
    }
    if (!o->json && chat.tty)
        say("type /help for commands");

    if (chat.tty) {
        snprintf(chat.prompt, sizeof chat.prompt, "%s> ", chat.me);
        rl_callback_handler_install(chat.prompt, on_line);
        chat.editing = 1;
    }
    while (!chat.quit && !cli_stopping) {
        drain_events();
        struct pollfd fds[3] = {
            {.fd = cw_client_fd(chat.c), .events = POLLIN},
            {.fd = cli_signal_fd, .events = POLLIN},
            {.fd = STDIN_FILENO, .events = POLLIN},
        };
        if (poll(fds, 3, -1) < 0 && errno != EINTR)
            break;
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (chat.tty)
                rl_callback_read_char();
            else
                plain_input();
        }
    }
    drain_events();
    if (chat.editing) {
        rl_callback_handler_remove();
        chat.editing = 0;
        if (cli_stopping)
            fputc('\n', stdout);
    }
    cw_status_t st = cw_client_logout(chat.c, o->timeout_ms);
    if (st != CW_OK && st != CW_ERR_DISCONNECTED)
        fprintf(stderr, "causeway: logout: %s\n", cw_strerror(st));
    cli_close(&chat.c, o);
    return CLI_EXIT_OK;
}
