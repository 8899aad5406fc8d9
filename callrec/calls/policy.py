"""Whether a call is recorded, and with which notice, consent mode and recording options.

Pure: no I/O.  Randomness for QA sampling comes in as ``draw`` (a seedable generator's
``random``), so the same seed gives the same decisions.

Recording (docs/policy.md has the full table): each side of the call, caller and callee,
gets the word of its first matching ``[[policy.rules]]`` entry (force, yes, dontcare, no,
never; no match = dontcare).  ``force``/``never`` override ``yes``/``no``; when both sides
override, the callee side (later in the call flow) wins; between ``yes`` and ``no`` the caller
side (earlier) wins; two ``dontcare`` fall back to ``[policy] record``.  ``yes`` is then subject
to QA sampling.  ``force`` records after the notice with no opt-out / opt-in key.  A call that is
not recorded hears no notice.

Notice settings, highest first:
1. Stasis / AGI arguments from the dialplan (``mode=opt-out``, ``lang=ru``, ``prompt=...``, ``rule=NAME``);
2. the rule whose word decided (else the first matching rule in file order);
3. the ``[policy]`` defaults.
The language is then resolved against the prompts that exist: ``ru_RU`` falls back to ``ru``,
and a language with no prompt falls back to ``notice.default_language``.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from callrec.config.settings import (
    CONSENT_MODES,
    RECORD_WORDS,
    NoticeSettings,
    PolicyRule,
    PolicySettings,
    RecordingSettings,
)

ARGUMENT_KEYS: tuple[str, ...] = (
    "did", "context", "mode", "lang", "language", "prompt", "rule", "extension", "queue", "record",
    # Set by dialplan/callrec-outbound.conf on the called party's channel (callrec.doors.ari_parties).
    "direction", "agent", "agent_channel",
)
MATCHERS = ("did", "caller", "context", "extension", "queue")
OVERRIDES = ("force", "never")
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
    extension: str = ""  # empty: the extension= argument, if any
    queue: str = ""  # empty: the queue= argument, if any

    def value(self, matcher: str) -> str:
        """What a rule's matcher is compared with."""
        own = getattr(self, matcher)
        if own or matcher not in ("extension", "queue"):
            return own
        if matcher == "extension" and not self.args.get("extension"):
            return str(self.args.get("agent", ""))  # outbound: the dialing agent's extension
        return str(self.args.get(matcher, ""))


@dataclass(frozen=True)
class Decision:
    mode: str
    language: str
    prompt: str
    mixmonitor_options: str
    rule: str | None
    # Record caller and agent on separate channels of a stereo WAV ([recordings] stereo, rule stereo).
    stereo: bool = False
    # Arguments that were ignored (unknown key, bad value), for the log.
    warnings: tuple[str, ...] = ()
    record: bool = True  # False: policy says do not record; no notice is played
    word: str = "yes"  # the word that decided: force | yes | no | never
    forced: bool = False  # force: recorded after the notice; no opt-out / opt-in key
    sampled: bool | None = None  # QA sampling: True kept, False sampled out, None not sampled
    reason: str = ""  # one line, no commas (it goes into CALLREC_REASON and the row)
    trail: tuple[str, ...] = ()  # every step, for `callrec policy explain`
    # Per-rule bridged_only (None: the [recordings]/mixmonitor_options setting); already folded into
    # mixmonitor_options as "b" when true.
    bridged_only: bool | None = None


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
    for matcher in MATCHERS:
        pattern = getattr(rule, matcher)
        if pattern is not None and not fnmatch.fnmatchcase(facts.value(matcher), pattern):
            return False
    return True


_Compiled = tuple[tuple[PolicyRule, str, tuple[tuple[str, Callable[[str], object]], ...]], ...]
_compiled: dict[int, tuple[PolicySettings, _Compiled]] = {}


def _compile(policy: PolicySettings) -> _Compiled:
    """Each rule's side and its patterns as compiled regexes, once per settings object."""
    hit = _compiled.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    compiled = tuple(
        (rule, rule.effective_side,
         tuple((m, re.compile(fnmatch.translate(getattr(rule, m))).match) for m in MATCHERS
               if getattr(rule, m) is not None))
        for rule in policy.rules)
    if len(_compiled) > 16:  # settings objects come and go in tests; a daemon has one
        _compiled.clear()
    _compiled[id(policy)] = (policy, compiled)
    return compiled


def rule_misses(rule: PolicyRule, facts: CallFacts) -> list[str]:
    """Why a rule does not fit a call (empty: it fits)."""
    misses = []
    for matcher in MATCHERS:
        pattern = getattr(rule, matcher)
        if pattern is not None and not fnmatch.fnmatchcase(facts.value(matcher), pattern):
            misses.append(f"{matcher} {facts.value(matcher)!r} does not fit {pattern!r}")
    return misses


