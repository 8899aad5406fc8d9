"""What staff put on a call: tags and the confidential mark.  Each change is audited in its transaction.

The caller has found the call through the visibility rule and locked its row (``FOR UPDATE``) in the
same transaction (the web's ``common.visible_call(..., lock=True)``).
"""

from __future__ import annotations

from typing import Any

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store import audit
from callrec.store.db import Conn, Db


async def call_tags(conn: Db, call_id: str) -> list[str]:
    return [r["tag"] for r in await conn.fetch("SELECT tag FROM call_tags WHERE call_id = $1::uuid ORDER BY tag",
                                               call_id)]


async def tags_in_use(conn: Db, principal: Principal, prefix: str = "", limit: int = 50) -> list[dict[str, Any]]:
    """The tags on calls the principal may see, most used first (the console's tag suggestions)."""
    params = Params()
    like = params.add(prefix.lower())
    sql = (f"SELECT t.tag, count(*) AS calls FROM call_tags t JOIN calls c ON c.id = t.call_id "
           f"WHERE starts_with(lower(t.tag), {like}) AND {visible_calls_sql(principal, params, 'c')} "
           f"GROUP BY t.tag ORDER BY count(*) DESC, t.tag LIMIT {params.add(limit)}")
    return [dict(r) for r in await conn.fetch(sql, *params.values)]


async def add_tag(conn: Conn, call_id: str, tag: str, *, actor: Principal, remote: str | None) -> bool:
    """Tag the call; False when it already had the tag (nothing changed, nothing audited)."""
    added = await conn.fetchval(
        "INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1::uuid, $2, $3) "
        "ON CONFLICT DO NOTHING RETURNING true", call_id, tag, actor.name)
    if added:
        await audit.append(conn, actor=actor.name, role=actor.role, action="tag_add", call_id=call_id,
                           details={"tag": tag}, remote=remote)
    return bool(added)


async def remove_tag(conn: Conn, call_id: str, tag: str, *, actor: Principal, remote: str | None) -> bool:
    """Remove a tag; False when the call did not have it."""
    removed = await conn.fetchval("DELETE FROM call_tags WHERE call_id = $1::uuid AND tag = $2 RETURNING true",
                                  call_id, tag)
    if removed:
        await audit.append(conn, actor=actor.name, role=actor.role, action="tag_remove", call_id=call_id,
                           details={"tag": tag}, remote=remote)
    return bool(removed)


async def set_confidential(conn: Conn, row: Any, value: bool, *, actor: Principal, remote: str | None) -> None:
    """Mark or unmark the call (``row``: its locked ``calls`` row) confidential; audited when it changes."""
    if row["confidential"] == value:
        return
    await conn.execute("UPDATE calls SET confidential = $2, confidential_at = now(), confidential_by = $3 "
                       "WHERE id = $1", row["id"], value, actor.name)
    await audit.append(conn, actor=actor.name, role=actor.role, action="confidential", call_id=str(row["id"]),
                       details={"from": row["confidential"], "to": value}, remote=remote)
