"""Policies and operator policies, as RabbitMQ 3.10 has them.

A policy is (vhost, name, pattern, apply-to, priority, definition): its pattern (a regular
expression, searched in the name) picks the queues and/or exchanges it applies to, and the
one matching policy with the highest priority applies (on a tie, the name that sorts first;
RabbitMQ 3.10 picks by its table's internal order, neither name nor creation order: checked
on 3.10.8). An operator policy (the operator's caps) is matched the same way
and merged with the policy value by the minimum. How the result combines with what a queue
was declared with follows RabbitMQ's rabbit_amqqueue_process:process_args_policy: expires,
message-ttl, max-length and max-length-bytes take the lower of the policy's and the
argument's value; dead-letter-exchange, dead-letter-routing-key and overflow take the
argument when the queue was declared with one (on quorum queues overflow is the policy's,
as rabbit_quorum_queue has it); on exchanges alternate-exchange is the argument's when given.

Validation texts are RabbitMQ's ("Validation failed\\n\\n<<\\"x\\">> is not a valid message
TTL\\n"), with values printed as Erlang prints them, since users search for these texts.

A change re-applies to the objects of its vhost in slices of REAPPLY_SLICE (continued on
the broker's timers, so 100k queues never hold the event loop for long); a new queue or
exchange gets its policy when declared. The queue itself handles what a change means for
the messages it holds (Queue.apply_args).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator

from minimq.broker.access import validate_regex
from minimq.broker.arguments import QueueArgs

if TYPE_CHECKING:
    from minimq.broker.broker import Broker

log = logging.getLogger("minimq.policies")

APPLY_TO = ("all", "queues", "exchanges")
# Objects (queues and exchanges) re-matched per slice after a change: a slice takes about
# 10 ms on the 2-core CI machines (40 us a queue whose policy changed, 5 us one whose did not).
REAPPLY_SLICE = 250

# Keys whose policy and operator-policy values merge by the minimum, and which an operator
# policy may set (RabbitMQ 3.10's operator_policy_validator registrations).
OPERATOR_KEYS = (
    "expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
    "max-in-memory-bytes", "delivery-limit",
)
# Policy keys minimq acts on, with the QueueArgs attribute each one sets.
_MIN_KEYS = (
    ("expires", "x-expires", "expires"),
    ("message-ttl", "x-message-ttl", "message_ttl"),
    ("max-length", "x-max-length", "max_length"),
    ("max-length-bytes", "x-max-length-bytes", "max_length_bytes"),
)


class PolicyError(ValueError):
    """A policy RabbitMQ would refuse; the text is RabbitMQ's (without HTML escaping)."""


# ------------------------------------------------------------------ Erlang terms


