"""Recording files: the one rule for a path inside the recordings folder, the one sha256 helper,
the file thread pool, and finishing a recording (wait until Asterisk has closed it, measure it).

Asterisk writes the WAV sizes into the header only when it closes the file, so a header whose
sizes agree with the file length means "closed".  All file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import math
import os
import stat
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar

import numpy as np
import soundfile

from callrec.recording.status import RecordingStatus

BLOCK_FRAMES = 8000 * 10
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing: memory stays flat for any file size

T = TypeVar("T")

# File work (polling, hashing, reading audio, deleting) gets its own small pool, so a burst of
# hang-ups never queues ahead of the default executor other parts of the process rely on.
# Deletions are awaited one at a time, so at most one waits ahead of a finalization.
_FILES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="callrec-files")


async def in_files(func: Callable[..., T], *args: Any) -> T:
    """Run blocking file work in the recordings thread pool."""
    return await asyncio.get_running_loop().run_in_executor(_FILES, func, *args)


class OutsideFolder(ValueError):
    """A recording path that is not a file inside the recordings folder."""


def recording_path(local_dir: Path, rel: str | None) -> Path:
    """The file a row's ``recording_path`` names, inside ``local_dir`` (the daemon's view of the
    recordings folder).  Raises OutsideFolder for an empty or absolute path, a ``..`` part, a NUL,
    or a path that leads out of the folder once symlinks are followed.

    The path returned is not resolved: unlinking it removes a link, never what the link points
    to; opening it reads a file that is inside the folder.  Blocking (it resolves symlinks).
    """
    if not rel:
        raise OutsideFolder("no recording path")
    parts = PurePosixPath(rel)
    if "\x00" in rel or parts.is_absolute() or ".." in parts.parts or not parts.parts:
        raise OutsideFolder(f"{rel[:200]!r}: not a path inside the recordings folder")
    path = local_dir / parts
    try:
        inside = path.resolve().is_relative_to(local_dir.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise OutsideFolder(f"{rel[:200]!r}: leads outside the recordings folder")
    return path


class SymlinkedRecording(OutsideFolder):
    """A recording path that is (or runs through) a symbolic link: never read through it, even
    when the link stays inside the folder (it could serve another call's audio under this row)."""


def readable_recording(local_dir: Path, rel: str | None) -> Path:
    """``recording_path`` for reading: also raises SymlinkedRecording when the file or any folder
    between ``local_dir`` and it is a symbolic link.  Blocking."""
    path = recording_path(local_dir, rel)
    current = local_dir
    for part in PurePosixPath(rel or "").parts:
        current = current / part
        if current.is_symlink():
            raise SymlinkedRecording(f"{(rel or '')[:200]!r}: is a symbolic link; refused")
    return path


def open_recording(local_dir: Path, rel: str | None) -> IO[bytes]:
    """Open a row's recording for reading (the one way to read one): ``readable_recording``, then
    opened with O_NOFOLLOW so a link planted between the check and the open is refused too
    (SymlinkedRecording).  FileNotFoundError when it is not there.  Blocking."""
    path = readable_recording(local_dir, rel)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkedRecording(f"{(rel or '')[:200]!r}: is a symbolic link; refused") from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return fh


def hash_stream(src: IO[bytes], copy_to: IO[bytes] | None = None) -> tuple[str, int]:
    """sha256 (hex) and size of everything left in ``src``, read in blocks; each block also
    written to ``copy_to`` when given (copy and hash in one read)."""
    sha = hashlib.sha256()
    size = 0
    for block in iter(lambda: src.read(HASH_BLOCK), b""):
        sha.update(block)
        size += len(block)
        if copy_to is not None:
            copy_to.write(block)
    return sha.hexdigest(), size


def sha256_recording(local_dir: Path, rel: str | None) -> tuple[str, int]:
    """sha256 and size of a row's recording, read through ``open_recording``.  Blocking."""
    with open_recording(local_dir, rel) as fh:
        return hash_stream(fh)


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, streamed.  Blocking."""
    with open(path, "rb") as fh:
        return hash_stream(fh)


@dataclass(frozen=True)
class RecordingFacts:
    status: RecordingStatus
    facts: dict[str, Any]


def wav_is_closed(path: Path) -> bool:
    """True when the RIFF and data chunk sizes in the header match the file's length."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            size = fh.seek(0, 2)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    if struct.unpack_from("<I", head, 4)[0] != size - 8:
        return False
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"data":
            return pos + 8 + length == size
        pos += 8 + length + (length & 1)
    return False


def measure(path: Path) -> dict[str, Any]:
    """Duration, size, RMS and peak level (dBFS) and sha256 of a finished WAV."""
    scan = scan_pcm16(path)
    if scan is not None:
        return scan.facts()
    return _measure_open(path, soundfile.SoundFile(str(path)))


@dataclass
class Pcm16Scan:
    """What one read of a 16-bit PCM WAV gives: its sha256 and size, and per channel the sum of
    squared samples and the peak (integers: exact)."""

    sha256: str
    size: int
    rate: int
    channels: int
    frames: int
    sum_sq: list[int]
    peak: list[int]

    def facts(self) -> dict[str, Any]:
        """The facts ``measure`` gives (levels relative to full scale, 32768, as libsndfile reads them)."""
        samples = self.frames * self.channels
        rms = math.sqrt(sum(self.sum_sq) / samples) / FULL_SCALE if samples else 0.0
        return {
            "recording_duration": round(self.frames / self.rate, 3) if self.rate else 0.0,
            "recording_bytes": self.size,
            "recording_rms_dbfs": dbfs(rms),
            "recording_peak_dbfs": dbfs(max(self.peak, default=0) / FULL_SCALE),
            "recording_sha256": self.sha256,
        }


FULL_SCALE = 32768.0
SCAN_BLOCK = 1 << 22  # 4 MiB (an even number of bytes): few reads, few numpy calls, memory still flat


def _pcm16_layout(head: bytes, size: int) -> tuple[int, int, int, int] | None:
    """(rate, channels, data offset, data length) of a closed plain 16-bit PCM WAV, else None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 24 <= len(head):
            fmt = struct.unpack_from("<HHIIHH", head, pos + 8)
        elif chunk == b"data":
            if fmt is None or fmt[0] != 1 or fmt[5] != 16 or not fmt[1] or pos + 8 + length > size:
                return None  # not plain PCM-16 (or cut short): libsndfile reads it
            return fmt[2], fmt[1], pos + 8, length
        pos += 8 + length + (length & 1)
    return None


def scan_pcm16(path: Path) -> Pcm16Scan | None:
    """Hash and level a plain 16-bit PCM WAV in one read of the file: large blocks read into one
    buffer, the samples summed as integers from a view of it (no copy of the bytes read).  None
    for any other file.  Blocking."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(4096)
        layout = _pcm16_layout(head, size)
        if layout is None:
            return None
        rate, channels, offset, length = layout
        frame_bytes = 2 * channels
        length -= length % frame_bytes  # a torn last frame is not a sample
        sha = hashlib.sha256(head[:offset])
        fh.seek(offset)  # blocks from the first sample on: each block holds whole frames
        buf = bytearray(SCAN_BLOCK - SCAN_BLOCK % frame_bytes)
        view = memoryview(buf)
        sum_sq, peak = [0] * channels, [0] * channels
        pos, left = offset, length
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            sha.update(view[:n])
            pos += n
            take = min(n, left) // 2
            left -= take * 2
            if take:
                samples = np.frombuffer(buf, dtype="<i2", count=take).reshape(-1, channels)
                for ch in range(channels):
                    column = samples[:, ch]
                    wide = column.astype(np.int32)  # a square of int16 fits in int32; summed in int64
                    sum_sq[ch] += int((wide * wide).sum(dtype=np.int64))
                    peak[ch] = max(peak[ch], -int(column.min()), int(column.max()))
    return Pcm16Scan(sha.hexdigest(), pos, rate, channels, length // frame_bytes, sum_sq, peak)


def _measure_open(path: Path, snd: soundfile.SoundFile, skip_bytes: int = 0) -> dict[str, Any]:
    digest, _ = sha256_file(path)
    total_sq = 0.0
    peak = 0.0
    frames = 0
    with snd:
        rate = snd.samplerate
        channels = snd.channels
        if skip_bytes:
            snd.seek(skip_bytes // (2 * channels))
        for block in snd.blocks(blocksize=BLOCK_FRAMES, dtype="float64", always_2d=True):
            if block.size:
                total_sq += float(np.square(block).sum())
                peak = max(peak, float(np.abs(block).max()))
                frames += block.shape[0]
    samples = frames * channels
    rms = math.sqrt(total_sq / samples) if samples else 0.0
    return {
        "recording_duration": round(frames / rate, 3) if rate else 0.0,
        "recording_bytes": path.stat().st_size,
        "recording_rms_dbfs": dbfs(rms),
        "recording_peak_dbfs": dbfs(peak),
        "recording_sha256": digest,
    }


def dbfs(value: float) -> float:
    """A level (0..1 of full scale) in dBFS; silence is -120."""
    return round(20 * math.log10(value), 2) if value > 0 else -120.0


async def finalize(path: Path, timeout: float, poll: float = 0.2) -> RecordingFacts:
    """Wait for Asterisk to close ``path`` (up to ``timeout``), then measure it.

    A file that never appears is MISSING.  A closed file with no audio is EMPTY and is removed, so
    ops never find zero-length "recordings".  A file Asterisk never closed (it crashed, or is still
    writing) is kept and measured from its raw audio: UNCLOSED, never deleted.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # One hop to the file pool per look (closed? then measured at once), not one per step.
        kind, found = await in_files(_try_finish, path, loop.time() >= deadline)
        if kind != "open":
            break
        await asyncio.sleep(poll)
    if kind == "missing":
        return RecordingFacts(RecordingStatus.MISSING, {"recording_error": "Asterisk wrote no file"})
    if kind == "failed":
        return RecordingFacts(RecordingStatus.FAILED, {"recording_error": f"unreadable recording: {found}"[:500]})
    facts: dict[str, Any] = found
    closed = kind == "closed"
    if not closed:
        facts["recording_error"] = (f"Asterisk did not close the file within {timeout:g}s; "
                                    "measured from its raw audio, file kept")
        return RecordingFacts(RecordingStatus.UNCLOSED, facts)
    if facts["recording_duration"] == 0:
        await in_files(path.unlink, True)
        return RecordingFacts(RecordingStatus.EMPTY, {
            "recording_error": "no audio was recorded; the empty file was removed",
            "recording_duration": 0.0, "recording_bytes": 0,
        })
    return RecordingFacts(RecordingStatus.READY, facts)


def _try_finish(path: Path, last: bool) -> tuple[str, Any]:
    """One look at a recording: ("closed", facts) once Asterisk has closed it; ("open", None) while it
    has not, or on the ``last`` look ("missing", None) or ("unclosed", facts from its raw audio);
    ("failed", the error) when it cannot be read.  Blocking."""
    closed = wav_is_closed(path)
    if not closed:
        if not last:
            return "open", None
        if not path.exists():
            return "missing", None
    try:
        return ("closed", measure(path)) if closed else ("unclosed", measure_unclosed(path))
    except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as exc:
        return "failed", exc


def measure_unclosed(path: Path) -> dict[str, Any]:
    """A WAV whose header sizes were never written: read the samples after the 44-byte header
    Asterisk writes (8 kHz, 16-bit, mono for .wav)."""
    with open(path, "rb") as fh:
        head = fh.read(44)
    if len(head) < 44 or head[:4] != b"RIFF":
        raise ValueError("no WAV header")
    channels, rate = struct.unpack_from("<HI", head, 22)
    raw = soundfile.SoundFile(str(path), mode="r", format="RAW", subtype="PCM_16", samplerate=rate,
                              channels=channels or 1, endian="LITTLE")
    return _measure_open(path, raw, skip_bytes=44)

