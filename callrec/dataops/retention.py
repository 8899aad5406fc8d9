"""Deleting call data: audio, personal fields, retention, legal hold, data-subject erasure.

Every deletion path goes through ``delete_audio`` / ``anonymize`` here, which lock the row, refuse
a call under legal hold, remove the file, mark the row and append the audit entry in one
transaction.  The database backs this up: a trigger (migration 006) refuses marking a held call's
audio deleted, anonymizing it or deleting its row, whatever code tries.

Rows are never deleted.  "Deleting metadata" erases the personal fields and leaves a tombstone
(``anonymized_at``), so counts, statistics and the audit entries that name the call stay coherent.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg

from callrec.access import Principal
from callrec.config.dataops import RetentionSettings
from callrec.store import audit

log = logging.getLogger("callrec.dataops.retention")

# What anonymizing a call sets: the fields that identify the caller or the called party.  The
# agent's extension, the consent evidence, the times, durations and hashes stay (statistics and
# the audit trail need them, and they identify nobody outside the PBX).
PERSONAL_FIELDS: dict[str, Any] = {
    "caller_number": None,
    "caller_name": None,
    "called_number": None,
    "channel": "",
    "uniqueid": "",
    "linkedid": None,
    "warnings": [],  # may quote caller-supplied text
}

# One thread for retention file work: deletions never queue ahead of the finalization pool.
_FILES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callrec-retention")

RETENTION_ACTOR = "retention"
BATCH_PAUSE = 0.1  # seconds between the daemon job's batches


class HoldError(Exception):
    """The call is under legal hold."""


def cli_principal() -> Principal:
    """The operator at the shell: audited as ``cli:<os user>`` with the admin role."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Principal(name=f"cli:{user}", role="admin", via="cli")


def audio_file(local_dir: Path, recording_path: str | None) -> Path | None:
    """The file of a row, under the recordings folder only: a relative path without ``..``.  Not
    resolved, so deleting a symlink removes the link, never what it points to."""
    if not recording_path:
        return None
    rel = PurePosixPath(recording_path)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in recording_path:
        return None
    return local_dir / rel


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


async def _in_files(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_FILES, func, *args)


@dataclass
class Outcome:
    call_id: str
    result: str  # deleted | anonymized | held | open | already | no_audio | not_found | error
    detail: str = ""
    audio_deleted: bool = False  # anonymize: the recording went too


async def _lock(conn: asyncpg.Connection, call_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, recording_path, recording_sha256, audio_deleted_at, anonymized_at, legal_hold, "
        "legal_hold_reason, finalized_at FROM calls WHERE id = $1::uuid FOR UPDATE", call_id)


async def _delete_audio_locked(conn: asyncpg.Connection, row: asyncpg.Record, local_dir: Path, *,
                               actor: Principal | str, reason: str) -> Outcome:
    call_id = str(row["id"])
    if row["audio_deleted_at"] is not None:
        return Outcome(call_id, "already")
    if not row["recording_path"]:
        return Outcome(call_id, "no_audio")
    path = audio_file(local_dir, row["recording_path"])
    existed = await _in_files(_unlink, path) if path is not None else False
    name, role = _who(actor)
    await conn.execute(
        "UPDATE calls SET audio_deleted_at = now(), audio_deleted_by = $2, audio_deleted_reason = $3, "
        "updated_at = now() WHERE id = $1", row["id"], name, reason)
    await audit.append(conn, actor=name, role=role, action="delete_audio", call_id=call_id,
                       details={"reason": reason, "recording_path": row["recording_path"],
                                "recording_sha256": row["recording_sha256"], "file_existed": existed})
    return Outcome(call_id, "deleted", "" if existed else "the file was already gone")


def _who(actor: Principal | str) -> tuple[str, str | None]:
    if isinstance(actor, Principal):
        return actor.name, actor.role
    return actor, None


