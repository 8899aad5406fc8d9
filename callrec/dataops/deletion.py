"""The only gate for deleting a call's audio or anonymizing its row, and the legal hold it obeys.

The web API (DELETE audio), the CLI (subject erase), the retention job and subject erasure all
come through here.  The gate locks the row, refuses a call under legal hold (the refusal is
audited) or still going on, removes the audio wherever it is (``callrec.storage``: the local file
only inside the recordings folder, the object in the bucket), marks the row and appends the audit
entry, all in one transaction.  The database backs this up: a trigger (migration 006) refuses
marking a held call's audio deleted, anonymizing it or deleting its row, whatever code tries.

A call's transcript (migration 008) is made from its audio and goes with it: deleting the audio deletes
the transcript and the call's transcription job in the same transaction (``_delete_transcript``), and a
trigger (migration 011) refuses deleting a held call's transcript or storing one for deleted audio.

Rows are never deleted.  Anonymizing erases the personal fields and leaves a tombstone
(``anonymized_at``), so counts, statistics and the audit entries that name the call stay coherent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from callrec.access import Principal
from callrec.storage import Storage, as_storage, in_thread
from callrec.store import audit
from callrec.store.db import Conn
from callrec.store.transcripts import delete_transcript

# What anonymizing a call sets: the fields that identify the caller or the called party.  The
# agent's extension, the consent evidence, the times, durations and hashes stay (statistics and
# the audit trail need them, and they identify nobody outside the PBX).
PERSONAL_FIELDS: dict[str, Any] = {
    "caller_number": None,
    "caller_name": None,
    "called_number": None,
    "channel": "",
    "uniqueid": "",
    "linkedid": None,
    "warnings": [],  # may quote caller-supplied text
}

# The columns of ``calls`` the gate reads: a caller that locks rows itself (retention's batches)
# selects these.
GATE_COLUMNS = ("id, recording_path, recording_sha256, recording_bytes, audio_deleted_at, anonymized_at, "
                "legal_hold, legal_hold_reason, finalized_at")


@dataclass
class Outcome:
    call_id: str
    result: str  # deleted | anonymized | held | open | already | no_audio | not_found
    detail: str = ""
    audio_deleted: bool = False  # anonymize: the recording went too
    file_existed: bool = False  # deleted: the file was there (and is gone now)
    deleted_at: datetime | None = None  # deleted: as the row now says
    transcript_deleted: bool = False  # the call's transcript went with the audio


def _who(actor: Principal | str) -> tuple[str, str | None]:
    if isinstance(actor, Principal):
        return actor.name, actor.role
    return actor, None


async def _refused(conn: Conn, row: asyncpg.Record, what: str, *, actor: Principal | str, reason: str,
                   remote: str | None) -> Outcome | None:
    """Why the locked call may not be deleted (held: the refusal is audited), or None."""
    call_id = str(row["id"])
    if row["legal_hold"]:
        name, role = _who(actor)
        await audit.append(conn, actor=name, role=role, action="delete_refused", call_id=call_id,
                           details={"what": what, "reason": reason, "legal_hold": row["legal_hold_reason"]},
                           remote=remote)
        return Outcome(call_id, "held", row["legal_hold_reason"] or "")
    if row["finalized_at"] is None:
        return Outcome(call_id, "open", "the call is still going on")
    return None


async def _lock(conn: Conn, call_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {GATE_COLUMNS} FROM calls WHERE id = $1::uuid FOR UPDATE", call_id)


async def delete_locked_audio(conn: Conn, row: asyncpg.Record, storage: Storage | Path, *, actor: Principal | str,
                              reason: str, remote: str | None = None) -> Outcome:
    """Delete the recording of a call whose row the caller has locked (``SELECT GATE_COLUMNS ...
    FOR UPDATE``), inside the caller's transaction.  The gate is checked on the row."""
    refused = await _refused(conn, row, "audio", actor=actor, reason=reason, remote=remote)
    if refused is not None:
        return refused
    return await _delete_audio(conn, row, storage, actor=actor, reason=reason, remote=remote)


