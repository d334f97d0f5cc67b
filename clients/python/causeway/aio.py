"""causeway.aio: the asyncio interface of the causeway Python client.

    async with await AsyncClient.connect("tcp://127.0.0.1:7400", name="alice") as c:
        await c.send("bob", "hi")
        async for event in c.events(timeout=10):
            ...

AsyncClient drives the same protocol engine as the threaded Client (one
per AsyncClient, created with the same options): its I/O thread owns the
DEALER socket and does everything libcauseway does (heartbeats, loss
detection and reconnection, vector clocks, durable retries, duplicate
suppression, auto-acknowledgement, tracing). So the two interfaces behave
the same, message for message; only the waiting differs:

- Events are awaited on the event loop itself. The engine's I/O thread
  sends one empty frame on an inproc PAIR each time it queues an event (or
  stops); the loop reads that pipe with zmq.asyncio (Debian's python3-zmq),
  so `await next_event()` blocks no thread and any number of coroutines
  can run meanwhile. A wake-up is never lost: pending ones are drained
  before the queue is looked at, and one sent after that look makes the
  next poll return at once.
- Requests (login, send, who, ...) are the threaded Client's, each run in
  a worker thread of a small per-client pool (REQUEST_THREADS) that waits
  for the engine's reply, so the loop stays free while they wait. A
  request's own timeout bounds it; cancelling the awaiting coroutine
  (e.g. asyncio.wait_for) stops the wait, not the request: the engine
  still finishes it (a durable send may still be accepted) and the result
  is dropped.

Thread and loop rules: use an AsyncClient from one event loop; events are
meant for one reader coroutine at a time.
"""

import asyncio
import concurrent.futures
import functools
import random

import zmq
import zmq.asyncio

from . import Client, DEFAULT_ENDPOINT

__all__ = ["AsyncClient", "REQUEST_THREADS"]

REQUEST_THREADS = 4     # requests of one AsyncClient waiting at once (more queue up)


