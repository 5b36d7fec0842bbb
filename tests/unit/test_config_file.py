"""The --config file: every flag has its key, and bad files are refused with a clear message."""
from __future__ import annotations

import pytest

from minimq.cli import build_parser
from minimq.config import ACCESS_KEYS, OPTIONS, ConfigError, parse_config

# Flags that are not settings of the broker (or that the file says another way).
NOT_IN_FILE = {"help", "version", "config", "user", "vhost", "loopback_users"}


def test_every_flag_can_be_set_in_the_file():
    dests = {a.dest for a in build_parser()._actions} - NOT_IN_FILE
    assert dests == {dest for dest, _types in OPTIONS.values()}
    assert "loopback-users" in ACCESS_KEYS


def test_options_users_vhosts_and_permissions_parse():
    config = parse_config({
        "port": 5673, "data_dir": "/tmp/x", "loopback-users": [],
        "vhosts": {"/": {}, "v1": {"limits": {"max-queues": 3}}},
        "users": {"alice": {"password": "pw", "tags": ["management"]}},
        "permissions": [{"user": "alice", "vhost": "v1", "configure": ".*", "write": ".*", "read": ".*"}],
    })
    assert config.options == {"port": 5673, "data_dir": "/tmp/x"}
    assert config.loopback_users == []
    assert set(config.vhosts) == {"/", "v1"}


@pytest.mark.parametrize("data,message", [
    ({"port": "5672"}, "'port' must be int"),
    ({"in-memory": 1}, "'in-memory' must be bool"),
    ({"heartbeat": True}, "'heartbeat' must be int"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"users": {"a": {"pasword": "x"}}}, "unknown key 'pasword' in users.a"),
    ({"users": ["a"]}, "'users' must be a table"),
    ({"permissions": [{"vhost": "/"}]}, "needs 'user'"),
    ({"permissions": [{"user": "a", "vhost": "/", "read": "("}]}, "invalid regular expression"),
    ({"vhosts": {"v": {"limits": {"max-queues": "ten"}}}}, "must be an integer"),
    ({"vhosts": {"v": {"limits": {"max-bananas": 1}}}}, "unknown limit"),
    ({"loopback-users": "guest"}, "list of user names"),
])
def test_bad_files_are_refused_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "minimq.toml")
