"""The broker core's hot path in process, no sockets: A/B between two source trees.

    python benchmarks/core_ab.py --base /path/to/other/checkout [--n 100000] [--rounds 7]

Each round runs every workload in a fresh subprocess per tree (PYTHONPATH = that tree),
alternating which tree goes first, and measures the process CPU time the core spends per
message (`time.process_time`, so a machine loaded by others disturbs it far less than a
wall-clock rate). Reported: the best round of each tree and the ratio new/base (> 1 means
the current tree is faster). The frames are encoded once, up front; each `feed` gets 500
publishes, as one socket read would carry them.

Workloads: publish (default exchange, one queue, nobody consuming), fanout (3 queues),
deliver (a no-ack consumer on another connection: parse, route, enqueue, write deliveries),
confirm (publisher confirms).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("publish", "fanout", "deliver", "confirm")
BATCH = 500


def _worker(workload: str, n: int) -> float:
    """Messages per CPU second for one workload in this process's minimq."""
    from minimq.broker import Broker
    from minimq.codec import spec
    from minimq.codec.frames import PROTOCOL_HEADER, encode_content_frames, encode_method_frame
    from minimq.codec.properties import BasicProperties, encode_content_header

    broker = Broker(clock=time.time)

    def session():
        s = broker.new_session("127.0.0.1:1")
        s.feed(PROTOCOL_HEADER)
        s.feed(encode_method_frame(0, spec.ConnectionStartOk({}, "PLAIN", b"\0guest\0guest", "en_US")))
        s.feed(
            encode_method_frame(0, spec.ConnectionTuneOk(2047, 131072, 0))
            + encode_method_frame(0, spec.ConnectionOpen("/"))
            + encode_method_frame(1, spec.ChannelOpen())
        )
        s.out.clear()
        return s

    pub = session()
    method = lambda m: pub.feed(encode_method_frame(1, m))  # noqa: E731
    exchange, key = "", "q"
    method(spec.QueueDeclare(queue="q"))
    if workload == "fanout":
        exchange, key = "fan", ""
        method(spec.ExchangeDeclare(exchange="fan", type="fanout"))
        for name in ("f1", "f2", "f3"):
            method(spec.QueueDeclare(queue=name))
            method(spec.QueueBind(queue=name, exchange="fan"))
    if workload == "confirm":
        method(spec.ConfirmSelect())
    sub = None
    if workload == "deliver":
        sub = session()
        sub.feed(encode_method_frame(1, spec.BasicConsume(queue="q", consumer_tag="c", no_ack=True)))
    pub.out.clear()
    header = encode_content_header(100, BasicProperties())
    one = encode_method_frame(1, spec.BasicPublish(0, exchange, key, False, False)) + b"".join(
        encode_content_frames(1, header, b"x" * 100, 131072)
    )
    chunk = one * BATCH
    vhost = broker.vhosts["/"]
    queues = [q for q in vhost.queues.values()]
    cpu = 0.0
    done = 0
    while done < n:
        t = time.process_time()
        for _ in range(10):
            pub.feed(chunk)
        cpu += time.process_time() - t
        done += 10 * BATCH
        pub.out.clear()
        if sub is not None:
            sub.out.clear()
        for q in queues:
            q.purge()
    return done / cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=False, help="the other source tree (the baseline)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.worker:
        print(json.dumps({"rate": _worker(o.worker, o.n)}))
        return 0
    here = str(Path(__file__).resolve().parent.parent)
    trees = {"current": here}
    if o.base:
        trees = {"base": str(Path(o.base).resolve()), "current": here}
    best: dict[str, dict[str, float]] = {label: {} for label in trees}
    for r in range(o.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for workload in o.workloads.split(","):
            for label in order:
                env = dict(os.environ, PYTHONPATH=trees[label])
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", workload, "--n", str(o.n)],
                    env=env, capture_output=True, text=True, check=True,
                )
                rate = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
                best[label][workload] = max(best[label].get(workload, 0.0), rate)
        print(f"round {r + 1}/{o.rounds}: " + "; ".join(
            f"{label} " + ", ".join(f"{w} {v:,.0f}" for w, v in best[label].items()) for label in trees
        ), file=sys.stderr, flush=True)
    print("| workload | " + " | ".join(f"{label} msgs/CPU-s" for label in trees) + (" | current/base |" if o.base else " |"))
    print("|---|" + "---:|" * (len(trees) + (1 if o.base else 0)))
    for workload in o.workloads.split(","):
        cells = [f"{best[label][workload]:,.0f}" for label in trees]
        if o.base:
            cells.append(f"{best['current'][workload] / best['base'][workload]:.3f}")
        print(f"| {workload} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
