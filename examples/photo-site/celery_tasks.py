"""The Celery side: thumbnails, queued by the indexing worker with ``thumbnail.delay()``.

Run with ``celery -A celery_tasks worker --pool=solo``; the broker is minimq (or RabbitMQ),
from ``$MINIMQ_URL``.
"""
from __future__ import annotations

import os

from celery import Celery

import results

celery = Celery("photo-site", broker=os.environ.get("MINIMQ_URL",
                                                     "amqp://guest:guest@127.0.0.1:5672//"))
celery.conf.update(task_acks_late=True, worker_prefetch_multiplier=1,
                   broker_connection_retry_on_startup=True, task_default_queue="thumbnails")


@celery.task(name="photo_site.thumbnail")
def thumbnail(photo: int) -> None:
    results.record("thumbnail", photo)
