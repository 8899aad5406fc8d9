"""``callrec verify | keys | export | verify-manifest``: integrity of the recordings and signed
evidence exports (also used by ``subject export``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callrec.access import cli_principal
from callrec.cli.common import PROBLEMS, CommandError, call_id, command, dump, group
from callrec.cli.database import open_database
from callrec.config.settings import Settings
from callrec.dataops.evidence import (
    EVIDENCE_STATUSES,
    ExportResult,
    KeyError_,
    TooLarge,
    call_documents,
    check_size,
    export_to,
    fingerprint,
    generate_key,
    load_private_key,
    load_public_key,
    public_pem,
    verify_manifest,
    write_export,
)
from callrec.dataops.integrity import verify
from callrec.dataops.transcript_export import attach_transcripts
from callrec.store import audit
from callrec.store.callquery import FilterError, parse_filter, parse_time, search_sql

EXPORT_MAX = 10000
FILTERS = ("from", "to", "number", "direction", "agent", "consent", "recorded", "min_duration", "max_duration", "q")


def add_commands(sub: object) -> None:
    ver = command(sub, "verify", "re-hash recordings; report missing, changed and orphan files", run_verify)
    ver.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ver.add_argument("--since", help="only calls started at or after this ISO 8601 time")
    ver.add_argument("--no-orphans", action="store_true", help="do not look for files no call claims")
    ver.add_argument("--orphan-min-age", type=float, default=600.0, metavar="SECONDS",
                     help="files younger than this are not called orphans (their row may be on its way)")

    keys = group(sub, "keys", "the Ed25519 key that signs export manifests")
    kgen = command(keys, "generate", "make a new signing key (private PEM + .pub)", run_keys_generate)
    kgen.add_argument("--out", help="private key file (default: integrity.signing_key)")
    kgen.add_argument("--force", action="store_true", help="replace an existing key")
    kpub = command(keys, "public", "print the public key (PEM) and its fingerprint", run_keys_public)
    kpub.add_argument("--out", help="write the PEM to this file instead of stdout")

    exp = command(sub, "export", "export selected calls with their audio and a manifest", run_export)
    add_out_options(exp)
    exp.add_argument("--manifest", action="store_true", help="sign the manifest with integrity.signing_key")
    exp.add_argument("--transcripts", action="store_true",
                     help="include each call's transcript (transcripts/<call id>.json, hashed in the manifest)")
    exp.add_argument("--call", action="append", default=[], metavar="CALL_ID", type=call_id,
                     help="a call id (repeatable)")
    for name in FILTERS:
        exp.add_argument(f"--{name.replace('_', '-')}", dest=f"f_{name}", metavar=name.upper())
    exp.add_argument("--tag", action="append", default=[], dest="f_tag")
    exp.add_argument("--limit", type=int, default=1000, help="most calls (default 1000, at most 10000)")

    vm = command(sub, "verify-manifest", "check a signed export offline (no config, no database)",
                 run_verify_manifest, needs_config=False)
    vm.add_argument("path", help="the export folder or zip")
    vm.add_argument("--public-key", help="the signer's public key (PEM), obtained out of band")
    vm.add_argument("--json", action="store_true")


def add_out_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="a new (or empty) folder")
    where.add_argument("--zip", help="a zip file")


def check_lines(settings: Settings) -> list[tuple[str, bool, str]]:
    """The ``check`` line for the signing key: the key, or ``off``."""
    if not settings.integrity.signing_key:
        return [("signing key", True, "off (integrity.signing_key not set: evidence exports cannot be signed)")]
    try:
        key = load_private_key(settings.integrity.signing_key)
    except KeyError_ as exc:
        return [("signing key", False, str(exc))]
    return [("signing key", True, f"Ed25519, fingerprint {fingerprint(key.public_key())}")]


# -- verify -------------------------------------------------------------------------------------


async def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = parse_time("--since", args.since) if args.since else None
    except FilterError as exc:
        raise CommandError(str(exc)) from None
    who = cli_principal()
    async with open_database(settings, current_schema=True) as conn:
        report = await verify(conn, settings.recordings.local_path, since=since, orphans=not args.no_orphans,
                              orphan_min_age=args.orphan_min_age)
        await audit.append(conn, actor=who.name, role=who.role, action="verify",
                           details={"checked": report.checked, "ok": report.ok, "missing": len(report.missing),
                                    "changed": len(report.changed), "orphans": len(report.orphans),
                                    "unreadable": len(report.unreadable), "symlinked": len(report.symlinked),
                                    "transcripts_checked": report.transcripts_checked,
                                    "transcripts": len(report.transcripts)})
    if args.json:
        print(dump(report.as_dict()))
        return PROBLEMS if report.problems else 0
    for item in report.missing:
        print(f"MISSING   {item['id']}  {item['path']}")
    for item in report.changed:
        print(f"CHANGED   {item['id']}  {item['path']}  sha256 {item['actual_sha256']} "
              f"(expected {item['expected_sha256']})")
    for item in report.unreadable:
        print(f"UNREADABLE {item['id']}  {item['path']}: {item['error']}")
    for item in report.symlinked:
        print(f"SYMLINK   {item['id']}  {item['path']}: a symbolic link, refused for reading")
    for item in report.orphans:
        print(f"ORPHAN    {item['path']}: {item['why']}")
    for item in report.transcripts:
        print(f"TRANSCRIPT {item['id']}: {item['why']} (made from sha256 {item['transcript_sha256']}, "
              f"recording {item['recording_sha256']})")
    print(f"{report.checked} recording(s) checked: {report.ok} ok, {len(report.missing)} missing, "
          f"{len(report.changed)} changed, {len(report.unreadable)} unreadable, {len(report.symlinked)} symlinked; "
          f"{len(report.orphans)} orphan "
          f"file(s) among {report.files_seen}" + (f" ({report.too_young} too new to judge)"
                                                 if report.too_young else "")
          + f"; {report.transcripts_checked} transcript(s) checked, {len(report.transcripts)} not matching")
    return PROBLEMS if report.problems else 0


# -- keys ---------------------------------------------------------------------------------------


def run_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    target = args.out or settings.integrity.signing_key
    if not target:
        raise CommandError("keys generate: pass --out FILE or set integrity.signing_key")
    try:
        pub, fp = generate_key(Path(target), force=args.force)
    except (KeyError_, OSError) as exc:
        raise CommandError(f"keys generate: {exc}", 1) from None
    print(f"private key: {target} (mode 600; keep it secret, back it up)")
    print(f"public key:  {pub}")
    print(f"fingerprint: {fp}")
    if args.out and args.out != settings.integrity.signing_key:
        print(f'to sign with it, set [integrity] signing_key = "{target}"')
    return 0


def run_keys_public(args: argparse.Namespace, settings: Settings) -> int:
    key = signing_key(settings)
    pem = public_pem(key.public_key())
    if args.out:
        try:
            Path(args.out).write_bytes(pem)
        except OSError as exc:
            raise CommandError(f"keys public: --out {args.out}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(pem.decode("ascii"))
    print(f"fingerprint (sha256 of the raw key): {fingerprint(key.public_key())}", file=sys.stderr)
    return 0


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The private key of ``integrity.signing_key``; exit 1 with one line when it cannot be read."""
    try:
        return load_private_key(settings.integrity.signing_key)
    except KeyError_ as exc:
        raise CommandError(str(exc), 1) from None


