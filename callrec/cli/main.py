"""``callrec serve | migrate | check | calls | sounds install | policy explain | hooks``."""

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

from callrec import __version__
from callrec.config.settings import ConfigError, Settings, load_settings

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
    check = sub.add_parser("check", help="validate the config and reach ARI, AMI and PostgreSQL; with --caller, "
                                         "--did ...: also explain the policy for such a call")
    _add_call_options(check)
    policy = sub.add_parser("policy", help="recording policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    explain = policy_sub.add_parser("explain", help="which rule a call would hit, and why (no I/O)")
    _add_call_options(explain)
    hooks = sub.add_parser("hooks", help="post-recording hook jobs")
    hooks.add_argument("--failed", action="store_true", help="only jobs that failed for good")
    hooks.add_argument("-n", "--limit", type=int, default=20)
    hooks.add_argument("--retry", action="store_true", help="put the failed jobs listed back in the queue")
    from callrec.cli.ops import add_calls_parser, add_parsers

    add_calls_parser(sub)
    add_parsers(sub)
    sounds = sub.add_parser("sounds", help="notice prompts")
    sounds_sub = sounds.add_subparsers(dest="sounds_command", required=True)
    install = sounds_sub.add_parser("install", help="copy the shipped prompts to where Asterisk reads them")
    install.add_argument("--from", dest="source", help="prompts folder (default: the shipped sounds/)")
    install.add_argument("--dest", help="target folder (default: notice.local_prompts_dir or prompts_dir)")
    from callrec.cli import dataops as cli_dataops

    cli_dataops.add_parsers(sub)
    recording = sub.add_parser("recording", help="pause or resume a call's recording (PCI DSS)")
    recording_sub = recording.add_subparsers(dest="recording_command", required=True)
    for name, text in (("pause", "silence the recording from now on (logged)"),
                       ("resume", "end the pause: record again, in the same file"),
                       ("pauses", "list the call's pause intervals")):
        cmd = recording_sub.add_parser(name, help=text)
        cmd.add_argument("call_id", help="the call's id (CALLREC_CALL_ID, `callrec calls`)")
        if name != "pauses":
            cmd.add_argument("--by", help="who asks (logged; default: the user running this command)")
        cmd.add_argument("--json", action="store_true", help="one JSON object per interval")
    args = parser.parse_args(argv)
    if (code := cli_dataops.run_without_config(args)) is not None:
        return code

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
            code = asyncio.run(_check(settings))
            if _call_given(args):
                print()
                explained = _policy_explain(settings, args)
                code = code or explained
            return code
        if args.command == "policy":
            return _policy_explain(settings, args)
        if args.command == "hooks":
            return asyncio.run(_hooks(settings, args.failed, args.limit, args.retry))
        if args.command in ("calls", "users", "tokens", "audit"):
            from callrec.cli import ops as cli_ops

            runner = {"calls": cli_ops.run_calls, "users": cli_ops.run_users, "tokens": cli_ops.run_tokens,
                      "audit": cli_ops.run_audit}[args.command]
            return asyncio.run(runner(settings, args))
        if args.command == "sounds":
            return _sounds_install(settings, args.source, args.dest)
        if args.command in cli_dataops.COMMANDS:
            return cli_dataops.run(args, settings)
        if args.command == "recording":
            return asyncio.run(_recording(settings, args.recording_command, args.call_id,
                                          getattr(args, "by", None), args.json))
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
    from callrec.app import Daemon, FatalError

    daemon = Daemon(settings)
    try:
        await daemon.start(run_migrations)
        await daemon.run_until_stopped()
    except FatalError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from callrec.calls.prompts import PromptError

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
    from callrec.store import migrate

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
    from callrec.asterisk.ami import Ami, AmiError
    from callrec.asterisk.ari import Ari, AriError
    from callrec.calls.policy import DEFAULT_PROMPTS, NOT_RECORDED_PROMPT
    from callrec.calls.prompts import PromptCatalog, PromptError
    from callrec.store.migrate import pending

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
    for level, what, detail in _policy_checks(settings):
        if level == "warn":
            print(f"warn {what}: {detail}")
        else:
            report(what, level == "ok", detail)
    local = settings.recordings.local_path
    if local.is_dir() and os.access(local, os.R_OK | os.W_OK):
        report("recordings", True, f"{local} readable and writable")
    else:
        report("recordings", False, f"recordings.local_dir: {local} is missing or not readable/writable")
    from callrec.cli.dataops import check_lines

    for what, ok, detail in check_lines(settings):
        report(what, ok, detail)
    return 1 if failures else 0


def _add_call_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("a call to explain the policy for")
    group.add_argument("--caller", default="", help="caller number")
    group.add_argument("--did", default="", help="called number (DID / exten)")
    group.add_argument("--context", default="", help="dialplan context the call comes from")
    group.add_argument("--extension", default="", help="agent extension (the extension= argument)")
    group.add_argument("--queue", default="", help="queue name (the queue= argument)")
    group.add_argument("--language", default="", help="channel language")
    group.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                       help="a dialplan argument, e.g. --arg mode=opt-in (repeatable)")


