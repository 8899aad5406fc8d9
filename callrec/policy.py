"""Which notice, consent mode and recording options a call gets.  Pure: no I/O.

Precedence, highest first:
1. Stasis / AGI arguments from the dialplan (``mode=opt-out``, ``lang=ru``, ``prompt=...``, ``rule=NAME``);
2. the first ``[[policy.rules]]`` entry whose matchers (did, caller, context; fnmatch patterns) all fit;
3. the ``[policy]`` defaults.
The language is then resolved against the prompts that exist: ``ru_RU`` falls back to ``ru``,
and a language with no prompt falls back to ``notice.default_language``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import CONSENT_MODES, NoticeSettings, PolicyRule, PolicySettings, RecordingSettings

ARGUMENT_KEYS = ("did", "context", "mode", "lang", "language", "prompt", "rule")
# Set by dialplan/callrec-outbound.conf on the called party's channel (callrec.ari_parties).
ARGUMENT_KEYS += ("direction", "agent", "agent_channel")
DEFAULT_PROMPTS = {"notice": "notice", "opt-out": "notice-opt-out", "opt-in": "notice-opt-in"}
NOT_RECORDED_PROMPT = "not-recorded"


@dataclass(frozen=True)
class CallFacts:
    """What is known about a call when it reaches callrec."""

    did: str = ""
    caller: str = ""
    context: str = ""
    channel_language: str = ""
    args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    mode: str
    language: str
    prompt: str
    mixmonitor_options: str
    rule: str | None
    # Arguments that were ignored (unknown key, bad value), for the log.
    warnings: tuple[str, ...] = ()


def parse_args(raw: list[str]) -> tuple[dict[str, str], list[str]]:
    """``["mode=opt-out", "lang=ru", ""]`` -> ({"mode": "opt-out", "lang": "ru"}, warnings)."""
    args: dict[str, str] = {}
    warnings: list[str] = []
    for item in raw:
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            warnings.append(f"argument {item[:40]!r} ignored: expected key=value")
            continue
        key = key.strip().lower()
        if key not in ARGUMENT_KEYS:
            warnings.append(f"argument {key[:40]!r} ignored: known keys are {', '.join(ARGUMENT_KEYS)}")
            continue
        if key in args:
            # The first value wins: the admin's arguments come first in callrec.conf, the
            # subroutine's own did= / context= after them as defaults.
            warnings.append(f"argument {key}= given twice; the first value is kept")
            continue
        args[key] = value.strip()
    return args, warnings


def rule_matches(rule: PolicyRule, facts: CallFacts) -> bool:
    checks = ((rule.did, facts.did), (rule.caller, facts.caller), (rule.context, facts.context))
    return all(pattern is None or fnmatch.fnmatchcase(value, pattern) for pattern, value in checks)


def decide(
    policy: PolicySettings,
    notice: NoticeSettings,
    recordings: RecordingSettings,
    facts: CallFacts,
    prompts: Mapping[str, set[str]],
) -> Decision:
    """Pick mode, language, prompt and MixMonitor options for one call.

    ``prompts`` maps a language to the prompt names installed for it.
    """
    warnings: list[str] = []
    args = dict(facts.args)
    rule: PolicyRule | None = None
    if "rule" in args:
        rule = next((r for r in policy.rules if r.name == args["rule"]), None)
        if rule is None:
            warnings.append(f"rule={args['rule'][:40]!r} ignored: no such rule")
    if rule is None:
        rule = next((r for r in policy.rules if rule_matches(r, facts)), None)

    mode = _first(rule.mode if rule else None, policy.mode)
    if "mode" in args:
        if args["mode"] in CONSENT_MODES:
            mode = args["mode"]
        else:
            warnings.append(f"mode={args['mode'][:40]!r} ignored: expected one of {', '.join(CONSENT_MODES)}")

    prompt = _first(args.get("prompt"), rule.prompt if rule else None, policy.prompt, DEFAULT_PROMPTS[mode])
    wanted_language = _first(
        args.get("lang") or args.get("language"),
        rule.language if rule else None,
        policy.language,
        facts.channel_language,
        notice.default_language,
    )
    language = resolve_language(wanted_language, prompt, notice.default_language, prompts)
    if language is None:
        warnings.append(f"prompt {prompt!r} is not installed; using {DEFAULT_PROMPTS[mode]!r}")
        prompt = DEFAULT_PROMPTS[mode]
        language = resolve_language(wanted_language, prompt, notice.default_language, prompts)
    options = _first(rule.mixmonitor_options if rule else None, recordings.mixmonitor_options)
    return Decision(
        mode=mode,
        language=language or notice.default_language,
        prompt=prompt,
        mixmonitor_options=options,
        rule=rule.name if rule else None,
        warnings=tuple(warnings),
    )


def resolve_language(wanted: str, prompt: str, default: str, prompts: Mapping[str, set[str]]) -> str | None:
    """The language whose prompt will be played: exact, then base language, then the default."""
    wanted = wanted.strip()
    candidates = [wanted, wanted.replace("-", "_"), wanted.split("_")[0].split("-")[0].lower(), default]
    for lang in candidates:
        if lang and prompt in prompts.get(lang, ()):
            return lang
    return None


def _first(*values: str | None) -> str:
    for value in values:
        if value:
            return value
    return ""
