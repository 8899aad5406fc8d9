"""Data-subject requests: find every call of a phone number, and erase them through the deletion gate."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from callrec.access import Principal
from callrec.dataops.deletion import Outcome, anonymize
from callrec.storage import Storage
from callrec.store import audit
from callrec.store.db import Conn

_NUMBER_NOISE = re.compile(r"[\s().\-/]")
_NUMBER_OK = re.compile(r"^[0-9A-Za-z+*#]{1,64}$")


def normalize_number(text: str) -> str:
    """``+7 (495) 123-45-67`` -> ``+74951234567``; raises ValueError on something not a number."""
    out = _NUMBER_NOISE.sub("", text)
    if not _NUMBER_OK.match(out):
        raise ValueError(f"not a phone number: {text!r}")
    return out


def _norm_sql(column: str) -> str:
    return f"regexp_replace(coalesce({column}, ''), '[[:space:]().\\-/]', '', 'g')"


async def find_subject_calls(conn: Conn, numbers: Sequence[str]) -> list[asyncpg.Record]:
    """Every call where one of ``numbers`` was the caller, the called number or a non-agent party
    (spaces, dashes, dots and brackets ignored on both sides), oldest first."""
    return await conn.fetch(
        f"""SELECT c.* FROM calls c
             WHERE {_norm_sql('c.caller_number')} = ANY($1::text[])
                OR {_norm_sql('c.called_number')} = ANY($1::text[])
                OR EXISTS (SELECT 1 FROM call_parties p WHERE p.call_id = c.id AND p.role <> 'agent'
                                  AND {_norm_sql('p.number')} = ANY($1::text[]))
             ORDER BY c.started_at, c.id""", list(numbers))


async def agent_calls(conn: Conn, numbers: Sequence[str]) -> int:
    """How many calls have one of ``numbers`` as their agent: a sign the number is staff, not a caller."""
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM calls c WHERE {_norm_sql('c.agent')} = ANY($1::text[])", list(numbers))
    return count


async def erase_subject(pool: asyncpg.Pool, numbers: Sequence[str], storage: Storage | Path, *, actor: Principal,
                        reference: str | None = None) -> list[Outcome]:
    """Anonymize every call of the numbers; held and still-open calls are kept and reported."""
    async with pool.acquire() as conn:
        rows = await find_subject_calls(conn, numbers)
        outcomes = []
        for row in rows:
            out = await anonymize(conn, str(row["id"]), storage, actor=actor, reason="subject_erase",
                                  note={"reference": reference})
            outcomes.append(out)
        await audit.append(conn, actor=actor.name, role=actor.role, action="subject_erase",
                           details={"reference": reference, "calls": len(rows),
                                    "anonymized": sum(o.result == "anonymized" for o in outcomes),
                                    "held": [o.call_id for o in outcomes if o.result == "held"],
                                    "open": [o.call_id for o in outcomes if o.result == "open"]})
    return outcomes
