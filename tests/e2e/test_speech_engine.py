"""The speech engine with the real model (the speech extra: faster-whisper and the shipped Whisper base),
on Festival speech laid out at known times (tests/data/speech/make.sh, layout.json).  No mocks: a
missing package or model fails these tests, it never skips them.  No Asterisk, no PostgreSQL.

The model is joined into a fresh cache folder once per module, under a guard that fails any attempt to
open a network connection; each recording is transcribed once and the tests read the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from callrec.config.speech import SpeechSettings
from callrec.speech.engine import Engine, EngineOptions, load_engine, transcribe_file
from callrec.speech.model import SHIPPED_SHA256, ModelError, ModelInfo, join_shipped, prepare_model, shipped_parts
from callrec.speech.pool import SpeechPool
from callrec.speech.stats import merge_intervals, transcript_stats
from callrec.speech.transcript import Interval, Transcript, Word

DATA = REPO / "tests" / "data" / "speech"
LAYOUT: dict[str, list[dict[str, Any]]] = json.loads((DATA / "layout.json").read_text(encoding="utf-8"))
# How far a word's time may lie outside the utterance it belongs to (the utterance bounds are exact;
# word times, snapped to the voice activity, came within about 0.1 s of them).
SLACK_MS = 300


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Any attempt to reach another host fails loudly (and is recorded), whatever library makes it."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what: str) -> None:
        attempts.append(what)
        raise OSError(f"test: network use refused ({what})")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        refuse(f"connect {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == socket.AF_UNIX:
            return real_connect_ex(self, address)
        refuse(f"connect_ex {address!r}")
        return 1

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        refuse(f"getaddrinfo {host!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.delenv("HF_HUB_OFFLINE", raising=False)  # the engine must switch the hub off itself
        yield attempts
    assert attempts == [], f"the speech engine tried to use the network: {attempts}"
    assert real_getaddrinfo is socket.getaddrinfo


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech-cache")


@pytest.fixture(scope="module")
def model(cache_dir: Path) -> ModelInfo:
    with no_network():
        info = prepare_model(SpeechSettings(cache_dir=str(cache_dir)))
    assert info.joined and info.source == "shipped" and info.sha256 == SHIPPED_SHA256
    assert sorted(p.name for p in info.path.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                           "vocabulary.txt"]
    return info


@pytest.fixture(scope="module")
def engine(model: ModelInfo) -> Engine:
    with no_network():
        return load_engine(model, EngineOptions(threads=2))


@pytest.fixture(scope="module")
def transcripts(engine: Engine) -> dict[str, Transcript]:
    """Each test file transcribed once: the mono ones with the language detected, the call in English."""
    languages = {"en.wav": None, "ru.wav": None, "stereo.wav": "en", "silence.wav": None}
    with no_network():
        return {name: transcribe_file(engine, DATA / name, language) for name, language in languages.items()}


def norm(word: Word) -> str:
    return re.sub(r"[^\w]", "", word.text.lower())


def find(words: tuple[Word, ...], stem: str) -> Word:
    hits = [w for w in words if norm(w).startswith(stem)]
    assert hits, f"{stem!r} not among {[w.text for w in words]}"
    return hits[0]


def utterance(name: str, text_part: str) -> dict[str, Any]:
    return next(u for u in LAYOUT[name] if text_part in u["text"])


def assert_inside(word: Word, u: dict[str, Any]) -> None:
    low, high = u["start"] * 1000 - SLACK_MS, u["end"] * 1000 + SLACK_MS
    assert low <= word.start_ms < word.end_ms <= high, f"{word} not within {u['start']}-{u['end']} s ({u['text']})"


# --- the model ------------------------------------------------------------------------------------------------


def test_the_joined_model_is_reused_not_joined_again(model: ModelInfo, cache_dir: Path) -> None:
    before = (model.path / "model.bin").stat()
    again = prepare_model(SpeechSettings(cache_dir=str(cache_dir)))
    after = (again.path / "model.bin").stat()
    assert (again.path, again.sha256, again.joined) == (model.path, SHIPPED_SHA256, False)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list(cache_dir.glob(".join-*"))


def _join_in(cache: str) -> tuple[bool, str]:
    info = join_shipped(Path(cache))
    return info.joined, str(info.path)


def test_workers_joining_at_once_make_one_good_model(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as procs:
        results = procs.map(_join_in, [str(tmp_path)] * 2)
    assert sorted(joined for joined, _ in results) == [False, True]
    assert len({path for _, path in results}) == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".join.lock")] == \
           [Path(results[0][1]).name]


def test_a_tampered_model_is_refused(model: ModelInfo, tmp_path: Path) -> None:
    # The joined model in the cache, one byte flipped.
    copy = tmp_path / "cache" / model.path.name
    shutil.copytree(model.path, copy)
    with open(copy / "model.bin", "r+b") as fh:
        fh.seek(50_000_000)
        byte = fh.read(1)
        fh.seek(50_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError) as err:
        prepare_model(SpeechSettings(cache_dir=str(tmp_path / "cache")))
    message = str(err.value)
    assert message.startswith(f"speech.cache_dir: {copy / 'model.bin'} has sha256 ") and "\n" not in message
    assert f"expected {SHIPPED_SHA256}" in message and f"remove {copy}" in message
    # A damaged part package: the join is refused and nothing is left in the cache.
    shipped = shipped_parts()
    parts = tmp_path / "parts"
    parts.mkdir()
    shutil.copyfile(shipped.part2, parts / "model.bin.part2")
    with open(parts / "model.bin.part2", "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x00" if fh.read(1) != b"\x00" else b"\x01")
    damaged = type(shipped)(shipped.part1, parts / "model.bin.part2", shipped.companions)
    with pytest.raises(ModelError, match=r"^speech.model_dir: the shipped model's model.bin has sha256 [0-9a-f]{64}, "
                                         r"expected d01c30.*damaged or altered; pip install --require-hashes"):
        join_shipped(tmp_path / "cache2", damaged)
    assert [p.name for p in (tmp_path / "cache2").iterdir()] == [".join.lock"]


def test_an_admin_model_folder(model: ModelInfo, tmp_path: Path) -> None:
    folder = tmp_path / "whisper-custom"
    folder.mkdir()
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        (folder / name).symlink_to(model.path / name)
    with pytest.raises(ModelError, match=r"^speech.model_dir: .*whisper-custom has no tokenizer.json \(a CTranslate2 "):
        prepare_model(SpeechSettings(model_dir=str(folder)))
    (folder / "tokenizer.json").symlink_to(model.path / "tokenizer.json")
    info = prepare_model(SpeechSettings(model_dir=str(folder)))
    assert (info.path, info.source, info.sha256, info.model_id) == (folder, "model_dir", SHIPPED_SHA256,
                                                                    "whisper-custom:d01c3014881c")
    with pytest.raises(ModelError, match=r"^speech.model_dir: /nonexistent/model is not a folder$"):
        prepare_model(SpeechSettings(model_dir="/nonexistent/model"))


# --- transcripts ----------------------------------------------------------------------------------------------


def test_english_keywords_at_their_times(transcripts: dict[str, Transcript]) -> None:
    t = transcripts["en.wav"]
    assert (t.language, t.language_detected, t.sample_rate, t.duration_ms) == ("en", True, 8000, 7167)
    assert t.model == "whisper-base:d01c3014881c"
    (track,) = t.tracks
    assert track.speaker == "mixed" and track.channel == 0
    assert_inside(find(track.words, "refund"), utterance("en.wav", "refund"))
    assert_inside(find(track.words, "parcel"), utterance("en.wav", "parcel"))
    assert_inside(find(track.words, "damaged"), utterance("en.wav", "parcel"))
    assert all(0 <= w.probability <= 1 for w in track.words)


def test_russian_keywords_at_their_times(transcripts: dict[str, Transcript]) -> None:
    t = transcripts["ru.wav"]
    assert (t.language, t.language_detected) == ("ru", True) and t.language_probability > 0.5
    (track,) = t.tracks
    assert_inside(find(track.words, "договор"), utterance("ru.wav", "договор"))
    assert_inside(find(track.words, "деньг"), utterance("ru.wav", "деньги"))


def test_stereo_words_carry_their_speaker(transcripts: dict[str, Transcript]) -> None:
    t = transcripts["stereo.wav"]
    assert [(tr.speaker, tr.channel) for tr in t.tracks] == [("caller", 0), ("agent", 1)]
    assert (t.language, t.language_detected) == ("en", False)
    caller, agent = t.tracks
    spans = {speaker: [u for u in LAYOUT["stereo.wav"] if u["speaker"] == speaker] for speaker in ("caller", "agent")}
    for track in (caller, agent):
        for word in track.words:  # every word lies within one of its own speaker's utterances
            assert any(u["start"] * 1000 - SLACK_MS <= word.start_ms and word.end_ms <= u["end"] * 1000 + SLACK_MS
                       for u in spans[track.speaker]), (track.speaker, word)
    assert_inside(find(caller.words, "invoice"), utterance("stereo.wav", "invoice"))
    assert_inside(find(caller.words, "wrong"), utterance("stereo.wav", "wrong"))
    assert_inside(find(agent.words, "account"), utterance("stereo.wav", "account"))
    assert_inside(find(agent.words, "problem"), utterance("stereo.wav", "problem"))
    assert not any(norm(w).startswith(("account", "problem")) for w in caller.words)
    assert not any(norm(w).startswith(("invoice", "wrong")) for w in agent.words)
    dialogue = [speaker for speaker, _ in t.words()]
    assert dialogue[0] == "caller" and "agent" in dialogue  # the caller speaks first


def test_silence_gives_no_words(transcripts: dict[str, Transcript]) -> None:
    t = transcripts["silence.wav"]
    (track,) = t.tracks
    assert (track.segments, track.voice, t.language, t.duration_ms) == ((), (), None, 4000)


def test_talk_statistics_from_voice_activity(transcripts: dict[str, Transcript]) -> None:
    t = transcripts["stereo.wav"]
    stats = transcript_stats(t)
    layout = LAYOUT["stereo.wav"]
    for speaker in ("caller", "agent"):
        spoken = sum((u["end"] - u["start"]) * 1000 for u in layout if u["speaker"] == speaker)
        assert stats.talk_ms[speaker] == pytest.approx(spoken, rel=0.10), speaker
        track = t.track(speaker)  # type: ignore[arg-type]
        assert track is not None
        onsets = [u["start"] * 1000 for u in layout if u["speaker"] == speaker]
        assert [iv.start_ms for iv in track.voice] == pytest.approx(onsets, abs=200)
    (c2,) = [u for u in layout if "wrong" in u["text"]]
    (a2,) = [u for u in layout if "problem" in u["text"]]
    overlap = (c2["end"] - a2["start"]) * 1000
    assert stats.overtalk_ms == pytest.approx(overlap, abs=250)
    spoken_union = merge_intervals(Interval(round(u["start"] * 1000), round(u["end"] * 1000)) for u in layout)
    quiet = t.duration_ms - sum(iv.length_ms for iv in spoken_union)
    assert stats.silence_ms == pytest.approx(quiet, rel=0.15)
    assert stats.silence_share == pytest.approx(stats.silence_ms / t.duration_ms)
    assert stats.longest_silence_ms == pytest.approx(800, abs=300)  # the tail after the last word
    mono = transcript_stats(transcripts["en.wav"])
    assert mono.overtalk_ms == 0 and mono.talk_ratio == {"mixed": 1.0}
    assert mono.longest_silence_ms == pytest.approx(1000, abs=300)  # the pause between the sentences


# --- the worker pool ------------------------------------------------------------------------------------------


async def test_a_worker_process_transcribes_while_the_parent_loop_stays_responsive(
        model: ModelInfo, transcripts: dict[str, Transcript]) -> None:
    settings = SpeechSettings(workers=1, nice=7, cache_dir=str(model.path.parent))
    with SpeechPool(settings, model) as pool:
        worker = await asyncio.wrap_future(pool.probe())
        assert worker.pid != os.getpid()
        assert worker.nice == max(7, os.nice(0)) and worker.model == model.model_id
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - before - 0.01)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        result = await pool.transcribe(DATA / "stereo.wav", "en")
        busy = time.monotonic() - started
        ticking.cancel()
    assert busy > 0.5 and len(lags) > busy / 0.05  # the loop kept ticking all along
    assert max(lags) < 0.5, f"the event loop stalled for {max(lags):.3f} s while a worker transcribed"
    expected = transcripts["stereo.wav"]
    assert [[norm(w) for w in tr.words] for tr in result.tracks] == \
           [[norm(w) for w in tr.words] for tr in expected.tracks]


def test_a_model_a_worker_cannot_load_is_one_clear_error(tmp_path: Path) -> None:
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_bytes(b"not a model")
    broken = ModelInfo(tmp_path, "0" * 64, "model_dir")
    with SpeechPool(SpeechSettings(workers=1), broken) as pool, \
            pytest.raises(ModelError, match=rf"^speech.model_dir: cannot load the model in {tmp_path}: "):
        pool.submit(DATA / "silence.wav").result(timeout=120)
