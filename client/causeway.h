/*  causeway.h: libcauseway, the C client library of the causeway broker.
 *
 *  This is the whole public API. A cw_client_t is one connection to one
 *  broker at a time (several brokers on one store may be given as an
 *  endpoint list: failover, see cw_client_new), carrying at most one
 *  logged-in session. Behind it a background
 *  I/O thread owns the ZeroMQ DEALER socket: it sends heartbeats, notices a
 *  lost broker (no frame for heartbeat_ms * liveness), reconnects with
 *  exponential backoff (100 ms doubling to 5 s) and logs in again with the
 *  same name and resume token, reporting CW_EVENT_DISCONNECTED and
 *  CW_EVENT_RECONNECTED. It also keeps the session's vector clock: every Send
 *  ticks the user's own entry and carries the clock; every Deliver is merged
 *  into it and then ticks the own entry.
 *
 *  Threads: the functions below may be called from any one application
 *  thread at a time (not concurrently on the same client). Different clients
 *  are independent. The library never installs signal handlers.
 *
 *  Requests (login, send, who, ...) block until the broker's reply or the
 *  timeout; events (deliveries, presence, connection changes) that arrive
 *  meanwhile are queued, never lost, and read with cw_client_next_event().
 *  cw_client_fd() gives a file descriptor to poll() together with other
 *  descriptors (stdin, signal pipes).
 *
 *  Memory: every cw_reply_t and cw_event_t handed out belongs to the caller,
 *  who frees it with cw_reply_destroy() / cw_event_destroy(). Strings inside
 *  them are owned by them and valid until they are destroyed.
 *
 *  Status codes are those of cw_status.h: 0..99 are the wire statuses a
 *  broker replies with, 100.. (CW_ERR_TIMEOUT, CW_ERR_DISCONNECTED, ...) are
 *  produced locally. cw_status_name() and cw_strerror() describe them.
 *
 *  Delivery guarantees (durable mode needs a broker started with --data):
 *
 *   - Live sends (cw_send_t.durable = 0) are at-most-once: the library never
 *     sends one twice. If the reply is lost the message may or may not have
 *     been delivered.
 *   - Durable sends are retried by the library until the broker answers or
 *     the caller's timeout runs out: when the connection is lost while one
 *     waits (or it is made while the connection is being re-established),
 *     and when no reply comes within CW_DURABLE_ATTEMPT_MS (see there), the
 *     library reconnects and sends the very same message again (same
 *     message_id, same vector clock). The broker stores a message_id once per
 *     sender, so a durable send returns CW_ACCEPTED exactly once per message
 *     id: Reply.duplicate = 1 says that the broker had it already (from an
 *     earlier attempt of this call, or an earlier call with the same id).
 *     A send without a message_id gets a generated, unique one
 *     ("<name>-<64-bit random hex>-<counter>"), reported in
 *     cw_reply_t.message_id; to retry later by hand (after CW_ERR_TIMEOUT)
 *     send again with that id.
 *   - Receiving, each client de-duplicates for its application:
 *       * durable deliveries (seq > 0): the library remembers the highest
 *         seq handed to the application for the logged-in user (as a
 *         CW_EVENT_DELIVER or in a cw_client_fetch reply) and drops any
 *         later one with a seq at or below it (the broker redelivers
 *         unacknowledged messages after every login and after its
 *         redelivery timeout). The watermark lives as long as the
 *         cw_client_t and survives reconnects and broker restarts (a
 *         broker never reuses a user's seq, also across restarts, as long
 *         as it keeps its data directory); it starts again from 0 when the
 *         client logs in under another name;
 *       * live deliveries with a non-empty message_id: dropped if the same
 *         (from, message_id) was among the last CW_LIVE_DEDUP_WINDOW live
 *         deliveries for this user (a sender that never repeats an id
 *         loses nothing; one that reuses ids within that window does).
 *     Dropped duplicates change nothing: no event, no vector clock tick.
 *   - Causal order (hold-back, PROTOCOL.md §13.10): the broker stamps each
 *     pushed delivery with the durable position it follows (after_seq): for
 *     a stored message the seq pushed just before it, for a live one the
 *     last stored message pushed to the session, both counted since the
 *     broker last started the session's pushes again from the first
 *     unacknowledged entry (login, resume, redelivery: 0 right after), so a
 *     new process resuming a session (cw_client_login_resume) never waits
 *     for entries an earlier one acknowledged. The library shows a
 *     delivery only when everything of its own queue up to that position has
 *     been shown, and holds it back otherwise, so no transport or
 *     redelivery reordering shows a message before a stored message the
 *     broker delivered ahead of it (docs/CAUSALITY.md argues that this order
 *     extends happened-before). A held stored message never times out: it
 *     is not acknowledged, so the broker pushes its predecessors again (at
 *     the next login or after its redelivery timeout), and at most
 *     CW_HOLDBACK_MAX deliveries wait (beyond that a stored one is dropped
 *     unacknowledged and comes again). A held live message is shown after
 *     holdback_ms at the latest, with cw_message_t.gap set. The time a
 *     delivery spent held is cw_message_t.holdback_us and the holdback_us of
 *     its causal event.
 *   - Acknowledging: with cw_client_opts_t.auto_ack the library acks
 *     durable deliveries once the application has handled them (see there).
 *     Without it the application calls cw_client_ack() itself, after
 *     handling a message. Either way a message is shown once per
 *     cw_client_t; a new client (a restarted program) sees again what was
 *     taken but not yet acknowledged when the old one died.
 *
 *  Causal events (cw_client_opts_t.trace_path, .clockd_endpoint): the
 *  library can record every change of the session's vector clock as an
 *  event for causeway-clockd (docs/CLOCKD.md), with the clock after it:
 *
 *   - send: after the tick, when the Send goes out (or is parked for a
 *     reconnection); peers = the distinct recipients, or broadcast; msg =
 *     "<sender>:<message_id>" (every send has an id, see above); text = the
 *     message text, cut to CW_TRACE_TEXT_MAX bytes. A durable send sent
 *     again is the same event. A Send that could not be written after the
 *     tick is a local event instead (text "send failed: STATUS");
 *   - deliver: after merge and tick, when a delivery is queued for the
 *     application (or a message of a fetch reply is merged); peers =
 *     [sender], msg = "<sender>:<message_id>" ("<sender>:N" with N the
 *     sender's own entry of the message clock when the message has no id),
 *     msg_clock = the message's clock, holdback_us = the time the delivery
     was held back ("Causal order"; 0 if it was not).
 *     Dropped duplicates are not events. A delivery whose clock entry of
 *     its sender is at or below ours before the merge is flagged late
 *     (cw_message_t.late; "late":true in the event; PROTOCOL.md §13.14).
 *
 *  Trace file: one line per event in the canonical JSON-lines form
 *  (`causeway-clockd audit FILE` reads it), appended with one write(2) per
 *  line (O_APPEND), so several clients may share a file without tearing
 *  lines. Daemon: ClockdRequest reports, batched, one batch in flight, on a
 *  socket that never blocks the I/O thread; events wait in a bounded queue
 *  while the daemon is unreachable and are dropped (counted) beyond it. A
 *  batch whose confirmation is lost is sent again (at least once: a daemon
 *  that stored it and then lost the reply stores it twice). The process
 *  name is the user name.
 *
 *  Runs of one user (PROTOCOL.md 11.4): at login the library merges the
 *  user's resume clock (LoginInfo.clock, the last clock the broker saw
 *  from the user) into the session's clock, without a tick, and attaches
 *  the clock to every frame of the session (Ack, Fetch, Logout, heartbeats
 *  too). So successive cw_client_t of one user continue one clock: two
 *  runs never stamp the same clock, and their events audit as one process.
 *  Not covered: deliveries a process handled after its last frame when it
 *  was killed, and a live-only broker that restarted in between.
 */
