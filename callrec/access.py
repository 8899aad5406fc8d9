"""Who may see what: roles, the acting principal, and THE visibility rule.

``visible_calls_sql`` is the one SQL predicate deciding which calls a principal may see.  Search,
counts, export, detail, audio, tags and every other call route (and the CLI when it acts for a
user) build their WHERE clause with it, so a call hidden from a role is hidden everywhere (404).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROLES = ("admin", "supervisor", "agent", "security", "auditor")

# What each role may do (the visibility rule decides WHICH calls on top of this).  Alerts are listed
# with calls.search; alerts.rules adds and deletes keyword alert rules.
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"calls.search", "calls.view", "calls.audio", "calls.tag", "calls.confidential",
                        "calls.delete_audio", "calls.legal_hold", "calls.pause", "audit.search", "alerts.rules",
                        "calls.readers"}),
    "supervisor": frozenset({"calls.search", "calls.view", "calls.audio", "calls.tag", "calls.pause",
                             "calls.readers"}),
    # An agent pauses their own calls (card numbers): the visibility rule limits which.
    "agent": frozenset({"calls.search", "calls.view", "calls.audio", "calls.pause"}),
    "security": frozenset({"calls.search", "calls.view", "calls.audio", "calls.tag", "calls.confidential",
                           "calls.delete_audio", "calls.legal_hold", "alerts.rules", "calls.readers"}),
    # The audit trail, and a call's metadata to make sense of it: no listing, no audio.
    "auditor": frozenset({"calls.view", "audit.search", "calls.readers"}),
}


@dataclass(frozen=True)
class Principal:
    """The one acting: a console user, an API token, or an operator at the CLI."""

    name: str  # for the audit trail: user name, "token:<name>", "cli:<os user>"
    role: str
    extension: str | None = None
    user_id: int | None = None
    token_id: int | None = None
    via: str = "session"  # session | token | cli
    csrf_sha256: str | None = None  # sessions only

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def cli_principal() -> Principal:
    """The operator at the shell: audited as ``cli:<os user>`` with the admin role."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Principal(name=f"cli:{user}", role="admin", via="cli")


class Params:
    """Collects positional query arguments: ``params.add(v)`` returns ``$n``."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def visible_calls_sql(principal: Principal, params: Params, alias: str = "calls",
                      started: tuple[str, str] | None = None) -> str:
    """The visibility predicate over ``alias`` (a row of ``calls``).  Unknown roles see nothing.

    ``started``: the placeholders of a [from, to) range the query already puts on ``started_at``; the
    agent's set of calls is then taken from that range only (an agent's dashboard over a month reads a
    month of their calls, not every call they ever had)."""
    a = alias
    if principal.role in ("admin", "security"):
        return "TRUE"
    if principal.role in ("supervisor", "auditor"):
        return f"(NOT {a}.confidential)"
    if principal.role == "agent" and principal.extension:
        ext = params.add(principal.extension)
        # As a set of ids (the agent's calls by calls_agent_idx, the calls they were a party to by
        # call_parties_number_idx), not as OR EXISTS: an OR with a subquery cannot use an index, and the newest
        # calls of one agent among 10 million were found by reading the log back until 50 matched (seconds).
        if started is None:
            return (f"(NOT {a}.confidential AND {a}.id IN (SELECT va.id FROM calls va WHERE va.agent = {ext} "
                    f"UNION ALL SELECT vp.call_id FROM call_parties vp WHERE vp.number = {ext}))")
        lo, hi = started
        return (f"(NOT {a}.confidential AND {a}.id IN (SELECT va.id FROM calls va WHERE va.agent = {ext} "
                f"AND va.started_at >= {lo} AND va.started_at < {hi} "
                f"UNION ALL SELECT vp.call_id FROM call_parties vp JOIN calls vc ON vc.id = vp.call_id "
                f"WHERE vp.number = {ext} AND vc.started_at >= {lo} AND vc.started_at < {hi}))")
    return "FALSE"


# --- secrets: passwords (scrypt), tokens and session ids (sha256 of 256 random bits) ---------------

# scrypt at current guidance (N=2^17, r=8, p=1: 128 MiB and a few hundred ms per hash).  A hash
# stored with other parameters still verifies, and is replaced at the user's next log-in.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**17, 8, 1
# hashlib's default memory cap (32 MiB) is below what N=2^17 needs; stored parameters beyond this
# cap fail to verify instead of taking the memory.
_SCRYPT_MAXMEM = 256 * 1024 * 1024
# At most this many hashes at once (log-ins run in threads): bounds the memory at 2 x 128 MiB.
_SCRYPT_SLOTS = threading.BoundedSemaphore(2)
TOKEN_PREFIX = "crt_"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    with _SCRYPT_SLOTS:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_SCRYPT_MAXMEM)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode("utf-8"), salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_needs_rehash(stored: str) -> bool:
    """The stored hash was made with other parameters than today's (rehash it at log-in)."""
    return not stored.startswith(f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$")


# A hash of a random password: checked against when the user does not exist, so a failed log-in
# takes as long for an unknown name as for a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        stored, ok = _DUMMY_HASH, False
    else:
        ok = True
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = _scrypt(password.encode("utf-8", "surrogatepass"), bytes.fromhex(salt), int(n), int(r), int(p),
                      len(digest) // 2)
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest) and ok


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def require(principal: Principal, permission: str, deny: Callable[[], Exception]) -> None:
    if not principal.may(permission):
        raise deny()
