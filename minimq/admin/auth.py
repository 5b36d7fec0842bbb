"""Who is asking: basic auth against the broker's users, and RabbitMQ's tag rules.

The only module of the management layer that knows how users are stored: the broker's
access control (`broker.access`, minimq.broker.access), whose users carry tags and per-vhost
permissions. Logins go through `broker.login`, so RabbitMQ's loopback_users rule (guest only
from localhost) holds for HTTP too.

Tag rules, as RabbitMQ's management plugin:
- no management tag: may not use the API at all (401 "Not management user");
- `management`: sees the vhosts it has permissions in, and only its own connections;
- `policymaker`: as management, and may also change the policies of its vhosts;
- `monitoring`: sees every vhost and every connection, changes nothing global;
- `administrator`: sees and may change everything (users, vhosts, permissions).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

MANAGEMENT_TAGS = {"management", "policymaker", "monitoring", "administrator"}


@dataclass(frozen=True)
class Principal:
    name: str
    tags: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags

    @property
    def is_monitor(self) -> bool:
        return self.is_admin or "monitoring" in self.tags

    @property
    def can_manage(self) -> bool:
        return bool(MANAGEMENT_TAGS.intersection(self.tags))


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an Authorization: Basic header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def authenticate(broker: Any, user: str, password: str, peer: str = "") -> Principal | None:
    u = broker.login(user, password, "HTTP basic", peer)
    if u is None:
        return None
    return Principal(u.name, tuple(u.tags))


def can_see_vhost(broker: Any, who: Principal, vhost: str) -> bool:
    """Monitoring and administrator users see every vhost; others those they may use."""
    return who.is_monitor or bool(broker.access.can_access_vhost(who.name, vhost))


def can_see_connection(who: Principal, owner: str) -> bool:
    return who.is_monitor or owner == who.name


def may(broker: Any, who: Principal, vhost: str, permission: str, kind: str, name: str) -> str | None:
    """None if `who` may do `permission` (configure/write/read) on a resource, else why not.

    The management API applies the user's AMQP permissions to what it is asked to do, as
    RabbitMQ does; administrators are not exempt from them there either.
    """
    try:
        broker.access.check(who.name, vhost, permission, kind, name)
    except Exception as exc:  # AccessRefused: its text is RabbitMQ's
        return getattr(exc, "reply_text", None) or str(exc)
    return None
