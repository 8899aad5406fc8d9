"""`callrec policy explain`, `callrec check --caller ...` and `callrec hooks` as an admin runs them."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from daemon_proc import CALLREC, write_config
from sandbox import SandboxInfo

REPO = Path(__file__).resolve().parent.parent
RULES = """
[policy]
mode = "opt-out"
sample_percent = 50

[[policy.rules]]
name = "legal-never"
caller = "+49*"
record = "never"

[[policy.rules]]
name = "trading"
queue = "trading"
record = "force"
stereo = true

[[policy.rules]]
name = "support"
did = "800*"
record = "yes"
sample_percent = 20
prompt = "support-greeting"
"""


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CALLREC, "-c", str(config), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def offline_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[asterisk]\nari_password = "x"\nami_password = "y"\n[notice]\nprompts_dir = "{REPO}/sounds"\n'
                   + RULES + extra)
    return cfg


def test_policy_explain_names_the_rule_and_why(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path)
    result = run(cfg, "policy", "explain", "--caller", "+4930123", "--did", "8001", "--queue", "trading")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "call: caller '+4930123'  did '8001'  context ''  extension ''  queue 'trading'" in out
    assert "rule legal-never (caller side; caller=+49*): matches; caller side says never" in out
    assert "decided by the callee side: force (both sides override; the callee side (later in the call) wins)" in out
    assert "force: consent mode opt-out becomes notice" in out
    assert "outcome: RECORDED after the notice (notice mode, en/notice)" in out
    assert "stereo true" in out

    result = run(cfg, "policy", "explain", "--caller", "5551", "--did", "8001", "--arg", "mode=opt-in",
                 "--arg", "colour=red")
    out = result.stdout
    assert result.returncode == 0
    assert "QA sampling (rule support.sample_percent): 20% of these calls are recorded" in out
    assert "warning: argument 'colour' ignored" in out
    assert "warning: prompt 'support-greeting' is not installed" in out

    result = run(cfg, "policy", "explain", "--caller", "+4930", "--did", "100")
    assert "outcome: NOT RECORDED; no notice is played; CALLREC_CONSENT=not_asked" in result.stdout
    assert "CALLREC_REASON=never: rule legal-never (caller side)" in result.stdout


def test_bad_policy_config_is_one_line(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, '\n[[policy.rules]]\nname = "x"\ndid = "1"\nrecord = "always"\n')
    result = run(cfg, "policy", "explain", "--did", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "callrec: config error: policy.rules[3].record: expected one of force, yes, dontcare, no, never, "
        "got 'always'"]


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
