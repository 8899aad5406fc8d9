"""Metrics, JSON logs, systemd's notify protocol and the shipped unit file (no Asterisk, no PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from callrec import systemd
from callrec.cli.main import JsonFormatter
from callrec.config.settings import ConfigError, parse_settings
from callrec.hooks import Attempt
from callrec.metrics import Metrics
from callrec.store.record import CallRecord

REPO = Path(__file__).resolve().parents[2]
BASE = {"asterisk": {"ari_password": "x", "ami_password": "y"}}


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by Prometheus' own text parser."""
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def call(consent: str = "implied", status: str = "ready", latency: float | None = 0.04,
         finalize: float = 0.3, door: str = "ari") -> CallRecord:
    t0 = datetime(2026, 12, 5, 10, tzinfo=UTC)
    return CallRecord(id="c", door=door, uniqueid="1.1", started_at=t0, consent=consent, recording_status=status,
                      notice_started_at=t0 + timedelta(seconds=latency) if latency is not None else None,
                      ended_at=t0 + timedelta(seconds=60), finalized_at=t0 + timedelta(seconds=60 + finalize))


def test_finished_calls_are_counted_by_consent_status_and_timed() -> None:
    m = Metrics("9.9")
    m.observe_call(call())
    m.observe_call(call())
    m.observe_call(call("declined", "none", latency=0.2))
    m.observe_call(call("implied", "failed", door="agi", latency=None))
    s = samples(m)
    assert s[("callrec_calls_total", (("consent", "implied"), ("door", "ari")))] == 2
    assert s[("callrec_calls_total", (("consent", "declined"), ("door", "ari")))] == 1
    assert s[("callrec_recordings_total", (("door", "agi"), ("status", "failed")))] == 1
    assert s[("callrec_recording_failures_total", (("door", "agi"),))] == 1
    assert ("callrec_recording_failures_total", (("door", "ari"),)) not in s
    # Latency: three calls had a notice (0.04, 0.04, 0.2 s); the AGI one had none.
    assert s[("callrec_notice_latency_seconds_count", (("door", "ari"),))] == 3
    assert s[("callrec_notice_latency_seconds_sum", (("door", "ari"),))] == pytest.approx(0.28)
    assert s[("callrec_notice_latency_seconds_bucket", (("door", "ari"), ("le", "0.05")))] == 2
    assert s[("callrec_finalize_seconds_count", ())] == 4
    assert s[("callrec_build_info", (("version", "9.9"),))] == 1


def test_a_call_that_cannot_be_counted_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    m.observe_call(object())  # no fields at all
    assert "could not be counted" in caplog.text


def test_hook_attempts_and_requests() -> None:
    m = Metrics()
    m.observe_hook(Attempt(1, "c", "webhook", 1, False, "HTTP 500", False))
    m.observe_hook(Attempt(1, "c", "webhook", 2, True, None, True))
    m.observe_hook(Attempt(2, "d", "command", 10, False, "exit 1", True))
    m.observe_request("/api/v1/calls/{id}", "GET", 404, 0.003)
    s = samples(m)
    assert s[("callrec_hook_attempts_total", (("hook", "webhook"), ("outcome", "retry")))] == 1
    assert s[("callrec_hook_attempts_total", (("hook", "webhook"), ("outcome", "ok")))] == 1
    assert s[("callrec_hook_attempts_total", (("hook", "command"), ("outcome", "failed")))] == 1
    key = ("callrec_http_request_seconds_count", (("method", "GET"), ("route", "/api/v1/calls/{id}"),
                                                   ("status", "4xx")))
    assert s[key] == 1


