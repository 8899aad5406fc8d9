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
from callrec.cli.common import CommandError, call_id, command, json_default
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import safe_text, table
from callrec.store import audit, callquery
from callrec.store.callquery import FilterError, csv_cell
from callrec.store.transcripts import load_transcript


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
    calls.add_argument("--said", metavar="TEXT",
                       help='what was said: words (each somewhere in the call, any word form) and "quoted phrases"; '
                            "prints where (speaker, mm:ss, the words marked [ ])")
    calls.add_argument("--silence-over", type=float, metavar="PERCENT", help="silence over this share of the call")
    calls.add_argument("--agent-talk-over", type=float, metavar="PERCENT", help="the agent's share of all talk over")
    calls.add_argument("--agent-talk-under", type=float, metavar="PERCENT", help="the agent's share of all talk under")
    calls.add_argument("--overtalk-over", type=float, metavar="SECONDS", help="both talking at once for longer")
    calls.add_argument("--order", choices=("desc", "asc"), default="desc")
    calls.add_argument("--cursor", help="continue after the page that printed this cursor")
    calls.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="json and csv have the API export's columns")
    calls.add_argument("--all", action="store_true", help="every matching call, streamed (json/csv; audited)")
    calls.add_argument("--json", action="store_true", help="JSON lines, one call per line, every field")
    tr = command(sub, "transcript", "print a call's transcript: the dialogue with times (audited)", run_transcript)
    tr.add_argument("call_id", type=call_id, metavar="CALL_ID")
    tr.add_argument("--json", action="store_true", help="the stored transcript with word times, as JSON")


def _filter(args: argparse.Namespace, country: str) -> callquery.CallFilter:
    values: dict[str, list[str]] = {}
    for key, attr in (("from", "since"), ("to", "until"), ("number", "number"), ("direction", "direction"),
                      ("agent", "agent"), ("consent", "consent"), ("recorded", "recorded"),
                      ("min_duration", "min_duration"), ("max_duration", "max_duration"), ("q", "q"),
                      ("said", "said"), ("silence_over", "silence_over"), ("agent_talk_over", "agent_talk_over"),
                      ("agent_talk_under", "agent_talk_under"), ("overtalk_over", "overtalk_over"),
                      ("order", "order"), ("cursor", "cursor")):
        value = getattr(args, attr)
        if value is not None:
            values[key] = [str(value)]
    values["tag"] = list(args.tag)
    values["limit"] = [str(args.limit)]
    return callquery.parse_filter(lambda k: values.get(k, []), max_limit=10000, default_limit=20,
                                  country=country)


async def run_calls(args: argparse.Namespace, settings: Settings) -> int:
    try:
        f = _filter(args, settings.search.default_country)
    except FilterError as exc:
        raise CommandError(str(exc)) from None
    if args.all and (args.format == "table" or args.json):
        raise CommandError("--all needs --format json or csv")
    # The operator at the CLI holds the database credentials: the admin view.
    who = cli_principal()
    out = sys.stdout
    cursor = None
    hits: dict[str, list[dict[str, Any]]] | None = None
    async with open_database(settings) as conn:
        try:
            await callquery.prepare(conn, f)
            if args.format != "table" and not args.json:
                await audit.append(conn, actor=who.name, role=who.role, action="export",
                                   details={"format": args.format, "filter": f.describe(), "via": "cli",
                                            "all": args.all})
            if args.all:
                sql, params = callquery.search_sql(f, who, limit=None)
                rows_iter = _stream(conn, sql, params)
            else:
                rows, cursor = await callquery.search(conn, f, who, full=args.json)
                hits = await callquery.page_hits(conn, f, rows)
                if hits is not None:
                    await audit.append(conn, actor=who.name, role=who.role, action="transcript_search",
                                       details={**callquery.said_audit(f, hits), "via": "cli"})
                rows_iter = _aiter(rows)
            if args.json:
                async for row in rows_iter:
                    item = {k: v for k, v in dict(row).items() if not k.startswith("tr_")}
                    item["transcript"] = callquery.transcript_summary(row)
                    if hits is not None:
                        item["hits"] = hits.get(str(row["id"]), [])
                    # ensure_ascii keeps every caller-supplied character escaped on the terminal.
                    print(json.dumps(item, default=json_default, ensure_ascii=True), file=out)
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
                _print_table([r async for r in rows_iter], hits)
        except FilterError as exc:  # said of stop words only: known once PostgreSQL has read it
            raise CommandError(str(exc)) from None
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
        await conn.execute(callquery.CUSTOM_PLANS)
        async for row in conn.cursor(sql, *params, prefetch=1000):
            yield row


