"""The configuration reference (docs/configuration.md), generated from the settings classes.

Every row comes from a field's ``setting(...)`` metadata (fields.py): the same ranges the validation
enforces.  Regenerate the page with ``callrec config reference > docs/configuration.md``;
tests/unit fail when the page and the code disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from callrec.config.alerts import AlertRule
from callrec.config.dataops import RetentionRule
from callrec.config.fields import doc_of
from callrec.config.settings import SECTIONS, PolicyRule

__all__ = ["TABLES", "render"]

Table = tuple[str, type, tuple[str, ...], str]
# A section's rules table follows the section itself.
_RULE_TABLES: dict[str, Table] = {
    "policy": ("[[policy.rules]]", PolicyRule, (), ""),
    "retention": ('[retention.rules."NAME"]', RetentionRule, ("rule",), ""),
    "alerts": ("[[alerts.rules]]", AlertRule, (), ""),
}
# (heading, class, keys not shown as rows, section name for the environment note; "" for rules,
# which have no environment overrides), in the order of the page.
TABLES: tuple[Table, ...] = tuple(
    table
    for name, cls in SECTIONS.items()
    for table in ((f"[{name}]", cls, (), name), *((_RULE_TABLES[name],) if name in _RULE_TABLES else ()))
)

_HEADER = """\
# Configuration reference

<!-- Generated from the settings classes (callrec/config/settings.py, dataops.py, speech.py):
     do not edit by hand. Change the field's setting(...) and regenerate with
     `callrec config reference > docs/configuration.md`. A unit test fails when they differ. -->

