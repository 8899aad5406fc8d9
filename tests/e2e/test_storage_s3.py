"""Recordings in a real S3-compatible server (SeaweedFS, tests/support/s3server.py) and encrypted at rest: the
outbox's upload and read-back, Range streaming through the API, verify, deletion, evidence export checked with
OpenSSL, a storage outage and a restart, `storage migrate`, the wrong master key and key rotation.  PostgreSQL and
the S3 server are real; no Asterisk is needed (call rows and WAV files as the daemon leaves them)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.dataops_helpers import add_call, run_cli, write_config
from support.opsapi import PASSWORD, api_settings
from support.s3server import BUCKET, S3Server

from callrec.access import cli_principal
from callrec.config.dataops import IntegritySettings, RetentionSettings
from callrec.dataops.evidence import generate_key
from callrec.dataops.integrity import verify
from callrec.dataops.retention import run_retention
from callrec.dataops.subjects import erase_subject
from callrec.storage import Storage, WrongMasterKey
from callrec.storage.crypto import CHUNK, HEADER, MAGIC
from callrec.storage.outbox import Uploader
from callrec.store import users
from callrec.web.server import HttpServer

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclasses.dataclass
class Bench:
    s3: S3Server
    pool: asyncpg.Pool
    rec: Path
    storage: Storage
    prefix: str
    base: str
    token: str
    settings: object
    tmp: Path

    def key(self, rel: str) -> str:
        return self.prefix + rel

    async def call(self, seconds: float = 10.0, caller: str = "+15550001", age_days: float = 0.0) -> dict:
        async with self.pool.acquire() as conn:
            c = await add_call(conn, self.rec, seconds=seconds, caller=caller, age_days=age_days)
        c["plain"] = c["path"].read_bytes()
        return c

    async def upload_all(self, uploader: Uploader | None = None) -> list[str]:
        up = uploader or Uploader(self.storage, self.pool)
        outcomes: list[str] = []
        up.on_step.append(lambda _path, outcome: outcomes.append(outcome))
        await up.sweep()
        while await up.run_due():
            pass
        return outcomes

    async def expire_grace(self) -> list[str]:
        await self.pool.execute("UPDATE storage_outbox SET next_at = now() WHERE state = 'verified'")
        return await self.upload_all()


def master_key_file(tmp: Path, name: str = "master.key") -> Path:
    path = tmp / name
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


async def make_bench(s3: S3Server, database: str, tmp_path: Path, *, encrypt: bool, grace: int = 3600,
                     key: Path | None = None) -> Bench:
    rec = tmp_path / "recordings"
    rec.mkdir(exist_ok=True)
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    storage_keys: dict[str, object] = {"kind": "s3", "endpoint": s3.endpoint, "bucket": BUCKET, "prefix": prefix,
                                       "local_grace": grace, "retry_delay": 1, "timeout": 5}
    if encrypt:
        storage_keys |= {"encrypt": True, "master_key_file": str(key or master_key_file(tmp_path))}
    signing = tmp_path / "signing.pem"
    generate_key(signing)
    settings = api_settings(database, rec, {"storage": storage_keys})
    settings = dataclasses.replace(settings, integrity=IntegritySettings(signing_key=str(signing)))
    storage = Storage.of(settings, environ=s3.env)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await users.add_user(conn, "admin1", "admin", PASSWORD, None)
        _, token = await users.create_token(conn, "admin-token", user="admin1")
    return Bench(s3, pool, rec, storage, prefix, "", token, settings, tmp_path)


@pytest.fixture(params=["plain", "encrypted"])
async def bench(request: pytest.FixtureRequest, s3: S3Server, database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    b = await make_bench(s3, database, tmp_path, encrypt=request.param == "encrypted")
    server = HttpServer(b.settings, b.pool, storage=b.storage)  # type: ignore[arg-type]
    await server.start()
    b.base = f"http://127.0.0.1:{server.port}"
    try:
        yield b
    finally:
        await server.stop()
        await b.pool.close()


async def get_audio(b: Bench, call_id: str, rng: str | None = None) -> tuple[int, bytes, dict]:
    headers = {"Authorization": f"Bearer {b.token}"}
    if rng:
        headers["Range"] = rng
    async with aiohttp.ClientSession() as http, http.get(f"{b.base}/api/v1/calls/{call_id}/audio",
                                                         headers=headers) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_upload_read_back_grace_and_range_streaming_from_the_bucket(bench: Bench) -> None:
    b = bench
    calls = [await b.call(seconds=10.0), await b.call(seconds=3.3)]
    assert await b.upload_all() == ["verified", "verified"]
    encrypted = b.storage.settings.encrypt
    for c in calls:
        obj = b.s3.get(b.key(c["rel"]))
        local = c["path"].read_bytes()
        if encrypted:  # on disk and in the bucket: the sealed form, never the WAV
            assert obj.startswith(MAGIC) and local == obj and c["plain"][:4] == b"RIFF"
            assert c["plain"][HEADER:HEADER + 4096] not in obj
            assert b.key(c["rel"]) + ".key" in b.s3.keys()
        else:
            assert obj == c["plain"] == local
    rows = await b.pool.fetch("SELECT state, verified_at, local_removed_at FROM storage_outbox")
    assert {r["state"] for r in rows} == {"verified"} and all(r["local_removed_at"] is None for r in rows)
    # Still in its grace: served from the local copy.  Then the grace ends: the local copy goes, the object stays.
    status, body, _ = await get_audio(b, calls[0]["id"])
    assert status == 200 and body == calls[0]["plain"]
    assert await b.expire_grace() == ["local_removed", "local_removed"]
    assert not calls[0]["path"].exists() and not calls[1]["path"].exists()
    assert not any(p.name.endswith(".key") for p in b.rec.rglob("*"))
    plain = calls[0]["plain"]
    size = len(plain)
    status, body, headers = await get_audio(b, calls[0]["id"])
    assert status == 200 and hashlib.sha256(body).hexdigest() == calls[0]["sha256"]
    edges = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, size - 1]
    for start in edges:
        for end in (start, start + 1, CHUNK - 1, CHUNK, 2 * CHUNK + 5, size - 1):
            if start <= end < size:
                status, body, headers = await get_audio(b, calls[0]["id"], f"bytes={start}-{end}")
                assert status == 206, (start, end)
                assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
                assert body == plain[start:end + 1], (start, end)
    status, body, _ = await get_audio(b, calls[0]["id"], "bytes=-100")
    assert status == 206 and body == plain[-100:]
    status, _, headers = await get_audio(b, calls[0]["id"], f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    # The console player's waveform reads through the same storage: computed from the object alone.
    async with aiohttp.ClientSession() as http, http.get(
            f"{b.base}/api/v1/calls/{calls[0]['id']}/waveform", headers={"Authorization": f"Bearer {b.token}"}) as resp:
        assert resp.status == 200, await resp.text()
        peaks = await resp.json()
    assert peaks["channels"] == 1 and abs(peaks["duration_ms"] - 10_000) <= 20 and max(peaks["peaks"][0]) > 0
    # The transcription queue reads through the same storage: a plain copy with the call log's sha256.
    path, sha, copied = b.storage.plain_file(calls[1]["rel"], b.tmp)
    assert copied and sha == calls[1]["sha256"] and path.read_bytes() == calls[1]["plain"]


async def test_each_node_uploads_only_the_recordings_in_its_own_folder(bench: Bench) -> None:
    """Several nodes on one call log: a recording is in the folder of the node that finalized it, so another
    node's outbox neither queues it (start-up sweep) nor takes it up (claim), even when it is due."""
    b = bench
    mine, theirs = await b.call(seconds=2.0), await b.call(seconds=2.5)
    await b.pool.execute("UPDATE calls SET node = CASE id WHEN $1::uuid THEN 'pbx-a' ELSE 'pbx-b' END",
                         mine["id"])
    a, other = Uploader(b.storage, b.pool, node="pbx-a"), Uploader(b.storage, b.pool, node="pbx-b")
    assert await other.sweep() == 1  # only its own call
    assert await a.run_due() == 0  # pbx-b's row is due, but not pbx-a's to take
    assert await a.sweep() == 1
    queued = {r["call_id"]: r["node"] for r in await b.pool.fetch("SELECT call_id::text, node FROM storage_outbox")}
    assert queued == {mine["id"]: "pbx-a", theirs["id"]: "pbx-b"}
    assert await a.run_due() == 1
    states = {r["call_id"]: r["state"] for r in
              await b.pool.fetch("SELECT call_id::text, state FROM storage_outbox")}
    assert states == {mine["id"]: "verified", theirs["id"]: "pending"}
    assert await other.run_due() == 1
    assert {r["state"] for r in await b.pool.fetch("SELECT state FROM storage_outbox")} == {"verified"}
    assert b.s3.get(b.key(theirs["rel"])) == theirs["path"].read_bytes()


