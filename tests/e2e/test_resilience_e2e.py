"""Broken connections and hostile input, against the real Asterisk 22 + PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest
from caller import Finished, Tester
from sandbox import Sandbox
from support.daemon_proc import running_daemon
from support.pgproxy import PgProxy
from support.settings import make_settings
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.asterisk.ami import AmiUnavailable
from callrec.config.settings import Settings

HOSTILE = {
    "sql": "Robert'); DROP TABLE calls;--",
    "quotes": '"Bobby" \'Tables\' \\ back\\slash',
    "long": "Ж" * 300 + "A" * 724,  # 1 KB of characters, multi-byte included
    "emoji": "📞 Иван 😀 李",
    "control": "red\x1b[31m\x07bell\x08\ttab\r\nline",
    "bidi": "evil\u202etxt.exe",
}


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_hostile_caller_ids_are_stored_verbatim(daemon: Daemon, tester: Tester, finished: Finished,
                                                      database: str) -> None:
    calls = {}
    for key, name in HOSTILE.items():
        calls[key] = await tester.place_call(
            variables={"_CALLREC_TEST_SET_CID": "1", "_CALLREC_TEST_CID_NAME": name,
                       "_CALLREC_TEST_CID_NUM": f"+7 (495) {key}'--"})
    for call in calls.values():
        await call.handed_back()
        await call.hang_up()
    for call in calls.values():
        await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    for key, call in calls.items():
        (r,) = await fetch(database, "SELECT caller_name, caller_number FROM calls WHERE uniqueid = $1",
                           call.callee_id)
        assert r["caller_name"] == HOSTILE[key], key
        assert r["caller_number"] == f"+7 (495) {key}'--"
    assert len(await fetch(database, "SELECT id FROM calls")) == len(HOSTILE)  # the table survived


async def test_daemon_started_while_asterisk_is_down_connects_when_it_comes_up(
        sandbox: Sandbox, settings: Settings, finished: Finished) -> None:
    await asyncio.to_thread(sandbox.stop)
    daemon = Daemon(settings)
    try:
        await daemon.start()  # must not fail: Asterisk being down is waited for
        assert daemon.service is not None and daemon.door is not None and daemon.ami is not None
        daemon.service.on_call_finalized.append(finished)
        with pytest.raises(TimeoutError):
            await daemon.wait_ready(1.0)
        # While AMI is down an action fails at once instead of being queued for later.
        t0 = time.monotonic()
        with pytest.raises(AmiUnavailable):
            await daemon.ami.mix_monitor("Local/x", "/tmp/x.wav")
        assert time.monotonic() - t0 < 0.5
        await asyncio.to_thread(sandbox.start)
        await daemon.wait_ready(30)
        tester = Tester(sandbox.info().ari_url, sandbox.info().tester_ari_user, sandbox.info().tester_ari_password)
        await tester.start()
        try:
            call = await tester.place_call()
            back = await call.handed_back()
            assert back["consent"] == "implied" and back["recording"]
            await call.hang_up()
            record = await finished.wait(call.callee_id)
            assert record.recording_status in ("ready", "empty")
        finally:
            await tester.close()
    finally:
        await daemon.stop()


async def test_ari_websocket_drop_mid_call_is_recovered(daemon: Daemon, tester: Tester, finished: Finished,
                                                         database: str) -> None:
    assert daemon.door is not None
    call = await tester.place_call(args="mode=notice")
    await call.notice_started()
    before = daemon.door.stream.connections
    await daemon.door.stream.drop()
    # The call in progress still gets its consent and recording, decided after the re-sync.
    back = await call.handed_back(timeout=30)
    assert back["consent"] == "implied" and back["recording"]
    assert daemon.door.stream.connections > before
    await call.spoken(await call.speak())
    await call.hang_up()
    first = await finished.wait(call.callee_id)
    assert first.recording_status == "ready"
    # A later call works as usual.
    later = await tester.place_call(args="mode=opt-out")
    await later.notice_started()
    await later.press("9")
    assert (await later.handed_back())["consent"] == "declined"
    await later.hang_up()
    assert (await finished.wait(later.callee_id)).consent == "declined"


async def test_asterisk_restart_mid_run_reconnects_ari_and_ami(daemon: Daemon, sandbox: Sandbox,
                                                               tester: Tester, finished: Finished) -> None:
    assert daemon.door is not None and daemon.ami is not None
    logins = daemon.ami.logins
    connections = daemon.door.stream.connections
    await asyncio.to_thread(sandbox.stop)
    await asyncio.to_thread(sandbox.start)
    await daemon.wait_ready(30)
    # At least one new login each (an extra reconnect while Asterisk boots is fine).
    assert daemon.ami.logins > logins and daemon.door.stream.connections > connections
    await asyncio.wait_for(tester.stream.connected.wait(), 15)
    call = await tester.place_call()
    back = await call.handed_back()
    assert back["consent"] == "implied" and back["recording"]
    await call.spoken(await call.speak())
    await call.hang_up()
    assert (await finished.wait(call.callee_id)).recording_status == "ready"


async def test_failsafe_when_daemon_is_not_connected(asterisk, tester: Tester) -> None:
    """No daemon: the call is neither dropped nor delayed, and not recorded."""
    call = await tester.place_call(args="mode=opt-in")
    t0 = time.monotonic()
    back = await call.handed_back(timeout=10)
    assert back["consent"] == "unavailable" and back["recording"] == "" and back["call_id"] == ""
    assert time.monotonic() - t0 < 3.0
    # The caller is still connected to the "agent" part of the dialplan.
    channel = await tester.ari.get_channel(call.callee_id)
    assert channel["state"] == "Up"


async def test_caller_never_waits_on_the_database_and_nothing_is_lost(daemon: Daemon, tester: Tester,
                                                                      finished: Finished, database: str) -> None:
    """With the call log locked (as good as down), calls still get the notice and go on; the
    rows are written in full once the database answers again."""
    locker = await asyncpg.connect(database)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
    try:
        call = await tester.place_call(args="mode=opt-out")
        await call.notice_started(timeout=5)
        await call.press("9")
        back = await call.handed_back(timeout=20)
        assert back["consent"] == "declined"
        await call.hang_up()
        await finished.wait(call.callee_id)
        assert daemon.writer is not None
        assert not await daemon.writer.flush(timeout=0.5)  # still waiting on the lock
    finally:
        await tx.rollback()
        await locker.close()
    assert await daemon.writer.flush(timeout=15)
    (r,) = await fetch(database, "SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    assert (r["consent"], r["consent_key"], r["state"]) == ("declined", "9", "ended")
    assert r["notice_started_at"] is not None and r["ended_at"] is not None and r["finalized_at"] is not None


async def test_stopping_the_daemon_hands_callers_in_the_notice_back(daemon: Daemon, tester: Tester,
                                                                     database: str) -> None:
    call = await tester.place_call(args="mode=opt-in")
    await call.notice_started()
    t0 = time.monotonic()
    await daemon.stop()
    back = await call.handed_back(timeout=5)
    assert back["consent"] == "unavailable" and back["recording"] == ""
    assert time.monotonic() - t0 < 5
    (r,) = await fetch(database, "SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    assert (r["consent"], r["notice_completed"], r["recording_status"]) == ("unavailable", False, "none")
    assert any("callrec stopped during the notice" in w for w in r["warnings"])


async def test_hangup_nobody_reported_is_found_by_the_sweep(asterisk, database: str, tester: Tester,
                                                            finished: Finished,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 item 15: a call back in the dialplan whose hang-up neither ARI's websocket nor AMI
    delivered (both were down at that moment) is ended by the periodic sweep, as lost."""

    settings = make_settings(asterisk, database, asterisk={"sweep_interval": 1.0})
    async with running_daemon(settings, finished) as daemon:
        assert daemon.door is not None and daemon.ami is not None
        call = await tester.place_call()
        back = await call.handed_back()
        assert back["recording"]
        await call.spoken(await call.speak())
        # From here on, no event about this channel reaches the daemon, from ARI or from AMI.
        deliver, ami_hangup = daemon.door.stream.on_event, daemon.ami.on_hangup
        blocked: list[str] = []

        def ari_events(event: dict) -> None:
            if (event.get("channel") or {}).get("id") == call.callee_id:
                blocked.append(event["type"])
                return
            deliver(event)

        def ami_hangups(uniqueid: str, cause: int | None, cause_text: str | None) -> None:
            if uniqueid == call.callee_id:
                blocked.append("AMI Hangup")
                return
            assert ami_hangup is not None
            ami_hangup(uniqueid, cause, cause_text)

        daemon.door.stream.on_event, daemon.ami.on_hangup = ari_events, ami_hangups
        await call.hang_up()
        record = await finished.wait(call.callee_id, timeout=20)
        assert caplog.text.count("hang-up sweep: 1 call(s)") == 1
        assert "AMI Hangup" in blocked and "ChannelDestroyed" in blocked  # the hang-up really was not seen
        assert record.state == "ended" and record.ended_at is not None  # from the recording's last write
        assert any("hang-up not seen" in w for w in record.warnings), record.warnings
        assert record.recording_status == "ready"
        assert daemon.writer is not None and await daemon.writer.flush()
        (row,) = await fetch(database, "SELECT state, ended_at, warnings FROM calls WHERE uniqueid = $1",
                             call.callee_id)
        assert row["state"] == "ended" and row["ended_at"] is not None
        assert any("hang-up not seen" in w for w in row["warnings"])


