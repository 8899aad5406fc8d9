"""The daemon with recordings going to a real S3-compatible server (SeaweedFS), encrypted at rest, through real
calls on the sandbox Asterisk: the bucket is down while calls are finalized (nothing is removed locally, the
outbox retries), the daemon restarts, the bucket comes back, and every recording ends up verified in the bucket
and served by the API from there."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import sandbox as sandbox_mod
from caller import Finished, Tester
from prometheus_client.parser import text_string_to_metric_families
from support.daemon_proc import running_daemon
from support.opsapi import PASSWORD
from support.s3server import BUCKET, S3Server
from support.settings import make_settings
from support.waiting import wait_for

from callrec.app import Daemon
from callrec.storage.crypto import MAGIC
from callrec.store import users


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def scrape(d: Daemon) -> dict[tuple[str, str], float]:
    """The storage samples of a scrape, parsed by Prometheus' own text parser: (name, state label) -> value."""
    await d.metrics.refresh()
    out = {}
    for family in text_string_to_metric_families(d.metrics.render().decode()):
        for sample in family.samples:
            if sample.name.startswith("callrec_storage"):
                out[(sample.name, sample.labels.get("state", ""))] = sample.value
    return out


async def test_calls_finalized_while_the_bucket_is_down_reach_it_after_a_restart(
        asterisk: sandbox_mod.SandboxInfo, database: str, tester: Tester, s3: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    key = tmp_path / "master.key"
    key.write_text(os.urandom(32).hex())
    prefix = f"d-{uuid.uuid4().hex[:8]}/"
    settings = make_settings(asterisk, database, http={"enabled": True, "listen": "127.0.0.1:0"}, storage={
        "kind": "s3", "endpoint": s3.endpoint, "bucket": BUCKET, "prefix": prefix, "local_grace": 0,
        "retry_delay": 1, "retry_max_delay": 2, "poll_interval": 1, "timeout": 3, "encrypt": True,
        "master_key_file": str(key)})
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        s3.stop()
        finished = Finished()
        ids = []
        try:
            async with running_daemon(settings, finished) as d:
                for _ in range(2):
                    call = await tester.place_call(args="mode=notice")
                    await call.answered()
                    await call.speak()
                    await call.handed_back()
                    await call.spoken(await call.speak())
                    await call.hang_up()
                    await finished.wait(call.callee_id)
                    ids.append(call.callee_id)
                assert d.writer is not None and await d.writer.flush()

                async def tried() -> bool:
                    rows = await pool.fetch("SELECT attempts FROM storage_outbox")
                    return len(rows) == 2 and all(r["attempts"] >= 1 for r in rows)
                await wait_for(tried, 30, what="both uploads tried and failed while the bucket is down")
                rows = await pool.fetch("SELECT c.recording_path, c.recording_sha256, o.state, o.last_error "
                                        "FROM calls c JOIN storage_outbox o ON o.path = c.recording_path")
                assert {r["state"] for r in rows} == {"pending"} and all(r["last_error"] for r in rows)
                figures = await scrape(d)
                assert figures[("callrec_storage_outbox", "pending")] == 2
                assert figures[("callrec_storage_upload_failures_total", "")] >= 2
                assert figures[("callrec_storage_uploads_total", "")] == 0
                assert figures[("callrec_storage_outbox_pending_bytes", "")] == sum(
                    int(b) for b in await pool.fetchval("SELECT array_agg(bytes) FROM storage_outbox"))
                assert figures[("callrec_storage_outbox_oldest_pending_seconds", "")] > 0
                local = settings.recordings.local_path
                for r in rows:  # nothing removed locally; sealed in place (not the WAV any more)
                    data = (local / r["recording_path"]).read_bytes()
                    assert data.startswith(MAGIC) and not data.startswith(b"RIFF")
        finally:
            s3.start()
        # The daemon restarted; the bucket is back: the outbox finishes the work, the local copies go.
        async with running_daemon(settings, finished) as d:
            async def done() -> bool:
                states = await pool.fetch("SELECT state FROM storage_outbox")
                return len(states) == 2 and all(s["state"] == "done" for s in states)
            await wait_for(done, 60, what="both recordings uploaded, verified and removed locally",
                           details=lambda: str(d.uploader.counters if d.uploader else None))
            async with pool.acquire() as conn:
                await users.add_user(conn, "admin1", "admin", PASSWORD, None)
                _, token = await users.create_token(conn, "admin-token", user="admin1")
            figures = await scrape(d)
            assert figures[("callrec_storage_outbox", "done")] == 2
            assert figures[("callrec_storage_outbox", "pending")] == 0
            assert figures[("callrec_storage_uploads_total", "")] == 2
            assert figures[("callrec_storage_local_removed_total", "")] == 2
            assert d.http is not None
            for r in rows:
                assert not (local / r["recording_path"]).exists()
                assert s3.get(prefix + r["recording_path"]).startswith(MAGIC)
            async with aiohttp.ClientSession() as http:
                for r in await pool.fetch("SELECT id, recording_sha256 FROM calls"):
                    async with http.get(f"http://127.0.0.1:{d.http.port}/api/v1/calls/{r['id']}/audio",
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                        body = await resp.read()
                        assert resp.status == 200 and body[:4] == b"RIFF"
                        assert hashlib.sha256(body).hexdigest() == r["recording_sha256"]
    finally:
        await pool.close()
