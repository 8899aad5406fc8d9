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