async def test_database_outage_logs_one_warning_and_one_info(asterisk, database: str, tester: Tester,
                                                             finished: Finished,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 item 14: a real PostgreSQL outage (the daemon's connections cut, new ones refused)
    during recorded calls gives one WARNING when it starts, one INFO with the count of changes
    written when it ends, no traceback, and no pause-closing ERROR for calls never paused."""
    proxy = PgProxy(database)
    await proxy.up()
    settings = make_settings(asterisk, proxy.dsn)
    async with running_daemon(settings, finished) as daemon:
        assert daemon.writer is not None
        calls = [await tester.place_call() for _ in range(2)]
        for call in calls:
            assert (await call.handed_back())["recording"]
        assert await daemon.writer.flush()
        caplog.clear()
        caplog.set_level(logging.DEBUG)
        await proxy.down()
        for call in calls:
            await call.spoken(await call.speak())
            await call.hang_up()
        for call in calls:
            assert (await finished.wait(call.callee_id)).recording_status == "ready"
        failures = daemon.writer.failures
        await wait_for(lambda: daemon.writer is not None and daemon.writer.failures >= failures + 5, 30,
                       what="the writer kept retrying through the outage")
        await proxy.up()
        assert await daemon.writer.flush(timeout=30)
        back = await wait_for(lambda: [r for r in caplog.records if "call log: the database is back" in r.message],
                              10)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.name for r in loud] == ["callrec.calllog"], [r.getMessage() for r in loud]
        assert "database unreachable" in loud[0].getMessage()
        assert not [r for r in caplog.records if r.exc_info], "no traceback for a connection error"
        assert len(back) == 1 and back[0].levelno == logging.INFO
        assert "changes of 2 call(s) written" in back[0].getMessage(), back[0].getMessage()
    await proxy.down()
    rows = await fetch(database, "SELECT state, finalized_at FROM calls")
    assert len(rows) == 2 and all(r["state"] == "ended" and r["finalized_at"] for r in rows)
