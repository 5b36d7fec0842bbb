#!/usr/bin/env python3
"""durability.py - restart time with many stored messages; persistent confirmed publishing vs RabbitMQ.

    python benchmarks/durability.py [--restart 100000,1000000] [--rabbit amqp://guest:guest@127.0.0.1:5672/]
                                    [--n 20000] [--reps 3] [--skip-restart] [--skip-publish]

1. Restart time. A data dir is filled with N stored 100-byte persistent messages in one durable
   queue by writing the store directly in-process (DurableStore.message_published, write() and
   roll() as the server does; much faster than publishing over AMQP, and byte-for-byte what the
   broker would have logged). Then `python -m minimq --port 0 --data-dir DIR` is started and
   timed until its "listening" banner (the whole process: interpreter start, recovery, restore),
   and the broker's own "recovered ... in X.XXs" log line is read. The broker's VmHWM (peak RSS)
   is reported too. Each size is measured twice (the second start also reads back what the first
   wrote: meta.log rewritten, the same segments).

2. Persistent confirmed publishing. The same generator (benchmarks/loadgen.py: pipelined,
   confirm window 256, 100-byte bodies, delivery_mode 2, one durable queue) runs against a fresh
   minimq (on a temp data dir, default 64 MB segments) and RabbitMQ, alternating, --reps times;
   with 1 publisher and with 4 concurrent publishers (one connection and queue each). The median
   rate of each is reported, and minimq / RabbitMQ.

Prints a JSON line per measurement and a summary table (markdown) at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
from minimq.codec import BasicProperties, encode_content_header, spec  # noqa: E402
from minimq.store import DurableStore  # noqa: E402

RECOVERED_RE = re.compile(r"recovered (\d+) queues, (\d+) exchanges, (\d+) messages in (\d+\.\d+)s")


class _Msg:
    __slots__ = ("exchange", "routing_key", "header", "body")

    def __init__(self, exchange: str, routing_key: str, header: bytes, body: bytes) -> None:
        self.exchange, self.routing_key, self.header, self.body = exchange, routing_key, header, body


class _Queue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.auto_delete = False
        self.arguments: dict = {}


def fill_store(path: str, n: int, size: int = 100) -> float:
    """Write n persistent messages for durable queue 'bench' straight into a data dir."""
    t0 = time.perf_counter()
    store = DurableStore(path)
    store.recover()
    store.queue_declared("/", _Queue("bench"))
    header = encode_content_header(size, BasicProperties(delivery_mode=2))
    body = b"x" * size
    msg = _Msg("", "bench", header, body)
    for i in range(n):
        store.message_published("/", ["bench"], msg)
        if i % 10000 == 9999:
            store.write()
            if store.needs_roll:
                store.roll()
    store.write()
    store.sync()
    store.close()
    return time.perf_counter() - t0


def start_broker(data_dir: str, log_path: str, timeout: float = 600.0):
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "minimq", "--port", "0", "--log-level", "info", "--data-dir", data_dir],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
        )
    line = proc.stdout.readline().decode()
    took = time.perf_counter() - t0
    m = re.search(r":(\d+)\s*$", line.strip())
    if not m:
        proc.kill()
        raise RuntimeError(f"broker did not start: {line!r}; log: {open(log_path).read()}")
    return proc, int(m.group(1)), took


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def queue_count(url: str, queue: str) -> int:
    conn = await loadgen.Connection.connect(url)
    ch = await conn.channel()
    ok = await ch.rpc(spec.QueueDeclare(0, queue, True, False, False, False, False, None))
    await conn.close()
    return ok.message_count


def bench_restart(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        d = tempfile.mkdtemp(prefix=f"minimq-restart-{n}-")
        try:
            fill_secs = fill_store(os.path.join(d, "data"), n)
            disk = sum(os.path.getsize(os.path.join(d, "data", f)) for f in os.listdir(os.path.join(d, "data")))
            for attempt in (1, 2):
                log_path = os.path.join(d, f"broker-{attempt}.log")
                proc, port, took = start_broker(os.path.join(d, "data"), log_path)
                hwm = vm_hwm_kb(proc.pid)
                count = asyncio.run(queue_count(f"amqp://guest:guest@127.0.0.1:{port}/", "bench"))
                stop(proc)
                m = RECOVERED_RE.search(open(log_path).read())
                row = {
                    "bench": "restart", "messages": n, "attempt": attempt, "fill_secs": round(fill_secs, 2),
                    "disk_mb": round(disk / 1e6, 1), "start_to_listening_s": round(took, 2),
                    "recovery_logged_s": float(m.group(4)) if m else None, "queue_count": count,
                    "broker_peak_rss_mb": round(hwm / 1024, 1),
                }
                assert count == n, row
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return rows


async def confirmed_rate(url: str, n: int, publishers: int, window: int, size: int = 100) -> float:
    conns = [await loadgen.Connection.connect(url) for _ in range(publishers)]
    chans, queues = [], []
    for c in conns:
        ch = await c.channel()
        q = f"bench.durable.{loadgen.rid()}"
        await ch.rpc(spec.QueueDeclare(0, q, False, True, False, False, False, None))
        await ch.rpc(spec.ConfirmSelect(False))
        chans.append(ch)
        queues.append(q)
    props = BasicProperties(delivery_mode=2)
    per = n // publishers
    frames = [loadgen.message_frames(c, ch, "", q, b"x" * size, props) for c, ch, q in zip(conns, chans, queues)]
    t0 = time.perf_counter()
    await asyncio.gather(*(loadgen.publish_confirmed(c, ch, f, per, window, 300)
                           for c, ch, f in zip(conns, chans, frames)))
    secs = time.perf_counter() - t0
    for c, q in zip(conns, queues):
        await loadgen.cleanup(c, queues=[q])
        await c.close()
    return per * publishers / secs


def bench_publish(rabbit: str, n: int, reps: int, window: int) -> list[dict]:
    rows = []
    d = tempfile.mkdtemp(prefix="minimq-publish-")
    proc, port, _ = start_broker(os.path.join(d, "data"), os.path.join(d, "broker.log"))
    minimq_url = f"amqp://guest:guest@127.0.0.1:{port}/"
    try:
        for publishers in (1, 4):
            for rep in range(reps):
                for name, url in (("minimq", minimq_url), ("rabbitmq", rabbit)):
                    rate = asyncio.run(confirmed_rate(url, n, publishers, window))
                    row = {"bench": "persistent-confirm", "broker": name, "publishers": publishers, "rep": rep,
                           "n": n, "window": window, "size": 100, "msgs_per_s": round(rate)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        stop(proc)
        shutil.rmtree(d, ignore_errors=True)
    return rows


def summary(restart_rows: list[dict], publish_rows: list[dict]) -> str:
    out = []
    if restart_rows:
        out.append("| stored messages | on disk | start -> listening | recovery (logged) | broker peak RSS | attempt |")
        out.append("|---:|---:|---:|---:|---:|---:|")
        for r in restart_rows:
            out.append(f"| {r['messages']:,} | {r['disk_mb']} MB | {r['start_to_listening_s']:.2f} s | "
                       f"{r['recovery_logged_s']:.2f} s | {r['broker_peak_rss_mb']} MB | {r['attempt']} |")
    if publish_rows:
        out.append("")
        out.append("| publishers | minimq msg/s (median) | RabbitMQ msg/s (median) | minimq / RabbitMQ |")
        out.append("|---:|---:|---:|---:|")
        for p in sorted({r["publishers"] for r in publish_rows}):
            mq = statistics.median(r["msgs_per_s"] for r in publish_rows if r["publishers"] == p and r["broker"] == "minimq")
            rb = statistics.median(r["msgs_per_s"] for r in publish_rows if r["publishers"] == p and r["broker"] == "rabbitmq")
            out.append(f"| {p} | {mq:,.0f} | {rb:,.0f} | {mq / rb:.2f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restart", default="100000,1000000", help="stored-message counts for the restart test")
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--n", type=int, default=20000, help="messages per confirmed-publish run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--skip-restart", action="store_true")
    ap.add_argument("--skip-publish", action="store_true")
    o = ap.parse_args(argv)
    restart_rows = [] if o.skip_restart else bench_restart([int(x) for x in o.restart.split(",") if x])
    publish_rows = [] if o.skip_publish else bench_publish(o.rabbit, o.n, o.reps, o.window)
    print()
    print(summary(restart_rows, publish_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
