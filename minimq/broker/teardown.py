"""Clean-up that runs to the end even when one of its steps fails.

Closing a channel or a connection, or deleting a queue, is a list of independent steps
(cancel consumers, requeue what was unacked, delete exclusive queues, ...). A bug or an
unexpected state in one of them must not skip the others: that is how a dead connection's
exclusive queue would survive to lock everyone else out (405), or an unacked message would
never come back. Each step goes through `guarded`, which logs a failure with its traceback
at error level and lets the caller go on.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("minimq.teardown")


def guarded(what: str, fn: Callable[..., Any], *args: Any) -> bool:
    """Run one clean-up step; False (and an error log with traceback) if it raised."""
    try:
        fn(*args)
    except Exception:
        log.error("%s failed; the rest of the clean-up goes on", what, exc_info=True)
        return False
    return True
