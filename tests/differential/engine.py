"""The differential tier's machinery: random operation sequences run in lockstep on two brokers.

A sequence is a list of operations, each a tuple of plain values (so it prints and replays):
`("publish", conn, channel, exchange, routing_key, mandatory, persistent, body)` and so on,
where names are indexes into NAMES / EXCHANGES / KEYS / QUEUE_ARGS. `generate(seed, n)` makes
one; `Side(url, prefix)` plays one on a broker over raw sockets (tests/integration/rawamqp.py),
opening connections and channels on first use, and returns, after each operation, everything
the broker sent in answer: per (connection, channel), the frames in order, normalised (names
server-generated or prefixed by the run become placeholders). After every operation a
barrier makes sure asynchronous frames (deliveries, returns, confirms, channel closes caused
by an earlier method) have arrived: channel.flow(true) on every open channel (each channel
has handled what was sent before), then queue.declare(passive) of every queue seen, from a
connection of its own (in RabbitMQ each queue is a process: its answer means it has handled
every publish routed to it before, and sent the deliveries), then channel.flow again, until
a round brings nothing new.

Only what RabbitMQ decides deterministically is compared. What its own timing decides, each
checked on a RabbitMQ 3.10.8 node (this is the one place that says why):
- How long a queue takes over a message: the first persistent message in a new durable
  queue creates its index files, several channel round trips. The queue barrier above waits
  for each queue instead of for a number of round trips. And when a persistent message in a
  durable queue is confirmed (after RabbitMQ's disk sync, on its own timer): the barrier
  waits until every publish on a confirm channel has its basic.ack or basic.nack.
- The order of deliveries from two queues to one channel caused by one operation (a publish
  routed to both, a recover): two queue processes race, and delivery tags follow the order
  of arrival (a fanout to three queues consumed on one channel came in four orders out of
  ten). `generate` has each channel consume from one queue only.
- Deliveries on a connection that a hard error is closing (`settle`): they race the
  connection.close inside RabbitMQ.
- The order of the basic.cancel frames for a deleted queue's consumers with server-generated
  tags: both brokers go by tag, and those tags are random (`settle` sorts them).
- The word for an unknown exchange type: 'unknown' while RabbitMQ's VM has no atom of that
  name, 'invalid' once it has one (any client may have made one); the generated type
  carries the run's prefix, so no VM has it.
- Anything else that does not come back on two replays of the same sequence
  (test_differential.py).
What runs leave behind is removed (`Side.cleanup`): on a RabbitMQ shared by many runs, a
leftover binding between amq.* exchanges or a server-named queue bound to one would route
the next run's publishes where a fresh broker returns them.

`run_lockstep(ops, url_a, url_b)` plays a sequence on both and returns the first divergence;
`shrink(ops, diverges)` cuts a diverging sequence down to a minimal one that still diverges.
"""
from __future__ import annotations

import random
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from minimq.codec import BasicProperties, spec

from integration.rawamqp import (
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_METHOD,
    Closed,
    RawAMQP,
    content_frames,
    encode_method_frame,
)
from minimq.codec.properties import parse_content_header

CONNECTIONS = 2
CHANNELS = (1, 2, 3)

# Queue names: {p} is the run's prefix. "" asks the server for a name; amq.* is reserved.
NAMES = ("{p}q0", "{p}q1", "{p}q2", "", "amq.{p}q", "{p}" + "L" * 200)
EXCHANGES = ("{p}x0", "{p}x1", "", "amq.direct", "amq.fanout", "amq.topic", "amq.headers",
             "{p}missing", "amq.{p}x")