#ifndef CAUSEWAY_H
#define CAUSEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "cw_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CW_CLIENT_DEFAULT_ENDPOINT "tcp://127.0.0.1:7400"

/* auto_ack: an Ack goes out at most this long after the application took
 * the first not yet acknowledged durable delivery... */
#define CW_AUTO_ACK_DELAY_MS 200
/* ...or at once when it has taken this many since the last Ack. */
#define CW_AUTO_ACK_BATCH 100
/* Live deliveries remembered for duplicate suppression by (from, message_id). */
#define CW_LIVE_DEDUP_WINDOW 1024
/* Causal hold-back (see "Causal order" above): a live delivery waits at
 * most this long by default (cw_client_opts_t.holdback_ms) for the stored
 * messages it follows, and at most this many deliveries wait at once. */
#define CW_HOLDBACK_MS_DEFAULT 10000
#define CW_HOLDBACK_MAX 4096
/* A durable send without a reply for 2 x heartbeat_ms x liveness (from
 * LoginInfo), and at least this many ms, counts as a lost reply: the library
 * reconnects and sends it again (within the caller's timeout). */
#define CW_DURABLE_ATTEMPT_MS 1000
/* Length of the ids made by cw_client_message_id(), NUL included, at most. */
#define CW_MESSAGE_ID_MAX 128
/* Causal events held for causeway-clockd by default (cw_client_opts_t.clockd_queue). */
#define CW_CLOCKD_QUEUE_DEFAULT 10000
/* Default wait in cw_client_destroy for the daemon to confirm pending events. */
#define CW_CLOCKD_LINGER_MS 1000
/* Events are sent to the daemon in batches of at most this many, this long
 * after the first one waiting (at once when a batch is full or on
 * cw_client_trace_flush), one batch at a time... */
#define CW_CLOCKD_BATCH_MAX 256
#define CW_CLOCKD_BATCH_DELAY_MS 20
/* ...and a batch the daemon does not answer within this is sent again on a
 * fresh connection. */
#define CW_CLOCKD_REPLY_MS 5000
/* Message text recorded in a send event, at most (bytes, cut at a character). */
#define CW_TRACE_TEXT_MAX 256
/* Endpoints in one list given to cw_client_new, at most (cw_util.h has the
 * same limit for the CLI). */
#define CW_ENDPOINTS_MAX 16
/* Bytes of one endpoint of such a list, at most. */
#define CW_ENDPOINT_LEN_MAX 256
/* Failover (cw_client_new): a login on the next broker refused with
 * NAME_TAKEN is repeated this often, for at most this long. */
#define CW_FAILOVER_RETRY_MS 200
#define CW_FAILOVER_TAKEN_MS 10000
/* Longest resume token a broker hands out (bytes). */
#define CW_RESUME_TOKEN_MAX 64
/* How long a CURVE (or plain) handshake may take before libzmq drops the
 * connection and tries again (ZMQ_HANDSHAKE_IVL). */
#define CW_HANDSHAKE_MS 3000

typedef struct cw_client cw_client_t;

