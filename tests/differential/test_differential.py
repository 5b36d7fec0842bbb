"""Differential tier: random operation sequences, in lockstep, on minimq and a real RabbitMQ.

Each seed generates a sequence over two connections and three channels each (declare, bind,
unbind and delete queues and exchanges with edge-case names, flags and arguments, missing
entities, publish with and without mandatory, get, consume, cancel, ack/nack/reject with
multiple and bad tags, recover, qos, purge, tx, confirm, channel and connection close). Every
observable is compared after every step: reply methods with their fields (codes, texts, message
and consumer counts), deliveries with their redelivered flag and content, returns, confirms,
closes. The first divergence is shrunk to a minimal sequence and printed with the command that
replays it.

Where to point it: MINIMQ_DIFF_URL=amqp://guest:guest@127.0.0.1:5672/ (any RabbitMQ; `.ci/run`
starts a private node with tests/differential/private_rabbitmq.sh). Runs at the same time on
one RabbitMQ need a vhost each (amqp://guest:guest@127.0.0.1:5672/diff-a): the amq.*
exchanges are shared within a vhost, and one run's bindings to them route the other's
publishes. Budget: MINIMQ_DIFF_SEEDS
(default 30) seeds from MINIMQ_DIFF_SEED_BASE (default 0), MINIMQ_DIFF_LENGTH operations each
(default 40); a longer budget finds more. Replay one sequence: MINIMQ_DIFF_REPLAY='[...]'.
"""
from __future__ import annotations

import ast
import os

import pytest

from conftest import start_broker

from .engine import generate, reachable, run_lockstep, shrink

DIFF_URL = os.environ.get("MINIMQ_DIFF_URL", "")
SEEDS = int(os.environ.get("MINIMQ_DIFF_SEEDS", "30"))
SEED_BASE = int(os.environ.get("MINIMQ_DIFF_SEED_BASE", "0"))
LENGTH = int(os.environ.get("MINIMQ_DIFF_LENGTH", "40"))

# Where minimq deliberately differs from RabbitMQ 3.10, in one place (README, "Where minimq
# knowingly differs", argues each). Each entry rewrites what one side observed before the
# comparison; keep it empty unless a difference is a decision, not a bug.
_CONFIRMS = ("BasicAck(", "BasicNack(")  # from the broker, only publisher confirms


def confirms_apart(op: tuple, observed: dict) -> dict:
    """Publisher confirms are compared as a stream of their own on each channel, not for
    their place among the channel's deliveries. RabbitMQ's queue confirms a transient
    message before it hands it on, so a publisher consuming its own messages on the same
    channel sees basic.ack, then basic.deliver; minimq sends the confirms of what one read
    brought after routing all of it (one basic.ack, multiple), which keeps confirm mode
    cheap. Confirms of persistent messages come after the deliveries on both."""
    out: dict = {}
    for key, frames in observed.items():
        confirms = [f for f in frames if f.startswith(_CONFIRMS)]
        rest = [f for f in frames if not f.startswith(_CONFIRMS)]
        if rest:
            out[key] = rest
        if confirms:
            out[(*key, "confirms")] = confirms
    return out


KNOWN_DIFFERENCES: list = [confirms_apart]


def allow(op: tuple, observed: dict) -> dict:
    for rewrite in KNOWN_DIFFERENCES:
        observed = rewrite(op, observed)
    return observed


@pytest.fixture(scope="module")
def rabbit_url() -> str:
    if not DIFF_URL:
        if os.environ.get("CI"):
            pytest.fail("MINIMQ_DIFF_URL is not set: .ci/run starts a private RabbitMQ for this tier")
        pytest.skip("set MINIMQ_DIFF_URL to a RabbitMQ (e.g. amqp://guest:guest@127.0.0.1:5672/)")
    assert reachable(DIFF_URL), f"no RabbitMQ at {DIFF_URL}"
    return DIFF_URL


@pytest.fixture(scope="module")
def minimq_url():
    b = start_broker()
    try:
        yield b.url
    finally:
        b.stop()


def report(ops: list[tuple], minimq_url: str, rabbit_url: str, first) -> str:
    minimal = shrink(ops, lambda cand: run_lockstep(cand, minimq_url, rabbit_url, allow) is not None)
    again = run_lockstep(minimal, minimq_url, rabbit_url, allow) or first
    return (
        f"minimq (A) and RabbitMQ (B) diverge.\n{again.describe()}\n\n"
        f"minimal sequence ({len(minimal)} of {len(ops)} operations):\n  {minimal!r}\n\n"
        f"replay: MINIMQ_DIFF_URL={rabbit_url} MINIMQ_DIFF_REPLAY=\"{minimal!r}\" "
        "python -m pytest -q tests/differential"
    )


REPLAY = os.environ.get("MINIMQ_DIFF_REPLAY")
CASES = ["replay"] if REPLAY else list(range(SEED_BASE, SEED_BASE + SEEDS))


@pytest.mark.parametrize("seed", CASES)
def test_same_observables_as_rabbitmq(seed, minimq_url, rabbit_url):
    if seed == "replay":
        ops = [tuple(op) for op in ast.literal_eval(REPLAY)]
    else:
        ops = generate(seed, LENGTH)
    divergence = run_lockstep(ops, minimq_url, rabbit_url, allow)
    # RabbitMQ's processes race now and then (a requeue after a close, a delivery after a
    # barrier on a loaded machine); minimq is deterministic. A real divergence shows on every
    # run of the same sequence, so one that does not come back on two replays is timing.
    for _ in range(2):
        if divergence is None:
            return
        divergence = run_lockstep(ops, minimq_url, rabbit_url, allow)
    if divergence is not None:
        pytest.fail(f"seed {seed}: " + report(ops, minimq_url, rabbit_url, divergence), pytrace=False)
