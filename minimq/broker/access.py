"""Users, permissions and limits, as RabbitMQ's internal auth backend keeps them.

Pure: no I/O, no clock. The broker asks three questions of it: may this user log in
(`authenticate`), may it open this vhost (`can_access_vhost`), may it do this to that resource
(`check`). Everything that changes the model calls `on_change` afterwards, so the owner can
persist it, and bumps `version`, so callers that cache answers (a channel remembers that it may
publish to an exchange) know when to forget them.

Passwords are stored the way RabbitMQ stores them (and exports them in definitions): base64 of
a 4-byte salt followed by hash(salt + UTF-8 password). That is what lets a definitions file
exported from RabbitMQ be loaded here and its users log in with their own passwords.

Permission regexes are searched, not matched (RabbitMQ runs `re:run` unanchored), and the
empty regex means "nothing" (RabbitMQ rewrites it to `^$`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from minimq.codec.errors import AccessRefused

__all__ = [
    "SHA256",
    "SHA512",
    "MD5",
    "HASHING_ALGORITHMS",
    "USER_TAGS",
    "hash_password",
    "User",
    "Permissions",
    "AccessControl",
    "FULL",
]

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
HASHING_ALGORITHMS: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    SHA256: hashlib.sha256,
    SHA512: hashlib.sha512,
    MD5: hashlib.md5,
}
USER_TAGS = ("administrator", "monitoring", "policymaker", "management", "impersonator")

VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


def hash_password(password: str, algorithm: str = SHA256, *, salt: bytes | None = None) -> str:
    """RabbitMQ's password_hash: base64(salt + H(salt + password)), with a 4-byte salt."""
    digest = _digest(algorithm)
    salt = os.urandom(4) if salt is None else salt
    raw = salt + digest(salt + password.encode("utf-8")).digest()
    return base64.b64encode(raw).decode("ascii")


def _digest(algorithm: str):
    try:
        return HASHING_ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown password hashing algorithm {algorithm!r} (known: {', '.join(HASHING_ALGORITHMS)})"
        ) from None


@dataclass
class User:
    """A user as RabbitMQ's internal backend keeps it; an empty hash means no password login."""

    name: str
    password_hash: str = ""
    hashing_algorithm: str = SHA256
    tags: list[str] = field(default_factory=list)

    def check_password(self, password: str) -> bool:
        if not self.password_hash:
            return False
        try:
            raw = base64.b64decode(self.password_hash, validate=True)
            digest = _digest(self.hashing_algorithm)
        except (ValueError, TypeError):
            return False
        if len(raw) < 5:
            return False
        salt, expected = raw[:4], raw[4:]
        actual = digest(salt + password.encode("utf-8")).digest()
        return hmac.compare_digest(actual, expected)