/* Options for cw_client_new(); a zeroed struct (or NULL) means defaults. */
typedef struct {
    const char *agent;   /* Login.agent, e.g. "myapp/1.2"; NULL: "libcauseway/<version>" */
    int quiet;           /* 1: the broker pushes no presence events to this session */
    int no_reconnect;    /* 1: on broker loss report CW_EVENT_DISCONNECTED, drop the
                            session and do not reconnect (durable sends are then
                            not retried either) */
    int pull;            /* 1: Login.pull: the broker pushes no stored messages;
                            read them with cw_client_fetch() ("check for messages") */
    int auto_ack;        /* 1: acknowledge durable messages once the application
                            has handled them. What cw_client_next_event() (a
                            delivery) or cw_client_fetch() (messages) hands over
                            counts as handled when the application calls either
                            again, or cw_client_ack_flush() / cw_client_logout(),
                            or CW_AUTO_ACK_DELAY_MS after it got it: so handle a
                            message (show, store) before asking for the next.
                            Acks are cumulative (the highest seq handled, never
                            past a delivery still queued) and batched: at most
                            CW_AUTO_ACK_DELAY_MS after a hand-over, at once
                            after CW_AUTO_ACK_BATCH of them, and synchronously
                            in cw_client_logout().
                            Window: if the program dies, what it got in its last
                            CW_AUTO_ACK_DELAY_MS (plus the Ack's round trip and
                            commit) is unacknowledged and a later session gets
                            it again; so is what was handled while the
                            connection was lost (acked after the reconnect). */
    /* Causal event recording (see "Causal events" at the top of this file).
     * Every event is recorded on the I/O thread at the moment the clock
     * changes, so each process's events keep their clock order. */
    const char *trace_path;      /* append one JSON line per event to this file
                                    (docs/CLOCKD.md trace format); created if
                                    missing; NULL: no file */
    const char *clockd_endpoint; /* report the events to a causeway-clockd daemon
                                    at this endpoint; NULL: none */
    size_t clockd_queue;         /* events held for the daemon, at most (queued and
                                    unconfirmed); more are dropped and counted;
                                    0: CW_CLOCKD_QUEUE_DEFAULT */
    int clockd_linger_ms;        /* cw_client_destroy waits this long for the daemon
                                    to confirm what is pending; 0:
                                    CW_CLOCKD_LINGER_MS, < 0: does not wait */
    int holdback_ms;             /* a live delivery waits at most this long for the
                                    stored messages it follows ("Causal order");
                                    0: CW_HOLDBACK_MS_DEFAULT */
    /* Transport security (CURVE; docs/OPERATIONS.md, "Security"). Added
     * after 0.1.0, at the end of the struct: a zeroed struct still means a
     * plain connection. Set curve_server_key and curve_cert together. Files are
     * read by cw_client_new, which fails (NULL, errno EINVAL) if one cannot
     * be read, is not a certificate, or the cert's secret key is missing or
     * does not belong to its public key. */
    const char *curve_server_key; /* the broker's public key: its certificate file
                                     (e.g. broker.key) or the 40-character Z85 key;
                                     NULL: plain connection */
    const char *curve_cert;      /* this client's certificate: NAME.key_secret (or
                                    NAME.key with NAME.key_secret beside it), from
                                    `causeway keygen NAME` */
    const char *clockd_server_key; /* clockd_endpoint is a CURVE daemon with this
                                      public key (file or Z85); the client
                                      authenticates with curve_cert; NULL: plain */
    int receipts;                /* 1: Login.receipts: every durable send of the session
                                    asks for read receipts (as cw_send_t.receipt) */
} cw_client_opts_t;

/* Counters of causal event recording (cw_client_trace_stats). */
typedef struct {
    uint64_t recorded;      /* events recorded: sends, deliveries, local events */
    uint64_t written;       /* trace_path: lines written */
    uint64_t write_errors;  /* trace_path: lines lost to a failed write */
    uint64_t reported;      /* clockd: events the daemon confirmed stored */
    uint64_t dropped;       /* clockd: events given up: queue full, refused by the
                               daemon, or unconfirmed when the client was destroyed */
    uint64_t pending;       /* clockd: events queued or awaiting confirmation */
} cw_trace_stats_t;

/* One vector clock entry. A clock is an array of these sorted by node. */
typedef struct {
    char *node;          /* user name */
    uint64_t counter;    /* events of that user this clock has seen */
} cw_clock_item_t;

/* One entry of the broker's user log. */
typedef struct {
    char *name;
    int online;             /* 1 if a session holds the name now */
    uint64_t last_seen_us;  /* last login/logout/expiry, Unix epoch us; 0 if never */
} cw_user_t;

/* The fate of one recipient of a send. */
typedef struct {
    char *name;
    cw_status_t status;  /* CW_DELIVERED, CW_OFFLINE, CW_UNKNOWN_USER, CW_ACCEPTED, CW_FLOODED, ... */
    uint64_t seq;        /* durable: position in the recipient's queue; else 0 */
} cw_recipient_t;

