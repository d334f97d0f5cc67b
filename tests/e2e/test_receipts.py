"""Read receipts (PROTOCOL.md 13.12) on the wire, with raw clients.

A durable Send with receipt (or from a session that logged in with
receipts) carries Deliver.receipt_requested to each recipient; when a
recipient's Ack covers it, the broker appends a Receipt entry to the
sender's own queue, in the Ack's transaction, and pushes it as
Envelope.receipt (seq, after_seq) to an online sender, or when the sender
next logs in. Covered: the push to an online sender; a sender offline
during the read gets it at its next login; a broker restart between the
read and the receipt's delivery; receipts acknowledged like messages (and
not pushed again); one receipt per (message, reader) even if the Ack is
repeated; nobody but the sender hears of it (a third recipient, the
reader itself); receipt without durable is refused; a live-only broker
refuses durable sends (so no receipts); Fetch lists receipts as Deliver
entries with `receipt` set; and the CLI's listen prints them (human and
--json).
"""

from conftest import assert_status


def durable_broker(broker, tmp_path, *extra):
    return broker("--data", str(tmp_path / "data"), *extra)


def send_durable(c, to, text, mid, receipt=True):
    msg = c.pb.Send(to=list(to), text=text, durable=True, message_id=mid, receipt=receipt)
    return c.request("send", msg)


def body_is(name):
    return lambda e: e.WhichOneof("body") == name


def ack(c, seq):
    reply = c.request("ack", c.pb.Ack(seq=seq))
    assert_status(c.pb, reply, "OK")


def login_receipts(c, name, **kw):
    reply = c.request("login", c.pb.Login(name=name, agent="pytest", receipts=True, **kw))
    assert_status(c.pb, reply, "OK")
    c.logged_in = True
    c.name = name
    return reply


def test_receipt_pushed_to_online_sender(broker, hub, pb, tmp_path):
    br = durable_broker(broker, tmp_path)
    alice = hub.logged_in(br.endpoint, "alice")
    bob = hub.logged_in(br.endpoint, "bob")
    carol = hub.logged_in(br.endpoint, "carol")
    r = send_durable(alice, ["bob", "carol"], "read me", "m-1")
    assert_status(pb, r, "ACCEPTED")
    seqs = {x.name: x.seq for x in r.recipients}
    d = bob.recv_body("deliver")
    assert d.receipt_requested and d.message_id == "m-1"
    dc = carol.recv_body("deliver")
    # Nothing before the Ack.
    alice.assert_none(body_is("receipt"), "receipt before the ack")
    ack(bob, d.seq)
    env = alice.recv_until(body_is("receipt"), what="bob's receipt")
    rc = env.receipt
    assert rc.message_id == "m-1" and rc.reader == "bob"
    assert rc.message_seq == seqs["bob"]
    assert rc.read_us > 0 and rc.seq >= 1
    # Only alice hears of it: carol (also a recipient) and bob do not.
    carol.assert_none(body_is("receipt"), "receipt leaked to another recipient")
    bob.assert_none(body_is("receipt"), "receipt sent to the reader")
    # carol reads it too: a receipt of her own, and bob hears nothing of it.
    ack(carol, dc.seq)
    env2 = alice.recv_until(body_is("receipt"), what="carol's receipt")
    assert env2.receipt.reader == "carol" and env2.receipt.seq == rc.seq + 1
    assert env2.after_seq == rc.seq
    bob.assert_none(body_is("receipt"), "carol's receipt leaked to bob")
    rc = env2.receipt
    # The same Ack again: no second receipt. A marker stored after it
    # comes right after the first receipt in alice's queue (pushes follow
    # seq order), so nothing was made in between.
    ack(bob, d.seq)
    assert_status(pb, send_durable(bob, ["alice"], "marker", "b-1", receipt=False), "ACCEPTED")
    menv = alice.recv_until(lambda e: body_is("deliver")(e) and e.deliver.text == "marker",
                            what="the marker")
    assert menv.after_seq == rc.seq and menv.deliver.seq == rc.seq + 1
    alice.assert_none(body_is("receipt"), "second receipt")
    # The receipt is an entry of alice's queue: acknowledged like a message
    # it is not pushed again on the next login.
    ack(alice, menv.deliver.seq)
    alice.logout()
    alice2 = hub.logged_in(br.endpoint, "alice")
    alice2.assert_none(body_is("receipt"), "acknowledged receipt pushed again")
    # A message without receipt asks for none.
    r = send_durable(alice2, ["carol"], "no receipt", "m-2", receipt=False)
    d2 = carol.recv_body("deliver", where=lambda x: x.message_id == "m-2")
    assert not d2.receipt_requested
    ack(carol, d2.seq)
    assert_status(pb, send_durable(bob, ["alice"], "marker 2", "b-2", receipt=False), "ACCEPTED")
    alice2.recv_body("deliver", where=lambda x: x.text == "marker 2")
    alice2.assert_none(body_is("receipt"), "receipt not asked for")


