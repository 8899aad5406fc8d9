#!/usr/bin/env python3
"""The callrec demo: real calls through a real Asterisk 22, a real PostgreSQL and `callrec serve`.

    .venv/bin/python tools/demo.py            # as root (the sandbox Asterisk runs in a chroot)
    .venv/bin/python tools/demo.py --keep     # leave the sandbox Asterisk running afterwards

What it does, narrating every step:

1. claims the sandbox slot (``CALLREC_SANDBOX_SLOT``, default 0) and fails at once, naming the other
   run, when a test session, a benchmark or another demo holds it; then starts the sandbox Asterisk
   (tools/sandbox.py; built first if missing, about a minute) - or reuses one that already runs (left
   by ``sandbox.py up`` or ``--keep``), and then leaves it running;
2. finds or starts a PostgreSQL (tools/testdb.py), creates database ``callrec_demo`` (or reuses it
   and clears its call log);
3. writes ``var/demo/callrec.toml`` and runs ``callrec migrate`` and ``callrec check``;
4. starts ``callrec serve`` as a child process (log: ``var/demo/callrec.log``) and waits until it is
   connected to ARI and AMI;
5. places seven calls with tools/caller.py, one after another: notice mode, opt-out (Russian caller
   presses 9), opt-in granted (1), opt-in with no key, a hang-up during the notice, a hostile
   caller ID, and a Russian caller through the FastAGI door; each is checked against the call log
   once the daemon has finalized it;
6. prints ``callrec calls``, the recordings on disk, and one call's consent evidence;
7. the ops side: adds a console user, logs in to the ops API, searches and starts a listen (a Range
   request), then shows the audit trail that left, ``callrec verify`` and ``callrec policy explain``;
8. speech analytics (``[speech] enabled``): waits for call a's transcript, prints it (words and times),
   ``callrec speech status``, and a keyword search in another word form that finds the call and the
   moment (SQL on the full-text index);
9. stops the daemon with SIGTERM (it must exit 0) and the sandbox only if it started it (unless
   ``--keep``): never an Asterisk it did not start.

The slot stays claimed until the demo exits, so a test session started meanwhile on the same slot
fails at once instead of restarting Asterisk under the demo.  The dialplan sends every call to the one
ARI app ``callrec``: the demo also refuses to start while another client (a ``callrec serve`` started
by hand) holds that app.

Exit status 0 when every step and every call came out as expected; 1 with the reason otherwise (a
call that comes out wrong is reported and the demo goes on, so all the evidence is still shown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

try:
    import aiohttp
    import asyncpg
    import numpy as np
    import soundfile
    from caller import PlacedCall, Tester

    from callrec.display import safe_text
except ImportError as exc:  # pragma: no cover - run with the wrong interpreter
    sys.exit(f"demo: {exc}; run me with the project's venv: make venv && .venv/bin/python tools/demo.py")

import sandbox as sandbox_mod  # noqa: E402
import testdb  # noqa: E402

DB_NAME = "callrec_demo"
DEMO_DIR = REPO / "var" / "demo"
CONFIG = DEMO_DIR / "callrec.toml"
DAEMON_LOG = DEMO_DIR / "callrec.log"
DAEMON_PID = DEMO_DIR / "callrec.pid"
DECISION_WINDOW = 3.0
APP = "callrec"
HOSTILE_NAME = "Robert'); DROP TABLE calls;-- \x1b[31m😀"
HOSTILE_NUMBER = "+1 (555) 0100'--"
SPEECH = "sound:vm-intro"  # 5.6 s of a real voice: "the caller talks"
SHORT_SPEECH = "sound:hello-world"  # 1.4 s
FINALIZE_TIMEOUT = 30.0


class DemoError(Exception):
    """A step failed: the message says which and why."""


# Results that came out differently from what callrec promises; the demo goes on and exits 1 at the end.
MISMATCHES: list[str] = []


def mismatch(text: str) -> None:
    MISMATCHES.append(text)
    say(f"   NOT AS EXPECTED ✗ {text}")


# ------------------------------------------------------------------------------------------ output
T0 = time.monotonic()


def say(text: str = "") -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {text}" if text else "", flush=True)


def block(text: str, indent: str = "         ") -> None:
    for line in text.rstrip("\n").splitlines():
        print(indent + line, flush=True)


def stamp(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if value else "-"


# ------------------------------------------------------------------------------------------ steps
def with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The FastAGI door and the ops API (console) listen on free local ports, chosen in write_config().
PORTS: dict[str, int] = {}
DEMO_USER, DEMO_PASSWORD = "qa-supervisor", "demo-" + os.urandom(6).hex()


def demo_recordings(info: sandbox_mod.SandboxInfo) -> Path:
    """The demo's own recordings folder (host view), emptied with its database each run, so
    `callrec verify` at the end speaks of this run's calls only (tests share the parent folder)."""
    return info.local_recordings_dir / "demo"


