"""``callrec storage migrate | status`` and ``callrec keys rotate``: the recordings' storage (docs/storage.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from callrec.access import cli_principal
from callrec.cli.common import CommandError, command, dump, group, open_storage
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.storage import StorageUnavailable, WrongMasterKey, in_thread
from callrec.storage.crypto import parse_master_key
from callrec.storage.outbox import Uploader, outbox_figures
from callrec.store import audit

__all__ = ["add_commands", "add_key_commands"]


def add_commands(sub: object) -> None:
    st = group(sub, "storage", "where recordings live: the bucket, the outbox, moving the archive")
    mig = command(st, "migrate", "move the local archive into the bucket (and/or encrypt it), with progress",
                  run_migrate)
    mig.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    mig.add_argument("--keep-local", action="store_true",
                     help="keep each local copy for [storage] local_grace (the daemon removes it then)")
    stat = command(st, "status", "the outbox's backlog, the bucket's reachability, the master key in use",
                   run_status)
    stat.add_argument("--json", action="store_true", help="one JSON document on stdout")


def add_key_commands(keys: Any) -> None:
    rot = command(keys, "rotate", "re-wrap every recording's data key under the configured master key "
                                  "(the audio is not touched)", run_rotate)
    src = rot.add_mutually_exclusive_group(required=True)
    src.add_argument("--old-key-file", metavar="FILE", help="the master key the data keys are wrapped with now")
    src.add_argument("--old-key-env", metavar="VAR", help="an environment variable holding that key")


_ELIGIBLE = ("FROM calls c LEFT JOIN storage_outbox o ON o.path = c.recording_path "
             "WHERE c.recording_status = 'ready' AND c.recording_sha256 IS NOT NULL AND c.recording_path IS NOT NULL "
             "AND c.audio_deleted_at IS NULL AND c.finalized_at IS NOT NULL "
             "AND (o.state IS NULL OR o.state = 'pending')")


async def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    if not (storage.remote or settings.storage.encrypt):
        raise CommandError('storage migrate: nothing to do: storage.kind is "local" and storage.encrypt is false')
    if storage.remote:
        try:
            await in_thread(storage.bucket.check)
        except StorageUnavailable as exc:
            raise CommandError(f"storage migrate: {exc}", 1) from None
    who = cli_principal()
    async with open_database(settings, pool=True, current_schema=True) as pool:
        rows = await pool.fetch(f"SELECT c.id, c.recording_path, c.recording_sha256, c.recording_bytes {_ELIGIBLE} "
                                "ORDER BY c.finalized_at")
        todo = [r for r in rows if await in_thread(storage.local_exists, r["recording_path"])]
        total = sum(int(r["recording_bytes"] or 0) for r in todo)
        where = storage.bucket.where("") if storage.remote else "the recordings folder"
        note = (" (encrypted)" if settings.storage.encrypt else "") + (" -- dry run, nothing changed"
                                                                       if args.dry_run else "")
        print(f"storage migrate: {len(todo)} recording(s), {total} bytes, to {where}{note}", file=sys.stderr)
        if args.dry_run:
            return 0
        await pool.executemany(
            "INSERT INTO storage_outbox (path, call_id, sha256, bytes) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (path) DO NOTHING",
            [(r["recording_path"], r["id"], r["recording_sha256"], r["recording_bytes"]) for r in todo])
        up = Uploader(storage, pool)
        failed = moved = 0
        done_bytes = 0
        for i, r in enumerate(todo, 1):
            found = await pool.fetchrow("SELECT path, call_id, sha256, bytes, state, attempts FROM storage_outbox "
                                        "WHERE path = $1", r["recording_path"])
            assert found is not None
            row = dict(found)
            outcome = await up.step(row)
            if outcome == "verified" and not args.keep_local:
                outcome = await up.step({**row, "state": "verified"})
            ok = outcome in ("verified", "local_removed", "sealed")
            moved += ok
            failed += not ok
            done_bytes += int(r["recording_bytes"] or 0)
            pct = 100 * done_bytes / total if total else 100.0
            print(f"[{i}/{len(todo)} {pct:5.1f}%] {r['recording_path']!r}: "
                  f"{outcome if ok else 'failed: ' + up.counters.last_error}", file=sys.stderr)
        await audit.append(pool, actor=who.name, role=who.role, action="storage_migrate",
                           details={"moved": moved, "failed": failed, "bytes": total, "to": where,
                                    "encrypted": settings.storage.encrypt})
    print(f"storage migrate: {moved} moved, {failed} failed (retried by the daemon's outbox, or run again)",
          file=sys.stderr)
    return 1 if failed else 0


async def run_status(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    out: dict[str, Any] = {"kind": settings.storage.kind, "encrypt": settings.storage.encrypt,
                           "master_key_id": storage.master.key_id if storage.master else None}
    if storage.remote:
        out["bucket"] = storage.bucket.where("")
        try:
            await in_thread(storage.bucket.check)
            out["bucket_reachable"] = True
        except StorageUnavailable as exc:
            out["bucket_reachable"] = False
            out["bucket_error"] = str(exc)
    async with open_database(settings, current_schema=True) as conn:
        figures = await outbox_figures(conn)
        errors = await conn.fetch("SELECT path, attempts, last_error FROM storage_outbox WHERE state = 'pending' "
                                  "AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 5")
    out["outbox"] = figures["callrec_storage_outbox"]
    out["pending_bytes"] = figures["callrec_storage_outbox_pending_bytes"]
    out["oldest_pending_seconds"] = figures["callrec_storage_outbox_oldest_pending_seconds"]
    out["recent_errors"] = [dict(r) for r in errors]
    if args.json:
        print(dump(out))
    else:
        for key, value in out.items():
            if key != "recent_errors":
                print(f"{key}: {value}")
        for e in out["recent_errors"]:
            print(f"error: {e['path']!r} after {e['attempts']} attempt(s): {e['last_error']}")
    return 1 if out.get("bucket_reachable") is False else 0


async def run_rotate(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    if storage.master is None:
        raise CommandError("keys rotate: no master key configured (storage.master_key_file or storage.master_key_env)")
    try:
        if args.old_key_file:
            data = await in_thread(Path(args.old_key_file).read_bytes)
            old = parse_master_key(data, f"--old-key-file {args.old_key_file}")
        else:
            old = parse_master_key(os.environ.get(args.old_key_env, ""), f"--old-key-env {args.old_key_env}")
    except OSError as exc:
        raise CommandError(f"keys rotate: --old-key-file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CommandError(f"keys rotate: {exc}") from None
    counts = {"rewrapped": 0, "current": 0, "plain": 0, "failed": 0}
    who = cli_principal()
    async with open_database(settings, current_schema=True) as conn:
        rows = await conn.fetch("SELECT recording_path FROM calls WHERE recording_path IS NOT NULL "
                                "AND audio_deleted_at IS NULL ORDER BY started_at")
        for r in rows:
            try:
                counts[await in_thread(storage.rewrap, r["recording_path"], old)] += 1
            except (WrongMasterKey, OSError) as exc:
                counts["failed"] += 1
                print(f"keys rotate: {exc}", file=sys.stderr)
        await audit.append(conn, actor=who.name, role=who.role, action="keys_rotate",
                           details={**counts, "master_key_id": storage.master.key_id, "old_key_id": old.key_id})
    print(f"keys rotate: {counts['rewrapped']} re-wrapped under {storage.master.key_id}, {counts['current']} already "
          f"under it, {counts['plain']} not encrypted, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


