"""Policies in the core: validation texts, matching, merging with arguments, and what a change
does to queues that already hold messages (minimq.broker.policies, Queue.apply_args).

RabbitMQ 3.10.8 observations these follow are quoted where a test pins one.
"""
from __future__ import annotations

import time

import pytest

from minimq.broker import Broker
from minimq.broker.arguments import parse_queue_args
from minimq.broker.message import Message, make_route
from minimq.broker.policies import (
    REAPPLY_SLICE,
    Policy,
    PolicyError,
    effective_queue_args,
    erlang_term,
    make_policy,
    merged_definition,
)
from minimq.codec.properties import BasicProperties, encode_content_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> Broker:
    return Broker(clock=clock)


def msg(body: bytes, rk: str = "q") -> Message:
    return Message("", rk, make_route("", rk), encode_content_header(len(body), BasicProperties()), body)


def fill(q, n: int) -> None:
    for i in range(n):
        q.enqueue(msg(b"%d" % i, q.name))


def bodies(q) -> list[bytes]:
    return [bytes(m.body) for m in q.messages()]


# ------------------------------------------------------------------ validation


def test_erlang_terms_print_as_rabbitmq_prints_them():
    assert erlang_term("x") == '<<"x">>'
    assert erlang_term('a"b') == '<<"a\\"b">>'
    assert erlang_term(1.0) == "1.0" and erlang_term(1e20) == "1.0e20"
    assert erlang_term([1, "a"]) == '[1,<<"a">>]'
    assert erlang_term({"b": 1, "a": None}) == '#{<<"a">> => null,<<"b">> => 1}'
    assert (erlang_term(True), erlang_term(False), erlang_term(None)) == ("true", "false", "null")


@pytest.mark.parametrize("definition,text", [
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"max-length": "3"}, '<<"3">> is not a valid maximum length'),
    ({"dead-letter-exchange": 1}, "1 is not a valid dead letter exchange name"),
    ({"alternate-exchange": 1}, "1 is not a valid alternate exchange name"),
    ({"queue-mode": "x"}, '<<"x">> is not a valid queue-mode value'),
    ({"delivery-limit": -1}, "-1 is not a valid delivery limit"),
    ({"ha-mode": "nodes", "ha-params": []}, 'ha-mode="nodes" list must be non-empty'),
    ({"ha-mode": "nodes", "ha-params": [1]}, 'ha-mode="nodes" takes a list of strings, 1 was not a string'),
    ({"ha-mode": "bogus"}, '<<"bogus">> is not a valid ha-mode value'),
    ({"ha-mode": "all", "ha-sync-mode": "x"}, 'ha-sync-mode must be "manual" or "automatic", got <<"x">>'),
    ({"ha-mode": "all", "ha-sync-batch-size": 0}, "ha-sync-batch-size takes an integer greater than 0, 0 given"),
    ({"ha-mode": "all", "ha-promote-on-failure": "x"},
     'ha-promote-on-failure must be "always" or "when-synced", got <<"x">>'),
    ({"queue-leader-locator": "x"}, '<<"x">> is not a valid queue leader locator value'),
    ({"message-ttl": 1, "expires": "y", "max-length": "z"}, '<<"y">> is not a valid queue expiry'),
    ({"message-ttl": "x", "foo": 1}, '<<"x">> is not a valid message TTL'),  # values before names
])
def test_policy_validation_texts(definition, text):
    with pytest.raises(PolicyError) as err:
        make_policy("/", "p", "^x", definition)
    assert str(err.value) == f"Validation failed\n\n{text}\n"


def test_operator_policies_take_only_capping_keys():
    make_policy("/", "o", "^x", {"max-length": 1, "message-ttl": 1, "expires": 1, "max-length-bytes": 1,
                                 "delivery-limit": 1}, operator=True)
    with pytest.raises(PolicyError, match=r'\[\{<<"overflow">>,<<"reject-publish">>\}\] are not recognised'):
        make_policy("/", "o", "^x", {"overflow": "reject-publish"}, operator=True)


def test_patterns_go_through_the_permission_regex_guard():
    with pytest.raises(PolicyError, match="pattern should be regular expression but is invalid: "):
        make_policy("/", "p", "(a|aa)*$", {"max-length": 1})
    make_policy("/", "p", "^(dev|prod)\\.", {"max-length": 1})


# ------------------------------------------------------------------ matching and merging


