"""Run the whole photo site on one machine and check that every task was done.

    python examples/photo-site/run_demo.py             # starts its own minimq broker
    python examples/photo-site/run_demo.py --url amqp://guest:guest@rabbit:5672/photos

It starts ``python server.py --port 0`` (unless ``--url`` names a broker), the Python
workers under the runner (``minimq worker workers:app``), the 2011 py-amqp view counter and
a Celery worker; then runs both PHP publishers, kills one indexing worker with SIGKILL while
it is handling a photo, and waits until every mail, index entry, thumbnail, antispam
verdict, cache invalidation (in every process) and view was handled. Exit 0 when all were,
1 (saying what is missing) when not.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, TypeVar

HERE = Path(os.path.abspath(__file__)).parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import minimq.client.sync  # noqa: E402
from minimq.worker.status import read_statuses  # noqa: E402

MAILS, EXT_MAILS, PHOTOS, VIEWS, INVALIDATIONS = 40, 20, 60, 100, 5
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class Demo:
    def __init__(self, url: str | None, keep: bool) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="photo-site-"))
        self.keep = keep
        self.results = self.work / "results"
        self.status_dir = self.work / "status"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.url = url or ""
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PHOTO_SITE_RESULTS": str(self.results),
            "MINIMQ_WORKER_STATUS_DIR": str(self.status_dir),
            "INDEX_SECONDS": "0.05",
            "DIGEST_EVERY": "1",
            "MAILS": str(MAILS), "EXT_MAILS": str(EXT_MAILS), "PHOTOS": str(PHOTOS),
            "VIEWS": str(VIEWS), "INVALIDATIONS": str(INVALIDATIONS),
        })

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, cwd=HERE, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.work / f"{name}.log").read_text()
        except FileNotFoundError:
            return ""

    def start_broker(self) -> None:
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", "0",
                                 "--no-management", "--data-dir", str(self.work / "data")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        self.procs.append(("broker", proc))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on amqp://([\w.\-]+):(\d+)", line)
        if not match:
            raise SystemExit(f"FAILED: the broker did not start: {line!r}")
        self.url = f"amqp://guest:guest@{match.group(1)}:{match.group(2)}/"
        print(f"broker: python server.py --port 0 -> {self.url}")

    def stop_all(self) -> None:
        """Workers first (they finish what they hold), the broker last."""
        workers = [(n, p) for n, p in self.procs if n != "broker"]
        broker = [(n, p) for n, p in self.procs if n == "broker"]
        for group in (workers, broker):
            for name, proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name, proc in group:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop within 30 s; killing it")
                    proc.kill()
                    proc.wait()
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- what the workers did -------------------------------------------------------------

    def done(self, kind: str) -> list[list[str]]:
        try:
            with open(self.results / f"{kind}.log") as f:
                return [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def status(self) -> dict[str, Any] | None:
        docs = read_statuses(glob.glob(str(self.status_dir / "photo-site.*.json")))
        return docs[0] if docs else None

    def runner_ready(self) -> bool:
        doc = self.status()
        return bool(doc) and all(
            c["running"] == c["expected"] and all(p["ready"] for p in c["processes"])
            for c in doc["consumers"].values())

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        if not self.url:
            self.start_broker()
        self.env["MINIMQ_URL"] = self.env["AMQP_URL"] = self.url
        self.start("runner", [sys.executable, "-m", "minimq", "worker", "workers:app",
                              "--status-interval", "5", "--restart-backoff", "0.2"])
        self.start("legacy", [sys.executable, "legacy_worker.py"])
        self.start("celery", [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker",
                              "--pool=solo", "--loglevel=WARNING", "--without-heartbeat",
                              "--without-gossip", "--without-mingle", "-n", "thumbs@%h"])
        wait_for("the runner's workers", self.runner_ready)
        wait_for("the legacy view counter", lambda: "ready" in self.log("legacy"))
        wait_for("the Celery worker", self.celery_consuming)
        print("workers: runner (mail, index x2, antispam, cache x2, digest), py-amqp view "
              "counter, Celery thumbnails")

        php = subprocess.Popen(["php", "publish.php"], cwd=HERE, env=self.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = self.kill_an_indexer()
        out, err = php.communicate(timeout=120)
        if php.returncode != 0:
            raise SystemExit(f"FAILED: publish.php exited {php.returncode}:\n{out}\n{err}")
        ext = subprocess.run(["php", "publish_ext.php"], cwd=HERE, env=self.env,
                             capture_output=True, text=True, timeout=120)
        if ext.returncode != 0:
            raise SystemExit(f"FAILED: publish_ext.php exited {ext.returncode}:\n"
                             f"{ext.stdout}\n{ext.stderr}")
        print(f"php: {out.strip().splitlines()[-1]}; {ext.stdout.strip()}")
        verdicts = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        missing = self.wait_all_done(verdicts)
        if missing:
            print("FAILED: not done:\n  " + "\n  ".join(missing))
            print("runner log (end):\n" + self.log("runner")[-3000:])
            return 1
        restarted = re.search(r"restarted index_photo#\d \(pid (\d+)\)", self.log("runner"))
        if not restarted:
            print("FAILED: the killed indexing worker was not restarted")
            return 1
        print(f"killed index worker pid {killed} mid-photo: its photo was redelivered and "
              f"indexed; replaced by pid {restarted.group(1)}")
        print(f"photo site OK: {MAILS + EXT_MAILS} mails + digest, {PHOTOS} photos indexed "
              f"and thumbnailed, {PHOTOS // 2 + 1} edits, {len(verdicts)} antispam verdicts, "
              f"{INVALIDATIONS} invalidations in every cache process, {VIEWS} views")
        return 0

    def celery_consuming(self) -> bool:
        try:
            with minimq.client.sync.connect(self.url) as connection:
                return connection.channel().declare_queue(
                    "thumbnails", passive=True).consumer_count > 0
        except minimq.client.ClientError:
            return False

    def kill_an_indexer(self) -> int:
        """SIGKILL an index_photo worker while it is handling a photo."""
        def busy() -> int | None:
            doc = self.status()
            for p in (doc or {}).get("consumers", {}).get("index_photo", {}).get("processes", []):
                if p["in_flight"] and p["ready"]:
                    return p["pid"]
            return None

        pid = wait_for("an indexing worker handling a photo", busy)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_all_done(self, verdicts: list[dict[str, Any]]) -> list[str]:
        deadline = time.monotonic() + 90
        while True:
            missing = self.missing(verdicts)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)

    def missing(self, verdicts: list[dict[str, Any]]) -> list[str]:
        out = []
        mails = {e[0] for e in self.done("mail")}
        want = {f"php-{i}" for i in range(1, MAILS + 1)} | {f"ext-{i}"
                                                             for i in range(1, EXT_MAILS + 1)}
        if want - mails:
            out.append(f"mails: {sorted(want - mails)[:10]}")
        if not any(m.startswith("digest-") for m in mails):
            out.append("the digest mail (periodic job)")
        indexed = {(e[0], e[1]) for e in self.done("index")}
        want_index = {(str(p), "uploaded") for p in range(1, PHOTOS + 1)} | {
            (str(p), "edited") for p in [1, *range(2, PHOTOS + 1, 2)]}
        if want_index - indexed:
            out.append(f"index: {sorted(want_index - indexed)[:10]}")
        thumbs = {e[0] for e in self.done("thumbnail")}
        if {str(p) for p in range(1, PHOTOS + 1)} - thumbs:
            out.append(f"thumbnails: {sorted({str(p) for p in range(1, PHOTOS + 1)} - thumbs)[:10]}")
        expected = {1: False, 2: True, 3: False, 4: True}
        got = {v["comment"]: v.get("spam") for v in verdicts if "spam" in v}
        if got != expected:
            out.append(f"antispam verdicts: {got} != {expected}")
        errors = [v for v in verdicts if "error" in v]
        if len(errors) != 1 or errors[0]["comment"] != 5 or "no text" not in errors[0]["error"]:
            out.append(f"antispam error reply for comment 5: {errors}")
        seen: dict[str, set[str]] = {}
        for key, pid in self.done("cache"):
            seen.setdefault(pid, set()).add(key)
        full = [pid for pid, keys in seen.items()
                if keys >= {f"user:{u}" for u in range(1, INVALIDATIONS + 1)}]
        if len(full) < 2:
            out.append(f"cache invalidations in both cache processes: {seen}")
        views = Counter(e[0] for e in self.done("view"))
        if sum(views.values()) < VIEWS:
            out.append(f"views: {sum(views.values())} of {VIEWS}")
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this broker instead of starting python server.py")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, results)")
    args = parser.parse_args()
    demo = Demo(args.url, args.keep)
    try:
        return demo.run()
    finally:
        demo.stop_all()
        if args.keep:
            print(f"logs and results in {demo.work}")


if __name__ == "__main__":
    sys.exit(main())
