/*  scenario.h: scenario files and the plans made from them (causeway-sim).
 *
 *  A scenario (scripts/scenarios/NAME.scn, format in docs/SIMULATION.md) is
 *  `key = value` settings plus timed `at` lines for broker faults and
 *  clients going offline. sim_scenario_load() reads and checks one;
 *  sim_plan_new() turns it and a seed into a plan: every message (sender,
 *  recipients, mode, size, planned time) and every fault, as one list of
 *  actions sorted by time. All randomness is drawn here, in a fixed order,
 *  from one seeded generator (rng.h): the same scenario and seed give the
 *  same plan, byte for byte in sim_plan_print().
 *
 *  Threads: loading and planning run on the main thread before anything
 *  starts; afterwards the scenario and the plan's fixed fields are
 *  read-only and shared by every client thread (the run-time fields of
 *  sim_msg_t have their own rules, see there).
 */
#ifndef CW_SIM_SCENARIO_H
#define CW_SIM_SCENARIO_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Explicit limits of a scenario (a file asking for more is refused). */
#define SIM_MAX_CLIENTS 1000        /* simulated clients */
#define SIM_MAX_MESSAGES 1000000    /* messages in one run */
#define SIM_MAX_EVENTS 10000        /* `at` lines */
#define SIM_MAX_LINE 1024           /* bytes per scenario line */
#define SIM_MAX_TEXT 60000          /* message size (the broker's default --max-text) */
#define SIM_MAX_TIME_US (3600LL * 1000000)  /* any time or duration: one hour */
#define SIM_NAME_MAX 32             /* client name bytes (the broker's --max-name) */
/* Smallest message text: the id header every message starts with
 * ("cwsim RUNID INDEX ", see sim.c) fits in it. */
#define SIM_MIN_TEXT 40
#define SIM_MAX_BROKERS 8           /* `brokers` */
#define SIM_MAX_BROKER_ARGS 1000    /* bytes of `broker_args` */

typedef struct {
    int64_t lo, hi;  /* inclusive; lo <= hi */
} sim_range_t;

typedef enum {
    SIM_EV_KILL = 1,     /* SIGKILL the broker */
    SIM_EV_RESTART,      /* start it again (same port, same data directory) */
    SIM_EV_PAUSE,        /* SIGSTOP for a duration, then SIGCONT */
    SIM_EV_OFFLINE,      /* a client logs out for a duration, then logs in */
    SIM_EV_STOP,         /* SIGSTOP a broker (until a cont-broker) */
    SIM_EV_CONT,         /* SIGCONT a broker stopped by stop-broker */
    SIM_EV_KILL_PRIMARY, /* SIGKILL Redis primary K; restarted after dur_us if dur_us.hi > 0 */
    SIM_EV_STOP_PRIMARY, /* SIGSTOP Redis primary K for a duration, then SIGCONT */
    SIM_EV_RESHARD,      /* redis-cli --cluster reshard of `slots` slots, primary 1 to 2 */
    SIM_EV_KILL_PUBSUB,  /* CLIENT KILL TYPE pubsub on every Redis node */
} sim_ev_type_t;

/* One `at` line as written. */
typedef struct {
    int line;             /* line number in the file */
    sim_ev_type_t type;
    int64_t at_us;        /* when, from the start of the run */
    sim_range_t dur_us;   /* PAUSE, OFFLINE: how long */
    char *client;         /* OFFLINE: a name, or NULL for `random N`; owned */
    int n_random;         /* OFFLINE random: how many clients */
    int broker;           /* KILL, RESTART, PAUSE, STOP, CONT: broker index (0-based) */
    int primary;          /* KILL_PRIMARY, STOP_PRIMARY: primary number K (1-based) */
    int slots;            /* RESHARD: how many slots move */
} sim_event_spec_t;

typedef enum { SIM_STORE_SQLITE = 0, SIM_STORE_REDIS } sim_store_t;
typedef enum { SIM_TO_ANY = 0, SIM_TO_OTHER_BROKER } sim_recipients_t;

typedef struct {
    char *path;                /* the file read; owned */
    char *name;                /* `name` (default: the file's base name); owned */
    char *description;         /* `description` ("" if none); owned */
    int n_clients;             /* `clients` */
    char **names;              /* n_clients names; owned */
    long messages;             /* `messages`: sends in the run */
    unsigned w_unicast;        /* `mix` weights */
    unsigned w_multicast;
    unsigned w_broadcast;
    sim_range_t multicast;     /* recipients of a multicast */
    int durable_pct;           /* share of durable sends, 0..100 */
    sim_range_t size;          /* message text bytes */
    sim_range_t think_us;      /* pause before each send of a client */
    uint64_t seed;             /* `seed` (the command line may override) */
    int heartbeat_ms;          /* broker --heartbeat-ms */
    int liveness;              /* broker --liveness */
    int64_t send_timeout_us;   /* bound of one send (durable: with retries) */
    int64_t drain_timeout_us;  /* bound of the drain phase */
    int64_t quiet_us;          /* drain ends after this long without a delivery */
    int n_brokers;             /* `brokers` (1..SIM_MAX_BROKERS); client i's home is i % n */
    sim_store_t store;         /* `store` */
    int redis_primaries;       /* `redis_cluster = PxR`: 0 when no cluster */
    int redis_replicas;
    int node_timeout_ms;       /* `node_timeout`: cluster-node-timeout */
    char *broker_args;         /* `broker_args`: words for every broker ("" if none); owned */
    sim_recipients_t recipients; /* `recipients` */
    sim_event_spec_t *events;  /* `at` lines in file order; owned */
    size_t n_events;
} sim_scenario_t;