/* A chat message: a delivery event, or an entry of a fetch/history reply. */
typedef struct {
    char *from;
    char **to;                 /* recipients named by the sender; none for broadcast */
    size_t n_to;
    int broadcast;             /* the sender addressed everyone */
    char *text;
    uint64_t timestamp_us;     /* broker receipt time, Unix epoch us */
    uint64_t seq;              /* durable: position in our queue; 0 for live messages */
    char *message_id;          /* sender-chosen id ("" if none) */
    int durable;
    int redelivered;           /* durable: pushed before and not acknowledged */
    int expired;               /* durable: its TTL ran out before delivery; text is
                                  "" (acknowledge it like any other seq) */
    int damaged;               /* durable: a message was lost: this entry was damaged
                                  in the broker's store; only seq is set, every string
                                  is "" (acknowledge it like any other seq) */
    cw_clock_item_t *clock;    /* the sender's clock as stamped on the message */
    size_t n_clock;
    uint64_t holdback_us;      /* delivery: how long the library held it back
                                  for its causal predecessors; 0: not held */
    int gap;                   /* delivery: shown after holdback_ms without the
                                  stored messages it follows (they were never
                                  received in time) */
    int receipt_requested;     /* durable: the sender asked for a read receipt:
                                  acknowledging this message tells the sender */
    int is_receipt;            /* fetch/history: this queue entry is a read receipt
                                  for our message receipt_for, read by `from` at
                                  read_us (text ""); acknowledge it like a message */
    char *receipt_for;         /* is_receipt: our message's id; else NULL */
    uint64_t read_us;          /* is_receipt: when `from` acknowledged it */
    int late;                  /* delivery, fetch: the message's clock entry of its sender is
                                  at or below ours (PROTOCOL.md §13.14): something it
                                  caused was shown before it (e.g. a send retried
                                  after a broker failover), or a new process of ours
                                  is shown again what an earlier one had seen */
} cw_message_t;

/* What the broker said at login. */
typedef struct {
    char *broker_version;      /* e.g. "0.1.0" */
    uint32_t heartbeat_ms;     /* heartbeat interval both ways */
    uint32_t liveness;         /* silent intervals before a peer counts as gone */
    uint32_t max_frame;        /* largest frame, bytes */
    uint32_t max_recipients;   /* most recipients per send */
    uint32_t max_text;         /* largest message text, bytes */
    int durable;               /* the broker has a store */
} cw_login_info_t;

#define CW_STATS_BOUNDS_MAX 32  /* histogram bounds kept in cw_stats_t */

/* Broker counters (BrokerStats in proto/causeway.proto). */
typedef struct {
    uint64_t uptime_ms;        /* since the broker started */
    uint32_t sessions;         /* logged-in sessions now */
    uint32_t known_users;      /* names in the user log */
    uint64_t frames_in;        /* frames received */
    uint64_t frames_out;       /* frames sent */
    uint64_t messages_routed;  /* Send requests that reached routing */
    uint64_t deliveries;       /* Deliver frames pushed */
    uint64_t bad_frames;       /* frames refused as malformed or too large
                                  (PROTOCOL.md §5 steps 1-7) */
    uint64_t expired_sessions; /* sessions ended by missed heartbeats */
    uint64_t stored_messages;  /* durable: queue entries waiting */
    uint64_t fsyncs;           /* durable: store commits */
    uint64_t refused_requests; /* well-formed requests answered with an error
                                  status (NAME_TAKEN, RATE_LIMITED, ...) */
    uint64_t damaged_entries;  /* durable: distinct queue entries found damaged in the
                                  store since the broker started (messages lost) */
    /* Monitoring figures (PROTOCOL.md §12.1); 0 from a broker without them. */
    struct {
        uint64_t received, received_bytes;    /* Sends that passed validation, text bytes */
        uint64_t delivered, delivered_bytes;  /* Deliver frames pushed, text bytes */
    } traffic[2][3];           /* [live 0 / durable 1][unicast, multicast, broadcast] */
    uint64_t redeliveries;     /* durable entries pushed again (no ack in time) */
    uint32_t held_messages;    /* live messages held back for causal order now */
    uint64_t store_transactions; /* durable: store groups, one transaction each */
    uint64_t memory_rss_bytes; /* the broker's resident memory */
    char version[32];          /* the broker's version, "" if not said */
    uint64_t started_us;       /* broker start, microseconds since the epoch */
    uint64_t bytes_in;         /* frame bytes received */
    uint64_t bytes_out;        /* pushed frame bytes */
    uint64_t logins;           /* sessions opened (not resumes) */
    uint32_t max_sessions;     /* the broker's session limit */
    uint32_t store_pending;    /* durable: store requests not yet answered */
    /* durable: store commit latency, a cumulative histogram: commit_counts[i]
     * commits took at most commit_bounds_us[i]; commit_counts[n_commit_bounds]
     * is every commit (+Inf). */
    size_t n_commit_bounds;
    uint64_t commit_bounds_us[CW_STATS_BOUNDS_MAX];
    uint64_t commit_counts[CW_STATS_BOUNDS_MAX + 1];
    uint64_t commit_sum_us;
    uint64_t commit_count;
    uint64_t replies_dropped;  /* replies the broker dropped because a connection's queue
                                  held sndhwm frames (its client was not reading) */
} cw_stats_t;

/* A count per status (refusals, recipient fates). */
typedef struct {
    cw_status_t status;
    uint64_t count;
} cw_status_count_t;

/* One live session (cw_client_sessions; operators only). */
typedef struct {
    char *name;
    char *peer;                /* IP address of its connection (no port), "" if unknown */
    char *agent;               /* its Login.agent */
    char *key;                 /* CURVE: its public key (Z85), "" in plain mode */
    uint64_t since_us;         /* login time, microseconds since the epoch */
    uint64_t idle_ms;          /* since its last frame */
    uint64_t queued;           /* durable queue depth */
    uint32_t held;             /* live messages held back for it */
    int pull, quiet;
} cw_session_info_t;

