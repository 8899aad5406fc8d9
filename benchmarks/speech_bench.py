#!/usr/bin/env python3
"""Speech engine benchmark: how fast the offline engine transcribes with 1 and 2 worker processes, and
what busy workers do to the event loop of the process that feeds them.  Not a timed test: it prints
figures for docs/benchmarks.md.

    .venv/bin/python benchmarks/speech_bench.py [--repeat 4] [--configs 1x1,2x1,1x2] [--json]

The test set is the engine's test audio (tests/data/speech: English and Russian mono, a stereo call;
Festival speech, 8 kHz), ``--repeat`` times over.  For each configuration WORKERSxTHREADS a fresh
``SpeechPool`` loads the model in every worker (not timed: one short job per worker first), then all
jobs are submitted at once and timed to the last result.  Real-time factor = wall time / call time
(a stereo call counts its length once, though both channels are decoded); "x real time" is its
inverse.  Meanwhile the parent runs an asyncio loop that sleeps 10 ms at a time and records how late
it wakes; the same loop is measured idle, with no workers, first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from callrec.config.speech import SpeechSettings  # noqa: E402
from callrec.speech.model import prepare_model  # noqa: E402
from callrec.speech.pool import SpeechPool, peak_rss_mb  # noqa: E402

DATA = REPO / "tests" / "data" / "speech"
FILES = {"en.wav": "en", "ru.wav": "ru", "stereo.wav": "en"}
TICK = 0.01


class Ticker:
    """How late an asyncio loop wakes from 10 ms sleeps."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            self.lags.append(time.perf_counter() - before - TICK)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        lags = sorted(self.lags)
        return {"ticks": len(lags), "p50_ms": round(1000 * statistics.median(lags), 2),
                "p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 2), "max_ms": round(1000 * lags[-1], 2)}


async def run_config(workers: int, threads: int, cache: str, jobs: list[tuple[Path, str]],
                     call_seconds: float) -> dict[str, Any]:
    settings = SpeechSettings(workers=workers, threads=threads, cache_dir=cache, nice=10)
    model = prepare_model(settings)
    with SpeechPool(settings, model) as pool:
        started = time.perf_counter()
        # One short job per worker, all at once, so every worker has started and loaded the model.
        await asyncio.gather(*(pool.transcribe(DATA / "en.wav", "en") for _ in range(workers)))
        warm_s = time.perf_counter() - started
        ticker = Ticker()
        ticker.start()
        started = time.perf_counter()
        results = await asyncio.gather(*(pool.transcribe(path, lang) for path, lang in jobs))
        wall = time.perf_counter() - started
        loop = ticker.stop()
        rss = [round(peak_rss_mb(pid)) for pid in pool.pids()]
    decode = sum(r.timing.get("decode_s", 0.0) for r in results)
    return {"config": f"{workers}x{threads}", "workers": workers, "threads": threads, "jobs": len(jobs),
            "call_seconds": round(call_seconds, 1), "wall_seconds": round(wall, 2),
            "rtf": round(wall / call_seconds, 3), "x_real_time": round(call_seconds / wall, 1),
            "call_hours_per_day": round(24 * call_seconds / wall, 1), "decode_seconds_in_workers": round(decode, 1),
            "start_and_first_job_seconds": round(warm_s, 2), "worker_peak_rss_mb": rss, "loop_lag_busy": loop}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    jobs = [(DATA / name, lang) for _ in range(args.repeat) for name, lang in FILES.items()]
    call_seconds = sum(soundfile.info(str(path)).duration for path, _ in jobs)
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(args.idle)
    idle = ticker.stop()
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as cache:
        started = time.perf_counter()
        first = prepare_model(SpeechSettings(cache_dir=cache))
        join_s = time.perf_counter() - started
        started = time.perf_counter()
        prepare_model(SpeechSettings(cache_dir=cache))
        check_s = time.perf_counter() - started
        configs = []
        for spec in args.configs.split(","):
            workers, threads = (int(n) for n in spec.split("x"))
            configs.append(await run_config(workers, threads, cache, jobs, call_seconds))
            if not args.json:
                c = configs[-1]
                print(f"{c['config']:>4} (workers x threads): {c['call_seconds']} s of calls in {c['wall_seconds']} s"
                      f" = RTF {c['rtf']}, {c['x_real_time']}x real time ({c['call_hours_per_day']} h of calls/day);"
                      f" loop lag p50 {c['loop_lag_busy']['p50_ms']} ms, p99 {c['loop_lag_busy']['p99_ms']} ms,"
                      f" max {c['loop_lag_busy']['max_ms']} ms; worker peak RSS {c['worker_peak_rss_mb']} MB",
                      flush=True)
    return {"model": first.model_id, "join_seconds": round(join_s, 2), "check_seconds": round(check_s, 2),
            "files": list(FILES), "repeat": args.repeat, "loop_lag_idle": idle, "configs": configs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="how many times the test set is transcribed per config")
    ap.add_argument("--configs", default="1x1,2x1,1x2", help="WORKERSxTHREADS, comma-separated")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds the idle loop is measured")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        idle = result["loop_lag_idle"]
        print(f"model {result['model']}: joined in {result['join_seconds']} s, checked again in "
              f"{result['check_seconds']} s; idle loop lag p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms, "
              f"max {idle['max_ms']} ms")


if __name__ == "__main__":
    main()
