"""CLI for data operations: retention, legal hold, data-subject requests, verify, keys, signed exports.

Exit codes (on top of cli.py's 0 / 1 / 2): ``3`` = ran fine, but found problems (verify: missing,
changed or orphan files; verify-manifest: the export does not verify; subject erase: some calls
were kept because of a legal hold or because they are still going on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import zipfile
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg

from callrec.config.settings import Settings

COMMANDS = ("retention", "hold", "subject", "verify", "keys", "export", "verify-manifest")
PROBLEMS = 3
EXPORT_MAX = 10000


def add_parsers(sub: Any) -> None:
    ret = sub.add_parser("retention", help="retention: delete old audio, anonymize old calls")
    ret_sub = ret.add_subparsers(dest="retention_command", required=True)
    run = ret_sub.add_parser("run", help="one retention pass now (the daemon also runs it periodically)")
    run.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    run.add_argument("--json", action="store_true")
    status = ret_sub.add_parser("status", help="what is due, what a legal hold keeps, the last runs")
    status.add_argument("--json", action="store_true")

    hold = sub.add_parser("hold", help="legal hold: no deletion of any kind while it is set")
    hold_sub = hold.add_subparsers(dest="hold_command", required=True)
    hset = hold_sub.add_parser("set", help="put calls under legal hold")
    hset.add_argument("call_ids", nargs="+", metavar="CALL_ID")
    hset.add_argument("--reason", required=True, help="why (case or request reference)")
    hrel = hold_sub.add_parser("release", help="release the legal hold")
    hrel.add_argument("call_ids", nargs="+", metavar="CALL_ID")
    hrel.add_argument("--reason", help="why it is released")
    hlist = hold_sub.add_parser("list", help="calls under legal hold")
    hlist.add_argument("--json", action="store_true")

    subj = sub.add_parser("subject", help="data-subject requests for a phone number")
    subj_sub = subj.add_subparsers(dest="subject_command", required=True)
    sexp = subj_sub.add_parser("export", help="every call of the number(s): metadata, consent evidence, audio")
    sexp.add_argument("numbers", nargs="+", metavar="NUMBER")
    _out_args(sexp)
    sexp.add_argument("--reference", help="the request's reference, kept in the audit trail")
    sexp.add_argument("--no-sign", action="store_true", help="do not sign the manifest even if a key is set")
    sera = subj_sub.add_parser("erase", help="erase audio and personal fields of every call of the number(s)")
    sera.add_argument("numbers", nargs="+", metavar="NUMBER")
    sera.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sera.add_argument("--dry-run", action="store_true", help="list what would be erased; change nothing")
    sera.add_argument("--reference", help="the request's reference, kept in the audit trail")
    sera.add_argument("--json", action="store_true")

    ver = sub.add_parser("verify", help="re-hash recordings; report missing, changed and orphan files")
    ver.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ver.add_argument("--since", help="only calls started at or after this ISO 8601 time")
    ver.add_argument("--no-orphans", action="store_true", help="do not look for files no call claims")
    ver.add_argument("--orphan-min-age", type=float, default=600.0, metavar="SECONDS",
                     help="files younger than this are not called orphans (their row may be on its way)")

    keys = sub.add_parser("keys", help="the Ed25519 key that signs export manifests")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kgen = keys_sub.add_parser("generate", help="make a new signing key (private PEM + .pub)")
    kgen.add_argument("--out", help="private key file (default: integrity.signing_key)")
    kgen.add_argument("--force", action="store_true", help="replace an existing key")
    kpub = keys_sub.add_parser("public", help="print the public key (PEM) and its fingerprint")
    kpub.add_argument("--out", help="write the PEM to this file instead of stdout")

    exp = sub.add_parser("export", help="export selected calls with their audio and a manifest")
    _out_args(exp)
    exp.add_argument("--manifest", action="store_true", help="sign the manifest with integrity.signing_key")
    exp.add_argument("--call", action="append", default=[], metavar="CALL_ID", help="a call id (repeatable)")
    for key in ("from", "to", "number", "direction", "agent", "consent", "recorded", "min_duration",
                "max_duration", "q"):
        exp.add_argument(f"--{key.replace('_', '-')}", dest=f"f_{key}", metavar=key.upper())
    exp.add_argument("--tag", action="append", default=[], dest="f_tag")
    exp.add_argument("--limit", type=int, default=1000, help="most calls (default 1000, at most 10000)")

    vm = sub.add_parser("verify-manifest", help="check a signed export offline (no config, no database)")
    vm.add_argument("path", help="the export folder or zip")
    vm.add_argument("--public-key", help="the signer's public key (PEM), obtained out of band")
    vm.add_argument("--json", action="store_true")


def _out_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="a new (or empty) folder")
    g.add_argument("--zip", help="a zip file")


def check_lines(settings: Settings) -> list[tuple[str, bool, str]]:
    """Lines for `callrec check`: retention settings and the signing key."""
    from callrec.dataops.evidence import KeyError_, fingerprint, load_private_key

    out = []
    r = settings.retention
    if r.active:
        job = f"daemon job every {r.interval:g}s" if r.enabled else "daemon job off (retention.enabled = false)"
        out.append(("retention", True, f"audio {_days(r.audio_days)}, metadata {_days(r.metadata_days)}, "
                                       f"{len(r.rules)} rule(s); {job}"))
    if settings.integrity.signing_key:
        try:
            key = load_private_key(settings.integrity.signing_key)
            out.append(("signing key", True, f"Ed25519, fingerprint {fingerprint(key.public_key())}"))
        except KeyError_ as exc:
            out.append(("signing key", False, str(exc)))
    return out


def run_without_config(args: argparse.Namespace) -> int | None:
    """Commands a third party runs without any callrec config (verify-manifest)."""
    if args.command == "verify-manifest":
        return _verify_manifest(args)
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "keys":
        return _keys(args, settings)
    return asyncio.run(_run_db(args, settings))


async def _run_db(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.store import connect_pool

    try:
        pool = await connect_pool(settings.database.dsn, 1, 2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"callrec: database.dsn: cannot connect to PostgreSQL: {exc}", file=sys.stderr)
        return 1
    try:
        from callrec.store.migrate import pending

        async with pool.acquire() as conn:
            missing = await pending(conn)
        if missing:
            print(f"callrec: database: schema not up to date ({', '.join(missing)} pending); run `callrec migrate`",
                  file=sys.stderr)
            return 1
        handler = {"retention": _retention, "hold": _hold, "subject": _subject, "verify": _verify,
                   "export": _export}[args.command]
        return await handler(args, settings, pool)
    finally:
        await pool.close()


def _dump(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=True, default=str, indent=2)


# -- retention ----------------------------------------------------------------------------------


async def _retention(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    from callrec.access import cli_principal
    from callrec.dataops.retention import count_due, run_retention

    r = settings.retention
    if args.retention_command == "status":
        counts = await count_due(pool, r)
        runs = [dict(x) for x in await pool.fetch("SELECT * FROM retention_runs ORDER BY id DESC LIMIT 5")]
        doc = {"config": {"audio_days": r.audio_days, "metadata_days": r.metadata_days, "enabled": r.enabled,
                          "interval": r.interval,
                          "rules": {x.rule: dict(zip(("audio_days", "metadata_days"), r.for_rule(x.rule), strict=True))
                                    for x in r.rules}},
               **counts, "last_runs": runs}
        if args.json:
            print(_dump(doc))
        else:
            print(f"default: audio {_days(r.audio_days)}, metadata {_days(r.metadata_days)}"
                  + ("" if r.enabled else " (daemon job disabled)"))
            for x in r.rules:
                a, m = r.for_rule(x.rule)
                print(f"rule {x.rule}: audio {_days(a)}, metadata {_days(m)}")
            print(f"due now: {counts['audio_due']} recording(s), {counts['metadata_due']} call(s) to anonymize; "
                  f"{counts['held']} kept by legal hold")
            for run_ in runs:
                print(f"run {run_['id']} {run_['started_at']:%Y-%m-%d %H:%M:%S} by {run_['actor']}"
                      f"{' (dry run)' if run_['dry_run'] else ''}: {run_['audio_deleted']} audio, "
                      f"{run_['anonymized']} anonymized, {run_['held_skipped']} held, {run_['errors']} error(s)")
        return 0
    if not r.active:
        print("retention: no retention days configured ([retention] audio_days / metadata_days); nothing to do")
    report = await run_retention(pool, r, settings.recordings.local_path, dry_run=args.dry_run,
                                 actor=cli_principal().name)
    if args.json:
        print(_dump(report.as_dict()))
    elif args.dry_run:
        print(f"dry run: would delete {report.audio_due} recording(s) and anonymize {report.metadata_due} call(s); "
              f"{report.held_skipped} call(s) kept by legal hold")
    else:
        print(f"deleted {report.audio_deleted} recording(s), anonymized {report.anonymized} call(s); "
              f"{report.held_skipped} call(s) kept by legal hold; {report.errors} error(s)")
        for sample in report.error_samples:
            print(f"  error: {sample}", file=sys.stderr)
    return 1 if report.errors else 0


def _days(n: int) -> str:
    return "kept forever" if n == 0 else f"{n} day(s)"


# -- legal hold ---------------------------------------------------------------------------------


async def _hold(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    from callrec.access import cli_principal
    from callrec.dataops.deletion import set_legal_hold

    if args.hold_command == "list":
        rows = await pool.fetch(
            "SELECT id, started_at, legal_hold_by, legal_hold_at, legal_hold_reason FROM calls WHERE legal_hold "
            "ORDER BY legal_hold_at")
        if args.json:
            print(_dump([dict(r) for r in rows]))
        else:
            from callrec.display import table

            print(table(["call id", "started (UTC)", "held by", "held at (UTC)", "reason"],
                        [[str(r["id"]), f"{r['started_at'].astimezone(UTC):%Y-%m-%d %H:%M}", r["legal_hold_by"] or "",
                          f"{r['legal_hold_at'].astimezone(UTC):%Y-%m-%d %H:%M}" if r["legal_hold_at"] else "",
                          r["legal_hold_reason"] or ""] for r in rows], [36, 16, 20, 16, 40]))
            if not rows:
                print("(no calls under legal hold)")
        return 0
    hold = args.hold_command == "set"
    who = cli_principal()
    failed = 0
    async with pool.acquire() as conn:
        for call_id in args.call_ids:
            try:
                out = await set_legal_hold(conn, call_id, hold, actor=who, reason=args.reason)
            except asyncpg.DataError:
                out = None
            if out is None:
                print(f"callrec: {call_id}: no such call", file=sys.stderr)
                failed += 1
            else:
                print(f"{call_id}: legal hold {'set' if hold else 'released'}")
                if hold and (out["audio_deleted_at"] or out["anonymized_at"]):
                    gone = "anonymized" if out["anonymized_at"] else "audio deleted"
                    print(f"  note: this call was already {gone} at "
                          f"{out['anonymized_at'] or out['audio_deleted_at']}; the hold keeps what is left")
    return 1 if failed else 0


# -- subject requests ---------------------------------------------------------------------------


def _numbers(raw: list[str]) -> list[str] | None:
    from callrec.dataops.subjects import normalize_number

    try:
        return sorted({normalize_number(n) for n in raw})
    except ValueError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return None


async def _subject(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    from callrec.access import cli_principal
    from callrec.dataops.subjects import agent_calls, erase_subject, find_subject_calls
    from callrec.store import audit

    numbers = _numbers(args.numbers)
    if numbers is None:
        return 2
    who = cli_principal()
    async with pool.acquire() as conn:
        rows = await find_subject_calls(conn, numbers)
    if args.subject_command == "export":
        ids = [str(r["id"]) for r in rows]
        key = None
        if settings.integrity.signing_key and not args.no_sign:
            key = _load_key(settings)
            if key is None:
                return 1
        result = await _write(pool, settings, ids, args, purpose="subject_export", key=key,
                              selection={"subject_numbers": len(numbers), "reference": args.reference})
        if result is None:
            return 1
        async with pool.acquire() as conn, conn.transaction():
            # The audit trail is append-only: it gets call ids and the reference, never the number.
            for call_id in ids:
                await audit.append(conn, actor=who.name, role=who.role, action="subject_export", call_id=call_id,
                                   details={"reference": args.reference, "manifest_sha256": result.manifest_sha256})
            await audit.append(conn, actor=who.name, role=who.role, action="subject_export",
                               details={"reference": args.reference, "calls": len(ids), "files": result.files,
                                        "manifest_sha256": result.manifest_sha256})
        print(f"exported {len(ids)} call(s), {result.files} recording(s) to {args.zip or args.out}"
              + (f"; manifest signed (key {result.fingerprint[:16]}...)" if result.fingerprint else
                 "; manifest not signed"))
        _warn_export(result)
        return 0
    # erase
    async with pool.acquire() as conn:
        staff = await agent_calls(conn, numbers)
    if staff:
        print(f"warning: the number is also the agent extension of {staff} call(s); erasing it anonymizes the "
              "callers of every call it placed or took as a caller/called number", file=sys.stderr)
    held = [r for r in rows if r["legal_hold"]]
    open_ = [r for r in rows if r["finalized_at"] is None and not r["legal_hold"]]
    todo = [r for r in rows if r["anonymized_at"] is None and not r["legal_hold"] and r["finalized_at"] is not None]
    if not args.json or args.dry_run:
        print(f"{len(rows)} call(s) found: {len(todo)} to erase, {len(held)} under legal hold (kept), "
              f"{len(open_)} still going on (kept), {len(rows) - len(todo) - len(held) - len(open_)} already erased",
              file=sys.stderr if args.json else sys.stdout)
        for r in held:
            print(f"  legal hold: {r['id']} ({r['legal_hold_reason'] or 'no reason given'})",
                  file=sys.stderr if args.json else sys.stdout)
    if args.dry_run:
        if args.json:
            print(_dump({"found": len(rows), "to_erase": [str(r["id"]) for r in todo],
                         "held": [str(r["id"]) for r in held], "open": [str(r["id"]) for r in open_]}))
        return 0
    if not todo and not held and not open_:
        return 0
    if todo and not args.yes:
        if not sys.stdin.isatty():
            print("callrec: subject erase: pass --yes to confirm when not at a terminal", file=sys.stderr)
            return 2
        answer = await asyncio.to_thread(
            input, f"Erase audio and personal fields of {len(todo)} call(s)? This cannot be undone. "
                   "Type 'erase' to confirm: ")
        if answer.strip().lower() != "erase":
            print("nothing erased")
            return 1
    outcomes = await erase_subject(pool, numbers, settings.recordings.local_path, actor=who,
                                   reference=args.reference)
    erased = [o for o in outcomes if o.result == "anonymized"]
    kept = [o for o in outcomes if o.result in ("held", "open")]
    if args.json:
        print(_dump({"found": len(outcomes), "erased": [o.call_id for o in erased],
                     "held": [o.call_id for o in outcomes if o.result == "held"],
                     "open": [o.call_id for o in outcomes if o.result == "open"]}))
    else:
        print(f"erased {len(erased)} call(s); kept {len(kept)}")
        for o in kept:
            print(f"  kept: {o.call_id}: {'legal hold' if o.result == 'held' else 'still going on'}"
                  + (f" ({o.detail})" if o.detail else ""))
    return PROBLEMS if kept else 0


# -- verify -------------------------------------------------------------------------------------


async def _verify(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    from callrec.access import cli_principal
    from callrec.dataops.integrity import verify
    from callrec.store import audit
    from callrec.store.callquery import FilterError, parse_time

    try:
        since = parse_time("--since", args.since) if args.since else None
    except FilterError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    report = await verify(pool, settings.recordings.local_path, since=since, orphans=not args.no_orphans,
                          orphan_min_age=args.orphan_min_age)
    who = cli_principal()
    await audit.append(pool, actor=who.name, role=who.role, action="verify",
                       details={"checked": report.checked, "ok": report.ok, "missing": len(report.missing),
                                "changed": len(report.changed), "orphans": len(report.orphans),
                                "unreadable": len(report.unreadable)})
    if args.json:
        print(_dump(report.as_dict()))
    else:
        for item in report.missing:
            print(f"MISSING   {item['id']}  {item['path']}")
        for item in report.changed:
            print(f"CHANGED   {item['id']}  {item['path']}  sha256 {item['actual_sha256']} "
                  f"(expected {item['expected_sha256']})")
        for item in report.unreadable:
            print(f"UNREADABLE {item['id']}  {item['path']}: {item['error']}")
        for item in report.orphans:
            print(f"ORPHAN    {item['path']}: {item['why']}")
        print(f"{report.checked} recording(s) checked: {report.ok} ok, {len(report.missing)} missing, "
              f"{len(report.changed)} changed, {len(report.unreadable)} unreadable; {len(report.orphans)} orphan "
              f"file(s) among {report.files_seen}" + (f" ({report.too_young} too new to judge)"
                                                     if report.too_young else ""))
    return PROBLEMS if report.problems else 0


# -- keys, exports ------------------------------------------------------------------------------


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.dataops.evidence import KeyError_, fingerprint, generate_key, public_pem

    if args.keys_command == "generate":
        target = args.out or settings.integrity.signing_key
        if not target:
            print("callrec: keys generate: pass --out FILE or set integrity.signing_key", file=sys.stderr)
            return 2
        try:
            pub, fp = generate_key(Path(target), force=args.force)
        except (KeyError_, OSError) as exc:
            print(f"callrec: keys generate: {exc}", file=sys.stderr)
            return 1
        print(f"private key: {target} (mode 600; keep it secret, back it up)")
        print(f"public key:  {pub}")
        print(f"fingerprint: {fp}")
        if args.out and args.out != settings.integrity.signing_key:
            print(f'to sign with it, set [integrity] signing_key = "{target}"')
        return 0
    key = _load_key(settings)
    if key is None:
        return 1
    pem = public_pem(key.public_key())
    if args.out:
        Path(args.out).write_bytes(pem)
    else:
        sys.stdout.write(pem.decode("ascii"))
    print(f"fingerprint (sha256 of the raw key): {fingerprint(key.public_key())}", file=sys.stderr)
    return 0


def _load_key(settings: Settings) -> Any:
    from callrec.dataops.evidence import KeyError_, load_private_key

    try:
        return load_private_key(settings.integrity.signing_key)
    except KeyError_ as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return None


async def _write(pool: asyncpg.Pool, settings: Settings, ids: list[str], args: argparse.Namespace, *,
                 purpose: str, key: Any, selection: dict[str, Any]) -> Any:
    from callrec.access import cli_principal
    from callrec.dataops.evidence import call_documents, export_to, write_export

    docs = await call_documents(pool, ids)
    target = Path(args.zip or args.out)
    who = cli_principal().name
    try:
        return await asyncio.to_thread(
            export_to, target, bool(args.zip),
            lambda folder: write_export(folder, docs, settings.recordings.local_path, purpose=purpose,
                                        created_by=who, selection=selection, key=key,
                                        prompts=(settings.notice.prompts_dir, settings.notice.local_prompts_path)))
    except (OSError, FileExistsError) as exc:
        print(f"callrec: export: {exc}", file=sys.stderr)
        return None


def _warn_export(result: Any) -> None:
    for call_id in result.mismatched:
        print(f"warning: {call_id}: the recording differs from the sha256 stored when the call ended "
              "(exported as found; the manifest says so)", file=sys.stderr)
    for call_id in result.missing:
        print(f"warning: {call_id}: the recording file is missing", file=sys.stderr)


async def _export(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    from callrec.access import cli_principal
    from callrec.store import audit
    from callrec.store.callquery import FilterError, parse_filter, search_sql

    who = cli_principal()
    values: dict[str, list[str]] = {}
    for key in ("from", "to", "number", "direction", "agent", "consent", "recorded", "min_duration",
                "max_duration", "q"):
        v = getattr(args, f"f_{key}")
        if v is not None:
            values[key] = [v]
    if args.f_tag:
        values["tag"] = list(args.f_tag)
    if not 1 <= args.limit <= EXPORT_MAX:
        # The manifest is built in memory: a few KB per call.
        print(f"callrec: export: --limit: expected 1-{EXPORT_MAX}", file=sys.stderr)
        return 2
    try:
        f = parse_filter(lambda k: values.get(k, []), max_limit=EXPORT_MAX, default_limit=args.limit)
    except FilterError as exc:
        print(f"callrec: export: {exc}", file=sys.stderr)
        return 2
    if args.call:
        try:
            rows = await pool.fetch("SELECT id FROM calls WHERE id = ANY($1::uuid[]) ORDER BY started_at, id",
                                    args.call)
        except asyncpg.DataError:
            print("callrec: export: --call: expected call ids (uuid)", file=sys.stderr)
            return 2
        found = {str(r["id"]) for r in rows}
        for c in args.call:
            if c not in found:
                print(f"callrec: export: {c}: no such call", file=sys.stderr)
                return 1
        ids = [str(r["id"]) for r in rows]
    else:
        if not values:
            print("callrec: export: select calls with --call or filters (--from, --to, --number, ...)",
                  file=sys.stderr)
            return 2
        sql, sql_args = search_sql(f, who, limit=args.limit)
        ids = [str(r["id"]) for r in await pool.fetch(sql, *sql_args)]
    key = None
    if args.manifest:
        key = _load_key(settings)
        if key is None:
            return 1
    selection = {"calls": args.call} if args.call else {"filter": f.describe(), "limit": args.limit}
    result = await _write(pool, settings, ids, args, purpose="evidence_export", key=key, selection=selection)
    if result is None:
        return 1
    async with pool.acquire() as conn, conn.transaction():
        for call_id in ids:
            await audit.append(conn, actor=who.name, role=who.role, action="evidence_export", call_id=call_id,
                               details={"manifest_sha256": result.manifest_sha256, "signed": key is not None})
    print(f"exported {len(ids)} call(s), {result.files} recording(s) to {args.zip or args.out}"
          + (f"; manifest signed (key {result.fingerprint})" if result.fingerprint else "; manifest not signed"))
    _warn_export(result)
    return 0


def _verify_manifest(args: argparse.Namespace) -> int:
    from callrec.dataops.evidence import KeyError_, load_public_key, verify_manifest

    path = Path(args.path)
    if not path.exists():
        print(f"callrec: verify-manifest: {path}: no such file or folder", file=sys.stderr)
        return 2
    key = None
    if args.public_key:
        try:
            key = load_public_key(Path(args.public_key).read_bytes())
        except (OSError, KeyError_) as exc:
            print(f"callrec: verify-manifest: --public-key: {exc}", file=sys.stderr)
            return 2
    try:
        check = verify_manifest(path, key)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"callrec: verify-manifest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(_dump(check.as_dict()))
    else:
        print(f"signature: {check.signature}" + (f" (key {check.fingerprint})" if check.fingerprint else ""))
        print(f"{check.files_ok} file(s) match the manifest; {check.calls} call(s) described")
        for p in check.problems:
            print(f"PROBLEM: {p}")
        print("VERIFIED" if check.ok else "NOT VERIFIED")
    return 0 if check.ok else PROBLEMS