def erlang_term(value: Any) -> str:
    """A JSON value as Erlang's ~p prints it after RabbitMQ decoded it (strings are
    binaries, objects maps, null/true/false atoms)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _erlang_float(value)
    if isinstance(value, str):
        return _erlang_binary(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(erlang_term(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]).encode("utf-8", "surrogatepass"))
        return "#{" + ",".join(f"{erlang_term(k)} => {erlang_term(v)}" for k, v in items) + "}"
    return repr(value)


def _erlang_binary(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if text.isascii():
        return f'<<"{escaped}">>'
    return f'<<"{escaped}"/utf8>>'


def _erlang_float(value: float) -> str:
    if not math.isfinite(value):
        return repr(value)
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exp)}"
    return text


def _settings_list(items: list[tuple[str, Any]]) -> str:
    """[{<<"k">>,v},...] as ~p lays it out: one line, or one entry per line past 80 columns."""
    parts = ["{" + erlang_term(k) + "," + erlang_term(v) + "}" for k, v in items]
    one = "[" + ",".join(parts) + "]"
    if len(one) <= 80:
        return one
    return "[" + ",\n ".join(parts) + "]"


# ------------------------------------------------------------------ validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(minimum: int, what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if _is_int(value) and value >= minimum:
            return None
        return f"{erlang_term(value)} is not a valid {what}"
    return check


def _string(what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) else f"{erlang_term(value)} is not a valid {what}"
    return check


def _one_of(choices: tuple[str, ...], text: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"{erlang_term(value)} {text}"
    return check


_MAX_AGE = re.compile(r"[0-9]+[YMDhms]\Z")

# rabbit_policies' validators (3.10), checked in key order.
QUEUE_VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "alternate-exchange": _string("alternate exchange name"),
    "dead-letter-exchange": _string("dead letter exchange name"),
    "dead-letter-routing-key": _string("dead letter routing key"),
    "dead-letter-strategy": _one_of(("at-most-once", "at-least-once"), "is not a valid dead letter strategy"),
    "delivery-limit": _int_at_least(0, "delivery limit"),
    "expires": _int_at_least(1, "queue expiry"),
    "initial-cluster-size": _int_at_least(0, "cluster size"),
    "max-age": lambda v: None if isinstance(v, str) and _MAX_AGE.match(v) else f"{erlang_term(v)} is not a valid max age",
    "max-in-memory-bytes": _int_at_least(0, "maximum memory in bytes"),
    "max-in-memory-length": _int_at_least(0, "maximum memory in bytes"),
    "max-length": _int_at_least(0, "maximum length"),
    "max-length-bytes": _int_at_least(0, "maximum length in bytes"),
    "message-ttl": _int_at_least(0, "message TTL"),
    "overflow": _one_of(("drop-head", "reject-publish", "reject-publish-dlx"), "is not a valid overflow value"),
    "queue-leader-locator": _one_of(
        ("client-local", "balanced", "random", "least-leaders"), "is not a valid queue leader locator value"
    ),
    "queue-mode": _one_of(("default", "lazy"), "is not a valid queue-mode value"),
    "stream-max-segment-size-bytes": _int_at_least(0, "segment size"),
}
_MASTER_LOCATOR = _one_of(("min-masters", "client-local", "random"), "invalid queue-master-locator value")
HA_KEYS = (
    "ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown", "ha-promote-on-failure",
)


def _validate_ha(definition: dict) -> str | None:
    """Classic mirroring keys (rabbit_mirror_queue_misc): accepted as 3.10 accepts them; a
    single node has nothing to mirror to, so they change nothing."""
    present = {k: definition[k] for k in HA_KEYS if k in definition}
    if not present:
        return None
    if "ha-mode" not in present:
        return "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"
    mode, params = present["ha-mode"], present.get("ha-params", _NONE)
    if mode == "all":
        if params is not _NONE:
            return 'ha-mode="all" does not take parameters'
    elif mode == "exactly":
        if params is _NONE:
            return 'ha-mode="exactly" takes an integer, none given'
        if not _is_int(params) or params <= 0:
            return f'ha-mode="exactly" takes an integer, {erlang_term(params)} given'
    elif mode == "nodes":
        if params is _NONE:
            return 'ha-mode="nodes" takes a list, none given'
        if not isinstance(params, list):
            return f'ha-mode="nodes" takes a list, {erlang_term(params)} given'
        if not params:
            return 'ha-mode="nodes" list must be non-empty'
        for p in params:
            if not isinstance(p, str):
                return f'ha-mode="nodes" takes a list of strings, {erlang_term(p)} was not a string'
    else:
        return f"{erlang_term(mode)} is not a valid ha-mode value"
    if "ha-sync-mode" in present and present["ha-sync-mode"] not in ("manual", "automatic"):
        return f'ha-sync-mode must be "manual" or "automatic", got {erlang_term(present["ha-sync-mode"])}'
    size = present.get("ha-sync-batch-size", _NONE)
    if size is not _NONE and not (_is_int(size) and size > 0):
        return f"ha-sync-batch-size takes an integer greater than 0, {erlang_term(size)} given"
    for key in ("ha-promote-on-shutdown", "ha-promote-on-failure"):
        if key in present and present[key] not in ("always", "when-synced"):
            return f'{key} must be "always" or "when-synced", got {erlang_term(present[key])}'
    return None


_NONE = object()


def _sorted_items(definition: dict) -> list[tuple[str, Any]]:
    return sorted(definition.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass"))


def validate_definition(definition: dict, operator: bool = False) -> str | None:
    """RabbitMQ's complaint about a policy definition (None: fine)."""
    if not definition:
        return "no policy provided"
    items = _sorted_items(definition)
    if operator:
        known = {k: QUEUE_VALIDATORS[k] for k in OPERATOR_KEYS}
        for key, value in items:
            check = known.get(key)
            if check is not None:
                error = check(value)
                if error:
                    return error
        unknown = [(k, v) for k, v in items if k not in known]
    else:
        for key, value in items:
            check = QUEUE_VALIDATORS.get(key)
            if check is not None:
                error = check(value)
                if error:
                    return error
        if "queue-master-locator" in definition:
            error = _MASTER_LOCATOR(definition["queue-master-locator"])
            if error:
                return error
        error = _validate_ha(definition)
        if error:
            return error
        unknown = [
            (k, v) for k, v in items if k not in QUEUE_VALIDATORS and k != "queue-master-locator" and k not in HA_KEYS
        ]
    if unknown:
        return f"{_settings_list(unknown)} are not recognised policy settings"
    return None


