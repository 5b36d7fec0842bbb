"""Policies and operator policies, through the public surface: a real pika client on the AMQP
port and the real management API of a broker started by its CLI.

The behaviour tests (`target` fixture) run against minimq and, where a RabbitMQ node answers
rabbitmqctl (CI's private node, MINIMQ_DIFF_URL/MINIMQ_DIFF_NODE; on a developer's machine
the local node on 5672), against RabbitMQ 3.10 too, with the policy set by `rabbitmqctl
set_policy`: both must behave the same. What cannot be checked that way (timings) was
observed on RabbitMQ 3.10.8 and is noted in the docstrings.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any, Callable, Iterator

import pika
import pytest

from .conftest import Node, rabbit_env, rabbitmqctl_base, seg, start_node

DIFF_URL = os.environ.get("MINIMQ_DIFF_URL", "amqp://guest:guest@127.0.0.1:5672/")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a condition that has no event to wait on (RabbitMQ applies policies in its queue
    processes, after set_policy returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {value!r}")
        time.sleep(0.05)


class Target:
    """A broker to run a behaviour test against: AMQP parameters and a way to set policies."""

    name = ""

    def params(self) -> pika.ConnectionParameters:
        raise NotImplementedError

    def set_policy(self, name: str, pattern: str, definition: dict, apply_to: str = "all",
                   priority: int = 0, operator: bool = False) -> None:
        raise NotImplementedError

    def clear_policy(self, name: str, operator: bool = False) -> None:
        raise NotImplementedError


class MinimqTarget(Target):
    name = "minimq"

    def __init__(self, node: Node) -> None:
        self.node = node

    def params(self) -> pika.ConnectionParameters:
        return pika.ConnectionParameters("127.0.0.1", self.node.amqp_port)

    def set_policy(self, name, pattern, definition, apply_to="all", priority=0, operator=False):
        kind = "operator-policies" if operator else "policies"
        status, body, _ = self.node.request("PUT", f"/api/{kind}/%2F/{seg(name)}", {
            "pattern": pattern, "definition": definition, "apply-to": apply_to, "priority": priority})
        assert status in (201, 204), body

    def clear_policy(self, name, operator=False):
        kind = "operator-policies" if operator else "policies"
        self.node.request("DELETE", f"/api/{kind}/%2F/{seg(name)}")


class RabbitTarget(Target):
    name = "rabbitmq"

    def __init__(self, ctl: list[str]) -> None:
        self.ctl = ctl
        self.vhost = pika.URLParameters(DIFF_URL).virtual_host

    def params(self) -> pika.ConnectionParameters:
        return pika.URLParameters(DIFF_URL)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self.ctl + list(args), capture_output=True, text=True, timeout=120, env=rabbit_env())
        assert done.returncode == 0, done.stdout + done.stderr

    def set_policy(self, name, pattern, definition, apply_to="all", priority=0, operator=False):
        cmd = "set_operator_policy" if operator else "set_policy"
        self._run(cmd, "-p", self.vhost, "--priority", str(priority), "--apply-to", apply_to, name, pattern,
                  json.dumps(definition))

    def clear_policy(self, name, operator=False):
        self._run("clear_operator_policy" if operator else "clear_policy", "-p", self.vhost, name)


RABBITMQCTL = rabbitmqctl_base()


@pytest.fixture(params=["minimq", "rabbitmq"])
def target(request) -> Iterator[Target]:
    if request.param == "minimq":
        yield MinimqTarget(request.getfixturevalue("node"))
        return
    if RABBITMQCTL is None:
        pytest.skip("no RabbitMQ node answers rabbitmqctl (.ci/run starts a private one)")
    yield RabbitTarget(RABBITMQCTL)


class Session:
    """One test's connection, channel (with confirms, so publishes are enqueued when they
    return), names and clean-up on the target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.prefix = "policies-" + uuid.uuid4().hex[:8]
        self.conn = pika.BlockingConnection(target.params())
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.policies: list[tuple[str, bool]] = []
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def policy(self, suffix: str, pattern: str, definition: dict, *, operator: bool = False, **kw: Any) -> str:
        name = self.name(suffix)
        self.target.set_policy(name, pattern, definition, operator=operator, **kw)
        if (name, operator) not in self.policies:
            self.policies.append((name, operator))
        return name

    def clear(self, name: str, *, operator: bool = False) -> None:
        self.target.clear_policy(name, operator=operator)
        self.policies.remove((name, operator))

    def queue(self, suffix: str, **kw: Any) -> str:
        name = self.name(suffix)
        self.ch.queue_declare(name, **kw)
        self.queues.append(name)
        return name

    def exchange(self, suffix: str, kind: str = "fanout", **kw: Any) -> str:
        name = self.name(suffix)
        self.ch.exchange_declare(name, kind, **kw)
        self.exchanges.append(name)
        return name

    def publish(self, queue: str, *bodies: bytes, exchange: str = "") -> None:
        for body in bodies:
            self.ch.basic_publish(exchange, queue, body)

    def count(self, queue: str) -> int:
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def bodies(self, queue: str) -> list[bytes]:
        out = []
        while True:
            method, props, body = self.ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(body)

    def wait_count(self, queue: str, n: int) -> None:
        wait_until(lambda: self.count(queue) == n, what=f"{queue} to hold {n} messages (has {self.count(queue)})")

    def close(self) -> None:
        for name, operator in self.policies:
            self.target.clear_policy(name, operator=operator)
        try:
            if not self.ch.is_open:
                self.ch = self.conn.channel()
            for q in self.queues:
                self.ch.queue_delete(q)
            for x in self.exchanges:
                self.ch.exchange_delete(x)
        finally:
            if self.conn.is_open:
                self.conn.close()


