"""The view counter, as it was written in 2011: plain py-amqp, a callback and a drain loop.

It keeps working unchanged beside the runner's workers: same broker, same exchange.
Run: ``python legacy_worker.py`` (broker from ``$MINIMQ_URL``).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from urllib.parse import urlsplit

import amqp

import results


def main() -> int:
    url = urlsplit(os.environ.get("MINIMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    conn = amqp.Connection(host=f"{url.hostname}:{url.port or 5672}",
                           userid=url.username or "guest", password=url.password or "guest",
                           virtual_host=(url.path[1:] or "/"))
    conn.connect()
    ch = conn.channel()
    ch.exchange_declare("photos", "topic", durable=True, auto_delete=False)
    ch.queue_declare("view-counter", durable=True, auto_delete=False)
    ch.queue_bind("view-counter", "photos", "photo.viewed")
    ch.basic_qos(0, 10, False)

    def on_view(msg: amqp.Message) -> None:
        event = json.loads(msg.body)
        results.record("view", event["photo"])
        ch.basic_ack(msg.delivery_tag)

    ch.basic_consume("view-counter", callback=on_view)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("legacy view counter ready", flush=True)
    while not stopping:
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            pass
        except InterruptedError:
            pass
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
