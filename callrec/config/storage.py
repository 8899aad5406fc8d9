"""``[storage]``: where recordings live after they are finalized, and encryption at rest (callrec/storage/,
docs/storage.md).

Kept apart from settings.py like the speech section; settings.py only hooks it in.  Credentials for the bucket
are never settings: they come from the environment only (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
optionally ``AWS_SESSION_TOKEN``), so they never land in a config file, a log line or ``callrec check``'s output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callrec.config.fields import ConfigError, Range, check_ranges, setting

__all__ = ["ADDRESSING", "STORAGE_KINDS", "StorageSettings", "check_storage"]

STORAGE_KINDS = ("local", "s3")
ADDRESSING = ("path", "virtual")


@dataclass(frozen=True)
class StorageSettings:
    kind: str = setting("local", "where finalized recordings are kept: `local` (the recordings folder) or `s3` "
                                 "(an S3-compatible bucket; each recording is uploaded from an outbox, checked, and "
                                 "removed locally after `local_grace`)", choices=STORAGE_KINDS)
    endpoint: str = setting("", "the S3 API's base URL, e.g. `https://s3.example.net` or `http://127.0.0.1:9000`. "
                                "Empty: AWS S3 in `region`", allowed="an http(s) URL, or empty",
                            shown_default='`""`')
    region: str = setting("us-east-1", "the bucket's region (signatures name it; most other servers accept any)")
    bucket: str = setting("", "the bucket (it must exist; callrec never creates one). Needed when `kind = \"s3\"`",
                          allowed="an S3 bucket name", shown_default='`""`')
    prefix: str = setting("", "a key prefix inside the bucket, e.g. `callrec/`; an object's key is the prefix plus "
                              "the recording's path under the recordings folder", shown_default='`""`')
    addressing: str = setting("path", "`path` (`endpoint/bucket/key`, what most S3-compatible servers expect) or "
                                      "`virtual` (`bucket.endpoint/key`)", choices=ADDRESSING)
    local_grace: int = setting(
        86400, "a recording stays in the recordings folder this long after its object is uploaded and verified "
               "(served from the local copy meanwhile); 0 removes it as soon as it is verified",
        range=Range(0, 365 * 86400, unit="seconds"))
    retry_delay: int = setting(10, "wait after a failed upload; doubled each time, at most `retry_max_delay`",
                               range=Range(1, 3600, unit="seconds"))
    retry_max_delay: int = setting(600, "the longest wait between two tries of one upload",
                                   range=Range(1, 86400, unit="seconds"))
    poll_interval: int = setting(5, "look for due uploads and local copies past their grace at least this often",
                                 range=Range(1, 3600, unit="seconds"))
    timeout: int = setting(30, "one request to the bucket (connect and read) gives up after this",
                           range=Range(1, 600, unit="seconds"))
    encrypt: bool = setting(
        False, "encrypt every recording at rest (local files and objects): AES-256-GCM in 64 KiB chunks under a "
               "fresh data key per recording, wrapped by the master key. Needs `master_key_file` or "
               "`master_key_env`")
    master_key_file: str = setting(
        "", "a file holding the 32-byte master key as 64 hex digits or base64 (`openssl rand -hex 32`), readable "
            "by callrec only. Keep a copy elsewhere: without it no encrypted recording can be read",
        allowed="an absolute path, or empty", shown_default='`""`')
    master_key_env: str = setting(
        "", "the name of an environment variable holding the master key (instead of `master_key_file`)",
        allowed="an environment variable name, or empty", shown_default='`""`')

    @property
    def remote(self) -> bool:
        return self.kind == "s3"


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_storage(s: StorageSettings) -> None:
    """Ranges, the bucket settings when `kind = "s3"`, and one source of the master key when encrypting."""
    check_ranges(s, "storage")
    if s.kind not in STORAGE_KINDS:
        raise ConfigError(f"storage.kind: expected one of {', '.join(STORAGE_KINDS)}, got {s.kind!r}")
    if s.addressing not in ADDRESSING:
        raise ConfigError(f"storage.addressing: expected one of {', '.join(ADDRESSING)}, got {s.addressing!r}")
    if s.endpoint and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#@]*)?", s.endpoint):
        raise ConfigError(f"storage.endpoint: expected an http(s) URL without credentials, got {s.endpoint[:80]!r}")
    if s.kind == "s3" and not s.bucket:
        raise ConfigError('storage.bucket: needed when storage.kind = "s3"')
    if s.bucket and not _BUCKET.fullmatch(s.bucket):
        raise ConfigError(f"storage.bucket: not a valid bucket name (3-63 lower-case letters, digits, dots, "
                          f"hyphens), got {s.bucket[:80]!r}")
    if s.prefix.startswith("/") or ".." in s.prefix.split("/"):
        raise ConfigError(f"storage.prefix: expected a relative key prefix like callrec/, got {s.prefix[:80]!r}")
    if s.master_key_file and not s.master_key_file.startswith("/"):
        raise ConfigError(f"storage.master_key_file: expected an absolute path, got {s.master_key_file[:80]!r}")
    if s.master_key_env and not _ENV_NAME.fullmatch(s.master_key_env):
        raise ConfigError(f"storage.master_key_env: expected an environment variable name, "
                          f"got {s.master_key_env[:80]!r}")
    if s.master_key_file and s.master_key_env:
        raise ConfigError("storage.master_key_file: set either master_key_file or master_key_env, not both")
    if s.encrypt and not (s.master_key_file or s.master_key_env):
        raise ConfigError("storage.encrypt: true needs storage.master_key_file or storage.master_key_env")
