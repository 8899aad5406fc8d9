"""Settings from one TOML file plus environment overrides, validated once at start.

Every problem is reported as one line that names the key, e.g.
``asterisk.ari_url: expected an http:// or https:// URL, got 'localhost'``.
Secrets can stay out of the file: ``CALLREC_<SECTION>_<KEY>`` overrides any key
(``CALLREC_ASTERISK_ARI_PASSWORD``, ``CALLREC_ASTERISK_AMI_PASSWORD``, ``CALLREC_DATABASE_DSN``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callrec.config.dataops import IntegritySettings, RetentionSettings, check_integrity, parse_retention

CONSENT_MODES = ("notice", "opt-out", "opt-in")
# Recording words, FreePBX style (see docs/policy.md for the precedence table).
RECORD_WORDS = ("force", "yes", "dontcare", "no", "never")
RULE_SIDES = ("caller", "callee")
# Placeholders a hook command's arguments may carry: only values callrec made, no caller data.
HOOK_PLACEHOLDERS = ("call_id", "path", "file", "status", "duration", "sha256")
DTMF_KEYS = set("0123456789*#ABCD")
_LANG_RE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_PROMPT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# MixMonitor options an admin may pass through: record only while bridged (b), periodic beep
# (B), volume (v/V/W).  Options that write extra files, append, or run commands are refused.
_MIXMONITOR_OPTION_RE = re.compile(r"^(?:b|B(?:\(\d{1,3}\))?|[vVW]\(-?[0-4]\))*$")


class ConfigError(Exception):
    """A configuration problem, worded as ``key: problem``."""


@dataclass(frozen=True)
class AsteriskSettings:
    # false: no ARI door (no http.conf / ari.conf needed); calls come in through FastAGI only
    ari_enabled: bool = True
    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "callrec"
    ari_password: str = ""
    app: str = "callrec"
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "callrec"
    ami_password: str = ""
    request_timeout: float = 5.0


@dataclass(frozen=True)
class DatabaseSettings:
    dsn: str = "postgresql://callrec@127.0.0.1:5432/callrec"
    pool_min: int = 1
    pool_max: int = 5


@dataclass(frozen=True)
class RecordingSettings:
    # Where Asterisk writes recordings (MixMonitor's view) ...
    dir: str = "/var/spool/asterisk/callrec"
    # ... and the same folder as this daemon sees it (differs when Asterisk runs in a
    # chroot/container or the spool is mounted elsewhere).  Empty: same as ``dir``.
    local_dir: str = ""
    mixmonitor_options: str = ""
    # How long to wait for Asterisk to close a finished recording before reading it.
    finalize_timeout: float = 30.0
    # Caller and agent on separate channels: MixMonitor r()/t() files merged into one stereo WAV.
    stereo: bool = False
    # Act on the agents' pause key (the CallrecRecording user event, dialplan/callrec-recording.conf).
    pause_dtmf: bool = True

    @property
    def local_path(self) -> Path:
        return Path(self.local_dir or self.dir)


@dataclass(frozen=True)
class NoticeSettings:
    prompts_dir: str = "/usr/share/asterisk/sounds/callrec"
    local_prompts_dir: str = ""
    default_language: str = "en"
    # Seconds after the notice in which the opt-in / opt-out key still counts.
    decision_window: float = 5.0
    opt_out_key: str = "9"
    opt_in_key: str = "1"
    # Play "this call will not be recorded" after a caller declines or does not opt in.
    confirm_not_recorded: bool = True
    # Longest a notice may take before callrec gives up on it and hands the call back.
    max_notice_seconds: float = 60.0

    @property
    def local_prompts_path(self) -> Path:
        return Path(self.local_prompts_dir or self.prompts_dir)


@dataclass(frozen=True)
class PolicyRule:
    """One ``[[policy.rules]]`` entry: the first rule whose matchers all fit a call wins."""

    name: str
    did: str | None = None  # fnmatch pattern on the called number (DID / extension)
    caller: str | None = None  # fnmatch pattern on the caller number
    context: str | None = None  # fnmatch pattern on the dialplan context the call came from
    extension: str | None = None  # fnmatch pattern on the agent's extension (extension= argument)
    queue: str | None = None  # fnmatch pattern on the queue name (queue= argument)
    # Which side of the call the rule speaks for.  Default: "caller" when it matches on the
    # caller number and not on did / extension / queue; "callee" otherwise.
    side: str | None = None
    record: str = "dontcare"  # force | yes | dontcare | no | never
    sample_percent: float | None = None  # QA sampling: keep this % of the calls "yes" would record
    mode: str | None = None
    language: str | None = None
    prompt: str | None = None
    mixmonitor_options: str | None = None
    confidential: bool = False  # the call is confidential from its first row (admin, security only)
    # Passed through on the decision for the recording code; None = the global setting.
    stereo: bool | None = None
    bridged_only: bool | None = None

    @property
    def effective_side(self) -> str:
        if self.side:
            return self.side
        if self.caller is not None and self.did is None and self.extension is None and self.queue is None:
            return "caller"
        return "callee"


@dataclass(frozen=True)
class PolicySettings:
    mode: str = "notice"
    language: str | None = None  # force one language; default: the channel's language
    prompt: str | None = None  # prompt name instead of the mode's default
    rules: tuple[PolicyRule, ...] = ()
    # What happens when no rule's word decides (both sides "dontcare"): force | yes | no | never.
    record: str = "yes"
    sample_percent: float = 100.0  # QA sampling of "yes" calls; 100 = every call
    sample_seed: int | None = None  # fixed seed: the same sequence of sampling draws every start


@dataclass(frozen=True)
class HookSettings:
    """``[hooks]``: run once a recording is finalized (Asterisk closed the file and it was measured)."""

    command: tuple[str, ...] = ()  # argv, no shell; placeholders {call_id} {path} {file} ...
    command_timeout: float = 60.0
    webhook_url: str = ""  # POST JSON here
    webhook_auth: str = ""  # secret: the Authorization header value, e.g. "Bearer ..."
    webhook_hmac_key: str = ""  # secret: signs the body (X-Callrec-Signature: sha256=<hex>)
    webhook_timeout: float = 10.0
    max_attempts: int = 10
    retry_initial: float = 5.0  # seconds before the 2nd attempt; doubles each time ...
    retry_max: float = 900.0  # ... up to this
    concurrency: int = 4  # hook runs at once, all hooks together


@dataclass(frozen=True)
class AgiSettings:
    """The FastAGI door (``AGI(agi://127.0.0.1:4573/notice?...)``)."""

    enabled: bool = True
    listen: str = "127.0.0.1:4573"  # host:port; "" turns the door off like enabled = false
    max_sessions: int = 500  # connections at once; more are closed (the dialplan fail-safe goes on)
    handshake_timeout: float = 5.0  # seconds for Asterisk's AGI variables to arrive in full
    command_timeout: float = 5.0  # seconds for the reply to a quick command (SET VARIABLE ...)
    max_line: int = 8192  # bytes in one line from the peer; a longer line ends the session

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.listen)


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"


@dataclass(frozen=True)
class HttpSettings:
    # The ops API / console.  Not 8088: that is Asterisk's own HTTP (ARI) port on the same host.
    enabled: bool = True
    listen: str = "127.0.0.1:8090"  # "" turns it off too
    session_hours: float = 12.0  # console session lifetime
    cookie_secure: bool = False  # set true behind an HTTPS reverse proxy

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.listen)

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


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
    source: str = "<defaults>"