async def delete_audio(conn: asyncpg.Connection, call_id: str, local_dir: Path, *, actor: Principal | str,
                       reason: str = "manual", remote: str | None = None) -> Outcome:
    """Delete one call's recording; the row stays and says so.  Legal hold refuses (audited)."""
    async with conn.transaction():
        row = await _lock_deletable(conn, call_id, "audio", actor=actor, reason=reason, remote=remote)
        if isinstance(row, Outcome):
            return row
        return await _delete_audio_locked(conn, row, local_dir, actor=actor, reason=reason)


async def _lock_deletable(conn: asyncpg.Connection, call_id: str, what: str, *, actor: Principal | str,
                          reason: str, remote: str | None) -> asyncpg.Record | Outcome:
    """Lock the call's row for a deletion, or say why not: unknown, held (the refusal is audited),
    or still going on."""
    row = await _lock(conn, call_id)
    if row is None:
        return Outcome(call_id, "not_found")
    if row["legal_hold"]:
        name, role = _who(actor)
        await audit.append(conn, actor=name, role=role, action="delete_refused", call_id=call_id,
                           details={"what": what, "reason": reason, "legal_hold": row["legal_hold_reason"]},
                           remote=remote)
        return Outcome(call_id, "held", row["legal_hold_reason"] or "")
    if row["finalized_at"] is None:
        return Outcome(call_id, "open", "the call is still going on")
    return row


async def _anonymize_locked(conn: asyncpg.Connection, row: asyncpg.Record, local_dir: Path, *,
                            actor: Principal | str, reason: str, note: dict[str, Any] | None = None) -> Outcome:
    call_id = str(row["id"])
    if row["anonymized_at"] is not None:
        return Outcome(call_id, "already")
    audio = await _delete_audio_locked(conn, row, local_dir, actor=actor, reason=reason)
    sets = ", ".join(f"{col} = ${i + 2}" for i, col in enumerate(PERSONAL_FIELDS))
    await conn.execute(
        f"UPDATE calls SET {sets}, anonymized_at = now(), anonymized_reason = ${len(PERSONAL_FIELDS) + 2}, "
        "updated_at = now() WHERE id = $1", row["id"], *PERSONAL_FIELDS.values(), reason)
    parties = await conn.execute(
        "UPDATE call_parties SET number = NULL, name = NULL, channel = '' WHERE call_id = $1 AND role <> 'agent'",
        row["id"])
    # Tags are free text staff typed about the call: they may name the caller.
    tags = await conn.execute("DELETE FROM call_tags WHERE call_id = $1", row["id"])
    hooks = await _erase_hook_payloads(conn, row["id"])
    name, role = _who(actor)
    await audit.append(conn, actor=name, role=role, action="anonymize", call_id=call_id,
                       details={"reason": reason, **(note or {}), "fields": list(PERSONAL_FIELDS),
                                "parties": _count(parties), "tags_removed": _count(tags), "hook_jobs": hooks})
    return Outcome(call_id, "anonymized", audio_deleted=audio.result == "deleted")


async def _erase_hook_payloads(conn: asyncpg.Connection, call_id: Any) -> int:
    """The post-recording hook outbox (policy part, migration 004) holds a copy of the call's metadata:
    blank it, and cancel hooks that have not run yet, so an erased caller is not sent on afterwards."""
    if not await conn.fetchval("SELECT to_regclass('hook_jobs') IS NOT NULL"):
        return 0
    status = await conn.execute(
        """UPDATE hook_jobs SET payload = jsonb_build_object('call_id', call_id::text, 'anonymized', true),
                  last_error = CASE WHEN state = 'pending' THEN 'cancelled: the call was anonymized'
                                    ELSE last_error END,
                  state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END
            WHERE call_id = $1""", call_id)
    return _count(status)


def _count(status: str) -> int:
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0


async def anonymize(conn: asyncpg.Connection, call_id: str, local_dir: Path, *, actor: Principal | str,
                    reason: str, remote: str | None = None, note: dict[str, Any] | None = None) -> Outcome:
    """Erase a call's audio and personal fields; the row stays as a tombstone.  Legal hold refuses."""
    async with conn.transaction():
        row = await _lock_deletable(conn, call_id, "call", actor=actor, reason=reason, remote=remote)
        if isinstance(row, Outcome):
            return row
        return await _anonymize_locked(conn, row, local_dir, actor=actor, reason=reason, note=note)


