"""web/logsafe.py: what looks like a credential is redacted from aiohttp's log lines and access
paths; call ids stay; a parse error is logged without the request's bytes."""

from __future__ import annotations

import logging
import uuid

from aiohttp.http_exceptions import LineTooLong

from callrec.access import new_secret, new_token
from callrec.web.logsafe import RedactingFilter, redact


def test_redact_credentials_keep_call_ids() -> None:
    token, session, call_id = new_token(), new_secret(), str(uuid.uuid4())
    for text in (f"Bearer {token}", f"callrec_session={session}; x=1", f"/api/v1/{token}/x",
                 f"b'{session}xxxxxxxx'", f"Authorization: Basic {session[:10]}", f"Cookie: a={session[:6]}"):
        out = redact(text)
        assert token not in out and session[:6] not in out and "[redacted]" in out, out
    assert redact(f"/api/v1/calls/{call_id}/audio") == f"/api/v1/calls/{call_id}/audio"
    assert redact("GET /console/app.js 200") == "GET /console/app.js 200"


def test_a_parse_error_is_logged_without_its_bytes() -> None:
    session = new_secret()
    try:
        raise LineTooLong(f"callrec_session={session[:30]}".encode(), 8190)
    except LineTooLong:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), exc_info=__import__("sys").exc_info())
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert session[:8] not in text and "LineTooLong (400)" in text and "127.0.0.1" in text
