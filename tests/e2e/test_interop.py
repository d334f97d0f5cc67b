"""Interop: a Python client (protoc-generated code, raw zmq) and the C CLI
(libcauseway) chat through a real broker, in both directions.

The CLI's --json output (see `causeway help listen` / `causeway help send`):
  listen: {"event":"login","name":..,"users":[..]} once logged in, then
          {"event":"deliver","from":..,"to":[..],"broadcast":..,"text":..,
           "timestamp_us":..,"seq":..,"message_id":..,"clock":{..},
           "local_clock":{..}} and {"event":"presence",..} lines;
  send:   {"event":"send","status":"OK","recipients":[{"name":..,
           "status":"DELIVERED","seq":0}],"clock":{..}}.
Exit status: 0 success, 1 some recipient not reached.
"""

import json

from conftest import assert_status, now_us, run_cli


def sender(d):
    return getattr(d, "from")


def is_event(name):
    return lambda obj: obj.get("event") == name


def rcpts(result):
    return [(r["name"], r["status"]) for r in result["recipients"]]


def test_python_to_cli(broker, hub, cli, pb):
    br = broker()
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "carl", "--json",
                   "--count", 1, "--for", 10000)
    login = listener.read_json(is_event("login"), timeout=10.0, what="login event")
    assert login["name"] == "carl"
    assert [(u["name"], u["online"]) for u in login["users"]] == [("carl", True)]
    py = hub.client(br.endpoint)
    reply = py.login("py")
    assert [(u.name, u.online) for u in reply.users] == [("carl", True), ("py", True)]
    t0 = now_us()
    reply = py.send_text(to=["carl"], text="hello from python \u2713 \"quoted\"\n2nd line",
                         clock=[("py", 1)], message_id="py-1")
    t1 = now_us()
    assert_status(pb, reply, "OK")
    assert [(r.name, r.status) for r in reply.recipients] == [("carl", pb.STATUS_DELIVERED)]
    got = listener.read_json(is_event("deliver"), timeout=10.0, what="deliver event")
    assert got["from"] == "py"
    assert got["text"] == "hello from python \u2713 \"quoted\"\n2nd line"
    assert got["to"] == ["carl"]
    assert got["broadcast"] is False
    assert t0 <= got["timestamp_us"] <= t1
    assert got["message_id"] == "py-1"
    # The sender's clock verbatim, and the receive rule applied locally:
    # merge, then tick the receiver's own entry.
    assert got["clock"] == {"py": 1}
    assert got["local_clock"] == {"carl": 1, "py": 1}
    # --count 1: the listener stops by itself, logs out and exits 0.
    assert listener.wait(timeout=10.0) == 0, listener.describe()
    p = py.recv_body("presence", where=lambda p: p.name == "carl" and not p.online)
    assert p.reason == pb.Presence.REASON_LOGOUT


def test_cli_sees_presence(broker, hub, cli, pb):
    br = broker()
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "watch", "--json",
                   "--for", 10000)
    listener.read_json(is_event("login"), timeout=10.0, what="login event")
    py = hub.logged_in(br.endpoint, "pyp")
    ev = listener.read_json(lambda o: o.get("event") == "presence" and o.get("name") == "pyp",
                            timeout=10.0, what="presence login")
    assert (ev["online"], ev["reason"]) == (True, "login")
    py.logout()
    ev = listener.read_json(lambda o: o.get("event") == "presence" and o.get("name") == "pyp",
                            timeout=10.0, what="presence logout")
    assert (ev["online"], ev["reason"]) == (False, "logout")


def test_cli_to_python(broker, hub, cli, pb):
    br = broker()
    py = hub.logged_in(br.endpoint, "py")
    t0 = now_us()
    sent = run_cli(cli, "send", "--endpoint", br.endpoint, "--name", "carl2", "--to", "py",
                   "--json", "hello", timeout=15.0)
    t1 = now_us()
    assert sent.proc.returncode == 0, sent.describe()
    result = sent.read_json(is_event("send"), timeout=1.0, what="send result")
    assert result["status"] == "OK"
    assert rcpts(result) == [("py", "DELIVERED")], sent.describe()
    d = py.recv_body("deliver")
    assert sender(d) == "carl2"
    assert d.text == "hello"
    assert list(d.to) == ["py"]
    assert d.broadcast is False
    assert t0 <= d.timestamp_us <= t1
    # The Python side saw the CLI come and go (the CLI logs out).
    p = py.recv_body("presence", where=lambda p: p.name == "carl2" and p.online)
    assert p.reason == pb.Presence.REASON_LOGIN
    p = py.recv_body("presence", where=lambda p: p.name == "carl2" and not p.online)
    assert p.reason == pb.Presence.REASON_LOGOUT


