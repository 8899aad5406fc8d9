"""CLI for ops: ``callrec calls`` (filters and formats shared with the API), ``users``, ``tokens``,
``audit``.  Passwords are read from a prompt or stdin, never from argv; secrets are shown once."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from callrec.access import ROLES, Principal
from callrec.config.settings import Settings
from callrec.display import safe_text, table
from callrec.store import audit, callquery, users
from callrec.store.callquery import FilterError


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:?"


def add_calls_parser(sub: argparse._SubParsersAction) -> None:
    calls = sub.add_parser("calls", help="search the call log (the API's filters)")
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("users", help="console/API users").add_subparsers(dest="users_command", required=True)
    add = u.add_parser("add", help="add a user (password from the prompt or stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--extension", help="the agent's extension (required for the agent role)")
    add.add_argument("--no-password", action="store_true", help="no console log-in (tokens only)")
    u.add_parser("list", help="list users")
    dis = u.add_parser("disable", help="disable a user (ends its sessions and tokens)")
    dis.add_argument("name")
    t = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    create = t.add_parser("create", help="create a token; its secret is printed once")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, help="the token's role (default: the user's)")
    create.add_argument("--user", help="the user the token acts for (required for agents)")
    create.add_argument("--expires-days", type=float, help="valid for this many days (default: until revoked)")
    t.add_parser("list", help="list tokens (never their secrets)")
    rev = t.add_parser("revoke", help="revoke a token")
    rev.add_argument("id", type=int)
    a = sub.add_parser("audit", help="search the audit trail")
    a.add_argument("--call-id")
    a.add_argument("--actor")
    a.add_argument("--action")
    a.add_argument("--from", dest="since", metavar="TIME")
    a.add_argument("--to", dest="until", metavar="TIME")
    a.add_argument("-n", "--limit", type=int, default=50)
    a.add_argument("--format", choices=("table", "json"), default="table")


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


async def _connect(settings: Settings) -> asyncpg.Connection | None:
    try:
        return await asyncpg.connect(settings.database.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"callrec: database.dsn: cannot connect to PostgreSQL: {exc}", file=sys.stderr)
        return None


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def run_calls(settings: Settings, args: argparse.Namespace) -> int:
    from callrec.store.callquery import csv_cell

    try:
        f = _filter(args)
    except FilterError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    if args.all and (args.format == "table" or args.json):
        print("callrec: --all needs --format json or csv", file=sys.stderr)
        return 2
    conn = await _connect(settings)
    if conn is None:
        return 1
    # The operator at the CLI holds the database credentials: the admin view.
    who = Principal(name=cli_actor(), role="admin", via="cli")
    out = sys.stdout
    try:
        if args.format != "table" and not args.json:
            await audit.append(conn, actor=who.name, role=who.role, action="export",
                               details={"format": args.format, "filter": f.describe(), "via": "cli",
                                        "all": args.all})
        if args.all:
            sql, params = callquery.search_sql(f, who, limit=None)
            rows_iter = _stream(conn, sql, params)
            cursor = None
        else:
            rows, cursor = await callquery.search(conn, f, who, full=args.json)
            rows_iter = _aiter(rows)
        if args.json:
            async for row in rows_iter:
                # ensure_ascii keeps every caller-supplied character escaped on the terminal.
                print(json.dumps(dict(row), default=_json_default, ensure_ascii=True), file=out)
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
            rows = [r async for r in rows_iter]
            _print_calls_table(rows)
    except asyncpg.UndefinedTableError:
        print("callrec: database: no call log yet; run `callrec migrate`", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    if cursor:
        print(f"more: --cursor {cursor}", file=sys.stderr)
    return 0


async def _aiter(rows: list[Any]) -> Any:
    for row in rows:
        yield row


async def _stream(conn: asyncpg.Connection, sql: str, params: list[Any]) -> Any:
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for row in conn.cursor(sql, *params, prefetch=1000):
            yield row


def _print_calls_table(rows: list[Any]) -> None:
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


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise users.UserError("password: the two entries differ")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


async def run_users(settings: Settings, args: argparse.Namespace) -> int:
    conn = await _connect(settings)
    if conn is None:
        return 1
    try:
        if args.users_command == "add":
            password = None if args.no_password else _read_password()
            await users.add_user(conn, args.name, args.role, password, args.extension, actor=cli_actor())
            print(f"user {args.name} added ({args.role})")
        elif args.users_command == "disable":
            await users.disable_user(conn, args.name, actor=cli_actor())
            print(f"user {args.name} disabled")
        else:
            rows = await users.list_users(conn)
            print(table(["name", "role", "extension", "login", "disabled", "created (UTC)"], [
                [r["name"], r["role"], r["extension"] or "", "yes" if r["has_password"] else "no",
                 "yes" if r["disabled"] else "", r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M")]
                for r in rows], [24, 10, 10, 5, 8, 16]))
    except users.UserError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    return 0


async def run_tokens(settings: Settings, args: argparse.Namespace) -> int:
    conn = await _connect(settings)
    if conn is None:
        return 1
    try:
        if args.tokens_command == "create":
            expires = None
            if args.expires_days is not None:
                if not 0 < args.expires_days <= 3650:
                    raise users.UserError("expires-days: expected 0-3650")
                expires = datetime.now(UTC) + timedelta(days=args.expires_days)
            token_id, secret = await users.create_token(conn, args.name, args.role, args.user, expires,
                                                        actor=cli_actor())
            print(f"token {token_id} ({args.name}) created; its secret is shown only now:", file=sys.stderr)
            print(secret)
        elif args.tokens_command == "revoke":
            await users.revoke_token(conn, args.id, actor=cli_actor())
            print(f"token {args.id} revoked")
        else:
            def when(v: datetime | None) -> str:
                return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if v else ""

            rows = await users.list_tokens(conn)
            print(table(["id", "name", "role", "user", "created", "last used", "expires", "revoked"], [
                [str(r["id"]), r["name"], r["role"], r["user"] or "", when(r["created_at"]), when(r["last_used_at"]),
                 when(r["expires_at"]), when(r["revoked_at"])] for r in rows], [5, 20, 10, 16, 16, 16, 16, 16]))
    except users.UserError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    return 0


async def run_audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = callquery.parse_time("from", args.since) if args.since else None
        until = callquery.parse_time("to", args.until) if args.until else None
        if args.call_id is not None:
            import uuid

            uuid.UUID(args.call_id)
    except FilterError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"callrec: call-id: expected a call id (UUID), got {args.call_id!r}", file=sys.stderr)
        return 2
    conn = await _connect(settings)
    if conn is None:
        return 1
    try:
        rows = await audit.search(conn, call_id=args.call_id, actor=args.actor, action=args.action, since=since,
                                  until=until, limit=max(1, min(args.limit, 10000)))
    finally:
        await conn.close()
    if args.format == "json":
        for r in rows:
            print(json.dumps(r, default=_json_default, ensure_ascii=True))
        return 0
    print(table(["id", "at (UTC)", "actor", "role", "action", "call id", "details"], [
        [str(r["id"]), r["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), safe_text(r["actor"]),
         r["role"] or "", r["action"], r["call_id"] or "", json.dumps(r["details"], ensure_ascii=True)]
        for r in rows], [7, 19, 28, 10, 12, 36, 40]))
    return 0
