"""Where the example's workers write down what they did: one line per task, appended
atomically (O_APPEND, one write), so run_demo.py can check that every task was done."""
from __future__ import annotations

import os


def record(kind: str, *fields: object) -> None:
    directory = os.environ.get("PHOTO_SITE_RESULTS", "results")
    os.makedirs(directory, exist_ok=True)
    line = " ".join(str(f) for f in fields) + "\n"
    fd = os.open(os.path.join(directory, f"{kind}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(kind: str) -> list[list[str]]:
    path = os.path.join(os.environ.get("PHOTO_SITE_RESULTS", "results"), f"{kind}.log")
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []
