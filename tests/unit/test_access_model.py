"""The access-control model: RabbitMQ's password hashes, permission regexes, definitions."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from minimq.broker import Broker
from minimq.broker.access import MD5, SHA512, AccessControl, User, hash_password, regex_matches
from minimq.broker.definitions import DefinitionsError, export_definitions, import_definitions
from minimq.codec.errors import AccessRefused

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq-3.10-definitions.json"


def _rabbit_hash(password: str, salt: bytes, digest) -> str:
    # Written out independently of minimq: base64(salt + H(salt + utf8 password)).
    return base64.b64encode(salt + digest(salt + password.encode()).digest()).decode()


def test_hash_password_is_rabbitmq_format():
    h = hash_password("s3cret", salt=b"\x01\x02\x03\x04")
    assert h == _rabbit_hash("s3cret", b"\x01\x02\x03\x04", hashlib.sha256)
    assert len(base64.b64decode(h)) == 4 + 32
    assert hash_password("s3cret") != hash_password("s3cret")  # a fresh salt each time


@pytest.mark.parametrize("algorithm,digest", [(SHA512, hashlib.sha512), (MD5, hashlib.md5)])
def test_sha512_and_md5_hashes_check(algorithm, digest):
    user = User("u", _rabbit_hash("pw ü", b"abcd", digest), algorithm)
    assert user.check_password("pw ü")
    assert not user.check_password("pw u")


def test_hash_from_a_real_rabbitmq_export_checks():
    # guest/guest as a RabbitMQ 3.10 node exported it.
    user = User("guest", "2uS6I91JMV8sLJxFjGEN1h2/lXtNOmubNVjbChE6yrbh9joS")
    assert user.check_password("guest")
    assert not user.check_password("Guest")


@pytest.mark.parametrize("bad", ["", "not base64!", "AAA=", base64.b64encode(b"salt").decode()])
def test_broken_or_empty_hash_never_checks(bad):
    assert not User("u", bad).check_password("")


def test_fresh_access_control_is_rabbitmqs_default():
    access = AccessControl.default()
    assert set(access.users) == {"guest"}
    assert access.users["guest"].tags == ["administrator"]
    assert access.authenticate("guest", "guest") is not None
    assert access.can_access_vhost("guest", "/")
    assert not access.can_access_vhost("guest", "other")


def test_permission_regexes_are_searched_and_empty_means_nothing():
    access = AccessControl()
    access.add_user("alice", "pw")
    access.set_permissions("alice", "/", "^alice-", "", "x")
    access.check("alice", "/", "configure", "queue", "alice-1")
    access.check("alice", "/", "read", "queue", "box")  # unanchored, as RabbitMQ's re:run
    with pytest.raises(AccessRefused) as ei:
        access.check("alice", "/", "configure", "queue", "bob-1")
    assert ei.value.reply_text == "ACCESS_REFUSED - access to queue 'bob-1' in vhost '/' refused for user 'alice'"
    with pytest.raises(AccessRefused):
        access.check("alice", "/", "write", "exchange", "")  # checked as amq.default
    with pytest.raises(AccessRefused):
        access.check("alice", "/", "write", "exchange", "amq.default")
    with pytest.raises(AccessRefused):
        access.check("alice", "other", "read", "queue", "x")


def test_invalid_regex_is_refused():
    access = AccessControl()
    access.add_user("alice", "pw")
    with pytest.raises(ValueError):
        access.set_permissions("alice", "/", "(", ".*", ".*")


def test_topic_permissions_expand_username_and_default_to_allowed():
    access = AccessControl()
    access.add_user("alice", "pw")
    access.set_permissions("alice", "/", ".*", ".*", ".*")
    assert access.topic_allowed("alice", "/", "amq.topic", "write", "anything")
    access.set_topic_permissions("alice", "/", "amq.topic", "^{username}\\.", "^public\\.")
    assert access.topic_allowed("alice", "/", "amq.topic", "write", "alice.x")
    assert not access.topic_allowed("alice", "/", "amq.topic", "write", "bob.x")
    assert access.topic_allowed("alice", "/", "amq.topic", "read", "public.x")
    assert access.topic_allowed("alice", "/", "other.topic", "write", "bob.x")
    with pytest.raises(AccessRefused) as ei:
        access.check_topic("alice", "/", "amq.topic", "write", "bob.x")
    assert ei.value.text == "access to topic 'bob.x' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"
    assert access.clear_topic_permissions("alice", "/")
    assert access.topic_allowed("alice", "/", "amq.topic", "write", "bob.x")


def test_every_change_notifies_and_delete_user_takes_its_permissions():
    access = AccessControl()
    calls = []
    access.on_change = lambda: calls.append(access.version)
    access.add_user("alice", "pw", tags=["monitoring"])
    access.set_permissions("alice", "/", ".*", ".*", ".*")
    access.set_topic_permissions("alice", "/", "amq.topic", ".*", ".*")
    access.set_user_limits("alice", {"max-channels": 2})
    assert access.delete_user("alice")
    assert not access.delete_user("alice")
    assert calls == [1, 2, 3, 4, 5]
    assert access.permissions == {} and access.topic_permissions == {} and access.user_limits == {}


def test_limits_validate_names_and_values():
    access = AccessControl()
    with pytest.raises(ValueError):
        access.set_vhost_limits("/", {"max-bananas": 1})
    with pytest.raises(ValueError):
        access.set_vhost_limits("/", {"max-queues": "10"})
    access.set_vhost_limits("/", {"max-queues": -1, "max-connections": 3})
    assert access.vhost_limit("/", "max-queues") is None
    assert access.vhost_limit("/", "max-connections") == 3


def test_rabbitmq_export_loads_and_users_log_in():
    broker = Broker()
    import_definitions(broker, json.loads(FIXTURE.read_text()))
    access = broker.access
    assert access.authenticate("acl-alice", "alice-secret") is not None
    assert access.authenticate("acl-bob", "bob s3cret:ünï") is not None
    assert access.authenticate("acl-bob", "bob") is None
    assert access.users["acl-alice"].tags == ["monitoring", "management"]
    assert access.user_limit("acl-bob", "max-channels") == 5
    assert access.vhost_limit("acl-fixture", "max-queues") == 20
    assert access.can_access_vhost("acl-bob", "acl-fixture")
    vh = broker.vhosts["acl-fixture"]
    assert vh.exchanges["orders"].type_name == "topic"
    assert vh.queues["bob-orders"].durable
    assert [(d.name, k) for d, k, _ in vh.exchanges["orders"].kind.bindings()] == [("bob-orders", "order.#")]
    [policy] = broker.policies.list("acl-fixture")
    assert (policy.name, policy.pattern, policy.definition) == ("acl-ttl", "^ttl\\.", {"message-ttl": 1000})
    ttl_q, _ = vh.declare_queue("ttl.orders", None)
    assert ttl_q.policy is policy and ttl_q.args.message_ttl == 1000


def test_export_import_round_trip():
    source = Broker()
    import_definitions(source, json.loads(FIXTURE.read_text()))
    data = json.loads(json.dumps(export_definitions(source)))
    for key in ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters",
                "policies", "queues", "exchanges", "bindings", "rabbit_version"):
        assert key in data
    target = Broker()
    import_definitions(target, data)
    assert export_definitions(target) == export_definitions(source)
    one = export_definitions(source, "acl-fixture")
    assert "users" not in one and {q["name"] for q in one["queues"]} == {"bob-orders"}


def test_bad_definitions_say_what_is_wrong():
    with pytest.raises(DefinitionsError, match="users"):
        import_definitions(Broker(), {"users": [{"password_hash": "x"}]})
    with pytest.raises(DefinitionsError, match="hashing"):
        import_definitions(Broker(), {"users": [{"name": "u", "password_hash": "x", "hashing_algorithm": "rot13"}]})
    with pytest.raises(DefinitionsError):
        import_definitions(Broker(), {"queues": "nope"})


# ------------------------------------------------------- through the core's AMQP handshake

import logging  # noqa: E402

from core_client import ConnectionClosed, CoreClient  # noqa: E402


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def broker_log():
    """What the broker core logs (its own handler: other tests' logging setup cannot hide it)."""
    logger = logging.getLogger("minimq.broker")
    handler = _Collect()
    old_level, old_disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.disabled = old_disabled


def test_user_without_permission_in_vhost_gets_530():
    broker = Broker(vhosts=("/", "v1"))
    broker.access.add_user("alice", "secret")
    broker.access.set_permissions("alice", "v1", ".*", ".*", ".*")
    CoreClient(broker, user="alice", password="secret", vhost="v1").close()
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(broker, user="alice", password="secret", vhost="/")
    assert (ei.value.code, ei.value.text) == (530, "NOT_ALLOWED - access to vhost '/' refused for user 'alice'")
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(broker, vhost="v1")  # guest: only '/'
    assert ei.value.text == "NOT_ALLOWED - access to vhost 'v1' refused for user 'guest'"
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(broker, vhost="nope")
    assert ei.value.text == "NOT_ALLOWED - vhost nope not found"


@pytest.mark.parametrize("peer,allowed", [
    ("127.0.0.1:5000", True), ("::1:5000", True), ("::ffff:127.0.0.1:5000", True),
    ("10.1.2.3:5000", False), ("192.168.0.7:40000", False), ("fe80::1:5000", False),
])
def test_guest_logs_in_through_loopback_only(peer, allowed, broker_log):
    broker = Broker()
    if allowed:
        CoreClient(broker, peer=peer).close()
        return
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(broker, peer=peer)
    assert ei.value.code == 403
    assert "can only connect via localhost" in broker_log.text and "guest" in broker_log.text
    open_broker = Broker(loopback_users=())
    CoreClient(open_broker, peer=peer).close()


def test_refused_login_is_logged_without_the_password(broker_log):
    with pytest.raises(ConnectionClosed):
        CoreClient(Broker(), password="hunter2-wrong")
    assert "user 'guest'" in broker_log.text and "PLAIN" in broker_log.text
    assert "hunter2" not in broker_log.text


def test_deleted_guest_cannot_log_in():
    broker = Broker()
    assert broker.access.delete_user("guest")
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(broker)
    assert ei.value.code == 403


ACCEPTED_REGEXES = [r"^amq\.gen.*$", r"(foo|bar)*", r"^(?:dev|prod|test)+\.", r".*a.*c", r"^app-.*-.*$",
                    r"^(app1|app2)-.*-.*$", r"x{,5}", r".{0,255}.{0,255}c", r"^[a-z]+\.[a-z]+$"]
REFUSED_REGEXES = [r"^(a+)+b", r"(a*)*b", r"(a|aa)*b", r"(a|)*", r"(?i)(foo|Foo)*$", r".*a.*a.*c",
                   r"a*a*a*c", r"a{0,255}a{0,255}a{0,255}c", r"((x+)y)*$"]


@pytest.mark.parametrize("regex", ACCEPTED_REGEXES)
def test_a_permission_regex_that_is_accepted_matches_crafted_names_at_once(regex: str) -> None:
    """What validate_regex lets through must stay cheap on the worst 255-byte names a client
    can send (each character of the pattern repeated, with and without a failing tail): were
    the estimate wrong, this test would hang for seconds to hours, not pass."""
    access = AccessControl()
    access.add_user("u", "p")
    access.set_permissions("u", "/", regex, ".*", ".*")
    for ch in set(regex) | {"a", "."}:
        for name in (ch * 255, ch * 254 + "!", "foo" * 85):
            regex_matches(regex, name)


@pytest.mark.parametrize("regex", REFUSED_REGEXES)
def test_a_permission_regex_that_could_freeze_the_loop_is_refused(regex: str) -> None:
    access = AccessControl()
    access.add_user("u", "p")
    with pytest.raises(ValueError, match="exponential or high polynomial"):
        access.set_permissions("u", "/", regex, ".*", ".*")
