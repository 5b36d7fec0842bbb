"""What runs inside one worker process: a consumer of one queue, or the periodic scheduler.

The supervisor starts these with multiprocessing's ``spawn`` context, so each process imports
the user's module itself (fresh code on reload, no inherited sockets or locks from the
parent) and talks to the supervisor over one `multiprocessing` pipe. The supervisor sends ``"stop"``
and ``("verdict", token, crash)`` answers. The worker sends ``("ready",)`` once it consumes;
``("begin", token, key, info, ask)`` before a handler runs (so the supervisor knows which
message a worker that dies was handling, see `delivery_key`; ``ask`` for a redelivered
message, which waits for the verdict: run it, or dead-letter it as a crash-looping poison
message); ``("end", token, counters)`` once the message is settled (the supervisor keeps the
counters, so a kill -9 loses none); and ``("count", counters)`` for the scheduler's events.
End-of-file on the pipe means the supervisor died, and the worker stops
gracefully rather than run unsupervised. SIGINT is ignored (a Ctrl-C at the terminal reaches
the whole process group; the supervisor decides what it means); SIGTERM is a graceful stop,
so ``kill`` of the process group behaves like ``kill`` of the supervisor.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Awaitable

import minimq.client
from minimq.client import ClientError, IncomingMessage, Message, ResourceLocked
from minimq.codec.properties import BasicProperties

from .app import App, ConsumerSpec, PeriodicSpec, Reject, Requeue, Retry, load_app
from .context import HandlerMessage, Publisher, as_message, error_reply

__all__ = ["WorkerSpec", "worker_main", "declare_consumer_topology", "delivery_key",
           "EXIT_CONNECT", "COUNTERS"]

log = logging.getLogger("minimq.worker")

#: Exit code of a worker that could not connect or declare its topology at start.
EXIT_CONNECT = 3
#: Exit code of a worker whose consumer the broker cancelled or whose connection died.
EXIT_LOST = 4

LOG_FORMAT = "%(asctime)s %(levelname)s [%(worker)s] %(name)s: %(message)s"
_TRACEBACK_LIMIT = 4000
#: How long a worker waits for the supervisor's verdict on a redelivered message before it
#: runs the handler anyway (the supervisor answers within one loop turn when it is healthy).
VERDICT_TIMEOUT = 10.0
#: The per-consumer counters, in the order status lines show them.
COUNTERS = ("processed", "failed", "retried", "dead", "requeued", "rejected", "crashed",
            "replied")
_DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue",
                  "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                  "x-last-death-reason")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a spawned worker needs, picklable: it re-imports the app by reference."""

    app_ref: str
    kind: str  # "consumer" or "scheduler"
    name: str
    index: int
    url: str
    grace: float
    log_level: str = "info"

    @property
    def label(self) -> str:
        return f"{self.name}#{self.index}"


def setup_logging(level: str, label: str) -> None:
    """One format for the supervisor and every worker; the label says who is talking."""

    class _Label(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.worker = label
            return True

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_Label())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def worker_main(spec: WorkerSpec, pipe: Pipe) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(spec.log_level, f"{spec.label} {os.getpid()}")
    try:
        app = load_app(spec.app_ref)
    except Exception:
        log.exception("cannot load %s", spec.app_ref)
        sys.exit(2)
    control = Control(pipe)
    if spec.kind == "scheduler":
        runner: Any = SchedulerWorker(app, spec, control)
    else:
        runner = ConsumerWorker(app, app.consumers[spec.name], spec, control)
    code = asyncio.run(runner.main())
    logging.shutdown()
    # Handler threads that outlived the grace period cannot be joined; their messages stay
    # unacked and the broker requeues them when this process's connection drops.
    os._exit(code)