@dataclass
class Permissions:
    """configure / write / read regexes (sources, as RabbitMQ stores them)."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def regex(self, permission: str) -> str:
        return getattr(self, permission)


FULL = Permissions(".*", ".*", ".*")

_regex_cache: dict[str, re.Pattern | None] = {}


def _compiled(source: str) -> re.Pattern | None:
    """A compiled permission regex; None for one that does not compile (matches nothing)."""
    pattern = _regex_cache.get(source, False)
    if pattern is False:
        try:
            pattern = re.compile(source or "^$")
        except re.error:
            pattern = None
        if len(_regex_cache) > 4096:
            _regex_cache.clear()
        _regex_cache[source] = pattern
    return pattern  # type: ignore[return-value]


def regex_matches(source: str, name: str) -> bool:
    pattern = _compiled(source)
    return pattern is not None and pattern.search(name) is not None


MAX_REGEX_LENGTH = 4096


def validate_regex(source: str) -> None:
    """Raise ValueError for a permission regex that does not compile (RabbitMQ refuses it),
    or that could backtrack catastrophically.

    Python's `re` cannot be interrupted, and a permission regex runs on the broker's one
    event loop for every declare, bind and publish it guards: `(a+)+b` against a 26-byte
    queue name takes 20 s. RabbitMQ's PCRE has a match limit; we refuse such patterns up front
    (a repeated group that itself repeats, or alternates between branches that can start
    alike), and patterns that may try more than MAX_REGEX_SPLITS ways to split a name
    (three `.*` in a row), which no usual permission needs.
    """
    if len(source) > MAX_REGEX_LENGTH:
        raise ValueError(f"invalid regular expression: longer than {MAX_REGEX_LENGTH} characters")
    try:
        re.compile(source)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {source!r}: {exc}") from None
    except RecursionError:
        raise ValueError("invalid regular expression: nested too deeply") from None
    if _may_backtrack(source):
        raise ValueError(
            f"regular expression {source!r} refused: it can take exponential or high polynomial "
            "time to match (a repeated group that contains a repetition or an ambiguous "
            "alternation, such as (a+)+ or (a|aa)*, or more than two unbounded repetitions "
            "in a row, such as .*a.*b.*)"
        )


def _unambiguous_words(body: str) -> bool:
    """Whether a group's body is an alternation of plain words that start with different
    characters, such as `foo|bar`: repeated, it still splits any name in one way only, so
    matching it is linear. (RabbitMQ definitions files use such groups: `^(dev|prod)\\.`.)"""
    if body.startswith("?:"):
        body = body[2:]
    firsts: set[str] = set()
    for branch in body.split("|"):
        if not branch:
            return False
        i = 0
        first = ""
        while i < len(branch):
            c = branch[i]
            if c == "\\":
                nxt = branch[i + 1:i + 2]
                if not nxt or nxt.isalnum():  # \d, \w, \b...: classes and anchors
                    return False
                c, i = nxt, i + 2
            elif c in ".^$[](){}*+?":
                return False
            else:
                i += 1
            first = first or c.casefold()  # (?i) may be on
        if first in firsts:
            return False
        firsts.add(first)
    return True


#: Names, routing keys and exchange names are at most 255 bytes: a repetition can take at most
#: this many lengths when it splits one.
_SPLITS = 256
#: The most ways to split a name a permission regex may try (with every start position, about
#: 10 ms of `re` time): two unbounded repetitions (`.*a.*`) fit, three (`.*a.*b.*`, 0.2–16 s
#: on a crafted 255-byte name) do not.
MAX_REGEX_SPLITS = _SPLITS * _SPLITS * 4


def _may_backtrack(source: str) -> bool:
    """Whether matching could take more than polynomial time of a low degree (a conservative
    test): a repeated group that contains a repetition or an ambiguous alternation is
    exponential; otherwise the cost grows with the product of how many lengths each
    repetition and how many branches each alternation can try."""
    frames = [[False, 1, 0]]  # per open group: [contains a quantifier, branches, start]
    splits = 1
    i, n = 0, len(source)
    prev = ""
    while i < n:
        c = source[i]
        if c == "\\":
            i += 2
            prev = "x"
            continue
        if c == "[":  # a character class: quantifier characters inside are literals
            j = i + 1
            if j < n and source[j] == "^":
                j += 1
            if j < n and source[j] == "]":
                j += 1
            while j < n and source[j] != "]":
                j += 2 if source[j] == "\\" else 1
            i = j + 1
            prev = "x"
            continue
        if c == "(":
            frames.append([False, 1, i + 1])
            i += 1
            if i < n and source[i] == "?":  # (?:...), (?P<name>...), lookarounds, flags
                i += 1
            prev = "("
            continue
        if c == ")":
            quant, branches, start = frames.pop() if len(frames) > 1 else (False, 1, i)
            repeated = i + 1 < n and source[i + 1] in "*+{"
            if repeated and (quant or (branches > 1 and not _unambiguous_words(source[start:i]))):
                return True
            splits *= branches
            frames[-1][0] = frames[-1][0] or quant or repeated
            prev = ")"
            i += 1
            continue
        if c in "*+{" or (c == "?" and prev not in ("(", "q")):
            lengths = _SPLITS if c in "*+" else 2
            if c == "{":
                j = source.find("}", i)
                bounds = source[i + 1:j].split(",") if j > 0 else []
                if len(bounds) == 1 and bounds[0].isdigit():
                    lengths = 1
                elif len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
                    lengths = min(_SPLITS, max(1, int(bounds[1]) - int(bounds[0]) + 1))
                elif len(bounds) == 2 and bounds[0].isdigit() and not bounds[1]:
                    lengths = _SPLITS
                elif len(bounds) == 2 and not bounds[0] and bounds[1].isdigit():
                    lengths = min(_SPLITS, int(bounds[1]) + 1)
                else:  # not a quantifier to `re`: a literal brace
                    lengths = 1
            splits *= lengths
            frames[-1][0] = True
            prev = "q"
        elif c == "|":
            frames[-1][1] += 1
            prev = "|"
        else:
            prev = "x"
        i += 1
    return splits * frames[0][1] > MAX_REGEX_SPLITS


class AccessControl:
    """The users, their permissions per vhost, topic permissions and limits.

    `version` grows on every change; `on_change` (when set) runs after every change.
    """

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permissions] = {}
        self.topic_permissions: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.vhost_limits: dict[str, dict[str, int]] = {}
        self.user_limits: dict[str, dict[str, int]] = {}
        self.on_change: Callable[[], None] | None = None
        # The broker's hook to forget cached answers (set by the Broker using this model).
        self.on_invalidate: Callable[[], None] | None = None
        # The broker's hook to close a deleted user's connections (as RabbitMQ does).
        self.on_user_deleted: Callable[[str], None] | None = None
        self.version = 0

    @classmethod
    def default(cls) -> "AccessControl":
        """What a fresh RabbitMQ node has: guest/guest, administrator, full rights on '/'."""
        access = cls()
        access.add_user("guest", "guest", tags=("administrator",))
        access.set_permissions("guest", "/", ".*", ".*", ".*")
        return access

    def changed(self) -> None:
        self.version += 1
        if self.on_invalidate is not None:
            self.on_invalidate()
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ users

    def add_user(
        self,
        name: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        hashing_algorithm: str | None = None,
        tags: Iterable[str] = (),
    ) -> User:
        """Add (or replace) a user from a clear-text password or a RabbitMQ password hash."""
        if not name:
            raise ValueError("a user needs a name")
        algorithm = hashing_algorithm or SHA256
        _digest(algorithm)
        if password is not None:
            password_hash = hash_password(password, algorithm)
        tag_list = [t for t in (tag.strip() for tag in _split_tags(tags)) if t]
        user = User(name, password_hash or "", algorithm, tag_list)
        self.users[name] = user
        self.changed()
        return user

    def delete_user(self, name: str) -> bool:
        """Remove a user with its permissions and limits (as RabbitMQ's delete_user)."""
        if self.users.pop(name, None) is None:
            return False
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[1] == name]:
            del self.topic_permissions[key]
        self.user_limits.pop(name, None)
        self.changed()
        if self.on_user_deleted is not None:
            self.on_user_deleted(name)
        return True

    def set_tags(self, name: str, tags: Iterable[str]) -> None:
        self._user(name).tags = [t for t in _split_tags(tags) if t]
        self.changed()

    def _user(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise KeyError(f"no such user: {name!r}")
        return user

    # ------------------------------------------------------------ permissions

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._user(user)
        for source in (configure, write, read):
            validate_regex(source)
        self.permissions[(vhost, user)] = Permissions(configure, write, read)
        self.changed()

    def clear_permissions(self, user: str, vhost: str) -> bool:
        if self.permissions.pop((vhost, user), None) is None:
            return False
        self.changed()
        return True

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str, read: str) -> None:
        self._user(user)
        for source in (write, read):
            validate_regex(source)
        self.topic_permissions[(vhost, user, exchange)] = (write, read)
        self.changed()

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> bool:
        keys = [
            k for k in self.topic_permissions
            if k[0] == vhost and k[1] == user and (exchange is None or k[2] == exchange)
        ]
        for key in keys:
            del self.topic_permissions[key]
        if keys:
            self.changed()
        return bool(keys)

    def forget_vhost(self, vhost: str) -> None:
        """A vhost was deleted: its permissions and limits go with it (as in RabbitMQ)."""
        keys = [k for k in self.permissions if k[0] == vhost]
        tkeys = [k for k in self.topic_permissions if k[0] == vhost]
        for key in keys:
            del self.permissions[key]
        for key in tkeys:
            del self.topic_permissions[key]
        had_limits = self.vhost_limits.pop(vhost, None) is not None
        if keys or tkeys or had_limits:
            self.changed()

    # ----------------------------------------------------------------- limits

    def set_vhost_limits(self, vhost: str, limits: dict[str, int]) -> None:
        """Replace a vhost's limits; a negative value means no limit (RabbitMQ's convention)."""
        self.vhost_limits[vhost] = _limits(limits, VHOST_LIMITS)
        if not self.vhost_limits[vhost]:
            del self.vhost_limits[vhost]
        self.changed()

    def set_user_limits(self, user: str, limits: dict[str, int]) -> None:
        self._user(user)
        self.user_limits[user] = _limits(limits, USER_LIMITS)
        if not self.user_limits[user]:
            del self.user_limits[user]
        self.changed()

    def vhost_limit(self, vhost: str, name: str) -> int | None:
        value = self.vhost_limits.get(vhost, {}).get(name)
        return None if value is None or value < 0 else value

    def user_limit(self, user: str, name: str) -> int | None:
        value = self.user_limits.get(user, {}).get(name)
        return None if value is None or value < 0 else value

    # ---------------------------------------------------------------- queries

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None or not user.check_password(password):
            return None
        return user

    def can_access_vhost(self, user: str, vhost: str) -> bool:
        return (vhost, user) in self.permissions

    def allowed(self, user: str, vhost: str, permission: str, name: str) -> bool:
        perms = self.permissions.get((vhost, user))
        return perms is not None and regex_matches(getattr(perms, permission), name)

    def check(self, user: str, vhost: str, permission: str, kind: str, name: str) -> None:
        """Raise RabbitMQ's 403 unless `user` has `permission` on resource `kind` `name`.

        The default exchange is checked (and named) as 'amq.default', as RabbitMQ does.
        """
        if not name and kind == "exchange":
            name = "amq.default"
        if not self.allowed(user, vhost, permission, name):
            raise AccessRefused(f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")

    def topic_restricted(self, user: str, vhost: str, exchange: str) -> bool:
        """Whether routing keys on `exchange` are checked at all for this user."""
        return bool(self.topic_permissions) and (vhost, user, exchange) in self.topic_permissions

    def topic_allowed(self, user: str, vhost: str, exchange: str, permission: str, routing_key: str) -> bool:
        """Topic authorisation: no topic permission for the exchange means allowed.

        The regexes may use {username} and {vhost}, expanded as RabbitMQ does.
        """
        entry = self.topic_permissions.get((vhost, user, exchange))
        if entry is None:
            return True
        source = entry[0] if permission == "write" else entry[1]
        if "{" in source:
            source = source.replace("{username}", re.escape(user)).replace("{vhost}", re.escape(vhost))
        return regex_matches(source, routing_key)

    def check_topic(self, user: str, vhost: str, exchange: str, permission: str, routing_key: str) -> None:
        if not self.topic_allowed(user, vhost, exchange, permission, routing_key):
            raise AccessRefused(
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' "
                f"refused for user '{user}'"
            )


def _split_tags(tags: Iterable[str] | str) -> list[str]:
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",")]
    return [str(t).strip() for t in tags]


def _limits(limits: dict[str, int], known: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in limits.items():
        if key not in known:
            raise ValueError(f"unknown limit {key!r} (known: {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"limit {key!r} must be an integer, got {value!r}")
        out[key] = value
    return out