def _print_table(rows: list[Any], hits: dict[str, list[dict[str, Any]]] | None = None) -> None:
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
    if hits is None:
        print(table(headers, out, widths))
    else:
        # Each call, then where it was said: one line per hit under it.
        print(table(headers, [], widths))
        for r, cells in zip(rows, out, strict=True):
            print(table(headers, [cells], widths).split("\n", 1)[1])
            for h in hits.get(str(r["id"]), []):
                print("    " + hit_line(h))
    if not rows:
        print("(no calls)")


def mmss(ms: int) -> str:
    seconds = max(0, ms) // 1000
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def hit_line(h: dict[str, Any]) -> str:
    """``caller 01:23  …text [word] text…`` (fuzzy: ``~`` after the time): the hit's words in brackets,
    every piece escaped for the terminal."""
    text = "".join(f"[{safe_text(part)}]" if is_hit else safe_text(part) for part, is_hit in h["snippet"])
    return f"{h['speaker']:<6} {mmss(h['offset_ms'])}{'~' if h.get('fuzzy') else ' '} {text}"


# --- callrec transcript CALL_ID -----------------------------------------------------------------------

async def run_transcript(args: argparse.Namespace, settings: Settings) -> int:
    who = cli_principal()
    async with open_database(settings) as conn:
        try:
            async with conn.transaction(isolation="repeatable_read"):
                t = await load_transcript(conn, args.call_id)
                if t is not None:
                    # Reading a transcript is audited, at the CLI as in the API (one entry per read).
                    await audit.append(conn, actor=who.name, role=who.role, action="transcript_read",
                                       call_id=args.call_id,
                                       details={"segments": len(t["segments"]), "model": t["model"], "via": "cli"})
                    job = None
                else:
                    job = await conn.fetchrow("SELECT state, progress, last_error FROM speech_jobs "
                                              "WHERE call_id = $1::uuid", args.call_id)
                    known = await conn.fetchval("SELECT 1 FROM calls WHERE id = $1::uuid", args.call_id)
        except asyncpg.UndefinedTableError:
            raise CommandError("database: no transcripts yet; run `callrec migrate`", 1) from None
    if t is None:
        if not known:
            raise CommandError(f"no call {args.call_id}", 1)
        if job is None or job["state"] == "done":
            raise CommandError(f"call {args.call_id} has no transcript", 1)
        state = job["state"]
        if state == "running" and job["progress"] is not None:
            state += f" ({job['progress'] * 100:.0f} %)"
        raise CommandError(f"call {args.call_id} has no transcript yet: {state}", 1)
    if args.json:
        print(json.dumps(t, default=json_default, ensure_ascii=True))
        return 0
    talk = (f"talk {t['talk_ms'] / 1000:.1f} s, silence {t['silence_share'] * 100:.0f} %, "
            f"overtalk {t['overtalk_ms'] / 1000:.1f} s")
    if t["agent_talk_ratio"] is not None:
        talk += f", agent {t['agent_talk_ratio'] * 100:.0f} % of the talk"
    print(f"call {t['call_id']}: {t['duration_ms'] / 1000:.1f} s, language {t['language'] or '?'}, "
          f"model {safe_text(t['model'])}, {'stereo' if t['stereo'] else 'mono'}; {talk}")
    if t["redacted"]:
        print(f"({t['redacted']} secret(s) masked before storing)")
    for seg in t["segments"]:
        print(f"{mmss(seg['start_ms'])}  {seg['speaker']:<6}  {safe_text(seg['text'].strip())}")
    if not t["segments"]:
        print("(no speech)")
    return 0
