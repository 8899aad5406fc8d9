"""The pure parts of the speech accuracy benchmark (benchmarks/speech_accuracy.py): normalisation, WER,
keyword recall and precision counting, variants.  No model, no Festival, no PostgreSQL."""

from __future__ import annotations

import json
import sys

import pytest
from support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import speech_accuracy as sa


def test_normalise_lowers_drops_punctuation_folds_yo_and_keeps_numbers() -> None:
    assert sa.normalise("Счёт, пожалуйста!  Ещё 10 минут.") == ["счет", "пожалуйста", "еще", "10", "минут"]
    assert sa.normalise("Hello, I'm calling — about a «refund»?") == ["hello", "i", "m", "calling", "about", "a",
                                                                     "refund"]
    assert sa.normalise("чем-нибудь") == ["чем", "нибудь"]
    assert sa.normalise(" ... ") == []


def test_edit_distance_counts_substitutions_deletions_insertions() -> None:
    assert sa.edit_distance([], []) == 0
    assert sa.edit_distance(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert sa.edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert sa.edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert sa.edit_distance(["a", "b"], ["a", "b", "c", "d"]) == 2
    assert sa.edit_distance(["a", "b"], []) == 2
    assert sa.edit_distance([], ["x"]) == 1
    assert sa.edit_distance(["a", "b", "c", "d"], ["b", "c", "d", "a"]) == 2


def test_wer_is_total_edits_over_total_reference_words_after_normalising() -> None:
    w = sa.wer([("Мне пришёл счёт.", "мне пришел счет"), ("The invoice is wrong", "the invoices wrong"),
                ("ten percent", "10 percent")])
    assert (w["words"], w["errors"]) == (3 + 4 + 2, 0 + 2 + 1)
    assert w["wer"] == pytest.approx(3 / 9)
    assert sa.wer([])["wer"] == 0.0


def test_keyword_recall_and_precision() -> None:
    keywords = ["cancel", "contract", "money", "order"]
    expected = [["contract", "cancel"], ["order", "money", "cancel"], ["money"]]
    # What the reference sentences hold: sentence 2 says "contract" too, though it is not one of its keywords.
    said = [{"contract", "cancel"}, {"order", "money", "cancel", "contract"}, {"money"}]
    found = [{"contract"},  # "cancel" missed
             {"order", "money", "cancel", "contract"},  # all said: "contract" is a right hit here
             {"money", "order"}]  # "order" was not said in sentence 3: a false hit
    k = sa.keyword_scores(expected, keywords, said, found)
    assert (k["keywords"], k["found"]) == (6, 5)
    assert k["recall"] == pytest.approx(5 / 6)
    assert (k["hits"], k["right_hits"]) == (7, 6)
    assert k["precision"] == pytest.approx(6 / 7)
    assert k["missed"] == ["cancel"]
    assert k["false_hits"] == ["order"]


def test_a_keyword_said_in_several_sentences_is_right_in_each() -> None:
    k = sa.keyword_scores([["счёт"], ["счёт"]], ["счёт"], [{"счёт"}, {"счёт"}], [{"счёт"}, {"счёт"}])
    assert (k["recall"], k["hits"], k["right_hits"], k["precision"]) == (1.0, 2, 2, 1.0)


def test_no_hits_is_full_precision_and_no_recall() -> None:
    k = sa.keyword_scores([["a"]], ["a"], [{"a"}], [set()])
    assert (k["recall"], k["precision"], k["hits"]) == (0.0, 1.0, 0)


def test_variants() -> None:
    assert sa.parse_variant("default") == {}
    assert sa.parse_variant("beam_size=1+compute_type=float32+vad_threshold=0.5") == {
        "beam_size": 1, "compute_type": "float32", "vad_threshold": 0.5}
    for bad in ("beam=1", "threads=2", "beam_size", "beam_size="):
        with pytest.raises(ValueError, match="variant"):
            sa.parse_variant(bad)


def test_the_test_set_has_both_languages_with_keywords_for_every_sentence() -> None:
    data = json.loads(sa.TESTSET.read_text(encoding="utf-8"))
    for lang in ("ru", "en"):
        assert len(data[lang]) >= 20
        texts = [s["text"] for s in data[lang]]
        assert len(set(texts)) == len(texts)  # repeated text trips Whisper's fallback decoding
        for s in data[lang]:
            assert s["keywords"] and all(k.strip() for k in s["keywords"]), s
            assert not any(c.isdigit() for c in s["text"]), s  # Festival reads digits, Whisper writes them
