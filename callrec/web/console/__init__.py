"""The web console: one page and its static files, served by the ops API's aiohttp app.

- ``GET /``: the page, in the language of the ``callrec_lang`` cookie (the console's language
  switch sets it) or else of ``Accept-Language`` (English or Russian; English by default).
- ``GET /console/<file>``: the script, style sheet, strings and icon, from a fixed list shipped in
  the package (a client-supplied name never reaches the file system).
- ``GET /console/session``: who the console session is and a fresh CSRF token for it.  The page
  keeps the token in memory only, so after a reload it asks for a new one; the old one stops working.

The page and its files are public: they hold no data; the page reads everything through /api/v1
with the session cookie.  None of this is API, so none of it is in the OpenAPI description.
A strict Content-Security-Policy allows scripts, styles, media and requests from this origin
only, and no inline script or style.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from callrec.access import new_secret, sha256_hex
from callrec.web.auth import COOKIE, public, session_principal
from callrec.web.errors import json_error
from callrec.web.keys import POOL

LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "callrec_lang"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
STATIC_FILES = ("console.js", "calls.js", "dashboard.js", "evidence.js", "player.js", "ux.js", "i18n.js", "console.css",
                "favicon.svg")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load(name: str) -> Asset:
    body = (resources.files(__package__) / "static" / name).read_bytes()
    suffix = name[name.rfind("."):]
    return Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


# Read once: a few tens of kilobytes, and no file-system access per request.
_ASSETS = {name: _load(name) for name in STATIC_FILES}
_PAGE = _load("index.html").body.decode("utf-8")
_PAGES = {lang: _PAGE.replace("@LANG@", lang).encode("utf-8") for lang in LANGUAGES}

_LANG_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*$")


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The console's language: the user's own choice (cookie), else the browser's best match."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for part in (accept_language or "")[:500].split(",")[:20]:
        m = _LANG_RANGE.match(part)
        if not m:
            continue
        try:
            q = float(m.group(2)) if m.group(2) else 1.0
        except ValueError:
            continue
        lang = m.group(1).lower()
        # Strictly greater: of equal weights the browser's first-listed language wins.
        if lang in LANGUAGES and q > best_q:
            best, best_q = lang, q
    return best


def _headers(content_type: str, *, cache: str) -> dict[str, str]:
    return {"Content-Type": content_type + "; charset=utf-8", "Content-Security-Policy": CSP,
            "Cache-Control": cache, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin"}


@public
async def page(request: web.Request) -> web.Response:
    lang = pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))
    headers = _headers("text/html", cache="no-store")
    headers["Vary"] = "Accept-Language, Cookie"
    headers["Content-Language"] = lang
    return web.Response(body=_PAGES[lang], headers=headers)


@public
async def asset(request: web.Request) -> web.Response:
    item = _ASSETS[request.path.rsplit("/", 1)[1]]
    # Revalidated every time (cheap: a 304), so an upgrade never leaves an old script running.
    headers = _headers(item.content_type, cache="no-cache")
    headers["ETag"] = item.etag
    if item.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    return web.Response(body=item.body, headers=headers)


@public
async def session_csrf(request: web.Request) -> web.Response:
    """Who this console session is, and a new CSRF token for it (replaces the one /login gave).

    Cookie sessions only (API tokens have no CSRF token).  Public in the router's eyes, like every
    /console/ path: the session is checked here.  A GET is safe: the cookie is SameSite=Strict,
    and another site could not read the answer.
    """
    session_id = request.cookies.get(COOKIE)
    pool = request.app[POOL]
    if not session_id or len(session_id) > 200:
        raise json_error(401, "authentication required")
    p = await session_principal(pool, session_id)
    if p is None:
        raise json_error(401, "authentication required")
    token = new_secret()
    done = await pool.execute(
        "UPDATE web_sessions SET csrf_sha256 = $1 WHERE id_sha256 = $2 AND expires_at > now()",
        sha256_hex(token), sha256_hex(session_id))
    if done != "UPDATE 1":  # logged out in between
        raise json_error(401, "authentication required")
    return web.json_response({"csrf_token": token, "user": p.name, "role": p.role, "extension": p.extension},
                             headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/", page, allow_head=False)
    app.router.add_get("/console/session", session_csrf, allow_head=False)
    # One exact route per file: any other /console/ path is aiohttp's own (JSON) 404.
    for name in STATIC_FILES:
        app.router.add_get(f"/console/{name}", asset, allow_head=False)