# -- legal hold ---------------------------------------------------------------------------------


async def set_legal_hold(conn: asyncpg.Connection, call_id: str, hold: bool, *, actor: Principal | str,
                         reason: str | None, remote: str | None = None,
                         visible_sql: str = "TRUE", visible_args: Sequence[Any] = ()) -> dict[str, Any] | None:
    """Set or release the hold; audited.  None when there is no such (visible) call."""
    name, role = _who(actor)
    n = len(visible_args)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT c.id, c.legal_hold, c.legal_hold_reason FROM calls c WHERE c.id = ${n + 1}::uuid "
            f"AND {visible_sql} FOR UPDATE OF c", *visible_args, call_id)
        if row is None:
            return None
        new = await conn.fetchrow(
            "UPDATE calls SET legal_hold = $2, legal_hold_by = $3, legal_hold_at = now(), legal_hold_reason = $4, "
            "updated_at = now() WHERE id = $1 "
            "RETURNING id, legal_hold, legal_hold_by, legal_hold_at, legal_hold_reason, audio_deleted_at, "
            "anonymized_at",
            row["id"], hold, name, reason)
        await audit.append(conn, actor=name, role=role, action="legal_hold" if hold else "legal_hold_release",
                           call_id=call_id, remote=remote,
                           details={"reason": reason, "was": row["legal_hold"],
                                    "previous_reason": row["legal_hold_reason"]})
    return {"id": str(new["id"]), "legal_hold": new["legal_hold"], "legal_hold_by": new["legal_hold_by"],
            "legal_hold_at": new["legal_hold_at"].isoformat(), "legal_hold_reason": new["legal_hold_reason"],
            # A hold keeps what is left: say so when the audio or the personal fields are already gone.
            "audio_deleted_at": _iso(new["audio_deleted_at"]), "anonymized_at": _iso(new["anonymized_at"])}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- retention ----------------------------------------------------------------------------------


@dataclass
class RetentionReport:
    dry_run: bool
    started_at: datetime
    audio_deleted: int = 0
    anonymized: int = 0
    held_skipped: int = 0
    errors: int = 0
    audio_due: int = 0  # dry run: what a real run would do
    metadata_due: int = 0
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "started_at"}
        out["started_at"] = self.started_at.isoformat()
        return out


