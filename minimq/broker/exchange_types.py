"""Routing strategies for exchanges, one small plug-in per AMQP exchange type.

The exchange object itself (name, durability, arguments, ...) lives elsewhere;
this module only answers "given these bindings, where does a message go?".
Keeping the routing tables separate lets each type pick the data structure that
makes its hot path cheap (a dict for direct, a trie for topic) while the broker
talks to all of them through one interface.

Destinations are opaque hashable objects (queues or exchanges).  A binding is
identified by ``(destination, routing_key, arguments)``, exactly like RabbitMQ,
so the same queue may be bound several times and routing still has to deliver
to it only once.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from minimq.codec.errors import CommandInvalid, PreconditionFailed

__all__ = [
    "ExchangeType",
    "DirectExchangeType",
    "FanoutExchangeType",
    "TopicExchangeType",
    "HeadersExchangeType",
    "DelayedMessageExchangeType",
    "EXCHANGE_TYPES",
    "PLUGIN_EXCHANGE_TYPES",
    "ALL_EXCHANGE_TYPES",
    "make_exchange_type",
    "freeze_value",
]


# ---------------------------------------------------------------------------
# Value normalisation
# ---------------------------------------------------------------------------


def freeze_value(value: Any) -> Hashable:
    """A decoded field-table value as a hashable term for binding identity.

    A binding is known by its arguments, and RabbitMQ 3.10 keeps them as its field terms:
    each value with its field type, so a signedint 1, a long 1 and a double 1.0 make three
    bindings, as do a longstr and a byte array with the same bytes (a ``str`` and ``bytes``
    from our decoder are both longstr), and a nested table's keys count in order. Seen on the
    wire: bind with one and unbind with another leaves the binding in place. Routing on
    headers compares more loosely: see `header_match_term`.
    """
    return _typed_term(value)


def _freeze_key(key: Any) -> bytes:
    # Table keys are shortstrs on the wire; normalise so str/bytes keys agree.
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    return bytes(key)


def _freeze_arguments(arguments: dict | None) -> Hashable:
    # RabbitMQ sorts a binding's top-level arguments by key; nested tables keep their order.
    if not arguments:
        return ()
    return tuple(sorted(((_freeze_key(k), freeze_value(v)) for k, v in arguments.items()),
                        key=lambda item: item[0]))


# ---------------------------------------------------------------------------
# Base interface
# ---------------------------------------------------------------------------


class ExchangeType:
    """Common bookkeeping for all exchange types.

    The base class owns binding identity (dedupe on add, tolerate removing
    what is not there, find all bindings of a destination on delete) so that
    subclasses only maintain their routing index via ``_index_add`` and
    ``_index_remove``, each called exactly once per distinct binding.
    """

    name: str = ""
    needs_headers: bool = False
    #: Holds messages back before routing them (see DelayedMessageExchangeType.delay).
    delays: bool = False

    @classmethod
    def from_arguments(cls, arguments: dict) -> "ExchangeType":
        """The plug-in for a new exchange declared with `arguments` (most ignore them)."""
        return cls()

    def __init__(self) -> None:
        # destination -> {(routing_key, frozen_args): original_args}
        self._by_destination: dict[Hashable, dict[tuple[str, Hashable], dict]] = {}

    # -- public API --------------------------------------------------------

    def validate_binding(self, routing_key: str, arguments: dict) -> None:
        """Reject a binding before it is created; most types accept anything."""

    def add_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> None:
        """Add a binding; a binding identical to an existing one is a no-op.

        Assumes ``validate_binding`` has already accepted the arguments.
        """
        arguments = arguments or {}
        ident = (routing_key, _freeze_arguments(arguments))
        bindings = self._by_destination.get(destination)
        if bindings is None:
            bindings = self._by_destination[destination] = {}
        elif ident in bindings:
            return
        bindings[ident] = arguments
        self._index_add(destination, routing_key, arguments, ident)

    def remove_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> None:
        """Remove one binding; unbinding something never bound is a no-op."""
        bindings = self._by_destination.get(destination)
        if bindings is None:
            return
        ident = (routing_key, _freeze_arguments(arguments))
        stored = bindings.pop(ident, None)
        if stored is None:
            return
        if not bindings:
            del self._by_destination[destination]
        self._index_remove(destination, routing_key, stored, ident)

    def remove_destination(self, destination: Hashable) -> None:
        """Drop every binding to a destination that is going away."""
        bindings = self._by_destination.pop(destination, None)
        if not bindings:
            return
        for ident, arguments in bindings.items():
            self._index_remove(destination, ident[0], arguments, ident)

    def route(self, routing_key: str, headers: dict | None) -> Iterable:
        """Return the matching destinations, each at most once."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """True when no bindings remain (used for auto-delete exchanges)."""
        return not self._by_destination

    def has_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> bool:
        """Whether this exact binding exists (unbind checks access only then)."""
        bindings = self._by_destination.get(destination)
        return bindings is not None and (routing_key, _freeze_arguments(arguments)) in bindings

    def has_bindings_to(self, destination: Hashable) -> bool:
        """Cheap membership test, e.g. for exchange-to-exchange cycle checks."""
        return destination in self._by_destination

    def bindings(self) -> Iterator[tuple[Hashable, str, dict]]:
        """Yield ``(destination, routing_key, arguments)`` for listing/recovery."""
        for destination, bindings in self._by_destination.items():
            for (routing_key, _frozen), arguments in bindings.items():
                yield destination, routing_key, arguments

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_destination.values())

    # -- subclass hooks ----------------------------------------------------

    def _index_add(self, destination: Hashable, routing_key: str,
                   arguments: dict, ident: tuple[str, Hashable]) -> None:
        raise NotImplementedError

    def _index_remove(self, destination: Hashable, routing_key: str,
                      arguments: dict, ident: tuple[str, Hashable]) -> None:
        raise NotImplementedError


def _incr(counts: dict, destination: Hashable) -> bool:
    """Bump a per-destination refcount; True if the destination is new."""
    n = counts.get(destination)
    counts[destination] = 1 if n is None else n + 1
    return n is None


def _decr(counts: dict, destination: Hashable) -> bool:
    """Drop a per-destination refcount; True if the destination vanished."""
    n = counts.get(destination)
    if n is None:
        return False
    if n <= 1:
        del counts[destination]
        return True
    counts[destination] = n - 1
    return False


# ---------------------------------------------------------------------------
# direct
# ---------------------------------------------------------------------------


class DirectExchangeType(ExchangeType):
    """Exact routing-key match.

    Bindings with the same key but different arguments all route the same
    way, so we keep a refcount per (key, destination) and a pre-built tuple
    per key: publishing is then one dict lookup and no allocation.
    """

    name = "direct"

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, dict[Hashable, int]] = {}
        self._routes: dict[str, tuple] = {}

    def route(self, routing_key: str, headers: dict | None = None) -> Iterable:
        return self._routes.get(routing_key, ())

    def _index_add(self, destination, routing_key, arguments, ident) -> None:
        counts = self._counts.get(routing_key)
        if counts is None:
            counts = self._counts[routing_key] = {}
        if _incr(counts, destination):
            self._routes[routing_key] = tuple(counts)

    def _index_remove(self, destination, routing_key, arguments, ident) -> None:
        counts = self._counts.get(routing_key)
        if counts is None or not _decr(counts, destination):
            return
        if counts:
            self._routes[routing_key] = tuple(counts)
        else:
            del self._counts[routing_key]
            del self._routes[routing_key]


# ---------------------------------------------------------------------------
# fanout
# ---------------------------------------------------------------------------


class FanoutExchangeType(ExchangeType):
    """Every bound destination, routing key ignored; result tuple is cached."""

    name = "fanout"

    def __init__(self) -> None:
        super().__init__()
        self._route_cache: tuple = ()

    def route(self, routing_key: str = "", headers: dict | None = None) -> Iterable:
        return self._route_cache

    def _index_add(self, destination, routing_key, arguments, ident) -> None:
        self._route_cache = tuple(self._by_destination)

    def _index_remove(self, destination, routing_key, arguments, ident) -> None:
        self._route_cache = tuple(self._by_destination)


# ---------------------------------------------------------------------------
# topic
# ---------------------------------------------------------------------------


def split_topic_words(key: str) -> list[str]:
    """Split a routing or binding key into words the way RabbitMQ does.

    The wholly empty key has *zero* words (so ``*`` does not match it but
    ``#`` does); any other key has one word more than it has dots, empty
    words included (``"a..b"`` is three words, ``"a."`` two).
    """
    if not key:
        return []
    return key.split(".")


def _pattern_words(key: str) -> list[str]:
    """A binding key's words with runs of '#' collapsed: '#.#' matches what '#' does."""
    words: list[str] = []
    for word in split_topic_words(key):
        if word == "#" and words and words[-1] == "#":
            continue
        words.append(word)
    return words


class _TrieNode:
    __slots__ = ("children", "star", "hash", "destinations", "swallows")

    def __init__(self, swallows: bool = False) -> None:
        self.swallows = swallows  # a '#' node: it may consume any number of words
        self.children: dict[str, _TrieNode] = {}
        self.star: _TrieNode | None = None
        self.hash: _TrieNode | None = None
        # destination -> number of distinct bindings ending at this node
        self.destinations: dict[Hashable, int] = {}

    def is_empty(self) -> bool:
        return (not self.children and self.star is None and self.hash is None
                and not self.destinations)


class _PatternAutomaton:
    """Every binding pattern of a topic exchange as one bit-parallel automaton (Shift-And).

    Bits are laid out pattern after pattern: a pattern of k words owns k + 1 bits, the first
    meaning "nothing matched yet" and bit j "its first j words matched". One routing-key word
    then costs a handful of big-integer operations over all the patterns at once, whatever
    their shape: a '#' bit keeps itself (it swallows the word), any other bit moves one up
    where the pattern's next word is that word or '*', and a bit just before a '#' also sets
    the '#' bit (it may match zero words; runs of '#' are collapsed, so one step is enough).
    Per publish that is O(words x bits / 30) machine work, with no state to revisit, where
    the trie walk would do O(trie nodes x words) steps in Python for patterns like
    ``#.a.#.a...``.

    Built from the trie when a walk goes over its budget; thrown away when bindings change.
    """

    __slots__ = ("start", "accept", "accept_mask", "hashes", "stars", "positions", "nodes", "masks",
                 "mask_bytes")

    def __init__(self, root: "_TrieNode") -> None:
        self.start = self.accept_mask = 0
        self.accept: dict[int, _TrieNode] = {}  # accept bit -> the node with the destinations
        hashes = stars = 0
        positions: dict[str, list[int]] = {}
        base = 0
        # Every root-to-node path that ends at destinations is one pattern.
        stack: list[tuple[_TrieNode, tuple[str, ...]]] = [(root, ())]
        while stack:
            node, words = stack.pop()
            if node.destinations:
                self.start |= 1 << base
                for j, word in enumerate(words, base + 1):
                    if word == "#":
                        hashes |= 1 << j
                    elif word == "*":
                        stars |= 1 << j
                    else:
                        positions.setdefault(word, []).append(j)
                base += len(words)
                self.accept[base] = node
                self.accept_mask |= 1 << base
                base += 1
            for word, child in node.children.items():
                stack.append((child, words + (word,)))
            if node.star is not None:
                stack.append((node.star, words + ("*",)))
            if node.hash is not None:
                stack.append((node.hash, words + ("#",)))
        self.hashes, self.stars, self.positions = hashes, stars, positions
        # word -> bits a word moves into; built on first use, since a mask is as long as the
        # whole automaton and most pattern words never show up in a routing key.
        self.masks: dict[str, int] = {}
        self.mask_bytes = 0

    def _mask(self, word: str) -> int:
        mask = self.masks.get(word)
        if mask is None:
            bits = self.positions.get(word)
            if bits is None:
                return self.stars
            raw = bytearray((bits[-1] >> 3) + 1)  # positions ascend: the last is the highest
            for j in bits:
                raw[j >> 3] |= 1 << (j & 7)
            mask = self.masks[word] = int.from_bytes(raw, "little") | self.stars
            self.mask_bytes += len(raw) + len(word) + 100
        return mask

    def match(self, words: list[str]) -> tuple:
        hashes = self.hashes
        state = self.start
        state |= (state << 1) & hashes
        for word in words:
            state = ((state << 1) & self._mask(word)) | (state & hashes)
            if not state:
                return ()
            state |= (state << 1) & hashes
        accepted = state & self.accept_mask
        if not accepted:
            return ()
        found: dict[Hashable, None] = {}
        accept = self.accept
        bits = bin(accepted)[:1:-1]  # bit j is character j
        bit = bits.find("1")
        while bit >= 0:
            found.update(dict.fromkeys(accept[bit].destinations))
            bit = bits.find("1", bit + 1)
        return tuple(found)


class TopicExchangeType(ExchangeType):
    """Pattern matching on dot-separated words via a trie.

    Walking a trie makes routing cost depend on the key's length and on the
    branches that actually match, not on the number of bindings.  A ``#``
    node either passes on (zero words) or swallows one more word and stays,
    and a visited set of (node, position) pairs bounds a walk to
    O(nodes x words) with O(1) work per pair; runs of ``#`` collapse into one
    node.  A walk that visits more than ``WALK_BUDGET`` pairs (patterns like
    ``#.a.#.a...`` against long keys, 15k pairs and 12 ms in Python) stops
    and the key goes through a bit-parallel automaton of all the patterns
    instead, whose cost per word is a few big-integer operations: the worst
    case per publish is the budget plus that.  Results are memoised per
    routing key until the bindings change, since publishers tend to reuse a
    few keys.
    """

    name = "topic"
    #: The memo of every topic exchange together is bounded in bytes, so that
    #: publishers cycling through unique keys (or many exchanges) cannot grow
    #: memory without limit: when it would go over, the memos are reset.
    CACHE_BYTES = 4 * 1024 * 1024
    #: (node, position) pairs a trie walk may visit before the automaton takes over.
    WALK_BUDGET = 256
    _ENTRY_COST = 200  # key object, result tuple, dict slot
    _all: "weakref.WeakSet[TopicExchangeType]" = weakref.WeakSet()
    _total = 0

    def __init__(self) -> None:
        super().__init__()
        self._root = _TrieNode()
        self._cache: dict[str, tuple] = {}
        self._cache_bytes = 0
        self._automaton: _PatternAutomaton | None = None
        TopicExchangeType._all.add(self)

    @classmethod
    def cache_bytes(cls) -> int:
        """What the memos of all topic exchanges hold, approximately."""
        return cls._total

    def _forget(self) -> None:
        self._cache.clear()
        TopicExchangeType._total -= self._cache_bytes
        self._cache_bytes = 0
        automaton = self._automaton
        if automaton is not None:
            automaton.masks.clear()
            automaton.mask_bytes = 0

    def _changed(self) -> None:
        self._forget()
        self._automaton = None

    def __del__(self) -> None:
        TopicExchangeType._total -= self._cache_bytes

    def route(self, routing_key: str, headers: dict | None = None) -> Iterable:
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        words = split_topic_words(routing_key)
        result = self._walk(words)
        extra = 0
        if result is None:
            automaton = self._automaton
            if automaton is None:
                automaton = self._automaton = _PatternAutomaton(self._root)
            before = automaton.mask_bytes
            result = automaton.match(words)
            extra = automaton.mask_bytes - before  # masks built for this key, counted too
        cost = len(routing_key) + self._ENTRY_COST + 8 * len(result) + extra
        if TopicExchangeType._total + cost > self.CACHE_BYTES:
            for kind in list(TopicExchangeType._all):
                kind._forget()
            cost -= extra  # this exchange's masks just went too
        self._cache[routing_key] = result
        self._cache_bytes += cost
        TopicExchangeType._total += cost
        return result

    def _walk(self, words: list[str]) -> tuple | None:
        """Destinations whose pattern matches `words`, or None past ``WALK_BUDGET`` steps.

        A state is (node, position). A '#' node may swallow one more word and stay where it
        is, so every state has at most four successors; the visited set makes each state
        count once, whatever the number of '#' in the patterns (no backtracking blow-up).
        """
        n = len(words)
        budget = self.WALK_BUDGET
        found: dict[Hashable, None] = {}
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_TrieNode, int]] = [(self._root, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            node, i = pop()
            marker = (id(node), i)
            if marker in seen:
                continue
            seen.add(marker)
            budget -= 1
            if budget < 0:
                return None
            if node.swallows and i < n:
                push((node, i + 1))
            if node.hash is not None:
                push((node.hash, i))  # '#' matching zero words
            if i == n:
                if node.destinations:
                    found.update(dict.fromkeys(node.destinations))
                continue
            child = node.children.get(words[i])
            if child is not None:
                push((child, i + 1))
            if node.star is not None:
                push((node.star, i + 1))
        return tuple(found)

    def _index_add(self, destination, routing_key, arguments, ident) -> None:
        node = self._root
        for word in _pattern_words(routing_key):
            if word == "#":
                if node.hash is None:
                    node.hash = _TrieNode(swallows=True)
                node = node.hash
            elif word == "*":
                if node.star is None:
                    node.star = _TrieNode()
                node = node.star
            else:
                child = node.children.get(word)
                if child is None:
                    child = node.children[word] = _TrieNode()
                node = child
        if _incr(node.destinations, destination):
            self._changed()

    def _index_remove(self, destination, routing_key, arguments, ident) -> None:
        path: list[tuple[_TrieNode, str]] = []
        node = self._root
        for word in _pattern_words(routing_key):
            if word == "#":
                nxt = node.hash
            elif word == "*":
                nxt = node.star
            else:
                nxt = node.children.get(word)
            if nxt is None:
                return
            path.append((node, word))
            node = nxt
        if not _decr(node.destinations, destination):
            return
        self._changed()
        # Prune now-empty nodes bottom-up so the trie never outgrows its bindings.
        for parent, word in reversed(path):
            if not node.is_empty():
                break
            if word == "#":
                parent.hash = None
            elif word == "*":
                parent.star = None
            else:
                del parent.children[word]
            node = parent

    def node_count(self) -> int:
        """Number of trie nodes, root included (lets tests verify pruning)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)
            if node.hash is not None:
                stack.append(node.hash)
        return count


# ---------------------------------------------------------------------------
# headers
# ---------------------------------------------------------------------------

_X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")
_PRESENT = object()  # binding value "void": the header merely has to exist
_MISSING = object()


# Wire-type marker classes from minimq.codec.values, by class name so that
# this module does not depend on the codec's internals.
_MARKER_TYPE_NAMES = {
    "Int8": "byte",
    "UInt8": "unsignedbyte",
    "Int16": "short",
    "UInt16": "unsignedshort",
    "UInt32": "unsignedint",
    "Int64": "long",
    "Float32": "float",
    "Timestamp": "timestamp",
}


def erlang_type_name(value: Any) -> str:
    """RabbitMQ's name for a field value's type (longstr, signedint, ...): error texts that
    name a type read as RabbitMQ's do."""
    marker = _MARKER_TYPE_NAMES.get(type(value).__name__)
    if marker is not None:
        return marker
    if value is None:
        return "void"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(1 << 31) <= value < (1 << 31) else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytearray, memoryview)):
        return "binary"
    if isinstance(value, (str, bytes)):
        return "longstr"
    return type(value).__name__


