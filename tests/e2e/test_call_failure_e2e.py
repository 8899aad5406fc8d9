"""Both doors end a call that hits an internal error the same way: the caller is handed back at
once, unrecorded, and the call log says what the dialplan was told (real Asterisk + PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest
from caller import Finished, PlacedCall, Tester

from callrec.app import Daemon
from callrec.calls.session import Action, CallSession


async def place(door: str, daemon: Daemon, tester: Tester) -> PlacedCall:
    if door == "ari":
        return await tester.place_call(args="mode=notice")
    assert daemon.agi is not None
    return await tester.place_call(args="mode=notice", context="callrec-test-agi",
                                   variables={"_CALLREC_AGI_SERVER": f"127.0.0.1:{daemon.agi.port}"})


@pytest.mark.parametrize("door", ["ari", "agi"])
async def test_an_internal_error_ends_the_call_the_same_way_through_both_doors(
        door: str, daemon: Daemon, tester: Tester, finished: Finished, database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: CallSession, now: datetime) -> list[Action]:
        raise RuntimeError("injected failure at the end of the notice")

    monkeypatch.setattr(CallSession, "notice_finished", broken)
    call = await place(door, daemon, tester)
    await call.answered()
    back = await call.handed_back()
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        live = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
        assert live is not None
        # What the dialplan was told is what the row says: set by callrec, not by the fail-safe.
        assert back["call_id"] == str(live["id"])
        assert back["consent"] == live["consent"] == "unavailable"
        assert back["recording"] == "" and live["recording_status"] == "none"
        assert (live["door"], live["state"]) == (door, "in_dialplan")
        assert live["handed_back_at"] is not None and live["notice_completed"] is False
        assert any("internal error during the notice (RuntimeError: injected failure" in w
                   for w in live["warnings"]), live["warnings"]
        await call.hang_up()
        await finished.wait(call.callee_id)
        assert await daemon.writer.flush()
        ended = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    finally:
        await conn.close()
    assert ended["state"] == "ended" and ended["consent"] == "unavailable" and ended["ended_at"] is not None
