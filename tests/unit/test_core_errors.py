"""Errors from the broker core: soft ones close the channel, hard ones the connection, and
either names the class/method id of the method that caused it (as RabbitMQ does)."""
from __future__ import annotations

import pytest

from minimq.codec.frames import encode_method_frame

from core_client import BasicProperties, Broker, ChannelClosed, ConnectionClosed, CoreClient, spec


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def client(broker: Broker) -> CoreClient:
    c = CoreClient(broker)
    ch = c.channel()
    c.declare(ch, "q")
    c.call(ch, spec.ExchangeDeclare(exchange="x", type="direct"))
    c.call(ch, spec.QueueBind(queue="q", exchange="x", routing_key="k"))
    c.close_channel(ch)
    return c


SOFT = [
    (spec.QueueDeclare(queue="missing", passive=True), 404),
    (spec.QueueDeclare(queue="q", durable=True), 406),
    (spec.QueueDeclare(queue="amq.reserved"), 403),
    (spec.QueueBind(queue="q", exchange="missing", routing_key="k"), 404),
    (spec.QueueBind(queue="missing", exchange="x", routing_key="k"), 404),
    (spec.QueueUnbind(queue="q", exchange="", routing_key="k"), 403),
    (spec.QueuePurge(queue="missing"), 404),
    (spec.QueueDelete(queue="q", if_empty=True), 406),
    (spec.ExchangeDeclare(exchange="missing", type="direct", passive=True), 404),
    (spec.ExchangeDeclare(exchange="x", type="fanout"), 406),
    (spec.ExchangeDeclare(exchange="amq.mine", type="fanout"), 403),
    (spec.ExchangeDelete(exchange="x", if_unused=True), 406),
    (spec.ExchangeDelete(exchange="amq.direct"), 403),
    (spec.ExchangeBind(destination="x", source="missing"), 404),
    (spec.ExchangeBind(destination="missing", source="x"), 404),
    (spec.BasicConsume(queue="missing"), 404),
    (spec.BasicGet(queue="missing"), 404),
    (spec.BasicAck(1, False), 406),
    (spec.BasicNack(5, True, True), 406),
    (spec.BasicReject(2, False), 406),
    (spec.TxCommit(), 406),
]


@pytest.mark.parametrize("method, code", SOFT, ids=lambda v: getattr(v, "NAME", str(v)))
def test_soft_error_closes_channel_with_method_ids(client, method, code):
    ch = client.channel()
    if method.INDEX == spec.QueueDelete.INDEX:
        client.publish(ch, "", "q", b"m")
    client.send(ch, method)
    close = client.channel_close(ch)
    assert close.reply_code == code, close
    assert (close.class_id, close.method_id) == (method.CLASS_ID, method.METHOD_ID)
    assert close.reply_text.split(" - ")[0] in {
        403: "ACCESS_REFUSED", 404: "NOT_FOUND", 405: "RESOURCE_LOCKED", 406: "PRECONDITION_FAILED"
    }[code]
    # the connection and other channels live on; the channel number can be reused
    assert client.connection_open
    ch2 = client.channel()
    assert client.counts(ch2, "q")[1] == 0
    assert client.channel(ch) == ch


HARD = [
    (spec.ExchangeDeclare(exchange="y", type="no-such-type"), 503),
    (spec.BasicQos(1, 0, False), 540),
    (spec.BasicRecoverAsync(False), 540),
]


@pytest.mark.parametrize("method, code", HARD, ids=lambda v: getattr(v, "NAME", str(v)))
def test_hard_error_closes_connection_with_method_ids(client, method, code):
    ch = client.channel()
    client.send(ch, method)
    close = client.connection_closed()
    assert close.reply_code == code
    assert (close.class_id, close.method_id) == (method.CLASS_ID, method.METHOD_ID)
    assert not client.session.broker.sessions & {client.session}


