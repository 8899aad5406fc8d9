"""PostgreSQL failover under load (issue 12, item 4): callrec follows a promoted standby.

A real primary and a synchronous streaming standby (``pg_basebackup``, tests/support/pgpair.py), a
real `callrec serve` on the multi-host DSN (``target_session_attrs=read-write``) with the sandbox
Asterisk.  Calls go on while the primary is first fenced (``default_transaction_read_only``: its
connections refuse writes, the daemon must drop them), then stopped as by a crash, and the standby
promoted.  Every call's row is complete on the new primary, none is there twice, and the daemon's
log has one line for the switch."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
from caller import PlacedCall, Tester
from sandbox import SandboxInfo, callrec_config
from support.cli import run_cli
from support.daemon_proc import CALLREC, wait_registered
from support.opsapi import T0, call, insert_call, running_bench
from support.pgpair import PgPair, free_port, pg_pair
from support.waiting import wait_for

from callrec.store import migrate

DB = "callrec_failover"


async def make_database(pair: PgPair) -> None:
    admin = await asyncpg.connect(pair.admin_dsn(pair.primary_port))
    try:
        await admin.execute(f'CREATE DATABASE "{DB}"')
        # Synchronous: the primary waits for the standby, so nothing acknowledged is lost in a crash.
        await wait_for(lambda: admin.fetchval("SELECT state = 'streaming' AND sync_state = 'sync' "
                                              "FROM pg_stat_replication"), 30, what="the standby streaming in sync",
                       details=lambda: pair.log_of("standby")[-2000:])
    finally:
        await admin.close()
    conn = await asyncpg.connect(pair.admin_dsn(pair.primary_port, DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def answered(tester: Tester, count: int) -> list[PlacedCall]:
    """``count`` calls placed at once, each past the notice and recording, the caller talking."""
    calls = await asyncio.gather(*(tester.place_call() for _ in range(count)))
    for placed in calls:
        assert (await placed.handed_back())["recording"]
    speeches = [await placed.speak() for placed in calls]
    await asyncio.gather(*(placed.spoken(p) for placed, p in zip(calls, speeches, strict=True)))
    return list(calls)


async def test_promoted_standby_takes_over_under_load(tmp_path: Path, asterisk: SandboxInfo, tester: Tester) -> None:
    with pg_pair() as pair:
        await make_database(pair)
        log_path = tmp_path / "serve.log"
        cfg = tmp_path / "c.toml"
        cfg.write_text(callrec_config(asterisk, pair.failover_dsn(DB), asterisk={"request_timeout": 2},
                                      notice={"decision_window": 1}, log={"level": "info"},
                                      database={"journal_dir": str(tmp_path / "journal")}))

        def log_text() -> str:
            return log_path.read_text()

        with open(log_path, "w") as out:
            proc = subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=out, stderr=subprocess.STDOUT)
        primary = await asyncpg.connect(pair.admin_dsn(pair.primary_port, DB))
        try:
            await wait_for(lambda: "ARI events connected" in log_text(), 30, details=lambda: log_text()[-2000:])
            await wait_registered(tester)
            before = await answered(tester, 3)
            await asyncio.gather(*(c.hang_up() for c in before))
            await wait_for(lambda: primary.fetchval("SELECT count(*) = 3 AND bool_and(finalized_at IS NOT NULL) "
                                                    "FROM calls"), 40, what="the first calls written to the primary",
                           details=lambda: log_text()[-2000:])

            # Under load: calls going on while the primary is fenced, stopped and the standby promoted.
            during = await answered(tester, 3)
            await primary.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await primary.execute("SELECT pg_reload_conf()")
            await during[0].hang_up()  # a write the fenced primary refuses
            # The daemon drops its connections to the fenced server (and asyncpg refuses it as read-only).
            await wait_for(lambda: primary.fetchval("SELECT count(*) = 0 FROM pg_stat_activity "
                                                    "WHERE application_name = 'callrec'"), 20,
                           what="the daemon's connections to the fenced primary dropped",
                           details=lambda: log_text()[-2000:])
            await primary.close()
            pair.stop_primary("immediate")
            # No primary at all: a new call still gets its notice and is recorded.
            gap = await answered(tester, 1)
            await during[1].hang_up()
            pair.promote()
            await during[2].hang_up()
            await gap[0].hang_up()
            after = await answered(tester, 2)
            await asyncio.gather(*(c.hang_up() for c in after))
            calls = before + during + gap + after

            new_primary = await asyncpg.connect(pair.admin_dsn(pair.standby_port, DB))
            try:
                await wait_for(lambda: new_primary.fetchval(
                    "SELECT count(*) = $1 AND bool_and(finalized_at IS NOT NULL) FROM calls", len(calls)), 60,
                    what="every call finalized on the new primary", details=lambda: log_text()[-3000:])
                rows = await new_primary.fetch("SELECT * FROM calls")
                twice = await new_primary.fetchval(
                    "SELECT count(*) - count(DISTINCT (call_id, seq)) FROM call_parties")
                parties = await new_primary.fetchval("SELECT count(DISTINCT call_id) FROM call_parties")
            finally:
                await new_primary.close()
            await wait_for(lambda: "the database is back" in log_text(), 10, what="the writer's catch-up line")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 20)
        text = log_text()
        assert code == 0, text[-3000:]

    by_uniqueid = {r["uniqueid"]: r for r in rows}
    assert len(rows) == len(by_uniqueid) == len(calls) == 9
    assert set(by_uniqueid) == {c.callee_id for c in calls}
    assert twice == 0 and parties == 9
    for c in calls:
        r = by_uniqueid[c.callee_id]
        assert (r["state"], r["consent"], r["recording_status"]) == ("ended", "implied", "ready"), dict(r)
        assert r["started_at"] < r["handed_back_at"] <= r["ended_at"] <= r["finalized_at"]
        assert r["notice_prompt_sha256"] and r["notice_completed"] and r["recording_started_at"]
        path = Path(asterisk.local_recordings_dir) / r["recording_path"]
        assert r["recording_sha256"] and r["recording_bytes"] == path.stat().st_size
        assert not r["warnings"], r["warnings"]
    # One line for the switch; the writer's outage is one warning and one catch-up line, not one per write.
    switch = [line for line in text.splitlines() if "database: now on" in line]
    assert len(switch) == 1, text
    assert f"127.0.0.1:{pair.standby_port}" in switch[0] and f"was 127.0.0.1:{pair.primary_port}" in switch[0]
    assert text.count("database unreachable") == 1, text
    assert text.count("the database is back") == 1, text
    assert "Traceback" not in text and " ERROR " not in text, text


async def test_calls_list_is_read_from_the_replica_writes_go_to_the_primary(tmp_path: Path,
                                                                           asterisk: SandboxInfo) -> None:
    """``[database] read_dsn``: with the standby's replay paused, a call written on the primary is
    missing from the API's calls list, count and export (they read the replica), while the export's
    audit entry and a new tag are on the primary (writes never go to the replica)."""
    with pg_pair() as pair:
        await make_database(pair)
        replica = pair.admin_dsn(pair.standby_port, DB)
        primary = await asyncpg.connect(pair.admin_dsn(pair.primary_port, DB))
        standby = await asyncpg.connect(replica)
        try:
            async with running_bench(pair.admin_dsn(pair.primary_port, DB), tmp_path,
                                     {"database": {"read_dsn": replica}}) as bench, aiohttp.ClientSession() as http:
                seeded = len(bench.calls)
                await wait_for(lambda: standby.fetchval("SELECT count(*) = $1 FROM calls", seeded), 20,
                               what="the seeded calls replayed on the standby")
                await standby.execute("SELECT pg_wal_replay_pause()")
                await wait_for(lambda: standby.fetchval("SELECT pg_get_wal_replay_pause_state() = 'paused'"), 10)
                late = await insert_call(primary, bench.rec_dir, started=T0 + timedelta(hours=1), agent="202")

                status, body, _ = await call(http, bench, "GET", "/api/v1/calls?limit=100", "admin")
                assert status == 200, body
                listed = {item["id"] for item in json.loads(body)["items"]}
                assert listed == set(bench.calls.values()) and late not in listed
                status, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", "admin")
                assert (status, json.loads(body)["count"]) == (200, seeded)
                status, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=json", "admin")
                assert status == 200 and {r["id"] for r in json.loads(body)} == set(bench.calls.values())
                # The replica's own statistics saw the search: it was read there.
                assert await standby.fetchval("SELECT count(*) FROM pg_stat_activity "
                                              "WHERE application_name = 'callrec-api-read'") >= 1

                # Writes: the export's audit entry and a tag, on the primary (the replica refuses writes).
                assert await primary.fetchval("SELECT count(*) FROM audit_log WHERE action = 'export'") == 1
                status, body, _ = await call(http, bench, "POST", f"/api/v1/calls/{bench.calls['other']}/tags",
                                             "admin", json={"tag": "replica-test"})
                assert status == 201, body
                assert await primary.fetchval("SELECT count(*) FROM call_tags WHERE tag = 'replica-test'") == 1

                await standby.execute("SELECT pg_wal_replay_resume()")

                async def counted() -> bool:
                    status, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", "admin")
                    return status == 200 and json.loads(body)["count"] == seeded + 1

                await wait_for(counted, 20, what="the late call listed once the replica replays it")

            # `callrec check` names the replica as a standby, and an unreachable one in one line.
            cfg = tmp_path / "check.toml"
            cfg.write_text(callrec_config(asterisk, pair.admin_dsn(pair.primary_port, DB),
                                          database={"read_dsn": replica}))
            out = (await asyncio.to_thread(run_cli, cfg, "check")).stdout
            assert "ok   postgresql read replica: server " in out and ", a standby" in out, out
            gone = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/{DB}"
            cfg.write_text(callrec_config(asterisk, pair.admin_dsn(pair.primary_port, DB),
                                          database={"read_dsn": gone}))
            out = (await asyncio.to_thread(run_cli, cfg, "check")).stdout
            line = next(x for x in out.splitlines() if "read replica" in x)
            assert line.startswith("FAIL postgresql read replica: database.read_dsn: cannot connect to PostgreSQL at "
                                   "127.0.0.1:"), out
            assert "s3cret" not in out
        finally:
            await primary.close()
            await standby.close()
