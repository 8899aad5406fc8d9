"""``[speech]``: the offline speech engine (callrec/speech/): workers, the model, decoding settings.

Kept apart from settings.py like the data-ops sections; settings.py only hooks it in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from callrec.config.fields import ConfigError, Range, check_ranges, setting

__all__ = ["COMPUTE_TYPES", "SPEECH_LANGUAGES", "TRANSCRIBE_WORDS", "SpeechSettings", "check_speech", "cores"]

# What [speech] language accepts: `auto` detects the language of each recording.
SPEECH_LANGUAGES = ("auto", "ru", "en")
# CTranslate2 compute types on a CPU.
COMPUTE_TYPES = ("int8", "int8_float32", "float32")
# What [speech] transcribe accepts: every recording, none (only `callrec speech requeue`), or the calls whose
# policy rule says `transcribe = true`.
TRANSCRIBE_WORDS = ("all", "rules", "none")
DEFAULT_CACHE_DIR = "/var/lib/callrec/speech"


def cores() -> int:
    """CPU cores this process may run on (the upper bound of ``speech.workers``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SpeechSettings:
    enabled: bool = setting(False, "transcribe recordings offline. Needs the speech extra "
                                   "(`pip install 'callrec[speech]'`); nothing is ever downloaded at run time")
    workers: int = setting(1, "transcription processes; each loads the model once (about 0.5 GB) and runs "
                              "niced, never on the daemon's event loop",
                           allowed="1 to the number of CPU cores")
    threads: int = setting(1, "CPU threads per worker. On a small machine, more workers beat more threads",
                           range=Range(1, 64))
    nice: int = setting(10, "how much each worker lowers its CPU priority (`nice`), so calls come first",
                        range=Range(0, 19))
    model_dir: str = setting(
        "", "a CTranslate2 Whisper model folder you installed yourself (it must hold `model.bin`, `config.json`, "
            "`tokenizer.json`, `vocabulary.txt`). Empty: the Whisper base model shipped in the speech extra, "
            "joined into `cache_dir` and checked against its sha256", allowed="an absolute path, or empty",
        shown_default='`""` (the shipped model)')
    cache_dir: str = setting(
        DEFAULT_CACHE_DIR, "where the shipped model is joined once (about 150 MB); a state folder the daemon "
                           "may write (systemd: `StateDirectory=callrec`), never the recordings folder",
        allowed="an absolute path")
    language: str = setting("auto", "a recording's language when the call row gives none; `auto`: detected",
                            choices=SPEECH_LANGUAGES)
    beam_size: int = setting(5, "decoding beam width; 1 is greedy (not faster on CPU here)", range=Range(1, 10))
    vad_threshold: float = setting(
        0.35, "voice-activity threshold (silero VAD). Phone speech needs less than the usual 0.5, which drops "
              "a third of it", range=Range(0, 1, above=True))
    min_silence_ms: int = setting(500, "a pause at least this long splits speech into separate stretches",
                                  range=Range(100, 10000, unit="milliseconds"))
    compute_type: str = setting("int8", "how the model computes on the CPU: `int8` is the fastest; `float32` "
                                        "was about 3 points better on Russian and about half as fast",
                                choices=COMPUTE_TYPES)
    # -- the queue (callrec/analytics/queue.py, docs/speech.md#the-queue) --
    transcribe: str = setting(
        "all", "which finalized recordings are queued: `all` (a policy rule may opt out with `transcribe = false`), "
               "`rules` (only calls whose policy rule says `transcribe = true`), `none` (only `callrec speech "
               "requeue`)", choices=TRANSCRIBE_WORDS)
    backfill_days: int = setting(
        7, "at start (and every `poll_interval`), recordings finalized this many days back that have no job yet are "
           "queued too: calls made while speech was off or the database was away", range=Range(0, 3650, unit="days"),
        )
    lease: int = setting(120, "a worker's hold on a job; heartbeats renew it. A job whose worker stopped (crash, "
                              "power, SIGKILL) is taken up again after this", range=Range(10, 3600, unit="seconds"))
    poll_interval: int = setting(30, "look for due jobs at least this often (LISTEN/NOTIFY wakes workers sooner)",
                                 range=Range(1, 3600, unit="seconds"))
    max_attempts: int = setting(3, "tries per job before it is `failed`", range=Range(1, 100))
    retry_delay: int = setting(60, "wait after a failed try; doubled each time, at most an hour",
                               range=Range(1, 3600, unit="seconds"))
    backlog_hours: float = setting(
        0.0, "a cap on audio waiting in the queue, in hours. Over it, new recordings are sampled: "
             "`backlog_keep_percent` of them are queued, the rest `skipped` with the reason",
        range=Range(0, 100000, unit="hours", zero="no cap"))
    backlog_keep_percent: float = setting(10.0, "over `backlog_hours`: the share of new recordings still queued",
                                          range=Range(0, 100, unit="%"))
    redact_patterns: tuple[str, ...] = setting(
        (), "regular expressions (Python syntax) whose matches in a transcript's words are masked before it is "
            "stored, beside card numbers (always masked); e.g. `'\\b[A-Z]{2}\\d{6}\\b'` for a passport number. "
            "A pattern is matched within one segment's text", allowed="a list of regular expressions")


def check_speech(s: SpeechSettings) -> None:
    """Ranges, the worker count against this machine's cores, and the folders."""
    check_ranges(s, "speech")
    n = cores()
    if not 1 <= s.workers <= n:
        raise ConfigError(f"speech.workers: expected 1-{n} (the CPU cores here), got {s.workers}")
    if s.language not in SPEECH_LANGUAGES:
        raise ConfigError(f"speech.language: expected one of {', '.join(SPEECH_LANGUAGES)}, got {s.language!r}")
    if s.compute_type not in COMPUTE_TYPES:
        raise ConfigError(f"speech.compute_type: expected one of {', '.join(COMPUTE_TYPES)}, got {s.compute_type!r}")
    if s.model_dir and not s.model_dir.startswith("/"):
        raise ConfigError(f"speech.model_dir: expected an absolute path, or empty, got {s.model_dir!r}")
    if not s.cache_dir.startswith("/"):
        raise ConfigError(f"speech.cache_dir: expected an absolute path, got {s.cache_dir!r}")
    if s.transcribe not in TRANSCRIBE_WORDS:
        raise ConfigError(f"speech.transcribe: expected one of {', '.join(TRANSCRIBE_WORDS)}, got {s.transcribe!r}")
    for i, pattern in enumerate(s.redact_patterns):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"speech.redact_patterns[{i}]: expected a non-empty regular expression")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"speech.redact_patterns[{i}]: not a valid regular expression ({exc}): "
                              f"{pattern[:80]!r}") from None
        if compiled.match(""):
            raise ConfigError(f"speech.redact_patterns[{i}]: matches the empty string, so it would mask nothing "
                              f"useful: {pattern[:80]!r}")
