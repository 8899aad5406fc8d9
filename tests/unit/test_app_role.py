"""docs/sql/app_role.sql grants the daemon's least-privilege role something on every table a migration creates:
a table left out works in the tests that run as the owner and fails for a real deployment (permission denied)."""

from __future__ import annotations

import re

from support import REPO

MIGRATIONS = REPO / "callrec" / "store" / "migrations"
GRANTS = REPO / "docs" / "sql" / "app_role.sql"


def created_tables() -> set[str]:
    found: set[str] = set()
    for path in MIGRATIONS.glob("*.sql"):
        found |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", path.read_text(encoding="utf-8")))
    return found


def granted_tables(privilege: str = "") -> set[str]:
    """Tables named in a GRANT line (with ``privilege`` in its list, when given)."""
    found: set[str] = set()
    for line in GRANTS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"GRANT (.+?) ON (?!SEQUENCE)(.+?) TO ", line)
        if m and privilege in m.group(1):
            found |= {name.strip() for name in m.group(2).split(",")}
    return found


def test_every_table_is_granted_to_the_app_role() -> None:
    tables = created_tables()
    assert {"calls", "audit_log", "saved_searches", "call_waveforms"} <= tables  # the reader reads
    assert sorted(tables - granted_tables()) == []


def test_every_serial_column_the_app_inserts_into_has_its_sequence_granted() -> None:
    inserts = granted_tables("INSERT")
    serials = set()
    for path in MIGRATIONS.glob("*.sql"):
        for table, body in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \((.*?)\n\);", path.read_text("utf-8"),
                                      re.S):
            if table in inserts:  # users and api_tokens are written by the owner (the CLI) only
                serials |= {f"{table}_{c}_seq" for c in re.findall(r"^\s*(\w+)\s+(?:big)?serial\b", body, re.M)}
    text = GRANTS.read_text(encoding="utf-8")
    assert "saved_searches_id_seq" in serials
    assert sorted(s for s in serials if f"SEQUENCE {s}" not in text) == []
