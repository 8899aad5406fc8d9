"""/metrics, /ready and /live on the real daemon; systemd's notify protocol and JSON logs from `callrec serve`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
from caller import Finished, Tester
from prometheus_client.parser import text_string_to_metric_families
from sandbox import SandboxInfo, callrec_config
from support.daemon_proc import CALLREC, running_daemon, wait_finalized, wait_registered
from support.settings import make_settings

from callrec.app import Daemon

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, port: int) -> Samples:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_move_as_calls_are_placed(asterisk: SandboxInfo, database: str, tester: Tester,
                                                finished: Finished, http: aiohttp.ClientSession) -> None:
    settings = make_settings(asterisk, database, metrics={"listen": "127.0.0.1:0"},
                             http={"enabled": True, "listen": "127.0.0.1:0"})
    async with running_daemon(settings, finished) as d:
        assert d.metrics_server is not None and d.http is not None
        port = d.metrics_server.port
        before = await scrape(http, port)
        assert before[("callrec_ari_connected", ())] == 1 and before[("callrec_ami_connected", ())] == 1
        assert before[("callrec_database_up", ())] == 1
        assert before[("callrec_journal_full", ())] == 0 and before[("callrec_journal_bytes", ())] >= 0
        assert ("callrec_calls_total", (("consent", "implied"), ("door", "ari"))) not in before
        assert before[("callrec_hook_jobs", (("state", "pending"),))] == 0
        assert before[("callrec_speech_jobs", (("state", "pending"),))] == 0
        for _ in range(2):
            call = await tester.place_call(args="mode=notice")
            assert (await call.handed_back())["consent"] == "implied"
            during = await scrape(http, port)
            assert during[("callrec_calls_active", (("door", "ari"),))] >= 1
            await call.spoken(await call.speak())
            await call.hang_up()
            await finished.wait(call.callee_id)
        async with http.get(f"http://127.0.0.1:{d.http.port}/api/v1/calls") as r:
            assert r.status == 401  # counted by route template and status class, whatever the outcome
        after = await scrape(http, port)
        assert after[("callrec_calls_total", (("consent", "implied"), ("door", "ari")))] == 2
        recordings = {k: v for k, v in after.items() if k[0] == "callrec_recordings_total"}
        assert recordings == {("callrec_recordings_total", (("door", "ari"), ("status", "ready"))): 2}, recordings
        assert after[("callrec_notice_latency_seconds_count", (("door", "ari"),))] == 2
        assert 0 < after[("callrec_notice_latency_seconds_sum", (("door", "ari"),))] < 10
        assert after[("callrec_finalize_seconds_count", ())] == 2
        assert after[("callrec_calls_active", (("door", "ari"),))] == 0
        assert after[("callrec_http_request_seconds_count",
                      (("method", "GET"), ("route", "/api/v1/calls"), ("status", "4xx")))] == 1
        assert after[("callrec_ari_connections_total", ())] == 1
        async with http.get(f"http://127.0.0.1:{port}/ready") as r:
            assert r.status == 200
            body = await r.json()
        assert body == {"ready": True, "parts": {"ari": True, "ami": True, "database": True}, "down": []}
        async with http.get(f"http://127.0.0.1:{port}/live") as r:
            assert r.status == 200


async def test_not_ready_while_ami_is_down(asterisk: SandboxInfo, database: str,
                                           http: aiohttp.ClientSession) -> None:
    settings = make_settings(asterisk, database, metrics={"listen": "127.0.0.1:0"},
                             asterisk={"ami_port": free_port()})
    d = Daemon(settings)
    try:
        await d.start()
        assert d.metrics_server is not None
        port = d.metrics_server.port
        assert d.door is not None
        await asyncio.wait_for(d.door.stream.connected.wait(), 15)
        async with http.get(f"http://127.0.0.1:{port}/ready") as r:
            assert r.status == 503
            body = await r.json()
        assert body["ready"] is False and body["down"] == ["ami"] and body["parts"]["ari"] is True
        samples = await scrape(http, port)
        assert samples[("callrec_ami_connected", ())] == 0
    finally:
        await d.stop()


async def test_serve_under_systemd_notify_with_json_logs(tmp_path: Path, asterisk: SandboxInfo, database: str,
                                                         tester: Tester, http: aiohttp.ClientSession) -> None:
    """`callrec serve` as systemd runs it (Type=notify, WatchdogSec): READY, watchdog pings, STOPPING."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(callrec_config(asterisk, database, asterisk={"request_timeout": 2},
                                  notice={"decision_window": 1}, log={"format": "json"},
                                  metrics={"listen": "127.0.0.1:0"}))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    loop = asyncio.get_running_loop()

    messages: list[str] = []
    arrived = asyncio.Condition()

    async def drain() -> None:  # like systemd: every message read as it comes
        while True:
            data = (await loop.sock_recv(notify, 4096)).decode()
            async with arrived:
                messages.append(data)
                arrived.notify_all()

    async def until(check: Callable[[list[str]], bool]) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: check(messages)), 20)

    reader = asyncio.create_task(drain())

    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        await until(lambda got: got.count("WATCHDOG=1") >= 2)  # every half WatchdogSec, from the event loop
        ready = [m for m in messages if "READY=1" in m]
        assert len(ready) == 1 and "STATUS=" in ready[0]
        await wait_registered(tester)
        call = await tester.place_call(args="mode=notice")
        assert (await call.handed_back())["consent"] == "implied"
        await call.hang_up()
        await wait_finalized(database, call.callee_id)
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        started = [x["message"] for x in lines if x["message"].startswith("metrics on http://")]
        port = int(started[0].split(":")[2].split("/")[0])
        samples = await scrape(http, port)
        assert samples[("callrec_calls_total", (("consent", "implied"), ("door", "ari")))] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await until(lambda got: "STOPPING=1" in got)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        reader.cancel()
        notify.close()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x["message"] == "callrec stopped" for x in lines)
    assert asterisk.ami_password not in log_path.read_text()
