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


@pytest.mark.parametrize("toml, message", [
    ('[asterisk]\nari_password = "x"\nami_password = "y"\nami_port = 15038.5\n',
     "asterisk.ami_port: expected a whole number, got 15038.5"),
    ('[asterisk]\nari_password = "x"\nami_password = "y"\n[retention]\naudio_days = 0.9\n',
     "retention.audio_days: expected a whole number, got 0.9"),
])
def test_a_decimal_in_a_whole_number_key_fails_check(tmp_path: Path, toml: str, message: str) -> None:
    """Before: ami_port 15038.5 passed `check` as 15038, and audio_days 0.9 became 0 (keep forever)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    result = run(cfg, "check")
    assert result.returncode == 2
    assert result.stderr.strip() == f"callrec: config error: {message}"


@pytest.mark.parametrize("command", ["check", "serve"])
def test_a_directory_or_a_non_utf8_file_as_the_config_is_one_line(tmp_path: Path, command: str) -> None:
    """A directory was already one line (exit 2) after the CLI refactor; a non-UTF-8 file gave a
    UnicodeDecodeError traceback and exit 1."""
    result = run(tmp_path, command)
    assert (result.returncode, result.stderr) == (2, f"callrec: config error: {tmp_path}: Is a directory\n")
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('[asterisk]\nari_password = "geheim-\u00e4"\nami_password = "y"\n'.encode("latin-1"))
    result = run(cfg, command)
    assert (result.returncode, result.stderr) == (
        2, f"callrec: config error: {cfg}: not UTF-8 text (byte 34); save the file as UTF-8\n")
    assert "geheim" not in result.stderr  # the bytes around it may be a password