/* One user's durable queue (cw_client_queues; Stats' deepest queues). */
typedef struct {
    char *name;
    uint64_t depth;            /* unacknowledged entries */
    uint64_t last_seq;
    int online;
} cw_queue_info_t;

/* One recently forwarded message (cw_client_recent; operators only). */
typedef struct {
    uint64_t timestamp_us;
    char *from;
    char **to;                 /* the first recipients (at most 8); none for broadcast */
    size_t n_to;
    uint32_t recipients;       /* how many there were */
    uint32_t size;             /* text bytes */
    uint32_t delivered;        /* recipients DELIVERED / ACCEPTED */
    int broadcast, durable;
    char *text;                /* "" unless asked for and allowed */
} cw_forwarded_t;

/* The broker's answer to one request. Fields not used by a request are
 * zero/NULL. */
typedef struct {
    cw_status_t status;          /* the reply's status (CW_OK on success) */
    char *detail;                /* human-readable, never parsed ("" if none) */
    cw_recipient_t *recipients;  /* send: one per distinct recipient, in order */
    size_t n_recipients;
    int duplicate;               /* send: message_id already seen, result repeated */
    char *message_id;            /* send: the id the message carries (given or
                                    generated); NULL for other requests */
    size_t n_seen;               /* fetch: pending messages left out of `messages`
                                    because this client handed them to the
                                    application already (see cw_client_fetch) */
    cw_user_t *users;            /* login, who: the user log sorted by name */
    size_t n_users;
    int truncated;               /* more exist than the broker's reply carried
                                    (PROTOCOL.md §4.5): login: `users` is the
                                    first page of a longer log (cw_client_who
                                    gets it all); fetch: more messages are
                                    pending (acknowledge, fetch again);
                                    history: older messages exist */
    int has_login;               /* login: `login` is filled in */
    cw_login_info_t login;
    int has_stats;               /* stats: `stats` is filled in */
    cw_stats_t stats;
    cw_status_count_t *refusals; /* stats: error replies by status (counts > 0) */
    size_t n_refusals;
    cw_status_count_t *fates;    /* stats: per-recipient statuses of Sends */
    size_t n_fates;
    cw_session_info_t *sessions; /* sessions: sorted by name */
    size_t n_sessions;
    cw_queue_info_t *queues;     /* queues: sorted by name; stats: the deepest
                                    (operators only), deepest first */
    size_t n_queues;
    cw_forwarded_t *forwarded;   /* recent: oldest first */
    size_t n_forwarded;
    cw_message_t *messages;      /* fetch, history */
    size_t n_messages;
    cw_clock_item_t *clock;      /* send: our clock as stamped on the message */
    size_t n_clock;
} cw_reply_t;

typedef enum {
    CW_EVENT_DELIVER = 1,        /* a message for us: `msg`, `local_clock` */
    CW_EVENT_PRESENCE = 2,       /* someone logged in or out: `presence` */
    CW_EVENT_DISCONNECTED = 3,   /* broker lost while logged in: `conn` */
    CW_EVENT_RECONNECTED = 4,    /* logged in again after a loss: `conn` */
    CW_EVENT_RECEIPT = 5,        /* a read receipt for one of our messages: `receipt` */
} cw_event_type_t;

typedef enum {
    CW_PRESENCE_UNSPECIFIED = 0,
    CW_PRESENCE_LOGIN = 1,
    CW_PRESENCE_LOGOUT = 2,
    CW_PRESENCE_EXPIRED = 3,     /* missed heartbeats */
    CW_PRESENCE_SHUTDOWN = 4,    /* broker stopping */
} cw_presence_reason_t;

typedef struct {
    cw_event_type_t type;
    /* CW_EVENT_DELIVER */
    cw_message_t msg;
    cw_clock_item_t *local_clock;  /* our clock after merging msg.clock and ticking */
    size_t n_local_clock;
    /* CW_EVENT_PRESENCE */
    struct {
        char *name;
        int online;
        cw_presence_reason_t reason;
        uint64_t timestamp_us;
    } presence;
    /* CW_EVENT_DISCONNECTED / CW_EVENT_RECONNECTED */
    struct {
        cw_status_t status;      /* why the connection was lost (CW_ERR_DISCONNECTED) */
        char *detail;            /* human-readable */
        cw_user_t *users;        /* RECONNECTED: the user log */
        size_t n_users;
    } conn;
    /* CW_EVENT_RECEIPT (PROTOCOL.md 13.12): `reader` acknowledged our durable
     * message `message_id` at read_us. The receipt is an entry of our own
     * queue at `seq`: de-duplicated, held back and acknowledged (auto_ack)
     * like a durable delivery. */
    struct {
        char *message_id;        /* our message */
        char *reader;            /* the recipient who acknowledged it */
        uint64_t read_us;        /* when the broker recorded that, Unix epoch us */
        uint64_t seq;            /* the receipt's seq in our queue */
        uint64_t message_seq;    /* the message's seq in the reader's queue */
    } receipt;
    /* CW_EVENT_DISCONNECTED / CW_EVENT_RECONNECTED, with several endpoints
     * (see cw_client_new): failover.endpoint is the broker just lost
     * (DISCONNECTED) or now in use (RECONNECTED); NULL with one endpoint. */
    struct {
        char *endpoint;          /* e.g. "tcp://b:7400" */
        int switched;            /* RECONNECTED: another endpoint than before the loss */
        int resumed;             /* RECONNECTED: the broker took the session over with
                                    our resume token ("session resumed"); 0: a new
                                    session (the old one had expired) */
    } failover;
} cw_event_t;

