"""Phone numbers in one form for search: E.164 digits without the ``+``.

The call log keeps each number as Asterisk gave it (``caller_number``, ``called_number``) and beside it
its digits in one form (``caller_digits``, ``called_digits``, migration 014), so that ``+7 916 739-28-55``,
``79167392855`` and ``89167392855`` find the same call by an index.  Parsing is Google's libphonenumber
rules (the ``phonenumbers`` package); a number written without a country code is read as a number of
``[search] default_country``.  Pure functions: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

DEFAULT_COUNTRY = "RU"
# A written number: digits and the separators people type.  Anything else (letters, `_`, `%`) is not a
# number: the search then compares the text as written.
_WRITTEN = re.compile(r"^\+?[0-9 ()./-]*$")
_WILDCARD = re.compile(r"^\+?[0-9 ()./*-]*$")
_NOT_DIGIT = re.compile(r"[^0-9]")
# A tail shorter than this would match too much: shorter inputs must be the whole number.
MIN_TAIL = 4
MAX_DIGITS = 20


def is_country(code: str) -> bool:
    """A region code libphonenumber knows (``RU``, ``DE``, ...)."""
    return code in phonenumbers.SUPPORTED_REGIONS


def digits(number: str | None, country: str = DEFAULT_COUNTRY) -> str | None:
    """The stored search form of a number: E.164 digits when it parses as a valid number of ``country``
    (or, with ``+``, of its own country), else just its digits; None when it has no digits (``anonymous``)."""
    if not number:
        return None
    plain = _NOT_DIGIT.sub("", number)[:MAX_DIGITS * 2]
    if not plain:
        return None
    parsed = _valid(number.strip()[:64], country)
    return parsed if parsed is not None else plain


@lru_cache(maxsize=4096)
def _valid(text: str, country: str) -> str | None:
    try:
        parsed = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return f"{parsed.country_code}{parsed.national_number}"


@dataclass(frozen=True)
class NumberMatch:
    """How a ``number=`` filter matches the digit columns.

    ``kind``: ``exact`` (digits equal one of ``values``), ``prefix`` (start with one of ``values``),
    ``suffix`` (end with ``values[0]``), ``pattern`` (a LIKE pattern over the digits, ``values[0]``),
    ``text`` (not a written number: LIKE over the numbers as stored, ``values[0]`` with ``*`` wildcards).
    """

    kind: str
    values: tuple[str, ...]


def parse_query(text: str, country: str = DEFAULT_COUNTRY) -> NumberMatch:
    """What a ``number=`` search value means.

    - a whole number in any written form (``+7 916 739-28-55``, ``79167392855``, ``89167392855``): exact;
    - other digits, at least ``MIN_TAIL`` of them (``7392855``): the end of the number; fewer: the whole;
    - with ``+`` in front: those digits exactly (the country code is written);
    - ``*`` wildcards: ``+7495*`` a prefix (without ``+``, a national prefix ``8...`` is also tried as
      ``7...``), ``*2855`` a suffix, others a pattern;
    - anything else (letters, ``_``): the stored text as written, ``*`` the only wildcard.
    """
    value = text.strip()
    if "*" in value:
        if not _WILDCARD.match(value) or not _NOT_DIGIT.sub("", value):
            return NumberMatch("text", (value,))
        parts = [_NOT_DIGIT.sub("", p) for p in value.split("*")]
        international = value.startswith("+")
        inner = parts[1:-1]
        if len(parts) == 2 and parts[0] and not parts[1]:
            return NumberMatch("prefix", _prefixes(parts[0], international, country))
        if len(parts) == 2 and not parts[0] and parts[1]:
            return NumberMatch("suffix", (parts[1],))
        if not any(inner) and parts[0] and not parts[-1] and len(parts) > 2:  # `+7495**`
            return NumberMatch("prefix", _prefixes(parts[0], international, country))
        return NumberMatch("pattern", ("%".join(parts),))  # digits only: nothing to escape in LIKE
    if not _WRITTEN.match(value) or not _NOT_DIGIT.sub("", value):
        return NumberMatch("text", (value,))
    plain = _NOT_DIGIT.sub("", value)
    if value.startswith("+"):
        return NumberMatch("exact", (plain,))
    whole = _valid(value[:64], country)
    if whole is not None:
        return NumberMatch("exact", (whole,))
    if len(plain) >= MIN_TAIL:
        return NumberMatch("suffix", (plain,))
    return NumberMatch("exact", (plain,))


def _prefixes(start: str, international: bool, country: str) -> tuple[str, ...]:
    """The digit prefixes a written prefix stands for: as written, and with the national prefix (RU ``8``)
    replaced by the country code when it is written without ``+``."""
    if international:
        return (start,)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(country)
    national = meta.national_prefix if meta is not None else None
    if national and start.startswith(national) and len(start) > len(national):
        alt = f"{meta.country_code}{start[len(national):]}"  # type: ignore[union-attr]
        if alt != start:
            return (start, alt)
    return (start,)

