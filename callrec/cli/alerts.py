"""``callrec alerts``: keyword alerts, and ``callrec alerts rules [add|delete]``: their rules.

The list acts with the admin's view, or with a console user's (``--as NAME``: their role and extension,
the same visibility rule as the API), and is audited like the API's list.  Rules of the config file are
shown with source ``config``; ``add`` and ``delete`` change only the API's (audited as the operator).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from typing import Any

from callrec.access import Principal, cli_principal
from callrec.cli.common import CommandError, call_id, command, json_default
from callrec.cli.database import open_database
from callrec.config.alerts import ALERT_KINDS, ALERT_SPEAKERS, build_rule
from callrec.config.fields import ConfigError
from callrec.config.settings import Settings
from callrec.display import safe_text, table
from callrec.store import alerts as store
from callrec.store import audit, callquery
from callrec.store.callquery import FilterError


def add_commands(sub: object) -> None:
    a = command(sub, "alerts", "keyword alerts, newest first (and their rules: alerts rules)", run_alerts)
    a.add_argument("--rule", help="only this rule's alerts")
    a.add_argument("--call-id", type=call_id)
    a.add_argument("--since", metavar="TIME", help="raised at or after this ISO 8601 time (UTC without an offset)")
    a.add_argument("-n", "--limit", type=int, default=50, help="at most this many (1-10000, default 50)")
    a.add_argument("--cursor", help="the next page (printed on stderr as `more: --cursor ...`)")
    a.add_argument("--as", dest="as_user", metavar="USER",
                   help="show what this console user may see (their role and extension)")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    rules = command(a.add_subparsers(dest="alerts_command", required=False), "rules",
                    "keyword alert rules: the config file's and the API's", run_rules)
    rules.add_argument("--json", action="store_true", help="one JSON object per line")
    r = rules.add_subparsers(dest="rules_command", required=False)
    add = command(r, "add", "add a rule (as through the API; audited)", run_rules)
    add.add_argument("name")
    add.add_argument("--phrase", dest="phrases", action="append", required=True, metavar="PHRASE",
                     help="a word or phrase (repeat for more: any one counts)")
    add.add_argument("--speaker", choices=ALERT_SPEAKERS, default="any")
    add.add_argument("--kind", choices=ALERT_KINDS, default="said")
    add.add_argument("--within", dest="within_s", type=int, metavar="SECONDS",
                     help="only the first SECONDS of the recording count")
    delete = command(r, "delete", "delete a rule added through the API (its alerts stay)", run_rules)
    delete.add_argument("name")


async def _principal(conn: Any, as_user: str | None) -> Principal:
    me = cli_principal()
    if as_user is None:
        return me
    row = await conn.fetchrow("SELECT role, extension, disabled FROM users WHERE name = $1", as_user)
    if row is None or row["disabled"]:
        raise CommandError(f"--as: no active user {as_user!r}")
    return Principal(name=f"{me.name} as {as_user}", role=row["role"], extension=row["extension"], via="cli")


async def run_alerts(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = callquery.parse_time("since", args.since) if args.since else None
        cursor = store.decode_cursor(args.cursor) if args.cursor else None
    except (FilterError, store.CursorError) as exc:
        raise CommandError(str(exc)) from None
    if not 1 <= args.limit <= 10000:
        raise CommandError(f"--limit: expected 1-10000, got {args.limit}")
    async with open_database(settings, pool=True) as pool:
        async with pool.acquire() as conn:
            principal = await _principal(conn, args.as_user)
            items, more = await store.list_alerts(conn, principal, rule=args.rule, call_id=args.call_id, since=since,
                                                  cursor=cursor, limit=args.limit)
        await audit.note_search_page(pool, window_s=settings.http.search_audit_window, actor=principal.name,
                                     role=principal.role, rows=len(items), action="alerts_list", details={
                                         "filter": {k: v for k, v in (("rule", args.rule), ("call_id", args.call_id),
                                                                      ("since", args.since)) if v}})
    if args.json:
        for item in items:
            print(json.dumps(item, default=json_default, ensure_ascii=True))
    else:
        print(table(["id", "raised (UTC)", "rule", "kind", "call id", "speaker", "at", "phrase"], [
            [str(a["id"]), a["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), safe_text(a["rule"]),
             a["kind"], a["call_id"], a["speaker"] or "", _offset(a["offset_ms"]), safe_text(a["phrase"])]
            for a in items], [7, 19, 24, 8, 36, 7, 8, 40]))
    if more:
        print(f"more: --cursor {more}", file=sys.stderr)
    return 0


def _offset(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms // 60000}:{ms // 1000 % 60:02d}.{ms // 100 % 10}"


async def run_rules(args: argparse.Namespace, settings: Settings) -> int:
    own = {r.name for r in settings.alerts.rules}
    me = cli_principal()
    if args.rules_command == "add":
        values = {"name": args.name, "phrases": args.phrases, "speaker": args.speaker, "kind": args.kind,
                  **({"within_s": args.within_s} if args.within_s is not None else {})}
        try:
            rule = build_rule("rule", values)
        except ConfigError as exc:
            raise CommandError(str(exc).removeprefix("rule.")) from None
        if rule.name in own:
            raise CommandError(f"{rule.name}: a rule of the config file has this name")
        async with open_database(settings) as conn, conn.transaction():
            for phrase, lexemes in zip(rule.phrases, await store.lexemes(conn, rule.phrases), strict=True):
                if not lexemes:
                    raise CommandError(f"--phrase: {phrase!r} has only stop words; it would never match")
            row = await store.add_rule(conn, name=rule.name, phrases=rule.phrases, speaker=rule.speaker,
                                       kind=rule.kind, within_s=rule.within_s, created_by=me.name)
            if row is None:
                raise CommandError(f"{rule.name}: an alert rule of this name exists")
            await audit.append(conn, actor=me.name, role=me.role, action="alert_rule_add", details={
                k: row[k] for k in ("name", "phrases", "speaker", "kind", "within_s")})
        print(f"added: alert rule {rule.name}")
        return 0
    if args.rules_command == "delete":
        if args.name in own:
            raise CommandError(f"{args.name}: a rule of the config file; change it there")
        async with open_database(settings) as conn, conn.transaction():
            row = await store.delete_rule(conn, args.name)
            if row is None:
                raise CommandError(f"{args.name}: no such alert rule", 1)
            await audit.append(conn, actor=me.name, role=me.role, action="alert_rule_delete", details={
                k: row[k] for k in ("name", "phrases", "speaker", "kind", "within_s")})
        print(f"deleted: alert rule {args.name} (its alerts stay)")
        return 0
    async with open_database(settings) as conn:
        api = [r for r in await store.list_rules(conn) if r["name"] not in own]
    rows: list[dict[str, Any]] = [
        {"name": r.name, "phrases": list(r.phrases), "speaker": r.speaker, "kind": r.kind, "within_s": r.within_s,
         "source": "config", "created_by": None, "created_at": None} for r in settings.alerts.rules]
    rows += [{**r, "source": "api"} for r in api]
    if args.json:
        for r in rows:
            print(json.dumps(r, default=json_default, ensure_ascii=True))
        return 0
    print(table(["name", "source", "kind", "speaker", "within", "phrases"], [
        [safe_text(r["name"]), r["source"], r["kind"], r["speaker"],
         "" if r["within_s"] is None else f"{r['within_s']} s", safe_text(" | ".join(r["phrases"]))]
        for r in rows], [24, 6, 8, 7, 8, 60]))
    return 0
