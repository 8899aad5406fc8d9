"""Where a call's recording stands (the ``recording_status`` column)."""

from enum import StrEnum


class RecordingStatus(StrEnum):
    NONE = "none"  # not recorded (see consent)
    STARTING = "starting"
    RECORDING = "recording"
    FINALIZING = "finalizing"
    READY = "ready"  # finished file, facts measured
    EMPTY = "empty"  # Asterisk wrote no audio; the empty file was removed
    UNCLOSED = "unclosed"  # Asterisk never closed the file (crash); kept, measured from raw audio
    MISSING = "missing"  # MixMonitor accepted but no file appeared
    FAILED = "failed"  # MixMonitor could not be started
