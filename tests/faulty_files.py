"""A file layer for DurableStore that fails the way real disks do, and can "lose power".

`FaultyFiles` does the real os calls on real files, except that, at random points chosen by
a seeded `random.Random`, a write stops halfway (a short write, then ENOSPC) or fails with
ENOSPC or EIO, an fsync fails with EIO, or an ftruncate fails. It also tracks, per file
(inode), how much of it an fsync has covered, so `power_loss()` can do what a crash of the
machine does: keep the fsynced part of every file and any prefix of the rest.
"""
from __future__ import annotations

import errno
import os
import random
import stat

from minimq.store.files import Files


class FaultyFiles(Files):
    def __init__(self, rng: random.Random, p_write: float = 0.0, p_fsync: float = 0.0,
                 p_truncate: float = 0.0, only: str | None = None) -> None:
        self.rng = rng
        self.only = only  # fail only files whose name contains this (None: all files)
        self._spared: set[int] = set()  # fds of files `only` leaves alone
        self.p_write = p_write
        self.p_fsync = p_fsync
        self.p_truncate = p_truncate
        self.enabled = True
        self.full = False  # a full disk: every write of a data file fails with ENOSPC
        self.faults = 0  # injected so far
        self._ino: dict[int, int] = {}  # fd -> inode of a regular file
        self._durable: dict[int, int] = {}  # inode -> bytes covered by an fsync
        self._fail_next_write: set[int] = set()

    def set_rates(self, p_write: float, p_fsync: float | None = None, p_truncate: float | None = None) -> None:
        self.p_write = p_write
        self.p_fsync = p_write / 2 if p_fsync is None else p_fsync
        self.p_truncate = p_write / 3 if p_truncate is None else p_truncate

    def _fault(self, p: float, fd: int = -1) -> bool:
        if self.enabled and p > 0 and fd not in self._spared and self.rng.random() < p:
            self.faults += 1
            return True
        return False

    # ---------------------------------------------------------------- the calls

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = os.open(path, flags, mode)
        st = os.fstat(fd)
        if self.only is not None and self.only not in os.path.basename(path):
            self._spared.add(fd)
        if stat.S_ISREG(st.st_mode):
            self._ino[fd] = st.st_ino
            self._durable[st.st_ino] = min(self._durable.get(st.st_ino, st.st_size), st.st_size)
        return fd

    def close(self, fd: int) -> None:
        self._ino.pop(fd, None)
        self._spared.discard(fd)
        self._fail_next_write.discard(fd)
        os.close(fd)

    def write(self, fd: int, data) -> int:
        if self.full and self.enabled:
            self.faults += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if fd in self._fail_next_write:
            self._fail_next_write.discard(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self._fault(self.p_write, fd):
            if len(data) > 1 and self.rng.random() < 0.5:
                # A full disk: part of the data goes in, the next write gets ENOSPC.
                k = self.rng.randrange(1, len(data))
                self._fail_next_write.add(fd)
                return os.write(fd, data[:k])
            code = self.rng.choice((errno.ENOSPC, errno.EIO))
            raise OSError(code, os.strerror(code))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        ino = self._ino.get(fd)
        if ino is not None and self._fault(self.p_fsync, fd):
            # As Linux: the dirty pages may be gone, and the error is reported once.
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        # No real fsync: durability is modelled (power_loss() keeps what an fsync covered).
        if ino is not None:
            self._durable[ino] = os.fstat(fd).st_size

    def ftruncate(self, fd: int, size: int) -> None:
        if self._fault(self.p_truncate, fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.ftruncate(fd, size)
        ino = self._ino.get(fd)
        if ino is not None:
            self._durable[ino] = min(self._durable.get(ino, size), size)

    # ---------------------------------------------------------------- crashes

    def power_loss(self, directory: str) -> list[tuple[str, int, int]]:
        """Every file in `directory` keeps its fsynced part and a random prefix of the rest.

        Returns (name, kept, lost) for each file that lost bytes.
        """
        cut = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_ino not in self._durable:
                continue
            durable = min(self._durable[st.st_ino], st.st_size)
            if st.st_size > durable:
                keep = durable + self.rng.randrange(0, st.st_size - durable + 1)
                if keep < st.st_size:
                    os.truncate(path, keep)
                    cut.append((name, keep, st.st_size - keep))
        return cut
