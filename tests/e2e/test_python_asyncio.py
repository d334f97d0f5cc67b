"""The Python client's asyncio interface (causeway.aio.AsyncClient), from the
installed package ($CW_BUILD_DIR/python), against real brokers and the C CLI:

  - connect/login, a live send between two AsyncClients on one event loop,
    the receiver awaiting next_event() while the sender's coroutine runs
    (which it could not if waiting for an event blocked the loop);
  - async iteration, who(), stats(), clocks as the threaded client keeps them;
  - durable: a message for an offline user, stored by the C CLI, comes as an
    event at login and is acknowledged (auto_ack) so a later fetch is empty;
    fetch() and history() as coroutines;
  - refusals raise CausewayError (NAME_TAKEN) and the client is closed;
  - next_event(timeout) returns None after a quiet timeout; close() from
    another coroutine ends a pending next_event() (returns None);
  - many concurrent sends from one client (more than its request threads)
    all complete;
  - a broker SIGKILLed and restarted on the same port: the AsyncClient
    reports Disconnected and Reconnected events and sends again.

Every wait is bounded (asyncio.wait_for around each test body); nothing
sleeps to synchronise.
"""

import asyncio
import json

import pytest

from conftest import TIMEOUT_SCALE, import_installed_causeway, run_cli

TEST_TIMEOUT = 60.0 * TIMEOUT_SCALE     # whole-test bound
EVENT_TIMEOUT = 10.0 * TIMEOUT_SCALE    # one expected event


@pytest.fixture(scope="module")
def cw():
    return import_installed_causeway()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


async def next_kind(client, kind, timeout=EVENT_TIMEOUT):
    """The next event of this kind, skipping others; fails on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ev = await client.next_event(max(0.0, deadline - loop.time()))
        assert ev is not None, f"no {kind} event within {timeout}s"
        if ev.kind == kind:
            return ev


def test_live_between_two_async_clients(broker, cw):
    br = broker()

    async def body():
        async with await cw.AsyncClient.connect(br.endpoint, name="bob") as bob, \
                await cw.AsyncClient.connect(br.endpoint, name="alice") as alice:
            assert bob.name == "bob" and alice.connected
            assert alice.login_info.heartbeat_ms == 200
            # bob waits for the delivery on the same loop that alice sends on
            waiting = asyncio.create_task(next_kind(bob, "deliver"))
            result = await alice.send("bob", "hello from asyncio")
            assert result.ok and result["bob"].status == "DELIVERED"
            assert result.clock == {"alice": 1}
            ev = await waiting
            assert (ev.sender, ev.text, ev.seq) == ("alice", "hello from asyncio", 0)
            assert ev.local_clock == {"alice": 1, "bob": 1}
            assert bob.clock == {"alice": 1, "bob": 1}
            assert [(u.name, u.online) for u in await alice.who()] == [("alice", True),
                                                                     ("bob", True)]
            stats = await alice.stats()
            assert stats.sessions == 2
            # async for, until a quiet second
            await alice.send(["bob"], "second")
            await alice.send(to=None, text="to all", broadcast=True)
            texts = [e.text async for e in bob.events(timeout=1.0) if e.kind == "deliver"]
            assert texts == ["second", "to all"]
        assert bob.sync._closed and alice.sync._closed

    run(body())


def test_durable_event_at_login_and_auto_ack(broker, cli, cw, tmp_path):
    br = broker("--data", str(tmp_path / "data"))

    async def body():
        bob = await cw.AsyncClient.connect(br.endpoint, name="bob")
        await bob.logout()      # a known user, now offline
        p = run_cli(cli, "send", "--json", "--endpoint", br.endpoint, "--name", "carol",
                    "--to", "bob", "--durable", "--id", "c-1", "stored for bob")
        assert p.proc.returncode == 0, p.describe()
        sends = [json.loads(line) for line in p.lines if line.startswith("{")]
        assert sends[-1]["status"] == "ACCEPTED", sends
        await bob.login("bob")
        ev = await next_kind(bob, "deliver")
        assert (ev.text, ev.seq, ev.message_id, ev.durable) == ("stored for bob", 1, "c-1", True)
        await bob.ack_flush()   # handled: acknowledged and committed
        assert await bob.fetch() == []
        assert [m.text for m in await bob.history()] == ["stored for bob"]
        r = await bob.send("bob", "note to self", durable=True)
        assert r.status == "ACCEPTED" and r["bob"].seq == 2
        await bob.close()
        await bob.close()       # twice is fine

    run(body())


def test_refusal_raises_and_closes(broker, cw):
    br = broker()

    async def body():
        async with await cw.AsyncClient.connect(br.endpoint, name="dora"):
            with pytest.raises(cw.CausewayError) as e:
                await cw.AsyncClient.connect(br.endpoint, name="dora")
            assert e.value.status == "NAME_TAKEN"
            with pytest.raises(TypeError):
                cw.AsyncClient(br.endpoint, name="x")   # only connect() logs in

    run(body())


def test_quiet_timeout_and_close_wakes_a_waiter(broker, cw):
    br = broker()

    async def body():
        c = await cw.AsyncClient.connect(br.endpoint, name="erin", quiet=True)
        assert await c.next_event(0.2) is None          # nothing came
        waiter = asyncio.create_task(c.next_event(None))  # waits until closed
        await asyncio.sleep(0)                           # let it start waiting
        assert not waiter.done()
        await c.close()
        assert await asyncio.wait_for(waiter, 5.0) is None
        with pytest.raises(cw.CausewayError):
            await c.who()

    run(body())


def test_many_concurrent_requests(broker, cw):
    br = broker()

    async def body():
        async with await cw.AsyncClient.connect(br.endpoint, name="fay", quiet=True) as fay:
            n = 3 * cw.aio.REQUEST_THREADS
            results = await asyncio.gather(*(fay.send("fay", f"m{i}") for i in range(n)))
            assert all(r.ok for r in results)
            got = set()
            while len(got) < n:
                ev = await next_kind(fay, "deliver")
                got.add(ev.text)
            assert got == {f"m{i}" for i in range(n)}
            assert fay.clock["fay"] == 2 * n     # a tick per send and per delivery

    run(body())


def test_reconnects_after_broker_kill(broker, cw, tmp_path):
    data = tmp_path / "data"
    br = broker("--data", str(data))
    port = br.port

    async def body():
        async with await cw.AsyncClient.connect(br.endpoint, name="gus", quiet=True) as gus:
            br.kill()
            ev = await next_kind(gus, "disconnected")
            assert ev.detail
            br2 = broker("--data", str(data), "--bind", f"tcp://127.0.0.1:{port}")
            assert br2.port == port
            await next_kind(gus, "reconnected")
            assert gus.connected
            r = await gus.send("gus", "after the restart", durable=True)
            assert r.status == "ACCEPTED"
            ev = await next_kind(gus, "deliver")
            assert ev.text == "after the restart"

    run(body())
