"""SlicedTeardown: big clean-ups run in slices between turns of the event loop, in order."""
from __future__ import annotations

import logging

from minimq.broker.teardown import SlicedTeardown
from minimq.broker.timers import Timers


def make(slice_steps: int = 100, clock=lambda: 0.0):
    timers = Timers()
    return SlicedTeardown(timers, clock, slice_steps), timers


def test_small_work_runs_at_once():
    work, timers = make()
    done: list[int] = []
    work.add("small", done.append, list(range(100)))
    assert done == list(range(100))
    assert work.pending == 0 and len(timers) == 0


def test_big_work_runs_one_slice_per_run_of_the_timers_in_order():
    work, timers = make()
    done: list[int] = []
    work.add("big", done.append, list(range(250)))
    assert done == list(range(100)) and work.pending == 150
    # Added while a backlog waits: behind it, nothing of it runs now.
    work.add("later", lambda i: done.append(1000 + i), [0, 1])
    assert len(done) == 100
    assert timers.run_due(0.0) == 1
    assert done == list(range(200))
    assert timers.run_due(0.0) == 1
    assert done == list(range(250)) + [1000, 1001]
    assert work.pending == 0 and timers.run_due(0.0) == 0
    # The backlog is gone: new work gets a fresh slice at once again.
    work.add("again", done.append, [7])
    assert done[-1] == 7


def test_a_failing_step_is_logged_and_the_rest_goes_on(caplog):
    work, timers = make(slice_steps=3)
    done: list[int] = []

    def step(i: int) -> None:
        if i == 1:
            raise ValueError("boom")
        done.append(i)

    with caplog.at_level(logging.ERROR, logger="minimq.teardown"):
        work.add("cancelling things", step, [0, 1, 2, 3, 4])
        while timers.run_due(0.0):
            pass
    assert done == [0, 2, 3, 4]
    assert "cancelling things (step 2 of 5) failed" in caplog.text


def test_without_a_clock_everything_runs_at_once():
    work, timers = make(slice_steps=10, clock=None)
    done: list[int] = []
    work.add("big", done.append, list(range(1000)))
    assert len(done) == 1000 and len(timers) == 0


def test_work_added_by_a_step_runs_after_it():
    work, timers = make(slice_steps=10)
    done: list[str] = []

    def step(i: int) -> None:
        done.append(f"a{i}")
        if i == 0:
            work.add("nested", lambda j: done.append(f"b{j}"), [0])

    work.add("outer", step, [0, 1])
    assert done == ["a0", "a1", "b0"]
