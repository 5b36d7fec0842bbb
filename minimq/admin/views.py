"""The broker's objects as RabbitMQ's management API shows them (plain JSON-ready dicts).

Each builder reads the live core objects and copies what it needs, so it must run on the
broker's event loop and return before anything else runs there; the API calls them in
bounded chunks (see api.py) so a listing of many objects never pauses the loop for long.
Field names and shapes are RabbitMQ 3.10's; fields that only make sense for Erlang
(reductions, garbage_collection) are left out.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import minimq
from minimq.admin.stats import (
    EXCHANGE_NAMES, QUEUE_FIELDS, TOTAL_FIELDS, RateSampler, exchange_counts, queue_counts, unacked_by_queue,
)
from minimq.broker.policies import merged_definition
from minimq.codec.values import Int64
from minimq.server.app import rss_bytes

NODE = "minimq@" + platform.node().split(".")[0] if platform.node() else "minimq@localhost"
EXCHANGE_TYPE_DESCRIPTIONS = {
    "direct": "AMQP direct exchange, as per the AMQP specification",
    "fanout": "AMQP fanout exchange, as per the AMQP specification",
    "headers": "AMQP headers exchange, as per the AMQP specification",
    "topic": "AMQP topic exchange, as per the AMQP specification",
    "x-delayed-message": "Delayed message exchange (minimq built-in)",
}


def iso(ts: float) -> str:
    """A time as RabbitMQ writes idle_since: 2026-12-01T20:47:02.316+00:00."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+00:00"


