"""The configuration file (`--config minimq.toml`) and how it meets the command line.

The file can say everything the flags say (same names: `port = 5673`, `data-dir = "..."`),
plus users, vhosts, permissions, topic permissions and limits. A flag given on the command
line wins over the file. Example:

    port = 5673
    loopback-users = []            # let guest in from anywhere (default ["guest"])
    definitions = "defs.json"      # a RabbitMQ definitions export, loaded at start

    [vhosts."/"]
    [vhosts.orders]
    limits = { max-connections = 100, max-queues = 50 }

    [users.alice]
    password = "secret"            # or password_hash (+ hashing_algorithm), as RabbitMQ exports
    tags = ["administrator"]
    limits = { max-channels = 64 }

    [[permissions]]
    user = "alice"
    vhost = "orders"
    configure = ".*"
    write = ".*"
    read = ".*"

    [[topic_permissions]]
    user = "alice"
    vhost = "orders"
    exchange = "amq.topic"
    write = "^alice\\."
    read = ".*"

A bad file stops the start with a message naming the key, never half-applies.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from minimq.broker.access import AccessControl

# Keys of the file that mirror flags: key -> (argparse dest, accepted Python types).
OPTIONS: dict[str, tuple[str, tuple[type, ...]]] = {
    "host": ("host", (str,)),
    "port": ("port", (int,)),
    "log-level": ("log_level", (str,)),
    "tls-cert": ("tls_cert", (str,)),
    "tls-key": ("tls_key", (str,)),
    "tls-port": ("tls_port", (int,)),
    "heartbeat": ("heartbeat", (int,)),
    "frame-max": ("frame_max", (int,)),
    "channel-max": ("channel_max", (int,)),
    "memory-high-watermark": ("memory_high_watermark", (int, float)),
    "disk-free-limit": ("disk_free_limit", (str, int, float)),
    "max-message-size": ("max_message_size", (int,)),
    "max-connections": ("max_connections", (int,)),
    "max-unauthenticated": ("max_unauthenticated", (int,)),
    "handshake-timeout": ("handshake_timeout", (int, float)),
    "tls-handshake-timeout": ("tls_handshake_timeout", (int, float)),
    "max-message-size": ("max_message_size", (int,)),
    "max-connections": ("max_connections", (int,)),
    "max-unauthenticated": ("max_unauthenticated", (int,)),
    "handshake-timeout": ("handshake_timeout", (int, float)),
    "tls-handshake-timeout": ("tls_handshake_timeout", (int, float)),
    "management-port": ("management_port", (int,)),
    "no-management": ("no_management", (bool,)),
    "management-rate-interval": ("management_rate_interval", (int, float)),
    "data-dir": ("data_dir", (str,)),
    "in-memory": ("in_memory", (bool,)),
    "definitions": ("definitions", (str,)),
}
ACCESS_KEYS = ("users", "vhosts", "permissions", "topic_permissions", "loopback-users")


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says where and why."""


@dataclass
class Config:
    """A parsed configuration file: flag defaults and the access-control part."""

    options: dict[str, Any] = field(default_factory=dict)  # argparse dest -> value
    users: dict[str, dict] = field(default_factory=dict)
    vhosts: dict[str, dict] = field(default_factory=dict)
    permissions: list[dict] = field(default_factory=list)
    topic_permissions: list[dict] = field(default_factory=list)
    loopback_users: list[str] | None = None


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict, where: str = "config") -> Config:
    config = Config()
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-") if raw_key not in ("topic_permissions",) else raw_key
        if key == "topic-permissions":
            key = "topic_permissions"
        if key in OPTIONS:
            dest, types = OPTIONS[key]
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise ConfigError(f"{where}: '{raw_key}' must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
            config.options[dest] = value
        elif key == "users":
            config.users = _table(value, where, "users")
            for name, entry in config.users.items():
                _known(entry, ("password", "password_hash", "hashing_algorithm", "tags", "limits"), where, f"users.{name}")
        elif key == "vhosts":
            if isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{where}: 'vhosts' must be a list of names or a table")
                config.vhosts = {v: {} for v in value}
            else:
                config.vhosts = _table(value, where, "vhosts")
                for name, entry in config.vhosts.items():
                    _known(entry, ("limits", "description", "tags"), where, f"vhosts.{name}")
        elif key in ("permissions", "topic_permissions"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}: '{raw_key}' must be an array of tables ([[{raw_key}]])")
            fields = ("user", "vhost", "configure", "write", "read") if key == "permissions" else (
                "user", "vhost", "exchange", "write", "read")
            for i, entry in enumerate(value):
                _known(entry, fields, where, f"{raw_key}[{i}]")
                for f in ("user", "vhost"):
                    if not isinstance(entry.get(f), str):
                        raise ConfigError(f"{where}: {raw_key}[{i}] needs '{f}'")
            setattr(config, key, list(value))
        elif key == "loopback-users":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: 'loopback-users' must be a list of user names")
            config.loopback_users = list(value)
        else:
            known = ", ".join([*OPTIONS, *ACCESS_KEYS])
            raise ConfigError(f"{where}: unknown key '{raw_key}' (known: {known})")
    # Validate the access part now, on a scratch model, so a bad entry stops the start.
    scratch = AccessControl()
    for entry in [*config.permissions, *config.topic_permissions]:
        scratch.add_user(entry["user"])  # may come from flags or definitions: names only here
    try:
        apply_access(scratch, config, vhosts_created=[])
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config


def apply_access(access: AccessControl, config: Config, vhosts_created: list[str]) -> None:
    """Put the file's users, permissions and limits into `access` (replacing same names).

    `vhosts_created`: collects the file's vhosts, for the caller to create in the broker.
    """
    for name, entry in config.users.items():
        tags = entry.get("tags", [])
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",")]
        if "password" in entry:
            access.add_user(name, str(entry["password"]), hashing_algorithm=entry.get("hashing_algorithm"), tags=tags)
        else:
            access.add_user(
                name, password_hash=str(entry.get("password_hash", "")),
                hashing_algorithm=entry.get("hashing_algorithm"), tags=tags,
            )
        if entry.get("limits"):
            access.set_user_limits(name, dict(entry["limits"]))
    for name, entry in config.vhosts.items():
        vhosts_created.append(name)
        if entry.get("limits"):
            access.set_vhost_limits(name, dict(entry["limits"]))
    for entry in config.permissions:
        access.set_permissions(
            entry["user"], entry["vhost"], str(entry.get("configure", "")), str(entry.get("write", "")),
            str(entry.get("read", "")),
        )
    for entry in config.topic_permissions:
        access.set_topic_permissions(
            entry["user"], entry["vhost"], str(entry.get("exchange", "")), str(entry.get("write", "")),
            str(entry.get("read", "")),
        )


def _table(value: Any, where: str, key: str) -> dict[str, dict]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{where}: '{key}' must be a table of tables ([{key}.NAME])")
    return value


def _known(entry: dict, fields: tuple[str, ...], where: str, what: str) -> None:
    for k in entry:
        if k not in fields:
            raise ConfigError(f"{where}: unknown key '{k}' in {what} (known: {', '.join(fields)})")
