"""End to end on the real Asterisk 22 + PostgreSQL: notice, consent, MixMonitor, call log."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import soundfile
from caller import Finished, PlacedCall, Tester
from support.daemon_proc import call_row as row
from support.waiting import wait_for

from callrec.app import Daemon

SPEECH_RMS_FLOOR = -45.0  # dBFS: the caller's real speech is well above this; silence is -120


async def finish(daemon: Daemon, finished: Finished, call: PlacedCall, dsn: str) -> asyncpg.Record:
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    return await row(dsn, call.callee_id)


def local_file(daemon: Daemon, r: asyncpg.Record) -> Path:
    return daemon.settings.recordings.local_path / r["recording_path"]


async def test_notice_mode_records_with_implied_consent(daemon: Daemon, tester: Tester, finished: Finished,
                                                       database: str) -> None:
    call = await tester.place_call(args="mode=notice")
    await call.answered()
    await call.speak()
    started = await call.notice_started()
    assert started["playback"]["media_uri"].endswith("/en/notice")
    back = await call.handed_back()
    assert back["consent"] == "implied"
    assert back["recording"].endswith(".wav") and back["recording"].startswith(daemon.settings.recordings.dir)
    # The row exists while the call is in progress.
    assert daemon.writer is not None and await daemon.writer.flush()
    live = await row(database, call.callee_id)
    assert live["state"] == "in_dialplan" and live["recording_status"] == "recording" and live["ended_at"] is None
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["consent"], r["recording_status"]) == ("notice", "implied", "ready")
    assert r["notice_completed"] is True
    assert r["notice_prompt"].endswith("/en/notice.wav")
    prompt_file = daemon.settings.notice.local_prompts_path / "en" / "notice.wav"
    assert r["notice_prompt_sha256"] == hashlib.sha256(prompt_file.read_bytes()).hexdigest()
    assert r["started_at"] <= r["notice_started_at"] < r["notice_finished_at"] <= r["consent_at"]
    assert r["consent_at"] <= r["recording_started_at"] <= r["handed_back_at"] <= r["ended_at"]
    assert r["caller_number"] == "5551000" and r["caller_name"] == "Test Caller"
    assert r["called_number"] == "100" and r["context"] == "callrec-test-in"
    assert r["linkedid"] and r["channel"].startswith("Local/100@callrec-test-in")
    assert r["hangup_cause"] is not None
    # The file: a real WAV, the recorded part of the call, the caller's voice, the stored hash.
    path = local_file(daemon, r)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels) == (8000, 1)
    recorded = (r["ended_at"] - r["recording_started_at"]).total_seconds()
    assert abs(info.duration - recorded) < 0.5, (info.duration, recorded)
    assert abs(r["recording_duration"] - info.duration) < 0.01
    assert r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR
    assert r["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert r["recording_bytes"] == path.stat().st_size


async def test_opt_out_key_during_notice_declines(daemon: Daemon, tester: Tester, finished: Finished,
                                                  database: str) -> None:
    call = await tester.place_call(args="mode=opt-out")
    await call.answered()
    await call.notice_started()
    await call.press("9")
    back = await call.handed_back()
    assert back["consent"] == "declined" and back["recording"] == ""
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["consent_key"], r["notice_completed"]) == ("declined", "9", False)
    assert r["recording_status"] == "none" and r["recording_path"] is None
    assert not list(daemon.settings.recordings.local_path.rglob(f"{r['id']}*"))


async def test_opt_out_without_key_records(daemon: Daemon, tester: Tester, finished: Finished,
                                           database: str) -> None:
    call = await tester.place_call(args="mode=opt-out")
    await call.answered()
    await call.speak()
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["recording"]
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["consent"], r["consent_key"]) == ("opt-out", "implied", None)
    # The decision came after the window that followed the notice.
    window = (r["consent_at"] - r["notice_finished_at"]).total_seconds()
    assert window >= daemon.settings.notice.decision_window - 0.05
    assert r["recording_status"] == "ready" and local_file(daemon, r).exists()


async def test_opt_in_key_grants(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    call = await tester.place_call(args="mode=opt-in")
    await call.answered()
    await call.speak()
    await call.playback_finished()  # key pressed in the window after the notice
    await call.press("1")
    back = await call.handed_back()
    assert back["consent"] == "granted" and back["recording"]
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["consent_key"], r["notice_completed"]) == ("granted", "1", True)
    assert r["recording_status"] == "ready" and r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


async def test_opt_in_without_key_is_not_recorded(daemon: Daemon, tester: Tester, finished: Finished,
                                                  database: str) -> None:
    call = await tester.place_call(args="mode=opt-in")
    await call.notice_started()
    await call.press("5")  # a key that means nothing here
    back = await call.handed_back()
    assert back["consent"] == "not_given" and back["recording"] == ""
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["consent_key"], r["recording_status"]) == ("not_given", None, "none")
    assert "5" in r["keys_pressed"]


async def test_hangup_during_notice_is_logged_and_not_recorded(daemon: Daemon, tester: Tester, finished: Finished,
                                                               database: str) -> None:
    call = await tester.place_call(args="mode=notice")
    await call.answered()
    await call.notice_started()
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], r["notice_completed"], r["recording_status"]) == ("abandoned", False, "none")
    assert r["state"] == "ended" and r["ended_at"] is not None and r["recording_path"] is None
    assert not list(daemon.settings.recordings.local_path.rglob(f"{r['id']}*"))


async def test_caller_language_picks_the_prompt(daemon: Daemon, tester: Tester, finished: Finished,
                                                database: str) -> None:
    ru = await tester.place_call(lang="ru")
    en = await tester.place_call(lang="en")
    de = await tester.place_call(lang="de")  # no German prompts: the default language
    media = {}
    for name, call in (("ru", ru), ("en", en), ("de", de)):
        media[name] = (await call.notice_started())["playback"]["media_uri"]
    assert media["ru"].endswith("/ru/notice") and media["en"].endswith("/en/notice")
    assert media["de"].endswith("/en/notice")
    for call in (ru, en, de):
        await call.hang_up()
    for call in (ru, en, de):
        await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    r = await row(database, ru.callee_id)
    assert (r["language"], r["channel_language"]) == ("ru", "ru") and r["notice_prompt"].endswith("/ru/notice.wav")
    r = await row(database, de.callee_id)
    assert (r["language"], r["channel_language"]) == ("en", "de")


async def test_twenty_simultaneous_calls(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    calls = [await tester.place_call(caller_id=f'"Caller {i}" <70000{i:02d}>') for i in range(20)]
    backs = await asyncio.gather(*(c.handed_back(timeout=60) for c in calls))
    assert [b["consent"] for b in backs] == ["implied"] * 20, backs
    speech = await asyncio.gather(*(c.speak() for c in calls))
    await asyncio.gather(*(c.spoken(pid) for c, pid in zip(calls, speech, strict=True)))
    for c in calls:
        await c.hang_up()
    await finished.wait_count(20, timeout=90)
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT * FROM calls")
    finally:
        await conn.close()
    assert len(rows) == 20
    assert sorted(r["caller_number"] for r in rows) == sorted(f"70000{i:02d}" for i in range(20))
    assert len({r["recording_path"] for r in rows}) == 20
    for r in rows:
        assert r["recording_status"] == "ready", (r["caller_number"], r["recording_status"], r["recording_error"])
        assert local_file(daemon, r).exists() and r["recording_duration"] > 0


async def test_call_over_real_sip(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    call = await tester.place_sip_call()
    await call.answered()
    await call.speak()
    started = await tester.log.wait_for(
        lambda e: e.get("type") == "PlaybackStarted" and e["playback"]["media_uri"].endswith("/en/notice"),
        15, "the notice on the SIP call")
    call.callee_id = started["playback"]["target_uri"].partition(":")[2]
    back = await call.handed_back()
    assert back["consent"] == "implied"
    await call.spoken(await call.speak())
    r = await finish(daemon, finished, call, database)
    assert r["channel"].startswith("PJSIP/self-")
    assert (r["caller_number"], r["caller_name"]) == ("5552000", "SIP Caller")
    assert r["recording_status"] == "ready" and r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


async def test_second_pass_through_callrec_plays_the_notice_once(daemon: Daemon, tester: Tester,
                                                                 finished: Finished, database: str) -> None:
    call = await tester.place_call(exten="200", args="mode=opt-out")
    await call.notice_started()
    await call.press("9")
    back = await call.handed_back()
    assert back["consent"] == "declined" and back["first"] == "declined" and back["call_id"]
    notices = [e for e in tester.log.events if e.get("type") == "PlaybackStarted"
               and e["playback"]["target_uri"] == f"channel:{call.callee_id}"]
    assert len(notices) == 2  # the notice, then "this call will not be recorded"; nothing more
    r = await finish(daemon, finished, call, database)
    assert (r["consent"], str(r["id"])) == ("declined", back["call_id"])
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM calls") == 1
    finally:
        await conn.close()


async def test_prompts_reload_on_sighup(daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    """An admin adds a language and sends SIGHUP: the next call hears it, with its own hash."""
    import os
    import shutil
    import signal

    prompts = daemon.settings.notice.local_prompts_path
    added = prompts / "xx"
    shutil.copytree(prompts / "en", added)
    try:
        (added / "notice.wav").write_bytes((prompts / "ru" / "notice.wav").read_bytes())
        reloaded = asyncio.get_running_loop().create_future()
        original = daemon.reload_prompts

        async def spy() -> bool:
            ok = await original()
            reloaded.set_result(ok)
            return ok

        daemon.reload_prompts = spy  # type: ignore[method-assign]
        runner = asyncio.create_task(daemon.run_until_stopped())
        await asyncio.wait_for(daemon.signals_ready.wait(), 5)
        os.kill(os.getpid(), signal.SIGHUP)
        assert await asyncio.wait_for(reloaded, 10) is True
        call = await tester.place_call(lang="xx")
        assert (await call.notice_started())["playback"]["media_uri"].endswith("/xx/notice")
        await call.hang_up()
        await finished.wait(call.callee_id)
        assert daemon.writer is not None and await daemon.writer.flush()
        r = await row(database, call.callee_id)
        assert r["notice_prompt"].endswith("/xx/notice.wav")
        assert r["notice_prompt_sha256"] == hashlib.sha256((added / "notice.wav").read_bytes()).hexdigest()
        daemon.stopping.set()
        await asyncio.wait_for(runner, 5)
    finally:
        shutil.rmtree(added)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)


async def test_stop_mix_monitor_closes_the_file_while_the_call_goes_on(daemon: Daemon, tester: Tester,
                                                                       finished: Finished, database: str) -> None:
    from callrec.recording.files import wav_is_closed

    call = await tester.place_call()
    back = await call.handed_back()
    await call.spoken(await call.speak())
    assert daemon.ami is not None
    channel = (await tester.ari.get_channel(call.callee_id))["name"]
    path = daemon.settings.recordings.local_path / back["recording"].removeprefix(daemon.settings.recordings.dir + "/")
    assert not wav_is_closed(path)  # MixMonitor is still writing
    await daemon.ami.stop_mix_monitor(channel)
    # Asterisk closes the file on its own thread
    await wait_for(lambda: wav_is_closed(path), 5, what="StopMixMonitor to close the file")
    assert (await tester.ari.get_channel(call.callee_id))["state"] == "Up"  # the call goes on
    r = await finish(daemon, finished, call, database)
    assert r["recording_status"] == "ready" and r["recording_rms_dbfs"] > SPEECH_RMS_FLOOR


async def test_called_number_cannot_smuggle_options(daemon: Daemon, tester: Tester, finished: Finished,
                                                    database: str) -> None:
    """The far end picks ${EXTEN}: commas in it must not become Stasis arguments."""
    call = await tester.place_call(exten="100,mode=opt-in,did=999", args="mode=notice")
    back = await call.handed_back()
    assert back["consent"] == "implied"  # notice mode as configured, not the smuggled opt-in
    r = await finish(daemon, finished, call, database)
    assert (r["consent_mode"], r["called_number"]) == ("notice", "100modeoptindid999")
