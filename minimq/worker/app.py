"""The registry user code builds: `App`, its consumers, periodic jobs and the retry policy.

Nothing here touches the network or spawns anything: a handler module is imported by the
runner's parent (to learn what to run) and again by every worker process (to run it), so
importing it must be cheap and side-effect free. The runner (`minimq.worker.supervisor`) and
the worker processes (`minimq.worker.process`) read these declarations.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from .cron import CronSchedule

__all__ = [
    "App",
    "Binding",
    "ConsumerSpec",
    "PeriodicSpec",
    "RetryPolicy",
    "Reject",
    "Requeue",
    "Retry",
    "WorkerCrashed",
    "load_app",
    "DEFAULT_URL",
]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

Handler = Callable[..., Any]


class Reject(Exception):
    """Raise from a handler to send the message straight to the dead-letter queue.

    No retries: the message is known to be bad (unparseable, refers to nothing). The reason
    is recorded in the dead message's ``x-exception-*`` headers like any failure.
    """


class Requeue(Exception):
    """Raise from a handler to put the message back at the head of its queue now.

    It is ``basic.nack(requeue=True)``: the broker redelivers it (``redelivered`` set), to this
    or another worker, without counting a retry. Use it when the message is fine but this
    worker cannot take it right now; a message that always requeues loops forever.
    """


class Retry(Exception):
    """Raise from a handler to retry the message later, counting an attempt.

    ``delay`` overrides the policy's backoff for this attempt (a retry queue for that delay is
    declared on first use). When the attempts are used up the message is dead-lettered.
    """

    def __init__(self, reason: str = "", *, delay: timedelta | float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class WorkerCrashed(Exception):
    """Why a poison message is in the dead-letter queue: its handler killed the process.

    Never raised in user code. The supervisor counts, per message, the worker deaths that
    happened while the message was being handled; at the consumer's ``max_crashes`` the next
    delivery goes to ``<queue>.dead`` (headers ``x-exception-type: WorkerCrashed``,
    ``x-crash-count``, ``x-crash-exit``) without running the handler again.
    """


def _seconds(value: timedelta | float | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing message is retried.

    Attempt ``n`` (1-based) waits ``min(backoff * factor ** (n - 1), max_backoff)`` seconds;
    after ``retries`` retries the message goes to the dead-letter queue. ``retries=0`` dead-
    letters on the first failure. ``mode="ttl"`` delays in per-delay queues
    ``<queue>.retry.<ms>`` (``x-message-ttl`` + dead-lettering back to the work queue through
    the default exchange; works on any RabbitMQ and on minimq); ``mode="delayed"`` publishes
    to one ``<queue>.retry`` exchange of type ``x-delayed-message`` with an ``x-delay`` header
    (needs the RabbitMQ delayed-message plugin, built into minimq). ``dead_letter=False``
    drops exhausted messages instead of keeping them in ``<queue>.dead``.
    """

    retries: int = 5
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0
    mode: str = "ttl"
    dead_letter: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.backoff <= 0 or self.max_backoff <= 0 or self.factor < 1:
            raise ValueError("backoff and max_backoff must be > 0, factor >= 1")
        if self.mode not in ("ttl", "delayed"):
            raise ValueError("mode must be 'ttl' or 'delayed'")

    def delay_ms(self, attempt: int) -> int:
        """Milliseconds to wait before retry number ``attempt`` (1-based)."""
        seconds = min(self.backoff * self.factor ** (attempt - 1), self.max_backoff)
        return max(1, int(round(seconds * 1000)))

    def delays_ms(self) -> list[int]:
        """Every distinct delay the policy uses, so the retry queues can be declared upfront."""
        return sorted({self.delay_ms(n) for n in range(1, self.retries + 1)})


@dataclass(frozen=True)
class Binding:
    """One binding of a consumer's queue: ``queue.bind(exchange, routing_key, arguments)``.

    ``exchange_type`` declares the exchange too (durable, like the consumer's own); without
    it the exchange must exist already (or be an ``amq.*`` one). For a headers exchange the
    routing key is ignored and ``arguments`` (``{"x-match": "all", "kind": "photo"}``) decide.
    """

    exchange: str
    routing_key: str = ""
    arguments: dict[str, Any] | None = None
    exchange_type: str | None = None

    @classmethod
    def of(cls, value: Binding | tuple[Any, ...] | dict[str, Any]) -> Binding:
        """Accept a Binding, ``(exchange, key[, arguments])`` or a dict of the fields."""
        if isinstance(value, Binding):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, (tuple, list)) and 1 <= len(value) <= 3:
            return cls(*value)
        raise TypeError(f"a binding is a Binding, (exchange, routing_key[, arguments]) or a "
                        f"dict, not {value!r}")


@dataclass
class ConsumerSpec:
    """One ``@app.consumer``: which queue, how it is bound, how many processes, what to call."""

    name: str
    handler: Handler
    queue: str
    exchange: str = ""
    exchange_type: str = "direct"
    routing_keys: tuple[str, ...] = ()
    prefetch: int = 10
    processes: int = 1
    concurrency: int = 1
    durable: bool = True
    queue_arguments: dict[str, Any] = field(default_factory=dict)
    exchange_arguments: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_crashes: int = 3
    broadcast: bool = False
    binding_arguments: dict[str, Any] = field(default_factory=dict)
    extra_bindings: tuple[Binding, ...] = ()
    rpc_errors: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    @property
    def bindings(self) -> list[Binding]:
        """Every binding of the queue: ``routing_keys`` on ``exchange`` (each with the
        ``binding_arguments``), then the ``bindings=`` given explicitly."""
        own = [Binding(self.exchange, key, self.binding_arguments or None)
               for key in self.routing_keys]
        return own + list(self.extra_bindings)

    @property
    def base(self) -> str:
        """What the retry and dead queues are named after: the queue, or for a broadcast
        consumer (whose queues are per process and server-named) ``<exchange>.<name>``."""
        if self.broadcast:
            return f"{self.exchange or self.extra_bindings[0].exchange}.{self.name}"
        return self.queue

    @property
    def describe_queue(self) -> str:
        return f"(a queue per process) {self.base}" if self.broadcast else self.queue

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.base}.retry.{delay_ms}"

    @property
    def retry_exchange(self) -> str:
        return f"{self.base}.retry"

    @property
    def dead_queue(self) -> str:
        return f"{self.base}.dead"


@dataclass
class PeriodicSpec:
    """One ``@app.periodic``: when it fires and what it does.

    Interval jobs fire at wall-clock multiples of ``every`` since the epoch (``every=1 min``
    fires at :00 of each minute), so a scheduler that takes over after another one died picks
    up the same grid instead of firing early or twice.
    """

    name: str
    func: Handler | None
    every: float | None = None
    cron: CronSchedule | None = None
    exchange: str = ""
    routing_key: str | None = None
    body: bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    def next_fire(self, after: float) -> float:
        """The first fire time (epoch seconds) strictly after ``after``."""
        if self.every is not None:
            return (int(after // self.every) + 1) * self.every
        assert self.cron is not None
        return self.cron.next_after(after)

    @property
    def publishes(self) -> bool:
        return self.routing_key is not None


_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")


class App:
    """A registry of consumers and periodic jobs, run by ``minimq worker module:app``.

    ``url`` is the default broker URL (``--url`` and ``$MINIMQ_URL`` override it). ``name``
    names the scheduler's leader lock, so runners of the same app share one scheduler and
    different apps on one broker do not. ``scheduler_lock_retry`` is how often (seconds) a
    standby scheduler tries to become the leader.
    """

    def __init__(self, url: str | None = None, *, name: str = "minimq",
                 retry: RetryPolicy | None = None, scheduler_lock_retry: float = 5.0) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"app name {name!r}: use letters, digits, '_', '.', ':', '-'")
        self.url = url
        self.name = name
        self.default_retry = retry or RetryPolicy()
        self.scheduler_lock_retry = scheduler_lock_retry
        self.consumers: dict[str, ConsumerSpec] = {}
        self.periodics: dict[str, PeriodicSpec] = {}
        #: Set in a worker process once it is connected (a `minimq.worker.context.Publisher`).
        self.publisher: Any = None

    def publish(self, value: Any, routing_key: str = "", exchange: str = "", *,
                mandatory: bool = False, **properties: Any) -> Any:
        """Publish from inside a handler or periodic job (bytes, str, JSON-able or a
        `minimq.client.Message`; keyword arguments are message properties), confirmed by the
        broker. From a sync function it blocks until confirmed; in a coroutine, await it.
        Outside a running worker process there is no connection to publish on: use
        `minimq.client` there."""
        if self.publisher is None:
            raise RuntimeError("app.publish works inside a running worker (a handler or a "
                               "periodic job); elsewhere use minimq.client")
        return self.publisher.publish(value, routing_key, exchange, mandatory=mandatory,
                                      **properties)

    def __repr__(self) -> str:
        return f"<minimq.worker.App {self.name!r} consumers={list(self.consumers)} " \
               f"periodic={list(self.periodics)}>"

    def resolve_url(self, override: str | None = None) -> str:
        """--url beats $MINIMQ_URL beats App(url) beats the local default."""
        return override or os.environ.get("MINIMQ_URL") or self.url or DEFAULT_URL

    def consumer(
        self,
        queue: str = "",
        *,
        exchange: str = "",
        exchange_type: str = "direct",
        routing_key: str | list[str] | tuple[str, ...] | None = None,
        binding_arguments: dict[str, Any] | None = None,
        bindings: list[Binding | tuple[Any, ...] | dict[str, Any]] | None = None,
        broadcast: bool = False,
        prefetch: int = 10,
        processes: int = 1,
        concurrency: int | None = None,
        name: str | None = None,
        durable: bool = True,
        queue_arguments: dict[str, Any] | None = None,
        exchange_arguments: dict[str, Any] | None = None,
        retries: int | None = None,
        backoff: timedelta | float | None = None,
        max_backoff: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        max_crashes: int = 3,
        rpc_errors: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``queue``: ``@app.consumer(queue="mail")``.

        The handler gets the message (a `minimq.worker.HandlerMessage`: the client's
        `IncomingMessage` plus ``reply``/``publish``); a coroutine function runs in the
        worker's event loop, a plain function in a thread. Returning acks the message (and,
        if it has ``reply_to``, publishes the return value there, see README "RPC");
        raising retries it (see `RetryPolicy`), `Reject` dead-letters it, `Requeue` puts it
        back. The runner declares ``queue`` (durable unless ``durable=False``, with
        ``queue_arguments``), and when ``exchange`` is given the exchange (of
        ``exchange_type``, with ``exchange_arguments``) and the binding(s) with
        ``routing_key`` (default: the queue name) and ``binding_arguments`` (e.g. a headers
        exchange's ``x-match``); ``bindings=[(exchange, key, arguments), ...]`` adds bindings
        of their own. ``broadcast=True`` (no queue name) gives every worker process its own
        exclusive, auto-delete queue with those bindings, so each process sees each message.
        ``prefetch`` is the unacked window per process; ``concurrency`` how many messages a
        process handles at once (default: the prefetch for async handlers, 1 for sync ones,
        whose code may not be thread-safe). ``retries``/``backoff``/``max_backoff`` adjust
        the app's default retry policy. ``max_crashes``: after this many worker deaths
        while handling one message, its next delivery is dead-lettered (`WorkerCrashed`)
        instead of crashing another worker. ``rpc_errors=True`` answers a request whose
        handler raised with an error reply instead of retrying it.
        """
        extra = tuple(Binding.of(b) for b in bindings or ())
        if broadcast:
            if queue:
                raise ValueError("a broadcast consumer gets a server-named queue per process; "
                                 "give no queue name")
            if not exchange and not extra:
                raise ValueError("a broadcast consumer needs an exchange (or bindings)")
            if retries or (retry is not None and retry.retries):
                raise ValueError("a broadcast consumer cannot retry: its queue is its "
                                 "process's own and goes away with it")
        elif not queue:
            raise ValueError("a consumer needs a queue name (or broadcast=True)")
        if processes < 1 or prefetch < 1:
            raise ValueError("processes and prefetch must be >= 1")
        if max_crashes < 1:
            raise ValueError("max_crashes must be >= 1")
        if routing_key is not None and not exchange:
            raise ValueError("routing_key needs an exchange (the default exchange routes by "
                             "queue name and cannot be bound)")
        if binding_arguments and not exchange:
            raise ValueError("binding_arguments needs an exchange")
        if any(not b.exchange for b in extra):
            raise ValueError("bindings need an exchange (the default exchange cannot be bound)")
        if routing_key is None:
            keys: tuple[str, ...] = ((queue or "",) if exchange else ())
        elif isinstance(routing_key, str):
            keys = (routing_key,)
        else:
            keys = tuple(routing_key)
        policy = retry or self.default_retry
        changes: dict[str, Any] = {}
        if retries is not None:
            changes["retries"] = retries
        if backoff is not None:
            changes["backoff"] = _seconds(backoff)
        if max_backoff is not None:
            changes["max_backoff"] = _seconds(max_backoff)
        if broadcast:
            changes["retries"] = 0
        if changes:
            policy = RetryPolicy(**{**policy.__dict__, **changes})

        def register(handler: Handler) -> Handler:
            consumer_name = name or handler.__name__
            if consumer_name in self.consumers:
                raise ValueError(f"a consumer named {consumer_name!r} is already registered")
            is_async = inspect.iscoroutinefunction(handler)
            self.consumers[consumer_name] = ConsumerSpec(
                name=consumer_name,
                handler=handler,
                queue=queue,
                exchange=exchange,
                exchange_type=exchange_type,
                routing_keys=keys,
                prefetch=prefetch,
                processes=processes,
                concurrency=concurrency or (prefetch if is_async else 1),
                durable=durable,
                queue_arguments=dict(queue_arguments or {}),
                exchange_arguments=dict(exchange_arguments or {}),
                retry=policy,
                max_crashes=max_crashes,
                broadcast=broadcast,
                binding_arguments=dict(binding_arguments or {}),
                extra_bindings=extra,
                rpc_errors=rpc_errors,
            )
            return handler

        return register

    def periodic(
        self,
        every: timedelta | float | None = None,
        *,
        cron: str | None = None,
        name: str | None = None,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Run a function on a schedule: ``@app.periodic(every=timedelta(minutes=5))`` or
        ``@app.periodic(cron="0 3 * * *")`` (local time, five fields).

        With ``routing_key`` (and optionally ``exchange``) the function's return value is
        published there (bytes, str, a `minimq.client.Message`, or anything JSON-able; None
        publishes nothing): the usual way to feed timed jobs to a consumer. Only one runner's
        scheduler fires jobs at a time, however many runners run.
        """
        spec_every, spec_cron = self._schedule(every, cron)

        def register(func: Handler) -> Handler:
            job = name or func.__name__
            self._add_periodic(PeriodicSpec(job, func, spec_every, spec_cron, exchange,
                                            routing_key))
            return func

        return register

    def periodic_message(
        self,
        routing_key: str,
        body: bytes | str = b"",
        *,
        every: timedelta | float | None = None,
        cron: str | None = None,
        exchange: str = "",
        headers: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        """Publish a fixed message on a schedule (no function needed)."""
        spec_every, spec_cron = self._schedule(every, cron)
        job = name or f"{exchange or 'default'}:{routing_key}"
        data = body.encode() if isinstance(body, str) else bytes(body)
        self._add_periodic(PeriodicSpec(job, None, spec_every, spec_cron, exchange, routing_key,
                                        data, dict(headers or {})))

    @staticmethod
    def _schedule(every: timedelta | float | None,
                  cron: str | None) -> tuple[float | None, CronSchedule | None]:
        if (every is None) == (cron is None):
            raise ValueError("give exactly one of every= or cron=")
        seconds = _seconds(every)
        if seconds is not None and seconds <= 0:
            raise ValueError("every must be positive")
        return seconds, CronSchedule(cron) if cron is not None else None

    def _add_periodic(self, spec: PeriodicSpec) -> None:
        if spec.name in self.periodics:
            raise ValueError(f"a periodic job named {spec.name!r} is already registered")
        self.periodics[spec.name] = spec


def load_app(ref: str) -> App:
    """Import ``"package.module:attribute"`` (attribute defaults to ``app``) and return the App.

    The current directory is put on ``sys.path`` first, as ``python -m`` would, so
    ``minimq worker tasks:app`` finds ``./tasks.py``.
    """
    module_name, _, attr = ref.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, App):
        raise TypeError(f"{ref} is a {type(obj).__name__}, not a minimq.worker.App")
    return obj
