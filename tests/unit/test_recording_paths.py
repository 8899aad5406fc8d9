"""The one rule for "a path inside the recordings folder" and the one file hasher (recording/files.py),
and the places that use them: serving audio, verify, the evidence export.  Real files, no database."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from support.dataops_helpers import make_wav

from callrec.dataops.evidence import write_export
from callrec.dataops.integrity import hash_recording
from callrec.recording.files import (
    HASH_BLOCK,
    OutsideFolder,
    SymlinkedRecording,
    hash_stream,
    measure,
    open_recording,
    recording_path,
    sha256_file,
)
from callrec.recording.stereo import measure_stereo, merge


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rec = tmp_path / "recordings"
    (rec / "2026" / "11" / "28").mkdir(parents=True)
    (rec / "2026" / "11" / "28" / "call.wav").write_bytes(b"RIFF-mine")
    (tmp_path / "secret.wav").write_bytes(b"RIFF-not-yours")
    return rec


@pytest.mark.parametrize("rel", [
    "../secret.wav", "2026/11/../../../secret.wav", "2026/../2026/11/28/call.wav", "/etc/passwd", "", None,
    "2026/11/28/call.wav\x00.txt", ".", "./",
])
def test_the_rule_refuses_paths_that_are_not_inside(folder: Path, rel: str | None) -> None:
    with pytest.raises(OutsideFolder):
        recording_path(folder, rel)


def test_the_rule_refuses_a_symlink_out_of_the_folder(folder: Path) -> None:
    (folder / "link.wav").symlink_to(folder.parent / "secret.wav")
    (folder / "2026" / "out").symlink_to(folder.parent)  # a folder link, then a name under it
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    for rel in ("link.wav", "2026/out/secret.wav", "loop.wav"):
        with pytest.raises(OutsideFolder):
            recording_path(folder, rel)


def test_the_rule_gives_the_path_inside_unresolved(folder: Path) -> None:
    assert recording_path(folder, "2026/11/28/call.wav") == folder / "2026/11/28/call.wav"
    assert recording_path(folder, "2026/11/28/not-there.wav") == folder / "2026/11/28/not-there.wav"
    # A link to a file inside stays a link (deleting it removes the link, never its target).
    (folder / "inside.wav").symlink_to(folder / "2026/11/28/call.wav")
    assert recording_path(folder, "inside.wav") == folder / "inside.wav"
    # The folder itself may be reached through a symlink (e.g. /var/spool -> /data/spool).
    alias = folder.parent / "alias"
    alias.symlink_to(folder)
    assert recording_path(alias, "2026/11/28/call.wav").read_bytes() == b"RIFF-mine"


def test_audio_verify_and_evidence_follow_the_rule(folder: Path, tmp_path: Path) -> None:
    (folder / "link.wav").symlink_to(folder.parent / "secret.wav")
    for rel in ("../secret.wav", "link.wav", str(folder.parent / "secret.wav")):
        with pytest.raises(OutsideFolder):  # served as "the recording file is missing"
            open_recording(folder, rel)
        with pytest.raises(PermissionError, match="outside the recordings folder"):
            hash_recording(folder, rel)
    with open_recording(folder, "2026/11/28/call.wav") as fh:
        assert fh.read() == b"RIFF-mine"
    with pytest.raises(FileNotFoundError):
        open_recording(folder, "2026/11/28/gone.wav")
    docs = [{"id": f"c{i}", "columns": {"recording_path": rel, "recording_sha256": None, "recording_status": "ready"},
             "consent_evidence": {}} for i, rel in enumerate(("../secret.wav", "link.wav"))]
    out = tmp_path / "export"
    result = write_export(out, docs, folder, purpose="test", created_by="tester", selection={}, key=None)
    assert result.files == 0 and not list((out / "audio").iterdir())
    assert all("outside the recordings folder" in d["file_note"] for d in docs)


def test_one_hasher_streams_in_blocks(tmp_path: Path) -> None:
    data = os.urandom(2 * HASH_BLOCK + 12345)  # more than one block, not a whole number of them
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    want = (hashlib.sha256(data).hexdigest(), len(data))
    assert sha256_file(path) == want
    copy = io.BytesIO()
    assert hash_stream(io.BytesIO(data), copy_to=copy) == want and copy.getvalue() == data
    empty = tmp_path / "empty"
    empty.touch()
    assert sha256_file(empty) == (hashlib.sha256(b"").hexdigest(), 0)


def test_measured_recordings_carry_the_hashers_digest(tmp_path: Path) -> None:
    mono = tmp_path / "mono.wav"
    make_wav(mono, 1.0)
    assert measure(mono)["recording_sha256"] == sha256_file(mono)[0]
    rx, tx, out = tmp_path / "rx.wav", tmp_path / "tx.wav", tmp_path / "stereo.wav"
    make_wav(rx, 1.0, 300)
    make_wav(tx, 1.0, 500)
    merge(rx, tx, out)
    assert measure_stereo(out)["recording_sha256"] == sha256_file(out)[0]


def test_a_symlink_inside_the_folder_is_never_read(folder: Path, tmp_path: Path) -> None:
    """A row whose file is a link to another call's file (inside the folder) is refused for
    reading everywhere: audio, verify, evidence; so is a path through a linked folder."""
    (folder / "2026/11/28/other.wav").symlink_to(folder / "2026/11/28/call.wav")
    (folder / "2026/11/linked").symlink_to(folder / "2026/11/28")
    for rel in ("2026/11/28/other.wav", "2026/11/linked/call.wav"):
        assert recording_path(folder, rel)  # inside: deletion may unlink the link itself
        with pytest.raises(SymlinkedRecording, match="symbolic link"):
            open_recording(folder, rel)
        with pytest.raises(SymlinkedRecording):
            hash_recording(folder, rel)
    docs = [{"id": "c0", "columns": {"recording_path": "2026/11/28/other.wav", "recording_sha256": None,
                         "recording_status": "ready"},
             "consent_evidence": {}}]
    out = tmp_path / "export"
    result = write_export(out, docs, folder, purpose="test", created_by="tester", selection={}, key=None)
    assert result.files == 0 and not list((out / "audio").iterdir())
    assert docs[0]["file_note"] == "the recording path is a symbolic link; not exported"