def test_highest_priority_then_first_name_and_apply_to(broker):
    v = broker.vhosts["/"]
    q, _ = v.declare_queue("orders.eu", None)
    ex = v.declare_exchange("orders.x", "topic")
    broker.policies.set("/", "b", "^orders", {"max-length": 4}, 1)
    broker.policies.set("/", "a", "eu$", {"max-length": 2}, 1)
    broker.policies.set("/", "low", "", {"max-length": 9}, 0)
    assert q.policy.name == "a" and q.args.max_length == 2
    assert ex.policy.name == "b"  # a does not match it, b does
    broker.policies.set("/", "c", "^orders", {"max-length": 3}, 2, "exchanges")
    assert q.policy.name == "a" and ex.policy.name == "c"
    broker.policies.clear("/", "a")
    assert q.policy.name == "b" and q.args.max_length == 4


def test_merge_rules_of_process_args_policy(broker):
    args = {"x-max-length": 10, "x-message-ttl": 500, "x-dead-letter-exchange": "arg-dlx", "x-overflow": "reject-publish"}
    declared = parse_queue_args(args, "q", "/")
    policy = make_policy("/", "p", "", {"max-length": 3, "message-ttl": 1000, "expires": 5000,
                                        "dead-letter-exchange": "pol-dlx", "dead-letter-routing-key": "rk",
                                        "overflow": "drop-head", "max-length-bytes": 100})
    op = make_policy("/", "o", "", {"max-length": 2, "max-length-bytes": 500}, operator=True)
    eff = effective_queue_args(declared, args, policy, op)
    assert (eff.max_length, eff.message_ttl, eff.expires, eff.max_length_bytes) == (2, 500, 5000, 100)
    assert (eff.dlx, eff.dlrk, eff.overflow) == ("arg-dlx", "rk", "reject-publish")  # argument wins
    assert declared.max_length == 10  # the declared arguments are untouched
    assert merged_definition(policy, op)["max-length"] == 2
    assert list(merged_definition(policy, op)) == sorted(merged_definition(policy, op))
    # delivery-limit acts on quorum queues only (as RabbitMQ 3.10: classic queues ignore it)
    limit = make_policy("/", "d", "", {"delivery-limit": 2})
    assert effective_queue_args(declared, args, limit, None).delivery_limit is None
    quorum = parse_queue_args({"x-queue-type": "quorum", "x-delivery-limit": 5}, "q", "/")
    assert effective_queue_args(quorum, {}, limit, None).delivery_limit == 2
    # on quorum queues the policy's overflow wins over the argument
    qargs = {"x-queue-type": "quorum", "x-overflow": "reject-publish"}
    quorum = parse_queue_args(qargs, "q", "/")
    assert effective_queue_args(quorum, qargs, policy, None).overflow == "drop-head"


def test_redeclaring_compares_declared_arguments_only(broker):
    v = broker.vhosts["/"]
    broker.policies.set("/", "p", "^q$", {"max-length": 1, "message-ttl": 10})
    v.declare_queue("q", None, arguments={"x-max-length": 5})
    q, created = v.declare_queue("q", None, arguments={"x-max-length": 5})
    assert not created and q.args.max_length == 1


# ------------------------------------------------------------------ applying to queues


def test_a_lower_max_length_drops_heads_to_the_dlx_of_the_same_policy(broker):
    v = broker.vhosts["/"]
    q, _ = v.declare_queue("work", None)
    dead, _ = v.declare_queue("dead", None)
    v.bind(v.declare_exchange("dlx", "fanout"), dead, "", None)
    fill(q, 8)
    broker.policies.set("/", "p", "^work$", {"max-length": 3, "dead-letter-exchange": "dlx"})
    assert bodies(q) == [b"5", b"6", b"7"]
    assert bodies(dead) == [b"0", b"1", b"2", b"3", b"4"]
    assert next(iter(dead.messages())).headers["x-death"][0]["reason"] == "maxlen"


def test_the_limit_applies_before_the_new_overflow_mode(broker):
    """RabbitMQ 3.10.8: a policy setting max-length 3 and overflow reject-publish together on a
    queue of 8 leaves 3 (the limit is applied while the queue still drops heads); once it
    refuses publishes, a lower limit drops nothing."""
    v = broker.vhosts["/"]
    q, _ = v.declare_queue("q", None)
    fill(q, 8)
    broker.policies.set("/", "p", "^q$", {"max-length": 3, "overflow": "reject-publish"})
    assert len(q.ready) == 3
    assert not q.enqueue(msg(b"refused"))
    broker.policies.set("/", "p", "^q$", {"max-length": 1, "overflow": "reject-publish"})
    assert len(q.ready) == 3


