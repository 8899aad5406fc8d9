"""``callrec nodes list|retire``: the nodes sharing this call log, and closing out one gone for good."""

from __future__ import annotations

import argparse
import json
from datetime import UTC

from callrec.access import cli_principal
from callrec.cli.common import CommandError, command, group
from callrec.cli.database import open_database
from callrec.config.node import NODE_NAME_RE
from callrec.config.settings import Settings
from callrec.display import table
from callrec.store import nodes as store

# Retire refuses a node seen more recently than this, unless --force.
DEFAULT_IDLE_MINUTES = 10.0


def _node(value: str) -> str:
    if not NODE_NAME_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected a node name (letters, digits, '_', '.', '-'), got {value!r}")
    return value


def add_commands(sub: object) -> None:
    g = group(sub, "nodes", "the nodes (callrec serve processes) sharing this call log")
    lst = command(g, "list", "each node: last seen, open calls, version", run_list)
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    retire = command(g, "retire", "close out a node gone for good: its open calls finalized as lost (audited)",
                     run_retire)
    retire.add_argument("node", type=_node)
    retire.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES, metavar="N",
                        help=f"refuse a node seen within the last N minutes (default {DEFAULT_IDLE_MINUTES:g})")
    retire.add_argument("--force", action="store_true", help="retire it even if it was seen recently")
    retire.add_argument("--json", action="store_true", help="the outcome as one JSON object")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


async def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_database(settings) as conn:
        rows = await store.list_nodes(conn)
    if args.json:
        for r in rows:
            print(json.dumps(r.as_json(), ensure_ascii=True))
        return 0
    out = [[r.name, r.kind, r.last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.last_seen else "",
            _ago(r.seen_s_ago), str(r.open_calls), r.version,
            "retired " + r.retired_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if r.retired_at else ""]
           for r in rows]
    print(table(["node", "kind", "last seen (UTC)", "", "open calls", "version", ""], out,
                [32, 4, 19, 12, 10, 12, 24]))
    if not rows:
        print("(no nodes yet: each `callrec serve` adds itself at start)")
    return 0


async def run_retire(args: argparse.Namespace, settings: Settings) -> int:
    if args.idle_minutes < 0:
        raise CommandError(f"--idle-minutes: expected 0 or more, got {args.idle_minutes:g}")
    actor = cli_principal().name
    async with open_database(settings) as conn:
        try:
            ids = await store.retire(conn, args.node, actor=actor, min_idle_s=args.idle_minutes * 60,
                                     force=args.force)
        except store.RetireRefused as exc:
            raise CommandError(str(exc), 1) from None
    if args.json:
        print(json.dumps({"node": args.node, "calls_closed": len(ids), "call_ids": ids}))
    else:
        print(f"node {args.node} retired: {len(ids)} open call(s) closed as lost")
    return 0
