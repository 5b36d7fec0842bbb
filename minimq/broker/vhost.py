"""A virtual host: its exchanges, queues and bindings, and routing between them.

Errors carry RabbitMQ's reply texts, since clients and their users match on them.
"""
from __future__ import annotations

import base64
import copy
import logging
import os
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from minimq.broker.arguments import check_queue_type_declare, inequivalent, parse_queue_args, type_name as field_type_name
from minimq.broker.exchange import DefaultExchangeType, Exchange
from minimq.broker.exchange_types import ALL_EXCHANGE_TYPES
from minimq.broker.message import Message
from minimq.broker.queue import Queue
from minimq.broker.services import Services
from minimq.broker.teardown import guarded
from minimq.codec.properties import CONTENT_HEADER_SIZE, HEADERS_FLAG, PROPERTIES_OFFSET
from minimq.codec.values import Int64
from minimq.codec.errors import (
    AccessRefused,
    AMQPError,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)

log = logging.getLogger("minimq.vhost")

# Dead-letter work done in one go before the rest waits for the next turn of the event
# loop: a DLX cycle that RabbitMQ lets run forever (TTL queues after a rejection) or a huge
# fan-out must not freeze the broker. A hop costs DEAD_LETTER_HOP plus its message's x-death
# length (re-encoding that history is most of a long chain's work); a slice is ~0.1 s here.
DEAD_LETTER_SLICE = 20_000
DEAD_LETTER_HOP = 8


PREDECLARED = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)

# Queue arguments RabbitMQ compares when a queue is redeclared, in the order it compares
# them (the first mismatch is the one reported); others are not compared.
EQUIVALENT_QUEUE_ARGS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-delivery-limit",
)
# Absent and the default compare equal (RabbitMQ fills in the queue type).
_ARG_DEFAULTS = {"x-queue-type": "classic"}
_HEADERS_FLAG_HIGH = HEADERS_FLAG >> 8  # the same bit in the flags word's first octet


def _bool_text(b: bool) -> str:
    return "true" if b else "false"


