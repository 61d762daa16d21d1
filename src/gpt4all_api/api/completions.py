"""POST /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from ..engine.request import GenerationRequest, TextEvent
from ..engine.templates import apply_prompt_template
from ..errors import InvalidRequest
from ..library.registry import completion_template
from ..protocol.completions import CompletionRequest
from ..state import ServerState
from .generation import (
    Run,
    budget,
    check_thread_count,
    check_unknown,
    load_model,
    new_id,
    sampling_params,
)
from .streaming import sse_response

router = APIRouter()

DEFAULT_MAX_TOKENS = 16


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    check_unknown(state, body)
    body.check_supported()
    check_thread_count(state, body)
    prompts = body.prompts()
    loaded = await load_model(state, body)
    template = completion_template(loaded, body.prompt_template, state.settings.prompt_template)
    sampling = sampling_params(body, loaded)
    asked = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    requests = []
    for p in prompts:
        if isinstance(p, str):
            tokens = loaded.model.tokenize(apply_prompt_template(template, p))
        else:
            loaded.model.check_tokens(p, "prompt")
            tokens = list(p)
        if not tokens:
            raise InvalidRequest("empty prompt", param="prompt")
        n = budget(state, loaded, len(tokens), asked, prompt_param="prompt", max_param="max_tokens")
        requests.append(
            GenerationRequest(
                prompt_tokens=tokens,
                max_tokens=n,
                sampling=sampling,
                stop=body.stop_list,
                prompt_chunk=body.prompt_batch_size or state.settings.prompt_batch_size,
            )
        )
    run = Run(loaded, requests)
    run.id = new_id("cmpl")
    if body.stream:
        return sse_response(_stream(state, run, body, template))
    choices = await run.collect(request)
    return {
        "id": run.id,
        "object": "text_completion",
        "created": run.created,
        "model": loaded.entry.id,
        "system_fingerprint": None,
        "choices": [
            {
                "text": "".join(c.text),
                "index": c.index,
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "references": [],
            }
            for c in choices
        ],
        "usage": run.usage(state, template),
    }


async def _stream(
    state: ServerState, run: Run, body: CompletionRequest, template: str
) -> AsyncIterator[dict[str, Any]]:
    model = run.loaded.entry.id

    def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": run.id,
            "object": "text_completion",
            "created": run.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}],
        }

    async for ev in run.events():
        if isinstance(ev, TextEvent):
            if ev.text:
                yield chunk(ev.index, ev.text, None)
        else:
            yield chunk(ev.index, "", ev.reason)
    if body.include_usage:
        yield {
            "id": run.id,
            "object": "text_completion",
            "created": run.created,
            "model": model,
            "choices": [],
            "usage": run.usage(state, template),
        }
