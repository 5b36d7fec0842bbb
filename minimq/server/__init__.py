"""The asyncio transport and listeners (the only layer that touches sockets)."""
from minimq.server.app import Server, make_ssl_context

__all__ = ["Server", "make_ssl_context"]
