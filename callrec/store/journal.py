"""The call-log journal: changes not yet written to PostgreSQL, kept on local disk.

The writer (``calllog.CallLogWriter``) appends every change it is given, in batches, each batch
fsync'd, to ``<database.journal_dir>/calllog.journal``.  What a stopped, killed or restarted daemon
had not written is replayed from it at the next start, and written when the database answers.
Replaying is idempotent: a call's first write is an upsert on its uuid, later ones set columns to
values (never increments), and parties are upserted on (call, seq); so a change written before a
crash and replayed after it lands once.  When everything in it is in the database the file is
emptied (a checkpoint).

One JSON object per line: ``{"c": <call id>, "f": {<column>: <value>, ...}}``; a time is
``{"$t": "<ISO 8601>"}``.  A line cut short by a crash (the last one) is dropped at open.  Bounded:
past ``max_bytes`` the file is compacted into one line per pending call; if that is still too big,
nothing more is journaled (logged once) until a checkpoint empties it.

Blocking file work: the writer runs these methods in a thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("callrec.calllog")

FILE = "calllog.journal"
LOCK = "lock"


class JournalError(Exception):
    """The journal cannot be used (folder not writable, another daemon holds it): one line."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    raise TypeError(f"not journaled: {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$t" in obj:
        return datetime.fromisoformat(obj["$t"])
    return obj


def encode(call_id: str, fields: dict[str, Any]) -> bytes:
    return (json.dumps({"c": call_id, "f": fields}, default=_default, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


def merge_into(state: dict[str, dict[str, Any]], call_id: str, fields: dict[str, Any]) -> None:
    state.setdefault(call_id, {}).update(fields)


def read(path: Path) -> tuple[dict[str, dict[str, Any]], int, int]:
    """(the merged pending changes per call, the length of the good part, lines dropped)."""
    state: dict[str, dict[str, Any]] = {}
    good = dropped = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state, 0, 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            dropped += 1  # cut short by a crash mid-write: never fsync'd, never acknowledged
            break
        try:
            entry = json.loads(data[pos:end], object_hook=_hook)
            merge_into(state, str(entry["c"]), dict(entry["f"]))
        except (ValueError, KeyError, TypeError):
            dropped += 1
        pos = good = end + 1
    return state, good, dropped


class Journal:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.path = folder / FILE
        self.max_bytes = max_bytes
        self.size = 0
        self.full = False  # compacted and still too big: not journaling until the next checkpoint
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def open(self) -> dict[str, dict[str, Any]]:
        """Create the folder (mode 700), lock it (one daemon per journal), read what an earlier run
        left and open for appending.  Returns the changes to replay, merged per call."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"database.journal_dir: {self.folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise JournalError(f"database.journal_dir: {self.folder} is in use by another callrec process "
                               "(one daemon per journal)") from None
        state, good, dropped = read(self.path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.ftruncate(self._fd, good)  # drop a torn last line before appending after it
            os.lseek(self._fd, 0, os.SEEK_END)
            os.fsync(self._fd)
            self._fsync_folder()  # the file's name is durable too, not only its contents
        except OSError as exc:
            raise JournalError(f"database.journal_dir: {self.path}: {exc.strerror or exc}") from None
        self.size = good
        if dropped:
            log.warning("call log journal: %d unreadable line(s) dropped (a write cut short by a crash)", dropped)
        return state

    def append(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Append changes and fsync; returns the bytes written."""
        assert self._fd is not None
        data = b"".join(encode(call_id, fields) for call_id, fields in items)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self.size += len(data)
        return len(data)

    def compact(self, state: dict[str, dict[str, Any]]) -> None:
        """Replace the file by one line per pending call (``state``: everything not yet written),
        atomically: a new file, fsync'd, renamed over the old one."""
        assert self._fd is not None
        tmp = self.path.with_name(FILE + ".tmp")
        data = b"".join(encode(call_id, fields) for call_id, fields in state.items())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)  # the state of a few thousand calls at most: one write
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fsync_folder()
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.size = len(data)

    def clear(self) -> None:
        """Everything in the journal is in the database: empty it."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.fsync(self._fd)
        self.size = 0
        self.full = False

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def _fsync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
