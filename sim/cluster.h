/*  cluster.h: a Redis Cluster of its own for causeway-sim (redis_cluster = PxR).
 *
 *  sim_cluster_start() starts P x (1 + R) redis-server processes on free
 *  loopback ports (port + 10000, the cluster bus, free too), each with its
 *  own directory under the simulator's work directory and the settings of
 *  shared/SCALEOUT.md section 1 (appendonly yes, appendfsync always,
 *  maxmemory-policy noeviction, no RDB snapshots, the scenario's
 *  cluster-node-timeout), joins them with `redis-cli --cluster create
 *  ... --cluster-replicas R --cluster-yes` and waits until every running
 *  node says cluster_state:ok and every replica master_link_status:up.
 *  Faults act on one node, found by role at the time of the fault
 *  (sim_cluster_primary): SIGKILL and a restart on the same port and
 *  directory (it rejoins from its nodes.conf), SIGSTOP / SIGCONT,
 *  `CLIENT KILL TYPE pubsub` on every node, a `redis-cli --cluster reshard`
 *  run in the background. Everything is stopped by PID (SIGTERM, then
 *  SIGKILL) in sim_cluster_destroy(); the children also get SIGKILL if the
 *  simulator dies (procs.c, PR_SET_PDEATHSIG).
 *
 *  The simulator talks to the nodes itself with a few lines of RESP over a
 *  TCP socket (CLUSTER INFO, CLUSTER NODES, INFO replication, CLIENT KILL),
 *  every call bounded by a timeout; it does not link hiredis.
 *
 *  Threads: main thread only (like procs.h, because of PR_SET_PDEATHSIG).
 */
#ifndef CW_SIM_CLUSTER_H
#define CW_SIM_CLUSTER_H

#include <stddef.h>
#include <sys/types.h>

/* Explicit limits (scenario.c refuses more). */
#define SIM_CLUSTER_MIN_PRIMARIES 3   /* Redis Cluster needs 3 */
#define SIM_CLUSTER_MAX_PRIMARIES 8
#define SIM_CLUSTER_MAX_REPLICAS 2    /* per primary */
#define SIM_CLUSTER_MAX_NODES (SIM_CLUSTER_MAX_PRIMARIES * (1 + SIM_CLUSTER_MAX_REPLICAS))
#define SIM_CLUSTER_SLOTS 16384
/* Node ports are chosen in this range, their bus ports (+10000) in
 * 22000-31999: all below Linux's ephemeral range (as the test clusters of
 * tests/e2e/scaleout/rediscluster.py). */
#define SIM_CLUSTER_PORT_MIN 12000
#define SIM_CLUSTER_PORT_MAX 21999

typedef struct sim_cluster sim_cluster_t;

/* A cluster of primaries x (1 + replicas) nodes whose directories go under
 * workdir/redis/; ports are chosen now (free loopback ports in
 * SIM_CLUSTER_PORT_MIN..MAX whose port + 10000 is free too), nothing runs yet. redis_server, redis_cli:
 * the programs (names looked up in PATH, or paths). NULL with err on a bad
 * argument, no free ports, or out of memory. */
sim_cluster_t *sim_cluster_new(const char *workdir, int primaries, int replicas,
                               int node_timeout_ms, const char *redis_server,
                               const char *redis_cli, char *err, size_t err_size);
/* Stops every node still running (SIGCONT if stopped, SIGTERM, SIGKILL
 * after 10 s) and frees; NULLs *p. Safe twice and on NULL. */
void sim_cluster_destroy(sim_cluster_t **p);

/* Starts the nodes, creates the cluster and waits for it to be healthy,
 * all within timeout_ms. 0, or -1 with err (the node logs are in
 * workdir/redis/node-PORT/redis.log). */
int sim_cluster_start(sim_cluster_t *c, int timeout_ms, char *err, size_t err_size);

/* Waits at most timeout_ms until every running node that is not stopped
 * reports cluster_state:ok and every replica among them has its link to
 * the primary up. 0, or -1 with err naming the node that is not. */
int sim_cluster_wait_healthy(sim_cluster_t *c, int timeout_ms, char *err, size_t err_size);

/* "127.0.0.1:P1,127.0.0.1:P2,..." of every node: the brokers' --store seeds. */
const char *sim_cluster_seeds(const sim_cluster_t *c);
int sim_cluster_nodes(const sim_cluster_t *c);
int sim_cluster_port(const sim_cluster_t *c, int node);

/* The node (0-based index) that is primary number k (1-based) now, the
 * primaries taken in the order of the lowest slot each serves, as a
 * running node sees them (CLUSTER NODES, failed nodes left out). -1 with
 * err if there is no such primary or no node answers. */
int sim_cluster_primary(sim_cluster_t *c, int k, char *err, size_t err_size);

/* SIGKILL node i and reap it. 0, or -1 if it was not running. */
int sim_cluster_kill(sim_cluster_t *c, int node);
/* Starts node i again (same port, directory and nodes.conf) and waits at
 * most timeout_ms for it to answer PING. 0, or -1 with err. */
int sim_cluster_restart(sim_cluster_t *c, int node, int timeout_ms, char *err, size_t err_size);
/* SIGSTOP / SIGCONT node i. 0, or -1 if it was not running. */
int sim_cluster_stop(sim_cluster_t *c, int node);
int sim_cluster_cont(sim_cluster_t *c, int node);

/* `CLIENT KILL TYPE pubsub` on every running node that is not stopped.
 * Returns how many connections were closed in all, or -1 with err if a
 * node did not answer. */
long sim_cluster_kill_pubsub(sim_cluster_t *c, char *err, size_t err_size);

/* Starts `redis-cli --cluster reshard` moving n_slots slots from primary 1
 * to primary 2 (sim_cluster_primary) in the background, its output in
 * workdir/redis/reshard-N.log. Returns its pid (reap it with sim_wait from
 * procs.h), or -1 with err. */
pid_t sim_cluster_reshard(sim_cluster_t *c, int n_slots, char *err, size_t err_size);

#endif
