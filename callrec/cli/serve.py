"""``callrec serve | migrate | check``: run the daemon, set up the schema, check an installation."""

from __future__ import annotations

import argparse
import dataclasses
import grp
import logging
import os
import pwd
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from callrec.cli import evidence, hooks, policy, retention, speech
from callrec.cli.common import CommandError, command
from callrec.cli.database import CONNECT_ERRORS, open_database, unreachable
from callrec.config.fields import doc_of
from callrec.config.settings import SECTIONS, Settings, is_loopback

log = logging.getLogger("callrec")


def add_commands(sub: object) -> None:
    serve = command(sub, "serve", "run the daemon (ARI app + call log)", run_serve)
    serve.add_argument("--migrate", action="store_true", help="apply pending database migrations first")
    serve.add_argument("--api-only", action="store_true",
                       help="only the HTTP API and console: no Asterisk (no ARI, AMI, FastAGI), no calls")
    command(sub, "migrate", "create or update the database schema", run_migrate)
    check = command(sub, "check", "validate the config and reach ARI, AMI and PostgreSQL; with --caller, "
                                  "--did ...: also explain the policy for such a call", run_check)
    policy.add_call_options(check)


async def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.app import ApiOnly, Daemon, FatalError
    from callrec.calls.prompts import PromptError

    daemon: Daemon | ApiOnly = ApiOnly(settings) if args.api_only else Daemon(settings)
    try:
        await daemon.start(args.migrate)
        await daemon.run_until_stopped()
    except (FatalError, PromptError) as exc:
        # Exit 1, not 2: systemd restarts it (RestartPreventExitStatus=2 is for config errors).
        raise CommandError(str(exc), getattr(exc, "exit_code", 1)) from None
    finally:
        await daemon.stop()
    log.info("callrec stopped")
    return 0


async def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.store import migrate

    async with open_database(settings) as conn:
        try:
            applied = await migrate(conn)
        except Exception as exc:  # an edited migration, a missing privilege, a failing statement
            raise CommandError(f"migrate failed: {exc}", 1) from None
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


async def run_check(args: argparse.Namespace, settings: Settings) -> int:
    code = await _check(settings)
    if policy.call_given(args):
        print()
        explained = policy.explain_call(args, settings)  # printed even when a check failed
        code = code or explained
    return code


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
    for what, detail in exposure_warnings(settings):
        print(f"warn {what}: {detail}")
    try:
        catalog = PromptCatalog.load(settings.notice.prompts_dir, settings.notice.local_prompts_path)
        needed = [*sorted(set(DEFAULT_PROMPTS.values())), NOT_RECORDED_PROMPT]
        catalog.require(settings.notice.default_language, needed)
        langs = catalog.available()
        report("prompts", True, ", ".join(f"{lang} ({len(names)})" for lang, names in sorted(langs.items())))
    except PromptError as exc:
        report("prompts", False, str(exc))
    try:
        async with open_database(settings, timeout=5) as conn:
            missing = await pending(conn)
            version = await conn.fetchval("SHOW server_version")
        if missing:
            report("postgresql", False, f"schema not up to date ({', '.join(missing)} pending): run `callrec migrate`")
        else:
            report("postgresql", True, f"server {version}, schema up to date")
    except CommandError as exc:
        report("postgresql", False, str(exc))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Reached, but the schema could not be read (a missing privilege, a server going down).
        report("postgresql", False, f"database.dsn: {exc}")
    if settings.database.read_dsn:
        await check_read_replica(settings.database.read_dsn, report)
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
    report("http", True, f"ops API and console on {settings.http.listen}" if settings.http.active
           else "off (the ops API and console are not served)")
    for what, detail in listen_warnings(settings):
        print(f"warn {what}: {detail}")
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
    for level, what, detail in [*policy.check_lines(settings), *hooks.check_lines(settings)]:
        if level == "warn":
            print(f"warn {what}: {detail}")
        else:
            report(what, level == "ok", detail)
    local = settings.recordings.local_path
    if local.is_dir() and os.access(local, os.R_OK | os.W_OK):
        report("recordings", True, f"{local} readable and writable")
    else:
        report("recordings", False, f"recordings.local_dir: {local} is missing or not readable/writable")
    report(*journal_line(settings))
    for what, ok, detail in [*retention.check_lines(settings), *evidence.check_lines(settings),
                             *speech.check_lines(settings), *await storage_check_lines(settings)]:
        report(what, ok, detail)
    return 1 if failures else 0


def journal_line(settings: Settings) -> tuple[str, bool, str]:
    """The call-log journal's folder is usable by this account, and what an earlier run left in it (read only:
    a running daemon holds the journal's lock and goes on appending)."""
    from callrec.store.journal import FILE, read

    folder = Path(settings.database.journal_dir)
    probe = folder
    while not probe.exists() and probe != probe.parent:  # serve creates the missing part of the path
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return "journal", False, f"database.journal_dir: {probe} is not a folder this account can write to"
    try:
        pending, _, _ = read(folder / FILE)
    except OSError as exc:
        return "journal", False, f"database.journal_dir: {folder / FILE}: {exc.strerror or exc}"
    if not pending:
        return "journal", True, f"{folder}: empty"
    # A running daemon empties it once these are in the database; a stopped one replays them when it starts.
    return "journal", True, f"{folder}: {len(pending)} call(s) journaled, not yet confirmed written"


