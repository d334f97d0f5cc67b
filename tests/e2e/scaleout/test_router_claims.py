"""The router with a shared store, continued (test_router_shared.py has the
basics): what happens to sessions and their claims when a broker dies or
restarts, or a client moves, logs in twice or goes while its claim is
decided, and the broker's own limits on a shared store. Brokers run with
``--store redis://...`` on a real Redis Cluster started and stopped by
each test (routerkit.py, rediscluster.py).

Every wait is bounded and waits for the reply or event it expects; where a
state can only be polled (a lease expiring) the poll is bounded and each
try is a real request.
"""

import time

import pytest

from conftest import assert_status
from routerkit import (LEASE_S, REMOTE_TIMEOUT, ack, brokers, cluster,  # noqa: F401
                       collect_deliveries, send_durable, send_durable_many, statuses,
                       wait_until)


def test_broker_killed_users_move_and_get_unacked_again(brokers, hub, pb):
    a, b = brokers(2)
    alice = hub.logged_in(a.endpoint, "alice")
    bob = hub.logged_in(b.endpoint, "bob")
    for i in range(5):
        assert_status(pb, send_durable(bob, ["alice"], f"u{i}", message_id=f"k{i}"), "ACCEPTED")
    got = collect_deliveries(alice, 5)
    assert [e.deliver.text for e in got] == [f"u{i}" for i in range(5)]
    ack(alice, got[1].deliver.seq)  # u0, u1 acknowledged; u2..u4 not
    a.kill()
    alice.close()
    # Until A's lease expires the name is A's; then B takes the login.
    t0 = time.monotonic()
    moved = hub.client(b.endpoint)
    wait_until("alice able to log in on B after A's lease expired",
               lambda: moved.try_login("alice").status == pb.STATUS_OK,
               timeout=REMOTE_TIMEOUT + 3 * LEASE_S, hub=hub)
    assert time.monotonic() - t0 < REMOTE_TIMEOUT + 3 * LEASE_S
    again = collect_deliveries(moved, 3)
    assert [e.deliver.text for e in again] == ["u2", "u3", "u4"]
    assert again[0].after_seq == 0  # the pushes start again from the first unacknowledged
    ack(moved, again[-1].deliver.seq)
    moved.drain()
    more = [e for _, e in moved.inbox if e.WhichOneof("body") == "deliver"]
    assert not more, f"more than the unacknowledged ones: {more}"




def test_ack_beyond_seqs_this_broker_knows(cluster, broker, hub, pb):
    """Seqs appended through A, acknowledged on B at once: the Ack may be
    answered before B has learnt those seqs (its queue re-read after the
    claim raises them, READ_COUNT at a time). B's idea of the queue's last
    seq moves to the acked seq: a debug build asserted pushed_seq <=
    user->last_seq when it did not, and every build told operators a
    last_seq below what the user had acknowledged."""
    store = f"redis://{cluster.seeds}"
    a = broker("--store", store)
    b = broker("--store", store, "--operators", "ops", "--push-window", "2")
    for name in ("alice", "carol"):  # known users, offline
        hub.logged_in(a.endpoint, name).logout()
    ops = hub.logged_in(b.endpoint, "ops")
    bob = hub.logged_in(a.endpoint, "bob")
    n = 600
    seqs = {"alice": [], "carol": []}
    for reply in send_durable_many(bob, ["alice", "carol"], [f"m{i}" for i in range(n)], "ab"):
        assert_status(pb, reply, "ACCEPTED")
        for r in reply.recipients:
            seqs[r.name].append(r.seq)
    assert seqs["alice"] == seqs["carol"] == list(range(1, n + 1))

    def last_seq(name):
        q = {i.name: i for i in ops.request("queues", pb.Queues()).queues}
        return q[name].last_seq

    # Pull mode: B pushes nothing; the Ack goes out right after the Login.
    alice = hub.logged_in(b.endpoint, "alice", pull=True)
    ack(alice, n)
    assert last_seq("alice") == n
    # Push mode with a window of 2: B pushes seqs 1-2, the client acks n
    # without waiting for them.
    carol = hub.logged_in(b.endpoint, "carol")
    ack(carol, n)
    assert last_seq("carol") == n
    # The queue goes on at n + 1, pushed to carol on B as the next one.
    reply = send_durable(bob, ["carol"], "after", message_id="ab-after")
    assert statuses(bob, reply) == {"carol": "ACCEPTED"}
    d = carol.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "after")
    assert d.seq == n + 1
    assert last_seq("carol") == n + 1
    assert a.running() and b.running()