def test_cli_stamps_its_clock(broker, hub, cli, pb):
    """libcauseway ticks the sender's own entry before a send and stamps the
    message with its clock in wire form; the CLI reports the same clock."""
    br = broker()
    py = hub.logged_in(br.endpoint, "py")
    sent = run_cli(cli, "send", "--endpoint", br.endpoint, "--name", "clocky", "--to", "py",
                   "--json", "tick", timeout=15.0)
    assert sent.proc.returncode == 0, sent.describe()
    result = sent.read_json(is_event("send"), timeout=1.0, what="send result")
    d = py.recv_body("deliver")
    entries = [(e.node, e.counter) for e in d.clock]
    assert entries == [("clocky", 1)]
    assert result["clock"] == {"clocky": 1}


def test_cli_multicast_statuses(broker, hub, cli, pb):
    """One CLI send to an online user, an offline one and an unknown one:
    the broker's per-recipient statuses, in order, and exit status 1."""
    br = broker()
    py = hub.logged_in(br.endpoint, "py")
    gone = hub.logged_in(br.endpoint, "gone")
    gone.logout()
    sent = run_cli(cli, "send", "--endpoint", br.endpoint, "--name", "multi", "--to",
                   "py,gone,ghost", "--json", "hi", "all", "three", timeout=15.0)
    assert sent.proc.returncode == 1, sent.describe()
    result = sent.read_json(is_event("send"), timeout=1.0, what="send result")
    assert rcpts(result) == [("py", "DELIVERED"), ("gone", "OFFLINE"),
                             ("ghost", "UNKNOWN_USER")], sent.describe()
    d = py.recv_body("deliver")
    assert d.text == "hi all three"
    assert list(d.to) == ["py", "gone", "ghost"]


def test_cli_broadcast(broker, hub, cli, pb):
    br = broker()
    a = hub.logged_in(br.endpoint, "pya")
    b = hub.logged_in(br.endpoint, "pyb")
    sent = run_cli(cli, "send", "--endpoint", br.endpoint, "--name", "shouter", "--all",
                   "--json", "to everyone", timeout=15.0)
    assert sent.proc.returncode == 0, sent.describe()
    result = sent.read_json(is_event("send"), timeout=1.0, what="send result")
    assert rcpts(result) == [("pya", "DELIVERED"), ("pyb", "DELIVERED")], sent.describe()
    for c in (a, b):
        d = c.recv_body("deliver")
        assert (sender(d), d.text, d.broadcast, list(d.to)) == (
            "shouter", "to everyone", True, [])


def test_cli_refused_name(broker, hub, cli, pb):
    """A name held by a Python session: the CLI is refused (exit 4) and the
    Python session is untouched."""
    br = broker()
    py = hub.logged_in(br.endpoint, "taken")
    sent = run_cli(cli, "send", "--endpoint", br.endpoint, "--name", "taken", "--to", "taken",
                   "--json", "impostor", timeout=15.0)
    assert sent.proc.returncode == 4, sent.describe()
    py.assert_none(lambda e: e.WhichOneof("body") == "deliver", "impostor delivered")
    assert [(u.name, u.online) for u in py.request("who").users] == [("taken", True)]


def test_sigkilled_cli_client_expires(broker, hub, cli, pb):
    """A CLI client killed with SIGKILL never logs out; the broker notices
    (its connection closes, or its heartbeats stop) and tells the others
    with presence EXPIRED; the user log then lists it offline."""
    br = broker()
    obs = hub.logged_in(br.endpoint, "obs")
    victim = cli("listen", "--endpoint", br.endpoint, "--name", "kim", "--json",
                 "--for", 60000)
    victim.read_json(is_event("login"), timeout=10.0, what="login event")
    obs.recv_body("presence", where=lambda p: p.name == "kim" and p.online)
    victim.proc.kill()  # SIGKILL: no logout, no goodbye
    victim.proc.wait(timeout=10.0)
    p = obs.recv_body("presence", where=lambda p: p.name == "kim" and not p.online,
                      timeout=10.0)
    assert p.reason == pb.Presence.REASON_EXPIRED
    who = run_cli(cli, "who", "--endpoint", br.endpoint, "--json")
    users = {u["name"]: u["online"] for u in json.loads(who.lines[0])["users"]}
    assert users == {"kim": False, "obs": True}


def test_cli_reconnects_after_broker_restart(broker, hub, cli, pb):
    """Live mode: listen survives a broker SIGKILL and restart on the same
    port, logs in again by itself and receives what is sent afterwards."""
    br = broker()
    port = br.port
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "lou", "--json",
                   "--count", 1, "--for", 30000)
    listener.read_json(is_event("login"), timeout=10.0, what="login event")
    br.kill()
    br2 = broker("--bind", f"tcp://127.0.0.1:{port}")
    assert br2.port == port
    listener.read_json(is_event("disconnected"), timeout=10.0, what="disconnected line")
    listener.read_json(is_event("reconnected"), timeout=15.0, what="reconnected line")
    py = hub.logged_in(br2.endpoint, "py")
    reply = py.send_text(to=["lou"], text="after the restart")
    assert [(r.name, r.status) for r in reply.recipients] == [("lou", pb.STATUS_DELIVERED)]
    got = listener.read_json(is_event("deliver"), timeout=10.0, what="deliver event")
    assert (got["from"], got["text"]) == ("py", "after the restart")
    assert listener.wait(timeout=10.0) == 0, listener.describe()
