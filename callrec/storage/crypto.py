"""Encryption at rest: AES-256-GCM in fixed-size chunks under a fresh data key per recording, the data key
wrapped by the master key (docs/storage.md#encryption).

A recording ``R`` encrypted is two things side by side (files, or objects in the bucket):

* ``R`` itself: a 32-byte header (``MAGIC``, chunk size, plain size) then the chunks.  Chunk ``i`` is the
  plain bytes ``[i*chunk, (i+1)*chunk)`` sealed with the data key, nonce = ``i`` (12 bytes big-endian; the key
  is used for this one file only, so a counter nonce never repeats), and the header plus ``i`` plus "last?"
  as associated data, so a chunk cannot be moved, dropped off the end, or paired with another header.
  Chunk ``i`` starts at ``HEADER + i*(chunk+16)``: a Range read opens only the chunks it needs.
* ``R.key``: the data key wrapped by the master key (AES-256-GCM, a random nonce) and the master key's id.
  Rotating the master key rewrites only these small files; the audio is never touched.

Pure: bytes in, bytes out.  The master key is 32 bytes, given as 64 hex digits or base64 (a file or an
environment variable, ``[storage] master_key_file`` / ``master_key_env``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CHUNK", "HEADER", "MAGIC", "SIDECAR", "TAG", "BadCiphertext", "KeyFile", "MasterKey", "WrongMasterKey",
           "chunk_span", "decrypt_chunks", "encrypt_stream", "encrypted_size", "parse_header", "parse_master_key"]

MAGIC = b"CRECAES1"
HEADER = 32  # MAGIC, chunk size (u32), plain size (u64), 12 bytes reserved (zero)
_HEADER = struct.Struct(">8sIQ12x")
TAG = 16
CHUNK = 64 * 1024  # plain bytes per chunk: a Range read decrypts at most one chunk it does not need at each end
SIDECAR = ".key"  # the wrapped data key beside each encrypted recording
_WRAP_AAD = b"callrec data key v1"


class WrongMasterKey(Exception):
    """The configured master key did not wrap this recording's data key (one clear line, no traceback)."""


class BadCiphertext(Exception):
    """An encrypted recording whose bytes do not authenticate: changed, truncated or not ours."""