def describe_rule(rule: PolicyRule) -> str:
    matchers = " ".join(f"{m}={getattr(rule, m)}" for m in MATCHERS if getattr(rule, m) is not None)
    return f"rule {rule.name} ({rule.effective_side} side; {matchers})"


@dataclass(frozen=True)
class Recording:
    """The outcome of the caller-vs-callee precedence, before sampling."""

    word: str  # force | yes | no | never
    rule: PolicyRule | None  # the rule whose word decided, or None ([policy] record / dialplan)
    source: str  # "caller side", "callee side", "dialplan argument" or "policy.record"
    reason: str
    trail: tuple[str, ...]


def resolve_words(caller_word: str, callee_word: str, default: str) -> tuple[str, str]:
    """The precedence table: (word, which side decided: "caller" | "callee" | "default")."""
    if callee_word in OVERRIDES:
        return callee_word, "callee"  # force/never override; the later side (callee) wins a tie
    if caller_word in OVERRIDES:
        return caller_word, "caller"
    if caller_word in ("yes", "no"):
        return caller_word, "caller"  # yes/no are equal; the earlier side (caller) wins
    if callee_word in ("yes", "no"):
        return callee_word, "callee"
    return default, "default"


def decide(
    policy: PolicySettings,
    notice: NoticeSettings,
    recordings: RecordingSettings,
    facts: CallFacts,
    prompts: Mapping[str, set[str]],
    draw: Callable[[], float] | None = None,
    explain: bool = False,
) -> Decision:
    """Decide recording, mode, language, prompt and recording options for one call.

    ``prompts`` maps a language to the prompt names installed for it; ``draw`` returns a float in
    [0, 1) for QA sampling (default: the module's generator).  ``explain`` adds every rule that
    was looked at to the trail; without it, the scan stops once both sides have their rule (this
    runs on the caller's path, before the notice).
    """
    warnings: list[str] = []
    trail: list[str] = []
    args = dict(facts.args)
    picked: PolicyRule | None = None
    if "rule" in args:
        picked = next((r for r in policy.rules if r.name == args["rule"]), None)
        if picked is None:
            warnings.append(f"rule={args['rule'][:40]!r} ignored: no such rule")
        else:
            trail.append(f"dialplan argument rule={picked.name} picks {describe_rule(picked)}")
    sides: dict[str, PolicyRule | None] = {"caller": None, "callee": None}
    first: PolicyRule | None = picked
    values = {m: facts.value(m) for m in MATCHERS}
    for rule, side, patterns in _compile(policy):
        if picked is not None and side == picked.effective_side:
            continue  # rule= replaces the matching on its own side
        if not explain:
            if sides[side] is None and all(match(values[m]) for m, match in patterns):
                trail.append(f"{describe_rule(rule)}: matches; {side} side says {rule.record}")
                sides[side] = rule
                first = first or rule
                if sides["caller"] is not None and sides["callee"] is not None:
                    break
            continue
        misses = rule_misses(rule, facts)
        if misses:
            trail.append(f"{describe_rule(rule)}: no match: {'; '.join(misses)}")
            continue
        if sides[side] is None:
            trail.append(f"{describe_rule(rule)}: matches; {side} side says {rule.record}")
            sides[side] = rule
            first = first or rule
        else:
            speaking = sides[side]
            trail.append(f"{describe_rule(rule)}: matches, but rule {speaking.name if speaking else '?'} already "
                         f"speaks for the {side} side")
    if picked is not None:
        sides[picked.effective_side] = picked
    rec = _recording(policy, sides, args, trail, warnings)
    trail = list(rec.trail)
    source_rule = rec.rule or first

    chosen = source_rule  # the rule whose notice and recording settings apply (None: the [policy] ones)

    settings_from = None
    if source_rule is not None:
        settings_from = (f"notice settings from rule {source_rule.name}"
                         + (" (the rule that decided)" if rec.rule is not None else " (first matching rule)"))
    mode = _first(chosen.mode if chosen else None, policy.mode)
    if "mode" in args:
        if args["mode"] in CONSENT_MODES:
            mode = args["mode"]
        else:
            warnings.append(f"mode={args['mode'][:40]!r} ignored: expected one of {', '.join(CONSENT_MODES)}")
    forced = rec.word == "force"
    force_note = None
    if forced and mode != "notice":
        force_note = f"force: consent mode {mode} becomes notice (the caller is told; no key can stop it)"
        mode = "notice"
    explicit_prompt = _first(args.get("prompt"), chosen.prompt if chosen else None, policy.prompt)
    prompt = _first(explicit_prompt, DEFAULT_PROMPTS[mode])
    wanted_language = _first(
        args.get("lang") or args.get("language"),
        chosen.language if chosen else None,
        policy.language,
        facts.channel_language,
        notice.default_language,
    )
    language = resolve_language(wanted_language, prompt, notice.default_language, prompts)
    if language is None:
        warnings.append(f"prompt {prompt!r} is not installed; using {DEFAULT_PROMPTS[mode]!r}")
        prompt = DEFAULT_PROMPTS[mode]
        language = resolve_language(wanted_language, prompt, notice.default_language, prompts)
    options = _first(chosen.mixmonitor_options if chosen else None, recordings.mixmonitor_options)

    record = rec.word in ("force", "yes")
    sampled: bool | None = None
    reason = rec.reason
    if rec.word == "yes":
        rate = chosen.sample_percent if chosen else None
        rate_from = f"rule {chosen.name}" if rate is not None and chosen is not None else "policy"
        if rate is None:
            rate = policy.sample_percent
        if rate < 100:
            value = (draw or _generator.random)() * 100 if rate > 0 else 100.0
            sampled = value < rate
            record = sampled
            drawn = f"draw {value:.2f} {'<' if sampled else '>='} {rate:g}" if rate > 0 else "nothing is kept"
            trail.append(f"QA sampling: {rate_from}.sample_percent = {rate:g}; {drawn}: "
                         f"{'kept' if sampled else 'sampled out'}")
            reason += f"; sampled {'in' if sampled else 'out'} at {rate:g}%"
    if record:
        trail.extend(note for note in (settings_from, force_note) if note)
        trail.append(f"outcome: RECORDED after the notice ({mode} mode, {language}/{prompt})"
                     + (" unless the caller declines" if mode == "opt-out" else "")
                     + (" only if the caller agrees" if mode == "opt-in" else ""))
    else:
        trail.append("outcome: NOT RECORDED; no notice is played; CALLREC_CONSENT=not_asked")
    # Per-rule recording switches; None = the [recordings] setting.
    stereo = chosen.stereo if chosen else None
    if stereo is None:
        stereo = recordings.stereo
    bridged_only = chosen.bridged_only if chosen else None
    if bridged_only and "b" not in options.replace("B", ""):
        options += "b"  # MixMonitor: record only while bridged
    return Decision(
        mode=mode,
        language=language or notice.default_language,
        prompt=prompt,
        mixmonitor_options=options,
        rule=source_rule.name if source_rule else None,
        stereo=bool(stereo),
        warnings=tuple(warnings),
        record=record,
        word=rec.word,
        forced=forced,
        sampled=sampled,
        reason=reason.replace(",", ";"),
        trail=tuple(trail),
        bridged_only=bridged_only,
    )