class Policy:
    """One validated policy (or operator policy). Immutable once made: a change makes a new
    one, so queues see by identity whether their policy changed."""

    __slots__ = ("vhost", "name", "pattern", "apply_to", "priority", "definition", "operator", "_regex")

    def __init__(self, vhost: str, name: str, pattern: str, apply_to: str, priority: int | float,
                 definition: dict, operator: bool = False) -> None:
        self.vhost = vhost
        self.name = name
        self.pattern = pattern
        self.apply_to = apply_to
        self.priority = priority
        self.definition = definition
        self.operator = operator
        self._regex = re.compile(pattern)

    def matches(self, name: str, kind: str) -> bool:
        """Whether it applies to the queue or exchange (`kind`) called `name`."""
        if self.apply_to != "all" and self.apply_to != kind:
            return False
        return self._regex.search(name) is not None

    def as_json(self) -> dict:
        """As RabbitMQ's management API and definitions show it."""
        return {
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "definition": dict(_sorted_items(copy.deepcopy(self.definition))),
            "priority": self.priority,
        }

    def __repr__(self) -> str:
        return f"<Policy {self.vhost!r}/{self.name!r} {self.pattern!r} -> {self.apply_to}>"


_MISSING = object()


def make_policy(vhost: str, name: str, pattern: Any, definition: Any, priority: Any = _MISSING,
                apply_to: Any = _MISSING, *, operator: bool = False) -> Policy:
    """Validate a policy as RabbitMQ does (every complaint, in its order) and build it.

    `priority` and `apply_to` left out default to 0 and "all"; given as None, they are
    refused as RabbitMQ refuses JSON null.
    """
    if priority is _MISSING:
        priority = 0
    if apply_to is _MISSING:
        apply_to = "all"
    errors = []
    if not isinstance(definition, dict):
        errors.append(
            f"parse error while reading policy {name}: {erlang_term(definition)}. Valid JSON is required."
        )
    else:
        bad_key = next((k for k in definition if not isinstance(k, str)), None)
        error = (f"{erlang_term(bad_key)} is not a valid policy setting" if bad_key is not None
                 else validate_definition(definition, operator))
        if error:
            errors.append(error)
    if apply_to not in APPLY_TO:
        errors.append(f"apply-to '{apply_to}' unrecognised; should be 'queues', 'exchanges' or 'all'")
    if not isinstance(pattern, str):
        errors.append(f"pattern should be a binary but was {erlang_term(pattern)}")
    else:
        try:
            validate_regex(pattern)
        except ValueError as exc:
            errors.append(f"pattern should be regular expression but is invalid: {exc}")
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or (
        isinstance(priority, float) and not math.isfinite(priority)
    ):
        errors.append(f"priority should be a number, actually was {erlang_term(priority)}")
    if errors:
        raise PolicyError("Validation failed\n\n" + "".join(e + "\n" for e in errors))
    return Policy(vhost, name, pattern, apply_to, priority, copy.deepcopy(definition), operator)


