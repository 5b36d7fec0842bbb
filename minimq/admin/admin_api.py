"""Users, permissions and definitions over HTTP (RabbitMQ's /api/users, /api/permissions,
/api/topic-permissions, /api/definitions).

Reads and writes go through the broker's access control (minimq.broker.access) and
minimq.broker.definitions, the code --definitions and `minimq definitions` use too.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from minimq.admin.auth import Principal
from minimq.admin.http import Request, Response
from minimq.admin.api import bad_request, json_response, no_content, not_found
from minimq.broker import definitions as definitions_mod

def users(api: Any) -> list[dict]:
    access = api.broker.access
    return [
        {"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": u.hashing_algorithm,
         "tags": list(u.tags), "limits": dict(access.user_limits.get(u.name, {}))}
        for u in list(access.users.values())
    ]


def permissions(api: Any) -> list[dict]:
    return [
        {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
        for (vhost, user), p in list(api.broker.access.permissions.items())
    ]


def topic_permissions(api: Any) -> list[dict]:
    return [
        {"user": user, "vhost": vhost, "exchange": exchange, "write": w, "read": r}
        for (vhost, user, exchange), (w, r) in list(api.broker.access.topic_permissions.items())
    ]


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return []


async def route(api: Any, request: Request, who: Principal, head: str, seg: list[str]) -> Response:
    method = "GET" if request.method == "HEAD" else request.method
    if head == "definitions":
        return await definitions(api, request, who, seg)
    if head == "users":
        api.require_admin(who)
        if not seg:
            api.allow(method, "GET")
            return await api.list_response(request, users(api))
        if seg == ["without-permissions"]:
            api.allow(method, "GET")
            granted = {p["user"] for p in permissions(api)}
            return json_response([u for u in users(api) if u["name"] not in granted])
        if seg == ["bulk-delete"]:
            api.allow(method, "POST")
            body = api.body_json(request)
            for name in (body.get("users") or []) if isinstance(body, dict) else []:
                _delete_user(api, name)
            return no_content()
        name = seg[0]
        if len(seg) == 2 and seg[1] in ("permissions", "topic-permissions"):
            api.allow(method, "GET")
            items = permissions(api) if seg[1] == "permissions" else topic_permissions(api)
            if not any(u["name"] == name for u in users(api)):
                raise not_found()
            return json_response([p for p in items if p["user"] == name])
        if len(seg) != 1:
            raise not_found()
        api.allow(method, "GET", "PUT", "DELETE")
        if method == "GET":
            found = [u for u in users(api) if u["name"] == name]
            if not found:
                raise not_found()
            return json_response(found[0])
        if method == "DELETE":
            if not _delete_user(api, name):
                raise not_found()
            return no_content()
        body = api.body_json(request)
        if not isinstance(body, dict):
            raise bad_request("not_json")
        return _put_user(api, name, body)
    if head in ("permissions", "topic-permissions"):
        items = permissions(api) if head == "permissions" else topic_permissions(api)
        if not seg:
            api.allow(method, "GET")
            api.require_admin(who)
            return await api.list_response(request, items)
        if len(seg) != 2:
            raise not_found()
        vhost, user = seg
        if vhost not in api.broker.vhosts or not any(u["name"] == user for u in users(api)):
            raise not_found()
        api.allow(method, "GET", "PUT", "DELETE")
        api.require_admin(who)
        if method == "GET":
            found = [p for p in items if p["vhost"] == vhost and p["user"] == user]
            if not found:
                raise not_found()
            return json_response(found if head == "topic-permissions" else found[0])
        access = api.broker.access
        if method == "DELETE":
            if head == "permissions":
                access.clear_permissions(user, vhost)
            else:
                access.clear_topic_permissions(user, vhost)
            return no_content()
        body = api.body_json(request)
        if not isinstance(body, dict):
            raise bad_request("not_json")
        existed = any(p["vhost"] == vhost and p["user"] == user for p in items)
        try:
            if head == "permissions":
                for key in ("configure", "write", "read"):
                    if not isinstance(body.get(key), str):
                        raise bad_request(f"key_missing: {key}")
                access.set_permissions(user, vhost, body["configure"], body["write"], body["read"])
            else:
                for key in ("exchange", "write", "read"):
                    if not isinstance(body.get(key), str):
                        raise bad_request(f"key_missing: {key}")
                access.set_topic_permissions(user, vhost, body["exchange"], body["write"], body["read"])
        except (ValueError, KeyError) as exc:
            raise bad_request(str(exc)) from None
        return no_content() if existed else Response(201, b"")
    if head in ("policies", "operator-policies"):
        from minimq.admin import policies_api

        return await policies_api.route(api, request, who, head, seg)
    if head in ("vhost-limits", "user-limits"):
        from minimq.admin import limits_api

        return await limits_api.route(api, request, who, head, seg)
    if head in ("parameters", "global-parameters"):
        api.allow(method, "GET")
        return json_response([])
    if head == "feature-flags":
        api.allow(method, "GET")
        return json_response([])
    if head == "auth":
        api.allow(method, "GET")
        return json_response({"oauth_enabled": False})
    raise not_found()


async def vhost_permissions(api: Any, request: Request, who: Principal, vhost: str, kind: str) -> Response:
    api.allow("GET" if request.method == "HEAD" else request.method, "GET")
    api.require_admin(who)
    items = permissions(api) if kind == "permissions" else topic_permissions(api)
    return json_response([p for p in items if p["vhost"] == vhost])


def _put_user(api: Any, name: str, body: dict) -> Response:
    tags = _tags(body.get("tags", ""))
    password = body.get("password")
    password_hash = body.get("password_hash")
    access = api.broker.access
    existed = name in access.users
    if password is not None and not isinstance(password, str):
        raise bad_request("password must be a string")
    try:
        if password is None and password_hash is None:
            if not existed:
                raise bad_request("key_missing: password or password_hash")
            access.set_tags(name, tags)
        else:
            access.add_user(
                name, password, password_hash=password_hash if password is None else None,
                hashing_algorithm=body.get("hashing_algorithm") or None, tags=tags,
            )
    except (ValueError, KeyError) as exc:
        raise bad_request(str(exc)) from None
    return no_content() if existed else Response(201, b"")


def _delete_user(api: Any, name: str) -> bool:
    return bool(api.broker.access.delete_user(name))


# ------------------------------------------------------------ definitions


# RabbitMQ's import order; each section goes in slices of IMPORT_SLICE entries with the event
# loop free between them, so a file of 100k queues does not freeze AMQP clients meanwhile.
IMPORT_ORDER = ("users", "vhosts", "permissions", "topic_permissions", "parameters",
                "global_parameters", "policies", "operator_policies", "exchanges", "queues", "bindings")
IMPORT_SLICE = 250


async def import_in_slices(broker: Any, body: dict) -> None:
    """`import_definitions` one slice at a time (it is not atomic either: entries before a
    bad one stay loaded, as in RabbitMQ)."""
    rest = {k: v for k, v in body.items() if k not in IMPORT_ORDER}
    if rest:
        definitions_mod.import_definitions(broker, rest)
    for key in IMPORT_ORDER:
        if key not in body:
            continue
        entries = body[key]
        if not isinstance(entries, list):
            definitions_mod.import_definitions(broker, {key: entries})  # raises its clear error
            continue
        for start in range(0, len(entries), IMPORT_SLICE):
            definitions_mod.import_definitions(broker, {key: entries[start : start + IMPORT_SLICE]})
            await asyncio.sleep(0)


async def definitions(api: Any, request: Request, who: Principal, seg: list[str]) -> Response:
    method = "GET" if request.method == "HEAD" else request.method
    api.allow(method, "GET", "POST")
    api.require_admin(who)
    vhost = seg[0] if seg else None
    if vhost is not None and vhost not in api.broker.vhosts:
        raise not_found()
    if len(seg) > 1:
        raise not_found()
    if method == "GET":
        data = definitions_mod.export_definitions(api.broker, vhost)
        headers = {}
        if request.query.get("download"):
            headers["content-disposition"] = f'attachment; filename="{request.query["download"]}"'
        return json_response(data, headers=headers)
    body = await api.body_json_async(request)
    if isinstance(body, dict) and "file" in body and isinstance(body["file"], str):
        try:
            body = await asyncio.to_thread(json.loads, body["file"])  # the UI's form upload
        except (ValueError, RecursionError):
            raise bad_request("not_json") from None
    if not isinstance(body, dict):
        raise bad_request("not_json")
    if vhost is not None:
        body = dict(body)
        for key in ("queues", "exchanges", "bindings", "policies", "operator_policies", "parameters"):
            for item in body.get(key) or []:
                if isinstance(item, dict):
                    item["vhost"] = vhost
        body.pop("users", None)
        body.pop("vhosts", None)
        body.pop("permissions", None)
    try:
        await import_in_slices(api.broker, body)
    except (ValueError, KeyError, TypeError) as exc:
        raise bad_request(f"invalid definitions: {exc}") from None
    except Exception as exc:  # an AMQPError from the core (inequivalent declaration...)
        text = getattr(exc, "reply_text", None) or str(exc)
        raise bad_request(text) from None
    return no_content()