def write_config(info: sandbox_mod.SandboxInfo, dsn: str) -> None:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(demo_recordings(info), ignore_errors=True)
    shutil.rmtree(DEMO_DIR / "journal", ignore_errors=True)  # the database is made afresh: so is its journal
    demo_recordings(info).mkdir(parents=True)
    PORTS.update(agi=free_port(), http=free_port())
    text = sandbox_mod.callrec_config(
        info, dsn,
        header=(f"callrec demo config, written by tools/demo.py: the sandbox Asterisk and database {DB_NAME}.\n"
                "Passwords are in the file because everything here is local and throwaway; in production use\n"
                "CALLREC_ASTERISK_ARI_PASSWORD / CALLREC_ASTERISK_AMI_PASSWORD instead."),
        asterisk={"app": APP}, notice={"decision_window": DECISION_WINDOW}, policy={"mode": "notice"},
        recordings={"dir": f"{info.recordings_dir}/demo", "local_dir": str(demo_recordings(info))},
        agi={"listen": f"127.0.0.1:{PORTS['agi']}"},
        http={"enabled": True, "listen": f"127.0.0.1:{PORTS['http']}"},
        database={"journal_dir": str(DEMO_DIR / "journal")},
        # Speech analytics: one niced worker; the shipped model is joined once into var/demo (about 150 MB).
        speech={"enabled": True, "workers": 1, "cache_dir": str(DEMO_DIR / "speech-cache")},
        log={"level": "info"})
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(CONFIG, 0o600)


def callrec_cmd(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "callrec"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "callrec"]
    return [*base, "-c", str(CONFIG), *args]