# -- exports ------------------------------------------------------------------------------------


async def write(conn: asyncpg.Connection, settings: Settings, ids: list[str], args: argparse.Namespace, *,
                purpose: str, key: Ed25519PrivateKey | None, selection: dict[str, Any],
                statuses: frozenset[str] = EVIDENCE_STATUSES, max_bytes: int | None = None,
                transcripts: bool = False) -> ExportResult:
    """Write the calls, their audio (recordings whose status is in ``statuses``; and, asked for, their
    transcripts) and the manifest to ``--out`` or ``--zip`` (written straight into the zip);
    ``max_bytes``: refused (exit 1) before any audio is read when the recordings add up to more."""
    docs = await call_documents(conn, ids)
    if transcripts:
        await attach_transcripts(conn, docs)
    target = Path(args.zip or args.out)
    who = cli_principal().name
    local = settings.recordings.local_path
    try:
        await asyncio.to_thread(check_size, docs, local, max_bytes, statuses)
        return await asyncio.to_thread(
            export_to, target, bool(args.zip),
            lambda out: write_export(out, docs, local, purpose=purpose, created_by=who, selection=selection,
                                     key=key, statuses=statuses, max_bytes=max_bytes,
                                     prompts=(settings.notice.prompts_dir, settings.notice.local_prompts_path)))
    except TooLarge as exc:
        raise CommandError(f"export: {exc}", 1) from None
    except OSError as exc:  # FileExistsError included: an earlier export is never overwritten
        raise CommandError(f"export: {exc}", 1) from None


