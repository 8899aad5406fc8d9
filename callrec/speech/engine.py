"""The speech engine: a recording in, a :class:`~callrec.speech.transcript.Transcript` out.  Offline.

:func:`load_engine` loads a model folder prepared by callrec/speech/model.py (by path, with the hub
switched off, so nothing can be fetched); :func:`transcribe_file` reads a WAV with soundfile (mono, or
stereo with the caller on the left and the agent on the right, as callrec writes them), resamples each
channel to Whisper's 16 kHz, finds its voice activity with the silero VAD that ships inside
faster-whisper, and decodes each channel that has any voice separately, so every word carries its
speaker.  Settings that worked on phone speech (docs/speech.md): int8, beam 5, VAD threshold 0.35
with 500 ms minimum silence (VAD before decoding also keeps Whisper from inventing words in
silence), ``condition_on_previous_text=False``, word timestamps.

Everything here blocks for seconds to minutes: run it in a worker process (callrec/speech/pool.py),
never on the daemon's event loop.  The functions keep no state besides the loaded model, so any
number of processes may run them at once.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from callrec.config.speech import SpeechSettings
from callrec.speech.model import ModelError, ModelInfo, check_model_dir
from callrec.speech.transcript import Interval, Segment, Speaker, Track, Transcript, Word

__all__ = ["WHISPER_RATE", "AudioError", "Engine", "EngineOptions", "load_engine", "read_audio", "resample",
           "snap_to_voice", "transcribe_file", "voice_activity", "whisper_language"]

WHISPER_RATE = 16000
# The stretch of silence kept around each voiced stretch when decoding (faster-whisper's default), so
# word onsets are not cut; talk statistics use the stretches as found (no padding).
DECODE_PAD_MS = 400
Progress = Callable[[float], None]


class AudioError(ValueError):
    """A file the engine cannot read as a mono or stereo recording."""


@dataclass(frozen=True)
class EngineOptions:
    """How to decode; picklable, so a worker process gets the same options as the daemon."""

    beam_size: int = 5
    vad_threshold: float = 0.35
    min_silence_ms: int = 500
    threads: int = 1
    compute_type: str = "int8"
    device: str = "cpu"
    # Words and phrases the decoder is nudged towards (Whisper's prompt): the keywords analysts search for.
    hotwords: str | None = None

    @classmethod
    def from_settings(cls, s: SpeechSettings) -> EngineOptions:
        return cls(beam_size=s.beam_size, vad_threshold=s.vad_threshold, min_silence_ms=s.min_silence_ms,
                   threads=s.threads, compute_type=s.compute_type)


@dataclass
class Engine:
    """A loaded model and the options to decode with (one per process; not shared between processes)."""

    model: Any  # faster_whisper.WhisperModel
    info: ModelInfo
    options: EngineOptions
    load_s: float = 0.0


def _faster_whisper() -> Any:
    # The hub client comes with faster-whisper; callrec loads models by path only, and this makes sure
    # that nothing it might call in future versions reaches for the network either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:
        import faster_whisper
    except ImportError as exc:
        raise ModelError(f"speech.enabled: the speech extra is not installed ({exc.name} missing): "
                         "pip install --require-hashes -r requirements/speech.txt") from None
    return faster_whisper


def load_engine(info: ModelInfo, options: EngineOptions | None = None) -> Engine:
    """The model in ``info.path`` loaded for decoding on this process's CPU.  Takes about a second."""
    options = options or EngineOptions()
    check_model_dir(info.path)  # a folder without tokenizer.json would make faster-whisper fetch one
    fw = _faster_whisper()
    started = time.monotonic()
    try:
        model = fw.WhisperModel(str(info.path), device=options.device, compute_type=options.compute_type,
                                cpu_threads=options.threads, num_workers=1, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        key = "speech.model_dir" if info.source == "model_dir" else "speech.cache_dir"
        raise ModelError(f"{key}: cannot load the model in {info.path}: {str(exc).splitlines()[0]}") from None
    return Engine(model, info, options, time.monotonic() - started)


def whisper_language(code: str | None) -> str | None:
    """The Whisper language for a call's language code: ``ru_RU`` → ``ru``; empty or ``auto`` → None (detect)."""
    if not code or code.lower() == "auto":
        return None
    return code.replace("-", "_").split("_")[0].lower()


def resample(x: np.ndarray, rate: int, to: int = WHISPER_RATE) -> np.ndarray:
    """``x`` (float32, one channel) from ``rate`` to ``to`` Hz: a windowed-sinc polyphase filter for the
    small ratios recordings have (8 kHz → 16 kHz is 2/1), an FFT for odd ones."""
    if rate == to or x.size == 0:
        return x.astype(np.float32, copy=False)
    g = math.gcd(rate, to)
    up, down = to // g, rate // g
    if up * down > 64:
        n_out = round(x.size * to / rate)
        spec = np.fft.rfft(x.astype(np.float64))
        keep = min(spec.size, n_out // 2 + 1)
        out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
        out_spec[:keep] = spec[:keep]
        return (np.fft.irfft(out_spec, n_out) * (n_out / x.size)).astype(np.float32)
    factor = max(up, down)
    taps = 32 * factor + 1  # odd: the filter's delay is a whole number of samples
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.94 / factor  # just below the lower of the two Nyquist frequencies
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, 8.0) * up
    stuffed = np.zeros(x.size * up, dtype=np.float32)
    stuffed[::up] = x
    y = np.convolve(stuffed, h.astype(np.float32), mode="full")[(taps - 1) // 2:][: stuffed.size]
    return np.ascontiguousarray(y[::down], dtype=np.float32)


def read_audio(path: str | Path) -> tuple[list[np.ndarray], int, int]:
    """The channels of a WAV, each resampled to 16 kHz float32; the file's sample rate; its length in ms."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio: {exc}") from None
    if data.shape[1] not in (1, 2):
        raise AudioError(f"{path}: {data.shape[1]} channels; expected mono, or stereo (caller left, agent right)")
    duration_ms = round(data.shape[0] * 1000 / rate)
    return [resample(np.ascontiguousarray(data[:, c]), rate) for c in range(data.shape[1])], rate, duration_ms


def voice_activity(audio: np.ndarray, options: EngineOptions, pad_ms: int = 0) -> tuple[Interval, ...]:
    """Stretches with voice in 16 kHz audio (silero VAD, as shipped inside faster-whisper)."""
    if audio.size == 0:
        return ()
    vad = _faster_whisper().vad
    chunks = vad.get_speech_timestamps(audio, vad.VadOptions(threshold=options.vad_threshold,
                                                             min_silence_duration_ms=options.min_silence_ms,
                                                             speech_pad_ms=pad_ms))
    return tuple(Interval(round(c["start"] * 1000 / WHISPER_RATE), round(c["end"] * 1000 / WHISPER_RATE))
                 for c in chunks)


def _decode(engine: Engine, audio: np.ndarray, language: str | None, duration_ms: int, done_ms: int,
            total_ms: int, progress: Progress | None) -> tuple[list[Segment], str, float]:
    o = engine.options
    segments, info = engine.model.transcribe(
        audio, language=language, beam_size=o.beam_size, vad_filter=True,
        vad_parameters={"threshold": o.vad_threshold, "min_silence_duration_ms": o.min_silence_ms,
                        "speech_pad_ms": DECODE_PAD_MS},
        condition_on_previous_text=False, word_timestamps=True, hotwords=o.hotwords or None)
    out = []
    for seg in segments:  # a generator: decoding happens while iterating
        words = tuple(Word(w.word, _ms(w.start), _ms(w.end), float(w.probability)) for w in seg.words or ())
        out.append(Segment(_ms(seg.start), _ms(seg.end), seg.text, words))
        if progress is not None and total_ms:
            progress(min(1.0, (done_ms + min(_ms(seg.end), duration_ms)) / total_ms))
    return out, info.language, float(info.language_probability)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def snap_to_voice(segments: list[Segment], voice: tuple[Interval, ...]) -> list[Segment]:
    """Word times moved out of the silence around voiced stretches.

    The decoder sees each voiced stretch with 400 ms of padding, and the first word after a pause tends
    to start at the padding's edge, up to half a second early.  A word that starts where the VAD heard
    no voice starts instead where the next voiced stretch begins (and one that ends in silence ends
    where the last stretch ended), as long as the word keeps some length; segments follow their words."""
    if not voice:
        return segments
    starts = [iv.start_ms for iv in voice]

    def voiced(ms: int) -> Interval | None:
        i = bisect.bisect_right(starts, ms) - 1
        return voice[i] if i >= 0 and ms < voice[i].end_ms else None

    out = []
    for seg in segments:
        words = []
        for w in seg.words:
            start, end = w.start_ms, w.end_ms
            if voiced(start) is None:
                nxt = bisect.bisect_right(starts, start)
                if nxt < len(voice) and voice[nxt].start_ms < end:
                    start = voice[nxt].start_ms
            if voiced(max(start, end - 1)) is None:
                prev = bisect.bisect_right(starts, end - 1) - 1
                if prev >= 0 and voice[prev].end_ms > start:
                    end = voice[prev].end_ms
            words.append(w if (start, end) == (w.start_ms, w.end_ms) else replace(w, start_ms=start, end_ms=end))
        if words:
            seg = Segment(words[0].start_ms, max(w.end_ms for w in words), seg.text, tuple(words))
        out.append(seg)
    return out


def transcribe_file(engine: Engine, path: str | Path, language: str | None = None,
                    progress: Progress | None = None) -> Transcript:
    """Transcribe a mono or stereo WAV.  ``language``: ``ru``, ``en``, ... or None to detect it.

    Stereo: the left channel is the caller's track, the right the agent's; mono: one ``mixed``
    track.  A channel without voice is not decoded (no words: nothing invented in silence).  When
    the language is detected, it is detected once, on the channel with the most voice, and used for
    both.  ``progress`` (optional) is called with the share done, 0..1, as segments come out."""
    started = time.monotonic()
    channels, rate, duration_ms = read_audio(path)
    read_s = time.monotonic() - started
    speakers: tuple[Speaker, ...] = ("mixed",) if len(channels) == 1 else ("caller", "agent")
    voice = [voice_activity(audio, engine.options) for audio in channels]
    vad_s = time.monotonic() - started - read_s
    talk = [sum(i.length_ms for i in v) for v in voice]
    order = sorted(range(len(channels)), key=lambda c: -talk[c])  # the talkiest channel first: it sets the language
    segments: dict[int, list[Segment]] = {c: [] for c in range(len(channels))}
    detected = language is None
    probability = 1.0
    total_ms = duration_ms * len(channels)
    for done, c in enumerate(order):
        if not voice[c]:
            continue
        decoded, lang, prob = _decode(engine, channels[c], language, duration_ms, done * duration_ms, total_ms,
                                      progress)
        segments[c] = snap_to_voice(decoded, voice[c])
        if language is None:
            language, probability = lang, prob
    if progress is not None:
        progress(1.0)
    tracks = tuple(Track(speakers[c], c, tuple(segments[c]), voice[c]) for c in range(len(channels)))
    timing = {"read_s": round(read_s, 3), "vad_s": round(vad_s, 3),
              "decode_s": round(time.monotonic() - started - read_s - vad_s, 3)}
    return Transcript(tracks, duration_ms, language, probability, detected and language is not None, rate,
                      engine.info.model_id, timing=timing)
