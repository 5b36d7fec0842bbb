"""Broadcast consumers, binding arguments, RPC handlers and publishing from handlers, through
the real runner (`python -m minimq.worker`) and real clients."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest

import minimq.client
import minimq.worker
from minimq.client import RPC, RPCError

from .conftest import ROOT, Workspace, wait_until


def test_broadcast_reaches_every_worker_process(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(exchange=Q + ".x", exchange_type="fanout", broadcast=True, processes=3)
        def invalidate(message):
            record("seen", message.body.decode(), os.getpid())
    """)
    runner = ws.run(app)
    runner.wait_ready(3)
    ws.publish([f"key{i}" for i in range(5)], "", ws.unique + ".x")
    seen = ws.wait_events("seen", 15)
    by_pid: dict[str, list[str]] = {}
    for _, body, pid in seen:
        by_pid.setdefault(pid, []).append(body)
    assert len(by_pid) == 3, by_pid
    for bodies in by_pid.values():  # each process saw each message once, in order
        assert bodies == [f"key{i}" for i in range(5)]
    runner.wait_log(r"status invalidate: workers=3/3 processed=15 ")
    # A queue per process: server-named, exclusive, gone with the process.
    queues = {m.group(1) for m in runner.wait_log(r"consuming (\S+) \(prefetch", count=3)}
    assert len(queues) == 3 and all(q.startswith("amq.gen-") for q in queues), queues
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    for name in queues:
        with pytest.raises(minimq.client.NotFound):
            ws.queue_depth(name)


def test_broadcast_consumer_registration_rules() -> None:
    app = minimq.worker.App()
    with pytest.raises(ValueError, match="give no queue name"):
        app.consumer("q", exchange="x", broadcast=True)
    with pytest.raises(ValueError, match="needs an exchange"):
        app.consumer(broadcast=True)
    with pytest.raises(ValueError, match="cannot retry"):
        app.consumer(exchange="x", broadcast=True, retries=3)
    with pytest.raises(ValueError, match="needs a queue name"):
        app.consumer(exchange="x")
    app.consumer(exchange="cache", exchange_type="fanout", broadcast=True)(lambda m: None)
    spec = app.consumers["<lambda>"]
    assert spec.retry.retries == 0 and spec.dead_queue == "cache.<lambda>.dead"


def test_headers_bindings_and_per_binding_keys(ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, exchange=Q + ".x", exchange_type="headers",
                      binding_arguments={"x-match": "all", "kind": "photo", "size": "big"})
        def big_photos(message):
            record("big", message.body.decode())

        @app.consumer(queue=Q + ".out", bindings=[
            {"exchange": Q + ".x", "arguments": {"x-match": "any", "kind": "video"},
             "exchange_type": "headers"},
            (Q + ".x", "", {"x-match": "any", "urgent": "yes"}),
        ])
        def videos_or_urgent(message):
            record("other", message.body.decode())

        @app.consumer(queue=Q + ".topic", bindings=[
            minimq.worker.Binding(Q + ".t", "photo.*", exchange_type="topic"),
            minimq.worker.Binding(Q + ".t", "video.#"),
        ])
        def media(message):
            record("topic", message.body.decode(), message.routing_key)
    """)
    runner = ws.run(app)
    runner.wait_ready(3)
    x = ws.unique + ".x"
    ws.publish(["a"], "", x, headers={"kind": "photo", "size": "big"})
    ws.publish(["b"], "", x, headers={"kind": "photo", "size": "small"})
    ws.publish(["c"], "", x, headers={"kind": "video"})
    ws.publish(["d"], "", x, headers={"kind": "photo", "size": "big", "urgent": "yes"})
    ws.publish(["e"], "", x)
    ws.publish(["p"], "photo.new", ws.unique + ".t")
    ws.publish(["v"], "video.hd.new", ws.unique + ".t")
    ws.publish(["n"], "photo.new.hd", ws.unique + ".t")  # photo.* matches one word only
    ws.publish(["last"], "", x, headers={"kind": "photo", "size": "big"})
    ws.publish(["last"], "", x, headers={"kind": "video"})
    ws.publish(["last"], "video.x", ws.unique + ".t")
    wait_until(lambda: all(["last"] == e[1:2] for e in (
        ws.events_of("big")[-1:] + ws.events_of("other")[-1:] + ws.events_of("topic")[-1:]))
        and len(ws.events_of("big")) and len(ws.events_of("other")) and
        len(ws.events_of("topic")), what="the last markers")
    assert [e[1] for e in ws.events_of("big")] == ["a", "d", "last"]
    assert [e[1] for e in ws.events_of("other")] == ["c", "d", "last"]
    assert [e[1:] for e in ws.events_of("topic")] == [["p", "photo.new"],
                                                       ["v", "video.hd.new"],
                                                       ["last", "video.x"]]
    assert runner.proc.poll() is None
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


RPC_APP = """
    import json
    from minimq.client import Message

    app = minimq.worker.App(name=Q)

    @app.consumer(queue=Q, rpc_errors=True, processes=2)
    def add(message):
        a, b = json.loads(message.body)
        if a < 0:
            raise ValueError("negative: " + str(a))
        # Publishing from a sync handler works (and blocks until confirmed):
        app.publish({"added": [a, b]}, Q + ".audit", persistent=True)
        message.channel.publish(Message(b"via-channel"), Q + ".audit")
        return {"sum": a + b}

    @app.consumer(queue=Q + ".out", retries=0)
    async def shout(message):
        body = message.body.decode()
        if body == "manual":
            await message.reply(b"MANUAL", headers={"via": "reply"})
            app.publish("not awaited, still sent", Q + ".audit")
            return "ignored: already replied"
        if body == "message":
            return Message(b"as a message", content_type="x/y", headers={"k": 1})
        if body == "boom":
            raise RuntimeError("no rpc_errors here")
        return body.upper()