@pytest.fixture
def s(target: Target) -> Iterator[Session]:
    session = Session(target)
    try:
        yield session
    finally:
        session.close()


# ------------------------------------------------------------------ behaviour (both brokers)


def test_a_max_length_policy_truncates_an_existing_queue_at_once_and_dead_letters_by_policy(s):
    """RabbitMQ applies a new max-length to the messages already there: the heads go, to the
    dead-letter exchange the same policy names (reason maxlen)."""
    q = s.queue("ml")
    dead = s.queue("dead")
    dlx = s.exchange("dlx")
    s.ch.queue_bind(dead, dlx)
    s.publish(q, *[b"m%d" % i for i in range(8)])
    s.policy("p", f"^{q}$", {"max-length": 3, "dead-letter-exchange": dlx}, apply_to="queues")
    s.wait_count(q, 3)
    s.wait_count(dead, 5)
    assert s.bodies(q) == [b"m5", b"m6", b"m7"]
    method, props, body = s.ch.basic_get(dead, auto_ack=True)
    assert body == b"m0"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("maxlen", q)
    s.publish(q, *[b"n%d" % i for i in range(5)])  # the limit holds for new messages too
    assert s.count(q) == 3


def test_a_dlx_policy_dead_letters_a_rejected_message_and_an_argument_wins(s):
    dlx = s.exchange("dlx")
    other = s.exchange("other")
    dead, dead2 = s.queue("dead"), s.queue("dead2")
    s.ch.queue_bind(dead, dlx)
    s.ch.queue_bind(dead2, other)
    s.policy("dlx", f"^{s.prefix}-work", {"dead-letter-exchange": dlx}, apply_to="queues")
    work = s.queue("work")
    work_arg = s.queue("work-arg", arguments={"x-dead-letter-exchange": other})
    for q in (work, work_arg):
        s.publish(q, b"job")
        method, _, _ = s.ch.basic_get(q)
        s.ch.basic_reject(method.delivery_tag, requeue=False)
    s.wait_count(dead, 1)
    s.wait_count(dead2, 1)
    _, props, body = s.ch.basic_get(dead, auto_ack=True)
    assert body == b"job" and props.headers["x-death"][0]["reason"] == "rejected"
    assert props.headers["x-death"][0]["queue"] == work
    _, props, _ = s.ch.basic_get(dead2, auto_ack=True)
    assert props.headers["x-death"][0]["queue"] == work_arg


