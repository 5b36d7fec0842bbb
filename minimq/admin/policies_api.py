"""/api/policies and /api/operator-policies, as RabbitMQ 3.10's management plugin serves them.

Who may do what (checked on a RabbitMQ 3.10.8 node):
- listing (all, or one vhost's): any management user, seeing the vhosts it has permissions
  in (administrators: every vhost); one vhost it may not use is 401 "User not authorised
  to access virtual host";
- one policy (GET, PUT, DELETE): the `policymaker` or `administrator` tag and permissions in
  the vhost (administrators need none), else 401 "User not authorised to access object";
- one operator policy: administrators only, else 401 "Not administrator user".
Validation errors are RabbitMQ's texts (minimq.broker.policies); for policies they come
HTML-escaped (`&lt;&lt;"x"&gt;&gt;`) and for operator policies not, as RabbitMQ sends them.
"""
from __future__ import annotations

from typing import Any

from minimq.admin.api import HTTPError, bad_request, json_response, no_content, not_authorised, not_found
from minimq.admin.auth import Principal
from minimq.admin.http import Request, Response
from minimq.broker.policies import PolicyError


def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _may_use(api: Any, who: Principal, vhost: str) -> bool:
    return who.is_admin or bool(api.broker.access.can_access_vhost(who.name, vhost))


async def route(api: Any, request: Request, who: Principal, head: str, seg: list[str]) -> Response:
    method = "GET" if request.method == "HEAD" else request.method
    operator = head == "operator-policies"
    policies = api.broker.policies
    if len(seg) <= 1:
        api.allow(method, "GET")
        if seg:
            vhost = seg[0]
            if vhost not in api.broker.vhosts:
                raise not_found()
            if not _may_use(api, who, vhost):
                raise not_authorised("User not authorised to access virtual host")
            items = policies.list(vhost, operator=operator)
        else:
            items = [p for p in policies.list(operator=operator) if _may_use(api, who, p.vhost)]
        return await api.list_response(request, [p.as_json() for p in items])
    if len(seg) != 2:
        raise not_found()
    vhost, name = seg
    api.allow(method, "GET", "PUT", "DELETE")
    exists = vhost in api.broker.vhosts
    if operator:
        api.require_admin(who)
    elif not (who.is_admin or "policymaker" in who.tags) or (exists and not _may_use(api, who, vhost)):
        raise not_authorised("User not authorised to access object")
    if not exists:
        if method == "PUT":
            raise HTTPError(404, "not_found", "vhost_not_found")
        raise not_found()
    if method == "GET":
        found = policies.get(vhost, name, operator=operator)
        if found is None:
            raise not_found()
        return json_response(found.as_json())
    if method == "DELETE":
        if not policies.clear(vhost, name, operator=operator):
            raise not_found()
        return no_content()
    body = api.body_json(request)
    if not isinstance(body, dict):
        raise bad_request("not_json")
    for key in ("pattern", "definition"):
        if key not in body:
            raise bad_request(f"[{{key_missing,{key}}}]")
    args = {k: body[k] for k in ("priority", "apply-to") if k in body}
    try:
        created = policies.set(
            vhost, name, body["pattern"], body["definition"], args.get("priority", 0),
            args.get("apply-to", "all"), operator=operator,
        )
    except PolicyError as exc:
        text = str(exc)
        raise bad_request(text if operator else _escape_html(text)) from None
    return Response(201, b"") if created else no_content()
