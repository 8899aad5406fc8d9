"""Several nodes: the `[node]` setting and the log-in throttle's rule (web/routes_auth.LoginThrottle.decide)."""

from __future__ import annotations

import socket

import pytest

from callrec.config.fields import ConfigError
from callrec.config.node import host_node_name, node_name
from callrec.config.settings import parse_settings
from callrec.web.routes_auth import LoginThrottle

SECRETS = {"CALLREC_ASTERISK_ARI_PASSWORD": "a", "CALLREC_ASTERISK_AMI_PASSWORD": "b"}


def test_the_node_name_defaults_to_the_host_name_and_is_checked() -> None:
    s = parse_settings({}, SECRETS)
    assert node_name(s.node) == host_node_name() == socket.gethostname().split(".")[0][:63]
    assert node_name(parse_settings({"node": {"name": "pbx-2.msk"}}, SECRETS).node) == "pbx-2.msk"
    assert node_name(parse_settings({}, {**SECRETS, "CALLREC_NODE_NAME": "pbx_3"}).node) == "pbx_3"
    for bad in ("pbx 1", "-pbx", "x" * 64, "pbx\x1b", "узел"):
        with pytest.raises(ConfigError, match=r"^node\.name: expected letters"):
            parse_settings({"node": {"name": bad}}, SECRETS)
    with pytest.raises(ConfigError, match=r"^node\.heartbeat_interval: expected"):
        parse_settings({"node": {"heartbeat_interval": 1}}, SECRETS)


def test_api_only_needs_no_asterisk_credentials() -> None:
    with pytest.raises(ConfigError, match=r"asterisk\.ari_password: not set"):
        parse_settings({}, {})
    assert parse_settings({}, {}, asterisk=False).asterisk.ami_password == ""


def test_throttle_rule_per_user_and_address_then_per_address() -> None:
    t = LoginThrottle(free=5, delay=30, max_delay=900, remote_limit=50, window=900)
    pair, addr = t.keys("admin", "192.0.2.1")
    assert pair == "user:admin@192.0.2.1" and addr == "remote:192.0.2.1"
    assert t.decide(pair, [1.0] * 4, addr, [1.0] * 4, 2.0) is None
    # The fifth failure: the next attempt waits 30 s after it; the sixth doubles it; capped at 15 min.
    assert t.decide(pair, [0, 0, 0, 0, 10.0], addr, [], 20.0) == (pair, 20.0)
    assert t.decide(pair, [0.0] * 5 + [10.0], addr, [], 20.0) == (pair, 50.0)
    assert t.decide(pair, [0.0] * 30, addr, [], 0.0) == (pair, 900.0)
    assert t.decide(pair, [0.0] * 5, addr, [], 31.0) is None
    # Fifty failures from one address whatever the names: blocked until the oldest ages out.
    assert t.decide(pair, [], addr, [100.0 + i for i in range(50)], 200.0) == (addr, 800.0)
