"""Both client drivers behind one blocking interface, for tests written once.

`minimq.client.sync` is used as it is. The asyncio client runs on an event loop in a thread
of its own, and `AsyncDriven` wraps each of its objects: every method call runs on that loop
(awaited when it returns an awaitable) and blocks the test until it is done, so a test reads
``ch.publish(b"x", "q")`` the same for both. Only where the two APIs correspond: a test of
something one client alone has stays in that client's own file.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable

import minimq.client as mc
from minimq.client import sync

from .conftest import TIMEOUT

_WRAPPED = (mc.Connection, mc.Channel, mc.Queue, mc.Exchange, mc.IncomingMessage,
            mc.message.ProcessContext)


class LoopThread:
    """An event loop running in a daemon thread until `stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, fn: Callable[[], Any], timeout: float = TIMEOUT * 3) -> Any:
        async def call() -> Any:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class AsyncDriven:
    """An asyncio-client object, used from the test's thread as if it were blocking."""

    def __init__(self, target: Any, runner: LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def _wrap(self, value: Any) -> Any:
        return AsyncDriven(value, self._runner) if isinstance(value, _WRAPPED) else value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value) or inspect.isfunction(value):
            def call(*args: Any, **kwargs: Any) -> Any:
                args = tuple(a._target if isinstance(a, AsyncDriven) else a for a in args)
                return self._wrap(self._runner.run(lambda: value(*args, **kwargs)))
            return call
        return self._wrap(value)

    def __enter__(self) -> Any:
        return self._wrap(self._runner.run(self._target.__aenter__))

    def __exit__(self, *exc: Any) -> None:
        self._runner.run(lambda: self._target.__aexit__(*exc))

    def __repr__(self) -> str:
        return f"AsyncDriven({self._target!r})"


class Driver:
    """``connect(url, **options)`` for one of the two clients; ``name`` says which."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner: LoopThread | None = LoopThread() if name == "async" else None

    def connect(self, url: str, **options: Any) -> Any:
        if self.runner is None:
            return sync.connect(url, **options)
        runner = self.runner
        return AsyncDriven(runner.run(lambda: mc.connect(url, **options)), runner)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
