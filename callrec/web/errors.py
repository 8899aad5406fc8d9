"""JSON errors: every error body is ``{"error": "<message>"}``."""

from __future__ import annotations

import json

from aiohttp import web


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
           405: web.HTTPMethodNotAllowed, 408: web.HTTPRequestTimeout, 409: web.HTTPConflict,
           413: web.HTTPRequestEntityTooLarge,
           415: web.HTTPUnsupportedMediaType, 416: web.HTTPRequestRangeNotSatisfiable, 429: web.HTTPTooManyRequests,
           500: web.HTTPInternalServerError, 503: web.HTTPServiceUnavailable}[status]
    body = json.dumps({"error": message})
    if cls is web.HTTPMethodNotAllowed:
        return web.HTTPMethodNotAllowed("?", [], text=body, content_type="application/json", headers=headers)
    if cls is web.HTTPRequestEntityTooLarge:
        exc = web.HTTPRequestEntityTooLarge(0, 0, headers=headers)
        exc.text = body
        exc.content_type = "application/json"
        return exc
    return cls(text=body, content_type="application/json", headers=headers)


def not_found(what: str = "no such call") -> web.HTTPException:
    return json_error(404, what)


class HiddenCall(web.HTTPNotFound):
    """The 404 for a call that exists but is hidden from the principal: the client sees exactly
    what an unknown call gives; the error middleware audits it as a denial."""

    def __init__(self, call_id: str) -> None:
        super().__init__(text=json.dumps({"error": "no such call"}), content_type="application/json")
        self.call_id = call_id


def forbidden(message: str = "your role may not do this") -> web.HTTPException:
    return json_error(403, message)


def bad_request(message: str) -> web.HTTPException:
    return json_error(400, message)
