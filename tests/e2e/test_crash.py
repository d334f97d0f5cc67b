"""Crash test of durable mode: SIGKILL the broker under load, repeatedly.

Three sender threads (raw DEALER clients, one socket each) stream durable
messages to two recipients r1 and r2 (each message to r1, r2 or both, by a
seeded choice), keeping up to WINDOW Sends unanswered. Every message has a
unique message_id and carries "<sender>#<counter>" as its text. Two
recipient threads (raw push-mode clients) record every Deliver and Ack the
highest seq they have seen: r1 at once, r2 lazily (at most every
LAZY_ACK_S), so that r2 lags behind, its push window (16) fills and the
broker's redelivery (--redeliver-ms 100) comes into play.

The main thread SIGKILLs the broker at seeded points (a few ms after the
count of ACCEPTED replies reaches each kill point; one point falls right
after the previous restart, while the recipients catch up) and starts a
new broker on the same data directory, on a new port. The clients notice
the new endpoint, reconnect and log in again; senders resend every
unanswered Send, in order, with its original message_id. Between two
restarts the load is a flood (as fast as the window allows: kills find
Sends in flight) or paced (RATE messages a second per sender: time passes,
r2's acks lag, redelivery happens), in a seeded order. After the last kill
the run is clean and paced: the senders finish, then the recipients drain
their queues to empty with Fetch.

Then, per recipient:
  - nothing was delivered that was never sent to it (sender, id, text);
  - every message that got ACCEPTED (in the end, all of them) was delivered
    at least once, under the seq that the sender's Reply named;
  - a (sender, message_id) always came with the same seq and a seq always
    with the same message: nothing was stored twice;
  - after dropping duplicates by (sender, message_id), the receiver-side
    rule, each message is shown exactly once, seqs strictly increase, and
    each sender's messages are in send order;
  - within one session, pushes not flagged redelivered have increasing seqs;
and the broker's Stats count no stored message.

The seed is fixed; CW_CRASH_SEED overrides it. The summary line (and the
first line of output on failure) names it: a failure replays with
CW_CRASH_SEED=<seed> (up to thread timing).
"""

import os
import random
import threading
import time

import zmq

from conftest import assert_status

SEED = int(os.environ.get("CW_CRASH_SEED", "20261125"))
SENDERS = ("s1", "s2", "s3")
RECIPIENTS = ("r1", "r2")
PER_SENDER = 300          # messages per sender
WINDOW = 8                # unanswered Sends per sender
RATE = 120                # paced phases: new messages per second per sender
KILLS = 5
HEARTBEAT_MS = 500        # broker heartbeat; sessions expire after 10 x 500 ms
LIVENESS = 10
CLIENT_HB_S = 0.1         # clients send a heartbeat after this much silence
POLL_MS = 20
PROGRESS_TIMEOUT = 20.0   # no kill point / phase may take longer than this
BROKER_FLAGS = ("--redeliver-ms", 100, "--push-window", 16, "--log-level", "info")
LAZY_ACK_S = 0.15         # r2 acks at most this often: its push window fills and
                          # redelivery (after 100 ms) happens


class World:
    """What the threads share: the broker endpoint (with a generation that
    changes at each restart), progress counters, phase flags, failures."""

    def __init__(self):
        self.cond = threading.Condition()
        self.generation = 0
        self.endpoint = None
        self.accepted = 0          # messages ACCEPTED so far (first reply only)
        self.logged_in = set()     # recipients that completed a login
        self.senders_done = 0
        self.drain = False         # senders finished: recipients drain with Fetch
        self.drained = set()       # recipients whose Fetch came back empty
        self.errors = []           # failures reported by the threads
        self.stop = False          # the test is over: threads return
        self.flood = True          # senders ignore RATE

    def current(self):
        with self.cond:
            return self.generation, self.endpoint

    def restart(self, endpoint):
        with self.cond:
            self.generation += 1
            self.endpoint = endpoint
            self.cond.notify_all()

    def fail(self, what):
        with self.cond:
            self.errors.append(what)
            self.cond.notify_all()

    @property
    def aborted(self):
        return self.stop or bool(self.errors)

    def bump(self, attr, value=None):
        with self.cond:
            if value is None:
                setattr(self, attr, getattr(self, attr) + 1)
            else:
                getattr(self, attr).add(value)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout, what):
        with self.cond:
            ok = self.cond.wait_for(lambda: self.errors or predicate(), timeout)
        if self.errors:
            raise AssertionError("client thread failed: " + "; ".join(self.errors))
        if not ok:
            raise AssertionError(f"no progress within {timeout}s: waiting for {what}")