async def _delete_audio(conn: Conn, row: asyncpg.Record, storage: Storage | Path, *, actor: Principal | str,
                        reason: str, remote: str | None) -> Outcome:
    call_id = str(row["id"])
    if row["audio_deleted_at"] is not None:
        return Outcome(call_id, "already")
    if not row["recording_path"]:
        return Outcome(call_id, "no_audio")
    # The file goes first: if it cannot, the transaction rolls back and the row does not claim it went.
    # Local file, object and key files alike (callrec.storage); an unreachable bucket raises, so nothing is marked.
    existed = await in_thread(as_storage(storage).delete, row["recording_path"])
    await conn.execute("UPDATE storage_outbox SET state = 'gone', updated_at = now() WHERE path = $1",
                       row["recording_path"])
    name, role = _who(actor)
    transcript = await _delete_transcript(conn, call_id)
    deleted_at = await conn.fetchval(
        "UPDATE calls SET audio_deleted_at = now(), audio_deleted_by = $2, audio_deleted_reason = $3, "
        "updated_at = now() WHERE id = $1 RETURNING audio_deleted_at", row["id"], name, reason)
    await audit.append(conn, actor=name, role=role, action="delete_audio", call_id=call_id, remote=remote,
                       details={"reason": reason, "recording_path": row["recording_path"],
                                "recording_sha256": row["recording_sha256"],
                                "recording_bytes": row["recording_bytes"], "file_existed": existed,
                                "transcript_deleted": transcript})
    return Outcome(call_id, "deleted", "" if existed else "the file was already gone", file_existed=existed,
                   deleted_at=deleted_at, transcript_deleted=transcript)


async def _delete_transcript(conn: Conn, call_id: str) -> bool:
    """Remove the call's transcript and its transcription job (the gate has checked the hold).  The job
    goes rather than staying as history: with the audio gone there is nothing to transcribe again, and a
    pending job must not be claimed.  True when there was a transcript."""
    await conn.execute("DELETE FROM speech_jobs WHERE call_id = $1::uuid", call_id)
    return await delete_transcript(conn, call_id)


async def delete_audio(conn: Conn, call_id: str, storage: Storage | Path, *, actor: Principal | str,
                       reason: str = "manual", remote: str | None = None) -> Outcome:
    """Delete one call's recording; the row stays and says so.  Legal hold refuses (audited)."""
    async with conn.transaction():
        row = await _lock(conn, call_id)
        if row is None:
            return Outcome(call_id, "not_found")
        return await delete_locked_audio(conn, row, storage, actor=actor, reason=reason, remote=remote)


async def anonymize_locked(conn: Conn, row: asyncpg.Record, storage: Storage | Path, *, actor: Principal | str,
                           reason: str, remote: str | None = None, note: dict[str, Any] | None = None) -> Outcome:
    """Erase the audio and personal fields of a call whose row the caller has locked, inside the
    caller's transaction.  The gate is checked on the row."""
    refused = await _refused(conn, row, "call", actor=actor, reason=reason, remote=remote)
    if refused is not None:
        return refused
    call_id = str(row["id"])
    if row["anonymized_at"] is not None:
        return Outcome(call_id, "already")
    audio = await _delete_audio(conn, row, storage, actor=actor, reason=reason, remote=remote)
    # A call without audio (or whose audio went before transcripts were tied to it) may still have one.
    transcript = audio.transcript_deleted or await _delete_transcript(conn, call_id)
    sets = ", ".join(f"{col} = ${i + 2}" for i, col in enumerate(PERSONAL_FIELDS))
    await conn.execute(
        f"UPDATE calls SET {sets}, anonymized_at = now(), anonymized_reason = ${len(PERSONAL_FIELDS) + 2}, "
        "updated_at = now() WHERE id = $1", row["id"], *PERSONAL_FIELDS.values(), reason)
    parties = await conn.execute(
        "UPDATE call_parties SET number = NULL, name = NULL, channel = '' WHERE call_id = $1 AND role <> 'agent'",
        row["id"])
    # Tags are free text staff typed about the call: they may name the caller.
    tags = await conn.execute("DELETE FROM call_tags WHERE call_id = $1", row["id"])
    hooks = await _erase_hook_payloads(conn, row["id"])
    alerts = await _erase_alerts(conn, row["id"])
    name, role = _who(actor)
    await audit.append(conn, actor=name, role=role, action="anonymize", call_id=call_id, remote=remote,
                       details={"reason": reason, **(note or {}), "fields": list(PERSONAL_FIELDS),
                                "parties": _count(parties), "tags_removed": _count(tags), "hook_jobs": hooks,
                                "alerts_removed": alerts,
                                "transcript_deleted": transcript})
    return Outcome(call_id, "anonymized", audio_deleted=audio.result == "deleted", transcript_deleted=transcript)