/* Reads and checks the scenario file at path. On success returns the
 * scenario (caller destroys it); on failure returns NULL and writes
 * "FILE:LINE: reason" (or "FILE: reason") into err. */
sim_scenario_t *sim_scenario_load(const char *path, char *err, size_t err_size);
void sim_scenario_destroy(sim_scenario_t **p);

/* Index of the client called name, or -1. */
int sim_scenario_client(const sim_scenario_t *s, const char *name);

typedef enum { SIM_UNICAST = 0, SIM_MULTICAST, SIM_BROADCAST } sim_kind_t;

/* One planned message. The fixed part is written by the planner; the
 * run-time part by the threads named on each field. */
typedef struct {
    /* plan */
    int sender;                 /* client index */
    sim_kind_t kind;
    int durable;
    int size;                   /* text bytes */
    int *to;                    /* recipients (not for broadcast); owned */
    int n_to;
    int64_t at_us;              /* planned send time */
    /* run */
    _Atomic uint64_t sent_us;   /* sender thread: monotonic us just before the send; 0: not sent */
    int64_t replied_us;         /* sender thread: monotonic us when the reply came */
    int outcome;                /* sender thread: cw_status_t of the send; -1: not sent */
    uint8_t *rstate;            /* sender thread: per client, SIM_R_* from the reply */
    uint8_t *shown;             /* client r's thread only: times shown to r (saturates at 255) */
    _Atomic uint8_t *pair;      /* per client: SIM_PAIR_* bits, set by the sender (accepted)
                                   and by the recipient (shown), whoever comes second counts
                                   the pair as done (the drain's exact count) */
} sim_msg_t;

enum { SIM_PAIR_ACCEPTED = 1, SIM_PAIR_SHOWN = 2 };

/* Per recipient, from the send's reply. */
enum { SIM_R_NONE = 0, SIM_R_DELIVERED, SIM_R_ACCEPTED, SIM_R_OFFLINE, SIM_R_OTHER };

typedef enum {
    SIM_ACT_RESTART = 0,   /* the order at equal times */
    SIM_ACT_RESUME,
    SIM_ACT_ONLINE,
    SIM_ACT_KILL,
    SIM_ACT_PAUSE,
    SIM_ACT_OFFLINE,
    SIM_ACT_STOP,          /* stop-broker */
    SIM_ACT_CONT,          /* cont-broker */
    SIM_ACT_NODE_RESTART,  /* the node of kill-primary `ref` starts again */
    SIM_ACT_NODE_CONT,     /* the node of stop-primary `ref` gets SIGCONT */
    SIM_ACT_KILL_PRIMARY,
    SIM_ACT_STOP_PRIMARY,
    SIM_ACT_RESHARD,
    SIM_ACT_KILL_PUBSUB,
    SIM_ACT_SEND,
} sim_act_type_t;

typedef struct {
    int64_t at_us;        /* from the start of the run */
    sim_act_type_t type;
    int client;           /* ONLINE, OFFLINE, SEND: client index; else -1 */
    size_t msg;           /* SEND: index into plan->msgs */
    int64_t dur_us;       /* PAUSE, OFFLINE: how long */
    size_t seq;           /* creation order: the last tie-breaker */
    int broker;           /* broker actions: broker index (0-based) */
    int n;                /* KILL_PRIMARY, STOP_PRIMARY: primary K; RESHARD: slots */
    int ref;              /* Redis node faults: fault number linking a fault to its end */
} sim_action_t;

typedef struct {
    const sim_scenario_t *sc;  /* not owned */
    uint64_t seed;
    sim_msg_t *msgs;           /* sc->messages of them; owned */
    size_t n_msgs;
    sim_action_t *acts;        /* sorted by (at_us, type, seq); owned */
    size_t n_acts;
    int64_t end_us;            /* time of the last action */
    int n_node_faults;         /* kill-primary and stop-primary actions (ref 0..n-1) */
} sim_plan_t;

/* Home broker (0-based) of client ci. */
int sim_home(const sim_scenario_t *sc, int ci);

/* Makes the plan for scenario sc with seed. Returns NULL with err set if
 * the `at` lines contradict each other (a restart of a running broker, a
 * client offline twice at once, more random clients than are free, the
 * broker down at the end) or memory runs out. sc must outlive the plan. */
sim_plan_t *sim_plan_new(const sim_scenario_t *sc, uint64_t seed, char *err, size_t err_size);
void sim_plan_destroy(sim_plan_t **p);

/* Writes the plan, one action per line, to f: the determinism witness. */
void sim_plan_print(const sim_plan_t *p, FILE *f);

const char *sim_kind_name(sim_kind_t k);

#endif