async def test_verify_finds_a_changed_and_a_missing_object(bench: Bench) -> None:
    b = bench
    good, changed, missing, kept = [await b.call(seconds=2.0) for _ in range(4)]
    await b.upload_all()
    await b.pool.execute("UPDATE storage_outbox SET next_at = now() WHERE path <> $1", kept["rel"])
    await b.upload_all()
    assert kept["path"].exists() and not good["path"].exists()
    obj = bytearray(b.s3.get(b.key(changed["rel"])))
    obj[len(obj) // 2] ^= 0x40
    b.s3.put(b.key(changed["rel"]), bytes(obj))
    b.s3.delete(b.key(missing["rel"]))
    kept_obj = bytearray(b.s3.get(b.key(kept["rel"])))  # the local copy is fine, the object is not
    kept_obj[-10] ^= 1
    b.s3.put(b.key(kept["rel"]), bytes(kept_obj))
    async with b.pool.acquire() as conn:
        report = await verify(conn, b.storage, orphans=False)
    assert report.checked == 4 and report.ok == 1
    assert [m["id"] for m in report.missing] == [missing["id"]]
    assert sorted(c["id"] for c in report.changed) == sorted([changed["id"], kept["id"]])
    assert [c.get("where") for c in report.changed if c["id"] == kept["id"]] == ["bucket"]


async def test_deletion_retention_and_erase_remove_the_object_and_hold_keeps_it(bench: Bench) -> None:
    b = bench
    manual, erased, held = [await b.call(seconds=1.0, caller=n) for n in ("+15551111", "+15552222", "+15553333")]
    due = await b.call(seconds=1.0, caller="+15554444", age_days=3)  # past a 2-day audio retention
    await b.pool.execute("UPDATE calls SET finalized_at = now() WHERE id = $1", due["id"])  # (queued by the sweep)
    await b.upload_all()
    await b.expire_grace()
    before = b.s3.keys()
    assert all(b.key(c["rel"]) in before for c in (manual, erased, held))
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {b.token}"}
        async with http.put(f"{b.base}/api/v1/calls/{held['id']}/legal-hold", headers=auth,
                            json={"legal_hold": True, "reason": "case 7"}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.delete(f"{b.base}/api/v1/calls/{held['id']}/audio", headers=auth) as resp:
            assert resp.status == 409
        async with http.delete(f"{b.base}/api/v1/calls/{manual['id']}/audio", headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["file_missing"] is False
    outcomes = await erase_subject(b.pool, ["+15552222"], b.storage, actor=cli_principal())
    assert [o.result for o in outcomes] == ["anonymized"]
    report = await run_retention(b.pool, RetentionSettings(audio_days=2), b.storage)
    assert report.audio_deleted == 1 and report.errors == 0
    after = b.s3.keys()
    assert not any(k.startswith(b.key(c["rel"])) for k in after for c in (manual, erased, due))
    assert b.key(held["rel"]) in after
    states = dict(await b.pool.fetch("SELECT path, state FROM storage_outbox"))
    assert states[manual["rel"]] == states[erased["rel"]] == states[due["rel"]] == "gone"
    assert states[held["rel"]] == "done"


async def test_evidence_export_ships_plain_audio_that_openssl_verifies(bench: Bench) -> None:
    b = bench
    c = await b.call(seconds=2.5)
    await b.upload_all()
    await b.expire_grace()
    async with aiohttp.ClientSession() as http, http.get(
            f"{b.base}/api/v1/calls/export/evidence", params={"from": "2000-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {b.token}"}) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.read()
    out = b.tmp / "evidence"
    zipfile.ZipFile(io.BytesIO(data)).extractall(out)
    manifest = json.loads((out / "manifest.json").read_text())
    [entry] = [f for f in manifest["files"] if f["kind"] == "recording"]
    audio = out / entry["path"]
    assert audio.read_bytes() == c["plain"] and audio.read_bytes()[:4] == b"RIFF"
    dgst = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(audio)], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    assert dgst == entry["sha256"] == c["sha256"]
    sig = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(out / "public-key.pem"), "-rawin",
                          "-in", str(out / "manifest.json"), "-sigfile", str(out / "manifest.json.sig")],
                         capture_output=True, text=True)
    assert sig.returncode == 0 and "Signature Verified Successfully" in sig.stdout, sig.stdout + sig.stderr


