"""Evidence exports: selected calls + their audio + a manifest signed with Ed25519.

Layout of an export (a folder, or the same names inside a zip):

    manifest.json        every call's metadata, consent evidence, times and recording facts, and
                         the sha256 and size of every exported file (canonical: UTF-8, sorted keys)
    manifest.json.sig    Ed25519 signature over the exact bytes of manifest.json (64 raw bytes)
    public-key.pem       the signer's public key (trust it only after comparing its fingerprint
                         with the one published out of band: `callrec keys public`)
    SHA256SUMS           `sha256sum -c` list of the audio files (its own sha256 is in the manifest)
    audio/<call id>.wav  the recordings

A third party verifies with `callrec verify-manifest`, or with OpenSSL 3 and coreutils alone:
`openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in manifest.json -sigfile manifest.json.sig`,
then `sha256sum -c SHA256SUMS` and compare `sha256sum SHA256SUMS` with the manifest's `sha256sums`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from callrec import __version__
from callrec.dataops.transcript_export import export_transcripts
from callrec.recording.files import (
    OutsideFolder,
    SymlinkedRecording,
    hash_stream,
    recording_path,
)
from callrec.storage import BadCiphertext, Storage, as_storage
from callrec.store.db import Db

FORMAT = "callrec-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
PUBLIC_KEY = "public-key.pem"
SUMS = "SHA256SUMS"


class KeyError_(Exception):
    """A signing-key problem, worded for the operator."""


# -- keys ---------------------------------------------------------------------------------------


def generate_key(path: Path, force: bool = False) -> tuple[Path, str]:
    """A new Ed25519 key: private PEM (mode 600) at ``path``, public PEM next to it (``.pub``).
    Returns (public key path, fingerprint)."""
    if path.exists() and not force:
        raise KeyError_(f"{path} exists; keep it (manifests signed with it stay verifiable) or pass --force")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_bytes(public_pem(key.public_key()))
    return pub_path, fingerprint(key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    if not path:
        raise KeyError_("integrity.signing_key: not set; run `callrec keys generate` and set it")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"integrity.signing_key: {path}: no such file; run `callrec keys generate`") from None
    except PermissionError:
        raise KeyError_(f"integrity.signing_key: {path}: not readable (permission denied)") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyError_(f"integrity.signing_key: {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"integrity.signing_key: {path}: not an Ed25519 key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyError_("public key: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_("public key: not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256 of the 32 raw public-key bytes, hex: what to publish and read over the phone."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# -- building an export -------------------------------------------------------------------------

EVIDENCE_FIELDS = ("consent_mode", "language", "notice_prompt", "notice_prompt_sha256", "notice_prompt_duration",
                   "notice_started_at", "notice_finished_at", "notice_completed", "keys_pressed", "keys_at",
                   "consent", "consent_key", "consent_at")
TIME_FIELDS = ("started_at", "ended_at", "recording_started_at", "handed_back_at", "finalized_at")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def canonical(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True, default=str) + "\n").encode("ascii")


@dataclass
class ExportResult:
    calls: int = 0
    files: int = 0
    mismatched: list[str] = field(default_factory=list)  # exported file != hash stored at finalization
    missing: list[str] = field(default_factory=list)
    manifest_sha256: str = ""
    prompts: int = 0
    excluded: int = 0  # calls whose audio is not included (the manifest's ``excluded``)
    fingerprint: str | None = None
    transcripts: int = 0


async def call_documents(conn: Db, ids: list[str]) -> list[dict[str, Any]]:
    """Every column of each call plus its parties and tags, JSON-ready, in the order of ``ids``."""
    rows = await conn.fetch("SELECT * FROM calls WHERE id = ANY($1::uuid[])", ids)
    by_id = {str(r["id"]): r for r in rows}
    parties: dict[str, list[dict[str, Any]]] = {}
    for p in await conn.fetch("SELECT * FROM call_parties WHERE call_id = ANY($1::uuid[]) ORDER BY call_id, seq",
                              ids):
        parties.setdefault(str(p["call_id"]), []).append(
            {k: _plain(v) for k, v in dict(p).items() if k != "call_id"})
    tags: dict[str, list[str]] = {}
    if await conn.fetchval("SELECT to_regclass('call_tags') IS NOT NULL"):
        for t in await conn.fetch("SELECT call_id, tag FROM call_tags WHERE call_id = ANY($1::uuid[]) "
                                  "ORDER BY tag", ids):
            tags.setdefault(str(t["call_id"]), []).append(t["tag"])
    docs = []
    for call_id in ids:
        row = by_id.get(call_id)
        if row is None:
            continue
        columns = {k: _plain(v) for k, v in dict(row).items()}
        docs.append({
            "id": call_id,
            "times": {k: columns.get(k) for k in TIME_FIELDS},
            "consent_evidence": {k: columns.get(k) for k in EVIDENCE_FIELDS},
            "recording": {k[len("recording_"):]: columns.get(k) for k in columns if k.startswith("recording_")},
            "columns": columns,
            "parties": parties.get(call_id, []),
            "tags": tags.get(call_id, []),
        })
    return docs


# Only a finished recording is exported by an evidence export: one still being written (or
# finalized) is not yet the file whose facts the row states.  A subject export also hands out what
# a crash left (``unclosed``: kept and measured from its raw audio): it is that person's data.
EVIDENCE_STATUSES = frozenset({"ready"})
SUBJECT_STATUSES = frozenset({"ready", "unclosed"})


class TooLarge(Exception):
    """The selection's audio is over the byte cap: refused before any audio is read."""

    def __init__(self, total: int, cap: int) -> None:
        super().__init__(f"the selected recordings hold {total} bytes, more than the cap of {cap} bytes "
                         "(integrity.evidence_max_bytes); select fewer calls")
        self.total, self.cap = total, cap


