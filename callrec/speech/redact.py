"""Card numbers out of transcripts: digit runs of 13-19 digits that pass the Luhn check are masked.

Whisper writes a spoken card number in many ways: one word ``" 4111111111111111"``, groups
``" 4111" " 1111" ...``, single digits ``" 4" " 1" ...``, with dashes or commas, or as digit words
(``" four"``, ``" четыре"``).  Consecutive number-like words are taken together; within such a run,
every stretch of whole words whose digits (13-19 of them) pass the Luhn check is found, and then the whole
run it lies in is masked (a digit the recogniser added or dropped beside it would still give part of the
number away; up to ``MAX_RUN_WORDS`` words): each digit
becomes ``*`` and a digit word becomes ``*``, so the words keep their count and their times (the
player can still seek there) but not the number.  Pure: words in, words out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from callrec.speech.transcript import Segment, Track, Transcript, Word

__all__ = ["MASK", "luhn_valid", "redact_card_numbers", "redact_transcript"]

MASK = "*"
MIN_DIGITS, MAX_DIGITS = 13, 19
MAX_RUN_WORDS = 40  # a run of number words holding a card number is masked whole up to this length
# Single digits said as words (English and Russian, the forms Whisper writes).
DIGIT_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9",
    "ноль": "0", "нуль": "0", "один": "1", "одна": "1", "два": "2", "две": "2", "три": "3", "четыре": "4",
    "пять": "5", "шесть": "6", "семь": "7", "восемь": "8", "девять": "9",
}
# A number-like word: digits with the separators people say or Whisper writes between groups.
_NUMERIC = re.compile(r"[\d][\d\s\-–—.,/]*")
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (the last one is the check digit)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _split(text: str) -> tuple[str, str, str]:
    """(leading punctuation and space, the word, trailing punctuation)."""
    m = _EDGE.match(text)
    return (m.group(1), m.group(2), m.group(3)) if m else ("", text, "")


def _digits(text: str) -> str | None:
    """The digits a word stands for, or None when it is not a number-like word."""
    core = _split(text)[1]
    if not core:
        return None
    if _NUMERIC.fullmatch(core):
        return re.sub(r"\D", "", core)
    return DIGIT_WORDS.get(core.lower())


def _mask(text: str) -> str:
    if any(ch.isdigit() for ch in text):
        return re.sub(r"\d", MASK, text)
    lead, _, trail = _split(text)
    return f"{lead}{MASK}{trail}"


def _card_spans(digits: Sequence[str | None]) -> list[tuple[int, int]]:
    """(first, last) word indexes of each card number among the words' digit strings."""
    spans = []
    i = 0
    n = len(digits)
    while i < n:
        if digits[i] is None:
            i += 1
            continue
        run_end = i
        while run_end + 1 < n and digits[run_end + 1] is not None:
            run_end += 1
        # Within the run [i, run_end]: the longest valid stretch starting at each word, leftmost first.
        start = i
        while start <= run_end:
            found = None
            count = 0
            ends = []
            for j in range(start, run_end + 1):
                count += len(digits[j] or "")
                if count > MAX_DIGITS:
                    break
                ends.append((j, count))
            for j, count in reversed(ends):
                if count >= MIN_DIGITS and luhn_valid("".join(d or "" for d in digits[start:j + 1])):
                    found = j
                    break
            if found is None:
                start += 1
            else:
                spans.append((start, found))
                start = found + 1
        if spans and spans[-1][1] >= i and run_end - i < MAX_RUN_WORDS:
            # The whole run goes: recognition adds or drops a digit next to a card number now and then, and
            # what is left beside a masked stretch would still give part of it away.
            while spans and spans[-1][0] >= i:
                spans.pop()
            spans.append((i, run_end))
        i = run_end + 1
    return spans


def redact_card_numbers(words: Sequence[Word]) -> tuple[list[Word], int]:
    """The words with every card number masked, and how many card numbers there were."""
    spans = _card_spans([_digits(w.text) for w in words])
    out = list(words)
    for first, last in spans:
        for k in range(first, last + 1):
            out[k] = replace(out[k], text=_mask(out[k].text))
    return out, len(spans)


def _redact_track(track: Track) -> tuple[Track, int]:
    words = track.words
    masked, count = redact_card_numbers(words)
    if not count:
        return track, 0
    segments = []
    k = 0
    for seg in track.segments:
        new_words = tuple(masked[k:k + len(seg.words)])
        k += len(seg.words)
        if new_words != seg.words:
            seg = Segment(seg.start_ms, seg.end_ms, "".join(w.text for w in new_words), new_words)
        segments.append(seg)
    return replace(track, segments=tuple(segments)), count


def redact_transcript(transcript: Transcript) -> Transcript:
    """The transcript with card numbers masked on every track; ``redacted`` counts them."""
    tracks = []
    total = 0
    for track in transcript.tracks:
        new, count = _redact_track(track)
        tracks.append(new)
        total += count
    return transcript.with_tracks(tuple(tracks), redacted=transcript.redacted + total)
