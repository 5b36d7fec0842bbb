"""RabbitMQ's management HTTP API over minimq's core.

Every handler runs on the broker's event loop, so what it reads is consistent at that
instant and nothing else can change it meanwhile. Long listings are built and encoded in
chunks (CHUNK objects per loop iteration) with a yield to the loop between chunks, so AMQP
traffic is served while a 10 000-queue listing is being produced: each object is consistent
on its own, as in RabbitMQ, whose statistics are per object too.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

from minimq.admin import auth, query
from minimq.admin.auth import Principal
from minimq.admin.http import Request, Response
from minimq.admin.views import Context, NODE, binding_dict, plain
from minimq.broker.channel import next_position
from minimq.broker.message import Message, make_route
from minimq.codec.errors import AMQPError, AccessRefused, ResourceLocked
from minimq.codec.properties import BasicProperties, encode_content_header

log = logging.getLogger("minimq.admin")

# Objects built and encoded per loop iteration: a queue's JSON costs about 80 us to build and
# encode here, so a chunk holds the loop for about 2 ms (benchmarks/management.py stall).
CHUNK = 25
ACK_MODES = {"ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"}


class HTTPError(Exception):
    def __init__(self, status: int, error: str, reason: str, headers: dict | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


def not_found() -> HTTPError:
    return HTTPError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> HTTPError:
    return HTTPError(400, "bad_request", reason)


def not_authorised(reason: str = "Access refused.") -> HTTPError:
    return HTTPError(401, "not_authorised", reason)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode(), headers=headers or {})


def no_content() -> Response:
    return Response(204, b"")


_encode = json.JSONEncoder(separators=(",", ":")).encode


async def stream_json(items: list) -> AsyncIterator[bytes]:
    """A JSON array of ready dicts, encoded CHUNK items per loop iteration."""
    yield b"["
    for start in range(0, len(items), CHUNK):
        part = ",".join(_encode(i) for i in items[start : start + CHUNK])
        yield (("," if start else "") + part).encode()
        await asyncio.sleep(0)
    yield b"]"


async def stream_objects(objects: list, build: Callable[[Any], dict], columns: list | None) -> AsyncIterator[bytes]:
    """A JSON array built from live objects CHUNK at a time: each chunk is built, trimmed and
    encoded in one go and then dropped, so a long listing neither holds the loop nor keeps
    thousands of dicts alive (which would also wake the cyclic GC for long pauses)."""
    yield b"["
    first = True
    for start in range(0, len(objects), CHUNK):
        if start:
            await asyncio.sleep(0)
        parts = []
        for obj in objects[start : start + CHUNK]:
            if _gone(obj):
                continue
            item = build(obj)
            parts.append(_encode(query.pick_columns(item, columns) if columns else item))
        if parts:
            yield (("" if first else ",") + ",".join(parts)).encode()
            first = False
    yield b"]"


def _gone(obj: Any) -> bool:
    return getattr(obj, "deleted", False) or getattr(obj, "closed", False)


def exchange_name(segment: str) -> str:
    """The default exchange is called amq.default in URLs."""
    return "" if segment == "amq.default" else segment


class API:
    def __init__(self, mgmt: Any) -> None:
        self.mgmt = mgmt

    @property
    def broker(self) -> Any:
        return self.mgmt.broker

    def context(self) -> Context:
        return Context(self.broker, self.mgmt.server, self.mgmt.sampler, self.mgmt)

    # ------------------------------------------------------------- entry

    async def handle(self, request: Request, segments: list[str]) -> Response:
        try:
            who = self._authenticate(request)
            return await self._route(request, who, segments)
        except HTTPError as exc:
            return json_response({"error": exc.error, "reason": exc.reason}, exc.status, exc.headers)
        except query.QueryError as exc:
            return json_response({"error": exc.error, "reason": exc.reason}, 400)

    def admit(self, request: Request) -> Response | None:
        """Before a large body is read: refuse it (401 as `handle` would) unless its sender
        logs in, so an anonymous client cannot make the broker buffer megabytes."""
        try:
            self._authenticate(request)
        except HTTPError as exc:
            return json_response({"error": exc.error, "reason": exc.reason}, exc.status, exc.headers)
        return None

    def _authenticate(self, request: Request) -> Principal:
        # Scripts (XMLHttpRequest/fetch, as the web UI) get no challenge, so a browser does not
        # pop up its own login dialog over the page's.
        scripted = request.headers.get("x-requested-with", "").lower() == "xmlhttprequest"
        challenge = {} if scripted else {"www-authenticate": 'Basic realm="RabbitMQ Management"'}
        creds = auth.parse_basic(request.headers.get("authorization"))
        if creds is None:
            raise HTTPError(401, "not_authorized", "Login failed", challenge)
        who = auth.authenticate(self.broker, creds[0], creds[1], request.peer)
        if who is None:
            raise HTTPError(401, "not_authorized", "Login failed", challenge)
        if not who.can_manage:
            raise HTTPError(401, "not_authorised", "Not management user", challenge)  # sic, as RabbitMQ
        return who

    # ------------------------------------------------------------- routing

    async def _route(self, request: Request, who: Principal, seg: list[str]) -> Response:
        if seg and seg[-1] == "":
            seg = seg[:-1]
        method = request.method
        if method == "HEAD":
            method = "GET"
        n = len(seg)
        head = seg[0] if seg else ""
        if head == "overview" and n == 1:
            self.allow(method, "GET")
            return json_response(self.overview(who, request.query))
        if head == "whoami" and n == 1:
            self.allow(method, "GET")
            return json_response({"name": who.name, "tags": list(who.tags)})
        if head == "cluster-name" and n == 1:
            self.allow(method, "GET")
            return json_response({"name": self.broker.server_properties.get("cluster_name", "minimq")})
        if head == "nodes":
            self.allow(method, "GET")
            self._require_monitor(who)
            ctx = self.context()
            if n == 1:
                return await self.list_response(request, [ctx.node()])
            if n == 2 and seg[1] == NODE:
                return json_response(ctx.node())
            raise not_found()
        if head == "extensions" and n == 1:
            return json_response([])
        if head == "vhosts":
            return await self._vhosts(request, who, seg[1:])
        if head == "queues":
            return await self._queues(request, who, seg[1:])
        if head == "exchanges":
            return await self._exchanges(request, who, seg[1:])
        if head == "bindings":
            return await self._bindings(request, who, seg[1:])
        if head in ("connections", "channels", "consumers"):
            return await self._connections(request, who, head, seg[1:])
        if head in ("users", "permissions", "topic-permissions", "definitions", "vhost-limits",
                    "user-limits", "policies", "operator-policies", "parameters", "global-parameters",
                    "feature-flags", "auth"):
            from minimq.admin import admin_api

            return await admin_api.route(self, request, who, head, seg[1:])
        if head == "aliveness-test" and n == 2:
            self.allow(method, "GET")
            return self.aliveness(who, seg[1])
        if head == "health" and n >= 3 and seg[1] == "checks":
            self.allow(method, "GET")
            return self.health(seg[2:])
        raise not_found()

    @staticmethod
    def allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HTTPError(405, "method_not_allowed", "Method Not Allowed",
                            {"allow": ", ".join(sorted({"HEAD", "OPTIONS", *allowed}))})

    @staticmethod
    def require_admin(who: Principal) -> None:
        if not who.is_admin:
            raise HTTPError(401, "not_authorised", "Not administrator user")

    @staticmethod
    def _require_monitor(who: Principal) -> None:
        if not who.is_monitor:
            raise HTTPError(401, "not_authorised", "Not monitor user")

    def _vhost(self, who: Principal, name: str,
                reason: str = "User not authorised to access virtual host") -> Any:
        """The vhost a request names; 401 with RabbitMQ's reason if `who` may not use it."""
        vhost = self.broker.vhosts.get(name)
        if vhost is None:
            raise not_found()
        if not auth.can_see_vhost(self.broker, who, name):
            raise not_authorised(reason)
        return vhost

    def _visible_vhosts(self, who: Principal) -> list[Any]:
        return [v for n, v in list(self.broker.vhosts.items()) if auth.can_see_vhost(self.broker, who, n)]

    def _check(self, who: Principal, vhost: str, permission: str, kind: str, name: str) -> None:
        why = auth.may(self.broker, who, vhost, permission, kind, name)
        if why is not None:
            raise not_authorised("Access refused.")

    @staticmethod
    def body_json(request: Request, *, default: Any = None) -> Any:
        if not request.body.strip():
            if default is not None:
                return default
            return {}
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...
            raise bad_request("not_json") from None
        return data

    #: Bodies above this are parsed in a worker thread: json.loads of a 60 MiB definitions
    #: file takes about a second, and the event loop keeps its turns meanwhile (the GIL is
    #: handed over every few milliseconds).
    THREADED_JSON_BYTES = 256 * 1024

    @classmethod
    async def body_json_async(cls, request: Request) -> Any:
        """body_json, off the event loop for a large body."""
        if len(request.body) < cls.THREADED_JSON_BYTES:
            return cls.body_json(request)
        return await asyncio.to_thread(cls.body_json, request)

    async def list_response(self, request: Request, items: list[dict]) -> Response:
        result = query.apply(items, request.query)
        if isinstance(result, list) and len(result) > CHUNK:
            return Response(200, stream_json(result))
        return json_response(result)

    async def _build(self, objects: list, build: Callable[[Any], dict]) -> list[dict]:
        """Build the JSON of many objects, CHUNK per loop iteration."""
        out = []
        for start in range(0, len(objects), CHUNK):
            if start:
                await asyncio.sleep(0)
            out.extend(build(obj) for obj in objects[start : start + CHUNK] if not _gone(obj))
        return out

    async def _listing(self, request: Request, objects: list, build: Callable[[Any], dict],
                       name_of: Callable[[Any], str] = lambda o: o.name) -> Response:
        """A listing of live objects with RabbitMQ's query parameters, built lazily: filtering
        and sorting look at one field at a time, and only the requested page is built."""
        params = request.query
        pg = query.paging(params)
        total = len(objects)
        if params.get("name"):
            match = query.name_matcher(params)
            objects = [o for o in objects if match(name_of(o))]
        sort = params.get("sort")
        reverse = params.get("sort_reverse", "").lower() == "true"
        if sort:
            path = sort.split(".")
            keys: list = []
            if path == ["name"]:
                keys = [query.sort_key(name_of(o)) for o in objects]
            else:
                for start in range(0, len(objects), CHUNK):
                    if start:
                        await asyncio.sleep(0)
                    keys.extend(query.sort_key(query.lookup(build(o), path)) for o in objects[start : start + CHUNK])
            order = sorted(range(len(objects)), key=keys.__getitem__, reverse=reverse)
            objects = [objects[i] for i in order]
        elif reverse:
            objects = objects[::-1]
        columns = query.columns_of(params)
        if pg is None:
            if len(objects) > CHUNK:
                return Response(200, stream_objects(objects, build, columns))
            items = [build(o) for o in objects if not _gone(o)]
            return json_response([query.pick_columns(i, columns) for i in items] if columns else items)
        page, size = pg
        filtered = len(objects)
        query.check_page(page, size, filtered)
        items = await self._build(objects[(page - 1) * size : page * size], build)
        if columns:
            items = [query.pick_columns(i, columns) for i in items]
        return json_response(query.page_object(items, page, size, filtered, total))

    # ------------------------------------------------------------ overview

    def overview(self, who: Principal, params: dict | None = None) -> dict:
        ctx = self.context()
        data = ctx.overview(self._visible_vhosts(who))
        sampler = self.mgmt.sampler
        params = params or {}
        if sampler is not None and ("msg_rates_age" in params or "lengths_age" in params):
            # The chart's history, as RabbitMQ's `samples` (newest first).
            try:
                age = float(params.get("msg_rates_age") or params.get("lengths_age") or 60)
                incr = float(params.get("msg_rates_incr") or params.get("lengths_incr") or 5)
            except ValueError:
                raise bad_request("msg_rates_age and msg_rates_incr must be numbers") from None
            age, incr = min(max(age, 1.0), 3600.0), max(incr, 1.0)
            for name, block in (("message_stats", data["message_stats"]), ("queue_totals", data["queue_totals"])):
                for key in list(block):
                    if key.endswith("_details"):
                        field = key[: -len("_details")]
                        samples = sampler.node_samples(field, age, incr)
                        if field == "deliver_get":
                            parts = [sampler.node_samples(f, age, incr) for f in ("deliver", "deliver_no_ack", "get", "get_no_ack")]
                            samples = [
                                {"timestamp": s["timestamp"], "sample": sum(p[i]["sample"] for p in parts)}
                                for i, s in enumerate(parts[0])
                            ]
                        block[key]["samples"] = samples
        return data

    # -------------------------------------------------------------- vhosts

    async def _vhosts(self, request: Request, who: Principal, seg: list[str]) -> Response:
        method = request.method if request.method != "HEAD" else "GET"
        ctx = self.context()
        if not seg:
            self.allow(method, "GET")
            return await self.list_response(request, [ctx.vhost(v) for v in self._visible_vhosts(who)])
        name = seg[0]
        if len(seg) == 1:
            self.allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                # RabbitMQ's reason here, for a vhost the user has no permissions in
                return json_response(ctx.vhost(self._vhost(who, name, "Not administrator user")))
            self.require_admin(who)
            if method == "PUT":
                if not isinstance(self.body_json(request), dict):  # as RabbitMQ: [1] is not_json
                    raise bad_request("not_json")
                created = name not in self.broker.vhosts
                self.broker.add_vhost(name)
                if created:
                    # As RabbitMQ: the user who creates a vhost gets full permissions in it.
                    self.broker.access.set_permissions(who.name, name, ".*", ".*", ".*")
                    return Response(201, b"")
                return no_content()
            if name not in self.broker.vhosts:
                raise not_found()
            self.broker.delete_vhost(name)
            return no_content()
        if len(seg) == 2 and seg[1] in ("permissions", "topic-permissions"):
            from minimq.admin import admin_api

            self._vhost(who, name)
            return await admin_api.vhost_permissions(self, request, who, name, seg[1])
        if len(seg) == 2 and seg[1] == "connections":
            return await self._connections(request, who, "connections", [], vhost=name)
        if len(seg) == 2 and seg[1] == "channels":
            return await self._connections(request, who, "channels", [], vhost=name)
        raise not_found()

    # -------------------------------------------------------------- queues

    async def _queues(self, request: Request, who: Principal, seg: list[str]) -> Response:
        method = request.method if request.method != "HEAD" else "GET"
        ctx = self.context()
        if len(seg) <= 1:
            self.allow(method, "GET")
            vhosts = [self._vhost(who, seg[0])] if seg else self._visible_vhosts(who)
            objects = [q for v in vhosts for q in list(v.queues.values())]
            return await self._listing(request, objects, ctx.queue)
        vhost = self._vhost(who, seg[0])
        name = seg[1]
        if len(seg) == 2:
            self.allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                q = vhost.queues.get(name)
                if q is None:
                    raise not_found()
                return json_response(ctx.queue_detail(q))
            if method == "PUT":
                return self.declare_queue(who, vhost, name, self.body_json(request))
            return self.delete_queue(who, vhost, name, request.query)
        q = vhost.queues.get(name)
        if q is None:
            raise not_found()
        action = seg[2]
        if action == "contents" and len(seg) == 3:
            self.allow(method, "DELETE")
            self._check(who, vhost.name, "read", "queue", name)
            q.purge()
            return no_content()
        if action == "get" and len(seg) == 3:
            self.allow(method, "POST")
            self._check(who, vhost.name, "read", "queue", name)
            return json_response(self.get_messages(q, self.body_json(request)))
        if action == "bindings" and len(seg) == 3:
            self.allow(method, "GET")
            return await self.list_response(request, ctx.bindings_to(vhost, q))
        if action == "actions" and len(seg) == 3:
            self.allow(method, "POST")
            return no_content()
        raise not_found()

    def declare_queue(self, who: Principal, vhost: Any, name: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise bad_request("not_json")
        self._check(who, vhost.name, "configure", "queue", name)
        args = body.get("arguments") or {}
        if not isinstance(args, dict):
            raise bad_request("arguments must be an object")
        existed = name in vhost.queues
        try:
            vhost.declare_queue(
                name, None, durable=_bool(body.get("durable", True)), auto_delete=_bool(body.get("auto_delete", False)),
                exclusive=False, arguments=args,
            )
        except AccessRefused as exc:
            raise not_authorised(exc.reply_text) from None
        except ResourceLocked as exc:
            raise bad_request(exc.text or exc.reply_text) from None
        except AMQPError as exc:
            raise bad_request(exc.text or exc.reply_text) from None
        return no_content() if existed else Response(201, b"")

    def delete_queue(self, who: Principal, vhost: Any, name: str, params: dict) -> Response:
        q = vhost.queues.get(name)
        if q is None:
            raise not_found()
        self._check(who, vhost.name, "configure", "queue", name)
        if params.get("if-unused") == "true" and q.consumers:
            raise bad_request(f"PRECONDITION_FAILED - queue '{name}' in vhost '{vhost.name}' in use")
        if params.get("if-empty") == "true" and q.ready:
            raise bad_request(f"PRECONDITION_FAILED - queue '{name}' in vhost '{vhost.name}' not empty")
        vhost.delete_queue(q)
        return no_content()

    def get_messages(self, q: Any, body: Any) -> list[dict]:
        """POST .../get: take up to `count` messages, then ack, requeue or reject them."""
        if not isinstance(body, dict):
            raise bad_request("not_json")
        mode = body.get("ackmode", "ack_requeue_true")
        if mode not in ACK_MODES:
            raise bad_request(f"Unknown ackmode: {mode}")
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise bad_request(f"Unsupported encoding: {encoding}")
        try:
            count = int(body.get("count", 1))
            truncate = int(body["truncate"]) if body.get("truncate") not in (None, "") else None
        except (TypeError, ValueError):
            raise bad_request("count and truncate must be integers") from None
        count = max(0, min(count, 10_000))
        taken = []
        for _ in range(count):
            msg = q.get()
            if msg is None:
                break
            if not msg.seq:
                msg.seq = next_position()
            taken.append((msg, len(q.ready)))
        out = []
        for msg, remaining in taken:
            out.append(_message_json(msg, remaining, encoding, truncate))
        requeue = mode.endswith("requeue_true")
        msgs = [m for m, _ in taken]
        if requeue:
            q.requeue(msgs)
        else:
            for m in msgs:
                q.release(m)
                if mode.startswith("reject") and q.args.dlx is not None:
                    q.vhost.dead_letter(q, m, "rejected")
        return out

    # ----------------------------------------------------------- exchanges

    async def _exchanges(self, request: Request, who: Principal, seg: list[str]) -> Response:
        method = request.method if request.method != "HEAD" else "GET"
        ctx = self.context()
        if len(seg) <= 1:
            self.allow(method, "GET")
            vhosts = [self._vhost(who, seg[0])] if seg else self._visible_vhosts(who)
            objects = [ex for v in vhosts for ex in list(v.exchanges.values())]
            owner = {id(ex): v.name for v in vhosts for ex in v.exchanges.values()}
            return await self._listing(request, objects, lambda ex: ctx.exchange(ex, owner[id(ex)]))
        vhost = self._vhost(who, seg[0])
        name = exchange_name(seg[1])
        if len(seg) == 2:
            self.allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                ex = vhost.exchanges.get(name)
                if ex is None:
                    raise not_found()
                data = ctx.exchange(ex, vhost.name)
                data["incoming"] = []
                data["outgoing"] = []
                return json_response(data)
            if method == "PUT":
                return self.declare_exchange(who, vhost, name, self.body_json(request))
            ex = vhost.exchanges.get(name)
            if ex is None:
                raise not_found()
            self._check(who, vhost.name, "configure", "exchange", name)
            try:
                vhost.delete_exchange(name, request.query.get("if-unused") == "true")
            except AMQPError as exc:
                raise bad_request(exc.text or exc.reply_text) from None
            return no_content()
        ex = vhost.exchanges.get(name)
        if ex is None:
            raise not_found()
        if seg[2] == "publish" and len(seg) == 3:
            self.allow(method, "POST")
            self._check(who, vhost.name, "write", "exchange", name)
            return json_response(self.publish(vhost, ex, self.body_json(request)))
        if seg[2] == "bindings" and len(seg) == 4 and seg[3] in ("source", "destination"):
            self.allow(method, "GET")
            if seg[3] == "source":
                items = ctx.bindings_from(vhost.name, ex)
            else:
                items = [b for b in ctx.bindings_to(vhost, ex) if b["source"]]
            return await self.list_response(request, items)
        raise not_found()

    def declare_exchange(self, who: Principal, vhost: Any, name: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise bad_request("not_json")
        if name == "":
            raise not_authorised()
        self._check(who, vhost.name, "configure", "exchange", name)
        type_name = body.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise bad_request("key_missing: type")
        args = body.get("arguments") or {}
        if not isinstance(args, dict):
            raise bad_request("arguments must be an object")
        existed = name in vhost.exchanges
        try:
            vhost.declare_exchange(
                name, type_name, durable=_bool(body.get("durable", True)),
                auto_delete=_bool(body.get("auto_delete", False)), internal=_bool(body.get("internal", False)),
                arguments=args,
            )
        except AMQPError as exc:
            text = exc.reply_text
            if text.startswith("unknown exchange type"):
                raise bad_request(text) from None
            raise bad_request(exc.text or text) from None
        return no_content() if existed else Response(201, b"")

    def publish(self, vhost: Any, ex: Any, body: Any) -> dict:
        if not isinstance(body, dict):
            raise bad_request("not_json")
        for key in ("routing_key", "payload", "payload_encoding", "properties"):
            if key not in body:
                raise bad_request(f"key_missing: {key}")
        rk = body["routing_key"]
        if not isinstance(rk, str) or not isinstance(body["payload"], str):
            raise bad_request("routing_key and payload must be strings")
        enc = body["payload_encoding"]
        if enc == "string":
            payload = body["payload"].encode("utf-8")
        elif enc == "base64":
            try:
                payload = base64.b64decode(body["payload"], validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("payload is not valid base64") from None
        else:
            raise bad_request(f"Unsupported payload_encoding: {enc}")
        props = _properties(body["properties"])
        header = encode_content_header(len(payload), props)
        msg = Message(ex.name, rk, make_route(ex.name, rk), header, payload)
        if props.expiration is not None:
            try:
                from minimq.broker.arguments import parse_expiration

                msg.expires = self.broker.clock() + parse_expiration(props.expiration) / 1000.0
            except AMQPError as exc:
                raise bad_request(exc.text or exc.reply_text) from None
        if ex.internal:
            raise bad_request(f"cannot publish to internal exchange '{ex.name}'")
        routed, _refused, _pos = vhost.publish(ex, msg)
        return {"routed": bool(routed)}

    # ------------------------------------------------------------ bindings

    async def _bindings(self, request: Request, who: Principal, seg: list[str]) -> Response:
        method = request.method if request.method != "HEAD" else "GET"
        ctx = self.context()
        if len(seg) <= 1:
            self.allow(method, "GET")
            vhosts = [self._vhost(who, seg[0])] if seg else self._visible_vhosts(who)
            return await self.list_response(request, await self._all_bindings(ctx, vhosts))
        if len(seg) < 5 or seg[1] != "e" or seg[3] not in ("q", "e"):
            raise not_found()
        vhost = self._vhost(who, seg[0])
        source_name = exchange_name(seg[2])
        dest_kind = "queue" if seg[3] == "q" else "exchange"
        dest_name = seg[4] if dest_kind == "queue" else exchange_name(seg[4])
        source = vhost.exchanges.get(source_name)
        dest = vhost.queues.get(dest_name) if dest_kind == "queue" else vhost.exchanges.get(dest_name)
        if source is None or dest is None:
            raise not_found()
        if source.is_default:
            matching = [binding_dict(vhost.name, "", dest_name, "queue", dest_name, {})] if dest_kind == "queue" else []
        else:
            matching = ctx.bindings_from(vhost.name, source, dest)
        if len(seg) == 5:
            self.allow(method, "GET", "POST")
            if method == "GET":
                return await self.list_response(request, matching)
            body = self.body_json(request)
            if not isinstance(body, dict):
                raise bad_request("not_json")
            key = body.get("routing_key", "")
            args = body.get("arguments") or {}
            if not isinstance(key, str) or not isinstance(args, dict):
                raise bad_request("routing_key must be a string and arguments an object")
            self._check(who, vhost.name, "write", dest_kind, dest_name)
            self._check(who, vhost.name, "read", "exchange", source_name)
            try:
                vhost.bind(source, dest, key, args)
            except AccessRefused as exc:
                raise not_authorised(exc.reply_text) from None
            except AMQPError as exc:
                raise bad_request(exc.text or exc.reply_text) from None
            pk = binding_dict(vhost.name, source_name, dest_name, dest_kind, key, args)["properties_key"]
            return Response(201, b"", headers={"location": f"{quote(dest_name, safe='')}/{pk}"})
        if len(seg) == 6:
            self.allow(method, "GET", "DELETE")
            props_key = seg[5]
            found = [b for b in matching if b["properties_key"] == props_key]
            if not found:
                raise not_found()
            if method == "GET":
                return json_response(found[0])
            self._check(who, vhost.name, "write", dest_kind, dest_name)
            self._check(who, vhost.name, "read", "exchange", source_name)
            b = found[0]
            args = _raw_binding_args(source, dest, b["routing_key"], b["arguments"])
            try:
                vhost.unbind(source, dest, b["routing_key"], args)
            except AMQPError as exc:
                raise bad_request(exc.text or exc.reply_text) from None
            return no_content()
        raise not_found()

    async def _all_bindings(self, ctx: Context, vhosts: list) -> list[dict]:
        """Every binding of these vhosts, as RabbitMQ lists them (each vhost's default
        exchange bindings first), built CHUNK queues or exchanges per loop iteration."""
        out: list[dict] = []
        for v in vhosts:
            queues = list(v.queues.values())
            for start in range(0, len(queues), CHUNK * 8):
                out.extend(binding_dict(v.name, "", q.name, "queue", q.name, {})
                           for q in queues[start : start + CHUNK * 8] if not q.deleted)
                await asyncio.sleep(0)
            exchanges = [ex for ex in list(v.exchanges.values()) if not ex.is_default]
            for start in range(0, len(exchanges), CHUNK):
                for ex in exchanges[start : start + CHUNK]:
                    if not ex.deleted:
                        out.extend(ctx.bindings_from(v.name, ex))
                await asyncio.sleep(0)
        return out

    # --------------------------------------------------- connections & co

    async def _connections(self, request: Request, who: Principal, kind: str, seg: list[str],
                           vhost: str | None = None) -> Response:
        method = request.method if request.method != "HEAD" else "GET"
        ctx = self.context()
        sessions = [
            s for s in list(self.broker.sessions)
            if s.vhost is not None and not s.closed and auth.can_see_connection(who, s.user)
            and auth.can_see_vhost(self.broker, who, s.vhost.name)
        ]
        if kind == "consumers":
            self.allow(method, "GET")
            if seg:
                self._vhost(who, seg[0])
                sessions = [s for s in sessions if s.vhost.name == seg[0]]
            consumers = [
                c for s in sessions for ch in list(s.channels.values()) for c in list(ch.consumers.values())
                if c.queue is not None
            ]
            return await self._listing(request, consumers, ctx.consumer, lambda c: c.tag)
        if vhost is not None:
            sessions = [s for s in sessions if s.vhost.name == vhost]
        if kind == "channels":
            self.allow(method, "GET")
            if seg:
                name = seg[0]
                for s in sessions:
                    for ch in list(s.channels.values()):
                        if ctx.channel_name(ch) == name:
                            return json_response(ctx.channel(ch))
                raise not_found()
            channels = [ch for s in sessions for ch in list(s.channels.values())]
            return await self._listing(request, channels, ctx.channel, ctx.channel_name)
        if not seg:
            self.allow(method, "GET")
            return await self._listing(request, sessions, ctx.connection, ctx.connection_name)
        name = seg[0]
        session = next((s for s in sessions if ctx.connection_name(s) == name), None)
        if session is None:
            raise not_found()
        if len(seg) == 2 and seg[1] == "channels":
            self.allow(method, "GET")
            return await self.list_response(request, [ctx.channel(ch) for ch in list(session.channels.values())])
        if len(seg) != 1:
            raise not_found()
        self.allow(method, "GET", "DELETE")
        if method == "GET":
            return json_response(ctx.connection(session))
        if not who.is_admin and session.user != who.name:
            raise not_authorised()
        reason = request.headers.get("x-reason") or "Closed via management plugin"
        self.mgmt.close_connection(session, reason)
        return no_content()

    # ------------------------------------------------------------- health

    def aliveness(self, who: Principal, vhost_name: str) -> Response:
        vhost = self._vhost(who, vhost_name)
        name = "aliveness-test"
        try:
            q, _ = vhost.declare_queue(name, None, durable=False)
        except AMQPError as exc:
            return json_response({"status": "failed", "reason": exc.reply_text}, 503)
        body = b"test_message"
        msg = Message("", name, make_route("", name), encode_content_header(len(body), BasicProperties()), body)
        vhost.publish(vhost.default_exchange, msg)
        got = q.get()
        if got is None or bytes(got.body) != b"test_message":
            return json_response({"status": "failed", "reason": "message did not come back"}, 503)
        q.release(got)
        return json_response({"status": "ok"})

    def health(self, seg: list[str]) -> Response:
        check = seg[0]
        if check in ("alarms", "local-alarms") and len(seg) == 1:
            alarms = sorted(getattr(self.mgmt.server, "alarms", ()) or ())
            if alarms:
                where = "the cluster" if check == "alarms" else "this node"
                return json_response({
                    "status": "failed",
                    "reason": f"resource alarm(s) in effect in {where}",
                    "alarms": [{"node": NODE, "resource": r} for r in alarms],
                }, 503)
            return json_response({"status": "ok"})
        if check in ("virtual-hosts", "node-is-quorum-critical", "node-is-mirror-sync-critical") and len(seg) == 1:
            return json_response({"status": "ok"})
        if check in ("port-listener", "protocol-listener", "certificate-expiration") and len(seg) >= 2:
            return json_response({"status": "ok"})
        raise not_found()


# ------------------------------------------------------------------ helpers


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


PROPERTY_TYPES = {
    "content_type": str, "content_encoding": str, "headers": dict, "delivery_mode": int, "priority": int,
    "correlation_id": str, "reply_to": str, "expiration": str, "message_id": str, "timestamp": int,
    "type": str, "user_id": str, "app_id": str, "cluster_id": str,
}


def _properties(data: Any) -> BasicProperties:
    if not isinstance(data, dict):
        raise bad_request("properties must be an object")
    kwargs = {}
    for key, value in data.items():
        want = PROPERTY_TYPES.get(key)
        if want is None:
            raise bad_request(f"unknown message property: {key}")
        if want is int and isinstance(value, str) and value.isdigit():
            value = int(value)
        if want is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise bad_request(f"message property {key} must be a {want.__name__}")
        kwargs[key] = value
    return BasicProperties(**kwargs)


def _message_json(msg: Message, remaining: int, encoding: str, truncate: int | None) -> dict:
    body = bytes(msg.body)
    size = len(body)
    if truncate is not None and truncate >= 0:
        body = body[:truncate]
    payload_encoding = "string"
    if encoding == "base64":
        payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    else:
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    props = {}
    p = msg.properties
    for key in PROPERTY_TYPES:
        value = getattr(p, key)
        if value is not None:
            props[key] = plain(value)
    return {
        "payload_bytes": size,
        "redelivered": bool(msg.redelivered),
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "message_count": remaining,
        "properties": props,
        "payload": payload,
        "payload_encoding": payload_encoding,
    }


def _raw_binding_args(source: Any, dest: Any, key: str, shown: dict) -> dict:
    """The binding's own argument table (as stored), found by its JSON form."""
    for d, k, args in list(source.kind.bindings()):
        if d is dest and k == key and plain(args or {}) == shown:
            return args
    return shown
