#!/usr/bin/env python3
"""Speech engine benchmark: how fast the offline engine transcribes with 1 and 2 worker processes, and
what busy workers do to the event loop of the process that feeds them.  Not a timed test: it prints
figures for docs/benchmarks.md.

    .venv/bin/python benchmarks/speech_bench.py [--speed | --accuracy] [--repeat 2] [--configs 1x1,2x1,1x2]
        [--clips] [--variants default,...] [--langs ru,en] [--conditions clean,phone] [--json]

Runs the speed part (below), then the accuracy part (benchmarks/speech_accuracy.py: WER, keyword recall
and precision on a fixed test set; ``--variants``, ``--langs``, ``--conditions``, ``--dsn`` are its
options); ``--speed`` or ``--accuracy`` runs one of them.  With ``--json`` and both parts the output is
``{"speed": ..., "accuracy": ...}``.

The test set: three calls of about 1.5 minutes made with Debian's Festival at the start of the run
(24 distinct sentences each: English mono, Russian mono, an English stereo call with caller and agent
taking turns; 8 kHz, phone band; needs festival, festvox-us-slt-hts, festvox-ru and sox), ``--repeat``
times over.  ``--clips`` uses the committed test clips (tests/data/speech, a few seconds each, where
Whisper's fixed 30 s window dominates) and needs no Festival.  For each configuration WORKERSxTHREADS a fresh
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from callrec.config.speech import SpeechSettings  # noqa: E402
from callrec.speech.model import prepare_model  # noqa: E402
from callrec.speech.pool import SpeechPool, peak_rss_mb  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import speech_accuracy  # noqa: E402

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


EN = [
    "Good morning, thank you for calling customer support.", "I am calling about the invoice I received last week.",
    "Could you tell me your account number, please?", "The amount on the bill is higher than I expected.",
    "Let me check the details of your contract.", "I would like a refund for the damaged parcel.",
    "When was the order delivered to your address?", "It arrived on Tuesday, but the box was broken.",
    "I can see two payments for the same month.", "That looks like a mistake on our side, I am sorry.",
    "We will return the money within five working days.", "Do I need to send the broken item back to you?",
    "No, please keep it, a courier is not needed.", "Can you also change the delivery address for next time?",
    "Of course, what is the new street and house number?", "It is twelve Garden Street, apartment four.",
    "Thank you, the address has been updated.", "Is there anything else I can help you with today?",
    "Yes, my internet connection drops every evening.", "Please restart the router and wait two minutes.",
    "I already tried that several times yesterday.", "Then I will book a visit from our technician.",
    "Would Thursday afternoon be convenient for you?", "Thursday is fine, thank you very much for your help.",
]
RU = [
    "Добрый день, служба поддержки, чем могу помочь?", "Я звоню по поводу договора на обслуживание.",
    "Назовите, пожалуйста, номер вашего договора.", "Мне пришёл счёт на слишком большую сумму.",
    "Сейчас я проверю начисления за прошлый месяц.", "Я хочу расторгнуть договор и вернуть деньги.",
    "Когда вы подписали этот договор?", "Мы подписали его в начале сентября.",
    "Я вижу двойное списание за один и тот же период.", "Это наша ошибка, приношу свои извинения.",
    "Деньги вернутся на карту в течение пяти дней.", "Нужно ли мне приходить в офис с паспортом?",
    "Нет, всё можно оформить по телефону.", "Тогда запишите, пожалуйста, мой новый адрес.",
    "Конечно, назовите улицу и номер дома.", "Улица Садовая, дом двенадцать, квартира четыре.",
    "Спасибо, адрес изменён в нашей системе.", "Могу ли я ещё чем-нибудь вам помочь?",
    "Да, у меня каждый вечер пропадает интернет.", "Попробуйте перезагрузить роутер и подождать.",
    "Я уже делал это несколько раз вчера.", "Тогда я запишу вас на визит мастера.",
    "Вам удобно в четверг после обеда?", "Четверг подходит, большое спасибо за помощь.",
]
VOICES = {"en": "voice_cmu_us_slt_arctic_hts", "ru": "voice_msu_ru_nsh_clunits"}


def synthesize(into: Path, lang: str, i: int, text: str) -> np.ndarray:
    """One sentence in Festival's voice, at 8 kHz in the phone band (as tests/data/speech/make.sh does)."""
    txt, raw, wav = into / f"{lang}{i}.txt", into / f"{lang}{i}.raw.wav", into / f"{lang}{i}.wav"
    txt.write_text(text + "\n", encoding="utf-8")
    subprocess.run(["text2wave", "-eval", f"({VOICES[lang]})", "-o", str(raw), str(txt)], check=True,
                   capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav), "sinc", "300-3400",
                    "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
                   check=True, capture_output=True)
    data, _ = soundfile.read(str(wav), dtype="int16")
    return np.asarray(data)


