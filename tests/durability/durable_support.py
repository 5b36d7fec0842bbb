"""Helpers for the durability tests: a broker process on a data dir, a pipelined publisher.

`DurableBroker` runs `python -m minimq --port 0 --data-dir DIR` with its log in a file (so a
test can read what recovery said), and can restart, SIGTERM or SIGKILL it. Optionally the
broker runs under a small wrapper that counts os.fsync calls (written to a file at exit)
and/or gates the fsync worker thread on a pipe the test controls, so a test can hold back
"the disk" and watch publisher confirms wait for it.

`Publisher` is a blocking, pipelined publisher with confirms over a raw socket (built on
minimq.codec): it keeps up to `window` messages in flight and records which sequence
numbers the broker confirmed. When the broker is killed it reads the socket to EOF, so
every confirm the broker sent before it died is counted.

Every wait here is on an event (a pipe or socket read, a process exit) with a timeout.
"""
from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from minimq.codec import (
    PROTOCOL_HEADER,
    BasicProperties,
    FrameParser,
    decode_method,
    encode_content_frames,
    encode_content_header,
    encode_method_frame,
    spec,
)

ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"listening on amqp://([\w.\-]+):(\d+)")

# Runs the broker exactly as `python -m minimq` does, after patching os.fsync to count calls
# (and, with a gate fd, to make the fsync worker thread wait for one byte per fsync).
_WRAPPER = r"""
import atexit, os, sys, threading
_real_fsync = os.fsync
_count = {"all": 0, "worker": 0}
_gate = int(os.environ.get("MINIMQ_TEST_FSYNC_GATE", "-1"))
_out = os.environ.get("MINIMQ_TEST_FSYNC_COUNT")
def _fsync(fd):
    worker = threading.current_thread().name.startswith("minimq-fsync")
    if worker and _gate >= 0:
        os.read(_gate, 1)
    _count["all"] += 1
    if worker:
        _count["worker"] += 1
    return _real_fsync(fd)
os.fsync = _fsync
_faults = os.environ.get("MINIMQ_TEST_FAULTS")
if _faults:  # "seed:p": the store's file layer fails message-log writes/fsyncs at random (tests/faulty_files.py)
    import random
    import minimq.store.files
    from faulty_files import FaultyFiles
    _seed, _p = _faults.split(":")
    minimq.store.files.default = FaultyFiles(random.Random(int(_seed)), only="msgs-")
    minimq.store.files.default.set_rates(float(_p))
def _report():
    if _out:
        with open(_out, "w") as f:
            f.write("%d %d\n" % (_count["all"], _count["worker"]))
atexit.register(_report)
from minimq.cli import main
sys.argv[0] = "minimq"
code = main(sys.argv[1:])
_report()
sys.exit(code)
"""


class BrokerFailed(RuntimeError):
    pass


