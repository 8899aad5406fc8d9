"""``[speech]``: the offline speech engine (callrec/speech/): workers, the model, decoding settings.

Kept apart from settings.py like the data-ops sections; settings.py only hooks it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from callrec.config.fields import ConfigError, Range, check_ranges, setting

__all__ = ["COMPUTE_TYPES", "SPEECH_LANGUAGES", "SpeechSettings", "check_speech", "cores"]

# What [speech] language accepts: `auto` detects the language of each recording.
SPEECH_LANGUAGES = ("auto", "ru", "en")
# CTranslate2 compute types on a CPU.
COMPUTE_TYPES = ("int8", "int8_float32", "float32")
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