def test_policy_and_argument_merge_by_the_minimum_and_an_operator_policy_caps(s):
    s.policy("len", f"^{s.prefix}-", {"max-length": 5}, apply_to="queues", priority=1)
    low = s.queue("low", arguments={"x-max-length": 2})
    high = s.queue("high", arguments={"x-max-length": 10})
    plain = s.queue("plain")
    for q in (low, high, plain):
        s.publish(q, *[b"%d" % i for i in range(12)])
    assert [s.count(q) for q in (low, high, plain)] == [2, 5, 5]
    s.policy("cap", f"^{s.prefix}-", {"max-length": 3}, operator=True)
    for q, n in ((low, 2), (high, 3), (plain, 3)):
        s.wait_count(q, n)
    assert s.bodies(high) == [b"9", b"10", b"11"]
    # Redeclaring with the declared arguments is fine: a policy never makes it inequivalent.
    s.ch.queue_declare(low, arguments={"x-max-length": 2})


def test_a_policy_change_applies_to_existing_queues_and_clearing_it_lifts_the_limit(s):
    q = s.queue("q")
    name = s.policy("p", f"^{q}$", {"max-length": 5})
    s.publish(q, *[b"%d" % i for i in range(10)])
    assert s.count(q) == 5
    s.policy("p", f"^{q}$", {"max-length": 2})
    s.wait_count(q, 2)
    s.clear(name)
    # Once the queue no longer drops, the next publishes stay.
    wait_until(lambda: (s.publish(q, b"x"), s.count(q))[1] >= 4, what="the limit to go")


def test_the_matching_policy_with_the_highest_priority_wins(s):
    """On a tie RabbitMQ 3.10.8 picks by its table's internal order: neither the name nor the
    creation order decides (policies-a beat policies-b, policies-x1-b beat policies-x1-a,
    whichever was set first). minimq picks the name that sorts first; not compared here."""
    q = s.queue("q")
    s.policy("b", f"^{q}$", {"max-length": 4}, priority=1)
    s.policy("a", "^" + s.prefix, {"max-length": 2}, priority=2)
    s.policy("z", f"^{q}", {"max-length": 7}, priority=0)
    s.policy("n", "^nothing-matches", {"max-length": 1}, priority=9)
    s.publish(q, *[b"%d" % i for i in range(10)])
    wait_until(lambda: (s.publish(q, b"x"), s.count(q))[1] == 2, what="policy a to apply")
    s.policy("c", f"{q}$", {"max-length": 6}, priority=5)
    wait_until(lambda: (s.publish(q, b"x"), s.count(q))[1] == 6, what="policy c to apply")


def test_a_message_ttl_policy_applies_to_new_messages_only(s):
    """RabbitMQ 3.10 keeps the messages already in the queue (they have no deadline) and
    gives new ones the TTL; 0 means deliver now or drop, so with no consumer they go."""
    q, probe = s.queue("q"), s.queue("probe")
    s.publish(q, b"old1", b"old2")
    s.policy("ttl", f"^({q}|{probe})$", {"message-ttl": 0}, apply_to="queues")

    def applied() -> bool:
        s.ch.queue_purge(probe)
        s.publish(probe, b"x")
        return s.count(probe) == 0

    wait_until(applied, what="the TTL to apply")
    s.publish(q, b"new")
    assert s.bodies(q) == [b"old1", b"old2"]


def test_policies_apply_to_exclusive_and_auto_delete_queues(s):
    s.policy("p", f"^{s.prefix}-", {"max-length": 1}, apply_to="queues")
    excl = s.queue("excl", exclusive=True)
    auto = s.queue("auto", auto_delete=True)
    for q in (excl, auto):
        s.publish(q, b"1", b"2", b"3")
        assert s.bodies(q) == [b"3"]


def test_an_alternate_exchange_policy_applies_unless_the_exchange_names_one(s):
    ae, ae2 = s.exchange("ae"), s.exchange("ae2")
    caught, caught2 = s.queue("caught"), s.queue("caught2")
    s.ch.queue_bind(caught, ae)
    s.ch.queue_bind(caught2, ae2)
    main = s.exchange("main", "direct")
    main_arg = s.exchange("main-arg", "direct", arguments={"alternate-exchange": ae2})
    s.policy("ae", f"^{s.prefix}-main", {"alternate-exchange": ae}, apply_to="exchanges")
    wait_until(lambda: (s.publish("nowhere", b"x", exchange=main), s.count(caught))[1] >= 1,
               what="the policy's alternate exchange")
    s.publish("nowhere", b"y", exchange=main_arg)
    s.wait_count(caught2, 1)


