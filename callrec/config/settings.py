"""Settings from one TOML file plus environment overrides, validated once at start.

Every problem is reported as one line that names the key, e.g.
``asterisk.ari_url: expected an http:// or https:// URL, got 'localhost'``.
Secrets can stay out of the file: ``CALLREC_<SECTION>_<KEY>`` overrides any key
(``CALLREC_ASTERISK_ARI_PASSWORD``, ``CALLREC_ASTERISK_AMI_PASSWORD``, ``CALLREC_DATABASE_DSN``).
Each key's meaning and range sit in its field (``setting(...)``); docs/configuration.md is generated
from them (``python -m callrec.config.reference``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callrec.config.alerts import AlertRule, AlertSettings, parse_alerts
from callrec.config.dataops import IntegritySettings, RetentionSettings, check_integrity, parse_retention
from callrec.config.fields import REQUIRED, ConfigError, Range, build, check_ranges, setting
from callrec.config.search import SearchSettings, check_search
from callrec.config.speech import SpeechSettings, check_speech

__all__ = [
    "ALERT_HOOK_PLACEHOLDERS", "CONSENT_MODES", "DEFAULT_RECORD_WORDS", "DTMF_KEYS", "HOOK_PLACEHOLDERS",
    "LOG_LEVELS", "POLICY_ENV_KEYS", "RECORD_WORDS", "RULE_SIDES", "SECTIONS", "AgiSettings", "AlertRule",
    "AlertSettings", "AsteriskSettings", "ConfigError", "DatabaseSettings", "HookSettings", "HttpSettings",
    "IntegritySettings", "LogSettings", "NoticeSettings", "PolicyRule", "PolicySettings", "RecordingSettings",
    "RetentionSettings", "Settings", "SpeechSettings", "load_settings", "parse_settings",
]

CONSENT_MODES = ("notice", "opt-out", "opt-in")
# Recording words, FreePBX style (see docs/policy.md for the precedence table).
RECORD_WORDS = ("force", "yes", "dontcare", "no", "never")
# [policy] record is the word when no side decides, so "dontcare" makes no sense there.
DEFAULT_RECORD_WORDS = tuple(w for w in RECORD_WORDS if w != "dontcare")
RULE_SIDES = ("caller", "callee")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Placeholders a hook command's arguments may carry: only values callrec made, no caller data.
HOOK_PLACEHOLDERS = ("call_id", "path", "file", "status", "duration", "sha256")
# What an alert command's arguments may carry: ids and the rule's name (letters, digits, _ . -).
ALERT_HOOK_PLACEHOLDERS = ("alert_id", "call_id", "rule", "kind")
DTMF_KEYS = set("0123456789*#ABCD")
_LANG_RE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_PROMPT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# MixMonitor options an admin may pass through: record only while bridged (b), periodic beep
# (B), volume (v/V/W).  Options that write extra files, append, or run commands are refused.
_MIXMONITOR_OPTION_RE = re.compile(r"^(?:b|B(?:\(\d{1,3}\))?|[vVW]\(-?[0-4]\))*$")

# Shared wording and ranges, so two keys that mean the same kind of thing are checked alike.
_TIMEOUT_60 = Range(0, 60, above=True, unit="seconds")
_PERCENT = Range(0, 100)
_MIXMONITOR = "`b` (record only while bridged), `B(secs)` (periodic beep), `v(n)`, `V(n)`, `W(n)` (volume, n in -4..4)"
_PATTERN = "a case-sensitive shell pattern (`*`, `?`, `[...]`)"
_LANGUAGE = "a language code like `en`, `ru` or `pt_BR`"
_DTMF = "one DTMF key: `0-9`, `*`, `#`, `A-D`"


@dataclass(frozen=True)
class AsteriskSettings:
    ari_enabled: bool = setting(
        True, "the ARI door. `false`: no ARI at all (no `http.conf` / `ari.conf` needed), `ari_password` is not "
              "required, and calls come in through FastAGI only, which must then be on")
    ari_url: str = setting("http://127.0.0.1:8088", "ARI base URL (a trailing `/ari` is fine)",
                           allowed="an `http://` or `https://` URL without credentials")
    ari_user: str = setting("callrec", "ARI user (`ari.conf`)", allowed="not empty")
    ari_password: str = setting("", "its password", secret=True, shown_default="— (required with ARI)")
    app: str = setting("callrec", "Stasis application name; must equal the name in `Stasis()` in `callrec.conf`",
                       allowed="letters, digits, `_ . -`")
    ami_host: str = setting("127.0.0.1", "AMI host (keep it on loopback: AMI logs in in clear text)",
                            allowed="not empty")
    ami_port: int = setting(5038, "AMI port", range=Range(1, 65535, what="a TCP port"))
    ami_user: str = setting("callrec", "AMI user (`manager.conf`)", allowed="not empty")
    ami_password: str = setting("", "its secret", secret=True, shown_default="— (required)")
    request_timeout: float = setting(5.0, "seconds per ARI request. AMI actions time out after `min(3, this)`",
                                     range=_TIMEOUT_60)
    sweep_interval: float = setting(
        60.0, "seconds between the ARI door's hang-up sweeps: one `GET /channels` compared with the calls it "
              "follows; a call whose channel is gone (its hang-up missed while ARI and AMI were both down) "
              "ends as lost within about this long", range=Range(1, 3600, unit="seconds"))


@dataclass(frozen=True)
class DatabaseSettings:
    dsn: str = setting("postgresql://callrec@127.0.0.1:5432/callrec", "the call log's database",
                       allowed="a `postgresql://` or `postgres://` URL", secret=True)
    pool_min: int = setting(1, "connections kept open", range=Range(1))
    pool_max: int = setting(5, "most connections. The HTTP API has its own pool of 4", allowed="at least `pool_min`")
    journal_dir: str = setting(
        "/var/lib/callrec/journal", "where the daemon keeps its journal of call-log changes not yet written to "
        "PostgreSQL (fsync'd; replayed at start and when the database is back): owned by the daemon's user, "
        "one daemon per folder (a lock file enforces it)", allowed="an absolute path")
    journal_max_bytes: int = setting(
        64 * 1024**2, "the journal's size limit: when it is reached the journal is compacted (one entry per pending "
        "call); if that is still too big, further changes are kept in memory only (logged once) until the "
        "database is back", range=Range(1024**2, 16 * 1024**3, unit="bytes"))


@dataclass(frozen=True)
class RecordingSettings:
    dir: str = setting("/var/spool/asterisk/callrec",
                       "where Asterisk writes recordings: the path given to MixMonitor",
                       allowed="an absolute path of letters, digits, `_ . - /` (it becomes part of "
                               "MixMonitor's argument, where a comma would start options)")
    local_dir: str = setting("", "the same folder as this daemon sees it, when that differs (Asterisk in a "
                                 "chroot or container, the spool mounted elsewhere)",
                             allowed="an absolute path, or empty", shown_default='`""` (= `dir`)')
    mixmonitor_options: str = setting("", "MixMonitor options for every call", allowed=_MIXMONITOR)
    finalize_timeout: float = setting(30.0, "seconds to wait for Asterisk to close a finished recording "
                                            "before reading it", range=Range(0, above=True, unit="seconds"))
    stereo: bool = setting(False, "caller on the left, agent on the right: MixMonitor's per-direction files "
                                  "merged into one stereo WAV (also per rule)")
    pause_dtmf: bool = setting(True, "act on the agents' pause key (the `CallrecRecording` user event, "
                                     "`dialplan/callrec-recording.conf`)")

    @property
    def local_path(self) -> Path:
        return Path(self.local_dir or self.dir)


@dataclass(frozen=True)
class NoticeSettings:
    prompts_dir: str = setting("/usr/share/asterisk/sounds/callrec",
                               "prompts as Asterisk sees them: `<dir>/<lang>/<name>.wav`", allowed="an absolute path")
    local_prompts_dir: str = setting("", "the same folder as the daemon sees it, if that differs",
                                     shown_default='`""` (= `prompts_dir`)')
    default_language: str = setting(
        "en", "language used when the wanted one has no prompt (its `notice`, `notice-opt-out` and "
              "`notice-opt-in` must exist)", allowed=_LANGUAGE)
    decision_window: float = setting(
        5.0, "seconds after the notice in which the opt-in / opt-out key still counts (0: decide when the notice "
             "ends)", range=Range(0, 60, unit="seconds"))
    opt_out_key: str = setting("9", "the key that declines in `opt-out` mode. The prompts say it out loud: change "
                                    "them too", allowed=_DTMF)
    opt_in_key: str = setting("1", "the key that agrees in `opt-in` mode; must differ from `opt_out_key`",
                              allowed=_DTMF)
    confirm_not_recorded: bool = setting(True, "play `not-recorded` (\"this call will not be recorded\") after a "
                                               "decline or when no opt-in was given")
    max_notice_seconds: float = setting(
        60.0, "upper bound on a prompt's time limit. Each prompt may take `max(2 × its length + 5, 10)` seconds, "
              "capped by this; a notice that overruns counts as `notice_failed` and the call is handed back",
        range=Range(1, 600, unit="seconds"))

    @property
    def local_prompts_path(self) -> Path:
        return Path(self.local_prompts_dir or self.prompts_dir)


@dataclass(frozen=True)
class PolicyRule:
    """One ``[[policy.rules]]`` entry: it matches a call when every pattern it gives fits."""

    name: str = setting(REQUIRED, "unique; `rule=NAME` in the dialplan picks it; shown as `policy_rule`, in "
                                  "`CALLREC_REASON` and by `explain`", shown_default="`rule-N` (N: its place)")
    did: str | None = setting(None, "pattern on the called number (the `Gosub` line's `${EXTEN}`, or `did=`)",
                              allowed=_PATTERN)
    caller: str | None = setting(None, "pattern on the caller number", allowed=_PATTERN)
    context: str | None = setting(None, "pattern on the dialplan context the `Gosub` came from (or `context=`)",
                                  allowed=_PATTERN)
    extension: str | None = setting(None, "pattern on the agent's extension (the `extension=` argument)",
                                    allowed=_PATTERN)
    queue: str | None = setting(None, "pattern on the queue name (the `queue=` argument)", allowed=_PATTERN)
    side: str | None = setting(
        None, "which side of the call the rule speaks for. Default: `caller` when the rule matches on `caller` and "
              "not on `did`, `extension` or `queue`; `callee` otherwise", choices=RULE_SIDES,
        shown_default="derived")
    record: str = setting("dontcare", "the rule's word", choices=RECORD_WORDS)
    sample_percent: float | None = setting(None, "QA sampling: keep this % of the calls `yes` would record",
                                           range=_PERCENT, shown_default="`[policy]`'s")
    mode: str | None = setting(None, "consent mode for this rule's calls", choices=CONSENT_MODES,
                               shown_default="`[policy]`'s")
    language: str | None = setting(None, "notice language", allowed=_LANGUAGE, shown_default="`[policy]`'s")
    prompt: str | None = setting(None, "prompt file name without extension, in `<prompts_dir>/<lang>/`",
                                 allowed="letters, digits, `_ . -`, at most 64", shown_default="the mode's")
    mixmonitor_options: str | None = setting(None, "MixMonitor options for this rule's calls", allowed=_MIXMONITOR,
                                             shown_default="`recordings.mixmonitor_options`")
    confidential: bool = setting(False, "the rule's calls are confidential from their first row: only `admin` "
                                        "and `security` see them")
    # Passed through on the decision for the recording code; None = the global setting.
    stereo: bool | None = setting(None, "`true`: caller left, agent right, for this rule's calls",
                                  shown_default="`recordings.stereo`")
    bridged_only: bool | None = setting(None, "`true` adds MixMonitor option `b`: record only while bridged")
    transcribe: bool | None = setting(
        None, "speech analytics for this rule's recordings: `true` queues them when `[speech] transcribe = \"rules\"`; "
              "`false` keeps them out of the queue when it is `\"all\"`", shown_default="`[speech] transcribe`'s")

    @property
    def effective_side(self) -> str:
        if self.side:
            return self.side
        if self.caller is not None and self.did is None and self.extension is None and self.queue is None:
            return "caller"
        return "callee"


@dataclass(frozen=True)
class PolicySettings:
    mode: str = setting("notice", "consent mode when no rule sets one", choices=CONSENT_MODES)
    language: str | None = setting(None, "force one language; default: the channel's `CHANNEL(language)`",
                                   allowed=_LANGUAGE)
    prompt: str | None = setting(None, "prompt name instead of the mode's default (`notice`, `notice-opt-out`, "
                                       "`notice-opt-in`)", allowed="letters, digits, `_ . -`, at most 64")
    rules: tuple[PolicyRule, ...] = setting((), "`[[policy.rules]]` tables, below")
    record: str = setting("yes", "the word when no rule's word decides (both sides `dontcare`)",
                          choices=DEFAULT_RECORD_WORDS)
    sample_percent: float = setting(100.0, "QA sampling of `yes` calls no rule gives a rate to; 100 = every call",
                                    range=_PERCENT)
    sample_seed: int | None = setting(None, "a whole number: the sampling draws repeat from start to start "
                                            "(tests, audits). Unset: seeded by the OS")


@dataclass(frozen=True)
class HookSettings:
    """``[hooks]``: run once a recording is finalized (Asterisk closed the file and it was measured)."""

    command: tuple[str, ...] = setting(
        (), "argv list, no shell; the program must be an absolute path. Placeholders in any argument: `{call_id}`, "
            "`{path}` (the file as callrec sees it), `{file}` (relative to `recordings.dir`), `{status}`, "
            "`{duration}`, `{sha256}`. Caller data is never put in argv: the call's JSON comes on stdin")
    command_timeout: float = setting(60.0, "seconds; then the command's process group is killed and the attempt "
                                           "counts as failed", range=Range(0, 86400, above=True, unit="seconds"))
    webhook_url: str = setting("", "POST the call's JSON here; only `scheme://host:port/path` is ever logged",
                               allowed="an `http://` or `https://` URL without credentials, or empty")
    webhook_auth: str = setting("", "the `Authorization` header value, e.g. `Bearer ...`", secret=True,
                                allowed="one line; needs `webhook_url`")
    webhook_hmac_key: str = setting(
        "", "adds `X-Callrec-Timestamp: <unix seconds>` and `X-Callrec-Signature: sha256=<hex HMAC-SHA256 of "
            "\"<timestamp>.<body>\">`", secret=True, allowed="needs `webhook_url`")
    webhook_timeout: float = setting(10.0, "seconds for the whole request",
                                     range=Range(0, 86400, above=True, unit="seconds"))
    max_attempts: int = setting(10, "attempts per hook and recording; then the job is `failed` (logged at ERROR)",
                                range=Range(1, 1000))
    retry_initial: float = setting(5.0, "seconds before the 2nd attempt; doubled after each failure ...",
                                   range=Range(0, 86400, above=True, unit="seconds"))
    retry_max: float = setting(900.0, "... up to this; not below `retry_initial`",
                               range=Range(0, 86400, above=True, unit="seconds"))
    concurrency: int = setting(4, "hook runs at once, all hooks together", range=Range(1, 64))
    alert_webhook_url: str = setting(
        "", "POST each keyword alert's JSON (`\"event\": \"alert.matched\"`) here, signed and retried like "
            "`webhook_url` (same `webhook_auth` and `webhook_hmac_key`). May be the same URL as `webhook_url`; "
            "empty: alerts are not posted", allowed="an `http://` or `https://` URL without credentials, or empty")
    alert_command: tuple[str, ...] = setting(
        (), "argv list run for each keyword alert, like `command`: the alert's JSON on stdin. Placeholders: "
            "`{alert_id}`, `{call_id}`, `{rule}`, `{kind}`; empty: no command for alerts")


@dataclass(frozen=True)
class AgiSettings:
    """The FastAGI door (``AGI(agi://127.0.0.1:4573/notice?...)``)."""

    enabled: bool = setting(True, "`false` turns the FastAGI door off")
    listen: str = setting(
        "127.0.0.1:4573", "where the FastAGI server listens. `\"\"` also turns the door off; port `0` takes a free "
                          "port, named in the start-up log line `FastAGI listening on ...`. No authentication: "
                          "keep it on loopback", allowed="`host:port` (`[::1]:4573` for IPv6), or empty")
    max_sessions: int = setting(
        500, "AGI connections at once. Past that, a new connection is closed at once, logged as an error, and the "
             "dialplan's fail-safe goes on unrecorded", range=Range(1, 100000))
    handshake_timeout: float = setting(5.0, "seconds for Asterisk's AGI variables to arrive in full",
                                       range=_TIMEOUT_60)
    command_timeout: float = setting(
        5.0, "seconds for the reply to a quick command (`SET VARIABLE`, `CHANNEL STATUS`, `GET VARIABLE`), and the "
             "slack on top of a prompt's watchdog or the decision window before the session counts as broken",
        range=_TIMEOUT_60)
    max_line: int = setting(8192, "longest line accepted from the peer; a longer one ends the session",
                            range=Range(1024, 1048576, unit="bytes"))
    max_handshake_bytes: int = setting(
        65536, "the AGI variables in all (every line, continuation lines of a caller ID with line breaks "
               "included; at most 200 lines); a longer handshake ends the session",
        range=Range(4096, 4194304, unit="bytes"))

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.listen)


@dataclass(frozen=True)
class LogSettings:
    level: str = setting("info", "log level, to stderr (the journal under systemd); any case", choices=LOG_LEVELS)
    format: str = setting("text", "`text`: one readable line per event; `json`: one JSON object per line (time, "
                                  "level, logger, message, and the exception when there is one) for a log shipper",
                          choices=LOG_FORMATS)


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = setting(
        "", "where `/metrics` (Prometheus text format), `/ready` and `/live` are served, apart from the API (no "
            "credentials there: keep it on loopback or a monitoring network). `\"\"`: off. Port 0 takes a free port "
            "(tests)", allowed="`host:port` (`[::1]:9120` for IPv6), or empty", shown_default='`""` (off)')

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = setting(True, "serve the ops API and the web console")
    # Not 8088: that is Asterisk's own HTTP (ARI) port on the same host.
    listen: str = setting(
        "127.0.0.1:8090", "where the ops API and console listen; `\"\"` turns them off. Not 8088: that is "
                          "Asterisk's own HTTP (ARI) port on the same host. Port 0 takes any free port (tests)",
        allowed="`host:port` (`[::1]:8090` for IPv6), or empty")
    session_hours: float = setting(12.0, "console session lifetime", range=Range(0.01, 720, unit="hours"))
    cookie_secure: bool = setting(False, "the `Secure` flag on the session cookie; turn it on behind an HTTPS "
                                         "reverse proxy")
    search_audit_window: float = setting(
        300.0, "search pages are audited per principal and window of this many seconds: one `search` entry at "
               "the window's first page, one with the other pages' and rows' counts when it ends",
        range=Range(1, 86400, unit="seconds"))
    denied_audit_window: float = setting(
        300.0, "denied requests (403, or 404 for a call that exists but is hidden from the principal) are audited "
               "per principal, kind, route and window of this many seconds: one `access_denied` entry at the "
               "window's first denial, one with the others' count when it ends",
        range=Range(1, 86400, unit="seconds"))
    read_timeout: float = setting(
        15.0, "seconds a client has to send a request's headers (from the connection's start or the end of its "
              "previous request; an idle keep-alive connection is closed after this too), and again for its body "
              "(408). A client sending its headers byte by byte is dropped",
        range=Range(0.1, 3600, unit="seconds"))
    write_timeout: float = setting(
        30.0, "seconds a client may take no data of a streamed response (export, evidence zip) before it is "
              "dropped, its export slot and database connection freed. The API's database connections end a "
              "transaction left idle for this plus 10 s (`idle_in_transaction_session_timeout`)",
        range=Range(0.1, 3600, unit="seconds"))
    trusted_proxies: tuple[str, ...] = setting(
        (), "reverse proxies (addresses or networks, e.g. `[\"127.0.0.1\", \"10.0.0.0/8\"]`) whose "
            "`X-Forwarded-For` names the client: the address log-in throttling, the audit trail and sessions use. "
            "From any other peer the header is ignored and the peer's address is used",
        allowed="IPv4/IPv6 addresses or networks")

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.listen)

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """``localhost``, 127.x or ``::1`` (brackets allowed): reachable from this host only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    recordings: RecordingSettings = field(default_factory=RecordingSettings)
    notice: NoticeSettings = field(default_factory=NoticeSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    log: LogSettings = field(default_factory=LogSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    integrity: IntegritySettings = field(default_factory=IntegritySettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    source: str = "<defaults>"


# The sections of the file, in the order the reference page shows them, with the class that holds each.
# "policy", "retention" and "alerts" carry rules and are parsed by their own functions.
SECTIONS: dict[str, type] = {
    "asterisk": AsteriskSettings,
    "database": DatabaseSettings,
    "recordings": RecordingSettings,
    "notice": NoticeSettings,
    "policy": PolicySettings,
    "hooks": HookSettings,
    "agi": AgiSettings,
    "http": HttpSettings,
    "retention": RetentionSettings,
    "integrity": IntegritySettings,
    "speech": SpeechSettings,
    "alerts": AlertSettings,
    "search": SearchSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
}
_PLAIN_SECTIONS = {name: cls for name, cls in SECTIONS.items() if name not in ("policy", "retention", "alerts")}
# Every [policy] key but the rules has its CALLREC_POLICY_<KEY>; rules live only in the file.
POLICY_ENV_KEYS = tuple(f.name for f in dataclasses.fields(PolicySettings) if f.name != "rules")


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, and validate.  Raises ConfigError."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except PermissionError:
            raise ConfigError(f"{path}: not readable (permission denied)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # tomllib decodes the whole file first
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_settings(raw, environ, source)


def parse_settings(raw: Mapping[str, Any], environ: Mapping[str, str], source: str = "<dict>") -> Settings:
    known = set(SECTIONS)
    for section in raw:
        if section not in known:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(known))})")
    built: dict[str, Any] = {}
    for name, cls in _PLAIN_SECTIONS.items():
        table = _table(raw, name)
        values = dict(table)
        for key in (f.name for f in dataclasses.fields(cls)):
            env_key = f"CALLREC_{name.upper()}_{key.upper()}"
            if env_key in environ:
                values[key] = environ[env_key]
        built[name] = build(cls, name, values)
    built["policy"] = _parse_policy(_table(raw, "policy"), environ)
    built["retention"] = parse_retention(_table(raw, "retention"), environ, {r.name for r in built["policy"].rules})
    built["alerts"] = parse_alerts(_table(raw, "alerts"), environ)
    settings = Settings(**built, source=source)
    _validate(settings)
    return settings


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{name}: expected a table [{name}]")
    return table


def _parse_policy(table: Mapping[str, Any], environ: Mapping[str, str]) -> PolicySettings:
    values = {k: v for k, v in table.items() if k != "rules"}
    for key in POLICY_ENV_KEYS:
        env_key = f"CALLREC_POLICY_{key.upper()}"
        if env_key in environ:
            values[key] = environ[env_key]
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError("policy.rules: expected a list of tables [[policy.rules]]")
    rules = []
    names: set[str] = set()
    for i, entry in enumerate(rules_raw):
        prefix = f"policy.rules[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{prefix}: expected a table")
        if "name" not in entry:
            entry = {**entry, "name": f"rule-{i + 1}"}
        rule = build(PolicyRule, prefix, entry)
        if rule.name in names:
            raise ConfigError(f"{prefix}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        if all(getattr(rule, k) is None for k in ("did", "caller", "context", "extension", "queue")):
            raise ConfigError(f"{prefix}: a rule needs at least one of did, caller, context, extension, queue")
        rules.append(rule)
    return build(PolicySettings, "policy", {**values, "rules": tuple(rules)})


def _validate(s: Settings) -> None:
    url = urlsplit(s.asterisk.ari_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"asterisk.ari_url: expected an http:// or https:// URL, got {s.asterisk.ari_url!r}")
    if url.username or url.password:
        raise ConfigError("asterisk.ari_url: must not carry credentials; use ari_user / ari_password")
    for key in ("ari_user", "ami_user", "app", "ami_host"):
        if not getattr(s.asterisk, key):
            raise ConfigError(f"asterisk.{key}: must not be empty")
    if s.asterisk.ari_enabled and not s.asterisk.ari_password:
        raise ConfigError("asterisk.ari_password: not set (put it in the file or CALLREC_ASTERISK_ARI_PASSWORD)")
    if not s.asterisk.ami_password:
        raise ConfigError("asterisk.ami_password: not set (put it in the file or CALLREC_ASTERISK_AMI_PASSWORD)")
    check_ranges(s.asterisk, "asterisk")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.asterisk.app):
        raise ConfigError(f"asterisk.app: letters, digits, '_', '.', '-' only, got {s.asterisk.app!r}")
    if urlsplit(s.database.dsn).scheme not in ("postgres", "postgresql"):
        raise ConfigError("database.dsn: expected a postgresql:// URL")
    check_ranges(s.database, "database")
    if not s.database.journal_dir.startswith("/"):
        raise ConfigError(f"database.journal_dir: expected an absolute path, got {s.database.journal_dir!r}")
    if s.database.pool_min > s.database.pool_max:
        raise ConfigError("database.pool_min: must be at least 1 and not above database.pool_max")
    if not re.fullmatch(r"/[A-Za-z0-9_./-]*", s.recordings.dir) or "/../" in s.recordings.dir + "/":
        # It becomes part of MixMonitor's argument string, where a comma would start options.
        raise ConfigError(f"recordings.dir: expected an absolute path of letters, digits, '_', '.', '-', "
                          f"got {s.recordings.dir!r}")
    if s.recordings.local_dir and not s.recordings.local_dir.startswith("/"):
        raise ConfigError(f"recordings.local_dir: expected an absolute path, got {s.recordings.local_dir!r}")
    _check_mixmonitor("recordings.mixmonitor_options", s.recordings.mixmonitor_options)
    check_ranges(s.recordings, "recordings")
    n = s.notice
    if not n.prompts_dir.startswith("/"):
        raise ConfigError(f"notice.prompts_dir: expected an absolute path, got {n.prompts_dir!r}")
    if not _LANG_RE.match(n.default_language):
        raise ConfigError(f"notice.default_language: expected a language code like 'en', got {n.default_language!r}")
    check_ranges(n, "notice")
    for key in ("opt_out_key", "opt_in_key"):
        value = getattr(n, key)
        if value not in DTMF_KEYS:
            raise ConfigError(f"notice.{key}: expected one DTMF key (0-9, *, #, A-D), got {value!r}")
    if n.opt_out_key == n.opt_in_key:
        raise ConfigError("notice.opt_in_key: must differ from notice.opt_out_key")
    if s.log.level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {s.log.level!r}")
    check_integrity(s.integrity)
    _check_http(s.http)
    _check_listen("metrics.listen", s.metrics.listen, "127.0.0.1:9120")
    if s.log.format not in LOG_FORMATS:
        raise ConfigError(f"log.format: expected one of {', '.join(LOG_FORMATS)}, got {s.log.format!r}")
    _check_agi(s.agi)
    if not s.asterisk.ari_enabled and not s.agi.active:
        raise ConfigError("asterisk.ari_enabled: false while the FastAGI door is off too ([agi]): "
                          "callrec would take no calls")
    _check_policy("policy", s.policy.mode, s.policy.language, s.policy.prompt)
    for i, rule in enumerate(s.policy.rules):
        _check_policy(f"policy.rules[{i}]", rule.mode, rule.language, rule.prompt)
        if rule.mixmonitor_options is not None:
            _check_mixmonitor(f"policy.rules[{i}].mixmonitor_options", rule.mixmonitor_options)
    _check_words(s.policy)
    _check_hooks(s.hooks)
    check_speech(s.speech)
    check_search(s.search)
    for folder in {s.recordings.dir, str(s.recordings.local_path)}:
        if s.speech.cache_dir == folder or s.speech.cache_dir.startswith(folder.rstrip("/") + "/"):
            # verify would report the joined model as orphan recordings, and retention walks that tree.
            raise ConfigError(f"speech.cache_dir: must not be inside the recordings folder ({folder})")


def _check_http(h: HttpSettings) -> None:
    for proxy in h.trusted_proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"http.trusted_proxies: expected an IP address or network like 10.0.0.0/8, "
                              f"got {proxy!r}") from None
    _check_listen("http.listen", h.listen, "127.0.0.1:8090")
    check_ranges(h, "http")


def _check_listen(key: str, listen: str, example: str) -> None:
    if listen:
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", listen)
        if not m or int(m.group(2)) > 65535:
            raise ConfigError(f"{key}: expected host:port like {example}, got {listen!r}")


def _check_policy(prefix: str, mode: str | None, language: str | None, prompt: str | None) -> None:
    if mode is not None and mode not in CONSENT_MODES:
        raise ConfigError(f"{prefix}.mode: expected one of {', '.join(CONSENT_MODES)}, got {mode!r}")
    if language is not None and not _LANG_RE.match(language):
        raise ConfigError(f"{prefix}.language: expected a language code like 'en' or 'ru', got {language!r}")
    if prompt is not None and not _PROMPT_RE.match(prompt):
        raise ConfigError(f"{prefix}.prompt: expected a prompt file name without extension, got {prompt!r}")


def _check_mixmonitor(key: str, options: str) -> None:
    if not _MIXMONITOR_OPTION_RE.match(options):
        raise ConfigError(
            f"{key}: unsupported MixMonitor options {options!r} (allowed: b, B(secs), v(n), V(n), W(n), n in -4..4)"
        )


def _check_words(p: PolicySettings) -> None:
    if p.record not in DEFAULT_RECORD_WORDS:
        raise ConfigError(f"policy.record: expected one of {', '.join(DEFAULT_RECORD_WORDS)}, got {p.record!r}")
    check_ranges(p, "policy")
    for i, rule in enumerate(p.rules):
        prefix = f"policy.rules[{i}]"
        if rule.record not in RECORD_WORDS:
            raise ConfigError(f"{prefix}.record: expected one of {', '.join(RECORD_WORDS)}, got {rule.record!r}")
        if rule.side is not None and rule.side not in RULE_SIDES:
            raise ConfigError(f"{prefix}.side: expected caller or callee, got {rule.side!r}")
        check_ranges(rule, prefix)


def _check_command(key: str, argv: tuple[str, ...], placeholders: tuple[str, ...]) -> None:
    if not argv:
        return
    if not argv[0].startswith("/"):
        raise ConfigError(f"{key}: the program must be an absolute path, got {argv[0]!r}")
    for arg in argv:
        for name in re.findall(r"{([^{}]*)}", arg):
            if name not in placeholders:
                raise ConfigError(f"{key}: unknown placeholder {{{name}}} "
                                  f"(known: {', '.join('{' + p + '}' for p in placeholders)})")


def _check_hooks(h: HookSettings) -> None:
    _check_command("hooks.command", h.command, HOOK_PLACEHOLDERS)
    _check_command("hooks.alert_command", h.alert_command, ALERT_HOOK_PLACEHOLDERS)
    for key in ("webhook_url", "alert_webhook_url"):
        value = getattr(h, key)
        if value:
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.hostname:
                # Never echo the value: it may carry a token.
                raise ConfigError(f"hooks.{key}: expected an http:// or https:// URL")
            if url.username or url.password:
                raise ConfigError(f"hooks.{key}: must not carry credentials; use hooks.webhook_auth")
    for key in ("webhook_auth", "webhook_hmac_key"):
        if getattr(h, key) and not (h.webhook_url or h.alert_webhook_url):
            raise ConfigError(f"hooks.{key}: set, but hooks.webhook_url is empty (and so is hooks.alert_webhook_url)")
    if any(c in h.webhook_auth for c in "\r\n"):
        raise ConfigError("hooks.webhook_auth: must be one line")
    check_ranges(h, "hooks")
    if h.retry_max < h.retry_initial:
        raise ConfigError("hooks.retry_max: must not be below hooks.retry_initial")


def _check_agi(a: AgiSettings) -> None:
    if a.listen:
        host, sep, port = a.listen.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not bare or not port.isdigit() or int(port) > 65535 \
                or not re.fullmatch(r"[A-Za-z0-9_.:-]+", bare):
            raise ConfigError(f"agi.listen: expected host:port like 127.0.0.1:4573 (or \"\" to turn FastAGI off), "
                              f"got {a.listen!r}")
    check_ranges(a, "agi")
