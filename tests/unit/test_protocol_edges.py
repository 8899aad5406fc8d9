"""Protocol edge cases against small local fakes (the real Asterisk is used everywhere else)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from support.waiting import wait_for

from callrec.asterisk.ami import Ami, AmiError
from callrec.asterisk.ari import Ari, AriAuthError, AriNotFound, EventStream

PASSWORD = "p&ss=w%rd?#"


class FakeAri:
    """An ARI-shaped HTTP server: records what the client sent, misbehaves on cue."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.sessions = 0
        self.script: list[list[Any]] = []  # per websocket session: frames to send, then close
        self.app = web.Application()
        self.app.router.add_get("/ari/events", self.events)
        self.app.router.add_route("*", "/ari/{tail:.*}", self.rest)

    def authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"callrec:{PASSWORD}".encode()).decode()
        return request.headers.get("Authorization") == expected

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if not self.authorized(request):
            return web.Response(status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        frames = self.script[self.sessions] if self.sessions < len(self.script) else []
        self.sessions += 1
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        if self.sessions > len(self.script):
            async for msg in ws:  # keep the last session open
                if msg.type == WSMsgType.CLOSE:
                    break
        await ws.close()
        return ws

    async def rest(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if not self.authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        if request.match_info["tail"].startswith("channels/gone"):
            return web.json_response({"message": "Channel not found"}, status=404)
        return web.json_response({"ok": True, "query": dict(request.query)})


@pytest.fixture
async def fake_ari() -> Any:
    fake = FakeAri()
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


async def test_malformed_events_are_dropped_and_the_stream_reconnects(fake_ari: FakeAri) -> None:
    fake_ari.script = [
        ["{not json", "[1, 2]", '{"no_type": 1}', b"\x00binary", '{"type": "StasisStart", "n": 1}'],
        ['{"type": "ChannelDestroyed", "n": 2}'],
    ]
    got: list[dict[str, Any]] = []
    connects = 0
    done = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        got.append(event)
        if len(got) == 2:
            done.set()

    async def on_connected() -> None:
        nonlocal connects
        connects += 1

    ari = Ari(fake_ari.url, "callrec", PASSWORD, "callrec")
    stream = EventStream(ari, on_event, on_connected, min_backoff=0.01, max_backoff=0.05)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
    assert [e["n"] for e in got] == [1, 2]
    assert connects >= 2 and stream.connections >= 2
    for request in fake_ari.requests:  # the password travels only in the Authorization header
        assert PASSWORD not in request.path and PASSWORD not in request.query_string
        assert all(PASSWORD not in v for v in request.query.values())
        assert request.url.user is None and request.url.password is None
    assert fake_ari.requests[0].query["app"] == "callrec"


async def test_a_handler_error_does_not_stop_the_stream(fake_ari: FakeAri) -> None:
    fake_ari.script = [['{"type": "A"}', '{"type": "B"}']]
    seen: list[str] = []
    done = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event["type"])
        if event["type"] == "A":
            raise RuntimeError("bug in a handler")
        done.set()

    async def on_connected() -> None:
        pass

    ari = Ari(fake_ari.url, "callrec", PASSWORD, "callrec")
    stream = EventStream(ari, on_event, on_connected, min_backoff=0.01)
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ari.close()
    assert seen == ["A", "B"]


async def test_wrong_password_is_reported_not_retried_silently(fake_ari: FakeAri) -> None:
    ari = Ari(fake_ari.url, "callrec", "wrong", "callrec")
    stream = EventStream(ari, lambda e: None, _noop, min_backoff=0.01, max_backoff=0.02)
    task = asyncio.create_task(stream.run())
    try:
        await wait_for(lambda: stream.auth_failed, 2, what="the event stream to report the refused password",
                       interval=0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert stream.auth_failed and stream.connections == 0
    assert "authentication failed" in (stream.last_error or "")
    with pytest.raises(AriAuthError):
        await ari.info()
    await ari.close()


async def test_rest_quotes_ids_and_maps_errors(fake_ari: FakeAri) -> None:
    ari = Ari(fake_ari.url + "/ari/", "callrec", PASSWORD, "callrec")
    try:
        result = await ari.request("GET", "/asterisk/info", {"flag": True, "skip": None})
        assert result["query"] == {"flag": "true"}
        with pytest.raises(AriNotFound, match="Channel not found"):
            await ari.get_channel("gone")
        await ari.set_variable("a/../b?x=1", "CALLREC_CONSENT", "declined")
        # A hostile id stays one path segment: no traversal, no smuggled query.
        assert fake_ari.requests[-1].raw_path.startswith("/ari/channels/a%2F..%2Fb%3Fx=1/variable?")
        assert dict(fake_ari.requests[-1].query) == {"variable": "CALLREC_CONSENT", "value": "declined"}
    finally:
        await ari.close()


async def _noop() -> None:
    pass


async def test_ami_refuses_header_injection_before_anything_is_sent() -> None:
    ami = Ami("127.0.0.1", 1, "callrec", "x")
    with pytest.raises(AmiError, match="line break"):
        await ami.mix_monitor("PJSIP/a-1", "/rec/x.wav\r\nAction: Originate")
