"""Worker processes that transcribe, so the daemon's event loop never does.

``SpeechPool`` is a ``concurrent.futures.ProcessPoolExecutor`` of ``[speech] workers`` processes
(started with ``spawn``: a clean interpreter, nothing inherited from the daemon's loop, sockets or
threads).  Each worker lowers its CPU priority to ``[speech] nice`` and loads the model once, in its
initializer; a job is then a path and a language in, a :class:`Transcript` out (pickled back).
The model folder is prepared and checked in the parent first (:func:`~callrec.speech.model.prepare_model`),
so the workers never join or hash anything.

From the event loop: ``transcript = await pool.transcribe(path, "ru")``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from callrec.config.speech import SpeechSettings
from callrec.speech.engine import Engine, EngineOptions, load_engine, transcribe_file
from callrec.speech.model import ModelError, ModelInfo, prepare_model
from callrec.speech.transcript import Transcript

__all__ = ["SpeechPool", "WorkerInfo", "peak_rss_mb"]


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    nice: int  # the worker's niceness
    model: str  # the model id it loaded
    load_s: float  # seconds the model took to load
    peak_rss_mb: float  # the worker's peak resident memory so far (Linux; 0 elsewhere)


# One per worker process, set by the initializer.
_engine: Engine | None = None
_load_error: str | None = None


def _init_worker(info: ModelInfo, options: EngineOptions, nice: int) -> None:
    global _engine, _load_error
    current = os.nice(0)
    if nice > current:
        os.nice(nice - current)
    try:
        _engine = load_engine(info, options)
    except ModelError as exc:  # raised again by every job, so the daemon sees it (a failed initializer
        _load_error = str(exc)  # would only break the pool, with the reason lost in a worker's stderr)


def _ready() -> Engine:
    if _engine is None:
        raise ModelError(_load_error or "speech: the worker has no model")
    return _engine


def _transcribe(path: str, language: str | None, progress_file: str | None = None) -> Transcript:
    if progress_file is None:
        return transcribe_file(_ready(), path, language)

    def note(share: float) -> None:  # read by the queue's heartbeat (another process): a tiny file, replaced
        tmp = f"{progress_file}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{share:.3f}")
        os.replace(tmp, progress_file)

    return transcribe_file(_ready(), path, language, note)


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM), in MB; 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _probe() -> WorkerInfo:
    engine = _ready()
    return WorkerInfo(os.getpid(), os.nice(0), engine.info.model_id, round(engine.load_s, 3), peak_rss_mb())


class SpeechPool:
    """``workers`` niced processes, each with the model loaded once."""

    def __init__(self, settings: SpeechSettings, model: ModelInfo) -> None:
        self.settings = settings
        self.model = model
        self._executor = ProcessPoolExecutor(
            max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(model, EngineOptions.from_settings(settings), settings.nice))

    @classmethod
    def start(cls, settings: SpeechSettings) -> SpeechPool:
        """Prepare and check the model (blocking, about a second; longer on the first start, which joins
        it), then the pool.  Raises ModelError."""
        return cls(settings, prepare_model(settings))

    def submit(self, path: str | Path, language: str | None = None,
               progress_file: str | Path | None = None) -> Future[Transcript]:
        """Queue one recording; the future holds its transcript, or AudioError / ModelError.  With
        ``progress_file``, the worker keeps the share done (``0.400``) in that file as it goes."""
        return self._executor.submit(_transcribe, str(path), language,
                                     None if progress_file is None else str(progress_file))

    async def transcribe(self, path: str | Path, language: str | None = None,
                         progress_file: str | Path | None = None) -> Transcript:
        """:meth:`submit`, awaited without blocking the loop."""
        return await asyncio.wrap_future(self.submit(path, language, progress_file))

    def probe(self) -> Future[WorkerInfo]:
        """Which process would take a job, and its niceness (starts a worker if none runs yet)."""
        return self._executor.submit(_probe)

    def pids(self) -> list[int]:
        """The worker processes running now (they start with the first jobs)."""
        return sorted(self._executor._processes or {})

    def close(self, cancel: bool = True) -> None:
        """Stop the workers: queued jobs are dropped (``cancel``), running ones finish first."""
        self._executor.shutdown(wait=True, cancel_futures=cancel)

    def terminate(self, timeout: float = 5.0) -> None:
        """Stop now (a daemon shutting down): running transcriptions are abandoned, the processes ended
        (SIGTERM, then SIGKILL after ``timeout``).  Whoever queued the work gives it back."""
        processes = list((self._executor._processes or {}).values())
        for proc in processes:
            proc.terminate()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout)

    def __enter__(self) -> SpeechPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