def plain(value: Any) -> Any:
    """AMQP field values as JSON values (bytes as text, timestamps as seconds)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Int64):
        return int(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)  # Decimal
    except (TypeError, ValueError):
        return str(value)


def stats_block(names: tuple[str, ...], counts: tuple, rates: tuple | None) -> dict:
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        out[name] = counts[i]
        out[name + "_details"] = {"rate": round(rates[i], 2) if rates else 0.0}
    return out


class Context:
    """What one request's builders share: the broker, the transport, per-request caches."""

    def __init__(self, broker: Any, server: Any, sampler: RateSampler | None, mgmt: Any = None) -> None:
        self.broker = broker
        self.server = server
        self.sampler = sampler
        self.mgmt = mgmt
        self._unacked: dict | None = None
        self._protos: dict | None = None

    @property
    def unacked(self) -> dict:
        if self._unacked is None:
            self._unacked = unacked_by_queue(self.broker)
        return self._unacked

    @property
    def protocols(self) -> dict:
        """session -> its transport protocol (for addresses and byte counts)."""
        if self._protos is None:
            conns = getattr(self.server, "connections", ()) if self.server is not None else ()
            self._protos = {p.session: p for p in list(conns) if p.session is not None}
        return self._protos

    def rates(self, obj: Any) -> tuple | None:
        return self.sampler.rates(obj) if self.sampler is not None else None

    def _idle(self, out: dict, obj: Any) -> None:
        since = self.sampler.idle_since(obj) if self.sampler is not None else None
        if since is not None:
            out["idle_since"] = iso(since)

    # ------------------------------------------------------------ connections

    def connection_name(self, session: Any) -> str:
        proto = self.protocols.get(session)
        local = ""
        if proto is not None and proto.transport is not None:
            sock = proto.transport.get_extra_info("sockname")
            if isinstance(sock, tuple):
                local = f"{sock[0]}:{sock[1]}"
        if not local and self.server is not None:
            local = f"{self.server.host}:{self.server.port}"
        return f"{session.peer} -> {local}"

    def connection(self, session: Any) -> dict:
        conn = session.conn
        peer_host, _, peer_port = session.peer.rpartition(":")
        name = self.connection_name(session)
        local_host, _, local_port = name.rpartition(" -> ")[2].rpartition(":")
        props = plain(conn.client_properties or {})
        proto = self.protocols.get(session)
        tls = bool(proto is not None and proto.transport is not None and proto.transport.get_extra_info("sslcontext"))
        # As RabbitMQ: under a resource alarm a connection that publishes is blocked, one that
        # has not published yet is "blocking" (it will be blocked when it does).
        alarmed = bool(getattr(self.server, "alarms", None))
        published = any(ch.stat_publish for ch in list(session.channels.values()))
        out = {
            "name": name,
            "node": NODE,
            "type": "network",
            "protocol": "AMQP 0-9-1",
            "auth_mechanism": "PLAIN",
            "user": session.user,
            "user_who_performed_action": session.user,
            "vhost": session.vhost.name if session.vhost is not None else None,
            "host": local_host,
            "port": _int(local_port),
            "peer_host": peer_host,
            "peer_port": _int(peer_port),
            "ssl": tls,
            "ssl_protocol": None, "ssl_key_exchange": None, "ssl_cipher": None, "ssl_hash": None,
            "peer_cert_subject": None, "peer_cert_issuer": None, "peer_cert_validity": None,
            "state": "closed" if session.closed else (
                ("blocked" if published else "blocking") if alarmed else "running"),
            "channels": len(session.channels),
            "channel_max": conn.channel_max,
            "frame_max": conn.frame_max,
            "timeout": conn.heartbeat,
            "client_properties": props,
            "connected_at": int(getattr(proto, "connected_at", 0) * 1000) if proto is not None else None,
            "send_pend": 0,
        }
        if isinstance(props, dict) and props.get("connection_name"):
            out["user_provided_name"] = props["connection_name"]
        for key in ("recv_oct", "send_oct", "recv_cnt", "send_cnt"):
            out[key] = getattr(proto, key, 0) if proto is not None else 0
            if key.endswith("_oct"):
                out[key + "_details"] = {"rate": 0.0}
        return out

    def connection_details(self, session: Any) -> dict:
        peer_host, _, peer_port = session.peer.rpartition(":")
        return {"name": self.connection_name(session), "peer_host": peer_host, "peer_port": _int(peer_port)}

    # --------------------------------------------------------------- channels

    def channel_name(self, ch: Any) -> str:
        return f"{self.connection_name(ch.session)} ({ch.number})"

    def channel(self, ch: Any) -> dict:
        session = ch.session
        counts = tuple(getattr(ch, "stat_" + n) for n in TOTAL_FIELDS)
        stats = stats_block(TOTAL_FIELDS, counts, self.rates(ch))
        _deliver_get(stats, counts[TOTAL_FIELDS.index("deliver")] + counts[TOTAL_FIELDS.index("deliver_no_ack")]
                     + counts[TOTAL_FIELDS.index("get")] + counts[TOTAL_FIELDS.index("get_no_ack")])
        out = {
            "name": self.channel_name(ch),
            "node": NODE,
            "number": ch.number,
            "user": session.user,
            "user_who_performed_action": session.user,
            "vhost": session.vhost.name if session.vhost is not None else None,
            "connection_details": self.connection_details(session),
            "state": "running" if ch.active or not ch.flow_active else "flow",
            "consumer_count": len(ch.consumers),
            "messages_unacknowledged": len(ch.unacked),
            "messages_unconfirmed": len(ch.confirm_queue),
            "messages_uncommitted": len(ch.tx) if ch.tx else 0,
            "acks_uncommitted": sum(len(t) for t, _ in ch.tx_acks) if ch.tx_acks else 0,
            "prefetch_count": ch.prefetch,
            "global_prefetch_count": ch.global_limit,
            "confirm": bool(ch.confirm),
            "transactional": ch.tx is not None,
            "pending_raft_commands": 0,
            "message_stats": stats,
        }
        self._idle(out, ch)
        return out

    def channel_details(self, ch: Any) -> dict:
        peer_host, _, peer_port = ch.session.peer.rpartition(":")
        return {
            "name": self.channel_name(ch),
            "number": ch.number,
            "node": NODE,
            "connection_name": self.connection_name(ch.session),
            "peer_host": peer_host,
            "peer_port": _int(peer_port),
            "user": ch.session.user,
        }

    def consumer(self, c: Any) -> dict:
        q = c.queue
        return {
            "consumer_tag": c.tag,
            "queue": {"name": q.name, "vhost": q.vhost.name},
            "channel_details": self.channel_details(c.channel),
            "ack_required": not c.no_ack,
            "exclusive": bool(c.exclusive),
            "prefetch_count": c.limit or c.channel.global_limit,
            "arguments": plain(c.arguments or {}),
            "active": True,
            "activity_status": "up" if (not q.args.single_active or q.consumers[:1] == [c]) else "waiting",
        }

    # ----------------------------------------------------------------- queues

    def queue(self, q: Any) -> dict:
        ready = len(q.ready)
        unacked = self.unacked.get(q, 0)
        counts = queue_counts(q)
        rates = self.rates(q)
        stats = stats_block(QUEUE_FIELDS, counts, rates)
        stats.update(stats_block(("get_empty",), (0,), None))
        _deliver_get(stats, counts[1] + counts[2] + counts[3] + counts[4],
                     (rates[1] + rates[2] + rates[3] + rates[4]) if rates else 0.0)
        depth = rates[len(QUEUE_FIELDS):] if rates else (0.0, 0.0, 0.0)
        message_bytes = _message_bytes(q, ready)
        single = q.args.single_active
        exclusive_c = q.exclusive_consumer
        out = {
            "name": q.name,
            "vhost": q.vhost.name,
            "node": NODE,
            "type": "quorum" if q.args.queue_type == "quorum" else "classic",
            "durable": bool(q.durable),
            "auto_delete": bool(q.auto_delete),
            "exclusive": bool(q.exclusive),
            "arguments": plain(q.arguments or {}),
            "policy": q.policy.name if q.policy is not None else None,
            "operator_policy": q.operator_policy.name if q.operator_policy is not None else None,
            "effective_policy_definition": merged_definition(q.policy, q.operator_policy),
            "state": "running",
            "consumers": len(q.consumers),
            "consumer_capacity": 1.0 if q.consumers else 0,
            "consumer_utilisation": 1.0 if q.consumers else 0,
            "exclusive_consumer_tag": exclusive_c.tag if exclusive_c is not None else None,
            "single_active_consumer_tag": q.consumers[0].tag if single and q.consumers else None,
            "messages": ready + unacked,
            "messages_details": {"rate": round(depth[0], 2)},
            "messages_ready": ready,
            "messages_ready_details": {"rate": round(depth[1], 2)},
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": {"rate": round(depth[2], 2)},
            "messages_ram": ready + unacked,
            "messages_ready_ram": ready,
            "messages_unacknowledged_ram": unacked,
            "messages_persistent": 0,
            "messages_paged_out": 0,
            "message_bytes": message_bytes,
            "message_bytes_ready": message_bytes,
            "message_bytes_unacknowledged": 0,
            "message_bytes_ram": message_bytes,
            "message_bytes_persistent": 0,
            "message_bytes_paged_out": 0,
            "head_message_timestamp": None,
            "memory": 1024 + 200 * ready + message_bytes,
            "message_stats": stats,
            "recoverable_slaves": None,
        }
        if q.owner is not None:
            out["owner_pid_details"] = self.connection_details(q.owner)
        self._idle(out, q)
        return out

    def queue_detail(self, q: Any) -> dict:
        out = self.queue(q)
        out["consumer_details"] = [self.consumer(c) for c in q.consumers]
        out["incoming"] = []
        out["deliveries"] = []
        return out

    # -------------------------------------------------------------- exchanges

    def exchange(self, ex: Any, vhost: str) -> dict:
        out = {
            "name": ex.name,
            "vhost": vhost,
            "type": ex.type_name,
            "durable": bool(ex.durable),
            "auto_delete": bool(ex.auto_delete),
            "internal": bool(ex.internal),
            "arguments": plain(ex.arguments or {}),
        }
        if ex.policy is not None:  # as RabbitMQ 3.10: no "policy" key without one
            out["policy"] = ex.policy.name
        if ex.name == "" or ex.name.startswith("amq."):
            out["user_who_performed_action"] = "rmq-internal"
        if ex.stat_in:
            out["message_stats"] = stats_block(EXCHANGE_NAMES, exchange_counts(ex), self.rates(ex))
        return out

    # --------------------------------------------------------------- bindings

    @staticmethod
    def bindings_from(vhost: str, ex: Any, dest: Any = None) -> list[dict]:
        """The bindings of one exchange (only those to `dest`, if given)."""
        out = []
        for d, key, args in list(ex.kind.bindings()):
            if dest is None or d is dest:
                kind = "queue" if hasattr(d, "consumers") else "exchange"
                out.append(binding_dict(vhost, ex.name, d.name, kind, key, args))
        return out

    def bindings_to(self, vhost: Any, dest: Any) -> list[dict]:
        """The bindings to one queue or exchange (a queue's implicit default one first)."""
        out = []
        if hasattr(dest, "consumers"):
            out.append(binding_dict(vhost.name, "", dest.name, "queue", dest.name, {}))
        for ex in sorted(list(dest.bound_from), key=lambda e: e.name):
            out.extend(self.bindings_from(vhost.name, ex, dest))
        return out

    # ------------------------------------------------------------ vhost, node

    def vhost(self, vhost: Any) -> dict:
        ready = unacked = 0
        for q in list(vhost.queues.values()):
            ready += len(q.ready)
            unacked += self.unacked.get(q, 0)
        return {
            "name": vhost.name,
            "description": "Default virtual host" if vhost.name == "/" else "",
            "tags": [],
            "metadata": {"description": "Default virtual host" if vhost.name == "/" else "", "tags": []},
            "default_queue_type": "undefined",
            "tracing": False,
            "cluster_state": {NODE: "running"},
            "messages": ready + unacked,
            "messages_details": {"rate": 0.0},
            "messages_ready": ready,
            "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": {"rate": 0.0},
        }

    def node(self) -> dict:
        rss = rss_bytes()
        limit = getattr(self.server, "memory_limit", None) or 0
        started = self.sampler.started if self.sampler is not None else time.time()
        disk = disk_free(getattr(getattr(self.broker, "store", None), "path", None) or ".")
        return {
            "name": NODE,
            "type": "disc",
            "running": True,
            "being_drained": False,
            "os_pid": str(os.getpid()),
            "mem_used": rss or 0,
            "mem_used_details": {"rate": 0.0},
            "mem_limit": limit,
            "mem_alarm": "memory" in (getattr(self.server, "alarms", ()) or ()),
            "mem_calculation_strategy": "rss",
            "disk_free": disk,
            "disk_free_details": {"rate": 0.0},
            "disk_free_limit": _disk_limit(self.server),
            "disk_free_alarm": "disk" in (getattr(self.server, "alarms", ()) or ()),
            "fd_used": fd_count(),
            "fd_used_details": {"rate": 0.0},
            "fd_total": fd_limit(),
            "sockets_used": len(getattr(self.server, "connections", ()) or ()),
            "sockets_used_details": {"rate": 0.0},
            "sockets_total": fd_limit(),
            "proc_used": 1,
            "proc_used_details": {"rate": 0.0},
            "proc_total": 1,
            "processors": os.cpu_count() or 1,
            "run_queue": 0,
            "uptime": int((time.time() - started) * 1000),
            "rates_mode": "basic",
            "net_ticktime": 60,
            "partitions": [],
            "applications": [
                {"name": "minimq", "description": "minimq broker", "version": minimq.__version__},
            ],
            "exchange_types": self.exchange_types(),
            "auth_mechanisms": [{"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": True}],
            "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
            "contexts": self.contexts(),
            "log_files": [],
            "config_files": [],
            "db_dir": getattr(getattr(self.broker, "store", None), "path", None) or "",
            "cluster_links": [],
        }

    def exchange_types(self) -> list[dict]:
        return [{"name": n, "description": d, "enabled": True} for n, d in EXCHANGE_TYPE_DESCRIPTIONS.items()]

    def contexts(self) -> list[dict]:
        mgmt = self.mgmt
        if mgmt is None or mgmt.port is None:
            return []
        return [{"node": NODE, "description": "RabbitMQ Management", "path": "/", "port": str(mgmt.port)}]

    def listeners(self) -> list[dict]:
        out = []
        server = self.server
        if server is not None and server.port is not None:
            out.append({"node": NODE, "protocol": "amqp", "ip_address": server.host, "port": server.port,
                        "socket_opts": {"backlog": 1024, "nodelay": True}})
        if server is not None and getattr(server, "tls_port", None):
            out.append({"node": NODE, "protocol": "amqp/ssl", "ip_address": server.host, "port": server.tls_port,
                        "socket_opts": {}})
        if self.mgmt is not None and self.mgmt.port is not None:
            out.append({"node": NODE, "protocol": "http", "ip_address": self.mgmt.host, "port": self.mgmt.port,
                        "socket_opts": {"port": self.mgmt.port}})
        return out

    def overview(self, visible_vhosts: list[Any]) -> dict:
        broker = self.broker
        sampler = self.sampler
        totals = broker.message_totals()
        rates = sampler.node_rates() if sampler is not None else {}
        stats: dict[str, Any] = {}
        for name in TOTAL_FIELDS:
            stats[name] = totals[name]
            stats[name + "_details"] = {"rate": round(rates.get(name, 0.0), 2)}
        dg = totals["deliver"] + totals["deliver_no_ack"] + totals["get"] + totals["get_no_ack"]
        dgr = sum(rates.get(n, 0.0) for n in ("deliver", "deliver_no_ack", "get", "get_no_ack"))
        _deliver_get(stats, dg, dgr)
        stats["disk_reads"] = 0
        stats["disk_reads_details"] = {"rate": 0.0}
        stats["disk_writes"] = 0
        stats["disk_writes_details"] = {"rate": 0.0}
        ready = unacked = queues = exchanges = consumers = 0
        names = {v.name for v in visible_vhosts}
        for vhost in visible_vhosts:
            exchanges += len(vhost.exchanges)
            for q in list(vhost.queues.values()):
                queues += 1
                ready += len(q.ready)
                unacked += self.unacked.get(q, 0)
                consumers += len(q.consumers)
        sessions = [s for s in list(broker.sessions) if s.vhost is not None and s.vhost.name in names]
        channels = sum(len(s.channels) for s in sessions)
        return {
            "management_version": minimq.__version__,
            "rates_mode": "basic",
            "sample_retention_policies": {"global": [600], "basic": [600], "detailed": [600]},
            "exchange_types": self.exchange_types(),
            "product_version": minimq.__version__,
            "product_name": "minimq",
            "rabbitmq_version": "3.10.0",
            "cluster_name": broker.server_properties.get("cluster_name", "minimq"),
            "erlang_version": f"Python {platform.python_version()}",
            "erlang_full_version": f"Python {sys.version.split()[0]} ({platform.python_implementation()})",
            "release_series_support_status": "supported",
            "disable_stats": False,
            "enable_queue_totals": False,
            "message_stats": stats,
            "queue_totals": {
                "messages": ready + unacked,
                "messages_details": {"rate": round(rates.get("messages", 0.0), 2)},
                "messages_ready": ready,
                "messages_ready_details": {"rate": round(rates.get("messages_ready", 0.0), 2)},
                "messages_unacknowledged": unacked,
                "messages_unacknowledged_details": {"rate": round(rates.get("messages_unacknowledged", 0.0), 2)},
            },
            "object_totals": {
                "channels": channels,
                "connections": len(sessions),
                "consumers": consumers,
                "exchanges": exchanges,
                "queues": queues,
            },
            "statistics_db_event_queue": 0,
            "node": NODE,
            "listeners": self.listeners(),
            "contexts": self.contexts(),
        }


