"""The OpenAPI 3.1 description, built from what each route module registers.

``operation(method, path, ...)`` records one operation; ``document()`` assembles them.  The API
serves it at /api/v1/openapi.json, and a test checks that every route of the app is described.
"""

from __future__ import annotations

from typing import Any

from callrec import __version__

_OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
}
ERR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
STD_ERRORS = {
    "400": {"description": "bad input", "content": ERR},
    "401": {"description": "not authenticated", "content": ERR},
    "403": {"description": "the role may not do this (or CSRF header missing)", "content": ERR},
}


def operation(method: str, path: str, *, summary: str, responses: dict[str, Any],
              parameters: list[dict[str, Any]] | None = None, request_body: dict[str, Any] | None = None,
              public: bool = False, tags: list[str] | None = None, description: str | None = None) -> None:
    op: dict[str, Any] = {"summary": summary, "operationId": _op_id(method, path),
                          "responses": {**({} if public else STD_ERRORS), **responses}}
    if description:
        op["description"] = description
    if tags:
        op["tags"] = tags
    if parameters:
        op["parameters"] = parameters
    if request_body:
        op["requestBody"] = request_body
    if public:
        op["security"] = []
    _OPERATIONS.setdefault(path, {})[method.lower()] = op


def _op_id(method: str, path: str) -> str:
    parts = [p.strip("{}").replace("-", "_").replace(".", "_") for p in path.split("/") if p and p != "api"]
    return method.lower() + "_" + "_".join(parts)


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def query_param(name: str, schema: dict[str, Any], description: str = "", **extra: Any) -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": False, "schema": schema, **extra}
    if description:
        out["description"] = description
    return out


def described() -> dict[str, set[str]]:
    return {path: set(ops) for path, ops in _OPERATIONS.items()}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "callrec ops API", "version": __version__,
                 "description": "Call-log search, recordings, tags, confidentiality and the audit trail. "
                                "Authenticate with `Authorization: Bearer <token>` or a console session "
                                "(cookie + X-CSRF-Token on mutating requests)."},
        "paths": {path: dict(ops) for path, ops in sorted(_OPERATIONS.items())},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "callrec_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
