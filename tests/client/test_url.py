"""URL parsing (no broker)."""
from __future__ import annotations

import ssl

import pytest

from minimq.client import parse_url


def test_defaults() -> None:
    p = parse_url("amqp://")
    assert (p.host, p.port, p.username, p.password, p.virtual_host) == (
        "127.0.0.1", 5672, "guest", "guest", "/")
    assert p.heartbeat is None and p.frame_max is None and not p.ssl


def test_full_url_with_percent_encoding() -> None:
    p = parse_url("amqp://us%40er:p%3Ass@example.org:5673/my%2Fvhost")
    assert (p.host, p.port, p.username, p.password, p.virtual_host) == (
        "example.org", 5673, "us@er", "p:ss", "my/vhost")


@pytest.mark.parametrize("path, vhost", [("", "/"), ("/", "/"), ("/%2F", "/"), ("/dev", "dev")])
def test_vhost(path: str, vhost: str) -> None:
    assert parse_url(f"amqp://h{path}").virtual_host == vhost


def test_query_options() -> None:
    p = parse_url("amqp://h/?heartbeat=5&frame_max=8192&channel_max=10&connection_timeout=2.5")
    assert (p.heartbeat, p.frame_max, p.channel_max, p.connection_timeout) == (5, 8192, 10, 2.5)
    # RabbitMQ's URI spec gives connection_timeout in milliseconds.
    assert parse_url("amqp://h/?connection_timeout=3000").connection_timeout == 3.0


def test_amqps() -> None:
    p = parse_url("amqps://h/?verify=false&server_name=broker.local")
    assert p.ssl and p.port == 5671 and p.server_hostname == "broker.local"
    ctx = p.make_ssl_context()
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE
    assert parse_url("amqps://h").make_ssl_context().verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("url", ["http://h/", "amqp://h/a/b", "amqp://h/?bogus=1",
                                 "amqp://h/?heartbeat=x", "amqp://h/?frame_max=-1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_overrides() -> None:
    assert parse_url("amqp://h/?heartbeat=5", heartbeat=0).heartbeat == 0
