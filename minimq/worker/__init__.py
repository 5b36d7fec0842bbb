"""minimq.worker: supervised worker processes that consume queues.

Write handlers in a module::

    from datetime import timedelta
    import minimq.worker

    app = minimq.worker.App("amqp://guest:guest@127.0.0.1:5672/")

    @app.consumer(queue="indexing", exchange="photos", exchange_type="topic",
                  routing_key="photo.*", prefetch=10, processes=2)
    def index_photo(message):
        ...                      # return: ack; raise: retry with backoff, then dead-letter

    @app.periodic(every=timedelta(minutes=5), routing_key="indexing")
    def reindex():
        return {"full": False}   # published to the indexing queue every 5 minutes

and run them with ``minimq worker mymodule:app`` (or ``python -m minimq.worker``). The
runner (`Supervisor`) starts the processes, restarts crashed ones with backoff, stops them
gracefully on SIGTERM/SIGINT and reloads them one by one on SIGHUP. See README.md, "Workers".
"""
from __future__ import annotations

from .app import (App, Binding, ConsumerSpec, PeriodicSpec, Reject, Requeue, Retry,
                  RetryPolicy, WorkerCrashed, load_app)
from .context import HandlerMessage
from .cron import CronSchedule
from .supervisor import Supervisor, SupervisorConfig

__all__ = [
    "App",
    "Binding",
    "ConsumerSpec",
    "HandlerMessage",
    "PeriodicSpec",
    "RetryPolicy",
    "Reject",
    "Requeue",
    "Retry",
    "WorkerCrashed",
    "CronSchedule",
    "Supervisor",
    "SupervisorConfig",
    "load_app",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """The ``minimq worker`` command line (see `minimq.worker.cli`)."""
    from .cli import main as cli_main

    return cli_main(argv)
