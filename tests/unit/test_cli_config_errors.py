"""`callrec` with a broken or missing config: one clear line and exit 2, before anything is reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import run_cli as run


@pytest.mark.parametrize("command", ["check", "serve", "migrate", "calls"])
def test_broken_config_is_one_clear_line(tmp_path: Path, command: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[asterisk]\nari_password = "x"\nami_password = "y"\nami_port = "fifty"\n')
    result = run(cfg, command)
    assert result.returncode == 2
    assert result.stderr.strip() == "callrec: config error: asterisk.ami_port: expected a whole number, got 'fifty'"
    result = run(tmp_path / "missing.toml", command)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such file" in result.stderr