def warn_export(result: ExportResult) -> None:
    for call in result.mismatched:
        print(f"warning: {call}: the recording differs from the sha256 stored when the call ended "
              "(exported as found; the manifest says so)", file=sys.stderr)
    for call in result.missing:
        print(f"warning: {call}: the recording file is missing", file=sys.stderr)


async def run_export(args: argparse.Namespace, settings: Settings) -> int:
    who = cli_principal()
    values: dict[str, list[str]] = {}
    for name in FILTERS:
        v = getattr(args, f"f_{name}")
        if v is not None:
            values[name] = [v]
    if args.f_tag:
        values["tag"] = list(args.f_tag)
    if not 1 <= args.limit <= EXPORT_MAX:
        # The manifest is built in memory: a few KB per call.
        raise CommandError(f"export: --limit: expected 1-{EXPORT_MAX}")
    try:
        f = parse_filter(lambda k: values.get(k, []), max_limit=EXPORT_MAX, default_limit=args.limit,
                         country=settings.search.default_country)
    except FilterError as exc:
        raise CommandError(f"export: {exc}") from None
    if not args.call and not values:
        raise CommandError("export: select calls with --call or filters (--from, --to, --number, ...)")
    async with open_database(settings, current_schema=True) as conn:
        if args.call:
            rows = await conn.fetch("SELECT id FROM calls WHERE id = ANY($1::uuid[]) ORDER BY started_at, id",
                                    args.call)
            found = {str(r["id"]) for r in rows}
            for c in args.call:
                if c not in found:
                    raise CommandError(f"export: {c}: no such call", 1)
            ids = [str(r["id"]) for r in rows]
        else:
            sql, sql_args = search_sql(f, who, limit=args.limit)
            ids = [str(r["id"]) for r in await conn.fetch(sql, *sql_args)]
        key = signing_key(settings) if args.manifest else None
        selection = {"calls": args.call} if args.call else {"filter": f.describe(), "limit": args.limit}
        result = await write(conn, settings, ids, args, purpose="evidence_export", key=key, selection=selection,
                             max_bytes=settings.integrity.evidence_max_bytes, transcripts=args.transcripts)
        async with conn.transaction():
            for c in ids:
                await audit.append(conn, actor=who.name, role=who.role, action="evidence_export", call_id=c,
                                   details={"manifest_sha256": result.manifest_sha256, "signed": key is not None,
                                            "transcripts": args.transcripts})
    print(f"exported {len(ids)} call(s), {result.files} recording(s)"
          + (f", {result.transcripts} transcript(s)" if args.transcripts else "") + f" to {args.zip or args.out}"
          + (f"; {result.excluded} call(s) without audio (the manifest's excluded says why)" if result.excluded
             else "")
          + (f"; manifest signed (key {result.fingerprint})" if result.fingerprint else "; manifest not signed"))
    warn_export(result)
    return 0


def run_verify_manifest(args: argparse.Namespace, settings: Settings | None) -> int:
    """Needs no config: a third party runs it on what it was given."""
    path = Path(args.path)
    if not path.exists():
        raise CommandError(f"verify-manifest: {path}: no such file or folder")
    key = None
    if args.public_key:
        try:
            key = load_public_key(Path(args.public_key).read_bytes())
        except (OSError, KeyError_) as exc:
            raise CommandError(f"verify-manifest: --public-key: {exc}") from None
    try:
        check = verify_manifest(path, key)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CommandError(f"verify-manifest: {exc}", 1) from None
    if args.json:
        print(dump(check.as_dict()))
    else:
        print(f"signature: {check.signature}" + (f" (key {check.fingerprint})" if check.fingerprint else ""))
        print(f"{check.files_ok} file(s) match the manifest; {check.calls} call(s) described")
        for p in check.problems:
            print(f"PROBLEM: {p}")
        print("VERIFIED" if check.ok else "NOT VERIFIED")
    return 0 if check.ok else PROBLEMS
