"""Denied and refused requests leave a trace (issue 10, item 4): a 403, a 404 for a call that
exists but is hidden from the principal, and a deletion refused by legal hold are audited;
denials aggregated per principal, kind, route and window, so a prober cannot flood the trail."""

from __future__ import annotations

import json
import uuid

import aiohttp
from support.opsapi import Bench, audit_rows, call

from callrec.dataops.deletion import set_legal_hold
from callrec.store import audit

AGENT = "agent1(token:agent-token)"
SUPERVISOR = "supervisor1(token:supervisor-token)"


async def denials(bench: Bench, actor: str) -> list[dict[str, object]]:
    return [{**json.loads(r["details"]), "call_id": r["call_id"] and str(r["call_id"])}
            for r in await audit_rows(bench, actor=actor, action="access_denied")]


async def test_agent_probing_a_confidential_call_writes_one_entry_whose_count_grows(
        bench: Bench, http: aiohttp.ClientSession) -> None:
    secret, other = bench.calls["confidential"], bench.calls["other"]
    # The agent's own confidential call is hidden from it (confidential calls: admin and security only).
    for _ in range(5):
        st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{secret}", "agent")
        assert (st, json.loads(body)) == (404, {"error": "no such call"})
    # An unknown id gives the same answer, and is no denial: nothing was hidden.
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{uuid.uuid4()}", "agent")
    assert (st, json.loads(body)) == (404, {"error": "no such call"})
    # Another route on another hidden call (someone else's), same kind of denial, another target.
    assert (await call(http, bench, "GET", f"/api/v1/calls/{other}/audio", "agent"))[0] == 404
    assert (await call(http, bench, "GET", f"/api/v1/calls/{other}", "agent"))[0] == 404

    entries = await denials(bench, AGENT)
    assert [(e["kind"], e["target"], e["count"], e["call_id"]) for e in entries] == [
        ("hidden_call", "GET /api/v1/calls/{id}", 1, secret),
        ("hidden_call", "GET /api/v1/calls/{id}/audio", 1, other)]
    # The others are counted, not written: the trail does not grow with the probes.
    win = await bench.pool.fetchrow("SELECT count, call_ids FROM audit_denial_windows WHERE actor = $1 "
                                    "AND target = 'GET /api/v1/calls/{id}'", AGENT)
    assert win["count"] == 5 and sorted(win["call_ids"]) == sorted([secret, other])
    for _ in range(20):
        assert (await call(http, bench, "GET", f"/api/v1/calls/{secret}", "agent"))[0] == 404
    assert len(await denials(bench, AGENT)) == 2
    assert await bench.pool.fetchval("SELECT count FROM audit_denial_windows WHERE actor = $1 "
                                     "AND target = 'GET /api/v1/calls/{id}'", AGENT) == 25
    # The window's end writes one entry with the others' count; the counts add up to the denials.
    assert await audit.close_denial_windows(bench.pool, 0.0) == 2
    entries = await denials(bench, AGENT)
    assert len(entries) == 3
    detail = [e for e in entries if e["target"] == "GET /api/v1/calls/{id}"]
    assert sum(int(e["count"]) for e in detail) == 26  # 5 + 1 + 20 probes
    assert sorted(detail[-1]["call_ids"]) == sorted([secret, other])  # type: ignore[arg-type]
    assert await bench.pool.fetchval("SELECT count(*) FROM audit_denial_windows") == 0
    # Visible calls and the agent's own work are not denials.
    assert (await call(http, bench, "GET", f"/api/v1/calls/{bench.calls['mine']}", "agent"))[0] == 200
    assert len(await denials(bench, AGENT)) == 3


async def test_forbidden_admin_route_is_audited_and_written_at_shutdown(bench: Bench,
                                                                        http: aiohttp.ClientSession) -> None:
    # The supervisor may not read retention nor delete audio: 403, before any call lookup.
    for _ in range(3):
        assert (await call(http, bench, "GET", "/api/v1/retention", "supervisor"))[0] == 403
    st, _, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{bench.calls['other']}/audio", "supervisor")
    assert st == 403
    entries = await denials(bench, SUPERVISOR)
    assert [(e["kind"], e["target"], e["count"], e["call_id"]) for e in entries] == [
        ("forbidden", "GET /api/v1/retention", 1, None), ("forbidden", "DELETE /api/v1/calls/{id}/audio", 1, None)]
    assert all(r["role"] == "supervisor" for r in await audit_rows(bench, actor=SUPERVISOR))
    # Stopping the API writes every open window's entry: no count is lost.
    await bench.server.stop()
    entries = await denials(bench, SUPERVISOR)
    assert [(e["target"], e["count"]) for e in entries[2:]] == [("GET /api/v1/retention", 2)]
    assert await bench.pool.fetchval("SELECT count(*) FROM audit_denial_windows") == 0


async def test_held_call_delete_refused_through_the_api_is_audited(bench: Bench,
                                                                   http: aiohttp.ClientSession) -> None:
    held = bench.calls["other"]
    async with bench.pool.acquire() as conn:
        await set_legal_hold(conn, held, True, actor="counsel", reason="case 9")
    st, body, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{held}/audio", "admin")
    assert (st, json.loads(body)) == (409, {"error": "the call is under legal hold"})
    [refusal] = await audit_rows(bench, action="delete_refused")
    assert refusal["actor"] == "admin1(token:admin-token)" and str(refusal["call_id"]) == held
    assert json.loads(refusal["details"])["legal_hold"] == "case 9"
    assert (bench.rec_dir / (await bench.pool.fetchval(
        "SELECT recording_path FROM calls WHERE id = $1::uuid", held))).exists()
