#!/usr/bin/env python3
"""management.py - what the management layer costs the broker.

    python benchmarks/management.py counters [--baseline REF] [--candidate REF] [--rounds 3]
    python benchmarks/management.py stall [--queues 10000] [--seconds 20]

counters: the message counters the core keeps for the API's rates are on the hot path. This
  checks out two commits (default: the one that added the counters and its parent) into
  temporary directories, starts a broker from each (`server.py --port 0 --in-memory`), and
  runs benchmarks/loadgen.py (publish, consume, e2e) against them in alternating order for
  --rounds rounds; it prints the median rate of each and the candidate/baseline ratio.

stall: a broker with --queues queues; an AMQP client measures round trips (a passive
  queue.declare, so every probe crosses the broker's event loop) while curl fetches
  /api/queues (every queue, full JSON) over and over; prints the round-trip percentiles while
  idle and while listing, and how long a listing takes. A listing that blocked the loop would
  show up as a round trip as long as the listing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
LOADGEN = os.path.join(HERE, "loadgen.py")


def log(msg: str) -> None:
    print(f"[management {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Broker:
    """`server.py --port 0` from a source tree; knows its AMQP and management ports."""

    def __init__(self, root: str, *extra: str, http: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": root}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(root, "server.py"), "--port", "0", "--in-memory", "--log-level", "info", *extra],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"amqp://[\d.]+:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"broker did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.http_port = None
        if http:
            for _ in range(50):
                err = self.proc.stderr.readline()
                hm = re.search(r"management API.* on http://[\d.]+:(\d+)/", err)
                if hm:
                    self.http_port = int(hm.group(1))
                    break

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def checkout(ref: str) -> str:
    path = tempfile.mkdtemp(prefix="minimq-bench-")
    archive = subprocess.run(["git", "-C", REPO, "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def counters(args: argparse.Namespace) -> None:
    candidate = args.candidate or subprocess.run(
        ["git", "-C", REPO, "log", "--format=%h", "-1", "--grep", "message counters in the core"],
        capture_output=True, text=True).stdout.strip()
    baseline = args.baseline or f"{candidate}^"
    trees = {"baseline": checkout(baseline), "candidate": checkout(candidate)}
    log(f"baseline {baseline}, candidate {candidate}")
    rates: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    try:
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for label in order:
                broker = Broker(trees[label], http=False)
                try:
                    out = subprocess.run(
                        [sys.executable, LOADGEN, broker.url, "--n", str(args.n), "--tests", args.tests,
                         "--broker-pid", str(broker.proc.pid), "--no-table"],
                        capture_output=True, text=True, cwd=REPO, timeout=900,
                    ).stdout
                finally:
                    broker.stop()
                for line in out.splitlines():
                    if line.startswith("{"):
                        rec = json.loads(line)
                        if "rate" in rec:
                            rates[label].setdefault(rec["test"], []).append(rec["rate"])
                log(f"round {rnd + 1} {label}: " + ", ".join(
                    f"{t}={v[-1]:.0f}/s" for t, v in rates[label].items()))
    finally:
        for path in trees.values():
            shutil.rmtree(path, ignore_errors=True)
    print(f"\n| workload | baseline {baseline} msg/s | candidate {candidate} msg/s | ratio |")
    print("| --- | --- | --- | --- |")
    for test in rates["baseline"]:
        b = statistics.median(rates["baseline"][test])
        c = statistics.median(rates["candidate"].get(test, [0]))
        print(f"| {test} | {b:.0f} | {c:.0f} | {c / b:.3f} |")


async def _probe(url: str, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    import minimq.client

    async with minimq.client.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue("bench.probe")
        while not stop.is_set():
            t0 = time.perf_counter()
            await channel.declare_queue("bench.probe", passive=True)
            samples.append((time.monotonic(), time.perf_counter() - t0))


async def _fill(url: str, n: int) -> None:
    import minimq.client

    async with minimq.client.connect(url) as connection:
        channel = await connection.channel()
        for i in range(n):
            await channel.declare_queue(f"bench.q{i:05d}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def stall(args: argparse.Namespace) -> None:
    broker = Broker(REPO)
    try:
        asyncio.run(_fill(broker.url, args.queues))
        log(f"{args.queues} queues declared; management on port {broker.http_port}")
        samples: list[tuple[float, float]] = []
        listings: list[tuple[float, float]] = []

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(_probe(broker.url, stop, samples))
            await asyncio.sleep(args.seconds / 4)  # idle baseline
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                t0 = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "-u", "guest:guest",
                    f"http://127.0.0.1:{broker.http_port}/api/queues")
                await proc.wait()
                listings.append((t0, time.monotonic()))
            stop.set()
            await task

        asyncio.run(main())
    finally:
        broker.stop()

    def during(t: float) -> bool:
        return any(a <= t <= b for a, b in listings)

    busy = [rtt * 1000 for t, rtt in samples if during(t)]
    idle = [rtt * 1000 for t, rtt in samples if not during(t) and t < listings[0][0]]
    took = [b - a for a, b in listings]
    print(f"\n{args.queues} queues, {len(listings)} full listings of /api/queues, "
          f"median {statistics.median(took) * 1000:.0f} ms each")
    print("| AMQP round trip (ms) | probes | p50 | p99 | max |")
    print("| --- | --- | --- | --- | --- |")
    for name, vals in (("idle", idle), ("while listing", busy)):
        print(f"| {name} | {len(vals)} | {pct(vals, 0.5):.2f} | {pct(vals, 0.99):.2f} | {max(vals or [0]):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("counters")
    c.add_argument("--baseline")
    c.add_argument("--candidate")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--n", type=int, default=50000)
    c.add_argument("--tests", default="publish,consume,e2e")
    s = sub.add_parser("stall")
    s.add_argument("--queues", type=int, default=10000)
    s.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    counters(args) if args.mode == "counters" else stall(args)


if __name__ == "__main__":
    main()
