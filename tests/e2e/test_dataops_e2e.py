"""End to end: a call recorded by the real Asterisk 22, then verified, exported with a signed
manifest, and erased for its caller; and the daemon's own retention job next to live calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import asyncpg
from caller import Finished, Tester
from sandbox import SandboxInfo, callrec_config
from support.dataops_helpers import CALLREC, add_call, audit_rows
from support.settings import make_settings

from callrec.app import Daemon

SUBJECT = "+49301234567"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CALLREC, "-c", str(config), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ})


async def test_recorded_call_verified_exported_and_erased(asterisk: SandboxInfo, database: str, tester: Tester,
                                                          tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    settings = make_settings(asterisk, database, retention={"audio_days": 30, "interval": 3600},
                             integrity={"signing_key": str(key)})
    local = settings.recordings.local_path
    conn = await asyncpg.connect(database)
    try:
        old = await add_call(conn, local, age_days=40, caller="+15550123")
        finished = Finished()
        daemon = Daemon(settings)
        try:
            await daemon.start()
            assert daemon.service is not None and daemon.retention is not None
            daemon.service.on_call_finalized.append(finished)
            await daemon.wait_ready(15)
            # The daemon's retention job ran in the background: the 40-day-old recording is gone.
            await asyncio.wait_for(daemon.retention.ran.wait(), 30)
            assert not old["path"].exists()
            assert await conn.fetchval("SELECT audio_deleted_by FROM calls WHERE id = $1", old["id"]) == "retention"

            call = await tester.place_call(args="mode=notice", caller_id=f'"Data Subject" <{SUBJECT}>')
            await call.answered()
            await call.handed_back()
            await call.spoken(await call.speak())
            await call.hang_up()
            record = await finished.wait(call.callee_id)
            assert daemon.writer is not None and await daemon.writer.flush()
        finally:
            await daemon.stop()
        assert record.recording_status == "ready" and record.caller_number == SUBJECT
        wav = local / record.recording_path
        assert wav.exists()

        cfg = tmp_path / "callrec.toml"
        cfg.write_text(callrec_config(asterisk, database, integrity={"signing_key": str(key)},
                                      retention={"audio_days": 30}))
        check = cli(cfg, "check")  # names the missing key
        assert check.returncode == 1 and "FAIL signing key: integrity.signing_key:" in check.stdout, check.stdout
        assert "ok   retention: audio 30 day(s), metadata kept forever" in check.stdout
        ver = cli(cfg, "verify", "--no-orphans", "--json")
        assert ver.returncode == 0, ver.stdout + ver.stderr
        assert json.loads(ver.stdout)["ok"] == 1  # the real call; the old one's audio is deleted

        assert cli(cfg, "keys", "generate").returncode == 0
        check = cli(cfg, "check")
        assert check.returncode == 0 and "ok   signing key: Ed25519, fingerprint " in check.stdout, check.stdout
        pub = tmp_path / "public.pem"
        assert cli(cfg, "keys", "public", "--out", str(pub)).returncode == 0
        out = tmp_path / "evidence"
        exp = cli(cfg, "export", "--manifest", "--out", str(out), "--call", record.id)
        assert exp.returncode == 0, exp.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        [entry] = [e for e in manifest["files"] if e["kind"] == "recording"]
        assert entry["sha256"] == record.recording_sha256
        # The notice the caller heard is in the export too, byte for byte the file that was played.
        [prompt] = [e for e in manifest["files"] if e["kind"] == "notice_prompt"]
        assert prompt["sha256"] == record.notice_prompt_sha256
        assert (out / prompt["path"]).read_bytes() == (
            daemon.settings.notice.local_prompts_path / "en" / "notice.wav").read_bytes()
        [doc] = manifest["calls"]
        assert doc["consent_evidence"]["consent"] == "implied"
        assert doc["consent_evidence"]["notice_prompt_sha256"] == record.notice_prompt_sha256
        assert doc["times"]["started_at"] and doc["times"]["ended_at"]
        vm = subprocess.run([*CALLREC, "verify-manifest", str(out), "--public-key", str(pub)],
                            capture_output=True, text=True, timeout=60)
        assert vm.returncode == 0 and "VERIFIED" in vm.stdout, vm.stdout + vm.stderr

        sub = tmp_path / "subject.zip"
        se = cli(cfg, "subject", "export", "+49 30 1234567", "--zip", str(sub))
        assert se.returncode == 0 and "exported 1 call(s), 1 recording(s)" in se.stdout, se.stdout + se.stderr

        erase = cli(cfg, "subject", "erase", "+49 30 1234567", "--yes")
        assert erase.returncode == 0, erase.stdout + erase.stderr
        assert "erased 1 call(s); kept 0" in erase.stdout
        assert not wav.exists()
        row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", record.id)
        assert row["caller_number"] is None and row["caller_name"] is None and row["anonymized_at"] is not None
        assert row["recording_sha256"] == record.recording_sha256 and row["consent"] == "implied"
        assert await conn.fetchval("SELECT caller_number FROM calls WHERE id = $1", old["id"]) == "+15550123"
        assert [e["action"] for e in await audit_rows(conn, record.id)] == [
            "evidence_export", "subject_export", "delete_audio", "anonymize"]
        ver = cli(cfg, "verify", "--no-orphans")
        assert ver.returncode == 0, ver.stdout  # erased audio is not "missing"
    finally:
        await conn.close()
