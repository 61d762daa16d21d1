"""Ollama's API on the core: `/api/chat` and `/api/generate` here, the embeddings (`embed`) and
the model library (`models`) beside them. Errors take Ollama's `{"error": "..."}` shape at the
app's one error boundary (every path under `/api/`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from ...api.streaming import ndjson_response
from ...core import reply
from ...core.run import start
from ...errors import InvalidRequest
from ...library.registry import Loaded
from ...localdocs import references as localdocs
from ...state import ServerState
from . import embed, models, render, translate
from .protocol import ChatRequest, GenerateRequest, JSONRoute

router = APIRouter(route_class=JSONRoute)
router.include_router(models.router)
router.include_router(embed.router)


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, request: Request) -> Any:
    clock = render.Clock(time.monotonic())
    state: ServerState = request.app.state.server
    t = translate.chat(state, body)
    if body.localdocs and t.plan.turns:
        plan, refs = await localdocs.retrieve(state, body.localdocs, t.plan)
        t = replace(t, plan=plan)
        return await _answer(request, "chat", body.model, t, clock, empty=False, refs=refs)
    return await _answer(request, "chat", body.model, t, clock, empty=not t.plan.turns)


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateRequest, request: Request) -> Any:
    clock = render.Clock(time.monotonic())
    t = translate.generate(request.app.state.server, body)
    return await _answer(request, "generate", body.model, t, clock, empty=not body.prompt)


async def _with_references(
    chunks: AsyncIterator[dict[str, Any]], refs: list[dict[str, Any]] | None
) -> AsyncIterator[dict[str, Any]]:
    """GPT4All's references on the last line of a stream."""
    async for chunk in chunks:
        yield {**chunk, "references": refs} if chunk.get("done") else chunk


async def _answer(
    request: Request,
    kind: render.Kind,
    name: str,
    t: translate.Translated,
    clock: render.Clock,
    *,
    empty: bool,
    refs: list[dict[str, Any]] | bool | None = False,
) -> Any:
    """`refs`: GPT4All's references to add (False: none asked for)."""
    state: ServerState = request.app.state.server
    entry = models.resolve(state, name)
    plan = replace(t.plan, model=entry.id)
    if empty and plan.keep_alive == 0:
        await _unload(state, entry.id)
        return render.loaded(kind, name, "unload")
    loaded = await state.registry.get(
        entry.id, keep_alive=models.keep_alive(state, plan.keep_alive)
    )
    clock.loaded = time.monotonic()
    _check_num_ctx(t.num_ctx, loaded)
    if empty:  # nothing to generate: Ollama's way to load a model
        return render.loaded(kind, name, "load", clock)
    run = await start(state, plan, "ollama")
    clock.submitted = time.monotonic()
    if plan.stream:
        chunks = render.stream(kind, name, run, clock)
        if refs is not False:
            chunks = _with_references(chunks, refs)
        return ndjson_response(chunks, ready=run.ready)
    choices = await run.collect(request)
    answer = render.whole(kind, name, run, reply.final(plan.tools, choices[0]), clock)
    if refs is not False:
        answer["references"] = refs
    return answer


def _check_num_ctx(num_ctx: int | None, loaded: Loaded) -> None:
    n_ctx = loaded.engine.n_ctx_seq
    if num_ctx is not None and num_ctx > n_ctx:
        raise InvalidRequest(
            f"option 'num_ctx' is {num_ctx}, more than the {n_ctx} tokens of context each "
            "request gets on this server (start it with a larger --context-size)",
            param="options.num_ctx",
        )


async def _unload(state: ServerState, model_id: str) -> None:
    """Unload now if idle, else as soon as its requests are done (keep-alive 0)."""
    loaded = state.registry.loaded.get(model_id)
    if loaded is None:
        return
    if state.registry.in_use(model_id):
        loaded.keep_alive = 0.0
    else:
        await state.registry.unload(model_id)