def test_sender_offline_during_read_gets_it_at_login(broker, hub, pb, tmp_path):
    br = durable_broker(broker, tmp_path)
    alice = hub.client(br.endpoint)
    login_receipts(alice, "alice")   # the session asks for receipts on every durable send
    hub.logged_in(br.endpoint, "bob").logout()   # bob is known, offline
    r = alice.send_text(to=["bob"], text="while you were out", message_id="m-9", durable=True)
    assert_status(pb, r, "ACCEPTED")
    alice.logout()
    bob = hub.logged_in(br.endpoint, "bob")
    d = bob.recv_body("deliver")
    assert d.receipt_requested
    ack(bob, d.seq)
    # alice is offline: the receipt waits in her queue, also after a
    # broker restart on the same data directory.
    port = br.port
    rc_code, killed = br.terminate()
    assert rc_code == 0 and not killed
    br2 = durable_broker(broker, tmp_path, "--bind", f"tcp://127.0.0.1:{port}")
    alice2 = hub.logged_in(br2.endpoint, "alice")
    env = alice2.recv_until(body_is("receipt"), what="the stored receipt")
    assert env.receipt.message_id == "m-9" and env.receipt.reader == "bob"
    assert env.receipt.seq >= 1
    # Fetch lists it too (pull mode), as a Deliver with `receipt` set.
    alice2.logout()
    puller = hub.client(br2.endpoint)
    puller.login("alice", pull=True)
    f = puller.request("fetch", pb.Fetch())
    assert_status(pb, f, "OK")
    rcpts = [m for m in f.messages if m.HasField("receipt")]
    assert len(rcpts) == 1 and rcpts[0].receipt.message_id == "m-9"
    assert rcpts[0].seq == env.receipt.seq and rcpts[0].text == ""


def test_broker_killed_between_read_and_receipt_delivery(broker, hub, pb, tmp_path):
    """The receipt is stored with the Ack (one commit): a SIGKILL right
    after the Ack's reply loses neither."""
    br = durable_broker(broker, tmp_path)
    alice = hub.logged_in(br.endpoint, "alice")
    alice.logout()
    bob = hub.logged_in(br.endpoint, "bob")
    sender = hub.client(br.endpoint)
    login_receipts(sender, "alice")
    assert_status(pb, sender.send_text(to=["bob"], text="x", message_id="k-1", durable=True),
                  "ACCEPTED")
    sender.logout()
    d = bob.recv_body("deliver")
    ack(bob, d.seq)
    port = br.port
    br.kill()
    br2 = durable_broker(broker, tmp_path, "--bind", f"tcp://127.0.0.1:{port}")
    alice2 = hub.logged_in(br2.endpoint, "alice")
    env = alice2.recv_until(body_is("receipt"), what="receipt after the kill")
    assert env.receipt.message_id == "k-1"
    # bob's message stays acknowledged.
    bob2 = hub.logged_in(br2.endpoint, "bob")
    bob2.assert_none(body_is("deliver"), "acknowledged message delivered again")


