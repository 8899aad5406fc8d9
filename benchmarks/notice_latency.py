#!/usr/bin/env python3
"""callrec against a bare ARI app, side by side: notice latency, CPU and round trips per call.

    .venv/bin/python benchmarks/notice_latency.py                 # Markdown table (docs/benchmarks.md)
    .venv/bin/python benchmarks/notice_latency.py --json          # the same figures as JSON (--samples: all)
    .venv/bin/python benchmarks/notice_latency.py --calls 200 --burst 20 --json   # a smaller run

Runs as root against the sandbox Asterisk 22 (tools/sandbox.py; reused when it already runs) and a
throwaway database (created, dropped at the end), with real Local-channel calls placed by
tools/caller.py.  Each scenario runs alternately against the baseline, ``benchmarks/bare_app.py`` (an
aiohttp Stasis app that only plays the same notice and continues), and ``callrec serve`` (as a child
process, through ``benchmarks/counted_serve.py``, which counts its round trips): bare, callrec, bare,
callrec.  Every figure is printed for both with its ratio, and the 1-minute load average of each run.

(a) At a rate: ``--calls`` complete calls placed ``--rate`` per second (default 1200 at 20/s: 60 s):
    notice, hand-back (callrec: implied consent, MixMonitor), the caller talks 1.4 s, hang-up; callrec
    finalizes every recording (measured, hashed, row written).  Notice latency p50/p95/p99 (StasisStart
    to PlaybackStarted, both Asterisk's time stamps: callrec's call log stores them, the bare app keeps
    them), the daemon's CPU per call (user+system of all its threads, /proc/<pid>/stat, from the first
    call until the last is finished, net of its idle CPU measured just before), and per call the ARI
    requests and PostgreSQL round trips, counted in-process (benchmarks/counted_serve.py).
(b) At once: ``--burst`` calls (default 50) placed together, each hanging up just after the notice
    starts: notice latency p50/p95/p99.

With ``--speech`` (speech analytics on: ``[speech] enabled``, 2 workers), instead, in one run:
(c) notice latency over N sequential calls with the transcription workers idle, then over N more while
    both workers are busy (long recordings of stock prompts queued first; the run checks they stayed busy);
(d) "transcript ready after hang-up": a call whose caller speaks stock prompts, queue empty, from the
    call's end (Asterisk's timestamp in the call log) to the transcript's row, against 2x the call's
    length + 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "benchmarks"))

try:
    import aiohttp
    import asyncpg
    from caller import PlacedCall, Tester

    from callrec.asterisk.ari import AriError
    from callrec.store import migrate
except ImportError as exc:  # pragma: no cover - run with the wrong interpreter
    sys.exit(f"bench: {exc}; run me with the project's venv: make venv && .venv/bin/python {sys.argv[0]}")

import sandbox as sandbox_mod  # noqa: E402
import testdb  # noqa: E402

APP = "callrec"
WORK_DIR = REPO / "var" / "bench"
CONFIG = WORK_DIR / "callrec.toml"
DAEMON_LOG = WORK_DIR / "callrec.log"
COUNTS = WORK_DIR / "counts.json"  # counted_serve.py writes its counters here on SIGUSR2
SPEECH = "sound:hello-world"  # 1.4 s of a real voice
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


class BenchError(Exception):
    pass


def progress(text: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ figures
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "calls": len(samples),
        "median_ms": round(statistics.median(samples), 1),
        "p95_ms": round(percentile(samples, 95), 1),
        "max_ms": round(max(samples), 1),
        "min_ms": round(min(samples), 1),
        "samples_ms": [round(s, 1) for s in samples],
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version()}


# ------------------------------------------------------------------------------------------ setup
SPEECH_CACHE = WORK_DIR / "speech-cache"
SPEECH_WORKERS = 2
# The caller's script for (d): stock English prompts (core-sounds-en.txt), about 15 s of speech.
SCRIPT = ["tt-weasels", "vm-nobodyavail", "vm-mailboxfull", "demo-thanks"]


def write_config(info: sandbox_mod.SandboxInfo, dsn: str, speech: bool = False) -> None:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    extra: dict[str, dict[str, object]] = {}
    if speech:
        extra["speech"] = {"enabled": True, "workers": SPEECH_WORKERS, "cache_dir": str(SPEECH_CACHE),
                           "poll_interval": 5}
    text = sandbox_mod.callrec_config(
        info, dsn, header="written by benchmarks/notice_latency.py (sandbox Asterisk, throwaway database)",
        asterisk={"app": APP}, log={"level": "info"}, **extra)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def serve_cmd() -> list[str]:
    """``callrec serve``, with round-trip counters wrapped around it (benchmarks/counted_serve.py)."""
    return [sys.executable, str(REPO / "benchmarks" / "counted_serve.py"), "-c", str(CONFIG), "serve"]


async def app_registered(http: aiohttp.ClientSession, info: sandbox_mod.SandboxInfo) -> bool:
    async with http.get(f"{info.ari_url}/ari/applications/{APP}") as resp:
        return resp.status == 200


def log_text() -> str:
    try:
        return DAEMON_LOG.read_text(errors="replace")
    except OSError:
        return ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.box = sandbox_mod.Sandbox()
        self.started_sandbox = False
        self.info: sandbox_mod.SandboxInfo | None = None
        self.admin_dsn = ""
        self.db_name = f"callrec_bench_{uuid.uuid4().hex[:10]}"
        self.dsn = ""
        self.db_created = False
        self.daemon: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.tester: Tester | None = None
        self.conn: asyncpg.Connection | None = None
        self.side = "callrec"
        self.stats_url = ""
        self.off_plan = 0  # callrec calls handed back other than "implied, recording" (overload)

    # -- lifecycle --

    async def setup(self) -> None:
        self.box.claim()  # SlotBusy names the run that has this slot: fail before touching it
        if self.box.is_running() and await asyncio.to_thread(self.box._ari_ok):
            progress("sandbox Asterisk already running: reusing it (it stays running)")
            self.info = self.box.info()
        else:
            progress("starting the sandbox Asterisk (built first if missing)")
            self.info = await asyncio.to_thread(self.box.start)
            self.started_sandbox = True
        if not self.box.is_running():
            raise BenchError("the sandbox Asterisk stopped right after it started (another process stopped it?)")
        info = self.info
        self.admin_dsn = await asyncio.to_thread(testdb.ensure_postgres)
        admin = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
            self.db_created = True
        finally:
            await admin.close()
        self.dsn = urlunsplit(urlsplit(self.admin_dsn)._replace(path=f"/{self.db_name}"))
        self.conn = await asyncpg.connect(self.dsn, timeout=10)
        await migrate(self.conn)
        progress(f"database {self.db_name} created and migrated")
        write_config(info, self.dsn, speech=self.args.speech)
        auth = aiohttp.encode_basic_auth(info.tester_ari_user, info.tester_ari_password)
        self.http = aiohttp.ClientSession(headers={"Authorization": auth}, timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + 30
        while await app_registered(self.http, info):
            if time.monotonic() > deadline:
                raise BenchError(f"another client holds the ARI app {APP!r} (a test run, the demo, a daemon?)")
            await asyncio.sleep(0.5)
        self.tester = Tester(info.ari_url, info.tester_ari_user, info.tester_ari_password)
        self.tester.ari.max_connections = 24  # 20 calls/s: originate, play, hang-up each (Asterisk allows 100)
        self.tester.ari._timeout = aiohttp.ClientTimeout(total=30)  # a loaded machine answers slowly, not never
        await self.tester.start()
        if self.args.speech:
            await self.start_daemon()

    async def start_daemon(self, side: str = "callrec") -> None:
        """``callrec serve`` (through counted_serve.py: its round trips counted) or the bare app, ready."""
        assert self.http is not None and self.info is not None
        info = self.info
        deadline = time.monotonic() + 30
        while await app_registered(self.http, info):
            if time.monotonic() > deadline:
                raise BenchError(f"another client holds the ARI app {APP!r} (a test run, the demo, a daemon?)")
            await asyncio.sleep(0.2)
        self.side = side
        DAEMON_LOG.unlink(missing_ok=True)
        COUNTS.unlink(missing_ok=True)
        env = {**os.environ, "CALLREC_BENCH_COUNTS": str(COUNTS), "ARI_PASSWORD": info.ari_password}
        cmd = serve_cmd() if side == "callrec" else [
            sys.executable, str(REPO / "benchmarks" / "bare_app.py"), "--ari-url", info.ari_url,
            "--user", info.ari_user, "--app", APP, "--media", f"sound:{info.prompts_dir}/en/notice"]
        with open(DAEMON_LOG, "ab") as log:
            self.daemon = await asyncio.create_subprocess_exec(
                *cmd, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + (180 if self.args.speech else 20)  # the first start joins the model
        while True:
            if self.daemon.returncode is not None:
                raise BenchError(f"{side} exited with {self.daemon.returncode}:\n{log_text()[-2000:]}")
            text = log_text()
            ready = ("ARI events connected" in text and "AMI logged in" in text) if side == "callrec" else \
                "bare app ready on" in text
            if ready and await app_registered(self.http, info):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{side} not ready in time:\n{log_text()[-2000:]}")
            await asyncio.sleep(0.1)
        if side == "bare":
            self.stats_url = "http://" + text.split("bare app ready on ", 1)[1].split()[0] + "/stats"
        progress(f"{side} is up (pid {self.daemon.pid})")

    async def stop_daemon(self) -> int | None:
        if self.daemon is None:
            return None
        if self.daemon.returncode is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.daemon.wait(), 15)
            except TimeoutError:
                self.daemon.kill()
                await self.daemon.wait()
        rc = self.daemon.returncode
        progress(f"{self.side} stopped (exit {rc})")
        self.daemon = None
        return rc

    async def teardown(self) -> int | None:
        rc = None
        if self.tester is not None:
            try:
                await self.tester.close()
            except (AriError, AssertionError) as exc:  # the run's own failure is the one to report
                progress(f"closing the test caller: {exc}")
            await self.hang_up_leftovers()
        if self.http is not None:
            await self.http.close()
        if self.conn is not None:
            await self.conn.close()
        if self.daemon is not None:
            rc = await self.stop_daemon()
        if self.db_created:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                admin = await asyncpg.connect(self.admin_dsn, timeout=10)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                finally:
                    await admin.close()
        proc = self.box._proc
        ours = proc is not None and proc.poll() is None and proc.pid in self.box._asterisk_pids()
        if self.started_sandbox and not self.args.keep and ours:
            progress("stopping the sandbox Asterisk")
            await asyncio.to_thread(self.box.stop)
        return rc

    async def hang_up_leftovers(self) -> None:
        """Calls of this run still up after a failure (the test dialplan holds them 600 s): hung up."""
        assert self.tester is not None
        mine = {c.caller_id for c in self.tester.calls} | {c.callee_id for c in self.tester.calls}
        try:
            left = [ch["id"] for ch in await self.tester.ari.list_channels() if ch.get("id") in mine]
            for channel_id in left:
                with contextlib.suppress(AriError):
                    await self.tester.ari.hangup(channel_id)
        except AriError as exc:
            progress(f"hanging up this run's calls: {exc}")
            return
        if left:
            progress(f"hung up {len(left)} call(s) left over")

    # -- calls --

    async def finalized(self, uniqueids: list[str], timeout: float = 60) -> None:
        assert self.conn is not None and self.daemon is not None
        deadline = time.monotonic() + timeout
        while True:
            n = await self.conn.fetchval(
                "SELECT count(*) FROM calls WHERE uniqueid = ANY($1::text[]) AND finalized_at IS NOT NULL", uniqueids)
            if n == len(uniqueids):
                return
            if self.daemon.returncode is not None:
                raise BenchError(f"callrec serve died (exit {self.daemon.returncode})")
            if time.monotonic() > deadline:
                raise BenchError(f"only {n} of {len(uniqueids)} calls finalized within {timeout:g} s")
            await asyncio.sleep(0.05)

    async def latencies(self, uniqueids: list[str]) -> list[float]:
        assert self.conn is not None
        rows = await self.conn.fetch(
            "SELECT uniqueid, started_at, notice_started_at, consent, notice_completed, warnings FROM calls "
            "WHERE uniqueid = ANY($1::text[])", uniqueids)
        missing = [r for r in rows if r["notice_started_at"] is None]
        if len(rows) != len(uniqueids) or missing:
            detail = "".join(f"\n  {r['uniqueid']}: consent={r['consent']} notice_completed={r['notice_completed']} "
                             f"warnings={list(r['warnings'])}" for r in missing[:5])
            raise BenchError(f"{len(uniqueids) - len(rows)} calls without a call-log row, {len(missing)} without "
                             f"notice_started_at although the tester saw the notice start:{detail}")
        return [(r["notice_started_at"] - r["started_at"]).total_seconds() * 1000 for r in rows]

    async def short_call(self) -> PlacedCall:
        """A call that hangs up as soon as the notice plays."""
        assert self.tester is not None
        call = await self.tester.place_call(args="mode=notice")
        await call.notice_started(timeout=30)
        await asyncio.sleep(self.args.hold)
        await call.hang_up()
        return call

    async def sequential(self, n: int) -> list[float]:
        ids = []
        for _ in range(n):
            call = await self.short_call()
            await self.finalized([call.callee_id])
            ids.append(call.callee_id)
        return await self.latencies(ids)

    async def side_latencies(self, uniqueids: list[str]) -> list[float]:
        """Notice latency per call (Asterisk's time stamps): callrec's call log, or the bare app's own."""
        if self.side == "callrec":
            return await self.latencies(uniqueids)
        assert self.http is not None
        async with self.http.get(self.stats_url) as resp:
            seen = (await resp.json())["latency_ms"]
        missing = [u for u in uniqueids if u not in seen]
        if missing:
            raise BenchError(f"the bare app saw no notice start on {len(missing)} calls, e.g. {missing[0]}")
        return [seen[u] for u in uniqueids]

    async def counts(self) -> dict[str, Any]:
        """ARI requests and PostgreSQL round trips so far (the daemon's own counters)."""
        assert self.daemon is not None and self.http is not None
        if self.side == "bare":
            async with self.http.get(self.stats_url) as resp:
                data = await resp.json()
            return {"ari_requests": data["ari_requests"], "db_round_trips": data["db_round_trips"],
                    "events": data.get("events", {})}
        COUNTS.unlink(missing_ok=True)
        self.daemon.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not COUNTS.exists():
            if time.monotonic() > deadline:
                raise BenchError("callrec serve wrote no counters on SIGUSR2")
            await asyncio.sleep(0.02)
        data: dict[str, Any] = json.loads(COUNTS.read_text())
        return data

    async def done(self, uniqueids: list[str], timeout: float = 120) -> None:
        """callrec: every call finalized (recording measured and hashed, row written).  Bare app: the
        calls' channels are gone (it has nothing to finish after the hand-back)."""
        if self.side == "callrec":
            await self.finalized(uniqueids, timeout)
            return
        assert self.tester is not None
        since = {c.callee_id: c.since for c in self.tester.calls}
        for u in uniqueids:
            await self.tester.log.wait_for(lambda e, u=u: e.get("type") == "ChannelDestroyed"
                                           and e["channel"]["id"] == u, timeout, f"channel {u} to end", since[u])

    async def complete_call(self) -> str:
        """Notice, hand-back (callrec: implied consent, MixMonitor), the caller talks 1.4 s, hang-up."""
        assert self.tester is not None
        call = await self.tester.place_call(args="mode=notice")
        back = await call.handed_back(timeout=60)
        if self.side == "callrec" and (back.get("consent") != "implied" or not back.get("recording")):
            # An overloaded Asterisk may start the notice or answer MixMonitor too late: the call goes
            # on as designed ("notice_failed", not recorded).  Counted and shown, not a failed run.
            self.off_plan += 1
        await call.spoken(await call.speak(SPEECH))
        await call.hang_up()
        return call.callee_id

    async def at_rate(self, n: int, rate: float) -> dict[str, Any]:
        """``n`` complete calls placed at ``rate`` per second: notice latency, CPU and round trips per call."""
        assert self.daemon is not None
        pid = self.daemon.pid
        c0 = cpu_seconds(pid)
        await asyncio.sleep(self.args.idle)
        idle_rate = (cpu_seconds(pid) - c0) / self.args.idle
        before = await self.counts()
        load0 = os.getloadavg()[0]
        c0, t0 = cpu_seconds(pid), time.monotonic()
        self.off_plan = 0
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the call schedule itself, not a wait for an event
            tasks.append(asyncio.create_task(self.complete_call()))
        ids = await asyncio.gather(*tasks)
        await self.done(ids)
        wall = time.monotonic() - t0
        used = cpu_seconds(pid) - c0
        after = await self.counts()
        lat = await self.side_latencies(ids)
        if self.side == "callrec":
            assert self.conn is not None
            # An overloaded Asterisk may answer MixMonitor late (the call goes on "not recorded",
            # as designed): counted and shown, not a failed run.
            not_ready = await self.conn.fetchval("SELECT count(*) FROM calls WHERE uniqueid = ANY($1::text[]) "
                                                 "AND recording_status <> 'ready'", ids)
        else:
            not_ready = 0
        return {
            "recordings_not_ready": not_ready,
            "handed_back_unrecorded": self.off_plan,
            "calls": n, "rate_per_s": rate, "wall_s": round(wall, 1), "load_avg_1m": [round(load0, 2),
                                                                                     round(os.getloadavg()[0], 2)],
            "latency_ms": lat,
            "cpu_ms_per_call": round(max(0.0, used - idle_rate * wall) * 1000 / n, 2),
            "cpu_ms_per_call_gross": round(used * 1000 / n, 2),
            "idle_cpu_ms_per_s": round(idle_rate * 1000, 2),
            "ari_requests_per_call": round((after["ari_requests"] - before["ari_requests"]) / n, 2),
            "db_round_trips_per_call": round((after["db_round_trips"] - before["db_round_trips"]) / n, 2),
            # callrec: each kind of ARI request and SQL statement, per call (--json --samples)
            "per_call_by_query": {k: round((v - before.get("by_query", {}).get(k, 0)) / n, 2)
                                  for k, v in sorted(after.get("by_query", {}).items(), key=lambda kv: -kv[1])
                                  if v > before.get("by_query", {}).get(k, 0)},
            "per_call_events": {k: round((v - before.get("events", {}).get(k, 0)) / n, 2)
                                for k, v in sorted(after.get("events", {}).items(), key=lambda kv: -kv[1])
                                if v > before.get("events", {}).get(k, 0)},
        }

    async def at_once(self, m: int) -> dict[str, Any]:
        """``m`` calls placed at once; each hangs up just after the notice starts."""
        load0 = os.getloadavg()[0]
        calls = await asyncio.gather(*(self.short_call() for _ in range(m)))
        ids = [c.callee_id for c in calls]
        await self.done(ids)
        return {"calls": m, "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
                "latency_ms": await self.side_latencies(ids)}

    async def side_by_side(self, result: dict[str, Any]) -> None:
        """Each scenario bare, callrec, bare, callrec: a drift in the machine's load hits both alike."""
        args = self.args
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {"rate": {"bare": [], "callrec": []},
                                                            "burst": {"bare": [], "callrec": []}}
        for scenario in ("rate", "burst"):
            for side in ("bare", "callrec") * args.rounds:
                await self.start_daemon(side)
                try:
                    warm = await asyncio.gather(*(self.complete_call() for _ in range(2)))
                    await self.done(warm)
                    if scenario == "rate":
                        progress(f"{side}: {args.calls} complete calls at {args.rate:g}/s")
                        run = await self.at_rate(args.calls, args.rate)
                    else:
                        progress(f"{side}: {args.burst} calls at once")
                        run = await self.at_once(args.burst)
                finally:
                    rc = await self.stop_daemon()
                if rc not in (0, None):
                    raise BenchError(f"{side} exited with code {rc} on SIGTERM (see {DAEMON_LOG})")
                progress(f"{side}: {brief(run)}")
                runs[scenario][side].append(run)
        result["runs"] = runs
        result["figures"] = figures(runs)

    # -- speech analytics (--speech) --

    async def busy_jobs(self, count: int, seconds: float) -> list[str]:
        """Queue ``count`` recordings of ``seconds`` of real speech (stock prompts) to keep the workers busy."""
        import numpy as np
        import soundfile

        from callrec.recording.files import measure
        from callrec.store import speechjobs

        assert self.conn is not None and self.info is not None
        parts = [soundfile.read(str(self.prompt(name)), dtype="int16")[0] for name in SCRIPT]
        one = np.concatenate(parts)
        audio = np.tile(one, math.ceil(seconds * 8000 / len(one)))[:int(seconds * 8000)]
        ids = []
        for _ in range(count):
            call_id = str(uuid.uuid4())
            rel = f"bench-speech/{call_id}.wav"
            path = self.info.local_recordings_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), audio, 8000, subtype="PCM_16")
            facts = measure(path)
            await self.conn.execute(
                """INSERT INTO calls (id, door, uniqueid, consent_mode, state, started_at, ended_at, finalized_at,
                       recording_status, recording_path, recording_duration, recording_bytes, recording_sha256,
                       language)
                   VALUES ($1::uuid, 'ari', $1, 'notice', 'ended', now() - interval '1 day',
                           now() - interval '1 day', now() - interval '1 day', 'ready', $2, $3, $4, $5, 'en')""",
                call_id, rel, facts["recording_duration"], facts["recording_bytes"], facts["recording_sha256"])
            await speechjobs.enqueue(self.conn, call_id, audio_ms=round(seconds * 1000), language="en",
                                     reason="benchmark load", priority=1)
            ids.append(call_id)
        return ids

    def prompt(self, name: str) -> Path:
        assert self.info is not None
        return sandbox_mod.resolve_in_root(self.info.root, f"/usr/share/asterisk/sounds/en/{name}.wav")

    async def running_jobs(self) -> int:
        assert self.conn is not None
        return int(await self.conn.fetchval("SELECT count(*) FROM speech_jobs WHERE state = 'running'"))

    async def wait_jobs(self, where: str, timeout: float) -> None:
        assert self.conn is not None and self.daemon is not None
        deadline = time.monotonic() + timeout
        while not await self.conn.fetchval(f"SELECT {where} FROM speech_jobs"):
            if self.daemon.returncode is not None:
                raise BenchError(f"callrec serve died (exit {self.daemon.returncode})")
            if time.monotonic() > deadline:
                raise BenchError(f"speech jobs: not {where} within {timeout:g} s")
            await asyncio.sleep(0.2)

    async def transcript_ready(self) -> dict[str, Any]:
        """(d): a call whose caller speaks the script; hang-up to transcript, the queue empty."""
        assert self.tester is not None and self.conn is not None
        await self.wait_jobs("count(*) FILTER (WHERE state IN ('pending', 'running')) = 0", 900)
        call = await self.tester.place_call(args="mode=notice")
        back = await call.handed_back(timeout=60)
        await call.spoken(await call.speak(",".join(f"sound:{n}" for n in SCRIPT)), 120)
        await call.hang_up()
        await self.finalized([call.callee_id])
        call_id = back["call_id"]
        deadline = time.monotonic() + 600
        while True:
            row = await self.conn.fetchrow(
                "SELECT c.ended_at, c.recording_duration, t.transcribed_at, j.state, j.last_error "
                "FROM calls c LEFT JOIN transcripts t ON t.call_id = c.id LEFT JOIN speech_jobs j ON j.call_id = c.id "
                "WHERE c.id = $1::uuid", call_id)
            if row is not None and row["transcribed_at"] is not None:
                break
            if row is not None and row["state"] == "failed":
                raise BenchError(f"the transcription failed: {row['last_error']}")
            if time.monotonic() > deadline:
                raise BenchError("no transcript within 600 s")
            await asyncio.sleep(0.1)
        length = float(row["recording_duration"])
        ready = (row["transcribed_at"] - row["ended_at"]).total_seconds()
        return {"call_s": round(length, 1), "ready_after_hangup_s": round(ready, 2),
                "target_s": round(2 * length + 30, 1)}

    async def speech_run(self, result: dict[str, Any]) -> None:
        args = self.args
        progress("warm-up: 2 calls")
        await self.sequential(2)
        progress("(d) transcript ready after hang-up (queue empty)")
        result["ready"] = await self.transcript_ready()
        progress(f"(c) {args.sequential} sequential calls, transcription workers idle")
        assert await self.running_jobs() == 0
        result["idle"] = summary(await self.sequential(args.sequential))
        progress(f"(c) queueing {SPEECH_WORKERS * 2} recordings of {args.busy_seconds:g} s to keep both workers busy")
        await self.busy_jobs(SPEECH_WORKERS * 2, args.busy_seconds)
        await self.wait_jobs(f"count(*) FILTER (WHERE state = 'running' AND progress > 0) = {SPEECH_WORKERS}", 300)
        progress(f"(c) {args.sequential} sequential calls, {SPEECH_WORKERS} workers busy")
        result["busy"] = summary(await self.sequential(args.sequential))
        busy_after = await self.running_jobs()
        if busy_after < SPEECH_WORKERS:
            raise BenchError(f"only {busy_after} worker(s) still busy at the end of the busy phase: raise "
                             "--busy-seconds")
        result["busy_workers"] = SPEECH_WORKERS


