"""A broker with its management API, started as a user starts it (the real CLI), and a
small urllib client for the API."""
from __future__ import annotations

import base64
import json
import os
import shutil
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
AMQP_RE = re.compile(r"listening on amqp://([\d.]+):(\d+)")
HTTP_RE = re.compile(r"management API and web UI on http://([\d.]+):(\d+)/")


@dataclass
class Node:
    proc: subprocess.Popen
    amqp_port: int
    http_port: int
    stderr: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body: Any = None, *, user: str = "guest",
                password: str = "guest", headers: dict | None = None, raw: bytes | None = None,
                timeout: float = 30.0) -> tuple[int, Any, dict]:
        """(status, decoded JSON body or None, headers) of one API call."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if user is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, payload, hdrs = exc.code, exc.read(), dict(exc.headers)
        text = payload.decode()
        return status, (json.loads(text) if text.strip() else None), {k.lower(): v for k, v in hdrs.items()}

    def get(self, path: str, **kw: Any) -> Any:
        status, body, _ = self.request("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_node(*args: str, timeout: float = 20.0) -> Node:
    """The CLI broker on random ports; in memory unless `args` name a --data-dir."""
    store = [] if any(a.startswith("--data-dir") for a in args) else ["--in-memory"]
    cmd = [sys.executable, "-m", "minimq", "--port", "0", *store, "--log-level", "info",
           "--management-port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found: dict[str, int] = {}
    ready = threading.Event()
    lines: list[str] = []

    def read(stream, regex, key) -> None:
        for line in stream:
            lines.append(line)
            m = regex.search(line)
            if m and key not in found:
                found[key] = int(m.group(2))
                if len(found) == 2:
                    ready.set()
        ready.set()

    threading.Thread(target=read, args=(proc.stdout, AMQP_RE, "amqp"), daemon=True).start()
    threading.Thread(target=read, args=(proc.stderr, HTTP_RE, "http"), daemon=True).start()
    if not ready.wait(timeout) or len(found) != 2:
        proc.kill()
        raise RuntimeError(f"broker did not start: {cmd}: {''.join(lines)}")
    return Node(proc, found["amqp"], found["http"], lines)


def rabbitmqctl_base() -> list[str] | None:
    """rabbitmqctl aimed at a RabbitMQ node that answers, or None.

    CI starts a private node for the differential tier (MINIMQ_DIFF_NODE, see .ci/run); on a
    developer's machine the default local node does as well."""
    if shutil.which("rabbitmqctl") is None:
        return None
    node = os.environ.get("MINIMQ_DIFF_NODE")
    base = ["rabbitmqctl", "-q"] + (["-n", node] if node else [])
    try:
        done = subprocess.run(base + ["status"], capture_output=True, timeout=60, env=rabbit_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return base if done.returncode == 0 else None


def rabbit_env() -> dict:
    env = dict(os.environ)
    private_dir = os.environ.get("MINIMQ_DIFF_DIR")
    if private_dir:  # the private node's own (empty) env file, as its stop command uses
        env["RABBITMQ_CONF_ENV_FILE"] = os.path.join(private_dir, "rabbitmq-env.conf")
    return env


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    n = start_node("--management-rate-interval", "0.2")
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def unique() -> str:
    return "m-" + uuid.uuid4().hex[:10]


def seg(name: str) -> str:
    """A name as one URL path segment (/ becomes %2F)."""
    return quote(name, safe="")