One TOML file, by default `/etc/callrec/callrec.toml` (`$CALLREC_CONFIG` or `callrec -c FILE` point
elsewhere), read and validated once at start (a change needs a restart; see the
[limits](../README.md#limits)). An unknown section or key, a wrong type or a value outside the
range below stops every command with one line that names the key, and exit status 2, e.g.
`callrec: config error: asterisk.ami_port: expected a whole number, got 'fifty'`. A "whole number"
key refuses a decimal (`retention.audio_days = 0.9` is an error, not 0), and no number key takes
`nan` or `inf`.

**Environment overrides: `CALLREC_<SECTION>_<KEY>`** overrides a key of the file, e.g.
`CALLREC_ASTERISK_ARI_PASSWORD`, `CALLREC_DATABASE_DSN`, `CALLREC_HOOKS_WEBHOOK_AUTH`,
`CALLREC_HTTP_LISTEN`, `CALLREC_LOG_LEVEL=debug`. Each section below says which of its keys have one;
lists and rules (`hooks.command`, `[[policy.rules]]`, `[retention.rules."NAME"]`) live only in the file.
Keep the keys marked **secret** in an environment file readable only by root and the daemon's group
(see [the install guide](install.md)). Booleans accept `true/false`, `1/0`, `yes/no` and `on/off`.

Columns: *allowed* is what the validation accepts (a range includes its ends unless it says "above");
*default* is the value when the key is absent.
"""

# What a section needs said beyond its rows: cross-key rules and where the topic is explained.
_NOTES: dict[str, str] = {
    "[asterisk]": "At least one door must be on: `ari_enabled = false` with the FastAGI door off too (`[agi]`) "
                  "is a config error.",
    "[notice]": "The prompts say the keys out loud: if you change a key, change the prompts too "
                "([sounds/README.md](../sounds/README.md)). How prompts are found and installed: "
                "[call-flow.md](call-flow.md#prompts).",
    "[policy]": "How the words combine, sampling and `callrec policy explain`: [policy.md](policy.md).",
    "[[policy.rules]]": "Each entry needs at least one of `did`, `caller`, `context`, "
                        "`extension`, `queue`; all it gives must match, and the first matching rule of each "
                        "side gives that side's word ([policy.md](policy.md#rules)).",
    "[hooks]": "Hooks run once per finished recording (status `ready` or `unclosed`): "
               "[policy.md](policy.md#the-post-recording-hook).",
    "[agi]": "The FastAGI door: [agi.md](agi.md). FastAGI has no authentication: keep `listen` on loopback.",
    "[http]": "The ops API and the web console: [ops-api.md](ops-api.md), [console.md](console.md).",
    "[retention]": "What deleting and anonymizing do, legal hold and the job: [ops-data.md](ops-data.md#retention).",
    '[retention.rules."NAME"]': "Per policy rule: `NAME` must be a `[[policy.rules]]` name (a misspelt rule "
                                "would silently fall back to a shorter default, so it is a config error). A "
                                "key not given inherits `[retention]`'s; the rule's `audio_days` must still be "
                                "1…`metadata_days` when `metadata_days` is set.\n\n"
                                "```toml\n[retention]\naudio_days = 90\nmetadata_days = 730\n\n"
                                "[retention.rules.\"support-qa\"]\naudio_days = 30\n\n"
                                "[retention.rules.trading]\n"
                                "audio_days = 0           # keep forever: with metadata_days inherited (730) this "
                                "alone would be\n"
                                "metadata_days = 0        # refused, because audio cannot outlive its row; so both "
                                "are 0\n```",
    "[integrity]": "Signed evidence exports: [ops-data.md](ops-data.md#signed-evidence-exports).",
    "[alerts]": "Keyword alerts, how they are matched and delivered: [speech.md](speech.md#keyword-alerts). "
                "Rules may also be added through the API by `admin` and `security` "
                "([ops-api.md](ops-api.md#keyword-alerts)); a name used in the file cannot be added there.",
    "[[alerts.rules]]": "A rule with a name used twice, no phrase, or a phrase of stop words only is a config "
                        "error.\n\n```toml\n[[alerts.rules]]\nname = \"trade-secret\"\n"
                        "phrases = [\"коммерческая тайна\", \"confidential\"]\n\n"
                        "[[alerts.rules]]\nname = \"agent-greeting\"          # script compliance\n"
                        "phrases = [\"меня зовут\", \"my name is\"]\nspeaker = \"agent\"\nkind = \"not_said\"\n"
                        "within_s = 30\n```",
    "[speech]": "The offline speech engine, its model and its workers: [speech.md](speech.md). `cache_dir` must "
                "not be inside the recordings folder.",
}

_TYPES = {"bool": "boolean", "int": "whole number", "float": "number", "str": "string",
          "tuple[str, ...]": "list of strings"}


def _type(f: dataclasses.Field[Any]) -> str:
    t = str(f.type)
    if t.startswith("tuple[") and t != "tuple[str, ...]":
        return "tables"
    if t.endswith(" | None"):
        return _TYPES[t[: -len(" | None")]] + " or unset"
    return _TYPES[t]


def _default(f: dataclasses.Field[Any], shown: str) -> str:
    if shown:
        return shown
    value = f.default
    if value is dataclasses.MISSING or value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    return f"`{value!r}`"


def _env(section: str, cls: type) -> str:
    if not section:
        return "No environment overrides: rules live only in the file."
    keys = [f.name for f in dataclasses.fields(cls) if not str(f.type).startswith("tuple[")]
    lists = [f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple[")]
    prefix = f"CALLREC_{section.upper()}_"
    but = f" but {', '.join(f'`{k}`' for k in lists)}" if lists else ""
    return f"Environment: `{prefix}<KEY>` for every key{but}, e.g. `{prefix}{keys[0].upper()}`."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(heading: str, cls: type, skip: tuple[str, ...], section: str) -> str:
    lines = [f"## `{heading}`", "", _env(section, cls), "",
              "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        doc = doc_of(f)
        if doc is None:
            raise ValueError(f"{cls.__name__}.{f.name}: no setting(...) metadata to document it")
        if doc.range is not None:
            allowed = doc.range.describe()
        elif doc.choices:
            allowed = ", ".join(f"`{c}`" for c in doc.choices)
        else:
            allowed = doc.allowed or "—"
        meaning = ("**secret**: " if doc.secret else "") + doc.text
        lines.append(f"| `{f.name}` | {_type(f)} | {_cell(_default(f, doc.default))} | {_cell(allowed)} "
                     f"| {_cell(meaning)} |")
    note = _NOTES.get(heading)
    if note:
        lines += ["", note]
    return "\n".join(lines)


def render() -> str:
    """The whole reference page, Markdown: one table per section."""
    parts = [_HEADER.rstrip("\n")]
    parts += [_table(*table) for table in TABLES]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