@dataclass(frozen=True)
class MasterKey:
    key: bytes
    source: str  # where it came from, for messages ("file /etc/callrec/master.key", "env CALLREC_MASTER_KEY")

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the key: tells which key wrapped a data key, reveals nothing of it."""
        return hashlib.sha256(b"callrec master key id" + self.key).hexdigest()[:16]


def parse_master_key(text: str | bytes, source: str) -> MasterKey:
    """32 bytes written as 64 hex digits or as base64; ValueError naming ``source`` otherwise."""
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    raw = raw.strip()
    key: bytes | None = None
    if len(raw) == 64:
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != 32:
        raise ValueError(f"{source}: expected a 32-byte key as 64 hex digits or base64 "
                         "(make one with `openssl rand -hex 32`)")
    return MasterKey(key, source)


@dataclass(frozen=True)
class KeyFile:
    """The sidecar: which master key wrapped the data key, and the wrapped key."""
    key_id: str
    nonce: bytes
    wrapped: bytes

    @classmethod
    def wrap(cls, master: MasterKey, data_key: bytes) -> KeyFile:
        nonce = os.urandom(12)
        return cls(master.key_id, nonce, AESGCM(master.key).encrypt(nonce, data_key, _WRAP_AAD))

    def unwrap(self, master: MasterKey, what: str) -> bytes:
        if self.key_id != master.key_id:
            raise WrongMasterKey(f"{what}: its data key was wrapped by master key {self.key_id}, but the configured "
                                 f"master key ({master.source}) is {master.key_id}")
        try:
            return AESGCM(master.key).decrypt(self.nonce, self.wrapped, _WRAP_AAD)
        except InvalidTag:
            raise WrongMasterKey(f"{what}: the configured master key ({master.source}) does not open its data key "
                                 "(the key file was changed)") from None

    def dumps(self) -> bytes:
        return json.dumps({"v": 1, "alg": "AES-256-GCM", "master_key_id": self.key_id,
                           "nonce": base64.b64encode(self.nonce).decode(),
                           "wrapped": base64.b64encode(self.wrapped).decode()}).encode() + b"\n"

    @classmethod
    def loads(cls, data: bytes, what: str) -> KeyFile:
        try:
            doc = json.loads(data)
            return cls(str(doc["master_key_id"]), base64.b64decode(doc["nonce"]), base64.b64decode(doc["wrapped"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise BadCiphertext(f"{what}: its key file is not readable") from None


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if last else 0)


def _chunks(plain_size: int, chunk: int) -> int:
    return max(1, -(-plain_size // chunk))  # an empty recording still has one (empty) chunk: it authenticates


def encrypted_size(plain_size: int, chunk: int = CHUNK) -> int:
    return HEADER + _chunks(plain_size, chunk) * TAG + plain_size


def encrypt_stream(blocks: Iterable[bytes], plain_size: int, data_key: bytes, chunk: int = CHUNK) -> Iterator[bytes]:
    """The encrypted form of ``plain_size`` bytes arriving in ``blocks`` of any size: the header, then each sealed
    chunk.  Raises ValueError when the blocks do not add up to ``plain_size`` (the file changed under us)."""
    header = _HEADER.pack(MAGIC, chunk, plain_size)
    yield header
    aead = AESGCM(data_key)
    total = _chunks(plain_size, chunk)
    buf = bytearray()
    index = 0
    seen = 0
    for block in blocks:
        seen += len(block)
        if seen > plain_size:
            raise ValueError("the recording grew while it was being encrypted")
        buf += block
        while len(buf) >= chunk and index < total - 1:
            yield aead.encrypt(_nonce(index), bytes(buf[:chunk]), _aad(header, index, False))
            del buf[:chunk]
            index += 1
    if seen != plain_size or len(buf) > chunk:
        raise ValueError("the recording changed size while it was being encrypted")
    yield aead.encrypt(_nonce(index), bytes(buf), _aad(header, index, True))


def parse_header(header: bytes, what: str) -> tuple[int, int]:
    """(chunk size, plain size) from an encrypted recording's first HEADER bytes."""
    if len(header) < HEADER:
        raise BadCiphertext(f"{what}: too short to be an encrypted recording")
    magic, chunk, plain = _HEADER.unpack(header[:HEADER])
    if magic != MAGIC or not 16 <= chunk <= 1 << 26:
        raise BadCiphertext(f"{what}: not an encrypted recording")
    return chunk, plain


def chunk_span(start: int, end: int, chunk: int, plain_size: int) -> tuple[int, int, int, int]:
    """For the plain bytes [start, end] (inclusive): (first chunk, last chunk, and the encrypted byte range
    [lo, hi] inclusive that holds them)."""
    first, last = start // chunk, end // chunk
    lo = HEADER + first * (chunk + TAG)
    hi = min(HEADER + (last + 1) * (chunk + TAG), encrypted_size(plain_size, chunk)) - 1
    return first, last, lo, hi


def decrypt_chunks(raw: Iterable[bytes], header: bytes, data_key: bytes, first: int, start: int, end: int,
                   what: str) -> Iterator[bytes]:
    """The plain bytes [start, end] from the sealed chunks arriving in ``raw`` (from chunk ``first`` on, in blocks
    of any size).  Each chunk is authenticated before any of its bytes are given out."""
    chunk, plain = parse_header(header, what)
    total = _chunks(plain, chunk)
    aead = AESGCM(data_key)
    sealed = chunk + TAG
    index = first
    buf = bytearray()
    pos = first * chunk  # plain offset of the chunk at buf's start

    def opened(data: bytes, i: int) -> bytes:
        try:
            return aead.decrypt(_nonce(i), data, _aad(header, i, i == total - 1))
        except InvalidTag:
            raise BadCiphertext(f"{what}: chunk {i} does not authenticate (changed or truncated)") from None

    def cut(plain_chunk: bytes, at: int) -> bytes:
        lo = max(start - at, 0)
        hi = min(end - at + 1, len(plain_chunk))
        return plain_chunk[lo:hi]

    for block in raw:
        buf += block
        while len(buf) >= sealed and pos <= end:
            out = opened(bytes(buf[:sealed]), index)
            del buf[:sealed]
            piece = cut(out, pos)
            index += 1
            pos += chunk
            if piece:
                yield piece
        if pos > end:
            return
    if pos <= end:
        if index != total - 1 or not buf:
            raise BadCiphertext(f"{what}: ends early (truncated)")
        piece = cut(opened(bytes(buf), index), pos)
        if piece:
            yield piece
