#!/usr/bin/env python3
"""Speech engine accuracy: word error rate, keyword recall and keyword precision of the shipped model with
callrec's own engine settings, on a fixed test set, Russian and English, clean and telephone band.  Not a
timed test: it prints figures for docs/benchmarks.md.  Also run by ``speech_bench.py`` (``--accuracy``).

    .venv/bin/python benchmarks/speech_accuracy.py [--variants default,beam_size=1,vad_threshold=0.5]
        [--langs ru,en] [--conditions clean,phone] [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--json]

The test set is benchmarks/speech_testset.json: call-centre sentences, each with its keywords.  Each
sentence is spoken by Debian's Festival at the start of the run (festival, festvox-us-slt-hts, festvox-ru,
sox) and made into two 8 kHz mono recordings: ``clean`` (resampled, silence trimmed) and ``phone``
(pink noise at 30 dB SNR, 300-3400 Hz band, mu-law and back).  Each recording is transcribed on its own
with ``load_engine`` + ``transcribe_file``, the language given, with ``EngineOptions.from_settings`` of the
default ``SpeechSettings`` (a variant changes one or more options: ``beam_size=1``,
``compute_type=float32+vad_threshold=0.5``).

- WER: word edit distance / reference words, after :func:`normalise` (lower case, punctuation removed,
  ё → е; numbers are left as written, so "ten" against "10" is an error).
- Keyword recall: of each sentence's keywords, the share found in its transcript.  "Found" is callrec's
  search rule (callrec/store/said.py): ``to_tsvector('russian', text) @@ phraseto_tsquery('russian',
  keyword)``, computed by PostgreSQL (stems Russian, and Latin words with the English stemmer).
- Keyword precision: every keyword of the language is searched in every sentence's transcript; of those
  hits, the share where the keyword was said in that sentence (the same rule on the reference text; a
  keyword said in several sentences is right in each of them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from callrec.config.speech import SpeechSettings  # noqa: E402
from callrec.speech.engine import EngineOptions  # noqa: E402

TESTSET = Path(__file__).resolve().parent / "speech_testset.json"
VOICES = {"en": "voice_cmu_us_slt_arctic_hts", "ru": "voice_msu_ru_nsh_clunits"}
PACKAGES = "festival festvox-us-slt-hts festvox-ru sox"
RATE = 8000
SNR_DB = 30.0
CONDITIONS = ("clean", "phone")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- the pure parts (tests/unit/test_speech_accuracy.py) --

def normalise(text: str) -> list[str]:
    """The words of ``text`` for WER: lower case, ё → е, punctuation (hyphens and apostrophes too) as a space;
    digits stay as written."""
    text = unicodedata.normalize("NFC", text).lower().replace("ё", "е")
    text = "".join(c if c.isalnum() or c.isspace() else " " for c in text)
    return text.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def wer(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Corpus WER of (reference, transcript) pairs: total edits / total reference words."""
    words = errors = 0
    for ref, hyp in pairs:
        r = normalise(ref)
        words += len(r)
        errors += edit_distance(r, normalise(hyp))
    return {"words": words, "errors": errors, "wer": errors / words if words else 0.0}


def keyword_scores(expected: list[list[str]], keywords: list[str], said: list[set[str]],
                   found: list[set[str]]) -> dict[str, Any]:
    """Keyword recall and precision of one language and condition.

    ``expected[i]``: sentence i's own keywords; ``keywords``: the language's whole list; ``said[i]``: the
    keywords of that list that occur in sentence i's reference text; ``found[i]``: those that occur in its
    transcript.  Recall: expected keywords found in their sentence / expected keywords.  Precision: over
    every (sentence, keyword) pair whose keyword was found in the sentence's transcript, the share whose
    keyword was said in that sentence."""
    want = sum(len(e) for e in expected)
    got = sum(1 for e, f in zip(expected, found, strict=True) for k in e if k in f)
    hits = sum(1 for f in found for k in keywords if k in f)
    right = sum(1 for s, f in zip(said, found, strict=True) for k in keywords if k in f and k in s)
    missed = [k for e, f in zip(expected, found, strict=True) for k in e if k not in f]
    false = sorted({k for s, f in zip(said, found, strict=True) for k in keywords if k in f and k not in s})
    return {"keywords": want, "found": got, "recall": got / want if want else 0.0, "hits": hits,
            "right_hits": right, "precision": right / hits if hits else 1.0, "missed": missed, "false_hits": false}


