"""The published `/openapi.json`, made to describe this server rather than FastAPI's defaults.

FastAPI documents `200` and a `422` this server never sends (its validation errors are 400s).
`truthful(doc, settings)` rewrites the generated document once, by rules, not per route:

- every operation lists the statuses it can answer with, each with its dialect's error body
  (OpenAI's `{"error": {...}}` on `/v1/*`, Anthropic's `{"type": "error", ...}` on
  `/v1/messages*`, Ollama's `{"error": "..."}` on `/api/*`, as `errors.dialect_of` decides):
  500 always; 401 when API keys are on (probes excepted); 400 when it takes parameters or a
  body; 413 when it takes a body; 404 when it names something (a path parameter, a `model`);
  503 when it runs a model (busy or full queue); 504 for generations (the request timeout);
  and what the model library's routes add (`LIBRARY`);
- streamed answers (a body with `stream`) are documented as `text/event-stream`, or as
  `application/x-ndjson` on Ollama's routes;
- request bodies are closed (`additionalProperties: false`) where the server refuses unknown
  fields, as it does unless `--no-reject-unknown-fields`.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .errors import Dialect, dialect_of
from .middleware import GENERATION_PATHS, OPEN_PATHS, OPEN_PREFIXES, REQUEST_ID_HEADER
from .protocol.common import OpenAIModel
from .settings import Settings

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}

#: The error body of each dialect, as `errors.error_body` writes it.
ERROR_SCHEMAS: dict[Dialect, tuple[str, dict[str, Any]]] = {
    "openai": (
        "OpenAIError",
        {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "message": _STRING,
                        "type": _STRING,
                        "param": _NULLABLE_STRING,
                        "code": _NULLABLE_STRING,
                        "request_id": _STRING,
                    },
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
    ),
    "anthropic": (
        "AnthropicError",
        {
            "type": "object",
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "properties": {"type": _STRING, "message": _STRING},
                    "required": ["type", "message"],
                    "additionalProperties": False,
                },
                "request_id": _STRING,
            },
            "required": ["type", "error"],
            "additionalProperties": False,
        },
    ),
    "ollama": (
        "OllamaError",
        {
            "type": "object",
            "properties": {"error": _STRING},
            "required": ["error"],
            "additionalProperties": False,
        },
    ),
}

STREAM_TYPES: dict[Dialect, str] = {
    "openai": "text/event-stream",
    "anthropic": "text/event-stream",
    "ollama": "application/x-ndjson",
}

DESCRIPTIONS = {
    202: "Accepted: the model is in the catalog and its download has started (progress).",
    400: "Invalid request: JSON that does not parse, an unknown field, or a value out of range.",
    401: "Missing or wrong API key.",
    404: "Not found: no such model (or stored object).",
    409: "Conflict: the model is in use, protected, or being downloaded.",
    413: "The request body is larger than the server's limit.",
    500: "An error in this server.",
    502: "The download failed (network, upstream server or checksum).",
    503: "Busy: the model's queue is full or no model can be unloaded to make room.",
    504: "The request ran past the server's time limit.",
    507: "Not enough disk space for the download.",
}

_HEALTH = {
    "type": "object",
    "properties": {
        "status": {"enum": ["loading", "error", "overloaded"]},
        "model": _STRING,
        "error": _NULLABLE_STRING,
    },
    "required": ["status", "model"],
}

#: What the model library's operations, LocalDocs' and the probes answer besides the rules'
#: statuses:
#: an error status -> None (the dialect's error body) or its JSON schema; for 200, how the
#: answer comes when the `stream` rule does not tell: "json", "stream" or "empty" (no body).
LIBRARY: dict[tuple[str, str], dict[int, Any]] = {
    ("get", "/v1/models/{model_id}"): {202: {"type": "object"}, 409: None, 502: None, 507: None},
    ("delete", "/v1/models/{model_id}"): {409: None},
    ("post", "/v1/models/pull"): {200: "stream", 409: None},
    ("post", "/api/show"): {200: "json"},
    ("delete", "/api/delete"): {200: "empty", 409: None},
    ("post", "/api/pull"): {409: None, 502: None, 507: None},
    ("post", "/v1/vector_stores"): {404: None},  # file_ids naming no file
    ("get", "/health"): {503: _HEALTH},
    ("get", "/ready"): {503: _HEALTH},
}
_STREAM_SCHEMA = {
    "type": "string",
    "description": "The answer as it is made, one event (or line) at a time",
}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the truthful document at `/openapi.json` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = truthful(doc, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`doc` (FastAPI's generated document) rewritten to match what the server answers."""
    doc = copy.deepcopy(doc)
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name, schema in ERROR_SCHEMAS.values():
        schemas[name] = schema
    _close_request_models(schemas, settings)
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            _rewrite(op, method, path, schemas, settings)
    return doc


