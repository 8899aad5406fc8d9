"""The transcript store (migration 008, callrec/store/transcripts.py) on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from support.opsapi import insert_call

from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
from callrec.store.transcripts import delete_transcript, load_transcript, save_transcript


def _transcript(agent_text: str = " Мы обсудим условия договора.") -> Transcript:
    words = agent_text.split(" ")[1:]
    agent_words = tuple(Word(" " + w, 1000 + 400 * i, 1300 + 400 * i, 0.9) for i, w in enumerate(words))
    caller = Track("caller", 0, (Segment(200, 900, " Hello, I want a refund.",
                                         (Word(" Hello,", 200, 400, 0.95), Word(" I", 420, 480, 0.9),
                                          Word(" want", 500, 600, 0.9), Word(" a", 610, 650, 0.8),
                                          Word(" refund.", 660, 900, 0.9))),),
                   (Interval(200, 900),))
    agent = Track("agent", 1, (Segment(1000, agent_words[-1].end_ms, agent_text, agent_words),),
                  (Interval(1000, agent_words[-1].end_ms),))
    return Transcript((caller, agent), 4000, "ru", model="whisper-base@d01c3014")


async def test_save_load_replace_search_delete(conn: asyncpg.Connection) -> None:
    call_id = await insert_call(conn, None, started=datetime(2026, 12, 1, 10, tzinfo=UTC), agent="201")
    t = _transcript()
    n = await save_transcript(conn, call_id, t.to_dict(), transcript_stats(t).to_dict(),
                              recording_sha256="ab" * 32, model_sha256="d01c3014", decode_s=0.5)
    assert n == 2
    stored = await load_transcript(conn, call_id)
    assert stored is not None
    assert [s["speaker"] for s in stored["segments"]] == ["caller", "agent"]
    assert stored["segments"][0]["words"][4] == {"text": " refund.", "start_ms": 660, "end_ms": 900,
                                                 "probability": 0.9}
    assert stored["stereo"] is True and stored["words"] == 5 + 4
    assert stored["caller_talk_ms"] == 700 and stored["agent_talk_ms"] == 1500
    assert abs(stored["agent_talk_ratio"] - 1500 / 2200) < 1e-3
    assert stored["talk_ms"] == 2200 and stored["silence_ms"] == 1800

    # One configuration stems both languages: a different word form finds the segment.
    async def said(q: str) -> list[str]:
        return [r["speaker"] for r in await conn.fetch(
            "SELECT speaker FROM transcript_segments "
            "WHERE call_id = $1::uuid AND tsv @@ plainto_tsquery('russian', $2)",
            call_id, q)]
    assert await said("договор") == ["agent"]
    assert await said("refunds") == ["caller"]
    assert await said("скидка") == []

    # Saved again (a job run twice, or a new model): one transcript, the new text only.
    t2 = _transcript(" Скидка на тариф.")
    assert await save_transcript(conn, call_id, t2.to_dict(), transcript_stats(t2).to_dict(),
                                 recording_sha256="ab" * 32) == 2
    assert await conn.fetchval("SELECT count(*) FROM transcripts") == 1
    assert await said("скидку") == ["agent"] and await said("договор") == []

    assert await delete_transcript(conn, call_id) is True
    assert await load_transcript(conn, call_id) is None
    assert await conn.fetchval("SELECT count(*) FROM transcript_segments") == 0
    assert await delete_transcript(conn, call_id) is False