def _call_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) for k in ("caller", "did", "context", "extension", "queue", "arg"))


def _policy_explain(settings: Settings, args: argparse.Namespace) -> int:
    from callrec.calls.explain import explain, facts_from
    from callrec.calls.prompts import PromptCatalog, PromptError

    try:
        prompts = PromptCatalog.load(settings.notice.prompts_dir, settings.notice.local_prompts_path).available()
    except (PromptError, OSError):
        prompts = None
    facts, warnings = facts_from(args.caller, args.did, args.context, args.extension, args.queue, args.language,
                                 args.arg)
    _, text = explain(settings, facts, prompts, warnings)
    print(text)
    return 0


def _policy_checks(settings: Settings) -> list[tuple[str, str, str]]:
    """Config sanity for rules and hooks: ("ok" | "fail" | "warn", what, detail)."""
    from callrec.calls.prompts import PromptCatalog, PromptError
    from callrec.hooks import redacted_url

    p, h = settings.policy, settings.hooks
    out = [("ok", "policy", f"{len(p.rules)} rule(s); record={p.record}, sample_percent={p.sample_percent:g}"
                            + (f", sample_seed={p.sample_seed}" if p.sample_seed is not None else ""))]
    try:
        catalog = PromptCatalog.load(settings.notice.prompts_dir, settings.notice.local_prompts_path).available()
    except (PromptError, OSError):
        catalog = None
    for rule in p.rules:
        if rule.prompt and catalog is not None:
            langs = [rule.language or p.language or settings.notice.default_language, settings.notice.default_language]
            if not any(rule.prompt in catalog.get(lang, ()) for lang in langs):
                out.append(("warn", "policy", f"rule {rule.name}: prompt {rule.prompt!r} is not installed for "
                                              f"{'/'.join(dict.fromkeys(langs))}; the mode's default prompt is used"))
    if h.command:
        program = h.command[0]
        ok = os.path.isfile(program) and os.access(program, os.X_OK)
        out.append(("ok" if ok else "fail", "hooks", f"command {program}" + ("" if ok else
                    ": hooks.command: not an executable file")))
    if h.webhook_url:
        out.append(("ok", "hooks", f"webhook {redacted_url(h.webhook_url)}"
                                   + (" (with Authorization)" if h.webhook_auth else "")
                                   + (" (HMAC-signed)" if h.webhook_hmac_key else "")))
    return out


async def _hooks(settings: Settings, failed: bool, limit: int, retry: bool) -> int:
    from callrec.display import table

    conn = await _connect_db(settings)
    if conn is None:
        return 1
    try:
        where = "WHERE state = 'failed'" if failed else ""
        rows = await conn.fetch(f"SELECT * FROM hook_jobs {where} ORDER BY created_at DESC, id DESC LIMIT $1",
                                max(1, min(limit, 10000)))
        if retry:
            ids = [r["id"] for r in rows if r["state"] == "failed"]
            await conn.execute("UPDATE hook_jobs SET state = 'pending', attempts = 0, next_attempt_at = now(), "
                               "done_at = NULL WHERE id = ANY($1::bigint[])", ids)
            print(f"{len(ids)} failed job(s) queued again; a running daemon picks them up within 30 s")
            return 0
    except asyncpg.UndefinedTableError:
        print("callrec: database: no hook table yet; run `callrec migrate`", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    out = [[str(r["id"]), r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), r["hook"], r["state"],
            str(r["attempts"]), r["next_attempt_at"].astimezone(UTC).strftime("%H:%M:%S") if r["state"] == "pending"
            else "", str(r["call_id"]), r["last_error"] or ""] for r in rows]
    print(table(["job", "queued (UTC)", "hook", "state", "tries", "next", "call id", "last error"], out,
                [6, 19, 7, 7, 5, 8, 36, 60]))
    if not rows:
        print("(no hook jobs)")
    return 0


async def _recording(settings: Settings, command: str, call_id: str, by: str | None, as_json: bool) -> int:
    """``recording pause|resume|pauses``: through this process's own AMI login; the state is in
    PostgreSQL, shared with the daemon."""
    import getpass

    from callrec.asterisk.ami import Ami, AmiError
    from callrec.recording.control import RecordingControlError, list_pauses, pause_recording, resume_recording

    conn = await _connect_db(settings)
    if conn is None:
        return 1
    ami: Ami | None = None
    try:
        if command == "pauses":
            intervals = await list_pauses(conn, call_id)
        else:
            a = settings.asterisk
            logging.getLogger("callrec.ami").setLevel(logging.WARNING)  # no "logged in" chatter for one command
            ami = Ami(a.ami_host, a.ami_port, a.ami_user, a.ami_password, timeout=min(3.0, a.request_timeout))
            await ami.start()
            try:
                await ami.wait_logged_in(timeout=min(5.0, a.request_timeout))
            except AmiError as exc:
                key = "asterisk.ami_password" if ami.auth_failed else "asterisk.ami_host"
                print(f"callrec: {key}: {exc}", file=sys.stderr)
                return 1
            act = pause_recording if command == "pause" else resume_recording
            who = by or f"cli:{getpass.getuser()}"
            intervals = [await act(call_id, by=who, source="cli", ami=ami, db=conn)]
    except RecordingControlError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an empty --by
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    except asyncpg.UndefinedTableError:
        print("callrec: database: schema not up to date; run `callrec migrate`", file=sys.stderr)
        return 1
    finally:
        if ami is not None:
            await ami.close()
        await conn.close()
    if as_json:
        for interval in intervals:
            print(json.dumps(interval.as_dict(), ensure_ascii=True))
        return 0
    if command in ("pause", "resume"):
        i = intervals[0]
        if command == "pause":
            print(f"paused: call {i.call_id}, pause {i.seq}, since {_utc(i.paused_at)}")
        else:
            assert i.resumed_at is not None
            print(f"resumed: call {i.call_id}, pause {i.seq}, {_utc(i.paused_at)} to {_utc(i.resumed_at)} "
                  f"({(i.resumed_at - i.paused_at).total_seconds():.1f}s silent)")
    else:
        from callrec.display import table

        rows = [[str(i.seq), f"{i.paused_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                 f"{i.resumed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if i.resumed_at else "(paused)",
                 i.paused_by, i.pause_source, i.resumed_by or "", i.resume_source or ""] for i in intervals]
        print(table(["seq", "paused (UTC)", "resumed (UTC)", "paused by", "via", "resumed by", "via"], rows,
                    [3, 19, 19, 30, 5, 30, 6]))
        if not intervals:
            print("(no pauses)")
    return 0


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


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
