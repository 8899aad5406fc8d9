"""Running the `callrec` command as an admin does: a real process with a config file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import REPO
from support.settings import secrets_section

CALLREC = [sys.executable, "-m", "callrec"]


def run_cli(config: Path, *args: str, input: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`callrec -c <config> <args>`; ``env`` adds environment variables (secrets, overrides)."""
    return subprocess.run([*CALLREC, "-c", str(config), *args], capture_output=True, text=True, timeout=timeout,
                          input=input, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


# A policy an admin might write: a never rule on the caller side, force on a queue, QA sampling.
POLICY_RULES = """
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


def offline_config(tmp_path: Path, extra: str = "") -> Path:
    """A config with POLICY_RULES and no reachable Asterisk or database (placeholder secrets)."""
    secrets = "".join(f'{key} = "{value}"\n' for key, value in secrets_section().items())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[asterisk]\n{secrets}[notice]\nprompts_dir = "{REPO}/sounds"\n' + POLICY_RULES + extra)
    return cfg
