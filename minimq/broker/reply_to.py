"""Direct reply-to (amq.rabbitmq.reply-to): the names RabbitMQ gives it.

A requester consumes from the pseudo-queue `REPLY_TO` (no-ack) and publishes with
`reply_to=REPLY_TO`; the broker rewrites that to a name under `REPLY_TO_PREFIX` unique to the
channel, and a reply published to that name on the default exchange goes straight to it.
"""
from __future__ import annotations

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."