class Client(threading.Thread):
    """One raw protocol client on its own thread and socket; reconnects to
    the current endpoint whenever the generation changes."""

    def __init__(self, world, ctx, pb, name):
        super().__init__(name=name, daemon=True)
        self.world, self.ctx, self.pb, self.name = world, ctx, pb, name
        self.sock = None
        self.gen = -1
        self.next_rid = 1
        self.last_tx = 0.0
        self.login_rid = None
        self.logged_in = False
        self.reconnects = 0

    def run(self):
        try:
            self.main()
        except Exception as e:  # noqa: BLE001 - reported to the main thread
            self.world.fail(f"{self.name}: {type(e).__name__}: {e}")
        finally:
            if self.sock is not None:
                self.sock.close(linger=0)

    def send(self, body, msg=None, request_id=None):
        env = self.pb.Envelope(version=1)
        if request_id is None:
            request_id = self.next_rid
            self.next_rid += 1
        env.request_id = request_id
        field = getattr(env, body)
        if msg is not None:
            field.CopyFrom(msg)
        else:
            field.SetInParent()
        self.sock.send(env.SerializeToString())
        self.last_tx = time.monotonic()
        return request_id

    def connect_if_restarted(self, pull=False):
        """Reconnects and sends a Login if the broker changed. True if so."""
        gen, endpoint = self.world.current()
        if gen == self.gen:
            return False
        if self.sock is not None:
            self.sock.close(linger=0)
            self.reconnects += 1
        self.gen = gen
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.logged_in = False
        self.login_rid = self.send("login", self.pb.Login(name=self.name, agent="crash-test",
                                                          quiet=True, pull=pull))
        return True

    def frames(self):
        """Envelopes received within one poll slice; heartbeats as needed."""
        out = []
        if self.sock.poll(POLL_MS, zmq.POLLIN):
            while True:
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                env = self.pb.Envelope()
                env.ParseFromString(frame)
                out.append(env)
        if self.logged_in and time.monotonic() - self.last_tx >= CLIENT_HB_S:
            self.send("heartbeat", request_id=0)
        return out

    def on_login_reply(self, env):
        if env.reply.status != self.pb.STATUS_OK:
            raise AssertionError(f"login refused: {env.reply.status} {env.reply.detail}")
        self.logged_in = True


class Sender(Client):
    def __init__(self, world, ctx, pb, name, seed):
        super().__init__(world, ctx, pb, name)
        rng = random.Random(seed)
        # (message_id, text, recipients) per counter k
        self.msgs = [(f"{name}-{k}", f"{name}#{k}",
                      rng.choice([["r1"], ["r2"], ["r1", "r2"], ["r1", "r2"]]))
                     for k in range(PER_SENDER)]
        self.accepted = {}        # k -> {recipient: seq}
        self.duplicates = 0       # ACCEPTED replies with duplicate=true
        self.attempts = 0         # Send frames, retries included

    def send_msg(self, k, rids):
        mid, text, to = self.msgs[k]
        rid = self.send("send", self.pb.Send(to=to, text=text, durable=True, message_id=mid))
        rids[rid] = k
        self.attempts += 1

    def main(self):
        unanswered = []   # counters sent and not answered, in send order
        rids = {}         # request id on this connection -> counter
        next_k = 0
        tokens, t_tokens = 0.0, time.monotonic()  # paced phases: a token bucket
        while not self.world.aborted:
            if self.connect_if_restarted():
                rids = {}
            if not unanswered and next_k == PER_SENDER:
                self.world.bump("senders_done")
                return
            if self.logged_in:
                now = time.monotonic()
                tokens = min(WINDOW, tokens + (now - t_tokens) * RATE)
                t_tokens = now
                while (len(unanswered) < WINDOW and next_k < PER_SENDER
                       and (self.world.flood or tokens >= 1)):
                    tokens -= 1
                    unanswered.append(next_k)
                    self.send_msg(next_k, rids)
                    next_k += 1
            for env in self.frames():
                if env.WhichOneof("body") != "reply":
                    continue
                if env.request_id == self.login_rid:
                    self.on_login_reply(env)
                    for k in unanswered:  # the retries, same ids, in order
                        self.send_msg(k, rids)
                    continue
                k = rids.pop(env.request_id)
                reply = env.reply
                if reply.status != self.pb.STATUS_ACCEPTED:
                    raise AssertionError(f"{self.msgs[k][0]}: status {reply.status} "
                                         f"({reply.detail})")
                got = {r.name: r.seq for r in reply.recipients}
                if sorted(got) != sorted(self.msgs[k][2]) or not all(got.values()) or any(
                        r.status != self.pb.STATUS_ACCEPTED for r in reply.recipients):
                    raise AssertionError(f"{self.msgs[k][0]}: recipients {reply.recipients}")
                self.duplicates += reply.duplicate
                unanswered.remove(k)
                self.accepted[k] = got
                self.world.bump("accepted")


