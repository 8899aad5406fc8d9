"""[http] settings: validation one line per key, and a taken port is a clear start-up error."""

from __future__ import annotations

import socket

import pytest
from conftest import make_settings
from sandbox import SandboxInfo

from callrec.app import Daemon, FatalError
from callrec.config.settings import ConfigError, parse_settings

BASE = {"asterisk": {"ari_password": "a", "ami_password": "b"}}


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
        parse_settings({**BASE, "http": http}, {})
    assert str(exc.value).startswith(message)


def test_http_defaults_and_environment() -> None:
    s = parse_settings(BASE, {})
    assert s.http.active and s.http.listen == "127.0.0.1:8090"  # not 8088: Asterisk's HTTP port
    s = parse_settings(BASE, {"CALLREC_HTTP_LISTEN": "[::1]:9000"})
    assert s.http.host_port() == ("::1", 9000)
    assert not parse_settings(BASE, {"CALLREC_HTTP_LISTEN": ""}).http.active
    assert not parse_settings(BASE, {"CALLREC_HTTP_ENABLED": "false"}).http.active


async def test_taken_port_is_a_fatal_start_error(asterisk: SandboxInfo, database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon(make_settings(asterisk, database, http={"enabled": True, "listen": f"127.0.0.1:{port}"}))
        try:
            with pytest.raises(FatalError, match=f"http.listen: cannot listen on 127.0.0.1:{port}"):
                await d.start()
        finally:
            await d.stop()
