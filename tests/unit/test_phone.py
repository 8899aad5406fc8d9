"""Phone numbers to search digits (callrec/phone.py) and what a `number=` value means."""

from __future__ import annotations

import pytest

from callrec import phone
from callrec.access import Params
from callrec.phone import NumberMatch, parse_query
from callrec.store.callquery import number_sql


@pytest.mark.parametrize("written", ["+7 916 739-28-55", "+79167392855", "79167392855", "89167392855",
                                     "8 (916) 739-28-55", "9167392855", "+7(916)739 28 55"])
def test_every_written_form_of_a_russian_number_is_one_digit_string(written: str) -> None:
    assert phone.digits(written) == "79167392855"
    assert parse_query(written) == NumberMatch("exact", ("79167392855",))


def test_default_country_reads_national_numbers() -> None:
    assert phone.digits("030 1234567", "DE") == "49301234567"
    assert phone.digits("030 1234567", "RU") == "0301234567"  # not a Russian number: its digits
    assert parse_query("030 1234567", "DE") == NumberMatch("exact", ("49301234567",))


@pytest.mark.parametrize(("stored", "digits"), [("1001", "1001"), ("anonymous", None), ("", None), (None, None),
                                               ("+4930111", "4930111"), ("sip:201@pbx", "201")])
def test_numbers_that_are_not_whole_phone_numbers_keep_their_digits(stored: str | None,
                                                                     digits: str | None) -> None:
    assert phone.digits(stored) == digits


def test_a_partial_tail_is_a_suffix_search_and_short_values_are_whole() -> None:
    assert parse_query("7392855") == NumberMatch("suffix", ("7392855",))
    assert parse_query("739-28-55") == NumberMatch("suffix", ("7392855",))
    assert parse_query("2855") == NumberMatch("suffix", ("2855",))
    assert parse_query("201") == NumberMatch("exact", ("201",))
    # With "+" the country code is written: those digits, not a tail.
    assert parse_query("+4930444") == NumberMatch("exact", ("4930444",))


def test_wildcards() -> None:
    assert parse_query("+749512345*") == NumberMatch("prefix", ("749512345",))
    assert parse_query("+7 495 *") == NumberMatch("prefix", ("7495",))
    # Without "+", a national prefix 8 is also tried as the country code 7.
    assert parse_query("8916*") == NumberMatch("prefix", ("8916", "7916"))
    assert parse_query("7916*") == NumberMatch("prefix", ("7916",))
    assert parse_query("*7392855") == NumberMatch("suffix", ("7392855",))
    assert parse_query("*739-28-55") == NumberMatch("suffix", ("7392855",))
    assert parse_query("+7495*55") == NumberMatch("pattern", ("7495%55",))
    assert parse_query("*916*") == NumberMatch("pattern", ("%916%",))


@pytest.mark.parametrize("text", ["alice", "+4930_22", "10%", "*", "***", "+", "sip:*"])
def test_values_that_are_not_written_numbers_compare_as_text(text: str) -> None:
    assert parse_query(text).kind == "text"


def test_number_sql_uses_the_digit_columns_and_escapes_text() -> None:
    params = Params()
    assert number_sql(parse_query("*7392855"), params) == (
        "(reverse(c.caller_digits) LIKE $1 OR reverse(c.called_digits) LIKE $1)")
    assert params.values == ["5582937%"]
    params = Params()
    assert "caller_digits LIKE $1" in number_sql(parse_query("8916*"), params)
    assert params.values == ["8916%", "7916%"]
    params = Params()
    assert number_sql(parse_query("+4930_2*"), params) == "(c.caller_number LIKE $1 OR c.called_number LIKE $1)"
    assert params.values == ["+4930\\_2%"]


def test_hostile_and_long_values_do_not_raise() -> None:
    for text in ["+" + "9" * 64, "8" * 64, "(" * 64, "*" * 64, "\u0661\u0662\u0663\u0664"]:
        parse_query(text)
        phone.digits(text)
    assert phone.is_country("RU") and not phone.is_country("XX")


def test_bad_default_country_is_one_line_naming_the_key() -> None:
    from callrec.config.fields import ConfigError
    from callrec.config.search import SearchSettings, check_search

    check_search(SearchSettings(default_country="DE"))
    with pytest.raises(ConfigError, match=r"^search\.default_country: expected a two-letter region code.*'ru'"):
        check_search(SearchSettings(default_country="ru"))