class AsyncClient:
    """One connection to one broker, carrying at most one session (asyncio).

    AsyncClient(endpoint, **options) creates the client without logging in
    (no I/O is awaited); `await AsyncClient.connect(endpoint, name=...,
    **options)` also logs in. The options are the threaded Client's
    (agent, quiet, pull, auto_ack, reconnect, timeout, trace, clockd,
    holdback, server_key, cert, clockd_key, context). Use it as
    `async with`, or `await close()`.
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, **options):
        if "name" in options:
            raise TypeError("AsyncClient() does not log in: use await AsyncClient.connect("
                            "endpoint, name=...) or await client.login(name)")
        # Our own zmq context unless given one: the wake-up sockets live in
        # it and must be closed before it is terminated (close()).
        self._own_ctx = options.get("context") is None
        ctx = options.get("context") or zmq.Context()
        options["context"] = ctx
        try:
            self._sync = Client(endpoint, None, **options)
        except BaseException:
            if self._own_ctx:
                ctx.term()
            raise
        self._ctx = ctx
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=REQUEST_THREADS, thread_name_prefix="causeway-aio")
        # The wake-up pipe: the engine's I/O thread sends on _wake_tx (its
        # only user once the hook is set), the loop reads _wake_rx.
        addr = f"inproc://causeway-aio-{id(self):x}-{random.getrandbits(32):08x}"
        self._actx = zmq.asyncio.Context.shadow(ctx.underlying)
        self._wake_rx = self._actx.socket(zmq.PAIR)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(addr)
        self._wake_tx = ctx.socket(zmq.PAIR)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(addr)
        self._sync._event_hook = self._wake   # no session yet: no event missed

    @classmethod
    async def connect(cls, endpoint=DEFAULT_ENDPOINT, name=None, **options):
        """An AsyncClient, logged in as name if given (raising like login();
        the client is closed then)."""
        client = cls(endpoint, **options)
        if name is not None:
            try:
                await client.login(name)
            except BaseException:
                await client.close()
                raise
        return client

    # -- plumbing --------------------------------------------------------------

    def _wake(self):
        """Engine's I/O thread: an event was queued or the engine stopped."""
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            pass   # a wake-up is pending already, or we are closing

    async def _call(self, method, *args, **kwargs):
        if self._closed:
            return getattr(self._sync, method)(*args, **kwargs)   # raises "client closed"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(getattr(self._sync, method), *args, **kwargs))

    # -- requests (each as in Client; see its docstrings) ------------------------

    async def login(self, name, timeout=...):
        """LoginResult(users, info); raises CausewayError (NAME_TAKEN, ...)."""
        return await self._call("login", name, timeout)

    async def logout(self, timeout=...):
        return await self._call("logout", timeout)

    async def send(self, to=None, text="", *, broadcast=False, durable=False,
                   message_id=None, ttl_s=0, timeout=...):
        """SendResult; the clock is ticked and stamped as by Client.send."""
        return await self._call("send", to, text, broadcast=broadcast, durable=durable,
                                message_id=message_id, ttl_s=ttl_s, timeout=timeout)

    async def who(self, timeout=...):
        return await self._call("who", timeout)

    async def stats(self, timeout=...):
        return await self._call("stats", timeout)

    async def fetch(self, max=0, timeout=...):  # noqa: A002 - the protocol's name
        return await self._call("fetch", max, timeout)

    async def history(self, last=0, timeout=...):
        return await self._call("history", last, timeout)

    async def ack(self, seq, timeout=...):
        return await self._call("ack", seq, timeout)

    async def ack_flush(self, timeout=...):
        return await self._call("ack_flush", timeout)

    async def flush_trace(self, timeout=...):
        return await self._call("flush_trace", timeout)

    # -- events ----------------------------------------------------------------

    def _drain_wakes(self):
        """Reads every pending wake-up without waiting. (A NOBLOCK recv on a
        zmq.asyncio socket returns a future that is already done: a frame,
        or zmq.Again when the pipe is empty.)"""
        while True:
            f = self._wake_rx.recv(zmq.NOBLOCK)
            if not f.done():
                f.cancel()
                return
            if f.exception() is not None:
                return

    async def next_event(self, timeout=None):
        """The next event (Deliver, Presence, Disconnected, Reconnected), or
        None if none came within timeout seconds (None: wait until closed)
        or the client is closed. With auto_ack, asking for the next event
        says the previous delivery has been handled (as Client.next_event)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                return None
            self._drain_wakes()
            ev = self._sync.next_event(0)          # never blocks
            if ev is not None:
                return ev
            if self._sync._closed or self._sync._thread_error is not None:
                return None
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            # Wait for a wake-up; a bounded slice even without a deadline so
            # that close() from another coroutine is noticed.
            slice_ms = 1000 if left is None else max(1, min(1000, int(left * 1000)))
            await self._wake_rx.poll(slice_ms, zmq.POLLIN)

    async def events(self, timeout=None):
        """Async iterator over events until none comes within timeout seconds
        (None: until the client is closed)."""
        while True:
            ev = await self.next_event(timeout)
            if ev is None:
                return
            yield ev

    def __aiter__(self):
        return self.events(None)

    # -- state (as Client) ---------------------------------------------------------

    @property
    def name(self):
        return self._sync.name

    @property
    def connected(self):
        return self._sync.connected

    @property
    def login_info(self):
        return self._sync.login_info

    @property
    def clock(self):
        return self._sync.clock

    def clock_str(self):
        return self._sync.clock_str()

    def new_message_id(self):
        return self._sync.new_message_id()

    @property
    def endpoint(self):
        """The endpoint in use now (see Client)."""
        return self._sync.endpoint

    @property
    def endpoints(self):
        """The endpoint list given (see Client)."""
        return self._sync.endpoints

    @property
    def sync(self):
        """The threaded Client underneath (same session, same events)."""
        return self._sync

    # -- lifetime ----------------------------------------------------------------

    async def close(self, timeout=2.0):
        """Logs out if logged in (best effort, bounded by timeout), stops the
        engine and releases everything. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, functools.partial(self._sync.close, timeout))
        # The I/O thread has stopped: nobody sends on _wake_tx any more.
        self._sync._event_hook = None
        self._wake_tx.close()
        self._wake_rx.close()
        self._pool.shutdown(wait=False)
        if self._own_ctx:
            self._ctx.term()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

