"""``callrec calls``: search the call log with the API's filters and formats."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import asyncpg

from callrec.access import cli_principal
from callrec.cli.common import CommandError, command, json_default
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import safe_text, table
from callrec.store import audit, callquery
from callrec.store.callquery import FilterError, csv_cell


def add_commands(sub: object) -> None:
    calls = command(sub, "calls", "search the call log (the API's filters)", run_calls)
    calls.add_argument("-n", "--limit", type=int, default=20, help="rows (1-10000, default 20)")
    calls.add_argument("--from", dest="since", metavar="TIME", help="started at or after (ISO 8601; UTC if no offset)")
    calls.add_argument("--to", dest="until", metavar="TIME", help="started before")
    calls.add_argument("--number", help="caller or called number; * is a wildcard")
    calls.add_argument("--direction", choices=callquery.DIRECTIONS)
    calls.add_argument("--agent", help="the agent's extension")
    calls.add_argument("--consent", choices=callquery.CONSENTS)
    calls.add_argument("--recorded", choices=("true", "false"))
    calls.add_argument("--min-duration", type=float, metavar="SECONDS")
    calls.add_argument("--max-duration", type=float, metavar="SECONDS")
    calls.add_argument("--tag", action="append", default=[], help="has this tag (repeatable: all of them)")
    calls.add_argument("-q", dest="q", help="free text in caller, party and agent names")
    calls.add_argument("--order", choices=("desc", "asc"), default="desc")
    calls.add_argument("--cursor", help="continue after the page that printed this cursor")
    calls.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="json and csv have the API export's columns")
    calls.add_argument("--all", action="store_true", help="every matching call, streamed (json/csv; audited)")
    calls.add_argument("--json", action="store_true", help="JSON lines, one call per line, every field")


def _filter(args: argparse.Namespace) -> callquery.CallFilter:
    values: dict[str, list[str]] = {}
    for key, attr in (("from", "since"), ("to", "until"), ("number", "number"), ("direction", "direction"),
                      ("agent", "agent"), ("consent", "consent"), ("recorded", "recorded"),
                      ("min_duration", "min_duration"), ("max_duration", "max_duration"), ("q", "q"),
                      ("order", "order"), ("cursor", "cursor")):
        value = getattr(args, attr)
        if value is not None:
            values[key] = [str(value)]
    values["tag"] = list(args.tag)
    values["limit"] = [str(args.limit)]
    return callquery.parse_filter(lambda k: values.get(k, []), max_limit=10000, default_limit=20)


async def run_calls(args: argparse.Namespace, settings: Settings) -> int:
    try:
        f = _filter(args)
    except FilterError as exc:
        raise CommandError(str(exc)) from None
    if args.all and (args.format == "table" or args.json):
        raise CommandError("--all needs --format json or csv")
    # The operator at the CLI holds the database credentials: the admin view.
    who = cli_principal()
    out = sys.stdout
    cursor = None
    async with open_database(settings) as conn:
        try:
            if args.format != "table" and not args.json:
                await audit.append(conn, actor=who.name, role=who.role, action="export",
                                   details={"format": args.format, "filter": f.describe(), "via": "cli",
                                            "all": args.all})
            if args.all:
                sql, params = callquery.search_sql(f, who, limit=None)
                rows_iter = _stream(conn, sql, params)
            else:
                rows, cursor = await callquery.search(conn, f, who, full=args.json)
                rows_iter = _aiter(rows)
            if args.json:
                async for row in rows_iter:
                    # ensure_ascii keeps every caller-supplied character escaped on the terminal.
                    print(json.dumps(dict(row), default=json_default, ensure_ascii=True), file=out)
            elif args.format == "json":
                out.write("[")
                first = True
                async for row in rows_iter:
                    out.write(("\n" if first else ",\n") + json.dumps(callquery.summary(row), ensure_ascii=True))
                    first = False
                out.write("]\n")
            elif args.format == "csv":
                w = csv.writer(out, lineterminator="\r\n")
                w.writerow(callquery.SUMMARY_COLUMNS)
                tty = out.isatty()  # a terminal gets control characters escaped; a file gets the data
                async for row in rows_iter:
                    cells = [csv_cell(row[k]) for k in callquery.SUMMARY_COLUMNS]
                    w.writerow([safe_text(c) if tty and isinstance(c, str) else c for c in cells])
            else:
                _print_table([r async for r in rows_iter])
        except asyncpg.UndefinedTableError:
            raise CommandError("database: no call log yet; run `callrec migrate`", 1) from None
    if cursor:
        print(f"more: --cursor {cursor}", file=sys.stderr)
    return 0


async def _aiter(rows: list[Any]) -> AsyncIterator[Any]:
    for row in rows:
        yield row


async def _stream(conn: asyncpg.Connection, sql: str, params: list[Any]) -> AsyncIterator[Any]:
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(sql, *params, prefetch=1000):
            yield row


def _print_table(rows: list[Any]) -> None:
    headers = ["started (UTC)", "caller", "name", "called", "agent", "consent", "key", "recording", "tags",
               "call id"]
    widths = [19, 16, 20, 12, 8, 13, 3, 16, 16, 36]
    out = []
    for r in rows:
        rec = r["recording_status"]
        if r["audio_deleted_at"] is not None:
            rec = "deleted"
        elif r["recording_duration"]:
            rec += f" {r['recording_duration']:.1f}s"
        out.append([
            r["started_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), r["caller_number"] or "",
            r["caller_name"] or "", r["called_number"] or "", r["agent"] or "", r["consent"] or "",
            r["consent_key"] or "", rec, ",".join(r["tags"] or []) + (" [C]" if r["confidential"] else ""),
            str(r["id"]),
        ])
    print(table(headers, out, widths))
    if not rows:
        print("(no calls)")
