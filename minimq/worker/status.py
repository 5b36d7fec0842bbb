"""``minimq worker status``: what a running runner is doing, from its status file.

Each runner's supervisor keeps a JSON document (`Supervisor.status`) in a status file, by
default ``<status dir>/<app name>.<pid>.json``, rewritten atomically (write, then rename)
within half a second of any change and removed when the runner exits. A file is chosen over
a socket because it needs nothing from the runner to be read (a wedged runner still shows
its last state, with its age) and ``cat`` works on it. The status dir is
``$MINIMQ_WORKER_STATUS_DIR``, else ``minimq-worker-<uid>`` in the temp dir.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["status_dir", "default_status_file", "write_status", "read_statuses", "format_status",
           "main", "safe_url"]


def status_dir() -> str:
    return os.environ.get("MINIMQ_WORKER_STATUS_DIR") or os.path.join(
        tempfile.gettempdir(), f"minimq-worker-{os.getuid()}")


def default_status_file(app_name: str, pid: int | None = None) -> str:
    return os.path.join(status_dir(), f"{app_name}.{pid or os.getpid()}.json")


def safe_url(url: str) -> str:
    """The URL without its password, for logs and status files."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def write_status(path: str, document: dict[str, Any]) -> None:
    """Atomically replace ``path`` (a reader sees the old document or the new, never half)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(document, f, indent=1)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_statuses(files: list[str]) -> list[dict[str, Any]]:
    """The documents of runners that are still alive (stale files of dead ones are skipped)."""
    out = []
    for path in sorted(files):
        try:
            with open(path) as f:
                document = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and _alive(int(document.get("pid", 0) or 0)):
            document["file"] = path
            out.append(document)
    return out


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_status(document: dict[str, Any], now: float | None = None) -> str:
    """The human-readable form of one runner's status."""
    now = time.time() if now is None else now
    lines = [f"runner {document['app_ref']} (app {document['app']}, pid {document['pid']}) on "
             f"{document['url']}: {document['state']}, up {_ago(now - document['started'])}, "
             f"updated {_ago(max(0.0, now - document['updated']))} ago"]
    for name, c in document["consumers"].items():
        counts = " ".join(f"{k}={v}" for k, v in c["counts"].items())
        state = "CRASH LOOP (not restarted; SIGHUP retries)" if c["state"] == "crash-loop" \
            else c["state"]
        lines.append(f"  {name} ({c['kind']}, {c['queue']}): {state}, "
                     f"{c['running']}/{c['expected']} processes; {counts}")
        if c.get("poison"):
            lines.append(f"    {c['poison']} poison message(s) waiting to be dead-lettered")
        for p in c["processes"]:
            what = "starting" if not p["ready"] else "stopping" if p["stopping"] else "idle"
            if p["in_flight"]:
                what = "handling " + ", ".join(
                    f"{m.get('message_id') or m['key'][:8]} ({m.get('routing_key')}"
                    f"{', redelivered' if m.get('redelivered') else ''}, {_ago(m['for'])})"
                    for m in p["in_flight"])
            lines.append(f"    {p['slot']} pid {p['pid']} up {_ago(p['up'])}: {what}")
        if c.get("restart_in") is not None:
            lines.append(f"    restart in {c['restart_in']:.1f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="minimq worker status",
        description="Show what running minimq worker runners on this machine are doing.")
    p.add_argument("app", nargs="?", help="only runners of this App name (App(name=...))")
    p.add_argument("--file", help="read this status file (a runner's --status-file)")
    p.add_argument("--dir", help="look for status files here (default: $MINIMQ_WORKER_STATUS_DIR "
                                 "or the temp dir's minimq-worker-<uid>)")
    p.add_argument("--json", action="store_true", help="print the documents as JSON")
    args = p.parse_args(argv)
    if args.file:
        files = [args.file]
    else:
        pattern = f"{glob.escape(args.app)}.*.json" if args.app else "*.json"
        files = glob.glob(os.path.join(args.dir or status_dir(), pattern))
    documents = read_statuses(files)
    if args.json:
        print(json.dumps(documents, indent=1))
    elif not documents:
        print("no running minimq worker runner found", file=sys.stderr)
    else:
        print("\n".join(format_status(d) for d in documents))
    return 0 if documents else 1
