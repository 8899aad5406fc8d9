#!/usr/bin/env python3
"""How fast the caller hears the notice, and what a call costs the daemon in CPU.

    .venv/bin/python benchmarks/notice_latency.py            # Markdown table for the README
    .venv/bin/python benchmarks/notice_latency.py --json     # the same figures (and samples) as JSON
    .venv/bin/python benchmarks/notice_latency.py -n 100 -m 50 -k 100 --keep

Runs as root against the sandbox Asterisk 22 (tools/sandbox.py; reused when it already runs) and a
throwaway database (created, dropped at the end), with ``callrec serve`` as a child process - the
way it runs in production - and real Local-channel calls placed by tools/caller.py.

(a) Notice latency: from the call's StasisStart to the notice's PlaybackStarted, both stamped by
    Asterisk (the call log's ``started_at`` and ``notice_started_at`` are those event timestamps, so
    no clock of ours is involved; resolution 1 ms).  Measured over N calls one at a time, then over
    a burst of M calls placed at once.  Each call hangs up as soon as the notice plays.
(b) Daemon CPU per call: user+system time of the daemon process (all threads, /proc/<pid>/stat)
    over K complete calls - notice, MixMonitor, a caller who talks 1.4 s, hang-up, the WAV measured
    and hashed, every call-log write - run in waves of up to C simultaneous calls.  The daemon's
    idle CPU over the same wall time is measured first and reported (and subtracted) separately.
    Asterisk's own CPU over the batch is shown for scale.

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

try:
    import aiohttp
    import asyncpg
    from caller import PlacedCall, Tester

    from callrec.store import migrate
except ImportError as exc:  # pragma: no cover - run with the wrong interpreter
    sys.exit(f"bench: {exc}; run me with the project's venv: make venv && .venv/bin/python {sys.argv[0]}")

import sandbox as sandbox_mod  # noqa: E402
import testdb  # noqa: E402

APP = "callrec"
WORK_DIR = REPO / "var" / "bench"
CONFIG = WORK_DIR / "callrec.toml"
DAEMON_LOG = WORK_DIR / "callrec.log"
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
    exe = Path(sys.executable).parent / "callrec"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "callrec"]
    return [*base, "-c", str(CONFIG), "serve"]


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
        DAEMON_LOG.unlink(missing_ok=True)
        with open(DAEMON_LOG, "ab") as log:
            self.daemon = await asyncio.create_subprocess_exec(
                *serve_cmd(), stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + (180 if self.args.speech else 20)  # the first start joins the model
        while True:
            if self.daemon.returncode is not None:
                raise BenchError(f"callrec serve exited with {self.daemon.returncode}:\n{log_text()[-2000:]}")
            text = log_text()
            if "ARI events connected" in text and "AMI logged in" in text and await app_registered(self.http, info):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"callrec serve not ready in time:\n{log_text()[-2000:]}")
            await asyncio.sleep(0.1)
        progress(f"callrec serve is up (pid {self.daemon.pid})")
        self.tester = Tester(info.ari_url, info.tester_ari_user, info.tester_ari_password)
        await self.tester.start()

    async def teardown(self) -> int | None:
        rc = None
        if self.tester is not None:
            await self.tester.close()
        if self.http is not None:
            await self.http.close()
        if self.conn is not None:
            await self.conn.close()
        if self.daemon is not None:
            if self.daemon.returncode is None:
                self.daemon.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.daemon.wait(), 15)
                except TimeoutError:
                    self.daemon.kill()
                    await self.daemon.wait()
            rc = self.daemon.returncode
            progress(f"callrec serve stopped (exit {rc})")
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

    async def burst(self, m: int) -> list[float]:
        calls = await asyncio.gather(*(self.short_call() for _ in range(m)))
        ids = [c.callee_id for c in calls]
        await self.finalized(ids)
        return await self.latencies(ids)

    async def full_call(self) -> str:
        """Notice, implied consent, MixMonitor, the caller talks, hang-up, the WAV finalized."""
        assert self.tester is not None
        call = await self.tester.place_call(args="mode=notice")
        back = await call.handed_back(timeout=60)
        if back.get("consent") != "implied" or not back.get("recording"):
            raise BenchError(f"unexpected hand-back {back}")
        await call.spoken(await call.speak(SPEECH))
        await call.hang_up()
        return call.callee_id

    async def cpu(self, k: int, concurrency: int, idle_seconds: float) -> dict[str, Any]:
        assert self.daemon is not None and self.conn is not None
        pid = self.daemon.pid
        asterisk = self.box._asterisk_pids()
        c0 = cpu_seconds(pid)
        await asyncio.sleep(idle_seconds)
        idle_rate = (cpu_seconds(pid) - c0) / idle_seconds
        c0, t0 = cpu_seconds(pid), time.monotonic()
        a0 = sum(cpu_seconds(p) for p in asterisk)
        ids: list[str] = []
        for start in range(0, k, concurrency):
            wave = await asyncio.gather(*(self.full_call() for _ in range(min(concurrency, k - start))))
            await self.finalized(wave)
            ids.extend(wave)
        wall = time.monotonic() - t0
        used = cpu_seconds(pid) - c0
        a_used = sum(cpu_seconds(p) for p in asterisk) - a0
        bad = await self.conn.fetchval(
            "SELECT count(*) FROM calls WHERE uniqueid = ANY($1::text[]) AND recording_status <> 'ready'", ids)
        if bad:
            raise BenchError(f"{bad} of {k} recorded calls did not end with a ready recording")
        return {
            "calls": k,
            "concurrency": concurrency,
            "wall_s": round(wall, 2),
            "daemon_cpu_s": round(used, 2),
            "daemon_idle_ms_per_s": round(idle_rate * 1000, 2),
            "daemon_cpu_ms_per_call": round(used * 1000 / k, 1),
            "daemon_cpu_ms_per_call_net_of_idle": round(max(0.0, used - idle_rate * wall) * 1000 / k, 1),
            "asterisk_cpu_ms_per_call": round(a_used * 1000 / k, 1),
            "clock_tick_ms": round(1000 / CLK_TCK, 1),
        }

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


def markdown(result: dict[str, Any]) -> str:
    seq, burst, cpu, m = result["sequential"], result["burst"], result["cpu"], result["machine"]
    idle = (f"{cpu['daemon_idle_ms_per_s']:.1f} ms CPU per second" if cpu["daemon_idle_ms_per_s"]
            else f"below the {cpu['clock_tick_ms'] / result['idle_s']:.0f} ms/s it can resolve")
    lines = [
        f"Machine: {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), Linux {m['kernel']}, "
        f"Python {m['python']}, {result['asterisk']}, PostgreSQL on the same host.",
        "",
        "| Notice latency (StasisStart → PlaybackStarted, Asterisk's timestamps) | calls | median | p95 | max |",
        "|---|---:|---:|---:|---:|",
        f"| one call at a time | {seq['calls']} | {seq['median_ms']:.0f} ms | {seq['p95_ms']:.0f} ms "
        f"| {seq['max_ms']:.0f} ms |",
        f"| burst: {burst['calls']} calls placed at once | {burst['calls']} | {burst['median_ms']:.0f} ms "
        f"| {burst['p95_ms']:.0f} ms | {burst['max_ms']:.0f} ms |",
        "",
        "| CPU per complete call (notice, MixMonitor, 1.4 s of talk, WAV measured, call log) | value |",
        "|---|---:|",
        f"| callrec daemon, {cpu['calls']} calls in waves of {cpu['concurrency']} | "
        f"{cpu['daemon_cpu_ms_per_call']:.1f} ms |",
        f"| callrec daemon, net of its idle cost ({idle}) | "
        f"{cpu['daemon_cpu_ms_per_call_net_of_idle']:.1f} ms |",
        f"| Asterisk, for scale (both Local legs, playback, MixMonitor, the test caller's event feed) | "
        f"{cpu['asterisk_cpu_ms_per_call']:.1f} ms |",
    ]
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
            progress("warm-up: 2 calls")
            await bench.sequential(2)
            progress(f"(a) {args.sequential} sequential calls")
            result["sequential"] = summary(await bench.sequential(args.sequential))
            progress(f"(a) burst of {args.burst} simultaneous calls")
            result["burst"] = summary(await bench.burst(args.burst))
            progress(f"(b) daemon CPU: {args.idle:g} s idle, then {args.cpu_calls} complete calls "
                     f"in waves of {args.concurrency}")
            result["idle_s"] = args.idle
            result["cpu"] = await bench.cpu(args.cpu_calls, args.concurrency, args.idle)
    except (BenchError, sandbox_mod.SandboxError, testdb.TestDBError) as exc:
        failed = str(exc)
    except AssertionError as exc:
        failed = str(exc) or "assertion failed"
    except (OSError, asyncpg.PostgresError, aiohttp.ClientError, TimeoutError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        rc = await bench.teardown()
        if rc not in (0, None) and failed is None:
            failed = f"callrec serve exited with code {rc} on SIGTERM (see {DAEMON_LOG})"
    if failed:
        print(f"bench: FAILED: {failed}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(speech_markdown(result) if args.speech else markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--sequential", type=int, default=30, help="sequential calls (default 30)")
    parser.add_argument("-m", "--burst", type=int, default=20, help="simultaneous calls in the burst (default 20)")
    parser.add_argument("-k", "--cpu-calls", type=int, default=40, help="complete calls for the CPU figure (40)")
    parser.add_argument("-c", "--concurrency", type=int, default=20, help="CPU batch: calls at once (default 20)")
    parser.add_argument("--hold", type=float, default=0.5,
                        help="(a): seconds a caller stays after the notice starts (default 0.5)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU baseline (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON (with every sample) instead of Markdown")
    parser.add_argument("--keep", action="store_true", help="leave a sandbox this run started running")
    parser.add_argument("--speech", action="store_true",
                        help="speech analytics on (2 workers): notice latency idle vs busy workers, and the "
                             "transcript's delay after hang-up, instead of (a) and (b)")
    parser.add_argument("--busy-seconds", type=float, default=600,
                        help="--speech: length of each recording queued to keep the workers busy (default 600)")
    args = parser.parse_args(argv)
    if min(args.sequential, args.burst, args.cpu_calls, args.concurrency) < 1:
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
