"""The encrypted form of a recording (callrec/storage/crypto.py): round trips, Range reads at chunk boundaries,
tampering, the wrong master key, key files."""

from __future__ import annotations

import os

import pytest

from callrec.storage import crypto
from callrec.storage.crypto import BadCiphertext, KeyFile, WrongMasterKey, parse_master_key

CHUNK = 64  # small chunks make every boundary case cheap


def seal(plain: bytes, key: bytes, chunk: int = CHUNK) -> bytes:
    # feed in odd block sizes: the chunking must not depend on how the bytes arrive
    blocks = [plain[i:i + 37] for i in range(0, len(plain), 37)]
    return b"".join(crypto.encrypt_stream(blocks, len(plain), key, chunk))


def read(sealed: bytes, key: bytes, start: int, end: int) -> bytes:
    header = sealed[:crypto.HEADER]
    chunk, plain = crypto.parse_header(header, "t")
    first, _, lo, hi = crypto.chunk_span(start, min(end, plain - 1), chunk, plain)
    raw = sealed[lo:hi + 1]
    return b"".join(crypto.decrypt_chunks([raw[i:i + 50] for i in range(0, len(raw), 50)], header, key, first,
                                          start, min(end, plain - 1), "t"))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 7])
def test_round_trip_and_size(size: int) -> None:
    plain = os.urandom(size)
    key = os.urandom(32)
    sealed = seal(plain, key)
    assert len(sealed) == crypto.encrypted_size(size, CHUNK)
    if size >= 16:  # shorter, a random plain text may turn up in the ciphertext by chance
        assert plain not in sealed[crypto.HEADER:]
    if size:
        assert read(sealed, key, 0, size - 1) == plain


def test_ranges_at_chunk_boundaries_are_exact() -> None:
    plain = os.urandom(7 * CHUNK + 13)
    key = os.urandom(32)
    sealed = seal(plain, key)
    edges = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 7 * CHUNK - 1, 7 * CHUNK,
             len(plain) - 1]
    for start in edges:
        for end in edges:
            if end >= start:
                assert read(sealed, key, start, end) == plain[start:end + 1], (start, end)


def test_a_changed_byte_a_cut_tail_and_a_moved_chunk_are_refused() -> None:
    plain = os.urandom(3 * CHUNK)
    key = os.urandom(32)
    sealed = bytearray(seal(plain, key))
    sealed[crypto.HEADER + 5] ^= 1
    with pytest.raises(BadCiphertext, match="chunk 0"):
        read(bytes(sealed), key, 0, 10)
    good = seal(plain, key)
    header = good[:crypto.HEADER]
    cut = good[:crypto.HEADER + 2 * (CHUNK + crypto.TAG)]  # the last chunk gone
    with pytest.raises(BadCiphertext):
        b"".join(crypto.decrypt_chunks([cut[crypto.HEADER:]], header, key, 0, 0, len(plain) - 1, "t"))
    sealed_chunk = CHUNK + crypto.TAG
    c0 = good[crypto.HEADER:crypto.HEADER + sealed_chunk]
    c1 = good[crypto.HEADER + sealed_chunk:crypto.HEADER + 2 * sealed_chunk]
    swapped = good[:crypto.HEADER] + c1 + c0 + good[crypto.HEADER + 2 * sealed_chunk:]
    with pytest.raises(BadCiphertext):
        read(swapped, key, 0, 10)


def test_a_file_that_changes_size_while_sealed_is_refused() -> None:
    with pytest.raises(ValueError, match="changed size"):
        b"".join(crypto.encrypt_stream([b"x" * 10], 11, os.urandom(32), CHUNK))
    with pytest.raises(ValueError, match="grew"):
        b"".join(crypto.encrypt_stream([b"x" * 12], 11, os.urandom(32), CHUNK))


def test_key_files_wrap_and_the_wrong_master_key_is_one_clear_error() -> None:
    master = parse_master_key(os.urandom(32).hex(), "test key")
    other = parse_master_key(os.urandom(32).hex(), "other key")
    data_key = os.urandom(32)
    kf = KeyFile.loads(KeyFile.wrap(master, data_key).dumps(), "r.wav")
    assert kf.unwrap(master, "r.wav") == data_key
    with pytest.raises(WrongMasterKey, match=rf"r\.wav: its data key was wrapped by master key {master.key_id}"):
        kf.unwrap(other, "r.wav")
    forged = KeyFile(other.key_id, kf.nonce, kf.wrapped)  # right id, wrong key bytes: still one clear error
    with pytest.raises(WrongMasterKey, match="does not open"):
        forged.unwrap(other, "r.wav")
    assert data_key.hex() not in kf.dumps().decode()


@pytest.mark.parametrize("text", ["", "abc", "00" * 31, "zz" * 32, "AAAA"])
def test_a_malformed_master_key_names_its_source(text: str) -> None:
    with pytest.raises(ValueError, match=r"^storage\.master_key_env K: expected a 32-byte key"):
        parse_master_key(text, "storage.master_key_env K")


def test_master_key_forms() -> None:
    import base64
    raw = os.urandom(32)
    assert parse_master_key(raw.hex() + "\n", "f").key == raw
    assert parse_master_key(base64.b64encode(raw).decode(), "f").key == raw
