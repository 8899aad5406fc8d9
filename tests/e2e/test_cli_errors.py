"""The `callrec` command line as an admin types it: global options before or after the command, and
every command group's errors as one line on stderr, no traceback, exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from callrec.cli.database import where
from callrec.cli.main import build_parser

CALLREC = [sys.executable, "-m", "callrec"]
REPO = Path(__file__).resolve().parents[2]
# A PostgreSQL nobody listens on (port 1 is refused at once), with a password that must never show.
UNREACHABLE = "postgresql://callrec:pw-never-shown@127.0.0.1:1/callrec_nowhere"
CALL = str(uuid.uuid4())


def config(tmp_path: Path, dsn: str, name: str = "c.toml", asterisk: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f'[asterisk]\nari_password = "a"\nami_password = "b"\n{asterisk}[database]\ndsn = "{dsn}"\n'
                    f'[recordings]\ndir = "/var/spool/asterisk/callrec"\nlocal_dir = "{tmp_path}"\n'
                    f'[notice]\nprompts_dir = "{REPO}/sounds"\n')
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CALLREC, *args], capture_output=True, text=True, timeout=60, input="")


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert result.returncode == code and len(lines) == 1, (result.returncode, result.stderr)
    return lines[0]


# -- global options -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["policy", "explain", "--did", "100"], ["verify-manifest", "/nonexistent"]])
def test_config_before_or_after_the_command_without_a_database(tmp_path: Path, command: list[str]) -> None:
    cfg = str(config(tmp_path, UNREACHABLE))
    before = run("-c", cfg, *command)
    for after in (run(*command, "-c", cfg), run(*command, "--config", cfg), run(command[0], "-c", cfg, *command[1:])):
        assert (after.returncode, after.stdout, after.stderr) == (before.returncode, before.stdout, before.stderr)


@pytest.mark.parametrize("command", [["calls", "--json"], ["hold", "list", "--json"], ["users", "list"],
                                     ["retention", "status", "--json"]])
def test_config_before_or_after_the_command_with_a_database(tmp_path: Path, database: str,
                                                            command: list[str]) -> None:
    cfg = str(config(tmp_path, database))
    before, after = run("-c", cfg, *command), run(*command, "--config", cfg)
    assert before.returncode == 0, before.stderr
    assert (after.returncode, after.stdout) == (before.returncode, before.stdout)


def test_config_after_the_command_wins_and_bad_config_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[asterisk]\nari_password = "x"\nami_password = "y"\nami_port = "fifty"\n')
    line = one_line(run("-c", str(config(tmp_path, UNREACHABLE)), "check", "--config", str(bad)))
    assert line == "callrec: config error: asterisk.ami_port: expected a whole number, got 'fifty'"
    line = one_line(run("check", "--config", str(tmp_path / "missing.toml")))
    assert line == f"callrec: config error: {tmp_path / 'missing.toml'}: no such file"
    assert one_line(run("hooks", "-c", str(tmp_path))).startswith(f"callrec: config error: {tmp_path}:")


def test_version_before_or_after_the_command() -> None:
    assert run("--version").stdout == run("calls", "--version").stdout == "callrec 0.1.0\n"


def test_help_lists_every_command_with_one_line() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in ("serve", "migrate", "check", "policy", "hooks", "calls", "users", "tokens", "audit", "sounds",
                 "retention", "hold", "subject", "verify", "keys", "export", "verify-manifest", "recording", "alerts",
                 "transcribe", "speech"):
        assert any(line.split()[:1] == [name] and len(line.split()) > 1 for line in result.stdout.splitlines()), name


def test_every_command_has_a_handler_and_a_help() -> None:
    """One command table: each leaf parser carries its handler; each group needs a subcommand."""
    def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            assert callable(parser.get_default("run")), path
            return [path]
        helps = {c.dest: c.help for c in subs[0]._choices_actions}
        out = []
        for name, child in subs[0].choices.items():
            assert helps.get(name), (*path, name)
            out += leaves(child, (*path, name))
        return out

    found = leaves(build_parser(), ())
    assert len(found) == 43
    assert {("recording", "pauses"), ("config", "reference"), ("verify-manifest",),
            ("alerts", "rules", "add"), ("transcribe",), ("speech", "status"), ("speech", "retry"),
            ("speech", "requeue"), ("speech", "worker"), ("nodes", "list"), ("nodes", "retire"),
            ("storage", "migrate"), ("storage", "status"), ("keys", "rotate")} <= set(found)
    # `callrec alerts` and `callrec alerts rules` list on their own; their subcommands are optional.
    assert callable(build_parser().parse_args(["alerts"]).run)
    assert build_parser().parse_args(["alerts", "rules"]).run is not build_parser().parse_args(["alerts"]).run


# -- one line, exit 2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "message"), [
    (["recording", "pause"], "callrec recording pause: the following arguments are required: call_id"),
    (["recording", "pause", "nope"], "callrec recording pause: argument call_id: expected a call id (UUID)"),
    (["hold", "set", CALL, "nope", "--reason", "x"], "callrec hold set: argument CALL_ID: expected a call id"),
    (["export", "--out", "x", "--call", "nope"], "callrec export: argument --call: expected a call id"),
    (["audit", "--call-id", "12"], "callrec audit: argument --call-id: expected a call id (UUID), got '12'"),
    (["users", "add", "ann"], "callrec users add: the following arguments are required: --role"),
    (["tokens", "revoke", "first"], "callrec tokens revoke: argument id: invalid int value: 'first'"),
    (["hooks", "-n", "many"], "callrec hooks: argument -n/--limit: invalid int value: 'many'"),
    (["speech", "retry"], "callrec speech retry: one of the arguments --call --failed is required"),
    (["speech", "requeue", "--since", "yesterday"], "callrec speech requeue: argument --since: expected a date"),
    (["speech", "requeue", "--call", "7"], "callrec speech requeue: argument --call: expected a call id"),
    (["transcribe", "x.wav", "--language", "de"], "callrec transcribe: argument --language: invalid choice: 'de'"),
    (["calls", "--direction", "sideways"], "callrec calls: argument --direction: invalid choice: 'sideways'"),
    (["policy"], "callrec policy: the following arguments are required: policy_command"),
    (["sounds", "play"], "callrec sounds: argument sounds_command: invalid choice: 'play'"),
    (["retention", "run", "--wet"], "callrec: unrecognized arguments: --wet"),
    (["subject", "export", "+15551234"], "callrec subject export: one of the arguments --out --zip is required"),
    (["keys"], "callrec keys: the following arguments are required: keys_command"),
    (["serve", "--now"], "callrec: unrecognized arguments: --now"),
    (["frobnicate"], "callrec: argument command: invalid choice: 'frobnicate'"),
])
def test_bad_command_line_is_one_line(tmp_path: Path, command: list[str], message: str) -> None:
    line = one_line(run("-c", str(config(tmp_path, UNREACHABLE)), *command))
    assert line.startswith(message) and line.endswith("--help)"), line


@pytest.mark.parametrize(("command", "message"), [
    (["calls", "--from", "yesterday"], "callrec: from: "),
    (["calls", "--all"], "callrec: --all needs --format json or csv"),
    (["verify", "--since", "yesterday"], "callrec: --since: "),
    (["subject", "erase", "call me maybe!"], "callrec: not a phone number: 'call me maybe!'"),
    (["export", "--out", "x"], "callrec: export: select calls with --call or filters"),
    (["export", "--zip", "x", "--number", "1", "--limit", "0"], "callrec: export: --limit: expected 1-10000"),
    (["sounds", "install", "--from", "/nonexistent/sounds"], "callrec: sounds: --from /nonexistent/sounds: no such"),
    (["verify-manifest", "/nonexistent/export.zip"], "callrec: verify-manifest: /nonexistent/export.zip: no such"),
    (["keys", "generate"], "callrec: keys generate: pass --out FILE or set integrity.signing_key"),
])
def test_bad_value_or_missing_file_is_one_line(tmp_path: Path, command: list[str], message: str) -> None:
    assert one_line(run(*command, "-c", str(config(tmp_path, UNREACHABLE)))).startswith(message)


@pytest.mark.parametrize("command", [
    ["migrate"], ["hooks"], ["calls"], ["users", "list"], ["tokens", "list"], ["audit"],
    ["recording", "pauses", CALL], ["retention", "status"], ["retention", "run"], ["hold", "list"],
    ["subject", "erase", "+15551234", "--dry-run"], ["verify"], ["export", "--out", "x", "--call", CALL],
])
def test_unreachable_database_is_one_line_naming_host_and_database(tmp_path: Path, command: list[str]) -> None:
    line = one_line(run(*command, "-c", str(config(tmp_path, UNREACHABLE))))
    assert line.startswith("callrec: database.dsn: cannot connect to PostgreSQL at 127.0.0.1:1/callrec_nowhere: ")
    assert "pw-never-shown" not in line


def test_missing_schema_and_unknown_call_stay_exit_1(tmp_path: Path, database: str) -> None:
    """Runtime refusals keep their documented exit 1; still one line."""
    cfg = str(config(tmp_path, database))
    assert one_line(run("hold", "set", CALL, "--reason", "x", "-c", cfg), 1) == f"callrec: {CALL}: no such call"
    assert one_line(run("export", "--zip", str(tmp_path / "e.zip"), "--call", CALL, "-c", cfg), 1) \
        == f"callrec: export: {CALL}: no such call"
    empty = database.rsplit("/", 1)[0] + "/template1"  # a database without callrec's schema
    line = one_line(run("verify", "--json", "-c", str(config(tmp_path, empty, name="empty.toml"))), 1)
    assert line.startswith("callrec: database: schema not up to date (001_calls") and "callrec migrate" in line
    ok = run("export", "--zip", str(tmp_path / "none.zip"), "--number", "1", "-c", cfg)
    assert ok.returncode == 0 and "exported 0 call(s)" in ok.stdout, ok.stderr


def test_where_names_host_and_database_never_the_user_or_password() -> None:
    assert where("postgresql://app:secret@db.example:6432/callrec") == "db.example:6432/callrec"
    assert where("postgresql:///callrec?host=/run/postgresql") == "/run/postgresql/callrec"
    assert where("postgres://app@10.0.0.5/") == "10.0.0.5/(the user's database)"
    assert "secret" not in json.dumps(where("postgresql://a:secret@[::1/x"))


async def test_database_refusal_mid_command_is_one_line(tmp_path: Path, database: str) -> None:
    """A role without privileges: PostgreSQL refuses the query; one line, exit 1 (not a traceback)."""
    role = f"callrec_cli_noperm_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        parts = urlsplit(database)
        cfg = config(tmp_path, urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}")),
                     asterisk='ari_url = "http://127.0.0.1:1"\nami_port = 1\nrequest_timeout = 1\n')
        line = one_line(await asyncio.to_thread(run, "users", "list", "-c", str(cfg)), 1)
        assert line == "callrec: database: permission denied for table users", line
        # `check` reports it as its postgresql line and goes on with the other checks.
        check = await asyncio.to_thread(run, "check", "-c", str(cfg))
        assert check.returncode == 1 and not check.stderr, check.stderr
        assert "FAIL postgresql: database.dsn: permission denied for table schema_migrations" in check.stdout
        assert "FAIL ami: asterisk.ami_host" in check.stdout, check.stdout
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


def test_check_with_failures_still_explains_the_call(tmp_path: Path) -> None:
    cfg = config(tmp_path, UNREACHABLE, asterisk='ari_url = "http://127.0.0.1:1"\nami_port = 1\nrequest_timeout = 1\n')
    result = run("check", "--did", "100", "-c", str(cfg))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL postgresql: database.dsn: cannot connect to PostgreSQL at 127.0.0.1:1/callrec_nowhere" \
        in result.stdout and "pw-never-shown" not in result.stdout
    assert "outcome: " in result.stdout  # the explanation of the call, after the failed checks
