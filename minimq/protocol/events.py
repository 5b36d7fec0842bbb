"""Events the server-side protocol hands to the layer above.

They are small slotted classes rather than dataclasses: one is made per published message on
the hot path, so construction cost matters more than convenience.
"""
from __future__ import annotations

from typing import Any


class Event:
    __slots__ = ()


class ConnectionOpened(Event):
    """The handshake finished: the peer is authenticated and attached to a vhost."""

    __slots__ = ("user", "vhost", "client_properties")

    def __init__(self, user: str, vhost: str, client_properties: dict) -> None:
        self.user = user
        self.vhost = vhost
        self.client_properties = client_properties


class ChannelOpened(Event):
    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelClosed(Event):
    """A channel is gone (closed by the peer, or its close handshake completed).

    The layer above releases what the channel held: consumers, unacked messages.
    """

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class MethodReceived(Event):
    """A method without content on an open channel (queue.declare, basic.ack, ...)."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: Any) -> None:
        self.channel = channel
        self.method = method


class ContentReceived(Event):
    """A content-bearing method with its header and full body (basic.publish).

    `header` is the content-header frame payload exactly as it arrived (class id, weight,
    body size, property flags and properties): the broker keeps those bytes and only decodes
    properties when a feature needs them.
    """

    __slots__ = ("channel", "method", "header", "body")

    def __init__(self, channel: int, method: Any, header: bytes, body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.header = header
        self.body = body


class ConnectionClosed(Event):
    """The connection is finished: the transport should flush what is pending and close.

    `error` is the AMQPError that made the server close it, or None for a clean close by the
    peer.
    """

    __slots__ = ("error",)

    def __init__(self, error: Any = None) -> None:
        self.error = error
