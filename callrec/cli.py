"""``callrec serve | migrate | check | calls | sounds install``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__
from .config import ConfigError, Settings, load_settings

DEFAULT_CONFIG = "/etc/callrec/callrec.toml"
log = logging.getLogger("callrec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callrec", description="Lawful call recording for Asterisk.")
    parser.add_argument("--version", action="version", version=f"callrec {__version__}")
    parser.add_argument("-c", "--config", default=os.environ.get("CALLREC_CONFIG", DEFAULT_CONFIG),
                        help=f"TOML config file (default: $CALLREC_CONFIG or {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon (ARI app + call log)")
    serve.add_argument("--migrate", action="store_true", help="apply pending database migrations first")
    sub.add_parser("migrate", help="create or update the database schema")
    sub.add_parser("check", help="validate the config and reach ARI, AMI and PostgreSQL")
    calls = sub.add_parser("calls", help="recent calls from the call log")
    calls.add_argument("-n", "--limit", type=int, default=20)
    calls.add_argument("--number", help="caller or called number; * is a wildcard")
    calls.add_argument("--json", action="store_true", help="JSON lines, one call per line, every field")
    sounds = sub.add_parser("sounds", help="notice prompts")
    sounds_sub = sounds.add_subparsers(dest="sounds_command", required=True)
    install = sounds_sub.add_parser("install", help="copy the shipped prompts to where Asterisk reads them")
    install.add_argument("--from", dest="source", help="prompts folder (default: the shipped sounds/)")
    install.add_argument("--dest", help="target folder (default: notice.local_prompts_dir or prompts_dir)")
    args = parser.parse_args(argv)

    for key in ("ARI_PASSWORD", "AMI_PASSWORD"):
        if os.environ.get(f"CALLREC_{key}") and not os.environ.get(f"CALLREC_ASTERISK_{key}"):
            print(f"callrec: note: use CALLREC_ASTERISK_{key}, not CALLREC_{key}", file=sys.stderr)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"callrec: config error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings, args.migrate))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "check":
            return asyncio.run(_check(settings))
        if args.command == "calls":
            return asyncio.run(_calls(settings, args.limit, args.number, args.json))
        if args.command == "sounds":
            return _sounds_install(settings, args.source, args.dest)
    except KeyboardInterrupt:
        return 130
    return 2


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log.level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # panoramisk logs every action it sends at INFO/DEBUG, login secret included: keep it quiet.
    logging.getLogger("panoramisk").setLevel(logging.WARNING)
    logging.getLogger("callrec.ami.panoramisk").setLevel(logging.CRITICAL)


async def _serve(settings: Settings, run_migrations: bool) -> int:
    from .app import Daemon, FatalError

    daemon = Daemon(settings)
    try:
        await daemon.start(run_migrations)
        await daemon.run_until_stopped()
    except FatalError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from .prompts import PromptError

        if isinstance(exc, PromptError):
            print(f"callrec: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        await daemon.stop()
    log.info("callrec stopped")
    return 0


async def _connect_db(settings: Settings) -> asyncpg.Connection | None:
    """A connection for one command, or None after saying why on stderr."""
    try:
        return await asyncpg.connect(settings.database.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"callrec: database.dsn: cannot connect to PostgreSQL: {exc}", file=sys.stderr)
        return None


async def _migrate(settings: Settings) -> int:
    from .store import migrate

    conn = await _connect_db(settings)
    if conn is None:
        return 1
    try:
        applied = await migrate(conn)
    except Exception as exc:
        print(f"callrec: migrate failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


async def _check(settings: Settings) -> int:
    from .asterisk.ami import Ami, AmiError
    from .asterisk.ari import Ari, AriError
    from .policy import DEFAULT_PROMPTS, NOT_RECORDED_PROMPT
    from .prompts import PromptCatalog, PromptError
    from .store.migrate import pending

    failures = 0

    def report(what: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")

    report("config", True, settings.source)
    try:
        catalog = PromptCatalog.load(settings.notice.prompts_dir, settings.notice.local_prompts_path)
        needed = [*sorted(set(DEFAULT_PROMPTS.values())), NOT_RECORDED_PROMPT]
        catalog.require(settings.notice.default_language, needed)
        langs = catalog.available()
        report("prompts", True, ", ".join(f"{lang} ({len(names)})" for lang, names in sorted(langs.items())))
    except PromptError as exc:
        report("prompts", False, str(exc))
    try:
        conn = await asyncpg.connect(settings.database.dsn, timeout=5)
        try:
            missing = await pending(conn)
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        if missing:
            report("postgresql", False, f"schema not up to date ({', '.join(missing)} pending): run `callrec migrate`")
        else:
            report("postgresql", True, f"server {version}, schema up to date")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        report("postgresql", False, f"database.dsn: cannot connect: {exc}")
    a = settings.asterisk
    ari = Ari(a.ari_url, a.ari_user, a.ari_password, a.app, timeout=a.request_timeout)
    try:
        if not a.ari_enabled:
            report("ari", True, "off (asterisk.ari_enabled = false): calls come in through FastAGI only")
        else:
            info = await ari.info()
            version = (info.get("system") or {}).get("version", "?")
            report("ari", True, f"{ari.base} as {a.ari_user}: Asterisk {version}")
    except AriError as exc:
        key = "asterisk.ari_password" if exc.status == 401 else "asterisk.ari_url"
        report("ari", False, f"{key}: {ari.base}: {exc.message}")
    finally:
        await ari.close()
    report("agi", True, f"FastAGI door on {settings.agi.listen}" if settings.agi.active else "FastAGI door off")
    ami = Ami(a.ami_host, a.ami_port, a.ami_user, a.ami_password)
    try:
        await ami.start()
        await ami.wait_logged_in(timeout=min(5.0, a.request_timeout))
        report("ami", True, f"{a.ami_host}:{a.ami_port} as {a.ami_user}")
    except AmiError as exc:
        key = "asterisk.ami_password" if ami.auth_failed else "asterisk.ami_host"
        report("ami", False, f"{key}: {exc}")
    finally:
        await ami.close()
    local = settings.recordings.local_path
    if local.is_dir() and os.access(local, os.R_OK | os.W_OK):
        report("recordings", True, f"{local} readable and writable")
    else:
        report("recordings", False, f"recordings.local_dir: {local} is missing or not readable/writable")
    return 1 if failures else 0


async def _calls(settings: Settings, limit: int, number: str | None, as_json: bool) -> int:
    from .display import table
    from .store import fetch_calls

    conn = await _connect_db(settings)
    if conn is None:
        return 1
    try:
        rows = await fetch_calls(conn, limit=max(1, min(limit, 10000)), number=number)
    except asyncpg.UndefinedTableError:
        print("callrec: database: no call log yet; run `callrec migrate`", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    if as_json:
        for row in rows:
            # ensure_ascii keeps every caller-supplied character escaped on the terminal.
            print(json.dumps(row, default=_json_default, ensure_ascii=True))
        return 0
    headers = ["started (UTC)", "caller", "name", "called", "mode", "consent", "key", "recording", "call id"]
    widths = [19, 16, 20, 12, 7, 13, 3, 16, 36]
    out = []
    for r in rows:
        rec = r["recording_status"]
        if r["recording_duration"]:
            rec += f" {r['recording_duration']:.1f}s"
        out.append([
            r["started_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r["caller_number"] or "", r["caller_name"] or "", r["called_number"] or "",
            r["consent_mode"], r["consent"] or r["state"], r["consent_key"] or "", rec, str(r["id"]),
        ])
    print(table(headers, out, widths))
    if not rows:
        print("(no calls)")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def shipped_sounds() -> Path | None:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sounds", Path(sys.prefix) / "share" / "callrec" / "sounds"):
        if candidate.is_dir():
            return candidate
    return None


def _sounds_install(settings: Settings, source: str | None, dest: str | None) -> int:
    src = Path(source) if source else shipped_sounds()
    if src is None or not src.is_dir():
        print("callrec: sounds: no prompts folder found; pass --from", file=sys.stderr)
        return 1
    target = Path(dest) if dest else settings.notice.local_prompts_path
    copied = 0
    for wav in sorted(src.glob("*/*.wav")):
        out = target / wav.parent.name / wav.name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, out)
        out.chmod(0o644)
        copied += 1
    if not copied:
        print(f"callrec: sounds: no <lang>/<name>.wav files in {src}", file=sys.stderr)
        return 1
    print(f"installed {copied} prompt(s) from {src} into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
