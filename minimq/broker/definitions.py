"""RabbitMQ definitions (the JSON `rabbitmqctl export_definitions` writes), both ways.

Pure: takes and returns plain dicts; reading and writing files is the caller's business.
The shape follows RabbitMQ 3.10 so a file exported there loads here and the other way round:
users (password hashes, not passwords), vhosts, permissions, topic permissions, parameters
(vhost limits are the `vhost-limits` component), global parameters, policies, queues,
exchanges, bindings. Policies are applied (minimq.broker.policies). Operator policies are
not in RabbitMQ's export; minimq's data dir keeps them under "operator_policies"
(`operator_policies=True`), which an import reads too.
"""
from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import minimq
from minimq.broker.access import SHA256
from minimq.broker.exchange import Exchange
from minimq.broker.policies import PolicyError

if TYPE_CHECKING:
    from minimq.broker.broker import Broker

log = logging.getLogger("minimq.definitions")

RABBIT_VERSION = "3.10.8"


class DefinitionsError(ValueError):
    """A definitions document that cannot be loaded (says which entry and why)."""


def export_definitions(broker: "Broker", vhost: str | None = None, *, topology: bool = True,
                       operator_policies: bool = False) -> dict:
    """The broker's definitions; one vhost's only when `vhost` is given (as RabbitMQ's
    per-vhost export: no users, no global parameters). `topology=False` leaves out queues,
    exchanges and bindings (what the data dir keeps for access control); operator policies
    are added under "operator_policies" when asked for (RabbitMQ's export has none)."""
    access = broker.access
    names = [vhost] if vhost is not None else sorted(broker.vhosts)
    wanted = set(names)
    out: dict[str, Any] = {"rabbit_version": RABBIT_VERSION, "rabbitmq_version": RABBIT_VERSION}
    if vhost is None:
        out["product_name"] = "minimq"
        out["product_version"] = minimq.__version__
        out["users"] = [
            {
                "name": u.name,
                "password_hash": u.password_hash,
                "hashing_algorithm": u.hashing_algorithm,
                "tags": list(u.tags),
                "limits": dict(access.user_limits.get(u.name, {})),
            }
            for u in access.users.values()
        ]
        out["vhosts"] = [
            {
                "name": name,
                "limits": [[k, v] for k, v in access.vhost_limits.get(name, {}).items()],
                "metadata": copy.deepcopy(broker.vhost_metadata.get(name, {"description": "", "tags": []})),
            }
            for name in names
        ]
        out["permissions"] = [
            {"user": user, "vhost": vh, "configure": p.configure, "write": p.write, "read": p.read}
            for (vh, user), p in access.permissions.items()
            if vh in wanted
        ]
        out["topic_permissions"] = [
            {"user": user, "vhost": vh, "exchange": ex, "write": w, "read": r}
            for (vh, user, ex), (w, r) in access.topic_permissions.items()
            if vh in wanted
        ]
    params = [
        {"vhost": vh, "component": "vhost-limits", "name": "limits", "value": dict(limits)}
        for vh, limits in access.vhost_limits.items()
        if vh in wanted
    ]
    params.extend(copy.deepcopy(p) for p in broker.parameters if p.get("vhost") in wanted)
    out["parameters"] = params
    if vhost is None:
        out["global_parameters"] = copy.deepcopy(broker.global_parameters)
    out["policies"] = broker.policies.export(wanted)
    if operator_policies:
        out["operator_policies"] = broker.policies.export(wanted, operator=True)
    if topology:
        queues: list[dict] = []
        exchanges: list[dict] = []
        bindings: list[dict] = []
        for name in names:
            vh = broker.vhosts.get(name)
            if vh is None:
                continue
            for q in vh.queues.values():
                if q.exclusive:
                    continue
                queues.append({
                    "name": q.name, "vhost": name, "durable": q.durable, "auto_delete": q.auto_delete,
                    "arguments": _jsonable(q.arguments), "type": q.args.queue_type or "classic",
                })
            for ex in vh.exchanges.values():
                if _builtin(ex.name):
                    continue
                exchanges.append({
                    "name": ex.name, "vhost": name, "type": ex.type_name, "durable": ex.durable,
                    "auto_delete": ex.auto_delete, "internal": ex.internal,
                    "arguments": _jsonable(ex.arguments),
                })
            for ex in vh.exchanges.values():
                if ex.is_default:
                    continue
                for dest, key, args in ex.kind.bindings():
                    is_x = isinstance(dest, Exchange)
                    if not is_x and dest.exclusive:
                        continue
                    bindings.append({
                        "source": ex.name, "vhost": name, "destination": dest.name,
                        "destination_type": "exchange" if is_x else "queue",
                        "routing_key": key, "arguments": _jsonable(args),
                    })
        out["queues"] = queues
        out["exchanges"] = exchanges
        out["bindings"] = bindings
    return out