class Control:
    """The worker's end of the supervisor pipe, read from the event loop."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.stop: asyncio.Event | None = None
        self.orphaned = False
        self.pending: dict[int, asyncio.Future[Any]] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        self.stop = asyncio.Event()
        loop.add_reader(self.pipe.fileno(), self._readable)
        try:
            loop.add_signal_handler(signal.SIGTERM, self._request_stop, "SIGTERM")
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
        return self.stop

    def _request_stop(self, why: str) -> None:
        assert self.stop is not None
        if not self.stop.is_set():
            log.info("stop requested (%s)", why)
            self.stop.set()

    def _readable(self) -> None:
        try:
            while self.pipe.poll():
                message = self.pipe.recv()
                if message == "stop":
                    self._request_stop("supervisor")
                elif isinstance(message, tuple) and message[0] == "verdict":
                    future = self.pending.pop(message[1], None)
                    if future is not None and not future.done():
                        future.set_result(message[2])
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self.orphaned = True
            log.warning("supervisor is gone; stopping")
            self._release()
            assert self.stop is not None
            self.stop.set()

    def _release(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result(None)
        self.pending.clear()

    def send(self, message: tuple[Any, ...]) -> None:
        if self.orphaned:
            return
        try:
            self.pipe.send(message)
        except (OSError, ValueError):
            self.orphaned = True
            self._release()

    async def ask(self, token: int, message: tuple[Any, ...]) -> Any:
        """Send ``message`` and wait for the supervisor's ``("verdict", token, answer)``;
        None if there is no supervisor or it does not answer in `VERDICT_TIMEOUT`."""
        future = asyncio.get_running_loop().create_future()
        self.pending[token] = future
        self.send(message)
        try:
            return await asyncio.wait_for(future, VERDICT_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("no verdict from the supervisor within %.0fs; running the handler",
                        VERDICT_TIMEOUT)
            return None
        finally:
            self.pending.pop(token, None)


async def _first(awaitable: Awaitable[Any], stop: asyncio.Event) -> tuple[bool, Any]:
    """Await ``awaitable`` unless ``stop`` is set first: (True, result) or (False, None).

    Losing the race cancels the awaitable; for a queue iterator's next() that takes nothing
    out of the buffer, so no message is dropped.
    """
    task = asyncio.ensure_future(awaitable)
    if stop.is_set():
        task.cancel()
        return False, None
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    return False, None


def _error_headers(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind = type(exc)
    return {
        "x-exception-type": f"{kind.__module__}.{kind.__qualname__}",
        "x-exception-message": str(exc)[:1000],
        "x-exception-traceback": tb[-_TRACEBACK_LIMIT:],
        "x-failed-at": int(time.time()),
        "x-failed-host": f"{os.uname().nodename}:{os.getpid()}",
    }


def delivery_key(message: IncomingMessage) -> str:
    """An identity for a message that survives its redeliveries, on any broker.

    Delivery tags change with each delivery and only quorum queues count deliveries, so the
    key is a digest of what the broker hands back unchanged: exchange, routing key, message
    id, correlation id, timestamp and body (not the headers, which a broker may add to).
    Two identical messages share a key; they would crash a worker alike, so counting their
    crashes together is what we want.
    """
    digest = hashlib.blake2b(digest_size=12)
    for part in (message.exchange, message.routing_key, message.message_id or "",
                 message.correlation_id or "", str(message.timestamp or "")):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    digest.update(message.body)
    return digest.hexdigest()


def _copy_properties(message: IncomingMessage, headers: dict[str, Any]) -> BasicProperties:
    old = message.properties
    return BasicProperties(
        content_type=old.content_type, content_encoding=old.content_encoding,
        headers=headers, delivery_mode=old.delivery_mode, priority=old.priority,
        correlation_id=old.correlation_id, reply_to=old.reply_to, expiration=None,
        message_id=old.message_id, timestamp=old.timestamp, type=old.type,
        user_id=old.user_id, app_id=old.app_id)


async def declare_consumer_topology(channel: minimq.client.Channel, spec: ConsumerSpec, *,
                                    broadcast_queue: bool = True
                                    ) -> minimq.client.Queue | None:
    """Declare the consumer's exchanges, its work queue and the queue's bindings.

    Idempotent: the supervisor runs it once before starting workers (so a mistake such as an
    inequivalent existing queue is reported once, clearly) and every worker runs it again at
    start (so workers recover a broker that lost its non-durable state). A broadcast
    consumer's queue is per process, so only a worker declares it (``broadcast_queue``): exclusive,
    auto-delete and server-named. Retry queues and the dead-letter queue are declared when a
    message first needs them (`ConsumerWorker`), not here.
    """
    declared: set[str] = set()
    if spec.exchange and not spec.exchange.startswith("amq."):
        await channel.declare_exchange(spec.exchange, spec.exchange_type, durable=spec.durable,
                                       arguments=spec.exchange_arguments or None)
        declared.add(spec.exchange)
    for binding in spec.extra_bindings:
        if binding.exchange_type and binding.exchange not in declared \
                and not binding.exchange.startswith("amq."):
            await channel.declare_exchange(binding.exchange, binding.exchange_type,
                                           durable=spec.durable)
            declared.add(binding.exchange)
    if spec.broadcast:
        if not broadcast_queue:
            return None
        work = await channel.declare_queue("", exclusive=True, auto_delete=True,
                                           arguments=spec.queue_arguments or None)
    else:
        work = await channel.declare_queue(spec.queue, durable=spec.durable,
                                           arguments=spec.queue_arguments or None)
    for binding in spec.bindings:
        await work.bind(binding.exchange, binding.routing_key, arguments=binding.arguments)
    return work


async def declare_retry_queue(channel: minimq.client.Channel, spec: ConsumerSpec,
                              delay_ms: int) -> None:
    """``<queue>.retry.<ms>``: holds a message ``ms`` then dead-letters it back to the work
    queue through the default exchange. One queue per delay keeps every queue FIFO in expiry
    order (a queue TTL expires only from the head)."""
    await channel.declare_queue(spec.retry_queue(delay_ms), durable=True, arguments={
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": spec.queue,
    })


class Stats:
    """Counters a worker keeps for its own final log line (the supervisor keeps the real
    record, from the ``end``/``count`` messages)."""

    def __init__(self, fields: tuple[str, ...] = COUNTERS) -> None:
        self.values = dict.fromkeys(fields, 0)

    def add(self, names: tuple[str, ...] | list[str]) -> None:
        for name in names:
            self.values[name] = self.values.get(name, 0) + 1

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


class _Base:
    def __init__(self, spec: WorkerSpec, control: Control) -> None:
        self.spec = spec
        self.control = control
        self.stats = Stats()
        self.stop: asyncio.Event = None  # type: ignore[assignment]

    async def main(self) -> int:
        self.stop = self.control.attach(asyncio.get_running_loop())
        return await self.run()

    async def run(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    async def connect(self, robust: bool) -> minimq.client.Connection | None:
        """Connect, retrying with backoff (0.5 s doubling to 30 s) until it works or we are
        told to stop (then None). A broker that is down is an outage to wait out, not a
        crash: exiting would feed the supervisor's crash-loop limit and end the runner."""
        delay = 0.5
        while True:
            try:
                return await minimq.client.connect(self.spec.url, robust=robust)
            except (ClientError, OSError) as exc:
                log.warning("cannot connect to %s: %s; retrying in %.1fs", self.spec.url, exc,
                            delay)
            got, _ = await _first(asyncio.sleep(delay), self.stop)
            if not got:
                return None
            delay = min(delay * 2, 30.0)