# The unknown type carries the run's prefix: RabbitMQ calls a type "unknown" only while no atom
# of that name exists in its VM ("invalid" once one does, e.g. after any client used 'bogus').
EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers", "{p}bogus")
KEYS = ("k", "a.b", "{p}q0", "{p}q1", "#", "*.b", "")
QUEUE_ARGS = (
    {},
    {"x-max-length": 2},
    {"x-message-ttl": 600000},
    {"x-max-length": "two"},
    {"x-overflow": "reject-publish", "x-max-length": 1},
    {"x-queue-type": "classic"},
    {"x-expires": 0},
)
BIND_ARGS = ({}, {"x-match": "all", "h": 1}, {"x-match": "any", "h": 2, "z": 1})
HEADERS = (None, {"h": 1}, {"h": 2})

OPS = (
    # weight, name
    (6, "queue_declare"), (4, "exchange_declare"), (5, "queue_bind"), (2, "queue_unbind"),
    (2, "exchange_bind"), (1, "exchange_unbind"), (2, "queue_delete"), (2, "exchange_delete"),
    (10, "publish"), (5, "get"), (4, "consume"), (2, "cancel"), (5, "ack"), (2, "nack"),
    (2, "reject"), (1, "recover"), (2, "qos"), (2, "purge"), (1, "tx_select"), (1, "tx_commit"),
    (1, "tx_rollback"), (2, "confirm_select"), (1, "channel_close"), (1, "connection_close"),
    (1, "declare_passive"),
)


def generate(seed: int, length: int) -> list[tuple]:
    """A random operation sequence; the same seed gives the same sequence."""
    rng = random.Random(seed)
    names = [n for _w, n in OPS for _ in range(_w)]
    # A prologue gives the random part something to work on: two queues, a direct and a
    # topic exchange, bindings, a consumer (the shrinker drops what a divergence doesn't need).
    ops: list[tuple] = [
        ("queue_declare", 0, 1, 0, False, False, False, False, rng.choice((0, 0, 1, 2))),
        ("queue_declare", 1, 1, 1, False, False, False, False, 0),
        ("exchange_declare", 0, 1, 0, 0, False, False, False, False),
        ("exchange_declare", 0, 1, 1, 2, False, False, False, False),
        ("queue_bind", 0, 1, 0, 0, 0, 0),
        ("queue_bind", 1, 1, 1, 1, 4, 0),
        ("queue_bind", 1, 1, 0, 1, 1, 0),
    ]
    if rng.random() < 0.5:
        ops.append(("consume", 1, 2, 0, "t1", False, False))
    # The queue each channel consumes from: one per channel. Deliveries that one operation
    # causes from two queues to one channel (a publish routed to both, a recover) arrive in
    # the order RabbitMQ's two queue processes happen to run, which is not deterministic
    # (and delivery tags follow that order), so a sequence never sets that up.
    consuming: dict[tuple[int, int], int] = {(1, 2): 0} if len(ops) > 7 else {}
    for _ in range(length):
        op = rng.choice(names)
        c, ch = rng.randrange(CONNECTIONS), rng.choice(CHANNELS)
        q = rng.randrange(len(NAMES)) if rng.random() < 0.15 else rng.randrange(2)
        x = rng.randrange(len(EXCHANGES)) if rng.random() < 0.25 else rng.randrange(2)
        key = rng.randrange(len(KEYS))
        flag = lambda p=0.3: rng.random() < p  # noqa: E731
        if op == "queue_declare":
            args = rng.randrange(len(QUEUE_ARGS)) if flag(0.4) else 0
            ops.append((op, c, ch, q, flag(0.2), flag(0.2), flag(0.2), flag(0.2), args))
        elif op == "declare_passive":
            ops.append((op, c, ch, q))
        elif op == "exchange_declare":
            t = rng.randrange(len(EXCHANGE_TYPES)) if flag(0.5) else 0
            ops.append((op, c, ch, x, t, flag(0.1), flag(0.2), flag(0.2), flag(0.1)))
        elif op in ("queue_bind", "queue_unbind"):
            ops.append((op, c, ch, q, x, key, rng.randrange(len(BIND_ARGS)) if flag(0.2) else 0))
        elif op in ("exchange_bind", "exchange_unbind"):
            ops.append((op, c, ch, x, rng.randrange(len(EXCHANGES)) if flag(0.4) else rng.randrange(2), key))
        elif op == "queue_delete":
            ops.append((op, c, ch, q, flag(0.2), flag(0.2)))
        elif op == "exchange_delete":
            ops.append((op, c, ch, x, flag(0.2)))
        elif op == "publish":
            to_default = flag(0.5)
            ops.append((op, c, ch, 2 if to_default else x, rng.randrange(len(KEYS)) if not to_default else 2 + rng.randrange(2),
                        flag(0.3), flag(0.3), rng.randrange(len(HEADERS)), rng.randrange(1000)))
        elif op == "get":
            ops.append((op, c, ch, q, flag(0.4)))
        elif op == "consume":
            q = consuming.setdefault((c, ch), q)
            ops.append((op, c, ch, q, rng.choice(("", "t1", "t2")), flag(0.3), flag(0.1)))
        elif op == "cancel":
            ops.append((op, c, ch, rng.choice(("t1", "t2", "nope"))))
        elif op in ("ack", "nack", "reject"):
            # tag: 0 = the channel's latest delivery, -1 = one past it (unknown), else as is
            tag = rng.choice((0, 0, 0, 0, 0, 0, -1, 1, 2))
            ops.append((op, c, ch, tag, flag(0.3), flag(0.6)))
        elif op == "recover":
            ops.append((op, c, ch))
        elif op == "qos":
            ops.append((op, c, ch, rng.choice((0, 1, 2)), flag(0.2)))
        elif op == "purge":
            ops.append((op, c, ch, q))
        else:
            ops.append((op, c, ch))
    return ops