def _recording(policy: PolicySettings, sides: Mapping[str, PolicyRule | None], args: Mapping[str, str],
               trail: list[str], warnings: list[str]) -> Recording:
    caller_rule, callee_rule = sides["caller"], sides["callee"]
    caller_word = caller_rule.record if caller_rule else "dontcare"
    callee_word = callee_rule.record if callee_rule else "dontcare"
    callee_from = f"rule {callee_rule.name}" if callee_rule else "no rule"
    arg_word = args.get("record")
    if arg_word is not None:
        if arg_word in RECORD_WORDS:
            trail.append(f"dialplan argument record={arg_word} replaces the callee side's word ({callee_word})")
            callee_word, callee_from = arg_word, "dialplan argument"
        else:
            warnings.append(f"record={arg_word[:40]!r} ignored: expected one of {', '.join(RECORD_WORDS)}")
    caller_from = f"rule {caller_rule.name}" if caller_rule else "no rule"
    trail.append(f"caller side: {caller_word} ({caller_from}); callee side: {callee_word} ({callee_from})")
    word, side = resolve_words(caller_word, callee_word, policy.record)
    if side == "default":
        trail.append(f"neither side decides: policy.record = {word}")
        return Recording(word, None, "policy.record", f"{word}: policy.record (no rule decided)", tuple(trail))
    other = callee_word if side == "caller" else caller_word
    other_side = "callee" if side == "caller" else "caller"
    if other == "dontcare":
        why = f"the {other_side} side does not care"
    elif word in OVERRIDES and other in OVERRIDES:
        why = "both sides override; the callee side (later in the call) wins"
    elif word in OVERRIDES:
        why = f"{word} overrides {other}"
    else:
        why = "yes and no are equal; the caller side (earlier in the call) wins"
    source = caller_from if side == "caller" else callee_from
    trail.append(f"decided by the {side} side: {word} ({why})")
    rule = caller_rule if side == "caller" else (callee_rule if callee_from != "dialplan argument" else None)
    reason = f"{word}: {source} ({side} side)"
    if other != "dontcare" and other != word:
        reason += f" over {other}"
    return Recording(word, rule, f"{side} side", reason, tuple(trail))


_generator = random.Random()


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
