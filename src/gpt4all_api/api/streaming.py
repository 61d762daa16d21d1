"""Streaming bodies: Server-Sent Events (OpenAI's `data:` frames ending with `[DONE]`, or named
`event:` frames as Anthropic and the Responses API send them) and Ollama's NDJSON.

Both are Starlette's `StreamingResponse`, which ends the body's generator when the client goes
away. An event stream adds the headers proxies need to pass it on at once and a comment line
after every `ping` seconds in which nothing was sent (a long prompt being read), so that idle
timeouts do not cut it. A streamed token is one frame, and a frame costs one `send` at most.
Given `ready` (the count of engine events already waiting), the frames made while more are
waiting go out in one `send`: a step that accepts several drafted tokens of a request is one
write to its socket, not one a token, while a frame whose successor is not there yet goes
out at once.

An error after the stream began cannot change the status code any more; it is sent in the
stream, in the dialect's own shape: OpenAI's `{"error": …}` frame then `[DONE]`, Anthropic's
`error` event, Ollama's `{"error": "…"}` line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Send

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


class EventStream(StreamingResponse):
    """`text/event-stream` from an iterator of encoded frames, with a `: ping` comment after
    `ping` seconds without a frame."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        ping: float = 15.0,
    ):
        # no caching, and no buffering by proxies (nginx reads X-Accel-Buffering)
        sse = {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
        super().__init__(frames, headers={**sse, **(headers or {})})
        self.ping = ping
        self._sent_at = 0.0

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        self._sent_at = time.monotonic()
        async with anyio.create_task_group() as pings:
            pings.start_soon(self._keep_alive, send)
            async for frame in self.body_iterator:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                self._sent_at = time.monotonic()
            pings.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _keep_alive(self, send: Send) -> None:
        while True:
            await anyio.sleep(max(0.0, self._sent_at + self.ping - time.monotonic()))
            if time.monotonic() - self._sent_at >= self.ping:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                self._sent_at = time.monotonic()


def _sse_frame(chunk: Frame) -> bytes:
    """One event: compact JSON has no line breaks, so it is one `data:` line."""
    if isinstance(chunk, tuple):
        event, data = chunk
        return b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"
    return b"data: " + json_bytes(chunk) + b"\n\n"


def _error_frame(dialect: Dialect) -> Callable[[APIError], Frame]:
    def on_error(exc: APIError) -> Frame:
        body = error_body(exc, dialect)
        return ("error", body) if dialect == "anthropic" else body

    return on_error


async def joined(frames: AsyncIterator[bytes], ready: Callable[[], int]) -> AsyncIterator[bytes]:
    """`frames`, those made while `ready()` says more are waiting joined into one: the next
    frame then comes without waiting for the engine, so holding this one back delays nothing
    but a little CPU, and saves a `send` (a system call and a wake-up of the client)."""
    held: list[bytes] = []
    async for frame in frames:
        held.append(frame)
        if not ready():
            yield b"".join(held)  # one frame alone: that frame itself, not a copy
            held.clear()
    if held:
        yield b"".join(held)


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
    ready: Callable[[], int] | None = None,
) -> EventStream:
    """SSE; OpenAI's chat and completions streams end with `data: [DONE]`, named-event streams
    (Anthropic, Responses: `on_error` given) do not. `ready`: see `joined`."""
    done = dialect == "openai" and on_error is None
    frames = _frames(chunks, on_error or _error_frame(dialect), done)
    return EventStream(frames if ready is None else joined(frames, ready), headers=headers)


async def _lines(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for chunk in _guarded(chunks, lambda exc: error_body(exc, "ollama")):
        yield json_bytes(chunk) + b"\n"


def ndjson_response(
    chunks: AsyncIterator[dict[str, Any]], ready: Callable[[], int] | None = None
) -> StreamingResponse:
    """NDJSON, a line a chunk. `ready`: see `joined`."""
    lines = _lines(chunks)
    return StreamingResponse(
        lines if ready is None else joined(lines, ready), media_type="application/x-ndjson"
    )
