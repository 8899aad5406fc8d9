"""``callrec policy explain``: which rule a call would hit, and why (reads only the config)."""

from __future__ import annotations

import argparse

from callrec.cli.common import command, group
from callrec.config.settings import Settings


def add_commands(sub: object) -> None:
    policy = group(sub, "policy", "recording policy")
    add_call_options(command(policy, "explain", "which rule a call would hit, and why (no I/O)", explain_call))


def add_call_options(parser: argparse.ArgumentParser) -> None:
    options = parser.add_argument_group("a call to explain the policy for")
    options.add_argument("--caller", default="", help="caller number")
    options.add_argument("--did", default="", help="called number (DID / exten)")
    options.add_argument("--context", default="", help="dialplan context the call comes from")
    options.add_argument("--extension", default="", help="agent extension (the extension= argument)")
    options.add_argument("--queue", default="", help="queue name (the queue= argument)")
    options.add_argument("--language", default="", help="channel language")
    options.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                         help="a dialplan argument, e.g. --arg mode=opt-in (repeatable)")


def call_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) for k in ("caller", "did", "context", "extension", "queue", "arg"))


def explain_call(args: argparse.Namespace, settings: Settings) -> int:
    from callrec.calls.explain import explain, facts_from

    facts, warnings = facts_from(args.caller, args.did, args.context, args.extension, args.queue, args.language,
                                 args.arg)
    _, text = explain(settings, facts, installed_prompts(settings), warnings)
    print(text)
    return 0


def installed_prompts(settings: Settings) -> dict[str, set[str]] | None:
    """The prompts per language, or None when the folders cannot be read (the explanation says so)."""
    from callrec.calls.prompts import PromptCatalog, PromptError

    try:
        return PromptCatalog.load(settings.notice.prompts_dir, settings.notice.local_prompts_path).available()
    except (PromptError, OSError):
        return None


def check_lines(settings: Settings) -> list[tuple[str, str, str]]:
    """``check`` lines for the rules: ("ok" | "warn", "policy", detail)."""
    p = settings.policy
    out = [("ok", "policy", f"{len(p.rules)} rule(s); record={p.record}, sample_percent={p.sample_percent:g}"
                            + (f", sample_seed={p.sample_seed}" if p.sample_seed is not None else ""))]
    catalog = installed_prompts(settings)
    for rule in p.rules:
        if rule.prompt and catalog is not None:
            langs = [rule.language or p.language or settings.notice.default_language, settings.notice.default_language]
            if not any(rule.prompt in catalog.get(lang, ()) for lang in langs):
                out.append(("warn", "policy", f"rule {rule.name}: prompt {rule.prompt!r} is not installed for "
                                              f"{'/'.join(dict.fromkeys(langs))}; the mode's default prompt is used"))
    return out
