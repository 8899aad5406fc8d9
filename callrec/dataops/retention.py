"""Retention: delete old audio and anonymize old calls, in bounded batches, through the deletion gate.

Per policy rule or by default, audio older than ``audio_days`` is deleted and calls older than
``metadata_days`` are anonymized (``callrec.dataops.deletion``).  Calls under legal hold are
skipped and counted.  ``RetentionJob`` runs a pass periodically inside the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from callrec.config.dataops import RetentionSettings
from callrec.dataops.deletion import GATE_COLUMNS, anonymize_locked, delete_locked_audio
from callrec.storage import Storage
from callrec.store.db import Db

log = logging.getLogger("callrec.dataops.retention")

RETENTION_ACTOR = "retention"
BATCH_PAUSE = 0.1  # seconds between the daemon job's batches


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


async def count_due(conn: Db, settings: RetentionSettings,
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


async def run_retention(pool: asyncpg.Pool, settings: RetentionSettings, storage: Storage | Path, *,
                        dry_run: bool = False, actor: str = RETENTION_ACTOR, stop: asyncio.Event | None = None,
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
                await _run_kind(pool, settings, storage, kind, now, actor, report, stop, pause)
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


async def _run_kind(pool: asyncpg.Pool, settings: RetentionSettings, storage: Storage | Path, kind: str, now: datetime,
                    actor: str, report: RetentionReport, stop: asyncio.Event | None, pause: float) -> None:
    args: list[Any] = []
    due = _due_clause(settings, kind, now, args)
    if due is None:
        return
    failed: list[str] = []
    args.append(failed)
    args.append(settings.batch_size)
    sql = (f"SELECT {GATE_COLUMNS} FROM calls WHERE {_PENDING[kind]} AND NOT legal_hold AND {due} "
           f"AND NOT (id = ANY(${len(args) - 1}::uuid[])) ORDER BY started_at LIMIT ${len(args)} "
           "FOR UPDATE SKIP LOCKED")
    while stop is None or not stop.is_set():
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql, *args)
            for row in rows:
                try:
                    async with conn.transaction():  # a savepoint: one bad call does not undo the batch
                        if kind == "metadata":
                            out = await anonymize_locked(conn, row, storage, actor=actor, reason="retention")
                            report.anonymized += out.result == "anonymized"
                            report.audio_deleted += out.audio_deleted
                        else:
                            out = await delete_locked_audio(conn, row, storage, actor=actor, reason="retention")
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

    def __init__(self, pool: asyncpg.Pool, settings: RetentionSettings, storage: Storage | Path) -> None:
        self.pool = pool
        self.settings = settings
        self.storage = storage
        self.stop = asyncio.Event()
        self.runs = 0
        self.last_report: RetentionReport | None = None
        self.ran = asyncio.Event()  # set after each pass (tests wait on it)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            started = loop.time()
            try:
                report = await run_retention(self.pool, self.settings, self.storage, stop=self.stop,
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
