"""Speech analytics, the foundation: the offline engine (docs/speech.md).

``model`` finds, joins and checks the model; ``engine`` turns a recording into a transcript in a worker
process; ``pool`` runs the workers; ``transcript`` holds the result types; ``stats`` (talk statistics)
and ``redact`` (card numbers) are pure.  faster-whisper is imported only when a model is loaded, so
the pure parts work without the speech extra.
"""

from callrec.speech.engine import AudioError, Engine, EngineOptions, load_engine, transcribe_file, whisper_language
from callrec.speech.model import ModelError, ModelInfo, prepare_model
from callrec.speech.pool import SpeechPool, WorkerInfo
from callrec.speech.redact import luhn_valid, redact_card_numbers, redact_transcript
from callrec.speech.stats import TalkStats, talk_stats, transcript_stats
from callrec.speech.transcript import Interval, Segment, Speaker, Track, Transcript, Word

__all__ = [
    "AudioError", "Engine", "EngineOptions", "Interval", "ModelError", "ModelInfo", "Segment", "Speaker",
    "SpeechPool", "TalkStats", "Track", "Transcript", "Word", "WorkerInfo", "load_engine", "luhn_valid",
    "prepare_model", "redact_card_numbers", "redact_transcript", "talk_stats", "transcribe_file",
    "transcript_stats", "whisper_language",
]
