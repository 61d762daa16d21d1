"""Streaming bodies: Server-Sent Events (OpenAI's `data:` frames ending with `[DONE]`, or named
`event:` frames as Anthropic and the Responses API send them) and Ollama's NDJSON.

An error after the stream began cannot change the status code any more; it is sent in the
stream, in the dialect's own shape: OpenAI's `{"error": …}` frame then `[DONE]`, Anthropic's
`error` event, Ollama's `{"error": "…"}` line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from ..errors import APIError, Dialect, InternalError, error_body
from ..jsontext import json_bytes, json_text

log = logging.getLogger(__name__)

#: A streamed item: a bare JSON frame, or (event name, JSON) for named events.
Frame = dict[str, Any] | tuple[str, dict[str, Any]]


class JSONBody(JSONResponse):
    """JSON responses that survive a lone surrogate in a string (see `json_text`)."""

    def render(self, content: Any) -> bytes:
        return json_text(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


async def _guarded(
    chunks: AsyncIterator[Any], on_error: Callable[[APIError], Any]
) -> AsyncIterator[Any]:
    try:
        async for chunk in chunks:
            yield chunk
    except APIError as exc:
        yield on_error(exc)
    except Exception:
        log.exception("error while streaming")
        yield on_error(InternalError("internal error while streaming"))


def _sse_frame(chunk: Frame) -> bytes:
    """One event, encoded here (sse-starlette sends bytes as they are): compact JSON has no
    line breaks, so it is one `data:` line."""
    if isinstance(chunk, tuple):
        event, data = chunk
        return b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"
    return b"data: " + json_bytes(chunk) + b"\n\n"


def _error_frame(dialect: Dialect) -> Callable[[APIError], Frame]:
    def on_error(exc: APIError) -> Frame:
        body = error_body(exc, dialect)
        return ("error", body) if dialect == "anthropic" else body

    return on_error


async def _frames(
    chunks: AsyncIterator[Frame], on_error: Callable[[APIError], Frame], done: bool
) -> AsyncIterator[bytes]:
    async for chunk in _guarded(chunks, on_error):
        yield _sse_frame(chunk)
    if done:
        yield b"data: [DONE]\n\n"


def sse_response(
    chunks: AsyncIterator[Frame],
    dialect: Dialect = "openai",
    *,
    on_error: Callable[[APIError], Frame] | None = None,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    """SSE; OpenAI's chat and completions streams end with `data: [DONE]`, named-event streams
    (Anthropic, Responses: `on_error` given) do not."""
    done = dialect == "openai" and on_error is None
    frames = _frames(chunks, on_error or _error_frame(dialect), done)
    return EventSourceResponse(frames, ping=15, sep="\n", headers=headers)


async def _lines(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for chunk in _guarded(chunks, lambda exc: error_body(exc, "ollama")):
        yield json_bytes(chunk) + b"\n"


def ndjson_response(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(_lines(chunks), media_type="application/x-ndjson")