@pytest.mark.parametrize(
    "kw, props, code, hard",
    [
        ({"exchange": "missing"}, None, 404, False),
        ({"exchange": "x", "immediate": True}, None, 540, True),
        ({"exchange": "x"}, BasicProperties(user_id="mallory"), 406, False),
    ],
    ids=["no-exchange", "immediate", "user-id"],
)
def test_publish_errors_name_basic_publish(client, kw, props, code, hard):
    ch = client.channel()
    exchange = kw.pop("exchange")
    client.publish(ch, exchange, "k", b"m", props, **kw)
    close = client.connection_closed() if hard else client.channel_close(ch)
    assert close.reply_code == code
    assert (close.class_id, close.method_id) == (60, 40)


def test_publish_with_matching_user_id_is_accepted(client):
    ch = client.channel()
    client.publish(ch, "x", "k", b"m", BasicProperties(user_id="guest"))
    assert client.counts(ch, "q") == (1, 0)


def test_user_id_error_text(client):
    ch = client.channel()
    client.publish(ch, "x", "k", b"m", BasicProperties(user_id="mallory"))
    close = client.channel_close(ch)
    assert close.reply_text == (
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    )


def test_methods_after_a_channel_error_in_the_same_read_are_discarded(client):
    ch = client.channel()
    client.feed(
        b"".join(
            [
                encode_method_frame(ch, spec.BasicAck(7, False)),
                client.encode_publish(ch, "", "q", b"after-error"),
            ]
        )
    )
    assert client.channel_close(ch).reply_code == 406
    ch2 = client.channel()
    assert client.counts(ch2, "q") == (0, 0)


def test_channel_error_requeues_its_unacked_in_order(client):
    ch = client.channel()
    client.publish_many(ch, "", "q", [b"1", b"2", b"3"])
    rs = [client.get(ch, "q") for _ in range(3)]
    client.ack(ch, rs[1].delivery_tag)
    client.ack(ch, rs[1].delivery_tag)  # double ack -> 406
    assert client.channel_close(ch).reply_code == 406
    ch = client.channel()
    got = []
    while (r := client.get(ch, "q", no_ack=True)) is not None:
        got.append((r.body, r.redelivered))
    assert got == [(b"1", True), (b"3", True)]


def test_hard_error_requeues_and_releases_everything(broker, client):
    ch = client.channel()
    client.publish_many(ch, "", "q", [b"1", b"2"])
    client.consume(ch, "q", "dup")
    assert len(client.deliveries(ch)) == 2
    client.declare(ch, "mine", exclusive=True)
    with pytest.raises(ConnectionClosed):
        client.consume(ch, "q", "dup")
    other = CoreClient(broker)
    och = other.channel()
    assert other.counts(och, "q") == (2, 0)
    with pytest.raises(ChannelClosed) as ei:
        other.counts(och, "mine")
    assert ei.value.code == 404


def test_unknown_exchange_type_text(client):
    ch = client.channel()
    client.send(ch, spec.ExchangeDeclare(exchange="y", type="bogus"))
    close = client.connection_closed()
    assert close.reply_text == "COMMAND_INVALID - unknown exchange type 'bogus'"


def test_bad_login_is_refused():
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(Broker(), password="wrong")
    assert ei.value.code == 403


def test_unknown_vhost_is_refused():
    with pytest.raises(ConnectionClosed) as ei:
        CoreClient(Broker(), vhost="/nope")
    assert ei.value.code == 530


def test_second_vhost_is_separate():
    broker = Broker(vhosts=("/", "other"))
    broker.access.set_permissions("guest", "other", ".*", ".*", ".*")
    a, b = CoreClient(broker), CoreClient(broker, vhost="other")
    ach, bch = a.channel(), b.channel()
    a.declare(ach, "q")
    a.publish(ach, "", "q", b"m")
    with pytest.raises(ChannelClosed) as ei:
        b.counts(bch, "q")
    assert ei.value.code == 404
    assert ei.value.text == "NOT_FOUND - no queue 'q' in vhost 'other'"
