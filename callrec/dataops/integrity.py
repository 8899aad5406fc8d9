"""``callrec verify``: re-hash every recording against the sha256 stored at finalization.

Reports files that are missing, changed (hash or size), unreadable, symbolic links (refused for
reading, never followed), and orphans (files in the
recordings folder that no row claims, or whose row says the audio was deleted).  Rows are read in
keyset batches (no long transaction), files hashed in a thread, orphans looked up by path in batches,
so memory stays bounded for any number of calls.

Transcripts are checked too: each must have been made from the call's recording as it was finalized (its
``recording_sha256`` equals the call's), and none may outlive its deleted audio.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from callrec.recording.files import OutsideFolder, SymlinkedRecording
from callrec.storage import BadCiphertext, Storage, as_storage
from callrec.storage.crypto import SIDECAR
from callrec.store.db import Db

BATCH = 500


def hash_recording(where: Storage | Path, rel: str, remote: bool = False) -> tuple[str, int]:
    """sha256 and size of a row's recording (its plain audio, wherever it is; ``remote``: the object in the
    bucket, even when a local copy is there too); SymlinkedRecording when its path is a symbolic link,
    PermissionError when it is not inside the folder."""
    storage = as_storage(where)
    try:
        if remote:
            return storage.hash_remote(rel)
        return storage.hash(rel)
    except SymlinkedRecording:
        raise
    except OutsideFolder:
        raise PermissionError("path outside the recordings folder") from None


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    symlinked: list[dict[str, Any]] = field(default_factory=list)  # refused for reading: never followed
    orphans: list[dict[str, Any]] = field(default_factory=list)
    files_seen: int = 0
    too_young: int = 0  # files newer than the orphan age limit (their row may not be written yet)
    transcripts_checked: int = 0
    transcripts: list[dict[str, Any]] = field(default_factory=list)  # not made from the call's recording

    @property
    def problems(self) -> int:
        return (len(self.missing) + len(self.changed) + len(self.unreadable) + len(self.symlinked)
                + len(self.orphans) + len(self.transcripts))

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "problems": self.problems, "missing": self.missing,
                "changed": self.changed, "unreadable": self.unreadable, "symlinked": self.symlinked,
                "orphans": self.orphans, "files_seen": self.files_seen, "too_young": self.too_young,
                "transcripts_checked": self.transcripts_checked, "transcripts": self.transcripts}


async def verify(conn: Db, local_dir: Storage | Path, *, since: datetime | None = None,
                 orphans: bool = True, orphan_min_age: float = 600.0) -> VerifyReport:
    """Check every recording where it is stored (``Storage``: the recordings folder, the bucket, encrypted or
    not).  A recording uploaded to the bucket and still kept locally in its grace is checked in both places."""
    report = VerifyReport()
    storage = as_storage(local_dir)
    storage = Storage(await asyncio.to_thread(storage.local_dir.resolve), storage.settings, storage.environ,
                      master=storage.master)
    await _check_rows(conn, storage, since, report)
    await _check_transcripts(conn, since, report)
    if orphans:
        await _find_orphans(conn, storage.local_dir, orphan_min_age, report)
    return report


async def _check_rows(conn: Any, storage: Storage, since: datetime | None, report: VerifyReport) -> None:
    last = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = await conn.fetch(
            "SELECT c.id, c.recording_path, c.recording_sha256, c.recording_bytes, "
            "o.state IN ('verified', 'done') AS uploaded FROM calls c "
            "LEFT JOIN storage_outbox o ON o.path = c.recording_path "
            "WHERE c.recording_sha256 IS NOT NULL AND c.recording_path IS NOT NULL AND c.audio_deleted_at IS NULL "
            "AND c.finalized_at IS NOT NULL AND ($2::timestamptz IS NULL OR c.started_at >= $2) "
            "AND c.id > $1::uuid ORDER BY c.id LIMIT $3", last, since, BATCH)
        for row in rows:
            report.checked += 1
            places = [False]
            if storage.remote and row["uploaded"] and await asyncio.to_thread(storage.local_exists,
                                                                              row["recording_path"]):
                places.append(True)  # the local copy in its grace, and the object
            if all([await _check_one(storage, row, remote, report) for remote in places]):
                report.ok += 1
        if len(rows) < BATCH:
            return
        last = str(rows[-1]["id"])


async def _check_one(storage: Storage, row: Any, remote: bool, report: VerifyReport) -> bool:
    item = {"id": str(row["id"]), "path": row["recording_path"]}
    if remote:
        item["where"] = "bucket"
    try:
        digest, size = await asyncio.to_thread(hash_recording, storage, row["recording_path"], remote)
    except SymlinkedRecording as exc:
        report.symlinked.append({**item, "error": str(exc)})
        return False
    except PermissionError as exc:
        report.unreadable.append({**item, "error": str(exc)})
        return False
    except FileNotFoundError:
        report.missing.append(item)
        return False
    except BadCiphertext as exc:  # an encrypted recording whose bytes were changed or cut
        report.changed.append({**item, "expected_sha256": row["recording_sha256"], "error": str(exc)})
        return False
    except OSError as exc:  # StorageUnavailable too
        report.unreadable.append({**item, "error": exc.strerror or str(exc)})
        return False
    if digest != row["recording_sha256"] or (row["recording_bytes"] is not None
                                             and size != row["recording_bytes"]):
        report.changed.append({**item, "expected_sha256": row["recording_sha256"], "actual_sha256": digest,
                               "expected_bytes": row["recording_bytes"], "actual_bytes": size})
        return False
    return True


async def _check_transcripts(conn: Any, since: datetime | None, report: VerifyReport) -> None:
    """Compare each transcript's source hash with its call's recording (a database-only check, keyset
    batches like the recordings)."""
    last = "00000000-0000-0000-0000-000000000000"
    while True:
        rows = await conn.fetch(
            "SELECT t.call_id, t.recording_sha256 AS made_from, c.recording_sha256, c.audio_deleted_at "
            "FROM transcripts t JOIN calls c ON c.id = t.call_id "
            "WHERE ($2::timestamptz IS NULL OR c.started_at >= $2) AND t.call_id > $1::uuid "
            "ORDER BY t.call_id LIMIT $3", last, since, BATCH)
        for row in rows:
            report.transcripts_checked += 1
            item = {"id": str(row["call_id"]), "transcript_sha256": row["made_from"],
                    "recording_sha256": row["recording_sha256"]}
            if row["audio_deleted_at"] is not None:
                report.transcripts.append({**item, "why": "the call's audio is deleted, but its transcript is kept"})
            elif row["made_from"] != row["recording_sha256"]:
                report.transcripts.append({**item, "why": "the transcript was not made from the call's recording"})
        if len(rows) < BATCH:
            return
        last = str(rows[-1]["call_id"])


def _walk(base: Path) -> list[tuple[str, float]]:
    out = []
    for root, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            try:
                st = full.lstat()
            except OSError:
                continue
            if full.is_symlink() or not full.is_file():
                continue
            if name.endswith(SIDECAR) or name.startswith("."):
                continue  # an encrypted recording's key file (checked with it), or a file being sealed
            out.append((full.relative_to(base).as_posix(), st.st_mtime))
    return out


async def _find_orphans(conn: Any, base: Path, min_age: float, report: VerifyReport) -> None:
    # The listing holds only relative names and mtimes (about 60 bytes a file).
    files = await asyncio.to_thread(_walk, base)
    report.files_seen = len(files)
    now = time.time()
    for i in range(0, len(files), BATCH):
        chunk = files[i:i + BATCH]
        rows = await conn.fetch(
            "SELECT recording_path, id, audio_deleted_at FROM calls WHERE recording_path = ANY($1::text[])",
            [rel for rel, _ in chunk])
        claimed = {}
        for r in rows:
            # Several rows may name one path (never in practice); any live one claims it.
            if r["audio_deleted_at"] is None or r["recording_path"] not in claimed:
                claimed[r["recording_path"]] = r
        for rel, mtime in chunk:
            row = claimed.get(rel)
            if row is None:
                if now - mtime < min_age:
                    report.too_young += 1  # its call may not have its row yet
                else:
                    report.orphans.append({"path": rel, "why": "no call row names this file"})
            elif row["audio_deleted_at"] is not None:
                report.orphans.append({"path": rel, "id": str(row["id"]),
                                       "why": "the call's audio is marked deleted, but the file is there"})
