"""``callrec retention run | status`` and ``callrec hold set | release | list`` (legal hold)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC

from callrec.access import cli_principal
from callrec.cli.common import call_id, command, dump, group, open_storage
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.dataops.deletion import set_legal_hold
from callrec.dataops.retention import count_due, run_retention
from callrec.display import table


def add_commands(sub: object) -> None:
    ret = group(sub, "retention", "retention: delete old audio, anonymize old calls")
    run = command(ret, "run", "one retention pass now (the daemon also runs it periodically)", run_retention_pass)
    run.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    run.add_argument("--json", action="store_true")
    status = command(ret, "status", "what is due, what a legal hold keeps, the last runs", run_status)
    status.add_argument("--json", action="store_true")

    hold = group(sub, "hold", "legal hold: no deletion of any kind while it is set")
    hset = command(hold, "set", "put calls under legal hold", run_hold)
    hset.add_argument("call_ids", nargs="+", metavar="CALL_ID", type=call_id)
    hset.add_argument("--reason", required=True, help="why (case or request reference)")
    hrel = command(hold, "release", "release the legal hold", run_hold)
    hrel.add_argument("call_ids", nargs="+", metavar="CALL_ID", type=call_id)
    hrel.add_argument("--reason", help="why it is released")
    hlist = command(hold, "list", "calls under legal hold", run_hold_list)
    hlist.add_argument("--json", action="store_true")


def days(n: int) -> str:
    return "kept forever" if n == 0 else f"{n} day(s)"


def check_lines(settings: Settings) -> list[tuple[str, bool, str]]:
    """The ``check`` line for retention: its days and job, or ``off``."""
    r = settings.retention
    if not r.active:
        return [("retention", True, "off (no audio_days or metadata_days set: recordings and rows are kept forever)")]
    job = f"daemon job every {r.interval:g}s" if r.enabled else "daemon job off (retention.enabled = false)"
    return [("retention", True, f"audio {days(r.audio_days)}, metadata {days(r.metadata_days)}, "
                                f"{len(r.rules)} rule(s); {job}")]


async def run_status(args: argparse.Namespace, settings: Settings) -> int:
    r = settings.retention
    async with open_database(settings, current_schema=True) as conn:
        counts = await count_due(conn, r)
        runs = [dict(x) for x in await conn.fetch("SELECT * FROM retention_runs ORDER BY id DESC LIMIT 5")]
    doc = {"config": {"audio_days": r.audio_days, "metadata_days": r.metadata_days, "enabled": r.enabled,
                      "interval": r.interval,
                      "rules": {x.rule: dict(zip(("audio_days", "metadata_days"), r.for_rule(x.rule), strict=True))
                                for x in r.rules}},
           **counts, "last_runs": runs}
    if args.json:
        print(dump(doc))
        return 0
    print(f"default: audio {days(r.audio_days)}, metadata {days(r.metadata_days)}"
          + ("" if r.enabled else " (daemon job disabled)"))
    for x in r.rules:
        a, m = r.for_rule(x.rule)
        print(f"rule {x.rule}: audio {days(a)}, metadata {days(m)}")
    print(f"due now: {counts['audio_due']} recording(s), {counts['metadata_due']} call(s) to anonymize; "
          f"{counts['held']} kept by legal hold")
    for run_ in runs:
        print(f"run {run_['id']} {run_['started_at']:%Y-%m-%d %H:%M:%S} by {run_['actor']}"
              f"{' (dry run)' if run_['dry_run'] else ''}: {run_['audio_deleted']} audio, "
              f"{run_['anonymized']} anonymized, {run_['held_skipped']} held, {run_['errors']} error(s)")
    return 0


async def run_retention_pass(args: argparse.Namespace, settings: Settings) -> int:
    r = settings.retention
    async with open_database(settings, pool=True, current_schema=True) as pool:
        if not r.active:
            print("retention: no retention days configured ([retention] audio_days / metadata_days); nothing to do")
        report = await run_retention(pool, r, open_storage(settings), dry_run=args.dry_run,
                                     actor=cli_principal().name)
    if args.json:
        print(dump(report.as_dict()))
    elif args.dry_run:
        print(f"dry run: would delete {report.audio_due} recording(s) and anonymize {report.metadata_due} call(s); "
              f"{report.held_skipped} call(s) kept by legal hold")
    else:
        print(f"deleted {report.audio_deleted} recording(s), anonymized {report.anonymized} call(s); "
              f"{report.held_skipped} call(s) kept by legal hold; {report.errors} error(s)")
        for sample in report.error_samples:
            print(f"  error: {sample}", file=sys.stderr)
    return 1 if report.errors else 0


async def run_hold_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_database(settings, current_schema=True) as conn:
        rows = await conn.fetch(
            "SELECT id, started_at, legal_hold_by, legal_hold_at, legal_hold_reason FROM calls WHERE legal_hold "
            "ORDER BY legal_hold_at")
    if args.json:
        print(dump([dict(r) for r in rows]))
        return 0
    print(table(["call id", "started (UTC)", "held by", "held at (UTC)", "reason"],
                [[str(r["id"]), f"{r['started_at'].astimezone(UTC):%Y-%m-%d %H:%M}", r["legal_hold_by"] or "",
                  f"{r['legal_hold_at'].astimezone(UTC):%Y-%m-%d %H:%M}" if r["legal_hold_at"] else "",
                  r["legal_hold_reason"] or ""] for r in rows], [36, 16, 20, 16, 40]))
    if not rows:
        print("(no calls under legal hold)")
    return 0


async def run_hold(args: argparse.Namespace, settings: Settings) -> int:
    hold = args.hold_command == "set"
    who = cli_principal()
    failed = 0
    async with open_database(settings, current_schema=True) as conn:
        for call in args.call_ids:
            out = await set_legal_hold(conn, call, hold, actor=who, reason=args.reason)
            if out is None:
                print(f"callrec: {call}: no such call", file=sys.stderr)
                failed += 1
                continue
            print(f"{call}: legal hold {'set' if hold else 'released'}")
            if hold and (out["audio_deleted_at"] or out["anonymized_at"]):
                gone = "anonymized" if out["anonymized_at"] else "audio deleted"
                print(f"  note: this call was already {gone} at "
                      f"{out['anonymized_at'] or out['audio_deleted_at']}; the hold keeps what is left")
    return 1 if failed else 0
