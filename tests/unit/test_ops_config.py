"""[http] settings: validation one line per key (a taken port: tests/e2e/test_ops_config_e2e.py)."""

from __future__ import annotations

import pytest
from support.settings import SECRETS

from callrec.config.settings import ConfigError, parse_settings


@pytest.mark.parametrize(("http", "message"), [
    ({"listen": "8090"}, "http.listen: expected host:port"),
    ({"listen": "127.0.0.1:99999"}, "http.listen: expected host:port"),
    ({"listen": "http://127.0.0.1:8090"}, "http.listen: expected host:port"),
    ({"enabled": "maybe"}, "http.enabled: expected true or false"),
    ({"session_hours": 0}, "http.session_hours: expected 0.01-720 hours"),
    ({"port": 1}, "http.port: unknown key"),
    ({"trusted_proxies": ["10.0.0.0/8", "proxy.example"]}, "http.trusted_proxies: expected an IP address"),
])
def test_bad_http_settings(http: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings({"http": http}, SECRETS)
    assert str(exc.value).startswith(message)


def test_http_defaults_and_environment() -> None:
    s = parse_settings({}, SECRETS)
    assert s.http.active and s.http.listen == "127.0.0.1:8090"  # not 8088: Asterisk's HTTP port
    s = parse_settings({}, {**SECRETS, "CALLREC_HTTP_LISTEN": "[::1]:9000"})
    assert s.http.host_port() == ("::1", 9000)
    assert not parse_settings({}, {**SECRETS, "CALLREC_HTTP_LISTEN": ""}).http.active
    assert not parse_settings({}, {**SECRETS, "CALLREC_HTTP_ENABLED": "false"}).http.active


def test_trusted_proxies_and_the_sweep_interval() -> None:
    s = parse_settings({"http": {"trusted_proxies": ["10.0.0.0/8", "::1"]}}, SECRETS)
    assert s.http.trusted_proxies == ("10.0.0.0/8", "::1")
    assert parse_settings({}, SECRETS).http.trusted_proxies == ()  # X-Forwarded-For believed from nobody
    assert parse_settings({}, SECRETS).asterisk.sweep_interval == 60.0
    with pytest.raises(ConfigError) as exc:
        parse_settings({"asterisk": {"sweep_interval": 0.5}}, SECRETS)
    assert str(exc.value).startswith("asterisk.sweep_interval: expected 1-3600 seconds")


def test_client_address_reads_forwarded_for_from_the_right() -> None:
    from ipaddress import ip_network

    from callrec.web.auth import client_address
    trusted = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))
    assert client_address("127.0.0.1", ["192.0.2.1"], trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", ["6.6.6.6, 192.0.2.1, 10.0.0.5"], trusted) == "192.0.2.1"
    assert client_address("203.0.113.9", ["192.0.2.1"], trusted) == "203.0.113.9"  # untrusted peer
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["garbage, 10.0.0.5"], trusted) == "10.0.0.5"  # nothing believable left