# ----------------------------------------------------------------- playing a sequence

@dataclass
class Frame:
    """One normalised observation: a method (its repr), or a message with its content."""

    what: str

    def __repr__(self) -> str:
        return self.what


@dataclass
class Conn:
    raw: RawAMQP | None = None
    open: set[int] = field(default_factory=set)
    closing: set[int] = field(default_factory=set)  # channel.close sent, close-ok awaited
    last_tag: dict[int, int] = field(default_factory=dict)
    # Channels in confirm mode: publishes sent so far, and those not confirmed yet.
    published: dict[int, int] = field(default_factory=dict)
    unconfirmed: dict[int, set[int]] = field(default_factory=dict)


class Side:
    """One broker playing the sequence."""

    def __init__(self, url: str, prefix: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5672
        # The URL's vhost ('/' when the path is empty), user and password. Runs that share
        # a RabbitMQ at the same time need a vhost each: the amq.* exchanges are per vhost,
        # and one run's bindings to them route the other's publishes.
        self.login = {
            "user": unquote(parts.username or "guest"),
            "password": unquote(parts.password or "guest"),
            "vhost": unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        }
        self.prefix = prefix or "diff-" + uuid.uuid4().hex[:8] + "-"
        self.conns = [Conn() for _ in range(CONNECTIONS)]
        self._names: dict[str, str] = {}
        # Every queue a declare-ok named (as the broker spelled it), for the queue barrier,
        # and the connection that barrier runs on (never part of what is compared).
        self.queues: set[str] = set()
        self.e2e: set[tuple[str, str, str]] = set()  # exchange.bind (destination, source, key) sent
        self._probe: RawAMQP | None = None
        self._probe_open: set[int] = set()

    # -- names

    def name(self, template: str) -> str:
        return template.format(p=self.prefix)

    def normalise(self, text: str) -> str:
        text = text.replace(self.prefix, "P-")
        text = re.sub(r"vhost (\\?)'" + re.escape(self.login["vhost"]) + r"\1'", r"vhost \1'V\1'", text)

        def sub(m: re.Match) -> str:
            got = m.group(0)
            if got not in self._names:
                kind = "gen" if got.startswith("amq.gen") else "ctag"
                self._names[got] = f"amq.{kind}-#{sum(1 for v in self._names.values() if kind in v) + 1}"
            return self._names[got]

        return re.sub(r"amq\.(gen|ctag)-[A-Za-z0-9_\-]{22}", sub, text)

    # -- connections

    def conn(self, i: int) -> RawAMQP:
        c = self.conns[i]
        if c.raw is None:
            c.raw = RawAMQP.connect(self.host, self.port, **self.login)
            c.open = set()
            c.closing = set()
            c.last_tag = {}
            c.published = {}
            c.unconfirmed = {}
        return c.raw

    def channel(self, i: int, ch: int, seen: dict) -> RawAMQP | None:
        """Connection `i` with channel `ch` open (None if the connection went away meanwhile).

        Frames that arrive before channel.open-ok (a late delivery on another channel) are
        observations like any other: they go into `seen`."""
        raw = self.conn(i)
        c = self.conns[i]
        if ch not in c.open:
            raw.send_method(ch, spec.ChannelOpen())
            if not self._await_reply(i, ch, (spec.ChannelOpenOk,), seen, record=False):
                return None
            c.open.add(ch)
        return raw

    def close(self) -> None:
        for c in self.conns:
            if c.raw is not None:
                c.raw.sock.close()
                c.raw = None
        if self._probe is not None:
            self._probe.sock.close()
            self._probe = None

    # -- one operation

    def play(self, op: tuple) -> dict[tuple[int, int], list[Frame]]:
        """Run one operation; everything each connection received, per (conn, channel)."""
        name, ci, ch = op[0], op[1], op[2]
        seen: dict[tuple[int, int], list[Frame]] = {}
        raw = self.channel(ci, ch, seen)
        if raw is None:
            return self.barrier(seen)
        sent: list = []

        def send(m) -> None:
            sent.append(m)
            raw.send_method(ch, m)

        n = lambda i: self.name(NAMES[i])  # noqa: E731
        x = lambda i: self.name(EXCHANGES[i])  # noqa: E731
        if name == "queue_declare":
            _, _, _, q, passive, durable, exclusive, auto_delete, args = op
            send(spec.QueueDeclare(0, n(q), passive, durable, exclusive, auto_delete, False, QUEUE_ARGS[args]))
        elif name == "declare_passive":
            send(spec.QueueDeclare(0, n(op[3]), True))
        elif name == "exchange_declare":
            _, _, _, xi, t, passive, durable, auto_delete, internal = op
            send(spec.ExchangeDeclare(0, x(xi), self.name(EXCHANGE_TYPES[t]), passive, durable, auto_delete, internal))
        elif name == "queue_bind":
            send(spec.QueueBind(0, n(op[3]), x(op[4]), self.name(KEYS[op[5]]), False, BIND_ARGS[op[6]]))
        elif name == "queue_unbind":
            send(spec.QueueUnbind(0, n(op[3]), x(op[4]), self.name(KEYS[op[5]]), BIND_ARGS[op[6]]))
        elif name == "exchange_bind":
            self.e2e.add((x(op[3]), x(op[4]), self.name(KEYS[op[5]])))
            send(spec.ExchangeBind(0, x(op[3]), x(op[4]), self.name(KEYS[op[5]])))
        elif name == "exchange_unbind":
            send(spec.ExchangeUnbind(0, x(op[3]), x(op[4]), self.name(KEYS[op[5]])))
        elif name == "queue_delete":
            send(spec.QueueDelete(0, n(op[3]), op[4], op[5]))
        elif name == "exchange_delete":
            send(spec.ExchangeDelete(0, x(op[3]), op[4]))
        elif name == "publish":
            _, _, _, xi, key, mandatory, persistent, headers, body = op
            props = BasicProperties(delivery_mode=2 if persistent else 1, headers=HEADERS[headers])
            conn = self.conns[ci]
            if ch in conn.published:
                conn.published[ch] += 1
                conn.unconfirmed[ch].add(conn.published[ch])
            raw.send_raw(
                encode_method_frame(ch, spec.BasicPublish(0, x(xi), self.name(KEYS[key]), mandatory))
                + content_frames(ch, b"m%d" % body, props)
            )
        elif name == "get":
            send(spec.BasicGet(0, n(op[3]), op[4]))
        elif name == "consume":
            send(spec.BasicConsume(0, n(op[3]), op[4], False, op[5], op[6]))
        elif name == "cancel":
            send(spec.BasicCancel(op[3]))
        elif name in ("ack", "nack", "reject"):
            _, _, _, tag, multiple, requeue = op
            last = self.conns[ci].last_tag.get(ch, 0)
            tag = last if tag == 0 else last + 1 if tag == -1 else tag
            if name == "ack":
                send(spec.BasicAck(tag, multiple))
            elif name == "nack":
                send(spec.BasicNack(tag, multiple, requeue))
            else:
                send(spec.BasicReject(tag, requeue))
        elif name == "recover":
            send(spec.BasicRecover(True))
        elif name == "qos":
            send(spec.BasicQos(0, op[3], op[4]))
        elif name == "purge":
            send(spec.QueuePurge(0, n(op[3])))
        elif name == "tx_select":
            send(spec.TxSelect())
        elif name == "tx_commit":
            send(spec.TxCommit())
        elif name == "tx_rollback":
            send(spec.TxRollback())
        elif name == "confirm_select":
            send(spec.ConfirmSelect())
        elif name == "channel_close":
            send(spec.ChannelClose(200, "bye", 0, 0))
            self.conns[ci].open.discard(ch)
            self.conns[ci].closing.add(ch)
        elif name == "connection_close":
            raw.send_method(0, spec.ConnectionClose(200, "bye", 0, 0))
        else:
            raise ValueError(f"unknown operation {name!r}")
        if sent and sent[-1].RESPONSES:
            # A synchronous method: its reply first. RabbitMQ refuses any other method on
            # the channel meanwhile (504 'unexpected command while processing').
            self._await_reply(ci, ch, tuple(sent[-1].RESPONSES), seen)
        return self.barrier(seen)

    def _await_reply(self, i: int, ch: int, replies: tuple, seen: dict, record: bool = True) -> bool:
        """Read until channel `ch` answered with one of `replies`; False if the connection
        went away first. `record=False` leaves the reply itself out of `seen`."""
        c = self.conns[i]
        pending = {ch}
        while c.raw is not None and pending:
            if not self._read_one(i, c, pending, seen, replies=(ch, replies), record=record):
                return False
        return not pending

    # -- collecting what came back

    def barrier(self, seen: dict | None = None) -> dict[tuple[int, int], list[Frame]]:
        """Read until every open channel of every connection answered channel.flow(true),
        twice, so asynchronous consequences of the operation have all arrived."""
        seen = {} if seen is None else seen
        # At least two rounds, then more while a round still brought something new (a
        # channel closed in one round releases its messages to others only afterwards).
        # Confirms of persistent messages in durable queues wait for RabbitMQ's disk sync
        # (its own timer): rounds go on until every publish has its confirm, for a while.
        rounds, last = 0, -1
        deadline = time.monotonic() + 5.0
        while (rounds < 2 or (last != self._count(seen) and rounds < 6)
               or (self._confirms_due() and time.monotonic() < deadline)):
            last = self._count(seen)
            if rounds:
                self._sync_queues()
            rounds += 1
            for i, c in enumerate(self.conns):
                if c.raw is None:
                    continue
                pending = set(c.open) | c.closing
                for ch in sorted(c.open):
                    c.raw.send_method(ch, spec.ChannelFlow(True))
                while c.raw is not None and pending:
                    if not self._read_one(i, c, pending, seen):
                        break
        return seen

    def _confirms_due(self) -> bool:
        return any(pending for c in self.conns if c.raw is not None
                   for ch, pending in c.unconfirmed.items() if ch in c.open)

    def _sync_queues(self) -> None:
        """queue.declare(passive) of every queue seen, each on its own channel of the probe
        connection, pipelined; returns once all answered. A missing queue (404) is forgotten.
        Another connection's exclusive queue answers 405, but RabbitMQ asks the queue process
        for its counts before it checks the owner, so that queue is waited for too."""
        if not self.queues:
            return
        try:
            if self._probe is None:
                self._probe = RawAMQP.connect(self.host, self.port, **self.login)
                self._probe_open = set()
            probe = self._probe
            names = dict(enumerate(sorted(self.queues), 1))
            for number, name in names.items():
                if number not in self._probe_open:
                    probe.send_method(number, spec.ChannelOpen())
                probe.send_method(number, spec.QueueDeclare(0, name, True))
            waiting = set(names)
            while waiting:
                frame = probe.read_frame(10.0)
                if frame.type != FRAME_METHOD:
                    continue
                m = frame.method
                if isinstance(m, spec.ChannelOpenOk):
                    self._probe_open.add(frame.channel)
                elif isinstance(m, spec.QueueDeclareOk):
                    waiting.discard(frame.channel)
                elif isinstance(m, spec.ChannelClose):
                    probe.send_method(frame.channel, spec.ChannelCloseOk())
                    self._probe_open.discard(frame.channel)
                    waiting.discard(frame.channel)
                    if m.reply_code == 404:
                        self.queues.discard(names[frame.channel])
        except (Closed, TimeoutError, OSError):
            if self._probe is not None:
                self._probe.sock.close()
            self._probe = None

    @staticmethod
    def _count(seen: dict) -> int:
        return sum(len(v) for v in seen.values())

    def _read_one(self, i: int, c: Conn, pending: set[int], seen: dict,
                  replies: tuple | None = None, record: bool = True) -> bool:
        raw = c.raw
        assert raw is not None
        try:
            frame = raw.read_frame(10.0)
        except (Closed, TimeoutError, OSError) as exc:
            seen.setdefault((i, 0), []).append(Frame(f"<socket {type(exc).__name__}>"))
            raw.sock.close()
            c.raw = None
            return False
        out = seen.setdefault((i, frame.channel), [])
        if frame.type != FRAME_METHOD:
            out.append(Frame(f"<frame type {frame.type} outside content>"))
            return True
        method = frame.method
        if isinstance(method, spec.ChannelFlowOk):
            pending.discard(frame.channel)
            return True
        if isinstance(method, (spec.ChannelCloseOk, spec.ChannelClose)):
            c.published.pop(frame.channel, None)
            c.unconfirmed.pop(frame.channel, None)
        if isinstance(method, spec.ChannelCloseOk):
            c.open.discard(frame.channel)
            c.closing.discard(frame.channel)
            pending.discard(frame.channel)
            out.append(Frame("ChannelCloseOk()"))
            return True
        if isinstance(method, spec.ChannelClose):
            raw.send_method(frame.channel, spec.ChannelCloseOk())
            c.open.discard(frame.channel)
            pending.discard(frame.channel)
            out.append(Frame(self.normalise(repr(method))))
            return True
        if isinstance(method, (spec.ConnectionClose, spec.ConnectionCloseOk)):
            if isinstance(method, spec.ConnectionClose):
                raw.send_method(0, spec.ConnectionCloseOk())
            out.append(Frame(self.normalise(repr(method))))
            raw.hang_up(5.0)
            raw.sock.close()
            c.raw = None
            pending.clear()
            return False
        if isinstance(method, spec.QueueDeclareOk):
            self.queues.add(method.queue)
        elif isinstance(method, spec.ConfirmSelectOk):
            c.published.setdefault(frame.channel, 0)
            c.unconfirmed.setdefault(frame.channel, set())
        elif isinstance(method, (spec.BasicAck, spec.BasicNack)):
            pending_confirms = c.unconfirmed.get(frame.channel)
            if pending_confirms:
                if method.multiple:
                    pending_confirms -= {n for n in pending_confirms if n <= method.delivery_tag}
                else:
                    pending_confirms.discard(method.delivery_tag)
        if replies is not None and frame.channel == replies[0] and isinstance(method, replies[1]):
            pending.discard(frame.channel)  # the awaited reply (get-ok has content: below)
            if not record:
                return True
        if method.HAS_CONTENT:
            out.append(Frame(self.normalise(repr(method)) + " " + self._content(raw, frame.channel)))
            if isinstance(method, (spec.BasicDeliver, spec.BasicGetOk)):
                c.last_tag[frame.channel] = method.delivery_tag
            return True
        out.append(Frame(self.normalise(repr(method))))
        return True

    @staticmethod
    def _content(raw: RawAMQP, channel: int) -> str:
        header = raw.read_frame(10.0)
        assert (header.type, header.channel) == (FRAME_HEADER, channel), header
        _cls, size, props = parse_content_header(header.payload)
        parts = []
        while sum(map(len, parts)) < size:
            body = raw.read_frame(10.0)
            assert (body.type, body.channel) == (FRAME_BODY, channel), body
            parts.append(body.payload)
        p = BasicProperties.decode(props)
        return f"body={b''.join(parts)!r} mode={p.delivery_mode} headers={p.headers}"

    # -- cleaning up what a run left on the broker

    def cleanup(self) -> None:
        """Delete what the run created, so the next run (on a RabbitMQ shared by many runs)
        starts from the same state as on a fresh minimq: the prefixed queues and exchanges,
        the server-named queues it declared, and the bindings it made between the built-in
        amq.* exchanges (they outlive every queue and exchange of the run, and a leftover
        one routes the next run's publishes where a fresh broker would return them)."""
        self.close()
        deletes: list = []
        for name in sorted({self.name(t) for t in NAMES} | self.queues):
            if name and not name.startswith("amq.") or name.startswith("amq.gen-"):
                deletes.append(spec.QueueDelete(0, name))
        for template in EXCHANGES:
            name = self.name(template)
            if name and not name.startswith("amq."):
                deletes.append(spec.ExchangeDelete(0, name))
        for dest, source, key in sorted(self.e2e):
            if dest.startswith("amq.") and source.startswith("amq."):
                deletes.append(spec.ExchangeUnbind(0, dest, source, key))
        # Then check: a queue or exchange still there (the node was too busy to let the
        # cleanup connection in, or a refusal) is deleted again, a few times at most.
        for _attempt in range(4):
            if not deletes:
                return
            if self._each_on_its_channel(deletes) is None:
                continue
            checks = [spec.QueueDeclare(0, m.queue, True) if isinstance(m, spec.QueueDelete)
                      else spec.ExchangeDeclare(0, m.exchange, "direct", True)
                      for m in deletes if not isinstance(m, spec.ExchangeUnbind)]
            answers = self._each_on_its_channel(checks)
            if answers is None:
                continue
            deletes = [spec.QueueDelete(0, c.queue) if isinstance(c, spec.QueueDeclare)
                       else spec.ExchangeDelete(0, c.exchange)
                       for c, ok in zip(checks, answers) if ok]

    def _each_on_its_channel(self, methods: list) -> list[bool] | None:
        """Send each method on a fresh channel of a new connection, pipelined (a refusal
        closes that channel only); per method whether it was answered without a close,
        or None if the connection failed."""
        try:
            raw = RawAMQP.connect(self.host, self.port, **self.login)
        except (Closed, TimeoutError, OSError, AssertionError):
            return None
        answers = [False] * len(methods)
        try:
            for number, method in enumerate(methods, 1):
                raw.send_method(number, spec.ChannelOpen())
                raw.send_method(number, method)
            waiting = set(range(1, len(methods) + 1))
            while waiting:
                frame = raw.read_frame(10.0)
                if frame.type != FRAME_METHOD or isinstance(frame.method, spec.ChannelOpenOk):
                    continue
                if isinstance(frame.method, spec.ChannelClose):
                    raw.send_method(frame.channel, spec.ChannelCloseOk())
                else:
                    answers[frame.channel - 1] = True
                waiting.discard(frame.channel)
            raw.close()
        except (Closed, TimeoutError, OSError, AssertionError):
            return None
        finally:
            raw.sock.close()
        return answers


# --------------------------------------------------------------------- lockstep


@dataclass
class Divergence:
    step: int
    op: tuple
    a: dict
    b: dict

    def describe(self) -> str:
        keys = sorted(set(self.a) | set(self.b))
        lines = [f"step {self.step}: {self.op!r}"]
        for k in keys:
            fa, fb = self.a.get(k, []), self.b.get(k, [])
            mark = "  " if fa == fb else "!="
            lines.append(f"  {mark} conn {k[0]} channel {k[1]}:\n       A: {fa}\n       B: {fb}")
        return "\n".join(lines)


Normaliser = Callable[[tuple, dict], dict]


def settle(observed: dict) -> dict:
    """Drop what timing alone decides, on either side.

    A connection closed with a hard error: RabbitMQ ends the failing channel first, so its
    unacked messages go back to their queues and may be delivered to the connection's other
    channels in the instant before connection.close (minimq does the same, deterministically).
    Whether such a delivery is written before the close, or the other channel is shut down
    first, is a race between RabbitMQ's processes, so the frames on that connection are left
    out; what happened to the messages shows in later counts and deliveries.
    """
    closing = {c for (c, ch), frames in observed.items()
               if ch == 0 and any(f.startswith("ConnectionClose(") for f in frames)}
    out = {}
    for (c, ch), frames in observed.items():
        if c in closing and ch:
            frames = [f for f in frames if not f.startswith("BasicDeliver(")]
        if frames:
            out[(c, ch)] = _cancels_sorted(frames)
    return out


def _cancels_sorted(frames: list[str]) -> list[str]:
    """A deleted queue's consumers are cancelled in consumer-tag order, on both brokers; for
    server-generated tags (random names) that order is chance, so each run of basic.cancel
    frames is compared sorted by the tags' placeholders."""
    out: list[str] = []
    run: list[str] = []
    for f in frames + [""]:
        if f.startswith("BasicCancel("):
            run.append(f)
            continue
        out.extend(sorted(run))
        run = []
        if f:
            out.append(f)
    return out


def run_lockstep(ops: list[tuple], url_a: str, url_b: str,
                 allow: Normaliser | None = None) -> Divergence | None:
    """Play `ops` on both brokers, one operation at a time; the first divergence, or None."""
    a, b = Side(url_a), Side(url_b)
    try:
        for step, op in enumerate(ops):
            got_a = settle({k: [f.what for f in v] for k, v in a.play(op).items() if v})
            got_b = settle({k: [f.what for f in v] for k, v in b.play(op).items() if v})
            if allow is not None:
                got_a, got_b = allow(op, got_a), allow(op, got_b)
            if got_a != got_b:
                return Divergence(step, op, got_a, got_b)
        return None
    finally:
        a.cleanup()
        b.cleanup()


def shrink(ops: list[tuple], diverges: Callable[[list[tuple]], bool], budget_s: float = 120.0) -> list[tuple]:
    """A shorter sequence that still diverges (delta debugging, bounded in time)."""
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(ops) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, changed = 0, False
        while i < len(ops) and time.monotonic() < deadline:
            candidate = ops[:i] + ops[i + chunk:]
            if candidate and diverges(candidate):
                ops, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return ops


def reachable(url: str, timeout: float = 2.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout):
            return True
    except OSError:
        return False


__all__ = ["generate", "run_lockstep", "shrink", "Side", "Divergence", "reachable", "Any"]
