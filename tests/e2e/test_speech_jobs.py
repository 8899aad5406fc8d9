"""The transcription queue in a real PostgreSQL (no Asterisk, no model): claiming with SKIP LOCKED in priority and
newest-first order, leases, backoff, failure, NOTIFY, the policy and backlog sampling at enqueue, and the
`callrec speech status | retry | requeue` commands with their audit entries."""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support.dataops_helpers import add_call, audit_rows, run_cli, settings_for, write_config

from callrec.analytics.queue import queue_finalized
from callrec.store import speechjobs

LEASE = 30.0


async def calls(conn: asyncpg.Connection, tmp_path: Path, n: int, **kw: Any) -> list[str]:
    out = []
    for _ in range(n):
        out.append(str((await add_call(conn, tmp_path / "recordings", **kw))["id"]))
    return out


async def test_claims_go_by_priority_then_newest_call_and_never_twice(conn: asyncpg.Connection, database: str,
                                                                     tmp_path: Path) -> None:
    ids = await calls(conn, tmp_path, 4)
    now = datetime.now(UTC)
    for k, cid in enumerate(ids):  # ids[3] is the newest call; ids[0] has the highest priority
        await speechjobs.enqueue(conn, cid, audio_ms=1000, language="en", reason="t",
                                 call_at=now - timedelta(minutes=10 - k), priority=5 if k == 0 else 0)
    assert not await speechjobs.enqueue(conn, ids[1], audio_ms=1000, language="en", reason="again")  # idempotent
    order = [(await speechjobs.claim(conn, "a:1", LEASE)) for _ in range(4)]
    assert [j["call_id"] for j in order if j] == [ids[0], ids[3], ids[2], ids[1]]
    assert all(j and j["state"] == "running" and j["worker"] == "a:1" and j["attempts"] == 1 for j in order)
    assert await speechjobs.claim(conn, "a:1", LEASE) is None


async def test_two_workers_claiming_at_once_take_different_jobs(conn: asyncpg.Connection, database: str,
                                                                tmp_path: Path) -> None:
    ids = await calls(conn, tmp_path, 2)
    for cid in ids:
        await speechjobs.enqueue(conn, cid, audio_ms=1000, language=None, reason="t")
    other = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            first = await speechjobs.claim(conn, "a:1", LEASE)  # its row stays locked until the commit
            second = await speechjobs.claim(other, "b:2", LEASE)
        assert first and second and {first["call_id"], second["call_id"]} == set(ids)
    finally:
        await other.close()


async def test_an_expired_lease_puts_the_job_back_and_the_last_try_fails_it(conn: asyncpg.Connection,
                                                                           tmp_path: Path) -> None:
    a, b = await calls(conn, tmp_path, 2)
    for cid in (a, b):
        await speechjobs.enqueue(conn, cid, audio_ms=1000, language=None, reason="t")
        await speechjobs.claim(conn, "gone:7", LEASE)
    await conn.execute("UPDATE speech_jobs SET lease_until = now() - interval '1 s'")
    await conn.execute("UPDATE speech_jobs SET attempts = 3 WHERE call_id = $1::uuid", b)
    lost = {x["call_id"]: x for x in await speechjobs.expire_leases(conn, max_attempts=3)}
    assert lost[a]["state"] == "pending" and lost[b]["state"] == "failed"
    assert lost[a]["error"] == "worker gone:7 stopped (its lease ran out)"
    # The old worker's late heartbeat and result are refused; the new holder's are taken.
    again = await speechjobs.claim(conn, "new:8", LEASE)
    assert again and again["call_id"] == a and again["attempts"] == 2
    assert not await speechjobs.heartbeat(conn, a, "gone:7", LEASE, 0.5)
    async with conn.transaction():
        assert not await speechjobs.finish(conn, a, "gone:7")
    assert await speechjobs.heartbeat(conn, a, "new:8", LEASE, 0.4)
    assert (await speechjobs.job(conn, a))["progress"] == pytest.approx(0.4)  # type: ignore[index]
    async with conn.transaction():
        assert await speechjobs.finish(conn, a, "new:8")


