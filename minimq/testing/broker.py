"""An in-process broker for tests: start in a millisecond, inspect, wait, drive time, break.

    with Broker() as broker:              # sync code (pika, kombu, Celery): a background thread
        connect(broker.url)
        broker.wait_for(lambda: broker.queue("jobs").messages_ready == 1)

    async with Broker() as broker:        # async code: runs in the current event loop
        ...
        await broker.wait_for(lambda: broker.connections())

Threading: in the `with` form the broker runs its own event loop in a daemon thread and
every method here hops into that loop and waits for the answer, so calling them from any
thread is safe. In the `async with` form it runs in the caller's loop and the methods run
directly. `wait_for` and `restart` block in synchronous code and must be awaited when called
from a coroutine (any running event loop in the calling thread).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import copy
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

from minimq.broker import Broker as CoreBroker
from minimq.broker.access import AccessControl
from minimq.broker.exchange import Exchange
from minimq.codec.errors import AMQPError, ConnectionForced, error_for_code
from minimq.protocol.states import ConnState
from minimq.server.alarms import resource_of
from minimq.server.app import Server
from minimq.server.transport import AMQPServerProtocol
from minimq.testing import views
from minimq.testing.clock import VirtualClock
from minimq.testing.faults import ConfirmReordering, FaultyRouting
from minimq.testing.views import (
    BindingInfo,
    ChannelInfo,
    ConnectionInfo,
    ConsumerInfo,
    ExchangeInfo,
    MessageView,
    QueueInfo,
    UnackedInfo,
)

log = logging.getLogger("minimq.testing")

#: How long a call from another thread waits for the broker's loop to answer.
CALL_TIMEOUT = 30.0
#: wait_for re-evaluates its predicate after every broker event and at least this often.
RECHECK_INTERVAL = 0.05
#: The reply text of connections and channels closed through the helpers.
FORCED_TEXT = "Closed via minimq.testing"


class _Waiter:
    __slots__ = ("predicate", "on_done", "done", "value", "error")

    def __init__(self, predicate: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        self.predicate = predicate
        self.on_done = on_done
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def check(self) -> bool:
        """Evaluate in the broker's loop; an exception counts as 'not yet' (and is kept)."""
        if self.done:
            return True
        try:
            value = self.predicate()
        except Exception as exc:  # e.g. KeyError: the queue does not exist yet
            self.error = exc
            return False
        if not value:
            return False
        self.done = True
        self.value = value
        self.on_done(value)
        return True


class _Protocol(AMQPServerProtocol):
    """The server's protocol plus what tests need: an id and event notification.

    Blocking publishers (Broker.block) is the server's own flow control (alarm_on/off).
    """

    def __init__(self, harness: "Broker", broker: CoreBroker, connections: set) -> None:
        super().__init__(broker, connections)
        self.harness = harness
        self.id = next(harness._ids)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.harness._changed()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.harness._changed()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.harness._changed()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.harness._changed()

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.conn.state is ConnState.OPEN



