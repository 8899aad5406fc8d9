"""Prometheus metrics, readiness and liveness on their own listen address (``[metrics] listen``).

Counted as things happen (each finished call, each hook attempt, each API request) or read when
scraped (connections, pending call-log writes, the hook outbox and the transcription queue): the
live figures come from callbacks the daemon registers, so this module knows nothing of callrec's
other rooms and every room may hand it what it has.  The registry is the daemon's own (not the
library's global one), so two daemons in one process (tests) do not mix their figures.

Labels never carry caller-supplied text or ids (numbers, call ids): only fixed words (door,
consent outcome, recording status, hook kind) and the API's route templates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsServer", "Probe", "reference_table"]

log = logging.getLogger("callrec.metrics")

# Notice latency: a few ms when all is well, seconds when something waits on a slow dependency.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FINALIZE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
# Recording statuses that mean MixMonitor did not give a usable file.
FAILED_RECORDINGS = ("failed", "missing", "empty")
# How long a scrape waits for the database figures before leaving them out.
DB_FIGURES_TIMEOUT = 2.0

# A live figure: (name, help, kind "gauge" | "counter", a function returning the value or a mapping
# label value -> value, the label's name for a mapping).
Probe = Callable[[], float | Mapping[str, float] | None]
DbFigures = Callable[[], Awaitable[Mapping[str, float | Mapping[str, float]]]]


class _Live(Collector):
    """Figures read at scrape time from the daemon's objects."""

    def __init__(self) -> None:
        self.probes: list[tuple[str, str, str, str, Probe]] = []
        self.db_values: dict[str, float | Mapping[str, float]] = {}
        self.db_help: dict[str, tuple[str, str, str]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, doc, kind, label, probe in self.probes:
            try:
                value = probe()
            except Exception:  # a figure that cannot be read is left out, never a failed scrape
                log.debug("metric %s not readable", name, exc_info=True)
                continue
            yield from _family(name, doc, kind, label, value)
        for name, value in self.db_values.items():
            doc, kind, label = self.db_help.get(name, (name, "gauge", ""))
            yield from _family(name, doc, kind, label, value)


def _family(name: str, doc: str, kind: str, label: str, value: float | Mapping[str, float] | None) -> Iterator[Metric]:
    if value is None:
        return
    family: GaugeMetricFamily | CounterMetricFamily
    if isinstance(value, Mapping):
        family = (CounterMetricFamily(name, doc, labels=[label]) if kind == "counter"
                  else GaugeMetricFamily(name, doc, labels=[label]))
        for key, v in sorted(value.items()):
            family.add_metric([str(key)], float(v))
    else:
        family = (CounterMetricFamily(name, doc, value=float(value)) if kind == "counter"
                  else GaugeMetricFamily(name, doc, value=float(value)))
    yield family


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    s = (later - earlier).total_seconds()
    return s if s >= 0 else None


class Metrics:
    """The daemon's metrics.  ``observe_*`` are cheap and never raise into the caller."""

    def __init__(self, version: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("callrec_build", "callrec's version", registry=r).info({"version": version})
        self.calls = Counter("callrec_calls", "finished calls by door and consent outcome",
                             ["door", "consent"], registry=r)
        self.recordings = Counter("callrec_recordings", "finished calls by door and recording status",
                                  ["door", "status"], registry=r)
        self.recording_failures = Counter(
            "callrec_recording_failures", "calls meant to be recorded whose MixMonitor gave no usable file "
                                          "(status failed, missing or empty)", ["door"], registry=r)
        self.notice_latency = Histogram(
            "callrec_notice_latency_seconds", "from the call reaching callrec to the notice starting",
            ["door"], buckets=LATENCY_BUCKETS, registry=r)
        self.finalize = Histogram("callrec_finalize_seconds", "from hang-up to the row finalized (file measured "
                                  "and hashed)", buckets=FINALIZE_BUCKETS, registry=r)
        self.hook_attempts = Counter("callrec_hook_attempts", "post-recording hook runs by hook and outcome "
                                     "(ok, retry, failed)", ["hook", "outcome"], registry=r)
        self.requests = Histogram("callrec_http_request_seconds", "ops API and console requests by route template, "
                                  "method and status class", ["route", "method", "status"],
                                  buckets=REQUEST_BUCKETS, registry=r)
        self.scrape_errors = Counter("callrec_metrics_db_errors", "scrapes whose database figures could not be "
                                     "read", registry=r)
        self.started = Gauge("callrec_start_time_seconds", "when this daemon started (Unix time)", registry=r)
        self.started.set(time.time())
        self._live = _Live()
        r.register(self._live)
        self._db_figures: list[DbFigures] = []

    # -- what happens --------------------------------------------------------------------------
    def observe_call(self, record: Any) -> None:
        """A finalized call (``CallRecord``): its consent, recording status, notice latency, finalize time."""
        try:
            door = str(record.door)
            self.calls.labels(door, str(record.consent or "none")).inc()
            status = str(record.recording_status or "none")
            self.recordings.labels(door, status).inc()
            if status in FAILED_RECORDINGS:
                self.recording_failures.labels(door).inc()
            latency = _seconds(record.notice_started_at, record.started_at)
            if latency is not None:
                self.notice_latency.labels(door).observe(latency)
            took = _seconds(record.finalized_at, record.ended_at)
            if took is not None:
                self.finalize.observe(took)
        except Exception:
            log.exception("metrics: a finished call could not be counted")

    def observe_hook(self, attempt: Any) -> None:
        """A hook run (``hooks.Attempt``)."""
        outcome = "ok" if attempt.ok else ("failed" if attempt.final else "retry")
        self.hook_attempts.labels(str(attempt.hook), outcome).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """An API request; ``route`` is the route's template (``/api/v1/calls/{id}``), never the path."""
        self.requests.labels(route, method, f"{status // 100}xx").observe(seconds)

    # -- what is read when scraped -------------------------------------------------------------
    def probe(self, name: str, doc: str, probe: Probe, *, kind: str = "gauge", label: str = "") -> None:
        """Read ``probe()`` at each scrape: a number, or a mapping label value -> number (then ``label``)."""
        self._live.probes.append((name, doc, kind, label, probe))

    def describe_db(self, name: str, doc: str, *, kind: str = "gauge", label: str = "") -> None:
        self._live.db_help[name] = (doc, kind, label)

    def db_figures(self, read: DbFigures) -> None:
        """An async reader of database figures (name -> value or mapping), awaited before each scrape."""
        self._db_figures.append(read)

    async def refresh(self) -> None:
        """Read the database figures (bounded by DB_FIGURES_TIMEOUT); on failure they are left out."""
        values: dict[str, float | Mapping[str, float]] = {}
        for read in self._db_figures:
            try:
                values.update(await asyncio.wait_for(read(), DB_FIGURES_TIMEOUT))
            except Exception as exc:
                self.scrape_errors.inc()
                log.debug("metrics: database figures not read: %s", exc)
        self._live.db_values = values

    def catalog(self) -> list[tuple[str, str, str]]:
        """Every metric this daemon may show: (name as scraped, type, help), for docs/metrics.md."""
        live = {name for name, *_ in self._live.probes} | set(self._live.db_help)
        suffix = {"counter": "_total", "info": "_info"}
        out = [(f.name + suffix.get(f.type, ""), f.type, f.documentation)
               for f in self.registry.collect() if f.name not in live]
        out += [(name + suffix.get(kind, ""), kind, doc) for name, doc, kind, _, _ in self._live.probes]
        out += [(name, kind, doc) for name, (doc, kind, _) in self._live.db_help.items()]
        return sorted(out)

    def render(self) -> bytes:
        return generate_latest(self.registry)


Ready = Callable[[], dict[str, bool]]


class MetricsServer:
    """``/metrics`` (Prometheus text format), ``/ready`` (200 when every part is up, else 503 with the parts
    that are down) and ``/live`` (200 while the event loop answers) on their own address, so a scraper or a
    load balancer needs no API credentials and the API needs no open route."""

    def __init__(self, listen: tuple[str, int], metrics: Metrics, ready: Ready) -> None:
        self.host, self.port = listen
        self.metrics = metrics
        self.ready = ready
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._live)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(f"metrics.listen: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.port
        log.info("metrics on http://%s:%d/metrics (readiness /ready, liveness /live)", self.host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.metrics.refresh()
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    async def _ready(self, request: web.Request) -> web.Response:
        parts = self.ready()
        down = sorted(name for name, up in parts.items() if not up)
        return web.json_response({"ready": not down, "parts": parts, "down": down}, status=503 if down else 200,
                                 headers={"Cache-Control": "no-store"})

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True}, headers={"Cache-Control": "no-store"})


def reference_table(catalog: list[tuple[str, str, str]]) -> str:
    """The metrics table of docs/metrics.md (a unit test compares the page with the code)."""
    lines = ["| metric | type | what it counts |", "|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {doc} |" for name, kind, doc in catalog]
    return "\n".join(lines) + "\n"