def import_definitions(broker: "Broker", data: dict) -> None:
    """Load definitions into the broker, adding to (and replacing) what is there.

    Order as RabbitMQ: users, vhosts, permissions, topic permissions, parameters, global
    parameters, policies, exchanges, queues, bindings. A bad entry raises DefinitionsError
    naming it; entries before it stay loaded.
    """
    if not isinstance(data, dict):
        raise DefinitionsError("definitions must be a JSON object")
    access = broker.access
    # One change notification at the end, not one per entry.
    on_change, access.on_change = access.on_change, None
    try:
        with broker.policies.batch():
            _import(broker, data)
    finally:
        access.on_change = on_change
    access.changed()


def _import(broker: "Broker", data: dict) -> None:
    access = broker.access
    for entry in _entries(data, "users"):
        name = _field(entry, "users", "name")
        algorithm = entry.get("hashing_algorithm") or SHA256
        try:
            if "password" in entry and "password_hash" not in entry:
                access.add_user(name, str(entry["password"]), hashing_algorithm=algorithm, tags=_tags(entry))
            else:
                access.add_user(
                    name, password_hash=str(entry.get("password_hash") or ""), hashing_algorithm=algorithm,
                    tags=_tags(entry),
                )
            limits = entry.get("limits") or {}
            if limits:
                access.set_user_limits(name, {k: int(v) for k, v in limits.items()})
        except (ValueError, TypeError) as exc:
            raise DefinitionsError(f"user {name!r}: {exc}") from None
    for entry in _entries(data, "vhosts"):
        name = _field(entry, "vhosts", "name")
        broker.add_vhost(name)
        metadata = entry.get("metadata")
        if isinstance(metadata, dict):
            broker.vhost_metadata[name] = copy.deepcopy(metadata)
        elif entry.get("description") or entry.get("tags"):
            broker.vhost_metadata[name] = {"description": entry.get("description", ""), "tags": entry.get("tags", [])}
    for entry in _entries(data, "permissions"):
        user, vhost = _field(entry, "permissions", "user"), _field(entry, "permissions", "vhost")
        if user not in access.users:
            log.warning("definitions: permissions for unknown user %r in vhost %r skipped", user, vhost)
            continue
        broker.add_vhost(vhost)
        try:
            access.set_permissions(
                user, vhost, str(entry.get("configure", "")), str(entry.get("write", "")), str(entry.get("read", ""))
            )
        except ValueError as exc:
            raise DefinitionsError(f"permissions of {user!r} in vhost {vhost!r}: {exc}") from None
    for entry in _entries(data, "topic_permissions"):
        user, vhost = _field(entry, "topic_permissions", "user"), _field(entry, "topic_permissions", "vhost")
        if user not in access.users:
            log.warning("definitions: topic permissions for unknown user %r skipped", user)
            continue
        try:
            access.set_topic_permissions(
                user, vhost, str(entry.get("exchange", "")), str(entry.get("write", "")), str(entry.get("read", ""))
            )
        except ValueError as exc:
            raise DefinitionsError(f"topic permissions of {user!r} in vhost {vhost!r}: {exc}") from None
    for entry in _entries(data, "parameters"):
        vhost = _field(entry, "parameters", "vhost")
        if entry.get("component") == "vhost-limits":
            value = entry.get("value") or {}
            try:
                access.set_vhost_limits(vhost, {k: int(v) for k, v in dict(value).items()})
            except (ValueError, TypeError) as exc:
                raise DefinitionsError(f"limits of vhost {vhost!r}: {exc}") from None
            continue
        _replace(broker.parameters, entry, ("vhost", "component", "name"))
    for entry in _entries(data, "global_parameters"):
        if entry.get("name") in ("cluster_name", "internal_cluster_id"):
            continue  # properties of the node that exported them
        _replace(broker.global_parameters, entry, ("name",))
    for key, operator in (("policies", False), ("operator_policies", True)):
        for entry in _entries(data, key):
            vhost, name = _field(entry, key, "vhost"), _field(entry, key, "name")
            broker.add_vhost(vhost)
            try:
                broker.policies.load(entry, operator=operator)
            except PolicyError as exc:
                raise DefinitionsError(f"policy {name!r} in vhost {vhost!r}: {exc}".rstrip()) from None
    for entry in _entries(data, "exchanges"):
        name, vhost = _field(entry, "exchanges", "name"), _field(entry, "exchanges", "vhost")
        if _builtin(name):
            continue
        try:
            broker.add_vhost(vhost).declare_exchange(
                name, str(entry.get("type", "direct")), durable=bool(entry.get("durable", True)),
                auto_delete=bool(entry.get("auto_delete", False)), internal=bool(entry.get("internal", False)),
                arguments=dict(entry.get("arguments") or {}),
            )
        except Exception as exc:
            raise DefinitionsError(f"exchange {name!r} in vhost {vhost!r}: {exc}") from None
    for entry in _entries(data, "queues"):
        name, vhost = _field(entry, "queues", "name"), _field(entry, "queues", "vhost")
        arguments = dict(entry.get("arguments") or {})
        qtype = entry.get("type")
        if qtype and qtype != "classic" and "x-queue-type" not in arguments:
            arguments["x-queue-type"] = qtype
        try:
            broker.add_vhost(vhost).declare_queue(
                name, None, durable=bool(entry.get("durable", True)),
                auto_delete=bool(entry.get("auto_delete", False)), arguments=arguments,
            )
        except Exception as exc:
            raise DefinitionsError(f"queue {name!r} in vhost {vhost!r}: {exc}") from None
    for entry in _entries(data, "bindings"):
        vhost = _field(entry, "bindings", "vhost")
        source, dest = str(entry.get("source", "")), _field(entry, "bindings", "destination")
        vh = broker.add_vhost(vhost)
        try:
            src = vh.get_exchange(source)
            target = vh.get_exchange(dest) if entry.get("destination_type") == "exchange" else vh.get_queue(dest)
            vh.bind(src, target, str(entry.get("routing_key", "")), dict(entry.get("arguments") or {}))
        except Exception as exc:
            raise DefinitionsError(f"binding {source!r} -> {dest!r} in vhost {vhost!r}: {exc}") from None


def _entries(data: dict, key: str) -> list[dict]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise DefinitionsError(f"'{key}' must be a list of objects")
    return value


def _field(entry: dict, section: str, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise DefinitionsError(f"an entry of '{section}' lacks '{key}': {entry!r}"[:300])
    return value


def _tags(entry: dict) -> list[str]:
    tags = entry.get("tags") or []
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    return [str(t) for t in tags]


def _replace(items: list[dict], entry: dict, keys: tuple[str, ...]) -> None:
    ident = tuple(entry.get(k) for k in keys)
    items[:] = [p for p in items if tuple(p.get(k) for k in keys) != ident]
    items.append(copy.deepcopy(entry))


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")


def _jsonable(value: Any) -> Any:
    """AMQP table values as JSON can hold them (bytes as text, Int64 and friends as int)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