def _erlang_binary(raw: bytes) -> str:
    """Render bytes like Erlang's ``~tp`` does, e.g. ``<<"foo">>``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        suffix = "" if text.isascii() else "/utf8"
        return f'<<"{escaped}"{suffix}>>'
    return "<<" + ",".join(str(b) for b in raw) + ">>"


def _erlang_term(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _erlang_binary(value.encode("utf-8", "surrogateescape"))
    if isinstance(value, (bytes, bytearray)):
        return _erlang_binary(bytes(value))
    return repr(value)


def _x_match_mode(arguments: dict) -> str | None:
    """The binding's match mode, or None if x-match is present but invalid.

    Only a longstr counts: our decoder yields ``str`` for those (``bytes``
    when not UTF-8, which can never name a mode); a ``bytearray`` is the
    distinct 'x' byte-array type that RabbitMQ rejects as the wrong type.
    """
    raw = arguments.get("x-match", _MISSING)
    if raw is _MISSING:
        return "all"
    if isinstance(raw, str) and raw in _X_MATCH_MODES:
        return str(raw)
    return None


class _HeadersSpec:
    """A binding's match spec, pre-digested so routing does no parsing."""

    __slots__ = ("match_any", "pairs")

    def __init__(self, arguments: dict) -> None:
        mode = _x_match_mode(arguments) or "all"
        self.match_any = mode.startswith("any")
        with_x = mode.endswith("-with-x")
        pairs = []
        for key, value in arguments.items():
            if isinstance(key, (bytes, bytearray)):
                key = bytes(key).decode("utf-8", "replace")
            if key == "x-match":
                continue
            if not with_x and key.startswith("x-"):
                continue
            pairs.append((key, _PRESENT if value is None else header_match_term(value)))
        self.pairs: tuple[tuple[str, Any], ...] = tuple(pairs)

    def matches(self, headers: dict, frozen: dict) -> bool:
        if self.match_any:
            for key, expected in self.pairs:
                if key in headers and (expected is _PRESENT
                                       or _frozen_header(headers, frozen, key) == expected):
                    return True
            return False
        for key, expected in self.pairs:
            if key not in headers:
                return False
            if expected is not _PRESENT and _frozen_header(headers, frozen, key) != expected:
                return False
        return True


