"""ASGI middleware around every request: request ids, the access log and request metrics, API
keys, CORS, and limits on what a client may send.

From the outside in:

- `RequestMiddleware` gives each request an id (`X-Request-ID`, honoured when sane), returns it
  as a header, counts the request in the metrics and writes one access-log line when it ends.
  It also opens the request's `RequestTrace`, which the generation glue fills in (time to first
  token, tokens) and reads (the wall-clock deadline).
- `CORSMiddleware` (Starlette's), only when origins are configured.
- `AuthMiddleware` checks `Authorization: Bearer <key>` against the configured keys.
- `BodyLimitMiddleware` reads the body up to the size limit (413 as soon as it is passed) and
  checks the size of prompts (number of messages, characters, `max_tokens` ceiling) before the
  request reaches its router.

Prompts and outputs are never logged.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .engine.request import Event, FinishEvent, TextEvent
from .errors import (
    APIError,
    AuthenticationError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    dialect_of,
    error_body,
)
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("gpt4all_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:+=-]{1,128}")
_SIMPLE = re.compile(r"[A-Za-z0-9._:/+=-]*")

# Paths anyone may fetch even when API keys are on: liveness/readiness probes and the
# playground page with its static files (the page asks for the key itself).
OPEN_PATHS = frozenset({"/health", "/ready", "/"})
OPEN_PREFIXES = ("/static/",)


# -- the per-request trace ---------------------------------------------------------------


#: What a run's queue gets at the request's deadline (`RequestTrace.arm`).
DEADLINE = object()


@dataclass
class RequestTrace:
    """What one HTTP request did, shared by the middleware and the generation glue."""

    request_id: str = ""
    started: float = 0.0
    timeout: float = 0.0  # seconds, 0: no limit
    model: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the KV cache
    completion_tokens: int = 0  # of finished choices, as the engine counted them
    tokens_seen: int = 0  # tokens streamed so far, finished or not

    @property
    def deadline(self) -> float | None:
        return self.started + self.timeout if self.timeout > 0 else None

    def arm(self, queue: asyncio.Queue[Any]) -> asyncio.TimerHandle | None:
        """Put `DEADLINE` in `queue` at the request's deadline (None: no limit). One timer per
        run: a timeout around each wait would make one per streamed token."""
        deadline = self.deadline
        if deadline is None:
            return None
        delay = max(0.0, deadline - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, queue.put_nowait, DEADLINE)

    async def next_event(self, queue: asyncio.Queue[Any]) -> Event:
        """The next engine event (events queued before the deadline come first); records
        timings and tokens. Raises `RequestTimeout` at the deadline (see `arm`)."""
        ev = await queue.get()
        if ev is DEADLINE:
            raise RequestTimeout(
                f"The request ran past this server's limit of {self.timeout:g} seconds "
                "and its generation was stopped."
            )
        if isinstance(ev, TextEvent):
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.tokens_seen += ev.token >= 0
        elif isinstance(ev, FinishEvent):
            self.finished_at = time.monotonic()
            self.prompt_tokens += ev.prompt_tokens
            self.cached_tokens += ev.cached_tokens
            self.completion_tokens += ev.completion_tokens
        return ev


_current_trace: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar(
    "gpt4all_api_request_trace", default=None
)


def request_trace(model: str | None = None) -> RequestTrace:
    """The trace of the HTTP request being served (a detached one outside of a request)."""
    trace = _current_trace.get()
    if trace is None:
        trace = RequestTrace(started=time.monotonic())
    if model is not None:
        trace.model = model
    return trace


def request_id_of(scope_or_request: Any) -> str | None:
    """The id `RequestMiddleware` gave this request (from a scope or a Request)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.get("state") or {}
    return state.get("request_id") if isinstance(state, dict) else None


async def send_error(scope: Scope, receive: Receive, send: Send, err: APIError) -> None:
    """Answer with the error body for `err`, in the shape of the API the path belongs to."""
    body = error_body(err, dialect_of(scope.get("path", "")), request_id_of(scope))
    response = JSONResponse(body, status_code=err.status_code)
    response.headers.update(err.headers())
    await response(scope, receive, send)


