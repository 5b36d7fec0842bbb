"""Tests for the exchange routing plug-ins (minimq.broker.exchange_types)."""

from __future__ import annotations

import functools
import random
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from minimq.broker.exchange_types import (
    EXCHANGE_TYPES,
    DirectExchangeType,
    ExchangeType,
    FanoutExchangeType,
    HeadersExchangeType,
    TopicExchangeType,
    make_exchange_type,
)
from minimq.codec.errors import CommandInvalid, PreconditionFailed
from minimq.codec.values import Float32, Int8, Int16, Int64, Timestamp, UInt32


class Dest:
    """Stand-in for a queue/exchange: hashable by identity, like the real ones."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Dest({self.name})"


def routed(x: ExchangeType, key: str = "", headers: dict | None = None) -> set:
    result = list(x.route(key, headers))
    assert len(result) == len(set(result)), f"duplicate destinations: {result}"
    return set(result)


# ---------------------------------------------------------------- registry


def test_registry_names_and_flags():
    assert set(EXCHANGE_TYPES) == {"direct", "fanout", "topic", "headers"}
    for name, cls in EXCHANGE_TYPES.items():
        inst = make_exchange_type(name)
        assert isinstance(inst, cls)
        assert isinstance(inst, ExchangeType)
        assert inst.name == name
        assert inst.needs_headers is (name == "headers")
        assert inst.is_empty()


def test_make_exchange_type_returns_fresh_instances():
    a, b = make_exchange_type("direct"), make_exchange_type("direct")
    a.add_binding(Dest("q"), "k", {})
    assert not a.is_empty() and b.is_empty()


@pytest.mark.parametrize("name", ["x", "", "Direct", "x-consistent-hash"])
def test_unknown_type_is_command_invalid(name):
    with pytest.raises(CommandInvalid) as info:
        make_exchange_type(name)
    assert info.value.text == f"unknown exchange type '{name}'"
    assert not isinstance(info.value, KeyError)


@pytest.mark.parametrize("name", ["direct", "fanout", "topic"])
def test_validate_binding_accepts_anything_for_non_headers(name):
    make_exchange_type(name).validate_binding("any.key.#", {"x-match": "bogus", "a": 1})


# ---------------------------------------------------------------- binding identity (all types)


@pytest.mark.parametrize("name", ["direct", "fanout", "topic", "headers"])
def test_binding_identity_and_noops(name):
    x = make_exchange_type(name)
    q = Dest("q")
    x.add_binding(q, "k", {"a": 1})
    x.add_binding(q, "k", {"a": 1})  # identical: no-op
    assert len(x) == 1
    x.add_binding(q, "k", {"a": 2})  # differs by arguments
    x.add_binding(q, "k2", {"a": 1})  # differs by key
    assert len(x) == 3
    x.remove_binding(q, "nope", {})  # never bound: no-op
    x.remove_binding(Dest("other"), "k", {"a": 1})
    assert len(x) == 3
    x.remove_binding(q, "k", {"a": 1})
    x.remove_binding(q, "k", {"a": 1})  # second removal: no-op
    assert len(x) == 2
    x.remove_binding(q, "k", {"a": 2})
    x.remove_binding(q, "k2", {"a": 1})
    assert x.is_empty()
    assert list(x.route("k", {"a": 1})) == []


@pytest.mark.parametrize("name", ["direct", "fanout", "topic", "headers"])
def test_argument_identity_is_order_and_str_bytes_insensitive(name):
    x = make_exchange_type(name)
    q = Dest("q")
    x.add_binding(q, "k", {"a": "v", "b": Int16(3)})
    x.add_binding(q, "k", {"b": Int16(3), "a": b"v"})
    assert len(x) == 1
    x.remove_binding(q, "k", {"b": Int16(3), "a": "v"})
    assert x.is_empty()


@pytest.mark.parametrize("name", ["direct", "headers"])
def test_argument_identity_keeps_field_types_as_rabbitmq(name):
    """RabbitMQ 3.10.8 on the wire: bound with one type and unbound with another, the binding
    stays (the Go client writes int32 or int64 as the program's type says)."""
    x = make_exchange_type(name)
    q = Dest("q")
    variants = [{"n": 1}, {"n": Int64(1)}, {"n": Int16(1)}, {"n": 1.0}, {"n": Float32(1.0)},
                {"s": "x"}, {"s": bytearray(b"x")}, {"t": {"a": 1, "b": "x"}}, {"t": {"b": "x", "a": 1}},
                {"l": [1]}, {"l": [Int64(1)]}]
    for args in variants:
        x.add_binding(q, "", args)
    assert len(x) == len(variants)
    x.remove_binding(q, "", {"n": Int64(1)})
    x.remove_binding(q, "", {"s": bytearray(b"x")})
    x.remove_binding(q, "", {"t": {"b": "x", "a": 1}})
    assert len(x) == len(variants) - 3
    assert x.has_binding(q, "", {"n": 1}) and x.has_binding(q, "", {"s": b"x"})
    assert not x.has_binding(q, "", {"n": Int64(1)})


def test_bool_and_int_arguments_are_distinct_bindings():
    x = make_exchange_type("direct")
    q = Dest("q")
    x.add_binding(q, "k", {"a": True})
    x.add_binding(q, "k", {"a": 1})
    assert len(x) == 2


@pytest.mark.parametrize("name", ["direct", "fanout", "topic", "headers"])
def test_remove_destination_drops_all_its_bindings(name):
    x = make_exchange_type(name)
    q1, q2 = Dest("q1"), Dest("q2")
    for key in ("a", "b", "a.b"):
        x.add_binding(q1, key, {})
        x.add_binding(q1, key, {"k": "v"})
    x.add_binding(q2, "a", {})
    x.remove_destination(q1)
    x.remove_destination(q1)  # already gone: no-op
    assert len(x) == 1
    assert q1 not in routed(x, "a", {"k": "v"})
    assert routed(x, "a", {}) == {q2}
    x.remove_destination(q2)
    assert x.is_empty()


@pytest.mark.parametrize("name", ["direct", "fanout", "topic", "headers"])
def test_none_arguments_treated_as_empty(name):
    x = make_exchange_type(name)
    q = Dest("q")
    x.add_binding(q, "k", None)
    x.add_binding(q, "k", {})
    assert len(x) == 1
    x.remove_binding(q, "k", None)
    assert x.is_empty()


def test_bindings_listing():
    x = make_exchange_type("topic")
    q = Dest("q")
    x.add_binding(q, "a.*", {"z": 1})
    x.add_binding(q, "#", {})
    assert sorted((d.name, k, tuple(a.items())) for d, k, a in x.bindings()) == [
        ("q", "#", ()),
        ("q", "a.*", (("z", 1),)),
    ]
    assert x.has_bindings_to(q) and not x.has_bindings_to(Dest("q"))


# ---------------------------------------------------------------- direct


def test_direct_exact_match_and_dedupe():
    x = DirectExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    x.add_binding(q1, "k", {})
    x.add_binding(q1, "k", {"x": 1})  # same key twice for q1
    x.add_binding(q2, "k", {})
    x.add_binding(q2, "other", {})
    assert routed(x, "k") == {q1, q2}
    assert routed(x, "other") == {q2}
    assert routed(x, "K") == set()
    assert routed(x, "k.") == set()
    assert routed(x, "") == set()
    x.add_binding(q1, "", {})
    assert routed(x, "") == {q1}


def test_direct_route_is_cached_tuple():
    x = DirectExchangeType()
    q = Dest("q")
    x.add_binding(q, "k", {})
    first = x.route("k", None)
    assert isinstance(first, tuple)
    assert x.route("k", None) is first
    assert x.route("missing", None) == ()


def test_direct_refcount_per_key():
    x = DirectExchangeType()
    q = Dest("q")
    x.add_binding(q, "k", {"a": 1})
    x.add_binding(q, "k", {"a": 2})
    x.remove_binding(q, "k", {"a": 1})
    assert routed(x, "k") == {q}
    x.remove_binding(q, "k", {"a": 2})
    assert routed(x, "k") == set()
    assert x.is_empty()


# ---------------------------------------------------------------- fanout


def test_fanout_ignores_key_and_dedupes():
    x = FanoutExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    x.add_binding(q1, "a", {})
    x.add_binding(q1, "b", {})
    x.add_binding(q2, "", {})
    for key in ("", "a", "zzz", "a.b.c"):
        assert routed(x, key) == {q1, q2}
    assert isinstance(x.route("k", None), tuple)
    x.remove_binding(q1, "a", {})
    assert routed(x) == {q1, q2}
    x.remove_binding(q1, "b", {})
    assert routed(x) == {q2}
    x.remove_binding(q2, "", {})
    assert routed(x) == set()


# ---------------------------------------------------------------- topic


def ref_split(key: str) -> list[str]:
    # RabbitMQ: the wholly empty key has zero words; otherwise split on '.'.
    return key.split(".") if key else []


def ref_match(pattern: list[str], words: list[str]) -> bool:
    """Obviously-correct recursive matcher used as the oracle."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(ref_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return ref_match(rest, words[1:])
    return False


@functools.lru_cache(maxsize=None)  # the random tests ask the same for every budget
def regex_match(pattern: str, key: str) -> bool:
    """A second oracle, independent of the first: the key as '.w1.w2...' (the empty key is
    zero words, so ''), each pattern word one regex piece that eats its leading dot."""
    pieces = []
    for word in ref_split(pattern):
        if word == "#":
            pieces.append(r"(?:\.[^.]*)*")
        elif word == "*":
            pieces.append(r"\.[^.]*")
        else:
            pieces.append(r"\." + re.escape(word))
    subject = "".join("." + w for w in ref_split(key))
    return re.fullmatch("".join(pieces), subject) is not None


def topic_exchange(budget: int | None = None) -> TopicExchangeType:
    """A topic exchange; `budget` 0 sends every key through the bit-parallel automaton,
    a small one makes walks give up part-way."""
    x = TopicExchangeType()
    if budget is not None:
        x.WALK_BUDGET = budget
    return x


BUDGETS = [None, 0, 3]


def topic_matches(pattern: str, key: str, budget: int | None = None) -> bool:
    x = topic_exchange(budget)
    q = Dest("q")
    x.add_binding(q, pattern, {})
    result = x.route(key, None)
    assert ref_match(ref_split(pattern), ref_split(key)) == bool(result), (pattern, key)
    assert regex_match(pattern, key) == bool(result), (pattern, key)
    return bool(result)


@pytest.mark.parametrize(
    "pattern,key,expected",
    [
        # The empty routing key is zero words in RabbitMQ.
        ("#", "", True),
        ("*", "", False),
        ("", "", True),
        ("", "a", False),
        ("a", "", False),
        ("#.#", "", True),
        ("#.#", "a.b.c", True),
        ("#", "a.b.c", True),
        ("#", ".", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("a.*", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.a", "a", True),
        ("#.a", "x.y.a", True),
        ("#.a", "a.x", False),
        ("#.z", "z", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.b.c", False),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
        ("a.*.#", "a.b.c.d", True),
        ("#.*", "", False),
        ("#.*", "a", True),
        ("#.b.#", "a.b.c", True),
        ("#.b.#", "b", True),
        ("#.b.#", "a.c", False),
        # Empty words between dots are real words.
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("a.b", "a..b", False),
        ("*", ".", False),
        ("*.*", ".", True),
        ("a.*", "a.", True),
        ("*.a", ".a", True),
        ("a.#", "a.", True),
        # Wildcards only count as whole words.
        ("a*", "ab", False),
        ("a*", "a*", True),
        ("a#", "a.b", False),
        ("#a", "#a", True),
        # A literal '*' / '#' in the routing key is just a word.
        ("a.b", "a.*", False),
        ("*", "#", True),
        ("#.#.#", "x", True),
    ],
)
@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_examples(pattern, key, expected, budget):
    assert topic_matches(pattern, key, budget) is expected


def test_topic_dedupes_destination_across_bindings():
    x = TopicExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    for pattern in ("#", "a.#", "*.b", "a.b", "#.b", "#.#", "a.*"):
        x.add_binding(q1, pattern, {})
    x.add_binding(q2, "a.b", {"some": "arg"})
    x.add_binding(q2, "a.b", {})
    assert routed(x, "a.b") == {q1, q2}
    assert routed(x, "c") == {q1}


def test_topic_result_cache_invalidated_on_changes():
    x = TopicExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    x.add_binding(q1, "a.*", {})
    assert routed(x, "a.b") == {q1}
    x.add_binding(q2, "#", {})
    assert routed(x, "a.b") == {q1, q2}
    x.remove_binding(q1, "a.*", {})
    assert routed(x, "a.b") == {q2}
    x.remove_destination(q2)
    assert routed(x, "a.b") == set()


def test_topic_cache_is_bounded_in_bytes_across_exchanges():
    x, y = TopicExchangeType(), TopicExchangeType()
    q = Dest("q")
    x.add_binding(q, "#", {})
    y.add_binding(q, "#", {})
    for i in range(60000):
        key = f"k.{i}." + "w" * 200
        assert routed(x, key) == {q}
        assert routed(y, key) == {q}
        assert TopicExchangeType.cache_bytes() <= TopicExchangeType.CACHE_BYTES
    assert TopicExchangeType.cache_bytes() > 0


@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_matching_many_hashes_is_polynomial(budget):
    x = topic_exchange(budget)
    q1, q2 = Dest("q1"), Dest("q2")
    x.add_binding(q1, ".".join(["#"] * 127), {})
    x.add_binding(q2, ".".join(["#", "a"] * 63 + ["#"]), {})
    assert routed(x, ".".join(["a"] * 120)) == {q1, q2}
    assert routed(x, ".".join(["a"] * 62)) == {q1}
    assert routed(x, ".".join(["a"] * 63)) == {q1, q2}
    assert routed(x, ".".join(["b"] * 120)) == {q1}
    assert routed(x, "") == {q1}
    # Runs of '#' share one trie node: 127 of them cost what one does.
    y = TopicExchangeType()
    y.add_binding(q1, ".".join(["#"] * 127), {})
    assert y.node_count() == 2
    y.remove_binding(q1, ".".join(["#"] * 127), {})
    assert y.node_count() == 1


def test_topic_trie_is_pruned_on_removal():
    x = TopicExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    assert x.node_count() == 1
    x.add_binding(q1, "a.b.c", {})
    x.add_binding(q1, "a.*.#", {})
    x.add_binding(q2, "a.b", {})
    x.add_binding(q2, "a.b", {"v": 1})
    x.add_binding(q1, "#", {})
    x.add_binding(q1, "", {})
    x.remove_binding(q1, "a.b.c", {})
    # 'a.b' still holds q2, so only the 'c' node goes.
    assert routed(x, "a.b.c") == {q1}
    x.remove_binding(q2, "a.b", {})
    assert routed(x, "a.b") == {q1, q2}  # the other a.b binding still holds q2
    x.remove_binding(q2, "a.b", {"v": 1})
    x.remove_binding(q1, "a.*.#", {})
    x.remove_binding(q1, "#", {})
    assert x.node_count() == 1
    x.remove_binding(q1, "", {})
    assert x.is_empty() and x.node_count() == 1


def test_topic_many_bindings_route_only_the_matching_branches():
    # Structural check rather than timing: 10k unrelated literal bindings do
    # not change the result and all hang off distinct first words.
    x = TopicExchangeType()
    target = Dest("target")
    x.add_binding(target, "stock.*.nyse", {})
    others = [Dest(f"q{i}") for i in range(10_000)]
    for i, q in enumerate(others):
        x.add_binding(q, f"w{i}.x.#", {})
    assert routed(x, "stock.ibm.nyse") == {target}
    assert routed(x, "w42.x") == {others[42]}
    assert routed(x, "w9999.x.y.z") == {others[9999]}


def test_topic_long_key_with_many_hashes():
    x = TopicExchangeType()
    q = Dest("q")
    x.add_binding(q, ".".join(["#"] * 20) + ".end", {})
    key = ".".join(["w"] * 250) + ".end"
    assert routed(x, key) == {q}
    assert routed(x, ".".join(["w"] * 250)) == set()


WORDS = ["a", "b", ""]
PATTERN_WORDS = ["a", "b", "", "*", "#"]


def random_pattern(rng: random.Random) -> str:
    n = rng.randint(0, 5)
    return ".".join(rng.choice(PATTERN_WORDS) for _ in range(n))


def random_key(rng: random.Random) -> str:
    n = rng.randint(0, 6)
    return ".".join(rng.choice(WORDS) for _ in range(n))


@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_single_binding_against_reference_random(budget):
    rng = random.Random(20240601)
    for _ in range(4000):
        pattern, key = random_pattern(rng), random_key(rng)
        topic_matches(pattern, key, budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_many_long_patterns_against_a_regex_reference(budget):
    """Tries of 40 patterns up to 12 words ('#' runs, '*', empty words, shared prefixes),
    keys up to 14 words: the walk, the automaton and a walk that gives up part-way all
    route as the regex oracle says."""
    rng = random.Random(11)
    pattern_words = ["a", "b", "", "*", "#", "#"]
    for _ in range(40):
        x = topic_exchange(budget)
        patterns = {".".join(rng.choice(pattern_words) for _ in range(rng.randint(0, 12)))
                    for _ in range(40)}
        dests = {p: Dest(p) for p in patterns}
        for p, d in dests.items():
            x.add_binding(d, p, {})
        for _ in range(40):
            key = ".".join(rng.choice(["a", "b", ""]) for _ in range(rng.randint(0, 14)))
            expected = {d for p, d in dests.items() if regex_match(p, key)}
            assert routed(x, key) == expected, key


@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_worst_patterns_route_right(budget):
    """The patterns that cost most: '#.a' repeated, '#' runs, '#' then 100 '*', '#' and
    empty words; keys of 120 words and of 255 empty words."""
    q = Dest("q")
    patterns = [".".join(["#", "a"] * 63 + ["#"]), ".".join(["#"] * 127),
                "#." + ".".join(["*"] * 100), ".".join(["#", ""] * 85)]
    keys = [".".join(["a"] * 119 + ["z"]), ".".join(["a"] * 62), "." * 254, "",
            ".".join(["a"] * 100), ".".join(["a"] * 99), "a." * 63 + "a"]
    for pattern in patterns:
        x = topic_exchange(budget)
        x.add_binding(q, pattern, {})
        for key in keys:
            assert routed(x, key) == ({q} if memo_match(pattern, key) else set()), (
                pattern, key)


def memo_match(pattern: str, key: str) -> bool:
    """ref_match with a memo on (pattern position, key position): polynomial, for patterns
    the backtracking oracles would take ages over."""
    p, w = ref_split(pattern), ref_split(key)

    @functools.lru_cache(maxsize=None)
    def m(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(w)
        if p[i] == "#":
            return m(i + 1, j) or (j < len(w) and m(i, j + 1))
        return j < len(w) and p[i] in ("*", w[j]) and m(i + 1, j + 1)

    return m(0, 0)


def test_topic_exhaustive_small_against_reference():
    patterns = {random_pattern(random.Random(i)) for i in range(600)}
    keys = {random_key(random.Random(10_000 + i)) for i in range(300)}
    x = TopicExchangeType()
    dests = {p: Dest(p) for p in patterns}
    for p, d in dests.items():
        x.add_binding(d, p, {})
    for key in keys:
        expected = {d for p, d in dests.items() if ref_match(ref_split(p), ref_split(key))}
        assert routed(x, key) == expected, key


@pytest.mark.parametrize("budget", BUDGETS)
def test_topic_churn_against_reference(budget):
    rng = random.Random(7)
    x = topic_exchange(budget)
    dests = [Dest(f"q{i}") for i in range(12)]
    live: set[tuple[Dest, str, tuple]] = set()
    for step in range(3000):
        op = rng.random()
        d = rng.choice(dests)
        pattern = random_pattern(rng)
        args = rng.choice([(), (("k", 1),)])
        if op < 0.5:
            x.add_binding(d, pattern, dict(args))
            live.add((d, pattern, args))
        elif op < 0.85 and live:
            d, pattern, args = rng.choice(sorted(live, key=lambda b: (b[0].name, b[1], b[2])))
            x.remove_binding(d, pattern, dict(args))
            live.discard((d, pattern, args))
        elif op < 0.9:
            x.remove_binding(d, pattern, dict(args))  # usually absent
            live.discard((d, pattern, args))
        else:
            x.remove_destination(d)
            live = {b for b in live if b[0] is not d}
        for _ in range(3):
            key = random_key(rng)
            expected = {b[0] for b in live if ref_match(ref_split(b[1]), ref_split(key))}
            assert routed(x, key) == expected, (step, key)
        assert len(x) == len(live)
        assert x.is_empty() == (not live)
    for d in dests:
        x.remove_destination(d)
    assert x.is_empty() and x.node_count() == 1


# ---------------------------------------------------------------- headers


def headers_route(args: dict, headers: dict | None) -> bool:
    x = HeadersExchangeType()
    x.validate_binding("", args)
    q = Dest("q")
    x.add_binding(q, "", args)
    return bool(list(x.route("ignored", headers)))


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_headers_valid_x_match(mode):
    HeadersExchangeType().validate_binding("", {"x-match": mode})


def test_headers_validate_without_x_match():
    HeadersExchangeType().validate_binding("", {})
    HeadersExchangeType().validate_binding("", {"a": 1})


@pytest.mark.parametrize(
    "value,text",
    [
        ("bogus", 'Invalid x-match field value <<"bogus">>; '
                  "expected all, any, all-with-x, or any-with-x"),
        ("ALL", 'Invalid x-match field value <<"ALL">>; '
                "expected all, any, all-with-x, or any-with-x"),
        ("", 'Invalid x-match field value <<"">>; '
             "expected all, any, all-with-x, or any-with-x"),
        (Int8(1), "Invalid x-match field type byte (value 1); expected longstr"),
        (1, "Invalid x-match field type signedint (value 1); expected longstr"),
        (True, "Invalid x-match field type bool (value true); expected longstr"),
        (None, "Invalid x-match field type void (value undefined); expected longstr"),
    ],
)
def test_headers_invalid_x_match(value, text):
    with pytest.raises(PreconditionFailed) as info:
        HeadersExchangeType().validate_binding("", {"x-match": value})
    assert info.value.text == text


def test_headers_all_default():
    args = {"a": 1, "b": "x"}
    assert headers_route(args, {"a": 1, "b": "x"})
    assert headers_route(args, {"a": 1, "b": "x", "c": 3})
    assert not headers_route(args, {"a": 1})
    assert not headers_route(args, {"a": 1, "b": "y"})
    assert not headers_route(args, None)
    assert headers_route({"x-match": "all", **args}, {"a": 1, "b": "x"})


def test_headers_any():
    args = {"x-match": "any", "a": 1, "b": "x"}
    assert headers_route(args, {"a": 1})
    assert headers_route(args, {"b": "x", "z": 0})
    assert not headers_route(args, {"a": 2, "b": "y"})
    assert not headers_route(args, {})
    assert not headers_route(args, None)


def test_headers_empty_spec():
    assert headers_route({}, None)
    assert headers_route({}, {"a": 1})
    assert headers_route({"x-match": "all"}, {})
    assert not headers_route({"x-match": "any"}, {"a": 1})
    assert not headers_route({"x-match": "any"}, None)
    # Only x- keys: ignored under all/any.
    assert headers_route({"x-match": "all", "x-foo": 1}, {})
    assert not headers_route({"x-match": "any", "x-foo": 1}, {"x-foo": 1})


def test_headers_x_keys_ignored_unless_with_x():
    assert headers_route({"x-match": "all", "x-a": 1, "b": 2}, {"b": 2})
    assert not headers_route({"x-match": "all-with-x", "x-a": 1, "b": 2}, {"b": 2})
    assert headers_route({"x-match": "all-with-x", "x-a": 1, "b": 2}, {"b": 2, "x-a": 1})
    assert not headers_route({"x-match": "any", "x-a": 1}, {"x-a": 1})
    assert headers_route({"x-match": "any-with-x", "x-a": 1}, {"x-a": 1})
    assert not headers_route({"x-match": "any-with-x", "x-a": 1}, {"x-a": 2})
    # x-match itself never takes part, even in the -with-x modes.
    assert headers_route({"x-match": "all-with-x"}, {})
    assert not headers_route({"x-match": "any-with-x"}, {"x-match": "any-with-x"})


def test_headers_void_means_present():
    assert headers_route({"a": None}, {"a": "anything"})
    assert headers_route({"a": None}, {"a": None})
    assert not headers_route({"a": None}, {"b": 1})
    assert headers_route({"x-match": "any", "a": None, "b": 1}, {"a": 5})
    assert not headers_route({"a": 1}, {"a": None})


def test_headers_value_normalisation():
    assert headers_route({"a": "x"}, {"a": b"x"})
    assert headers_route({"a": b"x"}, {"a": "x"})
    assert headers_route({"a": bytearray(b"x")}, {"a": "x"})
    assert headers_route({"a": 5}, {"a": Int8(5)})
    assert headers_route({"a": Int64(5)}, {"a": UInt32(5)})
    assert headers_route({"a": 1.5}, {"a": Float32(1.5)})
    assert headers_route({"a": Decimal("1.5")}, {"a": Decimal("1.5")})
    # RabbitMQ keeps a decimal's scale, so these are different values.
    assert not headers_route({"a": Decimal("1.5")}, {"a": Decimal("1.50")})
    assert not headers_route({"a": 1}, {"a": Decimal("1")})
    # Erlang's true is not 1, whatever Python's == says.
    assert not headers_route({"a": 1}, {"a": True})
    assert not headers_route({"a": True}, {"a": 1})
    assert headers_route({"a": True}, {"a": True})
    assert not headers_route({"a": "1"}, {"a": 1})
    # Nested tables and arrays compare structurally.
    assert headers_route({"a": {"k": "v", "n": 1}}, {"a": {"k": b"v", "n": 1}})
    assert headers_route({"a": [1, "x"]}, {"a": [1, b"x"]})
    assert not headers_route({"a": [1, "x"]}, {"a": ["x", 1]})


def test_headers_compare_top_level_numbers_by_value_as_rabbitmq():
    """RabbitMQ 3.10.8 on the wire (Erlang ==): an int binding matches a double, a float
    and a timestamp of the same value; the Java client's Date and Double headers hit this."""
    assert headers_route({"a": 1}, {"a": 1.0})
    assert headers_route({"a": 1}, {"a": Float32(1.0)})
    assert headers_route({"a": -1}, {"a": -1.0})
    assert headers_route({"a": 1.0}, {"a": Int16(1)})
    assert headers_route({"a": Int64(1 << 53)}, {"a": float(1 << 53)})
    assert not headers_route({"a": 1}, {"a": 1.5})
    stamp = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)  # 1700000000
    assert headers_route({"a": Int64(1700000000)}, {"a": stamp})
    assert headers_route({"a": stamp}, {"a": 1700000000})
    assert headers_route({"a": stamp}, {"a": 1700000000.0})
    assert headers_route({"a": stamp}, {"a": Timestamp(1700000000)})
    assert not headers_route({"a": stamp}, {"a": 1700000001})