def _due_clause(settings: RetentionSettings, kind: str, now: datetime, args: list[Any]) -> str | None:
    """SQL over ``calls`` for "older than its retention" (kind: audio | metadata); None if nothing is."""

    def add(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    index = 0 if kind == "audio" else 1
    parts = []
    for rule in settings.rules:
        days = settings.for_rule(rule.rule)[index]
        if days > 0:
            parts.append(f"(policy_rule = {add(rule.rule)} AND started_at < {add(now - timedelta(days=days))})")
    default_days = (settings.audio_days, settings.metadata_days)[index]
    if default_days > 0:
        names = [r.rule for r in settings.rules]
        parts.append(f"((policy_rule IS NULL OR NOT (policy_rule = ANY({add(names)}::text[]))) "
                     f"AND started_at < {add(now - timedelta(days=default_days))})")
    return "(" + " OR ".join(parts) + ")" if parts else None


_PENDING = {
    "audio": "finalized_at IS NOT NULL AND audio_deleted_at IS NULL AND recording_path IS NOT NULL",
    "metadata": "finalized_at IS NOT NULL AND anonymized_at IS NULL",
}


async def count_due(conn: asyncpg.Connection | asyncpg.Pool, settings: RetentionSettings,
                    now: datetime | None = None) -> dict[str, int]:
    """How many calls are due (not held) and how many are kept only by a legal hold."""
    now = now or datetime.now(UTC)
    out = {"audio_due": 0, "metadata_due": 0, "held": 0}
    held_parts = []
    held_args: list[Any] = []
    for kind in ("metadata", "audio"):
        kind_args: list[Any] = []
        due = _due_clause(settings, kind, now, kind_args)
        if due is None:
            continue
        out[f"{kind}_due"] = await conn.fetchval(
            f"SELECT count(*) FROM calls WHERE {_PENDING[kind]} AND NOT legal_hold AND {due}", *kind_args)
        held_parts.append(f"({_PENDING[kind]} AND {_due_clause(settings, kind, now, held_args)})")
    if held_parts:
        out["held"] = await conn.fetchval(
            f"SELECT count(*) FROM calls WHERE legal_hold AND ({' OR '.join(held_parts)})", *held_args)
    return out


async def run_retention(pool: asyncpg.Pool, settings: RetentionSettings, local_dir: Path, *, dry_run: bool = False,
                        actor: str = RETENTION_ACTOR, stop: asyncio.Event | None = None,
                        now: datetime | None = None, pause: float = 0.0) -> RetentionReport:
    """One retention pass in bounded batches (one transaction each, rows locked SKIP LOCKED so a
    concurrent run or a hold being set never waits on a whole pass).  Metadata first (it deletes the
    audio too), then audio.  Recorded in ``retention_runs``."""
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run=dry_run, started_at=now)
    counts = await count_due(pool, settings, now)
    report.held_skipped = counts["held"]
    report.audio_due, report.metadata_due = counts["audio_due"], counts["metadata_due"]
    run_id = await pool.fetchval(
        "INSERT INTO retention_runs (actor, dry_run, held_skipped) VALUES ($1, $2, $3) RETURNING id",
        actor, dry_run, report.held_skipped)
    error: str | None = None
    try:
        if not dry_run:
            for kind in ("metadata", "audio"):
                await _run_kind(pool, settings, local_dir, kind, now, actor, report, stop, pause)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        report.errors += 1
        report.error_samples.append(error)
        raise
    finally:
        try:
            await pool.execute(
                "UPDATE retention_runs SET finished_at = now(), audio_deleted = $2, anonymized = $3, errors = $4, "
                "error = $5 WHERE id = $1", run_id, report.audio_deleted, report.anonymized, report.errors,
                error or (report.error_samples[0] if report.error_samples else None))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("retention: could not record the end of run %s", run_id)
    return report


async def _run_kind(pool: asyncpg.Pool, settings: RetentionSettings, local_dir: Path, kind: str, now: datetime,
                    actor: str, report: RetentionReport, stop: asyncio.Event | None, pause: float) -> None:
    args: list[Any] = []
    due = _due_clause(settings, kind, now, args)
    if due is None:
        return
    failed: list[str] = []
    args.append(failed)
    args.append(settings.batch_size)
    sql = (f"SELECT id, recording_path, recording_sha256, audio_deleted_at, anonymized_at, legal_hold, "
           f"legal_hold_reason, finalized_at FROM calls WHERE {_PENDING[kind]} AND NOT legal_hold AND {due} "
           f"AND NOT (id = ANY(${len(args) - 1}::uuid[])) ORDER BY started_at LIMIT ${len(args)} "
           "FOR UPDATE SKIP LOCKED")
    while stop is None or not stop.is_set():
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql, *args)
            for row in rows:
                try:
                    async with conn.transaction():  # a savepoint: one bad call does not undo the batch
                        if kind == "metadata":
                            out = await _anonymize_locked(conn, row, local_dir, actor=actor, reason="retention")
                            report.anonymized += 1
                            report.audio_deleted += out.audio_deleted
                        else:
                            out = await _delete_audio_locked(conn, row, local_dir, actor=actor, reason="retention")
                            report.audio_deleted += out.result == "deleted"
                except (OSError, asyncpg.PostgresError) as exc:
                    # Skipped for the rest of this run; retried at the next one.
                    failed.append(str(row["id"]))
                    report.errors += 1
                    if len(report.error_samples) < 10:
                        report.error_samples.append(f"{row['id']}: {type(exc).__name__}: {exc}"[:300])
                    log.warning("retention: call %s not processed: %s", row["id"], exc)
        if len(rows) < settings.batch_size:
            return
        # Pace the batches: a large backlog must not starve the disk Asterisk records onto.
        await asyncio.sleep(pause)


