"""No secret reaches the log through a request: aiohttp's own log lines are filtered.

aiohttp logs a request it cannot parse (an oversized header or request line, a malformed header)
at ERROR, with an exception whose message quotes the start of the offending bytes: a session
cookie or an API token could land in the log that way.  ``RedactingFilter`` on aiohttp's server
loggers replaces such an error with its type and status (the request's bytes are not logged at
all), and redacts whatever looks like a credential from every other line (``redact``).  The access
log line redacts its path the same way (a client may put a token into a URL).
"""

from __future__ import annotations

import logging
import re

from aiohttp.http_exceptions import HttpProcessingError

# Loggers aiohttp's server side writes to (the client's are not ours to filter).
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "aiohttp.websocket")

REDACTED = "[redacted]"
# After a credential header's name: the rest of the line; after a credential's name: its value,
# whatever its length or shape.
_HEADER = re.compile(r"(?i)(\b(?:cookie|authorization)\s*[:=]\s*)[^\r\n'\"]*")
_NAMED = re.compile(r"(?i)(bearer\s+|callrec_session=)[^\s'\";,]*")
# Our API tokens (crt_ + 43 url-safe characters) and session ids / CSRF tokens (43 url-safe
# characters): any long url-safe run, except a call id (a UUID).
_SECRETISH = re.compile(r"[A-Za-z0-9_-]{24,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def redact(text: str) -> str:
    """``text`` with credential values and anything shaped like one replaced by ``[redacted]``."""
    text = _HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _NAMED.sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRETISH.sub(lambda m: m.group(0) if _UUID.fullmatch(m.group(0)) else REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so that no request bytes that could hold a secret are logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = redact(record.getMessage())
        if isinstance(exc, HttpProcessingError):
            # The parser's message quotes the request: log what went wrong, not the bytes.
            record.msg = f"{message}: {type(exc).__name__} ({exc.code}); the request's bytes are not logged"
            record.exc_info, record.exc_text = None, None
        else:
            record.msg = message
            if record.exc_info:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
        record.args = None
        return True


FILTER = RedactingFilter()


def install() -> None:
    """Put the filter on aiohttp's server loggers (idempotent)."""
    for name in AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if FILTER not in logger.filters:
            logger.addFilter(FILTER)
