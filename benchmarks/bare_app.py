#!/usr/bin/env python3
"""The baseline for ``make bench``: a bare aiohttp Stasis app that only plays the notice and continues.

    .venv/bin/python benchmarks/bare_app.py --ari-url http://127.0.0.1:8088 --user U --password P \
        --app callrec --media sound:/path/en/notice --stats 127.0.0.1:0   # password: $ARI_PASSWORD

What any ARI application must do for a notice, and nothing more: one events websocket; on
``StasisStart`` one ``POST /channels/{id}/play``; on the notice's ``PlaybackFinished`` one ``POST
/channels/{id}/continue``.  No database, no recording, no variables, no subscription, no policy.
It is the floor callrec's per-call cost is compared with (same machine, same Asterisk, same calls).

``--stats HOST:PORT`` serves ``GET /stats`` (JSON): the ARI requests made, and per channel id the
notice latency from StasisStart to PlaybackStarted, both Asterisk's event time stamps (as callrec's
call log stores them).  The line ``bare app ready on HOST:PORT`` is printed once the websocket is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web


def stamp(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


class BareApp:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.ari_url.rstrip("/") + "/ari"
        self.app = args.app
        self.media = args.media
        self.auth = aiohttp.BasicAuth(args.user, os.environ.get("ARI_PASSWORD", ""))  # not on the command line
        self.requests = 0
        self.events: dict[str, int] = {}  # ARI events read, by type (as counted_serve.py counts callrec's)
        self.started: dict[str, datetime] = {}  # channel id -> StasisStart
        self.latency_ms: dict[str, float] = {}
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def post(self, path: str, params: dict[str, str] | None = None) -> None:
        assert self.session is not None
        self.requests += 1
        async with self.session.post(self.base + path, params=params) as resp:
            await resp.read()  # a 404 (caller gone) is fine: nothing to do

    def spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        self.events[f"ARI {kind}"] = self.events.get(f"ARI {kind}", 0) + 1
        if kind == "StasisStart":
            channel_id = event["channel"]["id"]
            self.started[channel_id] = stamp(event)
            self.spawn(self.post(f"/channels/{quote(channel_id, safe='')}/play/bare-{channel_id}",
                                 {"media": self.media}))
        elif kind in ("PlaybackStarted", "PlaybackFinished"):
            playback = event.get("playback") or {}
            target = str(playback.get("target_uri", ""))
            channel_id = target.partition(":")[2]
            if not str(playback.get("id", "")).startswith("bare-") or channel_id not in self.started:
                return
            if kind == "PlaybackStarted":
                delta = stamp(event) - self.started[channel_id]
                self.latency_ms[channel_id] = delta.total_seconds() * 1000
            elif playback.get("state") != "failed":
                self.spawn(self.post(f"/channels/{quote(channel_id, safe='')}/continue"))
        elif kind == "StasisEnd":
            self.started.pop(event["channel"]["id"], None)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"ari_requests": self.requests, "db_round_trips": 0,
                                  "events": self.events, "latency_ms": self.latency_ms})

    async def run(self, stats_host: str, stats_port: int) -> None:
        connector = aiohttp.TCPConnector(limit=8, keepalive_timeout=10)
        self.session = aiohttp.ClientSession(auth=self.auth, connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=10))
        web_app = web.Application()
        web_app.router.add_get("/stats", self.stats)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, stats_host, stats_port)
        await site.start()
        port = runner.addresses[0][1]
        ws_url = self.base.replace("http", "ws", 1) + f"/events?app={quote(self.app, safe='')}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with self.session.ws_connect(ws_url, heartbeat=15.0) as ws:
            print(f"bare app ready on {stats_host}:{port}", flush=True)
            reader = asyncio.create_task(self.read(ws))
            await stop.wait()
            reader.cancel()
            await ws.close()
        await runner.cleanup()
        await self.session.close()

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.on_event(json.loads(msg.data))
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ari-url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--app", default="callrec")
    parser.add_argument("--media", required=True, help="the notice, as ARI's play takes it (sound:...)")
    parser.add_argument("--stats", default="127.0.0.1:0", help="HOST:PORT for GET /stats")
    args = parser.parse_args()
    host, _, port = args.stats.rpartition(":")
    asyncio.run(BareApp(args).run(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