# ------------------------------------------------------------------ merging


def merged_definition(policy: Policy | None, operator: Policy | None) -> dict:
    """The definition in force: the policy's, with the operator policy's values merged in
    (the minimum where both set a key), as RabbitMQ's effective_policy_definition."""
    out = dict(policy.definition) if policy is not None else {}
    if operator is not None:
        for key, value in operator.definition.items():
            if key in out and _is_int(out[key]) and _is_int(value):
                out[key] = min(out[key], value)
            else:
                out[key] = value
    return dict(_sorted_items(out))


_ARG_SLOTS = QueueArgs.__slots__


def effective_queue_args(declared: QueueArgs, arguments: dict, policy: Policy | None,
                         operator: Policy | None, merged: dict | None = None) -> QueueArgs:
    """What a queue acts on: its declared arguments (`declared`, parsed from `arguments`)
    combined with its policy and operator policy as RabbitMQ 3.10 combines them.
    `merged`: merged_definition(policy, operator), if the caller has it already."""
    if policy is None and operator is None:
        return declared
    out = QueueArgs.__new__(QueueArgs)
    for slot in _ARG_SLOTS:
        setattr(out, slot, getattr(declared, slot))
    defn = merged if merged is not None else merged_definition(policy, operator)
    for key, arg, attr in _MIN_KEYS:
        value = defn.get(key)
        if _is_int(value):
            current = getattr(declared, attr)
            setattr(out, attr, value if current is None else min(current, value))
    pol = policy.definition if policy is not None else {}
    if "x-dead-letter-exchange" not in arguments and isinstance(pol.get("dead-letter-exchange"), str):
        out.dlx = pol["dead-letter-exchange"]
    if "x-dead-letter-routing-key" not in arguments and isinstance(pol.get("dead-letter-routing-key"), str):
        out.dlrk = pol["dead-letter-routing-key"]
    overflow = pol.get("overflow")
    if overflow in ("drop-head", "reject-publish", "reject-publish-dlx") and (
        "x-overflow" not in arguments or declared.queue_type == "quorum"
    ):
        out.overflow = overflow  # quorum queues: the policy's wins (rabbit_quorum_queue, 3.10)
    if declared.queue_type == "quorum" and _is_int(defn.get("delivery-limit")):
        current = declared.delivery_limit
        limit = defn["delivery-limit"]
        out.delivery_limit = limit if current is None else min(current, limit)
    return out


def effective_alternate(arguments: dict, policy: Policy | None) -> str | None:
    """An exchange's alternate exchange: its argument's if declared with one, else its
    policy's (RabbitMQ: the argument wins)."""
    alt = arguments.get("alternate-exchange")
    if isinstance(alt, (bytes, bytearray)):
        alt = bytes(alt).decode("utf-8", "surrogateescape")
    if alt is None and policy is not None:
        alt = policy.definition.get("alternate-exchange")
    return alt if isinstance(alt, str) and alt else None


# ------------------------------------------------------------------ the table


