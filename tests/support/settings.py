"""The one way tests build callrec settings, and the one set of placeholder secrets."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox import SandboxInfo

from callrec.config.settings import Settings, parse_settings

# Placeholder Asterisk secrets for tests that never reach Asterisk, as the environment passes them.
SECRETS: dict[str, str] = {"CALLREC_ASTERISK_ARI_PASSWORD": "a", "CALLREC_ASTERISK_AMI_PASSWORD": "b"}
# Where Asterisk writes the recordings (the sandbox's path; any absolute path for the others).
RECORDINGS_DIR = "/var/spool/asterisk/callrec"


def secrets_section() -> dict[str, str]:
    """SECRETS as a config file's [asterisk] keys (for a `callrec` process that reads its file)."""
    return {name.removeprefix("CALLREC_ASTERISK_").lower(): value for name, value in SECRETS.items()}


def raw_settings(sandbox: SandboxInfo | None = None, dsn: str | None = None, /,
                 **sections: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings as a config file holds them; ``sections`` add or override keys per section.

    With ``sandbox``: everything to reach the sandbox Asterisk (a daemon runs).  Without: the
    placeholder secrets (nothing connects to Asterisk).
    """
    raw: dict[str, dict[str, Any]]
    if sandbox is not None:
        raw = {
            "asterisk": {
                "ari_url": sandbox.ari_url, "ari_user": sandbox.ari_user, "ari_password": sandbox.ari_password,
                "ami_host": sandbox.ami_host, "ami_port": sandbox.ami_port, "ami_user": sandbox.ami_user,
                "ami_password": sandbox.ami_password,
            },
            "recordings": {"dir": sandbox.recordings_dir, "local_dir": str(sandbox.local_recordings_dir),
                           "finalize_timeout": 10},
            "notice": {"prompts_dir": sandbox.prompts_dir, "local_prompts_dir": str(sandbox.local_prompts_dir),
                       "decision_window": 1.5},
            "log": {"level": "debug"},
            # The ops API stays off unless a test turns it on (on a port of its own).
            "http": {"enabled": False},
            # A free port per daemon: tests run side by side (and two daemons in one test).
            "agi": {"listen": "127.0.0.1:0"},
        }
    else:
        raw = {"asterisk": secrets_section(), "recordings": {"dir": RECORDINGS_DIR}}
    if dsn is not None:
        # A journal of its own per daemon: tests and parallel runs never share one.
        raw["database"] = {"dsn": dsn, "journal_dir": tempfile.mkdtemp(prefix="callrec-journal-")}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def make_settings(sandbox: SandboxInfo | None = None, dsn: str | None = None, /,
                  **sections: Mapping[str, Any]) -> Settings:
    """Parsed settings (see ``raw_settings``), e.g. ``make_settings(asterisk, database, http={...})`` or
    ``make_settings(None, dsn, recordings={"local_dir": str(tmp_path)})``."""
    return parse_settings(raw_settings(sandbox, dsn, **sections), {})


def local_recordings(path: Path) -> dict[str, str]:
    """The [recordings] keys of a test whose recordings live in ``path`` (no Asterisk writes them)."""
    return {"dir": RECORDINGS_DIR, "local_dir": str(path)}
