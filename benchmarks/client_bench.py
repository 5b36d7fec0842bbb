"""minimq.client vs aio-pika, side by side, against the same broker.

    python benchmarks/client_bench.py                 # starts `python -m minimq --port 0`
    python benchmarks/client_bench.py --url amqp://guest:guest@127.0.0.1:5672/

For each client, in one run and against one broker, measures:

* publish: N messages (no confirms), timed until the broker reports all N in the queue;
* publish-confirm: N messages with publisher confirms, ``--window`` in flight at a time;
* consume: N messages with manual acks (prefetch ``--prefetch``), until the last is acked;
* RPC: ``--rpc`` sequential request/reply round trips over an exclusive reply queue (the
  server on a second connection), reporting p50 and p99 latency.

Each measurement runs ``--repeat`` times and the best is kept; the clients alternate so a
warming broker does not favour either. aio-pika is optional (skipped if not installed).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minimq.client as mc  # noqa: E402

BODY = b"x" * 100


# -- minimq.client ----------------------------------------------------------------------------

async def mc_publish(url: str, n: int) -> float:
    async with mc.connect(url) as conn:
        ch = await conn.channel()
        q = await ch.declare_queue("", exclusive=True)
        start = time.perf_counter()
        for _ in range(n):
            await ch.publish(BODY, q.name)
        while (await ch.declare_queue(q.name, passive=True)).message_count < n:
            pass
        return n / (time.perf_counter() - start)


async def mc_publish_confirm(url: str, n: int, window: int) -> float:
    async with mc.connect(url) as conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue("", exclusive=True)
        start = time.perf_counter()
        for offset in range(0, n, window):
            await asyncio.gather(*(ch.publish(BODY, q.name)
                                   for _ in range(min(window, n - offset))))
        return n / (time.perf_counter() - start)


async def mc_consume(url: str, n: int, prefetch: int) -> float:
    async with mc.connect(url) as conn:
        ch = await conn.channel(prefetch_count=prefetch)
        q = await ch.declare_queue("", exclusive=True)
        for _ in range(n):
            await ch.publish(BODY, q.name)
        while (await ch.declare_queue(q.name, passive=True)).message_count < n:
            pass
        count = 0
        start = time.perf_counter()
        async with q.iterator() as messages:
            async for message in messages:
                await message.ack()
                count += 1
                if count == n:
                    break
        return n / (time.perf_counter() - start)


async def mc_rpc(url: str, calls: int) -> list[float]:
    queue = "bench-rpc-" + uuid.uuid4().hex[:8]
    async with mc.connect(url) as server_conn, mc.connect(url) as client_conn:
        server_ch = await server_conn.channel()

        async def handler(request: mc.IncomingMessage) -> bytes:
            return request.body

        await mc.RPCServer.create(server_ch, queue, handler, auto_delete=True)
        rpc = await mc.RPC.create(await client_conn.channel(), direct_reply_to=False)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            await rpc.call(queue, BODY, timeout=10)
            times.append(time.perf_counter() - t)
        return times


# -- aio-pika ---------------------------------------------------------------------------------

async def ap_publish(url: str, n: int) -> float:
    import aio_pika

    async with await aio_pika.connect(url) as conn:
        ch = await conn.channel(publisher_confirms=False)
        q = await ch.declare_queue("", exclusive=True)
        ex = ch.default_exchange
        start = time.perf_counter()
        for _ in range(n):
            await ex.publish(aio_pika.Message(BODY), q.name)
        while (await ch.declare_queue(q.name, passive=True)).declaration_result.message_count < n:
            pass
        return n / (time.perf_counter() - start)


async def ap_publish_confirm(url: str, n: int, window: int) -> float:
    import aio_pika

    async with await aio_pika.connect(url) as conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue("", exclusive=True)
        ex = ch.default_exchange
        start = time.perf_counter()
        for offset in range(0, n, window):
            await asyncio.gather(*(ex.publish(aio_pika.Message(BODY), q.name)
                                   for _ in range(min(window, n - offset))))
        return n / (time.perf_counter() - start)


async def ap_consume(url: str, n: int, prefetch: int) -> float:
    import aio_pika

    async with await aio_pika.connect(url) as conn:
        ch = await conn.channel(publisher_confirms=False)
        await ch.set_qos(prefetch_count=prefetch)
        q = await ch.declare_queue("", exclusive=True)
        for _ in range(n):
            await ch.default_exchange.publish(aio_pika.Message(BODY), q.name)
        while (await ch.declare_queue(q.name, passive=True)).declaration_result.message_count < n:
            pass
        count = 0
        start = time.perf_counter()
        async with q.iterator() as messages:
            async for message in messages:
                await message.ack()
                count += 1
                if count == n:
                    break
        return n / (time.perf_counter() - start)


async def ap_rpc(url: str, calls: int) -> list[float]:
    import aio_pika

    queue = "bench-rpc-" + uuid.uuid4().hex[:8]
    async with await aio_pika.connect(url) as server_conn, \
            await aio_pika.connect(url) as client_conn:
        server_ch = await server_conn.channel()
        server_q = await server_ch.declare_queue(queue, auto_delete=True)

        async def handler(request: aio_pika.abc.AbstractIncomingMessage) -> None:
            await server_ch.default_exchange.publish(
                aio_pika.Message(request.body, correlation_id=request.correlation_id),
                request.reply_to)
            await request.ack()

        await server_q.consume(handler)
        client_ch = await client_conn.channel()
        reply_q = await client_ch.declare_queue("", exclusive=True)
        futures: dict[str, asyncio.Future[Any]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            fut = futures.pop(message.correlation_id, None)
            if fut is not None:
                fut.set_result(message)

        await reply_q.consume(on_reply, no_ack=True)
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            corr = uuid.uuid4().hex
            fut = futures[corr] = loop.create_future()
            await client_ch.default_exchange.publish(
                aio_pika.Message(BODY, correlation_id=corr, reply_to=reply_q.name), queue)
            await asyncio.wait_for(fut, 10)
            times.append(time.perf_counter() - t)
        return times


# -- driver -----------------------------------------------------------------------------------

def start_broker() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "minimq", "--port", "0", "--in-memory",
                             "--log-level", "warning"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"amqp://([\w.\-]+):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return proc, f"amqp://guest:guest@{match.group(1)}:{match.group(2)}/"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="broker URL (default: start a minimq broker)")
    parser.add_argument("-n", type=int, default=20000, help="messages per measurement")
    parser.add_argument("--window", type=int, default=200, help="confirms in flight")
    parser.add_argument("--prefetch", type=int, default=500)
    parser.add_argument("--rpc", type=int, default=1000, help="RPC round trips")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    proc = None
    url = args.url
    if not url:
        proc, url = start_broker()
    try:
        import aio_pika  # noqa: F401
        have_aio_pika = True
    except ImportError:
        have_aio_pika = False

    clients: dict[str, dict[str, Callable[..., Awaitable[Any]]]] = {
        "minimq.client": {"publish": mc_publish, "confirm": mc_publish_confirm,
                          "consume": mc_consume, "rpc": mc_rpc},
    }
    if have_aio_pika:
        clients["aio-pika"] = {"publish": ap_publish, "confirm": ap_publish_confirm,
                               "consume": ap_consume, "rpc": ap_rpc}
    results: dict[str, dict[str, float]] = {name: {} for name in clients}
    try:
        for _ in range(args.repeat):
            for name, fns in clients.items():
                r = results[name]
                r["publish"] = max(r.get("publish", 0.0), await fns["publish"](url, args.n))
                r["confirm"] = max(r.get("confirm", 0.0),
                                   await fns["confirm"](url, args.n, args.window))
                r["consume"] = max(r.get("consume", 0.0),
                                   await fns["consume"](url, args.n, args.prefetch))
        for name, fns in clients.items():
            times = sorted(await fns["rpc"](url, args.rpc))
            results[name]["rpc_p50_ms"] = statistics.median(times) * 1000
            results[name]["rpc_p99_ms"] = times[int(len(times) * 0.99) - 1] * 1000
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)

    print(f"broker: {url if args.url else 'minimq (python -m minimq --port 0)'}; "
          f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; n={args.n}, "
          f"{len(BODY)}-byte bodies, best of {args.repeat}")
    print(f"{'client':<15}{'publish/s':>12}{'confirmed/s':>13}{'consume/s':>12}"
          f"{'RPC p50 ms':>12}{'RPC p99 ms':>12}")
    for name, r in results.items():
        print(f"{name:<15}{r['publish']:>12,.0f}{r['confirm']:>13,.0f}{r['consume']:>12,.0f}"
              f"{r['rpc_p50_ms']:>12.3f}{r['rpc_p99_ms']:>12.3f}")


if __name__ == "__main__":
    asyncio.run(main())
