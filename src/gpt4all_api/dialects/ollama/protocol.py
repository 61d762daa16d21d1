"""Ollama's request bodies (docs/api.md), fields in its order.

Tools, tool calls and `options` stay plain dicts: the translator checks each one and names the
exact place of a problem (`options.mirostat`, `messages[2].tool_calls[0]`). Unknown fields are
kept in `model_extra`, so that they are refused by name like everywhere else on this server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import Field

from ...protocol.common import OpenAIModel

#: `"json"`, a JSON schema, or nothing (`""`).
Format = Literal["", "json"] | dict[str, Any] | None
KeepAlive = float | str | None


class Message(OpenAIModel):
    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class _Generation(OpenAIModel):
    model: str = ""
    format: Format = None
    options: dict[str, Any] | None = None
    stream: bool | None = None  # Ollama streams unless told `false`
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class GenerateRequest(_Generation):
    prompt: str | None = None
    suffix: str | None = None
    images: list[str] | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None


class ChatRequest(_Generation):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    # -- extension: GPT4All LocalDocs ---------------------------------------------------
    localdocs: list[str] | None = Field(
        None,
        description="LocalDocs collections (vector store names or ids) to answer from; the "
        "answer then carries `references` (null when nothing was found).",
    )


class EmbedRequest(OpenAIModel):
    model: str = ""
    input: str | list[str] = ""
    truncate: bool | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(None, ge=0)  # 0: the model's own size


class EmbeddingsRequest(OpenAIModel):
    """The legacy `/api/embeddings`."""

    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ModelRequest(OpenAIModel):
    """`/api/show`, `/api/delete` and `/api/pull`: a model (`name` is its legacy spelling)."""

    model: str = ""
    name: str | None = None
    verbose: bool | None = None  # show
    insecure: bool | None = None  # pull (no effect: catalog URLs are used as they are)
    stream: bool | None = None  # pull

    @property
    def ref(self) -> str:
        return self.model or self.name or ""


class JSONRoute(APIRoute):
    """A route whose body is JSON whatever its `Content-Type` says: Ollama reads it so, and its
    docs' `curl -d` examples send JSON as `application/x-www-form-urlencoded`."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
            request.__dict__.pop("_headers", None)
            return await handler(request)

        return route