async def test_the_outbox_rides_out_a_storage_outage_and_a_restart(bench: Bench) -> None:
    b = bench
    remote_only = await b.call(seconds=1.0)
    await b.upload_all()
    await b.expire_grace()
    b.s3.stop()
    try:
        # What is only in the bucket: a clean 503, and a deletion that changes nothing.
        status, _, _ = await get_audio(b, remote_only["id"])
        assert status == 503
        auth = {"Authorization": f"Bearer {b.token}"}
        async with aiohttp.ClientSession() as http, http.delete(
                f"{b.base}/api/v1/calls/{remote_only['id']}/audio", headers=auth) as r:
            assert r.status == 503 and "nothing was deleted" in (await r.json())["error"]
        assert await b.pool.fetchval("SELECT audio_deleted_at FROM calls WHERE id = $1", remote_only["id"]) is None
        calls = [await b.call(seconds=1.5) for _ in range(3)]
        first = Uploader(b.storage, b.pool)
        assert await b.upload_all(first) == ["retry"] * 3
        rows = await b.pool.fetch("SELECT path, state, attempts, last_error FROM storage_outbox WHERE path <> $1",
                                  remote_only["rel"])
        assert all(r["state"] == "pending" and r["attempts"] == 1 and r["last_error"] for r in rows)
        assert all(c["path"].exists() for c in calls)  # nothing deleted locally before verification
        assert first.counters.failures == 3
        status, body, _ = await get_audio(b, calls[0]["id"])  # still served locally meanwhile
        assert status == 200 and body == calls[0]["plain"]
    finally:
        b.s3.start()
    # A new uploader (the daemon restarted) takes the rows up once they are due again.
    await b.pool.execute("UPDATE storage_outbox SET next_at = now() WHERE state = 'pending'")
    assert await b.upload_all(Uploader(b.storage, b.pool)) == ["verified"] * 3
    await b.expire_grace()
    for c in calls:
        assert not c["path"].exists()
        status, body, _ = await get_audio(b, c["id"])
        assert status == 200 and body == c["plain"]


