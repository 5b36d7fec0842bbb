"""Access control and vhosts kept in the data dir, as one JSON definitions document.

Users, vhosts, permissions, limits and policies change at run time (management API, CLI)
and must survive a restart. They are small, so each change rewrites the whole file
atomically: written to a temporary file, fsynced, renamed over the old one, and the directory
fsynced, so a crash at any moment leaves either the old or the new file, never half of one.
The document is RabbitMQ's definitions shape (minimq.broker.definitions), without queues,
exchanges and bindings, which the durable log keeps.
"""
from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("minimq.store")

FILENAME = "definitions.json"


def definitions_path(data_dir: str) -> str:
    return os.path.join(data_dir, FILENAME)


def load_definitions(data_dir: str) -> dict | None:
    """The saved document, or None when there is none (a fresh data dir)."""
    path = definitions_path(data_dir)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OSError(f"cannot read {path}: not a definitions document")
    return data


def save_definitions(data_dir: str, data: dict) -> None:
    """Replace the saved document atomically (see the module docstring)."""
    path = definitions_path(data_dir)
    tmp = path + ".tmp"
    raw = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
