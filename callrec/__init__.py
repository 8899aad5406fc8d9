"""callrec: lawful call recording for Asterisk (notice, consent, MixMonitor, call log)."""

__version__ = "0.1.0"
