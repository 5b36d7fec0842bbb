"""Connection and channel states of the server side, in one place.

Rules:
- A connection starts in AWAIT_HEADER. After the 8-byte protocol header the server sends
  connection.start and waits for start-ok, then sends tune and waits for tune-ok, then waits for
  connection.open. Only then (OPEN) do channel methods flow.
- Any frame that does not fit the current state is a hard error (503 COMMAND_INVALID or
  505 UNEXPECTED_FRAME) that closes the connection.
- When the server closes the connection (a hard error), it enters CLOSING: every frame is
  discarded except connection.close-ok (and a crossing connection.close, answered with
  close-ok), after which it is CLOSED.
- When the peer sends connection.close the server answers close-ok and is CLOSED.
- A channel is OPEN after channel.open. When the server closes it (a soft error) it is
  CLOSING: frames on it are discarded until channel.close-ok (or a crossing channel.close,
  answered with close-ok); then the number may be reused.
"""
from __future__ import annotations

from enum import Enum


class ConnState(Enum):
    AWAIT_HEADER = "await-header"
    AWAIT_START_OK = "await-start-ok"
    AWAIT_TUNE_OK = "await-tune-ok"
    AWAIT_OPEN = "await-open"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ChanState(Enum):
    OPEN = "open"
    CLOSING = "closing"
