"""Keyword alerts on a real PostgreSQL: transcripts saved through store/transcripts.py, matched by
AlertMatcher in the saving transaction as the transcription runner does it."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from support import REPO
from support.dataops_helpers import run_cli, write_config
from support.hookprobe import PROBE, Attempts, Receiver
from support.opsapi import Bench, audit_rows, call, insert_call, running_bench
from support.settings import make_settings
from support.waiting import wait_for

from callrec.analytics.alerts import AlertMatcher
from callrec.config.settings import Settings
from callrec.hooks import HookRunner
from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
from callrec.store.transcripts import save_transcript

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
RULES = [
    # Word forms: the rule says "коммерческая тайна", the agent says "коммерческую тайну".
    {"name": "trade-secret", "phrases": ["коммерческая тайна", "confidential"]},
    {"name": "refund-caller", "phrases": ["refund"], "speaker": "caller"},  # the caller says "refunds"
    {"name": "agent-name", "phrases": ["меня зовут", "my name is"], "speaker": "agent", "kind": "not_said",
     "within_s": 30},
    {"name": "early-price", "phrases": ["цена"], "within_s": 10},
]


def track(speaker: str, channel: int, *lines: tuple[int, str]) -> Track:
    """A track of segments, each ``(start_ms, text)``, words 400 ms apart."""
    segments = []
    for start, text in lines:
        words = tuple(Word(" " + w, start + 400 * i, start + 400 * i + 300, 0.9) for i, w in enumerate(text.split()))
        segments.append(Segment(start, words[-1].end_ms, " " + text, words))
    return Track(speaker, channel, tuple(segments), tuple(Interval(s.start_ms, s.end_ms) for s in segments))


def transcript(caller: list[tuple[int, str]], agent: list[tuple[int, str]], duration_ms: int = 60000) -> Transcript:
    return Transcript((track("caller", 0, *caller), track("agent", 1, *agent)), duration_ms, "ru",
                      model="whisper-base@d01c3014")


async def save_and_match(conn: asyncpg.Connection, matcher: AlertMatcher, call_id: str, t: Transcript) -> None:
    """As the runner does it: the transcript and its alerts in one transaction."""
    async with conn.transaction():
        await save_transcript(conn, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)
        await matcher(conn, call_id)


async def alerts_of(conn: asyncpg.Connection, call_id: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM alerts WHERE call_id = $1::uuid", call_id)
    return {r["rule"]: dict(r) for r in rows}


def settings_with(dsn: str | None = None, **hooks: Any) -> Settings:
    return make_settings(None, dsn, alerts={"rules": RULES}, hooks=hooks)


async def test_rules_fire_once_per_call_with_word_forms_speaker_and_time(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    call = await insert_call(conn, None, started=T0, agent="201")
    t = transcript(caller=[(500, "Здравствуйте я хочу вернуть деньги"), (20000, "Мне нужны refunds")],
                   agent=[(3000, "Добрый день компания Ромашка"),
                          (40000, "Меня зовут Анна это коммерческую тайну не разглашаем")])
    await save_and_match(conn, matcher, call, t)
    got = await alerts_of(conn, call)
    assert set(got) == {"trade-secret", "refund-caller", "agent-name"}
    secret = got["trade-secret"]
    assert (secret["kind"], secret["phrase"], secret["speaker"]) == ("said", "коммерческая тайна", "agent")
    assert secret["offset_ms"] == 40000 + 4 * 400  # the first word of the phrase as said
    assert (got["refund-caller"]["speaker"], got["refund-caller"]["offset_ms"]) == ("caller", 20000 + 2 * 400)
    # The agent gave their name, but after 30 s: a script-compliance alert that says when ("меня" is a
    # stop word, so the match, as in search, starts at "зовут").
    name = got["agent-name"]
    assert (name["kind"], name["phrase"], name["speaker"], name["offset_ms"]) == (
        "not_said", "меня зовут", "agent", 40400)

    # The same transcript saved and matched again (a job run twice): no second alert, same ids.
    ids = {k: v["id"] for k, v in got.items()}
    await save_and_match(conn, matcher, call, t)
    again = await alerts_of(conn, call)
    assert {k: v["id"] for k, v in again.items()} == ids
    assert await conn.fetchval("SELECT count(*) FROM alerts") == 3


async def test_speaker_restriction_and_not_said_in_time(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    # The agent says "refunds" (not the caller), gives their name in time, and says the price early.
    call = await insert_call(conn, None, started=T0, agent="201")
    await save_and_match(conn, matcher, call, transcript(
        caller=[(1000, "Алло")], agent=[(2000, "Меня зовут Олег"), (5000, "Цены и refunds")]))
    got = await alerts_of(conn, call)
    assert set(got) == {"early-price"}  # цены ~ цена; refunds said by the agent only; name in time
    assert (got["early-price"]["speaker"], got["early-price"]["offset_ms"]) == ("agent", 5000)

    # The name never said at all: the alert names the phrases and no offset.
    absent = await insert_call(conn, None, started=T0 + timedelta(minutes=1), agent="201")
    await save_and_match(conn, matcher, absent, transcript(caller=[(500, "Алло")],
                                                           agent=[(1500, "Слушаю вас"), (15000, "Цена вопроса")]))
    got = await alerts_of(conn, absent)
    assert set(got) == {"agent-name"}  # the price came after 10 s
    assert (got["agent-name"]["phrase"], got["agent-name"]["offset_ms"]) == ("меня зовут | my name is", None)

    # An unanswered call (the agent said nothing): nobody to hold to the script.
    silent = await insert_call(conn, None, started=T0 + timedelta(minutes=2), agent="201")
    await save_and_match(conn, matcher, silent, transcript(caller=[(500, "Алло алло")], agent=[]))
    assert await alerts_of(conn, silent) == {}


async def test_a_rule_added_later_fires_on_a_new_transcript_and_a_config_name_wins(conn: asyncpg.Connection) -> None:
    matcher = AlertMatcher(settings_with())
    await conn.execute("INSERT INTO alert_rules (name, phrases, created_by) VALUES "
                       "('complaint', '{жалоба}', 'admin1'), ('trade-secret', '{скидка}', 'admin1')")
    call = await insert_call(conn, None, started=T0, agent="201")
    await save_and_match(conn, matcher, call, transcript(
        caller=[(700, "У меня жалобу примите и скидку")], agent=[(3000, "Меня зовут Анна")]))
    assert set(await alerts_of(conn, call)) == {"complaint"}  # "trade-secret" is the file's rule, not скидка


# --- the API and the CLI: visibility, paging, audit, rules ---------------------------------------------------

SAID = transcript(caller=[(800, "Алло")], agent=[(2000, "Меня зовут Анна это коммерческая тайна")])


@pytest.fixture
async def alert_bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    """The ops API bench (calls of every kind) with the config's rules, and a "trade-secret" alert on the
    agent's own call, another agent's call and a confidential call of the same agent."""
    async with running_bench(database, tmp_path, {"alerts": {"rules": RULES}}) as b:
        matcher = AlertMatcher(b.settings)
        async with b.pool.acquire() as conn:
            for label in ("mine", "other", "confidential"):
                await save_and_match(conn, matcher, b.calls[label], SAID)
        yield b


async def get_alerts(http: aiohttp.ClientSession, bench: Bench, role: str, **params: str) -> tuple[int, Any]:
    status, body, _ = await call(http, bench, "GET", "/api/v1/alerts", role, params=params)
    return status, json.loads(body)


async def test_the_alert_list_follows_the_visibility_rule_pages_and_is_audited(
        alert_bench: Bench, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    b = alert_bench
    c = b.calls
    seen: dict[str, set[str]] = {}
    for role in ("admin", "security", "supervisor", "agent"):
        status, page = await get_alerts(http, b, role, rule="trade-secret")
        assert status == 200 and page["next"] is None
        seen[role] = {a["call_id"] for a in page["items"]}
    assert seen["admin"] == seen["security"] == {c["mine"], c["other"], c["confidential"]}
    assert seen["supervisor"] == {c["mine"], c["other"]}  # never the confidential call's alert
    assert seen["agent"] == {c["mine"]}  # own calls only, and not the confidential one
    assert (await get_alerts(http, b, "auditor"))[0] == 403
    item = (await get_alerts(http, b, "agent", rule="trade-secret"))[1]["items"][0]
    assert set(item) == {"id", "rule", "call_id", "kind", "phrase", "speaker", "offset_ms", "created_at"}
    assert (item["kind"], item["phrase"], item["speaker"], item["offset_ms"]) == (
        "said", "коммерческая тайна", "agent", 2000 + 4 * 400)

    # Keyset pages: every alert once, newest first.  (3 calls x trade-secret; the greeting was said in time.)
    ids, cursor = [], None
    while True:
        status, page = await get_alerts(http, b, "admin", limit="2", **({"cursor": cursor} if cursor else {}))
        assert status == 200 and len(page["items"]) <= 2
        ids += [a["id"] for a in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    all_ids = [r["id"] for r in await b.pool.fetch("SELECT id FROM alerts ORDER BY created_at DESC, id DESC")]
    assert ids == all_ids and len(ids) == 3
    assert [a["call_id"] for a in (await get_alerts(http, b, "admin", call_id=c["other"]))[1]["items"]] == [c["other"]]
    assert (await get_alerts(http, b, "admin", since="2999-01-01T00:00:00Z"))[1]["items"] == []
    for bad, message in ((dict(limit="0"), "limit:"), (dict(cursor="nope"), "cursor:"), (dict(since="x"), "since:"),
                         (dict(call_id="12"), "call_id:"), (dict(colour="red"), "colour: unknown parameter")):
        status, body = await get_alerts(http, b, "admin", **bad)
        assert status == 400 and body["error"].startswith(message), body

    # Listing is audited like search: one alerts_list entry at the first page of a window.
    entries = await audit_rows(b, actor="supervisor1(token:supervisor-token)", action="alerts_list")
    assert len(entries) == 1 and json.loads(entries[0]["details"])["filter"] == {"rule": "trade-secret"}

    # The CLI as the supervisor sees what the API shows them; as the operator (admin) everything.
    cfg = write_config(tmp_path / "c.toml", b.dsn, b.rec_dir)
    out = run_cli(cfg, "alerts", "--as", "supervisor1", "--json")
    assert out.returncode == 0, out.stderr
    assert {json.loads(line)["call_id"] for line in out.stdout.splitlines()} == seen["supervisor"]
    out = run_cli(cfg, "alerts", "--rule", "trade-secret", "--json")
    assert {json.loads(line)["call_id"] for line in out.stdout.splitlines()} == seen["admin"]
    table = run_cli(cfg, "alerts", "--as", "agent1")
    assert table.returncode == 0 and c["mine"] in table.stdout and c["confidential"] not in table.stdout
    assert await audit_rows(b, action="alerts_list", role="supervisor")  # the CLI's page, as that user
    bad = run_cli(cfg, "alerts", "--as", "nobody")
    assert bad.returncode == 2 and bad.stderr.strip() == "callrec: --as: no active user 'nobody'"


async def test_rules_through_the_api_by_role_and_audited(alert_bench: Bench, http: aiohttp.ClientSession,
                                                         tmp_path: Path) -> None:
    b = alert_bench
    rule = {"name": "complaint", "phrases": ["жалоба", "complaint"], "speaker": "caller"}
    for role in ("supervisor", "agent", "auditor"):
        assert (await call(http, b, "POST", "/api/v1/alert-rules", role, json=rule))[0] == 403
        assert (await call(http, b, "DELETE", "/api/v1/alert-rules/trade-secret", role))[0] == 403
    status, body, _ = await call(http, b, "POST", "/api/v1/alert-rules", "admin", json=rule)
    assert status == 201, body
    added = json.loads(body)
    assert (added["name"], added["phrases"], added["source"], added["created_by"]) == (
        "complaint", ["жалоба", "complaint"], "api", "admin1(token:admin-token)")
    for bad, code, message in (
            (rule, 409, "name: an alert rule of this name exists"),
            ({"name": "trade-secret", "phrases": ["x"]}, 409, "name: a rule of the config file has this name"),
            ({"name": "neg", "phrases": ["не"]}, 400, "phrases: 'не' has only stop words"),
            ({"name": "x", "phrases": ["y"], "speaker": "boss"}, 400, "speaker: expected one of"),
            ({"name": "x", "phrases": ["y"], "within_s": 0}, 400, "within_s: expected 1-86400"),
            ({"name": "x y", "phrases": ["y"]}, 400, "name: expected letters"),
            ({"phrases": ["y"]}, 400, "name: missing")):
        status, body, _ = await call(http, b, "POST", "/api/v1/alert-rules", "security", json=bad)
        assert status == code and json.loads(body)["error"].startswith(message), body

    status, body, _ = await call(http, b, "GET", "/api/v1/alert-rules", "supervisor")
    listed = {r["name"]: r for r in json.loads(body)["items"]}
    assert status == 200 and set(listed) == {r["name"] for r in RULES} | {"complaint"}
    assert listed["trade-secret"]["source"] == "config" and listed["complaint"]["source"] == "api"
    assert listed["agent-name"]["within_s"] == 30 and listed["agent-name"]["kind"] == "not_said"

    # The new rule fires on the next transcript.
    async with b.pool.acquire() as conn:
        await save_and_match(conn, AlertMatcher(b.settings), b.calls["party"],
                             transcript(caller=[(500, "У меня жалобы")], agent=[(900, "Меня зовут Анна")]))
    assert [a["rule"] for a in (await get_alerts(http, b, "admin", call_id=b.calls["party"]))[1]["items"]] == [
        "complaint"]

    assert (await call(http, b, "DELETE", "/api/v1/alert-rules/trade-secret", "admin"))[0] == 409
    assert (await call(http, b, "DELETE", "/api/v1/alert-rules/complaint", "security"))[0] == 200
    assert (await call(http, b, "DELETE", "/api/v1/alert-rules/complaint", "security"))[0] == 404
    assert (await get_alerts(http, b, "admin", rule="complaint"))[1]["items"]  # its alerts stay
    actions = [(r["action"], r["actor"]) for r in await audit_rows(b) if r["action"].startswith("alert_rule")]
    assert actions == [("alert_rule_add", "admin1(token:admin-token)"),
                       ("alert_rule_delete", "security1(token:security-token)")]

    # The CLI: list (config and API), add, delete; a config name refused.
    cfg = write_config(tmp_path / "c.toml", b.dsn, b.rec_dir, extra=ALERTS_TOML)
    out = run_cli(cfg, "alerts", "rules", "add", "refund", "--phrase", "refund", "--phrase", "вернуть деньги",
                  "--speaker", "caller")
    assert out.returncode == 0 and out.stdout.strip() == "added: alert rule refund", out.stderr
    listed_cli = [json.loads(line) for line in run_cli(cfg, "alerts", "rules", "--json").stdout.splitlines()]
    assert {(r["name"], r["source"]) for r in listed_cli} >= {("trade-secret", "config"), ("refund", "api")}
    refused = run_cli(cfg, "alerts", "rules", "delete", "trade-secret")
    assert refused.returncode == 2 and "a rule of the config file" in refused.stderr
    assert run_cli(cfg, "alerts", "rules", "delete", "refund").returncode == 0
    assert run_cli(cfg, "alerts", "rules", "delete", "refund").returncode == 1


ALERTS_TOML = '\n[[alerts.rules]]\nname = "trade-secret"\nphrases = ["коммерческая тайна"]\n'


def test_a_bad_rule_in_the_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", "postgresql://x@127.0.0.1:1/x", tmp_path,
                       extra=ALERTS_TOML + '\n[[alerts.rules]]\nname = "late"\nphrases = ["x"]\nkind = "late"\n')
    out = run_cli(cfg, "alerts")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "callrec: config error: alerts.rules[1].kind: expected one of said, not_said, got 'late'"]


# --- delivery through the hook outbox ------------------------------------------------------------------------

async def test_an_alert_is_delivered_by_webhook_signed_retried_and_by_command(database: str, tmp_path: Path) -> None:
    receiver = Receiver(statuses=[500])  # the first delivery fails: retried with backoff
    await receiver.start()
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = tmp_path / "out.jsonl"
    settings = settings_with(database, alert_webhook_url=receiver.url + "?token=in-the-url",
                             webhook_hmac_key="hmac-key", retry_initial=0.2, retry_max=0.5,
                             alert_command=[sys.executable, str(script), "{rule}", "{alert_id}", "{call_id}",
                                            str(out)])
    pool = await asyncpg.create_pool(database, min_size=1, max_size=3)
    attempts = Attempts()
    runner = HookRunner(settings, pool, None, retry_delay=0.2)
    runner.on_attempt.append(attempts)
    runner.start()
    try:
        await wait_for(lambda: runner.listening, what="the hook runner to LISTEN for alert jobs")
        async with pool.acquire() as conn:
            confidential = await insert_call(conn, None, started=T0, agent="201", confidential=True)
            await save_and_match(conn, AlertMatcher(settings), confidential, SAID)
        alert = await pool.fetchrow("SELECT * FROM alerts WHERE call_id = $1::uuid", confidential)
        jobs = await pool.fetch("SELECT hook, event, key FROM hook_jobs ORDER BY hook")
        assert [tuple(j) for j in jobs] == [("command", "alert.matched", f"alert:{alert['id']}"),
                                            ("webhook", "alert.matched", f"alert:{alert['id']}")]
        # No wake(): the alert's NOTIFY, delivered at commit, wakes the runner (its poll is 30 s).
        await attempts.wait(lambda a: sum(x.ok for x in a) == 2, what="both alert hooks to succeed")
        # The same transcript matched again: no new alert, no new job.
        async with pool.acquire() as conn:
            await save_and_match(conn, AlertMatcher(settings), confidential, SAID)
        assert await pool.fetchval("SELECT count(*) FROM hook_jobs") == 2
    finally:
        await runner.close()
        await receiver.stop()
        await pool.close()

    webhook = [a for a in attempts.items if a.hook == "webhook"]
    assert [(a.ok, a.attempt) for a in webhook] == [(False, 1), (True, 2)]
    assert "HTTP 500" in (webhook[0].error or "") and "in-the-url" not in (webhook[0].error or "")
    assert [r["status"] for r in receiver.requests] == [500, 200]
    delivered = receiver.requests[-1]
    headers = delivered["headers"]
    assert headers["Idempotency-Key"] == f"{alert['id']}:webhook"
    assert headers["X-Callrec-Event"] == "alert.matched" and headers["X-Callrec-Attempt"] == "2"
    mac = hmac.new(b"hmac-key", headers["X-Callrec-Timestamp"].encode() + b"." + delivered["body"], hashlib.sha256)
    assert headers["X-Callrec-Signature"] == f"sha256={mac.hexdigest()}"
    payload = delivered["json"]
    assert payload["event"] == "alert.matched" and payload["call_id"] == confidential
    assert payload["alert"] == {"id": alert["id"], "rule": "trade-secret", "kind": "said",
                                "phrase": "коммерческая тайна", "speaker": "agent", "offset_ms": 2000 + 4 * 400,
                                "created_at": alert["created_at"].isoformat()}
    assert payload["call"]["caller_number"] == "+4930123456" and payload["call"]["started_at"] == T0.isoformat()
    # No words of the (confidential) call beyond the rule's own phrase.
    assert "Анна" not in delivered["body"].decode() and "segments" not in payload
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == 1 and runs[0]["argv"] == ["trade-secret", str(alert["id"]), confidential, str(out)]
    assert runs[0]["stdin"] == payload
    assert runs[0]["env"]["CALLREC_EVENT"] == "alert.matched" and runs[0]["env"]["CALLREC_ALERT_ID"] == str(alert["id"])


async def test_a_failure_in_matching_costs_the_alerts_never_the_transcript(
        database: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    """Under the documented app role without INSERT on alerts (a refusal that is not an outage): the
    transcript is stored, no alert, one error in the log."""
    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    statements = [line.replace(':"app"', f'"{role}"') for line in (REPO / "docs" / "sql" / "app_role.sql")
                  .read_text().splitlines() if line.strip() and not line.startswith("--")]
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        for statement in statements:
            await conn.execute(statement)
        await conn.execute(f'REVOKE INSERT ON alerts FROM "{role}"')
        call_id = await insert_call(conn, None, started=T0, agent="201")
        parts = urlsplit(database)
        app = await asyncpg.connect(urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}")))
        try:
            await save_and_match(app, AlertMatcher(settings_with()), call_id, SAID)
        finally:
            await app.close()
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
    assert await conn.fetchval("SELECT count(*) FROM transcript_segments WHERE call_id = $1::uuid", call_id) == 2
    assert await conn.fetchval("SELECT count(*) FROM alerts") == 0
    errors = [r for r in caplog.records if r.name == "callrec.alerts" and r.levelname == "ERROR"]
    assert len(errors) == 1 and call_id in errors[0].getMessage()
