"""Recording mechanics end to end on the real Asterisk 22 + PostgreSQL: pause/resume (CLI, API
function, the agents' DTMF key), stereo, record-only-while-bridged and no empty files.

The calls go to ``callrec-test-rec`` (tests/asterisk/callrec-test-recording.conf): the caller
reaches callrec, then is dialed through to an "agent" whose far leg waits in the tester's ARI app,
so a test can make either party speak and the agent press keys.  The caller "speaks" a steady
tone, so any stretch of digital silence in the file is the pause and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import soundfile
from caller import Finished, PlacedCall, Tester
from sandbox import SandboxInfo, callrec_config
from support.daemon_proc import CALLREC, running_daemon, wait_finalized, wait_registered, write_config
from support.settings import make_settings
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.recording.control import (
    AlreadyPaused,
    CallNotFound,
    NotPaused,
    NotRecording,
    list_pauses,
)
from callrec.recording.files import wav_is_closed

CONTEXT = "callrec-test-rec"
TONE = "tone:440/120000"  # the caller: a steady tone (for two minutes, or until stopped / hung up)
SECRET = "tone:1000/120000"  # what the caller says while paused ("the card number"): another tone
BYTES_PER_SECOND = 16000  # 8 kHz, 16-bit, mono


@contextlib.asynccontextmanager
async def running(asterisk: SandboxInfo, database: str, finished: Finished, **recordings: object
                  ) -> AsyncIterator[Daemon]:
    async with running_daemon(make_settings(asterisk, database, recordings=recordings), finished) as d:
        yield d


async def connect_agent(tester: Tester, call: PlacedCall, taken: set[str]) -> str:
    """The agent leg of ``call`` (in the tester app once the agent answered); returns its channel id."""
    event = await tester.log.wait_for(
        lambda e: e.get("type") == "StasisStart" and e.get("args") == ["agent"] and e["channel"]["id"] not in taken,
        20, "the agent to answer")
    taken.add(event["channel"]["id"])
    return event["channel"]["id"]


async def place(tester: Tester, exten: str) -> tuple[PlacedCall, str]:
    call = await tester.place_call(exten, context=CONTEXT, variables={"__CALLREC_TEST_AGENT_APP": tester.app})
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["call_id"]
    return call, back["call_id"]


async def wait_grown(path: Path, seconds: float, timeout: float = 20.0) -> None:
    """Until Asterisk has written ``seconds`` more audio to ``path`` than it holds now."""
    def size() -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    target = size() + int(seconds * BYTES_PER_SECOND)
    await wait_for(lambda: size() >= target, timeout, what=f"{path.name} to grow by {seconds}s of audio",
                   details=lambda: f"{size()} of {target} bytes")


def tail_samples(path: Path, seconds: float) -> np.ndarray:
    """The last ``seconds`` of 8 kHz 16-bit audio Asterisk has written to ``path`` so far (header skipped,
    a half-written last sample dropped)."""
    header = 44
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return np.zeros(0, dtype=np.int16)
    start = max(header, size - int(seconds * BYTES_PER_SECOND))
    start = header + (start - header) // 2 * 2
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(size - start)
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")


async def wait_heard(path: Path, seconds: float, hz: float = 440, timeout: float = 20.0) -> None:
    """Until the file ends in ``seconds`` in which the caller's tone is heard in every 0.1 s window but one:
    what the mixer wrote, not merely how much, so a loaded Asterisk that writes late cannot fool the test."""
    windows = int(seconds * 10)

    def heard() -> int:
        tail = tail_samples(path, seconds)
        return int(tone_windows(tail, 8000, hz).sum()) if len(tail) >= windows * 800 else 0

    await wait_for(lambda: heard() >= windows - 1, timeout, what=f"{seconds}s of the {hz:g} Hz tone in {path.name}",
                   details=lambda: f"{heard()} of {windows} windows")


async def wait_silent(path: Path, seconds: float, timeout: float = 20.0) -> None:
    """Until the file ends in ``seconds`` of digital silence: the pause has reached the file (frames the
    mixer held from before the pause are written first, later under load)."""
    def silent() -> bool:
        tail = tail_samples(path, seconds)
        return len(tail) >= int(seconds * 8000) and not tail.any()

    await wait_for(silent, timeout, what=f"{seconds}s of silence at the end of {path.name}")


async def row(dsn: str, call_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", uuid.UUID(call_id))
    finally:
        await conn.close()
    assert r is not None
    return r


async def finish(daemon: Daemon, finished: Finished, call: PlacedCall, dsn: str, call_id: str) -> asyncpg.Record:
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    assert daemon.recording_control is not None
    await daemon.recording_control.close()  # a pause still open at the hang-up is closed by then
    return await row(dsn, call_id)


def silent_runs(samples: np.ndarray, rate: int, min_seconds: float = 0.3) -> list[tuple[float, float]]:
    """Stretches of digital silence (every sample 0) at least ``min_seconds`` long, in seconds."""
    zero = samples == 0
    runs = []
    start = None
    for i, z in enumerate(np.append(zero, False)):
        if z and start is None:
            start = i
        elif not z and start is not None:
            if (i - start) / rate >= min_seconds:
                runs.append((start / rate, i / rate))
            start = None
    return runs


def level(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64) / 32768)))) if len(samples) else 0.0
    return 20 * np.log10(rms) if rms > 0 else -120.0


def tone_windows(samples: np.ndarray, rate: int, hz: float) -> np.ndarray:
    """Per 0.1 s window: True where a tone of ``hz`` carries most of the window's energy."""
    n = rate // 10
    windows = samples[: len(samples) // n * n].astype(np.float64).reshape(-1, n)
    spectrum = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    band = spectrum[:, int(hz / 10) - 1: int(hz / 10) + 2].sum(axis=1)
    total = spectrum.sum(axis=1)
    return (total > 0) & (band > 0.5 * np.maximum(total, 1e-9))


async def say_secret_while_paused(tester: Tester, call: PlacedCall, path: Path, tone: str) -> str:
    """While the recording is paused: the caller stops the steady tone and says the "card number"
    (another tone) until the file ends in 1.5 s of silence, then goes back to the steady tone.  Returns its
    new id."""
    await tester.ari.stop_playback(tone)
    secret = await call.speak(SECRET)
    await tone_start(tester, secret)
    await wait_silent(path, 1.5)
    await tester.ari.stop_playback(secret)
    await tester.log.wait_for(lambda e: e.get("type") == "PlaybackFinished" and e["playback"]["id"] == secret,
                              10, "the secret to end")
    again = await call.speak(TONE)
    await tone_start(tester, again)
    return again


def assert_paused_stretch_is_silence(path: Path, pauses: list, silent_stretches: int,
                                     first_sound_at: datetime) -> np.ndarray:
    """Each logged pause is one stretch of digital silence in the file, at least the 1.5 s the file
    grew while paused and no longer than the logged pause (plus the AMI round trips), beginning no
    later than the logged paused_at; the "card number" said meanwhile is nowhere in the file; the
    caller is heard before and after.

    The file begins with the caller's first sound (``first_sound_at``, Asterisk's clock), so the
    logged time maps to a file offset.  Under load Asterisk may drop samples, which only makes the
    file's time run behind, hence an upper bound for where the silence starts."""
    samples, rate = soundfile.read(str(path), dtype="int16")
    runs = silent_runs(samples, rate)
    assert len(runs) == silent_stretches, (runs, pauses)
    for (start, end), pause in zip(runs, pauses, strict=False):
        assert start <= (pause.paused_at - first_sound_at).total_seconds() + 0.3, (start, pause, first_sound_at)
        if pause.resume_source == "hangup":
            continue
        logged = (pause.resumed_at - pause.paused_at).total_seconds()
        assert 1.0 <= end - start <= logged + 0.6, (start, end, logged)
    assert not tone_windows(samples, rate, 1000).any(), "what was said while paused is in the file"
    steady = tone_windows(samples, rate, 440)
    first, last = int(runs[0][0] * 10), int(runs[0][1] * 10)
    assert steady[:first].sum() >= 5 and steady[last + 1:].sum() >= 5, "the caller is not heard around the pause"
    return samples


async def tone_start(tester: Tester, playback_id: str):
    from callrec.doors.ari import _event_time

    event = await tester.log.wait_for(lambda e: e.get("type") == "PlaybackStarted"
                                      and e["playback"]["id"] == playback_id, 10, "the caller's tone")
    return _event_time(event)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CALLREC, "-c", str(config), *args], capture_output=True, text=True, timeout=30)


