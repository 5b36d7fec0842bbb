#!/usr/bin/env python3
"""profile_broker.py - cProfile the minimq broker under a loadgen workload (default: e2e).

    python benchmarks/profile_broker.py [--tests e2e] [--n 100000] [--out /tmp/minimq.prof] [--top 30]

Starts `python -m cProfile -o OUT -m minimq --port 0`, runs benchmarks/loadgen.py against it,
stops the broker with SIGINT (the CLI shuts down cleanly, so cProfile writes OUT), and prints
the top functions by tottime and by cumtime.  cProfile roughly doubles the cost of every Python
function call, so read the numbers as *shares* of broker time, not absolute speeds; for a
sampling view without that bias use py-spy if available:
    py-spy record -o /tmp/minimq.svg --pid <broker pid>   (or: py-spy top --pid <pid>)
"""
from __future__ import annotations

import argparse
import io
import os
import pstats
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tests", default="e2e")
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--out", default="/tmp/minimq.prof")
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    broker = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", a.out, "-m", "minimq", "--port", "0", "--in-memory", "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = broker.stdout.readline()
        m = re.search(r":(\d+)\s*$", line.strip())
        if not m:
            print(f"broker did not start: {line!r}", file=sys.stderr)
            return 1
        url = f"amqp://guest:guest@127.0.0.1:{m.group(1)}/"
        subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), url, "--n", str(a.n),
                        "--size", str(a.size), "--tests", a.tests, "--broker-pid", str(broker.pid)],
                       check=False)
    finally:
        broker.send_signal(signal.SIGINT)
        broker.wait(30)
    s = pstats.Stats(a.out)
    for key in ("tottime", "cumtime"):
        buf = io.StringIO()
        pstats.Stats(a.out, stream=buf).strip_dirs().sort_stats(key).print_stats(a.top)
        text = buf.getvalue()
        print(f"\n===== top {a.top} by {key} =====")
        print(text[text.find("   ncalls"):])
    print(f"total profiled time: {s.total_tt:.2f}s  (profile saved to {a.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
