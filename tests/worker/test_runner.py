"""The worker runner end to end: a real `python -m minimq.worker` subprocess against a broker."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from .conftest import Workspace, wait_until


def test_all_messages_processed_by_sync_and_async_handlers(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, exchange=Q + ".x", exchange_type="topic",
                      routing_key="photo.*", prefetch=10, processes=2)
        def index(message):
            record("done", message.body.decode(), os.getpid())

        @app.consumer(queue=Q + ".out", prefetch=5)
        async def audit(message):
            await asyncio.sleep(0)
            record("audit", message.body.decode(), os.getpid())
    """)
    runner = ws.run(app)
    runner.wait_ready(3)
    ws.publish([f"m{i}" for i in range(60)], "photo.new", ws.unique + ".x")
    ws.publish(["not-routed"], "video.new", ws.unique + ".x")  # does not match photo.*
    ws.publish([f"a{i}" for i in range(10)], ws.unique + ".out")
    done = ws.wait_events("done", 60)
    ws.wait_events("audit", 10)
    assert sorted(e[1] for e in done) == sorted(f"m{i}" for i in range(60))
    assert len({e[2] for e in done}) == 2, "both processes should take messages"
    runner.wait_log(r"status index: workers=2/2 processed=60 failed=0")
    runner.wait_log(r"status audit: workers=1/1 processed=10")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    assert "totals index: processed=60" in runner.log
    assert ws.queue_depth(ws.unique) == 0


def test_kill_9_mid_message_is_redelivered_and_worker_replaced(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, prefetch=1, processes=2)
        def work(message):
            body = message.body.decode()
            if body == "victim" and not message.redelivered:
                record("started", body, os.getpid())
                time.sleep(60)  # killed here
            record("done", body, os.getpid(), message.redelivered)
    """)
    runner = ws.run(app)
    runner.wait_ready(2)
    ws.publish(["victim"], ws.unique)
    [started] = ws.wait_events("started", 1)
    victim_pid = int(started[2])
    ws.publish([f"m{i}" for i in range(10)], ws.unique)
    os.kill(victim_pid, signal.SIGKILL)
    runner.wait_log(rf"work#\d \(pid {victim_pid}\) exited unexpectedly \(signal SIGKILL\)")
    runner.wait_log(r"restarting work#\d in [\d.]+s")
    [restarted] = runner.wait_log(r"restarted work#\d \(pid (\d+)\)")
    assert int(restarted.group(1)) != victim_pid
    done = ws.wait_events("done", 11)
    victim = [e for e in done if e[1] == "victim"]
    assert len(victim) == 1 and victim[0][3] == "True" and int(victim[0][2]) != victim_pid
    assert sorted(e[1] for e in done) == sorted(["victim"] + [f"m{i}" for i in range(10)])
    runner.wait_log(r"status work: workers=2/2")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


SLOW = """
    app = minimq.worker.App(name=Q)

    @app.consumer(queue=Q, prefetch=4, processes=2)
    def work(message):
        body = message.body.decode()
        record("start", body, os.getpid())
        time.sleep(float(os.environ.get("HANDLER_SECONDS", "0")))
        record("done", body, os.getpid())
"""


def test_sigterm_lets_in_flight_handlers_finish_nothing_lost_or_doubled(ws: Workspace) -> None:
    app = ws.module(SLOW)
    runner = ws.run(app, env={"HANDLER_SECONDS": "0.4"})
    runner.wait_ready(2)
    bodies = [f"m{i:02d}" for i in range(20)]
    ws.publish(bodies, ws.unique)
    ws.wait_events("done", 2)
    ws.wait_events("start", 4)  # both workers are mid-message now (or about to be)
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    started = [e[1] for e in ws.events_of("start")]
    done = [e[1] for e in ws.events_of("done")]
    assert sorted(started) == sorted(done), "every started handler finished"
    assert len(done) == len(set(done)), "nothing processed twice"
    assert len(done) < len(bodies)
    runner_log = runner.log
    assert "SIGTERM: stopping" in runner_log and "stopped (exit code 0)" in runner_log
    # What was acked is gone; everything else is still queued (prefetched ones requeued).
    wait_until(lambda: ws.queue_depth(ws.unique) == len(bodies) - len(done),
               what="unprocessed messages back in the queue")
    again = ws.run(app, env={"HANDLER_SECONDS": "0"})
    ws.wait_events("done", len(bodies))
    final = [e[1] for e in ws.events_of("done")]
    assert sorted(final) == bodies, Counter(final).most_common(3)
    again.signal(signal.SIGINT)
    assert again.wait() == 0


def test_after_the_grace_period_work_is_left_unacked_and_workers_killed(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, prefetch=1)
        def work(message):
            record("start", message.body.decode(), os.getpid())
            time.sleep(30)
            record("done", message.body.decode(), os.getpid())
    """)
    runner = ws.run(app, "--grace", "0.5")
    runner.wait_ready(1)
    ws.publish(["stuck"], ws.unique)
    ws.wait_events("start", 1)
    started = time.monotonic()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    assert time.monotonic() - started < 10
    assert ws.events_of("done") == []
    wait_until(lambda: ws.queue_depth(ws.unique) == 1, what="the unfinished message requeued")