async def test_pause_and_resume_from_the_cli_leave_silence_in_the_same_file(
        tmp_path: Path, asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    config = write_config(tmp_path / "callrec.toml", asterisk, database)
    async with running(asterisk, database, finished) as daemon:
        call, call_id = await place(tester, "300")
        await connect_agent(tester, call, set())
        tone = await call.speak(TONE)
        first_sound = await tone_start(tester, tone)
        assert daemon.writer is not None and await daemon.writer.flush()
        path = daemon.settings.recordings.local_path / (await row(database, call_id))["recording_path"]
        await wait_heard(path, 1.0)
        # A separate process, as an operator runs it.
        paused = await asyncio.to_thread(cli, config, "recording", "pause", call_id, "--by", "ops-alice")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith(f"paused: call {call_id}, pause 1")
        again = await asyncio.to_thread(cli, config, "recording", "pause", call_id)
        assert again.returncode == 1 and "already paused" in again.stderr and len(again.stderr.splitlines()) == 1
        tone = await say_secret_while_paused(tester, call, path, tone)
        resumed = await asyncio.to_thread(cli, config, "recording", "resume", call_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert '"resume_source": "cli"' in resumed.stdout
        await wait_heard(path, 1.0)
        r = await finish(daemon, finished, call, database, call_id)
        assert r["recording_status"] == "ready" and r["recording_channels"] == 1
        pauses = await list_pauses(daemon.pool, call_id)
        assert [(p.seq, p.paused_by, p.pause_source, p.resume_source) for p in pauses] == [
            (1, "ops-alice", "cli", "cli")]
        assert pauses[0].resumed_by.startswith("cli:")
        assert r["recording_started_at"] < pauses[0].paused_at < pauses[0].resumed_at < r["ended_at"]
        # One file, whose facts are the file's own.
        assert sorted(p.name for p in path.parent.glob(f"{call_id}*")) == [path.name]
        assert r["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert_paused_stretch_is_silence(path, pauses, 1, first_sound)
        listed = await asyncio.to_thread(cli, config, "recording", "pauses", call_id)
        assert listed.returncode == 0 and "ops-alice" in listed.stdout and "cli" in listed.stdout


async def test_agent_dtmf_key_toggles_pause_and_a_pause_open_at_hangup_is_closed(
        asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    # Record only while bridged here too: the caller is bridged to the agent, so this records.
    async with running(asterisk, database, finished, mixmonitor_options="b") as daemon:
        control = daemon.recording_control
        assert control is not None
        call, call_id = await place(tester, "300")
        agent = await connect_agent(tester, call, set())
        tone = await call.speak(TONE)
        first_sound = await tone_start(tester, tone)
        assert daemon.writer is not None and await daemon.writer.flush()
        path = daemon.settings.recordings.local_path / (await row(database, call_id))["recording_path"]
        await wait_heard(path, 1.0)
        await tester.ari.send_dtmf(agent, "*7")  # pause
        await control.wait_dtmf_handled(1)
        tone = await say_secret_while_paused(tester, call, path, tone)
        await tester.ari.send_dtmf(agent, "*7")  # resume
        await control.wait_dtmf_handled(2)
        await wait_heard(path, 1.0)
        await tester.ari.send_dtmf(agent, "*7")  # pause again, and the caller hangs up while paused
        await control.wait_dtmf_handled(3)
        await wait_silent(path, 1.0)
        r = await finish(daemon, finished, call, database, call_id)
        assert r["recording_status"] == "ready" and r["bridged_at"] is not None
        pauses = await list_pauses(daemon.pool, call_id)
        assert [(p.seq, p.pause_source, p.resume_source) for p in pauses] == [
            (1, "dtmf", "dtmf"), (2, "dtmf", "hangup")]
        assert all(p.paused_by.startswith("Local/agent@callrec-test-rec-agent") for p in pauses)
        assert pauses[1].resumed_at == r["ended_at"]
        samples = assert_paused_stretch_is_silence(path, pauses, 2, first_sound)
        last = silent_runs(samples, 8000)[-1]
        assert last[1] == pytest.approx(len(samples) / 8000, abs=0.05)  # silent up to the hang-up


async def test_key_event_without_call_id_is_matched_by_linkedid(
        asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    async with running(asterisk, database, finished) as daemon:
        control = daemon.recording_control
        assert control is not None
        call, call_id = await place(tester, "300")
        agent = await connect_agent(tester, call, set())
        await tone_start(tester, await call.speak(TONE))
        assert daemon.writer is not None and await daemon.writer.flush()
        path = daemon.settings.recordings.local_path / (await row(database, call_id))["recording_path"]
        await wait_grown(path, 0.5)

        async def agent_event(action: str, n: int) -> None:
            await tester.ari.set_variable(agent, "CALLREC_TEST_KEY_ACTION", action)
            await tester.ari.request("POST", f"/channels/{agent}/continue",
                                     params={"context": "callrec-test-rec-agent", "extension": "keyevent",
                                             "priority": "1"})
            await control.wait_dtmf_handled(n)
            def back(_: dict) -> bool:
                return sum(1 for x in tester.log.events if x.get("type") == "StasisStart"
                           and x["channel"]["id"] == agent and x.get("args") == ["agent-again"]) >= n

            await tester.log.wait_for(back, 10, "the agent back in the tester app")

        await agent_event("pause", 1)
        [open_] = await list_pauses(daemon.pool, call_id)
        assert open_.open and open_.pause_source == "dtmf" and open_.paused_by.startswith("Local/agent@")
        await agent_event("pause", 2)  # already paused: refused, nothing changes
        await agent_event("explode", 3)  # not an action: ignored
        await wait_silent(path, 1.0)
        await agent_event("resume", 4)
        r = await finish(daemon, finished, call, database, call_id)
        assert r["recording_status"] == "ready"
        pauses = await list_pauses(daemon.pool, call_id)
        assert [(p.seq, p.pause_source, p.resume_source) for p in pauses] == [(1, "dtmf", "dtmf")]
        samples, rate = soundfile.read(str(path), dtype="int16")
        assert len(silent_runs(samples, rate, 0.5)) == 1


async def test_pause_api_refuses_what_it_cannot_do(asterisk: SandboxInfo, database: str, tester: Tester,
                                                 finished: Finished) -> None:
    async with running(asterisk, database, finished) as daemon:
        control = daemon.recording_control
        assert control is not None
        with pytest.raises(CallNotFound) as nf:
            await control.pause(str(uuid.uuid4()), by="alice")
        assert nf.value.http_status == 404
        with pytest.raises(CallNotFound):
            await control.pause("'; DROP TABLE calls; --", by="alice")
        # Not recorded: declined in opt-out mode.
        declined = await tester.place_call("500", context=CONTEXT, args="mode=opt-out")
        await declined.notice_started()
        await declined.press("9")
        back = await declined.handed_back()
        assert back["consent"] == "declined"
        assert daemon.writer is not None and await daemon.writer.flush()
        with pytest.raises(NotRecording) as nr:
            await control.pause(back["call_id"], by="alice")
        assert nr.value.http_status == 409
        # Recorded: pause twice, resume twice.
        call, call_id = await place(tester, "300")
        await connect_agent(tester, call, set())
        assert await daemon.writer.flush()
        with pytest.raises(NotPaused):
            await control.resume(call_id, by="alice")
        # A channel renamed since the row was written is still found, by its uniqueid.
        await daemon.pool.execute("UPDATE calls SET channel = 'PJSIP/renamed-00000000' WHERE id = $1",
                                  uuid.UUID(call_id))
        first = await control.pause(call_id, by="alice")
        assert (first.seq, first.paused_by, first.pause_source, first.open) == (1, "alice", "api", True)
        with pytest.raises(AlreadyPaused):
            await control.pause(call_id, by="bob")
        done = await control.resume(call_id, by="bob")
        assert (done.seq, done.resumed_by, done.resume_source, done.open) == (1, "bob", "api", False)
        assert done.as_dict()["resumed_at"].endswith("+00:00")
        second = await control.pause(call_id, by="alice")
        assert second.seq == 2
        r = await finish(daemon, finished, call, database, call_id)
        assert r["recording_status"] in ("ready", "empty")
        assert [p.resume_source for p in await control.pauses(call_id)] == ["api", "hangup"]
        with pytest.raises(NotRecording):  # the call is over
            await control.pause(call_id, by="alice")


async def test_stereo_puts_caller_left_and_agent_right(asterisk: SandboxInfo, database: str, tester: Tester,
                                                      finished: Finished) -> None:
    async with running(asterisk, database, finished, stereo=True) as daemon:
        local = daemon.settings.recordings.local_path
        taken: set[str] = set()
        # Call A: only the caller speaks.  Call B: only the agent speaks.
        a, a_id = await place(tester, "300")
        await connect_agent(tester, a, taken)
        b, b_id = await place(tester, "301")
        b_agent = await connect_agent(tester, b, taken)
        assert daemon.writer is not None and await daemon.writer.flush()
        a_path = local / (await row(database, a_id))["recording_path"]
        b_path = local / (await row(database, b_id))["recording_path"]
        await a.speak(TONE)
        speech = str(uuid.uuid4())
        await tester.ari.play(b_agent, "sound:vm-intro", speech)
        await tester.log.wait_for(lambda e: e.get("type") == "PlaybackFinished" and e["playback"]["id"] == speech,
                                  20, "the agent's speech")
        a_rx = a_path.with_name(a_path.stem + "-rx.wav")
        await wait_heard(a_rx, 1.0)
        # A pause is silence on both channels of the stereo file too.
        assert daemon.recording_control is not None
        await daemon.recording_control.pause(a_id, by="qa")
        await wait_silent(a_rx, 1.0)
        await daemon.recording_control.resume(a_id, by="qa")
        await wait_heard(a_rx, 1.0)
        ra = await finish(daemon, finished, a, database, a_id)
        rb = await finish(daemon, finished, b, database, b_id)
        for r, path in ((ra, a_path), (rb, b_path)):
            assert r["recording_status"] == "ready", r["recording_error"]
            assert r["recording_channels"] == 2
            assert wav_is_closed(path)
            info = soundfile.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "PCM_16")
            assert abs(r["recording_duration"] - info.duration) < 0.01
            assert r["recording_bytes"] == path.stat().st_size
            assert r["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert sorted(p.name for p in path.parent.glob(f"{path.stem}*")) == [path.name]  # parts removed
            samples, _ = soundfile.read(str(path), dtype="int16")
            assert r["recording_left_rms_dbfs"] == pytest.approx(level(samples[:, 0]), abs=0.02)
            assert r["recording_right_rms_dbfs"] == pytest.approx(level(samples[:, 1]), abs=0.02)
        a_samples, _ = soundfile.read(str(a_path), dtype="int16")
        assert len(silent_runs(a_samples[:, 0], 8000, 0.5)) == 1  # the pause
        # The caller's tone is on the left only; the agent's speech on the right only.
        assert ra["recording_left_rms_dbfs"] > -30 and ra["recording_right_rms_dbfs"] == -120.0
        assert rb["recording_right_rms_dbfs"] > -45 and rb["recording_left_rms_dbfs"] == -120.0
        assert rb["recording_right_peak_dbfs"] > -20 and rb["recording_left_peak_dbfs"] == -120.0


async def test_bridged_only_unanswered_call_leaves_no_file_and_says_why(
        asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    async with running(asterisk, database, finished, mixmonitor_options="b") as daemon:
        call = await tester.place_call("400", context=CONTEXT, variables={"__CALLREC_TEST_AGENT_APP": tester.app})
        back = await call.handed_back()
        await tone_start(tester, await call.speak(TONE))  # the caller talks while it rings
        # The agent's phone rings out (Dial timeout: NOANSWER); the dialplan then hangs up.
        await finished.wait(call.callee_id)
        assert daemon.writer is not None and await daemon.writer.flush()
        r = await row(database, back["call_id"])
        assert r["consent"] == "implied" and r["bridged_at"] is None
        assert r["recording_status"] == "empty"
        assert "never answered" in r["recording_error"] and "NOANSWER" in r["recording_error"]
        assert "only while bridged" in r["recording_error"]
        assert r["recording_bytes"] == 0 and r["recording_sha256"] is None
        folder = daemon.settings.recordings.local_path / Path(r["recording_path"]).parent
        assert not list(folder.glob(f"{back['call_id']}*"))


async def test_bridged_only_never_bridged_call_leaves_no_file_and_says_why(
        asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    async with running(asterisk, database, finished, mixmonitor_options="b", stereo=True) as daemon:
        call = await tester.place_call("500", context=CONTEXT)
        back = await call.handed_back()
        await tone_start(tester, await call.speak(TONE))
        r = await finish(daemon, finished, call, database, back["call_id"])
        assert r["recording_status"] == "empty" and r["bridged_at"] is None
        assert "never bridged" in r["recording_error"] and "only while bridged" in r["recording_error"]
        folder = daemon.settings.recordings.local_path / Path(r["recording_path"]).parent
        assert not list(folder.glob(f"{back['call_id']}*"))  # no header-only file, no parts


def test_cli_recording_commands_fail_with_one_line(tmp_path: Path, asterisk: SandboxInfo, database: str) -> None:
    config = write_config(tmp_path / "callrec.toml", asterisk, database)
    missing = cli(config, "recording", "pause", str(uuid.uuid4()))
    assert missing.returncode == 1 and missing.stderr.startswith("callrec: no call") \
        and len(missing.stderr.splitlines()) == 1
    listed = cli(config, "recording", "pauses", str(uuid.uuid4()))
    assert listed.returncode == 0 and "(no pauses)" in listed.stdout
    usage = subprocess.run([*CALLREC, "-c", str(config), "recording", "pause"], capture_output=True, text=True,
                           timeout=30)
    assert usage.returncode == 2


async def test_stereo_call_paused_when_the_daemon_died_is_merged_and_closed_at_the_next_start(
        tmp_path: Path, asterisk: SandboxInfo, database: str, tester: Tester) -> None:
    config = tmp_path / "callrec.toml"
    config.write_text(callrec_config(asterisk, database, asterisk={"request_timeout": 2},
                                     recordings={"stereo": True}, notice={"decision_window": 1}))

    def serve(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        return subprocess.Popen([*CALLREC, "-c", str(config), "serve"], stdout=log, stderr=subprocess.STDOUT)

    first = serve("first")
    try:
        await wait_registered(tester)
        call, call_id = await place(tester, "300")
        await connect_agent(tester, call, set())
        await tone_start(tester, await call.speak(TONE))
        conn = await asyncpg.connect(database)
        try:
            async def recording() -> asyncpg.Record | None:
                r = await conn.fetchrow("SELECT recording_status, recording_path FROM calls WHERE id = $1",
                                        uuid.UUID(call_id))
                return r if r["recording_status"] == "recording" else None

            r = await wait_for(recording, 10, what="the row to show the recording")
        finally:
            await conn.close()
        path = Path(asterisk.local_recordings_dir) / r["recording_path"]
        rx = path.with_name(path.stem + "-rx.wav")
        await wait_heard(rx, 1.0)
        paused = await asyncio.to_thread(cli, config, "recording", "pause", call_id)
        assert paused.returncode == 0, paused.stderr
        await wait_silent(rx, 1.0)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    # The call ends, still paused, while no callrec runs.
    await call.hang_up()
    await tester.log.wait_for(lambda e: e.get("type") == "ChannelDestroyed"
                              and e["channel"]["id"] == call.callee_id, 10, "the unseen hang-up")
    second = serve("second")
    try:
        await wait_finalized(database, call.callee_id)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    r = await row(database, call_id)
    assert (r["recording_status"], r["recording_channels"]) == ("ready", 2), r["recording_error"]
    assert r["ended_at"] is not None and any("ended while callrec was down" in w for w in r["warnings"])
    info = soundfile.info(str(path))
    assert info.channels == 2 and abs(info.duration - r["recording_duration"]) < 0.01
    assert not rx.exists() and not path.with_name(path.stem + "-tx.wav").exists()
    samples, rate = soundfile.read(str(path), dtype="int16")
    runs = silent_runs(samples[:, 0], rate, 0.5)
    assert len(runs) == 1 and runs[0][1] == pytest.approx(len(samples) / rate, abs=0.05)  # paused to the end
    conn = await asyncpg.connect(database)
    try:
        pauses = await list_pauses(conn, call_id)
    finally:
        await conn.close()
    assert [(p.pause_source, p.resume_source) for p in pauses] == [("cli", "hangup")]
    assert pauses[0].resumed_at == r["ended_at"]  # when Asterisk last wrote the call's files