def test_on_a_quorum_queue_the_policys_overflow_wins(s):
    """RabbitMQ 3.10.8: x-overflow reject-publish and a policy overflow drop-head with
    max-length 1: a quorum queue acks all three publishes and keeps the last, a classic
    queue nacks two (its argument wins)."""
    s.policy("p", f"^{s.prefix}-", {"max-length": 1, "overflow": "drop-head"}, apply_to="queues")
    quorum = s.queue("quorum", durable=True, arguments={"x-queue-type": "quorum", "x-overflow": "reject-publish"})
    classic = s.queue("classic", arguments={"x-overflow": "reject-publish"})
    s.publish(quorum, b"1", b"2", b"3")
    assert s.bodies(quorum) == [b"3"]
    s.publish(classic, b"1")
    with pytest.raises(pika.exceptions.NackError):
        s.publish(classic, b"2")
    assert s.bodies(classic) == [b"1"]


def test_apply_to_exchanges_leaves_queues_alone(s):
    q = s.queue("q")
    s.policy("p", f"^{q}$", {"max-length": 1}, apply_to="exchanges")
    s.policy("p2", f"^{q}-nothing$", {"max-length": 1}, apply_to="queues")
    s.publish(q, b"1", b"2", b"3")
    assert s.count(q) == 3


# ------------------------------------------------------------------ management API (minimq)


P = "/api/policies/%2F/"
O = "/api/operator-policies/%2F/"


@pytest.fixture
def pname(node: Node) -> Iterator[str]:
    name = "policies-" + uuid.uuid4().hex[:8]
    yield name
    node.request("DELETE", P + name)
    node.request("DELETE", O + name)


def test_put_get_list_delete_as_rabbitmq(node, pname):
    body = {"pattern": "^lead-", "definition": {"message-ttl": 5000, "max-length": 3},
            "apply-to": "queues", "priority": 1}
    assert node.request("PUT", P + pname, body)[0] == 201
    assert node.request("PUT", P + pname, body)[0] == 204
    status, got, _ = node.request("GET", P + pname)
    assert status == 200
    assert json.dumps(got, separators=(",", ":")) == (
        '{"vhost":"/","name":"%s","pattern":"^lead-","apply-to":"queues",'
        '"definition":{"max-length":3,"message-ttl":5000},"priority":1}' % pname)
    assert got in node.get("/api/policies") and got in node.get("/api/policies/%2F")
    assert node.request("DELETE", P + pname)[0] == 204
    assert node.request("DELETE", P + pname)[:2] == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert node.request("GET", P + pname)[0] == 404
    # defaults: apply-to all, priority 0
    assert node.request("PUT", P + pname, {"pattern": "^x", "definition": {"max-length": 1}})[0] == 201
    assert node.get(P + pname)["apply-to"] == "all" and node.get(P + pname)["priority"] == 0
    status, body, _ = node.request("PUT", "/api/policies/nope/x", {"pattern": "^x", "definition": {"max-length": 1}})
    assert (status, body) == (404, {"error": "not_found", "reason": "vhost_not_found"})
    assert node.request("POST", P + pname, {})[0] == 405
    assert node.request("DELETE", "/api/policies/%2F")[0] == 405


def test_lists_are_ordered_by_priority(node, pname):
    for suffix, prio in (("3", 3), ("1", 1), ("2", 2), ("0", 0)):
        assert node.request("PUT", P + pname + suffix, {"pattern": "^zzz", "definition": {"max-length": 1},
                                                         "priority": prio})[0] == 201
    try:
        mine = [p["name"] for p in node.get("/api/policies/%2F") if p["name"].startswith(pname)]
        assert mine == [pname + s for s in "0123"]
    finally:
        for suffix in "0123":
            node.request("DELETE", P + pname + suffix)


