"""``callrec subject export | erase``: data-subject requests for a phone number."""

from __future__ import annotations

import argparse
import asyncio
import sys

from callrec.access import cli_principal
from callrec.cli.common import PROBLEMS, CommandError, command, dump, group, open_storage
from callrec.cli.database import open_database
from callrec.cli.evidence import add_out_options, signing_key, warn_export, write
from callrec.config.settings import Settings
from callrec.dataops.evidence import SUBJECT_STATUSES
from callrec.dataops.subjects import agent_calls, erase_subject, find_subject_calls, normalize_number
from callrec.store import audit


def add_commands(sub: object) -> None:
    subj = group(sub, "subject", "data-subject requests for a phone number")
    sexp = command(subj, "export", "every call of the number(s): metadata, consent evidence, audio, transcripts",
                   run_export)
    sexp.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_out_options(sexp)
    sexp.add_argument("--reference", help="the request's reference, kept in the audit trail")
    sexp.add_argument("--no-sign", action="store_true", help="do not sign the manifest even if a key is set")
    sera = command(subj, "erase", "erase audio and personal fields of every call of the number(s)", run_erase)
    sera.add_argument("numbers", nargs="+", metavar="NUMBER")
    sera.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sera.add_argument("--dry-run", action="store_true", help="list what would be erased; change nothing")
    sera.add_argument("--reference", help="the request's reference, kept in the audit trail")
    sera.add_argument("--json", action="store_true")


def numbers(raw: list[str]) -> list[str]:
    try:
        return sorted({normalize_number(n) for n in raw})
    except ValueError as exc:
        raise CommandError(str(exc)) from None


async def run_export(args: argparse.Namespace, settings: Settings) -> int:
    wanted = numbers(args.numbers)
    who = cli_principal()
    async with open_database(settings, current_schema=True) as conn:
        ids = [str(r["id"]) for r in await find_subject_calls(conn, wanted)]
        key = signing_key(settings) if settings.integrity.signing_key and not args.no_sign else None
        result = await write(conn, settings, ids, args, purpose="subject_export", key=key,
                             selection={"subject_numbers": len(wanted), "reference": args.reference},
                             statuses=SUBJECT_STATUSES, transcripts=True)
        async with conn.transaction():
            # The audit trail is append-only: it gets call ids and the reference, never the number.
            for call in ids:
                await audit.append(conn, actor=who.name, role=who.role, action="subject_export", call_id=call,
                                   details={"reference": args.reference, "manifest_sha256": result.manifest_sha256})
            await audit.append(conn, actor=who.name, role=who.role, action="subject_export",
                               details={"reference": args.reference, "calls": len(ids), "files": result.files,
                                        "transcripts": result.transcripts,
                                        "manifest_sha256": result.manifest_sha256})
    print(f"exported {len(ids)} call(s), {result.files} recording(s), {result.transcripts} transcript(s) "
          f"to {args.zip or args.out}"
          + (f"; manifest signed (key {result.fingerprint[:16]}...)" if result.fingerprint else
             "; manifest not signed"))
    warn_export(result)
    return 0


async def run_erase(args: argparse.Namespace, settings: Settings) -> int:
    wanted = numbers(args.numbers)
    async with open_database(settings, current_schema=True) as conn:
        rows = await find_subject_calls(conn, wanted)
        staff = await agent_calls(conn, wanted)
    if staff:
        print(f"warning: the number is also the agent extension of {staff} call(s); erasing it anonymizes the "
              "callers of every call it placed or took as a caller/called number", file=sys.stderr)
    held = [r for r in rows if r["legal_hold"]]
    open_ = [r for r in rows if r["finalized_at"] is None and not r["legal_hold"]]
    todo = [r for r in rows if r["anonymized_at"] is None and not r["legal_hold"] and r["finalized_at"] is not None]
    if not args.json or args.dry_run:
        out = sys.stderr if args.json else sys.stdout
        print(f"{len(rows)} call(s) found: {len(todo)} to erase, {len(held)} under legal hold (kept), "
              f"{len(open_)} still going on (kept), {len(rows) - len(todo) - len(held) - len(open_)} already erased",
              file=out)
        for r in held:
            print(f"  legal hold: {r['id']} ({r['legal_hold_reason'] or 'no reason given'})", file=out)
    if args.dry_run:
        if args.json:
            print(dump({"found": len(rows), "to_erase": [str(r["id"]) for r in todo],
                        "held": [str(r["id"]) for r in held], "open": [str(r["id"]) for r in open_]}))
        return 0
    if not todo and not held and not open_:
        return 0
    if todo and not args.yes:
        if not sys.stdin.isatty():
            raise CommandError("subject erase: pass --yes to confirm when not at a terminal")
        answer = await asyncio.to_thread(
            input, f"Erase audio and personal fields of {len(todo)} call(s)? This cannot be undone. "
                   "Type 'erase' to confirm: ")
        if answer.strip().lower() != "erase":
            print("nothing erased")
            return 1
    # erase_subject runs its own transactions on a pool; the rows above were only the preview.
    who = cli_principal()
    async with open_database(settings, pool=True) as pool:
        outcomes = await erase_subject(pool, wanted, open_storage(settings), actor=who,
                                       reference=args.reference)
    erased = [o for o in outcomes if o.result == "anonymized"]
    kept = [o for o in outcomes if o.result in ("held", "open")]
    if args.json:
        print(dump({"found": len(outcomes), "erased": [o.call_id for o in erased],
                    "held": [o.call_id for o in outcomes if o.result == "held"],
                    "open": [o.call_id for o in outcomes if o.result == "open"]}))
    else:
        print(f"erased {len(erased)} call(s); kept {len(kept)}")
        for o in kept:
            print(f"  kept: {o.call_id}: {'legal hold' if o.result == 'held' else 'still going on'}"
                  + (f" ({o.detail})" if o.detail else ""))
    return PROBLEMS if kept else 0