def speech_markdown(result: dict[str, Any]) -> str:
    m, idle, busy, ready = result["machine"], result["idle"], result["busy"], result["ready"]
    return "\n".join([
        f"Machine: {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), Linux {m['kernel']}, "
        f"Python {m['python']}, {result['asterisk']}, PostgreSQL on the same host; `[speech] workers = "
        f"{result['busy_workers']}`, niced.",
        "",
        "| Notice latency (StasisStart → PlaybackStarted), same run | calls | median | p95 | max |",
        "|---|---:|---:|---:|---:|",
        f"| transcription workers idle | {idle['calls']} | {idle['median_ms']:.0f} ms | {idle['p95_ms']:.0f} ms "
        f"| {idle['max_ms']:.0f} ms |",
        f"| {result['busy_workers']} workers busy transcribing | {busy['calls']} | {busy['median_ms']:.0f} ms "
        f"| {busy['p95_ms']:.0f} ms | {busy['max_ms']:.0f} ms |",
        "",
        "| Transcript ready after hang-up (queue empty) | call | ready after | target (2× call + 30 s) |",
        "|---|---:|---:|---:|",
        f"| a call of stock prompts, mono | {ready['call_s']:.1f} s | {ready['ready_after_hangup_s']:.1f} s "
        f"| {ready['target_s']:.0f} s |",
    ])