async def test_a_failed_try_waits_its_backoff_and_the_last_is_failed_for_good(conn: asyncpg.Connection,
                                                                            tmp_path: Path) -> None:
    (cid,) = await calls(conn, tmp_path, 1)
    await speechjobs.enqueue(conn, cid, audio_ms=1000, language=None, reason="t")
    await speechjobs.claim(conn, "w:1", LEASE)
    assert await speechjobs.fail(conn, cid, "w:1", "decoder said no", retry_in=60) == "pending"
    assert await speechjobs.claim(conn, "w:1", LEASE) is None  # not due for a minute
    await conn.execute("UPDATE speech_jobs SET next_attempt_at = now()")
    assert await speechjobs.claim(conn, "w:1", LEASE)
    assert await speechjobs.fail(conn, cid, "w:1", "decoder said no again", retry_in=None) == "failed"
    job = await speechjobs.job(conn, cid)
    assert job and job["state"] == "failed" and job["last_error"] == "decoder said no again" and job["done_at"]


async def test_enqueueing_notifies_listening_workers(conn: asyncpg.Connection, database: str, tmp_path: Path) -> None:
    (cid,) = await calls(conn, tmp_path, 1)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database)
    try:
        await listener.add_listener(speechjobs.CHANNEL, lambda *args: heard.put_nowait(args[2]))
        await speechjobs.enqueue(conn, cid, audio_ms=1000, language=None, reason="t")
        assert await asyncio.wait_for(heard.get(), 10) == speechjobs.CHANNEL
    finally:
        await listener.close()


async def test_finalized_calls_are_queued_once_under_the_policy_and_the_backlog_cap(
        conn: asyncpg.Connection, database: str, tmp_path: Path) -> None:
    rules = [{"name": "hr", "did": "900*", "transcribe": False}]
    recordings = tmp_path / "recordings"
    settings = settings_for(database, recordings, speech={"backlog_hours": 1, "backlog_keep_percent": 50},
                            policy={"rules": rules})
    wanted = await calls(conn, tmp_path, 3, seconds=0.5)
    hr = await calls(conn, tmp_path, 1, rule="hr")
    unfinished = await calls(conn, tmp_path, 1, finalized=False)
    old = await calls(conn, tmp_path, 1, age_days=30)
    assert await queue_finalized(conn, settings) == {"queued": 3, "skipped": 0}
    assert await queue_finalized(conn, settings) == {"queued": 0, "skipped": 0}  # idempotent
    jobs = {str(r["call_id"]): r for r in await conn.fetch("SELECT * FROM speech_jobs")}
    assert set(jobs) == set(wanted)  # not the rule's, not the unfinished call, not one past backfill_days
    assert all(jobs[c]["state"] == "pending" and jobs[c]["audio_ms"] == 500 for c in wanted)
    assert not set(jobs) & set(hr + unfinished + old)
    # Over the cap (2 h waiting): a draw under 50 % keeps a recording, the others are skipped with the reason.
    await conn.execute("UPDATE speech_jobs SET audio_ms = 2 * 3600 * 1000 WHERE call_id = $1::uuid", wanted[0])
    kept, dropped = await calls(conn, tmp_path, 2)
    assert await queue_finalized(conn, settings, [kept], draw=lambda: 0.2) == {"queued": 1, "skipped": 0}
    assert await queue_finalized(conn, settings, [dropped], draw=lambda: 0.7) == {"queued": 0, "skipped": 1}
    skipped = await speechjobs.job(conn, dropped)
    assert skipped and skipped["state"] == "skipped" and skipped["reason"].startswith("backlog: ")
    assert await speechjobs.claim(conn, "w:1", LEASE)  # skipped jobs are never claimed
    claimed = {j["call_id"] async for j in _drain(conn)}
    assert dropped not in claimed


async def _drain(conn: asyncpg.Connection) -> Any:
    while (job := await speechjobs.claim(conn, "w:1", LEASE)) is not None:
        yield job