async def test_storage_migrate_moves_the_archive_with_progress(s3: S3Server, database: str, tmp_path: Path) -> None:
    b = await make_bench(s3, database, tmp_path, encrypt=True)
    try:
        calls = [await b.call(seconds=1.0) for _ in range(3)]
    finally:
        await b.pool.close()
    st = b.storage.settings
    config = write_config(tmp_path / "callrec.toml", database, b.rec, storage={
        "kind": "s3", "endpoint": s3.endpoint, "bucket": BUCKET, "prefix": b.prefix, "encrypt": True,
        "master_key_file": st.master_key_file})
    dry = run_cli(config, "storage", "migrate", "--dry-run", env=s3.env)
    assert dry.returncode == 0 and "3 recording(s)" in dry.stderr and "dry run" in dry.stderr, dry.stderr
    assert not [k for k in s3.keys() if k.startswith(b.prefix)]
    done = run_cli(config, "storage", "migrate", env=s3.env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("local_removed") == 3 and "[3/3 100.0%]" in done.stderr
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in done.stderr + done.stdout
    for c in calls:
        assert not c["path"].exists() and s3.get(b.prefix + c["rel"]).startswith(MAGIC)
    status = run_cli(config, "storage", "status", "--json", env=s3.env)
    doc = json.loads(status.stdout)
    assert status.returncode == 0 and doc["outbox"]["done"] == 3 and doc["bucket_reachable"] is True
    again = run_cli(config, "storage", "migrate", env=s3.env)
    assert again.returncode == 0 and "0 recording(s)" in again.stderr
    verified = run_cli(config, "verify", "--json", "--no-orphans", env=s3.env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] == 3, verified.stdout + verified.stderr
    check = run_cli(config, "check", env=s3.env)
    assert f"ok   storage: s3://{BUCKET}/{b.prefix} answers, encrypted" in check.stdout, check.stdout
    assert f"ok   master key: id {b.storage.master.key_id}" in check.stdout  # type: ignore[union-attr]
    no_creds = run_cli(config, "storage", "status", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert no_creds.returncode == 1 and "AWS_ACCESS_KEY_ID" in no_creds.stdout + no_creds.stderr


async def test_wrong_master_key_is_one_clear_error_and_rotation_keeps_everything_readable(
        s3: S3Server, database: str, tmp_path: Path) -> None:
    old = master_key_file(tmp_path, "old.key")
    b = await make_bench(s3, database, tmp_path, encrypt=True, key=old)
    try:
        calls = [await b.call(seconds=1.0) for _ in range(3)]
        await b.upload_all()
        await b.pool.execute("UPDATE storage_outbox SET next_at = now() WHERE path <> $1", calls[2]["rel"])
        await b.upload_all()  # two only in the bucket, one also local (in its grace): both kinds of key file
    finally:
        await b.pool.close()
    new = master_key_file(tmp_path, "new.key")
    base = {"kind": "s3", "endpoint": s3.endpoint, "bucket": BUCKET, "prefix": b.prefix, "encrypt": True}
    config = write_config(tmp_path / "new.toml", database, b.rec, storage={**base, "master_key_file": str(new)})
    wrong = run_cli(config, "verify", "--no-orphans", env=s3.env)
    lines = wrong.stderr.strip().splitlines()
    assert wrong.returncode == 1 and len(lines) == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "wrapped by master key" in lines[0] and str(new) in lines[0]
    with pytest.raises(WrongMasterKey):
        Storage(b.rec, dataclasses.replace(b.storage.settings, master_key_file=str(new)), s3.env).hash(calls[0]["rel"])
    objects_before = {k: s3.get(k) for k in s3.keys() if k.startswith(b.prefix) and not k.endswith(".key")}
    local_before = calls[2]["path"].read_bytes()
    rotated = run_cli(config, "keys", "rotate", "--old-key-file", str(old), env=s3.env)
    assert rotated.returncode == 0 and "3 re-wrapped" in rotated.stdout, rotated.stdout + rotated.stderr
    # The audio itself was not touched: only the key files.
    assert {k: s3.get(k) for k in objects_before} == objects_before and calls[2]["path"].read_bytes() == local_before
    ok = run_cli(config, "verify", "--json", "--no-orphans", env=s3.env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] == 3, ok.stdout + ok.stderr
    again = run_cli(config, "keys", "rotate", "--old-key-file", str(old), env=s3.env)
    assert again.returncode == 0 and "0 re-wrapped" in again.stdout and "3 already" in again.stdout
    old_config = write_config(tmp_path / "old.toml", database, b.rec, storage={**base, "master_key_file": str(old)})
    stale = run_cli(old_config, "verify", "--no-orphans", env=s3.env)
    assert stale.returncode == 1 and "wrapped by master key" in stale.stderr


async def test_local_folder_encrypted_at_rest(database: str, tmp_path: Path) -> None:
    """kind = "local", encrypt = true: the outbox seals each recording in place; everything reads through it."""
    rec = tmp_path / "recordings"
    rec.mkdir()
    settings = api_settings(database, rec, {"storage": {"encrypt": True,
                                                        "master_key_file": str(master_key_file(tmp_path))}})
    storage = Storage.of(settings)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await users.add_user(conn, "admin1", "admin", PASSWORD, None)
        _, token = await users.create_token(conn, "admin-token", user="admin1")
    server = HttpServer(settings, pool, storage=storage)
    await server.start()
    b = Bench(None, pool, rec, storage, "", f"http://127.0.0.1:{server.port}", token, settings,  # type: ignore
              tmp_path)
    try:
        calls = [await b.call(seconds=5.0), await b.call(seconds=1.0)]
        assert await b.upload_all() == ["sealed", "sealed"]
        for c in calls:
            on_disk = c["path"].read_bytes()
            assert on_disk.startswith(MAGIC) and c["plain"][HEADER:HEADER + 4096] not in on_disk
            assert c["path"].with_name(c["path"].name + ".key").exists()
        plain = calls[0]["plain"]
        for start, end in ((0, 43), (CHUNK - 3, CHUNK + 2), (CHUNK, 2 * CHUNK - 1), (len(plain) - 7, len(plain) - 1)):
            status, body, _ = await get_audio(b, calls[0]["id"], f"bytes={start}-{end}")
            assert status == 206 and body == plain[start:end + 1]
        async with pool.acquire() as conn:
            report = await verify(conn, storage, orphan_min_age=0)
        assert report.ok == 2 and report.problems == 0 and report.files_seen == 2  # key files are not orphans
        async with aiohttp.ClientSession() as http, http.delete(
                f"{b.base}/api/v1/calls/{calls[1]['id']}/audio", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        assert not calls[1]["path"].exists() and not calls[1]["path"].with_name(calls[1]["path"].name + ".key").exists()
    finally:
        await server.stop()
        await pool.close()


async def test_the_console_player_plays_and_seeks_a_recording_only_in_the_bucket(bench: Bench) -> None:
    from playwright.async_api import expect
    from support.console_browser import chromium, log_in, open_tab, play

    b = bench
    c = await b.call(seconds=12.0)
    await b.upload_all()
    await b.expire_grace()
    assert not c["path"].exists()
    async with chromium() as browser:
        tab = await open_tab(browser, b.base)
        page = tab.page
        await log_in(page, "admin1", PASSWORD)
        await page.goto(f"/#/call/{c['id']}")
        await expect(page.locator("#rf-status")).to_have_text("ready")
        ranges: list[str] = []
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/audio") else None)
        page.on("request", lambda r: ranges.append(r.headers.get("range", "")) if r.url.endswith("/audio") else None)
        await play(page)
        await expect(page.locator("#player-state")).to_have_text("Playing")
        seeked = await page.locator("#player").evaluate("""a => new Promise((resolve, reject) => {
            a.addEventListener('seeked', () => resolve(a.currentTime), {once: true});
            a.addEventListener('error', () => reject(new Error('media error ' + a.error.code)), {once: true});
            a.currentTime = a.duration * 0.8;
        })""")
        assert seeked > 5
        assert any(r.startswith("bytes=") for r in ranges), ranges
        assert statuses and all(s in (200, 206) for s in statuses), statuses
        await tab.assert_clean()
