"""kill -9 at a random moment loses no confirmed message and never breaks the store.

Each round: restart the broker on the same data dir, start publishers (pipelined, confirms)
and a consumer, wait for the first confirm, let them run for a random while (seeded RNG: the
fault injection), SIGKILL the broker, restart it, and check every queue:

* every confirmed persistent message is there exactly once (a consumer's ack that was sent
  may or may not have been applied: such a message may be there too),
* sequence numbers strictly increase (no duplicate, no reordering),
* no transient message survived, nothing appears that was never published,
* the queues verified in earlier rounds (deleted after their check) stay deleted.

Three rounds run in the default suite; `-m stress` runs 30 more.
"""
from __future__ import annotations

import random
import subprocess
import threading
from dataclasses import dataclass, field

import pika
import pytest

from minimq.codec import BasicProperties

from .durable_support import ROOT, DurableBroker, Publisher, exists, read_queue

SEED = 20261126
PERSISTENT = BasicProperties(delivery_mode=2)
TRANSIENT = BasicProperties(delivery_mode=1)


@dataclass
class Stream:
    """One publisher's view: what it published and what the broker confirmed."""

    name: str
    published: int = 0
    confirmed: set[int] = field(default_factory=set)
    transient: set[int] = field(default_factory=set)
    first_confirm: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def _publisher(port: int, exchange: str, routing_key: str, stream: Stream, stop: threading.Event,
               transient_every: int = 0) -> None:
    try:
        pub = Publisher(port)
        pub.confirm_select()
    except BaseException as exc:  # the broker died before we got going
        stream.error = exc
        stream.first_confirm.set()
        return
    try:
        while not stop.is_set() and not pub.eof and pub.published < 200_000:
            seq = pub.published + 1
            props = TRANSIENT if transient_every and seq % transient_every == 0 else PERSISTENT
            if props is TRANSIENT:
                stream.transient.add(seq)
            pub.publish_confirmed(exchange, routing_key, 1 if props is TRANSIENT else 16, window=48, batch=16,
                                  body=lambda s, name=stream.name: b"%s:%d" % (name.encode(), s), stop=stop,
                                  props=props)
            if pub.acked_upto:
                stream.first_confirm.set()
        pub.drain()
    except (TimeoutError, OSError, EOFError):
        pass
    finally:
        stream.published = pub.published
        stream.confirmed = pub.confirmed - pub.nacked
        stream.first_confirm.set()
        pub.close()


def _consumer(url: str, queue: str, acked: set[int], stop: threading.Event) -> None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url + "?heartbeat=0"))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        n = 0
        for method, _props, body in ch.consume(queue, auto_ack=False, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is None:
                continue
            n += 1
            if n % 3:  # ack two of three; the rest stay unacked (come back redelivered)
                acked.add(int(body.rsplit(b":", 1)[1]))
                ch.basic_ack(method.delivery_tag)
    except Exception:
        pass  # the broker was killed


def _check(got, stream: Stream, *, consumer_acked: set[int] = frozenset()) -> int:
    seqs = [int(g.body.rsplit(b":", 1)[1]) for g in got]
    assert all(g.body.startswith(stream.name.encode() + b":") for g in got)
    dups = sorted({s for s in seqs if seqs.count(s) > 1}) if len(set(seqs)) != len(seqs) else []
    assert not dups, f"{stream.name}: duplicated after kill -9: {dups[:20]}"
    assert seqs == sorted(seqs), f"{stream.name}: reordered after kill -9"
    present = set(seqs)
    lost = sorted(stream.confirmed - stream.transient - consumer_acked - present)
    assert not lost, f"{stream.name}: {len(lost)} confirmed messages lost, e.g. {lost[:20]}"
    assert not present & stream.transient, f"{stream.name}: transient messages survived a restart"
    assert not present - set(range(1, stream.published + 1)), f"{stream.name}: never-published messages"
    return len(stream.confirmed)


def run_rounds(data_dir, rounds: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    broker = DurableBroker(data_dir, log_level="warning")
    confirmed_per_round = []
    try:
        broker.start()
        conn = broker.pika()
        ch = conn.channel()
        ch.exchange_declare("fan", "fanout", durable=True)
        conn.close()
        old_queues: list[str] = []
        for rnd in range(rounds):
            a, f1, f2, c = (f"{p}{rnd}" for p in ("A", "F1-", "F2-", "C"))
            conn = broker.pika()
            ch = conn.channel()
            for q in (a, f1, f2, c):
                ch.queue_declare(q, durable=True)
            ch.queue_bind(f1, "fan")
            ch.queue_bind(f2, "fan")
            conn.close()
            stop = threading.Event()
            sa, sf, sc = Stream(a), Stream("fan"), Stream(c)
            acked: set[int] = set()
            threads = [
                threading.Thread(target=_publisher, args=(broker.port, "", a, sa, stop, 7)),
                threading.Thread(target=_publisher, args=(broker.port, "fan", "", sf, stop)),
                threading.Thread(target=_publisher, args=(broker.port, "", c, sc, stop)),
                threading.Thread(target=_consumer, args=(broker.url, c, acked, stop)),
            ]
            for t in threads:
                t.start()
            # The fault: a random moment once confirms are flowing.
            for s in (sa, sf, sc):
                assert s.first_confirm.wait(15), f"round {rnd}: no publisher confirm within 15s"
            stop.wait(rng.uniform(0.0, 0.5))
            broker.kill()
            stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a client thread did not notice the kill"
            for s in (sa, sf, sc):
                assert s.error is None, f"round {rnd}: {s.name} failed: {s.error!r}"
                assert s.confirmed, f"round {rnd}: {s.name}: no publish confirmed after restart #{rnd}"
            broker.start()
            conn = broker.pika()
            for q in old_queues:
                assert not exists(conn, queue=q), f"round {rnd}: queue {q} (deleted, synced) came back"
            n = _check(read_queue(conn, a), sa)
            _check(read_queue(conn, f1), sf)
            _check(read_queue(conn, f2), sf)
            _check(read_queue(conn, c), sc, consumer_acked=acked)
            ch = conn.channel()
            for q in (a, f1, f2, c):
                ch.queue_delete(q)
            old_queues += [a, f1, f2, c]
            conn.close()
            confirmed_per_round.append(n)
    finally:
        broker.kill()
    return confirmed_per_round


def test_kill9_loses_no_confirmed_message(data_dir):
    counts = run_rounds(data_dir, 3, SEED)
    assert len(counts) == 3


@pytest.mark.stress
@pytest.mark.parametrize("block", range(3))
def test_kill9_stress(tmp_path, block):
    counts = run_rounds(tmp_path / f"data{block}", 10, SEED + 1000 * (block + 1))
    assert len(counts) == 10


# ------------------------------------------------------------------ the LOCK file


def test_stale_lock_from_killed_broker_does_not_block_restart(make_broker, data_dir):
    b = make_broker()
    assert (data_dir / "LOCK").exists()
    b.kill()
    assert (data_dir / "LOCK").exists()  # left behind; flock died with the process
    b.start()
    conn = b.pika()
    conn.close()


def test_second_broker_on_same_dir_refused(make_broker, data_dir):
    first = make_broker()
    second = DurableBroker(data_dir, log_level="warning")
    proc = subprocess.run(second.command(), capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode != 0
    assert "in use by another broker" in proc.stderr
    assert "listening" not in proc.stdout
    # the first one is unharmed
    conn = first.pika()
    conn.close()