"""


async def _calls(url: str, queue: str, direct: bool) -> dict[str, object]:
    results: dict[str, object] = {}
    async with minimq.client.connect(url) as connection:
        channel = await connection.channel()
        rpc = await RPC.create(channel, direct_reply_to=direct)
        reply = await rpc.call(queue, json.dumps([2, 3]).encode(), timeout=15)
        results["sum"] = (json.loads(reply.body), reply.content_type)
        try:
            await rpc.call(queue, json.dumps([-1, 3]).encode(), timeout=15)
        except RPCError as exc:
            results["error"] = (str(exc), json.loads(exc.reply.body),
                                exc.reply.headers["x-exception-type"])
        for body in ("hello", "manual", "message"):
            reply = await rpc.call(queue + ".out", body.encode(), timeout=15)
            results[body] = (reply.body, reply.content_type, dict(reply.headers))
        try:
            await rpc.call(queue + ".out", b"boom", timeout=3)
        except asyncio.TimeoutError:
            results["boom"] = "timeout"
        await rpc.close()
    return results


@pytest.mark.parametrize("direct", [True, False], ids=["direct-reply-to", "reply-queue"])
def test_rpc_replies_from_sync_and_async_handlers(ws: Workspace, direct: bool) -> None:
    app = ws.module(RPC_APP)
    with minimq.client.sync.connect(ws.url) as connection:
        connection.channel().declare_queue(ws.unique + ".audit")
    runner = ws.run(app)
    runner.wait_ready(3)
    results = asyncio.run(_calls(ws.url, ws.unique, direct))
    assert results["sum"] == ({"sum": 5}, "application/json")
    text, body, kind = results["error"]  # type: ignore[misc]
    assert text == "ValueError: negative: -1"
    assert body == {"error": {"type": "builtins.ValueError", "message": "negative: -1"}}
    assert kind == "builtins.ValueError"
    assert results["hello"][:2] == (b"HELLO", "text/plain")  # type: ignore[index]
    manual = results["manual"]
    assert manual[0] == b"MANUAL" and manual[2] == {"via": "reply"}  # type: ignore[index]
    assert results["message"] == (b"as a message", "x/y", {"k": 1})
    # Without rpc_errors a failing handler follows the retry policy: no reply, dead-lettered.
    assert results["boom"] == "timeout"
    [dead] = wait_until(lambda: ws.get_all(ws.unique + ".out.dead"), what="boom dead")
    assert dead.body == b"boom" and dead.headers["x-exception-type"] == "builtins.RuntimeError"
    audit: list = []
    wait_until(lambda: audit.extend(ws.get_all(ws.unique + ".audit")) or len(audit) >= 3,
               what="the messages published from handlers")
    assert sorted(m.body for m in audit) == sorted(
        [b'{"added": [2, 3]}', b"via-channel", b"not awaited, still sent"])
    runner.wait_log(r"status add: workers=2/2 processed=1 failed=1 .* replied=2")
    runner.wait_log(r"status shout: workers=1/1 processed=3 failed=1 retried=0 dead=1 .* "
                    r"replied=3")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_app_publish_outside_a_worker_is_a_clear_error() -> None:
    app = minimq.worker.App()
    with pytest.raises(RuntimeError, match="inside a running worker"):
        app.publish(b"x", "q")


def _status(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINIMQ_WORKER_STATUS_DIR=str(ws.path / "status"),
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minimq", "worker", "status", *args],
                          env=env, capture_output=True, text=True, timeout=30)


def test_status_shows_in_flight_messages_and_counters_stay_exact_across_kill_9(
        ws: Workspace) -> None:
    app = ws.module("""
        app = minimq.worker.App(name=Q)

        @app.consumer(queue=Q, prefetch=1, processes=2)
        def work(message):
            body = message.body.decode()
            if body == "victim" and not message.redelivered:
                record("started", body, os.getpid())
                time.sleep(60)  # killed here
            record("done", body, os.getpid())

        @app.consumer(queue=Q + ".out", max_crashes=100)
        def broken(message):
            os._exit(3)
    """)
    env = {"MINIMQ_WORKER_STATUS_DIR": str(ws.path / "status")}
    runner = ws.run(app, "--max-restarts", "1", "--restart-backoff", "0.05", env=env)
    runner.wait_ready(3)
    ws.publish([f"m{i}" for i in range(14)], ws.unique)
    ws.wait_events("done", 14)
    ws.publish(["victim"], ws.unique)
    [started] = ws.wait_events("started", 1)
    victim_pid = int(started[2])

    def document() -> dict:
        out = _status(ws, ws.unique, "--json")
        assert out.returncode == 0, out.stderr
        [doc] = json.loads(out.stdout)
        return doc

    def handling_victim(doc: dict) -> bool:
        return any(m["message_id"] == "victim" and p["pid"] == victim_pid
                   for p in doc["consumers"]["work"]["processes"] for m in p["in_flight"])

    doc = wait_until(lambda: (lambda d: handling_victim(d) and d)(document()), interval=0.2,
                     what="the status file to show the victim in flight")
    work = doc["consumers"]["work"]
    assert work["state"] == "running" and (work["running"], work["expected"]) == (2, 2)
    assert work["counts"]["processed"] == 14 and work["queue"] == ws.unique
    text = _status(ws).stdout
    assert f"work ({'consumer'}, {ws.unique}): running, 2/2 processes; processed=14" in text
    assert f"pid {victim_pid} up" in text and "handling victim" in text
    # kill -9 right after the 14th settle: nothing of what was counted is lost.
    os.kill(victim_pid, signal.SIGKILL)
    ws.wait_events("done", 15)
    # The redelivered victim may be done by the surviving process before the supervisor has
    # restarted the killed one: wait for both, the count and the replacement.
    doc = wait_until(lambda: (lambda d: d["consumers"]["work"]["counts"]["processed"] == 15
                              and d["consumers"]["work"]["running"] == 2 and d)(document()),
                     interval=0.2, what="processed=15 and 2 running processes in the status")
    assert doc["consumers"]["work"]["counts"]["processed"] == 15
    # A crash-looping consumer shows as such.
    ws.publish(["x"], ws.unique + ".out")
    doc = wait_until(lambda: (lambda d: d["consumers"]["broken"]["state"] == "crash-loop"
                              and d)(document()), interval=0.2,
                     what="the crash loop in the status")
    assert doc["consumers"]["broken"]["running"] == 0
    assert "broken (consumer" in _status(ws).stdout and "CRASH LOOP" in _status(ws).stdout
    runner.wait_log(r"status work: workers=2/2 processed=15 ")
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    assert "totals work: processed=15 " in runner.log
    assert _status(ws, ws.unique).returncode == 1  # the file went with the runner