/* A message to send. */
typedef struct {
    const char *const *to;   /* recipient names (unicast: 1, multicast: several) */
    size_t n_to;
    int broadcast;           /* 1: everyone known except us; n_to must be 0 */
    const char *text;        /* UTF-8 */
    int durable;             /* store-and-forward (brokers with a store) */
    const char *message_id;  /* NULL or "": the library generates one; else unique
                                per sender, at most 128 bytes */
    uint32_t ttl_s;          /* durable: seconds the message may wait; 0 = broker default */
    int receipt;             /* durable: ask for a read receipt from each recipient
                                (CW_EVENT_RECEIPT when they acknowledge it) */
} cw_send_t;

/* --- lifetime --------------------------------------------------------- */

/* Creates a client for the broker at endpoint (NULL: CW_CLIENT_DEFAULT_ENDPOINT)
 * and starts its I/O thread.
 * endpoint may list several brokers sharing one store, separated by commas:
 * "tcp://a:7400,tcp://b:7400" (at most CW_ENDPOINTS_MAX; blanks around an
 * element are ignored; an empty element, the same endpoint twice or a
 * malformed one: NULL, errno EINVAL, the reason logged at warn). The client
 * uses one at a time, starting with the first (cw_client_endpoint):
 *   - a login whose endpoint refuses the connection (CW_ERR_UNREACHABLE)
 *     tries the next ones in turn within its timeout;
 *   - failover: when the session's broker is lost (no frame for heartbeat_ms
 *     x liveness, or at once when its TCP connection closes or is refused),
 *     the client moves to the next endpoint (round robin), logs in there with
 *     the session's resume token, and reports CW_EVENT_DISCONNECTED then
 *     CW_EVENT_RECONNECTED (failover.endpoint, failover.resumed; conn.detail
 *     "reconnected to tcp://b:7400 (session resumed)"). Each endpoint of
 *     the list is tried once without delay, then each further round waits
 *     100 ms doubling to 5 s. A login there refused with NAME_TAKEN (the old
 *     broker's claim not yet expired) is repeated on the same endpoint every
 *     CW_FAILOVER_RETRY_MS for at most CW_FAILOVER_TAKEN_MS, then the
 *     rotation goes on. Unanswered durable sends go out again on the new
 *     broker with the same message_id (answered once; duplicate = 1 if the
 *     first attempt had landed), and what the new broker pushes again is
 *     de-duplicated by seq as after any reconnection (brokers on one store
 *     share the seqs).
 * With one endpoint nothing of the above changes the behaviour described at
 * the top of this file. Connecting is asynchronous: a broker that
 * refuses the connection (nothing listening) shows up as CW_ERR_UNREACHABLE
 * on the first request, one that does not answer at all as CW_ERR_TIMEOUT
 * (and an unreachable causeway-clockd as events pending, never as an
 * error).
 * Returns NULL if the endpoint (or clockd_endpoint) is malformed, the
 * trace_path cannot be opened for appending, a CURVE key file is unusable
 * (EINVAL; the reason is logged at warn), or resources (memory, threads,
 * file descriptors) are exhausted; errno says which. */
cw_client_t *cw_client_new(const char *endpoint, const cw_client_opts_t *opts);

/* Stops the I/O thread and frees everything; NULLs *p. Safe on NULL and
 * twice. If a session is logged in, a Logout is sent on a best-effort basis
 * (waiting at most 500 ms for it to leave; no reply is awaited). Queued
 * events are discarded. */
void cw_client_destroy(cw_client_t **p);

/* Why the last security handshake with the broker failed, as one line for
 * people (e.g. "the broker requires CURVE; give its public key and your
 * certificate (--server-key, --cert)"), or NULL if none failed since the
 * last one that succeeded. Copied into buf (size bytes); returns buf or
 * NULL. */
const char *cw_client_handshake_error(cw_client_t *c, char *buf, size_t size);

/* Why the broker's endpoint does not work, as one line for people, found
 * by probing it with a TCP connection of its own (tcp:// endpoints; waits
 * at most timeout_ms, < 0: 1000): "cannot connect to tcp://127.0.0.1:7400:
 * Connection refused (is the broker running there?)", "tcp://... is not a
 * ZeroMQ service: it answered \"HTTP/1.1 400 ...\" instead of a ZeroMQ
 * greeting", "... sent no ZeroMQ greeting within N ms ...". NULL if the
 * endpoint answers like a ZeroMQ peer (then cw_client_handshake_error may
 * know more) or is not tcp://. For the messages after CW_ERR_UNREACHABLE,
 * CW_ERR_TIMEOUT or CW_ERR_HANDSHAKE; blocks the calling thread. Copied
 * into buf (size bytes); returns buf or NULL. */
const char *cw_client_diagnose(cw_client_t *c, int timeout_ms, char *buf, size_t size);

/* --- requests --------------------------------------------------------- */
/* Each request blocks for at most timeout_ms (< 0: no limit) and returns the
 * status of the broker's reply (CW_OK on success) or a local error:
 * CW_ERR_TIMEOUT (no reply in time), CW_ERR_UNREACHABLE (without a
 * session: a TCP connection to the broker was refused or failed during the
 * call, reported at once instead of waiting for the timeout; libzmq goes on
 * trying in the background; cw_client_diagnose() says why),
 * CW_ERR_DISCONNECTED (the session's
 * broker connection is lost and being re-established, or was lost while
 * waiting), CW_ERR_INVALID (bad arguments, nothing sent), CW_ERR_NOMEM,
 * CW_ERR_IO, CW_ERR_HANDSHAKE (the security handshake with the broker
 * failed: at once when the broker refused this client's key or the two
 * sides disagree on plain vs CURVE, or after three failed handshakes in a
 * row (e.g. a wrong server key); instead of CW_ERR_TIMEOUT when one failed
 * meanwhile, and instead of CW_ERR_DISCONNECTED when the connection was
 * lost to one; cw_client_handshake_error() says why). If reply is not NULL, *reply receives the broker's full reply
 * whenever there is one (caller frees with cw_reply_destroy), else NULL. */

