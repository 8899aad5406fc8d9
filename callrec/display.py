"""Showing caller-supplied text safely on a terminal.

Caller ID is whatever the far end sent.  Control characters (ESC sequences can rewrite a
terminal), bidi overrides (can reverse what an operator reads) and overlong values are shown
escaped or shortened; the stored value stays verbatim.
"""

from __future__ import annotations

import unicodedata

_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
         "\u200e", "\u200f", "\u061c"}


def safe_text(value: object, width: int | None = None) -> str:
    if value is None:
        return ""
    out = []
    for ch in str(value):
        cat = unicodedata.category(ch)
        if ch in _BIDI or cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch not in "\u200d"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    text = "".join(out)
    if width is not None and display_width(text) > width:
        text = truncate(text, width)
    return text


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    return sum(char_width(c) for c in text)


def truncate(text: str, width: int) -> str:
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def table(headers: list[str], rows: list[list[str]], widths: list[int]) -> str:
    lines = ["  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [pad(safe_text(c, w), w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