def test_headers_nested_values_keep_their_types_and_order_as_rabbitmq():
    """Inside an array or table RabbitMQ compares typed terms: a short is not a signedint,
    a longstr is not a byte array, and a table's keys compare in order."""
    assert not headers_route({"a": [1]}, {"a": [Int64(1)]})
    assert not headers_route({"a": [1]}, {"a": [1.0]})
    assert not headers_route({"a": ["abc"]}, {"a": [bytearray(b"abc")]})
    assert not headers_route({"a": {"n": 1}}, {"a": {"n": Int16(1)}})
    assert not headers_route({"a": {"k": "v", "n": 1}}, {"a": {"n": 1, "k": "v"}})
    assert headers_route({"a": [[Int64(2)], {"t": True}]}, {"a": [[Int64(2)], {"t": True}]})


def test_headers_route_ignores_key_and_dedupes():
    x = HeadersExchangeType()
    q1, q2 = Dest("q1"), Dest("q2")
    x.add_binding(q1, "k1", {"a": 1})
    x.add_binding(q1, "k2", {"x-match": "any", "a": 1, "b": 2})
    x.add_binding(q2, "", {"b": 2})
    assert routed(x, "whatever", {"a": 1, "b": 2}) == {q1, q2}
    assert routed(x, "", {"b": 2}) == {q1, q2}
    assert routed(x, "", {"a": 1}) == {q1}
    x.remove_binding(q1, "k2", {"b": 2, "a": 1, "x-match": "any"})
    assert routed(x, "", {"b": 2}) == {q2}


def test_headers_random_against_reference():
    rng = random.Random(99)
    keys = ["a", "b", "c", "x-d"]
    values = [1, 2, "s", None]

    def ref(args: dict, headers: dict) -> bool:
        mode = args.get("x-match", "all")
        with_x = mode.endswith("-with-x")
        pairs = [
            (k, v) for k, v in args.items()
            if k != "x-match" and (with_x or not k.startswith("x-"))
        ]
        oks = [k in headers and (v is None or headers[k] == v) for k, v in pairs]
        return any(oks) if mode.startswith("any") else all(oks)

    x = HeadersExchangeType()
    dests = [Dest(f"q{i}") for i in range(40)]
    bindings = []
    for d in dests:
        args = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 3))}
        mode = rng.choice([None, "all", "any", "all-with-x", "any-with-x"])
        if mode is not None:
            args["x-match"] = mode
        x.validate_binding("", args)
        x.add_binding(d, "", args)
        bindings.append((d, args))
    for _ in range(500):
        headers = {
            k: rng.choice([v for v in values if v is not None])
            for k in rng.sample(keys, rng.randint(0, 4))
        }
        expected = {d for d, args in bindings if ref(args, headers)}
        assert routed(x, "", headers) == expected
