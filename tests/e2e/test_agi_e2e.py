"""The FastAGI door end to end on the real Asterisk 22 + PostgreSQL.

Calls run the dialplan an admin would write ([callrec-test-agi] -> Gosub(callrec-inbound-agi)),
which reaches the daemon's AGI port through the channel variable CALLREC_AGI_SERVER set when the
test places the call.  The dialplan after the subroutine reports the CALLREC_* variables in a
UserEvent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import soundfile
from caller import Finished, PlacedCall, Tester
from sandbox import SandboxInfo, callrec_config
from support.daemon_proc import CALLREC, wait_finalized
from support.daemon_proc import call_row as row
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.calls.session import State

SPEECH_RMS_FLOOR = -45.0
CONTEXT = "callrec-test-agi"


async def place(tester: Tester, port: int, *, exten: str = "100", args: str = "", lang: str = "en",
                **variables: str) -> PlacedCall:
    return await tester.place_call(exten, lang=lang, args=args, context=CONTEXT,
                                   variables={"_CALLREC_AGI_SERVER": f"127.0.0.1:{port}", **variables})


async def in_notice(daemon: Daemon, call: PlacedCall) -> None:
    assert daemon.agi is not None

    def playing() -> bool:
        agi_call = daemon.agi.calls.get(call.callee_id)
        return agi_call is not None and agi_call.session.state is State.NOTIFYING \
            and agi_call.session.record.notice_started_at is not None and agi_call.conn.busy

    await wait_for(playing, 15, what="the notice to play over AGI")


async def finish(daemon: Daemon, finished: Finished, call: PlacedCall, dsn: str) -> asyncpg.Record:
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    return await row(dsn, call.callee_id)


def port_of(daemon: Daemon) -> int:
    assert daemon.agi is not None
    return daemon.agi.port


async def test_notice_mode_through_agi_records_with_implied_consent(daemon: Daemon, tester: Tester,
                                                                     finished: Finished, database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=notice")
    await call.answered()
    await call.speak()
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["agistatus"] == "SUCCESS"
    assert back["recording"].startswith(daemon.settings.recordings.dir) and back["recording"].endswith(".wav")
    assert daemon.writer is not None and await daemon.writer.flush()
    live = await row(database, call.callee_id)
    assert (live["door"], live["state"], live["recording_status"]) == ("agi", "in_dialplan", "recording")
    assert back["call_id"] == str(live["id"])
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["consent"], r["recording_status"]) == ("notice", "implied", "ready")
    assert r["notice_completed"] is True and r["notice_prompt"].endswith("/en/notice.wav")
    prompt_file = daemon.settings.notice.local_prompts_path / "en" / "notice.wav"
    assert r["notice_prompt_sha256"] == hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    assert r["started_at"] <= r["notice_started_at"] < r["notice_finished_at"] <= r["consent_at"]
    assert r["consent_at"] <= r["recording_started_at"] <= r["handed_back_at"] <= r["ended_at"]
    # The notice played for its length (our clock around STREAM FILE).
    played = (r["notice_finished_at"] - r["notice_started_at"]).total_seconds()
    assert played >= r["notice_prompt_duration"] - 0.3, (played, r["notice_prompt_duration"])
    assert r["caller_number"] == "5551000" and r["caller_name"] == "Test Caller"
    assert r["called_number"] == "100" and r["context"] == CONTEXT
    assert r["linkedid"] and r["channel"].startswith(f"Local/100@{CONTEXT}")
    path = daemon.settings.recordings.local_path / r["recording_path"]
    info = soundfile.info(str(path))
    assert info.samplerate == 8000 and info.duration > 3
    assert r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR
    assert r["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


async def test_opt_out_key_during_the_notice_declines(daemon: Daemon, tester: Tester, finished: Finished,
                                                      database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=opt-out")
    await in_notice(daemon, call)
    await call.press("5")  # a key that means nothing here: logged, the notice goes on
    await call.press("9")
    back = await call.handed_back()
    assert back["consent"] == "declined" and back["recording"] == ""
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["consent_key"], r["notice_completed"]) == ("declined", "9", False)
    assert r["keys_pressed"] == "59"
    assert r["recording_status"] == "none" and r["recording_path"] is None
    assert r["notice_started_at"] < r["notice_finished_at"] <= r["consent_at"] <= r["handed_back_at"]
    assert not list(daemon.settings.recordings.local_path.rglob(f"{r['id']}*"))


async def test_opt_out_without_key_records(daemon: Daemon, tester: Tester, finished: Finished,
                                           database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=opt-out")
    await call.answered()
    await call.speak()
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["recording"]
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["consent"], r["consent_key"], r["notice_completed"]) == \
        ("opt-out", "implied", None, True)
    window = (r["consent_at"] - r["notice_finished_at"]).total_seconds()
    assert window >= daemon.settings.notice.decision_window - 0.05
    assert r["recording_status"] == "ready" and r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


async def test_opt_in_key_in_the_window_grants(daemon: Daemon, tester: Tester, finished: Finished,
                                               database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=opt-in")
    assert daemon.agi is not None

    def waiting() -> bool:
        c = daemon.agi.calls.get(call.callee_id)  # type: ignore[union-attr]
        return c is not None and c.session.state is State.AWAITING_KEY and c.conn.busy

    await wait_for(waiting, 15, what="the decision window (WAIT FOR DIGIT)")
    await call.press("1")
    back = await call.handed_back()
    assert back["consent"] == "granted" and back["recording"]
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["consent_key"], r["notice_completed"]) == ("granted", "1", True)
    assert r["recording_status"] == "ready" and r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


async def test_opt_in_without_key_is_not_recorded_and_hears_the_confirmation(
        daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=opt-in,lang=ru")
    back = await call.handed_back()
    assert back["consent"] == "not_given" and back["recording"] == ""
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["recording_status"], r["language"]) == ("not_given", "none", "ru")
    assert r["notice_prompt"].endswith("/ru/notice-opt-in.wav")
    # "This call will not be recorded" was played before the hand-back.
    assert (r["handed_back_at"] - r["consent_at"]).total_seconds() > 1.0


async def test_the_single_dialplan_line_with_a_query(daemon: Daemon, tester: Tester, finished: Finished,
                                                     database: str) -> None:
    """AGI(agi://host:port/notice?mode=opt-out&lang=ru), no subroutine."""
    call = await place(tester, port_of(daemon), exten="300", CALLREC_TEST_QUERY="mode=opt-out&lang=ru")
    await in_notice(daemon, call)
    await call.press("9")
    back = await call.handed_back()
    assert back["consent"] == "declined"
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["language"], r["called_number"], r["context"]) == \
        ("opt-out", "ru", "300", CONTEXT)
    assert r["notice_prompt"].endswith("/ru/notice-opt-out.wav")


