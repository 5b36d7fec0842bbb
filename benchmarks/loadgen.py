#!/usr/bin/env python3
"""loadgen.py - a pipelined AMQP 0-9-1 load generator built on minimq.codec (stdlib only).

Targets any AMQP 0-9-1 broker (minimq, RabbitMQ, ...):

    python benchmarks/loadgen.py amqp://guest:guest@127.0.0.1:5672/ --n 50000 --size 100 \
        --tests publish,confirm,consume,e2e,rpc,fanout,topic,memory [--broker-pid PID|auto|none]

Workloads (one JSON line each on stdout, then a human-readable table):

  publish  publish-only, no confirms; rate = n / (time until the queue holds all n)
  confirm  publish with publisher confirms, pipelined (window --confirm-window)
  consume  pre-filled queue, basic.qos(--prefetch), ack(multiple) every --ack-every messages
  e2e      producer and consumer (separate connections) at the same time; rate = consumed msgs/s
  e2e_ttl_dlx, e2e_priority  the same through a queue with x-message-ttl + DLX, or x-max-priority
  rpc      --rpc-calls sequential request/reply round trips (after --rpc-warmup) through a
           responder on its own connection; p50/p90/p99 latency in microseconds
  fanout   fanout exchange to --fanout-queues queues, one consumer each; rate = deliveries/s
  topic    publish rate into a topic exchange whose queues are bound by patterns, once per
           entry of --topic-bindings (default 10,10000); a summary line gives the ratio
  memory   (only with a broker pid) --memory-count messages of --memory-size bytes into one
           queue with confirms; the broker's VmRSS before/after -> bytes per queued message

Every workload reports CPU use during its measured window, as % of one core: `client` is
this process, `broker` the broker process (found by --broker-pid, or by the listening port
with --broker-pid auto), `machine` the whole machine (2 cores = 200%).  A side near 100% is
saturated: if `client` is, the load generator - not the broker - is the bottleneck.

Client-side design, so the generator stays cheaper than the broker: the frames of a message
are encoded once with minimq.codec and written in batches (one transport.write per batch);
input is split by minimq.codec.FrameParser; basic.deliver is recognised by its 4-byte method
id and only the delivery tag is unpacked; other methods go through spec.decode_method.
All queues/exchanges are named bench.<workload>.<random id> and deleted afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import struct
import sys
import time
import uuid
from urllib.parse import unquote, urlparse

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from minimq.codec import (  # noqa: E402
    PROTOCOL_HEADER,
    BasicProperties,
    FrameParser,
    decode_method,
    encode_content_frames,
    encode_content_header,
    encode_method_frame,
    spec,
)

ALL_TESTS = ["publish", "confirm", "consume", "e2e", "e2e_ttl_dlx", "e2e_priority", "rpc", "fanout", "topic",
             "memory"]

_Q = struct.Struct(">Q")
_DELIVER = b"\x00\x3c\x00\x3c"  # basic.deliver (60, 60)
_RETURN = b"\x00\x3c\x00\x32"  # basic.return (60, 50)
_ACK_I = spec.BasicAck.INDEX
_NACK_I = spec.BasicNack.INDEX
_CH_CLOSE_I = spec.ChannelClose.INDEX
_CH_CLOSE_OK_I = spec.ChannelCloseOk.INDEX
_CANCEL_I = spec.BasicCancel.INDEX
_CONN_START_I = spec.ConnectionStart.INDEX
_CONN_TUNE_I = spec.ConnectionTune.INDEX
_CONN_OPEN_OK_I = spec.ConnectionOpenOk.INDEX
_CONN_CLOSE_I = spec.ConnectionClose.INDEX
_CONN_CLOSE_OK_I = spec.ConnectionCloseOk.INDEX
_CONN_BLOCKED_I = spec.ConnectionBlocked.INDEX
_CONN_UNBLOCKED_I = spec.ConnectionUnblocked.INDEX


class BrokerError(Exception):
    """The broker closed a channel or the connection."""


# --------------------------------------------------------------------------- client


class Channel:
    __slots__ = (
        "conn", "number", "waiters", "on_message", "closed",
        "_tag", "_hdr", "_parts", "_remaining", "_returned",
        "published", "acked_upto", "singles", "nacked", "_confirm_waiter", "returns",
    )

    def __init__(self, conn: "Connection", number: int) -> None:
        self.conn = conn
        self.number = number
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.on_message = None  # callback(channel, delivery_tag, header_payload, body)
        self.closed: BrokerError | None = None
        self._tag = 0
        self._hdr = None
        self._parts: list = []
        self._remaining = 0
        self._returned = False
        # publisher confirms
        self.published = 0
        self.acked_upto = 0
        self.singles: set[int] = set()
        self.nacked = 0
        self._confirm_waiter: asyncio.Future | None = None
        self.returns = 0

    # -- sync methods (pipelinable: responses come back in order per channel)
    def call(self, method) -> asyncio.Future:
        if self.closed is not None:
            raise self.closed
        fut = self.conn.loop.create_future()
        self.waiters.append(fut)
        self.conn.write(encode_method_frame(self.number, method))
        return fut

    async def rpc(self, method, timeout: float = 30.0):
        return await asyncio.wait_for(self.call(method), timeout)

    def send(self, method) -> None:
        self.conn.write(encode_method_frame(self.number, method))

    async def close(self) -> None:
        if self.closed is None and not self.conn.closed:
            try:
                await self.rpc(spec.ChannelClose(200, "bye", 0, 0), 10)
            except Exception:
                pass
        self.closed = self.closed or BrokerError("channel closed")
        self.conn.channels.pop(self.number, None)

    # -- confirms
    @property
    def confirmed(self) -> int:
        return self.acked_upto + len(self.singles)

    def _on_confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        if nack:
            self.nacked += 1
        if multiple:
            if tag > self.acked_upto:
                self.acked_upto = tag
                if self.singles:
                    self.singles = {t for t in self.singles if t > tag}
        elif tag > self.acked_upto:
            self.singles.add(tag)
        singles = self.singles
        while singles and (self.acked_upto + 1) in singles:
            self.acked_upto += 1
            singles.discard(self.acked_upto)
        w = self._confirm_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_confirm(self, timeout: float) -> None:
        if self.closed is not None:
            raise self.closed
        self._confirm_waiter = self.conn.loop.create_future()
        await asyncio.wait_for(self._confirm_waiter, timeout)

    def _fail(self, exc: BrokerError) -> None:
        self.closed = exc
        while self.waiters:
            f = self.waiters.popleft()
            if not f.done():
                f.set_exception(exc)
        w = self._confirm_waiter
        if w is not None and not w.done():
            w.set_exception(exc)


class Connection(asyncio.Protocol):
    """A minimal AMQP client connection (asyncio Protocol) speaking through minimq.codec."""

    def __init__(self, user: str, password: str, vhost: str, frame_max: int = 131072) -> None:
        self.loop = asyncio.get_running_loop()
        self.user, self.password, self.vhost = user, password, vhost
        self.want_frame_max = frame_max
        self.frame_max = frame_max
        self.parser = FrameParser(0)
        self.transport: asyncio.Transport | None = None
        self.channels: dict[int, Channel] = {}
        self._next_ch = 1
        self.opened: asyncio.Future = self.loop.create_future()
        self.close_ok: asyncio.Future = self.loop.create_future()
        self.closed: BrokerError | None = None
        self.paused = False
        self._resume: asyncio.Future | None = None
        self._out: list[bytes] = []
        self._in_read = False
        self.blocked = False

    @classmethod
    async def connect(cls, url: str) -> "Connection":
        u = urlparse(url)
        host = u.hostname or "127.0.0.1"
        port = u.port or 5672
        user = unquote(u.username or "guest")
        password = unquote(u.password or "guest")
        path = u.path[1:] if u.path.startswith("/") else u.path
        vhost = unquote(path) if path else "/"
        loop = asyncio.get_running_loop()
        _t, proto = await loop.create_connection(lambda: cls(user, password, vhost), host, port)
        await asyncio.wait_for(proto.opened, 15)
        return proto

    # -- output
    def write(self, data: bytes) -> None:
        if self._in_read:
            self._out.append(data)  # flushed once at the end of data_received
        elif self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        while self.paused and self.closed is None:
            self._resume = self.loop.create_future()
            await self._resume

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        r = self._resume
        if r is not None and not r.done():
            r.set_result(None)

    async def channel(self) -> Channel:
        n = self._next_ch
        self._next_ch += 1
        ch = Channel(self, n)
        self.channels[n] = ch
        await ch.rpc(spec.ChannelOpen(""), 15)
        return ch

    async def close(self) -> None:
        if self.closed is None and self.transport is not None and not self.transport.is_closing():
            self.write(encode_method_frame(0, spec.ConnectionClose(200, "bye", 0, 0)))
            try:
                await asyncio.wait_for(self.close_ok, 10)
            except Exception:
                pass
        if self.transport is not None:
            self.transport.close()
        self.closed = self.closed or BrokerError("connection closed")

    # -- input
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(4 * 1024 * 1024, 1024 * 1024)
        transport.write(PROTOCOL_HEADER)

    def connection_lost(self, exc) -> None:
        err = self.closed or BrokerError(f"connection lost: {exc}")
        self._fail_all(err)
        if not self.opened.done():
            self.opened.set_exception(err)
        if not self.close_ok.done():
            self.close_ok.set_result(None)
        self.resume_writing()

    def _fail_all(self, err: BrokerError) -> None:
        self.closed = err
        for ch in list(self.channels.values()):
            ch._fail(err)

    def data_received(self, data: bytes) -> None:
        self._in_read = True
        try:
            channels = self.channels
            for ftype, chno, payload in self.parser.feed(data):
                if ftype == 3:
                    ch = channels[chno]
                    ch._parts.append(payload)
                    ch._remaining -= len(payload)
                    if ch._remaining <= 0:
                        parts = ch._parts
                        body = parts[0] if len(parts) == 1 else b"".join(parts)
                        ch._parts = []
                        self._content(ch, ch._hdr, body)
                elif ftype == 1:
                    head = payload[:4]
                    if head == _DELIVER:
                        ch = channels[chno]
                        ch._tag = _Q.unpack_from(payload, 5 + payload[4])[0]
                        ch._returned = False
                    else:
                        self._method(chno, payload, head)
                elif ftype == 2:
                    ch = channels[chno]
                    size = _Q.unpack_from(payload, 4)[0]
                    if size:
                        ch._hdr = payload
                        ch._remaining = size
                    else:
                        self._content(ch, payload, b"")
                # ftype 8: heartbeat (we ask for none, but tolerate them)
        finally:
            self._in_read = False
            out = self._out
            if out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()

    def _content(self, ch: Channel, hdr: bytes, body: bytes) -> None:
        if ch._returned:
            ch.returns += 1
            return
        cb = ch.on_message
        if cb is not None:
            cb(ch, ch._tag, hdr, body)

    def _method(self, chno: int, payload: bytes, head: bytes) -> None:
        if head == _RETURN:
            self.channels[chno]._returned = True
            return
        m = decode_method(payload)
        idx = m.INDEX
        if chno == 0:
            self._connection_method(m, idx)
            return
        ch = self.channels.get(chno)
        if ch is None:
            return
        if idx == _ACK_I:
            ch._on_confirm(m.delivery_tag, m.multiple, False)
        elif idx == _NACK_I:
            ch._on_confirm(m.delivery_tag, m.multiple, True)
        elif idx == _CH_CLOSE_I:
            self.write(encode_method_frame(chno, spec.ChannelCloseOk()))
            ch._fail(BrokerError(f"channel {chno} closed by broker: {m.reply_code} {m.reply_text}"))
            self.channels.pop(chno, None)
        elif idx == _CANCEL_I:
            pass  # server-side consumer cancel (queue deleted)
        elif not ch.waiters:
            pass  # unsolicited (e.g. basic.consume-ok we did not wait for)
        else:
            fut = ch.waiters.popleft()
            if not fut.done():
                fut.set_result(m)

    def _connection_method(self, m, idx: int) -> None:
        if idx == _CONN_START_I:
            resp = b"\x00" + self.user.encode() + b"\x00" + self.password.encode()
            props = {
                "product": "minimq-loadgen",
                "platform": f"Python {sys.version.split()[0]}",
                "capabilities": {"publisher_confirms": True, "consumer_cancel_notify": True,
                                 "basic.nack": True, "connection.blocked": True},
            }
            self.write(encode_method_frame(0, spec.ConnectionStartOk(props, "PLAIN", resp, "en_US")))
        elif idx == _CONN_TUNE_I:
            fm = min(m.frame_max or self.want_frame_max, self.want_frame_max)
            self.frame_max = fm
            self.write(encode_method_frame(0, spec.ConnectionTuneOk(m.channel_max or 2047, fm, 0)))
            self.write(encode_method_frame(0, spec.ConnectionOpen(self.vhost, "", False)))
        elif idx == _CONN_OPEN_OK_I:
            if not self.opened.done():
                self.opened.set_result(None)
        elif idx == _CONN_CLOSE_I:
            self.write(encode_method_frame(0, spec.ConnectionCloseOk()))
            err = BrokerError(f"connection closed by broker: {m.reply_code} {m.reply_text}")
            self._fail_all(err)
            if not self.opened.done():
                self.opened.set_exception(err)
        elif idx == _CONN_CLOSE_OK_I:
            if not self.close_ok.done():
                self.close_ok.set_result(None)
        elif idx == _CONN_BLOCKED_I:
            self.blocked = True
        elif idx == _CONN_UNBLOCKED_I:
            self.blocked = False


# ------------------------------------------------------------------- measurement helpers

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        p = s[s.rindex(")") + 2:].split()
        return (int(p[11]) + int(p[12])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def machine_busy() -> float | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK
    except (OSError, ValueError):
        return None


def rss_kb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def find_listener_pid(port: int) -> int | None:
    """The pid holding the listening socket on `port` (needs permission to read /proc/*/fd)."""
    inodes = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) > 9 and p[3] == "0A" and int(p[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{p[9]}]")
        except OSError:
            pass
    if not inodes:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
            except OSError:
                pass
    return None


class Meter:
    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = self_cpu()
        self.b0 = proc_cpu(self.broker_pid)
        self.m0 = machine_busy()

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        c = self_cpu() - self.c0
        b1 = proc_cpu(self.broker_pid)
        m1 = machine_busy()
        b = None if b1 is None or self.b0 is None else b1 - self.b0
        m = None if m1 is None or self.m0 is None else m1 - self.m0

        def pct(x):
            return None if x is None else round(100.0 * x / wall, 1)

        other = None if m is None else m - c - (b or 0.0)
        return {"client": pct(c), "broker": pct(b), "machine": pct(m), "other": pct(other)}


def rid() -> str:
    return uuid.uuid4().hex[:8]


def message_frames(conn: Connection, ch: Channel, exchange: str, routing_key: str, body: bytes,
                   props: BasicProperties | None = None) -> bytes:
    """basic.publish + content header + body frames, encoded once with minimq.codec."""
    method = encode_method_frame(ch.number, spec.BasicPublish(0, exchange, routing_key, False, False))
    header = encode_content_header(len(body), props or BasicProperties(delivery_mode=1))
    return method + b"".join(encode_content_frames(ch.number, header, body, conn.frame_max))


async def publish_many(conn: Connection, frames: list[bytes], n: int, batch: int = 256) -> None:
    """Write n messages (message i = frames[i % len(frames)]) in batches, honouring backpressure."""
    k = len(frames)
    full = frames[0] * batch if k == 1 else None
    # frames repeated so that any window of `batch` starting below k is one slice
    ring = frames * (1 + (batch + k - 1) // k) if k > 1 else None
    i = 0
    while i < n:
        if conn.closed is not None:
            raise conn.closed
        m = min(batch, n - i)
        if k == 1:
            data = full if m == batch else frames[0] * m
        else:
            s = i % k
            data = b"".join(ring[s:s + m])
        conn.write(data)
        i += m
        if conn.paused:
            await conn.drain()
        else:
            await asyncio.sleep(0)  # let consumers on the same loop run


async def publish_confirmed(conn: Connection, ch: Channel, frame: bytes, n: int, window: int,
                            timeout: float, batch: int = 256) -> None:
    """Pipelined publishing with confirms: at most `window` unconfirmed messages in flight."""
    deadline = time.monotonic() + timeout
    base = ch.published
    target = base + n
    sent = base
    while sent < target:
        room = window - (sent - ch.confirmed)
        if room <= 0:
            await ch.wait_confirm(max(0.1, deadline - time.monotonic()))
            continue
        m = min(room, batch, target - sent)
        conn.write(frame * m)
        sent += m
        ch.published = sent
        if conn.paused:
            await conn.drain()
    while ch.confirmed < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"confirms {ch.confirmed - base}/{n}")
        await ch.wait_confirm(max(0.1, deadline - time.monotonic()))
    if ch.nacked:
        raise BrokerError(f"{ch.nacked} publishes nacked")


async def declare_queue(ch: Channel, name: str, **kw) -> str:
    ok = await ch.rpc(spec.QueueDeclare(0, name, kw.get("passive", False), False,
                                        kw.get("exclusive", False), kw.get("auto_delete", False),
                                        False, kw.get("arguments")))
    return ok.queue


async def queue_depth(ch: Channel, queues: list[str]) -> int:
    futs = [ch.call(spec.QueueDeclare(0, q, True, False, False, False, False, None)) for q in queues]
    total = 0
    for f in futs:
        total += (await asyncio.wait_for(f, 30)).message_count
    return total


async def wait_depth(ch: Channel, queues: list[str], target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        tot = await queue_depth(ch, queues)
        if tot >= target:
            return tot
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue depth {tot}/{target}")
        await asyncio.sleep(0.002)


async def cleanup(conn: Connection, queues=(), exchanges=()) -> None:
    """Delete what a workload declared, on a fresh channel (the old one may be closed)."""
    if conn.closed is not None:
        return
    try:
        ch = await conn.channel()
        futs = [ch.call(spec.QueueDelete(0, q, False, False, False)) for q in queues]
        futs += [ch.call(spec.ExchangeDelete(0, x, False, False)) for x in exchanges]
        for f in futs:
            await asyncio.wait_for(f, 30)
        await ch.close()
    except Exception as exc:  # pragma: no cover - best effort
        print(f"# cleanup failed: {exc}", file=sys.stderr)


class AckingCounter:
    """Consumer callback: counts deliveries, acks (multiple) every `ack_every` per channel,
    and remembers the last tag per channel so `ack_rest` can ack the tail."""

    def __init__(self, loop, target: int, ack_every: int) -> None:
        self.count = 0
        self.target = target
        self.ack_every = max(1, ack_every)
        self.unacked: dict[Channel, list] = {}  # ch -> [count since ack, last tag]
        self.done: asyncio.Future = loop.create_future()
        self.bytes = 0

    def __call__(self, ch: Channel, tag: int, hdr: bytes, body: bytes) -> None:
        self.count += 1
        self.bytes += len(body)
        st = self.unacked.get(ch)
        if st is None:
            st = self.unacked[ch] = [0, 0]
        st[0] += 1
        st[1] = tag
        if st[0] >= self.ack_every:
            ch.conn.write(encode_method_frame(ch.number, spec.BasicAck(tag, True)))
            st[0] = 0
        if self.count >= self.target and not self.done.done():
            self.done.set_result(None)

    def ack_rest(self) -> None:
        for ch, st in self.unacked.items():
            if st[0] and ch.closed is None:
                ch.conn.write(encode_method_frame(ch.number, spec.BasicAck(st[1], True)))
                st[0] = 0


async def start_consumer(conn: Connection, queue: str, prefetch: int, on_message, no_ack=False,
                         channel: Channel | None = None) -> tuple[Channel, str]:
    ch = channel or await conn.channel()
    if prefetch and not no_ack:
        await ch.rpc(spec.BasicQos(0, prefetch, False))
    ch.on_message = on_message
    ok = await ch.rpc(spec.BasicConsume(0, queue, "", False, no_ack, False, False, None))
    return ch, ok.consumer_tag


# ------------------------------------------------------------------------- workloads


class Bench:
    def __init__(self, opts: argparse.Namespace, broker_pid: int | None) -> None:
        self.o = opts
        self.broker_pid = broker_pid
        self.meter = Meter(broker_pid)
        self.body = b"x" * opts.size
        self.id = rid()

    def qn(self, what: str) -> str:
        return f"bench.{what}.{self.id}"

    async def conn(self) -> Connection:
        return await Connection.connect(self.o.url)

    def ack_every(self) -> int:
        return max(1, min(self.o.ack_every, max(1, self.o.prefetch // 2)))

    # -- publish only
    async def t_publish(self) -> dict:
        o = self.o
        c = await self.conn()
        q = self.qn("pub")
        try:
            ch = await c.channel()
            await declare_queue(ch, q)
            frame = message_frames(c, ch, "", q, self.body)
            self.meter.start()
            t0 = time.perf_counter()
            await publish_many(c, [frame], o.n)
            sent = time.perf_counter() - t0
            await wait_depth(ch, [q], o.n, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            return {"n": o.n, "size": o.size, "secs": secs, "rate": o.n / secs, "unit": "msgs/s",
                    "client_send_secs": sent, "cpu": cpu}
        finally:
            await cleanup(c, [q])
            await c.close()

    # -- publish with confirms
    async def t_confirm(self) -> dict:
        o = self.o
        c = await self.conn()
        q = self.qn("conf")
        try:
            ch = await c.channel()
            await declare_queue(ch, q)
            await ch.rpc(spec.ConfirmSelect(False))
            frame = message_frames(c, ch, "", q, self.body)
            self.meter.start()
            t0 = time.perf_counter()
            await publish_confirmed(c, ch, frame, o.n, o.confirm_window, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            return {"n": o.n, "size": o.size, "window": o.confirm_window, "secs": secs,
                    "rate": o.n / secs, "unit": "msgs/s", "cpu": cpu}
        finally:
            await cleanup(c, [q])
            await c.close()

    async def prefill(self, c: Connection, q: str, n: int) -> None:
        pch = await c.channel()
        await pch.rpc(spec.ConfirmSelect(False))
        frame = message_frames(c, pch, "", q, self.body)
        await publish_confirmed(c, pch, frame, n, self.o.confirm_window, self.o.test_timeout)
        await wait_depth(pch, [q], n, self.o.test_timeout)
        await pch.close()

    # -- consume from a pre-filled queue
    async def t_consume(self) -> dict:
        o = self.o
        c = await self.conn()
        q = self.qn("cons")
        try:
            ch = await c.channel()
            await declare_queue(ch, q)
            await self.prefill(c, q, o.n)
            counter = AckingCounter(c.loop, o.n, self.ack_every())
            await ch.rpc(spec.BasicQos(0, o.prefetch, False))
            ch.on_message = counter
            self.meter.start()
            t0 = time.perf_counter()
            ok = await ch.rpc(spec.BasicConsume(0, q, "", False, False, False, False, None))
            await asyncio.wait_for(counter.done, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            counter.ack_rest()
            await ch.rpc(spec.BasicCancel(ok.consumer_tag, False))
            return {"n": o.n, "size": o.size, "prefetch": o.prefetch, "ack_every": self.ack_every(),
                    "secs": secs, "rate": o.n / secs, "unit": "msgs/s", "cpu": cpu}
        finally:
            await cleanup(c, [q])
            await c.close()

    # -- producer and consumer at the same time
    async def t_e2e(self) -> dict:
        return await self._e2e("e2e")

    async def t_e2e_ttl_dlx(self) -> dict:
        """e2e through a queue with a message TTL and a dead-letter exchange (issue 3's
        speed target: within 25% of a plain queue)."""
        return await self._e2e("e2e_ttl_dlx", {"x-message-ttl": 60000, "x-dead-letter-exchange": "amq.fanout"})

    async def t_e2e_priority(self) -> dict:
        """e2e through a priority queue (x-max-priority 10), messages of priority 5."""
        return await self._e2e("e2e_priority", {"x-max-priority": 10},
                               BasicProperties(delivery_mode=1, priority=5))

    async def _e2e(self, name: str, arguments: dict | None = None,
                   props: BasicProperties | None = None) -> dict:
        o = self.o
        cc = await self.conn()
        pc = await self.conn()
        q = self.qn(name)
        try:
            ch = await cc.channel()
            await declare_queue(ch, q, arguments=arguments)
            counter = AckingCounter(cc.loop, o.n, self.ack_every())
            ch, tag = await start_consumer(cc, q, o.prefetch, counter, channel=ch)
            pch = await pc.channel()
            frame = message_frames(pc, pch, "", q, self.body, props)
            self.meter.start()
            t0 = time.perf_counter()
            prod = asyncio.ensure_future(publish_many(pc, [frame], o.n))
            await asyncio.wait_for(counter.done, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            await prod
            counter.ack_rest()
            await ch.rpc(spec.BasicCancel(tag, False))
            return {"n": o.n, "size": o.size, "prefetch": o.prefetch, "ack_every": self.ack_every(),
                    "producer": "same-process", "secs": secs, "rate": o.n / secs,
                    "unit": "msgs/s", "cpu": cpu}
        finally:
            await cleanup(cc, [q])
            await pc.close()
            await cc.close()

    # -- request/reply round trips
    async def t_rpc(self) -> dict:
        o = self.o
        sc = await self.conn()  # responder
        cc = await self.conn()  # caller
        rq = self.qn("rpc")
        try:
            sch = await sc.channel()
            await declare_queue(sch, rq)

            def respond(ch: Channel, tag: int, hdr: bytes, body: bytes) -> None:
                props = BasicProperties.decode(hdr, 12)
                # reply = publish to the default exchange, routing key = reply_to
                method = encode_method_frame(ch.number, spec.BasicPublish(0, "", props.reply_to, False, False))
                header = encode_content_header(
                    len(body), BasicProperties(correlation_id=props.correlation_id, delivery_mode=1))
                out = method + b"".join(encode_content_frames(ch.number, header, body, sc.frame_max))
                out += encode_method_frame(ch.number, spec.BasicAck(tag, False))
                ch.conn.write(out)

            await start_consumer(sc, rq, 100, respond, channel=sch)

            cch = await cc.channel()
            reply_q = await declare_queue(cch, "", exclusive=True)
            pending: dict[str, asyncio.Future] = {}

            def on_reply(ch: Channel, tag: int, hdr: bytes, body: bytes) -> None:
                cid = BasicProperties.decode(hdr, 12).correlation_id
                f = pending.pop(cid, None)
                if f is not None and not f.done():
                    f.set_result(time.perf_counter_ns())

            await start_consumer(cc, reply_q, 0, on_reply, no_ack=True, channel=cch)
            lat: list[float] = []
            calls, warm = o.rpc_calls, o.rpc_warmup
            t0 = 0.0
            for i in range(warm + calls):
                if i == warm:
                    self.meter.start()
                    t0 = time.perf_counter()
                cid = str(i)
                header = encode_content_header(
                    len(self.body), BasicProperties(reply_to=reply_q, correlation_id=cid, delivery_mode=1))
                req = encode_method_frame(cch.number, spec.BasicPublish(0, "", rq, False, False)) + b"".join(
                    encode_content_frames(cch.number, header, self.body, cc.frame_max))
                fut = cc.loop.create_future()
                pending[cid] = fut
                ts = time.perf_counter_ns()
                cc.write(req)
                te = await asyncio.wait_for(fut, 10)
                if i >= warm:
                    lat.append((te - ts) / 1000.0)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            lat.sort()

            def pc(p: float) -> float:
                k = (len(lat) - 1) * p / 100.0
                lo = int(k)
                hi = min(lo + 1, len(lat) - 1)
                return round(lat[lo] + (lat[hi] - lat[lo]) * (k - lo), 1)

            return {"n": calls, "size": o.size, "server": "same-process", "secs": secs,
                    "rate": calls / secs, "unit": "calls/s", "p50_us": pc(50), "p90_us": pc(90),
                    "p99_us": pc(99), "max_us": round(lat[-1], 1),
                    "mean_us": round(sum(lat) / len(lat), 1), "cpu": cpu}
        finally:
            await cleanup(sc, [rq])
            await cc.close()
            await sc.close()

    # -- fanout to N queues
    async def t_fanout(self) -> dict:
        o = self.o
        nq = o.fanout_queues
        m = max(1, o.n // nq)
        total = m * nq
        cc = await self.conn()
        pc = await self.conn()
        ex = self.qn("fanout")
        qs = [self.qn(f"fanout{i}") for i in range(nq)]
        try:
            ch = await cc.channel()
            await ch.rpc(spec.ExchangeDeclare(0, ex, "fanout", False, False, False, False, False, None))
            for q in qs:
                await declare_queue(ch, q)
                await ch.rpc(spec.QueueBind(0, q, ex, "", False, None))
            counter = AckingCounter(cc.loop, total, self.ack_every())
            consumers = []
            for q in qs:
                consumers.append(await start_consumer(cc, q, o.prefetch, counter))
            pch = await pc.channel()
            frame = message_frames(pc, pch, ex, "", self.body)
            self.meter.start()
            t0 = time.perf_counter()
            prod = asyncio.ensure_future(publish_many(pc, [frame], m))
            await asyncio.wait_for(counter.done, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            await prod
            counter.ack_rest()
            for cch, tag in consumers:
                await cch.rpc(spec.BasicCancel(tag, False))
            return {"n": m, "size": o.size, "queues": nq, "deliveries": total, "secs": secs,
                    "rate": total / secs, "unit": "deliveries/s", "publish_rate": round(m / secs, 1),
                    "cpu": cpu}
        finally:
            await cleanup(cc, qs, [ex])
            await pc.close()
            await cc.close()

    # -- topic routing with few vs many bindings
    async def topic_once(self, nb: int) -> dict:
        o = self.o
        nq = o.topic_queues
        c = await self.conn()
        ex = self.qn(f"topic{nb}")
        qs = [self.qn(f"topic{nb}.{i}") for i in range(nq)]
        pats, keys = [], []
        for i in range(nb):
            r = i % 7
            if i % 2 == 0:
                pats.append(f"r{r}.k{i}.*")
                keys.append(f"r{r}.k{i}.x")
            else:
                pats.append(f"r{r}.#.k{i}")
                keys.append(f"r{r}.m.k{i}")
        try:
            ch = await c.channel()
            await ch.rpc(spec.ExchangeDeclare(0, ex, "topic", False, False, False, False, False, None))
            for q in qs:
                await declare_queue(ch, q)
            tb = time.perf_counter()
            futs = [ch.call(spec.QueueBind(0, qs[i % nq], ex, pats[i], False, None)) for i in range(nb)]
            for f in futs:
                await asyncio.wait_for(f, o.test_timeout)
            bind_secs = time.perf_counter() - tb
            frames = [message_frames(c, ch, ex, k, self.body) for k in keys]
            self.meter.start()
            t0 = time.perf_counter()
            await publish_many(c, frames, o.n)
            sent = time.perf_counter() - t0
            await wait_depth(ch, qs, o.n, o.test_timeout)
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            return {"n": o.n, "size": o.size, "bindings": nb, "queues": nq, "distinct_keys": len(keys),
                    "secs": secs, "rate": o.n / secs, "unit": "msgs/s", "client_send_secs": sent,
                    "bind_secs": bind_secs, "cpu": cpu}
        finally:
            await cleanup(c, qs, [ex])
            await c.close()

    # -- memory per queued message (needs the broker pid)
    async def t_memory(self) -> dict:
        o = self.o
        pid = self.broker_pid
        if not pid:
            raise RuntimeError("memory needs --broker-pid (or auto) to read the broker's RSS")
        c = await self.conn()
        q = self.qn("mem")
        body = b"x" * o.memory_size
        try:
            ch = await c.channel()
            await declare_queue(ch, q)
            await ch.rpc(spec.ConfirmSelect(False))
            frame = message_frames(c, ch, "", q, body)
            await asyncio.sleep(0.2)
            before = rss_kb(pid)
            self.meter.start()
            t0 = time.perf_counter()
            await publish_confirmed(c, ch, frame, o.memory_count, o.confirm_window,
                                    max(o.test_timeout, 120))
            secs = time.perf_counter() - t0
            cpu = self.meter.stop()
            depth = await queue_depth(ch, [q])
            await asyncio.sleep(0.5)
            after = rss_kb(pid)
            await ch.rpc(spec.QueueDelete(0, q, False, False, False))
            await asyncio.sleep(0.5)
            freed = rss_kb(pid)
            delta = (after["VmRSS"] - before["VmRSS"]) * 1024
            return {"n": o.memory_count, "size": o.memory_size, "queued": depth, "secs": secs,
                    "rate": o.memory_count / secs, "unit": "msgs/s",
                    "rss_before_mb": round(before["VmRSS"] / 1024, 1),
                    "rss_after_mb": round(after["VmRSS"] / 1024, 1),
                    "rss_hwm_mb": round(after.get("VmHWM", 0) / 1024, 1),
                    "rss_after_delete_mb": round(freed["VmRSS"] / 1024, 1),
                    "bytes_per_msg": round(delta / o.memory_count, 1), "cpu": cpu}
        finally:
            await cleanup(c, [q])
            await c.close()


# ------------------------------------------------------------------------------ main


def fmt_table(rows: list[dict]) -> str:
    hdr = ["test", "result", "unit", "detail", "client%", "broker%"]
    lines = []
    for r in rows:
        t = r["test"]
        if "error" in r:
            lines.append([t, "ERROR", "", r["error"][:60], "", ""])
            continue
        cpu = r.get("cpu") or {}
        detail = ""
        if t == "rpc":
            detail = f"p50 {r['p50_us']:.0f}us p99 {r['p99_us']:.0f}us"
        elif t == "memory":
            detail = f"{r['bytes_per_msg']:.0f} B/msg, RSS {r['rss_after_mb']:.0f} MB"
        elif t.startswith("topic_"):
            detail = f"{r['bindings']} bindings (bind {r['bind_secs']:.2f}s)"
        elif t == "topic":
            lines.append([t, f"{r['ratio']:.2f}x", "slowdown", "rate lo/hi bindings", "", ""])
            continue
        elif t == "fanout":
            detail = f"{r['queues']} queues"
        lines.append([t, f"{r['rate']:,.0f}", r["unit"], detail,
                      "" if cpu.get("client") is None else f"{cpu['client']:.0f}",
                      "" if cpu.get("broker") is None else f"{cpu['broker']:.0f}"])
    w = [max(len(str(x[i])) for x in [hdr] + lines) for i in range(len(hdr))]
    out = ["  ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr))]
    out.append("  ".join("-" * w[i] for i in range(len(hdr))))
    for ln in lines:
        out.append("  ".join(str(x).ljust(w[i]) for i, x in enumerate(ln)))
    return "\n".join(out)


def _round(r: dict) -> dict:
    for k in ("secs", "client_send_secs", "bind_secs"):
        if k in r:
            r[k] = round(r[k], 4)
    if "rate" in r:
        r["rate"] = round(r["rate"], 1)
    return r


async def amain(o: argparse.Namespace) -> int:
    port = urlparse(o.url).port or 5672
    if o.broker_pid == "auto":
        bpid = find_listener_pid(port)
    elif o.broker_pid in ("none", "", None):
        bpid = None
    else:
        bpid = int(o.broker_pid)
    bench = Bench(o, bpid)
    emit = lambda rec: print(json.dumps(rec), flush=True)  # noqa: E731
    emit({"test": "meta", "url": o.url, "broker_pid": bpid, "label": o.label or None, "n": o.n,
          "size": o.size, "python": sys.version.split()[0], "client": "minimq.codec loadgen",
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    rows = []
    tests = [t.strip() for t in o.tests.split(",") if t.strip()]
    for t in tests:
        if t not in ALL_TESTS:
            print(f"unknown test {t!r}; known: {','.join(ALL_TESTS)}", file=sys.stderr)
            return 2
    failures = 0
    for t in tests:
        if t == "memory" and not bpid:
            rec = {"test": "memory", "skipped": "no broker pid"}
            emit(rec)
            continue
        if t == "topic":
            rates = {}
            for nb in [int(x) for x in o.topic_bindings.split(",")]:
                rec = {"test": f"topic_{nb}", "client": "python_loadgen"}
                if o.label:
                    rec["label"] = o.label
                try:
                    rec.update(_round(await asyncio.wait_for(bench.topic_once(nb), o.test_timeout * 2 + 30)))
                    rates[nb] = rec["rate"]
                except Exception as exc:
                    failures += 1
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
                emit(rec)
                rows.append(rec)
            if len(rates) >= 2:
                lo, hi = min(rates), max(rates)
                rec = {"test": "topic", "client": "python_loadgen", "bindings_lo": lo, "bindings_hi": hi,
                       "rate_lo": rates[lo], "rate_hi": rates[hi],
                       "ratio": round(rates[lo] / rates[hi], 3) if rates[hi] else None}
                if o.label:
                    rec["label"] = o.label
                emit(rec)
                rows.append(rec)
            continue
        rec = {"test": t, "client": "python_loadgen"}
        if o.label:
            rec["label"] = o.label
        limit = max(o.test_timeout, 120) + 60 if t == "memory" else o.test_timeout + 30
        try:
            rec.update(_round(await asyncio.wait_for(getattr(bench, f"t_{t}")(), limit)))
        except Exception as exc:
            failures += 1
            rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        emit(rec)
        rows.append(rec)
        await asyncio.sleep(0.3)  # let the broker settle between workloads
    if not o.no_table:
        print(f"\n# {o.label or o.url}  n={o.n} size={o.size}  (cpu: % of one core during the run)")
        print("\n".join("# " + ln for ln in fmt_table(rows).splitlines()), flush=True)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    p.add_argument("--n", "-n", type=int, default=50000, help="messages per workload (default 50000)")
    p.add_argument("--size", "-s", type=int, default=100, help="body size in bytes (default 100)")
    p.add_argument("--tests", default=",".join(t for t in ALL_TESTS),
                   help=f"comma list from {','.join(ALL_TESTS)}")
    p.add_argument("--confirm-window", type=int, default=1000)
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--ack-every", type=int, default=100, help="ack(multiple) every N deliveries")
    p.add_argument("--rpc-calls", type=int, default=2000)
    p.add_argument("--rpc-warmup", type=int, default=200)
    p.add_argument("--fanout-queues", type=int, default=10)
    p.add_argument("--topic-bindings", default="10,10000", help="binding counts to compare")
    p.add_argument("--topic-queues", type=int, default=10)
    p.add_argument("--memory-count", type=int, default=1_000_000)
    p.add_argument("--memory-size", type=int, default=100)
    p.add_argument("--broker-pid", default="auto", help="PID, 'auto' (listener of the URL's port) or 'none'")
    p.add_argument("--test-timeout", type=float, default=60.0, help="seconds per workload")
    p.add_argument("--label", default="")
    p.add_argument("--no-table", action="store_true", help="JSON lines only")
    return p


def main(argv: list[str] | None = None) -> int:
    o = build_parser().parse_args(argv)
    return asyncio.run(amain(o))


if __name__ == "__main__":
    sys.exit(main())
