"""``callrec policy explain`` / ``callrec check --caller ...``: which rule a call would hit, and why.

The same ``policy.decide`` the daemon runs, with its decision trail written out for a PBX admin.
Nothing is drawn for QA sampling: the explanation says what share of such calls is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from callrec.calls.policy import CallFacts, Decision, decide, parse_args
from callrec.config.settings import Settings
from callrec.display import safe_text

NO_PROMPTS_NOTE = "(prompts not readable here: languages and prompts are shown as configured, without fallback)"


def facts_from(caller: str = "", did: str = "", context: str = "", extension: str = "", queue: str = "",
               language: str = "", args: list[str] | None = None) -> tuple[CallFacts, list[str]]:
    """CallFacts as the daemon would build them; ``args`` are dialplan arguments ("mode=opt-in")."""
    parsed, warnings = parse_args(args or [])
    facts = CallFacts(did=parsed.get("did") or did, caller=caller, context=parsed.get("context") or context,
                      channel_language=language, args=parsed, extension=extension, queue=queue)
    return facts, warnings


def explain(settings: Settings, facts: CallFacts, prompts: Mapping[str, set[str]] | None,
            arg_warnings: list[str] | None = None) -> tuple[Decision, str]:
    """The decision (as if kept by sampling) and its explanation, one step per line."""
    note = None
    if prompts is None:
        note = NO_PROMPTS_NOTE
        prompts = _AnyPrompt()
    decision = decide(settings.policy, settings.notice, settings.recordings, facts, prompts, draw=lambda: 0.0,
                      explain=True)
    shown = {k: v for k, v in facts.args.items() if k not in ("did", "context")}
    lines = [
        "call: " + "  ".join(f"{name} {safe_text(facts.value(name), 40)!r}"
                             for name in ("caller", "did", "context", "extension", "queue"))
        + (f"  channel language {safe_text(facts.channel_language, 16)!r}" if facts.channel_language else "")
        + ("  arguments: " + ", ".join(f"{k}={safe_text(v, 40)}" for k, v in shown.items()) if shown else ""),
    ]
    if not settings.policy.rules:
        lines.append("rules: none configured ([[policy.rules]] in the config)")
    sampling_line = None
    for step in decision.trail:
        if step.startswith("QA sampling:"):
            sampling_line = step
            continue
        lines.append(f"  {safe_text(step)}" if not step.startswith("outcome:") else safe_text(step))
    if decision.sampled is not None:
        rate = sampling_line.split("= ", 1)[1].split(";", 1)[0] if sampling_line else "?"
        where = sampling_line.split(":", 1)[1].split("=", 1)[0].strip() if sampling_line else "policy.sample_percent"
        lines.insert(-1, f"  QA sampling ({where}): {rate}% of these calls are recorded (a random draw per call); "
                         "the others are NOT RECORDED and hear no notice")
        lines[-1] += " (when kept by sampling)"
    record_vars = "after the notice: implied | granted | declined | not_given" if decision.record else "not_asked"
    lines.append(f"dialplan gets: CALLREC_POLICY={decision.word}  CALLREC_CONSENT={record_vars}  "
                 f"CALLREC_REASON={safe_text(decision.reason)}")
    if decision.record:
        lines.append("recording options: mixmonitor " + repr(decision.mixmonitor_options or "")
                     + f", stereo {_opt(decision.stereo)}, bridged_only {_opt(decision.bridged_only)}")
    for warning in [*(arg_warnings or []), *decision.warnings]:
        lines.append(f"warning: {safe_text(warning)}")
    if note:
        lines.append(note)
    return decision, "\n".join(lines)


def _opt(value: bool | None) -> str:
    return "(global setting)" if value is None else str(value).lower()


class _AnyPrompt(dict[str, set[str]]):
    """Every prompt exists in every language (explain without a readable prompts folder)."""

    def get(self, key: str, default: object = None) -> set[str]:
        return _Everything()


class _Everything(set[str]):
    def __contains__(self, item: object) -> bool:
        return True