def festival_calls(into: Path) -> dict[Path, str]:
    """Three calls of distinct sentences (no repeats: repeated text trips Whisper's fallback decoding and
    would measure that instead): English mono, Russian mono, and an English stereo call whose caller and
    agent take turns (odd and even sentences), 0.6-1.4 s apart."""
    missing = [tool for tool in ("text2wave", "sox") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"speech_bench: {', '.join(missing)} missing: apt-get install festival festvox-us-slt-hts "
                 f"festvox-ru sox, or use --clips (the committed test clips)")
    rate = 8000
    clips = {lang: [synthesize(into, lang, i, t) for i, t in enumerate(texts)] for lang, texts in
             (("en", EN), ("ru", RU))}
    gaps = [int(rate * (0.6 + 0.2 * (i % 5))) for i in range(len(EN))]
    calls = {}
    for lang in ("en", "ru"):
        parts = [np.concatenate([c, np.zeros(g, np.int16)]) for c, g in zip(clips[lang], gaps, strict=True)]
        path = into / f"call-{lang}.wav"
        soundfile.write(str(path), np.concatenate(parts), rate, subtype="PCM_16")
        calls[path] = lang
    turns = []
    for i, (clip, gap) in enumerate(zip(clips["en"], gaps, strict=True)):
        stereo = np.zeros((len(clip) + gap, 2), np.int16)
        stereo[: len(clip), i % 2] = clip
        turns.append(stereo)
    path = into / "call-stereo.wav"
    soundfile.write(str(path), np.concatenate(turns), rate, subtype="PCM_16")
    calls[path] = "en"
    return calls


def make_calls(into: Path, clips: bool) -> dict[Path, str]:
    """The test calls: Festival speech made now, or the committed test clips (a few seconds each)."""
    if clips:
        return {DATA / name: lang for name, lang in FILES.items()}
    return festival_calls(into)


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
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(args.idle)
    idle = ticker.stop()
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as cache:
        calls = make_calls(Path(cache), args.clips)
        jobs = [(path, lang) for _ in range(args.repeat) for path, lang in calls.items()]
        call_seconds = sum(soundfile.info(str(path)).duration for path, _ in jobs)
        lengths = {p.name: round(soundfile.info(str(p)).duration, 1) for p in calls}
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
            "source": "clips" if args.clips else "festival", "call_seconds": lengths,
            "repeat": args.repeat, "loop_lag_idle": idle, "configs": configs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    part = ap.add_mutually_exclusive_group()
    part.add_argument("--speed", action="store_true", help="the speed part only")
    part.add_argument("--accuracy", action="store_true", help="the accuracy part only (speech_accuracy.py)")
    ap.add_argument("--clips", action="store_true", help="the committed test clips instead of Festival calls")
    ap.add_argument("--repeat", type=int, default=2, help="how many times the calls are transcribed per config")
    ap.add_argument("--configs", default="1x1,2x1,1x2", help="WORKERSxTHREADS, comma-separated")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds the idle loop is measured")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    speech_accuracy.add_arguments(ap.add_argument_group("accuracy"))
    args = ap.parse_args()
    for v in args.variants.split(","):
        try:
            speech_accuracy.parse_variant(v)
        except ValueError as exc:
            ap.error(str(exc))
    out: dict[str, Any] = {}
    if not args.accuracy:
        started = time.perf_counter()
        result = asyncio.run(main_async(args))
        result["seconds"] = round(time.perf_counter() - started, 1)
        out["speed"] = result
        if not args.json:
            idle = result["loop_lag_idle"]
            print(f"model {result['model']}: joined in {result['join_seconds']} s, checked again in "
                  f"{result['check_seconds']} s; idle loop lag p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms, "
                  f"max {idle['max_ms']} ms; speed run took {result['seconds']} s", flush=True)
    if not args.speed:
        if not args.json and out:
            print()
        out["accuracy"] = speech_accuracy.run_accuracy(args)
        if not args.json:
            speech_accuracy.report(out["accuracy"], False)
    if args.json:
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