async def run_cli(*args: str, show: bool = True, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *callrec_cmd(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DemoError(f"`callrec {' '.join(args)}` did not finish within 60 s") from None
    text = out.decode("utf-8", "replace")
    if show:
        block(text)
    if proc.returncode != 0:
        if not show:
            block(text)
        hint = ""
        if "ImportError" in text or "ModuleNotFoundError" in text:
            hint = "; the venv's install of callrec looks stale or broken: run `make venv`"
        raise DemoError(f"`callrec {' '.join(args)}` failed (exit {proc.returncode}){hint}")
    return text


async def prepare_database(admin_dsn: str) -> str:
    """A fresh demo database each run: the demo shows `callrec migrate` creating the schema."""
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    say(f"database {DB_NAME}: created (an earlier demo's is dropped)")
    dsn = with_db(admin_dsn, DB_NAME)
    return dsn


async def app_registered(http: aiohttp.ClientSession, info: sandbox_mod.SandboxInfo) -> bool:
    async with http.get(f"{info.ari_url}/ari/applications/{APP}") as resp:
        return resp.status == 200


def log_text() -> str:
    try:
        return DAEMON_LOG.read_text(errors="replace")
    except OSError:
        return ""


def log_tail(lines: int = 25) -> str:
    return "\n".join(log_text().splitlines()[-lines:])


def stop_leftover_daemon() -> None:
    """A `callrec serve` an earlier, interrupted demo started (its pid file is still there)."""
    try:
        pid = int(DAEMON_PID.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        argv = []
    if str(CONFIG).encode() in argv and b"serve" in argv:
        say(f"stopping the daemon (pid {pid}) an earlier demo left running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    DAEMON_PID.unlink(missing_ok=True)


def our_asterisk(box: sandbox_mod.Sandbox) -> bool:
    """The Asterisk running now is the one this process started (not a restart by someone else)."""
    proc = box._proc
    return proc is not None and proc.poll() is None and proc.pid in box._asterisk_pids()


class Daemon:
    """`callrec serve` as a child process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        DAEMON_LOG.unlink(missing_ok=True)
        with open(DAEMON_LOG, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *callrec_cmd("serve"), stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True)
        DAEMON_PID.write_text(f"{self.proc.pid}\n")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def wait_ready(self, http: aiohttp.ClientSession, info: sandbox_mod.SandboxInfo,
                         timeout: float = 120) -> None:  # the first start joins the speech model
        deadline = time.monotonic() + timeout
        while True:
            if self.exited() is not None:
                raise DemoError(f"`callrec serve` exited with code {self.exited()} during start-up; "
                                f"{DAEMON_LOG} ends with:\n{log_tail()}")
            text = log_text()
            if "ARI events connected" in text and "AMI logged in" in text and await app_registered(http, info):
                return
            if time.monotonic() > deadline:
                raise DemoError(f"`callrec serve` not connected to ARI and AMI within {timeout:g} s; "
                                f"{DAEMON_LOG} ends with:\n{log_tail()}")
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait; SIGKILL after `timeout` (then the exit code is negative)."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        DAEMON_PID.unlink(missing_ok=True)
        return self.proc.returncode if self.proc.returncode is not None else 0


# ------------------------------------------------------------------------------------------ calls
class CallLog:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn, timeout=10)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def finalized(self, uniqueid: str, daemon: Daemon, timeout: float = FINALIZE_TIMEOUT) -> asyncpg.Record:
        """The call's row once the daemon has finalized it (recording measured, if any)."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while True:
            row = await self.conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", uniqueid)
            if row is not None and row["finalized_at"] is not None:
                return row
            if daemon.exited() is not None:
                raise DemoError(f"`callrec serve` died (exit {daemon.exited()}); log:\n{log_tail()}")
            if time.monotonic() > deadline:
                state = "no row at all" if row is None else f"state={row['state']} recording={row['recording_status']}"
                raise DemoError(f"call {uniqueid} not finalized within {timeout:g} s ({state})")
            await asyncio.sleep(0.1)


def prompt_name(media_uri: str) -> str:
    """"sound:/usr/share/asterisk/sounds/callrec/en/notice" -> "en/notice"."""
    return "/".join(media_uri.split("/")[-2:])


def outcome(r: asyncpg.Record) -> str:
    rec = r["recording_status"]
    if r["recording_duration"]:
        rec += f" {r['recording_duration']:.1f} s, {r['recording_rms_dbfs']:.1f} dBFS"
    key = f", key {r['consent_key']}" if r["consent_key"] else ""
    return f"consent={r['consent']}{key}, notice completed={r['notice_completed']}, recording={rec}"


def expect(label: str, r: asyncpg.Record, **wanted: Any) -> str | None:
    wrong = {k: (r[k], v) for k, v in wanted.items() if r[k] != v}
    if not wrong:
        return None
    detail = ", ".join(f"{k}={got!r} (expected {want!r})" for k, (got, want) in wrong.items())
    if r["warnings"]:
        detail += f"; row warnings: {list(r['warnings'])}"
    return f"call {label}: {detail}"


async def place(tester: Tester, label: str, who: str, **kw: Any) -> PlacedCall:
    call = await tester.place_call(**kw)
    await call.answered()
    say(f"   {who} calls 100 (channel {call.callee_id[:10]}…)")
    return call


async def notice_started(call: PlacedCall) -> None:
    event = await call.notice_started()
    say(f"   notice starts: {prompt_name(event['playback']['media_uri'])}")


async def handed_back(call: PlacedCall, timeout: float = 30) -> dict[str, Any]:
    back = await call.handed_back(timeout)
    rec = back.get("recording") or "(none)"
    say(f"   back in the dialplan: CALLREC_CONSENT={back.get('consent')}, CALLREC_RECORDING={rec}")
    return back


async def talk(call: PlacedCall, media: str, seconds: str) -> None:
    say(f"   caller talks ({seconds} of speech)")
    await call.spoken(await call.speak(media))


async def hang_up(call: PlacedCall, what: str = "caller hangs up") -> None:
    await call.hang_up()
    say(f"   {what}")


async def done(log: CallLog, daemon: Daemon, call: PlacedCall, label: str, verdict: str,
               **wanted: Any) -> asyncpg.Record:
    r = await log.finalized(call.callee_id, daemon)
    wrong = expect(label, r, **wanted)
    if wrong:
        say(f"   call log: {outcome(r)}")
        mismatch(wrong)
    else:
        say(f"   call log: {outcome(r)} -> {verdict} ✓")
    return r


async def scenario_a(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("a) English caller, notice mode: hears the notice, talks, hangs up")
    call = await place(tester, "a", '"Alice Example" <5551001>', args="mode=notice",
                       caller_id='"Alice Example" <5551001>')
    await notice_started(call)
    await handed_back(call)
    await talk(call, SPEECH, "5.6 s")
    await hang_up(call)
    return await done(log, daemon, call, "a", "recorded", consent_mode="notice", consent="implied",
                      notice_completed=True, recording_status="ready")


async def scenario_b(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("b) Russian caller, opt-out mode: presses 9 during the notice")
    call = await place(tester, "b", '"Ivan Petrov" <74950001>', lang="ru", args="mode=opt-out",
                       caller_id='"Ivan Petrov" <74950001>')
    await notice_started(call)
    await asyncio.sleep(1.5)  # a moment into the notice
    await call.press("9")
    say("   caller presses 9")
    back = await handed_back(call)
    if back.get("consent") != "declined" or back.get("recording"):
        mismatch(f"call b: the dialplan got {back}")
    await hang_up(call)
    return await done(log, daemon, call, "b", "not recorded", consent_mode="opt-out", consent="declined",
                      consent_key="9", notice_completed=False, recording_status="none", recording_path=None,
                      language="ru")


async def scenario_c(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("c) English caller, opt-in mode: presses 1 after the notice")
    call = await place(tester, "c", '"Carol Example" <5551003>', args="mode=opt-in",
                       caller_id='"Carol Example" <5551003>')
    await notice_started(call)
    await call.playback_finished()
    say("   notice over; the decision window is open")
    await call.press("1")
    say("   caller presses 1")
    await handed_back(call)
    await talk(call, SHORT_SPEECH, "1.4 s")
    await hang_up(call)
    return await done(log, daemon, call, "c", "recorded", consent_mode="opt-in", consent="granted",
                      consent_key="1", notice_completed=True, recording_status="ready")


async def scenario_d(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say(f"d) English caller, opt-in mode: presses nothing ({DECISION_WINDOW:g} s window)")
    call = await place(tester, "d", '"Dave Example" <5551004>', args="mode=opt-in",
                       caller_id='"Dave Example" <5551004>')
    await notice_started(call)
    await call.playback_finished()
    say("   notice over; caller stays silent")
    back = await handed_back(call)
    if back.get("consent") != "not_given" or back.get("recording"):
        mismatch(f"call d: the dialplan got {back}")
    await hang_up(call)
    return await done(log, daemon, call, "d", "not recorded", consent_mode="opt-in", consent="not_given",
                      consent_key=None, recording_status="none", recording_path=None)


async def scenario_e(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("e) caller hangs up in the middle of the notice")
    call = await place(tester, "e", '"Erin Example" <5551005>', args="mode=notice",
                       caller_id='"Erin Example" <5551005>')
    await notice_started(call)
    await asyncio.sleep(1.5)
    await hang_up(call, "caller hangs up 1.5 s into the notice")
    return await done(log, daemon, call, "e", "abandoned, not recorded", consent="abandoned",
                      notice_completed=False, recording_status="none", recording_path=None)


async def scenario_f(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("f) a caller with a hostile caller ID name")
    shown = safe_text(HOSTILE_NAME)
    call = await place(tester, "f", f'"{shown}" <{HOSTILE_NUMBER}>', args="mode=notice",
                       variables={"_CALLREC_TEST_SET_CID": "1", "_CALLREC_TEST_CID_NAME": HOSTILE_NAME,
                                  "_CALLREC_TEST_CID_NUM": HOSTILE_NUMBER})
    await notice_started(call)
    await handed_back(call)
    await talk(call, SHORT_SPEECH, "1.4 s")
    await hang_up(call)
    r = await done(log, daemon, call, "f", "recorded", consent="implied", recording_status="ready")
    if r["caller_name"] != HOSTILE_NAME or r["caller_number"] != HOSTILE_NUMBER:
        mismatch(f"call f: caller ID not stored verbatim: {r['caller_name']!a} <{r['caller_number']!a}>")
        return r
    assert log.conn is not None
    tables = await log.conn.fetchval("SELECT count(*) FROM calls")
    say(f"   stored verbatim ({len(r['caller_name'])} characters, equal to what was sent), shown escaped: "
        f"\"{safe_text(r['caller_name'])}\"; calls table intact ({tables} rows) ✓")
    return r


async def scenario_g(tester: Tester, log: CallLog, daemon: Daemon) -> asyncpg.Record:
    say("g) Russian caller through the FastAGI door (AGI(agi://...) in the dialplan), opt-out mode, stays on")
    call = await place(tester, "g", '"Olga Ivanova" <74950007>', lang="ru", args="mode=opt-out",
                       caller_id='"Olga Ivanova" <74950007>', context="callrec-test-agi",
                       variables={"_CALLREC_AGI_SERVER": f"127.0.0.1:{PORTS['agi']}"})
    back = await handed_back(call)
    if back.get("consent") != "implied" or not back.get("recording"):
        mismatch(f"call g: the dialplan got {back}")
    await talk(call, SHORT_SPEECH, "1.4 s")
    await hang_up(call)
    return await done(log, daemon, call, "g", "recorded", door="agi", consent_mode="opt-out", consent="implied",
                      notice_completed=True, recording_status="ready", language="ru")


SCENARIOS = (scenario_a, scenario_b, scenario_c, scenario_d, scenario_e, scenario_f, scenario_g)
TRANSCRIPT_TIMEOUT = 180.0
KEYWORD = "messages"  # call a's caller said "message": another word form finds it


async def speech_tour(log: CallLog, daemon: Daemon, r: asyncpg.Record) -> None:
    """Call a's transcript (made in the background by the daemon's worker), the queue, a keyword search."""
    assert log.conn is not None
    call_id = str(r["id"])
    say("speech analytics: waiting for call a's transcript (queued when its recording was finalized)")
    deadline = time.monotonic() + TRANSCRIPT_TIMEOUT
    while True:
        job = await log.conn.fetchrow("SELECT state, progress, last_error FROM speech_jobs WHERE call_id = $1",
                                      r["id"])
        if job is not None and job["state"] in ("done", "failed"):
            break
        if daemon.exited() is not None:
            raise DemoError(f"`callrec serve` died (exit {daemon.exited()}); log:\n{log_tail()}")
        if time.monotonic() > deadline:
            raise DemoError(f"no transcript of call a within {TRANSCRIPT_TIMEOUT:g} s (job: "
                            f"{dict(job) if job else 'none'})")
        await asyncio.sleep(0.2)
    if job["state"] != "done":
        mismatch(f"call a: transcription failed: {job['last_error']}")
        return
    words = await log.conn.fetch(
        "SELECT s.speaker, w->>0 AS word, (w->>1)::int AS start_ms FROM transcript_segments s, "
        "jsonb_array_elements(s.words) w WHERE s.call_id = $1 ORDER BY s.seq, (w->>1)::int", r["id"])
    say(f"transcript of call a ({len(words)} words; start in seconds, speaker, word):")
    block("\n".join(f"{w['start_ms'] / 1000:6.2f}  {w['speaker']:6}  {safe_text(w['word'].strip(), 40)}"
                     for w in words))
    say()
    say("$ callrec speech status")
    await run_cli("speech", "status")
    say()
    say(f"keyword search: {KEYWORD!r} (stemmed by PostgreSQL's 'russian' configuration, which stems Latin words "
        "with the English stemmer)")
    hits = await log.conn.fetch(
        """SELECT s.call_id, s.speaker, w->>0 AS word, (w->>1)::int AS offset_ms, s.text
           FROM transcript_segments s, jsonb_array_elements(s.words) w
           WHERE s.tsv @@ plainto_tsquery('russian', $1)
             AND to_tsvector('russian', w->>0) @@ plainto_tsquery('russian', $1)
           ORDER BY s.call_id, offset_ms""", KEYWORD)
    block("\n".join(f"call {h['call_id']}  {h['speaker']}  at {h['offset_ms'] / 1000:.2f} s: "
                     f"{safe_text(h['word'].strip(), 30)!r} in {safe_text(h['text'].strip(), 80)!r}" for h in hits)
          or "(no hit)")
    if not any(str(h["call_id"]) == call_id for h in hits):
        mismatch(f"the keyword search for {KEYWORD!r} did not find call a")
    else:
        say("   found call a and the moment (offset_ms): the console player seeks there ✓")
    say()
    say(f"$ callrec calls --said {KEYWORD}   (the same search through the call list: hits with speaker and time)")
    listed = await run_cli("calls", "--said", KEYWORD)
    if call_id not in listed:
        mismatch(f"`callrec calls --said {KEYWORD}` did not list call a")


async def ops_tour(results: list[tuple[str, asyncpg.Record]]) -> None:
    """What ops staff do next: a user, a search and a listen through the API, the audit trail it
    left, an integrity check, and the policy explained."""
    say(f"$ callrec users add {DEMO_USER} --role supervisor   (password on stdin)")
    await run_cli("users", "add", DEMO_USER, "--role", "supervisor", stdin=DEMO_PASSWORD + "\n")
    base = f"http://127.0.0.1:{PORTS['http']}"
    recorded = results[0][1]
    # unsafe=True: keep the session cookie of an IP-address host (127.0.0.1), as a browser does.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as api:
        async with api.post(f"{base}/api/v1/login", json={"username": DEMO_USER, "password": DEMO_PASSWORD}) as r:
            if r.status != 200:
                raise DemoError(f"console log-in refused: HTTP {r.status} {await r.text()}")
        say(f"ops API / web console on {base}/ : logged in as {DEMO_USER} (session cookie)")
        async with api.get(f"{base}/api/v1/calls", params={"recorded": "true", "number": "555*"}) as r:
            if r.status != 200:
                raise DemoError(f"call search refused: HTTP {r.status} {await r.text()}")
            items = (await r.json())["items"]
        say(f"   GET /api/v1/calls?recorded=true&number=555* -> {len(items)} call(s): "
            + ", ".join(f"{safe_text(i['caller_number'] or '', 20)}" for i in items))
        async with api.get(f"{base}/api/v1/calls/{recorded['id']}/audio", headers={"Range": "bytes=0-1023"}) as r:
            body = await r.read()
            say(f"   GET /api/v1/calls/{str(recorded['id'])[:8]}…/audio (Range: bytes=0-1023) -> HTTP {r.status}, "
                f"{len(body)} bytes of {r.headers.get('Content-Range', '?').split('/')[-1]}: a listen starts")
            if r.status != 206:
                mismatch(f"audio range request answered {r.status}")
    say()
    say("$ callrec audit -n 5   (append-only: the database refuses to change it)")
    await run_cli("audit", "-n", "5")
    say("$ callrec verify   (re-hash every recording against the call log)")
    await run_cli("verify")
    say("$ callrec policy explain --caller 74950001 --did 100")
    await run_cli("policy", "explain", "--caller", "74950001", "--did", "100")


# ------------------------------------------------------------------------------------------ report
def level_dbfs(path: Path) -> float:
    data, _ = soundfile.read(str(path), dtype="float64", always_2d=True)
    if not data.size:
        return -120.0
    rms = math.sqrt(float(np.square(data).mean()))
    return round(20 * math.log10(rms), 1) if rms > 0 else -120.0


def recordings_report(info: sandbox_mod.SandboxInfo, rows: list[tuple[str, asyncpg.Record]]) -> str:
    lines = [f"{'call':<4}  {'file (under ' + str(demo_recordings(info)) + ')':<60}  {'duration':>8}  "
             f"{'level':>10}  {'size':>8}  sha256"]
    for label, r in rows:
        if r["recording_status"] != "ready":
            continue
        path = demo_recordings(info) / r["recording_path"]
        if not path.is_file():
            mismatch(f"call {label}: recording {path} is not on disk")
            continue
        snd = soundfile.info(str(path))
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        same = "= call log" if digest == r["recording_sha256"] else "DIFFERS from the call log"
        if digest != r["recording_sha256"]:
            mismatch(f"call {label}: {path} sha256 {digest[:12]} differs from the call log's")
        lines.append(f"{label:<4}  {r['recording_path']:<60}  {snd.duration:>6.2f} s  "
                     f"{level_dbfs(path):>5.1f} dBFS  {len(data):>8}  {digest[:12]}… ({same})")
    return "\n".join(lines)


def evidence_report(info: sandbox_mod.SandboxInfo, r: asyncpg.Record) -> str:
    local_prompt = info.local_prompts_dir / Path(r["notice_prompt"]).relative_to(info.prompts_dir)
    on_disk = hashlib.sha256(local_prompt.read_bytes()).hexdigest()
    same = "matches the file Asterisk played" if on_disk == r["notice_prompt_sha256"] else "DIFFERS from the file"
    if on_disk != r["notice_prompt_sha256"]:
        mismatch(f"evidence: prompt sha256 in the call log differs from {local_prompt}")
    rows = [
        ("call id", str(r["id"])),
        ("caller", f"{safe_text(r['caller_name'])} <{safe_text(r['caller_number'])}> -> {r['called_number']}"),
        ("consent mode", f"{r['consent_mode']} (language {r['language']})"),
        ("notice prompt", r["notice_prompt"]),
        ("prompt sha256", f"{r['notice_prompt_sha256']} ({same})"),
        ("prompt length", f"{r['notice_prompt_duration']:.2f} s"),
        ("call started", stamp(r["started_at"]) + " UTC (StasisStart, Asterisk's clock)"),
        ("notice started", stamp(r["notice_started_at"])),
        ("notice finished", stamp(r["notice_finished_at"])),
        ("notice completed", str(r["notice_completed"])),
        ("consent", f"{r['consent']} at {stamp(r['consent_at'])}, key: {r['consent_key'] or 'none'}"),
        ("recording started", stamp(r["recording_started_at"])),
        ("handed back", stamp(r["handed_back_at"])),
        ("ended", f"{stamp(r['ended_at'])} (cause {r['hangup_cause']} {r['hangup_cause_text'] or ''})".rstrip()),
    ]
    return "\n".join(f"{k:<18} {v}" for k, v in rows)


# ------------------------------------------------------------------------------------------ main
async def demo(args: argparse.Namespace) -> int:
    box = sandbox_mod.Sandbox()
    started_sandbox = False
    daemon = Daemon()
    http: aiohttp.ClientSession | None = None
    tester: Tester | None = None
    log: CallLog | None = None
    step = "start"
    failed: str | None = None
    try:
        step = "sandbox Asterisk"
        box.claim()  # SlotBusy (a SandboxError) names the run that has this slot: fail before touching it
        if box.is_running() and await asyncio.to_thread(box._ari_ok):
            info = box.info()
            say(f"sandbox Asterisk already running ({box.root}): reusing it, will leave it running")
        else:
            if not box.is_built():
                say("building the sandbox Asterisk 22 (Debian sid root, one-off, a minute or two)")
            say("starting the sandbox Asterisk 22")
            info = await asyncio.to_thread(box.start)
            started_sandbox = True
        if not box.is_running():
            raise DemoError("the sandbox Asterisk stopped right after it started (another process stopped it?)")
        version = (await asyncio.to_thread(box.cli, "core show version")).split(" built ")[0].strip()
        say(f"Asterisk up: {version}; ARI {info.ari_url}, AMI {info.ami_host}:{info.ami_port}")

        step = "PostgreSQL"
        admin_dsn = await asyncio.to_thread(testdb.ensure_postgres)
        say(f"PostgreSQL: {admin_dsn}")
        dsn = await prepare_database(admin_dsn)

        step = "config"
        write_config(info, dsn)
        say(f"config written: {CONFIG.relative_to(REPO)}")

        step = "callrec migrate"
        say("$ callrec migrate")
        await run_cli("migrate")
        step = "callrec check"
        say("$ callrec check")
        await run_cli("check")

        step = "callrec serve"
        auth = aiohttp.encode_basic_auth(info.tester_ari_user, info.tester_ari_password)
        http = aiohttp.ClientSession(headers={"Authorization": auth}, timeout=aiohttp.ClientTimeout(total=5))
        stop_leftover_daemon()
        deadline = time.monotonic() + 30
        while await app_registered(http, info):
            if time.monotonic() > deadline:
                raise DemoError(f"another client holds the ARI app {APP!r} on this Asterisk (a test run or another "
                                "`callrec serve`?): stop it and run the demo again")
            await asyncio.sleep(0.5)
        say(f"$ callrec serve   (log: {DAEMON_LOG.relative_to(REPO)})")
        await daemon.start()
        await daemon.wait_ready(http, info)
        say(f"callrec serve is up (pid {daemon.pid}): ARI app {APP!r} registered, AMI logged in")

        step = "tester"
        tester = Tester(info.ari_url, info.tester_ari_user, info.tester_ari_password)
        await tester.start()
        log = CallLog(dsn)
        await log.open()

        results: list[tuple[str, asyncpg.Record]] = []
        for scenario in SCENARIOS:
            label = scenario.__name__[-1]
            step = f"call {label}"
            say()
            results.append((label, await scenario(tester, log, daemon)))

        step = "callrec calls"
        say()
        say("$ callrec calls")
        await run_cli("calls", "-n", str(len(results)))

        step = "recordings"
        say()
        say("recordings on disk (read back with soundfile):")
        block(recordings_report(info, results))

        step = "evidence"
        say()
        say("consent evidence of call a (from the call log):")
        block(evidence_report(info, results[0][1]))

        step = "ops"
        say()
        await ops_tour(results)

        step = "speech"
        say()
        await speech_tour(log, daemon, results[0][1])
        if MISMATCHES:
            step = "checks"
            failed = f"{len(MISMATCHES)} result(s) not as expected:\n  " + "\n  ".join(MISMATCHES)
    except DemoError as exc:
        failed = str(exc)
    except (sandbox_mod.SandboxError, testdb.TestDBError) as exc:
        failed = str(exc)
    except AssertionError as exc:  # the tester's waits report timeouts this way
        failed = str(exc) or "assertion failed"
    except (OSError, asyncpg.PostgresError, aiohttp.ClientError, TimeoutError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        if tester is not None:
            await tester.close()
        if log is not None:
            await log.close()
        if http is not None:
            await http.close()
        if daemon.proc is not None:
            say()
            say(f"stopping callrec serve (SIGTERM to pid {daemon.pid})")
            was_running = daemon.exited() is None
            rc = await daemon.stop()
            if was_running and rc == 0:
                say("callrec serve stopped cleanly (exit 0)")
            elif failed is None:
                failed = f"`callrec serve` exited with code {rc} (see {DAEMON_LOG})"
                step = "stopping callrec serve"
            problems = [ln for ln in log_text().splitlines() if " ERROR " in ln or "Traceback" in ln]
            if problems:
                say(f"note: {len(problems)} error line(s) in {DAEMON_LOG.relative_to(REPO)}:")
                block("\n".join(safe_text(p, 200) for p in problems[:10]))
        if started_sandbox and not args.keep and not our_asterisk(box):
            say("the sandbox Asterisk was restarted by another process meanwhile: leaving it running")
        elif started_sandbox and not args.keep:
            say("stopping the sandbox Asterisk")
            try:
                await asyncio.to_thread(box.stop)
            except sandbox_mod.SandboxError as exc:
                failed = failed or f"stopping the sandbox: {exc}"
        elif started_sandbox:
            say("sandbox Asterisk left running (--keep); stop it with: python3 tools/sandbox.py down")
    if failed is not None:
        print(f"\ndemo: FAILED at step '{step}': {failed}", file=sys.stderr, flush=True)
        return 1
    say(f"demo finished: {len(SCENARIOS)} calls, all as expected, in {time.monotonic() - T0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox Asterisk running afterwards")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: must run as root (the sandbox Asterisk runs in a chroot)", file=sys.stderr)
        return 1
    # The tester's ARI client logs connection trouble; show it in the narration's style.
    logging.basicConfig(level=logging.WARNING, format="         (%(name)s) %(message)s", stream=sys.stdout)
    try:
        return asyncio.run(demo(args))
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