class Recipient(Client):
    def __init__(self, world, ctx, pb, name, lazy):
        super().__init__(world, ctx, pb, name)
        self.lazy = lazy          # ack in bursts, not at once
        # (sender, message_id, seq, text, redelivered, session generation, how)
        self.received = []

    def record(self, d, how):
        self.received.append((getattr(d, "from"), d.message_id, d.seq, d.text, d.redelivered,
                              self.gen, how))

    def main(self):
        acked = 0         # highest seq acknowledged on this connection
        seen = 0          # highest seq received on this connection
        fetch_rid = None
        last_ack = time.monotonic()
        while not self.world.aborted:
            if self.connect_if_restarted():
                acked = seen = 0
                fetch_rid = None
            for env in self.frames():
                body = env.WhichOneof("body")
                if body == "deliver":
                    self.record(env.deliver, "push")
                    seen = max(seen, env.deliver.seq)
                elif body == "reply" and env.request_id == self.login_rid:
                    self.on_login_reply(env)
                    self.world.bump("logged_in", self.name)
                elif body == "reply" and env.request_id == fetch_rid:
                    assert_status(self.pb, env.reply, "OK")
                    fetch_rid = None
                    for d in env.reply.messages:
                        self.record(d, "fetch")
                        seen = max(seen, d.seq)
                    if not env.reply.messages:
                        if env.reply.detail != "no messages":
                            raise AssertionError(f"empty Fetch detail {env.reply.detail!r}")
                        self.world.bump("drained", self.name)
                        return
                elif body == "reply":  # an Ack
                    if env.reply.status != self.pb.STATUS_OK:
                        raise AssertionError(f"ack refused: {env.reply.status} "
                                             f"{env.reply.detail}")
            if not self.logged_in:
                continue
            now = time.monotonic()
            if seen > acked and (not self.lazy or self.world.drain
                                 or now - last_ack >= LAZY_ACK_S):
                self.send("ack", self.pb.Ack(seq=seen))
                acked = seen
                last_ack = now
            if self.world.drain and fetch_rid is None:
                fetch_rid = self.send("fetch", self.pb.Fetch(max=1000))


def kill_points(rng, total):
    """KILLS (threshold of the ACCEPTED count, extra delay in seconds): the
    broker is killed that long after the threshold is reached. Thresholds
    are spread over the run, one of them right after the previous restart;
    the delays (0 to 15 ms) move the kill off the reply that crossed it."""
    quick = rng.randrange(1, KILLS)
    points, at = [], 0
    for i in range(KILLS):
        at += rng.randint(1, 3) if i == quick else rng.randint(total // 10, total // 6)
        points.append((at, round(rng.uniform(0, 0.015), 4)))
    assert points[-1][0] < total * 0.9
    return points


def check_recipient(name, rcpt, senders):
    """Checks one recipient's record; returns (delivered, duplicates dropped)."""
    sent = {}
    for s in senders:
        for k, (mid, text, to) in enumerate(s.msgs):
            sent[(s.name, mid)] = (k, text, name in to)
    seq_of, key_of = {}, {}
    first = []
    last_push = {}  # generation -> last non-redelivered pushed seq
    for frm, mid, seq, text, redelivered, gen, how in rcpt.received:
        key = (frm, mid)
        assert key in sent, f"{name}: got {key}, never sent"
        k, want_text, for_me = sent[key]
        assert for_me, f"{name}: got {key}, sent to others only"
        assert text == want_text, f"{name}: {key} has text {text!r}, sent {want_text!r}"
        assert seq_of.setdefault(key, seq) == seq, (
            f"{name}: {key} came as seq {seq_of[key]} and as seq {seq}: stored twice")
        assert key_of.setdefault(seq, key) == key, (
            f"{name}: seq {seq} came as {key_of[seq]} and as {key}")
        if how == "push" and not redelivered:
            assert seq > last_push.get(gen, 0), (
                f"{name}: session {gen} pushed seq {seq} after seq {last_push.get(gen)}")
            last_push[gen] = seq
    seen = set()
    for frm, mid, seq, *_ in rcpt.received:
        if (frm, mid) not in seen:
            seen.add((frm, mid))
            first.append((frm, mid, seq))
    # Every ACCEPTED message for this recipient, under the seq it was given.
    for s in senders:
        for k, got in s.accepted.items():
            if name in got:
                key = (s.name, s.msgs[k][0])
                assert key in seq_of, f"{name}: ACCEPTED {key} (seq {got[name]}) never delivered"
                assert seq_of[key] == got[name], (
                    f"{name}: {key} ACCEPTED as seq {got[name]}, delivered as {seq_of[key]}")
    # Deduplicated: seqs strictly increasing, each sender in send order.
    seqs = [seq for _, _, seq in first]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), f"{name}: seqs out of order: {seqs}"
    for s in senders:
        ks = [sent[(frm, mid)][0] for frm, mid, _ in first if frm == s.name]
        assert ks == sorted(ks), f"{name}: {s.name}'s messages out of send order: {ks}"
        want = [k for k, (_, _, to) in enumerate(s.msgs) if name in to]
        assert ks == want, f"{name}: {s.name}: expected {len(want)} messages, got {len(ks)}"
    return len(rcpt.received), len(rcpt.received) - len(first)


