"""The store's one door to the disk: every open, write, fsync, truncate and statvfs.

`DurableStore` does its file I/O only through a `Files` object, so a test can hand it one
that fails the way real disks do (ENOSPC, EIO, a write that stops halfway, an fsync that
loses what it was asked to keep) at chosen or random points, and check that no confirmed
message is lost. The default simply calls the os functions (looked up at call time, so a
wrapper that patches os.fsync still sees every call).
"""
from __future__ import annotations

import os


class Files:
    """Plain OS calls. Subclass and override to inject faults (see tests/)."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: memoryview | bytes) -> int:
        """One write(2): may write less than asked (a full disk often does)."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)


#: What a DurableStore uses when it is given no `files`. A test harness that runs the real
#: server in a subprocess may replace it before the store is created.
default = Files()