async def storage_check_lines(settings: Settings) -> list[tuple[str, bool, str]]:
    """`storage` (where recordings go; the bucket answers) and `master key` (it reads) for `check`."""
    from callrec.storage import KeyProblem, Storage, StorageUnavailable, in_thread
    s = settings.storage
    try:
        store = Storage.of(settings)
    except KeyProblem as exc:
        return [("master key", False, str(exc))]
    lines: list[tuple[str, bool, str]] = []
    if store.master is not None:
        lines.append(("master key", True, f"id {store.master.key_id}{'' if s.encrypt else ' (encrypt is off)'}"))
    if not s.remote:
        return [("storage", True, "the recordings folder" + (", encrypted at rest" if s.encrypt else "")), *lines]
    try:
        await in_thread(store.bucket.check)
        lines.insert(0, ("storage", True, f"{store.bucket.where('')} answers" + (", encrypted" if s.encrypt else "")))
    except StorageUnavailable as exc:
        lines.insert(0, ("storage", False, f"storage.endpoint/bucket: {exc}"))
    return lines


# -- what `check` warns about: secrets others can read, listens beyond this host ---------------


async def check_read_replica(dsn: str, report: Callable[[str, bool, str], None]) -> None:
    """``database.read_dsn``: reachable, and whether it is a standby (or the primary, as a fallback)."""
    what = "postgresql read replica"
    try:
        conn = await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": "callrec check"})
        try:
            standby = await conn.fetchval("SELECT pg_is_in_recovery()")
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except CONNECT_ERRORS as exc:
        report(what, False, str(unreachable(dsn, exc, "database.read_dsn")))
        return
    report(what, True, f"server {version}, " + ("a standby" if standby else
                                                 "a primary (no standby answered): searches read the primary"))


def group_members(gid: int) -> set[str]:
    """The accounts in group ``gid``: listed members and those whose primary group it is."""
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return {f"gid {gid}"}  # a group this host does not know: count it as someone else
    return members | {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}


def readable_by_others(path: str | Path, members: Callable[[int], set[str]] = group_members) -> str | None:
    """Why a file holding a secret is exposed, or None.  Readable by every account: always.
    Readable by its group: when the group holds more than one account besides the owner (the
    documented ``root:callrec`` mode 640 gives the daemon's own group alone)."""
    st = os.stat(path)
    mode = f"mode {stat.S_IMODE(st.st_mode):o}"
    if st.st_mode & stat.S_IROTH:
        return f"readable by every account on this host ({mode})"
    if st.st_mode & stat.S_IRGRP:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = ""
        others = sorted(members(st.st_gid) - {owner})
        if len(others) > 1:
            try:
                group = grp.getgrgid(st.st_gid).gr_name
            except KeyError:
                group = str(st.st_gid)
            return (f"readable by group {group} ({mode}; {len(others)} accounts: {', '.join(others[:5])}"
                    f"{', ...' if len(others) > 5 else ''})")
    return None


def secrets_in_file(path: str | Path) -> list[str]:
    """The secret keys (``setting(..., secret=True)``) the TOML file itself sets."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    found = []
    for section, cls in SECTIONS.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for f in dataclasses.fields(cls):
            doc, value = doc_of(f), table.get(f.name)
            if doc is None or not doc.secret or not value:
                continue
            if f.name == "dsn" and not urlsplit(str(value)).password:
                continue  # a DSN without a password holds no secret
            found.append(f"{section}.{f.name}")
    return found


def exposure_warnings(settings: Settings) -> list[tuple[str, str]]:
    """(what, detail): the config file or the signing key readable by others while holding secrets."""
    out = []
    source = settings.source
    if source not in ("<defaults>", "<dict>") and os.path.isfile(source):
        secrets = secrets_in_file(source)
        why = readable_by_others(source) if secrets else None
        if why:
            out.append(("config", f"{source} holds {', '.join(secrets)} and is {why}: chmod 640 with the "
                                  "daemon's own group (or 600), or move the secrets to the environment file"))
    key = settings.integrity.signing_key
    if key and os.path.isfile(key):
        why = readable_by_others(key)
        if why:
            out.append(("signing key", f"integrity.signing_key: {key} (the private key) is {why}: chmod 600"))
    return out


def listen_warnings(settings: Settings) -> list[tuple[str, str]]:
    """(what, detail): a door or the API listening beyond this host."""
    out = []
    if settings.http.active:
        host, _ = settings.http.host_port()
        if not is_loopback(host) and not settings.http.cookie_secure:
            out.append(("http", f"http.listen {settings.http.listen} is not a loopback address and the API speaks "
                                "plain HTTP (passwords, session cookies, tokens, recordings): put TLS in front (a "
                                "reverse proxy on this host, http.listen on 127.0.0.1, http.cookie_secure = true)"))
    if settings.agi.active:
        host = settings.agi.listen.rpartition(":")[0]
        if not is_loopback(host):
            out.append(("agi", f"agi.listen {settings.agi.listen} is not a loopback address: FastAGI has no "
                               "authentication, so anyone who reaches it can have notices played and recordings "
                               "started; firewall it"))
    return out
