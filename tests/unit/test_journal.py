"""The call-log journal (issue 10 item 13) on its own: what is appended is replayed merged per call,
a line cut short by a crash is dropped, compaction keeps the pending state, one daemon per folder,
and the writer journals every change and empties the journal once everything is written."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callrec.store.calllog import CallLogWriter
from callrec.store.journal import FILE, Journal, JournalError, read

T = datetime(2026, 12, 5, 10, 0, 1, 250000, tzinfo=UTC)


def test_appended_changes_replay_merged_with_their_types(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", 1024 * 1024)
    assert j.open() == {}
    assert oct((tmp_path / "j").stat().st_mode & 0o777) == "0o700"
    j.append([("a", {"door": "ari", "started_at": T, "warnings": ["x\n\x00y"], "notice_completed": True}),
              ("b", {"state": "new"})])
    j.append([("a", {"state": "ended", "ended_at": T, "recording_bytes": 12, "keys_at": [T, T]})])
    j.close()
    state = Journal(tmp_path / "j", 1024 * 1024).open()
    assert state == {"a": {"door": "ari", "started_at": T, "warnings": ["x\n\x00y"], "notice_completed": True,
                           "state": "ended", "ended_at": T, "recording_bytes": 12, "keys_at": [T, T]},
                     "b": {"state": "new"}}
    assert isinstance(state["a"]["ended_at"], datetime) and state["a"]["ended_at"].tzinfo is not None
    assert all(isinstance(t, datetime) for t in state["a"]["keys_at"])  # each key's time, as written


def test_a_torn_last_line_is_dropped_and_appending_goes_on_after_the_good_part(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path, 1024 * 1024)
    j.open()
    j.append([("a", {"state": "new"})])
    j.close()
    with open(tmp_path / FILE, "ab") as fh:
        fh.write(b'{"c":"a","f":{"state":"en')  # a crash mid-write
    j = Journal(tmp_path, 1024 * 1024)
    assert j.open() == {"a": {"state": "new"}}
    assert "1 unreadable line(s) dropped" in caplog.text
    j.append([("a", {"state": "ended"})])
    j.close()
    assert read(tmp_path / FILE)[0] == {"a": {"state": "ended"}}


def test_one_daemon_per_journal(tmp_path: Path) -> None:
    first = Journal(tmp_path, 1024 * 1024)
    first.open()
    with pytest.raises(JournalError, match="in use by another callrec process"):
        Journal(tmp_path, 1024 * 1024).open()
    first.close()
    Journal(tmp_path, 1024 * 1024).open()


def test_an_unusable_folder_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match=r"^database\.journal_dir: .*file/j"):
        Journal(tmp_path / "file" / "j", 1024 * 1024).open()


def test_compaction_keeps_one_line_per_call(tmp_path: Path) -> None:
    j = Journal(tmp_path, 1024 * 1024)
    j.open()
    for i in range(50):
        j.append([("a", {"keys_pressed": str(i)})])
    before = j.size
    j.compact({"a": {"keys_pressed": "49"}})
    assert j.size < before / 10
    j.append([("b", {"state": "new"})])
    j.close()
    assert read(tmp_path / FILE)[0] == {"a": {"keys_pressed": "49"}, "b": {"state": "new"}}


class NoDatabase:
    """A pool whose database is away: acquire() fails like a refused connection."""

    def acquire(self) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")


async def test_the_writer_journals_every_change_while_the_database_is_away(tmp_path: Path) -> None:
    j = Journal(tmp_path, 1024 * 1024)
    j.open()
    w = CallLogWriter(NoDatabase(), retry_delay=0.01, journal=j)  # type: ignore[arg-type]
    w.start()
    w.update("a", {"state": "new"})
    w.update("a", {"state": "ended", "ended_at": T})
    assert await w.journal_flush(5)
    assert w.journaled == 2
    assert read(tmp_path / FILE)[0] == {"a": {"state": "ended", "ended_at": T}}
    await w.close(timeout=1)  # the database is away: the journal holds it, no 1 s wait for nothing
    assert read(tmp_path / FILE)[0] == {"a": {"state": "ended", "ended_at": T}}


async def test_a_full_journal_says_so_once_and_changes_stay_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path, 1024 * 1024)
    j.open()
    w = CallLogWriter(NoDatabase(), retry_delay=0.01, journal=j)  # type: ignore[arg-type]
    w.start()
    big = "x" * 4000
    for i in range(400):  # 400 calls x 4 KB: more than 1 MiB even compacted
        w.update(f"call-{i}", {"caller_name": big})
        if i % 50 == 0:
            await w.journal_flush(5)
    assert await w.journal_flush(5)
    full = [r for r in caplog.records if "call log journal full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.ERROR
    assert j.full and len(w.pending_call_ids()) == 400
    await w.close(timeout=0.1)
    await asyncio.sleep(0)