def parse_variant(spec: str) -> dict[str, Any]:
    """``default`` or ``beam_size=1+compute_type=float32``: EngineOptions fields to change."""
    if spec == "default":
        return {}
    types = {f.name: f.type for f in fields(EngineOptions)}
    out: dict[str, Any] = {}
    for part in spec.split("+"):
        name, _, value = part.partition("=")
        if name not in types or name in ("threads", "device") or not value:
            raise ValueError(f"variant {spec!r}: expected NAME=VALUE with NAME one of beam_size, vad_threshold, "
                             f"min_silence_ms, compute_type, hotwords (@keywords: the language's keyword list)")
        kind = {"int": int, "float": float}.get(str(types[name]), str)
        out[name] = kind(value)
    return out


# -- audio --

def check_tools() -> None:
    missing = [tool for tool in ("text2wave", "sox") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"speech accuracy: {', '.join(missing)} missing; it makes its test speech with Debian's Festival: "
                 f"apt-get install -y {PACKAGES}")


def pink_noise(n: int, seed: int) -> np.ndarray:
    """``n`` samples of pink (1/f power) noise, unit RMS, the same for the same seed."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / np.sqrt(np.mean(x ** 2))


def make_audio(into: Path, name: str, lang: str, text: str, seed: int) -> dict[str, Path]:
    """Sentence ``text`` as Festival says it: ``clean`` (8 kHz, silence trimmed) and ``phone`` (pink noise at
    SNR_DB, 300-3400 Hz band, mu-law and back to 16-bit PCM)."""
    txt, raw, clean = into / f"{name}.txt", into / f"{name}.raw.wav", into / f"{name}.clean.wav"
    noisy, law, phone = into / f"{name}.noisy.wav", into / f"{name}.ulaw.wav", into / f"{name}.phone.wav"
    txt.write_text(text + "\n", encoding="utf-8")

    def run(*cmd: object) -> None:
        try:
            subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:  # e.g. festival without the voice
            err = exc.stderr.decode(errors="replace").strip().splitlines()
            sys.exit(f"speech accuracy: {cmd[0]} failed ({err[-1] if err else exc.returncode}); the test speech needs "
                     f"Debian's {PACKAGES}: apt-get install -y {PACKAGES}")

    run("text2wave", "-eval", f"({VOICES[lang]})", "-o", raw, txt)
    run("sox", raw, "-r", RATE, "-c", 1, "-b", 16, clean, "silence", 1, 0.02, "0.5%", "reverse", "silence", 1, 0.02,
        "0.5%", "reverse")
    speech, _ = soundfile.read(str(clean), dtype="float64")
    # A quarter second of line noise before and after, as on a line that is open before anyone speaks.
    pad = np.zeros(RATE // 4)
    signal = np.concatenate([pad, speech, pad])
    noise = pink_noise(signal.size, seed) * np.sqrt(np.mean(speech ** 2)) / 10 ** (SNR_DB / 20)
    mixed = signal + noise
    mixed *= min(1.0, 0.95 / np.max(np.abs(mixed)))
    soundfile.write(str(noisy), mixed, RATE, subtype="PCM_16")
    run("sox", noisy, "-e", "u-law", "-b", 8, law, "sinc", "300-3400")
    run("sox", law, "-e", "signed-integer", "-b", 16, phone)
    return {"clean": clean, "phone": phone}


# -- keywords, by PostgreSQL --

async def matches(dsn: str, texts: list[str], keywords: list[str]) -> list[set[str]]:
    """For each text, the keywords that callrec's search would find in it (russian configuration, phrases
    as phrases)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        sys.exit(f"speech accuracy: cannot reach PostgreSQL at {dsn} ({exc}); keywords are matched with its "
                 f"russian text-search configuration, as callrec's search does (--dsn)")
    try:
        rows = await conn.fetch(
            "SELECT t.i, k.kw FROM unnest($1::text[]) WITH ORDINALITY t(text, i), "
            "unnest($2::text[]) AS k(kw) "
            "WHERE to_tsvector('russian', t.text) @@ phraseto_tsquery('russian', k.kw)", texts, keywords)
    finally:
        await conn.close()
    out: list[set[str]] = [set() for _ in texts]
    for r in rows:
        out[r["i"] - 1].add(r["kw"])
    return out


# -- the run --

@dataclass
class Item:
    lang: str
    index: int
    text: str
    keywords: list[str]
    audio: dict[str, Path]