/* Logs in as name. On CW_OK the reply holds the user log and LoginInfo, and
 * the session is kept alive (and re-established) by the library until
 * cw_client_logout(). Broker refusals: CW_NAME_TAKEN, CW_BAD_NAME,
 * CW_ALREADY_LOGGED_IN, CW_TOO_MANY_SESSIONS, CW_UNAUTHORIZED. */
cw_status_t cw_client_login(cw_client_t *c, const char *name, int timeout_ms,
                            cw_reply_t **reply);

/* cw_client_login presenting a resume token (PROTOCOL.md §7.5): takes over
 * the live session of name that an earlier connection holds, e.g. of a
 * program that died before its session expired and kept the token of its
 * LoginInfo; without such a session it is an ordinary login. The reply's
 * detail is "session resumed" for a take-over. Stored messages are pushed
 * again from the first unacknowledged one, and this client shows them
 * although it has shown nothing yet (after_seq starts again at 0 with
 * every login and resume, §13.10). The token is a secret: do not log it. */
cw_status_t cw_client_login_resume(cw_client_t *c, const char *name, const uint8_t *token,
                                   size_t token_len, int timeout_ms, cw_reply_t **reply);

/* Ends the session; with auto_ack, first acknowledges what was taken
 * (cw_client_ack_flush). If the connection is currently lost the session is
 * abandoned locally (no more reconnecting) and CW_ERR_DISCONNECTED is
 * returned. */
cw_status_t cw_client_logout(cw_client_t *c, int timeout_ms);

/* Sends a message. Success is CW_OK (live: the broker routed it) or
 * CW_ACCEPTED (durable: stored and fsynced for at least one recipient); the
 * per-recipient results are in (*reply)->recipients (DELIVERED, OFFLINE,
 * UNKNOWN_USER, FLOODED; durable: ACCEPTED with its seq, QUEUE_FULL,
 * UNKNOWN_USER), (*reply)->clock is the clock the message carried and
 * (*reply)->message_id its id. A durable send no known recipient could take
 * returns CW_QUEUE_FULL (some queue full) or CW_OK (nobody known), still
 * with the recipients. Whole-request refusals: CW_NOT_LOGGED_IN,
 * CW_BAD_REQUEST, CW_TOO_LARGE, CW_TOO_MANY_RECIPIENTS, CW_NOT_DURABLE,
 * CW_STORE_ERROR, CW_FLOODED.
 * Retries: live sends never; durable sends as described at the top of this
 * file, so CW_ERR_DISCONNECTED and CW_ERR_TIMEOUT from a durable send mean
 * the caller's timeout ran out (or no_reconnect is set) and the outcome is
 * unknown: send again with (*reply)->message_id.
 * Unlike other requests, *reply is set for every outcome but CW_ERR_INVALID
 * and CW_ERR_NOMEM: without a broker reply it holds status, an empty detail
 * and message_id only. */
cw_status_t cw_client_send(cw_client_t *c, const cw_send_t *msg, int timeout_ms,
                           cw_reply_t **reply);

/* Writes a fresh message id, unique with overwhelming probability
 * ("<name>-<64-bit random hex>-<counter>", name "anon" before login), into
 * buf (at most CW_MESSAGE_ID_MAX bytes with the NUL; truncated to size).
 * For callers that record the id before sending. Returns buf. */
char *cw_client_message_id(cw_client_t *c, char *buf, size_t size);

/* The user log (no login needed): (*reply)->users. The broker sends it in
 * pages (PROTOCOL.md 7.4); this asks for every page in turn, each with
 * timeout_ms, and returns them joined (detail and status of the last). If
 * a later page is refused (RATE_LIMITED, FLOODED, a timeout), the pages
 * before it come back with that status and truncated set. */
cw_status_t cw_client_who(cw_client_t *c, int timeout_ms, cw_reply_t **reply);

/* Broker statistics (no login needed): (*reply)->stats, refusals, fates
 * (and queues, the deepest, for an operator). */
cw_status_t cw_client_stats(cw_client_t *c, int timeout_ms, cw_reply_t **reply);

/* Operator requests (PROTOCOL.md §12.2): the session must be logged in
 * under a name of the broker's --operators, else CW_UNAUTHORIZED
 * (CW_NOT_LOGGED_IN without a session). Sessions and queues fetch every
 * page (timeout_ms per page); a page refused part-way leaves what came so
 * far in *reply with truncated set. Queues on a live-only broker:
 * CW_NOT_DURABLE. */
cw_status_t cw_client_sessions(cw_client_t *c, int timeout_ms, cw_reply_t **reply);
cw_status_t cw_client_queues(cw_client_t *c, int timeout_ms, cw_reply_t **reply);
/* The last `max` forwarded messages (0: all the broker keeps), with their
 * texts if `text` (a broker without --monitor-text refuses that:
 * CW_UNAUTHORIZED). */
cw_status_t cw_client_recent(cw_client_t *c, uint32_t max, int text, int timeout_ms,
                             cw_reply_t **reply);

