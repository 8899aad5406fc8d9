"""The OpenAPI document matches the routes the ops API serves (no server, no database)."""

from __future__ import annotations

from pathlib import Path

from support.opsapi import api_settings

from callrec.web import openapi
from callrec.web.app import make_app


def test_openapi_describes_every_route(tmp_path: Path) -> None:
    app = make_app(api_settings("postgresql://x@127.0.0.1/x", tmp_path), None)  # type: ignore[arg-type]
    described = openapi.described()
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        # The API is described; the console's pages and static files (GET /, /console/...) are not API.
        if route.method == "HEAD" or path is None or not (path.startswith("/api/") or path == "/healthz"):
            continue
        routes.add((route.method.lower(), path))
        assert route.method.lower() in described.get(path, set()), f"{route.method} {path} not in the OpenAPI"
    documented = {(m, p) for p, ms in described.items() for m in ms}
    assert documented == routes  # nothing described that is not served
    doc = openapi.document()
    assert doc["openapi"].startswith("3.") and "/api/v1/calls/{id}/audio" in doc["paths"]
