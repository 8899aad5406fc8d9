"""Data-subject export/erase, `callrec verify`, signed manifests: real PostgreSQL, real files, the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import asyncpg
from support.dataops_helpers import CALLREC, add_call, audit_rows, make_wav, run_cli, write_config

from callrec.dataops.deletion import set_legal_hold


async def test_subject_export_finds_caller_called_and_party(database: str, conn: asyncpg.Connection,
                                                             tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    as_caller = await add_call(conn, rec, caller="+7 495 123-45-67")
    as_called = await add_call(conn, rec, caller="+15550002", called="+74951234567")
    as_party = await add_call(conn, rec, caller="+15550003", parties=[("+15550003", "caller"),
                                                                      ("+74951234567", "transfer_target")])
    unrecorded = await add_call(conn, rec, caller="+74951234567", recorded=False)
    other = await add_call(conn, rec, caller="+74951234568")
    cfg = write_config(tmp_path / "c.toml", database, rec)
    out = tmp_path / "export.zip"
    result = run_cli(cfg, "subject", "export", "+7 (495) 123-45-67", "--zip", str(out), "--reference", "DSR-17")
    assert result.returncode == 0, result.stderr
    assert "exported 4 call(s), 3 recording(s)" in result.stdout and "not signed" in result.stdout
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = set(zf.namelist())
        ids = {c["id"] for c in manifest["calls"]}
        assert ids == {as_caller["id"], as_called["id"], as_party["id"], unrecorded["id"]}
        assert other["id"] not in json.dumps(manifest)
        for c in (as_caller, as_called, as_party):
            name = f"audio/{c['id']}.wav"
            assert name in names
            assert hashlib.sha256(zf.read(name)).hexdigest() == c["sha256"]
    doc = next(c for c in manifest["calls"] if c["id"] == as_party["id"])
    assert [p["number"] for p in doc["parties"]] == ["+15550003", "+74951234567"]
    assert doc["consent_evidence"]["consent"] == "implied" and doc["consent_evidence"]["notice_completed"] is True
    assert doc["file_matches_recorded_sha256"] is True
    assert next(c for c in manifest["calls"] if c["id"] == unrecorded["id"])["file"] is None
    # Audited per call and once for the request, with the reference and never the number itself.
    entries = await audit_rows(conn, action="subject_export")
    assert len(entries) == 5 and {e["details"]["reference"] for e in entries} == {"DSR-17"}
    assert "4951234567" not in json.dumps([e["details"] for e in entries])
    again = run_cli(cfg, "subject", "export", "+74951234567", "--zip", str(out))
    assert again.returncode == 1 and "exists" in again.stderr  # an earlier export is never overwritten


async def test_subject_erase_keeps_tombstones_and_reports_the_hold(database: str, conn: asyncpg.Connection,
                                                                   tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    a = await add_call(conn, rec, caller="+15551234", tags=["called about order 5"])
    b = await add_call(conn, rec, caller="+15557777", parties=[("+15557777", "caller"), ("+15551234", "callee"),
                                                              ("201", "agent")])
    held = await add_call(conn, rec, caller="+15551234")
    other = await add_call(conn, rec, caller="+15550000")
    await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 5")
    cfg = write_config(tmp_path / "c.toml", database, rec)
    # Not at a terminal and no --yes: refused, nothing changed.
    refused = run_cli(cfg, "subject", "erase", "+15551234", input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert a["path"].exists()
    staff = run_cli(cfg, "subject", "erase", "201", "--dry-run")  # the agent's extension is not a subject's party
    assert staff.returncode == 0 and "0 call(s) found" in staff.stdout
    assert "also the agent extension of 4 call(s)" in staff.stderr
    dry = run_cli(cfg, "subject", "erase", "+15551234", "--dry-run")
    assert dry.returncode == 0 and "3 call(s) found: 2 to erase, 1 under legal hold" in dry.stdout
    assert a["path"].exists()
    result = run_cli(cfg, "subject", "erase", "+15551234", "--yes", "--reference", "DSR-9")
    assert result.returncode == 3, result.stdout + result.stderr  # done, but the held call was kept
    assert "erased 2 call(s); kept 1" in result.stdout and f"kept: {held['id']}: legal hold (case 5)" in result.stdout
    for c in (a, b):
        r = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", c["id"])
        assert not c["path"].exists()
        assert (r["caller_number"], r["caller_name"], r["called_number"]) == (None, None, None)
        assert r["anonymized_reason"] == "subject_erase" and r["audio_deleted_reason"] == "subject_erase"
        assert r["consent"] == "implied" and r["recording_sha256"] == c["sha256"]  # statistics and evidence stay
        [entry] = await audit_rows(conn, c["id"], "anonymize")
        assert entry["details"]["reference"] == "DSR-9" and entry["actor"].startswith("cli:")
    parties = await conn.fetch("SELECT number, role FROM call_parties WHERE call_id = $1 ORDER BY seq", b["id"])
    assert [(p["number"], p["role"]) for p in parties] == [(None, "caller"), (None, "callee"), ("201", "agent")]
    assert await conn.fetchval("SELECT count(*) FROM call_tags") == 0
    for c in (held, other):
        r = await conn.fetchrow("SELECT caller_number, anonymized_at FROM calls WHERE id = $1", c["id"])
        assert c["path"].exists() and r["caller_number"] is not None and r["anonymized_at"] is None
    assert await conn.fetchval("SELECT count(*) FROM calls") == 4
    [summary] = await audit_rows(conn, action="subject_erase")
    assert summary["details"]["held"] == [held["id"]] and summary["details"]["anonymized"] == 2
    # A second run finds nothing left to erase but the held call.
    again = run_cli(cfg, "subject", "erase", "+15551234", "--yes", "--json")
    assert again.returncode == 3 and json.loads(again.stdout)["erased"] == []


async def test_subject_rejects_garbage_numbers(database: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", database, tmp_path)
    result = run_cli(cfg, "subject", "erase", "'; DROP TABLE calls; --", "--yes")
    assert result.returncode == 2 and "not a phone number" in result.stderr


async def test_verify_reports_modified_missing_and_orphan_files(database: str, conn: asyncpg.Connection,
                                                                tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    good = await add_call(conn, rec)
    changed = await add_call(conn, rec)
    missing = await add_call(conn, rec)
    deleted = await add_call(conn, rec)
    cfg = write_config(tmp_path / "c.toml", database, rec)
    clean = run_cli(cfg, "verify", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["ok"] == 4

    with open(changed["path"], "r+b") as fh:  # one sample flipped, same size
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0x40]))
    missing["path"].unlink()
    orphan = rec / "2026/01/02/stray.wav"
    make_wav(orphan)
    await conn.execute("UPDATE calls SET audio_deleted_at = now(), audio_deleted_by = 'x' WHERE id = $1",
                       deleted["id"])  # the row says deleted, the file is still there
    young = rec / "2026/01/02/just-started.wav"
    make_wav(young)
    old = time.time() - 3600
    for p in (orphan, deleted["path"]):
        os.utime(p, (old, old))

    result = run_cli(cfg, "verify", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["checked"] == 3 and report["ok"] == 1
    assert [m["id"] for m in report["missing"]] == [missing["id"]]
    [ch] = report["changed"]
    assert ch["id"] == changed["id"] and ch["expected_sha256"] == changed["sha256"] != ch["actual_sha256"]
    orphans = {o["path"]: o for o in report["orphans"]}
    assert set(orphans) == {"2026/01/02/stray.wav", deleted["rel"]}
    assert orphans[deleted["rel"]]["id"] == deleted["id"]
    assert report["too_young"] == 1  # the file whose row may not be written yet is not called an orphan
    text = run_cli(cfg, "verify")
    assert text.returncode == 3
    assert f"MISSING   {missing['id']}" in text.stdout and f"CHANGED   {changed['id']}" in text.stdout
    assert "ORPHAN    2026/01/02/stray.wav" in text.stdout
    assert good["id"] not in text.stdout
    entries = await audit_rows(conn, action="verify")
    assert len(entries) == 3 and entries[-1]["details"]["changed"] == 1


async def test_signed_manifest_verifies_and_tampering_fails(database: str, conn: asyncpg.Connection,
                                                            tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    calls = [await add_call(conn, rec, caller=f"+1555000{i}") for i in range(3)]
    key = tmp_path / "keys" / "signing.pem"
    # The notice the callers heard, installed where this host sees the prompts.
    prompts = tmp_path / "prompts"
    make_wav(prompts / "en" / "notice.wav", 2.0, 500)
    prompt_sha = hashlib.sha256((prompts / "en" / "notice.wav").read_bytes()).hexdigest()
    await conn.execute("UPDATE calls SET notice_prompt_sha256 = $1", prompt_sha)
    cfg = write_config(tmp_path / "c.toml", database, rec, integrity={"signing_key": str(key)},
                       notice={"prompts_dir": "/usr/share/asterisk/sounds/callrec", "local_prompts_dir": str(prompts)})
    gen = run_cli(cfg, "keys", "generate")
    assert gen.returncode == 0, gen.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    assert run_cli(cfg, "keys", "generate").returncode == 1  # never overwritten by accident
    pub = tmp_path / "published.pem"
    shown = run_cli(cfg, "keys", "public", "--out", str(pub))
    assert shown.returncode == 0 and "fingerprint" in shown.stderr
    fp = shown.stderr.split(": ")[-1].strip()
    assert fp in gen.stdout

    out = tmp_path / "evidence"
    exp = run_cli(cfg, "export", "--manifest", "--out", str(out), "--call", calls[0]["id"], "--call", calls[2]["id"])
    assert exp.returncode == 0, exp.stderr
    assert f"manifest signed (key {fp})" in exp.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c["id"] for c in manifest["calls"]} == {calls[0]["id"], calls[2]["id"]}
    assert manifest["signature"]["public_key_sha256"] == fp
    recordings = [e for e in manifest["files"] if e["kind"] == "recording"]
    assert len(recordings) == 2
    for entry in recordings:
        assert entry["sha256"] == next(c["sha256"] for c in calls if c["id"] == entry["call_id"])
    # The notice file itself, once, matching the sha256 recorded with each call.
    [prompt] = [e for e in manifest["files"] if e["kind"] == "notice_prompt"]
    assert prompt["sha256"] == prompt_sha and prompt["path"] == f"prompts/{prompt_sha}.wav"
    assert {c["notice_prompt_file"] for c in manifest["calls"]} == {prompt["path"]}
    assert len(await audit_rows(conn, action="evidence_export")) == 2

    def verify(path: Path, key_file: Path | None = pub) -> subprocess.CompletedProcess:
        # Offline: no config, no database.
        args = [*CALLREC, "verify-manifest", str(path), "--json"]
        if key_file is not None:
            args += ["--public-key", str(key_file)]
        return subprocess.run(args, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "CALLREC_CONFIG": "/nonexistent.toml"})

    ok = verify(out)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["signature"] == "valid" and json.loads(ok.stdout)["files_ok"] == 3
    # A third party with OpenSSL and coreutils only, as docs/ops-data.md tells them.
    ssl = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
                          "-in", str(out / "manifest.json"), "-sigfile", str(out / "manifest.json.sig")],
                         capture_output=True, text=True)
    assert ssl.returncode == 0 and "Signature Verified Successfully" in ssl.stdout
    fp_ssl = subprocess.run(f"openssl pkey -pubin -in '{pub}' -outform DER | tail -c 32 | sha256sum", shell=True,
                            capture_output=True, text=True)
    assert fp_ssl.stdout.split()[0] == fp  # the published fingerprint, checked with OpenSSL alone
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert sums.returncode == 0 and sums.stdout.count(": OK") == 3
    assert hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest() == manifest["sha256sums"]
    # Without a trusted key it is not "verified", even though the export carries a key.
    assert verify(out, None).returncode == 3

    # A tampered manifest (one consent outcome edited) fails the signature.
    bad_manifest = tmp_path / "bad-manifest"
    shutil.copytree(out, bad_manifest)
    text = (bad_manifest / "manifest.json").read_text()
    (bad_manifest / "manifest.json").write_text(text.replace('"implied"', '"declined"', 1))
    res = verify(bad_manifest)
    assert res.returncode == 3 and json.loads(res.stdout)["signature"] == "invalid"
    # A tampered recording fails its hash, though the signature still holds.
    bad_file = tmp_path / "bad-file"
    shutil.copytree(out, bad_file)
    victim = bad_file / recordings[0]["path"]
    data = bytearray(victim.read_bytes())
    data[300] ^= 0x01
    victim.write_bytes(bytes(data))
    res = verify(bad_file)
    report = json.loads(res.stdout)
    assert res.returncode == 3 and report["signature"] == "valid" and report["files_ok"] == 2
    assert any("sha256 differs" in p for p in report["problems"])
    # A key swapped for the forger's own: the signature does not hold against the published key.
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    other_key = tmp_path / "other.pem"
    assert run_cli(cfg, "keys", "generate", "--out", str(other_key)).returncode == 0
    from callrec.dataops.evidence import load_private_key
    (forged / "manifest.json").write_text(text.replace('"implied"', '"declined"', 1))
    (forged / "manifest.json.sig").write_bytes(load_private_key(other_key).sign((forged / "manifest.json")
                                                                                .read_bytes()))
    assert json.loads(verify(forged).stdout)["signature"] == "invalid"
    # Zipped exports verify the same way; an extra file slipped in is reported.
    zipped = tmp_path / "evidence.zip"
    assert run_cli(cfg, "export", "--manifest", "--zip", str(zipped), "--number", "+15550001").returncode == 0
    assert verify(zipped).returncode == 0
    with zipfile.ZipFile(zipped, "a") as zf:
        zf.writestr("audio/extra.wav", b"RIFF")
    res = verify(zipped)
    assert res.returncode == 3 and any("not listed" in p for p in json.loads(res.stdout)["problems"])


async def test_export_refuses_without_a_key_or_selection(database: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", database, tmp_path, integrity={"signing_key": str(tmp_path / "no.pem")})
    res = run_cli(cfg, "export", "--manifest", "--out", str(tmp_path / "x"), "--number", "1*")
    assert res.returncode == 1 and "integrity.signing_key" in res.stderr and "keys generate" in res.stderr
    res = run_cli(cfg, "export", "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and "--call or filters" in res.stderr