def _flat_routes(routes: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path template, route) for every route, looking into included routers."""
    out: list[tuple[str, Any]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            ctx = getattr(route, "include_context", None)
            out += _flat_routes(inner.routes, prefix + getattr(ctx, "prefix", ""))
        elif hasattr(route, "path") and hasattr(route, "matches"):
            out.append((prefix + route.path, route))
    return out


def _route_label(scope: Scope, routes: list[tuple[str, Any]]) -> str:
    """The route's path template (bounded label values), or `other` for unknown paths.

    Requests answered before routing (401, 413) are matched against the routes here."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", "other")
    for path, candidate in routes:
        try:
            match, _ = candidate.matches(scope)
        except Exception:  # a route type we do not know: never fail a request over a label
            continue
        if match is not Match.NONE:
            return path
    return "other"


def _fmt(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if _SIMPLE.fullmatch(text) else json.dumps(text)


# -- request id, access log, metrics -----------------------------------------------------


class RequestMiddleware:
    """Request id, one structured access-log line per request, and the request metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, settings: Settings):
        self.app = app
        self.metrics = metrics
        self.timeout = settings.request_timeout
        self._routes: list[tuple[str, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        trace = RequestTrace(request_id=rid, started=time.monotonic(), timeout=self.timeout)
        token = _current_trace.set(trace)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            _current_trace.reset(token)
            self.metrics.in_progress.dec()
            # no response at all: the client left first (499, as nginx logs it)
            self._finish(scope, trace, status or 499)

    def _finish(self, scope: Scope, trace: RequestTrace, status: int) -> None:
        duration = time.monotonic() - trace.started
        if self._routes is None:
            self._routes = _flat_routes(getattr(scope.get("app"), "routes", ()))
        route = _route_label(scope, self._routes)
        self.metrics.observe_request(scope["method"], route, status, duration, trace)
        fields: dict[str, Any] = {
            "request_id": trace.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": f"{duration * 1000:.1f}",
        }
        if route == "other":
            fields["path"] = scope.get("path", "")[:200]
        if trace.model:
            fields["model"] = trace.model
        if trace.finished_at is not None:
            fields["prompt_tokens"] = trace.prompt_tokens
            fields["cached_tokens"] = trace.cached_tokens
            fields["completion_tokens"] = trace.completion_tokens
        elif trace.first_token_at is not None:
            fields["completion_tokens"] = trace.tokens_seen  # stopped before finishing
        if trace.first_token_at is not None:
            fields["ttft_ms"] = f"{(trace.first_token_at - trace.started) * 1000:.1f}"
        access_log.info(" ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


# -- API keys ------------------------------------------------------------------------------


def key_matches(given: str, keys: list[bytes]) -> bool:
    """Constant-time check of `given` against every key (no early exit on a match)."""
    candidate = given.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


class AuthMiddleware:
    """401 unless `Authorization: Bearer <key>` or `x-api-key: <key>` (Anthropic's header)
    holds one of the keys (open paths excepted)."""

    def __init__(self, app: ASGIApp, *, keys: list[str]):
        self.app = app
        self.keys = [k.encode("utf-8") for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization") or ""
        scheme, _, given = header.partition(" ")
        x_api_key = _header(scope, b"x-api-key")
        if not header and x_api_key is not None:
            scheme, given = "bearer", x_api_key
        if not header and x_api_key is None:
            err = AuthenticationError(
                "You didn't provide an API key. Send it in the Authorization header as "
                "'Authorization: Bearer <key>' (or as 'x-api-key: <key>')."
            )
        elif scheme.lower() != "bearer" or not key_matches(given.strip(), self.keys):
            err = AuthenticationError("Incorrect API key provided.")
        else:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            error_body(err, dialect_of(scope.get("path", "")), request_id_of(scope)),
            status_code=err.status_code,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _is_open(scope: Scope) -> bool:
        path = scope.get("path", "")
        if scope.get("method") not in ("GET", "HEAD"):
            return False
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


# -- body size and prompt size -------------------------------------------------------------

#: Where each generation route keeps its conversation (a list of messages or items) and its
#: raw prompt text; the size limits apply to each the same way.
_MESSAGES = {
    "/v1/chat/completions": "messages",
    "/v1/messages": "messages",
    "/api/chat": "messages",
    "/v1/responses": "input",
}
_PROMPTS = {"/v1/completions": "prompt", "/api/generate": "prompt"}
_SYSTEM = ("system", "instructions")
#: Token limits that are refused past the ceiling; the Messages, Responses and Ollama APIs treat
#: theirs as caps, so the ceiling clips them instead.
_STRICT_LIMITS = {"/v1/chat/completions", "/v1/completions"}
GENERATION_PATHS = frozenset(_MESSAGES) | frozenset(_PROMPTS)
#: File uploads (multipart): limited by the file size limit instead of the body size limit.
UPLOAD_PATHS = frozenset({"/v1/files"})


class BodyLimitMiddleware:
    """413 for bodies past the limit, found while the body streams in (or from Content-Length);
    400 for JSON that is not valid Unicode and for prompts that are too big, before the body is
    validated by its router. File uploads have their own, larger limit (plus room for the
    multipart framing); their router checks the file itself."""

    def __init__(self, app: ASGIApp, *, settings: Settings):
        self.app = app
        self.limit = settings.max_body_size
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = scope.get("path", "") in UPLOAD_PATHS
        limit = self.settings.max_file_size + 64 * 1024 if upload else self.limit
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await send_error(scope, receive, send, self._too_large(upload))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(scope, receive, send, self._too_large(upload))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            if not upload:
                check_body(scope.get("path", ""), body, self.settings)
        except APIError as err:
            await send_error(scope, receive, send, err)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, upload: bool = False) -> PayloadTooLarge:
        if upload:
            return PayloadTooLarge(
                "The file is larger than this server's limit of "
                f"{self.settings.max_file_size} bytes."
            )
        return PayloadTooLarge(
            f"The request body is larger than this server's limit of {self.limit} bytes."
        )


def _text_len(content: Any) -> int:
    """Characters of text in a message's content: a string, or parts/blocks/items holding
    `text` (or, for tool results, `content` and `output`)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_text_len(part) for part in content)
    if isinstance(content, dict):
        return sum(_text_len(content.get(k)) for k in ("text", "content", "output", "arguments"))
    return 0


def check_body(path: str, body: bytes, settings: Settings) -> None:
    """Refuse JSON holding lone UTF-16 surrogates (`"\\ud83d"`: not Unicode text, which no
    part of the server could encode) and, on the generation routes, too many messages, too many
    characters, or a max_tokens past the ceiling.

    Bodies that are not JSON pass through: the router answers those with its own 400.
    """
    if not body:
        return
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"The JSON body holds a lone UTF-16 surrogate escape ({exc.object[exc.start]!r}), "
            "which is not valid Unicode text.",
            code="invalid_json",
        ) from None
    except (ValueError, RecursionError):
        return
    if isinstance(data, dict) and path in GENERATION_PATHS:
        check_prompt_size(path, data, settings)