def test_failing_handler_retries_with_growing_delays_then_dead_letters(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, exchange=Q + ".x", routing_key="jobs", retries=3, backoff=0.2)
        def work(message):
            record("attempt", message.body.decode(), time.time(),
                   message.headers.get("x-retry-count", 0))
            if message.body == b"bad":
                raise ValueError("boom " + message.body.decode())
            record("done", message.body.decode())
    """)
    runner = ws.run(app)
    runner.wait_ready(1)
    ws.publish(["bad", "good"], "jobs", ws.unique + ".x", headers={"trace": "t-1"})
    ws.wait_events("done", 1)
    dead = wait_until(lambda: ws.get_all(ws.unique + ".dead"), what="the dead-lettered message")
    attempts = [e for e in ws.events_of("attempt") if e[1] == "bad"]
    assert [int(e[3]) for e in attempts] == [0, 1, 2, 3]
    times = [float(e[2]) for e in attempts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 200, 400, 800 ms: each wait at least its delay, and growing.
    for gap, delay in zip(gaps, (0.2, 0.4, 0.8)):
        assert gap >= delay * 0.9, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    [message] = dead
    headers = message.headers
    assert message.body == b"bad"
    assert headers["x-retry-count"] == 3
    assert headers["x-exception-type"] == "builtins.ValueError"
    assert headers["x-exception-message"] == "boom bad"
    assert "ValueError: boom bad" in headers["x-exception-traceback"]
    assert headers["x-original-exchange"] == ws.unique + ".x"
    assert headers["x-original-routing-key"] == "jobs"
    assert headers["trace"] == "t-1"  # the message's own headers are kept
    assert "x-death" not in headers
    assert message.delivery_mode == 2 and message.message_id == "bad"
    runner.wait_log(r"status work: workers=1/1 processed=1 failed=4 retried=3 dead=1")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    for ms in (200, 400, 800):
        assert ws.queue_depth(f"{ws.unique}.retry.{ms}") == 0


def test_explicit_reject_requeue_and_retry(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, retries=2, backoff=0.1)
        async def work(message):
            body = message.body.decode()
            record("attempt", body, message.redelivered, message.headers.get("x-retry-count", 0))
            if body == "reject":
                raise Reject("unparseable")
            if body == "requeue" and not message.redelivered:
                raise Requeue()
            if body == "retry" and not message.headers.get("x-retry-count"):
                raise Retry("later", delay=timedelta(milliseconds=300))
            if body == "manual":
                await message.reject(requeue=False)  # settled by the handler itself
                record("done", body)
                return
            record("done", body)
    """)
    runner = ws.run(app)
    runner.wait_ready(1)
    ws.publish(["reject", "requeue", "retry", "manual"], ws.unique)
    ws.wait_events("done", 3)
    [dead] = wait_until(lambda: ws.get_all(ws.unique + ".dead"), what="the rejected message")
    assert dead.body == b"reject"
    assert dead.headers["x-exception-type"] == "minimq.worker.app.Reject"
    assert dead.headers["x-exception-message"] == "unparseable"
    assert dead.headers["x-retry-count"] == 0
    events = ws.events_of("attempt")
    assert [e[2] for e in events if e[1] == "requeue"] == ["False", "True"]
    assert [e[3] for e in events if e[1] == "retry"] == ["0", "1"]
    assert [e[1] for e in events].count("reject") == 1
    assert ws.queue_depth(f"{ws.unique}.retry.300") == 0  # declared on first use
    runner.wait_log(r"status work: .*requeued=1 rejected=1")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_retry_through_the_delayed_message_exchange(ws: Workspace, broker) -> None:
    if os.environ.get("MINIMQ_TEST_URL"):
        pytest.skip("needs the x-delayed-message exchange type (RabbitMQ plugin)")
    app = ws.module("""
        app = minimq.worker.App(name=Q, retry=minimq.worker.RetryPolicy(
            retries=2, backoff=0.2, mode="delayed"))

        @app.consumer(queue=Q)
        def work(message):
            record("attempt", time.time(), message.headers.get("x-retry-count", 0))
            raise RuntimeError("always")
    """)
    runner = ws.run(app)
    runner.wait_ready(1)
    ws.publish(["x"], ws.unique)
    [dead] = wait_until(lambda: ws.get_all(ws.unique + ".dead"), what="the dead message")
    times = [float(e[1]) for e in ws.events_of("attempt")]
    assert len(times) == 3 and times[1] - times[0] >= 0.18 and times[2] - times[1] >= 0.36
    assert dead.headers["x-retry-count"] == 2
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_sighup_reloads_one_by_one_without_a_gap(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, processes=2, prefetch=1)
        def work(message):
            record("done", message.body.decode(), os.getpid(), VERSION)

        VERSION = "v1"
    """)
    runner = ws.run(app)
    runner.wait_ready(2)
    first = {int(m.group(1)) for m in runner.wait_log(r"started work#\d \(pid (\d+)\)", count=2)}
    # New code is picked up by the replacements.
    (ws.path / "tasks.py").write_text((ws.path / "tasks.py").read_text().replace('"v1"', '"v2"'))
    runner.signal(signal.SIGHUP)
    bodies = [f"m{i}" for i in range(40)]
    for body in bodies:  # keep publishing while the reload runs
        ws.publish([body], ws.unique)
    runner.wait_log(r"reload complete")
    replaced = runner.wait_log(r"reload: work#\d \(pid (\d+)\) replaces work#\d \(pid (\d+)\)",
                               count=2)
    assert {int(m.group(2)) for m in replaced} == first
    new = {int(m.group(1)) for m in replaced}
    assert not new & first
    # Each replacement reported ready before its predecessor was told to stop.
    for m in replaced:
        runner.wait_log(rf"\(pid {m.group(2)}\) stopped \(exit code 0\)")
        lines = list(runner.lines)
        stopped = next(i for i, line in enumerate(lines) if f"(pid {m.group(2)}) stopped" in line)
        replacing = next(i for i, line in enumerate(lines) if m.group(0) in line)
        assert replacing < stopped
    ws.publish(["after"], ws.unique)
    done = ws.wait_events("done", 41)
    assert sorted(e[1] for e in done) == sorted(bodies + ["after"])
    assert [e for e in done if e[1] == "after"][0][3] == "v2"
    assert int([e for e in done if e[1] == "after"][0][2]) in new
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_poison_message_is_dead_lettered_after_3_crashes_while_others_flow(
        ws: Workspace) -> None:
    app = ws.module("""
        import signal

        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, prefetch=1, processes=2)
        def work(message):
            body = message.body.decode()
            if body == "segfault":
                record("crash", body, os.getpid())
                os.kill(os.getpid(), signal.SIGSEGV)  # an image library crashing, say
                time.sleep(60)  # the signal may land on another thread a moment later
            if body == "exit":
                record("crash", body, os.getpid())
                os._exit(7)
            time.sleep(0.01)
            record("done", body, os.getpid())

        @app.consumer(queue=Q + ".out")
        async def other(message):
            record("other", message.body.decode())
    """)
    runner = ws.run(app, "--restart-backoff", "0.05")
    runner.wait_ready(3)
    bodies = [f"m{i:02d}" for i in range(30)]
    ws.publish(bodies[:10] + ["segfault"] + bodies[10:20] + ["exit"] + bodies[20:], ws.unique)
    ws.publish([f"o{i}" for i in range(10)], ws.unique + ".out")
    dead: list = []
    wait_until(lambda: dead.extend(ws.get_all(ws.unique + ".dead")) or len(dead) == 2,
               timeout=60, interval=0.1, what="both poison messages dead")
    done = ws.wait_events("done", 30)
    assert sorted(e[1] for e in done) == bodies
    ws.wait_events("other", 10)
    crashes = ws.events_of("crash")
    assert sorted(e[1] for e in crashes) == ["exit"] * 3 + ["segfault"] * 3, crashes
    by_body = {m.body: m for m in dead}
    segv, exited = by_body[b"segfault"], by_body[b"exit"]
    for message in (segv, exited):
        assert message.headers["x-exception-type"] == "WorkerCrashed"
        assert message.headers["x-crash-count"] == 3
        assert message.headers["x-original-routing-key"] == ws.unique
        assert "died 3 times" in message.headers["x-exception-message"]
        assert message.delivery_mode == 2
    assert segv.headers["x-crash-exit"] == "signal SIGSEGV"
    assert segv.headers["x-crash-signal"] == "SIGSEGV"
    assert exited.headers["x-crash-exit"] == "exit code 7"
    assert exited.headers["x-crash-exit-code"] == 7
    runner.wait_log(r"message segfault \(routing key '\S+'\) was being handled when "
                    r"work#\d \(pid \d+\) died: "
                    r"crash 3 of 3; it is poison")
    runner.wait_log(r"poison message exit dead-lettered to \S+\.dead without running")
    runner.wait_log(r"status work: workers=2/2 processed=30 failed=0 retried=0 dead=2 "
                    r"requeued=0 rejected=0 crashed=2 replied=0$")
    assert "crash loop" not in runner.log
    assert runner.proc.poll() is None
    assert ws.queue_depth(ws.unique) == 0
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_crash_loop_stops_only_that_consumer_then_the_runner_when_none_is_left(
        ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, prefetch=1, max_crashes=100)
        def broken(message):
            record("crash", os.getpid())
            os._exit(7)

        @app.consumer(queue=Q + ".out")
        def healthy(message):
            record("healthy", message.body.decode())
    """)
    runner = ws.run(app, "--max-restarts", "2", "--restart-backoff", "0.1")
    runner.wait_ready(2)
    ws.publish(["poison"], ws.unique)
    runner.wait_log(r"crash loop: broken#0 died 3 times within 60s \(last: exit code 7\); "
                    r"giving up on broken")
    delays = [float(m.group(1)) for m in runner.wait_log(r"restarting broken#0 in ([\d.]+)s",
                                                        count=2)]
    assert delays[1] > delays[0]
    assert len(ws.events_of("crash")) == 3
    # The healthy consumer carries on; status shows the crash loop.
    ws.publish(["after"], ws.unique + ".out")
    ws.wait_events("healthy", 1)
    runner.wait_log(r"status broken: workers=0/1 .* state=crash-loop \(not restarted\)")
    runner.wait_log(r"status healthy: workers=1/1 processed=1")
    assert runner.proc.poll() is None
    assert ws.queue_depth(ws.unique) == 1  # under max_crashes, the message stays queued
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    # Alone, the crash-looping consumer ends the runner with exit code 1.
    alone = ws.run(app, "-c", "broken", "--max-restarts", "1", "--restart-backoff", "0.1")
    assert alone.wait(40) == 1
    alone.wait_log(r"no consumer left running; shutting down")