async def test_live_figures_are_read_at_scrape_time_and_a_broken_one_is_left_out() -> None:
    m = Metrics()
    pending = [3]
    m.probe("callrec_calllog_pending_calls", "pending", lambda: pending[0])
    m.probe("callrec_calls_active", "active", lambda: {"ari": 2, "agi": 0}, label="door")
    m.probe("callrec_broken", "broken", lambda: 1 / 0)
    m.probe("callrec_ami_logins", "logins", lambda: 4, kind="counter")

    async def db() -> Mapping[str, float | Mapping[str, float]]:
        return {"callrec_hook_jobs": {"pending": 5.0, "failed": 1.0}}

    async def db_down() -> Mapping[str, float | Mapping[str, float]]:
        raise OSError("connection refused")

    m.describe_db("callrec_hook_jobs", "hook jobs", label="state")
    m.db_figures(db)
    m.db_figures(db_down)
    await m.refresh()
    s = samples(m)
    assert s[("callrec_calllog_pending_calls", ())] == 3
    assert s[("callrec_calls_active", (("door", "ari"),))] == 2
    assert s[("callrec_ami_logins_total", ())] == 4
    assert s[("callrec_hook_jobs", (("state", "pending"),))] == 5
    assert s[("callrec_metrics_db_errors_total", ())] == 1
    assert not any(name == "callrec_broken" for name, _ in s)
    pending[0] = 0
    assert samples(m)[("callrec_calllog_pending_calls", ())] == 0


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("metrics", "listen", "9120", "metrics.listen: expected host:port like 127.0.0.1:9120"),
    ("metrics", "listen", "127.0.0.1:99999", "metrics.listen: expected host:port"),
    ("log", "format", "xml", "log.format: expected one of text, json"),
])
def test_bad_metrics_and_log_settings_name_the_key(section: str, key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, section: {key: value}}, {})
    assert str(err.value).startswith(message)


def test_metrics_listen_defaults_off_and_parses() -> None:
    assert parse_settings(BASE, {}).metrics.listen == ""
    s = parse_settings({**BASE, "metrics": {"listen": "[::1]:9120"}}, {})
    assert s.metrics.host_port() == ("::1", 9120)


def test_json_log_lines_are_one_object_each_with_the_exception() -> None:
    record = logging.LogRecord("callrec.ari", logging.WARNING, __file__, 1, "caller %s\nsaid %r", ("a\"b", "\x1b[2J"),
                               None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "warning" and out["logger"] == "callrec.ari"
    assert out["message"] == "caller a\"b\nsaid '\\x1b[2J'"
    datetime.fromisoformat(out["time"])
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("callrec", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed" and "ValueError: boom" in out["exception"]


def test_notify_sends_one_datagram_to_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.notify("READY=1", "STATUS=up")
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False  # not under systemd: nothing to do


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"callrec-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("WATCHDOG=1")
        assert server.recv(4096) == b"WATCHDOG=1"


def test_notify_to_a_missing_socket_warns_once_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(systemd, "_warned", False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    caplog.set_level(logging.INFO)
    assert systemd.notify("READY=1") is False
    assert systemd.notify("WATCHDOG=1") is False
    assert [r.levelname for r in caplog.records if "systemd notify socket" in r.getMessage()] == ["WARNING"]


def test_notify_never_blocks_when_nobody_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that stopped reading must not stop the event loop: pings beyond its queue are dropped."""
    monkeypatch.setattr(systemd, "_warned", True)
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        sent = [systemd.notify("WATCHDOG=1") for _ in range(2000)]  # far beyond the kernel's queue
        assert sent[0] is True and sent.count(False) > 0


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0


async def test_watchdog_pings_while_the_loop_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        task = asyncio.create_task(systemd.watchdog(0.01))
        loop = asyncio.get_running_loop()
        try:
            pings = [await asyncio.wait_for(loop.sock_recv(server, 64), 5) for _ in range(3)]
        finally:
            task.cancel()
        assert pings == [b"WATCHDOG=1"] * 3


def test_the_shipped_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian package systemd) is needed to check systemd/callrec.service"
    text = (REPO / "systemd" / "callrec.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "NoNewPrivileges=yes" in text
    assert "ExecStart=/opt/callrec/bin/callrec serve" in text
    # The unit names the install path of docs/install.md; check it against this checkout's command.
    exe = Path(sys.executable).with_name("callrec")
    assert exe.exists(), exe
    unit = tmp_path / "callrec.service"
    unit.write_text(text.replace("/opt/callrec/bin/callrec", str(exe)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on a directive it cannot parse ("Failed to parse ..., ignoring"): any line about
    # the unit is a problem.
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "callrec.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


async def test_the_metrics_page_lists_exactly_what_a_daemon_registers() -> None:
    from callrec.app import Daemon
    from callrec.metrics import reference_table

    d = Daemon(parse_settings(BASE, {}))
    await d.setup_metrics()
    page = (REPO / "docs" / "metrics.md").read_text()
    assert reference_table(d.metrics.catalog()) in page, "regenerate the table in docs/metrics.md"
