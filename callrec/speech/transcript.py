"""What a transcription gives: tracks of timed words and segments, voice activity, the language.

Plain frozen dataclasses (they cross from a worker process to the daemon by pickling) with a JSON form
(:meth:`Transcript.to_dict` / :meth:`Transcript.from_dict`) for storage and the CLI.  Times are whole
milliseconds from the start of the recording.  Nothing here needs the speech extra.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["SPEAKERS", "Interval", "Segment", "Speaker", "Track", "Transcript", "Word"]

# A stereo recording's left channel is the caller, its right the agent (callrec/recording/stereo.py);
# a mono recording has one track with both voices: "mixed".
Speaker = Literal["caller", "agent", "mixed"]
SPEAKERS: tuple[Speaker, ...] = ("caller", "agent", "mixed")


@dataclass(frozen=True)
class Word:
    text: str  # as Whisper writes it, with its leading space (" refund", " 4111")
    start_ms: int
    end_ms: int
    probability: float  # 0..1

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "probability": round(self.probability, 4)}


@dataclass(frozen=True)
class Segment:
    """A stretch of speech as the decoder produced it (a sentence or so), with its words."""

    start_ms: int
    end_ms: int
    text: str  # the words' texts joined (kept equal to them by redaction)
    words: tuple[Word, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "end_ms": self.end_ms, "text": self.text,
                "words": [w.to_dict() for w in self.words]}


@dataclass(frozen=True)
class Interval:
    """A stretch of voice activity, [start_ms, end_ms)."""

    start_ms: int
    end_ms: int

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class Track:
    """One voice: a stereo recording's channel, or a mono recording's only channel."""

    speaker: Speaker
    channel: int  # 0 = left (or mono), 1 = right
    segments: tuple[Segment, ...] = ()
    voice: tuple[Interval, ...] = ()  # voice activity (silero VAD), for talk statistics

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "channel": self.channel,
                "segments": [s.to_dict() for s in self.segments],
                "voice": [[i.start_ms, i.end_ms] for i in self.voice]}


@dataclass(frozen=True)
class Transcript:
    """A recording's transcript: one track per channel."""

    tracks: tuple[Track, ...]
    duration_ms: int  # the audio's length
    language: str | None  # "ru", "en", ...; None when nothing was said
    language_probability: float = 1.0  # 1.0 when the language was given, not detected
    language_detected: bool = False
    sample_rate: int = 8000  # of the file, before resampling to Whisper's 16 kHz
    model: str = ""  # ModelInfo.model_id: which model made it
    redacted: int = 0  # card numbers masked (callrec.speech.redact)
    timing: dict[str, float] = field(default_factory=dict)  # seconds the run took: read_s, vad_s, decode_s

    def words(self) -> Iterator[tuple[Speaker, Word]]:
        """Every word of every track, in time order, with its speaker: the dialogue."""
        merged = [(w.start_ms, t.channel, t.speaker, w) for t in self.tracks for w in t.words]
        for _, _, speaker, word in sorted(merged, key=lambda m: (m[0], m[1])):
            yield speaker, word

    def track(self, speaker: Speaker) -> Track | None:
        return next((t for t in self.tracks if t.speaker == speaker), None)

    def with_tracks(self, tracks: tuple[Track, ...], **changes: Any) -> Transcript:
        return replace(self, tracks=tracks, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"duration_ms": self.duration_ms, "language": self.language,
                "language_probability": round(self.language_probability, 4),
                "language_detected": self.language_detected, "sample_rate": self.sample_rate,
                "model": self.model, "redacted": self.redacted, "timing": dict(self.timing),
                "tracks": [t.to_dict() for t in self.tracks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transcript:
        tracks = tuple(
            Track(t["speaker"], int(t["channel"]),
                  tuple(Segment(int(s["start_ms"]), int(s["end_ms"]), s["text"],
                                tuple(Word(w["text"], int(w["start_ms"]), int(w["end_ms"]), float(w["probability"]))
                                      for w in s["words"]))
                        for s in t["segments"]),
                  tuple(Interval(int(a), int(b)) for a, b in t["voice"]))
            for t in d["tracks"])
        return cls(tracks, int(d["duration_ms"]), d.get("language"), float(d.get("language_probability", 1.0)),
                   bool(d.get("language_detected", False)), int(d.get("sample_rate", 8000)), d.get("model", ""),
                   int(d.get("redacted", 0)), dict(d.get("timing", {})))
