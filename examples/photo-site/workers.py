"""The photo site's Python workers, run by ``minimq worker workers:app``.

- ``send_mail``: the mail queue (welcome mails from the PHP tier, the digest job's mail).
- ``index_photo``: photo events from the ``photos`` topic exchange, two processes; hands the
  thumbnail of each new photo to Celery.
- ``antispam``: an RPC service the PHP tier calls while a comment is being posted.
- ``invalidate``: the ``cache`` fanout; every process drops its cached copy.
- ``digest``: a timed job that queues the daily digest mail.
"""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import minimq.worker
from minimq.worker import Reject

import results

app = minimq.worker.App(name="photo-site")


@app.consumer(queue="mail", prefetch=20)
async def send_mail(message):
    """Async: up to 20 mails at once per process (an SMTP client would await here)."""
    mail = json.loads(message.body)
    results.record("mail", mail["id"], mail.get("kind", "welcome"))


@app.consumer(queue="photo-index", exchange="photos", exchange_type="topic",
              routing_key=["photo.uploaded", "photo.edited"], processes=2, prefetch=1)
def index_photo(message):
    """Sync: reads the photo's metadata (slow), indexes it, asks Celery for a thumbnail."""
    try:
        event = json.loads(message.body)
    except ValueError:
        raise Reject("not JSON") from None
    time.sleep(float(os.environ.get("INDEX_SECONDS", "0.05")))
    action = message.routing_key.split(".", 1)[1]
    if action == "uploaded":
        from celery_tasks import thumbnail  # Celery beside the runner

        thumbnail.delay(event["photo"])
    results.record("index", event["photo"], action)


@app.consumer(queue="antispam", rpc_errors=True)
def antispam(message):
    """RPC: the return value is the reply; an exception becomes an error reply."""
    comment = json.loads(message.body)
    if not comment.get("text"):
        raise ValueError(f"comment {comment.get('id')} has no text")
    spam = any(word in comment["text"].lower() for word in ("viagra", "casino"))
    results.record("antispam", comment["id"], int(spam))
    return {"id": comment["id"], "spam": spam}


@app.consumer(exchange="cache", exchange_type="fanout", broadcast=True, processes=2)
def invalidate(message):
    """Broadcast: every process gets every invalidation."""
    results.record("cache", message.body.decode(), os.getpid())


@app.periodic(every=timedelta(seconds=float(os.environ.get("DIGEST_EVERY", "86400"))),
              routing_key="mail")
def digest():
    """Timed: one runner's scheduler queues the digest mail."""
    return {"id": f"digest-{int(time.time())}", "kind": "digest"}
