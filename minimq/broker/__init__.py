"""The broker core: pure, synchronous state and routing (no sockets, no asyncio, no clock)."""
from minimq.broker.broker import Broker

__all__ = ["Broker"]
