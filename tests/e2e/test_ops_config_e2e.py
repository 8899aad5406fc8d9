"""[http] settings: a taken port is a clear start-up error of the daemon (against the sandbox)."""

from __future__ import annotations

import socket

import pytest
from sandbox import SandboxInfo
from support.settings import make_settings

from callrec.app import Daemon, FatalError


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
