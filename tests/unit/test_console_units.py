"""The console without a browser or a database: its strings in both languages, the language choice,
the wheel that carries it, and the test bench's own promise that a missing browser fails loudly.
The console in a real Chromium is tested in tests/e2e/test_console.py."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import REPO
from support.console_browser import chromium

from callrec.web.console import STATIC_FILES, pick_language

STATIC = REPO / "callrec" / "web" / "console" / "static"


def test_every_string_exists_in_both_languages() -> None:
    source = (STATIC / "i18n.js").read_text("utf-8")
    en_part, ru_part = source.split("\n  ru: {")
    en = set(re.findall(r'^\s+"([^"]+)":', en_part, re.M))
    ru = set(re.findall(r'^\s+"([^"]+)":', ru_part, re.M))
    assert en and en == ru, (en ^ ru)
    page = (STATIC / "index.html").read_text("utf-8")
    used = set(re.findall(r'data-i18n(?:-aria)?="([^"]+)"', page))
    script = (STATIC / "console.js").read_text("utf-8")
    used |= set(re.findall(r'\bt\("([a-z_]+\.[a-z_.-]+)"', script))
    assert used - en == set()


def test_language_from_cookie_then_accept_language() -> None:
    assert pick_language(None, None) == "en"
    assert pick_language(None, "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7") == "ru"
    assert pick_language(None, "de-DE, en;q=0.5, ru;q=0.6") == "ru"
    assert pick_language(None, "fr, de") == "en"
    assert pick_language(None, "en, ru") == "en"
    assert pick_language(None, "ru;q=0, en;q=0.1") == "en"
    assert pick_language("en", "ru") == "en"
    assert pick_language("xx", "ru") == "ru"
    assert pick_language(None, "ru;q=abc, ;;;, " + "x" * 10_000) == "en"


async def test_a_browser_that_cannot_start_fails_the_test_loudly(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("CALLREC_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(pytest.fail.Exception, match="no Chromium"):
        async with chromium():
            pass
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CALLREC_CHROMIUM", str(broken))
    with pytest.raises(pytest.fail.Exception, match="did not start"):
        async with chromium():
            pass


def test_the_wheel_carries_the_console(tmp_path: Path) -> None:
    repo = REPO
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("callrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*STATIC_FILES, "index.html"):
        assert f"callrec/web/console/static/{name}" in names, name
