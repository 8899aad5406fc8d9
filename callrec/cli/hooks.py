"""``callrec hooks``: the hook jobs (a recording's, and keyword alerts'); ``--failed --retry`` queues the
failed ones again."""

from __future__ import annotations

import argparse
import os
from datetime import UTC

import asyncpg

from callrec.cli.common import CommandError, command
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import table


def add_commands(sub: object) -> None:
    hooks = command(sub, "hooks", "post-recording hook jobs", run_hooks)
    hooks.add_argument("--failed", action="store_true", help="only jobs that failed for good")
    hooks.add_argument("-n", "--limit", type=int, default=20)
    hooks.add_argument("--retry", action="store_true", help="put the failed jobs listed back in the queue")


async def run_hooks(args: argparse.Namespace, settings: Settings) -> int:
    async with open_database(settings) as conn:
        try:
            where = "WHERE state = 'failed'" if args.failed else ""
            rows = await conn.fetch(f"SELECT * FROM hook_jobs {where} ORDER BY created_at DESC, id DESC LIMIT $1",
                                    max(1, min(args.limit, 10000)))
            if args.retry:
                ids = [r["id"] for r in rows if r["state"] == "failed"]
                await conn.execute("UPDATE hook_jobs SET state = 'pending', attempts = 0, next_attempt_at = now(), "
                                   "done_at = NULL WHERE id = ANY($1::bigint[])", ids)
                print(f"{len(ids)} failed job(s) queued again; a running daemon picks them up within 30 s")
                return 0
        except asyncpg.UndefinedTableError:
            raise CommandError("database: no hook table yet; run `callrec migrate`", 1) from None
    out = [[str(r["id"]), r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r["hook"] + (f" {r['key']}" if r.get("key") else ""), r["state"],
            str(r["attempts"]), r["next_attempt_at"].astimezone(UTC).strftime("%H:%M:%S") if r["state"] == "pending"
            else "", str(r["call_id"]), r["last_error"] or ""] for r in rows]
    print(table(["job", "queued (UTC)", "hook", "state", "tries", "next", "call id", "last error"], out,
                [6, 19, 20, 7, 5, 8, 36, 60]))
    if not rows:
        print("(no hook jobs)")
    return 0


def check_lines(settings: Settings) -> list[tuple[str, str, str]]:
    """``check`` lines for the hook command and webhook: ("ok" | "fail", "hooks", detail); one
    ``off`` line when neither is set."""
    from callrec.hooks import redacted_url

    h = settings.hooks
    out = []
    if h.command:
        program = h.command[0]
        ok = os.path.isfile(program) and os.access(program, os.X_OK)
        out.append(("ok" if ok else "fail", "hooks", f"command {program}" + ("" if ok else
                    ": hooks.command: not an executable file")))
    if h.webhook_url:
        out.append(("ok", "hooks", f"webhook {redacted_url(h.webhook_url)}"
                                   + (" (with Authorization)" if h.webhook_auth else "")
                                   + (" (HMAC-signed)" if h.webhook_hmac_key else "")))
    if h.alert_command:
        program = h.alert_command[0]
        ok = os.path.isfile(program) and os.access(program, os.X_OK)
        out.append(("ok" if ok else "fail", "hooks", f"alert command {program}" + ("" if ok else
                    ": hooks.alert_command: not an executable file")))
    if h.alert_webhook_url:
        out.append(("ok", "hooks", f"alert webhook {redacted_url(h.alert_webhook_url)}"
                                   + (" (HMAC-signed)" if h.webhook_hmac_key else "")))
    if not out:
        out.append(("ok", "hooks", "off (no hooks.command, no hooks.webhook_url)"))
    return out
