"""Speech analytics at work: the transcription queue's runner and keyword alerts (docs/speech.md).

The engine is ``callrec.speech`` (pure of the database); the SQL is in ``callrec.store``; this room joins
them: a finalized recording in, a redacted transcript, its talk statistics and any alerts stored.
"""
