"""No confirmed message is lost when the disk fails: a seeded random workload.

The broker core and a real DurableStore run over `FaultyFiles` (tests/faulty_files.py):
writes that stop halfway or fail with ENOSPC/EIO, fsyncs that fail (and may have lost
what they were given), truncates that fail, in phases from a healthy disk to one that
refuses everything. A driver plays the server's part (write once per round, fsync rounds
that may span several client operations, segment rolls). The client publishes persistent
messages with confirms and consumes some; now and then the broker dies, as a kill -9 (what
was written survives) or as a power loss (only what was fsynced survives, plus any prefix
of the rest). After every restart:

- every message the client saw confirmed and did not consume is in the queue;
- the queue is in publish order with no duplicates (a consumed message may come back only
  where it was: its ack may not have reached the disk);
- nothing is in it that was never published.

At the end the disk heals: everything still waiting gets written and confirmed.
No sockets, no event loop; thousands of cases run in seconds.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile

import pytest

from core_client import BasicProperties, Broker, ChannelClosed, CoreClient, spec
from faulty_files import FaultyFiles
from minimq.store import DurableStore

PERSISTENT = BasicProperties(delivery_mode=2)
CASES = int(os.environ.get("MINIMQ_STORE_FAULT_CASES", "2000"))
PER_TEST = 250


class Run:
    """One broker incarnation after another on one data dir, with a model of what must be there."""

    def __init__(self, path: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.path = path
        self.files = FaultyFiles(self.rng)
        self.segment_size = self.rng.choice((600, 4096, 1 << 20))
        self.published = 0  # seqs 1..published were sent
        self.confirmed: set[int] = set()
        self.consumed: set[int] = set()  # acked by the client (the ack may not be durable)
        self.store: DurableStore | None = None
        self.broker: Broker | None = None
        self.round = None  # a sync round begun and not yet finished
        self.restarts = 0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.files.enabled = False  # recovery itself runs on a working disk here
        store = DurableStore(self.path, segment_size=self.segment_size, files=self.files)
        recovered = store.recover()
        broker = Broker(store=store, clock=lambda: 1000.0)
        broker.restore(recovered)
        self.files.enabled = True
        self.store, self.broker = store, broker
        self.check_recovered()
        self.client = CoreClient(broker)
        self.pub_ch = 0
        self.tags: list[int] = []  # confirm tag n -> seq, for this channel
        self.last_got = 0
        self.open_publisher()

    def open_publisher(self) -> None:
        for _ in range(50):
            ch = self.client.channel()
            try:
                self.client.declare(ch, "q", durable=True)
            except ChannelClosed as exc:  # the disk refused the declaration
                assert exc.code == 506, exc
                self.drive()
                continue
            self.client.call(ch, spec.ConfirmSelect())
            self.pub_ch, self.tags = ch, []
            return
        self.files.set_rates(0)
        self.open_publisher()

    def crash(self) -> None:
        assert self.store is not None
        self.store.abandon()  # nothing more is written: the process is gone
        if self.rng.random() < 0.5:
            self.files.power_loss(self.path)
        self.store = self.broker = None
        self.round = None
        self.restarts += 1

    # ------------------------------------------------------------- the server's part

    def drive(self) -> None:
        store, broker = self.store, self.broker
        assert store is not None and broker is not None
        store.write()
        if self.round is not None and self.rng.random() < 0.6:
            store.sync_run(self.round)
            position = store.sync_end(self.round)
            self.round = None
            if position > store.synced:
                broker.synced(position)
        if self.round is None:
            if store.needs_roll:
                store.roll()
                position = store.durable_position()
                if position > store.synced:
                    broker.synced(position)
            if store.needs_sync and self.rng.random() < 0.8:
                self.round = store.sync_begin()
        self.collect()

    def collect(self) -> None:
        for item in self.client.drain(self.pub_ch):
            m = item.method
            if isinstance(m, spec.BasicAck):
                lo = m.delivery_tag if not m.multiple else 1
                for tag in range(lo, m.delivery_tag + 1):
                    self.confirmed.add(self.tags[tag - 1])
            else:
                assert not isinstance(m, spec.BasicNack), "a persistent publish was nacked"

    # ------------------------------------------------------------- the client's part

    def publish(self, n: int) -> None:
        bodies = []
        for _ in range(n):
            self.published += 1
            self.tags.append(self.published)
            bodies.append(b"%d" % self.published)
        self.client.publish_many(self.pub_ch, "", "q", bodies, properties=PERSISTENT)

    def consume(self) -> None:
        no_ack = self.rng.random() < 0.3
        got = self.client.get(self.pub_ch, "q", no_ack=no_ack)
        if got is None:
            return
        seq = int(got.body)
        assert seq > self.last_got, f"got {seq} after {self.last_got}: out of order"
        self.last_got = seq
        if not no_ack:
            self.client.ack(self.pub_ch, got.method.delivery_tag)
        self.consumed.add(seq)

    # ------------------------------------------------------------- the invariant

    def check_recovered(self) -> None:
        assert self.broker is not None
        q = self.broker.vhosts["/"].queues.get("q")
        seqs = [int(m.body) for m in q.ready] if q is not None else []
        assert seqs == sorted(set(seqs)), f"after restart {self.restarts}: out of order or duplicated: {seqs}"
        assert all(1 <= s <= self.published for s in seqs), f"never published: {seqs}"
        missing = sorted(self.confirmed - self.consumed - set(seqs))
        assert not missing, f"after restart {self.restarts}: confirmed messages lost: {missing}"

    def heal_and_settle(self) -> None:
        self.files.set_rates(0)
        for _ in range(20):
            self.drive()
            if self.round is None and not self.store.pending and not self.store.needs_sync:
                break
        if self.round is not None:
            self.drive()
            self.drive()
        unconfirmed = set(self.tags) - self.confirmed
        assert not unconfirmed, f"the disk healed but these were never confirmed: {sorted(unconfirmed)}"


def run_case(path: str, seed: int, steps: int = 60) -> Run:
    run = Run(path, seed)
    rng = run.rng
    run.files.set_rates(rng.choice((0.0, 0.05, 0.3)))
    run.start()
    for _ in range(steps):
        x = rng.random()
        if x < 0.08:
            run.files.set_rates(rng.choice((0.0, 0.0, 0.05, 0.3, 1.0)))
        elif x < 0.45:
            run.publish(rng.randint(1, 6))
        elif x < 0.6:
            run.consume()
        elif x < 0.64:
            run.crash()
            run.start()
            continue
        run.drive()
    run.heal_and_settle()
    run.crash()
    run.start()  # one last restart: still everything
    run.store.close()
    return run


@pytest.fixture
def scratch():
    """A scratch dir in memory when the machine has /dev/shm (three times faster here)."""
    shm = "/dev/shm"
    d = tempfile.mkdtemp(prefix="minimq-faults-", dir=shm if os.access(shm, os.W_OK) else None)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("block", range(max(1, CASES // PER_TEST)))
def test_random_faults_never_lose_a_confirmed_message(scratch, block, caplog):
    caplog.set_level(logging.CRITICAL, logger="minimq")
    faults = restarts = confirmed = 0
    for i in range(PER_TEST):
        seed = block * PER_TEST + i
        path = os.path.join(scratch, f"case{seed}")
        try:
            run = run_case(path, seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from None
        shutil.rmtree(path)
        faults += run.files.faults
        restarts += run.restarts
        confirmed += len(run.confirmed)
    # The workload did what it is for: faults struck, brokers died, messages got through.
    assert faults > PER_TEST and restarts > PER_TEST and confirmed > PER_TEST * 10