class _Sink:
    """Where an export's files go: a folder, or the entries of a zip (written straight into it: the
    audio is read once and never staged next to the zip)."""

    def copy_from(self, name: str, src: IO[bytes], size_hint: int) -> tuple[str, int]:
        raise NotImplementedError

    def write_bytes(self, name: str, data: bytes) -> None:
        raise NotImplementedError


class FolderSink(_Sink):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def copy_from(self, name: str, src: IO[bytes], size_hint: int) -> tuple[str, int]:
        dst = self.folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as fout:
            return hash_stream(src, copy_to=fout)

    def write_bytes(self, name: str, data: bytes) -> None:
        (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_bytes(data)


class ZipSink(_Sink):
    """Entries stored, not compressed (WAV barely compresses)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf

    def copy_from(self, name: str, src: IO[bytes], size_hint: int) -> tuple[str, int]:
        # Zip64 must be chosen before the entry's data: a file near 2 GiB may grow past the 4 GiB field.
        with self.zf.open(name, "w", force_zip64=size_hint > 2**31) as dst:
            return hash_stream(src, copy_to=dst)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.zf.writestr(name, data)


def _prompt_source(notice_prompt: str | None, prompts: tuple[str, Path] | None) -> Path | None:
    """The notice file as this host sees it, from the path Asterisk played (``<prompts_dir>/<lang>/<name>.wav``)."""
    if not notice_prompt or prompts is None:
        return None
    prefix = prompts[0].rstrip("/") + "/"
    if not notice_prompt.startswith(prefix):
        return None
    try:
        return recording_path(prompts[1], notice_prompt[len(prefix):])  # the same "inside the folder" rule
    except OutsideFolder:
        return None


def _export_prompt(sink: _Sink, doc: dict[str, Any], prompts: tuple[str, Path] | None,
                   done: dict[str, str], files: list[dict[str, Any]]) -> None:
    """Include the notice the caller heard, once per distinct file, if it is still the same file
    (its sha256 equals the one recorded with the call: checked before it is copied, since a zip
    entry cannot be taken back)."""
    ev = doc["consent_evidence"]
    want = ev.get("notice_prompt_sha256")
    if not want:
        return
    if want in done:
        doc["notice_prompt_file"] = done[want]
        return
    src = _prompt_source(ev.get("notice_prompt"), prompts)
    rel = f"prompts/{want}{src.suffix if src is not None else '.wav'}"
    try:
        if src is None:
            raise FileNotFoundError
        data = src.read_bytes()  # a prompt is a few hundred KB
    except FileNotFoundError:
        doc["notice_prompt_note"] = "the notice file is no longer installed; not included"
        return
    if hashlib.sha256(data).hexdigest() != want:
        doc["notice_prompt_note"] = "the installed notice file has changed since this call; not included"
        return
    sink.write_bytes(rel, data)
    done[want] = rel
    doc["notice_prompt_file"] = rel
    files.append({"path": rel, "sha256": want, "bytes": len(data), "kind": "notice_prompt"})


def _audio_refusal(cols: dict[str, Any], statuses: frozenset[str]) -> str | None:
    """Why a call's audio is not in the export (from its row alone), or None."""
    if cols.get("audio_deleted_at"):
        return f"audio deleted at {cols['audio_deleted_at']} by {cols.get('audio_deleted_by')}"
    if not cols.get("recording_path"):
        return "no recording"
    status = cols.get("recording_status")
    if status not in statuses:
        return (f"the recording is {status or 'of unknown status'}, not {' or '.join(sorted(statuses))}: "
                "only a finished recording is exported")
    return None


def audio_bytes(docs: list[dict[str, Any]], where: Storage | Path,
                statuses: frozenset[str] = EVIDENCE_STATUSES) -> int:
    """What the audio of an export will take: per exported recording the larger of the size on
    its row and the local file's size now (a stat, no audio read).  Blocking."""
    storage = as_storage(where)
    total = 0
    for doc in docs:
        cols = doc["columns"]
        if _audio_refusal(cols, statuses) is not None:
            continue
        size = int(cols.get("recording_bytes") or 0)
        total += max(size, storage.local_size(cols["recording_path"]))
    return total


def check_size(docs: list[dict[str, Any]], local_dir: Storage | Path, cap: int | None,
               statuses: frozenset[str] = EVIDENCE_STATUSES) -> int:
    """``audio_bytes``, or TooLarge when it is over ``cap``.  Blocking (stats only)."""
    total = audio_bytes(docs, local_dir, statuses)
    if cap is not None and total > cap:
        raise TooLarge(total, cap)
    return total


def write_export(out: Path | _Sink, docs: list[dict[str, Any]], local_dir: Storage | Path, *, purpose: str,
                 created_by: str, selection: dict[str, Any], key: Ed25519PrivateKey | None,
                 prompts: tuple[str, Path] | None = None, statuses: frozenset[str] = EVIDENCE_STATUSES,
                 max_bytes: int | None = None) -> ExportResult:
    """Copy the audio (hashing as it copies) of the recordings whose status is in ``statuses``, and
    the notice prompts the callers heard (``prompts``: notice.prompts_dir and its local path), write
    the manifest (with every call whose audio is not included listed in ``excluded``, with the
    reason), SHA256SUMS and the signature.  ``out``: a folder, or a sink (``ZipSink``).
    ``max_bytes``: checked on the rows and file sizes before any audio is read (TooLarge), and
    again on the bytes actually copied.  Blocking file work: run it in a thread."""
    storage = as_storage(local_dir)
    check_size(docs, storage, max_bytes, statuses)
    sink = FolderSink(out) if isinstance(out, Path) else out
    if isinstance(out, Path):
        (out / "audio").mkdir(parents=True, exist_ok=True)
    result = ExportResult(calls=len(docs))
    prompt_files: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    copied = 0
    for doc in docs:
        cols = doc["columns"]
        doc["file"] = None
        _export_prompt(sink, doc, prompts, prompt_files, files)
        refusal = _audio_refusal(cols, statuses)
        if refusal is None:
            try:
                # The plain audio wherever it is stored (decrypted when encrypted at rest): what the manifest's
                # sha256 covers and what a third party checks with OpenSSL alone.
                blob = storage.open(cols["recording_path"])
                rel = f"audio/{doc['id']}{PurePosixPath(cols['recording_path']).suffix or '.wav'}"
                try:
                    size_now = blob.size
                    if max_bytes is not None and copied + size_now > max_bytes:
                        raise TooLarge(copied + size_now, max_bytes)  # the file grew since the check
                    digest, size = sink.copy_from(rel, blob.reader(), size_now)  # type: ignore[arg-type]
                finally:
                    blob.close()
                copied += size
            except SymlinkedRecording:  # never read through a link, even one that stays inside
                refusal = "the recording path is a symbolic link; not exported"
            except OutsideFolder:  # e.g. a symlink planted in the folder: never follow it out
                refusal = "the recording path leads outside the recordings folder; not exported"
            except FileNotFoundError:
                result.missing.append(doc["id"])
                refusal = "the recording is missing from its storage"
            except BadCiphertext as exc:
                refusal = f"the stored recording does not decrypt: {exc}"
        if refusal is not None:
            doc["file_note"] = refusal
            excluded.append({"call_id": doc["id"], "reason": refusal})
            continue
        matches = digest == cols.get("recording_sha256")
        if not matches:
            result.mismatched.append(doc["id"])
        doc["file"] = rel
        doc["file_matches_recorded_sha256"] = matches
        files.append({"path": rel, "sha256": digest, "bytes": size, "call_id": doc["id"], "kind": "recording"})
    result.transcripts = export_transcripts(sink.write_bytes, docs, files)
    sums = "".join(f"{f['sha256']}  {f['path']}\n" for f in files).encode("ascii")
    sink.write_bytes(SUMS, sums)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "generator": f"callrec {__version__}",
        "created_at": datetime.now(UTC).isoformat(),
        "created_by": created_by,
        "purpose": purpose,
        "selection": selection,
        "files": files,
        "excluded": excluded,
        "sha256sums": hashlib.sha256(sums).hexdigest(),
        "calls": docs,
        "signature": None,
    }
    if key is not None:
        result.fingerprint = fingerprint(key.public_key())
        manifest["signature"] = {"algorithm": "Ed25519", "file": SIGNATURE,
                                 "public_key_sha256": result.fingerprint,
                                 "signed": "the exact bytes of manifest.json"}
    data = canonical(manifest)
    sink.write_bytes(MANIFEST, data)
    if key is not None:
        sink.write_bytes(SIGNATURE, key.sign(data))
        sink.write_bytes(PUBLIC_KEY, public_pem(key.public_key()))
    result.files = sum(f["kind"] == "recording" for f in files)
    result.prompts = len(prompt_files)
    result.excluded = len(excluded)
    result.manifest_sha256 = hashlib.sha256(data).hexdigest()
    return result