async def anonymize(conn: Conn, call_id: str, storage: Storage | Path, *, actor: Principal | str, reason: str,
                    remote: str | None = None, note: dict[str, Any] | None = None) -> Outcome:
    """Erase a call's audio and personal fields; the row stays as a tombstone.  Legal hold refuses."""
    async with conn.transaction():
        row = await _lock(conn, call_id)
        if row is None:
            return Outcome(call_id, "not_found")
        return await anonymize_locked(conn, row, storage, actor=actor, reason=reason, remote=remote, note=note)


async def _erase_hook_payloads(conn: Conn, call_id: Any) -> int:
    """The post-recording hook outbox (policy part, migration 004) holds a copy of the call's metadata:
    blank it, and cancel hooks that have not run yet, so an erased caller is not sent on afterwards."""
    if not await conn.fetchval("SELECT to_regclass('hook_jobs') IS NOT NULL"):
        return 0
    status = await conn.execute(
        """UPDATE hook_jobs SET payload = jsonb_build_object('call_id', call_id::text, 'anonymized', true),
                  last_error = CASE WHEN state = 'pending' THEN 'cancelled: the call was anonymized'
                                    ELSE last_error END,
                  state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END
            WHERE call_id = $1""", call_id)
    return _count(status)


async def _erase_alerts(conn: Conn, call_id: Any) -> int:
    """Keyword alerts (migration 009) say what was said on the call and when: like tags they outlive the
    audio (statistics), and go when the call is anonymized."""
    return _count(await conn.execute("DELETE FROM alerts WHERE call_id = $1", call_id))


def _count(status: str) -> int:
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0


# -- legal hold: what the gate refuses on -------------------------------------------------------


async def set_legal_hold(conn: Conn, call_id: str, hold: bool, *, actor: Principal | str,
                         reason: str | None, remote: str | None = None,
                         visible_sql: str = "TRUE", visible_args: Sequence[Any] = ()) -> dict[str, Any] | None:
    """Set or release the hold; audited.  None when there is no such (visible) call."""
    name, role = _who(actor)
    n = len(visible_args)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT c.id, c.legal_hold, c.legal_hold_reason FROM calls c WHERE c.id = ${n + 1}::uuid "
            f"AND {visible_sql} FOR UPDATE OF c", *visible_args, call_id)
        if row is None:
            return None
        new = await conn.fetchrow(
            "UPDATE calls SET legal_hold = $2, legal_hold_by = $3, legal_hold_at = now(), legal_hold_reason = $4, "
            "updated_at = now() WHERE id = $1 "
            "RETURNING id, legal_hold, legal_hold_by, legal_hold_at, legal_hold_reason, audio_deleted_at, "
            "anonymized_at",
            row["id"], hold, name, reason)
        assert new is not None  # the row is locked: the UPDATE finds it
        await audit.append(conn, actor=name, role=role, action="legal_hold" if hold else "legal_hold_release",
                           call_id=call_id, remote=remote,
                           details={"reason": reason, "was": row["legal_hold"],
                                    "previous_reason": row["legal_hold_reason"]})
    return {"id": str(new["id"]), "legal_hold": new["legal_hold"], "legal_hold_by": new["legal_hold_by"],
            "legal_hold_at": new["legal_hold_at"].isoformat(), "legal_hold_reason": new["legal_hold_reason"],
            # A hold keeps what is left: say so when the audio or the personal fields are already gone.
            "audio_deleted_at": _iso(new["audio_deleted_at"]), "anonymized_at": _iso(new["anonymized_at"])}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
