"""What `pip install callrec` puts on a PBX: the code, the migrations, the prompts, the dialplan."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from support import REPO


def test_wheel_carries_prompts_dialplan_and_migrations(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("callrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n for n in names if ".data/data/share/callrec/" in n).split("share/callrec/")[0] + "share/callrec/"
    for prompt in REPO.glob("sounds/*/*.wav"):
        assert f"{data}sounds/{prompt.parent.name}/{prompt.name}" in names, prompt
    assert f"{data}dialplan/callrec.conf" in names
    assert f"{data}asterisk.conf.example" in names
    assert f"{data}sql/app_role.sql" in names  # the daemon's least-privilege database grants
    assert f"{data}systemd/callrec.service" in names
    assert "callrec/store/migrations/001_calls.sql" in names
    assert not any(n.startswith(("tests/", "tools/")) for n in names)


def test_sounds_install_finds_the_installed_prompts(tmp_path: Path, monkeypatch) -> None:
    from callrec.cli import sounds as cli

    share = tmp_path / "prefix" / "share" / "callrec" / "sounds" / "en"
    share.mkdir(parents=True)
    (share / "notice.wav").write_bytes(b"RIFF")
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "callrec" / "cli" / "sounds.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert cli.shipped_sounds() == share.parent
