"""What every config section shares: the error, value parsing, and each key's documentation and range.

A key's range lives once, in its dataclass field's metadata (``setting(..., range=Range(1, 64))``):
the validation (:func:`check_ranges`) and the generated reference (``callrec.config.reference``) both
read it, so the page and the code cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REQUIRED", "ConfigError", "Doc", "Range", "build", "check_ranges", "coerce", "doc_of", "number",
           "setting"]

# The key under which a field's Doc sits in ``dataclasses.Field.metadata``.
_META = "callrec"
# The default of a key that has none (a rule's name): ``setting(REQUIRED, "...")``.
REQUIRED: Any = dataclasses.MISSING


class ConfigError(Exception):
    """A configuration problem, worded as ``key: problem``."""


def number(value: float) -> str:
    """``5`` for 5.0, ``0.01`` for 0.01, ``1048576`` (never ``1.04858e+06``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts.  ``above``: ``low`` itself is refused (a time-out of 0 would never wait)."""

    low: float | None = None
    high: float | None = None
    above: bool = False
    unit: str = ""  # "seconds", "bytes", ... as the admin reads it
    what: str = ""  # what kind of number, e.g. "a TCP port"
    zero: str = ""  # what 0 means, when it is special, e.g. "keep forever"

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """The range in words, as both the error message and the reference page say it."""
        unit = f" {self.unit}" if self.unit else ""
        what = f"{self.what} " if self.what else ""
        low = None if self.low is None else number(self.low)
        high = None if self.high is None else number(self.high)
        if low is not None and high is not None:
            if self.above:
                text = f"above {low} and at most {high}{unit}"
            elif self.zero and self.low == 0:
                text = f"{low} ({self.zero}) to {high}{unit}"
            else:
                text = f"{low}-{high}{unit}"
        elif low is not None:
            text = f"above {low}{unit}" if self.above else f"at least {low}{unit}"
        else:
            text = f"at most {high}{unit}"
        return what + text


@dataclass(frozen=True)
class Doc:
    """What the reference page says about one key."""

    text: str  # the meaning, one or two sentences in the admin's words
    range: Range | None = None
    choices: tuple[str, ...] = ()  # the allowed words (the validation checks the same tuple)
    allowed: str = ""  # the allowed form when it is neither a range nor a word list
    secret: bool = False  # better kept in the environment file than in the TOML file
    default: str = ""  # how to show the default when the value alone says too little


def setting(default: Any, text: str, *, range: Range | None = None, choices: tuple[str, ...] = (),
            allowed: str = "", secret: bool = False, shown_default: str = "") -> Any:
    """A dataclass field with its default and its documentation."""
    doc = Doc(text, range, choices, allowed, secret, shown_default)
    if default is REQUIRED:
        return dataclasses.field(metadata={_META: doc})
    return dataclasses.field(default=default, metadata={_META: doc})


def doc_of(f: dataclasses.Field[Any]) -> Doc | None:
    """The Doc given to a field by :func:`setting`, if any."""
    doc = f.metadata.get(_META)
    return doc if isinstance(doc, Doc) else None


def check_ranges(obj: Any, prefix: str) -> None:
    """Refuse a value outside its field's documented range; one line naming the key."""
    for f in dataclasses.fields(obj):
        doc = doc_of(f)
        value = getattr(obj, f.name)
        if doc is None or doc.range is None or value is None:
            continue
        if not doc.range.contains(value):
            raise ConfigError(f"{prefix}.{f.name}: expected {doc.range.describe()}, got {number(value)}")


def build(cls: type, prefix: str, values: Mapping[str, Any]) -> Any:
    """``cls(**values)`` with every value coerced to its field's type; an unknown key is an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(fields)})")
        kwargs[key] = coerce(f"{prefix}.{key}", fields[key].type, value)
    return cls(**kwargs)


def coerce(key: str, type_name: Any, value: Any) -> Any:
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
    if t in ("int", "float"):
        what = "a whole number" if t == "int" else "a number"
        if isinstance(value, bool):  # TOML true is not 1
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        if t == "int" and isinstance(value, float) and not value.is_integer():
            # int() would cut 0.9 days to 0 (keep forever) or port 15038.5 to 15038.
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        try:
            result = int(value) if t == "int" else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {what}, got {value!r}") from None
        if isinstance(result, float) and not math.isfinite(result):  # nan passes every range check
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        return result
    if t in ("str", "str | None"):
        if value is None and t == "str | None":
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value
