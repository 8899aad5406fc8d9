"""``[search]``: how the call search reads phone numbers (callrec/phone.py).

Kept apart from settings.py like the other sections; settings.py only hooks it in.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrec.config.fields import ConfigError, setting

__all__ = ["SearchSettings", "check_search"]


@dataclass(frozen=True)
class SearchSettings:
    default_country: str = setting(
        "RU", "the country of a phone number written without a country code (`8 916 739-28-55`, `9167392855`): "
              "such numbers are stored and searched as this country's E.164 digits. Read when the call log "
              "writes a number and when a search is parsed",
        allowed="a two-letter region code libphonenumber knows (`RU`, `DE`, `US`, ...)")


def check_search(s: SearchSettings) -> None:
    from callrec.phone import is_country  # phonenumbers' metadata: loaded only when settings are checked

    if not is_country(s.default_country):
        raise ConfigError(f"search.default_country: expected a two-letter region code like RU or DE, "
                          f"got {s.default_country!r}")