def check_prompt_size(path: str, data: dict[str, Any], settings: Settings) -> None:
    """Refuse too many messages, too many characters, or a max_tokens past the ceiling."""
    system = sum(_text_len(data.get(k)) for k in _SYSTEM)
    if path in _MESSAGES:
        param = _MESSAGES[path]
        messages = data.get(param)
        if isinstance(messages, list) and len(messages) > settings.max_messages:
            raise InvalidRequest(
                f"'{param}' has {len(messages)} messages; this server takes at most "
                f"{settings.max_messages}",
                param=param,
                code="too_many_messages",
            )
        _check_chars(_text_len(messages) + system, param, settings)
    else:
        prompt = data.get("prompt")
        items = prompt if isinstance(prompt, list) else [prompt]
        chars = sum(len(p) for p in items if isinstance(p, str)) + system
        _check_chars(chars, "prompt", settings)
    ceiling = settings.max_tokens_limit
    if ceiling is not None and path in _STRICT_LIMITS:
        for name in ("max_tokens", "max_completion_tokens"):
            asked = data.get(name)
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > ceiling:
                raise InvalidRequest(
                    f"'{name}' is {asked}; this server generates at most {ceiling} tokens "
                    "per request",
                    param=name,
                    code="max_tokens_too_large",
                )


def _check_chars(chars: int, param: str, settings: Settings) -> None:
    if chars > settings.max_prompt_chars:
        raise InvalidRequest(
            f"'{param}' holds {chars} characters; this server takes at most "
            f"{settings.max_prompt_chars}",
            param=param,
            code="prompt_too_long",
        )


# -- installation --------------------------------------------------------------------------


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Add the middleware, innermost first (Starlette wraps each addition around the last)."""
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    if settings.api_keys:
        app.add_middleware(AuthMiddleware, keys=settings.api_keys)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestMiddleware, metrics=metrics, settings=settings)
