/*  cli.c: `causeway`, the command-line client: argument parsing, help,
 *  signal handling and the scriptable subcommands (send, listen, fetch,
 *  history, who, stats). The interactive chat is in cli_chat.c, the
 *  phase-3 exchange in cli_exchange.c, output formats in cli_out.c. With
 *  --trace / --clockd, libcauseway records causal events; cli_close waits
 *  (bounded) for the daemon before the client goes. Durable messages are de-duplicated and
 *  acknowledged by libcauseway (auto_ack) once printed.
 *
 *  Runs on the main thread (libcauseway adds its I/O thread). Invariants:
 *  every path that logged in logs out before exiting, also on SIGINT and
 *  SIGTERM (the handlers only set a flag and wake the poll loops); stdout
 *  carries results only (one JSON object per line with --json), stderr
 *  carries diagnostics; the exit code follows the table in --help.
 */
#include "cli.h"
#include "cw_log.h"
#include "cw_render.h"
#include "cw_sec.h"
#include "cw_util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile sig_atomic_t cli_stopping;
int cli_signal_fd = -1;
static int signal_wfd = -1;

/* --- help ------------------------------------------------------------------ */

static const char exit_codes_help[] =
    "Exit status:\n"
    "  0  success\n"
    "  1  the message did not reach some recipient (OFFLINE, UNKNOWN_USER,\n"
    "     durable: QUEUE_FULL, ...)\n"
    "  2  usage error\n"
    "  3  could not reach the broker (UNREACHABLE: the connection was refused,\n"
    "     said at once with the endpoint and the cause; or not a ZeroMQ service),\n"
    "     timeout, connection lost, or the security handshake failed\n"
    "     (HANDSHAKE_FAILED: plain vs CURVE, key refused, ...)\n"
    "     A malformed --endpoint (e.g. 127.0.0.1:7400 without tcp://; in a list:\n"
    "     an empty element, one named twice, more than 16) is exit 2.\n"
    "  4  refused by the broker (NAME_TAKEN, BAD_NAME, TOO_LARGE, NOT_DURABLE, ...)\n";

static const char common_help[] =
    "Common options:\n"
    "  -e, --endpoint ADDR   broker endpoint (default $CAUSEWAY_ENDPOINT, else\n"
    "                        " CW_CLIENT_DEFAULT_ENDPOINT "); several brokers on one\n"
    "                        store: ADDR,ADDR,... (at most 16): used one at a time,\n"
    "                        the next one when the broker in use is lost (failover:\n"
    "                        the session is resumed there, a line says so)\n"
    "  -t, --timeout MS      wait at most MS ms for each broker reply (default 5000)\n"
    "  -j, --json            print one JSON object per line (read-only output)\n"
    "      --clocks          show vector clocks in human output\n"
    "      --log-level L     error|warn|info|debug|trace (default $CAUSEWAY_LOG_LEVEL or warn)\n"
    "      --server-key FILE the broker's public key (CURVE brokers): its certificate\n"
    "                        or the Z85 key (default $CAUSEWAY_SERVER_KEY)\n"
    "      --cert FILE       your certificate for CURVE, NAME.key_secret from\n"
    "                        `causeway keygen NAME` (default $CAUSEWAY_CERT)\n"
    "      --clockd-key FILE the public key of a CURVE causeway-clockd (with --cert;\n"
    "                        default $CAUSEWAY_CLOCKD_KEY)\n"
    "  -h, --help            show help (also after a command)\n"
    "  -V, --version         show the version\n"
    "Causal events (chat, send, listen, fetch, exchange):\n"
    "      --trace FILE      append each send and delivery with its vector clock to\n"
    "                        FILE, one JSON line each, written at once\n"
    "                        (causeway-clockd audit FILE reads it)\n"
    "      --clockd ENDPOINT report them to a causeway-clockd daemon: batched, never\n"
    "                        delays a send; at exit waits up to 2 s (and --timeout)\n"
    "                        for it to confirm them, and says so on stderr if not\n";

static void help_main(FILE *f)
{
    fprintf(f,
            "Usage: causeway [OPTIONS] [COMMAND] [ARGS]\n"
            "\n"
            "Command-line client of the causeway chat broker.\n"
            "\n"
            "Commands:\n"
            "  tui      full-screen terminal client: users, conversation, fates, clock\n"
            "  chat     interactive chat (the default when no command is given)\n"
            "  send     log in, send one message, print per-recipient results, log out\n"
            "  listen   log in and print deliveries and presence events as they arrive\n"
            "  fetch    check for messages: print and acknowledge the stored ones waiting\n"
            "  history  print the last stored messages (acknowledged or not)\n"
            "  who      print the broker's user log (no login)\n"
            "  stats    print broker statistics (no login); --watch for rates;\n"
            "           stats sessions|queues|recent: the operator views\n"
            "  top      a live full-screen view of the broker (operators)\n"
            "  exchange the phase-3 vector clock exchange between a fixed group\n"
            "  keygen   make a CURVE key pair: causeway keygen NAME (a user), --server\n"
            "  help     help on a command: causeway help send\n"
            "\n"
            "Durable messages (brokers started with --data) wait for offline users:\n"
            "  causeway send --name alice --to bob --durable \"see you tomorrow\"\n"
            "  causeway fetch --name bob      (later; or listen / chat as bob)\n"
            "Each one is shown once per run and acknowledged after it was printed.\n"
            "\n"
            "%s\n%s",
            common_help, exit_codes_help);
}