def _frozen_header(headers: dict, frozen: dict, key: str) -> Hashable:
    # Freeze message header values lazily and once per route() call: most
    # bindings look at only a handful of the message's headers.
    try:
        return frozen[key]
    except KeyError:
        value = frozen[key] = header_match_term(headers[key])
        return value


def header_match_term(value: Any) -> Hashable:
    """What RabbitMQ 3.10's headers exchange compares for one header (or binding) value.

    It sorts the top-level headers and compares each value with Erlang's ``==``, ignoring
    the value's wire type: every integer type and a timestamp are the same integer, a float
    equals an integer of the same value (``1 == 1.0``), a longstr equals a byte array with the
    same bytes; a bool is never a number, a decimal keeps its scale. Inside a nested table or
    array nothing is ignored: each element keeps its type (a short 1 is not a signedint 1, a
    longstr is not a byte array) and a table its key order, as the Erlang terms do. Seen on the
    wire against RabbitMQ 3.10.8 (tests/interop/test_java_client.py's edges run).
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)  # hashes and compares equal to an int of the same value
    if isinstance(value, datetime):
        return _epoch_seconds(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    return _typed_term(value)


def _typed_term(value: Any) -> Hashable:
    """A nested value as RabbitMQ holds it: its field type with it, tables in wire order."""
    if isinstance(value, dict):
        return ("table", tuple((_freeze_key(k), _typed_term(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_typed_term(v) for v in value))
    if value is None:
        return ("void",)
    return (erlang_type_name(value), header_match_term(value))


def _epoch_seconds(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp())


class HeadersExchangeType(ExchangeType):
    """Match on message headers against each binding's argument table.

    There is no index to exploit (any header can matter to any binding), so
    routing is a linear pass over the pre-compiled binding specs, as in
    RabbitMQ.  The routing key is ignored.
    """

    name = "headers"
    needs_headers = True

    def __init__(self) -> None:
        super().__init__()
        # (destination, ident) -> spec; insertion order keeps routing stable.
        self._specs: dict[tuple[Hashable, tuple[str, Hashable]], _HeadersSpec] = {}

    def validate_binding(self, routing_key: str, arguments: dict) -> None:
        if not arguments or "x-match" not in arguments:
            return
        if _x_match_mode(arguments) is not None:
            return
        raw = arguments["x-match"]
        if isinstance(raw, (str, bytes)):
            raise PreconditionFailed(
                f"Invalid x-match field value {_erlang_term(raw)}; "
                "expected all, any, all-with-x, or any-with-x")
        raise PreconditionFailed(
            f"Invalid x-match field type {erlang_type_name(raw)} "
            f"(value {_erlang_term(raw)}); expected longstr")

    def route(self, routing_key: str = "", headers: dict | None = None) -> Iterable:
        if headers is None:
            headers = {}
        frozen: dict[str, Hashable] = {}
        found: dict[Hashable, None] = {}
        for (destination, _ident), spec in self._specs.items():
            if destination not in found and spec.matches(headers, frozen):
                found[destination] = None
        return list(found)

    def _index_add(self, destination, routing_key, arguments, ident) -> None:
        self._specs[(destination, ident)] = _HeadersSpec(arguments)

    def _index_remove(self, destination, routing_key, arguments, ident) -> None:
        self._specs.pop((destination, ident), None)


# ---------------------------------------------------------------------------
# Delayed messages (RabbitMQ's rabbitmq_delayed_message_exchange plug-in)
# ---------------------------------------------------------------------------


class DelayedMessageExchangeType(ExchangeType):
    """``x-delayed-message``: routes as the type its ``x-delayed-type`` argument names, but
    a message with a positive integer ``x-delay`` header (milliseconds) waits that long
    first.

    The bindings and the routing are the underlying type's plug-in (``routing``); this one
    only says how long a message waits (``delay``). The vhost holds the message on the
    core's timers meanwhile and routes it when it is due, if the exchange still exists.
    """

    name = "x-delayed-message"
    delays = True

    @classmethod
    def from_arguments(cls, arguments: dict) -> "DelayedMessageExchangeType":
        inner = arguments.get("x-delayed-type")
        if isinstance(inner, (bytes, bytearray)):
            inner = bytes(inner).decode("utf-8", "surrogateescape")
        inner_cls = EXCHANGE_TYPES.get(inner) if isinstance(inner, str) else None
        if inner_cls is None:
            raise PreconditionFailed("Invalid argument, 'x-delayed-type' must be an existing exchange type")
        return cls(inner_cls())

    def __init__(self, routing: ExchangeType) -> None:
        # No bindings of its own: every binding is the underlying type's.
        self.routing = routing
        self.needs_headers = routing.needs_headers

    @staticmethod
    def delay(headers: dict | None) -> float:
        """Seconds a message with these headers waits before it is routed; 0 routes it at
        once (no ``x-delay`` header, or one that is not a positive integer)."""
        delay = headers.get("x-delay") if headers else None
        if not isinstance(delay, int) or isinstance(delay, bool) or delay <= 0:
            return 0.0
        return delay / 1000.0

    def validate_binding(self, routing_key: str, arguments: dict) -> None:
        self.routing.validate_binding(routing_key, arguments)

    def add_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> None:
        self.routing.add_binding(destination, routing_key, arguments)

    def remove_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> None:
        self.routing.remove_binding(destination, routing_key, arguments)

    def remove_destination(self, destination: Hashable) -> None:
        self.routing.remove_destination(destination)

    def route(self, routing_key: str, headers: dict | None = None) -> Iterable:
        return self.routing.route(routing_key, headers)

    def is_empty(self) -> bool:
        return self.routing.is_empty()

    def has_binding(self, destination: Hashable, routing_key: str, arguments: dict) -> bool:
        return self.routing.has_binding(destination, routing_key, arguments)

    def has_bindings_to(self, destination: Hashable) -> bool:
        return self.routing.has_bindings_to(destination)

    def bindings(self) -> Iterator[tuple[Hashable, str, dict]]:
        return self.routing.bindings()

    def __len__(self) -> int:
        return len(self.routing)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

#: AMQP's own exchange types (also what an x-delayed-type may name).
EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {
    cls.name: cls
    for cls in (DirectExchangeType, FanoutExchangeType, TopicExchangeType, HeadersExchangeType)
}
#: Types RabbitMQ gets from plug-ins, built into minimq.
PLUGIN_EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {
    DelayedMessageExchangeType.name: DelayedMessageExchangeType,
}
#: Every type exchange.declare accepts.
ALL_EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {**EXCHANGE_TYPES, **PLUGIN_EXCHANGE_TYPES}


def make_exchange_type(name: str, arguments: dict | None = None) -> ExchangeType:
    """Instantiate the routing plug-in for an ``exchange.declare`` type field.

    An unknown type is a connection-level error in RabbitMQ (503), hence
    CommandInvalid rather than a KeyError leaking out; a type refusing its arguments
    (x-delayed-message without a valid x-delayed-type) raises its own error.
    """
    cls = ALL_EXCHANGE_TYPES.get(name)
    if cls is None:
        raise CommandInvalid(f"unknown exchange type '{name}'")
    return cls.from_arguments(arguments or {})
