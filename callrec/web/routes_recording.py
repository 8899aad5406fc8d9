"""Pause / resume a call's recording (PCI DSS: card numbers) through the API.

Same conventions as routes_calls: permission first (403), the call only through the visibility
rule (404 for hidden and unknown alike), the action audited.  The work itself is
callrec.recording.control (AMI MixMonitorMute + the recording_pauses row), shared with the CLI and
the agents' DTMF key.
"""

from __future__ import annotations

import logging

from aiohttp import web

from callrec.recording.control import ControlUnavailable, RecordingControlError
from callrec.store import audit
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import CALL_ID_PARAM, NOT_FOUND_RESPONSE, call_id_of, respond, visible_call
from callrec.web.errors import json_error
from callrec.web.keys import POOL, RECORDING_CONTROL

log = logging.getLogger("callrec.http")


async def _act(request: web.Request, what: str) -> web.Response:
    p = need(request, "calls.pause")
    call_id = call_id_of(request)
    pool = request.app[POOL]
    await visible_call(pool, p, call_id)
    control = request.app.get(RECORDING_CONTROL)
    if control is None:
        raise json_error(503, "pause/resume needs the running daemon (its AMI connection)")
    try:
        interval = await (control.pause if what == "pause" else control.resume)(call_id, by=p.name, source="api")
    except ControlUnavailable as exc:
        # The reason names the AMI host, port and error: for the log, not for the client.
        log.warning("call %s: %s through the API failed: %s", call_id, what, exc)
        raise json_error(503, "recording control unavailable") from None
    except RecordingControlError as exc:
        raise json_error(exc.http_status, str(exc)) from None
    await audit.append(pool, actor=p.name, role=p.role, action=f"recording_{what}", call_id=call_id,
                       details={"seq": interval.seq}, remote=remote(request))
    return respond(interval.as_dict())


async def pause(request: web.Request) -> web.Response:
    return await _act(request, "pause")


async def resume(request: web.Request) -> web.Response:
    return await _act(request, "resume")


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/calls/{id}/pause", pause)
    app.router.add_post("/api/v1/calls/{id}/resume", resume)


_PAUSE = {"type": "object", "properties": {
    "call_id": {"type": "string"}, "seq": {"type": "integer"}, "paused_at": {"type": "string"},
    "paused_by": {"type": "string"}, "pause_source": {"type": "string"},
    "resumed_at": {"type": ["string", "null"]}, "resumed_by": {"type": ["string", "null"]},
    "resume_source": {"type": ["string", "null"]}}}
_CONFLICT = {"description": "not being recorded now, already paused / not paused", "content": openapi.ERR}
_UNAVAILABLE = {"description": "AMI unreachable, or the API runs without the daemon", "content": openapi.ERR}
openapi.operation(
    "post", "/api/v1/calls/{id}/pause", summary="Pause the call's recording: silence from now on (audited)",
    tags=["calls"], parameters=[CALL_ID_PARAM],
    responses={"200": openapi.json_response("the pause interval, open", _PAUSE), "409": _CONFLICT,
               "503": _UNAVAILABLE, **NOT_FOUND_RESPONSE})
openapi.operation(
    "post", "/api/v1/calls/{id}/resume", summary="End the pause: record again, in the same file (audited)",
    tags=["calls"], parameters=[CALL_ID_PARAM],
    responses={"200": openapi.json_response("the pause interval, closed", _PAUSE), "409": _CONFLICT,
               "503": _UNAVAILABLE, **NOT_FOUND_RESPONSE})