def test_unreachable_broker_is_one_clear_error(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q)
        def work(message):
            pass
    """)
    runner = ws.run(app, "--url", "amqp://guest:guest@127.0.0.1:1/")
    assert runner.wait() == 1
    assert "cannot set up the queues on amqp://guest:guest@127.0.0.1:1/" in runner.log


def test_periodic_job_fires_on_schedule_from_one_scheduler_only(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q, scheduler_lock_retry=0.2)

        @app.periodic(every=timedelta(seconds=0.5), routing_key=Q)
        def tick():
            return {"pid": os.getpid()}

        @app.consumer(queue=Q)
        def ticks(message):
            record("tick", message.headers["x-scheduled-at"], time.time(),
                   message.headers["x-periodic-job"], message.message_id)
    """)
    first = ws.run(app)
    first.wait_log(r"scheduler#0 \(pid (\d+)\) leads the periodic jobs")
    second = ws.run(app)
    second.wait_log(r"another scheduler holds minimq\.scheduler\.\S+\.leader; standing by")
    ws.wait_events("tick", 6)
    # Stop the leading runner: the standby takes over within its lock retry interval.
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    second.wait_log(r"scheduler#0 \(pid \d+\) leads the periodic jobs")
    count = len(ws.events_of("tick"))
    ws.wait_events("tick", count + 4)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    ticks = ws.events_of("tick")
    scheduled = [int(e[1]) for e in ticks]
    assert len(scheduled) == len(set(scheduled)), "no tick fired twice"
    assert all(s % 500 == 0 for s in scheduled), "ticks are on the 0.5 s grid"
    for e in ticks:  # fired on time: received within a bounded lag of its slot
        assert 0 <= float(e[2]) - int(e[1]) / 1000 < 1.0, e
        assert e[3] == "tick" and e[4] == f"tick@{e[1]}"
    ordered = sorted(scheduled)
    gaps = {b - a for a, b in zip(ordered, ordered[1:])}
    assert 500 in gaps and max(gaps) <= 500 * 4  # takeover may skip a few slots, never doubles


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_workers_stop_when_the_supervisor_is_killed(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, processes=2)
        def work(message):
            record("done", message.body.decode())
    """)
    runner = ws.run(app)
    runner.wait_ready(2)
    pids = [int(m.group(1)) for m in runner.wait_log(r"started work#\d \(pid (\d+)\)", count=2)]
    runner.proc.kill()
    runner.wait()
    runner.wait_log(r"supervisor is gone; stopping", count=2)
    for pid in pids:
        wait_until(lambda: _gone(pid), what=f"orphaned worker {pid} to exit")


@pytest.mark.stress
def test_random_kills_lose_nothing(ws: Workspace) -> None:
    import random

    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, processes=3, prefetch=1)
        def work(message):
            time.sleep(0.002)
            record("done", message.body.decode(), os.getpid())
    """)
    runner = ws.run(app, "--max-restarts", "100", "--restart-backoff", "0.05")
    runner.wait_ready(3)
    bodies = [f"m{i:05d}" for i in range(3000)]
    ws.publish(bodies, ws.unique)
    kills = 0
    rng = random.Random(7)
    while len(ws.events_of("done")) < 2000 and kills < 15:
        done = ws.events_of("done")
        if done:
            pid = int(rng.choice(done[-20:])[2])
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    done = wait_until(lambda: (lambda d: len(set(d)) == len(bodies) and d)(
        [e[1] for e in ws.events_of("done")]), timeout=120, what="every message processed")
    duplicates = sum(n - 1 for n in Counter(done).values())
    assert duplicates <= kills, (duplicates, kills)  # at most the one in flight per kill
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_workers_ride_out_a_broker_restart(tmp_path, unique: str) -> None:
    from tests.conftest import start_broker

    broker = start_broker()
    ws = Workspace(tmp_path, broker.url, unique)
    try:
        app = ws.module("""
            app = minimq.worker.App(name=Q, scheduler_lock_retry=0.2)

            @app.consumer(queue=Q, durable=False)
            def work(message):
                record("done", message.body.decode())

            @app.periodic(every=0.3, routing_key=Q)
            def tick():
                return "tick"
        """)
        runner = ws.run(app)
        runner.wait_ready(1)
        runner.wait_log(r"leads the periodic jobs")
        ws.publish(["before"], ws.unique)
        ws.wait_events("done", 1)
        broker.stop()
        runner.wait_log(r"lost the broker connection")
        ticks = len([e for e in ws.events_of("done") if e[1] == "tick"])
        broker = start_broker("--port", str(broker.port))
        runner.wait_log(r"leads the periodic jobs", count=2)
        wait_until(lambda: len([e for e in ws.events_of("done") if e[1] == "tick"]) > ticks,
                   what="ticks after the restart")
        ws.publish(["after"], ws.unique)  # the worker re-declared its (transient) queue
        wait_until(lambda: ["done", "after"] in ws.events_of("done"), what="'after' processed")
        assert "exited unexpectedly" not in runner.log
        runner.signal(signal.SIGTERM)
        assert runner.wait() == 0
    finally:
        ws.cleanup()
        broker.stop()


def test_sighup_restarts_a_crash_looped_consumer_with_new_code(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)
        BROKEN = True

        @app.consumer(queue=Q, prefetch=1, max_crashes=100)
        def fragile(message):
            if BROKEN:
                os._exit(9)
            record("fixed", message.body.decode())

        @app.consumer(queue=Q + ".out")
        def healthy(message):
            pass
    """)
    runner = ws.run(app, "--max-restarts", "1", "--restart-backoff", "0.05")
    runner.wait_ready(2)
    ws.publish(["held"], ws.unique)
    runner.wait_log(r"crash loop: fragile#0 died 2 times .* giving up on fragile")
    runner.wait_log(r"status fragile: workers=0/1 .* state=crash-loop")
    (ws.path / "tasks.py").write_text(
        (ws.path / "tasks.py").read_text().replace("BROKEN = True", "BROKEN = False"))
    runner.signal(signal.SIGHUP)
    runner.wait_log(r"SIGHUP: restarting fragile after the crash loop")
    [fixed] = ws.wait_events("fixed", 1)
    assert fixed[1] == "held"
    runner.wait_log(r"status fragile: workers=1/1 processed=1 .*replied=0$")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