class RetentionJob:
    """The daemon's periodic retention pass.  Runs in the background on the shared pool; a failing
    pass is logged and retried at the next interval, and never touches the call flow."""

    def __init__(self, pool: asyncpg.Pool, settings: RetentionSettings, local_dir: Path) -> None:
        self.pool = pool
        self.settings = settings
        self.local_dir = local_dir
        self.stop = asyncio.Event()
        self.runs = 0
        self.last_report: RetentionReport | None = None
        self.ran = asyncio.Event()  # set after each pass (tests wait on it)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            started = loop.time()
            try:
                report = await run_retention(self.pool, self.settings, self.local_dir, stop=self.stop,
                                             pause=BATCH_PAUSE)
                self.last_report = report
                if report.audio_deleted or report.anonymized or report.errors:
                    log.info("retention: %d recording(s) deleted, %d call(s) anonymized, %d kept by legal hold, "
                             "%d error(s)", report.audio_deleted, report.anonymized, report.held_skipped,
                             report.errors)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retention pass failed, retrying in %gs: %s", self.settings.interval, exc)
            self.runs += 1
            self.ran.set()
            wait = max(1.0, self.settings.interval - (loop.time() - started))
            try:
                await asyncio.wait_for(self.stop.wait(), wait)
            except TimeoutError:
                pass


# -- data subjects ------------------------------------------------------------------------------

_NUMBER_NOISE = re.compile(r"[\s().\-/]")
_NUMBER_OK = re.compile(r"^[0-9A-Za-z+*#]{1,64}$")


def normalize_number(text: str) -> str:
    """``+7 (495) 123-45-67`` -> ``+74951234567``; raises ValueError on something not a number."""
    out = _NUMBER_NOISE.sub("", text)
    if not _NUMBER_OK.match(out):
        raise ValueError(f"not a phone number: {text!r}")
    return out


def _norm_sql(column: str) -> str:
    return f"regexp_replace(coalesce({column}, ''), '[[:space:]().\\-/]', '', 'g')"


async def find_subject_calls(conn: asyncpg.Connection, numbers: Sequence[str]) -> list[asyncpg.Record]:
    """Every call where one of ``numbers`` was the caller, the called number or a non-agent party
    (spaces, dashes, dots and brackets ignored on both sides), oldest first."""
    return await conn.fetch(
        f"""SELECT c.* FROM calls c
             WHERE {_norm_sql('c.caller_number')} = ANY($1::text[])
                OR {_norm_sql('c.called_number')} = ANY($1::text[])
                OR EXISTS (SELECT 1 FROM call_parties p WHERE p.call_id = c.id AND p.role <> 'agent'
                                  AND {_norm_sql('p.number')} = ANY($1::text[]))
             ORDER BY c.started_at, c.id""", list(numbers))


async def agent_calls(conn: asyncpg.Connection, numbers: Sequence[str]) -> int:
    """How many calls have one of ``numbers`` as their agent: a sign the number is staff, not a caller."""
    return await conn.fetchval(f"SELECT count(*) FROM calls c WHERE {_norm_sql('c.agent')} = ANY($1::text[])",
                               list(numbers))


async def erase_subject(pool: asyncpg.Pool, numbers: Sequence[str], local_dir: Path, *, actor: Principal,
                        reference: str | None = None) -> list[Outcome]:
    """Anonymize every call of the numbers; held and still-open calls are kept and reported."""
    async with pool.acquire() as conn:
        rows = await find_subject_calls(conn, numbers)
        outcomes = []
        for row in rows:
            out = await anonymize(conn, str(row["id"]), local_dir, actor=actor, reason="subject_erase",
                                  note={"reference": reference})
            outcomes.append(out)
        await audit.append(conn, actor=actor.name, role=actor.role, action="subject_erase",
                           details={"reference": reference, "calls": len(rows),
                                    "anonymized": sum(o.result == "anonymized" for o in outcomes),
                                    "held": [o.call_id for o in outcomes if o.result == "held"],
                                    "open": [o.call_id for o in outcomes if o.result == "open"]})
    return outcomes
