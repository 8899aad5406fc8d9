"""No call-log loss across a stop, and calls recorded while PostgreSQL is down (issue 10, item 13).

`callrec serve` processes against the real sandbox Asterisk, and PostgreSQL behind a TCP proxy the
test keeps refusing: the daemon starts without the database, records calls and journals them;
it is stopped (SIGTERM), started again still without the database, killed (SIGKILL), started
again; when the database comes back every call's row is complete, and none is there twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import soundfile
from caller import PlacedCall, Tester
from sandbox import SandboxInfo, callrec_config
from support.daemon_proc import CALLREC, wait_registered
from support.pgproxy import PgProxy
from support.waiting import wait_for

from callrec.store import journal


def journaled(folder: Path) -> dict[str, dict[str, Any]]:
    """The journal's merged changes by the call's uniqueid (what a restart would replay)."""
    state, _, _ = journal.read(folder / journal.FILE)
    by_uniqueid: dict[str, dict[str, Any]] = {}
    for call_id, fields in state.items():
        if "uniqueid" in fields:
            by_uniqueid[fields["uniqueid"]] = {**fields, "id": call_id}
    return by_uniqueid


async def recorded_calls(tester: Tester, folder: Path, count: int) -> list[PlacedCall]:
    """``count`` recorded calls, spoken to and hung up, each finalized in the journal."""
    calls = [await tester.place_call() for _ in range(count)]
    for call in calls:
        assert (await call.handed_back())["recording"]
    for call in calls:
        await call.spoken(await call.speak())
        await call.hang_up()
    for call in calls:
        await wait_for(lambda c=call: (journaled(folder).get(c.callee_id) or {}).get("finalized_at"), 40,
                       what=f"call {call.callee_id} finalized in the journal")
    return calls


async def test_calls_during_an_outage_survive_stop_kill_and_restarts(tmp_path: Path, asterisk: SandboxInfo,
                                                                     database: str, tester: Tester) -> None:
    proxy = PgProxy(database)
    await proxy.up()  # to have its port; the database is then down for the daemon
    await proxy.down()
    folder = tmp_path / "journal"
    cfg = tmp_path / "c.toml"
    cfg.write_text(callrec_config(asterisk, proxy.dsn, asterisk={"request_timeout": 2}, notice={"decision_window": 1},
                                  database={"journal_dir": str(folder)}, log={"level": "debug"}))
    logs: list[Path] = []

    def serve(name: str) -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"{name}.log")
        with open(logs[-1], "w") as log:
            return subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT)

    def log_of(i: int) -> str:
        return logs[i].read_text()

    async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
        # In a thread: the proxy runs on this loop, and the stopping daemon still talks through it.
        return await asyncio.to_thread(proc.wait, timeout)

    calls: list[PlacedCall] = []
    first = serve("first")
    try:
        await wait_registered(tester)
        await wait_for(lambda: "database unreachable at start" in log_of(0), 15, details=lambda: log_of(0)[-2000:])
        calls += await recorded_calls(tester, folder, 2)
    finally:
        first.send_signal(signal.SIGTERM)
        code = await exited(first, 20)
    assert code == 0, log_of(0)
    assert "are in the journal" in log_of(0)

    second = serve("second")
    try:
        await wait_for(lambda: "ARI events connected" in log_of(1), 15, details=lambda: log_of(1)[-2000:])
        calls += await recorded_calls(tester, folder, 2)
        # A call still going on when the daemon is killed, hung up while it is down.
        cut = await tester.place_call()
        assert (await cut.handed_back())["recording"]
        await cut.spoken(await cut.speak())
        await wait_for(lambda: (journaled(folder).get(cut.callee_id) or {}).get("recording_started_at"), 10,
                       what="the cut call's recording start journaled")
    finally:
        second.send_signal(signal.SIGKILL)
        await exited(second, 10)
    await cut.hang_up()
    assert "changes of 2 call(s) from an earlier run to write" in log_of(1), log_of(1)

    third = serve("third")
    try:
        # Logged at start (the ARI app of the killed run may still look registered a moment).
        await wait_for(lambda: "changes of 5 call(s) from an earlier run to write" in log_of(2), 15,
                       details=lambda: log_of(2)[-2000:])
        await wait_for(lambda: "ARI events connected" in log_of(2), 15, details=lambda: log_of(2)[-2000:])
        calls += await recorded_calls(tester, folder, 2)
        assert len(journaled(folder)) == 7
        assert not journaled(folder)[cut.callee_id].get("finalized_at")
        await proxy.up()  # the database is back
        conn = await asyncpg.connect(database)
        try:
            # The cut call, open in the journal, is followed up once its row is written: gone, closed.
            await wait_for(lambda: conn.fetchval("SELECT count(*) = 7 AND bool_and(finalized_at IS NOT NULL) "
                                                 "FROM calls"), 40, what="the seven calls written",
                           details=lambda: log_of(2)[-3000:])
            # Everything is written: the journal is emptied (a checkpoint).
            await wait_for(lambda: (folder / journal.FILE).stat().st_size == 0, 10, what="the journal emptied")
            rows = await conn.fetch("SELECT * FROM calls ORDER BY started_at")
            parties = await conn.fetchval("SELECT count(*) - count(DISTINCT (call_id, seq)) FROM call_parties")
        finally:
            await conn.close()
        assert "the database is back" in log_of(2)
    finally:
        third.send_signal(signal.SIGTERM)
        code = await exited(third, 20)
    assert code == 0, log_of(2)
    await proxy.down()

    # Every call once, complete: times, consent evidence, recording facts that match the file.
    by_uniqueid = {r["uniqueid"]: r for r in rows}
    assert len(by_uniqueid) == len(rows) == 7
    assert set(by_uniqueid) == {c.callee_id for c in calls} | {cut.callee_id}
    assert parties == 0
    lost = by_uniqueid[cut.callee_id]
    assert (lost["state"], lost["consent"], lost["recording_status"]) == ("ended", "implied", "ready")
    assert lost["ended_at"] is not None and lost["recording_sha256"] and lost["notice_prompt_sha256"]
    assert any("ended while callrec was down" in w for w in lost["warnings"]), lost["warnings"]
    assert "follow-up of 1 earlier call(s)" in log_of(2)
    for r in (by_uniqueid[c.callee_id] for c in calls):
        assert (r["state"], r["consent"], r["recording_status"]) == ("ended", "implied", "ready"), dict(r)
        assert r["started_at"] < r["handed_back_at"] <= r["ended_at"] <= r["finalized_at"]
        assert r["notice_prompt_sha256"] and r["notice_completed"] and r["notice_started_at"] \
            and r["notice_finished_at"] and r["recording_started_at"]
        path = Path(asterisk.local_recordings_dir) / r["recording_path"]
        assert abs(soundfile.info(str(path)).duration - r["recording_duration"]) < 0.01
        assert r["recording_bytes"] == path.stat().st_size and r["recording_rms_dbfs"] > -45
        assert not [w for w in r["warnings"] if "callrec was down" in w]  # never taken for a lost call