def test_a_message_ttl_policy_leaves_the_messages_there_and_outlives_its_removal(broker, clock):
    """RabbitMQ 3.10.8: messages already queued keep no deadline; those published under the
    TTL keep theirs after the policy is cleared."""
    v = broker.vhosts["/"]
    q, _ = v.declare_queue("q", None)
    fill(q, 2)
    broker.policies.set("/", "ttl", "^q$", {"message-ttl": 1000})
    q.enqueue(msg(b"under-ttl"))
    broker.policies.clear("/", "ttl")
    clock.now += 2
    broker.tick()
    assert q.get() is not None and q.get() is not None
    assert q.get() is None  # the third expired


def test_a_policy_change_restarts_the_expiry_countdown(broker, clock):
    """RabbitMQ 3.10.8, measured: x-expires 3000 and a policy expires 2500 set after 2 s ->
    gone at 4.5 s; a policy expires 2000 changed (max-length added) after 1.5 s -> gone at
    3.5 s; x-expires 3000 and a 2000 policy cleared after 1 s -> gone at 4 s."""
    v = broker.vhosts["/"]
    start = clock.now
    q, _ = v.declare_queue("q", None, arguments={"x-expires": 3000})
    clock.now = start + 2.0
    broker.policies.set("/", "e", "^q$", {"expires": 2500})
    for at in (3.0, 4.4):
        clock.now = start + at
        broker.tick()
        assert not q.deleted, at
    clock.now = start + 4.5
    broker.tick()
    assert q.deleted

    start = clock.now
    q, _ = v.declare_queue("q2", None)
    broker.policies.set("/", "e2", "^q2$", {"expires": 2000})
    clock.now = start + 1.5
    broker.policies.set("/", "e2", "^q2$", {"expires": 2000, "max-length": 100})
    clock.now = start + 3.4
    broker.tick()
    assert not q.deleted
    clock.now = start + 3.5
    broker.tick()
    assert q.deleted

    start = clock.now
    q, _ = v.declare_queue("q3", None, arguments={"x-expires": 3000})
    broker.policies.set("/", "e3", "^q3$", {"expires": 2000})
    clock.now = start + 1.0
    broker.policies.clear("/", "e3")
    clock.now = start + 3.9
    broker.tick()
    assert not q.deleted
    clock.now = start + 4.0
    broker.tick()
    assert q.deleted
    assert len(broker.timers) == 0  # no countdown chain is left running


def test_exchanges_take_the_alternate_exchange_unless_declared_with_one(broker):
    v = broker.vhosts["/"]
    plain = v.declare_exchange("x1", "direct")
    own = v.declare_exchange("x2", "direct", arguments={"alternate-exchange": "mine"})
    broker.policies.set("/", "ae", "^x", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert (plain.alternate, own.alternate) == ("ae", "mine")
    broker.policies.clear("/", "ae")
    assert (plain.alternate, own.alternate) == (None, "mine")


def test_deleting_a_vhost_takes_its_policies(broker):
    broker.add_vhost("v")
    broker.policies.set("v", "p", "", {"max-length": 1})
    broker.delete_vhost("v")
    broker.add_vhost("v")
    assert broker.policies.list("v") == []


def test_a_change_over_many_queues_is_applied_in_slices(broker):
    """10k queues: the change is applied to REAPPLY_SLICE objects at once, the rest on the
    broker's timers (the server's loop runs in between), each slice a few ms."""
    v = broker.vhosts["/"]
    queues = [v.declare_queue(f"q{i}", None)[0] for i in range(10_000)]
    t0 = time.perf_counter()
    broker.policies.set("/", "p", "^q", {"max-length": 5})
    first = time.perf_counter() - t0
    assert sum(q.policy is not None for q in queues) == REAPPLY_SLICE
    assert broker.policies.pending
    runs = 0
    while broker.policies.pending:
        runs += 1
        broker.tick()
    assert all(q.args.max_length == 5 for q in queues) and runs >= 9
    assert first < 1.0  # generous: about 10 ms on the 2-core CI machines
    # a new change while one is pending restarts from the start, and nothing is missed
    broker.policies.set("/", "p", "^q", {"max-length": 6})
    broker.policies.set("/", "p2", "^q1", {"max-length": 7}, 1)
    broker.policies.drain()
    assert sum(q.args.max_length == 7 for q in queues) == sum(q.name.startswith("q1") for q in queues)
    assert all(q.args.max_length in (6, 7) for q in queues)


def test_policy_objects_are_immutable_snapshots():
    p = make_policy("/", "p", "^x", {"max-length": 1})
    assert isinstance(p, Policy) and p.matches("xq", "queues") and p.matches("xq", "exchanges") and not p.matches("q", "queues")
    assert p.as_json() == {"vhost": "/", "name": "p", "pattern": "^x", "apply-to": "all",
                           "definition": {"max-length": 1}, "priority": 0}
