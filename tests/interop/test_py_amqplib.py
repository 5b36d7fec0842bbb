"""py-amqplib (`from amqplib import client_0_8 as amqp`), the 2011 client, speaking AMQP 0-8.

The worker program in programs/photo_worker_2011.py is run unchanged in a subprocess, as the
original photo-site workers ran: access.request, declare/bind/publish, basic_consume with a
callback and `while chan.callbacks: chan.wait()`. Its output must be exactly what it prints
against RabbitMQ 3.10.8 (checked with MINIMQ_TEST_URL).

py-amqplib 1.0.2 on PyPI is Python-2 only (its Python 3 build relied on 2to3); Debian packages
a Python 3 port as python3-amqplib, which `.ci/run` installs. It is pure Python, so the test
points the subprocess's PYTHONPATH at Debian's copy when the venv has none.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "programs" / "photo_worker_2011.py"
DEBIAN_COPY = Path("/usr/lib/python3/dist-packages/amqplib")


@pytest.fixture(scope="module")
def amqplib_path(tmp_path_factory) -> str:
    """A PYTHONPATH entry under which `import amqplib` finds py-amqplib."""
    if importlib.util.find_spec("amqplib") is not None:
        return ""
    if (DEBIAN_COPY / "client_0_8" / "__init__.py").exists():
        root = tmp_path_factory.mktemp("amqplib")
        (root / "amqplib").symlink_to(DEBIAN_COPY)
        return str(root)
    if os.environ.get("CI"):
        pytest.fail("py-amqplib missing: .ci/run installs Debian's python3-amqplib")
    pytest.skip("py-amqplib not installed (apt-get install python3-amqplib)")


def run_worker(broker, amqplib_path: str, *args: str) -> list[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (amqplib_path, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), f"{broker.host}:{broker.port}", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_2011_photo_worker_runs_unchanged(broker, amqplib_path, unique):
    lines = run_worker(broker, amqplib_path, unique, unique + "-x", "5")
    assert lines == [
        *(f"got photo {i} tag={i + 1} type=text/plain size={i} redelivered=False" for i in range(5)),
        "get-after-drain None",
        "get late count=0",
        "deleted 0",
        f"passive 404 NOT_FOUND - no queue '{unique}' in vhost '/'",
        "done 5",
    ]


def test_many_0_8_workers_at_once(broker, amqplib_path, unique):
    procs = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (amqplib_path, env.get("PYTHONPATH", "")) if p)
    for i in range(4):
        procs.append(subprocess.Popen(
            [sys.executable, str(PROGRAM), f"{broker.host}:{broker.port}", f"{unique}-{i}", f"{unique}-x{i}", "50"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.splitlines()[-1] == "done 50"