_SECTIONS: dict[str, type] = {
    "asterisk": AsteriskSettings,
    "database": DatabaseSettings,
    "recordings": RecordingSettings,
    "notice": NoticeSettings,
    "hooks": HookSettings,
    "log": LogSettings,
    "integrity": IntegritySettings,
    "http": HttpSettings,
    "agi": AgiSettings,
}
_RULE_KEYS = {f for f in PolicyRule.__dataclass_fields__}


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
    return parse_settings(raw, environ, source)


def parse_settings(raw: Mapping[str, Any], environ: Mapping[str, str], source: str = "<dict>") -> Settings:
    known = set(_SECTIONS) | {"policy", "retention"}
    for section in raw:
        if section not in known:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(known))})")
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = _table(raw, name)
        values = dict(table)
        for key in cls.__dataclass_fields__:
            env_key = f"CALLREC_{name.upper()}_{key.upper()}"
            if env_key in environ:
                values[key] = environ[env_key]
        built[name] = _build(cls, name, values)
    built["policy"] = _parse_policy(_table(raw, "policy"), environ)
    built["retention"] = parse_retention(_table(raw, "retention"), environ, {r.name for r in built["policy"].rules})
    settings = Settings(**built, source=source)
    _validate(settings)
    return settings


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{name}: expected a table [{name}]")
    return table