class ConsumerWorker(_Base):
    """Consume one queue, run the handler per message, settle by the handler's outcome."""

    def __init__(self, app: App, consumer: ConsumerSpec, spec: WorkerSpec,
                 control: Control) -> None:
        super().__init__(spec, control)
        self.app = app
        self.consumer = consumer
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        #: Retry delays (ms) whose queue this process has declared; "delayed" and "dead"
        #: for the delayed-message exchange and the dead-letter queue.
        self.declared: set[int | str] = set()
        self.publisher: minimq.client.Channel | None = None
        self.tokens = itertools.count(1)

    async def run(self) -> int:
        c = self.consumer
        connection = await self.connect(robust=True)
        if connection is None:
            return 0
        try:
            channel = await connection.channel(prefetch_count=c.prefetch)
            self.publisher = await connection.channel(publisher_confirms=True)
            self.app.publisher = Publisher(self.publisher, asyncio.get_running_loop())
            queue = await declare_consumer_topology(channel, c)
            assert queue is not None
        except ClientError as exc:
            log.error("cannot declare %s: %s", c.describe_queue, exc)
            await connection.close()
            return EXIT_CONNECT
        if not c.is_async:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                c.concurrency, thread_name_prefix=f"{c.name}-handler")
        code = 0
        in_flight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(c.concurrency)
        iterator = queue.iterator()
        await iterator.start()
        log.info("consuming %s (prefetch %d, concurrency %d)", queue.name, c.prefetch,
                 c.concurrency)
        self.control.send(("ready",))
        try:
            while not self.stop.is_set():
                got, _ = await _first(slots.acquire(), self.stop)
                if not got:
                    break
                try:
                    got, message = await _first(iterator.__anext__(), self.stop)
                except (StopAsyncIteration, ClientError) as exc:
                    slots.release()
                    log.error("consumer on %s ended: %s", queue.name,
                              exc or "cancelled by the broker")
                    code = EXIT_LOST
                    break
                if not got:
                    slots.release()
                    break
                if message.stale:
                    slots.release()  # from before a reconnect: the broker has requeued it
                    continue
                task = asyncio.create_task(self._handle(message))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _t: slots.release())
        finally:
            # Stop deliveries first, then let what is running finish; prefetched messages
            # that never started stay unacked and go back to the queue when we disconnect.
            try:
                await asyncio.wait_for(iterator.close(), 5)
            except (asyncio.TimeoutError, ClientError):
                pass
            if in_flight:
                log.info("waiting up to %.1fs for %d in-flight handler(s)", self.spec.grace,
                         len(in_flight))
                _, pending = await asyncio.wait(in_flight, timeout=self.spec.grace)
                if pending:
                    log.warning("grace period over: %d handler(s) unfinished; their messages "
                                "stay unacked and will be redelivered", len(pending))
                    for task in pending:
                        task.cancel()
            try:
                await asyncio.wait_for(connection.close(), 10)
            except (asyncio.TimeoutError, ClientError):
                pass
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped: %s", self.stats)
        return code

    async def _call(self, message: HandlerMessage) -> Any:
        handler = self.consumer.handler
        if self.executor is None:
            result = await handler(message)
        else:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, handler,
                                                                      message)
        await message.flush()
        return result

    async def _handle(self, message: IncomingMessage) -> None:
        """Tell the supervisor, run the handler, settle by its outcome, tell the supervisor.

        A redelivered message waits for the supervisor's verdict first: if workers died
        handling it ``max_crashes`` times it is dead-lettered without running the handler.
        The counters sent with ``end`` are counted only once the settle went out.
        """
        token = next(self.tokens)
        key = delivery_key(message)
        info = {"message_id": message.message_id, "routing_key": message.routing_key,
                "redelivered": message.redelivered, "started": time.time()}
        if message.redelivered:
            crash = await self.control.ask(token, ("begin", token, key, info, True))
        else:
            self.control.send(("begin", token, key, info, False))
            crash = None
        counted: list[str] = []
        try:
            if crash:
                counted += await self._dead_letter_crashed(message, crash)
            else:
                counted += await self._run(message)
        except ClientError as exc:
            # The outcome could not be recorded (connection lost, channel closed): the
            # message is still unacked, and the broker redelivers it.
            log.warning("could not settle message %s: %s", message.delivery_tag, exc)
        finally:
            self.stats.add(counted)
            self.control.send(("end", token, tuple(counted)))

    async def _run(self, message: IncomingMessage) -> list[str]:
        """Run the handler; return the counters its outcome adds. 'failed' is counted as
        soon as the handler raised, even if recording the retry fails after it."""
        failed: list[str] = []
        wrapped = HandlerMessage(message, self.publisher, asyncio.get_running_loop())
        try:
            result = await self._call(wrapped)
        except Requeue:
            if not message.settled:
                await message.nack(requeue=True)
            return ["requeued"]
        except Exception as exc:
            if isinstance(exc, Reject):
                failed.append("rejected")
            else:
                failed.append("failed")
                log.warning("%s failed on message %s: %s: %s", self.consumer.name,
                            message.message_id or message.delivery_tag, type(exc).__name__, exc)
            if message.settled:
                return failed
            try:
                if self.consumer.rpc_errors and message.reply_to and not isinstance(exc, Retry):
                    await wrapped.reply(error_reply(exc))
                    await message.ack()
                    return failed + ["replied"]
                if isinstance(exc, Reject):
                    await self._dead_letter(message, exc,
                                            message.headers.get("x-retry-count", 0))
                    return failed + ["dead"]
                return failed + [await self._retry(message, exc)]
            except ClientError:
                self.stats.add(failed)
                self.control.send(("count", tuple(failed)))
                raise
        counted = ["processed"]
        if message.reply_to and result is not None and not wrapped.replied:
            await wrapped.reply(result)
        if wrapped.replied:
            counted.append("replied")
        if not message.settled:
            await message.ack()
        return counted

    def _headers(self, message: IncomingMessage, exc: BaseException | None,
                 attempts: int) -> dict[str, Any]:
        headers = {k: v for k, v in message.headers.items() if k not in _DEATH_HEADERS}
        headers.setdefault("x-original-exchange", message.exchange)
        headers.setdefault("x-original-routing-key", message.routing_key)
        headers["x-retry-count"] = attempts
        if exc is not None:
            headers.update(_error_headers(exc))
        return headers

    async def _retry(self, message: IncomingMessage, exc: Exception) -> str:
        c = self.consumer
        policy = c.retry
        attempt = int(message.headers.get("x-retry-count", 0) or 0) + 1
        if attempt > policy.retries:
            await self._dead_letter(message, exc, attempt - 1)
            return "dead"
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = exc.delay.total_seconds() if hasattr(exc.delay, "total_seconds") \
                else float(exc.delay)  # type: ignore[union-attr]
            delay_ms = max(1, int(round(delay * 1000)))
        else:
            delay_ms = policy.delay_ms(attempt)
        headers = self._headers(message, exc, attempt)
        assert self.publisher is not None
        if policy.mode == "delayed":
            headers["x-delay"] = delay_ms
            if "delayed" not in self.declared:
                await self.publisher.declare_exchange(
                    c.retry_exchange, "x-delayed-message", durable=True,
                    arguments={"x-delayed-type": "direct"})
                work = await self.publisher.get_queue(c.queue)
                await work.bind(c.retry_exchange, c.queue)
                self.declared.add("delayed")
            await self.publisher.publish(
                Message(message.body, properties=_copy_properties(message, headers)),
                c.queue, c.retry_exchange)
        else:
            if delay_ms not in self.declared:
                await declare_retry_queue(self.publisher, c, delay_ms)
                self.declared.add(delay_ms)
            await self.publisher.publish(
                Message(message.body, properties=_copy_properties(message, headers)),
                c.retry_queue(delay_ms))
        await message.ack()
        log.info("retry %d/%d of message %s in %d ms", attempt, policy.retries,
                 message.message_id or message.delivery_tag, delay_ms)
        return "retried"

    async def _dead_letter(self, message: IncomingMessage, exc: BaseException,
                           attempts: int) -> None:
        c = self.consumer
        if not c.retry.dead_letter:
            await message.reject(requeue=False)
            log.error("dropped message %s after %d retries: %s: %s",
                      message.message_id or message.delivery_tag, attempts,
                      type(exc).__name__, exc)
            return
        headers = self._headers(message, exc, attempts)
        await self._publish_dead(message, headers)
        log.error("message %s dead-lettered to %s after %d retries: %s: %s",
                  message.message_id or message.delivery_tag, c.dead_queue, attempts,
                  type(exc).__name__, exc)

    async def _publish_dead(self, message: IncomingMessage, headers: dict[str, Any]) -> None:
        assert self.publisher is not None
        if "dead" not in self.declared:
            await self.publisher.declare_queue(self.consumer.dead_queue, durable=True)
            self.declared.add("dead")
        await self.publisher.publish(
            Message(message.body, properties=_copy_properties(message, headers)),
            self.consumer.dead_queue)
        await message.ack()

    async def _dead_letter_crashed(self, message: IncomingMessage,
                                   crash: dict[str, Any]) -> list[str]:
        """A poison message: workers died handling it ``crash["count"]`` times."""
        c = self.consumer
        what = f"the worker died {crash['count']} times handling this message " \
               f"(last: {crash['exit']})"
        name = message.message_id or message.delivery_tag
        if not c.retry.dead_letter:
            await message.reject(requeue=False)
            log.error("dropped poison message %s: %s", name, what)
            return ["crashed", "dead"]
        headers = self._headers(message, None, int(message.headers.get("x-retry-count", 0) or 0))
        headers.update({
            "x-exception-type": "WorkerCrashed",
            "x-exception-message": what,
            "x-crash-count": crash["count"],
            "x-crash-exit": crash["exit"],
            "x-failed-at": int(time.time()),
            "x-failed-host": f"{os.uname().nodename}:{os.getpid()}",
        })
        headers["x-crash-signal" if crash["code"] < 0 else "x-crash-exit-code"] = \
            crash["signal"] if crash["code"] < 0 else crash["code"]
        await self._publish_dead(message, headers)
        log.error("poison message %s dead-lettered to %s without running the handler: %s",
                  name, c.dead_queue, what)
        return ["crashed", "dead"]


