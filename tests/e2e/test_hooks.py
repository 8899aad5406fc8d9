"""The post-recording hook runner against a real PostgreSQL, a real HTTP receiver and real processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support.hookprobe import PROBE, Attempts, Receiver
from support.settings import local_recordings, make_settings

from callrec.config.settings import Settings
from callrec.hooks import HookRunner, backoff, command_argv, redacted_url
from callrec.store.record import CallRecord

AUTH = "Bearer s3cret-token-value"
HMAC_KEY = "hmac-key-never-logged"


def settings_for(dsn: str, **hooks: Any) -> Settings:
    """Hooks retried quickly; ``hooks`` adds or overrides keys."""
    return make_settings(None, dsn, recordings=local_recordings(Path("/srv/rec")),
                         hooks={"retry_initial": 0.2, "retry_max": 1.0, **hooks})


async def add_call(pool: asyncpg.Pool, status: str = "ready") -> CallRecord:
    started = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    record = CallRecord(id=str(uuid.uuid4()), door="ari", uniqueid=f"u-{uuid.uuid4().hex[:8]}", started_at=started,
                        caller_number="+4930123", caller_name="Caller, \"quoted\"", called_number="100",
                        consent_mode="opt-out", consent="implied", recording_status=status,
                        recording_path=f"2026/11/27/{uuid.uuid4()}.wav", recording_duration=12.5,
                        recording_sha256="ab" * 32, record_policy="yes", policy_rule="support")
    await pool.execute("INSERT INTO calls (id, door, uniqueid, consent_mode, state, started_at) "
                       "VALUES ($1, 'ari', $2, 'opt-out', 'ended', $3)", record.id, record.uniqueid, started)
    return record


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield p
    await p.close()


async def jobs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM hook_jobs ORDER BY id")


async def runner_for(settings: Settings, pool: asyncpg.Pool, attempts: Attempts) -> HookRunner:
    runner = HookRunner(settings, pool, None, retry_delay=0.2)
    runner.on_attempt.append(attempts)
    runner.start()
    return runner


async def test_webhook_called_once_with_payload_auth_and_signature(database: str, pool: asyncpg.Pool,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = Receiver()
    await receiver.start()
    attempts = Attempts()
    s = settings_for(database, webhook_url=receiver.url + "?token=query-secret", webhook_auth=AUTH,
                     webhook_hmac_key=HMAC_KEY)
    runner = await runner_for(s, pool, attempts)
    try:
        record = await add_call(pool)
        runner.on_call_finalized(record)
        runner.on_call_finalized(record)  # finalized twice (a restart's follow-up): still one hook
        await attempts.wait(lambda a: any(x.ok for x in a), what="the webhook")
        await receiver.wait_until(lambda r: len(r.requests) == 1)
    finally:
        await runner.close()
        await receiver.stop()
    assert len(receiver.requests) == 1 and len(attempts.items) == 1
    req = receiver.requests[0]
    body = req["json"]
    assert body["event"] == "recording.finalized" and body["call_id"] == record.id
    assert body["recording"]["path"] == f"/srv/rec/{record.recording_path}"
    assert body["recording"]["asterisk_path"] == f"/var/spool/asterisk/callrec/{record.recording_path}"
    assert body["recording"]["sha256"] == "ab" * 32 and body["recording"]["duration"] == 12.5
    assert body["call"]["caller_name"] == "Caller, \"quoted\"" and body["policy"]["record"] == "yes"
    headers = req["headers"]
    assert headers["Authorization"] == AUTH and req["query"] == "token=query-secret"
    assert headers["Idempotency-Key"] == f"{record.id}:webhook" and headers["X-Callrec-Attempt"] == "1"
    expected = hmac.new(HMAC_KEY.encode(), headers["X-Callrec-Timestamp"].encode() + b"." + req["body"],
                        hashlib.sha256).hexdigest()
    assert headers["X-Callrec-Signature"] == f"sha256={expected}"
    rows = await jobs(pool)
    assert [(r["hook"], r["state"], r["attempts"], r["last_error"]) for r in rows] == [("webhook", "done", 1, None)]
    # Secrets never reach the log: not the Authorization value, not the HMAC key, not the query.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("callrec"))
    for secret in ("s3cret-token-value", HMAC_KEY, "query-secret"):
        assert secret not in ours
    assert f"webhook {redacted_url(receiver.url)}" in ours


async def test_webhook_retried_when_the_receiver_is_down_at_first(database: str, pool: asyncpg.Pool) -> None:
    receiver = Receiver()  # not listening yet: connection refused
    attempts = Attempts()
    runner = await runner_for(settings_for(database, webhook_url=receiver.url), pool, attempts)
    try:
        record = await add_call(pool)
        runner.on_call_finalized(record)
        await attempts.wait(lambda a: len(a) >= 1, what="the first attempt")
        first = attempts.items[0]
        assert not first.ok and not first.final and "Connect" in (first.error or "")
        row = (await jobs(pool))[0]
        assert row["state"] == "pending" and row["attempts"] == 1 and row["last_error"]
        await receiver.start()
        await attempts.wait(lambda a: any(x.ok for x in a), what="delivery after the receiver came up")
    finally:
        await runner.close()
        await receiver.stop()
    assert len(receiver.requests) == 1
    ok = [a for a in attempts.items if a.ok]
    assert len(ok) == 1 and ok[0].attempt == len(attempts.items) >= 2
    assert receiver.requests[0]["headers"]["X-Callrec-Attempt"] == str(ok[0].attempt)
    row = (await jobs(pool))[0]
    assert (row["state"], row["attempts"], row["last_error"]) == ("done", ok[0].attempt, None)


async def test_error_status_is_retried_then_gives_up_after_max_attempts(database: str, pool: asyncpg.Pool,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(statuses=[503, 500, 404, 503])
    await receiver.start()
    attempts = Attempts()
    runner = await runner_for(settings_for(database, webhook_url=receiver.url, max_attempts=3), pool, attempts)
    try:
        record = await add_call(pool)
        runner.on_call_finalized(record)
        await attempts.wait(lambda a: any(x.final for x in a), what="giving up")
    finally:
        await runner.close()
        await receiver.stop()
    assert [a.attempt for a in attempts.items] == [1, 2, 3] and not any(a.ok for a in attempts.items)
    assert [r["status"] for r in receiver.requests] == [503, 500, 404]
    row = (await jobs(pool))[0]
    assert (row["state"], row["attempts"]) == ("failed", 3) and "HTTP 404" in row["last_error"]
    assert "failed for good after 3 attempt(s)" in caplog.text
    assert backoff(1, 5, 900) == 5 and backoff(3, 5, 900) == 20 and backoff(40, 5, 900) == 900


async def test_command_hook_gets_argv_stdin_and_no_daemon_secrets(database: str, pool: asyncpg.Pool, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_ASTERISK_ARI_PASSWORD", "daemon-secret")
    monkeypatch.setenv("PGPASSWORD", "db-secret")
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = tmp_path / "out.jsonl"
    Path(f"{out}.fail").write_text("1")  # the first run fails: retried
    attempts = Attempts()
    command = [sys.executable, str(script), "{call_id}", "--file={file}", "{path}", "{status}", "{duration}", str(out)]
    runner = await runner_for(settings_for(database, command=command), pool, attempts)
    try:
        record = await add_call(pool, status="unclosed")
        runner.on_call_finalized(record)
        await attempts.wait(lambda a: any(x.ok for x in a), what="the command to succeed")
    finally:
        await runner.close()
    first, second = attempts.items[:2]
    assert not first.ok and "exit status 3" in (first.error or "") and "told to fail" in (first.error or "")
    assert second.ok and second.attempt == 2
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == 2
    run = runs[1]
    assert run["argv"] == [record.id, f"--file={record.recording_path}", f"/srv/rec/{record.recording_path}",
                           "unclosed", "12.500", str(out)]
    assert run["stdin"]["call_id"] == record.id and run["stdin"]["call"]["caller_number"] == "+4930123"
    assert run["env"] == {"CALLREC_CALL_ID": record.id, "CALLREC_RECORDING": f"/srv/rec/{record.recording_path}",
                          "CALLREC_HOOK_ATTEMPT": "2"}
    assert command_argv(("/x", "{call_id}{call_id}"), run["stdin"]) == ["/x", record.id * 2]


async def test_command_timeout_kills_it_and_missing_program_is_an_error(database: str, pool: asyncpg.Pool,
                                                                        tmp_path: Path) -> None:
    attempts = Attempts()
    s = settings_for(database, command=[sys.executable, "-c", "import time; time.sleep(60)"], command_timeout=0.5,
                     max_attempts=1)
    runner = await runner_for(s, pool, attempts)
    try:
        runner.on_call_finalized(await add_call(pool))
        await attempts.wait(lambda a: len(a) == 1, what="the timeout")
    finally:
        await runner.close()
    assert "killed after 0.5s" in (attempts.items[0].error or "") and attempts.items[0].final
    attempts = Attempts()
    runner = await runner_for(settings_for(database, command=[str(tmp_path / "nope")], max_attempts=1), pool, attempts)
    try:
        runner.on_call_finalized(await add_call(pool))
        await attempts.wait(lambda a: len(a) == 1, what="the exec error")
    finally:
        await runner.close()
    assert "cannot run" in (attempts.items[0].error or "")


async def test_pending_hooks_survive_a_restart(database: str, pool: asyncpg.Pool) -> None:
    receiver = Receiver()
    attempts = Attempts()
    s = settings_for(database, webhook_url=receiver.url, retry_initial=60, retry_max=60)
    first = await runner_for(s, pool, attempts)
    record = await add_call(pool)
    first.on_call_finalized(record)
    await attempts.wait(lambda a: len(a) == 1, what="the failed first attempt")
    await first.close()
    # A new daemon: the job is in the outbox, not due for a minute; make it due and start over.
    await pool.execute("UPDATE hook_jobs SET next_attempt_at = now()")
    await receiver.start()
    again = Attempts()
    second = await runner_for(s, pool, again)
    try:
        await again.wait(lambda a: any(x.ok for x in a), what="the restarted runner to deliver")
    finally:
        await second.close()
        await receiver.stop()
    assert len(receiver.requests) == 1 and receiver.requests[0]["json"]["call_id"] == record.id
    assert [(r["state"], r["attempts"]) for r in await jobs(pool)] == [("done", 2)]


async def test_concurrency_is_bounded_and_other_statuses_are_not_hooked(database: str, pool: asyncpg.Pool) -> None:
    import asyncio

    receiver = Receiver()
    receiver.hold = asyncio.Event()
    await receiver.start()
    attempts = Attempts()
    runner = await runner_for(settings_for(database, webhook_url=receiver.url, concurrency=2), pool, attempts)
    try:
        records = [await add_call(pool, status=status) for status in ("none", "empty", "missing", "failed")]
        records += [await add_call(pool) for _ in range(5)]
        for record in records:  # all at once, as when several calls end together
            runner.on_call_finalized(record)
        await receiver.wait_until(lambda r: r.in_flight == 2, what="two requests in flight")
        # Two are running; the other three wait in the outbox, unclaimed.
        assert sorted(r["attempts"] for r in await jobs(pool)) == [0, 0, 0, 1, 1]
        receiver.hold.set()
        await attempts.wait(lambda a: sum(x.ok for x in a) == 5, what="all five")
    finally:
        receiver.hold.set()
        await runner.close()
        await receiver.stop()
    assert receiver.most_in_flight == 2 and len(receiver.requests) == 5
    assert len(await jobs(pool)) == 5


async def test_start_up_sweep_queues_recordings_whose_hooks_were_never_queued(database: str,
                                                                              pool: asyncpg.Pool) -> None:
    receiver = Receiver()
    await receiver.start()
    s = settings_for(database, webhook_url=receiver.url)

    async def finalized(minutes_ago: float, status: str = "ready") -> CallRecord:
        record = await add_call(pool, status=status)
        await pool.execute("UPDATE calls SET recording_status = $2, recording_path = $3, "
                           "finalized_at = now() - make_interval(secs => $4) WHERE id = $1",
                           record.id, status, record.recording_path, minutes_ago * 60)
        return record

    fresh = HookRunner(s, pool, None)
    unhooked = await finalized(3)
    await fresh._sweep()
    assert fresh._incoming == []  # hooks never ran here: turning them on does not hook old recordings
    old = await finalized(10)
    await pool.execute("INSERT INTO hook_jobs (call_id, hook, payload, state, created_at) "
                       "VALUES ($1, 'webhook', '{}', 'done', now() - interval '10 minutes')", old.id)
    lost = await finalized(5)  # after the newest job, never queued: the process died in between
    await finalized(4, status="empty")
    runner = HookRunner(s, pool, None)
    await runner._sweep()
    # Now that hooks have run here, both finished recordings without a job are caught up, oldest first.
    assert [call_id for call_id, _ in runner._incoming] == [lost.id, unhooked.id]
    assert runner._incoming[0][1]["recording"]["file"] == lost.recording_path
    runner._incoming.clear()
    attempts = Attempts()
    runner.on_attempt.append(attempts)
    runner.start()  # the real start sweeps by itself
    try:
        await attempts.wait(lambda a: sum(x.ok for x in a) == 2, what="the swept hooks")
    finally:
        await runner.close()
        await receiver.stop()
    assert sorted(r["json"]["call_id"] for r in receiver.requests) == sorted([lost.id, unhooked.id])
