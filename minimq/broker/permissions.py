"""Access control as a channel applies it: RabbitMQ's permission checks for each method.

The answers already given are remembered per connection (the session's `acl_cache`,
`write_ok`, `topic_ok`; the broker clears them whenever users or permissions change): a
repeated declare or publish costs a set lookup, not a regex search.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minimq.broker.exchange import Exchange

# Access-control answers remembered per connection, per cache. Kept small: the caches are not
# counted by the memory alarm, and a client can fill them with distinct names (up to 255
# bytes each) on every connection it opens; a miss only costs one regex search.
ACL_CACHE_MAX = 256


class PermissionChecks:
    """Mixed into `Channel`: the checks its handlers make before they act."""

    def _allow(self, permission: str, kind: str, name: str) -> None:
        """Raise RabbitMQ's 403 unless this connection's user may do `permission` on it."""
        key = (permission, kind, name)
        cache = self.session.acl_cache
        if key in cache:
            return
        self.services.access.check(self.session.user, self.vhost.name, permission, kind, name)
        if len(cache) >= ACL_CACHE_MAX:
            cache.clear()
        cache.add(key)

    def _allow_topic_read(self, ex: Exchange | None, routing_key: str) -> None:
        """Binding to a topic exchange: read permission on the binding key (topic permissions)."""
        if ex is None or ex.type_name != "topic":
            return
        access = self.services.access
        if access.topic_restricted(self.session.user, self.vhost.name, ex.name):
            access.check_topic(self.session.user, self.vhost.name, ex.name, "read", routing_key)