def write_zip(fh: IO[bytes], docs: list[dict[str, Any]], local_dir: Storage | Path, **kw: Any) -> ExportResult:
    """``write_export`` straight into a zip written to ``fh``: nothing staged beside it."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        return write_export(ZipSink(zf), docs, local_dir, **kw)


def export_to(target: Path, as_zip: bool, build: Any) -> Any:
    """Run ``build(sink_or_folder)`` into ``target``: a new folder, or a zip written straight to
    ``target`` (through a temporary name beside it, renamed when complete)."""
    if as_zip:
        if target.exists():
            raise FileExistsError(f"{target} exists; choose a new file name")
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
                result = build(ZipSink(zf))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return result
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    return build(target)


# -- verifying ----------------------------------------------------------------------------------


@dataclass
class ManifestCheck:
    problems: list[str] = field(default_factory=list)
    files_ok: int = 0
    signature: str = "missing"  # valid | invalid | missing
    fingerprint: str | None = None
    calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.signature == "valid"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "signature": self.signature, "public_key_sha256": self.fingerprint,
                "calls": self.calls, "files_ok": self.files_ok, "problems": self.problems}


class _Source:
    """A folder or a zip, read the same way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None

    def names(self) -> Iterable[str]:
        if self.zip is not None:
            return [n for n in self.zip.namelist() if not n.endswith("/")]
        return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]

    def read(self, name: str) -> bytes | None:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            return None

    def hash(self, name: str) -> tuple[str, int] | None:
        try:
            fh: IO[bytes] = self.zip.open(name) if self.zip is not None else open(self.path / name, "rb")
        except (KeyError, FileNotFoundError):
            return None
        with fh:
            return hash_stream(fh)