def _build(cls: type, prefix: str, values: Mapping[str, Any]) -> Any:
    fields = cls.__dataclass_fields__
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(fields)})")
        kwargs[key] = _coerce(f"{prefix}.{key}", fields[key].type, value)
    return cls(**kwargs)


def _coerce(key: str, type_name: Any, value: Any) -> Any:
    """Coerce TOML / environment values to the field type; strings from the environment too."""
    t = str(type_name)
    if t.startswith("tuple[str"):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if t in ("bool | None", "int | None", "float | None"):
        if value is None:
            return None
        t = t[: -len(" | None")]
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if t == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if t == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if t in ("str", "str | None"):
        if value is None and t == "str | None":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _parse_policy(table: Mapping[str, Any], environ: Mapping[str, str]) -> PolicySettings:
    values = {k: v for k, v in table.items() if k != "rules"}
    for key in ("mode", "language", "prompt", "record", "sample_percent", "sample_seed"):
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
        rule = _build(PolicyRule, prefix, entry)
        if rule.name in names:
            raise ConfigError(f"{prefix}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        if all(getattr(rule, k) is None for k in ("did", "caller", "context", "extension", "queue")):
            raise ConfigError(f"{prefix}: a rule needs at least one of did, caller, context, extension, queue")
        rules.append(rule)
    return _build(PolicySettings, "policy", {**values, "rules": tuple(rules)})


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
    if not 0 < s.asterisk.ami_port < 65536:
        raise ConfigError(f"asterisk.ami_port: expected a TCP port 1-65535, got {s.asterisk.ami_port}")
    if not 0 < s.asterisk.request_timeout <= 60:
        raise ConfigError(f"asterisk.request_timeout: expected 0-60 seconds, got {s.asterisk.request_timeout}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.asterisk.app):
        raise ConfigError(f"asterisk.app: letters, digits, '_', '.', '-' only, got {s.asterisk.app!r}")
    if urlsplit(s.database.dsn).scheme not in ("postgres", "postgresql"):
        raise ConfigError("database.dsn: expected a postgresql:// URL")
    if not 1 <= s.database.pool_min <= s.database.pool_max:
        raise ConfigError("database.pool_min: must be at least 1 and not above database.pool_max")
    if not re.fullmatch(r"/[A-Za-z0-9_./-]*", s.recordings.dir) or "/../" in s.recordings.dir + "/":
        # It becomes part of MixMonitor's argument string, where a comma would start options.
        raise ConfigError(f"recordings.dir: expected an absolute path of letters, digits, '_', '.', '-', "
                          f"got {s.recordings.dir!r}")
    if s.recordings.local_dir and not s.recordings.local_dir.startswith("/"):
        raise ConfigError(f"recordings.local_dir: expected an absolute path, got {s.recordings.local_dir!r}")
    _check_mixmonitor("recordings.mixmonitor_options", s.recordings.mixmonitor_options)
    if s.recordings.finalize_timeout <= 0:
        raise ConfigError("recordings.finalize_timeout: must be above 0")
    n = s.notice
    if not n.prompts_dir.startswith("/"):
        raise ConfigError(f"notice.prompts_dir: expected an absolute path, got {n.prompts_dir!r}")
    if not _LANG_RE.match(n.default_language):
        raise ConfigError(f"notice.default_language: expected a language code like 'en', got {n.default_language!r}")
    if not 0 <= n.decision_window <= 60:
        raise ConfigError(f"notice.decision_window: expected 0-60 seconds, got {n.decision_window}")
    if not 1 <= n.max_notice_seconds <= 600:
        raise ConfigError(f"notice.max_notice_seconds: expected 1-600 seconds, got {n.max_notice_seconds}")
    for key in ("opt_out_key", "opt_in_key"):
        value = getattr(n, key)
        if value not in DTMF_KEYS:
            raise ConfigError(f"notice.{key}: expected one DTMF key (0-9, *, #, A-D), got {value!r}")
    if n.opt_out_key == n.opt_in_key:
        raise ConfigError("notice.opt_in_key: must differ from notice.opt_out_key")
    if s.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {s.log.level!r}")
    check_integrity(s.integrity)
    _check_http(s.http)
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


def _check_http(h: HttpSettings) -> None:
    if h.listen:
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", h.listen)
        if not m or int(m.group(2)) > 65535:
            raise ConfigError(f"http.listen: expected host:port like 127.0.0.1:8090, got {h.listen!r}")
    if not 0.01 <= h.session_hours <= 24 * 30:
        raise ConfigError(f"http.session_hours: expected 0.01-720 hours, got {h.session_hours}")


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
    if p.record not in RECORD_WORDS or p.record == "dontcare":
        raise ConfigError(f"policy.record: expected one of force, yes, no, never, got {p.record!r}")
    if not 0 <= p.sample_percent <= 100:
        raise ConfigError(f"policy.sample_percent: expected 0-100, got {p.sample_percent:g}")
    for i, rule in enumerate(p.rules):
        prefix = f"policy.rules[{i}]"
        if rule.record not in RECORD_WORDS:
            raise ConfigError(f"{prefix}.record: expected one of {', '.join(RECORD_WORDS)}, got {rule.record!r}")
        if rule.side is not None and rule.side not in RULE_SIDES:
            raise ConfigError(f"{prefix}.side: expected caller or callee, got {rule.side!r}")
        if rule.sample_percent is not None and not 0 <= rule.sample_percent <= 100:
            raise ConfigError(f"{prefix}.sample_percent: expected 0-100, got {rule.sample_percent:g}")


def _check_hooks(h: HookSettings) -> None:
    if h.command:
        if not h.command[0].startswith("/"):
            raise ConfigError(f"hooks.command: the program must be an absolute path, got {h.command[0]!r}")
        for arg in h.command:
            for name in re.findall(r"{([^{}]*)}", arg):
                if name not in HOOK_PLACEHOLDERS:
                    raise ConfigError(f"hooks.command: unknown placeholder {{{name}}} "
                                      f"(known: {', '.join('{' + p + '}' for p in HOOK_PLACEHOLDERS)})")
    if h.webhook_url:
        url = urlsplit(h.webhook_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            # Never echo the value: it may carry a token.
            raise ConfigError("hooks.webhook_url: expected an http:// or https:// URL")
        if url.username or url.password:
            raise ConfigError("hooks.webhook_url: must not carry credentials; use hooks.webhook_auth")
    for key in ("webhook_auth", "webhook_hmac_key"):
        if getattr(h, key) and not h.webhook_url:
            raise ConfigError(f"hooks.{key}: set, but hooks.webhook_url is empty")
    if any(c in h.webhook_auth for c in "\r\n"):
        raise ConfigError("hooks.webhook_auth: must be one line")
    for key in ("command_timeout", "webhook_timeout", "retry_initial", "retry_max"):
        if not 0 < getattr(h, key) <= 86400:
            raise ConfigError(f"hooks.{key}: expected a number of seconds above 0, got {getattr(h, key):g}")
    if h.retry_max < h.retry_initial:
        raise ConfigError("hooks.retry_max: must not be below hooks.retry_initial")
    if not 1 <= h.max_attempts <= 1000:
        raise ConfigError(f"hooks.max_attempts: expected 1-1000, got {h.max_attempts}")
    if not 1 <= h.concurrency <= 64:
        raise ConfigError(f"hooks.concurrency: expected 1-64, got {h.concurrency}")


def _check_agi(a: AgiSettings) -> None:
    if a.listen:
        host, sep, port = a.listen.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not bare or not port.isdigit() or int(port) > 65535 \
                or not re.fullmatch(r"[A-Za-z0-9_.:-]+", bare):
            raise ConfigError(f"agi.listen: expected host:port like 127.0.0.1:4573 (or \"\" to turn FastAGI off), "
                              f"got {a.listen!r}")
    if not 1 <= a.max_sessions <= 100000:
        raise ConfigError(f"agi.max_sessions: expected 1-100000, got {a.max_sessions}")
    if not 0 < a.handshake_timeout <= 60:
        raise ConfigError(f"agi.handshake_timeout: expected 0-60 seconds, got {a.handshake_timeout}")
    if not 0 < a.command_timeout <= 60:
        raise ConfigError(f"agi.command_timeout: expected 0-60 seconds, got {a.command_timeout}")
    if not 1024 <= a.max_line <= 1048576:
        raise ConfigError(f"agi.max_line: expected 1024-1048576 bytes, got {a.max_line}")