def brief(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    text = f"notice p50 {percentile(lat, 50):.0f} ms, p99 {percentile(lat, 99):.0f} ms"
    if "cpu_ms_per_call" in run:
        text += (f", CPU {run['cpu_ms_per_call']:.1f} ms/call, ARI {run['ari_requests_per_call']:.1f}/call, "
                 f"PostgreSQL {run['db_round_trips_per_call']:.1f}/call")
    if run.get("recordings_not_ready"):
        text += f", {run['recordings_not_ready']} recording(s) not ready"
    return text + f", load {run['load_avg_1m'][0]:.2f}"


def figures(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Each figure for both sides (the runs of a side pooled) and its ratio callrec / bare."""
    out: list[dict[str, Any]] = []

    def add(name: str, unit: str, bare: float, callrec: float) -> None:
        ratio = round(callrec / bare, 2) if bare else None
        out.append({"name": name, "unit": unit, "bare": round(bare, 2), "callrec": round(callrec, 2),
                    "ratio": ratio})

    def pooled(scenario: str, side: str) -> list[float]:
        return [x for run in runs[scenario][side] for x in run["latency_ms"]]

    def mean(scenario: str, side: str, key: str) -> float:
        return statistics.fmean(run[key] for run in runs[scenario][side])

    rate = runs["rate"]["bare"][0]
    for p in (50, 95, 99):
        add(f"notice latency at {rate['rate_per_s']:g} calls/s, complete calls, p{p}", "ms",
            percentile(pooled("rate", "bare"), p), percentile(pooled("rate", "callrec"), p))
    burst = runs["burst"]["bare"][0]
    for p in (50, 95, 99):
        add(f"notice latency, {burst['calls']} calls at once, p{p}", "ms",
            percentile(pooled("burst", "bare"), p), percentile(pooled("burst", "callrec"), p))
    add("daemon CPU per complete call (net of idle)", "ms", mean("rate", "bare", "cpu_ms_per_call"),
        mean("rate", "callrec", "cpu_ms_per_call"))
    add("ARI requests per call", "", mean("rate", "bare", "ari_requests_per_call"),
        mean("rate", "callrec", "ari_requests_per_call"))
    add("PostgreSQL round trips per call", "", mean("rate", "bare", "db_round_trips_per_call"),
        mean("rate", "callrec", "db_round_trips_per_call"))
    return out


def markdown(result: dict[str, Any]) -> str:
    m, runs = result["machine"], result["runs"]
    loads = [run["load_avg_1m"][0] for sc in runs.values() for side in sc.values() for run in side]
    lines = [
        f"Machine: {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), Linux {m['kernel']}, "
        f"Python {m['python']}, {result['asterisk']}, PostgreSQL on the same host; 1-minute load average at the "
        f"start of each run {min(loads):.2f}-{max(loads):.2f}.  Runs alternate bare, callrec, bare, callrec.",
        "",
        "| figure | bare app | callrec | ratio |",
        "|---|---:|---:|---:|",
    ]
    for f in result["figures"]:
        unit = f" {f['unit']}" if f["unit"] else ""
        ratio = f"{f['ratio']:.2f}x" if f["ratio"] is not None else "-"
        lines.append(f"| {f['name']} | {f['bare']:g}{unit} | {f['callrec']:g}{unit} | {ratio} |")
    lines += ["", "| run | " + " | ".join(["side", "figures"]) + " |", "|---|---|---|"]
    for scenario, sides in runs.items():
        for i in range(len(sides["bare"])):
            for side in ("bare", "callrec"):
                lines.append(f"| {scenario} #{i + 1} | {side} | {brief(sides[side][i])} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    bench = Bench(args)
    result: dict[str, Any] = {"machine": machine()}
    failed = None
    try:
        await bench.setup()
        result["asterisk"] = (await asyncio.to_thread(bench.box.cli, "core show version")).split(" built ")[0].strip()
        if args.speech:
            await bench.speech_run(result)
        else:
            await bench.side_by_side(result)
    except (BenchError, sandbox_mod.SandboxError, testdb.TestDBError) as exc:
        failed = str(exc)
    except AssertionError as exc:
        failed = str(exc) or "assertion failed"
    except (OSError, asyncpg.PostgresError, aiohttp.ClientError, TimeoutError, AriError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        rc = await bench.teardown()
        if rc not in (0, None) and failed is None:
            failed = f"callrec serve exited with code {rc} on SIGTERM (see {DAEMON_LOG})"
    if failed:
        print(f"bench: FAILED: {failed}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result if args.samples else {k: v for k, v in result.items() if k != "runs"}, indent=2))
    else:
        print(speech_markdown(result) if args.speech else markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1200,
                        help="complete calls per run of the rate scenario (default 1200: 60 s at 20/s)")
    parser.add_argument("--rate", type=float, default=20.0, help="calls placed per second (default 20)")
    parser.add_argument("-m", "--burst", type=int, default=50, help="calls placed at once (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="bare/callrec pairs per scenario (default 2)")
    parser.add_argument("-n", "--sequential", type=int, default=30,
                        help="--speech: sequential calls (default 30)")
    parser.add_argument("--hold", type=float, default=0.5,
                        help="calls at once: seconds a caller stays after the notice starts (default 0.5)")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU baseline per run (default 3)")
    parser.add_argument("--samples", action="store_true", help="--json: every run with its samples too")
    parser.add_argument("--json", action="store_true", help="print JSON (with every sample) instead of Markdown")
    parser.add_argument("--keep", action="store_true", help="leave a sandbox this run started running")
    parser.add_argument("--speech", action="store_true",
                        help="speech analytics on (2 workers): notice latency idle vs busy workers, and the "
                             "transcript's delay after hang-up, instead of (a) and (b)")
    parser.add_argument("--busy-seconds", type=float, default=600,
                        help="--speech: length of each recording queued to keep the workers busy (default 600)")
    parser.add_argument("--finalize", action="store_true",
                        help="instead: a 1-hour recording finalized vs sha256sum (benchmarks/finalize_bench.py)")
    args, rest = parser.parse_known_args(argv)
    if args.finalize:
        import finalize_bench  # beside this file; needs PostgreSQL, not Asterisk

        return finalize_bench.main([*rest, *(["--json"] if args.json else [])])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if min(args.sequential, args.burst, args.calls, args.rounds) < 1 or args.rate <= 0:
        parser.error("counts must be at least 1")
    if os.geteuid() != 0:
        print("bench: must run as root (the sandbox Asterisk runs in a chroot)", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