def _safe_name(name: str) -> bool:
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts and name == p.as_posix()


def verify_manifest(path: Path, public_key: Ed25519PublicKey | None) -> ManifestCheck:
    """Check the signature (with the key the verifier trusts; the export's own public-key.pem only
    if none is given, and then say so), every file's hash and size, SHA256SUMS, and extra files."""
    check = ManifestCheck()
    src = _Source(path)
    data = src.read(MANIFEST)
    if data is None:
        check.problems.append(f"{MANIFEST}: missing")
        return check
    sig = src.read(SIGNATURE)
    if public_key is None:
        pem = src.read(PUBLIC_KEY)
        if pem is not None:
            try:
                public_key = load_public_key(pem)
                check.problems.append(f"no trusted public key given: checked with the export's own {PUBLIC_KEY}; "
                                      "pass --public-key with the key obtained from the signer")
            except KeyError_ as exc:
                check.problems.append(f"{PUBLIC_KEY}: {exc}")
    if public_key is not None:
        check.fingerprint = fingerprint(public_key)
    if sig is None:
        check.signature = "missing"
        check.problems.append(f"{SIGNATURE}: missing (the manifest is not signed)")
    elif public_key is None:
        check.problems.append("no public key to check the signature with")
    else:
        try:
            public_key.verify(sig, data)
            check.signature = "valid"
        except InvalidSignature:
            check.signature = "invalid"
            check.problems.append(f"{SIGNATURE}: INVALID: manifest.json was altered or signed with another key")
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        check.calls = len(manifest.get("calls", []))
    except (ValueError, KeyError, TypeError):
        check.problems.append(f"{MANIFEST}: not a callrec manifest")
        return check
    listed = set()
    for entry in files:
        name = str(entry.get("path", ""))
        listed.add(name)
        if not _safe_name(name):
            check.problems.append(f"{name!r}: unsafe path in the manifest")
            continue
        got = src.hash(name)
        if got is None:
            check.problems.append(f"{name}: missing")
        elif got[0] != entry.get("sha256"):
            check.problems.append(f"{name}: sha256 differs from the manifest (the file was changed)")
        elif got[1] != entry.get("bytes"):
            check.problems.append(f"{name}: size differs from the manifest")
        else:
            check.files_ok += 1
    sums = src.read(SUMS)
    if sums is None:
        check.problems.append(f"{SUMS}: missing")
    elif hashlib.sha256(sums).hexdigest() != manifest.get("sha256sums"):
        check.problems.append(f"{SUMS}: differs from the manifest")
    for name in src.names():
        if name not in listed and name not in (MANIFEST, SIGNATURE, PUBLIC_KEY, SUMS):
            check.problems.append(f"{name}: not listed in the manifest")
    return check


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