static void help_chat(FILE *f)
{
    fprintf(f,
            "Usage: causeway chat [--name NAME] [OPTIONS]\n"
            "       causeway [--name NAME] [OPTIONS]\n"
            "\n"
            "Interactive chat. On a terminal, asks for a name if none is given, and\n"
            "again if the broker refuses it; with input from a pipe or file --name is\n"
            "required (exit 2 without it) and every input line is a line typed.\n"
            "Text is UTF-8 (the chat uses a UTF-8 locale: $LC_ALL/$LC_CTYPE/$LANG if\n"
            "it is one, else C.UTF-8). Lines typed:\n"
            "  TEXT                 send TEXT to everyone\n"
            "  /all TEXT            the same\n"
            "  /to bob TEXT         send to bob\n"
            "  /to bob,carol TEXT   send to bob and carol\n"
            "  /who                 the user log\n"
            "  /clock               our vector clock\n"
            "  /durable on|off      send durably (stored for offline users) or live;\n"
            "                       refused at once on a broker without a store\n"
            "  /fetch               check for stored messages not shown yet\n"
            "  /history [N]         our last N stored messages (default 20)\n"
            "  /help                this list\n"
            "  /quit                log out and leave (also Ctrl-D, Ctrl-C)\n"
            "\n"
            "Durable messages show their queue position: [12:00:01 #3] bob -> you: hi.\n"
            "Waiting ones arrive right after the login; each is shown once and\n"
            "acknowledged after it was printed.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name\n"
            "      --durable         start with durable sending on\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_tui(FILE *f)
{
    fprintf(f,
            "Usage: causeway tui --name NAME [--durable] [--to LIST] [OPTIONS]\n"
            "\n"
            "Full-screen terminal client (needs a terminal; UTF-8 locale for wide\n"
            "characters). Panes: the conversation (scrollback), the user log (every\n"
            "user the broker has seen, online or not, unread counts), an optional\n"
            "vector clock pane, the recipients line, the input line and a status line\n"
            "(connection, endpoint, live or durable). Each sent message shows what\n"
            "became of it per recipient, updated in place: delivered, offline, stored\n"
            "#SEQ (durable), read TIME (a read receipt: durable sends ask for them\n"
            "unless /receipts off), or \"not sent\" (F9 resends it with the same id).\n"
            "Nothing waits for the broker: replies, deliveries and presence arrive\n"
            "while you type. Reconnects by itself after a broker restart and says so.\n"
            "Durable messages are acknowledged once they are on the screen.\n"
            "\n"
            "Keys: F1 or ? help, F2 durable/live, F3 recipients 1-to-1 / 1-to-n / all,\n"
            "F4 user list (Enter picks, Space toggles, a = all), F5 check for messages,\n"
            "F6 history, F7 clock pane, F8 exchange view, F9 or Ctrl-R resend, F10 quit;\n"
            "Tab completes names; PageUp/PageDown scroll; Up/Down input history.\n"
            "Commands: /to a,b  /all [TEXT]  /durable on|off  /receipts on|off  /fetch\n"
            "/history [N]  /clock  /exchange A,B,C [MIN-MS MAX-MS [COUNT]] | stop\n"
            "/resend  /help  /quit; //TEXT sends \"/TEXT\". The exchange view runs\n"
            "causeway exchange's phase-3 clock exchange (same rules, same \"done\"\n"
            "ending) with its log on screen. docs/TUI.md shows a screen.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name (another one is asked for if refused)\n"
            "      --durable         start with durable sending on\n"
            "      --to LIST         start with these recipients (one: 1-to-1, several: a set;\n"
            "                        default: everyone)\n"
            "      --mouse           clicks pick users, the wheel scrolls\n"
            "      --log-file FILE   write diagnostics there while the screen is up\n"
            "                        (default: discarded)\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_send(FILE *f)
{
    fprintf(f,
            "Usage: causeway send --name NAME (--to USER[,USER...] | --all) [OPTIONS] TEXT...\n"
            "\n"
            "Logs in as NAME (quietly, in pull mode: messages stored for NAME stay\n"
            "queued), sends TEXT (the words joined by spaces; read from standard\n"
            "input when no TEXT is given), prints one result per recipient and\n"
            "logs out.\n"
            "\n"
            "Live (default): handed to recipients online now (DELIVERED); offline ones\n"
            "get nothing (OFFLINE). Sent at most once.\n"
            "Durable (--durable, brokers started with --data): stored and fsynced for\n"
            "every known recipient, online or not (ACCEPTED, with its place in the\n"
            "recipient's queue, seq); offline ones get it when they next log in. If\n"
            "the reply is lost (timeout, broker restart) the message is sent again\n"
            "with the same message id, within --timeout; the broker stores an id\n"
            "once, so a repeated id reports \"duplicate\" and nobody gets a second\n"
            "copy. Without --id a unique id is made up and printed: to retry after\n"
            "exit status 3, send again with --id ID.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name to send as\n"
            "      --to LIST         recipients, comma-separated; may be repeated\n"
            "  -a, --all             send to every known user\n"
            "      --durable         store-and-forward (brokers with a store)\n"
            "      --id MSGID        message id (at most 128 bytes), unique per sender\n"
            "      --ttl S           durable: drop the message if not delivered within\n"
            "                        S seconds (default: the broker's --ttl)\n"
            "      --receipt         durable: ask for a read receipt from each recipient;\n"
            "                        it waits in your queue until you next listen (or\n"
            "                        fetch, chat, tui): \"bob read your message ID\"\n"
            "\n"
            "Human output: one line per recipient (\"bob: ACCEPTED (seq 3)\"); durable\n"
            "adds \"message id: ID\", and a \"duplicate: ...\" line for a repeated id.\n"
            "JSON output: {\"event\":\"send\",\"status\":\"OK|ACCEPTED|QUEUE_FULL\",\n"
            "\"durable\":..,\"duplicate\":..,\"message_id\":..,\"recipients\":[{\"name\":..,\n"
            "\"status\":\"DELIVERED|OFFLINE|UNKNOWN_USER|ACCEPTED|QUEUE_FULL\",\"seq\":..}],\n"
            "\"clock\":{..}}; on failure {\"event\":\"error\",..,\"message_id\":..}.\n"
            "Exit status 0 when every recipient got it (DELIVERED, or ACCEPTED), 1 when\n"
            "some did not.\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_listen(FILE *f)
{
    fprintf(f,
            "Usage: causeway listen --name NAME [--count N] [--for MS] [OPTIONS]\n"
            "\n"
            "Logs in as NAME, prints the user log once (as soon as the login succeeded),\n"
            "then every delivery, read receipt and presence event as it arrives, one\n"
            "line each, flushed. Stops after N deliveries and receipts, after MS\n"
            "milliseconds, or on\n"
            "SIGINT/SIGTERM, logs out and exits 0. Reconnects by itself if the broker\n"
            "goes away.\n"
            "\n"
            "Durable messages waiting for NAME arrive right after the login; each one\n"
            "is printed once (redeliveries after a reconnection are dropped), with\n"
            "its seq (human: \"[12:00:01 #3] bob -> you: hi\"), and acknowledged\n"
            "within 200 ms after it was printed and before the logout. If listen is\n"
            "killed in between, the next login shows those messages again.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name\n"
            "  -c, --count N         stop after N deliveries and receipts\n"
            "      --for MS          stop after MS milliseconds\n"
            "      --ready-fd FD     once logged in (the broker now routes messages to\n"
            "                        NAME), write \"ready NAME\" and a newline to file\n"
            "                        descriptor FD and close it; closed without a line if\n"
            "                        the login fails. For scripts: start listen in the\n"
            "                        background, wait for the line, then send:\n"
            "                          mkfifo ready\n"
            "                          causeway listen --name bob --count 1 --ready-fd 3 3>ready &\n"
            "                          read line <ready && causeway send --name alice --to bob hi\n"
            "\n"
            "Read receipts (for messages sent with --receipt, PROTOCOL.md 13.12) are\n"
            "printed \"[12:00:05 #4] bob read your message ID\" and acknowledged like\n"
            "messages.\n"
            "\n"
            "JSON lines:\n"
            "  {\"event\":\"login\",\"name\":..,\"users\":[{\"name\":..,\"online\":..,\"last_seen_us\":..}]}\n"
            "  {\"event\":\"deliver\",\"from\":..,\"to\":[..],\"broadcast\":..,\"text\":..,\n"
            "   \"timestamp_us\":..,\"seq\":..,\"message_id\":..,\"durable\":..,\"redelivered\":..,\n"
            "   \"expired\":..,\"damaged\":..,\"clock\":{..},\"local_clock\":{..}}   (seq 0: live message;\n"
            "   damaged: a message was lost in the broker's store, only seq is set)\n"
            "  {\"event\":\"receipt\",\"message_id\":..,\"reader\":..,\"read_us\":..,\"seq\":..,\n"
            "   \"message_seq\":..}   (a deliver line has \"receipt_requested\":true when\n"
            "   the sender asked for one)\n"
            "  {\"event\":\"presence\",\"name\":..,\"online\":..,\"reason\":\"login|logout|expired|shutdown\"}\n"
            "  {\"event\":\"disconnected\",\"detail\":..}  {\"event\":\"reconnected\",..}\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_fetch(FILE *f)
{
    fprintf(f,
            "Usage: causeway fetch --name NAME [--max N] [--keep] [OPTIONS]\n"
            "\n"
            "Checks for messages: logs in as NAME in pull mode (the broker pushes\n"
            "nothing), prints every stored message waiting for NAME, oldest first,\n"
            "with sender, the broker's time of receipt and seq, or \"no messages\",\n"
            "acknowledges them (they are not shown again) and logs out. Needs a\n"
            "broker started with --data (else NOT_DURABLE, exit 4).\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name\n"
            "      --max N           at most N messages (default: all)\n"
            "      --keep            do not acknowledge: the messages stay waiting\n"
            "                        (at most 1000 are shown)\n"
            "\n"
            "Human output: \"[2025-01-31 12:00:01 #3] bob -> you: hi\" per message.\n"
            "JSON lines: {\"event\":\"message\",\"from\":..,\"to\":[..],\"broadcast\":..,\n"
            "\"text\":..,\"timestamp_us\":..,\"seq\":..,\"message_id\":..,\"durable\":true,\n"
            "\"redelivered\":..,\"expired\":..,\"damaged\":..,\"clock\":{..}} per message\n"
            "(damaged: a message was lost in the broker's store; only seq is set), then\n"
            "{\"event\":\"fetch\",\"count\":N,\"acked\":SEQ} (acked: highest seq acknowledged, 0 none).\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_history(FILE *f)
{
    fprintf(f,
            "Usage: causeway history --name NAME [--last N] [OPTIONS]\n"
            "\n"
            "Logs in as NAME in pull mode and prints NAME's last N stored messages,\n"
            "acknowledged (as many as the broker's --retention keeps) or still waiting,\n"
            "oldest first, or \"no messages\". Changes nothing.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       user name\n"
            "      --last N          how many (default 100, at most 1000)\n"
            "\n"
            "Output as for fetch; the JSON summary is {\"event\":\"history\",\"count\":N}.\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_who(FILE *f)
{
    fprintf(f,
            "Usage: causeway who [OPTIONS]\n"
            "\n"
            "Prints every user the broker has seen, online or not. No login needed.\n"
            "JSON output: {\"event\":\"who\",\"users\":[{\"name\":..,\"online\":..,\"last_seen_us\":..}]}\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_keygen(FILE *f)
{
    fprintf(f,
            "Usage: causeway keygen NAME [--dir DIR]\n"
            "       causeway keygen --server [NAME] [--dir DIR]\n"
            "\n"
            "Makes a CURVE key pair for a CURVE broker (or clockd), in two files:\n"
            "  DIR/NAME.key         the public certificate (metadata: user = NAME)\n"
            "  DIR/NAME.key_secret  the secret one (mode 0600): keep it private\n"
            "With --server the pair is a server's (no user; NAME defaults to \"broker\"):\n"
            "start the broker with --curve-secret DIR/NAME.key_secret and give clients\n"
            "DIR/NAME.key as --server-key. A user is registered by copying NAME.key\n"
            "into the broker's --users directory; the user connects with\n"
            "--cert NAME.key_secret. Existing files are never overwritten.\n"
            "See docs/OPERATIONS.md, \"Security\" (registering, rotating keys).\n"
            "\n"
            "Options:\n"
            "      --dir DIR         where to write the files (default: current directory)\n"
            "      --server          a server key pair, without a user name\n"
            "\n"
            "Exit status: 0 written, 2 usage error, 4 cannot write (or files exist).\n");
}

static void help_exchange(FILE *f)
{
    fprintf(f,
            "Usage: causeway exchange --name NAME --group A,B,C [--min-ms MS] [--max-ms MS]\n"
            "                         [--seed N] [--count N] [--for MS] [OPTIONS]\n"
            "\n"
            "The vector clock exchange of the original phase 3. Logs in as NAME (a name\n"
            "that is logged in already is refused: duplicates are refused, exit 4),\n"
            "waits until every member of the group is online, then every MIN..MAX ms\n"
            "(random) sends a clock-only message (empty text, live) to a member picked\n"
            "at random, never itself. Each clock change is printed:\n"
            "  sent to B, clock {A:3, B:1}    after a send: the clock it carried\n"
            "  from B, clock {A:3, B:4}       after a delivery: our clock after it\n"
            "(a recipient that did not get it shows its status: sent to B (OFFLINE), ...).\n"
            "After N sends (--count) or MS ms (--for), whichever comes first, it sends\n"
            "\"done\" to the other members and keeps receiving until each of them has\n"
            "sent \"done\" (or left); then it logs out and exits 0. The broker forwards\n"
            "one sender's messages to a receiver in order, so a member's \"done\" comes\n"
            "after everything it sent us: no message is missed, nothing waits on a\n"
            "timer. Without --count and --for it runs until SIGINT/SIGTERM and logs out\n"
            "at once (the others count that as done). Picks and intervals come from a\n"
            "PRNG seeded with --seed (default: from the time; printed), so a run can be\n"
            "repeated.\n"
            "\n"
            "Options:\n"
            "  -n, --name NAME       our name, a member of the group\n"
            "      --group LIST      the members, comma-separated; may be repeated\n"
            "      --min-ms MS       shortest interval between sends (default 2000)\n"
            "      --max-ms MS       longest interval between sends (default 10000)\n"
            "      --seed N          PRNG seed (default: from the time)\n"
            "  -c, --count N         send N clock messages, then finish\n"
            "      --for MS          send for MS ms (counted from when all are online)\n"
            "\n"
            "With --trace / --clockd every send and delivery (the \"done\" messages too)\n"
            "is recorded for causeway-clockd.\n"
            "\n"
            "JSON lines:\n"
            "  {\"event\":\"login\",..}  as listen prints it\n"
            "  {\"event\":\"exchange\",\"name\":..,\"group\":[..],\"seed\":..,\"min_ms\":..,\n"
            "   \"max_ms\":..,\"count\":..,\"for_ms\":..}\n"
            "  {\"event\":\"waiting\",\"for\":[..]}      members not online yet\n"
            "  {\"event\":\"start\",\"clock\":{..}}      everyone is online\n"
            "  {\"event\":\"sent\",\"to\":..,\"status\":\"DELIVERED|OFFLINE|..\",\"message_id\":..,\n"
            "   \"clock\":{..}}\n"
            "  {\"event\":\"received\",\"from\":..,\"message_id\":..,\"done\":false,\"msg_clock\":{..},\n"
            "   \"clock\":{..}}\n"
            "  {\"event\":\"done\",\"to\":[..],\"message_id\":..,\"clock\":{..}}\n"
            "  {\"event\":\"finished\",\"sent\":N,\"received\":N,\"clock\":{..}}\n"
            "  presence, disconnected and reconnected lines as listen prints them\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_stats(FILE *f)
{
    fprintf(f,
            "Usage: causeway stats [OPTIONS]\n"
            "       causeway stats --watch [--interval MS] [--count N] [OPTIONS]\n"
            "       causeway stats sessions|queues|recent --name OPERATOR [--text]\n"
            "\n"
            "Prints the broker's counters and monitoring figures (traffic by mode and\n"
            "kind, refusals and recipient fates by status, store commit latency, memory).\n"
            "No login needed; with --name the CLI logs in first, and an operator (a name\n"
            "in the broker's --operators) also sees the deepest queues.\n"
            "  --watch          print one line of rates per interval (received and\n"
            "                   delivered messages, bytes, refusals, FLOODED, fsyncs per\n"
            "                   second, from the broker's own uptime), until SIGINT\n"
            "  --interval MS    between two lines (default 1000, at least 100)\n"
            "  -c, --count N    stop after N lines (for scripts)\n"
            "Operator views (log in as --name, which must be in the broker's --operators;\n"
            "others get UNAUTHORIZED):\n"
            "  sessions         who is connected: name, peer address, login time, idle\n"
            "                   time, queue depth, held messages, flags, agent\n"
            "  queues           durable queue depth per user\n"
            "  recent           the last messages the broker forwarded (sender,\n"
            "                   recipients, mode, size); --text adds their texts if the\n"
            "                   broker runs with --monitor-text\n"
            "JSON output: {\"event\":\"stats\",\"uptime_ms\":..,\"sessions\":..,...,\n"
            "  \"traffic\":{\"live\":{\"unicast\":{\"received\":..}}},\"refusals\":{..},..};\n"
            "  --watch: {\"event\":\"watch\",\"rates\":{\"received\":..,..},..} per line;\n"
            "  {\"event\":\"session\",..}, {\"event\":\"queue\",..}, {\"event\":\"forwarded\",..}\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

static void help_top(FILE *f)
{
    fprintf(f,
            "Usage: causeway top --name OPERATOR [--interval MS] [--text] [OPTIONS]\n"
            "\n"
            "A live full-screen view of a broker, the server window: rates in and out,\n"
            "sessions and the user log (online marks, peer, since when), recently\n"
            "forwarded messages (sender -> recipients, mode, size), refusals by status,\n"
            "queue depths and store commit latency. Refreshes every --interval ms\n"
            "(default 1000). Logs in as --name, which must be in the broker's\n"
            "--operators. --text shows message texts (the broker must run with\n"
            "--monitor-text). Keys: q quit, t toggle texts, space refresh now.\n"
            "  -c, --count N    quit after N refreshes (for scripts)\n"
            "\n%s\n%s",
            common_help, exit_codes_help);
}

/* --- commands --------------------------------------------------------------- */

enum {
    C_CHAT = 1,
    C_SEND = 2,
    C_LISTEN = 4,
    C_WHO = 8,
    C_STATS = 16,
    C_HELP = 32,
    C_FETCH = 64,
    C_HISTORY = 128,
    C_EXCHANGE = 256,
    C_KEYGEN = 512,
    C_TUI = 1024,
    C_TOP = 2048,
};

typedef struct {
    const char *name;
    int bit;
    void (*help)(FILE *);
} command_t;

static const command_t commands[] = {
    {"chat", C_CHAT, help_chat},       {"send", C_SEND, help_send},
    {"listen", C_LISTEN, help_listen}, {"fetch", C_FETCH, help_fetch},
    {"history", C_HISTORY, help_history}, {"who", C_WHO, help_who},
    {"stats", C_STATS, help_stats},    {"exchange", C_EXCHANGE, help_exchange},
    {"keygen", C_KEYGEN, help_keygen}, {"tui", C_TUI, help_tui},
    {"top", C_TOP, help_top},
    {"help", C_HELP, help_main},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int cli_exit_for(cw_status_t st)
{
    if (st == CW_OK)
        return CLI_EXIT_OK;
    if (st == CW_ERR_INVALID)
        return CLI_EXIT_USAGE;
    if (st >= 100 || st == CW_SHUTTING_DOWN)
        return CLI_EXIT_UNREACHABLE;
    return CLI_EXIT_REFUSED;
}

/* Explains what is wrong with a ZeroMQ endpoint (or, for --endpoint, a
 * comma-separated list of them) given on the command line (flag names the
 * option), or returns 0 if it looks usable (libzmq has the last word: it
 * says only "Invalid argument"). The rules are cw_util.h's. */
static int cli_endpoint_problem(const char *flag, const char *ep, char *why, size_t size)
{
    if (strcmp(flag, "--endpoint") != 0)
        return cw_endpoint_problem(flag, ep, why, size);
    char **list;
    size_t n = cw_endpoint_list_parse(flag, ep, &list, why, size);
    cw_endpoint_list_free(&list, n);
    return n == 0;
}

/* The client made by cli_connect (main thread; one at a time): cli_fail
 * asks it why a security handshake failed. */
static cw_client_t *cli_current;

int cli_fail(const cli_opts_t *o, const char *what, cw_status_t st, const cw_reply_t *reply)
{
    const char *detail = reply && reply->detail && *reply->detail ? reply->detail : cw_strerror(st);
    char hs[256], diag[320];
    /* Without a reply, say what is wrong with the endpoint: a probe finds
     * refused connections and services that are not ZeroMQ; else the
     * handshake's reason, else which endpoint did not answer in time. */
    if (!reply && (st == CW_ERR_UNREACHABLE || st == CW_ERR_HANDSHAKE || st == CW_ERR_TIMEOUT) &&
        cli_current && cw_client_diagnose(cli_current, 1000, diag, sizeof diag))
        detail = diag;
    else if ((st == CW_ERR_HANDSHAKE || st == CW_ERR_TIMEOUT) && cli_current &&
             cw_client_handshake_error(cli_current, hs, sizeof hs))
        detail = hs;
    else if (!reply && (st == CW_ERR_TIMEOUT || st == CW_ERR_UNREACHABLE)) {
        snprintf(diag, sizeof diag, "%s at %s (waited %d ms)", cw_strerror(st), o->endpoint,
                 o->timeout_ms);
        detail = diag;
    }
    if (o->json)
        cli_print_error(stdout, what, st, detail);
    fprintf(stderr, "causeway: %s: %s (%s)\n", what, detail, cw_status_name(st));
    return cli_exit_for(st);
}

cw_client_t *cli_connect(const cli_opts_t *o, int quiet, int pull, int auto_ack)
{
    /* cli_close waits for clockd itself (bounded), then destroy need not. */
    cw_client_opts_t copts = {.agent = CLI_AGENT, .quiet = quiet, .pull = pull,
                              .auto_ack = auto_ack, .trace_path = o->trace,
                              .clockd_endpoint = o->clockd, .clockd_linger_ms = -1,
                              .curve_server_key = o->server_key, .curve_cert = o->cert,
                              .clockd_server_key = o->clockd ? o->clockd_key : NULL};
    /* The key files are checked here too, to say exactly what is wrong. */
    if ((copts.curve_server_key || copts.clockd_server_key) && !o->cert) {
        fprintf(stderr, "causeway: --server-key/--clockd-key need your certificate: --cert "
                        "FILE (or $CAUSEWAY_CERT)\n");
        return NULL;
    }
    if (o->cert && !copts.curve_server_key && !copts.clockd_server_key) {
        fprintf(stderr, "causeway: --cert needs the server's public key: --server-key FILE "
                        "(or $CAUSEWAY_SERVER_KEY)\n");
        return NULL;
    }
    if (o->cert) {
        char why[1024], key[CW_Z85_KEY_LEN + 1];
        cw_keypair_t kp;
        int bad = cw_keypair_load(o->cert, true, &kp, why, sizeof why) != 0 ||
                  (copts.curve_server_key &&
                   cw_public_key_load(copts.curve_server_key, key, why, sizeof why) != 0) ||
                  (copts.clockd_server_key &&
                   cw_public_key_load(copts.clockd_server_key, key, why, sizeof why) != 0);
        explicit_bzero(&kp, sizeof kp);
        if (bad) {
            fprintf(stderr, "causeway: %s\n", why);
            return NULL;
        }
    }
    char why[512];
    if (cli_endpoint_problem("--endpoint", o->endpoint, why, sizeof why) ||
        (o->clockd && cli_endpoint_problem("--clockd", o->clockd, why, sizeof why))) {
        fprintf(stderr, "causeway: %s\n", why);
        return NULL;
    }
    cw_client_t *c = cw_client_new(o->endpoint, &copts);
    if (c)
        return cli_current = c;
    int err = errno;
    if (o->trace) {
        int fd = open(o->trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "causeway: cannot open trace file '%s': %s\n", o->trace,
                    strerror(errno));
            return NULL;
        }
        close(fd);
    }
    if (o->clockd)
        fprintf(stderr, "causeway: cannot use endpoint '%s' or clockd endpoint '%s': %s\n",
                o->endpoint, o->clockd, strerror(err));
    else
        fprintf(stderr, "causeway: cannot use endpoint '%s': %s\n", o->endpoint, strerror(err));
    return NULL;
}

void cli_close(cw_client_t **c, const cli_opts_t *o)
{
    if (!*c)
        return;
    if (o->clockd) {
        int wait = o->timeout_ms < CLI_CLOCKD_FLUSH_MS ? o->timeout_ms : CLI_CLOCKD_FLUSH_MS;
        cw_client_trace_flush(*c, wait);
    }
    cw_trace_stats_t st;
    cw_client_trace_stats(*c, &st);
    if (o->clockd && st.dropped + st.pending)
        fprintf(stderr,
                "causeway: clockd: %llu of %llu events not confirmed by %s (unreachable, "
                "or it refused them)\n",
                (unsigned long long) (st.dropped + st.pending), (unsigned long long) st.recorded,
                o->clockd);
    if (o->trace && st.write_errors)
        fprintf(stderr, "causeway: trace: %llu of %llu events not written to %s\n",
                (unsigned long long) st.write_errors, (unsigned long long) st.recorded, o->trace);
    if (*c == cli_current)
        cli_current = NULL;
    cw_client_destroy(c);
}

/* listen --ready-fd: the session is logged in (and the login line is
 * printed): writes "ready NAME" and a newline to the descriptor and closes
 * it, so a script waiting on it (a FIFO, a pipe) goes on. On a failed login
 * the descriptor is closed at exit without a line. */
static void cli_ready(const cli_opts_t *o)
{
    if (o->ready_fd < 0)
        return;
    char line[128];
    int n = snprintf(line, sizeof line, "ready %s\n", o->name);
    if (write(o->ready_fd, line, (size_t) n) != n)
        fprintf(stderr, "causeway: --ready-fd %d: %s\n", o->ready_fd, strerror(errno));
    close(o->ready_fd);
}

/* Logs in as o->name; on failure reports it and returns the exit code,
 * else 0 and *reply (caller frees). */
static int login(cw_client_t *c, const cli_opts_t *o, cw_reply_t **reply)
{
    cw_status_t st = cw_client_login(c, o->name, o->timeout_ms, reply);
    if (st == CW_OK)
        return 0;
    char what[128];
    snprintf(what, sizeof what, "login as '%s'", o->name);
    int code = cli_fail(o, what, st, *reply);
    cw_reply_destroy(reply);
    return code;
}

/* Reads all of stdin into a string without its final newline; NULL on error. */
static char *read_stdin(void)
{
    cli_str_t s = {0};
    cli_str_add(&s, "");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf - 1, stdin)) > 0) {
        buf[n] = '\0';
        if (strlen(buf) != n) {
            fprintf(stderr, "causeway: the message text contains a NUL byte\n");
            cli_str_free(&s);
            return NULL;
        }
        cli_str_add(&s, buf);
    }
    if (ferror(stdin)) {
        cli_str_free(&s);
        return NULL;
    }
    if (s.len && s.buf[s.len - 1] == '\n')
        s.buf[--s.len] = '\0';
    return s.buf;
}

static int cmd_send(const cli_opts_t *o)
{
    if (!o->name || (!o->n_to && !o->all) || (o->n_to && o->all)) {
        fprintf(stderr, "causeway send: need --name and exactly one of --to or --all "
                        "(see causeway send --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->ttl_s && !o->durable) {
        fprintf(stderr, "causeway send: --ttl needs --durable (see causeway send --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->receipt && !o->durable) {
        fprintf(stderr, "causeway send: --receipt needs --durable (see causeway send --help)\n");
        return CLI_EXIT_USAGE;
    }
    char *text;
    if (o->n_args > 0) {
        cli_str_t s = {0};
        for (int i = 0; i < o->n_args; i++) {
            if (i)
                cli_str_add(&s, " ");
            cli_str_add(&s, o->args[i]);
        }
        text = s.buf;
    } else if (!isatty(STDIN_FILENO)) {
        text = read_stdin();
        if (!text)
            return CLI_EXIT_USAGE;
    } else {
        fprintf(stderr, "causeway send: no message text (see causeway send --help)\n");
        return CLI_EXIT_USAGE;
    }

    int code = CLI_EXIT_OK;
    cw_reply_t *reply = NULL;
    /* Pull mode: stored messages for NAME stay queued for fetch, listen or
     * chat instead of being pushed to a run that never shows them. */
    cw_client_t *c = cli_connect(o, 1, 1, 0);
    if (!c) {
        free(text);
        return CLI_EXIT_USAGE;
    }
    code = login(c, o, &reply);
    if (code != 0)
        goto done;
    cw_reply_destroy(&reply);
    if (cli_stopping) {
        cw_client_logout(c, o->timeout_ms);
        goto done;
    }

    cw_send_t msg = {
        .to = (const char *const *) o->to,
        .n_to = o->n_to,
        .broadcast = o->all,
        .text = text,
        .durable = o->durable,
        .message_id = o->id,
        .ttl_s = (uint32_t) o->ttl_s,
        .receipt = o->receipt,
    };
    cw_status_t st = cw_client_send(c, &msg, o->timeout_ms, &reply);
    /* OK, ACCEPTED, and QUEUE_FULL (durable: nobody could take it) carry
     * per-recipient results; anything else is about the whole request. */
    if (reply && (st == CW_OK || st == CW_ACCEPTED || st == CW_QUEUE_FULL)) {
        cli_print_send(stdout, o, reply, o->durable, 0);
        for (size_t i = 0; i < reply->n_recipients; i++)
            if (reply->recipients[i].status != CW_DELIVERED &&
                reply->recipients[i].status != CW_ACCEPTED)
                code = CLI_EXIT_UNDELIVERED;
    } else if (o->durable && (st == CW_ERR_TIMEOUT || st == CW_ERR_DISCONNECTED) && reply &&
               reply->message_id) {
        /* Outcome unknown: say how to retry safely. */
        if (o->json)
            cli_print_error_id(stdout, "send", st, NULL, reply->message_id);
        fprintf(stderr, "causeway: send: %s (%s); it may or may not be stored: retry with --id %s\n",
                cw_strerror(st), cw_status_name(st), reply->message_id);
        code = cli_exit_for(st);
    } else {
        code = cli_fail(o, "send", st, reply);
    }
    cw_client_logout(c, o->timeout_ms);
done:
    cw_reply_destroy(&reply);
    cli_close(&c, o);
    free(text);
    return code;
}

static int cmd_listen(const cli_opts_t *o)
{
    if (!o->name) {
        fprintf(stderr, "causeway listen: need --name (see causeway listen --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway listen: unexpected argument '%s'\n", o->args[0]);
        return CLI_EXIT_USAGE;
    }
    if (o->ready_fd >= 0 && fcntl(o->ready_fd, F_GETFD) < 0) {
        fprintf(stderr, "causeway listen: --ready-fd %d is not an open file descriptor\n",
                o->ready_fd);
        return CLI_EXIT_USAGE;
    }
    /* auto_ack: durable deliveries are acknowledged once printed. */
    cw_client_t *c = cli_connect(o, 0, 0, 1);
    if (!c)
        return CLI_EXIT_USAGE;
    cw_reply_t *reply = NULL;
    int code = login(c, o, &reply);
    if (code != 0) {
        cw_client_destroy(&c);
        return code;
    }
    cli_print_login(stdout, o, o->name, reply);
    cw_reply_destroy(&reply);
    cli_ready(o);

    int64_t end = o->for_ms > 0 ? cw_mono_ms() + o->for_ms : INT64_MAX;
    long deliveries = 0;
    int done = 0;
    while (!done && !cli_stopping) {
        cw_event_t *ev;
        while (!done && cw_client_next_event(c, 0, &ev) == CW_OK) {
            cli_print_event(stdout, o, ev, o->name);
            if ((ev->type == CW_EVENT_DELIVER || ev->type == CW_EVENT_RECEIPT) && o->count > 0 &&
                ++deliveries >= o->count)
                done = 1;
            cw_event_destroy(&ev);
            if (ferror(stdout))
                done = 1;   /* reader went away */
        }
        if (done)
            break;
        int64_t now = cw_mono_ms();
        if (now >= end)
            break;
        struct pollfd fds[2] = {{.fd = cw_client_fd(c), .events = POLLIN},
                                {.fd = cli_signal_fd, .events = POLLIN}};
        int64_t left = end - now;
        poll(fds, 2, end == INT64_MAX ? -1 : (int) (left > INT_MAX ? INT_MAX : left));
    }
    cw_client_logout(c, o->timeout_ms);
    cli_close(&c, o);
    return CLI_EXIT_OK;
}

void cli_print_messages(FILE *f, const cli_opts_t *o, const cw_reply_t *r, const char *me)
{
    for (size_t i = 0; i < r->n_messages; i++)
        cli_print_message(f, o, &r->messages[i], me);
}

/* fetch and history: a quiet pull-mode session of o->name. */
static int listing_session(const cli_opts_t *o, const char *cmd, int auto_ack, cw_client_t **out)
{
    *out = NULL;
    if (!o->name) {
        fprintf(stderr, "causeway %s: need --name (see causeway %s --help)\n", cmd, cmd);
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway %s: unexpected argument '%s'\n", cmd, o->args[0]);
        return CLI_EXIT_USAGE;
    }
    cw_client_t *c = cli_connect(o, 1, 1, auto_ack);
    if (!c)
        return CLI_EXIT_USAGE;
    cw_reply_t *reply = NULL;
    int code = login(c, o, &reply);
    cw_reply_destroy(&reply);
    if (code != 0) {
        cw_client_destroy(&c);
        return code;
    }
    *out = c;
    return CLI_EXIT_OK;
}

/* The broker lists at most this many per Fetch / History. */
#define LISTING_MAX 1000

static int cmd_fetch(const cli_opts_t *o)
{
    cw_client_t *c;
    /* Without --keep the library acknowledges what was fetched (auto_ack):
     * between pages, so the next Fetch lists the next ones, and at logout. */
    int code = listing_session(o, "fetch", !o->keep, &c);
    if (!c)
        return code;
    size_t total = 0;
    uint64_t acked = 0;
    while (!cli_stopping) {
        size_t want = LISTING_MAX;
        if (o->max > 0 && (size_t) o->max - total < want)
            want = (size_t) o->max - total;
        cw_reply_t *r = NULL;
        cw_status_t st = cw_client_fetch(c, (uint32_t) want, o->timeout_ms, &r);
        if (st != CW_OK) {
            code = cli_fail(o, "fetch", st, r);
            cw_reply_destroy(&r);
            break;
        }
        cli_print_messages(stdout, o, r, o->name);
        total += r->n_messages;
        size_t listed = r->n_messages + r->n_seen;
        for (size_t i = 0; i < r->n_messages; i++)
            if (r->messages[i].seq > acked && !o->keep)
                acked = r->messages[i].seq;
        cw_reply_destroy(&r);
        if (o->keep || listed < want || (o->max > 0 && total >= (size_t) o->max))
            break;
        st = cw_client_ack_flush(c, o->timeout_ms);
        if (st != CW_OK) {
            code = cli_fail(o, "acknowledge", st, NULL);
            acked = 0;
            break;
        }
    }
    if (code == CLI_EXIT_OK && !o->keep) {
        cw_status_t st = cw_client_ack_flush(c, o->timeout_ms);
        if (st != CW_OK) {
            code = cli_fail(o, "acknowledge", st, NULL);
            acked = 0;
        }
    }
    if (code == CLI_EXIT_OK)
        cli_print_listing_end(stdout, o, "fetch", total, &acked);
    cw_client_logout(c, o->timeout_ms);
    cli_close(&c, o);
    return code;
}

static int cmd_history(const cli_opts_t *o)
{
    cw_client_t *c;
    int code = listing_session(o, "history", 0, &c);
    if (!c)
        return code;
    cw_reply_t *r = NULL;
    cw_status_t st = cw_client_history(c, (uint32_t) o->last, o->timeout_ms, &r);
    if (st == CW_OK) {
        cli_print_messages(stdout, o, r, o->name);
        cli_print_listing_end(stdout, o, "history", r->n_messages, NULL);
    } else {
        code = cli_fail(o, "history", st, r);
    }
    cw_reply_destroy(&r);
    cw_client_logout(c, o->timeout_ms);
    cw_client_destroy(&c);
    return code;
}

static int cmd_who(const cli_opts_t *o)
{
    cw_client_t *c = cli_connect(o, 1, 0, 0);
    if (!c)
        return CLI_EXIT_USAGE;
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_who(c, o->timeout_ms, &reply);
    int code = CLI_EXIT_OK;
    if (st == CW_OK)
        cli_print_users(stdout, o, "who", reply->users, reply->n_users);
    else
        code = cli_fail(o, "who", st, reply);
    cw_reply_destroy(&reply);
    cw_client_destroy(&c);
    return code;
}

/* --- signals ------------------------------------------------------------------ */

static void on_signal(int sig)
{
    (void) sig;
    int e = errno;
    cli_stopping = 1;
    if (signal_wfd >= 0 && write(signal_wfd, "s", 1) < 0) {
        /* pipe full: a wake-up is already pending */
    }
    errno = e;
}

static int setup_signals(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    cli_signal_fd = fds[0];
    signal_wfd = fds[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: blocking calls return EINTR. SA_RESETHAND: the first
     * signal asks for a polite exit (which may wait up to --timeout for
     * the broker); a second one kills at once. */
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* causeway keygen NAME | --server [NAME]: writes a key pair (cw_keypair_generate). */
static int cmd_keygen(const cli_opts_t *o)
{
    if (o->n_args > 1 || (!o->n_args && !o->server)) {
        fprintf(stderr, "causeway: keygen needs one NAME (or --server) (see causeway keygen "
                        "--help)\n");
        return CLI_EXIT_USAGE;
    }
    const char *name = o->n_args ? o->args[0] : "broker";
    const char *why = NULL;
    if (!o->server && cw_name_check(name, CW_NAME_MAX_HARD, &why) != CW_OK) {
        fprintf(stderr, "causeway: keygen: '%s' is not a valid user name: %s\n", name, why);
        return CLI_EXIT_USAGE;
    }
    if (strchr(name, '/')) {
        fprintf(stderr, "causeway: keygen: NAME may not contain '/' (use --dir)\n");
        return CLI_EXIT_USAGE;
    }
    const char *dir = o->dir ? o->dir : ".";
    char err[1024];
    if (cw_keypair_generate(dir, name, o->server ? NULL : name, err, sizeof err) != 0) {
        fprintf(stderr, "causeway: keygen: %s\n", err);
        return CLI_EXIT_REFUSED;
    }
    cw_keypair_t kp;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (cw_keypair_load(path, true, &kp, err, sizeof err) != 0) {
        fprintf(stderr, "causeway: keygen: %s\n", err);
        return CLI_EXIT_REFUSED;
    }
    if (o->json) {
        char sec[4200];
        snprintf(sec, sizeof sec, "%s_secret", path);
        cli_str_t j = {0};
        cli_str_add(&j, "{\"event\":\"keygen\",\"public\":");
        cli_str_json(&j, path);
        cli_str_add(&j, ",\"secret\":");
        cli_str_json(&j, sec);
        cli_str_addf(&j, ",\"public_key\":\"%s\",\"user\":", kp.public_txt);
        cli_str_add(&j, o->server ? "null" : "");
        if (!o->server)
            cli_str_json(&j, name);
        cli_str_add(&j, "}");
        cli_str_emit(&j, stdout);
        cli_str_free(&j);
    } else
        printf("%s/%s.key         public (%s)\n%s/%s.key_secret  secret: keep it private\n"
               "public key: %s\n",
               dir, name, o->server ? "server" : name, dir, name, kp.public_txt);
    explicit_bzero(&kp, sizeof kp);
    return CLI_EXIT_OK;
}

/* --- arguments ------------------------------------------------------------------ */

enum {
    OPT_TO = 256,
    OPT_DURABLE,
    OPT_ID,
    OPT_FOR,
    OPT_CLOCKS,
    OPT_LOG_LEVEL,
    OPT_TTL,
    OPT_MAX,
    OPT_KEEP,
    OPT_LAST,
    OPT_TRACE,
    OPT_CLOCKD,
    OPT_GROUP,
    OPT_MIN_MS,
    OPT_MAX_MS,
    OPT_SEED,
    OPT_SERVER_KEY,
    OPT_CERT,
    OPT_CLOCKD_KEY,
    OPT_DIR,
    OPT_SERVER,
    OPT_READY_FD,
    OPT_WATCH,
    OPT_INTERVAL,
    OPT_TEXT,
    OPT_LOG_FILE,
    OPT_MOUSE,
    OPT_RECEIPT,
};

static const struct option long_opts[] = {
    {"endpoint", required_argument, NULL, 'e'},
    {"timeout", required_argument, NULL, 't'},
    {"json", no_argument, NULL, 'j'},
    {"name", required_argument, NULL, 'n'},
    {"to", required_argument, NULL, OPT_TO},
    {"all", no_argument, NULL, 'a'},
    {"durable", no_argument, NULL, OPT_DURABLE},
    {"id", required_argument, NULL, OPT_ID},
    {"ttl", required_argument, NULL, OPT_TTL},
    {"max", required_argument, NULL, OPT_MAX},
    {"keep", no_argument, NULL, OPT_KEEP},
    {"last", required_argument, NULL, OPT_LAST},
    {"count", required_argument, NULL, 'c'},
    {"for", required_argument, NULL, OPT_FOR},
    {"clocks", no_argument, NULL, OPT_CLOCKS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"trace", required_argument, NULL, OPT_TRACE},
    {"clockd", required_argument, NULL, OPT_CLOCKD},
    {"group", required_argument, NULL, OPT_GROUP},
    {"min-ms", required_argument, NULL, OPT_MIN_MS},
    {"max-ms", required_argument, NULL, OPT_MAX_MS},
    {"seed", required_argument, NULL, OPT_SEED},
    {"server-key", required_argument, NULL, OPT_SERVER_KEY},
    {"cert", required_argument, NULL, OPT_CERT},
    {"clockd-key", required_argument, NULL, OPT_CLOCKD_KEY},
    {"dir", required_argument, NULL, OPT_DIR},
    {"watch", no_argument, NULL, OPT_WATCH},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"text", no_argument, NULL, OPT_TEXT},
    {"server", no_argument, NULL, OPT_SERVER},
    {"ready-fd", required_argument, NULL, OPT_READY_FD},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"mouse", no_argument, NULL, OPT_MOUSE},
    {"receipt", no_argument, NULL, OPT_RECEIPT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* Which commands accept an option (the common ones are accepted by all). */
static int option_commands(int opt)
{
    switch (opt) {
    case 'n':
        return C_CHAT | C_SEND | C_LISTEN | C_FETCH | C_HISTORY | C_EXCHANGE | C_TUI | C_STATS |
               C_TOP;
    case OPT_WATCH: return C_STATS;
    case OPT_INTERVAL: case OPT_TEXT: return C_STATS | C_TOP;
    case OPT_DURABLE: return C_SEND | C_CHAT | C_TUI;
    case OPT_TO: return C_SEND | C_TUI;
    case 'a': case OPT_ID: case OPT_TTL: case OPT_RECEIPT: return C_SEND;
    case 'c': return C_LISTEN | C_EXCHANGE | C_STATS | C_TOP;
    case OPT_FOR: return C_LISTEN | C_EXCHANGE;
    case OPT_READY_FD: return C_LISTEN;
    case OPT_LOG_FILE: case OPT_MOUSE: return C_TUI;
    case OPT_TRACE: case OPT_CLOCKD:
        return C_CHAT | C_SEND | C_LISTEN | C_FETCH | C_EXCHANGE | C_TUI;
    case OPT_GROUP: case OPT_MIN_MS: case OPT_MAX_MS: case OPT_SEED: return C_EXCHANGE;
    case OPT_MAX: case OPT_KEEP: return C_FETCH;
    case OPT_LAST: return C_HISTORY;
    case OPT_DIR: case OPT_SERVER: return C_KEYGEN;
    case OPT_SERVER_KEY: case OPT_CERT:
        return C_CHAT | C_SEND | C_LISTEN | C_FETCH | C_HISTORY | C_WHO | C_STATS | C_EXCHANGE |
               C_TUI | C_TOP;
    case OPT_CLOCKD_KEY: return C_CHAT | C_SEND | C_LISTEN | C_FETCH | C_EXCHANGE | C_TUI;
    default: return -1;
    }
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Adds the comma-separated names of list to *names (n of them so far). */
static int add_names(char ***names, size_t *n, const char *list);

/* Adds the comma-separated names of list to o->to. */
static int add_recipients(cli_opts_t *o, const char *list)
{
    return add_names(&o->to, &o->n_to, list);
}

static int add_names(char ***names, size_t *count, const char *list)
{
    char *copy = strdup(list);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (!len)
            continue;
        char **to = realloc(*names, (*count + 1) * sizeof *to);
        if (!to || !(to[*count] = strdup(tok))) {
            if (to)
                *names = to;
            free(copy);
            return -1;
        }
        *names = to;
        (*count)++;
    }
    free(copy);
    return 0;
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("causeway: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see causeway --help)\n", stderr);
    va_end(ap);
}

int main(int argc, char **argv)
{
    cli_opts_t o;
    memset(&o, 0, sizeof o);
    o.timeout_ms = CLI_DEFAULT_TIMEOUT_MS;
    o.min_ms = -1;   /* exchange: defaults applied there */
    o.max_ms = -1;
    o.ready_fd = -1;
    o.endpoint = getenv("CAUSEWAY_ENDPOINT");
    o.server_key = getenv("CAUSEWAY_SERVER_KEY");
    o.cert = getenv("CAUSEWAY_CERT");
    o.clockd_key = getenv("CAUSEWAY_CLOCKD_KEY");
    if (o.server_key && !*o.server_key)
        o.server_key = NULL;
    if (o.cert && !*o.cert)
        o.cert = NULL;
    if (o.clockd_key && !*o.clockd_key)
        o.clockd_key = NULL;
    if (!o.endpoint || !*o.endpoint)
        o.endpoint = CW_CLIENT_DEFAULT_ENDPOINT;
    /* Text is UTF-8 everywhere: libedit then edits multibyte characters
     * and cw_render measures them (a "C" locale would drop them). */
    cw_render_locale();
    cw_log_set_tag("causeway");
    cw_log_set_level(CW_LOG_WARN);
    const char *lvl = getenv("CAUSEWAY_LOG_LEVEL");
    if (lvl && cw_log_level_parse(lvl) >= 0)
        cw_log_set_level((cw_log_level_t) cw_log_level_parse(lvl));

    int help = 0, code = CLI_EXIT_USAGE;
    int seen[512] = {0};   /* options given, for per-command checks */
    int opt;
    opterr = 0;
    /* GNU getopt permutes: options may come before or after the command;
     * "--" ends options (for a TEXT starting with '-'). */
    /* The leading ':' tells a missing value (':') from an unknown option ('?'). */
    while ((opt = getopt_long(argc, argv, ":e:t:jn:ac:hV", long_opts, NULL)) != -1) {
        if (opt >= 0 && opt < 512)
            seen[opt] = 1;
        long v;
        switch (opt) {
        case 'e': o.endpoint = optarg; break;
        case 't':
            if (parse_long(optarg, 1, INT_MAX, &v) != 0) {
                usage_error("--timeout needs a number of milliseconds, not '%s'", optarg);
                goto out;
            }
            o.timeout_ms = (int) v;
            break;
        case 'j': o.json = 1; break;
        case 'n': o.name = optarg; break;
        case OPT_TO:
            if (add_recipients(&o, optarg) != 0) {
                fputs("causeway: out of memory\n", stderr);
                goto out;
            }
            break;
        case 'a': o.all = 1; break;
        case OPT_DURABLE: o.durable = 1; break;
        case OPT_ID:
            if (!*optarg || strlen(optarg) > 128) {
                usage_error("--id needs 1 to 128 bytes, not '%s'", optarg);
                goto out;
            }
            o.id = optarg;
            break;
        case OPT_TTL:
            if (parse_long(optarg, 1, UINT32_MAX > LONG_MAX ? LONG_MAX : (long) UINT32_MAX,
                           &o.ttl_s) != 0) {
                usage_error("--ttl needs a positive number of seconds, not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_MAX:
            if (parse_long(optarg, 1, LONG_MAX, &o.max) != 0) {
                usage_error("--max needs a positive number, not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_KEEP: o.keep = 1; break;
        case OPT_LAST:
            if (parse_long(optarg, 1, LISTING_MAX, &o.last) != 0) {
                usage_error("--last needs a number from 1 to %d, not '%s'", LISTING_MAX, optarg);
                goto out;
            }
            break;
        case 'c':
            if (parse_long(optarg, 1, LONG_MAX, &o.count) != 0) {
                usage_error("--count needs a positive number, not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_FOR:
            if (parse_long(optarg, 1, LONG_MAX, &o.for_ms) != 0) {
                usage_error("--for needs a number of milliseconds, not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_CLOCKS: o.clocks = 1; break;
        case OPT_TRACE:
            if (!*optarg) {
                usage_error("--trace needs a file name");
                goto out;
            }
            o.trace = optarg;
            break;
        case OPT_CLOCKD:
            if (!*optarg) {
                usage_error("--clockd needs an endpoint, e.g. tcp://127.0.0.1:7401");
                goto out;
            }
            o.clockd = optarg;
            break;
        case OPT_GROUP:
            if (add_names(&o.group, &o.n_group, optarg) != 0) {
                fputs("causeway: out of memory\n", stderr);
                goto out;
            }
            break;
        case OPT_MIN_MS:
        case OPT_MAX_MS:
            if (parse_long(optarg, 0, INT_MAX, opt == OPT_MIN_MS ? &o.min_ms : &o.max_ms) != 0) {
                usage_error("--%s needs a number of milliseconds, not '%s'",
                            opt == OPT_MIN_MS ? "min-ms" : "max-ms", optarg);
                goto out;
            }
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            o.seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || *optarg == '-') {
                usage_error("--seed needs a non-negative number, not '%s'", optarg);
                goto out;
            }
            o.has_seed = 1;
            break;
        }
        case OPT_SERVER_KEY: o.server_key = optarg; break;
        case OPT_CERT: o.cert = optarg; break;
        case OPT_CLOCKD_KEY: o.clockd_key = optarg; break;
        case OPT_DIR: o.dir = optarg; break;
        case OPT_SERVER: o.server = 1; break;
        case OPT_READY_FD:
            if (parse_long(optarg, 0, INT_MAX, &v) != 0) {
                usage_error("--ready-fd needs a file descriptor number, not '%s'", optarg);
                goto out;
            }
            o.ready_fd = (int) v;
            break;
        case OPT_WATCH: o.watch = 1; break;
        case OPT_TEXT: o.text = 1; break;
        case OPT_INTERVAL:
            if (parse_long(optarg, 100, 3600000, &o.interval_ms) != 0) {
                usage_error("--interval needs a number of milliseconds from 100 to 3600000, "
                            "not '%s'", optarg);
                goto out;
            }
            break;
        case OPT_LOG_FILE: o.log_file = optarg; break;
        case OPT_MOUSE: o.mouse = 1; break;
        case OPT_RECEIPT: o.receipt = 1; break;
        case OPT_LOG_LEVEL:
            if (cw_log_level_parse(optarg) < 0) {
                usage_error("unknown log level '%s'", optarg);
                goto out;
            }
            cw_log_set_level((cw_log_level_t) cw_log_level_parse(optarg));
            break;
        case 'h': help = 1; break;
        case 'V':
            printf("causeway %s\n", CW_VERSION);
            code = CLI_EXIT_OK;
            goto out;
        case ':':
        default: {
            /* A long option is named as given (up to a '='), a short one by
             * its letter (it may sit in a group like -jx). */
            const char *arg = argv[optind - 1];
            int is_long = strncmp(arg, "--", 2) == 0;
            int len = is_long ? (int) strcspn(arg, "=") : 2;
            char shortopt[3] = {'-', (char) optopt, '\0'};
            if (opt == ':')
                usage_error("option '%.*s' needs a value", len, is_long ? arg : shortopt);
            else
                usage_error("unknown option '%.*s'", len, is_long || !optopt ? arg : shortopt);
            goto out;
        }
        }
    }

    /* argv[optind..argc) now holds the positional arguments in order. */
    const command_t *cmd = NULL;
    if (optind < argc) {
        cmd = find_command(argv[optind]);
        if (!cmd) {
            usage_error("unknown command '%s'", argv[optind]);
            goto out;
        }
        optind++;
    }
    o.args = argv + optind;
    o.n_args = argc - optind;

    if (cmd && cmd->bit == C_HELP) {
        const command_t *about = o.n_args ? find_command(o.args[0]) : NULL;
        if (o.n_args && !about) {
            usage_error("unknown command '%s'", o.args[0]);
            goto out;
        }
        (about ? about->help : help_main)(stdout);
        code = CLI_EXIT_OK;
        goto out;
    }
    if (help) {
        (cmd ? cmd->help : help_main)(stdout);
        code = CLI_EXIT_OK;
        goto out;
    }
    int bit = cmd ? cmd->bit : C_CHAT;
    for (size_t i = 0; long_opts[i].name; i++) {
        int v = long_opts[i].val;
        int allowed = option_commands(v);
        if (seen[v] && allowed >= 0 && !(allowed & bit)) {
            fprintf(stderr, "causeway: option --%s does not apply to '%s' (see causeway %s --help)\n",
                    long_opts[i].name, cmd ? cmd->name : "chat", cmd ? cmd->name : "chat");
            goto out;
        }
    }

    if (setup_signals() != 0) {
        perror("causeway: pipe");
        code = CLI_EXIT_UNREACHABLE;
        goto out;
    }
    switch (bit) {
    case C_SEND: code = cmd_send(&o); break;
    case C_LISTEN: code = cmd_listen(&o); break;
    case C_FETCH: code = cmd_fetch(&o); break;
    case C_HISTORY: code = cmd_history(&o); break;
    case C_EXCHANGE: code = cli_exchange(&o); break;
    case C_TUI: code = cli_tui(&o); break;
    case C_KEYGEN: code = cmd_keygen(&o); break;
    case C_STATS: code = cli_stats(&o); break;
    case C_TOP: code = cli_top(&o); break;
    case C_WHO:
        if (o.n_args) {
            usage_error("unexpected argument '%s'", o.args[0]);
            goto out;
        }
        code = cmd_who(&o);
        break;
    default:
        if (o.n_args) {
            usage_error("unexpected argument '%s'", o.args[0]);
            goto out;
        }
        code = cli_chat(&o);
        break;
    }
out:
    for (size_t i = 0; i < o.n_to; i++)
        free(o.to[i]);
    free(o.to);
    for (size_t i = 0; i < o.n_group; i++)
        free(o.group[i]);
    free(o.group);
    return code;
}