async def test_hangup_during_the_notice(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    call = await place(tester, port_of(daemon), args="mode=opt-out")
    await in_notice(daemon, call)
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["notice_completed"], r["recording_status"], r["state"]) == \
        ("abandoned", False, "none", "ended")
    assert r["ended_at"] is not None and r["notice_finished_at"] is not None
    assert not list(daemon.settings.recordings.local_path.rglob(f"{r['id']}*"))
    assert daemon.agi is not None and call.callee_id not in daemon.agi.calls


async def test_second_pass_gets_the_same_answer_without_a_second_notice(
        daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    call = await place(tester, port_of(daemon), exten="200", args="mode=notice")
    back = await call.handed_back()
    assert back["first"] == "implied" and back["consent"] == "implied" and back["recording"]
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert r["recording_status"] == "ready"
    assert len(await (await asyncpg.connect(database)).fetch("SELECT id FROM calls")) == 1


async def test_hostile_caller_ids_are_stored_verbatim(daemon: Daemon, tester: Tester, finished: Finished,
                                                      database: str) -> None:
    """Asterisk sends caller ID verbatim in the AGI variables: a line break in it must not forge
    variables (here: a dialplan argument choosing opt-in) nor lose the name."""
    names = {
        "forge": "Mallory\nagi_arg_9: mode=opt-in\nagi_context: evil",
        "control": "red\x1b[31m\x07bell\x08\ttab\r\nline",
        "emoji": "📞 Иван 😀 李",
        "quotes": '"Bobby" \'Tables\' \\ back\\slash',
    }
    calls = {key: await place(tester, port_of(daemon), CALLREC_TEST_SET_CID="1", CALLREC_TEST_CID_NAME=name,
                              CALLREC_TEST_CID_NUM=f"+7 (495) {key}'--")
             for key, name in names.items()}
    for call in calls.values():
        assert (await call.handed_back())["consent"] == "implied"
        await call.hang_up()
    for call in calls.values():
        await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    for key, call in calls.items():
        r = await row(database, call.callee_id)
        assert r["caller_name"] == names[key], key
        assert r["caller_number"] == f"+7 (495) {key}'--"
        assert (r["consent_mode"], r["context"]) == ("notice", CONTEXT), key


async def test_twenty_calls_at_once(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    modes = ["notice", "opt-out", "opt-in", "notice"] * 5
    calls = [await place(tester, port_of(daemon), args=f"mode={mode}") for mode in modes]
    backs = await asyncio.gather(*(c.handed_back(timeout=60) for c in calls))
    expected = {"notice": "implied", "opt-out": "implied", "opt-in": "not_given"}
    assert [b["consent"] for b in backs] == [expected[m] for m in modes]
    speeches = [await c.speak() for c in calls]  # something to record (silence leaves no file)
    await asyncio.gather(*(c.spoken(p) for c, p in zip(calls, speeches, strict=True)))
    for call in calls:
        await call.hang_up()
    await finished.wait_count(len(calls), timeout=90)
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT uniqueid, door, consent, recording_status FROM calls")
    finally:
        await conn.close()
    by_id = {r["uniqueid"]: r for r in rows}
    assert len(by_id) == len(calls)
    for call, mode in zip(calls, modes, strict=True):
        r = by_id[call.callee_id]
        assert r["door"] == "agi" and r["consent"] == expected[mode]
        assert r["recording_status"] == ("none" if mode == "opt-in" else "ready"), (mode, r)
    assert daemon.agi is not None and not daemon.agi.calls


async def test_daemon_down_fail_safe(asterisk: SandboxInfo, tester: Tester) -> None:
    """Nothing listens on the port: nothing played or recorded, CALLREC_CONSENT=unavailable, a
    WARNING, and the call goes on at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # free, and nobody listens on it after the with-block
    before = set(asterisk.local_recordings_dir.rglob("*.wav"))
    call = await place(tester, closed_port, args="mode=opt-in")
    back = await call.handed_back(timeout=10)
    assert back == {**back, "consent": "unavailable", "call_id": "", "recording": "", "agistatus": "FAILURE"}
    log = asterisk.root / "var/log/asterisk/messages"
    await wait_for(lambda: "callrec unavailable (AGISTATUS=FAILURE)" in log.read_text(errors="replace"), 5,
                   what="the dialplan's warning in Asterisk's log")
    text = log.read_text(errors="replace")
    assert "WARNING" in text and "callrec unavailable (AGISTATUS=FAILURE)" in text
    assert set(asterisk.local_recordings_dir.rglob("*.wav")) == before


# -- the daemon as a process: a hang-up in the handshake, garbage, CPU --------------------------


async def state_is(conn: asyncpg.Connection, uniqueid: str, state: str) -> bool:
    return await conn.fetchval("SELECT state FROM calls WHERE uniqueid = $1", uniqueid) == state


class ServeProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        def logged() -> str:
            text = self.log()
            if needle not in text and self.proc.poll() is not None:
                raise AssertionError(f"callrec serve exited ({self.proc.returncode}):\n{text[-2000:]}")
            return text if needle in text else ""

        return await wait_for(logged, timeout, what=f"{needle!r} in the daemon's log",
                              details=lambda: self.log()[-2000:])

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def cpu_over(self, seconds: float) -> float:
        """CPU time used over a wall-clock window: a measurement (a spinning loop uses ~all of it)."""
        start = self.cpu_seconds()
        await asyncio.sleep(seconds)
        return self.cpu_seconds() - start


def agi_only_config(tmp_path: Path, info: SandboxInfo, database: str) -> Path:
    """No ARI at all: no password, and an address where nothing answers."""
    cfg = tmp_path / "agi-only.toml"
    cfg.write_text(callrec_config(info, database, asterisk={"ari_enabled": False, "ari_password": "",
                                                            "ari_url": "http://127.0.0.1:1", "request_timeout": 2},
                                  notice={"decision_window": 1}))
    return cfg


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, info: SandboxInfo, database: str, decision_window: float = 1,
                  name: str = "serve", config: Path | None = None) -> AsyncIterator[ServeProcess]:
    """`callrec serve` as a process on the sandbox, FastAGI on a free port (read from its log)."""
    cfg = config or tmp_path / f"{name}.toml"
    if config is None:
        cfg.write_text(callrec_config(info, database, asterisk={"request_timeout": 2},
                                      notice={"decision_window": decision_window}, log={"level": "debug"}))
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT)
    sp = ServeProcess(proc, log_path)
    try:
        text = await sp.wait_log("FastAGI listening on ")
        sp.port = int(text.split("FastAGI listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
        await sp.wait_log("AMI logged in")
        yield sp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def serve(tmp_path: Path, asterisk: SandboxInfo, database: str) -> AsyncIterator[ServeProcess]:
    async with serving(tmp_path, asterisk, database) as sp:
        yield sp


IDLE_CPU_LIMIT = 0.25  # seconds of CPU over a 2 s window; a busy loop would use ~2


async def raw_client(port: int, payload: bytes, *, read_reply: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        if read_reply:
            return await asyncio.wait_for(reader.read(4096), 10)
        return b""
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


HANDSHAKE = (
    b"agi_network: yes\nagi_network_script: notice\nagi_request: agi://127.0.0.1/notice\n"
    b"agi_channel: Local/fake-00000001;2\nagi_language: en\nagi_type: Local\nagi_uniqueid: 1700000000.1\n"
    b"agi_version: 22.0.0\nagi_callerid: 5551000\nagi_calleridname: Test\nagi_callingpres: 0\n"
    b"agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 100\nagi_rdnis: unknown\n"
    b"agi_context: x\nagi_extension: 100\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n"
    b"agi_threadid: 1\n\n"
)


async def test_raw_client_closing_in_the_middle_of_the_handshake_leaves_the_daemon_idle(
        serve: ServeProcess, database: str) -> None:
    for _ in range(5):
        await raw_client(serve.port, HANDSHAKE[: len(HANDSHAKE) // 2])
    await serve.wait_log("connection closed in the middle of a line")
    used = await serve.cpu_over(2.0)
    assert used < IDLE_CPU_LIMIT, f"daemon used {used:.2f}s CPU in 2s after half handshakes"
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM calls") == 0
    finally:
        await conn.close()
    assert serve.proc.poll() is None


async def test_garbage_clients_are_closed_and_the_daemon_serves_on(
        serve: ServeProcess, tester: Tester, database: str) -> None:
    await raw_client(serve.port, b"\x00\xff\xfe binary \x16\x03\x01\x02\x00 tls hello?\n\n")
    await raw_client(serve.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await raw_client(serve.port, b"agi_request: " + b"A" * 100_000 + b"\n")  # one huge line
    await raw_client(serve.port, b"agi_x: 1\n" * 500)  # too many lines
    await raw_client(serve.port, b"\n")  # empty handshake
    # A full handshake, then garbage where a reply should be.
    reply = await raw_client(serve.port, HANDSHAKE + b"999 what\n", read_reply=True)
    assert reply.startswith(b"STREAM FILE ")
    # A silent client: the handshake timeout closes it.
    reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
    assert await asyncio.wait_for(reader.read(), 15) == b""  # closed by the daemon
    writer.close()
    text = await serve.wait_log("unexpected reply '999 what'")
    # The one that looked like a call has its row, closed: the channel it named does not exist.
    await wait_finalized(database, "1700000000.1")
    conn = await asyncpg.connect(database)
    try:
        fake = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = '1700000000.1'")
    finally:
        await conn.close()
    assert (fake["door"], fake["consent"], fake["state"], fake["recording_status"]) == \
        ("agi", "unavailable", "ended", "none")
    assert any("AGI session broke" in w for w in fake["warnings"])
    for needle in ("not an AGI variable", "line longer than", "more than 200 lines", "empty AGI handshake",
                   "AGI handshake not complete within"):
        assert needle in text, needle
    used = await serve.cpu_over(2.0)
    assert used < IDLE_CPU_LIMIT, f"daemon used {used:.2f}s CPU in 2s after garbage"
    # And it still serves a real call.
    call = await place(tester, serve.port, args="mode=notice")
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["recording"]
    await call.hang_up()


class HoldingProxy:
    """Between Asterisk and the daemon: holds the AGI handshake back until the test has hung
    the caller up and Asterisk has said HANGUP on the AGI socket (a real hang-up).

    ``half``: then the daemon gets half the variables and EOF (the handshake cut short).
    ``late``: then the daemon gets the whole handshake, Asterisk's HANGUP, and the rest of the
    conversation with Asterisk (a call that is gone before the first command)."""

    def __init__(self, target_port: int, mode: str) -> None:
        self.target_port = target_port
        self.mode = mode
        self.server: asyncio.Server | None = None
        self.held = asyncio.Event()
        self.hangup_seen = asyncio.Event()
        self.done = asyncio.Event()
        self.asterisk_said: list[bytes] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter) -> None:
        d_reader, d_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            env: list[bytes] = []
            while True:
                line = await a_reader.readline()
                if line in (b"\n", b""):
                    break
                env.append(line)
            self.held.set()
            while True:
                line = await asyncio.wait_for(a_reader.readline(), 15)
                self.asterisk_said.append(line)
                if line.strip() == b"HANGUP" or line == b"":
                    break
            self.hangup_seen.set()
            if self.mode == "half":
                d_writer.write(b"".join(env[: len(env) // 2]))
                await d_writer.drain()
                return
            d_writer.write(b"".join(env) + b"\n" + b"".join(self.asterisk_said))
            await d_writer.drain()
            await asyncio.gather(_pipe(a_reader, d_writer), _pipe(d_reader, a_writer))
        finally:
            d_writer.close()  # EOF for the daemon
            a_writer.close()  # and the AGI session ends for Asterisk
            self.done.set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await asyncio.wait_for(reader.read(4096), 20):
            writer.write(data)
            await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def test_asterisk_hangup_in_the_middle_of_the_handshake_leaves_the_daemon_idle(
        serve: ServeProcess, tester: Tester, database: str) -> None:
    proxy = HoldingProxy(serve.port, "half")
    port = await proxy.start()
    try:
        call = await place(tester, port, args="mode=opt-out")
        await asyncio.wait_for(proxy.held.wait(), 15)
        await call.hang_up()
        await asyncio.wait_for(proxy.hangup_seen.wait(), 15)
        assert proxy.asterisk_said[-1].strip() == b"HANGUP"
        await tester.log.wait_for(lambda e: e.get("type") == "ChannelDestroyed"
                                  and e["channel"]["id"] == call.callee_id, 15, "the callee leg to go")
        await serve.wait_log("connection closed")
        used = await serve.cpu_over(2.0)
        assert used < IDLE_CPU_LIMIT, f"daemon used {used:.2f}s CPU in 2s after the hang-up"
        conn = await asyncpg.connect(database)
        try:
            assert await conn.fetchval("SELECT count(*) FROM calls") == 0  # no call was opened
        finally:
            await conn.close()
    finally:
        await proxy.close()


async def test_caller_gone_before_the_first_command(daemon: Daemon, tester: Tester, finished: Finished,
                                                   database: str) -> None:
    """The handshake complete, the caller already gone: Asterisk says HANGUP and refuses the
    first command on the dead channel; the call is logged as abandoned, nothing recorded."""
    proxy = HoldingProxy(port_of(daemon), "late")
    port = await proxy.start()
    try:
        call = await place(tester, port, args="mode=notice")
        await asyncio.wait_for(proxy.held.wait(), 15)
        await call.hang_up()
        r_final = await finished.wait(call.callee_id)
        await asyncio.wait_for(proxy.done.wait(), 15)
    finally:
        await proxy.close()
    assert (r_final.consent, r_final.recording_status, r_final.state) == ("abandoned", "none", "ended")
    assert daemon.writer is not None and await daemon.writer.flush()
    r = await row(database, call.callee_id)
    assert (r["door"], r["consent"], r["notice_completed"]) == ("agi", "abandoned", False)
    assert daemon.agi is not None and not daemon.agi.calls


async def test_graceful_stop_hands_agi_callers_back(tmp_path: Path, asterisk: SandboxInfo, tester: Tester,
                                                    database: str) -> None:
    """SIGTERM while a caller is in the decision window: the window's WAIT FOR DIGIT is cut short,
    the caller goes on unrecorded and the row says unavailable, like the ARI door."""
    async with serving(tmp_path, asterisk, database, decision_window=30) as serve:
        await stop_during_window(serve, tester, database)


async def stop_during_window(serve: ServeProcess, tester: Tester, database: str) -> None:
    call = await place(tester, serve.port, args="mode=opt-in")
    conn = await asyncpg.connect(database)
    try:
        await wait_for(lambda: state_is(conn, call.callee_id, "awaiting_key"), 20,
                       what="the call to reach the decision window")
        serve.proc.send_signal(signal.SIGTERM)
        back = await call.handed_back(timeout=15)
        assert back["consent"] == "unavailable" and back["recording"] == ""
        assert serve.proc.wait(timeout=20) == 0
        r = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    finally:
        await conn.close()
    assert (r["consent"], r["recording_status"]) == ("unavailable", "none")
    assert any("callrec stopped" in w for w in r["warnings"])
    assert back["call_id"] == str(r["id"])  # callrec's own hand-back, not the dialplan's fail-safe
    assert (r["consent_at"] - r["notice_finished_at"]).total_seconds() < 30  # the window was cut short


async def test_stop_during_the_notice_hands_the_caller_back(
        serve: ServeProcess, tester: Tester, database: str) -> None:
    """SIGTERM while STREAM FILE runs: the prompt is cut short and callrec hands the caller back
    unrecorded, like the ARI door."""
    call = await place(tester, serve.port, args="mode=opt-out")
    conn = await asyncpg.connect(database)
    try:
        await wait_for(lambda: state_is(conn, call.callee_id, "notifying"), 20,
                       what="the call to reach the notice")
        serve.proc.send_signal(signal.SIGTERM)
        back = await call.handed_back(timeout=30)
        assert serve.proc.wait(timeout=20) == 0
        r = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    finally:
        await conn.close()
    assert back["consent"] == "unavailable" and back["recording"] == "" and back["call_id"] == str(r["id"])
    assert (r["consent"], r["recording_status"], r["notice_completed"]) == ("unavailable", "none", False)
    heard = (r["notice_finished_at"] - r["notice_started_at"]).total_seconds()
    assert heard < r["notice_prompt_duration"]  # cut short, not played to its end
    assert any("callrec stopped" in w for w in r["warnings"])


async def test_daemon_killed_mid_notice_caller_goes_on_and_the_row_is_closed_later(
        tmp_path: Path, asterisk: SandboxInfo, tester: Tester, database: str) -> None:
    """SIGKILL during the notice: Asterisk sees the AGI connection gone, the caller goes on
    through the dialplan's fail-safe (not recorded).  The next start follows the open row up."""
    async with serving(tmp_path, asterisk, database, name="first") as first:
        call = await place(tester, first.port, args="mode=opt-out")
        conn = await asyncpg.connect(database)
        try:
            await wait_for(lambda: state_is(conn, call.callee_id, "notifying"), 20,
                           what="the call to reach the notice")
        finally:
            await conn.close()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    back = await call.handed_back(timeout=30)
    assert back["consent"] == "unavailable" and back["call_id"] == "" and back["recording"] == ""
    async with serving(tmp_path, asterisk, database, name="second") as second:
        # The open row is taken up once ARI is connected (after AMI's log-in): hang up only then,
        # or the call would end unseen and its hang-up time would be rightly unknown.
        await second.wait_log("followed again after a restart")
        await call.hang_up()
        await wait_finalized(database, call.callee_id)
    conn = await asyncpg.connect(database)
    try:
        r = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    finally:
        await conn.close()
    assert (r["door"], r["consent"], r["recording_status"], r["state"]) == ("agi", "unavailable", "none", "ended")
    assert r["ended_at"] is not None
    assert any("restarted" in w for w in r["warnings"])


async def test_agi_only_without_any_ari(tmp_path: Path, asterisk: SandboxInfo, tester: Tester,
                                        database: str) -> None:
    """asterisk.ari_enabled = false: no ARI user, no http.conf needed.  Calls come in through
    FastAGI, hang-ups through AMI, and a restart follows open rows up through AMI."""
    cfg = agi_only_config(tmp_path, asterisk, database)
    check = subprocess.run([*CALLREC, "-c", str(cfg), "check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   ari: off" in check.stdout and "ok   agi: FastAGI door on 127.0.0.1:0" in check.stdout
    async with serving(tmp_path, asterisk, database, name="first", config=cfg) as first:
        ends_unseen = await place(tester, first.port, args="mode=opt-out")
        goes_on = await place(tester, first.port, args="mode=notice")
        for call in (ends_unseen, goes_on):
            back = await call.handed_back()
            assert back["consent"] == "implied" and back["recording"]
        speeches = [(c, await c.speak()) for c in (ends_unseen, goes_on)]
        await asyncio.gather(*(c.spoken(p) for c, p in speeches))
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert "ARI events connected" not in first.log()
    await ends_unseen.hang_up()
    await tester.log.wait_for(lambda e: e.get("type") == "ChannelDestroyed"
                              and e["channel"]["id"] == ends_unseen.callee_id, 10, "the unseen hang-up")
    async with serving(tmp_path, asterisk, database, name="second", config=cfg) as second:
        await wait_finalized(database, ends_unseen.callee_id)  # gone: AMI Status says so
        await second.wait_log("followed again after a restart")
        await goes_on.spoken(await goes_on.speak())
        await goes_on.hang_up()
        await wait_finalized(database, goes_on.callee_id)  # followed: AMI Hangup
        # and a new call, start to end, with no ARI
        fresh = await place(tester, second.port, args="mode=opt-in")
        back = await fresh.handed_back()
        assert back["consent"] == "not_given"
        await fresh.hang_up()
        await wait_finalized(database, fresh.callee_id)
    conn = await asyncpg.connect(database)
    try:
        rows = {r["uniqueid"]: r for r in await conn.fetch("SELECT * FROM calls")}
    finally:
        await conn.close()
    unseen, followed = rows[ends_unseen.callee_id], rows[goes_on.callee_id]
    assert (unseen["recording_status"], unseen["state"]) == ("ready", "ended")
    assert any("ended while callrec was down" in w for w in unseen["warnings"])
    assert (followed["recording_status"], followed["state"], followed["consent"]) == ("ready", "ended", "implied")
    assert followed["hangup_cause"] is not None
    assert rows[fresh.callee_id]["consent"] == "not_given"
