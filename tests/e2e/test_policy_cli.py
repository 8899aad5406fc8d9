"""`callrec check --caller ...` and `callrec hooks` as an admin runs them (`policy explain`, which needs
neither Asterisk nor a database: tests/unit/test_policy_explain.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sandbox import SandboxInfo
from support.cli import POLICY_RULES as RULES
from support.cli import offline_config
from support.cli import run_cli as run
from support.daemon_proc import write_config


def test_check_reports_rules_and_hooks_and_explains_a_call(tmp_path: Path, asterisk: SandboxInfo,
                                                          database: str) -> None:
    cfg = write_config(tmp_path / "c.toml", asterisk, database)
    base = cfg.read_text() + RULES
    cfg.write_text(base + '\n[hooks]\ncommand = ["/nonexistent/notify"]\nwebhook_url = "https://h.example/in?k=tok"'
                   '\nwebhook_auth = "Bearer hidden"\n')
    result = run(cfg, "check")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "ok   policy: 3 rule(s); record=yes, sample_percent=50" in lines
    assert "warn policy: rule support: prompt 'support-greeting' is not installed for en; " \
           "the mode's default prompt is used" in lines
    assert "FAIL hooks: command /nonexistent/notify: hooks.command: not an executable file" in lines
    assert "ok   hooks: webhook https://h.example/in (with Authorization)" in lines
    assert "tok" not in result.stdout and "hidden" not in result.stdout

    cfg.write_text(base + '\n[hooks]\ncommand = ["/bin/true", "{path}"]\n')
    result = run(cfg, "check", "--caller", "+4930", "--did", "8001")
    assert result.returncode == 0, result.stdout
    assert "ok   hooks: command /bin/true" in result.stdout
    assert "decided by the caller side: never (never overrides yes)" in result.stdout
    assert "CALLREC_POLICY=never" in result.stdout


async def test_hooks_lists_and_requeues_failed_jobs(tmp_path: Path, database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        call_id = str(uuid.uuid4())
        await conn.execute("INSERT INTO calls (id, door, uniqueid, consent_mode, state, started_at) "
                           "VALUES ($1, 'ari', 'u1', 'notice', 'ended', $2)", call_id, datetime.now(UTC))
        await conn.execute("INSERT INTO hook_jobs (call_id, hook, payload, state, attempts, last_error) VALUES "
                           "($1, 'webhook', '{}', 'failed', 10, 'webhook https://h/x: HTTP 503'), "
                           "($1, 'command', '{}', 'done', 1, NULL)", call_id)
        cfg = offline_config(tmp_path)
        cfg.write_text(cfg.read_text() + f'\n[database]\ndsn = "{database}"\n')
        result = run(cfg, "hooks", "--failed")
        assert result.returncode == 0, result.stderr
        assert "webhook" in result.stdout and "HTTP 503" in result.stdout and "command" not in result.stdout
        result = run(cfg, "hooks", "--failed", "--retry")
        assert result.returncode == 0 and "1 failed job(s) queued again" in result.stdout
        states = await conn.fetch("SELECT hook, state, attempts FROM hook_jobs ORDER BY hook")
        assert [tuple(r) for r in states] == [("command", "done", 1), ("webhook", "pending", 0)]
    finally:
        await conn.close()
