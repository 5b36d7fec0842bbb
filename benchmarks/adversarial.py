#!/usr/bin/env python3
"""adversarial.py - one hostile client at a time, against minimq and (when it answers) RabbitMQ.

Reproduces the table of benchmarks/ADVERSARIAL.md: for each attack, the broker's peak RSS
growth during it, and the round-trip times (p50/p99/max) of an unrelated client doing
queue.declare(passive) on its own connection meanwhile.

    python benchmarks/adversarial.py [--scale 1.0] [--only NAME,...] [--no-rabbitmq]
        [--rabbitmq amqp://guest:guest@127.0.0.1:5672/] [--watermark 800MB]

--scale 1 is the issue's full size (GBs of traffic, 400k consumers); smaller scales shrink
every size and count. minimq runs as `python -m minimq --port 0 --in-memory` with
--memory-high-watermark (default 800 MB, as the issue's runs); RabbitMQ is used as it is
configured (its watermark is not changed: the node is shared). Every attack is bounded in
time: senders give up once the broker has stopped reading them for 2 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_REPO, os.path.join(_REPO, "tests"), os.path.dirname(os.path.abspath(__file__))]

from adversarial.tools import Bystander, PeakRSS, connect_blockable, rss  # noqa: E402
from adversarial.tools import discard_thread as drain, sender_thread as sender  # noqa: E402
from integration.rawamqp import RawAMQP, content_frames  # noqa: E402
from loadgen import find_listener_pid  # noqa: E402
from minimq.codec import PROTOCOL_HEADER, spec  # noqa: E402
from minimq.codec.frames import encode_frame, encode_method_frame  # noqa: E402
from minimq.codec.properties import encode_content_header  # noqa: E402

MB = 1024 * 1024
CERTS = os.path.join(_REPO, "tests", "integration", "certs")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Target:
    """A broker under attack: where it listens and which process to watch."""

    def __init__(self, name: str, host: str, port: int, pid: int, tls_port: int | None = None,
                 proc: subprocess.Popen | None = None) -> None:
        self.name, self.host, self.port, self.pid, self.tls_port, self.proc = name, host, port, pid, tls_port, proc

    def connect(self, blockable: bool = False) -> RawAMQP:
        if blockable:
            return connect_blockable(self.host, self.port)
        return RawAMQP.connect(self.host, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_minimq(watermark: str) -> Target:
    cmd = [sys.executable, "-m", "minimq", "--port", "0", "--in-memory", "--log-level", "warning",
           "--no-management", "--memory-high-watermark", str(parse_size(watermark)),
           "--tls-cert", os.path.join(CERTS, "cert.pem"), "--tls-key", os.path.join(CERTS, "key.pem"),
           "--tls-port", "0"]
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"amqp://([\w.\-]+):(\d+)", line)
    t = re.search(r"amqps://[\w.\-]+:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"minimq did not start: {line!r}")
    return Target("minimq", m.group(1), int(m.group(2)), proc.pid, int(t.group(1)) if t else None, proc)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(MB|GB|KB)?", text.strip(), re.I)
    if not m:
        raise SystemExit(f"bad size {text!r}")
    unit = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}.get((m.group(2) or "").upper(), 1)
    return int(float(m.group(1)) * unit)


# ---------------------------------------------------------------- measuring


def percentiles(times: list[float]) -> dict:
    ts = sorted(times) or [float("nan")]
    pick = lambda q: ts[min(len(ts) - 1, int(q * len(ts)))]  # noqa: E731
    return {"p50_ms": pick(0.5) * 1e3, "p99_ms": pick(0.99) * 1e3, "max_ms": ts[-1] * 1e3,
            "round_trips": len(times)}


def idle(seconds: float) -> None:
    time.sleep(seconds)  # the attack runs meanwhile; this is a benchmark, not a test


def passive(c: RawAMQP, queue: str, timeout: float = 120) -> spec.QueueDeclareOk:
    c.send_method(1, spec.QueueDeclare(0, queue, passive=True))
    return c.expect(spec.QueueDeclareOk, timeout=timeout, channel=1)


def publishes(channel: int, exchange: str, keys, body: bytes, mandatory: bool = False):
    for key in keys:
        yield (encode_method_frame(channel, spec.BasicPublish(0, exchange, key, mandatory, False))
               + content_frames(channel, body))


def close_quietly(*conns: RawAMQP) -> None:
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass


def name(prefix: str) -> str:
    return f"flood-{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ attacks


def attack_unfinished_content(t: Target, scale: float) -> dict:
    """24 channels each announce a 120 MB message and never finish it."""
    size = int(120 * MB * scale)
    c = t.connect(blockable=True)
    for ch in range(1, 25):
        c.channel_open(ch)

    def chunks():
        for ch in range(1, 25):
            yield encode_method_frame(ch, spec.BasicPublish(0, "", "nowhere", False, False))
            yield encode_frame(2, ch, encode_content_header(size, None))
        frame = b"b" * (131072 - 8)
        for _ in range(size // len(frame)):
            for ch in range(1, 25):
                yield encode_frame(3, ch, frame)

    s = sender(c.sock, chunks())
    s.join(300)
    close_quietly(c)
    return {"read_mb": s.sent / MB}


def attack_unroutable_returns(t: Target, scale: float) -> dict:
    """Mandatory unroutable 64 KB publishes, never reading the socket."""
    c = t.connect()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.channel_open(1)
    one = next(publishes(1, "", ["no-such-queue"], b"r" * 65536, mandatory=True))
    limit = int(2500 * MB * scale)
    s = sender(c.sock, (one for _ in range(limit // len(one))))
    s.join(300)
    close_quietly(c)
    return {"read_mb": s.sent / MB}


def attack_get_reject(t: Target, scale: float) -> dict:
    """Pipelined basic.get + basic.reject(requeue) of one 1 MB message, never reading."""
    setup = t.connect()
    setup.channel_open(1)
    q = name("get")
    setup.queue_declare(1, q)
    setup.publish(1, "", q, b"g" * MB)
    passive(setup, q)
    c = t.connect()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.channel_open(1)
    n = max(100, int(2400 * scale))
    pipeline = b"".join(encode_method_frame(1, spec.BasicGet(0, q, False))
                        + encode_method_frame(1, spec.BasicReject(tag, True)) for tag in range(1, n + 1))
    s = sender(c.sock, [pipeline])
    idle(5)
    close_quietly(c)
    s.join(10)
    deadline = time.monotonic() + 30
    while (left := passive(setup, q).message_count) != 1 and time.monotonic() < deadline:
        pass  # the attacker's close reaches the broker after its pipeline: wait for the requeue
    setup.send_method(1, spec.QueueDelete(0, q))
    setup.expect(spec.QueueDeleteOk)
    close_quietly(setup)
    return {"sent_kb": len(pipeline) / 1024, "message_kept": left == 1}


def attack_unacked(t: Target, scale: float) -> dict:
    """A consumer that reads but never acks, while a publisher floods its queue."""
    setup = t.connect()
    setup.channel_open(1)
    q = name("unacked")
    setup.queue_declare(1, q)
    hoarder = t.connect()
    hoarder.channel_open(1)
    hoarder.send_method(1, spec.BasicConsume(0, q, "hoard"))
    hoarder.expect(spec.BasicConsumeOk)
    drain(hoarder.sock)
    pub = t.connect(blockable=True)
    pub.channel_open(1)
    body = b"u" * (100 * 1024)
    count = int(2500 * MB * scale) // len(body)
    s = sender(pub.sock, publishes(1, "", [q] * count, body))
    s.join(300)
    blocked = False
    try:
        pub.sock.settimeout(1)
        blocked = isinstance(pub.read_method(1)[1], spec.ConnectionBlocked)
    except Exception:
        pass
    close_quietly(hoarder, pub)
    setup.send_method(1, spec.QueueDelete(0, q))
    setup.expect(spec.QueueDeleteOk, timeout=120)
    close_quietly(setup)
    return {"published_mb": s.sent / MB, "blocked": blocked}


def attack_no_ack_unread(t: Target, scale: float) -> dict:
    """A no-ack consumer that does not read, on a queue holding 1 GB."""
    setup = t.connect()
    setup.channel_open(1)
    q = name("deep")
    setup.queue_declare(1, q)
    body = b"d" * (100 * 1024)
    count = int(1024 * MB * scale) // len(body)
    for frame in publishes(1, "", [q] * count, body):
        setup.send_raw(frame)
    while passive(setup, q).message_count < count:
        pass
    return {"_setup": (setup, q, count)}


def attack_no_ack_unread_run(t: Target, state) -> dict:
    setup, q, count = state
    slow = t.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.channel_open(1)
    slow.send_method(1, spec.BasicConsume(0, q, "slow", no_ack=True))
    idle(5)
    left = passive(setup, q).message_count
    close_quietly(slow)
    setup.send_method(1, spec.QueueDelete(0, q))
    setup.expect(spec.QueueDeleteOk, timeout=120)
    close_quietly(setup)
    return {"left_queue": count - left}


def attack_blocked_consumers(t: Target, scale: float, priorities: bool = False) -> dict:
    """20k consumers with prefetch 1, each holding one unacked message; then publishes.
    `priorities`: each consumer with x-priority 0, 1 or 2."""
    n = max(100, int(20000 * scale))
    q = name("busy")
    hog = t.connect()
    hog.channel_open(1)
    hog.queue_declare(1, q)
    hog.send_method(1, spec.BasicQos(0, 1, False))
    hog.expect(spec.BasicQosOk)
    hog.send_raw(b"".join(encode_method_frame(1, spec.BasicConsume(
        0, q, f"c{i}", no_wait=True, arguments={"x-priority": i % 3} if priorities else None))
        for i in range(n)))
    passive(hog, q, timeout=600)
    drain(hog.sock)
    pub = t.connect()
    pub.channel_open(1)
    for frame in publishes(1, "", [q] * n, b"x"):
        pub.send_raw(frame)
    passive(pub, q)
    k = 2000
    started = time.monotonic()
    pub.send_raw(b"".join(publishes(1, "", [q] * k, b"x")))
    passive(pub, q)
    per = (time.monotonic() - started) / k
    close_quietly(hog)
    pub.send_method(1, spec.QueueDelete(0, q))
    pub.expect(spec.QueueDeleteOk, timeout=120)
    close_quietly(pub)
    return {"consumers": n, "ms_per_publish": per * 1e3}


def attack_drop_consumers(t: Target, scale: float) -> dict:
    """A connection with 400k consumers goes away."""
    n = max(1000, int(400000 * scale))
    q = name("crowd")
    hog = t.connect()
    hog.channel_open(1)
    hog.queue_declare(1, q)
    batch = 20000
    for start in range(0, n, batch):
        hog.send_raw(b"".join(encode_method_frame(1, spec.BasicConsume(0, q, f"c{i}", no_wait=True))
                              for i in range(start, min(n, start + batch))))
    passive(hog, q, timeout=600)
    return {"_setup": (hog, q, n)}


def attack_drop_consumers_run(t: Target, state) -> dict:
    hog, q, n = state
    check = t.connect()
    check.channel_open(1)
    started = time.monotonic()
    close_quietly(hog)
    while passive(check, q, timeout=600).consumer_count:
        pass
    took = time.monotonic() - started
    check.send_method(1, spec.QueueDelete(0, q))
    check.expect(spec.QueueDeleteOk)
    close_quietly(check)
    return {"consumers": n, "teardown_s": took}


def attack_blocked_priority_consumers(t: Target, scale: float) -> dict:
    """As attack_blocked_consumers, the consumers with priorities 0, 1 and 2."""
    return attack_blocked_consumers(t, scale, priorities=True)


def attack_topic_hashes(t: Target, scale: float, words: list[str] | None = None) -> dict:
    """A topic binding of 127 '#' words (or `words`) and 120-word routing keys."""
    c = t.connect()
    c.channel_open(1)
    ex, q = name("topic"), name("sink")
    c.send_method(1, spec.ExchangeDeclare(0, ex, "topic", auto_delete=False))
    c.expect(spec.ExchangeDeclareOk)
    c.queue_declare(1, q)
    c.send_method(1, spec.QueueBind(0, q, ex, ".".join(words or ["#"] * 127)))
    c.expect(spec.QueueBindOk)
    n = max(20, int(200 * scale))
    keys = [".".join(["a"] * 119 + [str(i)]) for i in range(n)]
    started = time.monotonic()
    c.send_raw(b"".join(publishes(1, ex, keys, b"t")))
    got = passive(c, q, timeout=600).message_count
    per = (time.monotonic() - started) / n
    c.send_method(1, spec.QueueDelete(0, q))
    c.expect(spec.QueueDeleteOk)
    c.send_method(1, spec.ExchangeDelete(0, ex))
    c.expect(spec.ExchangeDeleteOk)
    close_quietly(c)
    return {"routed": got, "ms_per_publish": per * 1e3}


def attack_topic_alternating(t: Target, scale: float) -> dict:
    """A topic binding of '#.a' repeated 63 times then '#', and 120-word routing keys."""
    return attack_topic_hashes(t, scale, ["#", "a"] * 63 + ["#"])


def attack_routing_keys(t: Target, scale: float) -> dict:
    """65k distinct routing keys on each of 4 connections."""
    n = max(1000, int(65536 * scale))
    conns = []
    for k in range(4):
        c = t.connect()
        c.channel_open(1)
        c.send_raw(b"".join(publishes(1, "", [f"{k}.{i}.{'k' * 64}" for i in range(n)], b"m")))
        conns.append(c)
    for c in conns:
        c.send_method(1, spec.QueueDeclare(0, "", exclusive=True))
        c.expect(spec.QueueDeclareOk, timeout=300)
    close_quietly(*conns)
    return {"keys_per_connection": n}


def attack_unauthenticated(t: Target, scale: float) -> dict:
    """5000 unauthenticated connections each parking a partial 131 KB frame."""
    n = max(100, int(5000 * scale))
    socks, refused = [], 0
    for _ in range(n):
        s = socket.create_connection((t.host, t.port), 10)
        s.settimeout(2)
        try:
            s.sendall(PROTOCOL_HEADER + struct.pack(">BHI", 1, 0, 131072) + b"x" * 131000)
        except OSError:
            refused += 1
        socks.append(s)
    idle(2)
    for s in socks:
        s.close()
    return {"connections": n}


def attack_tls_idle(t: Target, scale: float) -> dict:
    """TCP connections to the TLS port that never send a ClientHello."""
    if t.tls_port is None:
        return {"skipped": "no TLS port"}
    s = socket.create_connection((t.host, t.tls_port), 10)
    s.settimeout(90)
    started = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
    return {"closed_after_s": time.monotonic() - started}


ATTACKS = {
    "content": attack_unfinished_content,
    "returns": attack_unroutable_returns,
    "get_reject": attack_get_reject,
    "unacked": attack_unacked,
    "no_ack_unread": attack_no_ack_unread,
    "blocked_consumers": attack_blocked_consumers,
    "blocked_priority_consumers": attack_blocked_priority_consumers,
    "drop_consumers": attack_drop_consumers,
    "topic": attack_topic_hashes,
    "topic_alternating": attack_topic_alternating,
    "routing_keys": attack_routing_keys,
    "unauthenticated": attack_unauthenticated,
    "tls_idle": attack_tls_idle,
}
# Attacks whose setup (filling a queue, creating consumers) is not part of what is measured.
SECOND_PHASE = {"no_ack_unread": attack_no_ack_unread_run, "drop_consumers": attack_drop_consumers_run}


def run_one(target: Target, attack: str, scale: float) -> dict:
    try:
        return _run_one(target, attack, scale)
    except Exception as exc:  # the broker refused or stalled the setup: say so, go on
        return {"broker": target.name, "attack": attack, "scale": scale, "error": repr(exc)}


def _run_one(target: Target, attack: str, scale: float) -> dict:
    fn = ATTACKS[attack]
    state = None
    if attack in SECOND_PHASE:
        state = fn(target, scale)["_setup"]
    before = rss(target.pid)
    peak = PeakRSS(target.pid)
    by = Bystander(target, f"flood-bystander-{uuid.uuid4().hex[:8]}").start()
    started = time.monotonic()
    try:
        notes = SECOND_PHASE[attack](target, state) if state is not None else fn(target, scale)
    except Exception as exc:
        notes = {"error": repr(exc)}
    took = time.monotonic() - started
    try:
        stats = percentiles(by.stop())
    except AssertionError as exc:
        stats = {**percentiles(by.times), "bystander_failed": str(exc)}
    top = peak.stop()
    return {"broker": target.name, "attack": attack, "scale": scale, "rss_before_mb": before / MB,
            "peak_growth_mb": (top - before) / MB, "seconds": took, **stats, **notes}


def rabbitmq_target(url: str) -> Target | None:
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 5672
    try:
        socket.create_connection((host, port), 2).close()
    except OSError:
        return None
    pid = find_listener_pid(port)
    if pid is None:
        return None
    tls = 5671
    try:
        socket.create_connection((host, tls), 2).close()
    except OSError:
        tls = None
    return Target("rabbitmq", host, port, pid, tls)


def fmt(rows: list[dict]) -> str:
    out = ["| attack | broker | peak RSS growth | bystander p50 | p99 | max | notes |",
           "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r and "p50_ms" not in r:
            out.append(f"| {r['attack']} | {r['broker']} | - | - | - | - | {r['error']} |")
            continue
        notes = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in {"broker", "attack", "scale", "rss_before_mb", "peak_growth_mb", "p50_ms",
                              "p99_ms", "max_ms", "round_trips", "seconds"} and v is not None}
        out.append(f"| {r['attack']} | {r['broker']} | {r['peak_growth_mb']:.0f} MB | {r['p50_ms']:.1f} ms "
                   f"| {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms | {json.dumps(notes)} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--only", default="", help="comma-separated attack names: " + ",".join(ATTACKS))
    p.add_argument("--watermark", default="800MB")
    p.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--no-rabbitmq", action="store_true")
    o = p.parse_args()
    attacks = [a for a in (o.only.split(",") if o.only else ATTACKS) if a]
    rows = []
    for attack in attacks:
        mq = start_minimq(o.watermark)
        try:
            log(f"minimq: {attack}")
            rows.append(run_one(mq, attack, o.scale))
        finally:
            mq.stop()
        print(json.dumps(rows[-1]), flush=True)
        rb = None if o.no_rabbitmq else rabbitmq_target(o.rabbitmq)
        if rb is not None:
            log(f"rabbitmq: {attack}")
            rows.append(run_one(rb, attack, o.scale))
            print(json.dumps(rows[-1]), flush=True)
    print(fmt(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
