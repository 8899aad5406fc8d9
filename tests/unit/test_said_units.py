"""The pure parts of search by what was said (callrec/store/said.py): parsing ``said``, hits and snippets,
and the CLI's hit line."""

from __future__ import annotations

import pytest

from callrec.cli.calls import hit_line, mmss
from callrec.store.callquery import FilterError, decode_cursor_fuzzy, encode_cursor, parse_filter
from callrec.store.said import MAX_TERMS, SaidError, hit, parse_said, snippet


def test_terms_words_and_phrases() -> None:
    assert parse_said('договор "коммерческая  тайна" refund').terms == ["договор", "коммерческая тайна", "refund"]
    assert parse_said('"не закрытая кавычка').terms == ["не закрытая кавычка"]
    assert parse_said("a a a").terms == ["a"]  # repeated words count once
    assert parse_said("a & b | !c <-> :*").terms == ["a", "&", "b", "|", "!c", "<->", ":*"]
    for bad in ('"', '""', "   ", "x" * 201, " ".join(f"w{i}" for i in range(MAX_TERMS + 1))):
        with pytest.raises(SaidError) as err:
            parse_said(bad)
        assert str(err.value).startswith("said: ")


@pytest.mark.parametrize("query, error", [
    ({"said": ["x" * 201]}, "said: at most 200 characters"),
    ({"silence_over": ["101"]}, "silence_over: expected 0 to 100 percent"),
    ({"agent_talk_under": ["nan"]}, "agent_talk_under: expected 0 to 100 percent"),
    ({"overtalk_over": ["soon"]}, "overtalk_over: expected a number of seconds"),
])
def test_filter_errors(query: dict[str, list[str]], error: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(lambda k: query.get(k, []))
    assert str(err.value).startswith(error)


def test_cursor_keeps_the_fallback() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, tzinfo=UTC)
    cid = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    assert decode_cursor_fuzzy(encode_cursor(at, cid, "desc", True), "desc") == ((at, cid), True)
    assert decode_cursor_fuzzy(encode_cursor(at, cid, "desc"), "desc") == ((at, cid), False)
    with pytest.raises(FilterError):
        parse_filter(lambda k: [encode_cursor(at, cid, "desc", True)] if k == "cursor" else [])


WORDS = [[" Здравствуйте,", 1000, 1250, 0.9], [" по", 1300, 1550, 0.9], [" договору.", 1600, 1850, 0.9]]


def test_hit_offset_and_snippet() -> None:
    h = hit(3, "caller", 1000, 1850, " Здравствуйте, по договору.", WORDS, [False, False, True])
    assert h == {"seq": 3, "speaker": "caller", "offset_ms": 1600, "end_ms": 1850,
                 "snippet": [["Здравствуйте, по ", False], ["договору", True], [".", False]]}
    assert hit_line(h) == "caller 00:01  Здравствуйте, по [договору]."
    fuzzy = hit(0, "agent", 1000, 1850, "", WORDS, [True, False, False], fuzzy=True)
    assert fuzzy["fuzzy"] is True and fuzzy["snippet"][0] == ["Здравствуйте", True]
    assert hit_line(fuzzy).startswith("agent  00:01~ [Здравствуйте],")
    # No word marked (nothing to point at): the segment's start, its text unmarked.
    assert hit(0, "mixed", 700, 900, " a b", WORDS, [False] * 3)["offset_ms"] == 700


def test_snippet_is_cut_around_the_first_hit() -> None:
    words = [[f" w{i}", i * 100, i * 100 + 50, 0.9] for i in range(60)]
    marks = [i == 30 for i in range(60)]
    parts = snippet("", words, marks, 30)
    assert parts[0] == ["… w22 w23 w24 w25 w26 w27 w28 w29 ", False]
    assert parts[1] == ["w30", True] and parts[-1][0].endswith(" w45 …")
    # Control characters in a snippet are escaped by the CLI, never printed raw.
    assert "\x1b" not in hit_line({"speaker": "caller", "offset_ms": 61_000, "snippet": [["a\x1b[2Jb", True]]})
    assert mmss(61_999) == "01:01" and mmss(-5) == "00:00"
