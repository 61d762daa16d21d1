"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API on the core.

The `anthropic-version` and `anthropic-beta` headers and the `?beta=true` query (Claude Code
sends them) are accepted and ignored; errors take Anthropic's shape at the app's one boundary.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...api.streaming import JSONBody, sse_response
from ...core import reply
from ...core.run import count_prompt, load_model, new_id, start
from ...localdocs import references as localdocs
from ...state import ServerState
from .. import ignored_tools_headers
from . import render
from .protocol import CountTokensRequest, MessagesRequest
from .translate import translate

router = APIRouter()


@router.post("/v1/messages", response_model=None)
async def create_message(body: MessagesRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    t = translate(state, body)
    plan, refs = t.plan, None
    if body.localdocs:
        plan, refs = await localdocs.retrieve(state, body.localdocs, plan)
    run = await start(state, plan)
    run.id = new_id("msg", "_")
    if t.plan.stream:
        events = render.stream(run, t.plan)
        if body.localdocs:
            events = _with_references(events, refs)
        return sse_response(
            events, "anthropic", headers=ignored_tools_headers(t.ignored_tools), ready=run.ready
        )
    choices = await run.collect(request)
    end = reply.final(t.plan.tools, choices[0])
    message = render.message(run, end, t.plan)
    if body.localdocs:
        message["references"] = refs
    return JSONBody(message, headers=ignored_tools_headers(t.ignored_tools))


async def _with_references(events: Any, refs: list[dict[str, Any]] | None) -> Any:
    """GPT4All's references on the message of `message_start` (known before generation)."""
    async for kind, data in events:
        if kind == "message_start":
            data = {**data, "message": {**data["message"], "references": refs}}
        yield kind, data


@router.post("/v1/messages/count_tokens", response_model=None)
async def count_tokens(body: CountTokensRequest, request: Request) -> Any:
    """The prompt tokens the same request to /v1/messages would use; nothing is generated."""
    state: ServerState = request.app.state.server
    t = translate(state, body)
    loaded = await load_model(state, t.plan)
    return JSONBody(
        {"input_tokens": count_prompt(state, loaded, t.plan)},
        headers=ignored_tools_headers(t.ignored_tools),
    )
