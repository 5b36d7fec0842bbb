"""Publisher confirms (and tx.commit-ok) wait for the fsync; concurrent publishers share fsyncs.

The broker runs under a small wrapper (durable_support._WRAPPER) that counts os.fsync calls
and can hold the group-commit worker's fsyncs on a pipe the test controls: "the disk" is
stuck until the test writes to the pipe. minimq keeps no fsync counter of its own.
"""
from __future__ import annotations

import socket
import threading

import pika

from minimq.codec import BasicProperties

from .durable_support import Publisher, message_count, read_queue

TRANSIENT = BasicProperties(delivery_mode=1)


def _no_confirm_within(pub: Publisher, seconds: float) -> bool:
    """True when nothing confirms pub's publishes for `seconds` (a bounded read that should time out)."""
    before = pub.acked_upto
    try:
        while pub._read(seconds):
            if pub.acked_upto != before:
                return False
    except socket.timeout:
        return True
    return False


def test_confirm_only_after_fsync(make_broker):
    broker = make_broker(gate_fsync=True)
    pub = Publisher(broker.port)
    pub.confirm_select()
    pub.declare("q")
    pub.sock.sendall(pub.message("", "q", b"persistent"))
    pub.published = 1
    assert _no_confirm_within(pub, 0.7), "confirm sent before the fsync completed"
    # A transient message (and a persistent one to a transient queue) need no disk: their
    # confirms are not held back by the stuck fsync.
    other = Publisher(broker.port)
    other.confirm_select()
    other.declare("t", durable=False)
    other.publish_confirmed("", "q", 1, props=TRANSIENT)
    other.publish_confirmed("", "t", 1)
    assert other.acked_upto == 2
    assert pub.acked_upto == 0
    broker.open_gate(1000)
    pub.publish_confirmed("", "q", 0)  # waits for the outstanding confirm
    assert pub.acked_upto == 1
    pub.close()
    other.close()


def test_tx_commit_ok_only_after_fsync(make_broker):
    broker = make_broker(gate_fsync=True)
    conn = broker.pika()
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.tx_select()
    ch.basic_publish("", "q", b"in-tx", pika.BasicProperties(delivery_mode=2))
    done = threading.Event()
    failed: list[BaseException] = []

    def commit() -> None:
        try:
            ch.tx_commit()
        except BaseException as exc:  # pragma: no cover - reported below
            failed.append(exc)
        done.set()

    t = threading.Thread(target=commit)
    t.start()
    assert not done.wait(0.7), "tx.commit-ok sent before the fsync completed"
    broker.open_gate(1000)
    assert done.wait(10), "tx.commit-ok never came after the fsync"
    t.join(5)
    assert not failed, failed
    broker.close_gate_for_good()
    assert message_count(broker.pika(), "q") == 1


def test_group_commit_concurrent_publishers_share_fsyncs(make_broker):
    n_pub, per = 4, 1250
    broker = make_broker(count_fsyncs=True)
    setup = Publisher(broker.port)
    for i in range(n_pub):
        setup.declare(f"g{i}")
    setup.close()
    errors: list[BaseException] = []
    pubs = [Publisher(broker.port) for _ in range(n_pub)]

    def run(i: int) -> None:
        try:
            pubs[i].confirm_select()
            pubs[i].publish_confirmed("", f"g{i}", per, window=64, batch=16,
                                      body=lambda s: b"%d" % s + b"x" * 96)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_pub)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(p.acked_upto == per for p in pubs)
    for p in pubs:
        p.close()
    assert broker.stop() == 0
    total, worker = broker.fsyncs()
    messages = n_pub * per
    print(f"group commit: {messages} confirmed persistent messages, {worker} fsyncs by the "
          f"commit worker, {total} fsyncs in all ({messages / max(worker, 1):.1f} messages per fsync)")
    assert worker <= messages / 10, f"{worker} fsyncs for {messages} messages: no group commit"
    broker.start()
    conn = broker.pika()
    for i in range(n_pub):
        got = read_queue(conn, f"g{i}")
        assert [int(g.body[:-96]) for g in got] == list(range(1, per + 1))
    conn.close()