class Broker:
    """A minimq broker embedded in the test process, listening on a free port.

    Arguments:
        port: 0 (default) picks a free port; `restart()` reuses whichever port it got.
        clock: None for real time; "virtual" (or a VirtualClock, or a start time as a number)
            for a clock that only `advance()` moves; or any callable returning seconds.
        data_dir: keep durable state in this directory (minimq's store), recovered at
            start: a new Broker on the same directory sees what the last one left there.
            Without it the broker is in memory; `restart()` keeps durable state either way.
        vhost: the default vhost of `url` and of the inspection helpers.
        users: name -> password (or -> {"password": ..., "tags": [...]}); `url` logs in as the
            first one. Default: guest/guest.
        permissions: user -> {vhost: (configure, write, read)} (or ".*" for all three). Without
            it (and without `definitions`) every user may do anything on every vhost, also on
            vhosts added later: a test broker is open unless you ask for access control.
            With it, users have exactly these permissions, as in RabbitMQ.
        definitions: a RabbitMQ definitions export (path or dict), loaded at start: users,
            vhosts, permissions, limits, exchanges, queues, bindings (a fresh node's guest is
            there too, with full permissions on '/', unless the file replaces it).
        loopback_users: users refused unless they connect through loopback (default guest).
        vhosts, heartbeat, frame_max, channel_max: as the broker core takes them.
        reorder_confirms: False (default) confirms in publish order; True, or a seed, turns
            on the confirm-reordering fault from the start (see `reorder_confirms`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Any = None,
        data_dir: str | Path | None = None,
        vhost: str = "/",
        vhosts: Iterable[str] = ("/",),
        users: dict[str, Any] | None = None,
        permissions: dict[str, dict[str, Any]] | None = None,
        definitions: str | Path | dict | None = None,
        loopback_users: Iterable[str] = ("guest",),
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        reorder_confirms: bool | int = False,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        if clock == "virtual" or clock is True:
            clock = VirtualClock()
        elif isinstance(clock, (int, float)) and not isinstance(clock, bool):
            clock = VirtualClock(clock)
        self.virtual = isinstance(clock, VirtualClock)
        self.clock: Callable[[], float] = clock if clock is not None else time.time
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.vhost = vhost
        self._vhosts = list(dict.fromkeys([*vhosts, vhost]))
        self.users = {
            name: (spec_ if isinstance(spec_, str) else str(spec_.get("password", "")))
            for name, spec_ in (users if users is not None else {"guest": "guest"}).items()
        }
        self.user, self.password = next(iter(self.users.items()), ("guest", "guest"))
        self.access = _access_for(users, permissions)
        self._definitions = _read_definitions(definitions)
        # An open broker (no permissions, no definitions): every user on every vhost.
        self._open_users = tuple(self.users) if permissions is None and definitions is None else ()
        self._core_options = {
            "heartbeat": heartbeat, "frame_max": frame_max, "channel_max": channel_max,
            "loopback_users": tuple(loopback_users),
        }
        self.core: CoreBroker | None = None
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._mode: str | None = None  # "thread" | "async" | None
        self._ids = itertools.count(1)
        self._waiters: list[_Waiter] = []
        self._recheck: asyncio.TimerHandle | None = None
        self._blocked: str | None = None
        self._confirm_order: ConfirmReordering | None = None
        if reorder_confirms is not False:
            self._confirm_order = ConfirmReordering(None if reorder_confirms is True else int(reorder_confirms))
        self.restarts = 0

    # ================================================================ lifecycle

    @property
    def running(self) -> bool:
        return self._mode is not None

    @property
    def url(self) -> str:
        """amqp://user:pass@host:port/vhost for the default vhost."""
        return self.url_for(self.vhost)

    def url_for(self, vhost: str = "/") -> str:
        if self.port is None:
            raise RuntimeError("the broker is not started")
        path = "" if vhost == "/" else quote(vhost, safe="")
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{path}"

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "Broker":
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()

    def start(self) -> "Broker":
        """Run the broker in a background thread with its own event loop; returns when it accepts."""
        if self._mode is not None:
            raise RuntimeError("the broker is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        thread = threading.Thread(target=run, name="minimq-testing-broker", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._loop = None
            raise failure[0]
        self._thread = thread
        self._mode = "thread"
        return self

    def stop(self) -> None:
        """Close every connection (320 CONNECTION_FORCED), stop listening, end the thread."""
        if self._mode is None:
            return
        if self._mode == "async":
            raise RuntimeError("this broker runs in an event loop: use `await broker.astop()`")
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        try:
            asyncio.run_coroutine_threadsafe(self._stop_server(), loop).result(CALL_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT)
            self.port = None
            self._mode = None
            self._thread = None
            self._loop = None
            self._loop_thread = None

    async def astart(self) -> "Broker":
        """Run the broker in the current event loop; returns when it accepts."""
        if self._mode is not None:
            raise RuntimeError("the broker is already running")
        self._loop = asyncio.get_running_loop()
        await self._start_server()
        self._mode = "async"
        return self

    async def astop(self) -> None:
        if self._mode is None:
            return
        if self._mode != "async":
            raise RuntimeError("this broker runs in a thread: use `broker.stop()`")
        try:
            await self._stop_server()
        finally:
            self.port = None
            self._mode = None
            self._loop = None
            self._loop_thread = None

    def restart(self) -> Any:
        """Stop and start again on the same port, as a broker restart looks to clients.

        Clients are disconnected (320 CONNECTION_FORCED). What survives is what survives a
        RabbitMQ restart: vhosts and users, durable exchanges, durable (non-exclusive) queues,
        bindings between durable ends, and persistent messages in durable queues (those that
        were delivered but not acked come back redelivered). With a data_dir it is recovered
        from the store on disk; in memory, the same state is carried over. Blocks in sync
        code; `await` it from a coroutine.
        """
        self._require_running()
        if _running_loop() is not None:
            return self._arestart()
        if self._mode == "async":
            raise RuntimeError("this broker runs in an event loop: use `await broker.restart()`")
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._restart_server(), self._loop).result(CALL_TIMEOUT)
        return None

    async def _arestart(self) -> None:
        if self._loop is asyncio.get_running_loop():
            await self._restart_server()
        else:
            assert self._loop is not None
            fut = asyncio.run_coroutine_threadsafe(self._restart_server(), self._loop)
            await asyncio.wrap_future(fut)

    # -- in the loop

    def _make_core(self, vhosts: Iterable[str], carried: Any = None, policies: Any = None) -> CoreBroker:
        """A new core: recovered from the data dir, or given `carried` durable state (and
        the policies of the core it replaces, which survive a restart as in RabbitMQ)."""
        recovered = carried
        store = None
        if self.data_dir is not None:
            from minimq.store import DurableStore

            store = DurableStore(str(self.data_dir))
            try:
                recovered = store.recover()
            except BaseException:
                store.close()
                raise
        # The access model outlives restarts (as RabbitMQ keeps users and permissions).
        core = CoreBroker(
            clock=self.clock, access=self.access, open_users=self._open_users, vhosts=tuple(vhosts),
            store=store, **self._core_options,
        )
        if policies is not None:
            from minimq.broker.definitions import import_definitions

            import_definitions(core, policies)  # before the queues come back, as at a start
        if recovered is not None:
            core.restore(recovered)
        core.confirm_order = self._confirm_order
        if self._definitions is not None:
            from minimq.broker.definitions import import_definitions

            import_definitions(core, self._definitions)
            self._definitions = None  # once: a restart keeps what it made
        return core

    async def _start_server(self) -> None:
        self._loop_thread = threading.get_ident()
        if self.core is None:
            self.core = self._make_core(self._vhosts)
        server = Server(
            self.core,
            self.host,
            self.port if self.port is not None else self.requested_port,
            drive_timers=not self.virtual,
            protocol_class=functools.partial(_Protocol, self),  # type: ignore[arg-type]
        )
        try:
            await server.start()
        except BaseException:
            await server.stop()
            self._close_store()
            self.core = None
            raise
        self.server = server
        self.port = server.port
        if self._waiters and self._recheck is None:
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_INTERVAL, self._recheck_tick)

    async def _stop_server(self) -> None:
        server = self.server
        self._blocked = None
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if server is not None:
            await server.stop()  # writes and syncs the store
        self.server = None
        self._close_store()
        self.core = None
        self._changed()

    def _close_store(self) -> None:
        store = getattr(self.core, "store", None)
        if store is not None:
            store.close()

    async def _restart_server(self) -> None:
        assert self.core is not None
        vhosts = list(self.core.vhosts)
        old = self.core
        await self._stop_server()  # closing the connections requeues what they held
        carried = None if self.data_dir is not None else _durable_state(old)
        policies = {
            "policies": old.policies.export(set(old.vhosts)),
            "operator_policies": old.policies.export(set(old.vhosts), operator=True),
        }
        self.core = self._make_core(vhosts, carried, policies)
        await self._start_server()
        self.restarts += 1
        self._changed()

    # ================================================================ plumbing

    def _require_running(self) -> None:
        if self._mode is None or self._loop is None:
            raise RuntimeError("the broker is not running")

    def _in_loop(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) in the broker's loop and return its result (or raise its error)."""
        self._require_running()
        if self._in_loop():
            return fn(*args)
        loop = self._loop
        assert loop is not None
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(CALL_TIMEOUT)

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) in the broker's event loop and return its result.

        For tests that reach into the core (`broker.core`, the minimq.broker.Broker): its state
        must only be touched from the loop. Waiters are re-evaluated afterwards.
        """
        def run() -> Any:
            try:
                return fn(*args)
            finally:
                self._flush_all()
                self._changed()

        return self._call(run)

    def _changed(self) -> None:
        """Something may have changed: re-evaluate every waiter (in the loop)."""
        if not self._waiters:
            return
        self._waiters = [w for w in self._waiters if not w.check()]

    def _add_waiter(self, waiter: _Waiter) -> None:
        if waiter.check():
            return
        self._waiters.append(waiter)
        if self._recheck is None:
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(RECHECK_INTERVAL, self._recheck_tick)

    def _remove_waiter(self, waiter: _Waiter) -> None:
        waiter.done = True
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _recheck_tick(self) -> None:
        self._recheck = None
        self._changed()
        if self._waiters and self._mode is not None:
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_INTERVAL, self._recheck_tick)

    def _core(self) -> CoreBroker:
        if self.core is None:
            raise RuntimeError("the broker is not running")
        return self.core

    def _protocols(self) -> list[_Protocol]:
        server = self.server
        if server is None:
            return []
        return sorted((p for p in server.connections if isinstance(p, _Protocol)), key=lambda p: p.id)

    def _vhost(self, name: str | None):
        core = self._core()
        name = self.vhost if name is None else name
        try:
            return core.vhosts[name]
        except KeyError:
            raise KeyError(f"no vhost {name!r}") from None

    # ================================================================ waiting

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None) -> Any:
        """Wait until predicate() is truthy; return its value. TimeoutError after `timeout`.

        The predicate runs in the broker's loop, after every broker event (a frame batch
        from any client, a connection opening or closing, a timer) and at least every 50 ms,
        so it may use the inspection helpers freely. An exception from it (say KeyError for
        a queue not declared yet) counts as "not yet". From a coroutine, `await` this.
        """
        self._require_running()
        if _running_loop() is not None:
            return self._wait_async(predicate, timeout, what)
        done = threading.Event()
        waiter = _Waiter(predicate, lambda _value: done.set())
        self._call(self._add_waiter, waiter)
        try:
            if not done.wait(timeout):
                raise _timeout(waiter, timeout, what)
        finally:
            if not waiter.done and self._mode is not None:
                self._call(self._remove_waiter, waiter)
        return waiter.value

    async def _wait_async(self, predicate: Callable[[], Any], timeout: float, what: str | None) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def resolve(value: Any) -> None:
            if loop is self._loop and self._in_loop():
                if not fut.done():
                    fut.set_result(value)
            else:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(value))

        waiter = _Waiter(predicate, resolve)
        self._call(self._add_waiter, waiter)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise _timeout(waiter, timeout, what) from waiter.error
        finally:
            if not waiter.done and self._mode is not None:
                self._call(self._remove_waiter, waiter)
        return waiter.value

    # ================================================================ clock

    def now(self) -> float:
        """The broker's current time (virtual or real)."""
        return self.clock()

    def advance(self, seconds: float) -> float:
        """Move a virtual clock forward, running every deadline due on the way, in order.

        Heartbeats (sent and checked), TTL, queue expiry and delayed messages all hang off
        the broker's timers, so this drives them without sleeping. Returns the new time.
        """
        if not self.virtual:
            raise RuntimeError("advance() needs a virtual clock: Broker(clock='virtual')")
        if seconds < 0:
            raise ValueError("time only moves forward")
        return self._call(self._advance, float(seconds))

    def _advance(self, seconds: float) -> float:
        clock = self.clock
        assert isinstance(clock, VirtualClock)
        core = self._core()
        target = clock.now + seconds
        while True:
            when = core.timers.next_deadline()
            if when is None or when > target:
                break
            if when > clock.now:
                clock.set(when)
            core.tick(clock.now)
        clock.set(target)
        core.tick(target)
        self._changed()
        return clock.now

    # ================================================================ inspection

    def vhosts(self) -> list[str]:
        return self._call(lambda: sorted(self._core().vhosts))

    def queues(self, vhost: str | None = None) -> list[QueueInfo]:
        """Every queue of a vhost (default: `broker.vhost`), by name."""
        return self._call(self._queues, vhost)

    def queue(self, name: str, vhost: str | None = None) -> QueueInfo:
        """One queue; KeyError if it does not exist."""
        return self._call(self._queue, name, vhost)

    def _unacked_counts(self) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for proto in self._protocols():
            session = proto.session
            if session is None:
                continue
            for ch in list(session.channels.values()):
                for entry in ch.unacked.values():
                    q = entry[1]
                    counts[q] = counts.get(q, 0) + 1
        return counts

    def _queues(self, vhost: str | None) -> list[QueueInfo]:
        v = self._vhost(vhost)
        counts = self._unacked_counts()
        return [views.queue_info(v.name, q, counts.get(q, 0)) for _, q in sorted(v.queues.items())]

    def _queue(self, name: str, vhost: str | None) -> QueueInfo:
        v = self._vhost(vhost)
        q = v.queues.get(name)
        if q is None:
            raise KeyError(f"no queue {name!r} in vhost {v.name!r}")
        return views.queue_info(v.name, q, self._unacked_counts().get(q, 0))

    def messages(self, queue: str, vhost: str | None = None) -> list[MessageView]:
        """The ready messages of a queue, in the order they would be delivered (a peek)."""
        return self._call(self._messages, queue, vhost)

    def _messages(self, queue: str, vhost: str | None) -> list[MessageView]:
        v = self._vhost(vhost)
        q = v.queues.get(queue)
        if q is None:
            raise KeyError(f"no queue {queue!r} in vhost {v.name!r}")
        source = q.messages() if hasattr(q, "messages") else iter(q.ready)
        return [views.message_view(m) for m in source]

    def exchanges(self, vhost: str | None = None) -> list[ExchangeInfo]:
        """Every exchange of a vhost, the default ('') and amq.* ones included, by name."""
        def run() -> list[ExchangeInfo]:
            v = self._vhost(vhost)
            return [views.exchange_info(v.name, ex) for _, ex in sorted(v.exchanges.items())]

        return self._call(run)

    def exchange(self, name: str, vhost: str | None = None) -> ExchangeInfo:
        def run() -> ExchangeInfo:
            v = self._vhost(vhost)
            ex = v.exchanges.get(name)
            if ex is None:
                raise KeyError(f"no exchange {name!r} in vhost {v.name!r}")
            return views.exchange_info(v.name, ex)

        return self._call(run)

    def bindings(
        self, vhost: str | None = None, *, source: str | None = None, destination: str | None = None
    ) -> list[BindingInfo]:
        """Bindings of a vhost, optionally only from `source` and/or to `destination`."""
        return self._call(self._bindings, vhost, source, destination)

    def _bindings(self, vhost: str | None, source: str | None, destination: str | None) -> list[BindingInfo]:
        v = self._vhost(vhost)
        out: list[BindingInfo] = []
        if source in (None, ""):
            for qname in sorted(v.queues):
                if destination in (None, qname):
                    out.append(BindingInfo(v.name, "", qname, "queue", qname, {}))
        for xname, ex in sorted(v.exchanges.items()):
            if xname == "" or source not in (None, xname):
                continue
            rows = []
            for dest, key, args in ex.kind.bindings():
                if destination not in (None, dest.name):
                    continue
                kind = "exchange" if isinstance(dest, Exchange) else "queue"
                rows.append(BindingInfo(v.name, xname, dest.name, kind, key, views.copy_arguments(args)))
            rows.sort(key=lambda b: (b.destination_type, b.destination, b.routing_key))
            out.extend(rows)
        return out

    def consumers(self, vhost: str | None = None, queue: str | None = None) -> list[ConsumerInfo]:
        """Consumers on the queues of a vhost (or of one queue)."""
        return self._call(self._consumers, vhost, queue)

    def _consumers(self, vhost: str | None, queue: str | None) -> list[ConsumerInfo]:
        v = self._vhost(vhost)
        out = []
        for qname, q in sorted(v.queues.items()):
            if queue not in (None, qname):
                continue
            for c in q.consumers:
                ch = c.channel
                proto = self._protocol_of(ch.session)
                out.append(
                    ConsumerInfo(
                        vhost=v.name,
                        queue=qname,
                        tag=c.tag,
                        connection=proto.id if proto is not None else 0,
                        channel=ch.number,
                        ack_required=not c.no_ack,
                        exclusive=bool(c.exclusive),
                        prefetch_count=c.limit,
                        unacked=c.unacked,
                        arguments=views.copy_arguments(c.arguments),
                    )
                )
        return out

    def _protocol_of(self, session: Any) -> _Protocol | None:
        for proto in self._protocols():
            if proto.session is session:
                return proto
        return None

    def connections(self, vhost: str | None = None) -> list[ConnectionInfo]:
        """Client connections (all, or those opened on `vhost`), oldest first."""
        return self._call(self._connections, vhost)

    def _connections(self, vhost: str | None) -> list[ConnectionInfo]:
        out = []
        for proto in self._protocols():
            session = proto.session
            if session is None:
                continue
            conn = session.conn
            vname = session.vhost.name if session.vhost is not None else None
            if vhost is not None and vname != vhost:
                continue
            props = getattr(conn, "client_properties", None) or {}
            name = props.get("connection_name")
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            out.append(
                ConnectionInfo(
                    id=proto.id,
                    name=name,
                    peer=proto.peer,
                    user=session.user or conn.user,
                    vhost=vname,
                    state=conn.state.value if hasattr(conn.state, "value") else str(conn.state),
                    heartbeat=conn.heartbeat,
                    channels=len(session.channels),
                    blocked=proto.alarm is not None,
                    client_properties=views.copy_arguments(props),
                )
            )
        return out

    def connection(self, which: Any) -> ConnectionInfo:
        """One connection by id, client connection_name or ConnectionInfo."""
        def run() -> ConnectionInfo:
            proto = self._find(which)
            return next(c for c in self._connections(None) if c.id == proto.id)

        return self._call(run)

    def channels(self, connection: Any = None) -> list[ChannelInfo]:
        def run() -> list[ChannelInfo]:
            protos = self._protocols() if connection is None else [self._find(connection)]
            out = []
            for proto in protos:
                session = proto.session
                if session is None:
                    continue
                for number, ch in sorted(session.channels.items()):
                    out.append(
                        ChannelInfo(
                            connection=proto.id,
                            number=number,
                            consumers=len(ch.consumers),
                            messages_unacknowledged=len(ch.unacked),
                            prefetch_count=ch.prefetch,
                            global_prefetch_count=ch.global_limit,
                            confirm=bool(ch.confirm),
                            transactional=ch.tx is not None,
                            flow_active=bool(ch.flow_active),
                        )
                    )
            return out

        return self._call(run)

    def unacked(self, queue: str | None = None, vhost: str | None = None) -> list[UnackedInfo]:
        """Deliveries awaiting ack (all in the vhost, or from one queue), by connection/channel/tag."""
        return self._call(self._unacked, queue, vhost)

    def _unacked(self, queue: str | None, vhost: str | None) -> list[UnackedInfo]:
        v = self._vhost(vhost)
        out = []
        for proto in self._protocols():
            session = proto.session
            if session is None or session.vhost is not v:
                continue
            for number, ch in sorted(session.channels.items()):
                for tag, entry in sorted(ch.unacked.items()):
                    msg, q, consumer = entry[0], entry[1], entry[2]
                    if queue is not None and q.name != queue:
                        continue
                    out.append(
                        UnackedInfo(
                            connection=proto.id,
                            channel=number,
                            delivery_tag=tag,
                            queue=q.name,
                            consumer_tag=consumer.tag if consumer is not None else None,
                            message=views.message_view(msg),
                        )
                    )
        return out

    # ================================================================ vhosts

    def add_vhost(self, name: str) -> None:
        self._call(lambda: self._core().add_vhost(name))
        if name not in self._vhosts:
            self._vhosts.append(name)

    # ========================================================= access control

    def add_user(self, name: str, password: str, tags: Iterable[str] = ()) -> None:
        """Add (or replace) a user; it has no permissions until given some."""
        self._call(lambda: self.access.add_user(name, password, tags=tags))

    def delete_user(self, name: str) -> None:
        self._call(lambda: self.access.delete_user(name))

    def set_permissions(
        self, user: str, vhost: str | None = None, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        """Permissions of `user` in `vhost` (default: this broker's vhost); takes effect at once."""
        where = self.vhost if vhost is None else vhost
        self._call(lambda: self.access.set_permissions(user, where, configure, write, read))

    def clear_permissions(self, user: str, vhost: str | None = None) -> None:
        where = self.vhost if vhost is None else vhost
        self._call(lambda: self.access.clear_permissions(user, where))

    def set_topic_permissions(self, user: str, exchange: str, write: str = ".*", read: str = ".*",
                              vhost: str | None = None) -> None:
        where = self.vhost if vhost is None else vhost
        self._call(lambda: self.access.set_topic_permissions(user, where, exchange, write, read))

    def copy_permissions(self, source_vhost: str, target_vhost: str) -> None:
        """Give every user in `target_vhost` the permissions it has in `source_vhost`."""
        def run() -> None:
            access = self.access
            for (vhost, user), p in list(access.permissions.items()):
                if vhost == source_vhost:
                    access.set_permissions(user, target_vhost, p.configure, p.write, p.read)
            for (vhost, user, exchange), (w, r) in list(access.topic_permissions.items()):
                if vhost == source_vhost:
                    access.set_topic_permissions(user, target_vhost, exchange, w, r)

        self._call(run)

    # ================================================================ policies

    def set_policy(self, name: str, pattern: str, definition: dict, apply_to: str = "all",
                   priority: int = 0, vhost: str | None = None) -> None:
        """Add or replace a policy, as `rabbitmqctl set_policy` does (RabbitMQ's validation;
        ValueError with its text if refused). Applied to existing queues and exchanges
        before this returns."""
        self._set_policy(name, pattern, definition, apply_to, priority, vhost, False)

    def clear_policy(self, name: str, vhost: str | None = None) -> None:
        """Remove a policy (no error if there is none); re-applied before this returns."""
        self._clear_policy(name, vhost, False)

    def set_operator_policy(self, name: str, pattern: str, definition: dict, apply_to: str = "all",
                            priority: int = 0, vhost: str | None = None) -> None:
        """Add or replace an operator policy (expires, message-ttl, max-length,
        max-length-bytes, delivery-limit: caps merged with the policy's by the minimum)."""
        self._set_policy(name, pattern, definition, apply_to, priority, vhost, True)

    def clear_operator_policy(self, name: str, vhost: str | None = None) -> None:
        self._clear_policy(name, vhost, True)

    def policies(self, vhost: str | None = None, operator: bool = False) -> list[dict]:
        """The policies (or operator policies) as the management API lists them."""
        def run() -> list[dict]:
            return [p.as_json() for p in self._core().policies.list(vhost, operator=operator)]

        return self._call(run)

    def _set_policy(self, name: str, pattern: str, definition: dict, apply_to: str, priority: int,
                    vhost: str | None, operator: bool) -> None:
        where = self.vhost if vhost is None else vhost

        def run() -> None:
            core = self._core()
            if where not in core.vhosts:
                raise ValueError(f"no vhost {where!r}")
            core.policies.set(where, name, pattern, definition, priority, apply_to, operator=operator)
            core.policies.drain()
            self._flush_all()
            self._changed()

        self._call(run)

    def _clear_policy(self, name: str, vhost: str | None, operator: bool) -> None:
        where = self.vhost if vhost is None else vhost

        def run() -> None:
            core = self._core()
            core.policies.clear(where, name, operator=operator)
            core.policies.drain()
            self._flush_all()
            self._changed()

        self._call(run)

    def export_definitions(self) -> dict:
        """The broker's definitions, in RabbitMQ's JSON shape (as `rabbitmqctl export_definitions`)."""
        from minimq.broker.definitions import export_definitions

        return self._call(lambda: export_definitions(self._core()))

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost and everything in it; its connections are closed (320)."""
        def run() -> None:
            core = self._core()
            if name not in core.vhosts:
                return
            for proto in self._protocols():
                session = proto.session
                if session is not None and session.vhost is not None and session.vhost.name == name:
                    self._close_connection(proto, ConnectionForced(f"vhost '{name}' is deleted"))
            core.delete_vhost(name)
            self._changed()

        self._call(run)
        if name in self._vhosts:
            self._vhosts.remove(name)

    def reset(self, vhost: str | None = None) -> None:
        """Delete every queue and exchange of a vhost except the predeclared ones ('' and amq.*),
        and every binding left on those. Connections stay open; consumers of deleted queues
        get basic.cancel (if they asked for consumer_cancel_notify)."""
        def run() -> None:
            v = self._vhost(vhost)
            for q in list(v.queues.values()):
                v.delete_queue(q)
            for name in list(v.exchanges):
                if name != "" and not name.startswith("amq."):
                    v.delete_exchange(name)
            for name, ex in list(v.exchanges.items()):
                if name == "":
                    continue
                for dest, key, args in list(ex.kind.bindings()):
                    v.unbind(ex, dest, key, args)
            self._flush_all()
            self._changed()

        self._call(run)

    # ================================================================ faults

    def _find(self, which: Any) -> _Protocol:
        if isinstance(which, ConnectionInfo):
            which = which.id
        for proto in self._protocols():
            if isinstance(which, int) and proto.id == which:
                return proto
            if isinstance(which, str) and proto.session is not None:
                props = getattr(proto.session.conn, "client_properties", None) or {}
                if props.get("connection_name") == which or proto.peer == which:
                    return proto
        raise KeyError(f"no connection {which!r}")

    def _flush_all(self) -> None:
        for proto in self._protocols():
            proto.flush()

    def _close_connection(self, proto: _Protocol, error: AMQPError) -> None:
        session = proto.session
        if session is None:
            return
        if session.conn.state is ConnState.OPEN:
            session.conn.close(error)
            session.release()
            proto.flush()
        else:
            proto.abort()

    def drop_connection(self, which: Any = None, *, code: int | None = None, text: str = FORCED_TEXT) -> int:
        """Drop a connection (by id, connection_name or ConnectionInfo; None: all of them).

        Without `code` the TCP connection is aborted (a reset, as a crash or a network
        failure looks). With `code` the broker sends connection.close with that reply code
        and text, e.g. 320 CONNECTION_FORCED as `rabbitmqctl close_connection` does.
        Returns how many connections it dropped.
        """
        def run() -> int:
            protos = self._protocols() if which is None else [self._find(which)]
            for proto in protos:
                if code is None:
                    proto.abort()
                else:
                    self._close_connection(proto, error_for_code(code, text))
            self._changed()
            return len(protos)

        return self._call(run)

    def close_channel(self, which: Any, channel: int, *, code: int = 406, text: str = FORCED_TEXT) -> None:
        """Close one channel of a connection from the broker side with channel.close(code, text).

        What the channel held is released as on any channel error: consumers cancelled,
        unacked messages requeued.
        """
        def run() -> None:
            proto = self._find(which)
            session = proto.session
            assert session is not None
            if channel not in session.channels:
                raise KeyError(f"connection {proto.id} has no open channel {channel}")
            session.close_channel(channel, error_for_code(code, text))
            proto.flush()
            self._changed()

        self._call(run)

    def break_exchange(self, name: str, on: Iterable[str] = ("route",), vhost: str | None = None) -> None:
        """Make an exchange's routing raise, as a bug inside the broker would.

        `on` names where: "route" (publishing or dead-lettering through it) and/or "unbind"
        (removing its bindings, as deleting a queue bound from it does). The error is
        minimq.testing.faults.InjectedFault. Use it to check what an internal error costs:
        a confirm-mode publisher gets basic.nack and a 541 connection.close; a connection
        torn down across the fault still requeues, cancels and deletes everything else.
        `repair_exchange` undoes it.
        """
        points = tuple(on)

        def run() -> None:
            ex = self._vhost(vhost).get_exchange(name)
            inner = ex.kind.inner if isinstance(ex.kind, FaultyRouting) else ex.kind
            ex.kind = FaultyRouting(inner, name, points)

        self._call(run)

    def repair_exchange(self, name: str, vhost: str | None = None) -> None:
        """Undo `break_exchange`: the exchange routes (and unbinds) normally again."""
        def run() -> None:
            ex = self._vhost(vhost).exchanges.get(name)
            if ex is not None and isinstance(ex.kind, FaultyRouting):
                ex.kind = ex.kind.inner

        self._call(run)

    def reorder_confirms(self, on: bool = True, *, seed: int | None = None) -> None:
        """Confirm out of publish order, as RabbitMQ may (off by default).

        While on, whenever several publishes of a channel are confirmed at once they are
        acked as individual acks of later ones first, then one ack (multiple) for the rest:
        e.g. `ack 2, ack 4, ack 7 multiple` for publishes 1..7. Every publish is still
        confirmed exactly once. Use it to catch publishers that assume in-order confirms.
        `seed` makes the pattern repeatable; `reorder_confirms(False)` turns it off.
        """
        order = ConfirmReordering(seed) if on else None

        def run() -> None:
            self._confirm_order = order
            if self.core is not None:
                self.core.confirm_order = order

        if self.running:
            self._call(run)
        else:
            run()

    @property
    def blocked(self) -> bool:
        return self._blocked is not None

    def block(self, reason: str = "low on memory") -> None:
        """Block publishers, as RabbitMQ does under a memory or disk alarm.

        As RabbitMQ 3.10: a connection that publishes while blocked is no longer read from
        (that publish, and everything after it, waits until `unblock()`; nothing is lost)
        and, if it announced the `connection.blocked`
        capability, gets connection.blocked(reason) then; idle and consumer-only
        connections are neither paused nor told. `unblock()` sends connection.unblocked to
        the connections that were told.
        This raises the server's own resource alarm by hand ('low on disk' -> the disk alarm).
        """
        def run() -> None:
            if self._blocked is not None and self.server is not None:
                self.server.set_alarm(resource_of(self._blocked), False)
            self._blocked = reason
            if self.server is not None:
                self.server.set_alarm(resource_of(reason), True)
            self._changed()

        self._call(run)

    def unblock(self) -> None:
        def run() -> None:
            if self._blocked is not None and self.server is not None:
                self.server.set_alarm(resource_of(self._blocked), False)
            self._blocked = None
            self._changed()

        self._call(run)

    def __repr__(self) -> str:
        state = f"on {self.host}:{self.port}" if self.running else "stopped"
        return f"<minimq.testing.Broker {state} vhost={self.vhost!r}>"


def _durable_state(core: CoreBroker) -> Any:
    """What a store would have recovered: a restart of an in-memory broker keeps it."""
    from minimq.store.store import Recovered, RecoveredQueue, StoredMessage

    out = Recovered()
    for vname, v in core.vhosts.items():
        for name, ex in v.exchanges.items():
            if ex.durable and name and not name.startswith("amq."):
                out.exchanges.append(
                    (vname, name, ex.type_name, True, ex.auto_delete, ex.internal, copy.deepcopy(ex.arguments))
                )
        for name, q in v.queues.items():
            if not q.durable or q.exclusive:
                continue
            rq = RecoveredQueue(vname, name, q.auto_delete, copy.deepcopy(q.arguments))
            source = q.messages() if hasattr(q, "messages") else iter(q.ready)
            for m in source:
                if m.persistent:
                    rq.messages.append(StoredMessage(0, m.exchange, m.routing_key, m.header, m.body, m.redelivered))
            out.queues.append(rq)
        for name, ex in v.exchanges.items():
            if not name or not ex.durable:
                continue
            for dest, key, args in ex.kind.bindings():
                is_x = isinstance(dest, Exchange)
                if dest.durable and (is_x or not dest.exclusive):
                    out.bindings.append((vname, name, dest.name, is_x, key, copy.deepcopy(args)))
    return out


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _timeout(waiter: _Waiter, timeout: float, what: str | None) -> TimeoutError:
    desc = what or getattr(waiter.predicate, "__qualname__", repr(waiter.predicate))
    text = f"timed out after {timeout}s waiting for {desc}"
    if waiter.error is not None:
        text += f" (last error: {waiter.error!r})"
    return TimeoutError(text)


def _access_for(users: dict[str, Any] | None, permissions: dict | None) -> AccessControl:
    """The access model a test broker starts with (see Broker's docstring)."""
    if users is None:
        access = AccessControl.default()
    else:
        access = AccessControl()
        for name, spec_ in users.items():
            if isinstance(spec_, str):
                password, tags = spec_, ("administrator",) if name == "guest" else ()
            else:
                password, tags = str(spec_.get("password", "")), tuple(spec_.get("tags", ()))
            access.add_user(name, password, tags=tags)
    if permissions is not None:
        # Exactly these permissions: forget the fresh node's defaults.
        access.permissions.clear()
        for user, per_vhost in permissions.items():
            if user not in access.users:
                raise ValueError(f"permissions for unknown user {user!r} (add it to users=)")
            for vhost, perms in per_vhost.items():
                if isinstance(perms, str):
                    perms = (perms, perms, perms)
                configure, write, read = perms
                access.set_permissions(user, vhost, configure, write, read)
    return access


def _read_definitions(definitions: str | Path | dict | None) -> dict | None:
    if definitions is None or isinstance(definitions, dict):
        return copy.deepcopy(definitions)
    import json

    with open(definitions, "rb") as f:
        return json.loads(f.read())