def _rewrite(
    op: dict[str, Any], method: str, path: str, schemas: dict[str, Any], settings: Settings
) -> None:
    dialect = dialect_of(path)
    fields = _body_fields(op, schemas)
    extra = LIBRARY.get((method, path), {})
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    ok = responses.setdefault("200", {"description": "Successful Response"})
    how = extra.get(200, "json+stream" if "stream" in fields else "json")
    content = ok.setdefault("content", {})
    if how in ("stream", "empty"):
        content.clear()
    if "stream" in how:
        content[STREAM_TYPES[dialect]] = {"schema": _STREAM_SCHEMA}
    if not content:
        ok.pop("content")

    statuses: dict[int, Any] = {500: None}
    if settings.api_keys and not _is_open(method, path):
        statuses[401] = None
    if op.get("parameters") or "requestBody" in op:
        statuses[400] = None
    if method not in ("get", "head", "options"):
        statuses[413] = None  # the body limit holds whatever the route does with a body
    names_something = "{" in path or "model" in fields or "previous_response_id" in fields
    if names_something:
        statuses[404] = None
    if "model" in fields and (method, path) not in LIBRARY:
        statuses[503] = None  # the model cannot be loaded now, or its queue is full
    if path in GENERATION_PATHS:
        statuses[504] = None
    statuses.update({k: v for k, v in extra.items() if k != 200})
    error_ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMAS[dialect][0]}"}
    for status, schema in sorted(statuses.items()):
        body = error_ref if schema is None else schema
        response: dict[str, Any] = {
            "description": DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": body}},
        }
        headers = _headers(status)
        if headers:
            response["headers"] = headers
        responses[str(status)] = response
    for response in responses.values():
        response.setdefault("headers", {})[REQUEST_ID_HEADER] = {
            "description": "The request's id (as sent, when sane, or a new one)",
            "schema": _STRING,
        }


def _headers(status: int) -> dict[str, Any]:
    if status == 401:
        return {"WWW-Authenticate": {"schema": {"const": "Bearer"}}}
    if status == 503:
        return {
            "Retry-After": {
                "description": "Seconds to wait before retrying (when known)",
                "schema": {"type": "integer"},
            }
        }
    return {}


def _is_open(method: str, path: str) -> bool:
    return method in ("get", "head") and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def _body_fields(op: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The top-level field names of an operation's JSON request body."""
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = body.get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[1], {})
    return set(schema.get("properties", {}))


def _close_request_models(schemas: dict[str, Any], settings: Settings) -> None:
    """Models that keep unknown fields do so to refuse them by name: request models (on the
    `OpenAIModel` base) unless the server is told to drop them, other models always."""
    lenient: set[str] = set()
    if not settings.reject_unknown_fields:
        for cls in _subclasses(OpenAIModel):
            lenient |= {cls.__name__, _schema_name(cls)}
    for name, schema in schemas.items():
        closable = schema.get("additionalProperties") is True and "properties" in schema
        if closable and name.removesuffix("-Input") not in lenient:
            schema["additionalProperties"] = False


def _subclasses(cls: type[BaseModel]) -> list[type[BaseModel]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _schema_name(cls: type[BaseModel]) -> str:
    """FastAPI's component name for a model whose short name another model shares."""
    return f"{cls.__module__}.{cls.__qualname__}".replace(".", "__")
