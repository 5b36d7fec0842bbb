"""/api/vhost-limits and /api/user-limits, as RabbitMQ 3.10's management plugin serves them.

The limits themselves live in the broker's access control (minimq.broker.access), which
enforces them and keeps them in the data dir; this module only reads and edits them over
HTTP. Bodies and texts were taken from a RabbitMQ 3.10.8 node:
- `GET /api/vhost-limits[/{vhost}]`: `[{"vhost": "v", "value": {"max-queues": 5}}]`, vhosts
  the user may see; `GET /api/user-limits[/{user}]`: `[{"user": "u", "value": {...}}]`;
- `PUT /api/vhost-limits/{vhost}/{name}` with `{"value": N}` (a negative N: no limit) and
  `DELETE` of the same path (204 also when it was not set): administrators only;
- errors: `[{key_missing,value}]`, `Validation failed\\n\\nUnrecognised terms
  [{<<"max-foo">>,5}] in limits\\n`, `...max-queues should be a number, actually was
  <<"a">>\\n`; an unknown vhost is 404 `vhost_not_found`, an unknown user 400
  `["no_such_user","u"]`.
"""
from __future__ import annotations

from typing import Any

from minimq.admin.api import HTTPError, bad_request, json_response, no_content, not_found
from minimq.admin.auth import Principal, can_see_vhost
from minimq.admin.http import Request, Response
from minimq.broker.access import USER_LIMITS, VHOST_LIMITS
from minimq.broker.policies import erlang_term


def vhost_limits(api: Any, who: Principal) -> list[dict]:
    access = api.broker.access
    return [
        {"vhost": vhost, "value": dict(limits)}
        for vhost, limits in list(access.vhost_limits.items())
        if limits and can_see_vhost(api.broker, who, vhost)
    ]


def user_limits(api: Any) -> list[dict]:
    return [{"user": user, "value": dict(limits)}
            for user, limits in list(api.broker.access.user_limits.items()) if limits]


def _value(body: Any, name: str, known: tuple[str, ...], where: str) -> int:
    if not isinstance(body, dict):
        raise bad_request("not_json")
    if "value" not in body:
        raise bad_request("[{key_missing,value}]")
    value = body["value"]
    if name not in known:
        text = f"Unrecognised terms [{{{erlang_term(name)},{erlang_term(value)}}}] in {where}"
        raise bad_request(f"Validation failed\n\n{text}\n" if where == "limits" else text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Validation failed\n\n{name} should be a number, actually was {erlang_term(value)}\n")
    return value


async def route(api: Any, request: Request, who: Principal, head: str, seg: list[str]) -> Response:
    method = "GET" if request.method == "HEAD" else request.method
    access = api.broker.access
    users = head == "user-limits"
    if users:
        api.require_admin(who)
    if len(seg) <= 1:
        api.allow(method, "GET")
        items = user_limits(api) if users else vhost_limits(api, who)
        if seg:
            key = "user" if users else "vhost"
            owner = seg[0]
            if (owner not in access.users) if users else (owner not in api.broker.vhosts):
                raise not_found()
            items = [i for i in items if i[key] == owner]
        return await api.list_response(request, items)
    if len(seg) != 2:
        raise not_found()
    owner, name = seg
    api.allow(method, "PUT", "DELETE")
    api.require_admin(who)
    if users:
        if owner not in access.users:
            raise HTTPError(400, "bad_request", ["no_such_user", owner])  # type: ignore[arg-type]
        current = dict(access.user_limits.get(owner, {}))
    else:
        if owner not in api.broker.vhosts:
            raise HTTPError(404, "not_found", "vhost_not_found")
        current = dict(access.vhost_limits.get(owner, {}))
    if method == "DELETE":
        current.pop(name, None)
    else:
        current[name] = _value(api.body_json(request), name, USER_LIMITS if users else VHOST_LIMITS,
                               "user-limits" if users else "limits")
    try:
        if users:
            access.set_user_limits(owner, current)
        else:
            access.set_vhost_limits(owner, current)
    except (ValueError, KeyError) as exc:
        raise bad_request(str(exc)) from None
    return no_content()
