"""Talk statistics from voice activity: who talked how long, over each other, and the silences.

Pure: intervals in, numbers out.  A stereo recording gives one list of intervals per party (caller,
agent), so overtalk is measurable; a mono recording gives one ("mixed"), so overtalk is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callrec.speech.transcript import Interval, Transcript

__all__ = ["TalkStats", "merge_intervals", "talk_stats", "transcript_stats"]


@dataclass(frozen=True)
class TalkStats:
    duration_ms: int  # the recording's length
    talk_ms: dict[str, int]  # per speaker: time with voice
    talk_ratio: dict[str, float]  # per speaker: their share of all talk (0..1; the shares add up to 1)
    overtalk_ms: int  # time in which two or more parties talk at once
    silence_ms: int  # time in which nobody talks
    silence_share: float  # silence_ms / duration_ms (0..1)
    longest_silence_ms: int  # the longest stretch in which nobody talks, start and end of the recording included

    def to_dict(self) -> dict[str, Any]:
        return {"duration_ms": self.duration_ms, "talk_ms": dict(self.talk_ms),
                "talk_ratio": {k: round(v, 4) for k, v in self.talk_ratio.items()},
                "overtalk_ms": self.overtalk_ms, "silence_ms": self.silence_ms,
                "silence_share": round(self.silence_share, 4), "longest_silence_ms": self.longest_silence_ms}


def merge_intervals(intervals: Iterable[Interval], duration_ms: int | None = None) -> list[Interval]:
    """Sorted, overlapping or touching intervals joined, empty ones dropped, clipped to the recording."""
    out: list[Interval] = []
    for iv in sorted(intervals, key=lambda i: (i.start_ms, i.end_ms)):
        start, end = max(0, iv.start_ms), iv.end_ms
        if duration_ms is not None:
            end = min(end, duration_ms)
        if end <= start:
            continue
        if out and start <= out[-1].end_ms:
            if end > out[-1].end_ms:
                out[-1] = Interval(out[-1].start_ms, end)
        else:
            out.append(Interval(start, end))
    return out


def talk_stats(voice: Mapping[str, Sequence[Interval]], duration_ms: int) -> TalkStats:
    """Talk time per speaker, talk ratio, overtalk, silence share and the longest silence."""
    duration_ms = max(0, duration_ms)
    merged = {speaker: merge_intervals(ivs, duration_ms) for speaker, ivs in voice.items()}
    talk = {speaker: sum(i.length_ms for i in ivs) for speaker, ivs in merged.items()}
    total_talk = sum(talk.values())
    ratio = {speaker: (ms / total_talk if total_talk else 0.0) for speaker, ms in talk.items()}
    # A sweep over the edges: how many parties talk between consecutive edges.
    edges: list[tuple[int, int]] = []
    for ivs in merged.values():
        for iv in ivs:
            edges += [(iv.start_ms, 1), (iv.end_ms, -1)]
    edges.sort()
    overtalk = 0
    silences: list[int] = []
    active = 0
    last = 0
    for at, step in edges:
        span = at - last
        if span > 0:
            if active == 0:
                silences.append(span)
            elif active >= 2:
                overtalk += span
        active += step
        last = at
    if duration_ms > last:
        silences.append(duration_ms - last)
    silence = sum(silences)
    return TalkStats(duration_ms, talk, ratio, overtalk, silence, silence / duration_ms if duration_ms else 0.0,
                     max(silences, default=0))


def transcript_stats(transcript: Transcript) -> TalkStats:
    """:func:`talk_stats` of a transcript's tracks."""
    return talk_stats({t.speaker: t.voice for t in transcript.tracks}, transcript.duration_ms)
