#!/usr/bin/env python3
"""How fast a broker is ready: minimq embedded, minimq as a process, and RabbitMQ.

    python benchmarks/startup.py                 # minimq only
    python benchmarks/startup.py --rabbitmq      # also start a throwaway RabbitMQ node

"Ready" means a client that sends the AMQP protocol header gets connection.start back.

- embedded: `minimq.testing.Broker().start()`, a client handshake start, `stop()`;
  the median of --runs, after one warm-up (imports are not counted: a test suite pays them
  once per process).
- process: `python server.py --port 0` from spawn to connection.start (interpreter start
  and imports included), in memory and with a new data directory, median of --process-runs.
- RabbitMQ (with --rabbitmq and rabbitmq-server installed): a second, throwaway node
  (its own node name, ports and data directory under a temp dir, no plugins) from spawn to
  connection.start, then stopped. A running RabbitMQ on 5672 is left alone.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = b"AMQP\x00\x00\x09\x01"


def amqp_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once the broker answers the protocol header with a method frame."""
    try:
        with socket.create_connection((host, port), timeout) as s:
            s.settimeout(timeout)
            s.sendall(HEADER)
            return s.recv(1)[:1] == b"\x01"
    except OSError:
        return False


def wait_ready(host: str, port: int, deadline: float, proc: subprocess.Popen | None = None) -> float:
    """Poll until ready; returns the time it became ready. Polls with connect attempts."""
    while time.perf_counter() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the broker exited with {proc.returncode}")
        if amqp_ready(host, port, 0.5):
            return time.perf_counter()
        # connection refused comes back at once; pace the attempts a little
        time.sleep(0.002)
    raise TimeoutError(f"{host}:{port} not ready")


def bench_embedded(runs: int) -> list[float]:
    from minimq.testing import Broker

    b = Broker().start()  # warm up: imports, first loop
    b.stop()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        b = Broker().start()
        assert amqp_ready("127.0.0.1", b.port)
        b.stop()
        times.append(time.perf_counter() - t0)
    return times


def bench_interpreter(runs: int) -> tuple[list[float], list[float]]:
    """Baseline: `python -c pass` spawn to exit (wall, CPU) on this machine, now."""
    times, cpu = [], []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu_since(before))
    return times, cpu


def _cpu_since(before) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_process(runs: int, durable: bool) -> tuple[list[float], list[float]]:
    """(wall time spawn->ready, CPU time of the whole process including its shutdown).

    As a user runs it: with bytecode caches (a first, unmeasured run writes them, even where
    the environment sets PYTHONDONTWRITEBYTECODE).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times, cpu = [], []
    for i in range(runs + 1):
        data = tempfile.mkdtemp(prefix="minimq-startup-")  # a fresh data dir, as on a first start
        store_args = ["--data-dir", data] if durable else ["--in-memory"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", "0", "--log-level", "warning", *store_args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            line = proc.stdout.readline()  # the banner, printed once listening
            port = int(line.rsplit(":", 1)[1])
            assert amqp_ready("127.0.0.1", port)
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(data, ignore_errors=True)
        if i:  # run 0 only warms the bytecode caches
            times.append(elapsed)
            cpu.append(_cpu_since(before))
    return times, cpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_rabbitmq(runs: int) -> list[float] | str:
    server = shutil.which("rabbitmq-server") or "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(server):
        return "rabbitmq-server not installed"
    real = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if real.exists():
        server = str(real)  # skip the wrapper that switches user
    times = []
    for i in range(runs):
        base = Path(tempfile.mkdtemp(prefix="minimq-rmq-bench-"))
        (base / "enabled_plugins").write_text("[].\n")
        port, dist = free_port(), free_port()
        env = dict(
            os.environ,
            RABBITMQ_NODENAME=f"minimqbench{os.getpid()}x{i}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(base / "none"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "none-advanced.config"),
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen([server], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            ready = wait_ready("127.0.0.1", port, t0 + 120, proc)
            times.append(ready - t0)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            shutil.rmtree(base, ignore_errors=True)
    return times


def describe(name: str, times: list[float] | str) -> str:
    if isinstance(times, str):
        return f"{name:<42} skipped: {times}"
    ms = sorted(t * 1000 for t in times)
    return (f"{name:<42} median {statistics.median(ms):8.1f} ms   "
            f"min {ms[0]:8.1f}   max {ms[-1]:8.1f}   (n={len(ms)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=51, help="embedded start/stop runs")
    p.add_argument("--process-runs", type=int, default=9, help="`python server.py` runs")
    p.add_argument("--rabbitmq", action="store_true", help="also time a throwaway RabbitMQ node")
    p.add_argument("--rabbitmq-runs", type=int, default=3)
    args = p.parse_args()
    print(describe("minimq.testing.Broker() start+ready+stop", bench_embedded(args.runs)), flush=True)
    wall, cpu = bench_interpreter(args.process_runs)
    print(describe("baseline: python -c pass, spawn to exit", wall), flush=True)
    print(describe("  (its CPU time, user+sys)", cpu), flush=True)
    for durable, label in ((False, "--in-memory"), (True, "--data-dir (new)")):
        wall, cpu = bench_process(args.process_runs, durable)
        print(describe(f"python server.py {label}: spawn to ready", wall), flush=True)
        print(describe("  (its CPU time, start to exit, user+sys)", cpu), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    if args.rabbitmq:
        print(describe("rabbitmq-server (new node): spawn to ready", bench_rabbitmq(args.rabbitmq_runs)), flush=True)


if __name__ == "__main__":
    main()
