"""The daemon process killed mid-call (SIGKILL) and started again: nothing is left half-done."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import asyncpg
import soundfile
from caller import Tester
from sandbox import SandboxInfo
from support.daemon_proc import CALLREC, wait_finalized, wait_registered, wait_row, write_config


async def test_crash_mid_call_is_followed_up_at_the_next_start(tmp_path: Path, asterisk: SandboxInfo,
                                                                database: str, tester: Tester) -> None:
    cfg = write_config(tmp_path / "c.toml", asterisk, database)

    def serve(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        return subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT)

    first = serve("first")
    try:
        await wait_registered(tester)
        # ends_unseen: recorded, hangs up while callrec is down.
        # goes_on: recorded, still talking when callrec comes back.
        # in_notice: still hearing the (opt-in) notice when callrec dies.
        ends_unseen = await tester.place_call()
        goes_on = await tester.place_call()
        assert (await ends_unseen.handed_back())["recording"]
        assert (await goes_on.handed_back())["recording"]
        await ends_unseen.spoken(await ends_unseen.speak())
        await goes_on.spoken(await goes_on.speak())
        in_notice = await tester.place_call(args="mode=opt-in")
        await in_notice.notice_started()
        await wait_row(database, in_notice.callee_id)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    await ends_unseen.hang_up()
    await tester.log.wait_for(lambda e: e.get("type") == "ChannelDestroyed"
                              and e["channel"]["id"] == ends_unseen.callee_id, 10, "the unseen hang-up")

    second = serve("second")
    try:
        await wait_finalized(database, ends_unseen.callee_id)
        # The caller left waiting in the notice hears it again and can answer it now.
        await in_notice.press("1")
        back = await in_notice.handed_back()
        assert back["consent"] == "granted"
        await goes_on.spoken(await goes_on.speak())
        await goes_on.hang_up()
        await in_notice.hang_up()
        await wait_finalized(database, goes_on.callee_id)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0

    conn = await asyncpg.connect(database)
    try:
        rows = {r["uniqueid"]: r for r in await conn.fetch("SELECT * FROM calls WHERE uniqueid <> $1",
                                                          in_notice.callee_id)}
        notice_rows = await conn.fetch("SELECT * FROM calls WHERE uniqueid = $1 ORDER BY started_at",
                                       in_notice.callee_id)
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE finalized_at IS NULL") == 0
    finally:
        await conn.close()

    r = rows[ends_unseen.callee_id]
    assert (r["state"], r["consent"], r["recording_status"]) == ("ended", "implied", "ready")
    assert r["ended_at"] is not None and any("ended while callrec was down" in w for w in r["warnings"])
    path = Path(asterisk.local_recordings_dir) / r["recording_path"]
    assert abs(soundfile.info(str(path)).duration - r["recording_duration"]) < 0.01
    assert r["recording_rms_dbfs"] > -45

    r = rows[goes_on.callee_id]
    assert (r["state"], r["recording_status"], r["hangup_cause"] is not None) == ("ended", "ready", True)
    assert any("followed again" in w for w in r["warnings"])
    # One file across the restart: the speech before the crash and the speech after it.
    # (A Local channel carries no frames while nobody talks, so silence adds nothing here.)
    speech_file = Path(asterisk.root) / "usr/share/asterisk/sounds/en_US_f_Allison/vm-intro.wav"
    speech = soundfile.info(str(speech_file)).duration
    assert abs(r["recording_duration"] - 2 * speech) < 0.5, (r["recording_duration"], speech)

    old, new = notice_rows
    assert (old["consent"], old["state"], old["recording_status"]) == ("unavailable", "ended", "none")
    assert any("taken up again" in w for w in old["warnings"])
    assert (new["consent"], new["consent_key"]) == ("granted", "1")
    assert any("adopted after a daemon restart" in w for w in new["warnings"])