class Policies:
    """The broker's policies and operator policies, and their application to its queues
    and exchanges.

    `on_change` (set by the broker's owner) runs after every change, to save them.
    """

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        # (vhost -> {name -> Policy}), kept in name order (ties go to the first name).
        self._policies: dict[str, dict[str, Policy]] = {}
        self._operator: dict[str, dict[str, Policy]] = {}
        self.on_change: Callable[[], None] | None = None
        # vhost name -> objects still to re-match after a change, and the timer continuing.
        self._pending: dict[str, Iterator[Any]] = {}
        self._timer: Any = None
        self._batch: set[str] | None = None  # vhosts changed inside batch()
        # merged_definition per (policy, operator policy) pair in use (policies are immutable,
        # so an entry never goes stale; the cache only bounds its size).
        self._merged: dict[tuple, dict] = {}

    # -------------------------------------------------------------- reading

    def _table(self, operator: bool) -> dict[str, dict[str, Policy]]:
        return self._operator if operator else self._policies

    def list(self, vhost: str | None = None, *, operator: bool = False) -> list[Policy]:
        """Policies of one vhost (or all), as RabbitMQ lists them: by priority, then name."""
        table = self._table(operator)
        vhosts = [vhost] if vhost is not None else sorted(table)
        out = [p for v in vhosts for p in table.get(v, {}).values()]
        out.sort(key=lambda p: p.priority)  # stable: vhost, then name order within a priority
        return out

    def get(self, vhost: str, name: str, *, operator: bool = False) -> Policy | None:
        return self._table(operator).get(vhost, {}).get(name)

    def __len__(self) -> int:
        return sum(len(t) for t in self._policies.values()) + sum(len(t) for t in self._operator.values())

    # -------------------------------------------------------------- changes

    def set(self, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = _MISSING,
            apply_to: Any = _MISSING, *, operator: bool = False) -> bool:
        """Add or replace a policy (PolicyError with RabbitMQ's text if invalid); re-applies
        it to the vhost's objects. True if it is new."""
        policy = make_policy(vhost, name, pattern, definition, priority, apply_to, operator=operator)
        table = self._table(operator).setdefault(vhost, {})
        created = name not in table
        table[name] = policy
        if created:
            ordered = sorted(table.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass"))
            table.clear()
            table.update(ordered)
        log.info(
            "%s %r in vhost %r set: pattern %r, apply-to %s, priority %s, definition %s",
            "operator policy" if operator else "policy", name, vhost, policy.pattern, policy.apply_to,
            policy.priority, policy.definition,
        )
        self._changed(vhost)
        return created

    def clear(self, vhost: str, name: str, *, operator: bool = False) -> bool:
        table = self._table(operator).get(vhost)
        if not table or name not in table:
            return False
        del table[name]
        log.info("%s %r in vhost %r cleared", "operator policy" if operator else "policy", name, vhost)
        self._changed(vhost)
        return True

    def forget_vhost(self, vhost: str) -> None:
        """A vhost went away: its policies go with it (nothing left to apply them to)."""
        self._policies.pop(vhost, None)
        self._operator.pop(vhost, None)
        self._pending.pop(vhost, None)

    def _changed(self, vhost: str) -> None:
        if self._batch is not None:
            self._batch.add(vhost)
            return
        self._reapply(vhost)
        if self.on_change is not None:
            self.on_change()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many changes (a definitions import): re-applied and saved once, at the end."""
        if self._batch is not None:
            yield
            return
        self._batch = changed = set()
        try:
            yield
        finally:
            self._batch = None
            for vhost in sorted(changed):
                self._reapply(vhost)
            if changed and self.on_change is not None:
                self.on_change()

    # ------------------------------------------------------------ matching

    def _best(self, table: dict[str, dict[str, Policy]], vhost: str, name: str, kind: str) -> Policy | None:
        best = None
        for p in table.get(vhost, {}).values():
            if (best is None or p.priority > best.priority) and p.matches(name, kind):
                best = p
        return best

    def match_queue(self, vhost: str, name: str) -> tuple[Policy | None, Policy | None]:
        """(policy, operator policy) for a queue called `name`."""
        if not self._policies and not self._operator:
            return None, None
        return self._best(self._policies, vhost, name, "queues"), self._best(self._operator, vhost, name, "queues")

    def attach_queue(self, q: Any) -> None:
        """A queue was just declared: give it its policy (nothing to do without any)."""
        if self._policies or self._operator:
            self._apply_queue(q, *self.match_queue(q.vhost.name, q.name))

    def attach_exchange(self, vhost: str, ex: Any) -> None:
        """An exchange was just declared: give it its policy."""
        if self._policies.get(vhost):
            self._apply_exchange(ex, self._best(self._policies, vhost, ex.name, "exchanges"))

    def _apply_queue(self, q: Any, policy: Policy | None, operator: Policy | None) -> None:
        if q.policy is policy and q.operator_policy is operator:
            return
        q.policy, q.operator_policy = policy, operator
        key = (policy, operator)
        merged = self._merged.get(key)
        if merged is None:
            if len(self._merged) > 1024:
                self._merged.clear()
            merged = self._merged[key] = merged_definition(policy, operator)
        q.apply_args(effective_queue_args(q.declared_args, q.arguments, policy, operator, merged))
        if not q.deleted:
            q.vhost.restart_queue_expiry(q)

    @staticmethod
    def _apply_exchange(ex: Any, policy: Policy | None) -> None:
        if ex.policy is policy:
            return
        ex.policy = policy
        ex.alternate = effective_alternate(ex.arguments, policy)

    # ------------------------------------------------------------ re-applying

    def _reapply(self, vhost: str) -> None:
        """Re-match every queue and exchange of `vhost` (a first slice now, the rest on the
        broker's timers)."""
        vh = self.broker.vhosts.get(vhost)
        if vh is None:
            return
        objects = [("queues", q) for q in list(vh.queues.values())]
        objects.extend(("exchanges", ex) for ex in list(vh.exchanges.values()))
        self._pending[vhost] = iter(objects)
        self._run_slice()

    def _run_slice(self) -> None:
        budget = REAPPLY_SLICE
        while self._pending and budget > 0:
            vhost = next(iter(self._pending))
            it = self._pending[vhost]
            for kind, obj in it:
                budget -= 1
                if kind == "queues":
                    if not obj.deleted:
                        self._apply_queue(
                            obj, self._best(self._policies, vhost, obj.name, kind),
                            self._best(self._operator, vhost, obj.name, kind),
                        )
                elif not obj.deleted:
                    self._apply_exchange(obj, self._best(self._policies, vhost, obj.name, kind))
                if budget <= 0:
                    break
            else:
                self._pending.pop(vhost, None)
        if self._pending:
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        broker = self.broker
        try:
            now = broker.clock()
        except RuntimeError:  # a broker without a clock (some unit tests): no slicing
            self.drain()
            return
        self._timer = broker.timers.call_at(now, self._continue)

    def _continue(self) -> None:
        self._timer = None
        self._run_slice()

    @property
    def pending(self) -> bool:
        """Whether a change is still being applied to existing objects."""
        return bool(self._pending)

    def drain(self) -> None:
        """Finish applying every change now (imports, restarts, tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            vhost = next(iter(self._pending))
            for kind, obj in self._pending.pop(vhost):
                if obj.deleted:
                    continue
                if kind == "queues":
                    self._apply_queue(
                        obj, self._best(self._policies, vhost, obj.name, kind),
                        self._best(self._operator, vhost, obj.name, kind),
                    )
                else:
                    self._apply_exchange(obj, self._best(self._policies, vhost, obj.name, kind))

    # ------------------------------------------------------------ definitions

    def export(self, vhosts: set[str], *, operator: bool = False) -> list[dict]:
        return [p.as_json() for p in self.list(operator=operator) if p.vhost in vhosts]

    def load(self, entry: dict, *, operator: bool = False) -> None:
        """One entry of a definitions file's "policies" (PolicyError if invalid)."""
        vhost, name = entry.get("vhost"), entry.get("name")
        if not isinstance(vhost, str) or not isinstance(name, str):
            raise PolicyError("a policy needs a vhost and a name")
        self.set(
            vhost, name, entry.get("pattern"), entry.get("definition"), entry.get("priority", 0),
            entry.get("apply-to", "all"), operator=operator,
        )
