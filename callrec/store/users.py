"""Users and API tokens: created, listed, disabled/revoked (CLI and tests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from callrec.access import ROLES, hash_password, new_token, sha256_hex
from callrec.store import audit
from callrec.store.db import Conn


class UserError(ValueError):
    pass


async def add_user(conn: Conn, name: str, role: str, password: str | None,
                   extension: str | None = None, *, actor: str = "cli") -> int:
    if role not in ROLES:
        raise UserError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if role == "agent" and not extension:
        raise UserError("extension: an agent needs one (--extension)")
    if password is not None and len(password) < 8:
        raise UserError("password: at least 8 characters")
    hashed = hash_password(password) if password is not None else None
    async with conn.transaction():
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (name, role, extension, password_hash) VALUES ($1, $2, $3, $4) RETURNING id",
                name, role, extension, hashed)
        except asyncpg.UniqueViolationError:
            raise UserError(f"name: user {name!r} exists") from None
        except asyncpg.CheckViolationError as exc:
            raise UserError(f"invalid user: {exc.constraint_name}") from None
        await audit.append(conn, actor=actor, role="admin", action="user_add",
                           details={"user": name, "role": role, "extension": extension})
    return user_id


async def disable_user(conn: Conn, name: str, *, actor: str = "cli") -> None:
    async with conn.transaction():
        done = await conn.fetchval("UPDATE users SET disabled = true, disabled_at = now() WHERE name = $1 "
                                   "AND NOT disabled RETURNING id", name)
        if done is None:
            raise UserError(f"name: no enabled user {name!r}")
        await conn.execute("DELETE FROM web_sessions WHERE user_id = $1", done)
        await audit.append(conn, actor=actor, role="admin", action="user_disable", details={"user": name})


async def list_users(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT id, name, role, extension, disabled, created_at, disabled_at, "
                            "password_hash IS NOT NULL AS has_password FROM users ORDER BY name")
    return [dict(r) for r in rows]


async def create_token(conn: Conn, name: str, role: str | None = None, user: str | None = None,
                       expires_at: datetime | None = None, *, actor: str = "cli") -> tuple[int, str]:
    """A new token: returns (id, secret).  The secret is shown once and stored only as sha256."""
    user_id = None
    if user is not None:
        urow = await conn.fetchrow("SELECT id, role, disabled FROM users WHERE name = $1", user)
        if urow is None or urow["disabled"]:
            raise UserError(f"user: no enabled user {user!r}")
        user_id = urow["id"]
        role = role or urow["role"]
        if role != urow["role"]:
            raise UserError(f"role: a token of user {user!r} has the user's role ({urow['role']})")
    if role not in ROLES:
        raise UserError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if role == "agent" and user_id is None:
        raise UserError("user: an agent token belongs to an agent user (--user)")
    if not 1 <= len(name) <= 64:
        raise UserError("name: 1-64 characters")
    secret = new_token()
    async with conn.transaction():
        token_id = await conn.fetchval(
            "INSERT INTO api_tokens (name, token_sha256, role, user_id, expires_at) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING id", name, sha256_hex(secret), role, user_id, expires_at)
        await audit.append(conn, actor=actor, role="admin", action="token_create",
                           details={"token_id": token_id, "name": name, "role": role, "user": user})
    return token_id, secret


async def revoke_token(conn: Conn, token_id: int, *, actor: str = "cli") -> None:
    async with conn.transaction():
        done = await conn.fetchval("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL "
                                   "RETURNING name", token_id)
        if done is None:
            raise UserError(f"id: no active token {token_id}")
        await audit.append(conn, actor=actor, role="admin", action="token_revoke",
                           details={"token_id": token_id, "name": done})


async def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT t.id, t.name, t.role, u.name AS user, t.created_at, t.last_used_at, t.expires_at, t.revoked_at "
        "FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id ORDER BY t.id")
    return [dict(r) for r in rows]


async def sync_confidential_rules(conn: Conn, rules: list[str]) -> None:
    """Make confidential_policy_rules list exactly ``rules`` (the [[policy.rules]] with
    confidential = true); a database trigger marks their calls confidential."""
    async with conn.transaction():
        await conn.execute("DELETE FROM confidential_policy_rules WHERE NOT (rule = ANY($1::text[]))", rules)
        await conn.execute("INSERT INTO confidential_policy_rules (rule) SELECT unnest($1::text[]) "
                           "ON CONFLICT DO NOTHING", rules)