async def test_status_retry_and_requeue_from_the_shell_are_audited(conn: asyncpg.Connection, database: str,
                                                                   tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    config = write_config(tmp_path / "callrec.toml", database, recordings)
    failed, running, done = await calls(conn, tmp_path, 3, seconds=2)
    for cid in (failed, running, done):
        await speechjobs.enqueue(conn, cid, audio_ms=2000, language=None, reason="t")
    for cid in (failed, running, done):
        await conn.execute("UPDATE speech_jobs SET priority = 1 WHERE call_id = $1::uuid", cid)
        job = await speechjobs.claim(conn, "host:42", LEASE)
        assert job and job["call_id"] == cid
        await conn.execute("UPDATE speech_jobs SET priority = 0 WHERE call_id = $1::uuid", cid)
    await speechjobs.fail(conn, failed, "host:42", "recording file: no such file", None)
    await speechjobs.heartbeat(conn, running, "host:42", LEASE, 0.4)
    async with conn.transaction():
        await speechjobs.finish(conn, done, "host:42")
    text = run_cli(config, "speech", "status")
    assert text.returncode == 0, text.stderr
    assert "0 pending, 1 running, 1 done, 1 failed, 0 skipped" in text.stdout
    assert "transcribing 40 %" in text.stdout and "recording file: no such file" in text.stdout
    doc = json.loads(run_cli(config, "speech", "status", "--json").stdout)
    assert doc["jobs"]["failed"] == 1 and doc["running"][0]["progress"] == 0.4
    assert doc["waiting_audio_ms"] == 1200 and doc["done_last_hour"] == {"jobs": 1, "audio_ms": 2000}
    assert doc["failures"][0]["call_id"] == failed
    who = f"cli:{getpass.getuser()}"
    retried = run_cli(config, "speech", "retry", "--failed")
    assert retried.returncode == 0 and "1 failed job(s) queued again" in retried.stdout
    job = await speechjobs.job(conn, failed)
    assert job and job["state"] == "pending" and job["attempts"] == 0 and job["reason"] == f"retry by {who}"
    assert [r["actor"] for r in await audit_rows(conn, failed, "speech_retry")] == [who]
    requeued = run_cli(config, "speech", "requeue", "--call", done)
    assert requeued.returncode == 0 and "1 call(s) queued" in requeued.stdout
    assert [r["actor"] for r in await audit_rows(conn, done, "speech_requeue")] == [who]
    busy = run_cli(config, "speech", "requeue", "--call", running)  # running now: left alone, and said so
    assert busy.returncode == 1 and "its job is running now" in busy.stderr
    since = run_cli(config, "speech", "requeue", "--since", "2000-01-01")
    assert since.returncode == 0 and "2 call(s) queued" in since.stdout  # all but the running one
    assert run_cli(config, "speech", "retry", "--call", done).returncode == 1  # not failed
    assert run_cli(config, "speech", "requeue", "--since", "yesterday").returncode == 2


async def test_priority_from_the_shell_puts_an_older_call_first_and_is_audited(
        conn: asyncpg.Connection, database: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "callrec.toml", database, tmp_path / "recordings")
    oldest, middle, newest = await calls(conn, tmp_path, 3, seconds=2)
    now = datetime.now(UTC)
    for k, cid in enumerate((oldest, middle, newest)):
        await conn.execute("UPDATE calls SET started_at = $2, ended_at = $2 WHERE id = $1::uuid", cid,
                           now - timedelta(minutes=10 - k))
    assert run_cli(config, "speech", "requeue", "--since", "2000-01-01").returncode == 0
    assert {j["priority"] for j in [await speechjobs.job(conn, c) for c in (oldest, middle, newest)] if j} == {0}
    urgent = run_cli(config, "speech", "requeue", "--call", oldest, "--priority", "50")
    assert urgent.returncode == 0, urgent.stderr
    entries = await audit_rows(conn, oldest, "speech_requeue")
    assert [e["details"].get("priority") for e in entries] == [None, 50]
    # Requeued again without --priority: the job keeps its own.
    assert run_cli(config, "speech", "requeue", "--call", oldest).returncode == 0
    assert [j["call_id"] async for j in _drain(conn)] == [oldest, newest, middle]
    await speechjobs.fail(conn, middle, "w:1", "recording file: no such file", None)
    retried = run_cli(config, "speech", "retry", "--call", middle, "--priority", "7")
    assert retried.returncode == 0, retried.stderr
    job = await speechjobs.job(conn, middle)
    assert job and (job["state"], job["priority"]) == ("pending", 7)
    for bad in ("101", "-1", "soon"):
        wrong = run_cli(config, "speech", "requeue", "--call", oldest, "--priority", bad)
        assert wrong.returncode == 2 and "--priority" in wrong.stderr and "0-100" in wrong.stderr