def generated_name(prefix: str) -> str:
    """RabbitMQ-style server-generated name: prefix + 22 url-safe base64 characters."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


def _norm(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    return value


class VirtualHost:
    def __init__(self, name: str, services: Services | None = None) -> None:
        self.name = name
        # The broker's services (clock, timers, store), shared with this vhost's queues.
        self.services = services if services is not None else Services()
        self.queues: dict[str, Queue] = {}
        self.exchanges: dict[str, Exchange] = {}
        self.default_exchange = Exchange("", "direct", durable=True, kind=DefaultExchangeType(self.queues))
        self.exchanges[""] = self.default_exchange
        for name_, type_ in PREDECLARED:
            self.exchanges[name_] = Exchange(name_, type_, durable=True)
        # Called with each queue this vhost deletes (the session layer cancels consumers).
        self.on_queue_deleted: Callable[[Queue], None] | None = None
        # Dead-lettering is a work list, not a recursion: (queue, message, reason) waiting
        # to be republished, drained by whoever dead-letters first (see dead_letter).
        self._dead_letters: deque[tuple[Queue, Message, str]] = deque()
        self._draining = False
        self._drain_timer: Any = None
        self._backlog = False  # a drain ran out of its slice (logged once per episode)
        # What dead-lettering may still do before it must let the event loop turn: spent by
        # every drain (so a read full of publishes into a long chain cannot add up to
        # minutes), refilled only when the timer continuation runs, i.e. after the loop
        # served everyone else.
        self._budget = DEAD_LETTER_SLICE

    # ------------------------------------------------------------- lookups

    def __repr__(self) -> str:
        return f"<VirtualHost {self.name!r}>"

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return ex

    def get_queue(self, name: str, session: Any = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        if q.owner is not None and session is not None and q.owner is not session:
            raise self._locked(q)
        return q

    def _locked(self, q: Queue) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked queue '{q.name}' in vhost '{self.name}'. "
            "It could be originally declared on another connection or the exclusive property "
            "value does not match that of the original declaration."
        )

    # ------------------------------------------------------------ exchanges

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict | None = None,
    ) -> Exchange:
        if passive:
            if name == "":
                raise AccessRefused("operation not permitted on the default exchange")
            return self.get_exchange(name)
        if type_name not in ALL_EXCHANGE_TYPES:
            raise CommandInvalid(f"unknown exchange type '{type_name}'")
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        ex = self.exchanges.get(name)
        if ex is None:
            if name.startswith("amq."):
                raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
            alternate = (arguments or {}).get("alternate-exchange")
            if alternate is not None and not isinstance(alternate, (str, bytes)):
                # As RabbitMQ 3.10: only a longstr names an alternate exchange.
                raise PreconditionFailed(
                    f"invalid type '{field_type_name(alternate)}' for arg 'alternate-exchange' "
                    f"in exchange '{name}' in vhost '{self.name}'")
            ex = Exchange(
                name, type_name, durable=durable, auto_delete=auto_delete, internal=internal,
                arguments=arguments,
            )
            if durable and self.store is not None:
                self.store.exchange_declared(self.name, ex)  # first: a refused record is not applied
            self.exchanges[name] = ex
            if self.services.policies is not None:
                self.services.policies.attach_exchange(self.name, ex)
            return ex
        what = f"for exchange '{name}' in vhost '{self.name}'"
        if ex.type_name != type_name:
            raise PreconditionFailed(
                f"inequivalent arg 'type' {what}: received '{type_name}' but current is '{ex.type_name}'"
            )
        for arg, got, have in (
            ("durable", durable, ex.durable),
            ("auto_delete", auto_delete, ex.auto_delete),
            ("internal", internal, ex.internal),
        ):
            if got != have:
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' {what}: received '{_bool_text(got)}' but current is '{_bool_text(have)}'"
                )
        for key in ("alternate-exchange", "x-delayed-type"):
            new_v = (arguments or {}).get(key)
            old_v = ex.arguments.get(key)
            if _norm(new_v) != _norm(old_v):
                raise inequivalent(key, what, new_v, old_v)
        return ex

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise AccessRefused(f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            return  # RabbitMQ: deleting an absent exchange succeeds
        if if_unused and not ex.kind.is_empty():
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange) -> None:
        """Delete an exchange and, in turn, the auto-delete exchanges it leaves unused.

        A work list rather than recursion: a chain of auto-delete exchanges bound one to the
        next can be any length.
        """
        work = [ex]
        while work:
            x = work.pop()
            if x.deleted:
                continue
            x.deleted = True
            if self.exchanges.get(x.name) is x:
                del self.exchanges[x.name]
            if x.durable and self.store is not None:
                self.store.exchange_deleted(self.name, x.name)
            # bindings from it
            for dest, _key, _args in list(x.kind.bindings()):
                dest.bound_from.discard(x)
            # bindings to it
            for src in list(x.bound_from):
                src.kind.remove_destination(x)
                src.e2e_out -= 1
                if self._unused_autodelete(src):
                    work.append(src)
            x.bound_from.clear()

    @staticmethod
    def _unused_autodelete(ex: Exchange) -> bool:
        return ex.auto_delete and not ex.deleted and ex.kind.is_empty()

    def _maybe_autodelete(self, ex: Exchange) -> None:
        if self._unused_autodelete(ex):
            self._remove_exchange(ex)

    # ------------------------------------------------------------- bindings

    def bind(self, source: Exchange, dest: Queue | Exchange, routing_key: str, arguments: dict | None) -> None:
        if source.is_default:
            raise AccessRefused("operation not permitted on the default exchange")
        args = arguments or {}
        source.kind.validate_binding(routing_key, args)
        is_x = isinstance(dest, Exchange)
        if is_x and dest.is_default:
            raise AccessRefused("operation not permitted on the default exchange")
        new_dest = not source.kind.has_bindings_to(dest)
        before = len(source.kind)
        source.kind.add_binding(dest, routing_key, args)
        if self.store is not None and len(source.kind) != before and self._durable_binding(source, dest):
            try:
                self.store.bound(self.name, source.name, dest.name, is_x, routing_key, args)
            except AMQPError:  # the disk refused the record: the binding is not made
                source.kind.remove_binding(dest, routing_key, args)
                raise
        if new_dest:
            dest.bound_from.add(source)
            if is_x:
                source.e2e_out += 1

    def unbind(self, source: Exchange, dest: Queue | Exchange, routing_key: str, arguments: dict | None) -> None:
        if source.is_default:
            raise AccessRefused("operation not permitted on the default exchange")
        if isinstance(dest, Exchange) and dest.is_default:
            raise AccessRefused("operation not permitted on the default exchange")
        before = len(source.kind)
        source.kind.remove_binding(dest, routing_key, arguments or {})
        if self.store is not None and len(source.kind) != before and self._durable_binding(source, dest):
            self.store.unbound(
                self.name, source.name, dest.name, isinstance(dest, Exchange), routing_key, arguments or {}
            )
        if source in dest.bound_from and not source.kind.has_bindings_to(dest):
            dest.bound_from.discard(source)
            if isinstance(dest, Exchange):
                source.e2e_out -= 1
        if len(source.kind) != before:
            # Only removing its last binding deletes an auto-delete exchange (RabbitMQ).
            self._maybe_autodelete(source)

    @staticmethod
    def _durable_binding(source: Exchange, dest: Any) -> bool:
        if not source.durable:
            return False
        if isinstance(dest, Exchange):
            return dest.durable
        return dest.persist

    @property
    def store(self) -> Any:
        return self.services.store

    # --------------------------------------------------------------- queues

    def declare_queue(
        self,
        name: str,
        session: Any,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
        server_named: bool = False,
    ) -> tuple[Queue, bool]:
        """Declare (or check) a queue; returns (queue, created).

        `server_named`: `name` was generated by the broker (amq.gen-...), so the reserved
        prefix is fine (the session names it first, to check permissions on that name).
        """
        if passive:
            q = self.get_queue(name, session)
            if q.args.expires is not None:
                q.last_used = self.services.clock()  # a passive declare counts as use
            return q, False
        if name == "":
            name, server_named = generated_name("amq.gen-"), True
        elif name.startswith("amq.") and not server_named:
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        q = self.queues.get(name)
        if q is None:
            check_queue_type_declare(arguments, name, self.name, durable=durable, exclusive=exclusive,
                                     auto_delete=auto_delete, server_named=server_named)
            qargs = parse_queue_args(arguments, name, self.name)
            q = Queue(
                self, name, durable=durable, exclusive_owner=session if exclusive else None,
                auto_delete=auto_delete, arguments=arguments, args=qargs,
            )
            if durable and not exclusive and self.store is not None:
                q.persist = True
                self.store.queue_declared(self.name, q)  # first: a refused record is not applied
            self.queues[name] = q
            if self.services.policies is not None:
                self.services.policies.attach_queue(q)  # q.args: declared arguments + policy
            self.restart_queue_expiry(q)
            return q, True
        if q.owner is not None and q.owner is not session:
            raise self._locked(q)
        # RabbitMQ checks exclusivity before the other properties.
        if q.exclusive != exclusive:
            raise self._locked(q)
        what = f"for queue '{name}' in vhost '{self.name}'"
        if q.durable != durable and not q.exclusive:  # RabbitMQ ignores it for exclusive queues
            raise PreconditionFailed(
                f"inequivalent arg 'durable' {what}: received '{_bool_text(durable)}' but current is '{_bool_text(q.durable)}'"
            )
        if q.auto_delete != auto_delete:
            raise PreconditionFailed(
                f"inequivalent arg 'auto_delete' {what}: received '{_bool_text(auto_delete)}' but current is '{_bool_text(q.auto_delete)}'"
            )
        args = arguments or {}
        for key in EQUIVALENT_QUEUE_ARGS:
            new, old = args.get(key), q.arguments.get(key)
            default = _ARG_DEFAULTS.get(key)
            if default is not None and _norm(new or default) == _norm(old or default):
                continue
            if _norm(new) != _norm(old):
                raise inequivalent(key, what, new, old)
        if q.args.expires is not None:
            q.last_used = self.services.clock()
        return q, False

    def _arm_queue_expiry(self, q: Queue, when: float) -> None:
        gen = q.expiry_gen
        self.services.timers.call_at(when, lambda: self._check_queue_expiry(q, gen))

    def restart_queue_expiry(self, q: Queue) -> None:
        """The queue's arguments changed (a policy): its expiry countdown starts again from
        now with its expires in force, as RabbitMQ restarts it; earlier timers lapse."""
        q.expiry_gen += 1
        if q.args.expires is not None:
            q.last_used = self.services.clock()
            self._arm_queue_expiry(q, q.last_used + q.args.expires / 1000.0)

    def _check_queue_expiry(self, q: Queue, gen: int = 0) -> None:
        """x-expires: delete a queue nobody used (consumed, got from, redeclared) for long."""
        if q.deleted or gen != q.expiry_gen or q.args.expires is None:
            return
        ttl = q.args.expires / 1000.0
        now = self.services.clock()
        if q.consumers:
            self._arm_queue_expiry(q, now + ttl)
        elif now >= q.last_used + ttl:
            log.debug("queue %r expired", q.name)
            self.delete_queue(q)
        else:
            self._arm_queue_expiry(q, q.last_used + ttl)

    def delete_queue(self, q: Queue) -> int:
        """Delete a queue: unbind it, cancel its consumers; returns its ready count.

        The queue leaves the vhost first, so whatever fails afterwards (each later step is
        guarded and logged) it is gone: its name is free again and nothing routes to it.
        """
        if q.deleted:
            return 0
        count = len(q.ready)
        q.deleted = True
        if self.queues.get(q.name) is q:
            del self.queues[q.name]
        if q.persist:
            guarded(
                f"recording the deletion of queue {q.name!r}", self.store.queue_deleted,
                self.name, q.name, [m.store_id for m in q.ready if m.store_id],
            )
        for ex in list(q.bound_from):
            guarded(f"unbinding queue {q.name!r} from exchange {ex.name!r}", self._unbind_all, ex, q)
        q.bound_from.clear()
        q.ready.clear()
        q.ready_bytes = 0
        if self.on_queue_deleted is not None:
            guarded(f"cancelling the consumers of queue {q.name!r}", self.on_queue_deleted, q)
        return count

    def _unbind_all(self, ex: Exchange, q: Queue) -> None:
        ex.kind.remove_destination(q)
        self._maybe_autodelete(ex)

    # -------------------------------------------------------------- routing

    def route(self, ex: Exchange, message: Any, key: str | None = None) -> Iterable[Queue]:
        """The queues a message published to `ex` goes to (each once)."""
        kind = ex.kind
        if key is None:
            key = message.routing_key
        dests = kind.route(key, message.headers if kind.needs_headers else None)
        if not ex.e2e_out and (dests or ex.alternate is None):
            return dests
        return self._route_graph(ex, message, key)

    def publish(self, ex: Exchange, msg: Message) -> tuple[bool, bool, int]:
        """Route and enqueue; returns (routed anywhere, refused by a full queue, store position)."""
        header = msg.header
        # The headers flag read straight from the flags word (Message.flags without its call).
        if len(header) >= CONTENT_HEADER_SIZE and header[PROPERTIES_OFFSET] & _HEADERS_FLAG_HIGH and (b"\x02CC" in header or b"\x03BCC" in header):
            queues, msg = self._route_cc(ex, msg)
        else:
            queues = self.route(ex, msg)
        ex.stat_in += 1
        if not queues:
            ex.stat_unroutable += 1
            return False, False, 0
        refused, pos = self.deliver_to(queues, msg)
        return True, refused, pos

    def publish_delayed(self, ex: Exchange, msg: Message) -> None:
        """A publish to an exchange whose type holds messages back (x-delayed-message): route
        it once the delay its plug-in gives has passed, if the exchange still exists then."""
        delay = ex.kind.delay(msg.headers if msg.flags & HEADERS_FLAG else None)
        if not delay:
            self.publish(ex, msg)
            return

        def release() -> None:
            if not ex.deleted:
                self.publish(ex, msg)

        services = self.services
        services.timers.call_at(services.clock() + delay, release)

    def deliver_to(self, queues: Sequence[Queue], msg: Message) -> tuple[bool, int]:
        """Enqueue into routed queues; returns (refused by one, store position or 0).

        A persistent message bound for durable queues is logged first (one record for all of
        them); a queue that then refuses or drops it logs its release.
        """
        pos = 0
        store = self.services.store  # `store` without the property call
        if store is not None and msg.persistent:
            names = [q.name for q in queues if q.persist]
            if names:
                msg.store_id, pos = store.message_published(self.name, names, msg)
        if len(queues) == 1:
            return not queues[0].enqueue(msg), pos
        # Every queue but the last gets a copy made before any queue has seen the message,
        # the last one the message itself: a queue changes only its own copy (its TTL
        # deadline, a quorum queue's delivery count), never the others'.
        refused = False
        if self._draining:
            for q in queues[:-1]:
                if not q.enqueue(msg.copy()):
                    refused = True
            return not queues[-1].enqueue(msg) or refused, pos
        # Every queue gets its copy before any of them dead-letters one (as in RabbitMQ,
        # where the copies reach all queues before a queue process republishes its own).
        self._draining = True
        try:
            for q in queues[:-1]:
                if not q.enqueue(msg.copy()):
                    refused = True
            if not queues[-1].enqueue(msg):
                refused = True
        finally:
            self._draining = False
            if self._dead_letters and self._drain_timer is None:
                self._drain_dead_letters()
        return refused, pos

    def _route_cc(self, ex: Exchange, msg: Message) -> tuple[list[Queue], Message]:
        """Sender-selected distribution: also route by the CC and BCC headers' keys.

        BCC is removed from the message before it is delivered, as RabbitMQ does.
        """
        headers = msg.headers or {}
        keys = [msg.routing_key]
        for name in ("CC", "BCC"):
            extra = headers.get(name)
            if isinstance(extra, list):
                keys.extend(_text(k) for k in extra if _text(k) is not None)
        queues: dict[Queue, None] = {}
        for key in keys:
            for q in self.route(ex, msg, key):
                queues[q] = None
        if "BCC" in headers:
            props = copy.copy(msg.properties)
            props.headers = {k: v for k, v in headers.items() if k != "BCC"}
            msg = msg.rebuilt(props)
        return list(queues), msg

    def dead_letter(self, queue: Queue, msg: Message, reason: str) -> None:
        """Republish a rejected/expired/overflowed message to the queue's DLX, if any.

        Iterative, never recursive: republishing can make the next queue drop the message
        at once (TTL 0, a full queue), which dead-letters again, and so on along a chain of
        any length. So each dead-letter joins a work list, and the outermost call drains it
        in order (first in, first out: a message's copies are republished in the order
        their queues dropped them, as RabbitMQ's queue processes do). Dead-lettering spends
        a budget of DEAD_LETTER_SLICE that only a turn of the event loop refills: once it is
        spent, the rest (and any dead-letter that comes meanwhile, behind it) continues on
        the broker's timers, so an endless cycle (allowed after a rejection, as RabbitMQ
        allows it), a huge fan-out or a flood of publishes into a long chain keeps the
        broker serving.
        """
        if queue.args.dlx is None:
            return
        self._dead_letters.append((queue, msg, reason))
        if not self._draining and self._drain_timer is None:
            self._drain_dead_letters()

    def _drain_dead_letters(self) -> None:
        """Republish pending dead-letters until none is left (or the slice is used up).

        One that fails is logged with its traceback and dropped, like a dead-letter to a
        missing exchange: it must not cost the other pending ones or the caller (often a
        teardown or a timer). Dead-lettering is at most once, as in RabbitMQ.
        """
        pending = self._dead_letters
        if self._draining or not pending:
            return
        self._draining = True
        try:
            while pending:
                if self._budget <= 0:
                    self._schedule_drain()
                    return
                queue, msg, reason = pending.popleft()
                try:
                    self._budget -= DEAD_LETTER_HOP + self._republish_dead(queue, msg, reason)
                except Exception:
                    self._budget -= DEAD_LETTER_HOP
                    log.error(
                        "dead-lettering a message from queue %r (%s) failed; message dropped",
                        queue.name, reason, exc_info=True,
                    )
        finally:
            self._draining = False
        if self._backlog:
            self._backlog = False
            log.info("vhost %r: the run of dead-lettering is over", self.name)

    def _schedule_drain(self) -> None:
        if self._drain_timer is None:
            if not self._backlog:
                self._backlog = True
                log.info(
                    "vhost %r: a long run of dead-lettering (a long DLX chain, a cycle allowed "
                    "after a rejection, a large fan-out) continues in slices", self.name,
                )
            # Due at once, but a timer set while the timers run waits for their next run:
            # the driver turns its event loop (serves sockets) in between.
            self._drain_timer = self.services.timers.call_at(self.services.clock(), self._drain_later)

    def _drain_later(self) -> None:
        self._drain_timer = None
        self._budget = DEAD_LETTER_SLICE
        self._drain_dead_letters()

    @property
    def pending_dead_letters(self) -> int:
        """Dead-letters waiting for their turn (non-zero only mid-drain or after a slice)."""
        return len(self._dead_letters)

    def _republish_dead(self, queue: Queue, msg: Message, reason: str) -> int:
        """One dead-letter hop: x-death history, cycle rule, routing, enqueue.

        Adds the x-death history as RabbitMQ does; a message that would come back to a queue
        it already died in, with no rejection anywhere in its history, is dropped (RabbitMQ's
        cycle rule), so TTL-only loops stop. Returns the length of the x-death history (the
        hop's variable cost, for the drain's budget).
        """
        dlx_name = queue.args.dlx
        if dlx_name is None:
            return 0
        ex = self.exchanges.get(dlx_name)
        if ex is None:
            log.debug("dead-letter exchange %r of queue %r missing; message dropped", dlx_name, queue.name)
            return 0
        props = copy.copy(msg.properties)
        headers = dict(props.headers or {})
        keys = [msg.routing_key]
        cc = headers.get("CC")
        if isinstance(cc, list):
            keys.extend(_text(k) for k in cc if _text(k) is not None)
        death: dict[str, Any] = {
            "count": Int64(1),
            "reason": reason,
            "queue": queue.name,
            "time": datetime.fromtimestamp(int(self.services.clock()), timezone.utc),
            "exchange": msg.exchange,
            "routing-keys": keys,
        }
        if props.expiration is not None:
            death["original-expiration"] = props.expiration
            props.expiration = None
        deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
        for i, d in enumerate(deaths):
            if _text(d.get("queue")) == queue.name and _text(d.get("reason")) == reason:
                old = deaths.pop(i)
                death = dict(old)
                death["count"] = Int64(int(old.get("count") or 0) + 1)
                death["time"] = datetime.fromtimestamp(int(self.services.clock()), timezone.utc)
                break
        deaths.insert(0, death)
        headers["x-death"] = deaths
        if "x-first-death-reason" not in headers:
            headers["x-first-death-reason"] = reason
            headers["x-first-death-queue"] = queue.name
            headers["x-first-death-exchange"] = msg.exchange
        headers["x-last-death-reason"] = reason
        headers["x-last-death-queue"] = queue.name
        headers["x-last-death-exchange"] = msg.exchange
        dlrk = queue.args.dlrk
        if dlrk is not None:
            headers.pop("CC", None)  # RabbitMQ: a new routing key replaces the CC keys too
        props.headers = headers
        new = msg.rebuilt(props, exchange=dlx_name, routing_key=dlrk if dlrk is not None else msg.routing_key)
        routes = [dlrk] if dlrk is not None else keys
        targets: dict[Queue, None] = {}
        for key in routes:
            for q in self.route(ex, new, key):
                targets[q] = None
        rejected_in_cycle = any(_text(d.get("reason")) == "rejected" for d in deaths)
        died_in = {_text(d.get("queue")) for d in deaths}
        live = []
        for q in targets:
            if q.name in died_in and not rejected_in_cycle:
                log.debug("dead-letter cycle through %r: message dropped", q.name)
                continue
            live.append(q)
        if live:
            self.deliver_to(live, new)
        return len(deaths)

    def _route_graph(self, ex: Exchange, message: Any, key: str) -> list[Queue]:
        """Follow exchange-to-exchange bindings and alternate exchanges, cycles included."""
        queues: dict[Queue, None] = {}
        visited: set = set()
        stack = [ex]
        headers = None
        while stack:
            x = stack.pop()
            if x in visited:
                continue
            visited.add(x)
            kind = x.kind
            if kind.needs_headers and headers is None:
                headers = message.headers or {}
            dests = kind.route(key, headers)
            if not dests:
                if x.alternate is not None:
                    alt = self.exchanges.get(x.alternate)
                    if alt is not None:
                        stack.append(alt)
                continue
            for d in dests:
                if isinstance(d, Exchange):
                    stack.append(d)
                else:
                    queues[d] = None
        return list(queues)


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return None
