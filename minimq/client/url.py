"""AMQP URLs: ``amqp://user:pass@host:port/vhost?heartbeat=30``.

The format is RabbitMQ's (https://www.rabbitmq.com/docs/uri-spec): user, password and vhost
are percent-encoded (``%2F`` is the vhost ``/``); an empty path or a bare ``/`` means the
default vhost ``/``. ``amqps://`` uses TLS (default port 5671).
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["ConnectionParameters", "parse_url"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ConnectionParameters:
    """Everything needed to open a connection; build one with `parse_url`.

    ``heartbeat``, ``frame_max`` and ``channel_max`` of ``None`` accept the broker's proposal.
    ``connection_timeout`` (seconds) bounds the TCP connect, the TLS handshake and the AMQP
    handshake together.
    """

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = "guest"
    virtual_host: str = "/"
    heartbeat: int | None = None
    frame_max: int | None = None
    channel_max: int | None = None
    connection_timeout: float = 10.0
    ssl: bool = False
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    server_hostname: str | None = None
    client_properties: dict[str, Any] | None = field(default=None, compare=False)

    def with_options(self, **changes: Any) -> ConnectionParameters:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def make_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to use, or None for plain TCP.

        Without an explicit ``ssl_context``, the system's default (verifying) context is used;
        the URL options ``cafile``, ``certfile``, ``keyfile`` and ``verify=false`` adjust it.
        """
        if not self.ssl:
            return None
        if self.ssl_context is not None:
            return self.ssl_context
        return ssl.create_default_context()

    def __str__(self) -> str:
        scheme = "amqps" if self.ssl else "amqp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.virtual_host}"


def _int_option(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"URL option {name} must be an integer, not {value!r}") from None
    if number < 0:
        raise ValueError(f"URL option {name} must not be negative")
    return number


def parse_url(url: str, **overrides: Any) -> ConnectionParameters:
    """Parse an ``amqp://`` or ``amqps://`` URL into `ConnectionParameters`.

    Query options: ``heartbeat`` (seconds, 0 disables), ``frame_max``, ``channel_max``,
    ``connection_timeout`` (seconds; RabbitMQ's URIs give it in milliseconds, so values above
    1000 are read as milliseconds), and for amqps ``cafile``, ``certfile``, ``keyfile``,
    ``verify`` (``false`` skips certificate checks), ``server_name``. Keyword ``overrides``
    replace fields afterwards (e.g. ``ssl_context=...``).

    >>> parse_url("amqp://u:p%40ss@example.org:5673/%2F?heartbeat=5").password
    'p@ss'
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise ValueError(f"not an AMQP URL (scheme {parts.scheme!r}): {url!r}")
    secure = scheme == "amqps"
    path = parts.path
    if path in ("", "/"):
        vhost = "/"
    else:
        vhost = unquote(path[1:])
        if "/" in path[1:]:
            raise ValueError(f"the vhost in {url!r} must be percent-encoded (%2F for '/')")
    values: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or (5671 if secure else 5672),
        "username": unquote(parts.username) if parts.username is not None else "guest",
        "password": unquote(parts.password) if parts.password is not None else "guest",
        "virtual_host": vhost,
        "ssl": secure,
    }
    tls: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "heartbeat":
            values["heartbeat"] = _int_option(key, value)
        elif key == "frame_max":
            values["frame_max"] = _int_option(key, value)
        elif key == "channel_max":
            values["channel_max"] = _int_option(key, value)
        elif key == "connection_timeout":
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"URL option connection_timeout must be a number: {value!r}") \
                    from None
            values["connection_timeout"] = seconds / 1000 if seconds > 1000 else seconds
        elif key in ("cafile", "certfile", "keyfile", "verify", "server_name"):
            tls[key] = value
        else:
            raise ValueError(f"unknown URL option {key!r}")
    if tls and secure:
        context = ssl.create_default_context(cafile=tls.get("cafile") or None)
        if tls.get("certfile"):
            context.load_cert_chain(tls["certfile"], tls.get("keyfile") or None)
        if tls.get("verify", "true").lower() not in _TRUE:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        values["ssl_context"] = context
        if tls.get("server_name"):
            values["server_hostname"] = tls["server_name"]
    values.update(overrides)
    return ConnectionParameters(**values)
