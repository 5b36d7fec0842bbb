#!/usr/bin/env python3
"""run.py - minimq vs RabbitMQ, same load generators, same session.

    python benchmarks/run.py [--n 50000] [--size 100] [--rounds 2] [--memory-count 1000000]
                             [--rabbit-url amqp://guest:guest@127.0.0.1:5672/] [--no-node]
                             [--base OTHER_CHECKOUT]

With --base, the second broker is not RabbitMQ but minimq from another source tree (e.g. a
`git worktree` of an older commit), measured the same way: current/base ratios, same session.

1. starts a minimq broker (`server.py --port 0`) as a subprocess;
2. runs benchmarks/loadgen.py against it and, if port 5672 answers, against RabbitMQ,
   alternating the broker order each round (the machine is shared and noisy: the ratios are
   only meaningful because both brokers are measured back to back); the median of the
   rounds is reported;
3. runs the memory workload on a *fresh* minimq broker (so the RSS delta is not hidden by
   memory freed by earlier workloads);
4. if `node` and amqplib are available (NODE_PATH, or /tmp/nodebench/node_modules), runs the
   independent Node generator /work/shared/tools/node_bench.js (e2e, rpc) against both;
5. prints a comparison table with minimq/RabbitMQ ratios and the targets, and saves the raw
   JSON lines plus a markdown table under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "loadgen.py")
NODE_BENCH = os.environ.get("NODE_BENCH", "/work/shared/tools/node_bench.js")
DEFAULT_NODE_PATH = "/tmp/nodebench/node_modules"


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class MinimqBroker:
    def __init__(self, repo: str = REPO) -> None:
        # PYTHONPATH names the tree explicitly: an inherited one must not decide which code runs.
        env = dict(os.environ, PYTHONPATH=repo)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(repo, "server.py"), "--port", "0", "--in-memory", "--log-level", "warning"],
            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"amqp://([\d.]+):(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"minimq did not start: {line!r}")
        self.port = int(m.group(2))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def run_json(cmd: list[str], env=None, timeout: float = 900) -> list[dict]:
    log(" ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        log(f"timed out after {timeout}s")
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        p = None
    else:
        out = p.stdout
        if p.returncode not in (0, 1):
            log(f"exit {p.returncode}: {p.stderr[-2000:]}")
    recs = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    for r in recs:
        if "error" in r:
            log(f"  {r.get('test')}: ERROR {r['error']}")
    return recs


def loadgen(url: str, args, tests: str, label: str, broker_pid) -> list[dict]:
    cmd = [sys.executable, LOADGEN, url, "--n", str(args.n), "--size", str(args.size), "--tests", tests,
           "--label", label, "--broker-pid", str(broker_pid), "--no-table",
           "--memory-count", str(args.memory_count), "--topic-bindings", args.topic_bindings]
    return run_json(cmd)


def node_available(args) -> dict | None:
    if args.no_node or not shutil.which("node") or not os.path.exists(NODE_BENCH):
        return None
    node_path = os.environ.get("NODE_PATH") or DEFAULT_NODE_PATH
    if not os.path.isdir(os.path.join(node_path, "amqplib")):
        log(f"amqplib not found in {node_path}: skipping the Node generator "
            "(mkdir -p /tmp/nodebench && cd /tmp/nodebench && npm install amqplib)")
        return None
    env = dict(os.environ)
    env["NODE_PATH"] = node_path
    return env


def node_bench(url: str, args, env, label: str, tests: str = "e2e,rpc") -> list[dict]:
    cmd = ["node", NODE_BENCH, url, "--n", str(args.n), "--size", str(args.size), "--tests", tests,
           "--label", label]
    return [r for r in run_json(cmd, env=env) if r.get("test") != "meta"]


# ------------------------------------------------------------------------ reporting

METRICS = [
    # (test, field, label, higher_is_better)
    ("publish", "rate", "publish msgs/s", True),
    ("confirm", "rate", "publish+confirm msgs/s (window 1000)", True),
    ("consume", "rate", "consume msgs/s (prefetch 1000)", True),
    ("e2e", "rate", "end-to-end msgs/s", True),
    ("rpc", "p50_us", "RPC p50 us", False),
    ("rpc", "p99_us", "RPC p99 us", False),
    ("rpc", "rate", "RPC calls/s (sequential)", True),
    ("fanout", "rate", "fanout x10 deliveries/s", True),
    ("topic_10", "rate", "topic, 10 bindings msgs/s", True),
    ("topic_10000", "rate", "topic, 10k bindings msgs/s", True),
    ("topic", "ratio", "topic slowdown 10 -> 10k bindings", False),
]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def collect(recs: list[dict], test: str, field: str, client: str):
    return [r.get(field) for r in recs if r.get("test") == test and r.get("client") == client and "error" not in r]


def _cpu(r: dict, who: str):
    c = r.get("cpu") or {}
    if who == "client" and "client" not in c and c.get("main") is not None:
        return c["main"] + (c.get("helper") or 0)  # node_bench: main process + forked helper
    return c.get(who)


def cpu_of(recs, test, client, who):
    return med([_cpu(r, who) for r in recs
                if r.get("test") == test and r.get("client") == client and "error" not in r])


def icpu(v):
    return "-" if v is None else f"{v:.0f}"


def fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, float) and nd:
        return f"{v:,.{nd}f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def build_report(mq: list[dict], rb: list[dict], mem: list[dict], nmq: list[dict], nrb: list[dict],
                 args, meta: dict, names: tuple[str, str] = ("minimq", "RabbitMQ")) -> tuple[str, dict]:
    rows = []
    res: dict = {}
    a_name, b_name = names
    hdr = ["workload", "gen", a_name, b_name, f"{a_name}/{b_name}",
           f"cpu% gen/broker/other: {a_name}", b_name, f"per broker-cpu-s: {a_name}", b_name]
    for client, a, b in (("python_loadgen", mq, rb), ("node_amqplib", nmq, nrb)):
        for test, field, label, _hib in METRICS:
            va = med(collect(a, test, field, client))
            vb = med(collect(b, test, field, client))
            if va is None and vb is None:
                continue
            ratio = va / vb if va is not None and vb else None
            res[(client, test, field)] = (va, vb, ratio)
            cells = []
            effs = []
            for recs in (a, b):
                cells.append(f"{icpu(cpu_of(recs, test, client, 'client'))} / "
                             f"{icpu(cpu_of(recs, test, client, 'broker'))} / "
                             f"{icpu(cpu_of(recs, test, client, 'other'))}")
                # throughput per second of broker CPU: robust to CPU stolen by other tenants
                eff = med([r["rate"] / (r["cpu"]["broker"] / 100.0) for r in recs
                           if r.get("test") == test and r.get("client") == client and "error" not in r
                           and (r.get("cpu") or {}).get("broker")])
                effs.append("-" if eff is None or field != "rate" else f"{eff:,.0f}")
            if test == "topic":
                cells = ["", ""]
                effs = ["", ""]
            rows.append([label, "python" if client == "python_loadgen" else "node", fmt(va), fmt(vb),
                         "-" if ratio is None else f"{ratio:.2f}", cells[0], cells[1], effs[0], effs[1]])
    for r in mem:
        if r.get("test") == "memory" and "error" not in r:
            rows.append([f"memory: {r['n']:,} x {r['size']} B queued", "python",
                         f"{r['bytes_per_msg']:.0f} B/msg, RSS {r['rss_after_mb']:.0f} MB", "n/a", "-",
                         f"{icpu((r.get('cpu') or {}).get('client'))} / {icpu((r.get('cpu') or {}).get('broker'))} / "
                         f"{icpu((r.get('cpu') or {}).get('other'))}", "", "", ""])
            res["memory"] = r
    w = [max(len(str(x[i])) for x in [hdr] + rows) for i in range(len(hdr))]
    md = ["| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |",
          "|" + "|".join("-" * (w[i] + 2) for i in range(len(hdr))) + "|"]
    for row in rows:
        md.append("| " + " | ".join(str(x).ljust(w[i]) for i, x in enumerate(row)) + " |")

    if b_name != "RabbitMQ":
        # Two minimq trees: the median of each round's ratio (both measured back to back in
        # that round) is steadier on a shared machine than the ratio of the medians.
        lines = ["", f"Median of per-round {a_name}/{b_name} ratios (> 1: {a_name} higher):"]
        for client, a, b in (("python_loadgen", mq, rb), ("node_amqplib", nmq, nrb)):
            for test, field, label, _hib in METRICS:
                per_round = []
                for rnd in range(args.rounds):
                    va = med([r.get(field) for r in a if r.get("label") == f"minimq-r{rnd}"
                              and r.get("test") == test and r.get("client") == client and "error" not in r])
                    vb = med([r.get(field) for r in b if r.get("label") == f"rabbitmq-r{rnd}"
                              and r.get("test") == test and r.get("client") == client and "error" not in r])
                    if va is not None and vb:
                        per_round.append(va / vb)
                if per_round and test != "topic":
                    lines.append(f"- {label} ({client}): {statistics.median(per_round):.3f} "
                                 f"(rounds: {', '.join(f'{x:.3f}' for x in per_round)})")
        return "\n".join(md + lines), res
    # targets
    t = []

    def verdict(ok):
        return "n/a" if ok is None else ("MET" if ok else "NOT MET")

    e2e = res.get(("python_loadgen", "e2e", "rate"))
    ok = None if not e2e or e2e[2] is None else e2e[2] >= 0.5
    t.append(f"- end-to-end >= 0.5x RabbitMQ (same generator): python loadgen "
             f"{'-' if not e2e or e2e[2] is None else f'{e2e[2]:.2f}x'} -> {verdict(ok)}")
    ne2e = res.get(("node_amqplib", "e2e", "rate"))
    if ne2e and ne2e[2] is not None:
        t.append(f"  (Node amqplib generator: {ne2e[2]:.2f}x -> {verdict(ne2e[2] >= 0.5)})")
    p50 = res.get(("python_loadgen", "rpc", "p50_us"))
    ok = None if not p50 or p50[2] is None else p50[0] <= p50[1]
    t.append(f"- RPC p50 no worse than RabbitMQ: python loadgen "
             f"{'-' if not p50 or p50[0] is None else f'{p50[0]:.0f}'} us vs "
             f"{'-' if not p50 or p50[1] is None else f'{p50[1]:.0f}'} us -> {verdict(ok)}")
    np50 = res.get(("node_amqplib", "rpc", "p50_us"))
    if np50 and np50[2] is not None:
        t.append(f"  (Node amqplib generator: {np50[0]:.0f} us vs {np50[1]:.0f} us -> "
                 f"{verdict(np50[0] <= np50[1])})")
    topic = res.get(("python_loadgen", "topic", "ratio"))
    ok = None if not topic or topic[0] is None else topic[0] <= 2.0
    t.append(f"- topic: 10k bindings within 2x of 10 bindings (minimq): "
             f"{'-' if not topic or topic[0] is None else f'{topic[0]:.2f}x slower'} -> {verdict(ok)}")
    m = res.get("memory")
    ok = None if not m else (m["rss_after_mb"] < 350 and m["queued"] >= m["n"])
    mtxt = "-" if not m else f"{m['rss_after_mb']:.0f} MB ({m['bytes_per_msg']:.0f} B/msg)"
    t.append(f"- {args.memory_count:,} queued {args.size}-byte messages under 350 MB RSS: {mtxt} -> {verdict(ok)}")
    text = "\n".join(md) + "\n\nTargets:\n" + "\n".join(t)
    return text, res


def main() -> int:
    p = argparse.ArgumentParser(description="minimq vs RabbitMQ benchmark driver")
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per broker (median reported)")
    p.add_argument("--tests", default="publish,confirm,consume,e2e,rpc,fanout,topic")
    p.add_argument("--topic-bindings", default="10,10000")
    p.add_argument("--memory-count", type=int, default=1_000_000, help="0 skips the memory workload")
    p.add_argument("--rabbit-url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--no-rabbit", action="store_true")
    p.add_argument("--no-node", action="store_true")
    p.add_argument("--base", help="compare with minimq from this source tree instead of RabbitMQ")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args()

    stamp = time.strftime("%Y-%m-%d_%H%M%S")
    os.makedirs(args.out_dir, exist_ok=True)
    base = None
    other_pid = "auto"
    if args.base:
        base = MinimqBroker(os.path.abspath(args.base))
        log(f"base minimq ({args.base}) pid {base.pid} on port {base.port}")
        args.rabbit_url, other_pid, rabbit = base.url, base.pid, True
    else:
        rabbit = not args.no_rabbit and reachable(args.rabbit_url)
        if not rabbit and not args.no_rabbit:
            log(f"RabbitMQ not reachable at {args.rabbit_url}: minimq only")
    node_env = node_available(args)
    mq, rb, nmq, nrb, mem = [], [], [], [], []
    broker = MinimqBroker()
    log(f"minimq pid {broker.pid} on port {broker.port}")
    try:
        # Interleave per workload (minimq, RabbitMQ back to back, order alternating) so that
        # slow drifts in the machine's background load hit both brokers alike.
        tests = [t for t in args.tests.split(",") if t]
        k = 0
        for rnd in range(args.rounds):
            for test in tests:
                order = ["minimq", "rabbitmq"] if k % 2 == 0 else ["rabbitmq", "minimq"]
                k += 1
                for who in order:
                    if who == "minimq":
                        mq += loadgen(broker.url, args, test, f"minimq-r{rnd}", broker.pid)
                    elif rabbit:
                        rb += loadgen(args.rabbit_url, args, test, f"rabbitmq-r{rnd}", other_pid)
            if node_env is not None:
                for test in ("e2e", "rpc"):
                    order = ["minimq", "rabbitmq"] if k % 2 == 0 else ["rabbitmq", "minimq"]
                    k += 1
                    for who in order:
                        if who == "minimq":
                            nmq += node_bench(broker.url, args, node_env, f"minimq-r{rnd}", test)
                        elif rabbit:
                            nrb += node_bench(args.rabbit_url, args, node_env, f"rabbitmq-r{rnd}", test)
    finally:
        broker.stop()
        if base is not None:
            base.stop()
    if args.memory_count:
        fresh = MinimqBroker()
        log(f"fresh minimq pid {fresh.pid} for the memory workload")
        try:
            mem = loadgen(fresh.url, args, "memory", "minimq-memory", fresh.pid)
        finally:
            fresh.stop()

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "n": args.n, "size": args.size,
            "rounds": args.rounds, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    names = ("current", "base") if args.base else ("minimq", "RabbitMQ")
    if args.base:
        meta["base"] = args.base
    text, _res = build_report(mq, rb, mem, nmq, nrb, args, meta, names)
    header = (f"{names[0]} vs {names[1]} - {meta['date']} - n={args.n} size={args.size} "
              f"rounds={args.rounds} (median), {meta['cpus']} CPUs\n"
              "cpu columns: % of one core during the measured window; gen = load generator (incl. its "
              "helper connections / node's forked helper), other = rest of the machine (max 200 = 2 cores)\n"
              "per broker-cpu-s = rate / broker CPU share: throughput per second of broker CPU\n")
    print(header)
    print(text)
    raw = os.path.join(args.out_dir, f"{stamp}.jsonl")
    with open(raw, "w") as f:
        f.write(json.dumps({"test": "run-meta", **meta}) + "\n")
        for r in mq + rb + nmq + nrb + mem:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(args.out_dir, f"{stamp}.md"), "w") as f:
        f.write(header + "\n" + text + "\n")
    log(f"raw results: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