def binding_dict(vhost: str, source: str, dest: str, dest_type: str, key: str, args: dict) -> dict:
    return {
        "source": source,
        "vhost": vhost,
        "destination": dest,
        "destination_type": dest_type,
        "routing_key": key,
        "arguments": plain(args or {}),
        "properties_key": properties_key(key, args),
    }


def properties_key(key: str, args: dict | None) -> str:
    """RabbitMQ's name for one binding among those between the same ends: the routing key
    (quoted the way a URL path segment needs), plus a hash of the arguments if any."""
    base = quote(key, safe="") if key else "~"
    if not args:
        return base
    digest = hashlib.sha1(json.dumps(plain(args), sort_keys=True).encode()).digest()
    return base + "~" + base64.urlsafe_b64encode(digest[:8]).decode().rstrip("=")


def _deliver_get(stats: dict, count: int, rate: float | None = None) -> None:
    stats["deliver_get"] = count
    stats["deliver_get_details"] = {"rate": round(rate or 0.0, 2)}


def _message_bytes(q: Any, ready: int) -> int:
    """Bytes of ready messages: exact for queues that count them, else estimated from the
    first few (reading every message of a long queue would stall the loop)."""
    if q.special:
        return q.ready_bytes
    if not ready:
        return 0
    sizes = []
    for m in q.ready:
        sizes.append(len(m.body))
        if len(sizes) >= 16:
            break
    return int(sum(sizes) / len(sizes) * ready)


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _disk_limit(server: Any) -> int:
    limit = getattr(server, "disk_free_limit", None)
    if not limit:
        return 0
    if isinstance(limit, float):
        path = getattr(getattr(server.broker, "store", None), "path", None) or "."
        try:
            st = os.statvfs(path)
            return int(st.f_blocks * st.f_frsize * limit)
        except OSError:
            return 0
    return int(limit)


def fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def fd_limit() -> int:
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1024


def disk_free(path: str) -> int:
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except OSError:
        return 0
