"""What one connection may cost the server: timeouts, connection counts, output credit.

The defaults are RabbitMQ 3.10's where it has one (handshake_timeout 10 s, TLS handshake
5 s, connection_max unlimited). The rest bound what a hostile or broken peer can make the
broker hold: connections that never finish the handshake, and output a client does not
read (above `output_high_water` bytes pending, the connection gets no more deliveries and
its input is not read until it drains below `output_low_water`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    handshake_timeout: float = 10.0
    """Seconds from accept to connection.open before the socket is dropped."""
    tls_handshake_timeout: float = 5.0
    """Seconds a TLS client has to finish its handshake (asyncio's default is 60)."""
    max_connections: int = 0
    """Open connections at most (0: unlimited); beyond it new sockets are closed at once."""
    max_unauthenticated: int = 1024
    """Connections still in the handshake at most; a new one beyond it drops the oldest."""
    output_high_water: int = 1024 * 1024
    """Bytes waiting to be written to one connection above which it gets no more."""
    output_low_water: int = 256 * 1024
    """...and below which it is served again."""
    input_slice: float = 0.01
    """Seconds of work on one connection's input before the others get their turn."""
