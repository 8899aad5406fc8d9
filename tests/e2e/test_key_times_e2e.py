"""Each key pressed with its own time (issue 13), end to end on the real Asterisk 22 + PostgreSQL, through
both doors: a caller presses a key that means nothing during the notice, then, seconds later, the opt-in
key.  The call log keeps each key's time (``keys_at``), equal to Asterisk's own ChannelDtmfReceived event
(which the tester app sees too) within 50 ms, and the timeline API puts one event per key at that time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
from caller import Finished, PlacedCall, Tester
from support.daemon_proc import call_row as row
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.calls.session import State
from callrec.store import users

SLACK_MS = 50  # the bound between a stored key time and Asterisk's event


def asterisk_time(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


async def key_event(call: PlacedCall, digit: str) -> dict[str, Any]:
    """Asterisk's event for a key reaching the channel callrec serves (the tester app sees every event)."""
    return await call.tester.log.wait_for(
        lambda e: e.get("type") == "ChannelDtmfReceived" and e.get("digit") == digit
        and e["channel"]["id"] == call.callee_id, 10, f"Asterisk's event for key {digit}", call.since)


async def token(database: str) -> str:
    conn = await asyncpg.connect(database)
    try:
        await users.add_user(conn, "keys-super", "supervisor", None)
        return (await users.create_token(conn, "keys-token", user="keys-super"))[1]
    finally:
        await conn.close()


async def check(daemon: Daemon, finished: Finished, database: str, call: PlacedCall,
                events: list[dict[str, Any]]) -> None:
    """The stored times are Asterisk's, and the timeline API returns one event per key at them."""
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    r = await row(database, call.callee_id)
    assert (r["consent"], r["consent_key"], r["keys_pressed"]) == ("granted", "1", "51")
    assert len(r["keys_at"]) == 2
    for stored, event in zip(r["keys_at"], events, strict=True):
        off_ms = abs((stored - asterisk_time(event)).total_seconds()) * 1000
        assert off_ms <= SLACK_MS, (stored, event["timestamp"], off_ms)
    # Two moments, not one: the first key during the notice, the second after it, at the consent.
    assert r["keys_at"][0] < r["notice_finished_at"] <= r["keys_at"][1]
    assert (r["keys_at"][1] - r["keys_at"][0]).total_seconds() > 1
    assert abs((r["keys_at"][1] - r["consent_at"]).total_seconds()) * 1000 <= SLACK_MS

    assert daemon.http is not None and daemon.http.port
    secret = await token(database)
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{daemon.http.port}/api/v1/calls/{r['id']}/timeline",
            headers={"Authorization": f"Bearer {secret}"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    keys = [e for e in body["events"] if e["kind"] in ("key", "keys")]
    assert [(e["kind"], e["detail"]) for e in keys] == [("key", {"key": "5"}), ("key", {"key": "1"})]
    for e, stored in zip(keys, r["keys_at"], strict=True):
        assert datetime.fromisoformat(e["at"]) == stored
        assert e["call_ms"] == round((stored - r["started_at"]).total_seconds() * 1000)


async def test_each_key_is_logged_at_asterisks_time_ari(api_daemon: Daemon, tester: Tester, finished: Finished,
                                                        database: str) -> None:
    call = await tester.place_call(args="mode=opt-in")
    await call.answered()
    await call.notice_started()
    await call.press("5")  # means nothing in opt-in: kept, the notice goes on
    first = await key_event(call, "5")
    await call.playback_finished()  # the notice over: the window for the opt-in key
    await call.press("1")
    second = await key_event(call, "1")
    back = await call.handed_back()
    assert back["consent"] == "granted"
    await check(api_daemon, finished, database, call, [first, second])


async def test_each_key_is_logged_at_its_time_fastagi(api_daemon: Daemon, tester: Tester, finished: Finished,
                                                      database: str) -> None:
    assert api_daemon.agi is not None
    agi = api_daemon.agi
    call = await tester.place_call(args="mode=opt-in", context="callrec-test-agi",
                                   variables={"_CALLREC_AGI_SERVER": f"127.0.0.1:{agi.port}"})

    def session_in(state: State) -> bool:
        c = agi.calls.get(call.callee_id)
        return c is not None and c.session.state is state and c.session.record.notice_started_at is not None \
            and c.conn.busy

    await wait_for(lambda: session_in(State.NOTIFYING), 15, what="the notice to play over AGI")
    await call.press("5")
    first = await key_event(call, "5")
    await wait_for(lambda: session_in(State.AWAITING_KEY), 15, what="the notice to end and the window to open")
    await call.press("1")
    second = await key_event(call, "1")
    back = await call.handed_back()
    assert back["consent"] == "granted"
    await check(api_daemon, finished, database, call, [first, second])
