"""HTTP Range (RFC 9110 §14) for one file: single ranges served, the rest ignored or refused."""

from __future__ import annotations

import re

_SINGLE = re.compile(r"^\s*(\d{0,18})\s*-\s*(\d{0,18})\s*$")


class Unsatisfiable(Exception):
    """416: the range lies outside the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range to send, or None for the whole file.

    Unknown units, malformed specs and multiple ranges are ignored (the whole file is sent, as the
    RFC allows); a syntactically valid range outside the file raises Unsatisfiable.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _SINGLE.match(spec)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)
