"""The `callrec` command as an admin runs it: check, serve, migrate, calls, sounds install."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from caller import Tester
from sandbox import SandboxInfo
from support import REPO
from support.cli import run_cli as run
from support.daemon_proc import CALLREC, wait_finalized, wait_registered, write_config

from callrec.store.migrate import MigrationError, available_migrations, migrate


def test_check_passes_with_a_good_config(tmp_path: Path, asterisk: SandboxInfo, database: str) -> None:
    cfg = write_config(tmp_path / "c.toml", asterisk, database)
    result = run(cfg, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for what in ("config", "prompts", "postgresql", "ari", "ami", "recordings"):
        assert any(line.startswith(f"ok   {what}:") for line in lines), (what, result.stdout)
    assert "Asterisk 22" in result.stdout
    assert asterisk.ari_password not in result.stdout + result.stderr
    assert asterisk.ami_password not in result.stdout + result.stderr


@pytest.mark.parametrize(("changes", "failing", "key"), [
    ({"ari_password": "wrong"}, "ari", "asterisk.ari_password"),
    ({"ami_password": "wrong"}, "ami", "asterisk.ami_password"),
    ({"ari_url": "http://127.0.0.1:1"}, "ari", "asterisk.ari_url"),
    ({"dsn": "postgresql://nobody@127.0.0.1:1/none"}, "postgresql", "database.dsn"),
])
def test_check_names_each_failure(tmp_path: Path, asterisk: SandboxInfo, database: str, changes: dict,
                                  failing: str, key: str) -> None:
    cfg = write_config(tmp_path / "c.toml", asterisk, database, **changes)
    result = run(cfg, "check")
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith(f"FAIL {failing}: {key}"), result.stdout
    assert "wrong" not in result.stdout + result.stderr  # the wrong password is not echoed either


@pytest.mark.parametrize(("changes", "key"), [
    ({"ari_password": "wrong"}, "asterisk.ari_password"),
    ({"ami_password": "wrong"}, "asterisk.ami_password"),
    # A role PostgreSQL refuses is fatal; an unreachable database is not (serve journals meanwhile:
    # tests/e2e/test_journal_e2e.py).
    ({"dsn": "role nobody"}, "database.dsn"),
])
def test_serve_with_wrong_credentials_exits_with_one_line(tmp_path: Path, asterisk: SandboxInfo, database: str,
                                                          changes: dict, key: str) -> None:
    if changes.get("dsn") == "role nobody":
        parts = urlsplit(database)
        changes = {"dsn": urlunsplit(parts._replace(netloc="nobody@" + parts.netloc.rpartition("@")[2]))}
    cfg = write_config(tmp_path / "c.toml", asterisk, database, **changes)
    t0 = time.monotonic()
    result = run(cfg, "serve", timeout=30)
    assert result.returncode == 1
    assert time.monotonic() - t0 < 15
    errors = [line for line in result.stderr.splitlines() if line.startswith("callrec: ")]
    assert len(errors) == 1 and errors[0].startswith(f"callrec: {key}"), result.stderr
    assert "wrong" not in result.stderr


def test_serve_without_schema_says_run_migrate(tmp_path: Path, asterisk: SandboxInfo, pg_admin_dsn: str) -> None:
    async def fresh() -> str:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute("DROP DATABASE IF EXISTS callrec_test_empty WITH (FORCE)")
            await conn.execute("CREATE DATABASE callrec_test_empty")
        finally:
            await conn.close()
        return pg_admin_dsn.rsplit("/", 1)[0] + "/callrec_test_empty"

    dsn = asyncio.run(fresh())
    cfg = write_config(tmp_path / "c.toml", asterisk, dsn)
    result = run(cfg, "serve")
    assert result.returncode == 1 and "run `callrec migrate`" in result.stderr
    assert run(cfg, "migrate").stdout.startswith("applied: 001_calls")
    assert run(cfg, "migrate").stdout.strip() == "schema is up to date"


async def test_two_migrations_at_once_apply_once(pg_admin_dsn: str) -> None:
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS callrec_test_race WITH (FORCE)")
        await admin.execute("CREATE DATABASE callrec_test_race")
        dsn = pg_admin_dsn.rsplit("/", 1)[0] + "/callrec_test_race"
        a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            results = await asyncio.gather(migrate(a), migrate(b))
            assert sorted(len(r) for r in results) == [0, len(available_migrations())]
            assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(available_migrations())
            # An applied migration edited afterwards is refused.
            await a.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
            with pytest.raises(MigrationError, match="changed after it was applied"):
                await migrate(a)
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS callrec_test_race WITH (FORCE)")
        await admin.close()


async def test_serve_records_and_calls_shows_it_safely(tmp_path: Path, asterisk: SandboxInfo, database: str,
                                                       tester: Tester) -> None:
    """The real daemon process: a hostile caller ID goes in, `callrec calls` shows it escaped."""
    cfg = write_config(tmp_path / "c.toml", asterisk, database)
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_registered(tester)
        name = "Evil\x1b]0;pwned\x07\x1b[2J\u202eexe.txt 😀" + "x" * 200
        call = await tester.place_call(variables={"_CALLREC_TEST_SET_CID": "1", "_CALLREC_TEST_CID_NAME": name,
                                                  "_CALLREC_TEST_CID_NUM": "'; DROP TABLE calls;--"})
        back = await call.handed_back()
        assert back["consent"] == "implied"
        await call.hang_up()
        await wait_finalized(database, call.callee_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log.close()
    table = run(cfg, "calls", "-n", "5")
    assert table.returncode == 0
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout and "\x07" not in table.stdout
    # Shown escaped and cut to the column (the stored value is whole, see --json below).
    assert "Evil\\x1b]0;pwned" in table.stdout and "'; DROP TABLE c" in table.stdout
    assert all(len(line) < 220 for line in table.stdout.splitlines())  # 1 KB names are cut for the table
    lines = run(cfg, "calls", "--json").stdout.splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0]
    assert json.loads(lines[0])["caller_name"] == name  # JSON keeps the exact value
    served = (tmp_path / "serve.log").read_text()
    assert asterisk.ari_password not in served and asterisk.ami_password not in served
    assert "callrec stopped" in served


def test_sounds_install_copies_prompts(tmp_path: Path, asterisk: SandboxInfo, database: str) -> None:
    cfg = write_config(tmp_path / "c.toml", asterisk, database)
    result = run(cfg, "sounds", "install", "--dest", str(tmp_path / "prompts"))
    assert result.returncode == 0, result.stderr
    shipped = sorted(p.relative_to(REPO / "sounds")
                     for p in (REPO / "sounds").glob("*/*.wav"))
    installed = sorted(p.relative_to(tmp_path / "prompts") for p in (tmp_path / "prompts").glob("*/*.wav"))
    assert installed == shipped and len(installed) >= 8