def _as_outgoing(value: Any, job: PeriodicSpec, at: float) -> Message:
    """Turn a periodic function's return value into a message stamped with its tick."""
    ms = int(round(at * 1000))
    stamp = {"x-periodic-job": job.name, "x-scheduled-at": ms}
    if isinstance(value, Message):
        props = value.properties
        props.headers = {**(props.headers or {}), **stamp}
        if not props.message_id:
            props.message_id = f"{job.name}@{ms}"
        return value
    return as_message(value, headers={**job.headers, **stamp}, message_id=f"{job.name}@{ms}",
                      timestamp=int(at), persistent=True)


class SchedulerWorker(_Base):
    """Fire the app's periodic jobs, but only while holding the app's leader lock.

    The lock is an exclusive queue, ``minimq.scheduler.<app name>.leader``: the broker lets
    exactly one connection declare it and deletes it when that connection goes, on RabbitMQ
    and minimq alike. Every runner's scheduler tries to declare it; the one that succeeds
    fires the jobs, the others (405 RESOURCE_LOCKED) try again every
    ``app.scheduler_lock_retry`` seconds. The leader's connection is not robust: if it drops,
    the lock is gone and another runner may already lead, so it stops firing, reconnects and
    contends again. Jobs fire on a wall-clock grid (see
    `PeriodicSpec.next_fire`), so a new leader continues the old one's schedule.
    """

    def __init__(self, app: App, spec: WorkerSpec, control: Control) -> None:
        super().__init__(spec, control)
        self.app = app
        self.running: dict[str, asyncio.Task[None]] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="periodic")

    @property
    def lock_name(self) -> str:
        return f"minimq.scheduler.{self.app.name}.leader"

    async def run(self) -> int:
        self.stats = Stats(("fired", "failed"))
        self.control.send(("ready",))
        while not self.stop.is_set():
            connection = await self.connect(robust=False)
            if connection is None:
                break
            await self._term(connection)
            if not self.stop.is_set():
                log.warning("lost the broker connection; contending for the lock again")
        return 0

    async def _term(self, connection: minimq.client.Connection) -> None:
        """One connection's worth of contending for the lock and, once won, scheduling."""
        lost = asyncio.Event()
        connection.add_close_callback(lambda _c, _e: lost.set())
        try:
            if not await self._lead(connection, lost):
                return
            log.info("scheduler is the leader (lock %s); jobs: %s", self.lock_name,
                     ", ".join(self.app.periodics))
            self.control.send(("leader",))
            publisher = await connection.channel(publisher_confirms=True)
            self.app.publisher = Publisher(publisher, asyncio.get_running_loop())
            await self._schedule(publisher, lost)
        except ClientError as exc:
            log.error("scheduler connection failed: %s", exc)
        finally:
            running = [t for t in self.running.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=self.spec.grace)
            if not connection.is_closed:
                try:
                    await asyncio.wait_for(connection.close(), 10)
                except (asyncio.TimeoutError, ClientError):
                    pass

    async def _lead(self, connection: minimq.client.Connection, lost: asyncio.Event) -> bool:
        announced = False
        while not self.stop.is_set() and not lost.is_set():
            channel = await connection.channel()
            try:
                await channel.declare_queue(self.lock_name, exclusive=True)
                return True
            except ResourceLocked:
                if not announced:
                    log.info("another scheduler holds %s; standing by", self.lock_name)
                    announced = True
            waiter = asyncio.ensure_future(lost.wait())
            await _first(asyncio.wait({waiter}, timeout=self.app.scheduler_lock_retry),
                         self.stop)
            waiter.cancel()
        return False

    async def _schedule(self, publisher: minimq.client.Channel, lost: asyncio.Event) -> int:
        now = time.time()
        due = {name: job.next_fire(now) for name, job in self.app.periodics.items()}
        while not self.stop.is_set():
            if lost.is_set():
                log.error("lost the broker connection; no longer the leader")
                return EXIT_LOST
            name = min(due, key=due.__getitem__)
            wait = due[name] - time.time()
            if wait > 0:
                waiter = asyncio.ensure_future(lost.wait())
                await _first(asyncio.wait({waiter}, timeout=wait), self.stop)
                waiter.cancel()
                continue
            at = due[name]
            job = self.app.periodics[name]
            due[name] = job.next_fire(max(at, time.time()))
            previous = self.running.get(name)
            if previous is not None and not previous.done():
                log.warning("periodic %s still running; skipping the %s run", name,
                            time.strftime("%H:%M:%S", time.localtime(at)))
                continue
            task = asyncio.create_task(self._fire(job, at, publisher))
            self.running[name] = task
        return 0

    async def _fire(self, job: PeriodicSpec, at: float, publisher: minimq.client.Channel) -> None:
        try:
            if job.func is None:
                value: Any = job.body or b""
            elif asyncio.iscoroutinefunction(job.func):
                value = await job.func()
            else:
                value = await asyncio.get_running_loop().run_in_executor(self.executor, job.func)
            if job.publishes and value is not None:
                await publisher.publish(_as_outgoing(value, job, at), job.routing_key or "",
                                        job.exchange)
            self._count("fired")
            log.debug("periodic %s fired", job.name)
        except Exception:
            self._count("failed")
            log.exception("periodic %s failed", job.name)

    def _count(self, name: str) -> None:
        self.stats.add((name,))
        self.control.send(("count", (name,)))


