"""One append-only log file that never loses a record to a failed write or fsync.

Records go through three stages, in order, and only ever move forward except on failure:

    pending   appended by the broker, not yet handed to the OS
    unsynced  written (whole records, ending at `size`), not yet covered by an fsync
    durable   covered by a successful fsync (the file's first `durable` bytes)

A write that fails (ENOSPC, EIO) or stops halfway keeps every record it did not finish in
`pending`, in order; the whole records it did finish move on to `unsynced`; a partly
written record is cut off (ftruncate back to `size`) before anything else is written, so
the file only ever holds whole records. An fsync that fails may have lost anything written
since the last good one (Linux drops the dirty pages and reports the error once), so
everything `unsynced` goes back to `pending`, the file is cut back to `durable`, and it is
all written again. A failing episode is logged once, with the path and the errno, and its
end once.

Records keep their order and their count, so a caller that numbers records (the store's
positions, which publisher confirms wait for) can trust `written` and `durable_records`.
"""
from __future__ import annotations

import errno
import logging
import struct

from minimq.store.files import Files

log = logging.getLogger("minimq.store")

_LEN = struct.Struct(">I")
_RECORD_HEADER = 8  # length u32 + crc32 u32 (see records.py)


def whole_records(data: bytes, upto: int) -> tuple[int, int]:
    """(bytes, count) of the whole records at the start of `data` within its first `upto` bytes."""
    pos = count = 0
    while pos + _RECORD_HEADER <= upto:
        end = pos + _RECORD_HEADER + _LEN.unpack_from(data, pos)[0]
        if end > upto:
            break
        pos = end
        count += 1
    return pos, count


class SyncMark:
    """What one fsync of one file will cover, taken before the fsync starts."""

    __slots__ = ("size", "unsynced", "written", "error")

    def __init__(self, size: int, unsynced: int, written: int) -> None:
        self.size = size
        self.unsynced = unsynced
        self.written = written
        self.error: OSError | None = None


class AppendFile:
    __slots__ = (
        "files", "path", "fd", "size", "durable", "pending", "unsynced", "appended", "written",
        "durable_records", "cut_needed", "failure", "retried",
    )

    def __init__(self, files: Files, path: str, fd: int, size: int = 0) -> None:
        self.files = files
        self.path = path
        self.fd = fd
        self.size = size  # bytes of whole records in the file
        self.durable = size  # of those, covered by an fsync
        self.pending: list[bytes] = []  # blobs of whole records, in order
        self.unsynced: list[tuple[bytes, int]] = []  # (blob, records) written since the last fsync
        self.appended = 0  # records appended to this file
        self.written = 0  # records in the file (pending ones are appended - written)
        self.durable_records = 0
        self.cut_needed = False  # a failed write left part of a record past `size`
        self.failure: str | None = None  # what failed in this episode (None: healthy)
        self.retried = 0  # failed attempts in this episode

    # ------------------------------------------------------------- writing

    def write(self) -> bool:
        """Hand the pending records to the OS; True when none is left pending."""
        pending = self.pending
        if not pending:
            return True
        if self.cut_needed and not self._cut():
            return False
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        total = len(data)
        done = 0
        files, fd = self.files, self.fd
        try:
            done = files.write(fd, data)
            if done < total:
                view = memoryview(data)
                while done < total:
                    n = files.write(fd, view[done:])
                    if n <= 0:
                        raise OSError(errno.EIO, "write wrote nothing")
                    done += n
        except OSError as exc:
            self._write_failed(exc, data, done)
            return False
        self.size += total
        count = self.appended - self.written
        self.unsynced.append((data, count))
        self.written += count
        pending.clear()
        return True

    def _write_failed(self, exc: OSError, data: bytes, done: int) -> None:
        keep, count = whole_records(data, done) if done > 0 else (0, 0)
        if keep:
            self.size += keep
            self.unsynced.append((data[:keep], count))
            self.written += count
        rest = data[keep:]
        self.pending[:] = [rest] if rest else []
        self._failed("write", exc)
        if done > keep:
            self.cut_needed = True
            self._cut()

    def _cut(self) -> bool:
        """Cut what lies past `size` (a torn record, or what a failed fsync may have lost);
        True when the file is clean."""
        try:
            self.files.ftruncate(self.fd, self.size)
        except OSError as exc:
            self.cut_needed = True
            self._failed("truncate", exc)
            return False
        # Once per episode at warning level: a full disk cuts on every retry.
        level = logging.DEBUG if self.retried > 1 else logging.WARNING
        log.log(level, "%s: cut back to offset %d (the last whole record written)", self.path, self.size)
        self.cut_needed = False
        return True

    def drop_last(self, blob: bytes) -> None:
        """Take back the last appended record (still pending: its write failed)."""
        last = self.pending[-1]
        assert last.endswith(blob)
        if len(last) == len(blob):
            self.pending.pop()
        else:
            self.pending[-1] = last[: len(last) - len(blob)]
        self.appended -= 1

    # ------------------------------------------------------------- syncing

    def sync_mark(self) -> SyncMark:
        return SyncMark(self.size, len(self.unsynced), self.written)

    def synced(self, mark: SyncMark) -> None:
        """The fsync for `mark` succeeded: what it covered is durable."""
        if mark.error is not None:
            self._sync_failed(mark.error)
            return
        if mark.size > self.durable:
            self.durable = mark.size
            self.durable_records = mark.written
        del self.unsynced[: mark.unsynced]
        if self.failure is not None and not self.pending and not self.cut_needed:
            log.warning("%s: writes work again (%d failed attempts); nothing was lost", self.path, self.retried)
            self.failure = None
            self.retried = 0

    def _sync_failed(self, exc: OSError) -> None:
        # What was written since the last good fsync may be gone from the page cache:
        # write it all again from memory.
        if self.unsynced:
            blobs = [blob for blob, _ in self.unsynced]
            self.written -= sum(count for _, count in self.unsynced)
            self.unsynced.clear()
            self.pending[:0] = blobs
        self.size = self.durable
        self._failed("fsync", exc)
        self.cut_needed = True
        self._cut()

    def _failed(self, what: str, exc: OSError) -> None:
        self.retried += 1
        if self.failure is None:
            self.failure = what
            log.error(
                "%s of %s failed: [Errno %s] %s; %d records wait in memory and are retried "
                "(confirms wait for them)",
                what, self.path, exc.errno, exc.strerror or exc, self.appended - self.durable_records,
            )
        else:
            log.debug("%s of %s failed again: %s", what, self.path, exc)