def load_testset(langs: list[str]) -> dict[str, list[dict[str, Any]]]:
    data = json.loads(TESTSET.read_text(encoding="utf-8"))
    return {lang: data[lang] for lang in langs}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from callrec.speech.engine import load_engine, transcribe_file
    from callrec.speech.model import prepare_model

    check_tools()
    langs = args.langs.split(",")
    conditions = args.conditions.split(",")
    variants = args.variants.split(",")
    overrides = {v: parse_variant(v) for v in variants}
    testset = load_testset(langs)
    base = EngineOptions.from_settings(SpeechSettings())
    out: dict[str, Any] = {"model": None, "base_options": base.__dict__, "snr_db": SNR_DB, "results": []}
    with tempfile.TemporaryDirectory(prefix="speech-accuracy-") as tmp:
        into = Path(tmp)
        started = time.perf_counter()
        items = [Item(lang, i, s["text"], s["keywords"], make_audio(into, f"{lang}{i}", lang, s["text"], 1000 * i))
                 for lang in langs for i, s in enumerate(testset[lang])]
        out["synthesis_seconds"] = round(time.perf_counter() - started, 1)
        seconds = {c: {lang: sum(soundfile.info(str(it.audio[c])).duration for it in items if it.lang == lang)
                       for lang in langs} for c in conditions}
        info = prepare_model(SpeechSettings(cache_dir=str(into / "cache")))
        out["model"] = info.model_id
        keywords = {lang: sorted({k for s in testset[lang] for k in s["keywords"]}) for lang in langs}
        said = {lang: await matches(args.dsn, [s["text"] for s in testset[lang]], keywords[lang]) for lang in langs}
        for lang in langs:  # the test set itself: every sentence's keywords are in its text
            for s, found in zip(testset[lang], said[lang], strict=True):
                if not set(s["keywords"]) <= found:
                    sys.exit(f"speech accuracy: test set: {sorted(set(s['keywords']) - found)} not found in its own "
                             f"sentence {s['text']!r}")
        for variant in variants:
            for cond in conditions:
                for lang in langs:
                    over = dict(overrides[variant])
                    if over.get("hotwords") == "@keywords":  # the language's keyword list, as an admin would list it
                        over["hotwords"] = ", ".join(keywords[lang])
                    engine = load_engine(info, replace(base, **over))
                    mine = [it for it in items if it.lang == lang]
                    started = time.perf_counter()
                    texts = [text_of(transcribe_file(engine, it.audio[cond], lang)) for it in mine]
                    took = time.perf_counter() - started
                    found = await matches(args.dsn, texts, keywords[lang])
                    w = wer([(it.text, t) for it, t in zip(mine, texts, strict=True)])
                    k = keyword_scores([it.keywords for it in mine], keywords[lang], said[lang], found)
                    row = {"variant": variant, "lang": lang, "condition": cond, "sentences": len(mine), **w, **k,
                           "audio_seconds": round(seconds[cond][lang], 1), "decode_seconds": round(took, 1),
                           "rtf": round(took / seconds[cond][lang], 3),
                           "transcripts": texts if args.json else None}
                    out["results"].append(row)
                    if not args.json:
                        print(line(row), flush=True)
                    del engine
    return out


def text_of(transcript: Any) -> str:
    return " ".join(t.text for t in transcript.tracks).strip()


def line(r: dict[str, Any]) -> str:
    return (f"{r['variant']:<24} {r['lang']} {r['condition']:<5} {r['sentences']:>3} sentences {r['words']:>4} words  "
            f"WER {100 * r['wer']:5.1f}%  keyword recall {100 * r['recall']:5.1f}% ({r['found']}/{r['keywords']})  "
            f"precision {100 * r['precision']:5.1f}% ({r['right_hits']}/{r['hits']})  "
            f"RTF {r['rtf']} ({r['decode_seconds']} s for {r['audio_seconds']} s)")


def table(result: dict[str, Any]) -> str:
    rows = ["| variant | language | condition | sentences | words | WER | keyword recall | keyword precision | RTF |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["results"]:
        rows.append(f"| {r['variant']} | {r['lang']} | {r['condition']} | {r['sentences']} | {r['words']} | "
                    f"{100 * r['wer']:.1f} % | {100 * r['recall']:.1f} % ({r['found']}/{r['keywords']}) | "
                    f"{100 * r['precision']:.1f} % ({r['right_hits']}/{r['hits']}) | {r['rtf']} |")
    return "\n".join(rows)


def add_arguments(ap: Any) -> None:
    """The accuracy options, on a parser or an argument group (speech_bench.py)."""
    ap.add_argument("--variants", default="default",
                    help="engine options to try, comma-separated: default, or NAME=VALUE[+NAME=VALUE] "
                         "(beam_size, vad_threshold, min_silence_ms, compute_type)")
    ap.add_argument("--langs", default="ru,en", help="test-set languages, comma-separated")
    ap.add_argument("--conditions", default="clean,phone", help="clean, phone, or both")
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL that matches keywords (any database)")


def report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return
    print()
    print(table(result))
    print(f"\nmodel {result['model']}, Festival speech made in {result['synthesis_seconds']} s, "
          f"accuracy run took {result['seconds']} s")


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--json", action="store_true", help="print the raw figures (and transcripts) as JSON")
    args = ap.parse_args()
    for v in args.variants.split(","):
        try:
            parse_variant(v)
        except ValueError as exc:
            ap.error(str(exc))
    report(run_accuracy(args), args.json)


if __name__ == "__main__":
    main()
