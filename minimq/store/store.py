"""Durability: what survives a restart or a kill -9.

Layout of the data directory:

    LOCK              held (flock) by the running broker, so two brokers never share a dir
    meta.log          durable exchanges, queues and bindings (rewritten compactly at start)
    msgs-00000001.log persistent messages and their acks, in segments of SEGMENT_SIZE bytes

The broker core calls the `*_declared` / `message_*` methods as things happen; message records
only go to an in-memory buffer, declarations are written at once. The server calls `write()`
once per event-loop iteration (one write per file) and a sync round (`sync_begin` on the loop,
`sync_run` in a worker thread, `sync_end` on the loop: one fsync for everything written so
far, group commit). Publisher confirms for persistent messages are released by the caller once
the durable position has passed theirs.

Positions count message-log records (1, 2, 3, ...). A record is never dropped: a failed or
short write keeps it queued in memory (see appender.py), so the durable position only moves
past records that are really in the file and fsynced. A declaration whose record cannot be
written is refused (506 RESOURCE_ERROR) and not applied; a deletion's record is retried.

Message segments are reclaimed from the oldest end: the oldest segment is deleted once every
message published in it is gone (acked, expired, purged, or its queue deleted); acks and
purges for it may sit in younger segments, which is why only the oldest may go. When the
oldest segment is mostly dead, its few live messages are appended again to the current
segment (same ids, so recovery order is unchanged) and it is deleted: a single long-unacked
message cannot pin the log.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from minimq.codec.errors import ResourceError
from minimq.store import files as _files
from minimq.store import records as r
from minimq.store.appender import AppendFile, SyncMark

log = logging.getLogger("minimq.store")

SEGMENT_SIZE = 64 * 1024 * 1024
COMPACT_LIVE_RATIO = 0.25  # compact the oldest segment once less than this share is live...
COMPACT_LIVE_MESSAGES = 256  # ...or when at most this many messages are (cheap to copy)

_FLAG_DURABLE, _FLAG_AUTO_DELETE, _FLAG_INTERNAL = 1, 2, 4
_new_stored = tuple.__new__
_Q = struct.Struct(">Q")
_I = struct.Struct(">I")


class StoreLocked(RuntimeError):
    pass


class StoredMessage(NamedTuple):
    """A recovered message (a tuple: a restart may carry millions)."""

    id: int  # the store reference (Message.store_id)
    exchange: str
    routing_key: str
    header: bytes
    body: bytes
    delivered: bool


@dataclass
class RecoveredQueue:
    vhost: str
    name: str
    auto_delete: bool
    arguments: dict
    messages: list[StoredMessage] = field(default_factory=list)  # in queue order


@dataclass
class Recovered:
    exchanges: list[tuple[str, str, str, bool, bool, bool, dict]] = field(default_factory=list)
    queues: list[RecoveredQueue] = field(default_factory=list)
    bindings: list[tuple[str, str, str, bool, str, dict]] = field(default_factory=list)
    reports: list[r.ScanReport] = field(default_factory=list)
    message_count: int = 0


class _Segment:
    __slots__ = ("number", "path", "published", "live", "size")

    def __init__(self, number: int, path: str) -> None:
        self.number = number
        self.path = path
        self.published = 0  # (message, queue) pairs recorded here
        self.live = 0  # of those, still held by a queue or a consumer
        self.size = 0


# A persistent message's reference, as the broker holds it (Message.store_id): the message's
# id and the number of the segment that holds its newest copy, in one int.
_SEG_SHIFT = 40
_ID_MASK = (1 << _SEG_SHIFT) - 1


class DurableStore:
    """An append-only, crash-safe log of durable broker state in one directory."""

    def __init__(self, path: str, *, segment_size: int = SEGMENT_SIZE, files: _files.Files | None = None) -> None:
        self.path = os.path.abspath(path)
        self.segment_size = segment_size
        self.files = files if files is not None else _files.default
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLocked(f"data directory {self.path} is in use by another broker") from None
        self._meta: AppendFile | None = None  # meta.log, once recovery has rewritten it
        self._early_meta: list[bytes] = []  # declarations made before that (none, normally)
        # Position of the message record each not-yet-durable meta record follows: the
        # durable position may not pass it until that meta record is durable too.
        self._meta_marks: deque[int] = deque()
        self._log: AppendFile | None = None  # the current message segment
        self._base = 0  # message records in closed segments (all durable)
        self._segments: dict[int, _Segment] = {}  # by number, oldest first
        self._current: _Segment | None = None
        self._next_id = 1
        self.synced = 0  # position known durable (the broker moves it: broker.synced())
        self.on_dirty: Callable[[], None] | None = None
        self._dirty = False
        # Set by the broker: given a predicate on references, yields (vhost, queue name,
        # message) for every live persistent copy it accepts, so compaction can copy a
        # segment's messages forward (and update their references).
        self.live_messages: Callable[[Callable[[int], bool]], Iterable[tuple[str, str, Any]]] | None = None

    # ------------------------------------------------------------ recovery

    def recover(self) -> Recovered:
        """Read everything back, cut torn tails, report corruption, compact the metadata."""
        out = Recovered()
        self._recover_meta(out)
        queues = {(q.vhost, q.name): q for q in out.queues}
        # Messages: replay every segment in order. Per id: [header fields..., holders, segment]
        messages: dict[int, list] = {}
        delivered: set[tuple[int, str, str]] = set()
        purged: dict[tuple[str, str], int] = {}
        headers: dict[bytes, bytes] = {}  # identical content headers shared, as the broker does
        seg_files = sorted(f for f in os.listdir(self.path) if f.startswith("msgs-") and f.endswith(".log"))
        unpack_q = _Q.unpack_from
        unpack_i = _I.unpack_from
        names: dict[bytes, str] = {}  # names repeat: decode each distinct one once

        def text(raw: bytes) -> str:
            name = names.get(raw)
            if name is None:
                name = names[raw] = raw.decode("utf-8", "surrogateescape")
            return name
        for fname in seg_files:
            seg = _Segment(int(fname[5:-4]), os.path.join(self.path, fname))
            number = seg.number
            for rtype, payload in self._read_file(seg.path, out):
                if rtype == r.MESSAGE:
                    # id u64, vhost, n u16, queues..., exchange, routing key, header, body
                    mid = unpack_q(payload, 0)[0]
                    pos = 8
                    n = unpack_i(payload, pos)[0]
                    vhost = text(payload[pos + 4 : pos + 4 + n])
                    pos += 4 + n
                    count = (payload[pos] << 8) | payload[pos + 1]
                    pos += 2
                    fields = []
                    for _ in range(count + 4):
                        n = unpack_i(payload, pos)[0]
                        fields.append(payload[pos + 4 : pos + 4 + n])
                        pos += 4 + n
                    header = fields[count + 2]
                    header = headers.setdefault(header, header)
                    if count == 1:
                        holders = {(vhost, text(fields[0]))}
                    else:
                        holders = {(vhost, text(q)) for q in fields[:count]}
                    entry = messages.get(mid)
                    if entry is None:
                        messages[mid] = [text(fields[count]), text(fields[count + 1]), header, fields[count + 3],
                                         holders, number]
                    else:
                        entry[5] = number  # a newer copy (compaction) holds it now
                    seg.published += count
                    if mid >= self._next_id:
                        self._next_id = mid + 1
                elif rtype == r.ACK:
                    rd = r.Reader(payload)
                    mid, vhost, q = rd.u64(), rd.text(), rd.text()
                    entry = messages.get(mid)
                    if entry is not None:
                        entry[4].discard((vhost, q))
                elif rtype == r.DELIVERED:
                    rd = r.Reader(payload)
                    delivered.add((rd.u64(), rd.text(), rd.text()))
                elif rtype == r.PURGE:
                    rd = r.Reader(payload)
                    vhost, q, upto = rd.text(), rd.text(), rd.u64()
                    purged[(vhost, q)] = max(purged.get((vhost, q), 0), upto)
            seg.size = os.path.getsize(seg.path)
            self._segments[number] = seg
        # Rebuild queue contents in id (publish) order; count what each segment still holds.
        for mid in sorted(messages):
            exchange, rk, header, body, holders, number = messages[mid]
            ref = (number << _SEG_SHIFT) | mid
            for vhost, qname in holders:
                q = queues.get((vhost, qname))
                if q is None or mid <= purged.get((vhost, qname), 0):
                    continue
                q.messages.append(
                    _new_stored(StoredMessage, (ref, exchange, rk, header, body, (mid, vhost, qname) in delivered))
                )
                self._segments[number].live += 1
                out.message_count += 1
        messages.clear()
        self._open_new_segment()
        self._reclaim()
        return out

    def _recover_meta(self, out: Recovered) -> None:
        exchanges: dict[tuple[str, str], tuple] = {}
        queues: dict[tuple[str, str], RecoveredQueue] = {}
        bindings: dict[tuple, tuple] = {}
        meta_path = os.path.join(self.path, "meta.log")
        if os.path.exists(meta_path):
            for rtype, payload in self._read_file(meta_path, out):
                rd = r.Reader(payload)
                if rtype == r.EXCHANGE:
                    vhost, name, type_name = rd.text(), rd.text(), rd.text()
                    flags = rd.u8()
                    args = rd.table()
                    exchanges[(vhost, name)] = (
                        vhost, name, type_name, bool(flags & _FLAG_DURABLE),
                        bool(flags & _FLAG_AUTO_DELETE), bool(flags & _FLAG_INTERNAL), args,
                    )
                elif rtype == r.EXCHANGE_DELETE:
                    vhost, name = rd.text(), rd.text()
                    exchanges.pop((vhost, name), None)
                    for key in [k for k in bindings if k[0] == vhost and (k[1] == name or (k[3] and k[2] == name))]:
                        del bindings[key]
                elif rtype == r.QUEUE:
                    vhost, name = rd.text(), rd.text()
                    flags = rd.u8()
                    args = rd.table()
                    queues[(vhost, name)] = RecoveredQueue(vhost, name, bool(flags & _FLAG_AUTO_DELETE), args)
                elif rtype == r.QUEUE_DELETE:
                    vhost, name = rd.text(), rd.text()
                    queues.pop((vhost, name), None)
                    for key in [k for k in bindings if k[0] == vhost and not k[3] and k[2] == name]:
                        del bindings[key]
                elif rtype in (r.BIND, r.UNBIND):
                    vhost, src, dest = rd.text(), rd.text(), rd.text()
                    is_x = bool(rd.u8())
                    key = rd.text()
                    args = rd.table()
                    ident = (vhost, src, dest, is_x, key, tuple(sorted((k, repr(v)) for k, v in args.items())))
                    if rtype == r.BIND:
                        bindings[ident] = (vhost, src, dest, is_x, key, args)
                    else:
                        bindings.pop(ident, None)
        out.exchanges = list(exchanges.values())
        out.queues = list(queues.values())
        out.bindings = list(bindings.values())
        self._rewrite_meta(out)

    def _read_file(self, path: str, out: Recovered) -> Iterable[tuple[int, bytes]]:
        with open(path, "rb") as f:
            data = f.read()
        report = r.ScanReport(path)
        for _offset, rtype, payload in r.scan(data, report):
            yield rtype, payload
        # What a kill -9 left may still be only in the page cache: fsync each file before
        # anything is decided from it (a segment is deleted once its messages have newer
        # copies elsewhere; those copies must not vanish in a power cut afterwards).
        try:
            fd = self.files.open(path, os.O_RDWR)
            try:
                if report.torn_at is not None:
                    self.files.ftruncate(fd, report.torn_at)
                self.files.fsync(fd)
            finally:
                self.files.close(fd)
        except OSError as exc:
            log.error("%s: cannot make it durable at start: %s", path, exc)
        if report.torn_at is not None:
            log.warning("%s: torn record at offset %d cut off (%d bytes)", path, report.torn_at,
                        len(data) - report.torn_at)
        for offset, size in report.skipped:
            log.error("%s: corrupt data at offset %d: skipped %d bytes", path, offset, size)
        if not report.clean:
            out.reports.append(report)

    def _rewrite_meta(self, rec: Recovered) -> None:
        """Write the surviving metadata compactly, then swap it in atomically.

        If that cannot be written (a full disk at start), the old meta.log stays as it is
        and is appended to: it holds the same state, only less compactly.
        """
        tmp = os.path.join(self.path, "meta.log.tmp")
        meta_path = os.path.join(self.path, "meta.log")
        parts = []
        for vhost, name, type_name, durable, auto_delete, internal, args in rec.exchanges:
            parts.append(self._exchange_record(vhost, name, type_name, durable, auto_delete, internal, args))
        for q in rec.queues:
            parts.append(self._queue_record(q.vhost, q.name, q.auto_delete, q.arguments))
        for vhost, src, dest, is_x, key, args in rec.bindings:
            parts.append(self._bind_record(r.BIND, vhost, src, dest, is_x, key, args))
        try:
            fd = self.files.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                self._write_all(fd, b"".join(parts))
                self.files.fsync(fd)
            finally:
                self.files.close(fd)
            os.replace(tmp, meta_path)
            self._fsync_dir()
        except OSError as exc:
            log.error("cannot rewrite %s (%s): appending to the old one", meta_path, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
        fd = self.files.open(meta_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self._meta = AppendFile(self.files, meta_path, fd, os.fstat(fd).st_size)
        for data in self._early_meta:
            self._append_meta(data, strict=False)
        self._early_meta.clear()

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.files.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write wrote nothing")
            view = view[n:]

    # ------------------------------------------------------------ segments

    def _open_new_segment(self) -> None:
        """Start the next segment (raises OSError, leaving the current one in use)."""
        number = max(self._segments, default=0) + 1
        path = os.path.join(self.path, f"msgs-{number:08d}.log")
        fd = self.files.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._fsync_dir()
        except OSError:
            self.files.close(fd)
            raise
        old = self._log
        if old is not None:
            self._base += old.appended
            if self._current is not None:
                self._current.size = old.size
            try:
                self.files.close(old.fd)
            except OSError as exc:
                log.warning("closing %s: %s", old.path, exc)
        seg = _Segment(number, path)
        self._segments[number] = seg
        self._current = seg
        self._log = AppendFile(self.files, path, fd)

    def _delete_segment(self, seg: _Segment) -> None:
        del self._segments[seg.number]
        try:
            os.unlink(seg.path)
        except FileNotFoundError:
            pass
        log.debug("deleted message segment %s", seg.path)

    def _fsync_dir(self) -> None:
        fd = self.files.open(self.path, os.O_RDONLY)
        try:
            self.files.fsync(fd)
        finally:
            self.files.close(fd)

    def disk_space(self) -> tuple[int, int]:
        """(free bytes, total bytes) of the data dir's filesystem, as `df` counts them."""
        st = self.files.statvfs(self.path)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    # ------------------------------------------------------- appending (core)

    def _append_meta(self, data: bytes, strict: bool) -> int:
        """Write a declaration's record at once.

        Declarations are rare: handing them to the OS at once means the declare-ok the
        client is about to get can never outrun the record (a kill -9 keeps what was
        written; the next group commit makes it power-safe). `strict`: when the record
        cannot be written, take it back and raise 506 RESOURCE_ERROR, so the caller does
        not apply (nor confirm) what would not survive a restart. Otherwise (deletions) the
        record stays queued and is retried.
        """
        meta = self._meta
        position = self.appended
        if meta is None:
            self._early_meta.append(data)
            return position
        meta.pending.append(data)
        meta.appended += 1
        self._meta_marks.append(position)
        self._mark_dirty()
        if not meta.write() and strict and meta.pending and meta.pending[-1].endswith(data):
            meta.drop_last(data)
            self._meta_marks.pop()
            raise ResourceError(
                f"cannot record this on disk ({meta.failure} of {os.path.basename(meta.path)} failed): not applied"
            )
        return position

    def _append_msg(self, data: bytes) -> int:
        log_ = self._log
        log_.pending.append(data)  # type: ignore[union-attr]
        log_.appended += 1  # type: ignore[union-attr]
        if not self._dirty and self.on_dirty is not None:
            self._dirty = True
            self.on_dirty()
        return self._base + log_.appended  # type: ignore[union-attr]

    def _mark_dirty(self) -> None:
        if not self._dirty and self.on_dirty is not None:
            self._dirty = True
            self.on_dirty()

    @property
    def appended(self) -> int:
        """Position of the newest message record."""
        return self._base + (self._log.appended if self._log is not None else 0)

    @staticmethod
    def _exchange_record(vhost, name, type_name, durable, auto_delete, internal, args) -> bytes:
        flags = (_FLAG_DURABLE if durable else 0) | (_FLAG_AUTO_DELETE if auto_delete else 0) | (
            _FLAG_INTERNAL if internal else 0
        )
        return r.frame(r.EXCHANGE, r.sstr(vhost) + r.sstr(name) + r.sstr(type_name) + bytes((flags,)) + r.table(args))

    @staticmethod
    def _queue_record(vhost, name, auto_delete, args) -> bytes:
        flags = _FLAG_DURABLE | (_FLAG_AUTO_DELETE if auto_delete else 0)
        return r.frame(r.QUEUE, r.sstr(vhost) + r.sstr(name) + bytes((flags,)) + r.table(args))

    @staticmethod
    def _bind_record(rtype, vhost, src, dest, is_x, key, args) -> bytes:
        return r.frame(
            rtype, r.sstr(vhost) + r.sstr(src) + r.sstr(dest) + bytes((1 if is_x else 0,)) + r.sstr(key) + r.table(args)
        )

    def exchange_declared(self, vhost: str, ex: Any) -> int:
        return self._append_meta(
            self._exchange_record(vhost, ex.name, ex.type_name, ex.durable, ex.auto_delete, ex.internal, ex.arguments),
            strict=True,
        )

    def exchange_deleted(self, vhost: str, name: str) -> int:
        return self._append_meta(r.frame(r.EXCHANGE_DELETE, r.sstr(vhost) + r.sstr(name)), strict=False)

    def queue_declared(self, vhost: str, q: Any) -> int:
        return self._append_meta(self._queue_record(vhost, q.name, q.auto_delete, q.arguments), strict=True)

    def queue_deleted(self, vhost: str, name: str, refs: Iterable[int] = ()) -> int:
        """The queue is gone with its messages (`refs`: its ready persistent ones)."""
        self._queue_gone(vhost, name, refs)
        return self._append_meta(r.frame(r.QUEUE_DELETE, r.sstr(vhost) + r.sstr(name)), strict=False)

    def bound(self, vhost: str, src: str, dest: str, is_x: bool, key: str, args: dict | None) -> int:
        return self._append_meta(self._bind_record(r.BIND, vhost, src, dest, is_x, key, args), strict=True)

    def unbound(self, vhost: str, src: str, dest: str, is_x: bool, key: str, args: dict | None) -> int:
        return self._append_meta(self._bind_record(r.UNBIND, vhost, src, dest, is_x, key, args), strict=False)

    def message_published(self, vhost: str, queues: list[str], msg: Any) -> tuple[int, int]:
        """Record a persistent message for these durable queues; returns (ref, position).

        The broker keeps `ref` (Message.store_id) and hands it back with every later event
        about that message.
        """
        mid = self._next_id
        self._next_id = mid + 1
        seg = self._current
        assert seg is not None
        n = len(queues)
        seg.published += n
        seg.live += n
        pos = self._append_msg(r.frame(r.MESSAGE, self._message_payload(mid, vhost, queues, msg)))
        return (seg.number << _SEG_SHIFT) | mid, pos

    def message_acked(self, vhost: str, queue: str, ref: int) -> None:
        """The message left this queue for good (acked, dropped, expired, dead-lettered)."""
        self._append_msg(r.frame(r.ACK, _Q.pack(ref & _ID_MASK) + r.sstr(vhost) + r.sstr(queue)))
        self._forget(ref)

    def message_delivered(self, vhost: str, queue: str, ref: int) -> None:
        self._append_msg(r.frame(r.DELIVERED, _Q.pack(ref & _ID_MASK) + r.sstr(vhost) + r.sstr(queue)))

    def queue_purged(self, vhost: str, queue: str, refs: Iterable[int]) -> None:
        """queue.purge removed these ready messages (unacked ones stay: they may come back)."""
        tail = r.sstr(vhost) + r.sstr(queue)
        for ref in refs:
            self._append_msg(r.frame(r.ACK, _Q.pack(ref & _ID_MASK) + tail))
            self._forget(ref)

    def _queue_gone(self, vhost: str, queue: str, refs: Iterable[int]) -> None:
        # Everything published to the queue so far is gone with it, unacked messages
        # included (their later acks only settle the accounting); the watermark also keeps
        # a later queue of the same name from inheriting old messages.
        upto = self._next_id - 1
        self._append_msg(r.frame(r.PURGE, r.sstr(vhost) + r.sstr(queue) + _Q.pack(upto)))
        for ref in refs:
            self._forget(ref)

    def _forget(self, ref: int) -> None:
        seg = self._segments.get(ref >> _SEG_SHIFT)
        if seg is not None:
            seg.live -= 1

    # ------------------------------------------------------ writing (server)

    @property
    def pending(self) -> bool:
        """Records wait to be written (or a failed write left something to cut)."""
        log_, meta = self._log, self._meta
        return bool((log_ is not None and (log_.pending or log_.cut_needed))
                    or (meta is not None and (meta.pending or meta.cut_needed)))

    @property
    def failing(self) -> bool:
        """A write, truncate or fsync failed and has not yet worked again: retry later."""
        return any(f is not None and f.failure is not None for f in (self._log, self._meta))

    @property
    def needs_sync(self) -> bool:
        """Something written is not yet covered by an fsync."""
        return any(f is not None and bool(f.unsynced) for f in (self._log, self._meta))

    def write(self) -> int:
        """Hand buffered records to the OS (one write per file); returns the written position.

        A failure is not raised: the records stay queued (see appender.py), `failing` is
        set, and the next write() retries.
        """
        self._dirty = False
        meta = self._meta
        if meta is not None and (meta.pending or meta.cut_needed):
            meta.write()
        if self._log is not None:
            self._log.write()
        return self.written

    @property
    def written(self) -> int:
        """Every message record up to this position is in the file (maybe not yet fsynced)."""
        pos = self._base + (self._log.written if self._log is not None else 0)
        meta = self._meta
        if meta is not None and meta.written < meta.appended:
            pos = min(pos, self._meta_marks[meta.written - meta.durable_records])
        return pos

    def durable_position(self) -> int:
        """Every message record up to this position is in the file and fsynced, and so is
        every declaration made before it."""
        pos = self._base + (self._log.durable_records if self._log is not None else 0)
        if self._meta_marks:
            pos = min(pos, self._meta_marks[0])
        return pos

    @property
    def needs_roll(self) -> bool:
        """The current segment is full: call roll() (not while a sync round is running)."""
        return self._log is not None and self._log.size >= self.segment_size

    def sync_begin(self) -> list[tuple[AppendFile, SyncMark]]:
        """Start a sync round (on the loop): what the fsyncs will cover."""
        return [(f, f.sync_mark()) for f in (self._meta, self._log) if f is not None and f.unsynced]

    def sync_run(self, round_: list[tuple[AppendFile, SyncMark]]) -> None:
        """The fsyncs of a round; safe to call from a worker thread (errors are kept)."""
        fsync = self.files.fsync
        for f, mark in round_:
            try:
                fsync(f.fd)
            except OSError as exc:
                mark.error = exc

    def sync_end(self, round_: list[tuple[AppendFile, SyncMark]]) -> int:
        """Finish a sync round (on the loop); returns the durable position."""
        meta = self._meta
        before = meta.durable_records if meta is not None else 0
        for f, mark in round_:
            f.synced(mark)
        if meta is not None:
            for _ in range(meta.durable_records - before):
                self._meta_marks.popleft()
        return self.durable_position()

    def sync(self) -> int:
        """A whole sync round in the calling thread; returns the durable position."""
        round_ = self.sync_begin()
        self.sync_run(round_)
        return self.sync_end(round_)

    def roll(self) -> None:
        """Start a new segment, then reclaim what the oldest ones hold.

        Only once the current segment is all written and fsynced; while writes fail it
        stays in use (the caller then reports durable_position() to the broker).
        """
        log_ = self._log
        if log_ is None or not log_.write() or log_.cut_needed:
            return
        if log_.unsynced:
            self.sync()
            if log_.unsynced or log_.failure is not None:
                return
        try:
            self._open_new_segment()
        except OSError as exc:
            log.error("cannot start a new message segment in %s: %s", self.path, exc)
            return
        self._reclaim()

    def _reclaim(self) -> int:
        """Delete dead segments from the oldest end; compact a mostly-dead oldest one.

        Only the oldest segment may go: younger ones hold acks and purges for older
        messages, which must outlive them. Returns how many segments were removed.
        """
        removed = 0
        while len(self._segments) > 1:
            seg = next(iter(self._segments.values()))
            if seg is self._current:
                break
            if seg.live > 0:
                # Copy forward when little is live: a small share of what the segment
                # holds, or few messages in all (e.g. a segment of earlier copies).
                if seg.live > COMPACT_LIVE_MESSAGES and seg.live >= COMPACT_LIVE_RATIO * seg.published:
                    break
                if self.live_messages is None or not self._copy_forward(seg):
                    break
            self._delete_segment(seg)
            removed += 1
        return removed

    def _copy_forward(self, seg: _Segment) -> bool:
        """Append the live messages of `seg` to the current segment, same ids, in id order.

        Each message's references are updated to the new segment; copies that had been
        delivered get a DELIVERED record again, so a restart still marks them redelivered.
        """
        assert self.live_messages is not None and self._current is not None
        current = self._current
        groups: dict[int, tuple[str, list[str], list[Any]]] = {}
        number = seg.number
        for vhost, queue, msg in self.live_messages(lambda ref: ref >> _SEG_SHIFT == number):
            mid = msg.store_id & _ID_MASK
            group = groups.get(mid)
            if group is None:
                groups[mid] = (vhost, [queue], [msg])
            else:
                group[1].append(queue)
                group[2].append(msg)
        found = sum(len(g[1]) for g in groups.values())
        if found != seg.live:
            log.warning("compaction of %s found %d live messages, expected %d", seg.path, found, seg.live)
            if found < seg.live:
                return False
        buf: list[bytes] = []
        new_prefix = current.number << _SEG_SHIFT
        for mid in sorted(groups):
            vhost, queues, msgs = groups[mid]
            buf.append(r.frame(r.MESSAGE, self._message_payload(mid, vhost, queues, msgs[0])))
            for queue, msg in zip(queues, msgs):
                if msg.seq:  # delivered before: keep the redelivered mark across a restart
                    buf.append(r.frame(r.DELIVERED, _Q.pack(mid) + r.sstr(vhost) + r.sstr(queue)))
        if buf:
            # The copies must be durable before the originals go. If the disk refuses, the
            # originals stay (and so does this segment); copies that did reach the file
            # are harmless duplicates (same ids, same queues).
            log_ = self._log
            assert log_ is not None
            if log_.failure is not None or log_.pending:
                return False
            log_.pending.append(b"".join(buf))
            log_.appended += len(buf)
            if not log_.write():
                return False
            self.sync()
            if log_.unsynced or log_.failure is not None:
                return False
            for mid in groups:
                for msg in groups[mid][2]:
                    msg.store_id = new_prefix | mid
            current.live += found
            current.published += found
        seg.live = 0
        log.info("compacted %s: %d live messages copied forward", seg.path, found)
        return True

    @staticmethod
    def _message_payload(mid: int, vhost: str, queues: list[str], msg: Any) -> bytes:
        n = len(queues)
        return b"".join(
            (
                _Q.pack(mid),
                r.sstr(vhost),
                bytes((n >> 8, n & 0xFF)),
                *(r.sstr(q) for q in queues),
                r.sstr(msg.exchange),
                r.sstr(msg.routing_key),
                r.lbytes(msg.header),
                r.lbytes(msg.body),
            )
        )

    def close(self) -> None:
        """Write and fsync what is left, release the files and the lock."""
        if self.pending:
            self.write()
        if self.needs_sync:
            self.sync()
        if self.pending or self.needs_sync:
            log.error("%s: records could not be written at shutdown (they were never confirmed)", self.path)
        self.abandon()

    def abandon(self) -> None:
        """Let go of the files and the lock without writing anything (what a kill -9 leaves)."""
        for f in (self._meta, self._log):
            if f is not None and f.fd >= 0:
                try:
                    self.files.close(f.fd)
                except OSError:
                    pass
                f.fd = -1
        self._meta = self._log = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
