"""Listening sockets for a broker: plain AMQP and, optionally, AMQPS (TLS)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import time

from minimq.broker import Broker
from minimq.server.alarms import disk_limit_bytes, format_bytes, reason_text
from minimq.server.limits import ServerLimits
from minimq.server.transport import AMQPServerProtocol

log = logging.getLogger("minimq.server")

STORE_RETRY_INTERVAL = 0.25  # seconds between retries of a write the disk refused


class Server:
    """A Broker served on TCP (and TLS when given a context), in the running event loop."""

    def __init__(
        self,
        broker: Broker | None = None,
        host: str = "127.0.0.1",
        port: int = 5672,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tls_port: int = 5671,
        drive_timers: bool = True,
        protocol_class: type[AMQPServerProtocol] = AMQPServerProtocol,
        memory_limit: int | None = None,
        memory_check_interval: float = 1.0,
        disk_free_limit: int | float | None = None,
        disk_check_interval: float = 1.0,
        limits: ServerLimits | None = None,
    ) -> None:
        self.broker = broker if broker is not None else Broker(clock=time.time)
        # drive_timers=False: something else calls broker.tick() (minimq.testing's virtual
        # clock), so the loop arms no real-time timer for the core's deadlines.
        self.drive_timers = drive_timers
        self.protocol_class = protocol_class
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.requested_tls_port = tls_port
        self.limits = limits if limits is not None else ServerLimits()
        self.connections: set[AMQPServerProtocol] = set()
        self.handshaking: dict[AMQPServerProtocol, None] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self.port: int | None = None
        self.tls_port: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        # Memory alarm: above `memory_limit` bytes held (messages ready and unacked, content
        # being received, output waiting, caches: see held_memory), or of RSS while messages
        # wait in queues, publishing connections are blocked, as RabbitMQ's
        # vm_memory_high_watermark does. Checked every `memory_check_interval` seconds and
        # whenever `input_check` bytes have arrived since the last check.
        self.memory_limit = memory_limit
        self.memory_check_interval = memory_check_interval
        self.input_bytes = 0
        self.input_check = max(1 << 20, (memory_limit or 0) // 32)
        self._memory_timer: asyncio.TimerHandle | None = None
        # Disk alarm: below `disk_free_limit` free bytes on the data dir's filesystem (an int,
        # or a float fraction of its size), as RabbitMQ's disk_free_limit. Only with a store.
        self.disk_free_limit = disk_free_limit
        self.disk_check_interval = disk_check_interval
        self.disk_free: int | None = None  # free bytes at the last check
        self._disk_timer: asyncio.TimerHandle | None = None
        # The resource alarms on now ("memory", "disk"): publishers are blocked while any is.
        self.alarms: set[str] = set()
        # Durable store: writes once per loop iteration, fsync in a worker thread.
        self._store_flush_scheduled = False
        self._store_retry: asyncio.TimerHandle | None = None
        self._syncing = False
        self._sync_executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def alarm(self) -> str | None:
        """The connection.blocked reason while any alarm is on (None when none is)."""
        return reason_text(self.alarms) if self.alarms else None

    def set_alarm(self, resource: str, active: bool) -> None:
        """Raise or clear one resource alarm.

        As RabbitMQ: connections are blocked when the first alarm goes on and unblocked
        when the last one clears; a second alarm while blocked sends nothing more.
        """
        if active == (resource in self.alarms):
            return
        was_on = bool(self.alarms)
        if active:
            self.alarms.add(resource)
        else:
            self.alarms.discard(resource)
        reason = self.alarm
        if reason is not None:
            for conn in list(self.connections):
                conn.alarm_on(reason)
        elif was_on:
            for conn in list(self.connections):
                conn.alarm_off()

    def _factory(self) -> AMQPServerProtocol:
        proto = self.protocol_class(self.broker, self.connections)
        proto.limits = self.limits
        proto.handshaking = self.handshaking
        if self.memory_limit:
            proto.memory_watch = self
        proto.alarm = self.alarm
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.drive_timers:
            self.broker.timers.on_earlier = self._arm
            self._arm_next()
        if self.broker.store is not None:
            self.broker.store.on_dirty = self._store_dirty
            self._sync_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minimq-fsync")
            if self.broker.store.pending:
                self._store_dirty()
        if self.memory_limit:
            self._memory_timer = loop.call_later(self.memory_check_interval, self._check_memory)
        server = await loop.create_server(self._factory, self.host, self.requested_port, backlog=1024)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if self.ssl_context is not None:
            tls = await loop.create_server(
                self._factory, self.host, self.requested_tls_port, ssl=self.ssl_context, backlog=1024,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout,
            )
            self._servers.append(tls)
            self.tls_port = tls.sockets[0].getsockname()[1]
        if self.disk_free_limit and self.broker.store is not None:
            log.info("disk free limit set to %s", self._disk_limit_text())
            self._check_disk()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def banner(self) -> str:
        text = f"minimq listening on amqp://{self.host}:{self.port}"
        if self.tls_port is not None:
            text += f" and amqps://{self.host}:{self.tls_port}"
        return text

    # The core's deadlines (TTL, expiry, ...) are in the broker clock's time; one loop timer
    # always waits for the earliest of them.

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_when is not None and self._timer_when <= when:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - self.broker.clock())
        self._timer_when = when
        self._timer = loop.call_later(delay, self._fire)

    def _arm_next(self) -> None:
        when = self.broker.timers.next_deadline()
        self._timer = None
        self._timer_when = None
        if when is not None:
            self._arm(when)

    def _fire(self) -> None:
        try:
            self.broker.tick()
        except Exception:  # a bug in a timer must not stop the others
            log.exception("error in a broker timer")
        self._arm_next()

    def held_memory(self) -> dict[str, int]:
        """Bytes held, by kind: the core's (ready, unacked, receiving, caches) and output."""
        held = self.broker.held_memory()
        held["output"] = sum(conn.pending_output() for conn in self.connections)
        return held

    def _check_memory(self) -> None:
        loop = asyncio.get_running_loop()
        self._memory_timer = loop.call_later(self.memory_check_interval, self._check_memory)
        self.check_memory_now()

    def check_memory_now(self) -> None:
        """Raise or clear the memory alarm.

        The count of what the broker holds decides, whatever kind of memory grows. RSS is a
        backstop for what the count misses: above the limit it raises the alarm once the
        messages held (ready and unacked) are at least half of it. Alone it could not: Python
        rarely gives freed memory back, so RSS would keep publishers blocked long after the
        queues drained.
        """
        self.input_bytes = 0
        limit = self.memory_limit
        if not limit:
            return
        held = self.held_memory()
        total = sum(held.values())
        messages = held["ready"] + held["unacked"]
        on = "memory" in self.alarms
        if not on:
            over = total > limit
            if not over and messages > limit // 2:
                rss = rss_bytes()
                over = rss is not None and rss > limit
            if over:
                log.warning(
                    "memory alarm: %d MB held (%s), limit %d MB: publishers blocked",
                    total >> 20, ", ".join(f"{k} {v >> 20} MB" for k, v in held.items()), limit >> 20,
                )
                self.set_alarm("memory", True)
        elif total < limit * 0.9 and not (messages > limit // 2 and (rss_bytes() or 0) >= limit * 0.9):
            log.info("memory alarm cleared: %d MB held", total >> 20)
            self.set_alarm("memory", False)

    def _disk_limit_text(self) -> str:
        limit = self.disk_free_limit
        if isinstance(limit, float):
            return f"{limit:g} of the disk"
        return format_bytes(int(limit or 0))

    def _check_disk(self) -> None:
        """Raise or clear the disk alarm from the data dir's free space (one statvfs a second)."""
        store = self.broker.store
        limit = self.disk_free_limit
        if store is None or not limit:
            return
        self._disk_timer = asyncio.get_running_loop().call_later(self.disk_check_interval, self._check_disk)
        try:
            free, total = store.disk_space()
        except OSError as exc:
            log.debug("cannot read free disk space of %s: %s", store.path, exc)
            return
        self.disk_free = free
        need = disk_limit_bytes(limit, total)
        on = "disk" in self.alarms
        if not on and free < need:
            log.warning(
                "disk alarm: %s free on %s, limit %s: publishers blocked",
                format_bytes(free), store.path, format_bytes(need),
            )
            self.set_alarm("disk", True)
        elif on and free >= need:
            log.info("disk alarm cleared: %s free on %s", format_bytes(free), store.path)
            self.set_alarm("disk", False)

    # Group commit: everything the core logged during one loop iteration is written with
    # one os.write; one fsync (in a worker thread, so the loop keeps serving) covers all of
    # it, and the publisher confirms waiting for it are released when it returns. When the
    # disk refuses (ENOSPC, EIO), the records wait in memory and are retried on a timer and
    # with the next flush, never in a tight loop; confirms wait for them.

    def _store_dirty(self) -> None:
        if not self._store_flush_scheduled:
            self._store_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._store_flush)

    def _store_flush(self) -> None:
        self._store_flush_scheduled = False
        store = self.broker.store
        if store is None:
            return
        store.write()  # also when nothing is pending: it re-arms the store's on_dirty
        self._maybe_sync()
        if store.failing:
            self._arm_store_retry()

    def _arm_store_retry(self) -> None:
        if self._store_retry is None:
            self._store_retry = asyncio.get_running_loop().call_later(STORE_RETRY_INTERVAL, self._store_retry_due)

    def _store_retry_due(self) -> None:
        self._store_retry = None
        self._store_flush()

    def _release(self, position: int) -> None:
        try:
            self.broker.synced(position)
        except Exception:
            log.exception("error releasing confirms")

    def _maybe_sync(self) -> None:
        store = self.broker.store
        if store is None or self._syncing or self._sync_executor is None:
            return
        if store.needs_roll:
            store.roll()
            position = store.durable_position()
            if position > store.synced:
                self._release(position)
        if not store.needs_sync:
            return
        self._syncing = True
        round_ = store.sync_begin()
        fut = asyncio.get_running_loop().run_in_executor(self._sync_executor, store.sync_run, round_)
        fut.add_done_callback(lambda f: self._synced(round_, f))

    def _synced(self, round_: list, fut: asyncio.Future) -> None:
        self._syncing = False
        store = self.broker.store
        if store is None:
            return
        try:
            fut.result()
        except Exception:  # sync_run keeps OSErrors in the round; anything else is a bug
            log.exception("fsync round failed; confirms are held back")
        position = store.sync_end(round_)
        if position > store.synced:
            self._release(position)
        if store.failing:
            self._arm_store_retry()  # not at once: a failing disk must not spin the loop
            return
        self._store_flush()

    async def flush_store(self) -> None:
        """Write and fsync everything logged so far (used at shutdown)."""
        store = self.broker.store
        if store is None:
            return
        while self._syncing:
            await asyncio.sleep(0.001)
        if self._store_retry is not None:
            self._store_retry.cancel()
            self._store_retry = None
        if store.pending:
            store.write()
        if store.needs_sync:
            position = store.sync()
            if position > store.synced:
                self._release(position)

    async def stop(self) -> None:
        """Stop accepting, close every connection with 320 CONNECTION_FORCED."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for timer in (self._memory_timer, self._disk_timer):
            if timer is not None:
                timer.cancel()
        self._memory_timer = self._disk_timer = None
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            # Give peers a moment to read the close; then drop whoever is left.
            await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        await self.flush_store()
        if self._sync_executor is not None:
            self._sync_executor.shutdown(wait=True)
            self._sync_executor = None


def rss_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def make_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx
