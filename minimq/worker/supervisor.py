"""The supervisor: the parent process that starts worker processes and keeps them running.

Modelled on hypercorn's ``run.py``: workers are spawned (multiprocessing's ``spawn`` context,
so no broker sockets, locks or threads leak from the parent into the children), the parent
owns every signal and sleeps in `multiprocessing.connection.wait` on the workers' process
sentinels, their pipes and a self-pipe its signal handlers write to. That one wait point means
no signal is handled in the middle of bookkeeping, and a dead worker is noticed at once.

- Workers say over their pipe which message they are about to handle and when it is settled
  (`minimq.worker.process`), so the supervisor knows what each one is doing and keeps the
  counters itself (a kill -9 loses none).
- A worker that dies without being asked to is restarted after an exponential backoff
  (``restart_backoff`` doubling up to ``max_restart_backoff``; the streak resets once a
  worker has run ``stable_after`` seconds). Each message it was handling counts a crash;
  once one message has ``max_crashes`` (a consumer option), its next delivery is
  dead-lettered by the worker that gets it, without running the handler: one poison message
  no longer kills workers forever. More than ``max_restarts`` deaths of one slot within
  ``restart_window`` seconds is a crash loop: that consumer is no longer restarted (logged,
  shown in status); the other consumers carry on, and only when none is left does the
  runner stop, with exit code 1, so a service manager sees the failure.
- SIGTERM / SIGINT: every worker is told to stop (stop consuming, finish in-flight handlers,
  ack them); workers still alive after ``grace`` seconds are killed, their unacked messages
  are requeued by the broker. Exit 0. A second signal kills at once.
- SIGHUP: rolling reload. For each worker in turn a replacement is started (importing the
  handler module afresh) and only when it reports that it consumes is the old one stopped,
  so the queue never goes without a consumer.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import minimq.client

from .app import App
from .status import safe_url, write_status
from .process import COUNTERS, EXIT_CONNECT, WorkerSpec, declare_consumer_topology, worker_main

__all__ = ["Supervisor", "SupervisorConfig"]

log = logging.getLogger("minimq.worker.supervisor")

SCHEDULER = "scheduler"
#: Messages whose crashes are remembered per consumer; the oldest are forgotten beyond it.
MAX_CRASH_RECORDS = 10_000
#: The status file is rewritten at most this often (seconds) while things change, and at
#: least this often otherwise (so its ages stay fresh and a reader can tell it is alive).
STATUS_MIN_GAP = 0.25
STATUS_REFRESH = 2.0


@dataclass
class SupervisorConfig:
    """What to run and how to supervise it (the CLI fills this in)."""

    app_ref: str
    url: str
    processes: dict[str, int]
    scheduler: bool = True
    grace: float = 30.0
    log_level: str = "info"
    status_interval: float = 30.0
    restart_backoff: float = 0.5
    max_restart_backoff: float = 30.0
    stable_after: float = 10.0
    max_restarts: int = 5
    restart_window: float = 60.0
    ready_timeout: float = 30.0
    declare: bool = True
    #: Where `status` is kept for ``minimq worker status`` (None: nowhere).
    status_file: str | None = None


def describe_exit(code: int | None) -> str:
    """``exit code 1`` / ``signal SIGKILL``: negative codes are signals."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _exit_fields(code: int) -> dict[str, Any]:
    """The exit of a worker as the dead-letter headers of a poison message want it."""
    fields: dict[str, Any] = {"exit": describe_exit(code), "code": code}
    if code < 0:
        try:
            fields["signal"] = signal.Signals(-code).name
        except ValueError:
            fields["signal"] = str(-code)
    return fields


@dataclass
class CrashRecord:
    """How often workers died while handling one message, and how the last one died."""

    count: int
    code: int


@dataclass
class Slot:
    """A place for one worker (consumer ``name``, number ``index``) that should be filled."""

    kind: str
    name: str
    index: int
    current: Worker | None = None
    crashes: deque[float] = field(default_factory=deque)
    streak: int = 0
    restart_at: float | None = None
    starts: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}#{self.index}"


@dataclass
class Worker:
    """A live worker process and what the supervisor knows about it."""

    slot: Slot
    process: Any
    pipe: multiprocessing.connection.Connection
    started: float
    ready: bool = False
    stopping: bool = False
    killed: bool = False
    stop_deadline: float | None = None
    #: token -> (delivery key, what the worker said about the message), for messages whose
    #: handler is running now.
    in_flight: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.slot.label} (pid {self.process.pid})"


class Supervisor:
    """Runs the configured workers until told to stop; `run` returns the exit code."""

    def __init__(self, app: App, config: SupervisorConfig) -> None:
        self.app = app
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.slots: list[Slot] = []
        for name, count in config.processes.items():
            for index in range(count):
                self.slots.append(Slot("consumer", name, index))
        if config.scheduler and app.periodics:
            self.slots.append(Slot(SCHEDULER, SCHEDULER, 0))
        self.workers: list[Worker] = []
        self.counts: dict[str, dict[str, int]] = {slot.name: {} for slot in self.slots}
        self.crashes: dict[str, OrderedDict[str, CrashRecord]] = {}
        #: Consumers (or the scheduler) in a crash loop: not restarted until a SIGHUP.
        self.given_up: set[str] = set()
        self.shutting_down = False
        self.exit_code = 0
        self.reload_queue: deque[Slot] = deque()
        self.reload_new: Worker | None = None
        self.reload_started = 0.0
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        self._next_status = time.monotonic() + config.status_interval
        self._status_dirty = True
        self._status_written = 0.0
        self.started = time.time()

    # -- setup ----------------------------------------------------------------------------

    async def _declare(self) -> None:
        async with minimq.client.connect(self.config.url) as connection:
            for name in self.config.processes:
                channel = await connection.channel()
                await declare_consumer_topology(channel, self.app.consumers[name],
                                                broadcast_queue=False)
                await channel.close()

    def preflight(self) -> bool:
        """Connect once and declare every queue, so that a wrong URL or an inequivalent
        existing queue is one clear error instead of a crash loop of workers."""
        if not self.config.declare or not self.config.processes:
            return True
        try:
            asyncio.run(self._declare())
        except (minimq.client.ClientError, OSError) as exc:
            log.error("cannot set up the queues on %s: %s", self.config.url, exc)
            return False
        return True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        try:
            os.write(self._signal_w, bytes([signum]))
        except OSError:  # pragma: no cover - pipe full: a signal is already pending
            pass

    # -- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise, and return the process exit code."""
        if not self.slots:
            log.error("nothing to run: no consumers selected and no periodic jobs")
            return 2
        if not self.preflight():
            return 1
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            log.info("starting %d worker(s) for %s on %s", len(self.slots), self.config.app_ref,
                     self.config.url)
            for slot in self.slots:
                self._start(slot)
            while self.workers or not self.shutting_down:
                self._tick()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._signal_r)
            os.close(self._signal_w)
        self._log_status(final=True)
        if self.config.status_file:
            try:
                os.unlink(self.config.status_file)
            except OSError:
                pass
        log.info("stopped (exit code %d)", self.exit_code)
        return self.exit_code

    def _tick(self) -> None:
        now = time.monotonic()
        deadlines = [self._next_status] if self.config.status_interval > 0 else []
        deadlines += [s.restart_at for s in self.slots if s.restart_at is not None]
        deadlines += [w.stop_deadline for w in self.workers if w.stop_deadline is not None]
        if self.reload_new is not None:
            deadlines.append(self.reload_started + self.config.ready_timeout)
        if self.config.status_file:
            deadlines.append(self._status_written + (STATUS_MIN_GAP if self._status_dirty
                                                     else STATUS_REFRESH))
        timeout = max(0.0, min(deadlines, default=now + 1.0) - now)
        waitables: list[Any] = [self._signal_r]
        for w in self.workers:
            waitables.append(w.process.sentinel)
            waitables.append(w.pipe)
        ready = multiprocessing.connection.wait(waitables, min(timeout, 1.0))
        if self._signal_r in ready:
            self._read_signals()
        # Deaths first: a message a dead worker was handling may already be redelivered to
        # another worker asking for a verdict in this same batch, and its crash must count.
        for w in list(self.workers):
            if w.process.sentinel in ready or not w.process.is_alive():
                self._read_pipe(w)
                w.process.join()
                self._on_exit(w)
        for w in list(self.workers):
            if w.pipe in ready:
                self._read_pipe(w)
        now = time.monotonic()
        for w in self.workers:
            if w.stop_deadline is not None and now >= w.stop_deadline and not w.killed:
                log.warning("%s did not stop within %.1fs; killing it (its unacked messages "
                            "go back to the queue)", w.label, self.config.grace)
                w.process.kill()
                w.killed = True
                w.stop_deadline = None
        if not self.shutting_down:
            for slot in self.slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.restart_at = None
                    self._start(slot)
            self._step_reload(now)
        if self.config.status_interval > 0 and now >= self._next_status:
            self._next_status = now + self.config.status_interval
            self._log_status()
        self._write_status(now)

    def _start(self, slot: Slot, *, replace: bool = True) -> Worker:
        spec = WorkerSpec(self.config.app_ref, slot.kind, slot.name, slot.index, self.config.url,
                          self.config.grace, self.config.log_level)
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(target=worker_main, args=(spec, child_end),
                                   name=f"minimq-worker {slot.label}")
        process.start()
        child_end.close()  # the child's copy is the only one: its EOF tells us it is gone
        worker = Worker(slot, process, parent_end, time.monotonic())
        self.workers.append(worker)
        self._status_dirty = True
        slot.starts += 1
        if replace:
            slot.current = worker
        verb = "started" if slot.starts == 1 else "restarted" if replace else "started replacement"
        log.info("%s %s", verb, worker.label)
        return worker

    def _read_pipe(self, w: Worker) -> None:
        self._status_dirty = True
        try:
            while w.pipe.poll():
                message = w.pipe.recv()
                kind = message[0]
                if kind == "begin":
                    _, token, key, info, ask = message
                    w.in_flight[token] = (key, info)
                    if ask:
                        self._send(w, ("verdict", token, self._verdict(w.slot.name, key)))
                elif kind == "end":
                    entry = w.in_flight.pop(message[1], None)
                    self._count(w.slot.name, message[2])
                    if entry is not None and "requeued" not in message[2]:
                        self.crashes.get(w.slot.name, {}).pop(entry[0], None)  # type: ignore[call-overload]
                elif kind == "count":
                    self._count(w.slot.name, message[1])
                elif kind == "ready":
                    w.ready = True
                    log.debug("%s is ready", w.label)
                elif kind == "leader":
                    log.info("%s leads the periodic jobs", w.label)
        except (EOFError, OSError):
            pass

    @staticmethod
    def _send(w: Worker, message: Any) -> None:
        try:
            w.pipe.send(message)
        except (OSError, ValueError):
            pass  # it is dying; its exit is handled on its sentinel

    def _count(self, name: str, counters: tuple[str, ...]) -> None:
        bucket = self.counts.setdefault(name, {})
        for counter in counters:
            bucket[counter] = bucket.get(counter, 0) + 1

    def _verdict(self, name: str, key: str) -> dict[str, Any] | None:
        """None: run the handler. A dict: dead-letter it as a poison message."""
        record = self.crashes.get(name, {}).get(key)
        if record is None or record.count < self.app.consumers[name].max_crashes:
            return None
        return {"count": record.count, **_exit_fields(record.code)}

    def _record_crash(self, w: Worker, code: int) -> None:
        """Every message ``w`` was handling when it died counts a crash."""
        name = w.slot.name
        if not w.in_flight or name not in self.app.consumers:
            return
        limit = self.app.consumers[name].max_crashes
        records = self.crashes.setdefault(name, OrderedDict())
        for key, info in w.in_flight.values():
            record = records.pop(key, None) or CrashRecord(0, code)
            record.count += 1
            record.code = code
            records[key] = record
            what = f"message {info.get('message_id') or key} (routing key " \
                   f"{info.get('routing_key')!r})"
            if record.count >= limit:
                log.error("%s was being handled when %s died: crash %d of %d; it is poison, "
                          "its next delivery goes to %s", what, w.label, record.count, limit,
                          self.app.consumers[name].dead_queue)
            else:
                log.warning("%s was being handled when %s died: crash %d of %d", what,
                            w.label, record.count, limit)
        while len(records) > MAX_CRASH_RECORDS:
            records.popitem(last=False)
        w.in_flight.clear()

    def _stop(self, w: Worker, deadline: float | None = None) -> None:
        if w.stopping:
            return
        w.stopping = True
        w.stop_deadline = deadline or time.monotonic() + self.config.grace
        try:
            w.pipe.send("stop")
        except (OSError, ValueError):
            pass

    def _on_exit(self, w: Worker) -> None:
        self._status_dirty = True
        self.workers.remove(w)
        w.pipe.close()
        slot = w.slot
        code = w.process.exitcode
        if slot.current is w:
            slot.current = None
        if w is self.reload_new:
            self.reload_new = None
            log.error("reload: replacement %s exited (%s) before it was ready; keeping the "
                      "running workers and abandoning the reload", w.label, describe_exit(code))
            self.reload_queue.clear()
            return
        if w.stopping:
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "%s stopped (%s)", w.label, describe_exit(code))
            return
        ran = time.monotonic() - w.started
        log.warning("%s exited unexpectedly (%s) after %.1fs", w.label, describe_exit(code), ran)
        self._record_crash(w, code if code is not None else -signal.SIGKILL)
        if self.shutting_down:
            return
        if slot.name in self.given_up:
            log.error("%s is not restarted: %s is in a crash loop", slot.label, slot.name)
            self._check_left()
            return
        now = time.monotonic()
        slot.crashes.append(now)
        while slot.crashes and slot.crashes[0] < now - self.config.restart_window:
            slot.crashes.popleft()
        if len(slot.crashes) > self.config.max_restarts:
            hint = " (could not connect to the broker)" if code == EXIT_CONNECT else ""
            log.error("crash loop: %s died %d times within %.0fs (last: %s)%s; giving up on "
                      "%s: no more restarts for it until a SIGHUP (other consumers carry on)",
                      slot.label, len(slot.crashes), self.config.restart_window,
                      describe_exit(code), hint, slot.name)
            self.given_up.add(slot.name)
            self._check_left()
            return
        slot.streak = 1 if ran >= self.config.stable_after else slot.streak + 1
        delay = min(self.config.restart_backoff * 2 ** (slot.streak - 1),
                    self.config.max_restart_backoff)
        slot.restart_at = now + delay
        log.info("restarting %s in %.2fs (%d crash(es) in the last %.0fs)", slot.label, delay,
                 len(slot.crashes), self.config.restart_window)

    def _check_left(self) -> None:
        """Shut down with exit code 1 once no consumer is left (the scheduler alone does not
        keep a runner that was started for consumers alive)."""
        kinds = {"consumer"} if any(s.kind == "consumer" for s in self.slots) else {SCHEDULER}
        for slot in self.slots:
            if slot.kind in kinds and (slot.current is not None or slot.restart_at is not None):
                return
        log.error("no %s left running; shutting down",
                  "consumer" if "consumer" in kinds else "scheduler")
        self.exit_code = 1
        self._begin_shutdown("crash loop")

    # -- signals: shutdown and reload ----------------------------------------------------------

    def _read_signals(self) -> None:
        try:
            data = os.read(self._signal_r, 64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self._begin_reload()
            else:
                self._begin_shutdown(signal.Signals(signum).name)

    def _begin_shutdown(self, reason: str) -> None:
        if self.shutting_down:
            if reason in ("SIGTERM", "SIGINT"):
                log.warning("%s again: killing %d worker(s) now", reason, len(self.workers))
                for w in self.workers:
                    if not w.killed:
                        w.process.kill()
                        w.killed = True
            return
        self.shutting_down = True
        self.reload_queue.clear()
        log.info("%s: stopping %d worker(s), grace period %.1fs", reason, len(self.workers),
                 self.config.grace)
        deadline = time.monotonic() + self.config.grace
        for slot in self.slots:
            slot.restart_at = None
        for w in self.workers:
            self._stop(w, deadline)

    def _begin_reload(self) -> None:
        if self.shutting_down:
            return
        log.info("SIGHUP: reloading %d worker(s) one by one", len(self.slots))
        if self.given_up:
            log.info("SIGHUP: restarting %s after the crash loop", ", ".join(sorted(self.given_up)))
            self.given_up.clear()
            for slot in self.slots:
                slot.crashes.clear()
                slot.streak = 0
                if slot.current is None and slot.restart_at is None:
                    self._start(slot)
        self.reload_queue = deque(self.slots)
        if self.reload_new is not None:  # a reload in progress restarts from the top
            self._stop(self.reload_new)
            self.reload_new = None

    def _step_reload(self, now: float) -> None:
        while True:
            if self.reload_new is None:
                while self.reload_queue and (self.reload_queue[0].current is None
                                             or self.reload_queue[0].restart_at is not None):
                    self.reload_queue.popleft()  # not running: it starts with new code anyway
                if not self.reload_queue:
                    return
                self.reload_new = self._start(self.reload_queue[0], replace=False)
                self.reload_started = now
                return
            new = self.reload_new
            slot = self.reload_queue[0]
            if not new.ready:
                if now - self.reload_started > self.config.ready_timeout:
                    log.error("reload: %s not ready after %.0fs; abandoning the reload",
                              new.label, self.config.ready_timeout)
                    self.reload_new = None
                    self.reload_queue.clear()
                    self._stop(new)
                return
            old = slot.current
            slot.current = new
            self.reload_new = None
            self.reload_queue.popleft()
            if old is not None:
                log.info("reload: %s replaces %s", new.label, old.label)
                self._stop(old)
            if not self.reload_queue:
                log.info("reload complete")
                return

    # -- status -------------------------------------------------------------------------------

    def totals(self) -> dict[str, dict[str, int]]:
        """Per consumer (and the scheduler): the counters, from the workers' end messages."""
        return {name: dict(counts) for name, counts in self.counts.items()}

    def _log_status(self, final: bool = False) -> None:
        expected: dict[str, int] = {}
        alive: dict[str, int] = {}
        for slot in self.slots:
            expected[slot.name] = expected.get(slot.name, 0) + 1
        for w in self.workers:
            if not w.stopping and w.slot.current is w:
                alive[w.slot.name] = alive.get(w.slot.name, 0) + 1
        for name, counts in self.totals().items():
            fields = COUNTERS if name != SCHEDULER else ("fired", "failed")
            text = " ".join(f"{k}={counts.get(k, 0)}" for k in fields)
            if final:
                log.info("totals %s: %s", name, text)
            else:
                state = " state=crash-loop (not restarted)" if name in self.given_up else ""
                log.info("status %s: workers=%d/%d %s%s", name, alive.get(name, 0),
                         expected.get(name, 0), text, state)

    def status(self) -> dict[str, Any]:
        """Everything ``minimq worker status`` shows: per consumer (and the scheduler) its
        state, processes with the messages they are handling, counters and poison count."""
        now, mono = time.time(), time.monotonic()
        consumers: dict[str, dict[str, Any]] = {}
        for slot in self.slots:
            entry = consumers.get(slot.name)
            if entry is None:
                spec = self.app.consumers.get(slot.name)
                records = self.crashes.get(slot.name, {})
                fields = COUNTERS if slot.kind != SCHEDULER else ("fired", "failed")
                counts = self.counts.get(slot.name, {})
                entry = consumers[slot.name] = {
                    "kind": slot.kind,
                    "queue": spec.describe_queue if spec else "periodic jobs",
                    "state": "crash-loop" if slot.name in self.given_up
                    else "stopping" if self.shutting_down else "running",
                    "expected": 0, "running": 0, "processes": [], "restart_in": None,
                    "counts": {k: counts.get(k, 0) for k in fields},
                    "poison": sum(1 for r in records.values()
                                  if spec and r.count >= spec.max_crashes),
                }
            entry["expected"] += 1
            if slot.restart_at is not None:
                wait = max(0.0, slot.restart_at - mono)
                entry["restart_in"] = wait if entry["restart_in"] is None \
                    else min(wait, entry["restart_in"])
        for w in self.workers:
            entry = consumers[w.slot.name]
            if w.slot.current is w and not w.stopping:
                entry["running"] += 1
            entry["processes"].append({
                "slot": w.slot.label, "pid": w.process.pid, "ready": w.ready,
                "stopping": w.stopping, "up": round(mono - w.started, 3),
                "in_flight": [{"key": key, "message_id": info.get("message_id"),
                               "routing_key": info.get("routing_key"),
                               "redelivered": info.get("redelivered"),
                               "for": round(max(0.0, now - info.get("started", now)), 3)}
                              for key, info in w.in_flight.values()],
            })
        return {
            "app": self.app.name, "app_ref": self.config.app_ref, "pid": os.getpid(),
            "url": safe_url(self.config.url), "started": self.started, "updated": now,
            "state": "stopping" if self.shutting_down else "running",
            "exit_code": self.exit_code, "consumers": consumers,
        }

    def _write_status(self, now: float) -> None:
        path = self.config.status_file
        if not path:
            return
        gap = now - self._status_written
        if gap < (STATUS_MIN_GAP if self._status_dirty else STATUS_REFRESH):
            return
        self._status_dirty = False
        self._status_written = now
        try:
            write_status(path, self.status())
        except OSError as exc:
            log.warning("cannot write the status file %s: %s; no longer writing it", path, exc)
            self.config.status_file = None