# (body, RabbitMQ 3.10.8's reason, verbatim)
VALIDATION = [
    ({"pattern": "^x", "definition": {"foo": 1}},
     'Validation failed\n\n[{&lt;&lt;"foo"&gt;&gt;,1}] are not recognised policy settings\n'),
    ({"pattern": "^x", "definition": {"message-ttl": "x"}},
     'Validation failed\n\n&lt;&lt;"x"&gt;&gt; is not a valid message TTL\n'),
    ({"definition": {"message-ttl": 1}}, "[{key_missing,pattern}]"),
    ({"pattern": "^x"}, "[{key_missing,definition}]"),
    ({"pattern": "^x", "definition": {"message-ttl": 1}, "apply-to": "foo"},
     "Validation failed\n\napply-to 'foo' unrecognised; should be 'queues', 'exchanges' or 'all'\n"),
    ({"pattern": "^x", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ({"pattern": "^x", "definition": {"message-ttl": 1}, "priority": "a"},
     'Validation failed\n\npriority should be a number, actually was &lt;&lt;"a"&gt;&gt;\n'),
    ({"pattern": "^x", "definition": {"message-ttl": 1}, "priority": None},
     "Validation failed\n\npriority should be a number, actually was null\n"),
    ({"pattern": 1, "definition": {"message-ttl": 1}}, "Validation failed\n\npattern should be a binary but was 1\n"),
    ({"pattern": "^x", "definition": {"message-ttl": -1, "expires": 0}},
     "Validation failed\n\n0 is not a valid queue expiry\n"),
    ({"pattern": "(", "definition": {"message-ttl": "x"}, "priority": "a", "apply-to": "zz"}, None),
    ({"pattern": "^x", "definition": {"foo": 1, "bar": [1, 2], "baz": {"a": 1}, "q": True, "n": None, "s": "str",
                                      "f": 1.5}},
     'Validation failed\n\n[{&lt;&lt;"bar"&gt;&gt;,[1,2]},\n {&lt;&lt;"baz"&gt;&gt;,#{&lt;&lt;"a"&gt;&gt; =&gt; 1}},\n'
     ' {&lt;&lt;"f"&gt;&gt;,1.5},\n {&lt;&lt;"foo"&gt;&gt;,1},\n {&lt;&lt;"n"&gt;&gt;,null},\n'
     ' {&lt;&lt;"q"&gt;&gt;,true},\n {&lt;&lt;"s"&gt;&gt;,&lt;&lt;"str"&gt;&gt;}] are not recognised policy settings\n'),
    ({"pattern": "^x", "definition": {"ha-mode": "all", "ha-params": 1}},
     'Validation failed\n\nha-mode="all" does not take parameters\n'),
    ({"pattern": "^x", "definition": {"ha-mode": "exactly"}},
     'Validation failed\n\nha-mode="exactly" takes an integer, none given\n'),
    ({"pattern": "^x", "definition": {"ha-params": 1}},
     "Validation failed\n\nha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown\n"),
    ({"pattern": "^x", "definition": {"max-length": True}}, "Validation failed\n\ntrue is not a valid maximum length\n"),
    ({"pattern": "^x", "definition": {"max-length-bytes": 1.0}},
     "Validation failed\n\n1.0 is not a valid maximum length in bytes\n"),
    ({"pattern": "^x", "definition": {"overflow": "x"}},
     'Validation failed\n\n&lt;&lt;"x"&gt;&gt; is not a valid overflow value\n'),
    ({"pattern": "^x", "definition": {"queue-master-locator": 1}},
     "Validation failed\n\n1 invalid queue-master-locator value\n"),
]


@pytest.mark.parametrize("body,reason", VALIDATION)
def test_validation_errors_are_rabbitmqs(node, pname, body, reason):
    status, got, _ = node.request("PUT", P + pname, body)
    assert status == 400 and got["error"] == "bad_request"
    if reason is None:  # several complaints, in RabbitMQ's order (our regex text differs)
        lines = got["reason"].split("\n")
        assert lines[:3] == ["Validation failed", "", '&lt;&lt;"x"&gt;&gt; is not a valid message TTL']
        assert lines[3] == "apply-to 'zz' unrecognised; should be 'queues', 'exchanges' or 'all'"
        assert lines[4].startswith("pattern should be regular expression but is invalid: ")
        assert lines[5] == 'priority should be a number, actually was &lt;&lt;"a"&gt;&gt;'
    else:
        assert got["reason"] == reason
    assert node.request("GET", P + pname)[0] == 404


def test_accepted_keys_include_mirroring_and_quorum_ones(node, pname):
    """3.10 accepts these (a single node has nothing to mirror: they change nothing here)."""
    for definition in ({"ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic"},
                       {"queue-mode": "lazy", "delivery-limit": 3, "max-in-memory-length": 1,
                        "overflow": "reject-publish-dlx", "dead-letter-routing-key": "k"}):
        status, body, _ = node.request("PUT", P + pname, {"pattern": "^x", "definition": definition})
        assert status in (201, 204), body


def test_a_backtracking_pattern_is_refused(node, pname):
    status, body, _ = node.request("PUT", P + pname, {"pattern": "(a+)+$", "definition": {"max-length": 1}})
    assert status == 400
    assert body["reason"].startswith("Validation failed\n\npattern should be regular expression but is invalid: ")


def test_operator_policies_take_only_the_capping_keys_and_unescaped_errors(node, pname):
    ok = {"pattern": "^x", "definition": {"message-ttl": 1, "expires": 5, "max-length": 1, "max-length-bytes": 1,
                                          "delivery-limit": 1, "max-in-memory-length": 1,
                                          "max-in-memory-bytes": 1}}
    assert node.request("PUT", O + pname, ok)[0] == 201
    assert node.get(O + pname)["definition"]["max-length"] == 1
    assert node.get(O + pname) in node.get("/api/operator-policies")
    assert node.get(O + pname) not in node.get("/api/policies")
    status, body, _ = node.request("PUT", O + pname, {"pattern": "^x", "definition": {"dead-letter-exchange": "x"}})
    assert (status, body["reason"]) == (
        400, 'Validation failed\n\n[{<<"dead-letter-exchange">>,<<"x">>}] are not recognised policy settings\n')
    assert node.request("DELETE", O + pname)[0] == 204


def test_who_may_read_and_change_policies(node, pname):
    """As RabbitMQ 3.10.8 answers (checked there with users of each tag)."""
    users = {"mgmt": "management", "pm": "policymaker", "pmnp": "policymaker", "mon": "monitoring",
             "adm": "administrator"}
    for u, tags in users.items():
        assert node.request("PUT", f"/api/users/{pname}-{u}", {"password": "pw", "tags": tags})[0] == 201
        if u not in ("pmnp", "adm"):
            assert node.request("PUT", f"/api/permissions/%2F/{pname}-{u}",
                                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    body = {"pattern": "^zzz", "definition": {"max-length": 1}}
    assert node.request("PUT", P + pname, body)[0] == 201
    assert node.request("PUT", O + pname, body)[0] == 201
    try:
        def call(u, method, path, b=None):
            status, got, _ = node.request(method, path, b, user=f"{pname}-{u}", password="pw")
            return status, (got or {}).get("reason") if isinstance(got, dict) else got

        obj = "User not authorised to access object"
        for u in ("mgmt", "mon"):
            assert any(p["name"] == pname for p in call(u, "GET", "/api/policies")[1])
            assert call(u, "GET", P + pname) == (401, obj)
            assert call(u, "PUT", P + pname, body) == (401, obj)
            assert call(u, "DELETE", P + pname) == (401, obj)
            assert call(u, "GET", O + pname) == (401, "Not administrator user")
        assert call("pm", "GET", P + pname)[0] == 200
        assert call("pm", "PUT", P + pname + "x", body)[0] == 201
        assert call("pm", "DELETE", P + pname + "x")[0] == 204
        assert call("pm", "PUT", O + pname, body) == (401, "Not administrator user")
        assert call("pm", "PUT", "/api/policies/nope/x", body) == (404, "vhost_not_found")
        assert call("pmnp", "GET", "/api/policies") == (200, [])
        assert call("pmnp", "GET", "/api/policies/%2F") == (401, "User not authorised to access virtual host")
        assert call("pmnp", "PUT", P + pname, body) == (401, obj)
        assert call("adm", "GET", P + pname)[0] == 200  # administrators need no permissions
        assert call("adm", "PUT", O + pname, body)[0] == 204
    finally:
        for u in users:
            node.request("DELETE", f"/api/users/{pname}-{u}")
        node.request("DELETE", P + pname + "x")


def test_queues_and_exchanges_show_their_policy(node, pname):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        ch = conn.channel()
        q = pname + "-q"
        ch.queue_declare(q, arguments={"x-max-length": 10})
        assert node.get(f"/api/queues/%2F/{q}")["policy"] is None
        assert node.get(f"/api/queues/%2F/{q}")["effective_policy_definition"] == {}
        assert node.request("PUT", P + pname, {"pattern": f"^{pname}", "priority": 1, "definition": {
            "max-length": 5, "message-ttl": 60000, "dead-letter-exchange": "amq.fanout"}})[0] == 201
        assert node.request("PUT", O + pname, {"pattern": f"^{pname}-q", "apply-to": "queues", "definition": {
            "max-length": 3, "expires": 600000}})[0] == 201
        got = node.get(f"/api/queues/%2F/{q}")
        # As RabbitMQ 3.10.8 shows it: the two merged (max-length the lower), the arguments as declared.
        assert (got["policy"], got["operator_policy"]) == (pname, pname)
        assert got["effective_policy_definition"] == {
            "dead-letter-exchange": "amq.fanout", "expires": 600000, "max-length": 3, "message-ttl": 60000}
        assert got["arguments"] == {"x-max-length": 10}
        x = pname + "-x"
        ch.exchange_declare(x, "direct")
        assert node.get(f"/api/exchanges/%2F/{x}")["policy"] == pname
        assert "policy" not in node.get("/api/exchanges/%2F/amq.direct")  # RabbitMQ: no key without one
        assert node.request("DELETE", P + pname)[0] == 204
        got = node.get(f"/api/queues/%2F/{q}")
        assert (got["policy"], got["operator_policy"]) == (None, pname)
        assert got["effective_policy_definition"] == {"expires": 600000, "max-length": 3}
        assert "policy" not in node.get(f"/api/exchanges/%2F/{x}")
        ch.queue_delete(q)
        ch.exchange_delete(x)
    finally:
        conn.close()


def test_policies_survive_a_restart_and_apply_to_recovered_queues(tmp_path):
    data = str(tmp_path / "data")
    n = start_node("--data-dir", data)
    try:
        assert n.request("PUT", P + "policies-keep", {"pattern": "^durable-", "definition": {"max-length": 2},
                                                      "apply-to": "queues"})[0] == 201
        assert n.request("PUT", O + "policies-cap", {"pattern": "^durable-", "definition": {"message-ttl": 60000}})[0] == 201
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", n.amqp_port))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("durable-q", durable=True)
        for i in range(5):
            ch.basic_publish("", "durable-q", b"%d" % i, pika.BasicProperties(delivery_mode=2))
        conn.close()
    finally:
        n.stop()
    n = start_node("--data-dir", data)
    try:
        assert n.get(P + "policies-keep")["definition"] == {"max-length": 2}
        assert n.get(O + "policies-cap")["definition"] == {"message-ttl": 60000}
        got = n.get("/api/queues/%2F/durable-q")
        assert (got["policy"], got["operator_policy"], got["messages"]) == ("policies-keep", "policies-cap", 2)
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", n.amqp_port))
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", "durable-q", b"n%d" % i)
        assert ch.queue_declare("durable-q", passive=True).method.message_count == 2
        conn.close()
    finally:
        n.stop()


def test_definitions_import_applies_policies_and_export_includes_them(node, pname):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = pname + "-q"
        ch.queue_declare(q)
        for i in range(4):
            ch.basic_publish("", q, b"%d" % i)
        defs = {"policies": [{"vhost": "/", "name": pname, "pattern": f"^{pname}-", "apply-to": "queues",
                              "definition": {"max-length": 1}, "priority": 0}]}
        assert node.request("POST", "/api/definitions", defs)[0] == 204
        assert ch.queue_declare(q, passive=True).method.message_count == 1
        exported = node.get("/api/definitions")
        assert defs["policies"][0] in exported["policies"]
        assert "operator_policies" not in exported  # as RabbitMQ 3.10's export
        bad = {"policies": [{"vhost": "/", "name": pname + "b", "pattern": "^x", "definition": {"foo": 1}}]}
        status, body, _ = node.request("POST", "/api/definitions", bad)
        assert status == 400 and "are not recognised policy settings" in body["reason"]
        ch.queue_delete(q)
    finally:
        conn.close()