def test_receipt_refusals(broker, hub, pb, tmp_path):
    live = broker()
    a = hub.logged_in(live.endpoint, "alice")
    hub.logged_in(live.endpoint, "bob")
    r = a.request("send", pb.Send(to=["bob"], text="x", receipt=True))
    assert_status(pb, r, "BAD_REQUEST")
    assert "receipt" in r.detail
    r = a.request("send", pb.Send(to=["bob"], text="x", durable=True, receipt=True,
                                  message_id="z"))
    assert_status(pb, r, "NOT_DURABLE")
    # A client may not send a Receipt.
    env = a.envelope("receipt", pb.Receipt(message_id="z", reader="bob"))
    assert_status(pb, a.request_env(env).reply, "BAD_REQUEST")


def test_cli_send_receipt_and_listen_prints_it(broker, cli, hub, pb, tmp_path):
    br = durable_broker(broker, tmp_path)
    bob = hub.logged_in(br.endpoint, "bob")
    s = cli("send", "--endpoint", br.endpoint, "--name", "alice", "--to", "bob", "--durable",
            "--receipt", "--json", "hello")
    assert s.wait() == 0, s.describe()
    sent = s.read_json(lambda o: o.get("event") == "send")
    d = bob.recv_body("deliver")
    assert d.receipt_requested and d.message_id == sent["message_id"]
    ack(bob, d.seq)
    # alice is offline; listen (JSON) gets the receipt waiting for her.
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "alice", "--json",
                   "--count", 1, "--for", 20000)
    got = listener.read_json(lambda o: o.get("event") == "receipt", what="receipt line")
    assert got["reader"] == "bob" and got["message_id"] == sent["message_id"]
    assert got["read_us"] > 0 and got["seq"] >= 1 and got["message_seq"] == d.seq
    assert listener.wait(timeout=20) == 0, listener.describe()
    # Acknowledged by listen once printed: not shown again.
    again = cli("fetch", "--endpoint", br.endpoint, "--name", "alice", "--json")
    assert again.wait() == 0, again.describe()
    summary = again.read_json(lambda o: o.get("event") == "fetch")
    assert summary["count"] == 0, again.describe()
    # Human form.
    s = cli("send", "--endpoint", br.endpoint, "--name", "alice", "--to", "bob", "--durable",
            "--receipt", "again")
    assert s.wait() == 0, s.describe()
    d = bob.recv_body("deliver")
    ack(bob, d.seq)
    human = cli("listen", "--endpoint", br.endpoint, "--name", "alice", "--count", 1,
                "--for", 20000)
    assert human.wait(timeout=20) == 0, human.describe()
    assert any("bob read your message" in line for line in human.lines), human.describe()
    # --receipt without --durable is a usage error.
    bad = cli("send", "--endpoint", br.endpoint, "--name", "alice", "--to", "bob",
              "--receipt", "x")
    assert bad.wait() == 2 and "--receipt needs --durable" in bad.stderr()


def test_read_before_restart_acked_after(broker, hub, pb, tmp_path):
    """bob is shown the message by one broker and acknowledges it to the
    next one (right after logging in again): the receipt is made all the
    same."""
    br = durable_broker(broker, tmp_path)
    alice = hub.logged_in(br.endpoint, "alice")
    bob = hub.logged_in(br.endpoint, "bob")
    assert_status(pb, send_durable(alice, ["bob"], "before", "r-1"), "ACCEPTED")
    d = bob.recv_body("deliver")
    port = br.port
    br.kill()
    br2 = durable_broker(broker, tmp_path, "--bind", f"tcp://127.0.0.1:{port}")
    bob2 = hub.logged_in(br2.endpoint, "bob")
    ack(bob2, d.seq)
    alice2 = hub.logged_in(br2.endpoint, "alice")
    env = alice2.recv_until(body_is("receipt"), what="receipt for a message read before")
    assert env.receipt.message_id == "r-1" and env.receipt.reader == "bob"