class DurableBroker:
    """A minimq process on one data dir; restartable."""

    def __init__(self, data_dir: str | os.PathLike, *, log_level: str = "info", count_fsyncs: bool = False,
                 gate_fsync: bool = False, extra: tuple[str, ...] = (), faults: str | None = None) -> None:
        self.data_dir = str(data_dir)
        self.log_level = log_level
        self.faults = faults  # "seed:p" for a store whose file layer fails at random
        self.count_fsyncs = count_fsyncs or gate_fsync or faults is not None
        self.gate_fsync = gate_fsync
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0
        self.log_path = ""
        self.count_path = ""
        self._gate_w = -1

    # -------------------------------------------------------------- lifecycle

    def command(self) -> list[str]:
        args = ["--port", "0", "--log-level", self.log_level, "--data-dir", self.data_dir, *self.extra]
        if self.count_fsyncs:
            return [sys.executable, "-c", _WRAPPER, *args]
        return [sys.executable, "-m", "minimq", *args]

    def start(self, timeout: float = 20.0) -> "DurableBroker":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = os.path.join(self.data_dir + ".logs", f"broker-{self.starts}.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.count_path = self.log_path[:-4] + ".fsyncs"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MINIMQ_DATA_DIR", None)
        env.pop("MINIMQ_TEST_FAULTS", None)
        if self.faults:
            env["MINIMQ_TEST_FAULTS"] = self.faults
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests"), env.get("PYTHONPATH")) if p)
        pass_fds: tuple[int, ...] = ()
        if self.count_fsyncs:
            env["MINIMQ_TEST_FSYNC_COUNT"] = self.count_path
        gate_r = -1
        if self.gate_fsync:
            gate_r, self._gate_w = os.pipe()
            env["MINIMQ_TEST_FSYNC_GATE"] = str(gate_r)
            pass_fds = (gate_r,)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=env, pass_fds=pass_fds,
            )
        if gate_r >= 0:
            os.close(gate_r)
        line = read_line(self.proc, timeout)
        m = LISTEN_RE.search(line)
        if not m:
            self.kill()
            raise BrokerFailed(f"broker did not start: {line!r}\nlog:\n{self.log()}")
        self.port = int(m.group(2))
        return self

    def open_gate(self, n: int = 1) -> None:
        """Let n more fsyncs of the worker thread through."""
        os.write(self._gate_w, b"x" * n)

    def close_gate_for_good(self) -> None:
        if self._gate_w >= 0:
            os.close(self._gate_w)  # reads now return EOF at once: no more gating
            self._gate_w = -1

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait for the exit."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.close_gate_for_good()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise BrokerFailed(f"broker did not stop on SIGTERM\nlog:\n{self.log()}")

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._gate_w >= 0:
            os.close(self._gate_w)
            self._gate_w = -1

    def restart(self, *, kill: bool = False) -> "DurableBroker":
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    @contextlib.contextmanager
    def watchdog(self, seconds: float, what: str):
        """Fail (instead of hanging) when the block takes longer than `seconds`.

        The broker is killed when time runs out, which unblocks any client waiting on it
        (a pika call waiting for a confirm has no timeout of its own).
        """
        fired = threading.Event()
        proc = self.proc

        def fire() -> None:
            fired.set()
            if proc is not None and proc.poll() is None:
                proc.kill()

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except BaseException as exc:
            if fired.is_set():
                raise AssertionError(f"{what}: no answer within {seconds}s (broker killed)") from exc
            raise
        finally:
            timer.cancel()
        if fired.is_set():
            raise AssertionError(f"{what}: no answer within {seconds}s (broker killed)")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def fsyncs(self) -> tuple[int, int]:
        """(all fsyncs, fsyncs by the group-commit worker) of the last run (after it exited)."""
        with open(self.count_path) as f:
            a, w = f.read().split()
        return int(a), int(w)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def pika(self):
        import pika

        params = pika.URLParameters(self.url + "?heartbeat=0&blocked_connection_timeout=30")
        return pika.BlockingConnection(params)

    def __enter__(self) -> "DurableBroker":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of `proc`, read from the pipe with a deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            if not sel.select(timeout):
                proc.kill()
                proc.wait(10)
                raise BrokerFailed(f"no banner within {timeout}s; stdout so far {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(10)
                return data.decode(errors="replace")
            data += chunk
    return data.partition(b"\n")[0].decode()


# ------------------------------------------------------------------ raw publisher


PERSISTENT = BasicProperties(delivery_mode=2)


class Publisher:
    """A blocking pipelined publisher with confirms on one connection and channel."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0,
                 capabilities: dict | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.parser = FrameParser(0)
        self.inbox: list[tuple[int, object]] = []
        self.acked_upto = 0  # every seq <= this is confirmed
        self.singles: set[int] = set()  # confirmed above acked_upto
        self.nacked: set[int] = set()
        self.published = 0
        self.eof = False
        self.frame_max = 131072
        self._content: list = []
        self._remaining = 0
        self.sock.sendall(PROTOCOL_HEADER)
        self._expect(0, spec.ConnectionStart)
        props: dict = {"product": "durability-test"}
        if capabilities:
            props["capabilities"] = capabilities
        self._send(0, spec.ConnectionStartOk(props, "PLAIN", b"\0guest\0guest", "en_US"))
        tune = self._expect(0, spec.ConnectionTune)
        self.frame_max = tune.frame_max or 131072
        self._send(0, spec.ConnectionTuneOk(tune.channel_max, self.frame_max, 0))
        self._send(0, spec.ConnectionOpen("/", "", False))
        self._expect(0, spec.ConnectionOpenOk)
        self._send(1, spec.ChannelOpen(""))
        self._expect(1, spec.ChannelOpenOk)

    def _send(self, ch: int, method) -> None:
        self.sock.sendall(encode_method_frame(ch, method))

    def _read(self, timeout: float) -> bool:
        """Read once (waiting up to timeout); False at EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        for ftype, ch, payload in self.parser.feed(data):
            if ftype == 2:
                self._content = [self._content[0], bytes(payload), b""]
                self._remaining = int.from_bytes(payload[4:12], "big")
                if not self._remaining:
                    self.inbox.append((ch, tuple(self._content)))
                continue
            if ftype == 3:
                self._content[2] += bytes(payload)
                self._remaining -= len(payload)
                if self._remaining <= 0:
                    self.inbox.append((ch, tuple(self._content)))
                continue
            if ftype != 1:
                continue
            m = decode_method(payload)
            if isinstance(m, (spec.BasicGetOk, spec.BasicDeliver)):
                self._content = [m, b"", b""]
                continue
            if isinstance(m, spec.BasicAck):
                self._confirm(m.delivery_tag, m.multiple)
            elif isinstance(m, spec.BasicNack):
                lo = self.acked_upto + 1 if m.multiple else m.delivery_tag
                self.nacked.update(range(lo, m.delivery_tag + 1))
                self._confirm(m.delivery_tag, m.multiple)
            else:
                self.inbox.append((ch, m))
        return True

    def _confirm(self, tag: int, multiple: bool) -> None:
        if multiple:
            if tag > self.acked_upto:
                self.acked_upto = tag
                self.singles = {t for t in self.singles if t > tag}
        elif tag > self.acked_upto:
            self.singles.add(tag)
        while self.acked_upto + 1 in self.singles:
            self.acked_upto += 1
            self.singles.discard(self.acked_upto)

    def _expect(self, ch: int, cls):
        while True:
            for i, (c, m) in enumerate(self.inbox):
                if c == ch:
                    del self.inbox[i]
                    if isinstance(m, (spec.ChannelClose, spec.ConnectionClose)):
                        raise BrokerFailed(f"closed: {m.reply_code} {m.reply_text}")
                    assert isinstance(m, cls), (m, cls)
                    return m
            if not self._read(self.timeout):
                raise EOFError("connection closed by the broker")

    def call(self, method):
        self._send(1, method)
        return self._expect(1, method.RESPONSES)

    def get(self, queue: str, no_ack: bool = True):
        """basic.get: (get-ok method, raw content header payload, body), or None if empty."""
        self._send(1, spec.BasicGet(0, queue, no_ack))
        while True:
            for i, (c, m) in enumerate(self.inbox):
                if c == 1 and isinstance(m, (tuple, spec.BasicGetEmpty, spec.ChannelClose)):
                    del self.inbox[i]
                    if isinstance(m, spec.ChannelClose):
                        raise BrokerFailed(f"closed: {m.reply_code} {m.reply_text}")
                    return None if isinstance(m, spec.BasicGetEmpty) else m
            if not self._read(self.timeout):
                raise EOFError("connection closed by the broker")

    def confirm_select(self) -> None:
        self.call(spec.ConfirmSelect(False))

    def declare(self, queue: str, durable: bool = True, arguments: dict | None = None) -> None:
        self.call(spec.QueueDeclare(0, queue, False, durable, False, False, False, arguments))

    @property
    def confirmed(self) -> set[int]:
        return set(range(1, self.acked_upto + 1)) | self.singles

    def message(self, exchange: str, routing_key: str, body: bytes, props: BasicProperties = PERSISTENT) -> bytes:
        header = encode_content_header(len(body), props)
        return encode_method_frame(1, spec.BasicPublish(0, exchange, routing_key, False, False)) + b"".join(
            encode_content_frames(1, header, body, self.frame_max)
        )

    def publish_confirmed(self, exchange: str, routing_key: str, n: int, *, window: int = 64, batch: int = 16,
                          body=lambda seq: b"%d" % seq, stop: threading.Event | None = None,
                          props: BasicProperties = PERSISTENT) -> None:
        """Publish up to n messages (body(seq)), at most `window` unconfirmed, until done or EOF.

        Returns once every publish is confirmed, the broker went away (EOF), or `stop` is set.
        """
        target = self.published + n
        while self.acked_upto < target and not self.eof:
            if stop is not None and stop.is_set():
                return
            room = window - (self.published - self.acked_upto)
            if room > 0 and self.published < target:
                k = min(room, batch, target - self.published)
                frames = []
                for _ in range(k):
                    self.published += 1
                    frames.append(self.message(exchange, routing_key, body(self.published), props))
                try:
                    self.sock.sendall(b"".join(frames))
                except OSError:
                    self.published -= k  # may or may not have arrived: they were never confirmed
                    self.drain()
                    return
                continue
            try:
                if not self._read(self.timeout):
                    return
            except socket.timeout:
                raise TimeoutError(f"no confirm for {self.timeout}s: {self.acked_upto}/{self.published}")

    def drain(self) -> None:
        """Read to EOF (after the broker died): collect every confirm it sent."""
        try:
            while self._read(self.timeout):
                pass
        except (socket.timeout, OSError):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ reading back


@dataclass
class Got:
    body: bytes
    redelivered: bool
    properties: object = None
    delivery_tag: int = 0


def read_queue(conn, queue: str, *, ack: bool = True, timeout: float = 30.0) -> list[Got]:
    """Everything in `queue` (its count by passive declare), consumed in order.

    With ack=False the messages are left unacked on a channel that is then closed, which
    puts them back (redelivered) in their places.
    """
    ch = conn.channel()
    count = ch.queue_declare(queue, passive=True).method.message_count
    out: list[Got] = []
    if count:
        ch.basic_qos(prefetch_count=min(count, 1000))
        for method, props, body in ch.consume(queue, auto_ack=False, inactivity_timeout=timeout):
            if method is None:
                raise TimeoutError(f"{queue}: got {len(out)} of {count} messages in {timeout}s")
            out.append(Got(body, method.redelivered, props, method.delivery_tag))
            if ack and (len(out) % 500 == 0 or len(out) == count):
                ch.basic_ack(method.delivery_tag, multiple=True)
            if len(out) == count:
                break
        ch.cancel()
    left = ch.queue_declare(queue, passive=True).method.message_count
    if ack:
        assert left == 0, f"{queue}: {left} messages arrived after the count was taken"
    ch.close()
    return out


def message_count(conn, queue: str) -> int:
    ch = conn.channel()
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    finally:
        ch.close()


def exists(conn, *, queue: str | None = None, exchange: str | None = None) -> bool:
    import pika.exceptions

    ch = conn.channel()
    try:
        if queue is not None:
            ch.queue_declare(queue, passive=True)
        else:
            ch.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404, exc
        return False
    ch.close()
    return True


def segments(data_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(data_dir).glob("msgs-*.log"))


def bodies(items: list[Got]) -> list[bytes]:
    return [g.body for g in items]
