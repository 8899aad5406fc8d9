"""``callrec users | tokens | audit``: console/API users, API tokens, the audit trail.

Passwords are read from a prompt or stdin, never from argv; a token's secret is shown once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime, timedelta

from callrec.access import ROLES, cli_principal
from callrec.cli.common import CommandError, call_id, command, group, json_default
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.display import safe_text, table
from callrec.store import audit, callquery, users
from callrec.store.callquery import FilterError


def add_commands(sub: object) -> None:
    u = group(sub, "users", "console/API users")
    add = command(u, "add", "add a user (password from the prompt or stdin)", run_users)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--extension", help="the agent's extension (required for the agent role)")
    add.add_argument("--no-password", action="store_true", help="no console log-in (tokens only)")
    command(u, "list", "list users", run_users)
    dis = command(u, "disable", "disable a user (ends its sessions and tokens)", run_users)
    dis.add_argument("name")

    t = group(sub, "tokens", "API tokens")
    create = command(t, "create", "create a token; its secret is printed once", run_tokens)
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, help="the token's role (default: the user's)")
    create.add_argument("--user", help="the user the token acts for (required for agents)")
    create.add_argument("--expires-days", type=float, help="valid for this many days (default: until revoked)")
    command(t, "list", "list tokens (never their secrets)", run_tokens)
    rev = command(t, "revoke", "revoke a token", run_tokens)
    rev.add_argument("id", type=int)

    a = command(sub, "audit", "search the audit trail", run_audit)
    a.add_argument("--call-id", type=call_id)
    a.add_argument("--actor")
    a.add_argument("--action")
    a.add_argument("--from", dest="since", metavar="TIME")
    a.add_argument("--to", dest="until", metavar="TIME")
    a.add_argument("-n", "--limit", type=int, default=50)
    a.add_argument("--format", choices=("table", "json"), default="table")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise users.UserError("password: the two entries differ")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


async def run_users(args: argparse.Namespace, settings: Settings) -> int:
    actor = cli_principal().name
    async with open_database(settings) as conn:
        try:
            if args.users_command == "add":
                password = None if args.no_password else _read_password()
                await users.add_user(conn, args.name, args.role, password, args.extension, actor=actor)
                print(f"user {args.name} added ({args.role})")
            elif args.users_command == "disable":
                await users.disable_user(conn, args.name, actor=actor)
                print(f"user {args.name} disabled")
            else:
                rows = await users.list_users(conn)
                print(table(["name", "role", "extension", "login", "disabled", "created (UTC)"], [
                    [r["name"], r["role"], r["extension"] or "", "yes" if r["has_password"] else "no",
                     "yes" if r["disabled"] else "", r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M")]
                    for r in rows], [24, 10, 10, 5, 8, 16]))
        except users.UserError as exc:
            raise CommandError(str(exc)) from None
    return 0


def _when(v: datetime | None) -> str:
    return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if v else ""


async def run_tokens(args: argparse.Namespace, settings: Settings) -> int:
    actor = cli_principal().name
    async with open_database(settings) as conn:
        try:
            if args.tokens_command == "create":
                expires = None
                if args.expires_days is not None:
                    if not 0 < args.expires_days <= 3650:
                        raise users.UserError("expires-days: expected 0-3650")
                    expires = datetime.now(UTC) + timedelta(days=args.expires_days)
                token_id, secret = await users.create_token(conn, args.name, args.role, args.user, expires,
                                                            actor=actor)
                print(f"token {token_id} ({args.name}) created; its secret is shown only now:", file=sys.stderr)
                print(secret)
            elif args.tokens_command == "revoke":
                await users.revoke_token(conn, args.id, actor=actor)
                print(f"token {args.id} revoked")
            else:
                rows = await users.list_tokens(conn)
                print(table(["id", "name", "role", "user", "created", "last used", "expires", "revoked"], [
                    [str(r["id"]), r["name"], r["role"], r["user"] or "", _when(r["created_at"]),
                     _when(r["last_used_at"]), _when(r["expires_at"]), _when(r["revoked_at"])] for r in rows],
                    [5, 20, 10, 16, 16, 16, 16, 16]))
        except users.UserError as exc:
            raise CommandError(str(exc)) from None
    return 0


async def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = callquery.parse_time("from", args.since) if args.since else None
        until = callquery.parse_time("to", args.until) if args.until else None
    except FilterError as exc:
        raise CommandError(str(exc)) from None
    async with open_database(settings) as conn:
        rows = await audit.search(conn, cli_principal(), call_id=args.call_id, actor=args.actor, action=args.action,
                                  since=since, until=until, limit=max(1, min(args.limit, 10000)))
    if args.format == "json":
        for r in rows:
            print(json.dumps(r, default=json_default, ensure_ascii=True))
        return 0
    print(table(["id", "at (UTC)", "actor", "role", "action", "call id", "details"], [
        [str(r["id"]), r["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), safe_text(r["actor"]),
         r["role"] or "", r["action"], r["call_id"] or "", json.dumps(r["details"], ensure_ascii=True)]
        for r in rows], [7, 19, 28, 10, 12, 36, 40]))
    return 0
