"""Abusive clients cannot hurt the others (issue #7).

Each test plays one kind of abuse against a real broker and checks the
exact refusal the abuser gets, and that well-behaved clients keep being
served:

  - floods: one client pipelining requests as fast as it can; the others'
    round-trip latency stays bounded (fair reading), and with --rate the
    flooder gets RATE_LIMITED;
  - slow consumers: a client that stops reading; live messages to it are
    FLOODED, durable ones stay queued, the broker's memory stays bounded;
  - connection churn: thousands of connect/login/disconnect cycles leave no
    session behind and bounded memory;
  - budgets and limits: --max-sessions, --store-max, the per-session store
    budget, the per-connection reply budget, user-log pages and capped
    Fetch/History replies.

Loads are bounded in count and time. Memory is VmRSS of the broker process
(/proc/PID/status); the figures are printed (pytest -s shows them).
"""

import itertools
import json
import os
import subprocess
import threading
import time

import pytest
import zmq

from conftest import (BROKER_BIN, REQUEST_TIMEOUT, TIMEOUT_SCALE, assert_status, run_cli,
                      status_name)

_names = itertools.count(1)


def fresh(prefix="u"):
    return f"{prefix}{next(_names)}"


def rss_kib(broker):
    with open(f"/proc/{broker.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def rss_slack_kib(broker):
    """Extra allowance on a memory bound for an instrumented broker, whose
    VmRSS is mostly the instrumentation's: valgrind keeps 20 MB of freed
    blocks (--freelist-vol) plus its shadow memory, ASan its quarantine
    (limited to 16 MB by small_quarantine below) and redzones. 0 for a
    plain build, where the bounds below apply as they are."""
    with open(f"/proc/{broker.proc.pid}/maps") as f:
        maps = f.read()
    return 64 * 1024 if ("vgpreload" in maps or "libasan" in maps) else 0


@pytest.fixture
def small_quarantine(monkeypatch):
    """Brokers started by the test keep at most 16 MB of freed memory in
    ASan's quarantine (default 256 MB), and glibc's malloc keeps one arena
    for all threads (MALLOC_ARENA_MAX=1: the router, store and monitoring
    threads would each get one, whose pages come and go with timing), so
    that VmRSS follows live memory."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") + "quarantine_size_mb=16")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")


def stats(client):
    reply = client.request("stats")
    assert_status(client.pb, reply, "OK")
    return reply.stats


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def pipeline(client, envs, timeout=REQUEST_TIMEOUT * 4):
    """Sends every envelope, then collects one Reply per request id."""
    ids = [client.send_env(e) for e in envs]
    return [client.recv_reply(rid, timeout).reply for rid in ids]


# ---------------------------------------------------------------------------
# Floods

class Flooder(threading.Thread):
    """A raw DEALER that logs in and then sends one pre-built frame as fast
    as it can, without reading, for at most `seconds` or `count` frames."""

    def __init__(self, hub, endpoint, frame, seconds, count):
        super().__init__(daemon=True)
        self.sock = hub.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.connect(endpoint)
        self.frame, self.seconds, self.count = frame, seconds, count
        self.sent = 0
        self.started = threading.Event()
        hub.clients.append(self)  # closed with the hub, also when a test fails

    def maybe_heartbeat(self):
        pass  # the flood itself keeps the session alive

    def close(self):
        self.sock.close(linger=0)

    def run(self):
        self.started.set()
        deadline = time.monotonic() + self.seconds
        while self.sent < self.count and time.monotonic() < deadline:
            try:
                self.sock.send(self.frame, zmq.DONTWAIT)
                self.sent += 1
            except zmq.Again:
                self.sock.poll(5, zmq.POLLOUT)

    def replies(self, pb, want=None, timeout=REQUEST_TIMEOUT):
        """Reads the Replies now waiting (up to `want`); their statuses."""
        out = []
        deadline = time.monotonic() + timeout
        while (want is None or len(out) < want) and time.monotonic() < deadline:
            if not self.sock.poll(200 if want is None else 50):
                if want is None:
                    break
                continue
            env = pb.Envelope()
            env.ParseFromString(self.sock.recv())
            if env.WhichOneof("body") == "reply":
                out.append(env.reply)
        return out


def flood_login(hub, flooder, name):
    pb = hub.pb
    env = pb.Envelope(version=1, request_id=1)
    env.login.name = name
    env.login.quiet = True
    flooder.sock.send(env.SerializeToString())
    reply = flooder.replies(pb, want=1)
    assert reply, "flooder got no login reply"
    assert_status(pb, reply[0], "OK")


def measure_round_trips(clients, rounds, pace=0.0):
    """Each client sends Send requests to the next one, one at a time, a
    round every `pace` seconds at most; the latency of every request/reply
    round trip, in seconds."""
    lat = []
    for i in range(rounds):
        if pace:
            clients[0].hub.wait(pace)
        for k, c in enumerate(clients):
            peer = clients[(k + 1) % len(clients)]
            t0 = time.monotonic()
            reply = c.send_text(to=[peer.name], text=f"ping {i}")
            lat.append(time.monotonic() - t0)
            assert_status(c.pb, reply, "OK")
            assert reply.recipients[0].status == c.pb.STATUS_DELIVERED
        for c in clients:
            c.deliveries()
    return lat


def run_flood(broker_obj, hub, flood_env, seconds=3.0, pace=0.0):
    a = hub.logged_in(broker_obj.endpoint, fresh("calm"), quiet=True)
    b = hub.logged_in(broker_obj.endpoint, fresh("calm"), quiet=True)
    quiet_lat = measure_round_trips([a, b], 20, pace)
    before = stats(a).frames_in
    f = Flooder(hub, broker_obj.endpoint, flood_env.SerializeToString(), seconds, 2_000_000)
    f.t0 = time.monotonic()  # before its session exists: its bucket is younger
    flood_login(hub, f, fresh("flood"))
    f.start()
    f.started.wait()
    lat = []
    deadline = time.monotonic() + seconds * 0.8
    while time.monotonic() < deadline:
        lat += measure_round_trips([a, b], 5, pace)
    f.join(timeout=seconds + 10)
    assert not f.is_alive()
    during = stats(a).frames_in - before
    p50, p99, worst = percentile(lat, 0.5), percentile(lat, 0.99), max(lat)
    print(f"\nflood: flooder sent {f.sent} frames in {seconds}s, broker read {during} frames; "
          f"others: {len(lat)} round trips, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
          f"max {worst * 1e3:.1f} ms (quiet p50 {percentile(quiet_lat, 0.5) * 1e3:.1f} ms)")
    assert f.sent >= 10000, f"the flooder only managed {f.sent} frames"
    assert during >= 5000, f"the broker read only {during} frames during the flood"
    # Not starved: every calm round trip was answered within the request
    # bound (send_text waits REQUEST_TIMEOUT at most) and they kept making
    # progress through the flood. The latencies are printed, not asserted:
    # ctest holds no timing assertions (bench/ measures them).
    assert len(lat) >= 20, f"only {len(lat)} calm round trips during the flood"
    return f, a, b


def test_flood_does_not_starve_others(broker, hub, pb):
    """Without any limit configured, a client pipelining Sends as fast as it
    can does not starve two others: the broker reads connections in turn,
    so each of their round trips is answered within the request bound and
    they keep making progress (latencies printed, not asserted)."""
    br = broker()
    env = pb.Envelope(version=1, request_id=7)
    env.send.to.append("nobody-here")
    env.send.text = "x" * 100
    f, a, b = run_flood(br, hub, env)
    # The flooder's own replies: UNKNOWN_USER recipients, status OK.
    got = f.replies(pb)
    assert got and all(r.status == pb.STATUS_OK for r in got)
    f.sock.close(linger=0)


def test_flood_rate_limited(broker, hub, pb):
    """With --rate the flooder's excess requests are refused RATE_LIMITED,
    while the calm clients (50 requests/s each, under the rate) never are."""
    br = broker("--rate", 200, "--burst", 50)
    env = pb.Envelope(version=1, request_id=7)
    env.stats.SetInParent()
    f, a, b = run_flood(br, hub, env, pace=0.02)
    got = f.replies(pb)
    elapsed = time.monotonic() - f.t0  # the broker served it within this time
    limited = [r for r in got if r.status == pb.STATUS_RATE_LIMITED]
    ok = [r for r in got if r.status == pb.STATUS_OK]
    print(f"flooder replies read: {len(got)}: {len(ok)} OK, {len(limited)} RATE_LIMITED "
          f"in {elapsed:.1f}s")
    assert limited, "no RATE_LIMITED reply for the flooder"
    assert "requests/s" in limited[0].detail
    assert len(ok) <= 50 + 200 * elapsed, "more requests served than burst + rate x time"
    f.sock.close(linger=0)


def test_rate_limit_exact(broker, hub, pb):
    """Token bucket: a burst of `burst` requests passes, the next is
    RATE_LIMITED with its request_id echoed; Heartbeat, Ack and Logout are
    never limited; after 1/rate s a request passes again. One token per
    second, so a slow (instrumented) broker cannot refill the bucket
    between the requests of a burst by much."""
    br = broker("--rate", 1, "--burst", 5)
    name = fresh("rl")
    c = hub.logged_in(br.endpoint, name, quiet=True)
    envs = [c.envelope("stats") for _ in range(12)]
    replies = pipeline(c, envs)
    statuses = [status_name(pb, r.status) for r in replies]
    # 5 of burst (the login used one token, maybe refilled meanwhile: 4 to 6).
    assert statuses[:4] == ["OK"] * 4, statuses
    assert statuses[-6:] == ["RATE_LIMITED"] * 6, statuses
    hub.wait(1.2)  # the property is about time: 1/s -> at least one token
    assert_status(pb, c.request("stats"), "OK")
    replies = pipeline(c, [c.envelope("stats") for _ in range(3)])
    assert "RATE_LIMITED" in [status_name(pb, r.status) for r in replies]
    c.logout()  # never limited
    # Without a session the rate does not apply (Who/Stats need none).
    assert_status(pb, c.request("stats"), "OK")
    # The bucket is the user's: logging in again does not refill it, and
    # the Login itself needs a token.
    assert_status(pb, c.try_login(name), "RATE_LIMITED")
    hub.wait(1.2)  # the property is about time
    assert_status(pb, c.try_login(name), "OK")


# ---------------------------------------------------------------------------
# Slow consumers

def test_slow_consumer(small_quarantine, broker, hub, pb, tmp_path):
    """A client that logs in and never reads: live messages to it come back
    FLOODED once its queue at the broker holds --sndhwm frames, the broker
    keeps serving others at once and its memory stays bounded; durable
    messages to it are ACCEPTED and stay queued until a reading session of
    the same user takes them."""
    # --push-window below --sndhwm: durable pushes in flight then never fill
    # a reading client's queue, so its replies always find room (with the
    # default window of 1000 over a queue of 50 frames an Ack's reply was
    # dropped once, under valgrind; OPERATIONS.md "Slow readers").
    br = broker("--data", tmp_path / "data", "--sndhwm", 50, "--push-window", 20)
    slow = hub.client(br.endpoint)
    slow.sock.setsockopt(zmq.RCVHWM, 10)
    slow.sock.setsockopt(zmq.RCVBUF, 16384)
    slow.login(fresh("slow"), quiet=True)
    sender = hub.logged_in(br.endpoint, fresh("fast"), quiet=True)
    watcher = hub.logged_in(br.endpoint, fresh("watch"), quiet=True)
    text = "y" * 16000
    rss0 = rss_kib(br)
    fates = {}
    worst = 0.0
    # Pipelined 25 at a time: --sndhwm applies to every connection, so the
    # sender's own replies must stay below 50 queued.
    for batch in range(160):  # 4000 x 16 kB = 64 MB offered
        envs = [sender.envelope("send", pb.Send(to=[slow.name], text=text)) for _ in range(25)]
        for r in pipeline(sender, envs):
            assert_status(pb, r, "OK")
            st = status_name(pb, r.recipients[0].status)
            fates[st] = fates.get(st, 0) + 1
        t0 = time.monotonic()
        assert_status(pb, watcher.request("stats"), "OK")
        worst = max(worst, time.monotonic() - t0)
    rss1 = rss_kib(br)
    print(f"\nslow consumer: live fates {fates}; broker VmRSS {rss0} -> {rss1} KiB "
          f"(+{rss1 - rss0}) for 64 MB offered; slowest stats round trip {worst * 1e3:.1f} ms")
    assert fates.get("FLOODED", 0) >= 3000, fates
    assert set(fates) <= {"DELIVERED", "FLOODED"}, fates
    assert rss1 - rss0 < 24 * 1024 + rss_slack_kib(br), f"broker grew by {rss1 - rss0} KiB"
    assert worst < REQUEST_TIMEOUT  # answered within the bound, not starved

    # Durable: accepted and kept, whatever the client's reading.
    n = 300
    envs = [sender.envelope("send", pb.Send(to=[slow.name], text=f"d{i} " + "z" * 2000,
                                            durable=True, message_id=f"m{i}"))
            for i in range(n)]
    replies = []
    for k in range(0, n, 25):
        replies += pipeline(sender, envs[k:k + 25])
    assert [status_name(pb, r.status) for r in replies] == ["ACCEPTED"] * n
    assert stats(watcher).stored_messages >= n
    # The slow session is replaced by a reading one of the same user.
    name = slow.name
    slow.close()
    reader = hub.client(br.endpoint)
    deadline = time.monotonic() + 5 * TIMEOUT_SCALE
    while reader.try_login(name, quiet=True).status == pb.STATUS_NAME_TAKEN:
        assert time.monotonic() < deadline, "the slow session never ended"
        hub.wait(0.1)
    seqs = set()
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while len(seqs) < n and time.monotonic() < deadline:
        d = reader.recv_body("deliver", timeout=5 * TIMEOUT_SCALE, where=lambda d: d.durable)
        assert d.text.startswith(f"d{d.seq - 1} ")
        seqs.add(d.seq)
        if len(seqs) % 10 == 0:  # well inside the window of 20
            assert_status(pb, reader.request("ack", pb.Ack(seq=max(seqs))), "OK")
    assert seqs == set(range(1, n + 1))


def test_push_window_must_be_below_sndhwm(broker, tmp_path):
    """With a store, a --push-window that is not below --sndhwm is refused
    at start (exit status 2, both options named): that many pushes waiting
    for acks would fill a reading client's queue and its replies would
    find no room. Below it, or without a store, the broker starts."""
    stores = (["--data", str(tmp_path / "d1")], ["--store", "redis://127.0.0.1:1"])
    for store, (window, hwm) in itertools.product(stores, ((50, 50), (1000, 50), (60, 50))):
        args = [BROKER_BIN, "--bind", "tcp://127.0.0.1:*", *store, "--sndhwm", str(hwm)]
        if window != 1000:  # 1000: the default
            args += ["--push-window", str(window)]
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=10 * TIMEOUT_SCALE)
        err = r.stderr.decode()
        assert r.returncode == 2, (args, r.returncode, err)
        assert f"--push-window {window} must be below --sndhwm {hwm}" in err, err
        assert not r.stdout, r.stdout  # never listened
    assert broker("--data", tmp_path / "d3", "--push-window", 49, "--sndhwm", 50).running()
    assert broker("--sndhwm", 50).running()  # live-only: no pushes to wait for acks


def test_reply_to_a_full_queue_is_counted_and_logged(broker, hub, pb, cli):
    """A reply that finds its connection's queue full (--sndhwm frames: the
    client is not reading) is dropped, as PROTOCOL.md §4.2 says, but never
    silently: BrokerStats replies_dropped and causeway_replies_dropped_total
    count it and the log says so at WARN. Every request is accounted for:
    the replies the client gets plus those counted dropped are exactly the
    requests it sent."""
    from test_metrics import metrics_url, scrape, value

    br = broker("--sndhwm", 4, "--metrics", "127.0.0.1:0")
    url = metrics_url(br)
    watcher = hub.logged_in(br.endpoint, fresh("watch"), quiet=True)
    mute = hub.client(br.endpoint, sockopts=((zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)))
    before = stats(watcher)
    assert before.replies_dropped == 0
    # Requests without a session: each is answered NOT_LOGGED_IN (a small
    # Reply), and the client reads none of them while they arrive.
    n = 20000
    rids = set()
    for _ in range(n):
        rids.add(mute.send_env(mute.envelope("send", pb.Send(to=["nobody"], text="x"))))
    def refused_not_logged_in():
        return sum(c.count for c in stats(watcher).refusals
                   if c.status == pb.STATUS_NOT_LOGGED_IN)
    base = sum(c.count for c in before.refusals if c.status == pb.STATUS_NOT_LOGGED_IN)
    deadline = time.monotonic() + 30 * TIMEOUT_SCALE
    while refused_not_logged_in() < base + n:  # each counted as it is answered
        assert time.monotonic() < deadline, "the broker did not answer every request"
        hub.wait(0.05)  # polling the broker's counters; there is no event to wait on
    assert refused_not_logged_in() == base + n
    # Now read: the replies that were queued, then one more request's reply,
    # which comes after every earlier one on this connection.
    last = mute.request("who", timeout=REQUEST_TIMEOUT)
    assert last is not None
    got = [e for _, e in mute.inbox if e.WhichOneof("body") == "reply" and e.request_id in rids]
    assert all(e.reply.status == pb.STATUS_NOT_LOGGED_IN for e in got)
    dropped = stats(watcher).replies_dropped
    print(f"\nfull queue: {n} requests, {len(got)} replies read, {dropped} counted dropped")
    assert dropped > 0
    assert len(got) + dropped == n
    assert "dropped: its queue holds --sndhwm 4 frames" in br.log()
    # The CLI shows the count too (libcauseway's cw_stats_t.replies_dropped).
    p = run_cli(cli, "stats", "-e", br.endpoint, "--json")
    assert p.proc.returncode == 0, p.describe()
    (st,) = [json.loads(line) for line in p.lines if line.startswith("{")]
    assert st["replies_dropped"] == dropped
    p = run_cli(cli, "stats", "-e", br.endpoint)
    assert p.proc.returncode == 0, p.describe()
    assert any(line.split() == ["replies_dropped", str(dropped)] for line in p.lines), p.lines
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while value(scrape(url)[0], "causeway_replies_dropped_total") != dropped:
        assert time.monotonic() < deadline, "the metrics never showed the count"
        hub.wait(0.1)  # the router publishes a snapshot every 200 ms


# ---------------------------------------------------------------------------
# Connection churn

def churn(hub, endpoint, cycles, prefix):
    """connect, login, then logout (even cycles) or just drop (odd ones)."""
    pb = hub.pb
    for i in range(cycles):
        s = hub.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        env = pb.Envelope(version=1, request_id=1)
        env.login.name = f"{prefix}{i}"
        env.login.quiet = True
        s.send(env.SerializeToString())
        assert s.poll(int(REQUEST_TIMEOUT * 1000)), f"no login reply in cycle {i}"
        r = pb.Envelope()
        r.ParseFromString(s.recv())
        assert r.reply.status == pb.STATUS_OK, f"cycle {i}: {r.reply.detail}"
        if i % 2 == 0:
            env = pb.Envelope(version=1, request_id=2)
            env.logout.SetInParent()
            s.send(env.SerializeToString())
            assert s.poll(int(REQUEST_TIMEOUT * 1000)), f"no logout reply in cycle {i}"
            r.ParseFromString(s.recv())
            assert r.reply.status == pb.STATUS_OK
        s.close(linger=0)
        if i % 50 == 0:
            hub.pump()


def wait_sessions(hub, watcher, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        n = stats(watcher).sessions
        if n == want:
            return
        assert time.monotonic() < deadline, f"{n} sessions left, expected {want}"
        hub.wait(0.1)


def test_connection_churn(small_quarantine, broker, hub, pb):
    """Two rounds of 2500 connect/login/(logout or drop) cycles after a
    warm-up: sessions come back to the baseline after each (dropped ones
    expire), and the second round grows the broker by less than 4 MiB. The
    first round takes the allocator to its working size (how many dropped
    sessions wait for expiry at once depends on the machine's speed, and
    freed memory is not given back), so the second one measures what stays:
    the user log keeps every name and its state (measured: 0.07-2.9 MiB for
    2500 names; the spread is how many dropped connections, 27 KiB of libzmq
    state each, waited for expiry at once), and a leak of 1.5 KiB or more
    per cycle would break the bound (the first round alone grew 1-8 MiB
    here, which is why a single round made a flaky test)."""
    br = broker()
    watcher = hub.logged_in(br.endpoint, fresh("watch"), quiet=True)
    base = stats(watcher).sessions
    churn(hub, br.endpoint, 300, "warm")
    wait_sessions(hub, watcher, base, 5 * TIMEOUT_SCALE)
    cycles = 2500
    rss = [rss_kib(br)]
    for rnd in ("a", "b"):
        t0 = time.monotonic()
        churn(hub, br.endpoint, cycles, f"churn{rnd}")
        took = time.monotonic() - t0
        wait_sessions(hub, watcher, base, 5 * TIMEOUT_SCALE)
        rss.append(rss_kib(br))
        st = stats(watcher)
        print(f"\nchurn round {rnd}: {cycles} cycles in {took:.1f}s; sessions {st.sessions} "
              f"(baseline {base}); known users {st.known_users}; broker VmRSS {rss[-2]} -> "
              f"{rss[-1]} KiB (+{rss[-1] - rss[-2]})")
        assert st.sessions == base
    assert st.expired_sessions >= (300 + 2 * cycles) // 2
    assert rss[2] - rss[1] < 4 * 1024 + rss_slack_kib(br), (
        f"broker grew by {rss[2] - rss[1]} KiB over the second {cycles} cycles")


# ---------------------------------------------------------------------------
# Session and store limits

def test_max_sessions_at_the_edge(broker, hub, pb):
    """--max-sessions: the login past the limit gets TOO_MANY_SESSIONS with
    a detail; a session that ends (logout, or a dropped connection that
    expires) frees its place."""
    br = broker("--max-sessions", 3)
    cs = [hub.logged_in(br.endpoint, fresh("s"), quiet=True) for _ in range(3)]
    extra = hub.client(br.endpoint)
    r = extra.try_login(fresh("s"))
    assert_status(pb, r, "TOO_MANY_SESSIONS")
    assert "limit" in r.detail
    assert_status(pb, extra.request("stats"), "OK")  # still served without a session
    cs[0].logout()
    extra.login(fresh("s"))
    assert_status(pb, hub.client(br.endpoint).try_login(fresh("s")), "TOO_MANY_SESSIONS")
    cs[1].close()  # dropped: expires after heartbeat x liveness
    late = hub.client(br.endpoint)
    deadline = time.monotonic() + 5 * TIMEOUT_SCALE
    while late.try_login(fresh("s")).status == pb.STATUS_TOO_MANY_SESSIONS:
        assert time.monotonic() < deadline
        hub.wait(0.1)
    assert stats(late).sessions == 3


def test_store_max(broker, hub, pb, tmp_path):
    """--store-max bounds the messages waiting in the whole store: a durable
    Send that would pass it gets STORE_FULL (nothing stored, also not for
    its other recipients); acknowledging makes room; the store is intact
    after a restart."""
    data = tmp_path / "data"
    br = broker("--data", data, "--store-max", 5)
    a = hub.logged_in(br.endpoint, "alice", quiet=True)
    b = hub.logged_in(br.endpoint, "bob", quiet=True, pull=True)
    hub.logged_in(br.endpoint, "carol", quiet=True, pull=True)  # carol is a known user
    for i in range(4):
        assert_status(pb, a.send_text(to=["bob"], text=f"m{i}", durable=True), "ACCEPTED")
    r = a.send_text(to=["bob", "carol"], text="two entries", durable=True, message_id="x2")
    assert_status(pb, r, "STORE_FULL")
    assert "store-max 5" in r.detail
    assert_status(pb, a.send_text(to=["carol"], text="m4", durable=True), "ACCEPTED")
    r = a.send_text(to=["bob"], text="m5", durable=True)
    assert_status(pb, r, "STORE_FULL")
    assert stats(a).stored_messages == 5
    fetched = b.request("fetch", pb.Fetch(max=10))
    assert [m.text for m in fetched.messages] == ["m0", "m1", "m2", "m3"]
    assert_status(pb, b.request("ack", pb.Ack(seq=2)), "OK")
    assert_status(pb, a.send_text(to=["bob", "carol"], text="two entries", durable=True,
                                  message_id="x2"), "ACCEPTED")
    assert_status(pb, a.send_text(to=["bob"], text="m6", durable=True), "STORE_FULL")
    rc, _ = br.terminate()
    assert rc == 0
    br2 = broker("--data", data, "--store-max", 5)
    b2 = hub.logged_in(br2.endpoint, "bob", quiet=True, pull=True)
    fetched = b2.request("fetch", pb.Fetch(max=10))
    assert [m.text for m in fetched.messages] == ["m2", "m3", "two entries"]
    assert stats(b2).stored_messages == 5


def test_store_budget_per_session(broker, hub, pb, tmp_path):
    """One session streaming large durable sends without waiting hits its
    store budget (FLOODED, nothing queued) while another session's durable
    sends, interleaved with the stream, are all stored."""
    br = broker("--data", tmp_path / "data", "--store-inflight", 4,
                "--store-inflight-bytes", 65536)
    hog = hub.logged_in(br.endpoint, fresh("hog"), quiet=True)
    calm = hub.logged_in(br.endpoint, fresh("calm"), quiet=True)
    sink = hub.logged_in(br.endpoint, fresh("sink"), quiet=True, pull=True)
    big = "b" * 30000
    hog_ids = [hog.send_env(hog.envelope("send", pb.Send(to=[sink.name], text=big, durable=True,
                                                         message_id=f"h{i}")))
               for i in range(200)]
    calm_statuses = []
    for i in range(20):
        r = calm.send_text(to=[sink.name], text=f"calm {i}", durable=True, message_id=f"c{i}")
        calm_statuses.append(status_name(pb, r.status))
    hog_replies = [hog.recv_reply(rid, REQUEST_TIMEOUT * 4).reply for rid in hog_ids]
    hog_statuses = [status_name(pb, r.status) for r in hog_replies]
    counts = {s: hog_statuses.count(s) for s in set(hog_statuses)}
    print(f"\nstore budget: hog {counts}; calm {calm_statuses.count('ACCEPTED')}/20 ACCEPTED")
    assert calm_statuses == ["ACCEPTED"] * 20
    assert set(counts) == {"ACCEPTED", "FLOODED"}, counts
    flooded = next(r for r in hog_replies if r.status == pb.STATUS_FLOODED)
    assert "store-inflight" in flooded.detail and not flooded.recipients
    # What was refused was not stored: the queue holds exactly the accepted.
    assert stats(calm).stored_messages == counts["ACCEPTED"] + 20
    # Once answered, the budget is free again.
    assert_status(pb, hog.send_text(to=[sink.name], text=big, durable=True), "ACCEPTED")


# ---------------------------------------------------------------------------
# Reply sizes

def test_user_log_pages(broker, hub, pb):
    """--page-users: Login and Who replies carry at most a page of the user
    log and set `truncated`; Who.after pages through it."""
    br = broker("--page-users", 3)
    names = sorted(f"p{i}" for i in range(7))
    for n in names:
        hub.logged_in(br.endpoint, n, quiet=True)
    c = hub.client(br.endpoint)
    r = c.login("p9")
    assert [u.name for u in r.users] == names[:3] and r.truncated
    seen, after = [], ""
    while True:
        r = c.request("who", pb.Who(after=after))
        assert_status(pb, r, "OK")
        assert len(r.users) <= 3
        seen += [u.name for u in r.users]
        if not r.truncated:
            break
        after = r.users[-1].name
    assert seen == names + ["p9"]
    r = c.request("who", pb.Who(after="p6"))
    assert [u.name for u in r.users] == ["p9"] and not r.truncated
    r = c.request("who", pb.Who(after="zzz"))
    assert list(r.users) == [] and not r.truncated


def test_fetch_and_history_capped(broker, hub, pb, tmp_path):
    """--max-reply bounds the bytes of messages in one Fetch or History
    reply (always at least one message): Fetch keeps the oldest and the rest
    stay queued, History keeps the newest; both set `truncated`."""
    br = broker("--data", tmp_path / "data", "--max-reply", 4096)
    a = hub.logged_in(br.endpoint, fresh("a"), quiet=True)
    b = hub.logged_in(br.endpoint, fresh("b"), quiet=True, pull=True)
    for i in range(10):
        r = a.send_text(to=[b.name], text=f"{i} " + "k" * 1000, durable=True)
        assert_status(pb, r, "ACCEPTED")
    got = []
    while len(got) < 10:
        r = b.request("fetch", pb.Fetch(max=100))
        assert_status(pb, r, "OK")
        assert 1 <= len(r.messages) <= 4
        assert r.truncated == (len(got) + len(r.messages) < 10)
        got += [m.seq for m in r.messages]
        assert_status(pb, b.request("ack", pb.Ack(seq=got[-1])), "OK")
    assert got == list(range(1, 11))
    r = b.request("history", pb.History(last=10))
    assert r.truncated and 1 <= len(r.messages) <= 4
    assert r.messages[-1].seq == 10
    assert [m.seq for m in r.messages] == list(range(11 - len(r.messages), 11))
    # A single message larger than the cap still comes, alone.
    assert_status(pb, a.send_text(to=[b.name], text="L" * 8000, durable=True), "ACCEPTED")
    r = b.request("fetch", pb.Fetch(max=100))
    assert len(r.messages) == 1 and r.messages[0].text == "L" * 8000 and not r.truncated


def test_reply_budget(small_quarantine, broker, hub, pb):
    """A connection pipelining Who requests (bulky replies) without reading
    gets FLOODED once --reply-budget bytes of replies wait for it in the
    broker; every request is still answered exactly once; after reading,
    it is served again."""
    br = broker("--reply-budget", 65536)
    for i in range(300):
        hub.logged_in(br.endpoint, f"member{i:04d}", quiet=True)
    c = hub.client(br.endpoint)
    c.sock.setsockopt(zmq.RCVHWM, 1)
    c.sock.setsockopt(zmq.RCVBUF, 4096)
    size = len(c.request_env(c.envelope("who")).SerializeToString())
    assert size > 4096
    watcher = hub.client(br.endpoint)
    before = stats(watcher).frames_in
    rss0 = rss_kib(br)
    n = 3000  # about 3000 x size bytes if nothing bounded it
    ids = [c.send_env(c.envelope("who")) for _ in range(n)]
    # Wait until the broker has read (and so answered) all of them, while
    # nobody reads: frames_in counts them and the watcher's own Stats.
    asked = 0
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while True:
        asked += 1
        if stats(watcher).frames_in - before >= n + asked:
            break
        assert time.monotonic() < deadline, "the broker did not read the Who requests"
    rss1 = rss_kib(br)
    statuses = [c.recv_reply(rid, REQUEST_TIMEOUT * 4).reply.status for rid in ids]
    ok, flooded = statuses.count(pb.STATUS_OK), statuses.count(pb.STATUS_FLOODED)
    print(f"\nreply budget: who reply {size} B x {n} pipelined = {size * n // 1024} KiB offered; "
          f"{ok} OK, {flooded} FLOODED; broker VmRSS {rss0} -> {rss1} KiB (+{rss1 - rss0})")
    assert ok + flooded == n
    assert flooded > 0 and ok > 0
    assert rss1 - rss0 < 8 * 1024 + rss_slack_kib(br)
    r = c.request("who")
    assert_status(pb, r, "OK")


def test_reply_budget_counts_replies_still_owed(broker, hub, pb, tmp_path):
    """Fetch replies leave only after the store answers, so a pipelined burst
    of Fetch requests would all pass a check of unread bytes alone. The
    budget also counts what pending Fetches may still weigh (--max-reply
    each): most of the burst is FLOODED although no reply was sent when
    it arrived, and every request is answered exactly once."""
    budget, max_reply = 65536, 4096
    br = broker("--data", str(tmp_path / "data"), "--reply-budget", budget,
                "--max-reply", max_reply)
    # bob reads slowly: his side holds one frame and a small socket buffer,
    # so what he does not read stays at the broker (and counts).
    bob = hub.client(br.endpoint, sockopts=[(zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)])
    bob.login("bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(8):   # bob's queue: each Fetch reply is about max_reply
        msg = pb.Send(to=["bob"], text="x" * 1000, durable=True, message_id=f"m{i}")
        assert_status(pb, alice.request("send", msg), "ACCEPTED")
    bob.deliveries()
    n = 200
    ids = [bob.send_env(bob.envelope("fetch", pb.Fetch(max=100))) for _ in range(n)]
    statuses = [bob.recv_reply(rid, REQUEST_TIMEOUT * 4).reply.status for rid in ids]
    ok, flooded = statuses.count(pb.STATUS_OK), statuses.count(pb.STATUS_FLOODED)
    print(f"\nowed replies: {n} pipelined Fetch, {ok} OK, {flooded} FLOODED")
    assert ok + flooded == n
    # At most budget / max_reply (16) Fetches may be owed or unread in the
    # broker at once; replies the operating system has taken meanwhile no
    # longer count (its socket buffers vary with load), hence the slack.
    # Without the owed count all 200 pass.
    assert flooded > 0 and ok <= n // 2, (ok, flooded)
    assert_status(pb, bob.request("fetch", pb.Fetch(max=1)), "OK")
