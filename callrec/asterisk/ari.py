"""A thin ARI client on aiohttp: REST calls with timeouts and one supervised events websocket.

Why our own: the Python ARI libraries either no longer import (ari-py), stop or spin when the
websocket closes, or put credentials in the URL.  Here credentials travel only in the HTTP Basic
``Authorization`` header (REST and websocket alike) and never appear in a URL or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

log = logging.getLogger("callrec.ari")

EventHandler = Callable[[dict[str, Any]], Awaitable[None] | None]
ConnectedHandler = Callable[[], Awaitable[None]]


class AriError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"ARI {status}: {message}")
        self.status = status
        self.message = message


class AriNotFound(AriError):
    pass


class AriAuthError(AriError):
    pass


class AriUnavailable(AriError):
    """Asterisk did not answer (connection refused, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class Ari:
    """REST side of ARI for one Stasis application."""

    def __init__(self, url: str, user: str, password: str, app: str, timeout: float = 5.0,
                 max_connections: int = 8) -> None:
        self.max_connections = max_connections
        base = url.rstrip("/")
        if base.endswith("/ari"):
            base = base[: -len("/ari")]
        self.base = base + "/ari"
        self.app = app
        self._headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Created lazily inside the running loop, one per process.  Few connections, reused:
            # Asterisk's HTTP server serves at most `sessionlimit` (default 100) at once for
            # every client together, and a burst of calls must not use them all up.
            connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=10)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                      body: Any = None) -> Any:
        url = self.base + path
        clean = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self.session.request(method, url, params=clean, json=body) as resp:
                text = await resp.text()
                if resp.status == 401:
                    raise AriAuthError(401, "authentication failed (check ari_user / ari_password)")
                if resp.status == 404:
                    raise AriNotFound(404, _message(text) or f"{method} {path}: not found")
                if resp.status >= 400:
                    raise AriError(resp.status, _message(text) or f"{method} {path}")
                if not text:
                    return None
                try:
                    return loads(text)
                except ValueError:
                    return text
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise AriUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    # -- the operations callrec uses --

    async def info(self) -> dict[str, Any]:
        return await self.request("GET", "/asterisk/info")

    async def play(self, channel_id: str, media: str, playback_id: str, lang: str | None = None) -> dict[str, Any]:
        return await self.request("POST", f"/channels/{_id(channel_id)}/play/{_id(playback_id)}",
                                  {"media": media, "lang": lang})

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{_id(playback_id)}")

    async def get_playback(self, playback_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/playbacks/{_id(playback_id)}")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/variable", {"variable": name, "value": value})

    async def get_variable(self, channel_id: str, name: str) -> str:
        result = await self.request("GET", f"/channels/{_id(channel_id)}/variable", {"variable": name})
        return (result or {}).get("value", "")

    async def continue_in_dialplan(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/continue")

    async def subscribe_channel(self, channel_id: str) -> None:
        """Keep receiving the channel's events (hang-up) after it leaves the Stasis app."""
        await self.request("POST", f"/applications/{quote(self.app, safe='')}/subscription",
                           {"eventSource": f"channel:{channel_id}"})

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/channels/{_id(channel_id)}")

    async def list_channels(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/channels") or []

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"/channels/{_id(channel_id)}", {"reason": reason})

    async def send_dtmf(self, channel_id: str, digits: str, duration_ms: int = 120) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/dtmf", {"dtmf": digits, "duration": duration_ms})

    async def originate(self, endpoint: str, *, app: str | None = None, app_args: str | None = None,
                        context: str | None = None, extension: str | None = None, priority: int | None = None,
                        caller_id: str | None = None, channel_id: str | None = None,
                        other_channel_id: str | None = None, timeout: int = 30,
                        variables: dict[str, str] | None = None) -> dict[str, Any]:
        params = {"endpoint": endpoint, "app": app, "appArgs": app_args, "context": context,
                  "extension": extension, "priority": priority, "callerId": caller_id,
                  "channelId": channel_id, "otherChannelId": other_channel_id, "timeout": timeout}
        return await self.request("POST", "/channels", params, {"variables": variables or {}})

    # -- events --

    def events_url(self, subscribe_all: bool = False) -> str:
        ws = self.base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{ws}/events?app={quote(self.app, safe='')}&subscribeAll={'true' if subscribe_all else 'false'}"


class EventStream:
    """One supervised events websocket: reconnects with backoff for as long as it runs.

    ``on_connected`` runs after each (re)connection, before events are delivered, so the owner
    can re-read state it may have missed (Asterisk replays nothing).  Events are handed to
    ``on_event`` in the order they arrive.
    """

    def __init__(self, ari: Ari, on_event: EventHandler, on_connected: ConnectedHandler,
                 min_backoff: float = 0.2, max_backoff: float = 5.0, subscribe_all: bool = False,
                 handshake_timeout: float = 3.0) -> None:
        self.ari = ari
        self.handshake_timeout = handshake_timeout
        self.subscribe_all = subscribe_all
        self.on_event = on_event
        self.on_connected = on_connected
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0  # how many times the websocket was established
        self.last_error: str | None = None
        self.auth_failed = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False

    async def run(self) -> None:
        backoff = self.min_backoff
        waiting_logged = False
        connected_at: float | None = None
        while True:
            try:
                # A handshake that hangs is given up quickly and tried again on a new connection
                # (seen on Asterisk 22 while an earlier websocket of the same server is torn down).
                async with asyncio.timeout(self.handshake_timeout):
                    ws = await self.ari.session.ws_connect(self.ari.events_url(self.subscribe_all), heartbeat=15.0,
                                                           timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
                async with ws:
                    self._ws = ws
                    self.connections += 1
                    self.auth_failed = False
                    log.info("ARI events connected (%s, app %s)%s", self.ari.base, self.ari.app,
                             "" if self.connections == 1 else f", reconnect #{self.connections - 1}")
                    waiting_logged = False
                    connected_at = asyncio.get_running_loop().time()
                    self.connected.set()
                    await self.on_connected()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await self._deliver(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                    self.last_error = "websocket closed by Asterisk"
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as exc:
                self.last_error = f"websocket refused: HTTP {exc.status}"
                if exc.status == 401:
                    self.auth_failed = True
                    self.last_error = "ARI authentication failed (check ari_user / ari_password)"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception:  # a bug in a handler must not kill the event stream
                log.exception("ARI event loop error; reconnecting")
                self.last_error = "internal error"
            finally:
                self._ws = None
                # Back to quick retries only after a connection that held; a server that accepts
                # and drops at once is not hammered (each connect runs a full re-sync).
                if connected_at is not None and asyncio.get_running_loop().time() - connected_at > 5:
                    backoff = self.min_backoff
                connected_at = None
            if self._closing:
                self.connected.clear()
                return
            if self.connected.is_set():
                log.warning("ARI events disconnected: %s; reconnecting", self.last_error)
            elif not waiting_logged:
                log.warning("waiting for Asterisk ARI at %s: %s", self.ari.base, self.last_error)
                waiting_logged = True
            self.connected.clear()
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self.max_backoff)

    async def _deliver(self, data: str) -> None:
        try:
            event = loads(data)
        except ValueError:
            log.warning("ARI sent a malformed event (%d bytes) - ignored", len(data))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            log.warning("ARI sent an event without a type - ignored")
            return
        try:
            result = self.on_event(event)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("handling ARI event %s failed", event.get("type"))

    async def drop(self) -> None:
        """Close the current websocket (tests use it to simulate a drop); run() reconnects."""
        if self._ws is not None:
            await self._ws.close()

    async def close(self) -> None:
        """End run(): close the websocket with a proper close handshake.

        Cancelling a task that sits in a websocket read tears the TCP connection down under
        Asterisk while it may be writing events to it; Asterisk 22 was seen to stop serving HTTP
        for a while after that.  A clean close avoids it.
        """
        self._closing = True
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 5)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass


def loads(text: str) -> Any:
    """JSON from Asterisk: orjson (several times faster on every event); what it refuses (a lone
    surrogate escape in a hostile caller name) goes to the standard parser, which decides as before."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _id(value: str) -> str:
    return quote(value, safe="")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or "")[:200]
    return ""
