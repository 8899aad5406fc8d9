"""``Storage``: the one way to read, check and delete a recording's audio, wherever it is (docs/storage.md).

A recording is found in this order: the recordings folder (``recording_path``'s rule: inside the folder, no
symbolic link), then, with ``[storage] kind = "s3"``, the bucket.  Either may hold it encrypted (``crypto``):
readers always get the plain audio, and its sha256 is the one in the call log.

Blocking methods (``open``, ``hash``, ``delete``, ``seal``, ``upload``...) run in a thread: the async wrappers
do that (the recordings file pool for local work, the default executor for the bucket, so an unreachable
bucket never holds up a finalization).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from callrec.config.storage import StorageSettings
from callrec.recording.files import (
    HASH_BLOCK,
    OutsideFolder,
    SymlinkedRecording,
    open_recording,
    readable_recording,
    recording_path,
)
from callrec.storage import crypto
from callrec.storage.crypto import BadCiphertext, KeyFile, MasterKey, WrongMasterKey
from callrec.storage.s3 import Bucket, ObjectMissing, StorageUnavailable

__all__ = ["Blob", "KeyProblem", "Storage", "load_master_key"]


class KeyProblem(Exception):
    """The master key cannot be read (one line naming the setting)."""


def load_master_key(s: StorageSettings, environ: Mapping[str, str] | None = None) -> MasterKey | None:
    """The configured master key, or None when none is configured.  KeyProblem when it cannot be read."""
    environ = os.environ if environ is None else environ
    try:
        if s.master_key_file:
            try:
                data = Path(s.master_key_file).read_bytes()
            except OSError as exc:
                raise KeyProblem(f"storage.master_key_file: cannot read {s.master_key_file}: "
                                 f"{exc.strerror or exc}") from None
            return crypto.parse_master_key(data, f"storage.master_key_file {s.master_key_file}")
        if s.master_key_env:
            if not environ.get(s.master_key_env):
                raise KeyProblem(f"storage.master_key_env: the environment variable {s.master_key_env} is not set")
            return crypto.parse_master_key(environ[s.master_key_env], f"storage.master_key_env {s.master_key_env}")
    except ValueError as exc:
        raise KeyProblem(str(exc)) from None
    return None


@dataclass
class Blob:
    """One recording opened for reading: its plain size, and its plain bytes by range."""
    rel: str
    size: int
    where: str  # "local" or "s3"
    encrypted: bool
    _storage: Storage
    _fh: IO[bytes] | None = None  # local
    _header: bytes = b""
    _data_key: bytes = b""

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """The plain bytes [start, end] (inclusive) in blocks.  Blocking (each ``next``)."""
        if end < start or self.size == 0:
            return iter(())
        end = min(end, self.size - 1)
        if self.encrypted:
            chunk, _ = crypto.parse_header(self._header, self.rel)
            first, _, lo, hi = crypto.chunk_span(start, end, chunk, self.size)
            raw = self._raw(lo, hi)
            return crypto.decrypt_chunks(raw, self._header, self._data_key, first, start, end, self.rel)
        return self._raw(start, end)

    def _raw(self, lo: int, hi: int) -> Iterator[bytes]:
        if self._fh is not None:
            return _file_range(self._fh, lo, hi)
        blocks, _ = self._storage.bucket.read_range(self.rel, lo, hi)
        return blocks

    def reader(self) -> _BlobReader:
        """The whole plain audio as a file-like object with ``read(n)`` (for copy-and-hash helpers)."""
        return _BlobReader(self.iter_range(0, self.size - 1))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _BlobReader:
    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            block = next(self._blocks, b"")
            if not block:
                break
            self._buf += block
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _file_range(fh: IO[bytes], lo: int, hi: int) -> Iterator[bytes]:
    fh.seek(lo)
    left = hi - lo + 1
    while left > 0:
        block = fh.read(min(HASH_BLOCK, left))
        if not block:
            return
        left -= len(block)
        yield block


class Storage:
    """Where recordings live: the recordings folder, and the bucket when ``kind = "s3"``."""

    def __init__(self, local_dir: Path, settings: StorageSettings, environ: Mapping[str, str] | None = None, *,
                 master: MasterKey | None = None) -> None:
        """KeyProblem when a configured master key cannot be read (``master``: one already read)."""
        self.local_dir = local_dir
        self.settings = settings
        self.environ = environ
        self.master = master if master is not None else load_master_key(settings, environ)
        self._bucket: Bucket | None = None

    @classmethod
    def of(cls, settings: Any, environ: Mapping[str, str] | None = None) -> Storage:
        """From the whole ``Settings``."""
        return cls(settings.recordings.local_path, settings.storage, environ)

    @property
    def remote(self) -> bool:
        return self.settings.remote

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            if not self.remote:
                raise StorageUnavailable('no bucket: storage.kind is "local"')
            self._bucket = Bucket(self.settings, self.environ)
        return self._bucket

    def _master(self, rel: str) -> MasterKey:
        if self.master is None:
            raise WrongMasterKey(f"{rel}: the recording is encrypted, but no master key is configured "
                                 "(storage.master_key_file or storage.master_key_env)")
        return self.master

    # -- reading ----------------------------------------------------------------------------------------------

    def open(self, rel: str) -> Blob:
        """Open a recording for reading: the local copy when there is one, else the object.  Raises OutsideFolder /
        SymlinkedRecording (a path the recordings folder's rule refuses), FileNotFoundError (nowhere),
        StorageUnavailable, WrongMasterKey, BadCiphertext.  Blocking."""
        try:
            fh = open_recording(self.local_dir, rel)
        except FileNotFoundError:
            if not self.remote:
                raise
            return self._open_remote(rel)
        try:
            head = fh.read(crypto.HEADER)
            size = os.fstat(fh.fileno()).st_size
            if not head.startswith(crypto.MAGIC):
                return Blob(rel, size, "local", False, self, fh)
            key = self._local_key(rel)
            chunk, plain = crypto.parse_header(head, rel)
            if size != crypto.encrypted_size(plain, chunk):
                raise BadCiphertext(f"{rel}: {size} bytes, but an encrypted recording of {plain} bytes has "
                                    f"{crypto.encrypted_size(plain, chunk)} (truncated or changed)")
            return Blob(rel, plain, "local", True, self, fh, head, key.unwrap(self._master(rel), rel))
        except BaseException:
            fh.close()
            raise

    def _local_key(self, rel: str) -> KeyFile:
        try:
            with open_recording(self.local_dir, rel + crypto.SIDECAR) as kf:
                return KeyFile.loads(kf.read(64 * 1024), rel)
        except FileNotFoundError:
            raise BadCiphertext(f"{rel}: encrypted, but its key file {rel}{crypto.SIDECAR} is missing") from None

    def _open_remote(self, rel: str) -> Blob:
        bucket = self.bucket
        try:
            blocks, total = bucket.read_range(rel, 0, crypto.HEADER - 1)
            head = b"".join(blocks)
        except StorageUnavailable as exc:
            if "InvalidRange" in str(exc) or "HTTP 416" in str(exc):  # an empty object
                return Blob(rel, 0, "s3", False, self)
            raise
        if not head.startswith(crypto.MAGIC):
            return Blob(rel, total, "s3", False, self)
        chunk, plain = crypto.parse_header(head, rel)
        if total != crypto.encrypted_size(plain, chunk):
            raise BadCiphertext(f"{bucket.where(rel)}: {total} bytes, but an encrypted recording of {plain} bytes "
                                f"has {crypto.encrypted_size(plain, chunk)} (truncated or changed)")
        try:
            key = KeyFile.loads(bucket.get(rel + crypto.SIDECAR), rel)
        except ObjectMissing:
            raise BadCiphertext(f"{bucket.where(rel)}: encrypted, but its key object is missing") from None
        return Blob(rel, plain, "s3", True, self, None, head, key.unwrap(self._master(rel), rel))

    def hash(self, rel: str) -> tuple[str, int]:
        """sha256 and size of the plain audio, wherever it is.  Blocking."""
        blob = self.open(rel)
        try:
            return _digest(blob.iter_range(0, blob.size - 1)), blob.size
        finally:
            blob.close()

    def hash_remote(self, rel: str) -> tuple[str, int]:
        """sha256 and size of the plain audio in the object (never the local copy).  Blocking."""
        blob = self._open_remote(rel)
        try:
            return _digest(blob.iter_range(0, blob.size - 1)), blob.size
        finally:
            blob.close()

    def plain_file(self, rel: str, scratch: Path) -> tuple[Path, str, bool]:
        """A file holding the plain audio, for a reader that needs a path (the transcription workers): the local
        file itself when it is stored plain, else a copy decrypted or downloaded into ``scratch`` (the caller
        removes it: the third value says it is a copy).  Also its sha256.  Blocking."""
        blob = self.open(rel)
        try:
            if blob.where == "local" and not blob.encrypted:
                return readable_recording(self.local_dir, rel), _digest(blob.iter_range(0, blob.size - 1)), False
            fd, name = tempfile.mkstemp(dir=scratch, suffix=Path(rel).suffix or ".wav")
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for block in blob.iter_range(0, blob.size - 1):
                    sha.update(block)
                    out.write(block)
            return Path(name), sha.hexdigest(), True
        finally:
            blob.close()

    def local_exists(self, rel: str) -> bool:
        try:
            return recording_path(self.local_dir, rel).is_file()
        except OutsideFolder:
            return False

    def local_size(self, rel: str) -> int:
        """Bytes the recording takes in the recordings folder (its stored form), 0 when not there.  Blocking."""
        try:
            return recording_path(self.local_dir, rel).lstat().st_size
        except (OutsideFolder, OSError):
            return 0

    # -- deleting ---------------------------------------------------------------------------------------------

    def delete(self, rel: str) -> bool:
        """Remove a recording everywhere it is (local file, object, their key files).  True when any of it was
        there.  A path outside the recordings folder touches nothing.  StorageUnavailable when the bucket cannot
        be reached: then nothing may claim the audio went.  Blocking."""
        existed = False
        for name in (rel, rel + crypto.SIDECAR):
            try:
                recording_path(self.local_dir, name).unlink()
                existed = True
            except OutsideFolder:
                return False
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        if self.remote:
            bucket = self.bucket
            if bucket.exists(rel):
                existed = True
            for name in (rel, rel + crypto.SIDECAR):
                bucket.delete(name)
        return existed

    def remove_local(self, rel: str) -> None:
        """Remove the local copy (and key file) of a recording that is verified in the bucket.  Blocking."""
        for name in (rel, rel + crypto.SIDECAR):
            try:
                recording_path(self.local_dir, name).unlink()
            except FileNotFoundError:
                pass

    # -- encrypting and uploading (the outbox's steps) ----------------------------------------------------------

    def seal(self, rel: str, sha256: str) -> bool:
        """Encrypt the local plain copy in place (a fresh data key, its key file beside it), after checking the
        plain audio is the one the call log names and that the sealed form reads back to it.  False when it was
        already encrypted.  Blocking."""
        master = self._master(rel)
        path = readable_recording(self.local_dir, rel)
        with open_recording(self.local_dir, rel) as fh:
            if fh.read(len(crypto.MAGIC)) == crypto.MAGIC:
                return False
            fh.seek(0)
            size = os.fstat(fh.fileno()).st_size
            data_key = os.urandom(32)
            tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".sealing",
                                              delete=False)
            try:
                sha = hashlib.sha256()

                def blocks() -> Iterator[bytes]:
                    for block in iter(lambda: fh.read(HASH_BLOCK), b""):
                        sha.update(block)
                        yield block
                with tmp:
                    for piece in crypto.encrypt_stream(blocks(), size, data_key):
                        tmp.write(piece)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                if sha.hexdigest() != sha256:
                    raise BadCiphertext(f"{rel}: the local file's sha256 is not the call log's; not encrypted")
                key_path = path.with_name(path.name + crypto.SIDECAR)
                key_tmp = key_path.with_name(f".{key_path.name}.tmp")
                key_tmp.write_bytes(KeyFile.wrap(master, data_key).dumps())
                os.replace(key_tmp, key_path)
                os.replace(tmp.name, path)
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
        if self.hash(rel)[0] != sha256:  # read back through the reader: what is stored is what we meant
            raise BadCiphertext(f"{rel}: the encrypted file does not read back to the recording")
        _fsync_dir(path.parent)
        return True

    def upload(self, rel: str) -> int:
        """Copy the local recording (as stored: encrypted when it is, with its key file) into the bucket.
        Returns the bytes sent.  Blocking."""
        bucket = self.bucket
        with open_recording(self.local_dir, rel) as fh:
            size = os.fstat(fh.fileno()).st_size
            encrypted = fh.read(len(crypto.MAGIC)) == crypto.MAGIC
            fh.seek(0)
            if encrypted:  # the key first: an object without its key would be unreadable
                with open_recording(self.local_dir, rel + crypto.SIDECAR) as kf:
                    key = kf.read(64 * 1024)
                bucket.put(rel + crypto.SIDECAR, key, len(key))
            bucket.put(rel, fh, size)
        return size

    def verify_remote(self, rel: str, sha256: str, size: int | None) -> str | None:
        """Read the object back through the reader: None when its plain audio has this sha256 (and size), else
        why not.  Blocking."""
        digest, got = self.hash_remote(rel)
        if digest != sha256:
            return f"the object's sha256 is {digest}, the call log's {sha256}"
        if size is not None and got != size:
            return f"the object has {got} bytes, the call log says {size}"
        return None

    # -- master key rotation ------------------------------------------------------------------------------------

    def rewrap(self, rel: str, old: MasterKey) -> str:
        """Re-wrap one recording's data key (local key file and key object) under the configured master key.
        'rewrapped', 'current' (already under it) or 'plain'.  The audio is not read or written.  Blocking."""
        new = self._master(rel)
        done = "plain"
        try:
            key_path = recording_path(self.local_dir, rel + crypto.SIDECAR)
            if key_path.is_file():
                done = _rewrap_bytes(key_path.read_bytes(), old, new, rel, lambda b: _replace(key_path, b))
        except OutsideFolder:
            return "plain"
        if self.remote:
            try:
                data = self.bucket.get(rel + crypto.SIDECAR)
            except ObjectMissing:
                return done
            remote = _rewrap_bytes(data, old, new, rel, lambda b: self.bucket.put(rel + crypto.SIDECAR, b, len(b)))
            done = remote if done == "plain" else done
        return done


def as_storage(where: Storage | Path) -> Storage:
    """A ``Storage`` as given, or the plain local one for a recordings folder (callers that only ever had a folder:
    tools, benchmarks, older tests)."""
    return where if isinstance(where, Storage) else Storage(Path(where), StorageSettings())


def _rewrap_bytes(data: bytes, old: MasterKey, new: MasterKey, rel: str, write: Any) -> str:
    kf = KeyFile.loads(data, rel)
    if kf.key_id == new.key_id:
        kf.unwrap(new, rel)  # it opens: nothing to do
        return "current"
    write(KeyFile.wrap(new, kf.unwrap(old, rel)).dumps())
    return "rewrapped"


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _digest(blocks: Iterator[bytes]) -> str:
    sha = hashlib.sha256()
    for block in blocks:
        sha.update(block)
    return sha.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def in_thread(func: Any, *args: Any) -> Any:
    """Run a blocking storage call off the event loop."""
    return await asyncio.to_thread(func, *args)


__all__ += [
    "BadCiphertext",
    "ObjectMissing",
    "OutsideFolder",
    "StorageUnavailable",
    "SymlinkedRecording",
    "WrongMasterKey",
    "as_storage",
    "in_thread",
]
