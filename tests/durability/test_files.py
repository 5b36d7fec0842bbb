"""Torn and corrupted store files: the broker starts, says what it cut or skipped, keeps the rest."""
from __future__ import annotations

import os
import re

import pika

from minimq.store import records as r

from .durable_support import bodies, exists, message_count, read_queue, segments

P = pika.BasicProperties(delivery_mode=2)


def fill(broker, n: int = 20) -> None:
    conn = broker.pika()
    ch = conn.channel()
    ch.exchange_declare("x", "direct", durable=True)
    ch.queue_declare("q", durable=True)
    ch.queue_declare("other", durable=True)
    ch.queue_bind("q", "x", "k")
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("x", "k", b"m%02d" % i, P)
    conn.close()
    assert broker.stop() == 0


def message_records(data_dir) -> tuple[str, list[tuple[int, int]]]:
    """(segment path, [(offset, size)] of its MESSAGE records) for the segment holding them."""
    for path in segments(data_dir):
        with open(path, "rb") as f:
            data = f.read()
        found = []
        report = r.ScanReport(str(path))
        for off, rtype, payload in r.scan(data, report):
            if rtype == r.MESSAGE:
                found.append((off, r.HEADER_SIZE + 1 + len(payload)))
        if found:
            return str(path), found
    raise AssertionError("no message segment")


def test_torn_last_record_is_cut_off(broker, data_dir):
    fill(broker)
    path, recs = message_records(data_dir)
    off, size = recs[-1]
    assert off + size == os.path.getsize(path), "the last message is the last record"
    with open(path, "r+b") as f:
        f.truncate(off + size // 2)
    broker.start()
    log = broker.log()
    assert f"{path}: torn record at offset {off} cut off ({size // 2} bytes)" in log, log
    assert " ERROR " not in log, log
    conn = broker.pika()
    assert bodies(read_queue(conn, "q", ack=False)) == [b"m%02d" % i for i in range(19)]
    conn.close()
    assert os.path.getsize(path) == off
    broker.restart()
    assert "torn record" not in broker.log()  # cut for good
    conn = broker.pika()
    assert message_count(conn, "q") == 19
    conn.close()


def test_torn_header_and_zero_tail_are_cut_off(broker, data_dir):
    fill(broker, 5)
    path, recs = message_records(data_dir)
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01")  # a record header cut short
    broker.start()
    conn = broker.pika()
    assert message_count(conn, "q") == 5
    conn.close()
    broker.stop()
    with open(path, "ab") as f:
        f.write(b"\x00" * 4096)  # a zero-filled tail
    broker.start()
    conn = broker.pika()
    assert message_count(conn, "q") == 5
    conn.close()


def test_corrupt_record_in_the_middle_is_skipped_and_reported(broker, data_dir):
    fill(broker)
    path, recs = message_records(data_dir)
    off, size = recs[10]
    with open(path, "r+b") as f:
        f.seek(off + size - 3)  # inside the body
        f.write(b"\xde\xad")
    broker.start()
    log = broker.log()
    m = re.search(r"ERROR minimq\.store: (\S+): corrupt data at offset (\d+): skipped (\d+) bytes", log)
    assert m, log
    assert (m.group(1), int(m.group(2)), int(m.group(3))) == (path, off, size)
    conn = broker.pika()
    assert bodies(read_queue(conn, "q", ack=False)) == [b"m%02d" % i for i in range(20) if i != 10]
    conn.close()
    # It keeps starting (and keeps saying so while the damaged segment is around).
    broker.restart()
    conn = broker.pika()
    assert message_count(conn, "q") == 19
    conn.close()


def test_corrupt_length_field_in_the_middle(broker, data_dir):
    fill(broker)
    path, recs = message_records(data_dir)
    off, size = recs[5]
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(b"\x7f\xff\xff\xff")  # a length running far past the end of the file
    broker.start()
    assert re.search(rf"{re.escape(path)}: corrupt data at offset {off}: skipped {size} bytes", broker.log())
    conn = broker.pika()
    assert bodies(read_queue(conn, "q", ack=False)) == [b"m%02d" % i for i in range(20) if i != 5]
    conn.close()


def test_garbage_appended_to_meta_log(broker, data_dir):
    fill(broker, 3)
    with open(data_dir / "meta.log", "ab") as f:
        f.write(os.urandom(37) + b"\xff" * 100)
    broker.start()
    conn = broker.pika()
    assert exists(conn, exchange="x") and exists(conn, queue="other")
    assert message_count(conn, "q") == 3
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("x", "k", b"after", P)  # the binding is there
    conn.close()
    broker.restart(kill=True)
    conn = broker.pika()
    assert bodies(read_queue(conn, "q")) == [b"m00", b"m01", b"m02", b"after"]
    conn.close()


def test_corrupt_record_in_meta_log(broker, data_dir):
    fill(broker, 3)
    meta = data_dir / "meta.log"
    data = bytearray(meta.read_bytes())
    report = r.ScanReport(str(meta))
    recs = [(off, rtype, payload) for off, rtype, payload in r.scan(bytes(data), report)]
    # damage the record of queue "other" (not the last record)
    off, _t, payload = next(x for x in recs if x[1] == r.QUEUE and b"other" in x[2])
    assert off != recs[-1][0]
    data[off + r.HEADER_SIZE + 3] ^= 0xFF
    meta.write_bytes(bytes(data))
    broker.start()
    assert re.search(r"meta\.log: corrupt data at offset \d+: skipped \d+ bytes", broker.log())
    conn = broker.pika()
    assert exists(conn, queue="q") and exists(conn, exchange="x")
    assert not exists(conn, queue="other")
    assert message_count(conn, "q") == 3
    conn.close()


def test_unknown_files_and_empty_segment_do_not_stop_startup(broker, data_dir):
    fill(broker, 2)
    (data_dir / "README.txt").write_text("not ours")
    last = segments(data_dir)[-1]
    number = int(last.name[5:-4]) + 1
    (data_dir / f"msgs-{number:08d}.log").write_bytes(b"")
    broker.start()
    conn = broker.pika()
    assert message_count(conn, "q") == 2
    conn.close()
