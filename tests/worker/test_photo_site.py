"""examples/photo-site end to end: PHP publishers (php-amqplib and the amqp extension), the
runner's workers, a py-amqp worker and Celery, with a worker killed mid-run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

DEMO = ROOT / "examples" / "photo-site" / "run_demo.py"
INSTALL = ".ci/run installs them: apt-get install php-cli php-amqplib php-amqp"


def _php_missing() -> str | None:
    """Why the PHP side cannot run here, or None."""
    if shutil.which("php") is None:
        return f"php-cli is not installed ({INSTALL})"
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, timeout=30).stdout
    if "amqp" not in modules.split():
        return f"the PHP amqp extension is not installed ({INSTALL})"
    autoload = os.environ.get("PHP_AMQPLIB_AUTOLOAD", "/usr/share/php/PhpAmqpLib/autoload.php")
    if not os.path.exists(autoload):
        return f"php-amqplib is not installed ({INSTALL})"
    return None


def test_photo_site_runs_and_every_task_is_done() -> None:
    reason = _php_missing()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("celery", reason="the interop extra (celery) is not installed")
    pytest.importorskip("amqp", reason="the interop extra (py-amqp) is not installed")
    cmd = [sys.executable, str(DEMO)]
    if os.environ.get("MINIMQ_TEST_URL"):
        cmd += ["--url", os.environ["MINIMQ_TEST_URL"]]
    env = {k: v for k, v in os.environ.items() if k not in ("MINIMQ_URL", "AMQP_URL")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "photo site OK" in out.stdout
    assert "killed index worker pid" in out.stdout