/* Durable mode (brokers with a store; others reply CW_NOT_DURABLE). */
/* Acknowledges every queued message up to and including seq (cumulative;
 * OK also when already acknowledged). Call it only for messages handled. */
cw_status_t cw_client_ack(cw_client_t *c, uint64_t seq, int timeout_ms);
/* auto_ack: the application has handled everything handed over so far;
 * acknowledges it now and waits for the broker's commit (the batching
 * would do it a little later). CW_OK at once if there is nothing to
 * acknowledge (or no auto_ack). cw_client_logout() calls it first. */
cw_status_t cw_client_ack_flush(cw_client_t *c, int timeout_ms);
/* "Check for messages": up to max (0: broker default 100, at most 1000) of
 * the oldest unacknowledged messages: (*reply)->messages, in seq order,
 * empty if none. Messages this client has handed to the application before
 * (delivery events, earlier fetches) are left out (counted in
 * (*reply)->n_seen), and those returned count as handed over: they will not
 * come again as delivery events. Fetch removes nothing at the broker:
 * acknowledge what was fetched (or use auto_ack) before fetching again, else
 * the broker lists the same ones and the reply is empty. */
cw_status_t cw_client_fetch(cw_client_t *c, uint32_t max, int timeout_ms, cw_reply_t **reply);
/* Our last `last` (0: 100, at most 1000) messages, acknowledged (within the
 * broker's retention) or not, oldest first: (*reply)->messages. Not
 * de-duplicated and changes nothing. */
cw_status_t cw_client_history(cw_client_t *c, uint32_t last, int timeout_ms,
                              cw_reply_t **reply);

/* --- events ----------------------------------------------------------- */

/* Waits at most timeout_ms (0: don't wait, < 0: no limit) for the next
 * event. CW_OK and *event set (caller frees with cw_event_destroy), or
 * CW_ERR_TIMEOUT and *event NULL. Duplicate deliveries never come out (see
 * the top of this file); with auto_ack, calling it says that the previous
 * delivery has been handled (see cw_client_opts_t.auto_ack). */
cw_status_t cw_client_next_event(cw_client_t *c, int timeout_ms, cw_event_t **event);

/* A file descriptor that is readable (POLLIN) exactly while at least one
 * event is queued: poll it with other descriptors, then call
 * cw_client_next_event(c, 0, ...). Never read or close it. Can't fail. */
int cw_client_fd(cw_client_t *c);

/* --- state ------------------------------------------------------------ */

/* Our vector clock, formatted "{alice:2, bob:1}", written into buf
 * (truncated with "...}" if size is too small). Returns buf. */
char *cw_client_clock(cw_client_t *c, char *buf, size_t size);

/* Our current clock as an array sorted by node; caller frees it with
 * cw_client_clock_free(). Returns the number of entries; on CW_ERR_NOMEM
 * returns 0 and *items is NULL. */
size_t cw_client_clock_items(cw_client_t *c, cw_clock_item_t **items);
void cw_client_clock_free(cw_clock_item_t **items, size_t n);

/* The name we are logged in as (also while reconnecting), or NULL. Valid
 * until the next cw_client_login/logout/next_event call (with no_reconnect,
 * reading the CW_EVENT_DISCONNECTED event ends the session). */
const char *cw_client_name(const cw_client_t *c);

/* 1 while the session's connection is up, 0 while it is lost or there is no
 * session. */
int cw_client_connected(cw_client_t *c);

/* The endpoint in use now (one of the list given to cw_client_new); valid
 * as long as c. NULL if c is NULL. */
const char *cw_client_endpoint(cw_client_t *c);
/* How many endpoints c was given (1..CW_ENDPOINTS_MAX); 0 if c is NULL. */
size_t cw_client_endpoint_count(const cw_client_t *c);
/* Endpoint i of the list (0-based, in the order given), NULL if i is out of
 * range; valid as long as c. */
const char *cw_client_endpoint_at(const cw_client_t *c, size_t i);
/* The session's resume token (LoginInfo.resume_token, updated by every
 * login and failover): returns its length, 0 without a session; copies it
 * into buf if it fits in size bytes (CW_RESUME_TOKEN_MAX always does). The
 * token is a secret: do not log it. */
size_t cw_client_resume_token(cw_client_t *c, uint8_t *buf, size_t size);

/* --- results ---------------------------------------------------------- */

void cw_reply_destroy(cw_reply_t **p);
void cw_event_destroy(cw_event_t **p);

/* Stable lower-case name of a presence reason ("login", "logout",
 * "expired", "shutdown", "unspecified"). Never NULL. */
const char *cw_presence_reason_name(cw_presence_reason_t reason);

/* --- causal events ----------------------------------------------------- */

/* The counters of causal event recording so far (all 0 if the client
 * records nothing). Can't fail. */
void cw_client_trace_stats(cw_client_t *c, cw_trace_stats_t *stats);

/* Sends the events waiting for causeway-clockd at once (no batching delay)
 * and waits at most timeout_ms (< 0: no limit) until the daemon has
 * confirmed every event recorded so far. CW_OK when nothing is pending
 * (also without clockd_endpoint: trace lines are written as events
 * happen), CW_ERR_TIMEOUT if something still is (it stays queued; see
 * cw_client_trace_stats). */
cw_status_t cw_client_trace_flush(cw_client_t *c, int timeout_ms);

/* The library's version, e.g. "0.1.0". */
const char *cw_client_version(void);

#ifdef __cplusplus
}
#endif

#endif