def test_crash_recovery(broker, pb, tmp_path):
    rng = random.Random(SEED)
    data = tmp_path / "data"
    total = len(SENDERS) * PER_SENDER
    points = kill_points(rng, total)
    floods = [i % 2 == 0 for i in range(KILLS)]  # before each kill: 3 floods, 2 paced
    rng.shuffle(floods)
    floods.append(False)  # the clean run is paced: redelivery has time to happen
    t_start = time.monotonic()
    print(f"crash test seed={SEED}: kill points {points}, flood phases {floods}")

    def start():
        return broker("--data", str(data), *BROKER_FLAGS, heartbeat_ms=HEARTBEAT_MS,
                      liveness=LIVENESS)

    world = World()
    ctx = zmq.Context()
    br = start()
    world.restart(br.endpoint)
    recipients = [Recipient(world, ctx, pb, n, lazy=(n == "r2")) for n in RECIPIENTS]
    senders = [Sender(world, ctx, pb, n, rng.randrange(2**32)) for n in SENDERS]
    threads = recipients + senders
    kills = 0
    try:
        for r in recipients:
            r.start()
        # The recipients are known users before anything is sent to them.
        world.wait_for(lambda: len(world.logged_in) == len(RECIPIENTS), PROGRESS_TIMEOUT,
                       "recipient logins")
        for s in senders:
            s.start()
        for (point, delay), flood in zip(points, floods):
            world.flood = flood
            world.wait_for(lambda: world.accepted >= point, PROGRESS_TIMEOUT,
                           f"{point} ACCEPTED (kill {kills + 1})")
            time.sleep(delay)  # not a synchronisation: picks the moment of the crash
            br.kill()
            kills += 1
            br = start()
            world.restart(br.endpoint)
        world.flood = floods[-1]
        # The clean run: senders finish, then the recipients drain.
        world.wait_for(lambda: world.senders_done == len(SENDERS), PROGRESS_TIMEOUT,
                       "senders to finish")
        with world.cond:
            world.drain = True
        world.wait_for(lambda: len(world.drained) == len(RECIPIENTS), PROGRESS_TIMEOUT,
                       "recipients to drain")
        assert not any(t.is_alive() for t in senders), "a sender did not stop"
        # The broker agrees that nothing is left.
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(br.endpoint)
        sock.send(pb.Envelope(version=1, request_id=7, stats=pb.Stats()).SerializeToString())
        assert sock.poll(5000, zmq.POLLIN), "no Stats reply"
        env = pb.Envelope()
        env.ParseFromString(sock.recv())
        assert_status(pb, env.reply, "OK")
        assert env.reply.stats.stored_messages == 0
    finally:
        with world.cond:
            world.stop = True
        for t in threads:
            t.join(timeout=5)
        ctx.destroy(linger=0)
    assert not world.errors, "; ".join(world.errors)
    assert not any(t.is_alive() for t in threads)

    for s in senders:
        assert sorted(s.accepted) == list(range(PER_SENDER)), f"{s.name}: not all ACCEPTED"
    delivered = dropped = 0
    for r in recipients:
        n, d = check_recipient(r.name, r, senders)
        delivered += n
        dropped += d
    entries = sum(len(to) for s in senders for _, _, to in s.msgs)
    elapsed = time.monotonic() - t_start
    print(f"crash test seed={SEED}: sent {total} messages ({entries} queue entries) in "
          f"{sum(s.attempts for s in senders)} Sends, accepted {total} "
          f"({sum(s.duplicates for s in senders)} as duplicates of a lost reply), "
          f"delivered {delivered}, duplicates dropped {dropped}, "
          f"redelivered-flagged {sum(x[4] for r in recipients for x in r.received)}, "
          f"kills {kills} at {points}, flood phases {floods}, reconnects "
          f"{sum(t.reconnects for t in threads)}, {elapsed:.1f}s")
    assert kills == KILLS
